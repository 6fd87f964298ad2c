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

int mqr__ldead_letter(mqr_engine_t *e, const mqr_msg_t *msg, const char *topic,
                      const char *origin_name, const mqr_luser_prop_t *extra, size_t n)
{
    size_t cap = msg->props_len;
    for (size_t i = 0; i < n; i++) /* id, two lengths, key, value */
        cap += 5 + strlen(extra[i].key) + extra[i].len;
    uint8_t *props = malloc(cap ? cap : 1);
    if (!props) return MQR_ENOMEM;
    memcpy(props, msg->props, msg->props_len);
    mqr_mqtt_pbuild_t b;
    mqr__mqtt_pb_init(&b, props + msg->props_len, cap - msg->props_len);
    for (size_t i = 0; i < n; i++)
        mqr__mqtt_pb_user(&b, extra[i].key, strlen(extra[i].key), extra[i].value, extra[i].len);
    size_t added = 0;
    int rc = mqr__mqtt_pb_finish(&b, &added);
    if (rc == 0) {
        mqr_msg_init_t in = {
            .topic = topic,
            .topic_len = strlen(topic),
            .payload = msg->payload,
            .payload_len = msg->payload_len,
            .props = props,
            .props_len = msg->props_len + added,
            .qos = msg->qos,
            .origin = MQR_ORIGIN_LUA,
            .origin_name = origin_name,
            .expiry_s = msg->expiry_s,
        };
        rc = mqr__engine_publish_data(e, &in);
    }
    free(props);
    return rc;
}
