/*
 * api_queues.c — the engine's queues: list (by name) with depth, one
 * queue's counters and its dead-letter queue's, dead letters page by page,
 * and re-drive.
 */
#include "admin_int.h"

#include "queue.h"

#include <stdlib.h>
#include <string.h>

/* ---- queues ---- */

static cJSON *queue_json(mqr_queue_t *q, bool full)
{
    mqr_queue_stats_t st;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", mqr__queue_name(q));
    if (mqr__queue_stats(q, &st) < 0) return o;
    mqr__admin_num(o, "depth", (double)st.depth);
    mqr__admin_num(o, "ready", (double)st.ready);
    mqr__admin_num(o, "delayed", (double)st.delayed);
    mqr__admin_num(o, "in_flight", (double)st.in_flight);
    mqr__admin_num(o, "dead", (double)st.dead);
    mqr__admin_num(o, "consumers", (double)st.consumers);
    mqr__admin_num(o, "bytes", (double)st.bytes);
    if (!full) return o;
    mqr__admin_num(o, "pending_tx", (double)st.pending_tx);
    mqr__admin_num(o, "published", (double)st.published);
    mqr__admin_num(o, "delivered", (double)st.delivered);
    mqr__admin_num(o, "acked", (double)st.acked);
    mqr__admin_num(o, "nacked", (double)st.nacked);
    mqr__admin_num(o, "rejected", (double)st.rejected);
    mqr__admin_num(o, "redelivered", (double)st.redelivered);
    mqr__admin_num(o, "expired", (double)st.expired);
    mqr__admin_num(o, "dropped", (double)st.dropped);
    mqr__admin_num(o, "dead_lettered", (double)st.dead_lettered);
    mqr__admin_num(o, "refused_full", (double)st.refused_full);
    mqr__admin_num(o, "refused_memory", (double)st.refused_memory);
    mqr__admin_num(o, "uptime_ms", (double)st.uptime_ms);
    mqr_queue_dlq_stats_t d;
    if (mqr__queue_dlq_stats(q, &d) == 0) {
        cJSON *dj = cJSON_AddObjectToObject(o, "dlq");
        mqr__admin_num(dj, "depth", (double)d.depth);
        mqr__admin_num(dj, "total", (double)d.total);
        mqr__admin_num(dj, "redriven", (double)d.redriven);
        mqr__admin_num(dj, "purged", (double)d.purged);
        mqr__admin_num(dj, "overflow", (double)d.overflow);
    } else {
        cJSON_AddNullToObject(o, "dlq");
    }
    return o;
}

typedef struct {
    mqr_queue_t **v;
    size_t n, cap;
} qlist_t;

static int collect_queue(void *arg, mqr_queue_t *q)
{
    qlist_t *l = arg;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        mqr_queue_t **v = realloc(l->v, cap * sizeof *v);
        if (!v) return 1;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = q;
    return 0;
}

static int cmp_queue(const void *x, const void *y)
{
    return strcmp(mqr__queue_name(*(mqr_queue_t *const *)x),
                  mqr__queue_name(*(mqr_queue_t *const *)y));
}

void mqr__admin_h_queues_list(mqr_actx_t *x)
{
    size_t off, lim;
    if (!mqr__admin_page(x, &off, &lim)) return;
    qlist_t l = {0};
    if (mqr__queues_foreach(x->e, collect_queue, &l) > 0) {
        free(l.v);
        mqr__admin_engine_error(x, MQR_ENOMEM, "queues");
        return;
    }
    if (l.n) qsort(l.v, l.n, sizeof *l.v, cmp_queue); /* a stable order for paging */
    cJSON *items = mqr__admin_page_json(x, l.n, off, lim);
    for (size_t i = off; i < l.n && i < off + lim; i++)
        cJSON_AddItemToArray(items, queue_json(l.v[i], false));
    free(l.v);
}

static mqr_queue_t *find_queue(mqr_actx_t *x)
{
    mqr_queue_t *q = NULL;
    if (mqr__queue_find(x->e, x->arg, &q) < 0 || !q) {
        mqr__admin_error(x->res, 404, "not_found", "no queue '%s'", x->arg);
        return NULL;
    }
    return q;
}

void mqr__admin_h_queue_get(mqr_actx_t *x)
{
    mqr_queue_t *q = find_queue(x);
    if (!q) return;
    x->res->status = 200;
    x->res->json = queue_json(q, true);
}

void mqr__admin_h_queue_dlq(mqr_actx_t *x)
{
    mqr_queue_t *q = find_queue(x);
    if (!q) return;
    size_t off, lim;
    if (!mqr__admin_page(x, &off, &lim)) return;
    mqr_queue_dlq_stats_t d;
    int rc = mqr__queue_dlq_stats(q, &d);
    if (rc < 0) {
        mqr__admin_engine_error(x, rc, "dead letters");
        return;
    }
    mqr_queue_dead_t *v = calloc(lim, sizeof *v);
    if (!v) {
        mqr__admin_engine_error(x, MQR_ENOMEM, "dead letters");
        return;
    }
    rc = mqr__queue_dlq_list(q, off, lim, v);
    if (rc < 0) {
        free(v);
        mqr__admin_engine_error(x, rc, "dead letters");
        return;
    }
    cJSON *items = mqr__admin_page_json(x, d.depth, off, lim);
    for (int i = 0; i < rc; i++) {
        cJSON *o = cJSON_CreateObject();
        mqr__admin_num(o, "id", (double)v[i].id);
        cJSON_AddStringToObject(o, "topic", v[i].msg->topic);
        mqr__admin_add_payload(o, v[i].msg->payload, v[i].msg->payload_len);
        cJSON_AddStringToObject(o, "reason", mqr__queue_reason_name(v[i].reason));
        mqr__admin_num(o, "attempts", v[i].attempts);
        mqr__admin_num(o, "priority", v[i].priority);
        mqr__admin_num(o, "dead_at_ms", (double)v[i].dead_at_ms);
        cJSON_AddItemToArray(items, o);
    }
    free(v);
}

void mqr__admin_h_queue_redrive(mqr_actx_t *x)
{
    mqr_queue_t *q = find_queue(x);
    if (!q) return;
    size_t max = 0;
    if (x->req->body_len) {
        static const char *const fields[] = {"max", NULL};
        cJSON *j = mqr__admin_body(x, false, fields);
        if (!j) return;
        bool bad = false;
        int m = mqr__admin_jint(j, "max", 0, 0, 1000000000, &bad);
        cJSON_Delete(j);
        if (bad) {
            mqr__admin_error(x->res, 400, "bad_request", "max must be an integer >= 0 (0 = all)");
            return;
        }
        max = (size_t)m;
    }
    int rc = mqr__queue_redrive(q, max);
    if (rc < 0) {
        mqr__admin_engine_error(x, rc, "redrive");
        return;
    }
    mqr__admin_num(mqr__admin_ok(x, 200), "redriven", rc);
}
