/*
 * script.c — owns the rules' Lua states: creating them with an allowlisted
 * environment, loading a script, the one protected-call helper every call
 * into Lua goes through, and reload as a transaction.
 *
 * A reload never touches the serving state until the new script has run to
 * its end without error: only then are the old routes and timers swapped for
 * the new ones, in one stretch of loop-thread code. Must not: run Lua from
 * any thread but the loop's, or load bytecode.
 */
#include "script.h"

#include "budget.h"
#include "mqtt/codec.h"
#include "queue.h"
#include "topic.h"

#include <errno.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>

#ifndef MQR_STDLIB_DIR
#define MQR_STDLIB_DIR "lua/stdlib"
#endif

/* Where `require` finds the stdlib: $MQROUTER_LUA_DIR, else the installed
 * location compiled in, else (a build tree never installed) the source
 * tree's (CMakeLists.txt, "embedding"). */
const char *mqr__script_stdlib_dir(void)
{
    const char *env = getenv("MQROUTER_LUA_DIR");
    if (env && *env) return env;
#ifdef MQR_STDLIB_BUILD_DIR
    struct stat sb;
    if (stat(MQR_STDLIB_DIR, &sb) != 0 || !S_ISDIR(sb.st_mode)) return MQR_STDLIB_BUILD_DIR;
#endif
    return MQR_STDLIB_DIR;
}

static void state_close(l_state_t *st);

/* The registry's list of the files st's require loaded (the sandbox fills it). */
#define MODULES_KEY "mqrouter.modules"

/* ---- the sandbox -------------------------------------------------------- */

/* Builds the environment scripts run in: an allowlist of the standard
 * library, a require() limited to text Lua files under the stdlib and the
 * script's own directory, and strict globals (reading an undeclared one is
 * an error). Receives stdlib dir, script dir, the rules API table and a list
 * that gets the path of every file require loads; returns the env maker. */
static const char sandbox_lua[] =
    "local stdlib_dir, script_dir, mq, files = ...\n"
    "local G = _G\n"
    "local allowed = { 'assert', 'error', 'ipairs', 'next', 'pairs', 'pcall', 'select',\n"
    "  'tonumber', 'tostring', 'type', 'unpack', 'xpcall', 'setmetatable', 'getmetatable',\n"
    "  'rawequal', 'rawget', 'rawset', '_VERSION', 'string', 'table', 'math', 'coroutine', 'bit' "
    "}\n"
    "local safe_os = { time = os.time, clock = os.clock, date = os.date,\n"
    "  difftime = os.difftime, getenv = os.getenv }\n"
    "local c_modules = { cjson = true, ['cjson.safe'] = true, zlib = true }\n"
    "local loaded, loading = { mqrouter = mq }, {}\n"
    "local new_env\n"
    "local function find(name)\n"
    "  local rel = name:gsub('%.', '/')\n"
    "  for _, dir in ipairs({ script_dir, stdlib_dir }) do\n"
    "    for _, pat in ipairs({ '/?.lua', '/?/init.lua' }) do\n"
    "      local path = dir .. pat:gsub('%?', rel)\n"
    "      local f = io.open(path, 'rb')\n"
    "      if f then local src = f:read('*a'); f:close(); return path, src end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local function sandbox_require(name)\n"
    "  if type(name) ~= 'string' then error('bad argument #1 to require (string expected)', 2) "
    "end\n"
    "  local mod = loaded[name]\n"
    "  if mod ~= nil then return mod end\n"
    "  if c_modules[name] then mod = G.require(name); loaded[name] = mod; return mod end\n"
    "  if loading[name] then error(\"loop requiring module '\" .. name .. \"'\", 2) end\n"
    "  local path, src = find(name)\n"
    "  if not path then\n"
    "    -- watched too: creating it is the change that mends the load\n"
    "    files[#files + 1] = script_dir .. '/' .. name:gsub('%.', '/') .. '.lua'\n"
    "    error(\"module '\" .. name .. \"' not found in \" .. script_dir .. ' or ' .. stdlib_dir, "
    "2)\n"
    "  end\n"
    "  files[#files + 1] = path -- watched for changes like the script (script.c)\n"
    "  local chunk, err = load(src, '@' .. path, 't', new_env())\n"
    "  if not chunk then error(err, 0) end\n"
    "  loading[name] = true\n"
    "  local ok, res = pcall(chunk, name)\n"
    "  loading[name] = nil\n"
    "  if not ok then error(res, 0) end\n"
    "  if res == nil then res = true end\n"
    "  loaded[name] = res\n"
    "  return res\n"
    "end\n"
    "local strict = { __index = function(_, k)\n"
    "  error(\"undefined global '\" .. tostring(k) .. \"'\", 2) end }\n"
    "new_env = function()\n"
    "  local env = {}\n"
    "  for _, k in ipairs(allowed) do env[k] = G[k] end\n"
    "  env.os = safe_os\n"
    "  env.require = sandbox_require\n"
    "  env.print = function(...)\n"
    "    local t = { ... }\n"
    "    for i = 1, select('#', ...) do t[i] = tostring(t[i]) end\n"
    "    mq.log.info(table.concat(t, '\\t'))\n"
    "  end\n"
    "  env._G = env\n"
    "  return setmetatable(env, strict)\n"
    "end\n"
    "return new_env\n";

