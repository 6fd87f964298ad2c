/*
 * pg_lookup.c — the host name lookups of pg_lookup.h: one uv_getaddrinfo
 * at a time, host entry after host entry, building the host, hostaddr and
 * port lists libpq gets (PQconnectStartParams). An entry that is an
 * address or a socket directory goes as it is (an empty hostaddr entry:
 * libpq reads the host). A name with several addresses becomes one entry
 * per address (at most PG_ADDRS_PER_NAME), so libpq tries them in turn as
 * it would have. Must not: call libpq's connect before every lookup ended,
 * or touch the caller's options after a cancel.
 */
#include "pg_lookup.h"

#include "buf.h"
#include "mqrouter.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PG_ADDRS_PER_NAME 8
#define PG_MAX_HOSTS 64

struct mqr_pg_hosts {
    const PQconninfoOption *opts;
    char *host[PG_MAX_HOSTS]; /* the entries of "host" */
    char *port[PG_MAX_HOSTS]; /* of "port": none, one for all, or one per host */
    int nhost, nport;
};

struct mqr_pg_lookup {
    uv_getaddrinfo_t req;
    const mqr_pg_hosts_t *h;
    mqr_pg_looked_up_fn done;
    void *arg;
    bool cancelled;
    int next;   /* the host entry being looked up */
    int status; /* the last lookup that failed, and why */
    char why[384];
    mqr_buf_t hosts, addrs, ports; /* comma lists: what libpq will get */
};

/* ---- parsing ---- */

static const char *opt_val(const PQconninfoOption *opts, const char *kw)
{
    for (const PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, kw) == 0) return o->val;
    return NULL;
}

/* Splits s at commas into out (copies): the count, -1 beyond PG_MAX_HOSTS
 * entries, or MQR_ENOMEM. */
static int split(const char *s, char **out)
{
    int n = 0;
    for (const char *p = s;; n++) {
        size_t len = strcspn(p, ",");
        if (n == PG_MAX_HOSTS) return -1;
        out[n] = strndup(p, len);
        if (!out[n]) return MQR_ENOMEM;
        if (!p[len]) return n + 1;
        p += len + 1;
    }
}

static bool is_name(const char *h)
{
    unsigned char buf[sizeof(struct in6_addr)];
    if (!*h || h[0] == '/' || h[0] == '@') return false; /* default, socket directory */
    return inet_pton(AF_INET, h, buf) != 1 && inet_pton(AF_INET6, h, buf) != 1;
}

void mqr__pg_hosts_free(mqr_pg_hosts_t *h)
{
    if (!h) return;
    for (int i = 0; i < PG_MAX_HOSTS; i++) {
        free(h->host[i]);
        free(h->port[i]);
    }
    free(h);
}

int mqr__pg_hosts_new(const PQconninfoOption *opts, mqr_pg_hosts_t **out)
{
    *out = NULL;
    const char *host = opt_val(opts, "host"), *addr = opt_val(opts, "hostaddr");
    const char *port = opt_val(opts, "port");
    if (!host || !*host || (addr && *addr)) return 0;
    mqr_pg_hosts_t *h = calloc(1, sizeof *h);
    if (!h) return MQR_ENOMEM;
    h->opts = opts;
    h->nhost = split(host, h->host);
    h->nport = port && *port ? split(port, h->port) : 0;
    if (h->nhost < 0 || h->nport < 0) {
        /* beyond PG_MAX_HOSTS entries libpq looks them up itself */
        int rc = h->nhost == MQR_ENOMEM || h->nport == MQR_ENOMEM ? MQR_ENOMEM : 0;
        mqr__pg_hosts_free(h);
        return rc;
    }
    bool any = false;
    for (int i = 0; i < h->nhost; i++)
        any = any || is_name(h->host[i]);
    if (!any) {
        mqr__pg_hosts_free(h);
        return 0;
    }
    *out = h;
    return 0;
}

/* ---- the lists libpq gets ---- */

static void list_add(mqr_buf_t *l, const char *s)
{
    if (l->len) mqr__buf_add(l, ",", 1);
    mqr__buf_add(l, s, strlen(s)); /* an empty first entry still makes "" */
}

/* One entry: host i at addr ("" = as the host says). */
static void entry_add(mqr_pg_lookup_t *l, int i, const char *addr)
{
    list_add(&l->hosts, l->h->host[i]);
    list_add(&l->addrs, addr);
    if (l->h->nport > 1) list_add(&l->ports, l->h->port[i < l->h->nport ? i : 0]);
}

