/*
 * test_mqttc_tls.c — the loop's own MQTT client (core/mqttc/) over the
 * layers under MQTT, to a real Mosquitto. TLS: a round trip with the CA
 * given, a name that must match (DNS name and IP literal), a foreign CA and
 * a wrong name refused with MQR_ETLS and OpenSSL's reason, a server that
 * requires a client certificate (given, encrypted key with its password,
 * or missing), files that do not load refused at creation. WebSocket: round
 * trips over ws:// and wss:// (3.1.1 and 5.0, a payload over many frames
 * and reads), and an upgrade sent to a plain MQTT port.
 *
 * Certificates are made once per run with the openssl command line.
 */
#include "mqttc.h"

#include "broker_harness.h"
#include "tls_certs.h"

#include <uv.h>

static int make_certs(void **state)
{
    (void)state;
    return tls_certs_make();
}

static int remove_certs(void **state)
{
    (void)state;
    tls_certs_remove();
    return 0;
}

/* ---- one client, one broker with two TLS listeners ------------------------ */

typedef struct {
    uv_loop_t loop;
    broker_t broker;
    int tls_port, mtls_port; /* server cert only; client cert required */
    int ws_port, wss_port;
    mqr_mqttc_t *c;
    int connected, closed, closed_err, got, got_big, dones;
    char why[400];
} ctx_t;

static ctx_t T;

/* Many reads; Mosquitto 2.0.11 did not deliver WebSocket messages of about
 * 256 KB and more to WebSocket subscribers here, ours or another client. */
#define BIG (200 * 1024)

static int setup(void **state)
{
    (void)state;
    memset(&T, 0, sizeof T);
    assert_int_equal(uv_loop_init(&T.loop), 0);
    /* five ports found free; one may be taken before mosquitto binds it
     * (broker_start), so they are picked again, up to five times */
    for (int attempt = 0;; attempt++) {
        int *ports[] = {&T.broker.port, &T.tls_port, &T.mtls_port, &T.ws_port, &T.wss_port};
        for (int i = 0; i < 5; i++) { /* five different free ports */
            bool again;
            do {
                *ports[i] = free_port();
                again = false;
                for (int j = 0; j < i; j++)
                    again |= *ports[j] == *ports[i];
            } while (again);
        }
        const char *ca = cert("ca.pem"), *crt = cert("server.pem"), *key = cert("server.key");
        snprintf(T.broker.extra, sizeof T.broker.extra,
                 "listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n"
                 "listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n"
                 "require_certificate true\n"
                 "listener %d 127.0.0.1\nprotocol websockets\n"
                 "listener %d 127.0.0.1\nprotocol websockets\ncafile %s\ncertfile %s\nkeyfile %s\n",
                 T.tls_port, ca, crt, key, T.mtls_port, ca, crt, key, T.ws_port, T.wss_port, ca,
                 crt, key);
        if (broker_try_start(&T.broker)) break;
        if (attempt == 4) fail_msg("mosquitto exited at start");
    }
    uint64_t deadline = now_ms() + 5000;
    while (!(port_accepts(T.tls_port) && port_accepts(T.mtls_port) && port_accepts(T.ws_port) &&
             port_accepts(T.wss_port)) &&
           now_ms() < deadline)
        sleep_ms(20);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (T.c) mqr__mqttc_free(T.c);
    uv_run(&T.loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&T.loop), 0);
    broker_stop(&T.broker);
    broker_cleanup(&T.broker);
    return 0;
}

static void on_connected(void *ud, const mqr_mqtt_connack_t *a)
{
    (void)ud, (void)a;
    T.connected++;
}

static void on_closed(void *ud, int err, int reason, const char *why)
{
    (void)ud, (void)reason;
    T.closed++;
    T.closed_err = err;
    snprintf(T.why, sizeof T.why, "%s", why ? why : "");
}

static void on_message(void *ud, const mqr_mqtt_publish_t *p, uint32_t ack_id)
{
    (void)ud;
    if (p->payload.len == 5 && memcmp(p->payload.p, "hello", 5) == 0) T.got++;
    if (p->payload.len == BIG && p->payload.p[0] == 'b' && p->payload.p[BIG - 1] == 'g')
        T.got_big++;
    if (ack_id) assert_int_equal(mqr__mqttc_ack(T.c, ack_id), 0);
}

