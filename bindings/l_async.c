/*
 * l_async.c — handlers that wait: the C half of lua/host/async.lua.
 *
 * An async route (mq.route(filter, fn, { async = true })) runs its handler
 * in a coroutine through async.lua's run(). A handler that ends without
 * waiting is done, as a plain route's. One that waits becomes a job: the
 * message stays referenced until the coroutine ends and C.finished settles
 * it (counted, dead-lettered on an error). At most `concurrency` jobs run
 * per route; the next messages wait in the route's ring (max_pending), and
 * the publishers feeding a route with messages waiting are held (holds.h)
 * until the ring drains; a full ring refuses (MQR_EFULL: no room).
 *
 * A waiter (mqr__lwait_*) is how C answers resume a coroutine: it keeps a
 * reference to the coroutine and resumes it through async.lua's step(), so
 * that whoever started the coroutine learns when it ends.
 *
 * Loop thread. Must not: run Lua for a state that is ending, or keep a job
 * or waiter past its state.
 */
#include "script_int.h"

#include "router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const char mqr__lua_async[];
extern const size_t mqr__lua_async_len;

#define ASYNC_STEP_KEY "mqrouter.async_step"

/* An async route's message whose handler waits. */
typedef struct l_job {
    l_route_t *r;
    mqr_msg_t *msg;            /* NULL once a reload handed it to the new rules */
    uint64_t seq;              /* r->calls when it started: the older, the smaller */
    struct l_job *prev, *next; /* st->jobs */
} l_job_t;

struct l_wait {
    l_state_t *st;
    int co_ref;
    l_wait_t *prev, *next; /* st->waits */
};

/* ---- jobs ------------------------------------------------------------------ */

static void job_unlink(l_state_t *st, l_job_t *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        st->jobs = j->next;
    if (j->next) j->next->prev = j->prev;
}

static void pump(l_route_t *r);

/* Starts r's handler for msg. */
static void start(l_route_t *r, mqr_msg_t *msg)
{
    l_state_t *st = r->st;
    lua_State *L = st->L;
    l_job_t *j = malloc(sizeof *j);
    if (!j) {
        r->errors++;
        MQR_LOG_E("rules", "%s: out of memory for a waiting handler", r->name);
        return;
    }
    j->r = r;
    j->msg = msg;
    j->seq = ++r->calls;
    lua_rawgeti(L, LUA_REGISTRYINDEX, st->async_run_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->fn_ref);
    lua_pushlightuserdata(L, j);
    mqr__lmsg_push(L, msg);
    int rc = mqr__script_call_results(st, 3, 1, r->name, &r->errors, &r->budget_errors);
    if (rc < 0) { /* failed before waiting: counted and logged by the call */
        free(j);
        if (r->dead_letter) mqr__route_dead_letter(r, msg, st->host->last_error);
        return;
    }
    bool waiting = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (!waiting) {
        free(j);
        return;
    }
    mqr_msg_ref(msg);
    j->prev = NULL;
    j->next = st->jobs;
    if (st->jobs) st->jobs->prev = j;
    st->jobs = j;
    r->running++;
}

static mqr_msg_t *pending_pop(l_route_t *r)
{
    if (!r->pending_n) return NULL;
    mqr_msg_t *m = r->pending[r->pending_head];
    r->pending_head = (r->pending_head + 1) % r->pending_cap;
    r->pending_n--;
    return m;
}

static void pending_drop_all(l_route_t *r)
{
    for (mqr_msg_t *m; (m = pending_pop(r));) {
        r->abandoned++;
        mqr_msg_unref(m);
    }
    mqr__holds_release(&r->holds);
}

/* Starts waiting messages while there is room; lets the publishers go once
 * none wait. */
static void pump(l_route_t *r)
{
    l_state_t *st = r->st;
    while (r->pending_n && r->running < r->concurrency && st->active && !st->ending &&
           !r->stopped) {
        mqr_msg_t *m = pending_pop(r);
        start(r, m);
        mqr_msg_unref(m);
    }
    if (r->stopped || !st->active || st->ending) pending_drop_all(r);
    if (!r->pending_n) mqr__holds_release(&r->holds);
}

static int pending_push(l_route_t *r, mqr_msg_t *msg)
{
    if (r->pending_n == r->pending_cap) {
        uint32_t cap = r->pending_cap ? r->pending_cap * 2 : 64;
        if (cap > r->max_pending) cap = r->max_pending;
        mqr_msg_t **v = malloc(cap * sizeof *v);
        if (!v) return MQR_ENOMEM;
        for (uint32_t i = 0; i < r->pending_n; i++)
            v[i] = r->pending[(r->pending_head + i) % r->pending_cap];
        free(r->pending);
        r->pending = v;
        r->pending_cap = cap;
        r->pending_head = 0;
    }
    mqr_msg_ref(msg);
    r->pending[(r->pending_head + r->pending_n) % r->pending_cap] = msg;
    r->pending_n++;
    return 0;
}

