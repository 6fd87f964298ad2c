/*
 * registry.h — the device registry, the topic registry, tenants and the
 * retained-message calls that the Lua bindings and the admin API share.
 *
 * Devices: one entry per (tenant, id), persisted in the store (table
 * `devices`, schema version 5), kept whole in memory. A device's status
 * follows the listener: the connection whose client id is the device id
 * (or what the mapper set with mqr__registry_set_mapper says) makes it
 * online at CONNACK and offline when it ends (DISCONNECT, socket closed,
 * keep-alive lapsed, taken over). Its counters (messages and bytes in and
 * out, last seen) are bumped in memory through a pointer the connection
 * holds (no lookup per message) and written to the store lazily: with every
 * status change, every MQR_REGISTRY_FLUSH_MS on a timer for devices whose
 * counters moved, and when the engine stops. A crash loses at most the last
 * MQR_REGISTRY_FLUSH_MS of counter movement, never an entry or a status.
 *
 * Topics: every topic a message was published on through the router (any
 * origin) is counted (messages, last time) in a bounded table
 * (mqr__topics_set_max; when full, new topics are not tracked and counted
 * as dropped). Memory only: it restarts empty.
 *
 * Tenants: a tenant is a name of 1..MQR_TENANT_MAX bytes of [A-Za-z0-9_-].
 * "" (or NULL) is "no tenant". See docs/registry.md for the mountpoint.
 *
 * Pagination (devices and topics): entries come in byte order of their key
 * ((tenant, id) for devices, the topic for topics). A page is at most
 * `limit` entries (1..MQR_REGISTRY_LIMIT_MAX; 0 = MQR_REGISTRY_LIMIT_DEFAULT;
 * anything larger is MQR_EINVAL, not clamped). The answer carries `next`, a
 * cursor for the page after (the key of the last entry returned, as text),
 * "" when there is nothing after. A cursor is a position, not a snapshot:
 * entries added or removed between pages are seen or not according to
 * where they sort; none is returned twice. A malformed cursor is MQR_EINVAL.
 * Device cursors read "<tenant>/<id>" (tenant "" for none), topic cursors
 * are the topic itself.
 *
 * Strings handed out (mqr_device_info_t, mqr_topic_info_t) are borrowed:
 * valid until the next call that changes the registry. Loop thread only;
 * no Lua here.
 */
#ifndef MQR_REGISTRY_H
#define MQR_REGISTRY_H

#include "message.h"
#include "mqrouter.h"
#include "retain.h"
#include "router.h"
#include "store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mqr_listeners mqr_listeners_t; /* listener.h */

#define MQR_TENANT_MAX 64u
#define MQR_DEVICE_ID_MAX 256u     /* bytes of UTF-8 */
#define MQR_DEVICE_NAME_MAX 256u   /* name and type */
#define MQR_DEVICE_META_MAX 65536u /* metadata JSON text */
#define MQR_REGISTRY_LIMIT_DEFAULT 100u
#define MQR_REGISTRY_LIMIT_MAX 1000u
#define MQR_REGISTRY_FLUSH_MS 5000u
#define MQR_TOPICS_MAX_DEFAULT 10000u
#define MQR_CURSOR_MAX (MQR_TENANT_MAX + 1 + 65535u + 1)

typedef enum {
    MQR_DEVICE_UNKNOWN = 0, /* registered, never seen connected */
    MQR_DEVICE_ONLINE = 1,
    MQR_DEVICE_OFFLINE = 2,
} mqr_device_status_t;

typedef struct mqr_registry mqr_registry_t;
typedef struct mqr_device mqr_device_t;

/* What registering takes. tenant NULL or "" = none; name, type NULL = "";
 * metadata NULL = "{}" (else it must be JSON text: any JSON value). */
typedef struct {
    const char *tenant;
    const char *id;
    const char *name;
    const char *type;
    const char *metadata;
} mqr_device_spec_t;

/* A device as the API shows it (strings borrowed, see above). */
typedef struct {
    const char *tenant; /* "" = none */
    const char *id;
    const char *name;
    const char *type;
    const char *metadata; /* JSON text */
    int status;           /* mqr_device_status_t */
    uint64_t status_ms;   /* wall clock of the last status change (0: never) */
    uint64_t created_ms;
    uint64_t last_seen_ms; /* last packet from or message to it; 0: never */
    uint64_t msgs_in, msgs_out, bytes_in, bytes_out;
} mqr_device_info_t;

typedef struct {
    const char *tenant; /* NULL: every tenant; "": devices with none */
    const char *type;   /* NULL: any */
    int status;         /* -1: any, else mqr_device_status_t */
    const char *prefix; /* of the id; NULL: any */
    unsigned limit;     /* 0 = default; > MQR_REGISTRY_LIMIT_MAX: MQR_EINVAL */
    const char *cursor; /* NULL or "": from the start */
} mqr_device_query_t;