static void on_done(void *ud, uint64_t token, int status, int reason)
{
    (void)ud, (void)token, (void)reason;
    if (status == 0) T.dones++;
}

static const mqr_mqttc_cbs_t cbs = {on_connected, on_closed, on_message, on_done, NULL};

static bool up_or_closed(void)
{
    return T.connected || T.closed;
}

static bool got_one(void)
{
    return T.got > 0 || T.closed;
}

static void run_until(bool (*cond)(void), int ms)
{
    uint64_t deadline = now_ms() + (uint64_t)ms;
    while (!cond() && now_ms() < deadline)
        uv_run(&T.loop, UV_RUN_NOWAIT);
}

/* Frees the client of the last attempt, for another in the same test. */
static void drop_client(void)
{
    mqr__mqttc_free(T.c);
    T.c = NULL;
    T.closed = 0;
}

static void connect_with(mqr_mqttc_options_t *o, int port)
{
    o->version = o->version ? o->version : MQR_MQTT_V5;
    o->client_id = "tls-client";
    o->clean_start = true;
    o->keepalive_s = 30;
    o->tls.on = true;
    assert_int_equal(mqr__mqttc_new(&T.loop, o, &cbs, NULL, &T.c), 0);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", port, &a);
    assert_int_equal(mqr__mqttc_connect(T.c, (const struct sockaddr *)&a), 0);
    run_until(up_or_closed, 5000);
}

static void test_round_trip(void **state)
{
    (void)state;
    mqr_mqttc_options_t o = {.tls = {.cafile = cert("ca.pem"), .host = "localhost"}};
    connect_with(&o, T.tls_port);
    assert_int_equal(T.closed, 0);
    assert_int_equal(T.connected, 1);
    mqr_mqtt_sub_entry_t e = {.filter = {"t/#", 3}, .options = 1};
    assert_int_equal(mqr__mqttc_subscribe(T.c, &e, 1, NULL, 0, 1), 0);
    mqr_mqtt_publish_t p = {
        .qos = 1, .topic = {"t/1", 3}, .payload = {(const uint8_t *)"hello", 5}};
    assert_int_equal(mqr__mqttc_publish(T.c, &p, 2), 0);
    run_until(got_one, 5000);
    assert_int_equal(T.got, 1);
    assert_int_equal(T.dones, 2); /* SUBACK and PUBACK came back through TLS too */
}

static void test_ip_literal_name(void **state)
{
    (void)state;
    mqr_mqttc_options_t o = {.version = MQR_MQTT_V311,
                             .tls = {.cafile = cert("ca.pem"), .host = "127.0.0.1"}};
    connect_with(&o, T.tls_port);
    assert_int_equal(T.connected, 1);
}

static void test_foreign_ca_refused(void **state)
{
    (void)state;
    mqr_mqttc_options_t o = {.tls = {.cafile = cert("other.pem"), .host = "localhost"}};
    connect_with(&o, T.tls_port);
    assert_int_equal(T.connected, 0);
    assert_int_equal(T.closed, 1);
    assert_int_equal(T.closed_err, MQR_ETLS);
    if (!strstr(T.why, "certificate verify failed")) fail_msg("why: %s", T.why);
}

static void test_wrong_name_refused(void **state)
{
    (void)state;
    mqr_mqttc_options_t o = {.tls = {.cafile = cert("ca.pem"), .host = "broker.example"}};
    connect_with(&o, T.tls_port);
    assert_int_equal(T.connected, 0);
    assert_int_equal(T.closed_err, MQR_ETLS);
    /* told to check the chain only, the same name goes through */
    drop_client();
    mqr_mqttc_options_t lax = {
        .tls = {.cafile = cert("ca.pem"), .host = "broker.example", .no_verify_hostname = true}};
    connect_with(&lax, T.tls_port);
    assert_int_equal(T.connected, 1);
}

static void test_client_certificate(void **state)
{
    (void)state;
    mqr_mqttc_options_t none = {.tls = {.cafile = cert("ca.pem"), .host = "localhost"}};
    connect_with(&none, T.mtls_port);
    assert_int_equal(T.connected, 0); /* the server wants a certificate */
    assert_int_equal(T.closed, 1);
    drop_client();
    mqr_mqttc_options_t enc = {.tls = {.cafile = cert("ca.pem"),
                                       .host = "localhost",
                                       .cert = cert("client.pem"),
                                       .key = cert("client-enc.key"),
                                       .key_password = "s3cret"}};
    connect_with(&enc, T.mtls_port);
    assert_int_equal(T.closed, 0);
    assert_int_equal(T.connected, 1);
}

