/*
 * l_upstream_handle.c — the handle of an upstream broker session (metatable
 * UPSTREAM_MT, so its methods' errors read "session:publish"):
 * up:publish, up:route, up:subscribe, up:unsubscribe, up:state, up:status,
 * up:name, up:close; and the engine-wide mq.sessions(),
 * mq.session_status(name), mq.sessions_stats().
 *
 * A handle holds the host's record (l_upstream_t), not the core session: a
 * closed session leaves u NULL and every call says ECLOSED. Must not: free
 * a record (l_upstream.c does, at takeover or close), or block.
 */
#include "l_upstream_int.h"

#include "topic.h"

#include <stdlib.h>
#include <string.h>

l_upstream_t *mqr__lupstream_check(lua_State *L)
{
    l_upstream_t **ud = luaL_checkudata(L, 1, UPSTREAM_MT);
    return *ud;
}

/* up:publish(topic, payload [, {qos, retain, properties}]) -> true | nil, err, name */
static int l_session_publish(lua_State *L)
{
    l_upstream_t *s = mqr__lupstream_check(L);
    mqr_msg_init_t in = {.origin = MQR_ORIGIN_LUA};
    in.topic = luaL_checklstring(L, 2, &in.topic_len);
    in.payload = luaL_checklstring(L, 3, &in.payload_len);
    uint8_t *props;
    mqr__publish_opts(L, 4, "session:publish", NULL, &in, &props);
    const char *why = NULL;
    int rc = mqr__topic_name_check(in.topic, in.topic_len, &why);
    if (rc == 0 && !s->u) rc = MQR_ECLOSED;
    if (rc == 0) {
        mqr_msg_t *m = mqr__msg_new(&in);
        rc = m ? mqr__upstream_publish(s->u, m) : MQR_ENOMEM;
        mqr_msg_unref(m);
    }
    free(props);
    if (rc < 0) return mqr__lua_fail(L, rc, why);
    lua_pushboolean(L, 1);
    return 1;
}

/* up:route(filter, fn [, {qos, dead_letter, no_local, retain_as_published,
 * retain_handling}]): subscribes upstream; fn sees only this session's
 * messages. The v5 subscription options apply to the filter on this session
 * (the last route to set them wins). */
static int l_session_route(lua_State *L)
{
    l_upstream_t *s = mqr__lupstream_check(L);
    const char *filter = luaL_checkstring(L, 2);
    if (!lua_isfunction(L, 3) && !luaL_testudata(L, 3, "mqrouter.queue"))
        return luaL_typerror(L, 3, "function or queue"); /* a queue: into it */
    if (lua_istable(L, 4)) {
        static const char *const known[] = {"qos",
                                            "dead_letter",
                                            "priority",
                                            "ttl",
                                            "no_local",
                                            "retain_as_published",
                                            "retain_handling",
                                            "async",
                                            "concurrency",
                                            "max_pending",
                                            NULL};
        mqr__lua_check_options(L, 4, "session:route", known);
        lua_getfield(L, 4, "no_local");
        lua_getfield(L, 4, "retain_as_published");
        lua_getfield(L, 4, "retain_handling");
        bool any = !lua_isnil(L, -3) || !lua_isnil(L, -2) || !lua_isnil(L, -1);
        int rh = (int)luaL_optinteger(L, -1, -1);
        bool nl = lua_toboolean(L, -3), rap = lua_toboolean(L, -2);
        lua_pop(L, 3);
        if (rh < -1 || rh > 2) return luaL_argerror(L, 4, "retain_handling must be 0, 1 or 2");
        if (any && s->u) {
            int rc = mqr__upstream_set_sub_options(s->u, filter, nl, rap, rh);
            if (rc < 0) return luaL_error(L, "route '%s': %s", filter, mqr_strerror(rc));
        }
    }
    return mqr__route_declare(L, mqr__state_of(L), filter, 3, s, 4);
}

