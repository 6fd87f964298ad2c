/*
 * server.c — the listener's lifecycle: bind, accept, the per-turn flush and
 * timer handles, the client-id map, and closing everything.
 *
 * It knows nothing of packets: an accepted socket becomes a connection and
 * conn.c takes over. It must never block the loop (a host name is resolved
 * once, at start) and must not free the listener while any handle or
 * connection of it may still call back.
 */
#include "listener_int.h"

#include "hash.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

void mqr__listener_options_init(mqr_listener_options_t *o)
{
    memset(o, 0, sizeof *o);
    o->max_packet_size = 1024u * 1024u;
    o->max_inflight = 32;
    o->max_queued = 1000;
    o->max_out_bytes = 8u * 1024u * 1024u;
    o->receive_max = 1024;
    o->topic_alias_max = 32;
    o->max_subscriptions = 4096;
    o->max_connections = 100000;
    o->connect_timeout_ms = 10000;
    o->stuck_timeout_ms = 10000;
    o->max_qos = 2;
    o->sys_interval_ms = 10000;
}

static void normalize(mqr_listener_options_t *o, const mqr_listener_options_t *in)
{
    mqr_listener_options_t d;
    mqr__listener_options_init(&d);
    *o = in ? *in : d;
    if (!o->max_packet_size) o->max_packet_size = d.max_packet_size;
    if (o->max_packet_size > MQR_MQTT_MAX_PACKET) o->max_packet_size = MQR_MQTT_MAX_PACKET;
    if (!o->max_inflight) o->max_inflight = d.max_inflight;
    if (o->max_inflight > 1024) o->max_inflight = 1024;
    if (!o->max_queued) o->max_queued = d.max_queued;
    if (!o->max_out_bytes) o->max_out_bytes = d.max_out_bytes;
    if (!o->receive_max) o->receive_max = d.receive_max;
    if (o->receive_max > 65535) o->receive_max = 65535;
    if (o->max_keepalive > 65535) o->max_keepalive = 65535;
    if (!o->topic_alias_max) o->topic_alias_max = d.topic_alias_max;
    if (o->topic_alias_max < 0) o->topic_alias_max = 0;
    if (o->topic_alias_max > 1024) o->topic_alias_max = 1024;
    if (!o->max_subscriptions) o->max_subscriptions = d.max_subscriptions;
    if (!o->max_connections) o->max_connections = d.max_connections;
    if (!o->connect_timeout_ms) o->connect_timeout_ms = d.connect_timeout_ms;
    if (!o->stuck_timeout_ms) o->stuck_timeout_ms = d.stuck_timeout_ms;
    /* from here on max_qos is the QoS itself, 0..2 */
    if (!o->max_qos || o->max_qos > 2) o->max_qos = 2;
    if (o->max_qos < 0) o->max_qos = 0;
    if (o->publish_rate && !o->publish_burst) o->publish_burst = o->publish_rate;
    if (o->connect_rate && !o->connect_burst) o->connect_burst = o->connect_rate;
    /* a bucket must hold a whole token; and keep x MQR_LSN_TOKEN in range */
    if (o->publish_burst > 1000000) o->publish_burst = 1000000;
    if (o->connect_burst > 1000000) o->connect_burst = 1000000;
    if (o->publish_rate > 1000000) o->publish_rate = 1000000;
    if (!o->sys_interval_ms) o->sys_interval_ms = d.sys_interval_ms;
}

/* ---- client-id map ------------------------------------------------------ */

static mqr_lconn_t *id_find_in(mqr_listener_t *l, const char *id, size_t len)
{
    if (!l->ids_cap) return NULL;
    for (mqr_lconn_t *c = l->ids[mqr__fnv1a64(id, len) & (l->ids_cap - 1)]; c; c = c->id_next)
        if (c->client_id_len == len && memcmp(c->client_id, id, len) == 0) return c;
    return NULL;
}

mqr_lconn_t *mqr__listener_id_find(mqr_listener_t *l, const char *id, size_t len)
{
    if (!l->linked) return id_find_in(l, id, len);
    /* one client-id space for every listener of the engine: a client that
     * comes back through another listener still takes its session over */
    for (mqr_listener_t *x = l->all->first; x; x = x->e_next) {
        mqr_lconn_t *c = id_find_in(x, id, len);
        if (c) return c;
    }
    return NULL;
}

static int ids_grow(mqr_listener_t *l)
{
    size_t cap = l->ids_cap ? l->ids_cap * 2 : 64;
    mqr_lconn_t **b = calloc(cap, sizeof *b);
    if (!b) return MQR_ENOMEM;
    for (size_t i = 0; i < l->ids_cap; i++) {
        mqr_lconn_t *c = l->ids[i];
        while (c) {
            mqr_lconn_t *next = c->id_next;
            size_t j = mqr__fnv1a64(c->client_id, c->client_id_len) & (cap - 1);
            c->id_next = b[j];
            b[j] = c;
            c = next;
        }
    }
    free(l->ids);
    l->ids = b;
    l->ids_cap = cap;
    return 0;
}

