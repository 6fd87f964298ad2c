/*
 * queue.h — the engine's in-process broker queues: named work queues with
 * competing consumers, and topic-style pub/sub subscribers with bounded
 * buffers, all on the engine's loop thread.
 *
 * A work queue holds references to immutable messages (never copies), in five
 * priority levels (FIFO within a level), with a TTL per message or per queue,
 * ack/nack with redelivery, backoff and a dead-letter queue, transactions
 * spanning queues, and memory limits per queue and for the whole engine.
 * Delivery to consumers is never done inside the publisher's call: a publish
 * enqueues and schedules a dispatch that runs later on the loop, in batches.
 *
 * Everything here must be called on the engine's loop thread; nothing takes
 * a lock. Callbacks (consumers, subscribers, dead-letter hooks) run on the
 * loop thread from libuv callbacks, and may call any function of this header
 * (publish, ack, nack, close their own queue...).
 *
 * Durability is a seam, not an implementation: a queue created with
 * cfg.durable calls the store ops installed with mqr__queues_set_store()
 * at the moments an entry becomes visible, is acknowledged, is dead-lettered
 * or is removed, and mqr__queue_restore() puts stored entries back at start.
 * With a file store, core/store/store_queue.c implements it (store_queue.h): a
 * durable publish is durable once the store has committed it, which the
 * caller learns with mqr__store_after_commit(e->store, cb, arg) right after
 * mqr__queue_publish() returned 0 (cb's status 0 = on disk).
 *
 * docs/queues.md tells the behaviour in full; this header says who owns what.
 */
#ifndef MQR_QUEUE_H
#define MQR_QUEUE_H

#include "message.h"
#include "mqrouter.h"
#include "message.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mqr_queues mqr_queues_t; /* the engine's queue set */
typedef struct mqr_queue mqr_queue_t;
typedef struct mqr_queue_consumer mqr_queue_consumer_t;
typedef struct mqr_queue_sub mqr_queue_sub_t;

/* Priority levels MQR_PRIO_* and the consumer's return values
 * MQR_QUEUE_ACK... are public: mqrouter.h. */

/* Why a message left its queue without an ack (dead letters carry it). */
typedef enum {
    MQR_QREASON_EXPIRED = 0,      /* TTL passed before delivery */
    MQR_QREASON_MAX_ATTEMPTS = 1, /* nacked or timed out max_attempts times */
    MQR_QREASON_REJECTED = 2,     /* rejected by a consumer (no retry) */
    MQR_QREASON_COUNT = 3,
} mqr_queue_reason_t;

/* "expired", "max_attempts", "rejected"; "unknown" otherwise. */
const char *mqr__queue_reason_name(int reason);

/* ---- the engine's queue set ------------------------------------------- */

typedef struct {
    size_t max_bytes; /* memory for all queues and subscribers; 0 = 256 MiB */
} mqr_queues_options_t;

/* Sets up e's queues, on its loop, router and clock (engine.h). Must come
 * before any other call here that takes an engine; those return
 * MQR_ENOTINIT before it. opts may be NULL. Returns 0, MQR_EEXIST (already
 * done), MQR_ENOMEM or a libuv code. Freed by mqr_engine_free()
 * (mqr__queues_free). */
int mqr__queues_init(mqr_engine_t *e, const mqr_queues_options_t *opts);

/* Closes every queue and subscriber of e, releasing their messages, and
 * closes the set's handles (the loop must run once more before
 * uv_loop_close, as mqr_engine_free does). Safe when never initialised. */
void mqr__queues_free(mqr_queues_t *s);
/* The engine stops: queue timers no longer keep the loop alive. */
void mqr__queues_stop(mqr_queues_t *s);

/* For a fake clock (clock.h): the earliest time some queue or
 * transaction has work due (UINT64_MAX: none), and running what is due by
 * the clock's now, as the timers would on a real clock. Loop thread. */
uint64_t mqr__queues_next_due(mqr_engine_t *e);
void mqr__queues_clock_moved(mqr_engine_t *e);

/* Changes the engine-wide memory limit (0 = default). Entries already held
 * stay; new publishes see the new limit. */
