/*
 * admin.c — what the admin API costs and how fast it answers.
 *
 *   bench_admin [objects] [seconds] [messages] [devices]
 *
 * 1. Handler latency timing: messages/s through one trivial Lua route,
 *    published from C, without and with the admin API (with it, every
 *    handler call is timed with uv_hrtime for the latency histogram).
 * 2. An engine (its loop in a second thread) with `objects` upstream
 *    sessions (to a closed port, retrying slowly), queues, Lua routes and
 *    retained messages, its admin API on a loopback port; from the main
 *    thread, over one keep-alive connection: GET /health requests/s for
 *    `seconds`, then the time of GET /metrics (mean, max of 20 scrapes, and
 *    its size) and of GET /api/v1/queues?limit=1000. The registry holds
 *    `devices` devices (registered through the C API, default 10 000)
 *    and as many topics (published to once each), so the scrape and
 *    GET /api/v1/devices and /api/v1/topics (limit=1000) are timed with them.
 * Not a test: it checks only that answers are 200 and whole.
 */
#include "mqrouter.h"

#include "admin.h"
#include "engine.h"
#include "queue.h"
#include "registry.h"
#include "upstream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static mqr_engine_t *new_engine(void)
{
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.listen_port = -1;
    o.data_dir = "";
    o.log_level = MQR_LOG_ERROR; /* the sessions' connect failures are expected */
    mqr_log_set_level(MQR_LOG_ERROR);
    mqr_engine_t *e;
    char *err = NULL;
    if (mqr_engine_new(&e, &o, NULL, &err) < 0) {
        fprintf(stderr, "engine: %s\n", err);
        exit(1);
    }
    return e;
}

/* ---- 1: the cost of timing handlers ---- */

static void timing_case(long n, int admin, double *rate)
{
    mqr_engine_t *e = new_engine();
    char *err = NULL;
    if (admin && mqr_engine_admin(e, "127.0.0.1", 0, NULL, 0, &err) < 0) {
        fprintf(stderr, "admin: %s\n", err);
        exit(1);
    }
    if (mqr_engine_load_string(e, "bench.lua",
                               "local mq = require 'mqrouter'\ncount = 0\n"
                               "mq.route('s/+/t', function(m) count = count + #m.payload end)\n",
                               &err) < 0) {
        fprintf(stderr, "load: %s\n", err);
        exit(1);
    }
    char payload[64];
    memset(payload, 'x', sizeof payload);
    for (long i = 0; i < n / 10; i++)
        mqr_publish(e, "s/1/t", payload, sizeof payload, 0, 0);
    double t0 = now_s();
    for (long i = 0; i < n; i++)
        mqr_publish(e, "s/1/t", payload, sizeof payload, 0, 0);
    double dt = now_s() - t0;
    *rate = n / dt;
    mqr_engine_free(e);
}

/* ---- 2: the HTTP side ---- */

typedef struct {
    int objects;
    int devices;
    atomic_int port; /* 0 until the admin API listens, -1 on failure */
    uv_async_t stop;
    mqr_engine_t *e;
} server_t;

static void on_stop(uv_async_t *a)
{
    server_t *s = a->data;
    uv_close((uv_handle_t *)a, NULL);
    mqr_engine_stop(s->e);
}

