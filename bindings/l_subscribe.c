/*
 * l_subscribe.c — `mq.subscribe(filter, fn [, { buffer, drop_oldest, batch }])`:
 * a buffered in-process subscriber (core/queue/queue_pubsub.c) whose handler is
 * Lua. Unlike a route, which runs inside the publisher's call, a subscriber
 * gets its messages on later loop turns through a bounded buffer of its
 * own; when the handler falls behind and the buffer is full, the newest
 * message (or, with drop_oldest, the oldest buffered one) is dropped and
 * counted in `sub:stats().dropped`.
 *
 * A subscriber belongs to the state that declared it, like a route: one
 * declared while a script loads starts when that script takes over, and a
 * reload closes the old state's subscribers with the old state. What waits
 * in them is not lost with them (mqr__lsub_takeover): a subscriber the new
 * script declares again with the same filter and options is kept, buffer
 * and all; the messages of one it does not are handed to a new subscriber
 * whose filter matches, and only those nobody takes are dropped, counted
 * and logged.
 */
#include "script.h"

#include "handover.h"
#include "queue.h"
#include "topic.h"

#include <stdlib.h>
#include <string.h>

#define SUB_MT "mqrouter.subscriber"

struct l_sub {
    l_sub_t *next; /* st->subs, in declaration order */
    l_state_t *st;
    char *filter;
    char *name; /* "subscriber 'f' (rules.lua:12)" */
    char *key;  /* filter and options: equal keys = the same subscriber across a reload */
    bool kept;  /* took over an old state's subscriber */
    mqr_queue_sub_config_t cfg;
    mqr_queue_sub_t *sub; /* NULL until started, and after stop */
    int fn_ref;
    bool stopped;
    l_sub_t **ud; /* the Lua handle, cleared when it is collected */
    uint64_t calls, errors, budget_errors;
};

static void on_message(void *arg, mqr_queue_sub_t *sub, mqr_msg_t *msg)
{
    (void)sub;
    l_sub_t *s = arg;
    l_state_t *st = s->st;
    if (!st->active || !st->L) return; /* closed with the state first */
    s->calls++;
    mqr__lmsg_deliver(st, s->fn_ref, msg, s->name, &s->errors, &s->budget_errors);
}

static int sub_start(l_sub_t *s)
{
    if (s->sub || s->stopped) return 0;
    mqr_engine_t *e = s->st->host->e;
    if (!mqr__engine_queues(e)) {
        int rc = mqr__queues_init(e, NULL);
        if (rc < 0 && rc != MQR_EEXIST) return rc;
    }
    return mqr__queue_sub_new(e, s->filter, &s->cfg, on_message, s, &s->sub);
}

static void sub_stop(l_sub_t *s)
{
    s->stopped = true;
    if (s->sub) mqr__queue_sub_close(s->sub);
    s->sub = NULL;
}

static void sub_free(l_sub_t *s)
{
    sub_stop(s);
    if (s->ud) *s->ud = NULL;
    free(s->filter);
    free(s->name);
    free(s->key);
    free(s);
}

static l_sub_t *check_sub(lua_State *L)
{
    l_sub_t **ud = luaL_checkudata(L, 1, SUB_MT);
    return *ud;
}

/* sub:stop(): no more deliveries; what is buffered is dropped */
static int l_sub_stop(lua_State *L)
{
    l_sub_t *s = check_sub(L);
    if (s) sub_stop(s);
    return 0;
}

static void set_num(lua_State *L, const char *key, double v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, key);
}

/* sub:stats() -> { received, delivered, dropped, buffered, errors,
 * budget_errors, active } */
static int l_sub_stats(lua_State *L)
{
    l_sub_t *s = check_sub(L);
    lua_createtable(L, 0, 7);
    if (!s) return 1;
    mqr_queue_sub_stats_t o = {0};
    if (s->sub) mqr__queue_sub_stats(s->sub, &o);
    set_num(L, "received", (double)o.received);
    set_num(L, "delivered", (double)o.delivered);
    set_num(L, "dropped", (double)o.dropped);
    set_num(L, "buffered", (double)o.buffered);
    set_num(L, "errors", (double)s->errors);
    set_num(L, "budget_errors", (double)s->budget_errors);
    lua_pushboolean(L, s->sub != NULL);
    lua_setfield(L, -2, "active");
    return 1;
}

