/*
 * conn.c — one client's socket: reading and framing, the output buffer and
 * its batched writes, closing, and the timer's checks.
 *
 * Reads land in the listener's shared buffer and every complete packet in it
 * is handled before the next read; only an incomplete tail is kept per
 * connection. Output is appended to the connection's blocks (or, for big
 * payloads, refers to the message) and written once per loop turn by the
 * listener's check handle: uv_try_write first, uv_write for what the socket
 * did not take. Nothing here decodes packet bodies (handle_*.c) or encodes
 * them (send.c). A connection is never freed from inside one of its own
 * callbacks' callers: only the handle's close callback (or the last store
 * callback) frees it.
 */
#include "listener_int.h"

#include "store.h"

#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void rate_resume(mqr_lconn_t *c, uint64_t now);

/* ---- output blocks ------------------------------------------------------- */

mqr_oblock_t *mqr__listener_block_get(mqr_listener_t *l, size_t need)
{
    mqr_oblock_t *b;
    if (need <= MQR_LSN_BLOCK_SIZE && l->pool) {
        b = l->pool;
        l->pool = b->next;
        l->npool--;
    } else {
        size_t cap = need > MQR_LSN_BLOCK_SIZE ? need : MQR_LSN_BLOCK_SIZE;
        b = malloc(sizeof *b + cap);
        if (!b) return NULL;
        b->cap = cap;
    }
    b->next = NULL;
    b->used = b->done = 0;
    return b;
}

static mqr_oblock_t *small_block_get(mqr_listener_t *l)
{
    mqr_oblock_t *b = l->spool;
    if (b) {
        l->spool = b->next;
        l->nspool--;
    } else {
        b = malloc(sizeof *b + MQR_LSN_SMALL_BLOCK);
        if (!b) return NULL;
        b->cap = MQR_LSN_SMALL_BLOCK;
    }
    b->next = NULL;
    b->used = b->done = 0;
    return b;
}

void mqr__listener_block_put(mqr_listener_t *l, mqr_oblock_t *b)
{
    if (b->cap == MQR_LSN_SMALL_BLOCK && l->nspool < MQR_LSN_SMALL_POOL_MAX && !l->closing) {
        b->next = l->spool;
        l->spool = b;
        l->nspool++;
        return;
    }
    if (b->cap == MQR_LSN_BLOCK_SIZE && l->npool < MQR_LSN_POOL_MAX && !l->closing) {
        b->next = l->pool;
        l->pool = b;
        l->npool++;
    } else {
        free(b);
    }
}

void mqr__listener_pool_free(mqr_listener_t *l)
{
    while (l->pool) {
        mqr_oblock_t *b = l->pool;
        l->pool = b->next;
        free(b);
    }
    l->npool = 0;
    while (l->spool) {
        mqr_oblock_t *b = l->spool;
        l->spool = b->next;
        free(b);
    }
    l->nspool = 0;
}

/* Gives back blocks nothing refers to any more. */
static void blocks_trim(mqr_lconn_t *c)
{
    mqr_oblock_t *h;
    while ((h = c->blk_head) && h->done == h->used) {
        if (h != c->blk_tail) {
            c->blk_head = h->next;
            mqr__listener_block_put(c->l, h);
        } else if (c->seg_count == 0) {
            c->blk_head = c->blk_tail = NULL;
            mqr__listener_block_put(c->l, h);
        } else {
            h->used = h->done = 0; /* only payload segments left: reuse it */
            break;
        }
    }
}

/* ---- output segments ---------------------------------------------------- */

static inline mqr_oseg_t *seg_at(mqr_lconn_t *c, size_t i)
{
    return &c->segs[(c->seg_head + i) & (c->seg_cap - 1)];
}

static int seg_push(mqr_lconn_t *c, const mqr_oseg_t *s)
{
    if (c->seg_count == c->seg_cap) {
        size_t cap = c->seg_cap ? c->seg_cap * 2 : 16;
        mqr_oseg_t *n = malloc(cap * sizeof *n);
        if (!n) return MQR_ENOMEM;
        for (size_t i = 0; i < c->seg_count; i++)
            n[i] = *seg_at(c, i);
        free(c->segs);
        c->segs = n;
        c->seg_cap = cap;
        c->seg_head = 0;
    }
    *seg_at(c, c->seg_count) = *s;
    c->seg_count++;
    return 0;
}

static void mark_dirty(mqr_lconn_t *c)
{
    if (c->dirty) return;
    mqr_listener_t *l = c->l;
    c->dirty = true;
    c->dirty_next = l->dirty;
    l->dirty = c;
    if (!l->idle_on) mqr__listener_wake(l);
}

