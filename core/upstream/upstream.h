/*
 * upstream.h — mqrouter as a client of other brokers.
 *
 * Each session is one client of a transport (mqr_upstream_config_t's
 * transport, upstream_transport.h: "paho", Paho MQTTAsync, or "native",
 * core/mqttc on the loop). Paho calls
 * every callback on its own thread holding a global lock, so callbacks only
 * copy the event into the
 * session's queue and uv_async_send() the loop; everything else — building
 * messages, routing, state changes, logging of events — happens on the loop
 * thread. Messages that arrive from a session enter the engine's router with
 * origin MQR_ORIGIN_SESSION and origin_conn = the session.
 */
#ifndef MQR_UPSTREAM_H
#define MQR_UPSTREAM_H

#include "engine.h"

/* What every upstream session of an engine shares: the engine's services,
 * handed over once when the engine opens (core/engine/engine.c), the list
 * of sessions and their store (upstream_persist.h). */
struct mqr_upstreams {
    uv_loop_t *loop;
    mqr_router_t *router;
    const char *data_dir;          /* "" or NULL: sessions persist only when told to */
    const char *default_transport; /* of a session that names none; NULL: built in */
    mqr_upstream_t *first;         /* every session not yet freed, newest first */
    /* opened at the first persistent session; failed: not retried,
     * sessions keep their buffers in memory */
    struct mqr_upstream_persist *persist;
    bool persist_failed;
    /* the engine store's table of what native sessions owe their brokers
     * (store_outbox.h); NULL without a file store */
    struct mqr_store_outbox *outbox;
};

typedef enum {
    MQR_UPSTREAM_CONNECTING = 0,
    MQR_UPSTREAM_CONNECTED = 1,
    MQR_UPSTREAM_DISCONNECTED = 2, /* lost; Paho reconnects */
    MQR_UPSTREAM_CLOSED = 3,
    MQR_UPSTREAM_FAILED = 4, /* gave up after max_reconnects failed attempts */
} mqr_upstream_state_t;

/* Is name a transport sessions can use ("native", "paho")? */
bool mqr__upstream_transport_known(const char *name);

/* "connecting", "connected", ... */
const char *mqr__upstream_state_name(mqr_upstream_state_t st);

/* TLS settings of a session whose brokers are ssl://, mqtts:// or wss://
 * (Paho's MQTTAsync_SSLOptions). Files are PEM. Zeroed means: verify the
 * broker's certificate against the system's CA store and check that it
 * names the host of the URI; no client certificate. */
typedef struct {
    const char *cafile;       /* CA certificates the broker's must chain to; NULL = system */
    const char *capath;       /* directory of CA certificates (c_rehash layout); may be NULL */
    const char *cert;         /* client certificate (chain); NULL = none */
    const char *key;          /* its private key; NULL = inside cert */
    const char *key_password; /* of an encrypted key; NULL = none */
    bool no_verify;           /* accept any broker certificate (and any host name) */
    bool no_verify_hostname;  /* verify the chain, not that it names the host */
} mqr_upstream_tls_t;

