/*
 * store_outbox.h — what upstream sessions on the native transport owe a
 * broker, in the engine's store (schema version 7): one row per QoS 1/2
 * publish a persistent session accepted and the broker has not completed
 * yet, buffered or in flight, keyed by a sequence number that keeps their
 * order. Written in the store's group commit, so a publisher's
 * acknowledgement that waits for the commit (mqr__store_after_commit)
 * promises the row; removed when the broker completes the publish.
 *
 * Loop thread only, like the store. Must not interpret the rows beyond
 * their expiry: the native transport decides what a row means.
 */
#ifndef MQR_STORE_OUTBOX_H
#define MQR_STORE_OUTBOX_H

#include "message.h"
#include "store.h"

#include <stdint.h>

typedef struct mqr_store_outbox mqr_store_outbox_t;

/* Prepares the statements on s and reads the next sequence number.
 * Returns 0 and *out, MQR_ENOMEM or MQR_ESTORE (mqr__store_last_error). */
int mqr__store_outbox_open(mqr_store_t *s, mqr_store_outbox_t **out);

/* Finalizes the statements: before mqr__store_close. o may be NULL. */
void mqr__store_outbox_close(mqr_store_outbox_t *o);

/* Adds msg as session's next row, sent to the broker under topic (the
 * session's remote name) with expiry_s (> 0: seconds left) from now.
 * Returns 0 and *seq (never 0), MQR_EINVAL, MQR_ECLOSED or MQR_ESTORE. */
int mqr__store_outbox_put(mqr_store_outbox_t *o, const char *session, const char *topic,
                          const mqr_msg_t *msg, uint32_t expiry_s, uint64_t *seq);

/* Removes a row; 0 also when there was none. */
int mqr__store_outbox_delete(mqr_store_outbox_t *o, uint64_t seq);

/* Removes every row of session. */
int mqr__store_outbox_discard(mqr_store_outbox_t *o, const char *session);

/* Rows of session, or < 0 (MQR_ESTORE). */
int64_t mqr__store_outbox_count(mqr_store_outbox_t *o, const char *session);

/* Calls cb for the session's rows in order with a new message (origin
 * MQR_ORIGIN_STORE, its topic the remote one, created_ms the row's; the
 * reference is cb's) and the seconds of expiry left (0: none). Rows whose
 * expiry passed are deleted, not handed out, and counted in *expired (may
 * be NULL). cb returns 0 to go on; anything else stops the load and is
 * returned. cb must not call into the outbox. Returns 0, MQR_ENOMEM,
 * MQR_ESTORE or cb's value. */
int mqr__store_outbox_load(mqr_store_outbox_t *o, const char *session,
                           int (*cb)(void *arg, uint64_t seq, mqr_msg_t *msg, uint32_t expiry_s),
                           void *arg, uint64_t *expired);

#endif
