/*
 * hash.h — hashes for the maps keyed by strings: FNV-1a over bytes (client
 * ids, topic aliases) and a word-at-a-time mix for the per-publish paths
 * (trie levels, the topic registry), where FNV's byte loop showed in
 * profiles. Short keys, no adversary that could choose collisions cheaply
 * enough to matter behind the maps' own limits.
 */
#ifndef MQR_HASH_H
#define MQR_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

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

/* Eight bytes per step, the tail zero-padded, then a final avalanche. */
static inline uint32_t mqr__hash_words(const void *p, size_t n)
{
    const char *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
        h ^= h >> 31;
        s += 8;
        n -= 8;
    }
    if (n) {
        uint64_t w = 0;
        memcpy(&w, s, n);
        h = (h ^ w) * 0x94D049BB133111EBull;
        h ^= h >> 29;
    }
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 32;
    return (uint32_t)h;
}

#endif
