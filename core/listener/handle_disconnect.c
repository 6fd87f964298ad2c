/*
 * handle_disconnect.c — DISCONNECT from a client: the connection ends
 * normally, so the will is dropped, unless a v5 client asks for it with
 * reason 0x04 (5.0 §3.14.2.1). It never answers: the server sends nothing
 * after a client's DISCONNECT.
 */
#include "listener_int.h"

int mqr__listener_handle_disconnect(mqr_lconn_t *c, uint8_t *pkt, size_t len)
{
    mqr_mqtt_disconnect_t d;
    int rc = mqr__mqtt_decode_disconnect(pkt, len, c->version, MQR_MQTT_FROM_CLIENT, &d);
    if (rc < 0) return rc;
    if (d.has_session_expiry && d.session_expiry && !c->session_expiry) {
        /* 5.0 §3.14.2.2.2 [MQTT-3.14.2-2] */
        return mqr__listener_conn_fail(c, MQR_MQTT_RC_PROTOCOL_ERROR,
                                       "session expiry set at DISCONNECT");
    }
    if (d.has_session_expiry) {
        /* 5.0 §3.14.2.2.2: the session now ends (0) or lasts as told */
        c->session_expiry = d.session_expiry;
        c->persistent = d.session_expiry > 0;
    }
    c->will_publish = c->version == MQR_MQTT_V5 && d.reason == MQR_MQTT_RC_DISCONNECT_WITH_WILL;
    const char *why = "DISCONNECT";
    if (c->will_publish) {
        why = "DISCONNECT with will";
    } else if (d.reason >= 0x80) {
        why = "DISCONNECT with an error";
        MQR_LOG_I(MQR_LSN_LOG, "client %s disconnects with reason 0x%02X%s%.*s", c->client_id,
                  d.reason, d.reason_string.p ? ": " : "", (int)d.reason_string.len,
                  d.reason_string.p ? d.reason_string.p : "");
    }
    mqr__listener_conn_close(c, MQR_LCLOSE_HARD, 0, why);
    return 0;
}
