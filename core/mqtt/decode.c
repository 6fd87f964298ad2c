/*
 * decode.c — MQTT 3.1.1 and 5.0 packets from wire bytes to structs.
 *
 * Every read is bounds-checked against the packet's end, and the packet's
 * bytes are never written, copied or allocated for: decoded structs are
 * views into them. A decoder refuses whatever the specifications tell a
 * receiver to refuse; rules that need session state (packet ids in flight,
 * topic alias ranges, authentication method continuity) are left to the
 * session layer.
 */
#include "codec.h"

#include "utf8.h"

#include <string.h>

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} rd_t;

static inline size_t left(const rd_t *r)
{
    return (size_t)(r->end - r->p);
}

static inline bool ver_ok(int version)
{
    return version == MQR_MQTT_V311 || version == MQR_MQTT_V5;
}

static inline int get_u8(rd_t *r, uint8_t *v)
{
    if (r->p == r->end) return MQR_EMALFORMED;
    *v = *r->p++;
    return 0;
}

static inline int get_u16(rd_t *r, uint16_t *v)
{
    if (left(r) < 2) return MQR_EMALFORMED;
    *v = (uint16_t)(r->p[0] << 8 | r->p[1]);
    r->p += 2;
    return 0;
}

/* A two-byte length and that many bytes (3.1.1 §1.5.3, 5.0 §1.5.4/§1.5.6). */
static inline int get_bytes(rd_t *r, const uint8_t **p, uint16_t *n)
{
    uint16_t len;
    if (get_u16(r, &len) || left(r) < len) return MQR_EMALFORMED;
    *p = r->p;
    *n = len;
    r->p += len;
    return 0;
}

static int get_str(rd_t *r, mqr_mqtt_str_t *s)
{
    const uint8_t *p;
    uint16_t n;
    if (get_bytes(r, &p, &n)) return MQR_EMALFORMED;
    if (!mqr__utf8_valid((const char *)p, n)) return MQR_EUTF8;
    s->p = (const char *)p;
    s->len = n;
    return 0;
}

static int get_bin(rd_t *r, mqr_mqtt_bin_t *b)
{
    const uint8_t *p;
    uint16_t n;
    if (get_bytes(r, &p, &n)) return MQR_EMALFORMED;
    b->p = p;
    b->len = n;
    return 0;
}

/* Property Length and the properties (5.0 §2.2.2.1). */
static int get_props(rd_t *r, mqr_mqtt_bin_t *props)
{
    uint32_t n;
    size_t used;
    if (mqr__mqtt_varint_read(r->p, left(r), &n, &used) || used != mqr__mqtt_varint_size(n))
        return MQR_EMALFORMED;
    r->p += used;
    if (left(r) < n) return MQR_EMALFORMED;
    props->p = r->p;
    props->len = n;
    r->p += n;
    return 0;
}

/* Fixed header: checks the type and that the Remaining Length spans exactly
 * the rest of the packet. *minimal tells whether it used the fewest bytes. */
static int head(const uint8_t *pkt, size_t len, int type, int version, rd_t *r, uint8_t *flags,
                bool *minimal)
{
    if (!pkt || len < 2) return MQR_EMALFORMED;
    if ((pkt[0] >> 4) != type) return MQR_EINVAL;
    uint32_t rl;
    size_t used;
    if (mqr__mqtt_varint_read(pkt + 1, len - 1, &rl, &used)) return MQR_EMALFORMED;
    if (1 + used + (size_t)rl != len) return MQR_EMALFORMED;
    bool min = used == mqr__mqtt_varint_size(rl);
    if (version == MQR_MQTT_V5 && !min) return MQR_EMALFORMED; /* [MQTT-1.5.5-1] */
    if (minimal) *minimal = min;
    *flags = pkt[0] & 0x0F;
    r->p = pkt + 1 + used;
    r->end = pkt + len;
    return 0;
}

#define HAS(ps, id) ((((ps)->seen) >> (id)) & 1u)

static inline uint32_t ps_num(const mqr_mqtt_propset_t *ps, int id, uint32_t dflt)
{
    return HAS(ps, id) ? ps->v[id].num : dflt;
}

static inline mqr_mqtt_str_t ps_str(const mqr_mqtt_propset_t *ps, int id)
{
    mqr_mqtt_str_t s = {NULL, 0};
    if (HAS(ps, id)) {
        s.p = (const char *)ps->v[id].data;
        s.len = ps->v[id].len;
    }
    return s;
}

static inline mqr_mqtt_bin_t ps_bin(const mqr_mqtt_propset_t *ps, int id)
{
    mqr_mqtt_bin_t b = {NULL, 0};
    if (HAS(ps, id)) {
        b.p = ps->v[id].data;
        b.len = ps->v[id].len;
    }
    return b;
}

