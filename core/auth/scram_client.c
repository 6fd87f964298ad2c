/*
 * scram_client.c — SCRAM-SHA-256 from the client's side (auth.h): the
 * messages an upstream session sends in MQTT 5 AUTH packets to prove its
 * password, and the check that the server's last answer proves the server
 * knows it too (RFC 5802 §3, RFC 7677). Must not: keep the password, or
 * accept a server that did not prove itself.
 */
#include "auth.h"
#include "auth_int.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mqr__scram_client_init(mqr_scram_client_t *c)
{
    memset(c, 0, sizeof *c);
}

static void exchange_reset(mqr_scram_client_t *c)
{
    free(c->client_first_bare);
    c->client_first_bare = NULL;
    c->cfb_len = 0;
    OPENSSL_cleanse(c->server_signature, sizeof c->server_signature);
    c->step = 0;
}

void mqr__scram_client_free(mqr_scram_client_t *c)
{
    exchange_reset(c);
    OPENSSL_cleanse(c, sizeof *c);
}

/* saslname: ',' and '=' escaped as "=2C" and "=3D" (RFC 5802 §5.1). */
static char *encode_saslname(const char *user, size_t *out_len)
{
    size_t n = strlen(user), k = 0;
    char *out = malloc(3 * n + 1);
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (user[i] == ',' || user[i] == '=') {
            memcpy(out + k, user[i] == ',' ? "=2C" : "=3D", 3);
            k += 3;
        } else {
            out[k++] = user[i];
        }
    }
    out[k] = '\0';
    *out_len = k;
    return out;
}

int mqr__scram_client_begin(mqr_scram_client_t *c, const char *user, const char *nonce, char **out,
                            size_t *out_len)
{
    *out = NULL;
    exchange_reset(c);
    if (!user || !mqr__auth_username_valid(user, strlen(user))) return MQR_EINVAL;
    if (nonce) {
        size_t n = strlen(nonce);
        if (n >= sizeof c->nonce || !mqr__scram_nonce_ok(nonce, n)) return MQR_EINVAL;
        memcpy(c->nonce, nonce, n + 1);
        c->nonce_len = n;
    } else {
        uint8_t raw[18];
        if (RAND_bytes(raw, sizeof raw) != 1) return MQR_ENOMEM;
        size_t n;
        char *b = mqr__auth_b64_encode(raw, sizeof raw, &n); /* 24 chars, no '=' or ',' */
        if (!b) return MQR_ENOMEM;
        memcpy(c->nonce, b, n + 1);
        c->nonce_len = n;
        free(b);
    }
    size_t un;
    char *name = encode_saslname(user, &un);
    if (!name) return MQR_ENOMEM;
    size_t cap = 3 + un + 3 + c->nonce_len + 1; /* "n=" name ",r=" nonce */
    char *bare = malloc(cap), *first = malloc(cap + 3);
    if (!bare || !first) {
        free(name);
        free(bare);
        free(first);
        return MQR_ENOMEM;
    }
    int bn = snprintf(bare, cap, "n=%s,r=%s", name, c->nonce);
    free(name);
    snprintf(first, cap + 3, "n,,%s", bare);
    c->client_first_bare = bare;
    c->cfb_len = (size_t)bn;
    c->step = 1;
    *out = first;
    *out_len = (size_t)bn + 3;
    return 0;
}

/* r=, s= and i= of server-first; the nonce must extend ours. */
static int parse_server_first(mqr_scram_client_t *c, const char *p, size_t len, const char **nonce,
                              size_t *nonce_len, uint8_t *salt, size_t *salt_len,
                              uint32_t *iterations)
{
    const char *q = p, *end = p + len, *v;
    char name;
    size_t vn;
    if (!len || memchr(p, '\0', len)) return MQR_EMALFORMED;
    if (!mqr__scram_next_attr(&q, end, &name, &v, &vn) || name == 'm') return MQR_EMALFORMED;
    if (name != 'r' || vn <= c->nonce_len || memcmp(v, c->nonce, c->nonce_len) != 0 ||
        !mqr__scram_nonce_ok(v, vn))
        return MQR_EMALFORMED;
    *nonce = v;
    *nonce_len = vn;
    if (!mqr__scram_next_attr(&q, end, &name, &v, &vn) || name != 's' || !vn ||
        vn > 4 * ((MQR_AUTH_SALT_MAX + 2) / 3))
        return MQR_EMALFORMED;
    uint8_t buf[3 * (4 * ((MQR_AUTH_SALT_MAX + 2) / 3)) / 4];
    int sn = mqr__auth_b64_decode(v, vn, buf);
    if (sn <= 0 || (size_t)sn > MQR_AUTH_SALT_MAX) return MQR_EMALFORMED;
    memcpy(salt, buf, (size_t)sn);
    *salt_len = (size_t)sn;
    if (!mqr__scram_next_attr(&q, end, &name, &v, &vn) || name != 'i' || !vn || vn > 10)
        return MQR_EMALFORMED;
    uint64_t it = 0;
    for (size_t i = 0; i < vn; i++) {
        if (v[i] < '0' || v[i] > '9') return MQR_EMALFORMED;
        it = it * 10 + (uint64_t)(v[i] - '0');
    }
    /* a server asking for less work than RFC 7677 allows weakens the key,
     * one asking for more than ours would stalls the client */
    if (it < MQR_AUTH_ITERATIONS_MIN || it > MQR_AUTH_ITERATIONS_MAX) return MQR_EMALFORMED;
    *iterations = (uint32_t)it;
    return 0; /* extensions after i= are optional ones: ignored */
}

