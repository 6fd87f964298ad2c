/*
 * routes.c — the admin API's route table: which method and path run which
 * handler (api_*.c) once guard.c let the request through, the bearer-token
 * check, and the helpers every handler uses: JSON error bodies, engine
 * errors as HTTP statuses, query parameters, pagination, request bodies.
 *
 * Every handler runs on the loop thread and answers before returning; none
 * waits on the network or the disk. A tenant's token may call only the
 * routes marked `tenant` (the registries', which scope what they show to
 * the tenant: api_registry.c, and publish, under the tenant's prefix:
 * api_message.c); every other one answers it 403.
 * docs/openapi.yaml lists exactly what the table holds, which
 * tests/integration/test_admin_openapi.py checks.
 */
#include "admin_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- answers ---- */

void mqr__admin_error(mqr_ares_t *res, int status, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON_Delete(res->json);
    res->status = status;
    res->json = cJSON_CreateObject();
    cJSON *err = cJSON_AddObjectToObject(res->json, "error");
    cJSON_AddStringToObject(err, "code", code);
    cJSON_AddStringToObject(err, "message", msg);
    cJSON_AddNumberToObject(err, "status", status);
}

/* An engine error as an HTTP answer. */
void mqr__admin_engine_error(mqr_actx_t *x, int rc, const char *what)
{
    int st;
    switch (rc) {
    case MQR_ENOENT:
        st = 404;
        break;
    case MQR_EEXIST:
    case MQR_ENODLQ:
    case MQR_ECLOSED:
        st = 409;
        break;
    case MQR_EINVAL:
    case MQR_ETOPIC:
    case MQR_EQOS:
    case MQR_EQNAME:
    case MQR_EPAYLOAD:
    case MQR_ETOOLARGE:
    case MQR_EUTF8:
        st = 400;
        break;
    case MQR_EFULL:
    case MQR_EMEMLIMIT:
    case MQR_ENOTINIT:
        st = 503;
        break;
    default:
        st = 500;
    }
    mqr__admin_error(x->res, st, mqr_err_name(rc), "%s: %s", what, mqr_strerror(rc));
}

cJSON *mqr__admin_ok(mqr_actx_t *x, int status)
{
    x->res->status = status;
    x->res->json = cJSON_CreateObject();
    return x->res->json;
}

void mqr__admin_num(cJSON *o, const char *k, double v)
{
    cJSON_AddNumberToObject(o, k, v);
}

/* ---- request helpers ---- */

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* The value of key in the query string, decoded ('+' is a space). 1 found,
 * 0 absent, -1 malformed. */
int mqr__admin_qparam(const char *q, const char *key, char *out, size_t outlen)
{
    size_t klen = strlen(key);
    while (*q) {
        const char *end = strchr(q, '&');
        size_t n = end ? (size_t)(end - q) : strlen(q);
        if (n > klen && strncmp(q, key, klen) == 0 && q[klen] == '=') {
            size_t o = 0;
            for (size_t i = klen + 1; i < n; i++) {
                if (o + 1 >= outlen) return -1;
                char ch = q[i];
                if (ch == '+') {
                    ch = ' ';
                } else if (ch == '%') {
                    int hi = i + 2 < n ? hexval((unsigned char)q[i + 1]) : -1;
                    int lo = i + 2 < n ? hexval((unsigned char)q[i + 2]) : -1;
                    if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) return -1;
                    ch = (char)(hi * 16 + lo);
                    i += 2;
                }
                out[o++] = ch;
            }
            out[o] = '\0';
            return 1;
        }
        if (n == klen && strncmp(q, key, klen) == 0) {
            if (outlen) out[0] = '\0';
            return 1;
        }
        q += n;
        if (*q == '&') q++;
    }
    return 0;
}

#define PAGE_DEFAULT 100
#define PAGE_MAX 1000

