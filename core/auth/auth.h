/*
 * auth.h — credentials and the cryptography of client authentication:
 * PBKDF2-HMAC-SHA256 password keys, the SCRAM-SHA-256 server side (RFC 5802,
 * RFC 7677) and the credentials table of the store, plus the hooks through
 * which the bindings let a rules script decide who connects and who may
 * publish or subscribe to what.
 *
 * A password is never stored, nor SaltedPassword (which would let anyone
 * holding the file log in through SCRAM): only the salt, the iteration count
 * and the two SCRAM keys derived from it. A plain MQTT password is checked
 * by deriving the same StoredKey and comparing in constant time.
 *
 * The key functions are pure and thread-safe (the listener runs PBKDF2 on
 * the libuv threadpool). The store functions (store_auth.c) and the hooks
 * are loop-thread only. Nothing here includes a Lua header or does I/O
 * other than through the store.
 */
#ifndef MQR_AUTH_H
#define MQR_AUTH_H

#include "message.h"
#include "mqrouter.h"
#include "store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MQR_AUTH_KEY_LEN 32  /* SHA-256 */
#define MQR_AUTH_SALT_LEN 16 /* random salt of a new user */
#define MQR_AUTH_SALT_MAX 64
/* PBKDF2 iterations of a new user. One derivation costs about 20 ms of one
 * core at this count (bench figure in docs/auth.md); the listener runs it on
 * the threadpool, and a SCRAM client pays it instead of the server. */
#define MQR_AUTH_ITERATIONS_DEFAULT 100000u
#define MQR_AUTH_ITERATIONS_MIN 4096u /* RFC 7677 §4 */
#define MQR_AUTH_ITERATIONS_MAX 10000000u
#define MQR_AUTH_USERNAME_MAX 256u
#define MQR_AUTH_SCRAM_METHOD "SCRAM-SHA-256"

/* What the store keeps of one user. */
typedef struct {
    uint8_t salt[MQR_AUTH_SALT_MAX];
    size_t salt_len;
    uint32_t iterations;
    uint8_t stored_key[MQR_AUTH_KEY_LEN];
    uint8_t server_key[MQR_AUTH_KEY_LEN];
} mqr_cred_t;

/* ---- keys (any thread) --------------------------------------------------- */

/* PBKDF2-HMAC-SHA256 with a 32-byte output (SCRAM's Hi()). Returns 0 or
 * MQR_EINVAL (iterations 0 or too large, lengths over INT_MAX). */
int mqr__auth_pbkdf2(const void *pw, size_t pw_len, const uint8_t *salt, size_t salt_len,
                     uint32_t iterations, uint8_t out[MQR_AUTH_KEY_LEN]);

/* StoredKey = SHA256(HMAC(salted, "Client Key")), ServerKey = HMAC(salted,
 * "Server Key"). Either output may be NULL. */
void mqr__auth_keys(const uint8_t salted[MQR_AUTH_KEY_LEN], uint8_t stored_key[MQR_AUTH_KEY_LEN],
                    uint8_t server_key[MQR_AUTH_KEY_LEN]);

/* A new user's record: random salt (RAND_bytes), iterations (0 = the
 * default), keys from pw. Returns 0, MQR_EINVAL (iterations out of range)
 * or MQR_ENOMEM (no randomness). Costs one PBKDF2. */
int mqr__auth_cred_make(const void *pw, size_t pw_len, uint32_t iterations, mqr_cred_t *out);

/* Does salted (PBKDF2 of a candidate password with c's salt and count)
 * give c's StoredKey? Constant time in the key bytes (CRYPTO_memcmp). */
bool mqr__auth_cred_match(const mqr_cred_t *c, const uint8_t salted[MQR_AUTH_KEY_LEN]);

/* A user name we store: 1..MQR_AUTH_USERNAME_MAX bytes of UTF-8 without
 * control characters. */
bool mqr__auth_username_valid(const char *name, size_t len);

/* ---- SCRAM-SHA-256, server side (any thread; one exchange per struct) ----- */

