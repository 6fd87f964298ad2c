/*
 * test_auth.c — password keys, SCRAM-SHA-256 and the credentials table.
 *
 * Known answers: PBKDF2-HMAC-SHA256 vectors in the style of RFC 6070 (for
 * SHA-256, as published with RFC 7914's test suite and checked against
 * Python's hashlib.pbkdf2_hmac and `openssl kdf ... PBKDF2` when written),
 * and the SCRAM-SHA-256 exchange of RFC 7677 §3 (user "user", password
 * "pencil"), byte for byte. The listener side is tested with real clients
 * in tests/integration/test_auth_clients.py.
 */
#include <stdarg.h>
#include "engine.h"
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "auth.h"
#include "mqrouter_auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void hex(const uint8_t *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
}

static void check_pbkdf2(const char *pw, const char *salt, uint32_t iter, const char *want)
{
    uint8_t out[32];
    char got[65];
    assert_int_equal(
        mqr__auth_pbkdf2(pw, strlen(pw), (const uint8_t *)salt, strlen(salt), iter, out), 0);
    hex(out, 32, got);
    assert_string_equal(got, want);
}

static void test_pbkdf2_vectors(void **state)
{
    (void)state;
    check_pbkdf2("password", "salt", 1,
                 "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b");
    check_pbkdf2("password", "salt", 2,
                 "ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43");
    check_pbkdf2("password", "salt", 4096,
                 "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a");
    check_pbkdf2("passwordPASSWORDpassword", "saltSALTsaltSALTsaltSALTsaltSALTsalt", 4096,
                 "348c89dbcbd32b2f32d814b8116e84cf2b17347ebc1800181c4e2a1fb8dd53e1");
    uint8_t out[32];
    assert_int_equal(mqr__auth_pbkdf2("x", 1, (const uint8_t *)"s", 1, 0, out), MQR_EINVAL);
}

/* RFC 7677 §3: salt and iterations from the server-first-message. */
static const uint8_t rfc_salt[16] = {0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e,
                                     0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81};

static void rfc_cred(mqr_cred_t *c)
{
    memset(c, 0, sizeof *c);
    memcpy(c->salt, rfc_salt, sizeof rfc_salt);
    c->salt_len = sizeof rfc_salt;
    c->iterations = 4096;
    uint8_t salted[32];
    assert_int_equal(mqr__auth_pbkdf2("pencil", 6, c->salt, c->salt_len, 4096, salted), 0);
    mqr__auth_keys(salted, c->stored_key, c->server_key);
}

static void test_scram_keys(void **state)
{
    (void)state;
    mqr_cred_t c;
    rfc_cred(&c);
    char got[65];
    hex(c.stored_key, 32, got);
    assert_string_equal(got, "586e5df283e6dceb5c3e791d8b8528ec191e664045ce971792e2e6b5bb13e2a6");
    hex(c.server_key, 32, got);
    assert_string_equal(got, "c1f3cbc1c13a9d35a14c0990eed97629ea225863e566a4314ab99f3f00e5d9d5");
}

static void test_cred_make_and_match(void **state)
{
    (void)state;
    mqr_cred_t a, b;
    assert_int_equal(mqr__auth_cred_make("hunter2", 7, 4096, &a), 0);
    assert_int_equal(mqr__auth_cred_make("hunter2", 7, 4096, &b), 0);
    assert_int_equal(a.salt_len, MQR_AUTH_SALT_LEN);
    assert_int_equal(a.iterations, 4096);
    /* a fresh random salt each time, so equal passwords do not show */
    assert_memory_not_equal(a.salt, b.salt, MQR_AUTH_SALT_LEN);
    assert_memory_not_equal(a.stored_key, b.stored_key, 32);

    uint8_t salted[32];
    assert_int_equal(mqr__auth_pbkdf2("hunter2", 7, a.salt, a.salt_len, a.iterations, salted), 0);
    assert_true(mqr__auth_cred_match(&a, salted));
    assert_false(mqr__auth_cred_match(&b, salted));
    assert_int_equal(mqr__auth_pbkdf2("hunter3", 7, a.salt, a.salt_len, a.iterations, salted), 0);
    assert_false(mqr__auth_cred_match(&a, salted));

    assert_int_equal(mqr__auth_cred_make("x", 1, 100, &a), MQR_EINVAL); /* below 4096 */
    assert_int_equal(mqr__auth_cred_make("x", 1, 0, &a), 0);
    assert_int_equal(a.iterations, MQR_AUTH_ITERATIONS_DEFAULT);
}

