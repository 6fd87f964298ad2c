/*
 * l_upstream.c — upstream broker sessions (core/upstream/) as rule scripts
 * declare them: `local up = mq.upstream{ name = "cloud", broker =
 * "tcp://host:1883", ... }` (mq.session is the older name of the same
 * function), what a reload does with them, and their credentials hook.
 *
 * "Upstream session" is the connection mqrouter keeps to another broker;
 * it is not the persistent session of a client of our own listeners
 * (core/listener/). The handle's methods are in l_upstream_handle.c; the
 * Lua half (lua/host/upstream.lua: mq.spawn, mq.wait_ready, up:publish_sync,
 * up:messages, mq.handle...), events and asynchronous answers are in
 * l_upstream_events.c.
 *
 * Sessions belong to the script host, not to a Lua state: a reload that
 * declares the same session with the same settings keeps the connection;
 * one the new script no longer declares (or declares differently) is closed
 * when the new script takes over, never before. Must not: run Lua for a
 * state that is neither serving nor loading, or drop a session's stored
 * messages unless the rules dropped it.
 */
#include "l_upstream_int.h"

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

static void check_uri(lua_State *L, const char *fname, const char *what, const char *uri)
{
    if (!broker_uri_ok(uri))
        luaL_error(L,
                   "%s: %s '%s' is not a broker URI (tcp://, ssl://, mqtt://, mqtts://, "
                   "ws://, wss:// HOST:PORT)",
                   fname, what, uri);
}

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
    l_upstream_t *s = arg;
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

/* discard: the rules dropped the session, so are its stored messages;
 * otherwise (engine stopping, a failed load) they stay for the next start. */
static void session_free(l_upstream_t *s, bool discard)
{
    if (s->u && discard)
        mqr__upstream_discard(s->u);
    else if (s->u)
        mqr__upstream_close(s->u);
    free(s->name);
    free(s->config_key);
    free(s);
}

