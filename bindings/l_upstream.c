/*
 * l_session.c — upstream broker sessions as rule scripts see them:
 * `local up = mq.session{ name = "cloud", broker = "tcp://host:1883", ... }`
 * with `up:publish(topic, payload [, opts])` and `up:route(filter, fn)`.
 *
 * Sessions belong to the script host, not to a Lua state: a reload that
 * declares the same session with the same settings keeps the connection;
 * one the new script no longer declares (or declares differently) is closed
 * when the new script takes over, never before.
 *
 * Lifecycle events reach the serving script's mq.on handlers; events that
 * happen while a new script loads are also kept for it and handed over when
 * it takes over. The coroutine helpers (mq.spawn, mq.wait_ready,
 * up:publish_sync, up:messages) and mq.handle are Lua, in session_lua below:
 * they only ever resume a coroutine from a loop callback (an event, a
 * message, a timer), so waiting never blocks the loop. Must not: run Lua for
 * a state that is neither serving nor loading.
 */
#include "script.h"

#include "topic.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* scheme://HOST:PORT[/path]: what the transports take. */
static bool broker_uri_ok(const char *uri)
{
    static const char *const schemes[] = {"tcp://", "ssl://", "mqtt://", "mqtts://",
                                          "ws://",  "wss://", NULL};
    const char *rest = NULL;
    for (int i = 0; schemes[i] && !rest; i++)
        if (strncmp(uri, schemes[i], strlen(schemes[i])) == 0) rest = uri + strlen(schemes[i]);
    if (!rest) return false;
    const char *path = strchr(rest, '/');
    size_t hp = path ? (size_t)(path - rest) : strlen(rest);
    const char *colon = NULL;
    for (size_t i = 0; i < hp; i++)
        if (rest[i] == ':') colon = rest + i;
    if (!colon || colon == rest) return false;
    const char *port = colon + 1;
    size_t plen = hp - (size_t)(port - rest);
    if (plen < 1 || plen > 5) return false;
    long v = 0;
    for (size_t i = 0; i < plen; i++) {
        if (port[i] < '0' || port[i] > '9') return false;
        v = v * 10 + (port[i] - '0');
    }
    if (path && strncmp(uri, "ws", 2) != 0) return false; /* a path is for WebSocket */
    return v >= 1 && v <= 65535;
}

static void check_uri(lua_State *L, const char *what, const char *uri)
{
    if (!broker_uri_ok(uri))
        luaL_error(L,
                   "mq.session: %s '%s' is not a broker URI (tcp://, ssl://, mqtt://, mqtts://, "
                   "ws://, wss:// HOST:PORT)",
                   what, uri);
}

/* discard: the rules dropped the session, so are its stored messages;
 * otherwise (engine stopping, a failed load) they stay for the next start. */
#define CRED_KEY "mqrouter.session_credentials"

/* The argument of a credentials hook: { name =, attempt = }. [-0, +1] */
static void push_cred_info(lua_State *L, const char *name, unsigned attempt)
{
    lua_createtable(L, 0, 2);
    lua_pushstring(L, name);
    lua_setfield(L, -2, "name");
    lua_pushinteger(L, (lua_Integer)attempt);
    lua_setfield(L, -2, "attempt");
}

/* Before every connect attempt: the credentials function of the newest
 * script that declared the session, if it gave one, returns username,
 * password (nil: none), or nothing to keep the current ones. Its errors are
 * logged; the attempt goes on with the credentials it had. */
static void cred_hook(void *arg, mqr_upstream_t *u, unsigned attempt)
{
    l_session_t *s = arg;
    l_state_t *st = s->claimed_by;
    if (!st || !st->L) return;
    lua_State *L = st->L;
    int top = lua_gettop(L);
    lua_getfield(L, LUA_REGISTRYINDEX, CRED_KEY);
    if (lua_istable(L, -1)) lua_getfield(L, -1, s->name);
    if (lua_isfunction(L, -1)) {
        int base = lua_gettop(L) - 1;
        push_cred_info(L, s->name, attempt);
        char what[96];
        snprintf(what, sizeof what, "credentials hook of session '%s'", s->name);
        if (mqr__script_call_results(st, 1, LUA_MULTRET, what, NULL, NULL) == 0 &&
            lua_gettop(L) > base) {
            const char *user = lua_isstring(L, base + 1) ? lua_tostring(L, base + 1) : NULL;
            const char *pass = lua_isstring(L, base + 2) ? lua_tostring(L, base + 2) : NULL;
            int rc = mqr__upstream_set_credentials(u, user, pass);
            if (rc < 0)
                MQR_LOG_E("upstream", "session '%s': cannot set credentials: %s", s->name,
                          mqr_strerror(rc));
        }
    }
    lua_settop(L, top);
}

static void session_free(l_session_t *s, bool discard)
{
    if (s->u && discard)
        mqr__upstream_discard(s->u);
    else if (s->u)
        mqr__upstream_close(s->u);
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

#define MAX_BROKERS 16
#define MAX_MAP_RULES 64

/* The `map` option: { { local, remote }, ... } (topic_map.h). Fills map with
 * the 2n strings; leaves the table and a key string (the rules joined) on
 * the stack and returns the key. Misuse raises. [-0, +2] */
static const char *opt_map(lua_State *L, const char *name, const char **map, size_t *n_out)
{
    lua_getfield(L, 1, "map");
    int t = lua_gettop(L);
    *n_out = 0;
    if (!lua_isnil(L, t)) {
        if (!lua_istable(L, t))
            luaL_error(L, "session '%s': map must be a list of { local, remote } pairs", name);
        size_t n = lua_objlen(L, t);
        if (n > MAX_MAP_RULES)
            luaL_error(L, "session '%s': map has more than %d rules", name, MAX_MAP_RULES);
        for (size_t i = 0; i < n; i++) {
            lua_rawgeti(L, t, (int)i + 1);
            lua_rawgeti(L, -1, 1);
            lua_rawgeti(L, -2, 2);
            if (!lua_istable(L, -3) || lua_type(L, -2) != LUA_TSTRING ||
                lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L,
                           "session '%s': map[%d] must be { local, remote } (two topic patterns)",
                           name, (int)i + 1);
            /* the rule table holds the strings */
            map[2 * i] = lua_tostring(L, -2);
            map[2 * i + 1] = lua_tostring(L, -1);
            lua_pop(L, 3);
        }
        *n_out = n;
    }
    luaL_Buffer b; /* nothing else may be pushed while it is open */
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < 2 * *n_out; i++) {
        luaL_addstring(&b, map[i]);
        luaL_addchar(&b, i % 2 ? ';' : '>');
    }
    luaL_pushresult(&b);
    return lua_tostring(L, -1);
}

static const char *const tls_strings[] = {"cafile", "capath", "cert", "key", "key_password", NULL};

/* session{ tls = { cafile, capath, cert, key, key_password, verify,
 * verify_hostname } } at index t (a table, or nil: no TLS settings) into
 * *tls; returns tls or NULL. Pushes the key text of these settings for the
 * session's config key [-0, +1]; the strings stay alive in the table. */
