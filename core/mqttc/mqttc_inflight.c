/*
 * mqttc_inflight.c — packet ids and what waits on them: the outbound window
 * of QoS 1/2 publishes (5.0 §4.9 flow control: at most the server's Receive
 * Maximum unacknowledged), its queue in call order, the QoS 2 sender flow
 * PUBREC -> PUBREL -> PUBCOMP (5.0 §4.3.3), subscribes and unsubscribes
 * waiting for their answer, and the receiver side's state per packet id
 * (QoS 1 until the caller acknowledges, QoS 2 until PUBREL, 5.0 §4.3.3).
 *
 * Ids are handed out from a free stack, so a completed id is reused first
 * and never two operations hold the same one. Nothing here reads the socket
 * or calls closed(); a protocol error is returned for mqttc.c to close on.
 */
#include "mqttc_int.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

mqttc_op_t *mqr__mqttc_op_new(size_t data_len)
{
    mqttc_op_t *op = malloc(sizeof *op + data_len);
    if (!op) return NULL;
    memset(op, 0, sizeof *op);
    op->len = data_len;
    return op;
}

int mqr__mqttc_id_take(mqr_mqttc_t *c, mqttc_op_t *op)
{
    uint16_t id;
    if (c->nfree) {
        id = c->free_ids[--c->nfree];
    } else {
        if (c->nids == UINT16_MAX) return MQR_EFULL;
        if (c->nids + 1 >= c->ops_cap) {
            uint32_t cap = c->ops_cap ? c->ops_cap * 2 : 64;
            if (cap > UINT16_MAX + 1u) cap = UINT16_MAX + 1u;
            mqttc_op_t **ops = realloc(c->ops, cap * sizeof *ops);
            if (!ops) return MQR_ENOMEM;
            uint16_t *fr = realloc(c->free_ids, cap * sizeof *fr);
            if (!fr) {
                c->ops = ops; /* keep the bigger one; cap stays until both grew */
                return MQR_ENOMEM;
            }
            c->ops = ops;
            c->free_ids = fr;
            c->ops_cap = cap;
        }
        id = (uint16_t)++c->nids;
    }
    c->ops[id] = op;
    op->id = id;
    return 0;
}

mqttc_op_t *mqr__mqttc_id_find(mqr_mqttc_t *c, uint16_t id)
{
    return id && id <= c->nids ? c->ops[id] : NULL;
}

/* The id is free again; op is the caller's. */
static void id_detach(mqr_mqttc_t *c, mqttc_op_t *op)
{
    assert(op->id && c->ops[op->id] == op);
    c->ops[op->id] = NULL;
    c->free_ids[c->nfree++] = op->id;
    if (op->kind == MQR_MQTT_PUBLISH) c->inflight--;
    op->id = 0;
}

void mqr__mqttc_id_release(mqr_mqttc_t *c, mqttc_op_t *op)
{
    id_detach(c, op);
    free(op);
}

int mqr__mqttc_op_send(mqr_mqttc_t *c, mqttc_op_t *op)
{
    uint8_t *w = mqr__mqttc_out_reserve(c, op->len);
    if (!w) return MQR_ENOMEM;
    int rc = mqr__mqttc_id_take(c, op);
    if (rc) return rc;
    c->inflight++;
    op->state = OP_WAIT_ACK;
    op->seq = c->op_seq++;
    op->data[op->id_off] = (uint8_t)(op->id >> 8);
    op->data[op->id_off + 1] = (uint8_t)op->id;
    memcpy(w, op->data, op->len);
    mqr__mqttc_out_commit(c, op->len);
    return 0;
}

void mqr__mqttc_pump(mqr_mqttc_t *c)
{
    while (c->wait_head && c->inflight < c->window && c->st == MQTTC_UP) {
        mqttc_op_t *op = c->wait_head;
        int rc = mqr__mqttc_op_send(c, op);
        if (rc) {
            mqr__mqttc_fail(c, rc, 0, "cannot queue a publish");
            return;
        }
        c->wait_head = op->next;
        if (!c->wait_head) c->wait_tail = NULL;
        c->nwait--;
    }
}

/* Every operation still pending is done() with err: in-flight ones in id
 * order, then the queue in call order; with keep_inflight only subscribes
 * and unsubscribes (publishes wait for mqr__mqttc_resume). */
void mqr__mqttc_ops_fail(mqr_mqttc_t *c, int err)
{
    for (uint32_t id = 1; id <= c->nids; id++) {
        mqttc_op_t *op = c->ops[id];
        if (!op || (c->keep_inflight && op->kind == MQR_MQTT_PUBLISH)) continue;
        uint64_t token = op->token;
        mqr__mqttc_id_release(c, op);
        mqr__mqttc_done(c, token, err, 0);
    }
    while (c->wait_head && !c->keep_inflight) {
        mqttc_op_t *op = c->wait_head;
        c->wait_head = op->next;
        c->nwait--;
        uint64_t token = op->token;
        free(op);
        mqr__mqttc_done(c, token, err, 0);
    }
    if (!c->wait_head) c->wait_tail = NULL;
}

