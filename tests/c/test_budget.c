/*
 * test_budget.c — the handler time budget: every stuck shape we know of is
 * stopped within budget + margin, both in the state that keeps the JIT and in
 * one that runs interpreted; the state answers normally afterwards; calls
 * that finish in time never trip, however many; nested calls share the
 * outermost call's clock; closing states and freeing budgets in either
 * order is safe.
 *
 * States are made here with luaL_newstate, not through the engine. Loops run
 * for the whole budget, long enough for LuaJIT to compile them to traces,
 * which is the case a plain debug hook cannot stop.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "budget.h"

#define BUDGET_MS 150
/* worst case: budget + one watchdog tick + scheduling; generous for CI and
 * sanitizers, still far below "never" */
#define MARGIN_MS 400

static const char handlers_lua[] =
    "local H = {}\n"
    "function H.spin() while true do end end\n"
    "function H.numfor()\n"
    "  local x = 0\n"
    "  for i = 1, 1e18 do x = x + i end\n"
    "  return x\n"
    "end\n"
    "function H.strings()\n"
    "  local s\n"
    "  local i = 0\n"
    "  while true do\n"
    "    i = i + 1\n"
    "    s = string.format('%d:%s', i, string.rep('a', 10))\n"
    "  end\n"
    "end\n"
    "function H.coro()\n"
    "  local co = coroutine.wrap(function()\n"
    "    local x = 0\n"
    "    while true do x = x + 1 end\n"
    "  end)\n"
    "  co()\n"
    "end\n"
    "function H.coro_resume()\n"
    "  local co = coroutine.create(function() while true do end end)\n"
    "  local ok, err = coroutine.resume(co)\n"
    "  return 'swallowed: ' .. tostring(err)\n"
    "end\n"
    "function H.pcall_once()\n"
    "  local ok, err = pcall(function() while true do end end)\n"
    "  return 'swallowed: ' .. tostring(err)\n"
    "end\n"
    "function H.pcall_loop()\n"
    "  while true do\n"
    "    pcall(function() local x = 0 while true do x = x + 1 end end)\n"
    "  end\n"
    "end\n"
    "function H.xpcall_loop()\n"
    "  while true do\n"
    "    xpcall(function() while true do end end, function(e) return e end)\n"
    "  end\n"
    "end\n"
    "function H.tailrec()\n"
    "  local function f(n) if n > 50 then return f(0) end return f(n + 1) end\n"
    "  return f(0)\n"
    "end\n"
    "function H.recursion()\n"
    "  local function g(n) if n == 0 then return 0 end return 1 + g(n - 1) end\n"
    "  while true do g(100) end\n"
    "end\n"
    "function H.gotoloop()\n"
    "  ::top::\n"
    "  goto top\n"
    "end\n"
    "function H.tables()\n"
    "  local t, i = {}, 0\n"
    "  while true do i = i + 1; t[i % 100 + 1] = { i } end\n"
    "end\n"
    "function H.trivial(t, p) return #t + #p end\n"
    "function H.sum(n) local s = 0 for i = 1, n do s = s + i end return s end\n"
    "function H.busy(ms)\n"
    "  local t0 = wall_ms()\n"
    "  local x = 0\n"
    "  while wall_ms() - t0 < ms do x = x + 1 end\n"
    "  return x\n"
    "end\n"
    "return H\n";

static const char *const stuck[] = {"spin",        "numfor",     "strings",    "coro",
                                    "coro_resume", "pcall_once", "pcall_loop", "xpcall_loop",
                                    "tailrec",     "recursion",  "gotoloop",   "tables"};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Wall clock, not os.clock(): on a busy machine CPU time runs slower. */
static int l_wall_ms(lua_State *L)
{
    lua_pushnumber(L, now_ms());
    return 1;
}

/* A state with the handlers table in global H. */
static lua_State *new_state(void)
{
    lua_State *L = luaL_newstate();
    assert_non_null(L);
    luaL_openlibs(L);
    lua_register(L, "wall_ms", l_wall_ms);
    assert_int_equal(luaL_loadstring(L, handlers_lua), 0);
    assert_int_equal(lua_pcall(L, 0, 1, 0), 0);
    lua_setglobal(L, "H");
    return L;
}

