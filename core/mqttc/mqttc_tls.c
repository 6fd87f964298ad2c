/*
 * mqttc_tls.c — TLS under the client's MQTT (OpenSSL on memory BIOs, the
 * way the listener's tls.c does it for servers): the socket's bytes go in
 * through mqr__mqttc_tls_input(), which runs the handshake and then hands
 * plain bytes up the stream (WebSocket, or MQTT); the MQTT output is sealed by
 * mqr__mqttc_tls_seal() and the ciphertext taken out with
 * mqr__mqttc_tls_take() for the one write per loop turn (mqttc_out.c).
 * Certificates: the chain is checked against cafile/capath or the system's
 * CAs, and the name against tls.host, unless told not to.
 * Must not: block, or let an unverified server through by default.
 */
#include "mqttc_int.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

struct mqttc_tls {
    SSL_CTX *ctx;
    SSL *ssl;
    BIO *rbio, *wbio; /* socket -> OpenSSL, OpenSSL -> socket */
    bool handshaken;
    char *key_password;
    uint8_t raw[16384];   /* where the socket's reads land */
    uint8_t plain[16384]; /* decrypted, on its way up */
};

/* OpenSSL's reasons, oldest first, into buf (the queue is emptied). */
static void ssl_reasons(char *buf, size_t len)
{
    buf[0] = '\0';
    size_t used = 0;
    unsigned long e;
    while ((e = ERR_get_error()) != 0) {
        char one[160];
        ERR_error_string_n(e, one, sizeof one);
        int n = snprintf(buf + used, len - used, "%s%s", used ? "; " : "", one);
        if (n < 0 || (size_t)n >= len - used) break;
        used += (size_t)n;
    }
}

static int key_password_cb(char *buf, int size, int rwflag, void *u)
{
    (void)rwflag;
    const char *pw = u;
    if (!pw) return 0;
    int n = (int)strlen(pw);
    if (n > size) n = size;
    memcpy(buf, pw, (size_t)n);
    return n;
}

static bool is_ip_literal(const char *h)
{
    struct in6_addr a6;
    struct in_addr a4;
    return inet_pton(AF_INET, h, &a4) == 1 || inet_pton(AF_INET6, h, &a6) == 1;
}

static int ctx_load(mqttc_tls_t *t, const mqr_mqttc_options_t *o)
{
    SSL_CTX *ctx = t->ctx;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    int ok = o->tls.cafile || o->tls.capath
                 ? SSL_CTX_load_verify_locations(ctx, o->tls.cafile, o->tls.capath)
                 : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) return MQR_ETLS;
    if (o->tls.key_password && !(t->key_password = strdup(o->tls.key_password))) return MQR_ENOMEM;
    SSL_CTX_set_default_passwd_cb(ctx, key_password_cb);
    SSL_CTX_set_default_passwd_cb_userdata(ctx, t->key_password);
    if (o->tls.cert && (SSL_CTX_use_certificate_chain_file(ctx, o->tls.cert) != 1 ||
                        SSL_CTX_use_PrivateKey_file(ctx, o->tls.key ? o->tls.key : o->tls.cert,
                                                    SSL_FILETYPE_PEM) != 1 ||
                        SSL_CTX_check_private_key(ctx) != 1))
        return MQR_ETLS;
    SSL_CTX_set_verify(ctx, o->tls.no_verify ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
    return 0;
}

int mqr__mqttc_tls_new(mqr_mqttc_t *c, const mqr_mqttc_options_t *o)
{
    mqttc_tls_t *t = calloc(1, sizeof *t);
    if (!t) return MQR_ENOMEM;
    c->tls = t;
    ERR_clear_error();
    if (!(t->ctx = SSL_CTX_new(TLS_client_method()))) return MQR_ENOMEM;
    int rc = ctx_load(t, o);
    if (rc) return rc;
    if (!(t->ssl = SSL_new(t->ctx)) || !(t->rbio = BIO_new(BIO_s_mem())) ||
        !(t->wbio = BIO_new(BIO_s_mem())))
        return MQR_ENOMEM;
    SSL_set_bio(t->ssl, t->rbio, t->wbio); /* the SSL owns them from here */
    SSL_set_connect_state(t->ssl);
    const char *h = o->tls.host;
    if (h && !is_ip_literal(h) && SSL_set_tlsext_host_name(t->ssl, h) != 1) return MQR_ETLS;
    if (h && !o->tls.no_verify && !o->tls.no_verify_hostname) {
        /* an IP literal is checked against the certificate's IP addresses */
        X509_VERIFY_PARAM *vp = SSL_get0_param(t->ssl);
        if ((is_ip_literal(h) ? X509_VERIFY_PARAM_set1_ip_asc(vp, h)
                              : X509_VERIFY_PARAM_set1_host(vp, h, 0)) != 1)
            return MQR_ETLS;
    }
    return 0;
}

