/*
 * handle_publish.c — PUBLISH and PUBREL from a client: the message enters
 * the engine, and the acknowledgements go back in order.
 *
 * QoS 1 is answered with PUBACK once the message is routed; QoS 2 with
 * PUBREC, and its packet id is remembered until PUBREL so a resent PUBLISH
 * is not routed twice (exactly once). A retained message is also a store
 * write: its PUBACK/PUBREC waits for the store's commit, and every ack
 * behind it waits too, since acks must keep the order of the packets
 * (3.1.1 §4.6, 5.0 §4.6). So does an ack for a message that a persistent
 * session stored (queued offline, or in flight to it), a PUBREC whose
 * packet id a persistent session stored, and in general any ack for a
 * message whose routing wrote to the store (a durable queue bound to its
 * topic): the publish context the engine fills while routing tells
 * (router.h). It also tells when a subscriber that had to keep the message
 * could not (no room; no memory or a store write refused): then the
 * message is not acknowledged as taken, whatever the protocol version.
 * v5 topic aliases are resolved here. This file never copies a payload: the
 * message is built from the read buffer once.
 */
#include "listener_int.h"

#include "auth.h"

#include "registry.h"
#include "store.h"
#include "topic.h"

#include <stdlib.h>
#include <string.h>

/* ---- acks in order -------------------------------------------------------- */

static int ack_push(mqr_lconn_t *c, uint8_t type, uint16_t pid, uint8_t reason, bool ready)
{
    mqr_lqs_t *q = mqr__listener_qstate(c);
    if (!q) return MQR_ENOMEM;
    if (q->ack_count == q->ack_cap) {
        uint32_t cap = q->ack_cap ? q->ack_cap * 2 : 16;
        mqr_lack_t *a = malloc(cap * sizeof *a);
        if (!a) return MQR_ENOMEM;
        for (uint32_t i = 0; i < q->ack_count; i++)
            a[i] = q->acks[(q->ack_head + i) & (q->ack_cap - 1)];
        free(q->acks);
        q->acks = a;
        q->ack_cap = cap;
        q->ack_head = 0;
    }
    q->acks[(q->ack_head + q->ack_count) & (q->ack_cap - 1)] =
        (mqr_lack_t){.pid = pid, .type = type, .reason = reason, .ready = ready};
    q->ack_count++;
    return 0;
}

static void acks_drain(mqr_lconn_t *c)
{
    mqr_lqs_t *q = c->qs;
    while (q->ack_count && q->acks[q->ack_head].ready) {
        mqr_lack_t a = q->acks[q->ack_head];
        q->ack_head = (q->ack_head + 1) & (q->ack_cap - 1);
        q->ack_count--;
        mqr__listener_send_ack(c, a.type, a.pid, a.reason);
    }
}

void mqr__listener_ack(mqr_lconn_t *c, uint8_t type, uint16_t pid, uint8_t reason)
{
    if (!c->qs || c->qs->ack_count == 0) {
        mqr__listener_send_ack(c, type, pid, reason);
        return;
    }
    if (ack_push(c, type, pid, reason, true) < 0)
        mqr__listener_conn_close(c, MQR_LCLOSE_HARD, 0, "out of memory");
}

static bool qos2_remove(mqr_lconn_t *c, uint16_t pid);

/* A commit that lost the rows an ack waited for. */
static void commit_failed(mqr_lconn_t *c, mqr_lack_t *a, int status)
{
    mqr_listener_t *l = c->l;
    l->stats.refused_failed++;
    uint64_t now = mqr__now_ms();
    if (now - l->fail_log_ms >= 1000u) { /* a failed commit fails every waiter: one line */
        l->fail_log_ms = now;
        MQR_LOG_W(MQR_LSN_LOG, "client %s: message id %u not stored: %s (%llu refused so far)",
                  c->client_id, a->pid, mqr_strerror(status),
                  (unsigned long long)l->stats.refused_failed);
    }
    a->reason = MQR_MQTT_RC_UNSPECIFIED;
    /* the QoS 2 id's row is lost too: kept in memory, the message sent
     * again under it would be taken for a duplicate and never routed */
    if (a->type == MQR_MQTT_PUBREC) qos2_remove(c, a->pid);
    if (c->version == MQR_MQTT_V311) {
        /* 3.1.1 cannot say "failed": closing is how the client learns it
         * was not taken */
        mqr__listener_conn_close(c, MQR_LCLOSE_HARD, 0, "store commit failed");
    }
}

