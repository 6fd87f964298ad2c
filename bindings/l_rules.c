/*
 * l_rules.c — the `mqrouter` module as rule scripts see it: route, publish,
 * every, after, log, upstream (and its older name session), and handles to stop routes and timers.
 *
 * Conventions (luv's): wrong argument types raise; a runtime failure such as
 * an invalid topic returns nil, "ENAME: text", "ENAME".
 */
#include "script.h"

#include "topic.h"

#include <stdlib.h>
#include <string.h>

void mqr__lua_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc,
                    lua_CFunction tostring)
{
    luaL_newmetatable(L, name);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    const char *dot = strrchr(name, '.'); /* "mqrouter.queue" -> "queue:publish" */
    for (const luaL_Reg *m = methods; m->name; m++) {
        lua_getfield(L, -1, m->name);
        lua_pushfstring(L, "%s:%s", dot ? dot + 1 : name, m->name);
        mqr__lua_name_fn(L, -2, lua_tostring(L, -1));
        lua_pop(L, 2);
    }
    lua_setfield(L, -2, "__index");
    if (gc) {
        lua_pushcfunction(L, gc);
        lua_setfield(L, -2, "__gc");
    }
    if (tostring) {
        lua_pushcfunction(L, tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
}

int mqr__lua_fail(lua_State *L, int err, const char *detail)
{
    lua_pushnil(L);
    if (detail)
        lua_pushfstring(L, "%s: %s (%s)", mqr_err_name(err), mqr_strerror(err), detail);
    else
        lua_pushfstring(L, "%s: %s", mqr_err_name(err), mqr_strerror(err));
    lua_pushstring(L, mqr_err_name(err));
    return 3;
}

static l_state_t *state_up(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* route(filter, fn | queue [, {qos, dead_letter [, priority, ttl]}]) */
static int l_route(lua_State *L)
{
    l_state_t *st = state_up(L);
    const char *filter = luaL_checkstring(L, 1);
    if (!lua_isfunction(L, 2) && !luaL_testudata(L, 2, "mqrouter.queue"))
        return luaL_typerror(L, 2, "function or queue");
    return mqr__route_declare(L, st, filter, 2, NULL, 3);
}

int mqr__lua_opt_qos(lua_State *L, int idx, const char *fname, int def)
{
    if (lua_isnil(L, idx)) return def;
    lua_Number n = lua_type(L, idx) == LUA_TNUMBER ? lua_tonumber(L, idx) : -1;
    if (n != 0 && n != 1 && n != 2) {
        if (lua_type(L, idx) == LUA_TNUMBER)
            luaL_error(L, "%s: qos must be 0, 1 or 2, not %s", fname, lua_tostring(L, idx));
        luaL_error(L, "%s: qos must be the number 0, 1 or 2, not a %s", fname,
                   luaL_typename(L, idx));
    }
    return (int)n;
}

static const char *const publish_known[] = {"qos", "retain", "properties", NULL};

/* Reads publish options at idx into in (qos, retain, properties). The
 * properties buffer, if any, is returned for the caller to free. known: the
 * options the caller's function takes (NULL: qos, retain, properties). */
int mqr__publish_opts(lua_State *L, int idx, const char *fname, const char *const *known,
                      mqr_msg_init_t *in, uint8_t **props)
{
    *props = NULL;
    if (lua_isnoneornil(L, idx)) return 0;
    if (!lua_istable(L, idx))
        return luaL_error(L, "%s: options must be a table {qos, retain, properties}, not a %s",
                          fname, luaL_typename(L, idx));
    mqr__lua_check_options(L, idx, fname, known ? known : publish_known);
    lua_getfield(L, idx, "qos");
    in->qos = mqr__lua_opt_qos(L, -1, fname, 0);
    lua_getfield(L, idx, "retain");
    if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
        return luaL_error(L, "%s: retain must be a boolean, not a %s", fname, luaL_typename(L, -1));
    in->retain = lua_toboolean(L, -1);
    lua_pop(L, 2);
    lua_getfield(L, idx, "properties");
    mqr__lprops_init(L, lua_gettop(L), fname, in, props);
    lua_pop(L, 1);
    return 0;
}

/* publish(topic, payload [, {qos, retain, properties}]) -> true | nil, err, name */
static int l_publish(lua_State *L)
{
    l_state_t *st = state_up(L);
    mqr_msg_init_t in = {.origin = MQR_ORIGIN_LUA};
    in.topic = luaL_checklstring(L, 1, &in.topic_len);
    in.payload = luaL_checklstring(L, 2, &in.payload_len);
    uint8_t *props;
    mqr__publish_opts(L, 3, "mq.publish", NULL, &in, &props);
    if (st->host->fake_clock) in.created_ms = st->host->clock_ms;
    in.origin_name =
        st->chunkname[0] == '@' || st->chunkname[0] == '=' ? st->chunkname + 1 : st->chunkname;
    const char *why = NULL;
    int rc = mqr__topic_name_check(in.topic, in.topic_len, &why);
    if (rc == 0) rc = mqr__engine_publish_data(st->host->e, &in);
    free(props);
    if (rc < 0) return mqr__lua_fail(L, rc, why);
    lua_pushboolean(L, 1);
    return 1;
}

static int timer_common(lua_State *L, bool repeat)
{
    double s = luaL_checknumber(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    return mqr__timer_declare(L, state_up(L), s, repeat, 2);
}

static int l_every(lua_State *L)
{
    return timer_common(L, true);
}

static int l_after(lua_State *L)
{
    return timer_common(L, false);
}

/* log(level, ...) or log.info(...): values joined by spaces, with the
 * script position of the caller. */
static int log_at(lua_State *L, int level, int first)
{
    if (level > mqr__log_level) return 0;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    int n = lua_gettop(L);
    for (int i = first; i <= n; i++) {
        if (i > first) luaL_addchar(&b, ' ');
        lua_getglobal(L, "tostring");
        lua_pushvalue(L, i);
        lua_call(L, 1, 1);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    lua_Debug ar;
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar) && ar.currentline > 0)
        mqr__log_write(level, "lua", "%s (%s:%d)", lua_tostring(L, -1), ar.short_src,
                       ar.currentline);
    else
        mqr__log_write(level, "lua", "%s", lua_tostring(L, -1));
    return 0;
}

static int l_log_error(lua_State *L)
{
    return log_at(L, MQR_LOG_ERROR, 1);
}
static int l_log_warn(lua_State *L)
{
    return log_at(L, MQR_LOG_WARN, 1);
}
static int l_log_info(lua_State *L)
{
    return log_at(L, MQR_LOG_INFO, 1);
}
static int l_log_debug(lua_State *L)
{
    return log_at(L, MQR_LOG_DEBUG, 1);
}

/* log("warn", ...) called on the table */
static int l_log_call(lua_State *L)
{
    const char *name = luaL_checkstring(L, 2);
    int level = mqr_log_level_parse(name);
    if (level < 0)
        return luaL_error(L,
                          "mq.log: level must be \"error\", \"warn\", \"info\" or \"debug\", not "
                          "'%s'",
                          name);
    return log_at(L, level, 3);
}

/* ---- route and timer handles ---- */

static l_route_t *check_route(lua_State *L)
{
    l_route_t **ud = luaL_checkudata(L, 1, "mqrouter.route");
    return *ud;
}

static int l_route_stop(lua_State *L)
{
    l_route_t *r = check_route(L);
    if (!r->stopped) {
        r->stopped = true;
        mqr_engine_t *e = r->st->host->e;
        if (r->entry) {
            mqr__router_remove(mqr__engine_router(e), r->entry);
            if (r->upstream && r->upstream->u) mqr__upstream_unsubscribe(r->upstream->u, r->filter);
        }
        r->entry = NULL;
        mqr__lasync_route_stop(r); /* its pending messages go; waiting handlers end */
    }
    return 0;
}

static void set_num(lua_State *L, const char *key, uint64_t v)
{
    lua_pushnumber(L, (lua_Number)v);
    lua_setfield(L, -2, key);
}

/* { filter, calls, errors, budget_errors, dead_lettered, active [, running,
 * pending, dropped, abandoned for an async route] } [-0, +1] */
static void push_route_stats(lua_State *L, const l_route_t *r)
{
    lua_createtable(L, 0, 10);
    if (r->async) {
        set_num(L, "running", r->running);
        set_num(L, "pending", r->pending_n);
        set_num(L, "dropped", r->dropped);
        set_num(L, "abandoned", r->abandoned);
    }
    lua_pushstring(L, r->filter);
    lua_setfield(L, -2, "filter");
    set_num(L, "calls", r->calls);
    set_num(L, "errors", r->errors);
    set_num(L, "budget_errors", r->budget_errors);
    set_num(L, "dead_lettered", r->dead_lettered);
    lua_pushboolean(L, r->entry != NULL);
    lua_setfield(L, -2, "active");
}

void mqr__lstats_push(lua_State *L, mqr_engine_t *e, const l_state_t *st)
{
    const mqr_script_t *h = mqr__script_of(e);
    lua_createtable(L, 0, 10);
    lua_newtable(L);
    int i = 0;
    for (const l_route_t *r = st ? st->routes : NULL; r; r = r->next) {
        push_route_stats(L, r);
        lua_rawseti(L, -2, ++i);
    }
    lua_setfield(L, -2, "routes");
    set_num(L, "published", mqr__engine_stats(e)->published);
    set_num(L, "refused", mqr__engine_stats(e)->refused);
    set_num(L, "routing_loops", mqr__engine_router(e)->loops);
    set_num(L, "reloads", h ? h->reloads : 0);
    set_num(L, "reload_failures", h ? h->reload_failures : 0);
    set_num(L, "handler_errors", h ? h->handler_errors : 0);
    set_num(L, "budget_errors", h ? h->budget_errors : 0);
    set_num(L, "reload_dropped", h ? h->reload_dropped : 0);
}

static int l_route_stats(lua_State *L)
{
    push_route_stats(L, check_route(L));
    return 1;
}

static int l_timer_stop(lua_State *L)
{
    l_timer_t **ud = luaL_checkudata(L, 1, "mqrouter.timer");
    if (*ud) mqr__timer_release(*ud);
    return 0;
}

static int l_timer_gc(lua_State *L)
{
    l_timer_t **ud = luaL_checkudata(L, 1, "mqrouter.timer");
    if (*ud) (*ud)->ud = NULL;
    return 0;
}

/* stats() -> { routes = { {filter, calls, errors, ...}... }, reloads, ... } */
static int l_stats(lua_State *L)
{
    l_state_t *st = state_up(L);
    mqr__lstats_push(L, st->host->e, st);
    return 1;
}

/* topic_valid(s [, filter]) -> true | false, reason */
static int l_topic_valid(lua_State *L)
{
    size_t len;
    const char *t = luaL_checklstring(L, 1, &len);
    const char *why = NULL;
    int rc = lua_toboolean(L, 2) ? mqr__topic_filter_parse(t, len, &(mqr_topic_filter_t){0}, &why)
                                 : mqr__topic_name_check(t, len, &why);
    lua_pushboolean(L, rc == 0);
    if (rc == 0) return 1;
    lua_pushstring(L, why ? why : mqr_strerror(rc));
    return 2;
}

static int l_topic_matches(lua_State *L)
{
    size_t flen, nlen;
    const char *f = luaL_checklstring(L, 1, &flen);
    const char *n = luaL_checklstring(L, 2, &nlen);
    lua_pushboolean(L, mqr__topic_matches(f, flen, n, nlen));
    return 1;
}

static int l_now(lua_State *L)
{
    l_state_t *st = mqr__state_of(L);
    lua_pushnumber(L, (lua_Number)mqr__script_now_ms(st ? st->host : NULL) / 1000.0);
    return 1;
}

int mqr__rules_open(lua_State *L)
{
    l_state_t *st = mqr__state_of(L);

    static const luaL_Reg route_methods[] = {
        {"stop", l_route_stop}, {"stats", l_route_stats}, {NULL, NULL}};
    mqr__lua_class(L, "mqrouter.route", route_methods, NULL, NULL);
    static const luaL_Reg timer_methods[] = {{"stop", l_timer_stop}, {NULL, NULL}};
    mqr__lua_class(L, "mqrouter.timer", timer_methods, l_timer_gc, NULL);

    static const luaL_Reg fns[] = {
        {"route", l_route},
        {"publish", l_publish},
        {"every", l_every},
        {"after", l_after},
        {"stats", l_stats},
        {"upstream", mqr__lupstream_new},
        {"session", mqr__lupstream_new_session},
        {"listen", mqr__llisten_new},
        {"queue", mqr__lqueue_new},
        {"transaction", mqr__lqueue_transaction},
        {"queues", mqr__lqueue_names},
        {"queues_health", mqr__lqueue_health},
        {"subscribe", mqr__lsub_new},
        {"admin", mqr__ladmin},
        {"file", mqr__lsink_file_new},
        {NULL, NULL},
    };
    lua_newtable(L);
    lua_pushlightuserdata(L, st); /* each function's upvalue: the state */
    luaL_setfuncs(L, fns, 1);
    lua_pushcfunction(L, l_topic_valid);
    lua_setfield(L, -2, "topic_valid");
    lua_pushcfunction(L, l_topic_matches);
    lua_setfield(L, -2, "topic_matches");
    lua_pushcfunction(L, l_now);
    lua_setfield(L, -2, "now");
    lua_pushstring(L, MQR_VERSION_STRING);
    lua_setfield(L, -2, "version");

    /* log: a table of levels, callable as log(level, ...) */
    lua_createtable(L, 0, 4);
    lua_pushcfunction(L, l_log_error);
    lua_setfield(L, -2, "error");
    lua_pushcfunction(L, l_log_warn);
    lua_setfield(L, -2, "warn");
    lua_pushcfunction(L, l_log_info);
    lua_setfield(L, -2, "info");
    lua_pushcfunction(L, l_log_debug);
    lua_setfield(L, -2, "debug");
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, l_log_call);
    mqr__lua_name_fn(L, -1, "mq.log");
    lua_setfield(L, -2, "__call");
    lua_setmetatable(L, -2);
    lua_setfield(L, -2, "log");
    return 1;
}