/* Pushes H[name]. [-0, +1] */
static void push_handler(lua_State *L, const char *name)
{
    lua_getglobal(L, "H");
    lua_getfield(L, -1, name);
    lua_remove(L, -2);
}

typedef struct {
    int rc;
    bool tripped;
    double ms;
    char msg[256];
} result_t;

/* Calls H[name]() as the engine would: within enter/leave. */
static result_t call(mqr_budget_t *b, lua_State *L, const char *name)
{
    result_t r = {0};
    int top = lua_gettop(L);
    push_handler(L, name);
    double t0 = now_ms();
    mqr__budget_enter(b, L);
    r.rc = lua_pcall(L, 0, 1, 0);
    r.tripped = mqr__budget_leave(b);
    r.ms = now_ms() - t0;
    const char *s = lua_tostring(L, -1);
    snprintf(r.msg, sizeof r.msg, "%s", s ? s : "(not a string)");
    lua_settop(L, top);
    return r;
}

/* The state still runs code and returns the right answer. */
static void assert_usable(mqr_budget_t *b, lua_State *L)
{
    int top = lua_gettop(L);
    push_handler(L, "sum");
    lua_pushinteger(L, 1000);
    mqr__budget_enter(b, L);
    int rc = lua_pcall(L, 1, 1, 0);
    bool tripped = mqr__budget_leave(b);
    assert_int_equal(rc, 0);
    assert_false(tripped);
    assert_int_equal(lua_tointeger(L, -1), 500500);
    lua_settop(L, top);
    assert_true(lua_gethook(L) == NULL); /* disarmed after the trip */
}

static void assert_stopped(const result_t *r, unsigned ms, const char *name)
{
    char want[64];
    snprintf(want, sizeof want, "handler exceeded its time budget of %u ms", ms);
    if (r->rc == 0 || !r->tripped || !strstr(r->msg, want) || r->ms < ms || r->ms > ms + MARGIN_MS)
        fail_msg("%s: rc=%d tripped=%d after %.0f ms: %s", name, r->rc, r->tripped, r->ms, r->msg);
}

static void run_all_stuck(mqr_budget_t *b, lua_State *L)
{
    for (size_t i = 0; i < sizeof stuck / sizeof stuck[0]; i++) {
        result_t r = call(b, L, stuck[i]);
        assert_stopped(&r, BUDGET_MS, stuck[i]);
        assert_true(mqr__budget_tripped(b));
        assert_usable(b, L);
        assert_false(mqr__budget_tripped(b));
    }
}

/* The first state of the process keeps the JIT: compiled loops must still
 * be stopped. */
static void test_stuck_shapes_jit(void **state)
{
    (void)state;
    mqr_budget_t *b;
    assert_int_equal(mqr__budget_new(&b, BUDGET_MS), 0);
    assert_int_equal(mqr__budget_ms(b), BUDGET_MS);
    lua_State *L = new_state();
    assert_usable(b, L);
    assert_int_equal(mqr__budget_mode(b, L), MQR_BUDGET_JIT);
    run_all_stuck(b, L);
    lua_close(L);
    mqr__budget_free(b);
}

/* A second state while the first holds the profiler runs interpreted. */
static void test_stuck_shapes_interp(void **state)
{
    (void)state;
    mqr_budget_t *b;
    assert_int_equal(mqr__budget_new(&b, BUDGET_MS), 0);
    lua_State *first = new_state();
    lua_State *L = new_state();
    assert_usable(b, first);
    assert_usable(b, L);
    assert_int_equal(mqr__budget_mode(b, first), MQR_BUDGET_JIT);
    assert_int_equal(mqr__budget_mode(b, L), MQR_BUDGET_INTERP);
    run_all_stuck(b, L);
    /* and the JIT state is unaffected by the other's trips */
    assert_usable(b, first);
    lua_close(L);
    lua_close(first);
    mqr__budget_free(b);
}

