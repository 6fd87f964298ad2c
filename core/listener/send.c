/*
 * send.c — packets from the server to one client, encoded straight into the
 * connection's output (conn.c writes them at the end of the loop turn).
 *
 * PUBLISH is the hot path: its header is encoded in place, a small payload
 * is copied right behind it (one iovec for a whole batch), a big one is
 * referenced from the message. Nothing here decides whether a client should
 * get a message (deliver.c) or touches the socket.
 */
#include "listener_int.h"

#include "registry.h"

#include <string.h>

/* Encodes with fn (size pass, then write pass) into the output. */
#define SEND_ENCODED(c, call_with_buf, call_size)                                                  \
    do {                                                                                           \
        size_t len_;                                                                               \
        int rc_ = (call_size);                                                                     \
        if (rc_ < 0) return rc_;                                                                   \
        uint8_t *w_ = mqr__listener_out_reserve((c), len_);                                        \
        if (!w_) return MQR_ENOMEM;                                                                \
        uint8_t *buf_ = w_;                                                                        \
        size_t cap_ = len_;                                                                        \
        rc_ = (call_with_buf);                                                                     \
        if (rc_ < 0) return rc_;                                                                   \
        mqr__listener_out_commit((c), len_);                                                       \
    } while (0)

/* What is left of a message's expiry, in whole seconds (at least 1 while it
 * has not expired). */
static uint32_t expiry_left(const mqr_msg_t *m, uint64_t now)
{
    uint64_t end = m->created_ms + (uint64_t)m->expiry_s * 1000u;
    if (now >= end) return 0;
    uint64_t s = (end - now + 999) / 1000;
    return s > m->expiry_s ? m->expiry_s : (uint32_t)s;
}

/* The message's properties with Message Expiry Interval set to what is left
 * (5.0 §3.3.2.3.3), into buf; returns the length, or SIZE_MAX when they do
 * not fit (the caller sends them unchanged). */
static size_t props_with_expiry(const mqr_msg_t *m, uint32_t left, uint8_t *buf, size_t cap)
{
    mqr_mqtt_pbuild_t b;
    mqr__mqtt_pb_init(&b, buf, cap);
    mqr_mqtt_prop_iter_t it;
    mqr_mqtt_prop_t p;
    mqr__mqtt_props_iter(&it, m->props, m->props_len);
    bool done = false;
    while (mqr__mqtt_props_next(&it, &p) == 1) {
        if (p.id == MQR_MQTT_PROP_MESSAGE_EXPIRY) {
            mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_MESSAGE_EXPIRY, left);
            done = true;
        } else {
            mqr__mqtt_pb_add(&b, &p);
        }
    }
    if (!done) mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_MESSAGE_EXPIRY, left);
    size_t len;
    return mqr__mqtt_pb_finish(&b, &len) == 0 ? len : SIZE_MAX;
}