void mqr__lua_traceback_line(lua_State *L, lua_State *L1, const char *msg, int level)
{
    size_t mlen = msg ? strlen(msg) : 0;
    luaL_traceback(L, L1, msg, level); /* msg "\nstack traceback:" ("\n\t" frame)* */
    size_t n;
    const char *t = lua_tolstring(L, -1, &n);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    /* the message, its own line breaks turned into spaces */
    for (size_t i = 0; i < mlen && i < n; i++)
        luaL_addchar(&b, msg[i] == '\n' || msg[i] == '\r' ? ' ' : msg[i]);
    const char *frames = mlen <= n ? t + mlen : t;
    const char *head = strstr(frames, "stack traceback:");
    if (head) {
        luaL_addstring(&b, MQR_TRACEBACK_SEP);
        bool first = true;
        for (const char *p = head + strlen("stack traceback:"); *p;) {
            while (*p == '\n' || *p == '\t' || *p == ' ')
                p++;
            if (!*p) break;
            const char *end = strchr(p, '\n');
            size_t len = end ? (size_t)(end - p) : strlen(p);
            if (!first) luaL_addstring(&b, " <- ");
            luaL_addlstring(&b, p, len);
            first = false;
            p += len;
        }
    }
    luaL_pushresult(&b);
    lua_remove(L, -2); /* [-0, +1] */
}

/* The message handler of every protected call: the error and where it came
 * from, on one line (a log entry is one line). */
static int l_traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    mqr__lua_traceback_line(L, L, msg, 1);
    return 1;
}

/* traceback(co | msg [, msg]) for the Lua halves (lua/host/upstream.lua): debug.traceback
 * on one line. */
int mqr__lua_traceback_fn(lua_State *L)
{
    lua_State *L1 = lua_type(L, 1) == LUA_TTHREAD ? lua_tothread(L, 1) : L;
    int arg = L1 == L ? 1 : 2;
    const char *msg = lua_tostring(L, arg);
    mqr__lua_traceback_line(L, L1, msg ? msg : "", L1 == L ? 1 : 0);
    return 1;
}

static char *dir_of(const char *path)
{
    const char *slash = path ? strrchr(path, '/') : NULL;
    if (!slash) return strdup(".");
    size_t n = (size_t)(slash - path);
    char *d = malloc(n + 2);
    if (!d) return NULL;
    memcpy(d, path, n ? n : 1);
    d[n ? n : 1] = '\0';
    return d;
}

static l_state_t *state_new(mqr_script_t *h, const char *chunkname, const char *path, char **errmsg)
{
    l_state_t *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    st->host = h;
    st->chunkname = strdup(chunkname);
    st->L = luaL_newstate();
    if (!st->L || !st->chunkname) {
        if (errmsg) *errmsg = strdup("cannot create a Lua state: out of memory");
        state_close(st);
        return NULL;
    }
    lua_State *L = st->L;
    luaL_openlibs(L);
    lua_pushlightuserdata(L, (void *)&mqr__state_of);
    lua_pushlightuserdata(L, st);
    lua_rawset(L, LUA_REGISTRYINDEX);

    lua_pushcfunction(L, l_traceback);
    st->traceback_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    mqr__lmsg_register(L);
    mqr__lupstream_register(L);
    mqr__llisten_register(L);
    mqr__lqueue_register(L);
    mqr__lsub_register(L);
    mqr__liter_register(L);

    /* env maker = sandbox(stdlib_dir, script_dir, rules_api) */
    if (luaL_loadbuffer(L, sandbox_lua, sizeof sandbox_lua - 1, "=sandbox") != 0) {
        if (errmsg) *errmsg = strdup(lua_tostring(L, -1));
        state_close(st);
        return NULL;
    }
    lua_pushstring(L, mqr__script_stdlib_dir());
    char *sdir = dir_of(path);
    lua_pushstring(L, sdir ? sdir : ".");
    free(sdir);
    mqr__rules_open(L);
    mqr__lua_name_table(L, -1, "mq", 1); /* the C functions, before Lua wraps any */
    mqr__lauth_open(L);
    mqr__lupstream_open(L);
    mqr__lkv_open(L);
    mqr__lregistry_open(L);
    mqr__lua_name_table(L, -1, "mq", 1);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, "mqrouter.api");
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, MODULES_KEY);
    if (lua_pcall(L, 4, 1, 0) != 0) {
        if (errmsg) *errmsg = strdup(lua_tostring(L, -1));
        state_close(st);
        return NULL;
    }
    lua_call(L, 0, 1); /* the env of the main script */
    st->env_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return st;
}

l_state_t *mqr__state_of(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&mqr__state_of);
    lua_rawget(L, LUA_REGISTRYINDEX);
    l_state_t *st = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return st;
}

static void timer_closed(uv_handle_t *h)
{
    l_timer_t *t = h->data;
    l_state_t *st = t->st;
    free(t->name);
    free(t);
    if (--st->open_timers == 0 && st->closing) {
        free(st->chunkname);
        free(st);
    }
}

/* Stops everything a state declared and frees it (the struct itself after
 * its timer handles have closed). */
static void state_close(l_state_t *st)
{
    if (!st) return;
    mqr_engine_t *e = st->host->e;
    for (l_route_t *r = st->routes, *next; r; r = next) {
        next = r->next;
        if (r->entry) mqr__router_remove(&e->router, r->entry);
        if (r->entry && r->upstream && r->upstream->u)
            mqr__upstream_unsubscribe(r->upstream->u, r->filter);
        if (r->queue) mqr__queue_unref(r->queue);
        free(r->filter);
        free(r->name);
        free(r->dead_letter);
        free(r);
    }
    st->routes = NULL;
    for (size_t i = 0; i < st->n_modules; i++)
        free(st->modules[i]);
    free(st->modules);
    st->modules = NULL;
    st->n_modules = 0;
    mqr__lqueue_state_close(st); /* its consumers call into st->L */
    mqr__lsub_state_close(st);
    mqr__liter_state_close(st);
    l_timer_t *timers = st->timers;
    st->timers = NULL;
    if (st->L) lua_close(st->L);
    st->L = NULL;
    st->closing = true;
    for (l_timer_t *t = timers, *next; t; t = next) {
        next = t->next;
        t->stopped = true;
        uv_close((uv_handle_t *)&t->handle, timer_closed);
    }
    if (st->open_timers == 0) {
        free(st->chunkname);
        free(st);
    }
}

