/*
 * http.c — the HTTP(S) egress client (http.h): requests, their admission
 * per origin, their outcomes; a plain http:// origin's requests go over
 * http1.c's own HTTP/1.1 connections, the rest over libcurl's multi-socket
 * interface: curl tells us which sockets to watch (socket_cb → one
 * uv_poll_t each) and when to wake it (timer_cb → one uv_timer_t); libuv
 * tells curl what happened (curl_multi_socket_action), and finished
 * transfers are read back with curl_multi_info_read. Easy handles are
 * kept in a pool for reuse; connections live in the multi handle's cache,
 * so keep-alive works across requests. Requests beyond max_in_flight, or
 * beyond what their origin (scheme, host, port) may have at once, wait in
 * a FIFO per origin here. A socket stays watched while its connection
 * idles in curl's cache. Called by the engine's bindings on the loop
 * thread.
 * Must not: call curl_multi_* from inside curl's own callbacks (only from
 * the libuv callbacks after curl returned), fire a request's callback
 * inside mqr__http_request, or put a URL with its password in a message.
 */
#include "http_int.h"

#include "hash.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* A socket of curl's, from the first time curl asks us to watch it until
 * curl closes it (on_curl_close). Watching goes on while a keep-alive
 * connection idles between requests: curl says "remove" after every
 * answer and "in" after every request, and stopping and starting the
 * watch each time cost three epoll_ctl calls a request. */
struct http_sock {
    uv_poll_t poll;
    http_sock_t *prev, *next;
    mqr_http_t *h;
    curl_socket_t fd;
    int events;  /* UV_READABLE / UV_WRITABLE being watched */
    bool wanted; /* curl asked for events and has not removed them */
};

static bool curl_ready;

static void maybe_free(mqr_http_t *h);

static void list_push(http_req_t **head, http_req_t *r)
{
    r->prev = NULL;
    r->next = *head;
    if (*head) (*head)->prev = r;
    *head = r;
}

