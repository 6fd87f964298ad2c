/*
 * http1.c — the HTTP sink's own HTTP/1.1 connections, for plain http://
 * origins (http_int.h). libcurl costs about 35 µs of CPU a request here,
 * three times a bare socket client, and caps a rules route near 17 k
 * requests/s on this machine; for a webhook in the clear we write the
 * request ourselves and read the answer with http-parser, on libuv
 * streams. HTTPS, HTTP/2 and URLs with user info stay with libcurl.
 *
 * A connection carries one request at a time (no pipelining) and stays
 * open for the next when the answer allows keep-alive; its origin's
 * admission (http.c) gives it no more requests than max_host_connections.
 * Outcomes are told as the CURLcode curl would have given, so both halves
 * judge them alike. A request that finds its reused connection closed by
 * the server before any answer byte goes once more on a new connection,
 * as curl does. Must not: end a request twice, free a connection before
 * libuv gave back its handles, or put the URL's query in a message.
 */
#include "http_int.h"

#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct h1_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t connect;
    uv_write_t write;
    uv_getaddrinfo_t lookup;
    mqr_http_t *h;
    http_origin_t *o; /* NULL once closing */
    h1_conn_t *next;  /* o->conns */
    http_req_t *r;    /* on it now; NULL when idle */
    http_parser parser;
    char *out;     /* the request being written */
    mqr_buf_t hdr; /* a header line being put together: "name: value" */
    bool in_value;
    bool done;      /* the answer is complete */
    bool got_bytes; /* of the answer to r */
    bool connected, closing;
    bool looking_up;
    uint32_t served; /* answers it carried: a reused connection when > 0 */
    int refs;        /* handles and requests libuv has not given back */
};

/* ---- the origin's host and port ---- */

/* host (brackets kept for IPv6) and port of an origin key "http://authority". */
static void split_authority(const http_origin_t *o, char *host, size_t cap, char *port, size_t pcap)
{
    const char *a = o->key + 7, *end = o->key + o->keylen;
    const char *colon = NULL;
    if (*a == '[') {
        const char *rb = memchr(a, ']', (size_t)(end - a));
        if (rb && rb + 1 < end && rb[1] == ':') colon = rb + 1;
    } else {
        colon = memchr(a, ':', (size_t)(end - a));
    }
    const char *hend = colon ? colon : end;
    snprintf(host, cap, "%.*s", (int)(hend - a), a);
    if (colon)
        snprintf(port, pcap, "%.*s", (int)(end - colon - 1), colon + 1);
    else
        snprintf(port, pcap, "80");
}

/* ---- closing ---- */

static void conn_unref(h1_conn_t *c)
{
    if (--c->refs) return;
    mqr_http_t *h = c->h;
    free(c->out);
    mqr__buf_free(&c->hdr);
    free(c);
    mqr__http_handle_gone(h);
}

static void on_handle_closed(uv_handle_t *hd)
{
    conn_unref(hd->data);
}

static void conn_detach(h1_conn_t *c)
{
    http_origin_t *o = c->o;
    if (!o) return;
    h1_conn_t **p = &o->conns;
    while (*p && *p != c)
        p = &(*p)->next;
    if (*p) *p = c->next;
    o->nconns--;
    c->o = NULL;
    mqr__http_origin_unused(c->h, o);
}

