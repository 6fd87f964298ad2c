/*
 * l_upstream_int.h — what the l_upstream*.c files share: the upstream
 * session handles' helpers, the events dispatcher and the Lua half's
 * bytes. Internal to those files; script.h declares what the rest of the
 * bindings call (mqr__lupstream_*).
 */
#ifndef MQR_L_UPSTREAM_INT_H
#define MQR_L_UPSTREAM_INT_H

#include "script.h"

/* the metatable of upstream session handles; its name makes the methods'
 * error names ("session:publish"), which scripts may match on */
#define UPSTREAM_MT "mqrouter.session"

static inline void up_set_num(lua_State *L, const char *k, double v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

static inline mqr_engine_t *up_engine_of(lua_State *L)
{
    return mqr__state_of(L)->host->e;
}

/* l_upstream_handle.c: the handle's methods and mq.sessions & co */
l_upstream_t *mqr__lupstream_check(lua_State *L);
/* Pushes the status table of u. [-0, +1] */
void mqr__lupstream_push_status(lua_State *L, mqr_upstream_t *u);
int mqr__lupstream_names(lua_State *L);          /* mq.sessions() */
int mqr__lupstream_status_by_name(lua_State *L); /* mq.session_status(name) */
int mqr__lupstream_manager_stats(lua_State *L);  /* mq.sessions_stats() */

/* l_upstream_events.c: lifecycle events and answers into Lua */
/* the engine's upstream observer, one per host (arg: the mqr_script_t) */
void mqr__lupstream_observe(void *arg, const mqr_upstream_event_t *ev);
/* Hands st the events kept while it loaded (at its takeover). */
void mqr__lupstream_flush_pending(l_state_t *st);
/* registry keys: the state's dispatcher (what upstream.lua returns) and
 * the table that keeps a loading state's events */
#define UPSTREAM_DISPATCH_KEY "mqrouter.session_dispatch"
#define UPSTREAM_PENDING_KEY "mqrouter.session_pending"
/* up:_publish_async and the C helpers of the Lua half (C.publish_async ...) */
int mqr__lupstream_publish_async(lua_State *L);
int mqr__lupstream_subscribe_async(lua_State *L);
int mqr__lupstream_unsubscribe_async(lua_State *L);
int mqr__lupstream_ping_async(lua_State *L);

/* lua/host/upstream.lua, compiled in (bindings/embed_lua.cmake) */
extern const char mqr__lua_upstream[];
extern const size_t mqr__lua_upstream_len;

#endif
