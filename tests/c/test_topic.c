/*
 * test_topic.c — topic name and filter validation, shared subscription
 * parsing, and the reference matcher, against MQTT 3.1.1 / 5.0 rules.
 *
 * Tables give each input with its expected error code and a fragment of the
 * expected reason, so a check that starts accepting or misnaming something
 * fails here. No trie here: test_trie.c cross-checks it against the matcher.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "topic.h"

typedef struct {
    const char *s;
    size_t len; /* 0 = strlen(s); set for strings holding NUL */
    int rc;
    const char *why; /* fragment of the reason, NULL when valid */
} case_t;

#define OK(str)                                                                                    \
    {                                                                                              \
        str, 0, 0, NULL                                                                            \
    }
#define BAD(str, err, why)                                                                         \
    {                                                                                              \
        str, 0, err, why                                                                           \
    }

static size_t case_len(const case_t *c)
{
    return c->len ? c->len : strlen(c->s);
}

typedef int (*check_fn)(const char *, size_t, const char **);
typedef int (*validate_fn)(const char *, size_t);

static void run_cases(const case_t *cases, size_t n, check_fn check, validate_fn validate)
{
    for (size_t i = 0; i < n; i++) {
        const case_t *c = &cases[i];
        const char *why = "not reset";
        int rc = check(c->s, case_len(c), &why);
        if (rc != c->rc) fail_msg("case %zu '%s': got %d, want %d", i, c->s, rc, c->rc);
        assert_int_equal(validate(c->s, case_len(c)), c->rc);
        assert_int_equal(check(c->s, case_len(c), NULL), c->rc);
        if (!c->why) {
            assert_null(why);
        } else {
            assert_non_null(why);
            if (!strstr(why, c->why))
                fail_msg("case %zu '%s': reason '%s' lacks '%s'", i, c->s, why, c->why);
        }
    }
}

static const case_t names[] = {
    OK("a"),
    OK("/"),
    OK("//"),
    OK("a/b/c"),
    OK("a//b"),
    OK("/a"),
    OK("a/"),
    OK("$SYS/broker/load"),
    OK("$share/g/x"), /* a name, not a subscription: just a '$' topic */
    OK("with space/and-dash_und.dot"),
    OK("caf\xc3\xa9/\xc3\xbc"),                  /* é, ü */
    OK("\xe6\x97\xa5\xe6\x9c\xac/\xe8\xaa\x9e"), /* 日本/語 */
    OK("emoji/\xf0\x9f\x98\x80"),                /* U+1F600 */
    OK("\xef\xbf\xbf"),                          /* U+FFFF: a noncharacter, allowed */
    BAD("", MQR_ETOPIC, "empty"),
    BAD("a/+", MQR_ETOPIC, "'+'"),
    BAD("+", MQR_ETOPIC, "'+'"),
    BAD("a+b", MQR_ETOPIC, "'+'"),
    BAD("#", MQR_ETOPIC, "'#'"),
    BAD("a/#", MQR_ETOPIC, "'#'"),
    BAD("sport/tennis#", MQR_ETOPIC, "'#'"),
    {"a\0b", 3, MQR_EUTF8, "NUL"},
    {"\0", 1, MQR_EUTF8, "NUL"},
    BAD("\xff", MQR_EUTF8, "UTF-8"),
    BAD("a/\xc0\xaf", MQR_EUTF8, "UTF-8"),       /* overlong '/' */
    BAD("\xed\xa0\x80", MQR_EUTF8, "UTF-8"),     /* surrogate U+D800 */
    BAD("\xe2\x82", MQR_EUTF8, "UTF-8"),         /* truncated */
    BAD("\xf4\x90\x80\x80", MQR_EUTF8, "UTF-8"), /* above U+10FFFF */
    BAD("a\x80", MQR_EUTF8, "UTF-8"),            /* stray continuation */
};

