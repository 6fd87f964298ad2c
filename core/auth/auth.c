/*
 * auth.c — password keys (PBKDF2-HMAC-SHA256 through OpenSSL) and the
 * server side of SCRAM-SHA-256 (RFC 5802 with RFC 7677's hash), plus the
 * public user-management calls of mqrouter_auth.h.
 *
 * Everything but the public calls is pure and thread-safe: the listener runs
 * a password check on the libuv threadpool. Key material is compared with
 * CRYPTO_memcmp and wiped with OPENSSL_cleanse. SASLprep is not applied:
 * names and passwords are compared as the bytes given (the same for ASCII).
 * Must not: keep a password, or SaltedPassword, anywhere but on the stack.
 */
#include "auth.h"
#include "auth_int.h"
#include "engine.h"

#include "mqrouter_auth.h"
#include "utf8.h"

#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- keys ---------------------------------------------------------------- */

int mqr__auth_pbkdf2(const void *pw, size_t pw_len, const uint8_t *salt, size_t salt_len,
                     uint32_t iterations, uint8_t out[MQR_AUTH_KEY_LEN])
{
    if (!iterations || iterations > MQR_AUTH_ITERATIONS_MAX || pw_len > INT_MAX ||
        salt_len > INT_MAX)
        return MQR_EINVAL;
    static const char empty[1] = "";
    if (PKCS5_PBKDF2_HMAC(pw_len ? pw : empty, (int)pw_len, salt, (int)salt_len, (int)iterations,
                          EVP_sha256(), MQR_AUTH_KEY_LEN, out) != 1)
        return MQR_ENOMEM;
    return 0;
}

void mqr__auth_hmac256(const uint8_t *key, size_t key_len, const void *data, size_t len,
                       uint8_t out[MQR_AUTH_KEY_LEN])
{
    unsigned olen = MQR_AUTH_KEY_LEN;
    HMAC(EVP_sha256(), key, (int)key_len, data, len, out, &olen);
}

void mqr__auth_keys(const uint8_t salted[MQR_AUTH_KEY_LEN], uint8_t stored_key[MQR_AUTH_KEY_LEN],
                    uint8_t server_key[MQR_AUTH_KEY_LEN])
{
    if (stored_key) {
        uint8_t client_key[MQR_AUTH_KEY_LEN];
        mqr__auth_hmac256(salted, MQR_AUTH_KEY_LEN, "Client Key", 10, client_key);
        SHA256(client_key, sizeof client_key, stored_key);
        OPENSSL_cleanse(client_key, sizeof client_key);
    }
    if (server_key) mqr__auth_hmac256(salted, MQR_AUTH_KEY_LEN, "Server Key", 10, server_key);
}

int mqr__auth_cred_make(const void *pw, size_t pw_len, uint32_t iterations, mqr_cred_t *out)
{
    if (!iterations) iterations = MQR_AUTH_ITERATIONS_DEFAULT;
    if (iterations < MQR_AUTH_ITERATIONS_MIN || iterations > MQR_AUTH_ITERATIONS_MAX)
        return MQR_EINVAL;
    memset(out, 0, sizeof *out);
    if (RAND_bytes(out->salt, MQR_AUTH_SALT_LEN) != 1) return MQR_ENOMEM;
    out->salt_len = MQR_AUTH_SALT_LEN;
    out->iterations = iterations;
    uint8_t salted[MQR_AUTH_KEY_LEN];
    int rc = mqr__auth_pbkdf2(pw, pw_len, out->salt, out->salt_len, iterations, salted);
    if (rc == 0) mqr__auth_keys(salted, out->stored_key, out->server_key);
    OPENSSL_cleanse(salted, sizeof salted);
    return rc;
}

