/*
 * test_store_faults.c — nothing lost, nothing false: what a publisher of
 * the embedded listener is told when the store refuses a write that its
 * message needed, or a subscriber cannot take it.
 *
 * The failures are real: a second SQLite connection holds the database's
 * write lock (as a backup tool or the sqlite3 shell would), so the engine's
 * next write fails inside SQLite with SQLITE_BUSY; the database may not
 * grow (max_page_count at its size: SQLITE_FULL inside the statement, what
 * a full disk does); or a VFS over the default one fails every file write
 * with SQLITE_FULL, so a COMMIT fails after its statements succeeded. Only
 * the wait for the lock is shortened (the store's busy timeout), so a test
 * does not spend five seconds per refused write. Clients are raw sockets;
 * after a failure the engine restarts on the same file to show that what
 * was acknowledged is there and what was refused is not.
 *
 * The one thing not real is memory exhaustion: a subscriber that reports
 * MQR_ENOMEM stands for one that could not allocate.
 */
#include "listener.h"
#include "listener.h"
#include "codec.h"
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "listener_harness.h"

/* ---- a disk that fills up -------------------------------------------------------
 * A VFS over the default one whose writes fail with SQLITE_FULL while
 * disk_full is set, as writes to a full file system do. A small write
 * stays in SQLite's page cache until COMMIT, so this is how a commit
 * fails after every statement of the turn succeeded. */

static sqlite3_vfs *real_vfs;
static sqlite3_vfs full_vfs;
static bool disk_full;

typedef struct {
    sqlite3_file base;
    sqlite3_file *real; /* right behind this struct */
} full_file_t;

#define REAL(f) (((full_file_t *)(f))->real)

static int ff_close(sqlite3_file *f)
{
    return REAL(f)->pMethods->xClose(REAL(f));
}
static int ff_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
    return REAL(f)->pMethods->xRead(REAL(f), buf, n, off);
}
static int ff_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
    if (disk_full) return SQLITE_FULL;
    return REAL(f)->pMethods->xWrite(REAL(f), buf, n, off);
}
static int ff_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    return REAL(f)->pMethods->xTruncate(REAL(f), size);
}
static int ff_sync(sqlite3_file *f, int flags)
{
    return REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int ff_size(sqlite3_file *f, sqlite3_int64 *size)
{
    return REAL(f)->pMethods->xFileSize(REAL(f), size);
}
static int ff_lock(sqlite3_file *f, int l)
{
    return REAL(f)->pMethods->xLock(REAL(f), l);
}
static int ff_unlock(sqlite3_file *f, int l)
{
    return REAL(f)->pMethods->xUnlock(REAL(f), l);
}
static int ff_reserved(sqlite3_file *f, int *out)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int ff_control(sqlite3_file *f, int op, void *arg)
{
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int ff_sector(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int ff_device(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int ff_shm_map(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **pp)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), pg, pgsz, extend, pp);
}
static int ff_shm_lock(sqlite3_file *f, int off, int n, int flags)
{
    return REAL(f)->pMethods->xShmLock(REAL(f), off, n, flags);
}
static void ff_shm_barrier(sqlite3_file *f)
{
    REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int ff_shm_unmap(sqlite3_file *f, int del)
{
    return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}
static int ff_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
    return REAL(f)->pMethods->xFetch(REAL(f), off, n, pp);
}
static int ff_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    return REAL(f)->pMethods->xUnfetch(REAL(f), off, p);
}

static const sqlite3_io_methods full_io = {
    .iVersion = 3,
    .xClose = ff_close,
    .xRead = ff_read,
    .xWrite = ff_write,
    .xTruncate = ff_truncate,
    .xSync = ff_sync,
    .xFileSize = ff_size,
    .xLock = ff_lock,
    .xUnlock = ff_unlock,
    .xCheckReservedLock = ff_reserved,
    .xFileControl = ff_control,
    .xSectorSize = ff_sector,
    .xDeviceCharacteristics = ff_device,
    .xShmMap = ff_shm_map,
    .xShmLock = ff_shm_lock,
    .xShmBarrier = ff_shm_barrier,
    .xShmUnmap = ff_shm_unmap,
    .xFetch = ff_fetch,
    .xUnfetch = ff_unfetch,
};

