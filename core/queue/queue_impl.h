/*
 * queue_impl.h — what the queue files (queue.c, queue_deliver.c, queue_dlq.c,
 * queue_tx.c, queue_pubsub.c) share: the structs behind queue.h and the
 * helpers that move entries between states. Nothing outside core/queue/
 * includes it.
 *
 * An entry is in exactly one state at a time and on at most one list:
 *   READY      q->ready[prio] list (FIFO), in q->ttl heap if it expires
 *   DELAYED    q->delayed heap (nack backoff), no list
 *   DELIVERING handed to a consumer callback right now (q->delivering)
 *   INFLIGHT   q->inflight list (ack-deadline order) and q->ids hash
 *   PENDING    in an open transaction's item vector, no list
 *   DEAD       q->dlq list
 * Entries come from one pool per engine (chunks, free list), 64 bytes each.
 */
#ifndef MQR_QUEUE_IMPL_H
#define MQR_QUEUE_IMPL_H

#include "clock.h"
#include "engine.h"
#include "queue.h"
#include "router.h"

#include <uv.h>

enum {
    QE_FREE = 0,
    QE_READY,
    QE_DELAYED,
    QE_DELIVERING,
    QE_INFLIGHT,
    QE_PENDING,
    QE_DEAD,
    /* settled from inside the consumer callback that delivers it */
    QE_SETTLED_ACK,
    QE_SETTLED_NACK,
    QE_SETTLED_REJECT,
};

typedef struct mqr_qentry mqr_qentry_t;
struct mqr_qentry {
    mqr_qentry_t *next, *prev;
    mqr_msg_t *msg;
    uint64_t id;
    uint64_t expires_at;         /* loop time (uv_now) in ms; 0 = never */
    uint64_t due;                /* INFLIGHT: ack deadline; DELAYED: due; DEAD: wall-clock death;
                                    SETTLED_NACK: the delay asked for */
    mqr_queue_consumer_t *owner; /* INFLIGHT: the consumer, NULL for a pull receive */
    uint32_t hidx;               /* position in the ttl or delayed heap; UINT32_MAX = none */
    uint16_t attempts;
    uint8_t prio;
    uint8_t state : 4;
    uint8_t reason : 3;   /* DEAD */
    uint8_t replaced : 1; /* its message was replaced in flight: the store's dead letter follows */
};

typedef struct {
    mqr_qentry_t *head, *tail;
} mqr_qlist_t;

/* A binary min-heap of entries on the uint64 at key_off. */
typedef struct {
    mqr_qentry_t **v;
    uint32_t n, cap;
    size_t key_off;
} mqr_qheap_t;

/* Open-addressing map id -> entry (linear probing, backward-shift delete). */
typedef struct {
    mqr_qentry_t **slots;
    size_t n, mask; /* capacity = mask + 1, a power of two, or 0 slots */
} mqr_qmap_t;

struct mqr_queue_consumer {
    mqr_queue_consumer_t *next, *prev; /* ring of q's consumers */
    mqr_queue_consume_fn fn;
    mqr_queue_batch_fn batch_fn; /* a batch consumer: fn is NULL */
    void *arg;
    unsigned max_batch;
    unsigned prefetch; /* 0 = no limit */
    unsigned unacked;
    unsigned busy;  /* inside fn */
    bool cancelled; /* cancelled inside fn: freed when it returns */
};

typedef struct mqr_qbind mqr_qbind_t;
typedef struct mqr_qdedup mqr_qdedup_t;

struct mqr_queue {
    mqr_queues_t *set;
    mqr_queue_t *next, *prev; /* set->queues */
    char *name;
    mqr_queue_config_t cfg; /* defaults applied; cfg.name points at name */
    unsigned refs;
    bool closed;
    bool torn;                  /* entries and consumers released (after close, once not busy) */
    bool pending;               /* on set's dispatch list (holding a reference) */
    unsigned busy;              /* inside a callback of this queue */
    const mqr_msg_t *replaying; /* the stored message a replay publishes now, or NULL */
    mqr_queue_t *pend_next;

    uint64_t next_id;
    uint64_t created; /* loop time */

    mqr_qlist_t ready[MQR_PRIO_LEVELS];
    unsigned ready_mask; /* bit p set: ready[p] not empty */
    mqr_qheap_t ttl;     /* READY entries that expire, by expires_at */
    mqr_qheap_t delayed; /* DELAYED entries, by due */
    mqr_qlist_t inflight;
    mqr_qmap_t ids; /* INFLIGHT entries by id */
    mqr_qentry_t *delivering;
    mqr_qlist_t dlq;