uint8_t *mqr__listener_out_reserve(mqr_lconn_t *c, size_t n)
{
    mqr_oblock_t *t = c->blk_tail;
    if (t && t->cap - t->used >= n) return t->data + t->used;
    mqr_oblock_t *b =
        !t && n <= MQR_LSN_SMALL_BLOCK ? small_block_get(c->l) : mqr__listener_block_get(c->l, n);
    if (!b) return NULL;
    if (t)
        t->next = b;
    else
        c->blk_head = b;
    c->blk_tail = b;
    return b->data;
}

void mqr__listener_out_commit(mqr_lconn_t *c, size_t n)
{
    mqr_oblock_t *b = c->blk_tail;
    uint8_t *p = b->data + b->used;
    bool merged = false;
    if (c->seg_count > c->seg_locked) {
        /* contiguous with the last unlocked segment: one iovec for many
         * packets */
        mqr_oseg_t *last = seg_at(c, c->seg_count - 1);
        if (last->blk == b && (uint8_t *)last->buf.base + last->buf.len == p) {
            last->buf.len += n;
            merged = true;
        }
    }
    if (!merged) {
        mqr_oseg_t s = {.buf = uv_buf_init((char *)p, (unsigned)n), .blk = b};
        if (seg_push(c, &s) < 0) {
            /* a lost packet would break the stream: give up on the client */
            mqr__listener_conn_close(c, MQR_LCLOSE_HARD, 0, "out of memory");
            return;
        }
    }
    b->used += n;
    c->out_bytes += n;
    c->l->stats.packets_out[p[0] >> 4]++; /* every commit starts a packet */
    mark_dirty(c);
    if (c->out_bytes - c->locked_bytes >= MQR_LSN_FLUSH_AT && !c->writing)
        mqr__listener_out_flush(c);
}

int mqr__listener_out_payload(mqr_lconn_t *c, mqr_msg_t *msg)
{
    mqr_oseg_t s = {.buf = uv_buf_init((char *)msg->payload, msg->payload_len), .msg = msg};
    int rc = seg_push(c, &s);
    if (rc < 0) return rc;
    mqr_msg_ref(msg);
    c->out_bytes += msg->payload_len;
    mark_dirty(c);
    return 0;
}

/* Something still keeps c's input stopped (or c is going). */
static bool input_stopped(const mqr_lconn_t *c)
{
    return c->blocked_by || c->read_paused || c->rate_paused || c->hold || c->uv_closing ||
           c->state == MQR_LCONN_CLOSING;
}

static void read_start(mqr_lconn_t *c)
{
    if (c->tp)
        mqr__ltp_read_start(c);
    else
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void resume_reading(mqr_lconn_t *c)
{
    if (!c->read_paused || c->uv_closing) return;
    c->read_paused = false;
    mqr__listener_conn_input_resume(c);
}

void mqr__listener_conn_input_pause(mqr_lconn_t *c)
{
    if (!c->uv_closing) uv_read_stop((uv_stream_t *)&c->tcp);
}

void mqr__listener_conn_input_resume(mqr_lconn_t *c)
{
    if (input_stopped(c)) return;
    c->last_rx_ms = uv_now(c->l->all->loop); /* we were the ones not reading */
    if (c->pend_len) {
        /* packets kept: handled first, on the check handle (not inside the
         * caller, which may be another client's routing), then reading */
        mqr_listener_t *l = c->l;
        if (c->resume_queued) return;
        if (l->nresumed == l->resumed_cap) {
            uint32_t cap = l->resumed_cap ? l->resumed_cap * 2 : 8;
            mqr_lconn_t **v = realloc(l->resumed, cap * sizeof *v);
            if (!v) {
                mqr__listener_conn_close(c, MQR_LCLOSE_HARD, 0, "out of memory");
                return;
            }
            l->resumed = v;
            l->resumed_cap = cap;
        }
        l->resumed[l->nresumed++] = c;
        c->resume_queued = true;
        c->refs++;
        mqr__listener_wake(l);
        return;
    }
    read_start(c);
}

static bool source_hold(mqr_source_t *s)
{
    mqr_lconn_t *c = (mqr_lconn_t *)((char *)s - offsetof(mqr_lconn_t, src));
    if (c->state != MQR_LCONN_ACTIVE) return false;
    c->refs++;
    if (c->blocked_by++ == 0) mqr__listener_conn_input_pause(c);
    return true;
}

static void source_release(mqr_source_t *s)
{
    mqr_lconn_t *c = (mqr_lconn_t *)((char *)s - offsetof(mqr_lconn_t, src));
    if (--c->blocked_by == 0) mqr__listener_conn_input_resume(c);
    mqr__listener_conn_unref(c);
}

void mqr__listener_conn_source_init(mqr_lconn_t *c)
{
    c->src.hold = source_hold;
    c->src.release = source_release;
}

/* Drops the first n bytes of output: written, or given up. */
static void consume(mqr_lconn_t *c, size_t n)
{
    while (n > 0 && c->seg_count > 0) {
        mqr_oseg_t *s = seg_at(c, 0);
        size_t k = s->buf.len <= n ? s->buf.len : n;
        if (s->blk) s->blk->done += k;
        c->out_bytes -= k;
        n -= k;
        if (k == s->buf.len) {
            if (s->msg) mqr_msg_unref(s->msg);
            c->seg_head = (c->seg_head + 1) & (c->seg_cap - 1);
            c->seg_count--;
        } else {
            s->buf.base += k;
            s->buf.len -= (unsigned)k;
        }
    }
    blocks_trim(c);
    if (c->seg_count == 0 && c->seg_cap <= 16 && c->segs) {
        /* all out: an idle client keeps no ring (it was a third of its
         * memory); the next output gets one back from malloc's cache */
        free(c->segs);
        c->segs = NULL;
        c->seg_cap = c->seg_head = 0;
    }
    if (c->read_paused && c->out_bytes <= c->l->opts.max_out_bytes / 4) resume_reading(c);
}

size_t mqr__listener_out_take(mqr_lconn_t *c, uint8_t *dst, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < c->seg_count && n < max; i++) {
        const mqr_oseg_t *s = seg_at(c, i);
        size_t k = s->buf.len < max - n ? s->buf.len : max - n;
        memcpy(dst + n, s->buf.base, k);
        n += k;
    }
    consume(c, n);
    return n;
}