static const case_t filters[] = {
    OK("#"),
    OK("+"),
    OK("/"),
    OK("a/#"),
    OK("/#"),
    OK("+/+"),
    OK("/+"),
    OK("+/"),
    OK("a/+/b"),
    OK("a//b"),
    OK("+/#"),
    OK("+//+"),
    OK("$SYS/#"),
    OK("$SYS/+/load"),
    OK("sport/tennis/player1/#"),
    OK("sport/+/player1"),
    OK("+/tennis/#"),
    OK("$share/g/x"), /* plain check: an ordinary '$' filter */
    OK("$share//x"),  /* plain check: empty levels are fine */
    OK("caf\xc3\xa9/+"),
    BAD("", MQR_ETOPIC, "empty"),
    BAD("a#", MQR_ETOPIC, "'#' must occupy a whole level"),
    BAD("#a", MQR_ETOPIC, "'#' must occupy a whole level"),
    BAD("sport/tennis#", MQR_ETOPIC, "'#' must occupy a whole level"),
    BAD("a/#/b", MQR_ETOPIC, "'#' must be the last level"),
    BAD("sport/tennis/#/ranking", MQR_ETOPIC, "'#' must be the last level"),
    BAD("#/", MQR_ETOPIC, "'#' must be the last level"),
    BAD("##", MQR_ETOPIC, "'#' must occupy a whole level"),
    BAD("#/#", MQR_ETOPIC, "'#' must be the last level"),
    BAD("a+", MQR_ETOPIC, "'+' must occupy a whole level"),
    BAD("+a", MQR_ETOPIC, "'+' must occupy a whole level"),
    BAD("++", MQR_ETOPIC, "'+' must occupy a whole level"),
    BAD("sport+", MQR_ETOPIC, "'+' must occupy a whole level"),
    BAD("a/b+/c", MQR_ETOPIC, "'+' must occupy a whole level"),
    BAD("+#", MQR_ETOPIC, "'+' must occupy a whole level"),
    BAD("a/+#", MQR_ETOPIC, "'+'"),
    {"a/\0/b", 5, MQR_EUTF8, "NUL"},
    BAD("a/\xfe", MQR_EUTF8, "UTF-8"),
    BAD("\xc3", MQR_EUTF8, "UTF-8"),
};

static void test_names(void **state)
{
    (void)state;
    run_cases(names, sizeof names / sizeof names[0], mqr__topic_name_check,
              mqr__topic_name_validate);
}

/* The word-at-a-time scan for plain names must see a wildcard, a NUL or
 * a non-ASCII byte at every position: in a word and in the tail. */
static void test_names_every_position(void **state)
{
    (void)state;
    for (size_t len = 1; len <= 24; len++) {
        for (size_t at = 0; at < len; at++) {
            char t[32];
            memset(t, 'a', len);
            const char *why = NULL;
            t[at] = '+';
            assert_int_equal(mqr__topic_name_check(t, len, &why), MQR_ETOPIC);
            t[at] = '#';
            assert_int_equal(mqr__topic_name_check(t, len, &why), MQR_ETOPIC);
            t[at] = '\0';
            assert_int_equal(mqr__topic_name_check(t, len, &why), MQR_EUTF8);
            t[at] = (char)0xC3; /* a lone lead byte: invalid UTF-8 */
            assert_int_equal(mqr__topic_name_check(t, len, &why), MQR_EUTF8);
            if (at + 1 < len) { /* "é" as two bytes: valid */
                t[at + 1] = (char)0xA9;
                assert_int_equal(mqr__topic_name_check(t, len, &why), 0);
                assert_null(why);
            }
        }
    }
}

static void test_filters(void **state)
{
    (void)state;
    run_cases(filters, sizeof filters / sizeof filters[0], mqr__topic_filter_check,
              mqr__topic_filter_validate);
}

/* Every plain filter case gives the same verdict through parse. */
static int parse_plain(const char *f, size_t len, const char **why)
{
    mqr_topic_filter_t p;
    int rc = mqr__topic_filter_parse(f, len, &p, why);
    if (rc == 0 && (strncmp(f, "$share/", 7) != 0)) {
        assert_null(p.group);
        assert_ptr_equal(p.filter, f);
        assert_int_equal(p.filter_len, len);
    }
    return rc;
}

static int parse_plain_validate(const char *f, size_t len)
{
    return parse_plain(f, len, NULL);
}

static void test_parse_plain(void **state)
{
    (void)state;
    static const case_t plain[] = {
        OK("#"),
        OK("a/+/b"),
        OK("$SYS/#"),
        OK("$share"),
        OK("$sharex/a"),
        OK("$shar/g/a"),
        BAD("a/#/b", MQR_ETOPIC, "last level"),
        BAD("", MQR_ETOPIC, "empty"),
        {"a\0", 2, MQR_EUTF8, "NUL"},
    };
    run_cases(plain, sizeof plain / sizeof plain[0], parse_plain, parse_plain_validate);
}

static void expect_share(const char *f, const char *group, const char *inner)
{
    mqr_topic_filter_t p = {0};
    const char *why = "x";
    int rc = mqr__topic_filter_parse(f, strlen(f), &p, &why);
    if (rc != 0) fail_msg("'%s' refused: %s", f, why ? why : "?");
    assert_null(why);
    assert_non_null(p.group);
    assert_int_equal(p.group_len, strlen(group));
    assert_memory_equal(p.group, group, p.group_len);
    assert_int_equal(p.filter_len, strlen(inner));
    assert_memory_equal(p.filter, inner, p.filter_len);
    /* pointers into f */
    assert_true(p.group > f && p.filter > p.group && p.filter + p.filter_len == f + strlen(f));
}

