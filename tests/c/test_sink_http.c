/*
 * test_sink_http.c — the HTTP(S) sink (core/sink/http.c) against real
 * servers on free loopback ports: tests/c/http_fault_server.py (Python's
 * http.server, scriptable: echo, any status, slow, dropped mid-answer,
 * counted connections; TLS with the certificates of tls_certs.h) and
 * nginx-light (HTTP/2 over TLS). Each test runs its own uv loop, waits for
 * conditions with a deadline, and ends with uv_loop_close() == 0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "http.h"

/* ---- time, ports, processes ---- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int sh(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#include "loopback.h"
#include "tls_certs.h"

static int free_port(void)
{
    int port = lb_free_port();
    assert_true(port > 0);
    return port;
}

typedef struct {
    pid_t pid;
    int port;
} server_t;

/* Forks argv (dies with us), waits until port accepts (5 s deadline). */
static void spawn(server_t *s, char *const argv[])
{
    pid_t parent = getpid();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(1);
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) {
            dup2(null, STDOUT_FILENO);
            dup2(null, STDERR_FILENO);
        }
        execvp(argv[0], argv);
        _exit(127);
    }
    s->pid = pid;
    uint64_t deadline = now_ms() + 5000;
    for (;;) {
        int fd = lb_connect(s->port);
        if (fd >= 0) {
            close(fd);
            return;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            s->pid = 0;
            fail_msg("%s exited at start (port %d, status %d)", argv[0], s->port, st);
        }
        if (now_ms() > deadline) fail_msg("%s does not accept on port %d", argv[0], s->port);
        sleep_ms(10);
    }
}

static void server_stop(server_t *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
}

/* The fault server on s->port (a free one when 0); TLS with cert/key. */
static void fault_start(server_t *s, const char *certf, const char *keyf)
{
    const char *src = getenv("MQROUTER_SRC");
    if (!src) fail_msg("MQROUTER_SRC is not set (run through ctest)");
    char script[512], port[16];
    snprintf(script, sizeof script, "%s/tests/c/http_fault_server.py", src);
    if (access(script, R_OK) != 0) fail_msg("missing %s", script);
    if (!s->port) s->port = free_port();
    snprintf(port, sizeof port, "%d", s->port);
    char *argv[] = {"python3", script, port, (char *)certf, (char *)keyf, NULL};
    if (!certf) argv[3] = NULL;
    spawn(s, argv);
}

/* GET /stats over a plain blocking socket (test side only): the number
 * after "key": in the JSON, or -1. */
static long fault_stat(int port, const char *key)
{
    int fd = lb_connect(port);
    if (fd < 0) return -1;
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    const char *req = "GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
        close(fd);
        return -1;
    }
    char buf[2048];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof buf - 1 && (n = read(fd, buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)n;
    close(fd);
    buf[len] = '\0';
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = strstr(buf, pat);
    return p ? strtol(p + strlen(pat), NULL, 10) : -1;
}

/* Waits (3 s deadline) until the fault server answers n requests,
 * running loop (may be NULL) meanwhile. */
static void wait_active(uv_loop_t *loop, int port, long n)
{
    uint64_t deadline = now_ms() + 3000;
    long a;
    while ((a = fault_stat(port, "active")) != n) {
        if (now_ms() > deadline) fail_msg("fault server: %ld requests active, not %ld", a, n);
        if (loop) uv_run(loop, UV_RUN_NOWAIT);
        sleep_ms(5);
    }
}

/* One fault server for the tests that do not stop it, started by the
 * first (stopped in the group teardown); each waits for it to be idle. */
static server_t shared;

static server_t shared_server(void)
{
    if (!shared.pid) fault_start(&shared, NULL, NULL);
    wait_active(NULL, shared.port, 0);
    return shared;
}

/* ---- what came back ---- */

typedef struct {
    int calls;
    int index; /* which request (FIFO order) */
    mqr_sink_outcome_t outcome;
    int err;
    int status, http_version;
    char reason[256];
    char body[4096];
    size_t body_len;
    char ctype[128]; /* the content-type header, by its lower-case name */
    size_t nheaders;
    double seconds;
    uint64_t at_ms;
} got_t;

static int order[16], norder;
static mqr_http_t *close_me; /* closed by the callback that sees it */

static void on_done(void *arg, const mqr_http_resp_t *r)
{
    got_t *g = arg;
    g->calls++;
    g->outcome = r->outcome;
    g->err = r->err;
    g->status = r->status;
    g->http_version = r->http_version;
    snprintf(g->reason, sizeof g->reason, "%s", r->reason ? r->reason : "");
    g->body_len = r->body_len;
    snprintf(g->body, sizeof g->body, "%s", r->body);
    g->ctype[0] = '\0';
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcmp(r->headers[i].name, "content-type") == 0)
            snprintf(g->ctype, sizeof g->ctype, "%s", r->headers[i].value);
    g->nheaders = r->nheaders;
    g->seconds = r->seconds;
    g->at_ms = now_ms();
    if (norder < 16) order[norder++] = g->index;
    if (close_me) {
        mqr_http_t *h = close_me;
        close_me = NULL;
        mqr__http_close(h);
    }
}

static bool all_called(got_t *g, int n)
{
    for (int i = 0; i < n; i++)
        if (g[i].calls == 0) return false;
    return true;
}

