/*
 * server.c — the admin API's HTTP/1.1 server on the engine's loop.
 *
 * libuv accepts and reads; http-parser (Debian libhttp-parser) frames
 * requests, so no HTTP is parsed by hand. Each complete request is answered
 * at once by routes.c (every endpoint is synchronous on the loop thread),
 * which keeps pipelined requests in order, after guard.c let it through
 * (Host, Origin, content type). Limits: request target, headers and body
 * sizes (413/431/414), a time limit for a request to arrive whole
 * (slowloris), an idle timeout for keep-alive connections, and connections
 * at once, where a new one makes room by closing the oldest idle one (so
 * idle sockets any local process opens cannot lock out a scrape). Every
 * answer carries headers that keep browsers from sniffing, framing or
 * caching it. It must not block the loop: no request does disk or network
 * waits here.
 */
#include "admin_int.h"
#include "engine.h"

#include "abi.h"
#include "log.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#ifdef MQR_ADMIN_HAVE_TSC
#include <cpuid.h>
#endif

/* The request headers kept (guard.c and routes.c look at them). */
enum { AH_AUTHORIZATION, AH_HOST, AH_ORIGIN, AH_CONTENT_TYPE, AH_FETCH_SITE, AH_N };
static const char *const kept_headers[AH_N] = {"authorization", "host", "origin", "content-type",
                                               "sec-fetch-site"};

struct mqr_aconn {
    mqr_admin_t *a;
    mqr_aconn_t *prev, *next;
    uv_tcp_t tcp;
    uv_timer_t timer;
    http_parser parser;
    mqr_buf_t url, body, hfield, hvalue;
    mqr_buf_t hdr[AH_N];
    unsigned char seen[AH_N]; /* how often each came (a second Host is refused) */
    bool in_value;
    bool in_request;     /* a request has begun and is not complete yet */
    bool body_announced; /* Content-Length > 0 or chunked */
    uint64_t since_ms;   /* accepted, or the last request began or was answered */
    size_t header_bytes;
    int error_status; /* a limit a callback hit: answered with this, then closed */
    bool closing;
    bool close_after; /* close once the writes are done */
    /* backpressure: a client not reading its answers (pipelining) stops
     * being read, its unparsed bytes kept, until the output drains */
    bool held;
    char *pending;
    size_t pending_len;
    unsigned writes;
    unsigned handles;
};

bool mqr__admin_use_tsc = false;
double mqr__admin_ns_per_tick = 1.0;

#ifdef MQR_ADMIN_HAVE_TSC
static void clock_calibrate(void)
{
    unsigned a, b, c, d;
    /* CPUID 0x80000007 EDX bit 8: invariant TSC (constant rate, runs in
     * every C-state), so ticks measure time on any core */
    if (!__get_cpuid(0x80000007, &a, &b, &c, &d) || !(d & (1u << 8))) return;
    uint64_t h0 = uv_hrtime(), t0 = __rdtsc(), h1, t1;
    do { /* 2 ms against uv_hrtime: its own cost is 0.003 % of that */
        h1 = uv_hrtime();
        t1 = __rdtsc();
    } while (h1 - h0 < 2000000);
    if (t1 <= t0) return;
    mqr__admin_ns_per_tick = (double)(h1 - h0) / (double)(t1 - t0);
    mqr__admin_use_tsc = true; /* last: the factor is set before anyone reads ticks */
}
#endif

void mqr__admin_clock_init(void)
{
#ifdef MQR_ADMIN_HAVE_TSC
    /* engines may start admin servers on different threads at once; uv_once
     * runs the calibration once and makes every caller wait for its end */
    static uv_once_t once = UV_ONCE_INIT;
    uv_once(&once, clock_calibrate);
#endif
}

/* ---- connections ---- */

static void admin_free(mqr_admin_t *a)
{
    mqr__admin_auth_free(a);
    mqr__admin_access_free(a);
    free(a->read_buf);
    free(a->host);
    free(a);
}