/* ---- protected calls ------------------------------------------------------ */

int mqr__script_call(l_state_t *st, int nargs, const char *what, uint64_t *errors,
                     uint64_t *budget_errors)
{
    return mqr__script_call_results(st, nargs, 0, what, errors, budget_errors);
}

int mqr__script_call_results(l_state_t *st, int nargs, int nresults, const char *what,
                             uint64_t *errors, uint64_t *budget_errors)
{
    lua_State *L = st->L;
    mqr_script_t *h = st->host;
    int base = lua_gettop(L) - nargs;
    lua_rawgeti(L, LUA_REGISTRYINDEX, st->traceback_ref);
    lua_insert(L, base);
    h->call_depth++;
    if (h->budget) mqr__budget_enter(h->budget, L);
    int rc = lua_pcall(L, nargs, nresults, base);
    bool tripped = h->budget ? mqr__budget_leave(h->budget) : false;
    h->call_depth--;
    if (rc == 0) {
        lua_remove(L, base);
        return 0;
    }
    const char *err = lua_tostring(L, -1);
    if (!err) err = "(no error message)";
    /* last_error: the message without its traceback */
    const char *tb = strstr(err, MQR_TRACEBACK_SEP);
    int msg_len = tb ? (int)(tb - err) : (int)strlen(err);
    snprintf(h->last_error, sizeof h->last_error, "%.*s", msg_len, err);
    if (errors) (*errors)++;
    h->handler_errors++;
    if (tripped) {
        if (budget_errors) (*budget_errors)++;
        h->budget_errors++;
        MQR_LOG_E("rules", "%s stopped: exceeded its time budget of %u ms (%s)", what,
                  h->e->handler_budget_ms, err);
    } else {
        MQR_LOG_E("rules", "%s failed: %s", what, err);
    }
    lua_pop(L, 2); /* error, traceback function */
    return tripped ? MQR_EBUDGET : MQR_ESCRIPT;
}

/* ---- activation --------------------------------------------------------- */

static int route_deliver(mqr_subscriber_t *self, mqr_msg_t *msg, const mqr_trie_entry_t *entry);

/* Ends a timer before its state does: after a one-shot fired, or stop().
 * The handle's memory goes in timer_closed. */
void mqr__timer_release(l_timer_t *t)
{
    l_state_t *st = t->st;
    if (t->stopped) return;
    t->stopped = true;
    uv_timer_stop(&t->handle);
    for (l_timer_t **p = &st->timers; *p; p = &(*p)->next) {
        if (*p == t) {
            *p = t->next;
            break;
        }
    }
    if (t->ud) *t->ud = NULL;
    t->ud = NULL;
    if (st->L) luaL_unref(st->L, LUA_REGISTRYINDEX, t->fn_ref);
    uv_close((uv_handle_t *)&t->handle, timer_closed);
}

static void timer_fire(uv_timer_t *handle)
{
    l_timer_t *t = handle->data;
    l_state_t *st = t->st;
    if (t->stopped || !st->active) return;
    t->calls++;
    lua_rawgeti(st->L, LUA_REGISTRYINDEX, t->fn_ref);
    if (t->repeat_ms == 0) mqr__timer_release(t); /* the function stays on the stack */
    mqr__script_call(st, 0, t->name, &t->errors, NULL);
}

static void timer_start(l_timer_t *t)
{
    mqr_script_t *h = t->st->host;
    if (h->fake_clock)
        t->fake_due = h->clock_ms + t->due_ms; /* mqr__script_advance() fires it */
    else
        uv_timer_start(&t->handle, timer_fire, t->due_ms, t->repeat_ms);
    t->started = true;
}

/* ---- the fake clock ------------------------------------------------------- */

/* Tests of rules need time they control: "above 30 for a minute" should not
 * take a minute. The fake clock replaces, for one engine, the time scripts
 * see (mq.now, msg.time of what Lua and the host publish) and the loop's
 * timers under mq.every/mq.after with a counter that only the host moves.
 * Queues follow it too (ack timeouts, nack backoff, TTL, transaction
 * timeouts: core/queue reads e->clock_fn). Sockets, upstream sessions and
 * the handler budget keep real time. */
static uint64_t fake_now(void *arg)
{
    return ((const mqr_script_t *)arg)->clock_ms;
}

void mqr__script_fake_clock(mqr_script_t *h, uint64_t start_ms)
{
    h->fake_clock = true;
    h->clock_ms = start_ms;
    h->e->clock_fn = fake_now;
    h->e->clock_arg = h;
}

uint64_t mqr__script_now_ms(const mqr_script_t *h)
{
    return h && h->fake_clock ? h->clock_ms : mqr__now_ms();
}

/* The next timer of the serving state due at or before until, or NULL. */
static l_timer_t *next_due(mqr_script_t *h, uint64_t until)
{
    l_state_t *st = h->cur;
    l_timer_t *best = NULL;
    if (!st || !st->active) return NULL;
    for (l_timer_t *t = st->timers; t; t = t->next) {
        if (t->stopped || !t->started || t->fake_due > until) continue;
        if (!best || t->fake_due < best->fake_due ||
            (t->fake_due == best->fake_due && t->seq < best->seq))
            best = t;
    }
    return best;
}

