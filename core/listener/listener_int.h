/*
 * listener_int.h — what the files of core/listener/ share: the listener and
 * connection structs, and the functions each file offers the others.
 *
 * Who does what: server.c accepts, owns the listening socket, the timers and
 * the client-id map; conn.c owns a connection's socket (reading, framing,
 * output batching, closing); handle_*.c take one packet from a client each;
 * send.c encodes packets to a client into its output; deliver.c decides what
 * a client gets of a routed message (QoS, in-flight window, queue). Nothing
 * outside core/listener/ may include this header: listener.h is the
 * interface.
 *
 * Ownership rules used throughout: a connection is freed only when its
 * socket handle has closed and no store callback still points at it (refs);
 * the listener is freed only when its own handles have closed and every
 * connection is freed. A closing connection is out of the router and the
 * client-id map at once, so no message reaches it any more.
 */
#ifndef MQR_LISTENER_INT_H
#define MQR_LISTENER_INT_H

#include "listener.h"
#include "alias_out.h"
#include "codec.h"
#include "holds.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define MQR_LSN_LOG "listener"

/* Shared read buffer: every read of every connection lands here (reads
 * never nest on one loop thread); only an incomplete packet's tail is copied
 * back to the connection. */
#define MQR_LSN_RBUF_SIZE (256u * 1024u)
/* A partial packet at least this big is read into the connection's own
 * buffer instead, sized to the whole packet, so it is not copied again on
 * every read. */
#define MQR_LSN_OWN_READ_MIN (8u * 1024u)
/* Output arena blocks, and how many spare ones the listener keeps. */
#define MQR_LSN_BLOCK_SIZE (64u * 1024u)
#define MQR_LSN_POOL_MAX 64u
/* A connection whose output is empty starts with a block this small (most
 * output of most clients is one CONNACK, SUBACK or PINGRESP): a 64 KiB block
 * each, in a burst of connects, would stay in the heap long after. */
#define MQR_LSN_SMALL_BLOCK 512u
#define MQR_LSN_SMALL_POOL_MAX 64u
/* Payloads up to this size are copied next to their header; bigger ones are
 * written from the message itself (a reference is held until written). */
#define MQR_LSN_COPY_MAX 2048u
/* Flush at once, instead of at the end of the loop turn, past this much. */
#define MQR_LSN_FLUSH_AT (256u * 1024u)
/* Most segments handed to one write. */
#define MQR_LSN_MAX_IOV 512u
/* How often the timer looks for silent, stuck or lingering connections, and
 * how long a closing connection may take to get its last packet out. */
#define MQR_LSN_TICK_MS 250u
#define MQR_LSN_LINGER_MS 2000u
/* Password checks (PBKDF2 on the threadpool) waiting at once per listener:
 * at ~46 ms each on 4 threads, about 12 s of backlog. */
#define MQR_LSN_AUTH_PENDING_MAX 1024u
/* Token buckets count in 1/1024 of a token. */
#define MQR_LSN_TOKEN 1024u

typedef struct mqr_lconn mqr_lconn_t;
typedef struct {
    uv_write_t w;
    uv_shutdown_t s;
} mqr_lreqs_t;

/* ---- output ----------------------------------------------------------- */

/* Append-only bytes of encoded packets. Blocks are consumed in order. */
typedef struct mqr_oblock mqr_oblock_t;
struct mqr_oblock {
    mqr_oblock_t *next;
    size_t cap;
    size_t used; /* bytes appended */
    size_t done; /* bytes written out (or dropped) */
    uint8_t data[];
};

/* One piece of output: bytes in a block, or a message's payload. */
typedef struct {
    uv_buf_t buf;
    mqr_msg_t *msg;    /* payload segment: the reference it holds; else NULL */
    mqr_oblock_t *blk; /* block segment: its block; else NULL */
} mqr_oseg_t;

/* ---- outbound QoS 1/2 --------------------------------------------------- */

enum {
    MQR_LQ_FREE = 0,
    MQR_LQ_WAIT_PUBACK = 1,  /* QoS 1 PUBLISH sent */
    MQR_LQ_WAIT_PUBREC = 2,  /* QoS 2 PUBLISH sent */
    MQR_LQ_WAIT_PUBCOMP = 3, /* PUBREL sent, message released */
};

/* A delivery in flight or queued. */
typedef struct {
    mqr_msg_t *msg;  /* reference held; NULL once a QoS 2 message is released */
    uint32_t sub_id; /* v5 Subscription Identifier, 0 = none (when sub_ids is NULL) */
    uint16_t pid;
    uint8_t qos;
    uint8_t state; /* MQR_LQ_* */
    bool retain;
    uint64_t seq; /* its row in a persistent session's store, 0 = none */
    /* one copy for several overlapping subscriptions (deliver.c) carries
     * every identifier they have: sub_ids[0] of them in sub_ids[1..]
     * (owned, freed with mqr__ldelivery_free); NULL: sub_id alone */
    uint32_t *sub_ids;
} mqr_ldelivery_t;

