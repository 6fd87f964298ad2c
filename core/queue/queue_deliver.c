/*
 * queue_deliver.c — getting entries to consumers and back: the dispatch that
 * runs from the set's idle handle, competing consumers with prefetch, pull
 * receive, ack/nack/reject, redelivery after an ack timeout or a backoff,
 * TTL expiry, and a queue's timer.
 *
 * A consumer callback may call anything (ack, publish, cancel itself, close
 * the queue): q->busy defers the queue's teardown until the callback returns,
 * and an entry settled from inside its own delivery is only marked, then
 * finished here. Nothing in this file runs inside a publisher's call.
 */
#include "queue_impl.h"

#include <stdlib.h>

#define DISPATCH_BATCH 1024 /* deliveries per queue per loop turn */

/* ---- timer ---- */

void mqr__q_arm(mqr_queue_t *q, uint64_t at)
{
    if (at >= q->timer_at) return;
    q->timer_at = at;
    uint64_t now = mqr__q_now(q->set);
    uv_timer_start(&q->timer, mqr__q_on_timer, at > now ? at - now : 0, 0);
}

void mqr__q_rearm(mqr_queue_t *q)
{
    uint64_t at = UINT64_MAX;
    mqr_qentry_t *e;
    if ((e = mqr__q_heap_top(&q->ttl)) && e->expires_at < at) at = e->expires_at;
    if ((e = mqr__q_heap_top(&q->delayed)) && e->due < at) at = e->due;
    if ((e = q->inflight.head) && e->due < at) at = e->due;
    if (at == UINT64_MAX) {
        if (q->timer_at != UINT64_MAX) uv_timer_stop(&q->timer);
        q->timer_at = UINT64_MAX;
        return;
    }
    q->timer_at = UINT64_MAX;
    mqr__q_arm(q, at);
}

/* ---- dispatch list ---- */

void mqr__q_kick(mqr_queue_t *q)
{
    if (q->pending || !q->ready_mask || !q->nconsumers || q->closed) return;
    mqr_queues_t *s = q->set;
    q->pending = true;
    q->refs++;
    q->pend_next = s->pend_q;
    s->pend_q = q;
    mqr__q_signal(s);
}

void mqr__q_leave(mqr_queue_t *q)
{
    if (--q->busy == 0 && q->closed && !q->torn) mqr__q_teardown(q);
}

static inline void store_removed(mqr_queue_t *q, uint64_t id)
{
    mqr_queues_t *s = q->set;
    if (q->cfg.durable && s->ops && s->ops->removed) s->ops->removed(s->ops_ctx, q, id);
}

void mqr__q_expire(mqr_queue_t *q, mqr_qentry_t *e)
{
    q->st.expired++;
    if (q->cfg.dead_letter_expired) {
        mqr__q_dead_letter(q, e, MQR_QREASON_EXPIRED);
        return;
    }
    q->held--;
    store_removed(q, e->id);
    mqr__q_entry_release(q, e);
}

/* ---- settling ---- */

static void to_delayed_or_ready(mqr_queue_t *q, mqr_qentry_t *e, int64_t delay_ms)
{
    if (delay_ms > 0) {
        e->state = QE_DELAYED;
        e->due = mqr__q_now(q->set) + (uint64_t)delay_ms;
        if (mqr__q_heap_push(&q->delayed, e) == 0) {
            q->ndelayed++;
            mqr__q_arm(q, e->due);
            return;
        }
        /* no memory for the heap: redeliver now rather than lose it */
    }
    mqr__q_make_ready(q, e, true);
}

/* Off the in-flight list and map (or out of its delivery), owner released. */
static void take_inflight(mqr_queue_t *q, mqr_qentry_t *e)
{
    if (e->state == QE_INFLIGHT) {
        mqr__q_list_remove(&q->inflight, e);
        mqr__q_map_del(&q->ids, e->id);
        q->ninflight--;
    }
    mqr_queue_consumer_t *c = e->owner;
    if (c) {
        e->owner = NULL;
        bool was_full = c->prefetch && c->unacked >= c->prefetch;
        c->unacked--;
        if (was_full) mqr__q_kick(q);
    }
}

static void settle_ack(mqr_queue_t *q, mqr_qentry_t *e)
{
    q->st.acked++;
    q->held--;
    mqr_queues_t *s = q->set;
    if (q->cfg.durable && s->ops && s->ops->acked) s->ops->acked(s->ops_ctx, q, e->id);
    mqr__q_entry_release(q, e);
}

