/*
 * script.h — the Lua side of an engine: rule states, protected calls,
 * routes, timers and hot reload.
 *
 * An engine has one script host. The host has one active Lua state (the
 * rules that serve traffic) and, during a reload, a second one being loaded.
 * What a script declares (routes, timers, session routes) is recorded as
 * pending while it loads and only activated when the whole script has run
 * cleanly; activation swaps the old declarations for the new ones in one go
 * on the loop thread, between two messages, so none is lost or handled twice.
 * Any failure before the swap closes the new state and leaves the old one
 * serving.
 */
#ifndef MQR_SCRIPT_H
#define MQR_SCRIPT_H

#include "admin.h"
#include "auth.h"
#include "decl.h"
#include "engine.h"
#include "holds.h"
#include "upstream.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdbool.h>
#include <stddef.h>

/* Errors that name the function (l_check.c): in the binding files the
 * lauxlib raising functions go through these, which put the running
 * function's full name ("mq.route", "queue:publish") in front of the
 * message. Numbers are not read from strings: qos = "1" is a mistake. */
int mqr__lua_error(lua_State *L, const char *fmt, ...);
int mqr__lua_argerror(lua_State *L, int narg, const char *extramsg);
int mqr__lua_typerror(lua_State *L, int narg, const char *tname);
void mqr__lua_checktype(lua_State *L, int narg, int t);
void mqr__lua_checkany(lua_State *L, int narg);
const char *mqr__lua_checklstring(lua_State *L, int narg, size_t *len);
const char *mqr__lua_optlstring(lua_State *L, int narg, const char *def, size_t *len);
lua_Number mqr__lua_checknumber(lua_State *L, int narg);
lua_Number mqr__lua_optnumber(lua_State *L, int narg, lua_Number def);
lua_Integer mqr__lua_checkinteger(lua_State *L, int narg);
lua_Integer mqr__lua_optinteger(lua_State *L, int narg, lua_Integer def);
void *mqr__lua_checkudata(lua_State *L, int narg, const char *tname);
/* Records name as the full name of the function at idx (the first name a
 * function gets stays). [-0, +0] */
void mqr__lua_name_fn(lua_State *L, int idx, const char *name);
/* Names every function of the table at idx "prefix.key", and those of its
 * tables down to depth more levels. [-0, +0] */
void mqr__lua_name_table(lua_State *L, int idx, const char *prefix, int depth);
#ifndef MQR_LUA_NO_CHECK_MACROS
#undef luaL_error
#define luaL_error(...) mqr__lua_error(__VA_ARGS__)
#define luaL_argerror(L, n, m) mqr__lua_argerror(L, n, m)
#define luaL_typerror(L, n, t) mqr__lua_typerror(L, n, t)
#define luaL_checktype(L, n, t) mqr__lua_checktype(L, n, t)
#define luaL_checkany(L, n) mqr__lua_checkany(L, n)
#define luaL_checklstring(L, n, l) mqr__lua_checklstring(L, n, l)
#define luaL_optlstring(L, n, d, l) mqr__lua_optlstring(L, n, d, l)
#define luaL_checknumber(L, n) mqr__lua_checknumber(L, n)
#define luaL_optnumber(L, n, d) mqr__lua_optnumber(L, n, d)
#define luaL_checkinteger(L, n) mqr__lua_checkinteger(L, n)
#define luaL_optinteger(L, n, d) mqr__lua_optinteger(L, n, d)
#define luaL_checkudata(L, n, t) mqr__lua_checkudata(L, n, t)
#endif

typedef struct mqr_script mqr_script_t;
typedef struct l_state l_state_t;
typedef struct l_route l_route_t;
typedef struct l_timer l_timer_t;
typedef struct l_upstream l_upstream_t;
typedef struct l_listen l_listen_t;
typedef struct l_sub l_sub_t;
typedef struct l_iter l_iter_t;
typedef struct l_qhost l_qhost_t;
typedef struct l_cfunc l_cfunc_t;
struct mqr_queue;

