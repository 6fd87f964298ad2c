/*
 * engine.h — the engine's state as core files see it.
 *
 * One engine is one libuv loop thread's world: router, retained messages,
 * store, listener, upstream sessions and the script host all hang off it and
 * only that thread touches them. Paho's thread reaches the loop only through
 * the uv_async handles of the sessions.
 */
#ifndef MQR_ENGINE_H
#define MQR_ENGINE_H

#include "mqrouter.h"

#include "log.h"
#include "message.h"
#include "retain.h"
#include "router.h"

#include <stdbool.h>
#include <uv.h>

typedef struct mqr_store mqr_store_t;
typedef struct mqr_listener mqr_listener_t;
typedef struct mqr_upstream mqr_upstream_t;

/* What the Lua bindings plug into the engine (core never sees Lua). */
typedef struct {
    void (*stop)(void *script); /* engine stopping: stop timers, watchers */
    void (*free)(void *script); /* engine freed: close the Lua state */
} mqr_script_ops_t;

struct mqr_engine {
    uv_loop_t *loop;
    uv_loop_t own_loop;
    bool owns_loop;
    bool stopping;
    bool stopped;

    char *listen_host;
    int listen_port;
    char *data_dir;
    char *db_path;
    unsigned handler_budget_ms;
    bool watch_script;
    bool handle_signals;
    bool check_only; /* mqr_engine_options_t.check_only */

    mqr_router_t router;
    mqr_retain_t retain;
    mqr_store_t *store;
    mqr_listener_t *listener;
    /* the listener whose persistent sessions are stored (the first to
     * start; core/listener/session.c), NULL when none */
    mqr_listener_t *sessions_owner;
    mqr_listener_t *listeners; /* every open one, listener included (listener.h) */
    mqr_upstream_t *sessions;  /* list of upstream sessions, newest first */
    /* their stored messages (upstream_persist.h), opened at the first
     * persistent session; failed: not retried, sessions stay in memory */
    struct mqr_upstream_persist *upstream_persist;
    bool upstream_persist_failed;
    struct mqr_csub *csubs; /* C subscriptions, freed with the engine */

    /* authentication and authorisation hooks (auth.h), owned by the
     * bindings; NULL = none: the listener checks this pointer only */
    struct mqr_auth_hooks *auth_hooks;

    /* broker queues (queue.h): every queue and pub/sub subscriber, their
     * memory total; NULL until mqr__queues_init */
    struct mqr_queues *queues;
    /* durable queues' rows in the store (store_queue.h); NULL without a
     * file store */
    struct mqr_store_queues *store_queues;
    /* devices and topics seen (registry.h); NULL until the engine is up */
    struct mqr_registry *registry;

    /* the admin HTTP API (core/admin/admin.h), NULL when not served; its
     * hooks into the rules, filled by the bindings, NULL = none */
    struct mqr_admin *admin;
    struct mqr_admin_hooks *admin_hooks;

    void *script; /* the bindings' script host, NULL until a script loads */
    const mqr_script_ops_t *script_ops;

    uv_signal_t sig_int, sig_term, sig_hup;
    bool signals_started;

    /* A fake clock for rule tests (bindings' mqrouter.testing): when set,
     * queues read their time from it instead of the loop's (ms, monotonic)
     * and mqr__queues_clock_moved() runs what fell due. NULL = real time. */
    uint64_t (*clock_fn)(void *arg);
    void *clock_arg;

    struct {
        uint64_t published; /* messages that entered the router */
        uint64_t refused;   /* publishes refused (bad topic, loop, no memory) */
    } stats;
};

/* Puts msg (borrowed) through retain and the router. */
int mqr__engine_publish(mqr_engine_t *e, mqr_msg_t *msg);

/* The same, for an ingress that acknowledges what it hands in: *ctx (the
 * caller's, zeroed here) says what became of msg at its subscribers, those
 * of the publishes its handlers made while it was routed included. Returns
 * what mqr__engine_publish returns; a retained message the store refused
 * is a negative return, not a ctx entry. */
int mqr__engine_publish_ctx(mqr_engine_t *e, mqr_msg_t *msg, mqr_pubctx_t *ctx);

/* Builds a message, validates topic and QoS, and publishes it. */
int mqr__engine_publish_data(mqr_engine_t *e, const mqr_msg_init_t *init);

/* SIGHUP and file-watch reloads land here (set by the bindings). */
extern int (*mqr__engine_reload_hook)(mqr_engine_t *e, char **errmsg);

#endif
