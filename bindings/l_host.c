/*
 * l_host.c — `require "mqrouter"` from a plain LuaJIT (busted specs, tools):
 * create engines, load rules into them, publish, step the loop, and capture
 * what was routed and logged.
 *
 * The rules of an engine run in the engine's own Lua state, exactly as under
 * the mqrouter executable; this state only drives it. Nothing here runs on
 * another thread.
 */
#include "script.h"

#include "queue.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct l_capture l_capture_t;

typedef struct {
    mqr_engine_t *e;
    l_capture_t *captures;
} l_engine_t;

struct l_capture {
    l_engine_t *owner; /* NULL once the engine is closed */
    l_capture_t *next;
    mqr_csub_t *sub;
    mqr_msg_t **msgs;
    size_t count, cap;
};

/* ---- log capture (the sink may be called from any thread) ---- */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char **log_lines;
static size_t log_count, log_cap;
static bool log_echo;

static void capture_sink(void *arg, int level, const char *component, const char *text)
{
    static const char *const tags[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    size_t n = strlen(text) + strlen(component) + 16;
    char *line = malloc(n);
    if (!line) return;
    snprintf(line, n, "%s [%s] %s", tags[level & 3], component, text);
    if (log_echo) fprintf(stderr, "%s\n", line);
    pthread_mutex_lock(&log_lock);
    if (log_count == log_cap) {
        size_t cap = log_cap ? log_cap * 2 : 64;
        char **bigger = realloc(log_lines, cap * sizeof *bigger);
        if (!bigger) {
            pthread_mutex_unlock(&log_lock);
            free(line);
            return;
        }
        log_lines = bigger;
        log_cap = cap;
    }
    log_lines[log_count++] = line;
    pthread_mutex_unlock(&log_lock);
}

/* capture_logs(on [, echo]) */
static int l_capture_logs(lua_State *L)
{
    bool on = lua_toboolean(L, 1);
    log_echo = lua_toboolean(L, 2);
    mqr_log_set_sink(on ? capture_sink : NULL, NULL);
    return 0;
}

/* logs() -> list of captured lines since the last call */
static int l_logs(lua_State *L)
{
    pthread_mutex_lock(&log_lock);
    lua_createtable(L, (int)log_count, 0);
    for (size_t i = 0; i < log_count; i++) {
        lua_pushstring(L, log_lines[i]);
        lua_rawseti(L, -2, (int)i + 1);
        free(log_lines[i]);
    }
    log_count = 0;
    pthread_mutex_unlock(&log_lock);
    return 1;
}

static int l_set_log_level(lua_State *L)
{
    int level = mqr_log_level_parse(luaL_checkstring(L, 1));
    if (level < 0) return luaL_argerror(L, 1, "error, warn, info or debug");
    mqr_log_set_level(level);
    return 0;
}

/* ---- engines ---- */

static l_engine_t *check_engine(lua_State *L)
{
    l_engine_t *le = luaL_checkudata(L, 1, "mqrouter.host.engine");
    if (!le->e) luaL_error(L, "engine is closed");
    return le;
}

static int parse_listen(lua_State *L, const char *spec, char *host, size_t hcap, int *port)
{
    const char *colon = strrchr(spec, ':');
    if (!colon || (size_t)(colon - spec) >= hcap)
        return luaL_error(L, "listen must be \"HOST:PORT\", got '%s'", spec);
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    *port = atoi(colon + 1);
    if (*port <= 0 || *port > 65535) return luaL_error(L, "bad port in '%s'", spec);
    return 0;
}

/* engine{ listen = false | "HOST:PORT", data_dir = "" | path, budget_ms,
 *         watch = bool } */
static int l_engine_new(lua_State *L)
{
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.log_level = mqr__log_level;
    o.listen_port = -1;
    o.data_dir = "";
    char host[256];
    bool fake = false, fake_sinks = false;
    uint64_t start_ms = 0;
    if (lua_istable(L, 1)) {
        lua_getfield(L, 1, "listen");
        if (lua_type(L, -1) == LUA_TSTRING) {
            parse_listen(L, lua_tostring(L, -1), host, sizeof host, &o.listen_port);
            o.listen_host = host;
        }
        lua_getfield(L, 1, "data_dir");
        if (lua_type(L, -1) == LUA_TSTRING) o.data_dir = lua_tostring(L, -1);
        lua_getfield(L, 1, "budget_ms");
        o.handler_budget_ms = (unsigned)luaL_optinteger(L, -1, 0);
        lua_getfield(L, 1, "watch");
        o.watch_script = lua_toboolean(L, -1);
        lua_getfield(L, 1, "fake_sinks");
        fake_sinks = lua_toboolean(L, -1);
        lua_pop(L, 5);
        lua_getfield(L, 1, "clock");
        if (!lua_isnil(L, -1) &&
            !(lua_type(L, -1) == LUA_TSTRING && (strcmp(lua_tostring(L, -1), "fake") == 0 ||
                                                 strcmp(lua_tostring(L, -1), "real") == 0)))
            return luaL_argerror(L, 1, "clock must be \"fake\" or \"real\"");
        fake = lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), "fake") == 0;
        lua_getfield(L, 1, "start_time");
        double start = luaL_optnumber(L, -1, (double)mqr__now_ms() / 1000.0);
        if (!(start >= 0)) return luaL_argerror(L, 1, "start_time must be seconds >= 0");
        start_ms = (uint64_t)(start * 1000.0 + 0.5);
        lua_pop(L, 2);
    }
    l_engine_t *le = lua_newuserdata(L, sizeof *le);
    memset(le, 0, sizeof *le);
    luaL_getmetatable(L, "mqrouter.host.engine");
    lua_setmetatable(L, -2);
    char *err = NULL;
    int rc = mqr_engine_new(&le->e, &o, NULL, &err);
    if (rc < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", mqr_err_name(rc), err ? err : mqr_strerror(rc));
        free(err);
        return 2;
    }
    if (fake || fake_sinks) {
        mqr_script_t *h = mqr__script_host(le->e);
        if (!h) return luaL_error(L, "out of memory");
        if (fake) mqr__script_fake_clock(h, start_ms);
        h->fake_sinks = fake_sinks;
    }
    return 1;
}

