/*
 * mqttc.h — one MQTT 3.1.1 / 5.0 client connection on a libuv loop, built
 * on core/mqtt's codec: connect, publish QoS 0/1/2 with an in-flight window,
 * subscribe, unsubscribe, receive with acknowledgement left to the caller,
 * keep-alive, and one socket write per loop turn for all packets queued.
 * Keep-alive: a PINGREQ once nothing was sent for 3/4 of it; the
 * connection fails with UV_ETIMEDOUT when, after a PINGREQ, nothing at all
 * came from the server for keepalive/2 (at least 500 ms).
 *
 * It is the transport under upstream sessions (issue 19), kept standalone:
 * it knows nothing of core/upstream/, the engine, messages or the router.
 * Reconnecting, backoff, failover, buffering beyond the window, persistence
 * and events are the session manager's, on top of this.
 *
 * Threads: everything on the loop thread, the one that created the client;
 * no call may come from another thread. Nothing here blocks or locks.
 *
 * Ownership: options, publishes, subscriptions and properties are copied
 * during the call; the caller keeps its buffers. Decoded packets handed to
 * callbacks (connack, publish) point into the client's input buffer and are
 * valid during the callback only.
 *
 * Callbacks: a call that fails never fires a callback for what it was
 * asked. closed() fires at most once, after done() for every publish,
 * subscribe and unsubscribe still pending (failed with closed's err); no
 * callback fires after closed() or after mqr__mqttc_free(). Callbacks may
 * call any function here, mqr__mqttc_free() included.
 *
 * Beyond packets in and out:
 *   - Layers under MQTT: TLS (mqttc_tls.c, OpenSSL on memory BIOs; a
 *     handshake or certificate failure ends in closed() with MQR_ETLS and
 *     OpenSSL's reason) and WebSocket (mqttc_ws.c, wslay), alone or WS over
 *     TLS.
 *   - Enhanced authentication (5.0 §4.12) is generic here: method and
 *     data in options, each step through cb->auth (mqttc_auth.c); the SCRAM
 *     messages themselves are core/auth's (mqr_scram_client_t).
 *   - Session resume: with keep_inflight, QoS 1/2 publishes outlive the
 *     connection and mqr__mqttc_resume() hands them to the next client,
 *     which resends them (DUP) or PUBRELs them after a CONNACK with Session
 *     Present (mqttc_inflight.c).
 *   - Outbound topic aliases (5.0, the server's Topic Alias Maximum): QoS 0
 *     publishes only, one alias per topic, first come first kept
 *     (alias_out.h); props given to publish must not carry a Topic Alias.
 */
#ifndef MQR_MQTTC_H
#define MQR_MQTTC_H

#include "codec.h"
#include "mqrouter.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct mqr_mqttc mqr_mqttc_t;

/* Everything is copied by mqr__mqttc_new(). */
typedef struct {
    int version;           /* MQR_MQTT_V311 (4) or MQR_MQTT_V5 (5) */
    const char *client_id; /* NULL or "" = empty (the server may assign one in 5.0) */
    const char *username;  /* NULL = none */
    const char *password;  /* NULL = none; password_len bytes, any content */
    size_t password_len;
    uint16_t keepalive_s;        /* 0 = no keep-alive */
    bool clean_start;            /* Clean Session in 3.1.1 */
    uint32_t session_expiry_s;   /* 5.0 */
    uint16_t receive_max;        /* 5.0: QoS 1/2 we accept unacknowledged; 0 = 65535 */
    uint32_t max_packet_size;    /* largest packet we accept; 0 = no limit */
    uint16_t max_inflight;       /* our cap on the outbound window; 0 = the server's */
    uint32_t connect_timeout_ms; /* TCP connect to CONNACK; 0 = 30 s */
    /* A persistent session's connection (Clean Start 0 and a session the
     * server keeps): at the close its QoS 1/2 publishes are held, not
     * failed, for mqr__mqttc_resume() on the next connection's client. */
    bool keep_inflight;
    /* will (optional: will_topic NULL = none) */
    const char *will_topic;
    const void *will_payload;
    size_t will_payload_len;
    uint8_t will_qos;
    bool will_retain;
    const uint8_t *will_props; /* 5.0, raw property bytes without length prefix */
    size_t will_props_len;
    /* 5.0 CONNECT properties, raw, without length prefix. Session Expiry,
     * Receive Maximum and Maximum Packet Size come from the fields above and
     * must not be repeated here. */
    const uint8_t *connect_props;
    size_t connect_props_len;
    /* 5.0 enhanced authentication (§4.12): the method, e.g. "SCRAM-SHA-256"
     * (NULL = none), and the data CONNECT carries; what follows goes
     * through cb->auth. */
    const char *auth_method;
    const uint8_t *auth_data;
    size_t auth_data_len;
    /* TLS (mqttc_tls.c): PEM files; cafile and capath NULL = the system's
     * CAs. host: the name the certificate must carry (and SNI, when not an
     * IP literal); NULL = no name check. */
    struct {
        bool on;
        const char *host;
        const char *cafile, *capath;
        const char *cert, *key, *key_password; /* a client certificate, optional */
        bool no_verify;                        /* accept any certificate (tests, closed networks) */
        bool no_verify_hostname;               /* check the chain, not the name */
    } tls;
    /* WebSocket (mqttc_ws.c), over TCP or TLS: the upgrade's path ("/mqtt"
     * when NULL) and Host header ("localhost" when NULL). */
    struct {
        bool on;
        const char *path;
        const char *host;
    } ws;
} mqr_mqttc_options_t;