static void admin_maybe_free(mqr_admin_t *a)
{
    if (!a->closing || a->open_handles || a->conns) return;
    for (size_t i = 0; i < a->n_api_sessions; i++)
        free(a->api_sessions[i]);
    free(a->api_sessions);
    admin_free(a);
}

static void conn_closed(uv_handle_t *h)
{
    mqr_aconn_t *c = h->data;
    if (--c->handles) return;
    mqr_admin_t *a = c->a;
    if (c->prev)
        c->prev->next = c->next;
    else
        a->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    a->nconns--;
    mqr__buf_free(&c->url);
    mqr__buf_free(&c->body);
    mqr__buf_free(&c->hfield);
    mqr__buf_free(&c->hvalue);
    for (int i = 0; i < AH_N; i++)
        mqr__buf_free(&c->hdr[i]);
    free(c->pending);
    free(c);
    admin_maybe_free(a);
}

static void conn_close(mqr_aconn_t *c)
{
    if (c->closing) return;
    c->closing = true;
    c->a->nlive--;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
    uv_close((uv_handle_t *)&c->timer, conn_closed);
}

static void on_timeout(uv_timer_t *t)
{
    mqr_aconn_t *c = t->data;
    if (c->in_request)
        c->a->conns_request_timeout++;
    else
        c->a->conns_idle_timeout++;
    conn_close(c);
}

static const char *status_text(int s)
{
    switch (s) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 421:
        return "Misdirected Request";
    case 422:
        return "Unprocessable Entity";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Unknown";
    }
}

typedef struct {
    uv_write_t req;
    mqr_aconn_t *c;
    char *owned; /* the body, when not in data */
    char data[];
} awrite_t;

static void feed(mqr_aconn_t *c, const char *data, size_t n);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void on_written(uv_write_t *w, int status)
{
    awrite_t *aw = (awrite_t *)w;
    mqr_aconn_t *c = aw->c;
    free(aw->owned);
    free(aw);
    c->writes--;
    if (status < 0 || (c->close_after && c->writes == 0)) {
        conn_close(c);
        return;
    }
    if (c->held && !c->closing && c->tcp.write_queue_size <= MQR_ADMIN_MAX_OUT / 4) {
        c->held = false;
        http_parser_pause(&c->parser, 0);
        char *p = c->pending;
        size_t n = c->pending_len;
        c->pending = NULL;
        c->pending_len = 0;
        if (n) feed(c, p, n);
        free(p);
        if (!c->held && !c->closing && !c->close_after)
            uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    }
}