unsigned mqr__script_advance(mqr_script_t *h, uint64_t ms)
{
    uint64_t until = h->clock_ms + ms;
    unsigned calls = 0;
    uv_loop_t *loop = h->e->loop;
    l_timer_t *t;
    /* bounded: a timer of 0 s that re-arms itself forever stops here */
    for (; calls < 1000000; calls++) {
        t = next_due(h, until);
        /* queue deadlines (redeliveries, expiries, tx timeouts) interleave
         * with script timers in time order; a timer wins a tie */
        uint64_t q_at = mqr__queues_next_due(h->e);
        if (q_at <= until && (!t || q_at < t->fake_due)) {
            h->clock_ms = q_at > h->clock_ms ? q_at : h->clock_ms;
            mqr__queues_clock_moved(h->e);
        } else if (t) {
            h->clock_ms = t->fake_due;
            if (t->repeat_ms) t->fake_due += t->repeat_ms;
            timer_fire(&t->handle); /* may release t (one-shot, stop) */
        } else {
            break;
        }
        uv_run(loop, UV_RUN_NOWAIT);
    }
    h->clock_ms = until;
    mqr__queues_clock_moved(h->e);
    uv_run(loop, UV_RUN_NOWAIT);
    return calls;
}

/* Swaps the serving rules for st's. Returns < 0 (and changes nothing) when
 * a subscription cannot be added. */
static int state_activate(mqr_script_t *h, l_state_t *st, char **errmsg)
{
    mqr_engine_t *e = h->e;
    for (l_route_t *r = st->routes; r; r = r->next) {
        if (r->stopped) continue;
        mqr_sub_opts_t opts = {.qos = (uint8_t)r->qos};
        r->entry = mqr__router_add(&e->router, r->filter, strlen(r->filter), &r->base, &opts);
        if (!r->entry) {
            for (l_route_t *q = st->routes; q != r; q = q->next) {
                if (q->entry) mqr__router_remove(&e->router, q->entry);
                q->entry = NULL;
            }
            if (errmsg) *errmsg = strdup("out of memory adding routes");
            return MQR_ENOMEM;
        }
    }
    /* New session subscriptions first, so a filter both scripts want is
     * never unsubscribed upstream in between. */
    for (l_route_t *r = st->routes; r; r = r->next)
        if (r->entry && r->upstream && r->upstream->u)
            mqr__upstream_subscribe(r->upstream->u, r->filter, r->qos);

    l_state_t *old = h->cur;
    h->cur = st;
    st->active = true;
    /* What waits in the old state's buffers goes to the new one's before
     * the old state closes, and before any Lua of the new state runs (the
     * events flushed below), so it comes ahead of anything newer. */
    mqr__lsub_takeover(st, old);
    mqr__liter_takeover(st, old);
    if (old) {
        old->active = false;
        state_close(old);
    }
    mqr__lupstream_activate(h, st);
    mqr__lauth_activate(h, st); /* the new state's hooks, or none */
    mqr__llisten_activate(h, st);
    mqr__lqueue_activate(h, st);
    for (l_timer_t *t = st->timers; t; t = t->next) {
        if (t->stopped) continue;
        timer_start(t);
    }
    mqr__liter_wake(st); /* coroutines waiting on iterators that were handed messages */
    return 0;
}

/* ---- loading -------------------------------------------------------------- */

static uint64_t digest(const char *s, size_t n)
{
    uint64_t x = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        x ^= (unsigned char)s[i];
        x *= 1099511628211ull;
    }
    return x ^ n;
}

/* st->modules: the files st's require loaded (the sandbox's list). */
static void collect_modules(l_state_t *st)
{
    lua_State *L = st->L;
    lua_getfield(L, LUA_REGISTRYINDEX, MODULES_KEY); /* [-0, +1] */
    size_t n = lua_istable(L, -1) ? lua_objlen(L, -1) : 0;
    st->modules = n ? calloc(n, sizeof *st->modules) : NULL;
    for (size_t i = 0; st->modules && i < n; i++) {
        lua_rawgeti(L, -1, (int)i + 1);
        const char *s = lua_tostring(L, -1);
        char *copy = s ? strdup(s) : NULL;
        if (copy) st->modules[st->n_modules++] = copy;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static void watch_modules(mqr_script_t *h, const l_state_t *st);

static int load_code(mqr_script_t *h, const char *chunkname, const char *path, const char *code,
                     size_t len, char **errmsg)
{
    if (h->loading) {
        if (errmsg) *errmsg = strdup("a reload is already in progress");
        return MQR_ESCRIPT;
    }
    l_state_t *st = state_new(h, chunkname, path, errmsg);
    if (!st) return MQR_ENOMEM;
    lua_State *L = st->L;
    h->loading = st;
    int rc = mqr__lcfunc_install(h, st, errmsg); /* the host's C functions (mqrouter_lua.h) */
    if (rc < 0) goto fail;
    if (luaL_loadbufferx(L, code, len, chunkname, "t") != 0) {
        if (errmsg) *errmsg = strdup(lua_tostring(L, -1));
        rc = MQR_ESCRIPT;
        goto fail;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, st->env_ref);
    lua_setfenv(L, -2);
    /* run the top level like a handler: protected, traced, within budget */
    lua_rawgeti(L, LUA_REGISTRYINDEX, st->traceback_ref);
    lua_insert(L, -2);
    h->call_depth++;
    if (h->budget) mqr__budget_enter(h->budget, L);
    int prc = lua_pcall(L, 0, 0, -2);
    bool tripped = h->budget ? mqr__budget_leave(h->budget) : false;
    h->call_depth--;
    collect_modules(st);
    watch_modules(h, st); /* a failed load's too: fixing one of them is a change */
    if (prc != 0) {
        const char *err = lua_tostring(L, -1);
        if (errmsg) {
            if (tripped) {
                char buf[256];
                snprintf(buf, sizeof buf,
                         "script exceeded its time budget of %u ms while loading: ",
                         h->e->handler_budget_ms);
                size_t n = strlen(buf) + strlen(err ? err : "") + 1;
                *errmsg = malloc(n);
                if (*errmsg) snprintf(*errmsg, n, "%s%s", buf, err ? err : "");
            } else {
                *errmsg = strdup(err ? err : "error loading script");
            }
        }
        rc = tripped ? MQR_EBUDGET : MQR_ESCRIPT;
        goto fail;
    }
    lua_settop(L, 0);
    h->loading = NULL;
    rc = state_activate(h, st, errmsg);
    if (rc < 0) {
        h->loading = st;
        goto fail;
    }
    return 0;
fail:
    h->loading = NULL;
    mqr__lupstream_abandon(h, st);
    mqr__llisten_abandon(h, st);
    mqr__lqueue_abandon(h, st);
    state_close(st);
    return rc;
}

static int read_file(const char *path, char **out, size_t *len, char **errmsg)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errmsg) {
            char buf[512];
            snprintf(buf, sizeof buf, "cannot open %s: %s", path, strerror(errno));
            *errmsg = strdup(buf);
        }
        return MQR_ENOENT;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        char *bigger = realloc(buf, cap * 2);
        if (!bigger) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = bigger;
        cap *= 2;
    }
    fclose(f);
    if (!buf) return MQR_ENOMEM;
    *out = buf;
    *len = n;
    return 0;
}