static bool rc_in(uint8_t rc, const uint8_t *set, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (set[i] == rc) return true;
    return false;
}

/* Reason codes each packet may carry (5.0 §2.4 and each packet's section). */
static const uint8_t rc_connack[] = {0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86,
                                     0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
                                     0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F};
static const uint8_t rc_puback[] = {0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99};
static const uint8_t rc_pubrel[] = {0x00, 0x92};
static const uint8_t rc_suback[] = {0x00, 0x01, 0x02, 0x80, 0x83, 0x87,
                                    0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2};
static const uint8_t rc_suback_v3[] = {0x00, 0x01, 0x02, 0x80};
static const uint8_t rc_unsuback[] = {0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91};
static const uint8_t rc_disconnect[] = {0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D,
                                        0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99,
                                        0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2};
static const uint8_t rc_auth[] = {0x00, 0x18, 0x19};

#define RC_IN(rc, set) rc_in((rc), (set), sizeof(set))

/* ---- CONNECT ------------------------------------------------------------ */

static int connect_body(rd_t *r, bool minimal, mqr_mqtt_connect_t *c)
{
    const uint8_t *name;
    uint16_t name_len;
    uint8_t level, cf;
    int rc;
    if ((rc = get_bytes(r, &name, &name_len)) || (rc = get_u8(r, &level))) return rc;
    c->protocol_level = level;
    bool is_mqtt = name_len == 4 && memcmp(name, "MQTT", 4) == 0;
    bool is_mqisdp = name_len == 6 && memcmp(name, "MQIsdp", 6) == 0;
    /* 3.1.1 §3.1.2.1 / 5.0 §3.1.2.1: not MQTT at all, just close */
    if (!is_mqtt && !is_mqisdp) return MQR_EPROTOCOL;
    if (!is_mqtt || (level != MQR_MQTT_V311 && level != MQR_MQTT_V5)) {
        c->version_unsupported = true; /* [MQTT-3.1.2-2], 5.0 §3.1.2.2 */
        return MQR_EPROTOCOL;
    }
    c->version = level;
    bool v5 = level == MQR_MQTT_V5;
    if (v5 && !minimal) return MQR_EMALFORMED; /* [MQTT-1.5.5-1] */

    if ((rc = get_u8(r, &cf))) return rc;
    if (cf & 0x01) return MQR_EMALFORMED; /* reserved: [MQTT-3.1.2-3] */
    c->clean_start = cf & 0x02;
    c->has_will = cf & 0x04;
    c->will_qos = (cf >> 3) & 3;
    c->will_retain = cf & 0x20;
    c->has_password = cf & 0x40;
    c->has_username = cf & 0x80;
    if (c->will_qos == 3) return MQR_EMALFORMED;
    if (!c->has_will && (c->will_qos || c->will_retain)) return MQR_EMALFORMED;
    if (!v5 && c->has_password && !c->has_username) return MQR_EPROTOCOL; /* [MQTT-3.1.2-22] */
    if ((rc = get_u16(r, &c->keep_alive))) return rc;

    mqr_mqtt_propset_t ps;
    if (v5) {
        if ((rc = get_props(r, &c->props))) return rc;
        rc = mqr__mqtt_props_parse(c->props.p, c->props.len, MQR_MQTT_CONNECT, MQR_MQTT_FROM_CLIENT,
                                   &ps);
        if (rc) return rc;
        c->session_expiry = ps_num(&ps, MQR_MQTT_PROP_SESSION_EXPIRY, 0);
        c->receive_max = (uint16_t)ps_num(&ps, MQR_MQTT_PROP_RECEIVE_MAX, 65535);
        c->max_packet_size = ps_num(&ps, MQR_MQTT_PROP_MAX_PACKET_SIZE, 0);
        c->topic_alias_max = (uint16_t)ps_num(&ps, MQR_MQTT_PROP_TOPIC_ALIAS_MAX, 0);
        c->request_response_info = (uint8_t)ps_num(&ps, MQR_MQTT_PROP_REQUEST_RESPONSE_INFO, 0);
        c->request_problem_info = (uint8_t)ps_num(&ps, MQR_MQTT_PROP_REQUEST_PROBLEM_INFO, 1);
        c->auth_method = ps_str(&ps, MQR_MQTT_PROP_AUTH_METHOD);
        c->auth_data = ps_bin(&ps, MQR_MQTT_PROP_AUTH_DATA);
    }

    if ((rc = get_str(r, &c->client_id))) return rc;
    if (!v5 && c->client_id.len == 0 && !c->clean_start) {
        c->client_id_rejected = true; /* [MQTT-3.1.3-8] */
        return MQR_EPROTOCOL;
    }
    if (c->has_will) {
        if (v5) {
            if ((rc = get_props(r, &c->will_props))) return rc;
            rc = mqr__mqtt_props_parse(c->will_props.p, c->will_props.len, MQR_MQTT_CTX_WILL,
                                       MQR_MQTT_FROM_CLIENT, &ps);
            if (rc) return rc;
            c->will_delay = ps_num(&ps, MQR_MQTT_PROP_WILL_DELAY, 0);
            c->will_has_expiry = HAS(&ps, MQR_MQTT_PROP_MESSAGE_EXPIRY);
            c->will_expiry = ps_num(&ps, MQR_MQTT_PROP_MESSAGE_EXPIRY, 0);
            c->will_payload_format = (uint8_t)ps_num(&ps, MQR_MQTT_PROP_PAYLOAD_FORMAT, 0);
        }
        const uint8_t *t;
        uint16_t tl;
        if ((rc = get_bytes(r, &t, &tl))) return rc;
        if ((rc = mqr__mqtt_topic_name_check((const char *)t, tl))) return rc;
        c->will_topic.p = (const char *)t;
        c->will_topic.len = tl;
        if ((rc = get_bin(r, &c->will_payload))) return rc;
    }
    if (c->has_username && (rc = get_str(r, &c->username))) return rc;
    if (c->has_password && (rc = get_bin(r, &c->password))) return rc;
    return r->p == r->end ? 0 : MQR_EMALFORMED;
}

