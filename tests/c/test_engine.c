/*
 * test_engine.c — the engine through the public API: publish and C
 * subscriptions, shared messages in fan-out, removal during delivery,
 * routing loops, retained messages across a restart, stop/free order, and
 * the publish context an ingress reads after routing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "engine.h"
#include "mqrouter.h"
#include "registry.h"
#include "upstream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static mqr_engine_t *engine(const char *data_dir)
{
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.listen_port = -1;
    o.data_dir = data_dir;
    o.log_level = MQR_LOG_ERROR;
    mqr_engine_t *e = NULL;
    char *err = NULL;
    int rc = mqr_engine_new(&e, &o, NULL, &err);
    if (rc < 0) fail_msg("engine: %s", err);
    return e;
}

typedef struct {
    int calls;
    mqr_msg_t *last;
    mqr_engine_t *e;
    mqr_csub_t *self;
    mqr_csub_t *other;
    char payloads[8][32];
} sink_t;

static void on_msg(void *arg, mqr_msg_t *msg)
{
    sink_t *s = arg;
    if (s->calls < 8) {
        size_t len;
        const char *p = mqr_msg_payload(msg, &len);
        snprintf(s->payloads[s->calls], sizeof s->payloads[0], "%.*s", (int)len, p);
    }
    s->calls++;
    s->last = msg;
}

static void test_publish_and_subscribe(void **state)
{
    mqr_engine_t *e = engine("");
    sink_t a = {0}, b = {0};
    mqr_csub_t *sa, *sb;
    assert_int_equal(mqr_subscribe(e, "s/+/t", on_msg, &a, &sa), 0);
    assert_int_equal(mqr_subscribe(e, "s/#", on_msg, &b, &sb), 0);
    assert_int_equal(mqr_publish(e, "s/1/t", "v", 1, 0, 0), 0);
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 1);
    assert_ptr_equal(a.last, b.last); /* fan-out shares one message */
    assert_int_equal(mqr_publish(e, "s/1", "w", 1, 0, 0), 0);
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 2);
    mqr_unsubscribe(e, sb);
    assert_int_equal(mqr_publish(e, "s/2/t", "x", 1, 0, 0), 0);
    assert_int_equal(b.calls, 2);
    assert_int_equal(a.calls, 2);
    mqr_unsubscribe(e, sa);
    mqr_engine_free(e);
}

static void test_refusals(void **state)
{
    mqr_engine_t *e = engine("");
    assert_int_equal(mqr_publish(e, "a/+", "x", 1, 0, 0), MQR_ETOPIC);
    assert_int_equal(mqr_publish(e, "", "x", 1, 0, 0), MQR_ETOPIC);
    assert_int_equal(mqr_publish(e, "a\xff", "x", 1, 0, 0), MQR_EUTF8);
    assert_int_equal(mqr_publish(e, "a", "x", 1, 3, 0), MQR_EQOS);
    assert_int_equal(mqr_publish(e, NULL, "x", 1, 0, 0), MQR_EINVAL);
    mqr_csub_t *s;
    sink_t k = {0};
    assert_int_equal(mqr_subscribe(e, "a/#/b", on_msg, &k, &s), MQR_ETOPIC);
    assert_string_equal(mqr_err_name(MQR_ETOPIC), "ETOPIC");
    assert_string_equal(mqr_strerror(MQR_EROUTELOOP), "publish nesting too deep (routing loop)");
    assert_string_equal(mqr_err_name(UV_ECONNREFUSED), "ECONNREFUSED");
    mqr_engine_free(e);
}

/* a subscriber that removes another (and itself) while a message is being
 * delivered: the removed one is skipped, nothing is freed under the walk */
static void remover(void *arg, mqr_msg_t *msg)
{
    sink_t *s = arg;
    s->calls++;
    if (s->other) {
        mqr_unsubscribe(s->e, s->other);
        s->other = NULL;
    }
    if (s->self) {
        mqr_unsubscribe(s->e, s->self);
        s->self = NULL;
    }
}

static void test_remove_during_delivery(void **state)
{
    mqr_engine_t *e = engine("");
    sink_t first = {.e = e}, second = {0};
    mqr_csub_t *s1, *s2;
    assert_int_equal(mqr_subscribe(e, "x", remover, &first, &s1), 0);
    assert_int_equal(mqr_subscribe(e, "x", on_msg, &second, &s2), 0);
    first.self = s1;
    first.other = s2;
    assert_int_equal(mqr_publish(e, "x", "1", 1, 0, 0), 0);
    assert_int_equal(first.calls, 1);
    assert_int_equal(second.calls, 0);
    assert_int_equal(mqr_publish(e, "x", "2", 1, 0, 0), 0);
    assert_int_equal(first.calls, 1);
    mqr_engine_free(e);
}

