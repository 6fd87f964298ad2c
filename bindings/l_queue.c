/*
 * l_queue.c — the engine's broker queues (core/queue/queue.h) as rule scripts see
 * them: `local q = mq.queue("orders", { durable = true, ack_timeout = 30,
 * max_attempts = 5, dead_letter = "dlq/orders", ... })`, with q:publish,
 * q:publish_batch, q:consume, q:receive, q:bind, q:stats, the dead-letter
 * calls and q:close; mq.transaction, mq.queues and mq.queues_health.
 *
 * A queue is C-owned and belongs to the script host, not to a Lua state
 * (decl.h): a reload that declares it again with the same settings keeps it
 * with its messages and statistics; one the new script no longer declares
 * is closed when the new script takes over, never before; a load that fails
 * closes only what it created. Consumers belong to the state that declared
 * them: they start when it takes over and are cancelled when it closes, so
 * a message in a handler of the old rules goes back to its queue and the new
 * rules' handlers get it. Dead letters are published to the queue's
 * `dead_letter` topic from the core's on_dead hook.
 *
 * Handlers run through mqr__script_call_results (budget, traceback, error
 * counting). A handler that returns normally acks, one that returns false
 * or raises nacks (backoff), one that called msg:defer() keeps the message
 * in flight for an explicit msg:ack() / msg:nack() / msg:reject(). A batch
 * consumer gets one list per call. Must not: run Lua for a state that is not
 * serving, or keep a core consumer past its state.
 */
#include "script.h"

#include "decl.h"
#include "codec.h"
#include "queue.h"
#include "store_queue.h"
#include "topic.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QUEUE_MT "mqrouter.queue"
#define CONSUMER_MT "mqrouter.queue.consumer"
#define QMSG_MT "mqrouter.queue.message"
#define TX_MT "mqrouter.queue.transaction"
#define MAX_RECEIVE 1024

typedef struct l_queue l_queue_t;
typedef struct l_qcons l_qcons_t;
typedef struct l_qframe l_qframe_t;

/* A declared queue. Referenced by the host's list (while declared), every
 * queue handle, every queue message and every consumer of any state. */
struct l_queue {
    l_decl_t d; /* first: the host's list is of l_decl_t */
    l_qhost_t *qh;
    mqr_queue_t *q; /* a reference: calls on a closed queue say ECLOSED */
    unsigned refs;
    bool priorities;     /* per-message priorities allowed */
    bool dedup;          /* publish ids allowed */
    char *dead_topic;    /* MQTT topic for dead letters; NULL = none */
    char *pending_topic; /* declared by a loading state: used once it takes over */
    bool has_pending;
    /* other tunable settings declared by a loading state (reconfigure at
     * takeover) */
    mqr_queue_config_t pending_cfg;
    char *pending_key;
    uint64_t dead_published, dead_publish_failed;
};

/* A consumer handler call in progress, on the C stack. Calls nest (a
 * handler's msg:nack() may dead-letter, whose MQTT publish may run a route
 * that pulls from another queue), so they form a stack; msg:defer() marks
 * its message in the frame of the call that handed it out. */
enum { QF_DEFERRED = 1 };
struct l_qframe {
    l_qframe_t *prev;
    uint64_t serial;
    size_t n;
    uint8_t flags[MQR_QUEUE_MAX_BATCH];
};

/* A consumer a state declared. Freed when its state closes. */
struct l_qcons {
    l_qcons_t *next; /* qh->consumers */
    l_qhost_t *qh;
    l_state_t *st;
    l_queue_t *lq;
    mqr_queue_consumer_t *c; /* NULL until started, and once cancelled or closed */
    int fn_ref;
    unsigned prefetch, batch;
    bool cancelled;
    l_qcons_t **ud; /* the Lua handle's slot */
    char *name;
    uint64_t calls, messages, errors, budget_errors, nacked, deferred;
};

struct l_qhost {
    mqr_script_t *h;
    l_decl_list_t queues;
    l_qcons_t *consumers;
    l_qframe_t *frame;
    uint64_t serial;
};

/* A message handed to Lua by a consumer or q:receive. */
typedef struct {
    mqr_msg_t *msg; /* a reference */
    l_queue_t *lq;  /* a reference */
    uint64_t id;
    uint64_t serial; /* the handler call that got it; 0 = pulled */
    uint16_t idx;
    uint16_t attempts;
    uint8_t prio;
} l_qmsg_t;

typedef struct {
    mqr_engine_t *e;
    uint64_t txid;
    bool done;
} l_tx_t;

static const char *const prio_names[] = {"lowest", "low", "normal", "high", "highest"};

/* ---- records ---------------------------------------------------------------- */

static l_qhost_t *qhost(mqr_script_t *h)
{
    if (!h->qhost) {
        h->qhost = calloc(1, sizeof *h->qhost);
        if (h->qhost) h->qhost->h = h;
    }
    return h->qhost;
}

static void lq_unref(l_queue_t *lq)
{
    if (--lq->refs) return;
    mqr__queue_unref(lq->q);
    free(lq->d.name);
    free(lq->d.config_key);
    free(lq->dead_topic);
    free(lq->pending_topic);
    free(lq->pending_key);
    free(lq);
}

/* Closes the core queue; the consumers of every state on it are gone. */
static void lq_close(l_queue_t *lq)
{
    for (l_qcons_t *c = lq->qh->consumers; c; c = c->next)
        if (c->lq == lq) c->c = NULL;
    mqr__queue_close(lq->q);
}

static void drop_queue(l_decl_t *d, mqr_decl_why_t why)
{
    (void)why;
    l_queue_t *lq = (l_queue_t *)d;
    lq_close(lq);
    lq_unref(lq); /* the list's */
}

static bool in_list(l_queue_t *lq)
{
    for (l_decl_t *d = lq->qh->queues.head; d; d = d->next)
        if (d == &lq->d) return true;
    return false;
}

/* ---- dead letters to MQTT ----------------------------------------------------- */

/* The dead letter goes out on the queue's dead_letter topic with the
 * original payload, QoS and properties plus the user properties
 * mqrouter-queue, mqrouter-topic, mqrouter-reason and mqrouter-attempts. */
static void on_dead(void *arg, mqr_queue_t *q, const mqr_queue_dead_t *dd)
{
    (void)q;
    l_queue_t *lq = arg;
    if (!lq->dead_topic) return;
    static const char k_queue[] = "mqrouter-queue", k_topic[] = "mqrouter-topic",
                      k_reason[] = "mqrouter-reason", k_attempts[] = "mqrouter-attempts";
    const mqr_msg_t *msg = dd->msg;
    const char *reason = mqr__queue_reason_name(dd->reason);
    char attempts[16];
    snprintf(attempts, sizeof attempts, "%u", dd->attempts);
    size_t qlen = strlen(lq->d.name), rlen = strlen(reason), alen = strlen(attempts);
    size_t cap = msg->props_len + 4 * 5 + sizeof k_queue + qlen + sizeof k_topic + msg->topic_len +
                 sizeof k_reason + rlen + sizeof k_attempts + alen;
    uint8_t *props = malloc(cap);
    if (!props) {
        lq->dead_publish_failed++;
        return;
    }
    memcpy(props, msg->props, msg->props_len);
    mqr_mqtt_pbuild_t b;
    mqr__mqtt_pb_init(&b, props + msg->props_len, cap - msg->props_len);
    mqr__mqtt_pb_user(&b, k_queue, sizeof k_queue - 1, lq->d.name, qlen);
    mqr__mqtt_pb_user(&b, k_topic, sizeof k_topic - 1, msg->topic, msg->topic_len);
    mqr__mqtt_pb_user(&b, k_reason, sizeof k_reason - 1, reason, rlen);
    mqr__mqtt_pb_user(&b, k_attempts, sizeof k_attempts - 1, attempts, alen);
    size_t added = 0;
    int rc = mqr__mqtt_pb_finish(&b, &added);
    if (rc == 0) {
        mqr_msg_init_t in = {
            .topic = lq->dead_topic,
            .topic_len = strlen(lq->dead_topic),
            .payload = msg->payload,
            .payload_len = msg->payload_len,
            .props = props,
            .props_len = msg->props_len + added,
            .qos = msg->qos,
            .origin = MQR_ORIGIN_LUA,
            .origin_name = lq->d.name,
            .expiry_s = msg->expiry_s,
        };
        lq->refs++; /* a route reached by this publish may close the queue */
        rc = mqr__engine_publish_data(lq->qh->h->e, &in);
        if (rc < 0) {
            lq->dead_publish_failed++;
            MQR_LOG_E("rules", "queue '%s': dead letter to '%s' failed: %s", lq->d.name,
                      lq->dead_topic, mqr_strerror(rc));
        } else {
            lq->dead_published++;
        }
        lq_unref(lq);
    } else {
        lq->dead_publish_failed++;
    }
    free(props);
}