int mqr__mqtt_decode_connect(const uint8_t *pkt, size_t len, mqr_mqtt_connect_t *c)
{
    memset(c, 0, sizeof *c);
    c->receive_max = 65535;
    c->request_problem_info = 1;
    rd_t r;
    uint8_t flags;
    bool minimal;
    int rc = head(pkt, len, MQR_MQTT_CONNECT, 0, &r, &flags, &minimal);
    if (rc) return rc;
    if (flags) return MQR_EMALFORMED;
    return connect_body(&r, minimal, c);
}

/* ---- CONNACK ------------------------------------------------------------ */

int mqr__mqtt_decode_connack(const uint8_t *pkt, size_t len, int version, mqr_mqtt_connack_t *c)
{
    if (!ver_ok(version)) return MQR_EINVAL;
    memset(c, 0, sizeof *c);
    c->receive_max = 65535;
    c->max_qos = 2;
    c->retain_available = 1;
    c->wildcard_sub_available = 1;
    c->sub_id_available = 1;
    c->shared_sub_available = 1;
    rd_t r;
    uint8_t flags, ackf;
    int rc = head(pkt, len, MQR_MQTT_CONNACK, version, &r, &flags, NULL);
    if (rc) return rc;
    if (flags) return MQR_EMALFORMED;
    if ((rc = get_u8(&r, &ackf)) || (rc = get_u8(&r, &c->reason))) return rc;
    if (ackf & 0xFE) return MQR_EMALFORMED; /* 3.1.1 §3.2.2.1, 5.0 §3.2.2.1 reserved bits */
    c->session_present = ackf & 1;
    if (version == MQR_MQTT_V311 || left(&r) == 0) {
        /* a 5.0 client may get a 3.1.1 server's refusal: accept its codes too */
        bool ok = c->reason <= MQR_MQTT_V3_NOT_AUTHORIZED ||
                  (version == MQR_MQTT_V5 && RC_IN(c->reason, rc_connack));
        if (!ok) return MQR_EPROTOCOL;
    } else {
        if (!RC_IN(c->reason, rc_connack)) return MQR_EPROTOCOL;
        if ((rc = get_props(&r, &c->props))) return rc;
        mqr_mqtt_propset_t ps;
        rc = mqr__mqtt_props_parse(c->props.p, c->props.len, MQR_MQTT_CONNACK, MQR_MQTT_FROM_SERVER,
                                   &ps);
        if (rc) return rc;
        c->has_session_expiry = HAS(&ps, MQR_MQTT_PROP_SESSION_EXPIRY);
        c->session_expiry = ps_num(&ps, MQR_MQTT_PROP_SESSION_EXPIRY, 0);
        c->receive_max = (uint16_t)ps_num(&ps, MQR_MQTT_PROP_RECEIVE_MAX, 65535);
        c->max_qos = (uint8_t)ps_num(&ps, MQR_MQTT_PROP_MAX_QOS, 2);
        c->retain_available = (uint8_t)ps_num(&ps, MQR_MQTT_PROP_RETAIN_AVAILABLE, 1);
        c->max_packet_size = ps_num(&ps, MQR_MQTT_PROP_MAX_PACKET_SIZE, 0);
        c->topic_alias_max = (uint16_t)ps_num(&ps, MQR_MQTT_PROP_TOPIC_ALIAS_MAX, 0);
        c->wildcard_sub_available = (uint8_t)ps_num(&ps, MQR_MQTT_PROP_WILDCARD_SUB_AVAILABLE, 1);
        c->sub_id_available = (uint8_t)ps_num(&ps, MQR_MQTT_PROP_SUB_ID_AVAILABLE, 1);
        c->shared_sub_available = (uint8_t)ps_num(&ps, MQR_MQTT_PROP_SHARED_SUB_AVAILABLE, 1);
        c->has_server_keep_alive = HAS(&ps, MQR_MQTT_PROP_SERVER_KEEP_ALIVE);
        c->server_keep_alive = (uint16_t)ps_num(&ps, MQR_MQTT_PROP_SERVER_KEEP_ALIVE, 0);
        c->assigned_client_id = ps_str(&ps, MQR_MQTT_PROP_ASSIGNED_CLIENT_ID);
        c->reason_string = ps_str(&ps, MQR_MQTT_PROP_REASON_STRING);
        c->response_info = ps_str(&ps, MQR_MQTT_PROP_RESPONSE_INFO);
        c->server_reference = ps_str(&ps, MQR_MQTT_PROP_SERVER_REFERENCE);
        c->auth_method = ps_str(&ps, MQR_MQTT_PROP_AUTH_METHOD);
        c->auth_data = ps_bin(&ps, MQR_MQTT_PROP_AUTH_DATA);
    }
    if (r.p != r.end) return MQR_EMALFORMED;
    /* [MQTT-3.2.2-4] (3.1.1), [MQTT-3.2.2-6] (5.0) */
    if (c->session_present && c->reason != 0) return MQR_EPROTOCOL;
    return 0;
}

