/*
 * transport.c — what a TLS or WebSocket connection has that a plain TCP one
 * has not: reading raw bytes into the layers (tls.c decrypts, ws.c unframes)
 * and from them into the MQTT input; encoding the MQTT output down through
 * the layers into a queue of wire bytes; writing that queue; a graceful end
 * that sends the layers' own goodbyes (WebSocket close frame, TLS
 * close_notify) before shutting the socket down.
 *
 * Plain TCP connections never come here (c->tp is NULL), so their path stays
 * what conn.c makes it. Nothing here blocks: TLS runs on memory BIOs and
 * WebSocket framing on wslay's callbacks, both fed from the loop's reads.
 */
#include "listener_int.h"

#include <stdlib.h>
#include <string.h>

/* ---- the wire queue ------------------------------------------------------ */

int mqr__ltp_wire(mqr_lconn_t *c, const uint8_t *p, size_t n)
{
    mqr_ltp_t *tp = c->tp;
    while (n > 0) {
        mqr_oblock_t *t = tp->w_tail;
        if (!t || t->used == t->cap) {
            mqr_oblock_t *b = mqr__listener_block_get(c->l, MQR_LSN_BLOCK_SIZE);
            if (!b) return MQR_ENOMEM;
            if (t)
                t->next = b;
            else
                tp->w_head = b;
            tp->w_tail = t = b;
        }
        size_t k = t->cap - t->used < n ? t->cap - t->used : n;
        memcpy(t->data + t->used, p, k);
        t->used += k;
        tp->w_bytes += k;
        p += k;
        n -= k;
    }
    return 0;
}

static void wire_consume(mqr_lconn_t *c, size_t n)
{
    mqr_ltp_t *tp = c->tp;
    tp->w_bytes -= n;
    while (n > 0 && tp->w_head) {
        mqr_oblock_t *h = tp->w_head;
        size_t k = h->used - h->done < n ? h->used - h->done : n;
        if (k == 0 && h == tp->w_tail) break;
        h->done += k;
        n -= k;
        if (h->done == h->used && (h->used == h->cap || h != tp->w_tail)) {
            tp->w_head = h->next;
            if (!tp->w_head) tp->w_tail = NULL;
            mqr__listener_block_put(c->l, h);
        }
    }
    if (tp->w_head && tp->w_head == tp->w_tail && tp->w_head->done == tp->w_head->used)
        tp->w_head->done = tp->w_head->used = 0; /* empty: start it over */
}

static size_t wire_gather(mqr_ltp_t *tp, uv_buf_t *bufs, size_t max, size_t *bytes)
{
    size_t n = 0, total = 0;
    for (mqr_oblock_t *b = tp->w_head; b && n < max; b = b->next) {
        if (b->used == b->done) continue;
        bufs[n++] = uv_buf_init((char *)b->data + b->done, (unsigned)(b->used - b->done));
        total += b->used - b->done;
    }
    *bytes = total;
    return n;
}

static void wire_free(mqr_lconn_t *c)
{
    mqr_ltp_t *tp = c->tp;
    while (tp->w_head) {
        mqr_oblock_t *b = tp->w_head;
        tp->w_head = b->next;
        mqr__listener_block_put(c->l, b);
    }
    tp->w_tail = NULL;
    tp->w_bytes = tp->w_locked = 0;
}

/* ---- the layers ----------------------------------------------------------- */

int mqr__ltp_mqtt(mqr_lconn_t *c, const uint8_t *p, size_t n)
{
    while (n > 0) {
        if (c->state == MQR_LCONN_CLOSING || c->uv_closing) return MQR_ECLOSED;
        uv_buf_t room;
        mqr__listener_in_room(c, &room);
        if (!room.base || room.len == 0) {
            mqr__listener_conn_close(c, MQR_LCLOSE_HARD, 0, "out of memory");
            return MQR_ENOMEM;
        }
        size_t k = n < room.len ? n : room.len;
        memcpy(room.base, p, k);
        mqr__listener_in_done(c, k);
        p += k;
        n -= k;
    }
    return c->state == MQR_LCONN_CLOSING ? MQR_ECLOSED : 0;
}

int mqr__ltp_up(mqr_lconn_t *c, const uint8_t *p, size_t n)
{
    return c->tp->ws ? mqr__lws_input(c, p, n) : mqr__ltp_mqtt(c, p, n);
}

int mqr__ltp_down(mqr_lconn_t *c, const uint8_t *p, size_t n)
{
    return c->tp->ssl ? mqr__ltls_write(c, p, n) : mqr__ltp_wire(c, p, n);
}

/* MQTT output into the wire queue while the queue holds less than high. */
static int encode(mqr_lconn_t *c, size_t high)
{
    mqr_ltp_t *tp = c->tp;
    uint8_t stage[MQR_LTP_STAGE];
    while (c->seg_count && tp->w_bytes < high && !c->uv_closing) {
        /* many small packets make one TLS record / WebSocket frame */
        size_t n = mqr__listener_out_take(c, stage, sizeof stage);
        int rc = tp->ws ? mqr__lws_write(c, stage, n) : mqr__ltp_down(c, stage, n);
        if (rc < 0) return rc;
    }
    return 0;
}

