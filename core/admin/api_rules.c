/*
 * api_rules.c — the running rules through the bindings' hooks (admin.h):
 * script, counters, routes with their counters, and reload.
 */
#include "admin_int.h"
#include "engine.h"

#include <stdlib.h>

/* ---- rules ---- */

typedef struct {
    cJSON *items;
    size_t i, off, lim;
} rcollect_t;

static void route_item(void *arg, const mqr_admin_route_t *r)
{
    rcollect_t *c = arg;
    size_t i = c->i++;
    if (!c->items || i < c->off || i >= c->off + c->lim) return;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", r->name);
    cJSON_AddStringToObject(o, "filter", r->filter);
    cJSON_AddStringToObject(o, "target", r->target);
    if (r->session)
        cJSON_AddStringToObject(o, "session", r->session);
    else
        cJSON_AddNullToObject(o, "session");
    cJSON_AddBoolToObject(o, "active", r->active);
    mqr__admin_num(o, "calls", (double)r->calls);
    mqr__admin_num(o, "errors", (double)r->errors);
    mqr__admin_num(o, "budget_errors", (double)r->budget_errors);
    mqr__admin_num(o, "dead_lettered", (double)r->dead_lettered);
    if (r->latency && r->latency->count)
        mqr__admin_num(o, "mean_latency_ms",
                       (double)r->latency->sum_ns / 1e6 / (double)r->latency->count);
    cJSON_AddItemToArray(c->items, o);
}

void mqr__admin_h_rules(mqr_actx_t *x)
{
    const mqr_host_ops_t *h;
    void *host = mqr__engine_host(x->e, &h);
    mqr_admin_rules_info_t ri = {.last_error = "", .last_reload_error = ""};
    if (h->rules_info) h->rules_info(host, &ri);
    cJSON *o = mqr__admin_ok(x, 200);
    if (ri.path)
        cJSON_AddStringToObject(o, "script", ri.path);
    else
        cJSON_AddNullToObject(o, "script");
    cJSON_AddBoolToObject(o, "loaded", ri.loaded);
    mqr__admin_num(o, "reloads", (double)ri.reloads);
    mqr__admin_num(o, "reload_failures", (double)ri.reload_failures);
    mqr__admin_num(o, "handler_errors", (double)ri.handler_errors);
    mqr__admin_num(o, "budget_errors", (double)ri.budget_errors);
    mqr__admin_num(o, "reload_dropped", (double)ri.reload_dropped);
    cJSON_AddStringToObject(o, "last_error", ri.last_error ? ri.last_error : "");
    cJSON_AddStringToObject(o, "last_reload_error",
                            ri.last_reload_error ? ri.last_reload_error : "");
    if (ri.last_reload_error_at > 0)
        mqr__admin_num(o, "last_reload_error_at", ri.last_reload_error_at);
    else
        cJSON_AddNullToObject(o, "last_reload_error_at");
    rcollect_t c = {0};
    if (h->foreach_route) h->foreach_route(host, route_item, &c);
    mqr__admin_num(o, "routes", (double)c.i);
}

void mqr__admin_h_routes(mqr_actx_t *x)
{
    size_t off, lim;
    if (!mqr__admin_page(x, &off, &lim)) return;
    const mqr_host_ops_t *h;
    void *host = mqr__engine_host(x->e, &h);
    rcollect_t c = {.off = off, .lim = lim};
    if (h->foreach_route) h->foreach_route(host, route_item, &c); /* count */
    size_t total = c.i;
    c.items = mqr__admin_page_json(x, total, off, lim);
    c.i = 0;
    if (h->foreach_route) h->foreach_route(host, route_item, &c);
}

void mqr__admin_h_reload(mqr_actx_t *x)
{
    const mqr_host_ops_t *h;
    void *host = mqr__engine_host(x->e, &h);
    if (!h->reload) {
        mqr__admin_error(x->res, 409, "no_script", "no rules script is loaded");
        return;
    }
    char *err = NULL;
    int rc = h->reload(host, &err);
    if (rc < 0) {
        mqr__admin_error(x->res, rc == MQR_ENOENT ? 409 : 422, "reload_failed", "%s",
                         err ? err : mqr_strerror(rc));
        free(err);
        return;
    }
    free(err);
    cJSON_AddBoolToObject(mqr__admin_ok(x, 200), "reloaded", 1);
}
