/*
 * handover.c — a set of (taker, message) pointer pairs for one reload's
 * handover of buffered messages (handover.h). Open addressing, grown at
 * half full; nothing is ever removed, the set is dropped whole. Must not:
 * dereference the pointers it keeps (they are only identities).
 */
#include "handover.h"

#include "mqrouter.h"

#include <stdint.h>
#include <stdlib.h>

static size_t slot_of(const l_handover_t *h, const void *taker, const void *msg)
{
    uint64_t x = (uint64_t)(uintptr_t)taker * 0x9e3779b97f4a7c15ull;
    x ^= (uint64_t)(uintptr_t)msg + 0x632be59bd9b4e019ull + (x << 6) + (x >> 2);
    x ^= x >> 29;
    return (size_t)x & (h->cap - 1); /* cap is a power of two */
}

bool mqr__handover_has(const l_handover_t *h, const void *taker, const void *msg)
{
    if (!h->cap) return false;
    for (size_t i = slot_of(h, taker, msg);; i = (i + 1) & (h->cap - 1)) {
        const l_handover_pair_t *p = &h->slots[i];
        if (!p->taker) return false;
        if (p->taker == taker && p->msg == msg) return true;
    }
}

static void put(l_handover_t *h, const void *taker, const void *msg)
{
    size_t i = slot_of(h, taker, msg);
    while (h->slots[i].taker && !(h->slots[i].taker == taker && h->slots[i].msg == msg))
        i = (i + 1) & (h->cap - 1);
    if (!h->slots[i].taker) h->n++;
    h->slots[i] = (l_handover_pair_t){taker, msg};
}

int mqr__handover_add(l_handover_t *h, const void *taker, const void *msg)
{
    if ((h->n + 1) * 2 > h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 256;
        l_handover_pair_t *slots = calloc(cap, sizeof *slots);
        if (!slots) return MQR_ENOMEM;
        l_handover_t bigger = {slots, cap, 0};
        for (size_t i = 0; i < h->cap; i++)
            if (h->slots[i].taker) put(&bigger, h->slots[i].taker, h->slots[i].msg);
        free(h->slots);
        *h = bigger;
    }
    put(h, taker, msg);
    return 0;
}

void mqr__handover_free(l_handover_t *h)
{
    free(h->slots);
    *h = (l_handover_t)L_HANDOVER_INIT;
}
