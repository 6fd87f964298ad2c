/*
 * test_trie.c — the subscription trie: matching against the reference
 * matcher of topic.c on seeded random filters and topics, the '$' rule,
 * removal and addition while held, share-group round robin, many siblings,
 * deep topics, iteration, and clean teardown (ASan builds check leaks).
 *
 * Entries' `sub` values here are small tags cast to pointers: the trie must
 * never dereference them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "topic.h"
#include "trie.h"

#define SUB(n) ((void *)(uintptr_t)(n))

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    /* xorshift64*: seeded, so a failure replays */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 32) % n;
}

static int ptr_cmp(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (void *const *)a, y = (uintptr_t) * (void *const *)b;
    return x < y ? -1 : x > y;
}

static mqr_trie_entry_t *add(mqr_trie_t *t, const char *f, uintptr_t sub)
{
    assert_int_equal(mqr__topic_filter_validate(f, strlen(f)), 0);
    mqr_trie_entry_t *e = mqr__trie_add(t, f, strlen(f), SUB(sub), NULL);
    assert_non_null(e);
    return e;
}

static mqr_trie_entry_t *add_shared(mqr_trie_t *t, const char *g, const char *f, uintptr_t sub)
{
    mqr_trie_entry_t *e = mqr__trie_add_shared(t, g, strlen(g), f, strlen(f), SUB(sub), NULL);
    assert_non_null(e);
    return e;
}

/* Matches topic into m (reset first) and sorts by address. */
static void match(mqr_trie_t *t, const char *topic, mqr_trie_matches_t *m)
{
    assert_int_equal(mqr__topic_name_validate(topic, strlen(topic)), 0);
    mqr__trie_matches_reset(m);
    assert_int_equal(mqr__trie_match(t, topic, strlen(topic), m), 0);
    qsort(m->entries, m->count, sizeof *m->entries, ptr_cmp);
}

static bool has(const mqr_trie_matches_t *m, const mqr_trie_entry_t *e)
{
    for (size_t i = 0; i < m->count; i++)
        if (m->entries[i] == e) return true;
    return false;
}

static size_t count_matches(mqr_trie_t *t, const char *topic)
{
    mqr_trie_matches_t m;
    mqr__trie_matches_init(&m);
    match(t, topic, &m);
    size_t n = m.count;
    mqr__trie_matches_free(&m);
    return n;
}

static void assert_trie_empty(mqr_trie_t *t)
{
    assert_int_equal(mqr__trie_count(t), 0);
    assert_null(t->first);
    assert_null(t->last);
    /* every node pruned: the root holds nothing */
    assert_int_equal(t->root.nkids, 0);
    assert_null(t->root.kids);
    assert_null(t->root.plus);
    assert_null(t->root.hash);
    assert_int_equal(t->root.nsubs, 0);
    assert_null(t->root.groups);
}

