/*
 * l_sink_http.c — mq.http{...}: the HTTP(S) client (core/sink/http.h) in
 * Lua. c:_request(t) sends one request and waits, in a coroutine, for its
 * answer: a response table { status, headers, body, version } for a 2xx,
 * else nil, "ENAME: reason", "ENAME", "retry"|"permanent" [, the response
 * when the server answered]. lua/host/sinks.lua adds request/get/post (JSON
 * bodies, a base URL) and mq.http.request, on a default client per state.
 * Loop thread. Must not: resume a coroutine of a state that is ending, or
 * show a password.
 */
#include "l_sink.h"

#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HTTP_MT "mqrouter.sink.http"
#define MAX_HEADERS 64

static void http_close(void *obj)
{
    mqr__http_close(obj);
}

static uint32_t opt_ms(lua_State *L, int t, const char *k, double max_s)
{
    lua_getfield(L, t, k);
    uint32_t ms = 0;
    if (!lua_isnil(L, -1)) {
        if (!lua_isnumber(L, -1)) luaL_error(L, "mq.http: %s must be seconds", k);
        double s = lua_tonumber(L, -1);
        if (!(s > 0) || s > max_s)
            luaL_error(L, "mq.http: %s must be seconds in (0, %g]", k, max_s);
        ms = (uint32_t)(s * 1000.0 + 0.5);
        if (!ms) ms = 1;
    }
    lua_pop(L, 1);
    return ms;
}

static uint32_t opt_n(lua_State *L, int t, const char *k, double max)
{
    lua_getfield(L, t, k);
    uint32_t n = 0;
    if (!lua_isnil(L, -1)) {
        double d = lua_tonumber(L, -1);
        if (!lua_isnumber(L, -1) || d < 1 || d > max || d != (double)(uint32_t)d)
            luaL_error(L, "mq.http: %s must be a whole number from 1 to %.0f", k, max);
        n = (uint32_t)d;
    }
    lua_pop(L, 1);
    return n;
}

static const char *opt_str(lua_State *L, int t, const char *k)
{
    lua_getfield(L, t, k);
    const char *s = NULL;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "mq.http: %s must be a string", k);
        s = lua_tostring(L, -1); /* the options table keeps it */
    }
    lua_pop(L, 1);
    return s;
}

/* C._http_new{ name, base_url, timeout, connect_timeout, max_in_flight,
 * max_queued, max_host_connections, max_response_bytes, ca, cert, key,
 * insecure } -> client (headers and base_url are the Lua half's) */
static int l_http_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    mqr_http_opts_t o = {0};
    o.name = opt_str(L, 1, "name");
    o.target = opt_str(L, 1, "base_url");
    o.timeout_ms = opt_ms(L, 1, "timeout", 3600);
    o.connect_timeout_ms = opt_ms(L, 1, "connect_timeout", 600);
    o.max_in_flight = opt_n(L, 1, "max_in_flight", 100000);
    o.max_queued = opt_n(L, 1, "max_queued", 10000000);
    o.max_host_connections = opt_n(L, 1, "max_host_connections", 10000);
    o.max_response_bytes = opt_n(L, 1, "max_response_bytes", 1 << 30);
    o.ca_file = opt_str(L, 1, "ca");
    o.cert_file = opt_str(L, 1, "cert");
    o.key_file = opt_str(L, 1, "key");
    lua_getfield(L, 1, "insecure");
    o.insecure = lua_toboolean(L, -1);
    lua_pop(L, 1);
    l_state_t *st = mqr__state_of(L);
    const char *name = o.name ? o.name : "http";
    for (l_sink_t *s = st->sinks; s; s = s->next)
        if (strcmp(s->sink->name, name) == 0)
            return luaL_error(L, "mq.http: this script already opened a sink named '%s'", name);
    mqr_http_t *c;
    char *err = NULL;
    int rc = mqr__http_new(mqr_engine_loop(st->host->e), &o, &c, &err);
    if (rc < 0) {
        lua_pushfstring(L, "mq.http: %s", err ? err : mqr_strerror(rc));
        free(err);
        return lua_error(L);
    }
    mqr__lsink_push(L, HTTP_MT, mqr__http_sink(c), c, http_close);
    return 1;
}

/* { status, headers = { name = value }, body, version } [-0, +1] */
static void push_response(lua_State *L, const mqr_http_resp_t *r)
{
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, r->status);
    lua_setfield(L, -2, "status");
    lua_createtable(L, 0, (int)r->nheaders);
    for (size_t i = 0; i < r->nheaders; i++) {
        /* a repeated header keeps its values joined, as HTTP allows */
        lua_getfield(L, -1, r->headers[i].name);
        if (lua_isstring(L, -1)) {
            lua_pushstring(L, ", ");
            lua_pushstring(L, r->headers[i].value);
            lua_concat(L, 3);
        } else {
            lua_pop(L, 1);
            lua_pushstring(L, r->headers[i].value);
        }
        lua_setfield(L, -2, r->headers[i].name);
    }
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, r->body ? r->body : "", r->body_len);
    lua_setfield(L, -2, "body");
    lua_pushnumber(L, r->http_version / 10.0);
    lua_setfield(L, -2, "version");
    lua_pushnumber(L, r->seconds);
    lua_setfield(L, -2, "seconds");
}

