/*
 * store_queue.c — durable queues in the store (schema version 4): the queue
 * store ops (an entry stored, acked, dead-lettered, removed), the restore of
 * a durable queue when it is created, and the replay of stored messages by
 * topic filter.
 *
 * Every write goes through mqr__store_write, so it joins the loop turn's one
 * transaction (group commit): a burst of publishes and acks costs one fsync,
 * and a publish is durable once that transaction is committed, which
 * mqr__store_after_commit tells. Ids come from the queue; the store keeps a
 * high-water mark per queue (queues.next_id, moved ID_BLOCK ids ahead at a
 * time) so an id acked before a restart is never given again.
 *
 * This file stores what the queue hands it and hands it back: it applies no
 * queue rule of its own (TTL, limits, ordering) except skipping expired rows
 * in a replay, and never commits by itself.
 */
#include "store_queue.h"
#include "engine.h"

#include "topic.h"

#include <stdlib.h>
#include <string.h>

#define ID_BLOCK 65536u /* ids covered by one write of queues.next_id */

enum {
    SQ_NAME_GET,
    SQ_NAME_PUT,
    SQ_NAME_NEXT,
    SQ_PUT,
    SQ_DEL,
    SQ_DEAD_MOVE,
    SQ_DEAD_DEL,
    SQ_DEAD_PROPS,
    SQ_LOAD,
    SQ_LOAD_DEAD,
    SQ_REPLAY,
    SQ_COUNT_
};

/* The three reads share one column layout (see read_rows):
 * id, priority, expires_ms, reason, attempts, dead_ms, qos, retain, topic,
 * payload, props, created_ms, expiry_s, dead */
#define SEL_MSGS                                                                                   \
    "SELECT id, priority, expires_ms, 0, attempts, 0, qos, retain, topic, payload, props,"         \
    " created_ms, expiry_s, 0 FROM queue_msgs WHERE qid = ?1"
#define SEL_DEAD                                                                                   \
    "SELECT id, priority, 0, reason, attempts, dead_ms, qos, retain, topic, payload, props,"       \
    " created_ms, expiry_s, 1 FROM queue_dead WHERE qid = ?1"

static const char *const sql[SQ_COUNT_] = {
    [SQ_NAME_GET] = "SELECT qid, next_id FROM queues WHERE name = ?1",
    [SQ_NAME_PUT] = "INSERT INTO queues(name) VALUES(?1)",
    [SQ_NAME_NEXT] = "UPDATE queues SET next_id = ?2 WHERE qid = ?1 AND next_id < ?2",
    [SQ_PUT] = "INSERT INTO queue_msgs(qid, id, priority, expires_ms, qos, retain, topic, payload,"
               " props, created_ms, expiry_s) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    [SQ_DEL] = "DELETE FROM queue_msgs WHERE qid = ?1 AND id = ?2",
    [SQ_DEAD_MOVE] = "INSERT OR REPLACE INTO queue_dead(qid, id, priority, reason, attempts,"
                     " dead_ms, qos, retain, topic, payload, props, created_ms, expiry_s)"
                     " SELECT qid, id, priority, ?3, ?4, ?5, qos, retain, topic, payload, props,"
                     " created_ms, expiry_s FROM queue_msgs WHERE qid = ?1 AND id = ?2",
    [SQ_DEAD_DEL] = "DELETE FROM queue_dead WHERE qid = ?1 AND id = ?2",
    [SQ_DEAD_PROPS] = "UPDATE queue_dead SET props = ?3 WHERE qid = ?1 AND id = ?2",
    [SQ_LOAD] = SEL_MSGS " ORDER BY id",
    [SQ_LOAD_DEAD] = SEL_DEAD " ORDER BY dead_ms, id",
    [SQ_REPLAY] = SEL_MSGS " UNION ALL " SEL_DEAD " AND ?2 ORDER BY 1",
};

