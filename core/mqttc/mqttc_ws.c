/*
 * mqttc_ws.c — MQTT over WebSocket from the client's side (MQTT 3.1.1 §6,
 * 5.0 §6; RFC 6455): once the byte stream is up (TCP, or TLS over it) an
 * HTTP/1.1 upgrade asking for the "mqtt" subprotocol, its 101 answer
 * checked (Sec-WebSocket-Accept, the protocol), then the MQTT bytes travel
 * as the payload of masked binary frames. wslay (libwslay-dev) does the
 * framing and has no I/O of its own: frames it makes are appended to the
 * stream output (c->spend), and what we read is handed to it.
 * Must not: call back into the connection from inside a wslay callback
 * (payloads are appended to c->in and handled after wslay returns).
 */
#include "mqttc_int.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <wslay/wslay.h>

#define WS_MAX_RESPONSE 8192u
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11" /* RFC 6455 §1.3 */

struct mqttc_ws {
    mqr_mqttc_t *c;
    char *path, *host;
    char accept[32]; /* the Sec-WebSocket-Accept the server must answer */
    bool open;       /* 101 checked: frames from here on */
    char resp[WS_MAX_RESPONSE];
    size_t resp_len;
    wslay_event_context_ptr ctx;
    const uint8_t *rp; /* input wslay has not taken yet */
    size_t rlen;
    int fail; /* an error seen inside a callback, reported after wslay returns */
    const char *fail_why;
    uint8_t raw[16384]; /* where the socket's reads land without TLS */
};

int mqr__mqttc_ws_new(mqr_mqttc_t *c, const mqr_mqttc_options_t *o)
{
    mqttc_ws_t *w = calloc(1, sizeof *w);
    if (!w) return MQR_ENOMEM;
    c->ws = w;
    w->c = c;
    const char *path = o->ws.path ? o->ws.path : "/mqtt";
    const char *host = o->ws.host ? o->ws.host : "localhost";
    if (path[0] != '/' || strpbrk(path, " \r\n") || strpbrk(host, " \r\n/")) return MQR_EINVAL;
    if (!(w->path = strdup(path)) || !(w->host = strdup(host))) return MQR_ENOMEM;
    return 0;
}

void mqr__mqttc_ws_free(mqr_mqttc_t *c)
{
    mqttc_ws_t *w = c->ws;
    if (!w) return;
    if (w->ctx) wslay_event_context_free(w->ctx);
    free(w->path);
    free(w->host);
    free(w);
    c->ws = NULL;
}

uv_buf_t mqr__mqttc_ws_rbuf(mqr_mqttc_t *c)
{
    return uv_buf_init((char *)c->ws->raw, sizeof c->ws->raw);
}

static int spend_add(mqr_mqttc_t *c, const void *p, size_t n)
{
    return mqr__mqttc_buf_add(&c->spend, p, n);
}

int mqr__mqttc_ws_start(mqr_mqttc_t *c)
{
    mqttc_ws_t *w = c->ws;
    uint8_t nonce[16];
    if (RAND_bytes(nonce, sizeof nonce) != 1) return MQR_ENOMEM;
    char key[32], cat[64];
    EVP_EncodeBlock((unsigned char *)key, nonce, sizeof nonce); /* 24 chars */
    uint8_t digest[SHA_DIGEST_LENGTH];
    int n = snprintf(cat, sizeof cat, "%s%s", key, WS_GUID);
    SHA1((const unsigned char *)cat, (size_t)n, digest);
    EVP_EncodeBlock((unsigned char *)w->accept, digest, sizeof digest); /* 28 chars */
    char req[1024];
    n = snprintf(req, sizeof req,
                 "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                 "Sec-WebSocket-Protocol: mqtt\r\n\r\n",
                 w->path, w->host, key);
    if (n < 0 || (size_t)n >= sizeof req) return MQR_EINVAL;
    int rc = spend_add(c, req, (size_t)n);
    if (rc == 0) mqr__mqttc_out_kick(c);
    return rc;
}

/* ---- wslay's side ---------------------------------------------------------- */

static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    (void)flags;
    mqttc_ws_t *w = user;
    if (spend_add(w->c, data, len) < 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
    (void)flags;
    mqttc_ws_t *w = user;
    if (w->rlen == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < w->rlen ? len : w->rlen;
    memcpy(buf, w->rp, n);
    w->rp += n;
    w->rlen -= n;
    return (ssize_t)n;
}

static int ws_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *user)
{
    (void)ctx, (void)user;
    return RAND_bytes(buf, (int)len) == 1 ? 0 : -1;
}

static void ws_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *m,
                   void *user)
{
    (void)ctx;
    mqttc_ws_t *w = user;
    if (w->fail) return;
    if (m->opcode == WSLAY_BINARY_FRAME) {
        if (mqr__mqttc_buf_add(&w->c->in, m->msg, m->msg_length) < 0) {
            w->fail = MQR_ENOMEM;
            w->fail_why = "no memory for WebSocket input";
        }
    } else if (m->opcode == WSLAY_TEXT_FRAME) { /* MQTT 5.0 §6.0.0-1 */
        w->fail = MQR_EPROTOCOL;
        w->fail_why = "WebSocket text frame from the server";
    } else if (m->opcode == WSLAY_CONNECTION_CLOSE) {
        w->fail = UV_EOF;
        w->fail_why = "WebSocket closed by the server";
    }
}