/* ---- writing -------------------------------------------------------------- */

static void on_shutdown(uv_shutdown_t *req, int status)
{
    mqr_lconn_t *c = req->data;
    /* as for plain TCP: wait (reading) for the client to close its side; the
     * timer ends the wait */
    if (status < 0 && !c->uv_closing) mqr__listener_conn_close(c, MQR_LCLOSE_HARD, 0, "shutdown");
}

static void maybe_shutdown(mqr_lconn_t *c)
{
    mqr_ltp_t *tp = c->tp;
    if (!tp->shutdown_wanted || tp->shutdown_sent || c->writing || tp->w_bytes || c->uv_closing)
        return;
    tp->shutdown_sent = true;
    mqr_lreqs_t *rq = mqr__listener_reqs(c);
    if (!rq || uv_shutdown(&rq->s, (uv_stream_t *)&c->tcp, on_shutdown) < 0)
        mqr__listener_conn_close(c, MQR_LCLOSE_HARD, 0, "shutdown");
}

static void wire_write(mqr_lconn_t *c);

static void on_write(uv_write_t *req, int status)
{
    mqr_lconn_t *c = req->data;
    mqr_ltp_t *tp = c->tp;
    size_t b = tp->w_locked;
    c->writing = false;
    tp->w_locked = 0;
    if (status == 0) c->l->stats.bytes_out += b;
    wire_consume(c, b);
    if (status < 0) {
        if (!c->uv_closing) mqr__listener_write_failed(c, status);
        return;
    }
    mqr__ltp_flush(c);
}

static size_t wire_gather_of(mqr_lconn_t *c, uv_buf_t *bufs, size_t max, size_t *bytes)
{
    return wire_gather(c->tp, bufs, max, bytes);
}

static void wire_write(mqr_lconn_t *c)
{
    mqr_ltp_t *tp = c->tp;
    if (c->writing || c->uv_closing || c->eof || tp->w_bytes == 0) return;
    tp->w_locked = mqr__listener_write(c, wire_gather_of, wire_consume, on_write);
}

void mqr__ltp_flush(mqr_lconn_t *c)
{
    for (;;) {
        if (c->uv_closing || c->eof) return;
        if (!c->tp->shutdown_wanted && encode(c, MQR_LTP_WIRE_HIGH) < 0) return;
        wire_write(c);
        if (c->uv_closing) return;
        /* the socket took it all at once: no write callback will come to
         * encode the rest, so go on now */
        if (c->writing || !c->seg_count || c->tp->shutdown_wanted) break;
    }
    maybe_shutdown(c);
}

void mqr__ltp_close(mqr_lconn_t *c)
{
    mqr_ltp_t *tp = c->tp;
    if (tp->shutdown_wanted) return;
    if (encode(c, SIZE_MAX) < 0 || c->uv_closing) return;
    if (tp->ws) mqr__lws_close(c, 1000);
    if (tp->ssl) mqr__ltls_close_notify(c);
    tp->shutdown_wanted = true;
    wire_write(c);
    if (!c->uv_closing) maybe_shutdown(c);
}

bool mqr__ltp_pending(const mqr_lconn_t *c)
{
    return c->tp && c->tp->w_bytes > 0;
}

/* ---- reading -------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    mqr_lconn_t *c = h->data;
    *buf = uv_buf_init((char *)c->l->tbuf, MQR_LSN_TBUF_SIZE);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    mqr_lconn_t *c = s->data;
    mqr_listener_t *l = c->l;
    if (nread == 0) return;
    if (nread < 0) {
        mqr__listener_conn_read_end(c, nread);
        return;
    }
    l->stats.bytes_in += (uint64_t)nread;
    if (c->state == MQR_LCONN_CLOSING) return; /* lingering: input is ignored */
    c->last_rx_ms = uv_now(l->all->loop);
    l->read_ms = mqr__now_ms();
    const uint8_t *p = (const uint8_t *)buf->base;
    if (c->tp->ssl)
        mqr__ltls_input(c, p, (size_t)nread);
    else
        mqr__ltp_up(c, p, (size_t)nread);
    /* handshake answers, pongs, close replies go now; MQTT answers wait
     * for the end of the loop turn (the check handle), batched */
    if (!c->uv_closing) wire_write(c);
}

void mqr__ltp_read_start(mqr_lconn_t *c)
{
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

int mqr__ltp_start(mqr_lconn_t *c)
{
    mqr_listener_t *l = c->l;
    c->tp = calloc(1, sizeof *c->tp);
    if (!c->tp) return MQR_ENOMEM;
    int rc = 0;
    if (l->ssl_ctx) rc = mqr__ltls_start(c);
    if (rc == 0 && l->ws) rc = mqr__lws_start(c);
    if (rc < 0) return rc;
    return uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

void mqr__ltp_free(mqr_lconn_t *c)
{
    if (!c->tp) return;
    mqr__lws_free(c);
    mqr__ltls_free(c);
    wire_free(c);
    free(c->tp);
    c->tp = NULL;
}
