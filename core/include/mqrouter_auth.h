/*
 * mqrouter_auth.h — the embedded listener's users and anonymous access, for
 * a C host (the `mqrouter` command uses it for --add-user and friends).
 *
 * Users live in the engine's store as salted PBKDF2-HMAC-SHA256 keys (see
 * docs/auth.md); passwords are never kept. Loop thread only, like every
 * engine call. Each call that writes commits the store before returning.
 * Strings passed in are read during the call only; errors are 0 or a
 * negative MQR_E* as in mqrouter.h.
 */
#ifndef MQROUTER_AUTH_H
#define MQROUTER_AUTH_H

#include "mqrouter.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Adds a user, or sets a new password for an existing one. iterations 0 =
 * the default (100000); else 4096..10000000. Costs one PBKDF2 on the calling
 * thread. Returns 0, MQR_EINVAL (bad name: empty, over 256 bytes, control
 * characters or invalid UTF-8; iterations out of range), MQR_ESTORE. */
int mqr_user_add(mqr_engine_t *e, const char *name, const char *password, unsigned iterations);

/* Removes a user. MQR_ENOENT when there was none. */
int mqr_user_remove(mqr_engine_t *e, const char *name);

/* cb(arg, name) for every user, in name order (name valid during the call);
 * a non-zero return stops the walk and is returned; else 0, MQR_EINVAL,
 * MQR_ECLOSED or MQR_ESTORE.
 * cb must not call back into the engine. */
int mqr_user_list(mqr_engine_t *e, int (*cb)(void *arg, const char *name), void *arg);

/* Puts a user in a tenant (tenant NULL or "": in none). A client logged in
 * as that user has its topics under "<tenant>/" (docs/registry.md). Takes
 * effect at the user's next CONNECT. Returns 0, MQR_ENOENT (no such user),
 * MQR_EINVAL (tenant not 1..64 characters of A-Z a-z 0-9 _ -), MQR_ESTORE. */
int mqr_user_set_tenant(mqr_engine_t *e, const char *name, const char *tenant);

/* Anonymous clients (no user name, no authentication method) on every
 * listener the engine has open now: 1 allowed, 0 refused, -1 the default
 * (allowed only when the listener is bound to a loopback address).
 * Listeners opened later keep their own setting. Returns MQR_ENOENT when the
 * engine has no listener. */
int mqr_listener_allow_anonymous(mqr_engine_t *e, int allow);

#ifdef __cplusplus
}
#endif
#endif
