/*
 * codec.c — MQTT framing, variable byte integers, topic checks, and the
 * mapping from decode errors to what is answered on the wire.
 *
 * The per-packet work lives in decode.c, encode.c and props.c. Nothing here
 * allocates or keeps state; it must stay that way, as the listener calls it
 * for every packet of every connection.
 */
#include "codec.h"

#include "utf8.h"

#include <string.h>

size_t mqr__mqtt_varint_size(uint32_t v)
{
    return v < 128u ? 1 : v < 16384u ? 2 : v < 2097152u ? 3 : 4;
}

size_t mqr__mqtt_varint_write(uint8_t *dst, uint32_t v)
{
    size_t n = 0;
    do {
        uint8_t b = v & 0x7F;
        v >>= 7;
        if (v) b |= 0x80;
        dst[n++] = b;
    } while (v && n < 4);
    return n;
}

int mqr__mqtt_varint_read(const uint8_t *buf, size_t len, uint32_t *v, size_t *used)
{
    uint32_t val = 0;
    for (size_t i = 0; i < 4; i++) {
        if (i >= len) return MQR_EINCOMPLETE;
        uint8_t b = buf[i];
        val |= (uint32_t)(b & 0x7F) << (7 * i);
        if (!(b & 0x80)) {
            *v = val;
            *used = i + 1;
            return 0;
        }
    }
    /* 3.1.1 §2.2.3 and 5.0 §1.5.5: at most four bytes */
    return MQR_EMALFORMED;
}

int mqr__mqtt_frame(const uint8_t *buf, size_t len, size_t max_size, int version,
                    mqr_mqtt_frame_t *out)
{
    if (len < 2) return MQR_EINCOMPLETE;
    uint32_t rl;
    size_t used;
    int rc = mqr__mqtt_varint_read(buf + 1, len - 1, &rl, &used);
    if (rc) return rc;
    if (version == MQR_MQTT_V5 && used != mqr__mqtt_varint_size(rl)) return MQR_EMALFORMED;
    size_t total = 1 + used + (size_t)rl;
    if (max_size == 0 || max_size > MQR_MQTT_MAX_PACKET) max_size = MQR_MQTT_MAX_PACKET;
    if (total > max_size) return MQR_ETOOLARGE;
    if (len < total) return MQR_EINCOMPLETE;
    out->type = buf[0] >> 4;
    out->flags = buf[0] & 0x0F;
    out->hdr_len = (uint8_t)(1 + used);
    out->remaining = rl;
    out->total = total;
    return 0;
}

int mqr__mqtt_topic_name_check(const char *s, size_t len)
{
    if (len == 0) return MQR_ETOPIC; /* [MQTT-4.7.3-1] */
    if (!mqr__utf8_valid(s, len)) return MQR_EUTF8;
    /* [MQTT-3.3.2-2]: no wildcards in a Topic Name */
    if (memchr(s, '+', len) || memchr(s, '#', len)) return MQR_ETOPIC;
    return 0;
}

/* Wildcards only as whole levels, '#' only as the last one (§4.7.1). */
static bool filter_levels_ok(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c != '+' && c != '#') continue;
        bool starts_level = i == 0 || s[i - 1] == '/';
        bool ends_level = i + 1 == len || s[i + 1] == '/';
        if (!starts_level || !ends_level) return false;
        if (c == '#' && i + 1 != len) return false;
    }
    return true;
}

