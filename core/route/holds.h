/*
 * holds.h — backpressure between an ingress and the subscribers it feeds.
 *
 * An ingress that can stop reading (a listener client) is a source. While
 * it routes a message, its source is in the publish context (router.h); a
 * subscriber with too much waiting (a listener client's full queue, an
 * upstream session's backlog) takes a hold on it instead of refusing the
 * message, and releases its holds when it has drained. A source held by
 * several subscribers reads again when the last one lets it go; counting
 * the holds is the source's business.
 */
#ifndef MQR_HOLDS_H
#define MQR_HOLDS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct mqr_source mqr_source_t;
struct mqr_source {
    /* Stops reading (the first hold) and keeps the source alive until the
     * matching release. false: it cannot be held (closing); nothing changed. */
    bool (*hold)(mqr_source_t *s);
    /* One hold over: reads again when it was the last. */
    void (*release)(mqr_source_t *s);
};

/* The sources one subscriber holds, each once. Zero it to start. */
typedef struct {
    mqr_source_t **v;
    uint32_t n, cap;
} mqr_holds_t;

/* Holds s for h unless h holds it already. Returns 1 when held now, 0 when
 * it was already, or a negative MQR_E* (no memory, or the source refused:
 * MQR_ECLOSED); then nothing is held and the caller takes the message as
 * it would without backpressure. */
int mqr__holds_add(mqr_holds_t *h, mqr_source_t *s);

/* Lets every held source go; h is empty after, its memory kept. */
void mqr__holds_release(mqr_holds_t *h);

/* Releases, then frees h's memory. */
void mqr__holds_free(mqr_holds_t *h);

#endif
