/*
 * http_int.h — what the HTTP sink's two halves share: http.c (requests,
 * origins, libcurl's multi-socket interface) and http1.c (our own
 * HTTP/1.1 connections for plain http:// origins). Private to core/sink.
 */
#ifndef MQR_SINK_HTTP_INT_H
#define MQR_SINK_HTTP_INT_H

#include "http.h"

#include <curl/curl.h>
#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_HEADER_BYTES (256u * 1024u)

typedef struct http_req http_req_t;
typedef struct http_sock http_sock_t;
typedef struct http_origin http_origin_t;
typedef struct h1_conn h1_conn_t;

/* One request, from mqr__http_request to its callback. */
struct http_req {
    http_req_t *prev, *next; /* h->active, or its origin's waiting list */
    mqr_http_t *h;
    http_origin_t *origin;
    CURL *easy;      /* curl's transfer, NULL while waiting or on our own */
    h1_conn_t *conn; /* our own HTTP/1.1 connection carrying it (http1.c) */
    bool refreshed;  /* sent again on a new connection after a stale one */
    int os_err;      /* our own: the libuv error behind a failure */
    struct curl_slist *hdrs;
    char *url; /* normalised by curl_url (curl_free) */
    const char *method;
    char *body;
    size_t body_len;
    uint32_t timeout_ms;
    mqr_http_done_fn done;
    void *arg;
    uint64_t t0;  /* uv_hrtime() when accepted */
    bool waiting; /* counted as queued by the sink */
    /* the answer */
    char *rbody;
    size_t rlen, rcap;
    bool too_big;
    char *rhdr; /* "name\0value\0" pairs */
    size_t rhlen, rhcap, nrh;
    char errbuf[CURL_ERROR_SIZE];
};

/* Requests to one origin (scheme://user@host:port): how many curl holds
 * and the ones waiting here for a slot. curl is given no more than the
 * origin carries at once, max_host_connections (times 100 streams once
 * the origin answered over HTTP/2): what curl holds beyond that waits in
 * curl's pending list, walked on every finished transfer (here 68 µs of
 * CPU a request with 48 pending against 45 with none). Freed when idle. */
struct http_origin {
    http_origin_t *hnext;              /* hash chain */
    http_origin_t *rnext;              /* h->ready list */
    http_req_t *wait_head, *wait_tail; /* FIFO */
    uint32_t active;                   /* requests curl holds */
    bool multiplex;                    /* answered over HTTP/2 */
    bool in_ready;
    bool own;         /* plain http:// without user info: http1.c */
    h1_conn_t *conns; /* http1.c's connections to it */
    uint32_t nconns;
    uint32_t hash;
    size_t keylen;
    char key[];
};

struct mqr_http {
    mqr_sink_t sink; /* first: a mqr_sink_t * is a mqr_http_t * */
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    uint32_t timeout_ms, connect_timeout_ms, max_response_bytes;
    char *ca_file, *cert_file, *key_file;
    bool insecure;
    http_req_t *active;      /* on the wire (in the multi handle) */
    http_origin_t **origins; /* hash table of origins in use */
    size_t norigin_slots, norigins;
    http_origin_t *ready, *ready_tail; /* origins with waiting requests and room */
    uint32_t per_host;
    bool curl_only; /* no own HTTP/1.1 (options: engine = "curl") */
    http_sock_t *socks;
    http_sock_t **by_fd; /* socks indexed by fd */
    size_t nby_fd;
    CURL **pool; /* easy handles to reuse */
    size_t npool, pool_cap;
    int depth;     /* > 0 inside our libuv callbacks or a done callback */
    int handles;   /* libuv handles not yet closed */
    bool closing;  /* mqr__http_close called */
    bool torn;     /* multi handle gone, handles closing */
    bool was_down; /* for reconnects: up after down */
    uint64_t connections;
};

_Static_assert(offsetof(struct mqr_http, sink) == 0, "a mqr_sink_t * must be a mqr_http_t *");

/* http.c, for http1.c: curl's header and body callbacks (line by line,
 * the status line first), a request http1.c ended (rc as curl would have
 * said, status and CURL_HTTP_VERSION_* when there was an answer), what brackets every loop
 * callback of http1.c (leave starts waiting requests and tears down a
 * client closed meanwhile), and an origin that lost its last connection. */
size_t mqr__http_on_header(char *p, size_t size, size_t n, void *ud);
size_t mqr__http_on_body(char *p, size_t size, size_t n, void *ud);
void mqr__http_ended(mqr_http_t *h, http_req_t *r, CURLcode rc, long status, long version);
void mqr__http_enter(mqr_http_t *h);
void mqr__http_leave(mqr_http_t *h);
void mqr__http_origin_unused(mqr_http_t *h, http_origin_t *o);
void mqr__http_handle_gone(mqr_http_t *h);

/* http1.c: puts r (its origin own) on an idle connection or a new one: 0
 * or MQR_ENOMEM; r's end comes through mqr__http_ended. cancel takes r
 * off its connection (closing it) without ending r; close_all closes
 * every connection of o (a client closing). */
int mqr__h1_start(mqr_http_t *h, http_req_t *r);
void mqr__h1_cancel(mqr_http_t *h, http_req_t *r);
void mqr__h1_close_all(mqr_http_t *h, http_origin_t *o);

#endif
