/*
 * api_sink.c — the egress clients for a C host (mqrouter_sinks.h): options
 * from "key=value" strings, one wrapper per request that turns each
 * client's answer into an mqr_sink_result_t, and the host's clients closed
 * when the engine stops. Loop thread only. Must not: call done inside the
 * call that took the request, or show a password.
 */
#include "mqrouter_sinks.h"

#include "engine.h"
#include "file.h"
#include "http.h"
#include "pg.h"
#include "redis.h"
#include "sink.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HEADERS 64

struct mqr_sink_client {
    mqr_engine_t *e;
    int kind; /* K_* */
    void *obj;
    mqr_sink_t *sink;
    mqr_sink_client_t *next; /* the engine's host clients */
};

enum { K_HTTP, K_PG, K_REDIS, K_FILE };

static void close_obj(int kind, void *obj)
{
    switch (kind) {
    case K_HTTP:
        mqr__http_close(obj);
        break;
    case K_PG:
        mqr__pg_close(obj);
        break;
    case K_REDIS:
        mqr__redis_close(obj);
        break;
    default:
        mqr__file_close(obj);
        break;
    }
}

/* ---- options ---- */

static const char *opt(const char *const *options, const char *key)
{
    size_t kl = strlen(key);
    for (const char *const *o = options; o && *o; o++)
        if (strncmp(*o, key, kl) == 0 && (*o)[kl] == '=') return *o + kl + 1;
    return NULL;
}

static bool opt_u32(const char *const *options, const char *key, uint32_t *out, char *why,
                    size_t cap)
{
    const char *v = opt(options, key);
    if (!v) return true;
    char *end;
    unsigned long n = strtoul(v, &end, 10);
    if (!*v || *end || n > UINT32_MAX) {
        snprintf(why, cap, "option %s: not a whole number", key);
        return false;
    }
    *out = (uint32_t)n;
    return true;
}

static bool known_options(const char *const *options, const char *const *keys, char *why,
                          size_t cap)
{
    for (const char *const *o = options; o && *o; o++) {
        const char *eq = strchr(*o, '=');
        bool ok = false;
        for (const char *const *k = keys; eq && *k && !ok; k++)
            ok = strlen(*k) == (size_t)(eq - *o) && strncmp(*o, *k, (size_t)(eq - *o)) == 0;
        if (!ok) {
            snprintf(why, cap, "unknown option '%.*s'", eq ? (int)(eq - *o) : (int)strlen(*o), *o);
            return false;
        }
    }
    return true;
}

static int open_http(uv_loop_t *loop, const char *name, const char *const *o, void **obj,
                     mqr_sink_t **sink, char *why, size_t cap, char **err)
{
    static const char *const keys[] = {"name",
                                       "timeout_ms",
                                       "connect_timeout_ms",
                                       "max_in_flight",
                                       "max_queued",
                                       "max_host_connections",
                                       "max_response_bytes",
                                       "ca",
                                       "cert",
                                       "key",
                                       "insecure",
                                       "target",
                                       "transport",
                                       NULL};
    mqr_http_opts_t h = {.name = name,
                         .ca_file = opt(o, "ca"),
                         .cert_file = opt(o, "cert"),
                         .key_file = opt(o, "key"),
                         .target = opt(o, "target")};
    const char *insecure = opt(o, "insecure");
    h.insecure = insecure && strcmp(insecure, "0") != 0;
    const char *transport = opt(o, "transport");
    if (transport && strcmp(transport, "curl") != 0 && strcmp(transport, "native") != 0) {
        snprintf(why, cap, "transport must be native or curl");
        return MQR_EINVAL;
    }
    h.curl_only = transport && strcmp(transport, "curl") == 0;
    if (!known_options(o, keys, why, cap) || !opt_u32(o, "timeout_ms", &h.timeout_ms, why, cap) ||
        !opt_u32(o, "connect_timeout_ms", &h.connect_timeout_ms, why, cap) ||
        !opt_u32(o, "max_in_flight", &h.max_in_flight, why, cap) ||
        !opt_u32(o, "max_queued", &h.max_queued, why, cap) ||
        !opt_u32(o, "max_host_connections", &h.max_host_connections, why, cap) ||
        !opt_u32(o, "max_response_bytes", &h.max_response_bytes, why, cap))
        return MQR_EINVAL;
    mqr_http_t *c;
    int rc = mqr__http_new(loop, &h, &c, err);
    if (rc < 0) return rc;
    *obj = c;
    *sink = mqr__http_sink(c);
    return 0;
}

