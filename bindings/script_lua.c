/*
 * script_lua.c — the rules' Lua states: creating one with the rules API and
 * an environment built from an allowlist (the sandbox: strict globals, a
 * require limited to text Lua files under the stdlib and the script's
 * directory), closing one with everything it declared, and the one
 * protected-call helper every call into Lua goes through (traceback, time
 * budget, counted errors).
 *
 * Must not: run Lua from any thread but the loop's, load bytecode, or let a
 * script reach the standard library past the allowlist.
 */
#include "script_int.h"

#include "budget.h"
#include "queue.h"

#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the sandbox -------------------------------------------------------- */

/* Builds the environment scripts run in: an allowlist of the standard
 * library, a require() limited to text Lua files under the stdlib and the
 * script's own directory, and strict globals (reading an undeclared one is
 * an error). Receives stdlib dir, script dir, the rules API table and a list
 * that gets the path of every file require loads; returns the env maker. */
/* lua/host/sandbox.lua, compiled in (bindings/embed_lua.cmake) */
extern const char mqr__lua_sandbox[];
extern const size_t mqr__lua_sandbox_len;

void mqr__lua_traceback_line(lua_State *L, lua_State *L1, const char *msg, int level)
{
    size_t mlen = msg ? strlen(msg) : 0;
    luaL_traceback(L, L1, msg, level); /* msg "\nstack traceback:" ("\n\t" frame)* */
    size_t n;
    const char *t = lua_tolstring(L, -1, &n);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    /* the message, its own line breaks turned into spaces */
    for (size_t i = 0; i < mlen && i < n; i++)
        luaL_addchar(&b, msg[i] == '\n' || msg[i] == '\r' ? ' ' : msg[i]);
    const char *frames = mlen <= n ? t + mlen : t;
    const char *head = strstr(frames, "stack traceback:");
    if (head) {
        luaL_addstring(&b, MQR_TRACEBACK_SEP);
        bool first = true;
        for (const char *p = head + strlen("stack traceback:"); *p;) {
            while (*p == '\n' || *p == '\t' || *p == ' ')
                p++;
            if (!*p) break;
            const char *end = strchr(p, '\n');
            size_t len = end ? (size_t)(end - p) : strlen(p);
            if (!first) luaL_addstring(&b, " <- ");
            luaL_addlstring(&b, p, len);
            first = false;
            p += len;
        }
    }
    luaL_pushresult(&b);
    lua_remove(L, -2); /* [-0, +1] */
}

/* The message handler of every protected call: the error and where it came
 * from, on one line (a log entry is one line). */
static int l_traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    mqr__lua_traceback_line(L, L, msg, 1);
    return 1;
}

/* traceback(co | msg [, msg]) for the Lua halves (lua/host/upstream.lua): debug.traceback
 * on one line. */
int mqr__lua_traceback_fn(lua_State *L)
{
    lua_State *L1 = lua_type(L, 1) == LUA_TTHREAD ? lua_tothread(L, 1) : L;
    int arg = L1 == L ? 1 : 2;
    const char *msg = lua_tostring(L, arg);
    mqr__lua_traceback_line(L, L1, msg ? msg : "", L1 == L ? 1 : 0);
    return 1;
}

char *mqr__script_dir_of(const char *path)
{
    const char *slash = path ? strrchr(path, '/') : NULL;
    if (!slash) return strdup(".");
    size_t n = (size_t)(slash - path);
    char *d = malloc(n + 2);
    if (!d) return NULL;
    memcpy(d, path, n ? n : 1);
    d[n ? n : 1] = '\0';
    return d;
}

l_state_t *mqr__state_new(mqr_script_t *h, const char *chunkname, const char *path, char **errmsg)
{
    l_state_t *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    st->host = h;
    st->chunkname = strdup(chunkname);
    st->L = luaL_newstate();
    if (!st->L || !st->chunkname) {
        if (errmsg) *errmsg = strdup("cannot create a Lua state: out of memory");
        mqr__state_close(st);
        return NULL;
    }
    lua_State *L = st->L;
    luaL_openlibs(L);
    lua_pushlightuserdata(L, (void *)&mqr__state_of);
    lua_pushlightuserdata(L, st);
    lua_rawset(L, LUA_REGISTRYINDEX);

    lua_pushcfunction(L, l_traceback);
    st->traceback_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    mqr__lmsg_register(L, &st->lmsg_make_ref, &st->lmsg_deliver_ref);
    mqr__lupstream_register(L);
    mqr__llisten_register(L);
    mqr__lqueue_register(L);
    mqr__lsub_register(L);
    mqr__liter_register(L);
    mqr__lsink_file_register(L);
    mqr__lsink_http_register(L);
    mqr__lsink_redis_register(L);
    mqr__lsink_pg_register(L);

    /* env maker = sandbox(stdlib_dir, script_dir, rules_api) */
    if (luaL_loadbuffer(L, mqr__lua_sandbox, mqr__lua_sandbox_len, "=sandbox") != 0) {
        if (errmsg) *errmsg = strdup(lua_tostring(L, -1));
        mqr__state_close(st);
        return NULL;
    }
    lua_pushstring(L, mqr__script_stdlib_dir());
    char *sdir = mqr__script_dir_of(path);
    lua_pushstring(L, sdir ? sdir : ".");
    free(sdir);
    mqr__rules_open(L);
    mqr__lua_name_table(L, -1, "mq", 1); /* the C functions, before Lua wraps any */
    mqr__lauth_open(L);
    mqr__lasync_open(L);
    mqr__lupstream_open(L);
    mqr__lsink_open(L);
    mqr__lkv_open(L);
    mqr__lregistry_open(L);
    mqr__lua_name_table(L, -1, "mq", 1);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, "mqrouter.api");
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, MODULES_KEY);
    if (lua_pcall(L, 4, 1, 0) != 0) {
        if (errmsg) *errmsg = strdup(lua_tostring(L, -1));
        mqr__state_close(st);
        return NULL;
    }
    lua_call(L, 0, 1); /* the env of the main script */
    st->env_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return st;
}

