/*
 * test_queue_tx.c — what sits around the work queues: transactions (commit
 * atomic for consumers, rollback, timeout rollback, spanning queues),
 * pub/sub subscribers with bounded buffers (drop newest, drop oldest,
 * counted; never inside the publisher), routing messages into a queue, the
 * durability seam (store ops called at the right moments) and restoring
 * stored entries.
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

static mqr_engine_t *engine(void)
{
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.listen_port = -1;
    o.data_dir = "";
    o.log_level = MQR_LOG_ERROR;
    mqr_engine_t *e = NULL;
    char *err = NULL;
    if (mqr_engine_new(&e, &o, NULL, &err) < 0) fail_msg("engine: %s", err);
    assert_int_equal(mqr__queues_init(e, NULL), 0);
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

static void noop_timer(uv_timer_t *t) {}

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

static void turns(mqr_engine_t *e, int n)
{
    for (int i = 0; i < n; i++)
        uv_run(mqr_engine_loop(e), UV_RUN_NOWAIT);
}

static mqr_queue_t *queue(mqr_engine_t *e, const char *name)
{
    mqr_queue_config_t c;
    mqr__queue_config_init(&c);
    c.name = name;
    mqr_queue_t *q = NULL;
    assert_int_equal(mqr__queue_new(e, &c, &q), 0);
    return q;
}

typedef struct {
    int calls;
    char got[32][16];
} rec_t;

static void note(rec_t *r, mqr_msg_t *m)
{
    if (r->calls < 32) {
        size_t len;
        const char *p = mqr_msg_payload(m, &len);
        snprintf(r->got[r->calls], sizeof r->got[0], "%.*s", (int)len, p);
    }
    r->calls++;
}

static int on_delivery(void *arg, mqr_queue_t *q, const mqr_queue_delivery_t *d)
{
    note(arg, d->msg);
    return MQR_QUEUE_ACK;
}

static void tx_pub(mqr_engine_t *e, uint64_t tx, mqr_queue_t *q, const char *payload, int rc)
{
    mqr_msg_t *m = mk("t", payload);
    assert_int_equal(mqr__queue_tx_publish(e, tx, q, m, NULL), rc);
    mqr_msg_unref(m);
}

/* ---- transactions ---- */

static void test_tx_commit_is_atomic(void **state)
{
    mqr_engine_t *e = engine();
    mqr_queue_t *a = queue(e, "a"), *b = queue(e, "b");
    rec_t ra = {0}, rb = {0};
    assert_int_equal(mqr__queue_consume(a, on_delivery, &ra, 0, NULL), 0);
    assert_int_equal(mqr__queue_consume(b, on_delivery, &rb, 0, NULL), 0);
    uint64_t tx;
    assert_int_equal(mqr__queue_tx_begin(e, 1000, &tx), 0);
    assert_true(tx != 0);
    tx_pub(e, tx, a, "a1", 0);
    tx_pub(e, tx, b, "b1", 0);
    tx_pub(e, tx, a, "a2", 0);
    spin(e, 20);
    /* nothing visible before commit, but counted against the queues */
    assert_int_equal(ra.calls + rb.calls, 0);
    mqr_queue_stats_t s;
    assert_int_equal(mqr__queue_stats(a, &s), 0);
    assert_int_equal(s.pending_tx, 2);
    assert_int_equal(s.depth, 0);
    assert_int_equal(s.published, 0);
    assert_true(s.bytes > 0);
    mqr_queue_delivery_t d;
    assert_int_equal(mqr__queue_receive(a, 1, &d), 0); /* pull sees nothing either */
    assert_int_equal(mqr__queue_tx_commit(e, tx), 0);
    assert_int_equal(ra.calls + rb.calls, 0); /* visible, delivered on the loop */
    turns(e, 3);
    assert_int_equal(ra.calls, 2);
    assert_int_equal(rb.calls, 1);
    assert_string_equal(ra.got[0], "a1");
    assert_string_equal(ra.got[1], "a2");
    assert_int_equal(mqr__queue_stats(a, &s), 0);
    assert_int_equal(s.published, 2);
    assert_int_equal(s.pending_tx, 0);
    /* gone after commit */
    assert_int_equal(mqr__queue_tx_commit(e, tx), MQR_ETXNOENT);
    assert_int_equal(mqr__queue_tx_rollback(e, tx), MQR_ETXNOENT);
    tx_pub(e, tx, a, "late", MQR_ETXNOENT);
    mqr_queues_health_t h;
    mqr__queues_health(e, &h);
    assert_int_equal(h.tx_committed, 1);
    assert_int_equal(h.tx_open, 0);
    mqr_engine_free(e);
}

