/*
 * ws.c — the WebSocket layer of a listener connection (MQTT over WebSocket,
 * MQTT 3.1.1 §6 and 5.0 §6): the HTTP upgrade, then binary frames carrying
 * MQTT bytes.
 *
 * Libraries, both Debian packages: http-parser (libhttp-parser-dev) reads
 * the upgrade request and wslay (libwslay-dev) does the framing. wslay's
 * event API has no I/O of its own: we hand it the bytes we read and it
 * hands back the bytes to send, so it fits a libuv loop as it is (unlike
 * libwebsockets, which wants its own sockets and service loop). llhttp is
 * not in Debian 12, so http-parser it is.
 *
 * An MQTT packet may span frames and a frame may hold several packets: the
 * payload of binary frames is a byte stream into the MQTT input. Pings are
 * answered and close frames echoed by wslay. A request without "mqtt" among
 * its Sec-WebSocket-Protocol values gets 400 (the server must select "mqtt",
 * MQTT 5.0 §6.0.0-4), a wrong Sec-WebSocket-Version 426, anything else that
 * is not a WebSocket upgrade 400 or 405. Text frames close the connection
 * (1003, MQTT 5.0 §6.0.0-1). Payloads decoded from a frame are handed to
 * MQTT only after wslay returns, so closing the connection never happens
 * inside a wslay callback. The path of the request is not checked.
 */
#include "listener_int.h"

#include <ctype.h>
#include <http_parser.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wslay/wslay.h>

#define WS_MAX_REQUEST 8192u

struct mqr_lws {
    mqr_lconn_t *c;
    http_parser hp;
    bool open; /* 101 sent: frames from here on */
    bool headers_done;
    bool in_value;
    char field[40];
    size_t flen;
    char value[512];
    size_t vlen;
    bool vtrunc;
    size_t req_bytes;
    /* what the request said */
    bool up_websocket, conn_upgrade, proto_mqtt;
    int version;
    char key[64];
    /* frames */
    wslay_event_context_ptr ctx;
    const uint8_t *rp; /* raw input wslay has not taken yet */
    size_t rlen;
    size_t dlen;        /* MQTT bytes decoded into the listener's wsbuf */
    uint8_t msg_op;     /* opcode of the data message in progress */
    uint8_t frame_op;   /* opcode of the frame in progress */
    uint16_t fail_code; /* close the connection with this after wslay returns */
};

/* ---- the upgrade request -------------------------------------------------- */

/* Is tok one of the comma-separated values of v? */
static bool has_token(const char *v, const char *tok, bool icase)
{
    size_t tl = strlen(tok);
    const char *p = v;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *s = p;
        while (*p && *p != ',')
            p++;
        const char *e = p;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if ((size_t)(e - s) == tl && (icase ? strncasecmp(s, tok, tl) : strncmp(s, tok, tl)) == 0)
            return true;
    }
    return false;
}

static void header_done(mqr_lws_t *w)
{
    if (!w->flen) return;
    w->field[w->flen] = '\0';
    w->value[w->vlen] = '\0';
    const char *f = w->field, *v = w->value;
    if (strcasecmp(f, "Upgrade") == 0) {
        w->up_websocket |= has_token(v, "websocket", true);
    } else if (strcasecmp(f, "Connection") == 0) {
        w->conn_upgrade |= has_token(v, "upgrade", true);
    } else if (strcasecmp(f, "Sec-WebSocket-Protocol") == 0) {
        w->proto_mqtt |= has_token(v, "mqtt", false);
    } else if (strcasecmp(f, "Sec-WebSocket-Version") == 0) {
        w->version = atoi(v);
    } else if (strcasecmp(f, "Sec-WebSocket-Key") == 0 && !w->vtrunc) {
        while (*v == ' ')
            v++;
        size_t n = strnlen(v, sizeof w->key - 1);
        memcpy(w->key, v, n);
        w->key[n] = '\0';
        while (n && w->key[n - 1] == ' ')
            w->key[--n] = '\0';
    }
    w->flen = w->vlen = 0;
    w->vtrunc = false;
}

static int on_header_field(http_parser *hp, const char *at, size_t len)
{
    mqr_lws_t *w = hp->data;
    if (w->in_value) {
        header_done(w);
        w->in_value = false;
    }
    size_t k = sizeof w->field - 1 - w->flen;
    if (len > k) len = k; /* a longer name is none we look at */
    memcpy(w->field + w->flen, at, len);
    w->flen += len;
    return 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t len)
{
    mqr_lws_t *w = hp->data;
    w->in_value = true;
    size_t k = sizeof w->value - 1 - w->vlen;
    if (len > k) {
        len = k;
        w->vtrunc = true;
    }
    memcpy(w->value + w->vlen, at, len);
    w->vlen += len;
    return 0;
}

static int on_headers_complete(http_parser *hp)
{
    mqr_lws_t *w = hp->data;
    header_done(w);
    w->headers_done = true;
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
};

