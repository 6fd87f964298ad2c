/*
 * queue_pubsub.c — topic-style pub/sub inside the process, and routing
 * messages into work queues.
 *
 * A subscriber is an entry in the engine's one subscription trie (so
 * wildcards and $share groups work as for every other subscriber) with a
 * bounded ring of message references: the router's deliver only appends to
 * the ring, and the set's dispatch hands the messages to the callback on a
 * later loop turn. Full ring (max_buffered, or the engine's queue memory
 * limit): the new message is dropped, or the oldest with drop_oldest; both
 * counted. A reload keeps a subscriber for the new rules (rebind) or moves
 * what waits in it to another (take, put): nothing waiting is dropped by
 * the swap itself. A binding (mqr__queue_bind) is a trie entry that publishes each
 * matching message into a queue.
 */
#include "queue_impl.h"
#include "topic.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define DEF_SUB_MAX 1000u
#define DEF_SUB_BATCH 256u

struct mqr_queue_sub {
    mqr_subscriber_t base;
    mqr_queues_t *set;
    mqr_queue_sub_t *next, *prev; /* set->subs */
    mqr_queue_sub_t *pend_next;
    bool pending;
    bool closed;
    unsigned busy;
    mqr_trie_entry_t *entry;
    mqr_queue_sub_fn fn;
    void *arg;
    mqr_queue_sub_config_t cfg;
    mqr_msg_t **ring;
    size_t cap, head, count;
    mqr_queue_sub_stats_t st;
};

struct mqr_qbind {
    mqr_subscriber_t base;
    mqr_qbind_t *next;
    mqr_queue_t *q;
    mqr_trie_entry_t *entry;
    mqr_queue_pub_opts_t opts;
};

static size_t sub_bytes(const mqr_msg_t *m)
{
    return sizeof(mqr_msg_t *) + m->topic_len + m->payload_len + m->props_len;
}

mqr_queue_sub_t *mqr__q_sub_next(mqr_queue_sub_t *sub)
{
    return sub->next;
}

static mqr_msg_t *ring_pop(mqr_queue_sub_t *sub)
{
    mqr_msg_t *m = sub->ring[sub->head];
    sub->head = (sub->head + 1) % sub->cap;
    sub->count--;
    size_t b = sub_bytes(m);
    sub->st.bytes -= b;
    sub->set->bytes -= b;
    return m;
}

static int ring_grow(mqr_queue_sub_t *sub)
{
    size_t cap = sub->cap ? sub->cap * 2 : 16;
    if (cap > sub->cfg.max_buffered) cap = sub->cfg.max_buffered;
    mqr_msg_t **r = malloc(cap * sizeof *r);
    if (!r) return MQR_ENOMEM;
    for (size_t i = 0; i < sub->count; i++)
        r[i] = sub->ring[(sub->head + i) % sub->cap];
    free(sub->ring);
    sub->ring = r;
    sub->cap = cap;
    sub->head = 0;
    return 0;
}

static void sub_schedule(mqr_queue_sub_t *sub)
{
    if (sub->pending) return;
    mqr_queues_t *s = sub->set;
    sub->pending = true;
    sub->pend_next = s->pend_s;
    s->pend_s = sub;
    mqr__q_signal(s);
}

/* Appends msg (b bytes accounted) after what waits; the caller checked the
 * limits. */
static int ring_push(mqr_queue_sub_t *sub, mqr_msg_t *msg, size_t b)
{
    if (sub->count == sub->cap && ring_grow(sub) < 0) return MQR_ENOMEM;
    mqr_msg_ref(msg);
    sub->ring[(sub->head + sub->count) % sub->cap] = msg;
    sub->count++;
    sub->st.bytes += b;
    sub->set->bytes += b;
    sub_schedule(sub);
    return 0;
}

