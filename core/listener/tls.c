/*
 * tls.c — the TLS layer of a listener connection, on OpenSSL memory BIOs.
 *
 * The socket stays libuv's: raw bytes read by transport.c are written into
 * the connection's read BIO and SSL_do_handshake / SSL_read run on them;
 * whatever OpenSSL wants sent (handshake, alerts, records) is taken from the
 * write BIO into the wire queue. So neither the handshake nor a slow or
 * silent client ever blocks the loop: OpenSSL never sees a file descriptor.
 * TLS 1.2 is the oldest version accepted; renegotiation is refused.
 * This file must not touch the socket or the MQTT input directly (it goes
 * through mqr__ltp_up / mqr__ltp_wire).
 */
#include "listener_int.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <string.h>

static void ssl_error_text(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, buf, len);
    else
        snprintf(buf, len, "unknown TLS error");
    ERR_clear_error();
}

int mqr__ltls_ctx_new(const char *cert, const char *key, const char *ca, bool require_cert,
                      SSL_CTX **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!cert || !key) {
        snprintf(err, errlen, "a TLS listener needs a certificate and a key");
        return MQR_EINVAL;
    }
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, errlen, "SSL_CTX_new failed");
        return MQR_ENOMEM;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* many idle clients: give the record buffers back between reads */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    char why[256];
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        ssl_error_text(why, sizeof why);
        snprintf(err, errlen, "certificate %s: %s", cert, why);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        ssl_error_text(why, sizeof why);
        snprintf(err, errlen, "key %s: %s", key, why);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ssl_error_text(why, sizeof why);
        snprintf(err, errlen, "key %s does not match certificate %s: %s", key, cert, why);
        goto fail;
    }
    if (ca) {
        if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
            ssl_error_text(why, sizeof why);
            snprintf(err, errlen, "CA file %s: %s", ca, why);
            goto fail;
        }
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
        if (names) SSL_CTX_set_client_CA_list(ctx, names);
        SSL_CTX_set_verify(
            ctx, SSL_VERIFY_PEER | (require_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
        /* resumed sessions keep their verified peer only with an id context */
        static const unsigned char sid[] = "mqrouter";
        SSL_CTX_set_session_id_context(ctx, sid, sizeof sid - 1);
    } else if (require_cert) {
        snprintf(err, errlen, "requiring client certificates needs a CA file");
        goto fail;
    }
    *out = ctx;
    return 0;
fail:
    SSL_CTX_free(ctx);
    return MQR_EINVAL;
}

void mqr__ltls_ctx_free(SSL_CTX *ctx)
{
    SSL_CTX_free(ctx);
}

int mqr__ltls_start(mqr_lconn_t *c)
{
    mqr_ltp_t *tp = c->tp;
    tp->ssl = SSL_new(c->l->ssl_ctx);
    if (!tp->ssl) return MQR_ENOMEM;
    tp->rbio = BIO_new(BIO_s_mem());
    tp->wbio = BIO_new(BIO_s_mem());
    if (!tp->rbio || !tp->wbio) {
        BIO_free(tp->rbio);
        BIO_free(tp->wbio);
        tp->rbio = tp->wbio = NULL;
        return MQR_ENOMEM;
    }
    /* an empty read BIO means "wait for more", not end of file */
    BIO_set_mem_eof_return(tp->rbio, -1);
    SSL_set_bio(tp->ssl, tp->rbio, tp->wbio); /* the SSL owns both now */
    SSL_set_accept_state(tp->ssl);
    return 0;
}

/* What OpenSSL has to send, into the wire queue. */
static int drain(mqr_lconn_t *c)
{
    mqr_ltp_t *tp = c->tp;
    uint8_t buf[16384];
    while (BIO_ctrl_pending(tp->wbio) > 0) {
        int n = BIO_read(tp->wbio, buf, sizeof buf);
        if (n <= 0) break;
        int rc = mqr__ltp_wire(c, buf, (size_t)n);
        if (rc < 0) return rc;
    }
    return 0;
}