static bool got_both(void)
{
    return (T.got > 0 && T.got_big > 0) || T.closed;
}

/* Subscribes, publishes "hello" at QoS 1 and a big payload at QoS 0 to
 * itself, and waits for both. */
static void round_trip(void)
{
    assert_int_equal(T.closed, 0);
    assert_int_equal(T.connected, 1);
    mqr_mqtt_sub_entry_t e = {.filter = {"t/#", 3}, .options = 1};
    assert_int_equal(mqr__mqttc_subscribe(T.c, &e, 1, NULL, 0, 1), 0);
    mqr_mqtt_publish_t p = {
        .qos = 1, .topic = {"t/1", 3}, .payload = {(const uint8_t *)"hello", 5}};
    assert_int_equal(mqr__mqttc_publish(T.c, &p, 2), 0);
    uint8_t *big = malloc(BIG);
    assert_non_null(big);
    memset(big, 'x', BIG);
    big[0] = 'b';
    big[BIG - 1] = 'g';
    mqr_mqtt_publish_t q = {.qos = 0, .topic = {"t/big", 5}, .payload = {big, BIG}};
    assert_int_equal(mqr__mqttc_publish(T.c, &q, 3), 0);
    free(big);
    run_until(got_both, 5000);
    if (T.closed || !T.got_big)
        fail_msg("closed %d err %d (%s), got %d, big %d", T.closed, T.closed_err, T.why, T.got,
                 T.got_big);
    assert_int_equal(T.closed, 0);
    assert_int_equal(T.got, 1);
    assert_int_equal(T.got_big, 1);
}

static void test_websocket(void **state)
{
    (void)state;
    mqr_mqttc_options_t o = {.version = MQR_MQTT_V311,
                             .client_id = "ws-client",
                             .clean_start = true,
                             .ws = {.on = true}};
    assert_int_equal(mqr__mqttc_new(&T.loop, &o, &cbs, NULL, &T.c), 0);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", T.ws_port, &a);
    assert_int_equal(mqr__mqttc_connect(T.c, (const struct sockaddr *)&a), 0);
    run_until(up_or_closed, 5000);
    round_trip();
}

static void test_websocket_over_tls(void **state)
{
    (void)state;
    mqr_mqttc_options_t o = {.ws = {.on = true, .path = "/mqtt", .host = "localhost"},
                             .tls = {.cafile = cert("ca.pem"), .host = "localhost"}};
    connect_with(&o, T.wss_port); /* 5.0 */
    round_trip();
}

/* An upgrade to a port that speaks MQTT itself: the connection ends, it
 * never counts as connected. */
static void test_websocket_to_plain_port(void **state)
{
    (void)state;
    mqr_mqttc_options_t o = {.version = MQR_MQTT_V5, .ws = {.on = true}};
    o.client_id = "ws-wrong";
    assert_int_equal(mqr__mqttc_new(&T.loop, &o, &cbs, NULL, &T.c), 0);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", T.broker.port, &a);
    assert_int_equal(mqr__mqttc_connect(T.c, (const struct sockaddr *)&a), 0);
    run_until(up_or_closed, 5000);
    assert_int_equal(T.connected, 0);
    assert_int_equal(T.closed, 1);
}

static void test_files_refused_at_creation(void **state)
{
    (void)state;
    mqr_mqttc_options_t o = {.version = MQR_MQTT_V5, .tls = {.on = true, .cafile = "/nonexistent"}};
    assert_int_equal(mqr__mqttc_new(&T.loop, &o, &cbs, NULL, &T.c), MQR_ETLS);
    mqr_mqttc_options_t k = {.version = MQR_MQTT_V5,
                             .tls = {.on = true,
                                     .cafile = cert("ca.pem"),
                                     .cert = cert("client.pem"),
                                     .key = cert("client-enc.key"),
                                     .key_password = "wrong"}};
    assert_int_equal(mqr__mqttc_new(&T.loop, &k, &cbs, NULL, &T.c), MQR_ETLS);
    assert_null(T.c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ip_literal_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_foreign_ca_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_name_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_certificate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_files_refused_at_creation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_websocket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_websocket_over_tls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_websocket_to_plain_port, setup, teardown),
    };
    return cmocka_run_group_tests(tests, make_certs, remove_certs);
}
