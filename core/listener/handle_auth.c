/*
 * handle_auth.c — who may connect, and what a client may do: the password
 * check against the store's credentials, MQTT v5 enhanced authentication
 * with SCRAM-SHA-256 (AUTH packets, also for re-authentication), the
 * anonymous-access rule, and the calls to the authenticate and authorize
 * hooks a rules script sets (docs/auth.md has the whole decision).
 *
 * A password check costs a PBKDF2 (tens of ms), so it runs on the libuv
 * threadpool: the CONNECT is copied, the connection's input is held (no
 * packet after CONNECT is looked at before the answer, 3.1.1 §3.1.4,
 * 5.0 §3.1.4), and handle_connect() is called again with the copy once the
 * answer is in. SCRAM costs the server two HMACs and a hash per exchange.
 * Must not: run Lua (the hooks are C function pointers the bindings set),
 * keep a password beyond the check, or accept a CONNECT itself.
 */
#include "listener_int.h"

#include "auth.h"
#include "mqrouter_auth.h"

#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

/* Cached authorize answers of one connection (opt-in, auth.h). */
#define AUTHZ_CACHE_SLOTS 16u
#define AUTHZ_CACHE_TOPIC_MAX 256u

typedef struct {
    char *topic; /* NULL = empty slot */
    uint16_t len;
    uint8_t key;  /* action, QoS and retain */
    uint8_t code; /* the hook's answer: 0 allowed, else the reason */
    uint32_t generation;
} authz_slot_t;

struct mqr_lauth {
    mqr_lconn_t *c;
    authz_slot_t *cache; /* AUTHZ_CACHE_SLOTS, allocated at the first use */
    char *username;      /* NUL-terminated; NULL = none */
    const char *method;  /* MQR_AUTH_SCRAM_METHOD once SCRAM is in use */
    bool authenticated;  /* credentials proved: password or SCRAM */
    char *cert_subject;  /* of a TLS client certificate the listener verified */

    /* a CONNECT waiting for its answer */
    uint8_t *connect;
    size_t connect_len;
    bool decided;    /* answer in: handle_connect is running again */
    uint8_t verdict; /* 0, or the v5 CONNACK reason to refuse with */

    /* password check on the threadpool */
    uv_work_t work;
    uint8_t *pw;
    size_t pw_len;
    mqr_cred_t cred;
    bool match;

    /* SCRAM */
    bool scram_on;     /* an exchange is waiting for client-final */
    bool reauth;       /* ... a re-authentication of an active client */
    mqr_scram_t scram; /* step 0 when idle */
    char *server_final;
    size_t server_final_len;
};

static struct mqr_lauth *auth_get(mqr_lconn_t *c)
{
    if (!c->auth) {
        c->auth = calloc(1, sizeof *c->auth);
        if (c->auth) c->auth->c = c;
    }
    return c->auth;
}

static void pw_wipe(struct mqr_lauth *a)
{
    if (a->pw) {
        OPENSSL_cleanse(a->pw, a->pw_len);
        free(a->pw);
    }
    a->pw = NULL;
    a->pw_len = 0;
    OPENSSL_cleanse(&a->cred, sizeof a->cred);
}

void mqr__listener_auth_free(mqr_lconn_t *c)
{
    struct mqr_lauth *a = c->auth;
    if (!a) return;
    pw_wipe(a);
    mqr__scram_free(&a->scram);
    free(a->server_final);
    free(a->connect);
    free(a->username);
    free(a->cert_subject);
    if (a->cache)
        for (unsigned i = 0; i < AUTHZ_CACHE_SLOTS; i++)
            free(a->cache[i].topic);
    free(a->cache);
    free(a);
    c->auth = NULL;
}

const char *mqr__listener_auth_user(const mqr_lconn_t *c)
{
    return c->auth ? c->auth->username : NULL;
}

bool mqr__listener_auth_verified(const mqr_lconn_t *c)
{
    return c->auth && c->auth->authenticated;
}

static int set_username(struct mqr_lauth *a, const char *p, size_t n)
{
    char *u = malloc(n + 1);
    if (!u) return MQR_ENOMEM;
    memcpy(u, p, n);
    u[n] = '\0';
    free(a->username);
    a->username = u;
    return 0;
}

/* ---- anonymous access ------------------------------------------------------- */

