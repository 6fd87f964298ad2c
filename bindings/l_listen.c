/*
 * l_listen.c — listeners declared by rule scripts:
 * `local l = mq.listen{ type = "tls", host = "0.0.0.0", port = 8883,
 *                       cert = "server.pem", key = "server.key", ... }`
 * with `l:port()`, `l:type()`, `l:host()`.
 *
 * Like sessions and queues, listeners belong to the script host, not to a
 * Lua state (the claim/takeover/abandon bookkeeping is decl.c's): a reload
 * that declares the same listener with the same settings keeps the socket
 * and its clients; one the new script no longer declares (or declares
 * differently) is closed when the new script takes over, never before, and
 * a reload that fails closes only what it opened itself. A
 * changed listener on the same port cannot be bound while the old one
 * holds it: it is started at the takeover, right after the old one closes
 * (a failure then is logged; the new rules run without it).
 */
#include "script.h"

#include <stdlib.h>
#include <string.h>

static const char *const type_names[] = {"tcp", "tls", "ws", "wss"};

static void listen_free(l_listen_t *x)
{
    if (x->l && !mqr__engine_stopping(x->host->e)) mqr_listener_close(x->l);
    for (int i = 0; i < 4; i++)
        free(x->strs[i]);
    free(x->d.config_key);
    free(x->d.name);
    free(x);
}

static void drop_listen(l_decl_t *d, mqr_decl_why_t why)
{
    (void)why;
    listen_free((l_listen_t *)d);
}

static int start(l_listen_t *x, char **err)
{
    return mqr_engine_listen(x->host->e, &x->opts, &x->l, err);
}

/* what mq.listen reads: the options and the type's name */
typedef struct {
    mqr_listen_options_t o;
    const char *type;
} listen_read_t;

#define LI(key, field, lo, hi)                                                                     \
    {                                                                                              \
        MQR_LOPT(key, MQR_LOPT_INT, listen_read_t, o.field), .min = lo, .max = hi                  \
    }
#define LS(key, field)                                                                             \
    {                                                                                              \
        MQR_LOPT(key, MQR_LOPT_STRING, listen_read_t, field)                                       \
    }

static const mqr_lopt_t listen_opts[] = {
    LS("type", type),
    LS("host", o.host),
    LI("port", port, 0, 65535),
    LS("cert", o.cert_file),
    LS("key", o.key_file),
    LS("cafile", o.ca_file),
    {.key = "require_client_cert"}, /* any value: its truth */
    LI("max_packet_size", max_packet_size, 0, 268435460),
    LI("max_connections", max_connections, 0, 100000000),
    LI("max_inflight", max_inflight, 0, 65535),
    LI("max_queued", max_queued, 0, 100000000),
    LI("max_out_bytes", max_out_bytes, 0, (double)((int64_t)1 << 40)),
    LI("receive_max", receive_max, 0, 65535),
    LI("topic_alias_max", topic_alias_max, -1, 65535),
    LI("max_subscriptions", max_subscriptions, 0, 100000000),
    LI("connect_timeout_ms", connect_timeout_ms, 0, 3600000),
    LI("max_keepalive", max_keepalive, 0, 65535),
    LI("max_qos", max_qos, 0, 2),
    LI("publish_rate", publish_rate, 0, 1000000),
    LI("publish_burst", publish_burst, 0, 1000000),
    LI("connect_rate", connect_rate, 0, 1000000),
    LI("connect_burst", connect_burst, 0, 1000000),
    LI("stuck_timeout_ms", stuck_timeout_ms, 0, 86400000),
    LI("sys_interval_ms", sys_interval_ms, -1, 86400000),
    {.key = "allow_anonymous"}, /* nil, true or false: three states */
    LI("v311_session_expiry_s", v311_session_expiry_s, 0, 0x7fffffff),
};