int mqr__queues_set_max_bytes(mqr_engine_t *e, size_t max_bytes);

/* The durability seam (implemented by the store module later). Each callback
 * is called only for queues created with cfg.durable, on the loop thread, with
 * the entry id; `ctx` is the pointer given to mqr__queues_set_store.
 *   stored:  an entry became part of the queue (publish, tx commit, re-drive).
 *            expires_wall_ms is wall-clock (0 = never). A failure (< 0) makes
 *            the publish (or the commit) fail with that code and nothing is
 *            enqueued.
 *   acked:   the entry was acknowledged and is gone.
 *   dead:    the entry moved to the dead-letter queue (reason, attempts).
 *   dead_msg: right after dead, when the entry's message was replaced
 *            while in flight (mqr__queue_replace_msg: a rejection's reason
 *            added to its properties): the dead letter keeps this one.
 *   removed: the entry (ready, in flight or dead) is gone for another reason
 *            (expired without DLQ, dropped, purged, discarded, re-driven under
 *            a new id). Not called when the queue is closed or the engine
 *            freed: closing is not deleting.
 * Any pointer may be NULL. ops must outlive the engine's queues. */
typedef struct {
    int (*stored)(void *ctx, mqr_queue_t *q, uint64_t id, const mqr_msg_t *msg, int priority,
                  uint64_t expires_wall_ms);
    void (*acked)(void *ctx, mqr_queue_t *q, uint64_t id);
    void (*dead)(void *ctx, mqr_queue_t *q, uint64_t id, int reason, unsigned attempts);
    void (*removed)(void *ctx, mqr_queue_t *q, uint64_t id);
    void (*dead_msg)(void *ctx, mqr_queue_t *q, uint64_t id, const mqr_msg_t *msg);
} mqr_queue_store_ops_t;

/* The other half of the seam: fn(ctx, q) runs inside mqr__queue_new for a
 * queue created with cfg.durable, once it exists and before it is returned,
 * to put its stored entries back (mqr__queue_restore, mqr__queue_restore_dead,
 * mqr__queue_restore_ids). A failure (< 0) closes the queue (nothing is
 * deleted) and mqr__queue_new returns that code. fn NULL: nothing restored.
 *
 * When the engine keeps a file store, the engine installs the store's ops
 * and restore function (core/store/store_queue.c) when the queues are set
 * up; setting others replaces them. */
typedef int (*mqr_queue_restore_fn)(void *ctx, mqr_queue_t *q);
/* Installs both halves of the seam (any may be NULL). */
void mqr__queues_set_store(mqr_queues_t *s, const mqr_queue_store_ops_t *ops,
                           mqr_queue_restore_fn restore, void *ctx);

/* ---- queues ------------------------------------------------------------- */

/* A dead letter as handed to the dead-letter hook and by mqr__queue_dlq_list:
 * msg keeps its original topic; it is borrowed (ref it to keep it). */
typedef struct {
    uint64_t id;         /* the id the entry had in its queue */
    mqr_msg_t *msg;      /* original topic, payload, properties */
    int reason;          /* mqr_queue_reason_t */
    unsigned attempts;   /* deliveries made before it died */
    int priority;        /* 0..4 */
    uint64_t dead_at_ms; /* wall clock */
} mqr_queue_dead_t;

/* Called once a message is in the dead-letter queue (the bindings may publish
 * it to an MQTT topic). May call anything here, closing q included. */
typedef void (*mqr_queue_dead_fn)(void *arg, mqr_queue_t *q, const mqr_queue_dead_t *dead);