/* ---- queue messages ------------------------------------------------------------- */

static void push_qmsg(lua_State *L, l_queue_t *lq, const mqr_queue_delivery_t *d, uint64_t serial,
                      size_t idx)
{
    l_qmsg_t *m = lua_newuserdata(L, sizeof *m);
    m->msg = d->msg;
    mqr_msg_ref(d->msg);
    m->lq = lq;
    lq->refs++;
    m->id = d->id;
    m->serial = serial;
    m->idx = (uint16_t)idx;
    m->attempts = d->attempts > UINT16_MAX ? UINT16_MAX : (uint16_t)d->attempts;
    m->prio = (uint8_t)d->priority;
    lua_pushlightuserdata(L, (void *)&push_qmsg);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_setmetatable(L, -2);
}

static l_qmsg_t *check_qmsg(lua_State *L)
{
    return luaL_checkudata(L, 1, QMSG_MT);
}

static int settled(lua_State *L, int rc, l_qmsg_t *m)
{
    if (rc < 0) return mqr__lua_fail(L, rc, m->lq->d.name);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_qmsg_ack(lua_State *L)
{
    l_qmsg_t *m = check_qmsg(L);
    return settled(L, mqr__queue_ack(m->lq->q, m->id), m);
}

/* msg:nack([delay seconds]): no delay = the queue's backoff */
static int l_qmsg_nack(lua_State *L)
{
    l_qmsg_t *m = check_qmsg(L);
    int64_t delay = -1;
    if (!lua_isnoneornil(L, 2)) {
        double s = luaL_checknumber(L, 2);
        if (!(s >= 0) || s > 1e9) return luaL_argerror(L, 2, "delay must be seconds >= 0");
        delay = (int64_t)(s * 1000.0 + 0.5);
    }
    return settled(L, mqr__queue_nack(m->lq->q, m->id, delay), m);
}

static int l_qmsg_reject(lua_State *L)
{
    l_qmsg_t *m = check_qmsg(L);
    return settled(L, mqr__queue_reject(m->lq->q, m->id), m);
}

/* msg:defer(): inside its handler, keep the message in flight when the
 * handler returns; settle it later. A pulled message always waits. */
static int l_qmsg_defer(lua_State *L)
{
    l_qmsg_t *m = check_qmsg(L);
    if (m->serial == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    for (l_qframe_t *f = m->lq->qh->frame; f; f = f->prev) {
        if (f->serial != m->serial) continue;
        f->flags[m->idx] |= QF_DEFERRED;
        lua_pushboolean(L, 1);
        return 1;
    }
    return mqr__lua_fail(L, MQR_ENOENT, "defer() works inside the message's handler only");
}

static int l_qmsg_index(lua_State *L)
{
    l_qmsg_t *m = check_qmsg(L);
    const char *k = luaL_checkstring(L, 2);
    switch (k[0]) {
    case 'i':
        if (strcmp(k, "id") == 0) {
            lua_pushnumber(L, (lua_Number)m->id);
            return 1;
        }
        break;
    case 'a':
        if (strcmp(k, "attempts") == 0) {
            lua_pushinteger(L, m->attempts);
            return 1;
        }
        if (strcmp(k, "ack") == 0) {
            lua_pushcfunction(L, l_qmsg_ack);
            return 1;
        }
        break;
    case 'p':
        if (strcmp(k, "priority") == 0) {
            lua_pushinteger(L, m->prio);
            return 1;
        }
        break;
    case 'q':
        if (strcmp(k, "queue") == 0) {
            lua_pushstring(L, m->lq->d.name);
            return 1;
        }
        break;
    case 'n':
        if (strcmp(k, "nack") == 0) {
            lua_pushcfunction(L, l_qmsg_nack);
            return 1;
        }
        break;
    case 'r':
        if (strcmp(k, "reject") == 0) {
            lua_pushcfunction(L, l_qmsg_reject);
            return 1;
        }
        break;
    case 'd':
        if (strcmp(k, "defer") == 0) {
            lua_pushcfunction(L, l_qmsg_defer);
            return 1;
        }
        break;
    case 'm':
        if (strcmp(k, "message") == 0) {
            mqr__lmsg_push(L, m->msg);
            return 1;
        }
        break;
    }
    if (mqr__lmsg_field(L, m->msg, k)) return 1;
    return luaL_error(L, "queue message has no field '%s'", k);
}

static int l_qmsg_newindex(lua_State *L)
{
    return luaL_error(L, "messages are read-only; build a new one with publish()");
}

static int l_qmsg_gc(lua_State *L)
{
    l_qmsg_t *m = check_qmsg(L);
    if (m->msg) mqr_msg_unref(m->msg);
    if (m->lq) lq_unref(m->lq);
    m->msg = NULL;
    m->lq = NULL;
    return 0;
}

static int l_qmsg_tostring(lua_State *L)
{
    l_qmsg_t *m = check_qmsg(L);
    lua_pushfstring(L, "queue message(%s #%d, %s, %d bytes, attempt %d)", m->lq->d.name, (int)m->id,
                    m->msg->topic, (int)m->msg->payload_len, (int)m->attempts);
    return 1;
}

/* ---- consumers ------------------------------------------------------------------ */

static bool handler_ok(lua_State *L, int rc)
{
    if (rc < 0) return false;
    bool ok = !(lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1));
    lua_pop(L, 1);
    return ok;
}

static int on_one(void *arg, mqr_queue_t *q, const mqr_queue_delivery_t *d)
{
    (void)q;
    l_qcons_t *c = arg;
    l_state_t *st = c->st;
    if (!st->active || !st->L) return MQR_QUEUE_NACK; /* never: cancelled first */
    l_qhost_t *qh = c->qh;
    l_qframe_t fr;
    fr.prev = qh->frame;
    fr.serial = ++qh->serial;
    fr.n = 1;
    fr.flags[0] = 0;
    qh->frame = &fr;
    lua_State *L = st->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->fn_ref);
    push_qmsg(L, c->lq, d, fr.serial, 0);
    c->calls++;
    c->messages++;
    int rc = mqr__script_call_results(st, 1, 1, c->name, &c->errors, &c->budget_errors);
    qh->frame = fr.prev;
    if (!handler_ok(L, rc)) {
        c->nacked++;
        return MQR_QUEUE_NACK;
    }
    if (fr.flags[0] & QF_DEFERRED) {
        c->deferred++;
        return MQR_QUEUE_LATER;
    }
    return MQR_QUEUE_ACK;
}

