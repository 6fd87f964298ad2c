/*
 * store_client_sessions.h — the rows of persistent listener sessions in the
 * engine's store: the session, its subscriptions, its outbound QoS 1/2
 * messages (queued or in flight) and its inbound QoS 2 packet ids.
 *
 * Every write goes into the store's group-committed transaction
 * (mqr__store_write); a caller that promises durability waits with
 * mqr__store_after_commit. Loop thread only. It knows rows, not MQTT rules:
 * the listener (core/listener/client_session.c) decides what to write and when.
 */
#ifndef MQR_STORE_CLIENT_SESSIONS_H
#define MQR_STORE_CLIENT_SESSIONS_H

#include "message.h"
#include "store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mqr_store_client_sessions mqr_store_client_sessions_t;

/* Prepares the statements on s's connection. Returns 0, MQR_ENOMEM or
 * MQR_ESTORE. Close before the store closes. */
int mqr__store_client_sessions_open(mqr_store_t *s, mqr_store_client_sessions_t **out);
void mqr__store_client_sessions_close(mqr_store_client_sessions_t *ss);

/* A session row; replaces one with the same id (keeping its children).
 * disconnected_ms: wall clock when its client left, 0 while connected. */
int mqr__store_client_session_put(mqr_store_client_sessions_t *ss, const char *id, size_t id_len,
                                  int version, uint32_t expiry_s, uint64_t disconnected_ms);
/* Deletes the session and everything that belongs to it. */
int mqr__store_client_session_delete(mqr_store_client_sessions_t *ss, const char *id,
                                     size_t id_len);

/* flags: bit 0 no local, bit 1 retain as published, bits 2-3 retain
 * handling. filter is the whole text, "$share/<group>/" included. */
int mqr__store_client_session_sub_put(mqr_store_client_sessions_t *ss, const char *id,
                                      size_t id_len, const char *filter, size_t flen, uint8_t qos,
                                      uint8_t flags, uint32_t sub_id);
int mqr__store_client_session_sub_delete(mqr_store_client_sessions_t *ss, const char *id,
                                         size_t id_len, const char *filter, size_t flen);

/* An outbound delivery, identified by seq within its session (increasing:
 * the load returns them in seq order). pid 0 = queued, not yet sent.
 * sub_ids: its n_ids Subscription Identifiers (several for one copy sent
 * for overlapping subscriptions). */
int mqr__store_client_session_msg_put(mqr_store_client_sessions_t *ss, const char *id,
                                      size_t id_len, uint64_t seq, const mqr_msg_t *msg,
                                      uint8_t qos, bool retain, const uint32_t *sub_ids,
                                      uint32_t n_ids, uint16_t pid, uint8_t state);
int mqr__store_client_session_msg_state(mqr_store_client_sessions_t *ss, const char *id,
                                        size_t id_len, uint64_t seq, uint16_t pid, uint8_t state);
int mqr__store_client_session_msg_delete(mqr_store_client_sessions_t *ss, const char *id,
                                         size_t id_len, uint64_t seq);

/* Inbound QoS 2 packet ids received and not yet released. */
int mqr__store_client_session_qos2_put(mqr_store_client_sessions_t *ss, const char *id,
                                       size_t id_len, uint16_t pid);
int mqr__store_client_session_qos2_delete(mqr_store_client_sessions_t *ss, const char *id,
                                          size_t id_len, uint16_t pid);

/* What the load hands back, per session, in this order: the session, then
 * its subscriptions, messages (seq order) and QoS 2 ids. Strings are valid
 * for the call only; msg is a new message (origin MQR_ORIGIN_STORE) whose
 * reference belongs to the callee. A callback returning non-zero stops the
 * load with that value. Callbacks must not call into the store. */
typedef struct {
    int (*session)(void *arg, const char *id, size_t id_len, int version, uint32_t expiry_s,
                   uint64_t disconnected_ms);
    int (*sub)(void *arg, const char *id, size_t id_len, const char *filter, size_t flen,
               uint8_t qos, uint8_t flags, uint32_t sub_id);
    int (*msg)(void *arg, const char *id, size_t id_len, uint64_t seq, mqr_msg_t *msg, uint8_t qos,
               bool retain, const uint32_t *sub_ids, uint32_t n_ids, uint16_t pid, uint8_t state);
    int (*qos2)(void *arg, const char *id, size_t id_len, uint16_t pid);
} mqr_store_client_sessions_load_t;

int mqr__store_client_sessions_load(mqr_store_client_sessions_t *ss,
                                    const mqr_store_client_sessions_load_t *cb, void *arg);

#endif
