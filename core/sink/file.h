/*
 * file.h — the file sink: records appended to a file (JSON lines, or raw
 * bytes), rotated by size and by age, made durable by an fsync policy.
 *
 * Writes are grouped: what arrives while a batch is being written waits in
 * the next one, so one write() and (with fsync "batch") one fsync() carry
 * every record of a loop turn or more. The blocking calls (open, rename,
 * write, fsync, unlink) run in libuv's thread pool, one job at a time;
 * the loop thread only copies records into the waiting buffer and runs the
 * callbacks when their batch is done.
 *
 * A record's callback (optional) fires once its batch is written — and, with
 * fsync "batch", on disk. With "interval" the fsync runs at most every
 * fsync_ms; with "none" never (the OS writes back when it likes). A flush
 * callback fires once everything written before it is on disk, whatever the
 * policy.
 *
 * In line mode (JSON lines) a file that does not end in a newline when it
 * is opened lost its last record half-way (a crash during a write): that
 * partial record is cut off, since its write was never acknowledged.
 *
 * Loop thread only. Must not: touch the file from the loop thread while a
 * job runs, or fire a callback inside the call that registered it.
 */
#ifndef MQR_SINK_FILE_H
#define MQR_SINK_FILE_H

#include "sink.h"

#include <uv.h>

typedef struct mqr_file mqr_file_t;

typedef enum {
    MQR_FSYNC_BATCH = 0, /* fsync after every batch, before its callbacks */
    MQR_FSYNC_INTERVAL,  /* at most every fsync_ms */
    MQR_FSYNC_NONE,
} mqr_fsync_policy_t;

typedef struct {
    const char *name;          /* sink name, default "file" */
    const char *path;          /* the file written to; its directory must exist */
    bool lines;                /* a newline after each record (JSON lines); else raw bytes */
    uint64_t rotate_bytes;     /* rotate before a batch would pass this size; 0 = never */
    uint32_t rotate_seconds;   /* rotate once the file is this old; 0 = never */
    uint32_t keep;             /* rotated files to keep (oldest removed); 0 = all */
    mqr_fsync_policy_t fsync;  /* default batch */
    uint32_t fsync_ms;         /* for MQR_FSYNC_INTERVAL, default 1000 */
    uint32_t max_queued;       /* records waiting and being written, default 1000000 */
    uint64_t max_queued_bytes; /* their bytes, default 64 MiB */
} mqr_file_opts_t;

/* Opens (creates, appends to) the file in the thread pool; a failure to
 * open shows as the sink down, with the reason, and every write failing
 * RETRY. MQR_EINVAL (no path, bad policy) with *errmsg (malloc'd). */
int mqr__file_new(uv_loop_t *loop, const mqr_file_opts_t *o, mqr_file_t **out, char **errmsg);

/* Writes what is waiting, then closes; unfinished records' callbacks get
 * MQR_ECLOSED (RETRY) if the last batch cannot be written. The memory goes
 * once the last job and handles are done. Callable from a callback. */
void mqr__file_close(mqr_file_t *f);

mqr_sink_t *mqr__file_sink(mqr_file_t *f);

/* What a record or flush came to (borrowed for the callback). */
typedef struct {
    mqr_sink_outcome_t outcome;
    int err;            /* 0, a libuv code (UV_ENOSPC, UV_EACCES...), MQR_ECLOSED */
    const char *reason; /* "ENOSPC: no space left on device (writing /x/audit.log)" */
    double seconds;
} mqr_file_result_t;

typedef void (*mqr_file_done_fn)(void *arg, const mqr_file_result_t *r);

/* Appends one record (copied). done may be NULL (no callback). 0, or
 * MQR_EINVAL (line mode: the record holds a newline), MQR_EFULL (bounds;
 * counted), MQR_ECLOSED, MQR_ENOMEM. */
int mqr__file_write(mqr_file_t *f, const void *data, size_t len, mqr_file_done_fn done, void *arg);

/* done fires once every record written before this call is on disk
 * (written and fsync'ed), or failed. 0, MQR_ECLOSED, MQR_ENOMEM. */
int mqr__file_flush(mqr_file_t *f, mqr_file_done_fn done, void *arg);

/* The name of the file being written now (rotation changes nothing: the
 * current file keeps the configured path). */
const char *mqr__file_path(const mqr_file_t *f);

/* Files rotated so far by this sink. */
uint64_t mqr__file_rotations(const mqr_file_t *f);

#endif