static const mqr_upstream_tls_t *opt_tls(lua_State *L, int t, const char *name,
                                         mqr_upstream_tls_t *tls)
{
    if (lua_isnil(L, t)) {
        lua_pushliteral(L, "-");
        return NULL;
    }
    if (!lua_istable(L, t)) luaL_error(L, "session '%s': tls must be a table", name);
    static const char *const known[] = {"cafile", "capath",          "cert", "key", "key_password",
                                        "verify", "verify_hostname", NULL};
    lua_pushfstring(L, "mq.session '%s': tls", name);
    mqr__lua_check_options(L, t, lua_tostring(L, -1), known);
    lua_pop(L, 1);
    const char *v[5];
    for (int i = 0; tls_strings[i]; i++) {
        lua_getfield(L, t, tls_strings[i]);
        v[i] = NULL;
        if (!lua_isnil(L, -1)) {
            if (lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "session '%s': tls option '%s' must be a string", name,
                           tls_strings[i]);
            v[i] = lua_tostring(L, -1);
        }
        lua_pop(L, 1);
    }
    bool flags[2];
    static const char *const flag_names[] = {"verify", "verify_hostname"};
    for (int i = 0; i < 2; i++) {
        lua_getfield(L, t, flag_names[i]);
        if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
            luaL_error(L, "session '%s': tls option '%s' must be a boolean", name, flag_names[i]);
        flags[i] = lua_isnil(L, -1) || lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    *tls = (mqr_upstream_tls_t){
        .cafile = v[0],
        .capath = v[1],
        .cert = v[2],
        .key = v[3],
        .key_password = v[4],
        .no_verify = !flags[0],
        .no_verify_hostname = !flags[1],
    };
    lua_pushfstring(L, "%s|%s|%s|%s|%s|%d|%d", v[0] ? v[0] : "", v[1] ? v[1] : "", v[2] ? v[2] : "",
                    v[3] ? v[3] : "", v[4] ? v[4] : "", (int)flags[0], (int)flags[1]);
    return tls;
}

/* what mq.session reads; seconds given as numbers become whole seconds */
typedef struct {
    mqr_upstream_config_t cfg;
    const char *on_full;
    double session_expiry;
} session_read_t;

#define INT32_RANGE .min = -2147483648.0, .max = 2147483647.0
#define SS(key, field)                                                                             \
    {                                                                                              \
        MQR_LOPT(key, MQR_LOPT_STRING, session_read_t, field)                                      \
    }
#define SI(key, field, d)                                                                          \
    {                                                                                              \
        MQR_LOPT(key, MQR_LOPT_INT, session_read_t, cfg.field), .def = d, INT32_RANGE              \
    }

static const mqr_lopt_t session_opts[] = {
    SS("name", cfg.name),
    SS("broker", cfg.uri),
    {.key = "brokers"},
    SS("client_id", cfg.client_id),
    SI("keepalive", keepalive_s, 30),
    {MQR_LOPT("clean", MQR_LOPT_INT, session_read_t, cfg.clean_start), .def = 1, INT32_RANGE,
     .flags = MQR_LOPT_BOOL01},
    SS("username", cfg.username),
    SS("password", cfg.password),
    SI("version", mqtt_version, 4),
    /* any double that converts to int64_t: the range is checked below */
    {MQR_LOPT("session_expiry", MQR_LOPT_NUMBER, session_read_t, session_expiry), .def = -1,
     .min = -9e18, .max = 9e18},
    {.key = "will"},
    {.key = "reconnect"},
    SI("max_buffered", max_buffered, 10000),
    {MQR_LOPT("on_full", MQR_LOPT_STRING, session_read_t, on_full), .sdef = "refuse"},
    {.key = "credentials"},
    {.key = "persist"},
    SS("prefix", cfg.prefix),
    {.key = "map"},
    {.key = "tls"},
};

static const mqr_lopt_t will_opts[] = {
    {MQR_LOPT("topic", MQR_LOPT_STRING, mqr_upstream_config_t, will_topic)},
    {.key = "payload"},
    {.key = "qos"},
    {MQR_LOPT("retain", MQR_LOPT_INT, mqr_upstream_config_t, will_retain), INT32_RANGE,
     .flags = MQR_LOPT_BOOL01},
};

typedef struct {
    double initial, max;
    int max_attempts;
} reconnect_read_t;

static const mqr_lopt_t reconnect_opts[] = {
    {MQR_LOPT("initial", MQR_LOPT_NUMBER, reconnect_read_t, initial), INT32_RANGE},
    {MQR_LOPT("max", MQR_LOPT_NUMBER, reconnect_read_t, max), INT32_RANGE},
    {MQR_LOPT("max_attempts", MQR_LOPT_INT, reconnect_read_t, max_attempts), INT32_RANGE},
};

#define N_OPTS(t) (sizeof(t) / sizeof(t)[0])

/* session{ name, broker | brokers, client_id, keepalive, clean, username,
 *          password, version, max_buffered, session_expiry, prefix,
 *          will = {topic, payload, qos, retain},
 *          reconnect = {initial, max, max_attempts},
 *          tls = {cafile, capath, cert, key, key_password, verify, verify_hostname} } */
int mqr__lsession_new(lua_State *L)
{
    l_state_t *st = lua_touserdata(L, lua_upvalueindex(1));
    mqr_script_t *h = st->host;
    if (!lua_istable(L, 1))
        return luaL_error(L,
                          "mq.session: expects a table of options { name =, broker =, ... }, "
                          "not a %s",
                          luaL_typename(L, 1));
    session_read_t r = {0};
    mqr__lua_read_options(L, 1, "mq.session", session_opts, N_OPTS(session_opts), &r);
    mqr_upstream_config_t cfg = r.cfg;
    if (!cfg.name || !*cfg.name) return luaL_error(L, "mq.session: needs a name (name = \"...\")");
    if (cfg.uri) check_uri(L, "broker", cfg.uri);
    const char *uris[MAX_BROKERS];
    luaL_Buffer keyb;
    luaL_buffinit(L, &keyb);
    lua_getfield(L, 1, "brokers");
    int brokers_idx = lua_gettop(L); /* stays on the stack: it holds the strings */
    if (!lua_isnil(L, brokers_idx)) {
        if (!lua_istable(L, brokers_idx))
            return luaL_error(L, "session '%s': brokers must be a list of URIs", cfg.name);
        int n = (int)lua_objlen(L, brokers_idx);
        if (n < 1 || n > MAX_BROKERS)
            return luaL_error(L, "session '%s': brokers must list 1 to %d URIs", cfg.name,
                              MAX_BROKERS);
        for (int i = 0; i < n; i++) {
            lua_rawgeti(L, brokers_idx, i + 1);
            if (lua_type(L, -1) != LUA_TSTRING)
                return luaL_error(L, "session '%s': brokers[%d] must be a string", cfg.name, i + 1);
            uris[i] = lua_tostring(L, -1);
            lua_pop(L, 1);
            check_uri(L, "brokers entry", uris[i]);
        }
        cfg.uris = uris;
        cfg.n_uris = n;
    }
    if (!cfg.uri && cfg.n_uris == 0)
        return luaL_error(L, "session '%s' needs a broker (\"tcp://host:port\") or brokers",
                          cfg.name);
    lua_getfield(L, 1, "will");
    int will_idx = lua_gettop(L);
    if (!lua_isnil(L, will_idx)) {
        if (!lua_istable(L, will_idx))
            return luaL_error(L, "mq.session: will must be a table {topic, payload, qos, retain}");
        lua_pushfstring(L, "mq.session '%s': will", cfg.name);
        const char *wname = lua_tostring(L, -1);
        mqr__lua_read_options(L, will_idx, wname, will_opts, N_OPTS(will_opts), &cfg);
        lua_getfield(L, will_idx, "qos");
        cfg.will_qos = mqr__lua_opt_qos(L, -1, wname, 0);
        lua_pop(L, 2);
        if (!cfg.will_topic) return luaL_error(L, "session '%s': will needs a topic", cfg.name);
        lua_getfield(L, will_idx, "payload");
        size_t plen = 0;
        cfg.will_payload = lua_isnil(L, -1) ? "" : luaL_checklstring(L, -1, &plen);
        cfg.will_payload_len = plen;
        lua_pop(L, 1); /* the will table holds it */
    }
    lua_getfield(L, 1, "reconnect");
    int rec_idx = lua_gettop(L);
    if (!lua_isnil(L, rec_idx)) {
        if (!lua_istable(L, rec_idx))
            return luaL_error(L, "mq.session: reconnect must be a table {initial, max, "
                                 "max_attempts}");
        lua_pushfstring(L, "mq.session '%s': reconnect", cfg.name);
        reconnect_read_t rr;
        mqr__lua_read_options(L, rec_idx, lua_tostring(L, -1), reconnect_opts,
                              N_OPTS(reconnect_opts), &rr);
        lua_pop(L, 1);
        cfg.retry_initial_s = (int)rr.initial;
        cfg.retry_max_s = (int)rr.max;
        cfg.max_reconnects = rr.max_attempts;
    }
    cfg.session_expiry_s = (int64_t)r.session_expiry;
    for (int i = 0; i < cfg.n_uris; i++) {
        luaL_addstring(&keyb, uris[i]);
        luaL_addchar(&keyb, ',');
    }
    luaL_pushresult(&keyb);
    lua_pushfstring(L, "%s|%s|%s|%d|%d|%d|%d|%f|%s", lua_tostring(L, -1),
                    cfg.will_topic ? cfg.will_topic : "", cfg.will_payload ? cfg.will_payload : "",
                    cfg.will_qos, cfg.will_retain, cfg.retry_initial_s, cfg.retry_max_s,
                    (double)cfg.session_expiry_s, cfg.prefix ? cfg.prefix : "");
    lua_pushfstring(L, "|%d", cfg.max_reconnects);
    lua_concat(L, 2);
    lua_getfield(L, 1, "persist"); /* nil, true, false: -2, 1, 0 in the key */
    int persist_key = lua_isnil(L, -1) ? -2 : lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_pushfstring(L, "|%d", persist_key);
    lua_concat(L, 2);
    lua_remove(L, -2);
    const char *extra_key = lua_tostring(L, -1); /* stays on the stack */
    const char *on_full = r.on_full;
    if (strcmp(on_full, "refuse") != 0 && strcmp(on_full, "drop_oldest") != 0)
        return luaL_error(L, "session '%s': on_full must be \"refuse\" or \"drop_oldest\"",
                          cfg.name);
    cfg.drop_oldest = on_full[0] == 'd';
    lua_getfield(L, 1, "persist");
    if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
        return luaL_error(L, "session '%s': persist must be a boolean", cfg.name);
    cfg.persist = lua_isnil(L, -1) ? 0 : lua_toboolean(L, -1) ? 1 : -1;
    lua_pop(L, 1);
    if (cfg.mqtt_version != 4 && cfg.mqtt_version != 5)
        return luaL_error(L, "session '%s': version must be 4 (MQTT 3.1.1) or 5", cfg.name);
    /* what mqr__upstream_new would refuse with a bare EINVAL, said here */
    if (cfg.keepalive_s < 0 || cfg.keepalive_s > 65535)
        return luaL_error(L, "session '%s': keepalive must be 0..65535 seconds, not %d", cfg.name,
                          cfg.keepalive_s);
    if (cfg.max_buffered < 0)
        return luaL_error(L, "session '%s': max_buffered must be >= 0, not %d", cfg.name,
                          cfg.max_buffered);
    if (cfg.retry_initial_s < 0 || cfg.retry_max_s < 0 || cfg.max_reconnects < 0)
        return luaL_error(L, "session '%s': reconnect initial, max and max_attempts must be >= 0",
                          cfg.name);
    if (cfg.session_expiry_s > 0xFFFFFFFFll)
        return luaL_error(L, "session '%s': session_expiry must be 0..4294967295 seconds",
                          cfg.name);
    if (cfg.will_topic) {
        const char *why = NULL;
        if (mqr__topic_name_check(cfg.will_topic, strlen(cfg.will_topic), &why) < 0)
            return luaL_error(L, "session '%s': will topic '%s' is not a topic name: %s", cfg.name,
                              cfg.will_topic, why ? why : "invalid");
        if (cfg.will_payload_len > 65535)
            return luaL_error(L, "session '%s': will payload is %d bytes, at most 65535", cfg.name,
                              (int)cfg.will_payload_len);
    }
    lua_getfield(L, 1, "tls"); /* stays on the stack: it holds the strings */
    mqr_upstream_tls_t tls;
    cfg.tls = opt_tls(L, lua_gettop(L), cfg.name, &tls);
    const char *tls_key = lua_tostring(L, -1); /* stays on the stack */
    /* Checked on every declaration, kept sessions too: a file gone since is
     * a failed load (the old rules keep serving), not a reconnect loop. */
    char tls_err[512];
    if (mqr__upstream_tls_check(&cfg, tls_err, sizeof tls_err) < 0)
        return luaL_error(L, "session '%s': %s", cfg.name, tls_err);

    const char *map[2 * MAX_MAP_RULES];
    const char *map_key = opt_map(L, cfg.name, map, &cfg.n_map); /* both stay on the stack */
    cfg.map = map;

    lua_pushfstring(L, "%s|%s|%s|%s|%s|%d|%d|%d|%d|%s|%s|%s", cfg.name, cfg.uri ? cfg.uri : "",
                    cfg.client_id ? cfg.client_id : "", cfg.username ? cfg.username : "",
                    cfg.password ? cfg.password : "", cfg.keepalive_s, cfg.clean_start,
                    cfg.max_buffered, cfg.mqtt_version, extra_key, tls_key, map_key);
    lua_pushstring(L, cfg.drop_oldest ? "|drop_oldest" : "|refuse");
    lua_concat(L, 2);
    const char *key = lua_tostring(L, -1);

    l_session_t *s = NULL;
    for (l_session_t *it = h->sessions; it; it = it->next) {
        if (strcmp(it->name, cfg.name) != 0) continue;
        if (it->claimed_by == st) return luaL_error(L, "session '%s' declared twice", cfg.name);
        if (strcmp(it->config_key, key) == 0) s = it;
        /* Declared with other settings: the new one connects now, the old
         * one serves until the new script takes over, then closes. */
        else if (it->u)
            cfg.replaces = 1;
    }
    lua_getfield(L, 1, "credentials");
    if (!lua_isnil(L, -1) && !lua_isfunction(L, -1))
        return luaL_error(L, "session '%s': credentials must be a function", cfg.name);
    int cred_idx = lua_gettop(L);
    /* This state's hook for the name, found by cred_hook at every connect. */
    lua_getfield(L, LUA_REGISTRYINDEX, CRED_KEY);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, CRED_KEY);
    }
    lua_pushvalue(L, cred_idx);
    lua_setfield(L, -2, cfg.name);
    lua_pop(L, 1);
    if (!s && lua_isfunction(L, cred_idx)) {
        /* The first connect starts in mqr__upstream_new: ask now. An error
         * here is the script's, at load. */
        lua_pushvalue(L, cred_idx);
        push_cred_info(L, cfg.name, 0);
        if (lua_pcall(L, 1, 2, 0) != 0)
            return luaL_error(L, "session '%s': credentials hook failed: %s", cfg.name,
                              lua_tostring(L, -1));
        /* the results stay on the stack while cfg points at them */
        if (lua_isstring(L, -2)) cfg.username = lua_tostring(L, -2);
        if (lua_isstring(L, -1)) cfg.password = lua_tostring(L, -1);
    }
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) return luaL_error(L, "out of memory");
        s->host = h;
        s->name = strdup(cfg.name);
        s->config_key = strdup(key);
        int rc = (s->name && s->config_key) ? mqr__upstream_new(h->e, &cfg, &s->u) : MQR_ENOMEM;
        if (rc < 0) {
            session_free(s, false);
            return luaL_error(L, "session '%s': cannot create it: %s (%s)", cfg.name,
                              mqr_strerror(rc), mqr_err_name(rc));
        }
        s->created_by = st;
        s->next = h->sessions;
        h->sessions = s;
        mqr__upstream_set_credentials_hook(s->u, cred_hook, s);
    }
    s->claimed_by = st;
    l_session_t **ud = lua_newuserdata(L, sizeof *ud);
    *ud = s;
    luaL_getmetatable(L, "mqrouter.session");
    lua_setmetatable(L, -2);
    return 1;
}

