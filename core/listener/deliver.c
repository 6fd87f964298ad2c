/*
 * deliver.c — what one client gets of a routed message, and the outbound
 * QoS 1/2 flow: packet ids, the in-flight window, the queue behind it.
 *
 * Overlapping subscriptions: the trie yields one entry per matching
 * subscription and the router calls deliver() once per entry, so a client
 * gets one copy per matching subscription, each at min(message QoS,
 * subscription QoS) and, in v5, with that subscription's identifier. Both
 * specifications allow it (3.1.1 §3.3.5: the copy at the highest QoS is
 * among them; 5.0 §3.3.4: "one copy per subscription" is one of the two
 * permitted behaviours) and it costs nothing on the hot path, where a
 * merged copy would need to know when the router is done with a message.
 *
 * Limits: the window is min(the client's Receive Maximum, max_inflight); the
 * queue behind it holds max_queued messages, then new ones are dropped and
 * counted; QoS 0 never waits in a queue: it goes into the output or, past
 * max_out_bytes of waiting output, is dropped and counted. Nothing here
 * touches the socket.
 */
#include "listener_int.h"

#include <stdlib.h>

static bool expired(const mqr_msg_t *m)
{
    return m->expiry_s && m->created_ms + (uint64_t)m->expiry_s * 1000u <= mqr__now_ms();
}

int mqr__listener_deliveries_init(mqr_lconn_t *c, uint16_t receive_max)
{
    unsigned cap = c->l->opts.max_inflight;
    if (receive_max && receive_max < cap) cap = receive_max;
    c->if_cap = cap;
    c->next_pid = 0;
    return 0;
}

static inline mqr_ldelivery_t *slot(mqr_lconn_t *c, uint32_t i)
{
    return &c->inflight[(c->if_head + i) % c->if_cap];
}

static uint16_t next_pid(mqr_lconn_t *c)
{
    /* Ids go round in order and at most if_cap (<= 1024) are in flight, so
     * the next one is never still in use. */
    c->next_pid = c->next_pid == 65535 ? 1 : (uint16_t)(c->next_pid + 1);
    return c->next_pid;
}

static int start_inflight(mqr_lconn_t *c, mqr_msg_t *msg, uint8_t qos, bool retain, uint32_t sub_id)
{
    if (!c->inflight) {
        c->inflight = calloc(c->if_cap, sizeof *c->inflight);
        if (!c->inflight) return MQR_ENOMEM;
    }
    uint16_t pid = next_pid(c);
    int rc = mqr__listener_send_publish(c, msg, qos, pid, retain, false, sub_id);
    if (rc < 0) return rc;
    mqr_ldelivery_t *d = slot(c, c->if_span);
    d->msg = msg;
    mqr_msg_ref(msg);
    d->sub_id = sub_id;
    d->pid = pid;
    d->qos = qos;
    d->retain = retain;
    d->state = qos == 1 ? MQR_LQ_WAIT_PUBACK : MQR_LQ_WAIT_PUBREC;
    c->if_span++;
    c->if_live++;
    return 0;
}

static int enqueue(mqr_lconn_t *c, mqr_msg_t *msg, uint8_t qos, bool retain, uint32_t sub_id)
{
    if (c->q_count == c->q_cap) {
        uint32_t cap = c->q_cap ? c->q_cap * 2 : 16;
        mqr_ldelivery_t *q = malloc(cap * sizeof *q);
        if (!q) return MQR_ENOMEM;
        for (uint32_t i = 0; i < c->q_count; i++)
            q[i] = c->queue[(c->q_head + i) & (c->q_cap - 1)];
        free(c->queue);
        c->queue = q;
        c->q_cap = cap;
        c->q_head = 0;
    }
    mqr_ldelivery_t *d = &c->queue[(c->q_head + c->q_count) & (c->q_cap - 1)];
    d->msg = msg;
    mqr_msg_ref(msg);
    d->sub_id = sub_id;
    d->pid = 0;
    d->qos = qos;
    d->retain = retain;
    d->state = MQR_LQ_FREE;
    c->q_count++;
    return 0;
}

/* Moves queued messages into the window while it has room. */
static void pump(mqr_lconn_t *c)
{
    while (c->q_count && c->if_span < c->if_cap && c->state == MQR_LCONN_ACTIVE) {
        mqr_ldelivery_t d = c->queue[c->q_head];
        c->q_head = (c->q_head + 1) & (c->q_cap - 1);
        c->q_count--;
        if (expired(d.msg))
            c->l->stats.expired++;
        else
            start_inflight(c, d.msg, d.qos, d.retain, d.sub_id); /* a failure skips it */
        mqr_msg_unref(d.msg);
    }
}