static void test_tx_rollback_and_timeout(void **state)
{
    mqr_engine_t *e = engine();
    mqr_queue_t *a = queue(e, "a");
    rec_t ra = {0};
    assert_int_equal(mqr__queue_consume(a, on_delivery, &ra, 0, NULL), 0);
    uint64_t tx;
    assert_int_equal(mqr__queue_tx_begin(e, 0, &tx), 0);
    tx_pub(e, tx, a, "x", 0);
    tx_pub(e, tx, a, "y", 0);
    assert_int_equal(mqr__queue_tx_rollback(e, tx), 0);
    turns(e, 3);
    assert_int_equal(ra.calls, 0);
    mqr_queue_stats_t s;
    assert_int_equal(mqr__queue_stats(a, &s), 0);
    assert_int_equal(s.bytes, 0);
    assert_int_equal(s.pending_tx, 0);
    assert_int_equal(mqr__queue_tx_commit(e, tx), MQR_ETXNOENT);

    /* not committed in time: rolled back, and a late commit is told so once */
    uint64_t t2, t3;
    assert_int_equal(mqr__queue_tx_begin(e, 20, &t2), 0);
    assert_int_equal(mqr__queue_tx_begin(e, 5000, &t3), 0);
    tx_pub(e, t2, a, "slow", 0);
    tx_pub(e, t3, a, "fine", 0);
    spin(e, 60);
    assert_int_equal(ra.calls, 0);
    mqr_queues_health_t h;
    mqr__queues_health(e, &h);
    assert_int_equal(h.tx_timed_out, 1);
    assert_int_equal(h.tx_open, 1);
    assert_int_equal(h.tx_rolled_back, 1);
    assert_int_equal(mqr__queue_stats(a, &s), 0);
    assert_int_equal(s.pending_tx, 1);
    tx_pub(e, t2, a, "more", MQR_ETXTIMEOUT);
    assert_int_equal(mqr__queue_tx_commit(e, t2), MQR_ETXNOENT);
    assert_int_equal(mqr__queue_tx_commit(e, t3), 0);
    turns(e, 3);
    assert_int_equal(ra.calls, 1);
    assert_string_equal(ra.got[0], "fine");

    /* a refused publish inside a transaction leaves it open and usable */
    mqr_queue_config_t c;
    mqr__queue_config_init(&c);
    c.name = "tiny";
    c.max_messages = 1;
    mqr_queue_t *tiny;
    assert_int_equal(mqr__queue_new(e, &c, &tiny), 0);
    uint64_t t4;
    assert_int_equal(mqr__queue_tx_begin(e, 0, &t4), 0);
    tx_pub(e, t4, tiny, "1", 0);
    tx_pub(e, t4, tiny, "2", MQR_EFULL);
    tx_pub(e, t4, a, "3", 0);
    assert_int_equal(mqr__queue_tx_commit(e, t4), 0);
    assert_int_equal(mqr__queue_stats(tiny, &s), 0);
    assert_int_equal(s.depth, 1);
    assert_int_equal(s.refused_full, 1);
    /* an open transaction is rolled back when the engine goes */
    uint64_t t5;
    assert_int_equal(mqr__queue_tx_begin(e, 0, &t5), 0);
    tx_pub(e, t5, a, "left", 0);
    mqr_engine_free(e);
}

/* ---- pub/sub ---- */

typedef struct {
    rec_t r;
    mqr_queue_sub_t *self;
    bool close_self;
} subrec_t;

