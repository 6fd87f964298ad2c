/*
 * encode.c — MQTT 3.1.1 and 5.0 packets from structs to wire bytes.
 *
 * Each encoder first computes the exact Remaining Length, so callers can size
 * a packet without writing it, and then writes without further bounds
 * checks: the size computation is the only guard, and it must mirror the
 * writes field by field. Encoders trust string contents (they came through a
 * decoder or from our own code) and never allocate.
 */
#include "codec.h"

#include <string.h>

static inline bool ver_ok(int version)
{
    return version == MQR_MQTT_V311 || version == MQR_MQTT_V5;
}

static inline void put8(uint8_t **w, uint8_t v)
{
    *(*w)++ = v;
}

static inline void put16(uint8_t **w, uint16_t v)
{
    (*w)[0] = (uint8_t)(v >> 8);
    (*w)[1] = (uint8_t)v;
    *w += 2;
}

static inline void put_raw(uint8_t **w, const void *d, size_t n)
{
    if (n) memcpy(*w, d, n);
    *w += n;
}

/* A two-byte length and the bytes: string or binary data. */
static inline void put_lp(uint8_t **w, const void *d, size_t n)
{
    put16(w, (uint16_t)n);
    put_raw(w, d, n);
}

static inline void put_var(uint8_t **w, uint32_t v)
{
    *w += mqr__mqtt_varint_write(*w, v);
}

static inline void put_props(uint8_t **w, const mqr_mqtt_bin_t *props)
{
    put_var(w, props->len);
    put_raw(w, props->p, props->len);
}

/* Property Length plus properties; callers check len <= MQR_MQTT_MAX_VARINT. */
static inline size_t props_size(size_t len)
{
    return mqr__mqtt_varint_size((uint32_t)len) + len;
}

/* Total size from the Remaining Length, and whether to write. */
static int sized(size_t rl, const uint8_t *buf, size_t cap, size_t *len)
{
    if (rl > MQR_MQTT_MAX_REMAINING) return MQR_EINVAL;
    *len = 1 + mqr__mqtt_varint_size((uint32_t)rl) + rl;
    if (buf && cap < *len) return MQR_ETOOLARGE;
    return 0;
}

static inline uint8_t *start(uint8_t *buf, uint8_t first, size_t rl)
{
    uint8_t *w = buf;
    put8(&w, first);
    put_var(&w, (uint32_t)rl);
    return w;
}

/* ---- CONNECT, CONNACK --------------------------------------------------- */

int mqr__mqtt_encode_connect(const mqr_mqtt_connect_t *c, uint8_t *buf, size_t cap, size_t *len)
{
    *len = 0;
    if (!ver_ok(c->version) || c->will_qos > 2) return MQR_EINVAL;
    bool v5 = c->version == MQR_MQTT_V5;
    if (c->props.len > MQR_MQTT_MAX_VARINT || c->will_props.len > MQR_MQTT_MAX_VARINT)
        return MQR_EINVAL;
    if ((c->has_will && c->will_payload.len > UINT16_MAX) ||
        (c->has_password && c->password.len > UINT16_MAX))
        return MQR_EINVAL;
    size_t rl = 6 + 1 + 1 + 2; /* "MQTT", level, flags, keep alive */
    if (v5) rl += props_size(c->props.len);
    rl += 2 + (size_t)c->client_id.len;
    if (c->has_will) {
        if (v5) rl += props_size(c->will_props.len);
        rl += 2 + (size_t)c->will_topic.len + 2 + (size_t)c->will_payload.len;
    }
    if (c->has_username) rl += 2 + (size_t)c->username.len;
    if (c->has_password) rl += 2 + (size_t)c->password.len;
    int rc = sized(rl, buf, cap, len);
    if (rc || !buf) return rc;

    uint8_t flags =
        (c->clean_start ? 0x02 : 0) | (c->has_password ? 0x40 : 0) | (c->has_username ? 0x80 : 0);
    if (c->has_will) flags |= (uint8_t)(0x04 | (c->will_qos << 3) | (c->will_retain ? 0x20 : 0));
    uint8_t *w = start(buf, MQR_MQTT_CONNECT << 4, rl);
    put_lp(&w, "MQTT", 4);
    put8(&w, c->version);
    put8(&w, flags);
    put16(&w, c->keep_alive);
    if (v5) put_props(&w, &c->props);
    put_lp(&w, c->client_id.p, c->client_id.len);
    if (c->has_will) {
        if (v5) put_props(&w, &c->will_props);
        put_lp(&w, c->will_topic.p, c->will_topic.len);
        put_lp(&w, c->will_payload.p, c->will_payload.len);
    }
    if (c->has_username) put_lp(&w, c->username.p, c->username.len);
    if (c->has_password) put_lp(&w, c->password.p, c->password.len);
    return 0;
}

