/*
 * inspect.c — one connected client's output and QoS state as tests and
 * diagnostics see it (listener.h), without their including the listener's
 * private header. Must not: change what it reads, except the socket's send
 * buffer when asked.
 */
#include "listener_int.h"

#include <string.h>

static mqr_lconn_t *conn_of(mqr_listener_t *l, const char *client_id)
{
    if (!client_id) return l->conns;
    return mqr__listener_id_find(l, client_id, strlen(client_id));
}

int mqr__listener_conn_info(mqr_listener_t *l, const char *client_id, mqr_listener_conn_info_t *out)
{
    const mqr_lconn_t *c = conn_of(l, client_id);
    if (!c) return MQR_ENOENT;
    *out = (mqr_listener_conn_info_t){
        .out_bytes = c->out_bytes,
        .locked_bytes = c->locked_bytes,
        .segments = c->seg_count,
        .segments_locked = c->seg_locked,
        .writing = c->writing,
        .read_paused = c->read_paused,
        .has_qos = c->qs != NULL,
        .inflight = c->qs ? c->qs->if_live : 0,
    };
    return 0;
}

int mqr__listener_conn_sndbuf(mqr_listener_t *l, const char *client_id, int bytes)
{
    mqr_lconn_t *c = conn_of(l, client_id);
    if (!c) return MQR_ENOENT;
    return uv_send_buffer_size((uv_handle_t *)&c->tcp, &bytes);
}
