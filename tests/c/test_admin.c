/*
 * test_admin.c — the admin API's pieces without HTTP: bearer tokens (kept
 * as digests, checked in constant time, the loopback rule), the token file
 * reader, the Prometheus text (label escaping, one block per family,
 * histogram buckets adding up) and the route table, on a real engine.
 * tests/integration/test_admin_api.py drives the HTTP side with curl.
 */
#include <setjmp.h>
#include "engine.h"
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "admin_http.h"
#include "mqrouter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static mqr_engine_t *engine(void)
{
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.listen_port = -1;
    o.data_dir = "";
    o.log_level = MQR_LOG_ERROR;
    mqr_engine_t *e = NULL;
    char *err = NULL;
    if (mqr_engine_new(&e, &o, NULL, &err) < 0) fail_msg("engine: %s", err);
    return e;
}

static void test_tokens(void **state)
{
    mqr_engine_t *e = engine();
    const char *ten = NULL;
    const char *toks[] = {"alpha", "beta-token", "acme-tok tenant=acme"};
    assert_int_equal(mqr_engine_admin(e, "127.0.0.1", 0, toks, 3, NULL), 0);
    mqr_admin_t *a = mqr__engine_admin(e);
    assert_non_null(a);
    assert_true(mqr_engine_admin_port(e) > 0);
    /* only digests are kept: no copy of a token in the server's memory */
    mqr_admin_view_t v;
    mqr__admin_view(a, &v);
    assert_int_equal(v.ntokens, 3);
    assert_null(memmem(v.tokens, v.ntokens * 32, "alpha", 5));
    assert_int_equal(mqr__admin_auth_check(a, "Bearer alpha", &ten), 0);
    assert_int_equal(mqr__admin_auth_check(a, "bearer   beta-token  ", &ten), 0);
    assert_null(ten);
    /* a tenant's token: the token alone authenticates, and carries its tenant */
    assert_int_equal(mqr__admin_auth_check(a, "Bearer acme-tok", &ten), 0);
    assert_string_equal(ten, "acme");
    assert_int_equal(mqr__admin_auth_check(a, "Bearer acme-tok tenant=acme", &ten), 2);
    assert_null(ten);
    const char *badten[] = {"t tenant=a/b", "t owner=x", "t tenant=a extra"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(mqr__admin_set_tokens(a, &badten[i], 1), MQR_EINVAL);
    assert_int_equal(mqr__admin_auth_check(a, "Bearer acme-tok", &ten), 0); /* kept */
    assert_int_equal(mqr__admin_auth_check(a, "Bearer alph", &ten), 2);
    assert_int_equal(mqr__admin_auth_check(a, "Bearer alphaa", &ten), 2);
    assert_int_equal(mqr__admin_auth_check(a, "Bearer ", &ten), 1);
    assert_int_equal(mqr__admin_auth_check(a, "Basic YWxwaGE=", &ten), 1);
    assert_int_equal(mqr__admin_auth_check(a, NULL, &ten), 1);
    /* replaced: the old ones stop working */
    const char *one[] = {"gamma"};
    assert_int_equal(mqr__admin_set_tokens(a, one, 1), 0);
    assert_int_equal(mqr__admin_auth_check(a, "Bearer alpha", &ten), 2);
    assert_int_equal(mqr__admin_auth_check(a, "Bearer gamma", &ten), 0);
    /* none on loopback: open */
    assert_int_equal(mqr__admin_set_tokens(a, NULL, 0), 0);
    assert_int_equal(mqr__admin_auth_check(a, NULL, &ten), 0);
    /* one admin server per engine */
    char *err = NULL;
    assert_int_equal(mqr_engine_admin(e, "127.0.0.1", 0, NULL, 0, &err), MQR_EEXIST);
    free(err);
    mqr_engine_free(e);
}

static void test_non_loopback_needs_tokens(void **state)
{
    mqr_engine_t *e = engine();
    char *err = NULL;
    const char *ten = NULL;
    assert_int_equal(mqr_engine_admin(e, "0.0.0.0", 0, NULL, 0, &err), MQR_EINVAL);
    assert_non_null(strstr(err, "needs tokens"));
    free(err);
    assert_int_equal(mqr_engine_admin_port(e), -1);
    const char *t[] = {""};
    assert_int_equal(mqr_engine_admin(e, "127.0.0.1", 0, t, 1, NULL), MQR_EINVAL);
    assert_int_equal(mqr_engine_admin(e, "not-an-ip", 0, NULL, 0, &err), MQR_EINVAL);
    free(err);
    const char *ok[] = {"x"};
    assert_int_equal(mqr_engine_admin(e, "0.0.0.0", 0, ok, 1, NULL), 0);
    /* with tokens a non-loopback server cannot drop them all */
    assert_int_equal(mqr__admin_set_tokens(mqr__engine_admin(e), NULL, 0), MQR_EINVAL);
    assert_int_equal(mqr__admin_auth_check(mqr__engine_admin(e), "Bearer x", &ten), 0);
    mqr_engine_free(e);
}

static void test_token_file(void **state)
{
    char path[] = "/tmp/mqr-admin-tokens-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "# tokens\n\n  one  \r\ntwo\n#three\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    char **t = NULL;
    size_t n = 0;
    assert_int_equal(mqr_admin_tokens_read(path, &t, &n, NULL), 0);
    assert_int_equal(n, 2);
    assert_string_equal(t[0], "one");
    assert_string_equal(t[1], "two");
    mqr_admin_tokens_free(t, n);
    FILE *f = fopen(path, "w");
    fputs("# nothing\n\n", f);
    fclose(f);
    char *err = NULL;
    assert_int_equal(mqr_admin_tokens_read(path, &t, &n, &err), MQR_EINVAL);
    assert_non_null(strstr(err, "no token"));
    free(err);
    unlink(path);
    assert_int_equal(mqr_admin_tokens_read(path, &t, &n, &err), MQR_EINVAL);
    assert_non_null(strstr(err, "cannot read"));
    free(err);
}

/* the value of the first line starting with prefix, or -1 */
static double value_of(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, prefix, n) == 0) return atof(p + n);
    return -1;
}

