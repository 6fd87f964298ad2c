/*
 * l_props.c — MQTT v5 PUBLISH properties between Lua tables and the raw
 * property bytes a message carries.
 *
 * Lua names: payload_format (0 or 1), message_expiry (seconds),
 * content_type, response_topic, correlation_data, and user: a table of
 * name = value (value a string, or a list of strings when a name repeats).
 * Only properties a PUBLISH may carry from a publisher are accepted; the
 * per-hop ones (topic alias, subscription identifier) are the listener's.
 */
#include "script.h"

#include "codec.h"
#include "topic.h"

#include <stdlib.h>
#include <string.h>

static void add_user(lua_State *L, mqr_mqtt_pbuild_t *b, int name_idx, int value_idx)
{
    size_t nlen, vlen;
    const char *name = luaL_checklstring(L, name_idx, &nlen);
    if (lua_type(L, value_idx) == LUA_TTABLE) {
        size_t n = lua_objlen(L, value_idx);
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, value_idx, (int)i);
            const char *v = lua_tolstring(L, -1, &vlen);
            if (!v) luaL_error(L, "user property '%s' values must be strings", name);
            mqr__mqtt_pb_user(b, name, nlen, v, vlen);
            lua_pop(L, 1);
        }
        return;
    }
    const char *v = lua_tolstring(L, value_idx, &vlen);
    if (!v) luaL_error(L, "user property '%s' must be a string", name);
    mqr__mqtt_pb_user(b, name, nlen, v, vlen);
}

/* Adds every property of the table at idx to b; raises on misuse. */
static void build(lua_State *L, int idx, mqr_mqtt_pbuild_t *b)
{
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "property names must be strings");
        const char *k = lua_tostring(L, -2);
        size_t len;
        if (strcmp(k, "payload_format") == 0) {
            lua_Integer v = luaL_checkinteger(L, -1);
            if (v != 0 && v != 1) luaL_error(L, "payload_format must be 0 or 1");
            mqr__mqtt_pb_byte(b, MQR_MQTT_PROP_PAYLOAD_FORMAT, (uint8_t)v);
        } else if (strcmp(k, "message_expiry") == 0) {
            lua_Number v = luaL_checknumber(L, -1);
            if (!(v >= 0 && v <= 4294967295.0))
                luaL_error(L, "message_expiry must be seconds in 0..4294967295");
            mqr__mqtt_pb_u32(b, MQR_MQTT_PROP_MESSAGE_EXPIRY, (uint32_t)v);
        } else if (strcmp(k, "content_type") == 0) {
            const char *s = luaL_checklstring(L, -1, &len);
            mqr__mqtt_pb_string(b, MQR_MQTT_PROP_CONTENT_TYPE, s, len);
        } else if (strcmp(k, "response_topic") == 0) {
            const char *s = luaL_checklstring(L, -1, &len);
            if (mqr__topic_name_validate(s, len) < 0)
                luaL_error(L, "response_topic '%s' is not a valid topic name", s);
            mqr__mqtt_pb_string(b, MQR_MQTT_PROP_RESPONSE_TOPIC, s, len);
        } else if (strcmp(k, "correlation_data") == 0) {
            const char *s = luaL_checklstring(L, -1, &len);
            mqr__mqtt_pb_binary(b, MQR_MQTT_PROP_CORRELATION_DATA, s, len);
        } else if (strcmp(k, "user") == 0) {
            luaL_checktype(L, -1, LUA_TTABLE);
            int t = lua_gettop(L);
            lua_pushnil(L);
            while (lua_next(L, t)) {
                if (lua_type(L, -2) == LUA_TNUMBER && lua_type(L, -1) == LUA_TTABLE) {
                    /* { {name, value}, ... } keeps order and repeats */
                    lua_rawgeti(L, -1, 1);
                    lua_rawgeti(L, -2, 2);
                    add_user(L, b, lua_gettop(L) - 1, lua_gettop(L));
                    lua_pop(L, 2);
                } else {
                    add_user(L, b, lua_gettop(L) - 1, lua_gettop(L));
                }
                lua_pop(L, 1);
            }
        } else {
            luaL_error(L, "unknown message property '%s'", k);
        }
        lua_pop(L, 1);
    }
}

