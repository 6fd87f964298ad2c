/*
 * l_admin.c — the admin API as the rules see it, and what the bindings tell
 * the admin API about the rules.
 *
 * mq.admin{host, port, tokens, tokens_file, hosts, origins, require_token}
 * starts the engine's admin HTTP server (core/admin/) or, when it already
 * runs on that address, replaces its tokens, Host names, origins and token
 * requirement (all or nothing); it returns the bound port. The hooks answer for the running
 * state: its routes and their counters and latency histograms, reload, and
 * the Lua memory of the states. Nothing here runs Lua for the API.
 */
#include "script.h"

#include "queue.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- what the admin API asks the script host (engine.h mqr_host_ops_t) ---- */

void mqr__ladmin_rules_info(void *ctx, mqr_admin_rules_info_t *out)
{
    mqr_script_t *h = ctx;
    out->path = h->path;
    out->loaded = h->cur != NULL;
    out->reloads = h->reloads;
    out->reload_failures = h->reload_failures;
    out->handler_errors = h->handler_errors;
    out->budget_errors = h->budget_errors;
    out->reload_dropped = h->reload_dropped;
    out->last_reload_error = h->last_reload_error;
    out->last_reload_error_at = (double)h->last_reload_error_at / 1000.0;
    out->last_error = h->last_error;
}

void mqr__ladmin_foreach_route(void *ctx, void (*fn)(void *arg, const mqr_admin_route_t *r),
                               void *arg)
{
    mqr_script_t *h = ctx;
    if (!h->cur) return;
    char target[256];
    /* st->routes is in declaration order */
    for (const l_route_t *r = h->cur->routes; r; r = r->next) {
        if (r->queue)
            snprintf(target, sizeof target, "queue:%s", mqr__queue_name(r->queue));
        else
            snprintf(target, sizeof target, "handler");
        mqr_admin_route_t ar = {
            .name = r->name,
            .filter = r->filter,
            .target = target,
            .session = r->upstream ? r->upstream->name : NULL,
            .calls = r->calls,
            .errors = r->errors,
            .budget_errors = r->budget_errors,
            .dead_lettered = r->dead_lettered,
            .active = r->entry != NULL && !r->stopped,
            .latency = r->queue ? NULL : &r->latency,
        };
        fn(arg, &ar);
    }
}

static size_t state_mem(const l_state_t *st)
{
    if (!st || !st->L) return 0;
    return (size_t)lua_gc(st->L, LUA_GCCOUNT, 0) * 1024u + (size_t)lua_gc(st->L, LUA_GCCOUNTB, 0);
}

size_t mqr__ladmin_lua_memory(void *ctx)
{
    mqr_script_t *h = ctx;
    return state_mem(h->cur) + state_mem(h->loading);
}

/* ---- mq.admin ---- */

/* The length of the list opt of the options table at 1; raises naming the
 * option when it is not a list of non-empty strings. [-0, +0] */
static size_t check_list(lua_State *L, const char *opt)
{
    lua_getfield(L, 1, opt);
    int t = lua_gettop(L);
    if (!lua_isnil(L, t) && !lua_istable(L, t))
        luaL_error(L, "admin: %s must be a list of strings, got %s", opt, luaL_typename(L, t));
    size_t n = lua_isnil(L, t) ? 0 : lua_objlen(L, t);
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, t, (int)i);
        if (lua_type(L, -1) != LUA_TSTRING || lua_objlen(L, -1) == 0)
            luaL_error(L, "admin: %s[%d] must be a non-empty string, got %s", opt, (int)i,
                       luaL_typename(L, -1));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return n;
}

/* Points v[0..n) at the strings of the (checked) list opt; the options
 * table keeps them alive. [-0, +0] */
static void fill_list(lua_State *L, const char *opt, const char **v, size_t n)
{
    lua_getfield(L, 1, opt);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, -1, (int)i + 1);
        v[i] = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static const char *const admin_options[] = {"host",  "port",    "tokens",        "tokens_file",
                                            "hosts", "origins", "require_token", NULL};

