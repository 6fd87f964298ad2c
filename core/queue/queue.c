/*
 * queue.c — the engine's queue set and a queue's life: creating, finding and
 * closing queues, the entry pool, memory accounting and limits, publishing,
 * metrics and health. Delivery (dispatch, ack/nack, timers) is in
 * queue_deliver.c, dead letters in queue_dlq.c, transactions in queue_tx.c,
 * pub/sub subscribers and router bindings in queue_pubsub.c.
 *
 * Loop thread only. Nothing here calls a consumer: publishing only enqueues
 * and puts the queue on the dispatch list.
 */
#include "queue_impl.h"

#include "store_queue.h"

#include <stdlib.h>
#include <string.h>

#define DEF_SET_MAX_BYTES ((size_t)256 << 20)
#define DEF_ACK_TIMEOUT_MS 30000u
#define DEF_MAX_ATTEMPTS 5u
#define DEF_BACKOFF_INITIAL_MS 1000u
#define DEF_BACKOFF_MAX_MS 60000u
#define DEF_MAX_MESSAGES 100000u
#define DEF_MAX_BYTES ((size_t)64 << 20)
#define DEF_DLQ_MAX 10000u
#define MAX_NAME 200
#define POOL_CHUNK 512 /* entries per pool chunk (32 KiB) */

const char *mqr__queue_reason_name(int reason)
{
    switch (reason) {
    case MQR_QREASON_EXPIRED:
        return "expired";
    case MQR_QREASON_MAX_ATTEMPTS:
        return "max_attempts";
    case MQR_QREASON_REJECTED:
        return "rejected";
    default:
        return "unknown";
    }
}

const char *mqr__queues_status_name(int status)
{
    static const char *const names[] = {"ok", "degraded", "full", "stopped"};
    return status >= 0 && status < 4 ? names[status] : "unknown";
}

/* ---- lists, heaps, maps ---- */

void mqr__q_list_push_back(mqr_qlist_t *l, mqr_qentry_t *e)
{
    e->next = NULL;
    e->prev = l->tail;
    if (l->tail)
        l->tail->next = e;
    else
        l->head = e;
    l->tail = e;
}

void mqr__q_list_push_front(mqr_qlist_t *l, mqr_qentry_t *e)
{
    e->prev = NULL;
    e->next = l->head;
    if (l->head)
        l->head->prev = e;
    else
        l->tail = e;
    l->head = e;
}

void mqr__q_list_remove(mqr_qlist_t *l, mqr_qentry_t *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        l->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        l->tail = e->prev;
    e->next = e->prev = NULL;
}

static void heap_set(mqr_qheap_t *h, uint32_t i, mqr_qentry_t *e)
{
    h->v[i] = e;
    e->hidx = i;
}

static void heap_up(mqr_qheap_t *h, uint32_t i)
{
    mqr_qentry_t *e = h->v[i];
    uint64_t k = mqr__q_heap_key(h, e);
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (mqr__q_heap_key(h, h->v[p]) <= k) break;
        heap_set(h, i, h->v[p]);
        i = p;
    }
    heap_set(h, i, e);
}

static void heap_down(mqr_qheap_t *h, uint32_t i)
{
    mqr_qentry_t *e = h->v[i];
    uint64_t k = mqr__q_heap_key(h, e);
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && mqr__q_heap_key(h, h->v[c + 1]) < mqr__q_heap_key(h, h->v[c])) c++;
        if (k <= mqr__q_heap_key(h, h->v[c])) break;
        heap_set(h, i, h->v[c]);
        i = c;
    }
    heap_set(h, i, e);
}

int mqr__q_heap_push(mqr_qheap_t *h, mqr_qentry_t *e)
{
    if (h->n == h->cap) {
        uint32_t cap = h->cap ? h->cap * 2 : 64;
        mqr_qentry_t **v = realloc(h->v, (size_t)cap * sizeof *v);
        if (!v) return MQR_ENOMEM;
        h->v = v;
        h->cap = cap;
    }
    heap_set(h, h->n, e);
    h->n++;
    heap_up(h, h->n - 1);
    return 0;
}

void mqr__q_heap_remove(mqr_qheap_t *h, mqr_qentry_t *e)
{
    uint32_t i = e->hidx;
    if (i == MQR_QHIDX_NONE || i >= h->n || h->v[i] != e) return;
    e->hidx = MQR_QHIDX_NONE;
    h->n--;
    if (i == h->n) return;
    mqr_qentry_t *last = h->v[h->n];
    heap_set(h, i, last);
    if (i > 0 && mqr__q_heap_key(h, last) < mqr__q_heap_key(h, h->v[(i - 1) / 2]))
        heap_up(h, i);
    else
        heap_down(h, i);
}