typedef struct {
    const char *name;        /* required: 1..200 bytes of '!'..'~' except '+' and '#' */
    int64_t default_ttl_ms;  /* TTL of messages published without one; 0 = none */
    uint32_t ack_timeout_ms; /* unacked this long: redelivered; 0 = 30000; UINT32_MAX = never */
    uint32_t max_attempts;   /* deliveries before dead-lettering; 0 = 5; UINT32_MAX = no limit */
    uint32_t backoff_initial_ms; /* nack backoff: initial * 2^(attempts-1) ... ; 0 = 1000 */
    uint32_t backoff_max_ms;     /* ... capped here; 0 = 60000 */
    size_t max_messages;         /* held (ready, delayed, in flight, in a tx); 0 = 100000 */
    size_t max_bytes;            /* memory of held entries; 0 = 64 MiB */
    bool drop_oldest;            /* when full, drop the oldest ready entry instead of refusing */
    bool dead_letter;            /* keep dead letters (else they are discarded, counted) */
    bool dead_letter_expired;    /* expired messages are dead-lettered too (needs dead_letter) */
    size_t dlq_max_messages;     /* dead letters kept; the oldest go beyond; 0 = 10000 */
    mqr_queue_dead_fn on_dead;   /* may be NULL */
    void *on_dead_arg;
    bool durable; /* call the store ops (mqr__queues_set_store) */
    /* De-duplication: the last dedup_window caller ids (opts.dedup_id) are
     * remembered; publishing one of them again enqueues nothing, returns 0
     * and the first publish's entry id (counted `duplicates`). 0 = off. */
    size_t dedup_window;
} mqr_queue_config_t;

void mqr__queue_config_init(mqr_queue_config_t *cfg);

/* Creates a queue. The engine owns it (one reference) until mqr__queue_close
 * or engine free; *out is borrowed: mqr__queue_ref() it to keep the pointer
 * valid past a close. Returns 0, MQR_ENOTINIT, MQR_EQNAME, MQR_EEXIST (the
 * name is taken), MQR_EINVAL (cfg values), MQR_ENOMEM, or a libuv code. */
int mqr__queue_new(mqr_engine_t *e, const mqr_queue_config_t *cfg, mqr_queue_t **out);

/* Finds an open queue by name (borrowed). MQR_ENOTINIT, MQR_ENOENT. */
int mqr__queue_find(mqr_engine_t *e, const char *name, mqr_queue_t **out);

/* Calls fn for each open queue (newest first) until it returns non-zero,
 * which is returned; 0 after all, or MQR_ENOTINIT. fn must not close or
 * create queues. For metrics exporters and admin listings. */
int mqr__queues_foreach(mqr_engine_t *e, int (*fn)(void *arg, mqr_queue_t *q), void *arg);

/* Closes q: its consumers are cancelled, every entry (ready, delayed, in
 * flight, in open transactions, dead) is released, the name is free again.
 * Further calls on q return MQR_ECLOSED; the struct lives while references
 * remain. Idempotent; may be called from q's own callbacks. */
void mqr__queue_close(mqr_queue_t *q);

/* Changes an open queue's settings in place (a reload that declares it
 * with others): TTL default, ack timeout, attempts, backoff, limits,
 * drop_oldest, dead letters, DLQ size (the dead-letter hook stays). Messages held
 * keep what they were given (a TTL, an ack deadline already running); new
 * publishes and deliveries follow the new settings; a lower limit refuses
 * new publishes until the queue is under it. durable and dedup_window
 * cannot change (MQR_EINVAL). Returns 0, MQR_EINVAL, MQR_ECLOSED. */
int mqr__queue_reconfigure(mqr_queue_t *q, const mqr_queue_config_t *cfg);

void mqr__queue_ref(mqr_queue_t *q);
void mqr__queue_unref(mqr_queue_t *q);

const char *mqr__queue_name(const mqr_queue_t *q);
bool mqr__queue_closed(const mqr_queue_t *q);
/* A replay (mqr__store_queue_replay) publishes q's stored messages again
 * without putting them back into q: it marks the message it publishes (NULL
 * when done), and the routes that feed q (mqr__queue_bind, the bindings'
 * routes into a queue) pass over that message for q. */
void mqr__queue_replay_mark(mqr_queue_t *q, const mqr_msg_t *msg);
bool mqr__queue_replaying(const mqr_queue_t *q, const mqr_msg_t *msg);

/* ---- publishing --------------------------------------------------------- */

