/*
 * test_upstream_on_native.c — test_upstream.c's sessions (receive,
 * publish, reconnect with buffer, drop_oldest, close while connecting, a
 * host's loop, bad configuration, v5 properties, expiry, subscribers that
 * cannot keep a message) on the native transport instead of Paho's.
 */
#define UP_TEST_TRANSPORT "native"
/* The Paho-only tests are compiled, not run. */
#pragma GCC diagnostic ignored "-Wunused-function"
#include "test_upstream.c"
