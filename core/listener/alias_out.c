/*
 * alias_out.c — topic aliases from the server to a v5 client
 * (5.0 §3.3.2.3.4): a topic already sent on this connection goes out as a
 * two-byte alias with an empty topic name.
 *
 * Aliases are handed out first come, first kept, up to the client's Topic
 * Alias Maximum (capped at MQR_LSN_OUT_ALIAS_CAP); once all are in use,
 * other topics go out in full. Never reassigning an alias keeps the client's
 * view simple and makes a lost or dropped packet harmless: an alias is
 * remembered only after the PUBLISH that introduces it was encoded. Aliases
 * live and die with the connection (a resumed session starts afresh).
 */
#include "listener_int.h"

#include <stdlib.h>
#include <string.h>

static uint32_t hash_topic(const char *s, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

uint16_t mqr__listener_alias_out_find(const mqr_lconn_t *c, const char *topic, size_t len,
                                      uint32_t *hash)
{
    uint32_t h = hash_topic(topic, len);
    *hash = h;
    for (uint16_t i = 0; i < c->out_alias_count; i++) {
        const mqr_lout_alias_t *a = &c->out_aliases[i];
        if (a->hash == h && a->len == len && memcmp(a->topic, topic, len) == 0)
            return (uint16_t)(i + 1);
    }
    return 0;
}

uint16_t mqr__listener_alias_out_next(const mqr_lconn_t *c)
{
    return c->out_alias_count < c->out_alias_max ? (uint16_t)(c->out_alias_count + 1) : 0;
}

void mqr__listener_alias_out_remember(mqr_lconn_t *c, uint16_t alias, const char *topic, size_t len,
                                      uint32_t hash)
{
    if (alias != c->out_alias_count + 1) return;
    if (!c->out_aliases) {
        c->out_aliases = calloc(c->out_alias_max, sizeof *c->out_aliases);
        if (!c->out_aliases) return;
    }
    char *copy = malloc(len ? len : 1);
    if (!copy) return;
    memcpy(copy, topic, len);
    mqr_lout_alias_t *a = &c->out_aliases[c->out_alias_count++];
    a->topic = copy;
    a->len = (uint16_t)len;
    a->hash = hash;
}

void mqr__listener_alias_out_clear(mqr_lconn_t *c)
{
    for (uint16_t i = 0; i < c->out_alias_count; i++)
        free(c->out_aliases[i].topic);
    free(c->out_aliases);
    c->out_aliases = NULL;
    c->out_alias_count = 0;
}
