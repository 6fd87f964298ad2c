/*
 * store_client_sessions.c — the session tables of the store (schema version 2):
 * prepared statements, writes through the store's group commit, and the
 * start-up load.
 *
 * It stores what the listener hands it and hands it back; it must not apply
 * MQTT rules (expiry, limits, ordering of redelivery) and must not commit on
 * its own: every write goes through mqr__store_write.
 */
#include "store_client_sessions.h"

#include <stdlib.h>
#include <string.h>

enum {
    SS_PUT,
    SS_DEL,
    SS_SUB_PUT,
    SS_SUB_DEL,
    SS_MSG_PUT,
    SS_MSG_STATE,
    SS_MSG_DEL,
    SS_QOS2_PUT,
    SS_QOS2_DEL,
    SS_LOAD_SESSIONS,
    SS_LOAD_SUBS,
    SS_LOAD_MSGS,
    SS_LOAD_QOS2,
    SS_COUNT_
};

static const char *const sql[SS_COUNT_] = {
    [SS_PUT] = "INSERT INTO sessions(client_id, version, expiry_s, disconnected_ms)"
               " VALUES(?1, ?2, ?3, ?4) ON CONFLICT(client_id) DO UPDATE SET"
               " version = excluded.version, expiry_s = excluded.expiry_s,"
               " disconnected_ms = excluded.disconnected_ms",
    [SS_DEL] = "DELETE FROM sessions WHERE client_id = ?1",
    [SS_SUB_PUT] = "INSERT INTO session_subs(client_id, filter, qos, flags, sub_id)"
                   " VALUES(?1, ?2, ?3, ?4, ?5) ON CONFLICT(client_id, filter) DO UPDATE SET"
                   " qos = excluded.qos, flags = excluded.flags, sub_id = excluded.sub_id",
    [SS_SUB_DEL] = "DELETE FROM session_subs WHERE client_id = ?1 AND filter = ?2",
    [SS_MSG_PUT] = "INSERT OR REPLACE INTO session_msgs(client_id, seq, pid, state, qos, retain,"
                   " sub_id, topic, payload, props, created_ms, expiry_s)"
                   " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    [SS_MSG_STATE] = "UPDATE session_msgs SET pid = ?3, state = ?4"
                     " WHERE client_id = ?1 AND seq = ?2",
    [SS_MSG_DEL] = "DELETE FROM session_msgs WHERE client_id = ?1 AND seq = ?2",
    [SS_QOS2_PUT] = "INSERT OR IGNORE INTO session_qos2(client_id, pid) VALUES(?1, ?2)",
    [SS_QOS2_DEL] = "DELETE FROM session_qos2 WHERE client_id = ?1 AND pid = ?2",
    [SS_LOAD_SESSIONS] = "SELECT client_id, version, expiry_s, disconnected_ms FROM sessions",
    [SS_LOAD_SUBS] = "SELECT client_id, filter, qos, flags, sub_id FROM session_subs",
    [SS_LOAD_MSGS] = "SELECT client_id, seq, pid, state, qos, retain, sub_id, topic, payload,"
                     " props, created_ms, expiry_s FROM session_msgs ORDER BY client_id, seq",
    [SS_LOAD_QOS2] = "SELECT client_id, pid FROM session_qos2",
};

struct mqr_store_client_sessions {
    mqr_store_t *s;
    sqlite3_stmt *st[SS_COUNT_];
};

int mqr__store_client_sessions_open(mqr_store_t *s, mqr_store_client_sessions_t **out)
{
    *out = NULL;
    sqlite3 *db = mqr__store_db(s);
    if (!db) return MQR_EINVAL;
    mqr_store_client_sessions_t *ss = calloc(1, sizeof *ss);
    if (!ss) return MQR_ENOMEM;
    ss->s = s;
    for (int i = 0; i < SS_COUNT_; i++) {
        if (sqlite3_prepare_v3(db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &ss->st[i], NULL) !=
            SQLITE_OK) {
            int rc = mqr__store_fail(s, NULL, "cannot prepare session statement");
            mqr__store_client_sessions_close(ss);
            return rc;
        }
    }
    *out = ss;
    return 0;
}

