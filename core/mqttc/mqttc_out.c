/*
 * mqttc_out.c — the client's output: packets are appended to one buffer,
 * and once per loop turn (an idle handle, armed only while output waits)
 * the buffer goes to the socket: uv_try_write first, uv_write for what the
 * socket did not take. One write is in flight at a time; what is appended
 * meanwhile waits in the other buffer, so two buffers swap and keep their
 * capacity. QoS 0 publishes are done() when the bytes left us.
 *
 * This is the only place that writes to the socket. With layers under MQTT
 * (WebSocket, TLS) the buffer becomes frames and records first and those
 * are written instead (layered_flush); QoS 0 publishes are then done()
 * when their bytes left us.
 * Nothing here decodes, or knows of packet ids and windows.
 */
#include "mqttc_int.h"

#include <stdlib.h>
#include <string.h>

#define OUT_MIN_CAP 16384
#define OUT_KEEP_MAX (1024u * 1024)

int mqr__mqttc_buf_grow(mqttc_buf_t *b, size_t need)
{
    if (b->cap - b->len >= need) return 0;
    size_t cap = b->cap ? b->cap : OUT_MIN_CAP;
    while (cap - b->len < need)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) return MQR_ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

uint8_t *mqr__mqttc_out_reserve(mqr_mqttc_t *c, size_t n)
{
    return mqr__mqttc_buf_grow(&c->out, n) ? NULL : c->out.p + c->out.len;
}

void mqr__mqttc_out_commit(mqr_mqttc_t *c, size_t n)
{
    c->out.len += n;
    c->last_sent = uv_now(c->loop);
    if (!c->idle_on && !c->writing) {
        uv_idle_start(&c->idle, mqr__mqttc_on_idle);
        c->idle_on = true;
    }
}

int mqr__mqttc_out_token(mqr_mqttc_t *c, uint64_t token)
{
    mqttc_tokens_t *t = &c->tok;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        uint64_t *v = realloc(t->v, cap * sizeof *v);
        if (!v) return MQR_ENOMEM;
        t->v = v;
        t->cap = cap;
    }
    t->v[t->n++] = token;
    return 0;
}

int mqr__mqttc_out_ack(mqr_mqttc_t *c, int type, uint16_t id, uint8_t reason)
{
    mqr_mqtt_ack_t a = {.type = (uint8_t)type, .packet_id = id, .reason = reason};
    uint8_t *w = mqr__mqttc_out_reserve(c, 8);
    size_t len;
    if (!w) return MQR_ENOMEM;
    int rc = mqr__mqtt_encode_ack(&a, c->version, w, 8, &len);
    if (rc) return rc;
    mqr__mqttc_out_commit(c, len);
    return 0;
}

/* Reports the tokens of bytes the socket took. done() may close the
 * client: then out_fail has reported the rest and t->head says so. */
static void tokens_done(mqr_mqttc_t *c, mqttc_tokens_t *t)
{
    while (t->head < t->n && c->st != MQTTC_CLOSED) {
        uint64_t token = t->v[t->head++];
        mqr__mqttc_done(c, token, 0, 0);
    }
    t->n = t->head = 0;
}

static void tokens_fail(mqr_mqttc_t *c, mqttc_tokens_t *t, int err)
{
    while (t->head < t->n)
        mqr__mqttc_done(c, t->v[t->head++], err, 0);
    t->n = t->head = 0;
}

void mqr__mqttc_out_fail(mqr_mqttc_t *c, int err)
{
    tokens_fail(c, &c->wtok, err);
    tokens_fail(c, &c->tok, err);
    c->out.len = 0;
}

static void after_written(mqr_mqttc_t *c)
{
    if (c->st == MQTTC_CLOSING && c->shutdown_after && c->out.len == 0 && !c->writing) {
        c->shutdown_after = false;
        mqr__mqttc_shutdown(c);
    }
}

static void on_write(uv_write_t *req, int status)
{
    mqr_mqttc_t *c = req->data;
    c->writing = false;
    c->wbuf.len = 0;
    if (c->wbuf.cap > OUT_KEEP_MAX) { /* a burst went by: do not keep its memory */
        free(c->wbuf.p);
        c->wbuf = (mqttc_buf_t){0};
    }
    if (c->st == MQTTC_CLOSED) return; /* tokens were failed at close */
    if (status < 0) {
        mqr__mqttc_fail(c, status, 0, "write failed");
        return;
    }
    tokens_done(c, &c->wtok);
    if (c->st == MQTTC_CLOSED) return;
    if ((c->out.len || c->spend.len || mqr__mqttc_tls_pending(c)) && !c->idle_on) {
        uv_idle_start(&c->idle, mqr__mqttc_on_idle);
        c->idle_on = true;
    }
    after_written(c);
}

