/*
 * test_topic_map.c — level mapping rules (core/msg/topic_map.c): names and
 * filters both ways, '+' and '#' captures, first rule wins, no match, and
 * rules refused with their reason.
 */
#include "topic_map.h"

#include "mqrouter.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static mqr_topic_map_t *map(const char *const *pairs, size_t n)
{
    mqr_topic_map_t *m = NULL;
    const char *why;
    size_t bad;
    assert_int_equal(mqr__topic_map_new(pairs, n, &m, &why, &bad), 0);
    return m;
}

static void expect(const mqr_topic_map_t *m, mqr_map_dir_t dir, const char *in, const char *want)
{
    bool oom;
    char *got = mqr__topic_map_apply(m, dir, in, &oom);
    assert_false(oom);
    if (!want) {
        assert_null(got);
        return;
    }
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void levels_both_ways(void **state)
{
    (void)state;
    static const char *const r[] = {"sensors/+/temp",  "site-1/+/temperature",
                                    "sensors/+/+/raw", "raw/+/x/+",
                                    "cmd/#",           "devices/edge-1/cmd/#"};
    mqr_topic_map_t *m = map(r, 3);
    expect(m, MQR_MAP_TO_REMOTE, "sensors/a/temp", "site-1/a/temperature");
    expect(m, MQR_MAP_TO_LOCAL, "site-1/a/temperature", "sensors/a/temp");
    expect(m, MQR_MAP_TO_REMOTE, "sensors/a/b/raw", "raw/a/x/b");
    expect(m, MQR_MAP_TO_LOCAL, "raw/a/x/b", "sensors/a/b/raw");
    expect(m, MQR_MAP_TO_REMOTE, "cmd/reboot/now", "devices/edge-1/cmd/reboot/now");
    expect(m, MQR_MAP_TO_LOCAL, "devices/edge-1/cmd/reboot", "cmd/reboot");
    expect(m, MQR_MAP_TO_REMOTE, "cmd", "devices/edge-1/cmd"); /* "cmd/#" matches "cmd" */
    expect(m, MQR_MAP_TO_REMOTE, "cmd/", "devices/edge-1/cmd/");
    /* no rule: NULL (the caller falls back to the prefix) */
    expect(m, MQR_MAP_TO_REMOTE, "sensors/a/humidity", NULL);
    expect(m, MQR_MAP_TO_REMOTE, "sensors/a/temp/extra", NULL);
    expect(m, MQR_MAP_TO_LOCAL, "sensors/a/temp", NULL);
    /* filters: their wildcards are level names */
    expect(m, MQR_MAP_TO_REMOTE, "sensors/+/temp", "site-1/+/temperature");
    expect(m, MQR_MAP_TO_REMOTE, "cmd/#", "devices/edge-1/cmd/#");
    expect(m, MQR_MAP_TO_REMOTE, "sensors/#", NULL);
    mqr__topic_map_free(m);
}

static void first_rule_wins(void **state)
{
    (void)state;
    static const char *const r[] = {"a/special", "x/one", "a/+", "y/+"};
    mqr_topic_map_t *m = map(r, 2);
    expect(m, MQR_MAP_TO_REMOTE, "a/special", "x/one");
    expect(m, MQR_MAP_TO_REMOTE, "a/other", "y/other");
    expect(m, MQR_MAP_TO_LOCAL, "y/special", "a/special");
    mqr__topic_map_free(m);
}

static void bad_rules(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"a/+", "b"},       /* '+' count differs */
        {"a/#", "b/+"},     /* '#' on one side only */
        {"a/#/b", "c/#/d"}, /* not a valid filter */
        {"a+", "b"},        /* not a valid filter */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *pairs[4] = {"ok/+", "fine/+", cases[i][0], cases[i][1]};
        mqr_topic_map_t *m = (mqr_topic_map_t *)1;
        const char *why = NULL;
        size_t bad = 99;
        assert_int_equal(mqr__topic_map_new(pairs, 2, &m, &why, &bad), MQR_EINVAL);
        assert_null(m);
        assert_non_null(why);
        assert_int_equal(bad, 1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(levels_both_ways),
        cmocka_unit_test(first_rule_wins),
        cmocka_unit_test(bad_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
