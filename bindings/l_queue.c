/*
 * l_queue.c — the engine's broker queues (core/queue/queue.h) as rule scripts see
 * them: `local q = mq.queue("orders", { durable = true, ack_timeout = 30,
 * max_attempts = 5, dead_letter = "dlq/orders", ... })`, the queue handle
 * (metatable "mqrouter.queue": q:bind, q:close, q:closed, q:name, and the
 * methods of the files below), and what a reload does with queues.
 *
 * The other concerns have a file each: publishing (l_queue_publish.c), the
 * delivered message (l_queue_msg.c), consumers (l_queue_consumer.c), dead
 * letters (l_queue_dlq.c), statistics (l_queue_stats.c), transactions
 * (l_queue_tx.c); l_queue_int.h holds the records they share.
 *
 * A queue is C-owned and belongs to the script host, not to a Lua state
 * (decl.h): a reload that declares it again with the same settings keeps it
 * with its messages and statistics; one the new script no longer declares
 * is closed when the new script takes over, never before; a load that fails
 * closes only what it created. Consumers belong to the state that declared
 * them: they start when it takes over and are cancelled when it closes, so
 * a message in a handler of the old rules goes back to its queue and the new
 * rules' handlers get it. Must not: close a queue the serving script still
 * declares, or start a loading state's consumers before it takes over.
 */
#include "l_queue_int.h"

#include "topic.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const mqr__lqueue_prio_names[MQR_PRIO_LEVELS] = {"lowest", "low", "normal", "high",
                                                             "highest"};

/* ---- records ---------------------------------------------------------------- */

static l_qhost_t *qhost(mqr_script_t *h)
{
    if (!h->qhost) {
        h->qhost = calloc(1, sizeof *h->qhost);
        if (h->qhost) h->qhost->h = h;
    }
    return h->qhost;
}

void mqr__lqueue_unref(l_queue_t *lq)
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
    mqr__lqueue_unref(lq); /* the list's */
}

static bool in_list(l_queue_t *lq)
{
    for (l_decl_t *d = lq->qh->queues.head; d; d = d->next)
        if (d == &lq->d) return true;
    return false;
}

/* ---- queue handles ---------------------------------------------------------------- */

l_queue_t *mqr__lqueue_check(lua_State *L, int idx)
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
            if (strcmp(s, mqr__lqueue_prio_names[i]) == 0) return i;
    } else if (lua_type(L, idx) == LUA_TNUMBER) {
        lua_Number n = lua_tonumber(L, idx);
        if (n >= 0 && n <= 4 && n == floor(n)) return (int)n;
    }
    return luaL_error(L, "priority must be 0..4 or \"lowest\", \"low\", \"normal\", \"high\", "
                         "\"highest\"");
}

/* q:bind(filter [, { priority, ttl }]) -> route: every message on filter is
 * published into q, keeping its topic (the same as mq.route(filter, q)) */
static int l_q_bind(lua_State *L)
{
    mqr__lqueue_check(L, 1);
    const char *filter = luaL_checkstring(L, 2);
    return mqr__route_declare(L, mqr__state_of(L), filter, 1, NULL, 3);
}

/* q:close(): closes the queue now (its messages go); the name is free */
static int l_q_close(lua_State *L)
{
    l_queue_t *lq = mqr__lqueue_check(L, 1);
    if (in_list(lq)) {
        mqr__decl_unlink(&lq->qh->queues, &lq->d);
        lq_close(lq);
        mqr__lqueue_unref(lq);
    } else {
        lq_close(lq);
    }
    return 0;
}

static int l_q_name(lua_State *L)
{
    lua_pushstring(L, mqr__lqueue_check(L, 1)->d.name);
    return 1;
}

static int l_q_closed(lua_State *L)
{
    lua_pushboolean(L, mqr__queue_closed(mqr__lqueue_check(L, 1)->q));
    return 1;
}

static int l_q_gc(lua_State *L)
{
    l_queue_t **ud = luaL_checkudata(L, 1, QUEUE_MT);
    if (*ud) mqr__lqueue_unref(*ud);
    *ud = NULL;
    return 0;
}

static int l_q_tostring(lua_State *L)
{
    lua_pushfstring(L, "queue(%s)", mqr__lqueue_check(L, 1)->d.name);
    return 1;
}

/* ---- mq.queue -------------------------------------------------------------------- */

/* what mq.queue reads; seconds and counts become the core's units below */
typedef struct {
    bool durable, dead_letter_expired, priority, drop_oldest;
    double ack_timeout, max_attempts, dlq_max, max_memory, max_messages, dedup;
} queue_read_t;

