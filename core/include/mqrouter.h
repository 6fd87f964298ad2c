/*
 * mqrouter.h — the whole public C API of libmqrouter.
 *
 * A C host creates an engine, loads a rules script, runs the loop, publishes
 * and subscribes with C callbacks. Every function here must be called from the
 * thread that runs the engine's loop unless its comment says otherwise.
 * Functions that can fail return 0 or a negative MQR_E* code (libuv codes pass
 * through unchanged); mqr_strerror() and mqr_err_name() describe any of them.
 */
#ifndef MQROUTER_H
#define MQROUTER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MQR_VERSION_MAJOR 0
#define MQR_VERSION_MINOR 1
#define MQR_VERSION_PATCH 0
#define MQR_VERSION_STRING "0.1.0"

/* Returns MQR_VERSION_STRING of the library actually linked. Any thread. */
const char *mqr_version(void);

/* Error codes. Values sit far below errno so libuv's negative errno codes can
 * pass through the same int unchanged. */
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
    XX(EQNAME, -4236, "invalid queue name")

#define XX(name, val, msg) MQR_##name = (val),
typedef enum { MQR_ERRNO_MAP(XX) MQR_ERRNO_MAX_ = -4300 } mqr_errno_t;
#undef XX

/* Text and short name ("EMALFORMED") of any error this API returns, including
 * libuv codes. Never NULL. Any thread. */
const char *mqr_strerror(int err);
const char *mqr_err_name(int err);

/* ---- logging ---------------------------------------------------------- */

typedef enum {
    MQR_LOG_ERROR = 0,
    MQR_LOG_WARN = 1,
    MQR_LOG_INFO = 2,
    MQR_LOG_DEBUG = 3,
} mqr_log_level_t;

/* Parses "error", "warn", "info", "debug"; returns -1 when unknown. */
int mqr_log_level_parse(const char *name);

/* Process-wide: lines above this level are not even formatted. */
void mqr_log_set_level(int level);

/* Replace stderr with a host sink (NULL restores stderr). The sink is called
 * on whichever thread logs; text is NUL-terminated and valid only during the
 * call. */
typedef void (*mqr_log_fn)(void *arg, int level, const char *component, const char *text);
void mqr_log_set_sink(mqr_log_fn fn, void *arg);

/* ---- messages --------------------------------------------------------- */

/* An immutable, reference-counted MQTT message. Fan-out shares one message;
 * nobody copies its payload. Counts are not atomic: loop thread only. */
typedef struct mqr_msg mqr_msg_t;

void mqr_msg_ref(mqr_msg_t *msg);
void mqr_msg_unref(mqr_msg_t *msg);
const char *mqr_msg_topic(const mqr_msg_t *msg, size_t *len);
const void *mqr_msg_payload(const mqr_msg_t *msg, size_t *len);
int mqr_msg_qos(const mqr_msg_t *msg);
int mqr_msg_retain(const mqr_msg_t *msg);
/* Where the message entered: "listener", "session", "lua", "c"; and the name
 * of that source (client id, session name, script route), may be "". */
const char *mqr_msg_origin_kind(const mqr_msg_t *msg);
const char *mqr_msg_origin_name(const mqr_msg_t *msg);

/* ---- engine ----------------------------------------------------------- */

typedef struct mqr_engine mqr_engine_t;

typedef struct {
    size_t size;                /* sizeof(mqr_engine_options_t): ABI guard */
    const char *listen_host;    /* embedded listener; NULL = "127.0.0.1" */
    int listen_port;            /* 0 = 1883; -1 = no listener */
    const char *data_dir;       /* SQLite lives here; NULL = "./data"; "" = in memory */
    int log_level;              /* mqr_log_level_t */
    unsigned handler_budget_ms; /* stuck-handler budget; 0 = 1000, MQR_BUDGET_OFF = none */
    int watch_script;           /* reload the script when its file changes */
    int handle_signals;         /* SIGINT/SIGTERM stop, SIGHUP reloads */
    int check_only;             /* a scratch engine (mqrouter --check): listeners are
                                   validated (options, certificate files), never bound */
} mqr_engine_options_t;

#define MQR_BUDGET_OFF 0xFFFFFFFFu

void mqr_engine_options_init(mqr_engine_options_t *opts);

