/*
 * queue_tx.c — transactions over the engine's queues: messages published
 * under a transaction id (to any queues) are held as PENDING entries, counted
 * against their queue's limits and memory, and become READY together at
 * commit; rollback or the timeout releases them. Since delivery only happens
 * from the dispatch on a later loop turn, commit is atomic for consumers:
 * none can see part of a transaction.
 *
 * A transaction rolled back by its timeout leaves a tombstone (the last
 * MAX_TOMBSTONES of them) so a late commit learns MQR_ETXTIMEOUT instead of
 * MQR_ETXNOENT. Open transactions are few and short; lookups walk a list
 * kept newest first.
 */
#include "queue_impl.h"

#include <stdlib.h>
#include <string.h>

#define DEF_TX_TIMEOUT_MS 30000u
#define MAX_OPEN_TX 10000
#define MAX_TOMBSTONES 256

typedef struct {
    mqr_queue_t *q;
    mqr_qentry_t *e;
} tx_item_t;

struct mqr_qtx {
    mqr_qtx_t *next, *prev;
    uint64_t id;
    uint64_t deadline; /* loop time */
    tx_item_t *items;
    size_t n, cap;
};

static void on_tx_timer(uv_timer_t *t);

int mqr__q_tx_init(mqr_queues_t *s)
{
    uv_timer_init(s->loop, &s->tx_timer);
    s->tx_timer.data = s;
    s->handles_open++;
    s->tx_timer_at = UINT64_MAX;
    return 0;
}

static void tx_arm(mqr_queues_t *s, uint64_t at)
{
    if (at >= s->tx_timer_at) return;
    s->tx_timer_at = at;
    uint64_t now = mqr__q_now(s);
    uv_timer_start(&s->tx_timer, on_tx_timer, at > now ? at - now : 0, 0);
}

static void unlink_open(mqr_queues_t *s, mqr_qtx_t *tx)
{
    if (tx->prev)
        tx->prev->next = tx->next;
    else
        s->txs = tx->next;
    if (tx->next) tx->next->prev = tx->prev;
    tx->next = tx->prev = NULL;
    s->tx_open--;
}

static void release_items(mqr_qtx_t *tx)
{
    for (size_t i = 0; i < tx->n; i++) {
        tx->items[i].q->npending--;
        mqr__q_drop_new(tx->items[i].q, tx->items[i].e);
    }
    free(tx->items);
    tx->items = NULL;
    tx->n = tx->cap = 0;
}

static void add_tombstone(mqr_queues_t *s, mqr_qtx_t *tx)
{
    tx->next = NULL;
    tx->prev = s->tx_dead_tail;
    if (s->tx_dead_tail)
        s->tx_dead_tail->next = tx;
    else
        s->tx_dead = tx;
    s->tx_dead_tail = tx;
    if (++s->tx_tombstones > MAX_TOMBSTONES) {
        mqr_qtx_t *old = s->tx_dead;
        s->tx_dead = old->next;
        if (s->tx_dead)
            s->tx_dead->prev = NULL;
        else
            s->tx_dead_tail = NULL;
        s->tx_tombstones--;
        free(old);
    }
}

static void remove_tombstone(mqr_queues_t *s, mqr_qtx_t *tx)
{
    if (tx->prev)
        tx->prev->next = tx->next;
    else
        s->tx_dead = tx->next;
    if (tx->next)
        tx->next->prev = tx->prev;
    else
        s->tx_dead_tail = tx->prev;
    s->tx_tombstones--;
    free(tx);
}

static void on_tx_timer(uv_timer_t *t)
{
    mqr__q_tx_tick(t->data);
}

void mqr__q_tx_tick(mqr_queues_t *s)
{
    s->tx_timer_at = UINT64_MAX;
    uint64_t now = mqr__q_now(s), next = UINT64_MAX;
    for (mqr_qtx_t *tx = s->txs, *nx; tx; tx = nx) {
        nx = tx->next;
        if (tx->deadline > now) {
            if (tx->deadline < next) next = tx->deadline;
            continue;
        }
        unlink_open(s, tx);
        release_items(tx);
        s->tx_timed_out++;
        add_tombstone(s, tx);
    }
    if (next != UINT64_MAX) tx_arm(s, next);
}

/* Finds txid: 0 and *out, MQR_ETXTIMEOUT (tombstone: now forgotten), or
 * MQR_ETXNOENT. */
static int lookup(mqr_queues_t *s, uint64_t txid, mqr_qtx_t **out)
{
    for (mqr_qtx_t *tx = s->txs; tx; tx = tx->next) {
        if (tx->id == txid) {
            *out = tx;
            return 0;
        }
    }
    for (mqr_qtx_t *tx = s->tx_dead; tx; tx = tx->next) {
        if (tx->id == txid) {
            remove_tombstone(s, tx);
            return MQR_ETXTIMEOUT;
        }
    }
    return MQR_ETXNOENT;
}

