/*
 * trie.c — the subscription trie: one node per filter level, '+' and '#'
 * children kept apart from exact ones, entries stored at the node of their
 * filter.
 *
 * Matching is the hot path (every message), so it walks the topic once,
 * depth first with an explicit stack, and copies the entry arrays of matched
 * nodes without touching the entries themselves. Exact children sit in a
 * small array scanned by length and bytes while there are few, in an
 * open-addressing table (linear probing, backward-shift deletion, no
 * tombstones) once there are many, so 10 000 siblings cost one probe.
 * Nodes exist only while some entry lives at or below them; they are freed
 * as soon as they empty, even while the trie is held, because a match list
 * never points at nodes. Only entries outlive removal (dead) while held.
 * This file must not look inside `sub` or validate filters: both are the
 * caller's.
 */
#include "trie.h"

#include "hash.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* Up to this many exact children are scanned linearly. */
#define DENSE_MAX 8
#define TABLE_MIN 32

typedef struct {
    mqr_trie_node_t *node; /* NULL = empty slot */
    uint32_t hash;
} slot_t;

struct mqr_trie_group {
    mqr_trie_group_t *next;
    mqr_trie_entry_t **entries;
    uint32_t n;
    uint32_t cap;
    uint32_t rr; /* index of the next entry to hand out */
    uint32_t name_len;
    char name[];
};

/* Levels are short: mqr__hash_words (hash.h) mixes eight bytes at a time.
 * It is not keyed, so clients choosing many colliding sibling levels could
 * lengthen probe runs; a per-trie seed would fix that if it ever matters. */
static inline uint32_t level_hash(const char *s, size_t n)
{
    return mqr__hash_words(s, n);
}

/* Length of the level starting at s (up to the next '/' or n). Levels are
 * short, so a call to memchr costs more than it saves; on little-endian
 * machines eight bytes are tested at once. */
static inline size_t level_len(const char *s, size_t n)
{
    size_t i = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        w ^= 0x2F2F2F2F2F2F2F2Full; /* '/' bytes become zero */
        uint64_t z = (w - 0x0101010101010101ull) & ~w & 0x8080808080808080ull;
        if (z) return i + ((size_t)__builtin_ctzll(z) >> 3);
    }
#endif
    while (i < n && s[i] != '/')
        i++;
    return i;
}

static bool is_table(const mqr_trie_node_t *n)
{
    return n->kcap > DENSE_MAX;
}

/* ---- exact children ---------------------------------------------------- */

/* memcmp(a, b, len) == 0 for levels, which are short: inline, no call.
 * Whole words first; what is left is compared as one word (or two halves)
 * that overlaps bytes already compared, instead of byte by byte. */
static inline bool level_eq(const char *a, const char *b, size_t len)
{
    if (len >= 8) {
        uint64_t x, y;
        for (size_t i = 0; i + 8 <= len; i += 8) {
            memcpy(&x, a + i, 8);
            memcpy(&y, b + i, 8);
            if (x != y) return false;
        }
        memcpy(&x, a + len - 8, 8);
        memcpy(&y, b + len - 8, 8);
        return x == y;
    }
    if (len >= 4) {
        uint32_t x0, y0, x1, y1;
        memcpy(&x0, a, 4);
        memcpy(&y0, b, 4);
        memcpy(&x1, a + len - 4, 4);
        memcpy(&y1, b + len - 4, 4);
        return x0 == y0 && x1 == y1;
    }
    if (len >= 2) {
        uint16_t x0, y0, x1, y1;
        memcpy(&x0, a, 2);
        memcpy(&y0, b, 2);
        memcpy(&x1, a + len - 2, 2);
        memcpy(&y1, b + len - 2, 2);
        return x0 == y0 && x1 == y1;
    }
    return len == 0 || a[0] == b[0];
}