int mqr__lasync_deliver(l_route_t *r, mqr_msg_t *msg)
{
    if (r->running < r->concurrency && !r->pending_n) {
        start(r, msg);
        return 0;
    }
    if (r->pending_n >= r->max_pending) {
        r->dropped++;
        if ((r->dropped & (r->dropped - 1)) == 0) /* 1st, 2nd, 4th... */
            MQR_LOG_W("rules",
                      "%s: %u handlers wait and %u messages are pending: refused (%llu so far)",
                      r->name, r->running, r->pending_n, (unsigned long long)r->dropped);
        return MQR_EFULL;
    }
    int rc = pending_push(r, msg);
    if (rc < 0) return rc;
    /* a publisher that can stop reading stops until the ring drains */
    mqr_source_t *src = mqr__router_source(mqr__engine_router(r->st->host->e));
    if (src) mqr__holds_add(&r->holds, src);
    return 0;
}

void mqr__lasync_route_stop(l_route_t *r)
{
    pending_drop_all(r);
    free(r->pending);
    r->pending = NULL;
    r->pending_cap = 0;
    mqr__holds_free(&r->holds);
}

/* C.finished(job, ok [, err]): a waiting handler ended. */
static int l_finished(lua_State *L)
{
    l_job_t *j = lua_touserdata(L, 1);
    if (!j) return 0;
    l_state_t *st = mqr__state_of(L);
    l_route_t *r = j->r;
    job_unlink(st, j);
    r->running--;
    if (!lua_toboolean(L, 2)) {
        const char *err = luaL_optstring(L, 3, "(no error message)");
        mqr_script_t *h = st->host;
        const char *tb = strstr(err, MQR_TRACEBACK_SEP);
        int msg_len = tb ? (int)(tb - err) : (int)strlen(err);
        snprintf(h->last_error, sizeof h->last_error, "%.*s", msg_len, err);
        r->errors++;
        h->handler_errors++;
        MQR_LOG_E("rules", "%s failed: %s", r->name, err);
        if (r->dead_letter) mqr__route_dead_letter(r, j->msg, h->last_error);
    }
    mqr_msg_unref(j->msg);
    free(j);
    pump(r);
    return 0;
}

void mqr__lasync_state_close(l_state_t *st)
{
    for (l_job_t *j = st->jobs, *next; j; j = next) {
        next = j->next;
        if (j->msg) {
            j->r->abandoned++;
            mqr_msg_unref(j->msg);
        }
        free(j);
    }
    st->jobs = NULL;
    for (l_route_t *r = st->routes; r; r = r->next)
        mqr__lasync_route_stop(r);
    /* A sink may answer after its state is gone (the file sink's last
     * batch): its waiters forget the state now and are freed by that
     * answer. */
    for (l_wait_t *w = st->waits, *next; w; w = next) {
        next = w->next;
        if (st->L) luaL_unref(st->L, LUA_REGISTRYINDEX, w->co_ref);
        w->st = NULL;
        w->prev = w->next = NULL;
    }
    st->waits = NULL;
}

/* ---- reloads --------------------------------------------------------------- */

static const char *route_session(const l_route_t *r)
{
    return r->upstream ? r->upstream->name : "";
}

static bool same_route(const l_route_t *a, const l_route_t *b)
{
    return a->async && b->async && strcmp(a->filter, b->filter) == 0 &&
           strcmp(route_session(a), route_session(b)) == 0;
}

/* The new state's route that stands for o: the k-th route like it there
 * when o is the k-th in its own state. */
static l_route_t *counterpart(l_state_t *st, const l_route_t *o)
{
    int k = 0;
    for (const l_route_t *q = o->st->routes; q != o; q = q->next)
        k += same_route(q, o);
    for (l_route_t *n = st->routes; n; n = n->next)
        if (!n->stopped && same_route(n, o) && k-- == 0) return n;
    return NULL;
}

static int job_older(const void *a, const void *b)
{
    uint64_t x = (*(l_job_t *const *)a)->seq, y = (*(l_job_t *const *)b)->seq;
    return (x > y) - (x < y);
}

static bool take_over(l_route_t *n, mqr_msg_t *m)
{
    return n->pending_n < n->max_pending && pending_push(n, m) == 0;
}

