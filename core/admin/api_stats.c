/*
 * api_stats.c — GET /health, GET /metrics (text from metrics.c) and GET
 * /api/v1/stats: what makes the engine unhealthy, the totals (the device
 * and topic registries' included), and the rates
 * from the samples the server's timer takes every 5 s.
 */
#include "admin_int.h"

#include "listener.h"
#include "queue.h"
#include "registry.h"
#include "upstream.h"

#include <stdio.h>
#include <string.h>

/* ---- health and stats ---- */

/* Only what stops the engine from serving is unhealthy: stopping, or no
 * rules. A full queue or a session that gave up is degraded: the engine
 * still routes everything else, and a restart would not mend either. */
mqr_admin_health_t mqr__admin_health(mqr_admin_t *a, cJSON *reasons)
{
    mqr_engine_t *e = a->e;
    mqr_admin_health_t level = MQR_ADMIN_HEALTH_OK;
    char buf[256];
#define REASON(lvl, text)                                                                          \
    do {                                                                                           \
        cJSON_AddItemToArray(reasons, cJSON_CreateString(text));                                   \
        if (level < (lvl)) level = (lvl);                                                          \
    } while (0)
    if (mqr__engine_stopping(e)) REASON(MQR_ADMIN_HEALTH_UNHEALTHY, "engine stopping");
    mqr_queues_health_t qh;
    int qs = mqr__queues_health(e, &qh);
    if (qs == MQR_QHEALTH_FULL || qs == MQR_QHEALTH_STOPPED) {
        snprintf(buf, sizeof buf, "queues %s", mqr__queues_status_name(qs));
        REASON(qs == MQR_QHEALTH_STOPPED ? MQR_ADMIN_HEALTH_UNHEALTHY : MQR_ADMIN_HEALTH_DEGRADED,
               buf);
    }
    for (mqr_upstream_t *u = mqr__upstream_first(e); u; u = mqr__upstream_next(u)) {
        if (mqr__upstream_state(u) != MQR_UPSTREAM_FAILED) continue;
        snprintf(buf, sizeof buf, "session '%s' failed", mqr__upstream_name(u));
        REASON(MQR_ADMIN_HEALTH_DEGRADED, buf);
    }
    const mqr_host_ops_t *h;
    void *host = mqr__engine_host(e, &h);
    if (h->rules_info) {
        mqr_admin_rules_info_t ri = {.last_error = ""};
        h->rules_info(host, &ri);
        if (!ri.loaded) REASON(MQR_ADMIN_HEALTH_UNHEALTHY, "no rules loaded");
    }
#undef REASON
    return level;
}

void mqr__admin_h_health(mqr_actx_t *x)
{
    static const char *const names[] = {"ok", "degraded", "unhealthy"};
    cJSON *o = mqr__admin_ok(x, 200);
    cJSON *reasons = cJSON_CreateArray();
    mqr_admin_health_t level = mqr__admin_health(x->a, reasons);
    cJSON_AddStringToObject(o, "status", names[level]);
    cJSON_AddItemToObject(o, "reasons", reasons);
    cJSON_AddStringToObject(o, "version", MQR_VERSION_STRING);
    mqr__admin_num(o, "uptime_s", (double)(mqr__now_ms() - x->a->start_ms) / 1000.0);
    if (level == MQR_ADMIN_HEALTH_UNHEALTHY) x->res->status = 503;
}

void mqr__admin_h_metrics(mqr_actx_t *x)
{
    x->res->status = 200;
    x->res->content_type = "text/plain; version=0.0.4; charset=utf-8";
    mqr__buf_reserve(&x->res->text, x->a->metrics_size + x->a->metrics_size / 8);
    uint64_t t0 = uv_hrtime();
    mqr__admin_metrics(x->a, &x->res->text);
    x->a->metrics_ns = uv_hrtime() - t0;
    x->a->metrics_size = x->res->text.len;
}

typedef struct {
    uint64_t clients, conns, msgs_in, msgs_out, bytes_in, bytes_out, subs;
} lsum_t;

static void listener_sum(mqr_engine_t *e, lsum_t *s)
{
    mqr_listener_totals_t t;
    mqr__listener_totals(mqr__engine_listeners(e), &t);
    *s = (lsum_t){
        .clients = t.stats.clients_current,
        .conns = t.stats.connections_total,
        .msgs_in = t.stats.msgs_in,
        .msgs_out = t.stats.msgs_out,
        .bytes_in = t.stats.bytes_in,
        .bytes_out = t.stats.bytes_out,
    };
}

static void sample_now(mqr_admin_t *a, struct mqr_arate *r)
{
    lsum_t s;
    listener_sum(a->e, &s);
    mqr_upstream_manager_stats_t ms;
    mqr__upstream_manager_stats(a->e, &ms);
    r->at_ms = uv_now(a->loop);
    r->published = mqr__engine_stats(a->e)->published;
    r->msgs_in = s.msgs_in + ms.messages_received;
    r->msgs_out = s.msgs_out + ms.messages_sent;
    r->bytes_in = s.bytes_in + ms.bytes_received;
    r->bytes_out = s.bytes_out + ms.bytes_sent;
}

