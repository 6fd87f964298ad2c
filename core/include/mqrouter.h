/*
 * mqrouter.h — the whole public C API of libmqrouter (with mqrouter_auth.h
 * for listener users and mqrouter_lua.h for C functions callable from rules).
 *
 * A C host creates an engine (owning its loop or attached to the host's
 * uv_loop_t), loads a rules script, publishes and subscribes with C
 * callbacks, works queues and upstream sessions, then stops and frees it.
 * docs/c-api.md is the reference with a walk-through.
 *
 * Conventions that hold for every function unless its comment says otherwise:
 * - Threads: call from the thread that runs the engine's loop (the "loop
 *   thread"); callbacks run on that thread too. Functions marked "any
 *   thread" touch no engine state.
 * - Errors: functions that can fail return 0 (or a count) or a negative
 *   MQR_E* code; libuv codes (UV_E*) pass through unchanged. mqr_strerror()
 *   and mqr_err_name() describe any of them. A call that fails changes
 *   nothing and never fires its callback.
 * - Ownership: strings and buffers passed in are copied before the call
 *   returns unless said otherwise. Pointers handed out are borrowed: valid
 *   as long as the comment says, never freed by the caller, except *errmsg
 *   out-parameters, which are malloc'd and freed by the caller with free().
 * - ABI: every type is opaque except options and statistics structs, which
 *   start with a `size` field. Fill options with their *_init() (a macro that
 *   passes sizeof the struct the host was compiled with); the library reads
 *   only the fields that size covers and defaults the rest, so a host built
 *   against an older, smaller struct keeps working (MQR_EINVAL below the
 *   struct's first released layout). A size larger than the library knows
 *   is accepted when the extra bytes are zero, else MQR_ETOOLARGE (the host
 *   asks for something this library lacks). Statistics structs: the host
 *   sets size, the library fills that much. Fields are only ever appended.
 */
#ifndef MQROUTER_H
#define MQROUTER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- version ----------------------------------------------------------- */

#define MQR_VERSION_MAJOR 0
#define MQR_VERSION_MINOR 1
#define MQR_VERSION_PATCH 0
#define MQR_VERSION_STRING "0.1.0"
/* 0x00MMmmpp: compare with MQR_VERSION_HEX_OF(0, 1, 0) in #if. */
#define MQR_VERSION_HEX_OF(maj, min, pat) (((maj) << 16) | ((min) << 8) | (pat))
#define MQR_VERSION_HEX MQR_VERSION_HEX_OF(MQR_VERSION_MAJOR, MQR_VERSION_MINOR, MQR_VERSION_PATCH)

/* MQR_VERSION_STRING / MQR_VERSION_HEX of the library actually linked (a
 * shared library may be newer than the header the host was built with).
 * Static string. Any thread. */
const char *mqr_version(void);
unsigned mqr_version_hex(void);

/* ---- errors ------------------------------------------------------------ */

/* Values sit far below errno so libuv's negative errno codes can pass
 * through the same int unchanged. */
#define MQR_ERRNO_MAP(XX)                                                                          \
    XX(EMALFORMED, -4201, "malformed packet")                                                      \
    XX(EPROTOCOL, -4202, "protocol error")                                                         \
    XX(ETOPIC, -4203, "invalid topic")                                                             \
    XX(EUTF8, -4204, "invalid UTF-8 string")                                                       \
    XX(ETOOLARGE, -4205, "too large")                                                              \
    XX(EINCOMPLETE, -4206, "incomplete packet, more bytes needed")                                 \
    XX(EQOS, -4207, "QoS not supported")                                                           \
    XX(EFULL, -4208, "queue full")                                                                 \
    XX(ESCRIPT, -4209, "script error")                                                             \
    XX(EBUDGET, -4210, "handler exceeded its time budget")                                         \
    XX(EROUTELOOP, -4211, "publish nesting too deep (routing loop)")                               \
    XX(ESTORE, -4212, "store (SQLite) error")                                                      \
    XX(EUPSTREAM, -4213, "upstream session error")                                                 \
    XX(ENOTCONN, -4214, "not connected")                                                           \
    XX(ECLOSED, -4215, "closed")                                                                   \
    XX(EEXIST, -4216, "already exists")                                                            \
    XX(ENOENT, -4217, "not found")                                                                 \
    XX(ENOMEM, -4218, "out of memory")                                                             \
    XX(EINVAL, -4219, "invalid argument")                                                          \
    XX(ESCHEMA, -4220, "store schema is newer than this program")                                  \
    XX(EPAYLOAD, -4221, "invalid payload")                                                         \
    XX(ENOTINIT, -4230, "queues not initialised")                                                  \
    XX(EEXPIRED, -4231, "message expired")                                                         \
    XX(ETXNOENT, -4232, "transaction not found")                                                   \
    XX(ETXTIMEOUT, -4233, "transaction timed out (rolled back)")                                   \
    XX(EMEMLIMIT, -4234, "memory limit exceeded")                                                  \
    XX(ENODLQ, -4235, "dead letters disabled")                                                     \
    XX(EQNAME, -4236, "invalid queue name")                                                        \
    XX(EAUTH, -4237, "authentication failed")                                                      \
    XX(ETLS, -4238, "TLS error (handshake, certificate)")

