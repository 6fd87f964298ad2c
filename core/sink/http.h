/*
 * http.h — the HTTP(S) egress client: requests to any http:// or https://
 * URL on the engine's libuv loop: plain http:// over our own HTTP/1.1
 * connections (http1.c, unless curl_only), the rest by libcurl's
 * multi-socket interface (one uv_poll_t per socket curl opens, one
 * uv_timer_t for curl's timeouts); connections kept alive and reused,
 * HTTP/2 where a TLS server offers it, and the common sink part (sink.h)
 * for bounds, outcomes and counters. The Lua bindings and async routes
 * call it.
 *
 * Loop thread only, no thread per request, nothing blocks (names are
 * resolved on libuv's thread pool by http1.c, by libcurl's threaded
 * resolver otherwise; none for an IP address). Must not: follow
 * redirects, keep a request's body after its callback, or show a password
 * (URLs pass through mqr__sink_redact before they are shown).
 *
 * Outcomes (what a queue consumer does with them: ack, retry later,
 * dead-letter):
 *   2xx                                   OK
 *   408, 429, 5xx                         RETRY      kind server
 *   other 1xx/3xx/4xx (no redirect taken) PERMANENT  kind request
 *   timeout (connect or whole request)    RETRY      kind timeout, UV_ETIMEDOUT
 *   refused, reset, closed early, DNS,
 *   send or receive error                 RETRY      kind connect, UV_ECONNREFUSED,
 *                                                    UV_ECONNRESET, UV_EAI_NONAME ...
 *   TLS handshake failed (not verification) RETRY    kind connect, MQR_ETLS
 *   certificate not verified, client
 *   certificate or CA file unusable       PERMANENT  kind connect, MQR_ETLS
 *   malformed answer, HTTP/2 stream error RETRY      kind server, MQR_EPROTOCOL
 *   body beyond max_response_bytes        PERMANENT  kind other, MQR_ETOOLARGE
 *   client closed before the answer       RETRY      kind other, MQR_ECLOSED
 * Why: RETRY where the same request may succeed later without a change
 * (the server or the network comes back); PERMANENT where it would fail
 * the same way (the server refuses this request; a certificate that does
 * not verify will not verify next time: it needs an operator, and retrying
 * it forever would hide that). A failed handshake without a verification
 * error is usually a server restarting, hence RETRY.
 */
#ifndef MQR_SINK_HTTP_H
#define MQR_SINK_HTTP_H

#include "sink.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct mqr_http mqr_http_t;

/* Options of mqr__http_new; zero means the default. Strings are copied. */
typedef struct {
    const char *name;              /* sink name, default "http" */
    const char *target;            /* what the sink shows as where it sends (a base
                                    * URL); redacted; default "" */
    uint32_t max_in_flight;        /* requests on the wire at once, default 256 */
    uint32_t max_queued;           /* waiting for a slot (FIFO per host), default 10000 */
    uint32_t max_host_connections; /* per host (CURLMOPT_MAX_HOST_CONNECTIONS), default 16;
                                    * a host gets that many requests at once (100 times as
                                    * many once it answered over HTTP/2), the rest wait */
    uint32_t timeout_ms;           /* per request unless it sets one, default 10000 */
    uint32_t connect_timeout_ms;   /* default 5000 */
    uint32_t max_response_bytes;   /* response body cap, default 16 MiB */
    bool curl_only;                /* plain http:// through libcurl too (default: our own
                                    * HTTP/1.1 connections, http1.c) */
    const char *ca_file;           /* PEM CAs to verify servers with; NULL: the system's */
    const char *cert_file;         /* client certificate (PEM), NULL: none */
    const char *key_file;          /* its key, NULL: in cert_file */
    bool insecure;                 /* verify neither certificate nor host name (labs) */
} mqr_http_opts_t;