/* What the store knows of an open durable queue. It holds a reference on q
 * so the pointer cannot be reused by another queue while the record lives;
 * records of closed queues go at the next restore or at close. */
typedef struct sq_rec sq_rec_t;
struct sq_rec {
    sq_rec_t *next;
    mqr_queue_t *q;
    sqlite3_int64 qid;
    uint64_t reserved; /* ids below this are covered by queues.next_id */
};

struct mqr_store_queues {
    mqr_store_t *s;
    mqr_engine_t *e;
    sqlite3 *db;
    sqlite3_stmt *st[SQ_COUNT_];
    sq_rec_t *recs;
    sq_rec_t *last; /* the last one used: most turns touch one queue */
    mqr_store_queues_stats_t stats;
};

/* A stored row, read before anything is done with it. */
typedef struct {
    uint64_t id;
    int prio;
    uint64_t expires_ms;
    int reason;
    unsigned attempts;
    uint64_t dead_ms;
    bool dead;
    mqr_msg_t *msg;
} sq_row_t;

typedef struct {
    sq_row_t *v;
    size_t n, cap;
} sq_rows_t;

static void rows_free(sq_rows_t *r)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->v[i].msg) mqr_msg_unref(r->v[i].msg);
    free(r->v);
    r->v = NULL;
    r->n = r->cap = 0;
}

/* ---- open, close, records ------------------------------------------------- */

int mqr__store_queues_open(mqr_store_t *s, mqr_engine_t *e, mqr_store_queues_t **out)
{
    *out = NULL;
    sqlite3 *db = mqr__store_db(s);
    if (!db) return MQR_EINVAL;
    mqr_store_queues_t *sq = calloc(1, sizeof *sq);
    if (!sq) return MQR_ENOMEM;
    sq->s = s;
    sq->e = e;
    sq->db = db;
    for (int i = 0; i < SQ_COUNT_; i++) {
        if (sqlite3_prepare_v3(db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &sq->st[i], NULL) !=
            SQLITE_OK) {
            int rc = mqr__store_fail(s, NULL, "cannot prepare queue statement");
            mqr__store_queues_close(sq);
            return rc;
        }
    }
    *out = sq;
    return 0;
}

static void rec_free(sq_rec_t *r)
{
    mqr__queue_unref(r->q);
    free(r);
}

void mqr__store_queues_close(mqr_store_queues_t *sq)
{
    if (!sq) return;
    for (int i = 0; i < SQ_COUNT_; i++)
        sqlite3_finalize(sq->st[i]);
    while (sq->recs) {
        sq_rec_t *r = sq->recs;
        sq->recs = r->next;
        rec_free(r);
    }
    free(sq);
}

void mqr__store_queues_stats(const mqr_store_queues_t *sq, mqr_store_queues_stats_t *out)
{
    *out = sq->stats;
}

/* Drops the records of queues closed since. */
static void prune(mqr_store_queues_t *sq)
{
    for (sq_rec_t **pp = &sq->recs; *pp;) {
        sq_rec_t *r = *pp;
        if (!mqr__queue_closed(r->q)) {
            pp = &r->next;
            continue;
        }
        *pp = r->next;
        if (sq->last == r) sq->last = NULL;
        rec_free(r);
    }
}

static sq_rec_t *rec_find(mqr_store_queues_t *sq, mqr_queue_t *q)
{
    if (sq->last && sq->last->q == q) return sq->last;
    for (sq_rec_t *r = sq->recs; r; r = r->next) {
        if (r->q == q) {
            sq->last = r;
            return r;
        }
    }
    return NULL;
}