static void drop_output(mqr_lconn_t *c)
{
    consume(c, c->out_bytes);
    while (c->blk_head) {
        mqr_oblock_t *b = c->blk_head;
        c->blk_head = b->next;
        mqr__listener_block_put(c->l, b);
    }
    c->blk_tail = NULL;
}

static size_t gather(mqr_lconn_t *c, uv_buf_t *bufs, size_t max, size_t *bytes)
{
    size_t n = c->seg_count < max ? c->seg_count : max;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        bufs[i] = seg_at(c, i)->buf;
        total += bufs[i].len;
    }
    *bytes = total;
    return n;
}

void mqr__listener_write_failed(mqr_lconn_t *c, int err)
{
    c->eof = true;
    if (c->state == MQR_LCONN_ACTIVE) c->will_publish = true;
    mqr__listener_conn_close(c, MQR_LCLOSE_HARD, 0, uv_strerror(err));
}

size_t mqr__listener_write(mqr_lconn_t *c, mqr_lgather_fn gather_fn, mqr_lconsume_fn consume_fn,
                           uv_write_cb done)
{
    uv_buf_t bufs[MQR_LSN_MAX_IOV];
    size_t bytes, n;
    for (;;) {
        n = gather_fn(c, bufs, MQR_LSN_MAX_IOV, &bytes);
        if (bytes == 0) return 0;
        int r = uv_try_write((uv_stream_t *)&c->tcp, bufs, (unsigned)n);
        if (r == UV_EAGAIN || r == UV_ENOSYS) r = 0;
        if (r < 0) {
            mqr__listener_write_failed(c, r);
            return 0;
        }
        c->l->stats.bytes_out += (uint64_t)r;
        consume_fn(c, (size_t)r);
        if ((size_t)r < bytes) break; /* the socket is full */
    }
    n = gather_fn(c, bufs, MQR_LSN_MAX_IOV, &bytes);
    mqr_lreqs_t *rq = mqr__listener_reqs(c);
    int rc = rq ? uv_write(&rq->w, (uv_stream_t *)&c->tcp, bufs, (unsigned)n, done) : MQR_ENOMEM;
    if (rc < 0) {
        mqr__listener_write_failed(c, rc);
        return 0;
    }
    c->writing = true;
    return bytes;
}

static void on_write(uv_write_t *req, int status)
{
    mqr_lconn_t *c = req->data;
    size_t b = c->locked_bytes;
    c->writing = false;
    c->seg_locked = 0;
    c->locked_bytes = 0;
    if (status == 0) c->l->stats.bytes_out += b;
    consume(c, b);
    if (status < 0) {
        if (!c->uv_closing) mqr__listener_write_failed(c, status);
        return;
    }
    if (c->seg_count) mqr__listener_out_flush(c);
}

