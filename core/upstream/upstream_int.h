/*
 * upstream_int.h — what the files of core/upstream/ share: the session
 * struct, the events a transport queues for the loop, subscriptions and
 * waiters, and the mqr__up_* functions one of these files calls in another.
 *
 * Only the .c files of core/upstream/ may include it; the rest of core
 * includes upstream.h. Each field of struct mqr_upstream says who may touch
 * it: "under lock" fields are shared with the transport's threads (Paho's:
 * upstream_paho.c states their rules). Nothing here names the transport's
 * library: that is behind u->tp (upstream_transport.h).
 */
#ifndef MQR_UPSTREAM_INT_H
#define MQR_UPSTREAM_INT_H

#include "topic_map.h"
#include "upstream.h"
#include "holds.h"
#include "upstream_persist.h"
#include "upstream_transport.h"

/* Incoming messages queued for the loop; only a stalled loop fills this.
 * Beyond it the newest messages are dropped, counted and warned about: they
 * are acknowledged to the broker all the same — except a persistent
 * session's QoS 1/2 messages, which go to the inbox only and are read back
 * from there (spill/refill, upstream_inbound.c). Handing them back to Paho
 * (returning 0 from messageArrived) is no back-pressure: Paho offers a kept
 * message again only when that client's socket next has traffic, one per
 * packet, so they would stall until the next keepalive. */
#define UP_MAX_PENDING_MSGS 100000
#define UP_MAX_PENDING_BYTES (64u * 1024u * 1024u)

/* Backpressure (upstream_publish.c): publishers paused this long while the
 * session's backlog does not go down are let go. */
#define UP_HOLD_STUCK_MS 10000

/* max_buffered_bytes when not set (upstream.h). */
#define UP_MAX_BUFFERED_BYTES ((size_t)64 * 1024 * 1024)

typedef struct up_sub up_sub_t;
struct up_sub {
    up_sub_t *next;
    unsigned refs;
    int qos;
    int token;     /* of the last SUBSCRIBE sent, to match its answer (transport's) */
    bool awaiting; /* restored after a connect, answer not seen: not ready yet */
    bool pending;  /* a SUBSCRIBE sent and not answered */
    int granted;   /* the last answer: granted QoS (v5: reason code); -1 none */
    char filter[];
};

/* v5 subscription options a rule asked for a filter. */
typedef struct up_subopt up_subopt_t;
struct up_subopt {
    up_subopt_t *next;
    up_subflags_t f; /* f.rh < 0: default */
    char filter[];
};

/* A publish whose completion someone waits for (mqr__upstream_publish_cb).
 * Owned by the session's list until its answer is handled on the loop, or
 * until the session is freed. */
typedef struct up_pub up_pub_t;
struct up_pub {
    up_pub_t *next;
    mqr_upstream_t *u;
    mqr_upstream_done_fn done; /* NULL once answered or cancelled */
    void *arg;
    up_sub_t *sub;    /* waiting for this subscription's SUBACK (else NULL) */
    uint64_t out_seq; /* the transport's record of this publish (native outbox), 0 none */
};

typedef enum {
    EV_MESSAGE,
    EV_CONNECTED,
    EV_CONNECT_FAILED,
    EV_LOST,
    EV_SERVER_DISCONNECT,
    EV_SUB_OK,
    EV_SUB_FAILED,
    EV_CONNECT_OK, /* which URI (text) */
    EV_PUB_DONE,   /* ptr = the up_pub_t, code = 0 or the transport's error */
    EV_TLS_ERROR,  /* one line of OpenSSL's error report (text) */
} up_ev_type_t;

/* One event from the transport (upstream_transport.h says what each means).
 * A message event carries topic, payload and raw v5 properties in data[];
 * others may carry a text. */
typedef struct up_event up_event_t;
struct up_event {
    up_event_t *next;
    up_ev_type_t type;
    int code;         /* the transport's error, CONNACK return code, granted QoS... */
    int reason;       /* MQTT reason code, v5 */
    int token;        /* the request answered (EV_SUB_*) */
    bool net_failure; /* EV_CONNECT_FAILED: TCP/TLS failed, no reason given */
    void *ptr;
    uint8_t qos;
    bool retain;
    uint32_t expiry_s;
    uint64_t arrived_ms;
    uint64_t inbox_seq; /* EV_MESSAGE kept in the inbox under this seq; 0 = not kept */
    uint32_t ack_id;    /* EV_MESSAGE: for u->tp->ack after routing; 0 = nothing to ack */
    size_t topic_len;
    size_t payload_len;
    size_t props_len;
    const char *text; /* NUL-terminated inside data[], or NULL */
    char data[];
};