static void echo(void *arg, mqr_msg_t *msg)
{
    sink_t *s = arg;
    s->calls++;
    s->last = (mqr_msg_t *)(intptr_t)mqr_publish(s->e, "loop", "again", 5, 0, 0);
}

static void test_routing_loop(void **state)
{
    mqr_engine_t *e = engine("");
    sink_t s = {.e = e};
    mqr_csub_t *sub;
    assert_int_equal(mqr_subscribe(e, "loop", echo, &s, &sub), 0);
    assert_int_equal(mqr_publish(e, "loop", "go", 2, 0, 0), 0);
    assert_int_equal(s.calls, MQR_ROUTER_MAX_DEPTH);
    assert_int_equal(mqr__engine_router(e)->loops, 1);
    mqr_engine_free(e);
}

/* ---- the publish context ---- */

typedef struct {
    mqr_subscriber_t base;
    int result;            /* what deliver() answers */
    const char *republish; /* publishes this topic from inside deliver() */
    mqr_engine_t *e;
} fixed_sub_t;

static int fixed_deliver(mqr_subscriber_t *self, mqr_msg_t *msg, const mqr_trie_entry_t *entry)
{
    fixed_sub_t *f = (fixed_sub_t *)self;
    if (f->republish) mqr_publish(f->e, f->republish, "n", 1, 1, 0);
    return f->result;
}

static mqr_trie_entry_t *fixed(mqr_engine_t *e, fixed_sub_t *f, const char *filter, int result)
{
    *f = (fixed_sub_t){.base.deliver = fixed_deliver, .result = result, .e = e};
    mqr_sub_opts_t o = {.qos = 2};
    mqr_trie_entry_t *ent =
        mqr__router_add(mqr__engine_router(e), filter, strlen(filter), &f->base, &o);
    assert_non_null(ent);
    return ent;
}

static mqr_pubctx_t route(mqr_engine_t *e, const char *topic)
{
    mqr_msg_init_t in = {.topic = topic, .topic_len = strlen(topic), .qos = 1};
    mqr_msg_t *m = mqr__msg_new(&in);
    assert_non_null(m);
    mqr_pubctx_t pc;
    assert_int_equal(mqr__engine_publish_ctx(e, m, &pc, NULL), 0);
    mqr_msg_unref(m);
    assert_null(mqr__engine_router(e)->pub); /* nobody else's from here on */
    return pc;
}

static void test_publish_context(void **state)
{
    mqr_engine_t *e = engine("");
    fixed_sub_t f[6];
    mqr_trie_entry_t *ents[6] = {
        fixed(e, &f[0], "a/#", 0),          fixed(e, &f[1], "a/#", MQR_DELIVER_STORED),
        fixed(e, &f[2], "a/#", MQR_EFULL),  fixed(e, &f[3], "a/#", MQR_EMEMLIMIT),
        fixed(e, &f[4], "a/#", MQR_ESTORE), fixed(e, &f[5], "a/#", MQR_ENOMEM),
    };
    mqr_pubctx_t pc = route(e, "a/1");
    assert_int_equal(pc.stored, 1);
    assert_int_equal(pc.no_room, 2);
    assert_int_equal(pc.failed, 2);
    assert_int_equal(pc.error, MQR_ESTORE); /* the first failure */
    assert_int_equal(mqr__engine_router(e)->dropped_nomem, 1);
    for (int i = 0; i < 6; i++)
        mqr__router_remove(mqr__engine_router(e), ents[i]);

    /* a handler's publish while routing counts for the message that caused
     * it: its publisher hears about it */
    fixed_sub_t h, inner;
    mqr_trie_entry_t *eh = fixed(e, &h, "b/1", 0);
    h.republish = "b/2";
    mqr_trie_entry_t *ei = fixed(e, &inner, "b/2", MQR_ENOMEM);
    pc = route(e, "b/1");
    assert_int_equal(pc.failed, 1);
    assert_int_equal(pc.error, MQR_ENOMEM);
    assert_int_equal(mqr__engine_router(e)->dropped_nomem, 2);
    /* outside any routing a result concerns nobody */
    mqr__router_note(mqr__engine_router(e), MQR_ENOMEM);
    assert_int_equal(mqr__engine_router(e)->dropped_nomem, 2);
    mqr__router_remove(mqr__engine_router(e), eh);
    mqr__router_remove(mqr__engine_router(e), ei);

    /* a real queue bound to the topic: full, then taken */
    mqr_queue_options_t qo;
    mqr_queue_options_init(&qo);
    qo.name = "one";
    qo.max_messages = 1;
    mqr_queue_t *q;
    assert_int_equal(mqr_queue_new(e, &qo, &q), 0);
    assert_int_equal(mqr_queue_bind(q, "c/#"), 0);
    pc = route(e, "c/1");
    assert_int_equal(pc.no_room + pc.failed + pc.stored, 0);
    pc = route(e, "c/2");
    assert_int_equal(pc.no_room, 1);
    assert_int_equal(pc.failed, 0);
    mqr_engine_free(e);
}

