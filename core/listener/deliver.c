/*
 * deliver.c — what one client gets of a routed message, and the outbound
 * QoS 1/2 flow: packet ids, the in-flight window, the queue behind it, and
 * backpressure on the publishers that fill it.
 *
 * Overlapping subscriptions: when several non-shared subscriptions of one
 * client match a message, the router hands them over in one call
 * (deliver_set) and the client gets ONE copy, at the highest QoS among them
 * (at most the message's), carrying every Subscription Identifier they
 * have (5.0 §3.3.4 allows one copy or one per subscription; 3.1.1 §3.3.5
 * asks for the highest QoS either way). One copy is what clients expect:
 * two would look like a duplicate to the application. A share group's pick
 * is a delivery of its own (5.0 §4.8.2). The single-subscription case, the
 * common one, still goes through deliver() untouched.
 *
 * Limits: the window is min(the client's Receive Maximum, max_inflight).
 * An accepted QoS 1/2 message is never dropped for a full queue: past
 * max_queued it is queued anyway and the connection whose PUBLISH is being
 * routed (l->publisher) stops being read until this queue drains below
 * half, so the overshoot is bounded by what the paused publishers had
 * already sent; a safety cap of 64 x max_queued (messages that come from
 * no pausable client: Lua, upstream sessions) drops and counts. A client
 * that holds publishers paused and frees no in-flight room for
 * stuck_timeout_ms is disconnected (conn.c's tick). QoS 0 never waits in a
 * queue: it goes into the output or, past max_out_bytes of waiting output,
 * is dropped and counted. For a persistent session every QoS 1/2 delivery
 * is also a store row (client_session.c reads them back); deliver() tells the
 * router whether it wrote one or the store refused it, which decides the
 * publisher's acknowledgement. Nothing here touches the socket.
 */
#include "listener_int.h"

#include "store_client_sessions.h"

#include <stdlib.h>
#include <string.h>

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

mqr_lqs_t *mqr__listener_qstate(mqr_lconn_t *c)
{
    if (!c->qs) c->qs = calloc(1, sizeof *c->qs);
    return c->qs;
}

void mqr__listener_qstate_free(mqr_lconn_t *c)
{
    mqr_lqs_t *q = c->qs;
    if (!q) return;
    free(q->inflight);
    free(q->queue);
    free(q->acks);
    free(q->qos2_ids);
    mqr__holds_free(&q->holds);
    free(q);
    c->qs = NULL;
}

/* Only with c->qs allocated. */
static inline mqr_ldelivery_t *slot(const mqr_lconn_t *c, uint32_t i)
{
    const mqr_lqs_t *q = c->qs;
    return &q->inflight[(q->if_head + i) % c->if_cap];
}

static uint16_t next_pid(mqr_lconn_t *c)
{
    /* Ids go round in order and at most if_cap (<= 1024) are in flight, so
     * the next one is never still in use. */
    c->next_pid = c->next_pid == 65535 ? 1 : (uint16_t)(c->next_pid + 1);
    return c->next_pid;
}

/* ---- store rows of a persistent session ------------------------------------ */

/* 0 (no row to keep), MQR_DELIVER_STORED (the publisher's ack waits for the
 * commit) or the store's error: then d has no row (seq 0), and later state
 * changes do not try to update one. */
static int row_put(mqr_lconn_t *c, mqr_ldelivery_t *d)
{
    mqr_listener_t *l = c->l;
    if (!c->persistent || !l->sstore) return 0;
    d->seq = ++c->qs->next_seq;
    uint32_t nids;
    const uint32_t *ids = mqr__ldelivery_ids(d, &nids);
    int rc =
        mqr__store_client_session_msg_put(l->sstore, c->client_id, c->client_id_len, d->seq, d->msg,
                                          d->qos, d->retain, ids, nids, d->pid, d->state);
    if (rc < 0) {
        d->seq = 0;
        mqr__client_session_row_failed(l, c->client_id, rc);
        return rc;
    }
    return MQR_DELIVER_STORED;
}

/* A failed update or delete acknowledges nothing: after a restart the row
 * is sent again as it was (a duplicate QoS 1/2 allows), so it is only
 * counted and logged. */
