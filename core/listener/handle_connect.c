/*
 * handle_connect.c — CONNECT from a new connection: refuse it with the right
 * CONNACK code, or accept it (client id, takeover, limits, will) and answer
 * CONNACK 0.
 *
 * A session that asked to persist (3.1.1 Clean Session 0, v5 Session
 * Expiry Interval > 0) is resumed by Clean Start 0 (CONNACK Session Present
 * 1, then what was in flight goes again) or ended by Clean Start 1; see
 * client_session.c. Who may connect is handle_auth.c's to say (credentials, SCRAM,
 * anonymous rule, hooks); it may answer later and call this again with a
 * copy of the packet. It must not route anything but the will, and only
 * through conn.c when the connection ends.
 */
#include "listener_int.h"

#include "auth.h"
#include "topic.h"

#include <stdlib.h>
#include <string.h>

static int refuse(mqr_lconn_t *c, int version, uint8_t code, const char *why)
{
    c->l->stats.connects_refused++;
    MQR_LOG_I(MQR_LSN_LOG, "connection from %s refused: %s (CONNACK 0x%02X, MQTT %s)", c->addr, why,
              code, version == MQR_MQTT_V5 ? "5.0" : "3.1.1");
    c->version = (uint8_t)version;
    if (mqr__listener_send_connack(c, version, false, code, NULL, 0) < 0) {
        mqr__listener_conn_close(c, MQR_LCLOSE_HARD, 0, why);
        return 0;
    }
    mqr__listener_conn_close(c, MQR_LCLOSE_FLUSH, 0, why);
    return 0;
}

static mqr_msg_t *will_new(mqr_lconn_t *c, mqr_mqtt_connect_t *k)
{
    char tbuf[256], *heap = NULL;
    const char *topic = k->will_topic.p;
    size_t tlen = k->will_topic.len;
    if (c->mount) {
        /* a tenant's will goes where its publishes go */
        topic = mqr__listener_mount(c, topic, tlen, false, tbuf, sizeof tbuf, &heap, &tlen);
        if (!topic) return NULL;
    }
    size_t plen = 0;
    if (k->will_props.len)
        plen =
            mqr__mqtt_props_strip(k->will_props.p, k->will_props.len, (uint8_t *)k->will_props.p);
    mqr_msg_init_t in = {
        .topic = topic,
        .topic_len = tlen,
        .payload = k->will_payload.p,
        .payload_len = k->will_payload.len,
        .props = plen ? k->will_props.p : NULL,
        .props_len = plen,
        .qos = k->will_qos,
        .retain = k->will_retain,
        .origin = MQR_ORIGIN_LISTENER,
        .origin_name = c->client_id,
        /* the connection is gone when the will is published: no-local has
         * nothing to compare with */
        .origin_conn = NULL,
        .expiry_s = k->will_has_expiry ? k->will_expiry : 0,
    };
    mqr_msg_t *m = tlen <= MQR_TOPIC_MAX_LEN ? mqr__msg_new(&in) : NULL;
    free(heap);
    return m;
}