static void lookup_free(mqr_pg_lookup_t *l)
{
    mqr__buf_free(&l->hosts);
    mqr__buf_free(&l->addrs);
    mqr__buf_free(&l->ports);
    free(l);
}

/* Every option as given but host, hostaddr and port, which the lists say. */
static PGconn *connect_start(mqr_pg_lookup_t *l)
{
    if (l->hosts.failed || l->addrs.failed || l->ports.failed) return NULL;
    const PQconninfoOption *opts = l->h->opts;
    size_t n = 0;
    for (const PQconninfoOption *o = opts; o->keyword; o++)
        n++;
    const char **kw = calloc(n + 4, sizeof *kw), **val = calloc(n + 4, sizeof *val);
    PGconn *pg = NULL;
    if (kw && val) {
        size_t k = 0;
        for (const PQconninfoOption *o = opts; o->keyword; o++) {
            bool ours = strcmp(o->keyword, "host") == 0 || strcmp(o->keyword, "hostaddr") == 0 ||
                        (l->h->nport > 1 && strcmp(o->keyword, "port") == 0);
            if (ours || !o->val) continue;
            kw[k] = o->keyword;
            val[k++] = o->val;
        }
        kw[k] = "host";
        val[k++] = l->hosts.p;
        kw[k] = "hostaddr";
        val[k++] = l->addrs.p;
        if (l->h->nport > 1) {
            kw[k] = "port";
            val[k++] = l->ports.p;
        }
        pg = PQconnectStartParams(kw, val, 0);
    }
    free(kw);
    free(val);
    return pg;
}

/* ---- looking up ---- */

static void on_addrinfo(uv_getaddrinfo_t *req, int status, struct addrinfo *res);

/* Adds the entries that need no lookup from l->next on, then starts the
 * lookup of the next name: 0, 1 when every entry is in, or < 0. */
static int lookup_next(mqr_pg_lookup_t *l, uv_loop_t *loop)
{
    while (l->next < l->h->nhost && !is_name(l->h->host[l->next]))
        entry_add(l, l->next++, "");
    if (l->next == l->h->nhost) return 1;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    return uv_getaddrinfo(loop, &l->req, on_addrinfo, l->h->host[l->next], NULL, &hints);
}

static void finish(mqr_pg_lookup_t *l, int status, const char *why)
{
    l->done(l->arg, status < 0 ? NULL : connect_start(l), status, why);
    lookup_free(l);
}

static void on_addrinfo(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    mqr_pg_lookup_t *l = req->data;
    if (l->cancelled) {
        uv_freeaddrinfo(res);
        lookup_free(l);
        return;
    }
    int i = l->next++;
    int n = 0;
    for (struct addrinfo *a = status < 0 ? NULL : res; a && n < PG_ADDRS_PER_NAME; a = a->ai_next) {
        char ip[64];
        if (uv_ip_name(a->ai_addr, ip, sizeof ip) != 0) continue;
        entry_add(l, i, ip);
        n++;
    }
    uv_freeaddrinfo(res);
    if (!n) { /* libpq too goes on with the next host */
        l->status = status < 0 ? status : UV_EAI_NODATA;
        snprintf(l->why, sizeof l->why, "could not look up host \"%.200s\": %s", l->h->host[i],
                 uv_strerror(l->status));
    }
    int rc = lookup_next(l, req->loop);
    if (rc == 0) return;
    if (rc < 0) {
        l->status = rc;
        snprintf(l->why, sizeof l->why, "could not look up host \"%.200s\": %s",
                 l->h->host[l->next], uv_strerror(rc));
    }
    if (rc < 0 || !l->hosts.len)
        finish(l, l->status, l->why);
    else
        finish(l, 0, NULL);
}

mqr_pg_lookup_t *mqr__pg_lookup_start(uv_loop_t *loop, const mqr_pg_hosts_t *h,
                                      mqr_pg_looked_up_fn done, void *arg, int *status)
{
    mqr_pg_lookup_t *l = calloc(1, sizeof *l);
    if (!l) {
        *status = MQR_ENOMEM;
        return NULL;
    }
    l->h = h;
    l->done = done;
    l->arg = arg;
    l->req.data = l;
    int rc = lookup_next(l, loop);
    if (rc != 0) {
        /* only names need a lookup and h has one: rc is an error */
        lookup_free(l);
        *status = rc < 0 ? rc : MQR_EINVAL;
        return NULL;
    }
    return l;
}

void mqr__pg_lookup_cancel(mqr_pg_lookup_t *l)
{
    if (!l) return;
    l->cancelled = true;
    uv_cancel((uv_req_t *)&l->req);
}