/* Writes the response; res's body is consumed. */
static void conn_respond(mqr_aconn_t *c, mqr_ares_t *res, bool keep_alive)
{
    mqr_admin_t *a = c->a;
    a->requests++;
    char *json = NULL;
    const char *body = "";
    size_t blen = 0;
    if (res->json) {
        json = cJSON_PrintUnformatted(res->json);
        cJSON_Delete(res->json);
        res->json = NULL;
        if (!json) {
            res->status = 500;
            body = "{\"error\":{\"code\":\"no_memory\",\"message\":\"out of memory\"}}";
        } else {
            body = json;
        }
        blen = strlen(body);
        res->content_type = "application/json";
    } else if (res->text.failed) {
        res->status = 500;
        res->content_type = "application/json";
        body = "{\"error\":{\"code\":\"no_memory\",\"message\":\"out of memory\"}}";
        blen = strlen(body);
    } else if (res->text.len) {
        body = res->text.p;
        blen = res->text.len;
    }
    if (res->status >= 500)
        a->responses_5xx++;
    else if (res->status >= 400)
        a->responses_4xx++;
    /* An answer is never cached, sniffed as another type, framed by another
     * page or read by a page of another origin without CORS; the policy
     * allows nothing to load from it. A configured origin gets CORS. */
    char cors[MQR_ADMIN_MAX_ORIGIN + 256] = "";
    if (res->allow_origin)
        snprintf(cors, sizeof cors, "Access-Control-Allow-Origin: %s\r\nVary: Origin\r\n%s",
                 res->allow_origin,
                 res->preflight ? "Access-Control-Allow-Methods: GET, POST, PUT, PATCH, DELETE\r\n"
                                  "Access-Control-Allow-Headers: Authorization, Content-Type\r\n"
                                  "Access-Control-Max-Age: 600\r\n"
                                : "");
    char head[1024 + sizeof cors];
    int hn = snprintf(
        head, sizeof head,
        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
        "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
        "X-Frame-Options: DENY\r\n"
        "Content-Security-Policy: default-src 'none'; frame-ancestors 'none'\r\n"
        "Referrer-Policy: no-referrer\r\nCross-Origin-Resource-Policy: same-origin\r\n"
        "Connection: %s\r\n%s%s\r\n",
        res->status, status_text(res->status),
        res->content_type ? res->content_type : "application/json", blen,
        keep_alive ? "keep-alive" : "close", cors, res->extra_headers ? res->extra_headers : "");
    if (res->status == 204) blen = 0;
    /* a body built in memory is handed to libuv as it is (a scrape can be
     * megabytes: no copy); fixed texts are copied after the head */
    char *owned = NULL;
    if (json) {
        owned = json;
    } else if (body == res->text.p && blen) {
        owned = res->text.p;
        res->text.p = NULL;
    }
    mqr__buf_free(&res->text);
    size_t inline_len = owned ? 0 : blen;
    awrite_t *aw = malloc(sizeof *aw + (size_t)hn + inline_len);
    if (!aw) {
        free(owned);
        conn_close(c);
        return;
    }
    memcpy(aw->data, head, (size_t)hn);
    memcpy(aw->data + hn, body, inline_len);
    aw->c = c;
    aw->owned = owned;
    uv_buf_t b[2] = {uv_buf_init(aw->data, (unsigned)((size_t)hn + inline_len)),
                     uv_buf_init(owned, (unsigned)blen)};
    if (uv_write(&aw->req, (uv_stream_t *)&c->tcp, b, owned && blen ? 2 : 1, on_written) < 0) {
        free(owned);
        free(aw);
        conn_close(c);
        return;
    }
    c->writes++;
    if (!keep_alive) c->close_after = true;
}

static void respond_error_close(mqr_aconn_t *c, int status, const char *code, const char *msg)
{
    mqr_ares_t res = {0};
    mqr__admin_error(&res, status, code, "%s", msg);
    conn_respond(c, &res, false);
}

/* ---- http-parser callbacks ---- */

static int on_message_begin(http_parser *p)
{
    mqr_aconn_t *c = p->data;
    mqr__buf_reset(&c->url);
    mqr__buf_reset(&c->body);
    mqr__buf_reset(&c->hfield);
    mqr__buf_reset(&c->hvalue);
    for (int i = 0; i < AH_N; i++)
        mqr__buf_reset(&c->hdr[i]);
    memset(c->seen, 0, sizeof c->seen);
    c->in_value = false;
    c->in_request = true;
    c->body_announced = false;
    c->since_ms = uv_now(c->a->loop);
    c->header_bytes = 0;
    uv_timer_start(&c->timer, on_timeout, MQR_ADMIN_REQUEST_MS, 0);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    mqr_aconn_t *c = p->data;
    if (c->url.len + n > MQR_ADMIN_MAX_URL) {
        c->error_status = 414;
        return -1;
    }
    mqr__buf_add(&c->url, at, n);
    return 0;
}

static void header_done(mqr_aconn_t *c)
{
    for (int i = 0; i < AH_N; i++) {
        if (c->hfield.len != strlen(kept_headers[i]) ||
            strncasecmp(c->hfield.p, kept_headers[i], c->hfield.len) != 0)
            continue;
        mqr__buf_reset(&c->hdr[i]); /* the last one counts; a second Host is refused */
        mqr__buf_add(&c->hdr[i], c->hvalue.p ? c->hvalue.p : "", c->hvalue.len);
        if (c->seen[i] < 255) c->seen[i]++;
        break;
    }
    mqr__buf_reset(&c->hfield);
    mqr__buf_reset(&c->hvalue);
}

