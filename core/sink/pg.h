/*
 * pg.h — the PostgreSQL sink: a pool of libpq connections driven on the
 * engine's libuv loop (PQconnectStart/PQconnectPoll, PQsendQueryParams,
 * PQconsumeInput/PQisBusy/PQgetResult, PQflush in non-blocking mode, each
 * socket watched by a uv_poll_t). Queries with $n parameters, and single-row
 * inserts that are batched into multi-row INSERT statements. The bindings
 * (Lua) and the benchmark call it; it embeds mqr_sink_t (sink.h) for bounds,
 * counters and up/down. Loop thread only. Must not: block (no PQexec, no
 * PQcancel), splice a value or a name into SQL unquoted, or show a password
 * (errors, `sink.target`, `last_error`).
 *
 * Lifecycle: mqr__pg_new() connects in the background (requests wait while
 * no connection is up); mqr__pg_close() answers every unfinished request
 * with MQR_ECLOSED (RETRY) before it returns, closes the connections, and
 * frees the client once its handles have closed (run the loop).
 *
 * Each connection carries one statement at a time (no pipeline mode): an
 * insert batch already carries up to batch_rows rows per round trip, which
 * is where throughput comes from, and one statement per implicit transaction
 * keeps a failure to the requests of that statement (in pipeline mode an
 * error aborts everything queued up to the next sync). Measured on 2 cores
 * (bench/README.md): ~200 000 rows/s batched; queries 12 000/s on one
 * connection, 16 000/s on 2 and on 4: the server's CPU per statement is the
 * limit there, not the round trip that pipelining would hide. When a
 * statement completes, the connection takes its next one before the
 * answers' callbacks run.
 *
 * Bounds: `sink.max_in_flight` is connections * batch_rows (requests that
 * the dispatcher holds: on the wire, or in a batch that fills), the rest
 * wait (`sink.queued`, up to max_queued) — also while the pool is down.
 *
 * Timeouts (timeout_ms): a statement on the wire that gets no answer in
 * time fails RETRY (kind timeout) and its connection is dropped and
 * reconnected (PQcancel would block; statement_timeout would not cover a
 * dead network). A request still waiting timeout_ms after it was accepted
 * (pool down, or busy) fails the same way. Connecting has the same bound.
 *
 * Outcome of a failed statement, by SQLSTATE (class = first two chars):
 *   RETRY, kind connect:  no SQLSTATE (the connection broke: a statement in
 *                         flight then is retried: at least once), class 08.
 *   RETRY, kind server:   40001 serialization_failure, 40P01 deadlock,
 *                         57P01/57P02/57P03 shutdown or cannot connect now,
 *                         class 53 insufficient resources, 55P03
 *                         lock_not_available, class 58 system error, XX.
 *   RETRY, kind timeout:  57014 query_canceled (a server statement_timeout).
 *   PERMANENT, kind request: everything else: 23 integrity constraint, 42
 *                         syntax or undefined table/column, 22 data
 *                         exception, 28 authorization, 0A, 25, ...
 * A batch of inserts that fails PERMANENT with class 22 or 23 (one bad row)
 * is run again row by row, each row its own statement, so that only the bad
 * rows fail; other PERMANENT failures (42: the table or a column is wrong)
 * fail every row of the batch at once, as would each row.
 */
#ifndef MQR_SINK_PG_H
#define MQR_SINK_PG_H

#include "sink.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct mqr_pg mqr_pg_t;

/* Options; every number 0 takes the default. */
typedef struct {
    const char *name;        /* sink name, default "pg"; copied */
    const char *conninfo;    /* "host=... password=..." or postgresql://...; copied */
    uint32_t connections;    /* pool size, default 2 (at most 64) */
    uint32_t max_queued;     /* waiting requests, default 100000 */
    uint32_t timeout_ms;     /* per request and per connect attempt, default 10000 */
    uint32_t batch_rows;     /* rows per INSERT statement, default 1000 */
    uint32_t batch_ms;       /* how long a batch may wait to fill, default 5 */
    uint32_t backoff_min_ms; /* reconnect delay, doubled per failure, default 100 */
    uint32_t backoff_max_ms; /* ... up to this, default 5000 */
} mqr_pg_opts_t;

