/*
 * test_store_kv.c — the kv table of the store (core/store/store_kv.c) on a real
 * SQLite file and libuv loop: put, replace, delete, binary values, the JSON
 * flag, load order and a stop from the callback, across a reopen.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "store_kv.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char tmpdir[64];

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/mqr-kv-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static mqr_store_t *store_open(uv_loop_t *loop, const char *path)
{
    mqr_store_t *s = NULL;
    char *errmsg = NULL;
    int err = mqr__store_open(&s, loop, path, NULL, &errmsg);
    if (err) fail_msg("open %s: %s: %s", path, mqr_err_name(err), errmsg);
    return s;
}

static void store_close(uv_loop_t *loop, mqr_store_t *s)
{
    mqr__store_close(s);
    assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
}

typedef struct {
    char keys[8][32];
    char values[8][32];
    size_t vlens[8];
    int json[8];
    int n;
    int stop_at; /* stop (return 9) after this many; 0 = never */
} seen_t;

static int collect(void *arg, const char *key, size_t klen, const char *value, size_t vlen,
                   int json)
{
    seen_t *s = arg;
    assert_true(s->n < 8 && klen < 32 && vlen < 32);
    memcpy(s->keys[s->n], key, klen);
    memcpy(s->values[s->n], value, vlen);
    s->vlens[s->n] = vlen;
    s->json[s->n] = json;
    s->n++;
    return s->stop_at && s->n == s->stop_at ? 9 : 0;
}

static void test_put_delete_load_reopen(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    char path[128];
    snprintf(path, sizeof path, "%s/kv.db", tmpdir);
    mqr_store_t *s = store_open(&loop, path);
    static const char bin[] = {'a', 0, 'b'};
    assert_int_equal(mqr__store_kv_put(s, "b", 1, "first", 5, 0), 0);
    assert_int_equal(mqr__store_kv_put(s, "b", 1, "{\"n\":2}", 7, 1), 0); /* replaces */
    assert_int_equal(mqr__store_kv_put(s, "a\0x", 3, bin, sizeof bin, 0), 0);
    assert_int_equal(mqr__store_kv_put(s, "c", 1, "", 0, 0), 0);
    assert_int_equal(mqr__store_kv_put(s, "gone", 4, "x", 1, 0), 0);
    assert_int_equal(mqr__store_kv_delete(s, "gone", 4), 0);
    assert_int_equal(mqr__store_kv_delete(s, "never", 5), 0);
    assert_int_equal(mqr__store_kv_put(s, "", 0, "x", 1, 0), MQR_EINVAL);
    assert_int_equal(mqr__store_kv_put(s, "k", 1, NULL, 1, 0), MQR_EINVAL);
    store_close(&loop, s);

    s = store_open(&loop, path);
    seen_t seen = {0};
    assert_int_equal(mqr__store_kv_load(s, collect, &seen), 0);
    assert_int_equal(seen.n, 3);
    assert_memory_equal(seen.keys[0], "a\0x", 3); /* key order */
    assert_int_equal(seen.vlens[0], sizeof bin);
    assert_memory_equal(seen.values[0], bin, sizeof bin);
    assert_int_equal(seen.json[0], 0);
    assert_string_equal(seen.keys[1], "b");
    assert_string_equal(seen.values[1], "{\"n\":2}");
    assert_int_equal(seen.json[1], 1);
    assert_string_equal(seen.keys[2], "c");
    assert_int_equal(seen.vlens[2], 0);

    seen_t two = {.stop_at = 2};
    assert_int_equal(mqr__store_kv_load(s, collect, &two), 9);
    assert_int_equal(two.n, 2);
    store_close(&loop, s);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_delete_load_reopen),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