static void flush_pending(l_state_t *st);

void mqr__lsession_activate(mqr_script_t *h, l_state_t *st)
{
    /* Events seen while st loaded come first: they happened before the
     * removals below. */
    flush_pending(st);
    for (l_session_t *s = h->sessions, *next; s; s = next) {
        next = s->next;
        s->created_by = NULL;
        if (s->claimed_by == st) continue;
        unlink_session(h, s);
        session_free(s, true);
    }
}

void mqr__lsession_abandon(mqr_script_t *h, l_state_t *st)
{
    for (l_session_t *s = h->sessions, *next; s; s = next) {
        next = s->next;
        if (s->created_by == st) {
            unlink_session(h, s);
            session_free(s, false);
        } else if (s->claimed_by == st) {
            s->claimed_by = h->cur;
        }
    }
}

static void observe(void *arg, const mqr_upstream_event_t *ev);

void mqr__lsession_close_all(mqr_script_t *h)
{
    mqr__upstream_unobserve(h->e, observe, h);
    while (h->sessions) {
        l_session_t *s = h->sessions;
        h->sessions = s->next;
        session_free(s, false);
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
    mqr__publish_opts(L, 4, "session:publish", NULL, &in, &props);
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

/* up:route(filter, fn [, {qos, dead_letter, no_local, retain_as_published,
 * retain_handling}]): subscribes upstream; fn sees only this session's
 * messages. The v5 subscription options apply to the filter on this session
 * (the last route to set them wins). */
static int l_session_route(lua_State *L)
{
    l_session_t *s = check_session(L);
    const char *filter = luaL_checkstring(L, 2);
    if (!lua_isfunction(L, 3) && !luaL_testudata(L, 3, "mqrouter.queue"))
        return luaL_typerror(L, 3, "function or queue"); /* a queue: into it */
    if (lua_istable(L, 4)) {
        static const char *const known[] = {
            "qos",      "dead_letter",         "priority",        "ttl",
            "no_local", "retain_as_published", "retain_handling", NULL};
        mqr__lua_check_options(L, 4, "session:route", known);
        lua_getfield(L, 4, "no_local");
        lua_getfield(L, 4, "retain_as_published");
        lua_getfield(L, 4, "retain_handling");
        bool any = !lua_isnil(L, -3) || !lua_isnil(L, -2) || !lua_isnil(L, -1);
        int rh = (int)luaL_optinteger(L, -1, -1);
        bool nl = lua_toboolean(L, -3), rap = lua_toboolean(L, -2);
        lua_pop(L, 3);
        if (rh < -1 || rh > 2) return luaL_argerror(L, 4, "retain_handling must be 0, 1 or 2");
        if (any && s->u) {
            int rc = mqr__upstream_set_sub_options(s->u, filter, nl, rap, rh);
            if (rc < 0) return luaL_error(L, "route '%s': %s", filter, mqr_strerror(rc));
        }
    }
    return mqr__route_declare(L, mqr__state_of(L), filter, 3, s, 4);
}

static int l_session_state(lua_State *L)
{
    l_session_t *s = check_session(L);
    mqr_upstream_state_t state = s->u ? mqr__upstream_state(s->u) : MQR_UPSTREAM_CLOSED;
    lua_pushstring(L, mqr__upstream_state_name(state));
    return 1;
}

/* up:close(): disconnects now. The script's handle stays, closed; a reload
 * that declares the session again opens a new one. */
static int l_session_close(lua_State *L)
{
    l_session_t *s = check_session(L);
    if (s->u) {
        mqr_upstream_t *u = s->u;
        s->u = NULL;
        s->config_key[0] = '\0'; /* never matches a declaration again */
        mqr__upstream_discard(u);
    }
    return 0;
}

static void set_num(lua_State *L, const char *k, double v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

static void set_time(lua_State *L, const char *k, uint64_t ms)
{
    if (ms) set_num(L, k, (double)ms / 1000.0);
}

static void push_sub(void *arg, const char *filter, int qos)
{
    lua_State *L = arg;
    int n = (int)lua_objlen(L, -1);
    lua_pushstring(L, filter);
    lua_rawseti(L, -2, n + 1);
}

/* [-0, +1] */
static void push_status(lua_State *L, mqr_upstream_t *u)
{
    mqr_upstream_status_t o;
    mqr__upstream_status(u, &o);
    lua_createtable(L, 0, 32);
    lua_pushstring(L, mqr__upstream_name(u));
    lua_setfield(L, -2, "name");
    lua_pushstring(L, mqr__upstream_state_name(o.state));
    lua_setfield(L, -2, "state");
    lua_pushboolean(L, o.ready);
    lua_setfield(L, -2, "ready");
    lua_pushstring(L, o.broker);
    lua_setfield(L, -2, "broker");
    if (o.last_error[0]) {
        lua_pushstring(L, o.last_error);
        lua_setfield(L, -2, "last_error");
    }
    set_time(L, "connected_since", o.connected_since_ms);
    set_time(L, "last_error_at", o.last_error_at_ms);
    set_time(L, "last_message_at", o.last_message_at_ms);
    set_num(L, "connects", (double)o.connects);
    set_num(L, "reconnects", (double)o.reconnects);
    set_num(L, "connect_failures", (double)o.connect_failures);
    set_num(L, "attempt", o.attempt);
    set_num(L, "inflight", (double)o.inflight);
    set_num(L, "buffered", (double)o.buffered);
    set_num(L, "messages_sent", (double)o.messages_sent);
    set_num(L, "messages_received", (double)o.messages_received);
    set_num(L, "bytes_sent", (double)o.bytes_sent);
    set_num(L, "bytes_received", (double)o.bytes_received);
    set_num(L, "messages_refused", (double)o.messages_refused);
    set_num(L, "messages_dropped", (double)o.messages_dropped);
    set_num(L, "messages_unprotected", (double)o.messages_unprotected);
    set_num(L, "messages_spilled", (double)o.messages_spilled);
    set_num(L, "messages_not_kept", (double)o.messages_not_kept);
    set_num(L, "publish_full", (double)o.publish_full);
    set_num(L, "publish_dropped", (double)o.publish_dropped);
    set_num(L, "publish_expired", (double)o.publish_expired);
    set_num(L, "publish_failed", (double)o.publish_failed);
    set_num(L, "delivered", (double)o.delivered);
    set_num(L, "stored", (double)o.stored);
    lua_pushboolean(L, o.clean);
    lua_setfield(L, -2, "clean");
    lua_pushboolean(L, o.persistent);
    lua_setfield(L, -2, "persistent");
    lua_pushboolean(L, o.auto_reconnect);
    lua_setfield(L, -2, "auto_reconnect");
    lua_newtable(L);
    mqr__upstream_foreach_sub(u, push_sub, L);
    lua_setfield(L, -2, "subscriptions");
}

/* up:status() -> table (state "closed" and nothing else once closed) */
static int l_session_status(lua_State *L)
{
    l_session_t *s = check_session(L);
    if (s->u) {
        push_status(L, s->u);
    } else {
        lua_createtable(L, 0, 2);
        lua_pushstring(L, s->name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, "closed");
        lua_setfield(L, -2, "state");
    }
    return 1;
}

static mqr_engine_t *engine_of(lua_State *L)
{
    return mqr__state_of(L)->host->e;
}

/* mq.session_status(name) -> table | nil, "ENOENT: ...", "ENOENT" */
static int l_session_status_by_name(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    mqr_upstream_t *u = mqr__upstream_find(engine_of(L), name);
    if (!u) return mqr__lua_fail(L, MQR_ENOENT, name);
    push_status(L, u);
    return 1;
}

/* mq.sessions() -> { "name", ... } every open session of the engine, in
 * creation order. The engine's list runs newest first (a name's newest
 * session is the one found), hence filled from the end. */
static int l_sessions(lua_State *L)
{
    mqr_engine_t *e = engine_of(L);
    int n = 0;
    for (mqr_upstream_t *u = mqr__upstream_first(e); u; u = mqr__upstream_next(u))
        n++;
    lua_createtable(L, n, 0);
    int i = n;
    for (mqr_upstream_t *u = mqr__upstream_first(e); u; u = mqr__upstream_next(u)) {
        lua_pushstring(L, mqr__upstream_name(u));
        lua_rawseti(L, -2, i--);
    }
    return 1;
}

/* mq.sessions_stats() -> manager totals */
static int l_sessions_stats(lua_State *L)
{
    mqr_upstream_manager_stats_t o;
    mqr__upstream_manager_stats(engine_of(L), &o);
    lua_createtable(L, 0, 9);
    set_num(L, "sessions", o.sessions);
    set_num(L, "connected", o.connected);
    set_num(L, "ready", o.ready);
    set_num(L, "failed", o.failed);
    set_num(L, "messages_sent", (double)o.messages_sent);
    set_num(L, "messages_received", (double)o.messages_received);
    set_num(L, "bytes_sent", (double)o.bytes_sent);
    set_num(L, "bytes_received", (double)o.bytes_received);
    set_num(L, "reconnects", (double)o.reconnects);
    return 1;
}

/* ---- events and completions into Lua -------------------------------------- */

#define DISPATCH_KEY "mqrouter.session_dispatch"
#define PENDING_KEY "mqrouter.session_pending"

/* Calls the state's dispatcher with the table on top. [-1, +0] */
static void dispatch(l_state_t *st)
{
    lua_State *L = st->L;
    lua_getfield(L, LUA_REGISTRYINDEX, DISPATCH_KEY);
    if (!lua_isfunction(L, -1)) {
        lua_pop(L, 2);
        return;
    }
    lua_insert(L, -2);
    mqr__script_call(st, 1, "session event", NULL, NULL);
}

void mqr__lsession_dispatch(l_state_t *st)
{
    dispatch(st);
}

/* [-0, +1] */
static void push_event(lua_State *L, const mqr_upstream_event_t *ev)
{
    lua_createtable(L, 0, 8);
    lua_pushstring(L, mqr__upstream_event_name(ev->type));
    lua_setfield(L, -2, "type");
    lua_pushstring(L, ev->name);
    lua_setfield(L, -2, "name");
    set_num(L, "time", (double)ev->time_ms / 1000.0);
    if (ev->reason) {
        lua_pushstring(L, ev->reason);
        lua_setfield(L, -2, "reason");
    }
    if (ev->broker) {
        lua_pushstring(L, ev->broker);
        lua_setfield(L, -2, "broker");
    }
    if (ev->attempt) set_num(L, "attempt", ev->attempt);
    if (ev->type == MQR_UPEV_STATE_CHANGED) {
        lua_pushstring(L, mqr__upstream_state_name(ev->old_state));
        lua_setfield(L, -2, "old");
        lua_pushstring(L, mqr__upstream_state_name(ev->new_state));
        lua_setfield(L, -2, "new");
    }
}

static void observe(void *arg, const mqr_upstream_event_t *ev)
{
    mqr_script_t *h = arg;
    /* Closed from elsewhere (the engine stopping closes every session, and
     * its loop frees them before the scripts go): forget it, so that
     * neither a route's stop nor session_free reaches it afterwards. */
    if (ev->type == MQR_UPEV_REMOVED)
        for (l_session_t *s = h->sessions; s; s = s->next)
            if (s->u == ev->u) s->u = NULL;
    l_state_t *ld = h->loading;
    if (ld && ld->L) {
        lua_State *L = ld->L;
        lua_getfield(L, LUA_REGISTRYINDEX, PENDING_KEY);
        if (lua_istable(L, -1)) {
            push_event(L, ev);
            lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
        }
        lua_pop(L, 1);
    }
    l_state_t *cur = h->cur;
    if (cur && cur->L && cur->active) {
        push_event(cur->L, ev);
        dispatch(cur);
    }
}

static void flush_pending(l_state_t *st)
{
    lua_State *L = st->L;
    if (!L) return;
    lua_getfield(L, LUA_REGISTRYINDEX, PENDING_KEY);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    lua_newtable(L); /* later events go to the dispatcher directly */
    lua_setfield(L, LUA_REGISTRYINDEX, PENDING_KEY);
    int n = (int)lua_objlen(L, -1);
    for (int i = 1; i <= n && st->active && st->L; i++) {
        lua_rawgeti(L, -1, i);
        dispatch(st);
    }
    lua_pop(L, 1);
}

typedef struct {
    mqr_script_t *h;
    double id;
} pub_wait_t;

static void pub_done(void *arg, int status, int reason)
{
    pub_wait_t *w = arg;
    l_state_t *cur = w->h->cur;
    if (cur && cur->L && cur->active) {
        lua_State *L = cur->L;
        lua_createtable(L, 0, 5);
        lua_pushstring(L, "_publish_done");
        lua_setfield(L, -2, "type");
        set_num(L, "id", w->id);
        lua_pushboolean(L, status == 0);
        lua_setfield(L, -2, "ok");
        if (status < 0) {
            char buf[160];
            if (reason >= 0x80)
                snprintf(buf, sizeof buf, "%s: broker answered with reason code 0x%02x",
                         mqr_err_name(status), reason);
            else
                snprintf(buf, sizeof buf, "%s: %s", mqr_err_name(status), mqr_strerror(status));
            lua_pushstring(L, buf);
            lua_setfield(L, -2, "err");
        }
        set_num(L, "reason", reason);
        dispatch(cur);
    }
    free(w);
}

/* up:_publish_async(topic, payload, opts) -> id | nil, err, name; the answer
 * comes as a "_publish_done" event with that id. */
static int l_session_publish_async(lua_State *L)
{
    static double next_id; /* process-wide: ids never repeat across states */
    l_session_t *s = check_session(L);
    mqr_msg_init_t in = {.origin = MQR_ORIGIN_LUA};
    in.topic = luaL_checklstring(L, 2, &in.topic_len);
    in.payload = luaL_checklstring(L, 3, &in.payload_len);
    uint8_t *props;
    static const char *const known[] = {"qos", "retain", "properties", "timeout", NULL};
    mqr__publish_opts(L, 4, "session:publish_sync", known, &in, &props);
    const char *why = NULL;
    int rc = mqr__topic_name_check(in.topic, in.topic_len, &why);
    if (rc == 0 && !s->u) rc = MQR_ECLOSED;
    pub_wait_t *w = NULL;
    if (rc == 0) {
        w = malloc(sizeof *w);
        mqr_msg_t *m = w ? mqr__msg_new(&in) : NULL;
        if (m) {
            w->h = s->host;
            w->id = ++next_id;
            rc = mqr__upstream_publish_cb(s->u, m, pub_done, w);
        } else {
            rc = MQR_ENOMEM;
        }
        mqr_msg_unref(m);
    }
    free(props);
    if (rc < 0) {
        free(w);
        return mqr__lua_fail(L, rc, why);
    }
    lua_pushnumber(L, w->id);
    return 1;
}

/* The answer of a SUBSCRIBE, UNSUBSCRIBE or ping comes like a publish's:
 * a "_publish_done" event with the id returned here. */
static int start_async(lua_State *L, l_session_t *s, int kind, const char *filter, int qos)
{
    static double next_id;
    if (!s->u) return mqr__lua_fail(L, MQR_ECLOSED, NULL);
    pub_wait_t *w = malloc(sizeof *w);
    if (!w) return mqr__lua_fail(L, MQR_ENOMEM, NULL);
    w->h = s->host;
    w->id = -(++next_id); /* negative: never equal to a publish's id */
    int rc = kind == 0   ? mqr__upstream_subscribe_cb(s->u, filter, qos, pub_done, w)
             : kind == 1 ? mqr__upstream_unsubscribe_cb(s->u, filter, pub_done, w)
                         : mqr__upstream_ping_cb(s->u, pub_done, w);
    if (rc < 0) {
        free(w);
        return mqr__lua_fail(L, rc, NULL);
    }
    lua_pushnumber(L, w->id);
    return 1;
}

/* up:_subscribe_async(filter, qos) -> id | nil, err, name */
static int l_session_subscribe_async(lua_State *L)
{
    l_session_t *s = check_session(L);
    const char *filter = luaL_checkstring(L, 2);
    int qos = (int)luaL_optinteger(L, 3, 0);
    if (qos < 0 || qos > 2) return luaL_argerror(L, 3, "QoS must be 0, 1 or 2");
    return start_async(L, s, 0, filter, qos);
}

static int l_session_unsubscribe_async(lua_State *L)
{
    l_session_t *s = check_session(L);
    return start_async(L, s, 1, luaL_checkstring(L, 2), 0);
}

static int l_session_ping_async(lua_State *L)
{
    return start_async(L, check_session(L), 2, NULL, 0);
}

/* up:subscribe(filter [, qos]) -> true | nil, err, name: one more reference
 * on filter (restored after reconnects) without waiting for the answer;
 * up:unsubscribe(filter) drops one. */
static int l_session_subscribe(lua_State *L)
{
    l_session_t *s = check_session(L);
    const char *filter = luaL_checkstring(L, 2);
    int qos = (int)luaL_optinteger(L, 3, 0);
    if (qos < 0 || qos > 2) return luaL_argerror(L, 3, "QoS must be 0, 1 or 2");
    int rc = s->u ? mqr__upstream_subscribe(s->u, filter, qos) : MQR_ECLOSED;
    if (rc < 0) return mqr__lua_fail(L, rc, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_session_unsubscribe(lua_State *L)
{
    l_session_t *s = check_session(L);
    int rc = s->u ? mqr__upstream_unsubscribe(s->u, luaL_checkstring(L, 2)) : MQR_ECLOSED;
    if (rc < 0) return mqr__lua_fail(L, rc, NULL);
    lua_pushboolean(L, 1);
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
        {"status", l_session_status},
        {"close", l_session_close},
        {"_publish_async", l_session_publish_async},
        {"subscribe", l_session_subscribe},
        {"unsubscribe", l_session_unsubscribe},
        {NULL, NULL},
    };
    mqr__lua_class(L, "mqrouter.session", methods, NULL, NULL);
}

/* ---- the Lua half -----------------------------------------------------------
 * Receives the rules table, the session methods table and the C helpers;
 * adds spawn, wait_ready, on, handle, session_messages and the session
 * methods publish_sync, publish_json, publish_batch and messages; returns
 * the dispatcher C calls with every event. Runs outside the sandbox; what it
 * adds is plain functions. */
static const char session_lua[] =
    "local mq, methods, C = ...\n"
    "local traceback, cresume, yield = C.traceback, coroutine.resume, coroutine.yield\n"
    "local EVENTS = { session_added = true, session_connecting = true, session_connected = true,\n"
    "  session_ready = true, session_disconnected = true, session_reconnecting = true,\n"
    "  session_removed = true, session_state_changed = true, session_failed = true,\n"
    "  device_online = true, device_offline = true }\n"
    "local handlers, ready_waits, pubs = {}, {}, {}\n"
    "local function resume(co, ...)\n"
    "  local ok, err = cresume(co, ...)\n"
    "  if not ok then mq.log.error('coroutine failed: ' .. traceback(co, tostring(err))) end\n"
    "end\n"
    "local function current(what)\n"
    "  local co, main = coroutine.running()\n"
    "  if not co or main then\n"
    "    error(what .. ' must be called from a coroutine (start one with mq.spawn)', 3)\n"
    "  end\n"
    "  return co\n"
    "end\n"
    "function mq.spawn(fn, ...)\n"
    "  if type(fn) ~= 'function' then\n"
    "    error('mq.spawn: bad argument #1 (function expected, got ' .. type(fn) .. ')', 2)\n"
    "  end\n"
    "  local co = coroutine.create(fn)\n"
    "  resume(co, ...)\n"
    "  return co\n"
    "end\n"
    "local function is_ready(name)\n"
    "  if name then local st = C.status(name); return st ~= nil and st.ready end\n"
    "  local names = C.names()\n"
    "  if #names == 0 then return false end\n"
    "  for _, n in ipairs(names) do\n"
    "    local st = C.status(n)\n"
    "    if st and not st.ready then return false end\n"
    "  end\n"
    "  return true\n"
    "end\n"
    "local function no_session(name) return \"ENOENT: no session '\" .. name .. \"'\" end\n"
    "function mq.wait_ready(name, timeout)\n"
    "  if name ~= nil and type(name) ~= 'string' then\n"
    "    error('mq.wait_ready: bad argument #1 (session name or nil expected, got ' .. type(name) "
    ".. ')', 2)\n"
    "  end\n"
    "  if timeout ~= nil and type(timeout) ~= 'number' then\n"
    "    error('mq.wait_ready: bad argument #2 (seconds expected, got ' .. type(timeout) .. ')', "
    "2)\n"
    "  end\n"
    "  local co = current('mq.wait_ready')\n"
    "  if name and not C.status(name) then return nil, no_session(name), 'ENOENT' end\n"
    "  if is_ready(name) then return true end\n"
    "  local w = { co = co, name = name }\n"
    "  ready_waits[w] = true\n"
    "  if timeout then\n"
    "    w.timer = mq.after(timeout, function()\n"
    "      if not ready_waits[w] then return end\n"
    "      ready_waits[w] = nil\n"
    "      resume(co, nil, string.format('ETIMEDOUT: %s not ready after %g s',\n"
    "        name and (\"session '\" .. name .. \"'\") or 'sessions', timeout), 'ETIMEDOUT')\n"
    "    end)\n"
    "  end\n"
    "  return yield()\n"
    "end\n"
    "function mq.on(event, fn)\n"
    "  if not EVENTS[event] then\n"
    "    local names = {}\n"
    "    for k in pairs(EVENTS) do names[#names + 1] = k end\n"
    "    table.sort(names)\n"
    "    error(\"mq.on: unknown event '\" .. tostring(event) .. \"' (it knows \" .. "
    "table.concat(names, ', ') .. ')', 2)\n"
    "  end\n"
    "  if type(fn) ~= 'function' then\n"
    "    error('mq.on: bad argument #2 (function expected, got ' .. type(fn) .. ')', 2)\n"
    "  end\n"
    "  local list = handlers[event] or {}\n"
    "  handlers[event] = list\n"
    "  local entry = { fn = fn }\n"
    "  list[#list + 1] = entry\n"
    "  return { stop = function()\n"
    "    for i, e in ipairs(list) do if e == entry then table.remove(list, i) break end end\n"
    "  end }\n"
    "end\n"
    "local function dispatch(ev)\n"
    "  if ev.type == '_publish_done' then\n"
    "    local co = pubs[ev.id]\n"
    "    if not co then return end\n"
    "    pubs[ev.id] = nil\n"
    "    if ev.ok then resume(co, true, nil, ev.reason) else resume(co, nil, ev.err, ev.reason) "
    "end\n"
    "    return\n"
    "  end\n"
    "  local list = handlers[ev.type]\n"
    "  if list then\n"
    "    local copy = { unpack(list) }\n"
    "    for _, e in ipairs(copy) do\n"
    "      local ok, err = xpcall(function() return e.fn(ev) end, traceback)\n"
    "      if not ok then mq.log.error(ev.type .. ' handler failed: ' .. tostring(err)) end\n"
    "    end\n"
    "  end\n"
    "  local done = {}\n"
    "  for w in pairs(ready_waits) do\n"
    "    if is_ready(w.name) or (w.name and not C.status(w.name)) then done[#done + 1] = w end\n"
    "  end\n"
    "  for _, w in ipairs(done) do\n"
    "    ready_waits[w] = nil\n"
    "    if w.timer then w.timer:stop() end\n"
    "    if is_ready(w.name) then resume(w.co, true)\n"
    "    else resume(w.co, nil, no_session(w.name), 'ENOENT') end -- removed meanwhile\n"
    "  end\n"
    "end\n"
    "local function wait_answer(co, id, timeout, what)\n"
    "  pubs[id] = co\n"
    "  local t = mq.after(timeout, function()\n"
    "    if not pubs[id] then return end\n"
    "    pubs[id] = nil\n"
    "    resume(co, nil, string.format('ETIMEDOUT: no answer to the %s after %g s', what, "
    "timeout),\n"
    "      'ETIMEDOUT')\n"
    "  end)\n"
    "  local a, b, c = yield()\n"
    "  t:stop()\n"
    "  return a, b, c\n"
    "end\n"
    "function methods.publish_sync(self, topic, payload, opts)\n"
    "  local co = current('session:publish_sync')\n"
    "  local id, err, name = C.publish_async(self, topic, payload, opts)\n"
    "  if not id then return nil, err, name end\n"
    "  local ok, e, reason = wait_answer(co, id, opts and opts.timeout or 5, 'publish on ' .. "
    "topic)\n"
    "  if ok then return true end\n"
    "  return nil, e, reason\n"
    "end\n"
    "function methods.subscribe_sync(self, filter, opts)\n"
    "  if opts ~= nil then C.check_options(opts, 'session:subscribe_sync', { 'qos', 'timeout' }) "
    "end\n"
    "  local co = current('session:subscribe_sync')\n"
    "  local id, err, name = C.subscribe_async(self, filter, opts and opts.qos or 0)\n"
    "  if not id then return nil, err, name end\n"
    "  local ok, e, reason = wait_answer(co, id, opts and opts.timeout or 5,\n"
    "    'subscription to ' .. filter)\n"
    "  if ok then return reason end\n"
    "  return nil, e, reason\n"
    "end\n"
    "function methods.unsubscribe_sync(self, filter, opts)\n"
    "  if opts ~= nil then C.check_options(opts, 'session:unsubscribe_sync', { 'timeout' }) end\n"
    "  local co = current('session:unsubscribe_sync')\n"
    "  local id, err, name = C.unsubscribe_async(self, filter)\n"
    "  if not id then return nil, err, name end\n"
    "  local ok, e, reason = wait_answer(co, id, opts and opts.timeout or 5,\n"
    "    'unsubscribe from ' .. filter)\n"
    "  if ok then return true, reason end\n"
    "  return nil, e, reason\n"
    "end\n"
    "function methods.ping(self, timeout)\n"
    "  local co = current('session:ping')\n"
    "  local t0 = mq.now()\n"
    "  local id, err, name = C.ping_async(self)\n"
    "  if not id then return nil, err, name end\n"
    "  local ok, e, reason = wait_answer(co, id, timeout or 5, 'ping')\n"
    "  if ok then return mq.now() - t0 end\n"
    "  return nil, e, reason\n"
    "end\n"
    "function mq.publish_to(sessions, topic, payload, opts)\n"
    "  if type(sessions) ~= 'table' then\n"
    "    error('mq.publish_to: bad argument #1 (list of sessions expected, got ' .. type(sessions) "
    ".. ')', 2)\n"
    "  end\n"
    "  local published, failed, failures = 0, 0, {}\n"
    "  for i, s in ipairs(sessions) do\n"
    "    local ok, err, name = s:publish(topic, payload, opts)\n"
    "    if ok then published = published + 1\n"
    "    else\n"
    "      failed = failed + 1\n"
    "      failures[#failures + 1] = { index = i, session = s:name(), err = err, name = name }\n"
    "    end\n"
    "  end\n"
    "  return published, failed, failures\n"
    "end\n"
    "local json\n"
    "function methods.publish_json(self, topic, value, opts)\n"
    "  json = json or require('cjson')\n"
    "  local ok, text = pcall(json.encode, value)\n"
    "  if not ok then return nil, 'EPAYLOAD: ' .. tostring(text), 'EPAYLOAD' end\n"
    "  return self:publish(topic, text, opts)\n"
    "end\n"
    "local BATCH_ITEM = { topic = true, payload = true, qos = true, retain = true,\n"
    "  properties = true }\n"
    "function methods.publish_batch(self, list, opts)\n"
    "  if type(list) ~= 'table' then\n"
    "    error('session:publish_batch: bad argument #1 (table expected, got ' .. type(list) .. "
    "')', "
    "2)\n"
    "  end\n"
    "  local published, failed, failures = 0, 0, {}\n"
    "  for i, m in ipairs(list) do\n"
    "    if type(m) ~= 'table' then\n"
    "      error('session:publish_batch: item ' .. i .. ' must be a table, not a ' .. type(m), 2)\n"
    "    end\n"
    "    for k in pairs(m) do\n"
    "      if type(k) == 'string' and not BATCH_ITEM[k] then\n"
    "        error('session:publish_batch: item ' .. i .. \": unknown option '\" .. k ..\n"
    "          \"' (it takes topic, payload, qos, retain, properties)\", 2)\n"
    "      end\n"
    "    end\n"
    "    local topic, payload = m.topic or m[1], m.payload or m[2] or ''\n"
    "    local o = (m.qos or m.retain or m.properties)\n"
    "      and { qos = m.qos, retain = m.retain, properties = m.properties } or opts\n"
    "    local ok, res, err = pcall(self.publish, self, topic, payload, o)\n"
    "    if ok and res then published = published + 1\n"
    "    else\n"
    "      failed = failed + 1\n"
    "      failures[#failures + 1] = { index = i, topic = topic, err = ok and err or tostring(res) "
    "}\n"
    "    end\n"
    "  end\n"
    "  return published, failed, failures\n"
    "end\n"
    "-- The messages that arrive while no coroutine waits wait in a C buffer\n"
    "-- (l_iter.c), so a reload can hand them to the new rules; wake is how\n"
    "-- that buffer hands them to a coroutine waiting in the new ones.\n"
    "-- The iterators' options less max: those of the routes they make.\n"
    "local function route_opts(opts, fname)\n"
    "  if opts == nil then return nil end\n"
    "  C.check_options(opts, fname, { 'max', 'qos', 'dead_letter', 'no_local',\n"
    "    'retain_as_published', 'retain_handling' })\n"
    "  local r = {}\n"
    "  for k, v in pairs(opts) do if k ~= 'max' then r[k] = v end end\n"
    "  return r\n"
    "end\n"
    "local function message_iterator(fname, make_route, source, filter, opts)\n"
    "  local max = opts and opts.max or 1000\n"
    "  if type(max) ~= 'number' or max < 1 then\n"
    "    error(fname .. ': option max must be a number >= 1, not ' .. tostring(max), 3)\n"
    "  end\n"
    "  local waiting, stopped, buf = nil, false, nil\n"
    "  local function hand(...) local co = waiting; waiting = nil; resume(co, ...) end\n"
    "  buf = C.iter_new(source, filter, max, function()\n"
    "    if waiting and not stopped then local m = buf:pop(); if m then hand(m) end end\n"
    "  end)\n"
    "  local it = {}\n"
    "  it.route = make_route(function(msg)\n"
    "    if stopped then return end\n"
    "    if waiting then hand(msg) else buf:push(msg) end\n"
    "  end)\n"
    "  function it.next(timeout)\n"
    "    local m = buf:pop()\n"
    "    if m or stopped then return m end\n"
    "    local co = current('the message iterator')\n"
    "    waiting = co\n"
    "    local t\n"
    "    if type(timeout) == 'number' then\n"
    "      t = mq.after(timeout, function()\n"
    "        if waiting == co then hand(nil, 'ETIMEDOUT: no message', 'ETIMEDOUT') end\n"
    "      end)\n"
    "    end\n"
    "    local m2, err, name = yield()\n"
    "    if t then t:stop() end\n"
    "    return m2, err, name\n"
    "  end\n"
    "  -- Ends the subscription and the for loop: a coroutine waiting gets nil\n"
    "  -- now, next() returns nil from now on; what waited is counted dropped.\n"
    "  function it.stop()\n"
    "    if stopped then return end\n"
    "    stopped = true\n"
    "    it.route:stop()\n"
    "    buf:stop()\n"
    "    if waiting then hand(nil) end\n"
    "  end\n"
    "  return setmetatable(it, { __call = function(self) return self.next() end,\n"
    "    __index = function(_, k) if k == 'dropped' then return buf:dropped() end end })\n"
    "end\n"
    "function methods.messages(self, filter, opts)\n"
    "  if type(filter) ~= 'string' then\n"
    "    error('session:messages: bad argument #1 (filter expected, got ' .. type(filter) .. ')', "
    "2)\n"
    "  end\n"
    "  local ropts = route_opts(opts, 'session:messages')\n"
    "  return message_iterator('session:messages',\n"
    "    function(fn) return self:route(filter, fn, ropts) end, self:name(), filter, opts)\n"
    "end\n"
    "local declared, handles = {}, {}\n"
    "local raw_session = mq.session\n"
    "function mq.session(cfg)\n"
    "  local ok, s = pcall(raw_session, cfg)\n"
    "  if not ok then error((tostring(s):gsub('^sessions:%d+: ', '')), 2) end\n"
    "  declared[#declared + 1] = s\n"
    "  for _, h in ipairs(handles) do\n"
    "    if not h.stopped then h.routes[#h.routes + 1] = s:route(h.filter, h.fn, h.opts) end\n"
    "  end\n"
    "  return s\n"
    "end\n"
    "local handle_mt = { __index = {\n"
    "  stop = function(h)\n"
    "    if h.stopped then return end\n"
    "    h.stopped = true\n"
    "    for _, r in ipairs(h.routes) do r:stop() end\n"
    "  end } }\n"
    "function mq.handle(filter, fn, opts)\n"
    "  if type(filter) ~= 'string' then\n"
    "    error('mq.handle: bad argument #1 (filter expected, got ' .. type(filter) .. ')', 2)\n"
    "  end\n"
    "  if type(fn) ~= 'function' then\n"
    "    error('mq.handle: bad argument #2 (function expected, got ' .. type(fn) .. ')', 2)\n"
    "  end\n"
    "  if opts ~= nil then\n"
    "    C.check_options(opts, 'mq.handle', { 'qos', 'dead_letter', 'no_local',\n"
    "      'retain_as_published', 'retain_handling' })\n"
    "  end\n"
    "  local h = setmetatable({ filter = filter, fn = fn, opts = opts, routes = {} }, handle_mt)\n"
    "  for _, s in ipairs(declared) do h.routes[#h.routes + 1] = s:route(filter, fn, opts) end\n"
    "  handles[#handles + 1] = h\n"
    "  return h\n"
    "end\n"
    "function mq.session_messages(filter, opts)\n"
    "  if type(filter) ~= 'string' then\n"
    "    error('mq.session_messages: bad argument #1 (filter expected, got ' .. type(filter) .. "
    "')', 2)\n"
    "  end\n"
    "  local ropts = route_opts(opts, 'mq.session_messages')\n"
    "  return message_iterator('mq.session_messages',\n"
    "    function(fn) return mq.handle(filter, fn, ropts) end,\n"
    "    nil, filter, opts)\n"
    "end\n"
    "return dispatch\n";

/* check_options(t, fname, { known... }): mqr__lua_check_options for the Lua
 * half; raises at the level of the function that called the Lua half. */
static int l_c_check_options(lua_State *L)
{
    const char *fname = lua_tostring(L, 2);
    if (!lua_istable(L, 1))
        return luaL_error(L, "%s: options must be a table, not a %s", fname, luaL_typename(L, 1));
    const char *known[16];
    int n = (int)lua_objlen(L, 3);
    for (int i = 0; i < n && i < 15; i++) {
        lua_rawgeti(L, 3, i + 1);
        known[i] = lua_tostring(L, -1); /* the list holds the strings */
        lua_pop(L, 1);
    }
    known[n < 15 ? n : 15] = NULL;
    mqr__lua_check_options(L, 1, fname, known);
    return 0;
}

static int l_c_status(lua_State *L)
{
    mqr_upstream_t *u = mqr__upstream_find(engine_of(L), luaL_checkstring(L, 1));
    if (!u) return 0;
    push_status(L, u);
    return 1;
}

void mqr__lsession_open(lua_State *L)
{
    l_state_t *st = mqr__state_of(L);
    int api = lua_gettop(L);
    static const luaL_Reg fns[] = {
        {"sessions", l_sessions},
        {"session_status", l_session_status_by_name},
        {"sessions_stats", l_sessions_stats},
        {NULL, NULL},
    };
    lua_pushvalue(L, api);
    luaL_setfuncs(L, fns, 0);
    lua_pop(L, 1);
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, PENDING_KEY);
    if (luaL_loadbuffer(L, session_lua, sizeof session_lua - 1, "=sessions") != 0)
        lua_error(L); /* a bug in session_lua: state_new runs this unprotected */
    lua_pushvalue(L, api);
    luaL_getmetatable(L, "mqrouter.session");
    lua_getfield(L, -1, "__index");
    lua_remove(L, -2);
    lua_createtable(L, 0, 3);
    lua_pushcfunction(L, l_c_status);
    lua_setfield(L, -2, "status");
    lua_pushcfunction(L, l_sessions);
    lua_setfield(L, -2, "names");
    lua_pushcfunction(L, l_session_publish_async);
    lua_setfield(L, -2, "publish_async");
    lua_pushcfunction(L, l_session_subscribe_async);
    lua_setfield(L, -2, "subscribe_async");
    lua_pushcfunction(L, l_session_unsubscribe_async);
    lua_setfield(L, -2, "unsubscribe_async");
    lua_pushcfunction(L, l_session_ping_async);
    lua_setfield(L, -2, "ping_async");
    lua_pushcfunction(L, mqr__liter_new);
    lua_setfield(L, -2, "iter_new");
    lua_pushcfunction(L, l_c_check_options);
    lua_setfield(L, -2, "check_options");
    lua_pushcfunction(L, mqr__lua_traceback_fn); /* debug.traceback on one line */
    lua_setfield(L, -2, "traceback");
    lua_call(L, 3, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, DISPATCH_KEY);
    mqr__upstream_observe(st->host->e, observe, st->host); /* once per host: EEXIST after */
}
