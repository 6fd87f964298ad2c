/*
 * l_queue_tx.c — transactions across queues: mq.transaction([timeout]) and
 * the transaction handle (metatable "mqrouter.queue.transaction"):
 * tx:publish(q, payload [, opts]), tx:commit(), tx:rollback().
 *
 * A transaction dropped without commit is rolled back by its __gc; the core
 * also times it out. Must not: publish anything visible before the commit.
 */
#include "l_queue_int.h"

#include <string.h>

static const char *const tx_known[] = {"priority", "ttl",        "topic", "qos",
                                       "retain",   "properties", NULL};

/* mq.transaction([timeout seconds]) -> tx | nil, err, name */
int mqr__lqueue_transaction(lua_State *L)
{
    mqr_engine_t *e = mqr__state_of(L)->host->e;
    double s = luaL_optnumber(L, 1, 30);
    if (!(s > 0) || s > 86400) return luaL_argerror(L, 1, "timeout must be seconds > 0");
    if (!mqr__engine_queues(e)) {
        int rc = mqr__queues_init(e, NULL);
        if (rc < 0 && rc != MQR_EEXIST) return mqr__lua_fail(L, rc, NULL);
    }
    l_tx_t *tx = lua_newuserdata(L, sizeof *tx);
    memset(tx, 0, sizeof *tx);
    tx->e = e;
    tx->done = true;
    luaL_getmetatable(L, TX_MT);
    lua_setmetatable(L, -2);
    int rc = mqr__queue_tx_begin(e, lq_secs_ms(s), &tx->txid);
    if (rc < 0) return mqr__lua_fail(L, rc, NULL);
    tx->done = false;
    return 1;
}

static l_tx_t *check_tx(lua_State *L)
{
    return luaL_checkudata(L, 1, TX_MT);
}

/* tx:publish(q, payload [, { priority, ttl, topic, ... }]) -> true | nil, err, name */
static int l_tx_publish(lua_State *L)
{
    l_tx_t *tx = check_tx(L);
    l_queue_t *lq = mqr__lqueue_check(L, 2);
    mqr_queue_pub_opts_t o;
    int nret;
    mqr_msg_t *msg = mqr__lqueue_build(L, lq, 3, 4, &o, "tx:publish", tx_known, &nret);
    if (!msg) return nret;
    int rc = mqr__queue_tx_publish(tx->e, tx->txid, lq->q, msg, &o);
    mqr_msg_unref(msg);
    if (rc < 0) return mqr__lua_fail(L, rc, lq->d.name);
    lua_pushboolean(L, 1);
    return 1;
}

static int tx_end(lua_State *L, bool commit)
{
    l_tx_t *tx = check_tx(L);
    int rc =
        commit ? mqr__queue_tx_commit(tx->e, tx->txid) : mqr__queue_tx_rollback(tx->e, tx->txid);
    tx->done = true;
    if (rc < 0) return mqr__lua_fail(L, rc, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_tx_commit(lua_State *L)
{
    return tx_end(L, true);
}

static int l_tx_rollback(lua_State *L)
{
    return tx_end(L, false);
}

/* a transaction dropped without commit is rolled back */
static int l_tx_gc(lua_State *L)
{
    l_tx_t *tx = check_tx(L);
    if (!tx->done && mqr__engine_queues(tx->e)) mqr__queue_tx_rollback(tx->e, tx->txid);
    tx->done = true;
    return 0;
}

void mqr__lqueue_tx_register(lua_State *L)
{
    static const luaL_Reg tx_methods[] = {
        {"publish", l_tx_publish},
        {"commit", l_tx_commit},
        {"rollback", l_tx_rollback},
        {NULL, NULL},
    };
    mqr__lua_class(L, TX_MT, tx_methods, l_tx_gc, NULL);
}
