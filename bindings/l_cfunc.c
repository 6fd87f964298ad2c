/*
 * l_cfunc.c — C functions a host registers for rules scripts
 * (mqrouter_lua.h): the registration list of an engine's script host, and
 * installing it into each new rules state.
 *
 * The list lives in the script host, so it outlives every Lua state and is
 * put into each state a load or reload creates, before the script runs.
 * Must not: let a registered function replace a built-in field of the
 * rules API (that would change what existing scripts mean).
 */
#include "mqrouter_lua.h"

#include "script.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NAME 64

struct l_cfunc {
    l_cfunc_t *next;
    char *name;
    lua_CFunction fn;
    void *arg;
};

static bool name_ok(const char *name)
{
    if (!name || !name[0] || strlen(name) > MAX_NAME) return false;
    for (const char *p = name; *p; p++) {
        bool alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_';
        if (!alpha && !(p > name && *p >= '0' && *p <= '9')) return false;
    }
    return true;
}

/* Sets mq.<name> in L's rules API table to f's closure, or clears it when
 * f is NULL. Returns false when set was asked and a field is there already. */
static bool api_set(lua_State *L, const char *name, const l_cfunc_t *f)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "mqrouter.api"); /* [-0, +1] */
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return true;
    }
    if (f) {
        lua_getfield(L, -1, name);
        bool taken = !lua_isnil(L, -1);
        lua_pop(L, 1);
        if (taken) {
            lua_pop(L, 1);
            return false;
        }
        lua_pushlightuserdata(L, f->arg);
        lua_pushcclosure(L, f->fn, 1);
    } else {
        lua_pushnil(L);
    }
    lua_setfield(L, -2, name);
    lua_pop(L, 1); /* net [-0, +0] */
    return true;
}

int mqr__lcfunc_install(mqr_script_t *h, l_state_t *st, char **errmsg)
{
    for (const l_cfunc_t *f = h->cfuncs; f; f = f->next) {
        if (!api_set(st->L, f->name, f)) {
            if (errmsg) {
                char buf[256];
                snprintf(buf, sizeof buf,
                         "mq.%s: the C function the host registered under this name clashes "
                         "with a built-in",
                         f->name);
                *errmsg = strdup(buf);
            }
            return MQR_ESCRIPT;
        }
    }
    return 0;
}

void mqr__lcfunc_free_all(mqr_script_t *h)
{
    for (l_cfunc_t *f = h->cfuncs, *next; f; f = next) {
        next = f->next;
        free(f->name);
        free(f);
    }
    h->cfuncs = NULL;
}

int mqr_lua_register(mqr_engine_t *e, const char *name, lua_CFunction fn, void *arg)
{
    if (!e || !fn || !name_ok(name)) return MQR_EINVAL;
    mqr_script_t *h = mqr__script_host(e);
    if (!h) return MQR_ENOMEM;
    for (const l_cfunc_t *f = h->cfuncs; f; f = f->next)
        if (strcmp(f->name, name) == 0) return MQR_EEXIST;
    l_cfunc_t *f = calloc(1, sizeof *f);
    if (!f || !(f->name = strdup(name))) {
        free(f);
        return MQR_ENOMEM;
    }
    f->fn = fn;
    f->arg = arg;
    /* the rules serving now (and one being loaded) see it at once; a
     * built-in of that name refuses it */
    l_state_t *states[] = {h->cur, h->loading};
    for (int i = 0; i < 2; i++) {
        if (!states[i] || !states[i]->L) continue;
        lua_State *L = states[i]->L;
        lua_getfield(L, LUA_REGISTRYINDEX, "mqrouter.api"); /* [-0, +1] */
        bool taken = false;
        if (lua_istable(L, -1)) {
            lua_getfield(L, -1, name);
            taken = !lua_isnil(L, -1);
            lua_pop(L, 1);
        }
        lua_pop(L, 1); /* net [-0, +0] */
        if (taken) {
            free(f->name);
            free(f);
            return MQR_EEXIST;
        }
    }
    for (int i = 0; i < 2; i++)
        if (states[i] && states[i]->L) api_set(states[i]->L, name, f);
    f->next = h->cfuncs;
    h->cfuncs = f;
    return 0;
}

int mqr_lua_unregister(mqr_engine_t *e, const char *name)
{
    mqr_script_t *h = e && name ? mqr__script_of(e) : NULL;
    if (!h) return MQR_ENOENT;
    for (l_cfunc_t **p = &h->cfuncs; *p; p = &(*p)->next) {
        l_cfunc_t *f = *p;
        if (strcmp(f->name, name) != 0) continue;
        *p = f->next;
        l_state_t *states[] = {h->cur, h->loading};
        for (int i = 0; i < 2; i++)
            if (states[i] && states[i]->L) api_set(states[i]->L, name, NULL);
        free(f->name);
        free(f);
        return 0;
    }
    return MQR_ENOENT;
}

void *mqr_lua_arg(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

mqr_engine_t *mqr_lua_engine(lua_State *L)
{
    l_state_t *st = mqr__state_of(L);
    return st && st->host ? st->host->e : NULL;
}