int mqr__mqtt_encode_connack(const mqr_mqtt_connack_t *c, int version, uint8_t *buf, size_t cap,
                             size_t *len)
{
    *len = 0;
    if (!ver_ok(version)) return MQR_EINVAL;
    bool v5 = version == MQR_MQTT_V5;
    if (c->props.len > MQR_MQTT_MAX_VARINT) return MQR_EINVAL;
    size_t rl = 2 + (v5 ? props_size(c->props.len) : 0);
    int rc = sized(rl, buf, cap, len);
    if (rc || !buf) return rc;
    uint8_t *w = start(buf, MQR_MQTT_CONNACK << 4, rl);
    put8(&w, c->session_present ? 1 : 0);
    put8(&w, c->reason);
    if (v5) put_props(&w, &c->props);
    return 0;
}

/* ---- PUBLISH -------------------------------------------------------------- */

/* Remaining Length and the length of the properties as they will go out. */
static int publish_layout(const mqr_mqtt_publish_t *p, int version, size_t *rl_out,
                          size_t *props_out)
{
    if (!ver_ok(version) || p->qos > 2 || (p->qos && !p->packet_id)) return MQR_EINVAL;
    size_t rl = 2 + (size_t)p->topic.len + (p->qos ? 2 : 0);
    size_t pl = 0;
    if (version == MQR_MQTT_V5) {
        pl = p->props.len;
        if (p->add_topic_alias) pl += 3;
        for (size_t i = 0; i < p->n_add_sub_ids; i++) {
            uint32_t id = p->add_sub_ids[i];
            if (id == 0 || id > MQR_MQTT_MAX_VARINT) return MQR_EINVAL;
            pl += 1 + mqr__mqtt_varint_size(id);
        }
        if (pl > MQR_MQTT_MAX_VARINT) return MQR_EINVAL;
        rl += props_size(pl);
    }
    if (p->payload.len > MQR_MQTT_MAX_REMAINING) return MQR_EINVAL;
    rl += p->payload.len;
    if (rl > MQR_MQTT_MAX_REMAINING) return MQR_EINVAL;
    *rl_out = rl;
    *props_out = pl;
    return 0;
}

int mqr__mqtt_publish_size(const mqr_mqtt_publish_t *p, int version, size_t *len, size_t *head_len)
{
    size_t rl, pl;
    *len = 0;
    if (head_len) *head_len = 0;
    int rc = publish_layout(p, version, &rl, &pl);
    if (rc) return rc;
    *len = 1 + mqr__mqtt_varint_size((uint32_t)rl) + rl;
    if (head_len) *head_len = *len - p->payload.len;
    return 0;
}

static uint8_t *publish_head(const mqr_mqtt_publish_t *p, int version, uint8_t *buf, size_t rl,
                             size_t pl)
{
    uint8_t first = (uint8_t)(MQR_MQTT_PUBLISH << 4 | (p->dup ? 0x08 : 0) | p->qos << 1 |
                              (p->retain ? 0x01 : 0));
    uint8_t *w = start(buf, first, rl);
    put_lp(&w, p->topic.p, p->topic.len);
    if (p->qos) put16(&w, p->packet_id);
    if (version == MQR_MQTT_V5) {
        put_var(&w, (uint32_t)pl);
        put_raw(&w, p->props.p, p->props.len);
        if (p->add_topic_alias) {
            put8(&w, MQR_MQTT_PROP_TOPIC_ALIAS);
            put16(&w, p->add_topic_alias);
        }
        for (size_t i = 0; i < p->n_add_sub_ids; i++) {
            put8(&w, MQR_MQTT_PROP_SUBSCRIPTION_ID);
            put_var(&w, p->add_sub_ids[i]);
        }
    }
    return w;
}

int mqr__mqtt_encode_publish_head(const mqr_mqtt_publish_t *p, int version, uint8_t *buf,
                                  size_t cap, size_t *head_len)
{
    size_t rl, pl;
    *head_len = 0;
    int rc = publish_layout(p, version, &rl, &pl);
    if (rc) return rc;
    *head_len = 1 + mqr__mqtt_varint_size((uint32_t)rl) + rl - p->payload.len;
    if (!buf) return 0;
    if (cap < *head_len) return MQR_ETOOLARGE;
    publish_head(p, version, buf, rl, pl);
    return 0;
}

