/*
 * mqttc.c — the client's life: options copied and CONNECT encoded once,
 * TCP connect and the connect timeout, reading and framing (any packet may
 * arrive split across reads), one function per packet from the server,
 * keep-alive, disconnecting and closing. The caller's publish, subscribe
 * and unsubscribe are in mqttc_send.c.
 *
 * It never frees the client from inside a callback's caller: memory goes
 * when the last handle's close callback runs, so callbacks may free. It
 * does not write to the socket (mqttc_out.c) or track packet ids
 * (mqttc_inflight.c).
 */
#include "mqttc_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IN_READ_MIN 65536          /* free room offered to each read */
#define IN_KEEP_MAX (1024u * 1024) /* an empty input buffer bigger than this is freed */
#define CONNECT_TIMEOUT_MS 30000
#define DISCONNECT_LINGER_MS 5000 /* DISCONNECT written and FIN sent, or we close anyway */

static void on_tick(uv_timer_t *t);

/* ---- callbacks, guarded ------------------------------------------------- */

void mqr__mqttc_done(mqr_mqttc_t *c, uint64_t token, int status, int reason)
{
    if (!c->freed && c->cb.done) c->cb.done(c->ud, token, status, reason);
}

static void on_handle_closed(uv_handle_t *h)
{
    mqr_mqttc_t *c = h->data;
    if (--c->nopen > 0) return;
    mqr__mqttc_out_free(c);
    free(c->in.p);
    free(c->ops);
    free(c->free_ids);
    free(c->in_state);
    free(c->connect_pkt);
    free(c->auth_method);
    mqr__mqtt_alias_out_clear(&c->out_alias);
    mqr__mqttc_tls_free(c);
    mqr__mqttc_ws_free(c);
    free(c->spend.p);
    free(c);
}

