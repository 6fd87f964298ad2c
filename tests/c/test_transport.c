/*
 * test_transport.c — listeners through the public API (mqr_engine_listen):
 * option checks and their messages, port 0, a port already taken, closing;
 * and a WebSocket client on the engine's own loop: the RFC 6455 sample key
 * gets the RFC's Sec-WebSocket-Accept, a masked binary frame carrying
 * CONNECT gets CONNACK in a binary frame, a request without the "mqtt"
 * subprotocol gets 400. TLS and real clients are in
 * tests/integration/test_transports.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "engine.h"
#include "mqrouter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static mqr_engine_t *engine(void)
{
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.listen_port = -1;
    o.data_dir = "";
    o.log_level = MQR_LOG_ERROR;
    mqr_engine_t *e = NULL;
    char *err = NULL;
    if (mqr_engine_new(&e, &o, NULL, &err) < 0) fail_msg("engine: %s", err);
    return e;
}

static int listen_err(mqr_engine_t *e, const mqr_listen_options_t *o, const char *want)
{
    mqr_listener_t *l = (mqr_listener_t *)1;
    char *err = NULL;
    int rc = mqr_engine_listen(e, o, &l, &err);
    assert_true(rc < 0);
    assert_null(l);
    assert_non_null(err);
    if (!strstr(err, want)) fail_msg("error '%s' does not say '%s'", err, want);
    free(err);
    return rc;
}

static void test_options(void **state)
{
    mqr_engine_t *e = engine();
    mqr_listen_options_t o;
    mqr_listen_options_init(&o);
    o.size = 8;
    assert_int_equal(listen_err(e, &o, "too small"), MQR_EINVAL);

    mqr_listen_options_init(&o);
    o.type = MQR_LISTEN_TLS;
    assert_int_equal(listen_err(e, &o, "needs a certificate and a key"), MQR_EINVAL);
    o.cert_file = "/nonexistent/server.pem";
    o.key_file = "/nonexistent/server.key";
    listen_err(e, &o, "certificate /nonexistent/server.pem");

    mqr_listen_options_init(&o);
    o.type = MQR_LISTEN_WS;
    o.ca_file = "ca.pem";
    assert_int_equal(listen_err(e, &o, "for tls and wss"), MQR_EINVAL);

    mqr_listen_options_init(&o);
    o.type = 9;
    assert_int_equal(listen_err(e, &o, "bad listener type"), MQR_EINVAL);
    mqr_engine_free(e);
}

static void test_port_zero_taken_and_close(void **state)
{
    mqr_engine_t *e = engine();
    mqr_listen_options_t o;
    mqr_listen_options_init(&o);
    o.port = 0;
    mqr_listener_t *a, *b;
    char *err = NULL;
    assert_int_equal(mqr_engine_listen(e, &o, &a, &err), 0);
    int port = mqr_listener_port(a);
    assert_true(port > 0);
    o.port = port;
    o.type = MQR_LISTEN_WS;
    assert_int_equal(listen_err(e, &o, "cannot listen"), UV_EADDRINUSE);
    mqr_listener_close(a);
    /* the port is free again at once: uv_close closes the socket */
    assert_int_equal(mqr_engine_listen(e, &o, &b, &err), 0);
    assert_int_equal(mqr_listener_port(b), port);
    /* b is closed by the engine */
    mqr_engine_free(e);
}

/* ---- a WebSocket client on the engine's loop ---- */

typedef struct {
    uv_tcp_t tcp;
    uv_connect_t creq;
    char in[4096];
    size_t in_len;
    const char *send;
    size_t send_len;
    bool closed;
} wsc_t;

static void wsc_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    wsc_t *w = h->data;
    *buf = uv_buf_init(w->in + w->in_len, (unsigned)(sizeof w->in - 1 - w->in_len));
}

static void wsc_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    wsc_t *w = s->data;
    if (n < 0) {
        w->closed = true;
        uv_read_stop(s);
        return;
    }
    w->in_len += (size_t)n;
    w->in[w->in_len] = '\0';
}

static void wsc_write(mqr_engine_t *e, wsc_t *w, const void *p, size_t n)
{
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    assert_int_equal(uv_try_write((uv_stream_t *)&w->tcp, &b, 1), (int)n);
}

