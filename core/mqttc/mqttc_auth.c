/*
 * mqttc_auth.c — MQTT 5.0 enhanced authentication from the client's side
 * (5.0 §4.12): the server's AUTH 0x18 while connecting is answered with
 * what cb->auth makes of it, the CONNACK's data (the server's proof) must
 * satisfy cb->auth, and mqr__mqttc_reauth() runs the same exchange again on
 * a live connection (AUTH 0x19 ... AUTH 0x00). The method's own messages
 * (SCRAM) are not known here. Must not: send anything without a method.
 */
#include "mqttc_int.h"

#include <stdlib.h>
#include <string.h>

/* AUTH with reason, our method and data, into the output. */
static int send_auth(mqr_mqttc_t *c, uint8_t reason, const uint8_t *data, size_t len)
{
    size_t mlen = strlen(c->auth_method);
    size_t cap = 6 + mlen + len;
    uint8_t *props = malloc(cap);
    if (!props) return MQR_ENOMEM;
    mqr_mqtt_pbuild_t b;
    mqr__mqtt_pb_init(&b, props, cap);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_AUTH_METHOD, c->auth_method, mlen);
    if (len) mqr__mqtt_pb_binary(&b, MQR_MQTT_PROP_AUTH_DATA, data, len);
    size_t plen;
    int rc = mqr__mqtt_pb_finish(&b, &plen);
    mqr_mqtt_auth_t a = {.reason = reason, .props = {props, (uint32_t)plen}};
    size_t n = 0;
    if (rc == 0) rc = mqr__mqtt_encode_auth(&a, c->version, NULL, 0, &n);
    uint8_t *w = rc == 0 ? mqr__mqttc_out_reserve(c, n) : NULL;
    if (rc == 0 && !w) rc = MQR_ENOMEM;
    if (rc == 0) rc = mqr__mqtt_encode_auth(&a, c->version, w, n, &n);
    if (rc == 0) mqr__mqttc_out_commit(c, n);
    free(props);
    return rc;
}

/* The server's data through cb->auth; false when the connection ended. */
static bool ask(mqr_mqttc_t *c, int step, const mqr_mqtt_bin_t *data)
{
    uint8_t *out = NULL;
    size_t out_len = 0;
    int rc = c->freed ? MQR_ECLOSED : c->cb.auth(c->ud, step, data->p, data->len, &out, &out_len);
    if (c->st == MQTTC_CLOSED) { /* the callback freed or disconnected us */
        free(out);
        return false;
    }
    if (rc == 0 && step == MQR_MQTTC_AUTH_CONTINUE) {
        rc = out_len > UINT16_MAX ? MQR_ETOOLARGE
                                  : send_auth(c, MQR_MQTT_RC_CONTINUE_AUTH, out, out_len);
    }
    free(out);
    if (rc < 0) {
        mqr__mqttc_fail(c, rc, 0, "enhanced authentication failed on our side");
        return false;
    }
    return true;
}

void mqr__mqttc_on_auth(mqr_mqttc_t *c, const uint8_t *pkt, size_t len)
{
    mqr_mqtt_auth_t a;
    int rc = mqr__mqtt_decode_auth(pkt, len, c->version, &a);
    if (rc) {
        mqr__mqttc_fail(c, rc, 0, "bad AUTH");
        return;
    }
    /* 5.0 §4.12: the same method throughout */
    if (a.auth_method.len != strlen(c->auth_method) ||
        memcmp(a.auth_method.p, c->auth_method, a.auth_method.len) != 0) {
        mqr__mqttc_fail(c, MQR_EPROTOCOL, 0, "AUTH with another method");
        return;
    }
    if (a.reason == MQR_MQTT_RC_CONTINUE_AUTH) {
        ask(c, MQR_MQTTC_AUTH_CONTINUE, &a.auth_data);
    } else if (a.reason == 0 && c->reauth_on) {
        c->reauth_on = false;
        if (ask(c, MQR_MQTTC_AUTH_DONE, &a.auth_data) == false) return;
    } else {
        mqr__mqttc_fail(c, MQR_EPROTOCOL, 0, "unexpected AUTH reason");
    }
}

bool mqr__mqttc_auth_connack(mqr_mqttc_t *c, const mqr_mqtt_connack_t *a)
{
    if (a->auth_method.len != strlen(c->auth_method) ||
        memcmp(a->auth_method.p, c->auth_method, a->auth_method.len) != 0) {
        mqr__mqttc_fail(c, MQR_EPROTOCOL, 0, "CONNACK without our authentication method");
        return false;
    }
    return ask(c, MQR_MQTTC_AUTH_DONE, &a->auth_data);
}

int mqr__mqttc_reauth(mqr_mqttc_t *c, const uint8_t *data, size_t len)
{
    if (c->st != MQTTC_UP) return MQR_ENOTCONN;
    if (!c->auth_method || c->reauth_on || len > UINT16_MAX) return MQR_EINVAL;
    int rc = send_auth(c, MQR_MQTT_RC_REAUTHENTICATE, data, len);
    if (rc == 0) c->reauth_on = true;
    return rc;
}
