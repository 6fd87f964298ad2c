/*
 * api_registry.c — the device and topic registries over HTTP: devices
 * (register, list with filters and a cursor, get, change, unregister),
 * tracked topics (list, info on one), topic and filter validation.
 *
 * A request made with a tenant's token (x->tenant set) sees only that
 * tenant: its devices (registering forces the tenant, another tenant's id
 * is 404) and the topics under "<tenant>/", shown without that prefix.
 * Untenanted tokens see every tenant and name one with ?tenant= (devices
 * without a tenant by default). Pages use the registry's cursors
 * (core/registry/registry.h): {items, limit, next}, next null on the last page.
 */
#include "admin_int.h"
#include "engine.h"

#include "registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOPIC_MAX 65535u

static mqr_registry_t *registry(mqr_actx_t *x)
{
    if (!mqr__engine_registry(x->e)) {
        mqr__admin_error(x->res, 503, "MQR_ENOTINIT", "the registry is not open");
        return NULL;
    }
    return mqr__engine_registry(x->e);
}

/* The tenant a device request is about: the token's, else ?tenant= ("" when
 * absent). false after answering 400/403. */
static bool req_tenant(mqr_actx_t *x, char *out, size_t cap, bool *given)
{
    char t[MQR_TENANT_MAX + 2];
    int f = mqr__admin_qparam(x->req->query, "tenant", t, sizeof t);
    if (given) *given = f > 0;
    if (f < 0 || (f > 0 && t[0] && !mqr__tenant_valid(t, strlen(t)))) {
        mqr__admin_error(x->res, 400, "bad_request",
                         "tenant must be 1 to %u characters of [A-Za-z0-9_-]", MQR_TENANT_MAX);
        return false;
    }
    if (x->tenant) {
        if (f > 0 && strcmp(t, x->tenant) != 0) {
            mqr__admin_error(x->res, 403, "forbidden", "this token may not see tenant '%s'", t);
            return false;
        }
        snprintf(out, cap, "%s", x->tenant);
        return true;
    }
    snprintf(out, cap, "%s", f > 0 ? t : "");
    return true;
}

/* ---- devices ---- */

static cJSON *device_json(const mqr_device_info_t *d)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", d->id);
    if (d->tenant[0])
        cJSON_AddStringToObject(o, "tenant", d->tenant);
    else
        cJSON_AddNullToObject(o, "tenant");
    cJSON_AddStringToObject(o, "name", d->name);
    cJSON_AddStringToObject(o, "type", d->type);
    cJSON *m = cJSON_Parse(d->metadata); /* checked JSON when registered */
    cJSON_AddItemToObject(o, "metadata", m ? m : cJSON_CreateString(d->metadata));
    cJSON_AddStringToObject(o, "status", mqr__device_status_name(d->status));
    mqr__admin_num(o, "status_ms", (double)d->status_ms);
    mqr__admin_num(o, "created_ms", (double)d->created_ms);
    mqr__admin_num(o, "last_seen_ms", (double)d->last_seen_ms);
    mqr__admin_num(o, "messages_in", (double)d->msgs_in);
    mqr__admin_num(o, "messages_out", (double)d->msgs_out);
    mqr__admin_num(o, "bytes_in", (double)d->bytes_in);
    mqr__admin_num(o, "bytes_out", (double)d->bytes_out);
    return o;
}

/* limit (1..1000, default 100) and cursor (unless NULL) from the query;
 * false after answering 400. */
static bool cursor_page(mqr_actx_t *x, unsigned *limit, char *cursor, size_t cap)
{
    char v[32];
    *limit = MQR_REGISTRY_LIMIT_DEFAULT;
    int f = mqr__admin_qparam(x->req->query, "limit", v, sizeof v);
    if (f != 0) {
        char *end = NULL;
        long long n = f > 0 && v[0] ? strtoll(v, &end, 10) : -1;
        if (f < 0 || !end || *end || v[0] == '-' || v[0] == '+' || n < 1 ||
            n > (long long)MQR_REGISTRY_LIMIT_MAX) {
            mqr__admin_error(x->res, 400, "bad_pagination",
                             "limit must be an integer from 1 to %u (got '%s')",
                             MQR_REGISTRY_LIMIT_MAX, f < 0 ? "?" : v);
            return false;
        }
        *limit = (unsigned)n;
    }
    if (!cursor) return true; /* the caller reads it */
    cursor[0] = '\0';
    if (mqr__admin_qparam(x->req->query, "cursor", cursor, cap) < 0) {
        mqr__admin_error(x->res, 400, "bad_pagination", "cursor is malformed");
        return false;
    }
    return true;
}

