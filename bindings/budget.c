/*
 * budget.c — stops Lua handlers that run past their time budget.
 *
 * The loop thread only bumps a sequence number around each outermost call.
 * A watchdog thread per budget polls it; when the same call has been running
 * for the whole budget it arms a count hook (lua_sethook with count 1, which
 * LuaJIT allows from another thread) on every state entered with the budget.
 * The hook raises the budget error, and keeps raising it on every
 * instruction until the outermost call returns, so pcall() inside the
 * handler cannot swallow it.
 *
 * LuaJIT runs no hooks inside compiled traces, so a loop compiled to a trace
 * would never see the hook. One state per process keeps the JIT: it holds
 * LuaJIT's profiler, started in line mode ('l'), which makes every trace
 * check the profiler flag at each new source line; the watchdog sends that
 * state's thread SIGPROF, LuaJIT's own handler sets the flag, and the trace
 * exits to the interpreter, where the hook runs. The profiler's timer is
 * disarmed: SIGPROF only ever comes from the watchdog. Every other state
 * runs with the JIT off, where the hook alone is enough. The findings behind
 * this are in docs/handler-budget.md.
 *
 * Must not: touch a lua_State from the watchdog except through lua_sethook
 * and only under g_mu while the state is known to be open; send SIGPROF to
 * a state that does not hold the profiler; run Lua while holding g_mu.
 */
#include "budget.h"

#include "mqrouter.h"

#include <lauxlib.h>
#include <luajit.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

typedef struct budget_rec budget_rec_t;

typedef struct {
    mqr_budget_t pub; /* first: the inline functions see only this part */
    unsigned ms;
    unsigned flags;
    pthread_t watchdog;
    pthread_cond_t cv;
    /* guarded by g_mu */
    budget_rec_t *recs; /* states entered with this budget */
    bool closing;
} budget_t;

/* One per lua_State, a userdata anchored in the state's registry; its __gc
 * runs when the state is closed, which is how we learn about lua_close. */
struct budget_rec {
    budget_t *b;        /* budget it was last entered with; NULL once freed */
    lua_State *L;       /* the main state */
    budget_rec_t *next; /* in b->recs */
    pthread_t owner;    /* thread that took the profiler for this state */
    bool jit;           /* holds LuaJIT's profiler, runs with the JIT on */
    bool jit_failed;    /* taking the profiler failed: never try again */
    int probe_hits;     /* profiler callbacks seen while probing */
};

/* Guards the records, each budget's list and closing flag, and the lease.
 * Held by the watchdogs while they arm hooks. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static budget_rec_t *g_lease; /* the state holding LuaJIT's profiler */
static char rec_key;          /* registry key of a state's record */

atomic_bool mqr__budget_lease_free = true;

/* Keeps profile checks in traces without sampling: the interval is never
 * reached because the timer is disarmed right after the start. */
static const char profile_mode[] = "li1000000000";

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- records ------------------------------------------------------------ */

