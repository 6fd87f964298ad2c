/*
 * l_sink_file.c — mq.file{...}: the file sink (core/sink/file.h) in Lua.
 *
 * The handle's C methods take bytes: _write(s) returns at once (true, or
 * nil, "EFULL..."), _write_wait(s) and flush() wait in a coroutine until
 * the record (or everything before) is on disk. lua/host/sinks.lua adds
 * write(v) and write_sync(v), which encode tables as JSON first.
 * Loop thread. Must not: resume a coroutine of a state that is ending.
 */
#include "l_sink.h"

#include "file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FILE_MT "mqrouter.sink.file"

static void file_close(void *obj)
{
    mqr__file_close(obj);
}

/* mq.file{ path, format = "jsonl"|"raw", name, rotate_bytes, rotate_seconds,
 * keep, fsync = "batch"|"interval"|"none", fsync_interval, max_queued,
 * max_queued_bytes } -> file sink */
int mqr__lsink_file_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    static const char *const known[] = {
        "path", "format", "name",           "rotate_bytes", "rotate_seconds",
        "keep", "fsync",  "fsync_interval", "max_queued",   "max_queued_bytes",
        NULL};
    mqr__lua_check_options(L, 1, "mq.file", known);
    mqr_file_opts_t o = {0};
    lua_getfield(L, 1, "path");
    if (!lua_isstring(L, -1) || !lua_objlen(L, -1))
        return luaL_error(L, "mq.file: path must be a file name");
    o.path = lua_tostring(L, -1); /* the options table keeps it alive */
    lua_getfield(L, 1, "format");
    const char *fmt = luaL_optstring(L, -1, "jsonl");
    if (strcmp(fmt, "jsonl") == 0)
        o.lines = true;
    else if (strcmp(fmt, "raw") != 0)
        return luaL_error(L, "mq.file: format must be \"jsonl\" or \"raw\", not \"%s\"", fmt);
    lua_getfield(L, 1, "name");
    o.name = luaL_optstring(L, -1, o.path);
    lua_getfield(L, 1, "fsync");
    const char *fs = luaL_optstring(L, -1, "batch");
    if (strcmp(fs, "batch") == 0)
        o.fsync = MQR_FSYNC_BATCH;
    else if (strcmp(fs, "interval") == 0)
        o.fsync = MQR_FSYNC_INTERVAL;
    else if (strcmp(fs, "none") == 0)
        o.fsync = MQR_FSYNC_NONE;
    else
        return luaL_error(
            L, "mq.file: fsync must be \"batch\", \"interval\" or \"none\", not \"%s\"", fs);
    lua_getfield(L, 1, "fsync_interval");
    if (!lua_isnil(L, -1)) {
        double s = luaL_checknumber(L, -1);
        if (!(s > 0) || s > 3600) return luaL_error(L, "mq.file: fsync_interval must be 0..3600 s");
        o.fsync_ms = (uint32_t)(s * 1000.0 + 0.5);
        if (!o.fsync_ms) o.fsync_ms = 1;
    }
    lua_pop(L, 5);
    static const char what[] = "mq.file";
    o.rotate_bytes = mqr__lsink_opt_count(L, what, "rotate_bytes", 0, 1e15);
    o.rotate_seconds = (uint32_t)mqr__lsink_opt_count(L, what, "rotate_seconds", 0, 1e8);
    o.keep = (uint32_t)mqr__lsink_opt_count(L, what, "keep", 0, 1e6);
    o.max_queued = (uint32_t)mqr__lsink_opt_count(L, what, "max_queued", 0, 1e8);
    o.max_queued_bytes = mqr__lsink_opt_count(L, what, "max_queued_bytes", 0, 1e12);
    l_state_t *st = mqr__state_of(L);
    mqr__lsink_check_name(L, what, o.name);
    mqr_file_t *f;
    char *err = NULL;
    int rc = mqr__file_new(mqr_engine_loop(st->host->e), &o, &f, &err);
    if (rc < 0) {
        lua_pushfstring(L, "mq.file: %s", err ? err : mqr_strerror(rc));
        free(err);
        return lua_error(L);
    }
    mqr__lsink_push(L, FILE_MT, mqr__file_sink(f), f, file_close);
    return 1;
}