/* ---- file watching -------------------------------------------------------- */

/* A watched directory: saving often replaces a file (rename), so the
 * directory is watched, not the file. */
struct l_watch {
    uv_fs_event_t ev;
    struct l_watch *next;
    mqr_script_t *h;
    char *dir;
};

static int reload_file(mqr_script_t *h, bool only_if_changed, char **errmsg);

static void on_debounce(uv_timer_t *t)
{
    mqr_script_t *h = t->data;
    char *err = NULL;
    int rc = reload_file(h, true, &err);
    if (rc < 0) MQR_LOG_E("rules", "reload of %s failed, old rules keep running: %s", h->path, err);
    free(err);
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* "dir/name": how watch_files spells a file. NULL when out of memory. */
static char *join_path(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static bool watched(const mqr_script_t *h, const char *file)
{
    for (size_t i = 0; i < h->n_watch_files; i++)
        if (strcmp(h->watch_files[i], file) == 0) return true;
    return false;
}

static void on_fs_event(uv_fs_event_t *ev, const char *filename, int events, int status)
{
    (void)events;
    struct l_watch *w = ev->data;
    mqr_script_t *h = w->h;
    if (status < 0 || !h->path) return;
    if (filename) {
        char *file = join_path(w->dir, filename);
        bool ours = file && watched(h, file);
        free(file);
        if (!ours) return;
    }
    /* editors write in several steps: reload once things settle */
    uv_timer_start(&h->debounce, on_debounce, 100, 0);
}

static void watch_closed(uv_handle_t *hd)
{
    struct l_watch *w = hd->data;
    free(w->dir);
    free(w);
}

/* Adds path to the files watched, and a watch on its directory unless one
 * is there already. */
static void watch_path(mqr_script_t *h, const char *path)
{
    char *dir = dir_of(path);
    char *file = dir ? join_path(dir, base_name(path)) : NULL;
    if (!file || watched(h, file)) {
        free(dir);
        free(file);
        return;
    }
    char **files = realloc(h->watch_files, (h->n_watch_files + 1) * sizeof *files);
    if (!files) {
        free(dir);
        free(file);
        return;
    }
    h->watch_files = files;
    files[h->n_watch_files++] = file;
    for (struct l_watch *w = h->watches; w; w = w->next) {
        if (strcmp(w->dir, dir) == 0) {
            free(dir);
            return;
        }
    }
    struct l_watch *w = calloc(1, sizeof *w);
    if (!w) {
        free(dir);
        return;
    }
    w->h = h;
    w->dir = dir;
    uv_fs_event_init(h->e->loop, &w->ev);
    w->ev.data = w;
    int rc = uv_fs_event_start(&w->ev, on_fs_event, dir, 0);
    if (rc < 0) {
        MQR_LOG_W("rules", "cannot watch %s for changes: %s", dir, mqr_strerror(rc));
        uv_close((uv_handle_t *)&w->ev, watch_closed);
        return;
    }
    uv_unref((uv_handle_t *)&w->ev);
    w->next = h->watches;
    h->watches = w;
}

static void watch_modules(mqr_script_t *h, const l_state_t *st)
{
    if (!h->watching) return;
    for (size_t i = 0; i < st->n_modules; i++)
        watch_path(h, st->modules[i]);
}

static void start_watch(mqr_script_t *h)
{
    mqr_engine_t *e = h->e;
    if (!e->watch_script || !h->path) return;
    if (!h->debounce_init) {
        uv_timer_init(e->loop, &h->debounce);
        h->debounce.data = h;
        uv_unref((uv_handle_t *)&h->debounce);
        h->debounce_init = true;
    }
    h->watching = true;
    watch_path(h, h->path);
    if (h->cur) watch_modules(h, h->cur);
}

static void stop_watch(mqr_script_t *h)
{
    for (struct l_watch *w = h->watches, *next; w; w = next) {
        next = w->next;
        uv_close((uv_handle_t *)&w->ev, watch_closed);
    }
    h->watches = NULL;
    h->watching = false;
}

/* What a reload depends on: the script's text and that of every module the
 * running rules loaded (a module that cannot be read counts as changed). */
static uint64_t files_digest(const char *code, size_t len, const l_state_t *st)
{
    uint64_t d = digest(code, len);
    for (size_t i = 0; st && i < st->n_modules; i++) {
        char *text;
        size_t n;
        if (read_file(st->modules[i], &text, &n, NULL) == 0) {
            d = (d ^ digest(text, n)) * 1099511628211ull;
            free(text);
        } else {
            d = (d ^ 0x9e3779b97f4a7c15ull) * 1099511628211ull;
        }
    }
    return d;
}

/* "12:00:03 UTC" of a time in ms since the epoch. */
static void clock_text(uint64_t ms, char *buf, size_t cap)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%H:%M:%S UTC", &tm);
}

/* A reload failed: keep why (without the traceback) and when. */
static void note_reload_failure(mqr_script_t *h, const char *err)
{
    const char *msg = err ? err : "reload failed";
    const char *tb = strstr(msg, MQR_TRACEBACK_SEP);
    int n = tb ? (int)(tb - msg) : (int)strlen(msg);
    snprintf(h->last_reload_error, sizeof h->last_reload_error, "%.*s", n, msg);
    h->last_reload_error_at = mqr__script_now_ms(h);
    h->reload_failing = true;
}

static int reload_file(mqr_script_t *h, bool only_if_changed, char **errmsg)
{
    char *code;
    size_t len;
    bool had = h->cur != NULL;
    int rc = read_file(h->path, &code, &len, errmsg);
    if (rc < 0) {
        h->reload_failures++;
        if (had) note_reload_failure(h, errmsg ? *errmsg : NULL);
        return rc;
    }
    char since[32];
    clock_text(h->last_reload_error_at, since, sizeof since);
    uint64_t running;
    memcpy(&running, h->file_digest, sizeof running);
    if (only_if_changed && h->cur && files_digest(code, len, h->cur) == running) {
        free(code);
        /* a broken save reverted: say that the failure is over */
        if (h->reload_failing)
            MQR_LOG_W("rules",
                      "%s is back to the rules that run: the failed reload at %s is over, "
                      "nothing to reload",
                      h->path, since);
        h->reload_failing = false;
        return 0;
    }
    size_t n = strlen(h->path) + 2;
    char *chunk = malloc(n);
    if (!chunk) {
        free(code);
        return MQR_ENOMEM;
    }
    snprintf(chunk, n, "@%s", h->path);
    rc = load_code(h, chunk, h->path, code, len, errmsg);
    free(chunk);
    if (rc < 0) {
        free(code);
        if (had) {
            h->reload_failures++;
            note_reload_failure(h, errmsg ? *errmsg : NULL);
        }
        return rc;
    }
    uint64_t d = files_digest(code, len, h->cur);
    free(code);
    memcpy(h->file_digest, &d, sizeof d);
    if (had && h->reload_failing)
        MQR_LOG_W("rules", "reloaded %s after the failed reload at %s: the new rules run", h->path,
                  since);
    else if (had)
        MQR_LOG_I("rules", "reloaded %s", h->path);
    else
        MQR_LOG_I("rules", "loaded %s", h->path);
    if (had) h->reloads++;
    h->reload_failing = false;
    return 0;
}

/* ---- engine hooks and public API ----------------------------------------- */

static void host_stop(void *arg)
{
    mqr_script_t *h = arg;
    stop_watch(h);
    if (h->debounce_init) {
        uv_close((uv_handle_t *)&h->debounce, NULL);
        h->debounce_init = false;
    }
    if (h->cur)
        for (l_timer_t *t = h->cur->timers; t; t = t->next)
            uv_timer_stop(&t->handle);
}

static void host_free(void *arg)
{
    mqr_script_t *h = arg;
    host_stop(h);
    if (h->e->admin_hooks == &h->admin_hooks) h->e->admin_hooks = NULL;
    mqr__lauth_close(h); /* no hook may reach the state closing below */
    mqr__lregistry_close(h);
    state_close(h->cur);
    h->cur = NULL;
    mqr__lupstream_close_all(h);
    mqr__llisten_close_all(h);
    mqr__lqueue_close_all(h);
    mqr__lkv_free(h);
    mqr__lcfunc_free_all(h);
    if (h->budget) mqr__budget_free(h->budget);
    for (size_t i = 0; i < h->n_watch_files; i++)
        free(h->watch_files[i]);
    free(h->watch_files);
    free(h->path);
    free(h);
}

static const mqr_script_ops_t host_ops = {.stop = host_stop, .free = host_free};

static int engine_reload(mqr_engine_t *e, char **errmsg)
{
    return mqr_engine_reload(e, errmsg);
}

mqr_script_t *mqr__script_host(mqr_engine_t *e)
{
    if (e->script) return e->script;
    mqr_script_t *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->e = e;
    if (e->handler_budget_ms != MQR_BUDGET_OFF) {
        int rc = mqr__budget_new(&h->budget, e->handler_budget_ms);
        if (rc < 0) MQR_LOG_W("rules", "handler budget unavailable: %s", mqr_strerror(rc));
    }
    e->script = h;
    e->script_ops = &host_ops;
    mqr__ladmin_hooks(h);
    mqr__engine_reload_hook = engine_reload;
    return h;
}

int mqr_engine_load_file(mqr_engine_t *e, const char *path, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    mqr_script_t *h = mqr__script_host(e);
    if (!h) return MQR_ENOMEM;
    char *p = strdup(path);
    if (!p) return MQR_ENOMEM;
    char *old = h->path;
    h->path = p;
    int rc = reload_file(h, false, errmsg);
    if (rc < 0) {
        h->path = old;
        free(p);
        return rc;
    }
    free(old);
    start_watch(h);
    return 0;
}

int mqr_engine_load_string(mqr_engine_t *e, const char *name, const char *code, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    mqr_script_t *h = mqr__script_host(e);
    if (!h) return MQR_ENOMEM;
    char chunk[256];
    snprintf(chunk, sizeof chunk, "=%s", name ? name : "rules");
    bool had = h->cur != NULL;
    int rc = load_code(h, chunk, NULL, code, strlen(code), errmsg);
    if (had) {
        if (rc < 0) {
            h->reload_failures++;
            note_reload_failure(h, errmsg ? *errmsg : NULL);
        } else {
            h->reloads++;
            h->reload_failing = false;
        }
    }
    return rc;
}

int mqr_engine_reload(mqr_engine_t *e, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    mqr_script_t *h = e->script;
    if (!h || !h->path) {
        if (errmsg) *errmsg = strdup("no script file loaded");
        return MQR_ENOENT;
    }
    return reload_file(h, false, errmsg);
}

/* ---- routes --------------------------------------------------------------- */

/* Publishes the message a handler failed on to the route's dead-letter
 * topic: same payload, QoS and properties, plus user properties naming the
 * original topic, the route and the error. */
static void dead_letter(l_route_t *r, mqr_msg_t *msg, const char *error)
{
    static const char k_topic[] = "mqrouter-topic", k_route[] = "mqrouter-route",
                      k_error[] = "mqrouter-error";
    size_t elen = strlen(error), flen = strlen(r->filter);
    if (elen > 1024) elen = 1024;
    size_t cap = msg->props_len + 3 * 5 + sizeof k_topic + msg->topic_len + sizeof k_route + flen +
                 sizeof k_error + elen;
    uint8_t *props = malloc(cap);
    if (!props) return;
    memcpy(props, msg->props, msg->props_len);
    mqr_mqtt_pbuild_t b;
    mqr__mqtt_pb_init(&b, props + msg->props_len, cap - msg->props_len);
    mqr__mqtt_pb_user(&b, k_topic, sizeof k_topic - 1, msg->topic, msg->topic_len);
    mqr__mqtt_pb_user(&b, k_route, sizeof k_route - 1, r->filter, flen);
    mqr__mqtt_pb_user(&b, k_error, sizeof k_error - 1, error, elen);
    size_t added = 0;
    if (mqr__mqtt_pb_finish(&b, &added) == 0) {
        mqr_msg_init_t in = {
            .topic = r->dead_letter,
            .topic_len = strlen(r->dead_letter),
            .payload = msg->payload,
            .payload_len = msg->payload_len,
            .props = props,
            .props_len = msg->props_len + added,
            .qos = msg->qos,
            .origin = MQR_ORIGIN_LUA,
            .origin_name = r->filter,
            .expiry_s = msg->expiry_s,
        };
        int rc = mqr__engine_publish_data(r->st->host->e, &in);
        if (rc < 0)
            MQR_LOG_E("rules", "%s: dead letter to '%s' failed: %s", r->name, r->dead_letter,
                      mqr_strerror(rc));
        else
            r->dead_lettered++;
    }
    free(props);
}

/* A handler error follows the route's error policy, and a queue notes its
 * own outcome in the publish context (router.h): nothing to return. */
static int route_deliver(mqr_subscriber_t *self, mqr_msg_t *msg, const mqr_trie_entry_t *entry)
{
    l_route_t *r = (l_route_t *)self;
    l_state_t *st = r->st;
    if (!st->active || r->stopped) return 0;
    if (r->upstream && msg->origin_conn != (const void *)r->upstream->u) return 0;
    r->calls++;
    if (r->queue && mqr__queue_replaying(r->queue, msg))
        return 0;   /* q:replay() leaves its own queue as it is */
    if (r->queue) { /* into a queue, topic and all; refusals are the queue's to count */
        mqr_queue_pub_opts_t o = {.priority = r->queue_priority, .ttl_ms = r->queue_ttl_ms};
        int rc = mqr__queue_publish(r->queue, msg, &o, NULL);
        if (rc < 0) {
            r->errors++;
            snprintf(st->host->last_error, sizeof st->host->last_error, "queue '%s': %s: %s",
                     mqr__queue_name(r->queue), mqr_err_name(rc), mqr_strerror(rc));
            if ((r->errors & (r->errors - 1)) == 0) /* 1st, 2nd, 4th... */
                MQR_LOG_W("rules", "%s: %s (%llu so far)", r->name, st->host->last_error,
                          (unsigned long long)r->errors);
            if (r->dead_letter) dead_letter(r, msg, st->host->last_error);
        }
        return 0;
    }
    lua_State *L = st->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->fn_ref);
    mqr__lmsg_push(L, msg);
    /* handler latency for /metrics: timed only while the admin API runs */
    uint64_t t0 = st->host->e->admin ? mqr__admin_ticks() : 0;
    int rc = mqr__script_call(st, 1, r->name, &r->errors, &r->budget_errors);
    if (t0) mqr__admin_hist_add_ticks(&r->latency, mqr__admin_ticks() - t0);
    if (rc < 0 && r->dead_letter) dead_letter(r, msg, st->host->last_error);
    return 0;
}