/* The Subscription Identifiers of d: *n of them (0, 1 or more). */
static inline const uint32_t *mqr__ldelivery_ids(const mqr_ldelivery_t *d, uint32_t *n)
{
    if (d->sub_ids) {
        *n = d->sub_ids[0];
        return d->sub_ids + 1;
    }
    *n = d->sub_id != 0;
    return &d->sub_id;
}
/* Gives d the n identifiers ids (copied when more than one). 0 or
 * MQR_ENOMEM (d then has none). */
int mqr__ldelivery_set_ids(mqr_ldelivery_t *d, const uint32_t *ids, uint32_t n);
/* Ends d: its message reference and its identifiers go. */
void mqr__ldelivery_free(mqr_ldelivery_t *d);

/* A persistent session while its client is away (client_session.c): it keeps the
 * subscriptions (trie entries point at sub), the unacknowledged and queued
 * QoS 1/2 deliveries, the inbound QoS 2 ids, and a delayed will. */
typedef struct mqr_client_session mqr_client_session_t;
struct mqr_client_session {
    mqr_subscriber_t sub; /* first: the router hands it back to its deliver() */
    mqr_listener_t *l;
    mqr_client_session_t *next; /* map chain */
    char *client_id;            /* NUL-terminated, owned */
    size_t client_id_len;
    uint8_t version;
    uint32_t expiry_s;   /* Session Expiry Interval; UINT32_MAX: never */
    uint64_t expires_ms; /* uv_now when it ends; UINT64_MAX: never */
    mqr_msg_t *will;     /* delayed will (owned), published at will_ms */
    uint64_t will_ms;
    mqr_trie_entry_t **subs; /* opts.tag = index, as in a connection */
    uint32_t nsubs, subs_cap;
    mqr_ldelivery_t *msgs; /* in send order: in flight (pid != 0) first, then queued */
    uint32_t nmsgs, msgs_cap, nqueued;
    uint64_t *qos2_ids;
    uint32_t qos2_count;
    uint16_t next_pid;
    uint64_t next_seq;
    bool full_logged; /* the queue-full drop was logged for this absence */
};

/* An acknowledgement to the client that keeps its place in line: a QoS 1/2
 * answer to a retained publish waits for the store's commit, and the ones
 * behind it wait with it (MQTT 4.6: acks go in the order of the packets). */
typedef struct {
    uint16_t pid;
    uint8_t type;
    uint8_t reason;
    bool ready;
} mqr_lack_t;

/* An inbound topic alias (v5). */
typedef struct {
    char *p;
    uint16_t len;
} mqr_lalias_t;

/* The state of a connection that only QoS 1/2 traffic and backpressure use
 * (deliver.c, handle_publish.c, client_session.c). */
typedef struct mqr_lqs {
    /* outbound QoS 1/2: a ring of in-flight deliveries in send order (holes
     * where an out-of-order ack freed one; its size is the connection's
     * if_cap), then the queue behind it */
    mqr_ldelivery_t *inflight;
    uint32_t if_head, if_span, if_live;
    uint32_t q_head, q_count, q_cap;
    mqr_ldelivery_t *queue;
    /* inbound QoS 2: packet ids received and not yet released (a 65536-bit
     * set, allocated at the first QoS 2 publish) */
    uint64_t *qos2_ids;
    uint32_t qos2_count;
    /* acks in line (handle_publish.c) */
    uint32_t ack_head, ack_count, ack_cap, acks_waiting;
    mqr_lack_t *acks;
    /* backpressure (deliver.c): publishers whose input is paused because
     * this client's queue is full (their sources, holds.h) */
    mqr_holds_t holds;
    uint64_t progress_ms; /* uv_now when the client last freed in-flight room */
    uint64_t next_seq;    /* row id of the session's next stored delivery */
} mqr_lqs_t;

/* ---- a connection ------------------------------------------------------- */

typedef enum {
    MQR_LCONN_NEW = 0,     /* accepted, waiting for CONNECT */
    MQR_LCONN_ACTIVE = 1,  /* CONNACK 0 sent */
    MQR_LCONN_CLOSING = 2, /* session gone; last bytes going out, or handle closing */
} mqr_lconn_state_t;

/* How to close. */
typedef enum {
    MQR_LCLOSE_HARD = 0,       /* drop the output, close the socket now */
    MQR_LCLOSE_DISCONNECT = 1, /* v5: send DISCONNECT with the reason first; then linger */
    MQR_LCLOSE_FLUSH = 2,      /* send what is queued (a refusing CONNACK), then linger */
} mqr_lclose_t;

