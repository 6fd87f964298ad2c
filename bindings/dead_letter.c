/*
 * dead_letter.c — publishing a message that could not be handled to a
 * dead-letter topic: the same payload, QoS, expiry and properties, plus
 * user properties that say where it came from and why (a route's handler
 * error, a queue's dead letter). Must not: keep msg.
 */
#include "script.h"

#include "codec.h"

#include <stdlib.h>
#include <string.h>

/* msg's properties followed by the n user properties, in a malloc'd
 * buffer (*len bytes), or NULL (no memory, or too long to encode). */
static uint8_t *props_plus(const mqr_msg_t *msg, const mqr_luser_prop_t *extra, size_t n,
                           size_t *len)
{
    size_t cap = msg->props_len;
    for (size_t i = 0; i < n; i++) /* id, two lengths, key, value */
        cap += 5 + strlen(extra[i].key) + extra[i].len;
    uint8_t *props = malloc(cap ? cap : 1);
    if (!props) return NULL;
    memcpy(props, msg->props, msg->props_len);
    mqr_mqtt_pbuild_t b;
    mqr__mqtt_pb_init(&b, props + msg->props_len, cap - msg->props_len);
    for (size_t i = 0; i < n; i++)
        mqr__mqtt_pb_user(&b, extra[i].key, strlen(extra[i].key), extra[i].value, extra[i].len);
    size_t added = 0;
    if (mqr__mqtt_pb_finish(&b, &added) < 0) {
        free(props);
        return NULL;
    }
    *len = msg->props_len + added;
    return props;
}

static mqr_msg_init_t init_from(const mqr_msg_t *msg, const char *topic, const uint8_t *props,
                                size_t props_len, const char *origin_name)
{
    return (mqr_msg_init_t){
        .topic = topic,
        .topic_len = strlen(topic),
        .payload = msg->payload,
        .payload_len = msg->payload_len,
        .props = props,
        .props_len = props_len,
        .qos = msg->qos,
        .origin = MQR_ORIGIN_LUA,
        .origin_name = origin_name,
        .expiry_s = msg->expiry_s,
    };
}

int mqr__ldead_letter(mqr_engine_t *e, const mqr_msg_t *msg, const char *topic,
                      const char *origin_name, const mqr_luser_prop_t *extra, size_t n)
{
    size_t len;
    uint8_t *props = props_plus(msg, extra, n, &len);
    if (!props) return MQR_ENOMEM;
    mqr_msg_init_t in = init_from(msg, topic, props, len, origin_name);
    int rc = mqr__engine_publish_data(e, &in);
    free(props);
    return rc;
}

mqr_msg_t *mqr__lmsg_with_user_props(const mqr_msg_t *msg, const mqr_luser_prop_t *extra, size_t n)
{
    size_t len;
    uint8_t *props = props_plus(msg, extra, n, &len);
    if (!props) return NULL;
    mqr_msg_init_t in = init_from(msg, msg->topic, props, len, msg->origin_name);
    in.topic_len = msg->topic_len;
    in.retain = msg->retain;
    in.origin = (mqr_origin_t)msg->origin;
    in.created_ms = msg->created_ms;
    in.origin_conn = msg->origin_conn;
    mqr_msg_t *m = mqr__msg_new(&in);
    free(props);
    return m;
}

bool mqr__lmsg_user_prop(const mqr_msg_t *msg, const char *key, const char **value, size_t *len)
{
    mqr_mqtt_prop_iter_t it;
    mqr_mqtt_prop_t p;
    size_t klen = strlen(key);
    mqr__mqtt_props_iter(&it, msg->props, msg->props_len);
    while (mqr__mqtt_props_next(&it, &p) == 1) {
        if (p.id != MQR_MQTT_PROP_USER || p.len != klen || memcmp(p.data, key, klen) != 0) continue;
        *value = (const char *)p.value;
        *len = p.value_len;
        return true;
    }
    return false;
}
