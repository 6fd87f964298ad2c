/*
 * sink_redis.c — throughput of the Redis sink (core/sink/redis.c): XADDs
 * of a small sensor reading (device, temp, hum: three field/value pairs)
 * pipelined as fast as the bounds allow, against Debian's redis-server
 * started on a free loopback port (the same harness as the C test).
 *
 *   bench_sink_redis [xadds per case, default 500000]
 *
 * Cases: max_in_flight 1024 (the default), 128 and 16. The client keeps
 * every slot busy: it issues until MQR_EFULL, then one more per answer.
 * The server runs on the same machine and takes a core of its own: the
 * figure is client + server, not the client alone; each case prints the
 * CPU share of both (100 = one core busy all along) to show which one
 * limits. Not a test: it only checks that every XADD was answered OK.
 */
#include "mqrouter.h"
#include "redis.h"

#include "../tests/c/redis_harness.h"
#include "rules_load.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

typedef struct {
    mqr_redis_t *r;
    long n, issued, answered, ok;
} pump_t;

static void on_done(void *arg, const mqr_redis_result_t *res);

/* Issues until the sink says full (or n are out). */
static void refill(pump_t *p)
{
    char temp[16], hum[16];
    while (p->issued < p->n) {
        long i = p->issued;
        snprintf(temp, sizeof temp, "%ld.%ld", 15 + i % 20, i % 10);
        snprintf(hum, sizeof hum, "%ld", 30 + i % 50);
        const char *argv[] = {"XADD", "sensors", "*", "device", "dev-42", "temp", temp, "hum", hum};
        int rc = mqr__redis_command(p->r, 9, argv, NULL, on_done, p, NULL, 0);
        if (rc == MQR_EFULL) return;
        if (rc != 0) {
            fprintf(stderr, "command: %s\n", mqr_strerror(rc));
            exit(1);
        }
        p->issued++;
    }
}

static void on_done(void *arg, const mqr_redis_result_t *res)
{
    pump_t *p = arg;
    p->answered++;
    if (res->outcome == MQR_SINK_OK)
        p->ok++;
    else if (p->answered - p->ok <= 3)
        fprintf(stderr, "xadd: %s\n", res->reason ? res->reason : "?");
    refill(p);
}

static bool run_until(uv_loop_t *loop, bool (*pred)(void *), void *arg, int timeout_ms)
{
    uint64_t deadline = rh_now_ms() + (uint64_t)timeout_ms;
    while (!pred(arg)) {
        if (rh_now_ms() >= deadline) return false;
        uv_run(loop, UV_RUN_ONCE);
    }
    return true;
}

static bool is_up(void *arg)
{
    return mqr__redis_sink(arg)->up;
}

