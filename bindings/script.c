/*
 * script.c — the script host: one per engine, created on the first load; a
 * load or reload as a transaction (a new state runs the script to its end,
 * then takes over from the serving one in one stretch of loop-thread code);
 * and the public API (mqr_engine_load_file, _load_string, _reload).
 *
 * The other parts of the host have a file each, as Redis splits script.c,
 * script_lua.c and eval.c: Lua states, the sandbox and protected calls
 * (script_lua.c), files, require's modules and watching (script_load.c),
 * routes, timers and the fake clock (script_route.c); script_int.h is what
 * they share.
 *
 * A reload never touches the serving state until the new script has run to
 * its end without error: only then are the old routes and timers swapped for
 * the new ones, and any failure before leaves the old rules running. Must
 * not: run Lua from any thread but the loop's, or close the serving state
 * before its successor is ready.
 */
#include "script_int.h"

#include "budget.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- reload as a transaction ---------------------------------------------- */

/* Swaps the serving rules for st's. Returns < 0 (and changes nothing) when
 * a subscription cannot be added. */
static int state_activate(mqr_script_t *h, l_state_t *st, char **errmsg)
{
    mqr_engine_t *e = h->e;
    for (l_route_t *r = st->routes; r; r = r->next) {
        if (r->stopped) continue;
        mqr_sub_opts_t opts = {.qos = (uint8_t)r->qos};
        r->entry =
            mqr__router_add(mqr__engine_router(e), r->filter, strlen(r->filter), &r->base, &opts);
        if (!r->entry) {
            for (l_route_t *q = st->routes; q != r; q = q->next) {
                if (q->entry) mqr__router_remove(mqr__engine_router(e), q->entry);
                q->entry = NULL;
            }
            if (errmsg) *errmsg = strdup("out of memory adding routes");
            return MQR_ENOMEM;
        }
    }
    /* New session subscriptions first, so a filter both scripts want is
     * never unsubscribed upstream in between. */
    for (l_route_t *r = st->routes; r; r = r->next)
        if (r->entry && r->upstream && r->upstream->u)
            mqr__upstream_subscribe(r->upstream->u, r->filter, r->qos);

    l_state_t *old = h->cur;
    h->cur = st;
    st->active = true;
    /* What waits in the old state's buffers goes to the new one's before
     * the old state closes, and before any Lua of the new state runs (the
     * events flushed below), so it comes ahead of anything newer. */
    mqr__lsub_takeover(st, old);
    mqr__liter_takeover(st, old);
    mqr__lasync_takeover(st, old);
    if (old) {
        old->active = false;
        mqr__state_close(old);
    }
    mqr__lupstream_activate(h, st);
    mqr__lauth_activate(h, st); /* the new state's hooks, or none */
    mqr__llisten_activate(h, st);
    mqr__lqueue_activate(h, st);
    for (l_timer_t *t = st->timers; t; t = t->next) {
        if (t->stopped) continue;
        mqr__timer_start(t);
    }
    mqr__liter_wake(st);  /* coroutines waiting on iterators that were handed messages */
    mqr__lasync_wake(st); /* async routes that took messages over */
    return 0;
}

int mqr__script_load_code(mqr_script_t *h, const char *chunkname, const char *path,
                          const char *code, size_t len, char **errmsg)
{
    if (h->loading) {
        if (errmsg) *errmsg = strdup("a reload is already in progress");
        return MQR_ESCRIPT;
    }
    l_state_t *st = mqr__state_new(h, chunkname, path, errmsg);
    if (!st) return MQR_ENOMEM;
    lua_State *L = st->L;
    h->loading = st;
    int rc = mqr__lcfunc_install(h, st, errmsg); /* the host's C functions (mqrouter_lua.h) */
    if (rc < 0) goto fail;
    if (luaL_loadbufferx(L, code, len, chunkname, "t") != 0) {
        if (errmsg) *errmsg = strdup(lua_tostring(L, -1));
        rc = MQR_ESCRIPT;
        goto fail;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, st->env_ref);
    lua_setfenv(L, -2);
    /* run the top level like a handler: protected, traced, within budget */
    lua_rawgeti(L, LUA_REGISTRYINDEX, st->traceback_ref);
    lua_insert(L, -2);
    h->call_depth++;
    if (h->budget) mqr__budget_enter(h->budget, L);
    int prc = lua_pcall(L, 0, 0, -2);
    bool tripped = h->budget ? mqr__budget_leave(h->budget) : false;
    h->call_depth--;
    mqr__script_collect_modules(st);
    mqr__script_watch_modules(h, st); /* a failed load's too: fixing one of them is a change */
    if (prc != 0) {
        const char *err = lua_tostring(L, -1);
        if (errmsg) {
            if (tripped) {
                char buf[256];
                snprintf(buf, sizeof buf,
                         "script exceeded its time budget of %u ms while loading: ",
                         mqr__engine_handler_budget_ms(h->e));
                size_t n = strlen(buf) + strlen(err ? err : "") + 1;
                *errmsg = malloc(n);
                if (*errmsg) snprintf(*errmsg, n, "%s%s", buf, err ? err : "");
            } else {
                *errmsg = strdup(err ? err : "error loading script");
            }
        }
        rc = tripped ? MQR_EBUDGET : MQR_ESCRIPT;
        goto fail;
    }
    lua_settop(L, 0);
    h->loading = NULL;
    rc = state_activate(h, st, errmsg);
    if (rc < 0) {
        h->loading = st;
        goto fail;
    }
    return 0;
fail:
    h->loading = NULL;
    mqr__lupstream_abandon(h, st);
    mqr__llisten_abandon(h, st);
    mqr__lqueue_abandon(h, st);
    mqr__state_close(st);
    return rc;
}