int mqr__route_declare(lua_State *L, l_state_t *st, const char *filter, int fn_idx,
                       l_upstream_t *up, int opts_idx)
{
    const char *why = NULL;
    size_t flen = strlen(filter);
    if (mqr__topic_filter_check(filter, flen, &why) < 0)
        return luaL_error(L, "invalid route filter '%s': %s", filter, why ? why : "invalid");
    int qos = 0;
    const char *dlq = NULL;
    bool to_queue = !lua_isfunction(L, fn_idx);
    if (to_queue && !luaL_testudata(L, fn_idx, "mqrouter.queue"))
        return luaL_argerror(L, fn_idx, "function or queue expected");
    int qprio = 2;
    int64_t qttl = 0;
    if (opts_idx && !lua_isnoneornil(L, opts_idx)) {
        const char *fname = up ? "session:route" : "mq.route";
        if (!lua_istable(L, opts_idx))
            return luaL_error(L, "%s: options must be a table {qos, dead_letter}, not a %s", fname,
                              luaL_typename(L, opts_idx));
        if (!up) {
            static const char *const fn_known[] = {"qos", "dead_letter", NULL};
            static const char *const q_known[] = {"qos", "dead_letter", "priority", "ttl", NULL};
            mqr__lua_check_options(L, opts_idx, fname, to_queue ? q_known : fn_known);
        }
        lua_getfield(L, opts_idx, "qos");
        qos = mqr__lua_opt_qos(L, -1, fname, 0);
        lua_getfield(L, opts_idx, "dead_letter");
        dlq = luaL_optstring(L, -1, NULL);
        lua_pop(L, 2); /* dlq stays alive: the table holds it */
        if (dlq && mqr__topic_name_check(dlq, strlen(dlq), &why) < 0)
            return luaL_error(L, "invalid dead_letter topic '%s': %s", dlq, why);
        if (to_queue) {
            lua_getfield(L, opts_idx, "priority");
            if (!lua_isnil(L, -1)) qprio = mqr__lqueue_priority(L, lua_gettop(L));
            lua_getfield(L, opts_idx, "ttl");
            if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1))
                qttl = -1;
            else if (!lua_isnil(L, -1)) {
                double s = luaL_checknumber(L, -1);
                if (!(s > 0) || s > 1e9)
                    return luaL_argerror(L, opts_idx, "ttl must be seconds > 0");
                qttl = (int64_t)(s * 1000.0 + 0.999);
            }
            lua_pop(L, 2);
        }
    }
    struct mqr_queue *queue = to_queue ? mqr__lqueue_take(L, fn_idx) : NULL; /* may raise */
    l_route_t *r = calloc(1, sizeof *r);
    if (!r) {
        if (queue) mqr__queue_unref(queue);
        return luaL_error(L, "out of memory");
    }
    r->base.deliver = route_deliver;
    r->st = st;
    r->upstream = up;
    r->qos = qos;
    r->filter = strdup(filter);
    r->dead_letter = dlq ? strdup(dlq) : NULL;
    lua_Debug ar;
    char where[256] = "?";
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar))
        snprintf(where, sizeof where, "%s:%d", ar.short_src, ar.currentline);
    size_t n = strlen(filter) + strlen(where) + 64 + (up ? strlen(up->name) : 0);
    r->name = malloc(n);
    if (r->name) {
        if (up)
            snprintf(r->name, n, "route '%s' of session '%s' (%s)", filter, up->name, where);
        else
            snprintf(r->name, n, "route '%s' (%s)", filter, where);
    }
    if (!r->filter || !r->name) {
        free(r->filter);
        free(r->name);
        free(r);
        if (queue) mqr__queue_unref(queue);
        return luaL_error(L, "out of memory");
    }
    r->queue = queue;
    r->queue_priority = qprio;
    r->queue_ttl_ms = qttl;
    if (queue) {
        r->fn_ref = LUA_NOREF;
    } else {
        lua_pushvalue(L, fn_idx);
        r->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    /* keep declaration order: append */
    l_route_t **tail = &st->routes;
    while (*tail)
        tail = &(*tail)->next;
    *tail = r;
    if (st->active) { /* declared at run time (from a handler or timer) */
        mqr_sub_opts_t opts = {.qos = (uint8_t)qos};
        r->entry = mqr__router_add(&st->host->e->router, filter, flen, &r->base, &opts);
        if (!r->entry) return luaL_error(L, "out of memory");
        if (up && up->u) mqr__upstream_subscribe(up->u, filter, qos);
    }
    l_route_t **ud = lua_newuserdata(L, sizeof *ud);
    *ud = r;
    luaL_getmetatable(L, "mqrouter.route");
    lua_setmetatable(L, -2);
    return 1;
}