static void test_basic(void **state)
{
    (void)state;
    mqr_trie_t t;
    assert_int_equal(mqr__trie_init(&t), 0);
    mqr_sub_opts_t opts = {.qos = 1, .no_local = true, .subscription_id = 42, .tag = 7};
    mqr_trie_entry_t *e1 = mqr__trie_add(&t, "a/b", 3, SUB(1), &opts);
    assert_non_null(e1);
    assert_ptr_equal(e1->sub, SUB(1));
    assert_int_equal(e1->opts.qos, 1);
    assert_true(e1->opts.no_local);
    assert_int_equal(e1->opts.subscription_id, 42);
    assert_int_equal(e1->opts.tag, 7);
    size_t flen;
    assert_string_equal(mqr__trie_entry_filter(e1, &flen), "a/b");
    assert_int_equal(flen, 3);
    assert_null(mqr__trie_entry_group(e1, NULL));
    assert_true(mqr__trie_entry_alive(e1));

    mqr_trie_entry_t *e2 = add(&t, "a/+", 2);
    mqr_trie_entry_t *e3 = add(&t, "a/#", 3);
    mqr_trie_entry_t *e4 = add(&t, "#", 4);
    mqr_trie_entry_t *e5 = add(&t, "a/b", 1); /* same filter, same sub: a second entry */
    mqr_trie_entry_t *e6 = add(&t, "b", 6);
    assert_int_equal(mqr__trie_count(&t), 6);
    assert_true(e1->seq < e2->seq && e5->seq > e4->seq);

    mqr_trie_matches_t m;
    mqr__trie_matches_init(&m);
    match(&t, "a/b", &m);
    assert_int_equal(m.count, 5);
    assert_true(has(&m, e1) && has(&m, e2) && has(&m, e3) && has(&m, e4) && has(&m, e5));
    match(&t, "a", &m); /* "a/#" matches its parent; "a/+" does not */
    assert_int_equal(m.count, 2);
    assert_true(has(&m, e3) && has(&m, e4));
    match(&t, "a/b/c", &m);
    assert_int_equal(m.count, 2);
    match(&t, "b", &m);
    assert_int_equal(m.count, 2);
    assert_true(has(&m, e6) && has(&m, e4));
    match(&t, "c/d", &m);
    assert_int_equal(m.count, 1);
    assert_ptr_equal(m.entries[0], e4);

    /* match appends */
    mqr__trie_matches_reset(&m);
    assert_int_equal(mqr__trie_match(&t, "b", 1, &m), 0);
    assert_int_equal(mqr__trie_match(&t, "b", 1, &m), 0);
    assert_int_equal(m.count, 4);

    assert_ptr_equal(mqr__trie_find(&t, NULL, 0, "a/b", 3, SUB(1)), e1);
    assert_null(mqr__trie_find(&t, NULL, 0, "a/b", 3, SUB(9)));
    assert_null(mqr__trie_find(&t, NULL, 0, "a/c", 3, SUB(1)));
    assert_null(mqr__trie_find(&t, "g", 1, "a/b", 3, SUB(1)));
    assert_ptr_equal(mqr__trie_find(&t, NULL, 0, "a/#", 3, SUB(3)), e3);

    mqr__trie_remove(&t, e1);
    assert_ptr_equal(mqr__trie_find(&t, NULL, 0, "a/b", 3, SUB(1)), e5);
    match(&t, "a/b", &m);
    assert_int_equal(m.count, 4);
    assert_false(has(&m, e1));
    mqr__trie_remove(&t, e4);
    match(&t, "c/d", &m);
    assert_int_equal(m.count, 0);
    assert_int_equal(mqr__trie_count(&t), 4);
    mqr__trie_remove(&t, e2);
    mqr__trie_remove(&t, e3);
    mqr__trie_remove(&t, e5);
    mqr__trie_remove(&t, e6);
    assert_trie_empty(&t);
    mqr__trie_matches_free(&m);
    mqr__trie_close(&t);
}

static void test_dollar(void **state)
{
    (void)state;
    mqr_trie_t t;
    mqr__trie_init(&t);
    add(&t, "#", 1);
    add(&t, "+/x", 2);
    add(&t, "+", 3);
    add(&t, "+/#", 4);
    mqr_trie_entry_t *sys = add(&t, "$SYS/#", 5);
    mqr_trie_entry_t *sysx = add(&t, "$SYS/+", 6);
    mqr_trie_entry_t *ax = add(&t, "a/+", 7);
    mqr_trie_matches_t m;
    mqr__trie_matches_init(&m);
    match(&t, "$SYS/x", &m);
    assert_int_equal(m.count, 2);
    assert_true(has(&m, sys) && has(&m, sysx));
    match(&t, "$SYS", &m);
    assert_int_equal(m.count, 1);
    assert_ptr_equal(m.entries[0], sys);
    match(&t, "$other", &m);
    assert_int_equal(m.count, 0);
    match(&t, "a/$x", &m); /* '$' below the first level is ordinary */
    assert_int_equal(m.count, 3);
    assert_true(has(&m, ax));
    match(&t, "x/x", &m);
    assert_int_equal(m.count, 3); /* "#", "+/x", "+/#" */
    mqr__trie_matches_free(&m);
    mqr__trie_close(&t);
}

static void test_empty_levels(void **state)
{
    (void)state;
    mqr_trie_t t;
    mqr__trie_init(&t);
    mqr_trie_entry_t *pp = add(&t, "+/+", 1);
    mqr_trie_entry_t *p = add(&t, "+", 2);
    mqr_trie_entry_t *slash = add(&t, "/", 3);
    mqr_trie_entry_t *aplusb = add(&t, "a/+/b", 4);
    mqr_trie_entry_t *slashhash = add(&t, "/#", 5);
    mqr_trie_matches_t m;
    mqr__trie_matches_init(&m);
    match(&t, "/", &m);
    assert_int_equal(m.count, 3);
    assert_true(has(&m, pp) && has(&m, slash) && has(&m, slashhash));
    assert_false(has(&m, p));
    match(&t, "a//b", &m);
    assert_int_equal(m.count, 1);
    assert_ptr_equal(m.entries[0], aplusb);
    match(&t, "a", &m);
    assert_int_equal(m.count, 1);
    assert_ptr_equal(m.entries[0], p);
    match(&t, "//", &m);
    assert_int_equal(m.count, 1);
    assert_ptr_equal(m.entries[0], slashhash);
    mqr__trie_matches_free(&m);
    mqr__trie_close(&t);
}

