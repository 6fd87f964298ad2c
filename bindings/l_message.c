/*
 * l_message.c — a message as a Lua handler sees it: a plain table with the
 * fields topic, payload, qos, retain, time, origin and source, under a
 * shared metatable that marks it as a message, decodes `properties` on its
 * first read and gives tostring().
 *
 * Why a table of copies and not a userdata over the engine's message: a
 * userdata's fields come from a C __index, one call per field read that the
 * JIT cannot compile, and its reference on the message goes in a __gc
 * finalizer. Together that was about 400 ns of the 1 µs a Lua-routed
 * message cost (bench_inprocess, issue 13). A table built by a small Lua
 * function is compiled by the JIT with the handler that reads it, holds no
 * reference (a handler may keep it as long as it likes) and needs no
 * finalizer.
 *
 * The table is the handler's own: changing a field changes that table and
 * nothing else. Handing it to q:publish() or buf:push() builds an engine
 * message from what the table holds then (mqr__lmsg_build); unchanged,
 * during the handler's call, it is the very message the handler got, so
 * two buffers that keep it hold one message (a reload hands it over once).
 */
#include "script.h"

#include "topic.h"

#include <stdlib.h>
#include <string.h>

/* Registry keys (their addresses) of the metatable and of the table that
 * holds each message's raw properties. */
static char msg_mt_key, raw_props_key;

extern const char mqr__lua_message[];
extern const size_t mqr__lua_message_len;

/* decode(raw or nil) -> the properties table (empty without raw bytes) */
static int l_decode_props(lua_State *L)
{
    size_t len = 0;
    const char *raw = luaL_optlstring(L, 1, NULL, &len);
    mqr__lprops_push(L, (const uint8_t *)raw, raw ? len : 0);
    return 1;
}

static void push_key(lua_State *L, const void *key)
{
    lua_pushlightuserdata(L, (void *)key);
    lua_rawget(L, LUA_REGISTRYINDEX);
}

void mqr__lmsg_register(lua_State *L, int *make_ref, int *deliver_ref)
{
    lua_newtable(L); /* the metatable */
    int mt = lua_gettop(L);
    lua_newtable(L); /* message -> raw properties, weak keys */
    int pkey = lua_gettop(L);
    lua_newtable(L);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, pkey);

    lua_pushliteral(L, "message");
    lua_setfield(L, mt, "__name");
    lua_pushliteral(L, "message"); /* getmetatable(msg); setmetatable refuses */
    lua_setfield(L, mt, "__metatable");

    /* lua/host/message.lua fills the metatable and gives make, deliver */
    if (luaL_loadbuffer(L, mqr__lua_message, mqr__lua_message_len, "=message") != 0)
        lua_error(L); /* a bug in message.lua: state_new runs this unprotected */
    lua_pushvalue(L, mt);
    lua_pushvalue(L, pkey);
    lua_newtable(L); /* origin code -> name */
    for (unsigned o = MQR_ORIGIN_LISTENER; o <= MQR_ORIGIN_STORE; o++) {
        lua_pushstring(L, mqr__origin_kind_name(o));
        lua_rawseti(L, -2, (int)o);
    }
    lua_pushcfunction(L, l_decode_props);
    lua_call(L, 4, 2);
    *deliver_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    *make_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    lua_pushlightuserdata(L, &raw_props_key);
    lua_pushvalue(L, pkey);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, &msg_mt_key);
    lua_pushvalue(L, mt);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pop(L, 2);
}

int mqr__lmsg_args(lua_State *L, const mqr_msg_t *msg)
{
    lua_pushlstring(L, msg->topic, msg->topic_len);
    lua_pushlstring(L, (const char *)msg->payload, msg->payload_len);
    lua_pushinteger(L, msg->qos);
    lua_pushboolean(L, msg->retain);
    lua_pushnumber(L, (lua_Number)msg->created_ms / 1000.0);
    lua_pushinteger(L, msg->origin);
    lua_pushlstring(L, msg->origin_name, mqr__msg_origin_name_len(msg));
    if (msg->props_len)
        lua_pushlstring(L, (const char *)msg->props, msg->props_len);
    else
        lua_pushnil(L);
    return MQR_LMSG_NARGS;
}

void mqr__lmsg_push(lua_State *L, const mqr_msg_t *msg)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, mqr__state_of(L)->lmsg_make_ref);
    lua_call(L, mqr__lmsg_args(L, msg), 1);
}

/* A message being handed to a handler; frames live on the C stack. */
struct l_delivery {
    mqr_msg_t *msg;
    struct l_delivery *outer;
};

int mqr__lmsg_deliver(l_state_t *st, int fn_ref, mqr_msg_t *msg, const char *what, uint64_t *errors,
                      uint64_t *budget_errors)
{
    lua_State *L = st->L;
    mqr__script_push_traceback(st);
    lua_rawgeti(L, LUA_REGISTRYINDEX, st->lmsg_deliver_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn_ref);
    int nargs = 1 + mqr__lmsg_args(L, msg);
    struct l_delivery d = {msg, st->delivering};
    st->delivering = &d;
    int rc = mqr__script_call_pushed(st, nargs, what, errors, budget_errors);
    st->delivering = d.outer;
    return rc;
}