/* Closes c (its request, if any, is the caller's). */
static void conn_close(h1_conn_t *c)
{
    if (c->closing) return;
    c->closing = true;
    c->r = NULL;
    conn_detach(c);
    if (c->looking_up) uv_cancel((uv_req_t *)&c->lookup);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

/* ---- ending a request ---- */

/* Ends c's request with rc; the connection closes unless keep says. */
static void conn_end(h1_conn_t *c, CURLcode rc, long status, bool keep)
{
    long version = !status                     ? 0
                   : c->parser.http_minor == 0 ? CURL_HTTP_VERSION_1_0
                                               : CURL_HTTP_VERSION_1_1;
    http_req_t *r = c->r;
    mqr_http_t *h = c->h;
    c->r = NULL;
    uv_timer_stop(&c->timer);
    if (keep && !c->closing) {
        c->served++;
        uv_unref((uv_handle_t *)&c->tcp); /* an idle connection keeps no loop running */
    } else {
        conn_close(c);
    }
    if (r) {
        r->conn = NULL;
        mqr__http_ended(h, r, rc, status, version);
    }
}

static void conn_send(h1_conn_t *c);

/* A failure before any byte of the answer on a reused connection: the
 * server closed it while it idled; r goes again on a new one, once. */
static bool refresh(h1_conn_t *c)
{
    http_req_t *r = c->r;
    if (!r || c->got_bytes || !c->served || r->refreshed) return false;
    r->refreshed = true;
    c->r = NULL;
    r->conn = NULL;
    conn_close(c);
    if (mqr__h1_start(c->h, r) != 0) {
        snprintf(r->errbuf, sizeof r->errbuf, "out of memory for a new connection");
        mqr__http_ended(c->h, r, CURLE_OUT_OF_MEMORY, 0, 0);
    }
    return true;
}

static void fail_io(h1_conn_t *c, CURLcode rc, int err, const char *what)
{
    if (refresh(c)) return;
    if (c->r) {
        c->r->os_err = err;
        snprintf(c->r->errbuf, sizeof c->r->errbuf, "%s: %s", what, uv_strerror(err));
    }
    conn_end(c, rc, 0, false);
}

/* ---- the answer ---- */

static int flush_header(h1_conn_t *c)
{
    if (!c->hdr.len || !c->r) return 0;
    size_t n = mqr__http_on_header(c->hdr.p, 1, c->hdr.len, c->r);
    mqr__buf_reset(&c->hdr);
    c->in_value = false;
    return n ? 0 : -1;
}

static int hdr_add(h1_conn_t *c, const char *p, size_t n)
{
    if (c->hdr.len + n > HTTP_MAX_HEADER_BYTES) return -1;
    mqr__buf_add(&c->hdr, p, n);
    return c->hdr.failed ? -1 : 0;
}

static int on_field(http_parser *p, const char *at, size_t n)
{
    h1_conn_t *c = p->data;
    if (c->in_value && flush_header(c) != 0) return -1;
    return hdr_add(c, at, n);
}

static int on_value(http_parser *p, const char *at, size_t n)
{
    h1_conn_t *c = p->data;
    if (!c->in_value) {
        c->in_value = true;
        if (hdr_add(c, ": ", 2) != 0) return -1;
    }
    return hdr_add(c, at, n);
}

static int on_headers_done(http_parser *p)
{
    h1_conn_t *c = p->data;
    if (flush_header(c) != 0) return -1;
    /* HEAD: no body follows, whatever Content-Length says */
    return c->r && strcmp(c->r->method, "HEAD") == 0 ? 1 : 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    h1_conn_t *c = p->data;
    if (!c->r) return -1;
    return mqr__http_on_body((char *)at, 1, n, c->r) == n ? 0 : -1;
}

static int on_complete(http_parser *p)
{
    h1_conn_t *c = p->data;
    if (p->status_code / 100 == 1 && p->status_code != 101) {
        /* an interim answer (100 Continue, 103 Early Hints): the real one
         * follows; its headers replace these, as a new status line does
         * for curl's header callback */
        static char status_line[] = "HTTP/1.1 100\r\n";
        if (c->r) mqr__http_on_header(status_line, 1, sizeof status_line - 1, c->r);
        return 0;
    }
    c->done = true;
    http_parser_pause(p, 1); /* anything after the answer is not ours */
    return 0;
}

static const http_parser_settings parse = {
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_headers_complete = on_headers_done,
    .on_body = on_body,
    .on_message_complete = on_complete,
};

/* What the parser made of the answer so far, after n bytes (n 0: EOF). */
static void answer_read(h1_conn_t *c, const char *p, size_t n)
{
    size_t used = http_parser_execute(&c->parser, &parse, p, n);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (c->done) {
        bool keep = used == n && http_should_keep_alive(&c->parser);
        conn_end(c, CURLE_OK, c->parser.status_code, keep);
        return;
    }
    if (e == HPE_OK && used == n && n) return; /* more to come */
    http_req_t *r = c->r;
    if (r && r->too_big) {
        conn_end(c, CURLE_WRITE_ERROR, 0, false);
    } else if (!n) {
        fail_io(c, c->got_bytes ? CURLE_RECV_ERROR : CURLE_GOT_NOTHING, UV_ECONNRESET,
                c->got_bytes ? "connection closed in the middle of the answer"
                             : "empty reply from server");
    } else {
        if (r)
            snprintf(r->errbuf, sizeof r->errbuf, "malformed answer: %s",
                     http_errno_description(e));
        conn_end(c, CURLE_WEIRD_SERVER_REPLY, 0, false);
    }
}

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf)
{
    (void)hd;
    (void)suggested;
    /* a read is parsed before the next: one buffer per thread serves
     * every connection of the engines running on it */
    static _Thread_local char slab[65536];
    *buf = uv_buf_init(slab, sizeof slab);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    h1_conn_t *c = s->data;
    mqr_http_t *h = c->h;
    if (n == 0 || c->closing) return;
    mqr__http_enter(h);
    if (!c->r) { /* idle: the server hung up (or spoke out of turn) */
        conn_close(c);
    } else if (n == UV_EOF) {
        answer_read(c, NULL, 0);
    } else if (n < 0) {
        fail_io(c, c->got_bytes ? CURLE_RECV_ERROR : CURLE_GOT_NOTHING, (int)n, "receive failed");
    } else {
        c->got_bytes = true;
        answer_read(c, buf->base, (size_t)n);
    }
    mqr__http_leave(h);
}

