/*
 * props.c — MQTT 5.0 properties: walking, validating, stripping, building.
 *
 * One table says each identifier's type and where it may appear; every
 * function reads it, so a property cannot be accepted by the validator and
 * then misread by the iterator. Never allocates: validation results point
 * into the caller's bytes.
 */
#include "codec.h"

#include "utf8.h"

#include <string.h>

#define CTX(t) (1u << (t))
#define C_WILL CTX(MQR_MQTT_CTX_WILL)
#define C_PUB (CTX(MQR_MQTT_PUBLISH) | C_WILL)
#define C_ACKS                                                                                     \
    (CTX(MQR_MQTT_PUBACK) | CTX(MQR_MQTT_PUBREC) | CTX(MQR_MQTT_PUBREL) | CTX(MQR_MQTT_PUBCOMP))

/* 5.0 §2.2.2.2, table 2-4 */
static const struct {
    uint8_t type;
    uint32_t where;
} prop_info[MQR_MQTT_PROP_MAX_ID + 1] = {
    [MQR_MQTT_PROP_PAYLOAD_FORMAT] = {MQR_MQTT_PT_BYTE, C_PUB},
    [MQR_MQTT_PROP_MESSAGE_EXPIRY] = {MQR_MQTT_PT_U32, C_PUB},
    [MQR_MQTT_PROP_CONTENT_TYPE] = {MQR_MQTT_PT_STRING, C_PUB},
    [MQR_MQTT_PROP_RESPONSE_TOPIC] = {MQR_MQTT_PT_STRING, C_PUB},
    [MQR_MQTT_PROP_CORRELATION_DATA] = {MQR_MQTT_PT_BINARY, C_PUB},
    [MQR_MQTT_PROP_SUBSCRIPTION_ID] = {MQR_MQTT_PT_VARINT,
                                       CTX(MQR_MQTT_PUBLISH) | CTX(MQR_MQTT_SUBSCRIBE)},
    [MQR_MQTT_PROP_SESSION_EXPIRY] = {MQR_MQTT_PT_U32, CTX(MQR_MQTT_CONNECT) |
                                                           CTX(MQR_MQTT_CONNACK) |
                                                           CTX(MQR_MQTT_DISCONNECT)},
    [MQR_MQTT_PROP_ASSIGNED_CLIENT_ID] = {MQR_MQTT_PT_STRING, CTX(MQR_MQTT_CONNACK)},
    [MQR_MQTT_PROP_SERVER_KEEP_ALIVE] = {MQR_MQTT_PT_U16, CTX(MQR_MQTT_CONNACK)},
    [MQR_MQTT_PROP_AUTH_METHOD] = {MQR_MQTT_PT_STRING, CTX(MQR_MQTT_CONNECT) |
                                                           CTX(MQR_MQTT_CONNACK) |
                                                           CTX(MQR_MQTT_AUTH)},
    [MQR_MQTT_PROP_AUTH_DATA] = {MQR_MQTT_PT_BINARY, CTX(MQR_MQTT_CONNECT) | CTX(MQR_MQTT_CONNACK) |
                                                         CTX(MQR_MQTT_AUTH)},
    [MQR_MQTT_PROP_REQUEST_PROBLEM_INFO] = {MQR_MQTT_PT_BYTE, CTX(MQR_MQTT_CONNECT)},
    [MQR_MQTT_PROP_WILL_DELAY] = {MQR_MQTT_PT_U32, C_WILL},
    [MQR_MQTT_PROP_REQUEST_RESPONSE_INFO] = {MQR_MQTT_PT_BYTE, CTX(MQR_MQTT_CONNECT)},
    [MQR_MQTT_PROP_RESPONSE_INFO] = {MQR_MQTT_PT_STRING, CTX(MQR_MQTT_CONNACK)},
    [MQR_MQTT_PROP_SERVER_REFERENCE] = {MQR_MQTT_PT_STRING,
                                        CTX(MQR_MQTT_CONNACK) | CTX(MQR_MQTT_DISCONNECT)},
    [MQR_MQTT_PROP_REASON_STRING] = {MQR_MQTT_PT_STRING,
                                     CTX(MQR_MQTT_CONNACK) | C_ACKS | CTX(MQR_MQTT_SUBACK) |
                                         CTX(MQR_MQTT_UNSUBACK) | CTX(MQR_MQTT_DISCONNECT) |
                                         CTX(MQR_MQTT_AUTH)},
    [MQR_MQTT_PROP_RECEIVE_MAX] = {MQR_MQTT_PT_U16, CTX(MQR_MQTT_CONNECT) | CTX(MQR_MQTT_CONNACK)},
    [MQR_MQTT_PROP_TOPIC_ALIAS_MAX] = {MQR_MQTT_PT_U16,
                                       CTX(MQR_MQTT_CONNECT) | CTX(MQR_MQTT_CONNACK)},
    [MQR_MQTT_PROP_TOPIC_ALIAS] = {MQR_MQTT_PT_U16, CTX(MQR_MQTT_PUBLISH)},
    [MQR_MQTT_PROP_MAX_QOS] = {MQR_MQTT_PT_BYTE, CTX(MQR_MQTT_CONNACK)},
    [MQR_MQTT_PROP_RETAIN_AVAILABLE] = {MQR_MQTT_PT_BYTE, CTX(MQR_MQTT_CONNACK)},
    [MQR_MQTT_PROP_USER] = {MQR_MQTT_PT_PAIR, 0xFFFEu | C_WILL}, /* every packet type 1..15 */
    [MQR_MQTT_PROP_MAX_PACKET_SIZE] = {MQR_MQTT_PT_U32,
                                       CTX(MQR_MQTT_CONNECT) | CTX(MQR_MQTT_CONNACK)},
    [MQR_MQTT_PROP_WILDCARD_SUB_AVAILABLE] = {MQR_MQTT_PT_BYTE, CTX(MQR_MQTT_CONNACK)},
    [MQR_MQTT_PROP_SUB_ID_AVAILABLE] = {MQR_MQTT_PT_BYTE, CTX(MQR_MQTT_CONNACK)},
    [MQR_MQTT_PROP_SHARED_SUB_AVAILABLE] = {MQR_MQTT_PT_BYTE, CTX(MQR_MQTT_CONNACK)},
};

