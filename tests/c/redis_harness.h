/*
 * redis_harness.h — a real redis-server (Debian's) for the Redis sink's C
 * test and benchmark: started on a free loopback port with nothing saved,
 * in its own temporary directory, waited for until it answers PING (with a
 * deadline), killed with SIGKILL on demand and in the cleanup (and, through
 * PR_SET_PDEATHSIG, when the test process dies). No cmocka here: the
 * benchmark uses it too; failures come back as -1 with the reason in err.
 */
#ifndef MQR_REDIS_HARNESS_H
#define MQR_REDIS_HARNESS_H

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "loopback.h"

#define REDIS_SERVER_BIN "/usr/bin/redis-server"

typedef struct {
    pid_t pid;
    int port;             /* 0: a free one is picked at the first start, then kept */
    char dir[64];         /* its --dir and log */
    const char *password; /* --requirepass when not NULL */
} redis_srv_t;

static inline uint64_t rh_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* One PING over a fresh connection: true when a RESP reply came ("+PONG",
 * or "-NOAUTH" from a server that wants a password: it answers all the same). */
static inline bool rh_answers(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return false;
    struct timeval tv = {0, 200000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = false;
    char buf[64];
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0 && write(fd, "PING\r\n", 6) == 6) {
        ssize_t n = read(fd, buf, sizeof buf - 1);
        ok = n > 0 && (buf[0] == '+' || buf[0] == '-');
        if (n > 0 && buf[0] == '-') {
            buf[n] = '\0';
            ok = strstr(buf, "NOAUTH") != NULL; /* -LOADING and the like: not yet */
        }
    }
    close(fd);
    return ok;
}

/* Starts redis-server and waits (5 s at most) until it answers. */
static inline int redis_srv_start(redis_srv_t *s, char *err, size_t cap)
{
    if (access(REDIS_SERVER_BIN, X_OK) != 0) {
        snprintf(err, cap, "%s not found (Debian package redis-server)", REDIS_SERVER_BIN);
        return -1;
    }
    if (!s->dir[0]) {
        snprintf(s->dir, sizeof s->dir, "/tmp/mqr-redis-XXXXXX");
        if (!mkdtemp(s->dir)) {
            snprintf(err, cap, "mkdtemp: %s", strerror(errno));
            s->dir[0] = '\0';
            return -1;
        }
    }
    if (!s->port) s->port = lb_free_port();
    if (s->port <= 0) {
        snprintf(err, cap, "no free port");
        return -1;
    }
    char port[16], log[128];
    snprintf(port, sizeof port, "%d", s->port);
    snprintf(log, sizeof log, "%s/redis.log", s->dir);
    const char *argv[20];
    int n = 0;
    argv[n++] = "redis-server";
    argv[n++] = "--port";
    argv[n++] = port;
    argv[n++] = "--bind";
    argv[n++] = "127.0.0.1";
    argv[n++] = "--save";
    argv[n++] = "";
    argv[n++] = "--appendonly";
    argv[n++] = "no";
    argv[n++] = "--dir";
    argv[n++] = s->dir;
    argv[n++] = "--enable-debug-command"; /* DEBUG SLEEP makes it slow on demand */
    argv[n++] = "yes";
    if (s->password) {
        argv[n++] = "--requirepass";
        argv[n++] = s->password;
    }
    argv[n] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, cap, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* dies with us, however we die */
        if (getppid() != parent) _exit(1);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        execv(REDIS_SERVER_BIN, (char *const *)argv);
        _exit(127);
    }
    s->pid = pid;
    uint64_t deadline = rh_now_ms() + 5000;
    while (!rh_answers(s->port)) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            s->pid = 0;
            snprintf(err, cap, "redis-server exited at start (port %d, see %s)", s->port, log);
            return -1;
        }
        if (rh_now_ms() > deadline) {
            snprintf(err, cap, "redis-server does not answer on port %d", s->port);
            return -1;
        }
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static inline void redis_srv_kill(redis_srv_t *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
}

/* Kills it and removes its directory (files one level deep). */
static inline void redis_srv_cleanup(redis_srv_t *s)
{
    redis_srv_kill(s);
    if (!s->dir[0]) return;
    DIR *d = opendir(s->dir);
    if (d) {
        struct dirent *e;
        char path[512];
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.') continue;
            snprintf(path, sizeof path, "%s/%s", s->dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(s->dir);
    s->dir[0] = '\0';
}

#endif