static void close_tcp(mqr_mqttc_t *c)
{
    if (c->tcp_closing) return;
    c->tcp_closing = true;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

/* The end of the connection, whatever ended it: fail what is pending,
 * then closed() once. */
static void conn_end(mqr_mqttc_t *c, int err, int reason, const char *why)
{
    if (c->st == MQTTC_CLOSED) return;
    c->st = MQTTC_CLOSED;
    uv_timer_stop(&c->timer);
    if (c->idle_on) uv_idle_stop(&c->idle);
    c->idle_on = false;
    close_tcp(c); /* a write in flight is cancelled: its tokens fail here */
    int fail = err ? err : MQR_ECLOSED;
    mqr__mqttc_out_fail(c, fail);
    mqr__mqttc_ops_fail(c, fail);
    if (!c->freed && c->cb.closed) c->cb.closed(c->ud, err, reason, why);
}

/* An error of ours or the server's: in 5.0 tell the server why (5.0
 * §4.13) with a best-effort DISCONNECT straight to the socket, then end. */
void mqr__mqttc_fail(mqr_mqttc_t *c, int err, int reason, const char *why)
{
    if (c->st == MQTTC_CLOSED) return;
    if (c->version == MQR_MQTT_V5 && c->st == MQTTC_UP &&
        err <= MQR_EMALFORMED) { /* ours, not the socket's */
        uint8_t pkt[8];
        size_t len;
        mqr_mqtt_disconnect_t d = {.reason = mqr__mqtt_reason_for_error(err, 0)};
        if (reason >= 0x80) d.reason = (uint8_t)reason;
        if (mqr__mqtt_encode_disconnect(&d, c->version, pkt, sizeof pkt, &len) == 0) {
            uv_buf_t b = uv_buf_init((char *)pkt, (unsigned)len);
            (void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        }
    }
    conn_end(c, err, reason, why);
}

/* ---- options --------------------------------------------------------------- */

static bool str_ok(const char *s)
{
    return !s || strlen(s) <= UINT16_MAX;
}

static mqr_mqtt_str_t str_of(const char *s)
{
    return (mqr_mqtt_str_t){s ? s : "", s ? (uint16_t)strlen(s) : 0};
}

/* CONNECT is encoded once, here: the options need not be kept. Session
 * Expiry, Receive Maximum and Maximum Packet Size go first in the
 * properties, the caller's raw ones after them. */
static int encode_connect(mqr_mqttc_t *c, const mqr_mqttc_options_t *o)
{
    bool v5 = o->version == MQR_MQTT_V5;
    size_t plen = 0;
    uint8_t *props = NULL;
    if (v5) {
        size_t alen = o->auth_method ? strlen(o->auth_method) : 0;
        size_t cap = 32 + o->connect_props_len + (alen ? 6 + alen + o->auth_data_len : 0);
        props = malloc(cap);
        if (!props) return MQR_ENOMEM;
        mqr_mqtt_pbuild_t b;
        mqr__mqtt_pb_init(&b, props, cap);
        if (o->session_expiry_s)
            mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_SESSION_EXPIRY, o->session_expiry_s);
        if (o->receive_max) mqr__mqtt_pb_u16(&b, MQR_MQTT_PROP_RECEIVE_MAX, o->receive_max);
        if (o->max_packet_size)
            mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_MAX_PACKET_SIZE, o->max_packet_size);
        if (alen) {
            mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_AUTH_METHOD, o->auth_method, alen);
            if (o->auth_data_len)
                mqr__mqtt_pb_binary(&b, MQR_MQTT_PROP_AUTH_DATA, o->auth_data, o->auth_data_len);
        }
        int rc = mqr__mqtt_pb_finish(&b, &plen);
        if (rc) {
            free(props);
            return rc;
        }
        if (o->connect_props_len) memcpy(props + plen, o->connect_props, o->connect_props_len);
        plen += o->connect_props_len;
    }
    mqr_mqtt_connect_t k = {
        .version = (uint8_t)o->version,
        .clean_start = o->clean_start,
        .keep_alive = o->keepalive_s,
        .props = {props, (uint32_t)plen},
        .client_id = str_of(o->client_id),
        .has_username = o->username != NULL,
        .username = str_of(o->username),
        .has_password = o->password != NULL,
        .password = {(const uint8_t *)o->password, (uint32_t)o->password_len},
    };
    if (o->will_topic) {
        k.has_will = true;
        k.will_qos = o->will_qos;
        k.will_retain = o->will_retain;
        k.will_topic = str_of(o->will_topic);
        k.will_payload = (mqr_mqtt_bin_t){o->will_payload, (uint32_t)o->will_payload_len};
        k.will_props = (mqr_mqtt_bin_t){o->will_props, (uint32_t)o->will_props_len};
    }
    int rc = mqr__mqtt_encode_connect(&k, NULL, 0, &c->connect_len);
    if (rc == 0 && !(c->connect_pkt = malloc(c->connect_len))) rc = MQR_ENOMEM;
    if (rc == 0) rc = mqr__mqtt_encode_connect(&k, c->connect_pkt, c->connect_len, &c->connect_len);
    free(props);
    return rc;
}

static int options_check(const mqr_mqttc_options_t *o)
{
    if (o->version != MQR_MQTT_V311 && o->version != MQR_MQTT_V5) return MQR_EINVAL;
    if (!str_ok(o->client_id) || !str_ok(o->username) || !str_ok(o->will_topic)) return MQR_EINVAL;
    if (o->password_len > UINT16_MAX || o->will_payload_len > UINT16_MAX) return MQR_EINVAL;
    if (o->will_topic &&
        (o->will_qos > 2 || mqr__mqtt_topic_name_check(o->will_topic, strlen(o->will_topic))))
        return MQR_EINVAL;
    if (o->version == MQR_MQTT_V5 &&
        (mqr__mqtt_props_validate(o->connect_props, o->connect_props_len, MQR_MQTT_CONNECT,
                                  MQR_MQTT_FROM_CLIENT) ||
         mqr__mqtt_props_validate(o->will_props, o->will_props_len, MQR_MQTT_CTX_WILL,
                                  MQR_MQTT_FROM_CLIENT)))
        return MQR_EINVAL;
    /* enhanced authentication is 5.0's, and needs someone to answer */
    if (o->auth_method && (o->version != MQR_MQTT_V5 || !*o->auth_method ||
                           !str_ok(o->auth_method) || o->auth_data_len > UINT16_MAX))
        return MQR_EINVAL;
    return 0;
}

