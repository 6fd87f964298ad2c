/*
 * l_upstream_events.c — the Lua half of upstream sessions and what they
 * tell it. mqr__lupstream_open runs lua/host/upstream.lua (compiled in) in
 * every rules state with the C helpers it needs (C.status, C.publish_async,
 * ...). Lifecycle events (session_connected, session_failed...) go to the
 * serving state's dispatcher (the function upstream.lua returns); events
 * seen while a new script loads are kept and handed to it at its takeover;
 * the answers of asynchronous publish, subscribe, unsubscribe and ping come
 * back as "_publish_done" events with the id the call returned.
 *
 * Runs on the loop thread from the core's observer and completion
 * callbacks. Must not: run Lua for a state that is neither serving nor
 * loading, or call the dispatcher of a state being closed.
 */
#include "l_upstream_int.h"

#include "topic.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Calls the state's dispatcher with the table on top. [-1, +0] */
static void dispatch(l_state_t *st)
{
    lua_State *L = st->L;
    lua_getfield(L, LUA_REGISTRYINDEX, UPSTREAM_DISPATCH_KEY);
    if (!lua_isfunction(L, -1)) {
        lua_pop(L, 2);
        return;
    }
    lua_insert(L, -2);
    mqr__script_call(st, 1, "session event", NULL, NULL);
}

void mqr__lupstream_dispatch(l_state_t *st)
{
    dispatch(st);
}

/* [-0, +1] */
static void push_event(lua_State *L, const mqr_upstream_event_t *ev)
{
    lua_createtable(L, 0, 8);
    lua_pushstring(L, mqr__upstream_event_name(ev->type));
    lua_setfield(L, -2, "type");
    lua_pushstring(L, ev->name);
    lua_setfield(L, -2, "name");
    up_set_num(L, "time", (double)ev->time_ms / 1000.0);
    if (ev->reason) {
        lua_pushstring(L, ev->reason);
        lua_setfield(L, -2, "reason");
    }
    if (ev->broker) {
        lua_pushstring(L, ev->broker);
        lua_setfield(L, -2, "broker");
    }
    if (ev->attempt) up_set_num(L, "attempt", ev->attempt);
    if (ev->type == MQR_UPEV_STATE_CHANGED) {
        lua_pushstring(L, mqr__upstream_state_name(ev->old_state));
        lua_setfield(L, -2, "old");
        lua_pushstring(L, mqr__upstream_state_name(ev->new_state));
        lua_setfield(L, -2, "new");
    }
}

void mqr__lupstream_observe(void *arg, const mqr_upstream_event_t *ev)
{
    mqr_script_t *h = arg;
    /* Closed from elsewhere (the engine stopping closes every session, and
     * its loop frees them before the scripts go): forget it, so that
     * neither a route's stop nor session_free reaches it afterwards. */
    if (ev->type == MQR_UPEV_REMOVED)
        for (l_upstream_t *s = h->upstreams; s; s = s->next)
            if (s->u == ev->u) s->u = NULL;
    l_state_t *ld = h->loading;
    if (ld && ld->L) {
        lua_State *L = ld->L;
        lua_getfield(L, LUA_REGISTRYINDEX, UPSTREAM_PENDING_KEY);
        if (lua_istable(L, -1)) {
            push_event(L, ev);
            lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
        }
        lua_pop(L, 1);
    }
    l_state_t *cur = h->cur;
    if (cur && cur->L && cur->active) {
        push_event(cur->L, ev);
        dispatch(cur);
    }
}

void mqr__lupstream_flush_pending(l_state_t *st)
{
    lua_State *L = st->L;
    if (!L) return;
    lua_getfield(L, LUA_REGISTRYINDEX, UPSTREAM_PENDING_KEY);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    lua_newtable(L); /* later events go to the dispatcher directly */
    lua_setfield(L, LUA_REGISTRYINDEX, UPSTREAM_PENDING_KEY);
    int n = (int)lua_objlen(L, -1);
    for (int i = 1; i <= n && st->active && st->L; i++) {
        lua_rawgeti(L, -1, i);
        dispatch(st);
    }
    lua_pop(L, 1);
}

