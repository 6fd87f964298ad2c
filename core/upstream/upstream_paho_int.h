/*
 * upstream_paho_int.h — the Paho MQTTAsync transport's own: its state per
 * session, and what its files share. upstream_paho.c runs on Paho's
 * threads (the callbacks), upstream_paho_ops.c on the loop and the
 * destroying worker (the ops table of upstream_transport.h); Paho's v5
 * properties (upstream_props.c) and its user persistence hooks
 * (upstream_persist.c) are Paho's too.
 *
 * Only those files include it: the session's files know Paho through the
 * ops table (u->tp) alone, and never include <MQTTAsync.h>.
 */
#ifndef MQR_UPSTREAM_PAHO_INT_H
#define MQR_UPSTREAM_PAHO_INT_H

#include "upstream_int.h"

#include <MQTTAsync.h>

/* A session's Paho state, u->tp_state. */
typedef struct up_paho {
    /* The client: NULL while dormant, between a rebuild's destroy and the
     * next create, and once destroyed. Made and destroyed on the loop or
     * the destroying worker, never both at once. */
    MQTTAsync client;
    /* Paho's user persistence (upstream_persist.h) of a persistent
     * session, handed to every client it creates. */
    MQTTClient_persistence phooks;
    bool hooks;
    /* The destroying worker waits for the disconnect's answer: under
     * u->lock. */
    uv_cond_t cond;
    bool disconnect_done;
    /* UNSUBSCRIBEs nobody waits for (the connect nudge's ping, a route's
     * unsubscribe) until Paho answers them: under u->lock. Destroying the
     * client while the receive thread holds one's UNSUBACK leaks it inside
     * Paho 1.3.12 (the thread finds no client for the packet and drops it
     * unfreed, 48 bytes, seen under LeakSanitizer): paho_destroy waits for
     * them first, at most UP_PAHO_UNSUB_WAIT_MS. */
    unsigned unsubs_unanswered;
    /* Backpressure (paho_backlog), loop thread: QoS 1/2 publishes handed to
     * Paho on the current connection, and u->delivered when it began. */
    uint64_t bp_sent, bp_done_base, bp_connects;
} up_paho_t;

#define UP_PAHO_UNSUB_WAIT_MS 1000

static inline up_paho_t *up_paho(const mqr_upstream_t *u)
{
    return u->tp_state;
}

/* PAHO_MEMORY_ERROR, not in the public header */
#define PAHO_OOM (-99)

/* A Paho return code as MQR_E* (0 for success). */
int mqr__up_map_paho(int rc);

/* ---- upstream_props.c: v5 properties, Paho's list <-> raw bytes --------- */

size_t mqr__up_props_encoded_len(const MQTTProperties *props);
uint32_t mqr__up_props_encode(const MQTTProperties *props, uint8_t *out);
int mqr__up_props_decode(const uint8_t *raw, size_t len, MQTTProperties *out);

/* ---- upstream_persist.c: Paho's user persistence hooks ------------------ */

/* One session's view: fills *out with the hooks and a context for the
 * records of session name (copied). Pass *out to MQTTAsync_createWithOptions
 * with MQTTCLIENT_PERSISTENCE_USER; free the context with
 * mqr__upstream_persist_release() once that client is destroyed. */
int mqr__upstream_persist_hooks(mqr_upstream_persist_t *p, const char *name,
                                MQTTClient_persistence *out);
void mqr__upstream_persist_release(MQTTClient_persistence *hooks);

/* ---- upstream_paho.c: Paho's threads ------------------------------------
 * The callbacks themselves are static there and run only on Paho's
 * threads. These hand them to Paho: on the client (mqr__up_paho_set_callbacks
 * returns Paho's code), in connect, SSL, subscribe and disconnect options,
 * and in response options whose answer reaches waiter p as an EV_PUB_DONE
 * event (mqr__up_paho_answer_to). Loop thread, the disconnect's on a worker. */
int mqr__up_paho_set_callbacks(mqr_upstream_t *u);
void mqr__up_paho_connect_answers(mqr_upstream_t *u, MQTTAsync_connectOptions *o);
void mqr__up_paho_ssl_errors(mqr_upstream_t *u, MQTTAsync_SSLOptions *ssl);
void mqr__up_paho_sub_answers(mqr_upstream_t *u, MQTTAsync_responseOptions *r);
void mqr__up_paho_answer_to(const mqr_upstream_t *u, up_pub_t *p, MQTTAsync_responseOptions *r);
/* Answers for an UNSUBSCRIBE nobody waits for: they count it down in
 * up_paho_t.unsubs_unanswered (the caller counted it up). */
void mqr__up_paho_unsub_answers(mqr_upstream_t *u, MQTTAsync_responseOptions *r);
/* Waits, at most UP_PAHO_UNSUB_WAIT_MS, until no such UNSUBSCRIBE is
 * unanswered. Not on the loop. */
void mqr__up_paho_wait_unsubs(mqr_upstream_t *u);
void mqr__up_paho_disconnect_answers(mqr_upstream_t *u, MQTTAsync_disconnectOptions *d);
/* MQTTAsync_createWithOptions / MQTTAsync_destroy under the process-wide
 * lock that keeps Paho's global set-up and tear-down apart. Any thread. */
int mqr__up_paho_create(MQTTAsync *c, const char *uri, const char *id, int persist_type,
                        void *persist, MQTTAsync_createOptions *co);
void mqr__up_paho_destroy(MQTTAsync *c);

#endif