static int open_pg(uv_loop_t *loop, const char *name, const char *const *o, void **obj,
                   mqr_sink_t **sink, char *why, size_t cap, char **err)
{
    static const char *const keys[] = {"name",       "conninfo",   "connections", "max_queued",
                                       "timeout_ms", "batch_rows", "batch_ms",    NULL};
    mqr_pg_opts_t p = {.name = name, .conninfo = opt(o, "conninfo")};
    if (!known_options(o, keys, why, cap) || !opt_u32(o, "connections", &p.connections, why, cap) ||
        !opt_u32(o, "max_queued", &p.max_queued, why, cap) ||
        !opt_u32(o, "timeout_ms", &p.timeout_ms, why, cap) ||
        !opt_u32(o, "batch_rows", &p.batch_rows, why, cap) ||
        !opt_u32(o, "batch_ms", &p.batch_ms, why, cap))
        return MQR_EINVAL;
    if (!p.conninfo) {
        snprintf(why, cap, "option conninfo is required");
        return MQR_EINVAL;
    }
    mqr_pg_t *c;
    int rc = mqr__pg_new(loop, &p, &c, err);
    if (rc < 0) return rc;
    *obj = c;
    *sink = mqr__pg_sink(c);
    return 0;
}

static int open_redis(uv_loop_t *loop, const char *name, const char *const *o, void **obj,
                      mqr_sink_t **sink, char *why, size_t cap, char **err)
{
    static const char *const keys[] = {
        "name",          "host",       "port", "password", "db", "timeout_ms", "connect_timeout_ms",
        "max_in_flight", "max_queued", NULL};
    mqr_redis_opts_t r = {.name = name, .host = opt(o, "host"), .password = opt(o, "password")};
    uint32_t port = 0, db = 0;
    if (!known_options(o, keys, why, cap) || !opt_u32(o, "port", &port, why, cap) ||
        !opt_u32(o, "db", &db, why, cap) || !opt_u32(o, "timeout_ms", &r.timeout_ms, why, cap) ||
        !opt_u32(o, "connect_timeout_ms", &r.connect_timeout_ms, why, cap) ||
        !opt_u32(o, "max_in_flight", &r.max_in_flight, why, cap) ||
        !opt_u32(o, "max_queued", &r.max_queued, why, cap))
        return MQR_EINVAL;
    r.port = (int)port;
    r.db = (int)db;
    mqr_redis_t *c;
    int rc = mqr__redis_new(loop, &r, &c, err);
    if (rc < 0) return rc;
    *obj = c;
    *sink = mqr__redis_sink(c);
    return 0;
}

static int open_file(uv_loop_t *loop, const char *name, const char *const *o, void **obj,
                     mqr_sink_t **sink, char *why, size_t cap, char **err)
{
    static const char *const keys[] = {
        "name",         "path",           "format", "fsync",      "fsync_ms",
        "rotate_bytes", "rotate_seconds", "keep",   "max_queued", NULL};
    mqr_file_opts_t f = {.name = name, .path = opt(o, "path"), .lines = true};
    const char *format = opt(o, "format"), *fsync = opt(o, "fsync");
    uint32_t rotate_bytes = 0;
    if (!known_options(o, keys, why, cap) || !opt_u32(o, "fsync_ms", &f.fsync_ms, why, cap) ||
        !opt_u32(o, "rotate_bytes", &rotate_bytes, why, cap) ||
        !opt_u32(o, "rotate_seconds", &f.rotate_seconds, why, cap) ||
        !opt_u32(o, "keep", &f.keep, why, cap) ||
        !opt_u32(o, "max_queued", &f.max_queued, why, cap))
        return MQR_EINVAL;
    f.rotate_bytes = rotate_bytes;
    if (format && strcmp(format, "raw") == 0)
        f.lines = false;
    else if (format && strcmp(format, "jsonl") != 0) {
        snprintf(why, cap, "format must be jsonl or raw");
        return MQR_EINVAL;
    }
    if (!fsync || strcmp(fsync, "batch") == 0)
        f.fsync = MQR_FSYNC_BATCH;
    else if (strcmp(fsync, "interval") == 0)
        f.fsync = MQR_FSYNC_INTERVAL;
    else if (strcmp(fsync, "none") == 0)
        f.fsync = MQR_FSYNC_NONE;
    else {
        snprintf(why, cap, "fsync must be batch, interval or none");
        return MQR_EINVAL;
    }
    mqr_file_t *c;
    int rc = mqr__file_new(loop, &f, &c, err);
    if (rc < 0) return rc;
    *obj = c;
    *sink = mqr__file_sink(c);
    return 0;
}

