/*
 * test_sink_file.c — the file sink (core/sink/file.c) on a real loop and
 * real files in a temp directory: records and their callbacks, grouping,
 * flush, rotation by size and age with pruning, a crash's half record cut,
 * a missing directory (down, RETRY, then up again), bounds, and close.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "file.h"

static char dir[256];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/mqr-sink-file-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

typedef struct {
    int ok, failed;
    int last_err;
    char reason[256];
} counts_t;

static void on_done(void *arg, const mqr_file_result_t *r)
{
    counts_t *c = arg;
    if (r->outcome == MQR_SINK_OK)
        c->ok++;
    else {
        c->failed++;
        c->last_err = r->err;
        snprintf(c->reason, sizeof c->reason, "%s", r->reason ? r->reason : "");
    }
}

/* Runs the loop until *n reaches want or 5 s pass. */
static void run_until(uv_loop_t *loop, const int *n, int want)
{
    uint64_t end = uv_hrtime() + 5000000000ull;
    while (*n < want && uv_hrtime() < end)
        uv_run(loop, UV_RUN_ONCE);
    assert_int_equal(*n, want);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    assert_int_equal(fread(b, 1, (size_t)n, fp), (size_t)n);
    b[n] = '\0';
    fclose(fp);
    *len = (size_t)n;
    return b;
}

static void close_and_drain(uv_loop_t *loop, mqr_file_t *f)
{
    mqr__file_close(f);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

static void test_lines_and_callbacks(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    char path[300];
    snprintf(path, sizeof path, "%s/a.jsonl", dir);
    mqr_file_opts_t o = {.path = path, .lines = true, .name = "audit"};
    mqr_file_t *f;
    assert_int_equal(mqr__file_new(&loop, &o, &f, NULL), 0);
    counts_t c = {0};
    char rec[64];
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(rec, sizeof rec, "{\"i\":%d}", i);
        assert_int_equal(mqr__file_write(f, rec, (size_t)n, i % 10 == 0 ? on_done : NULL, &c), 0);
    }
    /* callbacks never fire inside the call */
    assert_int_equal(c.ok, 0);
    run_until(&loop, &c.ok, 100);
    counts_t fl = {0};
    assert_int_equal(mqr__file_flush(f, on_done, &fl), 0);
    run_until(&loop, &fl.ok, 1);
    mqr_sink_t *s = mqr__file_sink(f);
    assert_true(s->up);
    assert_int_equal(s->ok, 1000);
    assert_int_equal(s->in_flight + s->queued, 0);
    assert_string_equal(s->kind, "file");
    assert_string_equal(s->name, "audit");
    size_t len;
    char *b = slurp(path, &len);
    assert_non_null(b);
    int lines = 0;
    for (char *p = b, *nl; (nl = strchr(p, '\n')); p = nl + 1) {
        int n = snprintf(rec, sizeof rec, "{\"i\":%d}", lines);
        if ((size_t)(nl - p) != (size_t)n || memcmp(p, rec, (size_t)n) != 0)
            fail_msg("line %d is not %s", lines, rec);
        lines++;
    }
    assert_int_equal(lines, 1000);
    free(b);
    close_and_drain(&loop, f);
}

static int count_rotated(const char *base)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    size_t bl = strlen(base);
    for (struct dirent *e; (e = readdir(d));)
        if (strncmp(e->d_name, base, bl) == 0 && e->d_name[bl] == '.') n++;
    closedir(d);
    return n;
}

static void test_rotation_by_size_keeps_some(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    char path[300];
    snprintf(path, sizeof path, "%s/r.log", dir);
    mqr_file_opts_t o = {.path = path, .lines = true, .rotate_bytes = 1000, .keep = 2};
    mqr_file_t *f;
    assert_int_equal(mqr__file_new(&loop, &o, &f, NULL), 0);
    char rec[100];
    memset(rec, 'x', sizeof rec);
    counts_t c = {0};
    /* 8 batches of 4 records of 101 bytes (404 bytes, one write each): a
     * third batch would pass 1000 bytes, so a rotation comes before
     * batches 3, 5 and 7 */
    for (int b = 0; b < 8; b++) {
        for (int i = 0; i < 4; i++)
            assert_int_equal(mqr__file_write(f, rec, sizeof rec, on_done, &c), 0);
        run_until(&loop, &c.ok, (b + 1) * 4);
    }
    assert_int_equal(mqr__file_rotations(f), 3);
    assert_int_equal(count_rotated("r.log"), 2); /* keep = 2: the oldest went */
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(st.st_size <= 1000);
    close_and_drain(&loop, f);
}