struct mqr_upstream {
    mqr_upstream_t *next; /* all->first */
    mqr_engine_t *e;      /* messages go in here (engine.h) */
    mqr_upstreams_t *all; /* the engine's services and the other sessions */
    char *name;
    char *uri;
    char *client_id;
    char *username;
    char *password;
    char *auth_method; /* v5 enhanced authentication ("SCRAM-SHA-256"), or NULL */
    int keepalive_s;
    int clean_start;
    int version; /* 4 or 5 */
    int max_buffered;
    size_t max_buffered_bytes;
    bool drop_oldest; /* a full buffer drops its oldest (else refuses the newest) */
    bool full_warned; /* warn_full (upstream_publish.c) said so since the last connect */
    char **uris;      /* failover list, n_uris of them (0: uri alone) */
    int n_uris;
    char *will_topic;
    void *will_payload;
    size_t will_payload_len;
    int will_qos, will_retain;
    int64_t session_expiry_s;
    int retry_initial_s, retry_max_s, max_reconnects;
    char *prefix; /* NULL = none */
    size_t prefix_len;
    mqr_topic_map_t *map; /* level mapping (topic_map.h); NULL = none */
    up_subopt_t *subopts;
    up_pub_t *pubs;
    struct {
        bool on; /* a broker URI is ssl://, mqtts:// or wss://: connect with SSL options */
        char *cafile, *capath, *cert, *key, *key_password;
        bool no_verify, no_verify_hostname;
        char error[200]; /* loop: OpenSSL's reasons since the last attempt ended */
    } tls;

    /* Persistence (upstream_persist.h): records keyed by the name. A session
     * replacing an open one of the same name (a reload with other settings)
     * must not have a Paho client reading and writing those records while
     * the old one still does: it stays without a client ("dormant") until
     * the predecessor is destroyed, then restores what it left. Publishes
     * meanwhile wait in early[]. */
    bool persistent;
    bool discard;         /* close gives the records up (loop thread) */
    bool discard_records; /* decided at mqr__up_begin_close, read by the destroying worker */
    mqr_upstream_t *predecessor, *successor;
    struct up_early {
        mqr_msg_t *msg;
        up_pub_t *pub;
    } * early;
    size_t n_early, cap_early;
    /* After a loss the transport may want a new client (Paho: a persistent
     * session, clean = false, rebuilds it from the records; see
     * mqr__up_rebuild_client); no transport call while this is set. */
    bool rebuilding;
    uv_work_t rebuild_req;
    bool inbox_loaded; /* this session routed what an earlier one left */
    /* Acknowledgements (ack ids) that wait for the engine store's commit
     * of what routing their messages wrote; NULL when none wait. */
    struct up_acks *acks;
    uint64_t inbox_seq;  /* last seq given (under lock: Paho's thread) */
    uint64_t inbox_fail; /* messages not written to the inbox (under lock) */
    /* Spilling (under lock): the incoming queue was full, so a persistent
     * session's QoS 1/2 messages go to the inbox only, and every later one
     * too until the loop has read them all back, so that order is kept.
     * spill_next: the next seq the loop reads back; spill_settled: the
     * last seq Paho's thread finished with (written, or given up). */
    bool spilling;
    uint64_t spill_next, spill_settled;

    /* Loop thread only: what status() reports. */
    char broker[256];
    char last_error[256];
    uint64_t last_error_at_ms;
    uint64_t connected_since_ms;
    uint64_t last_message_at_ms;
    unsigned attempt;       /* failed connect attempts in a row */
    unsigned retries;       /* retries scheduled since the last connect: the backoff step */
    unsigned subs_awaiting; /* restored subscriptions not answered yet */
    bool ready;

