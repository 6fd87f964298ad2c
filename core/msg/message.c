/*
 * message.c — building, sharing and freeing messages.
 *
 * A message is one malloc: the struct, then origin name, topic, payload and
 * properties packed behind it, so fan-out and freeing cost nothing per part.
 */
#include "message.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MQR_MAX_PAYLOAD 268435455u /* largest MQTT remaining length */

uint64_t mqr__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

mqr_msg_t *mqr__msg_new(const mqr_msg_init_t *in)
{
    if (in->topic_len > UINT16_MAX || in->payload_len > MQR_MAX_PAYLOAD ||
        in->props_len > MQR_MAX_PAYLOAD)
        return NULL;
    size_t name_len = in->origin_name_len ? in->origin_name_len
                      : in->origin_name   ? strlen(in->origin_name)
                                          : 0;
    size_t total =
        sizeof(mqr_msg_t) + name_len + 1 + in->topic_len + 1 + in->payload_len + 1 + in->props_len;
    mqr_msg_t *m = malloc(total);
    if (!m) return NULL;
    char *p = m->data;

    m->origin_name = p;
    if (name_len) memcpy(p, in->origin_name, name_len);
    p[name_len] = '\0';
    p += name_len + 1;

    m->topic = p;
    memcpy(p, in->topic, in->topic_len);
    p[in->topic_len] = '\0';
    p += in->topic_len + 1;

    m->payload = (const uint8_t *)p;
    if (in->payload_len) memcpy(p, in->payload, in->payload_len);
    p[in->payload_len] = '\0';
    p += in->payload_len + 1;

    m->props = (const uint8_t *)p;
    if (in->props_len) memcpy(p, in->props, in->props_len);

    m->refs = 1;
    m->qos = (uint8_t)in->qos;
    m->retain = in->retain;
    m->origin = (uint8_t)in->origin;
    m->topic_len = (uint16_t)in->topic_len;
    m->payload_len = (uint32_t)in->payload_len;
    m->props_len = (uint32_t)in->props_len;
    m->expiry_s = in->expiry_s;
    m->created_ms = in->created_ms ? in->created_ms : mqr__now_ms();
    m->origin_conn = in->origin_conn;
    return m;
}

void mqr_msg_ref(mqr_msg_t *msg)
{
    msg->refs++;
}

void mqr_msg_unref(mqr_msg_t *msg)
{
    if (msg && --msg->refs == 0) free(msg);
}

const char *mqr_msg_topic(const mqr_msg_t *msg, size_t *len)
{
    if (len) *len = msg->topic_len;
    return msg->topic;
}

const void *mqr_msg_payload(const mqr_msg_t *msg, size_t *len)
{
    if (len) *len = msg->payload_len;
    return msg->payload;
}

int mqr_msg_qos(const mqr_msg_t *msg)
{
    return msg->qos;
}

int mqr_msg_retain(const mqr_msg_t *msg)
{
    return msg->retain;
}

const char *mqr__origin_kind_name(unsigned origin)
{
    static const char *const kinds[] = {"listener", "session", "lua", "c", "store"};
    return origin < sizeof kinds / sizeof kinds[0] ? kinds[origin] : "unknown";
}

const char *mqr_msg_origin_kind(const mqr_msg_t *msg)
{
    return mqr__origin_kind_name(msg->origin);
}

const char *mqr_msg_origin_name(const mqr_msg_t *msg)
{
    return msg->origin_name;
}
