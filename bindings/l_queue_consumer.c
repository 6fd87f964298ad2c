/*
 * l_queue_consumer.c — taking messages out of a queue: q:consume(fn [,
 * { prefetch, batch }]) (push: the handler runs per message or per batch)
 * and q:receive([n]) (pull), and the consumer handles (metatable
 * "mqrouter.queue.consumer": cancel, stats).
 *
 * A consumer belongs to the state that declared it: it starts when that
 * state takes over (or at once, declared at run time) and is cancelled when
 * it closes. Handlers run through mqr__script_call_results (budget,
 * traceback, error counting): a normal return acks, false or an error
 * nacks, msg:defer() keeps the message in flight. Must not: run Lua for a
 * state that is not serving, or keep a core consumer past its state.
 */
#include "l_queue_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RECEIVE 1024

static bool handler_ok(lua_State *L, int rc)
{
    if (rc < 0) return false;
    bool ok = !(lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1));
    lua_pop(L, 1);
    return ok;
}

static int on_one(void *arg, mqr_queue_t *q, const mqr_queue_delivery_t *d)
{
    (void)q;
    l_qcons_t *c = arg;
    l_state_t *st = c->st;
    if (!st->active || !st->L) return MQR_QUEUE_NACK; /* never: cancelled first */
    l_qhost_t *qh = c->qh;
    l_qframe_t fr;
    fr.prev = qh->frame;
    fr.serial = ++qh->serial;
    fr.n = 1;
    fr.flags[0] = 0;
    qh->frame = &fr;
    lua_State *L = st->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->fn_ref);
    mqr__lqueue_push_msg(L, c->lq, d, fr.serial, 0);
    c->calls++;
    c->messages++;
    int rc = mqr__script_call_results(st, 1, 1, c->name, &c->errors, &c->budget_errors);
    qh->frame = fr.prev;
    if (!handler_ok(L, rc)) {
        c->nacked++;
        return MQR_QUEUE_NACK;
    }
    if (fr.flags[0] & QF_DEFERRED) {
        c->deferred++;
        return MQR_QUEUE_LATER;
    }
    return MQR_QUEUE_ACK;
}

static int on_batch(void *arg, mqr_queue_t *q, const mqr_queue_delivery_t *d, size_t n)
{
    l_qcons_t *c = arg;
    l_state_t *st = c->st;
    l_qhost_t *qh = c->qh;
    if (!st->active || !st->L) {
        for (size_t i = 0; i < n; i++)
            mqr__queue_nack(q, d[i].id, -1);
        return MQR_QUEUE_LATER;
    }
    l_qframe_t fr;
    fr.prev = qh->frame;
    fr.serial = ++qh->serial;
    fr.n = n;
    memset(fr.flags, 0, n);
    qh->frame = &fr;
    lua_State *L = st->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->fn_ref);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        mqr__lqueue_push_msg(L, c->lq, &d[i], fr.serial, i);
        lua_rawseti(L, -2, (int)i + 1);
    }
    c->calls++;
    c->messages += n;
    int rc = mqr__script_call_results(st, 1, 1, c->name, &c->errors, &c->budget_errors);
    qh->frame = fr.prev;
    bool ok = handler_ok(L, rc);
    size_t deferred = 0;
    for (size_t i = 0; i < n; i++)
        deferred += fr.flags[i] & QF_DEFERRED;
    c->deferred += deferred;
    if (ok && !deferred) return MQR_QUEUE_ACK; /* every one still in flight */
    if (!ok) c->nacked += n - deferred;
    for (size_t i = 0; i < n && !mqr__queue_closed(q); i++) {
        if (fr.flags[i] & QF_DEFERRED) continue;
        /* ENOENT: settled inside the handler */
        if (ok)
            mqr__queue_ack(q, d[i].id);
        else
            mqr__queue_nack(q, d[i].id, -1);
    }
    return MQR_QUEUE_LATER;
}

int mqr__lqueue_consumer_start(l_qcons_t *c)
{
    if (c->c || c->cancelled || mqr__queue_closed(c->lq->q)) return 0;
    if (c->batch)
        return mqr__queue_consume_batch(c->lq->q, on_batch, c, c->prefetch, c->batch, &c->c);
    return mqr__queue_consume(c->lq->q, on_one, c, c->prefetch, &c->c);
}

static void cons_stop(l_qcons_t *c)
{
    c->cancelled = true;
    if (c->c && !mqr__queue_closed(c->lq->q)) mqr__queue_cancel(c->lq->q, c->c);
    c->c = NULL;
}

void mqr__lqueue_consumer_free(l_qcons_t *c)
{
    cons_stop(c);
    if (c->ud) *c->ud = NULL;
    mqr__lqueue_unref(c->lq);
    free(c->name);
    free(c);
}

static l_qcons_t *check_cons(lua_State *L)
{
    l_qcons_t **ud = luaL_checkudata(L, 1, CONSUMER_MT);
    return *ud;
}

/* consumer:cancel(): no more deliveries; its unsettled messages go back */
static int l_cons_cancel(lua_State *L)
{
    l_qcons_t *c = check_cons(L);
    if (c) cons_stop(c);
    return 0;
}

static int l_cons_stats(lua_State *L)
{
    l_qcons_t *c = check_cons(L);
    lua_createtable(L, 0, 7);
    if (!c) return 1;
    lq_set_num(L, "calls", (double)c->calls);
    lq_set_num(L, "messages", (double)c->messages);
    lq_set_num(L, "errors", (double)c->errors);
    lq_set_num(L, "budget_errors", (double)c->budget_errors);
    lq_set_num(L, "nacked", (double)c->nacked);
    lq_set_num(L, "deferred", (double)c->deferred);
    lua_pushboolean(L, c->c != NULL);
    lua_setfield(L, -2, "active");
    return 1;
}