static bool same_bytes(const void *a, size_t alen, const void *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* The message being delivered that in describes exactly, or NULL. */
static mqr_msg_t *delivered_as(l_state_t *st, const mqr_msg_init_t *in)
{
    for (struct l_delivery *d = st ? st->delivering : NULL; d; d = d->outer) {
        mqr_msg_t *m = d->msg;
        const char *src = m->origin_name ? m->origin_name : "";
        const char *in_src = in->origin_name ? in->origin_name : "";
        if (same_bytes(m->topic, m->topic_len, in->topic, in->topic_len) &&
            same_bytes(m->payload, m->payload_len, in->payload, in->payload_len) &&
            same_bytes(m->props, m->props_len, in->props, in->props_len) && m->qos == in->qos &&
            m->retain == in->retain && m->origin == in->origin && m->created_ms == in->created_ms &&
            strcmp(src, in_src) == 0)
            return m;
    }
    return NULL;
}

bool mqr__lmsg_is(lua_State *L, int idx)
{
    if (!lua_istable(L, idx) || !lua_getmetatable(L, idx)) return false;
    push_key(L, &msg_mt_key);
    bool is = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return is;
}

/* The string field k of the message table at idx; raises if it is not
 * one. */
static const char *str_field(lua_State *L, int idx, const char *k, size_t *len)
{
    lua_getfield(L, idx, k);
    if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "message: %s must be a string, not a %s", k, luaL_typename(L, -1));
    const char *s = lua_tolstring(L, -1, len);
    lua_pop(L, 1); /* the table keeps it alive */
    return s;
}

mqr_msg_t *mqr__lmsg_build(lua_State *L, int idx)
{
    if (!mqr__lmsg_is(L, idx)) return NULL;
    if (idx < 0) idx = lua_gettop(L) + idx + 1;
    mqr_msg_init_t in = {0};
    in.topic = str_field(L, idx, "topic", &in.topic_len);
    in.payload = str_field(L, idx, "payload", &in.payload_len);
    const char *why = NULL;
    if (mqr__topic_name_check(in.topic, in.topic_len, &why) < 0)
        luaL_error(L, "message: invalid topic '%s': %s", in.topic, why ? why : "invalid");
    lua_getfield(L, idx, "qos");
    in.qos = mqr__lua_opt_qos(L, -1, "message", 0);
    lua_getfield(L, idx, "retain");
    in.retain = lua_toboolean(L, -1);
    lua_getfield(L, idx, "time");
    lua_Number t = lua_tonumber(L, -1);
    in.created_ms = t > 0 && t < 1e13 ? (uint64_t)(t * 1000.0 + 0.5) : 0;
    lua_pop(L, 3);
    in.origin = MQR_ORIGIN_LUA;
    const char *origin = str_field(L, idx, "origin", NULL);
    for (unsigned o = MQR_ORIGIN_LISTENER; o <= MQR_ORIGIN_STORE; o++)
        if (strcmp(origin, mqr__origin_kind_name(o)) == 0) in.origin = (mqr_origin_t)o;
    lua_getfield(L, idx, "source");
    in.origin_name = lua_tostring(L, -1); /* may be NULL */
    lua_pop(L, 1);
    /* the properties as they are now: never read (the raw bytes), or read
     * and perhaps changed (encoded again) */
    uint8_t *props = NULL;
    push_key(L, &raw_props_key);
    lua_pushvalue(L, idx);
    lua_rawget(L, -2);
    lua_remove(L, -2);
    lua_pushliteral(L, "properties");
    lua_rawget(L, idx);
    if (lua_isnil(L, -1) && lua_isstring(L, -2)) {
        in.props = (const uint8_t *)lua_tolstring(L, -2, &in.props_len);
        in.expiry_s = mqr__lprops_expiry(in.props, in.props_len);
    } else if (!lua_isnil(L, -1)) {
        mqr__lprops_init(L, lua_gettop(L), "message", &in, &props);
    }
    mqr_msg_t *m = delivered_as(mqr__state_of(L), &in);
    if (m)
        mqr_msg_ref(m);
    else
        m = mqr__msg_new(&in);
    lua_pop(L, 2);
    free(props);
    if (!m) luaL_error(L, "out of memory");
    return m;
}

/* Fields of a message for userdata that carry one (queue messages): the
 * same names and values as a message table's. */
int mqr__lmsg_field(lua_State *L, const mqr_msg_t *msg, const char *k)
{
    switch (k[0]) {
    case 't':
        if (strcmp(k, "topic") == 0) {
            lua_pushlstring(L, msg->topic, msg->topic_len);
            return 1;
        }
        if (strcmp(k, "time") == 0) {
            lua_pushnumber(L, (lua_Number)msg->created_ms / 1000.0);
            return 1;
        }
        break;
    case 'p':
        if (strcmp(k, "payload") == 0) {
            lua_pushlstring(L, (const char *)msg->payload, msg->payload_len);
            return 1;
        }
        if (strcmp(k, "properties") == 0) {
            mqr__lprops_push(L, msg->props, msg->props_len);
            return 1;
        }
        break;
    case 'q':
        if (strcmp(k, "qos") == 0) {
            lua_pushinteger(L, msg->qos);
            return 1;
        }
        break;
    case 'r':
        if (strcmp(k, "retain") == 0) {
            lua_pushboolean(L, msg->retain);
            return 1;
        }
        break;
    case 'o':
        if (strcmp(k, "origin") == 0) {
            lua_pushstring(L, mqr_msg_origin_kind(msg));
            return 1;
        }
        break;
    case 's':
        if (strcmp(k, "source") == 0) {
            lua_pushstring(L, msg->origin_name);
            return 1;
        }
        break;
    }
    return 0;
}
