/*
 * l_sink.c — the Lua face every egress client shares (l_sink.h): handles,
 * the state's list, statistics, the engine's list and sink_up/sink_down
 * events to mq.on. Loop thread. Must not: run Lua for a state that is
 * ending, or leave a client open past its state.
 */
#include "l_sink.h"

#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void on_state(void *arg, mqr_sink_t *s, bool up, const char *reason)
{
    l_sink_t *ls = arg;
    l_state_t *st = ls->st;
    if (!st->L || st->ending || !st->active) return;
    lua_State *L = st->L;
    lua_createtable(L, 0, 5);
    lua_pushstring(L, up ? "sink_up" : "sink_down");
    lua_setfield(L, -2, "type");
    lua_pushstring(L, s->name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, s->kind);
    lua_setfield(L, -2, "kind");
    if (!up && reason) {
        lua_pushstring(L, reason);
        lua_setfield(L, -2, "reason");
    }
    lua_pushnumber(L, (lua_Number)mqr__now_ms() / 1000.0);
    lua_setfield(L, -2, "time");
    mqr__lupstream_dispatch(st); /* mq.on's dispatcher (upstream.lua) */
}

static void sink_close(l_sink_t *ls)
{
    l_state_t *st = ls->st;
    if (ls->prev)
        ls->prev->next = ls->next;
    else
        st->sinks = ls->next;
    if (ls->next) ls->next->prev = ls->prev;
    if (ls->ud) *ls->ud = NULL;
    mqr__sinks_remove(mqr__engine_sinks(st->host->e), ls->sink);
    ls->sink->on_state = NULL;
    ls->close(ls->obj); /* answers its waiting requests: ECLOSED */
    free(ls);
}

void mqr__lsink_state_close(l_state_t *st)
{
    while (st->sinks)
        sink_close(st->sinks);
}

l_sink_t *mqr__lsink_push(lua_State *L, const char *mt, mqr_sink_t *sink, void *obj,
                          void (*close)(void *obj))
{
    l_state_t *st = mqr__state_of(L);
    l_sink_t *ls = calloc(1, sizeof *ls);
    if (!ls) {
        close(obj);
        luaL_error(L, "out of memory");
        return NULL;
    }
    ls->st = st;
    ls->sink = sink;
    ls->obj = obj;
    ls->close = close;
    ls->next = st->sinks;
    if (st->sinks) st->sinks->prev = ls;
    st->sinks = ls;
    mqr__sinks_add(mqr__engine_sinks(st->host->e), sink);
    sink->on_state = on_state;
    sink->state_arg = ls;
    l_sink_t **ud = lua_newuserdata(L, sizeof *ud);
    *ud = ls;
    ls->ud = ud;
    luaL_getmetatable(L, mt);
    lua_setmetatable(L, -2);
    return ls;
}

l_sink_t *mqr__lsink_check(lua_State *L, int idx, const char *mt)
{
    l_sink_t **ud = luaL_checkudata(L, idx, mt);
    if (!*ud) luaL_error(L, "%s: the sink is closed", mt);
    return *ud;
}

/* Any sink handle (the first metatable that matches). */
static l_sink_t **any_ud(lua_State *L)
{
    l_sink_t **ud = lua_touserdata(L, 1);
    if (!ud || !lua_getmetatable(L, 1)) luaL_typerror(L, 1, "sink");
    lua_getfield(L, -1, "__sink");
    bool ok = lua_toboolean(L, -1);
    lua_pop(L, 2);
    if (!ok) luaL_typerror(L, 1, "sink");
    return ud;
}

int mqr__lsink_close_m(lua_State *L)
{
    l_sink_t **ud = any_ud(L);
    if (*ud) sink_close(*ud);
    return 0;
}

int mqr__lsink_gc(lua_State *L)
{
    l_sink_t **ud = lua_touserdata(L, 1);
    if (ud && *ud) sink_close(*ud);
    return 0;
}