static mqr_trie_node_t *kid_find(const mqr_trie_node_t *n, const char *s, size_t len)
{
    if (!is_table(n)) {
        mqr_trie_node_t *const *kids = n->kids;
        for (uint32_t i = 0; i < n->nkids; i++) {
            mqr_trie_node_t *k = kids[i];
            if (k->level_len == len && level_eq(k->level, s, len)) return k;
        }
        return NULL;
    }
    const slot_t *slots = n->kids;
    uint32_t h = level_hash(s, len), mask = n->kcap - 1;
    for (uint32_t i = h & mask;; i = (i + 1) & mask) {
        mqr_trie_node_t *k = slots[i].node;
        if (!k) return NULL;
        if (slots[i].hash == h && k->level_len == len && level_eq(k->level, s, len)) return k;
    }
}

static void table_put(slot_t *slots, uint32_t cap, mqr_trie_node_t *k)
{
    uint32_t mask = cap - 1, i = k->level_hash & mask;
    while (slots[i].node)
        i = (i + 1) & mask;
    slots[i].node = k;
    slots[i].hash = k->level_hash;
}

/* Rebuilds the children of n with capacity cap (dense when cap <=
 * DENSE_MAX). On failure n is unchanged. */
static int kids_rebuild(mqr_trie_node_t *n, uint32_t cap)
{
    void *fresh;
    if (cap <= DENSE_MAX) {
        mqr_trie_node_t **d = malloc(cap * sizeof *d);
        if (!d) return MQR_ENOMEM;
        uint32_t j = 0;
        if (is_table(n)) {
            slot_t *old = n->kids;
            for (uint32_t i = 0; i < n->kcap; i++)
                if (old[i].node) d[j++] = old[i].node;
        } else if (n->nkids) {
            memcpy(d, n->kids, n->nkids * sizeof *d);
        }
        fresh = d;
    } else {
        slot_t *s = calloc(cap, sizeof *s);
        if (!s) return MQR_ENOMEM;
        if (is_table(n)) {
            slot_t *old = n->kids;
            for (uint32_t i = 0; i < n->kcap; i++)
                if (old[i].node) table_put(s, cap, old[i].node);
        } else {
            mqr_trie_node_t **old = n->kids;
            for (uint32_t i = 0; i < n->nkids; i++)
                table_put(s, cap, old[i]);
        }
        fresh = s;
    }
    free(n->kids);
    n->kids = fresh;
    n->kcap = cap;
    return 0;
}

static int kid_insert(mqr_trie_node_t *n, mqr_trie_node_t *k)
{
    if (!is_table(n)) {
        if (n->nkids == n->kcap) {
            uint32_t cap = n->kcap ? n->kcap * 2 : 2;
            if (cap > DENSE_MAX) cap = TABLE_MIN;
            int rc = kids_rebuild(n, cap);
            if (rc < 0) return rc;
        }
    } else if ((uint64_t)(n->nkids + 1) * 4 > (uint64_t)n->kcap * 3) {
        int rc = kids_rebuild(n, n->kcap * 2);
        if (rc < 0) return rc;
    }
    if (is_table(n)) {
        table_put(n->kids, n->kcap, k);
    } else {
        mqr_trie_node_t **kids = n->kids;
        kids[n->nkids] = k;
    }
    n->nkids++;
    return 0;
}