static int ff_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out)
{
    full_file_t *ff = (full_file_t *)f;
    ff->real = (sqlite3_file *)(ff + 1);
    int rc = real_vfs->xOpen(real_vfs, name, ff->real, flags, out);
    /* full_io forwards every method of version 3, which unix files have */
    f->pMethods = rc == SQLITE_OK && ff->real->pMethods->iVersion >= 3 ? &full_io : NULL;
    if (rc == SQLITE_OK && !f->pMethods) {
        ff->real->pMethods->xClose(ff->real);
        rc = SQLITE_CANTOPEN;
    }
    return rc;
}

static void full_vfs_register(void)
{
    real_vfs = sqlite3_vfs_find(NULL);
    assert_non_null(real_vfs);
    full_vfs = *real_vfs;
    full_vfs.zName = "mqr-full";
    full_vfs.szOsFile = (int)sizeof(full_file_t) + real_vfs->szOsFile;
    full_vfs.xOpen = ff_open;
    full_vfs.pNext = NULL;
    /* the default: the engine opens its database with no VFS named */
    assert_int_equal(sqlite3_vfs_register(&full_vfs, 1), SQLITE_OK);
}

/* ---- the other writer ------------------------------------------------------ */

static sqlite3 *locker;

/* Takes the database's write lock from a second connection; the engine's
 * writes fail (SQLITE_BUSY) until unlock_store(). */