int mqr__mqttc_new(uv_loop_t *loop, const mqr_mqttc_options_t *o, const mqr_mqttc_cbs_t *cb,
                   void *ud, mqr_mqttc_t **out)
{
    if (!loop || !o || !cb || !out) return MQR_EINVAL;
    int rc = options_check(o);
    if (rc) return rc;
    mqr_mqttc_t *c = calloc(1, sizeof *c);
    if (!c) return MQR_ENOMEM;
    c->loop = loop;
    c->cb = *cb;
    c->ud = ud;
    c->version = o->version;
    c->keepalive_s = o->keepalive_s;
    c->receive_max = o->receive_max;
    c->max_inflight = o->max_inflight;
    c->max_packet_size = o->max_packet_size;
    c->connect_timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms : CONNECT_TIMEOUT_MS;
    c->keep_inflight = o->keep_inflight;
    if (o->auth_method && (!cb->auth || !(c->auth_method = strdup(o->auth_method))))
        rc = cb->auth ? MQR_ENOMEM : MQR_EINVAL;
    if (rc == 0 && o->tls.on) rc = mqr__mqttc_tls_new(c, o);
    if (rc == 0 && o->ws.on) rc = mqr__mqttc_ws_new(c, o);
    if (rc || (rc = encode_connect(c, o)) != 0 || (rc = uv_tcp_init(loop, &c->tcp)) != 0) {
        free(c->connect_pkt);
        free(c->auth_method);
        mqr__mqttc_tls_free(c);
        mqr__mqttc_ws_free(c);
        free(c);
        return rc;
    }
    /* uv_timer_init and uv_idle_init cannot fail on unix */
    uv_timer_init(loop, &c->timer);
    uv_idle_init(loop, &c->idle);
    c->tcp.data = c->timer.data = c->idle.data = c;
    c->nopen = 3;
    *out = c;
    return 0;
}

/* ---- reading ------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    mqr_mqttc_t *c = h->data;
    if (c->tls || c->ws) { /* bytes for a layer, not MQTT's yet */
        *buf = c->tls ? mqr__mqttc_tls_rbuf(c) : mqr__mqttc_ws_rbuf(c);
        return;
    }
    mqttc_buf_t *in = &c->in;
    if (in->cap - in->len < IN_READ_MIN) {
        size_t cap = in->cap ? in->cap : IN_READ_MIN;
        while (cap - in->len < IN_READ_MIN)
            cap *= 2;
        uint8_t *p = realloc(in->p, cap);
        if (!p) {
            *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
            return;
        }
        in->p = p;
        in->cap = cap;
    }
    *buf = uv_buf_init((char *)in->p + in->len, (unsigned)(in->cap - in->len));
}

/* A v5 server that sends us elsewhere (Use another server 0x9C, Server
 * moved 0x9D, 5.0 §4.11) names where in its Server Reference: said in the
 * words of the close, which the session logs. Following it is left to
 * the operator (the session's broker list). */
static void add_server_reference(char *why, size_t cap, int used, const mqr_mqtt_str_t *ref)
{
    if (!ref->p || used < 0 || (size_t)used >= cap) return;
    snprintf(why + used, cap - (size_t)used, " (server reference: %.*s)", (int)ref->len, ref->p);
}

