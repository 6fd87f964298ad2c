/*
 * upstream_transport.h — the seam under upstream sessions: what a session
 * asks of the client that carries it to the broker (a transport), and how
 * the transport answers.
 *
 * The session manager (upstream.c and its neighbours: configuration,
 * reconnect and backoff, failover, subscriptions restored after a connect,
 * buffers while dormant, waiters, events, status, inbound routing) is one
 * piece of code for every transport. A transport connects, sends, receives
 * and reports; it never decides what the session does next.
 *
 * Calls go down through the session's ops table (u->tp), on the loop thread
 * unless an op says otherwise; each returns 0 or a negative MQR_E* (a
 * transport translates its own codes). Answers come back only as events
 * (up_event_t, pushed with mqr__up_ev_push from any thread) that the loop
 * drains in mqr__up_handle_event — never as a call into the session. What a
 * transport keeps per session hangs off u->tp_state, which only that
 * transport's files read.
 *
 * What the events mean at the seam:
 *   EV_CONNECT_OK      a connect attempt succeeded; text: the broker URI.
 *   EV_CONNECTED       the session is connected (after EV_CONNECT_OK).
 *   EV_CONNECT_FAILED  the attempt failed: code is a 3.1.1 CONNACK return
 *                      code (1-5), or < 0 an error of the transport's own
 *                      (named by its strerror); reason a v5 reason code;
 *                      text its words; net_failure set when the TCP or TLS
 *                      connection itself failed with no reason given.
 *   EV_TLS_ERROR       one line of OpenSSL's report for the next failure.
 *   EV_SERVER_DISCONNECT the broker sent DISCONNECT (reason, text).
 *   EV_LOST            the connection is gone; text: why.
 *   EV_SUB_OK          a SUBACK for token: code the granted QoS (v5: the
 *                      reason code).
 *   EV_SUB_FAILED      a SUBSCRIBE (token) refused: code 0 and reason the
 *                      reason code (0x80 when none), or code an error of
 *                      the transport's. A SUBSCRIBE cut short by a lost
 *                      connection is not answered (the next connect sends
 *                      it again).
 *   EV_PUB_DONE        the request of waiter ptr (an up_pub_t) completed:
 *                      code 0 or the transport's error, reason the broker's.
 *   EV_MESSAGE         a message from the broker (upstream_int.h). With
 *                      ack_id != 0 the transport acknowledges it to the
 *                      broker only when the loop calls ack (after routing).
 */
#ifndef MQR_UPSTREAM_TRANSPORT_H
#define MQR_UPSTREAM_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mqr_upstream mqr_upstream_t;
typedef struct mqr_msg mqr_msg_t;
typedef struct up_sub up_sub_t;
typedef struct up_pub up_pub_t;

/* v5 subscription options of one SUBSCRIBE. */
typedef struct {
    bool no_local, rap;
    int rh; /* retain handling, 0-2 */
} up_subflags_t;

typedef struct up_transport up_transport_t;
struct up_transport {
    const char *name; /* what mqr_upstream_config_t's transport names: "paho", "native" */

    /* The session's transport state (u->tp_state), made once its settings
     * are known (u->persistent decided) and freed with the session, after
     * destroy. init may fail (MQR_ENOMEM): the session is not made. */
    int (*init)(mqr_upstream_t *u);
    void (*free)(mqr_upstream_t *u);

    /* Makes the client (a persistent session's restores its records); no
     * event comes before connect. Logs a failure in its own words. */
    int (*create)(mqr_upstream_t *u);
    /* Ends the client. flush: first let what is queued or in flight go out,
     * for at most about a second. On a libuv worker (it may block) — or on
     * the loop when no worker could be had, or when the transport says
     * destroy_on_loop — never with u->lock held. No callback of the
     * transport runs for u once it returned. */
    void (*destroy)(mqr_upstream_t *u, bool flush);