typedef struct {
    const char *name;      /* unique per engine */
    const char *uri;       /* "tcp://127.0.0.1:1883", "ssl://host:8883", "wss://..." */
    const char *client_id; /* NULL = "mqrouter-<name>" */
    int keepalive_s;       /* 0 = 30 */
    int clean_start;       /* taken as given: non-zero = clean start; callers default it to 1
                            * (0 resumes the broker's session; on v5 it never expires) */
    const char *username;  /* may be NULL */
    const char *password;  /* may be NULL */
    int mqtt_version;      /* 4 (3.1.1, default) or 5 */
    int max_buffered;      /* messages kept while disconnected; 0 = 10000 */
    /* Connected: bytes written for the broker that its socket has not taken
     * yet; past it QoS 0 publishes are refused (MQR_EFULL). 0 = 64 MiB.
     * From half of this (or half of max_buffered QoS 1/2 publishes waiting
     * for the window) the publisher being routed is paused (holds.h). */
    int64_t max_buffered_bytes;
    int drop_oldest; /* non-zero: a full buffer drops its oldest message instead of
                      * refusing the new one with MQR_EFULL (both counted, warned) */
    /* Failover: when n_uris > 0 these are tried in turn (Paho's serverURIs)
     * and uri, if set, is only the name used in logs before the first
     * connect. */
    const char *const *uris;
    int n_uris;
    /* TLS settings, NULL = none (a TLS URI then uses mqr_upstream_tls_t's defaults).
     * Given, every URI must be ssl://, mqtts:// or wss://; copied. */
    const mqr_upstream_tls_t *tls;
    /* Will: sent by the broker when the connection dies without DISCONNECT. */
    const char *will_topic; /* NULL = no will */
    const void *will_payload;
    size_t will_payload_len;
    int will_qos;
    int will_retain;
    /* v5 Session Expiry Interval; < 0 = default (0 with clean start,
     * "never" without). Ignored on 3.1.1. */
    int64_t session_expiry_s;
    /* Reconnect backoff: Paho doubles from initial to max (seconds). */
    int retry_initial_s; /* 0 = 1 */
    int retry_max_s;     /* 0 = 30 */
    /* Failed attempts in a row (first connect or reconnect) after which the
     * session stops trying and enters MQR_UPSTREAM_FAILED; 0 = never. */
    int max_reconnects;
    /* Added to every topic published and filter subscribed upstream, and
     * stripped from topics received (those without it pass unchanged).
     * NULL or "" = none. */
    const char *prefix;
    /* Level mapping, n_map rules as 2 * n_map strings (local pattern,
     * remote pattern, ...; topic_map.h): a topic or filter that a rule
     * matches is rewritten by it (both ways) instead of taking the prefix. */
    const char *const *map;
    size_t n_map;
    /* Persistence of QoS 1/2 messages buffered or in flight through Paho's
     * user persistence into <data_dir>/upstream.db (upstream_persist.h),
     * keyed by the session's name, restored when a session of that name is
     * created again: 0 = on when the engine has a data directory, > 0 = on,
     * < 0 = off (memory only). */
    int persist;
    /* Non-zero: an open session of the same name may exist (a reload
     * replacing it; the caller closes the old one). Lookups by name find
     * the newest. */
    int replaces;
    /* The client that carries the session (upstream_transport.h): "paho"
     * (Paho MQTTAsync) or "native" (core/mqttc on the loop; acknowledges
     * incoming QoS 1/2 after routing; no persistence yet: persist on is
     * MQR_EINVAL). NULL or "" = "paho"; any other is MQR_EINVAL, logged
     * with the choices. */
    const char *transport;
    /* MQTT 5 enhanced authentication on the native transport:
     * "SCRAM-SHA-256" proves username's password without sending it (and
     * checks that the broker knows it). NULL = none (the password goes in
     * CONNECT). Needs mqtt_version 5, a username and a password; Paho has
     * no client-side AUTH: MQR_EINVAL there. */
    const char *auth_method;
} mqr_upstream_config_t;

/* What mqr__upstream_new() checks of cfg's TLS side, with the reason in
 * err: TLS settings with a URI that is not TLS, files that cannot be read
 * or parsed, a key that does not match its certificate or needs another
 * password. Returns 0, MQR_EINVAL (or MQR_ENOMEM). Any thread; reads the files. */
int mqr__upstream_tls_check(const mqr_upstream_config_t *cfg, char *err, size_t errlen);
/* The file part of that check: files of t readable and parsed, key and
 * certificate matching. 0, MQR_EINVAL or MQR_ENOMEM, the reason in err. */
int mqr__upstream_tls_check_files(const mqr_upstream_tls_t *t, char *err, size_t errlen);
/* ssl://, mqtts:// or wss:// (case-insensitive). */
bool mqr__upstream_uri_is_tls(const char *uri);
/* The reason of one line of OpenSSL's error report (ERR_print_errors_cb),
 * e.g. "certificate verify failed", with its extra data if any. */
void mqr__upstream_tls_reason(const char *line, size_t len, char *out, size_t outlen);

/* ---- lifecycle events ----------------------------------------------------
 * Observers see every session of an engine, on the loop thread. For one
 * change of state the order is: STATE_CHANGED, then the specific event
 * (CONNECTED, DISCONNECTED, ...). READY follows CONNECTED once every
 * subscription restored after the connect has been answered by the broker
 * (at once when there is none). REMOVED comes last, from close. */