static void test_nojit_flag(void **state)
{
    (void)state;
    mqr_budget_t *b;
    assert_int_equal(mqr__budget_new_ex(&b, BUDGET_MS, MQR_BUDGET_NOJIT), 0);
    lua_State *L = new_state();
    assert_usable(b, L);
    assert_int_equal(mqr__budget_mode(b, L), MQR_BUDGET_INTERP);
    result_t r = call(b, L, "numfor");
    assert_stopped(&r, BUDGET_MS, "numfor");
    lua_close(L);
    mqr__budget_free(b);
}

/* A million fast calls, and calls that take a good part of the budget,
 * never trip. The busy calls leave the budget room for the scheduler: on a
 * loaded machine a 60 ms spin can take well over 100 ms of wall time. */
static void test_in_time_never_trips(void **state)
{
    (void)state;
    mqr_budget_t *b;
    assert_int_equal(mqr__budget_new(&b, 400), 0);
    lua_State *L = new_state();
    push_handler(L, "trivial");
    int fn = lua_gettop(L);
    char payload[64];
    memset(payload, 'x', sizeof payload);
    long errors = 0;
    for (long i = 0; i < 1000000; i++) {
        memcpy(payload, &i, sizeof i);
        lua_pushvalue(L, fn);
        lua_pushliteral(L, "sensors/room1/temp");
        lua_pushlstring(L, payload, sizeof payload);
        mqr__budget_enter(b, L);
        int rc = lua_pcall(L, 2, 1, 0);
        if (mqr__budget_leave(b) || rc != 0 || lua_tointeger(L, -1) != 18 + 64) errors++;
        lua_pop(L, 1);
    }
    assert_int_equal(errors, 0);
    lua_settop(L, 0);
    for (int i = 0; i < 5; i++) {
        push_handler(L, "busy");
        lua_pushinteger(L, 150);
        mqr__budget_enter(b, L);
        int rc = lua_pcall(L, 1, 1, 0);
        assert_false(mqr__budget_leave(b));
        assert_int_equal(rc, 0);
        lua_settop(L, 0);
    }
    lua_close(L);
    mqr__budget_free(b);
}

/* ---- nested calls: a handler that runs another handler ------------------ */

static mqr_budget_t *nest_b;
static int nest_inner_tripped;
static int nest_inner_rc;

/* run_inner(name, arg): calls H[name](arg) the way the engine runs a
 * handler triggered by a publish, and returns whatever it returned. */
static int l_run_inner(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    push_handler(L, name);
    lua_pushvalue(L, 2);
    mqr__budget_enter(nest_b, L);
    nest_inner_rc = lua_pcall(L, 1, 1, 0);
    nest_inner_tripped += mqr__budget_leave(nest_b);
    return 1; /* a result or the error, swallowed as a C caller might */
}

/* run_other(name): the same, but H[name] of another state (other_L). */
static lua_State *other_L;

static int l_run_other(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    push_handler(other_L, name);
    mqr__budget_enter(nest_b, other_L);
    nest_inner_rc = lua_pcall(other_L, 0, 1, 0);
    nest_inner_tripped += mqr__budget_leave(nest_b);
    lua_pushstring(L, lua_tostring(other_L, -1));
    lua_pop(other_L, 1);
    return 1;
}

static const char nest_lua[] = "function H.outer(inner, arg, before_ms)\n"
                               "  if before_ms then H.busy(before_ms) end\n"
                               "  local r = run_inner(inner, arg)\n"
                               "  return r\n"
                               "end\n";

static lua_State *nest_state(void)
{
    lua_State *L = new_state();
    lua_register(L, "run_inner", l_run_inner);
    lua_register(L, "run_other", l_run_other);
    assert_int_equal(luaL_dostring(L, nest_lua), 0);
    return L;
}

static result_t call_outer(lua_State *L, const char *inner, int arg, int before_ms)
{
    result_t r = {0};
    push_handler(L, "outer");
    lua_pushstring(L, inner);
    lua_pushinteger(L, arg);
    lua_pushinteger(L, before_ms);
    nest_inner_tripped = 0;
    double t0 = now_ms();
    mqr__budget_enter(nest_b, L);
    r.rc = lua_pcall(L, 3, 1, 0);
    r.tripped = mqr__budget_leave(nest_b);
    r.ms = now_ms() - t0;
    const char *s = lua_tostring(L, -1);
    snprintf(r.msg, sizeof r.msg, "%s", s ? s : "(not a string)");
    lua_settop(L, 0);
    return r;
}