int mqr__queue_tx_begin(mqr_engine_t *e, uint32_t timeout_ms, uint64_t *txid)
{
    mqr_queues_t *s = mqr__engine_queues(e);
    if (!s) return MQR_ENOTINIT;
    if (s->tx_open >= MAX_OPEN_TX) return MQR_EFULL;
    mqr_qtx_t *tx = calloc(1, sizeof *tx);
    if (!tx) return MQR_ENOMEM;
    tx->id = ++s->next_txid;
    tx->deadline = mqr__q_now(s) + (timeout_ms ? timeout_ms : DEF_TX_TIMEOUT_MS);
    tx->next = s->txs;
    if (s->txs) s->txs->prev = tx;
    s->txs = tx;
    s->tx_open++;
    tx_arm(s, tx->deadline);
    *txid = tx->id;
    return 0;
}

int mqr__queue_tx_publish(mqr_engine_t *e, uint64_t txid, mqr_queue_t *q, mqr_msg_t *msg,
                          const mqr_queue_pub_opts_t *opts)
{
    mqr_queues_t *s = mqr__engine_queues(e);
    if (!s) return MQR_ENOTINIT;
    mqr_qtx_t *tx;
    int rc = lookup(s, txid, &tx);
    if (rc < 0) return rc;
    if (!q || q->closed || q->set != s) return q && q->closed ? MQR_ECLOSED : MQR_EINVAL;
    if (!msg) return MQR_EINVAL;
    int prio = opts ? opts->priority : MQR_PRIO_NORMAL;
    if ((unsigned)prio >= MQR_PRIO_LEVELS) return MQR_EINVAL;
    uint64_t at = mqr__q_expiry(q, msg, opts, &rc);
    if (rc < 0) return rc;
    if (tx->n == tx->cap) {
        size_t cap = tx->cap ? tx->cap * 2 : 8;
        tx_item_t *items = realloc(tx->items, cap * sizeof *items);
        if (!items) return MQR_ENOMEM;
        tx->items = items;
        tx->cap = cap;
    }
    size_t bytes = mqr__q_entry_bytes(msg);
    if ((rc = mqr__q_make_room(q, 1, bytes)) < 0) return rc;
    mqr_qentry_t *en = mqr__q_new_entry(q, msg, prio, at, bytes);
    if (!en) return MQR_ENOMEM;
    en->state = QE_PENDING;
    q->npending++;
    tx->items[tx->n++] = (tx_item_t){.q = q, .e = en};
    return 0;
}

int mqr__queue_tx_commit(mqr_engine_t *e, uint64_t txid)
{
    mqr_queues_t *s = mqr__engine_queues(e);
    if (!s) return MQR_ENOTINIT;
    mqr_qtx_t *tx;
    int rc = lookup(s, txid, &tx);
    if (rc < 0) return rc;
    unlink_open(s, tx);
    /* durable queues first: a store refusal rolls everything back */
    size_t stored = 0;
    for (; stored < tx->n; stored++) {
        tx_item_t *it = &tx->items[stored];
        if (!it->q->cfg.durable || !s->ops || !s->ops->stored) continue;
        rc = s->ops->stored(s->ops_ctx, it->q, it->e->id, it->e->msg, it->e->prio,
                            mqr__q_wall_expiry(it->q, it->e->expires_at));
        if (rc < 0) break;
    }
    if (rc < 0) {
        for (size_t i = 0; i < stored; i++) {
            tx_item_t *it = &tx->items[i];
            if (it->q->cfg.durable && s->ops->removed)
                s->ops->removed(s->ops_ctx, it->q, it->e->id);
        }
        release_items(tx);
        free(tx);
        s->tx_rolled_back++;
        return rc;
    }
    for (size_t i = 0; i < tx->n; i++) {
        tx_item_t *it = &tx->items[i];
        it->q->npending--;
        it->q->st.published++;
        mqr__q_make_ready(it->q, it->e, false);
    }
    free(tx->items);
    free(tx);
    s->tx_committed++;
    return 0;
}

int mqr__queue_tx_rollback(mqr_engine_t *e, uint64_t txid)
{
    mqr_queues_t *s = mqr__engine_queues(e);
    if (!s) return MQR_ENOTINIT;
    mqr_qtx_t *tx;
    int rc = lookup(s, txid, &tx);
    if (rc < 0) return rc;
    unlink_open(s, tx);
    release_items(tx);
    free(tx);
    s->tx_rolled_back++;
    return 0;
}

void mqr__q_tx_forget_queue(mqr_queues_t *s, mqr_queue_t *q)
{
    if (!q->npending) return;
    for (mqr_qtx_t *tx = s->txs; tx; tx = tx->next) {
        size_t k = 0;
        for (size_t i = 0; i < tx->n; i++) {
            if (tx->items[i].q == q) {
                q->npending--;
                mqr__q_drop_new(q, tx->items[i].e);
            } else {
                tx->items[k++] = tx->items[i];
            }
        }
        tx->n = k;
    }
}

void mqr__q_tx_free_all(mqr_queues_t *s)
{
    while (s->txs) {
        mqr_qtx_t *tx = s->txs;
        unlink_open(s, tx);
        release_items(tx);
        free(tx);
    }
    while (s->tx_dead)
        remove_tombstone(s, s->tx_dead);
    uv_timer_stop(&s->tx_timer);
}