static void kid_delete(mqr_trie_node_t *n, mqr_trie_node_t *k)
{
    if (!is_table(n)) {
        mqr_trie_node_t **kids = n->kids;
        uint32_t i = 0;
        while (kids[i] != k)
            i++;
        kids[i] = kids[--n->nkids];
    } else {
        slot_t *slots = n->kids;
        uint32_t mask = n->kcap - 1, i = k->level_hash & mask;
        while (slots[i].node != k)
            i = (i + 1) & mask;
        /* Backward shift: pull later members of the probe run into the hole
         * unless their home slot lies cyclically in (hole, j]. */
        for (uint32_t j = (i + 1) & mask; slots[j].node; j = (j + 1) & mask) {
            uint32_t home = slots[j].hash & mask;
            bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
            if (!stays) {
                slots[i] = slots[j];
                i = j;
            }
        }
        slots[i].node = NULL;
        n->nkids--;
    }
    if (n->nkids == 0) {
        free(n->kids);
        n->kids = NULL;
        n->kcap = 0;
    } else if (is_table(n)) {
        /* Shrinking is best effort: a failed allocation leaves a roomier table. */
        if (n->nkids <= DENSE_MAX / 2)
            (void)kids_rebuild(n, DENSE_MAX);
        else if (n->kcap > TABLE_MIN && (uint64_t)n->nkids * 8 < n->kcap)
            (void)kids_rebuild(n, n->kcap / 2);
    }
}

/* ---- nodes ------------------------------------------------------------- */

static bool node_empty(const mqr_trie_node_t *n)
{
    return !n->nsubs && !n->groups && !n->nkids && !n->plus && !n->hash;
}

/* Frees n and its ancestors while they hold nothing; the root stays. */
static void prune(mqr_trie_t *t, mqr_trie_node_t *n)
{
    while (n != &t->root && node_empty(n)) {
        mqr_trie_node_t *p = n->parent;
        if (p->plus == n)
            p->plus = NULL;
        else if (p->hash == n)
            p->hash = NULL;
        else
            kid_delete(p, n);
        free(n);
        n = p;
    }
}

static mqr_trie_node_t *child_get(mqr_trie_node_t *n, const char *s, size_t len)
{
    bool plus = len == 1 && s[0] == '+', hash = len == 1 && s[0] == '#';
    mqr_trie_node_t *k = plus ? n->plus : hash ? n->hash : kid_find(n, s, len);
    if (k) return k;
    k = calloc(1, sizeof *k + len + 1);
    if (!k) return NULL;
    char *level = (char *)(k + 1);
    memcpy(level, s, len);
    k->level = level;
    k->level_len = (uint32_t)len;
    k->level_hash = level_hash(s, len);
    k->parent = n;
    if (plus) {
        n->plus = k;
    } else if (hash) {
        n->hash = k;
    } else if (kid_insert(n, k) < 0) {
        free(k);
        return NULL;
    }
    return k;
}

/* The node of filter, created as needed; NULL when out of memory (any nodes
 * made on the way are pruned again). */
static mqr_trie_node_t *node_make(mqr_trie_t *t, const char *f, size_t len)
{
    mqr_trie_node_t *n = &t->root;
    size_t pos = 0;
    for (;;) {
        size_t end = pos + level_len(f + pos, len - pos);
        mqr_trie_node_t *k = child_get(n, f + pos, end - pos);
        if (!k) {
            prune(t, n);
            return NULL;
        }
        n = k;
        if (end == len) return n;
        pos = end + 1;
    }
}

/* The node of filter if it exists. */
static mqr_trie_node_t *node_lookup(mqr_trie_t *t, const char *f, size_t len)
{
    mqr_trie_node_t *n = &t->root;
    size_t pos = 0;
    for (;;) {
        size_t end = pos + level_len(f + pos, len - pos);
        size_t l = end - pos;
        const char *s = f + pos;
        n = l == 1 && s[0] == '+' ? n->plus : l == 1 && s[0] == '#' ? n->hash : kid_find(n, s, l);
        if (!n || end == len) return n;
        pos = end + 1;
    }
}

/* ---- entry arrays ------------------------------------------------------ */

static int array_push(mqr_trie_entry_t ***arr, uint32_t *n, uint32_t *cap, mqr_trie_entry_t *e)
{
    if (*n == *cap) {
        uint32_t c = *cap ? *cap * 2 : 2;
        mqr_trie_entry_t **a = realloc(*arr, c * sizeof *a);
        if (!a) return MQR_ENOMEM;
        *arr = a;
        *cap = c;
    }
    e->idx = *n;
    (*arr)[(*n)++] = e;
    return 0;
}