static void expect_share_bad(const char *f, size_t len, int err, const char *frag)
{
    mqr_topic_filter_t p = {.group = "untouched"};
    const char *why = NULL;
    int rc = mqr__topic_filter_parse(f, len, &p, &why);
    if (rc != err) fail_msg("'%s': got %d, want %d", f, rc, err);
    assert_string_equal(p.group, "untouched");
    assert_non_null(why);
    if (!strstr(why, frag)) fail_msg("'%s': reason '%s' lacks '%s'", f, why, frag);
}

static void test_parse_shared(void **state)
{
    (void)state;
    expect_share("$share/g/a/b", "g", "a/b");
    expect_share("$share/group1/#", "group1", "#");
    expect_share("$share/grp/+/x", "grp", "+/x");
    expect_share("$share/g/$SYS/#", "g", "$SYS/#");
    expect_share("$share/g//", "g", "/");
    expect_share("$share/g/+", "g", "+");
    expect_share("$share/$g/a", "$g", "a");
    expect_share("$share/caf\xc3\xa9/a", "caf\xc3\xa9", "a");

    expect_share_bad("$share//a", 9, MQR_ETOPIC, "share name");
    expect_share_bad("$share/", 7, MQR_ETOPIC, "share name");
    expect_share_bad("$share/g", 8, MQR_ETOPIC, "topic filter after the share name");
    expect_share_bad("$share/g/", 9, MQR_ETOPIC, "topic filter after the share name");
    expect_share_bad("$share/g+/a", 11, MQR_ETOPIC, "'+' or '#'");
    expect_share_bad("$share/+/a", 10, MQR_ETOPIC, "'+' or '#'");
    expect_share_bad("$share/#/a", 10, MQR_ETOPIC, "'+' or '#'");
    expect_share_bad("$share/g#", 9, MQR_ETOPIC, "'+' or '#'");
    expect_share_bad("$share/g/a#", 11, MQR_ETOPIC, "'#' must occupy a whole level");
    expect_share_bad("$share/g/#/a", 12, MQR_ETOPIC, "last level");
    expect_share_bad("$share/g/a+", 11, MQR_ETOPIC, "'+' must occupy");
    expect_share_bad("$share/g\xff/a", 11, MQR_EUTF8, "UTF-8");
    expect_share_bad("$share/g/a\0", 11, MQR_EUTF8, "NUL");
}

static char *filled(size_t len, char c)
{
    char *s = malloc(len + 1);
    assert_non_null(s);
    memset(s, c, len);
    s[len] = '\0';
    return s;
}

static void test_lengths(void **state)
{
    (void)state;
    const char *why;
    char *s = filled(65536, 'a');
    assert_int_equal(mqr__topic_name_check(s, 65535, &why), 0);
    assert_int_equal(mqr__topic_name_check(s, 65536, &why), MQR_ETOOLARGE);
    assert_non_null(strstr(why, "65535"));
    assert_int_equal(mqr__topic_filter_check(s, 65535, &why), 0);
    assert_int_equal(mqr__topic_filter_check(s, 65536, &why), MQR_ETOOLARGE);
    assert_int_equal(mqr__topic_filter_validate(s, 65536), MQR_ETOOLARGE);

    /* The limit is on bytes, not characters: 21845 three-byte chars = 65535. */
    char *u = malloc(65538);
    assert_non_null(u);
    for (size_t i = 0; i < 65538; i += 3)
        memcpy(u + i, "\xe2\x82\xac", 3); /* € */
    assert_int_equal(mqr__topic_name_validate(u, 65535), 0);
    assert_int_equal(mqr__topic_name_validate(u, 65538), MQR_ETOOLARGE);
    free(u);

    /* "+/+/.../+": 32768 levels in 65535 bytes. */
    for (size_t i = 0; i < 65535; i++)
        s[i] = i % 2 ? '/' : '+';
    assert_int_equal(mqr__topic_filter_validate(s, 65535), 0);
    s[65534] = '#';
    assert_int_equal(mqr__topic_filter_validate(s, 65535), 0);
    s[65532] = '#'; /* "#/#" at the end */
    assert_int_equal(mqr__topic_filter_validate(s, 65535), MQR_ETOPIC);

    /* A shared filter counts "$share/<g>/" against the same limit. */
    memset(s, 'a', 65536);
    memcpy(s, "$share/g/", 9);
    mqr_topic_filter_t p;
    assert_int_equal(mqr__topic_filter_parse(s, 65535, &p, &why), 0);
    assert_int_equal(p.filter_len, 65535 - 9);
    assert_int_equal(mqr__topic_filter_parse(s, 65536, &p, &why), MQR_ETOOLARGE);
    free(s);
}

