/*
 * api_upstream.c — the public upstream-session API (mqrouter.h, "upstream
 * sessions"): thin wrappers over core/upstream/upstream.h for C hosts.
 *
 * It maps public options onto the internal configuration (checking the TLS
 * side first, so the host gets the reason in *errmsg) and copies topic and
 * payload into a message to send. Must not: keep state of its own or call
 * Paho directly (upstream.c and its siblings own every session).
 */
#include "abi.h"

#include "errmsg.h"
#include "engine.h"
#include "message.h"
#include "topic.h"
#include "upstream.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(MQR_SESSION_CONNECTING == (int)MQR_UPSTREAM_CONNECTING &&
                   MQR_SESSION_CONNECTED == (int)MQR_UPSTREAM_CONNECTED &&
                   MQR_SESSION_DISCONNECTED == (int)MQR_UPSTREAM_DISCONNECTED &&
                   MQR_SESSION_CLOSED == (int)MQR_UPSTREAM_CLOSED &&
                   MQR_SESSION_FAILED == (int)MQR_UPSTREAM_FAILED,
               "public session states mirror the internal ones");

void mqr_session_options_init_sized(mqr_session_options_t *o, size_t size)
{
    mqr_session_options_t def;
    memset(&def, 0, sizeof def);
    def.size = sizeof def;
    def.clean_start = 1;
    def.mqtt_version = 4;
    mqr__abi_init(o, size, &def, sizeof def);
}

int mqr_session_add(mqr_engine_t *e, const mqr_session_options_t *opts, mqr_session_t **out,
                    char **errmsg)
{
    if (out) *out = NULL;
    if (errmsg) *errmsg = NULL;
    if (!e || !opts || !out) {
        mqr__errmsg(errmsg, "engine, options and out are required");
        return MQR_EINVAL;
    }
    mqr_session_options_t o;
    mqr_session_options_init(&o);
    /* the oldest layout read: before transport was added */
    int rc = mqr__abi_copy(&o, sizeof o, offsetof(mqr_session_options_t, transport), opts);
    if (rc < 0) {
        mqr__errmsg(errmsg, "options struct too %s (built against another version?)",
                    rc == MQR_ETOOLARGE ? "large" : "small");
        return rc;
    }
    if (!o.name || !o.name[0] || !o.uri || !o.uri[0]) {
        mqr__errmsg(errmsg, "a session needs a name and a uri");
        return MQR_EINVAL;
    }
    mqr_upstream_tls_t tls = {
        .cafile = o.tls_cafile,
        .cert = o.tls_cert,
        .key = o.tls_key,
        .no_verify = o.tls_no_verify != 0,
    };
    bool has_tls = o.tls_cafile || o.tls_cert || o.tls_key || o.tls_no_verify;
    mqr_upstream_config_t cfg = {
        .name = o.name,
        .uri = o.uri,
        .client_id = o.client_id,
        .keepalive_s = o.keepalive_s,
        .clean_start = o.clean_start,
        .username = o.username,
        .password = o.password,
        .mqtt_version = o.mqtt_version,
        .max_buffered = o.max_buffered,
        .drop_oldest = o.drop_oldest,
        .tls = has_tls ? &tls : NULL,
        .session_expiry_s = -1,
        .retry_initial_s = o.retry_initial_s,
        .retry_max_s = o.retry_max_s,
        .max_reconnects = o.max_reconnects,
        .prefix = o.prefix,
        .persist = o.persist,
        .transport = o.transport,
        .max_buffered_bytes = o.max_buffered_bytes,
    };
    char why[512];
    rc = mqr__upstream_tls_check(&cfg, why, sizeof why);
    if (rc < 0) {
        mqr__errmsg(errmsg, "session '%s': %s", o.name, why);
        return rc;
    }
    rc = mqr__upstream_new(e, &cfg, out);
    if (rc < 0) {
        const char *what = rc == MQR_EEXIST   ? "a session of that name exists"
                           : rc == MQR_EINVAL ? "invalid options (uri, version, keepalive, ...)"
                                              : mqr_strerror(rc);
        mqr__errmsg(errmsg, "session '%s': %s", o.name, what);
    }
    return rc;
}

mqr_session_t *mqr_session_find(mqr_engine_t *e, const char *name)
{
    return e && name ? mqr__upstream_find(e, name) : NULL;
}

const char *mqr_session_name(const mqr_session_t *s)
{
    return mqr__upstream_name(s);
}

void mqr_session_remove(mqr_session_t *s)
{
    if (s) mqr__upstream_close(s);
}

int mqr_session_subscribe(mqr_session_t *s, const char *filter, int qos)
{
    if (!s || !filter) return MQR_EINVAL;
    if (qos < 0 || qos > 2) return MQR_EINVAL;
    return mqr__upstream_subscribe(s, filter, qos);
}

int mqr_session_unsubscribe(mqr_session_t *s, const char *filter)
{
    if (!s || !filter) return MQR_EINVAL;
    return mqr__upstream_unsubscribe(s, filter);
}

int mqr_session_publish(mqr_session_t *s, const char *topic, const void *payload, size_t len,
                        int qos, int retain)
{
    if (!s || !topic || (!payload && len)) return MQR_EINVAL;
    if (qos < 0 || qos > 2) return MQR_EQOS;
    size_t tlen = strlen(topic);
    int rc = mqr__topic_name_validate(topic, tlen);
    if (rc < 0) return rc;
    mqr_msg_init_t in = {
        .topic = topic,
        .topic_len = tlen,
        .payload = payload,
        .payload_len = len,
        .qos = qos,
        .retain = retain != 0,
        .origin = MQR_ORIGIN_C,
    };
    mqr_msg_t *m = mqr__msg_new(&in);
    if (!m) return MQR_ENOMEM;
    rc = mqr__upstream_publish(s, m);
    mqr_msg_unref(m);
    return rc;
}

int mqr_session_status(mqr_session_t *s, mqr_session_info_t *out)
{
    if (!s || !out || out->size < sizeof out->size) return MQR_EINVAL;
    mqr_upstream_status_t st;
    mqr__upstream_status(s, &st);
    mqr_session_info_t info = {
        .size = sizeof info,
        .state = (int)st.state,
        .ready = st.ready,
        .broker = st.broker ? st.broker : "",
        .last_error = st.last_error ? st.last_error : "",
        .connects = st.connects,
        .reconnects = st.reconnects,
        .connect_failures = st.connect_failures,
        .messages_sent = st.messages_sent,
        .messages_received = st.messages_received,
        .messages_dropped = st.messages_dropped,
        .buffered = st.buffered,
        .publish_full = st.publish_full,
        .publish_dropped = st.publish_dropped,
        .inflight = st.inflight,
        .subscriptions = st.subscriptions,
        .publishers_paused = st.publishers_paused,
    };
    size_t n = out->size < sizeof info ? out->size : sizeof info;
    memcpy((char *)out + sizeof info.size, (const char *)&info + sizeof info.size,
           n - sizeof info.size);
    return 0;
}

const char *mqr_session_state_name(int state)
{
    if (state < MQR_SESSION_CONNECTING || state > MQR_SESSION_FAILED) return "unknown";
    return mqr__upstream_state_name((mqr_upstream_state_t)state);
}
