/*
 * mqttc_int.h — the client's state, shared by core/mqttc/ files only:
 * mqttc.c (lifecycle, reading, packets from the server, keep-alive),
 * mqttc_out.c (the output buffer and its one write per loop turn),
 * mqttc_inflight.c (packet ids, the outbound window, inbound QoS state).
 * Nothing outside core/mqttc/ includes it.
 */
#ifndef MQR_MQTTC_INT_H
#define MQR_MQTTC_INT_H

#include "mqttc.h"

#include "alias_out.h"

#include <arpa/inet.h>

typedef enum {
    MQTTC_NEW,     /* created, not connecting */
    MQTTC_TCP,     /* TCP connect under way */
    MQTTC_CONNACK, /* CONNECT queued, waiting for CONNACK */
    MQTTC_UP,      /* connected() fired */
    MQTTC_CLOSING, /* DISCONNECT queued: write it, shut down, close */
    MQTTC_CLOSED,  /* closed() fired (or freed): nothing more */
} mqttc_state_t;

enum { OP_WAIT_ACK = 1, OP_WAIT_COMP = 2 }; /* QoS 2: after PUBREC, PUBREL sent */

/* One publish (QoS 1/2), subscribe or unsubscribe waiting for its answer.
 * A publish keeps its encoded packet: the window sends it when there is
 * room, and session resume (later) resends it with DUP. */
typedef struct mqttc_op {
    struct mqttc_op *next; /* the waiting queue */
    uint64_t token;
    uint64_t seq; /* when first sent: resends keep this order */
    uint8_t kind; /* MQR_MQTT_PUBLISH, _SUBSCRIBE, _UNSUBSCRIBE */
    uint8_t qos;
    uint8_t state;
    uint16_t id;
    uint32_t id_off; /* offset of the packet id in data */
    size_t len;
    uint8_t data[]; /* the PUBLISH packet (empty for the others) */
} mqttc_op_t;

/* Inbound QoS state per packet id (mqttc_inflight.c). */
enum { IN_FREE = 0, IN_QOS1 = 1, IN_QOS2 = 2, IN_RELEASING = 3 };

/* A growable byte buffer. */
typedef struct {
    uint8_t *p;
    size_t len;
    size_t cap;
} mqttc_buf_t;

typedef struct {
    uint64_t *v;
    size_t n;
    size_t cap;
    size_t head; /* reported up to here (done() may close mid-way) */
} mqttc_tokens_t;

struct mqr_mqttc {
    uv_loop_t *loop;
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_timer_t timer; /* connect timeout, then keep-alive ticks */
    uv_idle_t idle;   /* armed while output waits: flushes and keeps poll from blocking */
    uv_write_t wreq;
    uv_shutdown_t sreq;
    int nopen; /* handles not yet closed; memory goes at 0 */
    mqttc_state_t st;
    bool freed; /* no callbacks any more */
    bool tcp_closing;
    bool writing; /* wreq in flight */
    bool idle_on;
    mqr_mqttc_cbs_t cb;
    void *ud;

    /* options, copied */
    int version;
    uint16_t keepalive_s;
    uint16_t receive_max;
    uint16_t max_inflight;
    uint32_t max_packet_size;
    uint32_t connect_timeout_ms;
    uint8_t *connect_pkt; /* CONNECT, encoded once at new() */
    size_t connect_len;
    char *auth_method;     /* 5.0 enhanced authentication, NULL = none (mqttc_auth.c) */
    struct mqttc_tls *tls; /* NULL: plain TCP (mqttc_tls.c) */
    struct mqttc_ws *ws;   /* NULL: MQTT straight on the stream (mqttc_ws.c) */
    /* bytes for the stream under MQTT (the WebSocket upgrade, frames),
     * waiting for the next flush to seal or write them */
    mqttc_buf_t spend;
    bool reauth_on; /* an AUTH 0x19 of ours is under way */