int mqr__mqtt_encode_publish(const mqr_mqtt_publish_t *p, int version, uint8_t *buf, size_t cap,
                             size_t *len)
{
    size_t rl, pl;
    *len = 0;
    int rc = publish_layout(p, version, &rl, &pl);
    if (rc) return rc;
    if ((rc = sized(rl, buf, cap, len)) || !buf) return rc;
    uint8_t *w = publish_head(p, version, buf, rl, pl);
    put_raw(&w, p->payload.p, p->payload.len);
    return 0;
}

/* ---- PUBACK, PUBREC, PUBREL, PUBCOMP ------------------------------------ */

int mqr__mqtt_encode_ack(const mqr_mqtt_ack_t *a, int version, uint8_t *buf, size_t cap,
                         size_t *len)
{
    *len = 0;
    if (!ver_ok(version) || a->type < MQR_MQTT_PUBACK || a->type > MQR_MQTT_PUBCOMP ||
        !a->packet_id || a->props.len > MQR_MQTT_MAX_VARINT)
        return MQR_EINVAL;
    bool v5 = version == MQR_MQTT_V5;
    /* 5.0 §3.4.2.1: omit what is implied (reason 0, no properties) */
    size_t rl = 2;
    if (v5 && a->props.len)
        rl = 3 + props_size(a->props.len);
    else if (v5 && a->reason)
        rl = 3;
    int rc = sized(rl, buf, cap, len);
    if (rc || !buf) return rc;
    uint8_t *w = start(buf, (uint8_t)(a->type << 4 | (a->type == MQR_MQTT_PUBREL ? 0x2 : 0)), rl);
    put16(&w, a->packet_id);
    if (rl > 2) put8(&w, a->reason);
    if (rl > 3) put_props(&w, &a->props);
    return 0;
}

/* ---- SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK --------------------------- */

int mqr__mqtt_encode_subscribe(const mqr_mqtt_subscribe_t *s, const mqr_mqtt_sub_entry_t *entries,
                               size_t n, int version, uint8_t *buf, size_t cap, size_t *len)
{
    *len = 0;
    if (!ver_ok(version) || !s->packet_id || n == 0 || s->props.len > MQR_MQTT_MAX_VARINT)
        return MQR_EINVAL;
    bool v5 = version == MQR_MQTT_V5;
    size_t rl = 2 + (v5 ? props_size(s->props.len) : 0);
    for (size_t i = 0; i < n; i++) {
        if (entries[i].qos > 2 || entries[i].retain_handling > 2) return MQR_EINVAL;
        rl += 2 + (size_t)entries[i].filter.len + 1;
        if (rl > MQR_MQTT_MAX_REMAINING) return MQR_EINVAL;
    }
    int rc = sized(rl, buf, cap, len);
    if (rc || !buf) return rc;
    uint8_t *w = start(buf, MQR_MQTT_SUBSCRIBE << 4 | 0x2, rl);
    put16(&w, s->packet_id);
    if (v5) put_props(&w, &s->props);
    for (size_t i = 0; i < n; i++) {
        const mqr_mqtt_sub_entry_t *e = &entries[i];
        uint8_t o = e->qos;
        if (v5)
            o |= (uint8_t)((e->no_local ? 0x04 : 0) | (e->retain_as_published ? 0x08 : 0) |
                           e->retain_handling << 4);
        put_lp(&w, e->filter.p, e->filter.len);
        put8(&w, o);
    }
    return 0;
}

int mqr__mqtt_encode_suback(const mqr_mqtt_suback_t *s, int version, uint8_t *buf, size_t cap,
                            size_t *len)
{
    *len = 0;
    if (!ver_ok(version) || !s->packet_id || s->count == 0 || s->props.len > MQR_MQTT_MAX_VARINT ||
        s->count > MQR_MQTT_MAX_REMAINING)
        return MQR_EINVAL;
    bool v5 = version == MQR_MQTT_V5;
    size_t rl = 2 + (v5 ? props_size(s->props.len) : 0) + s->count;
    int rc = sized(rl, buf, cap, len);
    if (rc || !buf) return rc;
    uint8_t *w = start(buf, MQR_MQTT_SUBACK << 4, rl);
    put16(&w, s->packet_id);
    if (v5) put_props(&w, &s->props);
    put_raw(&w, s->codes, s->count);
    return 0;
}

