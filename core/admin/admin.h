/*
 * admin.h — the admin HTTP API and Prometheus metrics, as core files and the
 * bindings see them.
 *
 * One admin server per engine, on the engine's loop: JSON over HTTP/1.1
 * (http-parser reads requests, cJSON writes and reads bodies), `/health`,
 * `/metrics` (Prometheus text format) and `/api/v1/...`. server.c owns
 * sockets and framing, routes.c the endpoints, metrics.c the Prometheus
 * text, auth.c the bearer tokens (kept as SHA-256 digests only).
 *
 * Core stays Lua-free: what only the bindings know (routes and their
 * counters, reload, Lua memory) comes through the engine's script host
 * (mqr_host_ops_t in engine.h); without a host the API shows no rules and
 * refuses a reload. Loop thread only.
 */
#ifndef MQR_ADMIN_H
#define MQR_ADMIN_H

#include "message.h"
#include "mqrouter.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <x86intrin.h>
#define MQR_ADMIN_HAVE_TSC 1
#endif

/* Handler latency histogram: upper bounds in seconds as Prometheus "le"
 * labels, then +Inf; mqr__admin_hist_add() holds the same bounds in ns.
 * Buckets are kept per bucket (not cumulative); metrics.c adds them up. */
#define MQR_ADMIN_LAT_LE                                                                           \
    {                                                                                              \
        "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", \
            "0.25", "0.5", "1", "+Inf"                                                             \
    }
#define MQR_ADMIN_LAT_NBOUNDS 13

typedef struct {
    uint64_t bucket[MQR_ADMIN_LAT_NBOUNDS + 1]; /* last one: above every bound */
    uint64_t count;
    uint64_t sum_ns;
} mqr_admin_hist_t;

/* Counts one call of ns nanoseconds. */
static inline void mqr__admin_hist_add(mqr_admin_hist_t *h, uint64_t ns)
{
    /* bounds in ns, compared as integers: no floating point per call */
    static const uint64_t b[MQR_ADMIN_LAT_NBOUNDS] = {
        100000,   250000,   500000,    1000000,   2500000,   5000000,   10000000,
        25000000, 50000000, 100000000, 250000000, 500000000, 1000000000};
    unsigned i = 0;
    while (i < MQR_ADMIN_LAT_NBOUNDS && ns > b[i])
        i++;
    h->bucket[i]++;
    h->count++;
    h->sum_ns += ns;
}

/* The clock of handler timing. uv_hrtime() (clock_gettime) costs about
 * 50 ns on the development VM, twice per handler call; the CPU's time-stamp
 * counter about 16 ns. So where the TSC is invariant (x86-64, checked with
 * CPUID) ticks are read and converted with a factor calibrated against
 * uv_hrtime() when the first admin server starts; elsewhere ticks are ns. */
extern bool mqr__admin_use_tsc;
extern double mqr__admin_ns_per_tick;

static inline uint64_t mqr__admin_ticks(void)
{
#ifdef MQR_ADMIN_HAVE_TSC
    if (mqr__admin_use_tsc) return __rdtsc();
#endif
    return uv_hrtime();
}

/* Counts one call that took ticks (two mqr__admin_ticks() apart). */
static inline void mqr__admin_hist_add_ticks(mqr_admin_hist_t *h, uint64_t ticks)
{
    if ((int64_t)ticks < 0) ticks = 0; /* a counter read on another core, behind */
    if (mqr__admin_use_tsc) {
        double ns = (double)ticks * mqr__admin_ns_per_tick;
        ticks = ns < 1e18 ? (uint64_t)ns : (uint64_t)1e18;
    }
    mqr__admin_hist_add(h, ticks);
}

/* Decides the clock (once per process; the first call calibrates, for a
 * few milliseconds). Loop thread. */
void mqr__admin_clock_init(void);

/* One rule route as the admin API shows it (borrowed for the callback). */
typedef struct mqr_admin_route {
    const char *name;    /* "route 'a/#' (rules.lua:3)" */
    const char *filter;  /* its topic filter */
    const char *target;  /* "handler" or "queue:<name>" */
    const char *session; /* the upstream session it is bound to, or NULL */
    uint64_t calls, errors, budget_errors, dead_lettered;
    bool active;
    const mqr_admin_hist_t *latency; /* NULL when none was recorded */
} mqr_admin_route_t;

typedef struct mqr_admin_rules_info {
    const char *path; /* the script file, or NULL when loaded from a string / none */
    bool loaded;
    uint64_t reloads, reload_failures, handler_errors, budget_errors;
    uint64_t reload_dropped; /* buffered messages a reload found no taker for */
    const char *last_error;  /* the last handler error, "" when none */
    /* why the last failed reload failed (file:line: message), "" when none,
     * and when (seconds since the epoch, 0 when none); kept after a later
     * successful reload */
    const char *last_reload_error;
    double last_reload_error_at;
} mqr_admin_rules_info_t;

typedef struct mqr_admin mqr_admin_t;

/* Starts serving o->host:o->port (an IP literal; port 0 = any free port)
 * on e's loop. Tokens are copied as SHA-256 digests, never kept in clear;
 * with none, the API is open, which only a loopback address allows, and
 * not even there with o->require_token (MQR_EINVAL). */
int mqr__admin_start(mqr_engine_t *e, const mqr_admin_options_t *o, char **errmsg);
/* Replaces tokens, hosts, origins and require_token of a running server
 * (o->host and o->port are not looked at): all or nothing. */
int mqr__admin_configure(mqr_admin_t *a, const mqr_admin_options_t *o, char **errmsg);
/* Replaces the tokens only (same rules). */
int mqr__admin_set_tokens(mqr_admin_t *a, const char *const *tokens, size_t ntokens);
/* Closes the socket and every connection; the memory goes with the close
 * callbacks (the next loop turn). NULL is fine. */
void mqr__admin_close(mqr_admin_t *a);
int mqr__admin_port(const mqr_admin_t *a);
const char *mqr__admin_host(const mqr_admin_t *a);

#endif