static void server_thread(void *arg)
{
    server_t *s = arg;
    mqr_engine_t *e = new_engine();
    s->e = e;
    char *err = NULL;
    /* first, so that the routes' handler calls below are timed: every
     * route then has its latency histogram in the scrape (the worst case) */
    if (mqr_engine_admin(e, "127.0.0.1", 0, NULL, 0, &err) < 0) {
        fprintf(stderr, "admin: %s\n", err);
        atomic_store(&s->port, -1);
        return;
    }
    /* routes: one Lua script with `objects` routes */
    size_t cap = 256 + (size_t)s->objects * 64;
    char *code = malloc(cap);
    size_t len = (size_t)snprintf(code, cap, "local mq = require 'mqrouter'\n");
    for (int i = 0; i < s->objects; i++)
        len +=
            (size_t)snprintf(code + len, cap - len, "mq.route('dev/%d/#', function(m) end)\n", i);
    if (mqr_engine_load_string(e, "bench.lua", code, &err) < 0) {
        fprintf(stderr, "load: %s\n", err);
        exit(1);
    }
    free(code);
    mqr__queues_init(e, NULL);
    char name[64];
    for (int i = 0; i < s->objects; i++) {
        mqr_queue_config_t qc;
        mqr__queue_config_init(&qc);
        snprintf(name, sizeof name, "queue-%d", i);
        qc.name = name;
        mqr_queue_t *q;
        if (mqr__queue_new(e, &qc, &q) < 0) exit(1);
        mqr_upstream_config_t uc = {0};
        snprintf(name, sizeof name, "session-%d", i);
        uc.name = name;
        uc.uri = "tcp://127.0.0.1:1";
        uc.clean_start = 1;
        uc.persist = -1;
        uc.session_expiry_s = -1;
        uc.retry_initial_s = 3600;
        uc.retry_max_s = 3600;
        mqr_upstream_t *u;
        if (mqr__upstream_new(e, &uc, &u) < 0) exit(1);
        char topic[64];
        snprintf(topic, sizeof topic, "dev/%d/state", i);
        mqr_publish(e, topic, "on", 2, 0, 1);
    }
    /* the registry: devices registered, topics seen once each */
    mqr__topics_set_max(mqr__engine_registry(e), (size_t)s->devices + (size_t)s->objects + 16);
    for (int i = 0; i < s->devices; i++) {
        char id[32], topic[64];
        snprintf(id, sizeof id, "dev-%05d", i);
        mqr_device_spec_t sp = {.id = id,
                                .name = "bench device",
                                .type = i % 2 ? "pump" : "valve",
                                .metadata = "{\"site\":\"north\"}"};
        if (mqr__device_register(mqr__engine_registry(e), &sp, NULL, NULL) < 0) exit(1);
        snprintf(topic, sizeof topic, "site/%d/temp", i);
        mqr_publish(e, topic, "21.5", 4, 0, 0);
    }
    uv_async_init(mqr_engine_loop(e), &s->stop, on_stop);
    s->stop.data = s;
    atomic_store(&s->port, mqr_engine_admin_port(e));
    mqr_engine_run(e);
    mqr_engine_free(e);
}

/* One GET over fd; returns the body length, -1 on a non-200 or error. */
static long get(int fd, const char *path, char **buf, size_t *cap)
{
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path);
    if (write(fd, req, (size_t)n) != n) return -1;
    size_t have = 0;
    long body = -1;
    size_t head = 0;
    for (;;) {
        if (have + 65536 > *cap) {
            *cap = (have + 65536) * 2;
            *buf = realloc(*buf, *cap);
        }
        ssize_t r = read(fd, *buf + have, *cap - have - 1);
        if (r <= 0) return -1;
        have += (size_t)r;
        (*buf)[have] = '\0';
        if (body < 0) {
            char *end = strstr(*buf, "\r\n\r\n");
            if (!end) continue;
            head = (size_t)(end - *buf) + 4;
            if (strncmp(*buf, "HTTP/1.1 200", 12) != 0) return -1;
            char *cl = strcasestr(*buf, "Content-Length:");
            if (!cl) return -1;
            body = atol(cl + 15);
        }
        if (have >= head + (size_t)body) return body;
    }
}