typedef struct {
    int step;       /* 0: waiting for client-first; 1: server-first sent; 2: done */
    bool known;     /* the user exists (else a fake salt is offered, then refused) */
    char *username; /* decoded from n= (malloc'd, NUL-terminated) */
    size_t username_len;
    char *client_first_bare; /* for AuthMessage */
    size_t cfb_len;
    char *server_first;
    size_t sf_len;
    char gs2[64]; /* the gs2-header, which c= must repeat */
    size_t gs2_len;
    char nonce[160]; /* client nonce + ours */
    size_t nonce_len;
    mqr_cred_t cred;
} mqr_scram_t;

void mqr__scram_init(mqr_scram_t *s);
void mqr__scram_free(mqr_scram_t *s);

/* Parses client-first-message ("n,,n=user,r=nonce"). Returns 0 with
 * s->username set, or MQR_EMALFORMED (bad syntax, channel binding asked for,
 * mandatory extension, bad user name). */
int mqr__scram_client_first(mqr_scram_t *s, const void *msg, size_t len);

/* Builds server-first-message ("r=...,s=...,i=...") into *out (malloc'd,
 * the caller frees; also kept in s). cred NULL: the user is unknown, and a
 * salt derived from the name and a per-process secret is offered so the
 * answer does not tell whether the user exists; the exchange then fails at
 * the proof. server_nonce NULL = 18 random bytes, base64 (tests pass a fixed
 * one). Returns 0, MQR_EINVAL (wrong step), MQR_ENOMEM. */
int mqr__scram_server_first(mqr_scram_t *s, const mqr_cred_t *cred, const char *server_nonce,
                            char **out, size_t *out_len);

/* Checks client-final-message ("c=biws,r=...,p=..."). Returns 0 with the
 * server-final-message ("v=...") in *out (malloc'd) when the proof is right;
 * 1 when the proof is wrong or the user unknown (*out NULL); MQR_EMALFORMED
 * for bad syntax, a different nonce or channel binding; MQR_EINVAL for the
 * wrong step; MQR_ENOMEM. */
int mqr__scram_client_final(mqr_scram_t *s, const void *msg, size_t len, char **out,
                            size_t *out_len);

/* ---- SCRAM-SHA-256, client side (scram_client.c; any thread) ------------
 * What an MQTT client (an upstream session) does to prove a password to a
 * server without sending it, and to check that the server knows it too
 * (RFC 5802 / 7677 over MQTT 5 enhanced authentication). The password is
 * used as bytes (no SASLprep: ASCII passwords are unaffected). One exchange
 * at a time per struct; the salted password of the last password, salt and
 * count is kept (with a digest of the password to tell it apart, never the
 * password), so a reconnect to the same server skips the PBKDF2. */
typedef struct {
    int step; /* 0: new; 1: client-first made; 2: client-final made; 3: server verified */
    char *client_first_bare;
    size_t cfb_len;
    char nonce[64]; /* ours */
    size_t nonce_len;
    uint8_t server_signature[MQR_AUTH_KEY_LEN]; /* what server-final must carry */
    bool have_salted;
    uint8_t salt[MQR_AUTH_SALT_MAX];
    size_t salt_len;
    uint32_t iterations;
    uint8_t pw_digest[MQR_AUTH_KEY_LEN]; /* SHA-256 of the password salted was made from */
    uint8_t salted[MQR_AUTH_KEY_LEN];
} mqr_scram_client_t;

void mqr__scram_client_init(mqr_scram_client_t *c);
/* Forgets everything, the salted password included. */
void mqr__scram_client_free(mqr_scram_client_t *c);

/* client-first-message ("n,,n=user,r=nonce") into *out (malloc'd). nonce
 * NULL = 18 random bytes, base64 (tests pass a fixed one). Starts a new
 * exchange. 0, MQR_EINVAL (user name), MQR_ENOMEM. */
int mqr__scram_client_begin(mqr_scram_client_t *c, const char *user, const char *nonce, char **out,
                            size_t *out_len);
/* Reads server-first-message ("r=...,s=...,i=...") and makes
 * client-final-message ("c=biws,r=...,p=...") into *out (malloc'd). Costs
 * one PBKDF2 unless password, salt and count are those of the last one.
 * 0; MQR_EMALFORMED (syntax, a nonce that does not extend ours, a
 * mandatory extension, an iteration count out of range); MQR_EINVAL
 * (wrong step); MQR_ENOMEM. */
int mqr__scram_client_continue(mqr_scram_client_t *c, const void *server_first, size_t len,
                               const void *pw, size_t pw_len, char **out, size_t *out_len);