static void array_delete(mqr_trie_entry_t ***arr, uint32_t *n, uint32_t *cap, mqr_trie_entry_t *e)
{
    mqr_trie_entry_t **a = *arr;
    assert(e->idx < *n && a[e->idx] == e);
    mqr_trie_entry_t *last = a[--*n];
    a[e->idx] = last;
    last->idx = e->idx;
    if (*n == 0) {
        free(a);
        *arr = NULL;
        *cap = 0;
    } else if (*cap >= 16 && *n * 4 < *cap) {
        mqr_trie_entry_t **s = realloc(a, (*cap / 2) * sizeof *s);
        if (s) {
            *arr = s;
            *cap /= 2;
        }
    }
}

/* ---- trie -------------------------------------------------------------- */

int mqr__trie_init(mqr_trie_t *t)
{
    memset(t, 0, sizeof *t);
    t->root.level = "";
    return 0;
}

static void free_dead(mqr_trie_t *t)
{
    mqr_trie_entry_t *e = t->dead;
    t->dead = NULL;
    while (e) {
        mqr_trie_entry_t *next = e->dead_next;
        free(e);
        e = next;
    }
}

void mqr__trie_close(mqr_trie_t *t)
{
    /* Removing every entry prunes every node, as nodes live only under
     * entries; the root ends with no arrays left. */
    t->holds = 0;
    while (t->first)
        mqr__trie_remove(t, t->first);
    free_dead(t);
    assert(node_empty(&t->root) && !t->root.kids && !t->root.subs);
}

static mqr_trie_entry_t *add(mqr_trie_t *t, const char *group, size_t glen, const char *filter,
                             size_t len, void *sub, const mqr_sub_opts_t *opts)
{
    assert(len > 0 && len <= UINT16_MAX && glen <= UINT16_MAX);
    mqr_trie_entry_t *e = malloc(sizeof *e + len + 1 + glen + 1);
    if (!e) return NULL;
    memset(e, 0, sizeof *e);
    e->sub = sub;
    if (opts) e->opts = *opts;
    e->filter_len = (uint16_t)len;
    e->group_len = (uint16_t)glen;
    memcpy(e->text, filter, len);
    e->text[len] = '\0';
    if (glen) memcpy(e->text + len + 1, group, glen);
    e->text[len + 1 + glen] = '\0';

    mqr_trie_node_t *n = node_make(t, filter, len);
    if (!n) goto fail;
    if (!glen) {
        if (array_push(&n->subs, &n->nsubs, &n->scap, e) < 0) goto fail_node;
    } else {
        mqr_trie_group_t *g = n->groups;
        while (g && !(g->name_len == glen && memcmp(g->name, group, glen) == 0))
            g = g->next;
        bool fresh = !g;
        if (fresh) {
            g = calloc(1, sizeof *g + glen + 1);
            if (!g) goto fail_node;
            memcpy(g->name, group, glen);
            g->name_len = (uint32_t)glen;
        }
        if (array_push(&g->entries, &g->n, &g->cap, e) < 0) {
            if (fresh) free(g);
            goto fail_node;
        }
        if (fresh) {
            g->next = n->groups;
            n->groups = g;
        }
        e->group = g;
    }
    e->node = n;
    e->seq = ++t->seq;
    e->prev = t->last;
    if (t->last)
        t->last->next = e;
    else
        t->first = e;
    t->last = e;
    t->count++;
    return e;

fail_node:
    prune(t, n);
fail:
    free(e);
    return NULL;
}

mqr_trie_entry_t *mqr__trie_add(mqr_trie_t *t, const char *filter, size_t len, void *sub,
                                const mqr_sub_opts_t *opts)
{
    return add(t, NULL, 0, filter, len, sub, opts);
}

