/*
 * l_iter.c — the buffers behind the session iterators (`up:messages`,
 * `mq.session_messages`): the messages an iterator's route received while
 * no coroutine waited on it, held in C rather than in a Lua table so that a
 * reload can hand them to the new rules instead of closing them with the
 * old Lua state.
 *
 * The waiting itself (which coroutine, timeouts, stop) is Lua, in
 * lua/host/upstream.lua: its route pushes a message here when nobody
 * waits, and the iterator pops from here before it waits. A buffer belongs
 * to the state that made it and is freed with it. At a reload
 * (mqr__liter_takeover) an iterator the new script makes again the same way
 * (session, filter, max) takes the old one's messages as they are; the
 * messages of one it does not make again go to a new iterator that would
 * have received them; the rest are dropped, counted and logged. Must not:
 * call into a state that is not serving.
 */
#include "script.h"

#include "handover.h"
#include "topic.h"

#include <stdlib.h>
#include <string.h>

#define ITER_MT "mqrouter.iterbuf"

struct l_iter {
    l_iter_t *next; /* st->iters, in creation order */
    l_state_t *st;
    char *key;    /* "source|filter|max": equal keys = the same iterator across a reload */
    char *filter; /* as given (may be $share/...) */
    char *source; /* the session whose messages it takes; NULL = every session */
    mqr_msg_t **ring;
    size_t cap, head, count;
    size_t max; /* messages that may wait; more are dropped and counted */
    uint64_t dropped;
    int wake_ref; /* Lua: hands what waits to the coroutine waiting, if any */
    bool stopped;
    bool kept;     /* took over an old state's iterator */
    l_iter_t **ud; /* the Lua handle, cleared when it is collected */
};

/* Appends msg (a reference moves in). Grows past max when asked to: a
 * reload's handover has already decided. Returns false when out of memory. */
static bool ring_push(l_iter_t *it, mqr_msg_t *msg)
{
    if (it->count == it->cap) {
        size_t cap = it->cap ? it->cap * 2 : 16;
        mqr_msg_t **r = malloc(cap * sizeof *r);
        if (!r) return false;
        for (size_t i = 0; i < it->count; i++)
            r[i] = it->ring[(it->head + i) % it->cap];
        free(it->ring);
        it->ring = r;
        it->cap = cap;
        it->head = 0;
    }
    it->ring[(it->head + it->count) % it->cap] = msg;
    it->count++;
    return true;
}

/* The oldest waiting message (its reference moves out), or NULL. */
static mqr_msg_t *ring_pop(l_iter_t *it)
{
    if (!it->count) return NULL;
    mqr_msg_t *m = it->ring[it->head];
    it->head = (it->head + 1) % it->cap;
    it->count--;
    return m;
}

static void ring_clear(l_iter_t *it)
{
    mqr_msg_t *m;
    while ((m = ring_pop(it)))
        mqr_msg_unref(m);
    free(it->ring);
    it->ring = NULL;
    it->cap = it->head = 0;
}

static l_iter_t *check_iter(lua_State *L)
{
    l_iter_t **ud = luaL_checkudata(L, 1, ITER_MT);
    if (!*ud) luaL_error(L, "message iterator used after its rules were replaced");
    return *ud;
}

/* buf:push(msg) -> true, or false when max messages wait already (the
 * message is dropped and counted) */
static int l_iter_push(lua_State *L)
{
    l_iter_t *it = check_iter(L);
    if (!mqr__lmsg_is(L, 2)) return luaL_typerror(L, 2, "message");
    bool ok = !it->stopped && it->count < it->max;
    if (ok) {
        mqr_msg_t *msg = mqr__lmsg_build(L, 2); /* what the table holds now */
        ok = ring_push(it, msg);
        if (!ok) mqr_msg_unref(msg);
    }
    if (!ok) it->dropped++;
    lua_pushboolean(L, ok);
    return 1;
}

/* buf:pop() -> the oldest waiting message, or nil */
static int l_iter_pop(lua_State *L)
{
    l_iter_t *it = check_iter(L);
    mqr_msg_t *m = ring_pop(it);
    if (!m) return 0;
    mqr__lmsg_push(L, m); /* copies */
    mqr_msg_unref(m);
    return 1;
}

/* buf:stop(): what waits is dropped (counted); pushes are refused after */
static int l_iter_stop(lua_State *L)
{
    l_iter_t *it = check_iter(L);
    it->stopped = true;
    it->dropped += it->count;
    ring_clear(it);
    return 0;
}

/* buf:dropped() -> messages dropped so far (full, or waiting at stop) */
static int l_iter_dropped(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)check_iter(L)->dropped);
    return 1;
}

static int l_iter_gc(lua_State *L)
{
    l_iter_t **ud = luaL_checkudata(L, 1, ITER_MT);
    if (*ud) (*ud)->ud = NULL;
    return 0;
}

/* iter_new(source | nil, filter, max, wake) -> buf. Called by upstream.lua
 * only, which checked its arguments. [-0, +1] */
