/*
 * routes.c — the admin API's endpoints: which method and path run which
 * handler, authentication, pagination, JSON in and out, and the mapping of
 * engine errors to HTTP statuses.
 *
 * Every handler runs on the loop thread and answers before returning; none
 * waits on the network or the disk (a session added here connects in the
 * background; its state is read with GET). Lua-only knowledge comes through
 * e->admin_hooks (admin.h). The device and topic registries get their
 * endpoints in the table below (/api/v1/devices, /api/v1/topics) when they
 * land; docs/openapi.yaml lists exactly what the table holds, which
 * tests/integration/test_admin_openapi.py checks.
 */
#include "admin_int.h"

#include "listener/listener_int.h"
#include "queue.h"
#include "topic.h"
#include "upstream.h"
#include "utf8.h"

#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    mqr_admin_t *a;
    mqr_engine_t *e;
    const mqr_areq_t *req;
    mqr_ares_t *res;
    const char *arg; /* the {name} or {topic} of the path, decoded */
} actx_t;

typedef void (*handler_fn)(actx_t *x);

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
static void engine_error(actx_t *x, int rc, const char *what)
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

static cJSON *ok_json(actx_t *x, int status)
{
    x->res->status = status;
    x->res->json = cJSON_CreateObject();
    return x->res->json;
}