/* ---- random cross-check against mqr__topic_matches ---- */

/* short and long levels (the level scan works eight bytes at a time); keep "" last */
static const char *levels[] = {"a", "b", "abcdefgh", "a-longer-level-name", "$x", ""};
#define NLEVELS (sizeof levels / sizeof levels[0])

static void random_filter(char *buf, size_t cap)
{
    size_t n = 1 + rnd(5), len = 0;
    buf[0] = '\0';
    if (n == 1 && rnd(2)) n = 2; /* a lone "" level would be the empty filter */
    for (size_t i = 0; i < n; i++) {
        const char *lv;
        uint32_t r = rnd(10);
        if (i == 0 && r == 9)
            lv = "$SYS";
        else if (r < 3)
            lv = "+";
        else if (r == 3 && i == n - 1)
            lv = "#";
        else
            lv = levels[rnd(NLEVELS - (n == 1))]; /* "" is last */
        len += (size_t)snprintf(buf + len, cap - len, "%s%s", i ? "/" : "", lv);
    }
}

static void random_topic(char *buf, size_t cap)
{
    size_t n = 1 + rnd(6), len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        const char *lv = i == 0 && rnd(8) == 0 ? "$SYS" : levels[rnd(NLEVELS - (n == 1))];
        len += (size_t)snprintf(buf + len, cap - len, "%s%s", i ? "/" : "", lv);
    }
}

typedef struct {
    mqr_trie_entry_t *e;
    char filter[160];
    char group[8]; /* "" = not shared */
    size_t leader; /* shared: index of the first model entry of its (group, filter) */
} model_t;

#define MODEL_MAX 600

static void find_leaders(model_t *model, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        model[i].leader = i;
        for (size_t j = 0; j < i; j++)
            if (model[i].group[0] && !strcmp(model[j].group, model[i].group) &&
                !strcmp(model[j].filter, model[i].filter)) {
                model[i].leader = j;
                break;
            }
    }
}

/* m sorted by match() */
static bool has_sorted(const mqr_trie_matches_t *m, const mqr_trie_entry_t *e)
{
    return bsearch(&e, m->entries, m->count, sizeof *m->entries, ptr_cmp) != NULL;
}

/* Checks one topic: every plain entry whose filter matches, exactly once;
 * for each (group, filter) with matching members, exactly one member. */
static void cross_check(mqr_trie_t *t, model_t *model, size_t n, const char *topic,
                        mqr_trie_matches_t *m)
{
    match(t, topic, m);
    size_t want = 0, picked[MODEL_MAX] = {0};
    bool hit[MODEL_MAX];
    for (size_t i = 0; i < n; i++) {
        model_t *x = &model[i];
        hit[i] = mqr__topic_matches(x->filter, strlen(x->filter), topic, strlen(topic));
        bool got = has_sorted(m, x->e);
        if (!x->group[0]) {
            if (hit[i] != got)
                fail_msg("filter '%s' topic '%s': trie %d, reference %d", x->filter, topic, got,
                         hit[i]);
            want += hit[i];
        } else {
            picked[x->leader] += got;
            if (x->leader == i) want += hit[i];
        }
    }
    /* one member per (group, filter) that matches, none otherwise */
    for (size_t i = 0; i < n; i++)
        if (model[i].group[0] && model[i].leader == i && picked[i] != (hit[i] ? 1u : 0u))
            fail_msg("group '%s' filter '%s' topic '%s': %zu members picked, reference %d",
                     model[i].group, model[i].filter, topic, picked[i], hit[i]);
    if (m->count != want) fail_msg("topic '%s': %zu matches, want %zu", topic, m->count, want);
    for (size_t i = 1; i < m->count; i++)
        assert_ptr_not_equal(m->entries[i - 1], m->entries[i]);
}