static void list_unlink(http_req_t **head, http_req_t *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        *head = r->next;
    if (r->next) r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

static void set_why(char *why, size_t cap, const char *fmt, const char *arg)
{
    if (why && cap) snprintf(why, cap, fmt, arg ? arg : "");
}

static char *dup_or_null(const char *s)
{
    return s && *s ? strdup(s) : NULL;
}

/* ---- requests: memory ---- */

static void req_free(http_req_t *r)
{
    curl_slist_free_all(r->hdrs);
    curl_free(r->url);
    free(r->body);
    free(r->rbody);
    free(r->rhdr);
    free(r);
}

/* Gives r's easy handle back to the pool (or frees it when closing). */
static void req_release_easy(mqr_http_t *h, http_req_t *r)
{
    if (!r->easy) return;
    if (!h->closing && h->npool < h->pool_cap) {
        h->pool[h->npool++] = r->easy;
    } else {
        curl_easy_cleanup(r->easy);
    }
    r->easy = NULL;
}

/* ---- origins ---- */

static uint32_t origin_limit(const mqr_http_t *h, const http_origin_t *o)
{
    return o->multiplex ? h->per_host * 100u : h->per_host;
}

static bool origin_has_room(const mqr_http_t *h, const http_origin_t *o)
{
    return o->active < origin_limit(h, o);
}

/* The origin part of a URL curl normalised: "scheme://authority". */
static size_t origin_key_len(const char *url)
{
    const char *p = strstr(url, "://");
    if (!p) return strlen(url);
    p += 3;
    return (size_t)(p - url) + strcspn(p, "/?#");
}

static int origins_grow(mqr_http_t *h)
{
    size_t n = h->norigin_slots ? h->norigin_slots * 2 : 16;
    http_origin_t **t = calloc(n, sizeof *t);
    if (!t) return MQR_ENOMEM;
    for (size_t i = 0; i < h->norigin_slots; i++) {
        http_origin_t *o = h->origins[i], *next;
        for (; o; o = next) {
            next = o->hnext;
            o->hnext = t[o->hash & (n - 1)];
            t[o->hash & (n - 1)] = o;
        }
    }
    free(h->origins);
    h->origins = t;
    h->norigin_slots = n;
    return 0;
}

/* The origin of url (normalised), made on first use; NULL: no memory. */
static http_origin_t *origin_get(mqr_http_t *h, const char *url)
{
    size_t n = origin_key_len(url);
    uint32_t hv = mqr__fnv1a32(url, n);
    if (h->norigin_slots) {
        http_origin_t *o = h->origins[hv & (h->norigin_slots - 1)];
        for (; o; o = o->hnext)
            if (o->hash == hv && o->keylen == n && memcmp(o->key, url, n) == 0) return o;
    }
    if (h->norigins >= h->norigin_slots && origins_grow(h) != 0) return NULL;
    http_origin_t *o = calloc(1, sizeof *o + n + 1);
    if (!o) return NULL;
    memcpy(o->key, url, n);
    o->keylen = n;
    o->hash = hv;
    o->own = !h->curl_only && strncmp(url, "http://", 7) == 0 && !memchr(url, '@', n);
    http_origin_t **b = &h->origins[hv & (h->norigin_slots - 1)];
    o->hnext = *b;
    *b = o;
    h->norigins++;
    return o;
}

/* Frees o once no request and no list holds it. */
static void origin_maybe_free(mqr_http_t *h, http_origin_t *o)
{
    if (o->active || o->wait_head || o->in_ready || o->conns) return;
    http_origin_t **p = &h->origins[o->hash & (h->norigin_slots - 1)];
    while (*p != o)
        p = &(*p)->hnext;
    *p = o->hnext;
    h->norigins--;
    free(o);
}

static void ready_add(mqr_http_t *h, http_origin_t *o)
{
    if (o->in_ready) return;
    o->in_ready = true;
    o->rnext = NULL;
    if (h->ready_tail)
        h->ready_tail->rnext = o;
    else
        h->ready = o;
    h->ready_tail = o;
}

static http_origin_t *ready_pop(mqr_http_t *h)
{
    http_origin_t *o = h->ready;
    if (!o) return NULL;
    h->ready = o->rnext;
    if (!h->ready) h->ready_tail = NULL;
    o->rnext = NULL;
    o->in_ready = false;
    return o;
}

static void wait_push(http_origin_t *o, http_req_t *r)
{
    r->next = NULL;
    r->prev = o->wait_tail;
    if (o->wait_tail)
        o->wait_tail->next = r;
    else
        o->wait_head = r;
    o->wait_tail = r;
}

static http_req_t *wait_pop(http_origin_t *o)
{
    http_req_t *r = o->wait_head;
    if (!r) return NULL;
    o->wait_head = r->next;
    if (o->wait_head)
        o->wait_head->prev = NULL;
    else
        o->wait_tail = NULL;
    r->next = r->prev = NULL;
    return r;
}

/* r ended (or never started): its slot may let one waiting there go. */
static void origin_release(mqr_http_t *h, http_req_t *r)
{
    http_origin_t *o = r->origin;
    if (!o) return;
    r->origin = NULL;
    if (!r->waiting && o->active) o->active--;
    if (o->wait_head && origin_has_room(h, o)) ready_add(h, o);
    origin_maybe_free(h, o);
}

/* ---- curl's data callbacks ---- */

size_t mqr__http_on_body(char *p, size_t size, size_t n, void *ud)
{
    http_req_t *r = ud;
    size_t len = size * n;
    uint32_t max = r->h->max_response_bytes;
    if (r->rlen > max || len > max - r->rlen) {
        r->too_big = true;
        return 0; /* CURLE_WRITE_ERROR */
    }
    if (r->rlen + len + 1 > r->rcap) {
        size_t cap = r->rcap ? r->rcap : 1024;
        while (cap < r->rlen + len + 1)
            cap *= 2;
        char *nb = realloc(r->rbody, cap);
        if (!nb) return 0;
        r->rbody = nb;
        r->rcap = cap;
    }
    memcpy(r->rbody + r->rlen, p, len);
    r->rlen += len;
    r->rbody[r->rlen] = '\0';
    return len;
}

/* One header line; a status line starts the headers over (100 Continue). */
size_t mqr__http_on_header(char *p, size_t size, size_t n, void *ud)
{
    http_req_t *r = ud;
    size_t len = size * n;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        r->rhlen = r->nrh = 0;
        return len;
    }
    const char *colon = memchr(p, ':', len);
    if (!colon) return len; /* the blank line ending the headers */
    size_t nlen = (size_t)(colon - p);
    const char *v = colon + 1, *end = p + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    size_t vlen = (size_t)(end - v);
    size_t need = nlen + vlen + 2;
    if (r->rhlen + need > HTTP_MAX_HEADER_BYTES) return len; /* kept what fits */
    if (r->rhlen + need > r->rhcap) {
        size_t cap = r->rhcap ? r->rhcap : 512;
        while (cap < r->rhlen + need)
            cap *= 2;
        char *nb = realloc(r->rhdr, cap);
        if (!nb) return 0;
        r->rhdr = nb;
        r->rhcap = cap;
    }
    char *d = r->rhdr + r->rhlen;
    for (size_t i = 0; i < nlen; i++)
        d[i] = (char)tolower((unsigned char)p[i]);
    d[nlen] = '\0';
    memcpy(d + nlen + 1, v, vlen);
    d[nlen + 1 + vlen] = '\0';
    r->rhlen += need;
    r->nrh++;
    return len;
}

/* ---- outcome ---- */

typedef struct {
    mqr_sink_outcome_t outcome;
    mqr_sink_err_kind_t kind;
    int err;
    char reason[256];
} http_verdict_t;

static int os_err(const http_req_t *r, int fallback)
{
    long e = 0;
    if (r->os_err) return r->os_err;
    if (r->easy && curl_easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &e) == CURLE_OK && e > 0)
        return -(int)e;
    return fallback;
}