/* The salted password for this password, salt and count: the one kept, or
 * a new PBKDF2 (a credentials hook may change the password between
 * connects). */
static int salted_for(mqr_scram_client_t *c, const void *pw, size_t pw_len, const uint8_t *salt,
                      size_t salt_len, uint32_t iterations)
{
    uint8_t digest[MQR_AUTH_KEY_LEN];
    SHA256(pw, pw_len, digest);
    if (c->have_salted && c->salt_len == salt_len && c->iterations == iterations &&
        memcmp(c->salt, salt, salt_len) == 0 &&
        CRYPTO_memcmp(c->pw_digest, digest, sizeof digest) == 0)
        return 0;
    c->have_salted = false;
    int rc = mqr__auth_pbkdf2(pw, pw_len, salt, salt_len, iterations, c->salted);
    if (rc < 0) return rc;
    memcpy(c->pw_digest, digest, sizeof digest);
    memcpy(c->salt, salt, salt_len);
    c->salt_len = salt_len;
    c->iterations = iterations;
    c->have_salted = true;
    return 0;
}

int mqr__scram_client_continue(mqr_scram_client_t *c, const void *server_first, size_t len,
                               const void *pw, size_t pw_len, char **out, size_t *out_len)
{
    *out = NULL;
    if (c->step != 1) return MQR_EINVAL;
    c->step = 2; /* one try */
    const char *nonce;
    size_t nonce_len, salt_len;
    uint8_t salt[MQR_AUTH_SALT_MAX];
    uint32_t iterations;
    int rc =
        parse_server_first(c, server_first, len, &nonce, &nonce_len, salt, &salt_len, &iterations);
    if (rc == 0) rc = salted_for(c, pw, pw_len, salt, salt_len, iterations);
    if (rc < 0) return rc;

    /* client-final-without-proof = "c=biws,r=" nonce; "biws" is base64("n,,") */
    size_t wp_len = 9 + nonce_len;
    size_t am_len = c->cfb_len + 1 + len + 1 + wp_len;
    char *am = malloc(am_len);
    char *final = malloc(wp_len + 3 + 44 + 1); /* ",p=" + base64 of 32 bytes */
    if (!am || !final) {
        free(am);
        free(final);
        return MQR_ENOMEM;
    }
    memcpy(final, "c=biws,r=", 9);
    memcpy(final + 9, nonce, nonce_len);
    memcpy(am, c->client_first_bare, c->cfb_len);
    am[c->cfb_len] = ',';
    memcpy(am + c->cfb_len + 1, server_first, len);
    am[c->cfb_len + 1 + len] = ',';
    memcpy(am + c->cfb_len + 2 + len, final, wp_len);

    uint8_t client_key[MQR_AUTH_KEY_LEN], stored[MQR_AUTH_KEY_LEN], sig[MQR_AUTH_KEY_LEN];
    uint8_t server_key[MQR_AUTH_KEY_LEN];
    mqr__auth_hmac256(c->salted, MQR_AUTH_KEY_LEN, "Client Key", 10, client_key);
    SHA256(client_key, sizeof client_key, stored);
    mqr__auth_hmac256(stored, MQR_AUTH_KEY_LEN, am, am_len, sig);
    for (int i = 0; i < MQR_AUTH_KEY_LEN; i++)
        client_key[i] ^= sig[i]; /* now the proof */
    mqr__auth_keys(c->salted, NULL, server_key);
    mqr__auth_hmac256(server_key, MQR_AUTH_KEY_LEN, am, am_len, c->server_signature);
    free(am);
    size_t pn;
    char *proof = mqr__auth_b64_encode(client_key, sizeof client_key, &pn);
    OPENSSL_cleanse(client_key, sizeof client_key);
    OPENSSL_cleanse(server_key, sizeof server_key);
    if (!proof) {
        free(final);
        return MQR_ENOMEM;
    }
    memcpy(final + wp_len, ",p=", 3);
    memcpy(final + wp_len + 3, proof, pn + 1);
    free(proof);
    *out = final;
    *out_len = wp_len + 3 + pn;
    return 0;
}

int mqr__scram_client_finish(mqr_scram_client_t *c, const void *server_final, size_t len)
{
    if (c->step != 2) return MQR_EINVAL;
    const char *p = server_final, *q = p, *end = p + len, *v;
    char name;
    size_t vn;
    if (!len || memchr(p, '\0', len) || !mqr__scram_next_attr(&q, end, &name, &v, &vn))
        return MQR_EMALFORMED;
    if (name == 'e') return MQR_EAUTH; /* the server's own refusal */
    uint8_t sig[48];
    if (name != 'v' || vn > 64 || mqr__auth_b64_decode(v, vn, sig) != MQR_AUTH_KEY_LEN)
        return MQR_EMALFORMED;
    if (CRYPTO_memcmp(sig, c->server_signature, MQR_AUTH_KEY_LEN) != 0) return MQR_EAUTH;
    c->step = 3;
    return 0;
}