    /* One connect attempt with the session's settings (URIs, credentials,
     * will, TLS, keep-alive, clean start), answered by EV_CONNECT_OK then
     * EV_CONNECTED, or by EV_CONNECT_FAILED. The session retries. */
    int (*connect)(mqr_upstream_t *u);
    /* SUBSCRIBE of remote (the filter as the broker sees it) at s->qos;
     * sets s->token, which its EV_SUB_OK / EV_SUB_FAILED carries. f: v5
     * options (ignored on 3.1.1). MQR_ENOTCONN: the loss is on its way. */
    int (*subscribe)(mqr_upstream_t *u, up_sub_t *s, const char *remote, const up_subflags_t *f);
    /* UNSUBSCRIBE of remote, answered to waiter p (EV_PUB_DONE); p NULL:
     * nobody waits. */
    int (*unsubscribe)(mqr_upstream_t *u, const char *remote, up_pub_t *p);
    /* A round trip to the broker answered to waiter p (EV_PUB_DONE); p
     * NULL: nobody waits. */
    int (*ping)(mqr_upstream_t *u, up_pub_t *p);
    /* PUBLISH msg to topic remote, with expiry_s (> 0) as its v5 Message
     * Expiry; buffered while disconnected (MQR_EFULL when the buffer is
     * full). With a waiter p it is answered by EV_PUB_DONE: QoS 0 once
     * written, QoS 1/2 when the broker completed it (Paho's rule). */
    int (*publish)(mqr_upstream_t *u, const char *remote, const mqr_msg_t *msg, uint32_t expiry_s,
                   up_pub_t *p);
    /* Publishes handed to the client and not completed yet. */
    size_t (*inflight)(mqr_upstream_t *u);
    /* Optional, loop thread, cheap (called per publish): while connected,
     * the QoS 1/2 publishes waiting for room in the broker's window, and in
     * *bytes what was written for the broker and its socket has not taken
     * yet. The session pauses its publishers on it (upstream_publish.c).
     * NULL: no backpressure, a full buffer refuses (Paho). */
    size_t (*backlog)(mqr_upstream_t *u, size_t *bytes);
    /* Optional: acknowledges the message of an EV_MESSAGE whose ack_id is
     * not 0, once it was routed (mqr__up_deliver). NULL: the transport
     * acknowledges messages itself, before routing (Paho). */
    void (*ack)(mqr_upstream_t *u, uint32_t ack_id);

    /* Optional, with records_in_engine_store: the session's records (what
     * it owes the broker), counted and discarded by the transport, not in
     * the upstream store (upstream_persist.h). */
    int64_t (*records_count)(mqr_upstream_t *u);
    void (*records_discard)(mqr_upstream_t *u);

    /* The transport's words for an error code it put in an event (< 0), or
     * NULL; the name of an MQTT reason code. Any thread. */
    const char *(*strerror)(int code);
    const char *(*reason_text)(int reason);

    /* After a lost connection, a new client must replace the old one (the
     * session destroys it on a worker; the next attempt creates one). */
    bool (*rebuild_after_loss)(const mqr_upstream_t *u);
    /* A connect waits for the transport's shared receive thread: while one
     * is under way, another connected session pings (see nudge_connect,
     * upstream.c). */
    bool nudge_connects;
    /* destroy never blocks: run it (and a rebuild) on the loop, not on a
     * worker (upstream_work.c). A transport whose client lives on the loop
     * must not be ended from another thread. */
    bool destroy_on_loop;
    /* A persistent session keeps its outgoing QoS 1/2 publishes in the
     * engine's store (store_outbox.h), written in the loop turn's group
     * commit: publish returns once the row is written, and an acknowledgement
     * to whoever handed the message in must wait for the commit (noted as
     * MQR_DELIVER_STORED while routing). Its received messages need no
     * inbox: they are acknowledged after routing (ack). Without it the
     * transport writes the upstream store itself, committed per record. */
    bool records_in_engine_store;
};

/* The transports there are (upstream_paho_ops.c, ...). */
extern const up_transport_t mqr__up_transport_paho;
extern const up_transport_t mqr__up_transport_native;

#endif