static void page_next(cJSON *o, unsigned limit, const char *next)
{
    mqr__admin_num(o, "limit", limit);
    if (next && next[0])
        cJSON_AddStringToObject(o, "next", next);
    else
        cJSON_AddNullToObject(o, "next");
}

static int add_device(void *arg, const mqr_device_info_t *d)
{
    cJSON_AddItemToArray(arg, device_json(d));
    return 0;
}

void mqr__admin_h_devices_list(mqr_actx_t *x)
{
    mqr_registry_t *r = registry(x);
    if (!r) return;
    char tenant[MQR_TENANT_MAX + 2], type[MQR_DEVICE_NAME_MAX + 2], status[16];
    char prefix[MQR_DEVICE_ID_MAX + 2];
    bool tgiven = false;
    if (!req_tenant(x, tenant, sizeof tenant, &tgiven)) return;
    mqr_device_query_t q = {.tenant = x->tenant || tgiven ? tenant : NULL, .status = -1};
    int ft = mqr__admin_qparam(x->req->query, "type", type, sizeof type);
    int fs = mqr__admin_qparam(x->req->query, "status", status, sizeof status);
    int fp = mqr__admin_qparam(x->req->query, "prefix", prefix, sizeof prefix);
    if (ft < 0 || fp < 0) {
        mqr__admin_error(x->res, 400, "bad_request", "%s is malformed or too long",
                         ft < 0 ? "type" : "prefix");
        return;
    }
    if (ft > 0) q.type = type;
    if (fp > 0 && prefix[0]) q.prefix = prefix;
    if (fs != 0) {
        q.status = fs > 0 ? mqr__device_status_parse(status) : -1;
        if (q.status < 0) {
            mqr__admin_error(x->res, 400, "bad_request",
                             "status must be unknown, online or offline");
            return;
        }
    }
    char *cursor = malloc(MQR_CURSOR_MAX);
    if (!cursor) {
        mqr__admin_engine_error(x, MQR_ENOMEM, "devices");
        return;
    }
    unsigned limit;
    if (!cursor_page(x, &limit, cursor, MQR_CURSOR_MAX)) {
        free(cursor);
        return;
    }
    q.limit = limit;
    q.cursor = cursor;
    cJSON *items = cJSON_CreateArray();
    int rc = mqr__device_list(r, &q, add_device, items, cursor, MQR_CURSOR_MAX);
    if (rc < 0) {
        cJSON_Delete(items);
        free(cursor);
        if (rc == MQR_EINVAL)
            mqr__admin_error(x->res, 400, "bad_pagination", "cursor is not one this API gave");
        else
            mqr__admin_engine_error(x, rc, "devices");
        return;
    }
    cJSON *o = mqr__admin_ok(x, 200);
    cJSON_AddItemToObject(o, "items", items);
    page_next(o, limit, cursor);
    free(cursor);
}

/* Reads name, type, metadata of body (metadata: any JSON value, printed
 * back to text into *meta, malloc'd). false after answering 400. */
static const char *const register_fields[] = {"id", "tenant", "name", "type", "metadata", NULL};
static const char *const update_fields[] = {"status", "name", "type", "metadata", NULL};

static bool spec_fields(mqr_actx_t *x, const cJSON *j, mqr_device_spec_t *s, char **meta)
{
    bool bad = false;
    const char *name = mqr__admin_jstr(j, "name", &bad);
    if (bad) {
        mqr__admin_error(x->res, 400, "bad_request", "name must be a string");
        return false;
    }
    const char *type = mqr__admin_jstr(j, "type", &bad);
    if (bad) {
        mqr__admin_error(x->res, 400, "bad_request", "type must be a string");
        return false;
    }
    if (name) s->name = name;
    if (type) s->type = type;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "metadata");
    *meta = NULL;
    if (m) {
        *meta = cJSON_PrintUnformatted(m);
        if (!*meta) {
            mqr__admin_engine_error(x, MQR_ENOMEM, "metadata");
            return false;
        }
        s->metadata = *meta;
    }
    return true;
}

