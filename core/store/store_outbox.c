/*
 * store_outbox.c — the upstream_outbox table (schema version 7, store.c):
 * rows of QoS 1/2 publishes that persistent native sessions owe their
 * brokers. Statements are prepared once (a put and a delete per forwarded
 * message) and finalized before the store closes. Sequence numbers are
 * the rowid, handed out here from the largest one in the file, so a row
 * put in a turn whose commit failed never shares its number with one put
 * later.
 */
#include "store_outbox.h"

#include <stdlib.h>
#include <string.h>

enum { OB_PUT, OB_DEL, OB_DISCARD, OB_COUNT, OB_LOAD, OB_N_ };

static const char *const sql[OB_N_] = {
    [OB_PUT] = "INSERT INTO upstream_outbox(seq, session, topic, payload, props, qos, retain,"
               " expiry_s, stored_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [OB_DEL] = "DELETE FROM upstream_outbox WHERE seq = ?1",
    [OB_DISCARD] = "DELETE FROM upstream_outbox WHERE session = ?1",
    [OB_COUNT] = "SELECT count(*) FROM upstream_outbox WHERE session = ?1",
    [OB_LOAD] = "SELECT seq, topic, payload, props, qos, retain, expiry_s, stored_ms"
                " FROM upstream_outbox WHERE session = ?1 ORDER BY seq",
};

struct mqr_store_outbox {
    mqr_store_t *s;
    sqlite3_stmt *st[OB_N_];
    uint64_t next_seq;
};

int mqr__store_outbox_open(mqr_store_t *s, mqr_store_outbox_t **out)
{
    *out = NULL;
    sqlite3 *db = mqr__store_db(s);
    if (!db) return MQR_EINVAL;
    mqr_store_outbox_t *o = calloc(1, sizeof *o);
    if (!o) return MQR_ENOMEM;
    o->s = s;
    for (int i = 0; i < OB_N_; i++) {
        if (sqlite3_prepare_v3(db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &o->st[i], NULL) !=
            SQLITE_OK) {
            int rc = mqr__store_fail(s, NULL, "cannot prepare upstream outbox statement");
            mqr__store_outbox_close(o);
            return rc;
        }
    }
    sqlite3_stmt *st = mqr__store_prepare(s, "SELECT coalesce(max(seq), 0) FROM upstream_outbox");
    if (!st) {
        int rc = mqr__store_prepare_error(s);
        mqr__store_outbox_close(o);
        return rc;
    }
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) o->next_seq = (uint64_t)sqlite3_column_int64(st, 0) + 1;
    int err = rc == SQLITE_ROW ? 0 : mqr__store_fail(s, st, "cannot read the upstream outbox");
    sqlite3_finalize(st);
    if (err < 0) {
        mqr__store_outbox_close(o);
        return err;
    }
    *out = o;
    return 0;
}

void mqr__store_outbox_close(mqr_store_outbox_t *o)
{
    if (!o) return;
    for (int i = 0; i < OB_N_; i++)
        sqlite3_finalize(o->st[i]);
    free(o);
}

static sqlite3_stmt *stmt(mqr_store_outbox_t *o, int which)
{
    if (!mqr__store_db(o->s)) return NULL; /* closing */
    return o->st[which];
}

int mqr__store_outbox_put(mqr_store_outbox_t *o, const char *session, const char *topic,
                          const mqr_msg_t *msg, uint32_t expiry_s, uint64_t *seq)
{
    if (!o || !session || !topic || !msg || !seq) return MQR_EINVAL;
    sqlite3_stmt *st = stmt(o, OB_PUT);
    if (!st) return MQR_ECLOSED;
    uint64_t n = o->next_seq;
    int rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)n);
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(st, 2, session, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(st, 3, topic, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_blob64(st, 4, msg->payload ? (const void *)msg->payload : "",
                                 msg->payload_len, SQLITE_STATIC);
    if (rc == SQLITE_OK && msg->props_len)
        rc = sqlite3_bind_blob64(st, 5, msg->props, msg->props_len, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(st, 6, msg->qos);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(st, 7, msg->retain ? 1 : 0);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 8, expiry_s);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 9, (sqlite3_int64)mqr__now_ms());
    if (rc != SQLITE_OK) return mqr__store_fail(o->s, st, "cannot bind an upstream outbox row");
    int err = mqr__store_write(o->s, st, "cannot store an upstream outbox row");
    if (err < 0) return err;
    o->next_seq = n + 1;
    *seq = n;
    return 0;
}