void mqr__q_heap_free(mqr_qheap_t *h)
{
    free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}

static size_t map_slot(const mqr_qmap_t *m, uint64_t id)
{
    return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 32) & m->mask;
}

static int map_grow(mqr_qmap_t *m)
{
    size_t cap = m->slots ? (m->mask + 1) * 2 : 64;
    mqr_qentry_t **slots = calloc(cap, sizeof *slots);
    if (!slots) return MQR_ENOMEM;
    mqr_qmap_t nm = {.slots = slots, .n = 0, .mask = cap - 1};
    if (m->slots) {
        for (size_t i = 0; i <= m->mask; i++) {
            mqr_qentry_t *e = m->slots[i];
            if (!e) continue;
            size_t j = map_slot(&nm, e->id);
            while (nm.slots[j])
                j = (j + 1) & nm.mask;
            nm.slots[j] = e;
            nm.n++;
        }
        free(m->slots);
    }
    *m = nm;
    return 0;
}

int mqr__q_map_put(mqr_qmap_t *m, mqr_qentry_t *e)
{
    if (!m->slots || (m->n + 1) * 4 > (m->mask + 1) * 3) {
        int rc = map_grow(m);
        if (rc < 0) return rc;
    }
    size_t j = map_slot(m, e->id);
    while (m->slots[j])
        j = (j + 1) & m->mask;
    m->slots[j] = e;
    m->n++;
    return 0;
}

mqr_qentry_t *mqr__q_map_get(const mqr_qmap_t *m, uint64_t id)
{
    if (!m->slots) return NULL;
    for (size_t j = map_slot(m, id);; j = (j + 1) & m->mask) {
        mqr_qentry_t *e = m->slots[j];
        if (!e) return NULL;
        if (e->id == id) return e;
    }
}

void mqr__q_map_del(mqr_qmap_t *m, uint64_t id)
{
    if (!m->slots) return;
    size_t j = map_slot(m, id);
    for (;; j = (j + 1) & m->mask) {
        if (!m->slots[j]) return;
        if (m->slots[j]->id == id) break;
    }
    /* backward-shift: move later members of the probe run into the hole */
    size_t hole = j;
    for (size_t k = (j + 1) & m->mask; m->slots[k]; k = (k + 1) & m->mask) {
        size_t home = map_slot(m, m->slots[k]->id);
        /* k may move to hole when its home is not in (hole, k] cyclically */
        bool stays = hole <= k ? (home > hole && home <= k) : (home > hole || home <= k);
        if (stays) continue;
        m->slots[hole] = m->slots[k];
        hole = k;
    }
    m->slots[hole] = NULL;
    m->n--;
}

void mqr__q_map_free(mqr_qmap_t *m)
{
    free(m->slots);
    m->slots = NULL;
    m->n = m->mask = 0;
}

/* ---- entry pool ---- */

mqr_qentry_t *mqr__q_entry_alloc(mqr_queues_t *s)
{
    mqr_qentry_t *e = s->free_entries;
    if (!e) {
        if (s->nchunks == s->chunks_cap) {
            size_t cap = s->chunks_cap ? s->chunks_cap * 2 : 16;
            void **c = realloc(s->chunks, cap * sizeof *c);
            if (!c) return NULL;
            s->chunks = c;
            s->chunks_cap = cap;
        }
        mqr_qentry_t *chunk = malloc(POOL_CHUNK * sizeof *chunk);
        if (!chunk) return NULL;
        s->chunks[s->nchunks++] = chunk;
        for (size_t i = 0; i < POOL_CHUNK - 1; i++)
            chunk[i].next = &chunk[i + 1];
        chunk[POOL_CHUNK - 1].next = NULL;
        e = chunk;
    }
    s->free_entries = e->next;
    e->next = e->prev = NULL;
    e->hidx = MQR_QHIDX_NONE;
    e->owner = NULL;
    e->attempts = 0;
    e->reason = 0;
    e->due = 0;
    return e;
}

void mqr__q_entry_release(mqr_queue_t *q, mqr_qentry_t *e)
{
    mqr_queues_t *s = q->set;
    size_t b = mqr__q_entry_bytes(e->msg);
    q->bytes -= b;
    s->bytes -= b;
    mqr_msg_unref(e->msg);
    e->msg = NULL;
    e->state = QE_FREE;
    e->next = s->free_entries;
    s->free_entries = e;
}