#define XX(name, val, msg) MQR_##name = (val),
typedef enum { MQR_ERRNO_MAP(XX) MQR_ERRNO_MAX_ = -4300 } mqr_errno_t;
#undef XX

/* Text and short name ("EMALFORMED", "ECONNREFUSED") of any code this API
 * returns, libuv codes included. Static strings, never NULL. Any thread. */
const char *mqr_strerror(int err);
const char *mqr_err_name(int err);

/* ---- logging ----------------------------------------------------------- */

typedef enum {
    MQR_LOG_ERROR = 0,
    MQR_LOG_WARN = 1,
    MQR_LOG_INFO = 2,
    MQR_LOG_DEBUG = 3,
} mqr_log_level_t;

/* Parses "error", "warn", "info", "debug"; returns -1 when unknown (or
 * NULL). Any thread. */
int mqr_log_level_parse(const char *name);

/* Process-wide: lines above this level are not even formatted. Call before
 * starting engines or from the loop thread (not synchronised). */
void mqr_log_set_level(int level);

/* Replaces stderr with a host sink (NULL restores stderr). Process-wide, for
 * every engine. The sink is called on whichever thread logs (the loop thread,
 * or a Paho or libuv worker thread: it must be thread-safe); text is
 * NUL-terminated and valid only during the call. Set it before starting
 * engines. */
typedef void (*mqr_log_fn)(void *arg, int level, const char *component, const char *text);
void mqr_log_set_sink(mqr_log_fn fn, void *arg);

/* ---- messages ---------------------------------------------------------- */

/* An immutable, reference-counted MQTT message. Fan-out shares one message;
 * nobody copies its payload. Counts are not atomic: loop thread only.
 * A message handed to a callback is borrowed for the call; mqr_msg_ref() it
 * to keep it and mqr_msg_unref() it when done (NULL is ignored). */
typedef struct mqr_msg mqr_msg_t;

void mqr_msg_ref(mqr_msg_t *msg);
void mqr_msg_unref(mqr_msg_t *msg);
/* Topic (NUL-terminated) and payload (followed by a NUL byte that is not part
 * of it), valid while the message is; *len (if not NULL) gets the length. */
const char *mqr_msg_topic(const mqr_msg_t *msg, size_t *len);
const void *mqr_msg_payload(const mqr_msg_t *msg, size_t *len);
int mqr_msg_qos(const mqr_msg_t *msg);
int mqr_msg_retain(const mqr_msg_t *msg);
/* Where the message entered: "listener", "session", "lua", "c", "store"; and
 * the name of that source (client id, session name, script route), may be
 * "". Static / message-owned strings. */
const char *mqr_msg_origin_kind(const mqr_msg_t *msg);
const char *mqr_msg_origin_name(const mqr_msg_t *msg);

/* ---- engine ------------------------------------------------------------ */

typedef struct mqr_engine mqr_engine_t;

typedef struct {
    size_t size;                    /* set by mqr_engine_options_init: ABI guard */
    const char *listen_host;        /* embedded listener; NULL = "127.0.0.1" */
    int listen_port;                /* 0 = 1883; -1 = no listener */
    const char *data_dir;           /* SQLite lives here; NULL = "./data"; "" = in memory */
    int log_level;                  /* mqr_log_level_t (process-wide, see mqr_log_set_level) */
    unsigned handler_budget_ms;     /* stuck-handler budget; 0 = 1000, MQR_BUDGET_OFF = none */
    int watch_script;               /* reload the script when its file changes */
    int handle_signals;             /* SIGINT/SIGTERM stop, SIGHUP reloads (a process has one
                                       such engine; a host with its own handlers leaves it 0) */
    int check_only;                 /* a scratch engine (mqrouter --check): listeners are
                                       validated (options, certificate files), never bound */
    const char *upstream_transport; /* the transport of upstream sessions that name none:
                                       "native" or "paho"; NULL = the environment's
                                       MQROUTER_UPSTREAM_TRANSPORT, else the built-in default
                                       (docs/upstream.md "Transports") */
    int no_topic_counts;            /* non-zero: the topic registry does not count publishes
                                       (one hash lookup each, ~5 % of in-process routing);
                                       the admin API then lists no topics seen in traffic */
} mqr_engine_options_t;

#define MQR_BUDGET_OFF 0xFFFFFFFFu

/* Fills *opts with the defaults (log level info, everything else 0) and sets
 * opts->size = size. Use the macro. Any thread. */
void mqr_engine_options_init_sized(mqr_engine_options_t *opts, size_t size);
#define mqr_engine_options_init(opts) mqr_engine_options_init_sized((opts), sizeof *(opts))

