/*
 * rules_load.h — what the sink benchmarks share for their "from a rules
 * route" cases: an engine running given rules (no listener), readings
 * published into it from C in chunks of 5 000 with a loop turn between
 * (as traffic would let the loop run), and the wait for the rules to say
 * "bench/done" (with a payload: what they counted). Static functions for
 * the bench files that include it.
 */
#ifndef MQR_BENCH_RULES_LOAD_H
#define MQR_BENCH_RULES_LOAD_H

#include "mqrouter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

typedef struct {
    double seconds; /* first publish to "bench/done" */
    double cpu;     /* this process's CPU (user + system) meanwhile */
    char done[64];  /* the payload of "bench/done" */
} rl_result_t;

static char rl_done[64];

static void rl_on_done(void *arg, mqr_msg_t *msg)
{
    (void)arg;
    size_t len;
    const char *p = mqr_msg_payload(msg, &len);
    snprintf(rl_done, sizeof rl_done, "%.*s", (int)len, p);
}

/* An engine with code loaded; data_dir "" keeps the store in memory. */
static mqr_engine_t *rl_engine(const char *code, const char *data_dir)
{
    mqr_log_set_level(MQR_LOG_WARN);
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.listen_port = -1;
    o.data_dir = data_dir;
    o.log_level = MQR_LOG_WARN;
    mqr_engine_t *e;
    char *err = NULL;
    if (mqr_engine_new(&e, &o, NULL, &err) < 0) {
        fprintf(stderr, "engine: %s\n", err ? err : "?");
        exit(1);
    }
    if (mqr_engine_load_string(e, "bench.lua", code, &err) < 0) {
        fprintf(stderr, "load: %s\n", err ? err : "?");
        exit(1);
    }
    return e;
}

static double rl_cpu(void)
{
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return (double)(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
           (double)(r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
}

/* Publishes n readings (topic sensors/d<i % 1000>/temp, payload a number;
 * qos 1 when qos) and runs the loop until the rules publish "bench/done". */
static void rl_run(mqr_engine_t *e, long n, int qos, rl_result_t *out)
{
    mqr_csub_t *sub;
    mqr_subscribe(e, "bench/done", rl_on_done, NULL, &sub);
    uv_loop_t *loop = mqr_engine_loop(e);
    rl_done[0] = '\0';
    double c0 = rl_cpu();
    uint64_t t0 = uv_hrtime();
    char topic[64], payload[32];
    for (long i = 0; i < n;) {
        for (long k = 0; k < 5000 && i < n; k++, i++) {
            snprintf(topic, sizeof topic, "sensors/d%ld/temp", i % 1000);
            int len = snprintf(payload, sizeof payload, "%ld.5", i % 40);
            mqr_publish(e, topic, payload, (size_t)len, qos, 0);
        }
        uv_run(loop, UV_RUN_NOWAIT);
    }
    while (!rl_done[0])
        uv_run(loop, UV_RUN_ONCE);
    out->seconds = (double)(uv_hrtime() - t0) / 1e9;
    out->cpu = rl_cpu() - c0;
    memcpy(out->done, rl_done, sizeof out->done);
    mqr_unsubscribe(e, sub);
}

#endif