static int sub_deliver(mqr_subscriber_t *self, mqr_msg_t *msg, const mqr_trie_entry_t *entry)
{
    mqr_queue_sub_t *sub = (mqr_queue_sub_t *)self;
    if (sub->closed) return 0;
    mqr_queues_t *s = sub->set;
    sub->st.received++;
    size_t b = sub_bytes(msg);
    while (sub->count >= sub->cfg.max_buffered || s->bytes + b > s->max_bytes) {
        if (!sub->cfg.drop_oldest || sub->count == 0) {
            sub->st.dropped++;
            return 0; /* a full buffer drops by its documented policy */
        }
        mqr_msg_unref(ring_pop(sub));
        sub->st.dropped++;
    }
    if (ring_push(sub, msg, b) < 0) {
        sub->st.dropped++;
        return MQR_ENOMEM; /* no policy says so: the router counts it */
    }
    return 0;
}

int mqr__queue_sub_new(mqr_engine_t *e, const char *filter, const mqr_queue_sub_config_t *cfg,
                       mqr_queue_sub_fn fn, void *arg, mqr_queue_sub_t **out)
{
    if (out) *out = NULL;
    mqr_queues_t *s = mqr__engine_queues(e);
    if (!s) return MQR_ENOTINIT;
    if (!filter || !fn || !out) return MQR_EINVAL;
    size_t len = strlen(filter);
    mqr_topic_filter_t tf;
    int rc = mqr__topic_filter_parse(filter, len, &tf, NULL);
    if (rc < 0) return rc;
    mqr_queue_sub_t *sub = calloc(1, sizeof *sub);
    if (!sub) return MQR_ENOMEM;
    sub->base.deliver = sub_deliver;
    sub->set = s;
    sub->fn = fn;
    sub->arg = arg;
    if (cfg) sub->cfg = *cfg;
    if (!sub->cfg.max_buffered) sub->cfg.max_buffered = DEF_SUB_MAX;
    if (!sub->cfg.batch) sub->cfg.batch = DEF_SUB_BATCH;
    mqr_sub_opts_t opts = {.qos = 2};
    if (tf.group)
        sub->entry = mqr__trie_add_shared(&s->router->trie, tf.group, tf.group_len, tf.filter,
                                          tf.filter_len, &sub->base, &opts);
    else
        sub->entry = mqr__router_add(s->router, filter, len, &sub->base, &opts);
    if (!sub->entry) {
        free(sub);
        return MQR_ENOMEM;
    }
    sub->next = s->subs;
    if (s->subs) s->subs->prev = sub;
    s->subs = sub;
    s->nsubs++;
    *out = sub;
    return 0;
}

void mqr__queue_sub_close(mqr_queue_sub_t *sub)
{
    if (!sub || sub->closed) return;
    mqr_queues_t *s = sub->set;
    sub->closed = true;
    mqr__router_remove(s->router, sub->entry);
    while (sub->count)
        mqr_msg_unref(ring_pop(sub));
    free(sub->ring);
    sub->ring = NULL;
    sub->cap = 0;
    if (sub->prev)
        sub->prev->next = sub->next;
    else
        s->subs = sub->next;
    if (sub->next) sub->next->prev = sub->prev;
    s->nsubs--;
    s->sub_dropped_closed += sub->st.dropped;
    if (!sub->pending && !sub->busy) free(sub);
}

void mqr__queue_sub_rebind(mqr_queue_sub_t *sub, mqr_queue_sub_fn fn, void *arg)
{
    assert(sub && fn && !sub->closed);
    sub->fn = fn;
    sub->arg = arg;
}

mqr_msg_t *mqr__queue_sub_take(mqr_queue_sub_t *sub)
{
    return sub->count ? ring_pop(sub) : NULL;
}

int mqr__queue_sub_put(mqr_queue_sub_t *sub, mqr_msg_t *msg)
{
    if (sub->closed) return MQR_ECLOSED;
    mqr_queues_t *s = sub->set;
    size_t b = sub_bytes(msg);
    if (sub->count >= sub->cfg.max_buffered || s->bytes + b > s->max_bytes) return MQR_EFULL;
    int rc = ring_push(sub, msg, b);
    if (rc == 0) sub->st.received++;
    return rc;
}