static void test_nested_stuck_inner(void **state)
{
    (void)state;
    assert_int_equal(mqr__budget_new(&nest_b, BUDGET_MS), 0);
    lua_State *L = nest_state();
    /* the inner handler loops: the inner call fails with the budget error,
     * and the outer one too although the C caller swallowed it */
    result_t r = call_outer(L, "spin", 0, 0);
    assert_stopped(&r, BUDGET_MS, "nested spin");
    assert_int_equal(nest_inner_tripped, 1);
    assert_int_not_equal(nest_inner_rc, 0);
    assert_usable(nest_b, L);
    lua_close(L);
    mqr__budget_free(nest_b);
}

/* One clock for the outermost call: 100 ms outside plus 100 ms inside is
 * over a 150 ms budget although neither part is. */
static void test_nested_one_clock(void **state)
{
    (void)state;
    assert_int_equal(mqr__budget_new(&nest_b, BUDGET_MS), 0);
    lua_State *L = nest_state();
    result_t r = call_outer(L, "busy", 100, 100);
    assert_stopped(&r, BUDGET_MS, "nested 100+100");
    /* and nested calls that fit stay quiet */
    r = call_outer(L, "sum", 100, 20);
    assert_int_equal(r.rc, 0);
    assert_false(r.tripped);
    assert_int_equal(nest_inner_tripped, 0);
    assert_string_equal(r.msg, "5050");
    lua_close(L);
    mqr__budget_free(nest_b);
}

/* A handler in one state runs a handler of another state (never entered
 * on its own before) that loops: both get the budget error. */
static void test_nested_other_state(void **state)
{
    (void)state;
    assert_int_equal(mqr__budget_new(&nest_b, BUDGET_MS), 0);
    lua_State *L = nest_state();
    other_L = new_state();
    assert_int_equal(
        luaL_dostring(L, "function H.cross(name) local r = run_other(name) return r end"), 0);
    push_handler(L, "cross");
    lua_pushliteral(L, "numfor");
    nest_inner_tripped = 0;
    double t0 = now_ms();
    mqr__budget_enter(nest_b, L);
    int rc = lua_pcall(L, 1, 1, 0);
    bool tripped = mqr__budget_leave(nest_b);
    result_t r = {.rc = rc, .tripped = tripped, .ms = now_ms() - t0};
    snprintf(r.msg, sizeof r.msg, "%s", lua_tostring(L, -1));
    lua_settop(L, 0);
    assert_stopped(&r, BUDGET_MS, "numfor in another state");
    assert_int_equal(nest_inner_tripped, 1);
    assert_int_not_equal(nest_inner_rc, 0);
    assert_int_equal(mqr__budget_mode(nest_b, other_L), MQR_BUDGET_INTERP);
    assert_usable(nest_b, other_L);
    assert_usable(nest_b, L);
    lua_close(other_L);
    lua_close(L);
    mqr__budget_free(nest_b);
}

/* ---- lifecycles --------------------------------------------------------- */

/* Closing the state that keeps the JIT hands the JIT to the next one. */
static void test_lease_moves_on_close(void **state)
{
    (void)state;
    mqr_budget_t *b;
    assert_int_equal(mqr__budget_new(&b, BUDGET_MS), 0);
    lua_State *a = new_state();
    lua_State *c = new_state();
    assert_usable(b, a);
    assert_usable(b, c);
    assert_int_equal(mqr__budget_mode(b, a), MQR_BUDGET_JIT);
    assert_int_equal(mqr__budget_mode(b, c), MQR_BUDGET_INTERP);
    lua_close(a);
    assert_usable(b, c); /* the next call takes the lease */
    assert_int_equal(mqr__budget_mode(b, c), MQR_BUDGET_JIT);
    result_t r = call(b, c, "numfor");
    assert_stopped(&r, BUDGET_MS, "numfor after lease move");
    assert_usable(b, c);
    lua_close(c);
    mqr__budget_free(b);
}