typedef struct {
    int priority;      /* 0..4; MQR_PRIO_NORMAL when opts is NULL */
    int64_t ttl_ms;    /* > 0 this TTL; 0 = the queue's default; < 0 = never expires */
    uint64_t dedup_id; /* the caller's id for de-duplication (cfg.dedup_window); 0 = none.
                          mqr__queue_publish only */
} mqr_queue_pub_opts_t;

#define MQR_QUEUE_PUB_OPTS_INIT                                                                    \
    {                                                                                              \
        .priority = MQR_PRIO_NORMAL, .ttl_ms = 0                                                   \
    }

/* Enqueues msg (the queue takes its own reference; the caller keeps its own).
 * A message carrying an MQTT v5 expiry is held no longer than that expiry.
 * *id (may be NULL) receives the entry id. Returns 0, or:
 *   MQR_ECLOSED     q is closed;
 *   MQR_EINVAL      priority out of range, NULL msg;
 *   MQR_EEXPIRED    msg's v5 expiry has already passed;
 *   MQR_EFULL       max_messages reached (and nothing to drop);
 *   MQR_EMEMLIMIT   the queue's or the engine's memory limit reached (and
 *                   nothing to drop);
 *   a store error   (durable queue, stored callback failed).
 * A refused publish changes nothing but the refusal counters. On a durable
 * queue, 0 means enqueued and written into the store's open transaction: the
 * entry is durable once mqr__store_after_commit(e->store, cb, arg), called
 * after this returns, reports status 0 (store_queue.h). */
int mqr__queue_publish(mqr_queue_t *q, mqr_msg_t *msg, const mqr_queue_pub_opts_t *opts,
                       uint64_t *id);

/* Publishes n messages, all or nothing: either all are enqueued (in order,
 * ids[i] if ids is not NULL) or none is and the error says why. */
int mqr__queue_publish_batch(mqr_queue_t *q, mqr_msg_t *const *msgs, size_t n,
                             const mqr_queue_pub_opts_t *opts, uint64_t *ids);

/* ---- consuming ---------------------------------------------------------- */

/* mqr_queue_delivery_t, MQR_QUEUE_LATER/ACK/NACK/REJECT and
 * mqr_queue_consume_fn are public (mqrouter.h). */

/* Adds a competing consumer: ready messages go round-robin to the consumers
 * that have room (fewer than prefetch unsettled; prefetch 0 = no limit).
 * fn runs on the loop, never inside a publish. *out is owned by q: it stays
 * valid until mqr__queue_cancel or the queue closes. Returns 0, MQR_ECLOSED,
 * MQR_EINVAL, MQR_ENOMEM. */
int mqr__queue_consume(mqr_queue_t *q, mqr_queue_consume_fn fn, void *arg, unsigned prefetch,
                       mqr_queue_consumer_t **out);

/* A consumer handed up to max_batch messages per call (1..MQR_QUEUE_MAX_BATCH),
 * for callers whose per-call cost is high (a Lua handler). The n deliveries
 * are in flight when fn runs (ack/nack/reject by id work inside it); fn
 * returns MQR_QUEUE_ACK to ack every one still in flight, or MQR_QUEUE_LATER.
 * Competes round-robin with the other consumers, batch by batch; prefetch
 * caps its unsettled messages as for mqr__queue_consume. */
#define MQR_QUEUE_MAX_BATCH 256
typedef int (*mqr_queue_batch_fn)(void *arg, mqr_queue_t *q, const mqr_queue_delivery_t *d,
                                  size_t n);
int mqr__queue_consume_batch(mqr_queue_t *q, mqr_queue_batch_fn fn, void *arg, unsigned prefetch,
                             unsigned max_batch, mqr_queue_consumer_t **out);

/* Removes a consumer; its unsettled deliveries go back to the front of their
 * level at once (attempts kept). May be called from its own callback. */
void mqr__queue_cancel(mqr_queue_t *q, mqr_queue_consumer_t *c);

/* Pull style: takes up to max ready messages (highest priority first) into
 * flight and fills out[]. Returns how many (0 when none is ready) or
 * MQR_ECLOSED / MQR_EINVAL. The entries must be settled like pushed ones. */