/* Runs loop until every g[0..n) was called, or timeout_ms: true if so. */
static bool run_until(uv_loop_t *loop, got_t *g, int n, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    while (!all_called(g, n)) {
        if (now_ms() > deadline) return false;
        uv_run(loop, UV_RUN_NOWAIT);
        if (!all_called(g, n)) sleep_ms(1);
    }
    return true;
}

/* Closes h, runs loop until it has nothing left, and closes it. */
static void finish_loop(uv_loop_t *loop, mqr_http_t *h)
{
    mqr__http_close(h);
    uint64_t deadline = now_ms() + 3000;
    while (uv_run(loop, UV_RUN_NOWAIT) != 0 && now_ms() < deadline)
        sleep_ms(1);
    assert_int_equal(uv_loop_close(loop), 0);
}

/* Run as c/test_sink_http@curl (MQR_TEST_HTTP_CURL set), plain http://
 * goes through libcurl as https:// does; else through http1.c. */
static mqr_http_t *client(uv_loop_t *loop, const mqr_http_opts_t *given)
{
    mqr_http_t *h = NULL;
    char *err = NULL;
    mqr_http_opts_t o = *given;
    o.curl_only = getenv("MQR_TEST_HTTP_CURL") != NULL;
    int rc = mqr__http_new(loop, &o, &h, &err);
    if (rc) fail_msg("mqr__http_new: %d %s", rc, err ? err : "");
    return h;
}

static int send_req(mqr_http_t *h, const char *method, const char *url, got_t *g)
{
    mqr_http_req_t q = {.method = method, .url = url};
    char why[256];
    return mqr__http_request(h, &q, on_done, g, why, sizeof why);
}

/* ---- cases ---- */

static void test_round_trip(void **state)
{
    (void)state;
    server_t s = shared_server();
    uv_loop_t loop;
    uv_loop_init(&loop);
    mqr_http_opts_t o = {.name = "api", .target = "http://user:pw@127.0.0.1/"};
    mqr_http_t *h = client(&loop, &o);
    mqr_sink_t *sk = mqr__http_sink(h);
    assert_string_equal(sk->kind, "http");
    assert_string_equal(sk->name, "api");
    assert_null(strstr(sk->target, "pw"));

    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/echo?x=1", s.port);
    got_t g[4] = {{0}};
    mqr_http_header_t hdrs[] = {{"X-Test", "abc"}, {"X-Empty", ""}};
    mqr_http_req_t get = {.method = "GET", .url = url, .headers = hdrs, .nheaders = 2};
    char why[256];
    assert_int_equal(mqr__http_request(h, &get, on_done, &g[0], why, sizeof why), 0);
    const char json[] = "{\"temp\":21.5}";
    mqr_http_header_t ct[] = {{"Content-Type", "application/json"}};
    mqr_http_req_t post = {.method = "POST",
                           .url = url,
                           .headers = ct,
                           .nheaders = 1,
                           .body = json,
                           .body_len = strlen(json)};
    assert_int_equal(mqr__http_request(h, &post, on_done, &g[1], why, sizeof why), 0);
    assert_int_equal(send_req(h, "PUT", url, &g[2]), 0);
    assert_int_equal(send_req(h, "HEAD", url, &g[3]), 0);
    /* never inside the call */
    for (int i = 0; i < 4; i++)
        assert_int_equal(g[i].calls, 0);
    assert_int_equal(sk->in_flight, 4);
    assert_true(run_until(&loop, g, 4, 5000));

    assert_int_equal(g[0].outcome, MQR_SINK_OK);
    assert_int_equal(g[0].status, 200);
    assert_int_equal(g[0].http_version, 11);
    assert_int_equal(g[0].err, 0);
    assert_string_equal(g[0].reason, "");
    assert_string_equal(g[0].ctype, "application/json");
    assert_non_null(strstr(g[0].body, "\"method\": \"GET\""));
    assert_non_null(strstr(g[0].body, "\"path\": \"/echo?x=1\""));
    assert_non_null(strstr(g[0].body, "\"x-test\": \"abc\""));
    assert_non_null(strstr(g[0].body, "\"x-empty\": \"\""));

    assert_int_equal(g[1].status, 200);
    assert_non_null(strstr(g[1].body, "\"method\": \"POST\""));
    assert_non_null(strstr(g[1].body, "\"body\": \"{\\\"temp\\\":21.5}\""));
    assert_non_null(strstr(g[1].body, "\"content-type\": \"application/json\""));
    assert_null(strstr(g[1].body, "\"expect\""));

    assert_int_equal(g[2].status, 200);
    assert_non_null(strstr(g[2].body, "\"method\": \"PUT\""));
    assert_non_null(strstr(g[2].body, "\"content-length\": \"0\""));

    assert_int_equal(g[3].status, 200);
    assert_int_equal(g[3].body_len, 0);
    assert_true(g[3].nheaders >= 2);

    assert_int_equal(sk->requests, 4);
    assert_int_equal(sk->ok, 4);
    assert_int_equal(sk->in_flight, 0);
    assert_int_equal(sk->latency.count, 4);
    assert_true(sk->up);
    finish_loop(&loop, h);
}