/* ---- PUBLISH ------------------------------------------------------------ */

int mqr__mqtt_decode_publish(const uint8_t *pkt, size_t len, int version, mqr_mqtt_dir_t dir,
                             mqr_mqtt_publish_t *p)
{
    if (!ver_ok(version)) return MQR_EINVAL;
    memset(p, 0, sizeof *p);
    rd_t r;
    uint8_t flags;
    int rc = head(pkt, len, MQR_MQTT_PUBLISH, version, &r, &flags, NULL);
    if (rc) return rc;
    p->dup = flags & 0x08;
    p->qos = (flags >> 1) & 3;
    p->retain = flags & 0x01;
    if (p->qos == 3) return MQR_EMALFORMED; /* [MQTT-3.3.1-4] */
    const uint8_t *t;
    uint16_t tl;
    if ((rc = get_bytes(&r, &t, &tl))) return rc;
    p->topic.p = (const char *)t;
    p->topic.len = tl;
    if (p->qos) {
        if ((rc = get_u16(&r, &p->packet_id))) return rc;
        if (p->packet_id == 0) return MQR_EPROTOCOL; /* [MQTT-2.3.1-1] */
    }
    if (version == MQR_MQTT_V5) {
        if ((rc = get_props(&r, &p->props))) return rc;
        if (p->props.len) {
            mqr_mqtt_propset_t ps;
            rc = mqr__mqtt_props_parse(p->props.p, p->props.len, MQR_MQTT_PUBLISH, dir, &ps);
            if (rc) return rc;
            p->topic_alias = (uint16_t)ps_num(&ps, MQR_MQTT_PROP_TOPIC_ALIAS, 0);
            p->has_expiry = HAS(&ps, MQR_MQTT_PROP_MESSAGE_EXPIRY);
            p->expiry = ps_num(&ps, MQR_MQTT_PROP_MESSAGE_EXPIRY, 0);
            p->payload_format = (uint8_t)ps_num(&ps, MQR_MQTT_PROP_PAYLOAD_FORMAT, 0);
            p->sub_id_count = ps.n_sub_id;
            p->sub_id = ps_num(&ps, MQR_MQTT_PROP_SUBSCRIPTION_ID, 0);
            p->content_type = ps_str(&ps, MQR_MQTT_PROP_CONTENT_TYPE);
            p->response_topic = ps_str(&ps, MQR_MQTT_PROP_RESPONSE_TOPIC);
            p->correlation_data = ps_bin(&ps, MQR_MQTT_PROP_CORRELATION_DATA);
        }
    }
    if (tl == 0) {
        /* 5.0 §3.3.2.3.4: an empty name is how an established alias is used */
        if (version == MQR_MQTT_V311) return MQR_ETOPIC;
        if (!p->topic_alias) return MQR_EPROTOCOL;
    } else if ((rc = mqr__mqtt_topic_name_check(p->topic.p, tl))) {
        return rc;
    }
    p->payload.p = r.p;
    p->payload.len = (uint32_t)left(&r);
    return 0;
}