static int l_sub_gc(lua_State *L)
{
    l_sub_t **ud = luaL_checkudata(L, 1, SUB_MT);
    if (*ud) (*ud)->ud = NULL;
    return 0;
}

typedef struct {
    int64_t buffer, batch;
    bool drop_oldest;
} sub_read_t;

static const mqr_lopt_t sub_opts[] = {
    {MQR_LOPT("buffer", MQR_LOPT_INT, sub_read_t, buffer), .def = 1000, .min = 1, .max = 10000000},
    {MQR_LOPT("batch", MQR_LOPT_INT, sub_read_t, batch), .def = 256, .min = 1, .max = 100000},
    {MQR_LOPT("drop_oldest", MQR_LOPT_BOOL, sub_read_t, drop_oldest)},
};

int mqr__lsub_new(lua_State *L)
{
    const char *filter = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_Integer buffer = 1000, batch = 256;
    bool drop_oldest = false;
    if (!lua_isnoneornil(L, 3)) {
        if (!lua_istable(L, 3))
            return luaL_error(L,
                              "mq.subscribe: options must be a table {buffer, batch, "
                              "drop_oldest}, not a %s",
                              luaL_typename(L, 3));
        sub_read_t r;
        mqr__lua_read_options(L, 3, "mq.subscribe", sub_opts, sizeof sub_opts / sizeof sub_opts[0],
                              &r);
        buffer = r.buffer;
        batch = r.batch;
        drop_oldest = r.drop_oldest;
    }
    l_state_t *st = mqr__state_of(L);
    l_sub_t *s = calloc(1, sizeof *s);
    if (!s || !(s->filter = strdup(filter))) {
        free(s);
        return luaL_error(L, "out of memory");
    }
    s->st = st;
    s->cfg.max_buffered = (size_t)buffer;
    s->cfg.drop_oldest = drop_oldest;
    s->cfg.batch = (unsigned)batch;
    lua_Debug ar;
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar) && ar.currentline > 0)
        lua_pushfstring(L, "subscriber '%s' (%s:%d)", filter, ar.short_src, ar.currentline);
    else
        lua_pushfstring(L, "subscriber '%s'", filter);
    s->name = strdup(lua_tostring(L, -1));
    lua_pop(L, 1);
    lua_pushfstring(L, "%s|%d|%d|%d", filter, (int)buffer, (int)batch, (int)drop_oldest);
    s->key = strdup(lua_tostring(L, -1));
    lua_pop(L, 1);
    if (!s->name || !s->key) {
        free(s->name);
        free(s->key);
        free(s->filter);
        free(s);
        return luaL_error(L, "out of memory");
    }
    lua_pushvalue(L, 2);
    s->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    l_sub_t **ud = lua_newuserdata(L, sizeof *ud);
    *ud = s;
    s->ud = ud;
    luaL_getmetatable(L, SUB_MT);
    lua_setmetatable(L, -2);
    l_sub_t **tail = &st->subs; /* declaration order: a reload pairs them by it */
    while (*tail)
        tail = &(*tail)->next;
    *tail = s;
    if (st->active) { /* declared at run time */
        int rc = sub_start(s);
        if (rc < 0) {
            sub_stop(s);
            return mqr__lua_fail(L, rc, filter);
        }
    } else {
        /* checked now, so a bad filter fails the load, not the takeover */
        const char *why = NULL;
        int rc = mqr__topic_filter_check(filter, strlen(filter), &why);
        if (rc < 0)
            return luaL_error(L, "subscribe '%s': %s", filter, why ? why : mqr_strerror(rc));
    }
    return 1;
}

typedef enum { HAND_TAKEN, HAND_HELD, HAND_NONE } hand_result_t;