int mqr__store_outbox_delete(mqr_store_outbox_t *o, uint64_t seq)
{
    if (!o || !seq) return MQR_EINVAL;
    sqlite3_stmt *st = stmt(o, OB_DEL);
    if (!st) return MQR_ECLOSED;
    if (sqlite3_bind_int64(st, 1, (sqlite3_int64)seq) != SQLITE_OK)
        return mqr__store_fail(o->s, st, "cannot bind an upstream outbox row");
    return mqr__store_write(o->s, st, "cannot delete an upstream outbox row");
}

int mqr__store_outbox_discard(mqr_store_outbox_t *o, const char *session)
{
    if (!o || !session) return MQR_EINVAL;
    sqlite3_stmt *st = stmt(o, OB_DISCARD);
    if (!st) return MQR_ECLOSED;
    if (sqlite3_bind_text(st, 1, session, -1, SQLITE_STATIC) != SQLITE_OK)
        return mqr__store_fail(o->s, st, "cannot bind a session name");
    return mqr__store_write(o->s, st, "cannot delete a session's upstream outbox rows");
}

int64_t mqr__store_outbox_count(mqr_store_outbox_t *o, const char *session)
{
    if (!o || !session) return MQR_EINVAL;
    sqlite3_stmt *st = stmt(o, OB_COUNT);
    if (!st) return MQR_ECLOSED;
    int64_t n = MQR_ESTORE;
    if (sqlite3_bind_text(st, 1, session, -1, SQLITE_STATIC) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    else
        mqr__store_fail(o->s, st, "cannot count upstream outbox rows");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return n;
}

/* Seconds of expiry a row has left: 0 none, -1 passed. */
static int64_t expiry_left(sqlite3_int64 expiry_s, sqlite3_int64 stored_ms, uint64_t now)
{
    if (expiry_s <= 0) return 0;
    uint64_t age_s = now > (uint64_t)stored_ms ? (now - (uint64_t)stored_ms) / 1000u : 0;
    return (uint64_t)expiry_s > age_s ? (int64_t)((uint64_t)expiry_s - age_s) : -1;
}

int mqr__store_outbox_load(mqr_store_outbox_t *o, const char *session,
                           int (*cb)(void *arg, uint64_t seq, mqr_msg_t *msg, uint32_t expiry_s),
                           void *arg, uint64_t *expired)
{
    if (expired) *expired = 0;
    if (!o || !session || !cb) return MQR_EINVAL;
    sqlite3_stmt *st = stmt(o, OB_LOAD);
    if (!st) return MQR_ECLOSED;
    if (sqlite3_bind_text(st, 1, session, -1, SQLITE_STATIC) != SQLITE_OK)
        return mqr__store_fail(o->s, st, "cannot bind a session name");
    uint64_t now = mqr__now_ms();
    uint64_t *stale = NULL; /* deleted once the statement is done */
    size_t n_stale = 0, cap_stale = 0;
    int ret = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        uint64_t seq = (uint64_t)sqlite3_column_int64(st, 0);
        int64_t left = expiry_left(sqlite3_column_int64(st, 6), sqlite3_column_int64(st, 7), now);
        if (left < 0) {
            if (n_stale == cap_stale) {
                size_t cap = cap_stale ? cap_stale * 2 : 16;
                uint64_t *v = realloc(stale, cap * sizeof *v);
                if (!v) {
                    ret = MQR_ENOMEM;
                    break;
                }
                stale = v;
                cap_stale = cap;
            }
            stale[n_stale++] = seq;
            continue;
        }
        int qos = sqlite3_column_int(st, 4);
        mqr_msg_init_t in = {
            .topic = (const char *)sqlite3_column_text(st, 1),
            .topic_len = (size_t)sqlite3_column_bytes(st, 1),
            .payload = sqlite3_column_blob(st, 2),
            .payload_len = (size_t)sqlite3_column_bytes(st, 2),
            .props = sqlite3_column_blob(st, 3),
            .props_len = (size_t)sqlite3_column_bytes(st, 3),
            .qos = qos == 2 ? 2 : 1, /* the file is input: only QoS 1/2 rows are written */
            .retain = sqlite3_column_int(st, 5) != 0,
            .origin = MQR_ORIGIN_STORE,
            .created_ms = (uint64_t)sqlite3_column_int64(st, 7),
        };
        if (!in.topic || !in.topic_len) continue; /* a hand-edited row with no topic */
        mqr_msg_t *msg = mqr__msg_new(&in);
        if (!msg) {
            ret = MQR_ENOMEM;
            break;
        }
        if ((ret = cb(arg, seq, msg, (uint32_t)left)) != 0) break;
    }
    if (ret == 0 && rc != SQLITE_DONE)
        ret = mqr__store_fail(o->s, st, "cannot read upstream outbox");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    for (size_t i = 0; i < n_stale; i++)
        mqr__store_outbox_delete(o, stale[i]);
    if (expired) *expired = n_stale;
    free(stale);
    return ret;
}
