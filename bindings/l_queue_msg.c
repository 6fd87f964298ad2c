/*
 * l_queue_msg.c — the message a queue consumer's handler or q:receive hands
 * to Lua (metatable "mqrouter.queue.message"): its fields (id, attempts,
 * priority, queue, and every field of an MQTT message) and its settlement,
 * msg:ack(), msg:nack([delay]), msg:reject() and msg:defer().
 *
 * msg:defer() marks the message in the frame of the handler call that handed
 * it out (l_queue_consumer.c reads the mark when the handler returns). Must
 * not: settle anything itself past the core queue's calls, or outlive its
 * references (the message and the queue record are counted).
 */
#include "l_queue_int.h"

#include <string.h>

void mqr__lqueue_push_msg(lua_State *L, l_queue_t *lq, const mqr_queue_delivery_t *d,
                          uint64_t serial, size_t idx)
{
    l_qmsg_t *m = lua_newuserdata(L, sizeof *m);
    m->msg = d->msg;
    mqr_msg_ref(d->msg);
    m->lq = lq;
    lq->refs++;
    m->id = d->id;
    m->serial = serial;
    m->idx = (uint16_t)idx;
    m->attempts = d->attempts > UINT16_MAX ? UINT16_MAX : (uint16_t)d->attempts;
    m->prio = (uint8_t)d->priority;
    lua_pushlightuserdata(L, (void *)&mqr__lqueue_push_msg);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_setmetatable(L, -2);
}

static l_qmsg_t *check_qmsg(lua_State *L)
{
    return luaL_checkudata(L, 1, QMSG_MT);
}

static int settled(lua_State *L, int rc, l_qmsg_t *m)
{
    if (rc < 0) return mqr__lua_fail(L, rc, m->lq->d.name);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_qmsg_ack(lua_State *L)
{
    l_qmsg_t *m = check_qmsg(L);
    return settled(L, mqr__queue_ack(m->lq->q, m->id), m);
}

/* msg:nack([delay seconds]): no delay = the queue's backoff */
static int l_qmsg_nack(lua_State *L)
{
    l_qmsg_t *m = check_qmsg(L);
    int64_t delay = -1;
    if (!lua_isnoneornil(L, 2)) {
        double s = luaL_checknumber(L, 2);
        if (!(s >= 0) || s > 1e9) return luaL_argerror(L, 2, "delay must be seconds >= 0");
        delay = (int64_t)(s * 1000.0 + 0.5);
    }
    return settled(L, mqr__queue_nack(m->lq->q, m->id, delay), m);
}

/* msg:reject([reason]): dead-letter it now; the reason (a string, at most
 * 1 024 bytes kept) goes with the dead letter as the user property
 * mqrouter-error: in q:dead_letters() (`error`), in the store, and in the
 * message published on the queue's dead-letter topic. */
static int l_qmsg_reject(lua_State *L)
{
    l_qmsg_t *m = check_qmsg(L);
    size_t len = 0;
    const char *reason = luaL_optlstring(L, 2, NULL, &len);
    if (reason) {
        mqr_luser_prop_t p = {"mqrouter-error", reason, len > 1024 ? 1024 : len};
        mqr_msg_t *tagged = mqr__lmsg_with_user_props(m->msg, &p, 1);
        if (!tagged) return luaL_error(L, "out of memory");
        int rc = mqr__queue_replace_msg(m->lq->q, m->id, tagged);
        if (rc == 0) {
            mqr_msg_unref(m->msg); /* the handle shows the message as it now is */
            m->msg = tagged;
        } else {
            mqr_msg_unref(tagged);
        }
    }
    return settled(L, mqr__queue_reject(m->lq->q, m->id), m);
}

/* msg:defer(): inside its handler, keep the message in flight when the
 * handler returns; settle it later. A pulled message always waits. */
static int l_qmsg_defer(lua_State *L)
{
    l_qmsg_t *m = check_qmsg(L);
    if (m->serial == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    for (l_qframe_t *f = m->lq->qh->frame; f; f = f->prev) {
        if (f->serial != m->serial) continue;
        f->flags[m->idx] |= QF_DEFERRED;
        lua_pushboolean(L, 1);
        return 1;
    }
    return mqr__lua_fail(L, MQR_ENOENT, "defer() works inside the message's handler only");
}

static int l_qmsg_index(lua_State *L)
{
    l_qmsg_t *m = check_qmsg(L);
    const char *k = luaL_checkstring(L, 2);
    switch (k[0]) {
    case 'i':
        if (strcmp(k, "id") == 0) {
            lua_pushnumber(L, (lua_Number)m->id);
            return 1;
        }
        break;
    case 'a':
        if (strcmp(k, "attempts") == 0) {
            lua_pushinteger(L, m->attempts);
            return 1;
        }
        if (strcmp(k, "ack") == 0) {
            lua_pushcfunction(L, l_qmsg_ack);
            return 1;
        }
        break;
    case 'p':
        if (strcmp(k, "priority") == 0) {
            lua_pushinteger(L, m->prio);
            return 1;
        }
        break;
    case 'q':
        if (strcmp(k, "queue") == 0) {
            lua_pushstring(L, m->lq->d.name);
            return 1;
        }
        break;
    case 'n':
        if (strcmp(k, "nack") == 0) {
            lua_pushcfunction(L, l_qmsg_nack);
            return 1;
        }
        break;
    case 'r':
        if (strcmp(k, "reject") == 0) {
            lua_pushcfunction(L, l_qmsg_reject);
            return 1;
        }
        break;
    case 'd':
        if (strcmp(k, "defer") == 0) {
            lua_pushcfunction(L, l_qmsg_defer);
            return 1;
        }
        break;
    case 'm':
        if (strcmp(k, "message") == 0) {
            mqr__lmsg_push(L, m->msg);
            return 1;
        }
        break;
    }
    if (mqr__lmsg_field(L, m->msg, k)) return 1;
    return luaL_error(L, "queue message has no field '%s'", k);
}

static int l_qmsg_newindex(lua_State *L)
{
    return luaL_error(L, "messages are read-only; build a new one with publish()");
}

static int l_qmsg_gc(lua_State *L)
{
    l_qmsg_t *m = check_qmsg(L);
    if (m->msg) mqr_msg_unref(m->msg);
    if (m->lq) mqr__lqueue_unref(m->lq);
    m->msg = NULL;
    m->lq = NULL;
    return 0;
}

static int l_qmsg_tostring(lua_State *L)
{
    l_qmsg_t *m = check_qmsg(L);
    lua_pushfstring(L, "queue message(%s #%d, %s, %d bytes, attempt %d)", m->lq->d.name, (int)m->id,
                    m->msg->topic, (int)m->msg->payload_len, (int)m->attempts);
    return 1;
}

void mqr__lqueue_msg_register(lua_State *L)
{
    luaL_newmetatable(L, QMSG_MT);
    lua_pushcfunction(L, l_qmsg_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_qmsg_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, l_qmsg_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_qmsg_tostring);
    lua_setfield(L, -2, "__tostring");
    /* the hot path finds it by a lightuserdata key */
    lua_pushlightuserdata(L, (void *)&mqr__lqueue_push_msg);
    lua_pushvalue(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
}