static void answer_device(mqr_actx_t *x, mqr_registry_t *r, const char *tenant, const char *id,
                          int status)
{
    mqr_device_info_t d;
    int rc = mqr__device_get(r, tenant, id, &d);
    if (rc < 0) {
        mqr__admin_engine_error(x, rc, "device");
        return;
    }
    x->res->status = status;
    x->res->json = device_json(&d);
}

void mqr__admin_h_device_register(mqr_actx_t *x)
{
    mqr_registry_t *r = registry(x);
    if (!r) return;
    cJSON *j = mqr__admin_body(x, false, register_fields);
    if (!j) return;
    bool bad = false;
    mqr_device_spec_t s = {0};
    s.id = mqr__admin_jstr(j, "id", &bad);
    if (bad || !s.id || !s.id[0]) {
        cJSON_Delete(j);
        mqr__admin_error(x->res, 400, "bad_request", "id must be a non-empty string");
        return;
    }
    s.tenant = mqr__admin_jstr(j, "tenant", &bad);
    if (bad) {
        cJSON_Delete(j);
        mqr__admin_error(x->res, 400, "bad_request", "tenant must be a string");
        return;
    }
    if (x->tenant) {
        if (s.tenant && strcmp(s.tenant, x->tenant) != 0) {
            mqr__admin_error(x->res, 403, "forbidden", "this token may not register in tenant '%s'",
                             s.tenant);
            cJSON_Delete(j);
            return;
        }
        s.tenant = x->tenant;
    }
    char *meta = NULL;
    if (!spec_fields(x, j, &s, &meta)) {
        cJSON_Delete(j);
        return;
    }
    bool created = false;
    const char *why = NULL;
    int rc = mqr__device_register(r, &s, &created, &why);
    if (rc < 0) {
        if (rc == MQR_EINVAL)
            mqr__admin_error(x->res, 400, "bad_request", "device: %s",
                             why ? why : mqr_strerror(rc));
        else
            mqr__admin_engine_error(x, rc, "register");
    } else {
        answer_device(x, r, s.tenant ? s.tenant : "", s.id, created ? 201 : 200);
    }
    free(meta);
    cJSON_Delete(j);
}

void mqr__admin_h_device_get(mqr_actx_t *x)
{
    mqr_registry_t *r = registry(x);
    char tenant[MQR_TENANT_MAX + 2];
    if (!r || !req_tenant(x, tenant, sizeof tenant, NULL)) return;
    mqr_device_info_t d;
    if (mqr__device_get(r, tenant, x->arg, &d) < 0) {
        mqr__admin_error(x->res, 404, "not_found", "no device '%s'", x->arg);
        return;
    }
    x->res->status = 200;
    x->res->json = device_json(&d);
}

/* PATCH: any of status, name, type, metadata; the others are kept. */
void mqr__admin_h_device_update(mqr_actx_t *x)
{
    mqr_registry_t *r = registry(x);
    char tenant[MQR_TENANT_MAX + 2];
    if (!r || !req_tenant(x, tenant, sizeof tenant, NULL)) return;
    cJSON *j = mqr__admin_body(x, false, update_fields);
    if (!j) return;
    mqr_device_info_t d;
    if (mqr__device_get(r, tenant, x->arg, &d) < 0) {
        cJSON_Delete(j);
        mqr__admin_error(x->res, 404, "not_found", "no device '%s'", x->arg);
        return;
    }
    bool bad = false;
    const char *st = mqr__admin_jstr(j, "status", &bad);
    int status = st ? mqr__device_status_parse(st) : -1;
    if (bad || (st && status < 0)) {
        cJSON_Delete(j);
        mqr__admin_error(x->res, 400, "bad_request", "status must be unknown, online or offline");
        return;
    }
    /* the current fields are borrowed: copy them before registering */
    char *name = strdup(d.name), *type = strdup(d.type), *old = strdup(d.metadata);
    char *meta = NULL;
    mqr_device_spec_t s = {
        .tenant = tenant, .id = x->arg, .name = name, .type = type, .metadata = old};
    int rc = 0;
    const char *why = NULL;
    if (!name || !type || !old) {
        mqr__admin_engine_error(x, MQR_ENOMEM, "device");
        goto out;
    }
    if (!spec_fields(x, j, &s, &meta)) goto out;
    bool fields = cJSON_GetObjectItemCaseSensitive(j, "name") ||
                  cJSON_GetObjectItemCaseSensitive(j, "type") ||
                  cJSON_GetObjectItemCaseSensitive(j, "metadata");
    if (fields && (rc = mqr__device_register(r, &s, NULL, &why)) < 0) {
        if (rc == MQR_EINVAL)
            mqr__admin_error(x->res, 400, "bad_request", "device: %s",
                             why ? why : mqr_strerror(rc));
        else
            mqr__admin_engine_error(x, rc, "update");
        goto out;
    }
    if (st && (rc = mqr__device_set_status(r, tenant, x->arg, status)) < 0) {
        mqr__admin_engine_error(x, rc, "status");
        goto out;
    }
    answer_device(x, r, tenant, x->arg, 200);
out:
    free(name);
    free(type);
    free(old);
    free(meta);
    cJSON_Delete(j);
}

