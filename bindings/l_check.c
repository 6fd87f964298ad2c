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
 * The options tables of the bindings are checked here too: unknown keys
 * (mqr__lua_check_options) and typed, ranged values read by a table of
 * what the function takes (mqr__lua_read_options), so every function
 * words the same mistake the same way.
 *
 * This file sees the real lauxlib functions: it must not include the macros.
 */
#define MQR_LUA_NO_CHECK_MACROS
#include "script.h"

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
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

/* ---- options tables ------------------------------------------------------- */

void mqr__lua_check_options(lua_State *L, int idx, const char *fname, const char *const *known)
{
    mqr__lua_checktype(L, idx, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        bool ok = false;
        if (lua_type(L, -1) == LUA_TSTRING)
            for (const char *const *k = known; *k && !ok; k++)
                ok = strcmp(*k, lua_tostring(L, -1)) == 0;
        if (!ok) {
            luaL_Buffer b; /* the names it takes, for the message */
            luaL_buffinit(L, &b);
            for (const char *const *k = known; *k; k++) {
                if (k != known) luaL_addstring(&b, ", ");
                luaL_addstring(&b, *k);
            }
            luaL_pushresult(&b);
            mqr__lua_error(L, "%s: unknown option '%s' (it takes %s)", fname,
                           lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2)
                                                          : luaL_typename(L, -2),
                           lua_tostring(L, -1));
        }
    }
}

#define MAX_OPTIONS 48

static const char *const lopt_want[] = {
    [MQR_LOPT_STRING] = "a string",
    [MQR_LOPT_BOOL] = "true or false",
    [MQR_LOPT_INT] = "an integer",
    [MQR_LOPT_NUMBER] = "a number",
};

/* Stores v in an integer field of o->size bytes. The range check made v fit
 * the field, so its low bytes are the value whether the field is signed or
 * not. */
static void store_int(void *field, const mqr_lopt_t *o, int64_t v)
{
    switch (o->size) {
    case 1:
        *(uint8_t *)field = (uint8_t)v;
        break;
    case 2:
        *(uint16_t *)field = (uint16_t)v;
        break;
    case 4:
        *(uint32_t *)field = (uint32_t)v;
        break;
    default:
        assert(o->size == 8);
        *(uint64_t *)field = (uint64_t)v;
        break;
    }
}

/* Checks the value on top against o and stores it (the default when nil).
 * Raises naming fname and the key. [-0, +0] */
static void read_one(lua_State *L, const char *fname, const mqr_lopt_t *o, void *field)
{
    int t = lua_type(L, -1);
    if (o->type == MQR_LOPT_STRING) {
        assert(o->size == sizeof(const char *));
        if (t != LUA_TNIL && t != LUA_TSTRING) goto wrong_type;
        *(const char **)field = t == LUA_TNIL ? o->sdef : lua_tostring(L, -1);
        return;
    }
    if (o->type == MQR_LOPT_BOOL) {
        assert(o->size == sizeof(bool));
        if (t != LUA_TNIL && t != LUA_TBOOLEAN) goto wrong_type;
        *(bool *)field = t == LUA_TNIL ? o->def != 0 : lua_toboolean(L, -1);
        return;
    }
    double v = o->def;
    if (t == LUA_TBOOLEAN && (o->flags & MQR_LOPT_BOOL01)) {
        v = lua_toboolean(L, -1);
    } else if (t == LUA_TNUMBER) {
        v = lua_tonumber(L, -1);
        if (o->type == MQR_LOPT_INT && v != floor(v))
            mqr__lua_error(L, "%s: option '%s' must be an integer, not %f", fname, o->key, v);
        if (!(v >= o->min && v <= o->max))
            mqr__lua_error(L, "%s: option '%s' out of range: %f given, it takes %f .. %f%s", fname,
                           o->key, v, o->min, o->max, o->unit ? o->unit : "");
    } else if (t != LUA_TNIL) {
        goto wrong_type;
    }
    if (o->type == MQR_LOPT_NUMBER) {
        assert(o->size == sizeof(double));
        *(double *)field = v;
    } else {
        store_int(field, o, (int64_t)v);
    }
    return;
wrong_type:
    mqr__lua_error(L, "%s: option '%s' must be %s, not a %s", fname, o->key, lopt_want[o->type],
                   luaL_typename(L, -1));
}

void mqr__lua_read_options(lua_State *L, int idx, const char *fname, const mqr_lopt_t *opts,
                           size_t n, void *out)
{
    idx = idx < 0 && idx > LUA_REGISTRYINDEX ? lua_gettop(L) + idx + 1 : idx;
    if (!lua_istable(L, idx))
        mqr__lua_error(L, "%s: options must be a table, not a %s", fname, luaL_typename(L, idx));
    assert(n < MAX_OPTIONS);
    const char *known[MAX_OPTIONS];
    for (size_t i = 0; i < n; i++)
        known[i] = opts[i].key;
    known[n] = NULL;
    mqr__lua_check_options(L, idx, fname, known);
    for (size_t i = 0; i < n; i++) {
        if (opts[i].type == MQR_LOPT_TAKEN) continue;
        lua_getfield(L, idx, opts[i].key);
        read_one(L, fname, &opts[i], (char *)out + opts[i].offset);
        lua_pop(L, 1); /* a string stays alive: the options table holds it */
    }
}