void mqr__mqttc_ops_drop(mqr_mqttc_t *c)
{
    for (uint32_t id = 1; id <= c->nids; id++)
        if (c->ops[id]) mqr__mqttc_id_release(c, c->ops[id]);
    while (c->wait_head) {
        mqttc_op_t *op = c->wait_head;
        c->wait_head = op->next;
        free(op);
    }
    c->wait_tail = NULL;
    c->nwait = 0;
}

/* ---- session resume ------------------------------------------------------- */

int mqr__mqttc_resume(mqr_mqttc_t *c, mqr_mqttc_t *old)
{
    if (!c || !old || c == old || c->st != MQTTC_NEW || c->nids || c->wait_head ||
        old->st != MQTTC_CLOSED || !old->keep_inflight)
        return MQR_EINVAL;
    free(c->ops);
    free(c->free_ids);
    free(c->in_state);
    c->ops = old->ops;
    c->free_ids = old->free_ids;
    c->ops_cap = old->ops_cap;
    c->nids = old->nids;
    c->nfree = old->nfree;
    c->inflight = old->inflight;
    c->op_seq = old->op_seq;
    c->wait_head = old->wait_head;
    c->wait_tail = old->wait_tail;
    c->nwait = old->nwait;
    c->in_state = old->in_state;
    old->ops = NULL;
    old->free_ids = NULL;
    old->in_state = NULL;
    old->ops_cap = old->nids = old->nfree = old->inflight = 0;
    old->wait_head = old->wait_tail = NULL;
    old->nwait = 0;
    /* what old delivered and the caller never acknowledged comes again */
    c->in_unacked = 0;
    for (uint32_t id = 0; c->in_state && id <= UINT16_MAX; id++) {
        if (c->in_state[id] == IN_RELEASING)
            c->in_unacked++;
        else
            c->in_state[id] = IN_FREE;
    }
    c->resumed = true;
    return 0;
}