/* ---- PUBACK, PUBREC, PUBREL, PUBCOMP ----------------------------------- */

int mqr__mqtt_decode_ack(const uint8_t *pkt, size_t len, int version, mqr_mqtt_ack_t *a)
{
    if (!ver_ok(version)) return MQR_EINVAL;
    memset(a, 0, sizeof *a);
    if (!pkt || len < 2) return MQR_EMALFORMED;
    int type = pkt[0] >> 4;
    if (type < MQR_MQTT_PUBACK || type > MQR_MQTT_PUBCOMP) return MQR_EINVAL;
    a->type = (uint8_t)type;
    rd_t r;
    uint8_t flags;
    int rc = head(pkt, len, type, version, &r, &flags, NULL);
    if (rc) return rc;
    if (flags != (type == MQR_MQTT_PUBREL ? 0x2 : 0)) return MQR_EMALFORMED;
    if ((rc = get_u16(&r, &a->packet_id))) return rc;
    if (a->packet_id == 0) return MQR_EPROTOCOL;
    if (version == MQR_MQTT_V5 && left(&r) > 0) {
        /* 5.0 §3.4.2.1: Remaining Length 2 means reason 0, and below 4 no
         * Property Length */
        if ((rc = get_u8(&r, &a->reason))) return rc;
        bool ok =
            type <= MQR_MQTT_PUBREC ? RC_IN(a->reason, rc_puback) : RC_IN(a->reason, rc_pubrel);
        if (!ok) return MQR_EPROTOCOL;
        if (left(&r) > 0) {
            if ((rc = get_props(&r, &a->props))) return rc;
            mqr_mqtt_propset_t ps;
            rc = mqr__mqtt_props_parse(a->props.p, a->props.len, type, MQR_MQTT_FROM_CLIENT, &ps);
            if (rc) return rc;
            a->reason_string = ps_str(&ps, MQR_MQTT_PROP_REASON_STRING);
        }
    }
    return r.p == r.end ? 0 : MQR_EMALFORMED;
}

/* ---- SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK --------------------------- */

/* Packet id, then (5.0) the properties: the start of every subscription
 * packet. */
static int id_and_props(rd_t *r, int version, int type, mqr_mqtt_dir_t dir, uint16_t *id,
                        mqr_mqtt_bin_t *props, mqr_mqtt_propset_t *ps)
{
    int rc;
    ps->seen = 0;
    if ((rc = get_u16(r, id))) return rc;
    if (*id == 0) return MQR_EPROTOCOL; /* [MQTT-2.3.1-1] */
    if (version != MQR_MQTT_V5) return 0;
    if ((rc = get_props(r, props))) return rc;
    return mqr__mqtt_props_parse(props->p, props->len, type, dir, ps);
}

static bool is_shared(const char *f, size_t n, int version)
{
    return version == MQR_MQTT_V5 && n >= 7 && memcmp(f, "$share/", 7) == 0;
}

int mqr__mqtt_decode_subscribe(const uint8_t *pkt, size_t len, int version, mqr_mqtt_subscribe_t *s)
{
    if (!ver_ok(version)) return MQR_EINVAL;
    memset(s, 0, sizeof *s);
    rd_t r;
    uint8_t flags;
    int rc = head(pkt, len, MQR_MQTT_SUBSCRIBE, version, &r, &flags, NULL);
    if (rc) return rc;
    if (flags != 0x2) return MQR_EMALFORMED; /* [MQTT-3.8.1-1] */
    mqr_mqtt_propset_t ps;
    rc = id_and_props(&r, version, MQR_MQTT_SUBSCRIBE, MQR_MQTT_FROM_CLIENT, &s->packet_id,
                      &s->props, &ps);
    if (rc) return rc;
    s->sub_id = ps_num(&ps, MQR_MQTT_PROP_SUBSCRIPTION_ID, 0);
    const uint8_t *start = r.p;
    uint32_t count = 0;
    while (r.p < r.end) {
        const uint8_t *f;
        uint16_t fl;
        uint8_t o;
        bool shared;
        if ((rc = get_bytes(&r, &f, &fl))) return rc;
        if ((rc = mqr__mqtt_topic_filter_check((const char *)f, fl, version, &shared))) return rc;
        if ((rc = get_u8(&r, &o))) return rc;
        if (version == MQR_MQTT_V311) {
            /* [MQTT-3-8.3-4]: reserved bits or QoS 3 make it malformed */
            if ((o & 0xFC) || (o & 3) == 3) return MQR_EMALFORMED;
        } else {
            if (o & 0xC0) return MQR_EMALFORMED; /* [MQTT-3.8.3-5] */
            if ((o & 3) == 3) return MQR_EPROTOCOL;
            if (((o >> 4) & 3) == 3) return MQR_EPROTOCOL;
            if (shared && (o & 0x04)) return MQR_EPROTOCOL; /* [MQTT-3.8.3-4] */
        }
        count++;
    }
    if (count == 0) return MQR_EPROTOCOL; /* [MQTT-3.8.3-3] (3.1.1), [MQTT-3.8.3-2] (5.0) */
    s->list.p = start;
    s->list.len = (uint32_t)(r.end - start);
    s->count = count;
    return 0;
}