void mqr__queue_sub_foreach(const mqr_queue_sub_t *sub, void (*fn)(void *arg, mqr_msg_t *msg),
                            void *arg)
{
    for (size_t i = 0; i < sub->count; i++)
        fn(arg, sub->ring[(sub->head + i) % sub->cap]);
}

void mqr__queue_sub_stats(const mqr_queue_sub_t *sub, mqr_queue_sub_stats_t *out)
{
    *out = sub->st;
    out->buffered = sub->count;
}

void mqr__q_subs_dispatch(mqr_queues_t *s)
{
    mqr_queue_sub_t *list = s->pend_s;
    s->pend_s = NULL;
    while (list) {
        mqr_queue_sub_t *sub = list;
        list = sub->pend_next;
        sub->pending = false;
        for (unsigned n = 0; n < sub->cfg.batch && sub->count && !sub->closed; n++) {
            mqr_msg_t *m = ring_pop(sub);
            sub->st.delivered++;
            sub->busy++;
            sub->fn(sub->arg, sub, m);
            sub->busy--;
            mqr_msg_unref(m);
        }
        if (sub->closed) {
            if (!sub->pending && !sub->busy) free(sub);
        } else if (sub->count) {
            sub_schedule(sub);
        }
    }
}

void mqr__q_subs_free_all(mqr_queues_t *s)
{
    while (s->subs)
        mqr__queue_sub_close(s->subs);
    while (s->pend_s) { /* closed while waiting for a dispatch */
        mqr_queue_sub_t *sub = s->pend_s;
        s->pend_s = sub->pend_next;
        free(sub);
    }
}

/* ---- bindings: router -> queue ---- */

static int bind_deliver(mqr_subscriber_t *self, mqr_msg_t *msg, const mqr_trie_entry_t *entry)
{
    mqr_qbind_t *b = (mqr_qbind_t *)self;
    /* the queue counts refusals (refused_full, refused_memory) and notes
     * its outcome in the publish context itself, as it does when a Lua
     * route puts the message there: returning it too would count it twice */
    if (!mqr__queue_replaying(b->q, msg)) /* a replay leaves its own queue as it is */
        (void)mqr__queue_publish(b->q, msg, &b->opts, NULL);
    return 0;
}

int mqr__queue_bind(mqr_queue_t *q, const char *filter, const mqr_queue_pub_opts_t *opts)
{
    if (q->closed) return MQR_ECLOSED;
    if (!filter) return MQR_EINVAL;
    mqr_queue_pub_opts_t o = MQR_QUEUE_PUB_OPTS_INIT;
    if (opts) o = *opts;
    if ((unsigned)o.priority >= MQR_PRIO_LEVELS) return MQR_EINVAL;
    size_t len = strlen(filter);
    mqr_topic_filter_t tf;
    int rc = mqr__topic_filter_parse(filter, len, &tf, NULL);
    if (rc < 0) return rc;
    mqr_qbind_t *b = calloc(1, sizeof *b);
    if (!b) return MQR_ENOMEM;
    b->base.deliver = bind_deliver;
    b->q = q;
    b->opts = o;
    mqr_router_t *r = q->set->router;
    mqr_sub_opts_t so = {.qos = 2};
    if (tf.group)
        b->entry = mqr__trie_add_shared(&r->trie, tf.group, tf.group_len, tf.filter, tf.filter_len,
                                        &b->base, &so);
    else
        b->entry = mqr__router_add(r, filter, len, &b->base, &so);
    if (!b->entry) {
        free(b);
        return MQR_ENOMEM;
    }
    b->next = q->binds;
    q->binds = b;
    return 0;
}

void mqr__q_binds_free(mqr_queue_t *q)
{
    while (q->binds) {
        mqr_qbind_t *b = q->binds;
        q->binds = b->next;
        mqr__router_remove(q->set->router, b->entry);
        free(b);
    }
}