struct mqr_lconn {
    mqr_subscriber_t sub; /* first: the router hands it back to deliver() */
    uv_tcp_t tcp;         /* data = this */
    /* the write and shutdown requests: allocated at the first uv_write or
     * uv_shutdown (mqr__listener_reqs), as most clients never need either
     * (uv_try_write takes their output); freed with the connection */
    mqr_lreqs_t *reqs;
    mqr_listener_t *l;
    struct mqr_ltp *tp;       /* TLS / WebSocket layers (transport.c); NULL: plain TCP */
    mqr_lconn_t *prev, *next; /* every connection not yet freed */
    mqr_lconn_t *dirty_next;  /* output waiting for the end of the loop turn */
    mqr_lconn_t *id_next;     /* client-id map chain */
    unsigned refs;            /* the handle + each pending store callback */

    uint8_t state;   /* mqr_lconn_state_t */
    uint8_t version; /* 0 before CONNECT, then 4 or 5 */
    bool dirty;
    bool writing;           /* a uv_write is in flight */
    bool read_paused;       /* too much output waiting: input stops */
    bool uv_closing;        /* uv_close called */
    bool eof;               /* the peer's side is gone: nothing more can be sent */
    bool registered;        /* in the client-id map */
    bool will_publish;      /* closing: publish the will */
    bool over_limit;        /* beyond max_connections: its CONNECT gets a refusal */
    bool rate_paused;       /* publish_rate: input stops until the bucket refills */
    bool problem_info;      /* v5 Request Problem Information */
    bool read_own;          /* this read goes into pend, not the shared buffer */
    bool persistent;        /* its session outlives the connection (client_session.c) */
    bool stored;            /* its session has rows in the store */
    bool commit_paused;     /* a 3.1.1 client's input waits for its acks' commit (deliver.c) */
    bool hold;              /* input waits: a CONNECT is being authenticated (handle_auth.c) */
    bool resume_queued;     /* in l->resumed: kept packets wait for the check handle (conn.c) */
    uint16_t next_pid;      /* outbound QoS 1/2 packet ids (deliver.c) */
    uint16_t alias_max;     /* inbound topic aliases 1..alias_max */
    uint16_t client_id_len; /* MQTT strings are at most 65535 bytes */

    char *client_id; /* NUL-terminated, owned; client_id_len above */
    char addr[48];   /* "ip:port" of the peer: "[" 39 "]:" 5 fits */
    const char *close_why;

    uint64_t last_rx_ms;   /* uv_now of the last read */
    uint64_t deadline_ms;  /* NEW: CONNECT due; CLOSING: linger ends */
    uint32_t keepalive_ms; /* 1.5 x keep-alive, 0 = none */
    uint32_t session_expiry;
    uint32_t peer_max_packet; /* the client's Maximum Packet Size, 0 = none */
    uint32_t will_delay; /* persistent sessions (client_session.c): v5 Will Delay Interval, s */
    /* publish_rate bucket: tokens (x MQR_LSN_TOKEN) as of pub_ms (uv_now,
     * low 32 bits: only differences are used) */
    uint32_t pub_tokens, pub_ms;
    mqr_msg_t *will; /* owned */

    /* input */
    uint8_t *pend;     /* bytes of an incomplete packet (owned) */
    uint32_t pend_len; /* packets are at most 268435460 bytes */
    uint32_t pend_cap;

    /* output */
    mqr_oseg_t *segs; /* ring: segs[(seg_head + i) % seg_cap], i < seg_count */
    uint32_t seg_head, seg_count, seg_cap;
    uint32_t seg_locked; /* segments handed to the write in flight */
    size_t locked_bytes; /* their bytes */
    mqr_oblock_t *blk_head, *blk_tail;
    size_t out_bytes; /* all bytes waiting, locked ones included */

    /* subscriptions: trie entries, each with its index here in opts.tag */
    mqr_trie_entry_t **subs;
    uint32_t nsubs, subs_cap;

    /* outbound QoS 1/2, inbound QoS 2, backpressure and acks in line:
     * allocated at first use (mqr__listener_qstate), as an idle QoS 0
     * subscriber never needs any of it; NULL reads as all empty */
    struct mqr_lqs *qs;
    uint32_t if_cap;     /* the in-flight window (deliveries_init) */
    uint32_t blocked_by; /* full queues (and commits) this client's input waits for */
    mqr_source_t src;    /* what a full queue or session holds (holds.h; conn.c) */

    /* authentication (handle_auth.c): user name, SCRAM exchange, a CONNECT
     * waiting for its password check; NULL for an anonymous client */
    struct mqr_lauth *auth;

    /* inbound topic aliases (alias_max above) */
    mqr_lalias_t *aliases;
    mqr_mqtt_alias_out_t out_alias; /* topic aliases toward the client (alias_out.h) */

    /* the registry's device this client is (a reference; NULL: none) and
     * its tenant's mountpoint "<tenant>/" (owned; NULL: no tenant), set at
     * CONNECT (device.c) */
    struct mqr_device *device;
    char *mount;
    uint16_t mount_len;
};

/* ---- the listener ----------------------------------------------------- */

