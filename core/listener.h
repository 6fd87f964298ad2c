/*
 * listener.h — the embedded MQTT 3.1.1/5.0 server.
 *
 * Accepts TCP clients on the engine's loop, speaks MQTT through the pure
 * codec in core/mqtt/, and is a subscriber of the router like any other:
 * each client's subscriptions are trie entries.
 */
#ifndef MQR_LISTENER_H
#define MQR_LISTENER_H

#include "engine.h"

int mqr__listener_start(mqr_engine_t *e, const char *host, int port, mqr_listener_t **out);
/* Closes the listening socket and every client (handles close asynchronously;
 * the memory goes when the loop has run their close callbacks). */
void mqr__listener_close(mqr_listener_t *l);
/* The port actually bound (useful with port 0... not supported: 0 means 1883). */
int mqr__listener_port(const mqr_listener_t *l);

#endif