/* Creates an engine. opts may be NULL (the defaults); it is read during the
 * call only (strings copied). With loop == NULL the engine owns a loop that
 * mqr_engine_run() drives; otherwise it attaches to the host's loop (which
 * must outlive the engine), the host runs it and may keep its own handles on
 * it. Opens the store and starts the listener (unless listen_port is -1).
 * Returns 0 and *out, or < 0 with *out NULL and *errmsg (if errmsg is not
 * NULL) a malloc'd explanation the caller frees: MQR_EINVAL / MQR_ETOOLARGE
 * (opts->size, see ABI above), MQR_ENOMEM, MQR_ESTORE,
 * MQR_ESCHEMA, a libuv code (data directory, bind). The calling thread
 * becomes the loop thread. */
struct uv_loop_s;
int mqr_engine_new(mqr_engine_t **out, const mqr_engine_options_t *opts, struct uv_loop_s *loop,
                   char **errmsg);

/* Loads (or, when rules are loaded, reloads as a transaction) a rules script
 * from a file (path copied; the file is read during the call). On failure the
 * rules already running stay and *errmsg (if given, caller frees) receives
 * the reason with file and line: MQR_ENOENT (cannot read), MQR_ESCRIPT
 * (syntax or run-time error), MQR_EBUDGET, MQR_ENOMEM. */
int mqr_engine_load_file(mqr_engine_t *e, const char *path, char **errmsg);
/* The same from a NUL-terminated string (copied into the Lua state); name
 * (may be NULL: "rules") names it in error messages. A string has no
 * directory: `require` looks in the stdlib dir and ".". */
int mqr_engine_load_string(mqr_engine_t *e, const char *name, const char *code, char **errmsg);
/* Reloads the file last loaded. MQR_ENOENT when none was, else as
 * mqr_engine_load_file. */
int mqr_engine_reload(mqr_engine_t *e, char **errmsg);

/* Runs the owned loop until the engine is stopped and every handle closed.
 * Returns 0; MQR_EINVAL when the engine is attached to a host loop (the host
 * runs that one). */
int mqr_engine_run(mqr_engine_t *e);
/* Graceful stop: closes listeners, sessions, script timers and watchers,
 * flushes the store. Queues and C subscriptions stay usable until free.
 * Idempotent; may be called from any engine callback. The loop then runs out
 * of the engine's work: a host loop returns from uv_run once the host's own
 * handles are closed too. */
void mqr_engine_stop(mqr_engine_t *e);
/* Frees the engine (stopping it first if needed) and everything it owns:
 * queues, sessions, C subscriptions, Lua states, the store. Runs the loop
 * (UV_RUN_NOWAIT on a host loop, to the end on its own) so that its handles
 * finish closing. On a host loop, run it once more afterwards
 * (uv_run(loop, UV_RUN_DEFAULT) returns as soon as nothing is left): then
 * no handle of the engine remains and uv_loop_close() returns 0 once the
 * host's own are closed. Not from inside an engine callback. NULL is
 * ignored. */
void mqr_engine_free(mqr_engine_t *e);
/* The loop the engine runs on (its own or the host's). */
struct uv_loop_s *mqr_engine_loop(mqr_engine_t *e);

/* ---- listeners ---------------------------------------------------------- */

/* What a listener speaks under MQTT. */
typedef enum {
    MQR_LISTEN_TCP = 0, /* plain MQTT over TCP */
    MQR_LISTEN_TLS = 1, /* MQTT over TLS 1.2+ */
    MQR_LISTEN_WS = 2,  /* MQTT over WebSocket (subprotocol "mqtt") */
    MQR_LISTEN_WSS = 3, /* MQTT over WebSocket over TLS */
} mqr_listen_type_t;

/* One more MQTT listener: where, which transport, and its limits. Every
 * limit left 0 takes the default documented in docs/lua-api.md (mq.listen). */
typedef struct {
    size_t size;      /* set by mqr_listen_options_init: ABI guard */
    int type;         /* mqr_listen_type_t */
    const char *host; /* IP literal or name (resolved once); NULL = "127.0.0.1" */
    int port;         /* 0 = any free port: ask mqr_listener_port() */
    /* TLS and WSS: PEM files. With ca_file, client certificates are asked
     * for and verified against it; require_client_cert refuses clients
     * without a valid one. */
    const char *cert_file;
    const char *key_file;
    const char *ca_file;
    int require_client_cert;
    /* limits (0 = default) */
    size_t max_packet_size;
    unsigned max_connections;
    unsigned max_inflight;
    unsigned max_queued;
    size_t max_out_bytes;
    unsigned receive_max;
    int topic_alias_max;
    unsigned max_subscriptions;
    unsigned connect_timeout_ms;
    unsigned max_keepalive;
    int max_qos;               /* 1 or 2; 0 = 2; negative = QoS 0 only */
    unsigned publish_rate;     /* PUBLISH/s per client, 0 = no limit; over it reading pauses */
    unsigned publish_burst;    /* token bucket size, 0 = publish_rate */
    unsigned connect_rate;     /* new connections/s, 0 = no limit; over it closed at accept */
    unsigned connect_burst;    /* 0 = connect_rate */
    unsigned stuck_timeout_ms; /* 0 = 10000, see docs/listener.md */
    int sys_interval_ms;       /* $SYS refresh, 0 = 10000, negative = off */
    int allow_anonymous;       /* 1 yes, -1 no, 0 = only on a loopback address */
    /* seconds an MQTT 3.1.1 persistent session (Clean Session 0) is kept
     * after its client left, 0 = for ever (3.1.1 has no expiry of its own);
     * see docs/listener.md. Added after the first release: keep it last. */
    unsigned v311_session_expiry_s;
} mqr_listen_options_t;