/* The script host of an engine with a fake clock; raises otherwise. */
static mqr_script_t *fake_host(lua_State *L, l_engine_t *le)
{
    mqr_script_t *h = mqr__script_of(le->e);
    if (!h || !h->fake_clock)
        luaL_error(L, "this engine has a real clock (create it with clock = \"fake\")");
    return h;
}

/* e:advance(seconds) -> timer calls: moves a fake clock forward, firing
 * the timers that fall due on the way (script_route.c, mqr__script_advance). */
static int l_engine_advance(lua_State *L)
{
    l_engine_t *le = check_engine(L);
    double s = luaL_checknumber(L, 2);
    if (!(s >= 0) || s > 1e9) return luaL_argerror(L, 2, "seconds must be >= 0");
    mqr_script_t *h = fake_host(L, le);
    lua_pushinteger(L, (lua_Integer)mqr__script_advance(h, (uint64_t)(s * 1000.0 + 0.5)));
    return 1;
}

/* e:now() -> the engine's clock in seconds since the epoch (fake or real) */
static int l_engine_now(lua_State *L)
{
    l_engine_t *le = check_engine(L);
    lua_pushnumber(L, (lua_Number)mqr__script_now_ms(mqr__script_of(le->e)) / 1000.0);
    return 1;
}

