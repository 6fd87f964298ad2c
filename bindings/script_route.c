/*
 * script_route.c — how messages and time reach a state's handlers: routes
 * (mq.route, up:route, q:bind: a trie subscriber per route, dead letters
 * for what a handler fails on), timers (mq.every, mq.after) and the fake
 * clock tests of rules drive them with.
 *
 * Routes and timers belong to their state: they are armed when it takes
 * over (script.c) and go when it closes (script_lua.c). Must not: call a
 * handler of a state that is not serving, or let a route outlive its state.
 */
#include "script_int.h"

#include "codec.h"
#include "queue.h"
#include "topic.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- routes --------------------------------------------------------------- */

/* Publishes the message a handler failed on to the route's dead-letter
 * topic: same payload, QoS and properties, plus user properties naming the
 * original topic, the route and the error. */
void mqr__route_dead_letter(l_route_t *r, mqr_msg_t *msg, const char *error)
{
    size_t elen = strlen(error);
    const mqr_luser_prop_t extra[] = {
        {"mqrouter-topic", msg->topic, msg->topic_len},
        {"mqrouter-route", r->filter, strlen(r->filter)},
        {"mqrouter-error", error, elen > 1024 ? 1024 : elen},
    };
    int rc = mqr__ldead_letter(r->st->host->e, msg, r->dead_letter, r->filter, extra, 3);
    if (rc < 0)
        MQR_LOG_E("rules", "%s: dead letter to '%s' failed: %s", r->name, r->dead_letter,
                  mqr_strerror(rc));
    else
        r->dead_lettered++;
}

/* A handler error follows the route's error policy, and a queue notes its
 * own outcome in the publish context (router.h): nothing to return. */
static int route_deliver(mqr_subscriber_t *self, mqr_msg_t *msg, const mqr_trie_entry_t *entry)
{
    l_route_t *r = (l_route_t *)self;
    l_state_t *st = r->st;
    if (!st->active || r->stopped) return 0;
    if (r->upstream && msg->origin_conn != (const void *)r->upstream->u) return 0;
    r->calls++;
    if (r->queue && mqr__queue_replaying(r->queue, msg))
        return 0;   /* q:replay() leaves its own queue as it is */
    if (r->queue) { /* into a queue, topic and all; refusals are the queue's to count */
        mqr_queue_pub_opts_t o = {.priority = r->queue_priority, .ttl_ms = r->queue_ttl_ms};
        int rc = mqr__queue_publish(r->queue, msg, &o, NULL);
        if (rc < 0) {
            r->errors++;
            snprintf(st->host->last_error, sizeof st->host->last_error, "queue '%s': %s: %s",
                     mqr__queue_name(r->queue), mqr_err_name(rc), mqr_strerror(rc));
            if ((r->errors & (r->errors - 1)) == 0) /* 1st, 2nd, 4th... */
                MQR_LOG_W("rules", "%s: %s (%llu so far)", r->name, st->host->last_error,
                          (unsigned long long)r->errors);
            if (r->dead_letter) mqr__route_dead_letter(r, msg, st->host->last_error);
        }
        return 0;
    }
    if (r->async) return mqr__lasync_deliver(r, msg);
    /* handler latency for /metrics: timed only while the admin API runs */
    uint64_t t0 = mqr__engine_admin(st->host->e) ? mqr__admin_ticks() : 0;
    int rc = mqr__lmsg_deliver(st, r->fn_ref, msg, r->name, &r->errors, &r->budget_errors);
    if (t0) mqr__admin_hist_add_ticks(&r->latency, mqr__admin_ticks() - t0);
    if (rc < 0 && r->dead_letter) mqr__route_dead_letter(r, msg, st->host->last_error);
    return 0;
}

/* A whole number in 1..max at idx, or a clear error. */
static uint32_t check_count(lua_State *L, int idx, const char *fname, const char *what,
                            uint32_t max)
{
    lua_Number n = lua_tonumber(L, idx);
    if (!lua_isnumber(L, idx) || n < 1 || n > max || n != (lua_Number)(uint32_t)n)
        luaL_error(L, "%s: %s must be a whole number from 1 to %u", fname, what, max);
    return (uint32_t)n;
}