int mqr__listener_send_message(mqr_lconn_t *c, mqr_msg_t *msg, uint8_t qos, bool retain,
                               uint32_t sub_id)
{
    mqr_listener_t *l = c->l;
    if (expired(msg)) {
        l->stats.expired++;
        return MQR_ENOENT;
    }
    if (qos == 0) {
        if (c->out_bytes >= l->opts.max_out_bytes) {
            l->stats.dropped++;
            return MQR_EFULL;
        }
        return mqr__listener_send_publish(c, msg, 0, 0, retain, false, sub_id);
    }
    if (c->q_count == 0 && c->if_span < c->if_cap)
        return start_inflight(c, msg, qos, retain, sub_id);
    if (c->q_count >= l->opts.max_queued) {
        l->stats.dropped++;
        return MQR_EFULL;
    }
    return enqueue(c, msg, qos, retain, sub_id);
}

void mqr__listener_deliver(mqr_subscriber_t *self, mqr_msg_t *msg, const mqr_trie_entry_t *entry)
{
    mqr_lconn_t *c = (mqr_lconn_t *)self;
    if (c->state != MQR_LCONN_ACTIVE) return;
    const mqr_sub_opts_t *o = &entry->opts;
    if (o->no_local && msg->origin_conn == c) return;
    uint8_t qos = msg->qos < o->qos ? msg->qos : o->qos;
    /* 3.1.1 §3.3.1.3: a forwarded message goes out with RETAIN 0; v5 keeps it
     * when the subscription asked for Retain As Published */
    bool retain = o->retain_as_published && msg->retain;
    mqr__listener_send_message(c, msg, qos, retain, o->subscription_id);
}

/* ---- acknowledgements from the client ------------------------------------ */

static mqr_ldelivery_t *find(mqr_lconn_t *c, uint16_t pid, uint8_t state)
{
    /* acks come in order (4.6), so this is nearly always the first one */
    for (uint32_t i = 0; i < c->if_span; i++) {
        mqr_ldelivery_t *d = slot(c, i);
        if (d->pid == pid && d->state == state) return d;
    }
    return NULL;
}

static void release(mqr_lconn_t *c, mqr_ldelivery_t *d)
{
    if (d->msg) mqr_msg_unref(d->msg);
    d->msg = NULL;
    d->state = MQR_LQ_FREE;
    c->if_live--;
    while (c->if_span && slot(c, 0)->state == MQR_LQ_FREE) {
        c->if_head = (c->if_head + 1) % c->if_cap;
        c->if_span--;
    }
    pump(c);
}

void mqr__listener_puback(mqr_lconn_t *c, uint16_t pid)
{
    mqr_ldelivery_t *d = find(c, pid, MQR_LQ_WAIT_PUBACK);
    if (!d) {
        c->l->stats.unknown_acks++;
        MQR_LOG_D(MQR_LSN_LOG, "%s: PUBACK for unknown id %u ignored", c->client_id, pid);
        return;
    }
    release(c, d);
}

void mqr__listener_pubrec(mqr_lconn_t *c, uint16_t pid, uint8_t reason)
{
    mqr_ldelivery_t *d = find(c, pid, MQR_LQ_WAIT_PUBREC);
    if (d && reason >= 0x80) {
        release(c, d); /* 5.0 §4.3.3: the client refused it; the flow ends */
        return;
    }
    if (d) {
        mqr_msg_unref(d->msg);
        d->msg = NULL;
        d->state = MQR_LQ_WAIT_PUBCOMP;
        mqr__listener_send_ack(c, MQR_MQTT_PUBREL, pid, 0);
        return;
    }
    /* a repeated PUBREC gets the PUBREL again; an unknown id "not found" */
    d = find(c, pid, MQR_LQ_WAIT_PUBCOMP);
    if (!d) c->l->stats.unknown_acks++;
    mqr__listener_send_ack(c, MQR_MQTT_PUBREL, pid, d ? 0 : MQR_MQTT_RC_PACKET_ID_NOT_FOUND);
}

void mqr__listener_pubcomp(mqr_lconn_t *c, uint16_t pid)
{
    mqr_ldelivery_t *d = find(c, pid, MQR_LQ_WAIT_PUBCOMP);
    if (!d) {
        c->l->stats.unknown_acks++;
        MQR_LOG_D(MQR_LSN_LOG, "%s: PUBCOMP for unknown id %u ignored", c->client_id, pid);
        return;
    }
    release(c, d);
}

void mqr__listener_deliveries_clear(mqr_lconn_t *c)
{
    for (uint32_t i = 0; i < c->if_span; i++) {
        mqr_ldelivery_t *d = slot(c, i);
        if (d->msg) mqr_msg_unref(d->msg);
        d->msg = NULL;
        d->state = MQR_LQ_FREE;
    }
    c->if_head = c->if_span = c->if_live = 0;
    for (uint32_t i = 0; i < c->q_count; i++)
        mqr_msg_unref(c->queue[(c->q_head + i) & (c->q_cap - 1)].msg);
    c->q_head = c->q_count = 0;
}
