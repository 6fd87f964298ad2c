/*
 * api_sinks.c — GET /api/v1/sinks: every open egress client (HTTP,
 * PostgreSQL, Redis, file) with its state and counters, paged, in name
 * order. Targets come redacted from the sink (no password). Loop thread.
 */
#include "admin_int.h"

#include "engine.h"
#include "sink.h"

#include <stdlib.h>
#include <string.h>

static int cmp_sink(const void *a, const void *b)
{
    const mqr_sink_t *x = *(const mqr_sink_t *const *)a, *y = *(const mqr_sink_t *const *)b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->kind, y->kind);
}

static cJSON *sink_json(const mqr_sink_t *s)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", s->name);
    cJSON_AddStringToObject(o, "kind", s->kind);
    cJSON_AddStringToObject(o, "target", s->target);
    cJSON_AddBoolToObject(o, "up", s->up);
    mqr__admin_num(o, "requests", (double)s->requests);
    mqr__admin_num(o, "ok", (double)s->ok);
    mqr__admin_num(o, "retried", (double)s->retried);
    mqr__admin_num(o, "failed", (double)s->failed);
    mqr__admin_num(o, "in_flight", s->in_flight);
    mqr__admin_num(o, "queued", s->queued);
    mqr__admin_num(o, "reconnects", (double)s->reconnects);
    cJSON *errs = cJSON_AddObjectToObject(o, "errors");
    for (int k = 0; k < MQR_SINK_ERR_KINDS_; k++)
        mqr__admin_num(errs, mqr__sink_err_kind_name((mqr_sink_err_kind_t)k), (double)s->errors[k]);
    if (s->last_error[0]) cJSON_AddStringToObject(o, "last_error", s->last_error);
    mqr__admin_num(o, "latency_count", (double)s->latency.count);
    mqr__admin_num(o, "latency_sum_s", (double)s->latency.sum_ns / 1e9);
    return o;
}

void mqr__admin_h_sinks_list(mqr_actx_t *x)
{
    size_t off, lim;
    if (!mqr__admin_page(x, &off, &lim)) return;
    const mqr_sinks_t *l = mqr__engine_sinks(x->e);
    const mqr_sink_t **v = l->count ? malloc(l->count * sizeof *v) : NULL;
    if (l->count && !v) {
        mqr__admin_engine_error(x, MQR_ENOMEM, "sinks");
        return;
    }
    size_t n = 0;
    for (const mqr_sink_t *s = l->head; s && n < l->count; s = s->next)
        v[n++] = s;
    if (n) qsort(v, n, sizeof *v, cmp_sink); /* a stable order for paging */
    cJSON *items = mqr__admin_page_json(x, n, off, lim);
    for (size_t i = off; i < n && i < off + lim; i++)
        cJSON_AddItemToArray(items, sink_json(v[i]));
    free(v);
}