/* The queue's qid and stored next_id, adding its row when it has none. */
static int name_row(mqr_store_queues_t *sq, const char *name, sqlite3_int64 *qid, uint64_t *next_id)
{
    sqlite3_stmt *st = sq->st[SQ_NAME_GET];
    if (sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC) != SQLITE_OK)
        return mqr__store_fail(sq->s, st, "cannot bind queue name");
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *qid = sqlite3_column_int64(st, 0);
        sqlite3_int64 n = sqlite3_column_int64(st, 1);
        *next_id = n > 0 ? (uint64_t)n : 1;
    }
    int err = rc == SQLITE_ROW || rc == SQLITE_DONE
                  ? 0
                  : mqr__store_fail(sq->s, NULL, "cannot read queue name");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (err || rc == SQLITE_ROW) return err;

    st = sq->st[SQ_NAME_PUT];
    if (sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC) != SQLITE_OK)
        return mqr__store_fail(sq->s, st, "cannot bind queue name");
    if ((err = mqr__store_write(sq->s, st, "cannot store queue name")) < 0) return err;
    *qid = sqlite3_last_insert_rowid(sq->db);
    *next_id = 1;
    return 0;
}

static int rec_new(mqr_store_queues_t *sq, mqr_queue_t *q, uint64_t *next_id, sq_rec_t **out)
{
    sq_rec_t *r = calloc(1, sizeof *r);
    if (!r) return MQR_ENOMEM;
    int rc = name_row(sq, mqr__queue_name(q), &r->qid, next_id);
    if (rc < 0) {
        free(r);
        return rc;
    }
    r->reserved = *next_id;
    r->q = q;
    mqr__queue_ref(q);
    r->next = sq->recs;
    sq->recs = r;
    sq->last = r;
    *out = r;
    return 0;
}

/* The record of q; made on first use when q was created before the store's
 * restore function was installed. */
static sq_rec_t *rec_for(mqr_store_queues_t *sq, mqr_queue_t *q)
{
    sq_rec_t *r = rec_find(sq, q);
    if (r) return r;
    uint64_t next_id;
    return rec_new(sq, q, &next_id, &r) < 0 ? NULL : r;
}

/* ---- the store ops ---------------------------------------------------------- */

static int bind_key(sqlite3_stmt *st, sqlite3_int64 qid, uint64_t id)
{
    int rc = sqlite3_bind_int64(st, 1, qid);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 2, (sqlite3_int64)id);
    return rc;
}

static int write_st(mqr_store_queues_t *sq, sqlite3_stmt *st, int rc, const char *what)
{
    if (rc != SQLITE_OK) return mqr__store_fail(sq->s, st, what);
    return mqr__store_write(sq->s, st, what);
}

/* acked, dead and removed cannot refuse: a failure is counted and logged,
 * and the turn's commit waiters hear of it when SQLite dropped the batch */
static void note_failure(mqr_store_queues_t *sq, int rc)
{
    if (rc >= 0) return;
    sq->stats.write_errors++;
    MQR_LOG_W("store", "queue write failed: %s", mqr__store_last_error(sq->s));
}

static int op_stored(void *ctx, mqr_queue_t *q, uint64_t id, const mqr_msg_t *m, int priority,
                     uint64_t expires_wall_ms)
{
    mqr_store_queues_t *sq = ctx;
    sq_rec_t *r = rec_for(sq, q);
    if (!r) return MQR_ESTORE;
    int rc;
    if (id >= r->reserved) {
        /* the mark first: a failure then leaves no row behind */
        uint64_t mark = id + ID_BLOCK;
        sqlite3_stmt *st = sq->st[SQ_NAME_NEXT];
        rc = bind_key(st, r->qid, mark);
        if ((rc = write_st(sq, st, rc, "cannot store queue id mark")) < 0) return rc;
        r->reserved = mark;
    }
    sqlite3_stmt *st = sq->st[SQ_PUT];
    rc = bind_key(st, r->qid, id);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(st, 3, priority);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 4, (sqlite3_int64)expires_wall_ms);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(st, 5, m->qos);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(st, 6, m->retain);
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(st, 7, m->topic, m->topic_len, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_blob(st, 8, m->payload, (int)m->payload_len, SQLITE_STATIC);
    if (rc == SQLITE_OK && m->props_len)
        rc = sqlite3_bind_blob(st, 9, m->props, (int)m->props_len, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 10, (sqlite3_int64)m->created_ms);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 11, m->expiry_s);
    return write_st(sq, st, rc, "cannot store queue entry");
}