/* Checks server-final-message ("v=..."): 0 when the server proved it knows
 * the password; MQR_EAUTH for a wrong signature or an "e=" error;
 * MQR_EMALFORMED; MQR_EINVAL (wrong step). */
int mqr__scram_client_finish(mqr_scram_client_t *c, const void *server_final, size_t len);

/* ---- credentials in the store (store_auth.c; loop thread) -------------- */

/* Adds or replaces user's record. Group-committed like every write (flush
 * the store to have it on disk now). 0, MQR_EINVAL, MQR_ECLOSED, MQR_ESTORE. */
int mqr__store_cred_put(mqr_store_t *s, const char *user, size_t len, const mqr_cred_t *c);
/* 0 and *out, MQR_ENOENT when there is no such user, MQR_ESTORE. */
int mqr__store_cred_get(mqr_store_t *s, const char *user, size_t len, mqr_cred_t *out);
/* 0, MQR_ENOENT when there was no such user, MQR_ESTORE. */
int mqr__store_cred_del(mqr_store_t *s, const char *user, size_t len);
/* cb for every user name in name order; a non-zero return stops the walk
 * and is returned. cb must not call into the store. */
int mqr__store_cred_list(mqr_store_t *s, int (*cb)(void *arg, const char *user, size_t len),
                         void *arg);
int mqr__store_cred_count(mqr_store_t *s, size_t *count);
/* The tenant of a stored user (*tenant malloc'd, "" for none), MQR_ENOENT
 * (store_registry.c). */
int mqr__store_cred_tenant_get(mqr_store_t *s, const char *user, char **tenant);
/* Sets the tenant of a stored user ("" or NULL: none). MQR_ENOENT, MQR_EINVAL. */
int mqr__store_cred_tenant_set(mqr_store_t *s, const char *user, const char *tenant);
/* Is there any user at all? (O(1), for every CONNECT) */
int mqr__store_cred_any(mqr_store_t *s, bool *any);

/* ---- hooks (set by the bindings; loop thread) ---------------------------- */

/* Who is asking. Strings are not NUL-terminated unless said; NULL = absent. */
typedef struct mqr_auth_client {
    const char *client_id; /* NUL-terminated */
    const char *username;  /* NUL-terminated, NULL = none given */
    const uint8_t *password;
    size_t password_len;
    const char *address;      /* "ip:port" of the peer, NUL-terminated */
    int protocol;             /* 4 (3.1.1) or 5 */
    int port;                 /* the listener's port */
    const char *method;       /* v5 Authentication Method used, NULL = none */
    bool authenticated;       /* the store's credentials (password or SCRAM) proved it */
    const char *cert_subject; /* RFC 2253 subject of a verified TLS client certificate */
} mqr_auth_client_t;

enum {
    MQR_AUTH_PUBLISH = 1,
    MQR_AUTH_SUBSCRIBE = 2,
};

/* Is code a reason an authorize hook may deny action with? The failure
 * codes 5.0 allows in the answering packet: SUBACK (§3.9.3) for
 * MQR_AUTH_SUBSCRIBE, PUBACK and PUBREC (§3.4.2.1, §3.5.2.1, the same set)
 * for MQR_AUTH_PUBLISH. */
bool mqr__auth_reason_ok(int action, int code);

typedef struct mqr_auth_hooks {
    /* Returns 0 to let the client in, or the v5 CONNACK reason code to refuse
     * with (0x80..0xFF; the listener maps it for 3.1.1). NULL = no hook. */
    int (*authenticate)(void *ud, const mqr_auth_client_t *client);
    /* 0: allowed; else denied, with the v5 reason code to answer with
     * (0x80..0xFF, one mqr__auth_reason_ok() accepts for the action; any
     * other non-zero value means 0x87 Not authorized). topic is a topic
     * name (publish) or filter (subscribe). NULL = everything allowed. */
    int (*authorize)(void *ud, const mqr_auth_client_t *client, int action, const char *topic,
                     size_t topic_len, int qos, bool retain);
    void *ud;
    /* authorize's answers may be kept per connection and (action, topic,
     * QoS, retain) while generation stays the same; the bindings bump it
     * whenever the hooks change */
    bool authorize_cacheable;
    uint32_t generation;
    uint64_t cache_hits;
} mqr_auth_hooks_t;

#endif