    mqr_queue_consumer_t *consumers; /* ring; NULL = none */
    mqr_queue_consumer_t *rr;        /* next one to try */
    size_t nconsumers;

    mqr_qbind_t *binds;
    mqr_qdedup_t *dedup; /* cfg.dedup_window: allocated at the first dedup id */

    uv_timer_t timer;
    uint64_t timer_at; /* loop time the timer is armed for; UINT64_MAX = not armed */

    size_t held;        /* ready + delayed + delivering + in flight + pending */
    size_t ready_bytes; /* the part of bytes that READY entries hold */
    size_t nready, ndelayed, ninflight, npending, ndead;
    size_t nready_prio[MQR_PRIO_LEVELS]; /* ready entries per priority */
    size_t bytes;                        /* held and dead entries */
    mqr_queue_stats_t st;
    mqr_queue_dlq_stats_t dst;
};

typedef struct mqr_qtx mqr_qtx_t;

struct mqr_queues {
    /* what the engine gave at init (mqr__queues_init) */
    uv_loop_t *loop;
    mqr_router_t *router;
    const mqr_clock_t *clock;
    mqr_queue_t *queues; /* open ones */
    mqr_queue_sub_t *subs;
    size_t nqueues, nsubs;
    size_t bytes, max_bytes;
    uint64_t created;
    bool freeing;
    unsigned handles_open; /* uv handles not yet closed (the set's and queues') */

    /* entry pool */
    mqr_qentry_t *free_entries;
    void **chunks;
    size_t nchunks, chunks_cap;

    /* dispatch: queues and subscribers with work, served from an idle handle */
    uv_idle_t idle;
    bool idle_on;
    mqr_queue_t *pend_q;
    mqr_queue_sub_t *pend_s;
    bool unrefd;

    const mqr_queue_store_ops_t *ops;
    void *ops_ctx;
    mqr_queue_restore_fn restore; /* durable queues, in mqr__queue_new */
    void *restore_ctx;

    /* transactions */
    uint64_t next_txid;
    mqr_qtx_t *txs;                    /* open, newest first */
    mqr_qtx_t *tx_dead, *tx_dead_tail; /* timed out, oldest first (tombstones) */
    size_t tx_open, tx_tombstones;
    uv_timer_t tx_timer;
    uint64_t tx_timer_at;
    uint64_t tx_committed, tx_rolled_back, tx_timed_out;

    uint64_t sub_dropped_closed; /* drops of subscribers already closed */
};

/* ---- shared helpers (queue.c) ---- */

#define MQR_QHIDX_NONE UINT32_MAX

static inline uint64_t mqr__q_now(const mqr_queues_t *s)
{
    return mqr__clock_now(s->clock);
}

static inline size_t mqr__q_entry_bytes(const mqr_msg_t *m)
{
    return sizeof(mqr_qentry_t) + m->topic_len + m->payload_len + m->props_len;
}

mqr_qentry_t *mqr__q_entry_alloc(mqr_queues_t *s);
/* Releases e's message and memory accounting, returns e to the pool. */
void mqr__q_entry_release(mqr_queue_t *q, mqr_qentry_t *e);

void mqr__q_list_push_back(mqr_qlist_t *l, mqr_qentry_t *e);
void mqr__q_list_push_front(mqr_qlist_t *l, mqr_qentry_t *e);
void mqr__q_list_remove(mqr_qlist_t *l, mqr_qentry_t *e);

int mqr__q_heap_push(mqr_qheap_t *h, mqr_qentry_t *e);
void mqr__q_heap_remove(mqr_qheap_t *h, mqr_qentry_t *e);
static inline mqr_qentry_t *mqr__q_heap_top(const mqr_qheap_t *h)
{
    return h->n ? h->v[0] : NULL;
}
static inline uint64_t mqr__q_heap_key(const mqr_qheap_t *h, const mqr_qentry_t *e)
{
    return *(const uint64_t *)((const char *)e + h->key_off);
}
void mqr__q_heap_free(mqr_qheap_t *h);

int mqr__q_map_put(mqr_qmap_t *m, mqr_qentry_t *e);
mqr_qentry_t *mqr__q_map_get(const mqr_qmap_t *m, uint64_t id);
void mqr__q_map_del(mqr_qmap_t *m, uint64_t id);
void mqr__q_map_free(mqr_qmap_t *m);

/* Checks room for n more entries of `bytes` in total, dropping the oldest
 * ready entries when the queue drops. 0, MQR_EFULL or MQR_EMEMLIMIT
 * (counted). */
int mqr__q_make_room(mqr_queue_t *q, size_t n, size_t bytes);