void mqr__mqttc_out_kick(mqr_mqttc_t *c)
{
    if (!c->idle_on && !c->writing && c->st != MQTTC_CLOSED) {
        uv_idle_start(&c->idle, mqr__mqttc_on_idle);
        c->idle_on = true;
    }
}

/* Swaps two token lists (the one gathered becomes the one written). */
static void tokens_swap(mqttc_tokens_t *a, mqttc_tokens_t *b)
{
    mqttc_tokens_t t = *a;
    *a = *b;
    *b = t;
}

int mqr__mqttc_buf_add(mqttc_buf_t *b, const void *p, size_t n)
{
    if (mqr__mqttc_buf_grow(b, n)) return MQR_ENOMEM;
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

/* Under MQTT there are layers (WebSocket, TLS): the gathered MQTT bytes
 * become a frame (not before CONNECT is due: the layers' own handshakes go
 * out alone), the stream's bytes become TLS records, and whatever waits
 * for the socket goes out in one write. */
static void layered_flush(mqr_mqttc_t *c)
{
    if (c->writing || c->st == MQTTC_CLOSED) return;
    int rc = 0;
    if (c->out.len && c->st >= MQTTC_CONNACK) {
        rc = c->ws ? mqr__mqttc_ws_frame(c, c->out.p, c->out.len)
                   : mqr__mqttc_buf_add(&c->spend, c->out.p, c->out.len);
        c->out.len = 0;
        tokens_swap(&c->tok, &c->wtok); /* wtok is empty: no write in flight */
    }
    if (rc == 0 && c->spend.len && (!c->tls || mqr__mqttc_tls_ready(c))) {
        if (c->tls) {
            if (mqr__mqttc_tls_seal(c, c->spend.p, c->spend.len) < 0) return; /* closed */
        } else {
            rc = mqr__mqttc_buf_add(&c->wbuf, c->spend.p, c->spend.len);
        }
        c->spend.len = 0;
    }
    if (rc == 0 && c->tls) rc = mqr__mqttc_tls_take(c, &c->wbuf);
    if (rc < 0) {
        mqr__mqttc_fail(c, rc, 0, "no memory for output");
        return;
    }
    if (c->wbuf.len == 0) {
        tokens_done(c, &c->wtok);
        if (c->st != MQTTC_CLOSED) after_written(c);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)c->wbuf.p, (unsigned)c->wbuf.len);
    c->wreq.data = c;
    rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc) {
        mqr__mqttc_fail(c, rc, 0, "write failed");
        return;
    }
    c->writing = true;
}

static void out_flush(mqr_mqttc_t *c)
{
    if (c->tls || c->ws) {
        layered_flush(c);
        return;
    }
    if (c->writing || c->out.len == 0 || c->st == MQTTC_CLOSED || c->st < MQTTC_CONNACK) return;
    uv_buf_t b = uv_buf_init((char *)c->out.p, (unsigned)c->out.len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == UV_EAGAIN || n == UV_ENOSYS) n = 0;
    if (n < 0) {
        mqr__mqttc_fail(c, n, 0, "write failed");
        return;
    }
    tokens_swap(&c->tok, &c->wtok); /* wtok is empty: no write in flight */
    if ((size_t)n == c->out.len) {
        c->out.len = 0;
        tokens_done(c, &c->wtok);
        if (c->st != MQTTC_CLOSED) after_written(c);
        return;
    }
    mqttc_buf_t t = c->wbuf; /* empty: no write in flight */
    c->wbuf = c->out;
    c->out = t;
    c->out.len = 0;
    b = uv_buf_init((char *)c->wbuf.p + n, (unsigned)(c->wbuf.len - (size_t)n));
    c->wreq.data = c;
    int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc) {
        mqr__mqttc_fail(c, rc, 0, "write failed");
        return;
    }
    c->writing = true;
}

void mqr__mqttc_on_idle(uv_idle_t *h)
{
    mqr_mqttc_t *c = h->data;
    uv_idle_stop(h);
    c->idle_on = false;
    out_flush(c);
}

void mqr__mqttc_out_free(mqr_mqttc_t *c)
{
    free(c->out.p);
    free(c->wbuf.p);
    free(c->tok.v);
    free(c->wtok.v);
}
