/*
 * sink_http.c — what the HTTP sink (core/sink/http.c) sustains against a
 * local nginx-light over keep-alive, on one loop thread.
 *
 *   bench_sink_http [requests] [in_flight] [rate] [seconds]
 *
 * Starts nginx (one worker, daemon off) on a free loopback port with a
 * location that answers 204, then: closed loop, N POSTs of a small JSON
 * body with at most in_flight (default 64) on the wire, refilled from the
 * callbacks (requests/s, connections used, our CPU time); fixed rate, rate
 * POSTs per second (default 5000) paced by a 1 ms timer for `seconds`,
 * latency accepted → answered (p50, p99, max). nginx and this program
 * share the machine: on 2 cores the figures include that contention. Not
 * a test: it only checks that every request came back 2xx.
 */
#include "http.h"
#include "../tests/c/loopback.h"
#include "rules_load.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char body[] = "{\"device\":\"sensor-17\",\"temp\":21.5,\"ts\":1765130000}";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static pid_t nginx_pid;
static char nginx_dir[64] = "/tmp/mqr-bench-nginx-XXXXXX";

static int nginx_start(void)
{
    if (!mkdtemp(nginx_dir)) return -1;
    int port = lb_free_port();
    if (port < 0) return -1;
    char conf[128];
    snprintf(conf, sizeof conf, "%s/nginx.conf", nginx_dir);
    FILE *f = fopen(conf, "w");
    if (!f) return -1;
    const char *d = nginx_dir;
    fprintf(f,
            "daemon off; master_process off; worker_processes 1;\n"
            "error_log %s/error.log; pid %s/nginx.pid;\n"
            "events { worker_connections 1024; }\n"
            "http { access_log off; client_body_temp_path %s; proxy_temp_path %s;\n"
            "  fastcgi_temp_path %s; uwsgi_temp_path %s; scgi_temp_path %s;\n"
            "  keepalive_requests 100000; keepalive_timeout 60s;\n"
            "  server { listen 127.0.0.1:%d;\n"
            "    location /ingest { return 204; } } }\n",
            d, d, d, d, d, d, d, port);
    fclose(f);
    pid_t parent = getpid();
    nginx_pid = fork();
    if (nginx_pid < 0) return -1;
    if (nginx_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(1);
        execl("/usr/sbin/nginx", "nginx", "-p", nginx_dir, "-c", conf, (char *)NULL);
        _exit(127);
    }
    double deadline = now_s() + 5;
    while (!lb_port_accepts(port)) {
        if (now_s() > deadline || waitpid(nginx_pid, NULL, WNOHANG) == nginx_pid) return -1;
        usleep(10000);
    }
    return port;
}

static void nginx_stop(void)
{
    if (nginx_pid > 0) {
        kill(nginx_pid, SIGTERM);
        waitpid(nginx_pid, NULL, 0);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", nginx_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", nginx_dir);
}

/* ---- the load ---- */

typedef struct {
    mqr_http_t *h;
    uv_loop_t *loop;
    char url[128];
    long total, sent, done, bad;
    double *lat; /* fixed rate: seconds per request */
    long nlat, cap;
    /* fixed rate pacing */
    double t0, rate, seconds;
    uv_timer_t tick;
    bool refill;
} load_t;

static void on_done(void *arg, const mqr_http_resp_t *r);

static int send_one(load_t *l)
{
    static const mqr_http_header_t ct[] = {{"Content-Type", "application/json"}};
    mqr_http_req_t q = {.method = "POST",
                        .url = l->url,
                        .headers = ct,
                        .nheaders = 1,
                        .body = body,
                        .body_len = sizeof body - 1};
    char why[128];
    int rc = mqr__http_request(l->h, &q, on_done, l, why, sizeof why);
    if (rc == 0) l->sent++;
    return rc;
}