/* A budget freed before its states leaves them usable (without budget), and
 * closing them afterwards touches nothing freed. */
static void test_free_before_close(void **state)
{
    (void)state;
    mqr_budget_t *b;
    assert_int_equal(mqr__budget_new(&b, BUDGET_MS), 0);
    lua_State *L = new_state();
    result_t r = call(b, L, "spin");
    assert_stopped(&r, BUDGET_MS, "spin");
    mqr__budget_free(b);
    push_handler(L, "sum");
    lua_pushinteger(L, 10);
    assert_int_equal(lua_pcall(L, 1, 1, 0), 0);
    assert_int_equal(lua_tointeger(L, -1), 55);
    lua_close(L);

    /* and a new budget on a new state gets the JIT again */
    assert_int_equal(mqr__budget_new(&b, BUDGET_MS), 0);
    L = new_state();
    assert_usable(b, L);
    assert_int_equal(mqr__budget_mode(b, L), MQR_BUDGET_JIT);
    lua_close(L);
    mqr__budget_free(b);
}

/* Two budgets at once (two engines), each with its own state. */
static void test_two_budgets(void **state)
{
    (void)state;
    mqr_budget_t *b1, *b2;
    assert_int_equal(mqr__budget_new(&b1, BUDGET_MS), 0);
    assert_int_equal(mqr__budget_new(&b2, 2 * BUDGET_MS), 0);
    lua_State *l1 = new_state();
    lua_State *l2 = new_state();
    result_t r = call(b2, l2, "strings");
    assert_stopped(&r, 2 * BUDGET_MS, "strings, budget 2");
    r = call(b1, l1, "numfor");
    assert_stopped(&r, BUDGET_MS, "numfor, budget 1");
    assert_usable(b2, l2);
    assert_usable(b1, l1);
    assert_false(mqr__budget_tripped(b2));
    mqr__budget_free(b2);
    lua_close(l1);
    lua_close(l2);
    mqr__budget_free(b1);
}

/* An ordinary error is not a budget error, and a C message handler (as the
 * engine uses for tracebacks) still sees the budget error's text. */
static int l_msgh(lua_State *L)
{
    const char *m = lua_tostring(L, 1);
    lua_pushfstring(L, "traced: %s", m ? m : "?");
    return 1;
}

static void test_errors_told_apart(void **state)
{
    (void)state;
    mqr_budget_t *b;
    assert_int_equal(mqr__budget_new(&b, BUDGET_MS), 0);
    lua_State *L = new_state();
    assert_int_equal(luaL_dostring(L, "function H.fail() error('plain failure') end"), 0);
    result_t r = call(b, L, "fail");
    assert_int_not_equal(r.rc, 0);
    assert_false(r.tripped);
    assert_false(mqr__budget_tripped(b));
    assert_non_null(strstr(r.msg, "plain failure"));

    lua_pushcfunction(L, l_msgh);
    push_handler(L, "spin");
    mqr__budget_enter(b, L);
    int rc = lua_pcall(L, 0, 0, 1);
    assert_true(mqr__budget_leave(b));
    assert_int_equal(rc, LUA_ERRRUN);
    const char *m = lua_tostring(L, -1);
    assert_non_null(m);
    assert_non_null(strstr(m, "traced: "));
    assert_non_null(strstr(m, "handler exceeded its time budget"));
    lua_settop(L, 0);
    assert_usable(b, L);
    lua_close(L);
    mqr__budget_free(b);
}

int main(void)
{
    /* a budget that fails to stop a loop must fail the run, not hang it */
    alarm(100);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stuck_shapes_jit),   cmocka_unit_test(test_stuck_shapes_interp),
        cmocka_unit_test(test_nojit_flag),         cmocka_unit_test(test_in_time_never_trips),
        cmocka_unit_test(test_nested_stuck_inner), cmocka_unit_test(test_nested_one_clock),
        cmocka_unit_test(test_nested_other_state), cmocka_unit_test(test_lease_moves_on_close),
        cmocka_unit_test(test_free_before_close),  cmocka_unit_test(test_two_budgets),
        cmocka_unit_test(test_errors_told_apart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