/* A route: filter -> Lua handler, optionally bound to one upstream session
 * (then only that session's messages reach it). */
struct l_route {
    mqr_subscriber_t base;
    l_state_t *st;
    l_route_t *next;
    mqr_trie_entry_t *entry; /* NULL until activated, and after stop */
    l_upstream_t *upstream;  /* NULL = every origin; else only its messages */
    char *filter;
    char *dead_letter;       /* topic for messages the handler failed on; NULL = drop */
    char *name;              /* for logs and stats: "route 'sensors/#' (rules.lua:12)" */
    int fn_ref;              /* LUA_NOREF when the route feeds a queue */
    struct mqr_queue *queue; /* a route into a queue (a reference), else NULL */
    int queue_priority;      /* its publish options */
    int64_t queue_ttl_ms;
    int qos;
    bool stopped;
    uint64_t calls;
    uint64_t errors;
    uint64_t budget_errors;
    uint64_t dead_lettered;
    mqr_admin_hist_t latency; /* handler time, recorded while the admin API runs */
    /* async = true (l_async.c): handlers that wait run in coroutines, at
     * most `concurrency` at once; the next messages wait in `pending` (a
     * ring of references, at most max_pending), and while any wait the
     * publishers feeding them are held (holds.h) */
    bool async;
    uint32_t concurrency, max_pending, running;
    mqr_msg_t **pending;
    uint32_t pending_head, pending_n, pending_cap;
    mqr_holds_t holds;
    uint64_t dropped;   /* refused: pending full (the publisher was told no room) */
    uint64_t abandoned; /* waiting or pending when the route stopped or its state closed */
};

struct l_timer {
    uv_timer_t handle;
    l_state_t *st;
    l_timer_t *next;
    int fn_ref;
    uint64_t due_ms;    /* first run, ms from now */
    uint64_t repeat_ms; /* 0 = once */
    bool started;
    bool stopped;
    uint64_t fake_due; /* fake clock: when it fires next (host->clock_ms scale) */
    uint64_t seq;      /* fake clock: declaration order, breaks ties */
    l_timer_t **ud;    /* the Lua handle's slot, cleared when either side goes */
    char *name;
    uint64_t calls;
    uint64_t errors;
};

/* A script's handle on an upstream session. Sessions are kept across
 * reloads when the new script declares the same name and configuration. */
struct l_upstream {
    mqr_script_t *host;
    l_upstream_t *next; /* host->upstreams */
    mqr_upstream_t *u;
    char *name;
    char *config_key;      /* every setting joined: equal key = same session */
    l_state_t *claimed_by; /* newest state that declared it */
    l_state_t *created_by; /* the loading state that created it, until it takes over */
};

/* A listener a script declared (mq.listen). Kept across reloads when the new
 * script declares the same configuration, like sessions (decl.h). */
struct l_listen {
    l_decl_t d; /* first: host->listens; d.name is "tls 127.0.0.1:8883" (for
                   messages), d.config_key every setting joined */
    mqr_script_t *host;
    mqr_listener_t *l; /* NULL while deferred, or when a deferred start failed */
    char *strs[4];     /* host, cert, key, cafile: owned copies for a deferred start */
    mqr_listen_options_t opts;
    bool deferred; /* its port is held by a listener the new script drops */
};

