/*
 * upstream.h — mqrouter as a client of other brokers (Paho MQTTAsync).
 *
 * Each session is one MQTTAsync client. Paho calls every callback on its own
 * thread holding a global lock, so callbacks only copy the event into the
 * session's queue and uv_async_send() the loop; everything else — building
 * messages, routing, state changes, logging of events — happens on the loop
 * thread. Messages that arrive from a session enter the engine's router with
 * origin MQR_ORIGIN_SESSION and origin_conn = the session.
 */
#ifndef MQR_UPSTREAM_H
#define MQR_UPSTREAM_H

#include "engine.h"

typedef enum {
    MQR_UPSTREAM_CONNECTING = 0,
    MQR_UPSTREAM_CONNECTED = 1,
    MQR_UPSTREAM_DISCONNECTED = 2, /* lost; Paho reconnects */
    MQR_UPSTREAM_CLOSED = 3,
} mqr_upstream_state_t;

typedef struct {
    const char *name;      /* unique per engine */
    const char *uri;       /* "tcp://127.0.0.1:1883" (ssl:// later) */
    const char *client_id; /* NULL = "mqrouter-<name>" */
    int keepalive_s;       /* 0 = 30 */
    int clean_start;       /* taken as given: non-zero = clean start; callers default it to 1
                            * (0 resumes the broker's session; on v5 it never expires) */
    const char *username;  /* may be NULL */
    const char *password;  /* may be NULL */
    int mqtt_version;      /* 4 (3.1.1, default) or 5 */
    int max_buffered;      /* messages kept while disconnected; 0 = 10000 */
} mqr_upstream_config_t;

/* Observer of state changes, on the loop thread (the bindings turn these into
 * Lua events). Called only when the state actually changes, and not for
 * mqr__upstream_close() itself (the caller knows). Failed connect attempts
 * are logged, not observed. It may close the session. */
typedef void (*mqr_upstream_event_fn)(void *arg, mqr_upstream_t *u, mqr_upstream_state_t state,
                                      const char *reason);

/* Creates the session, adds it to e->sessions and starts connecting.
 * Configuration strings are copied. */
int mqr__upstream_new(mqr_engine_t *e, const mqr_upstream_config_t *cfg, mqr_upstream_t **out);
mqr_upstream_t *mqr__upstream_find(mqr_engine_t *e, const char *name);
const char *mqr__upstream_name(const mqr_upstream_t *u);
mqr_upstream_state_t mqr__upstream_state(const mqr_upstream_t *u);
void mqr__upstream_set_observer(mqr_upstream_t *u, mqr_upstream_event_fn fn, void *arg);

/* Subscriptions are counted per filter (several routes may want one) and
 * restored after every reconnect. */
int mqr__upstream_subscribe(mqr_upstream_t *u, const char *filter, int qos);
int mqr__upstream_unsubscribe(mqr_upstream_t *u, const char *filter);

/* Sends msg's topic, payload, QoS and retain flag (and v5 properties on a v5
 * session). While disconnected, buffered up to max_buffered, then MQR_EFULL.
 * msg->expiry_s is authoritative: an expired message is dropped (returns 0),
 * otherwise a v5 session sends what is left of it as Message Expiry. Raw
 * properties a PUBLISH cannot carry make it send without properties (logged). */
int mqr__upstream_publish(mqr_upstream_t *u, const mqr_msg_t *msg);

/* Disconnects and frees the session (the free completes asynchronously: the
 * Paho client is destroyed on a libuv worker thread, then the session's
 * async handle closes). From the call on, u is no longer found by name, its
 * functions return MQR_ECLOSED and no message of it is routed any more;
 * messages still buffered in Paho are dropped. */
void mqr__upstream_close(mqr_upstream_t *u);
void mqr__upstream_close_all(mqr_engine_t *e);
/* Closes what is still open and runs the loop until every session is freed
 * (at once when the engine's own loop has run already). */
void mqr__upstream_free_all(mqr_engine_t *e);

#endif