static void on_sub(void *arg, mqr_queue_sub_t *sub, mqr_msg_t *msg)
{
    subrec_t *s = arg;
    note(&s->r, msg);
    if (s->close_self) mqr__queue_sub_close(sub);
}

static void test_pubsub_bounded_buffers(void **state)
{
    mqr_engine_t *e = engine();
    subrec_t newest = {0}, oldest = {0}, roomy = {0}, other = {0};
    mqr_queue_sub_config_t drop_new = {.max_buffered = 4};
    mqr_queue_sub_config_t drop_old = {.max_buffered = 4, .drop_oldest = true};
    assert_int_equal(mqr__queue_sub_new(e, "s/#", &drop_new, on_sub, &newest, &newest.self), 0);
    assert_int_equal(mqr__queue_sub_new(e, "s/+", &drop_old, on_sub, &oldest, &oldest.self), 0);
    assert_int_equal(mqr__queue_sub_new(e, "s/#", NULL, on_sub, &roomy, &roomy.self), 0);
    assert_int_equal(mqr__queue_sub_new(e, "other", NULL, on_sub, &other, &other.self), 0);
    for (int i = 0; i < 10; i++) {
        char p[8];
        snprintf(p, sizeof p, "%d", i);
        assert_int_equal(mqr_publish(e, "s/x", p, strlen(p), 0, 0), 0);
    }
    /* buffered, not called inside the publisher */
    assert_int_equal(newest.r.calls + oldest.r.calls + roomy.r.calls, 0);
    mqr_queue_sub_stats_t st;
    mqr__queue_sub_stats(newest.self, &st);
    assert_int_equal(st.buffered, 4);
    assert_int_equal(st.dropped, 6);
    assert_true(st.bytes > 0);
    turns(e, 3);
    assert_int_equal(newest.r.calls, 4);
    for (int i = 0; i < 4; i++) {
        char p[8];
        snprintf(p, sizeof p, "%d", i);
        assert_string_equal(newest.r.got[i], p); /* kept the first four */
    }
    assert_int_equal(oldest.r.calls, 4);
    for (int i = 0; i < 4; i++) {
        char p[8];
        snprintf(p, sizeof p, "%d", i + 6);
        assert_string_equal(oldest.r.got[i], p); /* kept the last four */
    }
    assert_int_equal(roomy.r.calls, 10);
    assert_int_equal(other.r.calls, 0);
    mqr__queue_sub_stats(oldest.self, &st);
    assert_int_equal(st.received, 10);
    assert_int_equal(st.delivered, 4);
    assert_int_equal(st.dropped, 6);
    assert_int_equal(st.buffered, 0);
    assert_int_equal(st.bytes, 0);
    mqr_queues_health_t h;
    mqr__queues_health(e, &h);
    assert_int_equal(h.subs, 4);
    assert_int_equal(h.sub_dropped, 12);
    assert_int_equal(h.bytes, 0);

    /* a subscriber that closes itself from its callback */
    roomy.close_self = true;
    mqr_publish(e, "s/y", "a", 1, 0, 0);
    mqr_publish(e, "s/y", "b", 1, 0, 0);
    turns(e, 3);
    assert_int_equal(roomy.r.calls, 11);
    assert_int_equal(newest.r.calls, 6);
    mqr__queues_health(e, &h);
    assert_int_equal(h.subs, 3);
    /* closing one with messages buffered releases them */
    mqr_publish(e, "s/z", "c", 1, 0, 0);
    mqr__queue_sub_close(newest.self);
    turns(e, 3);
    assert_int_equal(newest.r.calls, 6);
    assert_int_equal(oldest.r.calls, 7);
    /* a shared group hands each message to one member */
    subrec_t g1 = {0}, g2 = {0};
    assert_int_equal(mqr__queue_sub_new(e, "$share/g/jobs", NULL, on_sub, &g1, &g1.self), 0);
    assert_int_equal(mqr__queue_sub_new(e, "$share/g/jobs", NULL, on_sub, &g2, &g2.self), 0);
    for (int i = 0; i < 4; i++)
        mqr_publish(e, "jobs", "j", 1, 0, 0);
    turns(e, 3);
    assert_int_equal(g1.r.calls + g2.r.calls, 4);
    assert_int_equal(g1.r.calls, 2);
    mqr_queue_sub_t *bad;
    assert_int_equal(mqr__queue_sub_new(e, "a/#/b", NULL, on_sub, &g1, &bad), MQR_ETOPIC);
    /* one still has a message buffered when the engine goes */
    mqr_publish(e, "other", "o", 1, 0, 0);
    mqr_engine_free(e);
}

