/*
 * engine_int.h — struct mqr_engine: what one engine holds. Only
 * the files in core/engine/ may include this header; everything else gets what it
 * needs through engine.h, and its dependencies at init.
 *
 * One engine is one libuv loop thread's world: router, retained messages,
 * store, listeners, upstream sessions and the script host all hang off it
 * and only that thread touches them. Paho's thread reaches the loop only
 * through the uv_async handles of the upstream sessions.
 */
#ifndef MQR_ENGINE_INT_H
#define MQR_ENGINE_INT_H

#include "engine.h"

#include "auth.h"
#include "listener.h"
#include "sink.h"
#include "upstream.h"

struct mqr_engine {
    uv_loop_t *loop;
    uv_loop_t own_loop;
    bool owns_loop;
    bool stopping;
    bool stopped;

    char *listen_host;
    int listen_port;
    char *data_dir;
    char *upstream_transport; /* default transport of upstream sessions; NULL: built in */
    bool count_topics;        /* the topic registry counts every publish (no_topic_counts) */
    char *db_path;
    unsigned handler_budget_ms;
    bool watch_script;
    bool handle_signals;
    bool check_only; /* mqr_engine_options_t.check_only */

    mqr_router_t router;
    mqr_retain_t retain;
    mqr_store_t *store;
    /* every open listener and what they share (listener.h) */
    mqr_listeners_t listeners;
    /* every upstream session and what they share (upstream.h) */
    mqr_upstreams_t upstreams;
    struct mqr_csub *csubs; /* C subscriptions, freed with the engine */

    /* the host's authentication and authorisation as the listeners call
     * them (auth.h); functions NULL while the host has them off */
    mqr_auth_hooks_t auth;

    /* broker queues (queue.h): every queue and pub/sub subscriber, their
     * memory total; NULL until mqr__queues_init */
    struct mqr_queues *queues;
    /* durable queues' rows in the store (store_queue.h); NULL without a
     * file store */
    struct mqr_store_queues *store_queues;
    struct mqr_store_outbox *store_outbox; /* NULL without a file store */
    /* devices and topics seen (registry.h); NULL until the engine is up */
    struct mqr_registry *registry;

    /* every open egress client (sink.h): for /metrics and the admin API;
     * their owners (the bindings) add and remove them */
    mqr_sinks_t sinks;
    struct mqr_sink_client *hosted_sinks; /* opened by the C host (core/sink/api_sink.c) */

    /* the admin HTTP API (core/admin/admin.h), NULL when not served */
    struct mqr_admin *admin;

    void *host; /* the bindings' script host (engine.h), NULL until a script loads */
    const mqr_host_ops_t *host_ops;

    uv_signal_t sig_int, sig_term, sig_hup;
    bool signals_started;

    /* the modules' clock (clock.h): the loop's, or a rule test's fake one */
    mqr_clock_t clock;

    mqr_engine_stats_t stats;
};

#endif