/* Gives msg to the first of st's running subscribers whose filter matches
 * its topic, that does not hold it yet and has room. HAND_HELD: none took
 * it, but one that matches holds it already (another old subscriber's copy
 * reached it): nothing is lost. */
static hand_result_t hand_to_taker(l_state_t *st, mqr_msg_t *msg, l_handover_t *held)
{
    hand_result_t res = HAND_NONE;
    for (l_sub_t *s = st->subs; s; s = s->next) {
        if (!s->sub) continue;
        mqr_topic_filter_t tf;
        if (mqr__topic_filter_parse(s->filter, strlen(s->filter), &tf, NULL) < 0) continue;
        if (!mqr__topic_matches(tf.filter, tf.filter_len, msg->topic, msg->topic_len)) continue;
        if (mqr__handover_has(held, s, msg)) {
            res = HAND_HELD;
            continue;
        }
        if (mqr__queue_sub_put(s->sub, msg) == 0) {
            (void)mqr__handover_add(held, s, msg);
            return HAND_TAKEN;
        }
    }
    return res;
}

typedef struct {
    l_handover_t *held;
    const l_sub_t *taker;
} held_note_t;

static void note_held(void *arg, mqr_msg_t *msg)
{
    held_note_t *n = arg;
    (void)mqr__handover_add(n->held, n->taker, msg);
}

void mqr__lsub_takeover(l_state_t *st, l_state_t *old)
{
    /* Same key: the new declaration takes the old subscriber over as it
     * is, so its trie entry never leaves and its buffer stays in order. */
    for (l_sub_t *o = old ? old->subs : NULL; o; o = o->next) {
        if (!o->sub) continue;
        for (l_sub_t *s = st->subs; s; s = s->next) {
            if (s->kept || s->sub || s->stopped || strcmp(s->key, o->key) != 0) continue;
            s->sub = o->sub;
            o->sub = NULL;
            s->kept = true;
            mqr__queue_sub_rebind(s->sub, on_message, s);
            break;
        }
    }
    for (l_sub_t *s = st->subs; s; s = s->next) {
        int rc = sub_start(s);
        if (rc < 0) MQR_LOG_E("rules", "%s not started: %s", s->name, mqr_strerror(rc));
    }
    bool handing = false;
    for (l_sub_t *o = old ? old->subs : NULL; o && !handing; o = o->next) {
        mqr_queue_sub_stats_t qs = {0};
        if (o->sub) mqr__queue_sub_stats(o->sub, &qs);
        handing = qs.buffered > 0;
    }
    if (!handing) return; /* the common case: every subscriber kept */
    l_handover_t held = L_HANDOVER_INIT;
    for (l_sub_t *s = st->subs; s; s = s->next) {
        if (!s->kept) continue;
        held_note_t n = {&held, s};
        mqr__queue_sub_foreach(s->sub, note_held, &n);
    }
    /* The rest of the old ones: oldest message first, so each taker gets
     * them in the order they arrived, before anything newer. */
    for (l_sub_t *o = old->subs; o; o = o->next) {
        if (!o->sub) continue;
        uint64_t dropped = 0;
        mqr_msg_t *m;
        while ((m = mqr__queue_sub_take(o->sub))) {
            if (hand_to_taker(st, m, &held) == HAND_NONE) dropped++;
            mqr_msg_unref(m);
        }
        if (dropped) {
            st->host->reload_dropped += dropped;
            MQR_LOG_W("rules",
                      "reload: %llu message(s) waiting in %s had no taker in the new rules "
                      "(no subscriber matching them with room): dropped",
                      (unsigned long long)dropped, o->name);
        }
    }
    mqr__handover_free(&held);
}

void mqr__lsub_state_close(l_state_t *st)
{
    while (st->subs) {
        l_sub_t *s = st->subs;
        st->subs = s->next;
        sub_free(s);
    }
}

void mqr__lsub_register(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"stop", l_sub_stop},
        {"stats", l_sub_stats},
        {NULL, NULL},
    };
    mqr__lua_class(L, SUB_MT, methods, l_sub_gc, NULL);
}