bool mqr__auth_cred_match(const mqr_cred_t *c, const uint8_t salted[MQR_AUTH_KEY_LEN])
{
    uint8_t stored[MQR_AUTH_KEY_LEN];
    mqr__auth_keys(salted, stored, NULL);
    bool ok = CRYPTO_memcmp(stored, c->stored_key, MQR_AUTH_KEY_LEN) == 0;
    OPENSSL_cleanse(stored, sizeof stored);
    return ok;
}

bool mqr__auth_username_valid(const char *name, size_t len)
{
    if (!name || !len || len > MQR_AUTH_USERNAME_MAX) return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (ch < 0x20 || ch == 0x7F) return false;
    }
    return mqr__utf8_valid(name, len);
}

/* ---- base64 -------------------------------------------------------------- */

char *mqr__auth_b64_encode(const uint8_t *in, size_t n, size_t *out_len)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    if (!out) return NULL;
    int k = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    if (out_len) *out_len = (size_t)k;
    return out;
}

int mqr__auth_b64_decode(const char *in, size_t len, uint8_t *out)
{
    if (len % 4 || len > INT_MAX) return -1;
    size_t pad = 0;
    if (len && in[len - 1] == '=') pad++;
    if (len > 1 && in[len - 2] == '=') pad++;
    for (size_t i = 0; i < len - pad; i++)
        if (in[i] == '=') return -1;
    int n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);
    if (n < 0) return -1;
    return n - (int)pad;
}

/* ---- SCRAM --------------------------------------------------------------- */

void mqr__scram_init(mqr_scram_t *s)
{
    memset(s, 0, sizeof *s);
}

void mqr__scram_free(mqr_scram_t *s)
{
    free(s->username);
    free(s->client_first_bare);
    free(s->server_first);
    OPENSSL_cleanse(&s->cred, sizeof s->cred);
    memset(s, 0, sizeof *s);
}

bool mqr__scram_next_attr(const char **p, const char *end, char *name, const char **val,
                          size_t *vlen)
{
    const char *a = *p;
    if (a >= end || end - a < 2 || a[1] != '=') return false;
    *name = a[0];
    const char *comma = memchr(a, ',', (size_t)(end - a));
    const char *stop = comma ? comma : end;
    *val = a + 2;
    *vlen = (size_t)(stop - a - 2);
    *p = comma ? comma + 1 : end;
    return true;
}

/* saslname: "=2C" is ',', "=3D" is '=', any other '=' is an error. */
static char *decode_saslname(const char *v, size_t n, size_t *out_len)
{
    char *out = malloc(n + 1);
    if (!out) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] != '=') {
            out[k++] = v[i];
            continue;
        }
        if (i + 2 < n && v[i + 1] == '2' && v[i + 2] == 'C') {
            out[k++] = ',';
        } else if (i + 2 < n && v[i + 1] == '3' && v[i + 2] == 'D') {
            out[k++] = '=';
        } else {
            free(out);
            return NULL;
        }
        i += 2;
    }
    out[k] = '\0';
    *out_len = k;
    return out;
}

bool mqr__scram_nonce_ok(const char *v, size_t n)
{
    if (!n) return false;
    for (size_t i = 0; i < n; i++)
        if (v[i] < 0x21 || v[i] > 0x7E || v[i] == ',') return false;
    return true;
}