void mqr__mqttc_tls_free(mqr_mqttc_t *c)
{
    mqttc_tls_t *t = c->tls;
    if (!t) return;
    if (t->ssl) SSL_free(t->ssl); /* and its BIOs */
    SSL_CTX_free(t->ctx);
    if (t->key_password) {
        OPENSSL_cleanse(t->key_password, strlen(t->key_password));
        free(t->key_password);
    }
    free(t);
    c->tls = NULL;
}

uv_buf_t mqr__mqttc_tls_rbuf(mqr_mqttc_t *c)
{
    return uv_buf_init((char *)c->tls->raw, sizeof c->tls->raw);
}

bool mqr__mqttc_tls_ready(const mqr_mqttc_t *c)
{
    return c->tls->handshaken;
}

bool mqr__mqttc_tls_pending(const mqr_mqttc_t *c)
{
    return c->tls && BIO_ctrl_pending(c->tls->wbio) > 0;
}

/* A handshake or record failure: closed() with OpenSSL's reason. */
static int tls_fail(mqr_mqttc_t *c, const char *what)
{
    char why[400], reasons[320];
    ssl_reasons(reasons, sizeof reasons);
    long v = SSL_get_verify_result(c->tls->ssl);
    if (v != X509_V_OK && !reasons[0])
        snprintf(reasons, sizeof reasons, "%s", X509_verify_cert_error_string(v));
    snprintf(why, sizeof why, "TLS %s: %s", what, reasons[0] ? reasons : "connection ended");
    mqr__mqttc_fail(c, MQR_ETLS, 0, why);
    return MQR_ETLS;
}

int mqr__mqttc_tls_start(mqr_mqttc_t *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->tls->ssl); /* the ClientHello, into wbio */
    if (r != 1 && SSL_get_error(c->tls->ssl, r) != SSL_ERROR_WANT_READ)
        return tls_fail(c, "handshake");
    mqr__mqttc_out_kick(c);
    return 0;
}

int mqr__mqttc_tls_input(mqr_mqttc_t *c, const uint8_t *p, size_t n, bool *handshaken)
{
    mqttc_tls_t *t = c->tls;
    *handshaken = false;
    if (BIO_write(t->rbio, p, (int)n) != (int)n) return tls_fail(c, "read");
    ERR_clear_error();
    if (!t->handshaken) {
        int r = SSL_do_handshake(t->ssl);
        if (r != 1) {
            if (SSL_get_error(t->ssl, r) != SSL_ERROR_WANT_READ) return tls_fail(c, "handshake");
            mqr__mqttc_out_kick(c); /* our part of the handshake */
            return 0;
        }
        t->handshaken = *handshaken = true;
    }
    for (;;) { /* every whole record, up the stream */
        int r = SSL_read(t->ssl, t->plain, sizeof t->plain);
        if (r > 0) {
            int rc = mqr__mqttc_stream_in(c, t->plain, (size_t)r);
            if (rc < 0) return rc;
            continue;
        }
        int e = SSL_get_error(t->ssl, r);
        if (e == SSL_ERROR_WANT_READ) break;
        if (e == SSL_ERROR_ZERO_RETURN) return tls_fail(c, "closed by the server");
        return tls_fail(c, "read");
    }
    if (BIO_ctrl_pending(t->wbio)) mqr__mqttc_out_kick(c); /* e.g. a key update's answer */
    return 0;
}

int mqr__mqttc_tls_seal(mqr_mqttc_t *c, const uint8_t *p, size_t n)
{
    ERR_clear_error();
    /* memory BIOs grow: SSL_write takes everything at once */
    if (n && SSL_write(c->tls->ssl, p, (int)n) != (int)n) return tls_fail(c, "write");
    return 0;
}

int mqr__mqttc_tls_take(mqr_mqttc_t *c, mqttc_buf_t *b)
{
    BIO *w = c->tls->wbio;
    size_t pending;
    while ((pending = BIO_ctrl_pending(w)) > 0) {
        if (mqr__mqttc_buf_grow(b, pending) < 0) return MQR_ENOMEM;
        int r = BIO_read(w, b->p + b->len, (int)pending);
        if (r <= 0) break;
        b->len += (size_t)r;
    }
    return 0;
}