int mqr__route_declare(lua_State *L, l_state_t *st, const char *filter, int fn_idx,
                       l_upstream_t *up, int opts_idx)
{
    const char *why = NULL;
    size_t flen = strlen(filter);
    if (mqr__topic_filter_check(filter, flen, &why) < 0)
        return luaL_error(L, "invalid route filter '%s': %s", filter, why ? why : "invalid");
    int qos = 0;
    const char *dlq = NULL;
    bool to_queue = !lua_isfunction(L, fn_idx);
    if (to_queue && !luaL_testudata(L, fn_idx, "mqrouter.queue"))
        return luaL_argerror(L, fn_idx, "function or queue expected");
    int qprio = 2;
    int64_t qttl = 0;
    bool async = false;
    uint32_t concurrency = 64, max_pending = 10000;
    if (opts_idx && !lua_isnoneornil(L, opts_idx)) {
        const char *fname = up ? "session:route" : "mq.route";
        if (!lua_istable(L, opts_idx))
            return luaL_error(L, "%s: options must be a table {qos, dead_letter}, not a %s", fname,
                              luaL_typename(L, opts_idx));
        if (!up) {
            static const char *const fn_known[] = {"qos",         "dead_letter", "async",
                                                   "concurrency", "max_pending", NULL};
            static const char *const q_known[] = {"qos", "dead_letter", "priority", "ttl", NULL};
            mqr__lua_check_options(L, opts_idx, fname, to_queue ? q_known : fn_known);
        }
        lua_getfield(L, opts_idx, "qos");
        qos = mqr__lua_opt_qos(L, -1, fname, 0);
        lua_getfield(L, opts_idx, "dead_letter");
        dlq = luaL_optstring(L, -1, NULL);
        lua_pop(L, 2); /* dlq stays alive: the table holds it */
        if (!to_queue) {
            lua_getfield(L, opts_idx, "async");
            async = lua_toboolean(L, -1);
            if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
                return luaL_error(L, "%s: async must be true or false", fname);
            lua_getfield(L, opts_idx, "concurrency");
            if (!lua_isnil(L, -1)) concurrency = check_count(L, -1, fname, "concurrency", 100000);
            lua_getfield(L, opts_idx, "max_pending");
            if (!lua_isnil(L, -1)) max_pending = check_count(L, -1, fname, "max_pending", 10000000);
            lua_pop(L, 3);
        }
        if (dlq && mqr__topic_name_check(dlq, strlen(dlq), &why) < 0)
            return luaL_error(L, "invalid dead_letter topic '%s': %s", dlq, why);
        if (to_queue) {
            lua_getfield(L, opts_idx, "priority");
            if (!lua_isnil(L, -1)) qprio = mqr__lqueue_priority(L, lua_gettop(L));
            lua_getfield(L, opts_idx, "ttl");
            if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1))
                qttl = -1;
            else if (!lua_isnil(L, -1)) {
                double s = luaL_checknumber(L, -1);
                if (!(s > 0) || s > 1e9)
                    return luaL_argerror(L, opts_idx, "ttl must be seconds > 0");
                qttl = (int64_t)(s * 1000.0 + 0.999);
            }
            lua_pop(L, 2);
        }
    }
    struct mqr_queue *queue = to_queue ? mqr__lqueue_take(L, fn_idx) : NULL; /* may raise */
    l_route_t *r = calloc(1, sizeof *r);
    if (!r) {
        if (queue) mqr__queue_unref(queue);
        return luaL_error(L, "out of memory");
    }
    r->base.deliver = route_deliver;
    r->st = st;
    r->upstream = up;
    r->qos = qos;
    r->filter = strdup(filter);
    r->dead_letter = dlq ? strdup(dlq) : NULL;
    lua_Debug ar;
    char where[256] = "?";
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar))
        snprintf(where, sizeof where, "%s:%d", ar.short_src, ar.currentline);
    size_t n = strlen(filter) + strlen(where) + 64 + (up ? strlen(up->name) : 0);
    r->name = malloc(n);
    if (r->name) {
        if (up)
            snprintf(r->name, n, "route '%s' of session '%s' (%s)", filter, up->name, where);
        else
            snprintf(r->name, n, "route '%s' (%s)", filter, where);
    }
    if (!r->filter || !r->name) {
        free(r->filter);
        free(r->name);
        free(r);
        if (queue) mqr__queue_unref(queue);
        return luaL_error(L, "out of memory");
    }
    r->async = async;
    r->concurrency = concurrency;
    r->max_pending = max_pending;
    r->queue = queue;
    r->queue_priority = qprio;
    r->queue_ttl_ms = qttl;
    if (queue) {
        r->fn_ref = LUA_NOREF;
    } else {
        lua_pushvalue(L, fn_idx);
        r->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    /* keep declaration order: append */
    if (!st->routes_tail) st->routes_tail = &st->routes;
    *st->routes_tail = r;
    st->routes_tail = &r->next;
    if (st->active) { /* declared at run time (from a handler or timer) */
        mqr_sub_opts_t opts = {.qos = (uint8_t)qos};
        r->entry = mqr__router_add(mqr__engine_router(st->host->e), filter, flen, &r->base, &opts);
        if (!r->entry) return luaL_error(L, "out of memory");
        if (up && up->u) mqr__upstream_subscribe(up->u, filter, qos);
    }
    l_route_t **ud = lua_newuserdata(L, sizeof *ud);
    *ud = r;
    luaL_getmetatable(L, "mqrouter.route");
    lua_setmetatable(L, -2);
    return 1;
}