typedef struct mqr_listener mqr_listener_t;

/* Zeroes *opts (every default) and sets opts->size = size. Use the macro.
 * Any thread. */
void mqr_listen_options_init_sized(mqr_listen_options_t *opts, size_t size);
#define mqr_listen_options_init(opts) mqr_listen_options_init_sized((opts), sizeof *(opts))

/* Binds and starts serving a listener on the engine's loop, besides the one
 * mqr_engine_options_t describes. Every listener shares the engine's
 * client-id space (a client id connected on one is taken over from any
 * other). The engine owns it: it closes with mqr_engine_stop(), or earlier
 * with mqr_listener_close(); *out is borrowed until then. On failure returns
 * < 0 (MQR_EINVAL: options, certificates; MQR_ETOOLARGE: opts->size, see
 * ABI above; MQR_ECLOSED: engine stopping; a
 * libuv code: bind), *out stays NULL and *errmsg (if given) receives a
 * malloc'd explanation the caller frees.
 * With mqr_engine_options_t.check_only, the options and certificate files
 * are checked, nothing is bound, 0 is returned and *out stays NULL. */
int mqr_engine_listen(mqr_engine_t *e, const mqr_listen_options_t *opts, mqr_listener_t **out,
                      char **errmsg);
/* The port actually bound (the one chosen when opts->port was 0). */
int mqr_listener_port(const mqr_listener_t *l);
/* Stops listening and closes the listener's clients; l is invalid after.
 * Not after mqr_engine_stop(), which has closed every listener already. */
void mqr_listener_close(mqr_listener_t *l);

/* ---- admin HTTP API ---------------------------------------------------- */

/* Serves the admin API, /health and /metrics (docs/admin.md) on host:port
 * (an IP address; NULL = "127.0.0.1"; port 0 = any free port) on the
 * engine's loop until mqr_engine_stop(). tokens: ntokens bearer tokens,
 * kept only as SHA-256 digests; with none the API is open, which only a
 * loopback address allows (MQR_EINVAL otherwise). One per engine
 * (MQR_EEXIST). On failure *errmsg (if given) gets a malloc'd reason (the
 * caller frees it). Loop thread. */
int mqr_engine_admin(mqr_engine_t *e, const char *host, int port, const char *const *tokens,
                     size_t ntokens, char **errmsg);

/* Everything the admin server can be told (docs/admin.md, docs/security.md).
 * A browser on the machine must not reach the API for another site: the
 * server answers only requests whose Host names its address, "localhost"
 * or one of hosts (DNS rebinding), whose Origin, when sent, is its own or
 * one of origins, and whose body is application/json. */
typedef struct {
    size_t size;               /* set by mqr_admin_options_init: ABI guard */
    const char *host;          /* an IP address; NULL = "127.0.0.1" */
    int port;                  /* 0 = any free port: ask mqr_engine_admin_port() */
    const char *const *tokens; /* "TOKEN" or "TOKEN tenant=NAME", kept as digests */
    size_t ntokens;
    int require_token;        /* refuse to serve without tokens, on loopback too */
    const char *const *hosts; /* more names a request's Host may give (a proxy's) */
    size_t nhosts;
    const char *const *origins; /* "scheme://host[:port]" pages allowed to call (CORS) */
    size_t norigins;
} mqr_admin_options_t;

/* Zeroes *opts (every default) and sets opts->size = size. Use the macro.
 * Any thread. */
void mqr_admin_options_init_sized(mqr_admin_options_t *opts, size_t size);
#define mqr_admin_options_init(opts) mqr_admin_options_init_sized((opts), sizeof *(opts))

/* mqr_engine_admin() with every option. MQR_EINVAL for a malformed token,
 * host name or origin, or no tokens where they are needed (off loopback,
 * or require_token); the rest as mqr_engine_admin(). */