static int on_batch(void *arg, mqr_queue_t *q, const mqr_queue_delivery_t *d, size_t n)
{
    l_qcons_t *c = arg;
    l_state_t *st = c->st;
    l_qhost_t *qh = c->qh;
    if (!st->active || !st->L) {
        for (size_t i = 0; i < n; i++)
            mqr__queue_nack(q, d[i].id, -1);
        return MQR_QUEUE_LATER;
    }
    l_qframe_t fr;
    fr.prev = qh->frame;
    fr.serial = ++qh->serial;
    fr.n = n;
    memset(fr.flags, 0, n);
    qh->frame = &fr;
    lua_State *L = st->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->fn_ref);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        push_qmsg(L, c->lq, &d[i], fr.serial, i);
        lua_rawseti(L, -2, (int)i + 1);
    }
    c->calls++;
    c->messages += n;
    int rc = mqr__script_call_results(st, 1, 1, c->name, &c->errors, &c->budget_errors);
    qh->frame = fr.prev;
    bool ok = handler_ok(L, rc);
    size_t deferred = 0;
    for (size_t i = 0; i < n; i++)
        deferred += fr.flags[i] & QF_DEFERRED;
    c->deferred += deferred;
    if (ok && !deferred) return MQR_QUEUE_ACK; /* every one still in flight */
    if (!ok) c->nacked += n - deferred;
    for (size_t i = 0; i < n && !mqr__queue_closed(q); i++) {
        if (fr.flags[i] & QF_DEFERRED) continue;
        /* ENOENT: settled inside the handler */
        if (ok)
            mqr__queue_ack(q, d[i].id);
        else
            mqr__queue_nack(q, d[i].id, -1);
    }
    return MQR_QUEUE_LATER;
}

static int cons_start(l_qcons_t *c)
{
    if (c->c || c->cancelled || mqr__queue_closed(c->lq->q)) return 0;
    if (c->batch)
        return mqr__queue_consume_batch(c->lq->q, on_batch, c, c->prefetch, c->batch, &c->c);
    return mqr__queue_consume(c->lq->q, on_one, c, c->prefetch, &c->c);
}

static void cons_stop(l_qcons_t *c)
{
    c->cancelled = true;
    if (c->c && !mqr__queue_closed(c->lq->q)) mqr__queue_cancel(c->lq->q, c->c);
    c->c = NULL;
}

static void cons_free(l_qcons_t *c)
{
    cons_stop(c);
    if (c->ud) *c->ud = NULL;
    lq_unref(c->lq);
    free(c->name);
    free(c);
}

static l_qcons_t *check_cons(lua_State *L)
{
    l_qcons_t **ud = luaL_checkudata(L, 1, CONSUMER_MT);
    return *ud;
}

/* consumer:cancel(): no more deliveries; its unsettled messages go back */
static int l_cons_cancel(lua_State *L)
{
    l_qcons_t *c = check_cons(L);
    if (c) cons_stop(c);
    return 0;
}

static void set_num(lua_State *L, const char *key, double v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, key);
}

/* consumer:stats() -> { calls, messages, errors, budget_errors, nacked,
 * deferred, active } */
static int l_cons_stats(lua_State *L)
{
    l_qcons_t *c = check_cons(L);
    lua_createtable(L, 0, 7);
    if (!c) return 1;
    set_num(L, "calls", (double)c->calls);
    set_num(L, "messages", (double)c->messages);
    set_num(L, "errors", (double)c->errors);
    set_num(L, "budget_errors", (double)c->budget_errors);
    set_num(L, "nacked", (double)c->nacked);
    set_num(L, "deferred", (double)c->deferred);
    lua_pushboolean(L, c->c != NULL);
    lua_setfield(L, -2, "active");
    return 1;
}

static int l_cons_gc(lua_State *L)
{
    l_qcons_t **ud = luaL_checkudata(L, 1, CONSUMER_MT);
    if (*ud) (*ud)->ud = NULL;
    return 0;
}

/* ---- queue handles ---------------------------------------------------------------- */

static l_queue_t *check_queue(lua_State *L, int idx)
{
    l_queue_t **ud = luaL_checkudata(L, idx, QUEUE_MT);
    return *ud;
}

mqr_queue_t *mqr__lqueue_take(lua_State *L, int idx)
{
    l_queue_t **ud = luaL_testudata(L, idx, QUEUE_MT);
    if (!ud) return NULL;
    if (mqr__queue_closed((*ud)->q)) luaL_error(L, "queue '%s' is closed", (*ud)->d.name);
    mqr__queue_ref((*ud)->q);
    return (*ud)->q;
}

int mqr__lqueue_priority(lua_State *L, int idx)
{
    if (lua_type(L, idx) == LUA_TSTRING) {
        const char *s = lua_tostring(L, idx);
        for (int i = 0; i < MQR_PRIO_LEVELS; i++)
            if (strcmp(s, prio_names[i]) == 0) return i;
    } else if (lua_type(L, idx) == LUA_TNUMBER) {
        lua_Number n = lua_tonumber(L, idx);
        if (n >= 0 && n <= 4 && n == floor(n)) return (int)n;
    }
    return luaL_error(L, "priority must be 0..4 or \"lowest\", \"low\", \"normal\", \"high\", "
                         "\"highest\"");
}

/* seconds at idx -> ms for a TTL: > 0, or -1 for false (never) */
static int64_t opt_ttl(lua_State *L, int idx, const char *what)
{
    if (lua_type(L, idx) == LUA_TBOOLEAN && !lua_toboolean(L, idx)) return -1;
    if (lua_type(L, idx) != LUA_TNUMBER) luaL_error(L, "%s must be seconds or false", what);
    double s = lua_tonumber(L, idx);
    if (s == HUGE_VAL) return -1;
    if (!(s > 0) || s > 1e9) luaL_error(L, "%s must be seconds > 0 or false", what);
    int64_t ms = (int64_t)ceil(s * 1000.0);
    return ms > 0 ? ms : 1;
}

/* A dedup id: a positive integer, or a string (hashed). */
static uint64_t opt_id(lua_State *L, int idx)
{
    if (lua_type(L, idx) == LUA_TNUMBER) {
        lua_Number n = lua_tonumber(L, idx);
        if (!(n >= 1) || n != floor(n) || n > 9007199254740992.0)
            luaL_error(L, "id must be an integer >= 1 or a string");
        return (uint64_t)n;
    }
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    if (!s || lua_type(L, idx) != LUA_TSTRING) luaL_error(L, "id must be an integer or a string");
    uint64_t x = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) {
        x ^= (unsigned char)s[i];
        x *= 1099511628211ull;
    }
    return x ? x : 1;
}

/* Builds the message and options of a publish: payload at pidx (a string, or
 * a message to enqueue as it is), options at oidx { priority, ttl, id, topic,
 * qos, retain, properties }. Returns the message (a reference) or NULL and
 * pushes nil, err, name (an invalid topic: *nret = 3). Raises on misuse. */
static const char *const pub_known[] = {"priority", "ttl",    "id",         "topic",
                                        "qos",      "retain", "properties", NULL};
static const char *const batch_known[] = {"payload", "priority", "ttl",        "id", "topic",
                                          "qos",     "retain",   "properties", NULL};
static const char *const tx_known[] = {"priority", "ttl",        "topic", "qos",
                                       "retain",   "properties", NULL};