static int load_result(lua_State *L, int rc, char *err)
{
    if (rc == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushnil(L);
    lua_pushstring(L, err ? err : mqr_strerror(rc));
    lua_pushstring(L, mqr_err_name(rc));
    free(err);
    return 3;
}

static int l_engine_load(lua_State *L)
{
    l_engine_t *le = check_engine(L);
    const char *code = luaL_checkstring(L, 2);
    const char *name = luaL_optstring(L, 3, "rules");
    char *err = NULL;
    int rc = mqr_engine_load_string(le->e, name, code, &err);
    return load_result(L, rc, err);
}

static int l_engine_load_file(lua_State *L)
{
    l_engine_t *le = check_engine(L);
    char *err = NULL;
    int rc = mqr_engine_load_file(le->e, luaL_checkstring(L, 2), &err);
    return load_result(L, rc, err);
}

static int l_engine_reload(lua_State *L)
{
    l_engine_t *le = check_engine(L);
    char *err = NULL;
    int rc = mqr_engine_reload(le->e, &err);
    return load_result(L, rc, err);
}

/* e:publish(topic, payload [, {qos, retain, properties}]) as origin "c" */
static int l_engine_publish(lua_State *L)
{
    l_engine_t *le = check_engine(L);
    mqr_msg_init_t in = {.origin = MQR_ORIGIN_C, .origin_name = "host"};
    mqr_script_t *h = mqr__script_of(le->e);
    if (h && h->fake_clock) in.created_ms = h->clock_ms;
    in.topic = luaL_checklstring(L, 2, &in.topic_len);
    in.payload = luaL_checklstring(L, 3, &in.payload_len);
    uint8_t *props;
    mqr__publish_opts(L, 4, "engine:publish", NULL, &in, &props);
    int rc = mqr__engine_publish_data(le->e, &in);
    free(props);
    if (rc < 0) return mqr__lua_fail(L, rc, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

/* e:step() runs one non-blocking loop iteration; e:run(seconds) runs the
 * loop for that long (timers fire, sockets are served). */
static int l_engine_step(lua_State *L)
{
    l_engine_t *le = check_engine(L);
    lua_pushboolean(L, uv_run(mqr_engine_loop(le->e), UV_RUN_NOWAIT) != 0);
    return 1;
}

static void wake(uv_timer_t *t)
{
    (void)t;
}

static int l_engine_run(lua_State *L)
{
    l_engine_t *le = check_engine(L);
    double s = luaL_checknumber(L, 2);
    uv_loop_t *loop = mqr_engine_loop(le->e);
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_update_time(loop);
    uint64_t end = uv_now(loop) + (uint64_t)(s * 1000.0);
    while (uv_now(loop) < end) {
        uv_timer_start(&t, wake, end - uv_now(loop), 0);
        uv_run(loop, UV_RUN_ONCE);
        uv_update_time(loop);
    }
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return 0;
}

static int l_engine_stats(lua_State *L)
{
    l_engine_t *le = check_engine(L);
    mqr_script_t *h = mqr__script_of(le->e);
    mqr__lstats_push(L, le->e, h ? h->cur : NULL);
    return 1;
}

/* e:queue_stats(name) -> the stats of the engine's queue name (as
 * q:stats() shows them to rules) | nil, err, name */
static int l_engine_queue_stats(lua_State *L)
{
    l_engine_t *le = check_engine(L);
    const char *name = luaL_checkstring(L, 2);
    mqr_queue_t *q;
    int rc = mqr__engine_queues(le->e) ? mqr__queue_find(le->e, name, &q) : MQR_ENOTINIT;
    if (rc < 0) return mqr__lua_fail(L, rc, name);
    return mqr__lqueue_push_stats(L, q);
}

/* e:session(name) -> {state, ready, buffered, inflight, subscriptions,
 * connect_failures, messages_sent, messages_received} | nil, err, name:
 * what the public C API says of an upstream session (tests read it). */
static int l_engine_session(lua_State *L)
{
    l_engine_t *le = check_engine(L);
    const char *name = luaL_checkstring(L, 2);
    mqr_session_t *s = mqr_session_find(le->e, name);
    if (!s) return mqr__lua_fail(L, MQR_ENOENT, name);
    mqr_session_info_t si;
    mqr_session_info_init(&si);
    int rc = mqr_session_status(s, &si);
    if (rc < 0) return mqr__lua_fail(L, rc, name);
    lua_createtable(L, 0, 8); /* [-0, +1] */
    lua_pushstring(L, mqr_session_state_name(si.state));
    lua_setfield(L, -2, "state");
    lua_pushboolean(L, si.ready);
    lua_setfield(L, -2, "ready");
    const struct {
        const char *k;
        double v;
    } nums[] = {{"buffered", (double)si.buffered},
                {"inflight", (double)si.inflight},
                {"subscriptions", (double)si.subscriptions},
                {"connect_failures", (double)si.connect_failures},
                {"messages_sent", (double)si.messages_sent},
                {"messages_received", (double)si.messages_received}};
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        lua_pushnumber(L, nums[i].v);
        lua_setfield(L, -2, nums[i].k);
    }
    return 1;
}

/* e:run_until(pred, seconds) runs the loop until pred() is true (checked
 * after each loop turn, at least every 10 ms) or seconds passed; returns
 * pred()'s last value. */
static int l_engine_run_until(lua_State *L)
{
    l_engine_t *le = check_engine(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    double s = luaL_checknumber(L, 3);
    uv_loop_t *loop = mqr_engine_loop(le->e);
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_update_time(loop);
    uint64_t end = uv_now(loop) + (uint64_t)(s * 1000.0);
    bool ok = false;
    int rc = 0;
    for (;;) {
        lua_pushvalue(L, 2);
        if ((rc = lua_pcall(L, 0, 1, 0)) != 0) break; /* the error stays on the stack */
        ok = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (ok || uv_now(loop) >= end) break;
        uint64_t left = end - uv_now(loop);
        uv_timer_start(&t, wake, left < 10 ? left : 10, 0);
        uv_run(loop, UV_RUN_ONCE);
        uv_update_time(loop);
    }
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    if (rc != 0) return lua_error(L);
    lua_pushboolean(L, ok);
    return 1;
}

/* ---- captures ---- */

static void capture_msg(void *arg, mqr_msg_t *msg)
{
    l_capture_t *c = arg;
    if (c->count == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        mqr_msg_t **bigger = realloc(c->msgs, cap * sizeof *bigger);
        if (!bigger) return;
        c->msgs = bigger;
        c->cap = cap;
    }
    mqr_msg_ref(msg);
    c->msgs[c->count++] = msg;
}

static void capture_clear(l_capture_t *c)
{
    for (size_t i = 0; i < c->count; i++)
        mqr_msg_unref(c->msgs[i]);
    c->count = 0;
}

static void capture_stop(l_capture_t *c)
{
    if (!c->owner) return;
    mqr_unsubscribe(c->owner->e, c->sub);
    for (l_capture_t **p = &c->owner->captures; *p; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            break;
        }
    }
    c->owner = NULL;
}

/* e:capture(filter) -> capture */
static int l_engine_capture(lua_State *L)
{
    l_engine_t *le = check_engine(L);
    const char *filter = luaL_checkstring(L, 2);
    l_capture_t *c = lua_newuserdata(L, sizeof *c);
    memset(c, 0, sizeof *c);
    luaL_getmetatable(L, "mqrouter.host.capture");
    lua_setmetatable(L, -2);
    int rc = mqr_subscribe(le->e, filter, capture_msg, c, &c->sub);
    if (rc < 0) return mqr__lua_fail(L, rc, filter);
    c->owner = le;
    c->next = le->captures;
    le->captures = c;
    return 1;
}

static l_capture_t *check_capture(lua_State *L)
{
    return luaL_checkudata(L, 1, "mqrouter.host.capture");
}

static int l_capture_messages(lua_State *L)
{
    l_capture_t *c = check_capture(L);
    lua_createtable(L, (int)c->count, 0);
    for (size_t i = 0; i < c->count; i++) {
        mqr_msg_t *m = c->msgs[i];
        lua_createtable(L, 0, 7);
        lua_pushlstring(L, m->topic, m->topic_len);
        lua_setfield(L, -2, "topic");
        lua_pushlstring(L, (const char *)m->payload, m->payload_len);
        lua_setfield(L, -2, "payload");
        lua_pushinteger(L, m->qos);
        lua_setfield(L, -2, "qos");
        lua_pushboolean(L, m->retain);
        lua_setfield(L, -2, "retain");
        lua_pushstring(L, mqr_msg_origin_kind(m));
        lua_setfield(L, -2, "origin");
        lua_pushstring(L, m->origin_name);
        lua_setfield(L, -2, "source");
        mqr__lprops_push(L, m->props, m->props_len);
        lua_setfield(L, -2, "properties");
        lua_pushnumber(L, (lua_Number)m->created_ms / 1000.0);
        lua_setfield(L, -2, "time");
        lua_rawseti(L, -2, (int)i + 1);
    }
    return 1;
}

static int l_capture_count(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)check_capture(L)->count);
    return 1;
}