mqr_trie_entry_t *mqr__trie_add_shared(mqr_trie_t *t, const char *group, size_t glen,
                                       const char *filter, size_t len, void *sub,
                                       const mqr_sub_opts_t *opts)
{
    assert(glen > 0);
    return add(t, group, glen, filter, len, sub, opts);
}

void mqr__trie_remove(mqr_trie_t *t, mqr_trie_entry_t *e)
{
    mqr_trie_node_t *n = e->node;
    if (!n) return; /* already removed, kept for a hold */
    mqr_trie_group_t *g = e->group;
    if (!g) {
        array_delete(&n->subs, &n->nsubs, &n->scap, e);
    } else {
        array_delete(&g->entries, &g->n, &g->cap, e);
        if (g->n == 0) {
            mqr_trie_group_t **pp = &n->groups;
            while (*pp != g)
                pp = &(*pp)->next;
            *pp = g->next;
            free(g);
        }
        e->group = NULL;
    }
    /* Unlink from the add-order list but keep e->next: an iteration standing
     * on e steps on from there (see mqr__trie_foreach). */
    if (e->prev)
        e->prev->next = e->next;
    else
        t->first = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        t->last = e->prev;
    e->prev = NULL;
    e->node = NULL;
    t->count--;
    prune(t, n);
    if (t->holds) {
        e->dead_next = t->dead;
        t->dead = e;
    } else {
        free(e);
    }
}

mqr_trie_entry_t *mqr__trie_find(mqr_trie_t *t, const char *group, size_t glen, const char *filter,
                                 size_t len, const void *sub)
{
    mqr_trie_node_t *n = node_lookup(t, filter, len);
    if (!n) return NULL;
    mqr_trie_entry_t **a;
    uint32_t cnt;
    if (!group) {
        a = n->subs;
        cnt = n->nsubs;
    } else {
        mqr_trie_group_t *g = n->groups;
        while (g && !(g->name_len == glen && memcmp(g->name, group, glen) == 0))
            g = g->next;
        if (!g) return NULL;
        a = g->entries;
        cnt = g->n;
    }
    mqr_trie_entry_t *best = NULL;
    for (uint32_t i = 0; i < cnt; i++)
        if (a[i]->sub == sub && (!best || a[i]->seq < best->seq)) best = a[i];
    return best;
}

void mqr__trie_hold(mqr_trie_t *t)
{
    t->holds++;
}

void mqr__trie_release(mqr_trie_t *t)
{
    assert(t->holds > 0);
    if (--t->holds == 0) free_dead(t);
}

int mqr__trie_foreach(mqr_trie_t *t, mqr_trie_visit_fn fn, void *arg)
{
    /* Held, so an entry fn removes stays readable; its next still leads, via
     * entries removed later, to every older entry still alive. */
    int rc = 0;
    mqr__trie_hold(t);
    for (mqr_trie_entry_t *e = t->first; e; e = e->next) {
        if (!mqr__trie_entry_alive(e)) continue;
        rc = fn(e, arg);
        if (rc) break;
    }
    mqr__trie_release(t);
    return rc;
}

/* ---- matching ---------------------------------------------------------- */

void mqr__trie_matches_init(mqr_trie_matches_t *m)
{
    m->entries = m->inline_;
    m->count = 0;
    m->cap = MQR_TRIE_MATCHES_INLINE;
}

void mqr__trie_matches_free(mqr_trie_matches_t *m)
{
    if (m->entries != m->inline_) free(m->entries);
    mqr__trie_matches_init(m);
}

static int matches_grow(mqr_trie_matches_t *m, size_t need)
{
    size_t cap = m->cap * 2;
    while (cap < need)
        cap *= 2;
    mqr_trie_entry_t **a;
    if (m->entries == m->inline_) {
        a = malloc(cap * sizeof *a);
        if (a) memcpy(a, m->inline_, m->count * sizeof *a);
    } else {
        a = realloc(m->entries, cap * sizeof *a);
    }
    if (!a) return MQR_ENOMEM;
    m->entries = a;
    m->cap = cap;
    return 0;
}