static void row_state(mqr_lconn_t *c, const mqr_ldelivery_t *d)
{
    if (!d->seq || !c->l->sstore) return;
    int rc = mqr__store_client_session_msg_state(c->l->sstore, c->client_id, c->client_id_len,
                                                 d->seq, d->pid, d->state);
    if (rc < 0) mqr__client_session_row_failed(c->l, c->client_id, rc);
}

static void row_delete(mqr_lconn_t *c, const mqr_ldelivery_t *d)
{
    if (!d->seq || !c->l->sstore || !c->persistent) return;
    int rc =
        mqr__store_client_session_msg_delete(c->l->sstore, c->client_id, c->client_id_len, d->seq);
    if (rc < 0) mqr__client_session_row_failed(c->l, c->client_id, rc);
}

/* ---- the window and the queue -------------------------------------------------- */

/* Only with c->qs allocated. */
static int ensure_ring(mqr_lconn_t *c)
{
    mqr_lqs_t *q = c->qs;
    if (q->inflight) return 0;
    q->inflight = calloc(c->if_cap, sizeof *q->inflight);
    return q->inflight ? 0 : MQR_ENOMEM;
}

/* Sends d (its reference moves into the window on success). Returns < 0
 * when it was not sent; else, for a fresh one, *row is row_put's result. */
static int start_inflight(mqr_lconn_t *c, mqr_ldelivery_t d, bool fresh, int *row)
{
    int rc = ensure_ring(c);
    if (rc < 0) return rc;
    d.pid = next_pid(c);
    uint32_t nids;
    const uint32_t *ids = mqr__ldelivery_ids(&d, &nids);
    rc = mqr__listener_send_publish(c, d.msg, d.qos, d.pid, d.retain, false, ids, nids);
    if (rc < 0) return rc;
    d.state = d.qos == 1 ? MQR_LQ_WAIT_PUBACK : MQR_LQ_WAIT_PUBREC;
    if (fresh)
        *row = row_put(c, &d);
    else
        row_state(c, &d);
    *slot(c, c->qs->if_span) = d;
    c->qs->if_span++;
    c->qs->if_live++;
    return 0;
}

static int queue_push(mqr_lqs_t *s, const mqr_ldelivery_t *d)
{
    if (s->q_count == s->q_cap) {
        uint32_t cap = s->q_cap ? s->q_cap * 2 : 16;
        mqr_ldelivery_t *q = malloc(cap * sizeof *q);
        if (!q) return MQR_ENOMEM;
        for (uint32_t i = 0; i < s->q_count; i++)
            q[i] = s->queue[(s->q_head + i) & (s->q_cap - 1)];
        free(s->queue);
        s->queue = q;
        s->q_cap = cap;
        s->q_head = 0;
    }
    s->queue[(s->q_head + s->q_count) & (s->q_cap - 1)] = *d;
    s->q_count++;
    return 0;
}

/* Pauses the publisher being routed until c's queue drains. */
static void hold_publisher(mqr_lconn_t *c)
{
    mqr_listener_t *l = c->l;
    mqr_lconn_t *p = l->publisher;
    mqr_lqs_t *q = c->qs;
    /* never c itself (its input carries the acks that drain it), nor a
     * publisher whose own queue is full (two such clients publishing to
     * each other would wait on each other for ever) */
    if (!p || p == c || p->state != MQR_LCONN_ACTIVE ||
        (p->qs && p->qs->q_count >= l->opts.max_queued))
        return;
    bool first = q->holds.n == 0;
    /* not held (no memory): the safety cap still bounds the queue */
    if (mqr__holds_add(&q->holds, &p->src) != 1) return;
    if (first) q->progress_ms = uv_now(l->all->loop);
    l->stats.publishers_paused++;
    MQR_LOG_D(MQR_LSN_LOG, "%s: queue of %s full, pausing its input", p->client_id, c->client_id);
}

void mqr__listener_waiters_release(mqr_lconn_t *c)
{
    mqr_lqs_t *q = c->qs;
    if (!q) return;
    if (c->state == MQR_LCONN_CLOSING)
        mqr__holds_free(&q->holds);
    else
        mqr__holds_release(&q->holds);
}

