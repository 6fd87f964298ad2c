/*
 * hash.h — FNV-1a over bytes, for the hash maps keyed by strings (client
 * ids, topic aliases): short keys, no adversary that could choose
 * collisions cheaply enough to matter behind the maps' own limits.
 */
#ifndef MQR_HASH_H
#define MQR_HASH_H

#include <stddef.h>
#include <stdint.h>

static inline uint64_t mqr__fnv1a64(const void *p, size_t len)
{
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) {
        h ^= s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static inline uint32_t mqr__fnv1a32(const void *p, size_t len)
{
    const unsigned char *s = p;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= s[i];
        h *= 16777619u;
    }
    return h;
}

#endif
