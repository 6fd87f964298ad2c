/*
 * registry_topics.c — the topic registry: every topic published through the
 * router, with its message count and last message time, in a bounded hash
 * table; topic info (subscribers from the trie, retained from the retained
 * table), paginated lists by prefix, and topic/filter validation.
 *
 * mqr__topics_seen is on every publish's path: one hash of the topic and
 * one chain walk, no allocation for a topic already tracked. A topic not
 * tracked while the table is at its bound is counted (topics_dropped) and
 * left out. Memory only. Must not: route, or touch the store.
 */
#include "registry.h"
#include "engine.h"
#include "hash.h"

#include "topic.h"
#include "trie.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct tentry tentry_t;
struct tentry {
    tentry_t *next;
    uint32_t hash;
    uint32_t len;
    uint64_t msgs, last_ms;
    char topic[]; /* NUL-terminated */
};

struct mqr_topics {
    tentry_t **buckets;
    size_t cap, count, max;
    uint64_t dropped;
    tentry_t *last; /* the entry of the previous publish: bursts on one topic skip the hash */
    tentry_t **index;
    size_t index_len;
    bool index_stale;
};

struct mqr_topics **mqr__registry_topics_slot(mqr_registry_t *r);
const mqr_registry_deps_t *mqr__registry_deps(const mqr_registry_t *r);
void mqr__topics_free(mqr_registry_t *r);

static struct mqr_topics *topics_of(mqr_registry_t *r)
{
    struct mqr_topics **slot = mqr__registry_topics_slot(r);
    if (!*slot) *slot = calloc(1, sizeof **slot);
    return *slot;
}

void mqr__topics_free(mqr_registry_t *r)
{
    struct mqr_topics **slot = mqr__registry_topics_slot(r);
    struct mqr_topics *t = *slot;
    if (!t) return;
    for (size_t i = 0; i < t->cap; i++) {
        tentry_t *e = t->buckets[i];
        while (e) {
            tentry_t *next = e->next;
            free(e);
            e = next;
        }
    }
    free(t->buckets);
    free(t->index);
    free(t);
    *slot = NULL;
}

void mqr__topics_set_max(mqr_registry_t *r, size_t max)
{
    struct mqr_topics *t = topics_of(r);
    if (t) t->max = max ? max : MQR_TOPICS_MAX_DEFAULT;
}

/* On every publish: the word-at-a-time hash, not FNV's byte loop. */
static uint32_t thash(const char *s, size_t len)
{
    return mqr__hash_words(s, len);
}

static tentry_t *tfind(const struct mqr_topics *t, const char *topic, size_t len, uint32_t h)
{
    if (!t->cap) return NULL;
    for (tentry_t *e = t->buckets[h & (t->cap - 1)]; e; e = e->next)
        if (e->hash == h && e->len == len && memcmp(e->topic, topic, len) == 0) return e;
    return NULL;
}