/* ---- the set ---- */

static void set_maybe_free(mqr_queues_t *s)
{
    if (s->handles_open) return;
    for (size_t i = 0; i < s->nchunks; i++)
        free(s->chunks[i]);
    free(s->chunks);
    free(s);
}

static void on_set_handle_closed(uv_handle_t *h)
{
    mqr_queues_t *s = h->data;
    s->handles_open--;
    if (s->freeing) set_maybe_free(s);
}

static void on_idle(uv_idle_t *h)
{
    mqr__q_dispatch_all(h->data);
}

static void set_unref_all(mqr_queues_t *s)
{
    s->unrefd = true;
    for (mqr_queue_t *q = s->queues; q; q = q->next)
        uv_unref((uv_handle_t *)&q->timer);
    uv_unref((uv_handle_t *)&s->tx_timer);
}

/* Queue timers keep the loop alive while they have work, until the engine
 * stops: from then on they must not hold mqr_engine_run() up. */
void mqr__queues_stop(mqr_queues_t *s)
{
    if (s && !s->unrefd) set_unref_all(s);
}

void mqr__q_signal(mqr_queues_t *s)
{
    if (s->idle_on) return;
    s->idle_on = true;
    uv_idle_start(&s->idle, on_idle);
}

int mqr__queues_init(mqr_engine_t *e, const mqr_queues_options_t *opts)
{
    if (mqr__engine_queues(e)) return MQR_EEXIST;
    mqr_queues_t *s = calloc(1, sizeof *s);
    if (!s) return MQR_ENOMEM;
    s->loop = mqr_engine_loop(e);
    s->router = mqr__engine_router(e);
    s->clock = mqr__engine_clock(e);
    s->max_bytes = opts && opts->max_bytes ? opts->max_bytes : DEF_SET_MAX_BYTES;
    s->created = uv_now(s->loop);
    int rc = uv_idle_init(s->loop, &s->idle);
    if (rc < 0) {
        free(s);
        return rc;
    }
    s->idle.data = s;
    s->handles_open++;
    mqr__q_tx_init(s); /* the tx timer, counted in handles_open */
    if (mqr__engine_stopping(e)) set_unref_all(s);
    mqr__engine_set_queues(e, s); /* durable queues go to a file store, if any */
    return 0;
}

uint64_t mqr__queues_next_due(mqr_engine_t *e)
{
    mqr_queues_t *s = mqr__engine_queues(e);
    if (!s) return UINT64_MAX;
    uint64_t at = s->tx_timer_at;
    for (mqr_queue_t *q = s->queues; q; q = q->next)
        if (!q->closed && q->timer_at < at) at = q->timer_at;
    return at;
}

void mqr__queues_clock_moved(mqr_engine_t *e)
{
    mqr_queues_t *s = mqr__engine_queues(e);
    if (!s) return;
    uint64_t now = mqr__q_now(s);
    if (s->tx_timer_at <= now) {
        uv_timer_stop(&s->tx_timer);
        mqr__q_tx_tick(s);
    }
    for (mqr_queue_t *q = s->queues, *next; q; q = next) {
        next = q->next; /* the timer's work may close q (not free it: a reference) */
        if (q->closed || q->timer_at > now) continue;
        uv_timer_stop(&q->timer);
        mqr__q_on_timer(&q->timer);
    }
}

void mqr__queues_free(mqr_queues_t *s)
{
    if (!s) return;
    s->freeing = true;
    mqr__q_tx_free_all(s);
    while (s->queues)
        mqr__queue_close(s->queues);
    mqr__q_subs_free_all(s);
    while (s->pend_q) { /* queues waiting for a dispatch hold a reference */
        mqr_queue_t *q = s->pend_q;
        s->pend_q = q->pend_next;
        q->pending = false;
        mqr__queue_unref(q);
    }
    uv_close((uv_handle_t *)&s->idle, on_set_handle_closed);
    uv_close((uv_handle_t *)&s->tx_timer, on_set_handle_closed);
}

int mqr__queues_set_max_bytes(mqr_engine_t *e, size_t max_bytes)
{
    mqr_queues_t *s = mqr__engine_queues(e);
    if (!s) return MQR_ENOTINIT;
    s->max_bytes = max_bytes ? max_bytes : DEF_SET_MAX_BYTES;
    return 0;
}

