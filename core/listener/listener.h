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

#include "auth.h"
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
     * A connected client's queue past it makes the listener stop reading
     * from the clients whose publishes reach it, until it drains below
     * half (nothing accepted is dropped; a queue grows past the limit by
     * what those publishers had already sent, at most 64 x max_queued,
     * beyond which messages are dropped and counted). An offline
     * persistent session keeps at most this many; newer ones are dropped
     * and counted (offline_dropped), logged once per absence. Default
     * 1000. */
    unsigned max_queued;
    /* Bytes of encoded output waiting for the socket, per client. Beyond it
     * QoS 0 messages to that client are dropped and counted, and the
     * client's own input is paused until the output drains below half.
     * Default 8 MiB. */
    size_t max_out_bytes;
    /* Inbound QoS 1/2 publishes a client may have unacknowledged (the
     * Receive Maximum a v5 client is told; a 3.1.1 client exceeding it
     * with QoS 2 is disconnected too, while for acks waiting on the store
     * its input pauses instead). Default 1024. */
    unsigned receive_max;
    /* Topic aliases a v5 client may set (the Topic Alias Maximum it is
     * told). Default 32, at most 1024; negative: none. */
    int topic_alias_max;
    /* Subscriptions per client; more are refused (SUBACK 0x97 / 0x80).
     * Default 4096. */
    unsigned max_subscriptions;
    /* Open sockets at once (CONNECT sent or not). Beyond it, a few more
     * (MQR_LSN_OVER_SLACK) are read for their CONNECT, for 1 s at most, and
     * answered CONNACK 0x97 Quota exceeded (v5) or 0x03 Server unavailable
     * (3.1.1); past those, sockets are closed at accept. Counted in
     * connects_over_limit. Default 100000. */
    unsigned max_connections;
    /* A connection must send CONNECT within this. Default 10000 ms. */
    unsigned connect_timeout_ms;
    /* Longest keep-alive a v5 client may use, in seconds: a client asking
     * for more, or for none (0), is told this value as Server Keep Alive
     * (5.0 §3.2.2.3.14). 3.1.1 has no way to say it, so 3.1.1 clients keep
     * theirs. Default 0: no limit. */
    unsigned max_keepalive;
    /* Highest QoS clients may use: 1 or 2 as such, 0 = the default 2,
     * negative = QoS 0 only. A v5 client is told (CONNACK Maximum QoS) and a
     * PUBLISH above it closes it with DISCONNECT 0x9B; a 3.1.1 client's is
     * acknowledged as sent and routed at max_qos. SUBSCRIBE grants at most
     * this. A v5 will above it is refused with CONNACK 0x9B. */
    int max_qos;
    /* PUBLISH packets per second one client may send, as a token bucket of
     * publish_burst (default: publish_rate, at least 1). Beyond it the
     * listener stops reading from that client until the bucket refills
     * (TCP backpressure, nothing is dropped); each pause is counted in
     * publish_throttled. Default 0: no limit. */
    unsigned publish_rate;
    unsigned publish_burst;
    /* New connections per second on this listener, as a token bucket of
     * connect_burst (default: connect_rate, at least 1). Beyond it new
     * sockets are closed at accept, before reading anything, and counted in
     * connects_rate_limited. Default 0: no limit. */
    unsigned connect_rate;
    unsigned connect_burst;
    /* A client whose full queue holds publishers paused (see max_queued)
     * and that frees no in-flight room for this long is disconnected (v5
     * DISCONNECT 0x97 Quota exceeded), so it cannot stall them for ever; a
     * persistent session keeps its messages. Default 10000 ms. */
    unsigned stuck_timeout_ms;
    /* $SYS/broker/... statistics are published (retained, memory only)
     * every sys_interval_ms. Default 10000; negative: never. */
    int sys_interval_ms;
    /* Clients with neither a user name nor an authentication method
     * (core/listener/handle_auth.c, docs/auth.md): 1 allowed, -1 refused
     * (CONNACK 0x87 / 0x05), 0 the default: allowed only when the listener
     * is bound to a loopback address (127.0.0.0/8, ::1). */
    int allow_anonymous;
    /* An MQTT 3.1.1 persistent session (Clean Session 0) whose client has
     * been away this many seconds ends, with its subscriptions and queued
     * messages, as a v5 session at its Session Expiry Interval (counted in
     * sessions_expired and sessions_expired_v311). 3.1.1 has no expiry of
     * its own. Default 0: kept until the client cleans it (as Mosquitto's
     * persistent_client_expiration). */
    unsigned v311_session_expiry_s;
} mqr_listener_options_t;

/* Counters, for the metrics endpoint and tests. Only the listener writes
 * them; read them on the loop thread. */
