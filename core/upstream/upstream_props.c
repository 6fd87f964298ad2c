/*
 * upstream_props.c — MQTT v5 properties between Paho's MQTTProperties list
 * and the raw bytes an mqr_msg_t carries: encoding an incoming message's
 * (on Paho's thread, from on_message) and decoding an outgoing one's (on
 * the loop, before sending). Part of the Paho transport: only its files
 * (upstream_paho_int.h) call these. Pure functions. Must not: keep state,
 * lock, log, or allocate other than into Paho's list.
 */
#include "upstream_paho_int.h"

#include <string.h>

/* ---- v5 properties: Paho's list <-> raw bytes ---------------------------- */

static size_t vbi_len(uint32_t v)
{
    return v < 128u ? 1 : v < 16384u ? 2 : v < 2097152u ? 3 : 4;
}

static uint8_t *put_u16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return p + 2;
}

static uint8_t *put_lenstr(uint8_t *p, const MQTTLenString *s)
{
    p = put_u16(p, (unsigned)s->len);
    if (s->len > 0) memcpy(p, s->data, (size_t)s->len);
    return p + s->len;
}

/* What the engine keeps of an incoming message's properties: everything but
 * Topic Alias and Subscription Identifier (meaningful only on that one
 * connection). Message Expiry stays, as the listener keeps it (rules read
 * it in msg.properties; a listener subscriber served within the first
 * second gets the properties as they are): the broker sent what is left of
 * it (MQTT 5 §3.3.2.3.3), and msg->expiry_s, counted from arrival, carries
 * the same number for the engine's own expiry checks. */
static bool keep_prop(int id)
{
    return id != MQTTPROPERTY_CODE_TOPIC_ALIAS && id != MQTTPROPERTY_CODE_SUBSCRIPTION_IDENTIFIER;
}

/* Bytes mqr__up_props_encode() will write. Runs on Paho's thread: pure. */
size_t mqr__up_props_encoded_len(const MQTTProperties *props)
{
    size_t n = 0;
    for (int i = 0; i < props->count; i++) {
        const MQTTProperty *p = &props->array[i];
        if (!keep_prop(p->identifier)) continue;
        switch (MQTTProperty_getType(p->identifier)) {
        case MQTTPROPERTY_TYPE_BYTE:
            n += 2;
            break;
        case MQTTPROPERTY_TYPE_TWO_BYTE_INTEGER:
            n += 3;
            break;
        case MQTTPROPERTY_TYPE_FOUR_BYTE_INTEGER:
            n += 5;
            break;
        case MQTTPROPERTY_TYPE_VARIABLE_BYTE_INTEGER:
            n += 1 + vbi_len(p->value.integer4);
            break;
        case MQTTPROPERTY_TYPE_BINARY_DATA:
        case MQTTPROPERTY_TYPE_UTF_8_ENCODED_STRING:
            n += 3 + (size_t)p->value.data.len;
            break;
        case MQTTPROPERTY_TYPE_UTF_8_STRING_PAIR:
            n += 5 + (size_t)p->value.data.len + (size_t)p->value.value.len;
            break;
        default:
            break;
        }
    }
    return n;
}

/* Writes the kept properties as raw MQTT bytes; returns the Message Expiry
 * Interval (0 = none). Runs on Paho's thread: pure. */
