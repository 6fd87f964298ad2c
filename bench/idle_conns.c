/*
 * idle_conns: holds N idle MQTT clients on a broker so that the broker's
 * memory per idle connection can be measured (bench/idle_memory.sh reads
 * the broker's RSS before and while they are held).
 *
 * Each client connects over loopback TCP, sends CONNECT (MQTT 3.1.1, a
 * unique client id, clean session, keep-alive --keepalive seconds, long by
 * default so that nothing is sent while it is held), waits for CONNACK 0,
 * subscribes to one topic (idle/<i>, or --topic for all), waits for its
 * SUBACK and then says nothing. One thread, epoll, non-blocking sockets, a
 * bounded number of connects in flight. When all are subscribed it prints
 * "READY n" and holds them for --hold seconds (or until stdin closes), then
 * prints "DONE" and exits; every phase has a deadline, so it always ends.
 *
 * It must not use mqrouter's code (it measures any broker) and must not
 * send anything once READY (that would no longer be idle).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

enum { ST_CONNECTING, ST_WAIT_CONNACK, ST_WAIT_SUBACK, ST_READY, ST_DEAD };

typedef struct {
    int fd;
    int state;
    uint8_t in[16];
    size_t in_len;
} conn_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t put_str(uint8_t *p, const char *s)
{
    size_t n = strlen(s);
    p[0] = (uint8_t)(n >> 8);
    p[1] = (uint8_t)n;
    memcpy(p + 2, s, n);
    return 2 + n;
}

/* Remaining Length below 128 for everything this sends. */
static size_t build_connect(uint8_t *b, int i, int keepalive)
{
    char id[32];
    snprintf(id, sizeof id, "idle-%d", i);
    uint8_t body[64];
    size_t n = put_str(body, "MQTT");
    body[n++] = 4;    /* 3.1.1 */
    body[n++] = 0x02; /* clean session */
    body[n++] = (uint8_t)(keepalive >> 8);
    body[n++] = (uint8_t)keepalive;
    n += put_str(body + n, id);
    b[0] = 0x10;
    b[1] = (uint8_t)n;
    memcpy(b + 2, body, n);
    return n + 2;
}

static size_t build_subscribe(uint8_t *b, int i, const char *topic)
{
    char t[64];
    if (topic)
        snprintf(t, sizeof t, "%s", topic);
    else
        snprintf(t, sizeof t, "idle/%d", i);
    uint8_t body[80];
    size_t n = 0;
    body[n++] = 0;
    body[n++] = 1; /* packet id 1 */
    n += put_str(body + n, t);
    body[n++] = 0; /* QoS 0 */
    b[0] = 0x82;
    b[1] = (uint8_t)n;
    memcpy(b + 2, body, n);
    return n + 2;
}

static int send_all(int fd, const uint8_t *b, size_t n)
{
    /* tiny packets into an empty socket buffer: one send takes them */
    ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
    return w == (ssize_t)n ? 0 : -1;
}