void mqr__queues_set_store(mqr_queues_t *s, const mqr_queue_store_ops_t *ops,
                           mqr_queue_restore_fn restore, void *ctx)
{
    s->ops = ops;
    s->ops_ctx = ctx;
    s->restore = restore;
    s->restore_ctx = ctx;
}

/* ---- queues ---- */

void mqr__queue_config_init(mqr_queue_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->dead_letter = true;
}

static bool name_ok(const char *name)
{
    if (!name || !name[0]) return false;
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++, n++) {
        if (*p < '!' || *p > '~' || *p == '+' || *p == '#') return false;
    }
    return n <= MAX_NAME;
}

static mqr_queue_t *find(mqr_queues_t *s, const char *name)
{
    for (mqr_queue_t *q = s->queues; q; q = q->next)
        if (strcmp(q->name, name) == 0) return q;
    return NULL;
}

static void on_queue_timer_closed(uv_handle_t *h)
{
    mqr__queue_unref(h->data);
}

/* 0 means "the default" in the settings that have one. */
static void apply_defaults(mqr_queue_config_t *c)
{
    if (!c->ack_timeout_ms) c->ack_timeout_ms = DEF_ACK_TIMEOUT_MS;
    if (!c->max_attempts) c->max_attempts = DEF_MAX_ATTEMPTS;
    if (!c->backoff_initial_ms) c->backoff_initial_ms = DEF_BACKOFF_INITIAL_MS;
    if (!c->backoff_max_ms) c->backoff_max_ms = DEF_BACKOFF_MAX_MS;
    if (c->backoff_max_ms < c->backoff_initial_ms) c->backoff_max_ms = c->backoff_initial_ms;
    if (!c->max_messages) c->max_messages = DEF_MAX_MESSAGES;
    if (!c->max_bytes) c->max_bytes = DEF_MAX_BYTES;
    if (!c->dlq_max_messages) c->dlq_max_messages = DEF_DLQ_MAX;
    if (!c->dead_letter) c->dead_letter_expired = false;
}

int mqr__queue_reconfigure(mqr_queue_t *q, const mqr_queue_config_t *cfg)
{
    if (!cfg) return MQR_EINVAL;
    if (q->closed) return MQR_ECLOSED;
    if (cfg->default_ttl_ms < 0 || cfg->durable != q->cfg.durable ||
        cfg->dedup_window != q->cfg.dedup_window)
        return MQR_EINVAL;
    mqr_queue_config_t c = q->cfg;
    c.default_ttl_ms = cfg->default_ttl_ms;
    c.ack_timeout_ms = cfg->ack_timeout_ms;
    c.max_attempts = cfg->max_attempts;
    c.backoff_initial_ms = cfg->backoff_initial_ms;
    c.backoff_max_ms = cfg->backoff_max_ms;
    c.max_messages = cfg->max_messages;
    c.max_bytes = cfg->max_bytes;
    c.drop_oldest = cfg->drop_oldest;
    c.dead_letter = cfg->dead_letter;
    c.dead_letter_expired = cfg->dead_letter_expired;
    c.dlq_max_messages = cfg->dlq_max_messages;
    apply_defaults(&c);
    q->cfg = c;
    return 0;
}

int mqr__queue_new(mqr_engine_t *e, const mqr_queue_config_t *cfg, mqr_queue_t **out)
{
    mqr_queues_t *s = mqr__engine_queues(e);
    if (out) *out = NULL;
    if (!s) return MQR_ENOTINIT;
    if (!cfg || !out) return MQR_EINVAL;
    if (!name_ok(cfg->name)) return MQR_EQNAME;
    if (cfg->default_ttl_ms < 0) return MQR_EINVAL;
    if (find(s, cfg->name)) return MQR_EEXIST;
    mqr_queue_t *q = calloc(1, sizeof *q);
    if (!q) return MQR_ENOMEM;
    q->name = strdup(cfg->name);
    if (!q->name) {
        free(q);
        return MQR_ENOMEM;
    }
    q->cfg = *cfg;
    q->cfg.name = q->name;
    apply_defaults(&q->cfg);
    q->set = s;
    q->refs = 2; /* the engine's, and the timer handle's until it is closed */
    q->next_id = 1;
    q->created = uv_now(s->loop);
    q->timer_at = UINT64_MAX;
    q->ttl.key_off = offsetof(mqr_qentry_t, expires_at);
    q->delayed.key_off = offsetof(mqr_qentry_t, due);
    uv_timer_init(s->loop, &q->timer);
    q->timer.data = q;
    if (s->unrefd) uv_unref((uv_handle_t *)&q->timer);
    q->next = s->queues;
    if (s->queues) s->queues->prev = q;
    s->queues = q;
    s->nqueues++;
    if (q->cfg.durable && s->restore) {
        int rc = s->restore(s->restore_ctx, q);
        if (rc < 0) {
            mqr__queue_close(q); /* closing is not deleting: the rows stay */
            return rc;
        }
    }
    *out = q;
    return 0;
}