static int collect(mqr_trie_node_t *n, mqr_trie_matches_t *out)
{
    size_t need = out->count + n->nsubs;
    if (need > out->cap && matches_grow(out, need) < 0) return MQR_ENOMEM;
    if (n->nsubs) memcpy(out->entries + out->count, n->subs, n->nsubs * sizeof *n->subs);
    out->count = need;
    for (mqr_trie_group_t *g = n->groups; g; g = g->next) {
        if (out->count == out->cap && matches_grow(out, out->count + 1) < 0) return MQR_ENOMEM;
        uint32_t i = g->rr < g->n ? g->rr : 0;
        g->rr = i + 1;
        out->entries[out->count++] = g->entries[i];
    }
    return 0;
}

typedef struct {
    mqr_trie_node_t *node;
    size_t pos; /* start of the topic level to match below node; len + 1 once all are used */
} frame_t;

#define STACK_INLINE 64

/* Calls visit(node, arg) for every node whose entries match topic (the walk
 * of mqr__trie_match and mqr__trie_count_matches); a negative return stops
 * it. */
static inline int walk(mqr_trie_t *t, const char *topic, size_t len,
                       int (*visit)(mqr_trie_node_t *n, void *arg), void *arg)
{
    frame_t inline_stack[STACK_INLINE];
    frame_t *stack = inline_stack;
    size_t sp = 0, cap = STACK_INLINE;
    int rc = 0;
    /* [MQTT-4.7.2-1]: no first-level wildcard reaches a '$' topic. */
    bool dollar = len > 0 && topic[0] == '$';
    stack[sp++] = (frame_t){&t->root, 0};
    while (sp) {
        frame_t f = stack[--sp];
        mqr_trie_node_t *n = f.node;
        size_t pos = f.pos;
        for (;;) {
            bool wild = !(dollar && n == &t->root);
            /* '#' also matches the parent level: "a/#" matches "a". */
            if (n->hash && wild && (rc = visit(n->hash, arg)) < 0) goto out;
            if (pos > len) {
                if ((rc = visit(n, arg)) < 0) goto out;
                break;
            }
            const char *s = topic + pos;
            size_t l = level_len(s, len - pos);
            size_t next = pos + l + 1;
            if (n->plus && wild) {
                if (sp == cap) {
                    /* Depth-first with one pending '+' branch per level, so
                     * the stack never exceeds the level count. */
                    frame_t *bigger = malloc(cap * 2 * sizeof *bigger);
                    if (!bigger) {
                        rc = MQR_ENOMEM;
                        goto out;
                    }
                    memcpy(bigger, stack, sp * sizeof *stack);
                    if (stack != inline_stack) free(stack);
                    stack = bigger;
                    cap *= 2;
                }
                stack[sp++] = (frame_t){n->plus, next};
            }
            if (!n->nkids) break;
            n = kid_find(n, s, l);
            if (!n) break;
            pos = next;
        }
    }
out:
    if (stack != inline_stack) free(stack);
    return rc;
}

static int collect_visit(mqr_trie_node_t *n, void *arg)
{
    return collect(n, arg);
}

int mqr__trie_match(mqr_trie_t *t, const char *topic, size_t len, mqr_trie_matches_t *out)
{
    return walk(t, topic, len, collect_visit, out);
}

/* Every entry, shared group members included; no round robin moves. */
static int count_visit(mqr_trie_node_t *n, void *arg)
{
    size_t *c = arg;
    *c += n->nsubs;
    for (mqr_trie_group_t *g = n->groups; g; g = g->next)
        *c += g->n;
    return 0;
}

int mqr__trie_count_matches(mqr_trie_t *t, const char *topic, size_t len, size_t *out)
{
    *out = 0;
    return walk(t, topic, len, count_visit, out);
}