static void judge(mqr_http_t *h, http_req_t *r, CURLcode rc, long status, http_verdict_t *v)
{
    char detail[CURL_ERROR_SIZE + 128]; /* then cut to reason by the redaction */
    const char *what = r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc);
    v->outcome = MQR_SINK_RETRY;
    v->kind = MQR_SINK_ERR_CONNECT;
    v->err = 0;
    v->reason[0] = '\0';
    switch (rc) {
    case CURLE_OK:
        if (status >= 200 && status < 300) {
            v->outcome = MQR_SINK_OK;
            return;
        }
        snprintf(v->reason, sizeof v->reason, "HTTP %ld", status);
        if (status == 408 || status == 429 || status >= 500) {
            v->kind = MQR_SINK_ERR_SERVER;
        } else if (status < 100) {
            v->kind = MQR_SINK_ERR_SERVER;
            v->err = MQR_EPROTOCOL;
        } else {
            v->outcome = MQR_SINK_PERMANENT;
            v->kind = MQR_SINK_ERR_REQUEST;
        }
        return;
    case CURLE_OPERATION_TIMEDOUT: {
        uint32_t ms = r->timeout_ms ? r->timeout_ms : h->timeout_ms;
        v->kind = MQR_SINK_ERR_TIMEOUT;
        v->err = UV_ETIMEDOUT;
        snprintf(detail, sizeof detail, "ETIMEDOUT: no answer after %g s (%s)", ms / 1000.0, what);
        break;
    }
    case CURLE_COULDNT_CONNECT:
        v->err = os_err(r, UV_ECONNREFUSED);
        snprintf(detail, sizeof detail, "%s: %s", uv_err_name(v->err), what);
        break;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        v->err = UV_EAI_NONAME;
        snprintf(detail, sizeof detail, "EAI_NONAME: %s", what);
        break;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
        v->err = os_err(r, UV_ECONNRESET);
        snprintf(detail, sizeof detail, "%s: %s", uv_err_name(v->err), what);
        break;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
        v->outcome = MQR_SINK_PERMANENT;
        v->err = MQR_ETLS;
        snprintf(detail, sizeof detail, "ETLS: %s", what);
        break;
    case CURLE_SSL_CONNECT_ERROR:
        v->err = MQR_ETLS;
        snprintf(detail, sizeof detail, "ETLS: %s", what);
        break;
    case CURLE_WRITE_ERROR:
    case CURLE_FILESIZE_EXCEEDED:
        if (r->too_big || rc == CURLE_FILESIZE_EXCEEDED) {
            v->outcome = MQR_SINK_PERMANENT;
            v->kind = MQR_SINK_ERR_OTHER;
            v->err = MQR_ETOOLARGE;
            snprintf(detail, sizeof detail, "ETOOLARGE: response body over %u bytes",
                     h->max_response_bytes);
        } else {
            v->kind = MQR_SINK_ERR_OTHER;
            v->err = MQR_ENOMEM;
            snprintf(detail, sizeof detail, "ENOMEM: %s", what);
        }
        break;
    case CURLE_OUT_OF_MEMORY:
        v->kind = MQR_SINK_ERR_OTHER;
        v->err = MQR_ENOMEM;
        snprintf(detail, sizeof detail, "ENOMEM: %s", what);
        break;
    default: /* a malformed answer, an HTTP/2 stream reset, ... */
        v->kind = MQR_SINK_ERR_SERVER;
        v->err = MQR_EPROTOCOL;
        snprintf(detail, sizeof detail, "EPROTOCOL: %s", what);
        break;
    }
    /* curl's messages name hosts and ports, never the user info; redact
     * anyway, a URL may still slip into one. */
    mqr__sink_redact(detail, v->reason, sizeof v->reason);
}

/* ---- finishing ---- */

static void fire(mqr_http_t *h, http_req_t *r, const mqr_http_resp_t *resp)
{
    h->depth++;
    r->done(r->arg, resp);
    h->depth--;
}

/* Ends r that failed before an answer (closing, or curl refused it). */
static void fail_req(mqr_http_t *h, http_req_t *r, int err, mqr_sink_err_kind_t kind,
                     const char *reason)
{
    uint64_t ns = uv_hrtime() - r->t0;
    origin_release(h, r);
    mqr__sink_done(&h->sink, r->waiting, ns, MQR_SINK_RETRY, kind, reason);
    mqr_http_resp_t resp = {.outcome = MQR_SINK_RETRY,
                            .err = err,
                            .reason = reason,
                            .body = "",
                            .seconds = (double)ns / 1e9};
    fire(h, r, &resp);
    req_release_easy(h, r);
    req_free(r);
}

/* Ends r with what its transfer came to: rc as curl says it, status and
 * HTTP version when an answer came. */