int mqr__mqtt_encode_unsubscribe(const mqr_mqtt_unsubscribe_t *u, const mqr_mqtt_str_t *filters,
                                 size_t n, int version, uint8_t *buf, size_t cap, size_t *len)
{
    *len = 0;
    if (!ver_ok(version) || !u->packet_id || n == 0 || u->props.len > MQR_MQTT_MAX_VARINT)
        return MQR_EINVAL;
    bool v5 = version == MQR_MQTT_V5;
    size_t rl = 2 + (v5 ? props_size(u->props.len) : 0);
    for (size_t i = 0; i < n; i++) {
        rl += 2 + (size_t)filters[i].len;
        if (rl > MQR_MQTT_MAX_REMAINING) return MQR_EINVAL;
    }
    int rc = sized(rl, buf, cap, len);
    if (rc || !buf) return rc;
    uint8_t *w = start(buf, MQR_MQTT_UNSUBSCRIBE << 4 | 0x2, rl);
    put16(&w, u->packet_id);
    if (v5) put_props(&w, &u->props);
    for (size_t i = 0; i < n; i++)
        put_lp(&w, filters[i].p, filters[i].len);
    return 0;
}

int mqr__mqtt_encode_unsuback(const mqr_mqtt_unsuback_t *u, int version, uint8_t *buf, size_t cap,
                              size_t *len)
{
    *len = 0;
    if (!ver_ok(version) || !u->packet_id) return MQR_EINVAL;
    bool v5 = version == MQR_MQTT_V5;
    if (v5 &&
        (u->count == 0 || u->count > MQR_MQTT_MAX_REMAINING || u->props.len > MQR_MQTT_MAX_VARINT))
        return MQR_EINVAL;
    size_t rl = 2 + (v5 ? props_size(u->props.len) + u->count : 0);
    int rc = sized(rl, buf, cap, len);
    if (rc || !buf) return rc;
    uint8_t *w = start(buf, MQR_MQTT_UNSUBACK << 4, rl);
    put16(&w, u->packet_id);
    if (v5) {
        put_props(&w, &u->props);
        put_raw(&w, u->codes, u->count);
    }
    return 0;
}

/* ---- PINGREQ, PINGRESP, DISCONNECT, AUTH -------------------------------- */

int mqr__mqtt_encode_ping(int type, uint8_t *buf, size_t cap, size_t *len)
{
    *len = 0;
    if (type != MQR_MQTT_PINGREQ && type != MQR_MQTT_PINGRESP) return MQR_EINVAL;
    int rc = sized(0, buf, cap, len);
    if (rc || !buf) return rc;
    start(buf, (uint8_t)(type << 4), 0);
    return 0;
}

int mqr__mqtt_encode_disconnect(const mqr_mqtt_disconnect_t *d, int version, uint8_t *buf,
                                size_t cap, size_t *len)
{
    *len = 0;
    if (!ver_ok(version) || d->props.len > MQR_MQTT_MAX_VARINT) return MQR_EINVAL;
    bool v5 = version == MQR_MQTT_V5;
    /* 5.0 §3.14.2.1: omit what is implied (reason 0, no properties) */
    size_t rl = 0;
    if (v5 && d->props.len)
        rl = 1 + props_size(d->props.len);
    else if (v5 && d->reason)
        rl = 1;
    int rc = sized(rl, buf, cap, len);
    if (rc || !buf) return rc;
    uint8_t *w = start(buf, MQR_MQTT_DISCONNECT << 4, rl);
    if (rl > 0) put8(&w, d->reason);
    if (rl > 1) put_props(&w, &d->props);
    return 0;
}

int mqr__mqtt_encode_auth(const mqr_mqtt_auth_t *a, int version, uint8_t *buf, size_t cap,
                          size_t *len)
{
    *len = 0;
    if (version != MQR_MQTT_V5 || a->props.len > MQR_MQTT_MAX_VARINT) return MQR_EINVAL;
    /* 5.0 §3.15.2.1: both may be omitted for a plain success */
    size_t rl = a->reason || a->props.len ? 1 + props_size(a->props.len) : 0;
    int rc = sized(rl, buf, cap, len);
    if (rc || !buf) return rc;
    uint8_t *w = start(buf, MQR_MQTT_AUTH << 4, rl);
    if (rl) {
        put8(&w, a->reason);
        put_props(&w, &a->props);
    }
    return 0;
}