static int header_limit(mqr_aconn_t *c, size_t n)
{
    c->header_bytes += n;
    if (c->header_bytes > MQR_ADMIN_MAX_HEADERS) {
        c->error_status = 431;
        return -1;
    }
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    mqr_aconn_t *c = p->data;
    if (header_limit(c, n)) return -1;
    if (c->in_value) {
        header_done(c);
        c->in_value = false;
    }
    mqr__buf_add(&c->hfield, at, n);
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    mqr_aconn_t *c = p->data;
    if (header_limit(c, n)) return -1;
    c->in_value = true;
    mqr__buf_add(&c->hvalue, at, n);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    mqr_aconn_t *c = p->data;
    if (c->in_value) header_done(c);
    c->in_value = false;
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > MQR_ADMIN_MAX_BODY) {
        c->error_status = 413;
        return -1;
    }
    c->body_announced =
        (p->flags & F_CHUNKED) || ((p->flags & F_CONTENTLENGTH) && p->content_length);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    mqr_aconn_t *c = p->data;
    if (c->body.len + n > MQR_ADMIN_MAX_BODY) {
        c->error_status = 413;
        return -1;
    }
    mqr__buf_add(&c->body, at, n);
    return 0;
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Percent-decodes n bytes of s into out (n + 1 bytes). -1 on a bad escape
 * or an encoded NUL. */
static int pct_decode(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int hi = i + 2 < n ? hexval((unsigned char)s[i + 1]) : -1;
            int lo = i + 2 < n ? hexval((unsigned char)s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) return -1;
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return 0;
}

/* A kept header's value, NULL when it did not come. */
static const char *header(const mqr_aconn_t *c, int which)
{
    return c->seen[which] ? (c->hdr[which].p ? c->hdr[which].p : "") : NULL;
}