/* [-0, +0] */
static budget_rec_t *rec_lookup(lua_State *L)
{
    lua_pushlightuserdata(L, &rec_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    budget_rec_t *rec = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return rec;
}

static void rec_unlink(budget_t *b, budget_rec_t *rec)
{
    for (budget_rec_t **p = &b->recs; *p; p = &(*p)->next) {
        if (*p == rec) {
            *p = rec->next;
            break;
        }
    }
    rec->next = NULL;
}

/* The state is being closed. lua_close has already stopped the profiler if
 * this state held it; stopping again is a no-op, and keeps LuaJIT from
 * pointing at a freed state should a version not do it. */
static int rec_gc(lua_State *L)
{
    budget_rec_t *rec = lua_touserdata(L, 1);
    pthread_mutex_lock(&g_mu);
    if (g_lease == rec) {
        luaJIT_profile_stop(L);
        g_lease = NULL;
        atomic_store(&mqr__budget_lease_free, true);
    }
    budget_t *b = rec->b;
    if (b) {
        rec_unlink(b, rec);
        if (b->pub.cur_L == rec->L) b->pub.cur_L = NULL;
        rec->b = NULL;
    }
    pthread_mutex_unlock(&g_mu);
    return 0;
}

/* Protected part of rec_create: allocation may raise. [-0, +0] */
static int rec_create_p(lua_State *L)
{
    budget_rec_t **out = lua_touserdata(L, 1);
    budget_rec_t *rec = lua_newuserdata(L, sizeof *rec);
    memset(rec, 0, sizeof *rec);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, rec_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_pushlightuserdata(L, &rec_key);
    lua_insert(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
    *out = rec;
    return 0;
}

static budget_rec_t *rec_create(lua_State *L)
{
    budget_rec_t *rec = NULL;
    if (lua_cpcall(L, rec_create_p, &rec) != 0) {
        lua_pop(L, 1);
        return NULL;
    }
    rec->L = L;
    return rec;
}

/* ---- the profiler lease ------------------------------------------------- */

static void profile_cb(void *data, lua_State *L, int samples, int vmstate)
{
    (void)L;
    (void)samples;
    (void)vmstate;
    budget_rec_t *rec = data;
    rec->probe_hits++;
}

static bool sigprof_is_free(void)
{
    struct sigaction sa;
    if (sigaction(SIGPROF, NULL, &sa) != 0) return false;
    if (sa.sa_flags & SA_SIGINFO) return false;
    return sa.sa_handler == SIG_DFL || sa.sa_handler == SIG_IGN;
}

/* Makes L the state that keeps the JIT. Loop thread, L idle, g_lease
 * already reserved for rec. Runs a little Lua to prove the profiler really
 * reaches L: if someone else holds LuaJIT's profiler, or SIGPROF belongs to
 * the host, L stays in the interpreter. */
static bool lease_take(budget_rec_t *rec)
{
    lua_State *L = rec->L;
    if (!sigprof_is_free()) return false;
    /* A SIGPROF that outlives the profiler (lua_close restores the old
     * disposition) must not kill the process. */
    struct sigaction ign;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGPROF, &ign, NULL);

    luaJIT_profile_start(L, profile_mode, profile_cb, rec);
    struct itimerval off;
    memset(&off, 0, sizeof off);
    setitimer(ITIMER_PROF, &off, NULL);

    bool ok = false;
    if (!sigprof_is_free()) { /* LuaJIT's handler is in place */
        rec->probe_hits = 0;
        /* delivered to this thread before pthread_kill returns */
        pthread_kill(pthread_self(), SIGPROF);
        if (luaL_loadstring(L, "return") != 0 || lua_pcall(L, 0, 0, 0) != 0)
            lua_pop(L, 1);
        else
            ok = rec->probe_hits > 0;
    }
    if (!ok) {
        luaJIT_profile_stop(L);
        return false;
    }
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_ON);
    return true;
}

static void state_jit_off(lua_State *L)
{
    /* turning the engine off leaves compiled traces in place: flush too */
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_FLUSH);
}

/* ---- enter/leave slow paths ------------------------------------------- */

/* L's record, made on first use (a new state starts with the JIT off).
 * NULL when out of memory. */
static budget_rec_t *rec_get(lua_State *L)
{
    if (!lua_checkstack(L, 8)) return NULL;
    budget_rec_t *rec = rec_lookup(L);
    if (!rec) {
        rec = rec_create(L);
        if (rec) state_jit_off(L);
    }
    return rec;
}

/* Under g_mu. */
static void rec_link(budget_t *b, budget_rec_t *rec)
{
    if (rec->b == b) return;
    if (rec->b) rec_unlink(rec->b, rec);
    rec->b = b;
    rec->next = b->recs;
    b->recs = rec;
}

void mqr__budget_nest(mqr_budget_t *pub, lua_State *L)
{
    budget_rec_t *rec = rec_get(L);
    if (!rec) return; /* out of memory: only the outer state gets stopped */
    pthread_mutex_lock(&g_mu);
    rec_link((budget_t *)pub, rec);
    pthread_mutex_unlock(&g_mu);
}

