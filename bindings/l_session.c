/*
 * l_session.c — upstream broker sessions as rule scripts see them:
 * `local up = mq.session{ name = "cloud", broker = "tcp://host:1883", ... }`
 * with `up:publish(topic, payload [, opts])` and `up:route(filter, fn)`.
 *
 * Sessions belong to the script host, not to a Lua state: a reload that
 * declares the same session with the same settings keeps the connection;
 * one the new script no longer declares (or declares differently) is closed
 * when the new script takes over, never before.
 */
#include "script.h"

#include "topic.h"

#include <stdlib.h>
#include <string.h>

int mqr__publish_opts(lua_State *L, int idx, mqr_msg_init_t *in, uint8_t **props);

static const char *opt_string(lua_State *L, int t, const char *key, const char *def)
{
    lua_getfield(L, t, key);
    const char *s = def;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "session option '%s' must be a string", key);
        s = lua_tostring(L, -1);
    }
    lua_pop(L, 1); /* the string stays alive: the table holds it */
    return s;
}

static int opt_int(lua_State *L, int t, const char *key, int def)
{
    lua_getfield(L, t, key);
    int v = def;
    if (lua_isboolean(L, -1))
        v = lua_toboolean(L, -1);
    else if (!lua_isnil(L, -1))
        v = (int)luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    return v;
}

static void session_free(l_session_t *s)
{
    if (s->u) mqr__upstream_close(s->u);
    free(s->name);
    free(s->config_key);
    free(s);
}

static void unlink_session(mqr_script_t *h, l_session_t *s)
{
    for (l_session_t **p = &h->sessions; *p; p = &(*p)->next) {
        if (*p == s) {
            *p = s->next;
            return;
        }
    }
}

/* session{ name, broker, client_id, keepalive, clean, username, password,
 *          version, max_buffered } */
int mqr__lsession_new(lua_State *L)
{
    l_state_t *st = lua_touserdata(L, lua_upvalueindex(1));
    mqr_script_t *h = st->host;
    luaL_checktype(L, 1, LUA_TTABLE);
    mqr_upstream_config_t cfg = {0};
    cfg.name = opt_string(L, 1, "name", NULL);
    cfg.uri = opt_string(L, 1, "broker", NULL);
    if (!cfg.name || !*cfg.name) return luaL_error(L, "session needs a name");
    if (!cfg.uri)
        return luaL_error(L, "session '%s' needs a broker (\"tcp://host:port\")", cfg.name);
    cfg.client_id = opt_string(L, 1, "client_id", NULL);
    cfg.username = opt_string(L, 1, "username", NULL);
    cfg.password = opt_string(L, 1, "password", NULL);
    cfg.keepalive_s = opt_int(L, 1, "keepalive", 30);
    cfg.clean_start = opt_int(L, 1, "clean", 1);
    cfg.max_buffered = opt_int(L, 1, "max_buffered", 10000);
    cfg.mqtt_version = opt_int(L, 1, "version", 4);
    if (cfg.mqtt_version != 4 && cfg.mqtt_version != 5)
        return luaL_error(L, "session '%s': version must be 4 (MQTT 3.1.1) or 5", cfg.name);

    lua_pushfstring(L, "%s|%s|%s|%s|%s|%d|%d|%d|%d", cfg.name, cfg.uri,
                    cfg.client_id ? cfg.client_id : "", cfg.username ? cfg.username : "",
                    cfg.password ? cfg.password : "", cfg.keepalive_s, cfg.clean_start,
                    cfg.max_buffered, cfg.mqtt_version);
    const char *key = lua_tostring(L, -1);

    l_session_t *s = NULL;
    for (l_session_t *it = h->sessions; it; it = it->next) {
        if (strcmp(it->name, cfg.name) != 0) continue;
        if (it->claimed_by == st) return luaL_error(L, "session '%s' declared twice", cfg.name);
        if (strcmp(it->config_key, key) == 0) s = it;
    }
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) return luaL_error(L, "out of memory");
        s->host = h;
        s->name = strdup(cfg.name);
        s->config_key = strdup(key);
        int rc = (s->name && s->config_key) ? mqr__upstream_new(h->e, &cfg, &s->u) : MQR_ENOMEM;
        if (rc < 0) {
            session_free(s);
            return luaL_error(L, "session '%s': %s", cfg.name, mqr_strerror(rc));
        }
        s->created_by = st;
        s->next = h->sessions;
        h->sessions = s;
    }
    s->claimed_by = st;
    lua_pop(L, 1);
    l_session_t **ud = lua_newuserdata(L, sizeof *ud);
    *ud = s;
    luaL_getmetatable(L, "mqrouter.session");
    lua_setmetatable(L, -2);
    return 1;
}