int mqr_engine_admin_start(mqr_engine_t *e, const mqr_admin_options_t *opts, char **errmsg);
/* Reads bearer tokens from a file, one per line (blank lines and lines
 * starting with '#' skipped, surrounding spaces trimmed) into a malloc'd
 * array of malloc'd strings; free with mqr_admin_tokens_free(). MQR_EINVAL
 * for a file without tokens. Any thread. */
int mqr_admin_tokens_read(const char *path, char ***tokens, size_t *ntokens, char **errmsg);
void mqr_admin_tokens_free(char **tokens, size_t ntokens);
/* The port the admin API is bound to, -1 when it is not served. Loop
 * thread. */
int mqr_engine_admin_port(const mqr_engine_t *e);

/* ---- publish and subscribe ---------------------------------------------- */

/* Publishes into the router as origin "c": C subscribers, Lua routes, queues
 * bound to a matching filter, listener clients and sessions see it before
 * this returns (queue consumers later). topic (a valid topic name, no
 * wildcards) and payload (len bytes, may be NULL when len is 0) are copied.
 * Returns 0, MQR_EINVAL (NULL topic), MQR_ETOPIC, MQR_EQOS (qos not 0..2),
 * MQR_EROUTELOOP (published from handlers nested too deep), MQR_ENOMEM,
 * MQR_ESTORE (retain, store failure). */
int mqr_publish(mqr_engine_t *e, const char *topic, const void *payload, size_t len, int qos,
                int retain);

/* A C subscription. fn(arg, msg) runs on the loop thread for each matching
 * message, inside the publisher's call; msg is borrowed: mqr_msg_ref() it to
 * keep it. fn may publish (nesting is bounded: MQR_EROUTELOOP) but must not
 * unsubscribe itself or free the engine. filter is copied. *out (may be
 * NULL) is owned by the engine: valid until mqr_unsubscribe() or
 * mqr_engine_free(), which frees subscriptions still in place. Returns 0,
 * MQR_EINVAL (NULL filter or fn), MQR_ETOPIC, MQR_ENOMEM. */
typedef struct mqr_csub mqr_csub_t;
typedef void (*mqr_msg_fn)(void *arg, mqr_msg_t *msg);
int mqr_subscribe(mqr_engine_t *e, const char *filter, mqr_msg_fn fn, void *arg, mqr_csub_t **out);
/* Removes and frees sub (NULL is ignored). */
void mqr_unsubscribe(mqr_engine_t *e, mqr_csub_t *sub);

/* ---- queues --------------------------------------------------------------
 * Named work queues with competing consumers, priorities, TTL, ack/nack with
 * redelivery and dead letters (docs/queues.md). Host and scripts share one
 * namespace of queues: mqr_queue_find() finds a queue a script declared with
 * mq.queue(name), and a name the host created is taken for scripts (their
 * mq.queue of it returns nil, "already exists"). Durable queues live in the
 * store (the engine needs a data_dir). Consumers run on the loop, never
 * inside a publisher's call. */

typedef struct mqr_queue mqr_queue_t;
typedef struct mqr_queue_consumer mqr_queue_consumer_t;

/* Priority levels: higher first, FIFO within a level. */
enum {
    MQR_PRIO_LOWEST = 0,
    MQR_PRIO_LOW = 1,
    MQR_PRIO_NORMAL = 2,
    MQR_PRIO_HIGH = 3,
    MQR_PRIO_HIGHEST = 4,
    MQR_PRIO_LEVELS = 5,
};

typedef struct {
    size_t size;                 /* set by mqr_queue_options_init: ABI guard */
    const char *name;            /* required: 1..200 bytes of '!'..'~' except '+' and '#' */
    int64_t default_ttl_ms;      /* TTL of messages published without one; 0 = none */
    uint32_t ack_timeout_ms;     /* unacked this long: redelivered; 0 = 30000; UINT32_MAX never */
    uint32_t max_attempts;       /* deliveries before dead-lettering; 0 = 5; UINT32_MAX no limit */
    uint32_t backoff_initial_ms; /* nack backoff initial * 2^(attempts-1); 0 = 1000 */
    uint32_t backoff_max_ms;     /* ... capped here; 0 = 60000 */
    size_t max_messages;         /* held (ready, delayed, in flight); 0 = 100000 */
    size_t max_bytes;            /* memory of held entries; 0 = 64 MiB */
    int drop_oldest;             /* when full, drop the oldest ready entry instead of refusing */
    int dead_letter;             /* keep dead letters (default 1) */
    int durable;                 /* stored in the engine's SQLite store, restored at start */
    size_t dedup_window;         /* dedup ids remembered (mqr_queue_publish_ex); 0 = off */
} mqr_queue_options_t;

/* Defaults (dead_letter = 1, everything else 0) and opts->size = size.
 * Use the macro. Any thread. */
void mqr_queue_options_init_sized(mqr_queue_options_t *opts, size_t size);
#define mqr_queue_options_init(opts) mqr_queue_options_init_sized((opts), sizeof *(opts))