typedef enum {
    MQR_UPEV_ADDED = 0,
    MQR_UPEV_CONNECTING,
    MQR_UPEV_CONNECTED,
    MQR_UPEV_READY,
    MQR_UPEV_DISCONNECTED,
    MQR_UPEV_RECONNECTING,
    MQR_UPEV_REMOVED,
    MQR_UPEV_STATE_CHANGED,
    MQR_UPEV_FAILED, /* gave up: max_reconnects reached */
    MQR_UPEV_COUNT_
} mqr_upstream_event_type_t;

typedef struct {
    mqr_upstream_event_type_t type;
    mqr_upstream_t *u;
    const char *name;   /* the session's name */
    uint64_t time_ms;   /* wall clock, ms since the epoch */
    const char *reason; /* DISCONNECTED, FAILED, STATE_CHANGED: why; else NULL */
    const char *broker; /* URI in use (CONNECTED) or last tried; may be NULL */
    unsigned attempt;   /* RECONNECTING: 1, 2, ... */
    mqr_upstream_state_t old_state, new_state; /* STATE_CHANGED */
} mqr_upstream_event_t;

/* "session_added", "session_connected", ... */
const char *mqr__upstream_event_name(mqr_upstream_event_type_t t);

typedef void (*mqr_upstream_observer_fn)(void *arg, const mqr_upstream_event_t *ev);

/* Adds / removes an observer of every session of e (several may be added;
 * the same fn+arg once). Loop thread. An observer may close sessions and
 * add or remove observers. */
int mqr__upstream_observe(mqr_engine_t *e, mqr_upstream_observer_fn fn, void *arg);
void mqr__upstream_unobserve(mqr_engine_t *e, mqr_upstream_observer_fn fn, void *arg);

/* Calls cb(arg, 0) once the named session (name NULL: every open session,
 * and at least one) is ready, or cb(arg, UV_ETIMEDOUT) after timeout_ms, or
 * cb(arg, MQR_ECLOSED) if the engine closes its sessions first. Never calls
 * cb from inside this call (an already ready session answers on the next
 * loop turn). */
typedef void (*mqr_upstream_ready_fn)(void *arg, int status);
int mqr__upstream_wait_ready(mqr_engine_t *e, const char *name, uint64_t timeout_ms,
                             mqr_upstream_ready_fn cb, void *arg);

/* ---- status and metrics --------------------------------------------------
 * Counters are totals since the session was created. Names map to
 * Prometheus metrics (docs/upstream.md). */
typedef struct {
    mqr_upstream_state_t state;
    bool ready;
    bool clean, persistent, auto_reconnect;
    const char *broker;          /* URI connected to (or last tried) */
    const char *transport;       /* "native" or "paho" */
    const char *last_error;      /* "" when none */
    uint64_t connected_since_ms; /* wall clock; 0 when not connected */
    uint64_t last_error_at_ms;
    uint64_t last_message_at_ms; /* last message sent or received */
    uint64_t connects;
    uint64_t reconnects; /* connection attempts after the first */
    uint64_t connect_failures;
    unsigned attempt; /* failed attempts in a row now */
    unsigned subscriptions;
    size_t inflight;   /* publishes the transport has not completed (sent or buffered) */
    uint64_t buffered; /* publishes accepted while disconnected, since the last connect */
    uint64_t messages_sent, bytes_sent;
    uint64_t messages_received, bytes_received;
    uint64_t messages_refused; /* received but not routed */
    /* Received, acknowledged to the broker (QoS 1/2) and then dropped: the
     * queue to the loop was full (UP_MAX_PENDING_*: 100 000 messages or
     * 64 MiB) or memory ran out. QoS 0 of any session; QoS 1/2 only of a
     * session without persistence (a persistent one spills instead). */
    uint64_t messages_dropped;
    /* QoS 1/2 messages acknowledged to the broker before being routed with
     * no stored copy (persist = false, or the inbox write failed): a crash
     * before routing loses them. Counted when queued for routing. */
    uint64_t messages_unprotected;
    /* QoS 1/2 messages of a persistent session that met a full queue: kept
     * in the inbox only and routed from there, in order; none lost. */
    uint64_t messages_spilled;
    /* Routed, but a subscriber that had to keep it could not (a full queue,
     * a store error): acknowledged to the broker all the same, so lost for
     * that subscriber (which counts it too). */
    uint64_t messages_not_kept;
    uint64_t publish_full, publish_expired, publish_failed;
    uint64_t publish_dropped;   /* buffered publishes dropped for room (drop_oldest) */
    uint64_t publishers_paused; /* times a publisher was paused for this session's backlog */
    /* persistent sessions: records in upstream.db (buffered, in flight, and
     * received messages not routed yet); 0 otherwise */
    uint64_t stored;
    uint64_t delivered; /* QoS 1/2 publishes the broker completed */
} mqr_upstream_status_t;

