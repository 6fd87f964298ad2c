/*
 * l_check.c — errors that name the function: every raise from a binding
 * says which mq.* function (or method) it came from.
 *
 * Lua names a C function from its call site, so a function called through
 * pcall, a local alias or a metamethod shows up as '?'. Instead each Lua-
 * visible function of the bindings is recorded once, with its full name
 * ("mq.route", "queue:publish"), in a weak table of the state; the
 * luaL_argerror / luaL_typerror / luaL_error / luaL_check* of the binding
 * files are macros (script.h) that land here, find the running function in
 * that table and put its name in front of the message. A function not in
 * the table (a host's, a metamethod) keeps the Lua library's behaviour.
 *
 * This file sees the real lauxlib functions: it must not include the macros.
 */
#define MQR_LUA_NO_CHECK_MACROS
#include "script.h"

#include <stdarg.h>
#include <string.h>

#define NAMES_KEY "mqrouter.fnames"

/* The names table, created on first use (weak keys). [-0, +1] */
static void push_names(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, NAMES_KEY);
    if (lua_istable(L, -1)) return;
    lua_pop(L, 1);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, NAMES_KEY);
}

void mqr__lua_name_fn(lua_State *L, int idx, const char *name)
{
    idx = idx < 0 && idx > LUA_REGISTRYINDEX ? lua_gettop(L) + idx + 1 : idx;
    if (!lua_isfunction(L, idx)) return;
    push_names(L);
    lua_pushvalue(L, idx);
    lua_rawget(L, -2);
    bool named = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (!named) { /* the first name sticks: a wrapper's target keeps its own */
        lua_pushvalue(L, idx);
        lua_pushstring(L, name);
        lua_rawset(L, -3);
    }
    lua_pop(L, 1);
}

void mqr__lua_name_table(lua_State *L, int idx, const char *prefix, int depth)
{
    idx = idx < 0 && idx > LUA_REGISTRYINDEX ? lua_gettop(L) + idx + 1 : idx;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) == LUA_TSTRING) {
            const char *k = lua_tostring(L, -2);
            lua_pushfstring(L, "%s.%s", prefix, k);
            if (lua_isfunction(L, -2))
                mqr__lua_name_fn(L, -2, lua_tostring(L, -1));
            else if (lua_istable(L, -2) && depth > 0)
                mqr__lua_name_table(L, -2, lua_tostring(L, -1), depth - 1);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
}

/* The name of the running C function, or NULL when it is not one of ours.
 * The string stays alive in the names table. */
static const char *running_name(lua_State *L)
{
    lua_Debug ar;
    if (!lua_getstack(L, 0, &ar) || !lua_getinfo(L, "f", &ar)) return NULL;
    push_names(L);
    lua_pushvalue(L, -2);
    lua_rawget(L, -2);
    const char *name = lua_tostring(L, -1);
    lua_pop(L, 3);
    return name;
}

/* Raises the message on top, with fname put in front unless it names fname
 * already: "queue 'x': ..." from queue:publish stays as it is for mq.queue
 * and reads "mq.queue 'x': ..." . */
static int raise_named(lua_State *L, const char *fname)
{
    const char *msg = lua_tostring(L, -1);
    luaL_where(L, 1); /* the script position, as luaL_error gives it */
    const char *where = lua_tostring(L, -1);
    size_t flen = strlen(fname);
    const char *dot = strrchr(fname, '.');
    const char *colon = strrchr(fname, ':');
    const char *shortname = colon ? colon + 1 : dot ? dot + 1 : fname;
    size_t slen = strlen(shortname);
    if (strncmp(msg, fname, flen) == 0)
        lua_pushfstring(L, "%s%s", where, msg);
    else if (shortname != fname && strncmp(msg, shortname, slen) == 0 &&
             (msg[slen] == ':' || msg[slen] == ' '))
        lua_pushfstring(L, "%s%s%s", where, fname, msg + slen);
    else
        lua_pushfstring(L, "%s%s: %s", where, fname, msg);
    return lua_error(L);
}