int mqr__lprops_encode(lua_State *L, int idx, uint8_t **out, size_t *len)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    mqr_mqtt_pbuild_t b;
    mqr__mqtt_pb_init(&b, NULL, 0);
    build(L, idx, &b);
    size_t need = 0;
    int rc = mqr__mqtt_pb_finish(&b, &need);
    if (rc < 0 && rc != MQR_ETOOLARGE) return luaL_error(L, "invalid message properties");
    *out = NULL;
    *len = 0;
    if (need == 0) return 0;
    uint8_t *buf = malloc(need);
    if (!buf) return luaL_error(L, "out of memory");
    mqr__mqtt_pb_init(&b, buf, need);
    build(L, idx, &b);
    if (mqr__mqtt_pb_finish(&b, len) < 0) {
        free(buf);
        return luaL_error(L, "invalid message properties");
    }
    *out = buf;
    return 0;
}

void mqr__lprops_init(lua_State *L, int idx, const char *fname, mqr_msg_init_t *in, uint8_t **props)
{
    *props = NULL;
    if (lua_isnil(L, idx)) return;
    if (!lua_istable(L, idx))
        luaL_error(L, "%s: properties must be a table, not a %s", fname, luaL_typename(L, idx));
    lua_getfield(L, idx, "message_expiry");
    lua_Number x = lua_tonumber(L, -1); /* its range is checked by the encoding below */
    in->expiry_s = x >= 0 && x <= 4294967295.0 ? (uint32_t)x : 0;
    lua_pop(L, 1);
    size_t n = 0;
    mqr__lprops_encode(L, idx, props, &n); /* raises before allocating */
    in->props = *props;
    in->props_len = n;
}

/* Appends value to t[name]; a second value turns it into a list. */
static void push_user(lua_State *L, int t, const mqr_mqtt_prop_t *p)
{
    lua_pushlstring(L, (const char *)p->data, p->len);
    lua_pushvalue(L, -1);
    lua_rawget(L, t);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushlstring(L, (const char *)p->value, p->value_len);
        lua_rawset(L, t);
        return;
    }
    if (lua_type(L, -1) == LUA_TSTRING) {
        lua_createtable(L, 2, 0);
        lua_insert(L, -2);
        lua_rawseti(L, -2, 1);
        lua_pushvalue(L, -2);
        lua_pushvalue(L, -2);
        lua_rawset(L, t);
    }
    lua_pushlstring(L, (const char *)p->value, p->value_len);
    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
    lua_pop(L, 2);
}

uint32_t mqr__lprops_expiry(const uint8_t *props, size_t len)
{
    mqr_mqtt_prop_iter_t it;
    mqr_mqtt_prop_t p;
    mqr__mqtt_props_iter(&it, props, len);
    while (mqr__mqtt_props_next(&it, &p) == 1)
        if (p.id == MQR_MQTT_PROP_MESSAGE_EXPIRY) return (uint32_t)p.num;
    return 0;
}

void mqr__lprops_push(lua_State *L, const uint8_t *props, size_t len)
{
    lua_newtable(L);
    int t = lua_gettop(L);
    mqr_mqtt_prop_iter_t it;
    mqr_mqtt_prop_t p;
    mqr__mqtt_props_iter(&it, props, len);
    while (mqr__mqtt_props_next(&it, &p) == 1) {
        switch (p.id) {
        case MQR_MQTT_PROP_PAYLOAD_FORMAT:
            lua_pushinteger(L, (lua_Integer)p.num);
            lua_setfield(L, t, "payload_format");
            break;
        case MQR_MQTT_PROP_MESSAGE_EXPIRY:
            lua_pushnumber(L, (lua_Number)p.num);
            lua_setfield(L, t, "message_expiry");
            break;
        case MQR_MQTT_PROP_CONTENT_TYPE:
            lua_pushlstring(L, (const char *)p.data, p.len);
            lua_setfield(L, t, "content_type");
            break;
        case MQR_MQTT_PROP_RESPONSE_TOPIC:
            lua_pushlstring(L, (const char *)p.data, p.len);
            lua_setfield(L, t, "response_topic");
            break;
        case MQR_MQTT_PROP_CORRELATION_DATA:
            lua_pushlstring(L, (const char *)p.data, p.len);
            lua_setfield(L, t, "correlation_data");
            break;
        case MQR_MQTT_PROP_USER:
            lua_getfield(L, t, "user");
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                lua_newtable(L);
                lua_pushvalue(L, -1);
                lua_setfield(L, t, "user");
            }
            push_user(L, lua_gettop(L), &p);
            lua_pop(L, 1);
            break;
        default:
            break;
        }
    }
}
