/*
 * admin_http.h — one admin API request and its answer: the byte buffer, the
 * request as the routes see it, the answer, why the guard refuses, and the
 * entry points that take a request to an answer (guard, token check,
 * routes, metrics). What the files of core/admin/ and the admin unit tests
 * share; the server's own state stays in admin_int.h. Loop thread only.
 */
#ifndef MQR_ADMIN_HTTP_H
#define MQR_ADMIN_HTTP_H

#include "admin.h"

#include <cjson/cJSON.h>
#include <http_parser.h>
#include "buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
    mqr_buf_t text;
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

/* ---- from a request to its answer ---- */

/* guard.c: true when req may reach the routes; otherwise res holds the
 * refusal (421, 403, 415, 400) and it was counted. Sets res->allow_origin
 * for a configured origin, and res->preflight for its CORS preflight. */
bool mqr__admin_guard(mqr_admin_t *a, const mqr_areq_t *req, mqr_ares_t *res);

/* Each token is "<token>" or "<token> tenant=<tenant>" (docs/admin.md).
 * 0 allowed (*tenant: the token's tenant, NULL for none), 1 no
 * credentials, 2 wrong credentials. */
int mqr__admin_auth_check(const mqr_admin_t *a, const char *authorization, const char **tenant);

/* routes.c: answers req into res (status, body). */
void mqr__admin_route(mqr_admin_t *a, const mqr_areq_t *req, mqr_ares_t *res);

/* Every method+path pattern the router knows, for tests and docs: calls fn
 * for each ("GET", "/api/v1/queues/{name}"). */
void mqr__admin_foreach_route(void (*fn)(void *arg, const char *method, const char *pattern),
                              void *arg);

/* metrics.c: the Prometheus text exposition of everything. */
void mqr__admin_metrics(mqr_admin_t *a, mqr_buf_t *out);

/* What a running server holds, for tests: token digests (never the tokens
 * in clear), allowed origins, require_token, and refusals by why. */
typedef struct {
    size_t ntokens;
    const unsigned char (*tokens)[32]; /* SHA-256 of each */
    size_t norigins;
    const char *const *origins;
    bool require_token;
    const uint64_t *refused; /* MQR_ADMIN_REFUSE_N counters */
} mqr_admin_view_t;
void mqr__admin_view(const mqr_admin_t *a, mqr_admin_view_t *out);

#endif