/* User Property is allowed everywhere except PINGREQ/PINGRESP, which carry
 * no properties at all, so the wide mask above is harmless. */

static int prop_type(uint32_t id)
{
    return id <= MQR_MQTT_PROP_MAX_ID ? prop_info[id].type : 0;
}

void mqr__mqtt_props_iter(mqr_mqtt_prop_iter_t *it, const uint8_t *props, size_t len)
{
    it->p = props;
    it->end = props ? props + len : props; /* NULL + 0 is undefined */
}

static inline uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static int iter_fail(mqr_mqtt_prop_iter_t *it)
{
    it->p = it->end;
    return MQR_EMALFORMED;
}

int mqr__mqtt_props_next(mqr_mqtt_prop_iter_t *it, mqr_mqtt_prop_t *out)
{
    const uint8_t *p = it->p;
    if (p >= it->end) return 0;
    size_t left = (size_t)(it->end - p);
    /* The identifier is a varint, but every defined one fits in one byte, so a
     * continuation bit means an unknown id or a non-minimal form of a known
     * one [MQTT-1.5.5-1]: malformed either way. */
    uint8_t id = *p++;
    left--;
    int type = prop_type(id);
    if (!type) return iter_fail(it);
    out->id = id;
    out->type = (uint8_t)type;
    out->len = 0;
    out->value_len = 0;
    out->num = 0;
    out->data = NULL;
    out->value = NULL;
    switch (type) {
    case MQR_MQTT_PT_BYTE:
        if (left < 1) return iter_fail(it);
        out->num = *p++;
        break;
    case MQR_MQTT_PT_U16:
        if (left < 2) return iter_fail(it);
        out->num = rd16(p);
        p += 2;
        break;
    case MQR_MQTT_PT_U32:
        if (left < 4) return iter_fail(it);
        out->num = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        p += 4;
        break;
    case MQR_MQTT_PT_VARINT: {
        size_t used;
        if (mqr__mqtt_varint_read(p, left, &out->num, &used) ||
            used != mqr__mqtt_varint_size(out->num))
            return iter_fail(it);
        p += used;
        break;
    }
    case MQR_MQTT_PT_STRING:
    case MQR_MQTT_PT_BINARY:
    case MQR_MQTT_PT_PAIR: {
        if (left < 2) return iter_fail(it);
        size_t n = rd16(p);
        if (left - 2 < n) return iter_fail(it);
        out->len = (uint16_t)n;
        out->data = p + 2;
        p += 2 + n;
        left -= 2 + n;
        if (type == MQR_MQTT_PT_PAIR) {
            if (left < 2) return iter_fail(it);
            size_t m = rd16(p);
            if (left - 2 < m) return iter_fail(it);
            out->value_len = (uint16_t)m;
            out->value = p + 2;
            p += 2 + m;
        }
        break;
    }
    }
    it->p = p;
    return 1;
}

