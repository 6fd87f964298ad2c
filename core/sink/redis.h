/*
 * redis.h — the Redis sink: one connection to a Redis server on the
 * engine's loop (hiredis' asynchronous API on libuv event hooks of our own: the
 * adapter hiredis 0.14.1 ships loses socket errors, see redis.c), with
 * commands pipelined up to a bound, commands waiting (bounded) while the
 * connection is down, reconnection with backoff forever, and a timeout per
 * command. Built on the common sink part (sink.h): the client's
 * mqr_sink_t is what the engine lists, counts and shows.
 *
 * Loop thread only. Must not: block (a host name is resolved with
 * uv_getaddrinfo, never by hiredis), show the password anywhere (target,
 * last_error, reasons), or fire a done callback inside the call that took
 * the command. hiredis stays out of this header.
 *
 * Outcomes (mqr_redis_result_t.outcome, the sink's counters):
 *   OK         any reply that is not an error reply (nil included).
 *   RETRY      kind "timeout": no reply within timeout_ms of the call
 *                (waiting time included; err UV_ETIMEDOUT). A command that
 *                timed out on the wire may still run: its late reply is
 *                dropped.
 *              kind "connect": the connection broke with the command
 *                written and unanswered (err UV_ECONNRESET): it may or may
 *                not have run, so a retry means at least once.
 *              kind "server": an error reply that says "not now":
 *                -LOADING, -BUSY, -TRYAGAIN, -MASTERDOWN, -READONLY,
 *                -CLUSTERDOWN (err UV_EAGAIN).
 *              kind "other": the sink was closed first (err MQR_ECLOSED),
 *                or no memory for the reply (err MQR_ENOMEM).
 *   PERMANENT  kind "request": any other error reply (-ERR, -WRONGTYPE,
 *                unknown command, wrong arity...; err MQR_EINVAL): the same
 *                command would fail the same way.
 *
 * Connection: connect (connect_timeout_ms covers the TCP connect and the
 * handshake), then AUTH when a password is set, SELECT when db > 0, and
 * PING; only when all three answered does the sink go up and waiting
 * commands get written, in the order they were given. A failed handshake
 * (wrong password: -WRONGPASS) closes the connection and the sink stays
 * down with last_error saying why (never the password); it keeps retrying
 * with backoff (backoff_min_ms doubling to backoff_max_ms, back to the
 * minimum once up), because a password can be fixed on the server side.
 * Commands waiting meanwhile fail RETRY/timeout at their deadline, with
 * the reason for being down in their reason.
 *
 * Bounds: while up, max_in_flight commands are written and unanswered
 * (pipelining); more wait, up to max_queued. While down (or during the
 * handshake) every new command waits, up to max_queued. Beyond that the
 * call returns MQR_EFULL and counts it. A command that timed out on the
 * wire gives its slot back but its reply is still expected (a tombstone);
 * when max_in_flight tombstones pile up, the connection is deemed dead and
 * is replaced (with max_in_flight 1, at the first timeout). A command that
 * waited past its deadline fails from the waiting list, never written.
 */
#ifndef MQR_SINK_REDIS_H
#define MQR_SINK_REDIS_H

#include "sink.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct mqr_redis mqr_redis_t;

typedef struct {
    const char *name;            /* sink name; NULL: "redis" (copied) */
    const char *host;            /* NULL: "127.0.0.1"; a name is resolved with uv_getaddrinfo */
    int port;                    /* 0: 6379 */
    const char *password;        /* NULL or "": no AUTH; copied, never shown */
    int db;                      /* SELECT db when > 0 */
    uint32_t max_in_flight;      /* 0: 1024 */
    uint32_t max_queued;         /* 0: 100000 */
    uint32_t timeout_ms;         /* per command, from the call; 0: 5000 */
    uint32_t connect_timeout_ms; /* connect + handshake; 0: 2000 */
    uint32_t backoff_min_ms;     /* first reconnect delay; 0: 100 */
    uint32_t backoff_max_ms;     /* doubling up to; 0: 5000 */
} mqr_redis_opts_t;

/* Reply types (the values are RESP2's, as hiredis numbers them). */
enum {
    MQR_REDIS_STRING = 1,
    MQR_REDIS_ARRAY = 2,
    MQR_REDIS_INTEGER = 3,
    MQR_REDIS_NIL = 4,
    MQR_REDIS_STATUS = 5,
    MQR_REDIS_ERROR = 6,
};

typedef struct mqr_redis_reply mqr_redis_reply_t;
struct mqr_redis_reply {
    int type;          /* MQR_REDIS_* */
    long long integer; /* INTEGER */
    const char *str;   /* STRING, STATUS, ERROR: len bytes, NUL after them */
    size_t len;
    size_t elements;                   /* ARRAY */
    mqr_redis_reply_t *const *element; /* ARRAY: elements entries */
};

/* What a command came to; borrowed for the callback only (copy what you
 * keep). reply: the server's reply (an error reply too), NULL when none
 * came (timeout, connection lost, closed). reason: NULL for OK, else a
 * short text without secrets. seconds: call → outcome. */
typedef struct {
    mqr_sink_outcome_t outcome;
    int err; /* 0, UV_ETIMEDOUT, UV_ECONNRESET, UV_EAGAIN, MQR_EINVAL, MQR_ECLOSED, MQR_ENOMEM */
    const char *reason;
    const mqr_redis_reply_t *reply;
    double seconds;
} mqr_redis_result_t;

typedef void (*mqr_redis_done_fn)(void *arg, const mqr_redis_result_t *res);

/* Makes a Redis sink on loop and starts connecting in the background (it
 * reconnects with backoff until closed; up/down through sink->on_state,
 * which the caller may set right after this call: nothing is told before
 * the loop runs). 0 and *out, or MQR_EINVAL (bad option, with *errmsg:
 * malloc'd, the caller frees; errmsg may be NULL) or MQR_ENOMEM. */
int mqr__redis_new(uv_loop_t *loop, const mqr_redis_opts_t *o, mqr_redis_t **out, char **errmsg);

/* Closes r: every command not finished gets its done callback now, once,
 * RETRY with MQR_ECLOSED (a command written may still run on the server);
 * no callback fires after this returns. Memory goes once r's handles are
 * closed (run the loop). Callable from a done callback; NULL is a no-op. */
void mqr__redis_close(mqr_redis_t *r);

/* The common part (name, target "redis://host:port/db", counters, on_state). */
mqr_sink_t *mqr__redis_sink(mqr_redis_t *r);

/* Sends a command given as a list of arguments (binary-safe: argvlen[i]
 * bytes of argv[i]; argvlen NULL: strlen), never a format string. The
 * arguments are copied before this returns. 0: done(arg, result) fires
 * exactly once, later (never inside this call). <0: done never fires, and
 * why (if not NULL, why_cap bytes) says it in words:
 *   MQR_EINVAL  argc < 1, an empty command name, or a command that
 *               changes how the connection answers or that a reconnect
 *               would undo: (P|S)(UN)SUBSCRIBE, MONITOR, CLIENT REPLY,
 *               HELLO, SELECT (use opts.db), RESET
 *   MQR_EFULL   in flight and waiting at their bounds
 *   MQR_ECLOSED r is closing
 *   MQR_ENOMEM */
int mqr__redis_command(mqr_redis_t *r, int argc, const char *const *argv, const size_t *argvlen,
                       mqr_redis_done_fn done, void *arg, char *why, size_t why_cap);

#endif