static mqr_msg_t *build(lua_State *L, l_queue_t *lq, int pidx, int oidx, mqr_queue_pub_opts_t *o,
                        const char *fname, const char *const *known, int *nret)
{
    *o = (mqr_queue_pub_opts_t)MQR_QUEUE_PUB_OPTS_INIT;
    *nret = 0;
    bool allow_id = known != tx_known;
    bool has_opts = !lua_isnoneornil(L, oidx);
    if (has_opts) {
        if (!lua_istable(L, oidx))
            luaL_error(L, "%s: options must be a table, not a %s", fname, luaL_typename(L, oidx));
        mqr__lua_check_options(L, oidx, fname, known);
        lua_getfield(L, oidx, "priority");
        if (!lua_isnil(L, -1)) {
            if (!lq->priorities)
                luaL_error(L, "queue '%s' has no priorities (declare it with priority = true)",
                           lq->d.name);
            o->priority = mqr__lqueue_priority(L, lua_gettop(L));
        }
        lua_getfield(L, oidx, "ttl");
        if (!lua_isnil(L, -1)) o->ttl_ms = opt_ttl(L, lua_gettop(L), "ttl");
        lua_getfield(L, oidx, "id");
        if (!lua_isnil(L, -1)) {
            if (!allow_id) luaL_error(L, "%s: id (de-duplication) is for q:publish only", fname);
            if (!lq->dedup)
                luaL_error(L, "queue '%s' has no de-duplication window (declare it with dedup = n)",
                           lq->d.name);
            o->dedup_id = opt_id(L, lua_gettop(L));
        }
        lua_pop(L, 3);
    }
    mqr_msg_t *given = NULL;
    if (lua_type(L, pidx) == LUA_TUSERDATA) {
        given = mqr__lmsg_test(L, pidx);
        l_qmsg_t *qm = given ? NULL : luaL_testudata(L, pidx, QMSG_MT);
        if (qm) given = qm->msg;
    }
    if (given) {
        mqr_msg_ref(given);
        return given;
    }
    l_state_t *st = mqr__state_of(L);
    mqr_msg_init_t in = {.origin = MQR_ORIGIN_LUA};
    in.payload = luaL_checklstring(L, pidx, &in.payload_len);
    in.topic = lq->d.name;
    if (has_opts) {
        lua_getfield(L, oidx, "topic");
        if (!lua_isnil(L, -1)) in.topic = luaL_checkstring(L, -1);
        lua_pop(L, 1); /* the table keeps the string */
    }
    in.topic_len = strlen(in.topic);
    in.origin_name =
        st->chunkname[0] == '@' || st->chunkname[0] == '=' ? st->chunkname + 1 : st->chunkname;
    uint8_t *props = NULL;
    if (has_opts) mqr__publish_opts(L, oidx, fname, known, &in, &props);
    const char *why = NULL;
    int rc = mqr__topic_name_check(in.topic, in.topic_len, &why);
    mqr_msg_t *msg = rc == 0 ? mqr__msg_new(&in) : NULL;
    free(props);
    if (!msg) *nret = mqr__lua_fail(L, rc < 0 ? rc : MQR_ENOMEM, why);
    return msg;
}

/* q:publish(payload | msg [, opts]) -> id | nil, err, name */
static int l_q_publish(lua_State *L)
{
    l_queue_t *lq = check_queue(L, 1);
    mqr_queue_pub_opts_t o;
    int nret;
    mqr_msg_t *msg = build(L, lq, 2, 3, &o, "queue:publish", pub_known, &nret);
    if (!msg) return nret;
    uint64_t id = 0;
    int rc = mqr__queue_publish(lq->q, msg, &o, &id);
    mqr_msg_unref(msg);
    if (rc < 0) return mqr__lua_fail(L, rc, lq->d.name);
    lua_pushnumber(L, (lua_Number)id);
    return 1;
}

/* q:publish_batch({ payload | { payload, priority, ttl, id, topic, ... }, ... })
 *   -> published, failed, { { index, err, name }... } */
static int l_q_publish_batch(lua_State *L)
{
    l_queue_t *lq = check_queue(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int n = (int)lua_objlen(L, 2);
    int published = 0, failed = 0;
    lua_newtable(L); /* failures */
    int fidx = lua_gettop(L);
    for (int i = 1; i <= n; i++) {
        int top = lua_gettop(L);
        lua_rawgeti(L, 2, i);
        int item = lua_gettop(L), pidx = item, oidx = 0;
        if (lua_istable(L, item)) {
            lua_getfield(L, item, "payload");
            pidx = lua_gettop(L);
            oidx = item;
        }
        mqr_queue_pub_opts_t o;
        int nret;
        mqr_msg_t *msg = build(L, lq, pidx, oidx ? oidx : pidx + 1, &o, "queue:publish_batch",
                               oidx ? batch_known : pub_known, &nret);
        int rc = msg ? mqr__queue_publish(lq->q, msg, &o, NULL) : -1;
        if (msg) mqr_msg_unref(msg);
        if (rc == 0) {
            published++;
        } else {
            failed++;
            if (msg) mqr__lua_fail(L, rc, lq->d.name); /* else build pushed them */
            lua_createtable(L, 0, 3);                  /* [nil, err, name, failure] */
            lua_pushinteger(L, i);
            lua_setfield(L, -2, "index");
            lua_pushvalue(L, -3);
            lua_setfield(L, -2, "err");
            lua_pushvalue(L, -2);
            lua_setfield(L, -2, "name");
            lua_rawseti(L, fidx, failed);
        }
        lua_settop(L, top);
    }
    lua_pushinteger(L, published);
    lua_pushinteger(L, failed);
    lua_pushvalue(L, fidx);
    return 3;
}

static void cons_name(lua_State *L, l_qcons_t *c)
{
    lua_Debug ar;
    char where[200] = "?";
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar))
        snprintf(where, sizeof where, "%s:%d", ar.short_src, ar.currentline);
    size_t n = strlen(c->lq->d.name) + strlen(where) + 32;
    c->name = malloc(n);
    if (c->name) snprintf(c->name, n, "consumer of queue '%s' (%s)", c->lq->d.name, where);
}

/* q:consume(fn [, { prefetch = n, batch = n }]) -> consumer */
static int l_q_consume(lua_State *L)
{
    l_queue_t *lq = check_queue(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_Integer prefetch = 0, batch = 0;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        static const char *const known[] = {"prefetch", "batch", NULL};
        mqr__lua_check_options(L, 3, "queue:consume", known);
        lua_getfield(L, 3, "prefetch");
        prefetch = luaL_optinteger(L, -1, 0);
        lua_getfield(L, 3, "batch");
        batch = luaL_optinteger(L, -1, 0);
        lua_pop(L, 2);
        if (prefetch < 0 || prefetch > 1000000)
            return luaL_argerror(L, 3, "prefetch must be 0 (no limit) .. 1000000");
        if (batch < 0 || batch > MQR_QUEUE_MAX_BATCH)
            return luaL_argerror(L, 3, "batch must be 1..256 (or 0: one message per call)");
    }
    if (mqr__queue_closed(lq->q)) return mqr__lua_fail(L, MQR_ECLOSED, lq->d.name);
    l_state_t *st = mqr__state_of(L);
    l_qcons_t *c = calloc(1, sizeof *c);
    if (!c) return luaL_error(L, "out of memory");
    l_qcons_t **ud = lua_newuserdata(L, sizeof *ud);
    *ud = NULL;
    luaL_getmetatable(L, CONSUMER_MT);
    lua_setmetatable(L, -2);
    c->qh = lq->qh;
    c->st = st;
    c->lq = lq;
    lq->refs++;
    c->prefetch = (unsigned)prefetch;
    c->batch = (unsigned)batch;
    cons_name(L, c);
    lua_pushvalue(L, 2);
    c->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    c->next = c->qh->consumers;
    c->qh->consumers = c;
    *ud = c;
    c->ud = ud;
    if (st->active) { /* declared at run time */
        int rc = cons_start(c);
        if (rc < 0) {
            cons_stop(c);
            return mqr__lua_fail(L, rc, lq->d.name);
        }
    }
    return 1;
}

