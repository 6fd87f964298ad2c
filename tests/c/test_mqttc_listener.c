/*
 * test_mqttc_listener.c — the loop's own MQTT client (core/mqttc/) against
 * mqrouter's own listener: proving a password with SCRAM-SHA-256 (core/auth's
 * client side) over MQTT 5 enhanced authentication — connect, re-authenticate
 * on the live connection, a wrong password refused with 0x86, a server that
 * cannot prove it knows the password refused by the client — and the same
 * over the listener's WebSocket transport.
 *
 * Engine and client share one loop; every wait runs it until a condition or
 * a deadline.
 */
#include "auth.h"
#include "mqrouter_auth.h"
#include "engine.h"
#include "mqttc.h"

#include "broker_harness.h"

#include <ftw.h>
#include <uv.h>

typedef struct {
    uv_loop_t loop;
    mqr_engine_t *e;
    char dir[64];
    int port;
    mqr_mqttc_t *c;
    mqr_scram_client_t scram;
    const char *password;
    bool forge_final; /* pretend the server's proof was another */
    int connected, closed, closed_err, closed_reason;
    int continues, dones;
} ctx_t;

static ctx_t T;

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static int setup(void **state)
{
    (void)state;
    memset(&T, 0, sizeof T);
    assert_int_equal(uv_loop_init(&T.loop), 0);
    snprintf(T.dir, sizeof T.dir, "/tmp/mqr-mqttc-auth-XXXXXX");
    assert_non_null(mkdtemp(T.dir));
    T.port = free_port();
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.listen_host = "127.0.0.1";
    o.listen_port = T.port;
    o.data_dir = T.dir;
    o.log_level = MQR_LOG_WARN;
    char *err = NULL;
    if (mqr_engine_new(&T.e, &o, &T.loop, &err) < 0) fail_msg("engine: %s", err);
    assert_int_equal(mqr_user_add(T.e, "alice", "s3cret", 4096), 0);
    mqr__scram_client_init(&T.scram);
    return 0;
}

static void run_until(bool (*done)(void), int ms)
{
    uint64_t deadline = now_ms() + (uint64_t)ms;
    while (!done() && now_ms() < deadline)
        uv_run(&T.loop, UV_RUN_NOWAIT);
}

