/*
 * mqrouter_sinks.h — the egress clients (HTTP, PostgreSQL, Redis, file) for
 * a C host: the same clients the rules get as mq.http, mq.pg, mq.redis and
 * mq.file, on the engine's loop, listed in /metrics and GET /api/v1/sinks,
 * closed by mqr_engine_stop()/mqr_engine_free() (their unanswered requests
 * get MQR_ECLOSED then).
 *
 * Options are "key=value" strings (NULL-terminated list), so that new ones
 * never change a struct's size:
 *   every kind   name=NAME (unique per engine among the host's sinks)
 *   "http"       timeout_ms, connect_timeout_ms, max_in_flight, max_queued,
 *                max_host_connections, max_response_bytes, ca, cert, key,
 *                insecure=1, target (shown instead of the URLs),
 *                transport=native|curl (plain http://: own HTTP/1.1 or libcurl)
 *   "pg"         conninfo (required), connections, max_queued, timeout_ms,
 *                batch_rows, batch_ms
 *   "redis"      host, port, password, db, timeout_ms, connect_timeout_ms,
 *                max_in_flight, max_queued
 *   "file"       path (required), format=jsonl|raw, fsync=batch|interval|none,
 *                fsync_ms, rotate_bytes, rotate_seconds, keep, max_queued
 * docs/integrations.md says what each does; the defaults are the Lua API's.
 *
 * A request either returns a negative MQR_E* (MQR_EINVAL: bad argument,
 * MQR_EFULL: bounds, MQR_ECLOSED, MQR_ENOMEM; then done is never called) or
 * 0, and done(arg, result) is called exactly once, later, on the loop
 * thread. Loop thread only. The result is borrowed for the call.
 */
#ifndef MQROUTER_SINKS_H
#define MQROUTER_SINKS_H

#include "mqrouter.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mqr_sink_client mqr_sink_client_t;

/* What a request came to: acknowledge it, try again later, or give up
 * (the same request would fail the same way). */
enum { MQR_SINK_RESULT_OK = 0, MQR_SINK_RESULT_RETRY = 1, MQR_SINK_RESULT_PERMANENT = 2 };

typedef struct {
    int outcome;        /* MQR_SINK_RESULT_* */
    int err;            /* 0, or MQR_E* / a libuv code (UV_ETIMEDOUT...) */
    const char *reason; /* what happened, never a password; NULL when OK */
    double seconds;     /* from the request to its answer */
    /* HTTP: the answer (status 0 without one) */
    int status;
    const char *body;
    size_t body_len;
    /* PostgreSQL: a query's rows (values row-major, NULL = SQL NULL) */
    const char *sqlstate; /* "" without one */
    int rows, cols;
    const char *const *names;
    const char *const *values;
    uint64_t affected;
    /* Redis: the reply (a string, status or error text; an integer) */
    int redis_type; /* 1 string, 2 array, 3 integer, 4 nil, 5 status, 6 error */
    const char *text;
    size_t text_len;
    long long integer;
} mqr_sink_result_t;

typedef void (*mqr_sink_done_fn)(void *arg, const mqr_sink_result_t *result);

/* Opens a client of kind "http", "pg", "redis" or "file". 0 and *out (the
 * engine owns it), or MQR_EINVAL (unknown kind or option, a bad value, a
 * bad conninfo: *errmsg says which, never with a password), MQR_EEXIST
 * (name taken), MQR_ENOMEM, MQR_ECLOSED (engine stopping). *errmsg (if
 * errmsg is not NULL) is malloc'd; the caller frees it. */
int mqr_sink_open(mqr_engine_t *e, const char *kind, const char *const *options,
                  mqr_sink_client_t **out, char **errmsg);

/* Closes c: its unanswered requests get MQR_ECLOSED now. */
void mqr_sink_close(mqr_sink_client_t *c);

/* HTTP: headers are "Name: value" strings (NULL-terminated, may be NULL);
 * body is copied. A 2xx answer is OK; 408, 429, 5xx, timeouts and lost
 * connections RETRY; other answers PERMANENT. */
int mqr_sink_http_request(mqr_sink_client_t *c, const char *method, const char *url,
                          const char *const *headers, const void *body, size_t body_len,
                          mqr_sink_done_fn done, void *arg);

/* PostgreSQL: $1..$n text parameters (NULL = SQL NULL), never spliced. */
int mqr_sink_pg_query(mqr_sink_client_t *c, const char *sql, int nparams, const char *const *values,
                      mqr_sink_done_fn done, void *arg);
/* One row; rows of the same table and columns are batched into one INSERT. */
int mqr_sink_pg_insert(mqr_sink_client_t *c, const char *table, int ncols, const char *const *cols,
                       const char *const *values, mqr_sink_done_fn done, void *arg);

/* Redis: a command as a list of arguments (binary-safe), pipelined. */
int mqr_sink_redis_command(mqr_sink_client_t *c, int argc, const char *const *argv,
                           const size_t *argvlen, mqr_sink_done_fn done, void *arg);

/* File: one record (a line with format jsonl: no newline inside); done may
 * be NULL. done fires once the record is written (and, with fsync=batch,
 * on disk). */
int mqr_sink_file_write(mqr_sink_client_t *c, const void *data, size_t len, mqr_sink_done_fn done,
                        void *arg);
/* done fires once everything written before is on disk. */
int mqr_sink_file_flush(mqr_sink_client_t *c, mqr_sink_done_fn done, void *arg);

#ifdef __cplusplus
}
#endif

#endif