static bool str_ok(const uint8_t *s, size_t len)
{
    return mqr__utf8_valid((const char *)s, len);
}

int mqr__mqtt_props_parse(const uint8_t *props, size_t len, int ctx, mqr_mqtt_dir_t dir,
                          mqr_mqtt_propset_t *ps)
{
    ps->seen = 0;
    ps->n_user = 0;
    ps->n_sub_id = 0;
    if (ctx < 1 || ctx > MQR_MQTT_CTX_WILL) return MQR_EINVAL;
    mqr_mqtt_prop_iter_t it;
    mqr__mqtt_props_iter(&it, props, len);
    mqr_mqtt_prop_t pr;
    int rc;
    while ((rc = mqr__mqtt_props_next(&it, &pr)) > 0) {
        uint8_t id = pr.id;
        if (!(prop_info[id].where & CTX(ctx))) return MQR_EMALFORMED;
        uint64_t bit = 1ull << id;
        bool repeat = (ps->seen & bit) != 0;
        switch (id) {
        case MQR_MQTT_PROP_USER:
            if (!str_ok(pr.data, pr.len) || !str_ok(pr.value, pr.value_len)) return MQR_EUTF8;
            ps->n_user++;
            repeat = false;
            break;
        case MQR_MQTT_PROP_SUBSCRIPTION_ID:
            if (ctx == MQR_MQTT_PUBLISH && dir == MQR_MQTT_FROM_CLIENT) return MQR_EPROTOCOL;
            if (pr.num == 0) return MQR_EPROTOCOL; /* 5.0 §3.3.2.3.8, §3.8.2.1.2 */
            ps->n_sub_id++;
            if (ctx == MQR_MQTT_PUBLISH) repeat = false;
            break;
        case MQR_MQTT_PROP_PAYLOAD_FORMAT:
        case MQR_MQTT_PROP_REQUEST_PROBLEM_INFO:
        case MQR_MQTT_PROP_REQUEST_RESPONSE_INFO:
        case MQR_MQTT_PROP_MAX_QOS:
        case MQR_MQTT_PROP_RETAIN_AVAILABLE:
        case MQR_MQTT_PROP_WILDCARD_SUB_AVAILABLE:
        case MQR_MQTT_PROP_SUB_ID_AVAILABLE:
        case MQR_MQTT_PROP_SHARED_SUB_AVAILABLE:
            if (pr.num > 1) return MQR_EPROTOCOL;
            break;
        case MQR_MQTT_PROP_RECEIVE_MAX:
        case MQR_MQTT_PROP_MAX_PACKET_SIZE:
        case MQR_MQTT_PROP_TOPIC_ALIAS:
            if (pr.num == 0) return MQR_EPROTOCOL;
            break;
        case MQR_MQTT_PROP_SESSION_EXPIRY:
            /* [MQTT-3.14.2-2]: a server never sends it in DISCONNECT */
            if (ctx == MQR_MQTT_DISCONNECT && dir == MQR_MQTT_FROM_SERVER) return MQR_EPROTOCOL;
            break;
        case MQR_MQTT_PROP_RESPONSE_TOPIC:
            if (!str_ok(pr.data, pr.len)) return MQR_EUTF8;
            /* [MQTT-3.3.2-14]: a Topic Name, so no wildcards */
            if (mqr__mqtt_topic_name_check((const char *)pr.data, pr.len)) return MQR_EPROTOCOL;
            break;
        default:
            if (pr.type == MQR_MQTT_PT_STRING && !str_ok(pr.data, pr.len)) return MQR_EUTF8;
            break;
        }
        if (repeat) return MQR_EPROTOCOL; /* "more than once is a Protocol Error" */
        if (!(ps->seen & bit)) {
            ps->seen |= bit;
            ps->v[id] = pr;
        }
    }
    if (rc < 0) return rc;
    if ((ps->seen & (1ull << MQR_MQTT_PROP_AUTH_DATA)) &&
        !(ps->seen & (1ull << MQR_MQTT_PROP_AUTH_METHOD)))
        return MQR_EPROTOCOL; /* 5.0 §3.1.2.11.10 */
    return 0;
}