static void wsc_connected(uv_connect_t *req, int status)
{
    wsc_t *w = req->data;
    assert_int_equal(status, 0);
    uv_read_start((uv_stream_t *)&w->tcp, wsc_alloc, wsc_read);
    uv_buf_t b = uv_buf_init((char *)w->send, (unsigned)w->send_len);
    assert_int_equal(uv_try_write((uv_stream_t *)&w->tcp, &b, 1), (int)w->send_len);
}

static void wsc_start(mqr_engine_t *e, wsc_t *w, int port, const char *req)
{
    memset(w, 0, sizeof *w);
    uv_tcp_init(mqr_engine_loop(e), &w->tcp);
    w->tcp.data = w;
    w->creq.data = w;
    w->send = req;
    w->send_len = strlen(req);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", port, &a);
    assert_int_equal(uv_tcp_connect(&w->creq, &w->tcp, (struct sockaddr *)&a, wsc_connected), 0);
}

/* Runs the loop until w has at least n bytes (or the server closed). */
static void wsc_wait(mqr_engine_t *e, wsc_t *w, size_t n)
{
    for (int i = 0; i < 200 && w->in_len < n && !w->closed; i++)
        uv_run(mqr_engine_loop(e), UV_RUN_ONCE);
}

static void wsc_close(mqr_engine_t *e, wsc_t *w)
{
    uv_close((uv_handle_t *)&w->tcp, NULL);
    uv_run(mqr_engine_loop(e), UV_RUN_NOWAIT);
}

static const char sample_request[] = "GET /mqtt HTTP/1.1\r\n"
                                     "Host: server.example.com\r\n"
                                     "Upgrade: websocket\r\n"
                                     "Connection: keep-alive, Upgrade\r\n"
                                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                     "Sec-WebSocket-Protocol: chat, mqtt\r\n"
                                     "Sec-WebSocket-Version: 13\r\n\r\n";

static void test_websocket(void **state)
{
    mqr_engine_t *e = engine();
    mqr_listen_options_t o;
    mqr_listen_options_init(&o);
    o.type = MQR_LISTEN_WS;
    mqr_listener_t *l;
    char *err = NULL;
    assert_int_equal(mqr_engine_listen(e, &o, &l, &err), 0);
    int port = mqr_listener_port(l);

    wsc_t w;
    wsc_start(e, &w, port, sample_request);
    char *end = NULL;
    for (int i = 0; i < 200 && !(end = strstr(w.in, "\r\n\r\n")) && !w.closed; i++)
        uv_run(mqr_engine_loop(e), UV_RUN_ONCE);
    assert_non_null(end);
    assert_memory_equal(w.in, "HTTP/1.1 101 ", 13);
    /* RFC 6455 section 1.3's own example */
    assert_non_null(strstr(w.in, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert_non_null(strstr(w.in, "Sec-WebSocket-Protocol: mqtt\r\n"));
    size_t head = (size_t)(end + 4 - w.in);

    /* CONNECT (3.1.1, clean, client id "c") in one masked binary frame */
    static const uint8_t connect[] = {0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30, 0, 1, 'c'};
    uint8_t frame[2 + 4 + sizeof connect];
    static const uint8_t mask[4] = {0x12, 0x34, 0x56, 0x78};
    frame[0] = 0x82;
    frame[1] = 0x80 | (uint8_t)sizeof connect;
    memcpy(frame + 2, mask, 4);
    for (size_t i = 0; i < sizeof connect; i++)
        frame[6 + i] = connect[i] ^ mask[i % 4];
    wsc_write(e, &w, frame, sizeof frame);
    wsc_wait(e, &w, head + 6);
    static const uint8_t want[] = {0x82, 4, 0x20, 2, 0, 0}; /* CONNACK 0 in a binary frame */
    assert_true(w.in_len >= head + sizeof want);
    assert_memory_equal(w.in + head, want, sizeof want);
    wsc_close(e, &w);

    /* no "mqtt" among the subprotocols: 400 and the end */
    wsc_start(e, &w, port,
              "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    for (int i = 0; i < 200 && !w.closed; i++)
        uv_run(mqr_engine_loop(e), UV_RUN_ONCE);
    assert_true(w.closed);
    assert_memory_equal(w.in, "HTTP/1.1 400 ", 13);
    wsc_close(e, &w);
    mqr_engine_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_port_zero_taken_and_close),
        cmocka_unit_test(test_websocket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