/* Creates a queue (name copied). The engine owns it: *out is borrowed,
 * valid until mqr_queue_close() or mqr_engine_free(). Returns 0,
 * MQR_EINVAL (NULL or bad options), MQR_ETOOLARGE (opts->size), MQR_EQNAME,
 * MQR_EEXIST (the name is taken, by the host or a script: use
 * mqr_queue_find), MQR_ENOMEM, MQR_ESTORE (durable), MQR_ECLOSED (engine
 * stopping). */
int mqr_queue_new(mqr_engine_t *e, const mqr_queue_options_t *opts, mqr_queue_t **out);
/* Finds an open queue by name (borrowed as above). MQR_ENOENT. */
int mqr_queue_find(mqr_engine_t *e, const char *name, mqr_queue_t **out);
/* Its name, valid while the queue is. */
const char *mqr_queue_name(const mqr_queue_t *q);
/* Closes q: consumers are cancelled, held entries released (a durable
 * queue's stay stored), the name is free again. q is invalid after; a
 * script holding the queue gets "closed" errors. */
void mqr_queue_close(mqr_queue_t *q);

/* Enqueues a copy of topic + payload at priority (MQR_PRIO_*) with ttl_ms
 * (> 0 this TTL; 0 the queue's default; < 0 never expires). *id (may be
 * NULL) receives the entry id. Returns 0, MQR_EINVAL (priority, NULL
 * topic), MQR_ETOPIC, MQR_EFULL, MQR_EMEMLIMIT, MQR_ECLOSED, MQR_ENOMEM, a
 * store error (durable). A refused publish changes nothing but counters. */
int mqr_queue_publish(mqr_queue_t *q, const char *topic, const void *payload, size_t len,
                      int priority, int64_t ttl_ms, uint64_t *id);
/* Routes every message the router sees on filter into q (priority normal,
 * the queue's TTL); refusals are counted in the queue's stats. The binding
 * goes with the queue. Returns 0, MQR_ETOPIC, MQR_ECLOSED, MQR_ENOMEM. */
int mqr_queue_bind(mqr_queue_t *q, const char *filter);

/* What a consumer is handed: msg is borrowed until the entry is settled
 * (ack, nack, reject, or the queue closes); mqr_msg_ref() it to keep it. */
typedef struct {
    uint64_t id;
    mqr_msg_t *msg;
    unsigned attempts; /* 1 on the first delivery */
    int priority;
} mqr_queue_delivery_t;

/* What a consumer callback returns. */
enum {
    MQR_QUEUE_LATER = 0,  /* the host settles it later: mqr_queue_ack/nack/reject(id) */
    MQR_QUEUE_ACK = 1,    /* done */
    MQR_QUEUE_NACK = 2,   /* failed: redeliver after the queue's backoff */
    MQR_QUEUE_REJECT = 3, /* failed for good: dead-letter now */
};

typedef int (*mqr_queue_consume_fn)(void *arg, mqr_queue_t *q, const mqr_queue_delivery_t *d);

/* Adds a competing consumer: ready messages go round-robin to the consumers
 * that have room (fewer than prefetch unsettled; 0 = no limit). fn runs on
 * the loop thread, never inside a publish, and may call any queue function
 * (close included). *out (may be NULL) is owned by q: valid until
 * mqr_queue_cancel() or the queue closes. Returns 0, MQR_EINVAL, MQR_ECLOSED,
 * MQR_ENOMEM. */
int mqr_queue_consume(mqr_queue_t *q, mqr_queue_consume_fn fn, void *arg, unsigned prefetch,
                      mqr_queue_consumer_t **out);
/* Removes a consumer; its unsettled deliveries go back to the queue at once.
 * May be called from its own callback. */
void mqr_queue_cancel(mqr_queue_t *q, mqr_queue_consumer_t *c);

/* Settle an in-flight entry. ack: done. nack: redelivered after delay_ms
 * (0 = at once, < 0 = the queue's backoff), or dead-lettered after
 * max_attempts. reject: dead-letter now. Return 0, MQR_ECLOSED, MQR_ENOENT
 * (not in flight: unknown, already settled or its ack timeout passed). */
int mqr_queue_ack(mqr_queue_t *q, uint64_t id);
int mqr_queue_nack(mqr_queue_t *q, uint64_t id, int64_t delay_ms);
int mqr_queue_reject(mqr_queue_t *q, uint64_t id);

/* Counters since the queue opened and what it holds now. Set out->size =
 * sizeof *out first (or use mqr_queue_info_init): only that much is filled. */
typedef struct {
    size_t size;
    uint64_t published, delivered, acked, nacked, rejected, redelivered;
    uint64_t expired, dropped, dead_lettered, refused; /* refused: full or memory */
    size_t depth;                                      /* ready + delayed */
    size_t in_flight, dead, bytes, consumers;
} mqr_queue_info_t;
#define mqr_queue_info_init(info) ((void)((info)->size = sizeof *(info)))
/* Returns 0, MQR_EINVAL (NULL, or out->size smaller than the size field),
 * MQR_ECLOSED. */