/* offset (>= 0) and limit (1..1000) from the query; false after answering 400. */
bool mqr__admin_page(mqr_actx_t *x, size_t *offset, size_t *limit)
{
    *offset = 0;
    *limit = PAGE_DEFAULT;
    static const char *const keys[2] = {"offset", "limit"};
    for (int k = 0; k < 2; k++) {
        char v[32];
        int f = mqr__admin_qparam(x->req->query, keys[k], v, sizeof v);
        if (f == 0) continue;
        char *end = NULL;
        long long n = f > 0 && v[0] ? strtoll(v, &end, 10) : -1;
        bool bad = f < 0 || !end || *end || v[0] == '-' || v[0] == '+' || n < 0 ||
                   (k == 1 && (n < 1 || n > PAGE_MAX)) || (k == 0 && n > 1000000000LL);
        if (bad) {
            mqr__admin_error(x->res, 400, "bad_pagination", "%s must be an integer%s (got '%s')",
                             keys[k], k ? " from 1 to 1000" : " >= 0", f < 0 ? "?" : v);
            return false;
        }
        if (k == 0)
            *offset = (size_t)n;
        else
            *limit = (size_t)n;
    }
    return true;
}

/* {items: [], total, offset, limit}; returns items. */
cJSON *mqr__admin_page_json(mqr_actx_t *x, size_t total, size_t offset, size_t limit)
{
    cJSON *o = mqr__admin_ok(x, 200);
    cJSON *items = cJSON_AddArrayToObject(o, "items");
    mqr__admin_num(o, "total", (double)total);
    mqr__admin_num(o, "offset", (double)offset);
    mqr__admin_num(o, "limit", (double)limit);
    return items;
}

const char *mqr__admin_unknown_key(const cJSON *o, const char *const *known)
{
    const cJSON *f;
    cJSON_ArrayForEach(f, o)
    {
        bool ok = false;
        for (const char *const *k = known; *k && !ok; k++)
            ok = strcmp(*k, f->string) == 0;
        if (!ok) return f->string;
    }
    return NULL;
}

/* The request body as a JSON object (or array when arrays are allowed);
 * NULL after answering 400. The caller deletes it. */
cJSON *mqr__admin_body(mqr_actx_t *x, bool allow_array, const char *const *known)
{
    if (x->req->body_len == 0) {
        mqr__admin_error(x->res, 400, "malformed_json", "a JSON body is required");
        return NULL;
    }
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(x->req->body, x->req->body_len, &end, 0);
    if (!j) {
        size_t at = end && end >= x->req->body ? (size_t)(end - x->req->body) : 0;
        mqr__admin_error(x->res, 400, "malformed_json",
                         "the body is not valid JSON (near byte %zu)", at);
        return NULL;
    }
    if (!cJSON_IsObject(j) && !(allow_array && cJSON_IsArray(j))) {
        cJSON_Delete(j);
        mqr__admin_error(x->res, 400, "bad_request", "the body must be a JSON object");
        return NULL;
    }
    const char *unknown = cJSON_IsObject(j) ? mqr__admin_unknown_key(j, known) : NULL;
    if (unknown) { /* a misspelt field would silently be a default */
        char list[256] = "";
        for (const char *const *k = known; *k; k++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s",
                     k == known ? "" : ", ", *k);
        mqr__admin_error(x->res, 400, "unknown_field", "unknown field '%.100s' (known: %s)",
                         unknown, list);
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

/* Payload bytes as JSON: a string when valid UTF-8 without NULs, else
 * base64 with "encoding": "base64". */
const char *mqr__admin_jstr(const cJSON *o, const char *k, bool *bad)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!v || cJSON_IsNull(v)) return NULL;
    if (!cJSON_IsString(v)) {
        *bad = true;
        return NULL;
    }
    return v->valuestring;
}

int mqr__admin_jint(const cJSON *o, const char *k, int dflt, int lo, int hi, bool *bad)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!v) return dflt;
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    if (!cJSON_IsNumber(v) || v->valuedouble < lo || v->valuedouble > hi ||
        v->valuedouble != (double)(int)v->valuedouble) {
        *bad = true;
        return dflt;
    }
    return v->valueint;
}