static void num(cJSON *o, const char *k, double v)
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
static int qparam(const char *q, const char *key, char *out, size_t outlen)
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
static bool page(actx_t *x, size_t *offset, size_t *limit)
{
    *offset = 0;
    *limit = PAGE_DEFAULT;
    static const char *const keys[2] = {"offset", "limit"};
    for (int k = 0; k < 2; k++) {
        char v[32];
        int f = qparam(x->req->query, keys[k], v, sizeof v);
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
static cJSON *page_json(actx_t *x, size_t total, size_t offset, size_t limit)
{
    cJSON *o = ok_json(x, 200);
    cJSON *items = cJSON_AddArrayToObject(o, "items");
    num(o, "total", (double)total);
    num(o, "offset", (double)offset);
    num(o, "limit", (double)limit);
    return items;
}

/* The request body as a JSON object (or array when arrays are allowed);
 * NULL after answering 400. The caller deletes it. */
static cJSON *body_json(actx_t *x, bool allow_array)
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
    return j;
}

/* Payload bytes as JSON: a string when valid UTF-8 without NULs, else
 * base64 with "encoding": "base64". */
static void add_payload(cJSON *o, const void *p, size_t n)
{
    const unsigned char *s = p;
    bool text = true;
    for (size_t i = 0; i < n && text; i++)
        if (s[i] == 0) text = false;
    if (text && mqr__utf8_valid((const char *)s, n)) {
        char *t = strndup((const char *)s, n);
        if (t) cJSON_AddStringToObject(o, "payload", t);
        free(t);
        cJSON_AddStringToObject(o, "encoding", "utf-8");
        return;
    }
    char *b = malloc(4 * ((n + 2) / 3) + 1);
    if (!b) return;
    EVP_EncodeBlock((unsigned char *)b, s, (int)n);
    cJSON_AddStringToObject(o, "payload", b);
    cJSON_AddStringToObject(o, "encoding", "base64");
    free(b);
}

/* The message fields of a publish or retained set: payload (a string taken
 * as is, base64 with encoding, or any other JSON value serialised), qos,
 * retain. Returns NULL (after setting why) when invalid; else the payload
 * buffer to free, with *len. */
static char *read_payload(const cJSON *m, size_t *len, const char **why)
{
    const cJSON *pl = cJSON_GetObjectItemCaseSensitive(m, "payload");
    const cJSON *enc = cJSON_GetObjectItemCaseSensitive(m, "encoding");
    if (enc && !cJSON_IsString(enc)) {
        *why = "encoding must be \"utf-8\" or \"base64\"";
        return NULL;
    }
    bool b64 = enc && strcmp(enc->valuestring, "base64") == 0;
    if (enc && !b64 && strcmp(enc->valuestring, "utf-8") != 0) {
        *why = "encoding must be \"utf-8\" or \"base64\"";
        return NULL;
    }
    if (!pl || cJSON_IsNull(pl)) {
        *len = 0;
        return strdup("");
    }
    if (cJSON_IsString(pl)) {
        size_t n = strlen(pl->valuestring);
        if (!b64) {
            *len = n;
            return strdup(pl->valuestring);
        }
        if (n % 4) {
            *why = "payload is not valid base64";
            return NULL;
        }
        unsigned char *out = malloc(n / 4 * 3 + 1);
        if (!out) return NULL;
        int got = n ? EVP_DecodeBlock(out, (const unsigned char *)pl->valuestring, (int)n) : 0;
        if (got < 0) {
            free(out);
            *why = "payload is not valid base64";
            return NULL;
        }
        if (n >= 1 && pl->valuestring[n - 1] == '=') got--;
        if (n >= 2 && pl->valuestring[n - 2] == '=') got--;
        *len = (size_t)got;
        return (char *)out;
    }
    if (b64) {
        *why = "a base64 payload must be a string";
        return NULL;
    }
    char *s = cJSON_PrintUnformatted(pl); /* a JSON document as the payload */
    if (s) *len = strlen(s);
    return s;
}

static bool read_qos_retain(const cJSON *m, int *qos, bool *retain, const char **why)
{
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(m, "qos");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(m, "retain");
    *qos = 0;
    *retain = false;
    if (q) {
        if (!cJSON_IsNumber(q) || q->valuedouble != (double)(int)q->valuedouble ||
            q->valueint < 0 || q->valueint > 2) {
            *why = "qos must be 0, 1 or 2";
            return false;
        }
        *qos = q->valueint;
    }
    if (r) {
        if (!cJSON_IsBool(r)) {
            *why = "retain must be true or false";
            return false;
        }
        *retain = cJSON_IsTrue(r);
    }
    return true;
}

/* Publishes one message object; 0 or an error with *why / the engine code. */
static int publish_one(mqr_engine_t *e, const cJSON *m, const char **why)
{
    *why = NULL;
    if (!cJSON_IsObject(m)) {
        *why = "a message must be a JSON object";
        return MQR_EINVAL;
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(m, "topic");
    if (!cJSON_IsString(t)) {
        *why = "topic (a string) is required";
        return MQR_EINVAL;
    }
    int qos;
    bool retain;
    if (!read_qos_retain(m, &qos, &retain, why)) return MQR_EINVAL;
    size_t plen = 0;
    char *payload = read_payload(m, &plen, why);
    if (!payload) return *why ? MQR_EINVAL : MQR_ENOMEM;
    size_t tlen = strlen(t->valuestring);
    int rc = mqr__topic_name_check(t->valuestring, tlen, why);
    if (rc == 0) {
        mqr_msg_init_t in = {
            .topic = t->valuestring,
            .topic_len = tlen,
            .payload = payload,
            .payload_len = plen,
            .qos = qos,
            .retain = retain,
            .origin = MQR_ORIGIN_C,
            .origin_name = "admin",
        };
        rc = mqr__engine_publish_data(e, &in);
    }
    free(payload);
    return rc;
}

/* ---- health and stats ---- */

bool mqr__admin_healthy(mqr_admin_t *a, cJSON *reasons)
{
    mqr_engine_t *e = a->e;
    bool ok = true;
    char buf[256];
    if (e->stopping) {
        cJSON_AddItemToArray(reasons, cJSON_CreateString("engine stopping"));
        ok = false;
    }
    mqr_queues_health_t qh;
    int qs = mqr__queues_health(e, &qh);
    if (qs == MQR_QHEALTH_FULL || qs == MQR_QHEALTH_STOPPED) {
        snprintf(buf, sizeof buf, "queues %s", mqr__queues_status_name(qs));
        cJSON_AddItemToArray(reasons, cJSON_CreateString(buf));
        ok = false;
    }
    for (mqr_upstream_t *u = mqr__upstream_first(e); u; u = mqr__upstream_next(u)) {
        if (mqr__upstream_state(u) != MQR_UPSTREAM_FAILED) continue;
        snprintf(buf, sizeof buf, "session '%s' failed", mqr__upstream_name(u));
        cJSON_AddItemToArray(reasons, cJSON_CreateString(buf));
        ok = false;
    }
    const mqr_admin_hooks_t *h = e->admin_hooks;
    if (h && h->rules_info) {
        mqr_admin_rules_info_t ri = {.last_error = ""};
        h->rules_info(h->ctx, &ri);
        if (!ri.loaded) {
            cJSON_AddItemToArray(reasons, cJSON_CreateString("no rules loaded"));
            ok = false;
        }
    }
    return ok;
}

static void h_health(actx_t *x)
{
    cJSON *o = ok_json(x, 200);
    cJSON *reasons = cJSON_CreateArray();
    bool ok = mqr__admin_healthy(x->a, reasons);
    cJSON_AddStringToObject(o, "status", ok ? "ok" : "unhealthy");
    cJSON_AddItemToObject(o, "reasons", reasons);
    cJSON_AddStringToObject(o, "version", MQR_VERSION_STRING);
    num(o, "uptime_s", (double)(mqr__now_ms() - x->a->start_ms) / 1000.0);
    if (!ok) x->res->status = 503;
}

static void h_metrics(actx_t *x)
{
    x->res->status = 200;
    x->res->content_type = "text/plain; version=0.0.4; charset=utf-8";
    mqr__admin_metrics(x->a, &x->res->text);
}

typedef struct {
    uint64_t clients, conns, msgs_in, msgs_out, bytes_in, bytes_out, subs;
} lsum_t;

static void listener_sum(mqr_engine_t *e, lsum_t *s)
{
    memset(s, 0, sizeof *s);
    for (const mqr_listener_t *l = e->listeners; l; l = l->e_next) {
        if (l->closing) continue;
        s->clients += l->stats.clients_current;
        s->conns += l->stats.connections_total;
        s->msgs_in += l->stats.msgs_in;
        s->msgs_out += l->stats.msgs_out;
        s->bytes_in += l->stats.bytes_in;
        s->bytes_out += l->stats.bytes_out;
    }
}

static void sample_now(mqr_admin_t *a, struct mqr_arate *r)
{
    lsum_t s;
    listener_sum(a->e, &s);
    mqr_upstream_manager_stats_t ms;
    mqr__upstream_manager_stats(a->e, &ms);
    r->at_ms = uv_now(a->e->loop);
    r->published = a->e->stats.published;
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

static void h_stats(actx_t *x)
{
    mqr_engine_t *e = x->e;
    cJSON *o = ok_json(x, 200);
    num(o, "uptime_s", (double)(mqr__now_ms() - x->a->start_ms) / 1000.0);
    lsum_t ls;
    listener_sum(e, &ls);
    mqr_upstream_manager_stats_t ms;
    mqr__upstream_manager_stats(e, &ms);

    cJSON *ss = cJSON_AddObjectToObject(o, "sessions");
    num(ss, "listener_clients", (double)ls.clients);
    num(ss, "upstream_sessions", ms.sessions);
    num(ss, "upstream_connected", ms.connected);
    num(ss, "active", (double)(ls.clients + ms.connected));

    cJSON *m = cJSON_AddObjectToObject(o, "messages");
    num(m, "published", (double)e->stats.published);
    num(m, "refused", (double)e->stats.refused);
    num(m, "listener_received", (double)ls.msgs_in);
    num(m, "listener_sent", (double)ls.msgs_out);
    num(m, "upstream_received", (double)ms.messages_received);
    num(m, "upstream_sent", (double)ms.messages_sent);
    num(m, "retained", (double)e->retain.count);

    cJSON *b = cJSON_AddObjectToObject(o, "bytes");
    num(b, "listener_received", (double)ls.bytes_in);
    num(b, "listener_sent", (double)ls.bytes_out);
    num(b, "upstream_received", (double)ms.bytes_received);
    num(b, "upstream_sent", (double)ms.bytes_sent);

    cJSON *q = cJSON_AddObjectToObject(o, "queues");
    mqr_queues_health_t qh;
    int qs = mqr__queues_health(e, &qh);
    if (qs >= 0) {
        num(q, "count", (double)qh.queues);
        num(q, "depth", (double)qh.totals.depth);
        num(q, "in_flight", (double)qh.totals.in_flight);
        num(q, "dead", (double)qh.totals.dead);
        num(q, "bytes", (double)qh.bytes);
        cJSON_AddStringToObject(q, "status", mqr__queues_status_name(qs));
    } else {
        num(q, "count", 0);
        num(q, "depth", 0);
        num(q, "in_flight", 0);
        num(q, "dead", 0);
        num(q, "bytes", 0);
        cJSON_AddStringToObject(q, "status", "ok");
    }

    cJSON *r = cJSON_AddObjectToObject(o, "rules");
    const mqr_admin_hooks_t *h = e->admin_hooks;
    mqr_admin_rules_info_t ri = {.last_error = ""};
    if (h && h->rules_info) h->rules_info(h->ctx, &ri);
    num(r, "handler_errors", (double)ri.handler_errors);
    num(r, "budget_errors", (double)ri.budget_errors);
    num(r, "reloads", (double)ri.reloads);
    num(r, "reload_failures", (double)ri.reload_failures);

    struct mqr_arate now, base;
    sample_now(x->a, &now);
    base = x->a->rate_last;
    if (now.at_ms - base.at_ms < 1000 && x->a->rate_prev.at_ms) base = x->a->rate_prev;
    double dt = (double)(now.at_ms - base.at_ms) / 1000.0;
    cJSON *rt = cJSON_AddObjectToObject(o, "rates");
    num(rt, "interval_s", dt);
#define RATE(k, f) num(rt, k, dt > 0 ? (double)(now.f - base.f) / dt : 0.0)
    RATE("published_per_s", published);
    RATE("received_per_s", msgs_in);
    RATE("sent_per_s", msgs_out);
    RATE("bytes_received_per_s", bytes_in);
    RATE("bytes_sent_per_s", bytes_out);
#undef RATE
}

/* ---- publish ---- */

static void h_publish(actx_t *x)
{
    cJSON *j = body_json(x, false);
    if (!j) return;
    const char *why = NULL;
    int rc = publish_one(x->e, j, &why);
    cJSON_Delete(j);
    if (rc < 0) {
        if (why)
            mqr__admin_error(x->res, 400, rc == MQR_EINVAL ? "bad_request" : mqr_err_name(rc), "%s",
                             why);
        else
            engine_error(x, rc, "publish");
        return;
    }
    num(ok_json(x, 200), "published", 1);
}

static void h_publish_batch(actx_t *x)
{
    cJSON *j = body_json(x, true);
    if (!j) return;
    const cJSON *msgs = cJSON_IsArray(j) ? j : cJSON_GetObjectItemCaseSensitive(j, "messages");
    if (!cJSON_IsArray(msgs)) {
        cJSON_Delete(j);
        mqr__admin_error(x->res, 400, "bad_request", "messages (an array) is required");
        return;
    }
    if (cJSON_GetArraySize(msgs) > 10000) {
        cJSON_Delete(j);
        mqr__admin_error(x->res, 413, "too_large", "at most 10000 messages per batch");
        return;
    }
    cJSON *o = ok_json(x, 200);
    cJSON *errs = cJSON_CreateArray();
    unsigned ok = 0, failed = 0, i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs)
    {
        const char *why = NULL;
        int rc = publish_one(x->e, m, &why);
        if (rc == 0) {
            ok++;
        } else {
            failed++;
            cJSON *er = cJSON_CreateObject();
            num(er, "index", i);
            cJSON_AddStringToObject(er, "code", mqr_err_name(rc));
            cJSON_AddStringToObject(er, "message", why ? why : mqr_strerror(rc));
            cJSON_AddItemToArray(errs, er);
        }
        i++;
    }
    cJSON_Delete(j);
    num(o, "published", ok);
    num(o, "failed", failed);
    cJSON_AddItemToObject(o, "errors", errs);
}

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
    num(o, "qos", qos);
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
    cJSON_AddStringToObject(o, "managed_by",
                            api_session(a, mqr__upstream_name(u), NULL) ? "api" : "rules");
    num(o, "messages_sent", (double)st.messages_sent);
    num(o, "messages_received", (double)st.messages_received);
    if (!full) return o;
    cJSON_AddStringToObject(o, "last_error", st.last_error ? st.last_error : "");
    cJSON_AddBoolToObject(o, "persistent", st.persistent);
    num(o, "connected_since_ms", (double)st.connected_since_ms);
    num(o, "last_message_at_ms", (double)st.last_message_at_ms);
    num(o, "connects", (double)st.connects);
    num(o, "reconnects", (double)st.reconnects);
    num(o, "connect_failures", (double)st.connect_failures);
    num(o, "bytes_sent", (double)st.bytes_sent);
    num(o, "bytes_received", (double)st.bytes_received);
    num(o, "messages_refused", (double)st.messages_refused);
    num(o, "messages_dropped", (double)st.messages_dropped);
    num(o, "publish_failed", (double)st.publish_failed);
    num(o, "delivered", (double)st.delivered);
    num(o, "inflight", (double)st.inflight);
    num(o, "buffered", (double)st.buffered);
    cJSON *subs = cJSON_AddArrayToObject(o, "subscriptions");
    mqr__upstream_foreach_sub(u, sub_item, subs);
    return o;
}

static void h_sessions_list(actx_t *x)
{
    size_t off, lim;
    if (!page(x, &off, &lim)) return;
    size_t total = 0;
    for (mqr_upstream_t *u = mqr__upstream_first(x->e); u; u = mqr__upstream_next(u))
        total++;
    cJSON *items = page_json(x, total, off, lim);
    size_t i = 0;
    for (mqr_upstream_t *u = mqr__upstream_first(x->e); u && i < off + lim;
         u = mqr__upstream_next(u), i++)
        if (i >= off) cJSON_AddItemToArray(items, session_json(x->a, u, false));
}

static void h_session_get(actx_t *x)
{
    mqr_upstream_t *u = mqr__upstream_find(x->e, x->arg);
    if (!u) {
        mqr__admin_error(x->res, 404, "not_found", "no session '%s'", x->arg);
        return;
    }
    x->res->status = 200;
    x->res->json = session_json(x->a, u, true);
}

static const char *jstr(const cJSON *o, const char *k, bool *bad)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!v || cJSON_IsNull(v)) return NULL;
    if (!cJSON_IsString(v)) {
        *bad = true;
        return NULL;
    }
    return v->valuestring;
}