static void test_metrics_text(void **state)
{
    mqr_engine_t *e = engine();
    assert_int_equal(mqr_engine_admin(e, "127.0.0.1", 0, NULL, 0, NULL), 0);
    char *err = NULL;
    /* a chunk name with a quote and a backslash: both end up in the label */
    int rc = mqr_engine_load_string(e, "we\"ird\\name",
                                    "local mq = require 'mqrouter'\n"
                                    "mq.route('a/#', function(m) end)\n"
                                    "mq.route('b', function(m) error('no') end)\n",
                                    &err);
    if (rc < 0) fail_msg("load: %s", err);
    for (int i = 0; i < 5; i++)
        assert_int_equal(mqr_publish(e, "a/1", "x", 1, 0, 0), 0);
    mqr_publish(e, "b", "x", 1, 0, 0);
    mqr_buf_t b = {0};
    mqr__admin_metrics(mqr__engine_admin(e), &b);
    assert_false(b.failed);
    const char *t = b.p;
    /* escaped label value */
    assert_non_null(strstr(t, "mqrouter_route_calls_total{route=\"route 'a/#' "
                              "(we\\\"ird\\\\name:2)\",filter=\"a/#\"} 5\n"));
    assert_non_null(strstr(t, "mqrouter_route_errors_total{route=\"route 'b' "
                              "(we\\\"ird\\\\name:3)\",filter=\"b\"} 1\n"));
    /* buckets are cumulative and end at the count */
    double inf = value_of(t, "mqrouter_route_handler_duration_seconds_bucket{route=\"route 'a/#' "
                             "(we\\\"ird\\\\name:2)\",le=\"+Inf\"} ");
    double cnt = value_of(t, "mqrouter_route_handler_duration_seconds_count{route=\"route 'a/#' "
                             "(we\\\"ird\\\\name:2)\"} ");
    assert_true(inf == 5 && cnt == 5);
    /* cumulative: each bucket holds the ones below it; 5 calls of an empty
     * handler all take less than a second */
    double prev = 0;
    static const char *const les[] = {"0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
                                      "0.01",   "0.025",   "0.05",   "0.1",   "0.25",   "0.5"};
    for (size_t i = 0; i < sizeof les / sizeof les[0]; i++) {
        char key[200];
        snprintf(key, sizeof key,
                 "mqrouter_route_handler_duration_seconds_bucket{route=\"route 'a/#' "
                 "(we\\\"ird\\\\name:2)\",le=\"%s\"} ",
                 les[i]);
        double v = value_of(t, key);
        assert_true(v >= prev);
        prev = v;
    }
    assert_true(value_of(t, "mqrouter_route_handler_duration_seconds_bucket{route=\"route 'a/#' "
                            "(we\\\"ird\\\\name:2)\",le=\"1\"} ") == 5);
    /* every family's TYPE line appears once, before its samples */
    const char *fam = "# TYPE mqrouter_route_calls_total counter\n";
    const char *first = strstr(t, fam);
    assert_non_null(first);
    assert_null(strstr(first + 1, fam));
    assert_true(strstr(t, "mqrouter_route_calls_total{") > first);
    assert_true(value_of(t, "mqrouter_messages_published_total ") == 6);
    /* what was refused or dropped is counted, 0 here */
    assert_true(value_of(t, "mqtt_publishes_refused_total{reason=\"no_room\"} ") == 0);
    assert_true(value_of(t, "mqtt_publishes_refused_total{reason=\"failed\"} ") == 0);
    assert_true(value_of(t, "mqtt_persistent_session_rows_failed_total ") == 0);
    assert_true(value_of(t, "mqrouter_deliveries_dropped_nomem_total ") == 0);
    assert_true(value_of(t, "mqrouter_rules_reload_dropped_total ") == 0);
    assert_true(value_of(t, "mqtt_persistent_sessions_expired_total{protocol=\"5\"} ") == 0);
    assert_true(value_of(t, "mqtt_persistent_sessions_expired_total{protocol=\"3.1.1\"} ") == 0);
    assert_true(value_of(t, "mqrouter_rules_handler_errors_total ") == 1);
    assert_true(value_of(t, "mqrouter_lua_memory_bytes ") > 1000);
    assert_true(value_of(t, "process_resident_memory_bytes ") > 1e6);
    free(b.p);
    mqr_engine_free(e);
}