static void end_req(mqr_http_t *h, http_req_t *r, CURLcode rc, long status, long version)
{
    list_unlink(&h->active, r);
    if (version == CURL_HTTP_VERSION_2_0 && r->origin) r->origin->multiplex = true;
    origin_release(h, r);
    http_verdict_t v;
    judge(h, r, rc, status, &v);
    uint64_t ns = uv_hrtime() - r->t0;
    mqr__sink_done(&h->sink, false, ns, v.outcome, v.kind, v.reason[0] ? v.reason : NULL);
    if (status > 0) {
        if (!h->sink.up && h->was_down) h->sink.reconnects++;
        mqr__sink_set_up(&h->sink, true, NULL);
    } else if (v.kind == MQR_SINK_ERR_CONNECT) { /* a timeout is a slow server, not a lost one */
        if (h->sink.up) h->was_down = true;
        mqr__sink_set_up(&h->sink, false, v.reason);
    }

    mqr_http_header_t small[32], *hv = small;
    if (r->nrh > sizeof small / sizeof small[0]) {
        hv = malloc(r->nrh * sizeof *hv);
        if (!hv) {
            hv = small;
            r->nrh = 0; /* no room to show them */
        }
    }
    const char *p = r->rhdr;
    for (size_t i = 0; i < r->nrh; i++) {
        hv[i].name = p;
        p += strlen(p) + 1;
        hv[i].value = p;
        p += strlen(p) + 1;
    }
    mqr_http_resp_t resp = {
        .outcome = v.outcome,
        .err = v.err,
        .reason = v.reason[0] ? v.reason : NULL,
        .status = (int)status,
        .http_version = version == CURL_HTTP_VERSION_1_0   ? 10
                        : version == CURL_HTTP_VERSION_1_1 ? 11
                        : version == CURL_HTTP_VERSION_2_0 ? 20
                        : version == CURL_HTTP_VERSION_3   ? 30
                                                           : 0,
        .headers = hv,
        .nheaders = r->nrh,
        .body = r->rbody ? r->rbody : "",
        .body_len = r->rlen,
        .seconds = (double)ns / 1e9,
    };
    fire(h, r, &resp);
    if (hv != small) free(hv);
    req_release_easy(h, r);
    req_free(r);
}

static void finish(mqr_http_t *h, http_req_t *r, CURLcode rc)
{
    curl_multi_remove_handle(h->multi, r->easy);
    long status = 0, version = 0, conns = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(r->easy, CURLINFO_HTTP_VERSION, &version);
    if (curl_easy_getinfo(r->easy, CURLINFO_NUM_CONNECTS, &conns) == CURLE_OK && conns > 0)
        h->connections += (uint64_t)conns;
    end_req(h, r, rc, status, version);
}

void mqr__http_ended(mqr_http_t *h, http_req_t *r, CURLcode rc, long status, long version)
{
    end_req(h, r, rc, status, version);
}

/* ---- starting ---- */

static void setopt_fail(CURLcode *acc, CURLcode rc)
{
    if (rc != CURLE_OK && *acc == CURLE_OK) *acc = rc;
}

static int on_curl_close(void *clientp, curl_socket_t fd);

