/*
 * loadgen: the MQTT load generator of the listener benchmark. It runs
 * fan-in (N publishers -> one wildcard subscriber) and fan-out (one
 * publisher -> S subscribers, --subscribers) scenarios, QoS 0 or 1, all in
 * this process, against any broker and reports what the subscribers received:
 * msgs/s and end-to-end latency percentiles from a CLOCK_MONOTONIC send time
 * carried in each payload, plus lost messages found from per-publisher
 * sequence numbers. It speaks MQTT 3.1.1 and 5 itself over plain TCP so that
 * it measures the broker, not a client library. With --sub-host/--sub-port
 * the subscribers connect to another broker than the publishers, which
 * measures a forwarding path (a bridge, an upstream session) end to end.
 *
 * It must not use mqrouter's own code (it measures mqrouter, and has to work
 * against a tree where mqrouter does not build) nor Paho, and it must never
 * be the bottleneck: writes are batched, reads are large, publishers sleep on
 * a futex instead of spinning, the subscriber wakes once per batch in closed
 * loop, and one pacer thread serves all publishers at a fixed rate. It
 * reports its own CPU use so that this can be checked. It must always end,
 * even if the broker stalls:
 * every socket call has a short timeout and the main thread enforces a hard
 * deadline of warmup + duration + a few seconds.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/futex.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_S 1000000000ull
#define NS_PER_MS 1000000ull
#define PAYLOAD_MAGIC 0x6d71726cu /* "mqrl": tells our messages from strangers' */
#define PAYLOAD_HDR 24            /* seq u64, send time u64, publisher u32, magic u32 */
#define SOCK_TIMEOUT_MS 100       /* how often a blocked thread looks at the clock */
#define CONNECT_BUDGET_NS (5 * NS_PER_S)
#define DRAIN_NS (2 * NS_PER_S) /* wait this long after the last send for stragglers */
#define HARD_GRACE_NS (4 * NS_PER_S)
#define KEEPALIVE_S 60
#define SUB_RBUF (256 * 1024)
#define PUB_RBUF 4096
#define MAX_PUBLISHERS 1024
#define MAX_SUBSCRIBERS 1024

/* ---- options ---- */

struct config {
    const char *host;
    const char *port;
    const char *sub_host; /* where the subscribers connect; NULL: same as host */
    const char *sub_port; /* NULL: same as port */
    const char *label;
    const char *prefix;
    int publishers;
    int subscribers; /* each gets every message */
    int payload;
    double duration;
    double warmup;
    uint64_t window;
    double rate; /* total msgs/s; 0 means closed-loop mode */
    int qos;
    int protocol;         /* 4 = MQTT 3.1.1, 5 = MQTT 5 */
    int batch;            /* most PUBLISH packets per send() */
    long rcvlowat;        /* subscriber SO_RCVLOWAT; -1 = automatic */
    uint64_t coalesce_ns; /* fixed rate: send what is due this soon in one wake-up */
};

static struct config cfg = {
    .host = "127.0.0.1",
    .port = "1883",
    .label = "broker",
    .prefix = "bench",
    .publishers = 4,
    .subscribers = 1,
    .payload = 64,
    .duration = 10,
    .warmup = 2,
    /* Smaller windows left Mosquitto idle part of the time on loopback: the
     * publishers stalled on its receive window. From 2000 up it stays busy. */
    .window = 4000,
    .rate = 0,
    .qos = 0,
    .protocol = 4,
    .batch = 1024,
    .rcvlowat = -1,
    .coalesce_ns = 50000,
};

/* ---- shared run state ---- */

/* Read by every thread; written once by main before the threads start. */
static uint64_t t_start, t_measure, t_end, t_pub_giveup, t_hard;
static atomic_int stop_flag;
static atomic_int pubs_running;
static atomic_int run_error;   /* a connection failed or the broker closed it */
static atomic_int run_timeout; /* a send was stuck past the deadline */

/* One per publisher. The first line is written by the subscriber and read by
 * the publisher, the second the other way round, the rest is private to one
 * thread; keeping them on separate cache lines keeps the threads from
 * slowing each other down. */
struct pub {
    alignas(64) _Atomic uint64_t rx_mark; /* highest sequence seen + 1 */
    _Atomic uint64_t wake_at;             /* publisher sleeps until rx_mark >= this; 0 = awake */
    _Atomic uint32_t futex_word;

    alignas(64) _Atomic uint64_t sent;

    /* publisher private */
    alignas(64) int idx;
    int fd;
    pthread_t thread;
    int started;
    unsigned char *tmpl; /* one complete PUBLISH packet; copied and patched per message */
    size_t pkt_len;
    size_t payload_off;
    size_t pid_off;
    unsigned char *out;
    uint64_t acked; /* PUBACKs seen (QoS 1) */
    uint64_t inflight_max;
    uint64_t last_tx;
    uint64_t last_input;
    unsigned char *rbuf;
    size_t rlen;

    /* subscriber private: next_seq is the lowest over the subscribers (what
     * every one of them has seen), got and ooo their sums */
    alignas(64) uint64_t next_seq;
    uint64_t got;
    uint64_t ooo; /* duplicates or out of order: never expected on one TCP stream */
};

/* One subscribing connection (all served by the subscriber thread). */
struct sconn {
    int fd;
    unsigned char *buf;
    size_t start, end;
    int lowat;          /* SO_RCVLOWAT is above 1 until the load stops */
    uint64_t *next_seq; /* per publisher */
};
static struct sconn *sconns;

static struct pub *pubs;

struct hist;
static struct sub {
    pthread_t thread;
    int started;
    uint64_t got;       /* our messages, whole run */
    uint64_t in_window; /* our messages received inside the measured interval */
    uint64_t foreign;   /* PUBLISH packets on the filter that are not ours */
    uint64_t last_rx;   /* time the last of our messages arrived */
    uint64_t max_gap;   /* longest time without a message inside the measured interval */
    struct hist *hist;
} sub;

/* ---- small helpers ---- */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static void sleep_until(uint64_t t)
{
    struct timespec ts = {.tv_sec = (time_t)(t / NS_PER_S), .tv_nsec = (long)(t % NS_PER_S)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p) {
        fprintf(stderr, "loadgen: out of memory\n");
        exit(1);
    }
    return p;
}

static int futex_wait(_Atomic uint32_t *word, uint32_t val, uint64_t timeout_ns)
{
    struct timespec ts = {.tv_sec = (time_t)(timeout_ns / NS_PER_S),
                          .tv_nsec = (long)(timeout_ns % NS_PER_S)};
    return (int)syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, val, &ts, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *word)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void put16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static unsigned get16(const unsigned char *p)
{
    return ((unsigned)p[0] << 8) | p[1];
}