static void on_commit(void *arg, int status)
{
    mqr_lconn_t *c = arg;
    /* an active connection's qs holds the ack this callback is for */
    mqr_lqs_t *q = c->qs;
    if (c->state == MQR_LCONN_ACTIVE && q) {
        /* callbacks come in registration order: ours is the first waiting */
        for (uint32_t i = 0; i < q->ack_count; i++) {
            mqr_lack_t *a = &q->acks[(q->ack_head + i) & (q->ack_cap - 1)];
            if (a->ready) continue;
            a->ready = true;
            q->acks_waiting--;
            if (status < 0) commit_failed(c, a, status);
            break;
        }
        if (c->state == MQR_LCONN_ACTIVE) acks_drain(c);
        if (c->commit_paused && q->acks_waiting == 0) {
            c->commit_paused = false;
            if (--c->blocked_by == 0) mqr__listener_conn_input_resume(c);
        }
    }
    mqr__listener_conn_unref(c);
}

void mqr__listener_ack_after_commit(mqr_lconn_t *c, uint8_t type, uint16_t pid, uint8_t reason)
{
    if (ack_push(c, type, pid, reason, false) < 0) {
        mqr__listener_conn_close(c, MQR_LCLOSE_HARD, 0, "out of memory");
        return;
    }
    c->qs->acks_waiting++;
    c->refs++;
    if (c->version != MQR_MQTT_V5 && c->qs->acks_waiting >= c->l->opts.receive_max &&
        !c->commit_paused) {
        /* a 3.1.1 client was told no Receive Maximum: rather than closing
         * it, read no more from it until the store has caught up */
        c->commit_paused = true;
        if (c->blocked_by++ == 0) mqr__listener_conn_input_pause(c);
    }
    mqr_store_t *store = c->l->all->store;
    int rc = store ? mqr__store_after_commit(store, on_commit, c) : 0;
    if (!store) {
        on_commit(c, 0); /* nothing to wait for */
        return;
    }
    if (rc < 0) on_commit(c, rc); /* a failed call never runs the callback */
}

void mqr__listener_acks_clear(mqr_lconn_t *c)
{
    /* callbacks still pending find the connection closing and only unref */
    if (!c->qs) return;
    c->qs->ack_head = c->qs->ack_count = 0;
    c->qs->acks_waiting = 0;
}

/* ---- inbound QoS 2 packet ids ------------------------------------------------ */

static bool qos2_has(const mqr_lconn_t *c, uint16_t pid)
{
    return c->qs && c->qs->qos2_ids && (c->qs->qos2_ids[pid >> 6] >> (pid & 63)) & 1u;
}

/* Remembers pid until PUBREL: 0, MQR_DELIVER_STORED (a persistent session's
 * row: the PUBREC waits for the commit), or an error and nothing kept (a
 * PUBREC for an id that a restart would forget is no exactly-once). */
static int qos2_add(mqr_lconn_t *c, uint16_t pid)
{
    mqr_lqs_t *q = mqr__listener_qstate(c);
    if (!q) return MQR_ENOMEM;
    if (!q->qos2_ids) {
        q->qos2_ids = calloc(65536 / 64, sizeof *q->qos2_ids);
        if (!q->qos2_ids) return MQR_ENOMEM;
    }
    int rc = mqr__client_session_qos2(c, pid, true);
    if (rc < 0) return rc;
    q->qos2_ids[pid >> 6] |= 1ull << (pid & 63);
    q->qos2_count++;
    return rc;
}

static bool qos2_remove(mqr_lconn_t *c, uint16_t pid)
{
    if (!qos2_has(c, pid)) return false;
    c->qs->qos2_ids[pid >> 6] &= ~(1ull << (pid & 63));
    c->qs->qos2_count--;
    /* a row left behind (counted, logged there) keeps the id after a
     * restart, where PUBREL releases it again */
    (void)mqr__client_session_qos2(c, pid, false);
    return true;
}

/* ---- topic aliases ------------------------------------------------------------ */

