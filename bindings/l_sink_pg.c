/*
 * l_sink_pg.c — mq.pg{...}: the PostgreSQL client (core/sink/pg.h) in Lua.
 *
 * p:_query(sql, params) waits, in a coroutine, for { rows, columns,
 * affected }; p:_insert(table, columns, rows, wait) hands rows to the
 * client's batching (one multi-row INSERT per batch) and, with wait, waits
 * until every row is committed (or the first failure). Parameters and
 * values arrive as strings, or false for SQL NULL: lua/host/sinks.lua
 * turns Lua values into those and adds query, insert, send_insert.
 * Loop thread. Must not: build SQL from values (they are parameters), or
 * resume a coroutine of a state that is ending.
 */
#include "l_sink.h"

#include "pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PG_MT "mqrouter.sink.pg"
#define MAX_PARAMS 65535

static void pg_close(void *obj)
{
    mqr__pg_close(obj);
}

/* mq.pg{ conninfo, name, connections, max_queued, timeout, batch_rows,
 * batch_window, backoff_min, backoff_max } -> client */
int mqr__lsink_pg_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    static const char *const known[] = {"conninfo",    "name",       "connections",  "max_queued",
                                        "timeout",     "batch_rows", "batch_window", "backoff_min",
                                        "backoff_max", NULL};
    mqr__lua_check_options(L, 1, "mq.pg", known);
    mqr_pg_opts_t o = {0};
    lua_getfield(L, 1, "conninfo");
    if (lua_type(L, -1) != LUA_TSTRING)
        return luaL_error(L, "mq.pg: conninfo must be a string (\"host=... dbname=...\" or "
                             "postgresql://...)");
    o.conninfo = lua_tostring(L, -1);
    lua_getfield(L, 1, "name");
    o.name = luaL_optstring(L, -1, NULL);
    lua_pop(L, 2); /* the options table keeps both */
    static const char what[] = "mq.pg";
    o.connections = (uint32_t)mqr__lsink_opt_count(L, what, "connections", 1, 64);
    o.max_queued = (uint32_t)mqr__lsink_opt_count(L, what, "max_queued", 1, 100000000);
    o.timeout_ms = mqr__lsink_opt_ms(L, what, "timeout", 3600);
    o.batch_rows = (uint32_t)mqr__lsink_opt_count(L, what, "batch_rows", 1, 100000);
    o.batch_ms = mqr__lsink_opt_ms(L, what, "batch_window", 60);
    o.backoff_min_ms = mqr__lsink_opt_ms(L, what, "backoff_min", 3600);
    o.backoff_max_ms = mqr__lsink_opt_ms(L, what, "backoff_max", 3600);
    l_state_t *st = mqr__state_of(L);
    mqr__lsink_check_name(L, what, o.name ? o.name : "pg");
    mqr_pg_t *p;
    char *err = NULL;
    int rc = mqr__pg_new(mqr_engine_loop(st->host->e), &o, &p, &err);
    if (rc < 0) { /* the client's message never holds the password */
        lua_pushfstring(L, "mq.pg: %s", err ? err : mqr_strerror(rc));
        free(err);
        return lua_error(L);
    }
    mqr__lsink_push(L, PG_MT, mqr__pg_sink(p), p, pg_close);
    return 1;
}

/* The failure of a request: nil, "EPG: ERROR 23505: ...", "EPG" (a
 * statement the server refused or failed, with its SQLSTATE), else the
 * code's name; then the kind and the SQLSTATE. */
static int push_pg_failure(lua_State *L, const mqr_pg_result_t *r)
{
    int n;
    if (r->sqlstate[0]) {
        lua_pushnil(L);
        lua_pushfstring(L, "EPG: %s", r->reason ? r->reason : r->sqlstate);
        lua_pushliteral(L, "EPG");
        lua_pushstring(L, r->outcome == MQR_SINK_PERMANENT ? "permanent" : "retry");
        n = 4;
    } else {
        n = mqr__lsink_fail(L, r->err, r->reason, r->outcome);
    }
    lua_pushstring(L, r->sqlstate);
    return n + 1;
}