int mqr__listener_id_add(mqr_listener_t *l, mqr_lconn_t *c)
{
    if (l->ids_count >= l->ids_cap) {
        int rc = ids_grow(l);
        if (rc < 0) return rc;
    }
    size_t j = mqr__fnv1a64(c->client_id, c->client_id_len) & (l->ids_cap - 1);
    c->id_next = l->ids[j];
    l->ids[j] = c;
    l->ids_count++;
    c->registered = true;
    return 0;
}

void mqr__listener_id_remove(mqr_listener_t *l, mqr_lconn_t *c)
{
    if (!c->registered) return;
    size_t j = mqr__fnv1a64(c->client_id, c->client_id_len) & (l->ids_cap - 1);
    for (mqr_lconn_t **pp = &l->ids[j]; *pp; pp = &(*pp)->id_next) {
        if (*pp == c) {
            *pp = c->id_next;
            break;
        }
    }
    c->id_next = NULL;
    c->registered = false;
    l->ids_count--;
}

void mqr__listener_id_assign(mqr_listener_t *l, char out[24])
{
    for (;;) {
        /* time-seeded so ids differ across restarts too (a client may keep
         * one it was given) */
        uint64_t x = uv_hrtime() ^ (++l->id_seq * 0x9E3779B97F4A7C15ull);
        x ^= x >> 31;
        x *= 0xBF58476D1CE4E5B9ull;
        x ^= x >> 29;
        snprintf(out, 24, "mqr-%016llx", (unsigned long long)x);
        if (!mqr__listener_id_find(l, out, strlen(out))) return;
    }
}

/* ---- lifecycle ---------------------------------------------------------- */

void mqr__listener_maybe_free(mqr_listener_t *l)
{
    if (!l->closing || l->open_handles || l->nconns) return;
    mqr__listener_pool_free(l);
    free(l->resumed);
    free(l->ids);
    free(l->rbuf);
    free(l->tbuf);
    free(l->wsbuf);
    if (l->ssl_ctx) mqr__ltls_ctx_free(l->ssl_ctx);
    free(l);
}

static void on_handle_closed(uv_handle_t *h)
{
    mqr_listener_t *l = h->data;
    l->open_handles--;
    mqr__listener_maybe_free(l);
}

static void on_check(uv_check_t *h)
{
    mqr_listener_t *l = h->data;
    mqr__listener_process_resumed(l);
    mqr__listener_flush_all(l);
    if (!l->dirty && l->idle_on) {
        uv_idle_stop(&l->idle);
        l->idle_on = false;
    }
}

static void on_idle(uv_idle_t *h)
{
    /* Nothing to do: being active keeps the loop from blocking in poll
     * while output waits for on_check. */
}

void mqr__listener_wake(mqr_listener_t *l)
{
    /* An active idle handle makes the loop poll without blocking, so the
     * check handle flushes this turn even when the output was made in a
     * timer or prepare callback, after the poll timeout was computed. */
    if (l->idle_on || l->closing) return;
    uv_idle_start(&l->idle, on_idle);
    l->idle_on = true;
}

static void on_tick(uv_timer_t *h)
{
    mqr_listener_t *l = h->data;
    uint64_t now = uv_now(l->all->loop);
    mqr_lconn_t *next;
    for (mqr_lconn_t *c = l->conns; c; c = next) {
        next = c->next; /* c may close, never free, here */
        mqr__listener_conn_tick(c, now);
    }
    mqr__client_session_tick(l, now);
}

/* connect_rate: one token per accepted socket. */
static bool connect_rate_take(mqr_listener_t *l)
{
    if (!l->opts.connect_rate) return true;
    uint64_t now = uv_now(l->all->loop);
    uint64_t cap = (uint64_t)l->opts.connect_burst * MQR_LSN_TOKEN;
    uint64_t add = (now - l->conn_ms) * l->opts.connect_rate * MQR_LSN_TOKEN / 1000u;
    if (add) {
        l->conn_tokens = l->conn_tokens + add > cap ? cap : l->conn_tokens + add;
        l->conn_ms = now;
    }
    if (l->conn_tokens < MQR_LSN_TOKEN) return false;
    l->conn_tokens -= MQR_LSN_TOKEN;
    return true;
}

/* Closes a just-accepted socket before reading anything: in a flood that is
 * the cheapest answer, and the log says so once a second, not per socket. */