/* ---- the table ---- */

typedef struct {
    int method;
    const char *pattern; /* {x}: one path segment; {x+}: the rest of the path */
    mqr_admin_handler_fn fn;
    bool open;   /* no token needed */
    bool tenant; /* a tenant's token may call it */
} route_t;

static const route_t routes[] = {
    {HTTP_GET, "/health", mqr__admin_h_health, true, false},
    {HTTP_GET, "/metrics", mqr__admin_h_metrics, false, false},
    {HTTP_GET, "/api/v1", mqr__admin_h_index, false, true},
    {HTTP_GET, "/api/v1/stats", mqr__admin_h_stats, false, false},
    {HTTP_POST, "/api/v1/publish", mqr__admin_h_publish, false, true},
    {HTTP_POST, "/api/v1/publish/batch", mqr__admin_h_publish_batch, false, true},
    {HTTP_GET, "/api/v1/sessions", mqr__admin_h_sessions_list, false, false},
    {HTTP_POST, "/api/v1/sessions", mqr__admin_h_session_add, false, false},
    {HTTP_GET, "/api/v1/sessions/{name}", mqr__admin_h_session_get, false, false},
    {HTTP_DELETE, "/api/v1/sessions/{name}", mqr__admin_h_session_delete, false, false},
    {HTTP_GET, "/api/v1/queues", mqr__admin_h_queues_list, false, false},
    {HTTP_GET, "/api/v1/sinks", mqr__admin_h_sinks_list, false, false},
    {HTTP_GET, "/api/v1/queues/{name}", mqr__admin_h_queue_get, false, false},
    {HTTP_GET, "/api/v1/queues/{name}/dlq", mqr__admin_h_queue_dlq, false, false},
    {HTTP_POST, "/api/v1/queues/{name}/redrive", mqr__admin_h_queue_redrive, false, false},
    {HTTP_GET, "/api/v1/rules", mqr__admin_h_rules, false, false},
    {HTTP_GET, "/api/v1/rules/routes", mqr__admin_h_routes, false, false},
    {HTTP_POST, "/api/v1/rules/reload", mqr__admin_h_reload, false, false},
    {HTTP_GET, "/api/v1/retained", mqr__admin_h_retained_list, false, false},
    {HTTP_GET, "/api/v1/retained/{topic+}", mqr__admin_h_retained_get, false, false},
    {HTTP_PUT, "/api/v1/retained/{topic+}", mqr__admin_h_retained_put, false, false},
    {HTTP_DELETE, "/api/v1/retained/{topic+}", mqr__admin_h_retained_delete, false, false},
    {HTTP_GET, "/api/v1/devices", mqr__admin_h_devices_list, false, true},
    {HTTP_POST, "/api/v1/devices", mqr__admin_h_device_register, false, true},
    {HTTP_GET, "/api/v1/devices/{id+}", mqr__admin_h_device_get, false, true},
    {HTTP_PATCH, "/api/v1/devices/{id+}", mqr__admin_h_device_update, false, true},
    {HTTP_DELETE, "/api/v1/devices/{id+}", mqr__admin_h_device_delete, false, true},
    {HTTP_GET, "/api/v1/topics", mqr__admin_h_topics_list, false, true},
    {HTTP_GET, "/api/v1/topics/info", mqr__admin_h_topic_info, false, true},
    {HTTP_GET, "/api/v1/topics/validate", mqr__admin_h_topic_validate, false, true},
    {HTTP_POST, "/api/v1/topics/validate", mqr__admin_h_topic_validate, false, true},
};