/* q:receive([n]) -> { msg... } (pull: settle each with ack/nack/reject) */
static int l_q_receive(lua_State *L)
{
    l_queue_t *lq = check_queue(L, 1);
    lua_Integer n = luaL_optinteger(L, 2, 1);
    if (n < 1 || n > MAX_RECEIVE) return luaL_argerror(L, 2, "n must be 1..1024");
    mqr_queue_delivery_t *d = malloc((size_t)n * sizeof *d);
    if (!d) return luaL_error(L, "out of memory");
    int got = mqr__queue_receive(lq->q, (size_t)n, d);
    if (got < 0) {
        free(d);
        return mqr__lua_fail(L, got, lq->d.name);
    }
    lua_createtable(L, got, 0);
    for (int i = 0; i < got; i++) {
        push_qmsg(L, lq, &d[i], 0, 0);
        lua_rawseti(L, -2, i + 1);
    }
    free(d);
    return 1;
}

/* q:bind(filter [, { priority, ttl }]) -> route: every message on filter is
 * published into q, keeping its topic (the same as mq.route(filter, q)) */
static int l_q_bind(lua_State *L)
{
    check_queue(L, 1);
    const char *filter = luaL_checkstring(L, 2);
    return mqr__route_declare(L, mqr__state_of(L), filter, 1, NULL, 3);
}

int mqr__lqueue_push_stats(lua_State *L, mqr_queue_t *q)
{
    mqr_queue_stats_t s;
    int rc = mqr__queue_stats(q, &s);
    if (rc < 0) return mqr__lua_fail(L, rc, mqr__queue_name(q));
    lua_createtable(L, 0, 24);
    set_num(L, "published", (double)s.published);
    set_num(L, "delivered", (double)s.delivered);
    set_num(L, "acked", (double)s.acked);
    set_num(L, "nacked", (double)s.nacked);
    set_num(L, "rejected", (double)s.rejected);
    set_num(L, "redelivered", (double)s.redelivered);
    set_num(L, "ack_timeouts", (double)s.ack_timeouts);
    set_num(L, "expired", (double)s.expired);
    set_num(L, "dropped", (double)s.dropped);
    set_num(L, "dead_lettered", (double)s.dead_lettered);
    set_num(L, "discarded", (double)s.discarded);
    set_num(L, "refused_full", (double)s.refused_full);
    set_num(L, "refused_memory", (double)s.refused_memory);
    set_num(L, "duplicates", (double)s.duplicates);
    set_num(L, "depth", (double)s.depth);
    set_num(L, "ready", (double)s.ready);
    lua_createtable(L, 0, MQR_PRIO_LEVELS); /* by_priority = { lowest = n, ... } */
    for (int p = 0; p < MQR_PRIO_LEVELS; p++)
        set_num(L, prio_names[p], (double)s.ready_by_priority[p]);
    lua_setfield(L, -2, "by_priority");
    set_num(L, "delayed", (double)s.delayed);
    set_num(L, "in_flight", (double)s.in_flight);
    set_num(L, "pending_tx", (double)s.pending_tx);
    set_num(L, "dead", (double)s.dead);
    set_num(L, "memory", (double)s.bytes);
    set_num(L, "consumers", (double)s.consumers);
    set_num(L, "uptime", (double)s.uptime_ms / 1000.0);
    return 1;
}

/* q:stats() -> { published, delivered, acked, ..., depth, in_flight, memory,
 * dead_letters_published } */
static int l_q_stats(lua_State *L)
{
    l_queue_t *lq = check_queue(L, 1);
    int n = mqr__lqueue_push_stats(L, lq->q);
    if (n != 1) return n;
    set_num(L, "dead_letters_published", (double)lq->dead_published);
    set_num(L, "dead_letters_publish_failed", (double)lq->dead_publish_failed);
    return 1;
}

static void push_by_reason(lua_State *L, const char *key, const uint64_t *v)
{
    lua_createtable(L, 0, MQR_QREASON_COUNT);
    for (int r = 0; r < MQR_QREASON_COUNT; r++)
        set_num(L, mqr__queue_reason_name(r), (double)v[r]);
    lua_setfield(L, -2, key);
}

/* q:dlq_stats() -> { total, depth, by_reason = {...}, depth_by_reason,
 * redriven, purged, overflow } */
static int l_q_dlq_stats(lua_State *L)
{
    l_queue_t *lq = check_queue(L, 1);
    mqr_queue_dlq_stats_t s;
    int rc = mqr__queue_dlq_stats(lq->q, &s);
    if (rc < 0) return mqr__lua_fail(L, rc, lq->d.name);
    lua_createtable(L, 0, 7);
    set_num(L, "total", (double)s.total);
    set_num(L, "depth", (double)s.depth);
    push_by_reason(L, "by_reason", s.by_reason);
    uint64_t d[MQR_QREASON_COUNT];
    for (int r = 0; r < MQR_QREASON_COUNT; r++)
        d[r] = s.depth_by_reason[r];
    push_by_reason(L, "depth_by_reason", d);
    set_num(L, "redriven", (double)s.redriven);
    set_num(L, "purged", (double)s.purged);
    set_num(L, "overflow", (double)s.overflow);
    return 1;
}

/* q:dead_letters([max [, skip]]) -> { { id, topic, payload, reason,
 * attempts, priority, dead_at, message }... } oldest first */
static int l_q_dead_letters(lua_State *L)
{
    l_queue_t *lq = check_queue(L, 1);
    lua_Integer max = luaL_optinteger(L, 2, 100), skip = luaL_optinteger(L, 3, 0);
    if (max < 0 || max > 100000) return luaL_argerror(L, 2, "max must be 0..100000");
    if (skip < 0) return luaL_argerror(L, 3, "skip must be >= 0");
    mqr_queue_dead_t *d = malloc(((size_t)max + 1) * sizeof *d);
    if (!d) return luaL_error(L, "out of memory");
    int n = mqr__queue_dlq_list(lq->q, (size_t)skip, (size_t)max, d);
    if (n < 0) {
        free(d);
        return mqr__lua_fail(L, n, lq->d.name);
    }
    /* the messages are borrowed: every push below may run the GC, never the
     * queue, so they stay valid through the loop */
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_createtable(L, 0, 8);
        set_num(L, "id", (double)d[i].id);
        lua_pushlstring(L, d[i].msg->topic, d[i].msg->topic_len);
        lua_setfield(L, -2, "topic");
        lua_pushlstring(L, (const char *)d[i].msg->payload, d[i].msg->payload_len);
        lua_setfield(L, -2, "payload");
        lua_pushstring(L, mqr__queue_reason_name(d[i].reason));
        lua_setfield(L, -2, "reason");
        lua_pushinteger(L, d[i].attempts);
        lua_setfield(L, -2, "attempts");
        lua_pushinteger(L, d[i].priority);
        lua_setfield(L, -2, "priority");
        set_num(L, "dead_at", (double)d[i].dead_at_ms / 1000.0);
        mqr__lmsg_push(L, d[i].msg);
        lua_setfield(L, -2, "message");
        lua_rawseti(L, -2, i + 1);
    }
    free(d);
    return 1;
}