/* ---- the request ---- */

static void on_timeout(uv_timer_t *t)
{
    h1_conn_t *c = t->data;
    mqr_http_t *h = c->h;
    mqr__http_enter(h);
    if (c->r) {
        c->r->os_err = UV_ETIMEDOUT;
        snprintf(c->r->errbuf, sizeof c->r->errbuf, "%s",
                 c->connected ? "no answer in time" : "connect timed out");
    }
    conn_end(c, CURLE_OPERATION_TIMEDOUT, 0, false);
    mqr__http_leave(h);
}

static void on_written(uv_write_t *w, int status)
{
    h1_conn_t *c = w->data;
    mqr_http_t *h = c->h;
    free(c->out);
    c->out = NULL;
    if (status < 0 && status != UV_ECANCELED && !c->closing) {
        mqr__http_enter(h);
        fail_io(c, CURLE_SEND_ERROR, status, "send failed");
        mqr__http_leave(h);
    }
    conn_unref(c); /* the write's reference, last: c may go with it */
}

/* The request as curl would have sent it: Host, Accept, the caller's
 * headers ("Name;" for an empty value), a length for a body, and the
 * form content type curl gives a POST body nobody typed. */
static int build(h1_conn_t *c, http_req_t *r, mqr_buf_t *b)
{
    const char *path = r->url + c->o->keylen;
    size_t plen = strcspn(path, "#");
    mqr__buf_str(b, r->method);
    mqr__buf_add(b, " ", 1);
    if (!plen) mqr__buf_add(b, "/", 1);
    mqr__buf_add(b, path, plen);
    mqr__buf_str(b, " HTTP/1.1");
    bool host = false;
    for (const struct curl_slist *l = r->hdrs; l; l = l->next)
        host = host || strncasecmp(l->data, "host:", 5) == 0 || strcasecmp(l->data, "host;") == 0;
    if (!host) { /* the caller's Host replaces ours, as with curl */
        const char *auth = c->o->key + 7;
        size_t alen = c->o->keylen - 7;
        if (alen > 3 && memcmp(auth + alen - 3, ":80", 3) == 0) alen -= 3;
        mqr__buf_str(b, "\r\nHost: ");
        mqr__buf_add(b, auth, alen);
    }
    bool ctype = false, accept = false;
    for (const struct curl_slist *l = r->hdrs; l; l = l->next) {
        const char *line = l->data;
        size_t n = strlen(line);
        if (strcasecmp(line, "Expect:") == 0) continue;
        if (n && line[n - 1] == ';') { /* "Name;": the header with no value */
            mqr__buf_str(b, "\r\n");
            mqr__buf_add(b, line, n - 1);
            mqr__buf_add(b, ":", 1);
            continue;
        }
        ctype = ctype || strncasecmp(line, "content-type:", 13) == 0;
        accept = accept || strncasecmp(line, "accept:", 7) == 0;
        mqr__buf_str(b, "\r\n");
        mqr__buf_add(b, line, n);
    }
    if (!accept) mqr__buf_str(b, "\r\nAccept: */*");
    bool has_body = strcmp(r->method, "GET") != 0 && strcmp(r->method, "HEAD") != 0 &&
                    (r->body_len || strcmp(r->method, "DELETE") != 0);
    if (has_body) {
        char len[48];
        snprintf(len, sizeof len, "\r\nContent-Length: %zu", r->body_len);
        mqr__buf_str(b, len);
        if (!ctype) mqr__buf_str(b, "\r\nContent-Type: application/x-www-form-urlencoded");
    }
    mqr__buf_str(b, "\r\n\r\n");
    if (has_body && r->body_len) mqr__buf_add(b, r->body, r->body_len);
    return b->failed ? MQR_ENOMEM : 0;
}