static bool listener_on_loopback(mqr_listener_t *l)
{
    struct sockaddr_storage ss;
    int n = sizeof ss;
    if (uv_tcp_getsockname(&l->server, (struct sockaddr *)&ss, &n) != 0) return false;
    if (ss.ss_family == AF_INET) {
        const uint8_t *b = (const uint8_t *)&((struct sockaddr_in *)&ss)->sin_addr;
        return b[0] == 127;
    }
    if (ss.ss_family == AF_INET6) {
        const uint8_t *b = ((struct sockaddr_in6 *)&ss)->sin6_addr.s6_addr;
        static const uint8_t lo[16] = {[15] = 1};
        static const uint8_t mapped[12] = {[10] = 0xFF, [11] = 0xFF};
        if (memcmp(b, lo, 16) == 0) return true;
        return memcmp(b, mapped, 12) == 0 && b[12] == 127; /* ::ffff:127.x.y.z */
    }
    return false;
}

static bool anonymous_allowed(mqr_listener_t *l)
{
    if (l->opts.allow_anonymous) return l->opts.allow_anonymous > 0;
    return listener_on_loopback(l);
}

int mqr_listener_allow_anonymous(mqr_engine_t *e, int allow)
{
    mqr_listeners_t *all = e ? mqr__engine_listeners(e) : NULL;
    if (!all || !all->first) return MQR_ENOENT;
    for (mqr_listener_t *l = all->first; l; l = l->e_next)
        l->opts.allow_anonymous = allow > 0 ? 1 : allow == 0 ? -1 : 0;
    return 0;
}

/* ---- hooks ------------------------------------------------------------------- */

static void client_of(mqr_lconn_t *c, mqr_auth_client_t *cl)
{
    memset(cl, 0, sizeof *cl);
    cl->client_id = c->client_id ? c->client_id : "";
    cl->username = c->auth ? c->auth->username : NULL;
    cl->address = c->addr;
    cl->protocol = c->version;
    cl->port = c->l->port;
    cl->method = c->auth ? c->auth->method : NULL;
    cl->authenticated = c->auth && c->auth->authenticated;
    cl->cert_subject = c->auth ? c->auth->cert_subject : NULL;
}

/* The subject (RFC 2253) of the client certificate a TLS listener verified
 * against its CA file, malloc'd; NULL when there is none. */
static char *tls_subject(mqr_lconn_t *c)
{
    if (!c->tp || !c->tp->ssl) return NULL;
    X509 *cert = SSL_get0_peer_certificate(c->tp->ssl);
    if (!cert || SSL_get_verify_result(c->tp->ssl) != X509_V_OK) return NULL;
    BIO *b = BIO_new(BIO_s_mem());
    if (!b) return NULL;
    char *out = NULL;
    if (X509_NAME_print_ex(b, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) >= 0) {
        char *p;
        long n = BIO_get_mem_data(b, &p);
        if (n >= 0 && (out = malloc((size_t)n + 1))) {
            memcpy(out, p, (size_t)n);
            out[n] = '\0';
        }
    }
    BIO_free(b);
    return out;
}

/* The slot for (key, topic): exact match only (a hash collision must never
 * hand out another topic's answer). */
static authz_slot_t *cache_slot(struct mqr_lauth *a, uint8_t key, const char *t, size_t n)
{
    uint32_t x = 2166136261u ^ key;
    for (size_t i = 0; i < n; i++)
        x = (x ^ (uint8_t)t[i]) * 16777619u;
    return &a->cache[x % AUTHZ_CACHE_SLOTS];
}