/* A route that forwards what it gets to an upstream session, as
 * up:publish does from Lua: it ignores the result, the session tells the
 * publish context itself. */
typedef struct {
    mqr_subscriber_t base;
    mqr_upstream_t *u;
} fwd_sub_t;

static int fwd_deliver(mqr_subscriber_t *self, mqr_msg_t *msg, const mqr_trie_entry_t *entry)
{
    (void)mqr__upstream_publish(((fwd_sub_t *)self)->u, msg);
    return 0;
}

/* An ingress inside another's routing (fixed_sub_t's republish, but with
 * its own context, as a listener will does). */
typedef struct {
    mqr_subscriber_t base;
    mqr_engine_t *e;
    const char *topic;
    mqr_pubctx_t inner;
} ingress_sub_t;

static int ingress_deliver(mqr_subscriber_t *self, mqr_msg_t *msg, const mqr_trie_entry_t *entry)
{
    ingress_sub_t *s = (ingress_sub_t *)self;
    mqr_msg_init_t in = {.topic = s->topic, .topic_len = strlen(s->topic), .qos = 1};
    mqr_msg_t *m = mqr__msg_new(&in);
    assert_non_null(m);
    assert_int_equal(mqr__engine_publish_ctx(s->e, m, &s->inner, NULL), 0);
    mqr_msg_unref(m);
    return 0;
}

static int dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* An upstream session whose buffer is full reports it through the publish
 * context like any subscriber: to the context of the ingress routing the
 * message, and to no other (an outer ingress whose handler started it
 * hears nothing of it). */
static void test_upstream_full_context(void **state)
{
    mqr_engine_t *e = engine("");
    char uri[64];
    snprintf(uri, sizeof uri, "tcp://127.0.0.1:%d", dead_port()); /* stays disconnected */
    mqr_upstream_config_t cfg = {
        .name = "full", .uri = uri, .clean_start = 1, .max_buffered = 1, .retry_initial_s = 30};
    mqr_upstream_t *u;
    assert_int_equal(mqr__upstream_new(e, &cfg, &u), 0);
    fwd_sub_t fwd = {.base.deliver = fwd_deliver, .u = u};
    mqr_sub_opts_t o = {.qos = 2};
    mqr_trie_entry_t *ef = mqr__router_add(mqr__engine_router(e), "f/#", 3, &fwd.base, &o);
    assert_non_null(ef);

    mqr_pubctx_t pc = route(e, "f/1"); /* buffered */
    assert_int_equal(pc.no_room + pc.failed + pc.stored, 0);
    pc = route(e, "f/2"); /* no room */
    assert_int_equal(pc.no_room, 1);
    assert_int_equal(pc.failed, 0);

    ingress_sub_t ing = {.base.deliver = ingress_deliver, .e = e, .topic = "f/3"};
    mqr_trie_entry_t *ei = mqr__router_add(mqr__engine_router(e), "n/1", 3, &ing.base, &o);
    assert_non_null(ei);
    pc = route(e, "n/1");
    assert_int_equal(ing.inner.no_room, 1);
    assert_int_equal(pc.no_room, 0); /* not the outer ingress's message */

    /* outside any routing a full session concerns only its caller */
    mqr_msg_init_t in = {.topic = "f/4", .topic_len = 3, .qos = 1};
    mqr_msg_t *m = mqr__msg_new(&in);
    assert_int_equal(mqr__upstream_publish(u, m), MQR_EFULL);
    mqr_msg_unref(m);
    mqr_upstream_status_t st;
    mqr__upstream_status(u, &st);
    assert_int_equal(st.publish_full, 3);
    mqr__router_remove(mqr__engine_router(e), ef);
    mqr__router_remove(mqr__engine_router(e), ei);
    mqr_engine_free(e);
}

