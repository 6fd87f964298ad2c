/*
 * store.h — the engine's persistence: one SQLite database per engine.
 *
 * The store owns one connection, a versioned schema, statements prepared at
 * open, and a group commit: every write of a loop turn goes into one
 * transaction that is committed once, right before the loop blocks for I/O.
 * Acknowledgements that promise durability wait for that commit through
 * mqr__store_after_commit(). Everything here runs on the loop thread only; the
 * store never starts threads and never blocks except inside SQLite itself
 * (fsync at commit, busy timeout on a lock held by another process).
 *
 * It must not know what the rows mean to the rest of the engine: callers hand
 * it messages and strings, it hands them back. No Lua here.
 */
#ifndef MQR_STORE_H
#define MQR_STORE_H

#include "message.h"
#include "mqrouter.h"

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct mqr_store mqr_store_t;

typedef enum {
    MQR_STORE_SYNC_FULL = 0,   /* fsync the WAL at every commit: survives power loss */
    MQR_STORE_SYNC_NORMAL = 1, /* fsync at checkpoints only: survives process crashes */
} mqr_store_sync_t;

typedef struct {
    int synchronous;          /* mqr_store_sync_t; default MQR_STORE_SYNC_FULL */
    unsigned busy_timeout_ms; /* wait this long for a lock held elsewhere; 0 = 5000 */
} mqr_store_options_t;

/* Fills opts with the defaults. */
void mqr__store_options_init(mqr_store_options_t *opts);

/* Opens (creating if needed) the database at path, or an in-memory one for
 * ":memory:", and brings its schema up to the latest version. A missing
 * parent directory is created. opts may be NULL for the defaults.
 *
 * Returns 0 and *out, or:
 *   MQR_EINVAL  a NULL or empty argument;
 *   MQR_ESCHEMA the file's schema is newer than this program: the file is
 *               left as it was;
 *   MQR_ESTORE  anything SQLite or the file system refused;
 *   MQR_ENOMEM.
 * On failure, when errmsg is not NULL, *errmsg is a malloc'd text naming the
 * file and the cause (the caller frees it); on success *errmsg is NULL.
 * The store uses one libuv handle on loop, unref'd while nothing is pending so
 * it never keeps the loop alive for nothing. */
int mqr__store_open(mqr_store_t **out, uv_loop_t *loop, const char *path,
                    const mqr_store_options_t *opts, char **errmsg);

/* Commits what is pending (waiting after_commit callbacks run inside this
 * call with the commit's status), finalizes statements, closes the database
 * and closes the libuv handle. The memory is released by that handle's close
 * callback, so the loop must run once more before uv_loop_close(). s may be
 * NULL. Do not use s after this call. */
void mqr__store_close(mqr_store_t *s);

/* Commits the current transaction now instead of at the end of the loop turn.
 * Waiting after_commit callbacks run inside this call. Returns 0 (also when
 * nothing was pending) or MQR_ESTORE; then the pending writes are lost and
 * mqr__store_last_error() says why. */
int mqr__store_flush(mqr_store_t *s);

/* Durability barrier: cb(arg, status) runs on the loop thread once every
 * write made before this call is committed (status 0) or lost (status < 0,
 * MQR_ESTORE: the commit failed or SQLite rolled the transaction back).
 * Callbacks run in the order they were registered. cb never runs inside this
 * call: with nothing pending it still waits for the next commit point, with
 * status 0. Commit points: the store's prepare callback (once per loop turn,
 * before the loop waits for I/O), mqr__store_flush() and mqr__store_close(),
 * which call waiters from inside themselves. A waiter may see an error
 * that belonged to a write made after it, never a 0 for a write that was lost.
 * Returns 0, MQR_EINVAL, MQR_ENOMEM or MQR_ECLOSED (during close); a failed
 * call never runs cb. */
int mqr__store_after_commit(mqr_store_t *s, void (*cb)(void *arg, int status), void *arg);

/* Text of the last failure (naming the file and SQLite's message), "" when
 * nothing has failed. Valid until the next store call. */