struct l_state {
    lua_State *L;
    mqr_script_t *host;
    char *chunkname;
    l_route_t *routes;       /* in declaration order */
    l_route_t **routes_tail; /* where the next one goes: declaring stays O(1) */
    l_timer_t *timers;
    l_sub_t *subs;   /* buffered subscribers (l_subscribe.c) */
    l_iter_t *iters; /* buffers of the session iterators (l_iter.c) */
    int traceback_ref;
    int lmsg_make_ref, lmsg_deliver_ref; /* mqr__lmsg_register */
    struct l_delivery *delivering;       /* messages being handed to handlers, innermost first */
    int async_run_ref, async_step_ref, async_wrap_ref; /* lua/host/async.lua (l_async.c) */
    struct l_job *jobs;   /* async routes' messages whose handler waits */
    struct l_wait *waits; /* coroutines waiting for a C answer */
    struct l_sink *sinks; /* sinks it opened (l_sink.c) */
    bool ending;          /* mqr__state_close runs: no more Lua for it */
    int env_ref;
    char **modules; /* the files its require loaded while the script ran */
    size_t n_modules;
    bool active;
    bool closing;
    unsigned open_timers; /* timers whose handles are not closed yet */
};

struct mqr_script {
    mqr_engine_t *e;
    l_state_t *cur;
    l_state_t *loading;
    l_upstream_t *upstreams; /* upstream broker sessions the scripts declared (l_upstream.c) */
    l_decl_list_t listens;   /* of l_listen_t */
    l_qhost_t *qhost;        /* queues the scripts declared (l_queue.c); NULL until the first */
    l_cfunc_t *cfuncs;       /* C functions the host registered (l_cfunc.c, mqrouter_lua.h) */
    char *path;              /* the file loaded last, for reload and watching */
    /* Watching: the script and every file its require loaded (any version
     * of the rules, failed loads too), one uv_fs_event per directory. */
    struct l_watch *watches; /* the directories */
    char **watch_files;      /* "dir/name" of each file watched */
    size_t n_watch_files;
    bool watching;
    uv_timer_t debounce;
    bool debounce_init;
    unsigned char file_digest[32];
    struct mqr_budget *budget;
    unsigned call_depth;
    uint64_t reloads;
    uint64_t reload_failures;
    uint64_t handler_errors;
    uint64_t budget_errors;
    uint64_t reload_dropped; /* buffered messages a reload found no taker for */
    char last_error[512];    /* first line of the last failed call's error */
    /* The last failed reload: its error (file:line: message, no traceback)
     * and when (ms since the epoch); kept after a later success. */
    char last_reload_error[512];
    uint64_t last_reload_error_at;
    bool reload_failing; /* the last reload failed and none succeeded since */
    /* Fake clock (busted host, mqrouter.testing): while on, mq.now() and the
     * time of messages published from Lua or the host read clock_ms, and
     * script timers are not started on the loop: mqr__script_advance()
     * fires them as it moves clock_ms forward. Off (the default) changes
     * nothing. */
    bool fake_clock;
    uint64_t clock_ms;
    /* Fake sinks (mqrouter.testing): while on, mq.file/http/redis/pg in
     * every new state make fakes that record their calls (lua/host/sinks.lua). */
    bool fake_sinks;
    uint64_t timer_seq;
    struct l_kv *kv;      /* the key-value store (l_kv.c), NULL until first used */
    uint64_t auth_errors; /* authenticate/authorize calls that failed (l_auth.c) */
};

/* The Lua stdlib directory: $MQROUTER_LUA_DIR, else the installed one
 * compiled in (MQR_STDLIB_DIR), else the source tree's (a build tree never
 * installed). Use this, not the macros. */
const char *mqr__script_stdlib_dir(void);

/* The host's registered C functions (l_cfunc.c): put into st's rules API
 * table before its script runs (MQR_ESCRIPT, *errmsg saying which, when one
 * clashes with a built-in), and freed with the host. */
int mqr__lcfunc_install(mqr_script_t *h, l_state_t *st, char **errmsg);
void mqr__lcfunc_free_all(mqr_script_t *h);

/* The host of engine e, created on first use. NULL when out of memory. */
mqr_script_t *mqr__script_host(mqr_engine_t *e);

/* Fake clock: turns it on at start_ms (ms since the epoch). */
void mqr__script_fake_clock(mqr_script_t *h, uint64_t start_ms);
/* Moves the fake clock forward by ms, firing every timer that falls due on
 * the way in time order (declaration order for equal times), the clock
 * reading each timer's due time while it runs; the loop runs one
 * non-blocking turn after each so work deferred to a later turn happens.
 * Returns the number of timer calls. */