/* Makes a client on loop. The first call in a process runs
 * curl_global_init(), which is not thread-safe: make the first client on
 * the loop thread before any other thread uses libcurl. Returns 0 and *out,
 * or MQR_EINVAL (NULL loop or out, a TLS file that cannot be read),
 * MQR_ENOMEM; on failure *errmsg (if errmsg is not NULL) gets a malloc'd
 * reason the caller frees. */
int mqr__http_new(uv_loop_t *loop, const mqr_http_opts_t *o, mqr_http_t **out, char **errmsg);

/* Closes h: every request not yet answered (on the wire or waiting) gets
 * its callback with MQR_ECLOSED (outcome RETRY) during this call, each
 * exactly once; later requests are refused (MQR_ECLOSED). The memory goes
 * once libuv has closed the handles (run the loop). May be called from
 * inside a done callback; a second call does nothing. NULL is ignored. */
void mqr__http_close(mqr_http_t *h);

/* The common sink part (counters, bounds, up/down), owned by h. `up` turns
 * true when a server answers and false on a connection failure;
 * `reconnects` counts the times it came back up after being down. */
mqr_sink_t *mqr__http_sink(mqr_http_t *h);

/* Connections libcurl opened for h so far (CURLINFO_NUM_CONNECTS summed):
 * with keep-alive it stays far below the number of requests. */
uint64_t mqr__http_connections(const mqr_http_t *h);

typedef struct {
    const char *name, *value;
} mqr_http_header_t;

/* One request; everything is copied by mqr__http_request. */
typedef struct {
    const char *method;               /* "GET" "POST" "PUT" "PATCH" "DELETE" "HEAD", upper case */
    const char *url;                  /* http:// or https:// */
    const mqr_http_header_t *headers; /* sent as given, after curl's own (an empty
                                       * value is sent empty); no CR or LF */
    size_t nheaders;
    const void *body; /* sent with any method but HEAD; POST sends
                       * Content-Type: application/x-www-form-urlencoded
                       * unless a header says otherwise */
    size_t body_len;
    uint32_t timeout_ms; /* 0: the client's; counts from when the request gets its slot */
} mqr_http_req_t;

/* What came back; borrowed for the callback only. */
typedef struct {
    mqr_sink_outcome_t outcome;
    int err;            /* 0, or UV_ETIMEDOUT, UV_ECONNREFUSED, UV_ECONNRESET, UV_EAI_NONAME,
                         * MQR_ETLS, MQR_ECLOSED, MQR_EPROTOCOL, MQR_ETOOLARGE, MQR_ENOMEM ... */
    const char *reason; /* NULL when OK; "HTTP 503", "ETIMEDOUT: no answer after 2 s", ...
                         * never a password */
    int status;         /* HTTP status, 0 when there was no response */
    int http_version;   /* 10, 11, 20, or 0 when there was no response */
    const mqr_http_header_t *headers; /* response headers, names lower-cased, in order */
    size_t nheaders;
    const char *body; /* NUL-terminated (the NUL not counted); "" when none */
    size_t body_len;
    double seconds; /* accepted → answered, queue wait included */
} mqr_http_resp_t;

typedef void (*mqr_http_done_fn)(void *arg, const mqr_http_resp_t *r);

/* Sends req, or queues it (FIFO per host) when max_in_flight are on the
 * wire or its host has all it may have.
 * Returns 0: done(arg, r) fires exactly once, later (never inside this
 * call; inside mqr__http_close when the client closes first). Returns < 0
 * and done never fires: MQR_EINVAL (why, if why_cap > 0, says what is wrong:
 * method, URL, header, NULL argument), MQR_EFULL (max_in_flight +
 * max_queued reached; counted by the sink), MQR_ECLOSED (closing),
 * MQR_ENOMEM. */
int mqr__http_request(mqr_http_t *h, const mqr_http_req_t *req, mqr_http_done_fn done, void *arg,
                      char *why, size_t why_cap);

#endif
