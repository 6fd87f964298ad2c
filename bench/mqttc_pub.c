/*
 * mqttc_pub.c — how fast one core/mqttc client publishes to a local
 * Mosquitto: N messages of 64 bytes at QoS 0 and QoS 1, at most W not yet
 * done (QoS 0: written to the socket; QoS 1: PUBACK), topped up from the
 * done() callback. The same shape as the Paho MQTTAsync ceiling in
 * the forwarding profile (issue 19: 55 k QoS 0 / 30 k QoS 1 there),
 * which is what issue 19 must beat.
 *
 *   bench_mqttc_pub [--port P] [--n N] [--window W] [--refill R] [--v5]
 *
 * --refill R tops the window up only once R publishes are done (default 1:
 * after each, as the Paho program did); a forwarding session gets its
 * messages in batches per read, which R > 1 imitates.
 *
 * Without --port it starts /usr/sbin/mosquitto on a free loopback port
 * (set_tcp_nodelay true) and kills it at the end. Prints one RESULT line per
 * QoS. A benchmark, never a test: it measures and does not judge.
 */
#include "mqttc.h"

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

typedef struct {
    uv_loop_t *loop;
    mqr_mqttc_t *c;
    int qos;
    long n, window;
    long refill; /* top up once this many are done (1: after each) */
    long sent, done, failed;
    bool up, closed;
    uint8_t payload[64];
} run_t;

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
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void top_up(run_t *r)
{
    mqr_mqtt_publish_t p;
    memset(&p, 0, sizeof p);
    p.topic = (mqr_mqtt_str_t){"bench/mqttc", 11};
    p.payload = (mqr_mqtt_bin_t){r->payload, sizeof r->payload};
    p.qos = (uint8_t)r->qos;
    while (r->sent < r->n && r->sent - r->done < r->window) {
        if (mqr__mqttc_publish(r->c, &p, 1 + (uint64_t)r->sent) != 0) {
            fprintf(stderr, "publish failed\n");
            exit(1);
        }
        r->sent++;
    }
}

static void on_connected(void *ud, const mqr_mqtt_connack_t *ack)
{
    run_t *r = ud;
    r->up = true;
}

static void on_closed(void *ud, int err, int reason, const char *why)
{
    run_t *r = ud;
    r->closed = true;
    if (err) fprintf(stderr, "closed: %s (%s, 0x%02x)\n", why, mqr_strerror(err), reason);
}

static void on_done(void *ud, uint64_t token, int status, int reason)
{
    run_t *r = ud;
    r->done++;
    if (status) r->failed++;
    if (r->done == r->n)
        uv_stop(r->loop);
    else if (r->up && !r->closed && r->sent - r->done <= r->window - r->refill)
        top_up(r);
}

static const mqr_mqttc_cbs_t cbs = {
    .connected = on_connected, .closed = on_closed, .done = on_done};

static int run_qos(uv_loop_t *loop, int port, int version, int qos, long n, long window,
                   long refill)
{
    run_t r = {.loop = loop, .qos = qos, .n = n, .window = window, .refill = refill};
    memset(r.payload, 'x', sizeof r.payload);
    mqr_mqttc_options_t o;
    memset(&o, 0, sizeof o);
    o.version = version;
    o.client_id = qos ? "bench-mqttc-q1" : "bench-mqttc-q0";
    o.clean_start = true;
    o.keepalive_s = 60;
    o.max_inflight = (uint16_t)(window > 65535 ? 65535 : window);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", port, &a);
    if (mqr__mqttc_new(loop, &o, &cbs, &r, &r.c) ||
        mqr__mqttc_connect(r.c, (const struct sockaddr *)&a))
        return 1;
    while (!r.up && !r.closed)
        uv_run(loop, UV_RUN_ONCE);
    if (r.closed) return 1;
    double t0 = now_s(), c0 = cpu_s();
    top_up(&r);
    uv_run(loop, UV_RUN_DEFAULT);
    double dt = now_s() - t0, dc = cpu_s() - c0;
    printf("RESULT bench=mqttc_pub qos=%d version=%d n=%ld window=%ld refill=%ld "
           "msgs_per_s=%.0f cpu_us_per_msg=%.2f failed=%ld\n",
           qos, version, n, window, refill, (double)r.done / dt, dc * 1e6 / (double)r.done,
           r.failed);
    fflush(stdout);
    mqr__mqttc_disconnect(r.c, 0);
    while (!r.closed)
        uv_run(loop, UV_RUN_ONCE);
    mqr__mqttc_free(r.c);
    uv_run(loop, UV_RUN_DEFAULT);
    return r.done == n ? 0 : 1;
}

/* ---- a Mosquitto of our own ----------------------------------------------- */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) ||
        getsockname(fd, (struct sockaddr *)&a, &len))
        exit(1);
    close(fd);
    return ntohs(a.sin_port);
}

static pid_t broker_start(int port, char *conf, size_t cap)
{
    snprintf(conf, cap, "/tmp/mqr-bench-mqttc-%d.conf", (int)getpid());
    FILE *f = fopen(conf, "w");
    if (!f) exit(1);
    fprintf(f,
            "listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "set_tcp_nodelay true\nmax_inflight_messages 0\n%s",
            port, geteuid() == 0 ? "user root\n" : "");
    fclose(f);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execl("/usr/sbin/mosquitto", "mosquitto", "-c", conf, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 250; i++) { /* until it accepts, at most 5 s */
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (ok) return pid;
        usleep(20000);
    }
    fprintf(stderr, "mosquitto did not start\n");
    kill(pid, SIGKILL);
    exit(1);
}

int main(int argc, char **argv)
{
    int port = 0, version = MQR_MQTT_V311;
    long n = 200000, window = 1000, refill = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--port") && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--n") && i + 1 < argc)
            n = atol(argv[++i]);
        else if (!strcmp(argv[i], "--window") && i + 1 < argc)
            window = atol(argv[++i]);
        else if (!strcmp(argv[i], "--refill") && i + 1 < argc)
            refill = atol(argv[++i]);
        else if (!strcmp(argv[i], "--v5"))
            version = MQR_MQTT_V5;
        else {
            fprintf(stderr, "usage: %s [--port P] [--n N] [--window W] [--refill R] [--v5]\n",
                    argv[0]);
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    pid_t broker = 0;
    char conf[128] = "";
    if (!port) broker = broker_start(port = free_port(), conf, sizeof conf);
    uv_loop_t loop;
    uv_loop_init(&loop);
    int rc = run_qos(&loop, port, version, 0, n, window, refill) |
             run_qos(&loop, port, version, 1, n, window, refill);
    uv_loop_close(&loop);
    if (broker) {
        kill(broker, SIGKILL);
        waitpid(broker, NULL, 0);
        unlink(conf);
    }
    return rc;
}
