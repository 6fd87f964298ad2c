/*
 * l_queue_stats.c — what queues report: q:stats(), mq.queues() and
 * mq.queues_health(), and the statistics table the host API's
 * engine:queue_stats shares (mqr__lqueue_push_stats).
 *
 * Read-only: must not change a queue, only read it (mq.queues_health starts
 * the engine's queue subsystem when nothing did yet, as every queue call does).
 */
#include "l_queue_int.h"

int mqr__lqueue_push_stats(lua_State *L, mqr_queue_t *q)
{
    mqr_queue_stats_t s;
    int rc = mqr__queue_stats(q, &s);
    if (rc < 0) return mqr__lua_fail(L, rc, mqr__queue_name(q));
    lua_createtable(L, 0, 24);
    lq_set_num(L, "published", (double)s.published);
    lq_set_num(L, "delivered", (double)s.delivered);
    lq_set_num(L, "acked", (double)s.acked);
    lq_set_num(L, "nacked", (double)s.nacked);
    lq_set_num(L, "rejected", (double)s.rejected);
    lq_set_num(L, "redelivered", (double)s.redelivered);
    lq_set_num(L, "ack_timeouts", (double)s.ack_timeouts);
    lq_set_num(L, "expired", (double)s.expired);
    lq_set_num(L, "dropped", (double)s.dropped);
    lq_set_num(L, "dead_lettered", (double)s.dead_lettered);
    lq_set_num(L, "discarded", (double)s.discarded);
    lq_set_num(L, "refused_full", (double)s.refused_full);
    lq_set_num(L, "refused_memory", (double)s.refused_memory);
    lq_set_num(L, "duplicates", (double)s.duplicates);
    lq_set_num(L, "depth", (double)s.depth);
    lq_set_num(L, "ready", (double)s.ready);
    lua_createtable(L, 0, MQR_PRIO_LEVELS); /* by_priority = { lowest = n, ... } */
    for (int p = 0; p < MQR_PRIO_LEVELS; p++)
        lq_set_num(L, mqr__lqueue_prio_names[p], (double)s.ready_by_priority[p]);
    lua_setfield(L, -2, "by_priority");
    lq_set_num(L, "delayed", (double)s.delayed);
    lq_set_num(L, "in_flight", (double)s.in_flight);
    lq_set_num(L, "pending_tx", (double)s.pending_tx);
    lq_set_num(L, "dead", (double)s.dead);
    lq_set_num(L, "memory", (double)s.bytes);
    lq_set_num(L, "consumers", (double)s.consumers);
    lq_set_num(L, "uptime", (double)s.uptime_ms / 1000.0);
    return 1;
}

/* q:stats() -> { published, delivered, acked, ..., depth, in_flight, memory,
 * dead_letters_published } */
static int l_q_stats(lua_State *L)
{
    l_queue_t *lq = mqr__lqueue_check(L, 1);
    int n = mqr__lqueue_push_stats(L, lq->q);
    if (n != 1) return n;
    lq_set_num(L, "dead_letters_published", (double)lq->dead_published);
    lq_set_num(L, "dead_letters_publish_failed", (double)lq->dead_publish_failed);
    return 1;
}

/* ---- mq.queues, mq.queues_health ----------------------------------------------------- */

static int add_name(void *arg, mqr_queue_t *q)
{
    lua_State *L = arg;
    lua_pushstring(L, mqr__queue_name(q));
    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
    return 0;
}

/* mq.queues() -> { name... } (every open queue of the engine, sorted) */
int mqr__lqueue_names(lua_State *L)
{
    mqr_engine_t *e = mqr__state_of(L)->host->e;
    lua_newtable(L);
    if (mqr__engine_queues(e)) mqr__queues_foreach(e, add_name, L);
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "sort");
    lua_pushvalue(L, -3);
    lua_call(L, 1, 0);
    lua_pop(L, 1);
    return 1;
}

/* mq.queues_health() -> { status = "ok" | "degraded" | "full" | "stopped",
 * queues, subscribers, memory, max_memory, uptime, totals = stats,
 * transactions = { open, committed, rolled_back, timed_out } } */
int mqr__lqueue_health(lua_State *L)
{
    mqr_engine_t *e = mqr__state_of(L)->host->e;
    if (!mqr__engine_queues(e)) {
        int rc = mqr__queues_init(e, NULL);
        if (rc < 0 && rc != MQR_EEXIST) return mqr__lua_fail(L, rc, NULL);
    }
    mqr_queues_health_t hh;
    int rc = mqr__queues_health(e, &hh);
    if (rc < 0) return mqr__lua_fail(L, rc, NULL);
    lua_createtable(L, 0, 9);
    lua_pushstring(L, mqr__queues_status_name(hh.status));
    lua_setfield(L, -2, "status");
    lq_set_num(L, "queues", (double)hh.queues);
    lq_set_num(L, "subscribers", (double)hh.subs);
    lq_set_num(L, "memory", (double)hh.bytes);
    lq_set_num(L, "max_memory", (double)hh.max_bytes);
    lq_set_num(L, "uptime", (double)hh.uptime_ms / 1000.0);
    lq_set_num(L, "subscriber_dropped", (double)hh.sub_dropped);
    lua_createtable(L, 0, 14);
    const mqr_queue_stats_t *t = &hh.totals;
    lq_set_num(L, "published", (double)t->published);
    lq_set_num(L, "delivered", (double)t->delivered);
    lq_set_num(L, "acked", (double)t->acked);
    lq_set_num(L, "nacked", (double)t->nacked);
    lq_set_num(L, "redelivered", (double)t->redelivered);
    lq_set_num(L, "expired", (double)t->expired);
    lq_set_num(L, "dropped", (double)t->dropped);
    lq_set_num(L, "dead_lettered", (double)t->dead_lettered);
    lq_set_num(L, "refused_full", (double)t->refused_full);
    lq_set_num(L, "refused_memory", (double)t->refused_memory);
    lq_set_num(L, "depth", (double)t->depth);
    lq_set_num(L, "in_flight", (double)t->in_flight);
    lq_set_num(L, "dead", (double)t->dead);
    lq_set_num(L, "memory", (double)t->bytes);
    lua_setfield(L, -2, "totals");
    lua_createtable(L, 0, 4);
    lq_set_num(L, "open", (double)hh.tx_open);
    lq_set_num(L, "committed", (double)hh.tx_committed);
    lq_set_num(L, "rolled_back", (double)hh.tx_rolled_back);
    lq_set_num(L, "timed_out", (double)hh.tx_timed_out);
    lua_setfield(L, -2, "transactions");
    return 1;
}

const luaL_Reg mqr__lqueue_stats_methods[] = {
    {"stats", l_q_stats},
    {NULL, NULL},
};