static void test_status_classes(void **state)
{
    (void)state;
    server_t s = shared_server();
    uv_loop_t loop;
    uv_loop_init(&loop);
    mqr_http_t *h = client(&loop, &(mqr_http_opts_t){0});
    static const struct {
        int status;
        mqr_sink_outcome_t outcome;
    } cases[] = {{500, MQR_SINK_RETRY},     {503, MQR_SINK_RETRY},     {429, MQR_SINK_RETRY},
                 {408, MQR_SINK_RETRY},     {404, MQR_SINK_PERMANENT}, {400, MQR_SINK_PERMANENT},
                 {302, MQR_SINK_PERMANENT}, {204, MQR_SINK_OK}};
    enum { N = sizeof cases / sizeof cases[0] };
    got_t g[N] = {{0}};
    for (int i = 0; i < N; i++) {
        char url[128];
        snprintf(url, sizeof url, "http://127.0.0.1:%d/status/%d", s.port, cases[i].status);
        assert_int_equal(send_req(h, "GET", url, &g[i]), 0);
    }
    assert_true(run_until(&loop, g, N, 5000));
    for (int i = 0; i < N; i++) {
        assert_int_equal(g[i].calls, 1);
        assert_int_equal(g[i].status, cases[i].status);
        assert_int_equal(g[i].outcome, cases[i].outcome);
        if (cases[i].outcome != MQR_SINK_OK) {
            char want[32];
            snprintf(want, sizeof want, "HTTP %d", cases[i].status);
            assert_string_equal(g[i].reason, want);
        }
    }
    mqr_sink_t *sk = mqr__http_sink(h);
    assert_int_equal(sk->ok, 1);
    assert_int_equal(sk->retried, 4);
    assert_int_equal(sk->failed, 3);
    assert_int_equal(sk->errors[MQR_SINK_ERR_SERVER], 4);
    assert_int_equal(sk->errors[MQR_SINK_ERR_REQUEST], 3);
    assert_string_equal(sk->last_error + 0, sk->last_error); /* set, shown below */
    assert_true(strncmp(sk->last_error, "HTTP ", 5) == 0);
    finish_loop(&loop, h);
}

static void test_timeout(void **state)
{
    (void)state;
    server_t s = shared_server();
    uv_loop_t loop;
    uv_loop_init(&loop);
    mqr_http_t *h = client(&loop, &(mqr_http_opts_t){.timeout_ms = 300});
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/slow?ms=3000", s.port);
    got_t g[2] = {{0}};
    uint64_t t0 = now_ms();
    assert_int_equal(send_req(h, "GET", url, &g[0]), 0);
    /* a request's own timeout wins over the client's */
    mqr_http_req_t q = {.method = "GET", .url = url, .timeout_ms = 600};
    assert_int_equal(mqr__http_request(h, &q, on_done, &g[1], NULL, 0), 0);
    assert_true(run_until(&loop, g, 2, 2500));
    for (int i = 0; i < 2; i++) {
        assert_int_equal(g[i].outcome, MQR_SINK_RETRY);
        assert_int_equal(g[i].err, UV_ETIMEDOUT);
        assert_int_equal(g[i].status, 0);
        assert_true(strncmp(g[i].reason, "ETIMEDOUT: no answer after", 26) == 0);
    }
    uint64_t d0 = g[0].at_ms - t0, d1 = g[1].at_ms - t0;
    assert_true(d0 >= 290 && d0 < 1500);
    assert_true(d1 >= 590 && d1 < 1800);
    assert_non_null(strstr(g[0].reason, "0.3 s"));
    assert_int_equal(mqr__http_sink(h)->errors[MQR_SINK_ERR_TIMEOUT], 2);
    finish_loop(&loop, h);
}

static void test_refused_and_dropped(void **state)
{
    (void)state;
    server_t s = shared_server();
    uv_loop_t loop;
    uv_loop_init(&loop);
    mqr_http_t *h = client(&loop, &(mqr_http_opts_t){0});
    char url[128];
    got_t g[2] = {{0}};
    /* nobody there; the password never shows */
    snprintf(url, sizeof url, "http://bob:s3cret@127.0.0.1:%d/echo?password=s3cret", free_port());
    assert_int_equal(send_req(h, "GET", url, &g[0]), 0);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/drop", s.port);
    assert_int_equal(send_req(h, "GET", url, &g[1]), 0);
    assert_true(run_until(&loop, g, 2, 5000));
    assert_int_equal(g[0].outcome, MQR_SINK_RETRY);
    assert_int_equal(g[0].err, UV_ECONNREFUSED);
    assert_true(strncmp(g[0].reason, "ECONNREFUSED: ", 14) == 0);
    assert_null(strstr(g[0].reason, "s3cret"));
    assert_null(strstr(mqr__http_sink(h)->last_error, "s3cret"));
    assert_int_equal(g[1].outcome, MQR_SINK_RETRY);
    assert_int_equal(g[1].err, UV_ECONNRESET);
    mqr_sink_t *sk = mqr__http_sink(h);
    assert_int_equal(sk->errors[MQR_SINK_ERR_CONNECT], 2);
    assert_int_equal(sk->retried, 2);
    finish_loop(&loop, h);
}