static int delete_entry(mqr_store_queues_t *sq, sq_rec_t *r, uint64_t id)
{
    sqlite3_stmt *st = sq->st[SQ_DEL];
    return write_st(sq, st, bind_key(st, r->qid, id), "cannot delete queue entry");
}

static void op_acked(void *ctx, mqr_queue_t *q, uint64_t id)
{
    mqr_store_queues_t *sq = ctx;
    sq_rec_t *r = rec_for(sq, q);
    note_failure(sq, r ? delete_entry(sq, r, id) : MQR_ESTORE);
}

static void op_dead(void *ctx, mqr_queue_t *q, uint64_t id, int reason, unsigned attempts)
{
    mqr_store_queues_t *sq = ctx;
    sq_rec_t *r = rec_for(sq, q);
    if (!r) {
        note_failure(sq, MQR_ESTORE);
        return;
    }
    sqlite3_stmt *st = sq->st[SQ_DEAD_MOVE];
    int rc = bind_key(st, r->qid, id);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(st, 3, reason);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 4, attempts);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 5, (sqlite3_int64)mqr__now_ms());
    rc = write_st(sq, st, rc, "cannot store dead letter");
    if (rc == 0) rc = delete_entry(sq, r, id);
    note_failure(sq, rc);
}

/* A dead letter whose message was replaced in flight (a rejection's
 * reason added to its properties): the row keeps the new properties. */
static void op_dead_msg(void *ctx, mqr_queue_t *q, uint64_t id, const mqr_msg_t *msg)
{
    mqr_store_queues_t *sq = ctx;
    sq_rec_t *r = rec_for(sq, q);
    if (!r) {
        note_failure(sq, MQR_ESTORE);
        return;
    }
    sqlite3_stmt *st = sq->st[SQ_DEAD_PROPS];
    int rc = bind_key(st, r->qid, id);
    if (rc == SQLITE_OK)
        rc = msg->props_len
                 ? sqlite3_bind_blob(st, 3, msg->props, (int)msg->props_len, SQLITE_STATIC)
                 : sqlite3_bind_null(st, 3);
    note_failure(sq, write_st(sq, st, rc, "cannot store a dead letter's properties"));
}

static void op_removed(void *ctx, mqr_queue_t *q, uint64_t id)
{
    mqr_store_queues_t *sq = ctx;
    sq_rec_t *r = rec_for(sq, q);
    int rc = r ? delete_entry(sq, r, id) : MQR_ESTORE;
    if (rc == 0 && sqlite3_changes(sq->db) == 0) { /* not queued: a dead letter */
        sqlite3_stmt *st = sq->st[SQ_DEAD_DEL];
        rc = write_st(sq, st, bind_key(st, r->qid, id), "cannot delete dead letter");
    }
    note_failure(sq, rc);
}

static const mqr_queue_store_ops_t store_ops = {
    .stored = op_stored,
    .acked = op_acked,
    .dead = op_dead,
    .dead_msg = op_dead_msg,
    .removed = op_removed,
};

/* ---- reading rows ------------------------------------------------------------ */

