/*
 * store_auth.c — the credentials table (schema version 3 in store.c): one
 * row per listener user with the salt, PBKDF2 iteration count and SCRAM
 * keys of auth.h.
 *
 * Statements are prepared per call and finalized before returning: these
 * run once per CONNECT or per admin action, not per message, and nothing is
 * left for mqr__store_close() to finalize. Writes go through the store's
 * group commit. Must not: hold a password, or interpret the keys.
 */
#include "auth.h"

#include <string.h>

int mqr__store_cred_put(mqr_store_t *s, const char *user, size_t len, const mqr_cred_t *c)
{
    if (!s || !user || !len || !c || c->salt_len > MQR_AUTH_SALT_MAX) return MQR_EINVAL;
    sqlite3_stmt *st =
        mqr__store_prepare(s, "INSERT INTO credentials(username, salt, iterations,"
                              " stored_key, server_key, created_ms)"
                              " VALUES(?1, ?2, ?3, ?4, ?5, ?6)"
                              " ON CONFLICT(username) DO UPDATE SET salt = excluded.salt,"
                              " iterations = excluded.iterations,"
                              " stored_key = excluded.stored_key,"
                              " server_key = excluded.server_key,"
                              " created_ms = excluded.created_ms");
    if (!st) return mqr__store_prepare_error(s);
    int rc = sqlite3_bind_text(st, 1, user, (int)len, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_blob(st, 2, c->salt, (int)c->salt_len, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 3, c->iterations);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_blob(st, 4, c->stored_key, MQR_AUTH_KEY_LEN, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_blob(st, 5, c->server_key, MQR_AUTH_KEY_LEN, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 6, (sqlite3_int64)mqr__now_ms());
    int err = rc == SQLITE_OK ? mqr__store_write(s, st, "cannot store credentials")
                              : mqr__store_fail(s, st, "cannot bind credentials");
    sqlite3_finalize(st);
    return err;
}

int mqr__store_cred_get(mqr_store_t *s, const char *user, size_t len, mqr_cred_t *out)
{
    if (!s || !user || !out) return MQR_EINVAL;
    sqlite3_stmt *st = mqr__store_prepare(s, "SELECT salt, iterations, stored_key, server_key"
                                             " FROM credentials WHERE username = ?1");
    if (!st) return mqr__store_prepare_error(s);
    int err = MQR_ENOENT;
    if (sqlite3_bind_text(st, 1, user, (int)len, SQLITE_STATIC) != SQLITE_OK) {
        err = mqr__store_fail(s, st, "cannot bind user name");
        goto out;
    }
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        size_t salt_len = (size_t)sqlite3_column_bytes(st, 0);
        sqlite3_int64 iter = sqlite3_column_int64(st, 1);
        const void *salt = sqlite3_column_blob(st, 0);
        const void *sk = sqlite3_column_blob(st, 2);
        const void *vk = sqlite3_column_blob(st, 3);
        /* the file is input like any other: a damaged row matches nothing */
        if (!salt || salt_len > MQR_AUTH_SALT_MAX || iter <= 0 || iter > MQR_AUTH_ITERATIONS_MAX ||
            !sk || !vk || sqlite3_column_bytes(st, 2) != MQR_AUTH_KEY_LEN ||
            sqlite3_column_bytes(st, 3) != MQR_AUTH_KEY_LEN) {
            err = MQR_ESTORE;
            goto out;
        }
        memset(out, 0, sizeof *out);
        memcpy(out->salt, salt, salt_len);
        out->salt_len = salt_len;
        out->iterations = (uint32_t)iter;
        memcpy(out->stored_key, sk, MQR_AUTH_KEY_LEN);
        memcpy(out->server_key, vk, MQR_AUTH_KEY_LEN);
        err = 0;
    } else if (rc != SQLITE_DONE) {
        err = mqr__store_fail(s, st, "cannot read credentials");
    }
out:
    sqlite3_finalize(st);
    return err;
}

int mqr__store_cred_del(mqr_store_t *s, const char *user, size_t len)
{
    if (!s || !user) return MQR_EINVAL;
    sqlite3_stmt *st = mqr__store_prepare(s, "DELETE FROM credentials WHERE username = ?1");
    if (!st) return mqr__store_prepare_error(s);
    int err;
    if (sqlite3_bind_text(st, 1, user, (int)len, SQLITE_STATIC) != SQLITE_OK)
        err = mqr__store_fail(s, st, "cannot bind user name");
    else
        err = mqr__store_write(s, st, "cannot delete credentials");
    if (err == 0 && sqlite3_changes(mqr__store_db(s)) == 0) err = MQR_ENOENT;
    sqlite3_finalize(st);
    return err;
}

int mqr__store_cred_list(mqr_store_t *s, int (*cb)(void *arg, const char *user, size_t len),
                         void *arg)
{
    if (!s || !cb) return MQR_EINVAL;
    sqlite3_stmt *st = mqr__store_prepare(s, "SELECT username FROM credentials ORDER BY username");
    if (!st) return mqr__store_prepare_error(s);
    int err = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *u = (const char *)sqlite3_column_text(st, 0);
        if (!u) continue;
        err = cb(arg, u, (size_t)sqlite3_column_bytes(st, 0));
        if (err) break;
    }
    if (!err && rc != SQLITE_DONE) err = mqr__store_fail(s, st, "cannot list credentials");
    sqlite3_finalize(st);
    return err;
}

int mqr__store_cred_count(mqr_store_t *s, size_t *count)
{
    if (!s || !count) return MQR_EINVAL;
    sqlite3_stmt *st = mqr__store_prepare(s, "SELECT count(*) FROM credentials");
    if (!st) return mqr__store_prepare_error(s);
    int err = 0;
    if (sqlite3_step(st) == SQLITE_ROW)
        *count = (size_t)sqlite3_column_int64(st, 0);
    else
        err = mqr__store_fail(s, st, "cannot count credentials");
    sqlite3_finalize(st);
    return err;
}

int mqr__store_cred_any(mqr_store_t *s, bool *any)
{
    if (!s || !any) return MQR_EINVAL;
    sqlite3_stmt *st = mqr__store_prepare(s, "SELECT EXISTS(SELECT 1 FROM credentials)");
    if (!st) return mqr__store_prepare_error(s);
    int err = 0;
    if (sqlite3_step(st) == SQLITE_ROW)
        *any = sqlite3_column_int(st, 0) != 0;
    else
        err = mqr__store_fail(s, st, "cannot read credentials");
    sqlite3_finalize(st);
    return err;
}