static int l_session_state(lua_State *L)
{
    l_upstream_t *s = mqr__lupstream_check(L);
    mqr_upstream_state_t state = s->u ? mqr__upstream_state(s->u) : MQR_UPSTREAM_CLOSED;
    lua_pushstring(L, mqr__upstream_state_name(state));
    return 1;
}

/* up:close(): disconnects now. The script's handle stays, closed; a reload
 * that declares the session again opens a new one. */
static int l_session_close(lua_State *L)
{
    l_upstream_t *s = mqr__lupstream_check(L);
    if (s->u) {
        mqr_upstream_t *u = s->u;
        s->u = NULL;
        s->config_key[0] = '\0'; /* never matches a declaration again */
        mqr__upstream_discard(u);
    }
    return 0;
}

static void set_time(lua_State *L, const char *k, uint64_t ms)
{
    if (ms) up_set_num(L, k, (double)ms / 1000.0);
}

static void push_sub(void *arg, const char *filter, int qos)
{
    lua_State *L = arg;
    int n = (int)lua_objlen(L, -1);
    lua_pushstring(L, filter);
    lua_rawseti(L, -2, n + 1);
}

/* [-0, +1] */
void mqr__lupstream_push_status(lua_State *L, mqr_upstream_t *u)
{
    mqr_upstream_status_t o;
    mqr__upstream_status(u, &o);
    lua_createtable(L, 0, 32);
    lua_pushstring(L, mqr__upstream_name(u));
    lua_setfield(L, -2, "name");
    lua_pushstring(L, mqr__upstream_state_name(o.state));
    lua_setfield(L, -2, "state");
    lua_pushboolean(L, o.ready);
    lua_setfield(L, -2, "ready");
    lua_pushstring(L, o.broker);
    lua_setfield(L, -2, "broker");
    lua_pushstring(L, o.transport);
    lua_setfield(L, -2, "transport");
    if (o.last_error[0]) {
        lua_pushstring(L, o.last_error);
        lua_setfield(L, -2, "last_error");
    }
    set_time(L, "connected_since", o.connected_since_ms);
    set_time(L, "last_error_at", o.last_error_at_ms);
    set_time(L, "last_message_at", o.last_message_at_ms);
    up_set_num(L, "connects", (double)o.connects);
    up_set_num(L, "reconnects", (double)o.reconnects);
    up_set_num(L, "connect_failures", (double)o.connect_failures);
    up_set_num(L, "attempt", o.attempt);
    up_set_num(L, "inflight", (double)o.inflight);
    up_set_num(L, "buffered", (double)o.buffered);
    up_set_num(L, "messages_sent", (double)o.messages_sent);
    up_set_num(L, "messages_received", (double)o.messages_received);
    up_set_num(L, "bytes_sent", (double)o.bytes_sent);
    up_set_num(L, "bytes_received", (double)o.bytes_received);
    up_set_num(L, "messages_refused", (double)o.messages_refused);
    up_set_num(L, "messages_dropped", (double)o.messages_dropped);
    up_set_num(L, "messages_unprotected", (double)o.messages_unprotected);
    up_set_num(L, "messages_spilled", (double)o.messages_spilled);
    up_set_num(L, "messages_not_kept", (double)o.messages_not_kept);
    up_set_num(L, "publish_full", (double)o.publish_full);
    up_set_num(L, "publish_dropped", (double)o.publish_dropped);
    up_set_num(L, "publishers_paused", (double)o.publishers_paused);
    up_set_num(L, "publish_expired", (double)o.publish_expired);
    up_set_num(L, "publish_failed", (double)o.publish_failed);
    up_set_num(L, "delivered", (double)o.delivered);
    up_set_num(L, "stored", (double)o.stored);
    lua_pushboolean(L, o.clean);
    lua_setfield(L, -2, "clean");
    lua_pushboolean(L, o.persistent);
    lua_setfield(L, -2, "persistent");
    lua_pushboolean(L, o.auto_reconnect);
    lua_setfield(L, -2, "auto_reconnect");
    lua_newtable(L);
    mqr__upstream_foreach_sub(u, push_sub, L);
    lua_setfield(L, -2, "subscriptions");
}