static int l_cons_gc(lua_State *L)
{
    l_qcons_t **ud = luaL_checkudata(L, 1, CONSUMER_MT);
    if (*ud) (*ud)->ud = NULL;
    return 0;
}

static void cons_name(lua_State *L, l_qcons_t *c)
{
    lua_Debug ar;
    char where[200] = "?";
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar))
        snprintf(where, sizeof where, "%s:%d", ar.short_src, ar.currentline);
    size_t n = strlen(c->lq->d.name) + strlen(where) + 32;
    c->name = malloc(n);
    if (c->name) snprintf(c->name, n, "consumer of queue '%s' (%s)", c->lq->d.name, where);
}

/* q:consume(fn [, { prefetch = n, batch = n, async = bool, concurrency = n }])
 * -> consumer. async: fn runs in a coroutine and may wait (l_async.c); the
 * message (or, with batch, the list) stays in flight meanwhile, at most
 * `concurrency` calls at once (64, or 4 with batch). */
static int l_q_consume(lua_State *L)
{
    l_queue_t *lq = mqr__lqueue_check(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_Integer prefetch = 0, batch = 0;
    bool async = false;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        static const char *const known[] = {"prefetch", "batch", "async", "concurrency", NULL};
        mqr__lua_check_options(L, 3, "queue:consume", known);
        lua_getfield(L, 3, "prefetch");
        prefetch = luaL_optinteger(L, -1, 0);
        lua_getfield(L, 3, "batch");
        batch = luaL_optinteger(L, -1, 0);
        lua_getfield(L, 3, "async");
        async = lua_toboolean(L, -1);
        lua_getfield(L, 3, "concurrency");
        lua_Integer concurrency = luaL_optinteger(L, -1, 0);
        lua_pop(L, 4);
        if (concurrency && !async)
            return luaL_argerror(L, 3, "concurrency is for async = true (else use prefetch)");
        if (concurrency < 0 || concurrency > 1000000)
            return luaL_argerror(L, 3, "concurrency must be 1..1000000");
        /* async: `concurrency` handler calls wait at once (64 single
         * messages, or 4 batches of up to `batch` by default) */
        if (async && batch > 0 && batch <= MQR_QUEUE_MAX_BATCH)
            prefetch = (concurrency ? concurrency : 4) * batch;
        else if (async)
            prefetch = concurrency ? concurrency : prefetch ? prefetch : 64;
        if (prefetch < 0 || prefetch > 1000000)
            return luaL_argerror(L, 3, "prefetch must be 0 (no limit) .. 1000000");
        if (batch < 0 || batch > MQR_QUEUE_MAX_BATCH)
            return luaL_argerror(L, 3, "batch must be 1..256 (or 0: one message per call)");
    }
    if (mqr__queue_closed(lq->q)) return mqr__lua_fail(L, MQR_ECLOSED, lq->d.name);
    l_state_t *st = mqr__state_of(L);
    l_qcons_t *c = calloc(1, sizeof *c);
    if (!c) return luaL_error(L, "out of memory");
    l_qcons_t **ud = lua_newuserdata(L, sizeof *ud);
    *ud = NULL;
    luaL_getmetatable(L, CONSUMER_MT);
    lua_setmetatable(L, -2);
    c->qh = lq->qh;
    c->st = st;
    c->lq = lq;
    lq->refs++;
    c->prefetch = (unsigned)prefetch;
    c->batch = (unsigned)batch;
    cons_name(L, c);
    lua_pushvalue(L, 2);
    if (async) mqr__lasync_wrap_consumer(L, c->name, batch > 0);
    c->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    c->next = c->qh->consumers;
    c->qh->consumers = c;
    *ud = c;
    c->ud = ud;
    if (st->active) { /* declared at run time */
        int rc = mqr__lqueue_consumer_start(c);
        if (rc < 0) {
            cons_stop(c);
            return mqr__lua_fail(L, rc, lq->d.name);
        }
    }
    return 1;
}

/* q:receive([n]) -> { msg... } (pull: settle each with ack/nack/reject) */
static int l_q_receive(lua_State *L)
{
    l_queue_t *lq = mqr__lqueue_check(L, 1);
    lua_Integer n = luaL_optinteger(L, 2, 1);
    if (n < 1 || n > MAX_RECEIVE) return luaL_argerror(L, 2, "n must be 1..1024");
    mqr_queue_delivery_t *d = malloc((size_t)n * sizeof *d);
    if (!d) return luaL_error(L, "out of memory");
    int got = mqr__queue_receive(lq->q, (size_t)n, d);
    if (got < 0) {
        free(d);
        return mqr__lua_fail(L, got, lq->d.name);
    }
    lua_createtable(L, got, 0);
    for (int i = 0; i < got; i++) {
        mqr__lqueue_push_msg(L, lq, &d[i], 0, 0);
        lua_rawseti(L, -2, i + 1);
    }
    free(d);
    return 1;
}

const luaL_Reg mqr__lqueue_consumer_methods[] = {
    {"consume", l_q_consume},
    {"receive", l_q_receive},
    {NULL, NULL},
};

void mqr__lqueue_consumer_register(lua_State *L)
{
    static const luaL_Reg cons_methods[] = {
        {"cancel", l_cons_cancel},
        {"stats", l_cons_stats},
        {NULL, NULL},
    };
    mqr__lua_class(L, CONSUMER_MT, cons_methods, l_cons_gc, NULL);
}