static void lock_store(void)
{
    run_for(10); /* the engine commits what it has before the loop sleeps */
    assert_int_equal(
        sqlite3_open(sqlite3_db_filename(mqr__store_db(mqr__engine_store(F.e)), "main"), &locker),
        SQLITE_OK);
    assert_int_equal(sqlite3_exec(locker, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    /* how long the store waits for a lock held elsewhere (5 s by default) */
    sqlite3_busy_timeout(mqr__store_db(mqr__engine_store(F.e)), 20);
}

static void unlock_store(void)
{
    assert_int_equal(sqlite3_exec(locker, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(locker), SQLITE_OK);
    locker = NULL;
}

static int fault_teardown(void **state)
{
    disk_full = false;
    if (locker) {
        sqlite3_exec(locker, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_close(locker);
        locker = NULL;
    }
    return teardown(state);
}

/* ---- clients with sessions ------------------------------------------------------- */

/* CONNECT asking for a persistent session (v5: Session Expiry 3600;
 * 3.1.1: Clean Session 0); returns the CONNACK. */
static mqr_mqtt_connack_t pconnect(client_t *c, int version, const char *id)
{
    c->version = version;
    mqr_mqtt_connect_t k;
    memset(&k, 0, sizeof k);
    k.version = (uint8_t)version;
    k.clean_start = false;
    k.keep_alive = 60;
    uint8_t props[16];
    size_t plen = 0;
    if (version == MQR_MQTT_V5) {
        mqr_mqtt_pbuild_t b;
        mqr__mqtt_pb_init(&b, props, sizeof props);
        mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_SESSION_EXPIRY, 3600);
        assert_int_equal(mqr__mqtt_pb_finish(&b, &plen), 0);
        k.props.p = props;
        k.props.len = (uint32_t)plen;
    }
    k.client_id.p = id;
    k.client_id.len = (uint16_t)strlen(id);
    uint8_t buf[256];
    size_t n;
    assert_int_equal(mqr__mqtt_encode_connect(&k, buf, sizeof buf, &n), 0);
    cl_send(c, buf, n);
    return expect_connack(c);
}

/* A client with a persistent session; *present gets the CONNACK's Session
 * Present flag. */
static client_t *pclient(int version, const char *id, bool *present)
{
    client_t *c = cl_open();
    mqr_mqtt_connack_t a = pconnect(c, version, id);
    assert_int_equal(a.reason, 0);
    if (present) *present = a.session_present;
    return c;
}

static void cl_disconnect(client_t *c)
{
    static const uint8_t d[2] = {0xE0, 0x00};
    cl_send(c, d, 2);
    cl_expect_closed(c, WAIT_MS);
    cl_free(c);
}

static bool one_offline(void)
{
    return stats()->sessions_offline == 1;
}

static void wait_for(bool (*cond)(void), int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    while (!cond() && now_ms() < end) {
        turn();
        sleep_us(500);
    }
    assert_true(cond());
}

static void engine_restart(void)
{
    mqr_engine_free(F.e);
    F.e = NULL;
    engine_start();
}

/* A persistent subscriber to filter, gone offline. */
static void offline_subscriber(int version, const char *id, const char *filter)
{
    client_t *s = pclient(version, id, NULL);
    subscribe(s, filter, 1);
    cl_disconnect(s);
    wait_for(one_offline, WAIT_MS);
}

/* The subscriber comes back after a restart: it gets exactly the one
 * message that was acknowledged, nothing else. */
static void expect_only_after_restart(int version, const char *id, const char *topic,
                                      const char *payload)
{
    engine_restart();
    bool present = false;
    client_t *s = pclient(version, id, &present);
    assert_true(present);
    mqr_mqtt_publish_t m = expect_publish(s, topic, payload);
    send_ack(s, MQR_MQTT_PUBACK, m.packet_id);
    cl_expect_nothing(s, QUIET_MS);
    cl_free(s);
}

/* The connection must close without sending anything first. */
static void expect_closed_unacknowledged(client_t *c)
{
    int r = cl_next(c, WAIT_MS);
    if (r == 1)
        fail_msg("got %s, expected the connection to close", mqr__listener_type_name(pkt_type(c)));
    if (r == 0) fail_msg("connection still open after %d ms", WAIT_MS);
}

/* ---- a session row the store refuses -------------------------------------------- */

static void test_v5_offline_row_refused(void **state)
{
    offline_subscriber(MQR_MQTT_V5, "keeper", "f/#");
    client_t *p = client(MQR_MQTT_V5, "pub");
    lock_store();
    send_publish(p, "f/1", "lost", 1, false, 1);
    mqr_mqtt_ack_t a = expect_ack(p, MQR_MQTT_PUBACK, 1);
    assert_int_equal(a.reason, MQR_MQTT_RC_UNSPECIFIED);
    assert_int_equal(stats()->refused_failed, 1);
    assert_int_equal(stats()->session_rows_failed, 1);
    unlock_store();
    ping(p); /* the publisher is still served */
    send_publish(p, "f/2", "kept", 1, false, 2);
    a = expect_ack(p, MQR_MQTT_PUBACK, 2);
    assert_int_equal(a.reason, MQR_MQTT_RC_SUCCESS);
    cl_free(p);
    expect_only_after_restart(MQR_MQTT_V5, "keeper", "f/2", "kept");
}

/* The database cannot grow (a full disk, as SQLite sees it: SQLITE_FULL
 * inside the statement, which may roll back the whole transaction). */
static void db_limit(bool full)
{
    sqlite3 *db = mqr__store_db(mqr__engine_store(F.e));
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA page_count", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    long long pages = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA max_page_count = %lld", full ? pages : 1ll << 30);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
}

static void test_v5_full_database_row_refused(void **state)
{
    offline_subscriber(MQR_MQTT_V5, "keeperf", "d/#");
    client_t *p = client(MQR_MQTT_V5, "pubf");
    static char big[60001];
    memset(big, 'x', sizeof big - 1); /* overflow pages the file has no room for */
    run_for(10);
    db_limit(true);
    send_publish(p, "d/1", big, 1, false, 1);
    mqr_mqtt_ack_t a = expect_ack(p, MQR_MQTT_PUBACK, 1);
    assert_int_equal(a.reason, MQR_MQTT_RC_UNSPECIFIED);
    assert_int_equal(stats()->refused_failed, 1);
    db_limit(false);
    send_publish(p, "d/2", "kept", 1, false, 2);
    a = expect_ack(p, MQR_MQTT_PUBACK, 2);
    assert_int_equal(a.reason, MQR_MQTT_RC_SUCCESS);
    cl_free(p);
    expect_only_after_restart(MQR_MQTT_V5, "keeperf", "d/2", "kept");
}

static void test_v311_offline_row_refused_closes(void **state)
{
    offline_subscriber(MQR_MQTT_V311, "keeper4", "g/#");
    client_t *p = client(MQR_MQTT_V311, "pub4");
    lock_store();
    send_publish(p, "g/1", "lost", 1, false, 1);
    expect_closed_unacknowledged(p);
    cl_free(p);
    assert_int_equal(stats()->refused_failed, 1);
    unlock_store();
    /* the engine keeps serving: the client comes back and sends again */
    p = client(MQR_MQTT_V311, "pub4");
    send_publish(p, "g/2", "kept", 1, false, 2);
    mqr_mqtt_ack_t a = expect_ack(p, MQR_MQTT_PUBACK, 2);
    assert_int_equal(a.reason, 0);
    cl_free(p);
    expect_only_after_restart(MQR_MQTT_V311, "keeper4", "g/2", "kept");
}

/* A connected persistent subscriber gets the message at once even when its
 * row is refused (it is here); its publisher is still not told the message
 * is safe, and after a restart only the stored one comes back. */
static void test_connected_row_refused(void **state)
{
    client_t *s = pclient(MQR_MQTT_V5, "online", NULL);
    subscribe(s, "h/#", 1);
    client_t *p = client(MQR_MQTT_V5, "pub5");
    lock_store();
    send_publish(p, "h/1", "live", 1, false, 1);
    mqr_mqtt_ack_t a = expect_ack(p, MQR_MQTT_PUBACK, 1);
    assert_int_equal(a.reason, MQR_MQTT_RC_UNSPECIFIED);
    mqr_mqtt_publish_t m = expect_publish(s, "h/1", "live");
    unlock_store();
    send_ack(s, MQR_MQTT_PUBACK, m.packet_id);
    send_publish(p, "h/2", "kept", 1, false, 2);
    a = expect_ack(p, MQR_MQTT_PUBACK, 2);
    assert_int_equal(a.reason, MQR_MQTT_RC_SUCCESS);
    expect_publish(s, "h/2", "kept"); /* not acknowledged: sent again after the restart */
    cl_free(s);
    cl_free(p);
    run_for(20);
    expect_only_after_restart(MQR_MQTT_V5, "online", "h/2", "kept");
}

/* A persistent publisher's QoS 2 packet id is a row too: without it a
 * restart would forget the id, so PUBREC refuses and nothing is routed. */
static void test_qos2_id_row_refused(void **state)
{
    client_t *s = client(MQR_MQTT_V5, "watcher");
    subscribe(s, "q/#", 2);
    client_t *p = pclient(MQR_MQTT_V5, "pub2", NULL);
    lock_store();
    send_publish(p, "q/1", "once", 2, false, 5);
    mqr_mqtt_ack_t a = expect_ack(p, MQR_MQTT_PUBREC, 5);
    assert_int_equal(a.reason, MQR_MQTT_RC_UNSPECIFIED);
    cl_expect_nothing(s, QUIET_MS); /* not routed */
    assert_int_equal(stats()->refused_failed, 1);
    unlock_store();
    /* the flow ended (5.0 §4.3.3): the same id is a new message */
    send_publish(p, "q/1", "once", 2, false, 5);
    a = expect_ack(p, MQR_MQTT_PUBREC, 5);
    assert_int_equal(a.reason, MQR_MQTT_RC_SUCCESS);
    send_ack(p, MQR_MQTT_PUBREL, 5);
    a = expect_ack(p, MQR_MQTT_PUBCOMP, 5);
    assert_int_equal(a.reason, MQR_MQTT_RC_SUCCESS);
    mqr_mqtt_publish_t m = expect_publish(s, "q/1", "once");
    send_ack(s, MQR_MQTT_PUBREC, m.packet_id);
    expect_ack(s, MQR_MQTT_PUBREL, m.packet_id);
    send_ack(s, MQR_MQTT_PUBCOMP, m.packet_id);
    cl_expect_nothing(s, QUIET_MS); /* exactly once */
    cl_free(s);
    cl_free(p);
}

/* A persistent session's subscription is a row: refused, it is not made
 * either (it would be gone after a restart). */
static void test_subscription_row_refused(void **state)
{
    client_t *s = pclient(MQR_MQTT_V5, "subr", NULL);
    lock_store();
    send_subscribe_full(s, 3, "s/#", 1, false, false, 0, 0);
    cl_expect(s, MQR_MQTT_SUBACK);
    mqr_mqtt_suback_t sa;
    assert_int_equal(mqr__mqtt_decode_suback(s->pkt, s->pkt_len, s->version, &sa), 0);
    assert_int_equal(sa.count, 1);
    assert_int_equal(sa.codes[0], MQR_MQTT_RC_UNSPECIFIED);
    unlock_store();
    client_t *p = client(MQR_MQTT_V5, "spub");
    send_publish(p, "s/1", "none", 1, false, 1);
    expect_ack(p, MQR_MQTT_PUBACK, 1);
    cl_expect_nothing(s, QUIET_MS); /* no subscription */
    subscribe(s, "s/#", 1);
    cl_free(s);
    cl_free(p);
    run_for(20);
    engine_restart();
    bool present = false;
    s = pclient(MQR_MQTT_V5, "subr", &present);
    assert_true(present);
    p = client(MQR_MQTT_V5, "spub");
    send_publish(p, "s/2", "after", 1, false, 2);
    expect_ack(p, MQR_MQTT_PUBACK, 2);
    expect_publish(s, "s/2", "after");
    cl_free(s);
    cl_free(p);
}

/* A session the store cannot keep is not promised: CONNACK refuses it
 * (v5 0x88, 3.1.1 0x03) and the offline session stays as it was; a client
 * without a session does not need the store and connects. */
static void test_connect_session_row_refused(void **state)
{
    offline_subscriber(MQR_MQTT_V5, "back", "c/#");
    client_t *p = client(MQR_MQTT_V5, "cpub");
    send_publish(p, "c/1", "waiting", 1, false, 1);
    expect_ack(p, MQR_MQTT_PUBACK, 1);
    lock_store();
    client_t *s = cl_open();
    assert_int_equal(pconnect(s, MQR_MQTT_V5, "back").reason, MQR_MQTT_RC_SERVER_UNAVAILABLE);
    cl_expect_closed(s, WAIT_MS);
    cl_free(s);
    s = cl_open();
    assert_int_equal(pconnect(s, MQR_MQTT_V311, "new4").reason, MQR_MQTT_V3_SERVER_UNAVAILABLE);
    cl_expect_closed(s, WAIT_MS);
    cl_free(s);
    client_t *clean = client(MQR_MQTT_V5, "clean");
    ping(clean);
    cl_free(clean);
    assert_int_equal(stats()->sessions_offline, 1);
    unlock_store();
    bool present = false;
    s = pclient(MQR_MQTT_V5, "back", &present);
    assert_true(present);
    mqr_mqtt_publish_t m = expect_publish(s, "c/1", "waiting");
    send_ack(s, MQR_MQTT_PUBACK, m.packet_id);
    cl_free(s);
    cl_free(p);
}

/* A durable queue bound to the topic whose row the store refuses: the
 * publisher hears it (0x80: not kept, rather than 0x97: no room), and after
 * a restart the queue holds what was acknowledged. */
static mqr_queue_t *durable_queue(void)
{
    mqr_queue_options_t qo;
    mqr_queue_options_init(&qo);
    qo.name = "orders";
    qo.durable = 1;
    mqr_queue_t *q;
    assert_int_equal(mqr_queue_new(F.e, &qo, &q), 0);
    return q;
}

static size_t depth(mqr_queue_t *q)
{
    mqr_queue_info_t qi;
    mqr_queue_info_init(&qi);
    assert_int_equal(mqr_queue_stats(q, &qi), 0);
    return qi.depth;
}

static void test_durable_queue_write_refused(void **state)
{
    mqr_queue_t *q = durable_queue();
    assert_int_equal(mqr_queue_bind(q, "o/#"), 0);
    client_t *p = client(MQR_MQTT_V5, "opub");
    lock_store();
    send_publish(p, "o/1", "lost", 1, false, 1);
    mqr_mqtt_ack_t a = expect_ack(p, MQR_MQTT_PUBACK, 1);
    assert_int_equal(a.reason, MQR_MQTT_RC_UNSPECIFIED);
    assert_int_equal(depth(q), 0);
    unlock_store();
    send_publish(p, "o/2", "kept", 1, false, 2);
    a = expect_ack(p, MQR_MQTT_PUBACK, 2);
    assert_int_equal(a.reason, MQR_MQTT_RC_SUCCESS);
    cl_free(p);
    engine_restart();
    q = durable_queue();
    assert_int_equal(depth(q), 1);
}

/* The rows were written, the commit was not: the acks that waited for it
 * are refused (v5 0x80, 3.1.1 closed), the QoS 2 id is forgotten with its
 * row, and after a restart only what was committed is there. */
static void test_commit_refused(void **state)
{
    offline_subscriber(MQR_MQTT_V5, "keeperc", "k/#");
    client_t *p5 = pclient(MQR_MQTT_V5, "cpub5", NULL);
    client_t *p4 = client(MQR_MQTT_V311, "cpub4");
    run_for(10);
    disk_full = true;
    send_publish(p5, "k/1", "lost", 1, false, 1);
    mqr_mqtt_ack_t a = expect_ack(p5, MQR_MQTT_PUBACK, 1);
    assert_int_equal(a.reason, MQR_MQTT_RC_UNSPECIFIED);
    send_publish(p5, "k/2", "lost", 2, false, 2);
    a = expect_ack(p5, MQR_MQTT_PUBREC, 2);
    assert_int_equal(a.reason, MQR_MQTT_RC_UNSPECIFIED);
    send_publish(p4, "k/3", "lost", 1, false, 3);
    expect_closed_unacknowledged(p4);
    cl_free(p4);
    assert_int_equal(stats()->refused_failed, 3);
    disk_full = false;
    /* the flow of id 2 ended: the same id is a new message, routed */
    send_publish(p5, "k/4", "kept", 2, false, 2);
    a = expect_ack(p5, MQR_MQTT_PUBREC, 2);
    assert_int_equal(a.reason, MQR_MQTT_RC_SUCCESS);
    send_ack(p5, MQR_MQTT_PUBREL, 2);
    expect_ack(p5, MQR_MQTT_PUBCOMP, 2);
    cl_free(p5);
    expect_only_after_restart(MQR_MQTT_V5, "keeperc", "k/4", "kept");
}

/* ---- routing that fails: 3.1.1 is never told "taken" ------------------------------ */

static void test_v311_retained_refused_closes(void **state)
{
    client_t *p = client(MQR_MQTT_V311, "rpub");
    lock_store();
    send_publish(p, "r/1", "lost", 1, true, 1);
    expect_closed_unacknowledged(p);
    cl_free(p);
    assert_int_equal(stats()->refused_failed, 1);
    unlock_store();
    p = client(MQR_MQTT_V311, "rpub");
    send_publish(p, "r/2", "kept", 1, true, 2);
    expect_ack(p, MQR_MQTT_PUBACK, 2);
    cl_free(p);
    engine_restart();
    client_t *s = client(MQR_MQTT_V311, "rsub");
    subscribe(s, "r/#", 1);
    mqr_mqtt_publish_t m = expect_publish(s, "r/2", "kept");
    assert_true(m.retain);
    send_ack(s, MQR_MQTT_PUBACK, m.packet_id);
    cl_expect_nothing(s, QUIET_MS);
    cl_free(s);
}

/* ---- a subscriber out of memory ------------------------------------------------------ */

static int nomem_deliver(mqr_subscriber_t *self, mqr_msg_t *msg, const mqr_trie_entry_t *entry)
{
    return MQR_ENOMEM;
}

static int warnings;

static void count_warnings(void *arg, int level, const char *component, const char *text)
{
    if (level == MQR_LOG_WARN && strcmp(component, "router") == 0 && strstr(text, "out of memory"))
        warnings++;
}

static void test_nomem_delivery_counted_and_refused(void **state)
{
    mqr_subscriber_t sub = {.deliver = nomem_deliver};
    mqr_sub_opts_t o = {.qos = 1};
    mqr_trie_entry_t *ent = mqr__router_add(mqr__engine_router(F.e), "m/#", 3, &sub, &o);
    assert_non_null(ent);
    mqr_log_set_sink(count_warnings, NULL);
    client_t *p5 = client(MQR_MQTT_V5, "mpub5");
    send_publish(p5, "m/1", "x", 1, false, 1);
    mqr_mqtt_ack_t a = expect_ack(p5, MQR_MQTT_PUBACK, 1);
    assert_int_equal(a.reason, MQR_MQTT_RC_UNSPECIFIED);
    client_t *p4 = client(MQR_MQTT_V311, "mpub4");
    send_publish(p4, "m/2", "x", 1, false, 1);
    expect_closed_unacknowledged(p4);
    send_publish(p5, "m/3", "x", 0, false, 0); /* QoS 0: counted, nobody to tell */
    ping(p5);
    mqr_log_set_sink(NULL, NULL);
    assert_int_equal(mqr__engine_router(F.e)->dropped_nomem, 3);
    assert_int_equal(warnings, 1); /* one line a second, not one per message */
    assert_int_equal(stats()->refused_failed, 2);
    mqr__router_remove(mqr__engine_router(F.e), ent);
    cl_free(p4);
    cl_free(p5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_v5_offline_row_refused, setup, fault_teardown),
        cmocka_unit_test_setup_teardown(test_v5_full_database_row_refused, setup, fault_teardown),
        cmocka_unit_test_setup_teardown(test_v311_offline_row_refused_closes, setup,
                                        fault_teardown),
        cmocka_unit_test_setup_teardown(test_connected_row_refused, setup, fault_teardown),
        cmocka_unit_test_setup_teardown(test_qos2_id_row_refused, setup, fault_teardown),
        cmocka_unit_test_setup_teardown(test_subscription_row_refused, setup, fault_teardown),
        cmocka_unit_test_setup_teardown(test_connect_session_row_refused, setup, fault_teardown),
        cmocka_unit_test_setup_teardown(test_durable_queue_write_refused, setup, fault_teardown),
        cmocka_unit_test_setup_teardown(test_commit_refused, setup, fault_teardown),
        cmocka_unit_test_setup_teardown(test_v311_retained_refused_closes, setup, fault_teardown),
        cmocka_unit_test_setup_teardown(test_nomem_delivery_counted_and_refused, setup,
                                        fault_teardown),
    };
    full_vfs_register();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
