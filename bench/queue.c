/*
 * queue.c — throughput and memory of the in-process work queues, from C, on
 * one core: the engine's loop runs in this thread between publish bursts.
 *
 *   bench_queue [messages]
 *
 * Cases: publish -> consume -> ack with a new 64-byte message per publish
 * (message build included) and with one shared message (queue cost only);
 * five priority levels under a mixed load; memory per queued 64-byte message
 * (1 M queued: malloc's own count and the queue's accounting); transactions
 * per second (begin, publish, commit, consume, ack). Not a test: it only
 * checks that every message arrived.
 */
#include "engine.h"
#include "mqrouter.h"
#include "queue.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BURST 4096

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static mqr_engine_t *engine(void)
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
    mqr_queues_options_t qo = {.max_bytes = (size_t)2 << 30};
    if (mqr__queues_init(e, &qo) < 0) exit(1);
    return e;
}

static mqr_queue_t *queue(mqr_engine_t *e, const char *name)
{
    mqr_queue_config_t c;
    mqr__queue_config_init(&c);
    c.name = name;
    c.max_messages = 2000000;
    c.max_bytes = (size_t)1 << 30;
    mqr_queue_t *q;
    if (mqr__queue_new(e, &c, &q) < 0) exit(1);
    return q;
}

static long consumed;
static int last_prio;
static long prio_inversions;

static int on_msg(void *arg, mqr_queue_t *q, const mqr_queue_delivery_t *d)
{
    consumed++;
    return MQR_QUEUE_ACK;
}

/* counts deliveries that came out of priority order within a burst */
static int on_msg_prio(void *arg, mqr_queue_t *q, const mqr_queue_delivery_t *d)
{
    consumed++;
    if (d->priority > last_prio) prio_inversions++;
    last_prio = d->priority;
    return MQR_QUEUE_ACK;
}

/* a consumer that settles later, by id, as a real one would */
static uint64_t later_ids[1024];
static size_t nlater;

static int on_msg_later(void *arg, mqr_queue_t *q, const mqr_queue_delivery_t *d)
{
    consumed++;
    later_ids[nlater++] = d->id;
    return MQR_QUEUE_LATER;
}

static const char topic[] = "sensors/room1/temperature";
static char payload[64];

static mqr_msg_t *mk(long i)
{
    payload[i & 63] = (char)('a' + (i & 15));
    mqr_msg_init_t in = {.topic = topic,
                         .topic_len = sizeof topic - 1,
                         .payload = payload,
                         .payload_len = sizeof payload,
                         .origin = MQR_ORIGIN_C};
    return mqr__msg_new(&in);
}

static void drain(mqr_engine_t *e, long want)
{
    while (consumed < want)
        uv_run(mqr_engine_loop(e), UV_RUN_NOWAIT);
}

static void report(const char *label, const char *unit, long n, double dt)
{
    printf("%-44s %10.0f %s  %6.1f ns each  (%ld)\n", label, n / dt, unit, dt / n * 1e9, n);
    printf("RESULT bench=queue case=\"%s\" per_s=%.0f ns_each=%.1f\n", label, n / dt, dt / n * 1e9);
}

static int on_batch(void *arg, mqr_queue_t *q, const mqr_queue_delivery_t *d, size_t n)
{
    consumed += (long)n;
    return MQR_QUEUE_ACK;
}

static void pub_consume_ack(long n, bool shared, bool batch)
{
    mqr_engine_t *e = engine();
    mqr_queue_t *q = queue(e, "bench");
    if (batch)
        mqr__queue_consume_batch(q, on_batch, NULL, 0, 64, NULL);
    else
        mqr__queue_consume(q, on_msg, NULL, 0, NULL);
    consumed = 0;
    mqr_msg_t *one = mk(0);
    double t0 = now_s();
    for (long i = 0; i < n; i += BURST) {
        for (long k = i; k < i + BURST && k < n; k++) {
            mqr_msg_t *m = shared ? one : mk(k);
            if (mqr__queue_publish(q, m, NULL, NULL) < 0) exit(1);
            if (!shared) mqr_msg_unref(m);
        }
        drain(e, i + BURST < n ? i + BURST : n);
    }
    double dt = now_s() - t0;
    mqr_msg_unref(one);
    mqr_queue_stats_t s;
    mqr__queue_stats(q, &s);
    if ((long)s.acked != n) {
        fprintf(stderr, "acked %llu of %ld\n", (unsigned long long)s.acked, n);
        exit(1);
    }
    report(batch    ? "publish->batch consumer (64)->ack, new 64 B msg"
           : shared ? "publish->consume->ack, shared message"
                    : "publish->consume->ack, new 64 B msg",
           "msg/s", n, dt);
    mqr_engine_free(e);
}

static void ack_later(long n)
{
    mqr_engine_t *e = engine();
    mqr_queue_t *q = queue(e, "later");
    mqr__queue_consume(q, on_msg_later, NULL, 256, NULL);
    consumed = 0;
    nlater = 0;
    double t0 = now_s();
    long acked = 0;
    for (long i = 0; i < n; i += BURST) {
        for (long k = i; k < i + BURST && k < n; k++) {
            mqr_msg_t *m = mk(k);
            if (mqr__queue_publish(q, m, NULL, NULL) < 0) exit(1);
            mqr_msg_unref(m);
        }
        long want = i + BURST < n ? i + BURST : n;
        while (acked < want) {
            uv_run(mqr_engine_loop(e), UV_RUN_NOWAIT);
            acked += mqr__queue_ack_batch(q, later_ids, nlater);
            nlater = 0;
        }
    }
    double dt = now_s() - t0;
    mqr_queue_stats_t s;
    mqr__queue_stats(q, &s);
    if ((long)s.acked != n) exit(1);
    report("publish->consume->ack by id later, prefetch 256", "msg/s", n, dt);
    mqr_engine_free(e);
}