int mqr__queue_receive(mqr_queue_t *q, size_t max, mqr_queue_delivery_t *out);

/* Settles an in-flight entry. ack: done. nack: redelivered after delay_ms
 * (0 = at once, < 0 = the queue's backoff for its attempt count), or
 * dead-lettered when it has had max_attempts deliveries. reject: dead-letter
 * now. Return 0, MQR_ECLOSED, or MQR_ENOENT (no such entry in flight: never
 * delivered, already settled, or its ack timeout passed and it went back). */
int mqr__queue_ack(mqr_queue_t *q, uint64_t id);
int mqr__queue_nack(mqr_queue_t *q, uint64_t id, int64_t delay_ms);
int mqr__queue_reject(mqr_queue_t *q, uint64_t id);
/* Replaces the message of in-flight entry id by msg (referenced; the old
 * one released), e.g. the same message with a rejection's reason in its
 * properties, before it is settled: a dead letter keeps msg, in memory and
 * in the store. Counts the size difference against the queue's memory.
 * 0, MQR_ENOENT (not in flight), MQR_ECLOSED. */
int mqr__queue_replace_msg(mqr_queue_t *q, uint64_t id, mqr_msg_t *msg);
/* Acks n ids; returns how many were acked (ids not in flight are skipped),
 * or MQR_ECLOSED. */
int mqr__queue_ack_batch(mqr_queue_t *q, const uint64_t *ids, size_t n);

/* ---- dead letters ------------------------------------------------------- */

typedef struct {
    uint64_t total;                        /* dead-lettered since the queue opened */
    uint64_t by_reason[MQR_QREASON_COUNT]; /* ... by reason */
    size_t depth;                          /* dead letters held now */
    size_t depth_by_reason[MQR_QREASON_COUNT];
    uint64_t redriven; /* sent back to the queue */
    uint64_t purged;   /* removed by mqr__queue_dlq_purge */
    uint64_t overflow; /* oldest removed because dlq_max_messages was reached */
} mqr_queue_dlq_stats_t;

/* MQR_ENODLQ when the queue keeps no dead letters, MQR_ECLOSED. */
int mqr__queue_dlq_stats(mqr_queue_t *q, mqr_queue_dlq_stats_t *out);

/* Copies up to max dead letters, oldest first, skipping the first `skip`.
 * The messages are borrowed (valid until the dead letter goes). Returns how
 * many, MQR_ENODLQ or MQR_ECLOSED. */
int mqr__queue_dlq_list(mqr_queue_t *q, size_t skip, size_t max, mqr_queue_dead_t *out);

/* Moves up to max (0 = all) dead letters, oldest first, back into the queue
 * as new entries (new id, attempts 0, the queue's default TTL from now, their
 * priority), stopping early when the queue is full. Returns how many moved,
 * MQR_ENODLQ, MQR_ECLOSED, or MQR_EFULL when none could move for lack of
 * room. */
int mqr__queue_redrive(mqr_queue_t *q, size_t max);

/* Drops up to max (0 = all) dead letters, oldest first; returns how many. */
int mqr__queue_dlq_purge(mqr_queue_t *q, size_t max);

/* ---- transactions --------------------------------------------------------- */

/* Opens a transaction: messages published under it (to any queues) become
 * visible together at commit and never if it is rolled back or not committed
 * within timeout_ms (0 = 30000), which rolls it back (counted). Returns 0 and
 * *txid (never 0), MQR_ENOTINIT, MQR_ENOMEM. */
int mqr__queue_tx_begin(mqr_engine_t *e, uint32_t timeout_ms, uint64_t *txid);

/* Publishes msg to q under txid. The entry counts against q's limits and
 * memory from now on (refusals as mqr__queue_publish), but no consumer sees
 * it before commit. Returns 0, MQR_ETXNOENT, MQR_ETXTIMEOUT (the transaction
 * was rolled back by its timeout), or a publish error (the transaction stays
 * open, without this message). */
int mqr__queue_tx_publish(mqr_engine_t *e, uint64_t txid, mqr_queue_t *q, mqr_msg_t *msg,
                          const mqr_queue_pub_opts_t *opts);

