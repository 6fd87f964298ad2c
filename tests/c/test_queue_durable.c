/*
 * test_queue_durable.c — durable queues in the engine's SQLite store, with
 * real files in fresh temporary directories and real engines restarted on
 * them: stored entries come back (ids, priorities, topics, payloads,
 * properties), acked ones do not, dead letters come back with their reason
 * and attempts, entries whose TTL passed while the engine was down are
 * dropped and counted, ids are never given twice, transactions are stored
 * at commit only, entries dropped for room leave the store, replay by topic
 * filter, the listener's PUBACK waits for the commit of a message routed
 * into a durable queue, and a child killed with SIGKILL mid-stream loses
 * nothing it was told was committed and redelivers nothing whose ack was
 * committed.
 */
#include "listener_harness.h"

#include "engine.h"
#include "queue.h"
#include "store_queue.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>

/* ---- helpers ----------------------------------------------------------------- */

/* Every test's directory is under one made for the run, removed at its end
 * even when a test failed half way. */
static char g_base[32];

static int group_setup(void **state)
{
    snprintf(g_base, sizeof g_base, "/tmp/mqr-qdur-XXXXXX");
    return mkdtemp(g_base) ? 0 : -1;
}

static int group_teardown(void **state)
{
    return nftw(g_base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void make_dir(char *dir, size_t n)
{
    snprintf(dir, n, "%s/XXXXXX", g_base);
    assert_non_null(mkdtemp(dir));
}

static void remove_dir(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static mqr_engine_t *engine_at(const char *dir)
{
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.listen_port = -1;
    o.data_dir = dir;
    o.log_level = MQR_LOG_ERROR;
    mqr_engine_t *e = NULL;
    char *err = NULL;
    int rc = mqr_engine_new(&e, &o, NULL, &err);
    if (rc < 0) fail_msg("engine: %s", err ? err : mqr_strerror(rc));
    assert_int_equal(mqr__queues_init(e, NULL), 0);
    return e;
}

static void cfg_default(mqr_queue_config_t *c, const char *name)
{
    mqr__queue_config_init(c);
    c->name = name;
    c->durable = true;
    c->max_attempts = 2;
    c->ack_timeout_ms = UINT32_MAX;
}

static mqr_queue_t *durable_queue(mqr_engine_t *e, const mqr_queue_config_t *c)
{
    mqr_queue_t *q = NULL;
    assert_int_equal(mqr__queue_new(e, c, &q), 0);
    return q;
}

static mqr_msg_t *mk(const char *topic, const char *payload)
{
    mqr_msg_init_t in = {.topic = topic,
                         .topic_len = strlen(topic),
                         .payload = payload,
                         .payload_len = strlen(payload),
                         .origin = MQR_ORIGIN_C};
    mqr_msg_t *m = mqr__msg_new(&in);
    assert_non_null(m);
    return m;
}

static uint64_t pub(mqr_queue_t *q, const char *topic, const char *payload, int prio, int64_t ttl)
{
    mqr_msg_t *m = mk(topic, payload);
    mqr_queue_pub_opts_t o = {.priority = prio, .ttl_ms = ttl};
    uint64_t id = 0;
    assert_int_equal(mqr__queue_publish(q, m, &o, &id), 0);
    mqr_msg_unref(m);
    return id;
}

static void on_committed(void *arg, int status)
{
    *(int *)arg = status;
}

/* Runs the loop until everything written so far is committed. */
static void wait_commit(mqr_engine_t *e)
{
    int status = 1;
    assert_int_equal(mqr__store_after_commit(mqr__engine_store(e), on_committed, &status), 0);
    uint64_t end = now_ms() + WAIT_MS;
    while (status == 1 && now_ms() < end)
        uv_run(mqr_engine_loop(e), UV_RUN_NOWAIT);
    assert_int_equal(status, 0);
}

static long long peer_count(const char *dir, const char *sql)
{
    char path[128];
    snprintf(path, sizeof path, "%s/mqrouter.db", dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    long long n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static void expect_delivery(const mqr_queue_delivery_t *d, uint64_t id, const char *topic,
                            const char *payload, int prio)
{
    assert_int_equal(d->id, id);
    assert_string_equal(d->msg->topic, topic);
    assert_int_equal(d->msg->payload_len, strlen(payload));
    assert_memory_equal(d->msg->payload, payload, strlen(payload));
    assert_int_equal(d->priority, prio);
}

/* ---- entries and dead letters across restarts --------------------------------- */

static void test_entries_survive_restart(void **state)
{
    char dir[128];
    make_dir(dir, sizeof dir);
    mqr_queue_config_t c;
    cfg_default(&c, "orders");

    mqr_engine_t *e = engine_at(dir);
    mqr_queue_t *q = durable_queue(e, &c);
    /* settled before the restart: acked, rejected, nacked out of attempts */
    uint64_t acked = pub(q, "o/ack", "a", MQR_PRIO_HIGHEST, 0);
    uint64_t rejected = pub(q, "o/rej", "r", MQR_PRIO_HIGHEST, 0);
    uint64_t nacked = pub(q, "o/nack", "n", MQR_PRIO_HIGHEST, 0);
    mqr_queue_delivery_t d[16];
    assert_int_equal(mqr__queue_receive(q, 3, d), 3);
    assert_int_equal(mqr__queue_ack(q, acked), 0);
    assert_int_equal(mqr__queue_reject(q, rejected), 0);
    assert_int_equal(mqr__queue_nack(q, nacked, 0), 0);
    assert_int_equal(mqr__queue_receive(q, 1, d), 1);
    assert_int_equal(d[0].id, nacked);
    assert_int_equal(mqr__queue_nack(q, nacked, 0), 0); /* second attempt: dead */
    /* kept: priorities, one with MQTT v5 properties and QoS 1, one expiring */
    uint64_t normal1 = pub(q, "o/1", "one", MQR_PRIO_NORMAL, 0);
    uint64_t high = pub(q, "o/2", "two", MQR_PRIO_HIGH, 0);
    uint64_t low = pub(q, "o/3", "three", MQR_PRIO_LOW, 0);
    static const uint8_t props[] = {0x03, 0x00, 0x04, 'j', 's', 'o', 'n'}; /* content type */
    mqr_msg_init_t in = {.topic = "o/4",
                         .topic_len = 3,
                         .payload = "\0four",
                         .payload_len = 5,
                         .props = props,
                         .props_len = sizeof props,
                         .qos = 1,
                         .origin = MQR_ORIGIN_C,
                         .created_ms = 12345};
    mqr_msg_t *m4 = mqr__msg_new(&in);
    assert_non_null(m4);
    uint64_t normal2;
    assert_int_equal(mqr__queue_publish(q, m4, NULL, &normal2), 0);
    mqr_msg_unref(m4);
    pub(q, "o/5", "expires", MQR_PRIO_NORMAL, 150);
    /* in flight at the restart: comes back ready */
    uint64_t flying = pub(q, "o/9", "flying", MQR_PRIO_HIGHEST, 0);
    assert_int_equal(mqr__queue_receive(q, 1, d), 1);
    assert_int_equal(d[0].id, flying);
    /* the highest id of all is acked: a later id must still be above it */
    uint64_t last = pub(q, "o/10", "last", MQR_PRIO_HIGHEST, 0);
    assert_int_equal(mqr__queue_receive(q, 1, d), 1);
    assert_int_equal(mqr__queue_ack(q, last), 0);
    wait_commit(e);
    mqr_engine_free(e);
    sleep_us(200 * 1000); /* o/5's TTL passes while the engine is down */

    e = engine_at(dir);
    q = durable_queue(e, &c);
    mqr_queue_stats_t s;
    assert_int_equal(mqr__queue_stats(q, &s), 0);
    assert_int_equal(s.expired, 1);
    assert_int_equal(s.depth, 5);
    assert_int_equal(s.dead, 2);
    assert_int_equal(mqr__queue_receive(q, 16, d), 5);
    expect_delivery(&d[0], flying, "o/9", "flying", MQR_PRIO_HIGHEST);
    expect_delivery(&d[1], high, "o/2", "two", MQR_PRIO_HIGH);
    expect_delivery(&d[2], normal1, "o/1", "one", MQR_PRIO_NORMAL);
    assert_int_equal(d[3].id, normal2);
    assert_int_equal(d[3].msg->payload_len, 5);
    assert_memory_equal(d[3].msg->payload, "\0four", 5);
    assert_int_equal(d[3].msg->qos, 1);
    assert_int_equal(d[3].msg->created_ms, 12345);
    assert_int_equal(d[3].msg->props_len, sizeof props);
    assert_memory_equal(d[3].msg->props, props, sizeof props);
    expect_delivery(&d[4], low, "o/3", "three", MQR_PRIO_LOW);
    for (int i = 0; i < 5; i++)
        assert_int_equal(d[i].attempts, 1); /* delivery counts are not stored */

    mqr_queue_dead_t dl[4];
    assert_int_equal(mqr__queue_dlq_list(q, 0, 4, dl), 2);
    assert_int_equal(dl[0].id, rejected);
    assert_string_equal(dl[0].msg->topic, "o/rej");
    assert_int_equal(dl[0].reason, MQR_QREASON_REJECTED);
    assert_int_equal(dl[0].attempts, 1);
    assert_int_equal(dl[1].id, nacked);
    assert_int_equal(dl[1].reason, MQR_QREASON_MAX_ATTEMPTS);
    assert_int_equal(dl[1].attempts, 2);
    assert_true(dl[1].dead_at_ms >= dl[0].dead_at_ms && dl[0].dead_at_ms > 0);

    /* ids only grow, even past an acked highest id */
    uint64_t next = pub(q, "o/11", "next", MQR_PRIO_NORMAL, 0);
    assert_true(next > last);
    uint64_t ids[5] = {flying, high, normal1, normal2, low};
    assert_int_equal(mqr__queue_ack_batch(q, ids, 5), 5);
    wait_commit(e);
    mqr_engine_free(e);

    /* acked entries stay gone; dead letters stay until purged */
    e = engine_at(dir);
    q = durable_queue(e, &c);
    assert_int_equal(mqr__queue_stats(q, &s), 0);
    assert_int_equal(s.depth, 1);
    assert_int_equal(s.dead, 2);
    assert_int_equal(mqr__queue_receive(q, 16, d), 1);
    expect_delivery(&d[0], next, "o/11", "next", MQR_PRIO_NORMAL);
    assert_int_equal(mqr__queue_ack(q, next), 0);
    assert_int_equal(mqr__queue_dlq_purge(q, 0), 2);
    wait_commit(e);
    assert_int_equal(peer_count(dir, "SELECT count(*) FROM queue_msgs"), 0);
    assert_int_equal(peer_count(dir, "SELECT count(*) FROM queue_dead"), 0);
    mqr_engine_free(e);

    e = engine_at(dir);
    q = durable_queue(e, &c);
    assert_int_equal(mqr__queue_stats(q, &s), 0);
    assert_int_equal(s.depth + s.dead, 0);
    mqr_engine_free(e);
    remove_dir(dir);
}

/* A queue keeping expired messages as dead letters finds the ones that
 * expired while the engine was down in its DLQ, reason "expired"; re-driven
 * dead letters are stored under their new id. */
static void test_expired_at_restore_dead_lettered(void **state)
{
    char dir[128];
    make_dir(dir, sizeof dir);
    mqr_queue_config_t c;
    cfg_default(&c, "ttl");
    c.dead_letter_expired = true;
    mqr_engine_t *e = engine_at(dir);
    mqr_queue_t *q = durable_queue(e, &c);
    uint64_t id = pub(q, "t/1", "short", MQR_PRIO_NORMAL, 150);
    pub(q, "t/2", "long", MQR_PRIO_NORMAL, 60000);
    wait_commit(e);
    mqr_engine_free(e);
    sleep_us(200 * 1000);

    e = engine_at(dir);
    q = durable_queue(e, &c);
    mqr_queue_stats_t s;
    assert_int_equal(mqr__queue_stats(q, &s), 0);
    assert_int_equal(s.expired, 1);
    assert_int_equal(s.depth, 1);
    mqr_queue_dead_t dl[2];
    assert_int_equal(mqr__queue_dlq_list(q, 0, 2, dl), 1);
    assert_int_equal(dl[0].id, id);
    assert_int_equal(dl[0].reason, MQR_QREASON_EXPIRED);
    assert_int_equal(mqr__queue_redrive(q, 0), 1);
    mqr_store_queues_stats_t ss;
    mqr__store_queues_stats(mqr__engine_store_queues(e), &ss);
    assert_int_equal(ss.restored, 2);
    assert_int_equal(ss.restored_expired, 1);
    wait_commit(e);
    mqr_engine_free(e);

    e = engine_at(dir);
    q = durable_queue(e, &c);
    assert_int_equal(mqr__queue_stats(q, &s), 0);
    assert_int_equal(s.depth, 2);
    assert_int_equal(s.dead, 0);
    mqr_queue_delivery_t d[4];
    assert_int_equal(mqr__queue_receive(q, 4, d), 2);
    assert_string_equal(d[0].msg->topic, "t/2");
    assert_string_equal(d[1].msg->topic, "t/1"); /* re-driven: a newer id */
    assert_true(d[1].id > d[0].id);
    mqr_engine_free(e);
    remove_dir(dir);
}

/* A queue closed and created again in the same process gets its stored
 * entries back: closing is not deleting. A volatile queue stores nothing. */
static void test_reopen_in_process(void **state)
{
    char dir[128];
    make_dir(dir, sizeof dir);
    mqr_queue_config_t c;
    cfg_default(&c, "again");
    mqr_engine_t *e = engine_at(dir);
    mqr_queue_t *q = durable_queue(e, &c);
    uint64_t id = pub(q, "x", "kept", MQR_PRIO_NORMAL, 0);
    mqr__queue_close(q);
    q = durable_queue(e, &c);
    mqr_queue_delivery_t d[2];
    assert_int_equal(mqr__queue_receive(q, 2, d), 1);
    expect_delivery(&d[0], id, "x", "kept", MQR_PRIO_NORMAL);
    assert_int_equal(mqr__queue_ack(q, id), 0);

    mqr_queue_config_t v;
    mqr__queue_config_init(&v);
    v.name = "volatile";
    mqr_queue_t *vq = durable_queue(e, &v);
    pub(vq, "y", "lost", MQR_PRIO_NORMAL, 0);
    wait_commit(e);
    assert_int_equal(peer_count(dir, "SELECT count(*) FROM queue_msgs"), 0);
    assert_int_equal(peer_count(dir, "SELECT count(*) FROM queues WHERE name = 'volatile'"), 0);
    mqr_engine_free(e);
    remove_dir(dir);
}

/* Transactions are stored at commit (a rolled-back one leaves nothing), and
 * an entry dropped for room (drop_oldest) is gone from the store too. */
static void test_tx_and_drops(void **state)
{
    char dir[128];
    make_dir(dir, sizeof dir);
    mqr_queue_config_t c;
    cfg_default(&c, "txq");
    c.max_messages = 3;
    c.drop_oldest = true;
    mqr_engine_t *e = engine_at(dir);
    mqr_queue_t *q = durable_queue(e, &c);
    mqr_msg_t *m1 = mk("tx/1", "committed-1"), *m2 = mk("tx/2", "committed-2");
    mqr_msg_t *m3 = mk("tx/3", "rolled-back");
    uint64_t tx;
    assert_int_equal(mqr__queue_tx_begin(e, 0, &tx), 0);
    assert_int_equal(mqr__queue_tx_publish(e, tx, q, m1, NULL), 0);
    assert_int_equal(mqr__queue_tx_publish(e, tx, q, m2, NULL), 0);
    wait_commit(e);
    assert_int_equal(peer_count(dir, "SELECT count(*) FROM queue_msgs"), 0); /* not yet */
    assert_int_equal(mqr__queue_tx_commit(e, tx), 0);
    assert_int_equal(mqr__queue_tx_begin(e, 0, &tx), 0);
    assert_int_equal(mqr__queue_tx_publish(e, tx, q, m3, NULL), 0);
    assert_int_equal(mqr__queue_tx_rollback(e, tx), 0);
    mqr_msg_unref(m1);
    mqr_msg_unref(m2);
    mqr_msg_unref(m3);
    pub(q, "drop/1", "third", MQR_PRIO_NORMAL, 0);
    pub(q, "drop/2", "fourth", MQR_PRIO_NORMAL, 0); /* drops tx/1, the oldest */
    wait_commit(e);
    assert_int_equal(peer_count(dir, "SELECT count(*) FROM queue_msgs"), 3);
    mqr_engine_free(e);

    e = engine_at(dir);
    q = durable_queue(e, &c);
    mqr_queue_delivery_t d[4];
    assert_int_equal(mqr__queue_receive(q, 4, d), 3);
    assert_string_equal(d[0].msg->topic, "tx/2");
    assert_string_equal(d[1].msg->topic, "drop/1");
    assert_string_equal(d[2].msg->topic, "drop/2");
    mqr_engine_free(e);
    remove_dir(dir);
}

/* ---- replay ---------------------------------------------------------------------- */

typedef struct {
    int n;
    uint64_t ids[16];
    char topics[16][16];
    bool dead[16];
    int reason[16];
} replayed_t;

static int collect(void *arg, mqr_queue_t *q, const mqr_queue_replayed_t *r)
{
    replayed_t *x = arg;
    assert_true(x->n < 16);
    x->ids[x->n] = r->id;
    snprintf(x->topics[x->n], 16, "%s", r->msg->topic);
    x->dead[x->n] = r->dead;
    x->reason[x->n] = r->reason;
    x->n++;
    return 0;
}

typedef struct {
    int n;
    bool retained;
    char last[16];
} seen_t;

static void on_seen(void *arg, mqr_msg_t *m)
{
    seen_t *s = arg;
    s->n++;
    s->retained |= m->retain;
    snprintf(s->last, sizeof s->last, "%s", m->topic);
}

static void test_replay_by_topic(void **state)
{
    char dir[128];
    make_dir(dir, sizeof dir);
    mqr_queue_config_t c;
    cfg_default(&c, "events");
    mqr_engine_t *e = engine_at(dir);
    mqr_queue_t *q = durable_queue(e, &c);
    uint64_t a1 = pub(q, "a/1", "x1", MQR_PRIO_LOW, 0);
    uint64_t b1 = pub(q, "b/1", "y1", MQR_PRIO_HIGH, 0);
    uint64_t a2 = pub(q, "a/2", "x2", MQR_PRIO_NORMAL, 0);
    uint64_t a3 = pub(q, "a/3", "x3", MQR_PRIO_HIGHEST, 0);
    uint64_t a4 = pub(q, "a/4", "x4", MQR_PRIO_HIGHEST, 0);
    mqr_queue_delivery_t d[2];
    assert_int_equal(mqr__queue_receive(q, 2, d), 2);
    assert_int_equal(mqr__queue_reject(q, a3), 0);
    assert_int_equal(mqr__queue_ack(q, a4), 0);
    wait_commit(e);
    mqr_engine_free(e);

    e = engine_at(dir);
    q = durable_queue(e, &c);
    replayed_t r = {0};
    assert_int_equal(mqr__store_queue_replay(e, q, "a/+", 0, collect, &r), 2);
    assert_int_equal(r.n, 2); /* id order, not priority; dead and acked ones left out */
    assert_int_equal(r.ids[0], a1);
    assert_int_equal(r.ids[1], a2);
    memset(&r, 0, sizeof r);
    assert_int_equal(mqr__store_queue_replay(e, q, "a/#", MQR_QREPLAY_DEAD, collect, &r), 3);
    assert_int_equal(r.ids[2], a3);
    assert_true(r.dead[2] && !r.dead[0]);
    assert_int_equal(r.reason[2], MQR_QREASON_REJECTED);
    memset(&r, 0, sizeof r);
    assert_int_equal(mqr__store_queue_replay(e, q, "#", 0, collect, &r), 3);
    assert_int_equal(r.ids[1], b1);
    assert_string_equal(r.topics[1], "b/1");

    /* the queue is unchanged by a replay */
    mqr_queue_stats_t s;
    assert_int_equal(mqr__queue_stats(q, &s), 0);
    assert_int_equal(s.depth, 3);
    assert_int_equal(s.dead, 1);

    /* without a callback: published again through the engine */
    seen_t seen = {0};
    mqr_csub_t *sub;
    assert_int_equal(mqr_subscribe(e, "a/#", on_seen, &seen, &sub), 0);
    assert_int_equal(mqr__store_queue_replay(e, q, "a/2", 0, NULL, NULL), 1);
    assert_int_equal(seen.n, 1);
    assert_string_equal(seen.last, "a/2");
    assert_false(seen.retained);

    /* misuse */
    assert_int_equal(mqr__store_queue_replay(e, q, "a/#/b", 0, collect, &r), MQR_ETOPIC);
    mqr_queue_config_t v;
    mqr__queue_config_init(&v);
    v.name = "volatile";
    mqr_queue_t *vq = durable_queue(e, &v);
    assert_int_equal(mqr__store_queue_replay(e, vq, "#", 0, collect, &r), MQR_EINVAL);
    mqr_engine_free(e);
    remove_dir(dir);
}

/* ---- the listener's PUBACK ------------------------------------------------------- */

/* A C subscriber on the same topic runs inside the routing of the PUBLISH,
 * before the listener decides on its ack: the waiter it registers fires at
 * the commit point first and looks whether the PUBACK already reached the
 * client's socket. */
static int g_client_fd = -1;
static int g_peeked = -2; /* bytes waiting at the commit point; -2 = not run */

static void peek_at_commit(void *arg, int status)
{
    char b[16];
    ssize_t n = recv(g_client_fd, b, sizeof b, MSG_PEEK | MSG_DONTWAIT);
    g_peeked = n > 0 ? (int)n : 0;
}

static void on_routed(void *arg, mqr_msg_t *m)
{
    assert_int_equal(mqr__store_after_commit(mqr__engine_store(F.e), peek_at_commit, NULL), 0);
}

static void test_puback_after_durable_commit(void **state)
{
    assert_int_equal(mqr__queues_init(F.e, NULL), 0);
    mqr_queue_config_t c;
    cfg_default(&c, "jobs");
    mqr_queue_t *q = durable_queue(F.e, &c);
    assert_int_equal(mqr__queue_bind(q, "jobs/#", NULL), 0);
    mqr_csub_t *s1, *s2;
    assert_int_equal(mqr_subscribe(F.e, "jobs/#", on_routed, NULL, &s1), 0);
    assert_int_equal(mqr_subscribe(F.e, "plain/#", on_routed, NULL, &s2), 0);
    client_t *p = client(MQR_MQTT_V5, "pub");
    g_client_fd = p->fd;

    send_publish(p, "jobs/1", "work", 1, false, 5);
    mqr_mqtt_ack_t a = expect_ack(p, MQR_MQTT_PUBACK, 5);
    assert_int_equal(a.reason, MQR_MQTT_RC_SUCCESS);
    assert_int_equal(g_peeked, 0); /* nothing had been sent at the commit */
    assert_int_equal(peer_count(F.dir, "SELECT count(*) FROM queue_msgs"), 1);

    /* the control: a message nothing stores is acknowledged at once, and the
     * same probe sees its PUBACK already waiting at the next commit point
     * (the socket is not read before the probe ran) */
    g_peeked = -2;
    send_publish(p, "plain/1", "light", 1, false, 6);
    uint64_t end = now_ms() + WAIT_MS;
    while (g_peeked == -2 && now_ms() < end)
        turn();
    assert_true(g_peeked > 0);
    expect_ack(p, MQR_MQTT_PUBACK, 6);
    cl_free(p);
}

/* ---- kill -9 in the middle of a stream -------------------------------------------- */

#define CRASH_N 100000
#define CRASH_BURST 500

typedef struct {
    mqr_engine_t *e;
    mqr_queue_t *q;
    int fd;
    int published;
} child_t;

static void report(child_t *c, char kind, uint64_t id)
{
    uint8_t rec[9];
    rec[0] = (uint8_t)kind;
    memcpy(rec + 1, &id, 8);
    if (write(c->fd, rec, sizeof rec) != (ssize_t)sizeof rec) _exit(3);
}

static child_t g_child;

static void pub_committed(void *arg, int status)
{
    if (status == 0) report(&g_child, 'P', (uint64_t)(uintptr_t)arg);
}

static void ack_committed(void *arg, int status)
{
    if (status == 0) report(&g_child, 'A', (uint64_t)(uintptr_t)arg);
}

/* Acks every third message; the others stay in flight. */
static int child_consume(void *arg, mqr_queue_t *q, const mqr_queue_delivery_t *d)
{
    child_t *c = arg;
    if (d->id % 3) return MQR_QUEUE_LATER;
    /* said before the ack: once its commit is reported it may be gone */
    report(c, 'a', d->id);
    /* the ack is written right after this returns, before the commit point */
    if (mqr__store_after_commit(mqr__engine_store(c->e), ack_committed, (void *)(uintptr_t)d->id) <
        0)
        _exit(4);
    return MQR_QUEUE_ACK;
}

static void child_idle(uv_idle_t *h)
{
    child_t *c = h->data;
    for (int i = 0; i < CRASH_BURST && c->published < CRASH_N; i++) {
        char topic[32], payload[64];
        snprintf(topic, sizeof topic, "crash/%d", c->published % 100);
        snprintf(payload, sizeof payload, "payload-%d", c->published);
        mqr_msg_t *m = mk(topic, payload);
        uint64_t id;
        if (mqr__queue_publish(c->q, m, NULL, &id) < 0) _exit(5);
        mqr_msg_unref(m);
        if (mqr__store_after_commit(mqr__engine_store(c->e), pub_committed, (void *)(uintptr_t)id) <
            0)
            _exit(6);
        c->published++;
    }
    if (c->published == CRASH_N) uv_idle_stop(h);
}

static void keepalive(uv_timer_t *t) {}

static void crash_cfg(mqr_queue_config_t *c)
{
    cfg_default(c, "crash");
    c->max_messages = 2 * CRASH_N;
    c->max_bytes = (size_t)256 << 20;
}

static void crash_child(const char *dir, int fd)
{
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.listen_port = -1;
    o.data_dir = dir;
    o.log_level = MQR_LOG_ERROR;
    child_t *c = &g_child;
    c->fd = fd;
    if (mqr_engine_new(&c->e, &o, NULL, NULL) < 0) _exit(2);
    mqr_queues_options_t qo = {.max_bytes = (size_t)512 << 20};
    if (mqr__queues_init(c->e, &qo) < 0) _exit(2);
    mqr_queue_config_t cfg;
    crash_cfg(&cfg);
    if (mqr__queue_new(c->e, &cfg, &c->q) < 0) _exit(2);
    if (mqr__queue_consume(c->q, child_consume, c, 0, NULL) < 0) _exit(2);
    uv_loop_t *loop = mqr_engine_loop(c->e);
    uv_idle_t idle;
    uv_idle_init(loop, &idle);
    idle.data = c;
    uv_idle_start(&idle, child_idle);
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, keepalive, 1000, 1000);
    uv_run(loop, UV_RUN_DEFAULT);
    _exit(7);
}

static void test_kill9_mid_stream(void **state)
{
    char dir[128];
    make_dir(dir, sizeof dir);
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    srand(seed);
    int kill_after = CRASH_N / 10 + rand() % (CRASH_N * 8 / 10); /* confirmed publishes */
    int extra_us = rand() % 3000;
    print_message("kill -9 seed %u: after %d confirmed publishes + %d us\n", seed, kill_after,
                  extra_us);

    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        crash_child(dir, pfd[1]);
    }
    close(pfd[1]);

    uint8_t *confirmed = calloc(CRASH_N + 1, 1), *acked = calloc(CRASH_N + 1, 1);
    uint8_t *acking = calloc(CRASH_N + 1, 1);
    assert_non_null(confirmed);
    assert_non_null(acked);
    assert_non_null(acking);
    int nconf = 0, nack = 0;
    bool killed = false;
    uint64_t deadline = now_ms() + 20000;
    uint8_t buf[9 * 1024];
    size_t have = 0;
    for (;;) {
        struct pollfd pf = {.fd = pfd[0], .events = POLLIN};
        int pr = poll(&pf, 1, 100);
        if (now_ms() > deadline) break;
        if (pr <= 0) continue;
        ssize_t n = read(pfd[0], buf + have, sizeof buf - have);
        if (n <= 0) break; /* the child is gone and everything it wrote is read */
        have += (size_t)n;
        size_t k = 0;
        for (; k + 9 <= have; k += 9) {
            uint64_t id;
            memcpy(&id, buf + k + 1, 8);
            assert_true(id >= 1 && id <= CRASH_N);
            if (buf[k] == 'P') {
                assert_false(confirmed[id]);
                confirmed[id] = 1;
                nconf++;
            } else if (buf[k] == 'a') {
                acking[id] = 1;
            } else {
                assert_int_equal(buf[k], 'A');
                assert_true(acking[id]);
                acked[id] = 1;
                nack++;
            }
        }
        memmove(buf, buf + k, have - k);
        have -= k;
        if (!killed && nconf >= kill_after) {
            sleep_us(extra_us);
            kill(pid, SIGKILL);
            killed = true;
        }
    }
    close(pfd[0]);
    if (!killed) kill(pid, SIGKILL);
    int wstatus = 0;
    assert_int_equal(waitpid(pid, &wstatus, 0), pid);
    assert_true(killed);
    assert_true(WIFSIGNALED(wstatus));
    assert_int_equal(WTERMSIG(wstatus), SIGKILL);
    assert_true(nack > 0);

    /* restart on the same file and take everything */
    mqr_engine_t *e = engine_at(dir);
    mqr_queue_config_t cfg;
    crash_cfg(&cfg);
    mqr_queue_t *q = durable_queue(e, &cfg);
    uint8_t *got = calloc(CRASH_N + 1, 1);
    assert_non_null(got);
    mqr_queue_delivery_t d[1024];
    int n, total = 0;
    while ((n = mqr__queue_receive(q, 1024, d)) > 0) {
        for (int i = 0; i < n; i++) {
            uint64_t id = d[i].id;
            assert_true(id >= 1 && id <= CRASH_N);
            assert_false(got[id]);
            got[id] = 1;
            char payload[64];
            snprintf(payload, sizeof payload, "payload-%d", (int)id - 1);
            assert_int_equal(d[i].msg->payload_len, strlen(payload));
            assert_memory_equal(d[i].msg->payload, payload, strlen(payload));
            total++;
        }
    }
    int lost = 0, redelivered = 0;
    for (int id = 1; id <= CRASH_N; id++) {
        /* an ack made but not reported committed may or may not be on disk */
        if (confirmed[id] && !acking[id] && !got[id]) lost++;
        if (acked[id] && got[id]) redelivered++;
    }
    print_message("kill -9: %d confirmed, %d acks committed, %d back after restart\n", nconf, nack,
                  total);
    assert_int_equal(lost, 0);
    assert_int_equal(redelivered, 0);
    assert_true(total >= nconf - nack);
    free(confirmed);
    free(acked);
    free(acking);
    free(got);
    mqr_engine_free(e);
    remove_dir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entries_survive_restart),
        cmocka_unit_test(test_expired_at_restore_dead_lettered),
        cmocka_unit_test(test_reopen_in_process),
        cmocka_unit_test(test_tx_and_drops),
        cmocka_unit_test(test_replay_by_topic),
        cmocka_unit_test_setup_teardown(test_puback_after_durable_commit, setup, teardown),
        cmocka_unit_test(test_kill9_mid_stream),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