static void test_retained_survive_restart(void **state)
{
    char dir[] = "/tmp/mqr-engine-XXXXXX";
    assert_non_null(mkdtemp(dir));
    mqr_engine_t *e = engine(dir);
    assert_int_equal(mqr_publish(e, "status/a", "on", 2, 1, 1), 0);
    assert_int_equal(mqr_publish(e, "status/b", "off", 3, 0, 1), 0);
    assert_int_equal(mqr_publish(e, "status/b", "", 0, 0, 1), 0); /* clears b */
    assert_int_equal(mqr_publish(e, "status/c", "plain", 5, 0, 0), 0);
    mqr_engine_free(e); /* flushes the store */

    e = engine(dir);
    mqr_msg_t *a = mqr__retain_get(mqr__engine_retain(e), "status/a", 8);
    assert_non_null(a);
    assert_memory_equal(a->payload, "on", 2);
    assert_int_equal(a->qos, 1);
    assert_null(mqr__retain_get(mqr__engine_retain(e), "status/b", 8));
    assert_null(mqr__retain_get(mqr__engine_retain(e), "status/c", 8));
    mqr_engine_free(e);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_load_errors(void **state)
{
    mqr_engine_t *e = engine("");
    char *err = NULL;
    assert_int_equal(mqr_engine_load_string(e, "bad.lua", "x = = 1", &err), MQR_ESCRIPT);
    assert_non_null(strstr(err, "bad.lua:1:"));
    free(err);
    assert_int_equal(mqr_engine_load_file(e, "/nonexistent/rules.lua", &err), MQR_ENOENT);
    assert_non_null(strstr(err, "cannot open /nonexistent/rules.lua"));
    free(err);
    assert_int_equal(mqr_engine_reload(e, &err), MQR_ENOENT);
    free(err);
    /* a C host publishes into rules and subscribes to what they publish */
    assert_int_equal(mqr_engine_load_string(
                         e, "ok.lua",
                         "local mq = require 'mqrouter'\n"
                         "mq.route('in', function(m) mq.publish('out', m.payload .. '!') end)",
                         &err),
                     0);
    sink_t s = {0};
    mqr_csub_t *sub;
    assert_int_equal(mqr_subscribe(e, "out", on_msg, &s, &sub), 0);
    assert_int_equal(mqr_publish(e, "in", "hi", 2, 0, 0), 0);
    assert_int_equal(s.calls, 1);
    assert_string_equal(s.payloads[0], "hi!");
    mqr_engine_free(e);
}

/* The topic registry counts every publish, unless the engine was made
 * with no_topic_counts: then routing still works and no topic is tracked. */
static void test_topic_counts_switch(void **state)
{
    (void)state;
    for (int off = 0; off <= 1; off++) {
        mqr_engine_options_t o;
        mqr_engine_options_init(&o);
        o.listen_port = -1;
        o.data_dir = "";
        o.log_level = MQR_LOG_ERROR;
        o.no_topic_counts = off;
        mqr_engine_t *e = NULL;
        assert_int_equal(mqr_engine_new(&e, &o, NULL, NULL), 0);
        sink_t s = {0};
        mqr_csub_t *sub;
        assert_int_equal(mqr_subscribe(e, "t/#", on_msg, &s, &sub), 0);
        assert_int_equal(mqr_publish(e, "t/1", "x", 1, 0, 0), 0);
        assert_int_equal(mqr_publish(e, "t/1", "y", 1, 0, 0), 0);
        assert_int_equal(s.calls, 2);
        mqr_topic_info_t info;
        assert_int_equal(mqr__topic_info(mqr__engine_registry(e), "t/1", &info), 0);
        assert_int_equal(info.tracked, !off);
        assert_int_equal(info.messages, off ? 0 : 2);
        mqr_unsubscribe(e, sub);
        mqr_engine_free(e);
    }
}

static void test_host_loop(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.listen_port = -1;
    o.data_dir = "";
    o.log_level = MQR_LOG_ERROR;
    mqr_engine_t *e;
    assert_int_equal(mqr_engine_new(&e, &o, &loop, NULL), 0);
    assert_ptr_equal(mqr_engine_loop(e), &loop);
    char *err = NULL;
    assert_int_equal(
        mqr_engine_load_string(e, "t.lua",
                               "local mq = require 'mqrouter'\n"
                               "mq.after(0.01, function() mq.publish('tick', 'x') end)",
                               &err),
        0);
    sink_t s = {0};
    mqr_csub_t *sub;
    mqr_subscribe(e, "tick", on_msg, &s, &sub);
    for (int i = 0; i < 200 && s.calls == 0; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    assert_int_equal(s.calls, 1);
    mqr_engine_free(e);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- several entries of one subscriber ---- */

typedef struct {
    mqr_subscriber_t base;
    int singles, sets;
    size_t last_n;
    uint32_t last_ids[4]; /* subscription ids of the last set, in order */
    mqr_router_t *r;
    mqr_trie_entry_t *kill; /* removed at the first call, when set */
} merge_sub_t;

static int merge_deliver(mqr_subscriber_t *self, mqr_msg_t *msg, const mqr_trie_entry_t *entry)
{
    merge_sub_t *m = (merge_sub_t *)self;
    m->singles++;
    if (m->kill) mqr__router_remove(m->r, m->kill);
    m->kill = NULL;
    return 0;
}

static int merge_set(mqr_subscriber_t *self, mqr_msg_t *msg, mqr_trie_entry_t *const *entries,
                     size_t n)
{
    merge_sub_t *m = (merge_sub_t *)self;
    m->sets++;
    m->last_n = n;
    for (size_t i = 0; i < n && i < 4; i++)
        m->last_ids[i] = entries[i]->opts.subscription_id;
    return 0;
}

static mqr_trie_entry_t *sub_id(mqr_router_t *r, merge_sub_t *m, const char *filter, uint32_t id)
{
    mqr_sub_opts_t o = {.qos = 1, .subscription_id = id};
    mqr_trie_entry_t *e = mqr__router_add(r, filter, strlen(filter), &m->base, &o);
    assert_non_null(e);
    return e;
}

static int route_topic(mqr_engine_t *e, const char *topic)
{
    mqr_msg_init_t in = {.topic = topic, .topic_len = strlen(topic), .qos = 1};
    mqr_msg_t *msg = mqr__msg_new(&in);
    assert_non_null(msg);
    int n = mqr__router_publish(mqr__engine_router(e), msg);
    mqr_msg_unref(msg);
    return n;
}

static void test_merged_delivery(void **state)
{
    mqr_engine_t *e = engine("");
    mqr_router_t *r = mqr__engine_router(e);
    /* p: no deliver_set, so one call per entry as before; m merges; one:
     * merges but matches once */
    merge_sub_t p = {.base.deliver = merge_deliver, .r = r};
    merge_sub_t m = {.base.deliver = merge_deliver, .base.deliver_set = merge_set, .r = r};
    merge_sub_t one = {.base.deliver = merge_deliver, .base.deliver_set = merge_set, .r = r};
    sub_id(r, &p, "m/#", 0);
    sub_id(r, &p, "m/x", 0);
    sub_id(r, &m, "m/+", 1);
    mqr_sub_opts_t so = {.qos = 1, .subscription_id = 3};
    assert_non_null(mqr__trie_add_shared(&r->trie, "g", 1, "m/#", 3, &m.base, &so));
    mqr_trie_entry_t *m2 = sub_id(r, &m, "m/#", 2);
    sub_id(r, &one, "m/x", 0);

    /* m's two plain entries in one call, in add order; its shared one
     * alone (5.0 §4.8.2) */
    assert_int_equal(route_topic(e, "m/x"), 2 + 2 + 1);
    assert_int_equal(p.singles, 2);
    assert_int_equal(p.sets, 0);
    assert_int_equal(m.sets, 1);
    assert_int_equal(m.last_n, 2);
    assert_int_equal(m.last_ids[0], 1);
    assert_int_equal(m.last_ids[1], 2);
    assert_int_equal(m.singles, 1);
    assert_int_equal(one.singles, 1);
    assert_int_equal(one.sets, 0);

    /* one plain match: the plain call, no set */
    assert_int_equal(route_topic(e, "m/a/b"), 1 + 1 + 1);
    assert_int_equal(m.sets, 1);
    assert_int_equal(m.singles, 3);

    /* an entry removed by an earlier subscriber's call is left out: m's
     * other entry goes alone */
    p.kill = m2;
    assert_int_equal(route_topic(e, "m/x"), 2 + 2 + 1);
    assert_int_equal(m.sets, 1);
    assert_int_equal(m.singles, 5);
    mqr_engine_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_publish_and_subscribe),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_remove_during_delivery),
        cmocka_unit_test(test_routing_loop),
        cmocka_unit_test(test_publish_context),
        cmocka_unit_test(test_merged_delivery),
        cmocka_unit_test(test_upstream_full_context),
        cmocka_unit_test(test_retained_survive_restart),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_host_loop),
        cmocka_unit_test(test_topic_counts_switch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
