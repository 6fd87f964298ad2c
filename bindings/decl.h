/*
 * decl.h — the bookkeeping of a declaration that outlives a Lua state: a
 * thing a rule script declares that belongs to the script host and is kept
 * across a hot reload when the new script declares it again with the same
 * settings. Queues (l_queue.c) and listeners (l_listen.c) use it; sessions
 * (l_upstream.c) follow the same rules with their own list.
 *
 * Each declaration records the newest state that claimed it and the loading
 * state that created it. At the takeover (the new state becomes the serving
 * one) every declaration the new state did not claim is dropped; when a load
 * fails, what that load created is dropped and what it claimed goes back to
 * the serving state. Embed l_decl_t as the first member of the owner's
 * struct; `drop` frees it. Loop thread only; no Lua here.
 */
#ifndef MQR_DECL_H
#define MQR_DECL_H

#include <stdbool.h>

typedef struct l_state l_state_t;
typedef struct l_decl l_decl_t;

struct l_decl {
    l_decl_t *next;
    char *name;            /* the declared name (unique within its list) */
    char *config_key;      /* every setting joined: equal key = same thing */
    l_state_t *claimed_by; /* newest state that declared it */
    l_state_t *created_by; /* the loading state that created it, until it takes over */
};

typedef struct {
    l_decl_t *head;
} l_decl_list_t;

/* Why a declaration is dropped: the new rules no longer declare it, the
 * load that created it failed, or the host is freed. */
typedef enum { MQR_DECL_UNCLAIMED, MQR_DECL_ABANDONED, MQR_DECL_HOST_FREE } mqr_decl_why_t;

typedef void (*mqr_decl_drop_fn)(l_decl_t *d, mqr_decl_why_t why);

/* The declaration named name, or NULL. */
l_decl_t *mqr__decl_find(const l_decl_list_t *list, const char *name);

/* Links d (name and config_key set by the caller) as created and claimed by
 * st. */
void mqr__decl_add(l_decl_list_t *list, l_decl_t *d, l_state_t *st);

/* Takes d out of the list (an explicit close); the caller frees it. */
void mqr__decl_unlink(l_decl_list_t *list, l_decl_t *d);

/* st has taken over: drops every declaration it did not claim. */
void mqr__decl_takeover(l_decl_list_t *list, l_state_t *st, mqr_decl_drop_fn drop);

/* The load of st failed: drops what it created, gives what it claimed back
 * to cur (the serving state, may be NULL). */
void mqr__decl_abandon(l_decl_list_t *list, l_state_t *st, l_state_t *cur, mqr_decl_drop_fn drop);

/* Drops every declaration (the host is freed). */
void mqr__decl_drop_all(l_decl_list_t *list, mqr_decl_drop_fn drop);

#endif
