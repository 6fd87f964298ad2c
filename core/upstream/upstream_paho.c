/*
 * upstream_paho.c — all of the Paho transport that runs on Paho's threads:
 * the callbacks, which turn what Paho reports into the session's events
 * (upstream_transport.h), and the process-wide lock around creating and
 * destroying Paho clients. This is where Paho's threads and the loop meet;
 * the loop's half of the transport is upstream_paho_ops.c.
 *
 * Paho runs every callback of every client on its own threads while holding
 * its one global mutex. The callbacks here therefore only copy the event into
 * the session's queue (under the session's own small mutex) and wake the loop
 * with uv_async_send(); they never touch the engine, never log (a host's log
 * sink may not be thread-safe) and never call Paho. The loop thread drains
 * the queue: it builds messages and routes them, tracks the state, logs,
 * calls the observer and re-subscribes after every (re)connect.
 *
 * Lock order: paho_life (below), then Paho's global mutex, then a
 * session's queue mutex. So the loop thread (or a worker) must never call
 * Paho while holding a session's queue mutex — a callback waiting for that
 * mutex holds Paho's global one, and Paho functions take it too — and no
 * callback takes paho_life, which is held only around Paho's create and
 * destroy.
 *
 * Threads: the callbacks (static on_*) run on Paho's threads only; the
 * loop hands them to Paho through the mqr__up_paho_* option helpers below,
 * so no other file names a function that runs there. They queue through
 * mqr__up_ev_push (upstream_inbound.c, any thread). mqr__up_paho_create
 * runs on the loop, mqr__up_paho_destroy on the loop or a worker.
 *
 * Delivery: Paho acknowledges an incoming QoS 1/2 message to the broker as
 * soon as the messageArrived callback returns 1, before the loop has routed
 * it. A persistent session's callback therefore writes the message to the
 * inbox (upstream_persist.h) first, and the loop deletes it once routed;
 * without persistence a crash in that window loses the message.
 *
 * Must not: touch a session field that struct mqr_upstream does not mark as
 * under lock (name, version, persistent, tp_state and all->persist are set
 * before the client exists and read only), log, or call into the engine.
 */
#include "upstream_paho_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Paho's side: copy, queue, wake ------------------------------------- */

/* Events that carry no data. If memory is short the event is lost; the loop
 * then misses one state change, which the next one corrects. */
static void push_simple(mqr_upstream_t *u, up_ev_type_t type, int code, int reason,
                        MQTTAsync_token token, const char *text)
{
    up_event_t *ev = mqr__up_ev_new(type, 0, text);
    if (!ev) return;
    ev->code = code;
    ev->reason = reason;
    ev->token = token;
    mqr__up_ev_push(u, ev);
}

/* Paho's thread: writes an incoming QoS 1/2 message to the inbox under seq
 * before Paho acknowledges it (see upstream_persist.h); ev->inbox_seq says
 * it was written. */
static void inbox_keep(mqr_upstream_t *u, up_event_t *ev, uint64_t seq)
{
    mqr_upstream_inbox_rec_t r = {
        .seq = seq,
        .qos = ev->qos,
        .retain = ev->retain,
        .expiry_s = ev->expiry_s,
        .arrived_ms = ev->arrived_ms,
        .topic_len = ev->topic_len,
        .payload_len = ev->payload_len,
        .props_len = ev->props_len,
        .data = ev->data,
        .data_len = ev->topic_len + 1 + ev->payload_len + ev->props_len,
    };
    if (mqr__upstream_inbox_put(u->all->persist, u->name, &r) == 0) {
        ev->inbox_seq = seq;
    } else {
        uv_mutex_lock(&u->lock);
        u->inbox_fail++;
        uv_mutex_unlock(&u->lock);
    }
}

/* Every message Paho hands us is acknowledged to the broker when this
 * returns 1 (QoS 1/2), whatever became of it. So each way it can go is
 * counted: queued with a stored copy (persistent), queued without one
 * (unprotected: a crash before routing loses it), kept in the inbox only
 * (spilled: read back by the loop, nothing lost), or dropped (the queue
 * was full, or no memory). */