int mqr__listener_authorize(mqr_lconn_t *c, int action, const char *topic, size_t len, int qos,
                            bool retain)
{
    mqr_auth_hooks_t *h = c->l->all->auth;
    if (!h || !h->authorize) return 0;
    authz_slot_t *slot = NULL;
    uint8_t key = (uint8_t)(action << 3 | (qos & 3) << 1 | (retain ? 1 : 0));
    if (h->authorize_cacheable && len <= AUTHZ_CACHE_TOPIC_MAX) {
        struct mqr_lauth *a = auth_get(c);
        if (a && !a->cache) a->cache = calloc(AUTHZ_CACHE_SLOTS, sizeof *a->cache);
        if (a && a->cache) {
            slot = cache_slot(a, key, topic, len);
            if (slot->topic && slot->generation == h->generation && slot->key == key &&
                slot->len == len && memcmp(slot->topic, topic, len) == 0) {
                h->cache_hits++;
                if (slot->code) c->l->stats.authz_denied++;
                return slot->code;
            }
        }
    }
    mqr_auth_client_t cl;
    client_of(c, &cl);
    uint32_t gen = h->generation;
    int code = h->authorize(h->ud, &cl, action, topic, len, qos, retain);
    if (code && !mqr__auth_reason_ok(action, code)) {
        /* the hook's own check (bindings/l_auth.c) says why with the script's
         * position; this is the net under any other hook */
        MQR_LOG_W(MQR_LSN_LOG, "authorize hook: reason 0x%02X is not one a %s may carry: 0x87 sent",
                  (unsigned)code & 0xFFu, action == MQR_AUTH_PUBLISH ? "PUBACK/PUBREC" : "SUBACK");
        code = MQR_MQTT_RC_NOT_AUTHORIZED;
    }
    /* the hook may have replaced the hooks (a new script): keep nothing then */
    h = c->l->all->auth;
    if (slot && h && h->generation == gen && c->auth && c->auth->cache) {
        char *copy = malloc(len ? len : 1);
        if (copy) {
            memcpy(copy, topic, len);
            free(slot->topic);
            *slot = (authz_slot_t){.topic = copy,
                                   .len = (uint16_t)len,
                                   .key = key,
                                   .code = (uint8_t)code,
                                   .generation = gen};
        }
    }
    if (!code) return 0;
    c->l->stats.authz_denied++;
    /* debug: a client retrying a denied topic must not flood the log */
    MQR_LOG_D(MQR_LSN_LOG, "client %s: %s on %.*s not authorised", c->client_id,
              action == MQR_AUTH_PUBLISH ? "PUBLISH" : "SUBSCRIBE", (int)len, topic);
    return code;
}

/* The decision once the credentials have spoken (docs/auth.md). */
static int decide(mqr_lconn_t *c, const mqr_mqtt_connect_t *k)
{
    mqr_listener_t *l = c->l;
    struct mqr_lauth *a = c->auth;
    mqr_auth_hooks_t *h = l->all->auth;
    bool hook = h && h->authenticate;
    bool verified = a && a->authenticated;
    bool has_user = a && a->username;
    bool has_cert = a && a->cert_subject;
    if (!verified) {
        /* a verified client certificate is not anonymous, but proves no
         * user name: a name it comes with is checked as usual */
        if (!has_user && !has_cert && !anonymous_allowed(l)) return MQR_MQTT_RC_NOT_AUTHORIZED;
        if (has_user && !hook) {
            bool any = true;
            if (mqr__store_cred_any(l->all->store, &any) < 0) return MQR_MQTT_RC_SERVER_UNAVAILABLE;
            /* an unknown name is refused once users exist; before that, a
             * name is not checked and the client counts as anonymous */
            if (any || !anonymous_allowed(l)) return MQR_MQTT_RC_BAD_USERNAME_PASSWORD;
        }
    }
    if (!hook) return 0;
    mqr_auth_client_t cl;
    client_of(c, &cl);
    if (k->has_password) {
        cl.password = k->password.p;
        cl.password_len = k->password.len;
    }
    int r = h->authenticate(h->ud, &cl);
    if (r == 0) return 0;
    return r >= 0x80 && r <= 0xFF ? r : MQR_MQTT_RC_NOT_AUTHORIZED;
}

static int refused(mqr_lconn_t *c, int code, const char *why)
{
    c->l->stats.auth_failures++;
    /* the name is the client's: no control characters into the log */
    const char *user = c->auth ? c->auth->username : NULL;
    if (user && !mqr__auth_username_valid(user, strlen(user))) user = "(unprintable name)";
    MQR_LOG_I(MQR_LSN_LOG, "connection from %s%s%s: authentication failed: %s (0x%02X)", c->addr,
              user ? " as " : "", user ? user : "", why, code);
    return code;
}

/* ---- password check on the threadpool ---------------------------------------- */

static void pw_work(uv_work_t *w)
{
    struct mqr_lauth *a = w->data;
    uint8_t salted[MQR_AUTH_KEY_LEN];
    a->match = mqr__auth_pbkdf2(a->pw, a->pw_len, a->cred.salt, a->cred.salt_len,
                                a->cred.iterations, salted) == 0 &&
               mqr__auth_cred_match(&a->cred, salted);
    OPENSSL_cleanse(salted, sizeof salted);
}