static void conn_send(h1_conn_t *c)
{
    http_req_t *r = c->r;
    mqr_buf_t b = {0};
    if (build(c, r, &b) != 0) {
        free(b.p);
        snprintf(r->errbuf, sizeof r->errbuf, "out of memory");
        conn_end(c, CURLE_OUT_OF_MEMORY, 0, true);
        return;
    }
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    c->done = c->got_bytes = c->in_value = false;
    mqr__buf_reset(&c->hdr);
    uint32_t ms = r->timeout_ms ? r->timeout_ms : c->h->timeout_ms;
    uv_timer_start(&c->timer, on_timeout, ms, 0);
    uv_buf_t buf = uv_buf_init(b.p, (unsigned)b.len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &buf, 1);
    if (n == (int)b.len) {
        free(b.p);
        return;
    }
    if (n < 0 && n != UV_EAGAIN) {
        free(b.p);
        fail_io(c, CURLE_SEND_ERROR, n, "send failed");
        return;
    }
    size_t done = n > 0 ? (size_t)n : 0;
    c->out = b.p;
    buf = uv_buf_init(b.p + done, (unsigned)(b.len - done));
    c->write.data = c;
    c->refs++;
    int rc = uv_write(&c->write, (uv_stream_t *)&c->tcp, &buf, 1, on_written);
    if (rc != 0) {
        c->refs--;
        free(c->out);
        c->out = NULL;
        fail_io(c, CURLE_SEND_ERROR, rc, "send failed");
    }
}

/* ---- connecting ---- */

static void on_connected(uv_connect_t *req, int status)
{
    h1_conn_t *c = req->data;
    mqr_http_t *h = c->h;
    if (c->closing || status == UV_ECANCELED) {
        conn_unref(c); /* the connect request's reference */
        return;
    }
    mqr__http_enter(h);
    if (status < 0) {
        char host[256], port[16];
        split_authority(c->o, host, sizeof host, port, sizeof port);
        if (c->r) {
            c->r->os_err = status;
            snprintf(c->r->errbuf, sizeof c->r->errbuf, "failed to connect to %.200s port %s: %s",
                     host, port, uv_strerror(status));
        }
        conn_end(c, CURLE_COULDNT_CONNECT, 0, false);
    } else {
        c->connected = true;
        h->connections++;
        uv_tcp_nodelay(&c->tcp, 1);
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
        if (c->r) conn_send(c);
    }
    conn_unref(c);
    mqr__http_leave(h);
}

