/*
 * topic.h — MQTT topic names and topic filters: validation, shared
 * subscription parsing, and a plain filter/name matcher.
 *
 * Rules are those of MQTT 3.1.1 (4.7) and 5.0 (4.7, 4.8.2). Every function
 * here is pure: no allocation, no state, any thread. The matcher is the
 * reference the trie is tested against and serves one-off checks (retained
 * messages); it is not how the router matches. Nothing here knows about
 * subscribers or the trie.
 */
#ifndef MQR_TOPIC_H
#define MQR_TOPIC_H

#include "mqrouter.h"

#include <stdbool.h>
#include <stddef.h>

/* MQTT strings carry a two-byte length. */
#define MQR_TOPIC_MAX_LEN 65535

/* Returns 0 when t[0..len) is a valid topic name (what a PUBLISH carries):
 * non-empty, at most 65535 bytes, well-formed UTF-8 without U+0000, and no
 * '+' or '#'. Otherwise MQR_ETOPIC (structure), MQR_EUTF8 (encoding, NUL
 * included) or MQR_ETOOLARGE. When why is not NULL it receives a static,
 * human-readable reason on failure (e.g. "'#' must be the last level") and
 * NULL on success. */
int mqr__topic_name_check(const char *t, size_t len, const char **why);
int mqr__topic_name_validate(const char *t, size_t len);

/* Same for a plain topic filter (what a SUBSCRIBE carries): '+' must be a
 * whole level, '#' a whole level and the last one. "$share/..." is checked
 * as an ordinary filter here; use mqr__topic_filter_parse() where shared
 * subscriptions are meant. */
int mqr__topic_filter_check(const char *f, size_t len, const char **why);
int mqr__topic_filter_validate(const char *f, size_t len);

/* A filter split into its share group (MQTT 5 shared subscription) and the
 * filter to match. Pointers point into the parsed string. */
typedef struct {
    const char *group; /* NULL when not shared */
    size_t group_len;
    const char *filter; /* the filter to match: the part after "$share/<group>/", or all of it */
    size_t filter_len;
} mqr_topic_filter_t;

/* Validates f[0..len) as a filter that may be shared. A filter beginning
 * with "$share/" must read "$share/<ShareName>/<filter>": ShareName non-empty
 * without '/', '+' or '#', followed by a valid filter. Anything else is
 * checked as a plain filter (out->group = NULL). The whole string is subject
 * to the length and UTF-8 rules. Errors and why as for
 * mqr__topic_filter_check(); out is only written on success. */
int mqr__topic_filter_parse(const char *f, size_t len, mqr_topic_filter_t *out, const char **why);

/* True when the topic name matches the plain filter. Both are assumed
 * valid (a shared filter must be parsed first and its inner filter passed).
 * A name beginning with '$' is not matched by a filter beginning with '+' or
 * '#' [MQTT-4.7.2-1]; "a/#" matches "a"; '+' matches an empty level. */
bool mqr__topic_matches(const char *filter, size_t flen, const char *name, size_t nlen);

#endif