static int fail(mqr_lconn_t *c, const char *what, int ret)
{
    mqr_ltp_t *tp = c->tp;
    int e = SSL_get_error(tp->ssl, ret);
    char why[256];
    if (e == SSL_ERROR_SSL)
        ssl_error_text(why, sizeof why);
    else
        snprintf(why, sizeof why, "SSL error %d", e);
    ERR_clear_error();
    tp->tls_failed = true;
    MQR_LOG_I(MQR_LSN_LOG, "%s %s: %s, closing", what, mqr__lconn_name(c), why);
    if (c->state == MQR_LCONN_NEW) c->l->stats.connects_refused++;
    if (c->state == MQR_LCONN_ACTIVE) c->will_publish = true;
    /* the alert OpenSSL prepared goes out first, best effort */
    drain(c);
    mqr__ltp_flush(c);
    mqr__listener_conn_close(c, MQR_LCLOSE_HARD, 0, "TLS error");
    return MQR_EPROTOCOL;
}

int mqr__ltls_input(mqr_lconn_t *c, const uint8_t *p, size_t n)
{
    mqr_ltp_t *tp = c->tp;
    if (BIO_write(tp->rbio, p, (int)n) != (int)n) {
        mqr__listener_conn_close(c, MQR_LCLOSE_HARD, 0, "out of memory");
        return MQR_ENOMEM;
    }
    if (!tp->tls_done) {
        int r = SSL_do_handshake(tp->ssl);
        if (r != 1) {
            int e = SSL_get_error(tp->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return drain(c);
            return fail(c, "TLS handshake with", r);
        }
        tp->tls_done = true;
        if (drain(c) < 0) return MQR_ENOMEM;
        MQR_LOG_D(MQR_LSN_LOG, "TLS with %s: %s, %s%s", c->addr, SSL_get_version(tp->ssl),
                  SSL_get_cipher_name(tp->ssl),
                  SSL_get0_peer_certificate(tp->ssl) ? ", client certificate verified" : "");
    }
    uint8_t buf[16384];
    for (;;) {
        int r = SSL_read(tp->ssl, buf, sizeof buf);
        if (r > 0) {
            if (mqr__ltp_up(c, buf, (size_t)r) < 0) return MQR_ECLOSED;
            continue;
        }
        int e = SSL_get_error(tp->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return drain(c);
        if (e == SSL_ERROR_ZERO_RETURN) {
            /* close_notify: the client is done, like a TCP end of file */
            drain(c);
            if (c->state == MQR_LCONN_ACTIVE) c->will_publish = true;
            mqr__listener_conn_close(c, MQR_LCLOSE_HARD, 0, "TLS closed by the client");
            return MQR_ECLOSED;
        }
        return fail(c, "TLS with", r);
    }
}

int mqr__ltls_write(mqr_lconn_t *c, const uint8_t *p, size_t n)
{
    mqr_ltp_t *tp = c->tp;
    if (!tp->tls_done || tp->tls_failed) return MQR_ENOTCONN;
    while (n > 0) {
        int k = n > (1u << 30) ? (1 << 30) : (int)n;
        int r = SSL_write(tp->ssl, p, k);
        if (r <= 0) return fail(c, "TLS write to", r);
        p += r;
        n -= (size_t)r;
    }
    return drain(c);
}

void mqr__ltls_close_notify(mqr_lconn_t *c)
{
    mqr_ltp_t *tp = c->tp;
    if (!tp->ssl || !tp->tls_done || tp->tls_failed) return;
    SSL_shutdown(tp->ssl);
    ERR_clear_error();
    drain(c);
}

void mqr__ltls_free(mqr_lconn_t *c)
{
    mqr_ltp_t *tp = c->tp;
    if (!tp->ssl) return;
    SSL_free(tp->ssl); /* and both BIOs */
    tp->ssl = NULL;
    tp->rbio = tp->wbio = NULL;
}