static void test_killed_and_restarted(void **state)
{
    (void)state;
    server_t s = {0};
    fault_start(&s, NULL, NULL);
    uv_loop_t loop;
    uv_loop_init(&loop);
    mqr_http_t *h = client(&loop, &(mqr_http_opts_t){0});
    mqr_sink_t *sk = mqr__http_sink(h);
    char url[128];
    got_t first = {0};
    snprintf(url, sizeof url, "http://127.0.0.1:%d/echo", s.port);
    assert_int_equal(send_req(h, "GET", url, &first), 0);
    assert_true(run_until(&loop, &first, 1, 3000));
    assert_true(sk->up);

    got_t g[3] = {{0}};
    snprintf(url, sizeof url, "http://127.0.0.1:%d/slow?ms=5000", s.port);
    for (int i = 0; i < 3; i++)
        assert_int_equal(send_req(h, "GET", url, &g[i]), 0);
    wait_active(&loop, s.port, 3); /* the server is answering all three */
    server_stop(&s);
    assert_true(run_until(&loop, g, 3, 3000));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(g[i].calls, 1);
        assert_int_equal(g[i].outcome, MQR_SINK_RETRY);
        assert_int_equal(g[i].status, 0);
        /* curl sends a request again, once, on a fresh connection when a
         * reused one died before any answer: that one is refused */
        if (g[i].err != UV_ECONNRESET && g[i].err != UV_ECONNREFUSED)
            fail_msg("request %d: err %d (%s)", i, g[i].err, g[i].reason);
    }
    assert_int_equal(sk->errors[MQR_SINK_ERR_CONNECT], 3);
    assert_false(sk->up);
    assert_int_equal(sk->reconnects, 0);

    /* refused while down, then answered once it is back on the same port */
    got_t down = {0};
    snprintf(url, sizeof url, "http://127.0.0.1:%d/echo", s.port);
    assert_int_equal(send_req(h, "GET", url, &down), 0);
    assert_true(run_until(&loop, &down, 1, 3000));
    assert_int_equal(down.err, UV_ECONNREFUSED);
    fault_start(&s, NULL, NULL);
    got_t after[5] = {{0}};
    for (int i = 0; i < 5; i++)
        assert_int_equal(send_req(h, "GET", url, &after[i]), 0);
    assert_true(run_until(&loop, after, 5, 3000));
    for (int i = 0; i < 5; i++)
        assert_int_equal(after[i].outcome, MQR_SINK_OK);
    assert_true(sk->up);
    assert_int_equal(sk->reconnects, 1);
    finish_loop(&loop, h);
    server_stop(&s);
}

static void test_keepalive(void **state)
{
    (void)state;
    server_t s = shared_server();
    uv_loop_t loop;
    uv_loop_init(&loop);
    mqr_http_t *h = client(&loop, &(mqr_http_opts_t){.max_host_connections = 2});
    long conns0 = fault_stat(s.port, "connections"); /* earlier tests' */
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/echo", s.port);
    for (int i = 0; i < 100; i++) {
        got_t g = {0};
        assert_int_equal(send_req(h, i % 2 ? "POST" : "GET", url, &g), 0);
        assert_true(run_until(&loop, &g, 1, 3000));
        assert_int_equal(g.outcome, MQR_SINK_OK);
    }
    long seq = fault_stat(s.port, "connections") - conns0;
    print_message("keep-alive: 100 sequential requests over %ld connection(s)\n", seq);
    assert_int_equal(seq, 1);
    /* and 20 at once: the per-host bound holds them to 2 connections */
    got_t burst[20] = {{0}};
    for (int i = 0; i < 20; i++)
        assert_int_equal(send_req(h, "GET", url, &burst[i]), 0);
    assert_true(run_until(&loop, burst, 20, 5000));
    long conns = fault_stat(s.port, "connections") - conns0;
    print_message("keep-alive: 120 requests over %ld connection(s) (client counted %llu)\n", conns,
                  (unsigned long long)mqr__http_connections(h));
    assert_true(conns >= 1 && conns <= 2);
    assert_true(mqr__http_connections(h) <= 2);
    assert_int_equal(mqr__http_sink(h)->ok, 120);
    finish_loop(&loop, h);
}

static void test_full_fifo_nothing_lost(void **state)
{
    (void)state;
    server_t s = shared_server();
    uv_loop_t loop;
    uv_loop_init(&loop);
    mqr_http_t *h = client(&loop, &(mqr_http_opts_t){.max_in_flight = 1, .max_queued = 3});
    mqr_sink_t *sk = mqr__http_sink(h);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/slow?ms=20", s.port);
    got_t g[5] = {{0}};
    norder = 0;
    for (int i = 0; i < 4; i++) {
        g[i].index = i;
        assert_int_equal(send_req(h, "GET", url, &g[i]), 0);
    }
    assert_int_equal(sk->in_flight, 1);
    assert_int_equal(sk->queued, 3);
    assert_int_equal(send_req(h, "GET", url, &g[4]), MQR_EFULL);
    assert_int_equal(sk->errors[MQR_SINK_ERR_FULL], 1);
    assert_true(run_until(&loop, g, 4, 5000));
    /* a little longer: a second callback would show */
    uint64_t until = now_ms() + 100;
    while (now_ms() < until) {
        uv_run(&loop, UV_RUN_NOWAIT);
        sleep_ms(2);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(g[i].calls, 1);
        assert_int_equal(g[i].outcome, MQR_SINK_OK);
        assert_int_equal(order[i], i); /* FIFO */
    }
    assert_int_equal(g[4].calls, 0);
    assert_int_equal(sk->requests, 4);
    assert_int_equal(sk->ok, 4);
    assert_int_equal(sk->in_flight, 0);
    assert_int_equal(sk->queued, 0);
    /* queue wait is part of the latency */
    assert_true(g[3].seconds > g[0].seconds);
    finish_loop(&loop, h);
}