typedef struct {
    mqr_script_t *h;
    double id;
} pub_wait_t;

static void pub_done(void *arg, int status, int reason)
{
    pub_wait_t *w = arg;
    l_state_t *cur = w->h->cur;
    if (cur && cur->L && cur->active) {
        lua_State *L = cur->L;
        lua_createtable(L, 0, 5);
        lua_pushstring(L, "_publish_done");
        lua_setfield(L, -2, "type");
        up_set_num(L, "id", w->id);
        lua_pushboolean(L, status == 0);
        lua_setfield(L, -2, "ok");
        if (status < 0) {
            char buf[160];
            if (reason >= 0x80)
                snprintf(buf, sizeof buf, "%s: broker answered with reason code 0x%02x",
                         mqr_err_name(status), reason);
            else
                snprintf(buf, sizeof buf, "%s: %s", mqr_err_name(status), mqr_strerror(status));
            lua_pushstring(L, buf);
            lua_setfield(L, -2, "err");
        }
        up_set_num(L, "reason", reason);
        dispatch(cur);
    }
    free(w);
}

/* up:_publish_async(topic, payload, opts) -> id | nil, err, name; the answer
 * comes as a "_publish_done" event with that id. */
int mqr__lupstream_publish_async(lua_State *L)
{
    static double next_id; /* process-wide: ids never repeat across states */
    l_upstream_t *s = mqr__lupstream_check(L);
    mqr_msg_init_t in = {.origin = MQR_ORIGIN_LUA};
    in.topic = luaL_checklstring(L, 2, &in.topic_len);
    in.payload = luaL_checklstring(L, 3, &in.payload_len);
    uint8_t *props;
    static const char *const known[] = {"qos", "retain", "properties", "timeout", NULL};
    mqr__publish_opts(L, 4, "session:publish_sync", known, &in, &props);
    const char *why = NULL;
    int rc = mqr__topic_name_check(in.topic, in.topic_len, &why);
    if (rc == 0 && !s->u) rc = MQR_ECLOSED;
    pub_wait_t *w = NULL;
    if (rc == 0) {
        w = malloc(sizeof *w);
        mqr_msg_t *m = w ? mqr__msg_new(&in) : NULL;
        if (m) {
            w->h = s->host;
            w->id = ++next_id;
            rc = mqr__upstream_publish_cb(s->u, m, pub_done, w);
        } else {
            rc = MQR_ENOMEM;
        }
        mqr_msg_unref(m);
    }
    free(props);
    if (rc < 0) {
        free(w);
        return mqr__lua_fail(L, rc, why);
    }
    lua_pushnumber(L, w->id);
    return 1;
}

/* The answer of a SUBSCRIBE, UNSUBSCRIBE or ping comes like a publish's:
 * a "_publish_done" event with the id returned here. */
static int start_async(lua_State *L, l_upstream_t *s, int kind, const char *filter, int qos)
{
    static double next_id;
    if (!s->u) return mqr__lua_fail(L, MQR_ECLOSED, NULL);
    pub_wait_t *w = malloc(sizeof *w);
    if (!w) return mqr__lua_fail(L, MQR_ENOMEM, NULL);
    w->h = s->host;
    w->id = -(++next_id); /* negative: never equal to a publish's id */
    int rc = kind == 0   ? mqr__upstream_subscribe_cb(s->u, filter, qos, pub_done, w)
             : kind == 1 ? mqr__upstream_unsubscribe_cb(s->u, filter, pub_done, w)
                         : mqr__upstream_ping_cb(s->u, pub_done, w);
    if (rc < 0) {
        free(w);
        return mqr__lua_fail(L, rc, NULL);
    }
    lua_pushnumber(L, w->id);
    return 1;
}

/* up:_subscribe_async(filter, qos) -> id | nil, err, name */
int mqr__lupstream_subscribe_async(lua_State *L)
{
    l_upstream_t *s = mqr__lupstream_check(L);
    const char *filter = luaL_checkstring(L, 2);
    int qos = (int)luaL_optinteger(L, 3, 0);
    if (qos < 0 || qos > 2) return luaL_argerror(L, 3, "QoS must be 0, 1 or 2");
    return start_async(L, s, 0, filter, qos);
}