static int on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *m)
{
    mqr_upstream_t *u = ctx;
    size_t tlen = topic_len > 0 ? (size_t)topic_len : strlen(topic);
    size_t plen = m->payloadlen > 0 ? (size_t)m->payloadlen : 0;
    size_t xlen = u->version == MQTTVERSION_5 ? mqr__up_props_encoded_len(&m->properties) : 0;
    bool keep = u->persistent && m->qos > 0;

    uv_mutex_lock(&u->lock);
    /* A lone message larger than the byte limit still passes. */
    bool full =
        u->pending_msgs > 0 && (u->pending_msgs >= u->max_pending_msgs ||
                                u->pending_bytes + tlen + plen + xlen > u->max_pending_bytes);
    uint64_t seq = keep ? ++u->inbox_seq : 0;
    bool spill = keep && (full || u->spilling);
    if (spill && !u->spilling) {
        u->spilling = true;
        u->spill_next = seq;
    }
    uv_mutex_unlock(&u->lock);
    up_event_t *ev =
        full && !spill ? NULL : mqr__up_ev_new(EV_MESSAGE, tlen + 1 + plen + xlen, NULL);
    if (ev) {
        ev->arrived_ms = mqr__now_ms();
        ev->qos = (uint8_t)m->qos;
        ev->retain = m->retained != 0;
        ev->topic_len = tlen;
        ev->payload_len = plen;
        ev->props_len = xlen;
        memcpy(ev->data, topic, tlen);
        ev->data[tlen] = '\0';
        if (plen) memcpy(ev->data + tlen + 1, m->payload, plen);
        if (u->version == MQTTVERSION_5)
            ev->expiry_s =
                mqr__up_props_encode(&m->properties, (uint8_t *)ev->data + tlen + 1 + plen);
        if (keep) inbox_keep(u, ev, seq);
    }
    MQTTAsync_freeMessage(&m);
    MQTTAsync_free(topic);
    if (ev && !spill) {
        mqr__up_ev_push(u, ev); /* counts it as unprotected without an inbox row */
        return 1;
    }
    uv_mutex_lock(&u->lock);
    if (ev && ev->inbox_seq)
        u->spilled++;
    else
        u->dropped++;
    if (spill) u->spill_settled = seq;
    uv_mutex_unlock(&u->lock);
    free(ev);
    /* the loop reads a spilled message back, or warns about the drop */
    uv_async_send(&u->async);
    return 1;
}

static void on_connected(void *ctx, char *cause)
{
    push_simple(ctx, EV_CONNECTED, 0, 0, 0, NULL);
}

static void on_lost(void *ctx, char *cause)
{
    push_simple(ctx, EV_LOST, 0, 0, 0, cause);
}

static void on_server_disconnect(void *ctx, MQTTProperties *props, enum MQTTReasonCodes rc)
{
    char text[128];
    const char *t = NULL;
    MQTTProperty *rs =
        props ? MQTTProperties_getProperty(props, MQTTPROPERTY_CODE_REASON_STRING) : NULL;
    if (rs && rs->value.data.data) {
        snprintf(text, sizeof text, "%.*s", rs->value.data.len < 100 ? rs->value.data.len : 100,
                 rs->value.data.data);
        t = text;
    }
    push_simple(ctx, EV_SERVER_DISCONNECT, 0, (int)rc, 0, t);
}

/* Paho's OpenSSL error report (ERR_print_errors_cb), one line per call,
 * when making the TLS context or the handshake fails. The loop extracts
 * the reason; returning 1 asks for the next line. */
static int on_ssl_error(const char *str, size_t len, void *ctx)
{
    char line[256];
    snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line ? len : sizeof line - 1), str);
    push_simple(ctx, EV_TLS_ERROR, 0, 0, 0, line);
    return 1;
}

static void on_delivered(void *ctx, MQTTAsync_token token)
{
    mqr_upstream_t *u = ctx;
    uv_mutex_lock(&u->lock);
    u->delivered++;
    uv_mutex_unlock(&u->lock);
}

/* What Paho says when the TCP or TLS connection failed without OpenSSL
 * saying why: a broker that is down or hangs up looks the same as a host
 * name check or, over TLS 1.3, a refused client certificate. */
static void push_connect_failure(void *ctx, int code, int reason, const char *message)
{
    up_event_t *ev = mqr__up_ev_new(EV_CONNECT_FAILED, 0, message);
    if (!ev) return;
    ev->code = code;
    ev->reason = reason;
    ev->net_failure = message && (strcmp(message, "TCP/TLS connect failure") == 0 ||
                                  strcmp(message, "TCP connect completion failure") == 0);
    mqr__up_ev_push(ctx, ev);
}

static void on_connect_failure(void *ctx, MQTTAsync_failureData *d)
{
    push_connect_failure(ctx, d ? d->code : 0, 0, d ? d->message : NULL);
}

static void on_connect_failure5(void *ctx, MQTTAsync_failureData5 *d)
{
    push_connect_failure(ctx, d ? d->code : 0, d ? (int)d->reasonCode : 0, d ? d->message : NULL);
}

