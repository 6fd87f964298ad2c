/*
 * alias_out.c — the table of topic aliases a sender hands out on one v5
 * connection (alias_out.h says the rules). A linear search: at most
 * MQR_MQTT_ALIAS_OUT_CAP entries, compared by hash first.
 */
#include "alias_out.h"

#include "hash.h"

#include <stdlib.h>
#include <string.h>

struct mqr_mqtt_alias_out_ent {
    char *topic;
    uint32_t hash;
    uint16_t len;
};

void mqr__mqtt_alias_out_init(mqr_mqtt_alias_out_t *a, uint16_t receiver_max)
{
    mqr__mqtt_alias_out_clear(a);
    a->max = receiver_max < MQR_MQTT_ALIAS_OUT_CAP ? receiver_max : MQR_MQTT_ALIAS_OUT_CAP;
}

uint16_t mqr__mqtt_alias_out_find(const mqr_mqtt_alias_out_t *a, const char *topic, size_t len,
                                  uint32_t *hash)
{
    uint32_t h = mqr__fnv1a32(topic, len);
    *hash = h;
    for (uint16_t i = 0; i < a->count; i++) {
        const struct mqr_mqtt_alias_out_ent *e = &a->v[i];
        if (e->hash == h && e->len == len && memcmp(e->topic, topic, len) == 0)
            return (uint16_t)(i + 1);
    }
    return 0;
}

uint16_t mqr__mqtt_alias_out_next(const mqr_mqtt_alias_out_t *a)
{
    return a->count < a->max ? (uint16_t)(a->count + 1) : 0;
}

void mqr__mqtt_alias_out_remember(mqr_mqtt_alias_out_t *a, uint16_t alias, const char *topic,
                                  size_t len, uint32_t hash)
{
    if (alias != a->count + 1 || alias > a->max) return;
    if (!a->v) {
        a->v = calloc(a->max, sizeof *a->v);
        if (!a->v) return;
    }
    char *copy = malloc(len ? len : 1);
    if (!copy) return;
    memcpy(copy, topic, len);
    struct mqr_mqtt_alias_out_ent *e = &a->v[a->count++];
    e->topic = copy;
    e->len = (uint16_t)len;
    e->hash = hash;
}

void mqr__mqtt_alias_out_clear(mqr_mqtt_alias_out_t *a)
{
    for (uint16_t i = 0; i < a->count; i++)
        free(a->v[i].topic);
    free(a->v);
    a->v = NULL;
    a->count = 0;
}