int mqr__listener_send_publish(mqr_lconn_t *c, mqr_msg_t *m, uint8_t qos, uint16_t pid, bool retain,
                               bool dup, const uint32_t *sub_ids, uint32_t n_ids)
{
    mqr_mqtt_publish_t p;
    p.qos = qos;
    p.dup = dup;
    p.retain = retain;
    p.packet_id = pid;
    p.topic.p = m->topic;
    p.topic.len = m->topic_len;
    if (c->mount && m->topic_len > c->mount_len && memcmp(m->topic, c->mount, c->mount_len) == 0) {
        /* a tenant's client sees its topics without the mountpoint */
        p.topic.p += c->mount_len;
        p.topic.len = (uint16_t)(m->topic_len - c->mount_len);
    }
    p.props.p = NULL;
    p.props.len = 0;
    p.payload.p = m->payload;
    p.payload.len = m->payload_len;
    p.add_topic_alias = 0;
    p.add_sub_ids = NULL;
    p.n_add_sub_ids = 0;
    uint8_t pbuf[512];
    if (c->version == MQR_MQTT_V5) {
        p.props.p = m->props;
        p.props.len = m->props_len;
        /* 5.0 §3.3.4: one copy for several subscriptions carries each of
         * their identifiers (the property repeats) */
        p.add_sub_ids = sub_ids;
        p.n_add_sub_ids = n_ids;
        if (m->expiry_s) {
            uint64_t now = mqr__now_ms();
            if (now >= m->created_ms + 1000u) {
                uint32_t left = expiry_left(m, now);
                if (left == 0) {
                    c->l->stats.expired++;
                    return MQR_ENOENT;
                }
                size_t n = props_with_expiry(m, left, pbuf, sizeof pbuf);
                if (n != SIZE_MAX) {
                    p.props.p = pbuf;
                    p.props.len = (uint32_t)n;
                }
            }
        }
    }
    /* an alias for a topic this client has seen; a new one while any are left */
    uint32_t alias_hash = 0;
    bool alias_new = false;
    if (c->out_alias.max) {
        p.add_topic_alias =
            mqr__mqtt_alias_out_find(&c->out_alias, p.topic.p, p.topic.len, &alias_hash);
        if (p.add_topic_alias) {
            p.topic.len = 0;
        } else {
            p.add_topic_alias = mqr__mqtt_alias_out_next(&c->out_alias);
            alias_new = p.add_topic_alias != 0;
        }
    }
    bool copy = m->payload_len <= MQR_LSN_COPY_MAX;
    /* generous bound of the header: fixed header 5, topic 2 + len, packet id
     * 2, property length 4 + props, a topic alias 3, 5 per subscription id */
    const char *alias_topic = p.topic.p;
    size_t alias_len = p.topic.len;
    size_t bound =
        16 + 5 * p.n_add_sub_ids + (size_t)m->topic_len + p.props.len + (copy ? m->payload_len : 0);
    uint8_t *w = mqr__listener_out_reserve(c, bound);
    if (!w) return MQR_ENOMEM;
    size_t head;
    int rc = mqr__mqtt_encode_publish_head(&p, c->version, w, bound, &head);
    if (rc < 0) return rc;
    size_t total = head + m->payload_len;
    if (c->peer_max_packet && total > c->peer_max_packet) {
        /* 5.0 §3.1.2.11.4: the client will never see it; nothing committed */
        c->l->stats.dropped_too_large++;
        MQR_LOG_D(MQR_LSN_LOG, "%s: %zu-byte PUBLISH on %s exceeds its maximum packet size %u",
                  c->client_id, total, m->topic, c->peer_max_packet);
        return MQR_ETOOLARGE;
    }
    if (copy) {
        memcpy(w + head, m->payload, m->payload_len);
        mqr__listener_out_commit(c, total);
    } else {
        mqr__listener_out_commit(c, head);
        rc = mqr__listener_out_payload(c, m);
        if (rc < 0) return rc;
    }
    if (alias_new)
        mqr__mqtt_alias_out_remember(&c->out_alias, p.add_topic_alias, alias_topic, alias_len,
                                     alias_hash);
    c->l->stats.msgs_out++;
    if (c->device) mqr__device_count_out(c->device, total);
    MQR_LOG_D(MQR_LSN_LOG, "%s -> PUBLISH %s q%u%s id %u (%u bytes)", c->client_id, m->topic, qos,
              retain ? " retained" : "", pid, m->payload_len);
    return 0;
}

int mqr__listener_send_connack(mqr_lconn_t *c, int version, bool session_present, uint8_t reason,
                               const uint8_t *props, size_t props_len)
{
    mqr_mqtt_connack_t a;
    memset(&a, 0, sizeof a);
    a.session_present = session_present;
    a.reason = reason;
    a.props.p = props;
    a.props.len = (uint32_t)props_len;
    SEND_ENCODED(c, mqr__mqtt_encode_connack(&a, version, buf_, cap_, &len_),
                 mqr__mqtt_encode_connack(&a, version, NULL, 0, &len_));
    MQR_LOG_D(MQR_LSN_LOG, "%s -> CONNACK 0x%02X", mqr__lconn_name(c), reason);
    return 0;
}

/* Words for the failure reasons the listener sends, as a v5 Reason String
 * (5.0 §3.4.2.2.2 and alike), so a client's logs say more than a number. */
static const char *reason_text(uint8_t reason)
{
    switch (reason) {
    case MQR_MQTT_RC_UNSPECIFIED:
        return "the server could not handle the message";
    case MQR_MQTT_RC_IMPL_SPECIFIC:
        return "refused by the server's rules";
    case MQR_MQTT_RC_NOT_AUTHORIZED:
        return "not authorized";
    case MQR_MQTT_RC_TOPIC_FILTER_INVALID:
        return "topic filter invalid";
    case MQR_MQTT_RC_TOPIC_NAME_INVALID:
        return "topic name invalid";
    case MQR_MQTT_RC_PACKET_ID_IN_USE:
        return "packet identifier in use";
    case MQR_MQTT_RC_PACKET_ID_NOT_FOUND:
        return "packet identifier not found";
    case MQR_MQTT_RC_QUOTA_EXCEEDED:
        return "quota exceeded";
    case MQR_MQTT_RC_PAYLOAD_FORMAT_INVALID:
        return "payload format invalid";
    case MQR_MQTT_RC_QOS_NOT_SUPPORTED:
        return "QoS not supported";
    case MQR_MQTT_RC_SHARED_SUB_NOT_SUPPORTED:
        return "shared subscriptions not supported";
    case MQR_MQTT_RC_SUB_ID_NOT_SUPPORTED:
        return "subscription identifiers not supported";
    case MQR_MQTT_RC_WILDCARD_SUB_NOT_SUPPORTED:
        return "wildcard subscriptions not supported";
    default:
        return NULL;
    }
}

/* A Reason String property for a failure, into buf; its length, or 0 when
 * the client asked for no problem information or there is nothing to say. */