void mqr__listener_aliases_clear(mqr_lconn_t *c)
{
    if (!c->aliases) return;
    for (unsigned i = 0; i <= c->alias_max; i++)
        free(c->aliases[i].p);
    free(c->aliases);
    c->aliases = NULL;
}

static int alias_set(mqr_lconn_t *c, uint16_t alias, const char *topic, uint16_t len)
{
    if (!c->aliases) {
        c->aliases = calloc((size_t)c->alias_max + 1, sizeof *c->aliases);
        if (!c->aliases) return MQR_ENOMEM;
    }
    mqr_lalias_t *a = &c->aliases[alias];
    if (a->p && a->len == len && memcmp(a->p, topic, len) == 0) return 0;
    char *p = malloc((size_t)len + 1);
    if (!p) return MQR_ENOMEM;
    memcpy(p, topic, len);
    p[len] = '\0';
    free(a->p);
    a->p = p;
    a->len = len;
    return 0;
}

/* ---- PUBLISH ---------------------------------------------------------------- */

/* Routing a QoS 1/2 PUBLISH failed (no memory, the store refused the
 * retained message, a session row or the QoS 2 id): some subscriber that
 * had to keep it does not, so it must not be acknowledged as taken. v5 says
 * so (0x80, the client may send it again); 3.1.1 has no negative ack, so
 * the connection closes unacknowledged (as for a full queue) and the client
 * sends it again after reconnecting. */
static int refuse_failed(mqr_lconn_t *c, const mqr_mqtt_publish_t *p, uint8_t type, uint16_t tlen,
                         int why)
{
    mqr_listener_t *l = c->l;
    l->stats.refused_failed++;
    bool v5 = c->version == MQR_MQTT_V5;
    /* a failing disk or a process out of memory fails every PUBLISH: one
     * line a second, with the count */
    uint64_t now = mqr__now_ms();
    if (now - l->fail_log_ms >= 1000u) {
        l->fail_log_ms = now;
        MQR_LOG_W(MQR_LSN_LOG,
                  "client %s (%s): QoS %d PUBLISH on %.*s not taken: %s; %s (%llu refused so far)",
                  mqr__lconn_name(c), c->addr, p->qos, (int)tlen,
                  p->topic_alias && !p->topic.len ? "(alias)" : p->topic.p, mqr_strerror(why),
                  v5 ? "answered 0x80" : "closing unacknowledged",
                  (unsigned long long)l->stats.refused_failed);
    }
    if (!v5) {
        c->will_publish = true; /* not a normal disconnection */
        mqr__listener_conn_close(c, MQR_LCLOSE_DISCONNECT, MQR_MQTT_RC_UNSPECIFIED,
                                 "PUBLISH not taken");
        return why;
    }
    mqr__listener_ack(c, type, p->packet_id, MQR_MQTT_RC_UNSPECIFIED);
    return 0;
}