void mqr__mqtt_sub_iter(mqr_mqtt_list_iter_t *it, const mqr_mqtt_subscribe_t *s, int version)
{
    it->p = s->list.p;
    it->end = s->list.p ? s->list.p + s->list.len : s->list.p;
    it->version = version;
}

bool mqr__mqtt_sub_next(mqr_mqtt_list_iter_t *it, mqr_mqtt_sub_entry_t *e)
{
    rd_t r = {it->p, it->end};
    const uint8_t *f;
    uint16_t fl;
    uint8_t o;
    if (r.p == r.end || get_bytes(&r, &f, &fl) || get_u8(&r, &o)) {
        it->p = it->end;
        return false;
    }
    it->p = r.p;
    e->filter.p = (const char *)f;
    e->filter.len = fl;
    e->options = o;
    e->qos = o & 3;
    bool v5 = it->version == MQR_MQTT_V5;
    e->no_local = v5 && (o & 0x04);
    e->retain_as_published = v5 && (o & 0x08);
    e->retain_handling = v5 ? (o >> 4) & 3 : 0;
    e->shared = is_shared(e->filter.p, fl, it->version);
    return true;
}

int mqr__mqtt_decode_suback(const uint8_t *pkt, size_t len, int version, mqr_mqtt_suback_t *s)
{
    if (!ver_ok(version)) return MQR_EINVAL;
    memset(s, 0, sizeof *s);
    rd_t r;
    uint8_t flags;
    int rc = head(pkt, len, MQR_MQTT_SUBACK, version, &r, &flags, NULL);
    if (rc) return rc;
    if (flags) return MQR_EMALFORMED;
    mqr_mqtt_propset_t ps;
    rc = id_and_props(&r, version, MQR_MQTT_SUBACK, MQR_MQTT_FROM_SERVER, &s->packet_id, &s->props,
                      &ps);
    if (rc) return rc;
    s->reason_string = ps_str(&ps, MQR_MQTT_PROP_REASON_STRING);
    s->codes = r.p;
    s->count = (uint32_t)left(&r);
    if (s->count == 0) return MQR_EPROTOCOL; /* one per filter, and there is at least one */
    for (uint32_t i = 0; i < s->count; i++) {
        bool ok = version == MQR_MQTT_V5 ? RC_IN(s->codes[i], rc_suback)
                                         : RC_IN(s->codes[i], rc_suback_v3);
        if (!ok) return MQR_EPROTOCOL;
    }
    return 0;
}

int mqr__mqtt_decode_unsubscribe(const uint8_t *pkt, size_t len, int version,
                                 mqr_mqtt_unsubscribe_t *u)
{
    if (!ver_ok(version)) return MQR_EINVAL;
    memset(u, 0, sizeof *u);
    rd_t r;
    uint8_t flags;
    int rc = head(pkt, len, MQR_MQTT_UNSUBSCRIBE, version, &r, &flags, NULL);
    if (rc) return rc;
    if (flags != 0x2) return MQR_EMALFORMED; /* [MQTT-3.10.1-1] */
    mqr_mqtt_propset_t ps;
    rc = id_and_props(&r, version, MQR_MQTT_UNSUBSCRIBE, MQR_MQTT_FROM_CLIENT, &u->packet_id,
                      &u->props, &ps);
    if (rc) return rc;
    const uint8_t *start = r.p;
    uint32_t count = 0;
    while (r.p < r.end) {
        const uint8_t *f;
        uint16_t fl;
        bool shared;
        if ((rc = get_bytes(&r, &f, &fl))) return rc;
        if ((rc = mqr__mqtt_topic_filter_check((const char *)f, fl, version, &shared))) return rc;
        count++;
    }
    if (count == 0) return MQR_EPROTOCOL; /* [MQTT-3.10.3-2] */
    u->list.p = start;
    u->list.len = (uint32_t)(r.end - start);
    u->count = count;
    return 0;
}

