/*
 * l_queue_dlq.c — a queue's dead letters: publishing each one to the
 * queue's `dead_letter` topic from the core's on_dead hook, and
 * q:dlq_stats, q:dead_letters, q:redrive, q:replay and q:dlq_purge.
 *
 * A dead letter goes out as an MQTT message with the original payload, QoS
 * and properties plus user properties saying where it came from and why.
 * Must not: fail the core's dead-lettering when that publish fails (it is
 * counted and logged), or keep the borrowed messages of a listing.
 */
#include "l_queue_int.h"

#include "codec.h"
#include "store_queue.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The dead letter goes out on the queue's dead_letter topic with the
 * original payload, QoS and properties plus the user properties
 * mqrouter-queue, mqrouter-topic, mqrouter-reason and mqrouter-attempts. */
void mqr__lqueue_on_dead(void *arg, mqr_queue_t *q, const mqr_queue_dead_t *dd)
{
    (void)q;
    l_queue_t *lq = arg;
    if (!lq->dead_topic) return;
    const mqr_msg_t *msg = dd->msg;
    const char *reason = mqr__queue_reason_name(dd->reason);
    char attempts[16];
    snprintf(attempts, sizeof attempts, "%u", dd->attempts);
    const mqr_luser_prop_t extra[] = {
        {"mqrouter-queue", lq->d.name, strlen(lq->d.name)},
        {"mqrouter-topic", msg->topic, msg->topic_len},
        {"mqrouter-reason", reason, strlen(reason)},
        {"mqrouter-attempts", attempts, strlen(attempts)},
    };
    lq->refs++; /* a route reached by this publish may close the queue */
    int rc = mqr__ldead_letter(lq->qh->h->e, msg, lq->dead_topic, lq->d.name, extra, 4);
    if (rc < 0) {
        lq->dead_publish_failed++;
        MQR_LOG_E("rules", "queue '%s': dead letter to '%s' failed: %s", lq->d.name, lq->dead_topic,
                  mqr_strerror(rc));
    } else {
        lq->dead_published++;
    }
    mqr__lqueue_unref(lq);
}

static void push_by_reason(lua_State *L, const char *key, const uint64_t *v)
{
    lua_createtable(L, 0, MQR_QREASON_COUNT);
    for (int r = 0; r < MQR_QREASON_COUNT; r++)
        lq_set_num(L, mqr__queue_reason_name(r), (double)v[r]);
    lua_setfield(L, -2, key);
}

/* q:dlq_stats() -> { total, depth, by_reason = {...}, depth_by_reason,
 * redriven, purged, overflow } */
static int l_q_dlq_stats(lua_State *L)
{
    l_queue_t *lq = mqr__lqueue_check(L, 1);
    mqr_queue_dlq_stats_t s;
    int rc = mqr__queue_dlq_stats(lq->q, &s);
    if (rc < 0) return mqr__lua_fail(L, rc, lq->d.name);
    lua_createtable(L, 0, 7);
    lq_set_num(L, "total", (double)s.total);
    lq_set_num(L, "depth", (double)s.depth);
    push_by_reason(L, "by_reason", s.by_reason);
    uint64_t d[MQR_QREASON_COUNT];
    for (int r = 0; r < MQR_QREASON_COUNT; r++)
        d[r] = s.depth_by_reason[r];
    push_by_reason(L, "depth_by_reason", d);
    lq_set_num(L, "redriven", (double)s.redriven);
    lq_set_num(L, "purged", (double)s.purged);
    lq_set_num(L, "overflow", (double)s.overflow);
    return 1;
}

/* q:dead_letters([max [, skip]]) -> { { id, topic, payload, reason,
 * attempts, priority, dead_at, message }... } oldest first */
