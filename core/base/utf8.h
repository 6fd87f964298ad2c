/*
 * utf8.h — the UTF-8 check MQTT asks of every string on the wire.
 */
#ifndef MQR_UTF8_H
#define MQR_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* True when s[0..len) is well-formed UTF-8 (no overlong forms, no
 * surrogates, nothing above U+10FFFF) and holds no U+0000, as MQTT 3.1.1
 * [MQTT-1.5.3-1..2] and 5.0 [MQTT-1.5.4-1..2] require. */
bool mqr__utf8_valid(const char *s, size_t len);

#endif