    /* what the server's CONNACK allows */
    uint16_t window;
    uint32_t srv_max_packet; /* 0 = no limit */
    uint8_t srv_max_qos;
    bool srv_retain;
    /* topic aliases toward the server (its Topic Alias Maximum), for QoS 0
     * only: a QoS 1/2 packet is kept for a resend on another connection,
     * where this connection's aliases mean nothing */
    mqr_mqtt_alias_out_t out_alias;

    /* input: an incomplete packet's bytes stay at the start */
    mqttc_buf_t in;

    /* output: gathered this turn (out), and being written (wbuf) */
    mqttc_buf_t out;
    mqttc_buf_t wbuf;
    mqttc_tokens_t tok;  /* QoS 0 tokens in out */
    mqttc_tokens_t wtok; /* QoS 0 tokens in wbuf */
    bool shutdown_after; /* CLOSING: shut down once everything is written */

    /* outbound: ops[id] for ids 1..nids handed out; free ids on a stack */
    mqttc_op_t **ops;
    uint32_t nids;
    uint32_t ops_cap;
    uint16_t *free_ids;
    uint32_t nfree;
    uint32_t inflight;  /* QoS 1/2 publishes holding an id */
    uint64_t op_seq;    /* the next op->seq */
    bool keep_inflight; /* publishes survive the close (mqr__mqttc_resume) */
    bool resumed;       /* holds a predecessor's publishes: resend at CONNACK */
    mqttc_op_t *wait_head, *wait_tail;
    size_t nwait;

    /* inbound QoS 1/2 state by packet id (65536 bytes, on first use) */
    uint8_t *in_state;
    uint32_t in_unacked;

    /* keep-alive */
    uint64_t last_sent;
    uint64_t ping_at;
    uint64_t last_recv;
    bool ping_out;
};

/* mqttc_out.c */
/* Room for need more bytes in b (doubling), or MQR_ENOMEM; and appending. */
int mqr__mqttc_buf_grow(mqttc_buf_t *b, size_t need);
int mqr__mqttc_buf_add(mqttc_buf_t *b, const void *p, size_t n);
uint8_t *mqr__mqttc_out_reserve(mqr_mqttc_t *c, size_t n); /* NULL: no memory */
void mqr__mqttc_out_commit(mqr_mqttc_t *c, size_t n);
int mqr__mqttc_out_token(mqr_mqttc_t *c, uint64_t token);
int mqr__mqttc_out_ack(mqr_mqttc_t *c, int type, uint16_t id, uint8_t reason);
void mqr__mqttc_out_fail(mqr_mqttc_t *c, int err); /* QoS 0 tokens not yet reported */
void mqr__mqttc_out_free(mqr_mqttc_t *c);
void mqr__mqttc_on_idle(uv_idle_t *h);
/* Output waits that out_commit did not announce (TLS handshake records):
 * flush on this loop turn. */
void mqr__mqttc_out_kick(mqr_mqttc_t *c);

/* mqttc_inflight.c */
mqttc_op_t *mqr__mqttc_op_new(size_t data_len);
int mqr__mqttc_id_take(mqr_mqttc_t *c, mqttc_op_t *op); /* 0 or MQR_EFULL/ENOMEM */
mqttc_op_t *mqr__mqttc_id_find(mqr_mqttc_t *c, uint16_t id);
void mqr__mqttc_id_release(mqr_mqttc_t *c, mqttc_op_t *op); /* frees op */
int mqr__mqttc_op_send(mqr_mqttc_t *c, mqttc_op_t *op);     /* a publish into the window */
void mqr__mqttc_pump(mqr_mqttc_t *c);                       /* waiting -> window */
/* Fails what is pending with err; with keep_inflight, publishes stay. */
void mqr__mqttc_ops_fail(mqr_mqttc_t *c, int err);
/* Frees every operation without done() (the client goes away). */
void mqr__mqttc_ops_drop(mqr_mqttc_t *c);
/* After CONNACK of a resumed client: resend, or finish, what it holds. */
int mqr__mqttc_resend(mqr_mqttc_t *c, bool session_present);
int mqr__mqttc_in_publish(mqr_mqttc_t *c, const mqr_mqtt_publish_t *p, uint32_t *ack_id,
                          bool *deliver);
