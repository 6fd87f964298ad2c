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
 */
#ifndef MQR_ROUTER_H
#define MQR_ROUTER_H

#include "message.h"
#include "trie.h"

#define MQR_ROUTER_MAX_DEPTH 16

typedef struct mqr_subscriber mqr_subscriber_t;
struct mqr_subscriber {
    /* msg is borrowed for the call; ref it to keep it. entry is the matching
     * subscription (its opts carry QoS, no-local, subscription id...). */
    void (*deliver)(mqr_subscriber_t *self, mqr_msg_t *msg, const mqr_trie_entry_t *entry);
};

typedef struct {
    mqr_trie_t trie;
    int depth;
    uint64_t routed;     /* messages matched */
    uint64_t deliveries; /* subscriber calls */
    uint64_t unrouted;   /* messages no subscription wanted */
    uint64_t loops;      /* publishes refused for nesting too deep */
} mqr_router_t;

int mqr__router_init(mqr_router_t *r);
void mqr__router_close(mqr_router_t *r);

/* Delivers msg (borrowed) to every matching subscriber. Returns the number of
 * deliveries, or MQR_EROUTELOOP / MQR_ENOMEM. */
int mqr__router_publish(mqr_router_t *r, mqr_msg_t *msg);

/* Subscribe/unsubscribe helpers over the trie; filter must be validated. */
mqr_trie_entry_t *mqr__router_add(mqr_router_t *r, const char *filter, size_t len,
                                  mqr_subscriber_t *sub, const mqr_sub_opts_t *opts);
void mqr__router_remove(mqr_router_t *r, mqr_trie_entry_t *entry);

#endif