/* listen{ type, host, port, cert, key, cafile, require_client_cert, limits } */
int mqr__llisten_new(lua_State *L)
{
    l_state_t *st = lua_touserdata(L, lua_upvalueindex(1));
    mqr_script_t *h = st->host;
    if (!lua_istable(L, 1))
        return luaL_error(L,
                          "mq.listen: expects a table of options { type =, port =, ... }, "
                          "not a %s",
                          luaL_typename(L, 1));
    listen_read_t r;
    mqr_listen_options_init(&r.o);
    mqr__lua_read_options(L, 1, "mq.listen", listen_opts,
                          sizeof listen_opts / sizeof listen_opts[0], &r);
    mqr_listen_options_t o = r.o;
    const char *type = r.type;
    o.type = -1;
    for (int i = 0; i < 4; i++)
        if (strcmp(type ? type : "tcp", type_names[i]) == 0) o.type = i;
    if (o.type < 0)
        return luaL_error(L, "listen: type must be \"tcp\", \"tls\", \"ws\" or \"wss\"");
    bool tls = o.type == MQR_LISTEN_TLS || o.type == MQR_LISTEN_WSS;
    if (!o.host) o.host = "127.0.0.1";
    lua_getfield(L, 1, "port");
    bool has_port = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (!has_port) {
        if (o.type >= MQR_LISTEN_WS)
            return luaL_error(L, "listen: a %s listener needs a port", type_names[o.type]);
        o.port = tls ? 8883 : 1883;
    }
    lua_getfield(L, 1, "require_client_cert");
    o.require_client_cert = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (tls && (!o.cert_file || !o.key_file))
        return luaL_error(L, "listen: a %s listener needs cert and key", type_names[o.type]);
    if (!tls && (o.cert_file || o.key_file || o.ca_file || o.require_client_cert))
        return luaL_error(L, "listen: cert, key and cafile are for tls and wss listeners");
    if (o.require_client_cert && !o.ca_file)
        return luaL_error(L, "listen: require_client_cert needs cafile");
    if (o.max_qos == 0) {
        lua_getfield(L, 1, "max_qos");
        if (!lua_isnil(L, -1)) o.max_qos = -1; /* an explicit 0: QoS 0 only */
        lua_pop(L, 1);
    }
    lua_getfield(L, 1, "allow_anonymous");
    if (!lua_isnil(L, -1)) o.allow_anonymous = lua_toboolean(L, -1) ? 1 : -1;
    lua_pop(L, 1);

    lua_pushfstring(L, "%s|%s|%d|%s|%s|%s|%d|%d|%d|%d|%d|%d|%d|%d|%d|%d|%d", type_names[o.type],
                    o.host, o.port, o.cert_file ? o.cert_file : "", o.key_file ? o.key_file : "",
                    o.ca_file ? o.ca_file : "", o.require_client_cert, (int)o.max_packet_size,
                    (int)o.max_connections, (int)o.max_inflight, (int)o.max_queued,
                    (int)(o.max_out_bytes >> 10), (int)o.receive_max, o.topic_alias_max,
                    (int)o.max_subscriptions, (int)o.connect_timeout_ms, (int)o.max_keepalive);
    lua_pushfstring(L, "|%d|%d|%d|%d|%d|%d|%d|%d|%d", o.max_qos, (int)o.publish_rate,
                    (int)o.publish_burst, (int)o.connect_rate, (int)o.connect_burst,
                    (int)o.stuck_timeout_ms, o.sys_interval_ms, o.allow_anonymous,
                    (int)o.v311_session_expiry_s);
    lua_concat(L, 2);
    const char *key = lua_tostring(L, -1);
    lua_pushfstring(L, "%s %s:%d", type_names[o.type], o.host, o.port);
    const char *name = lua_tostring(L, -1);

    l_listen_t *x = NULL;
    bool twice = false;
    for (l_decl_t *d = h->listens.head; d && !x; d = d->next) {
        l_listen_t *it = (l_listen_t *)d;
        if (strcmp(it->d.config_key, key) != 0) continue;
        if (it->d.claimed_by == st)
            twice = true;
        else
            x = it;
    }
    /* port 0 asks for any free port: two such declarations are two listeners */
    if (!x && twice && o.port != 0) return luaL_error(L, "listener %s declared twice", name);
    if (!x) {
        x = calloc(1, sizeof *x);
        if (!x) return luaL_error(L, "out of memory");
        x->host = h;
        x->d.config_key = strdup(key);
        x->d.name = strdup(name);
        const char *src[4] = {o.host, o.cert_file, o.key_file, o.ca_file};
        for (int i = 0; i < 4; i++)
            x->strs[i] = src[i] ? strdup(src[i]) : NULL;
        x->opts = o;
        x->opts.host = x->strs[0];
        x->opts.cert_file = x->strs[1];
        x->opts.key_file = x->strs[2];
        x->opts.ca_file = x->strs[3];
        if (!x->d.config_key || !x->d.name || !x->strs[0]) {
            listen_free(x);
            return luaL_error(L, "out of memory");
        }
        char *err = NULL;
        int rc = start(x, &err);
        if (rc == UV_EADDRINUSE && o.port != 0) {
            /* held by a listener of the running rules that this script may
             * be replacing: start it at the takeover instead */
            for (l_decl_t *d = h->listens.head; d; d = d->next) {
                l_listen_t *it = (l_listen_t *)d;
                if (it->l && it->d.claimed_by != st && mqr_listener_port(it->l) == o.port)
                    x->deferred = true;
            }
        }
        if (rc < 0 && !x->deferred) {
            lua_pushfstring(L, "%s", err ? err : mqr_strerror(rc));
            free(err);
            listen_free(x);
            return lua_error(L);
        }
        free(err);
        mqr__decl_add(&h->listens, &x->d, st);
    }
    x->d.claimed_by = st;
    lua_pop(L, 2);
    l_listen_t **ud = lua_newuserdata(L, sizeof *ud);
    *ud = x;
    luaL_getmetatable(L, "mqrouter.listener");
    lua_setmetatable(L, -2);
    return 1;
}