static void count_route(void *arg, const char *method, const char *pattern)
{
    int *n = arg;
    assert_non_null(method);
    assert_true(pattern[0] == '/');
    (*n)++;
}

static void test_routes(void **state)
{
    mqr_engine_t *e = engine();
    assert_int_equal(mqr_engine_admin(e, "127.0.0.1", 0, NULL, 0, NULL), 0);
    int n = 0;
    mqr__admin_foreach_route(count_route, &n);
    assert_true(n >= 20);
    mqr_areq_t req = {.method = HTTP_GET, .path = "/api/v1/queues/x/dlq", .query = "", .body = ""};
    mqr_ares_t res = {0};
    mqr__admin_route(mqr__engine_admin(e), &req, &res);
    assert_int_equal(res.status, 404); /* no such queue (queues not even initialised) */
    cJSON_Delete(res.json);
    req.method = HTTP_PATCH;
    res = (mqr_ares_t){0};
    mqr__admin_route(mqr__engine_admin(e), &req, &res);
    assert_int_equal(res.status, 405);
    cJSON_Delete(res.json);
    req = (mqr_areq_t){.method = HTTP_GET, .path = "/api/v1/queues", .query = "limit=5&offset=0"};
    res = (mqr_ares_t){0};
    mqr__admin_route(mqr__engine_admin(e), &req, &res);
    assert_int_equal(res.status, 200);
    assert_int_equal(cJSON_GetObjectItem(res.json, "limit")->valueint, 5);
    cJSON_Delete(res.json);
    req.query = "limit=5x";
    res = (mqr_ares_t){0};
    mqr__admin_route(mqr__engine_admin(e), &req, &res);
    assert_int_equal(res.status, 400);
    cJSON_Delete(res.json);
    mqr_engine_free(e);
}