static void usage(void)
{
    fprintf(stderr, "usage: idle_conns [--host IP] --port P [--clients N] [--keepalive S]\n"
                    "                  [--topic T] [--hold S] [--parallel N] [--timeout S]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 0, n = 10000, keepalive = 3600, parallel = 200;
    double hold = 30, timeout = 60;
    const char *topic = NULL;
    static const struct option opts[] = {
        {"host", required_argument, NULL, 'h'},
        {"port", required_argument, NULL, 'p'},
        {"clients", required_argument, NULL, 'n'},
        {"keepalive", required_argument, NULL, 'k'},
        {"topic", required_argument, NULL, 't'},
        {"hold", required_argument, NULL, 'H'},
        {"parallel", required_argument, NULL, 'P'},
        {"timeout", required_argument, NULL, 'T'},
        {NULL, 0, NULL, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'h':
            host = optarg;
            break;
        case 'p':
            port = atoi(optarg);
            break;
        case 'n':
            n = atoi(optarg);
            break;
        case 'k':
            keepalive = atoi(optarg);
            break;
        case 't':
            topic = optarg;
            break;
        case 'H':
            hold = atof(optarg);
            break;
        case 'P':
            parallel = atoi(optarg);
            break;
        case 'T':
            timeout = atof(optarg);
            break;
        default:
            usage();
        }
    }
    if (port <= 0 || n <= 0 || parallel <= 0) usage();
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)n + 64) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)n + 64 ? rl.rlim_max : (rlim_t)n + 64;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) usage();
    conn_t *cs = calloc((size_t)n, sizeof *cs);
    int ep = epoll_create1(0);
    if (!cs || ep < 0) return 1;

    double start = now_s(), deadline = start + timeout;
    int next = 0, inflight = 0, ready = 0, dead = 0;
    struct epoll_event evs[256];
    while (ready + dead < n && now_s() < deadline) {
        while (next < n && inflight < parallel) {
            conn_t *c = &cs[next];
            c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (c->fd < 0) {
                fprintf(stderr, "socket %d: %s\n", next, strerror(errno));
                c->state = ST_DEAD;
                dead++;
                next++;
                continue;
            }
            int r = connect(c->fd, (struct sockaddr *)&addr, sizeof addr);
            if (r < 0 && errno != EINPROGRESS) {
                fprintf(stderr, "connect %d: %s\n", next, strerror(errno));
                close(c->fd);
                c->state = ST_DEAD;
                dead++;
                next++;
                continue;
            }
            c->state = ST_CONNECTING;
            struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = (uint32_t)next};
            epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
            inflight++;
            next++;
        }
        int k = epoll_wait(ep, evs, 256, 100);
        for (int j = 0; j < k; j++) {
            int i = (int)evs[j].data.u32;
            conn_t *c = &cs[i];
            uint8_t b[128];
            if (c->state == ST_CONNECTING) {
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                size_t m = build_connect(b, i, keepalive);
                if (err || send_all(c->fd, b, m) < 0) goto fail;
                c->state = ST_WAIT_CONNACK;
                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                continue;
            }
            ssize_t r = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, 0);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                goto fail;
            }
            c->in_len += (size_t)r;
            if (c->state == ST_WAIT_CONNACK && c->in_len >= 4) {
                if (c->in[0] != 0x20 || c->in[3] != 0) goto fail;
                memmove(c->in, c->in + 4, c->in_len - 4);
                c->in_len -= 4;
                size_t m = build_subscribe(b, i, topic);
                if (send_all(c->fd, b, m) < 0) goto fail;
                c->state = ST_WAIT_SUBACK;
            }
            if (c->state == ST_WAIT_SUBACK && c->in_len >= 5) {
                if (c->in[0] != 0x90 || c->in[4] > 2) goto fail;
                c->in_len = 0;
                c->state = ST_READY;
                ready++;
                inflight--;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            }
            continue;
        fail:
            if (dead < 5) fprintf(stderr, "client %d failed in state %d\n", i, c->state);
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            close(c->fd);
            c->fd = -1;
            c->state = ST_DEAD;
            dead++;
            inflight--;
        }
    }
    printf("READY %d failed %d in %.2f s\n", ready, n - ready, now_s() - start);
    fflush(stdout);
    /* hold: until stdin closes or says anything, or --hold passes */
    struct pollfd pfd = {.fd = 0, .events = POLLIN};
    double end = now_s() + hold;
    while (now_s() < end) {
        int r = poll(&pfd, 1, 200);
        if (r > 0) break;
    }
    /* still connected? a broker that dropped idle clients would show here */
    int alive = 0;
    for (int i = 0; i < n; i++) {
        if (cs[i].state != ST_READY) continue;
        uint8_t x;
        ssize_t r = recv(cs[i].fd, &x, 1, MSG_DONTWAIT | MSG_PEEK);
        if (r < 0 && errno == EAGAIN) alive++;
    }
    printf("DONE alive %d\n", alive);
    for (int i = 0; i < n; i++)
        if (cs[i].fd > 0) close(cs[i].fd);
    free(cs);
    return ready == n ? 0 : 1;
}