static double cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

static void on_idle_timer(uv_timer_t *t)
{
    (void)t;
}

static void on_guard_timer(uv_timer_t *t)
{
    uv_stop(t->loop);
}

/* Runs loop with nothing of ours but a ms timer (and a 2 s guard that
 * stops a run something else keeps going): how long it ran, and the CPU
 * it took (*cpu). */
static uint64_t run_idle(uv_loop_t *loop, uint64_t ms, double *cpu)
{
    uv_timer_t t, guard;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, on_idle_timer, ms, 0);
    uv_timer_init(loop, &guard);
    uv_timer_start(&guard, on_guard_timer, 2000, 0);
    uv_unref((uv_handle_t *)&guard);
    double c0 = cpu_ms();
    uint64_t t0 = now_ms();
    uv_run(loop, UV_RUN_DEFAULT);
    *cpu = cpu_ms() - c0;
    uint64_t took = now_ms() - t0;
    uv_close((uv_handle_t *)&t, NULL);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return took;
}

/* Keep-alive connections idle between requests: they keep no loop
 * running; when the server closes one meanwhile the client does not spin
 * on the dead socket, and the next request opens a new connection
 * without a failure. */
static void test_idle_connections(void **state)
{
    (void)state;
    server_t s = shared_server();
    uv_loop_t loop;
    uv_loop_init(&loop);
    mqr_http_t *h = client(&loop, &(mqr_http_opts_t){.max_host_connections = 1});
    long conns0 = fault_stat(s.port, "connections");
    char echo[128], hangup[128];
    snprintf(echo, sizeof echo, "http://127.0.0.1:%d/echo", s.port);
    snprintf(hangup, sizeof hangup, "http://127.0.0.1:%d/idle-close?ms=30", s.port);
    got_t g[3] = {{0}};
    assert_int_equal(send_req(h, "GET", echo, &g[0]), 0);
    assert_true(run_until(&loop, g, 1, 3000));
    double cpu;
    uint64_t took = run_idle(&loop, 100, &cpu);
    print_message("idle, open: ran %llu ms\n", (unsigned long long)took);
    assert_true(took >= 95 && took < 1000);

    assert_int_equal(send_req(h, "GET", hangup, &g[1]), 0); /* same connection */
    assert_true(run_until(&loop, g, 2, 3000));
    took = run_idle(&loop, 300, &cpu); /* the server hangs up 30 ms in */
    print_message("idle, closed by the server: %.1f ms of CPU over %llu ms\n", cpu,
                  (unsigned long long)took);
    assert_true(took >= 290 && took < 1000);
    assert_true(cpu < 100);

    assert_int_equal(send_req(h, "GET", echo, &g[2]), 0);
    assert_true(run_until(&loop, g, 3, 3000));
    for (int i = 0; i < 3; i++)
        assert_int_equal(g[i].outcome, MQR_SINK_OK);
    assert_int_equal(fault_stat(s.port, "connections") - conns0, 2);
    mqr_sink_t *sk = mqr__http_sink(h);
    assert_int_equal(sk->ok, 3);
    assert_int_equal(sk->retried + sk->failed, 0);
    finish_loop(&loop, h);
}

/* A host's connections all busy: its next requests wait here (counted
 * as queued), in order, while another host's go at once. */
static void test_busy_host_waits_others_go(void **state)
{
    (void)state;
    server_t a = shared_server(), b = {0};
    fault_start(&b, NULL, NULL);
    uv_loop_t loop;
    uv_loop_init(&loop);
    mqr_http_t *h = client(&loop, &(mqr_http_opts_t){.max_host_connections = 2});
    mqr_sink_t *sk = mqr__http_sink(h);
    char slow[128], quick[128];
    snprintf(slow, sizeof slow, "http://127.0.0.1:%d/slow?ms=300", a.port);
    snprintf(quick, sizeof quick, "http://127.0.0.1:%d/echo", b.port);
    got_t g[7] = {{0}};
    norder = 0;
    for (int i = 0; i < 6; i++) {
        g[i].index = i;
        assert_int_equal(send_req(h, "GET", slow, &g[i]), 0);
    }
    assert_int_equal(sk->in_flight, 2);
    assert_int_equal(sk->queued, 4);
    g[6].index = 6;
    assert_int_equal(send_req(h, "GET", quick, &g[6]), 0);
    assert_int_equal(sk->in_flight, 3);
    wait_active(&loop, a.port, 2);
    assert_true(run_until(&loop, &g[6], 1, 3000));
    assert_int_equal(g[6].outcome, MQR_SINK_OK);
    assert_int_equal(g[0].calls, 0); /* the other host's still on the wire */
    assert_true(run_until(&loop, g, 6, 5000));
    assert_int_equal(order[0], 6);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(g[i].outcome, MQR_SINK_OK);
        assert_int_equal(order[i + 1] / 2, i / 2); /* FIFO within the host: by rounds of two */
    }
    assert_true(g[5].seconds > 0.8); /* three rounds of two */
    assert_int_equal(sk->in_flight, 0);
    assert_int_equal(sk->queued, 0);
    finish_loop(&loop, h);
    server_stop(&b);
}