static void on_connack(mqr_mqttc_t *c, const uint8_t *pkt, size_t len)
{
    mqr_mqtt_connack_t a;
    int rc = mqr__mqtt_decode_connack(pkt, len, c->version, &a);
    if (rc) {
        mqr__mqttc_fail(c, rc, 0, "bad CONNACK");
        return;
    }
    if (a.reason != 0) {
        char why[400];
        int n = snprintf(why, sizeof why, "CONNACK refused: 0x%02x %.*s", a.reason,
                         a.reason_string.p ? (int)a.reason_string.len : 0,
                         a.reason_string.p ? a.reason_string.p : "");
        add_server_reference(why, sizeof why, n, &a.server_reference);
        conn_end(c, MQR_EUPSTREAM, a.reason, why);
        return;
    }
    uint16_t w = a.receive_max; /* 65535 in 3.1.1 and when absent */
    if (c->max_inflight && c->max_inflight < w) w = c->max_inflight;
    c->window = w;
    c->srv_max_packet = a.max_packet_size;
    c->srv_max_qos = a.max_qos;
    c->srv_retain = a.retain_available;
    mqr__mqtt_alias_out_init(&c->out_alias, c->version == MQR_MQTT_V5 ? a.topic_alias_max : 0);
    if (a.has_server_keep_alive) c->keepalive_s = a.server_keep_alive; /* 5.0 §3.2.2.3.14 */
    c->st = MQTTC_UP;
    if (c->auth_method && !mqr__mqttc_auth_connack(c, &a)) return;
    if (c->resumed) { /* before anything new: connected() may publish */
        c->resumed = false;
        rc = mqr__mqttc_resend(c, a.session_present);
        if (rc) {
            mqr__mqttc_fail(c, rc, 0, "cannot resend the session's publishes");
            return;
        }
        if (c->st == MQTTC_CLOSED) return; /* a done() closed us */
    }
    uv_timer_stop(&c->timer);
    if (c->keepalive_s) {
        uint64_t tick = (uint64_t)c->keepalive_s * 250u;
        uv_timer_start(&c->timer, on_tick, tick, tick);
    }
    if (c->cb.connected && !c->freed) c->cb.connected(c->ud, &a);
}

static void on_publish(mqr_mqttc_t *c, const uint8_t *pkt, size_t len)
{
    mqr_mqtt_publish_t p;
    int rc = mqr__mqtt_decode_publish(pkt, len, c->version, MQR_MQTT_FROM_SERVER, &p);
    if (rc == 0 && p.topic_alias) rc = MQR_EPROTOCOL; /* our Topic Alias Maximum is 0 */
    if (rc) {
        mqr__mqttc_fail(c, rc, 0, "bad PUBLISH");
        return;
    }
    uint32_t ack_id;
    bool deliver;
    rc = mqr__mqttc_in_publish(c, &p, &ack_id, &deliver);
    if (rc) {
        mqr__mqttc_fail(c, rc, rc == MQR_EPROTOCOL ? MQR_MQTT_RC_RECEIVE_MAX_EXCEEDED : 0,
                        "too many unacknowledged messages from the server");
        return;
    }
    if (deliver && c->cb.message && !c->freed) c->cb.message(c->ud, &p, ack_id);
}

static void on_ack(mqr_mqttc_t *c, const uint8_t *pkt, size_t len)
{
    mqr_mqtt_ack_t a;
    int rc = mqr__mqtt_decode_ack(pkt, len, c->version, &a);
    if (rc == 0)
        rc = a.type == MQR_MQTT_PUBREL ? mqr__mqttc_in_pubrel(c, a.packet_id)
                                       : mqr__mqttc_out_ackpkt(c, &a);
    if (rc) mqr__mqttc_fail(c, rc, 0, "bad acknowledgement");
}

