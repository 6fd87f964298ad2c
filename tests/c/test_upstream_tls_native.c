/*
 * test_upstream_tls_native.c — test_upstream_tls.c's TLS sessions (right
 * CA and client certificate, encrypted key, wrong CA, no client
 * certificate, host name checks, unreadable files) on the native
 * transport (core/mqttc's TLS) instead of Paho's.
 */
#define UP_TEST_TRANSPORT "native"
#include "test_upstream_tls.c"