static int l_capture_clear(lua_State *L)
{
    capture_clear(check_capture(L));
    return 0;
}

static int l_capture_stop(lua_State *L)
{
    capture_stop(check_capture(L));
    return 0;
}

static int l_capture_gc(lua_State *L)
{
    l_capture_t *c = check_capture(L);
    capture_stop(c);
    capture_clear(c);
    free(c->msgs);
    c->msgs = NULL;
    return 0;
}

static int l_engine_close(lua_State *L)
{
    l_engine_t *le = luaL_checkudata(L, 1, "mqrouter.host.engine");
    if (!le->e) return 0;
    while (le->captures)
        capture_stop(le->captures);
    mqr_engine_free(le->e);
    le->e = NULL;
    return 0;
}

/* Keeps this module mapped until the process exits: lua_close() would
 * otherwise dlclose it while the log sink and captured lines it owns are
 * still installed and referenced (leak checkers then see them as lost). */
static void stay_loaded(void)
{
    Dl_info info;
    if (dladdr((void *)&stay_loaded, &info) && info.dli_fname)
        dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE | RTLD_NOLOAD);
}

int luaopen_mqrouter(lua_State *L);
int luaopen_mqrouter(lua_State *L)
{
    stay_loaded();
    static const luaL_Reg engine_methods[] = {
        {"load", l_engine_load},
        {"load_file", l_engine_load_file},
        {"reload", l_engine_reload},
        {"publish", l_engine_publish},
        {"step", l_engine_step},
        {"run", l_engine_run},
        {"stats", l_engine_stats},
        {"capture", l_engine_capture},
        {"queue_stats", l_engine_queue_stats},
        {"session", l_engine_session},
        {"run_until", l_engine_run_until},
        {"advance", l_engine_advance},
        {"now", l_engine_now},
        {"close", l_engine_close},
        {NULL, NULL},
    };
    static const luaL_Reg capture_methods[] = {
        {"messages", l_capture_messages},
        {"count", l_capture_count},
        {"clear", l_capture_clear},
        {"stop", l_capture_stop},
        {NULL, NULL},
    };
    mqr__lua_class(L, "mqrouter.host.engine", engine_methods, l_engine_close, NULL);
    mqr__lua_class(L, "mqrouter.host.capture", capture_methods, l_capture_gc, NULL);
    lua_newtable(L);
    lua_pushcfunction(L, l_engine_new);
    lua_setfield(L, -2, "engine");
    lua_pushcfunction(L, l_capture_logs);
    lua_setfield(L, -2, "capture_logs");
    lua_pushcfunction(L, l_logs);
    lua_setfield(L, -2, "logs");
    lua_pushcfunction(L, l_set_log_level);
    lua_setfield(L, -2, "set_log_level");
    lua_pushstring(L, mqr_version());
    lua_setfield(L, -2, "version");
    return 1;
}
