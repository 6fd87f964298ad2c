/*
 * test_upstream_native_persist.c — persistent upstream sessions on the
 * native transport: QoS 1/2 publishes kept as outbox rows in the engine's
 * store (store_outbox.h) until the broker completes them.
 *
 * Each test runs real engines on a data directory of its own and a real
 * Mosquitto (broker_harness.h); an engine freed and made again on the same
 * directory is a restart. Every wait has a deadline.
 */
#include "store_outbox.h"

#include <dirent.h>

/* ctx_t's own: the data directory of the engines a test makes. */
#define UP_CTX_LOCAL char dir[64];
#include "upstream_harness.h"

/* A fresh engine on c->dir (no listener), replacing c->e. */
static void engine_on_dir(ctx_t *c)
{
    if (c->e) mqr_engine_free(c->e);
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.listen_port = -1;
    o.data_dir = c->dir;
    o.log_level = MQR_LOG_INFO;
    c->e = NULL;
    assert_int_equal(mqr_engine_new(&c->e, &o, NULL, NULL), 0);
}

static int setup_dir(void **state)
{
    if (setup(state) != 0) return -1;
    ctx_t *c = *state;
    snprintf(c->dir, sizeof c->dir, "/tmp/mqr-natp-XXXXXX");
    if (!mkdtemp(c->dir)) return -1;
    engine_on_dir(c);
    return 0;
}

static int teardown_dir(void **state)
{
    ctx_t *c = *state;
    char dir[64];
    snprintf(dir, sizeof dir, "%s", c->dir);
    teardown(state);
    sh("rm -rf %s", dir);
    return 0;
}

/* A persistent native session's settings, to c->broker's port (started
 * or not); uri is the caller's buffer. */
static mqr_upstream_config_t persistent_cfg(ctx_t *c, const char *name, char uri[64])
{
    if (!c->broker.port) c->broker.port = free_port();
    snprintf(uri, 64, "tcp://127.0.0.1:%d", c->broker.port);
    mqr_upstream_config_t cfg = {
        .name = name,
        .uri = uri,
        .clean_start = 1,
        .transport = "native",
        .persist = 1,
        .max_buffered = 100,
        .retry_initial_s = 1,
        .retry_max_s = 1,
    };
    return cfg;
}

static mqr_upstream_t *persistent(ctx_t *c, const char *name)
{
    char uri[64];
    mqr_upstream_config_t cfg = persistent_cfg(c, name, uri);
    mqr_upstream_t *u = session_cfg(c, &cfg);
    mqr_upstream_status_t st;
    mqr__upstream_status(u, &st);
    assert_true(st.persistent);
    assert_string_equal(st.transport, "native");
    return u;
}

static uint64_t stored(mqr_upstream_t *u)
{
    mqr_upstream_status_t st;
    mqr__upstream_status(u, &st);
    return st.stored;
}

/* A persistent subscription of the broker's (client id id, QoS 2) that
 * keeps what arrives while nobody reads: made now, read by read_queued
 * after the session delivered, so no subscriber has to be in time. */
static void queue_for(ctx_t *c, const char *id, const char *filter)
{
    assert_int_equal(sh("mosquitto_sub -p %d -c -i %s -q 2 -t '%s' -E", c->broker.port, id, filter),
                     0);
}

static void read_queued(ctx_t *c, sub_proc_t *s, const char *id, const char *filter, int n)
{
    sub_start(s, "mosquitto_sub -p %d -c -i %s -q 2 -t '%s' -C %d -W 10 -v", c->broker.port, id,
              filter, n);
    assert_int_equal(sub_finish(s), 0);
}

static bool none_stored(void *arg, const void *want)
{
    (void)arg;
    return stored((mqr_upstream_t *)want) == 0;
}

static void publish(mqr_upstream_t *u, const char *topic, const char *payload, int qos)
{
    mqr_msg_t *m = make_msg(topic, payload, qos, false);
    assert_int_equal(mqr__upstream_publish(u, m), 0);
    mqr_msg_unref(m);
}

/* QoS 1/2 publishes accepted while the broker is down are rows (QoS 0 is
 * not kept); the engine stops; the next engine on the same directory sends
 * them in their order once the broker is up, and forgets each once
 * completed (PUBACK, PUBCOMP). */
