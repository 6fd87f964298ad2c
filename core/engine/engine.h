/*
 * engine.h — the engine as the rest of core and the bindings see it: an
 * opaque handle, the one way into the router (publish), the module handles
 * the public C API looks up, and the script host's interface.
 *
 * Modules get their dependencies (loop, router, retained messages, store,
 * clock) once, when the engine opens them, and keep them; they never reach
 * a sibling through the engine. Only core/engine/ sees struct mqr_engine
 * (engine_int.h). Loop thread only.
 */
#ifndef MQR_ENGINE_H
#define MQR_ENGINE_H

#include "mqrouter.h"

#include "clock.h"
#include "log.h"
#include "message.h"
#include "retain.h"
#include "router.h"

#include <stdbool.h>
#include <uv.h>

typedef struct mqr_store mqr_store_t;
typedef struct mqr_listener mqr_listener_t;
typedef struct mqr_listeners mqr_listeners_t;
typedef struct mqr_upstream mqr_upstream_t;
typedef struct mqr_upstreams mqr_upstreams_t;
struct mqr_queues;
struct mqr_registry;
struct mqr_admin;
struct mqr_auth_hooks;
struct mqr_admin_rules_info;
struct mqr_admin_route;
struct mqr_auth_client;

/* ---- into the router ---------------------------------------------------- */

/* Puts msg (borrowed) through retain and the router. */
int mqr__engine_publish(mqr_engine_t *e, mqr_msg_t *msg);

/* The same, for an ingress that acknowledges what it hands in: *ctx (the
 * caller's, zeroed here) says what became of msg at its subscribers, those
 * of the publishes its handlers made while it was routed included. Returns
 * what mqr__engine_publish returns; a retained message the store refused
 * is a negative return, not a ctx entry. source: the ingress, when a full
 * subscriber may pause it instead of refusing (holds.h), else NULL. */
int mqr__engine_publish_ctx(mqr_engine_t *e, mqr_msg_t *msg, mqr_pubctx_t *ctx,
                            mqr_source_t *source);

/* Builds a message, validates topic and QoS, and publishes it. */
int mqr__engine_publish_data(mqr_engine_t *e, const mqr_msg_init_t *init);

/* ---- state and module handles (borrowed; NULL when not open) ------------- */

bool mqr__engine_stopping(const mqr_engine_t *e);
/* mqr_engine_options_t.check_only: open nothing that takes a port */
bool mqr__engine_check_only(const mqr_engine_t *e);
const char *mqr__engine_data_dir(const mqr_engine_t *e);
unsigned mqr__engine_handler_budget_ms(const mqr_engine_t *e);
bool mqr__engine_watch_script(const mqr_engine_t *e);
mqr_clock_t *mqr__engine_clock(mqr_engine_t *e);
mqr_router_t *mqr__engine_router(mqr_engine_t *e);
struct mqr_sinks *mqr__engine_sinks(mqr_engine_t *e); /* sink.h's mqr_sinks_t */
/* The host's sink clients (mqrouter_sinks.h), closed when the engine stops. */
struct mqr_sink_client **mqr__engine_hosted_sinks(mqr_engine_t *e);
mqr_retain_t *mqr__engine_retain(mqr_engine_t *e);
mqr_store_t *mqr__engine_store(const mqr_engine_t *e);
mqr_listeners_t *mqr__engine_listeners(mqr_engine_t *e);
mqr_upstreams_t *mqr__engine_upstreams(mqr_engine_t *e);
struct mqr_queues *mqr__engine_queues(const mqr_engine_t *e);
/* Takes the queue set mqr__queues_init made, and attaches the durable
 * queues' store to it when the engine has a file store. */
void mqr__engine_set_queues(mqr_engine_t *e, struct mqr_queues *queues);
struct mqr_store_queues *mqr__engine_store_queues(const mqr_engine_t *e);
struct mqr_registry *mqr__engine_registry(const mqr_engine_t *e);
struct mqr_admin *mqr__engine_admin(const mqr_engine_t *e);
/* The admin server says it serves (a) or stopped serving (NULL) e. */
void mqr__engine_set_admin(mqr_engine_t *e, struct mqr_admin *a);
/* The engine's counters of what entered the router. */
typedef struct {
    uint64_t published; /* messages that entered the router */
    uint64_t refused;   /* publishes refused (bad topic, loop, no memory) */
} mqr_engine_stats_t;
const mqr_engine_stats_t *mqr__engine_stats(const mqr_engine_t *e);

/* ---- the script host ----------------------------------------------------
 * What the Lua bindings plug into the engine: one table of operations and
 * one pointer, set once (core never sees Lua). Every operation may be NULL. */
typedef struct mqr_host_ops {
    void (*stop)(void *host); /* engine stopping: stop timers, watchers */
    void (*free)(void *host); /* engine freed: close the Lua state */
    /* SIGHUP, the admin API, a watched file: reload the rules; on failure
     * *errmsg gets a malloc'd reason and the old rules keep running */
    int (*reload)(void *host, char **errmsg);
    /* for the admin API */
    void (*rules_info)(void *host, struct mqr_admin_rules_info *out);
    void (*foreach_route)(void *host, void (*fn)(void *arg, const struct mqr_admin_route *r),
                          void *arg);
    size_t (*lua_memory)(void *host);
    /* for the listener, while mqr__engine_host_auth() has them on: 0 lets
     * the client in / allows, else the v5 reason code (auth.h) */
    int (*authenticate)(void *host, const struct mqr_auth_client *client);
    int (*authorize)(void *host, const struct mqr_auth_client *client, int action,
                     const char *topic, size_t topic_len, int qos, bool retain);
} mqr_host_ops_t;

/* Sets e's host (once; MQR_EEXIST when there is one). */
int mqr__engine_set_host(mqr_engine_t *e, const mqr_host_ops_t *ops, void *host);
/* The host (NULL: none) and its operations (*ops, never NULL on return). */
void *mqr__engine_host(const mqr_engine_t *e, const mqr_host_ops_t **ops);
/* Turns the host's authenticate/authorize on or off for every listener;
 * answers kept so far are forgotten. authorize's answers may be kept per
 * connection when cacheable. */
void mqr__engine_host_auth(mqr_engine_t *e, bool authenticate, bool authorize, bool cacheable);
/* Reloads the rules through the host: MQR_ENOENT without one. */
int mqr__engine_reload(mqr_engine_t *e, char **errmsg);

#endif