/* MQTT variable byte integer; returns bytes written (1..4). */
static size_t put_varint(unsigned char *p, uint32_t v)
{
    size_t n = 0;
    do {
        unsigned char b = v & 0x7f;
        v >>= 7;
        p[n++] = (unsigned char)(v ? b | 0x80 : b);
    } while (v);
    return n;
}

/* Returns bytes used, 0 if more input is needed, -1 if malformed. */
static int get_varint(const unsigned char *p, size_t avail, uint32_t *out)
{
    uint32_t v = 0;
    for (size_t i = 0; i < 4; i++) {
        if (i >= avail) return 0;
        v |= (uint32_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            *out = v;
            return (int)i + 1;
        }
    }
    return -1;
}

/* Finds the next complete packet in buf[*start, end). Returns 1 and fills the
 * out-parameters when one is there, 0 when more bytes are needed, -1 when the
 * stream is malformed. */
static int next_packet(const unsigned char *buf, size_t *start, size_t end, unsigned *type,
                       const unsigned char **body, uint32_t *len)
{
    size_t avail = end - *start;
    if (avail < 2) return 0;
    const unsigned char *p = buf + *start;
    uint32_t rl;
    int n = get_varint(p + 1, avail - 1, &rl);
    if (n <= 0) return n;
    if (avail < 1 + (size_t)n + rl) return 0;
    *type = p[0];
    *body = p + 1 + n;
    *len = rl;
    *start += 1 + (size_t)n + rl;
    return 1;
}

/* Sends everything or gives up at the publishers' deadline; a blocked send
 * wakes every SOCK_TIMEOUT_MS (SO_SNDTIMEO) to look at the clock. */
static int send_all(int fd, const unsigned char *buf, size_t len)
{
    while (len) {
        ssize_t w = send(fd, buf, len, MSG_NOSIGNAL);
        if (w > 0) {
            buf += w;
            len -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (atomic_load(&stop_flag) || mono_ns() >= t_pub_giveup) {
                atomic_store(&run_timeout, 1);
                return -ETIMEDOUT;
            }
            continue;
        }
        return w < 0 ? -errno : -EPIPE;
    }
    return 0;
}

/* ---- latency histogram ----
 * Log-linear: exact below 256 ns, then 128 buckets per power of two, so any
 * value is off by less than 0.4%. Only the subscriber thread writes it. */

#define HIST_SUB 128
#define HIST_BUCKETS (256 + 56 * HIST_SUB)

struct hist {
    uint64_t count[HIST_BUCKETS];
    uint64_t n;
    uint64_t max;
};

static unsigned hist_index(uint64_t v)
{
    if (v < 256) return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - 7;
    unsigned idx = 256 + (shift - 1) * HIST_SUB + (unsigned)((v >> shift) - HIST_SUB);
    return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

/* Middle of the bucket. */
static uint64_t hist_value(unsigned idx)
{
    if (idx < 256) return idx;
    unsigned shift = (idx - 256) / HIST_SUB + 1;
    uint64_t lo = ((uint64_t)((idx - 256) % HIST_SUB) + HIST_SUB) << shift;
    return lo + ((1ull << shift) >> 1);
}

static void hist_add(struct hist *h, uint64_t v)
{
    h->count[hist_index(v)]++;
    h->n++;
    if (v > h->max) h->max = v;
}

static uint64_t hist_pct(const struct hist *h, double pct)
{
    if (!h->n) return 0;
    uint64_t rank = (uint64_t)((pct / 100.0) * (double)h->n + 0.5);
    if (rank < 1) rank = 1;
    if (rank > h->n) rank = h->n;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->count[i];
        if (seen >= rank) {
            uint64_t v = hist_value(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

/* ---- connection set-up (runs on the main thread, before the clock starts) ---- */

static int set_timeouts(int fd)
{
    struct timeval tv = {.tv_sec = 0, .tv_usec = SOCK_TIMEOUT_MS * 1000};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0) return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0) return -errno;
    return 0;
}

static int tcp_connect(const struct addrinfo *ai, uint64_t deadline)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
        int e = -errno;
        close(fd);
        return e;
    }
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};
    uint64_t now = mono_ns();
    int ms = now < deadline ? (int)((deadline - now) / NS_PER_MS) : 0;
    int r = poll(&pfd, 1, ms);
    int err = 0;
    socklen_t elen = sizeof err;
    if (r == 0)
        err = ETIMEDOUT;
    else if (r < 0)
        err = errno;
    else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
        err = errno;
    if (err) {
        close(fd);
        return -err;
    }
    /* Back to blocking: the timeouts below bound every call. */
    if (fcntl(fd, F_SETFL, 0) < 0 || set_timeouts(fd) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

/* Reads until one complete packet is buffered, or the deadline passes. */
static int read_packet(int fd, unsigned char *buf, size_t cap, size_t *start, size_t *end,
                       uint64_t deadline, unsigned *type, const unsigned char **body, uint32_t *len)
{
    for (;;) {
        int r = next_packet(buf, start, *end, type, body, len);
        if (r != 0) return r < 0 ? -EPROTO : 0;
        if (*start > 0) {
            memmove(buf, buf + *start, *end - *start);
            *end -= *start;
            *start = 0;
        }
        if (*end == cap) return -EMSGSIZE;
        if (mono_ns() >= deadline) return -ETIMEDOUT;
        ssize_t n = recv(fd, buf + *end, cap - *end, 0);
        if (n == 0) return -ECONNRESET;
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
            return -errno;
        }
        *end += (size_t)n;
    }
}

/* Walks MQTT 5 properties and picks out the two a client has to obey here. */
static int parse_connack_props(const unsigned char *p, size_t len, unsigned *recv_max,
                               unsigned *server_keepalive)
{
    size_t i = 0;
    while (i < len) {
        unsigned id = p[i++];
        size_t need;
        switch (id) {
        case 0x24:
        case 0x25:
        case 0x28:
        case 0x29:
        case 0x2a:
            need = 1;
            break;
        case 0x13:
        case 0x21:
        case 0x22:
            need = 2;
            break;
        case 0x11:
        case 0x27:
            need = 4;
            break;
        case 0x12:
        case 0x1a:
        case 0x1c:
        case 0x1f:
        case 0x15:
        case 0x16:
            if (i + 2 > len) return -EPROTO;
            need = 2 + get16(p + i);
            break;
        case 0x26:
            if (i + 2 > len) return -EPROTO;
            need = 2 + get16(p + i);
            if (i + need + 2 > len) return -EPROTO;
            need += 2 + get16(p + i + need);
            break;
        default:
            return -EPROTO;
        }
        if (i + need > len) return -EPROTO;
        if (id == 0x21) *recv_max = get16(p + i);
        if (id == 0x13) *server_keepalive = get16(p + i);
        i += need;
    }
    return 0;
}

/* CONNECT + CONNACK. Returns the socket, or a negative errno with a message
 * already printed. recv_max receives the broker's Receive Maximum (MQTT 5). */