int mqr_queue_stats(const mqr_queue_t *q, mqr_queue_info_t *out);

/* ---- upstream sessions ---------------------------------------------------
 * mqrouter as an MQTT client of other brokers (docs/upstream.md). Messages
 * a session receives on its subscriptions enter the router with origin
 * "session" (mqr_subscribe sees them); mqr_session_publish sends to the
 * broker. Sessions reconnect by themselves. Scripts declare their own with
 * mq.session: remove only sessions the host added. */

typedef struct mqr_upstream mqr_session_t;

typedef enum {
    MQR_SESSION_CONNECTING = 0,
    MQR_SESSION_CONNECTED = 1,
    MQR_SESSION_DISCONNECTED = 2, /* lost; reconnecting */
    MQR_SESSION_CLOSED = 3,
    MQR_SESSION_FAILED = 4, /* gave up after max_reconnects failed attempts */
} mqr_session_state_t;

typedef struct {
    size_t size;           /* set by mqr_session_options_init: ABI guard */
    const char *name;      /* required, unique per engine */
    const char *uri;       /* required: "tcp://127.0.0.1:1883", "ssl://host:8883", "ws://..." */
    const char *client_id; /* NULL = "mqrouter-<name>" */
    const char *username;  /* NULL = none */
    const char *password;  /* NULL = none */
    int mqtt_version;      /* 4 (3.1.1, default) or 5 */
    int keepalive_s;       /* 0 = 30 */
    int clean_start;       /* default 1; 0 resumes the broker's session */
    int max_buffered;      /* publishes kept while disconnected; 0 = 10000 */
    int drop_oldest;       /* full buffer: drop its oldest publish (else refuse, MQR_EFULL) */
    int max_reconnects;    /* failed attempts in a row before FAILED; 0 = never give up */
    int retry_initial_s;   /* reconnect backoff: 0 = 1 */
    int retry_max_s;       /* 0 = 30 */
    const char *prefix;    /* added to topics sent, stripped from topics received; NULL = none */
    int persist;           /* QoS 1/2 kept in <data_dir>/upstream.db: 0 auto, > 0 on, < 0 off */
    /* TLS (ssl://, mqtts://, wss:// URIs): PEM files; NULL = system CAs, no client cert */
    const char *tls_cafile;
    const char *tls_cert;
    const char *tls_key;
    int tls_no_verify; /* accept any broker certificate */
    /* what carries the session (docs/upstream.md): "native" (mqrouter's
     * own client on the loop) or "paho" (Paho MQTT C's asynchronous
     * client); NULL = the engine's upstream_transport, else "native" */
    const char *transport;
    /* native, connected: bytes written for the broker its socket has not
     * taken; from half of it (or of max_buffered publishes waiting for the
     * broker's window) the publishing listener client is paused, past it a
     * QoS 0 publish is refused (docs/upstream.md, Backpressure). 0 = 64 MiB */
    int64_t max_buffered_bytes;
} mqr_session_options_t;

/* Defaults (clean_start = 1, mqtt_version = 4, the rest 0) and
 * opts->size = size. Use the macro. Any thread. */
void mqr_session_options_init_sized(mqr_session_options_t *opts, size_t size);
#define mqr_session_options_init(opts) mqr_session_options_init_sized((opts), sizeof *(opts))

/* Creates a session and starts connecting (strings copied). The engine owns
 * it: *out is borrowed until mqr_session_remove() or mqr_engine_free().
 * Returns 0, or < 0 with *errmsg (if given, caller frees) saying why:
 * MQR_EINVAL (options, URI, TLS files), MQR_ETOOLARGE (opts->size),
 * MQR_EEXIST (name taken), MQR_ENOMEM,
 * MQR_EUPSTREAM (Paho refused the client), MQR_ECLOSED (engine stopping). */
int mqr_session_add(mqr_engine_t *e, const mqr_session_options_t *opts, mqr_session_t **out,
                    char **errmsg);
/* The open session of that name (a host's or a script's), borrowed; NULL
 * when none. */
mqr_session_t *mqr_session_find(mqr_engine_t *e, const char *name);
/* Its name, valid while the session is. */
const char *mqr_session_name(const mqr_session_t *s);
/* Disconnects and frees the session (asynchronously: the loop must run).
 * s is invalid after. Buffered publishes are dropped, or with persistence
 * kept for the next session of that name. */
void mqr_session_remove(mqr_session_t *s);

/* Subscribes on the broker (counted per filter, restored after reconnects);
 * received messages enter the router. 0, MQR_ETOPIC, MQR_EINVAL (qos),
 * MQR_ECLOSED, MQR_ENOMEM. Unsubscribe drops one count: MQR_ENOENT when not
 * subscribed. */