static int on_message_complete(http_parser *p)
{
    mqr_aconn_t *c = p->data;
    c->in_request = false;
    c->since_ms = uv_now(c->a->loop);
    mqr_admin_t *a = c->a;
    bool keep_alive = http_should_keep_alive(p) && !a->closing;
    bool failed = c->url.failed || c->body.failed;
    for (int i = 0; i < AH_N; i++)
        failed |= c->hdr[i].failed;
    if (failed) {
        respond_error_close(c, 500, "no_memory", "out of memory");
        http_parser_pause(p, 1);
        return 0;
    }
    struct http_parser_url u;
    http_parser_url_init(&u);
    const char *url = c->url.p ? c->url.p : "";
    if (http_parser_parse_url(url, c->url.len, 0, &u) != 0 || !(u.field_set & (1 << UF_PATH))) {
        respond_error_close(c, 400, "bad_request", "request target is not a path");
        http_parser_pause(p, 1);
        return 0;
    }
    size_t plen = u.field_data[UF_PATH].len;
    char *path = malloc(plen + 1);
    if (!path || pct_decode(url + u.field_data[UF_PATH].off, plen, path) < 0) {
        free(path);
        respond_error_close(c, 400, "bad_request", "bad percent-encoding in the path");
        http_parser_pause(p, 1);
        return 0;
    }
    char *query = NULL;
    if (u.field_set & (1 << UF_QUERY))
        query = strndup(url + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
    mqr_areq_t req = {
        .method = p->method,
        .path = path,
        .query = query ? query : "",
        .body = c->body.p ? c->body.p : "",
        .body_len = c->body.len,
        .authorization = header(c, AH_AUTHORIZATION),
        .host = header(c, AH_HOST),
        .origin = header(c, AH_ORIGIN),
        .content_type = header(c, AH_CONTENT_TYPE),
        .fetch_site = header(c, AH_FETCH_SITE),
        .host_repeated = c->seen[AH_HOST] > 1 || c->seen[AH_ORIGIN] > 1,
        .http11 = p->http_major > 1 || (p->http_major == 1 && p->http_minor >= 1),
        .has_body = c->body_announced || c->body.len > 0,
    };
    mqr_ares_t res = {.status = 200};
    mqr__admin_route(a, &req, &res);
    free(path);
    free(query);
    conn_respond(c, &res, keep_alive);
    if (!keep_alive) {
        http_parser_pause(p, 1);
    } else if (!c->closing) {
        uv_timer_start(&c->timer, on_timeout, MQR_ADMIN_IDLE_MS, 0);
        if (c->tcp.write_queue_size > MQR_ADMIN_MAX_OUT) { /* the client is not reading */
            MQR_LOG_D(MQR_ADMIN_LOG, "a client has %zu bytes of answers unread: paused",
                      c->tcp.write_queue_size);
            c->held = true;
            http_parser_pause(p, 1);
        }
    }
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    mqr_aconn_t *c = h->data;
    *buf = uv_buf_init(c->a->read_buf, MQR_ADMIN_READ_BUF);
}

/* Parses n bytes; answers every complete request in them. */
static void feed(mqr_aconn_t *c, const char *data, size_t n)
{
    size_t done = http_parser_execute(&c->parser, &settings, data, n);
    enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
    if (err == HPE_PAUSED) {
        if (!c->held || c->close_after || c->closing) return; /* the last answer is out */
        uv_read_stop((uv_stream_t *)&c->tcp);
        if (done < n) { /* the requests behind, parsed once the output drains */
            c->pending = malloc(n - done);
            if (!c->pending) {
                conn_close(c);
                return;
            }
            memcpy(c->pending, data + done, n - done);
            c->pending_len = n - done;
        }
        return;
    }
    if (err != HPE_OK) {
        int st = c->error_status ? c->error_status : 400;
        const char *code = st == 413   ? "too_large"
                           : st == 414 ? "url_too_long"
                           : st == 431 ? "headers_too_large"
                                       : "bad_request";
        char msg[160];
        snprintf(msg, sizeof msg, "%s", st == 400 ? http_errno_description(err) : status_text(st));
        respond_error_close(c, st, code, msg);
    }
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    mqr_aconn_t *c = s->data;
    if (n == 0) return;
    if (n < 0) {
        if (n == UV_EOF && c->writes > 0) { /* half-closed: the answers still go out */
            uv_read_stop(s);
            c->close_after = true;
            return;
        }
        conn_close(c);
        return;
    }
    if (c->close_after || c->held) return; /* answered for the last time / paused */
    feed(c, buf->base, (size_t)n);
}

/* At the cap: the connection to close for a new one. The one idle the
 * longest (no request begun, no answer being written); failing that, the
 * one whose request has been arriving the longest (a slow sender); never
 * one that is writing. NULL when every one is writing. */
static mqr_aconn_t *eviction_victim(mqr_admin_t *a)
{
    mqr_aconn_t *idle = NULL, *slow = NULL;
    for (mqr_aconn_t *c = a->conns; c; c = c->next) {
        if (c->closing || c->writes) continue;
        mqr_aconn_t **best = c->in_request ? &slow : &idle;
        if (!*best || c->since_ms <= (*best)->since_ms) *best = c;
    }
    return idle ? idle : slow;
}

static void on_connection(uv_stream_t *server, int status)
{
    mqr_admin_t *a = server->data;
    if (status < 0 || a->closing) return;
    mqr_aconn_t *c = calloc(1, sizeof *c);
    if (!c) return;
    c->a = a;
    c->since_ms = uv_now(a->loop);
    uv_tcp_init(a->loop, &c->tcp);
    uv_timer_init(a->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles = 2;
    c->next = a->conns;
    if (a->conns) a->conns->prev = c;
    a->conns = c;
    a->nconns++;
    a->nlive++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    if (a->nlive > MQR_ADMIN_MAX_CONNS) {
        mqr_aconn_t *victim = eviction_victim(a);
        if (!victim || victim == c) {
            conn_close(c);
            return;
        }
        a->conns_evicted++;
        MQR_LOG_D(MQR_ADMIN_LOG, "%u connections: the oldest %s one closed for a new one",
                  MQR_ADMIN_MAX_CONNS, victim->in_request ? "slow" : "idle");
        conn_close(victim);
    }
    uv_tcp_nodelay(&c->tcp, 1);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    uv_timer_start(&c->timer, on_timeout, MQR_ADMIN_REQUEST_MS, 0);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) conn_close(c);
}

/* ---- server lifecycle ---- */

static void server_closed(uv_handle_t *h)
{
    mqr_admin_t *a = h->data;
    a->open_handles--;
    admin_maybe_free(a);
}

static void on_rate(uv_timer_t *t)
{
    mqr__admin_rate_sample(t->data);
}

static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        static const unsigned char lo[16] = {[15] = 1};
        return memcmp(&in6->sin6_addr, lo, 16) == 0;
    }
    return false;
}

