/*
 * admin_int.h — what the files of core/admin/ share: the server's state,
 * one request and its response, and the functions each file offers the
 * others. Not for use outside core/admin/.
 */
#ifndef MQR_ADMIN_INT_H
#define MQR_ADMIN_INT_H

#include "admin.h"
#include "admin_http.h"
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
void mqr__admin_h_sinks_list(mqr_actx_t *x);
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

/* An error body {"error":{"code":..., "message":...}} with status. */
void mqr__admin_error(mqr_ares_t *res, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Takes a rate sample (routes.c). */
void mqr__admin_rate_sample(mqr_admin_t *a);

/* Replaces the extra Host names and allowed origins (copied, checked: all
 * or nothing). MQR_EINVAL with *errmsg naming the bad entry. */
int mqr__admin_access_set(mqr_admin_t *a, const char *const *hosts, size_t nhosts,
                          const char *const *origins, size_t norigins, char **errmsg);
void mqr__admin_access_free(mqr_admin_t *a);
/* The label of a refusal's counter ("host", "origin", ...). */
const char *mqr__admin_refuse_name(mqr_admin_refuse_t why);

/* auth.c */
int mqr__admin_auth_set(mqr_admin_t *a, const char *const *tokens, size_t n);
void mqr__admin_auth_free(mqr_admin_t *a);

/* Engine health (api_stats.c); reasons gets a short text for each thing
 * that is not right. Unhealthy: it cannot serve (GET /health answers 503). */
typedef enum {
    MQR_ADMIN_HEALTH_OK,
    MQR_ADMIN_HEALTH_DEGRADED,
    MQR_ADMIN_HEALTH_UNHEALTHY
} mqr_admin_health_t;
mqr_admin_health_t mqr__admin_health(mqr_admin_t *a, cJSON *reasons);

#endif