/* ---- engine hooks and public API ----------------------------------------- */

static void host_stop(void *arg)
{
    mqr_script_t *h = arg;
    mqr__script_stop_watch(h);
    if (h->debounce_init) {
        uv_close((uv_handle_t *)&h->debounce, NULL);
        h->debounce_init = false;
    }
    if (h->cur)
        for (l_timer_t *t = h->cur->timers; t; t = t->next)
            uv_timer_stop(&t->handle);
    /* Sinks hold connections and reconnect timers that would keep the
     * loop running: they close now, and their answers run no more Lua. */
    l_state_t *states[] = {h->cur, h->loading};
    for (int i = 0; i < 2; i++) {
        if (!states[i]) continue;
        states[i]->ending = true;
        mqr__lsink_state_close(states[i]);
    }
}

static void host_free(void *arg)
{
    mqr_script_t *h = arg;
    host_stop(h);
    mqr__lauth_close(h); /* no hook may reach the state closing below */
    mqr__lregistry_close(h);
    mqr__state_close(h->cur);
    h->cur = NULL;
    mqr__lupstream_close_all(h);
    mqr__llisten_close_all(h);
    mqr__lqueue_close_all(h);
    mqr__lkv_free(h);
    mqr__lcfunc_free_all(h);
    if (h->budget) mqr__budget_free(h->budget);
    for (size_t i = 0; i < h->n_watch_files; i++)
        free(h->watch_files[i]);
    free(h->watch_files);
    free(h->path);
    free(h);
}

static int host_reload(void *host, char **errmsg)
{
    mqr_script_t *h = host;
    return mqr_engine_reload(h->e, errmsg);
}

static const mqr_host_ops_t host_ops = {
    .stop = host_stop,
    .free = host_free,
    .reload = host_reload,
    .rules_info = mqr__ladmin_rules_info,
    .foreach_route = mqr__ladmin_foreach_route,
    .lua_memory = mqr__ladmin_lua_memory,
    .authenticate = mqr__lauth_authenticate,
    .authorize = mqr__lauth_authorize,
};

mqr_script_t *mqr__script_host(mqr_engine_t *e)
{
    mqr_script_t *h = mqr__script_of(e);
    if (h) return h;
    h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->e = e;
    unsigned budget_ms = mqr__engine_handler_budget_ms(e);
    if (budget_ms != MQR_BUDGET_OFF) {
        int rc = mqr__budget_new(&h->budget, budget_ms);
        if (rc < 0) MQR_LOG_W("rules", "handler budget unavailable: %s", mqr_strerror(rc));
    }
    mqr__engine_set_host(e, &host_ops, h);
    return h;
}

int mqr_engine_load_file(mqr_engine_t *e, const char *path, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    mqr_script_t *h = mqr__script_host(e);
    if (!h) return MQR_ENOMEM;
    char *p = strdup(path);
    if (!p) return MQR_ENOMEM;
    char *old = h->path;
    h->path = p;
    int rc = mqr__script_reload_file(h, false, errmsg);
    if (rc < 0) {
        h->path = old;
        free(p);
        return rc;
    }
    free(old);
    mqr__script_start_watch(h);
    return 0;
}

int mqr_engine_load_string(mqr_engine_t *e, const char *name, const char *code, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    mqr_script_t *h = mqr__script_host(e);
    if (!h) return MQR_ENOMEM;
    char chunk[256];
    snprintf(chunk, sizeof chunk, "=%s", name ? name : "rules");
    bool had = h->cur != NULL;
    int rc = mqr__script_load_code(h, chunk, NULL, code, strlen(code), errmsg);
    if (had) {
        if (rc < 0) {
            h->reload_failures++;
            mqr__script_note_reload_failure(h, errmsg ? *errmsg : NULL);
        } else {
            h->reloads++;
            h->reload_failing = false;
        }
    }
    return rc;
}

int mqr_engine_reload(mqr_engine_t *e, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    mqr_script_t *h = mqr__script_of(e);
    if (!h || !h->path) {
        if (errmsg) *errmsg = strdup("no script file loaded");
        return MQR_ENOENT;
    }
    return mqr__script_reload_file(h, false, errmsg);
}