static void on_connect_ok(void *ctx, MQTTAsync_successData *d)
{
    push_simple(ctx, EV_CONNECT_OK, 0, 0, 0, d ? d->alt.connect.serverURI : NULL);
}

static void on_connect_ok5(void *ctx, MQTTAsync_successData5 *d)
{
    push_simple(ctx, EV_CONNECT_OK, 0, 0, 0, d ? d->alt.connect.serverURI : NULL);
}

static void push_pub_done(up_pub_t *p, int code, int reason)
{
    up_event_t *ev = mqr__up_ev_new(EV_PUB_DONE, 0, NULL);
    if (!ev) return; /* the waiter times out; the record goes with the session */
    ev->code = code;
    ev->reason = reason;
    ev->ptr = p;
    mqr__up_ev_push(p->u, ev);
}

static void on_pub_ok(void *ctx, MQTTAsync_successData *d)
{
    push_pub_done(ctx, 0, 0);
}

static void on_pub_ok5(void *ctx, MQTTAsync_successData5 *d)
{
    push_pub_done(ctx, 0, d ? (int)d->reasonCode : 0);
}

static void on_pub_failed(void *ctx, MQTTAsync_failureData *d)
{
    push_pub_done(ctx, d && d->code ? d->code : MQTTASYNC_FAILURE, 0);
}

static void on_pub_failed5(void *ctx, MQTTAsync_failureData5 *d)
{
    push_pub_done(ctx, d && d->code ? d->code : MQTTASYNC_FAILURE, d ? (int)d->reasonCode : 0);
}

static void on_sub_ok(void *ctx, MQTTAsync_successData *d)
{
    push_simple(ctx, EV_SUB_OK, d ? d->alt.qos : 0, 0, d ? d->token : 0, NULL);
}

static void on_sub_ok5(void *ctx, MQTTAsync_successData5 *d)
{
    push_simple(ctx, EV_SUB_OK, d ? (int)d->reasonCode : 0, 0, d ? d->token : 0, NULL);
}

/* A SUBSCRIBE that a disconnect cut short is not answered (the session
 * subscribes again at the next connect); Paho's "bad subscribe" is a
 * refusal: code 0, reason 0x80 unless v5 gave one. */
static void push_sub_failed(void *ctx, int code, int reason, MQTTAsync_token token)
{
    if (code == MQTTASYNC_OPERATION_INCOMPLETE) return;
    if (code == MQTT_BAD_SUBSCRIBE) {
        code = 0;
        if (!reason) reason = 0x80;
    }
    push_simple(ctx, EV_SUB_FAILED, code, reason, token, NULL);
}

static void on_sub_failed(void *ctx, MQTTAsync_failureData *d)
{
    push_sub_failed(ctx, d ? d->code : 0, 0, d ? d->token : 0);
}

static void on_sub_failed5(void *ctx, MQTTAsync_failureData5 *d)
{
    push_sub_failed(ctx, d ? d->code : 0, d ? (int)d->reasonCode : 0, d ? d->token : 0);
}

/* The closing worker waits for these (see paho_destroy, upstream_paho_ops.c). */
static void on_disconnect_done(void *ctx)
{
    mqr_upstream_t *u = ctx;
    up_paho_t *pa = up_paho(u);
    uv_mutex_lock(&u->lock);
    pa->disconnect_done = true;
    uv_cond_signal(&pa->cond);
    uv_mutex_unlock(&u->lock);
}

static void on_disconnect_ok(void *ctx, MQTTAsync_successData *d)
{
    on_disconnect_done(ctx);
}

static void on_disconnect_failed(void *ctx, MQTTAsync_failureData *d)
{
    on_disconnect_done(ctx);
}

static void on_unsub_answered(void *ctx)
{
    mqr_upstream_t *u = ctx;
    up_paho_t *pa = up_paho(u);
    uv_mutex_lock(&u->lock);
    if (pa->unsubs_unanswered) pa->unsubs_unanswered--;
    uv_cond_signal(&pa->cond);
    uv_mutex_unlock(&u->lock);
}

static void on_unsub_ok(void *ctx, MQTTAsync_successData *d)
{
    on_unsub_answered(ctx);
}

static void on_unsub_failed(void *ctx, MQTTAsync_failureData *d)
{
    on_unsub_answered(ctx);
}

static void on_unsub_ok5(void *ctx, MQTTAsync_successData5 *d)
{
    on_unsub_answered(ctx);
}

static void on_unsub_failed5(void *ctx, MQTTAsync_failureData5 *d)
{
    on_unsub_answered(ctx);
}

/* ---- what the loop hands Paho: the callbacks above, in its options ------ */