uint32_t mqr__up_props_encode(const MQTTProperties *props, uint8_t *out)
{
    uint32_t expiry = 0;
    for (int i = 0; i < props->count; i++) {
        const MQTTProperty *p = &props->array[i];
        if (p->identifier == MQTTPROPERTY_CODE_MESSAGE_EXPIRY_INTERVAL) expiry = p->value.integer4;
        if (!keep_prop(p->identifier)) continue;
        int type = MQTTProperty_getType(p->identifier);
        if (type < 0) continue;
        *out++ = (uint8_t)p->identifier; /* every defined identifier fits one byte */
        switch (type) {
        case MQTTPROPERTY_TYPE_BYTE:
            *out++ = p->value.byte;
            break;
        case MQTTPROPERTY_TYPE_TWO_BYTE_INTEGER:
            out = put_u16(out, p->value.integer2);
            break;
        case MQTTPROPERTY_TYPE_FOUR_BYTE_INTEGER:
            out = put_u16(out, p->value.integer4 >> 16);
            out = put_u16(out, p->value.integer4 & 0xffffu);
            break;
        case MQTTPROPERTY_TYPE_VARIABLE_BYTE_INTEGER: {
            uint32_t v = p->value.integer4;
            do {
                uint8_t b = v & 0x7f;
                v >>= 7;
                *out++ = v ? (uint8_t)(b | 0x80) : b;
            } while (v);
            break;
        }
        case MQTTPROPERTY_TYPE_BINARY_DATA:
        case MQTTPROPERTY_TYPE_UTF_8_ENCODED_STRING:
            out = put_lenstr(out, &p->value.data);
            break;
        case MQTTPROPERTY_TYPE_UTF_8_STRING_PAIR:
            out = put_lenstr(out, &p->value.data);
            out = put_lenstr(out, &p->value.value);
            break;
        default:
            break;
        }
    }
    return expiry;
}

static int get_lenstr(const uint8_t *raw, size_t len, size_t *i, MQTTLenString *s)
{
    if (len - *i < 2) return MQR_EMALFORMED;
    size_t n = ((size_t)raw[*i] << 8) | raw[*i + 1];
    *i += 2;
    if (len - *i < n) return MQR_EMALFORMED;
    s->len = (int)n;
    s->data = (char *)(raw + *i);
    *i += n;
    return 0;
}

/* Parses a message's raw properties into Paho's list (which copies strings).
 * Only properties a PUBLISH may carry are accepted; Message Expiry is left
 * out because msg->expiry_s is authoritative (the caller adds what remains
 * of it), Topic Alias and Subscription Identifier because they belong to the
 * connection the message came in on. Anything else is MQR_EMALFORMED. */
int mqr__up_props_decode(const uint8_t *raw, size_t len, MQTTProperties *out)
{
    size_t i = 0;
    while (i < len) {
        MQTTProperty p;
        memset(&p, 0, sizeof p);
        int id = raw[i++];
        p.identifier = (enum MQTTPropertyCodes)id;
        bool skip = false;
        int rc = 0;
        switch (id) {
        case MQTTPROPERTY_CODE_PAYLOAD_FORMAT_INDICATOR:
            if (len - i < 1) return MQR_EMALFORMED;
            p.value.byte = raw[i++];
            break;
        case MQTTPROPERTY_CODE_MESSAGE_EXPIRY_INTERVAL:
            if (len - i < 4) return MQR_EMALFORMED;
            i += 4;
            skip = true;
            break;
        case MQTTPROPERTY_CODE_TOPIC_ALIAS:
            if (len - i < 2) return MQR_EMALFORMED;
            i += 2;
            skip = true;
            break;
        case MQTTPROPERTY_CODE_SUBSCRIPTION_IDENTIFIER: {
            int n = 0;
            while (i < len && (raw[i] & 0x80) && n < 3) {
                i++;
                n++;
            }
            if (i >= len || (raw[i] & 0x80)) return MQR_EMALFORMED;
            i++;
            skip = true;
            break;
        }
        case MQTTPROPERTY_CODE_CONTENT_TYPE:
        case MQTTPROPERTY_CODE_RESPONSE_TOPIC:
        case MQTTPROPERTY_CODE_CORRELATION_DATA:
            rc = get_lenstr(raw, len, &i, &p.value.data);
            break;
        case MQTTPROPERTY_CODE_USER_PROPERTY:
            rc = get_lenstr(raw, len, &i, &p.value.data);
            if (rc == 0) rc = get_lenstr(raw, len, &i, &p.value.value);
            break;
        default:
            return MQR_EMALFORMED;
        }
        if (rc < 0) return rc;
        if (!skip && MQTTProperties_add(out, &p) != 0) return MQR_ENOMEM;
    }
    return 0;
}