int mqr__mqtt_props_validate(const uint8_t *props, size_t len, int ctx, mqr_mqtt_dir_t dir)
{
    mqr_mqtt_propset_t ps;
    return mqr__mqtt_props_parse(props, len, ctx, dir, &ps);
}

size_t mqr__mqtt_props_strip(const uint8_t *props, size_t len, uint8_t *dst)
{
    mqr_mqtt_prop_iter_t it;
    mqr__mqtt_props_iter(&it, props, len);
    mqr_mqtt_prop_t pr;
    size_t out = 0;
    const uint8_t *start = it.p;
    while (mqr__mqtt_props_next(&it, &pr) > 0) {
        size_t n = (size_t)(it.p - start);
        if (pr.id != MQR_MQTT_PROP_TOPIC_ALIAS && pr.id != MQR_MQTT_PROP_SUBSCRIPTION_ID &&
            pr.id != MQR_MQTT_PROP_WILL_DELAY) {
            /* never ahead of the source, so in-place use is safe */
            if (dst + out != start) memmove(dst + out, start, n);
            out += n;
        }
        start = it.p;
    }
    return out;
}

/* ---- builder ---------------------------------------------------------- */

void mqr__mqtt_pb_init(mqr_mqtt_pbuild_t *b, uint8_t *buf, size_t cap)
{
    b->buf = buf;
    b->cap = buf ? cap : 0;
    b->len = 0;
    b->err = 0;
}

/* Reserves n bytes; NULL when they do not fit (len still grows, so the final
 * length is the size needed). */
static uint8_t *pb_room(mqr_mqtt_pbuild_t *b, size_t n)
{
    size_t at = b->len;
    b->len += n;
    if (b->err) return NULL;
    if (b->len > b->cap) {
        b->err = MQR_ETOOLARGE;
        return NULL;
    }
    return b->buf + at;
}

static bool pb_check(mqr_mqtt_pbuild_t *b, uint8_t id, int type)
{
    if (prop_type(id) != type) {
        b->err = MQR_EINVAL;
        return false;
    }
    return true;
}

static void put16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

void mqr__mqtt_pb_byte(mqr_mqtt_pbuild_t *b, uint8_t id, uint8_t v)
{
    if (!pb_check(b, id, MQR_MQTT_PT_BYTE)) return;
    uint8_t *p = pb_room(b, 2);
    if (!p) return;
    p[0] = id;
    p[1] = v;
}

void mqr__mqtt_pb_u16(mqr_mqtt_pbuild_t *b, uint8_t id, uint16_t v)
{
    if (!pb_check(b, id, MQR_MQTT_PT_U16)) return;
    uint8_t *p = pb_room(b, 3);
    if (!p) return;
    p[0] = id;
    put16(p + 1, v);
}