int mqr__liter_new(lua_State *L)
{
    const char *source = lua_isnil(L, 1) ? NULL : luaL_checkstring(L, 1);
    const char *filter = luaL_checkstring(L, 2);
    lua_Integer max = luaL_checkinteger(L, 3);
    luaL_checktype(L, 4, LUA_TFUNCTION);
    if (max < 1) return luaL_argerror(L, 3, "max must be at least 1");
    l_state_t *st = mqr__state_of(L);
    lua_pushfstring(L, "%s|%s|%d", source ? source : "*", filter, (int)max);
    l_iter_t *it = calloc(1, sizeof *it);
    if (it) {
        it->key = strdup(lua_tostring(L, -1));
        it->filter = strdup(filter);
        it->source = source ? strdup(source) : NULL;
    }
    lua_pop(L, 1);
    if (!it || !it->key || !it->filter || (source && !it->source)) {
        if (it) {
            free(it->key);
            free(it->filter);
            free(it->source);
        }
        free(it);
        return luaL_error(L, "out of memory");
    }
    it->st = st;
    it->max = (size_t)max;
    lua_pushvalue(L, 4);
    it->wake_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    l_iter_t **ud = lua_newuserdata(L, sizeof *ud);
    *ud = it;
    it->ud = ud;
    luaL_getmetatable(L, ITER_MT);
    lua_setmetatable(L, -2);
    l_iter_t **tail = &st->iters; /* creation order: a reload pairs them by it */
    while (*tail)
        tail = &(*tail)->next;
    *tail = it;
    return 1;
}

/* Would the iterator it have received msg: its filter matches the topic and
 * it takes the session the message came from. */
static bool wants(const l_iter_t *it, const mqr_msg_t *msg)
{
    if (it->source && (msg->origin != MQR_ORIGIN_SESSION || !msg->origin_name ||
                       strcmp(msg->origin_name, it->source) != 0))
        return false;
    mqr_topic_filter_t tf;
    if (mqr__topic_filter_parse(it->filter, strlen(it->filter), &tf, NULL) < 0) return false;
    return mqr__topic_matches(tf.filter, tf.filter_len, msg->topic, msg->topic_len);
}

void mqr__liter_takeover(l_state_t *st, l_state_t *old)
{
    if (!old) return;
    /* Same key: the new iterator gets the old one's messages ahead of any
     * of its own (it can have none yet: its route starts with this swap).
     * Empty ones pair too, so that the n-th pairs with the n-th. */
    for (l_iter_t *o = old->iters; o; o = o->next) {
        if (o->stopped) continue;
        for (l_iter_t *n = st->iters; n; n = n->next) {
            if (n->kept || n->stopped || strcmp(n->key, o->key) != 0) continue;
            mqr_msg_t *m;
            while ((m = ring_pop(n))) {
                if (ring_push(o, m)) continue;
                mqr_msg_unref(m);
                n->dropped++;
            }
            mqr_msg_t **ring = n->ring;
            size_t cap = n->cap;
            n->ring = o->ring;
            n->cap = o->cap;
            n->head = o->head;
            n->count = o->count;
            n->dropped += o->dropped;
            o->ring = ring;
            o->cap = cap;
            o->head = o->count = 0;
            n->kept = true;
            break;
        }
    }
    bool handing = false;
    for (l_iter_t *o = old->iters; o && !handing; o = o->next)
        handing = !o->stopped && o->count;
    if (!handing) return; /* the common case: every iterator kept */
    /* The rest: each message to the first new iterator that would have
     * received it, does not hold it yet (fan-out shares a message between
     * iterators) and has room, oldest first. */
    l_handover_t held = L_HANDOVER_INIT;
    for (l_iter_t *n = st->iters; n; n = n->next)
        for (size_t i = 0; n->kept && i < n->count; i++)
            (void)mqr__handover_add(&held, n, n->ring[(n->head + i) % n->cap]);
    for (l_iter_t *o = old->iters; o; o = o->next) {
        if (o->stopped || !o->count) continue;
        uint64_t dropped = 0;
        mqr_msg_t *m;
        while ((m = ring_pop(o))) {
            bool taken = false, had = false;
            for (l_iter_t *n = st->iters; n && !taken; n = n->next) {
                if (n->stopped || !wants(n, m)) continue;
                if (mqr__handover_has(&held, n, m)) {
                    had = true;
                } else if (n->count < n->max && ring_push(n, m)) {
                    (void)mqr__handover_add(&held, n, m);
                    taken = true;
                }
            }
            if (taken) continue;
            mqr_msg_unref(m);
            if (!had) dropped++; /* else another old iterator's copy reached it */
        }
        if (dropped) {
            st->host->reload_dropped += dropped;
            MQR_LOG_W("rules",
                      "reload: %llu message(s) waiting in the message iterator of '%s' (%s) "
                      "had no taker in the new rules (no iterator for them with room): dropped",
                      (unsigned long long)dropped, o->filter,
                      o->source ? o->source : "every session");
        }
    }
    mqr__handover_free(&held);
}

void mqr__liter_wake(l_state_t *st)
{
    for (l_iter_t *it = st->iters; it && st->active && st->L; it = it->next) {
        if (it->stopped || !it->count) continue;
        lua_rawgeti(st->L, LUA_REGISTRYINDEX, it->wake_ref);
        mqr__script_call(st, 0, "message iterator", NULL, NULL);
    }
}

void mqr__liter_state_close(l_state_t *st)
{
    while (st->iters) {
        l_iter_t *it = st->iters;
        st->iters = it->next;
        if (it->ud) *it->ud = NULL;
        ring_clear(it);
        free(it->key);
        free(it->filter);
        free(it->source);
        free(it);
    }
}

void mqr__liter_register(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"push", l_iter_push},       {"pop", l_iter_pop}, {"stop", l_iter_stop},
        {"dropped", l_iter_dropped}, {NULL, NULL},
    };
    mqr__lua_class(L, ITER_MT, methods, l_iter_gc, NULL);
}