void mqr__listener_out_flush(mqr_lconn_t *c)
{
    if (c->tp) {
        mqr__ltp_flush(c);
        return;
    }
    if (c->writing || c->uv_closing || c->eof || c->seg_count == 0) return;
    size_t bytes = mqr__listener_write(c, gather, consume, on_write);
    if (!bytes) return;
    c->seg_locked = c->seg_count < MQR_LSN_MAX_IOV ? c->seg_count : MQR_LSN_MAX_IOV;
    c->locked_bytes = bytes;
}

void mqr__listener_flush_all(mqr_listener_t *l)
{
    while (l->dirty) {
        mqr_lconn_t *c = l->dirty;
        l->dirty = c->dirty_next;
        c->dirty_next = NULL;
        c->dirty = false;
        mqr__listener_out_flush(c);
    }
}

/* ---- freeing --------------------------------------------------------------- */

static void conn_free(mqr_lconn_t *c)
{
    mqr_listener_t *l = c->l;
    if (c->dirty) {
        for (mqr_lconn_t **pp = &l->dirty; *pp; pp = &(*pp)->dirty_next) {
            if (*pp == c) {
                *pp = c->dirty_next;
                break;
            }
        }
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        l->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    l->nconns--;
    free(c->segs);
    free(c->reqs);
    free(c->pend);
    free(c->client_id);
    free(c->mount);
    mqr__listener_qstate_free(c);
    free(c->aliases);
    mqr__listener_auth_free(c);
    free(c);
    mqr__listener_maybe_free(l);
}

mqr_lreqs_t *mqr__listener_reqs(mqr_lconn_t *c)
{
    if (!c->reqs && (c->reqs = malloc(sizeof *c->reqs))) c->reqs->w.data = c->reqs->s.data = c;
    return c->reqs;
}

void mqr__listener_conn_unref(mqr_lconn_t *c)
{
    if (--c->refs == 0) conn_free(c);
}

static void on_close(uv_handle_t *h)
{
    mqr_lconn_t *c = h->data;
    drop_output(c);
    if (c->tp) mqr__ltp_free(c);
    mqr__listener_conn_unref(c);
}

static void hard_close(mqr_lconn_t *c)
{
    if (c->uv_closing) return;
    c->uv_closing = true;
    uv_close((uv_handle_t *)&c->tcp, on_close);
}

/* ---- closing ------------------------------------------------------------- */

static void on_shutdown(uv_shutdown_t *req, int status)
{
    mqr_lconn_t *c = req->data;
    /* Our side is done; wait (reading) for the client to close its side, so
     * closing never resets data it has not read yet. The timer ends the
     * wait. */
    if (status < 0 && !c->uv_closing) hard_close(c);
}

void mqr__listener_conn_close(mqr_lconn_t *c, mqr_lclose_t how, uint8_t reason, const char *why)
{
    mqr_listener_t *l = c->l;
    if (c->state == MQR_LCONN_CLOSING) {
        if (how == MQR_LCLOSE_HARD) hard_close(c);
        return;
    }
    bool active = c->state == MQR_LCONN_ACTIVE;
    c->state = MQR_LCONN_CLOSING;
    c->close_why = why;
    l->stats.connections_current--;
    c->pend_len = 0; /* input is ignored from now on */
    if (active) {
        l->stats.clients_current--;
        MQR_LOG_I(MQR_LSN_LOG, "client %s (%s, MQTT %s) disconnected: %s", c->client_id, c->addr,
                  c->version == MQR_MQTT_V5 ? "5.0" : "3.1.1", why);
    } else if (c->addr[0]) {
        MQR_LOG_I(MQR_LSN_LOG, "connection from %s closed before CONNACK: %s", c->addr, why);
    }

    /* a persistent session goes offline with the subscriptions, deliveries
     * and QoS 2 ids (c keeps none); any other ends now: no message may
     * reach it from here on */
    if (active) mqr__client_session_disconnect(c);
    mqr__listener_device_offline(c, why);
    mqr__listener_subs_clear(c);
    mqr__listener_id_remove(l, c);
    mqr__listener_deliveries_clear(c);
    mqr__listener_aliases_clear(c);
    mqr__mqtt_alias_out_clear(&c->out_alias);
    mqr__listener_acks_clear(c);
    mqr__listener_auth_cancel(c); /* a password check not started yet never runs */
    if (c->qs) {
        free(c->qs->qos2_ids);
        c->qs->qos2_ids = NULL;
        c->qs->qos2_count = 0;
    }
    if (c->will) {
        mqr_msg_t *will = c->will;
        c->will = NULL;
        if (c->will_publish && !l->closing) {
            MQR_LOG_D(MQR_LSN_LOG, "client %s: publishing will on %s", c->client_id, will->topic);
            mqr__engine_publish(l->e, will);
        }
        mqr_msg_unref(will);
    }

    if (how == MQR_LCLOSE_DISCONNECT && active && c->version == MQR_MQTT_V5 && !c->eof)
        mqr__listener_send_disconnect(c, reason);
    if (c->tp && how != MQR_LCLOSE_HARD && !c->eof && !c->uv_closing && !l->closing) {
        c->deadline_ms = uv_now(l->all->loop) + MQR_LSN_LINGER_MS;
        mqr__ltp_close(c); /* close frame, close_notify, then shutdown */
        if (!c->uv_closing) resume_reading(c);
        return;
    }
    if (how != MQR_LCLOSE_HARD && c->out_bytes && !c->eof && !c->uv_closing && !l->closing) {
        c->deadline_ms = uv_now(l->all->loop) + MQR_LSN_LINGER_MS;
        mqr__listener_out_flush(c);
        if (c->uv_closing) return; /* the write failed */
        resume_reading(c);
        mqr_lreqs_t *rq = mqr__listener_reqs(c);
        if (rq && uv_shutdown(&rq->s, (uv_stream_t *)&c->tcp, on_shutdown) == 0) return;
    }
    hard_close(c);
}

int mqr__listener_conn_fail(mqr_lconn_t *c, uint8_t reason, const char *why)
{
    c->l->stats.malformed++;
    MQR_LOG_I(MQR_LSN_LOG, "client %s (%s): %s (reason 0x%02X), closing", mqr__lconn_name(c),
              c->addr, why, reason);
    if (c->state == MQR_LCONN_ACTIVE) {
        c->will_publish = true; /* a protocol error is not a normal disconnection */
        mqr__listener_conn_close(c, MQR_LCLOSE_DISCONNECT, reason, why);
    } else {
        mqr__listener_conn_close(c, MQR_LCLOSE_HARD, reason, why);
    }
    return MQR_EPROTOCOL;
}

/* A client quiet for a second gives back its empty output ring and input
 * buffer: with many idle clients they were most of the memory of each. The
 * next packet allocates them again (once per burst, not per packet). */
static void shrink_idle(mqr_lconn_t *c, uint64_t now)
{
    if (now - c->last_rx_ms < 1000u) return;
    if (c->segs && c->seg_count == 0 && !c->writing) {
        free(c->segs);
        c->segs = NULL;
        c->seg_cap = c->seg_head = 0;
    }
    if (c->pend && c->pend_len == 0) {
        free(c->pend);
        c->pend = NULL;
        c->pend_cap = 0;
    }
}

void mqr__listener_conn_tick(mqr_lconn_t *c, uint64_t now)
{
    mqr_listener_t *l = c->l;
    if (c->state == MQR_LCONN_ACTIVE) shrink_idle(c, now);
    switch (c->state) {
    case MQR_LCONN_NEW:
        if (now >= c->deadline_ms) {
            l->stats.connects_refused++;
            l->stats.connect_timeouts++;
            mqr__listener_conn_close(c, MQR_LCLOSE_HARD, 0, "no CONNECT in time");
        }
        break;
    case MQR_LCONN_ACTIVE:
        if (c->rate_paused) {
            c->last_rx_ms = now; /* we are the ones not reading */
            rate_resume(c, now);
            break;
        }
        if (c->blocked_by) c->last_rx_ms = now; /* we are the ones not reading */
        if (c->qs && c->qs->holds.n && now - c->qs->progress_ms >= l->opts.stuck_timeout_ms) {
            /* it holds publishers paused and acknowledges nothing: let them
             * go; a persistent session keeps its queue offline */
            l->stats.stuck_disconnects++;
            c->will_publish = true;
            mqr__listener_conn_close(c, MQR_LCLOSE_DISCONNECT, MQR_MQTT_RC_QUOTA_EXCEEDED,
                                     "queue full and no progress");
            break;
        }
        if (c->keepalive_ms && now - c->last_rx_ms >= c->keepalive_ms) {
            l->stats.keepalive_timeouts++;
            c->will_publish = true;
            mqr__listener_conn_close(c, MQR_LCLOSE_DISCONNECT, MQR_MQTT_RC_KEEP_ALIVE_TIMEOUT,
                                     "keep-alive timeout");
        }
        break;
    default:
        if (!c->uv_closing && now >= c->deadline_ms) hard_close(c);
        break;
    }
}

/* ---- input ---------------------------------------------------------------- */

static int pend_reserve(mqr_lconn_t *c, size_t cap)
{
    if (c->pend_cap >= cap) return 0;
    uint8_t *p = realloc(c->pend, cap);
    if (!p) return MQR_ENOMEM;
    c->pend = p;
    c->pend_cap = cap;
    return 0;
}

static inline void in_room(mqr_lconn_t *c, uv_buf_t *buf)
{
    mqr_listener_t *l = c->l;
    if (c->pend_len >= MQR_LSN_OWN_READ_MIN) {
        /* a big packet in the making: read the rest straight behind it */
        uint32_t rl;
        size_t used;
        size_t need = c->pend_len * 2;
        if (mqr__mqtt_varint_read(c->pend + 1, c->pend_len - 1, &rl, &used) == 0)
            need = 1 + used + (size_t)rl + MQR_LSN_OWN_READ_MIN;
        /* complete packets kept while input was held come first */
        if (need < c->pend_len + MQR_LSN_OWN_READ_MIN) need = c->pend_len + MQR_LSN_OWN_READ_MIN;
        if (pend_reserve(c, need) < 0 || c->pend_cap <= c->pend_len) {
            *buf = uv_buf_init(NULL, 0); /* UV_ENOBUFS: closes */
            return;
        }
        c->read_own = true;
        *buf = uv_buf_init((char *)c->pend + c->pend_len, (unsigned)(c->pend_cap - c->pend_len));
        return;
    }
    c->read_own = false;
    if (c->pend_len) memcpy(l->rbuf, c->pend, c->pend_len);
    *buf = uv_buf_init((char *)l->rbuf + c->pend_len, (unsigned)(MQR_LSN_RBUF_SIZE - c->pend_len));
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    in_room(h->data, buf);
}

void mqr__listener_in_room(mqr_lconn_t *c, uv_buf_t *buf)
{
    in_room(c, buf);
}

static int bad_packet(mqr_lconn_t *c, int err, int type)
{
    char why[96];
    snprintf(why, sizeof why, "bad %s: %s", mqr__listener_type_name(type), mqr_strerror(err));
    if (c->state == MQR_LCONN_NEW) {
        c->l->stats.malformed++;
        c->l->stats.connects_refused++;
        MQR_LOG_I(MQR_LSN_LOG, "connection from %s: %s, closing", c->addr, why);
        mqr__listener_conn_close(c, MQR_LCLOSE_HARD, 0, "bad packet before CONNECT");
        return err;
    }
    /* why is on the stack: log it here, close with a static text */
    mqr__listener_conn_fail(c, mqr__mqtt_reason_for_error(err, type), why);
    c->close_why = "bad packet";
    return err;
}

static int dispatch(mqr_lconn_t *c, int type, uint8_t *pkt, size_t len)
{
    MQR_LOG_D(MQR_LSN_LOG, "%s <- %s (%zu bytes)", mqr__lconn_name(c),
              mqr__listener_type_name(type), len);
    c->l->stats.packets_in[type & 15]++;
    if (c->state == MQR_LCONN_NEW) {
        if (type == MQR_MQTT_AUTH && c->auth && c->version == MQR_MQTT_V5)
            return mqr__listener_handle_auth(c, pkt, len); /* a SCRAM exchange */
        if (type != MQR_MQTT_CONNECT) {
            c->l->stats.malformed++;
            c->l->stats.connects_refused++;
            MQR_LOG_I(MQR_LSN_LOG, "connection from %s: first packet is %s, not CONNECT", c->addr,
                      mqr__listener_type_name(type));
            mqr__listener_conn_close(c, MQR_LCLOSE_HARD, 0, "first packet not CONNECT");
            return MQR_EPROTOCOL;
        }
        return mqr__listener_handle_connect(c, pkt, len);
    }
    switch (type) {
    case MQR_MQTT_PUBLISH:
        return mqr__listener_handle_publish(c, pkt, len);
    case MQR_MQTT_PUBACK:
    case MQR_MQTT_PUBREC:
    case MQR_MQTT_PUBCOMP:
        return mqr__listener_handle_ack(c, pkt, len);
    case MQR_MQTT_PUBREL:
        return mqr__listener_handle_pubrel(c, pkt, len);
    case MQR_MQTT_SUBSCRIBE:
        return mqr__listener_handle_subscribe(c, pkt, len);
    case MQR_MQTT_UNSUBSCRIBE:
        return mqr__listener_handle_unsubscribe(c, pkt, len);
    case MQR_MQTT_PINGREQ:
        return mqr__listener_handle_ping(c, pkt, len);
    case MQR_MQTT_DISCONNECT:
        return mqr__listener_handle_disconnect(c, pkt, len);
    case MQR_MQTT_CONNECT:
        return mqr__listener_conn_fail(c, MQR_MQTT_RC_PROTOCOL_ERROR, "second CONNECT");
    case MQR_MQTT_AUTH:
        if (c->version == MQR_MQTT_V311) return MQR_EMALFORMED; /* reserved in 3.1.1 */
        return mqr__listener_handle_auth(c, pkt, len);          /* re-authentication */
    case 0:
        return MQR_EMALFORMED; /* reserved */
    default:
        return MQR_EPROTOCOL; /* a server-to-client packet */
    }
}

/* Refills the publish_rate bucket as of now. */
static void rate_refill(mqr_lconn_t *c, uint32_t now)
{
    const mqr_listener_options_t *o = &c->l->opts;
    uint64_t cap = (uint64_t)o->publish_burst * MQR_LSN_TOKEN;
    uint64_t add = (uint64_t)(uint32_t)(now - c->pub_ms) * o->publish_rate * MQR_LSN_TOKEN / 1000u;
    if (!add) return; /* keep pub_ms: the fraction of a token is not lost */
    uint64_t t = c->pub_tokens + add;
    c->pub_tokens = (uint32_t)(t > cap ? cap : t);
    c->pub_ms = now;
}

bool mqr__listener_rate_take(mqr_lconn_t *c)
{
    if (!c->l->opts.publish_rate) return true;
    if (c->pub_tokens < MQR_LSN_TOKEN) rate_refill(c, (uint32_t)uv_now(c->l->all->loop));
    if (c->pub_tokens < MQR_LSN_TOKEN) return false;
    c->pub_tokens -= MQR_LSN_TOKEN;
    return true;
}

static size_t process(mqr_lconn_t *c, uint8_t *data, size_t len);

/* The timer found a throttled client: once a token is back, handle the
 * packets kept while it waited, then read again. */
static void rate_resume(mqr_lconn_t *c, uint64_t now)
{
    rate_refill(c, (uint32_t)now);
    if (c->pub_tokens < MQR_LSN_TOKEN) return;
    c->rate_paused = false;
    size_t used = process(c, c->pend, c->pend_len);
    if (c->state == MQR_LCONN_CLOSING) return;
    if (used && used < c->pend_len) memmove(c->pend, c->pend + used, c->pend_len - used);
    c->pend_len -= used;
    mqr__listener_conn_input_resume(c); /* what is still kept goes first */
}

/* Handles every complete packet in data[0..len); returns the bytes used. */
static size_t process(mqr_lconn_t *c, uint8_t *data, size_t len)
{
    size_t off = 0;
    size_t max = c->l->opts.max_packet_size;
    /* blocked_by: a full queue or session took a hold on this client
     * (holds.h): the rest waits in pend, not only the next read */
    while (off < len && c->state != MQR_LCONN_CLOSING && !c->hold && !c->blocked_by) {
        mqr_mqtt_frame_t f;
        int rc = mqr__mqtt_frame(data + off, len - off, max, c->version, &f);
        if (rc == MQR_EINCOMPLETE) break;
        if (rc < 0) {
            if (rc == MQR_ETOOLARGE) c->l->stats.too_large_in++;
            bad_packet(c, rc, data[off] >> 4);
            break;
        }
        if (f.type == MQR_MQTT_PUBLISH && c->state == MQR_LCONN_ACTIVE &&
            !mqr__listener_rate_take(c)) {
            /* over publish_rate: keep the rest, stop reading; the timer
             * resumes (TCP holds the client back meanwhile) */
            if (!c->rate_paused) {
                c->rate_paused = true;
                c->l->stats.publish_throttled++;
                uv_read_stop((uv_stream_t *)&c->tcp);
            }
            break;
        }
        rc = dispatch(c, f.type, data + off, f.total);
        if (rc < 0 && c->state != MQR_LCONN_CLOSING) bad_packet(c, rc, f.type);
        off += f.total;
    }
    return off;
}

void mqr__listener_conn_read_end(mqr_lconn_t *c, ssize_t nread)
{
    c->eof = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (c->state == MQR_LCONN_CLOSING) {
        hard_close(c); /* the client saw our last packet and left */
        return;
    }
    if (c->state == MQR_LCONN_ACTIVE) c->will_publish = true;
    mqr__listener_conn_close(c, MQR_LCLOSE_HARD, 0,
                             nread == UV_EOF ? "connection closed by the client"
                                             : uv_strerror((int)nread));
}

/* nread bytes were put where in_room() said: handle every complete packet,
 * keep the rest. */
static inline void in_done(mqr_lconn_t *c, size_t nread)
{
    mqr_listener_t *l = c->l;
    uint8_t *data = c->read_own ? c->pend : l->rbuf;
    size_t len = c->pend_len + nread;
    size_t used = process(c, data, len);
    if (c->state == MQR_LCONN_CLOSING) {
        c->pend_len = 0;
        return;
    }
    size_t left = len - used;
    if (c->read_own) {
        if (used && left) memmove(c->pend, c->pend + used, left);
    } else if (left) {
        if (pend_reserve(c, left < 4096 ? 4096 : left) < 0) {
            mqr__listener_conn_close(c, MQR_LCLOSE_HARD, 0, "out of memory");
            return;
        }
        memcpy(c->pend, data + used, left);
    }
    c->pend_len = left;
    if (!left && c->pend_cap > 64u * 1024u) {
        free(c->pend); /* a big packet went through; do not keep its room */
        c->pend = NULL;
        c->pend_cap = 0;
    }
    if (c->out_bytes > l->opts.max_out_bytes / 2 && !c->read_paused) {
        /* the client does not read what we answer: stop taking more from it */
        c->read_paused = true;
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
    if (c->hold) mqr__listener_conn_input_pause(c); /* a CONNECT is being authenticated */
}

/* Handles the complete packets in pend (kept while input was held);
 * false when the connection closed meanwhile. */
static bool process_pending(mqr_lconn_t *c)
{
    if (!c->pend_len) return true;
    size_t used = process(c, c->pend, c->pend_len);
    if (c->state == MQR_LCONN_CLOSING) {
        c->pend_len = 0;
        return false;
    }
    if (used && used < c->pend_len) memmove(c->pend, c->pend + used, c->pend_len - used);
    c->pend_len -= used;
    return true;
}

void mqr__listener_conn_unhold(mqr_lconn_t *c)
{
    if (!c->hold) return;
    c->hold = false;
    if (c->state == MQR_LCONN_CLOSING || c->uv_closing) return;
    if (process_pending(c) && !c->hold) mqr__listener_conn_input_resume(c);
}

void mqr__listener_process_resumed(mqr_listener_t *l)
{
    while (l->nresumed) {
        /* detached: what is handled here may let other clients go */
        mqr_lconn_t **v = l->resumed;
        uint32_t n = l->nresumed;
        l->resumed = NULL;
        l->nresumed = l->resumed_cap = 0;
        for (uint32_t i = 0; i < n; i++) {
            mqr_lconn_t *c = v[i];
            c->resume_queued = false;
            /* at most a partial packet is left after: read behind it */
            if (!input_stopped(c) && process_pending(c) && !input_stopped(c)) read_start(c);
            mqr__listener_conn_unref(c);
        }
        if (!l->resumed) {
            l->resumed = v;
            l->resumed_cap = n; /* at least n: the memory again */
        } else {
            free(v);
        }
    }
}

void mqr__listener_in_done(mqr_lconn_t *c, size_t n)
{
    in_done(c, n);
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
    in_done(c, (size_t)nread);
}

int mqr__listener_conn_start(mqr_lconn_t *c)
{
    mqr_listener_t *l = c->l;
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        /* 39 characters hold any IPv6 text inet_ntop makes (v4-mapped ones
         * are "::ffff:a.b.c.d"), so "[ip]:port" fits c->addr */
        char ip[40] = "?";
        uint16_t port = 0;
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            uv_ip6_name(a, ip, sizeof ip);
            port = ntohs(a->sin6_port);
            snprintf(c->addr, sizeof c->addr, "[%s]:%u", ip, (unsigned)port);
        } else {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            uv_ip4_name(a, ip, sizeof ip);
            port = ntohs(a->sin_port);
            snprintf(c->addr, sizeof c->addr, "%s:%u", ip, (unsigned)port);
        }
    } else {
        snprintf(c->addr, sizeof c->addr, "?");
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->sub.deliver = mqr__listener_deliver;
    c->sub.deliver_set = mqr__listener_deliver_set;
    c->last_rx_ms = uv_now(l->all->loop);
    uint32_t wait = l->opts.connect_timeout_ms;
    if (c->over_limit && wait > MQR_LSN_OVER_WAIT_MS) wait = MQR_LSN_OVER_WAIT_MS;
    c->deadline_ms = c->last_rx_ms + wait;
    c->pub_ms = (uint32_t)c->last_rx_ms;
    c->pub_tokens = l->opts.publish_burst * MQR_LSN_TOKEN;
    MQR_LOG_D(MQR_LSN_LOG, "connection from %s", c->addr);
    if (l->ssl_ctx || l->ws) return mqr__ltp_start(c);
    return uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}