static void test_random_cross_check(void **state)
{
    (void)state;
    rng_state = 0x5EED1234ABCDull;
    mqr_trie_t t;
    mqr__trie_init(&t);
    model_t *model = calloc(MODEL_MAX, sizeof *model);
    assert_non_null(model);
    size_t n = 0, checks = 0;
    mqr_trie_matches_t m;
    mqr__trie_matches_init(&m);
    char topic[192];
    for (int round = 0; round < 12; round++) {
        /* grow */
        while (n < MODEL_MAX - 50 * (size_t)(round % 3)) {
            model_t *x = &model[n];
            random_filter(x->filter, sizeof x->filter);
            assert_int_equal(mqr__topic_filter_validate(x->filter, strlen(x->filter)), 0);
            uintptr_t sub = rnd(20);
            if (rnd(5) == 0) {
                snprintf(x->group, sizeof x->group, "g%u", rnd(3));
                x->e = add_shared(&t, x->group, x->filter, sub);
            } else {
                x->group[0] = '\0';
                x->e = add(&t, x->filter, sub);
            }
            n++;
        }
        assert_int_equal(mqr__trie_count(&t), n);
        find_leaders(model, n);
        for (int k = 0; k < 400; k++) {
            random_topic(topic, sizeof topic);
            cross_check(&t, model, n, topic, &m);
            checks++;
        }
        /* shrink: remove a random part */
        size_t drop = n / 2 + rnd((uint32_t)n / 2);
        for (size_t k = 0; k < drop; k++) {
            size_t i = rnd((uint32_t)n);
            mqr__trie_remove(&t, model[i].e);
            model[i] = model[--n];
        }
        assert_int_equal(mqr__trie_count(&t), n);
        find_leaders(model, n);
        for (int k = 0; k < 100; k++) {
            random_topic(topic, sizeof topic);
            cross_check(&t, model, n, topic, &m);
            checks++;
        }
    }
    assert_true(checks >= 5000);
    while (n)
        mqr__trie_remove(&t, model[--n].e);
    assert_trie_empty(&t);
    mqr__trie_matches_free(&m);
    mqr__trie_close(&t);
    free(model);
}

/* ---- holds ---- */

static void test_remove_during_hold(void **state)
{
    (void)state;
    mqr_trie_t t;
    mqr__trie_init(&t);
    mqr_trie_entry_t *a = add(&t, "x/y", 1);
    mqr_trie_entry_t *b = add(&t, "x/+", 2);
    mqr_trie_entry_t *c = add(&t, "x/#", 3);
    mqr_trie_matches_t m;
    mqr__trie_matches_init(&m);
    mqr__trie_match(&t, "x/y", 3, &m);
    assert_int_equal(m.count, 3);

    mqr__trie_hold(&t);
    /* "delivering" a: it removes itself and b, and adds d */
    mqr__trie_remove(&t, a);
    mqr__trie_remove(&t, b);
    mqr_trie_entry_t *d = add(&t, "x/y", 4);
    assert_false(mqr__trie_entry_alive(a));
    assert_false(mqr__trie_entry_alive(b));
    assert_true(mqr__trie_entry_alive(c));
    /* dead entries stay readable */
    assert_ptr_equal(a->sub, SUB(1));
    assert_string_equal(mqr__trie_entry_filter(b, NULL), "x/+");
    /* the collected list is unchanged and d is not in it */
    assert_int_equal(m.count, 3);
    assert_false(has(&m, d));
    size_t alive = 0;
    for (size_t i = 0; i < m.count; i++)
        alive += mqr__trie_entry_alive(m.entries[i]);
    assert_int_equal(alive, 1);
    assert_int_equal(mqr__trie_count(&t), 2);

    /* nested publish while held: sees d and c only */
    mqr_trie_matches_t m2;
    mqr__trie_matches_init(&m2);
    mqr__trie_hold(&t);
    match(&t, "x/y", &m2);
    assert_int_equal(m2.count, 2);
    assert_true(has(&m2, c) && has(&m2, d));
    mqr__trie_remove(&t, a); /* removing a dead entry again: no effect */
    mqr__trie_remove(&t, d); /* added and removed inside the hold */
    mqr__trie_release(&t);
    assert_false(mqr__trie_entry_alive(d)); /* still held once: readable */
    assert_ptr_equal(d->sub, SUB(4));
    mqr__trie_release(&t);
    /* a, b, d are freed now (ASan would flag any later use) */
    assert_int_equal(mqr__trie_count(&t), 1);
    match(&t, "x/y", &m);
    assert_int_equal(m.count, 1);
    assert_ptr_equal(m.entries[0], c);

    /* without a hold removal frees at once; entries removed while held and
     * still pending are freed by close */
    mqr__trie_hold(&t);
    mqr__trie_remove(&t, c);
    add(&t, "left/over", 5);
    mqr__trie_matches_free(&m);
    mqr__trie_matches_free(&m2);
    mqr__trie_close(&t); /* while held: frees the dead one and the live one */
}

