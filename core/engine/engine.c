/*
 * engine.c — creating, running and stopping an engine.
 *
 * Owns the lifecycle order: store before retained messages before the
 * listener; on stop the reverse, and the store is flushed last so every
 * write accepted before the stop is on disk when the process exits.
 */
#include "engine_int.h"
#include "sink.h"

#include "errmsg.h"

#include "abi.h"
#include "admin.h"

#include "listener.h"
#include "queue.h"
#include "registry.h"
#include "store.h"
#include "store_outbox.h"
#include "store_queue.h"
#include "topic.h"
#include "upstream.h"
#include "upstream_persist.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void engine_defaults(mqr_engine_options_t *o)
{
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
    o->log_level = MQR_LOG_INFO;
}

void mqr_engine_options_init_sized(mqr_engine_options_t *o, size_t size)
{
    mqr_engine_options_t def;
    engine_defaults(&def);
    mqr__abi_init(o, size, &def, sizeof def);
}

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int make_dirs(const char *dir)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path) return MQR_EINVAL;
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(path, 0755) < 0 && errno != EEXIST) return -errno;
        *p = '/';
    }
    /* the data directory itself: users' keys and messages, the engine's user only */
    if (mkdir(path, 0700) < 0 && errno != EEXIST) return -errno;
    return 0;
}

static void on_signal(uv_signal_t *h, int signum)
{
    mqr_engine_t *e = h->data;
    if (signum == SIGHUP) {
        MQR_LOG_I("engine", "SIGHUP: reloading rules");
        char *err = NULL;
        int rc = mqr__engine_reload(e, &err);
        if (rc < 0 && rc != MQR_ENOENT)
            MQR_LOG_E("engine", "reload failed, old rules keep running: %s", err ? err : "?");
        free(err);
        return;
    }
    MQR_LOG_I("engine", "%s: stopping", signum == SIGINT ? "SIGINT" : "SIGTERM");
    mqr_engine_stop(e);
}

/* The signal handles stay referenced: an engine that handles signals runs
 * until it is told to stop, even with nothing else to do. */
static int start_signals(mqr_engine_t *e)
{
    uv_signal_t *hs[] = {&e->sig_int, &e->sig_term, &e->sig_hup};
    int nums[] = {SIGINT, SIGTERM, SIGHUP};
    for (int i = 0; i < 3; i++) {
        uv_signal_init(e->loop, hs[i]);
        hs[i]->data = e;
        int rc = uv_signal_start(hs[i], on_signal, nums[i]);
        if (rc < 0) return rc;
    }
    e->signals_started = true;
    return 0;
}