/* guard.c's decisions, request by request; tests/integration/
 * test_admin_security.py sends the same over HTTP. */
static int guard_status(mqr_admin_t *a, int method, const char *host, const char *origin,
                        const char *ctype, const char *site, bool body)
{
    mqr_areq_t req = {.method = method,
                      .path = "/api/v1/publish",
                      .query = "",
                      .body = "",
                      .host = host,
                      .origin = origin,
                      .content_type = ctype,
                      .fetch_site = site,
                      .http11 = true,
                      .has_body = body};
    mqr_ares_t res = {.status = 200};
    bool pass = mqr__admin_guard(a, &req, &res);
    cJSON_Delete(res.json);
    assert_true(pass == (res.status == 200 || res.preflight));
    return res.preflight ? 204 : res.status;
}

static void test_guard(void **state)
{
    mqr_engine_t *e = engine();
    mqr_admin_options_t o;
    mqr_admin_options_init(&o);
    o.port = 0;
    const char *hosts[] = {"Admin.Example", "[::1]"}, *origins[] = {"https://Dash.example:8443/"};
    o.hosts = hosts;
    o.nhosts = 2;
    o.origins = origins;
    o.norigins = 1;
    assert_int_equal(mqr_engine_admin_start(e, &o, NULL), 0);
    mqr_admin_t *a = mqr__engine_admin(e);
    const int P = HTTP_POST, G = HTTP_GET;
    const char *J = "application/json";
    /* Host: ours (any port, any case), localhost, configured names */
    assert_int_equal(guard_status(a, G, "127.0.0.1:8080", NULL, NULL, NULL, false), 200);
    assert_int_equal(guard_status(a, G, "LOCALHOST", NULL, NULL, NULL, false), 200);
    assert_int_equal(guard_status(a, G, "admin.example:1", NULL, NULL, NULL, false), 200);
    assert_int_equal(guard_status(a, G, "[::1]:8080", NULL, NULL, NULL, false), 200);
    assert_int_equal(guard_status(a, G, "evil.example", NULL, NULL, NULL, false), 421);
    assert_int_equal(guard_status(a, G, "127.0.0.2", NULL, NULL, NULL, false), 421);
    assert_int_equal(guard_status(a, G, "localhost.evil", NULL, NULL, NULL, false), 421);
    assert_int_equal(guard_status(a, G, "::1", NULL, NULL, NULL, false), 421); /* no brackets */
    assert_int_equal(guard_status(a, G, "[::1", NULL, NULL, NULL, false), 421);
    assert_int_equal(guard_status(a, G, "", NULL, NULL, NULL, false), 421);
    assert_int_equal(guard_status(a, G, NULL, NULL, NULL, NULL, false), 400);
    /* Origin: own, configured (CORS), anything else */
    assert_int_equal(guard_status(a, P, "localhost:81", "http://localhost:81", J, NULL, true), 200);
    assert_int_equal(guard_status(a, P, "localhost:81", "https://localhost:81", J, NULL, true),
                     403);
    assert_int_equal(guard_status(a, P, "localhost:81", "http://localhost:82", J, NULL, true), 403);
    assert_int_equal(guard_status(a, P, "localhost", "https://dash.example:8443", J, NULL, true),
                     200);
    assert_int_equal(
        guard_status(a, HTTP_OPTIONS, "localhost", "https://dash.example:8443", NULL, NULL, false),
        204);
    assert_int_equal(guard_status(a, P, "localhost", "https://dash.example", J, NULL, true), 403);
    assert_int_equal(guard_status(a, G, "localhost", "null", NULL, NULL, false), 403);
    /* no Origin: fetch metadata of a browser decides writes */
    assert_int_equal(guard_status(a, P, "localhost", NULL, J, "cross-site", true), 403);
    assert_int_equal(guard_status(a, P, "localhost", NULL, J, "same-site", true), 403);
    assert_int_equal(guard_status(a, P, "localhost", NULL, J, "same-origin", true), 200);
    assert_int_equal(guard_status(a, P, "localhost", NULL, J, "none", true), 200);
    assert_int_equal(guard_status(a, G, "localhost", NULL, NULL, "cross-site", false), 200);
    /* bodies are JSON */
    assert_int_equal(
        guard_status(a, P, "localhost", NULL, "Application/JSON ; charset=utf-8", NULL, true), 200);
    assert_int_equal(guard_status(a, P, "localhost", NULL, "text/plain", NULL, true), 415);
    assert_int_equal(guard_status(a, P, "localhost", NULL, "application/json-x", NULL, true), 415);
    assert_int_equal(guard_status(a, P, "localhost", NULL, NULL, NULL, true), 415);
    assert_int_equal(guard_status(a, P, "localhost", NULL, NULL, NULL, false), 200);
    mqr_admin_view_t v;
    mqr__admin_view(a, &v);
    assert_int_equal(v.refused[MQR_ADMIN_REFUSE_HOST], 6);
    assert_int_equal(v.refused[MQR_ADMIN_REFUSE_ORIGIN], 4);
    assert_int_equal(v.refused[MQR_ADMIN_REFUSE_FETCH_SITE], 2);
    assert_int_equal(v.refused[MQR_ADMIN_REFUSE_CONTENT_TYPE], 3);

    /* reconfiguring is all or nothing */
    char *err = NULL;
    const char *bad_origin[] = {"https://ok.example", "dash.example"};
    o.origins = bad_origin;
    o.norigins = 2;
    assert_int_equal(mqr__admin_configure(a, &o, &err), MQR_EINVAL);
    assert_non_null(strstr(err, "'dash.example' is not scheme://host[:port]"));
    free(err);
    mqr__admin_view(a, &v);
    assert_int_equal(v.norigins, 1);
    assert_string_equal(v.origins[0], "https://dash.example:8443"); /* lower case, no '/' */
    o.origins = origins;
    o.norigins = 1;
    o.require_token = 1;
    assert_int_equal(mqr__admin_configure(a, &o, &err), MQR_EINVAL);
    assert_non_null(strstr(err, "tokens are required"));
    free(err);
    mqr__admin_view(a, &v);
    assert_false(v.require_token);
    mqr_engine_free(e);

    /* a wildcard address answers to any IP literal, still not to names */
    e = engine();
    const char *tok[] = {"t"};
    mqr_admin_options_init(&o);
    o.host = "0.0.0.0";
    o.tokens = tok;
    o.ntokens = 1;
    assert_int_equal(mqr_engine_admin_start(e, &o, NULL), 0);
    assert_int_equal(
        guard_status(mqr__engine_admin(e), G, "192.0.2.7:8080", NULL, NULL, NULL, false), 200);
    assert_int_equal(
        guard_status(mqr__engine_admin(e), G, "[2001:db8::1]", NULL, NULL, NULL, false), 200);
    assert_int_equal(
        guard_status(mqr__engine_admin(e), G, "rebind.example", NULL, NULL, NULL, false), 421);
    mqr_engine_free(e);

    /* bad names and origins at start; require_token without tokens */
    const char *bad_host[] = {"a b"};
    e = engine();
    mqr_admin_options_init(&o);
    o.hosts = bad_host;
    o.nhosts = 1;
    assert_int_equal(mqr_engine_admin_start(e, &o, &err), MQR_EINVAL);
    assert_non_null(strstr(err, "'a b'"));
    free(err);
    mqr_admin_options_init(&o);
    o.require_token = 1;
    assert_int_equal(mqr_engine_admin_start(e, &o, &err), MQR_EINVAL);
    assert_non_null(strstr(err, "tokens are required"));
    free(err);
    assert_int_equal(mqr_engine_admin_port(e), -1);
    mqr_engine_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokens),     cmocka_unit_test(test_non_loopback_needs_tokens),
        cmocka_unit_test(test_token_file), cmocka_unit_test(test_metrics_text),
        cmocka_unit_test(test_routes),     cmocka_unit_test(test_guard),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