static void priorities(long n)
{
    mqr_engine_t *e = engine();
    mqr_queue_t *q = queue(e, "prio");
    mqr__queue_consume(q, on_msg_prio, NULL, 0, NULL);
    consumed = 0;
    prio_inversions = 0;
    unsigned x = 12345;
    double t0 = now_s();
    for (long i = 0; i < n; i += BURST) {
        for (long k = i; k < i + BURST && k < n; k++) {
            x = x * 1103515245u + 12345u;
            mqr_queue_pub_opts_t o = {.priority = (int)((x >> 16) % 5), .ttl_ms = 0};
            mqr_msg_t *m = mk(k);
            if (mqr__queue_publish(q, m, &o, NULL) < 0) exit(1);
            mqr_msg_unref(m);
        }
        last_prio = MQR_PRIO_HIGHEST;
        drain(e, i + BURST < n ? i + BURST : n);
    }
    double dt = now_s() - t0;
    if (prio_inversions) {
        fprintf(stderr, "priority order broken %ld times\n", prio_inversions);
        exit(1);
    }
    report("5 priority levels, mixed, new 64 B msg", "msg/s", n, dt);
    mqr_engine_free(e);
}

static long sub_got;
static void on_sub(void *arg, mqr_queue_sub_t *sub, mqr_msg_t *msg)
{
    sub_got++;
}

/* pub/sub: mqr_publish through the router into 100 subscriber buffers */
static void fanout(long n)
{
    mqr_engine_t *e = engine();
    enum { SUBS = 100 };
    mqr_queue_sub_config_t sc = {.max_buffered = 100000};
    for (int i = 0; i < SUBS; i++) {
        mqr_queue_sub_t *sub;
        if (mqr__queue_sub_new(e, "sensors/#", &sc, on_sub, NULL, &sub) < 0) exit(1);
    }
    sub_got = 0;
    double t0 = now_s();
    for (long i = 0; i < n; i += 1000) {
        for (long k = i; k < i + 1000 && k < n; k++)
            if (mqr_publish(e, topic, payload, sizeof payload, 0, 0) < 0) exit(1);
        long want = (i + 1000 < n ? i + 1000 : n) * SUBS;
        while (sub_got < want)
            uv_run(mqr_engine_loop(e), UV_RUN_NOWAIT);
    }
    double dt = now_s() - t0;
    mqr_queues_health_t h;
    mqr__queues_health(e, &h);
    if (h.sub_dropped) exit(1);
    report("pub/sub, 100 subscribers, deliveries", "msg/s", n * SUBS, dt);
    mqr_engine_free(e);
}

static void memory(long n)
{
    mqr_engine_t *e = engine();
    mqr_queue_t *q = queue(e, "mem");
    struct mallinfo2 before = mallinfo2();
    for (long i = 0; i < n; i++) {
        mqr_msg_t *m = mk(i);
        if (mqr__queue_publish(q, m, NULL, NULL) < 0) {
            fprintf(stderr, "publish refused at %ld\n", i);
            exit(1);
        }
        mqr_msg_unref(m);
    }
    struct mallinfo2 after = mallinfo2();
    mqr_queue_stats_t s;
    mqr__queue_stats(q, &s);
    double heap = (double)(after.uordblks + after.hblkhd - before.uordblks - before.hblkhd) / n;
    printf("%-44s %10.1f B (malloc, message included)  %6.1f B (queue accounting)  (%ld)\n",
           "memory per queued 64 B message", heap, (double)s.bytes / n, n);
    printf("RESULT bench=queue case=\"memory per queued 64 B message\" heap_bytes=%.1f "
           "accounted_bytes=%.1f\n",
           heap, (double)s.bytes / n);
    mqr_engine_free(e);
}

static void transactions(long n)
{
    mqr_engine_t *e = engine();
    mqr_queue_t *q = queue(e, "tx");
    mqr__queue_consume(q, on_msg, NULL, 0, NULL);
    consumed = 0;
    mqr_msg_t *m = mk(0);
    double t0 = now_s();
    for (long i = 0; i < n; i += BURST) {
        for (long k = i; k < i + BURST && k < n; k++) {
            uint64_t tx;
            if (mqr__queue_tx_begin(e, 0, &tx) < 0 ||
                mqr__queue_tx_publish(e, tx, q, m, NULL) < 0 ||
                mqr__queue_tx_publish(e, tx, q, m, NULL) < 0 || mqr__queue_tx_commit(e, tx) < 0)
                exit(1);
        }
        drain(e, 2 * (i + BURST < n ? i + BURST : n));
    }
    double dt = now_s() - t0;
    mqr_msg_unref(m);
    mqr_queue_stats_t s;
    mqr__queue_stats(q, &s);
    mqr_queues_health_t h;
    mqr__queues_health(e, &h);
    if ((long)s.acked != 2 * n || (long)h.tx_committed != n) {
        fprintf(stderr, "tx: acked %llu, committed %llu\n", (unsigned long long)s.acked,
                (unsigned long long)h.tx_committed);
        exit(1);
    }
    report("transactions (2 messages each, consumed)", "tx/s", n, dt);
    mqr_engine_free(e);
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 2000000;
    memset(payload, 'x', sizeof payload);
    pub_consume_ack(n, false, false);
    pub_consume_ack(n, true, false);
    pub_consume_ack(n, false, true);
    ack_later(n);
    priorities(n);
    fanout(n / 20);
    memory(1000000);
    transactions(n / 4);
    return 0;
}
