/*
 * pg_lookup.h — host names of a PostgreSQL conninfo looked up on libuv's
 * thread pool. libpq resolves a host name with a blocking getaddrinfo
 * inside PQconnectPoll, which would stop the engine's loop for as long as
 * a DNS server takes; the PostgreSQL sink (pg.c) looks the names up here
 * first and hands libpq the addresses (hostaddr), one host entry per
 * address, the names kept for TLS and authentication.
 * Used on the loop thread only.
 */
#ifndef MQR_SINK_PG_LOOKUP_H
#define MQR_SINK_PG_LOOKUP_H

#include <libpq-fe.h>
#include <uv.h>

typedef struct mqr_pg_hosts mqr_pg_hosts_t;
typedef struct mqr_pg_lookup mqr_pg_lookup_t;

/* What opts (PQconninfoParse's, kept by the caller while hosts lives) say
 * of hosts: 0 and *out NULL when there is nothing to look up (no host, only
 * addresses or socket directories, or hostaddr given), 0 and *out, or
 * MQR_ENOMEM. */
int mqr__pg_hosts_new(const PQconninfoOption *opts, mqr_pg_hosts_t **out);
void mqr__pg_hosts_free(mqr_pg_hosts_t *h);

/* Called once with the connection libpq started (PQconnectStartParams),
 * which may be NULL (out of memory) or CONNECTION_BAD; or with pg NULL
 * and why ("could not look up host \"name\": ...") when a lookup failed
 * (status < 0, a libuv error). */
typedef void (*mqr_pg_looked_up_fn)(void *arg, PGconn *pg, int status, const char *why);

/* Looks every host name of h up, then starts the connection: the lookup,
 * or NULL and *status (nothing started). done never fires inside this
 * call, nor after mqr__pg_lookup_cancel. */
mqr_pg_lookup_t *mqr__pg_lookup_start(uv_loop_t *loop, const mqr_pg_hosts_t *h,
                                      mqr_pg_looked_up_fn done, void *arg, int *status);

/* Forgets l: done will not fire; l frees itself when libuv gives it back. */
void mqr__pg_lookup_cancel(mqr_pg_lookup_t *l);

#endif