static int jint(const cJSON *o, const char *k, int dflt, int lo, int hi, bool *bad)
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

static void h_session_add(actx_t *x)
{
    cJSON *j = body_json(x, false);
    if (!j) return;
    bool bad = false;
    mqr_upstream_config_t cfg = {0};
    cfg.name = jstr(j, "name", &bad);
    cfg.uri = jstr(j, "uri", &bad);
    cfg.client_id = jstr(j, "client_id", &bad);
    cfg.username = jstr(j, "username", &bad);
    cfg.password = jstr(j, "password", &bad);
    cfg.prefix = jstr(j, "prefix", &bad);
    cfg.keepalive_s = jint(j, "keepalive", 0, 0, 65535, &bad);
    cfg.clean_start = jint(j, "clean_start", 1, 0, 1, &bad);
    cfg.mqtt_version = jint(j, "mqtt_version", 4, 3, 5, &bad);
    cfg.max_reconnects = jint(j, "max_reconnects", 0, 0, 1000000, &bad);
    cfg.retry_initial_s = jint(j, "retry_initial", 0, 0, 3600, &bad);
    cfg.retry_max_s = jint(j, "retry_max", 0, 0, 3600, &bad);
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
        engine_error(x, MQR_ENOMEM, "session");
        return;
    }
    x->a->api_sessions = list;
    char *name = strdup(cfg.name);
    mqr_upstream_t *u = NULL;
    int rc = name ? mqr__upstream_new(x->e, &cfg, &u) : MQR_ENOMEM;
    if (rc < 0) {
        free(name);
        cJSON_Delete(j);
        engine_error(x, rc, "session");
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

static void h_session_delete(actx_t *x)
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

/* ---- queues ---- */

static cJSON *queue_json(mqr_queue_t *q, bool full)
{
    mqr_queue_stats_t st;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", mqr__queue_name(q));
    if (mqr__queue_stats(q, &st) < 0) return o;
    num(o, "depth", (double)st.depth);
    num(o, "ready", (double)st.ready);
    num(o, "delayed", (double)st.delayed);
    num(o, "in_flight", (double)st.in_flight);
    num(o, "dead", (double)st.dead);
    num(o, "consumers", (double)st.consumers);
    num(o, "bytes", (double)st.bytes);
    if (!full) return o;
    num(o, "pending_tx", (double)st.pending_tx);
    num(o, "published", (double)st.published);
    num(o, "delivered", (double)st.delivered);
    num(o, "acked", (double)st.acked);
    num(o, "nacked", (double)st.nacked);
    num(o, "rejected", (double)st.rejected);
    num(o, "redelivered", (double)st.redelivered);
    num(o, "expired", (double)st.expired);
    num(o, "dropped", (double)st.dropped);
    num(o, "dead_lettered", (double)st.dead_lettered);
    num(o, "refused_full", (double)st.refused_full);
    num(o, "refused_memory", (double)st.refused_memory);
    num(o, "uptime_ms", (double)st.uptime_ms);
    mqr_queue_dlq_stats_t d;
    if (mqr__queue_dlq_stats(q, &d) == 0) {
        cJSON *dj = cJSON_AddObjectToObject(o, "dlq");
        num(dj, "depth", (double)d.depth);
        num(dj, "total", (double)d.total);
        num(dj, "redriven", (double)d.redriven);
        num(dj, "purged", (double)d.purged);
        num(dj, "overflow", (double)d.overflow);
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

static void h_queues_list(actx_t *x)
{
    size_t off, lim;
    if (!page(x, &off, &lim)) return;
    qlist_t l = {0};
    if (mqr__queues_foreach(x->e, collect_queue, &l) > 0) {
        free(l.v);
        engine_error(x, MQR_ENOMEM, "queues");
        return;
    }
    if (l.n) qsort(l.v, l.n, sizeof *l.v, cmp_queue); /* a stable order for paging */
    cJSON *items = page_json(x, l.n, off, lim);
    for (size_t i = off; i < l.n && i < off + lim; i++)
        cJSON_AddItemToArray(items, queue_json(l.v[i], false));
    free(l.v);
}

static mqr_queue_t *find_queue(actx_t *x)
{
    mqr_queue_t *q = NULL;
    if (mqr__queue_find(x->e, x->arg, &q) < 0 || !q) {
        mqr__admin_error(x->res, 404, "not_found", "no queue '%s'", x->arg);
        return NULL;
    }
    return q;
}

static void h_queue_get(actx_t *x)
{
    mqr_queue_t *q = find_queue(x);
    if (!q) return;
    x->res->status = 200;
    x->res->json = queue_json(q, true);
}

static void h_queue_dlq(actx_t *x)
{
    mqr_queue_t *q = find_queue(x);
    if (!q) return;
    size_t off, lim;
    if (!page(x, &off, &lim)) return;
    mqr_queue_dlq_stats_t d;
    int rc = mqr__queue_dlq_stats(q, &d);
    if (rc < 0) {
        engine_error(x, rc, "dead letters");
        return;
    }
    mqr_queue_dead_t *v = calloc(lim, sizeof *v);
    if (!v) {
        engine_error(x, MQR_ENOMEM, "dead letters");
        return;
    }
    rc = mqr__queue_dlq_list(q, off, lim, v);
    if (rc < 0) {
        free(v);
        engine_error(x, rc, "dead letters");
        return;
    }
    cJSON *items = page_json(x, d.depth, off, lim);
    for (int i = 0; i < rc; i++) {
        cJSON *o = cJSON_CreateObject();
        num(o, "id", (double)v[i].id);
        cJSON_AddStringToObject(o, "topic", v[i].msg->topic);
        add_payload(o, v[i].msg->payload, v[i].msg->payload_len);
        cJSON_AddStringToObject(o, "reason", mqr__queue_reason_name(v[i].reason));
        num(o, "attempts", v[i].attempts);
        num(o, "priority", v[i].priority);
        num(o, "dead_at_ms", (double)v[i].dead_at_ms);
        cJSON_AddItemToArray(items, o);
    }
    free(v);
}

static void h_queue_redrive(actx_t *x)
{
    mqr_queue_t *q = find_queue(x);
    if (!q) return;
    size_t max = 0;
    if (x->req->body_len) {
        cJSON *j = body_json(x, false);
        if (!j) return;
        bool bad = false;
        int m = jint(j, "max", 0, 0, 1000000000, &bad);
        cJSON_Delete(j);
        if (bad) {
            mqr__admin_error(x->res, 400, "bad_request", "max must be an integer >= 0 (0 = all)");
            return;
        }
        max = (size_t)m;
    }
    int rc = mqr__queue_redrive(q, max);
    if (rc < 0) {
        engine_error(x, rc, "redrive");
        return;
    }
    num(ok_json(x, 200), "redriven", rc);
}

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
    num(o, "calls", (double)r->calls);
    num(o, "errors", (double)r->errors);
    num(o, "budget_errors", (double)r->budget_errors);
    num(o, "dead_lettered", (double)r->dead_lettered);
    if (r->latency && r->latency->count)
        num(o, "mean_latency_ms", (double)r->latency->sum_ns / 1e6 / (double)r->latency->count);
    cJSON_AddItemToArray(c->items, o);
}

static void h_rules(actx_t *x)
{
    const mqr_admin_hooks_t *h = x->e->admin_hooks;
    mqr_admin_rules_info_t ri = {.last_error = ""};
    if (h && h->rules_info) h->rules_info(h->ctx, &ri);
    cJSON *o = ok_json(x, 200);
    if (ri.path)
        cJSON_AddStringToObject(o, "script", ri.path);
    else
        cJSON_AddNullToObject(o, "script");
    cJSON_AddBoolToObject(o, "loaded", ri.loaded);
    num(o, "reloads", (double)ri.reloads);
    num(o, "reload_failures", (double)ri.reload_failures);
    num(o, "handler_errors", (double)ri.handler_errors);
    num(o, "budget_errors", (double)ri.budget_errors);
    cJSON_AddStringToObject(o, "last_error", ri.last_error ? ri.last_error : "");
    rcollect_t c = {0};
    if (h && h->foreach_route) h->foreach_route(h->ctx, route_item, &c);
    num(o, "routes", (double)c.i);
}

static void h_routes(actx_t *x)
{
    size_t off, lim;
    if (!page(x, &off, &lim)) return;
    const mqr_admin_hooks_t *h = x->e->admin_hooks;
    rcollect_t c = {.off = off, .lim = lim};
    if (h && h->foreach_route) h->foreach_route(h->ctx, route_item, &c); /* count */
    size_t total = c.i;
    c.items = page_json(x, total, off, lim);
    c.i = 0;
    if (h && h->foreach_route) h->foreach_route(h->ctx, route_item, &c);
}

static void h_reload(actx_t *x)
{
    const mqr_admin_hooks_t *h = x->e->admin_hooks;
    if (!h || !h->reload) {
        mqr__admin_error(x->res, 409, "no_script", "no rules script is loaded");
        return;
    }
    char *err = NULL;
    int rc = h->reload(h->ctx, &err);
    if (rc < 0) {
        mqr__admin_error(x->res, rc == MQR_ENOENT ? 409 : 422, "reload_failed", "%s",
                         err ? err : mqr_strerror(rc));
        free(err);
        return;
    }
    free(err);
    cJSON_AddBoolToObject(ok_json(x, 200), "reloaded", 1);
}

/* ---- retained ---- */

typedef struct {
    cJSON *items;
    size_t i, off, lim;
} retcollect_t;

static cJSON *retained_json(const mqr_msg_t *m)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "topic", m->topic);
    add_payload(o, m->payload, m->payload_len);
    num(o, "qos", m->qos);
    num(o, "created_ms", (double)m->created_ms);
    return o;
}