int mqr__scram_client_first(mqr_scram_t *s, const void *msg, size_t len)
{
    if (s->step != 0) return MQR_EINVAL;
    const char *p = msg, *end = p + len;
    if (!len || memchr(p, '\0', len)) return MQR_EMALFORMED;
    /* gs2-header: cbind flag, then authzid (ignored: we act as the user) */
    if (*p != 'n' && *p != 'y') return MQR_EMALFORMED; /* "p=": no channel binding */
    const char *c1 = memchr(p, ',', len);
    if (!c1 || c1 != p + 1) return MQR_EMALFORMED;
    const char *c2 = memchr(c1 + 1, ',', (size_t)(end - c1 - 1));
    if (!c2) return MQR_EMALFORMED;
    if (c2 != c1 + 1 && (c2 - c1 < 3 || c1[1] != 'a' || c1[2] != '=')) return MQR_EMALFORMED;
    const char *bare = c2 + 1;
    s->gs2_len = (size_t)(bare - p);
    if (s->gs2_len >= sizeof s->gs2) return MQR_EMALFORMED;
    memcpy(s->gs2, p, s->gs2_len);

    const char *q = bare;
    char name;
    const char *v;
    size_t vn;
    if (!mqr__scram_next_attr(&q, end, &name, &v, &vn) || name != 'n')
        return MQR_EMALFORMED; /* m= too */
    size_t ulen;
    char *user = decode_saslname(v, vn, &ulen);
    if (!user) return MQR_EMALFORMED;
    if (!mqr__auth_username_valid(user, ulen)) {
        free(user);
        return MQR_EMALFORMED;
    }
    if (!mqr__scram_next_attr(&q, end, &name, &v, &vn) || name != 'r' ||
        !mqr__scram_nonce_ok(v, vn) || vn > sizeof s->nonce / 2) {
        free(user);
        return MQR_EMALFORMED;
    }
    memcpy(s->nonce, v, vn);
    s->nonce_len = vn;
    s->cfb_len = (size_t)(end - bare);
    s->client_first_bare = malloc(s->cfb_len + 1);
    if (!s->client_first_bare) {
        free(user);
        return MQR_ENOMEM;
    }
    memcpy(s->client_first_bare, bare, s->cfb_len);
    s->client_first_bare[s->cfb_len] = '\0';
    s->username = user;
    s->username_len = ulen;
    return 0;
}

static uv_once_t secret_once = UV_ONCE_INIT;
static uint8_t secret[32];

static void secret_init(void)
{
    if (RAND_bytes(secret, sizeof secret) != 1) {
        /* fake salts then differ per user but are guessable: only user
         * existence could leak, nothing else */
        memset(secret, 0x5A, sizeof secret);
    }
}

int mqr__scram_server_first(mqr_scram_t *s, const mqr_cred_t *cred, const char *server_nonce,
                            char **out, size_t *out_len)
{
    *out = NULL;
    if (s->step != 0 || !s->username) return MQR_EINVAL;
    if (cred) {
        s->cred = *cred;
        s->known = true;
    } else {
        uv_once(&secret_once, secret_init);
        uint8_t fake[MQR_AUTH_KEY_LEN];
        mqr__auth_hmac256(secret, sizeof secret, s->username, s->username_len, fake);
        memset(&s->cred, 0, sizeof s->cred);
        memcpy(s->cred.salt, fake, MQR_AUTH_SALT_LEN);
        s->cred.salt_len = MQR_AUTH_SALT_LEN;
        s->cred.iterations = MQR_AUTH_ITERATIONS_DEFAULT;
        s->known = false;
    }
    char rnd_b64[64];
    if (!server_nonce) {
        uint8_t rnd[18];
        if (RAND_bytes(rnd, sizeof rnd) != 1) return MQR_ENOMEM;
        EVP_EncodeBlock((unsigned char *)rnd_b64, rnd, sizeof rnd);
        server_nonce = rnd_b64;
    }
    size_t sn = strlen(server_nonce);
    if (!mqr__scram_nonce_ok(server_nonce, sn) || s->nonce_len + sn > sizeof s->nonce)
        return MQR_EINVAL;
    memcpy(s->nonce + s->nonce_len, server_nonce, sn);
    s->nonce_len += sn;

    size_t salt_b64_len;
    char *salt_b64 = mqr__auth_b64_encode(s->cred.salt, s->cred.salt_len, &salt_b64_len);
    if (!salt_b64) return MQR_ENOMEM;
    size_t cap = 2 + s->nonce_len + 3 + salt_b64_len + 3 + 10 + 1;
    char *sf = malloc(cap);
    if (!sf) {
        free(salt_b64);
        return MQR_ENOMEM;
    }
    int n = snprintf(sf, cap, "r=%.*s,s=%s,i=%u", (int)s->nonce_len, s->nonce, salt_b64,
                     (unsigned)s->cred.iterations);
    free(salt_b64);
    s->server_first = sf;
    s->sf_len = (size_t)n;
    s->step = 1;
    char *copy = malloc(s->sf_len + 1);
    if (!copy) return MQR_ENOMEM;
    memcpy(copy, sf, s->sf_len + 1);
    *out = copy;
    *out_len = s->sf_len;
    return 0;
}