static void test_username_valid(void **state)
{
    (void)state;
    assert_true(mqr__auth_username_valid("alice", 5));
    assert_true(mqr__auth_username_valid("J\xc3\xb6rg", 5));
    assert_false(mqr__auth_username_valid("", 0));
    assert_false(mqr__auth_username_valid("a\nb", 3));
    assert_false(mqr__auth_username_valid("\xff", 1));
    char big[300];
    memset(big, 'a', sizeof big);
    assert_false(mqr__auth_username_valid(big, sizeof big));
}

#define RFC_CFIRST "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
#define RFC_SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_SFIRST "r=rOprNGfwEbeRWgbNEkqO" RFC_SNONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define RFC_CFINAL_WP "c=biws,r=rOprNGfwEbeRWgbNEkqO" RFC_SNONCE
#define RFC_PROOF "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_SFINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

static void scram_to_server_first(mqr_scram_t *s, const mqr_cred_t *cred)
{
    mqr__scram_init(s);
    assert_int_equal(mqr__scram_client_first(s, RFC_CFIRST, strlen(RFC_CFIRST)), 0);
    assert_string_equal(s->username, "user");
    char *sf;
    size_t n;
    assert_int_equal(mqr__scram_server_first(s, cred, RFC_SNONCE, &sf, &n), 0);
    if (cred) {
        assert_int_equal(n, strlen(RFC_SFIRST));
        assert_string_equal(sf, RFC_SFIRST);
    }
    free(sf);
}

static void test_scram_rfc7677(void **state)
{
    (void)state;
    mqr_cred_t c;
    rfc_cred(&c);
    mqr_scram_t s;
    scram_to_server_first(&s, &c);
    const char *cf = RFC_CFINAL_WP "," RFC_PROOF;
    char *out;
    size_t n;
    assert_int_equal(mqr__scram_client_final(&s, cf, strlen(cf), &out, &n), 0);
    assert_int_equal(n, strlen(RFC_SFINAL));
    assert_string_equal(out, RFC_SFINAL);
    free(out);
    /* one exchange, one try */
    assert_int_equal(mqr__scram_client_final(&s, cf, strlen(cf), &out, &n), MQR_EINVAL);
    mqr__scram_free(&s);
}

static void test_scram_refusals(void **state)
{
    (void)state;
    mqr_cred_t c;
    rfc_cred(&c);
    mqr_scram_t s;
    char *out;
    size_t n;

    /* a proof off by one bit */
    scram_to_server_first(&s, &c);
    const char *bad = RFC_CFINAL_WP ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVU=";
    assert_int_equal(mqr__scram_client_final(&s, bad, strlen(bad), &out, &n), 1);
    assert_null(out);
    mqr__scram_free(&s);

    /* another nonce than the one agreed */
    scram_to_server_first(&s, &c);
    const char *nonce = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k1," RFC_PROOF;
    assert_int_equal(mqr__scram_client_final(&s, nonce, strlen(nonce), &out, &n), MQR_EMALFORMED);
    mqr__scram_free(&s);

    /* channel binding data that is not our gs2-header ("y,," = eSws) */
    scram_to_server_first(&s, &c);
    const char *cb = "c=eSws,r=rOprNGfwEbeRWgbNEkqO" RFC_SNONCE "," RFC_PROOF;
    assert_int_equal(mqr__scram_client_final(&s, cb, strlen(cb), &out, &n), MQR_EMALFORMED);
    mqr__scram_free(&s);

    /* unknown user: a salt is offered, always the same for the name, and
     * even the real user's proof is refused */
    scram_to_server_first(&s, NULL);
    char salt1[64];
    snprintf(salt1, sizeof salt1, "%s", strstr(s.server_first, ",s="));
    assert_false(s.known);
    const char *cf = RFC_CFINAL_WP "," RFC_PROOF;
    assert_int_equal(mqr__scram_client_final(&s, cf, strlen(cf), &out, &n), 1);
    mqr__scram_free(&s);
    scram_to_server_first(&s, NULL);
    assert_string_equal(strstr(s.server_first, ",s="), salt1);
    assert_null(strstr(s.server_first, "W22ZaJ0SNY7soEsUEjb6gQ=="));
    mqr__scram_free(&s);
}

