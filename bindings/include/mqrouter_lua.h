/*
 * mqrouter_lua.h — C functions of the host callable from rules scripts.
 *
 * The one public header that includes lua.h (LuaJIT's): the engine's core
 * stays Lua-free, this part is implemented by the bindings. A function
 * registered here appears in the rules API table, the one scripts get with
 *
 *     local mq = require "mqrouter"
 *     mq.my_function(...)
 *
 * in the rules loaded now and in every state loaded after (reloads
 * included). It runs on the loop thread, inside the script's protected call
 * and time budget: a lua_error() (luaL_error, luaL_check*) in it is a
 * handler error like any other (logged, counted, the engine keeps going).
 * Conventions as in mqrouter.h: loop thread only, 0 or a negative MQR_E*.
 */
#ifndef MQROUTER_LUA_H
#define MQROUTER_LUA_H

#include "mqrouter.h"

#include <lua.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Makes fn available as mq.<name> to every script of e, now and after
 * reloads. fn is pushed as a C closure with one upvalue, arg (a light
 * userdata, read it with mqr_lua_arg()); arg is the host's and must outlive
 * the registration. name (copied): a Lua identifier of 1..64 bytes.
 * Returns 0, MQR_EINVAL (NULL fn, bad name), MQR_EEXIST (registered already,
 * or a built-in field of mq in the rules loaded now), MQR_ENOMEM.
 * A registered name that a later version's built-in takes makes loading a
 * script fail with MQR_ESCRIPT and a message naming it, never shadows it. */
int mqr_lua_register(mqr_engine_t *e, const char *name, lua_CFunction fn, void *arg);

/* Removes mq.<name> from the rules loaded now and from later loads.
 * Scripts that kept a reference to the function may still call it: arg must
 * stay valid until the next reload. 0 or MQR_ENOENT. */
int mqr_lua_unregister(mqr_engine_t *e, const char *name);

/* Inside a registered function: the arg given at registration. */
void *mqr_lua_arg(lua_State *L);

/* Inside a registered function (or any call from rules): the engine whose
 * rules run L. */
mqr_engine_t *mqr_lua_engine(lua_State *L);

#ifdef __cplusplus
}
#endif
#endif
