/*
 * l_message.c — a message as a Lua handler sees it: a read-only userdata
 * whose fields (topic, payload, qos, retain, properties, origin, source,
 * time) are made into Lua values only when read.
 *
 * The userdata holds a ref on the immutable message, so a handler may keep
 * it past its call; the ref goes when Lua collects the userdata.
 */
#include "script.h"

#include <string.h>

typedef struct {
    mqr_msg_t *msg;
} l_msg_t;

void mqr__lmsg_push(lua_State *L, mqr_msg_t *msg)
{
    l_msg_t *m = lua_newuserdata(L, sizeof *m);
    m->msg = msg;
    mqr_msg_ref(msg);
    lua_pushlightuserdata(L, (void *)&mqr__lmsg_push);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_setmetatable(L, -2);
}

static mqr_msg_t *check_msg(lua_State *L, int idx)
{
    l_msg_t *m = luaL_checkudata(L, idx, "mqrouter.message");
    return m->msg;
}

int mqr__lmsg_field(lua_State *L, mqr_msg_t *msg, const char *k)
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

mqr_msg_t *mqr__lmsg_test(lua_State *L, int idx)
{
    l_msg_t *m = luaL_testudata(L, idx, "mqrouter.message");
    return m ? m->msg : NULL;
}

static int l_msg_index(lua_State *L)
{
    mqr_msg_t *msg = check_msg(L, 1);
    const char *k = luaL_checkstring(L, 2);
    if (mqr__lmsg_field(L, msg, k)) return 1;
    /* methods */
    lua_getmetatable(L, 1);
    lua_getfield(L, -1, "methods");
    lua_getfield(L, -1, k);
    if (lua_isnil(L, -1)) return luaL_error(L, "message has no field '%s'", k);
    return 1;
}

static int l_msg_newindex(lua_State *L)
{
    return luaL_error(L, "messages are read-only; build a new one with publish()");
}

static int l_msg_gc(lua_State *L)
{
    l_msg_t *m = luaL_checkudata(L, 1, "mqrouter.message");
    mqr_msg_unref(m->msg);
    m->msg = NULL;
    return 0;
}

static int l_msg_tostring(lua_State *L)
{
    mqr_msg_t *msg = check_msg(L, 1);
    lua_pushfstring(L, "message(%s, %d bytes, qos %d%s)", msg->topic, (int)msg->payload_len,
                    msg->qos, msg->retain ? ", retained" : "");
    return 1;
}

void mqr__lmsg_register(lua_State *L)
{
    luaL_newmetatable(L, "mqrouter.message");
    lua_pushcfunction(L, l_msg_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_msg_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, l_msg_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_msg_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_newtable(L);
    lua_setfield(L, -2, "methods");
    /* a second key for the hot path: a lightuserdata lookup, no string hash */
    lua_pushlightuserdata(L, (void *)&mqr__lmsg_push);
    lua_pushvalue(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
}