/* Moves queued messages into the window while it has room. */
static void pump(mqr_lconn_t *c)
{
    mqr_lqs_t *q = c->qs;
    while (q->q_count && q->if_span < c->if_cap && c->state == MQR_LCONN_ACTIVE) {
        mqr_ldelivery_t d = q->queue[q->q_head];
        q->q_head = (q->q_head + 1) & (q->q_cap - 1);
        q->q_count--;
        if (expired(d.msg)) {
            c->l->stats.expired++;
        } else if (start_inflight(c, d, false, NULL) == 0) {
            continue; /* the reference moved into the window */
        }
        row_delete(c, &d); /* expired, or cannot be sent: skipped */
        mqr__ldelivery_free(&d);
    }
    if (q->holds.n && q->q_count <= c->l->opts.max_queued / 2) mqr__listener_waiters_release(c);
}

int mqr__ldelivery_set_ids(mqr_ldelivery_t *d, const uint32_t *ids, uint32_t n)
{
    d->sub_ids = NULL;
    d->sub_id = n ? ids[0] : 0;
    if (n <= 1) return 0;
    d->sub_id = 0;
    d->sub_ids = malloc((n + 1) * sizeof *d->sub_ids);
    if (!d->sub_ids) return MQR_ENOMEM;
    d->sub_ids[0] = n;
    memcpy(d->sub_ids + 1, ids, n * sizeof *ids);
    return 0;
}

void mqr__ldelivery_free(mqr_ldelivery_t *d)
{
    if (d->msg) mqr_msg_unref(d->msg);
    d->msg = NULL;
    free(d->sub_ids);
    d->sub_ids = NULL;
}

int mqr__listener_send_message(mqr_lconn_t *c, mqr_msg_t *msg, uint8_t qos, bool retain,
                               const uint32_t *sub_ids, uint32_t n_ids)
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
        return mqr__listener_send_publish(c, msg, 0, 0, retain, false, sub_ids, n_ids);
    }
    mqr_lqs_t *q = mqr__listener_qstate(c);
    if (!q) return MQR_ENOMEM;
    mqr_ldelivery_t d = {.msg = msg, .qos = qos, .retain = retain};
    if (mqr__ldelivery_set_ids(&d, sub_ids, n_ids) < 0) return MQR_ENOMEM;
    if (q->q_count == 0 && q->if_span < c->if_cap) {
        int row = 0;
        int rc = start_inflight(c, d, true, &row);
        if (rc < 0) {
            free(d.sub_ids);
            return rc;
        }
        mqr_msg_ref(msg);
        return row;
    }
    if (q->q_count >= l->opts.max_queued) {
        if (q->q_count >= 64u * l->opts.max_queued) {
            l->stats.dropped++;
            free(d.sub_ids);
            return MQR_EFULL;
        }
        hold_publisher(c);
    }
    int rc = queue_push(q, &d);
    if (rc < 0) {
        free(d.sub_ids);
        return rc;
    }
    mqr_msg_ref(msg);
    return row_put(c, &q->queue[(q->q_head + q->q_count - 1) & (q->q_cap - 1)]);
}

int mqr__listener_deliver(mqr_subscriber_t *self, mqr_msg_t *msg, const mqr_trie_entry_t *entry)
{
    mqr_lconn_t *c = (mqr_lconn_t *)self;
    if (c->state != MQR_LCONN_ACTIVE) return 0;
    const mqr_sub_opts_t *o = &entry->opts;
    if (o->no_local && msg->origin_conn == c) return 0;
    uint8_t qos = msg->qos < o->qos ? msg->qos : o->qos;
    /* 3.1.1 §3.3.1.3: a forwarded message goes out with RETAIN 0; v5 keeps it
     * when the subscription asked for Retain As Published */
    bool retain = o->retain_as_published && msg->retain;
    int rc = mqr__listener_send_message(c, msg, qos, retain, &o->subscription_id,
                                        o->subscription_id != 0);
    /* what the specifications let a server drop (expired, over the client's
     * Maximum Packet Size) and QoS 0 over max_out_bytes are counted drops,
     * not refusals; anything else a QoS 1/2 copy could not get is */
    if (rc == MQR_ENOENT || rc == MQR_ETOOLARGE || (rc < 0 && qos == 0)) return 0;
    return rc;
}

