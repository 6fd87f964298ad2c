/*
 * l_auth.c — the Lua face of authentication: mq.authenticate(fn) and
 * mq.authorize(fn), the hooks the listener calls (core/auth/auth.h), and
 * mq.users.add/remove/list over the store's credentials.
 *
 * A hook function lives in its state's registry; the engine's hook table
 * points at the serving state only, and is switched by state activation, so
 * a reload that fails keeps the old hooks and one that succeeds replaces
 * them between two packets. Every call goes through mqr__script_call (budget,
 * traceback, counted errors); a hook that errors or runs out of budget
 * denies. Must not: keep a password after the call returns.
 */
#include "script.h"

#include "auth.h"
#include "mqrouter_auth.h"
#include "codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_AUTHN "mqrouter.auth.authenticate"
#define KEY_AUTHZ "mqrouter.auth.authorize"
#define KEY_AUTHZ_CACHE "mqrouter.auth.authorize_cache"

/* ---- calling the hooks ---------------------------------------------------- */

typedef struct {
    int action; /* authorize: MQR_AUTH_*, whose answer the code must fit; 0: authenticate */
    bool returned;
    bool allow;
    int code; /* v5 reason from the second value, 0 = default */
} hook_result_t;

static const struct {
    const char *name;
    int code;
} reasons[] = {
    {"unspecified", MQR_MQTT_RC_UNSPECIFIED},
    {"not_authorized", MQR_MQTT_RC_NOT_AUTHORIZED},
    {"bad_username_or_password", MQR_MQTT_RC_BAD_USERNAME_PASSWORD},
    {"client_identifier_not_valid", MQR_MQTT_RC_CLIENT_ID_INVALID},
    {"server_unavailable", MQR_MQTT_RC_SERVER_UNAVAILABLE},
    {"server_busy", MQR_MQTT_RC_SERVER_BUSY},
    {"banned", MQR_MQTT_RC_BANNED},
    {"bad_authentication_method", MQR_MQTT_RC_BAD_AUTH_METHOD},
    {"quota_exceeded", MQR_MQTT_RC_QUOTA_EXCEEDED},
    {"use_another_server", MQR_MQTT_RC_USE_ANOTHER_SERVER},
    {"server_moved", MQR_MQTT_RC_SERVER_MOVED},
    {"connection_rate_exceeded", MQR_MQTT_RC_CONNECTION_RATE_EXCEEDED},
};

/* Runs inside the protected call: fn(args...), then reads its results into
 * the hook_result_t of upvalue 1. */
static int l_trampoline(lua_State *L)
{
    hook_result_t *r = lua_touserdata(L, lua_upvalueindex(1));
    lua_call(L, lua_gettop(L) - 1, 2);
    r->returned = true;
    r->allow = lua_toboolean(L, -2) != 0 && lua_type(L, -2) == LUA_TBOOLEAN;
    if (r->allow || lua_isnil(L, -1)) return 0;
    const char *hook = r->action ? "authorize" : "authenticate";
    if (lua_type(L, -1) == LUA_TNUMBER) {
        lua_Number n = lua_tonumber(L, -1);
        if (n >= 0x80 && n <= 0xFF) r->code = (int)n;
        if (r->action && (r->code != n || !mqr__auth_reason_ok(r->action, r->code))) {
            /* a code the answering packet cannot carry is the script's
             * mistake: raised, so it is logged with its position and
             * counted; the denial then goes out as 0x87 */
            r->code = 0;
            char shown[32];
            if (n >= 0 && n <= 0xFF && n == (int)n)
                snprintf(shown, sizeof shown, "0x%02X", (unsigned)n);
            else
                snprintf(shown, sizeof shown, "%.14g", (double)n);
            return luaL_error(L,
                              "authorize: reason %s is not a %s failure code (%s): 0x87 sent "
                              "instead",
                              shown, r->action == MQR_AUTH_PUBLISH ? "PUBACK/PUBREC" : "SUBACK",
                              r->action == MQR_AUTH_PUBLISH
                                  ? "0x80 0x83 0x87 0x90 0x91 0x97 0x99"
                                  : "0x80 0x83 0x87 0x8F 0x91 0x97 0x9E 0xA1 0xA2");
        }
    } else if (lua_type(L, -1) == LUA_TSTRING) {
        const char *s = lua_tostring(L, -1);
        for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
            if (strcmp(s, reasons[i].name) == 0) r->code = reasons[i].code;
        if (r->code && r->action && !mqr__auth_reason_ok(r->action, r->code)) {
            r->code = 0;
            return luaL_error(L,
                              "authorize: reason '%s' is not a %s failure code: 0x87 sent "
                              "instead",
                              s, r->action == MQR_AUTH_PUBLISH ? "PUBACK/PUBREC" : "SUBACK");
        }
        if (!r->code) MQR_LOG_I("rules", "%s: denied: %s", hook, s);
    }
    return 0;
}