    /* The transport (upstream_transport.h) and its state, which only its
     * files read. has_client: it made a client (create) that is not being
     * destroyed; else (dormant, rebuilding) publishes wait in early[]. */
    const up_transport_t *tp;
    void *tp_state;
    bool has_client;
    mqr_upstream_state_t state;
    bool closing;
    bool ever_connected;
    bool connect_failing;    /* a failure was logged since the last connect */
    char server_reason[160]; /* v5 DISCONNECT from the broker, for the next "lost" */
    mqr_upstream_event_fn observer;
    void *observer_arg;
    mqr_upstream_credentials_fn credentials;
    void *credentials_arg;
    up_sub_t *subs;
    uv_async_t async;
    uv_timer_t retry; /* next connect attempt */
    uv_timer_t nudge; /* while connect_pending: see nudge_connect (upstream.c) */
    bool connect_pending;
    unsigned nudges;
    int open_handles; /* async, retry, nudge, warn and drain, until all closed */
    uv_work_t destroy_req;

    /* Shared with the transport's threads (and the destroying worker): under lock. */
    uv_mutex_t lock;
    up_event_t *head;
    up_event_t *tail;
    size_t pending_msgs;
    size_t pending_bytes;
    size_t max_pending_msgs, max_pending_bytes; /* UP_MAX_PENDING_*; a test lowers them */
    uint64_t dropped;     /* incoming messages dropped: queue full or no memory */
    uint64_t unprotected; /* QoS 1/2 queued for routing, acknowledged, no stored copy */
    uint64_t spilled;     /* QoS 1/2 of a persistent session kept in the inbox only */
    uint64_t delivered;   /* QoS 1/2 publishes the broker completed */

    /* Loop thread only. */
    struct {
        uint64_t received;       /* messages that arrived from the broker */
        uint64_t refused;        /* of those, not routed (bad topic, no memory, router refused) */
        uint64_t sent;           /* publishes accepted by the transport (sent or buffered) */
        uint64_t full;           /* publishes refused: buffer full */
        uint64_t dropped_oldest; /* buffered publishes dropped to make room (drop_oldest) */
        uint64_t expired;        /* publishes dropped: message expired */
        uint64_t props_dropped;  /* publishes sent without their malformed v5 properties */
        uint64_t connects;
        uint64_t connect_failures;
        uint64_t reconnects;
        uint64_t bytes_sent;
        uint64_t bytes_received;
        uint64_t publish_failed;
        uint64_t not_kept;          /* routed, but a subscriber that had to keep it could not */
        uint64_t publishers_paused; /* sources held for the backlog (upstream_publish.c) */
    } stats;
    /* Backpressure while connected (upstream_publish.c): the publishers
     * paused because too much waits for the broker, let go by `drain`, a
     * check handle running after each loop turn's I/O while any is held. */
    mqr_holds_t holds;
    uv_check_t drain;
    size_t hold_backlog;       /* the smallest backlog seen since the holds began */
    uint64_t hold_progress_ms; /* when it last went down (loop time) */
    uint64_t buffered;         /* publishes accepted while not connected, since the last connect */
    uint64_t dropped_seen;     /* u->dropped when last warned about */
    uint64_t unprotected_seen; /* u->unprotected when last warned about */
    uint64_t not_kept_seen;    /* u->stats.not_kept when last warned about */
    uint64_t not_kept_warned_ms;
    uint64_t drop_warned_ms, unprotected_warned_ms; /* mqr__now_ms() of those warnings */
    uv_timer_t warn; /* a warning held back by the rate limit comes then */
};

/* mqr_upstream_t's version */
#define UP_MQTT_311 4
#define UP_MQTT_5 5

/* ---- upstream.c: the state machine and lifecycle (loop thread) ---------- */

/* Wall clock, ms since the epoch (what status and events report). */
uint64_t mqr__up_wall_ms(void);
/* Acts on one event from the queue (a message goes to mqr__up_deliver). */
void mqr__up_handle_event(mqr_upstream_t *u, up_event_t *ev);
/* Ready once connected and every restored subscription is answered. */
void mqr__up_check_ready(mqr_upstream_t *u);
void mqr__up_schedule_retry(mqr_upstream_t *u);
void mqr__up_nudge_stop(mqr_upstream_t *u);
/* The predecessor of a dormant session is gone: create the client, connect. */
void mqr__up_wake_successor(mqr_upstream_t *u);
/* The transport called name (NULL or "": the default, "paho"; "native"), or NULL
 * when there is none of that name. */
const up_transport_t *mqr__up_transport_find(const char *name);