static int push_http_result(lua_State *L, void *arg)
{
    const mqr_http_resp_t *r = arg;
    if (r->outcome == MQR_SINK_OK) {
        push_response(L, r);
        return 1;
    }
    if (r->status > 0 && r->err == 0) { /* the server answered, not with a 2xx */
        lua_pushnil(L);
        lua_pushfstring(L, "EHTTP: %s", r->reason ? r->reason : "HTTP error");
        lua_pushliteral(L, "EHTTP");
        lua_pushstring(L, r->outcome == MQR_SINK_PERMANENT ? "permanent" : "retry");
        push_response(L, r);
        return 5;
    }
    return mqr__lsink_fail(L, r->err, r->reason, r->outcome);
}

static void on_http_done(void *arg, const mqr_http_resp_t *r)
{
    mqr__lwait_resume(arg, push_http_result, (void *)r);
}

static void on_http_sent(void *arg, const mqr_http_resp_t *r)
{
    if (r->outcome != MQR_SINK_OK) mqr__lsink_note_failure(arg, r->reason);
}

/* c:_request{ method, url, headers = { name = value }, body, timeout }
 * waits for the answer; c:_send{...} does not (true, or nil, "EFULL...") */
static int http_request(lua_State *L, bool wait)
{
    l_sink_t *s = mqr__lsink_check(L, 1, HTTP_MT);
    luaL_checktype(L, 2, LUA_TTABLE);
    mqr_http_req_t req = {0};
    lua_getfield(L, 2, "url");
    if (lua_type(L, -1) != LUA_TSTRING) return luaL_error(L, "http:request: url must be a string");
    req.url = lua_tostring(L, -1);
    lua_getfield(L, 2, "method");
    req.method = luaL_optstring(L, -1, "GET");
    lua_getfield(L, 2, "body");
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING)
            return luaL_error(L, "http:request: body must be a string (or a table, as JSON)");
        req.body = lua_tolstring(L, -1, &req.body_len);
    }
    lua_getfield(L, 2, "timeout");
    if (!lua_isnil(L, -1)) {
        double t = lua_tonumber(L, -1);
        if (!lua_isnumber(L, -1) || !(t > 0) || t > 3600)
            return luaL_error(L, "http:request: timeout must be seconds in (0, 3600]");
        req.timeout_ms = (uint32_t)(t * 1000.0 + 0.5);
        if (!req.timeout_ms) req.timeout_ms = 1;
    }
    mqr_http_header_t headers[MAX_HEADERS];
    lua_getfield(L, 2, "headers");
    if (!lua_isnil(L, -1)) {
        if (!lua_istable(L, -1)) return luaL_error(L, "http:request: headers must be a table");
        int ht = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, ht)) {
            if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
                return luaL_error(L, "http:request: headers must map names to strings");
            if (req.nheaders == MAX_HEADERS)
                return luaL_error(L, "http:request: more than %d headers", MAX_HEADERS);
            headers[req.nheaders].name = lua_tostring(L, -2);
            headers[req.nheaders].value = lua_tostring(L, -1);
            req.nheaders++;
            lua_pop(L, 1); /* the table keeps both strings */
        }
        req.headers = headers;
    }
    l_wait_t *w = wait ? mqr__lwait_begin(L, "http:request") : NULL;
    char why[256] = "";
    int rc = wait ? mqr__http_request(s->obj, &req, on_http_done, w, why, sizeof why)
                  : mqr__http_request(s->obj, &req, on_http_sent, s->sink, why, sizeof why);
    if (rc < 0) {
        mqr__lwait_cancel(w);
        if (rc == MQR_EINVAL) { /* a URL from a message is data, not misuse */
            lua_pushfstring(L, "EINVAL: %s", why);
            return mqr__lsink_fail(L, rc, lua_tostring(L, -1), MQR_SINK_PERMANENT);
        }
        return mqr__lsink_fail(L, rc, why[0] ? why : NULL, MQR_SINK_RETRY);
    }
    if (!wait) {
        lua_pushboolean(L, 1);
        return 1;
    }
    return lua_yield(L, 0);
}

static int l_http_request(lua_State *L)
{
    return http_request(L, true);
}

static int l_http_send(lua_State *L)
{
    return http_request(L, false);
}

void mqr__lsink_http_register(lua_State *L)
{
    static const luaL_Reg methods[] = {{"_request", l_http_request},  {"_send", l_http_send},
                                       {"close", mqr__lsink_close_m}, {"stats", mqr__lsink_stats_m},
                                       {"name", mqr__lsink_name_m},   {NULL, NULL}};
    mqr__lua_class(L, HTTP_MT, methods, mqr__lsink_gc, NULL);
    luaL_getmetatable(L, HTTP_MT);
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "__sink");
    lua_pop(L, 1);
}

int mqr__lsink_http_new(lua_State *L)
{
    return l_http_new(L);
}