/* Pushes the client table. [-0, +1] */
static void push_client(lua_State *L, const mqr_auth_client_t *c, bool with_password)
{
    lua_createtable(L, 0, 9);
    lua_pushstring(L, c->client_id);
    lua_setfield(L, -2, "client_id");
    if (c->username) {
        lua_pushstring(L, c->username);
        lua_setfield(L, -2, "username");
    }
    if (with_password && c->password) {
        lua_pushlstring(L, (const char *)c->password, c->password_len);
        lua_setfield(L, -2, "password");
    }
    lua_pushstring(L, c->address);
    lua_setfield(L, -2, "address");
    lua_pushstring(L, c->protocol == MQR_MQTT_V5 ? "5.0" : "3.1.1");
    lua_setfield(L, -2, "protocol");
    lua_pushinteger(L, c->port);
    lua_setfield(L, -2, "port");
    if (c->method) {
        lua_pushstring(L, c->method);
        lua_setfield(L, -2, "method");
    }
    lua_pushboolean(L, c->authenticated);
    lua_setfield(L, -2, "authenticated");
    if (c->cert_subject) {
        lua_pushstring(L, c->cert_subject);
        lua_setfield(L, -2, "cert_subject");
    }
}

/* The serving state with its hook function pushed, or NULL. [-0, +1|0] */
static l_state_t *hook_push(mqr_script_t *h, const char *key)
{
    l_state_t *st = h->cur;
    if (!st || !st->L || !st->active) return NULL;
    lua_getfield(st->L, LUA_REGISTRYINDEX, key);
    if (lua_isfunction(st->L, -1)) return st;
    lua_pop(st->L, 1);
    return NULL;
}

int mqr__lauth_authenticate(void *ud, const mqr_auth_client_t *c)
{
    mqr_script_t *h = ud;
    l_state_t *st = hook_push(h, KEY_AUTHN);
    if (!st) return MQR_MQTT_RC_NOT_AUTHORIZED; /* fail closed */
    lua_State *L = st->L;
    hook_result_t r = {0};
    lua_pushlightuserdata(L, &r);
    lua_pushcclosure(L, l_trampoline, 1);
    lua_insert(L, -2);
    push_client(L, c, true);
    int rc = mqr__script_call(st, 2, "authenticate hook", &h->auth_errors, NULL);
    if (rc < 0 || !r.returned) return MQR_MQTT_RC_NOT_AUTHORIZED;
    if (r.allow) return 0;
    return r.code ? r.code : MQR_MQTT_RC_NOT_AUTHORIZED;
}

int mqr__lauth_authorize(void *ud, const mqr_auth_client_t *c, int action, const char *topic,
                         size_t topic_len, int qos, bool retain)
{
    mqr_script_t *h = ud;
    l_state_t *st = hook_push(h, KEY_AUTHZ);
    if (!st) return MQR_MQTT_RC_NOT_AUTHORIZED; /* fail closed */
    lua_State *L = st->L;
    hook_result_t r = {.action = action};
    lua_pushlightuserdata(L, &r);
    lua_pushcclosure(L, l_trampoline, 1);
    lua_insert(L, -2);
    push_client(L, c, false);
    lua_pushstring(L, action == MQR_AUTH_PUBLISH ? "publish" : "subscribe");
    lua_pushlstring(L, topic, topic_len);
    lua_pushinteger(L, qos);
    lua_pushboolean(L, retain);
    int rc = mqr__script_call(st, 6, "authorize hook", &h->auth_errors, NULL);
    if (rc < 0 || !r.returned) return MQR_MQTT_RC_NOT_AUTHORIZED;
    if (r.allow) return 0;
    return r.code ? r.code : MQR_MQTT_RC_NOT_AUTHORIZED;
}