/* Puts r on the wire: 0, or MQR_ENOMEM (r untouched but for its handle). */
static int start(mqr_http_t *h, http_req_t *r)
{
    r->errbuf[0] = '\0';
    if (r->origin && r->origin->own) {
        int rc = mqr__h1_start(h, r);
        if (rc == 0) list_push(&h->active, r);
        return rc;
    }
    CURL *e = h->npool ? h->pool[--h->npool] : curl_easy_init();
    if (!e) return MQR_ENOMEM;
    curl_easy_reset(e); /* options only: the connections belong to the multi handle */
    r->easy = e;
    r->errbuf[0] = '\0';
    CURLcode rc = CURLE_OK;
#define SET(opt, val) setopt_fail(&rc, curl_easy_setopt(e, opt, val))
    SET(CURLOPT_URL, r->url);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_TCP_NODELAY, 1L);
    SET(CURLOPT_PRIVATE, r);
    SET(CURLOPT_CLOSESOCKETFUNCTION, on_curl_close);
    SET(CURLOPT_CLOSESOCKETDATA, h);
    SET(CURLOPT_ERRORBUFFER, r->errbuf);
    SET(CURLOPT_WRITEFUNCTION, mqr__http_on_body);
    SET(CURLOPT_WRITEDATA, r);
    SET(CURLOPT_HEADERFUNCTION, mqr__http_on_header);
    SET(CURLOPT_HEADERDATA, r);
    SET(CURLOPT_TIMEOUT_MS, (long)(r->timeout_ms ? r->timeout_ms : h->timeout_ms));
    SET(CURLOPT_CONNECTTIMEOUT_MS, (long)h->connect_timeout_ms);
    SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)h->max_response_bytes);
    SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    /* Over TLS, wait for a connection being set up rather than open a
     * second one: it may offer HTTP/2 and carry both. */
    if (strncmp(r->url, "https:", 6) == 0) SET(CURLOPT_PIPEWAIT, 1L);
    if (h->insecure) {
        SET(CURLOPT_SSL_VERIFYPEER, 0L);
        SET(CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (h->ca_file) SET(CURLOPT_CAINFO, h->ca_file);
    if (h->cert_file) SET(CURLOPT_SSLCERT, h->cert_file);
    if (h->key_file) SET(CURLOPT_SSLKEY, h->key_file);
    if (r->hdrs) SET(CURLOPT_HTTPHEADER, r->hdrs);
    if (strcmp(r->method, "HEAD") == 0) {
        SET(CURLOPT_NOBODY, 1L);
    } else if (strcmp(r->method, "GET") == 0 && !r->body_len) {
        SET(CURLOPT_HTTPGET, 1L);
    } else {
        if (strcmp(r->method, "POST") != 0) SET(CURLOPT_CUSTOMREQUEST, r->method);
        /* POST, PUT and PATCH say Content-Length: 0 when empty */
        if (r->body_len || strcmp(r->method, "DELETE") != 0) {
            SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
            SET(CURLOPT_POSTFIELDS, r->body ? r->body : "");
        }
    }
#undef SET
    if (rc != CURLE_OK || curl_multi_add_handle(h->multi, e) != CURLM_OK) {
        req_release_easy(h, r);
        return MQR_ENOMEM;
    }
    list_push(&h->active, r);
    return 0;
}

/* Gives free slots to waiting requests: an origin at a time, round
 * robin, oldest first within one. */
static void pump(mqr_http_t *h)
{
    http_origin_t *o;
    while (!h->closing && h->sink.in_flight < h->sink.max_in_flight && (o = ready_pop(h))) {
        if (!o->wait_head || !origin_has_room(h, o)) {
            origin_maybe_free(h, o);
            continue;
        }
        http_req_t *r = wait_pop(o);
        mqr__sink_start_waiting(&h->sink);
        r->waiting = false;
        o->active++;
        if (o->wait_head && origin_has_room(h, o)) ready_add(h, o);
        if (start(h, r) != 0) fail_req(h, r, MQR_ENOMEM, MQR_SINK_ERR_OTHER, "ENOMEM: no handle");
    }
}

/* ---- the loop side ---- */

static void teardown(mqr_http_t *h);

static void drain(mqr_http_t *h)
{
    CURLMsg *m;
    int left;
    while (!h->closing && (m = curl_multi_info_read(h->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        char *priv = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        finish(h, (http_req_t *)(void *)priv, m->data.result);
    }
    pump(h);
}

/* Every libuv callback of ours ends here: tell curl, read what finished,
 * and tear down if a done callback closed the client meanwhile. */
static void act(mqr_http_t *h, curl_socket_t fd, int events)
{
    int running;
    h->depth++;
    curl_multi_socket_action(h->multi, fd, events, &running);
    drain(h);
    h->depth--;
    if (h->closing && !h->torn && h->depth == 0) teardown(h);
}

void mqr__http_enter(mqr_http_t *h)
{
    h->depth++;
}

void mqr__http_leave(mqr_http_t *h)
{
    pump(h);
    h->depth--;
    if (h->closing && !h->torn && h->depth == 0) teardown(h);
}

void mqr__http_origin_unused(mqr_http_t *h, http_origin_t *o)
{
    origin_maybe_free(h, o);
}

void mqr__http_handle_gone(mqr_http_t *h)
{
    h->handles--;
    maybe_free(h);
}

static int sock_watch(http_sock_t *s, int events);

static void on_poll(uv_poll_t *p, int status, int events)
{
    http_sock_t *s = p->data;
    if (status < 0) s->events = 0; /* libuv stopped the watch */
    if (!s->wanted) {              /* an idle connection: curl checks it before reuse */
        sock_watch(s, 0);
        return;
    }
    int ev = 0;
    if (status < 0)
        ev = CURL_CSELECT_ERR;
    else {
        if (events & UV_READABLE) ev |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE) ev |= CURL_CSELECT_OUT;
    }
    act(s->h, s->fd, ev);
}

static void on_timer(uv_timer_t *t)
{
    act(t->data, CURL_SOCKET_TIMEOUT, 0);
}

static void maybe_free(mqr_http_t *h)
{
    if (!h->torn || h->handles) return;
    free(h->ca_file);
    free(h->cert_file);
    free(h->key_file);
    free(h->pool);
    free(h->by_fd);
    for (size_t i = 0; i < h->norigin_slots; i++) {
        http_origin_t *o = h->origins[i], *next;
        for (; o; o = next) {
            next = o->hnext;
            free(o);
        }
    }
    free(h->origins);
    free(h);
}

static void on_sock_closed(uv_handle_t *hd)
{
    http_sock_t *s = hd->data;
    mqr_http_t *h = s->h;
    free(s);
    h->handles--;
    maybe_free(h);
}

static void on_timer_closed(uv_handle_t *hd)
{
    mqr_http_t *h = hd->data;
    h->handles--;
    maybe_free(h);
}

static void sock_close(mqr_http_t *h, http_sock_t *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        h->socks = s->next;
    if (s->next) s->next->prev = s->prev;
    if ((size_t)s->fd < h->nby_fd) h->by_fd[s->fd] = NULL;
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

static http_sock_t *sock_find(const mqr_http_t *h, curl_socket_t fd)
{
    return fd >= 0 && (size_t)fd < h->nby_fd ? h->by_fd[fd] : NULL;
}

static http_sock_t *sock_new(mqr_http_t *h, curl_socket_t fd)
{
    if (fd < 0) return NULL;
    if ((size_t)fd >= h->nby_fd) {
        size_t n = h->nby_fd ? h->nby_fd : 64;
        while (n <= (size_t)fd)
            n *= 2;
        http_sock_t **grown = realloc(h->by_fd, n * sizeof *grown);
        if (!grown) return NULL;
        memset(grown + h->nby_fd, 0, (n - h->nby_fd) * sizeof *grown);
        h->by_fd = grown;
        h->nby_fd = n;
    }
    http_sock_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    if (uv_poll_init_socket(h->loop, &s->poll, fd) != 0) {
        free(s);
        return NULL;
    }
    s->h = h;
    s->fd = fd;
    s->poll.data = s;
    s->next = h->socks;
    if (h->socks) h->socks->prev = s;
    h->socks = s;
    h->by_fd[fd] = s;
    h->handles++;
    return s;
}

static int sock_watch(http_sock_t *s, int events)
{
    if (events == s->events) return 0;
    int rc = events ? uv_poll_start(&s->poll, events, on_poll) : uv_poll_stop(&s->poll);
    if (rc == 0) s->events = events;
    return rc;
}

/* CURLMOPT_SOCKETFUNCTION: watch fd for what curl wants. On "remove" a
 * readable watch stays (the socket idles in curl's cache; on_poll stops
 * it if the server speaks or hangs up meanwhile); a writable one stops,
 * since it would fire at once. */
static int on_curl_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)e;
    (void)socketp;
    mqr_http_t *h = userp;
    http_sock_t *s = sock_find(h, fd);
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            s->wanted = false;
            uv_unref((uv_handle_t *)&s->poll); /* an idle watch keeps no loop running */
            if (s->events & UV_WRITABLE) sock_watch(s, 0);
        }
        return 0;
    }
    if (!s && !(s = sock_new(h, fd))) return -1;
    s->wanted = true;
    uv_ref((uv_handle_t *)&s->poll);
    int ev = 0;
    if (what & CURL_POLL_IN) ev |= UV_READABLE;
    if (what & CURL_POLL_OUT) ev |= UV_WRITABLE;
    return sock_watch(s, ev) == 0 ? 0 : -1;
}

