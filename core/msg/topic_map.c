/*
 * topic_map.c — the rules of topic_map.h. Patterns are kept split into
 * levels; applying a rule walks the name's levels against one side and
 * writes the other side with the captured levels. Rules are few (a handful
 * per session), so they are tried in order.
 */
#include "topic_map.h"

#include "mqrouter.h"
#include "topic.h"

#include <stdlib.h>
#include <string.h>

#define MAX_LEVELS 64

typedef struct {
    char *text; /* the pattern, levels NUL-separated in place */
    const char *lv[MAX_LEVELS];
    size_t n;
    size_t plus; /* number of '+' levels */
    bool hash;   /* ends in '#' */
} pattern_t;

typedef struct {
    pattern_t side[2]; /* [MQR_MAP_TO_REMOTE] local, [MQR_MAP_TO_LOCAL] remote: the side matched */
} rule_t;

struct mqr_topic_map {
    size_t n;
    rule_t rules[];
};

static int split(const char *s, pattern_t *p)
{
    size_t len = strlen(s);
    if (!(p->text = malloc(len + 1))) return MQR_ENOMEM;
    memcpy(p->text, s, len + 1);
    p->n = 0;
    p->plus = 0;
    p->hash = false;
    char *c = p->text;
    for (;;) {
        if (p->n == MAX_LEVELS) return MQR_EINVAL;
        p->lv[p->n++] = c;
        char *slash = strchr(c, '/');
        if (!slash) break;
        *slash = '\0';
        c = slash + 1;
    }
    for (size_t i = 0; i < p->n; i++) {
        if (strcmp(p->lv[i], "+") == 0) p->plus++;
        if (strcmp(p->lv[i], "#") == 0) p->hash = true;
    }
    return 0;
}

int mqr__topic_map_new(const char *const *pairs, size_t n, mqr_topic_map_t **out, const char **why,
                       size_t *bad_rule)
{
    *out = NULL;
    *why = NULL;
    mqr_topic_map_t *m = calloc(1, sizeof *m + n * sizeof m->rules[0]);
    if (!m) return MQR_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        rule_t *r = &m->rules[i];
        m->n = i + 1;
        *bad_rule = i;
        for (int sd = 0; sd < 2; sd++) {
            const char *s = pairs[2 * i + (size_t)sd];
            if (!s || mqr__topic_filter_validate(s, strlen(s)) < 0) {
                *why = "a pattern is not a valid topic filter";
                mqr__topic_map_free(m);
                return MQR_EINVAL;
            }
            int rc = split(s, &r->side[sd]);
            if (rc < 0) {
                *why = rc == MQR_ENOMEM ? NULL : "a pattern has too many levels";
                mqr__topic_map_free(m);
                return rc;
            }
        }
        if (r->side[0].plus != r->side[1].plus || r->side[0].hash != r->side[1].hash) {
            *why = "both patterns of a rule need the same '+' and '#' wildcards";
            mqr__topic_map_free(m);
            return MQR_EINVAL;
        }
    }
    *out = m;
    return 0;
}

void mqr__topic_map_free(mqr_topic_map_t *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->n; i++)
        for (int sd = 0; sd < 2; sd++)
            free(m->rules[i].side[sd].text);
    free(m);
}

/* Matches name's levels against p; fills the captures (pointers into the
 * name's copy) and the '#' tail. */
static bool match(const pattern_t *p, const char *const *lv, size_t n, const char **caps,
                  const char **tail)
{
    size_t k = 0;
    *tail = NULL;
    for (size_t i = 0; i < p->n; i++) {
        const char *pl = p->lv[i];
        if (strcmp(pl, "#") == 0) {
            *tail = i < n ? lv[i] : NULL; /* "a/#" matches "a" too: no tail */
            return true;
        }
        if (i >= n) return false;
        if (strcmp(pl, "+") == 0)
            caps[k++] = lv[i];
        else if (strcmp(pl, lv[i]) != 0)
            return false;
    }
    return n == p->n;
}

char *mqr__topic_map_apply(const mqr_topic_map_t *m, mqr_map_dir_t dir, const char *name, bool *oom)
{
    *oom = false;
    if (!m || !name) return NULL;
    size_t len = strlen(name);
    char *copy = malloc(len + 1);
    if (!copy) {
        *oom = true;
        return NULL;
    }
    memcpy(copy, name, len + 1);
    const char *lv[MAX_LEVELS];
    size_t n = 0;
    for (char *c = copy;;) {
        if (n == MAX_LEVELS) {
            free(copy);
            return NULL;
        }
        lv[n++] = c;
        char *slash = strchr(c, '/');
        if (!slash) break;
        *slash = '\0';
        c = slash + 1;
    }
    char *out = NULL;
    for (size_t i = 0; i < m->n && !out; i++) {
        const pattern_t *from = &m->rules[i].side[dir];
        const pattern_t *to = &m->rules[i].side[1 - dir];
        const char *caps[MAX_LEVELS], *tail;
        if (!match(from, lv, n, caps, &tail)) continue;
        /* the '#' tail runs to the end of the name: its levels are joined
         * again from the original string */
        const char *tail_src = tail ? name + (tail - copy) : NULL;
        size_t need = 1;
        size_t k = 0;
        for (size_t j = 0; j < to->n; j++) {
            const char *t = to->lv[j];
            if (strcmp(t, "+") == 0)
                need += strlen(caps[k++]) + 1;
            else if (strcmp(t, "#") == 0)
                need += (tail_src ? strlen(tail_src) : 0) + 1;
            else
                need += strlen(t) + 1;
        }
        if (!(out = malloc(need))) {
            *oom = true;
            break;
        }
        char *w = out;
        k = 0;
        for (size_t j = 0; j < to->n; j++) {
            const char *t = to->lv[j];
            if (strcmp(t, "#") == 0) {
                if (!tail_src) { /* "a/#" matched "a": the other side ends there too */
                    if (w > out) w--;
                    break;
                }
                t = tail_src;
            } else if (strcmp(t, "+") == 0) {
                t = caps[k++];
            }
            size_t tl = strlen(t);
            memcpy(w, t, tl);
            w += tl;
            if (j + 1 < to->n) *w++ = '/';
        }
        *w = '\0';
    }
    free(copy);
    return out;
}
