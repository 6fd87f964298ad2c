/*
 * bench/trie.c — match throughput of the subscription trie with 1, 100 and
 * 10 000 filters installed, a mix of exact filters and wildcards shaped like
 * device telemetry ("devices/<id>/temp", "devices/<id>/#", "site/+/...").
 *
 * Topics: 70% "devices/<id>/temp", 20% "devices/<id>/humidity", 10%
 * "site/<id>/dev<k>/status", ids spread over the installed range.
 * Prints figures; it passes or fails nothing. Only the trie is timed: no
 * messages, no delivery, one reused match vector (as the router does).
 */
#include "trie.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NTOPICS 4096

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(uint32_t n)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (uint32_t)((rng * 0x2545F4914F6CDD1Dull) >> 32) % n;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void add(mqr_trie_t *t, const char *f)
{
    if (!mqr__trie_add(t, f, strlen(f), NULL, NULL)) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
}

/* Installs n filters: one "devices/+/temp", ~5% "devices/<id>/#", ~5%
 * "site/<id>/+/status", the rest "devices/<id>/temp". */
static void install(mqr_trie_t *t, int n)
{
    char buf[96];
    for (int i = 0; i < n; i++) {
        if (i == 0)
            snprintf(buf, sizeof buf, "devices/+/temp");
        else if (i % 20 == 1)
            snprintf(buf, sizeof buf, "devices/%d/#", i);
        else if (i % 20 == 2)
            snprintf(buf, sizeof buf, "site/%d/+/status", i);
        else
            snprintf(buf, sizeof buf, "devices/%d/temp", i);
        add(t, buf);
    }
    if (n >= 100) add(t, "$SYS/#"); /* never matched below: topics avoid '$' */
}

static void run(int nfilters)
{
    mqr_trie_t t;
    mqr__trie_init(&t);
    int ids = nfilters < 10 ? 10 : nfilters;
    install(&t, nfilters);

    char **topics = malloc(NTOPICS * sizeof *topics);
    size_t *lens = malloc(NTOPICS * sizeof *lens);
    if (!topics || !lens) exit(1);
    for (int i = 0; i < NTOPICS; i++) {
        char buf[96];
        uint32_t r = rnd(10);
        if (r < 7)
            snprintf(buf, sizeof buf, "devices/%u/temp", rnd((uint32_t)ids));
        else if (r < 9)
            snprintf(buf, sizeof buf, "devices/%u/humidity", rnd((uint32_t)ids));
        else
            snprintf(buf, sizeof buf, "site/%u/dev%u/status", rnd((uint32_t)ids), rnd(1000));
        topics[i] = strdup(buf);
        lens[i] = strlen(buf);
    }

    mqr_trie_matches_t m;
    mqr__trie_matches_init(&m);
    size_t found = 0;
    /* warm up, then time enough rounds to last a while */
    for (int i = 0; i < NTOPICS; i++) {
        mqr__trie_matches_reset(&m);
        mqr__trie_match(&t, topics[i], lens[i], &m);
    }
    long iters = 0;
    double t0 = now_s(), t1;
    do {
        for (int i = 0; i < NTOPICS; i++) {
            mqr__trie_matches_reset(&m);
            mqr__trie_match(&t, topics[i], lens[i], &m);
            found += m.count;
        }
        iters += NTOPICS;
        t1 = now_s();
    } while (t1 - t0 < 1.0);
    double ns = (t1 - t0) * 1e9 / (double)iters;
    printf("filters %6zu  %7.1f ns/match  %6.2f M matches/s  %.2f entries/match\n",
           mqr__trie_count(&t), ns, 1e3 / ns, (double)found / (double)iters);

    mqr__trie_matches_free(&m);
    for (int i = 0; i < NTOPICS; i++)
        free(topics[i]);
    free(topics);
    free(lens);
    mqr__trie_close(&t);
}

int main(void)
{
    run(1);
    run(100);
    run(10000);
    return 0;
}