static void on_looked_up(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    h1_conn_t *c = req->data;
    mqr_http_t *h = c->h;
    c->looking_up = false;
    if (c->closing || status == UV_ECANCELED) {
        uv_freeaddrinfo(res);
        conn_unref(c); /* the lookup's reference */
        return;
    }
    mqr__http_enter(h);
    int rc = status;
    if (rc == 0) {
        /* IPv4 first: "localhost" often names ::1 first while the server
         * listens on 127.0.0.1 only (curl would try both in turn) */
        struct addrinfo *a = res;
        while (a && a->ai_family != AF_INET)
            a = a->ai_next;
        c->connect.data = c;
        c->refs++;
        rc = uv_tcp_connect(&c->connect, &c->tcp, (a ? a : res)->ai_addr, on_connected);
        if (rc != 0) c->refs--;
    }
    uv_freeaddrinfo(res);
    if (rc != 0 && !c->r) {
        conn_close(c);
    } else if (rc != 0) {
        char host[256], port[16];
        split_authority(c->o, host, sizeof host, port, sizeof port);
        c->r->os_err = rc;
        snprintf(c->r->errbuf, sizeof c->r->errbuf, "could not %s %.200s: %s",
                 status ? "resolve host" : "connect to", host, uv_strerror(rc));
        conn_end(c, status ? CURLE_COULDNT_RESOLVE_HOST : CURLE_COULDNT_CONNECT, 0, false);
    }
    conn_unref(c);
    mqr__http_leave(h);
}

static h1_conn_t *conn_new(mqr_http_t *h, http_origin_t *o)
{
    h1_conn_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    char host[256], port[16];
    split_authority(o, host, sizeof host, port, sizeof port);
    size_t hl = strlen(host);
    if (hl >= 2 && host[0] == '[') { /* an IPv6 literal: without the brackets */
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    c->h = h;
    c->o = o;
    uv_tcp_init(h->loop, &c->tcp);
    uv_timer_init(h->loop, &c->timer);
    c->tcp.data = c->timer.data = c->lookup.data = c;
    c->refs = 2;
    h->handles++;
    c->next = o->conns;
    o->conns = c;
    o->nconns++;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    c->looking_up = true;
    c->refs++;
    int rc = uv_getaddrinfo(h->loop, &c->lookup, on_looked_up, host, port, &hints);
    if (rc != 0) {
        c->looking_up = false;
        c->refs--;
        conn_close(c);
        return NULL;
    }
    return c;
}

/* ---- what http.c calls ---- */

int mqr__h1_start(mqr_http_t *h, http_req_t *r)
{
    http_origin_t *o = r->origin;
    h1_conn_t *c = o->conns;
    while (c && (c->r || !c->connected || c->closing))
        c = c->next;
    if (!c) {
        /* one still connecting and free takes it; else a new one */
        for (c = o->conns; c && (c->r || c->connected); c = c->next)
            ;
    }
    if (!c && !(c = conn_new(h, o))) return MQR_ENOMEM;
    c->r = r;
    r->conn = c;
    r->os_err = 0;
    uv_ref((uv_handle_t *)&c->tcp);
    if (c->connected) {
        conn_send(c);
    } else {
        uint32_t ms = h->connect_timeout_ms;
        uint32_t all = r->timeout_ms ? r->timeout_ms : h->timeout_ms;
        uv_timer_start(&c->timer, on_timeout, ms < all ? ms : all, 0);
    }
    return 0;
}

void mqr__h1_cancel(mqr_http_t *h, http_req_t *r)
{
    (void)h;
    h1_conn_t *c = r->conn;
    if (!c) return;
    r->conn = NULL;
    c->r = NULL;
    conn_close(c);
}

void mqr__h1_close_all(mqr_http_t *h, http_origin_t *o)
{
    (void)h;
    for (uint32_t n = o->nconns; n; n--) { /* closing the last may free o */
        h1_conn_t *c = o->conns;
        if (c->r) c->r->conn = NULL;
        conn_close(c);
    }
}
