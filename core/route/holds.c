/*
 * holds.c — the list of sources one subscriber holds (holds.h).
 *
 * Lists are short (the publishers feeding one queue or session while it is
 * full): a linear search keeps a source from being held twice.
 */
#include "holds.h"

#include "mqrouter.h"

#include <stdlib.h>

int mqr__holds_add(mqr_holds_t *h, mqr_source_t *s)
{
    for (uint32_t i = h->n; i-- > 0;)
        if (h->v[i] == s) return 0;
    if (h->n == h->cap) {
        uint32_t cap = h->cap ? h->cap * 2 : 4;
        mqr_source_t **v = realloc(h->v, cap * sizeof *v);
        if (!v) return MQR_ENOMEM;
        h->v = v;
        h->cap = cap;
    }
    if (!s->hold(s)) return MQR_ECLOSED;
    h->v[h->n++] = s;
    return 1;
}

void mqr__holds_release(mqr_holds_t *h)
{
    /* detached first: a release may end in code that holds again */
    mqr_source_t **v = h->v;
    uint32_t n = h->n, cap = h->cap;
    *h = (mqr_holds_t){0};
    for (uint32_t i = 0; i < n; i++)
        v[i]->release(v[i]);
    if (!h->v) {
        h->v = v; /* the memory again, for the next time it fills */
        h->cap = cap;
    } else {
        free(v);
    }
}

void mqr__holds_free(mqr_holds_t *h)
{
    mqr__holds_release(h);
    free(h->v);
    h->v = NULL;
    h->cap = 0;
}
