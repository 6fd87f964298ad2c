/*
 * bench/budget.c — what the handler time budget costs per call.
 *
 * Calls handlers from C through lua_pcall the way the engine does, each
 * with a topic and a fresh 64-byte payload string, in three set-ups: a
 * plain state (JIT on, no budget), the state that keeps the JIT under the
 * budget (traces carry profiler checks) and a state the budget runs in the
 * interpreter. Also times enter+leave alone. Prints calls/s and ns/call,
 * best of a few rounds (the machine may be shared). Never part of ctest.
 */
#include <lauxlib.h>
#include <lualib.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "budget.h"

static const char handlers_lua[] =
    "local H = {}\n"
    "function H.trivial(t, p) return #t + #p end\n"
    "local zones = { room1 = 'north', room2 = 'south' }\n"
    "function H.route(t, p)\n"
    "  local kind, room, metric = t:match('^(%w+)/(%w+)/(%w+)$')\n"
    "  local zone = zones[room] or 'unknown'\n"
    "  local v = tonumber(p:match('v=(%d+)'))\n"
    "  if v and v > 30 then return 'alerts/' .. zone .. '/' .. metric end\n"
    "  return kind .. '/' .. zone\n"
    "end\n"
    "local ring, pos, n = {}, 0, 64\n"
    "for i = 1, n do ring[i] = 0 end\n"
    "function H.window64(t, p)\n"
    "  pos = pos % n + 1\n"
    "  ring[pos] = #p\n"
    "  local s, mx = 0, 0\n"
    "  for i = 1, n do local x = ring[i]; s = s + x; if x > mx then mx = x end end\n"
    "  return s / n + mx\n"
    "end\n"
    "return H\n";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static lua_State *new_state(void)
{
    lua_State *L = luaL_newstate();
    if (!L) abort();
    luaL_openlibs(L);
    if (luaL_loadstring(L, handlers_lua) || lua_pcall(L, 0, 1, 0)) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        exit(1);
    }
    lua_setglobal(L, "H");
    return L;
}

/* ns per call of H[name](topic, fresh payload), best of 3 rounds of n
 * calls; b may be NULL. */
static double run(lua_State *L, mqr_budget_t *b, const char *name, long n)
{
    lua_settop(L, 0);
    lua_getglobal(L, "H");
    lua_getfield(L, -1, name);
    lua_remove(L, 1);
    char payload[64];
    memset(payload, 'v', sizeof payload);
    memcpy(payload, "v=31;", 5);
    double best = 1e9;
    for (int round = 0; round < 3; round++) {
        double t0 = now_s();
        for (long i = 0; i < n; i++) {
            memcpy(payload + 8, &i, sizeof i); /* a new string every call */
            lua_pushvalue(L, 1);
            lua_pushliteral(L, "sensors/room1/temp");
            lua_pushlstring(L, payload, sizeof payload);
            if (b) mqr__budget_enter(b, L);
            int rc = lua_pcall(L, 2, 1, 0);
            if (b && mqr__budget_leave(b)) rc = -1;
            if (rc != 0) {
                fprintf(stderr, "%s failed: %s\n", name, lua_tostring(L, -1));
                exit(1);
            }
            lua_pop(L, 1);
        }
        double ns = (now_s() - t0) * 1e9 / (double)n;
        if (ns < best) best = ns;
    }
    return best;
}

static double enter_leave_only(mqr_budget_t *b, lua_State *L, long n)
{
    double best = 1e9;
    int tripped = 0;
    for (int round = 0; round < 3; round++) {
        double t0 = now_s();
        for (long i = 0; i < n; i++) {
            mqr__budget_enter(b, L);
            __asm__ volatile("" ::: "memory"); /* keep the pair from folding */
            tripped += mqr__budget_leave(b);
        }
        double ns = (now_s() - t0) * 1e9 / (double)n;
        if (ns < best) best = ns;
    }
    if (tripped) abort();
    return best;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 2000000;
    if (n <= 0) n = 2000000;
    lua_State *plain = new_state();
    mqr_budget_t *b;
    if (mqr__budget_new(&b, 1000) != 0) return 1;
    lua_State *jit = new_state();
    lua_State *interp = new_state();
    run(jit, b, "trivial", 1000);    /* first bound state: keeps the JIT */
    run(interp, b, "trivial", 1000); /* second: interpreter */
    if (mqr__budget_mode(b, jit) != MQR_BUDGET_JIT ||
        mqr__budget_mode(b, interp) != MQR_BUDGET_INTERP) {
        fprintf(stderr, "unexpected budget modes\n");
        return 1;
    }

    /* the budget itself: the same state and handler, off and on, in short
     * alternating rounds so that a busy machine hurts both alike */
    printf("trivial handler via lua_pcall, fresh 64-byte payload, %ld calls each way\n", n);
    double off = 1e9, on = 1e9;
    for (int round = 0; round < 20; round++) {
        off = fmin(off, run(jit, NULL, "trivial", n / 60));
        on = fmin(on, run(jit, b, "trivial", n / 60));
    }
    printf("  budget off: %10.0f calls/s %7.1f ns/call\n", 1e9 / off, off);
    printf("  budget on:  %10.0f calls/s %7.1f ns/call  (budget costs %+.1f ns/call)\n", 1e9 / on,
           on, on - off);

    /* what the JIT policy costs: plain state vs the two kinds of budget
     * state, on handlers without and with a loop */
    printf("\n%-9s %-30s %12s %9s\n", "handler", "state", "calls/s", "ns/call");
    const char *names[] = {"trivial", "route", "window64"};
    for (size_t i = 0; i < 3; i++) {
        long calls = (i == 0 ? n : n / 4) / 60;
        double p = 1e9, j = 1e9, in = 1e9;
        for (int round = 0; round < 20; round++) {
            p = fmin(p, run(plain, NULL, names[i], calls));
            j = fmin(j, run(jit, b, names[i], calls));
            in = fmin(in, run(interp, b, names[i], calls));
        }
        printf("%-9s %-30s %12.0f %9.1f\n", names[i], "plain, JIT, no budget", 1e9 / p, p);
        printf("%-9s %-30s %12.0f %9.1f  (%+.1f ns)\n", names[i], "budget, JIT + profile checks",
               1e9 / j, j, j - p);
        printf("%-9s %-30s %12.0f %9.1f  (%+.1f ns)\n", names[i], "budget, interpreter only",
               1e9 / in, in, in - p);
    }
    printf("\nenter+leave alone: %.2f ns per call\n", enter_leave_only(b, jit, n * 10));
    lua_close(interp);
    lua_close(jit);
    mqr__budget_free(b);
    lua_close(plain);
    return 0;
}
