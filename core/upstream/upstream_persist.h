/*
 * upstream_persist.h — Paho's user persistence for upstream sessions, kept
 * in SQLite, and the inbox of their incoming messages.
 *
 * Paho's: the records are Paho's ("c-", "s-", ... below) and the hooks
 * that write them (mqr__upstream_persist_hooks) are declared in
 * upstream_paho_int.h, for the Paho transport's files alone. The session
 * manager opens and closes the store, counts, discards and uses the inbox.
 *
 * With persistence, Paho writes every QoS 1/2 publish it buffers while
 * disconnected ("c-" command records) and every QoS 1/2 packet in flight
 * ("s-", "sc-", "r-" records) through these hooks, removes them when they
 * complete, and reads them all back when a client of the same session is
 * created again — after a restart or a kill -9. Records are rows of one table
 * keyed by the session's name and Paho's key.
 *
 * Threads: Paho calls the hooks from whatever thread drives it — the loop
 * (sendMessage), its send and receive threads, the worker that destroys a
 * client — so the store has its own connection, file and mutex. It is a file
 * of its own (upstream.db beside mqrouter.db), not a table in the engine's
 * store: the engine's connection keeps a write transaction open for a whole
 * loop turn (group commit), and a hook called on the loop thread inside that
 * turn would wait for a lock its own thread holds.
 *
 * Durability: every hook call is its own transaction, committed before it
 * returns, with synchronous = NORMAL: a record survives the process dying
 * (kill -9) at any point after the call returned; a power cut can lose the
 * last records before a checkpoint (Paho's own file persistence does no
 * fsync at all).
 */
#ifndef MQR_UPSTREAM_PERSIST_H
#define MQR_UPSTREAM_PERSIST_H

#include <uv.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mqr_upstream_persist mqr_upstream_persist_t;

/* Opens (creating if needed) the database at path. Returns 0 and *out, or
 * MQR_ESTORE / MQR_ESCHEMA / MQR_ENOMEM with *errmsg (malloc'd, the caller
 * frees it) naming the file and the cause. Loop thread; one unref'd timer
 * on loop commits removals left pending (see the .c) every 200 ms. */
int mqr__upstream_persist_open(uv_loop_t *loop, const char *path, mqr_upstream_persist_t **out,
                               char **errmsg);

/* Commits what is pending and closes the database. Every Paho client using
 * it must be destroyed first. The memory is released when the timer's close
 * callback runs (the loop must run once more). p may be NULL. */
void mqr__upstream_persist_close(mqr_upstream_persist_t *p);

/* Deletes every record of session name (inbox included): its buffered and
 * in-flight messages are given up. Any thread; no client of that session may be open. */
int mqr__upstream_persist_discard(mqr_upstream_persist_t *p, const char *name);

/* Number of records of session name (buffered commands, packets in flight,
 * inbox), or < 0. */
int64_t mqr__upstream_persist_count(mqr_upstream_persist_t *p, const char *name);

/* ---- the inbox ----------------------------------------------------------
 * Paho acknowledges an incoming QoS 1/2 message to the broker when its
 * callback returns, before the loop has routed it. So the callback writes
 * the message here first, the loop deletes it once routed, and a session
 * created again routes what is left (a crash in between). data is topic,
 * NUL, payload, raw v5 properties; the lengths say where each part ends. */
typedef struct {
    uint64_t seq;
    uint8_t qos;
    bool retain;
    uint32_t expiry_s;
    uint64_t arrived_ms;
    size_t topic_len, payload_len, props_len;
    const void *data;
    size_t data_len;
} mqr_upstream_inbox_rec_t;

/* Any thread; each is one committed transaction. */
int mqr__upstream_inbox_put(mqr_upstream_persist_t *p, const char *name,
                            const mqr_upstream_inbox_rec_t *r);
int mqr__upstream_inbox_delete(mqr_upstream_persist_t *p, const char *name, uint64_t seq);
/* Calls cb for the session's records in seq order (r valid during the
 * call); cb returns 0 to go on. Holds the store's mutex: cb must not call
 * into it. */
int mqr__upstream_inbox_load(mqr_upstream_persist_t *p, const char *name,
                             int (*cb)(void *arg, const mqr_upstream_inbox_rec_t *r), void *arg);
/* The same for the records with seq >= from, at most max of them (< 0: all). */
int mqr__upstream_inbox_load_from(mqr_upstream_persist_t *p, const char *name, uint64_t from,
                                  int64_t max,
                                  int (*cb)(void *arg, const mqr_upstream_inbox_rec_t *r),
                                  void *arg);

typedef struct {
    uint64_t puts, removes, failures;
} mqr_upstream_persist_stats_t;
void mqr__upstream_persist_stats(mqr_upstream_persist_t *p, mqr_upstream_persist_stats_t *out);

#endif