/* What cb->auth is asked. */
enum {
    MQR_MQTTC_AUTH_CONTINUE = 0, /* the server's AUTH 0x18: answer with *out */
    MQR_MQTTC_AUTH_DONE = 1,     /* CONNACK or AUTH success: check the server's data */
};

/* ud is the pointer given to mqr__mqttc_new(). */
typedef struct {
    /* CONNACK accepted (reason 0): publish and subscribe from now on. */
    void (*connected)(void *ud, const mqr_mqtt_connack_t *ack);
    /* The connection is over: err 0 after mqr__mqttc_disconnect(), else a
     * libuv code (UV_ECONNREFUSED, UV_EOF, UV_ETIMEDOUT for connect or
     * keep-alive), MQR_EUPSTREAM with reason = the CONNACK refusal or the
     * server's DISCONNECT reason, or a codec error (MQR_EMALFORMED,
     * MQR_EPROTOCOL, ...) for what the server sent. why: static text, or
     * the server's reason string; valid during the call. */
    void (*closed)(void *ud, int err, int reason, const char *why);
    /* A PUBLISH from the server. ack_id != 0 (QoS 1/2): the server gets its
     * PUBACK / PUBREC only when the caller calls mqr__mqttc_ack(c, ack_id),
     * during the callback or later; 0 for QoS 0. A QoS 2 duplicate of a
     * message not yet released is not delivered again. */
    void (*message)(void *ud, const mqr_mqtt_publish_t *p, uint32_t ack_id);
    /* A publish, subscribe or unsubscribe is over. status 0: QoS 0 written
     * to the socket, PUBACK or PUBCOMP with reason < 0x80, SUBACK with
     * every code < 0x80 (reason = the lowest granted QoS), UNSUBACK with
     * every code < 0x80. MQR_EUPSTREAM: the server refused (reason = its
     * first code >= 0x80). Any other negative: the connection closed first
     * (closed()'s err, or MQR_ECLOSED), reason 0. QoS 0 publishes with
     * token 0 are not reported. */
    void (*done)(void *ud, uint64_t token, int status, int reason);
    /* Enhanced authentication, with options.auth_method set. CONTINUE: the
     * server's data; return 0 with *out (malloc'd, the client frees it) and
     * *out_len for the AUTH to answer with. DONE: the server's last data
     * (CONNACK, or AUTH 0x00 after mqr__mqttc_reauth); return 0 to accept
     * it. A negative return ends the connection with that error (a
     * best-effort DISCONNECT first once connected). */
    int (*auth)(void *ud, int step, const uint8_t *data, size_t len, uint8_t **out,
                size_t *out_len);
} mqr_mqttc_cbs_t;

/* A client on loop; nothing happens until mqr__mqttc_connect(). Returns 0,
 * MQR_EINVAL (NULL argument, version not 4/5, will QoS > 2, strings over
 * 65535 bytes), MQR_ETLS (TLS files that do not load), MQR_ENOMEM, or a libuv
 * code from initialising the handles.
 * cb->closed and cb->done may be NULL; so may the others if never needed. */
int mqr__mqttc_new(uv_loop_t *loop, const mqr_mqttc_options_t *o, const mqr_mqttc_cbs_t *cb,
                   void *ud, mqr_mqttc_t **out);

/* Opens TCP to addr (the caller resolves names), sends CONNECT, waits for
 * CONNACK within connect_timeout_ms. Once per client: MQR_EINVAL on a
 * second call. A failure returned here fires no callback; one that happens
 * later (refused, timed out, CONNACK refusal) ends in closed(). */
int mqr__mqttc_connect(mqr_mqttc_t *c, const struct sockaddr *addr);