/* ---- shared subscriptions ---- */

/* mqr__trie_count_matches counts every entry a publish on the topic would
 * reach (each member of a share group), follows the '$' rule, and moves no
 * round robin: the next match still starts with the first member. */
static void test_count_matches(void **state)
{
    (void)state;
    mqr_trie_t t;
    mqr__trie_init(&t);
    mqr_trie_entry_t *g1 = add_shared(&t, "g", "a/+", 1);
    add_shared(&t, "g", "a/+", 2);
    add(&t, "a/+", 3);
    add(&t, "a/#", 4);
    add(&t, "#", 5);
    add(&t, "a/b", 6);
    add(&t, "$SYS/#", 7);
    size_t n = 99;
    assert_int_equal(mqr__trie_count_matches(&t, "a/b", 3, &n), 0);
    assert_int_equal(n, 6); /* g1, g2, a/+, a/#, #, a/b */
    assert_int_equal(mqr__trie_count_matches(&t, "a/c", 3, &n), 0);
    assert_int_equal(n, 5);
    assert_int_equal(mqr__trie_count_matches(&t, "a", 1, &n), 0);
    assert_int_equal(n, 2); /* a/# (the parent level) and # */
    assert_int_equal(mqr__trie_count_matches(&t, "$SYS/x", 6, &n), 0);
    assert_int_equal(n, 1); /* '#' does not reach a '$' topic */
    assert_int_equal(mqr__trie_count_matches(&t, "z", 1, &n), 0);
    assert_int_equal(n, 1);
    mqr_trie_matches_t m;
    mqr__trie_matches_init(&m);
    mqr__trie_matches_reset(&m);
    assert_int_equal(mqr__trie_match(&t, "a/b", 3, &m), 0);
    assert_true(has(&m, g1)); /* the round robin had not moved */
    mqr__trie_matches_free(&m);
    mqr__trie_close(&t);
}

static void test_shared_round_robin(void **state)
{
    (void)state;
    mqr_trie_t t;
    mqr__trie_init(&t);
    mqr_trie_entry_t *g1 = add_shared(&t, "g", "a/+", 1);
    mqr_trie_entry_t *g2 = add_shared(&t, "g", "a/+", 2);
    mqr_trie_entry_t *g3 = add_shared(&t, "g", "a/+", 3);
    mqr_trie_entry_t *h1 = add_shared(&t, "h", "a/+", 4);
    mqr_trie_entry_t *h2 = add_shared(&t, "h", "a/+", 5);
    mqr_trie_entry_t *gh = add_shared(&t, "g", "a/#", 6); /* same group, other filter */
    mqr_trie_entry_t *plain = add(&t, "a/+", 7);
    size_t glen;
    assert_string_equal(mqr__trie_entry_group(g2, &glen), "g");
    assert_int_equal(glen, 1);
    assert_string_equal(mqr__trie_entry_filter(g2, NULL), "a/+");
    assert_int_equal(mqr__trie_count(&t), 7);
    assert_ptr_equal(mqr__trie_find(&t, "g", 1, "a/+", 3, SUB(2)), g2);
    assert_null(mqr__trie_find(&t, "h", 1, "a/+", 3, SUB(2)));
    assert_null(mqr__trie_find(&t, NULL, 0, "a/+", 3, SUB(2)));

    mqr_trie_matches_t m;
    mqr__trie_matches_init(&m);
    int gcount[3] = {0}, hcount[2] = {0};
    mqr_trie_entry_t *prev_g = NULL;
    for (int i = 0; i < 12; i++) {
        match(&t, "a/b", &m);
        assert_int_equal(m.count, 4); /* one of g, one of h, gh, plain */
        assert_true(has(&m, gh) && has(&m, plain));
        int ng = 0, nh = 0;
        mqr_trie_entry_t *cur_g = NULL;
        mqr_trie_entry_t *gs[] = {g1, g2, g3}, *hs[] = {h1, h2};
        for (int k = 0; k < 3; k++) {
            if (!has(&m, gs[k])) continue;
            ng++;
            gcount[k]++;
            cur_g = gs[k];
        }
        for (int k = 0; k < 2; k++) {
            if (!has(&m, hs[k])) continue;
            nh++;
            hcount[k]++;
        }
        assert_int_equal(ng, 1);
        assert_int_equal(nh, 1);
        assert_ptr_not_equal(cur_g, prev_g); /* rotates */
        prev_g = cur_g;
    }
    assert_int_equal(gcount[0], 4);
    assert_int_equal(gcount[1], 4);
    assert_int_equal(gcount[2], 4);
    assert_int_equal(hcount[0], 6);
    assert_int_equal(hcount[1], 6);

    /* a topic only "a/#" matches picks from that (group, filter) alone */
    match(&t, "a", &m);
    assert_int_equal(m.count, 1);
    assert_ptr_equal(m.entries[0], gh);

    /* members leave: the rest share the load; the last leaving ends the group */
    mqr__trie_remove(&t, g2);
    memset(gcount, 0, sizeof gcount);
    for (int i = 0; i < 10; i++) {
        match(&t, "a/b", &m);
        assert_false(has(&m, g2));
        gcount[0] += has(&m, g1);
        gcount[2] += has(&m, g3);
    }
    assert_int_equal(gcount[0], 5);
    assert_int_equal(gcount[2], 5);
    mqr__trie_remove(&t, g1);
    mqr__trie_remove(&t, g3);
    match(&t, "a/b", &m);
    assert_int_equal(m.count, 3);
    assert_null(mqr__trie_find(&t, "g", 1, "a/+", 3, SUB(1)));

    /* the '$' rule holds inside groups too */
    add_shared(&t, "g", "#", 8);
    match(&t, "$SYS/x", &m);
    assert_int_equal(m.count, 0);

    mqr__trie_matches_free(&m);
    mqr__trie_close(&t);
}