#define QN(key, field, d, lo, hi)                                                                  \
    {                                                                                              \
        MQR_LOPT(key, MQR_LOPT_NUMBER, queue_read_t, field), .def = d, .min = lo, .max = hi        \
    }
#define QB(key, field)                                                                             \
    {                                                                                              \
        MQR_LOPT(key, MQR_LOPT_BOOL, queue_read_t, field)                                          \
    }

static const mqr_lopt_t queue_opts[] = {
    QB("durable", durable),
    QN("ack_timeout", ack_timeout, 30, 0.001, HUGE_VAL),
    QN("max_attempts", max_attempts, 5, 1, HUGE_VAL),
    {.key = "dead_letter"}, /* a topic or a boolean */
    QB("dead_letter_expired", dead_letter_expired),
    QN("dlq_max", dlq_max, 10000, 1, 1e9),
    QB("priority", priority),
    {.key = "ttl"}, /* seconds or false */
    {MQR_LOPT("max_memory", MQR_LOPT_NUMBER, queue_read_t, max_memory), .def = 64 << 20,
     .min = 1024, .max = 1e15, .unit = " bytes"},
    QN("max_messages", max_messages, 100000, 1, 1e12),
    QB("drop_oldest", drop_oldest),
    {.key = "backoff"}, /* {initial, max} */
    QN("dedup", dedup, 0, 0, 1e7),
};

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
    queue_read_t r;
    mqr__lua_read_options(L, 2, "mq.queue", queue_opts, sizeof queue_opts / sizeof queue_opts[0],
                          &r);
    mqr_queue_config_t cfg;
    mqr__queue_config_init(&cfg);
    cfg.name = name;
    cfg.durable = r.durable;
    cfg.ack_timeout_ms = lq_secs_ms(r.ack_timeout);
    cfg.max_attempts = r.max_attempts == HUGE_VAL || r.max_attempts >= UINT32_MAX
                           ? UINT32_MAX
                           : (uint32_t)r.max_attempts;
    lua_getfield(L, 2, "ttl");
    cfg.default_ttl_ms =
        lua_isnil(L, -1) ? 0 : mqr__lqueue_opt_ttl(L, lua_gettop(L), "mq.queue: option 'ttl'");
    if (cfg.default_ttl_ms < 0) cfg.default_ttl_ms = 0; /* false: none */
    lua_pop(L, 1);
    cfg.max_messages = (size_t)r.max_messages;
    cfg.max_bytes = (size_t)r.max_memory;
    cfg.drop_oldest = r.drop_oldest;
    cfg.dlq_max_messages = (size_t)r.dlq_max;
    cfg.dedup_window = (size_t)r.dedup;
    cfg.dead_letter_expired = r.dead_letter_expired;
    bool priorities = r.priority;
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
        cfg.backoff_initial_ms = lq_secs_ms(b0);
        cfg.backoff_max_ms = lq_secs_ms(b1);
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
    cfg.on_dead = mqr__lqueue_on_dead;
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
        int rc = mqr__lqueue_consumer_start(c);
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
        mqr__lqueue_consumer_free(c);
    }
}

void mqr__lqueue_close_all(mqr_script_t *h)
{
    l_qhost_t *qh = h->qhost;
    if (!qh) return;
    while (qh->consumers) { /* none left once every state closed */
        l_qcons_t *c = qh->consumers;
        qh->consumers = c->next;
        mqr__lqueue_consumer_free(c);
    }
    mqr__decl_drop_all(&qh->queues, drop_queue);
    free(qh);
    h->qhost = NULL;
}

/* ---- registration ------------------------------------------------------------------------ */

/* The queue's methods are defined by the file of their concern; one
 * metatable holds them all. */
void mqr__lqueue_register(lua_State *L)
{
    static const luaL_Reg own[] = {
        {"bind", l_q_bind}, {"close", l_q_close}, {"closed", l_q_closed},
        {"name", l_q_name}, {NULL, NULL},
    };
    const luaL_Reg *parts[] = {own, mqr__lqueue_publish_methods, mqr__lqueue_consumer_methods,
                               mqr__lqueue_stats_methods, mqr__lqueue_dlq_methods};
    luaL_Reg all[32];
    size_t n = 0;
    for (size_t p = 0; p < sizeof parts / sizeof parts[0]; p++)
        for (const luaL_Reg *r = parts[p]; r->name; r++) {
            assert(n < sizeof all / sizeof all[0] - 1);
            all[n++] = *r;
        }
    all[n] = (luaL_Reg){NULL, NULL};
    mqr__lua_class(L, QUEUE_MT, all, l_q_gc, l_q_tostring);
    mqr__lqueue_consumer_register(L);
    mqr__lqueue_tx_register(L);
    mqr__lqueue_msg_register(L);
}