/* Commit: every message of the transaction becomes ready at once. Rollback:
 * all are discarded. Either way the transaction is gone. Return 0,
 * MQR_ETXNOENT, MQR_ETXTIMEOUT, or (commit, durable queue) a store error,
 * after which the transaction has been rolled back. */
int mqr__queue_tx_commit(mqr_engine_t *e, uint64_t txid);
int mqr__queue_tx_rollback(mqr_engine_t *e, uint64_t txid);

/* ---- pub/sub subscribers -------------------------------------------------- */

typedef struct {
    size_t max_buffered; /* messages waiting for the callback; 0 = 1000 */
    bool drop_oldest;    /* when full, drop the oldest buffered (else the new one) */
    unsigned batch;      /* most messages handed per loop turn; 0 = 256 */
} mqr_queue_sub_config_t;

/* Called on the loop for each buffered message, in arrival order; msg is
 * borrowed for the call. May close the subscriber. */
typedef void (*mqr_queue_sub_fn)(void *arg, mqr_queue_sub_t *sub, mqr_msg_t *msg);

typedef struct {
    uint64_t received;  /* messages that matched */
    uint64_t delivered; /* callback calls */
    uint64_t dropped;   /* lost because the buffer was full (or engine memory) */
    size_t buffered;    /* waiting now */
    size_t bytes;       /* memory accounted for them */
} mqr_queue_sub_stats_t;

/* Subscribes to filter (MQTT filter, wildcards and $share allowed) through
 * the engine's router: matching messages are buffered (a reference each) and
 * handed to fn later on the loop, never inside the publisher's call. When
 * the buffer is full the newest message is dropped (or the oldest, with
 * drop_oldest), counted. cfg may be NULL. Returns 0, MQR_ENOTINIT, MQR_ETOPIC,
 * MQR_EINVAL, MQR_ENOMEM. *out is freed by mqr__queue_sub_close or with the
 * engine. */
int mqr__queue_sub_new(mqr_engine_t *e, const char *filter, const mqr_queue_sub_config_t *cfg,
                       mqr_queue_sub_fn fn, void *arg, mqr_queue_sub_t **out);
void mqr__queue_sub_close(mqr_queue_sub_t *sub);
void mqr__queue_sub_stats(const mqr_queue_sub_t *sub, mqr_queue_sub_stats_t *out);

/* A reload hands what waits in a subscriber to the new rules. rebind: the
 * same subscriber (its trie entry, buffer and counters) calls fn(arg) from
 * now on. take: the oldest waiting message, whose reference moves to the
 * caller, or NULL when none waits. put: appends msg (takes a reference of
 * its own) after what waits, as if it had just matched; MQR_EFULL (nothing
 * changes, nothing counted) when the buffer or the engine's queue memory
 * has no room, MQR_ECLOSED after close, MQR_ENOMEM. */
void mqr__queue_sub_rebind(mqr_queue_sub_t *sub, mqr_queue_sub_fn fn, void *arg);
mqr_msg_t *mqr__queue_sub_take(mqr_queue_sub_t *sub);
int mqr__queue_sub_put(mqr_queue_sub_t *sub, mqr_msg_t *msg);
/* Calls fn(arg, msg) for each waiting message, oldest first; msg is
 * borrowed, and fn must not change the subscriber. */
void mqr__queue_sub_foreach(const mqr_queue_sub_t *sub, void (*fn)(void *arg, mqr_msg_t *msg),
                            void *arg);

/* Routes messages matching filter into q (priority and TTL from opts, NULL
 * = defaults); refusals (full...) are counted in q's stats. The binding goes
 * with the queue. Returns 0, MQR_ECLOSED, MQR_ETOPIC, MQR_ENOMEM. */
int mqr__queue_bind(mqr_queue_t *q, const char *filter, const mqr_queue_pub_opts_t *opts);

/* ---- metrics and health ----------------------------------------------------- */