void mqr__lsession_activate(mqr_script_t *h, l_state_t *st)
{
    for (l_session_t *s = h->sessions, *next; s; s = next) {
        next = s->next;
        s->created_by = NULL;
        if (s->claimed_by == st) continue;
        unlink_session(h, s);
        session_free(s);
    }
}

void mqr__lsession_abandon(mqr_script_t *h, l_state_t *st)
{
    for (l_session_t *s = h->sessions, *next; s; s = next) {
        next = s->next;
        if (s->created_by == st) {
            unlink_session(h, s);
            session_free(s);
        } else if (s->claimed_by == st) {
            s->claimed_by = h->cur;
        }
    }
}

void mqr__lsession_close_all(mqr_script_t *h)
{
    while (h->sessions) {
        l_session_t *s = h->sessions;
        h->sessions = s->next;
        session_free(s);
    }
}

static l_session_t *check_session(lua_State *L)
{
    l_session_t **ud = luaL_checkudata(L, 1, "mqrouter.session");
    return *ud;
}

/* up:publish(topic, payload [, {qos, retain, properties}]) -> true | nil, err, name */
static int l_session_publish(lua_State *L)
{
    l_session_t *s = check_session(L);
    mqr_msg_init_t in = {.origin = MQR_ORIGIN_LUA};
    in.topic = luaL_checklstring(L, 2, &in.topic_len);
    in.payload = luaL_checklstring(L, 3, &in.payload_len);
    uint8_t *props;
    mqr__publish_opts(L, 4, &in, &props);
    const char *why = NULL;
    int rc = mqr__topic_name_check(in.topic, in.topic_len, &why);
    if (rc == 0 && !s->u) rc = MQR_ECLOSED;
    if (rc == 0) {
        mqr_msg_t *m = mqr__msg_new(&in);
        rc = m ? mqr__upstream_publish(s->u, m) : MQR_ENOMEM;
        mqr_msg_unref(m);
    }
    free(props);
    if (rc < 0) return mqr__lua_fail(L, rc, why);
    lua_pushboolean(L, 1);
    return 1;
}

/* up:route(filter, fn [, {qos}]): subscribes upstream; fn sees only this
 * session's messages. */
static int l_session_route(lua_State *L)
{
    l_session_t *s = check_session(L);
    const char *filter = luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    return mqr__route_declare(L, mqr__state_of(L), filter, 3, s, 4);
}

static int l_session_state(lua_State *L)
{
    l_session_t *s = check_session(L);
    static const char *const names[] = {"connecting", "connected", "disconnected", "closed"};
    mqr_upstream_state_t state = s->u ? mqr__upstream_state(s->u) : MQR_UPSTREAM_CLOSED;
    lua_pushstring(L, names[state]);
    return 1;
}

static int l_session_name(lua_State *L)
{
    lua_pushstring(L, check_session(L)->name);
    return 1;
}

void mqr__lsession_register(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"publish", l_session_publish},
        {"route", l_session_route},
        {"state", l_session_state},
        {"name", l_session_name},
        {NULL, NULL},
    };
    luaL_newmetatable(L, "mqrouter.session");
    lua_newtable(L);
    for (const luaL_Reg *m = methods; m->name; m++) {
        lua_pushcfunction(L, m->func);
        lua_setfield(L, -2, m->name);
    }
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}