/* f:_write(bytes) -> true | nil, err, name, "retry" (never waits) */
static int l_file_write(lua_State *L)
{
    l_sink_t *s = mqr__lsink_check(L, 1, FILE_MT);
    size_t len;
    const char *p = luaL_checklstring(L, 2, &len);
    int rc = mqr__file_write(s->obj, p, len, NULL, NULL);
    if (rc == MQR_EINVAL)
        return mqr__lsink_fail(L, rc, "EINVAL: a JSON lines record cannot hold a newline",
                               MQR_SINK_PERMANENT);
    if (rc < 0) return mqr__lsink_fail(L, rc, NULL, MQR_SINK_RETRY);
    lua_pushboolean(L, 1);
    return 1;
}

/* The answer a waiting coroutine gets: true, or the failure. */
static int push_file_result(lua_State *L, void *arg)
{
    const mqr_file_result_t *r = arg;
    if (r->outcome == MQR_SINK_OK) {
        lua_pushboolean(L, 1);
        return 1;
    }
    return mqr__lsink_fail(L, r->err, r->reason, r->outcome);
}

static void on_file_done(void *arg, const mqr_file_result_t *r)
{
    mqr__lwait_resume(arg, push_file_result, (void *)r);
}

/* f:_write_wait(bytes) -> true | nil, err, name, "retry": waits (in a
 * coroutine) until the record is written and, with fsync "batch", on disk */
static int l_file_write_wait(lua_State *L)
{
    l_sink_t *s = mqr__lsink_check(L, 1, FILE_MT);
    size_t len;
    const char *p = luaL_checklstring(L, 2, &len);
    l_wait_t *w = mqr__lwait_begin(L, "file:write_sync");
    int rc = mqr__file_write(s->obj, p, len, on_file_done, w);
    if (rc < 0) {
        mqr__lwait_cancel(w);
        if (rc == MQR_EINVAL)
            return mqr__lsink_fail(L, rc, "EINVAL: a JSON lines record cannot hold a newline",
                                   MQR_SINK_PERMANENT);
        return mqr__lsink_fail(L, rc, NULL, MQR_SINK_RETRY);
    }
    return lua_yield(L, 0);
}

/* f:flush() -> true | nil, err, name, "retry": waits until every record
 * written before is on disk */
static int l_file_flush(lua_State *L)
{
    l_sink_t *s = mqr__lsink_check(L, 1, FILE_MT);
    l_wait_t *w = mqr__lwait_begin(L, "file:flush");
    int rc = mqr__file_flush(s->obj, on_file_done, w);
    if (rc < 0) {
        mqr__lwait_cancel(w);
        return mqr__lsink_fail(L, rc, NULL, MQR_SINK_RETRY);
    }
    return lua_yield(L, 0);
}

/* f:path() -> the file written to */
static int l_file_path(lua_State *L)
{
    l_sink_t *s = mqr__lsink_check(L, 1, FILE_MT);
    lua_pushstring(L, mqr__file_path(s->obj));
    return 1;
}

/* f:rotations() -> files rotated so far */
static int l_file_rotations(lua_State *L)
{
    l_sink_t *s = mqr__lsink_check(L, 1, FILE_MT);
    lua_pushnumber(L, (lua_Number)mqr__file_rotations(s->obj));
    return 1;
}

void mqr__lsink_file_register(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"_write", l_file_write}, {"_write_wait", l_file_write_wait}, {"flush", l_file_flush},
        {"path", l_file_path},    {"rotations", l_file_rotations},    {NULL, NULL}};
    mqr__lsink_register(L, FILE_MT, methods);
}