static int frames_start(mqttc_ws_t *w)
{
    static const struct wslay_event_callbacks cb = {
        .recv_callback = ws_recv,
        .send_callback = ws_send,
        .genmask_callback = ws_genmask,
        .on_msg_recv_callback = ws_msg,
    };
    if (wslay_event_context_client_init(&w->ctx, &cb, w) != 0) return MQR_ENOMEM;
    if (w->c->max_packet_size)
        wslay_event_config_set_max_recv_msg_length(w->ctx, w->c->max_packet_size);
    return 0;
}

/* ---- the upgrade's answer -------------------------------------------------- */

/* The value of header name in the response head, or NULL. */
static const char *header(char *head, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (char *line = strstr(head, "\r\n"); line && line[2]; line = strstr(line + 2, "\r\n")) {
        char *h = line + 2;
        if (strncasecmp(h, name, nl) != 0 || h[nl] != ':') continue;
        char *v = h + nl + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        char *end = strstr(v, "\r\n");
        size_t n = end ? (size_t)(end - v) : strlen(v);
        while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
            n--;
        *len = n;
        return v;
    }
    return NULL;
}

static bool has_token(const char *v, size_t n, const char *token)
{
    size_t tl = strlen(token);
    for (size_t i = 0; i + tl <= n; i++)
        if (strncasecmp(v + i, token, tl) == 0 && (i == 0 || v[i - 1] == ' ' || v[i - 1] == ',') &&
            (i + tl == n || v[i + tl] == ',' || v[i + tl] == ' '))
            return true;
    return false;
}

/* Checks the head (NUL-terminated, without the blank line): NULL when it is
 * a good 101, else why not. */
static const char *check_101(mqttc_ws_t *w, char *head)
{
    if (strncmp(head, "HTTP/1.1 101", 12) != 0) return "the server refused the WebSocket upgrade";
    size_t n;
    const char *v = header(head, "Upgrade", &n);
    if (!v || !has_token(v, n, "websocket")) return "no Upgrade: websocket in the answer";
    v = header(head, "Connection", &n);
    if (!v || !has_token(v, n, "upgrade")) return "no Connection: upgrade in the answer";
    v = header(head, "Sec-WebSocket-Accept", &n);
    if (!v || n != strlen(w->accept) || memcmp(v, w->accept, n) != 0)
        return "wrong Sec-WebSocket-Accept";
    v = header(head, "Sec-WebSocket-Protocol", &n); /* MQTT 5.0 §6.0.0-4 */
    if (!v || n != 4 || strncasecmp(v, "mqtt", 4) != 0) return "the server did not select mqtt";
    return NULL;
}

/* ---- input ----------------------------------------------------------------- */

int mqr__mqttc_ws_input(mqr_mqttc_t *c, const uint8_t *p, size_t n)
{
    mqttc_ws_t *w = c->ws;
    if (!w->open) {
        size_t room = sizeof w->resp - 1 - w->resp_len;
        size_t take = n < room ? n : room;
        memcpy(w->resp + w->resp_len, p, take);
        w->resp_len += take;
        w->resp[w->resp_len] = '\0';
        char *end = strstr(w->resp, "\r\n\r\n");
        if (!end) {
            if (w->resp_len == sizeof w->resp - 1) {
                mqr__mqttc_fail(c, MQR_EPROTOCOL, 0, "WebSocket upgrade answer too long");
                return MQR_EPROTOCOL;
            }
            return 0;
        }
        end[2] = '\0'; /* keep the last header's CRLF for header() */
        const char *why = check_101(w, w->resp);
        if (why) {
            mqr__mqttc_fail(c, MQR_EPROTOCOL, 0, why);
            return MQR_EPROTOCOL;
        }
        size_t head_len = (size_t)(end + 4 - w->resp);
        size_t before = w->resp_len - take; /* bytes of the head from earlier reads */
        size_t used = head_len - before;    /* of this read */
        p += used;
        n -= used;
        w->open = true;
        int rc = frames_start(w);
        if (rc) {
            mqr__mqttc_fail(c, rc, 0, "cannot start WebSocket framing");
            return rc;
        }
        mqr__mqttc_send_connect(c);
        if (c->st == MQTTC_CLOSED) return MQR_ECLOSED;
    }
    w->rp = p;
    w->rlen = n;
    int rc = wslay_event_recv(w->ctx);
    if (rc == 0 && wslay_event_want_write(w->ctx)) rc = wslay_event_send(w->ctx); /* pongs */
    if (wslay_event_get_close_sent(w->ctx) || w->fail || rc != 0) {
        int err = w->fail ? w->fail : MQR_EMALFORMED;
        mqr__mqttc_fail(c, err, 0, w->fail_why ? w->fail_why : "bad WebSocket frame");
        return err;
    }
    if (c->spend.len) mqr__mqttc_out_kick(c);
    return 0;
}

/* ---- output ---------------------------------------------------------------- */

int mqr__mqttc_ws_frame(mqr_mqttc_t *c, const uint8_t *p, size_t n)
{
    mqttc_ws_t *w = c->ws;
    struct wslay_event_msg m = {WSLAY_BINARY_FRAME, p, n}; /* copied by wslay */
    if (wslay_event_queue_msg(w->ctx, &m) != 0 || wslay_event_send(w->ctx) != 0) return MQR_ENOMEM;
    return 0;
}