struct mqr_listener {
    mqr_engine_t *e;      /* publishes go in here (engine.h) */
    mqr_listeners_t *all; /* the engine's services and the other listeners */
    mqr_listener_options_t opts;
    mqr_listener_stats_t stats;
    uv_tcp_t server;
    uv_check_t check; /* flushes every dirty connection after I/O */
    uv_idle_t idle;   /* active while something is dirty: the loop must not block */
    uv_timer_t timer; /* keep-alive, connect timeouts, lingering closes */
    unsigned open_handles;
    bool closing;
    bool idle_on;
    int port;
    char host[64];

    mqr_lconn_t *conns; /* not yet freed */
    unsigned nconns;
    mqr_lconn_t *dirty;
    /* connections whose input was let go with complete packets kept (the
     * rest of a read it stopped in): handled by the check handle, before
     * reading again (a reference each; conn.c) */
    mqr_lconn_t **resumed;
    uint32_t nresumed, resumed_cap;

    mqr_lconn_t **ids; /* client-id map: chained buckets */
    size_t ids_cap, ids_count;
    uint64_t id_seq; /* for assigned client ids */

    uint8_t *rbuf;
    /* transports (transport.c): what this listener speaks under MQTT, the
     * TLS context (NULL: none), and the buffers its raw reads and decoded
     * WebSocket payloads land in (NULL for plain TCP) */
    bool ws;
    struct ssl_ctx_st *ssl_ctx;
    uint8_t *tbuf, *wsbuf;
    mqr_listener_t *e_next; /* all->first */
    bool linked;            /* in all->first */
    /* wall clock (ms) read once per socket read: the creation time of every
     * message in that read (a clock read per message cost 15% of the CPU) */
    uint64_t read_ms;
    /* password checks queued or running on the threadpool (handle_auth.c);
     * beyond MQR_LSN_AUTH_PENDING_MAX a CONNECT is refused (server busy) */
    unsigned auth_pending;
    mqr_oblock_t *pool; /* spare output blocks */
    unsigned npool;
    mqr_oblock_t *spool; /* spare small ones (MQR_LSN_SMALL_BLOCK) */
    unsigned nspool;

    /* routing a client's PUBLISH: who sent it (backpressure pauses it) */
    mqr_lconn_t *publisher;
    /* persistent sessions whose client is away, by client id (client_session.c) */
    mqr_client_session_t **sessions;
    size_t sessions_cap, sessions_count;
    struct mqr_store_client_sessions *sstore; /* NULL: no store, sessions in memory only */
    uint64_t session_tick_ms;

    /* connect_rate bucket (x MQR_LSN_TOKEN) as of conn_ms (uv_now) */
    uint64_t conn_tokens, conn_ms;
    uint64_t refuse_log_ms; /* refusals at accept are logged once a second at most */
    uint64_t row_log_ms;    /* so are session rows the store refused (wall clock) */
    uint64_t fail_log_ms;   /* and PUBLISHes refused for a failed routing (wall clock) */

    /* $SYS statistics (sys.c) */
    uv_timer_t sys_timer;
    uint64_t start_ms;    /* uv_now at start: uptime */
    struct mqr_lsys *sys; /* load averages, owned */
};

/* ---- handle_auth.c ---------------------------------------------------------- */

/* Decides on a decoded CONNECT (k, from pkt[0..len)) before it is
 * accepted. Returns 0: go on and accept (c->auth holds the user name, if
 * any); 1: decided later (a password check on the threadpool, or a SCRAM
 * exchange): the packet is copied, c->hold is set, and handle_connect is
 * called again with the copy when the answer is known; or a v5 CONNACK
 * reason (0x80..) to refuse with. */
int mqr__listener_auth_connect(mqr_lconn_t *c, const mqr_mqtt_connect_t *k, const uint8_t *pkt,
                               size_t len);
/* CONNACK properties of a successful enhanced authentication (method and
 * server-final data), appended to b. */
void mqr__listener_auth_connack_props(mqr_lconn_t *c, mqr_mqtt_pbuild_t *b);
/* AUTH from the client (v5): SCRAM continuation, or re-authentication. */
int mqr__listener_handle_auth(mqr_lconn_t *c, uint8_t *pkt, size_t len);
/* The authorize hook, cheap when none is set: 0 allowed, else the v5
 * reason code to deny with (0x80..0xFF, valid for the action's answer:
 * SUBACK, or PUBACK/PUBREC). */
int mqr__listener_authorize(mqr_lconn_t *c, int action, const char *topic, size_t len, int qos,
                            bool retain);
/* The user name of the connection, NULL if none. */
const char *mqr__listener_auth_user(const mqr_lconn_t *c);
/* Did the store's credentials prove that user name (password or SCRAM)? */
bool mqr__listener_auth_verified(const mqr_lconn_t *c);
void mqr__listener_auth_free(mqr_lconn_t *c);
/* The connection is closing: a password check still queued for the
 * threadpool is cancelled (its callback still runs, and only unrefs). */
void mqr__listener_auth_cancel(mqr_lconn_t *c);
/* conn.c: ends c->hold: handles the input kept meanwhile, reads again. */
void mqr__listener_conn_unhold(mqr_lconn_t *c);