int mqr__queue_find(mqr_engine_t *e, const char *name, mqr_queue_t **out)
{
    *out = NULL;
    if (!mqr__engine_queues(e)) return MQR_ENOTINIT;
    if (!name) return MQR_EINVAL;
    mqr_queue_t *q = find(mqr__engine_queues(e), name);
    if (!q) return MQR_ENOENT;
    *out = q;
    return 0;
}

int mqr__queues_foreach(mqr_engine_t *e, int (*fn)(void *arg, mqr_queue_t *q), void *arg)
{
    if (!mqr__engine_queues(e)) return MQR_ENOTINIT;
    for (mqr_queue_t *q = mqr__engine_queues(e)->queues; q; q = q->next) {
        int rc = fn(arg, q);
        if (rc) return rc;
    }
    return 0;
}

void mqr__queue_ref(mqr_queue_t *q)
{
    q->refs++;
}

void mqr__queue_unref(mqr_queue_t *q)
{
    if (--q->refs) return;
    free(q->name);
    free(q);
}

const char *mqr__queue_name(const mqr_queue_t *q)
{
    return q->name;
}

void mqr__queue_replay_mark(mqr_queue_t *q, const mqr_msg_t *msg)
{
    q->replaying = msg;
}

bool mqr__queue_replaying(const mqr_queue_t *q, const mqr_msg_t *msg)
{
    return msg && q->replaying == msg;
}

bool mqr__queue_closed(const mqr_queue_t *q)
{
    return q->closed;
}

void mqr__queue_close(mqr_queue_t *q)
{
    if (q->closed) return;
    q->closed = true;
    mqr_queues_t *s = q->set;
    /* unlink now: the name is free at once, even when the teardown waits for
     * a callback of this queue to return */
    if (q->prev)
        q->prev->next = q->next;
    else
        s->queues = q->next;
    if (q->next) q->next->prev = q->prev;
    q->next = q->prev = NULL;
    s->nqueues--;
    mqr__q_binds_free(q);
    mqr__q_tx_forget_queue(s, q);
    if (!q->busy) mqr__q_teardown(q);
}

/* Called from mqr__q_teardown once every entry is gone. */
void mqr__q_teardown_handles(mqr_queue_t *q)
{
    uv_timer_stop(&q->timer);
    uv_close((uv_handle_t *)&q->timer, on_queue_timer_closed);
    mqr__queue_unref(q); /* the engine's reference */
}

/* ---- publishing ---- */

static inline void store_removed(mqr_queue_t *q, uint64_t id)
{
    mqr_queues_t *s = q->set;
    if (q->cfg.durable && s->ops && s->ops->removed) s->ops->removed(s->ops_ctx, q, id);
}

void mqr__q_make_ready(mqr_queue_t *q, mqr_qentry_t *e, bool front)
{
    e->state = QE_READY;
    if (front)
        mqr__q_list_push_front(&q->ready[e->prio], e);
    else
        mqr__q_list_push_back(&q->ready[e->prio], e);
    q->ready_mask |= 1u << e->prio;
    q->nready++;
    q->nready_prio[e->prio]++;
    q->ready_bytes += mqr__q_entry_bytes(e->msg);
    /* an entry that cannot enter the heap (no memory) still expires when it
     * would be delivered; only the early count is lost */
    if (e->expires_at && mqr__q_heap_push(&q->ttl, e) == 0) mqr__q_arm(q, e->expires_at);
    mqr__q_kick(q);
}

void mqr__q_unready(mqr_queue_t *q, mqr_qentry_t *e)
{
    mqr_qlist_t *l = &q->ready[e->prio];
    mqr__q_list_remove(l, e);
    if (!l->head) q->ready_mask &= ~(1u << e->prio);
    if (e->hidx != MQR_QHIDX_NONE) mqr__q_heap_remove(&q->ttl, e);
    q->nready--;
    q->nready_prio[e->prio]--;
    q->ready_bytes -= mqr__q_entry_bytes(e->msg);
}