int mqr__listener_handle_connect(mqr_lconn_t *c, uint8_t *pkt, size_t len)
{
    mqr_listener_t *l = c->l;
    mqr_mqtt_connect_t k;
    int rc = mqr__mqtt_decode_connect(pkt, len, &k);
    if (rc < 0) {
        int version;
        uint8_t code;
        if (!k.version_unsupported && !k.client_id_rejected) l->stats.malformed++;
        if (mqr__mqtt_connect_refusal(rc, &k, &version, &code)) {
            const char *why = k.version_unsupported  ? "unsupported protocol version"
                              : k.client_id_rejected ? "empty client id without clean session"
                                                     : "bad CONNECT";
            return refuse(c, version, code, why);
        }
        l->stats.connects_refused++;
        MQR_LOG_I(MQR_LSN_LOG, "connection from %s: bad CONNECT (%s), closing", c->addr,
                  mqr_strerror(rc));
        mqr__listener_conn_close(c, MQR_LCLOSE_HARD, 0, "bad CONNECT");
        return 0;
    }
    bool v5 = k.version == MQR_MQTT_V5;
    if (c->over_limit) {
        /* beyond max_connections (server.c let a few through to say so) */
        return refuse(c, k.version, v5 ? MQR_MQTT_RC_QUOTA_EXCEEDED : 0x03, "too many connections");
    }
    if (k.has_will && k.will_qos > l->opts.max_qos) {
        l->stats.qos_exceeded++;
        /* 5.0 §3.2.2.3.4: a will QoS the server cannot honour is refused;
         * 3.1.1 has no way to say so: its will goes out at max_qos */
        if (v5)
            return refuse(c, k.version, MQR_MQTT_RC_QOS_NOT_SUPPORTED, "will QoS above max_qos");
        k.will_qos = (uint8_t)l->opts.max_qos;
    }

    char assigned[24];
    bool was_assigned = k.client_id.len == 0;
    const char *id = k.client_id.p;
    size_t id_len = k.client_id.len;
    if (was_assigned) {
        /* 3.1.1 §3.1.3.1 (clean session only, the decoder checked) and
         * 5.0 §3.1.3.1: the server picks a unique one */
        mqr__listener_id_assign(l, assigned);
        id = assigned;
        id_len = strlen(assigned);
    }
    c->client_id = malloc(id_len + 1);
    if (!c->client_id) return refuse(c, k.version, MQR_MQTT_RC_SERVER_UNAVAILABLE, "out of memory");
    memcpy(c->client_id, id, id_len);
    c->client_id[id_len] = '\0';
    c->client_id_len = id_len;
    if (memchr(c->client_id, '\0', id_len)) {
        /* the decoder refuses U+0000 in strings; keep the map's keys clean anyway */
        free(c->client_id);
        c->client_id = NULL;
        return refuse(c, k.version, MQR_MQTT_RC_CLIENT_ID_INVALID, "client id with NUL");
    }
    c->version = k.version;

    /* before any takeover: an unproven client must not end a session */
    int arc = mqr__listener_auth_connect(c, &k, pkt, len);
    if (arc == 1) {
        /* answered later (handle_auth.c calls us again); the id is made again */
        free(c->client_id);
        c->client_id = NULL;
        return 0;
    }
    if (arc > 1)
        return refuse(c, k.version, v5 ? (uint8_t)arc : mqr__mqtt_connack_v3_code((uint8_t)arc),
                      "not authenticated");
    /* a tenant's user: its topics live under the tenant's mountpoint */
    if (mqr__listener_tenant_connect(c) < 0)
        return refuse(c, k.version, MQR_MQTT_RC_SERVER_UNAVAILABLE, "tenant lookup failed");
    /* a will is a publish like any other: the authorize hook has its say
     * now. A reason it names is for a PUBACK, not this CONNACK: 0x87 */
    if (k.has_will && mqr__listener_authorize(c, MQR_AUTH_PUBLISH, k.will_topic.p, k.will_topic.len,
                                              k.will_qos, k.will_retain))
        return refuse(c, k.version, v5 ? MQR_MQTT_RC_NOT_AUTHORIZED : MQR_MQTT_V3_NOT_AUTHORIZED,
                      "will topic not authorised");

    mqr_lconn_t *old = mqr__listener_id_find(l, c->client_id, c->client_id_len);
    if (old) {
        /* 3.1.1 §3.1.4-2, 5.0 §3.1.4: the new connection wins */
        l->stats.takeovers++;
        MQR_LOG_I(MQR_LSN_LOG, "client %s: taken over by a new connection from %s", c->client_id,
                  c->addr);
        old->will_publish = true;
        mqr__listener_conn_close(old, MQR_LCLOSE_DISCONNECT, MQR_MQTT_RC_SESSION_TAKEN_OVER,
                                 "session taken over");
    }
    if (mqr__listener_id_add(l, c) < 0)
        return refuse(c, k.version, MQR_MQTT_RC_SERVER_UNAVAILABLE, "out of memory");

    /* a v5 client asking for more than the listener allows is told the limit */
    bool server_keep_alive =
        v5 && l->opts.max_keepalive && (k.keep_alive == 0 || k.keep_alive > l->opts.max_keepalive);
    if (server_keep_alive) k.keep_alive = (uint16_t)l->opts.max_keepalive;
    c->keepalive_ms = (uint32_t)k.keep_alive * 1500u; /* 3.1.1 §3.1.2.10, 5.0 §3.1.2.10 */
    c->session_expiry = k.session_expiry;
    c->peer_max_packet = v5 ? k.max_packet_size : 0;
    c->problem_info = v5 && k.request_problem_info;
    c->alias_max = v5 ? (uint16_t)l->opts.topic_alias_max : 0;
    mqr__mqtt_alias_out_init(&c->out_alias, v5 ? k.topic_alias_max : 0);
    mqr__listener_deliveries_init(c, v5 ? k.receive_max : 0);
    c->will_delay = v5 && k.has_will ? k.will_delay : 0;
    if (k.has_will) {
        c->will = will_new(c, &k);
        if (!c->will) return refuse(c, k.version, MQR_MQTT_RC_SERVER_UNAVAILABLE, "out of memory");
    }

    uint8_t props[256]; /* room for SCRAM's server-final */
    size_t plen = 0;
    if (v5) {
        mqr_mqtt_pbuild_t b;
        mqr__mqtt_pb_init(&b, props, sizeof props);
        if (was_assigned)
            mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_ASSIGNED_CLIENT_ID, c->client_id, id_len);
        if (l->opts.receive_max < 65535)
            mqr__mqtt_pb_u16(&b, MQR_MQTT_PROP_RECEIVE_MAX, (uint16_t)l->opts.receive_max);
        if (l->opts.max_packet_size < MQR_MQTT_MAX_PACKET)
            mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_MAX_PACKET_SIZE, (uint32_t)l->opts.max_packet_size);
        if (c->alias_max) mqr__mqtt_pb_u16(&b, MQR_MQTT_PROP_TOPIC_ALIAS_MAX, c->alias_max);
        if (l->opts.max_qos < 2)
            mqr__mqtt_pb_byte(&b, MQR_MQTT_PROP_MAX_QOS, (uint8_t)l->opts.max_qos);
        if (server_keep_alive) mqr__mqtt_pb_u16(&b, MQR_MQTT_PROP_SERVER_KEEP_ALIVE, k.keep_alive);
        mqr__listener_auth_connack_props(c, &b);
        if (mqr__mqtt_pb_finish(&b, &plen) < 0)
            return refuse(c, k.version, MQR_MQTT_RC_IMPL_SPECIFIC, "CONNACK properties");
    }
    bool present = false;
    /* a session the store cannot keep (or end) must not be promised */
    if (mqr__client_session_connect(c, k.clean_start, &present) < 0)
        return refuse(c, k.version,
                      v5 ? MQR_MQTT_RC_SERVER_UNAVAILABLE : MQR_MQTT_V3_SERVER_UNAVAILABLE,
                      "session not stored");
    if (mqr__listener_send_connack(c, k.version, present, MQR_MQTT_RC_SUCCESS, props, plen) < 0) {
        mqr__listener_conn_close(c, MQR_LCLOSE_HARD, 0, "out of memory");
        return 0;
    }
    c->state = MQR_LCONN_ACTIVE;
    l->stats.clients_current++;
    if (l->stats.clients_current > l->stats.clients_peak)
        l->stats.clients_peak = l->stats.clients_current;
    mqr__listener_device_online(c);
    if (present) mqr__listener_deliveries_resend(c);
    MQR_LOG_I(MQR_LSN_LOG, "client %s connected from %s (MQTT %s, keep-alive %us%s%s%s)",
              c->client_id, c->addr, v5 ? "5.0" : "3.1.1", (unsigned)k.keep_alive,
              k.clean_start ? ", clean" : "", was_assigned ? ", id assigned" : "",
              c->will ? ", will" : "");
    return 0;
}