unsigned mqr__script_advance(mqr_script_t *h, uint64_t ms);
/* Now in ms since the epoch: the fake clock when on, else the wall clock. */
uint64_t mqr__script_now_ms(const mqr_script_t *h);

/* The key-value store (l_kv.c): adds kv to the rules table on top
 * [-0, +0]; free releases it with the host. */
void mqr__lkv_open(lua_State *L);
void mqr__lkv_free(mqr_script_t *h);

/* The rules API table of a rules state ("mqrouter" inside scripts). [-0, +1] */
int mqr__rules_open(lua_State *L);
/* The state whose rules are running L. */
l_state_t *mqr__state_of(lua_State *L);

/* Calls the function under nargs arguments on top of L, protected, with
 * traceback and the handler budget. On error logs "<what> failed: <err>",
 * counts it in *errors (and *budget_errors when the budget tripped) and
 * returns a negative code (MQR_ESCRIPT or MQR_EBUDGET). Pops function and
 * arguments. [-(nargs+1), +0] */
int mqr__script_call(l_state_t *st, int nargs, const char *what, uint64_t *errors,
                     uint64_t *budget_errors);
/* The same, keeping nresults results on the stack when it returns 0.
 * [-(nargs+1), +nresults on success, +0 on error] */
int mqr__script_call_results(l_state_t *st, int nargs, int nresults, const char *what,
                             uint64_t *errors, uint64_t *budget_errors);
/* The same as mqr__script_call for a caller that pushed st's traceback
 * function (mqr__script_push_traceback) before the function: the hot
 * path's variant, which moves no arguments. [-(nargs+2), +0] */
void mqr__script_push_traceback(l_state_t *st);
int mqr__script_call_pushed(l_state_t *st, int nargs, const char *what, uint64_t *errors,
                            uint64_t *budget_errors);

/* Messages in Lua are tables of copies (l_message.c). mqr__lmsg_register
 * sets up a state's metatable and returns refs to two Lua functions:
 * make(<the MQR_LMSG_NARGS values of mqr__lmsg_args>) -> message, and
 * deliver(handler, <those values>), which calls the handler with one. */
#define MQR_LMSG_NARGS 8
void mqr__lmsg_register(lua_State *L, int *make_ref, int *deliver_ref);
/* Pushes the values make and deliver take for msg; returns their count.
 * [-0, +MQR_LMSG_NARGS] */
int mqr__lmsg_args(lua_State *L, const mqr_msg_t *msg);
/* Pushes a message table for msg (a rules state's L). [-0, +1] */
void mqr__lmsg_push(lua_State *L, const mqr_msg_t *msg);
/* Calls the handler fn_ref of st with a message table for msg, as
 * mqr__script_call does (what, errors, budget_errors as there). While it
 * runs, mqr__lmsg_build of an unchanged table gives back msg itself. */
int mqr__lmsg_deliver(l_state_t *st, int fn_ref, mqr_msg_t *msg, const char *what, uint64_t *errors,
                      uint64_t *budget_errors);

/* Declares a route (rules API and upstream session handles; up: only
 * that session's messages, NULL: every origin). fn_idx: the handler,
 * or a queue (mq.queue) the route publishes into. opts_idx: a table
 * {qos, dead_letter [, priority, ttl for a queue]} or none. Raises on
 * misuse. [-0, +1] */
int mqr__route_declare(lua_State *L, l_state_t *st, const char *filter, int fn_idx,
                       l_upstream_t *up, int opts_idx);

/* Publishes msg, which r's handler failed on (error), to r's dead-letter
 * topic, with user properties naming the topic, the route and the error. */
void mqr__route_dead_letter(l_route_t *r, mqr_msg_t *msg, const char *error);

