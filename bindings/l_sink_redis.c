/*
 * l_sink_redis.c — mq.redis{...}: the Redis client (core/sink/redis.h) in
 * Lua. r:command{ "XADD", "s", "*", "f", "v" } sends one command (its
 * arguments a list of strings or numbers, never a string to split) and
 * waits, in a coroutine, for the reply: a string, a number, a list, or
 * mq.redis.null for Redis' nil; a failure is nil, "ENAME: reason",
 * "ENAME", "retry"|"permanent". lua/host/sinks.lua adds xadd, publish,
 * set, get, hset. Loop thread. Must not: resume a coroutine of a state
 * that is ending, or show the password.
 */
#include "l_sink.h"

#include "redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REDIS_MT "mqrouter.sink.redis"
#define MAX_ARGS 4096
#define NULL_KEY "mqrouter.redis_null"

static void redis_close(void *obj)
{
    mqr__redis_close(obj);
}

/* mq.redis{ name, host, port, password, db, timeout, connect_timeout,
 * max_in_flight, max_queued, backoff_min, backoff_max } -> client */
int mqr__lsink_redis_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    static const char *const known[] = {"name",
                                        "host",
                                        "port",
                                        "password",
                                        "db",
                                        "timeout",
                                        "connect_timeout",
                                        "max_in_flight",
                                        "max_queued",
                                        "backoff_min",
                                        "backoff_max",
                                        NULL};
    mqr__lua_check_options(L, 1, "mq.redis", known);
    static const char what[] = "mq.redis";
    mqr_redis_opts_t o = {0};
    o.name = mqr__lsink_opt_str(L, what, "name");
    o.host = mqr__lsink_opt_str(L, what, "host");
    o.port = (int)mqr__lsink_opt_count(L, what, "port", 1, 65535);
    o.password = mqr__lsink_opt_str(L, what, "password");
    o.db = (int)mqr__lsink_opt_count(L, what, "db", 0, 10000);
    o.timeout_ms = mqr__lsink_opt_ms(L, what, "timeout", 3600);
    o.connect_timeout_ms = mqr__lsink_opt_ms(L, what, "connect_timeout", 3600);
    o.backoff_min_ms = mqr__lsink_opt_ms(L, what, "backoff_min", 3600);
    o.backoff_max_ms = mqr__lsink_opt_ms(L, what, "backoff_max", 3600);
    o.max_in_flight = (uint32_t)mqr__lsink_opt_count(L, what, "max_in_flight", 1, 1000000);
    o.max_queued = (uint32_t)mqr__lsink_opt_count(L, what, "max_queued", 1, 100000000);
    l_state_t *st = mqr__state_of(L);
    mqr__lsink_check_name(L, what, o.name ? o.name : "redis");
    mqr_redis_t *r;
    char *err = NULL;
    int rc = mqr__redis_new(mqr_engine_loop(st->host->e), &o, &r, &err);
    if (rc < 0) {
        lua_pushfstring(L, "mq.redis: %s", err ? err : mqr_strerror(rc));
        free(err);
        return lua_error(L);
    }
    mqr__lsink_push(L, REDIS_MT, mqr__redis_sink(r), r, redis_close);
    return 1;
}

/* A reply as Lua sees it. [-0, +1] */
static void push_reply(lua_State *L, const mqr_redis_reply_t *r, int depth)
{
    switch (r->type) {
    case MQR_REDIS_STRING:
    case MQR_REDIS_STATUS:
    case MQR_REDIS_ERROR: /* inside an array (EXEC): the text */
        lua_pushlstring(L, r->str ? r->str : "", r->len);
        break;
    case MQR_REDIS_INTEGER:
        lua_pushnumber(L, (lua_Number)r->integer);
        break;
    case MQR_REDIS_ARRAY:
        if (depth > 32) { /* no reply nests that deep; keep the C stack safe */
            lua_pushnil(L);
            break;
        }
        lua_createtable(L, (int)r->elements, 0);
        for (size_t i = 0; i < r->elements; i++) {
            push_reply(L, r->element[i], depth + 1);
            lua_rawseti(L, -2, (int)i + 1);
        }
        break;
    default: /* nil */
        lua_getfield(L, LUA_REGISTRYINDEX, NULL_KEY);
        break;
    }
}