/* A persistent session's records (what it owes the broker, and for Paho
 * its inbox) in whichever store its transport keeps them; 0 / nothing for
 * a session that does not persist. Discard: on the loop, or on the worker
 * that destroyed a Paho client. */
int64_t mqr__up_records_count(mqr_upstream_t *u);
void mqr__up_records_discard(mqr_upstream_t *u);

/* ---- upstream_observe.c: observers and waits for ready ------------------ */

/* Tells every observer of u's engine; fills in u, name, time and broker. */
void mqr__up_emit(mqr_upstream_t *u, mqr_upstream_event_t *ev);
void mqr__up_emit_simple(mqr_upstream_t *u, mqr_upstream_event_type_t type, const char *reason,
                         unsigned attempt);
/* Some wait of e's is still open (its timer not closed yet). */
bool mqr__up_has_waits(mqr_engine_t *e);
/* Answers every open wait of e with MQR_ECLOSED (the engine closes). */
void mqr__up_waits_close(mqr_engine_t *e);

/* ---- upstream_inbound.c: from the queue to the router (loop thread) ----- */

/* An event with extra bytes in data[] and an optional text after them. Any
 * thread. */
up_event_t *mqr__up_ev_new(up_ev_type_t type, size_t extra, const char *text);
/* Appends ev to u's queue under u->lock and wakes the loop. Any thread
 * (the transport's, and the loop's own deferred answers and inbox reads). */
void mqr__up_ev_push(mqr_upstream_t *u, up_event_t *ev);

/* Routes a message event, then deletes its inbox row. */
void mqr__up_deliver(mqr_upstream_t *u, up_event_t *ev);
/* The async handle's callback: drains the queue. */
void mqr__up_on_async(uv_async_t *h);
/* Warns (rate-limited) about messages acknowledged and then lost. */
void mqr__up_report_losses(mqr_upstream_t *u);
/* Received messages in ev's list that a closing session will not route. */
uint64_t mqr__up_count_unrouted(const mqr_upstream_t *u, const up_event_t *ev);
void mqr__up_warn_unrouted(mqr_upstream_t *u, uint64_t n);
/* Queues what a persistent session of this name left unrouted. */
void mqr__up_inbox_load(mqr_upstream_t *u);

/* ---- upstream_work.c: destroying and rebuilding clients ----------------- */

/* Frees u and everything it owns; its handles must be closed (or never
 * opened) and the transport's client gone. */
void mqr__up_session_free(mqr_upstream_t *u);
/* Acknowledgements still waiting for a commit are never sent (the broker
 * sends those messages again): before u is freed. upstream_inbound.c. */
void mqr__up_acks_detach(mqr_upstream_t *u);
/* Destroys the client on a worker; then the handles close and u is freed. */
void mqr__up_begin_close(mqr_upstream_t *u);
/* Backpressure (upstream_publish.c): lets every paused publisher go. */
void mqr__up_release_publishers(mqr_upstream_t *u);
/* Destroys the client on a worker; the next attempt creates a new one. */
void mqr__up_rebuild_client(mqr_upstream_t *u);

/* ---- upstream_publish.c: subscriptions, publishes, waiters -------------- */

/* Sends s's SUBSCRIBE; returns 0 or MQR_E* (MQR_ENOTCONN: the loss is
 * on its way). */
int mqr__up_send_subscribe(mqr_upstream_t *u, up_sub_t *s);
/* Returns 0 (accepted), UP_PUB_STORED (accepted and written to the engine's
 * store: an acknowledgement of it waits for the commit), UP_PUB_EXPIRED
 * (dropped; only with a waiter p), or < 0. A transport's publish returns
 * 0, UP_PUB_STORED or < 0. */
#define UP_PUB_STORED 1
#define UP_PUB_EXPIRED 2
int mqr__up_publish(mqr_upstream_t *u, const mqr_msg_t *msg, up_pub_t *p);
/* Handles an EV_PUB_DONE: answers and frees its waiter. */
void mqr__up_pub_done(mqr_upstream_t *u, up_event_t *ev);
/* Answers (and frees) every waiter of s's SUBACK. A waiter may close u. */
void mqr__up_answer_sub_waiters(mqr_upstream_t *u, up_sub_t *s, int status, int reason);
/* Answers (and frees) a waited-for publish that never reached the transport. */
void mqr__up_pub_answer(up_pub_t *p, int status);

#endif