static int mqtt_connect(const struct addrinfo *ai, const char *client_id, uint64_t deadline,
                        unsigned char *buf, size_t cap, size_t *start, size_t *end,
                        unsigned *recv_max)
{
    int fd = tcp_connect(ai, deadline);
    if (fd < 0) {
        char h[NI_MAXHOST] = "?", s[NI_MAXSERV] = "?";
        getnameinfo(ai->ai_addr, ai->ai_addrlen, h, sizeof h, s, sizeof s,
                    NI_NUMERICHOST | NI_NUMERICSERV);
        fprintf(stderr, "loadgen: connect to %s:%s: %s\n", h, s, strerror(-fd));
        return fd;
    }
    unsigned char pkt[128];
    size_t idlen = strlen(client_id);
    size_t rl = 10 + (cfg.protocol == 5 ? 1 : 0) + 2 + idlen;
    size_t n = 0;
    pkt[n++] = 0x10;
    n += put_varint(pkt + n, (uint32_t)rl);
    put16(pkt + n, 4);
    memcpy(pkt + n + 2, "MQTT", 4);
    n += 6;
    pkt[n++] = (unsigned char)cfg.protocol;
    pkt[n++] = 0x02; /* clean session / clean start, no will, no credentials */
    put16(pkt + n, KEEPALIVE_S);
    n += 2;
    if (cfg.protocol == 5) pkt[n++] = 0; /* no properties */
    put16(pkt + n, (unsigned)idlen);
    memcpy(pkt + n + 2, client_id, idlen);
    n += 2 + idlen;

    int r = send_all(fd, pkt, n);
    unsigned type = 0;
    const unsigned char *body = NULL;
    uint32_t len = 0;
    *start = *end = 0;
    if (r == 0) r = read_packet(fd, buf, cap, start, end, deadline, &type, &body, &len);
    if (r < 0) {
        fprintf(stderr, "loadgen: %s: no CONNACK: %s\n", client_id, strerror(-r));
        close(fd);
        return r;
    }
    if ((type & 0xf0) != 0x20 || len < 2 || body[1] != 0) {
        fprintf(stderr, "loadgen: %s: connection refused (packet 0x%02x, code %u)\n", client_id,
                type, len >= 2 ? body[1] : 0);
        close(fd);
        return -ECONNREFUSED;
    }
    *recv_max = 65535;
    if (cfg.protocol == 5) {
        uint32_t plen = 0;
        int vn = len > 2 ? get_varint(body + 2, len - 2, &plen) : -1;
        unsigned ska = KEEPALIVE_S;
        if (vn <= 0 || 2 + (size_t)vn + plen > len ||
            parse_connack_props(body + 2 + vn, plen, recv_max, &ska) < 0) {
            fprintf(stderr, "loadgen: %s: malformed CONNACK\n", client_id);
            close(fd);
            return -EPROTO;
        }
        if (ska != 0 && ska < KEEPALIVE_S / 2) {
            /* Our pings come every KEEPALIVE_S/2; shorter server keepalives
             * are not worth the code for a benchmark. */
            fprintf(stderr, "loadgen: %s: server keepalive %us is too short\n", client_id, ska);
            close(fd);
            return -EPROTO;
        }
    }
    return fd;
}

static int mqtt_subscribe(struct sconn *sc, const char *filter, uint64_t deadline)
{
    int fd = sc->fd;
    unsigned char pkt[512];
    size_t flen = strlen(filter);
    if (flen > 400) return -ENAMETOOLONG;
    size_t rl = 2 + (cfg.protocol == 5 ? 1 : 0) + 2 + flen + 1;
    size_t n = 0;
    pkt[n++] = 0x82;
    n += put_varint(pkt + n, (uint32_t)rl);
    put16(pkt + n, 1); /* packet id */
    n += 2;
    if (cfg.protocol == 5) pkt[n++] = 0;
    put16(pkt + n, (unsigned)flen);
    memcpy(pkt + n + 2, filter, flen);
    n += 2 + flen;
    pkt[n++] = (unsigned char)cfg.qos; /* v5: no-local 0, retain handling 0 */
    int r = send_all(fd, pkt, n);
    if (r < 0) return r;
    unsigned type = 0;
    const unsigned char *body = NULL;
    uint32_t len = 0;
    for (;;) {
        r = read_packet(fd, sc->buf, SUB_RBUF, &sc->start, &sc->end, deadline, &type, &body, &len);
        if (r < 0) return r;
        if ((type & 0xf0) == 0x90) break;
        /* A retained message on the filter may come first; it is not ours. */
    }
    size_t off = 2;
    if (cfg.protocol == 5) {
        uint32_t plen = 0;
        int vn = len > 2 ? get_varint(body + 2, len - 2, &plen) : -1;
        if (vn <= 0) return -EPROTO;
        off += (size_t)vn + plen;
    }
    if (len < off + 1 || get16(body) != 1) return -EPROTO;
    if (body[off] != cfg.qos) {
        fprintf(stderr, "loadgen: SUBACK granted 0x%02x, asked QoS %d\n", body[off], cfg.qos);
        return -EPERM;
    }
    return 0;
}

static void mqtt_disconnect(int fd)
{
    /* Remaining length 0 means "normal disconnection" in both versions. */
    static const unsigned char pkt[2] = {0xe0, 0x00};
    (void)!send(fd, pkt, sizeof pkt, MSG_NOSIGNAL | MSG_DONTWAIT);
    shutdown(fd, SHUT_WR);
}