int mqr_sink_open(mqr_engine_t *e, const char *kind, const char *const *options,
                  mqr_sink_client_t **out, char **errmsg)
{
    static const char *const kinds[] = {"http", "pg", "redis", "file"};
    char why[256] = "";
    char *err = NULL;
    if (errmsg) *errmsg = NULL;
    if (!e || !kind || !out) return MQR_EINVAL;
    if (mqr__engine_stopping(e)) return MQR_ECLOSED;
    int k = -1;
    for (int i = 0; i < 4; i++)
        if (strcmp(kind, kinds[i]) == 0) k = i;
    const char *name = opt(options, "name");
    if (!name) name = kind;
    int rc;
    if (k < 0) {
        snprintf(why, sizeof why, "unknown kind '%s' (http, pg, redis or file)", kind);
        rc = MQR_EINVAL;
    } else {
        mqr_sink_client_t **first = mqr__engine_hosted_sinks(e);
        for (mqr_sink_client_t *c = *first; c; c = c->next)
            if (strcmp(c->sink->name, name) == 0) return MQR_EEXIST;
        void *obj = NULL;
        mqr_sink_t *sink = NULL;
        uv_loop_t *loop = mqr_engine_loop(e);
        rc = k == K_HTTP    ? open_http(loop, name, options, &obj, &sink, why, sizeof why, &err)
             : k == K_PG    ? open_pg(loop, name, options, &obj, &sink, why, sizeof why, &err)
             : k == K_REDIS ? open_redis(loop, name, options, &obj, &sink, why, sizeof why, &err)
                            : open_file(loop, name, options, &obj, &sink, why, sizeof why, &err);
        if (rc == 0) {
            mqr_sink_client_t *c = calloc(1, sizeof *c);
            if (!c) {
                close_obj(k, obj);
                return MQR_ENOMEM;
            }
            c->e = e;
            c->kind = k;
            c->obj = obj;
            c->sink = sink;
            c->next = *first;
            *first = c;
            mqr__sinks_add(mqr__engine_sinks(e), sink);
            *out = c;
            return 0;
        }
    }
    if (errmsg)
        *errmsg = err ? err : strdup(why[0] ? why : mqr_strerror(rc));
    else
        free(err);
    return rc;
}

static void client_free(mqr_sink_client_t *c)
{
    mqr__sinks_remove(mqr__engine_sinks(c->e), c->sink);
    close_obj(c->kind, c->obj);
    free(c);
}

