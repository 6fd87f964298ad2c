/*
 * l_admin.c — the admin API as the rules see it, and what the bindings tell
 * the admin API about the rules.
 *
 * mq.admin{host, port, tokens, tokens_file} starts the engine's admin HTTP
 * server (core/admin/) or, when it already runs on that address, replaces
 * its tokens; it returns the bound port. The hooks answer for the running
 * state: its routes and their counters and latency histograms, reload, and
 * the Lua memory of the states. Nothing here runs Lua for the API.
 */
#include "script.h"

#include "queue.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- hooks ---- */

static void hook_rules_info(void *ctx, mqr_admin_rules_info_t *out)
{
    mqr_script_t *h = ctx;
    out->path = h->path;
    out->loaded = h->cur != NULL;
    out->reloads = h->reloads;
    out->reload_failures = h->reload_failures;
    out->handler_errors = h->handler_errors;
    out->budget_errors = h->budget_errors;
    out->last_error = h->last_error;
}

static void hook_foreach_route(void *ctx, void (*fn)(void *arg, const mqr_admin_route_t *r),
                               void *arg)
{
    mqr_script_t *h = ctx;
    if (!h->cur) return;
    /* st->routes is newest first: walk it into declaration order */
    size_t n = 0;
    for (const l_route_t *r = h->cur->routes; r; r = r->next)
        n++;
    const l_route_t **v = n ? malloc(n * sizeof *v) : NULL;
    if (n && !v) return;
    size_t i = n;
    for (const l_route_t *r = h->cur->routes; r; r = r->next)
        v[--i] = r;
    char target[256];
    for (i = 0; i < n; i++) {
        const l_route_t *r = v[i];
        if (r->queue)
            snprintf(target, sizeof target, "queue:%s", mqr__queue_name(r->queue));
        else
            snprintf(target, sizeof target, "handler");
        mqr_admin_route_t ar = {
            .name = r->name,
            .filter = r->filter,
            .target = target,
            .session = r->session ? r->session->name : NULL,
            .calls = r->calls,
            .errors = r->errors,
            .budget_errors = r->budget_errors,
            .dead_lettered = r->dead_lettered,
            .active = r->entry != NULL && !r->stopped,
            .latency = r->queue ? NULL : &r->latency,
        };
        fn(arg, &ar);
    }
    free(v);
}

static int hook_reload(void *ctx, char **errmsg)
{
    mqr_script_t *h = ctx;
    return mqr_engine_reload(h->e, errmsg);
}

static size_t state_mem(const l_state_t *st)
{
    if (!st || !st->L) return 0;
    return (size_t)lua_gc(st->L, LUA_GCCOUNT, 0) * 1024u + (size_t)lua_gc(st->L, LUA_GCCOUNTB, 0);
}

static size_t hook_lua_memory(void *ctx)
{
    mqr_script_t *h = ctx;
    return state_mem(h->cur) + state_mem(h->loading);
}

void mqr__ladmin_hooks(mqr_script_t *h)
{
    h->admin_hooks = (mqr_admin_hooks_t){
        .ctx = h,
        .rules_info = hook_rules_info,
        .foreach_route = hook_foreach_route,
        .reload = hook_reload,
        .lua_memory = hook_lua_memory,
    };
    h->e->admin_hooks = &h->admin_hooks;
}

/* ---- mq.admin ---- */

/* mq.admin{host = "127.0.0.1", port = 8081, tokens = {...}, tokens_file = path}
 * -> port | nil, err, name */
int mqr__ladmin(lua_State *L)
{
    l_state_t *st = lua_touserdata(L, lua_upvalueindex(1));
    mqr_engine_t *e = st->host->e;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "host");
    const char *host = luaL_optstring(L, -1, "127.0.0.1");
    lua_getfield(L, 1, "port");
    int port = (int)luaL_checkinteger(L, -1);
    if (port < 0 || port > 65535) return luaL_argerror(L, 1, "port must be 0..65535");
    lua_getfield(L, 1, "tokens_file");
    const char *file = luaL_optstring(L, -1, NULL);
    lua_getfield(L, 1, "tokens");
    int tidx = lua_gettop(L);
    if (!lua_isnil(L, tidx)) luaL_checktype(L, tidx, LUA_TTABLE);
    size_t nt = lua_isnil(L, tidx) ? 0 : lua_objlen(L, tidx);
    for (size_t i = 1; i <= nt; i++) {
        lua_rawgeti(L, tidx, (int)i);
        if (lua_type(L, -1) != LUA_TSTRING || lua_objlen(L, -1) == 0)
            return luaL_argerror(L, 1, "tokens must be non-empty strings");
        lua_pop(L, 1);
    }
    char **ftok = NULL;
    size_t nf = 0;
    char *err = NULL;
    if (file) {
        int rc = mqr_admin_tokens_read(file, &ftok, &nf, &err);
        if (rc < 0) {
            lua_pushnil(L);
            lua_pushstring(L, err ? err : mqr_strerror(rc));
            lua_pushstring(L, mqr_err_name(rc));
            free(err);
            return 3;
        }
    }
    const char **all = calloc(nt + nf + 1, sizeof *all);
    if (!all) {
        mqr_admin_tokens_free(ftok, nf);
        return luaL_error(L, "out of memory");
    }
    for (size_t i = 0; i < nt; i++) {
        lua_rawgeti(L, tidx, (int)i + 1);
        all[i] = lua_tostring(L, -1); /* the table keeps it alive */
        lua_pop(L, 1);
    }
    for (size_t i = 0; i < nf; i++)
        all[nt + i] = ftok[i];
    int rc;
    if (e->admin) {
        const char *h = mqr__admin_host(e->admin);
        bool same = (strcmp(host, h) == 0 ||
                     (strcmp(host, "localhost") == 0 && strcmp(h, "127.0.0.1") == 0)) &&
                    (port == 0 || port == mqr__admin_port(e->admin));
        if (same) {
            rc = mqr__admin_set_tokens(e->admin, all, nt + nf);
            if (rc < 0)
                err = strdup(nt + nf ? "a token entry is malformed (TOKEN or TOKEN tenant=NAME)"
                                     : "the admin API on a non-loopback address needs tokens");
        } else {
            rc = MQR_EEXIST;
            err = strdup("the admin API already runs on another address (restart to move it)");
        }
    } else {
        rc = mqr__admin_start(e, host, port, all, nt + nf, &err);
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
    lua_pushinteger(L, e->admin ? mqr__admin_port(e->admin) : port);
    return 1;
}