/* the engine-wide memory limit bounds subscriber buffers too */
static void test_pubsub_memory_limit(void **state)
{
    mqr_engine_t *e = engine();
    subrec_t s = {0};
    assert_int_equal(mqr__queue_sub_new(e, "m", NULL, on_sub, &s, &s.self), 0);
    assert_int_equal(mqr_publish(e, "m", "1234", 4, 0, 0), 0);
    mqr_queue_sub_stats_t st;
    mqr__queue_sub_stats(s.self, &st);
    size_t one = st.bytes;
    assert_int_equal(mqr__queues_set_max_bytes(e, 2 * one), 0);
    assert_int_equal(mqr_publish(e, "m", "1234", 4, 0, 0), 0);
    assert_int_equal(mqr_publish(e, "m", "1234", 4, 0, 0), 0);
    mqr__queue_sub_stats(s.self, &st);
    assert_int_equal(st.buffered, 2);
    assert_int_equal(st.dropped, 1);
    turns(e, 3);
    assert_int_equal(s.r.calls, 2);
    mqr_engine_free(e);
}

/* What a reload does with a subscriber (bindings/l_subscribe.c): rebind
 * keeps it (entry, buffer, counters) for another callback; take and put
 * move waiting messages to another one, in order, within its limits. */
static void test_pubsub_rebind_take_put(void **state)
{
    mqr_engine_t *e = engine();
    subrec_t a = {0}, a2 = {0}, b = {0};
    mqr_queue_sub_config_t small = {.max_buffered = 3};
    assert_int_equal(mqr__queue_sub_new(e, "k/#", NULL, on_sub, &a, &a.self), 0);
    assert_int_equal(mqr__queue_sub_new(e, "other", &small, on_sub, &b, &b.self), 0);
    for (int i = 0; i < 6; i++) {
        char p[8];
        snprintf(p, sizeof p, "%d", i);
        assert_int_equal(mqr_publish(e, "k/x", p, strlen(p), 0, 0), 0);
    }
    /* rebound before any dispatch: the new callback gets all six, in order */
    mqr__queue_sub_rebind(a.self, on_sub, &a2);
    turns(e, 3);
    assert_int_equal(a.r.calls, 0);
    assert_int_equal(a2.r.calls, 6);
    assert_string_equal(a2.r.got[0], "0");
    assert_string_equal(a2.r.got[5], "5");
    mqr_queue_sub_stats_t st;
    mqr__queue_sub_stats(a.self, &st);
    assert_int_equal(st.received, 6);
    assert_int_equal(st.delivered, 6);

    /* take the oldest four from a into b: three fit, the fourth is EFULL
     * with nothing counted, and stays the caller's */
    for (int i = 0; i < 4; i++) {
        char p[8];
        snprintf(p, sizeof p, "m%d", i);
        assert_int_equal(mqr_publish(e, "k/y", p, strlen(p), 0, 0), 0);
    }
    for (int i = 0; i < 3; i++) {
        mqr_msg_t *m = mqr__queue_sub_take(a.self);
        assert_non_null(m);
        assert_int_equal(mqr__queue_sub_put(b.self, m), 0);
        mqr_msg_unref(m);
    }
    mqr_msg_t *m = mqr__queue_sub_take(a.self);
    assert_non_null(m);
    assert_int_equal(mqr__queue_sub_put(b.self, m), MQR_EFULL);
    mqr_msg_unref(m);
    assert_null(mqr__queue_sub_take(a.self));
    mqr__queue_sub_stats(b.self, &st);
    assert_int_equal(st.received, 3);
    assert_int_equal(st.buffered, 3);
    assert_int_equal(st.dropped, 0);
    mqr_queues_health_t h;
    mqr__queues_health(e, &h);
    assert_int_equal(h.bytes, st.bytes); /* a's share went with the messages */
    turns(e, 3);
    assert_int_equal(b.r.calls, 3);
    assert_string_equal(b.r.got[0], "m0");
    assert_string_equal(b.r.got[2], "m2");
    assert_int_equal(a2.r.calls, 6);
    mqr_engine_free(e);
}