/* Tokens, Host names, origins and require_token from o: all or nothing. */
static int configure(mqr_admin_t *a, const mqr_admin_options_t *o, char **errmsg)
{
    mqr_admin_t scratch = {0}; /* the lists are checked before anything changes */
    int rc = mqr__admin_access_set(&scratch, o->hosts, o->nhosts, o->origins, o->norigins, errmsg);
    if (rc < 0) return rc;
    bool was_required = a->require_token;
    a->require_token = o->require_token != 0;
    if ((rc = mqr__admin_auth_set(a, o->tokens, o->ntokens)) < 0) {
        a->require_token = was_required;
        mqr__admin_access_free(&scratch);
        if (rc == MQR_EINVAL && o->ntokens)
            mqr__errmsg(errmsg, "a token entry is malformed (TOKEN or TOKEN tenant=NAME, "
                                "NAME of [A-Za-z0-9_-])");
        else if (rc == MQR_EINVAL && o->require_token)
            mqr__errmsg(errmsg, "tokens are required (--admin-require-token) but none "
                                "were given");
        else if (rc == MQR_EINVAL)
            mqr__errmsg(errmsg, "the admin API on a non-loopback address (%s) needs tokens",
                        a->host);
        return rc;
    }
    mqr__admin_access_free(a);
    a->hosts = scratch.hosts;
    a->nhosts = scratch.nhosts;
    a->origins = scratch.origins;
    a->norigins = scratch.norigins;
    return 0;
}

static bool is_wildcard(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == htonl(INADDR_ANY);
    static const unsigned char any[16];
    return memcmp(&((const struct sockaddr_in6 *)sa)->sin6_addr, any, 16) == 0;
}

int mqr__admin_start(mqr_engine_t *e, const mqr_admin_options_t *o, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    const mqr_admin_t *served = mqr__engine_admin(e);
    if (served) {
        mqr__errmsg(errmsg, "the admin API is already served on %s:%d", served->host, served->port);
        return MQR_EEXIST;
    }
    const char *host = o->host;
    int port = o->port;
    if (!host || !host[0] || strcmp(host, "localhost") == 0) host = "127.0.0.1";
    if (port < 0 || port > 65535) {
        mqr__errmsg(errmsg, "admin port %d out of range (0..65535)", port);
        return MQR_EINVAL;
    }
    struct sockaddr_storage ss;
    int rc = strchr(host, ':') ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss)
                               : uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
    if (rc < 0) {
        mqr__errmsg(errmsg, "admin host '%s' is not an IP address", host);
        return MQR_EINVAL;
    }
    mqr_admin_t *a = calloc(1, sizeof *a);
    if (!a || !(a->host = strdup(host)) || !(a->read_buf = malloc(MQR_ADMIN_READ_BUF))) {
        if (a) admin_free(a);
        return MQR_ENOMEM;
    }
    a->e = e;
    a->loop = mqr_engine_loop(e);
    a->loopback = is_loopback((struct sockaddr *)&ss);
    a->wildcard = is_wildcard((struct sockaddr *)&ss);
    a->start_ms = mqr__now_ms();
    if ((rc = configure(a, o, errmsg)) < 0 ||
        mqr__engine_check_only(e)) { /* check_only: validated */
        admin_free(a);
        return rc;
    }
    uv_tcp_init(a->loop, &a->tcp);
    a->tcp.data = a;
    a->open_handles = 1;
    rc = uv_tcp_bind(&a->tcp, (struct sockaddr *)&ss, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&a->tcp, 511, on_connection);
    if (rc < 0) {
        mqr__errmsg(errmsg, "cannot serve the admin API on %s:%d: %s", host, port, uv_strerror(rc));
        a->closing = true;
        uv_close((uv_handle_t *)&a->tcp, server_closed);
        return rc;
    }
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(&a->tcp, (struct sockaddr *)&bound, &blen);
    a->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
    uv_timer_init(a->loop, &a->rate_timer);
    a->rate_timer.data = a;
    a->open_handles++;
    mqr__admin_rate_sample(a);
    uv_timer_start(&a->rate_timer, on_rate, 5000, 5000);
    uv_unref((uv_handle_t *)&a->rate_timer);
    mqr__admin_clock_init();
    mqr__engine_set_admin(e, a);
    MQR_LOG_I(MQR_ADMIN_LOG, "admin API on http://%s%s%s:%d/ (%s)", strchr(host, ':') ? "[" : "",
              host, strchr(host, ':') ? "]" : "", a->port,
              a->ntokens ? "bearer tokens" : "no tokens: loopback only");
    return 0;
}

