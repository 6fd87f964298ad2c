/*
 * retain.h — the retained message of each topic, in memory and in the store.
 *
 * Memory is the source for deliveries; the store makes it survive restarts.
 * Setting a retained message with an empty payload removes it (MQTT
 * 3.3.1.3). Lookups by filter scan every retained topic: fine for the
 * thousands an edge router keeps; a retained-topic trie can replace the scan
 * without changing this interface.
 */
#ifndef MQR_RETAIN_H
#define MQR_RETAIN_H

#include "message.h"

#include <stddef.h>

typedef struct mqr_store mqr_store_t;

typedef struct {
    mqr_msg_t **slots;  /* open addressing by topic hash; NULL = empty, tombstones below */
    size_t cap;         /* power of two */
    size_t count;       /* every retained message */
    size_t sys_count;   /* of those, on $ topics (the engine's own $SYS figures) */
    size_t used;        /* count + tombstones */
    mqr_store_t *store; /* may be NULL: memory only */
} mqr_retain_t;

int mqr__retain_init(mqr_retain_t *r, mqr_store_t *store);
/* Loads what the store holds (start-up). */
int mqr__retain_load(mqr_retain_t *r);
void mqr__retain_close(mqr_retain_t *r);

/* Keeps msg (takes a ref) as the retained message of its topic, or removes
 * the topic's retained message when the payload is empty. Writes through to
 * the store (batched). */
int mqr__retain_set(mqr_retain_t *r, mqr_msg_t *msg);
/* The retained message of exactly this topic (borrowed), or NULL. */
mqr_msg_t *mqr__retain_get(const mqr_retain_t *r, const char *topic, size_t len);
int mqr__retain_delete(mqr_retain_t *r, const char *topic, size_t len);

/* Retained messages that clients or rules set: the engine's own $SYS
 * figures are not counted. */
static inline size_t mqr__retain_user_count(const mqr_retain_t *r)
{
    return r->count - r->sys_count;
}

/* Calls fn for every retained message whose topic matches filter (borrowed,
 * ref to keep), skipping expired ones. Stops early if fn returns non-zero. */
typedef int (*mqr_retain_fn)(void *arg, mqr_msg_t *msg);
int mqr__retain_match(mqr_retain_t *r, const char *filter, size_t len, mqr_retain_fn fn, void *arg);

/* ---- retained messages: checked set/get/delete (the C, Lua and admin APIs) --- */

/* Stores a retained message on topic without routing it (subscribers get
 * it when they subscribe). An empty payload deletes. 0, MQR_ETOPIC...,
 * MQR_EQOS, MQR_ENOMEM, MQR_ESTORE. */
int mqr__retained_set(mqr_retain_t *rt, const char *topic, const void *payload, size_t len,
                      int qos);
/* The retained message of topic (a new reference for the caller), or NULL. */
mqr_msg_t *mqr__retained_get(mqr_retain_t *rt, const char *topic);
/* 0, MQR_ENOENT when none was held. */
int mqr__retained_delete(mqr_retain_t *rt, const char *topic);

#endif