static int clamp(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static uint64_t col_u64(sqlite3_stmt *st, int i)
{
    sqlite3_int64 v = sqlite3_column_int64(st, i);
    return v > 0 ? (uint64_t)v : 0;
}

/* Steps st (bound by the caller) to the end, keeping the rows whose topic
 * matches filter (NULL = all) as messages in out (retain flag cleared when
 * no_retain). Resets st. */
static int read_rows(mqr_store_queues_t *sq, sqlite3_stmt *st, const char *filter, size_t flen,
                     bool no_retain, sq_rows_t *out)
{
    int err = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        sqlite3_int64 id = sqlite3_column_int64(st, 0);
        const char *topic = (const char *)sqlite3_column_text(st, 8);
        size_t tlen = (size_t)sqlite3_column_bytes(st, 8);
        /* the file is input like any other: skip what cannot be a queue entry */
        if (id <= 0 || !topic || !tlen || tlen > UINT16_MAX) continue;
        if (filter && !mqr__topic_matches(filter, flen, topic, tlen)) continue;
        if (out->n == out->cap) {
            size_t cap = out->cap ? out->cap * 2 : 256;
            sq_row_t *v = realloc(out->v, cap * sizeof *v);
            if (!v) {
                err = MQR_ENOMEM;
                break;
            }
            out->v = v;
            out->cap = cap;
        }
        sqlite3_int64 created = sqlite3_column_int64(st, 11);
        sqlite3_int64 expiry = sqlite3_column_int64(st, 12);
        mqr_msg_init_t in = {
            .topic = topic,
            .topic_len = tlen,
            .payload = sqlite3_column_blob(st, 9),
            .payload_len = (size_t)sqlite3_column_bytes(st, 9),
            .props = sqlite3_column_blob(st, 10),
            .props_len = (size_t)sqlite3_column_bytes(st, 10),
            .qos = clamp(sqlite3_column_int(st, 6), 0, 2),
            .retain = !no_retain && sqlite3_column_int(st, 7) != 0,
            .origin = MQR_ORIGIN_STORE,
            .expiry_s = expiry > 0 && expiry <= UINT32_MAX ? (uint32_t)expiry : 0,
            .created_ms = created > 0 ? (uint64_t)created : 1,
        };
        mqr_msg_t *m = mqr__msg_new(&in);
        if (!m) {
            err = MQR_ENOMEM;
            break;
        }
        sqlite3_int64 att = sqlite3_column_int64(st, 4);
        out->v[out->n++] = (sq_row_t){
            .id = (uint64_t)id,
            .prio = clamp(sqlite3_column_int(st, 1), 0, MQR_PRIO_LEVELS - 1),
            .expires_ms = col_u64(st, 2),
            .reason = clamp(sqlite3_column_int(st, 3), 0, MQR_QREASON_COUNT - 1),
            .attempts = att < 0            ? 0
                        : att > UINT32_MAX ? UINT32_MAX
                                           : (unsigned)att,
            .dead_ms = col_u64(st, 5),
            .dead = sqlite3_column_int(st, 13) != 0,
            .msg = m,
        };
    }
    if (!err && rc != SQLITE_DONE) err = mqr__store_fail(sq->s, NULL, "cannot read queue rows");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return err;
}

static int load(mqr_store_queues_t *sq, int k, sqlite3_int64 qid, sq_rows_t *out)
{
    sqlite3_stmt *st = sq->st[k];
    if (sqlite3_bind_int64(st, 1, qid) != SQLITE_OK)
        return mqr__store_fail(sq->s, st, "cannot bind queue id");
    return read_rows(sq, st, NULL, 0, false, out);
}

/* ---- restore --------------------------------------------------------------- */

/* Runs inside mqr__queue_new for a durable queue. Dead letters first, then
 * entries: restoring an expired entry may dead-letter it (its row moves to
 * queue_dead) or delete its row, so each set of rows is read in full before
 * the queue sees any of it. */