int mqr__listener_handle_publish(mqr_lconn_t *c, uint8_t *pkt, size_t len)
{
    mqr_listener_t *l = c->l;
    mqr_mqtt_publish_t p;
    int rc = mqr__mqtt_decode_publish(pkt, len, c->version, MQR_MQTT_FROM_CLIENT, &p);
    if (rc < 0) return rc;

    const char *topic = p.topic.p;
    uint16_t tlen = p.topic.len;
    if (p.topic_alias) {
        /* 5.0 §3.3.2.3.4 */
        if (p.topic_alias > c->alias_max)
            return mqr__listener_conn_fail(c, MQR_MQTT_RC_TOPIC_ALIAS_INVALID,
                                           "topic alias out of range");
        if (tlen) {
            if (alias_set(c, p.topic_alias, topic, tlen) < 0)
                return mqr__listener_conn_fail(c, MQR_MQTT_RC_UNSPECIFIED, "out of memory");
        } else {
            mqr_lalias_t *a = c->aliases ? &c->aliases[p.topic_alias] : NULL;
            if (!a || !a->p)
                return mqr__listener_conn_fail(c, MQR_MQTT_RC_PROTOCOL_ERROR,
                                               "unknown topic alias");
            topic = a->p;
            tlen = a->len;
        }
    }

    uint8_t route_qos = p.qos;
    if (p.qos > l->opts.max_qos) {
        l->stats.qos_exceeded++;
        /* v5 told the client its Maximum QoS at CONNACK (5.0 §3.2.2.3.4);
         * a 3.1.1 client was not, so its message is taken, acknowledged as
         * its QoS requires, and routed at max_qos */
        if (c->version == MQR_MQTT_V5)
            return mqr__listener_conn_fail(c, MQR_MQTT_RC_QOS_NOT_SUPPORTED,
                                           "PUBLISH QoS above max_qos");
        route_qos = (uint8_t)l->opts.max_qos;
    }
    if (p.qos == 2 && qos2_has(c, p.packet_id)) {
        /* a resend before our PUBREC arrived: acknowledged, not routed again */
        mqr__listener_ack(c, MQR_MQTT_PUBREC, p.packet_id, 0);
        return 0;
    }
    /* a v5 client was told the Receive Maximum; acks waiting for the store
     * count against it (a 3.1.1 client's input pauses instead) */
    const mqr_lqs_t *q = c->qs;
    uint32_t waiting = q && c->version == MQR_MQTT_V5 ? q->acks_waiting : 0;
    if (p.qos && q && q->qos2_count + waiting >= l->opts.receive_max)
        return mqr__listener_conn_fail(c, MQR_MQTT_RC_RECEIVE_MAX_EXCEEDED,
                                       "receive maximum exceeded");

    int denied = mqr__listener_authorize(c, MQR_AUTH_PUBLISH, topic, tlen, p.qos, p.retain);
    if (denied) {
        /* not routed. v5 says so (0x87, or the error code the hook named,
         * 5.0 §3.4.2.1 / §3.5.2.1); 3.1.1 has no negative ack: it is
         * acknowledged and dropped, as Mosquitto does */
        if (p.qos == 0) return 0;
        bool v5 = c->version == MQR_MQTT_V5;
        if (p.qos == 2 && !v5 && qos2_add(c, p.packet_id) < 0)
            return mqr__listener_conn_fail(c, MQR_MQTT_RC_UNSPECIFIED,
                                           "QoS 2 packet id not kept (memory or store)");
        mqr__listener_ack(c, p.qos == 1 ? MQR_MQTT_PUBACK : MQR_MQTT_PUBREC, p.packet_id,
                          v5 ? (uint8_t)denied : 0);
        return 0;
    }

    size_t plen = 0;
    if (p.props.len) plen = mqr__mqtt_props_strip(p.props.p, p.props.len, (uint8_t *)p.props.p);
    if (c->device) mqr__device_count_in(c->device, len, l->read_ms);
    char mbuf[256], *mheap = NULL;
    size_t mlen = tlen;
    if (c->mount) {
        /* a tenant's client publishes under its mountpoint (authorize saw
         * the topic as the client sent it) */
        topic = mqr__listener_mount(c, topic, tlen, false, mbuf, sizeof mbuf, &mheap, &mlen);
        if (!topic || mlen > MQR_TOPIC_MAX_LEN) {
            free(mheap);
            return mqr__listener_conn_fail(c, MQR_MQTT_RC_TOPIC_NAME_INVALID,
                                           "topic too long under the tenant's mountpoint");
        }
    }
    mqr_msg_init_t in = {
        .topic = topic,
        .topic_len = mlen,
        .payload = p.payload.p,
        .payload_len = p.payload.len,
        .props = plen ? p.props.p : NULL,
        .props_len = plen,
        .qos = route_qos,
        .retain = p.retain,
        .origin = MQR_ORIGIN_LISTENER,
        .origin_name = c->client_id,
        .origin_name_len = c->client_id_len,
        .origin_conn = c,
        .expiry_s = p.has_expiry ? p.expiry : 0,
        .created_ms = l->read_ms,
    };
    mqr_msg_t *m = mqr__msg_new(&in);
    free(mheap);
    uint8_t type = p.qos == 1 ? MQR_MQTT_PUBACK : MQR_MQTT_PUBREC;
    /* The QoS 2 id is kept before the message is routed: when the store
     * cannot keep it, nothing went anywhere and "not taken" is the whole
     * truth (after routing, the subscribers would have it already). */
    int q2 = 0;
    if (p.qos == 2 && m && (q2 = qos2_add(c, p.packet_id)) < 0) {
        mqr_msg_unref(m);
        return refuse_failed(c, &p, type, tlen, q2);
    }
    bool id_kept = p.qos == 2 && m;
    /* deliver.c pauses l->publisher when a subscriber's queue is full */
    mqr_lconn_t *outer = l->publisher;
    l->publisher = c;
    /* what became of it at each subscriber that must keep it (a queue, a
     * persistent session's row, an upstream session's buffer) */
    mqr_pubctx_t pc;
    if (m) {
        rc = mqr__engine_publish_ctx(l->e, m, &pc, &c->src);
        mqr_msg_unref(m);
        l->stats.msgs_in++;
    } else {
        rc = MQR_ENOMEM;
        pc = (mqr_pubctx_t){0};
    }
    l->publisher = outer;
    if (p.qos == 0) {
        if (rc < 0)
            MQR_LOG_D(MQR_LSN_LOG, "%s: PUBLISH on %.*s not routed: %s", c->client_id, (int)tlen,
                      p.topic_alias && !p.topic.len ? "(alias)" : p.topic.p, mqr_strerror(rc));
        return 0;
    }
    if (rc >= 0 && pc.failed) rc = pc.error;
    /* refused: the id is not kept, the client sends the message again as a
     * new one */
    if ((rc < 0 || pc.no_room) && id_kept) qos2_remove(c, p.packet_id);
    if (rc < 0) return refuse_failed(c, &p, type, tlen, rc);

    /* A subscriber that had to take it (a queue, an upstream session a
     * route forwarded it to) had no room: acknowledging would lose a message
     * the client then forgets. v5 says so (Quota exceeded, the client may
     * send it again); 3.1.1 has no negative ack, so the connection closes
     * unacknowledged and the client sends it again after reconnecting. */
    if (pc.no_room) {
        l->stats.refused_no_room++;
        if (c->version != MQR_MQTT_V5) {
            MQR_LOG_I(MQR_LSN_LOG,
                      "client %s (%s): a queue or session buffer its QoS %d PUBLISH was routed "
                      "to is full: closing unacknowledged",
                      mqr__lconn_name(c), c->addr, p.qos);
            c->will_publish = true; /* not a normal disconnection */
            mqr__listener_conn_close(c, MQR_LCLOSE_DISCONNECT, MQR_MQTT_RC_QUOTA_EXCEEDED,
                                     "no room");
            return MQR_EFULL;
        }
        mqr__listener_ack(c, type, p.packet_id, MQR_MQTT_RC_QUOTA_EXCEEDED);
        return 0;
    }

    /* a retained message, a message queued for a persistent session or a
     * durable queue, a stored QoS 2 id: whatever routing wrote to the store
     * is acknowledged once the store has committed it */
    if (p.retain || pc.stored || q2 == MQR_DELIVER_STORED)
        mqr__listener_ack_after_commit(c, type, p.packet_id, MQR_MQTT_RC_SUCCESS);
    else
        mqr__listener_ack(c, type, p.packet_id, MQR_MQTT_RC_SUCCESS);
    return 0;
}

int mqr__listener_handle_pubrel(mqr_lconn_t *c, uint8_t *pkt, size_t len)
{
    mqr_mqtt_ack_t a;
    int rc = mqr__mqtt_decode_ack(pkt, len, c->version, &a);
    if (rc < 0) return rc;
    bool had = qos2_remove(c, a.packet_id);
    if (!had) c->l->stats.unknown_acks++;
    mqr__listener_ack(c, MQR_MQTT_PUBCOMP, a.packet_id,
                      had ? MQR_MQTT_RC_SUCCESS : MQR_MQTT_RC_PACKET_ID_NOT_FOUND);
    return 0;
}

int mqr__listener_handle_ack(mqr_lconn_t *c, uint8_t *pkt, size_t len)
{
    mqr_mqtt_ack_t a;
    int rc = mqr__mqtt_decode_ack(pkt, len, c->version, &a);
    if (rc < 0) return rc;
    switch (a.type) {
    case MQR_MQTT_PUBACK:
        mqr__listener_puback(c, a.packet_id);
        break;
    case MQR_MQTT_PUBREC:
        mqr__listener_pubrec(c, a.packet_id, a.reason);
        break;
    default:
        mqr__listener_pubcomp(c, a.packet_id);
        break;
    }
    return 0;
}