static bool all_answered(void *arg)
{
    pump_t *p = arg;
    return p->answered >= p->n;
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

/* The smallest histogram bound under which q of the requests ended. */
static const char *quantile(const mqr_admin_hist_t *h, double q)
{
    static const char *const le[] = MQR_ADMIN_LAT_LE;
    uint64_t want = (uint64_t)((double)h->count * q), sum = 0;
    for (int i = 0; i <= MQR_ADMIN_LAT_NBOUNDS; i++) {
        sum += h->bucket[i];
        if (sum >= want) return le[i];
    }
    return "+Inf";
}

/* CPU seconds (user + system) of this process. */
static double cpu_self(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* CPU seconds of the server, from /proc (fields 14 and 15, in ticks). */
static double cpu_of(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = '\0';
    const char *p = strrchr(buf, ')'); /* the name may hold spaces */
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int run_case(uv_loop_t *loop, pid_t server, int port, long n, uint32_t max_in_flight)
{
    mqr_redis_opts_t o = {.name = "bench",
                          .port = port,
                          .max_in_flight = max_in_flight,
                          .max_queued = 1,
                          .timeout_ms = 30000};
    mqr_redis_t *r = NULL;
    char *err = NULL;
    if (mqr__redis_new(loop, &o, &r, &err) != 0) {
        fprintf(stderr, "redis: %s\n", err ? err : "?");
        free(err);
        return -1;
    }
    if (!run_until(loop, is_up, mqr__redis_sink(r), 5000)) {
        fprintf(stderr, "redis: not up: %s\n", mqr__redis_sink(r)->last_error);
        return -1;
    }
    pump_t del = {.r = r, .n = 1};
    const char *argv[] = {"DEL", "sensors"};
    mqr__redis_command(r, 2, argv, NULL, on_done, &del, NULL, 0);
    del.issued = 1;
    run_until(loop, all_answered, &del, 5000);

    pump_t p = {.r = r, .n = n};
    uint64_t t0 = uv_hrtime();
    double c0 = cpu_self(), s0 = cpu_of(server);
    refill(&p);
    bool done = run_until(loop, all_answered, &p, 600000);
    double dt = (double)(uv_hrtime() - t0) / 1e9;
    double client_cpu = cpu_self() - c0, server_cpu = cpu_of(server) - s0;
    mqr_sink_t *s = mqr__redis_sink(r);
    printf("max_in_flight=%u: %ld XADD in %.3f s = %.0f XADD/s, ok %ld, mean latency %.3f ms\n",
           max_in_flight, p.answered, dt, (double)p.answered / dt, p.ok,
           s->latency.count ? (double)s->latency.sum_ns / (double)s->latency.count / 1e6 : 0.0);
    printf("RESULT bench=sink_redis case=\"xadd pipelined\" max_in_flight=%u n=%ld ok=%ld "
           "xadd_per_s=%.0f mean_ms=%.3f p50_le_s=%s p99_le_s=%s client_cpu_pct=%.0f "
           "server_cpu_pct=%.0f\n",
           max_in_flight, p.answered, p.ok, (double)p.answered / dt,
           s->latency.count ? (double)s->latency.sum_ns / (double)s->latency.count / 1e6 : 0.0,
           quantile(&s->latency, 0.5), quantile(&s->latency, 0.99), 100 * client_cpu / dt,
           100 * server_cpu / dt);
    mqr__redis_close(r);
    return done && p.ok == n ? 0 : -1;
}

/* ---- from a rules route ---- */

/* A Lua route XADDs each published reading: r:send (no wait) from a plain
 * route, or r:command waiting in an async route (default concurrency). It
 * ends when Redis answered every XADD (the rules poll the sink's counters). */
static int rules_case(int port, long n, bool wait)
{
    char code[1400];
    snprintf(
        code, sizeof code,
        "local mq = require 'mqrouter'\n"
        "local r = mq.redis{ port = %d, max_queued = 10000000 }\n"
        "%s\n"
        "mq.every(0.005, function()\n"
        "  local s = r:stats()\n"
        "  if s.ok + s.retried + s.failed >= %ld then mq.publish('bench/done', tostring(s.ok)) "
        "end\n"
        "end)\n",
        port,
        wait ? "mq.route('sensors/#', function(msg)\n"
               "  assert(r:command{ 'XADD', 'readings', '*', 'topic', msg.topic, 'v', msg.payload "
               "})\n"
               "end, { async = true, max_pending = 10000000 })"
             : "mq.route('sensors/#', function(msg)\n"
               "  assert(r:send{ 'XADD', 'readings', '*', 'topic', msg.topic, 'v', msg.payload })\n"
               "end)",
        n);
    mqr_engine_t *e = rl_engine(code, "");
    rl_result_t res;
    rl_run(e, n, 0, &res);
    mqr_engine_free(e);
    long ok = atol(res.done);
    const char *label = wait ? "route, xadd waits (async route)" : "route, send (no wait)";
    printf("%-34s %10.0f XADD/s  %5.2f us engine cpu/XADD (%ld ok of %ld)\n", label,
           n / res.seconds, res.cpu / n * 1e6, ok, n);
    printf(
        "RESULT bench=sink_redis case=\"%s\" n=%ld ok=%ld xadd_per_s=%.0f us_cpu_per_xadd=%.3f\n",
        label, n, ok, n / res.seconds, res.cpu / n * 1e6);
    return ok == n ? 0 : 1;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 500000;
    if (n < 1) n = 500000;
    redis_srv_t srv = {0};
    char err[256];
    if (redis_srv_start(&srv, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        redis_srv_cleanup(&srv);
        return 1;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_timer_t tick; /* UV_RUN_ONCE returns at least this often: deadlines get checked */
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, on_tick, 50, 50);
    static const uint32_t windows[] = {1024, 128, 16};
    int rc = 0;
    for (size_t i = 0; i < sizeof windows / sizeof windows[0] && rc == 0; i++)
        rc = run_case(&loop, srv.pid, srv.port, n, windows[i]);
    if (rc == 0) rc = rules_case(srv.port, n, false);
    if (rc == 0) rc = rules_case(srv.port, n, true);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    redis_srv_cleanup(&srv);
    return rc ? 1 : 0;
}