/* ---- activation (script.c) -------------------------------------------------- */

static bool state_has(l_state_t *st, const char *key)
{
    lua_getfield(st->L, LUA_REGISTRYINDEX, key);
    bool has = lua_isfunction(st->L, -1);
    lua_pop(st->L, 1);
    return has;
}

void mqr__lauth_activate(mqr_script_t *h, l_state_t *st)
{
    bool authn = st && st->L && state_has(st, KEY_AUTHN);
    bool authz = st && st->L && state_has(st, KEY_AUTHZ);
    bool cacheable = false;
    if (authz) {
        lua_getfield(st->L, LUA_REGISTRYINDEX, KEY_AUTHZ_CACHE);
        cacheable = lua_toboolean(st->L, -1);
        lua_pop(st->L, 1);
    }
    mqr__engine_host_auth(h->e, authn, authz, cacheable);
}

void mqr__lauth_close(mqr_script_t *h)
{
    mqr__engine_host_auth(h->e, false, false, false);
}

/* ---- mq.authenticate / mq.authorize ----------------------------------------- */

static int set_hook(lua_State *L, const char *key)
{
    if (!lua_isnil(L, 1)) luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, key);
    l_state_t *st = mqr__state_of(L);
    /* declared by a running handler: the serving rules change now */
    if (st && st->active) mqr__lauth_activate(st->host, st);
    return 0;
}

static int l_authenticate(lua_State *L)
{
    return set_hook(L, KEY_AUTHN);
}

static int l_authorize(lua_State *L)
{
    bool cache = false;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_getfield(L, 2, "cache");
        cache = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    lua_pushboolean(L, cache);
    lua_setfield(L, LUA_REGISTRYINDEX, KEY_AUTHZ_CACHE);
    return set_hook(L, KEY_AUTHZ);
}

/* ---- mq.users ------------------------------------------------------------------ */

static mqr_engine_t *engine_of(lua_State *L)
{
    l_state_t *st = mqr__state_of(L);
    if (!st) luaL_error(L, "mqrouter: no engine");
    return st->host->e;
}

static int l_users_add(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    size_t pw_len;
    const char *pw = luaL_checklstring(L, 2, &pw_len);
    lua_Integer iter = luaL_optinteger(L, 3, 0);
    if (strlen(pw) != pw_len) return luaL_argerror(L, 2, "password with a NUL byte");
    if (iter < 0 || iter > MQR_AUTH_ITERATIONS_MAX)
        return luaL_argerror(L, 3, "iterations out of range");
    int rc = mqr_user_add(engine_of(L), name, pw, (unsigned)iter);
    if (rc < 0)
        return mqr__lua_fail(L, rc, rc == MQR_EINVAL ? "bad user name or iteration count" : NULL);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_users_remove(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    int rc = mqr_user_remove(engine_of(L), name);
    if (rc < 0) return mqr__lua_fail(L, rc, rc == MQR_ENOENT ? "no such user" : NULL);
    lua_pushboolean(L, 1);
    return 1;
}

static int list_one(void *arg, const char *name)
{
    lua_State *L = arg;
    lua_pushstring(L, name);
    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
    return 0;
}

static int l_users_list(lua_State *L)
{
    lua_newtable(L);
    int rc = mqr_user_list(engine_of(L), list_one, L);
    if (rc < 0) return mqr__lua_fail(L, rc, NULL);
    return 1;
}

void mqr__lauth_open(lua_State *L)
{
    lua_pushcfunction(L, l_authenticate);
    lua_setfield(L, -2, "authenticate");
    lua_pushcfunction(L, l_authorize);
    lua_setfield(L, -2, "authorize");
    lua_createtable(L, 0, 3);
    lua_pushcfunction(L, l_users_add);
    lua_setfield(L, -2, "add");
    lua_pushcfunction(L, l_users_remove);
    lua_setfield(L, -2, "remove");
    lua_pushcfunction(L, l_users_list);
    lua_setfield(L, -2, "list");
    lua_setfield(L, -2, "users");
}