int mqr__mqttc_in_pubrel(mqr_mqttc_t *c, uint16_t id);
int mqr__mqttc_out_ackpkt(mqr_mqttc_t *c, const mqr_mqtt_ack_t *a); /* PUBACK/PUBREC/PUBCOMP */

/* mqttc_tls.c: NULL c->tls means plain TCP and none of these is called */
typedef struct mqttc_tls mqttc_tls_t;
int mqr__mqttc_tls_new(mqr_mqttc_t *c, const mqr_mqttc_options_t *o);
void mqr__mqttc_tls_free(mqr_mqttc_t *c);
uv_buf_t mqr__mqttc_tls_rbuf(mqr_mqttc_t *c); /* where reads land */
/* TCP is up: the ClientHello goes out. */
int mqr__mqttc_tls_start(mqr_mqttc_t *c);
/* Socket bytes in; plain bytes appended to c->in; *handshaken when the
 * handshake completed with this call. < 0: the connection ended. */
int mqr__mqttc_tls_input(mqr_mqttc_t *c, const uint8_t *p, size_t n, bool *handshaken);
bool mqr__mqttc_tls_ready(const mqr_mqttc_t *c); /* handshake done */
/* Plain bytes out: sealed into records waiting for mqr__mqttc_tls_take. */
int mqr__mqttc_tls_seal(mqr_mqttc_t *c, const uint8_t *p, size_t n);
/* Appends the waiting ciphertext to b. */
int mqr__mqttc_tls_take(mqr_mqttc_t *c, mqttc_buf_t *b);
bool mqr__mqttc_tls_pending(const mqr_mqttc_t *c);

/* mqttc_ws.c: NULL c->ws means no WebSocket and none of these is called */
typedef struct mqttc_ws mqttc_ws_t;
int mqr__mqttc_ws_new(mqr_mqttc_t *c, const mqr_mqttc_options_t *o);
void mqr__mqttc_ws_free(mqr_mqttc_t *c);
uv_buf_t mqr__mqttc_ws_rbuf(mqr_mqttc_t *c); /* where reads land without TLS */
/* The stream is up: the upgrade request goes out. */
int mqr__mqttc_ws_start(mqr_mqttc_t *c);
/* Stream bytes in: the upgrade's answer (then CONNECT), then frames whose
 * payloads are appended to c->in. < 0: the connection ended. */
int mqr__mqttc_ws_input(mqr_mqttc_t *c, const uint8_t *p, size_t n);
/* MQTT bytes out as one binary frame, appended to c->spend. */
int mqr__mqttc_ws_frame(mqr_mqttc_t *c, const uint8_t *p, size_t n);

/* mqttc_auth.c */
/* The server's AUTH packet, while connecting or re-authenticating. */
void mqr__mqttc_on_auth(mqr_mqttc_t *c, const uint8_t *pkt, size_t len);
/* CONNACK 0 with our method: its data must satisfy cb->auth. false: the
 * connection ended. */
bool mqr__mqttc_auth_connack(mqr_mqttc_t *c, const mqr_mqtt_connack_t *a);

/* mqttc.c */
void mqr__mqttc_fail(mqr_mqttc_t *c, int err, int reason, const char *why);
void mqr__mqttc_done(mqr_mqttc_t *c, uint64_t token, int status, int reason);
void mqr__mqttc_shutdown(mqr_mqttc_t *c); /* CLOSING, all written: FIN, then close */
/* The CONNECT packet out, waiting for CONNACK (after TCP, TLS, WS). */
void mqr__mqttc_send_connect(mqr_mqttc_t *c);
/* The byte stream under MQTT is up (TCP, or TLS's handshake done): the
 * WebSocket upgrade or CONNECT goes out. */
void mqr__mqttc_stream_up(mqr_mqttc_t *c);
/* Bytes of the stream (TCP's, or TLS's plain ones) in: through WebSocket
 * when there is one, into c->in. < 0: the connection ended. */
int mqr__mqttc_stream_in(mqr_mqttc_t *c, const uint8_t *p, size_t n);

#endif
