/*
 * router.h — matches a message against every subscription and hands it to
 * each subscriber.
 *
 * Subscribers of every kind (Lua routes, C callbacks, listener clients,
 * upstream sessions) embed an mqr_subscriber_t and register trie entries
 * whose `sub` points at it. The router holds the trie while delivering, so
 * a subscriber may add or remove subscriptions (even its own) from inside
 * deliver(). Delivery is synchronous and may nest (a handler that
 * publishes); nesting deeper than MQR_ROUTER_MAX_DEPTH is refused as a
 * routing loop.
 *
 * What became of a message is told, not inferred: each deliver() returns a
 * result, and whatever a subscriber does with the message further on (a Lua
 * route putting it into a queue) is noted with mqr__router_note(). Both land
 * in the publish context of the ingress that is routing it (r->pub), which
 * reads it to decide its acknowledgement (DESIGN.md: no counters diffed
 * around a publish).
 */
#ifndef MQR_ROUTER_H
#define MQR_ROUTER_H

#include "holds.h"
#include "message.h"
#include "trie.h"

#define MQR_ROUTER_MAX_DEPTH 16

/* A result of deliver() beside 0: taken, and written to the store, so an
 * acknowledgement that promises durability waits for the commit. */
#define MQR_DELIVER_STORED 1

/* What became of one published message, for the ingress that routes it:
 * filled while routing (nested publishes of its handlers included), read
 * after. The ingress owns it (on its stack). */
typedef struct mqr_pubctx {
    uint32_t no_room; /* a subscriber that had to keep it had no room (a full queue or session
                         buffer): MQR_EFULL, MQR_EMEMLIMIT */
    uint32_t stored;  /* store writes made to keep it: the ack waits for the commit */
    uint32_t failed;  /* a subscriber that had to keep it could not (no memory, a store error) */
    int error;        /* the first failure's MQR_E* code, 0 without one */
    /* the ingress, when it can stop reading: a subscriber with too much
     * waiting holds it (holds.h) rather than refuse; NULL when it cannot */
    mqr_source_t *source;
} mqr_pubctx_t;

typedef struct mqr_subscriber mqr_subscriber_t;
struct mqr_subscriber {
    /* msg is borrowed for the call; ref it to keep it. entry is the matching
     * subscription (its opts carry QoS, no-local, subscription id...).
     * Returns 0 (taken, or let go as the subscriber's own documented policy
     * says, which it counts), MQR_DELIVER_STORED, or a negative MQR_E* when
     * it could not take a message it should have: then whoever handed the
     * message in must not be told it was accepted. */
    int (*deliver)(mqr_subscriber_t *self, mqr_msg_t *msg, const mqr_trie_entry_t *entry);
    /* Optional (NULL: deliver() per entry). When several non-shared entries
     * of this subscriber match one message, they come here in one call, in
     * add order, instead of one deliver() each, so the subscriber can send
     * one copy for all of them (MQTT 5.0 §3.3.4). A shared entry always goes
     * to deliver() alone: a share group's pick is a delivery of its own
     * (5.0 §4.8.2). Same result convention as deliver(). */
    int (*deliver_set)(mqr_subscriber_t *self, mqr_msg_t *msg, mqr_trie_entry_t *const *entries,
                       size_t n);
    /* The router's: the publish that last counted this subscriber while
     * looking for several entries of one subscriber. Zero it (calloc). */
    uint64_t route_mark;
};

typedef struct {
    mqr_trie_t trie;
    int depth;
    uint64_t routed;        /* messages matched */
    uint64_t deliveries;    /* subscriber calls */
    uint64_t unrouted;      /* messages no subscription wanted */
    uint64_t loops;         /* publishes refused for nesting too deep */
    uint64_t dropped_nomem; /* deliveries a subscriber could not take for lack of memory */
    uint64_t nomem_log_ms;  /* last warning about them (wall clock): one a second at most */
    mqr_pubctx_t *pub;      /* the context of the publish being routed; NULL outside one */
    uint64_t mark;          /* last route_mark given (subscribers matched more than once) */
} mqr_router_t;

int mqr__router_init(mqr_router_t *r);
void mqr__router_close(mqr_router_t *r);

/* Delivers msg (borrowed) to every matching subscriber. Returns the number of
 * deliveries, or MQR_EROUTELOOP / MQR_ENOMEM. */
int mqr__router_publish(mqr_router_t *r, mqr_msg_t *msg);

/* A subscriber's result for the message being routed (a deliver() result,
 * or what a queue made of it when a route put it there): folded into r->pub
 * and counted (MQR_ENOMEM: dropped_nomem, with a warning). 0 and results
 * noted outside routing (depth 0: the caller has the result itself) change
 * nothing. */
void mqr__router_note(mqr_router_t *r, int result);

/* The source of the publish being routed (mqr_pubctx_t), or NULL: outside
 * routing, or an ingress that cannot wait (Lua, a C caller). */
static inline mqr_source_t *mqr__router_source(const mqr_router_t *r)
{
    return r->depth > 0 && r->pub ? r->pub->source : NULL;
}

/* Subscribe/unsubscribe helpers over the trie; filter must be validated. */
mqr_trie_entry_t *mqr__router_add(mqr_router_t *r, const char *filter, size_t len,
                                  mqr_subscriber_t *sub, const mqr_sub_opts_t *opts);
void mqr__router_remove(mqr_router_t *r, mqr_trie_entry_t *entry);

#endif