int mqr__lsink_name_m(lua_State *L)
{
    l_sink_t **ud = any_ud(L);
    if (!*ud) return 0;
    lua_pushstring(L, (*ud)->sink->name);
    return 1;
}

static void set_num(lua_State *L, const char *k, double v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

void mqr__lsink_push_stats(lua_State *L, const mqr_sink_t *s)
{
    lua_createtable(L, 0, 16);
    lua_pushstring(L, s->name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, s->kind);
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, s->target);
    lua_setfield(L, -2, "target");
    lua_pushboolean(L, s->up);
    lua_setfield(L, -2, "up");
    set_num(L, "requests", (double)s->requests);
    set_num(L, "ok", (double)s->ok);
    set_num(L, "retried", (double)s->retried);
    set_num(L, "failed", (double)s->failed);
    set_num(L, "in_flight", s->in_flight);
    set_num(L, "queued", s->queued);
    set_num(L, "reconnects", (double)s->reconnects);
    lua_createtable(L, 0, MQR_SINK_ERR_KINDS_);
    for (int k = 0; k < MQR_SINK_ERR_KINDS_; k++)
        set_num(L, mqr__sink_err_kind_name((mqr_sink_err_kind_t)k), (double)s->errors[k]);
    lua_setfield(L, -2, "errors");
    if (s->last_error[0]) {
        lua_pushstring(L, s->last_error);
        lua_setfield(L, -2, "last_error");
    }
    set_num(L, "latency_count", (double)s->latency.count);
    set_num(L, "latency_sum", (double)s->latency.sum_ns / 1e9);
}

int mqr__lsink_stats_m(lua_State *L)
{
    l_sink_t **ud = any_ud(L);
    if (!*ud) return mqr__lua_fail(L, MQR_ECLOSED, "sink");
    mqr__lsink_push_stats(L, (*ud)->sink);
    return 1;
}

int mqr__lsink_fail(lua_State *L, int err, const char *reason, mqr_sink_outcome_t outcome)
{
    lua_pushnil(L);
    if (reason && reason[0])
        lua_pushstring(L, reason);
    else
        lua_pushfstring(L, "%s: %s", mqr_err_name(err), mqr_strerror(err));
    lua_pushstring(L, mqr_err_name(err));
    lua_pushstring(L, outcome == MQR_SINK_PERMANENT ? "permanent" : "retry");
    return 4;
}

extern const char mqr__lua_sinks[];
extern const size_t mqr__lua_sinks_len;

void mqr__lsink_open(lua_State *L)
{
    int api = lua_gettop(L);
    if (luaL_loadbuffer(L, mqr__lua_sinks, mqr__lua_sinks_len, "=sinks") != 0)
        lua_error(L); /* a bug in sinks.lua: state_new runs this unprotected */
    lua_pushvalue(L, api);
    static const char *const mts[] = {"mqrouter.sink.file", "mqrouter.sink.http",
                                      "mqrouter.sink.redis", "mqrouter.sink.pg"};
    for (int i = 0; i < 4; i++) {
        luaL_getmetatable(L, mts[i]);
        lua_getfield(L, -1, "__index");
        lua_remove(L, -2);
    }
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, mqr__lsink_http_new);
    lua_setfield(L, -2, "http_new");
    lua_pushstring(L, mqr__script_stdlib_dir());
    lua_setfield(L, -2, "stdlib_dir");
    lua_pushcfunction(L, mqr__lsink_redis_new);
    lua_setfield(L, -2, "redis_new");
    lua_getfield(L, LUA_REGISTRYINDEX, "mqrouter.redis_null");
    lua_setfield(L, -2, "redis_null");
    lua_pushcfunction(L, mqr__lsink_pg_new);
    lua_setfield(L, -2, "pg_new");
    lua_pushboolean(L, mqr__state_of(L)->host->fake_sinks);
    lua_setfield(L, -2, "fake_sinks");
    lua_call(L, 6, 0);
}

