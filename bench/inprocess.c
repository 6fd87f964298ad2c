/*
 * inprocess.c — messages per second through a trivial Lua route, published
 * from C: message build, trie match, handler call reading topic and payload.
 *
 *   bench_inprocess [messages] [routes]
 *
 * Prints one line per case: the plain case, with 10 000 other routes
 * installed, and both again without the stuck-handler budget, so the
 * budget's cost shows. The other routes share the published topics'
 * prefixes (sensors/room<i>/humidity, sensors/room<i>/+/set; the traffic
 * is sensors/room0..15/temperature), so the trie's matching walks them:
 * rooms 0..15 have a sibling route and a '+' branch to look into. The
 * last two cases turn the topic registry's per-publish count off
 * (mqr_engine_options_t.no_topic_counts, `--no-topic-counts`). Not a test: it asserts nothing but
 * that every message reached the handler.
 */
#include "mqrouter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *rules =
    "local mq = require 'mqrouter'\n"
    "count = 0\n"
    "mq.route('sensors/+/temperature', function(msg)\n"
    "  local t, p = msg.topic, msg.payload\n"
    "  if #t > 0 and #p == 64 then count = count + 1 end\n"
    "end)\n"
    "mq.route('bench/done', function() mq.publish('bench/count', tostring(count)) end)\n";

static char counted[32];
static void on_count(void *arg, mqr_msg_t *msg)
{
    size_t len;
    const char *p = mqr_msg_payload(msg, &len);
    snprintf(counted, sizeof counted, "%.*s", (int)len, p);
}

static void run_case(const char *label, long n, int extra_routes, unsigned budget, int counts)
{
    mqr_log_set_level(MQR_LOG_WARN);
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.listen_port = -1;
    o.data_dir = "";
    o.handler_budget_ms = budget;
    o.no_topic_counts = !counts;
    o.log_level = MQR_LOG_WARN;
    mqr_engine_t *e;
    char *err = NULL;
    if (mqr_engine_new(&e, &o, NULL, &err) < 0) {
        fprintf(stderr, "engine: %s\n", err);
        exit(1);
    }
    size_t cap = strlen(rules) + 256;
    char *code = malloc(cap);
    snprintf(code, cap,
             "%s\nfor i = 1, %d do\n"
             "  if i %% 2 == 0 then mq.route('sensors/room' .. i .. '/humidity', function() end)\n"
             "  else mq.route('sensors/room' .. i .. '/+/set', function() end) end\n"
             "end\n",
             rules, extra_routes);
    if (mqr_engine_load_string(e, "bench.lua", code, &err) < 0) {
        fprintf(stderr, "load: %s\n", err);
        exit(1);
    }
    free(code);
    mqr_csub_t *sub;
    mqr_subscribe(e, "bench/count", on_count, NULL, &sub);

    char topics[16][64];
    for (int i = 0; i < 16; i++)
        snprintf(topics[i], sizeof topics[i], "sensors/room%d/temperature", i);
    char payload[64];
    memset(payload, 'x', sizeof payload);
    /* warm up the JIT and caches */
    for (long i = 0; i < n / 10; i++)
        mqr_publish(e, topics[i & 15], payload, sizeof payload, 0, 0);
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        payload[i & 63] = (char)('a' + (i & 15)); /* a fresh payload each time */
        mqr_publish(e, topics[i & 15], payload, sizeof payload, 0, 0);
    }
    double dt = now_s() - t0;
    mqr_publish(e, "bench/done", "", 0, 0, 0);
    long got = atol(counted);
    if (got != n + n / 10) {
        fprintf(stderr, "%s: handler saw %ld of %ld messages\n", label, got, n + n / 10);
        exit(1);
    }
    printf("%-34s %10.0f msg/s  %6.1f ns/msg  (%ld msgs, %d extra routes)\n", label, n / dt,
           dt / n * 1e9, n, extra_routes);
    printf("RESULT bench=inprocess case=\"%s\" msgs_per_s=%.0f ns_per_msg=%.1f\n", label, n / dt,
           dt / n * 1e9);
    mqr_unsubscribe(e, sub);
    mqr_engine_free(e);
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 5000000;
    int routes = argc > 2 ? atoi(argv[2]) : 10000;
    run_case("1 route, budget on", n, 0, 1000, 1);
    run_case("10k routes, budget on", n, routes, 1000, 1);
    run_case("1 route, budget off", n, 0, MQR_BUDGET_OFF, 1);
    run_case("10k routes, budget off", n, routes, MQR_BUDGET_OFF, 1);
    run_case("10k routes, no topic counts", n, routes, 1000, 0);
    run_case("10k routes, neither", n, routes, MQR_BUDGET_OFF, 0);
    return 0;
}