/* ---- scale ---- */

static void test_many_siblings(void **state)
{
    (void)state;
    enum { N = 10000 };
    mqr_trie_t t;
    mqr__trie_init(&t);
    mqr_trie_entry_t **e = calloc(N, sizeof *e);
    assert_non_null(e);
    char buf[64];
    for (int i = 0; i < N; i++) {
        snprintf(buf, sizeof buf, "devices/%d/temp", i);
        e[i] = add(&t, buf, (uintptr_t)i);
    }
    mqr_trie_entry_t *w1 = add(&t, "devices/+/temp", N);
    mqr_trie_entry_t *w2 = add(&t, "devices/#", N + 1);
    assert_int_equal(mqr__trie_count(&t), N + 2);

    mqr_trie_matches_t m;
    mqr__trie_matches_init(&m);
    for (int i = 0; i < N; i += 97) {
        snprintf(buf, sizeof buf, "devices/%d/temp", i);
        match(&t, buf, &m);
        assert_int_equal(m.count, 3);
        assert_true(has(&m, e[i]) && has(&m, w1) && has(&m, w2));
    }
    match(&t, "devices/10000/temp", &m);
    assert_int_equal(m.count, 2);
    match(&t, "devices/5/hum", &m);
    assert_int_equal(m.count, 1);

    /* remove a random 90% (exercises deletion from the sibling table), then
     * every survivor still matches and no removed one does */
    rng_state = 99;
    bool *gone = calloc(N, sizeof *gone);
    assert_non_null(gone);
    for (int k = 0; k < N * 9 / 10;) {
        int i = (int)rnd(N);
        if (gone[i]) continue;
        mqr__trie_remove(&t, e[i]);
        gone[i] = true;
        k++;
    }
    assert_int_equal(mqr__trie_count(&t), N / 10 + 2);
    for (int i = 0; i < N; i++) {
        snprintf(buf, sizeof buf, "devices/%d/temp", i);
        match(&t, buf, &m);
        assert_int_equal(m.count, gone[i] ? 2 : 3);
        if (!gone[i]) assert_true(has(&m, e[i]));
    }
    /* down to a handful: the sibling table turns back into a small array */
    size_t left = 2;
    for (int i = 0; i < N; i++) {
        if (!gone[i] && i % 1000) {
            mqr__trie_remove(&t, e[i]);
            gone[i] = true;
        }
        left += !gone[i];
    }
    assert_int_equal(mqr__trie_count(&t), left);
    for (int i = 0; i < N; i += 1000) {
        snprintf(buf, sizeof buf, "devices/%d/temp", i);
        assert_int_equal(count_matches(&t, buf), gone[i] ? 2 : 3);
    }
    for (int i = 0; i < N; i++)
        if (!gone[i]) mqr__trie_remove(&t, e[i]);
    mqr__trie_remove(&t, w1);
    mqr__trie_remove(&t, w2);
    assert_trie_empty(&t);
    free(gone);
    free(e);
    mqr__trie_matches_free(&m);
    mqr__trie_close(&t);
}