static int64_t backoff_ms(const mqr_queue_t *q, unsigned attempts)
{
    unsigned shift = attempts > 1 ? attempts - 1 : 0;
    if (shift > 40) shift = 40;
    uint64_t d = (uint64_t)q->cfg.backoff_initial_ms << shift;
    if (d > q->cfg.backoff_max_ms) d = q->cfg.backoff_max_ms;
    return (int64_t)d;
}

/* A failed delivery: another attempt, or the dead-letter queue. */
static void retry(mqr_queue_t *q, mqr_qentry_t *e, int64_t delay_ms)
{
    if (q->cfg.max_attempts != UINT32_MAX && e->attempts >= q->cfg.max_attempts) {
        mqr__q_dead_letter(q, e, MQR_QREASON_MAX_ATTEMPTS);
        return;
    }
    if (delay_ms < 0) delay_ms = backoff_ms(q, e->attempts);
    to_delayed_or_ready(q, e, delay_ms);
}

static void settle(mqr_queue_t *q, mqr_qentry_t *e, int how, int64_t delay_ms)
{
    switch (how) {
    case MQR_QUEUE_ACK:
        settle_ack(q, e);
        break;
    case MQR_QUEUE_NACK:
        q->st.nacked++;
        retry(q, e, delay_ms);
        break;
    default:
        q->st.rejected++;
        mqr__q_dead_letter(q, e, MQR_QREASON_REJECTED);
        break;
    }
}

static int to_inflight(mqr_queue_t *q, mqr_qentry_t *e, mqr_queue_consumer_t *c, uint64_t now)
{
    if (mqr__q_map_put(&q->ids, e) < 0) return MQR_ENOMEM;
    e->state = QE_INFLIGHT;
    e->owner = c;
    e->due = q->cfg.ack_timeout_ms == UINT32_MAX ? UINT64_MAX : now + q->cfg.ack_timeout_ms;
    mqr__q_list_push_back(&q->inflight, e);
    q->ninflight++;
    if (e->due != UINT64_MAX) mqr__q_arm(q, e->due);
    return 0;
}

/* Public settle: marks an entry being delivered, settles one in flight. */
static int settle_id(mqr_queue_t *q, uint64_t id, int how, int64_t delay_ms)
{
    if (q->closed) return MQR_ECLOSED;
    mqr_qentry_t *e = q->delivering;
    if (e && e->id == id && e->state == QE_DELIVERING) {
        e->state = how == MQR_QUEUE_ACK    ? QE_SETTLED_ACK
                   : how == MQR_QUEUE_NACK ? QE_SETTLED_NACK
                                           : QE_SETTLED_REJECT;
        e->due = (uint64_t)delay_ms;
        return 0;
    }
    e = mqr__q_map_get(&q->ids, id);
    if (!e) return MQR_ENOENT;
    take_inflight(q, e);
    q->busy++; /* a dead-letter hook may close q */
    settle(q, e, how, delay_ms);
    mqr__q_leave(q);
    return 0;
}

int mqr__queue_ack(mqr_queue_t *q, uint64_t id)
{
    return settle_id(q, id, MQR_QUEUE_ACK, 0);
}

int mqr__queue_nack(mqr_queue_t *q, uint64_t id, int64_t delay_ms)
{
    return settle_id(q, id, MQR_QUEUE_NACK, delay_ms);
}

int mqr__queue_reject(mqr_queue_t *q, uint64_t id)
{
    return settle_id(q, id, MQR_QUEUE_REJECT, 0);
}

int mqr__queue_replace_msg(mqr_queue_t *q, uint64_t id, mqr_msg_t *msg)
{
    if (q->closed) return MQR_ECLOSED;
    mqr_qentry_t *e = q->delivering;
    if (!(e && e->id == id && e->state == QE_DELIVERING)) {
        e = mqr__q_map_get(&q->ids, id);
        if (!e || e->state != QE_INFLIGHT) return MQR_ENOENT;
    }
    size_t was = mqr__q_entry_bytes(e->msg), now = mqr__q_entry_bytes(msg);
    q->bytes = q->bytes - was + now;
    q->set->bytes = q->set->bytes - was + now;
    mqr_msg_ref(msg);
    mqr_msg_unref(e->msg);
    e->msg = msg;
    e->replaced = 1;
    return 0;
}

