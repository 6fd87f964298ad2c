/*
 * retain.c — open-addressing map from topic to retained message.
 */
#include "retain.h"

#include "store.h"
#include "topic.h"

#include <stdlib.h>
#include <string.h>

#define TOMBSTONE ((mqr_msg_t *)(uintptr_t)1)

static uint64_t hash_topic(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static bool is_live(const mqr_msg_t *m)
{
    return m && m != TOMBSTONE;
}

static bool expired(const mqr_msg_t *m, uint64_t now)
{
    return m->expiry_s && m->created_ms + (uint64_t)m->expiry_s * 1000u <= now;
}

int mqr__retain_init(mqr_retain_t *r, mqr_store_t *store)
{
    r->cap = 64;
    r->count = r->sys_count = r->used = 0;
    r->store = store;
    r->slots = calloc(r->cap, sizeof *r->slots);
    return r->slots ? 0 : MQR_ENOMEM;
}

void mqr__retain_close(mqr_retain_t *r)
{
    for (size_t i = 0; i < r->cap; i++)
        if (is_live(r->slots[i])) mqr_msg_unref(r->slots[i]);
    free(r->slots);
    r->slots = NULL;
    r->count = r->sys_count = r->used = r->cap = 0;
}

/* Index of the slot holding topic, or of the slot where it would go. */
static size_t find_slot(const mqr_retain_t *r, const char *topic, size_t len, bool *found)
{
    size_t mask = r->cap - 1, i = hash_topic(topic, len) & mask;
    size_t free_slot = SIZE_MAX;
    for (;;) {
        mqr_msg_t *m = r->slots[i];
        if (!m) {
            *found = false;
            return free_slot != SIZE_MAX ? free_slot : i;
        }
        if (m == TOMBSTONE) {
            if (free_slot == SIZE_MAX) free_slot = i;
        } else if (m->topic_len == len && memcmp(m->topic, topic, len) == 0) {
            *found = true;
            return i;
        }
        i = (i + 1) & mask;
    }
}

static int grow(mqr_retain_t *r)
{
    size_t old_cap = r->cap;
    mqr_msg_t **old = r->slots;
    size_t cap = r->count * 4 > old_cap ? old_cap * 2 : old_cap; /* else just drop tombstones */
    mqr_msg_t **slots = calloc(cap, sizeof *slots);
    if (!slots) return MQR_ENOMEM;
    r->slots = slots;
    r->cap = cap;
    r->used = r->count;
    for (size_t i = 0; i < old_cap; i++) {
        if (!is_live(old[i])) continue;
        bool found;
        slots[find_slot(r, old[i]->topic, old[i]->topic_len, &found)] = old[i];
    }
    free(old);
    return 0;
}

static int put_memory(mqr_retain_t *r, mqr_msg_t *msg)
{
    if ((r->used + 1) * 4 > r->cap * 3) {
        int rc = grow(r);
        if (rc < 0) return rc;
    }
    bool found;
    size_t i = find_slot(r, msg->topic, msg->topic_len, &found);
    mqr_msg_ref(msg);
    if (found) {
        mqr_msg_unref(r->slots[i]);
    } else {
        if (!r->slots[i]) r->used++;
        r->count++;
        if (msg->topic_len && msg->topic[0] == '$') r->sys_count++;
    }
    r->slots[i] = msg;
    return 0;
}

static void remove_memory(mqr_retain_t *r, const char *topic, size_t len)
{
    bool found;
    size_t i = find_slot(r, topic, len, &found);
    if (!found) return;
    if (len && topic[0] == '$') r->sys_count--;
    mqr_msg_unref(r->slots[i]);
    r->slots[i] = TOMBSTONE;
    r->count--;
}

static int load_one(void *arg, mqr_msg_t *msg)
{
    int rc = put_memory(arg, msg);
    mqr_msg_unref(msg);
    return rc;
}

int mqr__retain_load(mqr_retain_t *r)
{
    if (!r->store) return 0;
    return mqr__store_retain_load(r->store, load_one, r);
}

/* $SYS/... statistics describe the running process: kept in memory only,
 * so a restart never serves the last run's figures and they cost no writes. */
static bool memory_only(const char *topic, size_t len)
{
    return len >= 5 && memcmp(topic, "$SYS/", 5) == 0;
}

int mqr__retain_set(mqr_retain_t *r, mqr_msg_t *msg)
{
    if (msg->payload_len == 0) return mqr__retain_delete(r, msg->topic, msg->topic_len);
    if (r->store && !memory_only(msg->topic, msg->topic_len)) {
        int rc = mqr__store_retain_set(r->store, msg);
        if (rc < 0) return rc;
    }
    return put_memory(r, msg);
}

int mqr__retain_delete(mqr_retain_t *r, const char *topic, size_t len)
{
    remove_memory(r, topic, len);
    return r->store && !memory_only(topic, len) ? mqr__store_retain_delete(r->store, topic, len)
                                                : 0;
}

mqr_msg_t *mqr__retain_get(const mqr_retain_t *r, const char *topic, size_t len)
{
    bool found;
    size_t i = find_slot(r, topic, len, &found);
    if (!found || expired(r->slots[i], mqr__now_ms())) return NULL;
    return r->slots[i];
}

int mqr__retain_match(mqr_retain_t *r, const char *filter, size_t len, mqr_retain_fn fn, void *arg)
{
    uint64_t now = mqr__now_ms();
    for (size_t i = 0; i < r->cap; i++) {
        mqr_msg_t *m = r->slots[i];
        if (!is_live(m) || expired(m, now)) continue;
        if (!mqr__topic_matches(filter, len, m->topic, m->topic_len)) continue;
        int rc = fn(arg, m);
        if (rc) return rc;
    }
    return 0;
}

/* ---- checked set/get/delete (the C, Lua and admin APIs)
 * ---------------------------------------------------------- */

int mqr__retained_set(mqr_retain_t *rt, const char *topic, const void *payload, size_t len, int qos)
{
    if (!rt || !topic) return MQR_EINVAL;
    if (qos < 0 || qos > 2) return MQR_EQOS;
    size_t tlen = strlen(topic);
    int rc = mqr__topic_name_validate(topic, tlen);
    if (rc < 0) return rc;
    if (len == 0) {
        rc = mqr__retain_delete(rt, topic, tlen);
        return rc == MQR_ENOENT ? 0 : rc;
    }
    mqr_msg_init_t in = {
        .topic = topic,
        .topic_len = tlen,
        .payload = payload,
        .payload_len = len,
        .qos = qos,
        .retain = true,
        .origin = MQR_ORIGIN_C,
    };
    mqr_msg_t *m = mqr__msg_new(&in);
    if (!m) return MQR_ENOMEM;
    rc = mqr__retain_set(rt, m);
    mqr_msg_unref(m);
    return rc;
}

mqr_msg_t *mqr__retained_get(mqr_retain_t *rt, const char *topic)
{
    if (!rt || !topic) return NULL;
    mqr_msg_t *m = mqr__retain_get(rt, topic, strlen(topic));
    if (m) mqr_msg_ref(m);
    return m;
}

int mqr__retained_delete(mqr_retain_t *rt, const char *topic)
{
    if (!rt || !topic) return MQR_EINVAL;
    size_t len = strlen(topic);
    if (!mqr__retain_get(rt, topic, len)) return MQR_ENOENT;
    return mqr__retain_delete(rt, topic, len);
}