/* conn.c: c's write and shutdown requests (data = c), NULL when out of
 * memory. */
mqr_lreqs_t *mqr__listener_reqs(mqr_lconn_t *c);

/* ---- server.c ----------------------------------------------------------- */

mqr_lconn_t *mqr__listener_id_find(mqr_listener_t *l, const char *id, size_t len);
int mqr__listener_id_add(mqr_listener_t *l, mqr_lconn_t *c);
void mqr__listener_id_remove(mqr_listener_t *l, mqr_lconn_t *c);
/* A fresh client id ("mqr-" and 16 hex digits) no connected client has. */
void mqr__listener_id_assign(mqr_listener_t *l, char out[24]);
/* Output is waiting: make sure the loop reaches the flush without blocking. */
void mqr__listener_wake(mqr_listener_t *l);
/* Frees l once it is closing and nothing it owns is left. */
void mqr__listener_maybe_free(mqr_listener_t *l);

/* ---- conn.c ------------------------------------------------------------- */

/* Sets up c for a just-accepted socket (already uv_accept'ed) and starts
 * reading. */
int mqr__listener_conn_start(mqr_lconn_t *c);
/* Ends the session now (out of the router and the id map, deliveries
 * dropped, will published if c->will_publish) and closes as `how` says.
 * reason is the v5 DISCONNECT reason for MQR_LCLOSE_DISCONNECT; why is a
 * static text for the log. Idempotent. Safe from any callback, deliver()
 * included. */
void mqr__listener_conn_close(mqr_lconn_t *c, mqr_lclose_t how, uint8_t reason, const char *why);
/* For a packet the client got wrong: counts it and closes with reason (v5
 * DISCONNECT first). Returns MQR_EPROTOCOL for the caller to pass up. */
int mqr__listener_conn_fail(mqr_lconn_t *c, uint8_t reason, const char *why);
/* The timer's check of one connection. */
void mqr__listener_conn_tick(mqr_lconn_t *c, uint64_t now);
void mqr__listener_conn_unref(mqr_lconn_t *c);
/* Backpressure: stops reading from c / reads again once nothing else holds
 * its input (output full, publish rate, other full queues). */
void mqr__listener_conn_input_pause(mqr_lconn_t *c);
void mqr__listener_conn_input_resume(mqr_lconn_t *c);
/* c as a source (holds.h): a hold pauses its input and keeps a reference,
 * the release gives both back. */
void mqr__listener_conn_source_init(mqr_lconn_t *c);

/* Room for n more bytes of output, to be made part of the output by
 * mqr__listener_out_commit() (or forgotten). NULL when out of memory. */
uint8_t *mqr__listener_out_reserve(mqr_lconn_t *c, size_t n);
void mqr__listener_out_commit(mqr_lconn_t *c, size_t n);
/* Appends msg's payload by reference. */
int mqr__listener_out_payload(mqr_lconn_t *c, mqr_msg_t *msg);
/* The write path both plain output and the TLS/WebSocket wire queue use:
 * uv_try_write what gather offers while the socket takes all of it (consume
 * drops what went), then one uv_write of the rest with done as callback
 * (c->writing set). Returns the bytes handed to uv_write, which done must
 * consume; 0 when everything went at once or a write failed (then the
 * connection is closing, see mqr__listener_write_failed). */
typedef size_t (*mqr_lgather_fn)(mqr_lconn_t *c, uv_buf_t *bufs, size_t max, size_t *bytes);
typedef void (*mqr_lconsume_fn)(mqr_lconn_t *c, size_t n);
size_t mqr__listener_write(mqr_lconn_t *c, mqr_lgather_fn gather_fn, mqr_lconsume_fn consume_fn,
                           uv_write_cb done);
/* A write to the socket failed: close at once, publishing the will. */
void mqr__listener_write_failed(mqr_lconn_t *c, int err);
/* Writes what is waiting (uv_try_write, then uv_write for the rest). */
void mqr__listener_out_flush(mqr_lconn_t *c);
/* Handles the packets kept by connections whose input was let go, and
 * reads from them again (the check handle, before the flush). */
void mqr__listener_process_resumed(mqr_listener_t *l);

/* Flushes every dirty connection (the check handle, and close). */
void mqr__listener_flush_all(mqr_listener_t *l);
void mqr__listener_pool_free(mqr_listener_t *l);

/* ---- handle_*.c: one packet from the client each -----------------------
 * pkt[0..len) is the whole packet, writable (it is our read buffer) and
 * valid for the call only. Return 0, or an MQR_E* decode error for the
 * caller to answer (v5 DISCONNECT with the codec's reason) — unless c is
 * already closing, then the return value is only passed up. */