static int retained_item(void *arg, mqr_msg_t *m)
{
    retcollect_t *c = arg;
    size_t i = c->i++;
    if (c->items && i >= c->off && i < c->off + c->lim)
        cJSON_AddItemToArray(c->items, retained_json(m));
    return 0;
}

static void h_retained_list(actx_t *x)
{
    size_t off, lim;
    if (!page(x, &off, &lim)) return;
    char filter[1024];
    int f = qparam(x->req->query, "filter", filter, sizeof filter);
    if (f == 0) strcpy(filter, "#");
    if (f < 0 || mqr__topic_filter_validate(filter, strlen(filter)) < 0) {
        mqr__admin_error(x->res, 400, "bad_request", "filter is not a valid topic filter");
        return;
    }
    retcollect_t c = {.off = off, .lim = lim};
    mqr__retain_match(&x->e->retain, filter, strlen(filter), retained_item, &c);
    size_t total = c.i;
    c.items = page_json(x, total, off, lim);
    c.i = 0;
    mqr__retain_match(&x->e->retain, filter, strlen(filter), retained_item, &c);
}

static bool topic_arg(actx_t *x)
{
    const char *why = NULL;
    if (mqr__topic_name_check(x->arg, strlen(x->arg), &why) < 0) {
        mqr__admin_error(x->res, 400, "bad_topic", "'%s' is not a topic name%s%s", x->arg,
                         why ? ": " : "", why ? why : "");
        return false;
    }
    return true;
}