/* Queues a PUBLISH (p->packet_id, dup and add_* are ignored: the client
 * sets them). QoS 0 goes out with the next write; QoS 1/2 go when the
 * window has room, in call order. Returns 0 (done() follows), or, with
 * nothing queued: MQR_ENOTCONN before connected() or after closed();
 * MQR_EQOS over the server's Maximum QoS (refused, not downgraded: the
 * caller decides); MQR_EINVAL retain where the server has no Retain
 * Available, QoS > 2; MQR_ETOPIC / MQR_EUTF8 a bad topic; MQR_ETOOLARGE
 * over the server's Maximum Packet Size; MQR_ENOMEM. */
int mqr__mqttc_publish(mqr_mqttc_t *c, const mqr_mqtt_publish_t *p, uint64_t token);

/* SUBSCRIBE / UNSUBSCRIBE n entries with props (5.0, raw, may be NULL).
 * Sent at once (they do not count against the publish window). Returns 0,
 * MQR_ENOTCONN, MQR_EINVAL (n 0, bad entry), MQR_ETOOLARGE, MQR_EFULL (all
 * 65535 packet ids in use), MQR_ENOMEM. */
int mqr__mqttc_subscribe(mqr_mqttc_t *c, const mqr_mqtt_sub_entry_t *e, size_t n,
                         const uint8_t *props, size_t plen, uint64_t token);
int mqr__mqttc_unsubscribe(mqr_mqttc_t *c, const mqr_mqtt_str_t *filters, size_t n,
                           const uint8_t *props, size_t plen, uint64_t token);

/* Re-authenticates (5.0 §4.12.1) with the method of the CONNECT: sends
 * AUTH 0x19 with data; the exchange goes on through cb->auth and ends in
 * its DONE, or in closed() when the server refuses. 0, MQR_ENOTCONN,
 * MQR_EINVAL (no method, 3.1.1, one already under way), MQR_ENOMEM. */
int mqr__mqttc_reauth(mqr_mqttc_t *c, const uint8_t *data, size_t len);

/* Takes over what old (closed, created with keep_inflight) held: its QoS
 * 1/2 publishes, in flight or waiting, with their tokens (done() now comes
 * from c), and the QoS 2 messages it received and still has to release.
 * After c's CONNACK, before connected(): with Session Present, a publish
 * not acknowledged is sent again with DUP and one after PUBREC gets its
 * PUBREL again (3.1.1 §4.4, 5.0 §4.4), in the order first sent; without
 * it, a QoS 2 publish the server had received (PUBREC) is done() and the
 * others are sent again as new ones. A QoS 1/2 message old delivered and
 * never acknowledged comes again from the server (DUP) and is delivered
 * again. Call before mqr__mqttc_connect(c); free old after. Returns 0 or
 * MQR_EINVAL (c not new, old not closed or without keep_inflight). */
int mqr__mqttc_resume(mqr_mqttc_t *c, mqr_mqttc_t *old);

/* Acknowledges an incoming QoS 1/2 message (PUBACK / PUBREC) now; the
 * QoS 2 flow goes on by itself. Returns 0, MQR_ENOENT (not an ack_id
 * waiting, or already acknowledged), MQR_ENOTCONN (connection gone). */
int mqr__mqttc_ack(mqr_mqttc_t *c, uint32_t ack_id);

/* Sends DISCONNECT (reason: 5.0 reason code, 0 normal) after what is
 * already queued, shuts the socket down and closes (at the latest 5 s
 * later, if the server stops reading); closed() reports err 0. Answers
 * that arrive meanwhile are ignored: pending operations fail with
 * MQR_ECLOSED. No-op once closing. */
void mqr__mqttc_disconnect(mqr_mqttc_t *c, int reason);

/* Closes without DISCONNECT (the server publishes the will) and fires no
 * callback any more; publishes it held (keep_inflight) are dropped. Memory goes in the handles'
 * close callbacks, so this may be called from inside a callback. NULL is a no-op. */
void mqr__mqttc_free(mqr_mqttc_t *c);

/* Backpressure: QoS 1/2 publishes in flight plus waiting for the window,
 * bytes queued but not yet taken by the socket, and whether one more
 * publish of qos would go out now (window room and output under 1 MiB). */
size_t mqr__mqttc_inflight(const mqr_mqttc_t *c);
size_t mqr__mqttc_waiting(const mqr_mqttc_t *c);
size_t mqr__mqttc_out_bytes(const mqr_mqttc_t *c);
bool mqr__mqttc_writable(const mqr_mqttc_t *c, int qos);

/* The window as agreed: min(server's Receive Maximum, max_inflight). 0
 * before connected(). */
uint16_t mqr__mqttc_window(const mqr_mqttc_t *c);

#endif
