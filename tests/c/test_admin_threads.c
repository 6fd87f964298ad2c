/*
 * test_admin_threads.c — two engines, each on its own thread with its own
 * admin server, both answering big requests at the same moment: each must
 * see its own requests' bytes only. (The servers once read into one
 * process-wide buffer, so a read on one thread overwrote a body the other
 * was parsing.) Real sockets, real HTTP, the engines' own loops.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "mqrouter.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#define PAYLOAD (48 * 1024)
#define REQUESTS 150

typedef struct {
    char letter;
    mqr_engine_t *e;
    int port;
    uv_async_t stop;
    uv_sem_t ready;
    atomic_uint good, bad;
    unsigned answered_ok; /* the client thread's count of 200 answers */
} side_t;

static void on_msg(void *arg, mqr_msg_t *m)
{
    side_t *s = arg;
    size_t n;
    const char *p = mqr_msg_payload(m, &n);
    bool ok = n == PAYLOAD;
    for (size_t i = 0; ok && i < n; i++)
        ok = p[i] == s->letter;
    if (ok)
        atomic_fetch_add(&s->good, 1);
    else
        atomic_fetch_add(&s->bad, 1);
}

static void on_stop(uv_async_t *a)
{
    side_t *s = a->data;
    uv_close((uv_handle_t *)a, NULL);
    mqr_engine_stop(s->e);
}

static void *engine_thread(void *arg)
{
    side_t *s = arg;
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.listen_port = -1;
    o.data_dir = "";
    o.log_level = MQR_LOG_ERROR;
    char *err = NULL;
    if (mqr_engine_new(&s->e, &o, NULL, &err) < 0 ||
        mqr_engine_admin(s->e, "127.0.0.1", 0, NULL, 0, &err) < 0 ||
        mqr_subscribe(s->e, "t/#", on_msg, s, NULL) < 0) {
        fprintf(stderr, "engine %c: %s\n", s->letter, err ? err : "?");
        free(err);
        s->port = -1;
        uv_sem_post(&s->ready);
        return NULL;
    }
    s->port = mqr_engine_admin_port(s->e);
    uv_async_init(mqr_engine_loop(s->e), &s->stop, on_stop);
    s->stop.data = s;
    uv_sem_post(&s->ready);
    mqr_engine_run(s->e);
    mqr_engine_free(s->e);
    return NULL;
}

/* Answers read from one connection: bytes past the last answer wait here. */
typedef struct {
    int fd;
    char buf[16384];
    size_t n;
} answers_t;

/* The next HTTP answer's status, or -1 (closed, or not HTTP). */
static int next_answer(answers_t *r)
{
    for (;;) {
        char *end = r->n ? memmem(r->buf, r->n, "\r\n\r\n", 4) : NULL;
        if (end) {
            *end = '\0';
            const char *cl = strstr(r->buf, "Content-Length: ");
            size_t len = (size_t)(end + 4 - r->buf) + (cl ? strtoul(cl + 16, NULL, 10) : 0);
            int status = strncmp(r->buf, "HTTP/1.1 ", 9) == 0 ? atoi(r->buf + 9) : -1;
            while (r->n < len) { /* the body, small here */
                ssize_t got = read(r->fd, r->buf + r->n, sizeof r->buf - r->n);
                if (got <= 0) return -1;
                r->n += (size_t)got;
            }
            memmove(r->buf, r->buf + len, r->n - len);
            r->n -= len;
            return status;
        }
        if (r->n == sizeof r->buf) return -1;
        ssize_t got = read(r->fd, r->buf + r->n, sizeof r->buf - r->n);
        if (got <= 0) return -1;
        r->n += (size_t)got;
    }
}

/* REQUESTS publishes of PAYLOAD bytes of the side's letter, pipelined on
 * one keep-alive connection; then their answers. */
static void *client_thread(void *arg)
{
    side_t *s = arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)s->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return NULL;
    }
    size_t blen = PAYLOAD + 64;
    char *body = malloc(blen), *req = malloc(blen + 512);
    answers_t *ans = calloc(1, sizeof *ans);
    ans->fd = fd;
    int bn = snprintf(body, blen, "{\"topic\":\"t/%c\",\"payload\":\"", s->letter);
    memset(body + bn, s->letter, PAYLOAD);
    bn += PAYLOAD;
    bn += snprintf(body + bn, blen - (size_t)bn, "\"}");
    int rn = snprintf(req, blen + 512,
                      "POST /api/v1/publish HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n",
                      bn);
    memcpy(req + rn, body, (size_t)bn);
    rn += bn;
    /* pipelined: both servers keep reading while the other does */
    for (int i = 0; i < REQUESTS; i++) {
        for (int off = 0; off < rn;) {
            ssize_t w = write(fd, req + off, (size_t)(rn - off));
            if (w <= 0) goto out;
            off += (int)w;
        }
    }
    for (int i = 0; i < REQUESTS; i++) {
        int st = next_answer(ans);
        if (st != 200) {
            fprintf(stderr, "%c: answer %d: status %d\n", s->letter, i, st);
            goto out;
        }
        s->answered_ok++;
    }
out:
    free(ans);
    free(body);
    free(req);
    close(fd);
    return NULL;
}

static void test_two_engines_at_once(void **state)
{
    signal(SIGPIPE, SIG_IGN); /* a closed connection shows as a short count */
    side_t sides[2] = {{.letter = 'A'}, {.letter = 'B'}};
    pthread_t eng[2], cli[2];
    for (int i = 0; i < 2; i++) {
        uv_sem_init(&sides[i].ready, 0);
        assert_int_equal(pthread_create(&eng[i], NULL, engine_thread, &sides[i]), 0);
        uv_sem_wait(&sides[i].ready);
        assert_true(sides[i].port > 0);
    }
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&cli[i], NULL, client_thread, &sides[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(cli[i], NULL);
    for (int i = 0; i < 2; i++) {
        uv_async_send(&sides[i].stop);
        pthread_join(eng[i], NULL);
        uv_sem_destroy(&sides[i].ready);
    }
    for (int i = 0; i < 2; i++) {
        assert_int_equal(sides[i].answered_ok, REQUESTS);
        assert_int_equal(atomic_load(&sides[i].bad), 0);
        assert_int_equal(atomic_load(&sides[i].good), REQUESTS);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_engines_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
