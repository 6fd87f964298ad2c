/*
 * file.c — the file sink (file.h): records gather in a waiting batch on the
 * loop thread; one thread-pool job at a time opens, rotates, writes and
 * fsyncs; its completion runs the batch's callbacks on the loop.
 *
 * Only the job touches the descriptor and the file's size and age while it
 * runs (f->busy); the loop thread touches them only between jobs. Must not:
 * block the loop thread, or run a callback inside the call that gave it.
 */
#include "file.h"

#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    mqr_file_done_fn done;
    void *arg;
    uint64_t t0; /* uv_hrtime() when given */
} cb_t;

typedef struct {
    char *data;
    size_t len, cap;
    cb_t *cbs;
    size_t ncbs, cbcap;
    uint32_t records;
    bool want_fsync; /* a flush waits in it */
} batch_t;

struct mqr_file {
    mqr_sink_t sink; /* first: a mqr_sink_t * is a mqr_file_t * */
    uv_loop_t *loop;
    char *path;
    bool lines;
    uint64_t rotate_bytes;
    uint32_t rotate_seconds, keep, fsync_ms;
    mqr_fsync_policy_t policy;
    uint64_t max_queued_bytes;

    batch_t waiting, writing;
    bool busy, closing, final_queued;
    int handles_open;
    uv_work_t work;
    uv_timer_t
        kick; /* due at once: starts a job on the loop turn after the one that gave it work */
    uv_timer_t interval; /* fsync "interval": the fsync of the last writes */

    /* the job's: touched by the loop thread only while !busy */
    int fd;
    uint64_t size, opened_ms, last_fsync_ms;
    bool dirty; /* written since the last fsync */
    bool close_fd;
    int job_err;
    bool job_fsynced;
    uint64_t job_cut;          /* bytes of an unfinished last record cut at open */
    uint32_t job_prune_errors; /* rotated files that could not be removed */
    char job_reason[256];
    uint64_t rotations;
};

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- in the thread pool ---------------------------------------------------- */

static int fail(mqr_file_t *f, const char *what, const char *name)
{
    int err = -errno;
    snprintf(f->job_reason, sizeof f->job_reason, "%s: %s (%s %s)", uv_err_name(err),
             uv_strerror(err), what, name);
    f->job_err = err;
    return err;
}

/* In line mode, cuts a last record that a crash left without its newline. */
static int cut_partial_line(mqr_file_t *f)
{
    if (!f->lines || f->size == 0) return 0;
    char buf[4096];
    uint64_t end = f->size;
    while (end > 0) {
        size_t n = end < sizeof buf ? (size_t)end : sizeof buf;
        ssize_t got = pread(f->fd, buf, n, (off_t)(end - n));
        if (got != (ssize_t)n) return fail(f, "reading", f->path);
        for (size_t i = n; i > 0; i--) {
            if (buf[i - 1] != '\n') continue;
            uint64_t keep = end - n + i;
            if (keep == f->size) return 0;
            f->job_cut += f->size - keep;
            if (ftruncate(f->fd, (off_t)keep) < 0) return fail(f, "truncating", f->path);
            f->size = keep;
            return 0;
        }
        end -= n;
    }
    if (ftruncate(f->fd, 0) < 0) return fail(f, "truncating", f->path);
    f->size = 0;
    return 0;
}

