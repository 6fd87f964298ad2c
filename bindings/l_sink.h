/*
 * l_sink.h — what the Lua faces of the egress clients share (l_sink.c):
 * the userdata that owns a client, the state's list of them, their
 * statistics table, the engine's list for /metrics, and sink_up/sink_down
 * events. Each client's own file (l_sink_file.c, ...) adds its
 * constructor and methods.
 *
 * A sink belongs to the state that opened it: it closes with that state
 * (a reload opens the new script's), or on close(), or when collected.
 */
#ifndef MQR_L_SINK_H
#define MQR_L_SINK_H

#include "script.h"
#include "sink.h"

typedef struct l_sink l_sink_t;
struct l_sink {
    l_state_t *st;
    l_sink_t *prev, *next; /* st->sinks */
    mqr_sink_t *sink;      /* the client's common part */
    void *obj;             /* the client (mqr_file_t *...) */
    void (*close)(void *obj);
    l_sink_t **ud; /* the Lua handle's slot, cleared at close */
};

/* Wraps an open client in a new handle with metatable mt (its methods),
 * adds it to the state's and the engine's lists and wires its events.
 * On failure closes obj and raises. [-0, +1] */
l_sink_t *mqr__lsink_push(lua_State *L, const char *mt, mqr_sink_t *sink, void *obj,
                          void (*close)(void *obj));

/* The open sink at idx with metatable mt, or a raised error (closed too). */
l_sink_t *mqr__lsink_check(lua_State *L, int idx, const char *mt);

/* Options of a constructor (its table at index 1; `what` names it in
 * errors: "mq.http"). Each raises on a bad value and gives 0 / NULL for an
 * absent one. */
uint32_t mqr__lsink_opt_ms(lua_State *L, const char *what, const char *key, double max_s);
uint64_t mqr__lsink_opt_count(lua_State *L, const char *what, const char *key, double min,
                              double max);
const char *mqr__lsink_opt_str(lua_State *L, const char *what, const char *key);
/* Raises when the state already opened a sink of that name. */
void mqr__lsink_check_name(lua_State *L, const char *what, const char *name);
/* A sink's metatable: its own methods plus close, stats, name and __gc. */
void mqr__lsink_register(lua_State *L, const char *mt, const luaL_Reg *own);

/* Shared methods: close(), stats(), name(). */
int mqr__lsink_close_m(lua_State *L);
int mqr__lsink_stats_m(lua_State *L);
int mqr__lsink_name_m(lua_State *L);
/* __gc: a handle collected closes its sink. */
int mqr__lsink_gc(lua_State *L);

/* The statistics table of s. [-0, +1] */
void mqr__lsink_push_stats(lua_State *L, const mqr_sink_t *s);

/* Returns nil, "ENAME: reason", "ENAME", "retry"|"permanent" for a failed
 * request (the luv convention plus whether trying again may help). */
int mqr__lsink_fail(lua_State *L, int err, const char *reason, mqr_sink_outcome_t outcome);

/* The end of a C method that gave a request to its client: rc < 0 is a
 * refusal (w forgotten; EINVAL "permanent" with why, else "retry"); else,
 * without a waiter, true at once; with one, the coroutine yields until the
 * answer. Returns what the method returns. */
int mqr__lsink_given(lua_State *L, int rc, l_wait_t *w, const char *why);

/* A request sent without waiting (send) failed: counted by the sink
 * already; logged here, the 1st, 2nd, 4th... time. */
void mqr__lsink_note_failure(const mqr_sink_t *s, const char *reason);

#endif