/* { rows = { { col = text or nil } }, columns = { names }, affected } */
static int push_query_result(lua_State *L, void *arg)
{
    const mqr_pg_result_t *r = arg;
    if (r->outcome != MQR_SINK_OK) return push_pg_failure(L, r);
    lua_createtable(L, 0, 3);
    lua_createtable(L, r->cols, 0);
    for (int c = 0; c < r->cols; c++) {
        lua_pushstring(L, r->names[c]);
        lua_rawseti(L, -2, c + 1);
    }
    lua_setfield(L, -2, "columns");
    lua_createtable(L, r->rows, 0);
    for (int i = 0; i < r->rows; i++) {
        lua_createtable(L, 0, r->cols);
        for (int c = 0; c < r->cols; c++) {
            const char *v = r->values[(size_t)i * (size_t)r->cols + (size_t)c];
            if (!v) continue; /* SQL NULL: absent */
            lua_pushstring(L, v);
            lua_setfield(L, -2, r->names[c]);
        }
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "rows");
    lua_pushnumber(L, (lua_Number)r->affected);
    lua_setfield(L, -2, "affected");
    return 1;
}

static void on_query_done(void *arg, const mqr_pg_result_t *r)
{
    mqr__lwait_resume(arg, push_query_result, (void *)r);
}

/* Reads the strings (or false: NULL) of the list at idx into v. */
static void read_values(lua_State *L, int idx, int n, const char **v, size_t *len, const char *what)
{
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, idx, i + 1);
        if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
            v[i] = NULL;
            if (len) len[i] = 0;
        } else if (lua_type(L, -1) == LUA_TSTRING) {
            v[i] = lua_tolstring(L, -1, len ? &len[i] : NULL); /* the list holds it */
        } else {
            luaL_error(L, "%s: value %d is a %s", what, i + 1, luaL_typename(L, -1));
        }
        lua_pop(L, 1);
    }
}

/* p:_query(sql, params) */
static int l_pg_query(lua_State *L)
{
    l_sink_t *s = mqr__lsink_check(L, 1, PG_MT);
    const char *sql = luaL_checkstring(L, 2);
    int n = 0;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        n = (int)lua_objlen(L, 3);
        if (n > MAX_PARAMS) return luaL_error(L, "pg:query: more than %d parameters", MAX_PARAMS);
    }
    const char **v = n ? lua_newuserdata(L, (size_t)n * (sizeof *v + sizeof(size_t))) : NULL;
    size_t *len = n ? (size_t *)(v + n) : NULL;
    if (n) read_values(L, 3, n, v, len, "pg:query");
    l_wait_t *w = mqr__lwait_begin(L, "pg:query");
    char why[256] = "";
    int rc = mqr__pg_query(s->obj, sql, n, v, len, on_query_done, w, why, sizeof why);
    if (rc < 0) {
        mqr__lwait_cancel(w);
        lua_pushfstring(L, "%s: %s", mqr_err_name(rc), why[0] ? why : mqr_strerror(rc));
        return mqr__lsink_fail(L, rc, lua_tostring(L, -1),
                               rc == MQR_EINVAL ? MQR_SINK_PERMANENT : MQR_SINK_RETRY);
    }
    return lua_yield(L, 0);
}

/* Rows of one _insert waited for together: the coroutine resumes after
 * the last, with true or the first failure. */
typedef struct {
    l_wait_t *w;
    mqr_sink_t *sink;
    int left;
    bool failed;
    mqr_sink_outcome_t outcome;
    int err;
    char sqlstate[6];
    char reason[256];
} insert_wait_t;

static int push_insert_result(lua_State *L, void *arg)
{
    const insert_wait_t *iw = arg;
    if (!iw->failed) {
        lua_pushboolean(L, 1);
        return 1;
    }
    mqr_pg_result_t r = {.outcome = iw->outcome, .err = iw->err, .reason = iw->reason};
    memcpy(r.sqlstate, iw->sqlstate, sizeof r.sqlstate);
    return push_pg_failure(L, &r);
}

static void on_row_done(void *arg, const mqr_pg_result_t *r)
{
    insert_wait_t *iw = arg;
    if (r->outcome != MQR_SINK_OK && !iw->failed) {
        iw->failed = true;
        iw->outcome = r->outcome;
        iw->err = r->err;
        memcpy(iw->sqlstate, r->sqlstate, sizeof iw->sqlstate);
        snprintf(iw->reason, sizeof iw->reason, "%s", r->reason ? r->reason : "");
    }
    if (--iw->left > 0) return;
    if (iw->w)
        mqr__lwait_resume(iw->w, push_insert_result, iw);
    else if (iw->failed)
        mqr__lsink_note_failure(iw->sink, iw->reason);
    free(iw);
}