int mqr__queue_ack_batch(mqr_queue_t *q, const uint64_t *ids, size_t n)
{
    if (q->closed) return MQR_ECLOSED;
    int acked = 0;
    for (size_t i = 0; i < n && !q->closed; i++)
        if (mqr__queue_ack(q, ids[i]) == 0) acked++;
    return acked;
}

/* ---- consumers ---- */

static int add_consumer(mqr_queue_t *q, mqr_queue_consume_fn fn, mqr_queue_batch_fn batch_fn,
                        void *arg, unsigned prefetch, unsigned max_batch,
                        mqr_queue_consumer_t **out)
{
    if (out) *out = NULL;
    if (q->closed) return MQR_ECLOSED;
    mqr_queue_consumer_t *c = calloc(1, sizeof *c);
    if (!c) return MQR_ENOMEM;
    c->fn = fn;
    c->batch_fn = batch_fn;
    c->max_batch = max_batch;
    c->arg = arg;
    c->prefetch = prefetch;
    if (!q->consumers) {
        c->next = c->prev = c;
        q->consumers = q->rr = c;
    } else { /* last in the ring: just before the first */
        mqr_queue_consumer_t *first = q->consumers;
        c->next = first;
        c->prev = first->prev;
        first->prev->next = c;
        first->prev = c;
    }
    q->nconsumers++;
    mqr__q_kick(q);
    if (out) *out = c;
    return 0;
}

int mqr__queue_consume(mqr_queue_t *q, mqr_queue_consume_fn fn, void *arg, unsigned prefetch,
                       mqr_queue_consumer_t **out)
{
    if (!fn && !q->closed) return MQR_EINVAL;
    return add_consumer(q, fn, NULL, arg, prefetch, 0, out);
}

int mqr__queue_consume_batch(mqr_queue_t *q, mqr_queue_batch_fn fn, void *arg, unsigned prefetch,
                             unsigned max_batch, mqr_queue_consumer_t **out)
{
    if ((!fn || max_batch == 0 || max_batch > MQR_QUEUE_MAX_BATCH) && !q->closed) return MQR_EINVAL;
    return add_consumer(q, NULL, fn, arg, prefetch, max_batch, out);
}

void mqr__q_requeue_owned(mqr_queue_t *q, mqr_queue_consumer_t *c)
{
    /* from the newest back, each to the front: the oldest ends up first */
    for (mqr_qentry_t *e = q->inflight.tail, *prev; e; e = prev) {
        prev = e->prev;
        if (e->owner != c) continue;
        take_inflight(q, e);
        mqr__q_make_ready(q, e, true);
    }
}

static void unlink_consumer(mqr_queue_t *q, mqr_queue_consumer_t *c)
{
    if (c->next == c) {
        q->consumers = q->rr = NULL;
    } else {
        c->prev->next = c->next;
        c->next->prev = c->prev;
        if (q->consumers == c) q->consumers = c->next;
        if (q->rr == c) q->rr = c->next;
    }
    q->nconsumers--;
}

static void finish_cancel(mqr_queue_t *q, mqr_queue_consumer_t *c)
{
    unlink_consumer(q, c);
    mqr__q_requeue_owned(q, c);
    free(c);
    mqr__q_kick(q);
}

void mqr__queue_cancel(mqr_queue_t *q, mqr_queue_consumer_t *c)
{
    if (!c || c->cancelled || q->torn) return;
    c->cancelled = true;
    if (c->busy || q->closed) return; /* freed after its callback / by the teardown */
    finish_cancel(q, c);
}

static mqr_queue_consumer_t *pick(mqr_queue_t *q)
{
    mqr_queue_consumer_t *c = q->rr;
    for (size_t i = 0; i < q->nconsumers; i++, c = c->next) {
        if (!c->cancelled && (!c->prefetch || c->unacked < c->prefetch)) {
            q->rr = c->next;
            return c;
        }
    }
    return NULL;
}

