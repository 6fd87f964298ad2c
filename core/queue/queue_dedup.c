/*
 * queue_dedup.c — de-duplication of publishes by a caller-given id: a queue
 * with cfg.dedup_window remembers the last `window` ids it accepted (and
 * the entry id each got), so a publisher that retries after a lost answer
 * does not enqueue twice. Fixed memory, allocated at the first id: a ring of
 * ids in arrival order (the oldest is forgotten first) and an open-addressing
 * table id -> entry id at most half full. The window is not stored: after a
 * restart it starts empty.
 */
#include "queue_impl.h"

#include <stdlib.h>

struct mqr_qdedup {
    uint64_t *keys; /* 0 = empty slot */
    uint64_t *vals;
    size_t mask;
    uint64_t *ring;
    size_t cap, head, count;
};

static size_t slot(const mqr_qdedup_t *d, uint64_t key)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & d->mask;
}

static int init(mqr_queue_t *q)
{
    size_t window = q->cfg.dedup_window;
    size_t cap = 16;
    while (cap < window * 2)
        cap *= 2;
    mqr_qdedup_t *d = calloc(1, sizeof *d);
    if (!d) return MQR_ENOMEM;
    d->keys = calloc(cap, sizeof *d->keys);
    d->vals = malloc(cap * sizeof *d->vals);
    d->ring = malloc(window * sizeof *d->ring);
    if (!d->keys || !d->vals || !d->ring) {
        free(d->keys);
        free(d->vals);
        free(d->ring);
        free(d);
        return MQR_ENOMEM;
    }
    d->mask = cap - 1;
    d->cap = window;
    q->dedup = d;
    return 0;
}

static void del(mqr_qdedup_t *d, uint64_t key)
{
    size_t j = slot(d, key);
    while (d->keys[j] != key) {
        if (!d->keys[j]) return;
        j = (j + 1) & d->mask;
    }
    size_t hole = j;
    for (size_t k = (j + 1) & d->mask; d->keys[k]; k = (k + 1) & d->mask) {
        size_t home = slot(d, d->keys[k]);
        bool stays = hole <= k ? (home > hole && home <= k) : (home > hole || home <= k);
        if (stays) continue;
        d->keys[hole] = d->keys[k];
        d->vals[hole] = d->vals[k];
        hole = k;
    }
    d->keys[hole] = 0;
}

int mqr__q_dedup_check(mqr_queue_t *q, uint64_t key, uint64_t *id)
{
    if (!q->dedup) {
        int rc = init(q);
        if (rc < 0) return rc;
    }
    mqr_qdedup_t *d = q->dedup;
    for (size_t j = slot(d, key); d->keys[j]; j = (j + 1) & d->mask) {
        if (d->keys[j] == key) {
            *id = d->vals[j];
            return 1;
        }
    }
    return 0;
}

void mqr__q_dedup_add(mqr_queue_t *q, uint64_t key, uint64_t id)
{
    mqr_qdedup_t *d = q->dedup; /* set up by the check before */
    if (d->count == d->cap) {
        del(d, d->ring[d->head]);
        d->head = (d->head + 1) % d->cap;
        d->count--;
    }
    d->ring[(d->head + d->count) % d->cap] = key;
    d->count++;
    size_t j = slot(d, key);
    while (d->keys[j])
        j = (j + 1) & d->mask;
    d->keys[j] = key;
    d->vals[j] = id;
}

void mqr__q_dedup_free(mqr_queue_t *q)
{
    mqr_qdedup_t *d = q->dedup;
    if (!d) return;
    free(d->keys);
    free(d->vals);
    free(d->ring);
    free(d);
    q->dedup = NULL;
}