static bool drop_oldest_ready(mqr_queue_t *q)
{
    if (!q->ready_mask) return false;
    int p = __builtin_ctz(q->ready_mask); /* least important level first */
    mqr_qentry_t *e = q->ready[p].head;
    mqr__q_unready(q, e);
    q->held--;
    q->st.dropped++;
    store_removed(q, e->id);
    mqr__q_entry_release(q, e);
    return true;
}

int mqr__q_make_room(mqr_queue_t *q, size_t n, size_t bytes)
{
    mqr_queues_t *s = q->set;
    bool full_n = q->held + n > q->cfg.max_messages;
    bool full_b = q->bytes + bytes > q->cfg.max_bytes || s->bytes + bytes > s->max_bytes;
    if (!full_n && !full_b) return 0;
    /* drop only when dropping every ready entry would be enough: a refused
     * publish changes nothing */
    bool can = q->cfg.drop_oldest && q->held - q->nready + n <= q->cfg.max_messages &&
               q->bytes - q->ready_bytes + bytes <= q->cfg.max_bytes &&
               s->bytes - q->ready_bytes + bytes <= s->max_bytes;
    if (!can) {
        /* a route that put the message here: its publisher is told */
        mqr__router_note(s->router, full_n ? MQR_EFULL : MQR_EMEMLIMIT);
        if (full_n) {
            q->st.refused_full++;
            return MQR_EFULL;
        }
        q->st.refused_memory++;
        return MQR_EMEMLIMIT;
    }
    while (q->held + n > q->cfg.max_messages || q->bytes + bytes > q->cfg.max_bytes ||
           s->bytes + bytes > s->max_bytes)
        drop_oldest_ready(q);
    return 0;
}

uint64_t mqr__q_expiry(mqr_queue_t *q, const mqr_msg_t *msg, const mqr_queue_pub_opts_t *opts,
                       int *rc)
{
    int64_t ttl = opts ? opts->ttl_ms : 0;
    if (ttl == 0) ttl = q->cfg.default_ttl_ms;
    /* loop time is cached per turn: a TTL counts from the real now */
    if (ttl > 0 || msg->expiry_s) uv_update_time(q->set->loop);
    uint64_t now = mqr__q_now(q->set);
    uint64_t at = ttl > 0 ? now + (uint64_t)ttl : 0;
    if (msg->expiry_s) { /* MQTT v5 message expiry: a bound, never an extension */
        uint64_t wall = mqr__now_ms();
        uint64_t end = msg->created_ms + (uint64_t)msg->expiry_s * 1000u;
        if (end <= wall) {
            *rc = MQR_EEXPIRED;
            return 0;
        }
        uint64_t at2 = now + (end - wall);
        if (!at || at2 < at) at = at2;
    }
    return at;
}

uint64_t mqr__q_wall_expiry(mqr_queue_t *q, uint64_t expires_at)
{
    if (!expires_at) return 0;
    uint64_t now = mqr__q_now(q->set);
    return mqr__now_ms() + (expires_at > now ? expires_at - now : 0);
}

mqr_qentry_t *mqr__q_new_entry(mqr_queue_t *q, mqr_msg_t *msg, int prio, uint64_t expires_at,
                               size_t bytes)
{
    mqr_qentry_t *e = mqr__q_entry_alloc(q->set);
    if (!e) return NULL;
    mqr_msg_ref(msg);
    e->msg = msg;
    e->id = q->next_id++;
    e->prio = (uint8_t)prio;
    e->expires_at = expires_at;
    q->held++;
    q->bytes += bytes;
    q->set->bytes += bytes;
    return e;
}

/* Undoes mqr__q_new_entry for an entry that never became visible. */
void mqr__q_drop_new(mqr_queue_t *q, mqr_qentry_t *e)
{
    q->held--;
    mqr__q_entry_release(q, e);
}