void mqr__store_client_sessions_close(mqr_store_client_sessions_t *ss)
{
    if (!ss) return;
    for (int i = 0; i < SS_COUNT_; i++)
        sqlite3_finalize(ss->st[i]);
    free(ss);
}

/* Binds the client id as parameter 1 of statement k. */
static sqlite3_stmt *with_id(mqr_store_client_sessions_t *ss, int k, const char *id, size_t id_len)
{
    sqlite3_stmt *st = ss->st[k];
    if (sqlite3_bind_text(st, 1, id, (int)id_len, SQLITE_STATIC) != SQLITE_OK) return NULL;
    return st;
}

static int ss_write(mqr_store_client_sessions_t *ss, sqlite3_stmt *st, int rc, const char *what)
{
    if (rc != SQLITE_OK) return mqr__store_fail(ss->s, st, what);
    return mqr__store_write(ss->s, st, what);
}

int mqr__store_client_session_put(mqr_store_client_sessions_t *ss, const char *id, size_t id_len,
                                  int version, uint32_t expiry_s, uint64_t disconnected_ms)
{
    sqlite3_stmt *st = with_id(ss, SS_PUT, id, id_len);
    int rc = st ? SQLITE_OK : SQLITE_ERROR;
    st = ss->st[SS_PUT];
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(st, 2, version);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 3, expiry_s);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 4, (sqlite3_int64)disconnected_ms);
    return ss_write(ss, st, rc, "cannot store session");
}

int mqr__store_client_session_delete(mqr_store_client_sessions_t *ss, const char *id, size_t id_len)
{
    sqlite3_stmt *st = with_id(ss, SS_DEL, id, id_len);
    return ss_write(ss, ss->st[SS_DEL], st ? SQLITE_OK : SQLITE_ERROR, "cannot delete session");
}

int mqr__store_client_session_sub_put(mqr_store_client_sessions_t *ss, const char *id,
                                      size_t id_len, const char *filter, size_t flen, uint8_t qos,
                                      uint8_t flags, uint32_t sub_id)
{
    sqlite3_stmt *st = ss->st[SS_SUB_PUT];
    int rc = with_id(ss, SS_SUB_PUT, id, id_len) ? SQLITE_OK : SQLITE_ERROR;
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(st, 2, filter, (int)flen, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(st, 3, qos);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(st, 4, flags);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 5, sub_id);
    return ss_write(ss, st, rc, "cannot store subscription");
}

int mqr__store_client_session_sub_delete(mqr_store_client_sessions_t *ss, const char *id,
                                         size_t id_len, const char *filter, size_t flen)
{
    sqlite3_stmt *st = ss->st[SS_SUB_DEL];
    int rc = with_id(ss, SS_SUB_DEL, id, id_len) ? SQLITE_OK : SQLITE_ERROR;
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(st, 2, filter, (int)flen, SQLITE_STATIC);
    return ss_write(ss, st, rc, "cannot delete subscription");
}

