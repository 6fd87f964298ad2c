/*
 * mqttc_send.c — what the caller sends: PUBLISH (QoS 0 straight into the
 * output, QoS 1/2 into the window or its queue), SUBSCRIBE, UNSUBSCRIBE,
 * each checked against what the server's CONNACK allows (5.0 §3.2.2.3:
 * Maximum QoS, Retain Available, Maximum Packet Size) before anything is
 * queued, and the backpressure queries.
 *
 * A call that returns an error has queued nothing and will fire no done().
 * Nothing here reads packets from the server (mqttc.c).
 */
#include "mqttc_int.h"

#include <stdlib.h>
#include <string.h>

#define OUT_HIGH_WATER (1024u * 1024) /* writable() says no above this */

static int publish_check(const mqr_mqttc_t *c, const mqr_mqtt_publish_t *p)
{
    if (p->qos > 2 || !p->topic.p) return MQR_EINVAL;
    if (p->qos > c->srv_max_qos) return MQR_EQOS;
    if (p->retain && !c->srv_retain) return MQR_EINVAL;
    return mqr__mqtt_topic_name_check(p->topic.p, p->topic.len);
}

/* QoS 0 goes straight into the output, its topic as an alias when the
 * server takes them (alias_out.h): the first PUBLISH of a topic sets one,
 * later ones send two bytes instead of the topic. */
static int publish_qos0(mqr_mqttc_t *c, mqr_mqtt_publish_t *q, uint64_t token)
{
    const char *topic = q->topic.p;
    size_t topic_len = q->topic.len;
    uint32_t hash = 0;
    bool alias_new = false;
    if (c->out_alias.max) {
        q->add_topic_alias = mqr__mqtt_alias_out_find(&c->out_alias, topic, topic_len, &hash);
        if (q->add_topic_alias)
            q->topic.len = 0;
        else
            alias_new = (q->add_topic_alias = mqr__mqtt_alias_out_next(&c->out_alias)) != 0;
    }
    size_t len, head;
    int rc = mqr__mqtt_publish_size(q, c->version, &len, &head);
    if (rc) return rc;
    if (c->srv_max_packet && len > c->srv_max_packet) return MQR_ETOOLARGE;
    uint8_t *w = mqr__mqttc_out_reserve(c, len);
    if (!w) return MQR_ENOMEM;
    rc = mqr__mqtt_encode_publish(q, c->version, w, len, &len);
    if (rc == 0 && token) rc = mqr__mqttc_out_token(c, token);
    if (rc) return rc;
    mqr__mqttc_out_commit(c, len);
    if (alias_new)
        mqr__mqtt_alias_out_remember(&c->out_alias, q->add_topic_alias, topic, topic_len, hash);
    return 0;
}

int mqr__mqttc_publish(mqr_mqttc_t *c, const mqr_mqtt_publish_t *p, uint64_t token)
{
    if (!c || !p) return MQR_EINVAL;
    if (c->st != MQTTC_UP) return MQR_ENOTCONN;
    int rc = publish_check(c, p);
    if (rc) return rc;
    mqr_mqtt_publish_t q = *p;
    q.dup = false;
    q.packet_id = q.qos ? 1 : 0; /* the real id is written when it enters the window */
    q.add_topic_alias = 0;
    q.add_sub_ids = NULL;
    q.n_add_sub_ids = 0;
    if (q.qos == 0) return publish_qos0(c, &q, token);
    size_t len, head;
    if ((rc = mqr__mqtt_publish_size(&q, c->version, &len, &head)) != 0) return rc;
    if (c->srv_max_packet && len > c->srv_max_packet) return MQR_ETOOLARGE;

    mqttc_op_t *op = mqr__mqttc_op_new(len);
    if (!op) return MQR_ENOMEM;
    op->kind = MQR_MQTT_PUBLISH;
    op->qos = q.qos;
    op->token = token;
    mqr_mqtt_frame_t f;
    if ((rc = mqr__mqtt_encode_publish(&q, c->version, op->data, len, &len)) != 0 ||
        (rc = mqr__mqtt_frame(op->data, len, 0, 0, &f)) != 0) {
        free(op);
        return rc;
    }
    op->id_off = (uint32_t)(f.hdr_len + 2u + q.topic.len);
    if (c->nwait == 0 && c->inflight < c->window) {
        rc = mqr__mqttc_op_send(c, op);
        if (rc) free(op);
        return rc;
    }
    if (c->wait_tail)
        c->wait_tail->next = op;
    else
        c->wait_head = op;
    c->wait_tail = op;
    c->nwait++;
    return 0;
}