int mqr__lupstream_unsubscribe_async(lua_State *L)
{
    l_upstream_t *s = mqr__lupstream_check(L);
    return start_async(L, s, 1, luaL_checkstring(L, 2), 0);
}

int mqr__lupstream_ping_async(lua_State *L)
{
    return start_async(L, mqr__lupstream_check(L), 2, NULL, 0);
}

/* up:subscribe(filter [, qos]) -> true | nil, err, name: one more reference
 * on filter (restored after reconnects) without waiting for the answer;
 * up:unsubscribe(filter) drops one. */

/* check_options(t, fname, { known... }): mqr__lua_check_options for the Lua
 * half; raises at the level of the function that called the Lua half. */
static int l_c_check_options(lua_State *L)
{
    const char *fname = lua_tostring(L, 2);
    if (!lua_istable(L, 1))
        return luaL_error(L, "%s: options must be a table, not a %s", fname, luaL_typename(L, 1));
    const char *known[16];
    int n = (int)lua_objlen(L, 3);
    for (int i = 0; i < n && i < 15; i++) {
        lua_rawgeti(L, 3, i + 1);
        known[i] = lua_tostring(L, -1); /* the list holds the strings */
        lua_pop(L, 1);
    }
    known[n < 15 ? n : 15] = NULL;
    mqr__lua_check_options(L, 1, fname, known);
    return 0;
}

static int l_c_status(lua_State *L)
{
    mqr_upstream_t *u = mqr__upstream_find(up_engine_of(L), luaL_checkstring(L, 1));
    if (!u) return 0;
    mqr__lupstream_push_status(L, u);
    return 1;
}

void mqr__lupstream_open(lua_State *L)
{
    l_state_t *st = mqr__state_of(L);
    int api = lua_gettop(L);
    static const luaL_Reg fns[] = {
        {"sessions", mqr__lupstream_names},
        {"session_status", mqr__lupstream_status_by_name},
        {"sessions_stats", mqr__lupstream_manager_stats},
        {NULL, NULL},
    };
    lua_pushvalue(L, api);
    luaL_setfuncs(L, fns, 0);
    lua_pop(L, 1);
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, UPSTREAM_PENDING_KEY);
    if (luaL_loadbuffer(L, mqr__lua_upstream, mqr__lua_upstream_len, "=upstream") != 0)
        lua_error(L); /* a bug in upstream.lua: state_new runs this unprotected */
    lua_pushvalue(L, api);
    luaL_getmetatable(L, UPSTREAM_MT);
    lua_getfield(L, -1, "__index");
    lua_remove(L, -2);
    lua_createtable(L, 0, 3);
    lua_pushcfunction(L, l_c_status);
    lua_setfield(L, -2, "status");
    lua_pushcfunction(L, mqr__lupstream_names);
    lua_setfield(L, -2, "names");
    lua_pushcfunction(L, mqr__lupstream_publish_async);
    lua_setfield(L, -2, "publish_async");
    lua_pushcfunction(L, mqr__lupstream_subscribe_async);
    lua_setfield(L, -2, "subscribe_async");
    lua_pushcfunction(L, mqr__lupstream_unsubscribe_async);
    lua_setfield(L, -2, "unsubscribe_async");
    lua_pushcfunction(L, mqr__lupstream_ping_async);
    lua_setfield(L, -2, "ping_async");
    lua_pushcfunction(L, mqr__liter_new);
    lua_setfield(L, -2, "iter_new");
    lua_pushcfunction(L, l_c_check_options);
    lua_setfield(L, -2, "check_options");
    lua_getfield(L, LUA_REGISTRYINDEX, "mqrouter.async_step"); /* l_async.c */
    lua_setfield(L, -2, "resume");
    lua_pushcfunction(L, mqr__lua_traceback_fn); /* debug.traceback on one line */
    lua_setfield(L, -2, "traceback");
    lua_call(L, 3, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, UPSTREAM_DISPATCH_KEY);
    mqr__upstream_observe(st->host->e, mqr__lupstream_observe,
                          st->host); /* once per host: EEXIST after */
}