int main(int argc, char **argv)
{
    int objects = argc > 1 ? atoi(argv[1]) : 1000;
    double seconds = argc > 2 ? atof(argv[2]) : 2.0;
    long n = argc > 3 ? atol(argv[3]) : 2000000;
    int devices = argc > 4 ? atoi(argv[4]) : 10000;

    /* alternating rounds, best of each: the machine's noise is larger than
     * the difference measured */
    double off = 0, on = 0;
    for (int round = 0; round < 5; round++) {
        double a, b;
        timing_case(n, 0, &a);
        timing_case(n, 1, &b);
        if (a > off) off = a;
        if (b > on) on = b;
    }
    /* the timing alone, per handler call: two clock reads and a histogram add */
    mqr__admin_clock_init();
    mqr_admin_hist_t hist = {0};
    double c0 = now_s();
    for (long i = 0; i < 10000000; i++) {
        uint64_t t = mqr__admin_ticks();
        mqr__admin_hist_add_ticks(&hist, mqr__admin_ticks() - t);
    }
    double per_call = (now_s() - c0) / 1e7 * 1e9;
    bool tsc = mqr__admin_use_tsc;
    mqr__admin_use_tsc = false;
    c0 = now_s();
    for (long i = 0; i < 10000000; i++) {
        uint64_t t = mqr__admin_ticks();
        mqr__admin_hist_add_ticks(&hist, mqr__admin_ticks() - t);
    }
    double per_call_hr = (now_s() - c0) / 1e7 * 1e9;
    mqr__admin_use_tsc = tsc;
    printf("timing per handler call: %.1f ns (%s), %.1f ns (uv_hrtime)\n", per_call,
           tsc ? "TSC" : "uv_hrtime", per_call_hr);
    printf("route handler, admin off   %10.0f msg/s\n", off);
    printf("route handler, admin on    %10.0f msg/s  (timing cost %.1f %%)\n", on,
           (off - on) / off * 100.0);
    printf("RESULT bench=admin case=\"handler timing\" off_msgs_per_s=%.0f on_msgs_per_s=%.0f "
           "cost_pct=%.1f timing_ns=%.1f timing_hrtime_ns=%.1f\n",
           off, on, (off - on) / off * 100.0, per_call, per_call_hr);

    server_t s = {.objects = objects, .devices = devices};
    uv_thread_t th;
    uv_thread_create(&th, server_thread, &s);
    while (atomic_load(&s.port) == 0)
        usleep(10000);
    if (atomic_load(&s.port) < 0) return 1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s.port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        perror("connect");
        return 1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char *buf = NULL;
    size_t cap = 0;
    long reqs = 0;
    double t0 = now_s(), t;
    while ((t = now_s()) - t0 < seconds) {
        if (get(fd, "/health", &buf, &cap) < 0) {
            fprintf(stderr, "GET /health failed\n");
            return 1;
        }
        reqs++;
    }
    double rps = reqs / (t - t0);
    printf("GET /health, keep-alive    %10.0f req/s  (%.1f us/req)\n", rps, 1e6 / rps);
    double sum = 0, max = 0;
    long size = 0;
    for (int i = 0; i < 20; i++) {
        double a = now_s();
        size = get(fd, "/metrics", &buf, &cap);
        double d = now_s() - a;
        if (size < 0) {
            fprintf(stderr, "GET /metrics failed\n");
            return 1;
        }
        sum += d;
        if (d > max) max = d;
    }
    /* the server's own figure: building the text, without the transfer */
    const char *g = strstr(buf, "\nmqrouter_admin_scrape_duration_seconds ");
    double build_ms = g ? atof(g + 40) * 1e3 : -1;
    printf("GET /metrics (%d sessions, queues, routes, retained; %d devices, %d topics): "
           "mean %.1f ms, max %.1f ms, %ld bytes; built in %.1f ms\n",
           objects, devices, devices, sum / 20 * 1e3, max * 1e3, size, build_ms);
    double a = now_s();
    long qsize = get(fd, "/api/v1/queues?limit=1000", &buf, &cap);
    double qd = now_s() - a;
    printf("GET /api/v1/queues?limit=1000: %.1f ms, %ld bytes\n", qd * 1e3, qsize);
    a = now_s();
    long dsize = get(fd, "/api/v1/devices?limit=1000", &buf, &cap);
    double dd = now_s() - a;
    a = now_s();
    long tsize = get(fd, "/api/v1/topics?limit=1000", &buf, &cap);
    double td_first = now_s() - a; /* sorts the topic index once */
    a = now_s();
    tsize = get(fd, "/api/v1/topics?limit=1000", &buf, &cap);
    double td = now_s() - a;
    printf("GET /api/v1/devices?limit=1000: %.1f ms, %ld bytes; /api/v1/topics?limit=1000: "
           "%.1f ms (first %.1f ms), %ld bytes\n",
           dd * 1e3, dsize, td * 1e3, td_first * 1e3, tsize);
    printf("RESULT bench=admin case=\"http\" objects=%d devices=%d topics=%d "
           "health_req_per_s=%.0f metrics_ms_mean=%.2f metrics_ms_max=%.2f metrics_build_ms=%.2f "
           "metrics_bytes=%ld queues_list_ms=%.2f devices_list_ms=%.2f topics_list_ms=%.2f\n",
           objects, devices, devices, rps, sum / 20 * 1e3, max * 1e3, build_ms, size, qd * 1e3,
           dd * 1e3, td * 1e3);
    close(fd);
    free(buf);
    uv_async_send(&s.stop);
    uv_thread_join(&th);
    return 0;
}