void mqr__admin_h_device_delete(mqr_actx_t *x)
{
    mqr_registry_t *r = registry(x);
    char tenant[MQR_TENANT_MAX + 2];
    if (!r || !req_tenant(x, tenant, sizeof tenant, NULL)) return;
    if (mqr__device_unregister(r, tenant, x->arg) < 0) {
        mqr__admin_error(x->res, 404, "not_found", "no device '%s'", x->arg);
        return;
    }
    x->res->status = 204;
}

/* ---- topics ---- */

typedef struct {
    cJSON *items;
    size_t strip; /* the tenant's "<tenant>/" */
} tlist_t;

static cJSON *topic_json(const mqr_topic_info_t *t, size_t strip)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "topic", t->topic + strip);
    cJSON_AddBoolToObject(o, "tracked", t->tracked);
    mqr__admin_num(o, "messages", (double)t->messages);
    mqr__admin_num(o, "last_message_ms", (double)t->last_ms);
    mqr__admin_num(o, "subscribers", (double)t->subscribers);
    cJSON_AddBoolToObject(o, "retained", t->retained);
    return o;
}

static int add_topic(void *arg, const mqr_topic_info_t *t)
{
    tlist_t *l = arg;
    cJSON_AddItemToArray(l->items, topic_json(t, l->strip));
    return 0;
}

/* A query parameter of up to a topic's length, prefixed with the tenant's
 * "<tenant>/" when the token has one: malloc'd, *found set; NULL after
 * answering (400, 500). */
static char *tenant_param(mqr_actx_t *x, const char *key, int *found)
{
    size_t pre = x->tenant ? strlen(x->tenant) + 1 : 0;
    char *v = malloc(pre + TOPIC_MAX + 2);
    if (!v) {
        mqr__admin_engine_error(x, MQR_ENOMEM, key);
        return NULL;
    }
    if (pre) {
        memcpy(v, x->tenant, pre - 1);
        v[pre - 1] = '/';
    }
    *found = mqr__admin_qparam(x->req->query, key, v + pre, TOPIC_MAX + 2);
    if (*found < 0) {
        free(v);
        mqr__admin_error(x->res, 400, strcmp(key, "cursor") ? "bad_request" : "bad_pagination",
                         "%s is malformed or too long", key);
        return NULL;
    }
    if (!*found) v[pre] = '\0';
    return v;
}