l_state_t *mqr__state_of(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&mqr__state_of);
    lua_rawget(L, LUA_REGISTRYINDEX);
    l_state_t *st = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return st;
}

/* Stops everything a state declared and frees it (the struct itself after
 * its timer handles have closed). */
void mqr__state_close(l_state_t *st)
{
    if (!st) return;
    mqr_engine_t *e = st->host->e;
    st->ending = true; /* from here on, no Lua runs for it: answers are dropped */
    mqr__lsink_state_close(st);
    mqr__lasync_state_close(st);
    for (l_route_t *r = st->routes, *next; r; r = next) {
        next = r->next;
        if (r->entry) mqr__router_remove(mqr__engine_router(e), r->entry);
        if (r->entry && r->upstream && r->upstream->u)
            mqr__upstream_unsubscribe(r->upstream->u, r->filter);
        if (r->queue) mqr__queue_unref(r->queue);
        free(r->filter);
        free(r->name);
        free(r->dead_letter);
        free(r);
    }
    st->routes = NULL;
    st->routes_tail = &st->routes;
    for (size_t i = 0; i < st->n_modules; i++)
        free(st->modules[i]);
    free(st->modules);
    st->modules = NULL;
    st->n_modules = 0;
    mqr__lqueue_state_close(st); /* its consumers call into st->L */
    mqr__lsub_state_close(st);
    mqr__liter_state_close(st);
    l_timer_t *timers = st->timers;
    st->timers = NULL;
    if (st->L) lua_close(st->L);
    st->L = NULL;
    st->closing = true;
    for (l_timer_t *t = timers, *next; t; t = next) {
        next = t->next;
        t->stopped = true;
        uv_close((uv_handle_t *)&t->handle, mqr__timer_closed);
    }
    if (st->open_timers == 0) {
        free(st->chunkname);
        free(st);
    }
}

/* ---- protected calls ------------------------------------------------------ */

int mqr__script_call(l_state_t *st, int nargs, const char *what, uint64_t *errors,
                     uint64_t *budget_errors)
{
    return mqr__script_call_results(st, nargs, 0, what, errors, budget_errors);
}

/* The protected call under the budget, st's traceback function at base
 * under the function and its nargs arguments. On success nresults results
 * are left above base; on error nothing is (base included). */
static int call_at(l_state_t *st, int base, int nargs, int nresults, const char *what,
                   uint64_t *errors, uint64_t *budget_errors)
{
    lua_State *L = st->L;
    mqr_script_t *h = st->host;
    h->call_depth++;
    if (h->budget) mqr__budget_enter(h->budget, L);
    int rc = lua_pcall(L, nargs, nresults, base);
    bool tripped = h->budget ? mqr__budget_leave(h->budget) : false;
    h->call_depth--;
    if (rc == 0) return 0;
    const char *err = lua_tostring(L, -1);
    if (!err) err = "(no error message)";
    /* last_error: the message without its traceback */
    const char *tb = strstr(err, MQR_TRACEBACK_SEP);
    int msg_len = tb ? (int)(tb - err) : (int)strlen(err);
    snprintf(h->last_error, sizeof h->last_error, "%.*s", msg_len, err);
    if (errors) (*errors)++;
    h->handler_errors++;
    if (tripped) {
        if (budget_errors) (*budget_errors)++;
        h->budget_errors++;
        MQR_LOG_E("rules", "%s stopped: exceeded its time budget of %u ms (%s)", what,
                  mqr__engine_handler_budget_ms(h->e), err);
    } else {
        MQR_LOG_E("rules", "%s failed: %s", what, err);
    }
    lua_pop(L, 2); /* error, traceback function */
    return tripped ? MQR_EBUDGET : MQR_ESCRIPT;
}

int mqr__script_call_results(l_state_t *st, int nargs, int nresults, const char *what,
                             uint64_t *errors, uint64_t *budget_errors)
{
    lua_State *L = st->L;
    int base = lua_gettop(L) - nargs;
    lua_rawgeti(L, LUA_REGISTRYINDEX, st->traceback_ref);
    lua_insert(L, base);
    int rc = call_at(st, base, nargs, nresults, what, errors, budget_errors);
    if (rc == 0) lua_remove(L, base);
    return rc;
}

void mqr__script_push_traceback(l_state_t *st)
{
    lua_rawgeti(st->L, LUA_REGISTRYINDEX, st->traceback_ref);
}

int mqr__script_call_pushed(l_state_t *st, int nargs, const char *what, uint64_t *errors,
                            uint64_t *budget_errors)
{
    lua_State *L = st->L;
    int base = lua_gettop(L) - nargs - 1;
    int rc = call_at(st, base, nargs, 0, what, errors, budget_errors);
    if (rc == 0) lua_pop(L, 1); /* the traceback function, now on top */
    return rc;
}
