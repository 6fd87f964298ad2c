/*
 * queue_lua.c — what the Lua face of the queues costs: a rules script (the
 * engine's own Lua state, with the default handler budget) publishes into a
 * queue and consumes from it, on one core, the engine's loop in this thread.
 *
 *   bench_queue_lua [messages]
 *
 * Cases: q:publish -> a one-message handler that acks by returning; the same
 * with a batch handler (64 per call); MQTT ingress: mqr_publish from C into a
 * route mq.route("in/#", q), consumed by the one-message handler; a handler
 * that defers and acks later with msg:ack(). Each payload is 64 bytes. Prints
 * msg/s and ns per message (publish, delivery, handler call and ack), best of
 * a few rounds. Not a test: it only checks that every message was acked.
 */
#include "engine.h"
#include "mqrouter.h"
#include "queue.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#define CHUNK 2000 /* messages published per handler call (bench/go) */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One script, every case: bench/go publishes a chunk into queue `q` from
 * Lua; consumers depend on the mode given in the topic. */
static const char script_fmt[] =
    "local mq = require 'mqrouter'\n"
    "local q = mq.queue('q', { max_messages = 4000000, max_memory = 2^31 })\n"
    "local payload = string.rep('x', 64)\n"
    "local mode = '%s'\n"
    "local n = 0\n"
    "if mode == 'one' or mode == 'route' then\n"
    "  q:consume(function(msg) n = n + #msg.payload end)\n"
    "elseif mode == 'batch' then\n"
    "  q:consume(function(list) for i = 1, #list do n = n + #list[i].payload end end,\n"
    "            { batch = 64 })\n"
    "elseif mode == 'defer' then\n"
    "  q:consume(function(msg) msg:defer(); n = n + 1; msg:ack() end)\n"
    "end\n"
    "if mode == 'route' then mq.route('in/#', q) end\n"
    "mq.route('bench/go', function(m)\n"
    "  for i = 1, tonumber(m.payload) do q:publish(payload) end\n"
    "end)\n";

static double run_case(const char *mode, long n)
{
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
    char code[sizeof script_fmt + 16];
    snprintf(code, sizeof code, script_fmt, mode);
    if (mqr_engine_load_string(e, "bench", code, &err) < 0) {
        fprintf(stderr, "script: %s\n", err);
        exit(1);
    }
    mqr_queue_t *q;
    if (mqr__queue_find(e, "q", &q) < 0) exit(1);
    uv_loop_t *loop = mqr_engine_loop(e);
    bool route = strcmp(mode, "route") == 0;
    char payload[64];
    memset(payload, 'x', sizeof payload);
    char chunk[16];
    snprintf(chunk, sizeof chunk, "%d", CHUNK);
    double t0 = now_s();
    long sent = 0;
    mqr_queue_stats_t s;
    for (;;) {
        mqr__queue_stats(q, &s);
        if ((long)s.acked >= n) break;
        /* keep a few chunks queued ahead of the consumer */
        if (sent < n && (long)s.depth < 4 * CHUNK) {
            if (route) {
                for (int i = 0; i < CHUNK; i++)
                    mqr_publish(e, "in/sensor/1", payload, sizeof payload, 0, 0);
            } else {
                mqr_publish(e, "bench/go", chunk, strlen(chunk), 0, 0);
            }
            sent += CHUNK;
        }
        uv_run(loop, UV_RUN_NOWAIT);
    }
    double dt = now_s() - t0;
    if ((long)s.acked != sent || s.published != s.acked) {
        fprintf(stderr, "%s: published %llu acked %llu sent %ld\n", mode,
                (unsigned long long)s.published, (unsigned long long)s.acked, sent);
        exit(1);
    }
    mqr_engine_free(e);
    return dt / (double)sent;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    n = (n + CHUNK - 1) / CHUNK * CHUNK;
    static const struct {
        const char *mode, *what;
    } cases[] = {
        {"one", "q:publish -> handler(msg) -> ack by return"},
        {"batch", "q:publish -> handler(list of 64) -> ack by return"},
        {"route", "mqr_publish -> mq.route('in/#', q) -> handler(msg) -> ack"},
        {"defer", "q:publish -> handler: msg:defer(), msg:ack()"},
    };
    printf("Lua queues, %ld messages of 64 B per case, best of 3, one core\n", n);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double best = 1e9;
        for (int r = 0; r < 3; r++) {
            double t = run_case(cases[i].mode, n);
            if (t < best) best = t;
        }
        printf("%-58s %8.2f M msg/s  %7.0f ns/msg\n", cases[i].what, 1e-6 / best, best * 1e9);
        printf("RESULT bench=queue_lua case=%s messages=%ld msgs_per_s=%.0f ns_per_msg=%.1f\n",
               cases[i].mode, n, 1.0 / best, best * 1e9);
    }
    return 0;
}
