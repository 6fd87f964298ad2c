/*
 * topic.c — validation of topic names and filters, shared subscription
 * parsing, and the reference matcher.
 *
 * Name validation sits on the publish path, so it makes one UTF-8 pass and
 * one scan for wildcards. The reasons handed back are static strings meant
 * for people (the Lua API shows them); they must never carry the topic.
 * Nothing here allocates or keeps state.
 */
#include "topic.h"

#include "utf8.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define SHARE_PREFIX "$share/"
#define SHARE_PREFIX_LEN (sizeof SHARE_PREFIX - 1)

static int fail(const char **why, int err, const char *reason)
{
    if (why) *why = reason;
    return err;
}

/* The checks every MQTT string shares: length and encoding. */
static int check_string(const char *s, size_t len, const char **why)
{
    if (len == 0) return fail(why, MQR_ETOPIC, "topic is empty");
    if (len > MQR_TOPIC_MAX_LEN)
        return fail(why, MQR_ETOOLARGE, "topic is longer than 65535 bytes");
    if (!mqr__utf8_valid(s, len)) {
        /* The UTF-8 check also refuses NUL; say which it was, since a NUL
         * usually means a C string boundary went wrong, not bad encoding. */
        if (memchr(s, '\0', len))
            return fail(why, MQR_EUTF8, "topic contains a NUL character (U+0000)");
        return fail(why, MQR_EUTF8, "topic is not valid UTF-8");
    }
    return 0;
}

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/* Whether one of the eight bytes of w is zero (exact for "any"). */
static inline uint64_t zero_byte(uint64_t w)
{
    return (w - ONES) & ~w & HIGHS;
}

/* The usual topic name on the publish path, tested a word at a time:
 * ASCII with no NUL, '+' or '#'. False sends the caller to the full
 * checks, which also say what is wrong. */
static bool plain_name(const char *t, size_t len)
{
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, t + i, 8);
        if ((w & HIGHS) | zero_byte(w) | zero_byte(w ^ ('+' * ONES)) | zero_byte(w ^ ('#' * ONES)))
            return false;
    }
    for (; i < len; i++) {
        unsigned char c = (unsigned char)t[i];
        if (c == 0 || c >= 0x80 || c == '+' || c == '#') return false;
    }
    return true;
}

int mqr__topic_name_check(const char *t, size_t len, const char **why)
{
    if (why) *why = NULL;
    if (len > 0 && len <= MQR_TOPIC_MAX_LEN && plain_name(t, len)) return 0;
    int rc = check_string(t, len, why);
    if (rc < 0) return rc;
    for (size_t i = 0; i < len; i++) {
        if (t[i] == '+')
            return fail(why, MQR_ETOPIC,
                        "a topic name must not contain '+' (wildcards belong in filters)");
        if (t[i] == '#')
            return fail(why, MQR_ETOPIC,
                        "a topic name must not contain '#' (wildcards belong in filters)");
    }
    return 0;
}

int mqr__topic_name_validate(const char *t, size_t len)
{
    return mqr__topic_name_check(t, len, NULL);
}

/* Structure only: the caller has checked length and encoding. */
static int check_levels(const char *f, size_t len, const char **why)
{
    size_t start = 0; /* first byte of the current level */
    for (size_t i = 0; i < len; i++) {
        char c = f[i];
        if (c == '/') {
            start = i + 1;
        } else if (c == '+') {
            if (i != start || (i + 1 < len && f[i + 1] != '/'))
                return fail(why, MQR_ETOPIC,
                            "'+' must occupy a whole level (as in 'a/+/b', not 'a+')");
        } else if (c == '#') {
            if (i != start || (i + 1 < len && f[i + 1] != '/'))
                return fail(why, MQR_ETOPIC,
                            "'#' must occupy a whole level (as in 'a/#', not 'a#')");
            if (i + 1 < len) return fail(why, MQR_ETOPIC, "'#' must be the last level");
        }
    }
    return 0;
}

int mqr__topic_filter_check(const char *f, size_t len, const char **why)
{
    if (why) *why = NULL;
    int rc = check_string(f, len, why);
    if (rc < 0) return rc;
    return check_levels(f, len, why);
}

int mqr__topic_filter_validate(const char *f, size_t len)
{
    return mqr__topic_filter_check(f, len, NULL);
}

int mqr__topic_filter_parse(const char *f, size_t len, mqr_topic_filter_t *out, const char **why)
{
    if (why) *why = NULL;
    int rc = check_string(f, len, why);
    if (rc < 0) return rc;
    if (len < SHARE_PREFIX_LEN || memcmp(f, SHARE_PREFIX, SHARE_PREFIX_LEN) != 0) {
        rc = check_levels(f, len, why);
        if (rc < 0) return rc;
        out->group = NULL;
        out->group_len = 0;
        out->filter = f;
        out->filter_len = len;
        return 0;
    }
    const char *group = f + SHARE_PREFIX_LEN;
    size_t rest = len - SHARE_PREFIX_LEN;
    const char *slash = memchr(group, '/', rest);
    size_t glen = slash ? (size_t)(slash - group) : rest;
    if (glen == 0)
        return fail(why, MQR_ETOPIC,
                    "a shared subscription needs a share name "
                    "('$share/<name>/<filter>')");
    for (size_t i = 0; i < glen; i++)
        if (group[i] == '+' || group[i] == '#')
            return fail(why, MQR_ETOPIC, "a share name must not contain '+' or '#'");
    if (!slash || glen + 1 == rest)
        return fail(why, MQR_ETOPIC,
                    "a shared subscription needs a topic filter after the "
                    "share name ('$share/<name>/<filter>')");
    const char *inner = slash + 1;
    size_t ilen = rest - glen - 1;
    rc = check_levels(inner, ilen, why);
    if (rc < 0) return rc;
    out->group = group;
    out->group_len = glen;
    out->filter = inner;
    out->filter_len = ilen;
    return 0;
}

bool mqr__topic_matches(const char *filter, size_t flen, const char *name, size_t nlen)
{
    /* [MQTT-4.7.2-1]: wildcards at the first level do not reach '$' topics. */
    if (nlen > 0 && name[0] == '$' && flen > 0 && (filter[0] == '+' || filter[0] == '#'))
        return false;
    size_t fi = 0, ni = 0;
    for (;;) {
        /* Both sit at the start of a level. */
        if (fi < flen && filter[fi] == '#') return true;
        const char *fs = filter + fi;
        const char *fe = memchr(fs, '/', flen - fi);
        size_t fl = fe ? (size_t)(fe - fs) : flen - fi;
        const char *ns = name + ni;
        const char *ne = memchr(ns, '/', nlen - ni);
        size_t nl = ne ? (size_t)(ne - ns) : nlen - ni;
        if (!(fl == 1 && fs[0] == '+') && (fl != nl || memcmp(fs, ns, fl) != 0)) return false;
        fi += fl;
        ni += nl;
        if (fi == flen && ni == nlen) return true;
        if (fi == flen) return false; /* the name goes deeper than the filter */
        if (ni == nlen)               /* the filter goes deeper: only a final "/#" still fits */
            return flen - fi == 2 && filter[fi + 1] == '#';
        fi++; /* past the '/' on both sides */
        ni++;
    }
}