/* Answers framed other ways than Content-Length: chunks, and an HTTP/1.0
 * body that ends when the server closes; and an interim 103 before the
 * answer, whose headers are not the answer's. */
static void test_chunked_and_until_close(void **state)
{
    (void)state;
    server_t s = shared_server();
    uv_loop_t loop;
    uv_loop_init(&loop);
    mqr_http_t *h = client(&loop, &(mqr_http_opts_t){0});
    char url[3][128];
    snprintf(url[0], sizeof url[0], "http://127.0.0.1:%d/chunked", s.port);
    snprintf(url[1], sizeof url[1], "http://127.0.0.1:%d/until-close", s.port);
    snprintf(url[2], sizeof url[2], "http://127.0.0.1:%d/early-hints", s.port);
    got_t g[3] = {{0}};
    for (int i = 0; i < 3; i++)
        assert_int_equal(send_req(h, "GET", url[i], &g[i]), 0);
    assert_true(run_until(&loop, g, 3, 3000));
    assert_int_equal(g[2].outcome, MQR_SINK_OK);
    assert_int_equal(g[2].status, 200);
    assert_string_equal(g[2].body, "ok");
    assert_int_equal(g[2].nheaders, 2); /* content-length, x-final: not the 103's link */
    assert_int_equal(g[0].outcome, MQR_SINK_OK);
    assert_string_equal(g[0].body, "hello world");
    assert_int_equal(g[0].http_version, 11);
    assert_int_equal(g[1].outcome, MQR_SINK_OK);
    assert_string_equal(g[1].body, "until close");
    assert_int_equal(g[1].http_version, 10);
    assert_string_equal(g[1].ctype, "text/plain");
    finish_loop(&loop, h);
}

/* The server drops a kept-alive connection just as the next request comes
 * on it: that request goes again on a new connection, unseen by the
 * caller, as curl does it. */
static void test_stale_connection_resent(void **state)
{
    (void)state;
    server_t s = shared_server();
    uv_loop_t loop;
    uv_loop_init(&loop);
    mqr_http_t *h = client(&loop, &(mqr_http_opts_t){.max_host_connections = 1});
    long conns0 = fault_stat(s.port, "connections");
    char url[2][128];
    snprintf(url[0], sizeof url[0], "http://127.0.0.1:%d/close-next", s.port);
    snprintf(url[1], sizeof url[1], "http://127.0.0.1:%d/echo", s.port);
    got_t g[2] = {{0}};
    assert_int_equal(send_req(h, "GET", url[0], &g[0]), 0);
    assert_true(run_until(&loop, g, 1, 3000));
    assert_int_equal(send_req(h, "POST", url[1], &g[1]), 0);
    assert_true(run_until(&loop, g, 2, 3000));
    assert_int_equal(g[0].outcome, MQR_SINK_OK);
    if (g[1].outcome != MQR_SINK_OK) fail_msg("resent: %s", g[1].reason);
    assert_non_null(strstr(g[1].body, "\"method\": \"POST\""));
    assert_int_equal(fault_stat(s.port, "connections") - conns0, 2);
    mqr_sink_t *sk = mqr__http_sink(h);
    assert_int_equal(sk->ok, 2);
    assert_int_equal(sk->retried + sk->failed, 0);
    finish_loop(&loop, h);
}

static void expect_einval(mqr_http_t *h, const mqr_http_req_t *q, const char *why_part)
{
    got_t g = {0};
    char why[256] = "unset";
    assert_int_equal(mqr__http_request(h, q, on_done, &g, why, sizeof why), MQR_EINVAL);
    if (!strstr(why, why_part)) fail_msg("why \"%s\" lacks \"%s\"", why, why_part);
    assert_null(strstr(why, "s3cret"));
    assert_int_equal(g.calls, 0);
}