/* mq.admin{host = "127.0.0.1", port = 8081, tokens = {...}, tokens_file = path,
 *          hosts = {...}, origins = {...}, require_token = false}
 * -> port | nil, err, name */
int mqr__ladmin(lua_State *L)
{
    l_state_t *st = lua_touserdata(L, lua_upvalueindex(1));
    mqr_engine_t *e = st->host->e;
    mqr__lua_check_options(L, 1, "admin", admin_options);
    lua_settop(L, 1);
    mqr_admin_options_t o;
    mqr_admin_options_init(&o);
    lua_getfield(L, 1, "host");
    if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
        return luaL_error(L, "admin: host must be an IP address string, got %s",
                          luaL_typename(L, -1));
    o.host = luaL_optstring(L, -1, "127.0.0.1");
    lua_getfield(L, 1, "port");
    if (!lua_isnumber(L, -1) || lua_tonumber(L, -1) != (lua_Number)lua_tointeger(L, -1))
        return luaL_error(L, "admin: port must be an integer 0..65535, got %s",
                          luaL_typename(L, -1));
    o.port = (int)lua_tointeger(L, -1);
    if (o.port < 0 || o.port > 65535)
        return luaL_error(L, "admin: port must be 0..65535, got %d", o.port);
    lua_getfield(L, 1, "require_token");
    if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
        return luaL_error(L, "admin: require_token must be a boolean, got %s",
                          luaL_typename(L, -1));
    o.require_token = lua_toboolean(L, -1);
    lua_getfield(L, 1, "tokens_file");
    if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
        return luaL_error(L, "admin: tokens_file must be a path string, got %s",
                          luaL_typename(L, -1));
    const char *file = lua_tostring(L, -1);
    lua_settop(L, 1);
    /* everything that can raise is checked before anything is allocated */
    size_t nt = check_list(L, "tokens"), nh = check_list(L, "hosts"), no = check_list(L, "origins");
    char **ftok = NULL;
    size_t nf = 0;
    char *err = NULL;
    if (file) {
        int rc = mqr_admin_tokens_read(file, &ftok, &nf, &err);
        if (rc < 0) {
            lua_pushnil(L);
            lua_pushfstring(L, "%s: %s", mqr_err_name(rc), err ? err : mqr_strerror(rc));
            lua_pushstring(L, mqr_err_name(rc));
            free(err);
            return 3;
        }
    }
    const char **all = calloc(nt + nf + nh + no + 1, sizeof *all);
    if (!all) {
        mqr_admin_tokens_free(ftok, nf);
        return mqr__lua_fail(L, MQR_ENOMEM, "admin");
    }
    const char **hosts = all + nt + nf, **origins = hosts + nh;
    fill_list(L, "tokens", all, nt);
    fill_list(L, "hosts", hosts, nh);
    fill_list(L, "origins", origins, no);
    for (size_t i = 0; i < nf; i++)
        all[nt + i] = ftok[i];
    o.tokens = all;
    o.ntokens = nt + nf;
    o.hosts = hosts;
    o.nhosts = nh;
    o.origins = origins;
    o.norigins = no;
    int rc;
    if (mqr__engine_admin(e)) {
        const char *h = mqr__admin_host(mqr__engine_admin(e));
        bool same = (strcmp(o.host, h) == 0 ||
                     (strcmp(o.host, "localhost") == 0 && strcmp(h, "127.0.0.1") == 0)) &&
                    (o.port == 0 || o.port == mqr__admin_port(mqr__engine_admin(e)));
        if (same) {
            rc = mqr__admin_configure(mqr__engine_admin(e), &o, &err);
        } else {
            rc = MQR_EEXIST;
            err = strdup("the admin API already runs on another address (restart to move it)");
        }
    } else {
        rc = mqr__admin_start(e, &o, &err);
    }
    free(all);
    mqr_admin_tokens_free(ftok, nf);
    if (rc < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", mqr_err_name(rc), err ? err : mqr_strerror(rc));
        lua_pushstring(L, mqr_err_name(rc));
        free(err);
        return 3;
    }
    free(err);
    lua_pushinteger(L, mqr__engine_admin(e) ? mqr__admin_port(mqr__engine_admin(e)) : o.port);
    return 1;
}