void mqr__lsink_note_failure(const mqr_sink_t *s, const char *reason)
{
    uint64_t n = s->retried + s->failed;
    if (n && (n & (n - 1)) == 0) /* the 1st, 2nd, 4th... */
        MQR_LOG_W("sink", "%s '%s': a request sent without waiting failed: %s (%llu so far)",
                  s->kind, s->name, reason ? reason : "?", (unsigned long long)n);
}

uint32_t mqr__lsink_opt_ms(lua_State *L, const char *what, const char *key, double max_s)
{
    lua_getfield(L, 1, key);
    uint32_t ms = 0;
    if (!lua_isnil(L, -1)) {
        double sec = lua_tonumber(L, -1);
        if (!lua_isnumber(L, -1) || !(sec > 0) || sec > max_s)
            luaL_error(L, "%s: %s must be seconds in (0, %g]", what, key, max_s);
        ms = (uint32_t)(sec * 1000.0 + 0.5);
        if (!ms) ms = 1;
    }
    lua_pop(L, 1);
    return ms;
}

uint64_t mqr__lsink_opt_count(lua_State *L, const char *what, const char *key, double min,
                              double max)
{
    lua_getfield(L, 1, key);
    uint64_t n = 0;
    if (!lua_isnil(L, -1)) {
        double d = lua_tonumber(L, -1);
        if (!lua_isnumber(L, -1) || d < min || d > max || d != (double)(uint64_t)d)
            luaL_error(L, "%s: %s must be a whole number from %.0f to %.0f", what, key, min, max);
        n = (uint64_t)d;
    }
    lua_pop(L, 1);
    return n;
}

const char *mqr__lsink_opt_str(lua_State *L, const char *what, const char *key)
{
    lua_getfield(L, 1, key);
    const char *v = NULL;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "%s: %s must be a string", what, key);
        v = lua_tostring(L, -1); /* the options table keeps it */
    }
    lua_pop(L, 1);
    return v;
}

void mqr__lsink_check_name(lua_State *L, const char *what, const char *name)
{
    for (l_sink_t *s = mqr__state_of(L)->sinks; s; s = s->next)
        if (strcmp(s->sink->name, name) == 0)
            luaL_error(L, "%s: this script already opened a sink named '%s'", what, name);
}

void mqr__lsink_register(lua_State *L, const char *mt, const luaL_Reg *own)
{
    luaL_Reg all[24];
    size_t n = 0;
    for (const luaL_Reg *r = own; r->name && n < 20; r++)
        all[n++] = *r;
    all[n++] = (luaL_Reg){"close", mqr__lsink_close_m};
    all[n++] = (luaL_Reg){"stats", mqr__lsink_stats_m};
    all[n++] = (luaL_Reg){"name", mqr__lsink_name_m};
    all[n] = (luaL_Reg){NULL, NULL};
    mqr__lua_class(L, mt, all, mqr__lsink_gc, NULL);
    luaL_getmetatable(L, mt);
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "__sink"); /* what close/stats/name check */
    lua_pop(L, 1);
}

int mqr__lsink_given(lua_State *L, int rc, l_wait_t *w, const char *why)
{
    if (rc < 0) {
        mqr__lwait_cancel(w);
        if (rc == MQR_EINVAL) { /* a URL or command built from a message is data, not misuse */
            lua_pushfstring(L, "EINVAL: %s", why && why[0] ? why : mqr_strerror(rc));
            return mqr__lsink_fail(L, rc, lua_tostring(L, -1), MQR_SINK_PERMANENT);
        }
        return mqr__lsink_fail(L, rc, why && why[0] ? why : NULL, MQR_SINK_RETRY);
    }
    if (!w) {
        lua_pushboolean(L, 1);
        return 1;
    }
    return lua_yield(L, 0);
}