static int teardown(void **state)
{
    (void)state;
    if (T.c) mqr__mqttc_free(T.c);
    mqr_engine_free(T.e);
    uv_run(&T.loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&T.loop), 0);
    mqr__scram_client_free(&T.scram);
    nftw(T.dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static void on_connected(void *ud, const mqr_mqtt_connack_t *ack)
{
    (void)ud, (void)ack;
    T.connected++;
}

static void on_closed(void *ud, int err, int reason, const char *why)
{
    (void)ud, (void)why;
    T.closed++;
    T.closed_err = err;
    T.closed_reason = reason;
}

/* SCRAM's steps as the client's auth callback. */
static int on_auth(void *ud, int step, const uint8_t *data, size_t len, uint8_t **out,
                   size_t *out_len)
{
    (void)ud;
    if (step == MQR_MQTTC_AUTH_CONTINUE) {
        T.continues++;
        char *final;
        int rc = mqr__scram_client_continue(&T.scram, data, len, T.password, strlen(T.password),
                                            &final, out_len);
        *out = (uint8_t *) final;
        return rc;
    }
    T.dones++;
    static const char forged[] =
        "v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="; /* 32 zero bytes */
    if (T.forge_final) return mqr__scram_client_finish(&T.scram, forged, sizeof forged - 1);
    return mqr__scram_client_finish(&T.scram, data, len);
}

static const mqr_mqttc_cbs_t cbs = {
    .connected = on_connected, .closed = on_closed, .auth = on_auth};

static void client_connect_ws(const char *user, const char *password, int port, bool ws)
{
    T.password = password;
    char *first;
    size_t n;
    assert_int_equal(mqr__scram_client_begin(&T.scram, user, NULL, &first, &n), 0);
    mqr_mqttc_options_t o = {
        .version = MQR_MQTT_V5,
        .client_id = "scram-client",
        .keepalive_s = 30,
        .clean_start = true,
        .auth_method = MQR_AUTH_SCRAM_METHOD,
        .auth_data = (const uint8_t *)first,
        .auth_data_len = n,
        .ws = {.on = ws},
    };
    assert_int_equal(mqr__mqttc_new(&T.loop, &o, &cbs, NULL, &T.c), 0);
    free(first);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", port, &a);
    assert_int_equal(mqr__mqttc_connect(T.c, (const struct sockaddr *)&a), 0);
}

static void client_connect(const char *user, const char *password)
{
    client_connect_ws(user, password, T.port, false);
}

static bool up_or_closed(void)
{
    return T.connected || T.closed;
}

static bool two_dones_or_closed(void)
{
    return T.dones >= 2 || T.closed;
}

static void test_scram_connect_and_reauth(void **state)
{
    (void)state;
    client_connect("alice", "s3cret");
    run_until(up_or_closed, 5000);
    assert_int_equal(T.closed, 0);
    assert_int_equal(T.connected, 1);
    assert_int_equal(T.continues, 1); /* server-first answered with the proof */
    assert_int_equal(T.dones, 1);     /* the server's proof checked */

    /* re-authentication on the live connection: the same exchange again */
    char *first;
    size_t n;
    assert_int_equal(mqr__scram_client_begin(&T.scram, "alice", NULL, &first, &n), 0);
    assert_int_equal(mqr__mqttc_reauth(T.c, (const uint8_t *)first, n), 0);
    assert_int_equal(mqr__mqttc_reauth(T.c, (const uint8_t *)first, n), MQR_EINVAL); /* one */
    free(first);
    run_until(two_dones_or_closed, 5000);
    assert_int_equal(T.closed, 0);
    assert_int_equal(T.continues, 2);
    assert_int_equal(T.dones, 2);
}

static void test_scram_wrong_password(void **state)
{
    (void)state;
    client_connect("alice", "wrong");
    run_until(up_or_closed, 5000);
    assert_int_equal(T.connected, 0);
    assert_int_equal(T.closed, 1);
    assert_int_equal(T.closed_err, MQR_EUPSTREAM);
    assert_int_equal(T.closed_reason, MQR_MQTT_RC_BAD_USERNAME_PASSWORD);
    assert_int_equal(T.dones, 0); /* refused before any proof of the server's */
}

/* A server whose last answer does not prove it knows the password is left
 * before anything is published to it. */
static void test_scram_server_not_proven(void **state)
{
    (void)state;
    T.forge_final = true;
    client_connect("alice", "s3cret");
    run_until(up_or_closed, 5000);
    assert_int_equal(T.connected, 0);
    assert_int_equal(T.closed, 1);
    assert_int_equal(T.closed_err, MQR_EAUTH);
    assert_int_equal(T.dones, 1);
}

/* SCRAM over WebSocket, to the listener's ws transport. */
static void test_scram_over_websocket(void **state)
{
    (void)state;
    mqr_listen_options_t lo;
    mqr_listen_options_init(&lo);
    lo.type = MQR_LISTEN_WS;
    lo.host = "127.0.0.1";
    lo.port = free_port();
    mqr_listener_t *l;
    char *err = NULL;
    if (mqr_engine_listen(T.e, &lo, &l, &err) < 0) fail_msg("listen: %s", err);
    client_connect_ws("alice", "s3cret", mqr_listener_port(l), true);
    run_until(up_or_closed, 5000);
    assert_int_equal(T.closed, 0);
    assert_int_equal(T.connected, 1);
    assert_int_equal(T.dones, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_scram_connect_and_reauth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scram_wrong_password, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scram_server_not_proven, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scram_over_websocket, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