static void test_restart_restores(void **state)
{
    ctx_t *c = *state;
    mqr_upstream_t *u = persistent(c, "keep");
    publish(u, "out/p/1", "m1", 1);
    publish(u, "out/p/0", "lost", 0);
    publish(u, "out/p/2", "m2", 1);
    publish(u, "out/p/q2", "exactly-once", 2);
    publish(u, "out/p/3", "m3", 1);
    assert_int_equal(stored(u), 4);
    engine_on_dir(c); /* stops the first: its rows stay */

    broker_start(&c->broker);
    queue_for(c, "natp-keep", "out/p/#");
    u = persistent(c, "keep");
    if (!run_until(c, none_stored, u, 10000))
        fail_msg("%llu rows left after the restart", (unsigned long long)stored(u));
    sub_proc_t s;
    read_queued(c, &s, "natp-keep", "out/p/#", 4);
    const char *a = strstr(s.out, "out/p/1 m1"), *b = strstr(s.out, "out/p/2 m2"),
               *d = strstr(s.out, "out/p/3 m3");
    /* QoS 1 in order; a QoS 2 message reaches subscribers at its PUBREL */
    if (!a || !b || !d || !(a < b && b < d) || !strstr(s.out, "out/p/q2 exactly-once") ||
        strstr(s.out, "lost"))
        fail_msg("not the four kept messages, QoS 1 in order: '%s'", s.out);
}

/* A session forwarding a message while it is routed tells the publisher's
 * context that its acknowledgement waits for the commit (the row); the
 * commit makes the row visible to a second connection. */
static void forward(void *arg, mqr_msg_t *msg)
{
    mqr_upstream_t *u = arg;
    assert_int_equal(mqr__upstream_publish(u, msg), 0);
}

static void test_publisher_waits_for_commit(void **state)
{
    ctx_t *c = *state;
    mqr_upstream_t *u = persistent(c, "fwd");
    mqr_csub_t *cs = NULL;
    assert_int_equal(mqr_subscribe(c->e, "in/#", forward, u, &cs), 0);
    mqr_msg_t *m = make_msg("in/1", "q1", 1, false);
    mqr_pubctx_t pc;
    assert_true(mqr__engine_publish_ctx(c->e, m, &pc, NULL) >= 0);
    mqr_msg_unref(m);
    assert_int_equal(pc.stored, 1);
    assert_int_equal(pc.failed + pc.no_room, 0);
    m = make_msg("in/0", "q0", 0, false); /* QoS 0: no row, no wait */
    assert_true(mqr__engine_publish_ctx(c->e, m, &pc, NULL) >= 0);
    mqr_msg_unref(m);
    assert_int_equal(pc.stored, 0);
    assert_int_equal(mqr__store_flush(mqr__engine_store(c->e)), 0);

    char db[128];
    snprintf(db, sizeof db, "%s/mqrouter.db", c->dir);
    char cmd[256];
    snprintf(cmd, sizeof cmd,
             "test \"$(sqlite3 %s \"SELECT topic || ' ' || payload FROM upstream_outbox "
             "WHERE session = 'fwd'\")\" = 'in/1 q1'",
             db);
    assert_int_equal(sh("%s", cmd), 0);
    mqr_unsubscribe(c->e, cs);
}

/* Discarding the session (up:close(), a reload without it) gives its rows
 * up; a session of the same name starts empty. Stopping keeps them. */
static void test_discard_forgets(void **state)
{
    ctx_t *c = *state;
    mqr_upstream_t *u = persistent(c, "gone");
    publish(u, "out/d/1", "d1", 1);
    publish(u, "out/d/2", "d2", 1);
    mqr_upstream_t *other = persistent(c, "other");
    publish(other, "out/o/1", "o1", 1);
    assert_int_equal(stored(u), 2);
    mqr__upstream_discard(u);
    run_for(c, 50); /* the destroy runs on the loop */
    u = persistent(c, "gone");
    assert_int_equal(stored(u), 0);
    assert_int_equal(stored(other), 1); /* another session's rows stay */
}

/* When the buffer is full and drop_oldest is set, the dropped message's
 * row goes with it: a restart does not bring it back. */
static void test_drop_oldest_forgets(void **state)
{
    ctx_t *c = *state;
    char uri[64];
    mqr_upstream_config_t cfg = persistent_cfg(c, "drop", uri);
    cfg.max_buffered = 2;
    cfg.drop_oldest = 1;
    mqr_upstream_t *u = session_cfg(c, &cfg);
    publish(u, "out/x/1", "x1", 1);
    publish(u, "out/x/2", "x2", 1);
    publish(u, "out/x/3", "x3", 1);
    assert_int_equal(stored(u), 2);
    engine_on_dir(c);
    broker_start(&c->broker);
    queue_for(c, "natp-drop", "out/x/#");
    u = session_cfg(c, &cfg);
    if (!run_until(c, none_stored, u, 10000)) fail_msg("rows left after the restart");
    sub_proc_t s;
    read_queued(c, &s, "natp-drop", "out/x/#", 2);
    if (strstr(s.out, "x1") || !strstr(s.out, "out/x/2 x2") || !strstr(s.out, "out/x/3 x3"))
        fail_msg("not x2 and x3 alone: '%s'", s.out);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_restart_restores, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_publisher_waits_for_commit, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_discard_forgets, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_drop_oldest_forgets, setup_dir, teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