/* ---- timers ---------------------------------------------------------------- */

int mqr__timer_declare(lua_State *L, l_state_t *st, double seconds, bool repeat, int fn_idx)
{
    if (!(seconds >= 0) || seconds > 1e9)
        return luaL_error(L, "the interval must be 0 .. 1e9 seconds, not %f", seconds);
    l_timer_t *t = calloc(1, sizeof *t);
    if (!t) return luaL_error(L, "out of memory");
    uint64_t ms = (uint64_t)(seconds * 1000.0 + 0.5);
    if (repeat && ms == 0) ms = 1;
    t->due_ms = ms;
    t->repeat_ms = repeat ? ms : 0;
    t->st = st;
    lua_Debug ar;
    char name[256] = "timer";
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar))
        snprintf(name, sizeof name, "%s %gs (%s:%d)", repeat ? "every" : "after", seconds,
                 ar.short_src, ar.currentline);
    t->name = strdup(name);
    uv_timer_init(st->host->e->loop, &t->handle);
    t->handle.data = t;
    st->open_timers++;
    lua_pushvalue(L, fn_idx);
    t->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    t->seq = ++st->host->timer_seq;
    t->next = st->timers;
    st->timers = t;
    if (st->active) timer_start(t);
    l_timer_t **ud = lua_newuserdata(L, sizeof *ud);
    *ud = t;
    t->ud = ud;
    luaL_getmetatable(L, "mqrouter.timer");
    lua_setmetatable(L, -2);
    return 1;
}