static void deliver(mqr_queue_t *q, mqr_queue_consumer_t *c, mqr_qentry_t *e, uint64_t now)
{
    if (e->attempts < UINT16_MAX) e->attempts++;
    if (e->attempts > 1) q->st.redelivered++;
    q->st.delivered++;
    e->state = QE_DELIVERING;
    e->owner = c;
    c->unacked++;
    q->delivering = e;
    mqr_queue_delivery_t d = {
        .id = e->id, .msg = e->msg, .attempts = e->attempts, .priority = e->prio};
    c->busy++;
    int r = c->fn(c->arg, q, &d);
    c->busy--;
    q->delivering = NULL;
    int64_t delay = -1;
    switch (e->state) {
    case QE_SETTLED_ACK:
        r = MQR_QUEUE_ACK;
        break;
    case QE_SETTLED_NACK:
        r = MQR_QUEUE_NACK;
        delay = (int64_t)e->due;
        break;
    case QE_SETTLED_REJECT:
        r = MQR_QUEUE_REJECT;
        break;
    default:
        break;
    }
    if (q->closed) { /* the teardown waits for us: this entry is ours to free */
        take_inflight(q, e);
        q->held--;
        mqr__q_entry_release(q, e);
    } else if (r == MQR_QUEUE_ACK || r == MQR_QUEUE_NACK || r == MQR_QUEUE_REJECT) {
        take_inflight(q, e);
        settle(q, e, r, delay);
    } else if (to_inflight(q, e, c, now) < 0) {
        /* cannot track it: give it back rather than lose it */
        take_inflight(q, e);
        e->attempts--;
        mqr__q_make_ready(q, e, true);
    }
    if (c->cancelled && !c->busy && !q->closed) finish_cancel(q, c);
}

/* Takes up to max ready entries into flight for c (expired ones expire on
 * the way) and fills d; returns how many. Each costs one unit of *budget. */
static size_t take_batch(mqr_queue_t *q, mqr_queue_consumer_t *c, size_t max, unsigned *budget,
                         uint64_t now, mqr_queue_delivery_t *d)
{
    size_t n = 0;
    while (n < max && *budget && q->ready_mask && !q->closed) {
        mqr_qentry_t *e = mqr__q_peek_ready(q);
        mqr__q_unready(q, e);
        (*budget)--;
        if (e->expires_at && e->expires_at <= now) {
            mqr__q_expire(q, e);
            continue;
        }
        if (e->attempts < UINT16_MAX) e->attempts++;
        if (to_inflight(q, e, c, now) < 0) {
            e->attempts--;
            mqr__q_make_ready(q, e, true);
            break;
        }
        c->unacked++;
        if (e->attempts > 1) q->st.redelivered++;
        q->st.delivered++;
        d[n++] = (mqr_queue_delivery_t){
            .id = e->id, .msg = e->msg, .attempts = e->attempts, .priority = e->prio};
    }
    return n;
}

static void deliver_batch(mqr_queue_t *q, mqr_queue_consumer_t *c, unsigned *budget, uint64_t now)
{
    mqr_queue_delivery_t d[MQR_QUEUE_MAX_BATCH];
    size_t max = c->max_batch;
    if (c->prefetch && c->prefetch - c->unacked < max) max = c->prefetch - c->unacked;
    size_t n = take_batch(q, c, max, budget, now, d);
    if (n == 0 || q->closed) return; /* a dead-letter hook may have closed q */
    c->busy++;
    int r = c->batch_fn(c->arg, q, d, n);
    c->busy--;
    if (r == MQR_QUEUE_ACK && !q->closed) {
        for (size_t i = 0; i < n && !q->closed; i++) {
            mqr_qentry_t *e = mqr__q_map_get(&q->ids, d[i].id);
            if (!e) continue; /* settled inside the call */
            take_inflight(q, e);
            settle_ack(q, e);
        }
    }
    if (c->cancelled && !c->busy && !q->closed) finish_cancel(q, c);
}

/* Delivers up to budget entries; true when ready work remains for later. */
static bool dispatch(mqr_queue_t *q, unsigned budget)
{
    q->busy++;
    uint64_t now = mqr__q_now(q->set);
    while (budget && q->ready_mask && !q->closed) {
        mqr_queue_consumer_t *c = pick(q);
        if (!c) break;
        if (c->batch_fn) {
            deliver_batch(q, c, &budget, now);
            continue;
        }
        mqr_qentry_t *e = mqr__q_peek_ready(q);
        mqr__q_unready(q, e);
        budget--;
        if (e->expires_at && e->expires_at <= now) {
            mqr__q_expire(q, e);
            continue;
        }
        deliver(q, c, e, now);
    }
    bool more = budget == 0 && !q->closed && q->ready_mask;
    mqr__q_leave(q);
    return more;
}