int mqr_engine_new(mqr_engine_t **out, const mqr_engine_options_t *opts, uv_loop_t *loop,
                   char **errmsg)
{
    *out = NULL;
    if (errmsg) *errmsg = NULL;
    /* the caller's struct over the defaults: a smaller (older) one leaves
     * the newer fields at their defaults (abi.h) */
    mqr_engine_options_t def;
    engine_defaults(&def);
    /* the oldest layout read: before check_only was added */
    int arc =
        opts ? mqr__abi_copy(&def, sizeof def, offsetof(mqr_engine_options_t, check_only), opts)
             : 0;
    if (arc < 0) {
        mqr__errmsg(errmsg, "options struct too %s (size %zu; built against another version?)",
                    arc == MQR_ETOOLARGE ? "large" : "small", opts->size);
        return arc;
    }
    opts = &def;
    const char *tp = opts->upstream_transport;
    if (!tp || !tp[0]) tp = getenv("MQROUTER_UPSTREAM_TRANSPORT");
    if (tp && !tp[0]) tp = NULL;
    if (tp && !mqr__upstream_transport_known(tp)) {
        mqr__errmsg(errmsg, "unknown upstream transport '%s'%s: choose 'native' or 'paho'", tp,
                    opts->upstream_transport ? "" : " (MQROUTER_UPSTREAM_TRANSPORT)");
        return MQR_EINVAL;
    }
    mqr_engine_t *e = calloc(1, sizeof *e);
    if (!e) return MQR_ENOMEM;
    int rc;
    if (loop) {
        e->loop = loop;
    } else {
        rc = uv_loop_init(&e->own_loop);
        if (rc < 0) {
            free(e);
            mqr__errmsg(errmsg, "uv_loop_init: %s", uv_strerror(rc));
            return rc;
        }
        e->loop = &e->own_loop;
        e->owns_loop = true;
    }
    mqr__log_set_level(opts->log_level);
    e->listen_host = xstrdup(opts->listen_host ? opts->listen_host : "127.0.0.1");
    e->listen_port = opts->listen_port == 0 ? 1883 : opts->listen_port;
    e->data_dir = xstrdup(opts->data_dir ? opts->data_dir : "./data");
    e->handler_budget_ms = opts->handler_budget_ms ? opts->handler_budget_ms : 1000;
    e->watch_script = opts->watch_script != 0;
    e->handle_signals = opts->handle_signals != 0;
    e->check_only = opts->check_only != 0;
    if (tp) e->upstream_transport = xstrdup(tp);
    e->count_topics = opts->no_topic_counts == 0;

    e->clock.loop = e->loop;
    if ((rc = mqr__router_init(&e->router)) < 0) goto fail;

    if (e->data_dir[0]) {
        if ((rc = make_dirs(e->data_dir)) < 0) {
            mqr__errmsg(errmsg, "cannot create data directory %s: %s", e->data_dir,
                        uv_strerror(rc));
            goto fail;
        }
        size_t n = strlen(e->data_dir) + sizeof "/mqrouter.db";
        e->db_path = malloc(n);
        if (!e->db_path) {
            rc = MQR_ENOMEM;
            goto fail;
        }
        snprintf(e->db_path, n, "%s/mqrouter.db", e->data_dir);
    } else {
        e->db_path = strdup(":memory:");
    }
    rc = mqr__store_open(&e->store, e->loop, e->db_path, NULL, errmsg);
    if (rc < 0) goto fail;
    if (strcmp(e->db_path, ":memory:") != 0 &&
        ((rc = mqr__store_queues_open(e->store, e, &e->store_queues)) < 0 ||
         (rc = mqr__store_outbox_open(e->store, &e->store_outbox)) < 0)) {
        mqr__errmsg(errmsg, "%s", mqr__store_last_error(e->store));
        goto fail;
    }
    if ((rc = mqr__retain_init(&e->retain, e->store)) < 0) goto fail;
    if ((rc = mqr__retain_load(&e->retain)) < 0) {
        mqr__errmsg(errmsg, "cannot load retained messages from %s", e->db_path);
        goto fail;
    }
    if ((rc = mqr__registry_open(&(mqr_registry_deps_t){.loop = e->loop,
                                                        .store = e->store,
                                                        .router = &e->router,
                                                        .retain = &e->retain,
                                                        .listeners = &e->listeners},
                                 &e->registry)) < 0) {
        mqr__errmsg(errmsg, "cannot load the device registry from %s", e->db_path);
        goto fail;
    }
    e->upstreams = (mqr_upstreams_t){
        .loop = e->loop,
        .router = &e->router,
        .data_dir = e->data_dir,
        .default_transport = e->upstream_transport,
        .outbox = e->store_outbox,
    };
    e->listeners = (mqr_listeners_t){
        .loop = e->loop,
        .router = &e->router,
        .retain = &e->retain,
        .store = e->store,
        .registry = e->registry,
        .auth = &e->auth,
    };
    if (e->listen_port > 0) {
        mqr_listener_t *l; /* the default listener: closed with the others */
        rc = mqr__listener_start(e, e->listen_host, e->listen_port, &l);
        if (rc < 0) {
            mqr__errmsg(errmsg, "cannot listen on %s:%d: %s", e->listen_host, e->listen_port,
                        mqr_strerror(rc));
            goto fail;
        }
    }
    if (e->handle_signals && (rc = start_signals(e)) < 0) {
        mqr__errmsg(errmsg, "cannot install signal handlers: %s", uv_strerror(rc));
        goto fail;
    }
    MQR_LOG_I("engine", "mqrouter %s started (store %s)", MQR_VERSION_STRING, e->db_path);
    *out = e;
    return 0;
fail:
    mqr_engine_free(e);
    return rc;
}

uv_loop_t *mqr_engine_loop(mqr_engine_t *e)
{
    return e->loop;
}

void mqr_engine_stop(mqr_engine_t *e)
{
    if (e->stopping) return;
    e->stopping = true;
    if (e->host && e->host_ops->stop) e->host_ops->stop(e->host);
    mqr__sink_api_stop(e); /* the host's sinks: their answers come now */
    mqr__admin_close(e->admin);
    while (e->listeners.first) /* closing unlinks each */
        mqr__listener_close(e->listeners.first);
    mqr__upstream_close_all(e);
    mqr__registry_stop(e->registry); /* devices went offline above: counters out */
    mqr__queues_stop(e->queues);
    if (e->signals_started) {
        uv_close((uv_handle_t *)&e->sig_int, NULL);
        uv_close((uv_handle_t *)&e->sig_term, NULL);
        uv_close((uv_handle_t *)&e->sig_hup, NULL);
        e->signals_started = false;
    }
    if (e->store) mqr__store_flush(e->store);
    MQR_LOG_I("engine", "stopped");
}

int mqr_engine_run(mqr_engine_t *e)
{
    if (!e->owns_loop) return MQR_EINVAL; /* the host runs its own loop */
    uv_run(e->loop, UV_RUN_DEFAULT);
    return 0;
}

