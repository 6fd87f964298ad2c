/*
 * api_sessions.c — upstream sessions: list, status, add (memory only,
 * connecting in the background) and remove. Only sessions added through
 * the API may be removed by it; the rules' own belong to the script.
 */
#include "admin_int.h"

#include "topic.h"
#include "upstream.h"

#include <stdlib.h>
#include <string.h>

/* ---- sessions ---- */

static bool api_session(const mqr_admin_t *a, const char *name, size_t *at)
{
    for (size_t i = 0; i < a->n_api_sessions; i++)
        if (strcmp(a->api_sessions[i], name) == 0) {
            if (at) *at = i;
            return true;
        }
    return false;
}

static void sub_item(void *arg, const char *filter, int qos)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "filter", filter);
    mqr__admin_num(o, "qos", qos);
    cJSON_AddItemToArray(arg, o);
}

static cJSON *session_json(mqr_admin_t *a, mqr_upstream_t *u, bool full)
{
    mqr_upstream_status_t st;
    mqr__upstream_status(u, &st);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", mqr__upstream_name(u));
    cJSON_AddStringToObject(o, "state", mqr__upstream_state_name(st.state));
    cJSON_AddBoolToObject(o, "ready", st.ready);
    cJSON_AddStringToObject(o, "broker", st.broker ? st.broker : "");
    cJSON_AddStringToObject(o, "transport", st.transport);
    cJSON_AddStringToObject(o, "managed_by",
                            api_session(a, mqr__upstream_name(u), NULL) ? "api" : "rules");
    mqr__admin_num(o, "messages_sent", (double)st.messages_sent);
    mqr__admin_num(o, "messages_received", (double)st.messages_received);
    if (!full) return o;
    cJSON_AddStringToObject(o, "last_error", st.last_error ? st.last_error : "");
    cJSON_AddBoolToObject(o, "persistent", st.persistent);
    mqr__admin_num(o, "connected_since_ms", (double)st.connected_since_ms);
    mqr__admin_num(o, "last_message_at_ms", (double)st.last_message_at_ms);
    mqr__admin_num(o, "connects", (double)st.connects);
    mqr__admin_num(o, "reconnects", (double)st.reconnects);
    mqr__admin_num(o, "connect_failures", (double)st.connect_failures);
    mqr__admin_num(o, "bytes_sent", (double)st.bytes_sent);
    mqr__admin_num(o, "bytes_received", (double)st.bytes_received);
    mqr__admin_num(o, "messages_refused", (double)st.messages_refused);
    mqr__admin_num(o, "messages_dropped", (double)st.messages_dropped);
    mqr__admin_num(o, "messages_unprotected", (double)st.messages_unprotected);
    mqr__admin_num(o, "messages_spilled", (double)st.messages_spilled);
    mqr__admin_num(o, "messages_not_kept", (double)st.messages_not_kept);
    mqr__admin_num(o, "publish_failed", (double)st.publish_failed);
    mqr__admin_num(o, "delivered", (double)st.delivered);
    mqr__admin_num(o, "inflight", (double)st.inflight);
    mqr__admin_num(o, "buffered", (double)st.buffered);
    cJSON *subs = cJSON_AddArrayToObject(o, "subscriptions");
    mqr__upstream_foreach_sub(u, sub_item, subs);
    return o;
}

void mqr__admin_h_sessions_list(mqr_actx_t *x)
{
    size_t off, lim;
    if (!mqr__admin_page(x, &off, &lim)) return;
    size_t total = 0;
    for (mqr_upstream_t *u = mqr__upstream_first(x->e); u; u = mqr__upstream_next(u))
        total++;
    /* the engine keeps them newest first; the API lists in creation order */
    mqr_upstream_t **all = total ? malloc(total * sizeof *all) : NULL;
    if (total && !all) {
        mqr__admin_engine_error(x, MQR_ENOMEM, "sessions");
        return;
    }
    size_t n = total;
    for (mqr_upstream_t *u = mqr__upstream_first(x->e); u; u = mqr__upstream_next(u))
        all[--n] = u;
    cJSON *items = mqr__admin_page_json(x, total, off, lim);
    for (size_t i = off; i < total && i < off + lim; i++)
        cJSON_AddItemToArray(items, session_json(x->a, all[i], false));
    free(all);
}

void mqr__admin_h_session_get(mqr_actx_t *x)
{
    mqr_upstream_t *u = mqr__upstream_find(x->e, x->arg);
    if (!u) {
        mqr__admin_error(x->res, 404, "not_found", "no session '%s'", x->arg);
        return;
    }
    x->res->status = 200;
    x->res->json = session_json(x->a, u, true);
}