void mqr_sink_close(mqr_sink_client_t *c)
{
    if (!c) return;
    for (mqr_sink_client_t **p = mqr__engine_hosted_sinks(c->e); *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    client_free(c);
}

void mqr__sink_api_stop(mqr_engine_t *e)
{
    mqr_sink_client_t **first = mqr__engine_hosted_sinks(e);
    while (*first) {
        mqr_sink_client_t *c = *first;
        *first = c->next;
        client_free(c);
    }
}

/* ---- requests ---- */

typedef struct {
    mqr_sink_done_fn done;
    void *arg;
} call_t;

/* The callback of a request to a client of kind, from the call to its
 * answer; NULL and *rc when the request cannot start. */
static call_t *call_for(mqr_sink_client_t *cl, int kind, mqr_sink_done_fn done, void *arg, int *rc)
{
    *rc = !cl || cl->kind != kind || !done ? MQR_EINVAL : MQR_ENOMEM;
    if (*rc == MQR_EINVAL) return NULL;
    call_t *c = malloc(sizeof *c);
    if (c) *c = (call_t){done, arg};
    return c;
}

/* What the client said of the request: a refusal frees its call. */
static int given(call_t *c, int rc)
{
    if (rc < 0) free(c);
    return rc;
}

/* Fills the part every kind shares, tells the host, frees the call. */
static void answer(call_t *c, mqr_sink_result_t *res, mqr_sink_outcome_t outcome, int err,
                   const char *reason, double seconds)
{
    res->outcome = (int)outcome;
    res->err = err;
    res->reason = reason;
    res->seconds = seconds;
    if (!res->sqlstate) res->sqlstate = "";
    c->done(c->arg, res);
    free(c);
}

static void on_http(void *arg, const mqr_http_resp_t *r)
{
    mqr_sink_result_t res = {.status = r->status, .body = r->body, .body_len = r->body_len};
    answer(arg, &res, r->outcome, r->err, r->reason, r->seconds);
}

int mqr_sink_http_request(mqr_sink_client_t *cl, const char *method, const char *url,
                          const char *const *headers, const void *body, size_t body_len,
                          mqr_sink_done_fn done, void *arg)
{
    if (!cl || cl->kind != K_HTTP) return MQR_EINVAL;
    mqr_http_header_t h[MAX_HEADERS];
    char names[MAX_HEADERS][128];
    size_t n = 0;
    for (const char *const *p = headers; p && *p; p++) {
        const char *colon = strchr(*p, ':');
        if (!colon || n == MAX_HEADERS || (size_t)(colon - *p) >= sizeof names[0])
            return MQR_EINVAL;
        snprintf(names[n], sizeof names[n], "%.*s", (int)(colon - *p), *p);
        const char *v = colon + 1;
        while (*v == ' ')
            v++;
        h[n] = (mqr_http_header_t){names[n], v};
        n++;
    }
    mqr_http_req_t req = {.method = method,
                          .url = url,
                          .headers = h,
                          .nheaders = n,
                          .body = body,
                          .body_len = body_len};
    int rc;
    call_t *c = call_for(cl, K_HTTP, done, arg, &rc);
    if (!c) return rc;
    char why[128];
    return given(c, mqr__http_request(cl->obj, &req, on_http, c, why, sizeof why));
}

static void on_pg(void *arg, const mqr_pg_result_t *r)
{
    mqr_sink_result_t res = {.sqlstate = r->sqlstate,
                             .rows = r->rows,
                             .cols = r->cols,
                             .names = r->names,
                             .values = r->values,
                             .affected = r->affected};
    answer(arg, &res, r->outcome, r->err, r->reason, r->seconds);
}

int mqr_sink_pg_query(mqr_sink_client_t *cl, const char *sql, int nparams,
                      const char *const *values, mqr_sink_done_fn done, void *arg)
{
    int rc;
    call_t *c = call_for(cl, K_PG, done, arg, &rc);
    if (!c) return rc;
    char why[128];
    return given(c, mqr__pg_query(cl->obj, sql, nparams, values, NULL, on_pg, c, why, sizeof why));
}

int mqr_sink_pg_insert(mqr_sink_client_t *cl, const char *table, int ncols, const char *const *cols,
                       const char *const *values, mqr_sink_done_fn done, void *arg)
{
    int rc;
    call_t *c = call_for(cl, K_PG, done, arg, &rc);
    if (!c) return rc;
    char why[128];
    return given(c, mqr__pg_insert(cl->obj, table, ncols, cols, values, on_pg, c, why, sizeof why));
}

static void on_redis(void *arg, const mqr_redis_result_t *r)
{
    mqr_sink_result_t res = {0};
    if (r->reply) {
        res.redis_type = r->reply->type;
        res.text = r->reply->str;
        res.text_len = r->reply->len;
        res.integer = r->reply->integer;
    }
    answer(arg, &res, r->outcome, r->err, r->reason, r->seconds);
}

int mqr_sink_redis_command(mqr_sink_client_t *cl, int argc, const char *const *argv,
                           const size_t *argvlen, mqr_sink_done_fn done, void *arg)
{
    int rc;
    call_t *c = call_for(cl, K_REDIS, done, arg, &rc);
    if (!c) return rc;
    char why[128];
    return given(c, mqr__redis_command(cl->obj, argc, argv, argvlen, on_redis, c, why, sizeof why));
}

static void on_file(void *arg, const mqr_file_result_t *r)
{
    mqr_sink_result_t res = {0};
    answer(arg, &res, r->outcome, r->err, r->reason, r->seconds);
}

int mqr_sink_file_write(mqr_sink_client_t *cl, const void *data, size_t len, mqr_sink_done_fn done,
                        void *arg)
{
    if (!cl || cl->kind != K_FILE) return MQR_EINVAL;
    if (!done) return mqr__file_write(cl->obj, data, len, NULL, NULL); /* nobody to tell */
    int rc;
    call_t *c = call_for(cl, K_FILE, done, arg, &rc);
    if (!c) return rc;
    return given(c, mqr__file_write(cl->obj, data, len, on_file, c));
}

int mqr_sink_file_flush(mqr_sink_client_t *cl, mqr_sink_done_fn done, void *arg)
{
    int rc;
    call_t *c = call_for(cl, K_FILE, done, arg, &rc);
    if (!c) return rc;
    return given(c, mqr__file_flush(cl->obj, on_file, c));
}