static void test_scram_client_first_syntax(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "p=tls-unique,,n=user,r=abc", /* channel binding: not offered */
        "n,,r=abc",                   /* no user */
        "n,,n=user",                  /* no nonce */
        "n,,m=ext,n=user,r=abc",      /* mandatory extension */
        "n,,n=us=2Xer,r=abc",         /* bad saslname escape */
        "x,,n=user,r=abc",
        "n,n=user,r=abc",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mqr_scram_t s;
        mqr__scram_init(&s);
        assert_int_equal(mqr__scram_client_first(&s, bad[i], strlen(bad[i])), MQR_EMALFORMED);
        mqr__scram_free(&s);
    }
    mqr_scram_t s;
    mqr__scram_init(&s);
    const char *esc = "y,a=a=2Cb,n=a=2Cb=3Dc,r=xyz";
    assert_int_equal(mqr__scram_client_first(&s, esc, strlen(esc)), 0);
    assert_string_equal(s.username, "a,b=c");
    assert_int_equal(s.gs2_len, strlen("y,a=a=2Cb,"));
    mqr__scram_free(&s);
}

/* ---- the credentials table, through the public calls --------------------- */

static int collect(void *arg, const char *name)
{
    char *buf = arg;
    strcat(buf, name);
    strcat(buf, ";");
    return 0;
}

/* The client side against RFC 7677's example, byte for byte. */
static void test_scram_client_rfc7677(void **state)
{
    (void)state;
    mqr_scram_client_t c;
    mqr__scram_client_init(&c);
    char *out;
    size_t n;
    assert_int_equal(mqr__scram_client_begin(&c, "user", "rOprNGfwEbeRWgbNEkqO", &out, &n), 0);
    assert_int_equal(n, strlen(RFC_CFIRST));
    assert_string_equal(out, RFC_CFIRST);
    free(out);
    assert_int_equal(
        mqr__scram_client_continue(&c, RFC_SFIRST, strlen(RFC_SFIRST), "pencil", 6, &out, &n), 0);
    const char *cf = RFC_CFINAL_WP "," RFC_PROOF;
    assert_int_equal(n, strlen(cf));
    assert_string_equal(out, cf);
    free(out);
    /* a server that does not know the password cannot answer */
    const char *forged = "v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    assert_int_equal(mqr__scram_client_finish(&c, forged, strlen(forged)), MQR_EAUTH);
    assert_int_equal(mqr__scram_client_finish(&c, "e=other-error", 13), MQR_EAUTH);
    assert_int_equal(mqr__scram_client_finish(&c, RFC_SFINAL, strlen(RFC_SFINAL)), 0);
    assert_int_equal(mqr__scram_client_finish(&c, RFC_SFINAL, strlen(RFC_SFINAL)), MQR_EINVAL);
    mqr__scram_client_free(&c);
}

/* Our client against our server, random nonces, a user name to escape; a
 * wrong password is refused by the server, and the salted password is
 * kept for the next exchange with the same salt. */
static void test_scram_client_server(void **state)
{
    (void)state;
    mqr_cred_t cred;
    assert_int_equal(mqr__auth_cred_make("s3cret", 6, 4096, &cred), 0);
    mqr_scram_client_t c;
    mqr__scram_client_init(&c);
    for (int round = 0; round < 3; round++) {
        const char *pw = round == 1 ? "wrong" : "s3cret";
        mqr_scram_t s;
        mqr__scram_init(&s);
        char *cfirst, *sfirst, *cfinal, *sfinal = NULL;
        size_t n1, n2, n3, n4;
        assert_int_equal(mqr__scram_client_begin(&c, "a,b=c", NULL, &cfirst, &n1), 0);
        assert_int_equal(mqr__scram_client_first(&s, cfirst, n1), 0);
        assert_string_equal(s.username, "a,b=c");
        assert_int_equal(mqr__scram_server_first(&s, &cred, NULL, &sfirst, &n2), 0);
        assert_int_equal(mqr__scram_client_continue(&c, sfirst, n2, pw, strlen(pw), &cfinal, &n3),
                         0);
        assert_true(c.have_salted);
        int rc = mqr__scram_client_final(&s, cfinal, n3, &sfinal, &n4);
        if (round == 1) {
            assert_int_equal(rc, 1); /* refused: wrong proof */
        } else {
            assert_int_equal(rc, 0);
            assert_int_equal(mqr__scram_client_finish(&c, sfinal, n4), 0);
        }
        free(cfirst);
        free(sfirst);
        free(cfinal);
        free(sfinal);
        mqr__scram_free(&s);
    }
    mqr__scram_client_free(&c);
}

