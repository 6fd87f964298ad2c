/*
 * topic_map.h — level mapping between two topic spaces, for rewriting topics
 * on their way between the engine and an upstream broker.
 *
 * A map is an ordered list of rules (local pattern, remote pattern). A
 * pattern is an MQTT filter; both sides of a rule have the same number of
 * '+' and either both end in '#' or neither does. Applying the map to a name
 * finds the first rule whose pattern on that side matches it: the levels the
 * '+' matched and what the '#' matched fill the other side's wildcards in
 * order ("sensors/+/temp" <-> "site-1/+/temperature": "sensors/a/temp" ->
 * "site-1/a/temperature", and back). A filter is mapped the same way with
 * its own wildcards taken as level names, so "sensors/+/temp" subscribes
 * "site-1/+/temperature".
 */
#ifndef MQR_TOPIC_MAP_H
#define MQR_TOPIC_MAP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct mqr_topic_map mqr_topic_map_t;

typedef enum {
    MQR_MAP_TO_REMOTE = 0, /* local name -> remote name */
    MQR_MAP_TO_LOCAL = 1,  /* remote name -> local name */
} mqr_map_dir_t;

/* pairs holds n rules as 2n strings: local, remote, local, remote, ...
 * (copied). Returns 0, MQR_EINVAL with *why (static text) and *bad_rule
 * (0-based) for a rule that is not valid, or MQR_ENOMEM. */
int mqr__topic_map_new(const char *const *pairs, size_t n, mqr_topic_map_t **out, const char **why,
                       size_t *bad_rule);
void mqr__topic_map_free(mqr_topic_map_t *m);

/* The mapped name (malloc'd; the caller frees it), or NULL when no rule
 * matches (then *oom tells an allocation failure from that). */
char *mqr__topic_map_apply(const mqr_topic_map_t *m, mqr_map_dir_t dir, const char *name,
                           bool *oom);

#endif