/* The answer is in: run the CONNECT again with it. */
static void rerun_connect(mqr_lconn_t *c)
{
    struct mqr_lauth *a = c->auth;
    uint8_t *pkt = a->connect;
    size_t len = a->connect_len;
    a->connect = NULL;
    a->decided = true;
    mqr__listener_handle_connect(c, pkt, len);
    if (c->auth) c->auth->decided = false;
    free(pkt);
}

static void pw_done(uv_work_t *w, int status)
{
    struct mqr_lauth *a = w->data;
    mqr_lconn_t *c = a->c;
    bool match = status == 0 && a->match;
    pw_wipe(a);
    c->l->auth_pending--;
    if (c->state == MQR_LCONN_NEW) {
        a->authenticated = match;
        a->verdict = match ? 0 : MQR_MQTT_RC_BAD_USERNAME_PASSWORD;
        c->l->read_ms = mqr__now_ms();
        rerun_connect(c);
        /* then what the client sent behind its CONNECT */
        mqr__listener_conn_unhold(c);
    }
    mqr__listener_conn_unref(c);
}

void mqr__listener_auth_cancel(mqr_lconn_t *c)
{
    struct mqr_lauth *a = c->auth;
    /* fails harmlessly (UV_EBUSY) once the work has started */
    if (a && a->pw) uv_cancel((uv_req_t *)&a->work);
}

static int keep_connect(struct mqr_lauth *a, const uint8_t *pkt, size_t len)
{
    a->connect = malloc(len);
    if (!a->connect) return MQR_ENOMEM;
    memcpy(a->connect, pkt, len);
    a->connect_len = len;
    return 0;
}

/* ---- AUTH packets ------------------------------------------------------------- */

static int send_auth(mqr_lconn_t *c, uint8_t reason, const char *data, size_t data_len)
{
    uint8_t props[512];
    mqr_mqtt_pbuild_t b;
    mqr__mqtt_pb_init(&b, props, sizeof props);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_AUTH_METHOD, MQR_AUTH_SCRAM_METHOD,
                        strlen(MQR_AUTH_SCRAM_METHOD));
    if (data) mqr__mqtt_pb_binary(&b, MQR_MQTT_PROP_AUTH_DATA, data, data_len);
    size_t plen;
    int rc = mqr__mqtt_pb_finish(&b, &plen);
    if (rc < 0) return rc;
    mqr_mqtt_auth_t p = {.reason = reason, .props = {.p = props, .len = (uint32_t)plen}};
    size_t len;
    if ((rc = mqr__mqtt_encode_auth(&p, MQR_MQTT_V5, NULL, 0, &len)) < 0) return rc;
    uint8_t *w = mqr__listener_out_reserve(c, len);
    if (!w) return MQR_ENOMEM;
    if ((rc = mqr__mqtt_encode_auth(&p, MQR_MQTT_V5, w, len, &len)) < 0) return rc;
    mqr__listener_out_commit(c, len);
    MQR_LOG_D(MQR_LSN_LOG, "%s -> AUTH 0x%02X", mqr__lconn_name(c), reason);
    return 0;
}

/* client-first in data: answers server-first. Returns 0 or a CONNACK /
 * DISCONNECT reason. */
static int scram_start(mqr_lconn_t *c, const uint8_t *data, size_t len)
{
    struct mqr_lauth *a = c->auth;
    mqr__scram_free(&a->scram);
    mqr__scram_init(&a->scram);
    if (!data || mqr__scram_client_first(&a->scram, data, len) < 0)
        return refused(c, MQR_MQTT_RC_NOT_AUTHORIZED, "bad SCRAM client-first-message");
    mqr_cred_t cred;
    int rc = mqr__store_cred_get(c->l->all->store, a->scram.username, a->scram.username_len, &cred);
    if (rc < 0 && rc != MQR_ENOENT) return MQR_MQTT_RC_SERVER_UNAVAILABLE;
    char *sf;
    size_t sf_len;
    rc = mqr__scram_server_first(&a->scram, rc == 0 ? &cred : NULL, NULL, &sf, &sf_len);
    OPENSSL_cleanse(&cred, sizeof cred);
    if (rc < 0) return MQR_MQTT_RC_SERVER_UNAVAILABLE;
    rc = send_auth(c, MQR_MQTT_RC_CONTINUE_AUTH, sf, sf_len);
    free(sf);
    if (rc < 0) return MQR_MQTT_RC_SERVER_UNAVAILABLE;
    a->scram_on = true;
    return 0;
}