/* CURLOPT_CLOSESOCKETFUNCTION: the watch ends before the fd is closed, so
 * a new socket given the same number starts clean. */
static int on_curl_close(void *clientp, curl_socket_t fd)
{
    mqr_http_t *h = clientp;
    http_sock_t *s = sock_find(h, fd);
    if (s) sock_close(h, s);
    return close(fd);
}

/* CURLMOPT_TIMERFUNCTION: one timer; never act from here (curl forbids). */
static int on_curl_timer(CURLM *m, long ms, void *userp)
{
    mqr_http_t *h = userp;
    if (ms < 0 || h->torn)
        uv_timer_stop(&h->timer);
    else
        uv_timer_start(&h->timer, on_timer, (uint64_t)ms, 0);
    return 0;
}

/* ---- closing ---- */

static void teardown(mqr_http_t *h)
{
    h->torn = true;
    for (size_t i = 0; i < h->norigin_slots; i++) {
        http_origin_t *o = h->origins[i], *next;
        for (; o; o = next) {
            next = o->hnext; /* closing its last connection may free o */
            mqr__h1_close_all(h, o);
        }
    }
    for (size_t i = 0; i < h->npool; i++)
        curl_easy_cleanup(h->pool[i]);
    h->npool = 0;
    curl_multi_cleanup(h->multi); /* may still tell socket_cb to remove */
    h->multi = NULL;
    while (h->socks)
        sock_close(h, h->socks);
    uv_timer_stop(&h->timer);
    uv_close((uv_handle_t *)&h->timer, on_timer_closed);
}

void mqr__http_close(mqr_http_t *h)
{
    if (!h || h->closing) return;
    h->closing = true;
    h->depth++;
    while (h->active) {
        http_req_t *r = h->active;
        list_unlink(&h->active, r);
        if (r->easy)
            curl_multi_remove_handle(h->multi, r->easy);
        else
            mqr__h1_cancel(h, r);
        fail_req(h, r, MQR_ECLOSED, MQR_SINK_ERR_OTHER, "ECLOSED: client closed");
    }
    http_origin_t *o;
    while ((o = ready_pop(h)))
        origin_maybe_free(h, o);
    for (size_t i = 0; i < h->norigin_slots; i++) {
        o = h->origins[i];
        while (o) {
            http_origin_t *next = o->hnext;
            http_req_t *r;
            while ((r = wait_pop(o))) {
                bool last = !o->wait_head; /* failing it frees o */
                fail_req(h, r, MQR_ECLOSED, MQR_SINK_ERR_OTHER, "ECLOSED: client closed");
                if (last) break;
            }
            o = next;
        }
    }
    h->depth--;
    if (h->depth == 0) teardown(h);
}