void mqr__llisten_activate(mqr_script_t *h, l_state_t *st)
{
    /* first close what the new rules dropped: their ports may be wanted */
    mqr__decl_takeover(&h->listens, st, drop_listen);
    for (l_decl_t *d = h->listens.head; d; d = d->next) {
        l_listen_t *x = (l_listen_t *)d;
        if (!x->deferred) continue;
        x->deferred = false;
        char *err = NULL;
        int rc = start(x, &err);
        if (rc < 0)
            MQR_LOG_E("script", "listener %s not started after the reload: %s", x->d.name,
                      err ? err : mqr_strerror(rc));
        free(err);
    }
}

void mqr__llisten_abandon(mqr_script_t *h, l_state_t *st)
{
    mqr__decl_abandon(&h->listens, st, h->cur, drop_listen);
}

void mqr__llisten_close_all(mqr_script_t *h)
{
    mqr__decl_drop_all(&h->listens, drop_listen);
}

static l_listen_t *check_listen(lua_State *L)
{
    l_listen_t **ud = luaL_checkudata(L, 1, "mqrouter.listener");
    return *ud;
}

/* l:port() -> the bound port (the chosen one for port = 0), nil when not
 * listening (a deferred start that failed) */
static int l_listen_port(lua_State *L)
{
    l_listen_t *x = check_listen(L);
    if (!x->l) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushinteger(L, mqr_listener_port(x->l));
    return 1;
}

static int l_listen_type(lua_State *L)
{
    lua_pushstring(L, type_names[check_listen(L)->opts.type]);
    return 1;
}

static int l_listen_host(lua_State *L)
{
    lua_pushstring(L, check_listen(L)->opts.host);
    return 1;
}

void mqr__llisten_register(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"port", l_listen_port},
        {"type", l_listen_type},
        {"host", l_listen_host},
        {NULL, NULL},
    };
    mqr__lua_class(L, "mqrouter.listener", methods, NULL, NULL);
}