int mqr__scram_client_final(mqr_scram_t *s, const void *msg, size_t len, char **out,
                            size_t *out_len)
{
    *out = NULL;
    if (s->step != 1) return MQR_EINVAL;
    s->step = 2; /* one try */
    const char *p = msg, *end = p + len, *q = p;
    if (!len || memchr(p, '\0', len)) return MQR_EMALFORMED;
    char name;
    const char *v;
    size_t vn;
    /* c=: base64 of the gs2-header (no channel binding data) */
    if (!mqr__scram_next_attr(&q, end, &name, &v, &vn) || name != 'c') return MQR_EMALFORMED;
    uint8_t cb[64];
    if (vn > 84) return MQR_EMALFORMED;
    int cbn = mqr__auth_b64_decode(v, vn, cb);
    if (cbn < 0 || (size_t)cbn != s->gs2_len || memcmp(cb, s->gs2, s->gs2_len) != 0)
        return MQR_EMALFORMED;
    if (!mqr__scram_next_attr(&q, end, &name, &v, &vn) || name != 'r' || vn != s->nonce_len ||
        memcmp(v, s->nonce, vn) != 0)
        return MQR_EMALFORMED;
    /* extensions, then p= last */
    const char *without_proof_end = NULL;
    const char *proof = NULL;
    size_t proof_len = 0;
    while (q < end) {
        const char *attr = q;
        if (!mqr__scram_next_attr(&q, end, &name, &v, &vn)) return MQR_EMALFORMED;
        if (name == 'p') {
            if (q != end) return MQR_EMALFORMED;
            without_proof_end = attr - 1; /* the comma before p= */
            proof = v;
            proof_len = vn;
        }
    }
    if (!proof) return MQR_EMALFORMED;
    uint8_t client_proof[48];
    if (proof_len > 64) return MQR_EMALFORMED;
    if (mqr__auth_b64_decode(proof, proof_len, client_proof) != MQR_AUTH_KEY_LEN)
        return MQR_EMALFORMED;

    /* AuthMessage = client-first-bare "," server-first "," client-final-without-proof */
    size_t wp_len = (size_t)(without_proof_end - p);
    size_t am_len = s->cfb_len + 1 + s->sf_len + 1 + wp_len;
    char *am = malloc(am_len);
    if (!am) return MQR_ENOMEM;
    memcpy(am, s->client_first_bare, s->cfb_len);
    am[s->cfb_len] = ',';
    memcpy(am + s->cfb_len + 1, s->server_first, s->sf_len);
    am[s->cfb_len + 1 + s->sf_len] = ',';
    memcpy(am + s->cfb_len + 2 + s->sf_len, p, wp_len);

    uint8_t sig[MQR_AUTH_KEY_LEN], client_key[MQR_AUTH_KEY_LEN], stored[MQR_AUTH_KEY_LEN];
    mqr__auth_hmac256(s->cred.stored_key, MQR_AUTH_KEY_LEN, am, am_len, sig);
    for (int i = 0; i < MQR_AUTH_KEY_LEN; i++)
        client_key[i] = client_proof[i] ^ sig[i];
    SHA256(client_key, sizeof client_key, stored);
    bool ok = CRYPTO_memcmp(stored, s->cred.stored_key, MQR_AUTH_KEY_LEN) == 0 && s->known;
    OPENSSL_cleanse(client_key, sizeof client_key);
    if (!ok) {
        free(am);
        return 1;
    }
    uint8_t server_sig[MQR_AUTH_KEY_LEN];
    mqr__auth_hmac256(s->cred.server_key, MQR_AUTH_KEY_LEN, am, am_len, server_sig);
    free(am);
    size_t b64n;
    char *b64 = mqr__auth_b64_encode(server_sig, sizeof server_sig, &b64n);
    if (!b64) return MQR_ENOMEM;
    char *sf = malloc(b64n + 3);
    if (!sf) {
        free(b64);
        return MQR_ENOMEM;
    }
    memcpy(sf, "v=", 2);
    memcpy(sf + 2, b64, b64n + 1);
    free(b64);
    *out = sf;
    *out_len = b64n + 2;
    return 0;
}

