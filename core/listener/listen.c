/*
 * listen.c — the public face of listeners (mqr_engine_listen and friends in
 * mqrouter.h): turns a mqr_listen_options_t into a TLS context and the
 * listener's own options, and starts it.
 *
 * The TLS context is built (certificate, key, CA read from disk) before the
 * socket is bound, so a bad file fails the call with the reason and leaves
 * nothing open. It must not keep pointers into the caller's options.
 */
#include "listener_int.h"

#include "errmsg.h"

#include "abi.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>

void mqr_listen_options_init_sized(mqr_listen_options_t *o, size_t size)
{
    mqr_listen_options_t def;
    memset(&def, 0, sizeof def);
    mqr__abi_init(o, size, &def, sizeof def);
}

int mqr_engine_listen(mqr_engine_t *e, const mqr_listen_options_t *o, mqr_listener_t **out,
                      char **errmsg)
{
    *out = NULL;
    if (errmsg) *errmsg = NULL;
    /* the caller's struct over zeros (every default): a smaller (older) one
     * leaves the newer fields at their defaults (abi.h) */
    mqr_listen_options_t copy;
    memset(&copy, 0, sizeof copy);
    /* the oldest layout read: before the rate limits and anonymous access */
    int arc = o ? mqr__abi_copy(&copy, sizeof copy, offsetof(mqr_listen_options_t, max_qos), o)
                : MQR_EINVAL;
    if (arc < 0) {
        mqr__errmsg(errmsg, "options struct too %s (built against another version?)",
                    arc == MQR_ETOOLARGE ? "large" : "small");
        return arc;
    }
    o = &copy;
    if (o->type < MQR_LISTEN_TCP || o->type > MQR_LISTEN_WSS || o->port < 0 || o->port > 65535) {
        mqr__errmsg(errmsg, "bad listener type or port");
        return MQR_EINVAL;
    }
    if (mqr__engine_stopping(e)) {
        mqr__errmsg(errmsg, "the engine is stopping");
        return MQR_ECLOSED;
    }
    bool tls = o->type == MQR_LISTEN_TLS || o->type == MQR_LISTEN_WSS;
    bool ws = o->type == MQR_LISTEN_WS || o->type == MQR_LISTEN_WSS;
    const char *host = o->host ? o->host : "127.0.0.1";
    struct ssl_ctx_st *ctx = NULL;
    if (tls) {
        char why[512];
        int rc = mqr__ltls_ctx_new(o->cert_file, o->key_file, o->ca_file,
                                   o->require_client_cert != 0, &ctx, why, sizeof why);
        if (rc < 0) {
            mqr__errmsg(errmsg, "listener %s:%d: %s", host, o->port, why);
            return rc;
        }
    } else if (o->cert_file || o->key_file || o->ca_file || o->require_client_cert) {
        mqr__errmsg(errmsg, "listener %s:%d: certificates are for tls and wss listeners", host,
                    o->port);
        return MQR_EINVAL;
    }
    if (mqr__engine_check_only(e)) {
        /* checked what can be checked without taking the port */
        if (ctx) mqr__ltls_ctx_free(ctx);
        return 0;
    }
    mqr_listener_options_t lo;
    memset(&lo, 0, sizeof lo); /* zeros: the defaults */
    lo.max_packet_size = o->max_packet_size;
    lo.max_connections = o->max_connections;
    lo.max_inflight = o->max_inflight;
    lo.max_queued = o->max_queued;
    lo.max_out_bytes = o->max_out_bytes;
    lo.receive_max = o->receive_max;
    lo.topic_alias_max = o->topic_alias_max;
    lo.max_subscriptions = o->max_subscriptions;
    lo.connect_timeout_ms = o->connect_timeout_ms;
    lo.max_keepalive = o->max_keepalive;
    lo.max_qos = o->max_qos;
    lo.publish_rate = o->publish_rate;
    lo.publish_burst = o->publish_burst;
    lo.connect_rate = o->connect_rate;
    lo.connect_burst = o->connect_burst;
    lo.stuck_timeout_ms = o->stuck_timeout_ms;
    lo.sys_interval_ms = o->sys_interval_ms;
    lo.allow_anonymous = o->allow_anonymous;
    lo.v311_session_expiry_s = o->v311_session_expiry_s;
    int rc = mqr__listener_start_tp(e, host, o->port, &lo, ctx, ws, out);
    if (rc < 0) {
        if (ctx) mqr__ltls_ctx_free(ctx);
        mqr__errmsg(errmsg, "cannot listen on %s:%d: %s", host, o->port, mqr_strerror(rc));
        return rc;
    }
    return 0;
}

int mqr_listener_port(const mqr_listener_t *l)
{
    return l->port;
}

void mqr_listener_close(mqr_listener_t *l)
{
    mqr__listener_close(l);
}
