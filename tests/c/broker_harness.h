/*
 * broker_harness.h — a real Mosquitto for the upstream-session C tests:
 * started on a free loopback port with a generated configuration, waited
 * for until it accepts, killed in the teardown (and, through
 * PR_SET_PDEATHSIG, when the test process dies), plus the time helpers the
 * tests wait with, and helpers that run mosquitto_pub / mosquitto_sub.
 *
 * Included once by each test program that needs a broker; functions are
 * static inline only so that a test need not use all of them.
 */
#ifndef MQR_BROKER_HARNESS_H
#define MQR_BROKER_HARNESS_H

#include "loopback.h"
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#define MOSQUITTO "/usr/sbin/mosquitto"

/* ---- a broker on loopback ---------------------------------------------- */

typedef struct {
    pid_t pid;
    int port;
    char dir[64];
    char extra[1024]; /* appended to the configuration (more listeners, TLS) */
} broker_t;

static inline uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- an engine without listener or data directory --------------------- */

/* Drives e's loop until pred(arg, want) holds (pred NULL: never) or
 * timeout_ms passes; true when pred held. */
static inline bool engine_run_until(mqr_engine_t *e, bool (*pred)(void *arg, const void *want),
                                    void *arg, const void *want, int timeout_ms)
{
    uv_loop_t *loop = mqr_engine_loop(e);
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        uv_run(loop, UV_RUN_NOWAIT);
        if (pred && pred(arg, want)) return true;
        if (now_ms() >= deadline) return false;
        sleep_ms(2);
    }
}

/* The engine the upstream tests drive; NULL (and said why) on failure. */
static inline mqr_engine_t *test_engine_new(int log_level)
{
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.listen_port = -1;
    o.data_dir = "";
    o.log_level = log_level;
    mqr_engine_t *e = NULL;
    char *err = NULL;
    if (mqr_engine_new(&e, &o, NULL, &err) != 0) {
        fprintf(stderr, "engine: %s\n", err ? err : "?");
        free(err);
        return NULL;
    }
    return e;
}

static inline int free_port(void)
{
    int port = lb_free_port();
    assert_true(port > 0);
    return port;
}

static inline bool port_accepts(int port)
{
    return lb_port_accepts(port);
}

/* Starts mosquitto on b->port and waits until it accepts connections:
 * false when it exited at once (the port taken). */
static inline bool broker_try_start(broker_t *b)
{
    if (!b->dir[0]) {
        snprintf(b->dir, sizeof b->dir, "/tmp/mqr-upstream-XXXXXX");
        assert_non_null(mkdtemp(b->dir));
    }
    char conf[128];
    snprintf(conf, sizeof conf, "%s/mosquitto.conf", b->dir);
    FILE *f = fopen(conf, "w");
    assert_non_null(f);
    fprintf(f, "listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n", b->port);
    /* As root mosquitto would switch to its own user, and a change of
     * credentials clears PR_SET_PDEATHSIG. */
    if (geteuid() == 0) fprintf(f, "user root\n");
    fputs(b->extra, f);
    fclose(f);

    pid_t parent = getpid();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* Dies with us, however we die. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(1);
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) {
            dup2(null, STDOUT_FILENO);
            dup2(null, STDERR_FILENO);
        }
        execl(MOSQUITTO, "mosquitto", "-c", conf, (char *)NULL);
        _exit(127);
    }
    b->pid = pid;
    uint64_t deadline = now_ms() + 5000;
    while (!port_accepts(b->port)) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            b->pid = 0;
            return false;
        }
        if (now_ms() > deadline) fail_msg("mosquitto does not accept on port %d", b->port);
        sleep_ms(20);
    }
    return true;
}

/* Starts mosquitto on b->port, or on a free port when 0: a port found free
 * may be taken before mosquitto binds it (a parallel test's outgoing
 * connection gets it as its own), so a picked port is picked again, up to
 * five times. */
static inline void broker_start(broker_t *b)
{
    bool picked = !b->port;
    for (int attempt = 0; attempt < 5; attempt++) {
        if (picked) b->port = free_port();
        if (broker_try_start(b)) return;
        if (!picked) break;
    }
    fail_msg("mosquitto exited at start (port %d)", b->port);
}

static inline void broker_stop(broker_t *b)
{
    if (b->pid > 0) {
        kill(b->pid, SIGKILL);
        waitpid(b->pid, NULL, 0);
        b->pid = 0;
    }
}

static inline void broker_cleanup(broker_t *b)
{
    broker_stop(b);
    if (b->dir[0]) {
        char path[128];
        snprintf(path, sizeof path, "%s/mosquitto.conf", b->dir);
        unlink(path);
        rmdir(b->dir);
        b->dir[0] = '\0';
    }
}

/* ---- mosquitto client tools ---------------------------------------------- */

static inline int sh(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A mosquitto_sub whose output we read while the loop runs. */
typedef struct {
    FILE *f;
    char out[8192];
    size_t len;
} sub_proc_t;

static inline void sub_start(sub_proc_t *s, const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    memset(s, 0, sizeof *s);
    s->f = popen(cmd, "r");
    assert_non_null(s->f);
    int fd = fileno(s->f);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static inline bool sub_has(void *arg, const void *needle)
{
    sub_proc_t *s = arg;
    for (;;) {
        ssize_t n = read(fileno(s->f), s->out + s->len, sizeof s->out - 1 - s->len);
        if (n <= 0) break;
        s->len += (size_t)n;
        s->out[s->len] = '\0';
    }
    return strstr(s->out, needle) != NULL;
}

static inline int sub_finish(sub_proc_t *s)
{
    int fd = fileno(s->f);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    sub_has(s, "\x01"); /* drain the rest */
    int st = pclose(s->f);
    s->f = NULL;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#endif
