/*
 * store_queue.h — durable queues in the engine's SQLite store (schema
 * version 4): the queue store ops (queue.h's durability seam) written through
 * the store's group commit, the restore of a durable queue's entries and dead
 * letters when it is created, and the replay of stored messages by topic.
 *
 * The engine opens this when it has a file store (not for ":memory:") and
 * mqr__queues_init installs it; everything runs on the loop thread. A durable
 * publish is durable once the store has committed the turn's transaction:
 * mqr__store_after_commit(e->store, cb, arg) after mqr__queue_publish tells
 * the caller (docs/queues.md, "Durability").
 */
#ifndef MQR_STORE_QUEUE_H
#define MQR_STORE_QUEUE_H

#include "message.h"
#include "mqrouter.h"
#include "queue.h"
#include "store.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct mqr_store_queues mqr_store_queues_t;

/* Prepares the queue statements on s for engine e. Returns 0 and *out,
 * MQR_ENOMEM or MQR_ESTORE (mqr__store_last_error says why). */
int mqr__store_queues_open(mqr_store_t *s, mqr_engine_t *e, mqr_store_queues_t **out);

/* Finalizes the statements and drops the references it holds on queues.
 * Before mqr__store_close. sq may be NULL. */
void mqr__store_queues_close(mqr_store_queues_t *sq);

/* Installs sq as the queues' store ops and restore function (the engine,
 * when its queues are set up). */
void mqr__store_queues_attach(mqr_store_queues_t *sq, mqr_queues_t *queues);

typedef struct {
    uint64_t restored;         /* entries put back into queues */
    uint64_t restored_dead;    /* dead letters put back */
    uint64_t restored_expired; /* stored entries whose TTL had passed at restore */
    uint64_t write_errors;     /* acked/dead/removed writes that failed (logged) */
} mqr_store_queues_stats_t;

void mqr__store_queues_stats(const mqr_store_queues_t *sq, mqr_store_queues_stats_t *out);

/* ---- replay ----------------------------------------------------------------- */

enum {
    MQR_QREPLAY_DEAD = 1u << 0, /* dead letters too */
};

/* One stored message handed back by a replay; msg is borrowed for the call
 * (ref it to keep it): a new message (origin MQR_ORIGIN_STORE) with the
 * stored topic, payload, properties, QoS, retain flag and created_ms. */
typedef struct {
    uint64_t id; /* the entry's id in its queue */
    mqr_msg_t *msg;
    int priority;
    bool dead;         /* a dead letter (MQR_QREPLAY_DEAD) */
    int reason;        /* dead letters: mqr_queue_reason_t */
    unsigned attempts; /* dead letters: deliveries made */
} mqr_queue_replayed_t;

/* Returns 0 to go on, < 0 to stop the replay (which returns that value).
 * May call anything, publishing into q included: the rows are read before
 * the first call. */
typedef int (*mqr_queue_replay_fn)(void *arg, mqr_queue_t *q, const mqr_queue_replayed_t *r);

/* Replays what durable queue q holds in the store whose topic matches filter
 * (an MQTT filter; wildcards allowed, "#" = everything), oldest id first:
 * the entries not yet acknowledged or removed (ready or in flight) and, with
 * MQR_QREPLAY_DEAD, its dead letters. Entries whose TTL has passed are
 * skipped. The queue itself is not changed.
 *   fn != NULL: each message is handed to fn(arg, q, r);
 *   fn == NULL: each is published again through the engine
 *               (mqr__engine_publish, retain flag cleared) so every route and
 *               subscriber of its topic sees it again; a queue bound to a
 *               matching filter (q itself too) gets it as a new entry.
 * Returns how many were handed back or published, or MQR_EINVAL (q not
 * durable, or the engine keeps no file store), MQR_ETOPIC/MQR_EUTF8 (bad
 * filter), MQR_ECLOSED, MQR_ENOMEM, MQR_ESTORE, or fn's negative value. */
int mqr__store_queue_replay(mqr_engine_t *e, mqr_queue_t *q, const char *filter, unsigned flags,
                            mqr_queue_replay_fn fn, void *arg);

#endif
