/*
 * sink.h — what every egress client (HTTP, PostgreSQL, Redis, file) has in
 * common: a bound on requests in flight and waiting, the outcome of a
 * request (done, worth retrying, or failed for good), counters by kind of
 * failure, a latency histogram, and the up/down state with the observer
 * that turns it into sink_up / sink_down events.
 *
 * A client embeds an mqr_sink_t as its first member and calls the helpers
 * below at the moments they name; the engine keeps every open sink in one
 * list (mqr__sinks_*) for /metrics and the admin API. Everything runs on the
 * engine's loop thread. Must not: block, or keep a secret (a password in a
 * conninfo or URL) in a field the admin API or a log can show: `target` is
 * what the client may show of where it sends.
 */
#ifndef MQR_SINK_H
#define MQR_SINK_H

#include "admin.h"
#include "mqrouter.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a request came to. A queue consumer acks OK, nacks RETRY (backoff,
 * then again) and dead-letters PERMANENT (the same request would fail the
 * same way). */
typedef enum {
    MQR_SINK_OK = 0,
    MQR_SINK_RETRY, /* timeout, connection refused or lost, HTTP 5xx/429, serialization failure */
    MQR_SINK_PERMANENT, /* HTTP 4xx, constraint violation, SQL or command error, bad argument */
} mqr_sink_outcome_t;

/* Failure kinds counted per sink (the `kind` label of /metrics). */
typedef enum {
    MQR_SINK_ERR_TIMEOUT = 0, /* no answer in time */
    MQR_SINK_ERR_CONNECT,     /* could not connect, or the connection broke */
    MQR_SINK_ERR_SERVER,      /* the server failed (HTTP 5xx, a server-side error) */
    MQR_SINK_ERR_REQUEST,     /* the server refused the request (HTTP 4xx, SQL error) */
    MQR_SINK_ERR_FULL,        /* refused here: in flight and waiting at their bounds */
    MQR_SINK_ERR_OTHER,
    MQR_SINK_ERR_KINDS_
} mqr_sink_err_kind_t;

/* Names of the kinds, in order: "timeout", "connect", ... */
const char *mqr__sink_err_kind_name(mqr_sink_err_kind_t k);

typedef struct mqr_sink mqr_sink_t;

/* Called when a sink goes up (connected, file open) or down (reason). */
typedef void (*mqr_sink_state_fn)(void *arg, mqr_sink_t *s, bool up, const char *reason);

struct mqr_sink {
    mqr_sink_t *prev, *next; /* the engine's list (mqr__sinks_add) */
    const char *kind;        /* "http", "pg", "redis", "file": static */
    char name[64];           /* unique per engine: what the script called it */
    char target[256];        /* where it sends, secrets removed */
    uint32_t max_in_flight;  /* requests on the wire at once */
    uint32_t max_queued;     /* requests waiting for a slot */
    uint32_t in_flight, queued;
    bool up;
    bool up_known;                          /* up was set once: the first state is told too */
    uint64_t requests, ok, retried, failed; /* failed = PERMANENT */
    uint64_t errors[MQR_SINK_ERR_KINDS_];
    uint64_t reconnects;
    mqr_admin_hist_t latency; /* request accepted → answer */
    char last_error[256];
    mqr_sink_state_fn on_state;
    void *state_arg;
};

/* Fills the common part; name and target are copied (truncated). */
void mqr__sink_init(mqr_sink_t *s, const char *kind, const char *name, const char *target,
                    uint32_t max_in_flight, uint32_t max_queued);

/* Takes a request: 0 and counts it (in flight if a slot is free, else
 * waiting: *waits says which), or MQR_EFULL and counts that. */
int mqr__sink_admit(mqr_sink_t *s, bool *waits);

/* The same, for a client with limits of its own besides max_in_flight:
 * when !may_start the request waits (or is refused) whatever is free. */
int mqr__sink_admit_if(mqr_sink_t *s, bool may_start, bool *waits);

/* A waiting request got a slot. */
void mqr__sink_start_waiting(mqr_sink_t *s);

/* A request ended after ns nanoseconds (latency) with outcome; kind names
 * the failure (ignored for OK) and reason (may be NULL) becomes last_error.
 * was_waiting: it ended before it got a slot (a sink closing). */
void mqr__sink_done(mqr_sink_t *s, bool was_waiting, uint64_t ns, mqr_sink_outcome_t outcome,
                    mqr_sink_err_kind_t kind, const char *reason);

/* Up or down; tells the observer the first state and every change. */
void mqr__sink_set_up(mqr_sink_t *s, bool up, const char *reason);

/* Copies uri with any password replaced by "***" (user:pass@ in a URL, or
 * password=... in a libpq conninfo) into out (cap bytes, truncated). */
void mqr__sink_redact(const char *uri, char *out, size_t cap);

/* ---- the engine's list of sinks ---- */

typedef struct mqr_sinks {
    mqr_sink_t *head;
    size_t count;
} mqr_sinks_t;

void mqr__sinks_add(mqr_sinks_t *l, mqr_sink_t *s);
void mqr__sinks_remove(mqr_sinks_t *l, mqr_sink_t *s);
mqr_sink_t *mqr__sinks_find(const mqr_sinks_t *l, const char *name);

/* Closes the sinks a C host opened (mqrouter_sinks.h): engine stop. */
void mqr__sink_api_stop(mqr_engine_t *e);

#endif
