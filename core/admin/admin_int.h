/*
 * admin_int.h — what the files of core/admin/ share: the server's state,
 * one request and its response, and the functions each file offers the
 * others. Not for use outside core/admin/.
 */
#ifndef MQR_ADMIN_INT_H
#define MQR_ADMIN_INT_H

#include "admin.h"
#include "errmsg.h"

#include <cjson/cJSON.h>
#include <http_parser.h>
#include <uv.h>

#define MQR_ADMIN_LOG "admin"
#define MQR_ADMIN_MAX_URL 8192           /* request line target */
#define MQR_ADMIN_MAX_HEADERS 16384      /* every header field and value */
#define MQR_ADMIN_MAX_BODY (1024 * 1024) /* a request body */
#define MQR_ADMIN_IDLE_MS 30000          /* keep-alive connection without a request */
#define MQR_ADMIN_REQUEST_MS 10000       /* a request must arrive whole within this */
#define MQR_ADMIN_MAX_CONNS 256          /* at the cap the oldest idle one makes room */
#define MQR_ADMIN_READ_BUF 65536
#define MQR_ADMIN_MAX_ORIGIN 256             /* an allowed origin, scheme://host:port */
#define MQR_ADMIN_MAX_OUT (16 * 1024 * 1024) /* answers queued for a client before it is paused */

typedef struct mqr_aconn mqr_aconn_t;

/* A growable byte buffer. On allocation failure it stays as it was and
 * failed is set: the caller answers 500. */
typedef struct {
    char *p;
    size_t len, cap;
    bool failed;
} mqr_abuf_t;