static void refuse_at_accept(mqr_lconn_t *c, const char *why)
{
    mqr_listener_t *l = c->l;
    l->stats.connects_refused++;
    uint64_t now = uv_now(l->all->loop);
    if (now - l->refuse_log_ms >= 1000u || !l->refuse_log_ms) {
        l->refuse_log_ms = now;
        MQR_LOG_W(MQR_LSN_LOG,
                  "%s:%d: refusing connections: %s (%u open, max %u; %llu refused for the rate, "
                  "%llu for the limit so far)",
                  l->host, l->port, why, (unsigned)l->stats.connections_current,
                  l->opts.max_connections, (unsigned long long)l->stats.connects_rate_limited,
                  (unsigned long long)l->stats.connects_over_limit);
    }
    mqr__listener_conn_close(c, MQR_LCLOSE_HARD, 0, why);
}

static void on_connection(uv_stream_t *server, int status)
{
    mqr_listener_t *l = server->data;
    if (status < 0) {
        MQR_LOG_W(MQR_LSN_LOG, "accept on %s:%d: %s", l->host, l->port, uv_strerror(status));
        return;
    }
    mqr_lconn_t *c = calloc(1, sizeof *c);
    if (!c) {
        MQR_LOG_E(MQR_LSN_LOG, "accept: out of memory");
        return;
    }
    c->l = l;
    mqr__listener_conn_source_init(c);
    uv_tcp_init(l->all->loop, &c->tcp);
    c->tcp.data = c;
    c->refs = 1; /* the handle */
    c->next = l->conns;
    if (l->conns) l->conns->prev = c;
    l->conns = c;
    l->nconns++;
    l->stats.connections_current++; /* conn_close takes it back */
    int rc = uv_accept(server, (uv_stream_t *)&c->tcp);
    if (rc < 0) {
        MQR_LOG_W(MQR_LSN_LOG, "accept: %s", uv_strerror(rc));
        mqr__listener_conn_close(c, MQR_LCLOSE_HARD, 0, "accept failed");
        return;
    }
    l->stats.connections_total++;
    if (!connect_rate_take(l)) {
        l->stats.connects_rate_limited++;
        refuse_at_accept(c, "connect rate exceeded");
        return;
    }
    if (l->stats.connections_current > l->opts.max_connections) {
        l->stats.connects_over_limit++;
        if (l->stats.connections_current > l->opts.max_connections + MQR_LSN_OVER_SLACK) {
            refuse_at_accept(c, "too many connections");
            return;
        }
        c->over_limit = true; /* conn_start shortens its CONNECT deadline */
    }
    rc = mqr__listener_conn_start(c);
    if (rc < 0) mqr__listener_conn_close(c, MQR_LCLOSE_HARD, 0, "cannot start reading");
}

static int resolve(const char *host, int port, struct sockaddr_storage *ss)
{
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (uv_ip4_addr(host, port, a4) == 0) return 0;
    if (uv_ip6_addr(host, port, a6) == 0) return 0;
    /* a name: resolved once, synchronously, before the loop serves anyone */
    uv_getaddrinfo_t req;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    int rc = uv_getaddrinfo(NULL, &req, NULL, host, service, &hints);
    if (rc < 0) return rc;
    if (!req.addrinfo) return UV_EAI_NONAME;
    memcpy(ss, req.addrinfo->ai_addr, req.addrinfo->ai_addrlen);
    uv_freeaddrinfo(req.addrinfo);
    return 0;
}

int mqr__listener_start(mqr_engine_t *e, const char *host, int port, mqr_listener_t **out)
{
    return mqr__listener_start_opts(e, host, port, NULL, out);
}

int mqr__listener_start_opts(mqr_engine_t *e, const char *host, int port,
                             const mqr_listener_options_t *opts, mqr_listener_t **out)
{
    return mqr__listener_start_tp(e, host, port == 0 ? 1883 : port, opts, NULL, false, out);
}