/* client-final in data: 0 (server_final kept) or a reason to refuse (the
 * caller logs and counts it). */
static int scram_finish(mqr_lconn_t *c, const uint8_t *data, size_t len)
{
    struct mqr_lauth *a = c->auth;
    a->scram_on = false;
    free(a->server_final);
    a->server_final = NULL;
    int rc =
        data ? mqr__scram_client_final(&a->scram, data, len, &a->server_final, &a->server_final_len)
             : MQR_EMALFORMED;
    int code = 0;
    if (rc == 1)
        code = MQR_MQTT_RC_BAD_USERNAME_PASSWORD; /* wrong proof, or no such user */
    else if (rc == MQR_ENOMEM)
        code = MQR_MQTT_RC_SERVER_UNAVAILABLE;
    else if (rc < 0)
        code = MQR_MQTT_RC_NOT_AUTHORIZED; /* malformed client-final */
    else if (set_username(a, a->scram.username, a->scram.username_len) < 0)
        code = MQR_MQTT_RC_SERVER_UNAVAILABLE;
    mqr__scram_free(&a->scram);
    if (code == 0) {
        a->authenticated = true;
        a->method = MQR_AUTH_SCRAM_METHOD;
    }
    return code;
}

void mqr__listener_auth_connack_props(mqr_lconn_t *c, mqr_mqtt_pbuild_t *b)
{
    struct mqr_lauth *a = c->auth;
    if (!a || !a->method) return;
    mqr__mqtt_pb_string(b, MQR_MQTT_PROP_AUTH_METHOD, a->method, strlen(a->method));
    if (a->server_final)
        mqr__mqtt_pb_binary(b, MQR_MQTT_PROP_AUTH_DATA, a->server_final, a->server_final_len);
}

int mqr__listener_handle_auth(mqr_lconn_t *c, uint8_t *pkt, size_t len)
{
    mqr_mqtt_auth_t p;
    int rc = mqr__mqtt_decode_auth(pkt, len, c->version, &p);
    if (rc < 0) return rc;
    struct mqr_lauth *a = c->auth;
    bool ours = p.auth_method.p && p.auth_method.len == strlen(MQR_AUTH_SCRAM_METHOD) &&
                memcmp(p.auth_method.p, MQR_AUTH_SCRAM_METHOD, p.auth_method.len) == 0;
    if (c->state == MQR_LCONN_NEW) {
        /* 5.0 §4.12: the CONNECT's exchange goes on */
        if (!a || !a->scram_on || !a->connect || p.reason != MQR_MQTT_RC_CONTINUE_AUTH || !ours)
            return mqr__listener_conn_fail(c, MQR_MQTT_RC_PROTOCOL_ERROR, "unexpected AUTH");
        a->verdict = (uint8_t)scram_finish(c, p.auth_data.p, p.auth_data.len);
        rerun_connect(c);
        return 0;
    }
    /* 5.0 §4.12.1: re-authentication, with the method of the CONNECT */
    if (!a || !a->method || !ours)
        return mqr__listener_conn_fail(c, MQR_MQTT_RC_PROTOCOL_ERROR, "AUTH without a method");
    if (p.reason == MQR_MQTT_RC_REAUTHENTICATE && !a->scram_on) {
        int code = scram_start(c, p.auth_data.p, p.auth_data.len);
        if (code) return mqr__listener_conn_fail(c, (uint8_t)code, "re-authentication failed");
        a->reauth = true;
        return 0;
    }
    if (p.reason == MQR_MQTT_RC_CONTINUE_AUTH && a->scram_on && a->reauth) {
        char *prev_user = a->username;
        a->username = NULL;
        a->reauth = false;
        int code = scram_finish(c, p.auth_data.p, p.auth_data.len);
        bool same = code == 0 && prev_user && strcmp(prev_user, a->username) == 0;
        free(prev_user);
        if (code == 0 && !same) code = MQR_MQTT_RC_NOT_AUTHORIZED; /* another user */
        if (code) {
            refused(c, code, "re-authentication refused");
            a->authenticated = false;
            return mqr__listener_conn_fail(c, (uint8_t)code, "re-authentication failed");
        }
        if (send_auth(c, MQR_MQTT_RC_SUCCESS, a->server_final, a->server_final_len) < 0)
            return mqr__listener_conn_fail(c, MQR_MQTT_RC_UNSPECIFIED, "out of memory");
        MQR_LOG_I(MQR_LSN_LOG, "client %s re-authenticated as %s", c->client_id, a->username);
        return 0;
    }
    return mqr__listener_conn_fail(c, MQR_MQTT_RC_PROTOCOL_ERROR, "unexpected AUTH");
}