/* What a request came to; borrowed for the callback only. */
typedef struct {
    mqr_sink_outcome_t outcome;
    int err;                   /* 0, or why it failed: see below */
    const char *reason;        /* NULL when OK; one line, no password: the server's
                                  "ERROR 23505: message (detail)", or libpq's or ours */
    char sqlstate[6];          /* "" when the server gave none */
    int rows, cols;            /* a query's result (0, 0 for an insert or a command) */
    const char *const *names;  /* cols column names */
    const char *const *values; /* rows*cols, row-major, text; NULL = SQL NULL */
    uint64_t affected;         /* PQcmdTuples of the statement (an insert: of its batch) */
    int batch;                 /* an insert: rows in the statement that carried it */
    double seconds;            /* accepted → answered */
} mqr_pg_result_t;

typedef void (*mqr_pg_done_fn)(void *arg, const mqr_pg_result_t *r);

/* Statistics of this client beyond the sink's counters. */
typedef struct {
    uint64_t statements;  /* statements sent (a batch is one) */
    uint64_t batches;     /* multi-row INSERT statements sent */
    uint64_t batch_rows;  /* rows sent in them */
    uint64_t row_retries; /* rows run alone after their batch failed (22/23) */
    uint64_t connects;    /* connections established */
} mqr_pg_stats_t;

/* err of a failed request: UV_ECONNRESET (RETRY, the connection broke or
 * none could be made), UV_ETIMEDOUT (RETRY, no answer in time), UV_EAGAIN
 * (RETRY, the server failed it: see sqlstate), MQR_EINVAL (PERMANENT, the
 * server refused it: see sqlstate), MQR_ECLOSED (RETRY, mqr__pg_close),
 * MQR_ENOMEM (RETRY). */

/* Checks o (conninfo parsed by PQconninfoParse) and starts connecting.
 * 0 and *out; or MQR_EINVAL (bad options or conninfo) / MQR_ENOMEM, with
 * *errmsg (when errmsg is not NULL) a malloc'd reason that never
 * contains the password; the caller frees it. */
int mqr__pg_new(uv_loop_t *loop, const mqr_pg_opts_t *o, mqr_pg_t **out, char **errmsg);

/* Answers every unfinished request with MQR_ECLOSED (RETRY) now, then closes
 * and frees p once its handles closed (on a later loop turn). Callable from
 * a done callback. p must not be used after. */
void mqr__pg_close(mqr_pg_t *p);

/* The common part (counters, bounds, up/down observer): borrowed. */
mqr_sink_t *mqr__pg_sink(mqr_pg_t *p);
void mqr__pg_stats(const mqr_pg_t *p, mqr_pg_stats_t *out);

/* Runs sql with nparams text parameters $1..$n (values[i] NULL = SQL NULL;
 * lengths NULL or lengths[i] = strlen; a value must not contain a NUL byte).
 * Everything is copied. One statement (several in one string: 42601); a
 * COPY fails PERMANENT (MQR_EINVAL) and its connection is replaced; server
 * NOTICEs are ignored. 0: done fires exactly once, later. < 0 (done never
 * fires): MQR_EINVAL (why says what), MQR_EFULL, MQR_ECLOSED, MQR_ENOMEM. */
int mqr__pg_query(mqr_pg_t *p, const char *sql, int nparams, const char *const *values,
                  const size_t *lengths, mqr_pg_done_fn done, void *arg, char *why, size_t why_cap);

/* Inserts one row: ncols column names (quoted as identifiers) and ncols text
 * values (NULL = SQL NULL) into table ("name" or "schema.name": a dot splits
 * the schema; each part is quoted). Rows for the same table and columns are
 * gathered into one multi-row INSERT (up to batch_rows rows and 65535
 * parameters) while the batch is open (batch_ms, or until full); each row's
 * done fires once its statement committed or failed (see above). Returns as
 * mqr__pg_query; MQR_EINVAL for ncols < 1 or > 1600, or an empty or NULL
 * table or column name. */
int mqr__pg_insert(mqr_pg_t *p, const char *table, int ncols, const char *const *cols,
                   const char *const *values, mqr_pg_done_fn done, void *arg, char *why,
                   size_t why_cap);

#endif
