/*
 * test_registry.c — the device and topic registries (core/registry/registry.h): CRUD
 * and its refusals, pagination edges, persistence across an engine restart
 * on a real file, status and counters driven by real clients of the
 * listener (connect, disconnect, keep-alive lapse), the topic table's bound,
 * topic validation, retained set/get/delete, and tenants' mountpoints.
 */
#include "listener_harness.h"

#include "auth.h"
#include "mqrouter_auth.h"
#include "registry.h"

static mqr_registry_t *R(void)
{
    return mqr__engine_registry(F.e);
}

static void reg(const char *tenant, const char *id, const char *type)
{
    mqr_device_spec_t s = {.tenant = tenant, .id = id, .name = id, .type = type};
    const char *why = NULL;
    int rc = mqr__device_register(R(), &s, NULL, &why);
    if (rc < 0) fail_msg("register %s: %s (%s)", id, mqr_strerror(rc), why ? why : "");
}

/* ---- CRUD -------------------------------------------------------------- */

static void test_crud(void **state)
{
    bool created = false;
    mqr_device_spec_t s = {.id = "dev-1",
                           .name = "Boiler",
                           .type = "thermostat",
                           .metadata = "{\"floor\": 2, \"tags\": [\"a\", null, true, -1.5e3]}"};
    assert_int_equal(mqr__device_register(R(), &s, &created, NULL), 0);
    assert_true(created);
    mqr_device_info_t d;
    assert_int_equal(mqr__device_get(R(), NULL, "dev-1", &d), 0);
    assert_string_equal(d.name, "Boiler");
    assert_string_equal(d.type, "thermostat");
    assert_string_equal(d.tenant, "");
    assert_int_equal(d.status, MQR_DEVICE_UNKNOWN);
    assert_true(d.created_ms > 0);

    /* again: an update, counters and status kept */
    assert_int_equal(mqr__device_set_status(R(), "", "dev-1", MQR_DEVICE_OFFLINE), 0);
    s.name = "Boiler 2";
    s.metadata = NULL;
    assert_int_equal(mqr__device_register(R(), &s, &created, NULL), 0);
    assert_false(created);
    assert_int_equal(mqr__device_get(R(), "", "dev-1", &d), 0);
    assert_string_equal(d.name, "Boiler 2");
    assert_string_equal(d.metadata, "{}");
    assert_int_equal(d.status, MQR_DEVICE_OFFLINE);

    /* the same id in a tenant is another device */
    assert_int_equal(mqr__device_get(R(), "acme", "dev-1", &d), MQR_ENOENT);
    reg("acme", "dev-1", "x");
    assert_int_equal(mqr__device_get(R(), "acme", "dev-1", &d), 0);
    assert_string_equal(d.tenant, "acme");

    assert_int_equal(mqr__device_unregister(R(), NULL, "dev-1"), 0);
    assert_int_equal(mqr__device_unregister(R(), NULL, "dev-1"), MQR_ENOENT);
    assert_int_equal(mqr__device_get(R(), NULL, "dev-1", &d), MQR_ENOENT);
    assert_int_equal(mqr__device_get(R(), "acme", "dev-1", &d), 0);
    assert_int_equal(mqr__device_set_status(R(), NULL, "nope", MQR_DEVICE_ONLINE), MQR_ENOENT);
    assert_int_equal(mqr__device_set_status(R(), "acme", "dev-1", 7), MQR_EINVAL);
}