/* Levels are compared a word at a time with overlapping tails: for every
 * length from 1 to 40, a level that differs from the filter's in any one
 * byte must not match, and the equal one must, among both few siblings
 * (scanned) and many (hashed). */
static void test_level_compare_every_position(void **state)
{
    (void)state;
    for (int siblings = 1; siblings <= 40; siblings += 39) {
        mqr_trie_t t;
        mqr__trie_init(&t);
        mqr_trie_entry_t *e[41] = {0};
        char lvl[48], topic[72];
        for (int len = 1; len <= 40; len++) {
            for (int k = 0; k < len; k++)
                lvl[k] = (char)('a' + (k * 7 + len) % 26);
            lvl[len] = '\0';
            snprintf(topic, sizeof topic, "x/%d/%s", len, lvl);
            e[len] = add(&t, topic, (uintptr_t)len);
            for (int i = 0; i < siblings - 1; i++) { /* padding siblings, never matched */
                snprintf(topic, sizeof topic, "x/%d/pad%d", len, i);
                add(&t, topic, 1000u + (unsigned)i);
            }
        }
        mqr_trie_matches_t m;
        mqr__trie_matches_init(&m);
        for (int len = 1; len <= 40; len++) {
            for (int k = 0; k < len; k++)
                lvl[k] = (char)('a' + (k * 7 + len) % 26);
            lvl[len] = '\0';
            snprintf(topic, sizeof topic, "x/%d/%s", len, lvl);
            match(&t, topic, &m);
            assert_int_equal(m.count, 1);
            assert_ptr_equal(m.entries[0], e[len]);
            for (int k = 0; k < len; k++) {
                char was = lvl[k];
                lvl[k] = (char)(was == 'A' ? 'B' : 'A');
                snprintf(topic, sizeof topic, "x/%d/%s", len, lvl);
                match(&t, topic, &m);
                if (m.count != 0) fail_msg("length %d, byte %d changed: still matched", len, k);
                lvl[k] = was;
            }
        }
        mqr__trie_matches_free(&m);
        mqr__trie_close(&t);
    }
}

/* More matches than the inline room, and a topic deep enough that the walk's
 * stack leaves its inline room too. */
static void test_growth(void **state)
{
    (void)state;
    mqr_trie_t t;
    mqr__trie_init(&t);
    for (int i = 0; i < 100; i++)
        add(&t, i % 2 ? "#" : "big/+", (uintptr_t)i);
    assert_int_equal(count_matches(&t, "big/x"), 100);
    assert_int_equal(count_matches(&t, "big"), 50);

    /* filters "d/d/.../d/+" at every depth up to 200: every node on the
     * all-"d" path has a '+' child, so the walk keeps one branch per level */
    enum { DEPTH = 200 };
    char *f = malloc(DEPTH * 2 + 2);
    assert_non_null(f);
    size_t len = 0;
    for (int k = 0; k < DEPTH; k++) {
        memcpy(f + len, "+", 2);
        mqr__trie_add(&t, f, len + 1, SUB(1000 + k), NULL);
        memcpy(f + len, "d/", 2);
        len += 2;
    }
    f[len - 1] = '\0'; /* the topic "d/d/.../d", DEPTH levels */
    len--;
    mqr_trie_matches_t m;
    mqr__trie_matches_init(&m);
    assert_int_equal(mqr__trie_match(&t, f, len, &m), 0);
    assert_int_equal(m.count, 51); /* "d/.../+" with DEPTH levels, and the "#" entries */
    for (size_t i = 0; i < m.count; i++) {
        size_t flen;
        const char *ef = mqr__trie_entry_filter(m.entries[i], &flen);
        assert_true(mqr__topic_matches(ef, flen, f, len));
    }
    mqr__trie_matches_free(&m);
    free(f);
    mqr__trie_close(&t);

    /* the deepest filter MQTT allows: "+/+/.../+", 32768 levels in 65535
     * bytes, against 32768 empty levels and one level short of that */
    mqr__trie_init(&t);
    char *deep = malloc(65535);
    assert_non_null(deep);
    for (size_t i = 0; i < 65535; i++)
        deep[i] = i % 2 ? '/' : '+';
    assert_int_equal(mqr__topic_filter_validate(deep, 65535), 0);
    mqr_trie_entry_t *e = mqr__trie_add(&t, deep, 65535, SUB(1), NULL);
    assert_non_null(e);
    assert_int_equal(mqr__trie_entry_filter(e, NULL)[65534], '+');
    mqr__trie_add(&t, deep, 65533, SUB(2), NULL); /* one level fewer */
    memset(deep, '/', 32767);
    mqr__trie_matches_init(&m);
    assert_int_equal(mqr__trie_match(&t, deep, 32767, &m), 0);
    assert_int_equal(m.count, 1);
    assert_ptr_equal(m.entries[0], e);
    mqr__trie_matches_free(&m);
    free(deep);
    mqr__trie_close(&t);
}