static int refuse(mqr_lconn_t *c, int status, const char *reason, const char *extra,
                  const char *why)
{
    char resp[512];
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 %d %s\r\nConnection: close\r\n%sContent-Type: text/plain\r\n"
                     "Content-Length: %zu\r\n\r\n%s\n",
                     status, reason, extra, strlen(why) + 1, why);
    c->l->stats.connects_refused++;
    MQR_LOG_I(MQR_LSN_LOG, "WebSocket upgrade from %s refused: %d %s (%s)", c->addr, status, reason,
              why);
    if (n > 0 && (size_t)n < sizeof resp) mqr__ltp_down(c, (const uint8_t *)resp, (size_t)n);
    mqr__listener_conn_close(c, MQR_LCLOSE_FLUSH, 0, "WebSocket upgrade refused");
    return MQR_EPROTOCOL;
}

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
    mqr_lws_t *w = user;
    if (!w->rlen) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t k = len < w->rlen ? len : w->rlen;
    memcpy(buf, w->rp, k);
    w->rp += k;
    w->rlen -= k;
    return (ssize_t)k;
}

static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    mqr_lws_t *w = user;
    if (mqr__ltp_down(w->c, data, len) < 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

static void ws_frame_start(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_start_arg *a, void *user)
{
    mqr_lws_t *w = user;
    w->frame_op = a->opcode;
    if (a->opcode == WSLAY_TEXT_FRAME || a->opcode == WSLAY_BINARY_FRAME) w->msg_op = a->opcode;
}

static void ws_frame_chunk(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_chunk_arg *a, void *user)
{
    mqr_lws_t *w = user;
    if (w->frame_op & 0x8) return; /* control frames: wslay answers them */
    if (w->msg_op != WSLAY_BINARY_FRAME) {
        w->fail_code = WSLAY_CODE_UNSUPPORTED_DATA; /* MQTT goes in binary frames only */
        return;
    }
    if (w->fail_code) return;
    /* decoded bytes are never more than the raw bytes they came in */
    uint8_t *dst = w->c->l->wsbuf;
    size_t k = a->data_length;
    if (w->dlen + k > MQR_LSN_TBUF_SIZE) {
        w->fail_code = WSLAY_CODE_INTERNAL_SERVER_ERROR;
        return;
    }
    memcpy(dst + w->dlen, a->data, k);
    w->dlen += k;
}

static int ws_open(mqr_lconn_t *c, mqr_lws_t *w)
{
    if (w->hp.method != HTTP_GET) return refuse(c, 405, "Method Not Allowed", "", "GET only");
    if (!w->up_websocket || !w->conn_upgrade || !w->key[0])
        return refuse(c, 400, "Bad Request", "", "not a WebSocket upgrade request");
    if (w->version != 13)
        return refuse(c, 426, "Upgrade Required", "Sec-WebSocket-Version: 13\r\n",
                      "WebSocket version 13 only");
    if (!w->proto_mqtt)
        return refuse(c, 400, "Bad Request", "",
                      "the WebSocket subprotocol \"mqtt\" is required (MQTT spec section 6)");

    /* RFC 6455 §4.2.2: base64(SHA-1(key + GUID)) */
    char in[sizeof w->key + 40];
    int il = snprintf(in, sizeof in, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", w->key);
    unsigned char sha[SHA_DIGEST_LENGTH];
    unsigned int shalen = 0;
    if (il < 0 || !EVP_Digest(in, (size_t)il, sha, &shalen, EVP_sha1(), NULL))
        return refuse(c, 500, "Internal Server Error", "", "SHA-1 failed");
    unsigned char accept[4 * ((SHA_DIGEST_LENGTH + 2) / 3) + 1];
    EVP_EncodeBlock(accept, sha, (int)shalen);

    struct wslay_event_callbacks cb = {
        .recv_callback = ws_recv,
        .send_callback = ws_send,
        .on_frame_recv_start_callback = ws_frame_start,
        .on_frame_recv_chunk_callback = ws_frame_chunk,
    };
    if (wslay_event_context_server_init(&w->ctx, &cb, w) != 0) {
        w->ctx = NULL;
        return refuse(c, 500, "Internal Server Error", "", "out of memory");
    }
    /* data frames stream into the MQTT input; control frames stay buffered */
    wslay_event_config_set_no_buffering(w->ctx, 1);

    char resp[256];
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                     "Sec-WebSocket-Protocol: mqtt\r\n\r\n",
                     (const char *)accept);
    w->open = true;
    MQR_LOG_D(MQR_LSN_LOG, "WebSocket connection from %s", c->addr);
    return mqr__ltp_down(c, (const uint8_t *)resp, (size_t)n);
}

/* ---- frames --------------------------------------------------------------- */

static int frames_in(mqr_lconn_t *c, mqr_lws_t *w, const uint8_t *p, size_t n)
{
    w->rp = p;
    w->rlen = n;
    w->dlen = 0;
    int rc = wslay_event_recv(w->ctx);
    w->rp = NULL;
    w->rlen = 0;
    size_t dlen = w->dlen;
    w->dlen = 0;
    if (rc != 0) {
        c->l->stats.malformed++;
        if (c->state == MQR_LCONN_ACTIVE) c->will_publish = true;
        mqr__listener_conn_close(c, MQR_LCLOSE_HARD, 0, "bad WebSocket frame");
        return MQR_EPROTOCOL;
    }
    if (dlen && !w->fail_code && mqr__ltp_mqtt(c, c->l->wsbuf, dlen) < 0) return MQR_ECLOSED;
    if (w->fail_code) {
        if (c->state == MQR_LCONN_ACTIVE) c->will_publish = true;
        c->l->stats.malformed++;
        MQR_LOG_I(MQR_LSN_LOG, "client %s (%s): not a binary WebSocket frame, closing",
                  mqr__lconn_name(c), c->addr);
        mqr__lws_close(c, w->fail_code);
        mqr__listener_conn_close(c, MQR_LCLOSE_FLUSH, 0, "WebSocket text frame");
        return MQR_EPROTOCOL;
    }
    if (wslay_event_want_write(w->ctx) && wslay_event_send(w->ctx) != 0) {
        mqr__listener_conn_close(c, MQR_LCLOSE_HARD, 0, "WebSocket send failed");
        return MQR_ECLOSED;
    }
    if (!wslay_event_get_close_received(w->ctx) && !wslay_event_get_read_enabled(w->ctx)) {
        /* wslay stopped reading: a protocol error (an unmasked frame, a bad
         * length...); it queued a close frame 1002, which went out above */
        c->l->stats.malformed++;
        if (c->state == MQR_LCONN_ACTIVE) c->will_publish = true;
        MQR_LOG_I(MQR_LSN_LOG, "client %s (%s): WebSocket protocol error, closing",
                  mqr__lconn_name(c), c->addr);
        mqr__listener_conn_close(c, MQR_LCLOSE_FLUSH, 0, "WebSocket protocol error");
        return MQR_EPROTOCOL;
    }
    if (wslay_event_get_close_received(w->ctx)) {
        /* wslay has echoed the close frame; a close without DISCONNECT is
         * not a normal disconnection (the will goes out) */
        if (c->state == MQR_LCONN_ACTIVE) c->will_publish = true;
        mqr__listener_conn_close(c, MQR_LCLOSE_FLUSH, 0, "WebSocket closed by the client");
        return MQR_ECLOSED;
    }
    return 0;
}

int mqr__lws_input(mqr_lconn_t *c, const uint8_t *p, size_t n)
{
    mqr_lws_t *w = c->tp->ws;
    if (w->open) return frames_in(c, w, p, n);
    w->req_bytes += n;
    size_t used = http_parser_execute(&w->hp, &parser_settings, (const char *)p, n);
    if (HTTP_PARSER_ERRNO(&w->hp) != HPE_OK && !w->headers_done)
        return refuse(c, 400, "Bad Request", "", http_errno_description(HTTP_PARSER_ERRNO(&w->hp)));
    if (!w->headers_done) {
        if (w->req_bytes > WS_MAX_REQUEST)
            return refuse(c, 431, "Request Header Fields Too Large", "", "request too large");
        return 0;
    }
    int rc = ws_open(c, w);
    if (rc < 0) return rc;
    if (used < n) return frames_in(c, w, p + used, n - used); /* frames sent right behind */
    return 0;
}

int mqr__lws_write(mqr_lconn_t *c, const uint8_t *p, size_t n)
{
    mqr_lws_t *w = c->tp->ws;
    if (!w->open || !w->ctx) return MQR_ENOTCONN;
    struct wslay_event_msg m = {.opcode = WSLAY_BINARY_FRAME, .msg = p, .msg_length = n};
    if (wslay_event_queue_msg(w->ctx, &m) != 0 || wslay_event_send(w->ctx) != 0) {
        mqr__listener_conn_close(c, MQR_LCLOSE_HARD, 0, "WebSocket send failed");
        return MQR_ECLOSED;
    }
    return 0;
}

void mqr__lws_close(mqr_lconn_t *c, uint16_t code)
{
    mqr_lws_t *w = c->tp->ws;
    if (!w || !w->ctx || wslay_event_get_close_sent(w->ctx)) return;
    if (wslay_event_queue_close(w->ctx, code, NULL, 0) == 0) wslay_event_send(w->ctx);
}

int mqr__lws_start(mqr_lconn_t *c)
{
    mqr_lws_t *w = calloc(1, sizeof *w);
    if (!w) return MQR_ENOMEM;
    w->c = c;
    http_parser_init(&w->hp, HTTP_REQUEST);
    w->hp.data = w;
    c->tp->ws = w;
    return 0;
}

void mqr__lws_free(mqr_lconn_t *c)
{
    mqr_lws_t *w = c->tp->ws;
    if (!w) return;
    if (w->ctx) wslay_event_context_free(w->ctx);
    free(w);
    c->tp->ws = NULL;
}
