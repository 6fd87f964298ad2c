/*
 * store_kv.c — the kv table (the last migration in store.c): one row per
 * persistent key of the Lua key-value store, the value as a blob and
 * whether it is JSON text.
 *
 * Statements are prepared per call and finalized before returning (writes
 * are per kv.set, not per message routed), so nothing is left for
 * mqr__store_close() to finalize. Must not interpret the values.
 */
#include "store_kv.h"

#include <string.h>

int mqr__store_kv_put(mqr_store_t *s, const char *key, size_t klen, const char *value, size_t vlen,
                      int json)
{
    if (!s || !key || !klen || (!value && vlen)) return MQR_EINVAL;
    sqlite3_stmt *st =
        mqr__store_prepare(s, "INSERT INTO kv(key, value, json, updated_ms)"
                              " VALUES(?1, ?2, ?3, ?4)"
                              " ON CONFLICT(key) DO UPDATE SET value = excluded.value,"
                              " json = excluded.json, updated_ms = excluded.updated_ms");
    if (!st) return mqr__store_prepare_error(s);
    int rc = sqlite3_bind_text(st, 1, key, (int)klen, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_blob(st, 2, value ? value : "", (int)vlen, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(st, 3, json ? 1 : 0);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 4, (sqlite3_int64)mqr__now_ms());
    int err = rc == SQLITE_OK ? mqr__store_write(s, st, "cannot store a kv entry")
                              : mqr__store_fail(s, st, "cannot bind a kv entry");
    sqlite3_finalize(st);
    return err;
}

int mqr__store_kv_delete(mqr_store_t *s, const char *key, size_t klen)
{
    if (!s || !key) return MQR_EINVAL;
    sqlite3_stmt *st = mqr__store_prepare(s, "DELETE FROM kv WHERE key = ?1");
    if (!st) return mqr__store_prepare_error(s);
    int rc = sqlite3_bind_text(st, 1, key, (int)klen, SQLITE_STATIC);
    int err = rc == SQLITE_OK ? mqr__store_write(s, st, "cannot delete a kv entry")
                              : mqr__store_fail(s, st, "cannot bind a kv key");
    sqlite3_finalize(st);
    return err;
}

int mqr__store_kv_load(mqr_store_t *s,
                       int (*cb)(void *arg, const char *key, size_t klen, const char *value,
                                 size_t vlen, int json),
                       void *arg)
{
    if (!s || !cb) return MQR_EINVAL;
    sqlite3_stmt *st = mqr__store_prepare(s, "SELECT key, value, json FROM kv ORDER BY key");
    if (!st) return mqr__store_prepare_error(s);
    int rc, ret = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(st, 0);
        size_t kl = (size_t)sqlite3_column_bytes(st, 0);
        const char *v = (const char *)sqlite3_column_blob(st, 1);
        size_t vl = (size_t)sqlite3_column_bytes(st, 1);
        if ((ret = cb(arg, k ? k : "", kl, v ? v : "", vl, sqlite3_column_int(st, 2))) != 0) break;
    }
    if (ret == 0 && rc != SQLITE_DONE) ret = mqr__store_fail(s, st, "cannot read the kv table");
    sqlite3_finalize(st);
    return ret;
}