/* ---- timers ---------------------------------------------------------------- */

void mqr__timer_closed(uv_handle_t *h)
{
    l_timer_t *t = h->data;
    l_state_t *st = t->st;
    free(t->name);
    free(t);
    if (--st->open_timers == 0 && st->closing) {
        free(st->chunkname);
        free(st);
    }
}

/* Ends a timer before its state does: after a one-shot fired, or stop().
 * The handle's memory goes in mqr__timer_closed. */
void mqr__timer_release(l_timer_t *t)
{
    l_state_t *st = t->st;
    if (t->stopped) return;
    t->stopped = true;
    uv_timer_stop(&t->handle);
    for (l_timer_t **p = &st->timers; *p; p = &(*p)->next) {
        if (*p == t) {
            *p = t->next;
            break;
        }
    }
    if (t->ud) *t->ud = NULL;
    t->ud = NULL;
    if (st->L) luaL_unref(st->L, LUA_REGISTRYINDEX, t->fn_ref);
    uv_close((uv_handle_t *)&t->handle, mqr__timer_closed);
}

static void timer_fire(uv_timer_t *handle)
{
    l_timer_t *t = handle->data;
    l_state_t *st = t->st;
    if (t->stopped || !st->active) return;
    t->calls++;
    lua_rawgeti(st->L, LUA_REGISTRYINDEX, t->fn_ref);
    if (t->repeat_ms == 0) mqr__timer_release(t); /* the function stays on the stack */
    mqr__script_call(st, 0, t->name, &t->errors, NULL);
}

void mqr__timer_start(l_timer_t *t)
{
    mqr_script_t *h = t->st->host;
    if (h->fake_clock)
        t->fake_due = h->clock_ms + t->due_ms; /* mqr__script_advance() fires it */
    else
        uv_timer_start(&t->handle, timer_fire, t->due_ms, t->repeat_ms);
    t->started = true;
}

