/*
 * trie.h — the one subscription trie: every subscriber of every kind (Lua
 * routes, C callbacks, listener clients, upstream sessions, queues) is an
 * entry in it, and a topic is matched in O(levels of the topic).
 *
 * The trie owns its entries; what an entry's `sub` points at stays the
 * caller's and is never touched here. Filters handed in must already be
 * validated (topic.h); the trie does not check them again. Loop thread
 * only: nothing here is thread-safe.
 *
 * Delivery pattern (the router's): init a match vector, mqr__trie_match(),
 * mqr__trie_hold(), call each entry that is still mqr__trie_entry_alive(),
 * mqr__trie_release(). Subscribers may add and remove entries during the
 * calls, the one being delivered included: a removed entry stays readable
 * (dead) until the last release, and an added one is not in the list
 * already collected.
 */
#ifndef MQR_TRIE_H
#define MQR_TRIE_H

#include "mqrouter.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Options of one subscription, kept with the entry for the subscriber's use;
 * the trie only stores them. */
typedef struct {
    uint8_t qos;              /* maximum QoS, 0..2 */
    bool no_local;            /* v5: not to the connection that published */
    bool retain_as_published; /* v5 */
    uint8_t retain_handling;  /* v5: 0, 1 or 2 */
    uint32_t subscription_id; /* v5: 0 = none */
    uintptr_t tag;            /* free for the owner */
} mqr_sub_opts_t;

typedef struct mqr_trie_node mqr_trie_node_t;
typedef struct mqr_trie_group mqr_trie_group_t;
typedef struct mqr_trie_entry mqr_trie_entry_t;

/* One subscription. `sub` and `opts` are the caller's to read and write
 * (changing opts in place is how to update a subscription); `seq` may be
 * read; the rest belongs to the trie (use the accessors below). */
struct mqr_trie_entry {
    void *sub;
    mqr_sub_opts_t opts;
    uint64_t seq; /* add order, unique per trie: sort by it for declaration order */
    /* private */
    mqr_trie_node_t *node;   /* NULL once removed (dead) */
    mqr_trie_group_t *group; /* share group, NULL if not shared */
    uint32_t idx;            /* position in node's or group's entry array */
    uint16_t filter_len;
    uint16_t group_len;
    mqr_trie_entry_t *prev;      /* all live entries, in add order */
    mqr_trie_entry_t *next;      /* kept as it was at removal, so iteration can step past */
    mqr_trie_entry_t *dead_next; /* entries waiting for the last release */
    char text[];                 /* filter NUL group NUL */
};

/* A level of the trie. Public only so mqr_trie_t can embed its root. */
struct mqr_trie_node {
    mqr_trie_node_t *parent;
    mqr_trie_node_t *plus; /* '+' child */
    mqr_trie_node_t *hash; /* '#' child */
    void *kids;            /* exact-level children, see trie.c */
    uint32_t nkids;
    uint32_t kcap;
    mqr_trie_entry_t **subs; /* non-shared entries with exactly this filter */
    uint32_t nsubs;
    uint32_t scap;
    mqr_trie_group_t *groups; /* share groups with exactly this filter */
    uint32_t level_hash;
    uint32_t level_len;
    const char *level;
};

typedef struct {
    mqr_trie_node_t root;
    size_t count; /* live entries */
    uint64_t seq; /* last seq given */
    unsigned holds;
    mqr_trie_entry_t *first; /* live entries in add order */
    mqr_trie_entry_t *last;
    mqr_trie_entry_t *dead; /* removed while held, freed at the last release */
} mqr_trie_t;

/* Always returns 0 (no allocation); int so callers need not change if it
 * ever allocates. */
int mqr__trie_init(mqr_trie_t *t);
/* Frees every node and entry, live or dead, whatever the holds. */
void mqr__trie_close(mqr_trie_t *t);

/* Adds a subscription for filter[0..len) (validated, not shared; at most
 * 65535 bytes). sub is stored, never dereferenced; opts is copied (NULL =
 * all zero). Several entries may share filter and sub. Returns the entry,
 * owned by the trie until removed, or NULL when out of memory (nothing
 * changed). */