/* Egress clients (l_sink*.c): closes the sinks a state opened. */
void mqr__lsink_state_close(l_state_t *st);
/* Registers the sinks' metatables; then, the rules table on top, runs
 * lua/host/sinks.lua. */
void mqr__lsink_file_register(lua_State *L);
void mqr__lsink_open(lua_State *L);
int mqr__lsink_file_new(lua_State *L);
void mqr__lsink_http_register(lua_State *L);
void mqr__lsink_redis_register(lua_State *L);
void mqr__lsink_pg_register(lua_State *L);
int mqr__lsink_pg_new(lua_State *L);
int mqr__lsink_redis_new(lua_State *L);
int mqr__lsink_http_new(lua_State *L);

/* Handlers that wait (l_async.c, lua/host/async.lua). */
/* Runs async.lua in a new state (the rules table on top). [-0, +0] */
void mqr__lasync_open(lua_State *L);
/* An async route's delivery: starts the handler, or keeps msg pending. */
int mqr__lasync_deliver(l_route_t *r, mqr_msg_t *msg);
/* A route stopped: its pending messages go (counted abandoned). */
void mqr__lasync_route_stop(l_route_t *r);
/* A state closes: its waiting jobs and pending messages go. */
void mqr__lasync_state_close(l_state_t *st);
/* A reload: what the old state's async routes had not finished (the
 * messages of running handlers, which start again, then the pending ones)
 * goes to the new state's route with the same filter and session; then,
 * once st serves, wake starts them. */
void mqr__lasync_takeover(l_state_t *st, l_state_t *old);
void mqr__lasync_wake(l_state_t *st);
/* Wraps the function on top (a queue consumer's handler, given a list of
 * messages with batch) so that it may wait; name is for its error lines.
 * [-1, +1] */
void mqr__lasync_wrap_consumer(lua_State *L, const char *name, bool batch);

/* A coroutine waiting for an answer from C (a sink). mqr__lwait_begin, in
 * a C function called from a coroutine (raises "<what> must be called from
 * a coroutine..." otherwise), keeps the coroutine; the C function then
 * returns lua_yield(L, 0). The answer comes with mqr__lwait_resume, once:
 * push(L, arg) pushes the values the call returns (their count). When the
 * request is refused before the yield, mqr__lwait_cancel forgets it. The
 * state closing or gone: no Lua runs, the waiter is freed. */
typedef struct l_wait l_wait_t;
l_wait_t *mqr__lwait_begin(lua_State *L, const char *what);
void mqr__lwait_cancel(l_wait_t *w);
void mqr__lwait_resume(l_wait_t *w, int (*push)(lua_State *L, void *arg), void *arg);

/* Timers: every/after. A timer lives until it fired once (after), is
 * stopped, or its state closes. */
int mqr__timer_declare(lua_State *L, l_state_t *st, double seconds, bool repeat, int fn_idx);
void mqr__timer_release(l_timer_t *t);

/* Upstream broker sessions (bindings/l_upstream*.c): mqrouter's own
 * connections to other brokers, not the persistent sessions of our
 * listeners' clients. */
void mqr__lupstream_register(lua_State *L);
int mqr__lupstream_new(lua_State *L);         /* mq.upstream{...} */
int mqr__lupstream_new_session(lua_State *L); /* mq.session{...}: the older name */
void mqr__lupstream_activate(mqr_script_t *h, l_state_t *st);
void mqr__lupstream_abandon(mqr_script_t *h, l_state_t *st);
void mqr__lupstream_close_all(mqr_script_t *h);
/* Adds sessions, session_status, on, spawn, wait_ready, handle... (the Lua
 * half, lua/host/upstream.lua) to the rules table on top and installs the
 * state's event dispatcher. [-0, +0] */
void mqr__lupstream_open(lua_State *L);