/* up:status() -> table (state "closed" and nothing else once closed) */
static int l_session_status(lua_State *L)
{
    l_upstream_t *s = mqr__lupstream_check(L);
    if (s->u) {
        mqr__lupstream_push_status(L, s->u);
    } else {
        lua_createtable(L, 0, 2);
        lua_pushstring(L, s->name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, "closed");
        lua_setfield(L, -2, "state");
    }
    return 1;
}

/* mq.session_status(name) -> table | nil, "ENOENT: ...", "ENOENT" */
int mqr__lupstream_status_by_name(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    mqr_upstream_t *u = mqr__upstream_find(up_engine_of(L), name);
    if (!u) return mqr__lua_fail(L, MQR_ENOENT, name);
    mqr__lupstream_push_status(L, u);
    return 1;
}

/* mq.sessions() -> { "name", ... } every open session of the engine, in
 * creation order. The engine's list runs newest first (a name's newest
 * session is the one found), hence filled from the end. */
int mqr__lupstream_names(lua_State *L)
{
    mqr_engine_t *e = up_engine_of(L);
    int n = 0;
    for (mqr_upstream_t *u = mqr__upstream_first(e); u; u = mqr__upstream_next(u))
        n++;
    lua_createtable(L, n, 0);
    int i = n;
    for (mqr_upstream_t *u = mqr__upstream_first(e); u; u = mqr__upstream_next(u)) {
        lua_pushstring(L, mqr__upstream_name(u));
        lua_rawseti(L, -2, i--);
    }
    return 1;
}

/* mq.sessions_stats() -> manager totals */
int mqr__lupstream_manager_stats(lua_State *L)
{
    mqr_upstream_manager_stats_t o;
    mqr__upstream_manager_stats(up_engine_of(L), &o);
    lua_createtable(L, 0, 9);
    up_set_num(L, "sessions", o.sessions);
    up_set_num(L, "connected", o.connected);
    up_set_num(L, "ready", o.ready);
    up_set_num(L, "failed", o.failed);
    up_set_num(L, "messages_sent", (double)o.messages_sent);
    up_set_num(L, "messages_received", (double)o.messages_received);
    up_set_num(L, "bytes_sent", (double)o.bytes_sent);
    up_set_num(L, "bytes_received", (double)o.bytes_received);
    up_set_num(L, "reconnects", (double)o.reconnects);
    return 1;
}

/* up:subscribe(filter [, qos]) -> true | nil, err, name: one more reference
 * on filter (restored after reconnects) without waiting for the answer;
 * up:unsubscribe(filter) drops one. */
static int l_session_subscribe(lua_State *L)
{
    l_upstream_t *s = mqr__lupstream_check(L);
    const char *filter = luaL_checkstring(L, 2);
    int qos = (int)luaL_optinteger(L, 3, 0);
    if (qos < 0 || qos > 2) return luaL_argerror(L, 3, "QoS must be 0, 1 or 2");
    int rc = s->u ? mqr__upstream_subscribe(s->u, filter, qos) : MQR_ECLOSED;
    if (rc < 0) return mqr__lua_fail(L, rc, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_session_unsubscribe(lua_State *L)
{
    l_upstream_t *s = mqr__lupstream_check(L);
    int rc = s->u ? mqr__upstream_unsubscribe(s->u, luaL_checkstring(L, 2)) : MQR_ECLOSED;
    if (rc < 0) return mqr__lua_fail(L, rc, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_session_name(lua_State *L)
{
    lua_pushstring(L, mqr__lupstream_check(L)->name);
    return 1;
}

void mqr__lupstream_register(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"publish", l_session_publish},
        {"route", l_session_route},
        {"state", l_session_state},
        {"name", l_session_name},
        {"status", l_session_status},
        {"close", l_session_close},
        {"_publish_async", mqr__lupstream_publish_async},
        {"subscribe", l_session_subscribe},
        {"unsubscribe", l_session_unsubscribe},
        {NULL, NULL},
    };
    mqr__lua_class(L, UPSTREAM_MT, methods, NULL, NULL);
}