/* q:redrive([n]) -> moved | nil, err, name (all when n is absent) */
static int l_q_redrive(lua_State *L)
{
    l_queue_t *lq = check_queue(L, 1);
    lua_Integer n = luaL_optinteger(L, 2, 0);
    if (n < 0) return luaL_argerror(L, 2, "n must be >= 1 (or absent: all)");
    int rc = mqr__queue_redrive(lq->q, (size_t)n);
    if (rc < 0) return mqr__lua_fail(L, rc, lq->d.name);
    lua_pushinteger(L, rc);
    return 1;
}

/* q:dlq_purge([n]) -> removed */
/* q:replay([filter [, { dead = bool }]]) -> n: publishes again the stored
 * (durable) messages of q whose topic matches filter ("#" by default),
 * oldest first, dead letters too with dead = true; q itself is unchanged.
 * nil, err, name for a queue that is not durable. */
static int l_q_replay(lua_State *L)
{
    l_queue_t *lq = check_queue(L, 1);
    const char *filter = luaL_optstring(L, 2, "#");
    unsigned flags = 0;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        static const char *const known[] = {"dead", NULL};
        mqr__lua_check_options(L, 3, "queue:replay", known);
        lua_getfield(L, 3, "dead");
        if (lua_toboolean(L, -1)) flags |= MQR_QREPLAY_DEAD;
        lua_pop(L, 1);
    }
    int rc = mqr__store_queue_replay(lq->qh->h->e, lq->q, filter, flags, NULL, NULL);
    if (rc < 0) return mqr__lua_fail(L, rc, lq->d.name);
    lua_pushinteger(L, rc);
    return 1;
}

static int l_q_dlq_purge(lua_State *L)
{
    l_queue_t *lq = check_queue(L, 1);
    lua_Integer n = luaL_optinteger(L, 2, 0);
    if (n < 0) return luaL_argerror(L, 2, "n must be >= 1 (or absent: all)");
    int rc = mqr__queue_dlq_purge(lq->q, (size_t)n);
    if (rc < 0) return mqr__lua_fail(L, rc, lq->d.name);
    lua_pushinteger(L, rc);
    return 1;
}

/* q:close(): closes the queue now (its messages go); the name is free */
static int l_q_close(lua_State *L)
{
    l_queue_t *lq = check_queue(L, 1);
    if (in_list(lq)) {
        mqr__decl_unlink(&lq->qh->queues, &lq->d);
        lq_close(lq);
        lq_unref(lq);
    } else {
        lq_close(lq);
    }
    return 0;
}

static int l_q_name(lua_State *L)
{
    lua_pushstring(L, check_queue(L, 1)->d.name);
    return 1;
}

static int l_q_closed(lua_State *L)
{
    lua_pushboolean(L, mqr__queue_closed(check_queue(L, 1)->q));
    return 1;
}

static int l_q_gc(lua_State *L)
{
    l_queue_t **ud = luaL_checkudata(L, 1, QUEUE_MT);
    if (*ud) lq_unref(*ud);
    *ud = NULL;
    return 0;
}

static int l_q_tostring(lua_State *L)
{
    lua_pushfstring(L, "queue(%s)", check_queue(L, 1)->d.name);
    return 1;
}

/* ---- mq.queue -------------------------------------------------------------------- */

static const char *const known[] = {
    "durable",     "ack_timeout", "max_attempts", "dead_letter", "dead_letter_expired",
    "dlq_max",     "priority",    "ttl",          "max_memory",  "max_messages",
    "drop_oldest", "backoff",     "dedup",        NULL,
};

static double opt_number(lua_State *L, int t, const char *key, double def, double lo, double hi)
{
    lua_getfield(L, t, key);
    double v = def;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "mq.queue: option '%s' must be a number", key);
        v = lua_tonumber(L, -1);
        if (!(v >= lo && v <= hi))
            luaL_error(L, "mq.queue: option '%s' out of range: %f given, it takes %f .. %f%s", key,
                       v, lo, hi, strcmp(key, "max_memory") == 0 ? " bytes" : "");
    }
    lua_pop(L, 1);
    return v;
}

static bool opt_bool(lua_State *L, int t, const char *key, bool def)
{
    lua_getfield(L, t, key);
    bool v = def;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TBOOLEAN)
            luaL_error(L, "mq.queue: option '%s' must be true or false", key);
        v = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

static uint32_t secs_ms(double s)
{
    if (s == HUGE_VAL) return UINT32_MAX;
    double ms = ceil(s * 1000.0);
    return ms < 1 ? 1 : ms >= (double)UINT32_MAX ? UINT32_MAX - 1 : (uint32_t)ms;
}

