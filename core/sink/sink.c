/*
 * sink.c — the part every egress client shares (sink.h): bounds, outcomes,
 * counters, up/down, secrets kept out of what is shown, and the engine's
 * list of sinks. Loop thread only. Must not: know any one client.
 */
#include "sink.h"

#include <stdio.h>
#include <string.h>

const char *mqr__sink_err_kind_name(mqr_sink_err_kind_t k)
{
    static const char *const names[MQR_SINK_ERR_KINDS_] = {"timeout", "connect", "server",
                                                           "request", "full",    "other"};
    return (unsigned)k < MQR_SINK_ERR_KINDS_ ? names[k] : "other";
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

void mqr__sink_init(mqr_sink_t *s, const char *kind, const char *name, const char *target,
                    uint32_t max_in_flight, uint32_t max_queued)
{
    memset(s, 0, sizeof *s);
    s->kind = kind;
    copy_str(s->name, sizeof s->name, name);
    mqr__sink_redact(target, s->target, sizeof s->target);
    s->max_in_flight = max_in_flight ? max_in_flight : 1;
    s->max_queued = max_queued;
}

int mqr__sink_admit(mqr_sink_t *s, bool *waits)
{
    return mqr__sink_admit_if(s, true, waits);
}

int mqr__sink_admit_if(mqr_sink_t *s, bool may_start, bool *waits)
{
    if (may_start && s->in_flight < s->max_in_flight) {
        s->in_flight++;
        *waits = false;
    } else if (s->queued < s->max_queued) {
        s->queued++;
        *waits = true;
    } else {
        s->errors[MQR_SINK_ERR_FULL]++;
        return MQR_EFULL;
    }
    s->requests++;
    return 0;
}

void mqr__sink_start_waiting(mqr_sink_t *s)
{
    if (s->queued) s->queued--;
    s->in_flight++;
}

void mqr__sink_done(mqr_sink_t *s, bool was_waiting, uint64_t ns, mqr_sink_outcome_t outcome,
                    mqr_sink_err_kind_t kind, const char *reason)
{
    if (was_waiting) {
        if (s->queued) s->queued--;
    } else if (s->in_flight) {
        s->in_flight--;
    }
    mqr__admin_hist_add(&s->latency, ns);
    if (outcome == MQR_SINK_OK) {
        s->ok++;
        return;
    }
    if (outcome == MQR_SINK_RETRY)
        s->retried++;
    else
        s->failed++;
    s->errors[(unsigned)kind < MQR_SINK_ERR_KINDS_ ? kind : MQR_SINK_ERR_OTHER]++;
    if (reason) copy_str(s->last_error, sizeof s->last_error, reason);
}

void mqr__sink_set_up(mqr_sink_t *s, bool up, const char *reason)
{
    if (s->up_known && s->up == up) return;
    s->up_known = true;
    s->up = up;
    if (!up && reason) copy_str(s->last_error, sizeof s->last_error, reason);
    if (s->on_state) s->on_state(s->state_arg, s, up, reason);
}

/* Appends n bytes of src to out (cap, *len so far), always NUL-terminated. */
static void put(char *out, size_t cap, size_t *len, const char *src, size_t n)
{
    if (*len + 1 >= cap) return;
    if (n > cap - 1 - *len) n = cap - 1 - *len;
    memcpy(out + *len, src, n);
    *len += n;
    out[*len] = '\0';
}

void mqr__sink_redact(const char *uri, char *out, size_t cap)
{
    if (!cap) return;
    out[0] = '\0';
    if (!uri) return;
    size_t len = 0;
    const char *p = uri;
    /* scheme://user:password@host → scheme://user:***@host */
    const char *scheme = strstr(p, "://");
    if (scheme) {
        const char *auth = scheme + 3;
        size_t host_end = strcspn(auth, "/?#");
        const char *at = memchr(auth, '@', host_end);
        if (at) {
            const char *colon = memchr(auth, ':', (size_t)(at - auth));
            if (colon) {
                put(out, cap, &len, p, (size_t)(colon + 1 - p));
                put(out, cap, &len, "***", 3);
                p = at;
            }
        }
    }
    /* password=secret (conninfo words, or URL query parameters) */
    while (*p) {
        const char *k = strstr(p, "password=");
        if (!k) break;
        bool word_start = k == uri || k[-1] == ' ' || k[-1] == '?' || k[-1] == '&' || k[-1] == '\t';
        put(out, cap, &len, p, (size_t)(k - p) + 9);
        p = k + 9;
        if (!word_start) continue;
        put(out, cap, &len, "***", 3);
        if (*p == '\'') { /* quoted: up to the closing quote, \' escapes */
            for (p++; *p && *p != '\''; p++)
                if (*p == '\\' && p[1]) p++;
            if (*p) p++;
        } else {
            p += strcspn(p, " \t&#");
        }
    }
    put(out, cap, &len, p, strlen(p));
}

void mqr__sinks_add(mqr_sinks_t *l, mqr_sink_t *s)
{
    s->prev = NULL;
    s->next = l->head;
    if (l->head) l->head->prev = s;
    l->head = s;
    l->count++;
}

void mqr__sinks_remove(mqr_sinks_t *l, mqr_sink_t *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else if (l->head == s)
        l->head = s->next;
    else
        return; /* not in the list */
    if (s->next) s->next->prev = s->prev;
    s->prev = s->next = NULL;
    l->count--;
}

mqr_sink_t *mqr__sinks_find(const mqr_sinks_t *l, const char *name)
{
    for (mqr_sink_t *s = l->head; s; s = s->next)
        if (strcmp(s->name, name) == 0) return s;
    return NULL;
}