int mqr__queue_publish(mqr_queue_t *q, mqr_msg_t *msg, const mqr_queue_pub_opts_t *opts,
                       uint64_t *id)
{
    if (q->closed) return MQR_ECLOSED;
    if (!msg) return MQR_EINVAL;
    int prio = opts ? opts->priority : MQR_PRIO_NORMAL;
    if ((unsigned)prio >= MQR_PRIO_LEVELS) return MQR_EINVAL;
    int rc = 0;
    uint64_t key = opts && q->cfg.dedup_window ? opts->dedup_id : 0;
    if (key) {
        uint64_t first;
        if ((rc = mqr__q_dedup_check(q, key, &first)) < 0) return rc;
        if (rc == 1) {
            q->st.duplicates++;
            if (id) *id = first;
            return 0;
        }
    }
    uint64_t at = mqr__q_expiry(q, msg, opts, &rc);
    if (rc < 0) return rc;
    size_t bytes = mqr__q_entry_bytes(msg);
    if ((rc = mqr__q_make_room(q, 1, bytes)) < 0) return rc;
    mqr_qentry_t *e = mqr__q_new_entry(q, msg, prio, at, bytes);
    if (!e) {
        mqr__router_note(q->set->router, MQR_ENOMEM);
        return MQR_ENOMEM;
    }
    mqr_queues_t *s = q->set;
    if (q->cfg.durable && s->ops && s->ops->stored) {
        rc = s->ops->stored(s->ops_ctx, q, e->id, msg, prio, mqr__q_wall_expiry(q, at));
        /* not kept: nobody may be told it was; kept: its ack waits for the
         * commit */
        mqr__router_note(s->router, rc < 0 ? rc : MQR_DELIVER_STORED);
        if (rc < 0) {
            mqr__q_drop_new(q, e);
            return rc;
        }
    }
    q->st.published++;
    if (id) *id = e->id;
    if (key) mqr__q_dedup_add(q, key, e->id);
    mqr__q_make_ready(q, e, false);
    return 0;
}

int mqr__queue_publish_batch(mqr_queue_t *q, mqr_msg_t *const *msgs, size_t n,
                             const mqr_queue_pub_opts_t *opts, uint64_t *ids)
{
    if (q->closed) return MQR_ECLOSED;
    if (!msgs && n) return MQR_EINVAL;
    int prio = opts ? opts->priority : MQR_PRIO_NORMAL;
    if ((unsigned)prio >= MQR_PRIO_LEVELS) return MQR_EINVAL;
    size_t bytes = 0;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i]) return MQR_EINVAL;
        mqr__q_expiry(q, msgs[i], opts, &rc);
        if (rc < 0) return rc;
        bytes += mqr__q_entry_bytes(msgs[i]);
    }
    if ((rc = mqr__q_make_room(q, n, bytes)) < 0) return rc;
    /* build every entry first, make them visible only when all exist */
    mqr_qentry_t *first = NULL, *last = NULL;
    mqr_queues_t *s = q->set;
    bool durable = q->cfg.durable && s->ops && s->ops->stored;
    for (size_t i = 0; i < n; i++) {
        uint64_t at = mqr__q_expiry(q, msgs[i], opts, &rc);
        mqr_qentry_t *e = mqr__q_new_entry(q, msgs[i], prio, at, mqr__q_entry_bytes(msgs[i]));
        if (e && durable) {
            rc = s->ops->stored(s->ops_ctx, q, e->id, msgs[i], prio, mqr__q_wall_expiry(q, at));
            if (rc < 0) {
                mqr__q_drop_new(q, e);
                e = NULL;
            }
        }
        if (!e) {
            while (first) {
                mqr_qentry_t *nx = first->next;
                if (durable) store_removed(q, first->id);
                mqr__q_drop_new(q, first);
                first = nx;
            }
            rc = rc < 0 ? rc : MQR_ENOMEM;
            mqr__router_note(s->router, rc);
            return rc;
        }
        e->next = NULL;
        if (last)
            last->next = e;
        else
            first = e;
        last = e;
    }
    if (durable && n) mqr__router_note(s->router, MQR_DELIVER_STORED);
    for (size_t i = 0; first; i++) {
        mqr_qentry_t *nx = first->next;
        if (ids) ids[i] = first->id;
        q->st.published++;
        mqr__q_make_ready(q, first, false);
        first = nx;
    }
    return 0;
}

int mqr__queue_restore(mqr_queue_t *q, uint64_t id, mqr_msg_t *msg, int priority,
                       uint64_t expires_wall_ms, unsigned attempts)
{
    if (q->closed) return MQR_ECLOSED;
    if (!msg || id == 0 || (unsigned)priority >= MQR_PRIO_LEVELS) return MQR_EINVAL;
    uint64_t at = 0;
    if (expires_wall_ms) {
        uint64_t wall = mqr__now_ms();
        at = mqr__q_now(q->set) + (expires_wall_ms > wall ? expires_wall_ms - wall : 0);
    }
    mqr_qentry_t *e = mqr__q_new_entry(q, msg, priority, at, mqr__q_entry_bytes(msg));
    if (!e) return MQR_ENOMEM;
    q->next_id--; /* new_entry took one; the stored id is used instead */
    e->id = id;
    if (id >= q->next_id) q->next_id = id + 1;
    e->attempts = attempts > UINT16_MAX ? UINT16_MAX : (uint16_t)attempts;
    if (at && at <= mqr__q_now(q->set)) {
        mqr__q_expire(q, e);
        return 0;
    }
    mqr__q_make_ready(q, e, false);
    return 0;
}

