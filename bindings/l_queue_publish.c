/*
 * l_queue_publish.c — putting messages into a queue: q:publish(payload |
 * msg [, opts]) and q:publish_batch(list), and the building of a queued
 * message and its options (priority, ttl, de-duplication id, topic, qos,
 * retain, properties) that tx:publish (l_queue_tx.c) shares.
 *
 * Misuse raises, naming the function; a refused publish (full, closed,
 * invalid topic) returns nil, err, name. Must not: keep a reference to a
 * message it built past the call.
 */
#include "l_queue_int.h"

#include "topic.h"

#include <stdlib.h>
#include <string.h>

/* seconds at idx -> ms for a TTL: > 0, or -1 for false (never) */
int64_t mqr__lqueue_opt_ttl(lua_State *L, int idx, const char *what)
{
    if (lua_type(L, idx) == LUA_TBOOLEAN && !lua_toboolean(L, idx)) return -1;
    if (lua_type(L, idx) != LUA_TNUMBER) luaL_error(L, "%s must be seconds or false", what);
    double s = lua_tonumber(L, idx);
    if (s == HUGE_VAL) return -1;
    if (!(s > 0) || s > 1e9) luaL_error(L, "%s must be seconds > 0 or false", what);
    int64_t ms = (int64_t)ceil(s * 1000.0);
    return ms > 0 ? ms : 1;
}

/* A dedup id: a positive integer, or a string (hashed). */
static uint64_t opt_id(lua_State *L, int idx)
{
    if (lua_type(L, idx) == LUA_TNUMBER) {
        lua_Number n = lua_tonumber(L, idx);
        if (!(n >= 1) || n != floor(n) || n > 9007199254740992.0)
            luaL_error(L, "id must be an integer >= 1 or a string");
        return (uint64_t)n;
    }
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    if (!s || lua_type(L, idx) != LUA_TSTRING) luaL_error(L, "id must be an integer or a string");
    uint64_t x = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) {
        x ^= (unsigned char)s[i];
        x *= 1099511628211ull;
    }
    return x ? x : 1;
}

static const char *const pub_known[] = {"priority", "ttl",    "id",         "topic",
                                        "qos",      "retain", "properties", NULL};
static const char *const batch_known[] = {"payload", "priority", "ttl",        "id", "topic",
                                          "qos",     "retain",   "properties", NULL};

mqr_msg_t *mqr__lqueue_build(lua_State *L, l_queue_t *lq, int pidx, int oidx,
                             mqr_queue_pub_opts_t *o, const char *fname, const char *const *known,
                             int *nret)
{
    *o = (mqr_queue_pub_opts_t)MQR_QUEUE_PUB_OPTS_INIT;
    *nret = 0;
    bool has_opts = !lua_isnoneornil(L, oidx);
    if (has_opts) {
        if (!lua_istable(L, oidx))
            luaL_error(L, "%s: options must be a table, not a %s", fname, luaL_typename(L, oidx));
        mqr__lua_check_options(L, oidx, fname, known);
        lua_getfield(L, oidx, "priority");
        if (!lua_isnil(L, -1)) {
            if (!lq->priorities)
                luaL_error(L, "queue '%s' has no priorities (declare it with priority = true)",
                           lq->d.name);
            o->priority = mqr__lqueue_priority(L, lua_gettop(L));
        }
        lua_getfield(L, oidx, "ttl");
        if (!lua_isnil(L, -1)) o->ttl_ms = mqr__lqueue_opt_ttl(L, lua_gettop(L), "ttl");
        lua_getfield(L, oidx, "id");
        if (!lua_isnil(L, -1)) {
            if (!lq->dedup)
                luaL_error(L, "queue '%s' has no de-duplication window (declare it with dedup = n)",
                           lq->d.name);
            o->dedup_id = opt_id(L, lua_gettop(L));
        }
        lua_pop(L, 3);
    }
    mqr_msg_t *given = mqr__lmsg_build(L, pidx); /* a message table, as it is now */
    if (given) return given;
    l_qmsg_t *qm = luaL_testudata(L, pidx, QMSG_MT);
    if (qm) {
        mqr_msg_ref(qm->msg);
        return qm->msg;
    }
    l_state_t *st = mqr__state_of(L);
    mqr_msg_init_t in = {.origin = MQR_ORIGIN_LUA};
    in.payload = luaL_checklstring(L, pidx, &in.payload_len);
    in.topic = lq->d.name;
    if (has_opts) {
        lua_getfield(L, oidx, "topic");
        if (!lua_isnil(L, -1)) in.topic = luaL_checkstring(L, -1);
        lua_pop(L, 1); /* the table keeps the string */
    }
    in.topic_len = strlen(in.topic);
    in.origin_name =
        st->chunkname[0] == '@' || st->chunkname[0] == '=' ? st->chunkname + 1 : st->chunkname;
    uint8_t *props = NULL;
    if (has_opts) mqr__publish_opts(L, oidx, fname, known, &in, &props);
    const char *why = NULL;
    int rc = mqr__topic_name_check(in.topic, in.topic_len, &why);
    mqr_msg_t *msg = rc == 0 ? mqr__msg_new(&in) : NULL;
    free(props);
    if (!msg) *nret = mqr__lua_fail(L, rc < 0 ? rc : MQR_ENOMEM, why);
    return msg;
}