static int restore(void *ctx, mqr_queue_t *q)
{
    mqr_store_queues_t *sq = ctx;
    prune(sq);
    uint64_t next_id;
    sq_rec_t *r;
    int rc = rec_new(sq, q, &next_id, &r);
    if (rc < 0) return rc;
    sq_rows_t rows = {0};
    rc = load(sq, SQ_LOAD_DEAD, r->qid, &rows);
    for (size_t i = 0; rc == 0 && i < rows.n; i++) {
        sq_row_t *w = &rows.v[i];
        mqr_queue_dead_t d = {.id = w->id,
                              .msg = w->msg,
                              .reason = w->reason,
                              .attempts = w->attempts,
                              .priority = w->prio,
                              .dead_at_ms = w->dead_ms};
        rc = mqr__queue_restore_dead(q, &d);
        if (rc == MQR_ENODLQ) { /* the queue keeps none now: the rows stay */
            rc = 0;
            break;
        }
        if (rc == 0) sq->stats.restored_dead++;
    }
    rows_free(&rows);
    if (rc == 0) rc = load(sq, SQ_LOAD, r->qid, &rows);
    uint64_t now = mqr__now_ms();
    for (size_t i = 0; rc == 0 && i < rows.n; i++) {
        sq_row_t *w = &rows.v[i];
        if (w->expires_ms && w->expires_ms <= now) sq->stats.restored_expired++;
        rc = mqr__queue_restore(q, w->id, w->msg, w->prio, w->expires_ms, w->attempts);
        if (rc == 0) sq->stats.restored++;
    }
    rows_free(&rows);
    if (rc == 0) rc = mqr__queue_restore_ids(q, next_id);
    return rc;
}

void mqr__store_queues_attach(mqr_store_queues_t *sq, mqr_queues_t *queues)
{
    mqr__queues_set_store(queues, &store_ops, restore, sq);
}

/* ---- replay ---------------------------------------------------------------- */

int mqr__store_queue_replay(mqr_engine_t *e, mqr_queue_t *q, const char *filter, unsigned flags,
                            mqr_queue_replay_fn fn, void *arg)
{
    mqr_store_queues_t *sq = mqr__engine_store_queues(e);
    if (!sq || !q || !filter) return MQR_EINVAL;
    if (mqr__queue_closed(q)) return MQR_ECLOSED;
    size_t flen = strlen(filter);
    int rc = mqr__topic_filter_validate(filter, flen);
    if (rc < 0) return rc;
    sq_rec_t *r = rec_find(sq, q);
    if (!r) return MQR_EINVAL; /* not a durable queue of this store */
    if (!mqr__store_db(sq->s)) return MQR_ECLOSED;
    sqlite3_stmt *st = sq->st[SQ_REPLAY];
    if (sqlite3_bind_int64(st, 1, r->qid) != SQLITE_OK ||
        sqlite3_bind_int(st, 2, (flags & MQR_QREPLAY_DEAD) != 0) != SQLITE_OK)
        return mqr__store_fail(sq->s, st, "cannot bind replay");
    sq_rows_t rows = {0};
    /* a re-published copy is not a new retained message */
    rc = read_rows(sq, st, filter, flen, fn == NULL, &rows);
    uint64_t now = mqr__now_ms();
    int n = 0;
    mqr__queue_ref(q); /* fn may close it */
    for (size_t i = 0; rc == 0 && i < rows.n; i++) {
        sq_row_t *w = &rows.v[i];
        if (!w->dead && w->expires_ms && w->expires_ms <= now) continue;
        if (fn) {
            mqr_queue_replayed_t x = {.id = w->id,
                                      .msg = w->msg,
                                      .priority = w->prio,
                                      .dead = w->dead,
                                      .reason = w->dead ? w->reason : 0,
                                      .attempts = w->dead ? w->attempts : 0};
            rc = fn(arg, q, &x);
            if (rc > 0) rc = 0;
        } else {
            mqr__queue_replay_mark(q, w->msg); /* q itself stays as it is */
            rc = mqr__engine_publish(e, w->msg);
            mqr__queue_replay_mark(q, NULL);
        }
        if (rc == 0) n++;
    }
    mqr__queue_unref(q);
    rows_free(&rows);
    return rc < 0 ? rc : n;
}