int mqr__listener_handle_connect(mqr_lconn_t *c, uint8_t *pkt, size_t len);
int mqr__listener_handle_publish(mqr_lconn_t *c, uint8_t *pkt, size_t len);
int mqr__listener_handle_pubrel(mqr_lconn_t *c, uint8_t *pkt, size_t len);
int mqr__listener_handle_ack(mqr_lconn_t *c, uint8_t *pkt, size_t len); /* PUBACK/REC/COMP */
int mqr__listener_handle_subscribe(mqr_lconn_t *c, uint8_t *pkt, size_t len);
int mqr__listener_handle_unsubscribe(mqr_lconn_t *c, uint8_t *pkt, size_t len);
int mqr__listener_handle_ping(mqr_lconn_t *c, uint8_t *pkt, size_t len);
int mqr__listener_handle_disconnect(mqr_lconn_t *c, uint8_t *pkt, size_t len);

/* handle_publish.c: acknowledgements that keep their order. */
void mqr__listener_ack(mqr_lconn_t *c, uint8_t type, uint16_t pid, uint8_t reason);
/* Queues an ack that goes out once the store has committed what was written
 * so far (or with reason 0x80 / a closed 3.1.1 connection if that failed). */
void mqr__listener_ack_after_commit(mqr_lconn_t *c, uint8_t type, uint16_t pid, uint8_t reason);
void mqr__listener_acks_clear(mqr_lconn_t *c);
void mqr__listener_aliases_clear(mqr_lconn_t *c);

/* handle_subscribe.c */
void mqr__listener_subs_clear(mqr_lconn_t *c);

/* ---- send.c: packets into the connection's output ------------------------
 * Each returns 0 or MQR_ENOMEM; send_publish also MQR_ETOOLARGE when the
 * packet would exceed the client's Maximum Packet Size and MQR_ENOENT when
 * the message has expired (nothing written, counted). */

int mqr__listener_send_publish(mqr_lconn_t *c, mqr_msg_t *msg, uint8_t qos, uint16_t pid,
                               bool retain, bool dup, const uint32_t *sub_ids, uint32_t n_ids);
int mqr__listener_send_connack(mqr_lconn_t *c, int version, bool session_present, uint8_t reason,
                               const uint8_t *props, size_t props_len);
int mqr__listener_send_ack(mqr_lconn_t *c, uint8_t type, uint16_t pid, uint8_t reason);
int mqr__listener_send_suback(mqr_lconn_t *c, uint16_t pid, const uint8_t *codes, size_t n);
int mqr__listener_send_unsuback(mqr_lconn_t *c, uint16_t pid, const uint8_t *codes, size_t n);
int mqr__listener_send_pingresp(mqr_lconn_t *c);
int mqr__listener_send_disconnect(mqr_lconn_t *c, uint8_t reason);

/* ---- limits (conn.c, server.c, sys.c) -------------------------------------- */

/* publish_rate: takes a token for one PUBLISH; false when the bucket is
 * empty (the caller stops reading until mqr__listener_conn_tick resumes). */
bool mqr__listener_rate_take(mqr_lconn_t *c);
/* sys.c: starts the $SYS timer (the listener's open_handles counts it) and
 * stops it at close. */
void mqr__listener_sys_start(mqr_listener_t *l);
void mqr__listener_sys_stop(mqr_listener_t *l, uv_close_cb cb);

/* ---- client_session.c: persistent sessions ------------------------------------------ */

/* Opens the session tables and brings back every stored session, offline. */
int mqr__client_session_start(mqr_listener_t *l);
/* Frees the offline sessions (their rows stay) and the statements. */
void mqr__client_session_stop(mqr_listener_t *l);
/* CONNECT: ends or resumes the stored/offline session of c->client_id as
 * clean says, makes c persistent (or not) and writes its row. *present is
 * the CONNACK Session Present flag. The resumed deliveries wait in c until
 * mqr__listener_deliveries_resend() after the CONNACK. Returns 0, or the
 * store's error when it refused the rows (the session's, or deleting those
 * of a session that ends): then nothing changed and the CONNECT must be
 * refused. */
int mqr__client_session_connect(mqr_lconn_t *c, bool clean, bool *present);
/* Closing c: a persistent session goes offline with c's state (c is left
 * empty); a session that ends has its rows deleted. Keeps a delayed will. */
void mqr__client_session_disconnect(mqr_lconn_t *c);
/* Timer: ends expired sessions and publishes delayed wills that are due. */
void mqr__client_session_tick(mqr_listener_t *l, uint64_t now);
/* Store writes for a persistent connection (no-ops otherwise). sub_put:
 * 0 (nothing to store), MQR_DELIVER_STORED or the store's error (counted and
 * logged, as for every session row). */
int mqr__client_session_sub_put(mqr_lconn_t *c, const char *filter, size_t flen,
                                const mqr_sub_opts_t *o);
void mqr__client_session_sub_delete(mqr_lconn_t *c, const char *filter, size_t flen);
/* Stores (add) or deletes the row of an inbound QoS 2 packet id: 0 (not a
 * persistent session: nothing to store), MQR_DELIVER_STORED (the ack waits
 * for the commit) or the store's error, counted and logged. */