int mqr__queue_restore_ids(mqr_queue_t *q, uint64_t next_id)
{
    if (q->closed) return MQR_ECLOSED;
    if (next_id > q->next_id) q->next_id = next_id;
    return 0;
}

/* ---- metrics and health ---- */

int mqr__queue_stats(const mqr_queue_t *q, mqr_queue_stats_t *out)
{
    if (q->closed) return MQR_ECLOSED;
    *out = q->st;
    out->ready = q->nready;
    for (int p = 0; p < MQR_PRIO_LEVELS; p++)
        out->ready_by_priority[p] = q->nready_prio[p];
    out->delayed = q->ndelayed;
    out->depth = q->nready + q->ndelayed;
    out->in_flight = q->ninflight + (q->delivering ? 1 : 0);
    out->pending_tx = q->npending;
    out->dead = q->ndead;
    out->bytes = q->bytes;
    out->consumers = q->nconsumers;
    out->uptime_ms = mqr__q_now(q->set) - q->created;
    return 0;
}

static void add_stats(mqr_queue_stats_t *t, const mqr_queue_stats_t *x)
{
    t->published += x->published;
    t->delivered += x->delivered;
    t->acked += x->acked;
    t->nacked += x->nacked;
    t->rejected += x->rejected;
    t->redelivered += x->redelivered;
    t->ack_timeouts += x->ack_timeouts;
    t->expired += x->expired;
    t->dropped += x->dropped;
    t->dead_lettered += x->dead_lettered;
    t->discarded += x->discarded;
    t->refused_full += x->refused_full;
    t->refused_memory += x->refused_memory;
    t->duplicates += x->duplicates;
    t->depth += x->depth;
    t->ready += x->ready;
    t->delayed += x->delayed;
    t->in_flight += x->in_flight;
    t->pending_tx += x->pending_tx;
    t->dead += x->dead;
    t->bytes += x->bytes;
    t->consumers += x->consumers;
}

int mqr__queues_health(mqr_engine_t *e, mqr_queues_health_t *out)
{
    memset(out, 0, sizeof *out);
    mqr_queues_t *s = mqr__engine_queues(e);
    if (!s) return MQR_ENOTINIT;
    out->queues = s->nqueues;
    out->subs = s->nsubs;
    out->bytes = s->bytes;
    out->max_bytes = s->max_bytes;
    out->uptime_ms = mqr__q_now(s) - s->created;
    out->tx_open = s->tx_open;
    out->tx_committed = s->tx_committed;
    out->tx_rolled_back = s->tx_rolled_back;
    out->tx_timed_out = s->tx_timed_out;
    int status = MQR_QHEALTH_OK;
    /* "full": a limit is reached (no room for one more small entry) */
    size_t room = sizeof(mqr_qentry_t) + 64;
    if (s->bytes + room > s->max_bytes)
        status = MQR_QHEALTH_FULL;
    else if (s->bytes >= s->max_bytes / 5 * 4)
        status = MQR_QHEALTH_DEGRADED;
    for (mqr_queue_t *q = s->queues; q; q = q->next) {
        mqr_queue_stats_t x;
        mqr__queue_stats(q, &x);
        add_stats(&out->totals, &x);
        if (q->held >= q->cfg.max_messages || q->bytes + room > q->cfg.max_bytes)
            status = MQR_QHEALTH_FULL;
        else if (status == MQR_QHEALTH_OK &&
                 (q->held >= q->cfg.max_messages / 5 * 4 || q->bytes >= q->cfg.max_bytes / 5 * 4))
            status = MQR_QHEALTH_DEGRADED;
    }
    out->totals.uptime_ms = out->uptime_ms;
    out->sub_dropped = s->sub_dropped_closed;
    for (mqr_queue_sub_t *sub = s->subs; sub; sub = mqr__q_sub_next(sub)) {
        mqr_queue_sub_stats_t ss;
        mqr__queue_sub_stats(sub, &ss);
        out->sub_dropped += ss.dropped;
    }
    if (mqr__engine_stopping(e)) status = MQR_QHEALTH_STOPPED;
    out->status = status;
    return status;
}