void mqr__abuf_add(mqr_abuf_t *b, const char *s, size_t n);
void mqr__abuf_str(mqr_abuf_t *b, const char *s);
/* Room for n bytes at least (a hint: failure is not reported). */
void mqr__abuf_reserve(mqr_abuf_t *b, size_t n);
void mqr__abuf_printf(mqr_abuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One request, as routes.c sees it. */
typedef struct {
    int method;        /* HTTP_GET ... (http_parser) */
    const char *path;  /* percent-decoded, NUL-terminated, without query */
    const char *query; /* raw query string, "" when none */
    const char *body;
    size_t body_len;
    const char *authorization; /* the header's value, NULL when absent */
    /* what guard.c decides on; each NULL when the header is absent */
    const char *host;
    const char *origin;
    const char *content_type;
    const char *fetch_site; /* Sec-Fetch-Site */
    bool host_repeated;     /* more than one Host (or Origin) header */
    bool http11;            /* HTTP/1.1 or later: Host is mandatory */
    bool has_body;          /* a body was announced (Content-Length > 0, chunked) */
} mqr_areq_t;

/* Its answer: status, and either a JSON value (owned; NULL = no body) or
 * text in the buffer with content_type. */
typedef struct {
    int status;
    cJSON *json;
    mqr_abuf_t text;
    const char *content_type;
    const char *extra_headers; /* e.g. "WWW-Authenticate: Bearer\r\n", static */
    /* a configured origin that may read the answer (CORS), borrowed from
     * the request; preflight: answer an OPTIONS preflight for it */
    const char *allow_origin;
    bool preflight;
} mqr_ares_t;

/* Why guard.c refused a request: the label of its counter. */
typedef enum {
    MQR_ADMIN_REFUSE_HOST,         /* Host not ours: DNS rebinding */
    MQR_ADMIN_REFUSE_ORIGIN,       /* a foreign Origin */
    MQR_ADMIN_REFUSE_FETCH_SITE,   /* a browser's cross-site write without Origin */
    MQR_ADMIN_REFUSE_CONTENT_TYPE, /* a body that is not application/json */
    MQR_ADMIN_REFUSE_N
} mqr_admin_refuse_t;

struct mqr_admin {
    mqr_engine_t *e; /* what it shows: read through engine.h */
    uv_loop_t *loop;
    uv_tcp_t tcp;
    char *host;
    int port;
    bool loopback;
    bool closing;
    mqr_aconn_t *conns;
    unsigned nconns;
    bool wildcard;               /* bound to 0.0.0.0 or ::: any IP literal names us */
    unsigned nlive;              /* connections not closing (nconns counts those too) */
    char *read_buf;              /* MQR_ADMIN_READ_BUF bytes: a read is handled before the next */
    unsigned char (*tokens)[32]; /* SHA-256 of each token */
    char **token_tenants;        /* each token's tenant, NULL: none */
    size_t ntokens;
    bool require_token; /* refuse to run without tokens, on loopback too */
    /* guard.c: Host names besides our address and localhost, and origins
     * allowed to call across origins; lower case */
    char **hosts;
    size_t nhosts;
    char **origins;
    size_t norigins;
    uint64_t refused[MQR_ADMIN_REFUSE_N];
    uint64_t refuse_logged_ms; /* the last refusal logged at warning */
    /* connections closed by the server, by why */
    uint64_t conns_evicted, conns_request_timeout, conns_idle_timeout;
    /* rates (routes.c): the figures of the last two samples */
    uv_timer_t rate_timer;
    struct mqr_arate {
        uint64_t at_ms, published, msgs_in, msgs_out, bytes_in, bytes_out;
    } rate_prev, rate_last;
    /* sessions added through the API: only those may be removed by it */
    char **api_sessions;
    size_t n_api_sessions;
    uint64_t requests, responses_4xx, responses_5xx;
    size_t metrics_size; /* the last scrape's, reserved for the next */
    uint64_t metrics_ns; /* how long the last scrape took to build */
    uint64_t start_ms;
    unsigned open_handles;
};

/* What a handler gets (routes.c fills it): arg is the {name} or {topic} of
 * the path, decoded. */
typedef struct {
    mqr_admin_t *a;
    mqr_engine_t *e;
    const mqr_areq_t *req;
    mqr_ares_t *res;
    const char *arg;
    const char *tenant; /* the token's tenant, NULL: an untenanted token */
} mqr_actx_t;

typedef void (*mqr_admin_handler_fn)(mqr_actx_t *x);

/* Helpers of routes.c for the handlers. */
/* An engine error (MQR_E*) as an HTTP answer: status from the code. */
void mqr__admin_engine_error(mqr_actx_t *x, int rc, const char *what);
/* Sets status and an empty JSON object as the body; returns it. */
cJSON *mqr__admin_ok(mqr_actx_t *x, int status);
void mqr__admin_num(cJSON *o, const char *k, double v);
/* The value of key in the query string, decoded ('+' is a space): 1 found,
 * 0 absent, -1 malformed or too long for out. */
int mqr__admin_qparam(const char *q, const char *key, char *out, size_t outlen);
/* offset (>= 0) and limit (1..1000) from the query; false after answering
 * 400 bad_pagination. */
bool mqr__admin_page(mqr_actx_t *x, size_t *offset, size_t *limit);
/* Answers {items: [], total, offset, limit}; returns items. */
cJSON *mqr__admin_page_json(mqr_actx_t *x, size_t total, size_t offset, size_t limit);
/* The request body as a JSON object (or array if allowed), for the caller
 * to delete; NULL after answering 400, also when an object has a field not
 * in known (NULL-terminated): 400 unknown_field naming it. */
cJSON *mqr__admin_body(mqr_actx_t *x, bool allow_array, const char *const *known);
/* The first key of object o not in known (NULL-terminated), or NULL. */
const char *mqr__admin_unknown_key(const cJSON *o, const char *const *known);
/* Field k of o: a string (NULL when absent), an integer in lo..hi (dflt
 * when absent; booleans are 0/1); *bad set on a wrong type or range. */
const char *mqr__admin_jstr(const cJSON *o, const char *k, bool *bad);
int mqr__admin_jint(const cJSON *o, const char *k, int dflt, int lo, int hi, bool *bad);
/* Adds "payload" and "encoding" (utf-8 text, or base64) to o (api_message.c). */
void mqr__admin_add_payload(cJSON *o, const void *p, size_t n);

/* The handlers (api_*.c), named as their routes in routes.c. */
void mqr__admin_h_health(mqr_actx_t *x);
void mqr__admin_h_metrics(mqr_actx_t *x);
void mqr__admin_h_stats(mqr_actx_t *x);
void mqr__admin_h_index(mqr_actx_t *x);
void mqr__admin_h_publish(mqr_actx_t *x);
void mqr__admin_h_publish_batch(mqr_actx_t *x);
void mqr__admin_h_sessions_list(mqr_actx_t *x);
void mqr__admin_h_session_add(mqr_actx_t *x);
void mqr__admin_h_session_get(mqr_actx_t *x);
void mqr__admin_h_session_delete(mqr_actx_t *x);
void mqr__admin_h_queues_list(mqr_actx_t *x);
void mqr__admin_h_queue_get(mqr_actx_t *x);
void mqr__admin_h_queue_dlq(mqr_actx_t *x);
void mqr__admin_h_queue_redrive(mqr_actx_t *x);
void mqr__admin_h_rules(mqr_actx_t *x);
void mqr__admin_h_routes(mqr_actx_t *x);
void mqr__admin_h_reload(mqr_actx_t *x);
void mqr__admin_h_retained_list(mqr_actx_t *x);
void mqr__admin_h_retained_get(mqr_actx_t *x);
void mqr__admin_h_retained_put(mqr_actx_t *x);
void mqr__admin_h_retained_delete(mqr_actx_t *x);
void mqr__admin_h_devices_list(mqr_actx_t *x);
void mqr__admin_h_device_register(mqr_actx_t *x);
void mqr__admin_h_device_get(mqr_actx_t *x);
void mqr__admin_h_device_update(mqr_actx_t *x);
void mqr__admin_h_device_delete(mqr_actx_t *x);
void mqr__admin_h_topics_list(mqr_actx_t *x);
void mqr__admin_h_topic_info(mqr_actx_t *x);
void mqr__admin_h_topic_validate(mqr_actx_t *x);

/* routes.c: answers req into res (status, body). */
void mqr__admin_route(mqr_admin_t *a, const mqr_areq_t *req, mqr_ares_t *res);
/* An error body {"error":{"code":..., "message":...}} with status. */
void mqr__admin_error(mqr_ares_t *res, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Takes a rate sample (routes.c). */
void mqr__admin_rate_sample(mqr_admin_t *a);
/* Every method+path pattern the router knows, for tests and docs: calls fn
 * for each ("GET", "/api/v1/queues/{name}"). */
void mqr__admin_foreach_route(void (*fn)(void *arg, const char *method, const char *pattern),
                              void *arg);

/* metrics.c: the Prometheus text exposition of everything. */
void mqr__admin_metrics(mqr_admin_t *a, mqr_abuf_t *out);

/* guard.c: true when req may reach the routes; otherwise res holds the
 * refusal (421, 403, 415, 400) and it was counted. Sets res->allow_origin
 * for a configured origin, and res->preflight for its CORS preflight. */
bool mqr__admin_guard(mqr_admin_t *a, const mqr_areq_t *req, mqr_ares_t *res);
/* Replaces the extra Host names and allowed origins (copied, checked: all
 * or nothing). MQR_EINVAL with *errmsg naming the bad entry. */
int mqr__admin_access_set(mqr_admin_t *a, const char *const *hosts, size_t nhosts,
                          const char *const *origins, size_t norigins, char **errmsg);
void mqr__admin_access_free(mqr_admin_t *a);
/* The label of a refusal's counter ("host", "origin", ...). */
const char *mqr__admin_refuse_name(mqr_admin_refuse_t why);

/* *errmsg (when errmsg is not NULL) gets a malloc'd message (server.c). */

/* auth.c */
int mqr__admin_auth_set(mqr_admin_t *a, const char *const *tokens, size_t n);
void mqr__admin_auth_free(mqr_admin_t *a);
/* Each token is "<token>" or "<token> tenant=<tenant>" (docs/admin.md).
 * 0 allowed (*tenant: the token's tenant, NULL for none), 1 no
 * credentials, 2 wrong credentials. */
int mqr__admin_auth_check(const mqr_admin_t *a, const char *authorization, const char **tenant);

/* Engine health (api_stats.c); reasons gets a short text for each thing
 * that is not right. Unhealthy: it cannot serve (GET /health answers 503). */
typedef enum {
    MQR_ADMIN_HEALTH_OK,
    MQR_ADMIN_HEALTH_DEGRADED,
    MQR_ADMIN_HEALTH_UNHEALTHY
} mqr_admin_health_t;
mqr_admin_health_t mqr__admin_health(mqr_admin_t *a, cJSON *reasons);

#endif