/* ---- CONNECT -------------------------------------------------------------------- */

int mqr__listener_auth_connect(mqr_lconn_t *c, const mqr_mqtt_connect_t *k, const uint8_t *pkt,
                               size_t len)
{
    struct mqr_lauth *a = c->auth;
    if (a && a->decided) {
        /* second pass: the credentials have answered */
        if (a->verdict) return refused(c, a->verdict, "credentials refused");
        int r = decide(c, k);
        return r ? refused(c, r, "refused") : 0;
    }
    if (a && (a->scram_on || a->connect)) /* a CONNECT during the first one's exchange */
        return refused(c, MQR_MQTT_RC_PROTOCOL_ERROR, "second CONNECT");
    mqr_listener_t *l = c->l;
    char *subject = tls_subject(c);
    if (subject) {
        if (!(a = auth_get(c))) {
            free(subject);
            return MQR_MQTT_RC_SERVER_UNAVAILABLE;
        }
        free(a->cert_subject);
        a->cert_subject = subject;
    }
    if (k->version == MQR_MQTT_V5 && k->auth_method.p) {
        if (k->auth_method.len != strlen(MQR_AUTH_SCRAM_METHOD) ||
            memcmp(k->auth_method.p, MQR_AUTH_SCRAM_METHOD, k->auth_method.len) != 0)
            return refused(c, MQR_MQTT_RC_BAD_AUTH_METHOD, "unknown authentication method");
        if (!(a = auth_get(c)) || keep_connect(a, pkt, len) < 0)
            return MQR_MQTT_RC_SERVER_UNAVAILABLE;
        int code = scram_start(c, k->auth_data.p, k->auth_data.len);
        if (code) return code;
        return 1;
    }
    if (!k->has_username) {
        int r = decide(c, k);
        return r ? refused(c, r, "anonymous") : 0;
    }
    if (!(a = auth_get(c)) || set_username(a, k->username.p, k->username.len) < 0)
        return MQR_MQTT_RC_SERVER_UNAVAILABLE;
    int rc = mqr__store_cred_get(l->all->store, k->username.p, k->username.len, &a->cred);
    if (rc == MQR_ENOENT) {
        int r = decide(c, k);
        return r ? refused(c, r, "unknown user") : 0;
    }
    if (rc < 0) return MQR_MQTT_RC_SERVER_UNAVAILABLE;
    if (!k->has_password) return refused(c, MQR_MQTT_RC_BAD_USERNAME_PASSWORD, "no password");
    if (l->auth_pending >= MQR_LSN_AUTH_PENDING_MAX) {
        /* a connect flood: answer now rather than queue a minute of PBKDF2 */
        OPENSSL_cleanse(&a->cred, sizeof a->cred);
        return refused(c, MQR_MQTT_RC_SERVER_BUSY, "too many password checks waiting");
    }
    a->pw = malloc(k->password.len ? k->password.len : 1);
    if (!a->pw || keep_connect(a, pkt, len) < 0) {
        pw_wipe(a);
        return MQR_MQTT_RC_SERVER_UNAVAILABLE;
    }
    memcpy(a->pw, k->password.p, k->password.len);
    a->pw_len = k->password.len;
    a->work.data = a;
    if (uv_queue_work(l->all->loop, &a->work, pw_work, pw_done) < 0) {
        pw_wipe(a);
        free(a->connect);
        a->connect = NULL;
        return MQR_MQTT_RC_SERVER_UNAVAILABLE;
    }
    c->refs++; /* pw_done's */
    c->hold = true;
    l->auth_pending++;
    return 1;
}