static int open_file(mqr_file_t *f)
{
    /* read access too: a half record left by a crash is looked for from the end */
    f->fd = open(f->path, (f->lines ? O_RDWR : O_WRONLY) | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (f->fd < 0) return fail(f, "opening", f->path);
    struct stat st;
    if (fstat(f->fd, &st) < 0) return fail(f, "reading the size of", f->path);
    f->size = (uint64_t)st.st_size;
    f->opened_ms = wall_ms();
    f->dirty = false;
    return cut_partial_line(f);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Removes the oldest rotated files ("<path>.<time>[.n]") beyond keep. */
static void prune(mqr_file_t *f)
{
    if (!f->keep) return;
    const char *slash = strrchr(f->path, '/');
    char dir[4096];
    const char *base = slash ? slash + 1 : f->path;
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - f->path) : 1, slash ? f->path : ".");
    if (slash == f->path) snprintf(dir, sizeof dir, "/");
    DIR *d = opendir(dir);
    if (!d) return;
    size_t blen = strlen(base), n = 0, cap = 0;
    char **names = NULL;
    for (struct dirent *e; (e = readdir(d));) {
        if (strncmp(e->d_name, base, blen) != 0 || e->d_name[blen] != '.' ||
            e->d_name[blen + 1] < '0' || e->d_name[blen + 1] > '9')
            continue;
        if (n == cap) {
            char **more = realloc(names, (cap = cap ? cap * 2 : 16) * sizeof *names);
            if (!more) break;
            names = more;
        }
        if (!(names[n] = strdup(e->d_name))) break;
        n++;
    }
    closedir(d);
    if (n > f->keep) {
        qsort(names, n, sizeof *names, by_name);
        for (size_t i = 0; i < n - f->keep; i++) {
            char full[8192];
            snprintf(full, sizeof full, "%s/%s", dir, names[i]);
            if (unlink(full) < 0) f->job_prune_errors++;
        }
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static int rotate(mqr_file_t *f)
{
    if (f->policy != MQR_FSYNC_NONE && f->dirty && fdatasync(f->fd) < 0)
        return fail(f, "syncing", f->path);
    close(f->fd);
    f->fd = -1;
    char stamp[32], to[4200];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    snprintf(to, sizeof to, "%s.%s", f->path, stamp);
    for (int i = 1; access(to, F_OK) == 0 && i < 1000; i++)
        snprintf(to, sizeof to, "%s.%s.%d", f->path, stamp, i);
    if (rename(f->path, to) < 0) return fail(f, "rotating", f->path);
    f->rotations++;
    prune(f);
    return open_file(f);
}

static bool rotation_due(const mqr_file_t *f, size_t adding)
{
    if (f->size == 0) return false;
    if (f->rotate_bytes && f->size + adding > f->rotate_bytes) return true;
    return f->rotate_seconds && wall_ms() - f->opened_ms >= (uint64_t)f->rotate_seconds * 1000u;
}

static void job(uv_work_t *w)
{
    mqr_file_t *f = w->data;
    batch_t *b = &f->writing;
    f->job_err = 0;
    f->job_fsynced = false;
    if (f->fd < 0 && open_file(f) < 0) goto out;
    if (rotation_due(f, b->len) && rotate(f) < 0) goto out;
    for (size_t off = 0; off < b->len;) {
        ssize_t n = write(f->fd, b->data + off, b->len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            fail(f, "writing", f->path);
            /* leave no partial record behind (best effort) */
            if (off && ftruncate(f->fd, (off_t)f->size) < 0) {
            }
            goto out;
        }
        off += (size_t)n;
    }
    f->size += b->len;
    if (b->len) f->dirty = true;
    uint64_t now = wall_ms();
    bool sync =
        f->dirty &&
        (f->policy == MQR_FSYNC_BATCH || b->want_fsync ||
         (f->policy == MQR_FSYNC_INTERVAL && now - f->last_fsync_ms >= (uint64_t)f->fsync_ms));
    if (sync) {
        if (fdatasync(f->fd) < 0) {
            fail(f, "syncing", f->path);
            goto out;
        }
        f->dirty = false;
        f->last_fsync_ms = now;
        f->job_fsynced = true;
    }
out:
    if (f->job_err < 0 && f->fd >= 0) { /* reopen next time: the directory may be back */
        close(f->fd);
        f->fd = -1;
    }
    if (f->close_fd && f->fd >= 0) {
        if (f->dirty && f->policy != MQR_FSYNC_NONE && fdatasync(f->fd) == 0) f->dirty = false;
        close(f->fd);
        f->fd = -1;
    }
}

/* ---- on the loop thread ---------------------------------------------------- */

static void batch_free(batch_t *b)
{
    free(b->data);
    free(b->cbs);
    memset(b, 0, sizeof *b);
}

static void maybe_free(mqr_file_t *f)
{
    if (!f->closing || f->busy || f->handles_open) return;
    batch_free(&f->waiting);
    batch_free(&f->writing);
    free(f->path);
    free(f);
}

static void on_handle_closed(uv_handle_t *h)
{
    mqr_file_t *f = h->data;
    f->handles_open--;
    maybe_free(f);
}

static void start_job(mqr_file_t *f);
static void on_interval(uv_timer_t *t);

static void finish_batch(mqr_file_t *f, batch_t *b, int err, const char *reason)
{
    uint64_t now = uv_hrtime();
    mqr_sink_t *s = &f->sink;
    uint32_t recs = b->records;
    s->in_flight = s->in_flight >= recs ? s->in_flight - recs : 0;
    if (err == 0)
        s->ok += recs;
    else {
        s->retried += recs;
        s->errors[MQR_SINK_ERR_OTHER] += recs;
        snprintf(s->last_error, sizeof s->last_error, "%s", reason);
    }
    mqr_file_result_t r = {
        .outcome = err ? MQR_SINK_RETRY : MQR_SINK_OK, .err = err, .reason = err ? reason : NULL};
    for (size_t i = 0; i < b->ncbs; i++) {
        cb_t *c = &b->cbs[i];
        uint64_t ns = now - c->t0;
        mqr__admin_hist_add(&s->latency, ns);
        r.seconds = (double)ns / 1e9;
        c->done(c->arg, &r);
    }
    b->len = 0;
    b->ncbs = 0;
    b->records = 0;
    b->want_fsync = false;
}

static void after_job(uv_work_t *w, int status)
{
    mqr_file_t *f = w->data;
    f->busy = false;
    int err = status < 0 ? status : f->job_err;
    char reason[256];
    if (status < 0)
        snprintf(reason, sizeof reason, "%s: %s (writing %s)", uv_err_name(status),
                 uv_strerror(status), f->path);
    else
        snprintf(reason, sizeof reason, "%s", f->job_reason);
    /* the job runs off the loop thread, where a host's log sink may not be
     * called: it leaves what to say here */
    if (f->job_cut)
        MQR_LOG_W("sink", "file '%s': cut %llu bytes of a record a crash left unfinished in %s",
                  f->sink.name, (unsigned long long)f->job_cut, f->path);
    if (f->job_prune_errors)
        MQR_LOG_W("sink", "file '%s': %u old rotated files could not be removed", f->sink.name,
                  f->job_prune_errors);
    f->job_cut = 0;
    f->job_prune_errors = 0;
    if (err == 0 && f->fd >= 0)
        mqr__sink_set_up(&f->sink, true, NULL);
    else if (err < 0) {
        if (f->sink.up || f->sink.last_error[0] == '\0')
            MQR_LOG_W("sink", "file '%s': %s", f->sink.name, reason);
        mqr__sink_set_up(&f->sink, false, reason);
    }
    finish_batch(f, &f->writing, err, reason);
    if (f->closing) {
        if (f->waiting.records || f->waiting.ncbs) {
            if (!f->final_queued) {
                f->final_queued = true;
                f->close_fd = true;
                start_job(f);
                return;
            }
            /* the final job could not take them: they end here */
            batch_t left = f->waiting;
            memset(&f->waiting, 0, sizeof f->waiting);
            finish_batch(f, &left, MQR_ECLOSED, "ECLOSED: the file sink was closed");
            batch_free(&left);
        } else if (!f->final_queued && f->fd >= 0) {
            f->final_queued = true;
            f->close_fd = true;
            start_job(f);
            return;
        }
        maybe_free(f);
        return;
    }
    if (f->waiting.records || f->waiting.ncbs)
        start_job(f);
    else if (f->dirty && f->policy == MQR_FSYNC_INTERVAL &&
             !uv_is_active((uv_handle_t *)&f->interval))
        uv_timer_start(&f->interval, on_interval, f->fsync_ms, 0);
}

static void start_job(mqr_file_t *f)
{
    if (f->busy) return;
    uv_timer_stop(&f->kick);
    batch_t t = f->writing; /* empty: swap buffers, keep their memory */
    f->writing = f->waiting;
    f->waiting = t;
    mqr_sink_t *s = &f->sink;
    uint32_t recs = f->writing.records;
    s->queued = s->queued >= recs ? s->queued - recs : 0;
    s->in_flight += recs;
    f->busy = true;
    f->work.data = f;
    int rc = uv_queue_work(f->loop, &f->work, job, after_job);
    if (rc < 0) { /* only with a bad loop: fail the batch now, on this turn */
        f->busy = false;
        char reason[128];
        snprintf(reason, sizeof reason, "%s: the thread pool refused the write", uv_err_name(rc));
        finish_batch(f, &f->writing, rc, reason);
    }
}

static void on_kick(uv_timer_t *h)
{
    start_job(h->data);
}

static void on_interval(uv_timer_t *t)
{
    mqr_file_t *f = t->data;
    if (!f->busy && f->dirty) {
        f->waiting.want_fsync = true;
        start_job(f);
    }
}

static void schedule(mqr_file_t *f)
{
    if (!f->busy && !uv_is_active((uv_handle_t *)&f->kick)) uv_timer_start(&f->kick, on_kick, 0, 0);
}

static int grow(void **p, size_t *cap, size_t need, size_t each)
{
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, c * each);
    if (!q) return MQR_ENOMEM;
    *p = q;
    *cap = c;
    return 0;
}

static int add_cb(batch_t *b, mqr_file_done_fn done, void *arg)
{
    if (grow((void **)&b->cbs, &b->cbcap, b->ncbs + 1, sizeof *b->cbs) < 0) return MQR_ENOMEM;
    b->cbs[b->ncbs++] = (cb_t){done, arg, uv_hrtime()};
    return 0;
}

int mqr__file_write(mqr_file_t *f, const void *data, size_t len, mqr_file_done_fn done, void *arg)
{
    if (f->closing) return MQR_ECLOSED;
    if (f->lines && len && memchr(data, '\n', len)) return MQR_EINVAL; /* it would read as two */
    mqr_sink_t *s = &f->sink;
    size_t bytes = len + (f->lines ? 1 : 0);
    if ((uint64_t)s->in_flight + s->queued >= s->max_queued ||
        (uint64_t)f->waiting.len + f->writing.len + bytes > f->max_queued_bytes) {
        s->errors[MQR_SINK_ERR_FULL]++;
        return MQR_EFULL;
    }
    batch_t *b = &f->waiting;
    if (grow((void **)&b->data, &b->cap, b->len + bytes, 1) < 0) return MQR_ENOMEM;
    if (done && add_cb(b, done, arg) < 0) return MQR_ENOMEM;
    if (len) memcpy(b->data + b->len, data, len);
    b->len += len;
    if (f->lines) b->data[b->len++] = '\n';
    b->records++;
    s->requests++;
    s->queued++;
    schedule(f);
    return 0;
}

int mqr__file_flush(mqr_file_t *f, mqr_file_done_fn done, void *arg)
{
    if (f->closing) return MQR_ECLOSED;
    if (add_cb(&f->waiting, done, arg) < 0) return MQR_ENOMEM;
    f->waiting.want_fsync = true;
    schedule(f);
    return 0;
}

int mqr__file_new(uv_loop_t *loop, const mqr_file_opts_t *o, mqr_file_t **out, char **errmsg)
{
    *out = NULL;
    const char *why = NULL;
    if (!o->path || !o->path[0])
        why = "no path";
    else if ((unsigned)o->fsync > MQR_FSYNC_NONE)
        why = "fsync must be batch, interval or none";
    if (why) {
        if (errmsg) *errmsg = strdup(why);
        return MQR_EINVAL;
    }
    mqr_file_t *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(o->path))) {
        free(f);
        return MQR_ENOMEM;
    }
    mqr__sink_init(&f->sink, "file", o->name ? o->name : "file", o->path, UINT32_MAX,
                   o->max_queued ? o->max_queued : 1000000);
    f->sink.max_in_flight = f->sink.max_queued;
    f->loop = loop;
    f->lines = o->lines;
    f->rotate_bytes = o->rotate_bytes;
    f->rotate_seconds = o->rotate_seconds;
    f->keep = o->keep;
    f->policy = o->fsync;
    f->fsync_ms = o->fsync_ms ? o->fsync_ms : 1000;
    f->max_queued_bytes = o->max_queued_bytes ? o->max_queued_bytes : 64u << 20;
    f->fd = -1;
    f->last_fsync_ms = wall_ms();
    uv_timer_init(loop, &f->kick);
    uv_timer_init(loop, &f->interval);
    f->kick.data = f->interval.data = f;
    f->handles_open = 2;
    /* open now (in the pool), so a bad path shows as the sink down at once */
    start_job(f);
    *out = f;
    return 0;
}

void mqr__file_close(mqr_file_t *f)
{
    if (!f || f->closing) return;
    f->closing = true;
    uv_close((uv_handle_t *)&f->kick, on_handle_closed);
    uv_close((uv_handle_t *)&f->interval, on_handle_closed);
    if (f->busy) return; /* after_job carries on */
    f->final_queued = true;
    f->close_fd = true;
    start_job(f); /* writes what waits (or only closes the descriptor) */
}

mqr_sink_t *mqr__file_sink(mqr_file_t *f)
{
    return &f->sink;
}

const char *mqr__file_path(const mqr_file_t *f)
{
    return f->path;
}

uint64_t mqr__file_rotations(const mqr_file_t *f)
{
    return f->rotations;
}