void mqr__mqtt_pb_u32(mqr_mqtt_pbuild_t *b, uint8_t id, uint32_t v)
{
    if (!pb_check(b, id, MQR_MQTT_PT_U32)) return;
    uint8_t *p = pb_room(b, 5);
    if (!p) return;
    p[0] = id;
    put16(p + 1, v >> 16);
    put16(p + 3, v & 0xFFFF);
}

void mqr__mqtt_pb_varint(mqr_mqtt_pbuild_t *b, uint8_t id, uint32_t v)
{
    if (!pb_check(b, id, MQR_MQTT_PT_VARINT)) return;
    if (v > MQR_MQTT_MAX_VARINT) {
        b->err = MQR_EINVAL;
        return;
    }
    uint8_t *p = pb_room(b, 1 + mqr__mqtt_varint_size(v));
    if (!p) return;
    p[0] = id;
    mqr__mqtt_varint_write(p + 1, v);
}

static void pb_bytes(mqr_mqtt_pbuild_t *b, uint8_t id, int type, const void *d, size_t len)
{
    if (!pb_check(b, id, type)) return;
    if (len > UINT16_MAX) {
        b->err = MQR_EINVAL;
        return;
    }
    uint8_t *p = pb_room(b, 3 + len);
    if (!p) return;
    p[0] = id;
    put16(p + 1, (uint32_t)len);
    if (len) memcpy(p + 3, d, len);
}

void mqr__mqtt_pb_string(mqr_mqtt_pbuild_t *b, uint8_t id, const char *s, size_t len)
{
    pb_bytes(b, id, MQR_MQTT_PT_STRING, s, len);
}

void mqr__mqtt_pb_binary(mqr_mqtt_pbuild_t *b, uint8_t id, const void *data, size_t len)
{
    pb_bytes(b, id, MQR_MQTT_PT_BINARY, data, len);
}

void mqr__mqtt_pb_user(mqr_mqtt_pbuild_t *b, const char *name, size_t name_len, const char *value,
                       size_t value_len)
{
    if (name_len > UINT16_MAX || value_len > UINT16_MAX) {
        b->err = MQR_EINVAL;
        return;
    }
    uint8_t *p = pb_room(b, 5 + name_len + value_len);
    if (!p) return;
    p[0] = MQR_MQTT_PROP_USER;
    put16(p + 1, (uint32_t)name_len);
    if (name_len) memcpy(p + 3, name, name_len);
    p += 3 + name_len;
    put16(p, (uint32_t)value_len);
    if (value_len) memcpy(p + 2, value, value_len);
}

void mqr__mqtt_pb_add(mqr_mqtt_pbuild_t *b, const mqr_mqtt_prop_t *pr)
{
    switch (prop_type(pr->id)) {
    case MQR_MQTT_PT_BYTE:
        if (pr->num > 0xFF) break;
        mqr__mqtt_pb_byte(b, pr->id, (uint8_t)pr->num);
        return;
    case MQR_MQTT_PT_U16:
        if (pr->num > 0xFFFF) break;
        mqr__mqtt_pb_u16(b, pr->id, (uint16_t)pr->num);
        return;
    case MQR_MQTT_PT_U32:
        mqr__mqtt_pb_u32(b, pr->id, pr->num);
        return;
    case MQR_MQTT_PT_VARINT:
        mqr__mqtt_pb_varint(b, pr->id, pr->num);
        return;
    case MQR_MQTT_PT_STRING:
        mqr__mqtt_pb_string(b, pr->id, (const char *)pr->data, pr->len);
        return;
    case MQR_MQTT_PT_BINARY:
        mqr__mqtt_pb_binary(b, pr->id, pr->data, pr->len);
        return;
    case MQR_MQTT_PT_PAIR:
        mqr__mqtt_pb_user(b, (const char *)pr->data, pr->len, (const char *)pr->value,
                          pr->value_len);
        return;
    }
    b->err = MQR_EINVAL;
}

int mqr__mqtt_pb_finish(const mqr_mqtt_pbuild_t *b, size_t *len)
{
    *len = b->len;
    return b->err;
}