int mqr__up_paho_set_callbacks(mqr_upstream_t *u)
{
    MQTTAsync c = up_paho(u)->client;
    int rc = MQTTAsync_setCallbacks(c, u, on_lost, on_message, on_delivered);
    if (rc == MQTTASYNC_SUCCESS) rc = MQTTAsync_setConnected(c, u, on_connected);
    if (rc == MQTTASYNC_SUCCESS && u->version == MQTTVERSION_5)
        rc = MQTTAsync_setDisconnected(c, u, on_server_disconnect);
    return rc;
}

void mqr__up_paho_connect_answers(mqr_upstream_t *u, MQTTAsync_connectOptions *o)
{
    if (u->version == MQTTVERSION_5) {
        o->onFailure5 = on_connect_failure5;
        o->onSuccess5 = on_connect_ok5;
    } else {
        o->onFailure = on_connect_failure;
        o->onSuccess = on_connect_ok;
    }
}

void mqr__up_paho_ssl_errors(mqr_upstream_t *u, MQTTAsync_SSLOptions *ssl)
{
    ssl->ssl_error_cb = on_ssl_error;
    ssl->ssl_error_context = u;
}

void mqr__up_paho_sub_answers(mqr_upstream_t *u, MQTTAsync_responseOptions *r)
{
    r->context = u;
    if (u->version == MQTTVERSION_5) {
        r->onSuccess5 = on_sub_ok5;
        r->onFailure5 = on_sub_failed5;
    } else {
        r->onSuccess = on_sub_ok;
        r->onFailure = on_sub_failed;
    }
}

/* Response options whose answer (success or failure) reaches waiter p as an
 * EV_PUB_DONE event. */
void mqr__up_paho_answer_to(const mqr_upstream_t *u, up_pub_t *p, MQTTAsync_responseOptions *r)
{
    r->context = p;
    if (u->version == MQTTVERSION_5) {
        r->onSuccess5 = on_pub_ok5;
        r->onFailure5 = on_pub_failed5;
    } else {
        r->onSuccess = on_pub_ok;
        r->onFailure = on_pub_failed;
    }
}

void mqr__up_paho_unsub_answers(mqr_upstream_t *u, MQTTAsync_responseOptions *r)
{
    r->context = u;
    if (u->version == MQTTVERSION_5) {
        r->onSuccess5 = on_unsub_ok5;
        r->onFailure5 = on_unsub_failed5;
    } else {
        r->onSuccess = on_unsub_ok;
        r->onFailure = on_unsub_failed;
    }
}

void mqr__up_paho_wait_unsubs(mqr_upstream_t *u)
{
    up_paho_t *pa = up_paho(u);
    uint64_t deadline = uv_hrtime() + (uint64_t)UP_PAHO_UNSUB_WAIT_MS * 1000000u;
    uv_mutex_lock(&u->lock);
    while (pa->unsubs_unanswered) {
        uint64_t now = uv_hrtime();
        if (now >= deadline) break;
        uv_cond_timedwait(&pa->cond, &u->lock, deadline - now);
    }
    uv_mutex_unlock(&u->lock);
}

void mqr__up_paho_disconnect_answers(mqr_upstream_t *u, MQTTAsync_disconnectOptions *d)
{
    d->onSuccess = on_disconnect_ok;
    d->onFailure = on_disconnect_failed;
    d->context = u;
}

/* Paho's global set-up and tear-down are not safe against each other:
 * creating the first client initialises its globals (its trace buffer among
 * them) outside its lock, and destroying the last one frees them. A create
 * on the loop while a worker destroys the last client could initialise twice
 * and lose a buffer (seen as a 124 800-byte leak under LeakSanitizer). So
 * every create and destroy of ours takes this lock; a create then waits for
 * a destroy in progress (at most what Paho's destroy takes). */
static uv_once_t paho_life_once = UV_ONCE_INIT;
static uv_mutex_t paho_life;

static void paho_life_init(void)
{
    if (uv_mutex_init(&paho_life) != 0) abort();
}

int mqr__up_paho_create(MQTTAsync *c, const char *uri, const char *id, int persist_type,
                        void *persist, MQTTAsync_createOptions *co)
{
    uv_once(&paho_life_once, paho_life_init);
    uv_mutex_lock(&paho_life);
    int rc = MQTTAsync_createWithOptions(c, uri, id, persist_type, persist, co);
    uv_mutex_unlock(&paho_life);
    return rc;
}

void mqr__up_paho_destroy(MQTTAsync *c)
{
    uv_once(&paho_life_once, paho_life_init);
    uv_mutex_lock(&paho_life);
    MQTTAsync_destroy(c);
    uv_mutex_unlock(&paho_life);
}