/* SUBSCRIBE and UNSUBSCRIBE share this: an id, then the packet. */
static int sub_op(mqr_mqttc_t *c, int kind, size_t n, uint64_t token, mqttc_op_t **out)
{
    mqttc_op_t *op = mqr__mqttc_op_new(0);
    if (!op) return MQR_ENOMEM;
    op->kind = (uint8_t)kind;
    op->len = n; /* the count the answer must carry */
    op->token = token;
    int rc = mqr__mqttc_id_take(c, op);
    if (rc) free(op);
    *out = rc ? NULL : op;
    return rc;
}

static int props_check(const mqr_mqttc_t *c, const uint8_t *props, size_t plen, int ctx)
{
    if (c->version != MQR_MQTT_V5 || plen == 0) return 0;
    return mqr__mqtt_props_validate(props, plen, ctx, MQR_MQTT_FROM_CLIENT) ? MQR_EINVAL : 0;
}

int mqr__mqttc_subscribe(mqr_mqttc_t *c, const mqr_mqtt_sub_entry_t *e, size_t n,
                         const uint8_t *props, size_t plen, uint64_t token)
{
    if (!c || !e || n == 0 || n > UINT16_MAX) return MQR_EINVAL;
    if (c->st != MQTTC_UP) return MQR_ENOTCONN;
    for (size_t i = 0; i < n; i++) {
        bool shared;
        if (e[i].qos > 2 || e[i].retain_handling > 2 ||
            mqr__mqtt_topic_filter_check(e[i].filter.p, e[i].filter.len, c->version, &shared))
            return MQR_EINVAL;
    }
    if (props_check(c, props, plen, MQR_MQTT_SUBSCRIBE)) return MQR_EINVAL;
    mqr_mqtt_subscribe_t s = {.packet_id = 1, .props = {props, (uint32_t)plen}};
    size_t len;
    int rc = mqr__mqtt_encode_subscribe(&s, e, n, c->version, NULL, 0, &len);
    if (rc) return rc;
    if (c->srv_max_packet && len > c->srv_max_packet) return MQR_ETOOLARGE;
    uint8_t *w = mqr__mqttc_out_reserve(c, len);
    mqttc_op_t *op;
    if (!w) return MQR_ENOMEM;
    if ((rc = sub_op(c, MQR_MQTT_SUBSCRIBE, n, token, &op)) != 0) return rc;
    s.packet_id = op->id;
    mqr__mqtt_encode_subscribe(&s, e, n, c->version, w, len, &len); /* sized above */
    mqr__mqttc_out_commit(c, len);
    return 0;
}

int mqr__mqttc_unsubscribe(mqr_mqttc_t *c, const mqr_mqtt_str_t *filters, size_t n,
                           const uint8_t *props, size_t plen, uint64_t token)
{
    if (!c || !filters || n == 0 || n > UINT16_MAX) return MQR_EINVAL;
    if (c->st != MQTTC_UP) return MQR_ENOTCONN;
    for (size_t i = 0; i < n; i++) {
        bool shared;
        if (mqr__mqtt_topic_filter_check(filters[i].p, filters[i].len, c->version, &shared))
            return MQR_EINVAL;
    }
    if (props_check(c, props, plen, MQR_MQTT_UNSUBSCRIBE)) return MQR_EINVAL;
    mqr_mqtt_unsubscribe_t u = {.packet_id = 1, .props = {props, (uint32_t)plen}};
    size_t len;
    int rc = mqr__mqtt_encode_unsubscribe(&u, filters, n, c->version, NULL, 0, &len);
    if (rc) return rc;
    if (c->srv_max_packet && len > c->srv_max_packet) return MQR_ETOOLARGE;
    uint8_t *w = mqr__mqttc_out_reserve(c, len);
    mqttc_op_t *op;
    if (!w) return MQR_ENOMEM;
    if ((rc = sub_op(c, MQR_MQTT_UNSUBSCRIBE, n, token, &op)) != 0) return rc;
    u.packet_id = op->id;
    mqr__mqtt_encode_unsubscribe(&u, filters, n, c->version, w, len, &len);
    mqr__mqttc_out_commit(c, len);
    return 0;
}

/* ---- backpressure --------------------------------------------------------- */

size_t mqr__mqttc_inflight(const mqr_mqttc_t *c)
{
    return c->inflight;
}

size_t mqr__mqttc_waiting(const mqr_mqttc_t *c)
{
    return c->nwait;
}

size_t mqr__mqttc_out_bytes(const mqr_mqttc_t *c)
{
    return c->out.len + c->wbuf.len;
}

bool mqr__mqttc_writable(const mqr_mqttc_t *c, int qos)
{
    if (c->st != MQTTC_UP || mqr__mqttc_out_bytes(c) >= OUT_HIGH_WATER) return false;
    return qos == 0 || (c->nwait == 0 && c->inflight < c->window);
}

uint16_t mqr__mqttc_window(const mqr_mqttc_t *c)
{
    return c->st == MQTTC_UP ? c->window : 0;
}