static void on_done(void *arg, const mqr_http_resp_t *r)
{
    load_t *l = arg;
    l->done++;
    if (r->outcome != MQR_SINK_OK) {
        if (l->bad++ < 3) fprintf(stderr, "request failed: %s\n", r->reason);
    }
    if (l->lat && l->nlat < l->cap) l->lat[l->nlat++] = r->seconds;
    if (l->refill && l->sent < l->total) send_one(l);
}

static void closed_loop(load_t *l, long n, uint32_t in_flight, const char *label)
{
    l->total = n;
    l->sent = l->done = l->bad = 0;
    l->refill = true;
    uint64_t conns0 = mqr__http_connections(l->h);
    double t0 = now_s(), c0 = cpu_s();
    for (uint32_t i = 0; i < in_flight && l->sent < n; i++)
        if (send_one(l) != 0) break;
    while (l->done < l->sent)
        uv_run(l->loop, UV_RUN_ONCE);
    double dt = now_s() - t0, dc = cpu_s() - c0;
    if (!label) return;
    printf("RESULT bench=sink_http case=\"%s\" n=%ld in_flight=%u req_per_s=%.0f "
           "us_cpu_per_req=%.1f new_connections=%llu failed=%ld\n",
           label, l->done, in_flight, l->done / dt, dc / l->done * 1e6,
           (unsigned long long)(mqr__http_connections(l->h) - conns0), l->bad);
}