static void h_retained_get(actx_t *x)
{
    if (!topic_arg(x)) return;
    mqr_msg_t *m = mqr__retain_get(&x->e->retain, x->arg, strlen(x->arg));
    if (!m) {
        mqr__admin_error(x->res, 404, "not_found", "no retained message on '%s'", x->arg);
        return;
    }
    x->res->status = 200;
    x->res->json = retained_json(m);
}

static void h_retained_put(actx_t *x)
{
    if (!topic_arg(x)) return;
    cJSON *j = body_json(x, false);
    if (!j) return;
    const char *why = NULL;
    int qos;
    bool retain;
    size_t plen = 0;
    char *payload = NULL;
    if (read_qos_retain(j, &qos, &retain, &why)) payload = read_payload(j, &plen, &why);
    cJSON_Delete(j);
    if (!payload) {
        mqr__admin_error(x->res, why ? 400 : 500, why ? "bad_request" : "no_memory", "%s",
                         why ? why : "out of memory");
        return;
    }
    if (plen == 0) {
        free(payload);
        mqr__admin_error(x->res, 400, "bad_request",
                         "an empty payload removes a retained message: use DELETE");
        return;
    }
    mqr_msg_init_t in = {
        .topic = x->arg,
        .topic_len = strlen(x->arg),
        .payload = payload,
        .payload_len = plen,
        .qos = qos,
        .retain = true,
        .origin = MQR_ORIGIN_C,
        .origin_name = "admin",
    };
    mqr_msg_t *m = mqr__msg_new(&in);
    free(payload);
    int rc = m ? mqr__retain_set(&x->e->retain, m) : MQR_ENOMEM;
    if (rc < 0) {
        if (m) mqr_msg_unref(m);
        engine_error(x, rc, "retain");
        return;
    }
    x->res->status = 200;
    x->res->json = retained_json(m);
    mqr_msg_unref(m);
}