static int l_q_dead_letters(lua_State *L)
{
    l_queue_t *lq = mqr__lqueue_check(L, 1);
    lua_Integer max = luaL_optinteger(L, 2, 100), skip = luaL_optinteger(L, 3, 0);
    if (max < 0 || max > 100000) return luaL_argerror(L, 2, "max must be 0..100000");
    if (skip < 0) return luaL_argerror(L, 3, "skip must be >= 0");
    mqr_queue_dead_t *d = malloc(((size_t)max + 1) * sizeof *d);
    if (!d) return luaL_error(L, "out of memory");
    int n = mqr__queue_dlq_list(lq->q, (size_t)skip, (size_t)max, d);
    if (n < 0) {
        free(d);
        return mqr__lua_fail(L, n, lq->d.name);
    }
    /* the messages are borrowed: every push below may run the GC, never the
     * queue, so they stay valid through the loop */
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_createtable(L, 0, 8);
        lq_set_num(L, "id", (double)d[i].id);
        lua_pushlstring(L, d[i].msg->topic, d[i].msg->topic_len);
        lua_setfield(L, -2, "topic");
        lua_pushlstring(L, (const char *)d[i].msg->payload, d[i].msg->payload_len);
        lua_setfield(L, -2, "payload");
        lua_pushstring(L, mqr__queue_reason_name(d[i].reason));
        lua_setfield(L, -2, "reason");
        const char *err;
        size_t elen;
        if (mqr__lmsg_user_prop(d[i].msg, "mqrouter-error", &err, &elen)) {
            lua_pushlstring(L, err, elen);
            lua_setfield(L, -2, "error");
        }
        lua_pushinteger(L, d[i].attempts);
        lua_setfield(L, -2, "attempts");
        lua_pushinteger(L, d[i].priority);
        lua_setfield(L, -2, "priority");
        lq_set_num(L, "dead_at", (double)d[i].dead_at_ms / 1000.0);
        mqr__lmsg_push(L, d[i].msg);
        lua_setfield(L, -2, "message");
        lua_rawseti(L, -2, i + 1);
    }
    free(d);
    return 1;
}

/* q:redrive([n]) -> moved | nil, err, name (all when n is absent) */
static int l_q_redrive(lua_State *L)
{
    l_queue_t *lq = mqr__lqueue_check(L, 1);
    lua_Integer n = luaL_optinteger(L, 2, 0);
    if (n < 0) return luaL_argerror(L, 2, "n must be >= 1 (or absent: all)");
    int rc = mqr__queue_redrive(lq->q, (size_t)n);
    if (rc < 0) return mqr__lua_fail(L, rc, lq->d.name);
    lua_pushinteger(L, rc);
    return 1;
}

/* q:dlq_purge([n]) -> removed */
/* q:replay([filter [, { dead = bool }]]) -> n: publishes again the stored
 * (durable) messages of q whose topic matches filter ("#" by default),
 * oldest first, dead letters too with dead = true; q itself is unchanged.
 * nil, err, name for a queue that is not durable. */
static int l_q_replay(lua_State *L)
{
    l_queue_t *lq = mqr__lqueue_check(L, 1);
    const char *filter = luaL_optstring(L, 2, "#");
    unsigned flags = 0;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        static const char *const known[] = {"dead", NULL};
        mqr__lua_check_options(L, 3, "queue:replay", known);
        lua_getfield(L, 3, "dead");
        if (lua_toboolean(L, -1)) flags |= MQR_QREPLAY_DEAD;
        lua_pop(L, 1);
    }
    int rc = mqr__store_queue_replay(lq->qh->h->e, lq->q, filter, flags, NULL, NULL);
    if (rc < 0) return mqr__lua_fail(L, rc, lq->d.name);
    lua_pushinteger(L, rc);
    return 1;
}

static int l_q_dlq_purge(lua_State *L)
{
    l_queue_t *lq = mqr__lqueue_check(L, 1);
    lua_Integer n = luaL_optinteger(L, 2, 0);
    if (n < 0) return luaL_argerror(L, 2, "n must be >= 1 (or absent: all)");
    int rc = mqr__queue_dlq_purge(lq->q, (size_t)n);
    if (rc < 0) return mqr__lua_fail(L, rc, lq->d.name);
    lua_pushinteger(L, rc);
    return 1;
}

const luaL_Reg mqr__lqueue_dlq_methods[] = {
    {"dead_letters", l_q_dead_letters}, {"redrive", l_q_redrive}, {"dlq_stats", l_q_dlq_stats},
    {"dlq_purge", l_q_dlq_purge},       {"replay", l_q_replay},   {NULL, NULL},
};