typedef struct {
    uint64_t devices;
    uint64_t online;
    uint64_t flushes;        /* counter rows written by the lazy flush */
    uint64_t topics;         /* topics tracked */
    uint64_t topics_max;     /* the bound */
    uint64_t topics_dropped; /* publishes on topics not tracked because the table was full */
} mqr_registry_stats_t;

/* ---- lifecycle (engine.c) --------------------------------------------------- */

/* Creates the registry (*out, set even on failure: close it) on what deps
 * names (copied) and loads the devices from its store (devices that were
 * online when the engine last stopped read offline). 0, MQR_ENOMEM,
 * MQR_ESTORE. */
typedef struct {
    uv_loop_t *loop;
    mqr_store_t *store;         /* NULL: devices in memory only */
    mqr_router_t *router;       /* topic info: its subscribers */
    mqr_retain_t *retain;       /* topic info: a retained message */
    mqr_listeners_t *listeners; /* a registered device's connected client */
} mqr_registry_deps_t;
int mqr__registry_open(const mqr_registry_deps_t *deps, mqr_registry_t **out);
/* Writes the moved counters into the store's transaction. */
void mqr__registry_flush(mqr_registry_t *r);
/* Stops the flush timer (engine stop); the registry stays usable. */
void mqr__registry_stop(mqr_registry_t *r);
/* Frees everything (after the listeners are gone, before the store). */
void mqr__registry_close(mqr_registry_t *r);
void mqr__registry_stats(const mqr_registry_t *r, mqr_registry_stats_t *out);

/* ---- devices (the admin API and mq.devices) ----------------------------- */

/* Registers spec, or updates name, type and metadata of an existing one
 * (status and counters kept). *created (may be NULL) says which. When a
 * connected client's id equals the id (same tenant), the device goes online.
 * 0, MQR_EINVAL (bad tenant, id empty or too long or not UTF-8, name/type
 * too long, metadata too long or not JSON: *why, if given, says which),
 * MQR_ENOMEM, MQR_ESTORE. */
int mqr__device_register(mqr_registry_t *r, const mqr_device_spec_t *spec, bool *created,
                         const char **why);
/* 0, MQR_ENOENT. A connection holding it keeps counting into a detached
 * copy that goes with the connection. */
int mqr__device_unregister(mqr_registry_t *r, const char *tenant, const char *id);
/* 0 and *out, MQR_ENOENT. */
int mqr__device_get(mqr_registry_t *r, const char *tenant, const char *id, mqr_device_info_t *out);
/* Sets the status by hand (an operator's say; the next connect or
 * disconnect changes it again). Observers see it when it changes.
 * 0, MQR_ENOENT, MQR_EINVAL (status out of range). */
int mqr__device_set_status(mqr_registry_t *r, const char *tenant, const char *id, int status);
/* cb for each device of the page, in order (a non-zero return stops the
 * page there and next is where it stopped); next (cap >= MQR_CURSOR_MAX
 * bytes, or NULL) receives the cursor of the following page, "" when none.
 * Returns the count of devices given to cb, or MQR_EINVAL (limit, cursor,
 * status, tenant), MQR_ENOMEM; next is not written on an error. next may
 * be the buffer q->cursor points to. cb must not change the registry. */
typedef int (*mqr_device_fn)(void *arg, const mqr_device_info_t *d);
int mqr__device_list(mqr_registry_t *r, const mqr_device_query_t *q, mqr_device_fn cb, void *arg,
                     char *next, size_t next_cap);
const char *mqr__device_status_name(int status); /* "unknown", "online", "offline" */
int mqr__device_status_parse(const char *s);     /* -1 when not one of those */

/* Status changes (online/offline, by a connection or by hand). why: a
 * static text, "connected", "set by hand", or why the connection ended
 * ("keep-alive timeout", "client disconnected", "connection lost", ...:
 * the listener's close reason). */
typedef void (*mqr_device_observer_fn)(void *ud, const mqr_device_info_t *d, int old_status,
                                       const char *why);
void mqr__registry_set_observer(mqr_registry_t *r, mqr_device_observer_fn fn, void *ud);
/* Which device a client is: fn writes the device id (NUL-terminated, at
 * most cap bytes) for client_id (tenant the client's, "" none) and returns
 * true, or false for "no device". NULL fn = the client id itself. Applies
 * from the next CONNECT on. */
typedef bool (*mqr_device_mapper_fn)(void *ud, const char *tenant, const char *client_id, char *out,
                                     size_t cap);