static void on_tick(uv_timer_t *t)
{
    load_t *l = t->data;
    double el = now_s() - l->t0;
    if (el >= l->seconds) {
        uv_timer_stop(t);
        return;
    }
    long due = (long)(el * l->rate);
    while (l->sent < due)
        if (send_one(l) != 0) break;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void fixed_rate(load_t *l, double rate, double seconds)
{
    l->refill = false;
    l->sent = l->done = l->bad = 0;
    l->cap = (long)(rate * seconds) + 16;
    l->lat = malloc((size_t)l->cap * sizeof *l->lat);
    l->nlat = 0;
    l->rate = rate;
    l->seconds = seconds;
    uv_timer_init(l->loop, &l->tick);
    l->tick.data = l;
    l->t0 = now_s();
    double c0 = cpu_s();
    uv_timer_start(&l->tick, on_tick, 1, 1);
    while (uv_is_active((uv_handle_t *)&l->tick) || l->done < l->sent)
        uv_run(l->loop, UV_RUN_ONCE);
    double dt = now_s() - l->t0, dc = cpu_s() - c0;
    uv_close((uv_handle_t *)&l->tick, NULL);
    long slow = 0; /* a burst of these is a stall of the machine, not a slow request */
    for (long i = 0; i < l->nlat; i++)
        slow += l->lat[i] > 0.010;
    qsort(l->lat, (size_t)l->nlat, sizeof *l->lat, cmp_d);
    double p50 = l->lat[l->nlat / 2], p99 = l->lat[(long)(l->nlat * 0.99)],
           p999 = l->lat[(long)(l->nlat * 0.999)], max = l->lat[l->nlat - 1];
    printf("RESULT bench=sink_http case=\"fixed rate\" rate=%.0f n=%ld achieved_per_s=%.0f "
           "p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f over_10ms=%ld cpu_share=%.2f "
           "failed=%ld\n",
           rate, l->nlat, l->done / dt, p50 * 1e3, p99 * 1e3, p999 * 1e3, max * 1e3, slow, dc / dt,
           l->bad);
    free(l->lat);
    l->lat = NULL;
}

/* ---- from a rules route ---- */

/* Webhooks from a Lua route: c:send (no wait) from a plain route, or
 * c:post waiting in an async route (default concurrency). Ends when every
 * request was answered (the rules poll the sink's counters). */
static int rules_case(int port, long n, bool wait)
{
    char code[1600];
    snprintf(code, sizeof code,
             "local mq = require 'mqrouter'\n"
             "local c = mq.http{ base_url = 'http://127.0.0.1:%d', max_queued = 10000000 }\n"
             "%s\n"
             "mq.every(0.005, function()\n"
             "  local s = c:stats()\n"
             "  if s.ok + s.retried + s.failed >= %ld then mq.publish('bench/done', "
             "tostring(s.ok)) end\n"
             "end)\n",
             port,
             wait ? "mq.route('sensors/#', function(msg)\n"
                    "  assert(c:post('/ingest', msg.payload))\n"
                    "end, { async = true, max_pending = 10000000 })"
                  : "mq.route('sensors/#', function(msg)\n"
                    "  assert(c:send{ url = '/ingest', body = msg.payload })\n"
                    "end)",
             n);
    mqr_engine_t *e = rl_engine(code, "");
    rl_result_t res;
    rl_run(e, n, 0, &res);
    mqr_engine_free(e);
    long ok = atol(res.done);
    const char *label = wait ? "route, post waits (async route)" : "route, send (no wait)";
    printf("%-34s %10.0f req/s  %5.2f us engine cpu/req (%ld ok of %ld)\n", label, n / res.seconds,
           res.cpu / n * 1e6, ok, n);
    printf("RESULT bench=sink_http case=\"%s\" n=%ld ok=%ld req_per_s=%.0f us_cpu_per_req=%.3f\n",
           label, n, ok, n / res.seconds, res.cpu / n * 1e6);
    return ok == n ? 0 : 1;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 100000;
    uint32_t in_flight = argc > 2 ? (uint32_t)atol(argv[2]) : 64;
    double rate = argc > 3 ? atof(argv[3]) : 5000;
    double seconds = argc > 4 ? atof(argv[4]) : 5;
    signal(SIGPIPE, SIG_IGN);
    int port = nginx_start();
    if (port < 0) {
        fprintf(stderr, "nginx did not start (see %s/error.log)\n", nginx_dir);
        nginx_stop();
        return 1;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    mqr_http_t *h = NULL;
    char *err = NULL;
    mqr_http_opts_t o = {.name = "bench",
                         .max_in_flight = in_flight,
                         .max_host_connections = 16,
                         .curl_only = getenv("BENCH_HTTP_CURL") != NULL};
    if (mqr__http_new(&loop, &o, &h, &err) != 0) {
        fprintf(stderr, "mqr__http_new: %s\n", err ? err : "?");
        free(err);
        nginx_stop();
        return 1;
    }
    load_t l = {.h = h, .loop = &loop};
    snprintf(l.url, sizeof l.url, "http://127.0.0.1:%d/ingest", port);
    printf("# nginx-light 1 worker on 127.0.0.1:%d, POST %zu-byte JSON, 204 answers; "
           "%ld cores online, shared with other work\n",
           port, sizeof body - 1, sysconf(_SC_NPROCESSORS_ONLN));
    double load[3] = {0};
    if (getloadavg(load, 3) == 3)
        printf("# load average before: %.2f %.2f %.2f\n", load[0], load[1], load[2]);
    closed_loop(&l, 2000, in_flight, NULL); /* warm-up: connections open */
    closed_loop(&l, n, in_flight, "closed loop");
    closed_loop(&l, n / 4, 1, "closed loop, one at a time");
    fixed_rate(&l, rate, seconds);
    if (getloadavg(load, 3) == 3)
        printf("# load average after: %.2f %.2f %.2f\n", load[0], load[1], load[2]);
    mqr_sink_t *s = mqr__http_sink(h);
    printf("# sink: requests=%llu ok=%llu retried=%llu failed=%llu connections=%llu\n",
           (unsigned long long)s->requests, (unsigned long long)s->ok,
           (unsigned long long)s->retried, (unsigned long long)s->failed,
           (unsigned long long)mqr__http_connections(h));
    mqr__http_close(h);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    int rc = rules_case(port, n / 2, false);
    if (rc == 0) rc = rules_case(port, n / 2, true);
    nginx_stop();
    return rc;
}
