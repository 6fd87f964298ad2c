/*
 * sink_file.c — JSON lines per second into the file sink, fsync per batch.
 *
 *   bench_sink_file [lines] [dir]
 *
 * Cases (one line each, RESULT lines for bench/results/):
 *   "client"      mqr__file_write from C: the sink's own ceiling.
 *   "rules, string"  a route writes msg.payload (a JSON reading) as a line:
 *                  mqr_publish from C -> trie -> Lua handler -> f:write.
 *   "rules, table"   a route writes { topic, payload } encoded by the sink.
 * The loop runs between chunks of 10 000 publishes, as traffic would let
 * it; a run ends when every line is written and fsync'ed (f:flush()).
 * Not a test: it asserts nothing but that every line reached the file.
 */
#include "mqrouter.h"

#include "engine.h"
#include "file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long count_lines(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    long n = 0;
    char buf[65536];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0)
        for (size_t i = 0; i < got; i++)
            n += buf[i] == '\n';
    fclose(f);
    return n;
}

static void report(const char *label, long n, double dt, double cpu)
{
    printf("%-16s %10.0f lines/s  %6.2f us cpu/line  (%ld lines)\n", label, n / dt, cpu / n * 1e6,
           n);
    printf("RESULT bench=sink_file case=\"%s\" lines=%ld lines_per_s=%.0f us_cpu_per_line=%.3f\n",
           label, n, n / dt, cpu / n * 1e6);
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int flushed;
static void on_flush(void *arg, const mqr_file_result_t *r)
{
    (void)arg;
    if (r->outcome != MQR_SINK_OK) {
        fprintf(stderr, "flush failed: %s\n", r->reason);
        exit(1);
    }
    flushed = 1;
}

static void client_case(long n, const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/client.jsonl", dir);
    unlink(path);
    uv_loop_t loop;
    uv_loop_init(&loop);
    mqr_file_opts_t o = {.path = path, .lines = true};
    mqr_file_t *f;
    if (mqr__file_new(&loop, &o, &f, NULL) < 0) exit(1);
    char line[128];
    double t0 = now_s(), c0 = cpu_s();
    for (long i = 0; i < n;) {
        for (long k = 0; k < 10000 && i < n; k++, i++) {
            int len = snprintf(line, sizeof line, "{\"device\":\"d%ld\",\"temp\":%ld.5}", i % 1000,
                               i % 40);
            while (mqr__file_write(f, line, (size_t)len, NULL, NULL) == MQR_EFULL)
                uv_run(&loop, UV_RUN_ONCE);
        }
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    flushed = 0;
    mqr__file_flush(f, on_flush, NULL);
    while (!flushed)
        uv_run(&loop, UV_RUN_ONCE);
    double dt = now_s() - t0, cpu = cpu_s() - c0;
    mqr__file_close(f);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    if (count_lines(path) != n) {
        fprintf(stderr, "client: %ld lines of %ld\n", count_lines(path), n);
        exit(1);
    }
    report("client", n, dt, cpu);
}

static char got_done[32];
static void on_done(void *arg, mqr_msg_t *msg)
{
    (void)arg;
    size_t len;
    const char *p = mqr_msg_payload(msg, &len);
    snprintf(got_done, sizeof got_done, "%.*s", (int)len, p);
}

static void rules_case(const char *label, long n, const char *dir, bool table)
{
    char path[512];
    snprintf(path, sizeof path, "%s/rules-%s.jsonl", dir, table ? "table" : "string");
    unlink(path);
    mqr_log_set_level(MQR_LOG_WARN);
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.listen_port = -1;
    o.data_dir = "";
    o.log_level = MQR_LOG_WARN;
    mqr_engine_t *e;
    char *err = NULL;
    if (mqr_engine_new(&e, &o, NULL, &err) < 0) {
        fprintf(stderr, "engine: %s\n", err);
        exit(1);
    }
    char code[1024];
    snprintf(code, sizeof code,
             "local mq = require 'mqrouter'\n"
             "local f = mq.file{ path = %s%s%s, max_queued = 2000000 }\n"
             "mq.route('sensors/#', function(msg) assert(f:write(%s)) end)\n"
             "mq.route('bench/flush', function()\n"
             "  mq.spawn(function() assert(f:flush()); mq.publish('bench/done', 'ok') end)\n"
             "end)\n",
             "'", path, "'",
             table ? "{ topic = msg.topic, payload = msg.payload }" : "msg.payload");
    if (mqr_engine_load_string(e, "bench.lua", code, &err) < 0) {
        fprintf(stderr, "load: %s\n", err);
        exit(1);
    }
    mqr_csub_t *sub;
    mqr_subscribe(e, "bench/done", on_done, NULL, &sub);
    uv_loop_t *loop = mqr_engine_loop(e);
    char topic[64], payload[96];
    got_done[0] = '\0';
    double t0 = now_s(), c0 = cpu_s();
    for (long i = 0; i < n;) {
        for (long k = 0; k < 10000 && i < n; k++, i++) {
            snprintf(topic, sizeof topic, "sensors/d%ld/temp", i % 1000);
            int len = snprintf(payload, sizeof payload, "{\"device\":\"d%ld\",\"temp\":%ld.5}",
                               i % 1000, i % 40);
            mqr_publish(e, topic, payload, (size_t)len, 0, 0);
        }
        uv_run(loop, UV_RUN_NOWAIT);
    }
    mqr_publish(e, "bench/flush", "", 0, 0, 0);
    while (!got_done[0])
        uv_run(loop, UV_RUN_ONCE);
    double dt = now_s() - t0, cpu = cpu_s() - c0;
    mqr_unsubscribe(e, sub);
    mqr_engine_free(e);
    long lines = count_lines(path);
    if (lines != n) {
        fprintf(stderr, "%s: %ld lines of %ld\n", label, lines, n);
        exit(1);
    }
    report(label, n, dt, cpu);
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    char tmp[] = "/tmp/mqr-bench-file-XXXXXX";
    const char *dir = argc > 2 ? argv[2] : mkdtemp(tmp);
    if (!dir) return 1;
    client_case(n, dir);
    rules_case("rules, string", n, dir, false);
    rules_case("rules, table", n / 2, dir, true);
    if (argc <= 2) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) return 1;
    }
    return 0;
}