typedef struct {
    const char *filter;
    const char *name;
    bool match;
} match_case_t;

static const match_case_t matches[] = {
    /* MQTT 3.1.1 4.7.1.2 */
    {"sport/tennis/player1/#", "sport/tennis/player1", true},
    {"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
    {"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
    {"sport/tennis/player1/#", "sport/tennis/player2", false},
    {"sport/tennis/player1/#", "sport/tennis", false},
    {"sport/#", "sport", true},
    {"#", "sport/tennis", true},
    {"#", "/", true},
    {"#", "a", true},
    /* 4.7.1.3 */
    {"sport/tennis/+", "sport/tennis/player1", true},
    {"sport/tennis/+", "sport/tennis/player2", true},
    {"sport/tennis/+", "sport/tennis/player1/ranking", false},
    {"sport/+", "sport", false},
    {"sport/+", "sport/", true},
    {"+/+", "/finance", true},
    {"/+", "/finance", true},
    {"+", "/finance", false},
    {"+/+", "/", true},
    {"+", "/", false},
    {"/+", "/", true},
    {"+/", "/", true},
    {"+", "a", true},
    /* 4.7.2: '$' topics */
    {"#", "$SYS/x", false},
    {"#", "$SYS", false},
    {"+/x", "$SYS/x", false},
    {"+", "$SYS", false},
    {"+/#", "$SYS/monitor/Clients", false},
    {"$SYS/#", "$SYS/x", true},
    {"$SYS/#", "$SYS", true},
    {"$SYS/monitor/+", "$SYS/monitor/Clients", true},
    {"$SYS/+", "$SYS/x", true},
    {"+/x", "a/x", true},
    {"+/x", "a/$x", false},
    {"a/+", "a/$x", true}, /* '$' matters only at the first level */
    {"a/#", "a/$x", true},
    /* empty levels */
    {"a//b", "a//b", true},
    {"a/+/b", "a//b", true},
    {"a/+/b", "a/b", false},
    {"a/b", "a//b", false},
    {"a/#", "a//", true},
    {"/#", "/", true},
    {"/#", "/a/b", true},
    {"/#", "a", false},
    {"//", "//", true},
    {"+/+/+", "//", true},
    {"+/+", "//", false},
    {"#", "//", true},
    /* '#' matching its parent needs the parent level itself */
    {"a/#", "a", true},
    {"a/#", "ab", false},
    {"a/#", "a/", true},
    {"a/+/#", "a", false},
    {"a/+/#", "a/b", true},
    {"a/+/#", "a/b/c/d", true},
    /* exact */
    {"a/b", "a/b", true},
    {"a/b", "a/bc", false},
    {"a/bc", "a/b", false},
    {"a/b", "a/b/", false},
    {"a/b/", "a/b", false},
    {"A", "a", false},
    {"caf\xc3\xa9/+", "caf\xc3\xa9/x", true},
};

static void test_matcher(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof matches / sizeof matches[0]; i++) {
        const match_case_t *c = &matches[i];
        assert_int_equal(mqr__topic_filter_validate(c->filter, strlen(c->filter)), 0);
        assert_int_equal(mqr__topic_name_validate(c->name, strlen(c->name)), 0);
        bool got = mqr__topic_matches(c->filter, strlen(c->filter), c->name, strlen(c->name));
        if (got != c->match)
            fail_msg("'%s' vs '%s': got %d, want %d", c->filter, c->name, got, c->match);
    }
}

/* A filter equal to the name always matches; lengths are honoured, not NULs. */
static void test_matcher_lengths(void **state)
{
    (void)state;
    assert_true(mqr__topic_matches("a/b/c", 3, "a/bXX", 3));
    assert_false(mqr__topic_matches("a/b/c", 5, "a/b/cd", 6));
    assert_true(mqr__topic_matches("a/#", 3, "a/b/c", 3)); /* "a/b" */
    assert_false(mqr__topic_matches("a/+", 3, "a", 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),        cmocka_unit_test(test_names_every_position),
        cmocka_unit_test(test_filters),      cmocka_unit_test(test_parse_plain),
        cmocka_unit_test(test_parse_shared), cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_matcher),      cmocka_unit_test(test_matcher_lengths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
