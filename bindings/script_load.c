/*
 * script_load.c — the script as files: where require finds the stdlib,
 * reading a script file, the modules its require loaded, watching the
 * script and those modules for changes (a directory watch, debounced), and
 * reloading the file when they change.
 *
 * A reload goes through mqr__script_load_code (script.c), a transaction: a
 * file that fails to load leaves the old rules serving, and the failure is
 * kept (reload_failing) until a good load or a revert. Must not: reload
 * when nothing a running script depends on changed, or block the loop on
 * anything but reading the files.
 */
#include "script_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

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
void mqr__script_collect_modules(l_state_t *st)
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

int mqr__script_reload_file(mqr_script_t *h, bool only_if_changed, char **errmsg);

static void on_debounce(uv_timer_t *t)
{
    mqr_script_t *h = t->data;
    char *err = NULL;
    int rc = mqr__script_reload_file(h, true, &err);
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
    char *dir = mqr__script_dir_of(path);
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
    uv_fs_event_init(mqr_engine_loop(h->e), &w->ev);
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

void mqr__script_watch_modules(mqr_script_t *h, const l_state_t *st)
{
    if (!h->watching) return;
    for (size_t i = 0; i < st->n_modules; i++)
        watch_path(h, st->modules[i]);
}

void mqr__script_start_watch(mqr_script_t *h)
{
    mqr_engine_t *e = h->e;
    if (!mqr__engine_watch_script(e) || !h->path) return;
    if (!h->debounce_init) {
        uv_timer_init(mqr_engine_loop(e), &h->debounce);
        h->debounce.data = h;
        uv_unref((uv_handle_t *)&h->debounce);
        h->debounce_init = true;
    }
    h->watching = true;
    watch_path(h, h->path);
    if (h->cur) mqr__script_watch_modules(h, h->cur);
}

void mqr__script_stop_watch(mqr_script_t *h)
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
void mqr__script_note_reload_failure(mqr_script_t *h, const char *err)
{
    const char *msg = err ? err : "reload failed";
    const char *tb = strstr(msg, MQR_TRACEBACK_SEP);
    int n = tb ? (int)(tb - msg) : (int)strlen(msg);
    snprintf(h->last_reload_error, sizeof h->last_reload_error, "%.*s", n, msg);
    h->last_reload_error_at = mqr__script_now_ms(h);
    h->reload_failing = true;
}

int mqr__script_reload_file(mqr_script_t *h, bool only_if_changed, char **errmsg)
{
    char *code;
    size_t len;
    bool had = h->cur != NULL;
    int rc = read_file(h->path, &code, &len, errmsg);
    if (rc < 0) {
        h->reload_failures++;
        if (had) mqr__script_note_reload_failure(h, errmsg ? *errmsg : NULL);
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
    rc = mqr__script_load_code(h, chunk, h->path, code, len, errmsg);
    free(chunk);
    if (rc < 0) {
        free(code);
        if (had) {
            h->reload_failures++;
            mqr__script_note_reload_failure(h, errmsg ? *errmsg : NULL);
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
