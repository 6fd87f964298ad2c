/*
 * host.c — the engine's handles as the rest of core asks for them, and the
 * script host's interface (engine.h): who is plugged in, its reload, and
 * switching its authentication hooks on and off for the listeners.
 *
 * Must not: hand a module another module's handle for it to keep; modules
 * get their dependencies when the engine opens them (engine.c).
 */
#include "engine_int.h"

#include "store_queue.h"

static const mqr_host_ops_t no_host;

bool mqr__engine_stopping(const mqr_engine_t *e)
{
    return e->stopping;
}

bool mqr__engine_check_only(const mqr_engine_t *e)
{
    return e->check_only;
}

const char *mqr__engine_data_dir(const mqr_engine_t *e)
{
    return e->data_dir;
}

unsigned mqr__engine_handler_budget_ms(const mqr_engine_t *e)
{
    return e->handler_budget_ms;
}

bool mqr__engine_watch_script(const mqr_engine_t *e)
{
    return e->watch_script;
}

mqr_clock_t *mqr__engine_clock(mqr_engine_t *e)
{
    return &e->clock;
}

mqr_router_t *mqr__engine_router(mqr_engine_t *e)
{
    return &e->router;
}

struct mqr_sinks *mqr__engine_sinks(mqr_engine_t *e)
{
    return &e->sinks;
}

struct mqr_sink_client **mqr__engine_hosted_sinks(mqr_engine_t *e)
{
    return &e->hosted_sinks;
}

mqr_retain_t *mqr__engine_retain(mqr_engine_t *e)
{
    return &e->retain;
}

mqr_store_t *mqr__engine_store(const mqr_engine_t *e)
{
    return e->store;
}

mqr_listeners_t *mqr__engine_listeners(mqr_engine_t *e)
{
    return &e->listeners;
}

mqr_upstreams_t *mqr__engine_upstreams(mqr_engine_t *e)
{
    return &e->upstreams;
}

struct mqr_queues *mqr__engine_queues(const mqr_engine_t *e)
{
    return e->queues;
}

void mqr__engine_set_queues(mqr_engine_t *e, struct mqr_queues *queues)
{
    e->queues = queues;
    if (e->store_queues) mqr__store_queues_attach(e->store_queues, queues);
}

struct mqr_store_queues *mqr__engine_store_queues(const mqr_engine_t *e)
{
    return e->store_queues;
}

struct mqr_registry *mqr__engine_registry(const mqr_engine_t *e)
{
    return e->registry;
}

struct mqr_admin *mqr__engine_admin(const mqr_engine_t *e)
{
    return e->admin;
}

void mqr__engine_set_admin(mqr_engine_t *e, struct mqr_admin *a)
{
    e->admin = a;
}

const mqr_engine_stats_t *mqr__engine_stats(const mqr_engine_t *e)
{
    return &e->stats;
}

int mqr__engine_set_host(mqr_engine_t *e, const mqr_host_ops_t *ops, void *host)
{
    if (e->host) return MQR_EEXIST;
    e->host = host;
    e->host_ops = ops;
    return 0;
}

void *mqr__engine_host(const mqr_engine_t *e, const mqr_host_ops_t **ops)
{
    *ops = e->host ? e->host_ops : &no_host;
    return e->host;
}

void mqr__engine_host_auth(mqr_engine_t *e, bool authenticate, bool authorize, bool cacheable)
{
    const mqr_host_ops_t *ops;
    void *host = mqr__engine_host(e, &ops);
    e->auth.ud = host;
    e->auth.authenticate = authenticate ? ops->authenticate : NULL;
    e->auth.authorize = authorize ? ops->authorize : NULL;
    e->auth.authorize_cacheable = authorize && cacheable;
    e->auth.generation++; /* answers cached so far were another function's */
}

int mqr__engine_reload(mqr_engine_t *e, char **errmsg)
{
    const mqr_host_ops_t *ops;
    void *host = mqr__engine_host(e, &ops);
    if (!ops->reload) return MQR_ENOENT;
    return ops->reload(host, errmsg);
}