void mqr__admin_h_topics_list(mqr_actx_t *x)
{
    if (!registry(x)) return;
    unsigned limit;
    int fp, fc;
    if (!cursor_page(x, &limit, NULL, 0)) return;
    char *prefix = tenant_param(x, "prefix", &fp);
    if (!prefix) return;
    char *cursor = tenant_param(x, "cursor", &fc);
    if (!cursor) {
        free(prefix);
        return;
    }
    size_t strip = x->tenant ? strlen(x->tenant) + 1 : 0;
    char *next = malloc(MQR_CURSOR_MAX);
    tlist_t l = {.items = cJSON_CreateArray(), .strip = strip};
    int rc = next ? mqr__topics_list(mqr__engine_registry(x->e), prefix[0] ? prefix : NULL, limit,
                                     fc > 0 && cursor[strip] ? cursor : NULL, add_topic, &l, next,
                                     MQR_CURSOR_MAX)
                  : MQR_ENOMEM;
    if (rc < 0) {
        cJSON_Delete(l.items);
        if (rc == MQR_EINVAL)
            mqr__admin_error(x->res, 400, "bad_pagination", "cursor is not one this API gave");
        else
            mqr__admin_engine_error(x, rc, "topics");
    } else {
        cJSON *o = mqr__admin_ok(x, 200);
        cJSON_AddItemToObject(o, "items", l.items);
        page_next(o, limit, next[0] && strlen(next) > strip ? next + strip : NULL);
    }
    free(next);
    free(prefix);
    free(cursor);
}

void mqr__admin_h_topic_info(mqr_actx_t *x)
{
    int f;
    char *topic = tenant_param(x, "topic", &f);
    if (!topic) return;
    size_t strip = x->tenant ? strlen(x->tenant) + 1 : 0;
    if (!f || !topic[strip]) {
        free(topic);
        mqr__admin_error(x->res, 400, "bad_request", "the query needs topic=...");
        return;
    }
    mqr_topic_info_t t;
    int rc = mqr__topic_info(mqr__engine_registry(x->e), topic, &t);
    if (rc < 0) {
        const char *why = NULL;
        mqr__topic_validate(topic + strip, strlen(topic + strip), false, &why);
        mqr__admin_error(x->res, 400, mqr_err_name(rc), "not a topic name: %s",
                         why ? why : mqr_strerror(rc));
    } else {
        x->res->status = 200;
        x->res->json = topic_json(&t, strip);
    }
    free(topic);
}

/* GET ?topic=...&wildcards=true|false, or POST {topic, wildcards}. */
void mqr__admin_h_topic_validate(mqr_actx_t *x)
{
    char *topic = NULL;
    bool wild = false;
    if (x->req->method == HTTP_POST) {
        static const char *const fields[] = {"topic", "wildcards", NULL};
        cJSON *j = mqr__admin_body(x, false, fields);
        if (!j) return;
        bool bad = false;
        const char *t = mqr__admin_jstr(j, "topic", &bad);
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(j, "wildcards");
        if (bad || !t || (w && !cJSON_IsBool(w))) {
            cJSON_Delete(j);
            mqr__admin_error(x->res, 400, "bad_request",
                             "the body needs topic (a string) and wildcards (a boolean) if any");
            return;
        }
        wild = cJSON_IsTrue(w);
        topic = strdup(t);
        cJSON_Delete(j);
    } else {
        char w[8];
        int fw = mqr__admin_qparam(x->req->query, "wildcards", w, sizeof w);
        if (fw < 0 || (fw > 0 && strcmp(w, "true") && strcmp(w, "false") && strcmp(w, "1") &&
                       strcmp(w, "0"))) {
            mqr__admin_error(x->res, 400, "bad_request", "wildcards must be true or false");
            return;
        }
        wild = fw > 0 && (!strcmp(w, "true") || !strcmp(w, "1"));
        topic = malloc(TOPIC_MAX + 2);
        int ft = topic ? mqr__admin_qparam(x->req->query, "topic", topic, TOPIC_MAX + 2) : 1;
        if (ft <= 0) {
            free(topic);
            mqr__admin_error(x->res, 400, "bad_request", "the query needs topic=...");
            return;
        }
    }
    if (!topic) {
        mqr__admin_engine_error(x, MQR_ENOMEM, "validate");
        return;
    }
    const char *why = NULL;
    int rc = mqr__topic_validate(topic, strlen(topic), wild, &why);
    cJSON *o = mqr__admin_ok(x, 200);
    cJSON_AddStringToObject(o, "topic", topic);
    cJSON_AddBoolToObject(o, "wildcards", wild);
    cJSON_AddBoolToObject(o, "valid", rc == 0);
    if (rc == 0)
        cJSON_AddNullToObject(o, "reason");
    else
        cJSON_AddStringToObject(o, "reason", why ? why : mqr_strerror(rc));
    free(topic);
}