int mqr__client_session_qos2(mqr_lconn_t *c, uint16_t pid, bool add);
/* A session row the store refused (rc): counted in session_rows_failed,
 * logged once a second at most with the store's reason. */
void mqr__client_session_row_failed(mqr_listener_t *l, const char *client_id, int rc);

/* ---- deliver.c ---------------------------------------------------------- */

/* The router's callback (c->sub.deliver); its result as router.h says. */
int mqr__listener_deliver(mqr_subscriber_t *self, mqr_msg_t *msg, const mqr_trie_entry_t *entry);
/* Sends msg (borrowed) at qos: QoS 0 straight into the output (dropped when
 * it is over max_out_bytes), QoS 1/2 into the in-flight window or the queue
 * behind it (dropped when that is full). Returns 0, MQR_DELIVER_STORED (a
 * persistent session's row was written), or why it was not sent; a QoS 1/2
 * message whose row the store refused is still sent (the client is here)
 * and returns the store's error, so its publisher is not told it is
 * durable. */
int mqr__listener_send_message(mqr_lconn_t *c, mqr_msg_t *msg, uint8_t qos, bool retain,
                               const uint32_t *sub_ids, uint32_t n_ids);
/* The router's callback for several subscriptions of one client matching
 * one message (c->sub.deliver_set): one copy for them all. */
int mqr__listener_deliver_set(mqr_subscriber_t *self, mqr_msg_t *msg,
                              mqr_trie_entry_t *const *entries, size_t n);
/* What one copy for several subscriptions of a client is (5.0 §3.3.4, 3.1.1
 * §3.3.5): the highest QoS among them (at most the message's), the RETAIN
 * flag kept when any asks Retain As Published, and every distinct
 * Subscription Identifier (*ids: malloc'd, *n_ids of them, NULL when
 * none). A no-local subscription does not count when origin published the
 * message. Returns 0; 1 when none counts (nothing to send); MQR_ENOMEM. */
int mqr__listener_merge(const void *origin, const mqr_msg_t *msg, mqr_trie_entry_t *const *entries,
                        size_t n, uint8_t *qos, bool *retain, uint32_t **ids, uint32_t *n_ids);
/* c->qs, allocated at the first call; NULL when out of memory. */
mqr_lqs_t *mqr__listener_qstate(mqr_lconn_t *c);
/* Frees c->qs (what it still points to included). */
void mqr__listener_qstate_free(mqr_lconn_t *c);
/* Client acks: free the matching in-flight slot and refill the window. */
void mqr__listener_puback(mqr_lconn_t *c, uint16_t pid);
void mqr__listener_pubrec(mqr_lconn_t *c, uint16_t pid, uint8_t reason);
void mqr__listener_pubcomp(mqr_lconn_t *c, uint16_t pid);
/* Drops every in-flight and queued delivery. */
void mqr__listener_deliveries_clear(mqr_lconn_t *c);
/* In-flight window for this client: min(Receive Maximum, max_inflight). */
int mqr__listener_deliveries_init(mqr_lconn_t *c, uint16_t receive_max);
/* Moves every in-flight and queued delivery, in send order, into a new
 * array (*out, *n; references move with them). c is left with none. */
int mqr__listener_deliveries_take(mqr_lconn_t *c, mqr_ldelivery_t **out, uint32_t *n);
/* Gives c deliveries taken before (in flight ones first, in order; the
 * references move). Nothing is sent until deliveries_resend(). */
int mqr__listener_deliveries_give(mqr_lconn_t *c, mqr_ldelivery_t *d, uint32_t n);
/* After CONNACK: PUBLISH again with DUP=1 (or PUBREL) what was in flight,
 * then fill the window from the queue. */
void mqr__listener_deliveries_resend(mqr_lconn_t *c);
/* Backpressure: lets every publisher paused for c go (c drained or closes). */
void mqr__listener_waiters_release(mqr_lconn_t *c);

/* ---- device.c: the registry and tenants ---------------------------------------- */

/* CONNECT accepted: the tenant of its user (store) sets c->mount. Returns
 * 0 or MQR_ENOMEM / MQR_ESTORE (the CONNECT is refused). */
int mqr__listener_tenant_connect(mqr_lconn_t *c);
/* CONNACK sent: its device goes online. */
void mqr__listener_device_online(mqr_lconn_t *c);
/* The connection ends: its device goes offline (why: the close reason). */
void mqr__listener_device_offline(mqr_lconn_t *c, const char *why);
/* t[0..len) under c's mountpoint, into buf (cap bytes) or a malloc'd copy
 * (*heap, the caller frees); filter: "$share/<g>/" keeps its place in front
 * and "$SYS/..." filters stay as they are. NULL when out of memory. */
const char *mqr__listener_mount(const mqr_lconn_t *c, const char *t, size_t len, bool filter,
                                char *buf, size_t cap, char **heap, size_t *out_len);

/* The client id once known, else the peer address: for logs. */
static inline const char *mqr__lconn_name(const mqr_lconn_t *c)
{
    return c->client_id ? c->client_id : c->addr;
}