int mqr__store_client_session_msg_put(mqr_store_client_sessions_t *ss, const char *id,
                                      size_t id_len, uint64_t seq, const mqr_msg_t *m, uint8_t qos,
                                      bool retain, const uint32_t *sub_ids, uint32_t n_ids,
                                      uint16_t pid, uint8_t state)
{
    sqlite3_stmt *st = ss->st[SS_MSG_PUT];
    /* one copy for several subscriptions has several identifiers: the
     * column (INT affinity, which never converts a BLOB) then holds them as
     * a blob of 4-byte big-endian values, so no schema change was needed */
    uint8_t *packed = NULL;
    if (n_ids > 1) {
        packed = malloc((size_t)n_ids * 4);
        if (!packed) return MQR_ENOMEM;
        for (uint32_t i = 0; i < n_ids; i++) {
            packed[4 * i] = (uint8_t)(sub_ids[i] >> 24);
            packed[4 * i + 1] = (uint8_t)(sub_ids[i] >> 16);
            packed[4 * i + 2] = (uint8_t)(sub_ids[i] >> 8);
            packed[4 * i + 3] = (uint8_t)sub_ids[i];
        }
    }
    int rc = with_id(ss, SS_MSG_PUT, id, id_len) ? SQLITE_OK : SQLITE_ERROR;
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 2, (sqlite3_int64)seq);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(st, 3, pid);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(st, 4, state);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(st, 5, qos);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(st, 6, retain);
    if (rc == SQLITE_OK)
        rc = packed ? sqlite3_bind_blob(st, 7, packed, (int)(n_ids * 4), free)
                    : sqlite3_bind_int64(st, 7, n_ids ? sub_ids[0] : 0);
    else
        free(packed);
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(st, 8, m->topic, m->topic_len, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_blob64(st, 9, m->payload, m->payload_len, SQLITE_STATIC);
    if (rc == SQLITE_OK && m->props_len)
        rc = sqlite3_bind_blob64(st, 10, m->props, m->props_len, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 11, (sqlite3_int64)m->created_ms);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 12, m->expiry_s);
    return ss_write(ss, st, rc, "cannot store session message");
}

int mqr__store_client_session_msg_state(mqr_store_client_sessions_t *ss, const char *id,
                                        size_t id_len, uint64_t seq, uint16_t pid, uint8_t state)
{
    sqlite3_stmt *st = ss->st[SS_MSG_STATE];
    int rc = with_id(ss, SS_MSG_STATE, id, id_len) ? SQLITE_OK : SQLITE_ERROR;
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 2, (sqlite3_int64)seq);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(st, 3, pid);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(st, 4, state);
    return ss_write(ss, st, rc, "cannot update session message");
}

int mqr__store_client_session_msg_delete(mqr_store_client_sessions_t *ss, const char *id,
                                         size_t id_len, uint64_t seq)
{
    sqlite3_stmt *st = ss->st[SS_MSG_DEL];
    int rc = with_id(ss, SS_MSG_DEL, id, id_len) ? SQLITE_OK : SQLITE_ERROR;
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 2, (sqlite3_int64)seq);
    return ss_write(ss, st, rc, "cannot delete session message");
}

int mqr__store_client_session_qos2_put(mqr_store_client_sessions_t *ss, const char *id,
                                       size_t id_len, uint16_t pid)
{
    sqlite3_stmt *st = ss->st[SS_QOS2_PUT];
    int rc = with_id(ss, SS_QOS2_PUT, id, id_len) ? SQLITE_OK : SQLITE_ERROR;
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(st, 2, pid);
    return ss_write(ss, st, rc, "cannot store QoS 2 packet id");
}

int mqr__store_client_session_qos2_delete(mqr_store_client_sessions_t *ss, const char *id,
                                          size_t id_len, uint16_t pid)
{
    sqlite3_stmt *st = ss->st[SS_QOS2_DEL];
    int rc = with_id(ss, SS_QOS2_DEL, id, id_len) ? SQLITE_OK : SQLITE_ERROR;
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(st, 2, pid);
    return ss_write(ss, st, rc, "cannot delete QoS 2 packet id");
}

/* ---- load ------------------------------------------------------------------- */

static uint8_t clamp_u8(int v, int max)
{
    return (uint8_t)(v < 0 ? 0 : v > max ? max : v);
}