/* ---- routing into a queue ---- */

static void test_bind(void **state)
{
    mqr_engine_t *e = engine();
    mqr_queue_t *q = queue(e, "jobs");
    mqr_queue_pub_opts_t hi = {.priority = MQR_PRIO_HIGH};
    assert_int_equal(mqr__queue_bind(q, "jobs/urgent/#", &hi), 0);
    assert_int_equal(mqr__queue_bind(q, "jobs/+", NULL), 0);
    assert_int_equal(mqr__queue_bind(q, "jobs/#/x", NULL), MQR_ETOPIC);
    assert_int_equal(mqr_publish(e, "jobs/1", "low", 3, 1, 0), 0);
    assert_int_equal(mqr_publish(e, "jobs/urgent/2", "high", 4, 1, 0), 0);
    assert_int_equal(mqr_publish(e, "elsewhere", "no", 2, 1, 0), 0);
    mqr_queue_delivery_t d[4];
    assert_int_equal(mqr__queue_receive(q, 4, d), 2);
    assert_string_equal(mqr_msg_topic(d[0].msg, NULL), "jobs/urgent/2");
    assert_int_equal(d[0].priority, MQR_PRIO_HIGH);
    assert_string_equal(mqr_msg_topic(d[1].msg, NULL), "jobs/1");
    /* closing the queue removes its bindings from the router */
    mqr__queue_close(q);
    assert_int_equal(mqr_publish(e, "jobs/3", "gone", 4, 1, 0), 0);
    assert_int_equal(mqr__engine_router(e)->unrouted, 2);
    mqr_engine_free(e);
}

/* ---- the durability seam ---- */

typedef struct {
    char log[64][64];
    int n;
    int fail_stored; /* refuse the n-th stored call (1-based), 0 = never */
    int stored_calls;
} ops_rec_t;

static void logf_(ops_rec_t *r, const char *what, uint64_t id)
{
    if (r->n < 64)
        snprintf(r->log[r->n++], sizeof r->log[0], "%s %llu", what, (unsigned long long)id);
}

static int op_stored(void *ctx, mqr_queue_t *q, uint64_t id, const mqr_msg_t *msg, int prio,
                     uint64_t exp)
{
    ops_rec_t *r = ctx;
    if (++r->stored_calls == r->fail_stored) return MQR_ESTORE;
    logf_(r, exp ? "stored+ttl" : "stored", id);
    return 0;
}

static void op_acked(void *ctx, mqr_queue_t *q, uint64_t id)
{
    logf_(ctx, "acked", id);
}

static void op_dead(void *ctx, mqr_queue_t *q, uint64_t id, int reason, unsigned attempts)
{
    char what[32];
    snprintf(what, sizeof what, "dead%d/%u", reason, attempts);
    logf_(ctx, what, id);
}

static void op_removed(void *ctx, mqr_queue_t *q, uint64_t id)
{
    logf_(ctx, "removed", id);
}

static const mqr_queue_store_ops_t ops = {
    .stored = op_stored, .acked = op_acked, .dead = op_dead, .removed = op_removed};

