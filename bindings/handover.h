/*
 * handover.h — the (taker, message) pairs one reload has handed over
 * (l_subscribe.c, l_iter.c).
 *
 * Fan-out shares one message between subscribers, so two old subscribers
 * (or iterators) can each hold the same message. Handed to the new rules
 * one after the other, both copies could reach the same new taker: the set
 * lets a copy go to a taker only if that taker does not hold the message
 * yet. Lives for one takeover on the loop thread.
 */
#ifndef MQR_HANDOVER_H
#define MQR_HANDOVER_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    const void *taker, *msg;
} l_handover_pair_t;

typedef struct {
    l_handover_pair_t *slots; /* open addressing; taker NULL = free */
    size_t cap, n;
} l_handover_t;

#define L_HANDOVER_INIT                                                                            \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

/* True when taker holds msg already (added, or handed, in this takeover). */
bool mqr__handover_has(const l_handover_t *h, const void *taker, const void *msg);
/* Notes that taker holds msg. Returns 0, or MQR_ENOMEM (then has() may
 * answer false for it: a duplicate becomes possible, a loss does not). */
int mqr__handover_add(l_handover_t *h, const void *taker, const void *msg);
void mqr__handover_free(l_handover_t *h);

#endif