static int by_seq(const void *a, const void *b)
{
    const mqttc_op_t *x = *(mqttc_op_t *const *)a, *y = *(mqttc_op_t *const *)b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Sent again as it was: PUBLISH with DUP, or PUBREL. */
static int resend_one(mqr_mqttc_t *c, mqttc_op_t *op)
{
    if (op->state == OP_WAIT_COMP) return mqr__mqttc_out_ack(c, MQR_MQTT_PUBREL, op->id, 0);
    uint8_t *w = mqr__mqttc_out_reserve(c, op->len);
    if (!w) return MQR_ENOMEM;
    op->data[0] |= 0x08; /* DUP (3.1.1 §3.3.1.1) */
    memcpy(w, op->data, op->len);
    mqr__mqttc_out_commit(c, op->len);
    return 0;
}

/* The server lost the session: a QoS 2 publish it had received is done,
 * the others go to the front of the queue as new ones, in their order. */
static void restart_one(mqr_mqttc_t *c, mqttc_op_t *op, mqttc_op_t ***tail)
{
    if (op->state == OP_WAIT_COMP) {
        uint64_t token = op->token;
        mqr__mqttc_id_release(c, op);
        mqr__mqttc_done(c, token, 0, 0);
        return;
    }
    id_detach(c, op);
    op->data[0] &= (uint8_t)~0x08;
    op->next = **tail;
    **tail = op;
    *tail = &op->next;
    c->nwait++;
}

int mqr__mqttc_resend(mqr_mqttc_t *c, bool session_present)
{
    size_t n = 0;
    mqttc_op_t **v = c->inflight ? malloc(c->inflight * sizeof *v) : NULL;
    if (c->inflight && !v) return MQR_ENOMEM;
    for (uint32_t id = 1; id <= c->nids && n < c->inflight; id++)
        if (c->ops[id] && c->ops[id]->kind == MQR_MQTT_PUBLISH) v[n++] = c->ops[id];
    qsort(v, n, sizeof *v, by_seq);
    int rc = 0;
    if (session_present) {
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = resend_one(c, v[i]);
    } else {
        if (c->in_state) memset(c->in_state, IN_FREE, UINT16_MAX + 1u);
        c->in_unacked = 0;
        mqttc_op_t **tail = &c->wait_head; /* in front of what waited already */
        for (size_t i = 0; i < n && c->st != MQTTC_CLOSED; i++)
            restart_one(c, v[i], &tail);
        mqttc_op_t *last = c->wait_head; /* once per reconnect */
        while (last && last->next)
            last = last->next;
        c->wait_tail = last;
    }
    free(v);
    if (rc == 0 && c->st == MQTTC_UP) mqr__mqttc_pump(c);
    return rc;
}

/* PUBACK, PUBREC, PUBCOMP for our publishes. */
int mqr__mqttc_out_ackpkt(mqr_mqttc_t *c, const mqr_mqtt_ack_t *a)
{
    mqttc_op_t *op = mqr__mqttc_id_find(c, a->packet_id);
    bool fail = a->reason >= 0x80;
    if (a->type == MQR_MQTT_PUBREC) {
        if (!op || op->kind != MQR_MQTT_PUBLISH || op->qos != 2) {
            /* 5.0 §3.6.2.1: answer an unknown id with 0x92 */
            return mqr__mqttc_out_ack(c, MQR_MQTT_PUBREL, a->packet_id,
                                      c->version == MQR_MQTT_V5 ? MQR_MQTT_RC_PACKET_ID_NOT_FOUND
                                                                : 0);
        }
        if (!fail) {
            op->state = OP_WAIT_COMP; /* a repeated PUBREC gets PUBREL again */
            return mqr__mqttc_out_ack(c, MQR_MQTT_PUBREL, op->id, 0);
        }
    } else {
        int qos = a->type == MQR_MQTT_PUBACK ? 1 : 2;
        int want = a->type == MQR_MQTT_PUBACK ? OP_WAIT_ACK : OP_WAIT_COMP;
        if (!op || op->kind != MQR_MQTT_PUBLISH || op->qos != qos || op->state != want)
            return a->type == MQR_MQTT_PUBCOMP ? 0 : MQR_EPROTOCOL; /* late PUBCOMP: harmless */
    }
    uint64_t token = op->token;
    mqr__mqttc_id_release(c, op);
    mqr__mqttc_done(c, token, fail ? MQR_EUPSTREAM : 0, a->reason);
    mqr__mqttc_pump(c);
    return 0;
}

/* ---- inbound ------------------------------------------------------------- */

/* Decides about a PUBLISH from the server: *deliver and *ack_id for the
 * message callback. A QoS 2 id not yet released is a duplicate: not
 * delivered again, its PUBREC repeated if it went out already. More
 * unacknowledged than our Receive Maximum: MQR_EPROTOCOL (5.0 §3.3.4,
 * 0x93). */
int mqr__mqttc_in_publish(mqr_mqttc_t *c, const mqr_mqtt_publish_t *p, uint32_t *ack_id,
                          bool *deliver)
{
    *ack_id = 0;
    *deliver = true;
    if (p->qos == 0) return 0;
    if (!c->in_state && !(c->in_state = calloc(UINT16_MAX + 1u, 1))) return MQR_ENOMEM;
    uint8_t *st = &c->in_state[p->packet_id];
    if (*st != IN_FREE) {
        *deliver = false;
        if (*st == IN_RELEASING) return mqr__mqttc_out_ack(c, MQR_MQTT_PUBREC, p->packet_id, 0);
        return 0; /* still with the caller: its ack answers both */
    }
    /* Receive Maximum is a 5.0 promise; a 3.1.1 server made none */
    if (c->version == MQR_MQTT_V5 &&
        c->in_unacked >= (c->receive_max ? c->receive_max : UINT16_MAX))
        return MQR_EPROTOCOL;
    *st = p->qos == 1 ? IN_QOS1 : IN_QOS2;
    c->in_unacked++;
    *ack_id = (uint32_t)p->packet_id | ((uint32_t)p->qos << 16);
    return 0;
}

int mqr__mqttc_in_pubrel(mqr_mqttc_t *c, uint16_t id)
{
    uint8_t *st = c->in_state ? &c->in_state[id] : NULL;
    if (st && *st == IN_QOS2) return MQR_EPROTOCOL; /* we never sent PUBREC */
    uint8_t reason = 0;
    if (st && *st == IN_RELEASING) {
        *st = IN_FREE;
        c->in_unacked--;
    } else if (c->version == MQR_MQTT_V5) {
        reason = MQR_MQTT_RC_PACKET_ID_NOT_FOUND; /* 5.0 §3.7.2.1 */
    }
    return mqr__mqttc_out_ack(c, MQR_MQTT_PUBCOMP, id, reason);
}

int mqr__mqttc_ack(mqr_mqttc_t *c, uint32_t ack_id)
{
    if (!c) return MQR_EINVAL;
    if (c->st != MQTTC_UP) return MQR_ENOTCONN;
    uint16_t id = (uint16_t)ack_id;
    uint32_t qos = ack_id >> 16;
    if (!c->in_state || id == 0 || qos < 1 || qos > 2 || c->in_state[id] != qos) return MQR_ENOENT;
    int rc = mqr__mqttc_out_ack(c, qos == 1 ? MQR_MQTT_PUBACK : MQR_MQTT_PUBREC, id, 0);
    if (rc) return rc;
    if (qos == 1) {
        c->in_state[id] = IN_FREE;
        c->in_unacked--;
    } else {
        c->in_state[id] = IN_RELEASING;
    }
    return 0;
}