mqr_trie_entry_t *mqr__trie_add(mqr_trie_t *t, const char *filter, size_t len, void *sub,
                                const mqr_sub_opts_t *opts);
/* Same as a member of share group group[0..glen) (non-empty; the parsed
 * "$share/<group>/<filter>"). A match yields one entry per (group, filter),
 * round robin. */
mqr_trie_entry_t *mqr__trie_add_shared(mqr_trie_t *t, const char *group, size_t glen,
                                       const char *filter, size_t len, void *sub,
                                       const mqr_sub_opts_t *opts);

/* Removes e at once from matching and iteration. Without holds it is freed
 * now; while held it stays readable, dead, until the last release. Removing
 * an entry that is already dead (but not yet freed) does nothing. */
void mqr__trie_remove(mqr_trie_t *t, mqr_trie_entry_t *e);

/* The first live entry with exactly this filter, group (NULL = not shared)
 * and sub, or NULL. For "subscribe again replaces" semantics. */
mqr_trie_entry_t *mqr__trie_find(mqr_trie_t *t, const char *group, size_t glen, const char *filter,
                                 size_t len, const void *sub);

static inline bool mqr__trie_entry_alive(const mqr_trie_entry_t *e)
{
    return e->node != NULL;
}
/* The entry's filter (the inner one for a shared entry), NUL-terminated. */
static inline const char *mqr__trie_entry_filter(const mqr_trie_entry_t *e, size_t *len)
{
    if (len) *len = e->filter_len;
    return e->text;
}
/* The share group, NUL-terminated, or NULL when not shared. */
static inline const char *mqr__trie_entry_group(const mqr_trie_entry_t *e, size_t *len)
{
    if (len) *len = e->group_len;
    return e->group_len ? e->text + e->filter_len + 1 : NULL;
}

/* Holds are counted and nest. */
void mqr__trie_hold(mqr_trie_t *t);
void mqr__trie_release(mqr_trie_t *t);

static inline size_t mqr__trie_count(const mqr_trie_t *t)
{
    return t->count;
}

/* Calls fn for each live entry in add order, until fn returns non-zero,
 * which is then returned (0 after a full walk). fn may add and remove
 * entries: removed ones are not visited later, added ones may or may not
 * be. */
typedef int (*mqr_trie_visit_fn)(mqr_trie_entry_t *e, void *arg);
int mqr__trie_foreach(mqr_trie_t *t, mqr_trie_visit_fn fn, void *arg);

/* ---- match results ---------------------------------------------------- */

#define MQR_TRIE_MATCHES_INLINE 16

/* A vector of matched entries: inline room for MQR_TRIE_MATCHES_INLINE, on
 * the heap beyond. `entries` may point into the struct itself, so an
 * initialised vector must not be copied or moved. */
typedef struct {
    mqr_trie_entry_t **entries;
    size_t count;
    size_t cap;
    mqr_trie_entry_t *inline_[MQR_TRIE_MATCHES_INLINE];
} mqr_trie_matches_t;

void mqr__trie_matches_init(mqr_trie_matches_t *m);
/* Empties the vector, keeping its storage. */
static inline void mqr__trie_matches_reset(mqr_trie_matches_t *m)
{
    m->count = 0;
}
void mqr__trie_matches_free(mqr_trie_matches_t *m);

/* Appends to out every entry whose filter matches topic[0..len) (a valid
 * topic name): all plain entries, and one entry per share group and filter.
 * Order is unspecified (sort by seq for add order). A subscriber with several
 * matching entries (overlapping filters) appears once per entry: merging is
 * the subscriber's business. Round-robin state advances with each match.
 * Returns 0, or MQR_ENOMEM when out could not grow (out then holds what was
 * found so far). Allocates only when out outgrows its inline room, or for a
 * topic of more than about 60 levels whose walk branches on '+'. */
int mqr__trie_match(mqr_trie_t *t, const char *topic, size_t len, mqr_trie_matches_t *out);
/* How many entries match topic (every member of a share group counted),
 * without touching any group's round robin: for statistics. 0 or
 * MQR_ENOMEM (*out then partial). */
int mqr__trie_count_matches(mqr_trie_t *t, const char *topic, size_t len, size_t *out);

#endif