typedef struct {
    uint64_t published; /* entries accepted (tx ones at commit) */
    uint64_t delivered; /* deliveries, redeliveries included */
    uint64_t acked;
    uint64_t nacked;
    uint64_t rejected;
    uint64_t redelivered;    /* deliveries with attempts > 1 */
    uint64_t ack_timeouts;   /* in-flight entries whose ack timeout passed */
    uint64_t expired;        /* TTL passed: never delivered */
    uint64_t dropped;        /* dropped to make room (drop_oldest) */
    uint64_t dead_lettered;  /* moved to the DLQ */
    uint64_t discarded;      /* would have been dead-lettered, but dead_letter is off */
    uint64_t refused_full;   /* publishes refused: max_messages */
    uint64_t refused_memory; /* publishes refused: memory limit */
    uint64_t duplicates;     /* publishes skipped: dedup_id seen in the window */
    size_t depth;            /* ready + delayed (waiting for a consumer) */
    size_t ready;
    size_t ready_by_priority[MQR_PRIO_LEVELS]; /* [MQR_PRIO_LOWEST .. MQR_PRIO_HIGHEST] */
    size_t delayed;                            /* waiting out a nack backoff */
    size_t in_flight;
    size_t pending_tx; /* published in open transactions */
    size_t dead;       /* in the DLQ */
    size_t bytes;      /* memory accounted (docs/queues.md) */
    size_t consumers;
    uint64_t uptime_ms;
} mqr_queue_stats_t;

int mqr__queue_stats(const mqr_queue_t *q, mqr_queue_stats_t *out);

typedef enum {
    MQR_QHEALTH_OK = 0,
    MQR_QHEALTH_DEGRADED = 1, /* memory at 80 % of a limit or more */
    MQR_QHEALTH_FULL = 2,     /* a memory or size limit reached: publishes refused or dropping */
    MQR_QHEALTH_STOPPED = 3,  /* the engine is stopping */
} mqr_queues_status_t;

/* "ok", "degraded", "full", "stopped". */
const char *mqr__queues_status_name(int status);

typedef struct {
    int status;       /* mqr_queues_status_t */
    size_t queues;    /* open queues */
    size_t subs;      /* pub/sub subscribers */
    size_t bytes;     /* memory in use, queues and subscribers */
    size_t max_bytes; /* the engine-wide limit */
    uint64_t uptime_ms;
    mqr_queue_stats_t totals; /* sums over the open queues (uptime = the set's) */
    uint64_t sub_dropped;     /* pub/sub drops, all subscribers */
    size_t tx_open;
    uint64_t tx_committed, tx_rolled_back, tx_timed_out;
} mqr_queues_health_t;

/* Fills out and returns its status (>= 0), or MQR_ENOTINIT. */
int mqr__queues_health(mqr_engine_t *e, mqr_queues_health_t *out);

/* ---- durability: restoring stored entries at start ------------------------ */

/* Puts an entry back as it was stored: ready with that id (later ids continue
 * above it), priority, wall-clock expiry (0 = never; already passed = counted
 * expired) and attempts made. Ignores the limits (what was accepted stays
 * accepted) and calls no store op. Ids must be unique (the store's
 * primary key): they are not checked. Returns 0, MQR_ECLOSED, MQR_EINVAL,
 * MQR_ENOMEM. */
int mqr__queue_restore(mqr_queue_t *q, uint64_t id, mqr_msg_t *msg, int priority,
                       uint64_t expires_wall_ms, unsigned attempts);

/* Puts a stored dead letter back into q's DLQ (oldest first, as stored),
 * with its id, reason, attempts and time of death. Counts it in the DLQ's
 * depth, not in its totals (those are since the queue opened). Returns 0,
 * MQR_ECLOSED, MQR_ENODLQ, MQR_EINVAL, MQR_ENOMEM. */
int mqr__queue_restore_dead(mqr_queue_t *q, const mqr_queue_dead_t *dead);

/* Ids given from now on are at least next_id (never lowers them): the store
 * keeps a high-water mark so that ids acked before a restart are not given
 * again. Returns 0 or MQR_ECLOSED. */
int mqr__queue_restore_ids(mqr_queue_t *q, uint64_t next_id);

#endif
