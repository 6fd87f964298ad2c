/*
 * store_registry.c — the rows of the device registry (table `devices`,
 * schema version 6 in store.c) and the tenant column of `credentials`.
 *
 * Statements are prepared per call, as in store_auth.c: these run per
 * registration, per status change and per lazy counter flush (at most one
 * row per device every few seconds), never per message. Writes go through
 * the store's group commit. Must not: interpret the rows (registry.c does).
 */
#include "auth.h"
#include "registry.h"

#include <stdlib.h>
#include <string.h>

static int bind_counters(sqlite3_stmt *st, int first, const mqr_device_t *d)
{
    int rc = sqlite3_bind_int(st, first, d->status);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, first + 1, (sqlite3_int64)d->status_ms);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, first + 2, (sqlite3_int64)d->last_seen_ms);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, first + 3, (sqlite3_int64)d->msgs_in);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, first + 4, (sqlite3_int64)d->msgs_out);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, first + 5, (sqlite3_int64)d->bytes_in);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, first + 6, (sqlite3_int64)d->bytes_out);
    return rc;
}

int mqr__store_device_put(mqr_store_t *s, const mqr_device_t *d)
{
    if (!s || !d) return MQR_EINVAL;
    sqlite3_stmt *st = mqr__store_prepare(
        s, "INSERT INTO devices(tenant, id, name, type, metadata, created_ms, status,"
           " status_ms, last_seen_ms, msgs_in, msgs_out, bytes_in, bytes_out)"
           " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
           " ON CONFLICT(tenant, id) DO UPDATE SET name = excluded.name,"
           " type = excluded.type, metadata = excluded.metadata,"
           " status = excluded.status, status_ms = excluded.status_ms,"
           " last_seen_ms = excluded.last_seen_ms, msgs_in = excluded.msgs_in,"
           " msgs_out = excluded.msgs_out, bytes_in = excluded.bytes_in,"
           " bytes_out = excluded.bytes_out");
    if (!st) return mqr__store_prepare_error(s);
    int rc = sqlite3_bind_text(st, 1, d->tenant, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(st, 2, d->id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(st, 3, d->name, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(st, 4, d->type, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(st, 5, d->metadata, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 6, (sqlite3_int64)d->created_ms);
    if (rc == SQLITE_OK) rc = bind_counters(st, 7, d);
    int err = rc == SQLITE_OK ? mqr__store_write(s, st, "cannot store device")
                              : mqr__store_fail(s, st, "cannot bind device");
    sqlite3_finalize(st);
    return err;
}

int mqr__store_device_counters(mqr_store_t *s, const mqr_device_t *d)
{
    if (!s || !d) return MQR_EINVAL;
    sqlite3_stmt *st =
        mqr__store_prepare(s, "UPDATE devices SET status = ?1, status_ms = ?2,"
                              " last_seen_ms = ?3, msgs_in = ?4, msgs_out = ?5,"
                              " bytes_in = ?6, bytes_out = ?7 WHERE tenant = ?8 AND id = ?9");
    if (!st) return mqr__store_prepare_error(s);
    int rc = bind_counters(st, 1, d);
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(st, 8, d->tenant, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(st, 9, d->id, -1, SQLITE_STATIC);
    int err = rc == SQLITE_OK ? mqr__store_write(s, st, "cannot store device counters")
                              : mqr__store_fail(s, st, "cannot bind device counters");
    sqlite3_finalize(st);
    return err;
}

int mqr__store_device_delete(mqr_store_t *s, const char *tenant, const char *id)
{
    if (!s || !tenant || !id) return MQR_EINVAL;
    sqlite3_stmt *st = mqr__store_prepare(s, "DELETE FROM devices WHERE tenant = ?1 AND id = ?2");
    if (!st) return mqr__store_prepare_error(s);
    int rc = sqlite3_bind_text(st, 1, tenant, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
    int err = rc == SQLITE_OK ? mqr__store_write(s, st, "cannot delete device")
                              : mqr__store_fail(s, st, "cannot bind device");
    sqlite3_finalize(st);
    return err;
}

static const char *col_text(sqlite3_stmt *st, int i)
{
    const char *t = (const char *)sqlite3_column_text(st, i);
    return t ? t : "";
}

int mqr__store_devices_load(mqr_store_t *s, mqr_store_device_fn cb, void *arg)
{
    if (!s || !cb) return MQR_EINVAL;
    sqlite3_stmt *st =
        mqr__store_prepare(s, "SELECT tenant, id, name, type, metadata, status, status_ms,"
                              " created_ms, last_seen_ms, msgs_in, msgs_out, bytes_in,"
                              " bytes_out FROM devices ORDER BY tenant, id");
    if (!st) return mqr__store_prepare_error(s);
    int err = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        mqr_device_info_t d = {
            .tenant = col_text(st, 0),
            .id = col_text(st, 1),
            .name = col_text(st, 2),
            .type = col_text(st, 3),
            .metadata = col_text(st, 4),
            .status = sqlite3_column_int(st, 5),
            .status_ms = (uint64_t)sqlite3_column_int64(st, 6),
            .created_ms = (uint64_t)sqlite3_column_int64(st, 7),
            .last_seen_ms = (uint64_t)sqlite3_column_int64(st, 8),
            .msgs_in = (uint64_t)sqlite3_column_int64(st, 9),
            .msgs_out = (uint64_t)sqlite3_column_int64(st, 10),
            .bytes_in = (uint64_t)sqlite3_column_int64(st, 11),
            .bytes_out = (uint64_t)sqlite3_column_int64(st, 12),
        };
        err = cb(arg, &d);
        if (err) break;
    }
    if (!err && rc != SQLITE_DONE) err = mqr__store_fail(s, st, "cannot load devices");
    sqlite3_finalize(st);
    return err;
}

int mqr__store_cred_tenant_get(mqr_store_t *s, const char *user, char **tenant)
{
    if (!s || !user || !tenant) return MQR_EINVAL;
    *tenant = NULL;
    sqlite3_stmt *st = mqr__store_prepare(s, "SELECT tenant FROM credentials WHERE username = ?1");
    if (!st) return mqr__store_prepare_error(s);
    int err = MQR_ENOENT;
    if (sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC) != SQLITE_OK) {
        err = mqr__store_fail(s, st, "cannot bind user name");
    } else {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *tenant = strdup(col_text(st, 0));
            err = *tenant ? 0 : MQR_ENOMEM;
        } else if (rc != SQLITE_DONE) {
            err = mqr__store_fail(s, st, "cannot read credentials");
        }
    }
    sqlite3_finalize(st);
    return err;
}

int mqr__store_cred_tenant_set(mqr_store_t *s, const char *user, const char *tenant)
{
    if (!s || !user) return MQR_EINVAL;
    if (!tenant) tenant = "";
    if (tenant[0] && !mqr__tenant_valid(tenant, strlen(tenant))) return MQR_EINVAL;
    sqlite3_stmt *st =
        mqr__store_prepare(s, "UPDATE credentials SET tenant = ?1 WHERE username = ?2");
    if (!st) return mqr__store_prepare_error(s);
    int rc = sqlite3_bind_text(st, 1, tenant, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(st, 2, user, -1, SQLITE_STATIC);
    int err = rc == SQLITE_OK ? mqr__store_write(s, st, "cannot set tenant")
                              : mqr__store_fail(s, st, "cannot bind tenant");
    if (err == 0 && sqlite3_changes(mqr__store_db(s)) == 0) err = MQR_ENOENT;
    sqlite3_finalize(st);
    return err;
}