static uint32_t clamp_u32(sqlite3_int64 v)
{
    return v < 0 ? 0 : v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

#define COL_TEXT(st, i) ((const char *)sqlite3_column_text((st), (i)))
#define COL_LEN(st, i) ((size_t)sqlite3_column_bytes((st), (i)))

static int load_rows(mqr_store_client_sessions_t *ss, int k,
                     const mqr_store_client_sessions_load_t *cb, void *arg)
{
    sqlite3_stmt *st = ss->st[k];
    int err = 0, rc = SQLITE_DONE;
    while (!err && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = COL_TEXT(st, 0);
        size_t id_len = COL_LEN(st, 0);
        if (!id || !id_len) continue; /* the file is input like any other */
        switch (k) {
        case SS_LOAD_SESSIONS:
            err = cb->session(
                arg, id, id_len, sqlite3_column_int(st, 1), clamp_u32(sqlite3_column_int64(st, 2)),
                (uint64_t)(sqlite3_column_int64(st, 3) > 0 ? sqlite3_column_int64(st, 3) : 0));
            break;
        case SS_LOAD_SUBS: {
            const char *f = COL_TEXT(st, 1);
            if (!f || !COL_LEN(st, 1)) break;
            err = cb->sub(
                arg, id, id_len, f, COL_LEN(st, 1), clamp_u8(sqlite3_column_int(st, 2), 2),
                clamp_u8(sqlite3_column_int(st, 3), 15), clamp_u32(sqlite3_column_int64(st, 4)));
            break;
        }
        case SS_LOAD_MSGS: {
            const char *topic = COL_TEXT(st, 7);
            if (!topic || !COL_LEN(st, 7)) break;
            sqlite3_int64 created = sqlite3_column_int64(st, 10);
            uint8_t qos = clamp_u8(sqlite3_column_int(st, 4), 2);
            if (!qos) break;
            mqr_msg_init_t in = {
                .topic = topic,
                .topic_len = COL_LEN(st, 7),
                .payload = sqlite3_column_blob(st, 8),
                .payload_len = COL_LEN(st, 8),
                .props = sqlite3_column_blob(st, 9),
                .props_len = COL_LEN(st, 9),
                .qos = qos,
                .origin = MQR_ORIGIN_STORE,
                .expiry_s = clamp_u32(sqlite3_column_int64(st, 11)),
                .created_ms = created > 0 ? (uint64_t)created : 1,
            };
            mqr_msg_t *m = mqr__msg_new(&in);
            if (!m) {
                err = MQR_ENOMEM;
                break;
            }
            /* one identifier as an integer, several as a blob (msg_put) */
            uint32_t one = 0, *ids = &one, n_ids = 0;
            if (sqlite3_column_type(st, 6) == SQLITE_BLOB) {
                const uint8_t *b = sqlite3_column_blob(st, 6);
                n_ids = (uint32_t)(COL_LEN(st, 6) / 4);
                if (n_ids && !(ids = malloc(n_ids * sizeof *ids))) {
                    mqr_msg_unref(m);
                    err = MQR_ENOMEM;
                    break;
                }
                for (uint32_t i = 0; i < n_ids; i++)
                    ids[i] = (uint32_t)b[4 * i] << 24 | (uint32_t)b[4 * i + 1] << 16 |
                             (uint32_t)b[4 * i + 2] << 8 | b[4 * i + 3];
            } else {
                one = clamp_u32(sqlite3_column_int64(st, 6));
                n_ids = one != 0;
            }
            int pid = sqlite3_column_int(st, 2);
            err = cb->msg(arg, id, id_len, (uint64_t)sqlite3_column_int64(st, 1), m, qos,
                          sqlite3_column_int(st, 5) != 0, ids, n_ids,
                          (uint16_t)(pid > 0 && pid <= 65535 ? pid : 0),
                          clamp_u8(sqlite3_column_int(st, 3), 3));
            if (ids != &one) free(ids);
            break;
        }
        default: {
            int pid = sqlite3_column_int(st, 1);
            if (pid > 0 && pid <= 65535) err = cb->qos2(arg, id, id_len, (uint16_t)pid);
            break;
        }
        }
    }
    if (!err && rc != SQLITE_DONE) err = mqr__store_fail(ss->s, NULL, "cannot read sessions");
    sqlite3_reset(st);
    return err;
}

int mqr__store_client_sessions_load(mqr_store_client_sessions_t *ss,
                                    const mqr_store_client_sessions_load_t *cb, void *arg)
{
    int err = 0;
    for (int k = SS_LOAD_SESSIONS; !err && k <= SS_LOAD_QOS2; k++)
        err = load_rows(ss, k, cb, arg);
    return err;
}