/* q:publish(payload | msg [, opts]) -> id | nil, err, name */
static int l_q_publish(lua_State *L)
{
    l_queue_t *lq = mqr__lqueue_check(L, 1);
    mqr_queue_pub_opts_t o;
    int nret;
    mqr_msg_t *msg = mqr__lqueue_build(L, lq, 2, 3, &o, "queue:publish", pub_known, &nret);
    if (!msg) return nret;
    uint64_t id = 0;
    int rc = mqr__queue_publish(lq->q, msg, &o, &id);
    mqr_msg_unref(msg);
    if (rc < 0) return mqr__lua_fail(L, rc, lq->d.name);
    lua_pushnumber(L, (lua_Number)id);
    return 1;
}

/* q:publish_batch({ payload | { payload, priority, ttl, id, topic, ... }, ... })
 *   -> published, failed, { { index, err, name }... } */
static int l_q_publish_batch(lua_State *L)
{
    l_queue_t *lq = mqr__lqueue_check(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int n = (int)lua_objlen(L, 2);
    int published = 0, failed = 0;
    lua_newtable(L); /* failures */
    int fidx = lua_gettop(L);
    for (int i = 1; i <= n; i++) {
        int top = lua_gettop(L);
        lua_rawgeti(L, 2, i);
        int item = lua_gettop(L), pidx = item, oidx = 0;
        if (lua_istable(L, item)) {
            lua_getfield(L, item, "payload");
            pidx = lua_gettop(L);
            oidx = item;
        }
        mqr_queue_pub_opts_t o;
        int nret;
        mqr_msg_t *msg =
            mqr__lqueue_build(L, lq, pidx, oidx ? oidx : pidx + 1, &o, "queue:publish_batch",
                              oidx ? batch_known : pub_known, &nret);
        int rc = msg ? mqr__queue_publish(lq->q, msg, &o, NULL) : -1;
        if (msg) mqr_msg_unref(msg);
        if (rc == 0) {
            published++;
        } else {
            failed++;
            if (msg) mqr__lua_fail(L, rc, lq->d.name); /* else build pushed them */
            lua_createtable(L, 0, 3);                  /* [nil, err, name, failure] */
            lua_pushinteger(L, i);
            lua_setfield(L, -2, "index");
            lua_pushvalue(L, -3);
            lua_setfield(L, -2, "err");
            lua_pushvalue(L, -2);
            lua_setfield(L, -2, "name");
            lua_rawseti(L, fidx, failed);
        }
        lua_settop(L, top);
    }
    lua_pushinteger(L, published);
    lua_pushinteger(L, failed);
    lua_pushvalue(L, fidx);
    return 3;
}

const luaL_Reg mqr__lqueue_publish_methods[] = {
    {"publish", l_q_publish},
    {"publish_batch", l_q_publish_batch},
    {NULL, NULL},
};