void mqr_engine_free(mqr_engine_t *e)
{
    if (!e) return;
    mqr_engine_stop(e);
    if (e->host && e->host_ops->free) e->host_ops->free(e->host);
    e->host = NULL;
    mqr__queues_free(e->queues); /* before the router: queue subscribers are in its trie */
    e->queues = NULL;
    /* let every closing handle finish before freeing what they point into */
    if (e->owns_loop)
        uv_run(e->loop, UV_RUN_DEFAULT);
    else
        uv_run(e->loop, UV_RUN_NOWAIT);
    mqr__upstream_free_all(e);
    mqr__upstream_persist_close(e->upstreams.persist);
    e->upstreams.persist = NULL;
    while (e->csubs)
        mqr_unsubscribe(e, e->csubs);
    mqr__registry_close(e->registry);
    e->registry = e->listeners.registry = NULL;
    mqr__retain_close(&e->retain);
    mqr__store_queues_close(e->store_queues); /* its statements, before the store */
    mqr__store_outbox_close(e->store_outbox);
    e->store_queues = NULL;
    if (e->store) mqr__store_close(e->store);
    e->store = NULL;
    mqr__router_close(&e->router);
    if (e->owns_loop) {
        uv_run(e->loop, UV_RUN_DEFAULT);
        if (uv_loop_close(e->loop) != 0) MQR_LOG_W("engine", "loop closed with open handles");
    }
    free(e->listen_host);
    free(e->data_dir);
    free(e->upstream_transport);
    free(e->db_path);
    free(e);
}

int mqr__engine_publish(mqr_engine_t *e, mqr_msg_t *msg)
{
    if (msg->retain) {
        int rc = mqr__retain_set(&e->retain, msg);
        if (rc < 0) {
            e->stats.refused++;
            return rc;
        }
    }
    int rc = mqr__router_publish(&e->router, msg);
    if (rc < 0) {
        e->stats.refused++;
        return rc;
    }
    e->stats.published++;
    if (e->registry && e->count_topics)
        mqr__topics_seen(e->registry, msg->topic, msg->topic_len, msg->created_ms);
    return 0;
}

int mqr__engine_publish_ctx(mqr_engine_t *e, mqr_msg_t *msg, mqr_pubctx_t *ctx,
                            mqr_source_t *source)
{
    *ctx = (mqr_pubctx_t){.source = source};
    /* an ingress inside another's routing (a will published by a close
     * there) keeps its own context; the outer one gets it back after */
    mqr_pubctx_t *outer = e->router.pub;
    e->router.pub = ctx;
    int rc = mqr__engine_publish(e, msg);
    e->router.pub = outer;
    return rc;
}

int mqr__engine_publish_data(mqr_engine_t *e, const mqr_msg_init_t *init)
{
    if (init->qos < 0 || init->qos > 2) return MQR_EQOS;
    int rc = mqr__topic_name_validate(init->topic, init->topic_len);
    if (rc < 0) return rc;
    mqr_msg_t *m = mqr__msg_new(init);
    if (!m) return MQR_ENOMEM;
    rc = mqr__engine_publish(e, m);
    mqr_msg_unref(m);
    return rc;
}

int mqr_publish(mqr_engine_t *e, const char *topic, const void *payload, size_t len, int qos,
                int retain)
{
    if (!topic) return MQR_EINVAL;
    mqr_msg_init_t in = {
        .topic = topic,
        .topic_len = strlen(topic),
        .payload = payload,
        .payload_len = len,
        .qos = qos,
        .retain = retain != 0,
        .origin = MQR_ORIGIN_C,
    };
    return mqr__engine_publish_data(e, &in);
}

/* ---- C subscriptions ---- */

struct mqr_csub {
    mqr_subscriber_t base;
    mqr_csub_t *prev, *next; /* e->csubs */
    mqr_trie_entry_t *entry;
    mqr_msg_fn fn;
    void *arg;
};

static int csub_deliver(mqr_subscriber_t *self, mqr_msg_t *msg, const mqr_trie_entry_t *entry)
{
    mqr_csub_t *s = (mqr_csub_t *)self;
    s->fn(s->arg, msg); /* the public callback has no way to refuse */
    return 0;
}

int mqr_subscribe(mqr_engine_t *e, const char *filter, mqr_msg_fn fn, void *arg, mqr_csub_t **out)
{
    if (!filter || !fn) return MQR_EINVAL;
    size_t len = strlen(filter);
    int rc = mqr__topic_filter_validate(filter, len);
    if (rc < 0) return rc;
    mqr_csub_t *s = calloc(1, sizeof *s);
    if (!s) return MQR_ENOMEM;
    s->base.deliver = csub_deliver;
    s->fn = fn;
    s->arg = arg;
    mqr_sub_opts_t opts = {.qos = 2};
    s->entry = mqr__router_add(&e->router, filter, len, &s->base, &opts);
    if (!s->entry) {
        free(s);
        return MQR_ENOMEM;
    }
    s->next = e->csubs;
    if (e->csubs) e->csubs->prev = s;
    e->csubs = s;
    if (out) *out = s;
    return 0;
}

void mqr_unsubscribe(mqr_engine_t *e, mqr_csub_t *s)
{
    if (!s) return;
    mqr__router_remove(&e->router, s->entry);
    if (s->prev)
        s->prev->next = s->next;
    else
        e->csubs = s->next;
    if (s->next) s->next->prev = s->prev;
    free(s);
}
