/*
 * l_registry.c — the Lua face of core/registry/registry.h: mq.devices (register,
 * unregister, get, list, set_status, map), mq.topics (info, list,
 * validate), mq.retained (get, set, delete), mq.users.tenant, and the
 * device_online / device_offline events of mq.on.
 *
 * Events go through l_upstream_events.c's dispatcher, to the serving state only.
 * The client-to-device mapping function (mq.devices.map) belongs to the
 * state that set it: the engine asks the serving state's, so a reload
 * that drops it goes back to "the client id is the device id". Misuse
 * raises; expected failures return nil, msg, name.
 */
#include "registry.h"
#include "script.h"

#include "auth.h"

#include <stdlib.h>
#include <string.h>

#define KEY_MAPPER "mqrouter.device_mapper"

static mqr_engine_t *engine_of(lua_State *L)
{
    l_state_t *st = mqr__state_of(L);
    if (!st || !mqr__engine_registry(st->host->e)) luaL_error(L, "mqrouter: no engine");
    return st->host->e;
}

static void set_num(lua_State *L, const char *k, double v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

static void set_str(lua_State *L, const char *k, const char *v)
{
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

/* [-0, +1] */
static void push_device(lua_State *L, const mqr_device_info_t *d)
{
    lua_createtable(L, 0, 14);
    set_str(L, "id", d->id);
    if (d->tenant[0]) set_str(L, "tenant", d->tenant);
    set_str(L, "name", d->name);
    set_str(L, "type", d->type);
    set_str(L, "metadata", d->metadata);
    set_str(L, "status", mqr__device_status_name(d->status));
    set_num(L, "since", (double)d->status_ms / 1000.0);
    set_num(L, "created", (double)d->created_ms / 1000.0);
    set_num(L, "last_seen", (double)d->last_seen_ms / 1000.0);
    set_num(L, "msgs_in", (double)d->msgs_in);
    set_num(L, "msgs_out", (double)d->msgs_out);
    set_num(L, "bytes_in", (double)d->bytes_in);
    set_num(L, "bytes_out", (double)d->bytes_out);
}

static int fail_why(lua_State *L, int rc, const char *why)
{
    return mqr__lua_fail(L, rc, why);
}

/* ---- mq.devices -------------------------------------------------------------- */

/* register{ id=, tenant=, name=, type=, metadata= (JSON text; the Lua half
 * encodes a table) } -> true, created | nil, err, name */
static int l_dev_register(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    static const mqr_lopt_t opts[] = {
        {MQR_LOPT("id", MQR_LOPT_STRING, mqr_device_spec_t, id)},
        {MQR_LOPT("tenant", MQR_LOPT_STRING, mqr_device_spec_t, tenant)},
        {MQR_LOPT("name", MQR_LOPT_STRING, mqr_device_spec_t, name)},
        {MQR_LOPT("type", MQR_LOPT_STRING, mqr_device_spec_t, type)},
        {MQR_LOPT("metadata", MQR_LOPT_STRING, mqr_device_spec_t, metadata)},
    };
    mqr_device_spec_t s;
    mqr__lua_read_options(L, 1, "mq.devices.register", opts, sizeof opts / sizeof opts[0], &s);
    if (!s.id) return luaL_error(L, "needs an id (register{ id = \"...\", ... })");
    bool created = false;
    const char *why = NULL;
    int rc = mqr__device_register(mqr__engine_registry(engine_of(L)), &s, &created, &why);
    if (rc < 0) return fail_why(L, rc, why);
    lua_pushboolean(L, 1);
    lua_pushboolean(L, created);
    return 2;
}

static int l_dev_unregister(lua_State *L)
{
    const char *id = luaL_checkstring(L, 1);
    const char *tenant = luaL_optstring(L, 2, NULL);
    int rc = mqr__device_unregister(mqr__engine_registry(engine_of(L)), tenant, id);
    if (rc < 0) return fail_why(L, rc, rc == MQR_ENOENT ? "no such device" : NULL);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_dev_get(lua_State *L)
{
    const char *id = luaL_checkstring(L, 1);
    const char *tenant = luaL_optstring(L, 2, NULL);
    mqr_device_info_t d;
    int rc = mqr__device_get(mqr__engine_registry(engine_of(L)), tenant, id, &d);
    if (rc < 0) return fail_why(L, rc, rc == MQR_ENOENT ? "no such device" : NULL);
    push_device(L, &d);
    return 1;
}

static int l_dev_set_status(lua_State *L)
{
    const char *id = luaL_checkstring(L, 1);
    const char *s = luaL_checkstring(L, 2);
    const char *tenant = luaL_optstring(L, 3, NULL);
    int status = mqr__device_status_parse(s);
    if (status < 0) return luaL_argerror(L, 2, "\"online\", \"offline\" or \"unknown\" expected");
    int rc = mqr__device_set_status(mqr__engine_registry(engine_of(L)), tenant, id, status);
    if (rc < 0) return fail_why(L, rc, rc == MQR_ENOENT ? "no such device" : NULL);
    lua_pushboolean(L, 1);
    return 1;
}

static int list_one(void *arg, const mqr_device_info_t *d)
{
    lua_State *L = arg;
    push_device(L, d);
    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
    return 0;
}

/* list{ tenant=, type=, status=, prefix=, limit=, cursor= } -> devices, next */
static int l_dev_list(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    typedef struct {
        mqr_device_query_t q;
        const char *status;
    } list_read_t;
    static const mqr_lopt_t opts[] = {
        {MQR_LOPT("tenant", MQR_LOPT_STRING, list_read_t, q.tenant)},
        {MQR_LOPT("type", MQR_LOPT_STRING, list_read_t, q.type)},
        {MQR_LOPT("status", MQR_LOPT_STRING, list_read_t, status)},
        {MQR_LOPT("prefix", MQR_LOPT_STRING, list_read_t, q.prefix)},
        {MQR_LOPT("limit", MQR_LOPT_INT, list_read_t, q.limit), .max = MQR_REGISTRY_LIMIT_MAX},
        {MQR_LOPT("cursor", MQR_LOPT_STRING, list_read_t, q.cursor)},
    };
    list_read_t r;
    mqr__lua_read_options(L, 1, "mq.devices.list", opts, sizeof opts / sizeof opts[0], &r);
    mqr_device_query_t q = r.q;
    q.status = -1;
    const char *status = r.status;
    if (status && (q.status = mqr__device_status_parse(status)) < 0)
        return luaL_error(
            L, "field 'status' must be \"online\", \"offline\" or \"unknown\", not '%s'", status);
    char *next = malloc(MQR_CURSOR_MAX);
    if (!next) return mqr__lua_fail(L, MQR_ENOMEM, NULL);
    lua_newtable(L);
    int rc =
        mqr__device_list(mqr__engine_registry(engine_of(L)), &q, list_one, L, next, MQR_CURSOR_MAX);
    if (rc < 0) {
        free(next);
        return fail_why(L, rc, "bad cursor or tenant");
    }
    if (next[0])
        lua_pushstring(L, next);
    else
        lua_pushnil(L);
    free(next);
    return 2;
}

/* The mapper asks the serving state's function (if it set one). */
static bool map_device(void *ud, const char *tenant, const char *client_id, char *out, size_t cap)
{
    mqr_script_t *h = ud;
    l_state_t *st = h->cur;
    if (!st || !st->L || !st->active) {
        snprintf(out, cap, "%s", client_id);
        return true;
    }
    lua_State *L = st->L;
    lua_getfield(L, LUA_REGISTRYINDEX, KEY_MAPPER);
    if (!lua_isfunction(L, -1)) {
        lua_pop(L, 1);
        snprintf(out, cap, "%s", client_id);
        return true;
    }
    lua_pushstring(L, client_id);
    if (tenant[0])
        lua_pushstring(L, tenant);
    else
        lua_pushnil(L);
    if (mqr__script_call_results(st, 2, 1, "device map function", &h->handler_errors,
                                 &h->budget_errors) < 0)
        return false;
    bool ok = lua_type(L, -1) == LUA_TSTRING;
    if (ok) snprintf(out, cap, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return ok;
}

/* map(fn | nil): fn(client_id, tenant) returns the device id, or nil for
 * "not a device". */
static int l_dev_map(lua_State *L)
{
    if (!lua_isnil(L, 1)) luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, KEY_MAPPER);
    l_state_t *st = mqr__state_of(L);
    mqr__registry_set_mapper(mqr__engine_registry(engine_of(L)), map_device, st->host);
    return 0;
}

/* ---- events ---------------------------------------------------------------------- */

static void observe(void *ud, const mqr_device_info_t *d, int old, const char *why)
{
    mqr_script_t *h = ud;
    l_state_t *st = h->cur;
    if (!st || !st->L || !st->active || st->closing) return;
    if (d->status != MQR_DEVICE_ONLINE && d->status != MQR_DEVICE_OFFLINE) return;
    lua_State *L = st->L;
    lua_createtable(L, 0, 6);
    set_str(L, "type", d->status == MQR_DEVICE_ONLINE ? "device_online" : "device_offline");
    set_str(L, "id", d->id);
    if (d->tenant[0]) set_str(L, "tenant", d->tenant);
    set_str(L, "old", mqr__device_status_name(old));
    set_str(L, "reason", why);
    set_num(L, "time", (double)d->status_ms / 1000.0);
    push_device(L, d);
    lua_setfield(L, -2, "device");
    mqr__lupstream_dispatch(st);
}

/* ---- mq.topics --------------------------------------------------------------------- */

/* [-0, +1] */
static void push_topic(lua_State *L, const mqr_topic_info_t *t)
{
    lua_createtable(L, 0, 6);
    set_str(L, "topic", t->topic);
    lua_pushboolean(L, t->tracked);
    lua_setfield(L, -2, "tracked");
    set_num(L, "messages", (double)t->messages);
    if (t->last_ms) set_num(L, "last_message", (double)t->last_ms / 1000.0);
    set_num(L, "subscribers", (double)t->subscribers);
    lua_pushboolean(L, t->retained);
    lua_setfield(L, -2, "retained");
}

static int l_topics_info(lua_State *L)
{
    const char *t = luaL_checkstring(L, 1);
    mqr_topic_info_t info;
    int rc = mqr__topic_info(mqr__engine_registry(engine_of(L)), t, &info);
    if (rc < 0) {
        const char *why = NULL;
        mqr__topic_validate(t, strlen(t), false, &why);
        return fail_why(L, rc, why);
    }
    push_topic(L, &info);
    return 1;
}

static int topic_one(void *arg, const mqr_topic_info_t *t)
{
    lua_State *L = arg;
    push_topic(L, t);
    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
    return 0;
}

/* list{ prefix=, limit=, cursor= } -> topics, next */
static int l_topics_list(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    typedef struct {
        const char *prefix, *cursor;
        unsigned limit;
    } topics_read_t;
    static const mqr_lopt_t opts[] = {
        {MQR_LOPT("prefix", MQR_LOPT_STRING, topics_read_t, prefix)},
        {MQR_LOPT("limit", MQR_LOPT_INT, topics_read_t, limit), .max = MQR_REGISTRY_LIMIT_MAX},
        {MQR_LOPT("cursor", MQR_LOPT_STRING, topics_read_t, cursor)},
    };
    topics_read_t r;
    mqr__lua_read_options(L, 1, "mq.topics.list", opts, sizeof opts / sizeof opts[0], &r);
    const char *prefix = r.prefix, *cursor = r.cursor;
    unsigned limit = r.limit;
    char *next = malloc(MQR_CURSOR_MAX);
    if (!next) return mqr__lua_fail(L, MQR_ENOMEM, NULL);
    lua_newtable(L);
    int rc = mqr__topics_list(mqr__engine_registry(engine_of(L)), prefix, limit, cursor, topic_one,
                              L, next, MQR_CURSOR_MAX);
    if (rc < 0) {
        free(next);
        return fail_why(L, rc, "bad cursor");
    }
    if (next[0])
        lua_pushstring(L, next);
    else
        lua_pushnil(L);
    free(next);
    return 2;
}

/* validate(t [, { wildcards = bool }]) -> true | false, reason */
static int l_topics_validate(lua_State *L)
{
    size_t len;
    const char *t = luaL_checklstring(L, 1, &len);
    bool wild = false;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        static const char *const known[] = {"wildcards", NULL};
        mqr__lua_check_options(L, 2, "mq.topics.validate", known);
        lua_getfield(L, 2, "wildcards");
        wild = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    const char *why = NULL;
    int rc = mqr__topic_validate(t, len, wild, &why);
    lua_pushboolean(L, rc == 0);
    if (rc == 0) return 1;
    lua_pushstring(L, why ? why : mqr_strerror(rc));
    return 2;
}

/* ---- mq.retained ---------------------------------------------------------------------- */

static int l_retained_get(lua_State *L)
{
    const char *t = luaL_checkstring(L, 1);
    mqr_msg_t *m = mqr__retained_get(mqr__engine_retain(engine_of(L)), t);
    if (!m) {
        lua_pushnil(L);
        return 1;
    }
    mqr__lmsg_push(L, m); /* copies */
    mqr_msg_unref(m);
    return 1;
}

/* set(topic, payload [, { qos = }]) -> true | nil, err, name */
static int l_retained_set(lua_State *L)
{
    const char *t = luaL_checkstring(L, 1);
    size_t len;
    const char *p = luaL_checklstring(L, 2, &len);
    int qos = 0;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        static const char *const known[] = {"qos", NULL};
        mqr__lua_check_options(L, 3, "mq.retained.set", known);
        lua_getfield(L, 3, "qos");
        qos = mqr__lua_opt_qos(L, -1, "mq.retained.set", 0);
        lua_pop(L, 1);
    }
    int rc = mqr__retained_set(mqr__engine_retain(engine_of(L)), t, p, len, qos);
    if (rc < 0) {
        const char *why = NULL;
        mqr__topic_validate(t, strlen(t), false, &why);
        return fail_why(L, rc, why);
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_retained_delete(lua_State *L)
{
    const char *t = luaL_checkstring(L, 1);
    int rc = mqr__retained_delete(mqr__engine_retain(engine_of(L)), t);
    if (rc < 0) return fail_why(L, rc, rc == MQR_ENOENT ? "no retained message" : NULL);
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- mq.users.tenant ------------------------------------------------------------------- */

/* tenant(user) -> tenant or nil; tenant(user, tenant | false) sets it */
static int l_users_tenant(lua_State *L)
{
    const char *user = luaL_checkstring(L, 1);
    mqr_engine_t *e = engine_of(L);
    if (lua_gettop(L) >= 2) {
        const char *t = lua_toboolean(L, 2) ? luaL_checkstring(L, 2) : "";
        if (t[0] && !mqr__tenant_valid(t, strlen(t)))
            return luaL_argerror(L, 2, "tenant: 1 to 64 characters of A-Z a-z 0-9 _ -");
        int rc = mqr__store_cred_tenant_set(mqr__engine_store(e), user, t);
        if (rc < 0) return fail_why(L, rc, rc == MQR_ENOENT ? "no such user" : NULL);
        lua_pushboolean(L, 1);
        return 1;
    }
    char *t = NULL;
    int rc = mqr__store_cred_tenant_get(mqr__engine_store(e), user, &t);
    if (rc < 0) return fail_why(L, rc, rc == MQR_ENOENT ? "no such user" : NULL);
    if (t[0])
        lua_pushstring(L, t);
    else
        lua_pushnil(L);
    free(t);
    return 1;
}

/* ---- the Lua half: a table as metadata is encoded with cjson --------------------------- */

/* lua/host/registry.lua, compiled in (bindings/embed_lua.cmake) */
extern const char mqr__lua_registry[];
extern const size_t mqr__lua_registry_len;

void mqr__lregistry_open(lua_State *L)
{
    int api = lua_gettop(L);
    static const luaL_Reg dev[] = {
        {"register", l_dev_register},
        {"unregister", l_dev_unregister},
        {"get", l_dev_get},
        {"list", l_dev_list},
        {"set_status", l_dev_set_status},
        {"map", l_dev_map},
        {NULL, NULL},
    };
    lua_createtable(L, 0, 6);
    luaL_setfuncs(L, dev, 0);
    mqr__lua_name_table(L, -1, "mq.devices", 0); /* the C register, before the Lua half wraps it */
    if (luaL_loadbuffer(L, mqr__lua_registry, mqr__lua_registry_len, "=registry") != 0)
        lua_error(L); /* a bug in lua/host/registry.lua */
    lua_pushvalue(L, -2);
    lua_call(L, 1, 0);
    lua_setfield(L, api, "devices");

    static const luaL_Reg top[] = {
        {"info", l_topics_info},
        {"list", l_topics_list},
        {"validate", l_topics_validate},
        {NULL, NULL},
    };
    lua_createtable(L, 0, 3);
    luaL_setfuncs(L, top, 0);
    lua_setfield(L, api, "topics");

    static const luaL_Reg ret[] = {
        {"get", l_retained_get},
        {"set", l_retained_set},
        {"delete", l_retained_delete},
        {NULL, NULL},
    };
    lua_createtable(L, 0, 3);
    luaL_setfuncs(L, ret, 0);
    lua_setfield(L, api, "retained");

    lua_getfield(L, api, "users");
    if (lua_istable(L, -1)) {
        lua_pushcfunction(L, l_users_tenant);
        lua_setfield(L, -2, "tenant");
    }
    lua_pop(L, 1);

    l_state_t *st = mqr__state_of(L);
    if (st && mqr__engine_registry(st->host->e))
        mqr__registry_set_observer(mqr__engine_registry(st->host->e), observe, st->host);
}

void mqr__lregistry_close(mqr_script_t *h)
{
    mqr_registry_t *r = mqr__engine_registry(h->e);
    if (!r) return;
    mqr__registry_set_observer(r, NULL, NULL);
    mqr__registry_set_mapper(r, NULL, NULL);
}