/* Makes an entry (already counted in held and bytes) READY: list, ttl heap,
 * counters, timer, kick. front: ahead of its level (a redelivery). */
void mqr__q_make_ready(mqr_queue_t *q, mqr_qentry_t *e, bool front);
/* Takes a READY entry off its list and heap (the reverse, without kick). */
void mqr__q_unready(mqr_queue_t *q, mqr_qentry_t *e);
/* The ready entry to deliver next (highest level, oldest), or NULL. */
static inline mqr_qentry_t *mqr__q_peek_ready(const mqr_queue_t *q)
{
    if (!q->ready_mask) return NULL;
    return q->ready[31 - __builtin_clz(q->ready_mask)].head;
}

/* A new entry for msg (a reference taken), counted in held and bytes, in no
 * state yet; NULL when out of memory. mqr__q_drop_new undoes it. */
mqr_qentry_t *mqr__q_new_entry(mqr_queue_t *q, mqr_msg_t *msg, int prio, uint64_t expires_at,
                               size_t bytes);
void mqr__q_drop_new(mqr_queue_t *q, mqr_qentry_t *e);

/* Loop time at which a message published now with opts expires (0 = never),
 * or MQR_EEXPIRED / MQR_EINVAL in *rc. */
uint64_t mqr__q_expiry(mqr_queue_t *q, const mqr_msg_t *msg, const mqr_queue_pub_opts_t *opts,
                       int *rc);

/* Wall clock matching a loop-time expiry, for the store. */
uint64_t mqr__q_wall_expiry(mqr_queue_t *q, uint64_t expires_at);

/* ---- queue_deliver.c ---- */

/* Puts q on the dispatch list if it has ready entries and consumers. */
void mqr__q_kick(mqr_queue_t *q);
/* Arms q's timer for `at` (loop time) if that is earlier than armed. */
void mqr__q_arm(mqr_queue_t *q, uint64_t at);
/* Runs the transactions' timeouts that fell due (the tx timer's work). */
void mqr__q_tx_tick(mqr_queues_t *s);
/* Recomputes and arms the timer from the heaps and the in-flight list. */
void mqr__q_rearm(mqr_queue_t *q);
/* Serves the dispatch list (the idle callback). */
void mqr__q_dispatch_all(mqr_queues_t *s);
void mqr__q_on_timer(uv_timer_t *t);
/* Expires e (off its list, still counted in held): counts, dead-letters or
 * releases. */
void mqr__q_expire(mqr_queue_t *q, mqr_qentry_t *e);
/* Requeue every in-flight entry of c (cancel). */
void mqr__q_requeue_owned(mqr_queue_t *q, mqr_queue_consumer_t *c);
/* Frees consumers, releases every entry; q->closed already set, not busy. */
void mqr__q_teardown(mqr_queue_t *q);
/* Closes q's timer and drops the engine's reference (queue.c). */
void mqr__q_teardown_handles(mqr_queue_t *q);
/* Called when a callback of q returns: finishes a close done inside it. */
void mqr__q_leave(mqr_queue_t *q);

/* ---- queue_dlq.c ---- */

/* e is off every list, not in flight, still counted in held: dead-letter it
 * (or discard it when the queue keeps none), then call on_dead. */
void mqr__q_dead_letter(mqr_queue_t *q, mqr_qentry_t *e, int reason);
void mqr__q_dlq_release_all(mqr_queue_t *q);

/* ---- queue_tx.c ---- */

int mqr__q_tx_init(mqr_queues_t *s);
/* Drops q's pending entries from every open transaction (q closing). */
void mqr__q_tx_forget_queue(mqr_queues_t *s, mqr_queue_t *q);
void mqr__q_tx_free_all(mqr_queues_t *s);

/* ---- queue_dedup.c ---- */

/* 1 and *id when key was accepted within the window, 0 when not, or
 * MQR_ENOMEM (the window could not be set up). */
int mqr__q_dedup_check(mqr_queue_t *q, uint64_t key, uint64_t *id);
/* Remembers key -> id (after a check; never allocates). */
void mqr__q_dedup_add(mqr_queue_t *q, uint64_t key, uint64_t id);
void mqr__q_dedup_free(mqr_queue_t *q);

/* ---- queue_pubsub.c ---- */

/* Serves s's pending subscribers (one batch each). */
void mqr__q_subs_dispatch(mqr_queues_t *s);
mqr_queue_sub_t *mqr__q_sub_next(mqr_queue_sub_t *sub);
void mqr__q_subs_free_all(mqr_queues_t *s);
void mqr__q_binds_free(mqr_queue_t *q);
void mqr__q_signal(mqr_queues_t *s); /* start the idle handle */

#endif