int mqr__listener_start_tp(mqr_engine_t *e, const char *host, int port,
                           const mqr_listener_options_t *opts, struct ssl_ctx_st *ssl_ctx, bool ws,
                           mqr_listener_t **out)
{
    *out = NULL;
    if (!host) host = "127.0.0.1";
    if (port < 0 || port > 65535) return MQR_EINVAL;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    int rc = resolve(host, port, &ss);
    if (rc < 0) return rc;

    mqr_listener_t *l = calloc(1, sizeof *l);
    if (!l) return MQR_ENOMEM;
    l->e = e;
    l->all = mqr__engine_listeners(e);
    normalize(&l->opts, opts);
    snprintf(l->host, sizeof l->host, "%s", host);
    l->rbuf = malloc(MQR_LSN_RBUF_SIZE);
    if (ssl_ctx || ws) {
        l->tbuf = malloc(MQR_LSN_TBUF_SIZE);
        l->wsbuf = ws ? malloc(MQR_LSN_TBUF_SIZE) : NULL;
    }
    if (!l->rbuf || ((ssl_ctx || ws) && !l->tbuf) || (ws && !l->wsbuf)) {
        free(l->rbuf);
        free(l->tbuf);
        free(l->wsbuf);
        free(l);
        return MQR_ENOMEM;
    }

    uv_tcp_init(l->all->loop, &l->server);
    l->server.data = l;
    l->open_handles = 1;
    rc = uv_tcp_bind(&l->server, (const struct sockaddr *)&ss, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&l->server, SOMAXCONN, on_connection);
    if (rc < 0) {
        l->closing = true;
        uv_close((uv_handle_t *)&l->server, on_handle_closed);
        return rc;
    }
    /* owned from here on: freed with the listener */
    l->ssl_ctx = ssl_ctx;
    l->ws = ws;
    l->e_next = l->all->first;
    l->all->first = l;
    l->linked = true;
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    l->port = port;
    if (uv_tcp_getsockname(&l->server, (struct sockaddr *)&bound, &blen) == 0)
        l->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                    : ((struct sockaddr_in *)&bound)->sin_port);

    uv_check_init(l->all->loop, &l->check);
    uv_idle_init(l->all->loop, &l->idle);
    uv_timer_init(l->all->loop, &l->timer);
    l->check.data = l->idle.data = l->timer.data = l;
    l->open_handles += 3;
    uv_check_start(&l->check, on_check);
    uv_unref((uv_handle_t *)&l->check);
    uv_unref((uv_handle_t *)&l->idle);
    uv_timer_start(&l->timer, on_tick, MQR_LSN_TICK_MS, MQR_LSN_TICK_MS);
    uv_unref((uv_handle_t *)&l->timer);
    l->start_ms = l->conn_ms = uv_now(l->all->loop);
    l->conn_tokens = (uint64_t)l->opts.connect_burst * MQR_LSN_TOKEN;
    mqr__listener_sys_start(l);
    rc = mqr__client_session_start(l);
    if (rc < 0) {
        mqr__listener_close(l);
        return rc;
    }

    MQR_LOG_I(MQR_LSN_LOG, "listening on %s:%d%s (max packet %zu bytes, in-flight %u, queue %u)",
              host, l->port, ssl_ctx ? (ws ? " (wss)" : " (tls)") : (ws ? " (ws)" : ""),
              l->opts.max_packet_size, l->opts.max_inflight, l->opts.max_queued);
    *out = l;
    return 0;
}

void mqr__listener_close(mqr_listener_t *l)
{
    if (!l || l->closing) return;
    l->closing = true;
    if (l->linked) {
        for (mqr_listener_t **pp = &l->all->first; *pp; pp = &(*pp)->e_next) {
            if (*pp == l) {
                *pp = l->e_next;
                break;
            }
        }
        l->linked = false;
    }
    mqr_lconn_t *next;
    for (mqr_lconn_t *c = l->conns; c; c = next) {
        next = c->next;
        if (c->state == MQR_LCONN_ACTIVE && c->version == MQR_MQTT_V5 && !c->eof) {
            /* best effort: one try, the loop may not run again for us */
            mqr__listener_send_disconnect(c, MQR_MQTT_RC_SERVER_SHUTTING_DOWN);
            mqr__listener_out_flush(c);
        }
        c->will_publish = false; /* no one left to route it to */
        mqr__listener_conn_close(c, MQR_LCLOSE_HARD, 0, "server shutting down");
    }
    l->dirty = NULL;
    mqr__listener_process_resumed(l); /* closing: only their references go */
    mqr__client_session_stop(l);      /* offline sessions leave the router; their rows stay */
    uv_close((uv_handle_t *)&l->server, on_handle_closed);
    uv_close((uv_handle_t *)&l->check, on_handle_closed);
    uv_close((uv_handle_t *)&l->idle, on_handle_closed);
    uv_close((uv_handle_t *)&l->timer, on_handle_closed);
    mqr__listener_sys_stop(l, on_handle_closed);
    MQR_LOG_I(MQR_LSN_LOG, "closed %s:%d", l->host, l->port);
}

int mqr__listener_port(const mqr_listener_t *l)
{
    return l->port;
}

const mqr_listener_stats_t *mqr__listener_stats(const mqr_listener_t *l)
{
    return &l->stats;
}

const char *mqr__listener_type_name(int type)
{
    static const char *const names[16] = {
        "RESERVED", "CONNECT",  "CONNACK",    "PUBLISH", "PUBACK",      "PUBREC",
        "PUBREL",   "PUBCOMP",  "SUBSCRIBE",  "SUBACK",  "UNSUBSCRIBE", "UNSUBACK",
        "PINGREQ",  "PINGRESP", "DISCONNECT", "AUTH",
    };
    return type >= 0 && type < 16 ? names[type] : "?";
}
