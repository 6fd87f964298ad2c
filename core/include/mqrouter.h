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
    XX(EPAYLOAD, -4221, "invalid payload")

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
    size_t size;              /* sizeof(mqr_engine_options_t): ABI guard */
    const char *listen_host;  /* embedded listener; NULL = "127.0.0.1" */
    int listen_port;          /* 0 = 1883; -1 = no listener */
    const char *data_dir;     /* SQLite lives here; NULL = "./data"; "" = in memory */
    int log_level;            /* mqr_log_level_t */
    unsigned handler_budget_ms; /* stuck-handler budget; 0 = 1000 */
    int watch_script;         /* reload the script when its file changes */
    int handle_signals;       /* SIGINT/SIGTERM stop, SIGHUP reloads */
} mqr_engine_options_t;

void mqr_engine_options_init(mqr_engine_options_t *opts);

#ifdef __cplusplus
}
#endif
#endif