/* Listeners (bindings/l_listen.c). */
void mqr__llisten_register(lua_State *L);
int mqr__llisten_new(lua_State *L); /* mq.listen{...} */
void mqr__llisten_activate(mqr_script_t *h, l_state_t *st);
void mqr__llisten_abandon(mqr_script_t *h, l_state_t *st);
void mqr__llisten_close_all(mqr_script_t *h);

/* Queues (bindings/l_queue.c). The queues belong to the host and are kept
 * across reloads like listeners; consumers belong to a state: started when
 * it takes over, cancelled when it closes. */
void mqr__lqueue_register(lua_State *L);
/* mq.subscribe(filter, fn [, opts]) (l_subscribe.c) */
int mqr__lsub_new(lua_State *L);
void mqr__lsub_register(lua_State *L);
/* st takes over from old (NULL at the first load), before old closes: st's
 * subscribers start, each taking over the old subscriber declared with the
 * same filter and options (the n-th such declaration the n-th), buffer,
 * counters and all. What waits in an old subscriber nobody takes over goes,
 * oldest first, to the first of st's subscribers (declaration order) whose
 * filter matches the topic and has room; the rest is dropped, counted in
 * host->reload_dropped and logged at warning level. */
void mqr__lsub_takeover(l_state_t *st, l_state_t *old);
void mqr__lsub_state_close(l_state_t *st); /* before its lua_close */
/* The buffers of the session iterators (l_iter.c). new: iter_new(source |
 * nil, filter, max, wake) for upstream.lua [-0, +1]. takeover: like
 * mqr__lsub_takeover for iterators, pairing by (session, filter, max) and
 * handing the rest to a new iterator whose filter and session match. wake:
 * after a takeover, calls the wake function of every iterator of st that
 * holds messages. state_close: frees st's buffers, before its lua_close. */
void mqr__liter_register(lua_State *L);
int mqr__liter_new(lua_State *L);
void mqr__liter_takeover(l_state_t *st, l_state_t *old);
void mqr__liter_wake(l_state_t *st);
void mqr__liter_state_close(l_state_t *st);
int mqr__lqueue_new(lua_State *L);         /* mq.queue(name [, opts]) */
int mqr__lqueue_transaction(lua_State *L); /* mq.transaction([timeout]) */
int mqr__lqueue_names(lua_State *L);       /* mq.queues() */
int mqr__lqueue_health(lua_State *L);      /* mq.queues_health() */
/* The queue of the mq.queue handle at idx (a reference for the caller), or
 * NULL when idx holds no queue handle. Raises when the queue is closed. */
struct mqr_queue *mqr__lqueue_take(lua_State *L, int idx);
/* Reads a priority (0..4 or "lowest".."highest") at idx; raises. */
int mqr__lqueue_priority(lua_State *L, int idx);
/* Pushes a queue's stats table; nil, err, name when closed. Returns the
 * number of values pushed. */
int mqr__lqueue_push_stats(lua_State *L, struct mqr_queue *q);
void mqr__lqueue_activate(mqr_script_t *h, l_state_t *st);
void mqr__lqueue_abandon(mqr_script_t *h, l_state_t *st);
void mqr__lqueue_state_close(l_state_t *st); /* before its lua_close */
void mqr__lqueue_close_all(mqr_script_t *h);

/* Message fields for other userdata that carry a message (l_message.c):
 * pushes field k of msg and returns 1, or returns 0 for no such field. */
int mqr__lmsg_field(lua_State *L, const mqr_msg_t *msg, const char *k);
/* Whether the value at idx is a message table. */
bool mqr__lmsg_is(lua_State *L, int idx);
/* A new engine message (one reference, the caller's) from what the message
 * table at idx holds now, or NULL when idx is not a message table. Raises
 * when a field was changed into something no message can carry. */
mqr_msg_t *mqr__lmsg_build(lua_State *L, int idx);

/* Turns a table of MQTT v5 properties at idx into raw property bytes
 * (malloc'd into *out). Returns 0 or raises on misuse. */