static void test_store_ops(void **state)
{
    mqr_engine_t *e = engine();
    ops_rec_t r = {0};
    mqr__queues_set_store(mqr__engine_queues(e), &ops, NULL, &r);
    mqr_queue_config_t c;
    mqr__queue_config_init(&c);
    c.name = "durable";
    c.durable = true;
    c.max_attempts = 1;
    mqr_queue_t *q;
    assert_int_equal(mqr__queue_new(e, &c, &q), 0);
    c.name = "volatile";
    c.durable = false;
    mqr_queue_t *v;
    assert_int_equal(mqr__queue_new(e, &c, &v), 0);
    mqr_msg_t *m = mk("t", "x");
    uint64_t id1, id2, id3;
    assert_int_equal(mqr__queue_publish(q, m, NULL, &id1), 0);
    mqr_queue_pub_opts_t ttl = {.priority = 2, .ttl_ms = 10};
    assert_int_equal(mqr__queue_publish(q, m, &ttl, &id2), 0);
    assert_int_equal(mqr__queue_publish(q, m, NULL, &id3), 0);
    assert_int_equal(mqr__queue_publish(v, m, NULL, NULL), 0); /* no ops */
    mqr_queue_delivery_t d[2];
    assert_int_equal(mqr__queue_receive(q, 1, d), 1);
    assert_int_equal(mqr__queue_ack(q, id1), 0);
    spin(e, 30); /* id2 expires */
    assert_int_equal(mqr__queue_receive(q, 1, d), 1);
    assert_int_equal(mqr__queue_reject(q, id3), 0);
    assert_int_equal(mqr__queue_redrive(q, 0), 1); /* id3 comes back as id3 + 1 */
    /* a store refusal refuses the publish, and nothing is enqueued */
    r.fail_stored = r.stored_calls + 1;
    assert_int_equal(mqr__queue_publish(q, m, NULL, NULL), MQR_ESTORE);
    mqr_queue_stats_t s;
    assert_int_equal(mqr__queue_stats(q, &s), 0);
    assert_int_equal(s.depth, 1);
    /* a transaction whose second store write fails is rolled back whole */
    uint64_t tx;
    assert_int_equal(mqr__queue_tx_begin(e, 0, &tx), 0);
    assert_int_equal(mqr__queue_tx_publish(e, tx, q, m, NULL), 0);
    assert_int_equal(mqr__queue_tx_publish(e, tx, q, m, NULL), 0);
    r.fail_stored = r.stored_calls + 2;
    assert_int_equal(mqr__queue_tx_commit(e, tx), MQR_ESTORE);
    assert_int_equal(mqr__queue_stats(q, &s), 0);
    assert_int_equal(s.depth, 1);
    assert_int_equal(s.pending_tx, 0);
    mqr_msg_unref(m);
    char want[10][64];
    int k = 0;
    snprintf(want[k++], 64, "stored %llu", (unsigned long long)id1);
    snprintf(want[k++], 64, "stored+ttl %llu", (unsigned long long)id2);
    snprintf(want[k++], 64, "stored %llu", (unsigned long long)id3);
    snprintf(want[k++], 64, "acked %llu", (unsigned long long)id1);
    snprintf(want[k++], 64, "removed %llu", (unsigned long long)id2);
    snprintf(want[k++], 64, "dead%d/1 %llu", MQR_QREASON_REJECTED, (unsigned long long)id3);
    snprintf(want[k++], 64, "stored %llu", (unsigned long long)id3 + 1);
    snprintf(want[k++], 64, "removed %llu", (unsigned long long)id3);
    /* the failed publish took id3 + 2; the transaction's first write: */
    snprintf(want[k++], 64, "stored %llu", (unsigned long long)id3 + 3);
    snprintf(want[k++], 64, "removed %llu", (unsigned long long)id3 + 3);
    assert_int_equal(r.n, k);
    for (int i = 0; i < k; i++)
        assert_string_equal(r.log[i], want[i]);
    /* closing is not deleting: no op */
    mqr__queue_close(q);
    assert_int_equal(r.n, k);
    mqr_engine_free(e);
}

static int count_queue(void *arg, mqr_queue_t *q)
{
    (*(int *)arg)++;
    return strcmp(mqr__queue_name(q), "stop") == 0 ? 7 : 0;
}