/* Does path match pattern? *arg gets the {x} part (malloc'd) if any. */
static bool match(const char *pattern, const char *path, char **arg)
{
    *arg = NULL;
    const char *p = pattern, *s = path;
    while (*p) {
        if (*p == '{') {
            const char *close = strchr(p, '}');
            bool rest = close[-1] == '+';
            const char *end = rest ? s + strlen(s) : s + strcspn(s, "/");
            if (end == s) {
                free(*arg);
                *arg = NULL;
                return false;
            }
            free(*arg);
            *arg = strndup(s, (size_t)(end - s));
            s = end;
            p = close + 1;
            continue;
        }
        if (*p != *s) {
            free(*arg);
            *arg = NULL;
            return false;
        }
        p++;
        s++;
    }
    if (*s) {
        free(*arg);
        *arg = NULL;
        return false;
    }
    return true;
}

void mqr__admin_route(mqr_admin_t *a, const mqr_areq_t *req, mqr_ares_t *res)
{
    if (!mqr__admin_guard(a, req, res)) return;
    if (res->preflight) { /* a configured origin asks before calling: CORS headers only */
        res->status = 204;
        return;
    }
    const route_t *hit = NULL;
    char *arg = NULL;
    bool path_known = false;
    char allow[64] = "";
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        char *v = NULL;
        if (!match(routes[i].pattern, req->path, &v)) continue;
        path_known = true;
        if (routes[i].method == req->method && !hit) {
            hit = &routes[i];
            arg = v;
            continue;
        }
        free(v);
        if (strlen(allow) + 10 < sizeof allow) {
            if (allow[0]) strcat(allow, ", ");
            strcat(allow, http_method_str(routes[i].method));
        }
    }
    if (!hit) {
        if (path_known)
            mqr__admin_error(res, 405, "method_not_allowed",
                             "%s is not allowed on %s (allowed: %s)", http_method_str(req->method),
                             req->path, allow);
        else
            mqr__admin_error(res, 404, "not_found", "no endpoint %s", req->path);
        return;
    }
    const char *tenant = NULL;
    if (!hit->open) {
        int au = mqr__admin_auth_check(a, req->authorization, &tenant);
        if (au) {
            free(arg);
            mqr__admin_error(res, 401, au == 1 ? "unauthorized" : "invalid_token", "%s",
                             au == 1 ? "a bearer token is required (Authorization: Bearer ...)"
                                     : "the bearer token is not valid");
            res->extra_headers = au == 1 ? "WWW-Authenticate: Bearer realm=\"mqrouter\"\r\n"
                                         : "WWW-Authenticate: Bearer realm=\"mqrouter\", "
                                           "error=\"invalid_token\"\r\n";
            return;
        }
        if (tenant && !hit->tenant) {
            free(arg);
            mqr__admin_error(res, 403, "forbidden",
                             "a token of tenant '%s' may not call %s %s (engine-wide)", tenant,
                             http_method_str(req->method), req->path);
            return;
        }
    }
    mqr_actx_t x = {.a = a, .e = a->e, .req = req, .res = res, .arg = arg, .tenant = tenant};
    hit->fn(&x);
    free(arg);
}

/* GET /api/v1: every endpoint, as docs/openapi.yaml spells its paths */
void mqr__admin_h_index(mqr_actx_t *x)
{
    cJSON *o = mqr__admin_ok(x, 200);
    cJSON_AddStringToObject(o, "version", MQR_VERSION_STRING);
    cJSON *list = cJSON_AddArrayToObject(o, "endpoints");
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        char path[128];
        const char *p = routes[i].pattern;
        size_t n = 0;
        for (; *p && n + 1 < sizeof path; p++)
            if (*p != '+') path[n++] = *p; /* {topic+} is {topic} there */
        path[n] = '\0';
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "method", http_method_str(routes[i].method));
        cJSON_AddStringToObject(e, "path", path);
        cJSON_AddItemToArray(list, e);
    }
}

void mqr__admin_foreach_route(void (*fn)(void *arg, const char *method, const char *pattern),
                              void *arg)
{
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        fn(arg, http_method_str(routes[i].method), routes[i].pattern);
}
