/*
 * message.h — the engine's message: immutable once built, reference-counted,
 * one allocation holding topic, payload and raw MQTT v5 properties.
 *
 * Fan-out hands the same pointer to every subscriber, each taking a ref for
 * as long as it keeps the message (a queued delivery, a buffered Lua
 * iterator, a queue message handed to Lua). Counts
 * are plain integers: only the loop thread may touch a message. To change a
 * topic or payload, build a new message.
 */
#ifndef MQR_MESSAGE_H
#define MQR_MESSAGE_H

#include "mqrouter.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    MQR_ORIGIN_LISTENER = 0, /* a client of the embedded listener */
    MQR_ORIGIN_SESSION = 1,  /* an upstream broker session */
    MQR_ORIGIN_LUA = 2,      /* publish() from a script */
    MQR_ORIGIN_C = 3,        /* mqr_publish() from a C host */
    MQR_ORIGIN_STORE = 4,    /* loaded from the store (retained at start-up) */
} mqr_origin_t;

struct mqr_msg {
    uint32_t refs;
    uint8_t qos;
    bool retain;
    uint8_t origin;     /* mqr_origin_t */
    uint8_t size_class; /* message.c's pool: its block size class + 1, 0 = none */
    uint16_t topic_len; /* MQTT caps topics at 65535 bytes */
    uint32_t payload_len;
    uint32_t props_len;
    uint32_t expiry_s;       /* v5 message expiry interval, 0 = never */
    uint64_t created_ms;     /* wall clock (ms since epoch) when built */
    const void *origin_conn; /* the connection/session it came from, for no-local; may be NULL */
    const char *origin_name; /* client id, session name or route; NUL-terminated, inline */
    const char *topic;       /* NUL-terminated, inline */
    const uint8_t *payload;  /* inline, not NUL-terminated (a NUL follows for convenience) */
    const uint8_t *props;    /* raw v5 property bytes without their length prefix; inline */
    char data[];
};

/* What to build a message from; every buffer is copied. */
typedef struct {
    const char *topic;
    size_t topic_len;
    const void *payload;
    size_t payload_len;
    const uint8_t *props; /* raw v5 properties (no Topic Alias, no Subscription Identifier) */
    size_t props_len;
    int qos;
    bool retain;
    mqr_origin_t origin;
    const char *origin_name; /* may be NULL */
    size_t origin_name_len;  /* 0 = strlen(origin_name): saves a strlen per message */
    const void *origin_conn; /* may be NULL */
    uint32_t expiry_s;
    uint64_t created_ms; /* 0 = now */
} mqr_msg_init_t;

/* Returns a message with one reference owned by the caller, or NULL when out
 * of memory or a length exceeds what MQTT can carry (topic > 65535 bytes,
 * payload > 268435455 bytes). Does not validate the topic. */
mqr_msg_t *mqr__msg_new(const mqr_msg_init_t *init);

/* "listener", "session", "lua", "c", "store" for an mqr_origin_t; "unknown"
 * for anything else. */
const char *mqr__origin_kind_name(unsigned origin);

/* Milliseconds since the epoch, for created_ms. */
uint64_t mqr__now_ms(void);

/* The same from the kernel's tick-granular clock (4 ms here; 1-10 ms on
 * Linux): a third of the cost, which counts once per published message. */
uint64_t mqr__now_ms_coarse(void);

/* Length of msg->origin_name without reading it: the name and the topic
 * lie one after the other in msg->data, the name's NUL between them. */
static inline size_t mqr__msg_origin_name_len(const mqr_msg_t *msg)
{
    return (size_t)(msg->topic - msg->origin_name) - 1u;
}

#endif