void mqr__budget_bind(mqr_budget_t *pub, lua_State *L)
{
    budget_t *b = (budget_t *)pub;
    budget_rec_t *rec = rec_get(L);
    if (!rec) { /* out of memory: this state runs without a budget for now */
        pub->cur_L = NULL;
        pub->poll_lease = false;
        return;
    }
    bool want_jit = !(b->flags & MQR_BUDGET_NOJIT) && !rec->jit && !rec->jit_failed;
    pthread_mutex_lock(&g_mu);
    rec_link(b, rec);
    bool take = want_jit && !g_lease;
    if (take) {
        g_lease = rec;
        atomic_store(&mqr__budget_lease_free, false);
    }
    pthread_mutex_unlock(&g_mu);

    if (take) {
        bool ok = lease_take(rec);
        pthread_mutex_lock(&g_mu); /* the watchdog reads jit and owner */
        if (ok) {
            rec->jit = true;
            rec->owner = pthread_self();
        } else {
            rec->jit_failed = true;
            g_lease = NULL;
            atomic_store(&mqr__budget_lease_free, true);
        }
        pthread_mutex_unlock(&g_mu);
    }
    pub->cur_L = L;
    pub->poll_lease = !(b->flags & MQR_BUDGET_NOJIT) && !rec->jit && !rec->jit_failed;
}

bool mqr__budget_settle(mqr_budget_t *pub, unsigned long seq)
{
    budget_t *b = (budget_t *)pub;
    /* under g_mu: a watchdog that was arming for this call has finished */
    pthread_mutex_lock(&g_mu);
    for (budget_rec_t *rec = b->recs; rec; rec = rec->next)
        lua_sethook(rec->L, NULL, 0, 0);
    pthread_mutex_unlock(&g_mu);
    bool tripped = atomic_load_explicit(&pub->hook_seq, memory_order_relaxed) == seq;
    pub->last_tripped = tripped;
    return tripped;
}

/* ---- the hook and the watchdog ----------------------------------------- */

static void budget_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    budget_rec_t *rec = rec_lookup(L);
    budget_t *b = rec ? rec->b : NULL;
    if (b) {
        unsigned long s = atomic_load_explicit(&b->pub.seq, memory_order_relaxed);
        if ((s & 1) && atomic_load_explicit(&b->pub.trip_seq, memory_order_relaxed) == s) {
            atomic_store_explicit(&b->pub.hook_seq, s, memory_order_relaxed);
            luaL_error(L, "handler exceeded its time budget of %u ms", b->ms);
        }
    }
    /* armed for a call that has ended since */
    pthread_mutex_lock(&g_mu);
    lua_sethook(L, NULL, 0, 0);
    pthread_mutex_unlock(&g_mu);
}

/* Under g_mu. Re-arming sets the hook off and on again: that rebuilds
 * LuaJIT's dispatch table in case an update of its own raced with ours. */
static void arm_all(budget_t *b, bool again)
{
    for (budget_rec_t *rec = b->recs; rec; rec = rec->next) {
        if (again) lua_sethook(rec->L, NULL, 0, 0);
        lua_sethook(rec->L, budget_hook, LUA_MASKCOUNT, 1);
        if (rec->jit && g_lease == rec) pthread_kill(rec->owner, SIGPROF);
    }
}

