/*
 * budget.h — the time budget of calls into Lua: a handler that runs longer
 * than its budget is stopped with the Lua error "handler exceeded its time
 * budget of N ms", the engine keeps serving and the state stays usable.
 *
 * Wrap every protected call from C in enter/leave. Entering and leaving
 * cost a few plain stores: a watchdog thread polls a sequence number and,
 * when one call has been running for the whole budget, arms a count hook on
 * the state (and, for the state that keeps the JIT, makes compiled code exit
 * to the interpreter through LuaJIT's profiler; see docs/handler-budget.md).
 * The hook raises the budget error on every instruction until the outermost
 * call returns, so a pcall() in the handler cannot swallow it.
 *
 * Threads: a budget and the states entered with it belong to one thread
 * (the loop's); only the watchdog, which budget.c owns, runs elsewhere.
 * States may be closed (lua_close) at any time outside a call, before or
 * after the budget is freed. Must not: be entered from two threads, or be
 * used by a state whose Lua code can reach debug.sethook, jit.* or
 * jit.profile (the sandbox hides them). Only bindings/ includes this header.
 */
#ifndef MQR_BUDGET_H
#define MQR_BUDGET_H

#include <lua.h>

#include <stdatomic.h>
#include <stdbool.h>

/* Don't keep the JIT for states entered with this budget: run them in the
 * interpreter only. The default keeps the JIT for one state per process. */
#define MQR_BUDGET_NOJIT 0x1u

/* What a state gets, see mqr__budget_mode(). */
#define MQR_BUDGET_UNBOUND 0 /* never entered with this budget (or closed) */
#define MQR_BUDGET_JIT 1     /* JIT on, compiled code checks for the profiler */
#define MQR_BUDGET_INTERP 2  /* JIT off: the count hook alone stops it */

typedef struct mqr_budget mqr_budget_t;

/* The part the inline functions touch; the rest lives in budget.c. */
struct mqr_budget {
    /* odd while an outermost call runs; written by the loop thread only */
    _Atomic unsigned long seq;
    /* seq of the call the watchdog stopped; written by the watchdog */
    _Atomic unsigned long trip_seq;
    /* seq of the call the hook raised the budget error in; loop thread */
    _Atomic unsigned long hook_seq;
    unsigned depth;   /* nesting of enter/leave */
    lua_State *cur_L; /* state of the last outermost call; NULL = look it up */
    bool poll_lease;  /* cur_L runs without JIT but could take the lease */
    bool last_tripped;
};

/* Set when the state that kept the JIT is closed: the next outermost enter of
 * a state that wants the JIT takes it. */
extern atomic_bool mqr__budget_lease_free;

/* Creates a budget of ms milliseconds (0 = 1000) and starts its watchdog.
 * flags: MQR_BUDGET_*. Returns 0, MQR_EINVAL, MQR_ENOMEM or a negated errno.
 * Loop thread. */
int mqr__budget_new(mqr_budget_t **out, unsigned ms);
int mqr__budget_new_ex(mqr_budget_t **out, unsigned ms, unsigned flags);

/* Stops the watchdog and frees the budget. Outside any call. States that
 * were entered with it stay usable (no budget then). NULL is a no-op. */
void mqr__budget_free(mqr_budget_t *b);

/* Slow paths of enter/leave; call only through the inline functions. */
void mqr__budget_bind(mqr_budget_t *b, lua_State *L);
void mqr__budget_nest(mqr_budget_t *b, lua_State *L);
bool mqr__budget_settle(mqr_budget_t *b, unsigned long seq);

/* Before a lua_pcall from C. Only the outermost call starts the clock: a
 * handler that publishes and so runs another handler shares it. The first
 * call with a new state prepares that state (registry entry, JIT mode), so
 * pass the state's main lua_State, the same one every time. */
static inline void mqr__budget_enter(mqr_budget_t *b, lua_State *L)
{
    if (b->depth++ != 0) {
        /* a nested call into another state: make sure a trip reaches it */
        if (__builtin_expect(L != b->cur_L, 0)) mqr__budget_nest(b, L);
        return;
    }
    if (__builtin_expect(L != b->cur_L ||
                             (b->poll_lease &&
                              atomic_load_explicit(&mqr__budget_lease_free, memory_order_relaxed)),
                         0))
        mqr__budget_bind(b, L);
    unsigned long s = atomic_load_explicit(&b->seq, memory_order_relaxed);
    atomic_store_explicit(&b->seq, s + 1, memory_order_relaxed);
}

/* After that lua_pcall. True when the budget fired during the call: if the
 * pcall failed, its error is the budget error (or grew from it): count it as
 * MQR_EBUDGET. (A pcall that still returned 0 finished anyway: a C function
 * swallowed the error and no Lua ran after it.) For a nested call, true when
 * the outermost call has been stopped and the error is unwinding. */
static inline bool mqr__budget_leave(mqr_budget_t *b)
{
    unsigned long s = atomic_load_explicit(&b->seq, memory_order_relaxed);
    if (--b->depth != 0) return atomic_load_explicit(&b->hook_seq, memory_order_relaxed) == s;
    atomic_store_explicit(&b->seq, s + 1, memory_order_relaxed);
    if (__builtin_expect(atomic_load_explicit(&b->trip_seq, memory_order_relaxed) == s, 0))
        return mqr__budget_settle(b, s);
    b->last_tripped = false;
    return false;
}

/* Whether the last outermost call was stopped by the budget (inside a call:
 * whether the running outermost call has been stopped). */
bool mqr__budget_tripped(const mqr_budget_t *b);

/* MQR_BUDGET_JIT, _INTERP or _UNBOUND for L. Loop thread, outside calls. */
int mqr__budget_mode(mqr_budget_t *b, lua_State *L);

/* The budget in milliseconds. */
unsigned mqr__budget_ms(const mqr_budget_t *b);

#endif