static void test_invalid_requests(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    mqr_http_t *h = client(&loop, &(mqr_http_opts_t){0});
    expect_einval(h, &(mqr_http_req_t){.method = "GET", .url = "http://exa mple.com/"},
                  "malformed URL");
    expect_einval(h, &(mqr_http_req_t){.method = "GET", .url = "not a url"}, "malformed URL");
    expect_einval(h, &(mqr_http_req_t){.method = "GET", .url = "ftp://u:s3cret@127.0.0.1/x"},
                  "scheme \"ftp\" is not http or https");
    expect_einval(h, &(mqr_http_req_t){.method = "FETCH", .url = "http://127.0.0.1/"},
                  "method \"FETCH\"");
    expect_einval(h, &(mqr_http_req_t){.method = "get", .url = "http://127.0.0.1/"},
                  "method \"get\"");
    mqr_http_header_t crlf[] = {{"X-Ok", "1"}, {"X-Bad", "s3cret\r\nX-Injected: 1"}};
    expect_einval(h,
                  &(mqr_http_req_t){
                      .method = "GET", .url = "http://127.0.0.1/", .headers = crlf, .nheaders = 2},
                  "header 2: value holds CR or LF");
    mqr_http_header_t badname[] = {{"X-Bad\r\n", "v"}};
    expect_einval(
        h,
        &(mqr_http_req_t){
            .method = "GET", .url = "http://127.0.0.1/", .headers = badname, .nheaders = 1},
        "header 1: name");
    expect_einval(
        h,
        &(mqr_http_req_t){.method = "HEAD", .url = "http://127.0.0.1/", .body = "x", .body_len = 1},
        "HEAD takes no body");
    expect_einval(h, &(mqr_http_req_t){.method = "GET"}, "NULL");
    mqr_sink_t *sk = mqr__http_sink(h);
    assert_int_equal(sk->requests, 0);
    assert_int_equal(sk->in_flight, 0);
    /* the loop has nothing of theirs to run */
    for (int i = 0; i < 10; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    finish_loop(&loop, h);
}

static void test_close_in_flight(void **state)
{
    (void)state;
    server_t s = shared_server();
    uv_loop_t loop;
    uv_loop_init(&loop);
    mqr_http_t *h = client(&loop, &(mqr_http_opts_t){.max_in_flight = 2});
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/slow?ms=3000", s.port);
    got_t g[4] = {{0}};
    for (int i = 0; i < 4; i++)
        assert_int_equal(send_req(h, "GET", url, &g[i]), 0);
    wait_active(&loop, s.port, 2); /* the first two on the wire */
    mqr__http_close(h);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(g[i].calls, 1);
        assert_int_equal(g[i].outcome, MQR_SINK_RETRY);
        assert_int_equal(g[i].err, MQR_ECLOSED);
    }
    got_t late = {0};
    assert_int_equal(send_req(h, "GET", url, &late), MQR_ECLOSED);
    mqr__http_close(h); /* again: nothing */
    uint64_t deadline = now_ms() + 3000;
    while (uv_run(&loop, UV_RUN_NOWAIT) != 0 && now_ms() < deadline)
        sleep_ms(1);
    for (int i = 0; i < 4; i++)
        assert_int_equal(g[i].calls, 1);
    assert_int_equal(late.calls, 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_close_from_callback(void **state)
{
    (void)state;
    server_t s = shared_server();
    uv_loop_t loop;
    uv_loop_init(&loop);
    mqr_http_t *h = client(&loop, &(mqr_http_opts_t){.max_in_flight = 2});
    char fast[128], slow[128];
    snprintf(fast, sizeof fast, "http://127.0.0.1:%d/echo", s.port);
    snprintf(slow, sizeof slow, "http://127.0.0.1:%d/slow?ms=3000", s.port);
    got_t g[3] = {{0}};
    assert_int_equal(send_req(h, "GET", slow, &g[0]), 0);
    assert_int_equal(send_req(h, "GET", fast, &g[1]), 0);
    assert_int_equal(send_req(h, "GET", slow, &g[2]), 0); /* waits */
    close_me = h;
    assert_true(run_until(&loop, g, 3, 3000));
    assert_null(close_me);
    assert_int_equal(g[1].outcome, MQR_SINK_OK);
    assert_int_equal(g[0].err, MQR_ECLOSED);
    assert_int_equal(g[2].err, MQR_ECLOSED);
    uint64_t deadline = now_ms() + 3000;
    while (uv_run(&loop, UV_RUN_NOWAIT) != 0 && now_ms() < deadline)
        sleep_ms(1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(g[i].calls, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_body_cap(void **state)
{
    (void)state;
    server_t s = shared_server();
    uv_loop_t loop;
    uv_loop_init(&loop);
    mqr_http_t *h = client(&loop, &(mqr_http_opts_t){.max_response_bytes = 1000});
    char url[128];
    got_t g[2] = {{0}};
    snprintf(url, sizeof url, "http://127.0.0.1:%d/big?n=1000", s.port);
    assert_int_equal(send_req(h, "GET", url, &g[0]), 0);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/big?n=5000", s.port);
    assert_int_equal(send_req(h, "GET", url, &g[1]), 0);
    assert_true(run_until(&loop, g, 2, 3000));
    assert_int_equal(g[0].outcome, MQR_SINK_OK);
    assert_int_equal(g[0].body_len, 1000);
    assert_int_equal(g[1].outcome, MQR_SINK_PERMANENT);
    assert_int_equal(g[1].err, MQR_ETOOLARGE);
    finish_loop(&loop, h);
}

static void test_tls_verify(void **state)
{
    (void)state;
    server_t s = {0};
    fault_start(&s, cert("server.pem"), cert("server.key"));
    char url[128];
    snprintf(url, sizeof url, "https://127.0.0.1:%d/echo", s.port);
    static const struct {
        const char *ca;
        bool insecure;
        mqr_sink_outcome_t outcome;
        int err;
    } cases[] = {
        {"ca.pem", false, MQR_SINK_OK, 0},
        {NULL, true, MQR_SINK_OK, 0},
        {"other.pem", false, MQR_SINK_PERMANENT, MQR_ETLS},
        {NULL, false, MQR_SINK_PERMANENT, MQR_ETLS}, /* the system's CAs do not know ours */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uv_loop_t loop;
        uv_loop_init(&loop);
        mqr_http_opts_t o = {.ca_file = cases[i].ca ? cert(cases[i].ca) : NULL,
                             .insecure = cases[i].insecure};
        mqr_http_t *h = client(&loop, &o);
        got_t g = {0};
        assert_int_equal(send_req(h, "POST", url, &g), 0);
        assert_true(run_until(&loop, &g, 1, 5000));
        print_message("tls case %zu: status %d err %d %s\n", i, g.status, g.err, g.reason);
        assert_int_equal(g.outcome, cases[i].outcome);
        assert_int_equal(g.err, cases[i].err);
        if (cases[i].err) {
            assert_true(strncmp(g.reason, "ETLS: ", 6) == 0);
            assert_int_equal(mqr__http_sink(h)->errors[MQR_SINK_ERR_CONNECT], 1);
        } else {
            assert_non_null(strstr(g.body, "\"method\": \"POST\""));
        }
        finish_loop(&loop, h);
    }
    /* an unreadable CA file is refused up front */
    uv_loop_t loop;
    uv_loop_init(&loop);
    mqr_http_t *h = NULL;
    char *err = NULL;
    mqr_http_opts_t bad = {.ca_file = "/nonexistent/ca.pem"};
    assert_int_equal(mqr__http_new(&loop, &bad, &h, &err), MQR_EINVAL);
    assert_null(h);
    assert_non_null(strstr(err, "/nonexistent/ca.pem"));
    free(err);
    assert_int_equal(uv_loop_close(&loop), 0);
    server_stop(&s);
}

/* nginx-light over TLS offers HTTP/2: two requests at once share one
 * connection (multiplexed). */
static void test_nginx_http2(void **state)
{
    (void)state;
    if (access("/usr/sbin/nginx", X_OK) != 0) fail_msg("/usr/sbin/nginx is missing");
    char dir[64] = "/tmp/mqr-nginx-XXXXXX";
    assert_non_null(mkdtemp(dir));
    server_t s = {.port = free_port()};
    char conf[128];
    snprintf(conf, sizeof conf, "%s/nginx.conf", dir);
    FILE *f = fopen(conf, "w");
    assert_non_null(f);
    fprintf(f,
            "daemon off; master_process off; worker_processes 1;\n"
            "error_log %s/error.log; pid %s/nginx.pid;\n"
            "events { worker_connections 256; }\n"
            "http { access_log off; client_body_temp_path %s; proxy_temp_path %s;\n"
            "  fastcgi_temp_path %s; uwsgi_temp_path %s; scgi_temp_path %s;\n"
            "  keepalive_requests 100000;\n"
            "  server { listen 127.0.0.1:%d ssl http2;\n"
            "    ssl_certificate %s; ssl_certificate_key %s;\n"
            "    location /ok { return 200 'ok'; } } }\n",
            dir, dir, dir, dir, dir, dir, dir, s.port, cert("server.pem"), cert("server.key"));
    fclose(f);
    char *argv[] = {"/usr/sbin/nginx", "-p", dir, "-c", conf, NULL};
    spawn(&s, argv);

    uv_loop_t loop;
    uv_loop_init(&loop);
    mqr_http_t *h = client(&loop, &(mqr_http_opts_t){.ca_file = cert("ca.pem")});
    char url[128];
    snprintf(url, sizeof url, "https://localhost:%d/ok", s.port);
    got_t g[10] = {{0}};
    for (int i = 0; i < 10; i++) {
        mqr_http_req_t q = {
            .method = "POST", .url = url, .body = "{\"temp\":21.5}", .body_len = 13};
        char why[256];
        assert_int_equal(mqr__http_request(h, &q, on_done, &g[i], why, sizeof why), 0);
    }
    assert_true(run_until(&loop, g, 10, 5000));
    for (int i = 0; i < 10; i++) {
        if (g[i].outcome != MQR_SINK_OK) fail_msg("%d: %s", i, g[i].reason);
        assert_int_equal(g[i].outcome, MQR_SINK_OK);
        assert_int_equal(g[i].http_version, 20);
        assert_string_equal(g[i].body, "ok");
    }
    assert_int_equal(mqr__http_connections(h), 1);
    finish_loop(&loop, h);
    server_stop(&s);
    sh("rm -rf %s", dir);
}

static int setup_certs(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    return tls_certs_make();
}

static int remove_certs(void **state)
{
    (void)state;
    server_stop(&shared);
    tls_certs_remove();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_status_classes),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_refused_and_dropped),
        cmocka_unit_test(test_killed_and_restarted),
        cmocka_unit_test(test_keepalive),
        cmocka_unit_test(test_full_fifo_nothing_lost),
        cmocka_unit_test(test_idle_connections),
        cmocka_unit_test(test_busy_host_waits_others_go),
        cmocka_unit_test(test_chunked_and_until_close),
        cmocka_unit_test(test_stale_connection_resent),
        cmocka_unit_test(test_invalid_requests),
        cmocka_unit_test(test_close_in_flight),
        cmocka_unit_test(test_close_from_callback),
        cmocka_unit_test(test_body_cap),
        cmocka_unit_test(test_tls_verify),
        cmocka_unit_test(test_nginx_http2),
    };
    return cmocka_run_group_tests(tests, setup_certs, remove_certs);
}