void mqr__mqtt_unsub_iter(mqr_mqtt_list_iter_t *it, const mqr_mqtt_unsubscribe_t *u, int version)
{
    it->p = u->list.p;
    it->end = u->list.p ? u->list.p + u->list.len : u->list.p;
    it->version = version;
}

bool mqr__mqtt_unsub_next(mqr_mqtt_list_iter_t *it, mqr_mqtt_str_t *filter)
{
    rd_t r = {it->p, it->end};
    const uint8_t *f;
    uint16_t fl;
    if (r.p == r.end || get_bytes(&r, &f, &fl)) {
        it->p = it->end;
        return false;
    }
    it->p = r.p;
    filter->p = (const char *)f;
    filter->len = fl;
    return true;
}

int mqr__mqtt_decode_unsuback(const uint8_t *pkt, size_t len, int version, mqr_mqtt_unsuback_t *u)
{
    if (!ver_ok(version)) return MQR_EINVAL;
    memset(u, 0, sizeof *u);
    rd_t r;
    uint8_t flags;
    int rc = head(pkt, len, MQR_MQTT_UNSUBACK, version, &r, &flags, NULL);
    if (rc) return rc;
    if (flags) return MQR_EMALFORMED;
    mqr_mqtt_propset_t ps;
    rc = id_and_props(&r, version, MQR_MQTT_UNSUBACK, MQR_MQTT_FROM_SERVER, &u->packet_id,
                      &u->props, &ps);
    if (rc) return rc;
    if (version == MQR_MQTT_V311) return r.p == r.end ? 0 : MQR_EMALFORMED;
    u->reason_string = ps_str(&ps, MQR_MQTT_PROP_REASON_STRING);
    u->codes = r.p;
    u->count = (uint32_t)left(&r);
    if (u->count == 0) return MQR_EPROTOCOL;
    for (uint32_t i = 0; i < u->count; i++)
        if (!RC_IN(u->codes[i], rc_unsuback)) return MQR_EPROTOCOL;
    return 0;
}

/* ---- PINGREQ, PINGRESP, DISCONNECT, AUTH -------------------------------- */

int mqr__mqtt_decode_ping(const uint8_t *pkt, size_t len, int version)
{
    if (!ver_ok(version)) return MQR_EINVAL;
    if (!pkt || len < 2) return MQR_EMALFORMED;
    int type = pkt[0] >> 4;
    if (type != MQR_MQTT_PINGREQ && type != MQR_MQTT_PINGRESP) return MQR_EINVAL;
    rd_t r;
    uint8_t flags;
    int rc = head(pkt, len, type, version, &r, &flags, NULL);
    if (rc) return rc;
    return flags == 0 && r.p == r.end ? 0 : MQR_EMALFORMED;
}

int mqr__mqtt_decode_disconnect(const uint8_t *pkt, size_t len, int version, mqr_mqtt_dir_t dir,
                                mqr_mqtt_disconnect_t *d)
{
    if (!ver_ok(version)) return MQR_EINVAL;
    memset(d, 0, sizeof *d);
    rd_t r;
    uint8_t flags;
    int rc = head(pkt, len, MQR_MQTT_DISCONNECT, version, &r, &flags, NULL);
    if (rc) return rc;
    if (flags) return MQR_EMALFORMED;
    if (version == MQR_MQTT_V5 && left(&r) > 0) {
        /* 5.0 §3.14.2.1: Remaining Length 0 means reason 0; below 2, no
         * Property Length */
        if ((rc = get_u8(&r, &d->reason))) return rc;
        if (!RC_IN(d->reason, rc_disconnect)) return MQR_EPROTOCOL;
        if (left(&r) > 0) {
            if ((rc = get_props(&r, &d->props))) return rc;
            mqr_mqtt_propset_t ps;
            rc = mqr__mqtt_props_parse(d->props.p, d->props.len, MQR_MQTT_DISCONNECT, dir, &ps);
            if (rc) return rc;
            d->has_session_expiry = HAS(&ps, MQR_MQTT_PROP_SESSION_EXPIRY);
            d->session_expiry = ps_num(&ps, MQR_MQTT_PROP_SESSION_EXPIRY, 0);
            d->reason_string = ps_str(&ps, MQR_MQTT_PROP_REASON_STRING);
            d->server_reference = ps_str(&ps, MQR_MQTT_PROP_SERVER_REFERENCE);
        }
    }
    return r.p == r.end ? 0 : MQR_EMALFORMED;
}

