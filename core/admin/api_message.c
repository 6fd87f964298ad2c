/*
 * api_message.c — endpoints that take or show messages: publish (one, or a
 * batch with published/failed counts) and the retained messages (list,
 * get, set, delete), and the payload conventions they share: a string
 * payload as is or base64, any other JSON value as its JSON text; shown as
 * UTF-8 text when it is, else base64. A tenant's token publishes under
 * "<tenant>/" (its topics are relative, as its clients' are).
 */
#include "admin_int.h"
#include "engine.h"

#include "topic.h"
#include "utf8.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mqr__admin_add_payload(cJSON *o, const void *p, size_t n)
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
    if (!pl || cJSON_IsNull(pl)) { /* "" is the caller's explicit choice */
        *why = "payload is required (\"\" for an empty one)";
        return NULL;
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

static const char *const message_fields[] = {"topic", "payload", "encoding", "qos", "retain", NULL};
static const char *const retained_fields[] = {"payload", "encoding", "qos", NULL};
static const char *const batch_fields[] = {"messages", NULL};

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

/* Publishes one message object; 0 or an error with *why (static text or
 * buf) / the engine code.
 * tenant (NULL: none): the topic is the tenant's, published as
 * "<tenant>/<topic>" as its clients' are (docs/registry.md). */
static int publish_one(mqr_engine_t *e, const char *tenant, const cJSON *m, const char **why,
                       char *buf, size_t bufn)
{
    *why = NULL;
    if (!cJSON_IsObject(m)) {
        *why = "a message must be a JSON object";
        return MQR_EINVAL;
    }
    const char *unknown = mqr__admin_unknown_key(m, message_fields);
    if (unknown) {
        snprintf(buf, bufn, "unknown field '%.80s' (known: topic, payload, encoding, qos, retain)",
                 unknown);
        *why = buf;
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
    size_t tlen = strlen(t->valuestring);
    int rc = mqr__topic_name_check(t->valuestring, tlen, why);
    if (rc < 0) return rc;
    char *full = NULL;
    const char *topic = t->valuestring;
    if (tenant) {
        if (asprintf(&full, "%s/%s", tenant, t->valuestring) < 0) return MQR_ENOMEM;
        topic = full;
        tlen = strlen(full);
        if ((rc = mqr__topic_name_check(topic, tlen, why)) < 0) { /* too long now */
            free(full);
            return rc;
        }
    }
    size_t plen = 0;
    char *payload = read_payload(m, &plen, why);
    if (!payload) {
        free(full);
        return *why ? MQR_EINVAL : MQR_ENOMEM;
    }
    mqr_msg_init_t in = {
        .topic = topic,
        .topic_len = tlen,
        .payload = payload,
        .payload_len = plen,
        .qos = qos,
        .retain = retain,
        .origin = MQR_ORIGIN_C,
        .origin_name = "admin",
    };
    rc = mqr__engine_publish_data(e, &in);
    free(payload);
    free(full);
    return rc;
}

/* ---- publish ---- */

void mqr__admin_h_publish(mqr_actx_t *x)
{
    cJSON *j = mqr__admin_body(x, false, message_fields);
    if (!j) return;
    const char *why = NULL;
    char buf[160];
    int rc = publish_one(x->e, x->tenant, j, &why, buf, sizeof buf);
    cJSON_Delete(j);
    if (rc < 0) {
        if (why)
            mqr__admin_error(x->res, 400, rc == MQR_EINVAL ? "bad_request" : mqr_err_name(rc), "%s",
                             why);
        else
            mqr__admin_engine_error(x, rc, "publish");
        return;
    }
    mqr__admin_num(mqr__admin_ok(x, 200), "published", 1);
}

void mqr__admin_h_publish_batch(mqr_actx_t *x)
{
    cJSON *j = mqr__admin_body(x, true, batch_fields);
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
    cJSON *o = mqr__admin_ok(x, 200);
    cJSON *errs = cJSON_CreateArray();
    unsigned ok = 0, failed = 0, i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs)
    {
        const char *why = NULL;
        char buf[160];
        int rc = publish_one(x->e, x->tenant, m, &why, buf, sizeof buf);
        if (rc == 0) {
            ok++;
        } else {
            failed++;
            cJSON *er = cJSON_CreateObject();
            mqr__admin_num(er, "index", i);
            cJSON_AddStringToObject(er, "code", mqr_err_name(rc));
            cJSON_AddStringToObject(er, "message", why ? why : mqr_strerror(rc));
            cJSON_AddItemToArray(errs, er);
        }
        i++;
    }
    cJSON_Delete(j);
    mqr__admin_num(o, "published", ok);
    mqr__admin_num(o, "failed", failed);
    cJSON_AddItemToObject(o, "errors", errs);
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
    mqr__admin_add_payload(o, m->payload, m->payload_len);
    mqr__admin_num(o, "qos", m->qos);
    mqr__admin_num(o, "created_ms", (double)m->created_ms);
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

void mqr__admin_h_retained_list(mqr_actx_t *x)
{
    size_t off, lim;
    if (!mqr__admin_page(x, &off, &lim)) return;
    char filter[1024];
    int f = mqr__admin_qparam(x->req->query, "filter", filter, sizeof filter);
    if (f == 0) strcpy(filter, "#");
    if (f < 0 || mqr__topic_filter_validate(filter, strlen(filter)) < 0) {
        mqr__admin_error(x->res, 400, "bad_request", "filter is not a valid topic filter");
        return;
    }
    retcollect_t c = {.off = off, .lim = lim};
    mqr__retain_match(mqr__engine_retain(x->e), filter, strlen(filter), retained_item, &c);
    size_t total = c.i;
    c.items = mqr__admin_page_json(x, total, off, lim);
    c.i = 0;
    mqr__retain_match(mqr__engine_retain(x->e), filter, strlen(filter), retained_item, &c);
}

static bool topic_arg(mqr_actx_t *x)
{
    const char *why = NULL;
    if (mqr__topic_name_check(x->arg, strlen(x->arg), &why) < 0) {
        mqr__admin_error(x->res, 400, "bad_topic", "'%s' is not a topic name%s%s", x->arg,
                         why ? ": " : "", why ? why : "");
        return false;
    }
    return true;
}

void mqr__admin_h_retained_get(mqr_actx_t *x)
{
    if (!topic_arg(x)) return;
    mqr_msg_t *m = mqr__retain_get(mqr__engine_retain(x->e), x->arg, strlen(x->arg));
    if (!m) {
        mqr__admin_error(x->res, 404, "not_found", "no retained message on '%s'", x->arg);
        return;
    }
    x->res->status = 200;
    x->res->json = retained_json(m);
}

void mqr__admin_h_retained_put(mqr_actx_t *x)
{
    if (!topic_arg(x)) return;
    cJSON *j = mqr__admin_body(x, false, retained_fields);
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
    int rc = m ? mqr__retain_set(mqr__engine_retain(x->e), m) : MQR_ENOMEM;
    if (rc < 0) {
        if (m) mqr_msg_unref(m);
        mqr__admin_engine_error(x, rc, "retain");
        return;
    }
    x->res->status = 200;
    x->res->json = retained_json(m);
    mqr_msg_unref(m);
}

void mqr__admin_h_retained_delete(mqr_actx_t *x)
{
    if (!topic_arg(x)) return;
    if (!mqr__retain_get(mqr__engine_retain(x->e), x->arg, strlen(x->arg))) {
        mqr__admin_error(x->res, 404, "not_found", "no retained message on '%s'", x->arg);
        return;
    }
    int rc = mqr__retain_delete(mqr__engine_retain(x->e), x->arg, strlen(x->arg));
    if (rc < 0) {
        mqr__admin_engine_error(x, rc, "retain");
        return;
    }
    x->res->status = 204;
}