static void test_refusals(void **state)
{
    const char *why;
    struct {
        mqr_device_spec_t s;
        const char *why_part;
    } bad[] = {
        {{.id = ""}, "empty"},
        {{.id = NULL}, "empty"},
        {{.id = "x", .tenant = "a/b"}, "tenant"},
        {{.id = "x", .tenant = "a+b"}, "tenant"},
        {{.id = "x", .metadata = "{"}, "JSON"},
        {{.id = "x", .metadata = "{\"a\":}"}, "JSON"},
        {{.id = "x", .metadata = "[1,]"}, "JSON"},
        {{.id = "x", .metadata = "01"}, "JSON"},
        {{.id = "x", .metadata = "{} {}"}, "JSON"},
        {{.id = "x", .metadata = "\"\x01\""}, "JSON"},
        {{.id = "\xff\xfe"}, "UTF-8"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why = NULL;
        assert_int_equal(mqr__device_register(R(), &bad[i].s, NULL, &why), MQR_EINVAL);
        assert_non_null(why);
        if (!strstr(why, bad[i].why_part)) fail_msg("case %zu: reason '%s'", i, why);
    }
    char deep[200];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    mqr_device_spec_t s = {.id = "deep", .metadata = NULL};
    char *meta = strndup(deep, 200);
    s.metadata = meta;
    assert_int_equal(mqr__device_register(R(), &s, NULL, &why), MQR_EINVAL); /* depth > 64 */
    free(meta);
    assert_true(mqr__json_valid("\"\\u00e9\\n\"", 10));
    assert_true(mqr__json_valid(" null ", 6));
    assert_false(mqr__json_valid("\"\\x\"", 4));
    mqr_device_query_t q = {.status = -1};
    assert_int_equal(mqr__device_list(R(), &q, (mqr_device_fn)NULL, NULL, NULL, 0), MQR_EINVAL);
}

/* ---- pagination ----------------------------------------------------------- */

typedef struct {
    char ids[64][64];
    int n;
    int stop_after; /* cb returns 1 after this many, 0 = never */
} page_t;

static int collect(void *arg, const mqr_device_info_t *d)
{
    page_t *p = arg;
    snprintf(p->ids[p->n++], 64, "%s/%s", d->tenant, d->id);
    return p->stop_after && p->n == p->stop_after;
}

static int list(mqr_device_query_t *q, page_t *p, char *next)
{
    memset(p, 0, sizeof *p);
    return mqr__device_list(R(), q, collect, p, next, MQR_CURSOR_MAX);
}

static void test_pagination(void **state)
{
    char id[32];
    for (int i = 0; i < 25; i++) {
        snprintf(id, sizeof id, "s-%02d", i);
        reg(NULL, id, i % 2 ? "odd" : "even");
    }
    reg("t1", "s-00", "even");
    reg("t2", "a", "even");
    char *next = malloc(MQR_CURSOR_MAX);
    page_t p;

    /* all 27 in pages of 10: no tenant first, then t1, t2 */
    mqr_device_query_t q = {.status = -1, .limit = 10};
    int total = 0;
    char seen[27][64];
    char cursor[MQR_TENANT_MAX + MQR_DEVICE_ID_MAX + 2];
    do {
        int n = list(&q, &p, next);
        assert_int_equal(n, 27 - total < 10 ? 27 - total : 10); /* pages of 10, 10, 7 */
        for (int i = 0; i < n; i++)
            strcpy(seen[total + i], p.ids[i]);
        total += n;
        snprintf(cursor, sizeof cursor, "%s", next);
        q.cursor = next[0] ? cursor : NULL;
    } while (q.cursor);
    assert_int_equal(total, 27);
    assert_string_equal(seen[0], "/s-00");
    assert_string_equal(seen[24], "/s-24");
    assert_string_equal(seen[25], "t1/s-00");
    assert_string_equal(seen[26], "t2/a");
    for (int i = 1; i < 27; i++)
        assert_true(strcmp(seen[i - 1], seen[i]) < 0);

    /* exactly a page left: no next cursor */
    mqr_device_query_t q2 = {.status = -1, .limit = 2, .cursor = "/s-24"};
    assert_int_equal(list(&q2, &p, next), 2);
    assert_string_equal(next, "");
    q2.limit = 1;
    assert_int_equal(list(&q2, &p, next), 1);
    assert_string_equal(next, "t1/s-00");

    /* filters: type, prefix, tenant, status */
    mqr_device_query_t q3 = {.status = -1, .type = "odd", .limit = 1000};
    assert_int_equal(list(&q3, &p, next), 12);
    mqr_device_query_t q4 = {.status = -1, .prefix = "s-1"};
    assert_int_equal(list(&q4, &p, next), 10 + 0); /* s-10..s-19 */
    mqr_device_query_t q5 = {.status = -1, .tenant = "t1"};
    assert_int_equal(list(&q5, &p, next), 1);
    assert_string_equal(p.ids[0], "t1/s-00");
    mqr_device_query_t q6 = {.status = -1, .tenant = ""};
    assert_int_equal(list(&q6, &p, next), 25);
    assert_int_equal(mqr__device_set_status(R(), NULL, "s-03", MQR_DEVICE_OFFLINE), 0);
    mqr_device_query_t q7 = {.status = MQR_DEVICE_OFFLINE};
    assert_int_equal(list(&q7, &p, next), 1);
    assert_string_equal(p.ids[0], "/s-03");

    /* a callback that stops: next is where it stopped */
    mqr_device_query_t q8 = {.status = -1};
    memset(&p, 0, sizeof p);
    p.stop_after = 3;
    assert_int_equal(mqr__device_list(R(), &q8, collect, &p, next, MQR_CURSOR_MAX), 3);
    assert_string_equal(next, "/s-02");

    /* bad pagination */
    mqr_device_query_t bad = {.status = -1, .limit = MQR_REGISTRY_LIMIT_MAX + 1};
    assert_int_equal(list(&bad, &p, next), MQR_EINVAL);
    bad.limit = MQR_REGISTRY_LIMIT_MAX;
    assert_int_equal(list(&bad, &p, next), 27);
    const char *cursors[] = {"noslash", "a b/x", "/", "t1/"};
    for (size_t i = 0; i < 4; i++) {
        mqr_device_query_t qc = {.status = -1, .cursor = cursors[i]};
        assert_int_equal(list(&qc, &p, next), MQR_EINVAL);
    }
    mqr_device_query_t qs = {.status = 5};
    assert_int_equal(list(&qs, &p, next), MQR_EINVAL);
    /* a cursor past everything: empty page */
    mqr_device_query_t qe = {.status = -1, .cursor = "zzz/z"};
    assert_int_equal(list(&qe, &p, next), 0);
    assert_string_equal(next, "");
    /* a device removed between pages is not a problem for the cursor */
    mqr_device_query_t qr = {.status = -1, .limit = 5};
    assert_int_equal(list(&qr, &p, next), 5);
    assert_int_equal(mqr__device_unregister(R(), NULL, "s-04"), 0);
    qr.cursor = next;
    char *next2 = malloc(MQR_CURSOR_MAX);
    assert_int_equal(
        mqr__device_list(R(), &qr, collect, memset(&p, 0, sizeof p), next2, MQR_CURSOR_MAX), 5);
    assert_string_equal(p.ids[0], "/s-05");
    free(next2);
    free(next);
}

/* ---- persistence ------------------------------------------------------------ */

static void test_persistence(void **state)
{
    mqr_device_spec_t s = {.tenant = "acme",
                           .id = "m-1",
                           .name = "Meter",
                           .type = "meter",
                           .metadata = "{\"k\":[1,2]}"};
    assert_int_equal(mqr__device_register(R(), &s, NULL, NULL), 0);
    reg(NULL, "gone", "x");
    reg(NULL, "live", "x");
    assert_int_equal(mqr__device_unregister(R(), NULL, "gone"), 0);

    /* a client of id "live" connects, publishes, leaves; then another
     * connects and stays while the engine stops */
    client_t *c = client(MQR_MQTT_V5, "live");
    send_publish(c, "t/1", "12345", 0, false, 0);
    ping(c);
    cl_free(c);
    run_for(100);
    mqr_device_info_t d;
    assert_int_equal(mqr__device_get(R(), NULL, "live", &d), 0);
    assert_int_equal(d.status, MQR_DEVICE_OFFLINE);
    assert_int_equal(d.msgs_in, 1);
    reg(NULL, "stays", "x");
    c = client(MQR_MQTT_V5, "stays");
    assert_int_equal(mqr__device_get(R(), NULL, "stays", &d), 0);
    assert_int_equal(d.status, MQR_DEVICE_ONLINE);

    mqr_engine_free(F.e);
    F.e = NULL;
    cl_free(c);
    engine_start();

    assert_int_equal(mqr__device_get(R(), "acme", "m-1", &d), 0);
    assert_string_equal(d.name, "Meter");
    assert_string_equal(d.type, "meter");
    assert_string_equal(d.metadata, "{\"k\":[1,2]}");
    assert_int_equal(mqr__device_get(R(), NULL, "gone", &d), MQR_ENOENT);
    assert_int_equal(mqr__device_get(R(), NULL, "live", &d), 0);
    assert_int_equal(d.status, MQR_DEVICE_OFFLINE);
    assert_int_equal(d.msgs_in, 1);
    assert_true(d.bytes_in > 5);
    assert_true(d.last_seen_ms > 0);
    /* online when the engine stopped: offline now (the stop ended it) */
    assert_int_equal(mqr__device_get(R(), NULL, "stays", &d), 0);
    assert_int_equal(d.status, MQR_DEVICE_OFFLINE);
    mqr_registry_stats_t st;
    mqr__registry_stats(R(), &st);
    assert_int_equal(st.devices, 3);
    assert_int_equal(st.online, 0);
}

/* ---- status and counters from real clients --------------------------------------- */

typedef struct {
    char events[16][96];
    int n;
} events_t;

static void observe(void *ud, const mqr_device_info_t *d, int old, const char *why)
{
    events_t *ev = ud;
    if (ev->n < 16)
        snprintf(ev->events[ev->n++], 96, "%s:%s<-%s (%s)", d->id,
                 mqr__device_status_name(d->status), mqr__device_status_name(old), why);
}

static void test_status_follows_connections(void **state)
{
    events_t ev = {0};
    mqr__registry_set_observer(R(), observe, &ev);
    reg(NULL, "pub", "sensor");
    reg(NULL, "sub", "sensor");
    client_t *s = client(MQR_MQTT_V311, "sub");
    subscribe(s, "data/#", 0);
    client_t *p = client(MQR_MQTT_V5, "pub");
    client_t *other = client(MQR_MQTT_V5, "not-a-device");
    for (int i = 0; i < 3; i++) {
        send_publish(p, "data/x", "hello", 0, false, 0);
        expect_publish(s, "data/x", "hello");
    }
    send_publish(other, "data/y", "x", 0, false, 0);
    expect_publish(s, "data/y", "x");
    mqr_device_info_t d;
    assert_int_equal(mqr__device_get(R(), NULL, "pub", &d), 0);
    assert_int_equal(d.status, MQR_DEVICE_ONLINE);
    assert_int_equal(d.msgs_in, 3);
    assert_int_equal(d.msgs_out, 0);
    assert_int_equal(mqr__device_get(R(), NULL, "sub", &d), 0);
    assert_int_equal(d.msgs_out, 4);
    /* PUBLISH of "data/x" + "hello" at QoS 0: 2 + 2 + 6 + 5 bytes */
    assert_true(d.bytes_out >= 4 * 13);
    assert_int_equal(ev.n, 2);
    assert_string_equal(ev.events[0], "sub:online<-unknown (connected)");
    assert_string_equal(ev.events[1], "pub:online<-unknown (connected)");

    /* DISCONNECT and a dropped socket both make it offline */
    uint8_t disc[2] = {0xE0, 0};
    cl_send(p, disc, 2);
    cl_expect_closed(p, WAIT_MS);
    run_for(50);
    assert_int_equal(mqr__device_get(R(), NULL, "pub", &d), 0);
    assert_int_equal(d.status, MQR_DEVICE_OFFLINE);
    cl_free(s);
    run_for(100);
    assert_int_equal(mqr__device_get(R(), NULL, "sub", &d), 0);
    assert_int_equal(d.status, MQR_DEVICE_OFFLINE);
    assert_int_equal(ev.n, 4);
    assert_string_equal(ev.events[2], "pub:offline<-online (DISCONNECT)");
    assert_string_equal(ev.events[3], "sub:offline<-online (connection closed by the client)");

    /* registered while connected: online at once; unregistered while
     * connected: the connection keeps counting into nothing, safely */
    reg(NULL, "not-a-device", "late");
    assert_int_equal(mqr__device_get(R(), NULL, "not-a-device", &d), 0);
    assert_int_equal(d.status, MQR_DEVICE_ONLINE);
    assert_int_equal(mqr__device_unregister(R(), NULL, "not-a-device"), 0);
    send_publish(other, "data/z", "x", 0, false, 0);
    ping(other);
    cl_free(other);
    run_for(50);
    mqr__registry_set_observer(R(), NULL, NULL);
    cl_free(p);
}

static void test_keepalive_lapse(void **state)
{
    events_t ev = {0};
    mqr__registry_set_observer(R(), observe, &ev);
    reg(NULL, "sleepy", "sensor");
    client_t *c = cl_open();
    send_connect(c, MQR_MQTT_V311, "sleepy", true, 1); /* 1 s: lapses after 1.5 s */
    assert_int_equal(expect_connack(c).reason, 0);
    mqr_device_info_t d;
    assert_int_equal(mqr__device_get(R(), NULL, "sleepy", &d), 0);
    assert_int_equal(d.status, MQR_DEVICE_ONLINE);
    uint64_t end = now_ms() + 4000;
    while (now_ms() < end) {
        run_for(50);
        assert_int_equal(mqr__device_get(R(), NULL, "sleepy", &d), 0);
        if (d.status == MQR_DEVICE_OFFLINE) break;
    }
    assert_int_equal(d.status, MQR_DEVICE_OFFLINE);
    assert_int_equal(ev.n, 2);
    assert_string_equal(ev.events[1], "sleepy:offline<-online (keep-alive timeout)");
    mqr__registry_set_observer(R(), NULL, NULL);
    cl_free(c);
}

/* a mapper: client "gw-<x>" is device "<x>" */
static bool map_gw(void *ud, const char *tenant, const char *client_id, char *out, size_t cap)
{
    if (strncmp(client_id, "gw-", 3) != 0) return false;
    snprintf(out, cap, "%s", client_id + 3);
    return true;
}

static void test_mapper(void **state)
{
    reg(NULL, "boiler", "x");
    mqr__registry_set_mapper(R(), map_gw, NULL);
    client_t *c = client(MQR_MQTT_V5, "gw-boiler");
    mqr_device_info_t d;
    assert_int_equal(mqr__device_get(R(), NULL, "boiler", &d), 0);
    assert_int_equal(d.status, MQR_DEVICE_ONLINE);
    cl_free(c);
    run_for(100);
    assert_int_equal(mqr__device_get(R(), NULL, "boiler", &d), 0);
    assert_int_equal(d.status, MQR_DEVICE_OFFLINE);
    mqr__registry_set_mapper(R(), NULL, NULL);
}

/* ---- topics ---------------------------------------------------------------------- */

static int count_topics(void *arg, const mqr_topic_info_t *t)
{
    (*(int *)arg)++;
    return 0;
}

static void test_topics(void **state)
{
    mqr__topics_set_max(R(), 5);
    client_t *s = client(MQR_MQTT_V5, "ts");
    subscribe(s, "a/#", 0);
    subscribe(s, "a/+", 0);
    assert_int_equal(mqr_publish(F.e, "a/1", "x", 1, 0, 0), 0);
    assert_int_equal(mqr_publish(F.e, "a/1", "y", 1, 0, 1), 0);
    char t[16];
    for (int i = 2; i <= 8; i++) {
        snprintf(t, sizeof t, "a/%d", i);
        assert_int_equal(mqr_publish(F.e, t, "z", 1, 0, 0), 0);
    }
    mqr_topic_info_t info;
    assert_int_equal(mqr__topic_info(mqr__engine_registry(F.e), "a/1", &info), 0);
    assert_true(info.tracked);
    assert_int_equal(info.messages, 2);
    assert_true(info.last_ms > 0);
    assert_int_equal(info.subscribers, 2);
    assert_true(info.retained);
    /* the bound: 5 tracked, the rest counted */
    mqr_registry_stats_t st;
    mqr__registry_stats(R(), &st);
    assert_int_equal(st.topics, 5);
    assert_int_equal(st.topics_max, 5);
    assert_int_equal(st.topics_dropped, 3);
    assert_int_equal(mqr__topic_info(mqr__engine_registry(F.e), "a/8", &info), 0);
    assert_false(info.tracked);
    assert_int_equal(info.subscribers, 2);
    assert_int_equal(mqr__topic_info(mqr__engine_registry(F.e), "a/#", &info), MQR_ETOPIC);

    /* list by prefix, paginated */
    char next[256];
    int n = 0;
    assert_int_equal(mqr__topics_list(mqr__engine_registry(F.e), "a/", 2, NULL, count_topics, &n,
                                      next, sizeof next),
                     2);
    assert_string_equal(next, "a/2");
    assert_int_equal(mqr__topics_list(mqr__engine_registry(F.e), "a/", 2, next, count_topics, &n,
                                      next, sizeof next),
                     2);
    assert_string_equal(next, "a/4");
    assert_int_equal(mqr__topics_list(mqr__engine_registry(F.e), "a/", 2, next, count_topics, &n,
                                      next, sizeof next),
                     1);
    assert_string_equal(next, "");
    assert_int_equal(mqr__topics_list(mqr__engine_registry(F.e), "b/", 0, NULL, count_topics, &n,
                                      next, sizeof next),
                     0);
    assert_int_equal(mqr__topics_list(mqr__engine_registry(F.e), NULL, 1001, NULL, count_topics, &n,
                                      next, sizeof next),
                     MQR_EINVAL);
    assert_int_equal(mqr__topics_list(mqr__engine_registry(F.e), NULL, 0, "a/#", count_topics, &n,
                                      next, sizeof next),
                     MQR_EINVAL);

    /* validation with reasons */
    const char *why;
    assert_int_equal(mqr__topic_validate("a/+/b", 5, true, &why), 0);
    assert_int_equal(mqr__topic_validate("a/+/b", 5, false, &why), MQR_ETOPIC);
    assert_non_null(why);
    assert_int_equal(mqr__topic_validate("a/#/b", 5, true, &why), MQR_ETOPIC);
    assert_non_null(strstr(why, "#"));
    assert_int_equal(mqr__topic_validate("$share/g/a/#", 12, true, &why), 0);
    assert_int_equal(mqr__topic_validate("", 0, false, &why), MQR_ETOPIC);
    cl_free(s);
}

static void test_retained_api(void **state)
{
    assert_int_equal(mqr__retained_set(mqr__engine_retain(F.e), "r/1", "on", 2, 1), 0);
    mqr_msg_t *m = mqr__retained_get(mqr__engine_retain(F.e), "r/1");
    assert_non_null(m);
    assert_int_equal(m->payload_len, 2);
    assert_int_equal(m->qos, 1);
    mqr_msg_unref(m);
    client_t *s = client(MQR_MQTT_V5, "rs");
    subscribe(s, "r/#", 1);
    cl_expect(s, MQR_MQTT_PUBLISH);
    assert_int_equal(mqr__retained_delete(mqr__engine_retain(F.e), "r/1"), 0);
    assert_null(mqr__retained_get(mqr__engine_retain(F.e), "r/1"));
    assert_int_equal(mqr__retained_delete(mqr__engine_retain(F.e), "r/1"), MQR_ENOENT);
    assert_int_equal(mqr__retained_set(mqr__engine_retain(F.e), "r/+", "x", 1, 0), MQR_ETOPIC);
    assert_int_equal(mqr__retained_set(mqr__engine_retain(F.e), "r/1", "x", 1, 3), MQR_EQOS);
    cl_free(s);
}

/* ---- tenants ------------------------------------------------------------------------ */

static client_t *tenant_client(const char *id, const char *user, const char *pw)
{
    client_t *c = cl_open();
    c->version = MQR_MQTT_V5;
    mqr_mqtt_connect_t k;
    memset(&k, 0, sizeof k);
    k.version = MQR_MQTT_V5;
    k.clean_start = true;
    k.keep_alive = 60;
    k.client_id.p = id;
    k.client_id.len = (uint16_t)strlen(id);
    k.has_username = true;
    k.username.p = user;
    k.username.len = (uint16_t)strlen(user);
    k.has_password = true;
    k.password.p = (const uint8_t *)pw;
    k.password.len = (uint32_t)strlen(pw);
    uint8_t buf[512];
    size_t n;
    assert_int_equal(mqr__mqtt_encode_connect(&k, buf, sizeof buf, &n), 0);
    cl_send(c, buf, n);
    assert_int_equal(expect_connack(c).reason, 0);
    return c;
}

static void test_tenants(void **state)
{
    assert_int_equal(mqr_user_add(F.e, "alice", "pw-a", 4096), 0);
    assert_int_equal(mqr_user_add(F.e, "bob", "pw-b", 4096), 0);
    assert_int_equal(mqr__store_cred_tenant_set(mqr__engine_store(F.e), "alice", "acme"), 0);
    assert_int_equal(mqr__store_cred_tenant_set(mqr__engine_store(F.e), "bob", "globex"), 0);
    assert_int_equal(mqr__store_cred_tenant_set(mqr__engine_store(F.e), "nobody", "x"), MQR_ENOENT);
    assert_int_equal(mqr__store_cred_tenant_set(mqr__engine_store(F.e), "bob", "bad/name"),
                     MQR_EINVAL);
    reg("acme", "a1", "sensor");

    client_t *a = tenant_client("a1", "alice", "pw-a");
    client_t *b = tenant_client("b1", "bob", "pw-b");
    client_t *root = client(MQR_MQTT_V5, "root"); /* anonymous, no tenant */
    subscribe(a, "t/#", 0);
    subscribe(b, "t/#", 0);
    subscribe(root, "#", 0);

    send_publish(a, "t/x", "from-a", 0, false, 0);
    expect_publish(a, "t/x", "from-a");         /* own tenant: prefix stripped */
    expect_publish(root, "acme/t/x", "from-a"); /* the whole topic outside */
    cl_expect_nothing(b, QUIET_MS);             /* another tenant sees nothing */
    assert_int_equal(mqr_publish(F.e, "globex/t/y", "to-b", 4, 0, 0), 0);
    expect_publish(b, "t/y", "to-b");
    expect_publish(root, "globex/t/y", "to-b");
    cl_expect_nothing(a, QUIET_MS);
    /* a plain topic outside every tenant reaches neither */
    assert_int_equal(mqr_publish(F.e, "t/z", "none", 4, 0, 0), 0);
    expect_publish(root, "t/z", "none");
    cl_expect_nothing(a, QUIET_MS);
    cl_expect_nothing(b, QUIET_MS);

    /* the device of a tenant is found in its tenant */
    mqr_device_info_t d;
    assert_int_equal(mqr__device_get(R(), "acme", "a1", &d), 0);
    assert_int_equal(d.status, MQR_DEVICE_ONLINE);
    assert_int_equal(d.msgs_in, 1);
    /* topics are registered under the mountpoint */
    mqr_topic_info_t info;
    assert_int_equal(mqr__topic_info(mqr__engine_registry(F.e), "acme/t/x", &info), 0);
    assert_true(info.tracked);
    assert_int_equal(info.subscribers, 2); /* a's t/# and root's # */
    /* $SYS filters are not mounted */
    client_t *a2 = tenant_client("a2", "alice", "pw-a");
    subscribe(a2, "$SYS/broker/uptime", 0);
    mqr__listener_sys_publish(F.main);
    mqr_mqtt_publish_t sys = expect_publish(a2, NULL, NULL);
    assert_int_equal(sys.topic.len, strlen("$SYS/broker/uptime"));
    assert_memory_equal(sys.topic.p, "$SYS/broker/uptime", sys.topic.len);
    cl_free(a2);
    /* a shared subscription is mounted behind "$share/<group>/" */
    subscribe(b, "$share/g/s/#", 0);
    assert_int_equal(mqr_publish(F.e, "globex/s/1", "shared", 6, 0, 0), 0);
    expect_publish(b, "s/1", "shared");
    expect_publish(root, "globex/s/1", "shared");
    assert_int_equal(mqr_publish(F.e, "s/1", "plain", 5, 0, 0), 0);
    expect_publish(root, "s/1", "plain");
    cl_expect_nothing(b, QUIET_MS);
    /* unsubscribing takes the mounted filter away (v5 UNSUBACK 0x00, not
     * 0x11 "no subscription existed") */
    uint8_t unsub[64];
    size_t n;
    mqr_mqtt_str_t f = {.p = "t/#", .len = 3};
    mqr_mqtt_unsubscribe_t u = {.packet_id = 9};
    assert_int_equal(mqr__mqtt_encode_unsubscribe(&u, &f, 1, MQR_MQTT_V5, unsub, sizeof unsub, &n),
                     0);
    cl_send(a, unsub, n);
    cl_expect(a, MQR_MQTT_UNSUBACK);
    mqr_mqtt_unsuback_t ua;
    assert_int_equal(mqr__mqtt_decode_unsuback(a->pkt, a->pkt_len, MQR_MQTT_V5, &ua), 0);
    assert_int_equal(ua.count, 1);
    assert_int_equal(ua.codes[0], 0);
    assert_int_equal(mqr_publish(F.e, "acme/t/after", "x", 1, 0, 0), 0);
    expect_publish(root, "acme/t/after", "x");
    cl_expect_nothing(a, QUIET_MS);
    cl_free(a);
    cl_free(b);

    /* a tenant's will goes under its mountpoint */
    client_t *w = cl_open();
    w->version = MQR_MQTT_V5;
    mqr_mqtt_connect_t k;
    memset(&k, 0, sizeof k);
    k.version = MQR_MQTT_V5;
    k.clean_start = true;
    k.keep_alive = 60;
    k.client_id.p = "w1";
    k.client_id.len = 2;
    k.has_username = true;
    k.username.p = "alice";
    k.username.len = 5;
    k.has_password = true;
    k.password.p = (const uint8_t *)"pw-a";
    k.password.len = 4;
    k.has_will = true;
    k.will_topic.p = "t/gone";
    k.will_topic.len = 6;
    k.will_payload.p = (const uint8_t *)"bye";
    k.will_payload.len = 3;
    uint8_t buf[512];
    assert_int_equal(mqr__mqtt_encode_connect(&k, buf, sizeof buf, &n), 0);
    cl_send(w, buf, n);
    assert_int_equal(expect_connack(w).reason, 0);
    cl_free(w); /* no DISCONNECT: the will goes */
    expect_publish(root, "acme/t/gone", "bye");
    cl_free(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_crud, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pagination, setup, teardown),
        cmocka_unit_test_setup_teardown(test_persistence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_follows_connections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive_lapse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mapper, setup, teardown),
        cmocka_unit_test_setup_teardown(test_topics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retained_api, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tenants, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
