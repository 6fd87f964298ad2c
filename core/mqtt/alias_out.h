/*
 * alias_out.h — topic aliases a sender hands out on one v5 connection
 * (5.0 §3.3.2.3.4): a topic already sent goes out as a two-byte alias with
 * an empty topic name. The listener uses it toward its clients, the MQTT
 * client (core/mqttc) toward its broker.
 *
 * Aliases are handed out first come, first kept, up to the receiver's
 * Topic Alias Maximum (capped at MQR_MQTT_ALIAS_OUT_CAP); once all are in
 * use, other topics go out in full. Never reassigning an alias keeps the
 * receiver's view simple and makes a lost or dropped packet harmless: an
 * alias is remembered only after the PUBLISH that introduces it was
 * encoded. Aliases live and die with the connection.
 */
#ifndef MQR_MQTT_ALIAS_OUT_H
#define MQR_MQTT_ALIAS_OUT_H

#include <stddef.h>
#include <stdint.h>

/* Most aliases one sender uses on a connection. */
#define MQR_MQTT_ALIAS_OUT_CAP 64u

typedef struct {
    struct mqr_mqtt_alias_out_ent *v; /* alias i + 1 stands for v[i]; NULL until the first */
    uint16_t max;                     /* the receiver's maximum, capped; 0 = none */
    uint16_t count;
} mqr_mqtt_alias_out_t;

/* Sets the maximum from the receiver's Topic Alias Maximum (a connection's
 * start: nothing is remembered yet). */
void mqr__mqtt_alias_out_init(mqr_mqtt_alias_out_t *a, uint16_t receiver_max);
/* The alias of topic (0 = none) and its hash. */
uint16_t mqr__mqtt_alias_out_find(const mqr_mqtt_alias_out_t *a, const char *topic, size_t len,
                                  uint32_t *hash);
/* The alias a new topic would get (0 = none left). */
uint16_t mqr__mqtt_alias_out_next(const mqr_mqtt_alias_out_t *a);
/* Records alias for topic once its PUBLISH is encoded (out of memory:
 * forgotten, the topic goes out in full again). */
void mqr__mqtt_alias_out_remember(mqr_mqtt_alias_out_t *a, uint16_t alias, const char *topic,
                                  size_t len, uint32_t hash);
/* Forgets every alias (the connection ended). */
void mqr__mqtt_alias_out_clear(mqr_mqtt_alias_out_t *a);

#endif
