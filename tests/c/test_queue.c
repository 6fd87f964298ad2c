/*
 * test_queue.c — work queues on a real engine and its loop: priority order
 * and FIFO within a level, delivery never inside the publisher, TTL expiry,
 * ack timeouts, nack backoff, max attempts and the dead-letter queue
 * (reasons, statistics, re-drive, purge), memory and size limits, competing
 * consumers with prefetch, batch publish and receive, metrics and health,
 * closing with entries in every state, and the named errors.
 * Transactions, pub/sub subscribers, bindings and the store seam are in
 * test_queue_tx.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "engine.h"
#include "mqrouter.h"
#include "queue.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- harness ---- */

static mqr_engine_t *engine(size_t max_bytes)
{
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.listen_port = -1;
    o.data_dir = "";
    o.log_level = MQR_LOG_ERROR;
    mqr_engine_t *e = NULL;
    char *err = NULL;
    if (mqr_engine_new(&e, &o, NULL, &err) < 0) fail_msg("engine: %s", err);
    mqr_queues_options_t qo = {.max_bytes = max_bytes};
    assert_int_equal(mqr__queues_init(e, &qo), 0);
    return e;
}

static mqr_msg_t *mk(const char *topic, const char *payload)
{
    mqr_msg_init_t in = {.topic = topic,
                         .topic_len = strlen(topic),
                         .payload = payload,
                         .payload_len = strlen(payload),
                         .origin = MQR_ORIGIN_C};
    mqr_msg_t *m = mqr__msg_new(&in);
    assert_non_null(m);
    return m;
}

/* publishes payload on topic "t" with priority and ttl; returns the id */
static uint64_t pub(mqr_queue_t *q, const char *payload, int prio, int64_t ttl)
{
    mqr_msg_t *m = mk("t", payload);
    mqr_queue_pub_opts_t o = {.priority = prio, .ttl_ms = ttl};
    uint64_t id = 0;
    assert_int_equal(mqr__queue_publish(q, m, &o, &id), 0);
    mqr_msg_unref(m);
    assert_true(id > 0);
    return id;
}

static void noop_timer(uv_timer_t *t) {}

