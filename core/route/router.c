/*
 * router.c — fan-out of one message to its subscribers.
 *
 * Matches are collected first and delivered after, with the trie held: a
 * subscriber that changes subscriptions while being called cannot disturb
 * the walk, and an entry removed mid-delivery is skipped, never freed under
 * our feet. Every deliver() result goes into the routing ingress's publish
 * context (mqr__router_note): none is dropped on the floor here.
 *
 * A subscriber that merges (deliver_set: listener clients, which send one
 * copy for overlapping subscriptions) gets all its non-shared matches in
 * one call. Finding them costs one pass that marks subscribers, and only
 * when a message matches more than one entry: the single match, the
 * commonest case, takes the plain loop.
 */
#include "router.h"

#include "log.h"

#include <stdlib.h>

int mqr__router_init(mqr_router_t *r)
{
    r->depth = 0;
    r->routed = r->deliveries = r->unrouted = r->loops = 0;
    r->dropped_nomem = r->nomem_log_ms = 0;
    r->pub = NULL;
    r->mark = 0;
    return mqr__trie_init(&r->trie);
}

void mqr__router_close(mqr_router_t *r)
{
    mqr__trie_close(&r->trie);
}

void mqr__router_note(mqr_router_t *r, int result)
{
    if (result == 0 || r->depth == 0) return;
    mqr_pubctx_t *p = r->pub;
    if (result == MQR_DELIVER_STORED) {
        if (p) p->stored++;
        return;
    }
    if (result > 0) return; /* no other positive result is defined */
    if (result == MQR_EFULL || result == MQR_EMEMLIMIT) {
        if (p) p->no_room++;
        return;
    }
    if (result == MQR_ENOMEM) {
        r->dropped_nomem++;
        /* a process out of memory fails every delivery: one line a second */
        uint64_t now = mqr__now_ms();
        if (now - r->nomem_log_ms >= 1000u) {
            r->nomem_log_ms = now;
            MQR_LOG_W("router",
                      "a subscriber could not take a message: out of memory (%llu so far)",
                      (unsigned long long)r->dropped_nomem);
        }
    }
    if (p) {
        p->failed++;
        if (!p->error) p->error = result;
    }
}

/* Does a subscriber that merges (deliver_set) have more than one
 * non-shared entry among the matches? One pass that marks each such
 * subscriber with this publish's number: the common case (every subscriber
 * matched once) costs a store per entry and nothing else. */
static bool several_of_one(mqr_router_t *r, const mqr_trie_matches_t *m)
{
    uint64_t mark = ++r->mark;
    bool several = false;
    for (size_t i = 0; i < m->count; i++) {
        const mqr_trie_entry_t *e = m->entries[i];
        mqr_subscriber_t *s = e->sub;
        if (!s->deliver_set || mqr__trie_entry_group(e, NULL)) continue;
        if (s->route_mark == mark) several = true;
        s->route_mark = mark;
    }
    return several;
}

/* The delivery loop when some subscriber matched several times: its
 * non-shared entries go to deliver_set() in one call, at the place of the
 * first one. Entries taken into a set are cleared from m (the vector is
 * ours). The set needs room for them; without memory each entry goes to
 * deliver() alone, as for a subscriber that does not merge. */
static int deliver_sets(mqr_router_t *r, mqr_msg_t *msg, mqr_trie_matches_t *m)
{
    mqr_trie_entry_t **set = malloc(m->count * sizeof *set);
    int n = 0;
    for (size_t i = 0; i < m->count; i++) {
        mqr_trie_entry_t *e = m->entries[i];
        if (!e || !mqr__trie_entry_alive(e)) continue;
        mqr_subscriber_t *s = e->sub;
        size_t k = 0;
        if (set && s->deliver_set && !mqr__trie_entry_group(e, NULL)) {
            set[k++] = e;
            for (size_t j = i + 1; j < m->count; j++) {
                mqr_trie_entry_t *x = m->entries[j];
                if (!x || x->sub != s || mqr__trie_entry_group(x, NULL)) continue;
                m->entries[j] = NULL;
                if (mqr__trie_entry_alive(x)) set[k++] = x;
            }
        }
        if (k > 1)
            mqr__router_note(r, s->deliver_set(s, msg, set, k));
        else
            mqr__router_note(r, s->deliver(s, msg, e));
        n++;
    }
    free(set);
    return n;
}

int mqr__router_publish(mqr_router_t *r, mqr_msg_t *msg)
{
    if (r->depth >= MQR_ROUTER_MAX_DEPTH) {
        r->loops++;
        return MQR_EROUTELOOP;
    }
    mqr_trie_matches_t m;
    mqr__trie_matches_init(&m);
    int rc = mqr__trie_match(&r->trie, msg->topic, msg->topic_len, &m);
    if (rc < 0) {
        mqr__trie_matches_free(&m);
        return rc;
    }
    if (m.count == 0) {
        r->unrouted++;
        mqr__trie_matches_free(&m);
        return 0;
    }
    /* subscribers see a message in the order they subscribed */
    for (size_t i = 1; i < m.count; i++) {
        mqr_trie_entry_t *x = m.entries[i];
        size_t j = i;
        for (; j > 0 && m.entries[j - 1]->seq > x->seq; j--)
            m.entries[j] = m.entries[j - 1];
        m.entries[j] = x;
    }
    r->routed++;
    r->depth++;
    mqr__trie_hold(&r->trie);
    mqr_msg_ref(msg); /* a subscriber may drop the publisher's last ref */
    int n = 0;
    if (m.count > 1 && several_of_one(r, &m)) {
        n = deliver_sets(r, msg, &m);
    } else {
        for (size_t i = 0; i < m.count; i++) {
            mqr_trie_entry_t *e = m.entries[i];
            if (!mqr__trie_entry_alive(e)) continue;
            mqr_subscriber_t *s = e->sub;
            mqr__router_note(r, s->deliver(s, msg, e));
            n++;
        }
    }
    mqr_msg_unref(msg);
    mqr__trie_release(&r->trie);
    r->depth--;
    r->deliveries += (uint64_t)n;
    mqr__trie_matches_free(&m);
    return n;
}

mqr_trie_entry_t *mqr__router_add(mqr_router_t *r, const char *filter, size_t len,
                                  mqr_subscriber_t *sub, const mqr_sub_opts_t *opts)
{
    return mqr__trie_add(&r->trie, filter, len, sub, opts);
}

void mqr__router_remove(mqr_router_t *r, mqr_trie_entry_t *entry)
{
    mqr__trie_remove(&r->trie, entry);
}