int mqr__admin_configure(mqr_admin_t *a, const mqr_admin_options_t *o, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    return configure(a, o, errmsg);
}

int mqr__admin_set_tokens(mqr_admin_t *a, const char *const *tokens, size_t ntokens)
{
    return mqr__admin_auth_set(a, tokens, ntokens);
}

void mqr__admin_close(mqr_admin_t *a)
{
    if (!a || a->closing) return;
    a->closing = true;
    if (mqr__engine_admin(a->e) == a) mqr__engine_set_admin(a->e, NULL);
    uv_close((uv_handle_t *)&a->tcp, server_closed);
    uv_close((uv_handle_t *)&a->rate_timer, server_closed);
    for (mqr_aconn_t *c = a->conns; c; c = c->next)
        conn_close(c);
}

void mqr__admin_view(const mqr_admin_t *a, mqr_admin_view_t *out)
{
    *out = (mqr_admin_view_t){
        .ntokens = a->ntokens,
        .tokens = (const unsigned char(*)[32])a->tokens,
        .norigins = a->norigins,
        .origins = (const char *const *)a->origins,
        .require_token = a->require_token,
        .refused = a->refused,
    };
}

int mqr__admin_port(const mqr_admin_t *a)
{
    return a->port;
}

const char *mqr__admin_host(const mqr_admin_t *a)
{
    return a->host;
}

void mqr_admin_options_init_sized(mqr_admin_options_t *o, size_t size)
{
    static const mqr_admin_options_t def = {.host = "127.0.0.1"};
    mqr__abi_init(o, size, &def, sizeof def);
}

int mqr_engine_admin_start(mqr_engine_t *e, const mqr_admin_options_t *opts, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    mqr_admin_options_t o;
    memset(&o, 0, sizeof o);
    int rc = opts ? mqr__abi_copy(&o, sizeof o, sizeof o, opts) : MQR_EINVAL;
    if (rc < 0) {
        mqr__errmsg(errmsg, "admin options struct too %s (built against another version?)",
                    rc == MQR_ETOOLARGE ? "large" : "small");
        return rc;
    }
    return mqr__admin_start(e, &o, errmsg);
}

int mqr_engine_admin(mqr_engine_t *e, const char *host, int port, const char *const *tokens,
                     size_t ntokens, char **errmsg)
{
    mqr_admin_options_t o;
    mqr_admin_options_init(&o);
    o.host = host;
    o.port = port;
    o.tokens = tokens;
    o.ntokens = ntokens;
    return mqr__admin_start(e, &o, errmsg);
}

int mqr_engine_admin_port(const mqr_engine_t *e)
{
    const mqr_admin_t *a = mqr__engine_admin(e);
    return a ? a->port : -1;
}