/* SUBACK and UNSUBACK: status from the codes (see done() in mqttc.h). */
static void on_subunsuback(mqr_mqttc_t *c, int type, const uint8_t *pkt, size_t len)
{
    uint16_t id;
    const uint8_t *codes;
    uint32_t n;
    int rc;
    if (type == MQR_MQTT_SUBACK) {
        mqr_mqtt_suback_t s;
        rc = mqr__mqtt_decode_suback(pkt, len, c->version, &s);
        id = s.packet_id, codes = s.codes, n = s.count;
    } else {
        mqr_mqtt_unsuback_t u;
        rc = mqr__mqtt_decode_unsuback(pkt, len, c->version, &u);
        id = u.packet_id, codes = u.codes, n = u.count;
    }
    mqttc_op_t *op = rc ? NULL : mqr__mqttc_id_find(c, id);
    int want = type == MQR_MQTT_SUBACK ? MQR_MQTT_SUBSCRIBE : MQR_MQTT_UNSUBSCRIBE;
    bool counted = type == MQR_MQTT_SUBACK || c->version == MQR_MQTT_V5; /* 3.1.1 UNSUBACK: none */
    if (!op || op->kind != want || (counted && n != op->len)) {
        mqr__mqttc_fail(c, rc ? rc : MQR_EPROTOCOL, 0, "bad SUBACK/UNSUBACK");
        return;
    }
    int status = 0, reason = type == MQR_MQTT_SUBACK ? 2 : 0;
    for (uint32_t i = 0; i < n && status == 0; i++) {
        if (codes[i] >= 0x80)
            status = MQR_EUPSTREAM, reason = codes[i];
        else if (type == MQR_MQTT_SUBACK && codes[i] < reason)
            reason = codes[i];
    }
    uint64_t token = op->token;
    mqr__mqttc_id_release(c, op);
    mqr__mqttc_done(c, token, status, reason);
}

static void on_disconnect(mqr_mqttc_t *c, const uint8_t *pkt, size_t len)
{
    mqr_mqtt_disconnect_t d;
    int rc = mqr__mqtt_decode_disconnect(pkt, len, c->version, MQR_MQTT_FROM_SERVER, &d);
    if (rc) {
        conn_end(c, rc, 0, "bad DISCONNECT");
        return;
    }
    char why[400];
    int n = snprintf(why, sizeof why, "DISCONNECT from the server: 0x%02x %.*s", d.reason,
                     d.reason_string.p ? (int)d.reason_string.len : 0,
                     d.reason_string.p ? d.reason_string.p : "");
    add_server_reference(why, sizeof why, n, &d.server_reference);
    conn_end(c, MQR_EUPSTREAM, d.reason, why);
}

static void dispatch(mqr_mqttc_t *c, int type, const uint8_t *pkt, size_t len)
{
    if (c->st == MQTTC_CLOSING) return; /* we are leaving: answers no longer matter */
    if (type == MQR_MQTT_AUTH && c->auth_method && (c->st == MQTTC_CONNACK || c->reauth_on)) {
        mqr__mqttc_on_auth(c, pkt, len);
        return;
    }
    if (c->st == MQTTC_CONNACK) {
        if (type == MQR_MQTT_CONNACK)
            on_connack(c, pkt, len);
        else
            mqr__mqttc_fail(c, MQR_EPROTOCOL, 0, "packet before CONNACK");
        return;
    }
    switch (type) {
    case MQR_MQTT_PUBLISH:
        on_publish(c, pkt, len);
        break;
    case MQR_MQTT_PUBACK:
    case MQR_MQTT_PUBREC:
    case MQR_MQTT_PUBREL:
    case MQR_MQTT_PUBCOMP:
        on_ack(c, pkt, len);
        break;
    case MQR_MQTT_SUBACK:
    case MQR_MQTT_UNSUBACK:
        on_subunsuback(c, type, pkt, len);
        break;
    case MQR_MQTT_PINGRESP:
        if (mqr__mqtt_decode_ping(pkt, len, c->version))
            mqr__mqttc_fail(c, MQR_EMALFORMED, 0, "bad PINGRESP");
        c->ping_out = false;
        break;
    case MQR_MQTT_DISCONNECT:
        if (c->version == MQR_MQTT_V5)
            on_disconnect(c, pkt, len);
        else
            mqr__mqttc_fail(c, MQR_EPROTOCOL, 0, "DISCONNECT from a 3.1.1 server");
        break;
    case MQR_MQTT_AUTH: /* not asked for: no method, or no re-authentication under way */
    default:
        mqr__mqttc_fail(c, MQR_EPROTOCOL, 0, "unexpected packet from the server");
        break;
    }
}