int mqr__lprops_encode(lua_State *L, int idx, uint8_t **out, size_t *len);
/* Properties for a message being built, from a table at idx (nil: none):
 * sets in->props, props_len and expiry_s; *props gets the buffer for the
 * caller to free (NULL when none). fname names the caller in errors. */
void mqr__lprops_init(lua_State *L, int idx, const char *fname, mqr_msg_init_t *in,
                      uint8_t **props);
/* The Message Expiry Interval among raw v5 properties, 0 when none. */
uint32_t mqr__lprops_expiry(const uint8_t *props, size_t len);
/* Pushes a table of the raw v5 properties. [-0, +1] */
void mqr__lprops_push(lua_State *L, const uint8_t *props, size_t len);

/* Pushes the engine's and st's counters (routes of st). [-0, +1] */
void mqr__lstats_push(lua_State *L, mqr_engine_t *e, const l_state_t *st);

/* Authentication hooks and users (bindings/l_auth.c): adds authenticate,
 * authorize and users to the rules table on top [-0, +0]; activate turns
 * the host's hooks on for what st declares (state activation); close turns
 * them off. authenticate/authorize are the host operations (engine.h). */
void mqr__lauth_open(lua_State *L);
void mqr__lauth_activate(mqr_script_t *h, l_state_t *st);
void mqr__lauth_close(mqr_script_t *h);
int mqr__lauth_authenticate(void *host, const mqr_auth_client_t *c);
int mqr__lauth_authorize(void *host, const mqr_auth_client_t *c, int action, const char *topic,
                         size_t topic_len, int qos, bool retain);

/* The admin API (bindings/l_admin.c): what it asks the host (engine.h host
 * operations), and mq.admin{host, port, tokens, tokens_file}. */
void mqr__ladmin_rules_info(void *host, mqr_admin_rules_info_t *out);
void mqr__ladmin_foreach_route(void *host, void (*fn)(void *arg, const mqr_admin_route_t *r),
                               void *arg);
size_t mqr__ladmin_lua_memory(void *host);
int mqr__ladmin(lua_State *L);

/* The engine's script host, NULL when none was made. */
static inline mqr_script_t *mqr__script_of(const mqr_engine_t *e)
{
    const mqr_host_ops_t *ops;
    return mqr__engine_host(e, &ops);
}

/* Hands the event table on top of st's stack to its mq.on handlers (the
 * dispatcher of l_upstream_events.c). [-1, +0] */
void mqr__lupstream_dispatch(l_state_t *st);

/* Devices, topics, retained messages (bindings/l_registry.c): adds
 * devices, topics, retained and users.tenant to the rules table on top and
 * observes the registry for device events [-0, +0]; close stops observing. */
void mqr__lregistry_open(lua_State *L);
void mqr__lregistry_close(mqr_script_t *h);

/* Pushes msg and the traceback of L1 from level on one line: "msg | traceback:
 * file:line: in function 'f' <- file:line: in main chunk" (a log entry is one
 * line; line breaks in msg become spaces). [-0, +1] */
#define MQR_TRACEBACK_SEP " | traceback: "
void mqr__lua_traceback_line(lua_State *L, lua_State *L1, const char *msg, int level);
/* traceback([co,] msg): the same, callable from Lua (debug.traceback's form). */
int mqr__lua_traceback_fn(lua_State *L);

/* Pushes nil, "ENAME: text", "ENAME" and returns 3 (the luv convention). */
int mqr__lua_fail(lua_State *L, int err, const char *detail);
/* Raises "<fname>: unknown option 'x' (it takes a, b, ...)" when the table at
 * idx has a key not in known (NULL-terminated): a misspelt option would
 * silently be a default. [-0, +0] */
void mqr__lua_check_options(lua_State *L, int idx, const char *fname, const char *const *known);

/* One option of an options table, for mqr__lua_read_options: its key, its
 * type, the field of the caller's struct it is stored in, its range and its
 * default. The table is the one list of what a function takes: the order
 * of its entries is the order "unknown option" messages list them in. */