typedef struct {
    uint64_t connections_total;     /* accepted sockets */
    uint64_t connections_current;   /* open sockets (CONNECT or not) */
    uint64_t clients_current;       /* of those, past a successful CONNECT */
    uint64_t connects_refused;      /* CONNACK with a failure code, or closed before one */
    uint64_t msgs_in;               /* PUBLISH packets received and routed */
    uint64_t msgs_out;              /* PUBLISH packets encoded for clients */
    uint64_t bytes_in;              /* bytes read from sockets */
    uint64_t bytes_out;             /* bytes written to sockets */
    uint64_t malformed;             /* connections closed for a bad packet (framing, decoding,
                                       protocol rule) */
    uint64_t dropped;               /* deliveries dropped: output buffer or queue full */
    uint64_t dropped_too_large;     /* deliveries skipped: over the client's Maximum Packet Size */
    uint64_t expired;               /* queued deliveries whose message expired first */
    uint64_t keepalive_timeouts;    /* connections closed for silence */
    uint64_t takeovers;             /* connections closed by a newer one with their client id */
    uint64_t auth_failures;         /* CONNECTs refused by authentication (credentials, SCRAM,
                                       anonymous rule or the authenticate hook) */
    uint64_t authz_denied;          /* PUBLISHes and subscriptions refused by the authorize hook */
    uint64_t connects_over_limit;   /* sockets refused for max_connections (closed at accept, or
                                       CONNACK 0x97 / 0x03 while the few beyond it are read) */
    uint64_t connects_rate_limited; /* sockets closed at accept for connect_rate */
    uint64_t connect_timeouts;      /* sockets closed for no CONNECT within connect_timeout_ms */
    uint64_t publish_throttled;     /* times a client's reading paused for publish_rate */
    uint64_t qos_exceeded;          /* PUBLISH or will above max_qos (v5: refused; 3.1.1: routed at
                                       max_qos) */
    uint64_t too_large_in;          /* packets from clients over max_packet_size */
    uint64_t refused_no_room;       /* QoS 1/2 PUBLISHes a queue or session buffer they were
                                       routed to had no room for (v5: 0x97; 3.1.1: closed) */
    uint64_t refused_failed;        /* QoS 1/2 PUBLISHes whose routing failed: no memory, the
                                       store refused a session row, the QoS 2 id or the
                                       retained message (v5: 0x80; 3.1.1: closed) */
    uint64_t session_rows_failed;   /* session rows the store refused (subscriptions, messages,
                                       QoS 2 ids) */
    uint64_t unknown_acks;          /* PUBACK/PUBREC/PUBCOMP/PUBREL for a packet id not in use */
    uint64_t clients_peak;          /* most clients_current seen */
    uint64_t sessions_offline;      /* persistent sessions whose client is away */
    uint64_t sessions_expired;      /* persistent sessions ended by their expiry */
    uint64_t sessions_expired_v311; /* of those, 3.1.1 sessions ended by v311_session_expiry_s */
    uint64_t offline_dropped;       /* QoS 1/2 messages refused by a full offline session queue */
    uint64_t publishers_paused; /* times a publisher's input paused for a full subscriber queue */
    uint64_t stuck_disconnects; /* subscribers closed for no progress while holding publishers */
    uint64_t packets_in[16];    /* packets received, by MQTT packet type (1 CONNECT .. 15 AUTH) */
    uint64_t packets_out[16];   /* packets encoded for clients, by type (counted at commit) */
} mqr_listener_stats_t;

void mqr__listener_options_init(mqr_listener_options_t *opts);

/* What every listener of an engine shares: the engine's services, handed
 * over once when the engine opens (core/engine/engine.c), and the list of
 * open listeners, which are one client-id space. Publishes go into the
 * engine through engine.h (each listener keeps its engine for that). */
struct mqr_listeners {
    uv_loop_t *loop;
    mqr_router_t *router;
    mqr_retain_t *retain;
    mqr_store_t *store;             /* NULL: none */
    struct mqr_registry *registry;  /* NULL: none (not yet, or closed) */
    mqr_auth_hooks_t *auth;         /* the script host's hooks; functions NULL = none */
    mqr_listener_t *first;          /* every open listener, newest first */
    mqr_listener_t *sessions_owner; /* the one whose client sessions are stored (the
                                     * first to start; client_session.c), NULL: none */
};

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

/* Sockets beyond max_connections that are still read, to answer their
 * CONNECT with a refusal rather than a bare close, and how long they get. */
#define MQR_LSN_OVER_SLACK 16u
#define MQR_LSN_OVER_WAIT_MS 1000u

/* Packet type names for logs ("CONNECT", ...). */
const char *mqr__listener_type_name(int type);

/* One connected client as tests and diagnostics see it. */
typedef struct {
    size_t out_bytes;    /* encoded output waiting, locked bytes included */
    size_t locked_bytes; /* handed to the write in flight */
    unsigned segments, segments_locked;
    bool writing;      /* a write is in flight */
    bool read_paused;  /* too much output waiting: its input stopped */
    bool has_qos;      /* its QoS 1/2 state exists */
    unsigned inflight; /* outbound QoS 1/2 messages not yet acknowledged */
} mqr_listener_conn_info_t;

/* The client of that id on l (NULL: the newest connection): 0 and *out,
 * or MQR_ENOENT. */
int mqr__listener_conn_info(mqr_listener_t *l, const char *client_id,
                            mqr_listener_conn_info_t *out);
/* Sets the kernel send buffer of that client's socket (a test that wants
 * the socket to fill): 0, MQR_ENOENT or a libuv error. */
int mqr__listener_conn_sndbuf(mqr_listener_t *l, const char *client_id, int bytes);

/* Publishes the $SYS topics now (also what its timer does). */
void mqr__listener_sys_publish(mqr_listener_t *l);

/* The port actually bound. */
int mqr__listener_port(const mqr_listener_t *l);

/* The listener's counters (borrowed, live). */
const mqr_listener_stats_t *mqr__listener_stats(const mqr_listener_t *l);

/* The engine's listener figures: every open listener's counters added up
 * (dropped_too_large stays apart from dropped), the earliest start, and
 * what their connections hold now. Loop thread. */
typedef struct {
    mqr_listener_stats_t stats;
    uint64_t start_ms; /* loop time; 0 without an open listener */
    uint64_t subscriptions, inflight, queued;
} mqr_listener_totals_t;
void mqr__listener_totals(const mqr_listeners_t *all, mqr_listener_totals_t *out);

/* A device was registered (registry.c): the connected client of that id,
 * if any and of that tenant, makes it online. */
void mqr__listener_device_attach(mqr_listeners_t *all, const char *tenant, const char *id);

#endif