static void *watchdog_main(void *arg)
{
    budget_t *b = arg;
    const uint64_t budget_ns = (uint64_t)b->ms * 1000000u;
    /* a call is seen stuck between budget and budget + tick */
    uint64_t tick_ns = budget_ns / 10;
    if (tick_ns < 1000000u) tick_ns = 1000000u;
    if (tick_ns > 100000000u) tick_ns = 100000000u;
    const uint64_t retry_ns = tick_ns < 20000000u ? 20000000u : tick_ns;
    unsigned long seen = 0;
    uint64_t since = 0, armed_at = 0;

    pthread_mutex_lock(&g_mu);
    while (!b->closing) {
        uint64_t wake = mono_ns() + tick_ns;
        struct timespec ts = {.tv_sec = (time_t)(wake / 1000000000u),
                              .tv_nsec = (long)(wake % 1000000000u)};
        pthread_cond_timedwait(&b->cv, &g_mu, &ts);
        if (b->closing) break;
        unsigned long s = atomic_load_explicit(&b->pub.seq, memory_order_relaxed);
        uint64_t now = mono_ns();
        if (!(s & 1) || s != seen) {
            /* idle, or a call we see for the first time: it started after
             * the previous look, so counting from now never trips early */
            seen = s;
            since = now;
            continue;
        }
        if (now - since < budget_ns) continue;
        if (atomic_load_explicit(&b->pub.trip_seq, memory_order_relaxed) != s) {
            atomic_store_explicit(&b->pub.trip_seq, s, memory_order_relaxed);
            arm_all(b, false);
            armed_at = now;
        } else if (atomic_load_explicit(&b->pub.hook_seq, memory_order_relaxed) != s &&
                   now - armed_at >= retry_ns) {
            /* the hook has not run yet: the state may be inside a long C
             * call, or our first arming was lost */
            arm_all(b, true);
            armed_at = now;
        }
    }
    pthread_mutex_unlock(&g_mu);
    return NULL;
}

/* ---- lifecycle ---------------------------------------------------------- */

int mqr__budget_new_ex(mqr_budget_t **out, unsigned ms, unsigned flags)
{
    if (!out) return MQR_EINVAL;
    *out = NULL;
    budget_t *b = calloc(1, sizeof *b);
    if (!b) return MQR_ENOMEM;
    b->ms = ms ? ms : 1000;
    b->flags = flags;
    pthread_condattr_t ca;
    int rc = pthread_condattr_init(&ca);
    if (rc == 0) {
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        rc = pthread_cond_init(&b->cv, &ca);
        pthread_condattr_destroy(&ca);
    }
    if (rc != 0) {
        free(b);
        return -rc;
    }
    /* the watchdog takes no signals: SIGPROF and the host's signals belong
     * to the threads that run code */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&b->watchdog, NULL, watchdog_main, b);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        pthread_cond_destroy(&b->cv);
        free(b);
        return -rc;
    }
    *out = &b->pub;
    return 0;
}

int mqr__budget_new(mqr_budget_t **out, unsigned ms)
{
    return mqr__budget_new_ex(out, ms, 0);
}

void mqr__budget_free(mqr_budget_t *pub)
{
    if (!pub) return;
    budget_t *b = (budget_t *)pub;
    pthread_mutex_lock(&g_mu);
    b->closing = true;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&g_mu);
    pthread_join(b->watchdog, NULL);
    pthread_mutex_lock(&g_mu);
    for (budget_rec_t *rec = b->recs, *next; rec; rec = next) {
        next = rec->next;
        lua_sethook(rec->L, NULL, 0, 0); /* a late arming, if any */
        rec->b = NULL;
        rec->next = NULL;
    }
    b->recs = NULL;
    pthread_mutex_unlock(&g_mu);
    pthread_cond_destroy(&b->cv);
    free(b);
}

bool mqr__budget_tripped(const mqr_budget_t *b)
{
    if (b->depth == 0) return b->last_tripped;
    return atomic_load_explicit(&b->hook_seq, memory_order_relaxed) ==
           atomic_load_explicit(&b->seq, memory_order_relaxed);
}

int mqr__budget_mode(mqr_budget_t *pub, lua_State *L)
{
    budget_rec_t *rec = rec_lookup(L);
    if (!rec || rec->b != (budget_t *)pub) return MQR_BUDGET_UNBOUND;
    return rec->jit ? MQR_BUDGET_JIT : MQR_BUDGET_INTERP;
}

unsigned mqr__budget_ms(const mqr_budget_t *pub)
{
    return ((const budget_t *)pub)->ms;
}