/* ---- making one ---- */

static int new_fail(char **errmsg, int rc, const char *fmt, const char *arg)
{
    if (errmsg) {
        char buf[512];
        snprintf(buf, sizeof buf, fmt, arg ? arg : "");
        *errmsg = strdup(buf);
    }
    return rc;
}

int mqr__http_new(uv_loop_t *loop, const mqr_http_opts_t *o, mqr_http_t **out, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    if (!loop || !out) return new_fail(errmsg, MQR_EINVAL, "http: NULL loop or out%s", "");
    *out = NULL;
    mqr_http_opts_t d = {0};
    if (!o) o = &d;
    const char *files[3] = {o->ca_file, o->cert_file, o->key_file};
    for (int i = 0; i < 3; i++)
        if (files[i] && *files[i] && access(files[i], R_OK) != 0)
            return new_fail(errmsg, MQR_EINVAL, "http: cannot read %s", files[i]);
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return new_fail(errmsg, MQR_ENOMEM, "http: curl_global_init failed%s", "");
        curl_ready = true;
    }
    mqr_http_t *h = calloc(1, sizeof *h);
    if (!h) return new_fail(errmsg, MQR_ENOMEM, "http: out of memory%s", "");
    mqr__sink_init(&h->sink, "http", o->name && *o->name ? o->name : "http",
                   o->target ? o->target : "", o->max_in_flight ? o->max_in_flight : 256,
                   o->max_queued ? o->max_queued : 10000);
    h->loop = loop;
    h->timeout_ms = o->timeout_ms ? o->timeout_ms : 10000;
    h->connect_timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms : 5000;
    h->max_response_bytes = o->max_response_bytes ? o->max_response_bytes : 16u << 20;
    h->insecure = o->insecure;
    h->curl_only = o->curl_only;
    h->ca_file = dup_or_null(o->ca_file);
    h->cert_file = dup_or_null(o->cert_file);
    h->key_file = dup_or_null(o->key_file);
    h->pool_cap = h->sink.max_in_flight < 1024 ? h->sink.max_in_flight : 1024;
    h->pool = calloc(h->pool_cap, sizeof *h->pool);
    h->multi = curl_multi_init();
    uint32_t per_host = o->max_host_connections ? o->max_host_connections : 16;
    h->per_host = per_host;
    if (!h->pool || !h->multi || (o->ca_file && !h->ca_file) || (o->cert_file && !h->cert_file) ||
        (o->key_file && !h->key_file)) {
        if (h->multi) curl_multi_cleanup(h->multi);
        free(h->ca_file);
        free(h->cert_file);
        free(h->key_file);
        free(h->pool);
        free(h);
        return new_fail(errmsg, MQR_ENOMEM, "http: out of memory%s", "");
    }
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)per_host);
    /* The idle cache: enough to keep every busy host's connections. */
    long cache = (long)(h->sink.max_in_flight > per_host ? h->sink.max_in_flight : per_host);
    curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, cache);
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    h->handles = 1;
    *out = h;
    return 0;
}

mqr_sink_t *mqr__http_sink(mqr_http_t *h)
{
    return &h->sink;
}

uint64_t mqr__http_connections(const mqr_http_t *h)
{
    return h->connections;
}

/* ---- one request ---- */

static const char *const methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"};

/* MQR_EINVAL and why, or 0 and *url (curl_free) normalised. */
static int check_url(const char *url, char **norm, char *why, size_t why_cap)
{
    CURLU *u = curl_url();
    if (!u) return MQR_ENOMEM;
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, url, 0);
    if (uc != CURLUE_OK) {
        set_why(why, why_cap, "malformed URL: %s", curl_url_strerror(uc));
        curl_url_cleanup(u);
        return uc == CURLUE_OUT_OF_MEMORY ? MQR_ENOMEM : MQR_EINVAL;
    }
    char *scheme = NULL;
    int rc = 0;
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)) {
        char s[32];
        snprintf(s, sizeof s, "%s", scheme ? scheme : "?");
        set_why(why, why_cap, "URL scheme \"%s\" is not http or https", s);
        rc = MQR_EINVAL;
    } else if (curl_url_get(u, CURLUPART_URL, norm, 0) != CURLUE_OK) {
        rc = MQR_ENOMEM;
    }
    curl_free(scheme);
    curl_url_cleanup(u);
    return rc;
}