static void send_pingreq(int fd)
{
    static const unsigned char pkt[2] = {0xc0, 0x00};
    (void)!send(fd, pkt, sizeof pkt, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* One PUBLISH packet per publisher with the payload filled in; messages are
 * copies of it with the sequence, time and packet id patched. */
static void build_template(struct pub *p)
{
    char topic[512];
    int tlen = snprintf(topic, sizeof topic, "%s/%d/data", cfg.prefix, p->idx);
    size_t vh = 2 + (size_t)tlen + (cfg.qos ? 2 : 0) + (cfg.protocol == 5 ? 1 : 0);
    uint32_t rl = (uint32_t)(vh + (size_t)cfg.payload);
    unsigned char hdr[8];
    size_t hn = put_varint(hdr, rl);
    p->pkt_len = 1 + hn + rl;
    p->tmpl = xcalloc(1, p->pkt_len);
    unsigned char *t = p->tmpl;
    size_t n = 0;
    t[n++] = (unsigned char)(0x30 | (cfg.qos << 1));
    memcpy(t + n, hdr, hn);
    n += hn;
    put16(t + n, (unsigned)tlen);
    memcpy(t + n + 2, topic, (size_t)tlen);
    n += 2 + (size_t)tlen;
    p->pid_off = n;
    if (cfg.qos) n += 2;
    if (cfg.protocol == 5) t[n++] = 0;
    p->payload_off = n;
    uint32_t idx = (uint32_t)p->idx, magic = PAYLOAD_MAGIC;
    memcpy(t + n + 16, &idx, 4);
    memcpy(t + n + 20, &magic, 4);
    for (size_t i = PAYLOAD_HDR; i < (size_t)cfg.payload; i++)
        t[n + i] = (unsigned char)('a' + i % 26);
}

static inline unsigned char *emit(struct pub *p, unsigned char *dst, uint64_t seq, uint64_t t)
{
    memcpy(dst, p->tmpl, p->pkt_len);
    memcpy(dst + p->payload_off, &seq, 8);
    memcpy(dst + p->payload_off + 8, &t, 8);
    if (cfg.qos) put16(dst + p->pid_off, (unsigned)(seq % 65535 + 1));
    return dst + p->pkt_len;
}

/* ---- publisher thread ---- */

/* Reads what the broker sent this publisher: PUBACKs (QoS 1), PINGRESP, or
 * a DISCONNECT. Waits up to wait_ms for the first byte. */
static int pub_input(struct pub *p, int wait_ms)
{
    if (wait_ms > 0) {
        struct pollfd pfd = {.fd = p->fd, .events = POLLIN};
        if (poll(&pfd, 1, wait_ms) <= 0) return 0;
    }
    for (;;) {
        ssize_t n = recv(p->fd, p->rbuf + p->rlen, PUB_RBUF - p->rlen, MSG_DONTWAIT);
        if (n == 0) return -ECONNRESET;
        if (n < 0) {
            if (errno == EINTR) continue;
            return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -errno;
        }
        size_t start = 0, end = p->rlen + (size_t)n;
        unsigned type;
        const unsigned char *body;
        uint32_t len;
        int r;
        while ((r = next_packet(p->rbuf, &start, end, &type, &body, &len)) == 1) {
            unsigned t = type & 0xf0;
            if (t == 0x40)
                p->acked++;
            else if (t == 0xe0)
                return -ECONNRESET;
        }
        if (r < 0 || (start == 0 && end == PUB_RBUF)) return -EPROTO;
        memmove(p->rbuf, p->rbuf + start, end - start);
        p->rlen = end - start;
    }
}

/* Pings, and looks for a broker-side close, when nothing else would. */
static int pub_housekeeping(struct pub *p, uint64_t now)
{
    if (cfg.qos == 0 && now - p->last_input < 100 * NS_PER_MS) return 0;
    p->last_input = now;
    if (now - p->last_tx > (uint64_t)KEEPALIVE_S * NS_PER_S / 2) {
        send_pingreq(p->fd);
        p->last_tx = now;
    }
    return pub_input(p, 0);
}

static void pub_fail(struct pub *p, int err)
{
    if (err == -ETIMEDOUT) return; /* already counted as a timeout */
    fprintf(stderr, "loadgen: publisher %d: %s\n", p->idx, strerror(-err));
    atomic_store(&run_error, 1);
    atomic_store(&stop_flag, 1);
}

static void run_closed(struct pub *p)
{
    const uint64_t w = cfg.window;
    /* Refill only once a quarter of the window is free, so sends stay big. */
    uint64_t min_free = w / 4;
    if (min_free < 1) min_free = 1;
    if (min_free > (uint64_t)cfg.batch) min_free = (uint64_t)cfg.batch;
    uint64_t seq = 0;
    for (;;) {
        uint64_t now = mono_ns();
        if (now >= t_end || atomic_load(&stop_flag)) return;
        int r = pub_housekeeping(p, now);
        if (r < 0) {
            pub_fail(p, r);
            return;
        }
        uint64_t rx = atomic_load(&p->rx_mark);
        uint64_t out = seq > rx ? seq - rx : 0;
        uint64_t room = out < w ? w - out : 0;
        if (room < min_free) {
            /* Sleep until the subscriber has seen enough; it wakes us. The
             * store/load pairs on wake_at and rx_mark are seq_cst on both
             * sides, so either we see its progress or it sees our wake_at. */
            uint64_t target = seq - w + min_free;
            atomic_store(&p->futex_word, 0);
            atomic_store(&p->wake_at, target);
            if (atomic_load(&p->rx_mark) < target) {
                uint64_t left = t_end - now;
                futex_wait(&p->futex_word, 0, left < 50 * NS_PER_MS ? left : 50 * NS_PER_MS);
            }
            atomic_store(&p->wake_at, 0);
            continue;
        }
        if (cfg.qos) {
            uint64_t infl = seq - p->acked;
            uint64_t iroom = infl < p->inflight_max ? p->inflight_max - infl : 0;
            if (iroom == 0) {
                r = pub_input(p, 10);
                if (r < 0) {
                    pub_fail(p, r);
                    return;
                }
                continue;
            }
            if (iroom < room) room = iroom;
        }
        uint64_t n = room < (uint64_t)cfg.batch ? room : (uint64_t)cfg.batch;
        unsigned char *o = p->out;
        now = mono_ns();
        for (uint64_t i = 0; i < n; i++)
            o = emit(p, o, seq + i, now);
        r = send_all(p->fd, p->out, (size_t)(o - p->out));
        if (r < 0) {
            pub_fail(p, r);
            return;
        }
        seq += n;
        atomic_store_explicit(&p->sent, seq, memory_order_release);
        p->last_tx = now;
    }
}

/* Open loop on an absolute schedule: message k of publisher i is due at
 * start + (i / N + k) * interval, so the N schedules interleave evenly. A
 * message sent late carries its due time, not the time it really left, so
 * a stalled broker (or a late generator) shows up as latency instead of
 * silently thinning the load (no coordinated omission).
 *
 * One pacer thread drives every publisher socket: a sleep and a wake-up per
 * message cost more CPU than the broker spends on it. Each wake-up sends
 * what is due within the next --coalesce-us; a message sent that early
 * carries its real send time, so early never shortens a latency. */
static void *pacer_main(void *arg)
{
    (void)arg;
    const int np = cfg.publishers;
    const double interval = (double)NS_PER_S * np / cfg.rate;
    const uint64_t ahead = cfg.coalesce_ns;
    uint64_t *k = xcalloc((size_t)np, sizeof *k);
    struct pollfd *pfd = cfg.qos ? xcalloc((size_t)np, sizeof *pfd) : NULL;
    /* Default timer slack (50 us) would add itself to every latency. */
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
    sleep_until(t_start);
    for (int i = 0; i < np; i++)
        pubs[i].last_tx = pubs[i].last_input = mono_ns();
    for (;;) {
        if (atomic_load(&stop_flag)) break;
        uint64_t next = UINT64_MAX;
        int nblocked = 0, nsent = 0, r = 0;
        struct pub *p = NULL;
        for (int i = 0; i < np && r == 0; i++) {
            p = &pubs[i];
            uint64_t now = mono_ns();
            if ((r = pub_housekeeping(p, now)) < 0) break;
            uint64_t due = t_start + (uint64_t)(interval * ((double)i / np + (double)k[i]));
            unsigned char *o = p->out;
            int n = 0;
            while (n < cfg.batch && due <= now + ahead && due < t_end) {
                if (cfg.qos && k[i] - p->acked >= p->inflight_max) {
                    pfd[nblocked++] = (struct pollfd){.fd = p->fd, .events = POLLIN};
                    break;
                }
                o = emit(p, o, k[i], due < now ? due : now);
                n++;
                k[i]++;
                due = t_start + (uint64_t)(interval * ((double)i / np + (double)k[i]));
            }
            if (due < t_end && due < next) next = due;
            if (n == 0) continue;
            if ((r = send_all(p->fd, p->out, (size_t)(o - p->out))) < 0) break;
            atomic_store_explicit(&p->sent, k[i], memory_order_release);
            p->last_tx = now;
            nsent++;
        }
        if (r < 0) {
            pub_fail(p, r);
            break;
        }
        if (next == UINT64_MAX) break; /* every schedule has reached t_end */
        if (nblocked && !nsent) {
            /* QoS 1 in-flight limit everywhere it is due: wait for PUBACKs. */
            poll(pfd, (nfds_t)nblocked, 10);
            continue;
        }
        uint64_t now = mono_ns();
        if (next > now + ahead)
            sleep_until(next - now > 100 * NS_PER_MS ? now + 100 * NS_PER_MS : next);
    }
    free(k);
    free(pfd);
    atomic_store(&pubs_running, 0);
    return NULL;
}

static void *pub_main(void *arg)
{
    struct pub *p = arg;
    sleep_until(t_start);
    p->last_tx = p->last_input = mono_ns();
    run_closed(p);
    atomic_fetch_sub(&pubs_running, 1);
    return NULL;
}

/* ---- subscriber thread ---- */

static int sub_handle_publish(struct sconn *sc, unsigned type, const unsigned char *b, uint32_t len,
                              uint64_t now, unsigned char **ack)
{
    unsigned qos = (type >> 1) & 3;
    if (len < 2) return -EPROTO;
    size_t off = 2 + get16(b);
    if (qos) {
        if (off + 2 > len) return -EPROTO;
        if (qos == 1) {
            unsigned char *a = *ack;
            a[0] = 0x40;
            a[1] = 0x02;
            a[2] = b[off];
            a[3] = b[off + 1];
            *ack = a + 4;
        }
        off += 2;
    }
    if (cfg.protocol == 5) {
        uint32_t plen;
        int vn = off < len ? get_varint(b + off, len - off, &plen) : -1;
        if (vn <= 0) return -EPROTO;
        off += (size_t)vn + plen;
    }
    if (off > len) return -EPROTO;
    const unsigned char *pl = b + off;
    uint64_t seq, ts;
    uint32_t idx, magic;
    if (len - off < PAYLOAD_HDR) goto foreign;
    memcpy(&magic, pl + 20, 4);
    memcpy(&idx, pl + 16, 4);
    if (magic != PAYLOAD_MAGIC || idx >= (uint32_t)cfg.publishers) goto foreign;
    memcpy(&seq, pl, 8);
    memcpy(&ts, pl + 8, 8);
    struct pub *p = &pubs[idx];
    if (seq >= sc->next_seq[idx]) {
        sc->next_seq[idx] = seq + 1; /* a gap here is a lost message, counted at the end */
        p->got++;
        sub.got++;
    } else {
        p->ooo++;
    }
    if (now >= t_measure && now < t_end) sub.in_window++;
    if (ts >= t_measure && ts < t_end) hist_add(sub.hist, now > ts ? now - ts : 0);
    sub.last_rx = now;
    return 0;
foreign:
    sub.foreign++;
    return 0;
}

static void sub_fail(const char *what, int err)
{
    fprintf(stderr, "loadgen: subscriber: %s: %s\n", what, strerror(-err));
    atomic_store(&run_error, 1);
    atomic_store(&stop_flag, 1);
}

/* Reads what one subscriber socket has and handles every whole packet;
 * 0, or a negative errno (the run fails). */
static int sub_read(struct sconn *sc, unsigned char *acks)
{
    if (sc->end == SUB_RBUF) return -EMSGSIZE;
    ssize_t n = recv(sc->fd, sc->buf + sc->end, SUB_RBUF - sc->end, MSG_DONTWAIT);
    if (n < 0) return errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
    if (n == 0) return -ECONNRESET;
    sc->end += (size_t)n;
    uint64_t now = mono_ns();
    uint64_t prev_rx = sub.last_rx > t_measure ? sub.last_rx : t_measure;
    unsigned type;
    const unsigned char *body;
    uint32_t len;
    unsigned char *ack = acks;
    int r, err = 0;
    while ((r = next_packet(sc->buf, &sc->start, sc->end, &type, &body, &len)) == 1) {
        unsigned t = type & 0xf0;
        if (t == 0x30)
            err = sub_handle_publish(sc, type, body, len, now, &ack);
        else if (t == 0xe0)
            err = -ECONNRESET;
        if (err) break;
    }
    if (r < 0) err = -EPROTO;
    if (sub.last_rx > prev_rx && sub.last_rx <= t_end && sub.last_rx - prev_rx > sub.max_gap)
        sub.max_gap = sub.last_rx - prev_rx;
    if (err) return err;
    if (sc->start) {
        memmove(sc->buf, sc->buf + sc->start, sc->end - sc->start);
        sc->end -= sc->start;
        sc->start = 0;
    }
    if (ack != acks && send_all(sc->fd, acks, (size_t)(ack - acks)) < 0) return -EIO;
    return 0;
}

static void *sub_main(void *arg)
{
    (void)arg;
    const int np = cfg.publishers, ns = cfg.subscribers;
    uint64_t last_ping = mono_ns(), drain_from = 0;
    /* Room for one PUBACK per packet a full read buffer can hold. */
    unsigned char *acks = cfg.qos ? xcalloc(SUB_RBUF / 2 + 16, 1) : NULL;
    struct pollfd *pfd = xcalloc((size_t)ns, sizeof *pfd);
    for (int i = 0; i < ns; i++) {
        pfd[i].fd = sconns[i].fd;
        pfd[i].events = POLLIN;
    }
    int lowat = sconns[0].lowat;
    for (;;) {
        if (atomic_load(&stop_flag)) break;
        uint64_t now = mono_ns();
        if (atomic_load(&pubs_running) == 0) {
            uint64_t sent = 0;
            for (int i = 0; i < np; i++)
                sent += atomic_load(&pubs[i].sent);
            if (sub.got >= sent * (uint64_t)ns) break;
            if (!drain_from) drain_from = now;
            if (now - drain_from >= DRAIN_NS) break; /* the rest counts as lost */
        }
        if (now >= t_hard) break;
        if (now - last_ping > (uint64_t)KEEPALIVE_S * NS_PER_S / 2) {
            for (int i = 0; i < ns; i++)
                send_pingreq(sconns[i].fd);
            last_ping = now;
        }
        if (lowat && now >= t_end) {
            /* The low-water mark drops to 1 at the end of the load, so the
             * last, short batch is handed over at once. */
            int one = 1;
            for (int i = 0; i < ns; i++)
                setsockopt(sconns[i].fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one);
            lowat = 0;
        }
        uint64_t left = lowat ? (t_end - now + NS_PER_MS - 1) / NS_PER_MS : SOCK_TIMEOUT_MS;
        int k = poll(pfd, (nfds_t)ns, left < SOCK_TIMEOUT_MS ? (int)left : SOCK_TIMEOUT_MS);
        if (k < 0 && errno != EINTR) {
            sub_fail("poll", -errno);
            break;
        }
        int err = 0;
        for (int i = 0; k > 0 && i < ns && !err; i++) {
            if (!pfd[i].revents) continue;
            err = sub_read(&sconns[i], acks);
        }
        if (err) {
            sub_fail("read", err);
            break;
        }
        for (int i = 0; i < np; i++) {
            struct pub *p = &pubs[i];
            uint64_t m = sconns[0].next_seq[i];
            for (int j = 1; j < ns; j++)
                if (sconns[j].next_seq[i] < m) m = sconns[j].next_seq[i];
            p->next_seq = m;
            if (atomic_load_explicit(&p->rx_mark, memory_order_relaxed) == p->next_seq) continue;
            atomic_store(&p->rx_mark, p->next_seq);
            uint64_t w = atomic_load(&p->wake_at);
            if (w && p->next_seq >= w && atomic_exchange(&p->wake_at, 0) != 0) {
                atomic_store(&p->futex_word, 1);
                futex_wake(&p->futex_word);
            }
        }
    }
    free(pfd);
    free(acks);
    return NULL;
}

/* ---- main ---- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loadgen [options]\n"
            "  N publishers -> S subscribers on '<prefix>/#', all in this process: fan-in\n"
            "  (--publishers 4 --subscribers 1) or fan-out (--publishers 1 --subscribers 50).\n"
            "  --subscribers S     subscribing connections, each gets every message (1)\n"
            "  --host H            broker address (127.0.0.1)\n"
            "  --port P            broker port (1883)\n"
            "  --sub-host H        the subscribers connect to H instead of --host, e.g. the\n"
            "                      far end of a bridge (default: --host)\n"
            "  --sub-port P        the subscribers connect to port P (default: --port)\n"
            "  --label NAME        broker name printed in the results (broker)\n"
            "  --publishers N      publishing connections (4)\n"
            "  --payload BYTES     payload size, >= %d (64)\n"
            "  --duration S        measured seconds (10)\n"
            "  --warmup S          seconds of load before measuring (2)\n"
            "  --window W          closed loop: most messages per publisher sent but not yet\n"
            "                      received (4000)\n"
            "  --rate R            fixed-rate mode: R msgs/s in total, on an absolute schedule;\n"
            "                      latency counts from the scheduled time (0 = closed loop)\n"
            "  --topic-prefix P    publishers use P/<index>/data (bench)\n"
            "  --qos 0|1           (0)\n"
            "  --protocol 4|5      MQTT 3.1.1 or 5 (4)\n"
            "  --batch N           most PUBLISH packets per send() (1024)\n"
            "  --rcvlowat BYTES    subscriber SO_RCVLOWAT; -1 = automatic: up to 64 KiB in\n"
            "                      closed loop, 0 (off) in fixed-rate mode (-1)\n"
            "  --coalesce-us US    fixed rate: one wake-up sends all messages due within US\n"
            "                      microseconds; those sent early carry their real send time\n"
            "                      (50; 0 = wake for every due time)\n"
            "Prints one line for people and one starting with RESULT for scripts.\n"
            "Exit status: 0 ok, 1 error, 2 usage, 3 timeout (broker stalled).\n",
            PAYLOAD_HDR);
}

static int parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"host", required_argument, 0, 'h'},
        {"port", required_argument, 0, 'p'},
        {"sub-host", required_argument, 0, 'j'},
        {"sub-port", required_argument, 0, 'k'},
        {"label", required_argument, 0, 'l'},
        {"publishers", required_argument, 0, 'n'},
        {"subscribers", required_argument, 0, 'S'},
        {"payload", required_argument, 0, 's'},
        {"duration", required_argument, 0, 'd'},
        {"warmup", required_argument, 0, 'w'},
        {"window", required_argument, 0, 'W'},
        {"rate", required_argument, 0, 'r'},
        {"topic-prefix", required_argument, 0, 't'},
        {"qos", required_argument, 0, 'q'},
        {"protocol", required_argument, 0, 'V'},
        {"batch", required_argument, 0, 'b'},
        {"rcvlowat", required_argument, 0, 'L'},
        {"coalesce-us", required_argument, 0, 'C'},
        {"help", no_argument, 0, 'H'},
        {0, 0, 0, 0},
    };
    int c;
    char *e;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        errno = 0;
        e = NULL;
        switch (c) {
        case 'h':
            cfg.host = optarg;
            break;
        case 'p':
            cfg.port = optarg;
            break;
        case 'j':
            cfg.sub_host = optarg;
            break;
        case 'k':
            cfg.sub_port = optarg;
            break;
        case 'l':
            cfg.label = optarg;
            break;
        case 't':
            cfg.prefix = optarg;
            break;
        case 'S':
            cfg.subscribers = (int)strtol(optarg, &e, 10);
            break;
        case 'n':
            cfg.publishers = (int)strtol(optarg, &e, 10);
            break;
        case 's':
            cfg.payload = (int)strtol(optarg, &e, 10);
            break;
        case 'd':
            cfg.duration = strtod(optarg, &e);
            break;
        case 'w':
            cfg.warmup = strtod(optarg, &e);
            break;
        case 'W':
            cfg.window = strtoull(optarg, &e, 10);
            break;
        case 'r':
            cfg.rate = strtod(optarg, &e);
            break;
        case 'q':
            cfg.qos = (int)strtol(optarg, &e, 10);
            break;
        case 'V':
            cfg.protocol = (int)strtol(optarg, &e, 10);
            break;
        case 'b':
            cfg.batch = (int)strtol(optarg, &e, 10);
            break;
        case 'L':
            cfg.rcvlowat = strtol(optarg, &e, 10);
            break;
        case 'C':
            cfg.coalesce_ns = strtoull(optarg, &e, 10) * 1000;
            break;
        case 'H':
            usage(stdout);
            exit(0);
        default:
            return -1;
        }
        if (e && (*e || errno)) {
            fprintf(stderr, "loadgen: bad number '%s'\n", optarg);
            return -1;
        }
    }
    if (optind != argc) return -1;
    const char *bad = NULL;
    if (cfg.subscribers < 1 || cfg.subscribers > MAX_SUBSCRIBERS)
        bad = "--subscribers";
    else if (cfg.publishers < 1 || cfg.publishers > MAX_PUBLISHERS)
        bad = "--publishers";
    else if (cfg.payload < PAYLOAD_HDR || cfg.payload > 65536)
        bad = "--payload";
    else if (!(cfg.duration > 0) || cfg.duration > 86400)
        bad = "--duration";
    else if (!(cfg.warmup >= 0) || cfg.warmup > 86400)
        bad = "--warmup";
    else if (cfg.window < 1 || cfg.window > (1ull << 40))
        bad = "--window";
    else if (!(cfg.rate >= 0) || cfg.rate > 1e9)
        bad = "--rate";
    else if (cfg.qos != 0 && cfg.qos != 1)
        bad = "--qos (0 or 1)";
    else if (cfg.protocol != 4 && cfg.protocol != 5)
        bad = "--protocol (4 or 5)";
    else if (cfg.batch < 1 || cfg.batch > 65536)
        bad = "--batch";
    else if (cfg.rcvlowat < -1 || cfg.rcvlowat > (1 << 24))
        bad = "--rcvlowat";
    else if (cfg.coalesce_ns > NS_PER_S)
        bad = "--coalesce-us";
    else if (strlen(cfg.prefix) > 200 || strpbrk(cfg.prefix, "#+"))
        bad = "--topic-prefix";
    if (bad) {
        fprintf(stderr, "loadgen: invalid %s\n", bad);
        return -1;
    }
    return 0;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* Joins a thread by a CLOCK_MONOTONIC deadline; 0 when it ended in time. */
static int join_by(pthread_t t, uint64_t deadline)
{
    uint64_t now = mono_ns();
    uint64_t left = deadline > now ? deadline - now : 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t abs_ns = (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec + left;
    ts.tv_sec = (time_t)(abs_ns / NS_PER_S);
    ts.tv_nsec = (long)(abs_ns % NS_PER_S);
    return pthread_timedjoin_np(t, NULL, &ts);
}

static void report(const char *status, double cpu_pct)
{
    const char *mode = cfg.rate > 0 ? "rate" : "closed";
    uint64_t sent = 0, got = 0, ooo = 0;
    for (int i = 0; i < cfg.publishers; i++) {
        sent += atomic_load(&pubs[i].sent);
        got += pubs[i].got;
        ooo += pubs[i].ooo;
    }
    uint64_t want = sent * (uint64_t)cfg.subscribers;
    uint64_t lost = want > got ? want - got : 0;
    double mps = (double)sub.in_window / cfg.duration;
    struct hist *h = sub.hist;
    double p50 = hist_pct(h, 50) / 1e3, p99 = hist_pct(h, 99) / 1e3;
    double p999 = hist_pct(h, 99.9) / 1e3, mx = (double)h->max / 1e3;
    char setting[64];
    if (cfg.rate > 0)
        snprintf(setting, sizeof setting, "rate %.0f/s", cfg.rate);
    else
        snprintf(setting, sizeof setting, "window %llu", (unsigned long long)cfg.window);
    printf("%s %s: %d pubs -> %d subs x %d B, QoS %d, MQTT %s, %s: %.0f msg/s received, "
           "latency us p50 %.1f p99 %.1f p99.9 %.1f max %.1f, sent %llu lost %llu, loadgen cpu "
           "%.0f%% [%s]\n",
           cfg.label, mode, cfg.publishers, cfg.subscribers, cfg.payload, cfg.qos,
           cfg.protocol == 5 ? "5" : "3.1.1", setting, mps, p50, p99, p999, mx,
           (unsigned long long)sent, (unsigned long long)lost, cpu_pct, status);
    printf("RESULT broker=%s mode=%s publishers=%d subscribers=%d payload=%d qos=%d protocol=%d "
           "window=%llu rate=%.0f duration=%g msgs_per_s=%.0f p50_us=%.1f p99_us=%.1f "
           "p999_us=%.1f max_us=%.1f samples=%llu sent=%llu received=%llu lost=%llu ooo=%llu "
           "foreign=%llu loadgen_cpu_pct=%.1f status=%s\n",
           cfg.label, mode, cfg.publishers, cfg.subscribers, cfg.payload, cfg.qos, cfg.protocol,
           (unsigned long long)cfg.window, cfg.rate, cfg.duration, mps, p50, p99, p999, mx,
           (unsigned long long)h->n, (unsigned long long)sent, (unsigned long long)got,
           (unsigned long long)lost, (unsigned long long)ooo, (unsigned long long)sub.foreign,
           cpu_pct, status);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv) < 0) {
        usage(stderr);
        return 2;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    struct addrinfo *sai = NULL; /* the subscribers' broker, when not the publishers' */
    int gr = getaddrinfo(cfg.host, cfg.port, &hints, &ai);
    if (gr != 0) {
        fprintf(stderr, "loadgen: %s:%s: %s\n", cfg.host, cfg.port, gai_strerror(gr));
        return 1;
    }
    if (cfg.sub_host || cfg.sub_port) {
        const char *sh = cfg.sub_host ? cfg.sub_host : cfg.host;
        const char *sp = cfg.sub_port ? cfg.sub_port : cfg.port;
        gr = getaddrinfo(sh, sp, &hints, &sai);
        if (gr != 0) {
            fprintf(stderr, "loadgen: %s:%s: %s\n", sh, sp, gai_strerror(gr));
            freeaddrinfo(ai);
            return 1;
        }
    }

    size_t psize = sizeof(struct pub) * (size_t)cfg.publishers;
    pubs = aligned_alloc(64, (psize + 63) / 64 * 64);
    if (!pubs) return 1;
    memset(pubs, 0, psize);
    sconns = xcalloc((size_t)cfg.subscribers, sizeof *sconns);
    for (int i = 0; i < cfg.subscribers; i++) {
        sconns[i].fd = -1;
        sconns[i].buf = xcalloc(1, SUB_RBUF);
        sconns[i].next_seq = xcalloc((size_t)cfg.publishers, sizeof *sconns[i].next_seq);
    }
    sub.hist = xcalloc(1, sizeof *sub.hist);
    for (int i = 0; i < cfg.publishers; i++)
        pubs[i].fd = -1;

    /* Subscriber first, and SUBACK before any publisher connects, so that
     * nothing published is missed by construction. */
    uint64_t deadline = mono_ns() + CONNECT_BUDGET_NS;
    char id[64], filter[256];
    unsigned rmax;
    int rc = 1;
    snprintf(filter, sizeof filter, "%s/#", cfg.prefix);
    for (int i = 0; i < cfg.subscribers; i++) {
        struct sconn *sc = &sconns[i];
        snprintf(id, sizeof id, "loadgen-%d-s%d", (int)getpid(), i);
        sc->fd = mqtt_connect(sai ? sai : ai, id, deadline, sc->buf, SUB_RBUF, &sc->start, &sc->end,
                              &rmax);
        if (sc->fd < 0) goto fail;
        int r = mqtt_subscribe(sc, filter, deadline);
        if (r < 0) {
            fprintf(stderr, "loadgen: subscribe %s: %s\n", filter, strerror(-r));
            goto fail;
        }
    }
    for (int i = 0; i < cfg.publishers; i++) {
        struct pub *p = &pubs[i];
        p->idx = i;
        p->rbuf = xcalloc(1, PUB_RBUF);
        size_t s = 0, e = 0;
        snprintf(id, sizeof id, "loadgen-%d-p%d", (int)getpid(), i);
        p->fd = mqtt_connect(ai, id, deadline, p->rbuf, PUB_RBUF, &s, &e, &rmax);
        if (p->fd < 0) goto fail;
        /* Anything after CONNACK (nothing, normally) waits in the buffer. */
        memmove(p->rbuf, p->rbuf + s, e - s);
        p->rlen = e - s;
        p->inflight_max = rmax < 65535 ? rmax : 65535;
        build_template(p);
        p->out = xcalloc((size_t)cfg.batch, p->pkt_len);
    }
    freeaddrinfo(ai);
    ai = NULL;
    if (sai) freeaddrinfo(sai);
    sai = NULL;

    /* In closed loop the subscriber only wakes once a batch is waiting:
     * otherwise the broker pays a cross-CPU wakeup on nearly every write
     * (15% of Mosquitto's time in our profile), which is the generator's
     * cost, not the broker's. An eighth of all windows keeps clear of a
     * stall (publishers refill with three quarters still outstanding). */
    long lowat = cfg.rcvlowat;
    if (lowat < 0) {
        /* each subscriber gets every message */
        uint64_t eighth = (uint64_t)cfg.publishers * cfg.window * pubs[0].pkt_len / 8;
        /* Not with QoS 1: the broker's in-flight limit towards the
         * subscriber (Mosquitto: 20 messages) may stay below any mark. */
        lowat = cfg.rate > 0 || cfg.qos > 0 ? 0 : (long)(eighth < 65536 ? eighth : 65536);
    }
    if (lowat > 1) {
        int v = (int)lowat;
        for (int i = 0; i < cfg.subscribers; i++) {
            if (setsockopt(sconns[i].fd, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof v) < 0)
                fprintf(stderr, "loadgen: SO_RCVLOWAT: %s\n", strerror(errno));
            else
                sconns[i].lowat = 1;
        }
    }

    t_start = mono_ns() + 20 * NS_PER_MS; /* all threads start together */
    t_measure = t_start + (uint64_t)(cfg.warmup * NS_PER_S);
    t_end = t_measure + (uint64_t)(cfg.duration * NS_PER_S);
    t_pub_giveup = t_end + NS_PER_S;
    t_hard = t_end + HARD_GRACE_NS;
    /* Set before the subscriber starts: at 0 it would think the run is over. */
    atomic_store(&pubs_running, cfg.rate > 0 ? 1 : cfg.publishers);
    if (pthread_create(&sub.thread, NULL, sub_main, NULL) != 0) goto fail;
    sub.started = 1;
    /* Closed loop: a thread per publisher, each with its own window. Fixed
     * rate: one pacer for all of them (its thread is kept in pubs[0]). */
    int nthreads = cfg.rate > 0 ? 1 : cfg.publishers;
    for (int i = 0; i < nthreads; i++) {
        int e = cfg.rate > 0 ? pthread_create(&pubs[0].thread, NULL, pacer_main, NULL)
                             : pthread_create(&pubs[i].thread, NULL, pub_main, &pubs[i]);
        if (e != 0) {
            atomic_store(&stop_flag, 1);
            atomic_fetch_sub(&pubs_running, nthreads - i);
            break;
        }
        pubs[i].started = 1;
    }

    /* CPU of this whole process over the measured interval only. */
    sleep_until(t_measure);
    double cpu0 = cpu_seconds();
    uint64_t w0 = mono_ns();
    sleep_until(t_end);
    double cpu_pct = 100.0 * (cpu_seconds() - cpu0) / ((double)(mono_ns() - w0) / NS_PER_S);

    int stuck = 0;
    for (int i = 0; i < cfg.publishers; i++)
        if (pubs[i].started && join_by(pubs[i].thread, t_hard) != 0) stuck = 1;
    if (join_by(sub.thread, t_hard + NS_PER_S) != 0) stuck = 1;
    if (stuck) {
        /* Unblock everyone, then give up on anything still stuck. */
        atomic_store(&stop_flag, 1);
        for (int i = 0; i < cfg.subscribers; i++)
            shutdown(sconns[i].fd, SHUT_RDWR);
        for (int i = 0; i < cfg.publishers; i++)
            shutdown(pubs[i].fd, SHUT_RDWR);
        sleep_until(mono_ns() + NS_PER_S);
        report("timeout", cpu_pct);
        _exit(3);
    }

    for (int i = 0; i < cfg.publishers; i++)
        mqtt_disconnect(pubs[i].fd);
    for (int i = 0; i < cfg.subscribers; i++)
        mqtt_disconnect(sconns[i].fd);

    /* Longest silence that is not a stall: a second, or three message
     * intervals at a very low fixed rate. */
    uint64_t quiet = NS_PER_S;
    if (cfg.rate > 0 && 3e9 / cfg.rate > (double)quiet) quiet = (uint64_t)(3e9 / cfg.rate);
    const char *status = "ok";
    rc = 0;
    if (atomic_load(&run_error)) {
        status = "error";
        rc = 1;
    } else if (atomic_load(&run_timeout) || sub.in_window == 0 || sub.max_gap > quiet ||
               (sub.last_rx + quiet < t_end && cfg.duration * NS_PER_S > quiet)) {
        /* A second or more without a message while the load ran: the broker
         * stalled (or dropped everything). */
        status = "timeout";
        rc = 3;
    }
    report(status, cpu_pct);
    goto out;

fail:
    if (ai) freeaddrinfo(ai);
    if (sai) freeaddrinfo(sai);
    atomic_store(&stop_flag, 1);
    report("error", 0);
out:
    for (int i = 0; i < cfg.publishers; i++) {
        if (pubs[i].fd >= 0) close(pubs[i].fd);
        free(pubs[i].tmpl);
        free(pubs[i].out);
        free(pubs[i].rbuf);
    }
    for (int i = 0; i < cfg.subscribers; i++) {
        if (sconns[i].fd >= 0) close(sconns[i].fd);
        free(sconns[i].buf);
        free(sconns[i].next_seq);
    }
    free(sconns);
    free(sub.hist);
    free(pubs);
    return rc;
}