void mqr__upstream_status(mqr_upstream_t *u, mqr_upstream_status_t *out);
/* For tests: the bounds of the queue from Paho's thread to the loop
 * (0: the default, 100 000 messages / 64 MiB). Any thread. */
void mqr__upstream_set_inbound_limit(mqr_upstream_t *u, size_t max_msgs, size_t max_bytes);
/* Calls fn for every subscription: filter as the rules see it (without
 * prefix), QoS. */
void mqr__upstream_foreach_sub(const mqr_upstream_t *u,
                               void (*fn)(void *arg, const char *filter, int qos), void *arg);
/* The open (not closing) sessions of e, first to last created. */
mqr_upstream_t *mqr__upstream_first(mqr_engine_t *e);
mqr_upstream_t *mqr__upstream_next(mqr_upstream_t *u);

typedef struct {
    unsigned sessions, connected, ready, failed;
    uint64_t messages_sent, messages_received, bytes_sent, bytes_received, reconnects;
} mqr_upstream_manager_stats_t;
void mqr__upstream_manager_stats(mqr_engine_t *e, mqr_upstream_manager_stats_t *out);

/* Observer of state changes, on the loop thread (the bindings turn these into
 * Lua events). Called only when the state actually changes, and not for
 * mqr__upstream_close() itself (the caller knows). Failed connect attempts
 * are logged, not observed. It may close the session. */
typedef void (*mqr_upstream_event_fn)(void *arg, mqr_upstream_t *u, mqr_upstream_state_t state,
                                      const char *reason);

/* Creates the session, adds it to the engine's upstream sessions and starts connecting.
 * Configuration strings are copied. */
int mqr__upstream_new(mqr_engine_t *e, const mqr_upstream_config_t *cfg, mqr_upstream_t **out);
mqr_upstream_t *mqr__upstream_find(mqr_engine_t *e, const char *name);
const char *mqr__upstream_name(const mqr_upstream_t *u);
mqr_upstream_state_t mqr__upstream_state(const mqr_upstream_t *u);
void mqr__upstream_set_observer(mqr_upstream_t *u, mqr_upstream_event_fn fn, void *arg);

/* Called on the loop thread right before every connect attempt (the first
 * one starts inside mqr__upstream_new(), before a hook can be set; attempt:
 * failed attempts in a row so far), so that credentials
 * that expire (tokens) can be renewed with mqr__upstream_set_credentials().
 * Paho has no client-side MQTT v5 AUTH exchange, so a new connection is the
 * only moment credentials change. The hook may close u. NULL removes it. */
typedef void (*mqr_upstream_credentials_fn)(void *arg, mqr_upstream_t *u, unsigned attempt);
void mqr__upstream_set_credentials_hook(mqr_upstream_t *u, mqr_upstream_credentials_fn fn,
                                        void *arg);
/* Username and password (copied; NULL = none) of the next connects. */
int mqr__upstream_set_credentials(mqr_upstream_t *u, const char *username, const char *password);

/* Subscriptions are counted per filter (several routes may want one) and
 * restored after every reconnect. */
