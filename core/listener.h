/*
 * listener.h — the embedded MQTT 3.1.1/5.0 server.
 *
 * Accepts TCP clients on the engine's loop, speaks MQTT through the pure
 * codec in core/mqtt/, and is a subscriber of the router like any other:
 * each client's subscriptions are trie entries. The implementation lives in
 * core/listener/ (server.c: accept and lifecycle; conn.c: reading, framing,
 * output batching, keep-alive; handle_*.c: packets from clients; send.c:
 * packets to clients; deliver.c: messages from the router to a client).
 *
 * Loop thread only. The listener never blocks and never starts threads.
 */
#ifndef MQR_LISTENER_H
#define MQR_LISTENER_H

#include "engine.h"

#include <stddef.h>
#include <stdint.h>

/* Limits of one listener. Every field 0 means "the default" named here. */
typedef struct {
    /* Largest packet a client may send (and the Maximum Packet Size a v5
     * client is told). Bigger ones close the connection (v5: DISCONNECT
     * 0x95). Default 1 MiB; at most 268435460, MQTT's own limit. */
    size_t max_packet_size;
    /* Outbound QoS 1/2 messages sent but not yet acknowledged, per client;
     * a v5 client's smaller Receive Maximum wins. Default 32, at most 1024. */
    unsigned max_inflight;
    /* QoS 1/2 messages waiting behind a full in-flight window, per client.
     * Beyond it new ones are dropped and counted. Default 1000. */
    unsigned max_queued;
    /* Bytes of encoded output waiting for the socket, per client. Beyond it
     * QoS 0 messages to that client are dropped and counted, and the
     * client's own input is paused until the output drains below half.
     * Default 8 MiB. */
    size_t max_out_bytes;
    /* Inbound QoS 1/2 publishes a client may have unacknowledged (the
     * Receive Maximum a v5 client is told; a 3.1.1 client exceeding it is
     * disconnected too). Default 1024. */
    unsigned receive_max;
    /* Topic aliases a v5 client may set (the Topic Alias Maximum it is
     * told). Default 32, at most 1024; negative: none. */
    int topic_alias_max;
    /* Subscriptions per client; more are refused (SUBACK 0x97 / 0x80).
     * Default 4096. */
    unsigned max_subscriptions;
    /* Clients at once; more are closed at accept. Default 100000. */
    unsigned max_connections;
    /* A connection must send CONNECT within this. Default 10000 ms. */
    unsigned connect_timeout_ms;
} mqr_listener_options_t;

/* Counters, for the metrics endpoint and tests. Only the listener writes
 * them; read them on the loop thread. */
typedef struct {
    uint64_t connections_total;   /* accepted sockets */
    uint64_t connections_current; /* open sockets (CONNECT or not) */
    uint64_t clients_current;     /* of those, past a successful CONNECT */
    uint64_t connects_refused;    /* CONNACK with a failure code, or closed before one */
    uint64_t msgs_in;             /* PUBLISH packets received and routed */
    uint64_t msgs_out;            /* PUBLISH packets encoded for clients */
    uint64_t bytes_in;            /* bytes read from sockets */
    uint64_t bytes_out;           /* bytes written to sockets */
    uint64_t malformed;           /* connections closed for a bad packet (framing, decoding,
                                     protocol rule) */
    uint64_t dropped;             /* deliveries dropped: output buffer or queue full */
    uint64_t dropped_too_large;   /* deliveries skipped: over the client's Maximum Packet Size */
    uint64_t expired;             /* queued deliveries whose message expired first */
    uint64_t keepalive_timeouts;  /* connections closed for silence */
    uint64_t takeovers;           /* connections closed by a newer one with their client id */
} mqr_listener_stats_t;

void mqr__listener_options_init(mqr_listener_options_t *opts);

/* Binds host:port (an IP literal or a name resolved once, synchronously),
 * listens, and from then on serves clients on e->loop. port 0 means 1883
 * (the engine's convention). opts may be NULL for the defaults; it is
 * copied. On failure nothing stays open and *out is NULL. */
int mqr__listener_start(mqr_engine_t *e, const char *host, int port, mqr_listener_t **out);
int mqr__listener_start_opts(mqr_engine_t *e, const char *host, int port,
                             const mqr_listener_options_t *opts, mqr_listener_t **out);

/* Closes the listening socket and every client (a v5 client is sent
 * DISCONNECT 0x8B first, best effort). Subscriptions leave the router at
 * once; handles close asynchronously: the memory goes when the loop has run
 * their close callbacks (one more loop iteration). l may be NULL. */
void mqr__listener_close(mqr_listener_t *l);

/* The port actually bound. */
int mqr__listener_port(const mqr_listener_t *l);

/* The listener's counters (borrowed, live). */
const mqr_listener_stats_t *mqr__listener_stats(const mqr_listener_t *l);

#endif