/* Every complete packet in the input buffer, then the incomplete tail moves
 * to the start. This is where a TLS or WebSocket transport (later) hands
 * its plain bytes in. */
static void in_bytes(mqr_mqttc_t *c)
{
    if (c->in.len == 0) return; /* a layer's read (TLS, WebSocket) brought no MQTT bytes */
    size_t off = 0;
    while (c->st != MQTTC_CLOSED) {
        mqr_mqtt_frame_t f;
        int rc =
            mqr__mqtt_frame(c->in.p + off, c->in.len - off, c->max_packet_size, c->version, &f);
        if (rc == MQR_EINCOMPLETE) break;
        if (rc) {
            mqr__mqttc_fail(c, rc, rc == MQR_ETOOLARGE ? MQR_MQTT_RC_PACKET_TOO_LARGE : 0,
                            "bad packet framing");
            return;
        }
        dispatch(c, f.type, c->in.p + off, f.total);
        off += f.total;
    }
    if (c->st == MQTTC_CLOSED) return;
    memmove(c->in.p, c->in.p + off, c->in.len - off);
    c->in.len -= off;
    if (c->in.len == 0 && c->in.cap > IN_KEEP_MAX) { /* a big packet went by */
        free(c->in.p);
        c->in = (mqttc_buf_t){0};
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    mqr_mqttc_t *c = s->data;
    if (nread < 0) {
        if (c->st == MQTTC_CLOSING)
            conn_end(c, 0, 0, "disconnected");
        else
            mqr__mqttc_fail(c, (int)nread, 0,
                            nread == UV_EOF ? "server closed the connection" : "read failed");
        return;
    }
    c->last_recv = uv_now(c->loop);
    if (c->tls) {
        bool handshaken;
        if (mqr__mqttc_tls_input(c, (const uint8_t *)buf->base, (size_t)nread, &handshaken) < 0)
            return; /* closed */
        if (handshaken) mqr__mqttc_stream_up(c);
        if (c->st == MQTTC_CLOSED) return;
    } else if (c->ws) {
        if (mqr__mqttc_stream_in(c, (const uint8_t *)buf->base, (size_t)nread) < 0) return;
    } else {
        c->in.len += (size_t)nread;
    }
    in_bytes(c);
}

/* ---- connecting, keep-alive, closing ------------------------------------ */

static void on_connect_timeout(uv_timer_t *t)
{
    mqr__mqttc_fail(t->data, UV_ETIMEDOUT, 0, "connect timed out");
}

/* Every keepalive/4: a PINGREQ once nothing was sent for about keepalive
 * (3.1.1 §3.1.2.10: at most keepalive between two packets; we send from
 * 3/4 of it on, so a tick's delay cannot make us late); the connection is
 * dead when, after a PINGREQ, neither PINGRESP nor any other byte came for
 * keepalive/2 (at least 500 ms). */
static void on_tick(uv_timer_t *t)
{
    mqr_mqttc_t *c = t->data;
    uint64_t now = uv_now(c->loop), ka = (uint64_t)c->keepalive_s * 1000u;
    uint64_t wait = ka / 2 > 500 ? ka / 2 : 500;
    if (c->ping_out) {
        /* a server busy sending us messages has PINGRESP queued behind them */
        uint64_t since = c->last_recv > c->ping_at ? c->last_recv : c->ping_at;
        if (now - since >= wait) mqr__mqttc_fail(c, UV_ETIMEDOUT, 0, "no PINGRESP");
        return;
    }
    if (c->st != MQTTC_UP || now - c->last_sent < ka - ka / 4) return;
    uint8_t *w = mqr__mqttc_out_reserve(c, 2);
    size_t len;
    if (!w || mqr__mqtt_encode_ping(MQR_MQTT_PINGREQ, w, 2, &len)) return;
    mqr__mqttc_out_commit(c, len);
    c->ping_out = true;
    c->ping_at = now;
}

static void on_connect(uv_connect_t *req, int status)
{
    mqr_mqttc_t *c = req->data;
    if (c->st != MQTTC_TCP) return; /* closed meanwhile (status UV_ECANCELED) */
    if (status < 0) {
        conn_end(c, status, 0, "TCP connect failed");
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc) {
        conn_end(c, rc, 0, "cannot read the socket");
        return;
    }
    if (c->tls)
        mqr__mqttc_tls_start(c); /* the stream is up once the handshake is done */
    else
        mqr__mqttc_stream_up(c);
}

void mqr__mqttc_stream_up(mqr_mqttc_t *c)
{
    if (!c->ws) {
        mqr__mqttc_send_connect(c);
        return;
    }
    int rc = mqr__mqttc_ws_start(c); /* CONNECT once the upgrade is answered */
    if (rc) conn_end(c, rc, 0, "cannot start the WebSocket upgrade");
}

int mqr__mqttc_stream_in(mqr_mqttc_t *c, const uint8_t *p, size_t n)
{
    if (c->ws) return mqr__mqttc_ws_input(c, p, n);
    if (mqr__mqttc_buf_add(&c->in, p, n) < 0) {
        mqr__mqttc_fail(c, MQR_ENOMEM, 0, "no memory for input");
        return MQR_ENOMEM;
    }
    return 0;
}

void mqr__mqttc_send_connect(mqr_mqttc_t *c)
{
    uint8_t *w = mqr__mqttc_out_reserve(c, c->connect_len);
    if (!w) {
        conn_end(c, MQR_ENOMEM, 0, "cannot start the session");
        return;
    }
    memcpy(w, c->connect_pkt, c->connect_len);
    c->st = MQTTC_CONNACK;
    mqr__mqttc_out_commit(c, c->connect_len);
}

int mqr__mqttc_connect(mqr_mqttc_t *c, const struct sockaddr *addr)
{
    if (!c || !addr || c->st != MQTTC_NEW) return MQR_EINVAL;
    c->creq.data = c;
    int rc = uv_tcp_connect(&c->creq, &c->tcp, addr, on_connect);
    if (rc) return rc;
    c->st = MQTTC_TCP;
    uv_timer_start(&c->timer, on_connect_timeout, c->connect_timeout_ms, 0);
    return 0;
}

static void on_linger_timeout(uv_timer_t *t)
{
    conn_end(t->data, 0, 0, "disconnected (DISCONNECT not written in time)");
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    mqr_mqttc_t *c = req->data;
    if (c->st == MQTTC_CLOSING) conn_end(c, 0, 0, "disconnected");
}

void mqr__mqttc_shutdown(mqr_mqttc_t *c)
{
    c->sreq.data = c;
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown))
        conn_end(c, 0, 0, "disconnected");
}

