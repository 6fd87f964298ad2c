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

/* C._http_new{ name, base_url, timeout, connect_timeout, max_in_flight,
 * max_queued, max_host_connections, max_response_bytes, ca, cert, key,
 * insecure, transport } -> client (headers and base_url are the Lua half's) */
static int l_http_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    mqr_http_opts_t o = {0};
    static const char what[] = "mq.http";
    o.name = mqr__lsink_opt_str(L, what, "name");
    o.target = mqr__lsink_opt_str(L, what, "base_url");
    o.timeout_ms = mqr__lsink_opt_ms(L, what, "timeout", 3600);
    o.connect_timeout_ms = mqr__lsink_opt_ms(L, what, "connect_timeout", 600);
    o.max_in_flight = (uint32_t)mqr__lsink_opt_count(L, what, "max_in_flight", 1, 100000);
    o.max_queued = (uint32_t)mqr__lsink_opt_count(L, what, "max_queued", 1, 10000000);
    o.max_host_connections =
        (uint32_t)mqr__lsink_opt_count(L, what, "max_host_connections", 1, 10000);
    o.max_response_bytes =
        (uint32_t)mqr__lsink_opt_count(L, what, "max_response_bytes", 1, 1 << 30);
    o.ca_file = mqr__lsink_opt_str(L, what, "ca");
    o.cert_file = mqr__lsink_opt_str(L, what, "cert");
    o.key_file = mqr__lsink_opt_str(L, what, "key");
    lua_getfield(L, 1, "insecure");
    o.insecure = lua_toboolean(L, -1);
    lua_pop(L, 1);
    const char *transport = mqr__lsink_opt_str(L, what, "transport");
    if (transport && strcmp(transport, "curl") != 0 && strcmp(transport, "native") != 0)
        return luaL_error(L, "mq.http: transport must be \"native\" or \"curl\", not \"%s\"",
                          transport);
    o.curl_only = transport && strcmp(transport, "curl") == 0;
    l_state_t *st = mqr__state_of(L);
    mqr__lsink_check_name(L, what, o.name ? o.name : "http");
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
    return mqr__lsink_given(L, rc, w, why);
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
    static const luaL_Reg methods[] = {
        {"_request", l_http_request}, {"_send", l_http_send}, {NULL, NULL}};
    mqr__lsink_register(L, HTTP_MT, methods);
}

int mqr__lsink_http_new(lua_State *L)
{
    return l_http_new(L);
}