int mqr__mqtt_decode_auth(const uint8_t *pkt, size_t len, int version, mqr_mqtt_auth_t *a)
{
    if (!ver_ok(version)) return MQR_EINVAL;
    memset(a, 0, sizeof *a);
    rd_t r;
    uint8_t flags;
    int rc = head(pkt, len, MQR_MQTT_AUTH, version, &r, &flags, NULL);
    if (rc) return rc;
    if (version == MQR_MQTT_V311) return MQR_EMALFORMED; /* reserved type: 3.1.1 §2.2.1 */
    if (flags) return MQR_EMALFORMED;
    if (left(&r) > 0) {
        if ((rc = get_u8(&r, &a->reason))) return rc;
        if (!RC_IN(a->reason, rc_auth)) return MQR_EPROTOCOL;
        if (left(&r) > 0) {
            if ((rc = get_props(&r, &a->props))) return rc;
            mqr_mqtt_propset_t ps;
            rc = mqr__mqtt_props_parse(a->props.p, a->props.len, MQR_MQTT_AUTH,
                                       MQR_MQTT_FROM_CLIENT, &ps);
            if (rc) return rc;
            a->auth_method = ps_str(&ps, MQR_MQTT_PROP_AUTH_METHOD);
            a->auth_data = ps_bin(&ps, MQR_MQTT_PROP_AUTH_DATA);
            a->reason_string = ps_str(&ps, MQR_MQTT_PROP_REASON_STRING);
        }
        /* 5.0 §3.15.2.2.2: omitting it is a protocol error; only the bare
         * success form (Remaining Length 0) carries nothing */
        if (!a->auth_method.p) return MQR_EPROTOCOL;
    }
    return r.p == r.end ? 0 : MQR_EMALFORMED;
}

/* ---- any packet --------------------------------------------------------- */

int mqr__mqtt_decode(const uint8_t *pkt, size_t len, int version, mqr_mqtt_dir_t dir,
                     mqr_mqtt_packet_t *out)
{
    if (!pkt || len < 2) return MQR_EMALFORMED;
    int type = pkt[0] >> 4;
    out->type = (uint8_t)type;
    bool from_client = dir == MQR_MQTT_FROM_CLIENT;
    if (type == MQR_MQTT_CONNECT) {
        if (!from_client) return MQR_EPROTOCOL;
        return mqr__mqtt_decode_connect(pkt, len, &out->u.connect);
    }
    if (!ver_ok(version)) return MQR_EINVAL;
    switch (type) {
    case MQR_MQTT_CONNACK:
        if (from_client) return MQR_EPROTOCOL;
        return mqr__mqtt_decode_connack(pkt, len, version, &out->u.connack);
    case MQR_MQTT_PUBLISH:
        return mqr__mqtt_decode_publish(pkt, len, version, dir, &out->u.publish);
    case MQR_MQTT_PUBACK:
    case MQR_MQTT_PUBREC:
    case MQR_MQTT_PUBREL:
    case MQR_MQTT_PUBCOMP:
        return mqr__mqtt_decode_ack(pkt, len, version, &out->u.ack);
    case MQR_MQTT_SUBSCRIBE:
        if (!from_client) return MQR_EPROTOCOL;
        return mqr__mqtt_decode_subscribe(pkt, len, version, &out->u.subscribe);
    case MQR_MQTT_SUBACK:
        if (from_client) return MQR_EPROTOCOL;
        return mqr__mqtt_decode_suback(pkt, len, version, &out->u.suback);
    case MQR_MQTT_UNSUBSCRIBE:
        if (!from_client) return MQR_EPROTOCOL;
        return mqr__mqtt_decode_unsubscribe(pkt, len, version, &out->u.unsubscribe);
    case MQR_MQTT_UNSUBACK:
        if (from_client) return MQR_EPROTOCOL;
        return mqr__mqtt_decode_unsuback(pkt, len, version, &out->u.unsuback);
    case MQR_MQTT_PINGREQ:
        if (!from_client) return MQR_EPROTOCOL;
        return mqr__mqtt_decode_ping(pkt, len, version);
    case MQR_MQTT_PINGRESP:
        if (from_client) return MQR_EPROTOCOL;
        return mqr__mqtt_decode_ping(pkt, len, version);
    case MQR_MQTT_DISCONNECT:
        return mqr__mqtt_decode_disconnect(pkt, len, version, dir, &out->u.disconnect);
    case MQR_MQTT_AUTH:
        return mqr__mqtt_decode_auth(pkt, len, version, &out->u.auth);
    default: /* 0 is reserved in both versions */
        return MQR_EMALFORMED;
    }
}