/* Creates an engine. With loop == NULL the engine owns a loop and
 * mqr_engine_run() drives it; otherwise it attaches to the host's loop and the
 * host runs it. Opens the store and starts the listener (unless disabled).
 * On failure returns < 0, *out stays NULL and *errmsg (if given) receives a
 * malloc'd explanation the caller frees. */
struct uv_loop_s;
int mqr_engine_new(mqr_engine_t **out, const mqr_engine_options_t *opts, struct uv_loop_s *loop,
                   char **errmsg);

/* Loads (or, when one is loaded, reloads as a transaction) a rules script
 * from a file. On failure the rules already running stay; *errmsg (if given)
 * receives the reason with file and line. */
int mqr_engine_load_file(mqr_engine_t *e, const char *path, char **errmsg);
/* Same from a string; name is used in error messages. */
int mqr_engine_load_string(mqr_engine_t *e, const char *name, const char *code, char **errmsg);
/* Reloads the last loaded file. */
int mqr_engine_reload(mqr_engine_t *e, char **errmsg);

/* Runs the owned loop until mqr_engine_stop(). Returns 0 after a clean stop. */
int mqr_engine_run(mqr_engine_t *e);
/* Graceful stop: close sockets, flush the store, stop timers and sessions.
 * The loop then runs out of work. Idempotent. */
void mqr_engine_stop(mqr_engine_t *e);
/* Frees a stopped engine (stops it first if needed, running its loop until
 * every handle is closed). */
void mqr_engine_free(mqr_engine_t *e);
struct uv_loop_s *mqr_engine_loop(mqr_engine_t *e);

/* ---- listeners ------------------------------------------------------- */

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
    size_t size;      /* sizeof(mqr_listen_options_t): ABI guard */
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
} mqr_listen_options_t;

typedef struct mqr_listener mqr_listener_t;

void mqr_listen_options_init(mqr_listen_options_t *opts);

/* Binds and starts serving a listener on the engine's loop, besides the one
 * mqr_engine_options_t describes. Every listener shares the engine's
 * client-id space (a client id connected on one is taken over from any
 * other). The engine owns it: it closes with mqr_engine_stop(), or earlier
 * with mqr_listener_close(). On failure returns < 0, *out stays NULL and
 * *errmsg (if given) receives a malloc'd explanation the caller frees. */
int mqr_engine_listen(mqr_engine_t *e, const mqr_listen_options_t *opts, mqr_listener_t **out,
                      char **errmsg);
/* With mqr_engine_options_t.check_only, the options and certificate files
 * are checked, nothing is bound, 0 is returned and *out stays NULL. */
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
 * (MQR_EEXIST). On failure *errmsg (if given) gets a malloc'd reason. */
int mqr_engine_admin(mqr_engine_t *e, const char *host, int port, const char *const *tokens,
                     size_t ntokens, char **errmsg);
/* Reads bearer tokens from a file, one per line (blank lines and lines
 * starting with '#' skipped, surrounding spaces trimmed) into a malloc'd
 * array of malloc'd strings; free with mqr_admin_tokens_free(). MQR_EINVAL
 * for a file without tokens. Any thread. */
int mqr_admin_tokens_read(const char *path, char ***tokens, size_t *ntokens, char **errmsg);
void mqr_admin_tokens_free(char **tokens, size_t ntokens);
/* The port the admin API is bound to, -1 when it is not served. */
int mqr_engine_admin_port(const mqr_engine_t *e);

/* Publishes into the router as origin "c". Topic must be a valid topic name;
 * payload is copied. Returns 0, MQR_ETOPIC, MQR_EQOS, MQR_EROUTELOOP... */
int mqr_publish(mqr_engine_t *e, const char *topic, const void *payload, size_t len, int qos,
                int retain);

/* A C subscription. The callback runs on the loop thread for each matching
 * message; the message is borrowed: mqr_msg_ref() it to keep it. Subscriptions
 * still in place when the engine is freed are freed with it. */
typedef struct mqr_csub mqr_csub_t;
typedef void (*mqr_msg_fn)(void *arg, mqr_msg_t *msg);
int mqr_subscribe(mqr_engine_t *e, const char *filter, mqr_msg_fn fn, void *arg, mqr_csub_t **out);
void mqr_unsubscribe(mqr_engine_t *e, mqr_csub_t *sub);

#ifdef __cplusplus
}
#endif
#endif
