/*
 * store_kv.h — the key-value table of the store (the Lua `mqrouter.kv`
 * entries marked persistent): put, delete, load all.
 *
 * Loop thread only, like the store. Writes join the turn's group commit.
 */
#ifndef MQR_STORE_KV_H
#define MQR_STORE_KV_H

#include "store.h"

/* Sets key to value (bytes; json says the value is JSON text). Returns 0,
 * MQR_EINVAL, MQR_ECLOSED or MQR_ESTORE. */
int mqr__store_kv_put(mqr_store_t *s, const char *key, size_t klen, const char *value, size_t vlen,
                      int json);

/* Deletes key; 0 also when there was none. */
int mqr__store_kv_delete(mqr_store_t *s, const char *key, size_t klen);

/* Calls cb for each stored entry (pointers valid during the call only);
 * cb returns 0 to go on, anything else stops the load and is returned. */
int mqr__store_kv_load(mqr_store_t *s,
                       int (*cb)(void *arg, const char *key, size_t klen, const char *value,
                                 size_t vlen, int json),
                       void *arg);

#endif