void mqr__admin_h_session_add(mqr_actx_t *x)
{
    static const char *const fields[] = {"name",          "uri",
                                         "client_id",     "username",
                                         "password",      "prefix",
                                         "keepalive",     "clean_start",
                                         "mqtt_version",  "max_reconnects",
                                         "retry_initial", "retry_max",
                                         "subscriptions", NULL};
    cJSON *j = mqr__admin_body(x, false, fields);
    if (!j) return;
    bool bad = false;
    mqr_upstream_config_t cfg = {0};
    cfg.name = mqr__admin_jstr(j, "name", &bad);
    cfg.uri = mqr__admin_jstr(j, "uri", &bad);
    cfg.client_id = mqr__admin_jstr(j, "client_id", &bad);
    cfg.username = mqr__admin_jstr(j, "username", &bad);
    cfg.password = mqr__admin_jstr(j, "password", &bad);
    cfg.prefix = mqr__admin_jstr(j, "prefix", &bad);
    cfg.keepalive_s = mqr__admin_jint(j, "keepalive", 0, 0, 65535, &bad);
    cfg.clean_start = mqr__admin_jint(j, "clean_start", 1, 0, 1, &bad);
    cfg.mqtt_version = mqr__admin_jint(j, "mqtt_version", 4, 3, 5, &bad);
    cfg.max_reconnects = mqr__admin_jint(j, "max_reconnects", 0, 0, 1000000, &bad);
    cfg.retry_initial_s = mqr__admin_jint(j, "retry_initial", 0, 0, 3600, &bad);
    cfg.retry_max_s = mqr__admin_jint(j, "retry_max", 0, 0, 3600, &bad);
    cfg.persist = -1; /* memory only: the API's sessions do not outlive the process */
    cfg.session_expiry_s = -1;
    const cJSON *subs = cJSON_GetObjectItemCaseSensitive(j, "subscriptions");
    if (subs && !cJSON_IsArray(subs)) bad = true;
    if (bad || !cfg.name || !cfg.name[0] || !cfg.uri) {
        cJSON_Delete(j);
        mqr__admin_error(x->res, 400, "bad_request",
                         "name and uri (strings) are required; keepalive, clean_start, "
                         "mqtt_version (4 or 5), max_reconnects are integers");
        return;
    }
    if (cfg.mqtt_version == 3) cfg.mqtt_version = 4;
    if (mqr__upstream_find(x->e, cfg.name)) {
        mqr__admin_error(x->res, 409, "exists", "a session '%s' exists already", cfg.name);
        cJSON_Delete(j);
        return;
    }
    const cJSON *s;
    cJSON_ArrayForEach(s, subs)
    {
        const cJSON *f = cJSON_IsString(s) ? s : cJSON_GetObjectItemCaseSensitive(s, "filter");
        if (!cJSON_IsString(f) ||
            mqr__topic_filter_validate(f->valuestring, strlen(f->valuestring)) < 0) {
            mqr__admin_error(x->res, 400, "bad_request", "subscriptions: invalid filter");
            cJSON_Delete(j);
            return;
        }
    }
    char **list = realloc(x->a->api_sessions, (x->a->n_api_sessions + 1) * sizeof *list);
    if (!list) {
        cJSON_Delete(j);
        mqr__admin_engine_error(x, MQR_ENOMEM, "session");
        return;
    }
    x->a->api_sessions = list;
    char *name = strdup(cfg.name);
    mqr_upstream_t *u = NULL;
    int rc = name ? mqr__upstream_new(x->e, &cfg, &u) : MQR_ENOMEM;
    if (rc < 0) {
        free(name);
        cJSON_Delete(j);
        mqr__admin_engine_error(x, rc, "session");
        return;
    }
    list[x->a->n_api_sessions++] = name;
    cJSON_ArrayForEach(s, subs)
    {
        const cJSON *f = cJSON_IsString(s) ? s : cJSON_GetObjectItemCaseSensitive(s, "filter");
        const cJSON *q = cJSON_IsObject(s) ? cJSON_GetObjectItemCaseSensitive(s, "qos") : NULL;
        int qos = cJSON_IsNumber(q) && q->valueint >= 0 && q->valueint <= 2 ? q->valueint : 0;
        mqr__upstream_subscribe(u, f->valuestring, qos);
    }
    cJSON_Delete(j);
    x->res->status = 201;
    x->res->json = session_json(x->a, u, true);
}

void mqr__admin_h_session_delete(mqr_actx_t *x)
{
    mqr_upstream_t *u = mqr__upstream_find(x->e, x->arg);
    if (!u) {
        mqr__admin_error(x->res, 404, "not_found", "no session '%s'", x->arg);
        return;
    }
    size_t at;
    if (!api_session(x->a, x->arg, &at)) {
        mqr__admin_error(x->res, 409, "managed_by_rules",
                         "session '%s' is declared by the rules script: remove it there", x->arg);
        return;
    }
    free(x->a->api_sessions[at]);
    x->a->api_sessions[at] = x->a->api_sessions[--x->a->n_api_sessions];
    mqr__upstream_close(u);
    x->res->status = 204;
}