/* p:_insert(table, columns, rows, wait) -> true | failure (wait), or
 * true | nil, "EFULL..." at once (not wait). Rows given before a refusal
 * stay given: the caller learns how many from the failure's text. */
static int l_pg_insert(lua_State *L)
{
    l_sink_t *s = mqr__lsink_check(L, 1, PG_MT);
    const char *table = luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    luaL_checktype(L, 4, LUA_TTABLE);
    bool wait = lua_toboolean(L, 5);
    int ncols = (int)lua_objlen(L, 3), nrows = (int)lua_objlen(L, 4);
    if (ncols < 1 || ncols > 1600)
        return luaL_error(L, "pg:insert: a row needs 1 to 1600 columns, not %d", ncols);
    if (nrows < 1) return luaL_error(L, "pg:insert: no rows");
    const char **cols = lua_newuserdata(L, 2 * (size_t)ncols * sizeof *cols);
    const char **vals = cols + ncols;
    read_values(L, 3, ncols, cols, NULL, "pg:insert columns");
    /* every row checked before any is given: a raise below leaves nothing half done */
    for (int i = 0; i < nrows; i++) {
        lua_rawgeti(L, 4, i + 1);
        if (!lua_istable(L, -1) || (int)lua_objlen(L, -1) != ncols)
            return luaL_error(L, "pg:insert: row %d does not have the %d values of the columns",
                              i + 1, ncols);
        read_values(L, lua_gettop(L), ncols, vals, NULL, "pg:insert");
        lua_pop(L, 1);
    }
    insert_wait_t *iw = calloc(1, sizeof *iw);
    if (!iw) return luaL_error(L, "out of memory");
    iw->sink = s->sink;
    iw->left = 1;                                       /* held until every row is given */
    if (wait) iw->w = mqr__lwait_begin(L, "pg:insert"); /* raises outside a coroutine */
    int given = 0, rc = 0;
    char why[256] = "";
    for (int i = 0; i < nrows && rc == 0; i++) {
        lua_rawgeti(L, 4, i + 1);
        read_values(L, lua_gettop(L), ncols, vals, NULL, "pg:insert");
        iw->left++;
        rc = mqr__pg_insert(s->obj, table, ncols, cols, vals, on_row_done, iw, why, sizeof why);
        lua_pop(L, 1);
        if (rc < 0)
            iw->left--;
        else
            given++;
    }
    if (rc < 0 && given == 0) {
        mqr__lwait_cancel(iw->w);
        free(iw);
        lua_pushfstring(L, "%s: %s", mqr_err_name(rc), why[0] ? why : mqr_strerror(rc));
        return mqr__lsink_fail(L, rc, lua_tostring(L, -1),
                               rc == MQR_EINVAL ? MQR_SINK_PERMANENT : MQR_SINK_RETRY);
    }
    if (rc < 0) { /* some rows given: they are answered; the caller hears of the rest */
        iw->failed = true;
        iw->outcome = rc == MQR_EINVAL ? MQR_SINK_PERMANENT : MQR_SINK_RETRY;
        iw->err = rc;
        snprintf(iw->reason, sizeof iw->reason, "%s: %d of %d rows given, then: %.160s",
                 mqr_err_name(rc), given, nrows, why[0] ? why : mqr_strerror(rc));
    }
    bool refused_some = rc < 0;
    char reason[sizeof iw->reason];
    memcpy(reason, iw->reason, sizeof reason);
    if (--iw->left == 0) { /* cannot happen with a row given: its answer comes later */
        free(iw);
        lua_pushboolean(L, 1);
        return 1;
    }
    if (wait) return lua_yield(L, 0);
    if (refused_some) return mqr__lsink_fail(L, rc, reason, MQR_SINK_RETRY);
    lua_pushboolean(L, 1);
    return 1;
}

void mqr__lsink_pg_register(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"_query", l_pg_query}, {"_insert", l_pg_insert}, {NULL, NULL}};
    mqr__lsink_register(L, PG_MT, methods);
}