static void unlink_session(mqr_script_t *h, l_upstream_t *s)
{
    for (l_upstream_t **p = &h->upstreams; *p; p = &(*p)->next) {
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
static const mqr_upstream_tls_t *opt_tls(lua_State *L, int t, const char *fname, const char *name,
                                         mqr_upstream_tls_t *tls)
{
    if (lua_isnil(L, t)) {
        lua_pushliteral(L, "-");
        return NULL;
    }
    if (!lua_istable(L, t)) luaL_error(L, "session '%s': tls must be a table", name);
    static const char *const known[] = {"cafile", "capath",          "cert", "key", "key_password",
                                        "verify", "verify_hostname", NULL};
    lua_pushfstring(L, "%s '%s': tls", fname, name);
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

/* what mq.upstream reads; seconds given as numbers become whole seconds */
typedef struct {
    mqr_upstream_config_t cfg;
    const char *on_full;
    double session_expiry;
    double max_buffered_bytes;
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
    {MQR_LOPT("max_buffered_bytes", MQR_LOPT_NUMBER, session_read_t, max_buffered_bytes),
     .def = 64.0 * 1024 * 1024, .min = 1, .max = 9e15},
    {MQR_LOPT("on_full", MQR_LOPT_STRING, session_read_t, on_full), .sdef = "refuse"},
    {.key = "credentials"},
    {.key = "persist"},
    SS("prefix", cfg.prefix),
    {.key = "map"},
    {.key = "tls"},
    SS("transport", cfg.transport),
    SS("auth_method", cfg.auth_method),
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

/* mq.upstream{ name, broker | brokers, client_id, keepalive, clean, username,
 *          password, version, max_buffered, max_buffered_bytes, session_expiry, prefix,
 *          will = {topic, payload, qos, retain},
 *          reconnect = {initial, max, max_attempts},
 *          tls = {cafile, capath, cert, key, key_password, verify, verify_hostname} } */
static int declare(lua_State *L, const char *fname)
{
    l_state_t *st = lua_touserdata(L, lua_upvalueindex(1));
    mqr_script_t *h = st->host;
    if (!lua_istable(L, 1))
        return luaL_error(L,
                          "%s: expects a table of options { name =, broker =, ... }, "
                          "not a %s",
                          fname, luaL_typename(L, 1));
    session_read_t r = {0};
    mqr__lua_read_options(L, 1, fname, session_opts, N_OPTS(session_opts), &r);
    mqr_upstream_config_t cfg = r.cfg;
    if (!cfg.name || !*cfg.name) return luaL_error(L, "%s: needs a name (name = \"...\")", fname);
    if (cfg.uri) check_uri(L, fname, "broker", cfg.uri);
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
            check_uri(L, fname, "brokers entry", uris[i]);
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
            return luaL_error(L, "%s: will must be a table {topic, payload, qos, retain}", fname);
        lua_pushfstring(L, "%s '%s': will", fname, cfg.name);
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
            return luaL_error(L, "%s: reconnect must be a table {initial, max, max_attempts}",
                              fname);
        lua_pushfstring(L, "%s '%s': reconnect", fname, cfg.name);
        reconnect_read_t rr;
        mqr__lua_read_options(L, rec_idx, lua_tostring(L, -1), reconnect_opts,
                              N_OPTS(reconnect_opts), &rr);
        lua_pop(L, 1);
        cfg.retry_initial_s = (int)rr.initial;
        cfg.retry_max_s = (int)rr.max;
        cfg.max_reconnects = rr.max_attempts;
    }
    cfg.session_expiry_s = (int64_t)r.session_expiry;
    cfg.max_buffered_bytes = (int64_t)r.max_buffered_bytes;
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
    cfg.tls = opt_tls(L, lua_gettop(L), fname, cfg.name, &tls);
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
    lua_pushstring(L, cfg.transport ? cfg.transport : ""); /* another transport: a new session */
    lua_pushstring(L, "|");
    lua_pushstring(L, cfg.auth_method ? cfg.auth_method : "");
    lua_pushfstring(L, "|%f", (double)cfg.max_buffered_bytes);
    lua_concat(L, 6);
    const char *key = lua_tostring(L, -1);

    l_upstream_t *s = NULL;
    for (l_upstream_t *it = h->upstreams; it; it = it->next) {
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
        s->next = h->upstreams;
        h->upstreams = s;
        mqr__upstream_set_credentials_hook(s->u, cred_hook, s);
    }
    s->claimed_by = st;
    l_upstream_t **ud = lua_newuserdata(L, sizeof *ud);
    *ud = s;
    luaL_getmetatable(L, UPSTREAM_MT);
    lua_setmetatable(L, -2);
    return 1;
}

/* Two names, one function: each names itself in its errors. */
int mqr__lupstream_new(lua_State *L)
{
    return declare(L, "mq.upstream");
}

int mqr__lupstream_new_session(lua_State *L)
{
    return declare(L, "mq.session");
}

void mqr__lupstream_activate(mqr_script_t *h, l_state_t *st)
{
    /* Events seen while st loaded come first: they happened before the
     * removals below. */
    mqr__lupstream_flush_pending(st);
    for (l_upstream_t *s = h->upstreams, *next; s; s = next) {
        next = s->next;
        s->created_by = NULL;
        if (s->claimed_by == st) continue;
        unlink_session(h, s);
        session_free(s, true);
    }
}

void mqr__lupstream_abandon(mqr_script_t *h, l_state_t *st)
{
    for (l_upstream_t *s = h->upstreams, *next; s; s = next) {
        next = s->next;
        if (s->created_by == st) {
            unlink_session(h, s);
            session_free(s, false);
        } else if (s->claimed_by == st) {
            s->claimed_by = h->cur;
        }
    }
}

void mqr__lupstream_close_all(mqr_script_t *h)
{
    mqr__upstream_unobserve(h->e, mqr__lupstream_observe, h);
    while (h->upstreams) {
        l_upstream_t *s = h->upstreams;
        h->upstreams = s->next;
        session_free(s, false);
    }
}