/* MQR_EINVAL and why, or 0. The value is never quoted: it may be a secret. */
static int check_headers(const mqr_http_req_t *q, char *why, size_t why_cap)
{
    if (q->nheaders && !q->headers) {
        set_why(why, why_cap, "headers: NULL with nheaders > 0%s", "");
        return MQR_EINVAL;
    }
    for (size_t i = 0; i < q->nheaders; i++) {
        const char *n = q->headers[i].name, *v = q->headers[i].value;
        char idx[32];
        snprintf(idx, sizeof idx, "%zu", i + 1);
        if (!n || !*n || !v) {
            set_why(why, why_cap, "header %s: NULL or empty name, or NULL value", idx);
            return MQR_EINVAL;
        }
        if (n[strcspn(n, ":\r\n \t")]) {
            set_why(why, why_cap, "header %s: name holds ':', a space, CR or LF", idx);
            return MQR_EINVAL;
        }
        if (v[strcspn(v, "\r\n")]) {
            set_why(why, why_cap, "header %s: value holds CR or LF", idx);
            return MQR_EINVAL;
        }
    }
    return 0;
}

/* Builds the header list: "Name: value", or "Name;" for an empty value
 * (curl drops "Name:"); "Expect:" stops curl's 100-continue wait on large
 * bodies unless the caller asked for it. */
static int build_headers(const mqr_http_req_t *q, struct curl_slist **out)
{
    struct curl_slist *l = NULL;
    bool expect = false;
    for (size_t i = 0; i < q->nheaders; i++) {
        const char *n = q->headers[i].name, *v = q->headers[i].value;
        if (strcasecmp(n, "expect") == 0) expect = true;
        size_t len = strlen(n) + strlen(v) + 3;
        char *line = malloc(len);
        if (!line) goto oom;
        if (*v)
            snprintf(line, len, "%s: %s", n, v);
        else
            snprintf(line, len, "%s;", n);
        struct curl_slist *nl = curl_slist_append(l, line);
        free(line);
        if (!nl) goto oom;
        l = nl;
    }
    if (!expect && q->body_len) {
        struct curl_slist *nl = curl_slist_append(l, "Expect:");
        if (!nl) goto oom;
        l = nl;
    }
    *out = l;
    return 0;
oom:
    curl_slist_free_all(l);
    return MQR_ENOMEM;
}

int mqr__http_request(mqr_http_t *h, const mqr_http_req_t *q, mqr_http_done_fn done, void *arg,
                      char *why, size_t why_cap)
{
    if (why && why_cap) why[0] = '\0';
    if (!h || !q || !done || !q->method || !q->url) {
        set_why(why, why_cap, "NULL client, request, method, URL or callback%s", "");
        return MQR_EINVAL;
    }
    if (h->closing) return MQR_ECLOSED;
    const char *method = NULL;
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (strcmp(q->method, methods[i]) == 0) method = methods[i];
    if (!method) {
        char m[16];
        snprintf(m, sizeof m, "%s", q->method);
        set_why(why, why_cap, "method \"%s\" is not GET POST PUT PATCH DELETE or HEAD", m);
        return MQR_EINVAL;
    }
    if (q->body_len && !q->body) {
        set_why(why, why_cap, "body: NULL with body_len > 0%s", "");
        return MQR_EINVAL;
    }
    if (q->body_len && method == methods[5]) {
        set_why(why, why_cap, "HEAD takes no body%s", "");
        return MQR_EINVAL;
    }
    int rc = check_headers(q, why, why_cap);
    if (rc) return rc;
    char *url = NULL;
    rc = check_url(q->url, &url, why, why_cap);
    if (rc) return rc;

    http_req_t *r = calloc(1, sizeof *r);
    if (!r) {
        curl_free(url);
        return MQR_ENOMEM;
    }
    r->h = h;
    r->url = url;
    r->method = method;
    r->timeout_ms = q->timeout_ms;
    r->done = done;
    r->arg = arg;
    if (q->body_len) {
        r->body = malloc(q->body_len);
        if (!r->body) {
            req_free(r);
            return MQR_ENOMEM;
        }
        memcpy(r->body, q->body, q->body_len);
        r->body_len = q->body_len;
    }
    if (build_headers(q, &r->hdrs) != 0) {
        req_free(r);
        return MQR_ENOMEM;
    }
    http_origin_t *o = origin_get(h, r->url);
    if (!o) {
        req_free(r);
        return MQR_ENOMEM;
    }
    bool waits;
    rc = mqr__sink_admit_if(&h->sink, !o->wait_head && origin_has_room(h, o), &waits);
    if (rc) {
        origin_maybe_free(h, o);
        req_free(r);
        return rc;
    }
    r->origin = o;
    r->t0 = uv_hrtime();
    r->waiting = waits;
    if (waits) {
        wait_push(o, r);
        if (origin_has_room(h, o)) ready_add(h, o); /* waits for max_in_flight only */
        return 0;
    }
    o->active++;
    /* curl only arms its timer here; the transfer moves when the loop runs */
    rc = start(h, r);
    if (rc) {
        /* take the admission back: this request never was */
        h->sink.in_flight--;
        h->sink.requests--;
        r->waiting = false;
        origin_release(h, r);
        req_free(r);
        return rc;
    }
    return 0;
}