int mqr__upstream_subscribe(mqr_upstream_t *u, const char *filter, int qos);
int mqr__upstream_unsubscribe(mqr_upstream_t *u, const char *filter);
/* v5 subscription options for filter, used by every SUBSCRIBE of it sent
 * from now on (set before subscribing to have them from the start).
 * retain_handling: 0 send, 1 only for new subscriptions, 2 never; < 0 =
 * the default (1 when re-subscribing after a reconnect, 0 otherwise). */
int mqr__upstream_set_sub_options(mqr_upstream_t *u, const char *filter, bool no_local,
                                  bool retain_as_published, int retain_handling);

/* Sends msg's topic, payload, QoS and retain flag (and v5 properties on a v5
 * session). While disconnected, buffered up to max_buffered, then MQR_EFULL.
 * msg->expiry_s is authoritative: an expired message is dropped (returns 0),
 * otherwise a v5 session sends what is left of it as Message Expiry. Raw
 * properties a PUBLISH cannot carry make it send without properties (logged). */
int mqr__upstream_publish(mqr_upstream_t *u, const mqr_msg_t *msg);
/* Same, and calls done(arg, status, reason) on the loop thread when the
 * broker completed it (QoS 1: PUBACK, 2: PUBCOMP, 0: written): status 0, or
 * MQR_EUPSTREAM with the v5 reason code (or 0), or MQR_ECLOSED when the
 * session closes first. done is not called when this returns < 0. An
 * expired message is refused here with MQR_EINVAL. */
typedef void (*mqr_upstream_done_fn)(void *arg, int status, int reason);
int mqr__upstream_publish_cb(mqr_upstream_t *u, const mqr_msg_t *msg, mqr_upstream_done_fn done,
                             void *arg);

/* Subscribes like mqr__upstream_subscribe() (one more reference on filter)
 * and calls done(arg, status, reason) on the loop thread when the broker
 * answered its SUBACK: status 0 and reason = the granted QoS (v5: the
 * reason code), or MQR_EUPSTREAM and the failure code (0x80...), or
 * MQR_ECLOSED when the session closes or the filter is unsubscribed first.
 * Not connected: the answer comes with the SUBACK after the next connect.
 * A filter already subscribed and answered is answered again at once (on
 * the next loop turn, never inside this call). */
int mqr__upstream_subscribe_cb(mqr_upstream_t *u, const char *filter, int qos,
                               mqr_upstream_done_fn done, void *arg);
/* Drops one reference on filter; when it was the last, sends UNSUBSCRIBE
 * and done() gets the UNSUBACK (v5 reason code in reason). When other
 * references remain nothing is sent and done(arg, 0, 0) comes on the next
 * turn. MQR_ENOENT (not subscribed), MQR_ENOTCONN (not connected: use
 * mqr__upstream_unsubscribe, which needs no answer). */
int mqr__upstream_unsubscribe_cb(mqr_upstream_t *u, const char *filter, mqr_upstream_done_fn done,
                                 void *arg);
/* A round trip to the broker: done() when it answered. Paho's MQTTAsync has
 * no call that sends a PINGREQ, so this sends an UNSUBSCRIBE of a filter
 * nobody subscribes ("$mqrouter/ping"), which changes nothing
 * and takes the same path. MQR_ENOTCONN when not connected. */
int mqr__upstream_ping_cb(mqr_upstream_t *u, mqr_upstream_done_fn done, void *arg);

/* Disconnects and frees the session (the free completes asynchronously: the
 * Paho client is destroyed on a libuv worker thread, then the session's
 * async handle closes). From the call on, u is no longer found by name, its
 * functions return MQR_ECLOSED and no message of it is routed any more.
 * Messages still buffered are dropped, or with persistence stay stored for
 * the next session of that name. */
void mqr__upstream_close(mqr_upstream_t *u);
/* Closes like mqr__upstream_close() but keeps nothing: the stored messages
 * of a persistent session (buffered, in flight) are deleted, unless a
 * session replacing it takes them over. For a session the rules no longer
 * declare; mqr__upstream_close() keeps them for the next start. */
void mqr__upstream_discard(mqr_upstream_t *u);
void mqr__upstream_close_all(mqr_engine_t *e);
/* Closes what is still open and runs the loop until every session is freed
 * (at once when the engine's own loop has run already). */
void mqr__upstream_free_all(mqr_engine_t *e);

#endif