void mqr__q_dispatch_all(mqr_queues_t *s)
{
    mqr_queue_t *list = s->pend_q;
    s->pend_q = NULL;
    while (list) {
        mqr_queue_t *q = list;
        list = q->pend_next;
        q->pending = false;
        if (!q->closed && dispatch(q, DISPATCH_BATCH)) mqr__q_kick(q);
        mqr__queue_unref(q);
    }
    mqr__q_subs_dispatch(s);
    if (!s->pend_q && !s->pend_s && s->idle_on) {
        s->idle_on = false;
        uv_idle_stop(&s->idle);
    }
}

int mqr__queue_receive(mqr_queue_t *q, size_t max, mqr_queue_delivery_t *out)
{
    if (q->closed) return MQR_ECLOSED;
    if (!out && max) return MQR_EINVAL;
    uint64_t now = mqr__q_now(q->set);
    size_t n = 0;
    q->busy++;
    while (n < max && q->ready_mask && !q->closed) {
        mqr_qentry_t *e = mqr__q_peek_ready(q);
        mqr__q_unready(q, e);
        if (e->expires_at && e->expires_at <= now) {
            mqr__q_expire(q, e);
            continue;
        }
        if (e->attempts < UINT16_MAX) e->attempts++;
        if (to_inflight(q, e, NULL, now) < 0) {
            e->attempts--;
            mqr__q_make_ready(q, e, true);
            break;
        }
        if (e->attempts > 1) q->st.redelivered++;
        q->st.delivered++;
        out[n++] = (mqr_queue_delivery_t){
            .id = e->id, .msg = e->msg, .attempts = e->attempts, .priority = e->prio};
    }
    mqr__q_leave(q);
    return (int)n;
}

/* ---- the timer: ack timeouts, backoffs ending, TTLs passing ---- */

void mqr__q_on_timer(uv_timer_t *t)
{
    mqr_queue_t *q = t->data;
    if (q->closed) return;
    q->timer_at = UINT64_MAX;
    uint64_t now = mqr__q_now(q->set);
    q->busy++;
    mqr_qentry_t *e;
    while (!q->closed && (e = q->inflight.head) && e->due <= now) {
        take_inflight(q, e);
        q->st.ack_timeouts++;
        retry(q, e, 0);
    }
    while (!q->closed && (e = mqr__q_heap_top(&q->delayed)) && e->due <= now) {
        mqr__q_heap_remove(&q->delayed, e);
        q->ndelayed--;
        if (e->expires_at && e->expires_at <= now)
            mqr__q_expire(q, e);
        else
            mqr__q_make_ready(q, e, true);
    }
    while (!q->closed && (e = mqr__q_heap_top(&q->ttl)) && e->expires_at <= now) {
        mqr__q_unready(q, e);
        mqr__q_expire(q, e);
    }
    if (!q->closed) mqr__q_rearm(q);
    mqr__q_leave(q);
}

/* ---- teardown ---- */

void mqr__q_teardown(mqr_queue_t *q)
{
    q->torn = true;
    while (q->consumers) {
        mqr_queue_consumer_t *c = q->consumers;
        unlink_consumer(q, c);
        free(c);
    }
    for (int p = 0; p < MQR_PRIO_LEVELS; p++) {
        while (q->ready[p].head) {
            mqr_qentry_t *e = q->ready[p].head;
            mqr__q_list_remove(&q->ready[p], e);
            mqr__q_entry_release(q, e);
        }
    }
    q->ready_mask = 0;
    while (q->inflight.head) {
        mqr_qentry_t *e = q->inflight.head;
        mqr__q_list_remove(&q->inflight, e);
        mqr__q_entry_release(q, e);
    }
    for (uint32_t i = 0; i < q->delayed.n; i++)
        mqr__q_entry_release(q, q->delayed.v[i]);
    q->delayed.n = 0;
    mqr__q_dlq_release_all(q);
    mqr__q_heap_free(&q->ttl);
    mqr__q_heap_free(&q->delayed);
    mqr__q_map_free(&q->ids);
    mqr__q_dedup_free(q);
    q->held = q->nready = q->ndelayed = q->ninflight = q->ready_bytes = 0;
    mqr__q_teardown_handles(q);
}