static void test_restore(void **state)
{
    mqr_engine_t *e = engine();
    int n = 0;
    assert_int_equal(mqr__queues_foreach(e, count_queue, &n), 0);
    assert_int_equal(n, 0);
    queue(e, "one");
    queue(e, "two");
    assert_int_equal(mqr__queues_foreach(e, count_queue, &n), 0);
    assert_int_equal(n, 2);
    queue(e, "stop");
    n = 0;
    assert_int_equal(mqr__queues_foreach(e, count_queue, &n), 7);
    assert_int_equal(n, 1); /* newest first */
    mqr_queue_t *q = queue(e, "restored");
    mqr_msg_t *m1 = mk("t", "one"), *m2 = mk("t", "two"), *m3 = mk("t", "old");
    assert_int_equal(mqr__queue_restore(q, 41, m1, MQR_PRIO_LOW, 0, 2), 0);
    assert_int_equal(mqr__queue_restore(q, 7, m2, MQR_PRIO_HIGH, mqr__now_ms() + 60000, 0), 0);
    assert_int_equal(mqr__queue_restore(q, 9, m3, MQR_PRIO_HIGH, mqr__now_ms() - 1, 0), 0);
    assert_int_equal(mqr__queue_restore(q, 0, m3, MQR_PRIO_HIGH, 0, 0), MQR_EINVAL);
    mqr_queue_delivery_t d[3];
    assert_int_equal(mqr__queue_receive(q, 3, d), 2);
    assert_int_equal(d[0].id, 7);
    assert_int_equal(d[1].id, 41);
    assert_int_equal(d[1].attempts, 3); /* two made before the restart */
    uint64_t id;
    assert_int_equal(mqr__queue_publish(q, m1, NULL, &id), 0);
    assert_int_equal(id, 42);
    mqr_queue_stats_t s;
    assert_int_equal(mqr__queue_stats(q, &s), 0);
    assert_int_equal(s.expired, 1);

    /* dead letters come back into the DLQ as they were */
    mqr_queue_dead_t dead = {.id = 100,
                             .msg = m3,
                             .reason = MQR_QREASON_MAX_ATTEMPTS,
                             .attempts = 5,
                             .priority = MQR_PRIO_LOW,
                             .dead_at_ms = 1234};
    assert_int_equal(mqr__queue_restore_dead(q, &dead), 0);
    dead.reason = 9;
    assert_int_equal(mqr__queue_restore_dead(q, &dead), MQR_EINVAL);
    mqr_queue_dead_t got[2];
    assert_int_equal(mqr__queue_dlq_list(q, 0, 2, got), 1);
    assert_int_equal(got[0].id, 100);
    assert_int_equal(got[0].attempts, 5);
    assert_int_equal(got[0].reason, MQR_QREASON_MAX_ATTEMPTS);
    assert_int_equal(got[0].dead_at_ms, 1234);
    mqr_queue_dlq_stats_t ds;
    assert_int_equal(mqr__queue_dlq_stats(q, &ds), 0);
    assert_int_equal(ds.depth, 1);
    assert_int_equal(ds.depth_by_reason[MQR_QREASON_MAX_ATTEMPTS], 1);
    assert_int_equal(ds.total, 0);
    assert_int_equal(mqr__queue_publish(q, m1, NULL, &id), 0);
    assert_int_equal(id, 101);
    assert_int_equal(mqr__queue_redrive(q, 0), 1);
    assert_int_equal(mqr__queue_stats(q, &s), 0);
    assert_int_equal(s.ready, 3); /* 42, 101 and the re-driven one */
    assert_int_equal(s.dead, 0);
    mqr_msg_unref(m1);
    mqr_msg_unref(m2);
    mqr_msg_unref(m3);
    mqr_engine_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tx_commit_is_atomic),
        cmocka_unit_test(test_tx_rollback_and_timeout),
        cmocka_unit_test(test_pubsub_bounded_buffers),
        cmocka_unit_test(test_pubsub_memory_limit),
        cmocka_unit_test(test_pubsub_rebind_take_put),
        cmocka_unit_test(test_bind),
        cmocka_unit_test(test_store_ops),
        cmocka_unit_test(test_restore),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