int mqr_session_subscribe(mqr_session_t *s, const char *filter, int qos);
int mqr_session_unsubscribe(mqr_session_t *s, const char *filter);
/* Sends topic + payload (copied) to the broker; while disconnected buffered
 * up to max_buffered (then refused, or the oldest dropped with drop_oldest). 0, MQR_EINVAL,
 * MQR_ETOPIC, MQR_EQOS, MQR_EFULL, MQR_ECLOSED, MQR_EUPSTREAM, MQR_ENOMEM. */
int mqr_session_publish(mqr_session_t *s, const char *topic, const void *payload, size_t len,
                        int qos, int retain);

/* Set out->size = sizeof *out first (mqr_session_info_init). Strings are
 * borrowed until the next call on the session. */
typedef struct {
    size_t size;
    int state;          /* mqr_session_state_t */
    int ready;          /* connected and every subscription answered */
    const char *broker; /* URI connected to, or last tried */
    const char *last_error;
    uint64_t connects, reconnects, connect_failures;
    uint64_t messages_sent, messages_received, messages_dropped;
    uint64_t buffered;                      /* accepted while disconnected since the last connect */
    uint64_t publish_full, publish_dropped; /* refused / dropped: buffer full */
    size_t inflight;
    unsigned subscriptions;
    uint64_t publishers_paused; /* times a publisher was paused for the backlog */
} mqr_session_info_t;
#define mqr_session_info_init(info) ((void)((info)->size = sizeof *(info)))
/* 0, MQR_EINVAL (NULL, or out->size smaller than the size field). */
int mqr_session_status(mqr_session_t *s, mqr_session_info_t *out);
/* "connecting", "connected", "disconnected", "closed", "failed";
 * "unknown" otherwise. Any thread. */
const char *mqr_session_state_name(int state);

/* ---- device registry ------------------------------------------------------
 * Devices the engine knows (docs/registry.md): registered here, from Lua
 * (mq.devices) or the admin API, persisted in the store; a device whose
 * client id connects to a listener is "online" until that connection ends.
 * tenant: "" or NULL = none. All functions: loop thread. Strings handed
 * out are borrowed until the next call that changes the registry. */

/* Registers a device or updates the name, type and metadata (JSON text;
 * NULL = "{}") of the one with that tenant and id, keeping its status and
 * counters. *created (may be NULL) says which. Returns 0, MQR_EINVAL (bad
 * tenant or id, name/type too long, metadata not JSON: *errmsg, if given,
 * gets a malloc'd reason the caller frees), MQR_ENOMEM, MQR_ESTORE. */
int mqr_device_register(mqr_engine_t *e, const char *tenant, const char *id, const char *name,
                        const char *type, const char *metadata_json, int *created, char **errmsg);
/* 0, MQR_ENOENT. */
int mqr_device_unregister(mqr_engine_t *e, const char *tenant, const char *id);
/* Sets the status by hand ("online", "offline", "unknown"); the next
 * connect or disconnect of its client changes it again. 0, MQR_ENOENT,
 * MQR_EINVAL. */
int mqr_device_set_status(mqr_engine_t *e, const char *tenant, const char *id, const char *status);

/* A device as the registry shows it. Set size = sizeof first
 * (mqr_device_view_init): only that much is filled. */
typedef struct {
    size_t size;
    const char *tenant; /* "" = none */
    const char *id, *name, *type;
    const char *metadata; /* JSON text */
    const char *status;   /* "unknown", "online", "offline" */
    uint64_t status_ms;   /* wall clock (ms since the epoch) of the last change; 0 never */
    uint64_t created_ms, last_seen_ms;
    uint64_t msgs_in, msgs_out, bytes_in, bytes_out;
} mqr_device_view_t;
#define mqr_device_view_init(v) ((void)((v)->size = sizeof *(v)))
/* 0 and *out, MQR_ENOENT, MQR_EINVAL (NULL or out->size too small). */
int mqr_device_get(mqr_engine_t *e, const char *tenant, const char *id, mqr_device_view_t *out);
/* One page of devices in (tenant, id) order: tenant NULL = every tenant
 * ("" = those of none), type/status/prefix NULL = any; limit 1..1000 (0 =
 * 100). fn gets each (view borrowed for the call; a non-zero return stops
 * the page there). next (next_cap >= 512 bytes, or NULL) receives the
 * cursor of the following page, "" when there is none; pass it as cursor.
 * Returns the number given to fn, or MQR_EINVAL (limit, cursor, status,
 * tenant), MQR_ETOOLARGE (next_cap too small for the cursor), MQR_ENOMEM.
 * fn must not change the registry. */
typedef int (*mqr_device_view_fn)(void *arg, const mqr_device_view_t *d);
int mqr_device_list(mqr_engine_t *e, const char *tenant, const char *type, const char *status,
                    const char *prefix, unsigned limit, const char *cursor, mqr_device_view_fn fn,
                    void *arg, char *next, size_t next_cap);

#ifdef __cplusplus
}
#endif
#endif