void mqr__registry_set_mapper(mqr_registry_t *r, mqr_device_mapper_fn fn, void *ud);

/* ---- the listener's side ---------------------------------------------------- */

/* A client connected (CONNACK sent): the device it is, online, and a
 * reference the connection keeps; NULL when it is no registered device. */
mqr_device_t *mqr__registry_conn_online(mqr_registry_t *r, const char *tenant,
                                        const char *client_id);
/* Its connection ended: offline (why for the event: "disconnected",
 * "keep-alive timeout", ...), and the reference dropped. */
void mqr__registry_conn_offline(mqr_registry_t *r, mqr_device_t *d, const char *why);

struct mqr_device {
    mqr_device_t *next; /* hash chain */
    mqr_device_t *dirty_next;
    mqr_registry_t *r; /* NULL once unregistered (detached) */
    unsigned refs;     /* the registry's + each connection's */
    bool dirty;
    uint8_t status;
    uint16_t conns; /* connections that made it online */
    uint32_t hash;
    char *tenant, *id, *name, *type, *metadata;
    uint64_t status_ms, created_ms, last_seen_ms;
    uint64_t msgs_in, msgs_out, bytes_in, bytes_out;
};

void mqr__device_mark(mqr_device_t *d); /* counters moved: flush later */

/* Per message (hot path: two adds and a flag). */
static inline void mqr__device_count_in(mqr_device_t *d, size_t bytes, uint64_t now_ms)
{
    d->msgs_in++;
    d->bytes_in += bytes;
    d->last_seen_ms = now_ms;
    if (!d->dirty) mqr__device_mark(d);
}
static inline void mqr__device_count_out(mqr_device_t *d, size_t bytes)
{
    d->msgs_out++;
    d->bytes_out += bytes;
    if (!d->dirty) mqr__device_mark(d);
}

/* ---- tenants ------------------------------------------------------------------ */

/* A tenant name: 1..MQR_TENANT_MAX bytes of [A-Za-z0-9_-]. */
bool mqr__tenant_valid(const char *t, size_t len);

/* ---- topics ------------------------------------------------------------------- */

typedef struct {
    const char *topic;
    bool tracked;         /* seen through the router and in the table */
    uint64_t messages;    /* published on it since the engine started */
    uint64_t last_ms;     /* wall clock of the last one, 0: none */
    uint64_t subscribers; /* trie entries matching it (any kind of subscriber) */
    bool retained;        /* a retained message is held for it */
} mqr_topic_info_t;

/* Hot path (mqr__engine_publish): one hash lookup. when_ms: the message's
 * creation time (the listener reads the clock once per socket read). */
void mqr__topics_seen(mqr_registry_t *r, const char *topic, size_t len, uint64_t when_ms);
/* The bound; lowering it below the count keeps what is tracked (new ones
 * are refused until the count is under it). 0 = the default. */
void mqr__topics_set_max(mqr_registry_t *r, size_t max);
/* Info on a valid topic name (tracked or not). 0, MQR_ETOPIC/MQR_EUTF8/
 * MQR_ETOOLARGE (not a topic name), MQR_ENOMEM. */
int mqr__topic_info(mqr_registry_t *r, const char *topic, mqr_topic_info_t *out);
/* Tracked topics starting with prefix (NULL = all), paginated as above.
 * cb's info includes subscribers and retained. Returns the count or
 * MQR_EINVAL / MQR_ENOMEM. */
typedef int (*mqr_topic_fn)(void *arg, const mqr_topic_info_t *t);
int mqr__topics_list(mqr_registry_t *r, const char *prefix, unsigned limit, const char *cursor,
                     mqr_topic_fn cb, void *arg, char *next, size_t next_cap);
/* Checks t as a topic name (wildcards false) or a filter (true; a
 * "$share/group/filter" included). 0, or the error with *why a static
 * reason. */
int mqr__topic_validate(const char *t, size_t len, bool wildcards, const char **why);

/* ---- store rows (store_registry.c) ------------------------------------------ */

int mqr__store_device_put(mqr_store_t *s, const mqr_device_t *d);
int mqr__store_device_counters(mqr_store_t *s, const mqr_device_t *d);
int mqr__store_device_delete(mqr_store_t *s, const char *tenant, const char *id);
/* cb for each row (strings valid for the call; status as stored). */
typedef int (*mqr_store_device_fn)(void *arg, const mqr_device_info_t *d);
int mqr__store_devices_load(mqr_store_t *s, mqr_store_device_fn cb, void *arg);

/* JSON text check (RFC 8259 syntax, nesting at most 64). */
bool mqr__json_valid(const char *s, size_t len);

#endif