typedef enum {
    MQR_LOPT_TAKEN,  /* allowed, read by the caller itself (a table, a choice) */
    MQR_LOPT_STRING, /* const char *; the options table keeps the string alive */
    MQR_LOPT_BOOL,   /* bool: true or false */
    MQR_LOPT_INT,    /* an integer in [min, max], in an integer field of any size */
    MQR_LOPT_NUMBER, /* double, in [min, max] */
} mqr_lopt_type_t;

enum {
    MQR_LOPT_BOOL01 = 1, /* INT: true and false read as 1 and 0 (clean, retain) */
};

typedef struct {
    const char *key;
    mqr_lopt_type_t type;
    size_t offset, size; /* the field: MQR_LOPT(key, type, struct, field) */
    double min, max;     /* INT, NUMBER: the range, both ends included */
    double def;          /* BOOL, INT, NUMBER: the value when the key is absent */
    const char *sdef;    /* STRING: the value when the key is absent */
    unsigned flags;      /* MQR_LOPT_BOOL01 */
    const char *unit;    /* after the range in the error, e.g. " bytes" */
} mqr_lopt_t;

#define MQR_LOPT(k, t, T, f)                                                                       \
    .key = (k), .type = (t), .offset = offsetof(T, f), .size = sizeof(((T *)0)->f)

/* Reads the options table at idx into out by opts (n entries): a key not in
 * opts raises "<fname>: unknown option 'k' (it takes ...)"; a value of the
 * wrong type "<fname>: option 'k' must be a string, not a number" (true or
 * false / an integer / a number); a value out of range "<fname>: option 'k'
 * out of range: 0 given, it takes 1 .. 100<unit>". An absent key stores its
 * default; a TAKEN key stores nothing. idx not a table raises "<fname>:
 * options must be a table, not a <type>". On a raise, out may be partly
 * written. [-0, +0] */
void mqr__lua_read_options(lua_State *L, int idx, const char *fname, const mqr_lopt_t *opts,
                           size_t n, void *out);
/* The qos at idx: def when nil, else the number 0, 1 or 2; anything else
 * (a string "1" too) raises "<fname>: qos must be ...". [-0, +0] */
int mqr__lua_opt_qos(lua_State *L, int idx, const char *fname, int def);
/* Reads publish options {qos, retain, properties} at idx (none or nil: the
 * defaults) into in; known lists the options fname takes (NULL: those three),
 * an unknown one raises. *props: the encoded properties, for the caller to
 * free. Raises on misuse, naming fname. */
int mqr__publish_opts(lua_State *L, int idx, const char *fname, const char *const *known,
                      mqr_msg_init_t *in, uint8_t **props);
/* Registers metatable name for a userdata type: methods as its __index
 * table, and __gc / __tostring when given (may be NULL). [-0, +0] */
void mqr__lua_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc,
                    lua_CFunction tostring);

/* A user property a dead letter gets (dead_letter.c). */
typedef struct {
    const char *key;
    const char *value;
    size_t len;
} mqr_luser_prop_t;
/* Publishes msg's payload, QoS, expiry and properties on topic, with the n
 * extra user properties, as origin "lua" named origin_name. What
 * mqr__engine_publish_data returns, or MQR_ENOMEM. */
int mqr__ldead_letter(mqr_engine_t *e, const mqr_msg_t *msg, const char *topic,
                      const char *origin_name, const mqr_luser_prop_t *extra, size_t n);
/* A new message (one reference): msg with the n user properties added to
 * its properties; NULL without memory. */
mqr_msg_t *mqr__lmsg_with_user_props(const mqr_msg_t *msg, const mqr_luser_prop_t *extra, size_t n);
/* The (first) user property key of msg: true with its value (not
 * NUL-terminated) and length. */
bool mqr__lmsg_user_prop(const mqr_msg_t *msg, const char *key, const char **value, size_t *len);

#endif