static void test_rotation_by_age(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    char path[300];
    snprintf(path, sizeof path, "%s/age.log", dir);
    mqr_file_opts_t o = {.path = path, .lines = true, .rotate_seconds = 1};
    mqr_file_t *f;
    assert_int_equal(mqr__file_new(&loop, &o, &f, NULL), 0);
    counts_t c = {0};
    uint64_t end = uv_hrtime() + 4000000000ull;
    int sent = 0;
    while (mqr__file_rotations(f) == 0 && uv_hrtime() < end) {
        assert_int_equal(mqr__file_write(f, "tick", 4, on_done, &c), 0);
        sent++;
        run_until(&loop, &c.ok, sent);
        uv_sleep(50);
    }
    assert_int_equal(mqr__file_rotations(f), 1);
    close_and_drain(&loop, f);
}

static void test_half_record_cut(void **state)
{
    (void)state;
    char path[300];
    snprintf(path, sizeof path, "%s/crash.jsonl", dir);
    FILE *fp = fopen(path, "w");
    fputs("{\"a\":1}\n{\"b\":", fp); /* the second record was cut short */
    fclose(fp);
    uv_loop_t loop;
    uv_loop_init(&loop);
    mqr_file_opts_t o = {.path = path, .lines = true};
    mqr_file_t *f;
    assert_int_equal(mqr__file_new(&loop, &o, &f, NULL), 0);
    counts_t c = {0};
    assert_int_equal(mqr__file_write(f, "{\"c\":3}", 7, on_done, &c), 0);
    run_until(&loop, &c.ok, 1);
    size_t len;
    char *b = slurp(path, &len);
    assert_string_equal(b, "{\"a\":1}\n{\"c\":3}\n");
    free(b);
    close_and_drain(&loop, f);
}

static void test_missing_directory_then_back(void **state)
{
    (void)state;
    char sub[300], path[340];
    snprintf(sub, sizeof sub, "%s/later", dir);
    snprintf(path, sizeof path, "%s/x.log", sub);
    uv_loop_t loop;
    uv_loop_init(&loop);
    mqr_file_opts_t o = {.path = path, .lines = true};
    mqr_file_t *f;
    assert_int_equal(mqr__file_new(&loop, &o, &f, NULL), 0);
    counts_t c = {0};
    assert_int_equal(mqr__file_write(f, "one", 3, on_done, &c), 0);
    run_until(&loop, &c.failed, 1);
    assert_int_equal(c.last_err, UV_ENOENT);
    assert_non_null(strstr(c.reason, "x.log"));
    mqr_sink_t *s = mqr__file_sink(f);
    assert_false(s->up);
    assert_int_equal(s->retried, 1);
    assert_int_equal(mkdir(sub, 0755), 0);
    assert_int_equal(mqr__file_write(f, "two", 3, on_done, &c), 0);
    run_until(&loop, &c.ok, 1);
    assert_true(s->up);
    size_t len;
    char *b = slurp(path, &len);
    assert_string_equal(b, "two\n");
    free(b);
    close_and_drain(&loop, f);
}

static void test_bounds_and_close(void **state)
{
    (void)state;
    char path[300];
    snprintf(path, sizeof path, "%s/full.log", dir);
    uv_loop_t loop;
    uv_loop_init(&loop);
    mqr_file_opts_t o = {.path = path, .lines = false, .max_queued = 10, .fsync = MQR_FSYNC_NONE};
    mqr_file_t *f;
    assert_int_equal(mqr__file_new(&loop, &o, &f, NULL), 0);
    counts_t c = {0};
    for (int i = 0; i < 10; i++)
        assert_int_equal(mqr__file_write(f, "ab", 2, on_done, &c), 0);
    assert_int_equal(mqr__file_write(f, "ab", 2, on_done, &c), MQR_EFULL);
    assert_int_equal(mqr__file_sink(f)->errors[MQR_SINK_ERR_FULL], 1);
    /* closing writes what waits: every accepted record ends on disk, OK */
    mqr__file_close(f);
    assert_int_equal(c.ok, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(c.ok, 10);
    assert_int_equal(c.failed, 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    size_t len;
    char *b = slurp(path, &len);
    assert_int_equal(len, 20);
    free(b);
}

static void test_bad_options(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    mqr_file_opts_t o = {.path = ""};
    mqr_file_t *f;
    char *err = NULL;
    assert_int_equal(mqr__file_new(&loop, &o, &f, &err), MQR_EINVAL);
    assert_string_equal(err, "no path");
    free(err);
    o.path = "/tmp/x";
    o.fsync = (mqr_fsync_policy_t)7;
    assert_int_equal(mqr__file_new(&loop, &o, &f, NULL), MQR_EINVAL);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines_and_callbacks),
        cmocka_unit_test(test_rotation_by_size_keeps_some),
        cmocka_unit_test(test_rotation_by_age),
        cmocka_unit_test(test_half_record_cut),
        cmocka_unit_test(test_missing_directory_then_back),
        cmocka_unit_test(test_bounds_and_close),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