static int push_redis_result(lua_State *L, void *arg)
{
    const mqr_redis_result_t *r = arg;
    if (r->outcome == MQR_SINK_OK) {
        if (r->reply)
            push_reply(L, r->reply, 0);
        else
            lua_getfield(L, LUA_REGISTRYINDEX, NULL_KEY);
        return 1;
    }
    if (r->outcome == MQR_SINK_PERMANENT && r->err == MQR_EINVAL) {
        /* the server's error reply, named by its first word (ERR, WRONGTYPE) */
        lua_pushnil(L);
        lua_pushfstring(L, "EREDIS: %s", r->reason ? r->reason : "error reply");
        lua_pushliteral(L, "EREDIS");
        lua_pushliteral(L, "permanent");
        return 4;
    }
    return mqr__lsink_fail(L, r->err, r->reason, r->outcome);
}

static void on_redis_done(void *arg, const mqr_redis_result_t *r)
{
    mqr__lwait_resume(arg, push_redis_result, (void *)r);
}

static void on_redis_sent(void *arg, const mqr_redis_result_t *r)
{
    if (r->outcome != MQR_SINK_OK) mqr__lsink_note_failure(arg, r->reason);
}

/* r:command{ name, args... } waits for the reply; r:send{...} does not
 * (true, or nil, "EFULL...": a failure later is counted and logged). */
static int redis_command(lua_State *L, bool wait)
{
    l_sink_t *s = mqr__lsink_check(L, 1, REDIS_MT);
    if (!lua_istable(L, 2))
        return luaL_error(L, "redis:command: the command must be a list of strings, not a %s",
                          luaL_typename(L, 2));
    int n = (int)lua_objlen(L, 2);
    if (n < 1) return luaL_error(L, "redis:command: the command list is empty");
    if (n > MAX_ARGS) return luaL_error(L, "redis:command: more than %d arguments", MAX_ARGS);
    const char **argv = lua_newuserdata(L, (size_t)n * (sizeof *argv + sizeof(size_t)));
    size_t *lens = (size_t *)(argv + n);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 2, i + 1);
        int t = lua_type(L, -1);
        if (t != LUA_TSTRING && t != LUA_TNUMBER)
            return luaL_error(L, "redis:command: argument %d is a %s (strings and numbers only)",
                              i + 1, lua_typename(L, t));
        if (t == LUA_TNUMBER) {
            lua_tostring(L, -1); /* converted in place */
            lua_rawseti(L, 2, i + 1);
            lua_rawgeti(L, 2, i + 1);
        }
        argv[i] = lua_tolstring(L, -1, &lens[i]); /* the list holds it */
        lua_pop(L, 1);
    }
    l_wait_t *w = wait ? mqr__lwait_begin(L, "redis:command") : NULL;
    char why[256] = "";
    int rc =
        wait ? mqr__redis_command(s->obj, n, argv, lens, on_redis_done, w, why, sizeof why)
             : mqr__redis_command(s->obj, n, argv, lens, on_redis_sent, s->sink, why, sizeof why);
    return mqr__lsink_given(L, rc, w, why);
}

static int l_redis_command(lua_State *L)
{
    return redis_command(L, true);
}

static int l_redis_send(lua_State *L)
{
    return redis_command(L, false);
}

void mqr__lsink_redis_register(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"command", l_redis_command}, {"send", l_redis_send}, {NULL, NULL}};
    mqr__lsink_register(L, REDIS_MT, methods);
    /* mq.redis.null: Redis' nil reply, which nil (a failure) cannot stand for */
    lua_newtable(L);
    lua_pushliteral(L, "redis.null");
    lua_setfield(L, -2, "name");
    lua_setfield(L, LUA_REGISTRYINDEX, NULL_KEY);
}