int mqr__lua_error(lua_State *L, const char *fmt, ...)
{
    const char *fname = running_name(L);
    luaL_where(L, 1);
    va_list ap;
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    if (fname)
        lua_remove(L, -2); /* raise_named puts the position back */
    else {
        lua_concat(L, 2);
        return lua_error(L);
    }
    return raise_named(L, fname);
}

int mqr__lua_argerror(lua_State *L, int narg, const char *extramsg)
{
    const char *fname = running_name(L);
    if (!fname) return luaL_argerror(L, narg, extramsg);
    if (strchr(fname, ':')) { /* a method: self is not an argument the caller counts */
        if (narg == 1) return luaL_error(L, "%s: called on a bad self (%s)", fname, extramsg);
        narg--;
    }
    return luaL_error(L, "%s: bad argument #%d (%s)", fname, narg, extramsg);
}

int mqr__lua_typerror(lua_State *L, int narg, const char *tname)
{
    const char *msg = lua_pushfstring(L, "%s expected, got %s", tname,
                                      lua_isnone(L, narg) ? "no value" : luaL_typename(L, narg));
    return mqr__lua_argerror(L, narg, msg);
}

/* The checks of lauxlib, raising through mqr__lua_argerror. */

void mqr__lua_checktype(lua_State *L, int narg, int t)
{
    if (lua_type(L, narg) != t) mqr__lua_typerror(L, narg, lua_typename(L, t));
}

void mqr__lua_checkany(lua_State *L, int narg)
{
    if (lua_isnone(L, narg)) mqr__lua_argerror(L, narg, "value expected");
}

const char *mqr__lua_checklstring(lua_State *L, int narg, size_t *len)
{
    const char *s = lua_type(L, narg) == LUA_TSTRING || lua_type(L, narg) == LUA_TNUMBER
                        ? lua_tolstring(L, narg, len)
                        : NULL;
    if (!s) mqr__lua_typerror(L, narg, "string");
    return s;
}

const char *mqr__lua_optlstring(lua_State *L, int narg, const char *def, size_t *len)
{
    if (lua_isnoneornil(L, narg)) {
        if (len) *len = def ? strlen(def) : 0;
        return def;
    }
    return mqr__lua_checklstring(L, narg, len);
}

lua_Number mqr__lua_checknumber(lua_State *L, int narg)
{
    if (lua_type(L, narg) != LUA_TNUMBER) {
        /* a numeric string is not a number here: qos = "1" is a mistake */
        mqr__lua_typerror(L, narg, "number");
    }
    return lua_tonumber(L, narg);
}

lua_Number mqr__lua_optnumber(lua_State *L, int narg, lua_Number def)
{
    return lua_isnoneornil(L, narg) ? def : mqr__lua_checknumber(L, narg);
}

lua_Integer mqr__lua_checkinteger(lua_State *L, int narg)
{
    lua_Number n = mqr__lua_checknumber(L, narg);
    /* range first: converting a double out of range is undefined */
    if (!(n >= -9007199254740992.0 && n <= 9007199254740992.0) || n != (lua_Number)(lua_Integer)n)
        mqr__lua_argerror(L, narg, "integer expected");
    return (lua_Integer)n;
}

lua_Integer mqr__lua_optinteger(lua_State *L, int narg, lua_Integer def)
{
    return lua_isnoneornil(L, narg) ? def : mqr__lua_checkinteger(L, narg);
}

void *mqr__lua_checkudata(lua_State *L, int narg, const char *tname)
{
    void *p = luaL_testudata(L, narg, tname);
    if (!p) {
        const char *dot = strrchr(tname, '.');
        mqr__lua_typerror(L, narg, dot ? dot + 1 : tname);
    }
    return p;
}