int mqr__mqtt_topic_filter_check(const char *s, size_t len, int version, bool *shared)
{
    *shared = false;
    if (len == 0) return MQR_ETOPIC; /* [MQTT-4.7.3-1] */
    if (!mqr__utf8_valid(s, len)) return MQR_EUTF8;
    static const char share[] = "$share/";
    const size_t share_len = sizeof share - 1;
    if (version == MQR_MQTT_V5 && len >= share_len && memcmp(s, share, share_len) == 0) {
        /* 5.0 §4.8.2: $share/{ShareName}/{filter}, ShareName without '/',
         * '+', '#' and at least one character, filter non-empty */
        const char *name = s + share_len;
        size_t rest = len - share_len;
        const char *slash = memchr(name, '/', rest);
        if (!slash || slash == name) return MQR_ETOPIC;
        size_t name_len = (size_t)(slash - name);
        if (memchr(name, '+', name_len) || memchr(name, '#', name_len)) return MQR_ETOPIC;
        const char *f = slash + 1;
        size_t flen = rest - name_len - 1;
        if (flen == 0 || !filter_levels_ok(f, flen)) return MQR_ETOPIC;
        *shared = true;
        return 0;
    }
    return filter_levels_ok(s, len) ? 0 : MQR_ETOPIC;
}

uint8_t mqr__mqtt_reason_for_error(int err, int packet_type)
{
    switch (err) {
    case MQR_EMALFORMED:
    case MQR_EUTF8:
    case MQR_EINCOMPLETE: /* a packet that ends inside a field is malformed */
        return MQR_MQTT_RC_MALFORMED;
    case MQR_EPROTOCOL:
        return MQR_MQTT_RC_PROTOCOL_ERROR;
    case MQR_ETOPIC:
        return packet_type == MQR_MQTT_SUBSCRIBE || packet_type == MQR_MQTT_UNSUBSCRIBE
                   ? MQR_MQTT_RC_TOPIC_FILTER_INVALID
                   : MQR_MQTT_RC_TOPIC_NAME_INVALID;
    case MQR_ETOOLARGE:
        return MQR_MQTT_RC_PACKET_TOO_LARGE;
    case MQR_EQOS:
        return MQR_MQTT_RC_QOS_NOT_SUPPORTED;
    default:
        return MQR_MQTT_RC_UNSPECIFIED;
    }
}

bool mqr__mqtt_connect_refusal(int err, const mqr_mqtt_connect_t *c, int *version, uint8_t *code)
{
    if (err == 0) return false;
    if (c->version_unsupported) {
        /* A client below 5.0 reads the 3.1.1 (and 3.1) CONNACK layout; one
         * above is likelier to read 5.0's than the other way round. */
        if (c->protocol_level > MQR_MQTT_V5) {
            *version = MQR_MQTT_V5;
            *code = MQR_MQTT_RC_UNSUPPORTED_VERSION;
        } else {
            *version = MQR_MQTT_V311;
            *code = MQR_MQTT_V3_BAD_PROTOCOL_VERSION;
        }
        return true;
    }
    if (c->version == MQR_MQTT_V311 && c->client_id_rejected) {
        *version = MQR_MQTT_V311;
        *code = MQR_MQTT_V3_ID_REJECTED;
        return true;
    }
    if (c->version == MQR_MQTT_V5) {
        *version = MQR_MQTT_V5;
        *code = mqr__mqtt_reason_for_error(err, MQR_MQTT_CONNECT);
        return true;
    }
    return false;
}

uint8_t mqr__mqtt_connack_v3_code(uint8_t v5_reason)
{
    switch (v5_reason) {
    case MQR_MQTT_RC_SUCCESS:
        return MQR_MQTT_V3_ACCEPTED;
    case MQR_MQTT_RC_UNSUPPORTED_VERSION:
        return MQR_MQTT_V3_BAD_PROTOCOL_VERSION;
    case MQR_MQTT_RC_CLIENT_ID_INVALID:
        return MQR_MQTT_V3_ID_REJECTED;
    case MQR_MQTT_RC_BAD_USERNAME_PASSWORD:
        return MQR_MQTT_V3_BAD_USERNAME_PASSWORD;
    case MQR_MQTT_RC_NOT_AUTHORIZED:
    case MQR_MQTT_RC_BANNED:
        return MQR_MQTT_V3_NOT_AUTHORIZED;
    default:
        return MQR_MQTT_V3_SERVER_UNAVAILABLE;
    }
}
