/*
 * auth_int.h — what the files of core/auth/ share: HMAC-SHA256, base64 and
 * the SCRAM attribute reader, used by the server side (auth.c) and the
 * client side (scram_client.c) alike. Only core/auth/ includes it.
 */
#ifndef MQR_AUTH_INT_H
#define MQR_AUTH_INT_H

#include "auth.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

void mqr__auth_hmac256(const uint8_t *key, size_t key_len, const void *data, size_t len,
                       uint8_t out[MQR_AUTH_KEY_LEN]);
/* base64 of in (malloc'd, NUL-terminated; *out_len without the NUL). */
char *mqr__auth_b64_encode(const uint8_t *in, size_t n, size_t *out_len);
/* Strict: canonical padding, no whitespace. Returns the decoded length, or
 * -1. out needs 3 * len / 4 bytes. */
int mqr__auth_b64_decode(const char *in, size_t len, uint8_t *out);
/* The next ','-separated attribute of [*p, end): its letter and value. */
bool mqr__scram_next_attr(const char **p, const char *end, char *name, const char **val,
                          size_t *vlen);
/* A nonce: printable ASCII without ',' (RFC 5802 §7), not empty. */
bool mqr__scram_nonce_ok(const char *v, size_t n);

#endif