int mqr__timer_declare(lua_State *L, l_state_t *st, double seconds, bool repeat, int fn_idx)
{
    if (!(seconds >= 0) || seconds > 1e9)
        return luaL_error(L, "the interval must be 0 .. 1e9 seconds, not %f", seconds);
    l_timer_t *t = calloc(1, sizeof *t);
    if (!t) return luaL_error(L, "out of memory");
    uint64_t ms = (uint64_t)(seconds * 1000.0 + 0.5);
    if (repeat && ms == 0) ms = 1;
    t->due_ms = ms;
    t->repeat_ms = repeat ? ms : 0;
    t->st = st;
    lua_Debug ar;
    char name[256] = "timer";
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar))
        snprintf(name, sizeof name, "%s %gs (%s:%d)", repeat ? "every" : "after", seconds,
                 ar.short_src, ar.currentline);
    t->name = strdup(name);
    uv_timer_init(mqr_engine_loop(st->host->e), &t->handle);
    t->handle.data = t;
    st->open_timers++;
    lua_pushvalue(L, fn_idx);
    t->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    t->seq = ++st->host->timer_seq;
    t->next = st->timers;
    st->timers = t;
    if (st->active) mqr__timer_start(t);
    l_timer_t **ud = lua_newuserdata(L, sizeof *ud);
    *ud = t;
    t->ud = ud;
    luaL_getmetatable(L, "mqrouter.timer");
    lua_setmetatable(L, -2);
    return 1;
}

/* ---- the fake clock ------------------------------------------------------- */

/* Tests of rules need time they control: "above 30 for a minute" should not
 * take a minute. The fake clock replaces, for one engine, the time scripts
 * see (mq.now, msg.time of what Lua and the host publish) and the loop's
 * timers under mq.every/mq.after with a counter that only the host moves.
 * Queues follow it too (ack timeouts, nack backoff, TTL, transaction
 * timeouts: core/queue reads the engine's clock, clock.h). Sockets, upstream sessions and
 * the handler budget keep real time. */
static uint64_t fake_now(void *arg)
{
    return ((const mqr_script_t *)arg)->clock_ms;
}

void mqr__script_fake_clock(mqr_script_t *h, uint64_t start_ms)
{
    h->fake_clock = true;
    h->clock_ms = start_ms;
    mqr_clock_t *c = mqr__engine_clock(h->e);
    c->fake = fake_now;
    c->fake_arg = h;
}

uint64_t mqr__script_now_ms(const mqr_script_t *h)
{
    return h && h->fake_clock ? h->clock_ms : mqr__now_ms();
}

/* The next timer of the serving state due at or before until, or NULL. */
static l_timer_t *next_due(mqr_script_t *h, uint64_t until)
{
    l_state_t *st = h->cur;
    l_timer_t *best = NULL;
    if (!st || !st->active) return NULL;
    for (l_timer_t *t = st->timers; t; t = t->next) {
        if (t->stopped || !t->started || t->fake_due > until) continue;
        if (!best || t->fake_due < best->fake_due ||
            (t->fake_due == best->fake_due && t->seq < best->seq))
            best = t;
    }
    return best;
}

unsigned mqr__script_advance(mqr_script_t *h, uint64_t ms)
{
    uint64_t until = h->clock_ms + ms;
    unsigned calls = 0;
    uv_loop_t *loop = mqr_engine_loop(h->e);
    l_timer_t *t;
    /* bounded: a timer of 0 s that re-arms itself forever stops here */
    for (; calls < 1000000; calls++) {
        t = next_due(h, until);
        /* queue deadlines (redeliveries, expiries, tx timeouts) interleave
         * with script timers in time order; a timer wins a tie */
        uint64_t q_at = mqr__queues_next_due(h->e);
        if (q_at <= until && (!t || q_at < t->fake_due)) {
            h->clock_ms = q_at > h->clock_ms ? q_at : h->clock_ms;
            mqr__queues_clock_moved(h->e);
        } else if (t) {
            h->clock_ms = t->fake_due;
            if (t->repeat_ms) t->fake_due += t->repeat_ms;
            timer_fire(&t->handle); /* may release t (one-shot, stop) */
        } else {
            break;
        }
        uv_run(loop, UV_RUN_NOWAIT);
    }
    h->clock_ms = until;
    mqr__queues_clock_moved(h->e);
    uv_run(loop, UV_RUN_NOWAIT);
    return calls;
}
