/*
 * handle_ping.c — PINGREQ: answered with PINGRESP. The read itself already
 * refreshed the keep-alive clock (conn.c), so nothing else happens here.
 */
#include "listener_int.h"

int mqr__listener_handle_ping(mqr_lconn_t *c, uint8_t *pkt, size_t len)
{
    int rc = mqr__mqtt_decode_ping(pkt, len, c->version);
    if (rc < 0) return rc;
    if (mqr__listener_send_pingresp(c) < 0)
        return mqr__listener_conn_fail(c, MQR_MQTT_RC_UNSPECIFIED, "out of memory");
    return 0;
}