/* ---- public user management ------------------------------------------------ */

int mqr_user_add(mqr_engine_t *e, const char *name, const char *password, unsigned iterations)
{
    if (!e || !name || !password) return MQR_EINVAL;
    size_t n = strlen(name);
    if (!mqr__auth_username_valid(name, n)) return MQR_EINVAL;
    if (!mqr__engine_store(e)) return MQR_ECLOSED;
    mqr_cred_t c;
    int rc = mqr__auth_cred_make(password, strlen(password), iterations, &c);
    if (rc == 0) rc = mqr__store_cred_put(mqr__engine_store(e), name, n, &c);
    OPENSSL_cleanse(&c, sizeof c);
    if (rc == 0) rc = mqr__store_flush(mqr__engine_store(e));
    return rc;
}

int mqr_user_remove(mqr_engine_t *e, const char *name)
{
    if (!e || !name) return MQR_EINVAL;
    if (!mqr__engine_store(e)) return MQR_ECLOSED;
    int rc = mqr__store_cred_del(mqr__engine_store(e), name, strlen(name));
    if (rc == 0) rc = mqr__store_flush(mqr__engine_store(e));
    return rc;
}

typedef struct {
    int (*cb)(void *arg, const char *name);
    void *arg;
} list_ctx_t;

static int list_one(void *arg, const char *user, size_t len)
{
    (void)len; /* names come NUL-terminated from SQLite's text */
    list_ctx_t *x = arg;
    return x->cb(x->arg, user);
}

int mqr_user_list(mqr_engine_t *e, int (*cb)(void *arg, const char *name), void *arg)
{
    if (!e || !cb) return MQR_EINVAL;
    if (!mqr__engine_store(e)) return MQR_ECLOSED;
    list_ctx_t x = {cb, arg};
    return mqr__store_cred_list(mqr__engine_store(e), list_one, &x);
}

/* ---- reason codes of an authorize denial ------------------------------------ */

bool mqr__auth_reason_ok(int action, int code)
{
    switch (code) {
    case 0x80: /* Unspecified error */
    case 0x83: /* Implementation specific error */
    case 0x87: /* Not authorized */
    case 0x91: /* Packet Identifier in use */
    case 0x97: /* Quota exceeded */
        return action == MQR_AUTH_PUBLISH || action == MQR_AUTH_SUBSCRIBE;
    case 0x90: /* Topic Name invalid */
    case 0x99: /* Payload format invalid */
        return action == MQR_AUTH_PUBLISH;
    case 0x8F: /* Topic Filter invalid */
    case 0x9E: /* Shared Subscriptions not supported */
    case 0xA1: /* Subscription Identifiers not supported */
    case 0xA2: /* Wildcard Subscriptions not supported */
        return action == MQR_AUTH_SUBSCRIBE;
    default:
        return false;
    }
}

/* ---- users' tenants ------------------------------------------ */

int mqr_user_set_tenant(mqr_engine_t *e, const char *name, const char *tenant)
{
    mqr_store_t *store = e ? mqr__engine_store(e) : NULL;
    if (!name || !store) return MQR_EINVAL;
    int rc = mqr__store_cred_tenant_set(store, name, tenant);
    if (rc == 0) rc = mqr__store_flush(store);
    return rc;
}