static int tgrow(struct mqr_topics *t)
{
    if (t->count < t->cap) return 0;
    size_t cap = t->cap ? t->cap * 2 : 256;
    tentry_t **b = calloc(cap, sizeof *b);
    if (!b) return MQR_ENOMEM;
    for (size_t i = 0; i < t->cap; i++) {
        tentry_t *e = t->buckets[i];
        while (e) {
            tentry_t *next = e->next;
            e->next = b[e->hash & (cap - 1)];
            b[e->hash & (cap - 1)] = e;
            e = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->cap = cap;
    return 0;
}

void mqr__topics_seen(mqr_registry_t *r, const char *topic, size_t len, uint64_t when_ms)
{
    struct mqr_topics *t = *(struct mqr_topics **)r; /* its first member */
    if (!t) return;
    tentry_t *e = t->last;
    if (e && e->len == len && memcmp(e->topic, topic, len) == 0) {
        e->msgs++;
        e->last_ms = when_ms;
        return;
    }
    if (topic[0] == '$' && len >= 5 && memcmp(topic, "$SYS/", 5) == 0)
        return; /* the engine's own statistics are not traffic */
    uint32_t h = thash(topic, len);
    e = tfind(t, topic, len, h);
    if (!e) {
        if (t->count >= t->max || tgrow(t) < 0 || !(e = malloc(sizeof *e + len + 1))) {
            t->dropped++;
            return;
        }
        e->hash = h;
        e->len = (uint32_t)len;
        e->msgs = 0;
        memcpy(e->topic, topic, len);
        e->topic[len] = '\0';
        e->next = t->buckets[h & (t->cap - 1)];
        t->buckets[h & (t->cap - 1)] = e;
        t->count++;
        t->index_stale = true;
    }
    e->msgs++;
    e->last_ms = when_ms; /* no clock read per message */
    t->last = e;
}

void mqr__topics_stats(mqr_registry_t *r, mqr_registry_stats_t *out);
void mqr__topics_stats(mqr_registry_t *r, mqr_registry_stats_t *out)
{
    struct mqr_topics *t = *mqr__registry_topics_slot(r);
    if (!t) return;
    out->topics = t->count;
    out->topics_max = t->max;
    out->topics_dropped = t->dropped;
}

/* ---- info ------------------------------------------------------------------ */

/* Entries of the router's trie that match topic: O(levels), and it leaves
 * shared subscriptions' round robin alone. */
static uint64_t subscribers(const mqr_registry_deps_t *d, const char *topic, size_t len)
{
    size_t n = 0;
    mqr__trie_count_matches(&d->router->trie, topic, len, &n);
    return n;
}

static void fill(mqr_registry_t *r, const tentry_t *te, const char *topic, size_t len,
                 mqr_topic_info_t *out)
{
    const mqr_registry_deps_t *d = mqr__registry_deps(r);
    *out = (mqr_topic_info_t){
        .topic = topic,
        .tracked = te != NULL,
        .messages = te ? te->msgs : 0,
        .last_ms = te ? te->last_ms : 0,
        .subscribers = subscribers(d, topic, len),
        .retained = mqr__retain_get(d->retain, topic, len) != NULL,
    };
}

int mqr__topic_info(mqr_registry_t *r, const char *topic, mqr_topic_info_t *out)
{
    if (!r || !topic || !out) return MQR_EINVAL;
    size_t len = strlen(topic);
    int rc = mqr__topic_name_validate(topic, len);
    if (rc < 0) return rc;
    struct mqr_topics *t = *mqr__registry_topics_slot(r);
    const tentry_t *te = t ? tfind(t, topic, len, thash(topic, len)) : NULL;
    fill(r, te, topic, len, out);
    return 0;
}

static int tcmp(const void *a, const void *b)
{
    const tentry_t *x = *(tentry_t *const *)a, *y = *(tentry_t *const *)b;
    return strcmp(x->topic, y->topic);
}

int mqr__topics_list(mqr_registry_t *r, const char *prefix, unsigned limit, const char *cursor,
                     mqr_topic_fn cb, void *arg, char *next, size_t next_cap)
{
    /* next may be the cursor's own buffer: written at the end only */
    if (!r || !cb) return MQR_EINVAL;
    if (limit > MQR_REGISTRY_LIMIT_MAX) return MQR_EINVAL;
    if (!limit) limit = MQR_REGISTRY_LIMIT_DEFAULT;
    if (cursor && cursor[0] && mqr__topic_name_validate(cursor, strlen(cursor)) < 0)
        return MQR_EINVAL;
    struct mqr_topics *t = *mqr__registry_topics_slot(r);
    if (!t || !t->count) {
        if (next && next_cap) next[0] = '\0';
        return 0;
    }
    if (t->index_stale || t->index_len != t->count) {
        tentry_t **ix = realloc(t->index, t->count * sizeof *ix);
        if (!ix) return MQR_ENOMEM;
        t->index = ix;
        size_t n = 0;
        for (size_t i = 0; i < t->cap; i++)
            for (tentry_t *te = t->buckets[i]; te; te = te->next)
                ix[n++] = te;
        qsort(ix, n, sizeof *ix, tcmp);
        t->index_len = n;
        t->index_stale = false;
    }
    /* first entry after the cursor, or at/after the prefix */
    const char *from = cursor && cursor[0] ? cursor : (prefix ? prefix : "");
    bool strict = cursor && cursor[0];
    size_t lo = 0, hi = t->index_len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(t->index[mid]->topic, from);
        if (c < 0 || (strict && c == 0))
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t plen = prefix ? strlen(prefix) : 0;
    int n = 0;
    const tentry_t *last = NULL;
    bool more = false;
    for (size_t pos = lo; pos < t->index_len; pos++) {
        const tentry_t *te = t->index[pos];
        if (plen && strncmp(te->topic, prefix, plen) != 0) {
            if (strcmp(te->topic, prefix) > 0) break; /* past every match */
            continue;
        }
        if ((unsigned)n == limit) {
            more = true;
            break;
        }
        mqr_topic_info_t info;
        fill(r, te, te->topic, te->len, &info);
        last = te;
        n++;
        if (cb(arg, &info) != 0) {
            more = pos + 1 < t->index_len;
            break;
        }
    }
    if (next && next_cap) {
        if (more && last)
            snprintf(next, next_cap, "%s", last->topic);
        else
            next[0] = '\0';
    }
    return n;
}

int mqr__topic_validate(const char *t, size_t len, bool wildcards, const char **why)
{
    if (why) *why = NULL;
    if (!t) return MQR_EINVAL;
    if (!wildcards) return mqr__topic_name_check(t, len, why);
    mqr_topic_filter_t tf;
    return mqr__topic_filter_parse(t, len, &tf, why);
}