void mqr__lasync_takeover(l_state_t *st, l_state_t *old)
{
    for (l_route_t *o = old ? old->routes : NULL; o; o = o->next) {
        if (!o->async || (!o->running && !o->pending_n)) continue;
        l_route_t *n = counterpart(st, o);
        if (!n) continue; /* abandoned when the old state closes */
        size_t nj = 0;
        for (l_job_t *j = old->jobs; j; j = j->next)
            nj += j->r == o && j->msg;
        l_job_t **v = nj ? malloc(nj * sizeof *v) : NULL;
        size_t k = 0;
        for (l_job_t *j = old->jobs; v && j; j = j->next)
            if (j->r == o && j->msg) v[k++] = j;
        qsort(v, k, sizeof *v, job_older);
        uint64_t restarted = 0, handed = 0;
        for (size_t i = 0; i < k; i++) {
            if (!take_over(n, v[i]->msg)) continue;
            mqr_msg_unref(v[i]->msg);
            v[i]->msg = NULL;
            restarted++;
        }
        free(v);
        for (mqr_msg_t *m; (m = pending_pop(o)); mqr_msg_unref(m)) {
            if (take_over(n, m))
                handed++;
            else
                o->abandoned++;
        }
        MQR_LOG_I("rules",
                  "%s: the new rules took over %llu pending message(s) and %llu whose handler "
                  "was running (it runs again)",
                  n->name, (unsigned long long)handed, (unsigned long long)restarted);
    }
}

void mqr__lasync_wake(l_state_t *st)
{
    for (l_route_t *r = st->routes; r; r = r->next)
        if (r->async && r->pending_n) pump(r);
}

/* ---- waiters --------------------------------------------------------------- */

l_wait_t *mqr__lwait_begin(lua_State *L, const char *what)
{
    if (lua_pushthread(L)) { /* the main thread: nothing could resume it */
        lua_pop(L, 1);
        luaL_error(L,
                   "%s must be called from a coroutine (an async route or consumer, or "
                   "mq.spawn)",
                   what);
        return NULL;
    }
    l_state_t *st = mqr__state_of(L);
    l_wait_t *w = malloc(sizeof *w);
    if (!w) {
        lua_pop(L, 1);
        luaL_error(L, "%s: out of memory", what);
        return NULL;
    }
    w->st = st;
    w->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    w->prev = NULL;
    w->next = st->waits;
    if (st->waits) st->waits->prev = w;
    st->waits = w;
    return w;
}

static void wait_free(l_wait_t *w)
{
    l_state_t *st = w->st;
    if (!st) { /* orphaned by its state's close */
        free(w);
        return;
    }
    if (w->prev)
        w->prev->next = w->next;
    else
        st->waits = w->next;
    if (w->next) w->next->prev = w->prev;
    if (st->L) luaL_unref(st->L, LUA_REGISTRYINDEX, w->co_ref);
    free(w);
}

void mqr__lwait_cancel(l_wait_t *w)
{
    if (w) wait_free(w);
}

void mqr__lwait_resume(l_wait_t *w, int (*push)(lua_State *L, void *arg), void *arg)
{
    l_state_t *st = w->st;
    if (!st || !st->L || st->ending) {
        wait_free(w);
        return;
    }
    lua_State *L = st->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, st->async_step_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->co_ref);
    int n = push ? push(L, arg) : 0;
    wait_free(w);
    mqr__script_call(st, 1 + n, "a waiting handler", NULL, NULL);
}

/* ---- opening ---------------------------------------------------------------- */

void mqr__lasync_wrap_consumer(lua_State *L, const char *name, bool batch)
{
    l_state_t *st = mqr__state_of(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, st->async_wrap_ref);
    lua_insert(L, -2);
    lua_pushstring(L, name);
    lua_pushboolean(L, batch);
    lua_call(L, 3, 1);
}

void mqr__lasync_open(lua_State *L)
{
    l_state_t *st = mqr__state_of(L);
    int api = lua_gettop(L);
    if (luaL_loadbuffer(L, mqr__lua_async, mqr__lua_async_len, "=async") != 0)
        lua_error(L); /* a bug in async.lua: state_new runs this unprotected */
    lua_pushvalue(L, api);
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, l_finished);
    lua_setfield(L, -2, "finished");
    lua_pushcfunction(L, mqr__lua_traceback_fn);
    lua_setfield(L, -2, "traceback");
    lua_call(L, 2, 3);
    st->async_wrap_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, ASYNC_STEP_KEY); /* upstream.lua's C.resume */
    st->async_step_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    st->async_run_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}