void mqr__mqttc_disconnect(mqr_mqttc_t *c, int reason)
{
    if (!c || c->st == MQTTC_CLOSING || c->st == MQTTC_CLOSED) return;
    if (c->st != MQTTC_UP && c->st != MQTTC_CONNACK) {
        conn_end(c, 0, 0, "disconnected");
        return;
    }
    mqr_mqtt_disconnect_t d = {.reason = (uint8_t)reason};
    uint8_t *w = mqr__mqttc_out_reserve(c, 8);
    size_t len;
    if (!w || mqr__mqtt_encode_disconnect(&d, c->version, w, 8, &len)) {
        conn_end(c, 0, 0, "disconnected");
        return;
    }
    mqr__mqttc_out_commit(c, len);
    c->st = MQTTC_CLOSING;
    c->shutdown_after = true;
    /* a server that stops reading must not keep us half-closed forever */
    uv_timer_start(&c->timer, on_linger_timeout, DISCONNECT_LINGER_MS, 0);
}

void mqr__mqttc_free(mqr_mqttc_t *c)
{
    if (!c || c->freed) return;
    c->freed = true;
    conn_end(c, MQR_ECLOSED, 0, "freed"); /* no callbacks: freed */
    mqr__mqttc_ops_drop(c);               /* what keep_inflight held */
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->idle, on_handle_closed);
}