static size_t reason_props(const mqr_lconn_t *c, uint8_t reason, uint8_t *buf, size_t cap)
{
    const char *text = reason >= 0x80 && c->problem_info ? reason_text(reason) : NULL;
    if (!text) return 0;
    mqr_mqtt_pbuild_t b;
    mqr__mqtt_pb_init(&b, buf, cap);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_REASON_STRING, text, strlen(text));
    size_t len;
    if (mqr__mqtt_pb_finish(&b, &len) < 0) return 0;
    /* never beyond what the client accepts (5.0 §3.4.2.2.2) */
    return c->peer_max_packet && len + 8 > c->peer_max_packet ? 0 : len;
}

int mqr__listener_send_ack(mqr_lconn_t *c, uint8_t type, uint16_t pid, uint8_t reason)
{
    mqr_mqtt_ack_t a;
    memset(&a, 0, sizeof a);
    a.type = type;
    a.packet_id = pid;
    a.reason = c->version == MQR_MQTT_V5 ? reason : 0;
    uint8_t props[96];
    if (c->version == MQR_MQTT_V5) {
        a.props.len = (uint32_t)reason_props(c, reason, props, sizeof props);
        if (a.props.len) a.props.p = props;
    }
    /* at most 4 bytes, or 5 + the reason string: no size pass needed */
    size_t cap = 8 + a.props.len;
    uint8_t *w = mqr__listener_out_reserve(c, cap);
    if (!w) return MQR_ENOMEM;
    size_t len;
    int rc = mqr__mqtt_encode_ack(&a, c->version, w, cap, &len);
    if (rc < 0) return rc;
    mqr__listener_out_commit(c, len);
    MQR_LOG_D(MQR_LSN_LOG, "%s -> %s id %u 0x%02X", mqr__lconn_name(c),
              mqr__listener_type_name(type), pid, reason);
    return 0;
}

int mqr__listener_send_suback(mqr_lconn_t *c, uint16_t pid, const uint8_t *codes, size_t n)
{
    mqr_mqtt_suback_t a;
    memset(&a, 0, sizeof a);
    a.packet_id = pid;
    a.codes = codes;
    a.count = (uint32_t)n;
    uint8_t props[96];
    for (size_t i = 0; c->version == MQR_MQTT_V5 && i < n; i++) {
        if (codes[i] < 0x80) continue;
        a.props.len = (uint32_t)reason_props(c, codes[i], props, sizeof props);
        if (a.props.len) a.props.p = props;
        break; /* one reason string: the first failure's */
    }
    SEND_ENCODED(c, mqr__mqtt_encode_suback(&a, c->version, buf_, cap_, &len_),
                 mqr__mqtt_encode_suback(&a, c->version, NULL, 0, &len_));
    MQR_LOG_D(MQR_LSN_LOG, "%s -> SUBACK id %u (%zu)", c->client_id, pid, n);
    return 0;
}

int mqr__listener_send_unsuback(mqr_lconn_t *c, uint16_t pid, const uint8_t *codes, size_t n)
{
    mqr_mqtt_unsuback_t a;
    memset(&a, 0, sizeof a);
    a.packet_id = pid;
    if (c->version == MQR_MQTT_V5) {
        a.codes = codes;
        a.count = (uint32_t)n;
    }
    SEND_ENCODED(c, mqr__mqtt_encode_unsuback(&a, c->version, buf_, cap_, &len_),
                 mqr__mqtt_encode_unsuback(&a, c->version, NULL, 0, &len_));
    MQR_LOG_D(MQR_LSN_LOG, "%s -> UNSUBACK id %u", c->client_id, pid);
    return 0;
}

int mqr__listener_send_pingresp(mqr_lconn_t *c)
{
    uint8_t *w = mqr__listener_out_reserve(c, 2);
    if (!w) return MQR_ENOMEM;
    w[0] = MQR_MQTT_PINGRESP << 4;
    w[1] = 0;
    mqr__listener_out_commit(c, 2);
    return 0;
}

int mqr__listener_send_disconnect(mqr_lconn_t *c, uint8_t reason)
{
    if (c->version != MQR_MQTT_V5) return 0; /* 3.1.1 servers just close */
    mqr_mqtt_disconnect_t d;
    memset(&d, 0, sizeof d);
    d.reason = reason;
    /* say why in words too (5.0 §3.14.2.2.3), unless that would make the
     * packet bigger than the client accepts */
    uint8_t props[256];
    if (c->close_why) {
        size_t n = strlen(c->close_why);
        mqr_mqtt_pbuild_t b;
        mqr__mqtt_pb_init(&b, props, sizeof props);
        mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_REASON_STRING, c->close_why, n < 200 ? n : 200);
        size_t plen;
        if (mqr__mqtt_pb_finish(&b, &plen) == 0 &&
            (!c->peer_max_packet || plen + 8 <= c->peer_max_packet)) {
            d.props.p = props;
            d.props.len = (uint32_t)plen;
        }
    }
    SEND_ENCODED(c, mqr__mqtt_encode_disconnect(&d, c->version, buf_, cap_, &len_),
                 mqr__mqtt_encode_disconnect(&d, c->version, NULL, 0, &len_));
    MQR_LOG_D(MQR_LSN_LOG, "%s -> DISCONNECT 0x%02X", mqr__lconn_name(c), reason);
    return 0;
}