static void h_retained_delete(actx_t *x)
{
    if (!topic_arg(x)) return;
    if (!mqr__retain_get(&x->e->retain, x->arg, strlen(x->arg))) {
        mqr__admin_error(x->res, 404, "not_found", "no retained message on '%s'", x->arg);
        return;
    }
    int rc = mqr__retain_delete(&x->e->retain, x->arg, strlen(x->arg));
    if (rc < 0) {
        engine_error(x, rc, "retain");
        return;
    }
    x->res->status = 204;
}

/* ---- the table ---- */

static void h_index(actx_t *x);

typedef struct {
    int method;
    const char *pattern; /* {x}: one path segment; {x+}: the rest of the path */
    handler_fn fn;
    bool open; /* no token needed */
} route_t;

static const route_t routes[] = {
    {HTTP_GET, "/health", h_health, true},
    {HTTP_GET, "/metrics", h_metrics, false},
    {HTTP_GET, "/api/v1", h_index, false},
    {HTTP_GET, "/api/v1/stats", h_stats, false},
    {HTTP_POST, "/api/v1/publish", h_publish, false},
    {HTTP_POST, "/api/v1/publish/batch", h_publish_batch, false},
    {HTTP_GET, "/api/v1/sessions", h_sessions_list, false},
    {HTTP_POST, "/api/v1/sessions", h_session_add, false},
    {HTTP_GET, "/api/v1/sessions/{name}", h_session_get, false},
    {HTTP_DELETE, "/api/v1/sessions/{name}", h_session_delete, false},
    {HTTP_GET, "/api/v1/queues", h_queues_list, false},
    {HTTP_GET, "/api/v1/queues/{name}", h_queue_get, false},
    {HTTP_GET, "/api/v1/queues/{name}/dlq", h_queue_dlq, false},
    {HTTP_POST, "/api/v1/queues/{name}/redrive", h_queue_redrive, false},
    {HTTP_GET, "/api/v1/rules", h_rules, false},
    {HTTP_GET, "/api/v1/rules/routes", h_routes, false},
    {HTTP_POST, "/api/v1/rules/reload", h_reload, false},
    {HTTP_GET, "/api/v1/retained", h_retained_list, false},
    {HTTP_GET, "/api/v1/retained/{topic+}", h_retained_get, false},
    {HTTP_PUT, "/api/v1/retained/{topic+}", h_retained_put, false},
    {HTTP_DELETE, "/api/v1/retained/{topic+}", h_retained_delete, false},
    /* the device and topic registries (core/registry*.c) add
     * /api/v1/devices... and /api/v1/topics... here */
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
    if (!hit->open) {
        int au = mqr__admin_auth_check(a, req->authorization);
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
    }
    actx_t x = {.a = a, .e = a->e, .req = req, .res = res, .arg = arg};
    hit->fn(&x);
    free(arg);
}

/* GET /api/v1: every endpoint, as docs/openapi.yaml spells its paths */
static void h_index(actx_t *x)
{
    cJSON *o = ok_json(x, 200);
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