/* ---- transport.c, tls.c, ws.c: layers under MQTT ------------------------
 * A connection of a TLS or WebSocket listener has c->tp. Raw socket bytes go
 * up through TLS (decrypt) and WebSocket (unframe) into the MQTT input; the
 * MQTT output goes down through WebSocket (frame) and TLS (encrypt) into
 * the transport's wire queue, which is what the socket is written from.
 * Plain TCP connections never touch any of this. */

#define MQR_LSN_TBUF_SIZE (64u * 1024u)
/* MQTT output is encoded into the wire queue while less than this waits
 * there; the rest stays MQTT output (so max_out_bytes still applies). */
#define MQR_LTP_WIRE_HIGH (256u * 1024u)
#define MQR_LTP_STAGE (16u * 1024u)

typedef struct mqr_lws mqr_lws_t;

typedef struct mqr_ltp {
    struct ssl_st *ssl; /* NULL: no TLS layer */
    struct bio_st *rbio, *wbio;
    bool tls_done;   /* handshake finished */
    bool tls_failed; /* fatal TLS error: no close_notify */
    mqr_lws_t *ws;   /* NULL: no WebSocket layer */
    /* wire bytes waiting for the socket: blocks from the listener's pool */
    mqr_oblock_t *w_head, *w_tail;
    size_t w_bytes;  /* waiting, the ones in the write in flight included */
    size_t w_locked; /* in the write in flight */
    bool shutdown_wanted, shutdown_sent;
} mqr_ltp_t;

/* transport.c */
int mqr__ltp_start(mqr_lconn_t *c); /* sets up c->tp and starts reading */
void mqr__ltp_read_start(mqr_lconn_t *c);
void mqr__ltp_flush(mqr_lconn_t *c);
/* Graceful end: encodes what is queued, sends the WebSocket close frame and
 * the TLS close_notify, shuts the socket down once all is written. */
void mqr__ltp_close(mqr_lconn_t *c);
void mqr__ltp_free(mqr_lconn_t *c);
bool mqr__ltp_pending(const mqr_lconn_t *c);
/* Bytes decoded by the layer below WebSocket (or raw bytes when there is no
 * TLS): into the WebSocket layer, or into the MQTT input. <0: c is closing. */
int mqr__ltp_up(mqr_lconn_t *c, const uint8_t *p, size_t n);
int mqr__ltp_mqtt(mqr_lconn_t *c, const uint8_t *p, size_t n);
/* Bytes framed by the WebSocket layer (or MQTT bytes when there is none):
 * through TLS when there is, into the wire queue. */
int mqr__ltp_down(mqr_lconn_t *c, const uint8_t *p, size_t n);
int mqr__ltp_wire(mqr_lconn_t *c, const uint8_t *p, size_t n);

/* server.c: a listener with transports (ssl_ctx and ws as the listener's
 * own from a successful start on; port taken as it is, 0 = any free one). */
int mqr__listener_start_tp(mqr_engine_t *e, const char *host, int port,
                           const mqr_listener_options_t *opts, struct ssl_ctx_st *ssl_ctx, bool ws,
                           mqr_listener_t **out);

/* tls.c */
int mqr__ltls_ctx_new(const char *cert, const char *key, const char *ca, bool require_cert,
                      struct ssl_ctx_st **out, char *err, size_t errlen);
void mqr__ltls_ctx_free(struct ssl_ctx_st *ctx);
int mqr__ltls_start(mqr_lconn_t *c);
int mqr__ltls_input(mqr_lconn_t *c, const uint8_t *p, size_t n);
int mqr__ltls_write(mqr_lconn_t *c, const uint8_t *p, size_t n);
void mqr__ltls_close_notify(mqr_lconn_t *c);
void mqr__ltls_free(mqr_lconn_t *c);

/* ws.c */
int mqr__lws_start(mqr_lconn_t *c);
int mqr__lws_input(mqr_lconn_t *c, const uint8_t *p, size_t n);
int mqr__lws_write(mqr_lconn_t *c, const uint8_t *p, size_t n);
void mqr__lws_close(mqr_lconn_t *c, uint16_t code);
void mqr__lws_free(mqr_lconn_t *c);

/* conn.c, for the transports: the MQTT input as on_alloc/on_read use it
 * (room for the next bytes; n bytes were put there), and the MQTT output
 * taken from the front (copied into dst, at most max; returns the count). */
void mqr__listener_in_room(mqr_lconn_t *c, uv_buf_t *buf);
void mqr__listener_in_done(mqr_lconn_t *c, size_t n);
size_t mqr__listener_out_take(mqr_lconn_t *c, uint8_t *dst, size_t max);
/* The peer's side ended (EOF or read error): close as on_read does. */
void mqr__listener_conn_read_end(mqr_lconn_t *c, ssize_t nread);
void mqr__listener_block_put(mqr_listener_t *l, mqr_oblock_t *b);
mqr_oblock_t *mqr__listener_block_get(mqr_listener_t *l, size_t need);

#endif
