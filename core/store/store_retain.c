/*
 * store_retain.c — the retained table: one row per topic with a retained
 * message (payload, QoS, v5 properties, creation time, expiry), written in
 * the store's group-committed transaction with statements store.c prepared
 * once (retained writes are on the publish path). Expired rows are not
 * loaded and are deleted at load. Must not interpret anything MQTT does
 * not say of retained messages (an empty payload deletes, expiry).
 */
#include "store.h"
#include "store_int.h"

#include <string.h>

int mqr__store_retain_delete(mqr_store_t *s, const char *topic, size_t len)
{
    if (!s || !topic || !len || len > UINT16_MAX) return MQR_EINVAL;
    if (!mqr__store_db(s)) return MQR_ECLOSED;
    sqlite3_stmt *st = mqr__store_stmt(s, ST_RETAIN_DEL);
    if (sqlite3_bind_text(st, 1, topic, (int)len, SQLITE_STATIC) != SQLITE_OK)
        return mqr__store_fail(s, st, "cannot bind retained topic");
    return mqr__store_write(s, st, "cannot delete retained message");
}

int mqr__store_retain_set(mqr_store_t *s, const mqr_msg_t *msg)
{
    if (!s || !msg || !msg->topic_len) return MQR_EINVAL;
    if (!mqr__store_db(s)) return MQR_ECLOSED;
    if (msg->payload_len == 0) return mqr__store_retain_delete(s, msg->topic, msg->topic_len);
    sqlite3_stmt *st = mqr__store_stmt(s, ST_RETAIN_PUT);
    int rc = sqlite3_bind_text(st, 1, msg->topic, msg->topic_len, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_blob64(st, 2, msg->payload, msg->payload_len, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(st, 3, msg->qos);
    if (rc == SQLITE_OK && msg->props_len)
        rc = sqlite3_bind_blob64(st, 4, msg->props, msg->props_len, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 5, (sqlite3_int64)msg->created_ms);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 6, msg->expiry_s);
    if (rc != SQLITE_OK) return mqr__store_fail(s, st, "cannot bind retained message");
    return mqr__store_write(s, st, "cannot store retained message");
}

static bool expired(sqlite3_int64 created_ms, sqlite3_int64 expiry_s, sqlite3_int64 now)
{
    return expiry_s > 0 && created_ms + expiry_s * 1000 < now;
}

int mqr__store_retain_load(mqr_store_t *s, int (*cb)(void *arg, mqr_msg_t *msg), void *arg)
{
    if (!s || !cb) return MQR_EINVAL;
    if (!mqr__store_db(s)) return MQR_ECLOSED;
    sqlite3_int64 now = (sqlite3_int64)mqr__now_ms();
    sqlite3_stmt *st = mqr__store_stmt(s, ST_RETAIN_LOAD);
    size_t stale = 0;
    int err = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        sqlite3_int64 created = sqlite3_column_int64(st, 4);
        sqlite3_int64 expiry = sqlite3_column_int64(st, 5);
        if (expired(created, expiry, now)) {
            stale++;
            continue;
        }
        int qos = sqlite3_column_int(st, 2);
        mqr_msg_init_t in = {
            .topic = (const char *)sqlite3_column_text(st, 0),
            .topic_len = (size_t)sqlite3_column_bytes(st, 0),
            .payload = sqlite3_column_blob(st, 1),
            .payload_len = (size_t)sqlite3_column_bytes(st, 1),
            .props = sqlite3_column_blob(st, 3),
            .props_len = (size_t)sqlite3_column_bytes(st, 3),
            /* The file is input like any other: keep a bad QoS in range. */
            .qos = qos < 0   ? 0
                   : qos > 2 ? 2
                             : qos,
            .retain = true,
            .origin = MQR_ORIGIN_STORE,
            .expiry_s = expiry > 0 && expiry <= UINT32_MAX ? (uint32_t)expiry : 0,
            .created_ms = created > 0 ? (uint64_t)created : 1,
        };
        if (!in.topic || !in.topic_len) continue; /* a hand-edited row with no topic */
        mqr_msg_t *msg = mqr__msg_new(&in);
        if (!msg) {
            err = MQR_ENOMEM;
            break;
        }
        err = cb(arg, msg);
        if (err) break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        err = mqr__store_fail(s, NULL, "cannot read retained messages");
    sqlite3_reset(st);
    if (err || !stale) return err;

    st = mqr__store_stmt(s, ST_RETAIN_EXPIRE);
    if (sqlite3_bind_int64(st, 1, now) != SQLITE_OK)
        return mqr__store_fail(s, st, "cannot bind expiry time");
    return mqr__store_write(s, st, "cannot delete expired retained messages");
}

int mqr__store_retain_count(mqr_store_t *s, size_t *count)
{
    if (!s || !count) return MQR_EINVAL;
    if (!mqr__store_db(s)) return MQR_ECLOSED;
    sqlite3_stmt *st = mqr__store_stmt(s, ST_RETAIN_COUNT);
    int err = 0;
    if (sqlite3_bind_int64(st, 1, (sqlite3_int64)mqr__now_ms()) != SQLITE_OK)
        return mqr__store_fail(s, st, "cannot bind expiry time");
    if (sqlite3_step(st) == SQLITE_ROW)
        *count = (size_t)sqlite3_column_int64(st, 0);
    else
        err = mqr__store_fail(s, NULL, "cannot count retained messages");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return err;
}