/* mq.queue(name [, opts]) -> queue | nil, err, name */
int mqr__lqueue_new(lua_State *L)
{
    l_state_t *st = mqr__state_of(L);
    mqr_script_t *h = st->host;
    const char *name = luaL_checkstring(L, 1);
    if (lua_isnoneornil(L, 2)) {
        lua_settop(L, 1);
        lua_newtable(L);
    }
    if (!lua_istable(L, 2))
        return luaL_error(L, "mq.queue: options must be a table, not a %s", luaL_typename(L, 2));
    lua_settop(L, 2);
    mqr__lua_check_options(L, 2, "mq.queue", known);
    mqr_queue_config_t cfg;
    mqr__queue_config_init(&cfg);
    cfg.name = name;
    cfg.durable = opt_bool(L, 2, "durable", false);
    cfg.ack_timeout_ms = secs_ms(opt_number(L, 2, "ack_timeout", 30, 0.001, HUGE_VAL));
    double att = opt_number(L, 2, "max_attempts", 5, 1, HUGE_VAL);
    cfg.max_attempts = att == HUGE_VAL || att >= UINT32_MAX ? UINT32_MAX : (uint32_t)att;
    lua_getfield(L, 2, "ttl");
    cfg.default_ttl_ms = lua_isnil(L, -1) ? 0 : opt_ttl(L, lua_gettop(L), "mq.queue: option 'ttl'");
    if (cfg.default_ttl_ms < 0) cfg.default_ttl_ms = 0; /* false: none */
    lua_pop(L, 1);
    cfg.max_messages = (size_t)opt_number(L, 2, "max_messages", 100000, 1, 1e12);
    cfg.max_bytes = (size_t)opt_number(L, 2, "max_memory", 64 << 20, 1024, 1e15);
    cfg.drop_oldest = opt_bool(L, 2, "drop_oldest", false);
    cfg.dlq_max_messages = (size_t)opt_number(L, 2, "dlq_max", 10000, 1, 1e9);
    cfg.dedup_window = (size_t)opt_number(L, 2, "dedup", 0, 0, 1e7);
    cfg.dead_letter_expired = opt_bool(L, 2, "dead_letter_expired", false);
    bool priorities = opt_bool(L, 2, "priority", false);
    lua_getfield(L, 2, "backoff");
    if (!lua_isnil(L, -1)) {
        if (!lua_istable(L, -1))
            return luaL_error(L, "mq.queue: option 'backoff' must be {initial, max}");
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        double b0 = lua_tonumber(L, -2), b1 = lua_isnil(L, -1) ? b0 : lua_tonumber(L, -1);
        if (!(b0 > 0) || !(b1 >= b0) || b1 > 86400 * 365)
            return luaL_error(L, "mq.queue: option 'backoff' must be {initial, max} seconds, "
                                 "0 < initial <= max");
        cfg.backoff_initial_ms = secs_ms(b0);
        cfg.backoff_max_ms = secs_ms(b1);
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    const char *dead_topic = NULL;
    lua_getfield(L, 2, "dead_letter");
    if (lua_type(L, -1) == LUA_TSTRING) {
        dead_topic = lua_tostring(L, -1);
        const char *why = NULL;
        if (mqr__topic_name_check(dead_topic, strlen(dead_topic), &why) < 0)
            return luaL_error(L, "queue '%s': invalid dead_letter topic '%s': %s", name, dead_topic,
                              why ? why : "invalid");
    } else if (lua_type(L, -1) == LUA_TBOOLEAN) {
        cfg.dead_letter = lua_toboolean(L, -1);
    } else if (!lua_isnil(L, -1)) {
        return luaL_error(L, "mq.queue: option 'dead_letter' must be a topic or a boolean");
    }
    lua_pop(L, 1); /* the table keeps the string */
    if (cfg.dead_letter_expired && !cfg.dead_letter)
        return luaL_error(L, "queue '%s': dead_letter_expired needs dead letters", name);

    /* every core setting: the same key keeps the queue over a reload as it
     * is; one that differs only in the tunable part (after '/') keeps it and
     * changes those settings when the new script takes over */
    char key[512];
    snprintf(key, sizeof key, "%d|%zu|%d/%u|%u|%u|%u|%lld|%zu|%zu|%d|%zu|%d|%d", cfg.durable,
             cfg.dedup_window, priorities, cfg.ack_timeout_ms, cfg.max_attempts,
             cfg.backoff_initial_ms, cfg.backoff_max_ms, (long long)cfg.default_ttl_ms,
             cfg.max_messages, cfg.max_bytes, cfg.drop_oldest, cfg.dlq_max_messages,
             cfg.dead_letter, cfg.dead_letter_expired);
    size_t fixed_len = (size_t)(strchr(key, '/') - key);

    l_qhost_t *qh = qhost(h);
    if (!qh) return luaL_error(L, "out of memory");
    l_queue_t *lq = (l_queue_t *)mqr__decl_find(&qh->queues, name);
    if (lq) {
        if (lq->d.claimed_by == st) return luaL_error(L, "queue '%s' declared twice", name);
        if (strncmp(lq->d.config_key, key, fixed_len + 1) != 0)
            return luaL_error(L,
                              "queue '%s' is already open with other durable, dedup or priority "
                              "settings: changing them would drop its messages (close it first, "
                              "or use another name)",
                              name);
        char *topic = dead_topic ? strdup(dead_topic) : NULL;
        if (dead_topic && !topic) return luaL_error(L, "out of memory");
        free(lq->pending_key);
        lq->pending_key = NULL;
        if (strcmp(lq->d.config_key, key) != 0) {
            if (!(lq->pending_key = strdup(key))) {
                free(topic);
                return luaL_error(L, "out of memory");
            }
            lq->pending_cfg = cfg;
        }
        l_queue_t **ud = lua_newuserdata(L, sizeof *ud);
        *ud = lq;
        lq->refs++;
        luaL_getmetatable(L, QUEUE_MT);
        lua_setmetatable(L, -2);
        free(lq->pending_topic);
        lq->pending_topic = topic;
        lq->has_pending = true;
        lq->d.claimed_by = st;
        return 1;
    }
    mqr_engine_t *e = h->e;
    if (!mqr__engine_queues(e)) {
        int rc = mqr__queues_init(e, NULL);
        if (rc < 0 && rc != MQR_EEXIST) return mqr__lua_fail(L, rc, name);
    }
    lq = calloc(1, sizeof *lq);
    if (!lq) return luaL_error(L, "out of memory");
    lq->qh = qh;
    lq->d.name = strdup(name);
    lq->d.config_key = strdup(key);
    lq->dead_topic = dead_topic ? strdup(dead_topic) : NULL;
    lq->priorities = priorities;
    lq->dedup = cfg.dedup_window > 0;
    if (!lq->d.name || !lq->d.config_key || (dead_topic && !lq->dead_topic)) {
        free(lq->d.name);
        free(lq->d.config_key);
        free(lq->dead_topic);
        free(lq);
        return luaL_error(L, "out of memory");
    }
    cfg.on_dead = on_dead;
    cfg.on_dead_arg = lq;
    mqr_queue_t *q = NULL;
    int rc = mqr__queue_new(e, &cfg, &q);
    if (rc < 0) {
        free(lq->d.name);
        free(lq->d.config_key);
        free(lq->dead_topic);
        free(lq);
        if (rc == MQR_EQNAME || rc == MQR_EINVAL)
            return luaL_error(L, "queue '%s': %s", name, mqr_strerror(rc));
        return mqr__lua_fail(L, rc, name);
    }
    mqr__queue_ref(q);
    lq->q = q;
    lq->refs = 2; /* the list's and the handle's */
    mqr__decl_add(&qh->queues, &lq->d, st);
    l_queue_t **ud = lua_newuserdata(L, sizeof *ud);
    *ud = lq;
    luaL_getmetatable(L, QUEUE_MT);
    lua_setmetatable(L, -2);
    return 1;
}

/* ---- transactions ----------------------------------------------------------------- */

/* mq.transaction([timeout seconds]) -> tx | nil, err, name */
int mqr__lqueue_transaction(lua_State *L)
{
    mqr_engine_t *e = mqr__state_of(L)->host->e;
    double s = luaL_optnumber(L, 1, 30);
    if (!(s > 0) || s > 86400) return luaL_argerror(L, 1, "timeout must be seconds > 0");
    if (!mqr__engine_queues(e)) {
        int rc = mqr__queues_init(e, NULL);
        if (rc < 0 && rc != MQR_EEXIST) return mqr__lua_fail(L, rc, NULL);
    }
    l_tx_t *tx = lua_newuserdata(L, sizeof *tx);
    memset(tx, 0, sizeof *tx);
    tx->e = e;
    tx->done = true;
    luaL_getmetatable(L, TX_MT);
    lua_setmetatable(L, -2);
    int rc = mqr__queue_tx_begin(e, secs_ms(s), &tx->txid);
    if (rc < 0) return mqr__lua_fail(L, rc, NULL);
    tx->done = false;
    return 1;
}

static l_tx_t *check_tx(lua_State *L)
{
    return luaL_checkudata(L, 1, TX_MT);
}

/* tx:publish(q, payload [, { priority, ttl, topic, ... }]) -> true | nil, err, name */
static int l_tx_publish(lua_State *L)
{
    l_tx_t *tx = check_tx(L);
    l_queue_t *lq = check_queue(L, 2);
    mqr_queue_pub_opts_t o;
    int nret;
    mqr_msg_t *msg = build(L, lq, 3, 4, &o, "tx:publish", tx_known, &nret);
    if (!msg) return nret;
    int rc = mqr__queue_tx_publish(tx->e, tx->txid, lq->q, msg, &o);
    mqr_msg_unref(msg);
    if (rc < 0) return mqr__lua_fail(L, rc, lq->d.name);
    lua_pushboolean(L, 1);
    return 1;
}

static int tx_end(lua_State *L, bool commit)
{
    l_tx_t *tx = check_tx(L);
    int rc =
        commit ? mqr__queue_tx_commit(tx->e, tx->txid) : mqr__queue_tx_rollback(tx->e, tx->txid);
    tx->done = true;
    if (rc < 0) return mqr__lua_fail(L, rc, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_tx_commit(lua_State *L)
{
    return tx_end(L, true);
}

static int l_tx_rollback(lua_State *L)
{
    return tx_end(L, false);
}

/* a transaction dropped without commit is rolled back */
static int l_tx_gc(lua_State *L)
{
    l_tx_t *tx = check_tx(L);
    if (!tx->done && mqr__engine_queues(tx->e)) mqr__queue_tx_rollback(tx->e, tx->txid);
    tx->done = true;
    return 0;
}

/* ---- mq.queues, mq.queues_health ----------------------------------------------------- */

static int add_name(void *arg, mqr_queue_t *q)
{
    lua_State *L = arg;
    lua_pushstring(L, mqr__queue_name(q));
    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
    return 0;
}

/* mq.queues() -> { name... } (every open queue of the engine, sorted) */
int mqr__lqueue_names(lua_State *L)
{
    mqr_engine_t *e = mqr__state_of(L)->host->e;
    lua_newtable(L);
    if (mqr__engine_queues(e)) mqr__queues_foreach(e, add_name, L);
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "sort");
    lua_pushvalue(L, -3);
    lua_call(L, 1, 0);
    lua_pop(L, 1);
    return 1;
}

/* mq.queues_health() -> { status = "ok" | "degraded" | "full" | "stopped",
 * queues, subscribers, memory, max_memory, uptime, totals = stats,
 * transactions = { open, committed, rolled_back, timed_out } } */
int mqr__lqueue_health(lua_State *L)
{
    mqr_engine_t *e = mqr__state_of(L)->host->e;
    if (!mqr__engine_queues(e)) {
        int rc = mqr__queues_init(e, NULL);
        if (rc < 0 && rc != MQR_EEXIST) return mqr__lua_fail(L, rc, NULL);
    }
    mqr_queues_health_t hh;
    int rc = mqr__queues_health(e, &hh);
    if (rc < 0) return mqr__lua_fail(L, rc, NULL);
    lua_createtable(L, 0, 9);
    lua_pushstring(L, mqr__queues_status_name(hh.status));
    lua_setfield(L, -2, "status");
    set_num(L, "queues", (double)hh.queues);
    set_num(L, "subscribers", (double)hh.subs);
    set_num(L, "memory", (double)hh.bytes);
    set_num(L, "max_memory", (double)hh.max_bytes);
    set_num(L, "uptime", (double)hh.uptime_ms / 1000.0);
    set_num(L, "subscriber_dropped", (double)hh.sub_dropped);
    lua_createtable(L, 0, 14);
    const mqr_queue_stats_t *t = &hh.totals;
    set_num(L, "published", (double)t->published);
    set_num(L, "delivered", (double)t->delivered);
    set_num(L, "acked", (double)t->acked);
    set_num(L, "nacked", (double)t->nacked);
    set_num(L, "redelivered", (double)t->redelivered);
    set_num(L, "expired", (double)t->expired);
    set_num(L, "dropped", (double)t->dropped);
    set_num(L, "dead_lettered", (double)t->dead_lettered);
    set_num(L, "refused_full", (double)t->refused_full);
    set_num(L, "refused_memory", (double)t->refused_memory);
    set_num(L, "depth", (double)t->depth);
    set_num(L, "in_flight", (double)t->in_flight);
    set_num(L, "dead", (double)t->dead);
    set_num(L, "memory", (double)t->bytes);
    lua_setfield(L, -2, "totals");
    lua_createtable(L, 0, 4);
    set_num(L, "open", (double)hh.tx_open);
    set_num(L, "committed", (double)hh.tx_committed);
    set_num(L, "rolled_back", (double)hh.tx_rolled_back);
    set_num(L, "timed_out", (double)hh.tx_timed_out);
    lua_setfield(L, -2, "transactions");
    return 1;
}

/* ---- reload ---------------------------------------------------------------------------- */

void mqr__lqueue_activate(mqr_script_t *h, l_state_t *st)
{
    l_qhost_t *qh = h->qhost;
    if (!qh) return;
    for (l_decl_t *d = qh->queues.head; d; d = d->next) {
        l_queue_t *lq = (l_queue_t *)d;
        if (d->claimed_by != st || !lq->has_pending) continue;
        free(lq->dead_topic);
        lq->dead_topic = lq->pending_topic;
        lq->pending_topic = NULL;
        lq->has_pending = false;
        if (lq->pending_key) {
            int rc = mqr__queue_reconfigure(lq->q, &lq->pending_cfg);
            if (rc == 0) {
                free(d->config_key);
                d->config_key = lq->pending_key;
                MQR_LOG_I("rules", "queue '%s': new settings", d->name);
            } else {
                free(lq->pending_key);
                MQR_LOG_E("rules", "queue '%s' keeps its settings: %s", d->name, mqr_strerror(rc));
            }
            lq->pending_key = NULL;
        }
    }
    mqr__decl_takeover(&qh->queues, st, drop_queue);
    for (l_qcons_t *c = qh->consumers; c; c = c->next) {
        if (c->st != st) continue;
        int rc = cons_start(c);
        if (rc < 0)
            MQR_LOG_E("rules", "%s not started: %s", c->name ? c->name : "consumer",
                      mqr_strerror(rc));
    }
}

void mqr__lqueue_abandon(mqr_script_t *h, l_state_t *st)
{
    l_qhost_t *qh = h->qhost;
    if (!qh) return;
    for (l_decl_t *d = qh->queues.head; d; d = d->next) {
        l_queue_t *lq = (l_queue_t *)d;
        if (d->claimed_by != st) continue;
        free(lq->pending_topic);
        lq->pending_topic = NULL;
        lq->has_pending = false;
        free(lq->pending_key);
        lq->pending_key = NULL;
    }
    mqr__decl_abandon(&qh->queues, st, h->cur, drop_queue);
}

void mqr__lqueue_state_close(l_state_t *st)
{
    l_qhost_t *qh = st->host->qhost;
    if (!qh) return;
    for (l_qcons_t **p = &qh->consumers; *p;) {
        l_qcons_t *c = *p;
        if (c->st != st) {
            p = &c->next;
            continue;
        }
        *p = c->next;
        cons_free(c);
    }
}

void mqr__lqueue_close_all(mqr_script_t *h)
{
    l_qhost_t *qh = h->qhost;
    if (!qh) return;
    while (qh->consumers) { /* none left once every state closed */
        l_qcons_t *c = qh->consumers;
        qh->consumers = c->next;
        cons_free(c);
    }
    mqr__decl_drop_all(&qh->queues, drop_queue);
    free(qh);
    h->qhost = NULL;
}

/* ---- registration ------------------------------------------------------------------------ */

void mqr__lqueue_register(lua_State *L)
{
    static const luaL_Reg queue_methods[] = {
        {"publish", l_q_publish},
        {"publish_batch", l_q_publish_batch},
        {"consume", l_q_consume},
        {"receive", l_q_receive},
        {"bind", l_q_bind},
        {"stats", l_q_stats},
        {"dead_letters", l_q_dead_letters},
        {"redrive", l_q_redrive},
        {"dlq_stats", l_q_dlq_stats},
        {"dlq_purge", l_q_dlq_purge},
        {"replay", l_q_replay},
        {"close", l_q_close},
        {"closed", l_q_closed},
        {"name", l_q_name},
        {NULL, NULL},
    };
    static const luaL_Reg cons_methods[] = {
        {"cancel", l_cons_cancel},
        {"stats", l_cons_stats},
        {NULL, NULL},
    };
    static const luaL_Reg tx_methods[] = {
        {"publish", l_tx_publish},
        {"commit", l_tx_commit},
        {"rollback", l_tx_rollback},
        {NULL, NULL},
    };
    mqr__lua_class(L, QUEUE_MT, queue_methods, l_q_gc, l_q_tostring);
    mqr__lua_class(L, CONSUMER_MT, cons_methods, l_cons_gc, NULL);
    mqr__lua_class(L, TX_MT, tx_methods, l_tx_gc, NULL);

    luaL_newmetatable(L, QMSG_MT);
    lua_pushcfunction(L, l_qmsg_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_qmsg_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, l_qmsg_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_qmsg_tostring);
    lua_setfield(L, -2, "__tostring");
    /* the hot path finds it by a lightuserdata key */
    lua_pushlightuserdata(L, (void *)&push_qmsg);
    lua_pushvalue(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
}