const char *mqr__store_last_error(const mqr_store_t *s);

typedef struct {
    uint64_t commits;         /* transactions SQLite committed on this connection
                                 (its commit hook), migrations included */
    uint64_t commit_failures; /* commit points whose writes were lost */
    uint64_t writes;          /* write statements executed */
} mqr_store_stats_t;

void mqr__store_stats(const mqr_store_t *s, mqr_store_stats_t *out);

/* ---- for the other store files (store_*.c) ------------------------------ */

/* The connection, for preparing statements (finalize them before
 * mqr__store_close). NULL once closing. */
sqlite3 *mqr__store_db(mqr_store_t *s);

/* A statement prepared for one call (finalize it before returning), NULL
 * when it cannot be; then mqr__store_prepare_error() says why: MQR_ECLOSED
 * (closing) or MQR_ESTORE. */
sqlite3_stmt *mqr__store_prepare(mqr_store_t *s, const char *sql);
int mqr__store_prepare_error(mqr_store_t *s);

/* Runs st (bound by the caller) as one write of the turn's group-committed
 * transaction, then resets it and clears its bindings. Returns 0,
 * MQR_ECLOSED or MQR_ESTORE (mqr__store_last_error says why). */
int mqr__store_write(mqr_store_t *s, sqlite3_stmt *st, const char *what);

/* Records SQLite's error for what, clears st's bindings; MQR_ESTORE. */
int mqr__store_fail(mqr_store_t *s, sqlite3_stmt *st, const char *what);

/* ---- retained messages ------------------------------------------------ */

/* Stores msg as the retained message of its topic, replacing any; an empty
 * payload deletes it instead (MQTT). Keeps topic, payload, QoS, properties,
 * created_ms and expiry_s. The caller keeps its reference. Returns 0,
 * MQR_EINVAL (NULL, empty topic) or MQR_ESTORE. */
int mqr__store_retain_set(mqr_store_t *s, const mqr_msg_t *msg);

/* Deletes the retained message of topic (len bytes); 0 also when none. */
int mqr__store_retain_delete(mqr_store_t *s, const char *topic, size_t len);

/* Calls cb for every retained message that has not expired, in topic order,
 * as a new message (origin MQR_ORIGIN_STORE, retain set) whose one reference
 * now belongs to cb. Expired ones (created_ms + expiry_s * 1000 < now) are
 * skipped and deleted. cb returns 0 to go on; anything else stops the load,
 * which returns that value. cb must not call into the store. Returns 0,
 * MQR_ENOMEM, MQR_ESTORE or cb's value. */
int mqr__store_retain_load(mqr_store_t *s, int (*cb)(void *arg, mqr_msg_t *msg), void *arg);

/* Number of retained messages that have not expired. */
int mqr__store_retain_count(mqr_store_t *s, size_t *count);

/* ---- meta: small strings about this database (instance id, ...) -------- */

/* Sets key to value; value NULL deletes the key. Group-committed like every
 * write. */
int mqr__store_meta_set(mqr_store_t *s, const char *key, const char *value);

/* *value is a malloc'd copy the caller frees. MQR_ENOENT when key is unset. */
int mqr__store_meta_get(mqr_store_t *s, const char *key, char **value);

/* ---- schema ----------------------------------------------------------- */

/* One migration step: sql brings the schema from version - 1 to version and
 * runs in one transaction with the PRAGMA user_version bump. */
typedef struct {
    int version;
    const char *sql;
} mqr_store_migration_t;

/* The ordered steps; entry i brings version i to i + 1, so *count is the
 * latest version this program knows. */
const mqr_store_migration_t *mqr__store_migrations(size_t *count);

/* Applies steps to db, one transaction each, until its user_version is target
 * (at most the latest; a db already at or past target is left alone).
 * Returns 0, MQR_EINVAL (target out of range), MQR_ESCHEMA (db newer than
 * this program) or MQR_ESTORE; *errmsg as for mqr__store_open(). Exposed so
 * tests can migrate a file step by step. */
int mqr__store_migrate(sqlite3 *db, int target, char **errmsg);

#endif