int mqr__listener_merge(const void *origin, const mqr_msg_t *msg, mqr_trie_entry_t *const *entries,
                        size_t n, uint8_t *qos, bool *retain, uint32_t **ids, uint32_t *n_ids)
{
    *qos = 0;
    *retain = false;
    *ids = NULL;
    *n_ids = 0;
    bool any = false;
    uint32_t *v = NULL;
    uint32_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const mqr_sub_opts_t *o = &entries[i]->opts;
        /* 5.0 §3.8.3.1: a No Local subscription never sends a client its own
         * message, so it has no say in the copy the others get */
        if (o->no_local && origin && msg->origin_conn == origin) continue;
        any = true;
        if (o->qos > *qos) *qos = o->qos;
        /* 5.0 §3.3.1.3: RETAIN is kept for a Retain As Published
         * subscription and cleared for the others; one copy cannot do both,
         * and keeping it tells the RAP subscription the truth, while a
         * client that asked for RAP on any filter expects the flag */
        if (o->retain_as_published && msg->retain) *retain = true;
        if (!o->subscription_id) continue;
        bool seen = false;
        for (uint32_t j = 0; j < k && !seen; j++)
            seen = v[j] == o->subscription_id;
        if (seen) continue;
        if (!v && !(v = malloc(n * sizeof *v))) return MQR_ENOMEM;
        v[k++] = o->subscription_id;
    }
    if (!any) {
        free(v);
        return 1;
    }
    /* 3.1.1 §3.3.5, 5.0 §3.3.4: at the highest QoS of the matching
     * subscriptions, and never above the message's own */
    if (msg->qos < *qos) *qos = msg->qos;
    *ids = v;
    *n_ids = k;
    return 0;
}

int mqr__listener_deliver_set(mqr_subscriber_t *self, mqr_msg_t *msg,
                              mqr_trie_entry_t *const *entries, size_t n)
{
    mqr_lconn_t *c = (mqr_lconn_t *)self;
    if (c->state != MQR_LCONN_ACTIVE) return 0;
    uint8_t qos;
    bool retain;
    uint32_t *ids, nids;
    int rc = mqr__listener_merge(c, msg, entries, n, &qos, &retain, &ids, &nids);
    if (rc == 1) return 0;
    if (rc < 0) return msg->qos ? rc : 0;
    rc = mqr__listener_send_message(c, msg, qos, retain, ids, nids);
    free(ids);
    if (rc == MQR_ENOENT || rc == MQR_ETOOLARGE || (rc < 0 && qos == 0)) return 0;
    return rc;
}

/* ---- acknowledgements from the client ------------------------------------ */

static mqr_ldelivery_t *find(mqr_lconn_t *c, uint16_t pid, uint8_t state)
{
    if (!c->qs) return NULL;
    /* acks come in order (4.6), so this is nearly always the first one */
    for (uint32_t i = 0; i < c->qs->if_span; i++) {
        mqr_ldelivery_t *d = slot(c, i);
        if (d->pid == pid && d->state == state) return d;
    }
    return NULL;
}

/* Ends d's flow; the slot stays a hole until compact(). */
static void drop_slot(mqr_lconn_t *c, mqr_ldelivery_t *d)
{
    row_delete(c, d);
    mqr__ldelivery_free(d);
    d->state = MQR_LQ_FREE;
    d->seq = 0;
    c->qs->if_live--;
}

static void compact(mqr_lconn_t *c)
{
    mqr_lqs_t *q = c->qs;
    while (q->if_span && slot(c, 0)->state == MQR_LQ_FREE) {
        q->if_head = (q->if_head + 1) % c->if_cap;
        q->if_span--;
    }
}