void mqr__admin_rate_sample(mqr_admin_t *a)
{
    a->rate_prev = a->rate_last;
    sample_now(a, &a->rate_last);
}

void mqr__admin_h_stats(mqr_actx_t *x)
{
    mqr_engine_t *e = x->e;
    cJSON *o = mqr__admin_ok(x, 200);
    mqr__admin_num(o, "uptime_s", (double)(mqr__now_ms() - x->a->start_ms) / 1000.0);
    lsum_t ls;
    listener_sum(e, &ls);
    mqr_upstream_manager_stats_t ms;
    mqr__upstream_manager_stats(e, &ms);

    cJSON *ss = cJSON_AddObjectToObject(o, "sessions");
    mqr__admin_num(ss, "listener_clients", (double)ls.clients);
    mqr__admin_num(ss, "upstream_sessions", ms.sessions);
    mqr__admin_num(ss, "upstream_connected", ms.connected);
    mqr__admin_num(ss, "active", (double)(ls.clients + ms.connected));

    cJSON *m = cJSON_AddObjectToObject(o, "messages");
    mqr__admin_num(m, "published", (double)mqr__engine_stats(e)->published);
    mqr__admin_num(m, "refused", (double)mqr__engine_stats(e)->refused);
    mqr__admin_num(m, "listener_received", (double)ls.msgs_in);
    mqr__admin_num(m, "listener_sent", (double)ls.msgs_out);
    mqr__admin_num(m, "upstream_received", (double)ms.messages_received);
    mqr__admin_num(m, "upstream_sent", (double)ms.messages_sent);
    mqr__admin_num(m, "retained", (double)mqr__retain_user_count(mqr__engine_retain(e)));

    cJSON *b = cJSON_AddObjectToObject(o, "bytes");
    mqr__admin_num(b, "listener_received", (double)ls.bytes_in);
    mqr__admin_num(b, "listener_sent", (double)ls.bytes_out);
    mqr__admin_num(b, "upstream_received", (double)ms.bytes_received);
    mqr__admin_num(b, "upstream_sent", (double)ms.bytes_sent);

    cJSON *q = cJSON_AddObjectToObject(o, "queues");
    mqr_queues_health_t qh;
    int qs = mqr__queues_health(e, &qh);
    if (qs >= 0) {
        mqr__admin_num(q, "count", (double)qh.queues);
        mqr__admin_num(q, "depth", (double)qh.totals.depth);
        mqr__admin_num(q, "in_flight", (double)qh.totals.in_flight);
        mqr__admin_num(q, "dead", (double)qh.totals.dead);
        mqr__admin_num(q, "bytes", (double)qh.bytes);
        cJSON_AddStringToObject(q, "status", mqr__queues_status_name(qs));
    } else {
        mqr__admin_num(q, "count", 0);
        mqr__admin_num(q, "depth", 0);
        mqr__admin_num(q, "in_flight", 0);
        mqr__admin_num(q, "dead", 0);
        mqr__admin_num(q, "bytes", 0);
        cJSON_AddStringToObject(q, "status", "ok");
    }

    cJSON *r = cJSON_AddObjectToObject(o, "rules");
    const mqr_host_ops_t *h;
    void *host = mqr__engine_host(e, &h);
    mqr_admin_rules_info_t ri = {.last_error = ""};
    if (h->rules_info) h->rules_info(host, &ri);
    mqr__admin_num(r, "handler_errors", (double)ri.handler_errors);
    mqr__admin_num(r, "budget_errors", (double)ri.budget_errors);
    mqr__admin_num(r, "reloads", (double)ri.reloads);
    mqr__admin_num(r, "reload_failures", (double)ri.reload_failures);

    cJSON *rg = cJSON_AddObjectToObject(o, "registry");
    mqr_registry_stats_t rs = {0};
    if (mqr__engine_registry(e)) mqr__registry_stats(mqr__engine_registry(e), &rs);
    mqr__admin_num(rg, "devices", (double)rs.devices);
    mqr__admin_num(rg, "devices_online", (double)rs.online);
    mqr__admin_num(rg, "topics", (double)rs.topics);
    mqr__admin_num(rg, "topics_max", (double)rs.topics_max);
    mqr__admin_num(rg, "topics_dropped", (double)rs.topics_dropped);

    struct mqr_arate now, base;
    sample_now(x->a, &now);
    base = x->a->rate_last;
    if (now.at_ms - base.at_ms < 1000 && x->a->rate_prev.at_ms) base = x->a->rate_prev;
    double dt = (double)(now.at_ms - base.at_ms) / 1000.0;
    cJSON *rt = cJSON_AddObjectToObject(o, "rates");
    mqr__admin_num(rt, "interval_s", dt);
#define RATE(k, f) mqr__admin_num(rt, k, dt > 0 ? (double)(now.f - base.f) / dt : 0.0)
    RATE("published_per_s", published);
    RATE("received_per_s", msgs_in);
    RATE("sent_per_s", msgs_out);
    RATE("bytes_received_per_s", bytes_in);
    RATE("bytes_sent_per_s", bytes_out);
#undef RATE
}