/* Runs the loop for about ms milliseconds (a timer of ours bounds it). */
static void spin(mqr_engine_t *e, unsigned ms)
{
    uv_loop_t *l = mqr_engine_loop(e);
    uv_timer_t t;
    uv_timer_init(l, &t);
    uv_timer_start(&t, noop_timer, ms, 0);
    while (uv_is_active((uv_handle_t *)&t))
        uv_run(l, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(l, UV_RUN_NOWAIT);
}

/* A few loop turns without waiting: enough for dispatches to drain. */
static void turns(mqr_engine_t *e, int n)
{
    for (int i = 0; i < n; i++)
        uv_run(mqr_engine_loop(e), UV_RUN_NOWAIT);
}

static mqr_queue_t *queue(mqr_engine_t *e, mqr_queue_config_t *cfg)
{
    mqr_queue_t *q = NULL;
    assert_int_equal(mqr__queue_new(e, cfg, &q), 0);
    assert_non_null(q);
    return q;
}

static mqr_queue_config_t cfg_named(const char *name)
{
    mqr_queue_config_t c;
    mqr__queue_config_init(&c);
    c.name = name;
    return c;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* A consumer that records what it got and answers `answer`. */
typedef struct {
    int answer;
    int calls;
    char got[64][16];
    uint64_t ids[64];
    unsigned attempts[64];
    double at[64];
    mqr_engine_t *e;
    mqr_queue_consumer_t *self;
    bool close_queue;
    bool cancel_self;
    int ack_inside; /* 1: ack by id from inside the callback, 2: nack(0), 3: reject */
} rec_t;

static int on_delivery(void *arg, mqr_queue_t *q, const mqr_queue_delivery_t *d)
{
    rec_t *r = arg;
    if (r->calls < 64) {
        size_t len;
        const char *p = mqr_msg_payload(d->msg, &len);
        snprintf(r->got[r->calls], sizeof r->got[0], "%.*s", (int)len, p);
        r->ids[r->calls] = d->id;
        r->attempts[r->calls] = d->attempts;
        r->at[r->calls] = now_ms();
    }
    r->calls++;
    if (r->close_queue) {
        mqr__queue_close(q);
        return MQR_QUEUE_LATER;
    }
    if (r->cancel_self) mqr__queue_cancel(q, r->self);
    switch (r->ack_inside) {
    case 1:
        assert_int_equal(mqr__queue_ack(q, d->id), 0);
        assert_int_equal(mqr__queue_ack(q, d->id), MQR_ENOENT); /* settled once */
        return MQR_QUEUE_LATER;
    case 2:
        assert_int_equal(mqr__queue_nack(q, d->id, 0), 0);
        return MQR_QUEUE_LATER;
    case 3:
        assert_int_equal(mqr__queue_reject(q, d->id), 0);
        return MQR_QUEUE_LATER;
    default:
        return r->answer;
    }
}

static mqr_queue_stats_t stats(mqr_queue_t *q)
{
    mqr_queue_stats_t s;
    assert_int_equal(mqr__queue_stats(q, &s), 0);
    return s;
}

/* ---- priority and order ---- */

static void test_priority_and_fifo(void **state)
{
    mqr_engine_t *e = engine(0);
    mqr_queue_config_t c = cfg_named("prio");
    mqr_queue_t *q = queue(e, &c);
    /* interleave levels; labels say level and order within it */
    const char *labels[] = {"0a", "2a", "4a", "1a", "3a", "2b", "4b", "0b", "3b", "1b", "2c"};
    for (size_t i = 0; i < sizeof labels / sizeof labels[0]; i++)
        pub(q, labels[i], labels[i][0] - '0', 0);
    mqr_queue_delivery_t d[16];
    int n = mqr__queue_receive(q, 16, d);
    assert_int_equal(n, 11);
    const char *want[] = {"4a", "4b", "3a", "3b", "2a", "2b", "2c", "1a", "1b", "0a", "0b"};
    for (int i = 0; i < n; i++) {
        size_t len;
        const char *p = mqr_msg_payload(d[i].msg, &len);
        assert_int_equal(len, 2);
        assert_memory_equal(p, want[i], 2);
        assert_int_equal(d[i].priority, want[i][0] - '0');
        assert_int_equal(d[i].attempts, 1);
    }
    for (int i = 0; i < n; i++)
        assert_int_equal(mqr__queue_ack(q, d[i].id), 0);
    assert_int_equal(mqr__queue_ack(q, d[0].id), MQR_ENOENT);

    /* pushed to a consumer: same order, highest first */
    rec_t r = {.answer = MQR_QUEUE_ACK};
    for (size_t i = 0; i < sizeof labels / sizeof labels[0]; i++)
        pub(q, labels[i], labels[i][0] - '0', 0);
    assert_int_equal(mqr__queue_consume(q, on_delivery, &r, 0, NULL), 0);
    turns(e, 3);
    assert_int_equal(r.calls, 11);
    for (int i = 0; i < 11; i++)
        assert_string_equal(r.got[i], want[i]);
    mqr_queue_stats_t s = stats(q);
    assert_int_equal(s.acked, 22);
    assert_int_equal(s.depth, 0);
    assert_int_equal(s.bytes, 0);
    mqr_engine_free(e);
}

/* a consumer is never called inside the publisher's call */
static int publishing_consumer(void *arg, mqr_queue_t *q, const mqr_queue_delivery_t *d)
{
    rec_t *r = arg;
    r->calls++;
    if (r->calls == 1) {
        mqr_msg_t *m = mk("t", "again");
        int before = r->calls;
        assert_int_equal(mqr__queue_publish(q, m, NULL, NULL), 0);
        assert_int_equal(r->calls, before); /* not re-entered */
        mqr_msg_unref(m);
    }
    return MQR_QUEUE_ACK;
}

static void test_delivery_after_publish(void **state)
{
    mqr_engine_t *e = engine(0);
    mqr_queue_config_t c = cfg_named("async");
    mqr_queue_t *q = queue(e, &c);
    rec_t r = {0};
    assert_int_equal(mqr__queue_consume(q, publishing_consumer, &r, 0, NULL), 0);
    pub(q, "x", MQR_PRIO_NORMAL, 0);
    assert_int_equal(r.calls, 0); /* only enqueued */
    turns(e, 3);
    assert_int_equal(r.calls, 2);
    mqr_engine_free(e);
}

/* ---- TTL ---- */

static void test_ttl_expiry(void **state)
{
    mqr_engine_t *e = engine(0);
    mqr_queue_config_t c = cfg_named("ttl");
    c.default_ttl_ms = 30;
    mqr_queue_t *q = queue(e, &c);
    pub(q, "short1", MQR_PRIO_HIGH, 20); /* own TTL */
    pub(q, "short2", MQR_PRIO_LOW, 0);   /* the queue's 30 ms */
    pub(q, "forever", MQR_PRIO_LOW, -1); /* never */
    pub(q, "long", MQR_PRIO_NORMAL, 5000);
    /* no consumer: the timer counts them */
    spin(e, 80);
    mqr_queue_stats_t s = stats(q);
    assert_int_equal(s.expired, 2);
    assert_int_equal(s.depth, 2);
    rec_t r = {.answer = MQR_QUEUE_ACK};
    assert_int_equal(mqr__queue_consume(q, on_delivery, &r, 0, NULL), 0);
    turns(e, 3);
    assert_int_equal(r.calls, 2);
    assert_string_equal(r.got[0], "long");
    assert_string_equal(r.got[1], "forever");

    /* expired while waiting behind a slow consumer: never delivered */
    mqr_queue_config_t c2 = cfg_named("ttl2");
    mqr_queue_t *q2 = queue(e, &c2);
    rec_t slow = {.answer = MQR_QUEUE_LATER};
    assert_int_equal(mqr__queue_consume(q2, on_delivery, &slow, 1, NULL), 0);
    pub(q2, "first", MQR_PRIO_NORMAL, 0);
    turns(e, 2);
    assert_int_equal(slow.calls, 1);
    pub(q2, "dies", MQR_PRIO_NORMAL, 10);
    pub(q2, "lives", MQR_PRIO_NORMAL, 0);
    spin(e, 40);
    assert_int_equal(slow.calls, 1); /* prefetch 1 holds them back */
    slow.answer = MQR_QUEUE_ACK;
    assert_int_equal(mqr__queue_ack(q2, slow.ids[0]), 0);
    turns(e, 3);
    assert_int_equal(slow.calls, 2);
    assert_string_equal(slow.got[1], "lives");
    assert_int_equal(stats(q2).expired, 1);

    /* an MQTT v5 expiry already passed is refused with a named error */
    mqr_msg_init_t in = {.topic = "t",
                         .topic_len = 1,
                         .payload = "p",
                         .payload_len = 1,
                         .expiry_s = 1,
                         .created_ms = mqr__now_ms() - 5000};
    mqr_msg_t *old = mqr__msg_new(&in);
    assert_int_equal(mqr__queue_publish(q2, old, NULL, NULL), MQR_EEXPIRED);
    mqr_msg_unref(old);
    mqr_engine_free(e);
}

/* ---- ack timeout, nack, backoff, dead letters ---- */

static void test_ack_timeout_redelivers(void **state)
{
    mqr_engine_t *e = engine(0);
    mqr_queue_config_t c = cfg_named("acktmo");
    c.ack_timeout_ms = 30;
    c.max_attempts = 10;
    mqr_queue_t *q = queue(e, &c);
    rec_t r = {.answer = MQR_QUEUE_LATER};
    assert_int_equal(mqr__queue_consume(q, on_delivery, &r, 0, NULL), 0);
    pub(q, "m", MQR_PRIO_NORMAL, 0);
    turns(e, 2);
    assert_int_equal(r.calls, 1);
    assert_int_equal(stats(q).in_flight, 1);
    spin(e, 50);
    assert_true(r.calls >= 2);
    assert_int_equal(r.attempts[0], 1);
    assert_int_equal(r.attempts[1], 2);
    assert_int_equal(r.ids[1], r.ids[0]);
    assert_true(r.at[1] - r.at[0] >= 25);
    /* a redelivery keeps the id: acking it settles the entry */
    assert_int_equal(mqr__queue_ack(q, r.ids[0]), 0);
    mqr_queue_stats_t s = stats(q);
    assert_true(s.ack_timeouts >= 1);
    assert_true(s.redelivered >= 1);
    assert_int_equal(s.in_flight, 0);
    assert_int_equal(s.acked, 1);
    mqr_engine_free(e);
}

static void test_nack_backoff(void **state)
{
    mqr_engine_t *e = engine(0);
    mqr_queue_config_t c = cfg_named("backoff");
    c.backoff_initial_ms = 40;
    c.backoff_max_ms = 100;
    c.max_attempts = 10;
    mqr_queue_t *q = queue(e, &c);
    rec_t r = {.answer = MQR_QUEUE_NACK};
    assert_int_equal(mqr__queue_consume(q, on_delivery, &r, 0, NULL), 0);
    pub(q, "m", MQR_PRIO_NORMAL, 0);
    turns(e, 2);
    assert_int_equal(r.calls, 1);
    assert_int_equal(stats(q).delayed, 1);
    spin(e, 330); /* 40 + 80 + 100 (capped) = 220 */
    assert_true(r.calls >= 4);
    double d1 = r.at[1] - r.at[0], d2 = r.at[2] - r.at[1], d3 = r.at[3] - r.at[2];
    assert_true(d1 >= 38 && d1 < 140);
    assert_true(d2 >= 78 && d2 < 180);
    assert_true(d3 >= 98 && d3 < 200); /* capped at backoff_max_ms */
    assert_int_equal(r.attempts[3], 4);
    mqr_queue_stats_t s = stats(q);
    assert_true(s.nacked >= 4);

    /* an explicit delay overrides the backoff */
    mqr_queue_config_t c2 = cfg_named("explicit");
    mqr_queue_t *q2 = queue(e, &c2);
    uint64_t id = pub(q2, "x", MQR_PRIO_NORMAL, 0);
    mqr_queue_delivery_t d;
    assert_int_equal(mqr__queue_receive(q2, 1, &d), 1);
    assert_int_equal(mqr__queue_nack(q2, id, 0), 0);
    assert_int_equal(mqr__queue_receive(q2, 1, &d), 1); /* back at once */
    assert_int_equal(d.attempts, 2);
    assert_int_equal(mqr__queue_nack(q2, id, 30), 0);
    assert_int_equal(mqr__queue_receive(q2, 1, &d), 0);
    spin(e, 50);
    assert_int_equal(mqr__queue_receive(q2, 1, &d), 1);
    assert_int_equal(d.attempts, 3);
    assert_int_equal(mqr__queue_nack(q2, 999, 0), MQR_ENOENT);
    mqr_engine_free(e);
}

typedef struct {
    int calls;
    char topic[32];
    int reason;
    unsigned attempts;
} dead_rec_t;

static void on_dead(void *arg, mqr_queue_t *q, const mqr_queue_dead_t *d)
{
    dead_rec_t *r = arg;
    r->calls++;
    snprintf(r->topic, sizeof r->topic, "%s", mqr_msg_topic(d->msg, NULL));
    r->reason = d->reason;
    r->attempts = d->attempts;
}

static void test_max_attempts_dead_letter(void **state)
{
    mqr_engine_t *e = engine(0);
    dead_rec_t dr = {0};
    mqr_queue_config_t c = cfg_named("dlq");
    c.max_attempts = 3;
    c.on_dead = on_dead;
    c.on_dead_arg = &dr;
    mqr_queue_t *q = queue(e, &c);
    rec_t r = {.ack_inside = 2}; /* nack(0) from inside: immediate retry */
    assert_int_equal(mqr__queue_consume(q, on_delivery, &r, 0, NULL), 0);
    mqr_msg_t *m = mk("orders/eu/42", "payload");
    uint64_t id;
    assert_int_equal(mqr__queue_publish(q, m, NULL, &id), 0);
    mqr_msg_unref(m);
    turns(e, 5);
    assert_int_equal(r.calls, 3);
    assert_int_equal(dr.calls, 1);
    assert_string_equal(dr.topic, "orders/eu/42");
    assert_int_equal(dr.reason, MQR_QREASON_MAX_ATTEMPTS);
    assert_int_equal(dr.attempts, 3);
    mqr_queue_dead_t dead[4];
    assert_int_equal(mqr__queue_dlq_list(q, 0, 4, dead), 1);
    assert_int_equal(dead[0].id, id);
    assert_int_equal(dead[0].reason, MQR_QREASON_MAX_ATTEMPTS);
    assert_int_equal(dead[0].attempts, 3);
    assert_string_equal(mqr_msg_topic(dead[0].msg, NULL), "orders/eu/42");
    assert_string_equal(mqr__queue_reason_name(dead[0].reason), "max_attempts");
    mqr_queue_stats_t s = stats(q);
    assert_int_equal(s.dead_lettered, 1);
    assert_int_equal(s.dead, 1);
    assert_int_equal(s.depth, 0);
    assert_int_equal(s.nacked, 3);
    assert_int_equal(s.redelivered, 2);
    mqr_engine_free(e);
}

static void test_dlq_stats_redrive_purge(void **state)
{
    mqr_engine_t *e = engine(0);
    mqr_queue_config_t c = cfg_named("dlq2");
    c.dead_letter_expired = true;
    c.max_attempts = 1;
    mqr_queue_t *q = queue(e, &c);
    /* two expire, one is rejected, one fails its only attempt */
    pub(q, "exp1", MQR_PRIO_NORMAL, 10);
    pub(q, "exp2", MQR_PRIO_NORMAL, 10);
    spin(e, 40);
    uint64_t rej = pub(q, "rej", MQR_PRIO_NORMAL, 0);
    uint64_t fail = pub(q, "fail", MQR_PRIO_LOW, 0);
    mqr_queue_delivery_t d[2];
    assert_int_equal(mqr__queue_receive(q, 2, d), 2);
    assert_int_equal(mqr__queue_reject(q, rej), 0);
    assert_int_equal(mqr__queue_nack(q, fail, -1), 0);
    mqr_queue_dlq_stats_t ds;
    assert_int_equal(mqr__queue_dlq_stats(q, &ds), 0);
    assert_int_equal(ds.total, 4);
    assert_int_equal(ds.depth, 4);
    assert_int_equal(ds.by_reason[MQR_QREASON_EXPIRED], 2);
    assert_int_equal(ds.by_reason[MQR_QREASON_REJECTED], 1);
    assert_int_equal(ds.by_reason[MQR_QREASON_MAX_ATTEMPTS], 1);
    mqr_queue_stats_t s = stats(q);
    assert_int_equal(s.expired, 2);
    assert_int_equal(s.rejected, 1);

    /* re-drive the two oldest (the expired ones) back: fresh attempts */
    assert_int_equal(mqr__queue_redrive(q, 2), 2);
    assert_int_equal(mqr__queue_dlq_stats(q, &ds), 0);
    assert_int_equal(ds.depth, 2);
    assert_int_equal(ds.redriven, 2);
    assert_int_equal(ds.depth_by_reason[MQR_QREASON_EXPIRED], 0);
    assert_int_equal(ds.by_reason[MQR_QREASON_EXPIRED], 2); /* history stays */
    assert_int_equal(mqr__queue_receive(q, 2, d), 2);
    size_t len;
    assert_memory_equal(mqr_msg_payload(d[0].msg, &len), "exp1", 4);
    assert_int_equal(d[0].attempts, 1);
    assert_int_equal(mqr__queue_ack(q, d[0].id), 0);
    assert_int_equal(mqr__queue_ack(q, d[1].id), 0);

    /* purge one, then the rest */
    assert_int_equal(mqr__queue_dlq_purge(q, 1), 1);
    assert_int_equal(mqr__queue_dlq_purge(q, 0), 1);
    assert_int_equal(mqr__queue_dlq_stats(q, &ds), 0);
    assert_int_equal(ds.depth, 0);
    assert_int_equal(ds.purged, 2);
    assert_int_equal(stats(q).bytes, 0);
    assert_int_equal(mqr__queue_redrive(q, 0), 0);

    /* bounded: the oldest dead letter goes */
    mqr_queue_config_t c3 = cfg_named("dlq3");
    c3.dlq_max_messages = 2;
    mqr_queue_t *q3 = queue(e, &c3);
    for (int i = 0; i < 3; i++) {
        char p[8];
        snprintf(p, sizeof p, "r%d", i);
        uint64_t id = pub(q3, p, MQR_PRIO_NORMAL, 0);
        assert_int_equal(mqr__queue_receive(q3, 1, d), 1);
        assert_int_equal(mqr__queue_reject(q3, id), 0);
    }
    assert_int_equal(mqr__queue_dlq_stats(q3, &ds), 0);
    assert_int_equal(ds.depth, 2);
    assert_int_equal(ds.overflow, 1);
    mqr_queue_dead_t dead[2];
    assert_int_equal(mqr__queue_dlq_list(q3, 0, 2, dead), 2);
    assert_memory_equal(mqr_msg_payload(dead[0].msg, &len), "r1", 2);
    assert_int_equal(mqr__queue_dlq_list(q3, 1, 2, dead), 1);
    assert_memory_equal(mqr_msg_payload(dead[0].msg, &len), "r2", 2);
    mqr_engine_free(e);
}

static void test_dead_letters_disabled(void **state)
{
    mqr_engine_t *e = engine(0);
    mqr_queue_config_t c = cfg_named("nodlq");
    c.dead_letter = false;
    c.max_attempts = 1;
    mqr_queue_t *q = queue(e, &c);
    mqr_queue_dlq_stats_t ds;
    assert_int_equal(mqr__queue_dlq_stats(q, &ds), MQR_ENODLQ);
    assert_int_equal(mqr__queue_redrive(q, 0), MQR_ENODLQ);
    assert_int_equal(mqr__queue_dlq_list(q, 0, 1, NULL), MQR_ENODLQ);
    uint64_t id = pub(q, "x", MQR_PRIO_NORMAL, 0);
    mqr_queue_delivery_t d;
    assert_int_equal(mqr__queue_receive(q, 1, &d), 1);
    assert_int_equal(mqr__queue_nack(q, id, 0), 0);
    mqr_queue_stats_t s = stats(q);
    assert_int_equal(s.discarded, 1);
    assert_int_equal(s.dead_lettered, 0);
    assert_int_equal(s.dead, 0);
    assert_int_equal(s.bytes, 0);
    assert_string_equal(mqr_err_name(MQR_ENODLQ), "ENODLQ");
    mqr_engine_free(e);
}

/* ---- limits ---- */

static void test_limits_refuse_or_drop(void **state)
{
    mqr_engine_t *e = engine(0);
    mqr_queue_config_t c = cfg_named("small");
    c.max_messages = 3;
    mqr_queue_t *q = queue(e, &c);
    for (int i = 0; i < 3; i++)
        pub(q, "x", MQR_PRIO_NORMAL, 0);
    mqr_msg_t *m = mk("t", "y");
    assert_int_equal(mqr__queue_publish(q, m, NULL, NULL), MQR_EFULL);
    mqr_queue_stats_t s = stats(q);
    assert_int_equal(s.refused_full, 1);
    assert_int_equal(s.depth, 3);

    /* bytes: each entry costs entry + topic + payload */
    mqr_queue_config_t cb = cfg_named("bytes");
    cb.max_bytes = 3 * (stats(q).bytes / 3) + 1; /* room for three "x" on "t" */
    mqr_queue_t *qb = queue(e, &cb);
    for (int i = 0; i < 3; i++)
        pub(qb, "x", MQR_PRIO_NORMAL, 0);
    assert_int_equal(mqr__queue_publish(qb, m, NULL, NULL), MQR_EMEMLIMIT);
    assert_int_equal(stats(qb).refused_memory, 1);
    assert_string_equal(mqr_err_name(MQR_EMEMLIMIT), "EMEMLIMIT");

    /* drop oldest: lowest level first, oldest within it */
    mqr_queue_config_t cd = cfg_named("drop");
    cd.max_messages = 3;
    cd.drop_oldest = true;
    mqr_queue_t *qd = queue(e, &cd);
    pub(qd, "hi", MQR_PRIO_HIGH, 0);
    pub(qd, "lo1", MQR_PRIO_LOW, 0);
    pub(qd, "lo2", MQR_PRIO_LOW, 0);
    pub(qd, "n1", MQR_PRIO_NORMAL, 0); /* drops lo1 */
    pub(qd, "n2", MQR_PRIO_NORMAL, 0); /* drops lo2 */
    s = stats(qd);
    assert_int_equal(s.dropped, 2);
    assert_int_equal(s.depth, 3);
    mqr_queue_delivery_t d[4];
    assert_int_equal(mqr__queue_receive(qd, 4, d), 3);
    size_t len;
    assert_memory_equal(mqr_msg_payload(d[0].msg, &len), "hi", 2);
    assert_memory_equal(mqr_msg_payload(d[1].msg, &len), "n1", 2);
    assert_memory_equal(mqr_msg_payload(d[2].msg, &len), "n2", 2);
    /* all three in flight: nothing to drop, so refused even with drop_oldest */
    assert_int_equal(mqr__queue_publish(qd, m, NULL, NULL), MQR_EFULL);
    assert_int_equal(stats(qd).refused_full, 1);
    mqr_msg_unref(m);
    mqr_engine_free(e);
}

static void test_engine_memory_limit(void **state)
{
    mqr_engine_t *e = engine(0);
    mqr_queue_config_t ca = cfg_named("a");
    mqr_queue_t *a = queue(e, &ca);
    pub(a, "x", MQR_PRIO_NORMAL, 0);
    size_t one = stats(a).bytes;
    assert_true(one > sizeof(void *) * 4);
    /* the engine-wide limit covers every queue */
    assert_int_equal(mqr__queues_set_max_bytes(e, 3 * one), 0);
    mqr_queue_config_t cb = cfg_named("b");
    mqr_queue_t *b = queue(e, &cb);
    pub(b, "x", MQR_PRIO_NORMAL, 0);
    pub(a, "x", MQR_PRIO_NORMAL, 0);
    mqr_msg_t *m = mk("t", "x");
    assert_int_equal(mqr__queue_publish(b, m, NULL, NULL), MQR_EMEMLIMIT);
    mqr_queues_health_t h;
    assert_int_equal(mqr__queues_health(e, &h), MQR_QHEALTH_FULL);
    assert_int_equal(h.bytes, 3 * one);
    assert_int_equal(h.totals.refused_memory, 1);
    mqr_queue_delivery_t d;
    assert_int_equal(mqr__queue_receive(a, 1, &d), 1);
    assert_int_equal(mqr__queue_ack(a, d.id), 0);
    assert_int_equal(mqr__queue_publish(b, m, NULL, NULL), 0);
    mqr_msg_unref(m);
    mqr_engine_free(e);
}

/* ---- consumers ---- */

static void test_competing_consumers(void **state)
{
    mqr_engine_t *e = engine(0);
    mqr_queue_config_t c = cfg_named("work");
    mqr_queue_t *q = queue(e, &c);
    rec_t r[3] = {
        {.answer = MQR_QUEUE_LATER}, {.answer = MQR_QUEUE_LATER}, {.answer = MQR_QUEUE_LATER}};
    for (int i = 0; i < 3; i++)
        assert_int_equal(mqr__queue_consume(q, on_delivery, &r[i], 2, &r[i].self), 0);
    for (int i = 0; i < 12; i++) {
        char p[8];
        snprintf(p, sizeof p, "m%d", i);
        pub(q, p, MQR_PRIO_NORMAL, 0);
    }
    turns(e, 3);
    /* prefetch 2 each: six in flight, six waiting */
    for (int i = 0; i < 3; i++)
        assert_int_equal(r[i].calls, 2);
    mqr_queue_stats_t s = stats(q);
    assert_int_equal(s.in_flight, 6);
    assert_int_equal(s.ready, 6);
    assert_int_equal(s.consumers, 3);
    /* round robin: m0 to the first, m1 to the second... */
    assert_string_equal(r[0].got[0], "m0");
    assert_string_equal(r[1].got[0], "m1");
    assert_string_equal(r[2].got[0], "m2");
    /* the first acks one: it alone gets one more */
    assert_int_equal(mqr__queue_ack(q, r[0].ids[0]), 0);
    turns(e, 3);
    assert_int_equal(r[0].calls, 3);
    assert_int_equal(r[1].calls, 2);
    /* cancelling the second puts its two back, ahead of the rest */
    mqr__queue_cancel(q, r[1].self);
    s = stats(q);
    assert_int_equal(s.in_flight, 4);
    assert_int_equal(s.ready, 7);
    assert_int_equal(s.consumers, 2);
    /* everyone acks everything as it comes: all work is done, shared */
    r[0].answer = r[2].answer = MQR_QUEUE_ACK;
    for (int i = 0; i < 3; i++)
        if (i != 1)
            for (int k = 0; k < r[i].calls; k++)
                mqr__queue_ack(q, r[i].ids[k]);
    turns(e, 5);
    s = stats(q);
    assert_int_equal(s.depth, 0);
    assert_int_equal(s.in_flight, 0);
    assert_int_equal(s.acked, 12);
    assert_true(r[0].calls >= 4 && r[2].calls >= 4);
    /* the redelivered ones were m1 and m4 (the second's), first in line */
    mqr_engine_free(e);
}

static void test_settle_inside_callback(void **state)
{
    mqr_engine_t *e = engine(0);
    mqr_queue_config_t c = cfg_named("inside");
    c.max_attempts = 2;
    mqr_queue_t *q = queue(e, &c);
    rec_t r = {.ack_inside = 1};
    assert_int_equal(mqr__queue_consume(q, on_delivery, &r, 1, &r.self), 0);
    for (int i = 0; i < 5; i++)
        pub(q, "x", MQR_PRIO_NORMAL, 0);
    turns(e, 3);
    assert_int_equal(r.calls, 5); /* prefetch 1, each acked inside */
    assert_int_equal(stats(q).acked, 5);
    r.ack_inside = 3;
    pub(q, "bad", MQR_PRIO_NORMAL, 0);
    turns(e, 3);
    mqr_queue_dlq_stats_t ds;
    assert_int_equal(mqr__queue_dlq_stats(q, &ds), 0);
    assert_int_equal(ds.by_reason[MQR_QREASON_REJECTED], 1);
    /* a consumer that cancels itself gets nothing more; its delivery goes back */
    r.ack_inside = 0;
    r.answer = MQR_QUEUE_LATER;
    r.cancel_self = true;
    pub(q, "a", MQR_PRIO_NORMAL, 0);
    pub(q, "b", MQR_PRIO_NORMAL, 0);
    int before = r.calls;
    turns(e, 3);
    assert_int_equal(r.calls, before + 1);
    mqr_queue_stats_t s = stats(q);
    assert_int_equal(s.consumers, 0);
    assert_int_equal(s.ready, 2);
    assert_int_equal(s.in_flight, 0);
    mqr_engine_free(e);
}

/* ---- batch consumers ---- */

typedef struct {
    int answer;
    int calls;
    size_t sizes[32];
    size_t total;
    uint64_t ids[256];
    bool ack_first_inside;
} batch_rec_t;

static int on_batch(void *arg, mqr_queue_t *q, const mqr_queue_delivery_t *d, size_t n)
{
    batch_rec_t *b = arg;
    if (b->calls < 32) b->sizes[b->calls] = n;
    b->calls++;
    for (size_t i = 0; i < n; i++) {
        if (b->total < 256) b->ids[b->total] = d[i].id;
        b->total++;
    }
    if (b->ack_first_inside) assert_int_equal(mqr__queue_ack(q, d[0].id), 0);
    return b->answer;
}

static void test_batch_consumer(void **state)
{
    mqr_engine_t *e = engine(0);
    mqr_queue_config_t c = cfg_named("batchc");
    mqr_queue_t *q = queue(e, &c);
    batch_rec_t b = {.answer = MQR_QUEUE_ACK, .ack_first_inside = true};
    assert_int_equal(mqr__queue_consume_batch(q, on_batch, &b, 0, 0, NULL), MQR_EINVAL);
    assert_int_equal(mqr__queue_consume_batch(q, on_batch, &b, 0, MQR_QUEUE_MAX_BATCH + 1, NULL),
                     MQR_EINVAL);
    assert_int_equal(mqr__queue_consume_batch(q, on_batch, &b, 0, 4, NULL), 0);
    for (int i = 0; i < 10; i++)
        pub(q, "x", MQR_PRIO_NORMAL, 0);
    turns(e, 3);
    assert_int_equal(b.calls, 3);
    assert_int_equal(b.sizes[0], 4);
    assert_int_equal(b.sizes[1], 4);
    assert_int_equal(b.sizes[2], 2);
    mqr_queue_stats_t s = stats(q);
    assert_int_equal(s.acked, 10);
    assert_int_equal(s.in_flight, 0);

    /* settled later, prefetch caps the batches */
    mqr_queue_config_t c2 = cfg_named("batchl");
    mqr_queue_t *q2 = queue(e, &c2);
    batch_rec_t l = {.answer = MQR_QUEUE_LATER};
    mqr_queue_consumer_t *lc;
    assert_int_equal(mqr__queue_consume_batch(q2, on_batch, &l, 5, 4, &lc), 0);
    for (int i = 0; i < 12; i++)
        pub(q2, "y", MQR_PRIO_NORMAL, 0);
    turns(e, 3);
    assert_int_equal(l.calls, 2);
    assert_int_equal(l.sizes[0], 4);
    assert_int_equal(l.sizes[1], 1);
    assert_int_equal(stats(q2).in_flight, 5);
    assert_int_equal(mqr__queue_ack_batch(q2, l.ids, 5), 5);
    turns(e, 3);
    assert_int_equal(l.total, 10);
    assert_int_equal(stats(q2).in_flight, 5);
    /* competing with a single consumer: both get work */
    rec_t r = {.answer = MQR_QUEUE_ACK};
    assert_int_equal(mqr__queue_consume(q2, on_delivery, &r, 0, NULL), 0);
    turns(e, 3);
    assert_int_equal(r.calls, 2);
    /* cancelling the batch consumer puts its five back, and the other takes them */
    mqr__queue_cancel(q2, lc);
    turns(e, 3);
    assert_int_equal(r.calls, 7);
    s = stats(q2);
    assert_int_equal(s.depth + s.in_flight, 0);
    mqr_engine_free(e);
}

/* ---- batch ---- */

static void test_batch_publish_receive(void **state)
{
    mqr_engine_t *e = engine(0);
    mqr_queue_config_t c = cfg_named("batch");
    c.max_messages = 50;
    mqr_queue_t *q = queue(e, &c);
    mqr_msg_t *msgs[60];
    for (int i = 0; i < 60; i++) {
        char p[8];
        snprintf(p, sizeof p, "%d", i);
        msgs[i] = mk("b", p);
    }
    uint64_t ids[60];
    /* all or nothing */
    assert_int_equal(mqr__queue_publish_batch(q, msgs, 60, NULL, ids), MQR_EFULL);
    assert_int_equal(stats(q).depth, 0);
    assert_int_equal(stats(q).bytes, 0);
    assert_int_equal(mqr__queue_publish_batch(q, msgs, 40, NULL, ids), 0);
    for (int i = 1; i < 40; i++)
        assert_true(ids[i] == ids[i - 1] + 1);
    assert_int_equal(mqr__queue_publish_batch(q, msgs + 40, 11, NULL, NULL), MQR_EFULL);
    assert_int_equal(stats(q).depth, 40);
    mqr_queue_delivery_t d[16];
    assert_int_equal(mqr__queue_receive(q, 16, d), 16);
    for (int i = 0; i < 16; i++)
        assert_int_equal(d[i].id, ids[i]);
    uint64_t acks[17];
    for (int i = 0; i < 16; i++)
        acks[i] = d[i].id;
    acks[16] = 12345; /* not in flight: skipped */
    assert_int_equal(mqr__queue_ack_batch(q, acks, 17), 16);
    assert_int_equal(mqr__queue_receive(q, 100, NULL), MQR_EINVAL);
    mqr_queue_delivery_t all[64];
    assert_int_equal(mqr__queue_receive(q, 64, all), 24);
    assert_int_equal(stats(q).in_flight, 24);
    for (int i = 0; i < 60; i++)
        mqr_msg_unref(msgs[i]);
    mqr_engine_free(e);
}

/* ---- de-duplication by the caller's id ---- */

static uint64_t pub_dd(mqr_queue_t *q, uint64_t key)
{
    mqr_msg_t *m = mk("t", "d");
    mqr_queue_pub_opts_t o = {.priority = MQR_PRIO_NORMAL, .dedup_id = key};
    uint64_t id = 0;
    assert_int_equal(mqr__queue_publish(q, m, &o, &id), 0);
    mqr_msg_unref(m);
    return id;
}

static void test_dedup(void **state)
{
    mqr_engine_t *e = engine(0);
    mqr_queue_config_t c = cfg_named("dedup");
    c.dedup_window = 3;
    mqr_queue_t *q = queue(e, &c);
    uint64_t a = pub_dd(q, 101), b = pub_dd(q, 102), cc = pub_dd(q, 103);
    assert_true(a < b && b < cc);
    assert_int_equal(pub_dd(q, 102), b); /* seen: nothing enqueued */
    assert_int_equal(stats(q).depth, 3);
    assert_int_equal(stats(q).duplicates, 1);
    mqr_queue_delivery_t d[3];
    assert_int_equal(mqr__queue_receive(q, 3, d), 3);
    assert_int_equal(mqr__queue_ack(q, b), 0);
    assert_int_equal(pub_dd(q, 102), b); /* still within the window once acked */
    uint64_t x = pub_dd(q, 104);         /* forgets 101 */
    assert_true(x > cc);
    assert_true(pub_dd(q, 101) > x);
    assert_int_equal(pub_dd(q, 0), x + 2); /* 0 = no dedup id */
    assert_int_equal(stats(q).duplicates, 2);

    /* a larger window under churn: exactly the last `window` keys are known */
    mqr_queue_config_t c2 = cfg_named("dedup2");
    c2.dedup_window = 100;
    c2.max_messages = 5000;
    mqr_queue_t *q2 = queue(e, &c2);
    uint64_t keys[1000];
    unsigned r = 99;
    for (int i = 0; i < 1000; i++) {
        r = r * 1103515245u + 12345u;
        keys[i] = ((uint64_t)r << 20) | (uint64_t)i; /* distinct, scattered */
        pub_dd(q2, keys[i]);
    }
    size_t depth = stats(q2).depth;
    for (int i = 900; i < 1000; i++)
        pub_dd(q2, keys[i]);
    assert_int_equal(stats(q2).depth, depth);
    assert_int_equal(stats(q2).duplicates, 100);
    pub_dd(q2, keys[899]);
    assert_int_equal(stats(q2).depth, depth + 1);
    mqr_engine_free(e);
}

/* ---- many entries: the id map and the TTL heap under random order ---- */

static void test_many_random(void **state)
{
    mqr_engine_t *e = engine(0);
    mqr_queue_config_t c = cfg_named("many");
    mqr_queue_t *q = queue(e, &c);
    enum { N = 5000 };
    static uint64_t ids[N];
    static mqr_queue_delivery_t d[N];
    for (int i = 0; i < N; i++)
        ids[i] = pub(q, "m", i % MQR_PRIO_LEVELS, 0);
    assert_int_equal(mqr__queue_receive(q, N, d), N);
    for (int i = 1; i < N; i++)
        assert_true(d[i].priority <= d[i - 1].priority);
    unsigned x = 7;
    for (int i = N - 1; i > 0; i--) { /* shuffle */
        x = x * 1103515245u + 12345u;
        int j = (int)((x >> 8) % (unsigned)(i + 1));
        uint64_t t = ids[i];
        ids[i] = ids[j];
        ids[j] = t;
    }
    int nacked = 0;
    for (int i = 0; i < N; i++) {
        if (i % 101 == 1) { /* some go back instead */
            assert_int_equal(mqr__queue_nack(q, ids[i], 0), 0);
            nacked++;
            continue;
        }
        assert_int_equal(mqr__queue_ack(q, ids[i]), 0);
        if (i % 7 == 0) assert_int_equal(mqr__queue_ack(q, ids[i]), MQR_ENOENT);
    }
    /* the nacked ones came back ready; take and ack them */
    mqr_queue_stats_t s = stats(q);
    assert_int_equal(s.in_flight, 0);
    int back = mqr__queue_receive(q, N, d);
    assert_int_equal(back, (int)s.ready);
    assert_int_equal(back, nacked);
    for (int i = 0; i < back; i++)
        assert_int_equal(mqr__queue_ack(q, d[i].id), 0);
    assert_int_equal(stats(q).acked, N);

    /* random TTLs, half of them taken out of the middle of the heap */
    int left = 0;
    for (int i = 0; i < 2000; i++) {
        x = x * 1103515245u + 12345u;
        pub(q, "t", (int)((x >> 4) % 5), 1 + (int64_t)((x >> 12) % 40));
    }
    int took = mqr__queue_receive(q, 1000, d);
    assert_true(took > 900); /* a few may expire already */
    left = 2000 - took;
    for (int i = 0; i < took; i++)
        assert_int_equal(mqr__queue_ack(q, d[i].id), 0);
    spin(e, 80);
    s = stats(q);
    assert_int_equal(s.depth, 0);
    assert_int_equal(s.expired, (uint64_t)left);
    assert_int_equal(s.bytes, 0);
    mqr_engine_free(e);
}

/* ---- metrics and health ---- */

static void test_metrics_and_health(void **state)
{
    mqr_engine_t *e = engine(0);
    mqr_queues_health_t h;
    assert_int_equal(mqr__queues_health(e, &h), MQR_QHEALTH_OK);
    assert_int_equal(h.queues, 0);
    mqr_queue_config_t c = cfg_named("metrics");
    c.max_messages = 10;
    c.max_attempts = 5;
    mqr_queue_t *q = queue(e, &c);
    uint64_t a = pub(q, "a", MQR_PRIO_NORMAL, 0);
    uint64_t b = pub(q, "b", MQR_PRIO_NORMAL, 0);
    pub(q, "c", MQR_PRIO_NORMAL, 0);
    pub(q, "d", MQR_PRIO_NORMAL, 10);
    mqr_queue_delivery_t d[2];
    assert_int_equal(mqr__queue_receive(q, 2, d), 2);
    assert_int_equal(mqr__queue_ack(q, a), 0);
    assert_int_equal(mqr__queue_nack(q, b, 0), 0);
    spin(e, 30); /* "d" expires */
    mqr_queue_stats_t s = stats(q);
    assert_int_equal(s.published, 4);
    assert_int_equal(s.delivered, 2);
    assert_int_equal(s.acked, 1);
    assert_int_equal(s.nacked, 1);
    assert_int_equal(s.expired, 1);
    assert_int_equal(s.depth, 2); /* b again and c */
    assert_int_equal(s.in_flight, 0);
    assert_true(s.bytes > 0);
    assert_true(s.uptime_ms >= 25);
    assert_int_equal(mqr__queue_receive(q, 1, d), 1);
    assert_int_equal(d[0].id, b);
    assert_int_equal(stats(q).redelivered, 1);
    assert_int_equal(mqr__queues_health(e, &h), MQR_QHEALTH_OK);
    assert_string_equal(mqr__queues_status_name(h.status), "ok");
    assert_int_equal(h.queues, 1);
    assert_int_equal(h.totals.published, 4);
    assert_int_equal(h.totals.in_flight, 1);
    assert_int_equal(h.totals.depth, 1);
    assert_int_equal(h.bytes, stats(q).bytes);
    assert_true(h.uptime_ms >= 25);
    /* 8 of 10 held: degraded; 10: full */
    for (int i = 0; i < 6; i++)
        pub(q, "f", MQR_PRIO_NORMAL, 0);
    assert_int_equal(mqr__queues_health(e, &h), MQR_QHEALTH_DEGRADED);
    pub(q, "f", MQR_PRIO_NORMAL, 0);
    pub(q, "f", MQR_PRIO_NORMAL, 0);
    assert_int_equal(mqr__queues_health(e, &h), MQR_QHEALTH_FULL);
    assert_string_equal(mqr__queues_status_name(h.status), "full");
    mqr_engine_stop(e);
    assert_int_equal(mqr__queues_health(e, &h), MQR_QHEALTH_STOPPED);
    mqr_engine_free(e);
}

/* ---- closing ---- */

static void test_close_with_everything_held(void **state)
{
    mqr_engine_t *e = engine(0);
    mqr_queue_config_t c = cfg_named("closing");
    c.max_attempts = 2;
    mqr_queue_t *q = queue(e, &c);
    rec_t r = {.answer = MQR_QUEUE_LATER};
    assert_int_equal(mqr__queue_consume(q, on_delivery, &r, 1, NULL), 0);
    pub(q, "inflight", MQR_PRIO_HIGH, 0);
    turns(e, 2);
    assert_int_equal(r.calls, 1);
    uint64_t delayed = pub(q, "delayed", MQR_PRIO_NORMAL, 0);
    uint64_t dead = pub(q, "dead", MQR_PRIO_LOW, 0);
    mqr_queue_delivery_t d;
    assert_int_equal(mqr__queue_receive(q, 1, &d), 1);
    assert_int_equal(d.id, delayed);
    assert_int_equal(mqr__queue_receive(q, 1, &d), 1);
    assert_int_equal(d.id, dead);
    assert_int_equal(mqr__queue_reject(q, dead), 0);
    pub(q, "ready", MQR_PRIO_NORMAL, 5000);
    mqr_queue_stats_t s0 = stats(q);
    assert_int_equal(s0.in_flight, 2);
    assert_int_equal(s0.ready, 1);
    assert_int_equal(s0.dead, 1);
    /* the one received first goes to a backoff (delayed) */
    assert_int_equal(mqr__queue_nack(q, delayed, 5000), 0);
    assert_int_equal(stats(q).delayed, 1);
    uint64_t txid;
    assert_int_equal(mqr__queue_tx_begin(e, 0, &txid), 0);
    mqr_msg_t *m = mk("t", "tx");
    assert_int_equal(mqr__queue_tx_publish(e, txid, q, m, NULL), 0);
    mqr__queue_ref(q);
    mqr_queues_health_t h;
    mqr__queues_health(e, &h);
    assert_true(h.bytes > 0);
    mqr__queue_close(q);
    mqr__queue_close(q); /* idempotent */
    assert_true(mqr__queue_closed(q));
    mqr__queues_health(e, &h);
    assert_int_equal(h.bytes, 0);
    assert_int_equal(h.queues, 0);
    /* every call on a closed queue says so */
    assert_int_equal(mqr__queue_publish(q, m, NULL, NULL), MQR_ECLOSED);
    assert_int_equal(mqr__queue_publish_batch(q, &m, 1, NULL, NULL), MQR_ECLOSED);
    assert_int_equal(mqr__queue_ack(q, 1), MQR_ECLOSED);
    assert_int_equal(mqr__queue_nack(q, 1, 0), MQR_ECLOSED);
    assert_int_equal(mqr__queue_reject(q, 1), MQR_ECLOSED);
    assert_int_equal(mqr__queue_receive(q, 1, &d), MQR_ECLOSED);
    assert_int_equal(mqr__queue_consume(q, on_delivery, &r, 0, NULL), MQR_ECLOSED);
    assert_int_equal(mqr__queue_redrive(q, 0), MQR_ECLOSED);
    assert_int_equal(mqr__queue_bind(q, "x/#", NULL), MQR_ECLOSED);
    assert_int_equal(mqr__queue_tx_publish(e, txid, q, m, NULL), MQR_ECLOSED);
    mqr_queue_stats_t s;
    assert_int_equal(mqr__queue_stats(q, &s), MQR_ECLOSED);
    /* the transaction lives on without the closed queue's message */
    assert_int_equal(mqr__queue_tx_commit(e, txid), 0);
    /* the name is free again */
    mqr_queue_t *q2 = queue(e, &c);
    assert_ptr_not_equal(q2, q);
    mqr_queue_t *found;
    assert_int_equal(mqr__queue_find(e, "closing", &found), 0);
    assert_ptr_equal(found, q2);
    mqr__queue_unref(q);
    mqr_msg_unref(m);
    turns(e, 2);
    mqr_engine_free(e); /* q2 with a message in it goes with the engine */
}

static void test_close_from_callback(void **state)
{
    mqr_engine_t *e = engine(0);
    mqr_queue_config_t c = cfg_named("selfclose");
    mqr_queue_t *q = queue(e, &c);
    rec_t r = {.close_queue = true};
    rec_t r2 = {.answer = MQR_QUEUE_ACK};
    assert_int_equal(mqr__queue_consume(q, on_delivery, &r, 0, NULL), 0);
    assert_int_equal(mqr__queue_consume(q, on_delivery, &r2, 0, NULL), 0);
    for (int i = 0; i < 5; i++)
        pub(q, "x", MQR_PRIO_NORMAL, 0);
    turns(e, 3);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r2.calls, 0);
    mqr_queue_t *found;
    assert_int_equal(mqr__queue_find(e, "selfclose", &found), MQR_ENOENT);
    mqr_queues_health_t h;
    mqr__queues_health(e, &h);
    assert_int_equal(h.bytes, 0);
    mqr_engine_free(e);
}

/* a dead-letter hook that closes its queue, from the timer and from a nack */
static void close_on_dead(void *arg, mqr_queue_t *q, const mqr_queue_dead_t *d)
{
    (*(int *)arg)++;
    mqr__queue_close(q);
}

static void test_close_from_dead_letter_hook(void **state)
{
    mqr_engine_t *e = engine(0);
    int calls = 0;
    mqr_queue_config_t c = cfg_named("hook");
    c.dead_letter_expired = true;
    c.on_dead = close_on_dead;
    c.on_dead_arg = &calls;
    mqr_queue_t *q = queue(e, &c);
    mqr__queue_ref(q); /* to look at it after the close */
    for (int i = 0; i < 5; i++)
        pub(q, "x", MQR_PRIO_NORMAL, 5);
    pub(q, "y", MQR_PRIO_NORMAL, 0);
    spin(e, 30);
    assert_int_equal(calls, 1); /* the first expiry closed it; the rest went with it */
    assert_true(mqr__queue_closed(q));
    mqr_queues_health_t h;
    mqr__queues_health(e, &h);
    assert_int_equal(h.bytes, 0);
    mqr__queue_unref(q);

    c.name = "hook2";
    c.max_attempts = 1;
    mqr_queue_t *q2 = queue(e, &c);
    mqr__queue_ref(q2);
    uint64_t id = pub(q2, "z", MQR_PRIO_NORMAL, 0);
    pub(q2, "w", MQR_PRIO_NORMAL, 0);
    mqr_queue_delivery_t d[2];
    assert_int_equal(mqr__queue_receive(q2, 2, d), 2);
    assert_int_equal(mqr__queue_nack(q2, id, 0), 0);
    assert_int_equal(calls, 2);
    assert_int_equal(mqr__queue_ack(q2, d[1].id), MQR_ECLOSED);
    mqr__queue_unref(q2);
    mqr_engine_free(e);
}

/* an engine stopped with work pending in its queues still stops */
static void test_stop_does_not_wait_for_timers(void **state)
{
    mqr_engine_t *e = engine(0);
    mqr_queue_config_t c = cfg_named("pending");
    c.ack_timeout_ms = 60000;
    c.default_ttl_ms = 60000;
    mqr_queue_t *q = queue(e, &c);
    pub(q, "a", MQR_PRIO_NORMAL, 0);
    pub(q, "b", MQR_PRIO_NORMAL, 0);
    mqr_queue_delivery_t d;
    assert_int_equal(mqr__queue_receive(q, 1, &d), 1);
    uint64_t txid;
    assert_int_equal(mqr__queue_tx_begin(e, 60000, &txid), 0);
    mqr_engine_stop(e);
    double t0 = now_ms();
    mqr_engine_run(e);
    assert_true(now_ms() - t0 < 1000);
    mqr_engine_free(e);
}

/* ---- errors ---- */

static void test_errors(void **state)
{
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.listen_port = -1;
    o.data_dir = "";
    o.log_level = MQR_LOG_ERROR;
    mqr_engine_t *e = NULL;
    assert_int_equal(mqr_engine_new(&e, &o, NULL, NULL), 0);
    mqr_queue_config_t c = cfg_named("q");
    mqr_queue_t *q;
    uint64_t txid;
    mqr_queues_health_t h;
    assert_int_equal(mqr__queue_new(e, &c, &q), MQR_ENOTINIT);
    assert_null(q);
    assert_int_equal(mqr__queue_find(e, "q", &q), MQR_ENOTINIT);
    assert_int_equal(mqr__queue_tx_begin(e, 0, &txid), MQR_ENOTINIT);
    assert_int_equal(mqr__queues_health(e, &h), MQR_ENOTINIT);
    assert_string_equal(mqr_err_name(MQR_ENOTINIT), "ENOTINIT");
    assert_int_equal(mqr__queues_init(e, NULL), 0);
    assert_int_equal(mqr__queues_init(e, NULL), MQR_EEXIST);

    const char *bad[] = {"", "has space", "a+b", "a#", "tab\t", "\xc3\xa9"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c.name = bad[i];
        assert_int_equal(mqr__queue_new(e, &c, &q), MQR_EQNAME);
    }
    char longname[300];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    c.name = longname;
    assert_int_equal(mqr__queue_new(e, &c, &q), MQR_EQNAME);
    c.name = NULL;
    assert_int_equal(mqr__queue_new(e, &c, &q), MQR_EQNAME);
    assert_string_equal(mqr_err_name(MQR_EQNAME), "EQNAME");
    c.name = "jobs/eu.high-1";
    assert_int_equal(mqr__queue_new(e, &c, &q), 0);
    mqr_queue_t *q2;
    assert_int_equal(mqr__queue_new(e, &c, &q2), MQR_EEXIST);
    assert_int_equal(mqr__queue_find(e, "nope", &q2), MQR_ENOENT);
    c.name = "neg";
    c.default_ttl_ms = -5;
    assert_int_equal(mqr__queue_new(e, &c, &q2), MQR_EINVAL);

    mqr_msg_t *m = mk("t", "x");
    mqr_queue_pub_opts_t po = {.priority = 5};
    assert_int_equal(mqr__queue_publish(q, m, &po, NULL), MQR_EINVAL);
    po.priority = -1;
    assert_int_equal(mqr__queue_publish(q, m, &po, NULL), MQR_EINVAL);
    assert_int_equal(mqr__queue_publish(q, NULL, NULL, NULL), MQR_EINVAL);
    assert_int_equal(mqr__queue_consume(q, NULL, NULL, 0, NULL), MQR_EINVAL);
    assert_int_equal(mqr__queue_ack(q, 77), MQR_ENOENT);
    assert_int_equal(mqr__queue_reject(q, 77), MQR_ENOENT);
    assert_int_equal(mqr__queue_stats(q, &(mqr_queue_stats_t){0}), 0);
    mqr_msg_unref(m);
    assert_string_equal(mqr_strerror(MQR_EEXPIRED), "message expired");
    assert_string_equal(mqr_err_name(MQR_ETXNOENT), "ETXNOENT");
    assert_string_equal(mqr_err_name(MQR_ETXTIMEOUT), "ETXTIMEOUT");
    mqr_engine_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_priority_and_fifo),
        cmocka_unit_test(test_delivery_after_publish),
        cmocka_unit_test(test_ttl_expiry),
        cmocka_unit_test(test_ack_timeout_redelivers),
        cmocka_unit_test(test_nack_backoff),
        cmocka_unit_test(test_max_attempts_dead_letter),
        cmocka_unit_test(test_dlq_stats_redrive_purge),
        cmocka_unit_test(test_dead_letters_disabled),
        cmocka_unit_test(test_limits_refuse_or_drop),
        cmocka_unit_test(test_engine_memory_limit),
        cmocka_unit_test(test_competing_consumers),
        cmocka_unit_test(test_settle_inside_callback),
        cmocka_unit_test(test_batch_publish_receive),
        cmocka_unit_test(test_batch_consumer),
        cmocka_unit_test(test_many_random),
        cmocka_unit_test(test_dedup),
        cmocka_unit_test(test_metrics_and_health),
        cmocka_unit_test(test_close_with_everything_held),
        cmocka_unit_test(test_close_from_callback),
        cmocka_unit_test(test_close_from_dead_letter_hook),
        cmocka_unit_test(test_stop_does_not_wait_for_timers),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