static void release(mqr_lconn_t *c, mqr_ldelivery_t *d)
{
    drop_slot(c, d);
    c->qs->progress_ms = uv_now(c->l->all->loop);
    compact(c);
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
        row_state(c, d);
        c->qs->progress_ms = uv_now(c->l->all->loop);
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
    mqr_lqs_t *q = c->qs;
    if (!q) return;
    for (uint32_t i = 0; i < q->if_span; i++) {
        mqr_ldelivery_t *d = slot(c, i);
        mqr__ldelivery_free(d);
        d->state = MQR_LQ_FREE;
    }
    q->if_head = q->if_span = q->if_live = 0;
    for (uint32_t i = 0; i < q->q_count; i++)
        mqr__ldelivery_free(&q->queue[(q->q_head + i) & (q->q_cap - 1)]);
    q->q_head = q->q_count = 0;
    mqr__listener_waiters_release(c);
}

/* ---- a session moving between connections -------------------------------------- */

int mqr__listener_deliveries_take(mqr_lconn_t *c, mqr_ldelivery_t **out, uint32_t *n)
{
    *out = NULL;
    *n = 0;
    mqr_lqs_t *q = c->qs;
    if (!q) return 0;
    uint32_t total = q->if_live + q->q_count;
    if (!total) return 0;
    mqr_ldelivery_t *d = malloc(total * sizeof *d);
    if (!d) return MQR_ENOMEM;
    uint32_t k = 0;
    for (uint32_t i = 0; i < q->if_span; i++) {
        mqr_ldelivery_t *s = slot(c, i);
        if (s->state == MQR_LQ_FREE) continue;
        d[k++] = *s;
        s->msg = NULL;
        s->sub_ids = NULL;
        s->state = MQR_LQ_FREE;
    }
    for (uint32_t i = 0; i < q->q_count; i++)
        d[k++] = q->queue[(q->q_head + i) & (q->q_cap - 1)];
    q->if_head = q->if_span = q->if_live = 0;
    q->q_head = q->q_count = 0;
    *out = d;
    *n = k;
    return 0;
}

int mqr__listener_deliveries_give(mqr_lconn_t *c, mqr_ldelivery_t *d, uint32_t n)
{
    uint32_t nif = 0;
    while (nif < n && d[nif].pid && d[nif].state != MQR_LQ_FREE)
        nif++;
    /* what was in flight goes again with its ids even if the new window is
     * smaller (a v5 client that lowered its Receive Maximum across the
     * reconnect): the ring, and so the window, stays that big for this
     * connection */
    if (nif > c->if_cap) c->if_cap = nif;
    mqr_lqs_t *q = n ? mqr__listener_qstate(c) : c->qs;
    if (!q) {
        for (uint32_t i = 0; i < n; i++)
            mqr__ldelivery_free(&d[i]);
        return n ? MQR_ENOMEM : 0;
    }
    free(q->inflight);
    q->inflight = NULL;
    int rc = ensure_ring(c);
    for (uint32_t i = 0; i < n; i++) {
        if (rc == 0 && i < nif) {
            q->inflight[i] = d[i];
            continue;
        }
        d[i].pid = 0;
        d[i].state = MQR_LQ_FREE;
        if (rc == 0) rc = queue_push(q, &d[i]);
        if (rc < 0) mqr__ldelivery_free(&d[i]);
    }
    if (rc == 0) {
        q->if_head = 0;
        q->if_span = q->if_live = nif;
    }
    return rc;
}

void mqr__listener_deliveries_resend(mqr_lconn_t *c)
{
    /* 3.1.1 §4.4, 5.0 §4.4: unacknowledged PUBLISH again with DUP=1 and the
     * same ids, PUBREL for the released ones, in their order, before new
     * messages */
    if (!c->qs) return;
    for (uint32_t i = 0; i < c->qs->if_span && c->state == MQR_LCONN_ACTIVE; i++) {
        mqr_ldelivery_t *d = slot(c, i);
        if (d->state == MQR_LQ_FREE) continue;
        if (d->state == MQR_LQ_WAIT_PUBCOMP) {
            mqr__listener_send_ack(c, MQR_MQTT_PUBREL, d->pid, 0);
            continue;
        }
        uint32_t nids;
        const uint32_t *ids = mqr__ldelivery_ids(d, &nids);
        int rc = mqr__listener_send_publish(c, d->msg, d->qos, d->pid, d->retain, true, ids, nids);
        if (rc < 0) drop_slot(c, d); /* expired, or too big now: the flow ends */
    }
    compact(c);
    pump(c);
}