/* What a client must refuse in server-first. */
static void test_scram_client_refusals(void **state)
{
    (void)state;
    const char *bad[] = {
        "r=someoneelse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",                 /* not our nonce */
        "r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",        /* nothing added */
        "r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1000",       /* too few rounds */
        "r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ=,i=4096",        /* bad base64 */
        "r=rOprNGfwEbeRWgbNEkqOx,i=4096",                                  /* no salt */
        "m=ext,r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", /* mandatory ext */
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        mqr_scram_client_t c;
        mqr__scram_client_init(&c);
        char *out;
        size_t n;
        assert_int_equal(mqr__scram_client_begin(&c, "user", "rOprNGfwEbeRWgbNEkqO", &out, &n), 0);
        free(out);
        out = NULL;
        assert_int_equal(
            mqr__scram_client_continue(&c, bad[i], strlen(bad[i]), "pencil", 6, &out, &n),
            MQR_EMALFORMED);
        assert_null(out);
        mqr__scram_client_free(&c);
    }
    mqr_scram_client_t c;
    mqr__scram_client_init(&c);
    char *out = NULL;
    size_t n;
    assert_int_equal(mqr__scram_client_begin(&c, "", NULL, &out, &n), MQR_EINVAL);
    assert_int_equal(
        mqr__scram_client_continue(&c, RFC_SFIRST, strlen(RFC_SFIRST), "p", 1, &out, &n),
        MQR_EINVAL); /* not begun */
    mqr__scram_client_free(&c);
}

static void test_users_in_store(void **state)
{
    (void)state;
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.data_dir = "";
    o.listen_port = -1;
    o.log_level = MQR_LOG_ERROR;
    mqr_engine_t *e;
    assert_int_equal(mqr_engine_new(&e, &o, NULL, NULL), 0);
    mqr_store_t *s = mqr__engine_store(e);
    bool any = true;
    assert_int_equal(mqr__store_cred_any(s, &any), 0);
    assert_false(any);

    assert_int_equal(mqr_user_add(e, "bob", "pw1", 4096), 0);
    assert_int_equal(mqr_user_add(e, "alice", "pw2", 5000), 0);
    assert_int_equal(mqr_user_add(e, "", "pw", 4096), MQR_EINVAL);
    assert_int_equal(mqr_user_add(e, "eve", "pw", 10), MQR_EINVAL);
    char names[128] = "";
    assert_int_equal(mqr_user_list(e, collect, names), 0);
    assert_string_equal(names, "alice;bob;");
    assert_int_equal(mqr__store_cred_any(s, &any), 0);
    assert_true(any);
    size_t count = 0;
    assert_int_equal(mqr__store_cred_count(s, &count), 0);
    assert_int_equal(count, 2);

    /* what is stored checks the password and nothing else */
    mqr_cred_t c;
    assert_int_equal(mqr__store_cred_get(s, "alice", 5, &c), 0);
    assert_int_equal(c.iterations, 5000);
    uint8_t salted[32];
    assert_int_equal(mqr__auth_pbkdf2("pw2", 3, c.salt, c.salt_len, c.iterations, salted), 0);
    assert_true(mqr__auth_cred_match(&c, salted));
    assert_int_equal(mqr__auth_pbkdf2("pw1", 3, c.salt, c.salt_len, c.iterations, salted), 0);
    assert_false(mqr__auth_cred_match(&c, salted));
    assert_int_equal(mqr__store_cred_get(s, "carol", 5, &c), MQR_ENOENT);

    /* a new password replaces the old */
    assert_int_equal(mqr_user_add(e, "alice", "new", 4096), 0);
    assert_int_equal(mqr__store_cred_get(s, "alice", 5, &c), 0);
    assert_int_equal(mqr__auth_pbkdf2("new", 3, c.salt, c.salt_len, c.iterations, salted), 0);
    assert_true(mqr__auth_cred_match(&c, salted));

    assert_int_equal(mqr_user_remove(e, "bob"), 0);
    assert_int_equal(mqr_user_remove(e, "bob"), MQR_ENOENT);
    names[0] = '\0';
    assert_int_equal(mqr_user_list(e, collect, names), 0);
    assert_string_equal(names, "alice;");
    mqr_engine_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pbkdf2_vectors),
        cmocka_unit_test(test_scram_keys),
        cmocka_unit_test(test_cred_make_and_match),
        cmocka_unit_test(test_username_valid),
        cmocka_unit_test(test_scram_rfc7677),
        cmocka_unit_test(test_scram_refusals),
        cmocka_unit_test(test_scram_client_first_syntax),
        cmocka_unit_test(test_scram_client_rfc7677),
        cmocka_unit_test(test_scram_client_server),
        cmocka_unit_test(test_scram_client_refusals),
        cmocka_unit_test(test_users_in_store),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