/* ---- iteration ---- */

typedef struct {
    mqr_trie_t *t;
    mqr_trie_entry_t **all;
    uintptr_t seen[16];
    int n;
    int stop_at;
    bool mutate;
} visit_t;

static int visit(mqr_trie_entry_t *e, void *arg)
{
    visit_t *v = arg;
    v->seen[v->n++] = (uintptr_t)e->sub;
    if (v->mutate && (uintptr_t)e->sub == 1) {
        /* remove the next two (one plain, one shared) and an earlier one */
        mqr__trie_remove(v->t, v->all[2]);
        mqr__trie_remove(v->t, v->all[3]);
        mqr__trie_remove(v->t, v->all[0]);
    }
    if (v->mutate && (uintptr_t)e->sub == 4) mqr__trie_remove(v->t, e); /* itself */
    return v->n == v->stop_at ? 77 : 0;
}

static void test_foreach(void **state)
{
    (void)state;
    mqr_trie_t t;
    mqr__trie_init(&t);
    mqr_trie_entry_t *all[6];
    all[0] = add(&t, "z", 0);
    all[1] = add(&t, "a/#", 1);
    all[2] = add(&t, "m", 2);
    all[3] = add_shared(&t, "g", "m", 3);
    all[4] = add(&t, "b", 4);
    all[5] = add_shared(&t, "g", "+", 5);
    visit_t v = {.t = &t, .all = all, .stop_at = -1, .mutate = true};
    assert_int_equal(mqr__trie_foreach(&t, visit, &v), 0);
    /* add order; 2 and 3 removed before being reached; 0 visited before */
    assert_int_equal(v.n, 4);
    assert_int_equal(v.seen[0], 0);
    assert_int_equal(v.seen[1], 1);
    assert_int_equal(v.seen[2], 4);
    assert_int_equal(v.seen[3], 5);
    assert_int_equal(mqr__trie_count(&t), 2);

    visit_t w = {.t = &t, .all = all, .stop_at = 1};
    assert_int_equal(mqr__trie_foreach(&t, visit, &w), 77);
    assert_int_equal(w.n, 1);
    assert_int_equal(w.seen[0], 1);
    mqr__trie_close(&t);
}

static void test_close_with_entries(void **state)
{
    (void)state;
    mqr_trie_t t;
    mqr__trie_init(&t);
    char buf[32];
    for (int i = 0; i < 500; i++) {
        snprintf(buf, sizeof buf, "%s/%d/%s", i % 3 ? "x" : "+", i % 40, i % 7 ? "y" : "#");
        if (i % 5)
            add(&t, buf, (uintptr_t)i);
        else
            add_shared(&t, i % 2 ? "p" : "q", buf, (uintptr_t)i);
    }
    assert_int_equal(mqr__trie_count(&t), 500);
    mqr__trie_close(&t); /* ASan checks that everything went */
    /* a closed trie is empty and usable again after init */
    assert_int_equal(mqr__trie_init(&t), 0);
    add(&t, "again", 1);
    assert_int_equal(count_matches(&t, "again"), 1);
    mqr__trie_close(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic),
        cmocka_unit_test(test_dollar),
        cmocka_unit_test(test_empty_levels),
        cmocka_unit_test(test_random_cross_check),
        cmocka_unit_test(test_remove_during_hold),
        cmocka_unit_test(test_count_matches),
        cmocka_unit_test(test_shared_round_robin),
        cmocka_unit_test(test_many_siblings),
        cmocka_unit_test(test_level_compare_every_position),
        cmocka_unit_test(test_growth),
        cmocka_unit_test(test_foreach),
        cmocka_unit_test(test_close_with_entries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
