/*
 * pg_harness.h — a throw-away PostgreSQL 15 cluster for the pg sink's test
 * and benchmark: initdb (SCRAM password, no fsync) in a temp directory,
 * postgres on a free loopback port with its unix socket in that directory,
 * waited for with a deadline, killed (SIGKILL to it and its backends) or
 * stopped (SIGINT: fast shutdown), restarted on the same port, removed.
 * As root, the server runs as `nobody` (postgres refuses root). Blocking
 * libpq helpers for checks from the test side (never used by the code under
 * test). Plain C without cmocka: functions return 0 or -1 and say why on
 * stderr; static inline so that a program need not use all of them. Must not:
 * leave a server behind (PR_SET_PDEATHSIG, and the stop).
 */
#ifndef MQR_PG_HARNESS_H
#define MQR_PG_HARNESS_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "loopback.h"

#define PG_BIN "/usr/lib/postgresql/15/bin"
#define PG_USER "mqr"
#define PG_PASSWORD "s3cret-Pw_42"

typedef struct {
    pid_t pid; /* the postmaster, leader of its own process group */
    int port;
    char dir[64];
    uid_t uid; /* the server's user */
    gid_t gid;
} pg_cluster_t;

static inline uint64_t pgh_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline void pgh_nap(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* In a forked child: become the server's user (root only), then die with
 * the parent (the death signal is cleared by a change of credentials). */
static inline void pgh_child_become(const pg_cluster_t *c, pid_t parent)
{
    if (geteuid() == 0) {
        if (setgroups(0, NULL) != 0 || setgid(c->gid) != 0 || setuid(c->uid) != 0) _exit(126);
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    if (chdir(c->dir) != 0) _exit(126);
}

static inline void pgh_log_to(const pg_cluster_t *c, const char *name)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", c->dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        close(fd);
    }
}

static inline void pgh_show_log(const pg_cluster_t *c, const char *name)
{
    char path[128], line[512];
    snprintf(path, sizeof path, "%s/%s", c->dir, name);
    FILE *f = fopen(path, "r");
    if (!f) return;
    while (fgets(line, sizeof line, f))
        fprintf(stderr, "  %s: %s", name, line);
    fclose(f);
}

static inline void pg_conninfo(const pg_cluster_t *c, char *out, size_t cap, const char *password)
{
    snprintf(out, cap, "host=127.0.0.1 port=%d dbname=postgres user=" PG_USER " password=%s",
             c->port, password ? password : PG_PASSWORD);
}

/* Is the server up and taking logins? */
static inline bool pg_ready(const pg_cluster_t *c)
{
    char ci[256];
    pg_conninfo(c, ci, sizeof ci, NULL);
    return PQping(ci) == PQPING_OK;
}

/* Starts postgres on c (initialised) and waits until it accepts. */
static inline int pg_cluster_run(pg_cluster_t *c)
{
    char port[16], sock[128], data[96];
    snprintf(port, sizeof port, "%d", c->port);
    snprintf(sock, sizeof sock, "unix_socket_directories=%s", c->dir);
    snprintf(data, sizeof data, "%s/data", c->dir);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        setsid(); /* its own process group: the kill reaches the backends */
        pgh_child_become(c, parent);
        pgh_log_to(c, "server.log");
        execl(PG_BIN "/postgres", "postgres", "-D", data, "-p", port, "-c", sock, "-c",
              "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off", "-c",
              "full_page_writes=off", "-c", "shared_buffers=32MB", "-c", "max_connections=40", "-c",
              "log_min_messages=warning", "-c", "deadlock_timeout=100ms", (char *)NULL);
        _exit(127);
    }
    c->pid = pid;
    uint64_t deadline = pgh_now_ms() + 10000;
    while (!pg_ready(c)) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            c->pid = 0;
            fprintf(stderr, "postgres exited at start (port %d)\n", c->port);
            pgh_show_log(c, "server.log");
            return -1;
        }
        if (pgh_now_ms() > deadline) {
            fprintf(stderr, "postgres does not accept on port %d\n", c->port);
            pgh_show_log(c, "server.log");
            return -1;
        }
        pgh_nap(20);
    }
    return 0;
}

/* initdb in a new temp directory, then start. */
static inline int pg_cluster_start(pg_cluster_t *c)
{
    memset(c, 0, sizeof *c);
    if (access(PG_BIN "/initdb", X_OK) != 0 || access(PG_BIN "/postgres", X_OK) != 0) {
        fprintf(stderr, "PostgreSQL 15 binaries missing in " PG_BIN " (postgresql-15)\n");
        return -1;
    }
    c->uid = geteuid();
    c->gid = getegid();
    if (c->uid == 0) {
        struct passwd *pw = getpwnam("nobody");
        if (!pw) {
            fprintf(stderr, "running as root and no user `nobody` for the server\n");
            return -1;
        }
        c->uid = pw->pw_uid;
        c->gid = pw->pw_gid;
    }
    snprintf(c->dir, sizeof c->dir, "/tmp/mqr-pg-XXXXXX");
    if (!mkdtemp(c->dir)) return -1;
    if (chown(c->dir, c->uid, c->gid) != 0) return -1;
    char pwfile[96];
    snprintf(pwfile, sizeof pwfile, "%s/pw", c->dir);
    FILE *f = fopen(pwfile, "w");
    if (!f) return -1;
    fputs(PG_PASSWORD "\n", f);
    fclose(f);
    chmod(pwfile, 0644);
    char data[96], pwarg[112];
    snprintf(data, sizeof data, "%s/data", c->dir);
    snprintf(pwarg, sizeof pwarg, "--pwfile=%s", pwfile);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        pgh_child_become(c, parent);
        pgh_log_to(c, "initdb.log");
        execl(PG_BIN "/initdb", "initdb", "-D", data, "-N", "-U", PG_USER, "--auth=scram-sha-256",
              pwarg, "--locale=C", "-E", "UTF8", (char *)NULL);
        _exit(127);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "initdb failed\n");
        pgh_show_log(c, "initdb.log");
        return -1;
    }
    c->port = lb_free_port();
    if (c->port < 0) return -1;
    return pg_cluster_run(c);
}

/* Sends sig to every process whose parent is pid (backends call setsid(),
 * so they are not in the postmaster's process group). */
static inline void pgh_kill_children(pid_t pid, int sig)
{
    DIR *d = opendir("/proc");
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char path[300], buf[512];
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        /* pid (comm) state ppid ...: comm may hold spaces, ends at the last ')' */
        char *rp = strrchr(buf, ')');
        int ppid = 0;
        if (rp && sscanf(rp + 1, " %*c %d", &ppid) == 1 && ppid == pid)
            kill((pid_t)atoi(e->d_name), sig);
    }
    closedir(d);
}

/* kill -9 the postmaster and all its processes: a crash, not a shutdown. */
static inline void pg_cluster_kill(pg_cluster_t *c)
{
    if (c->pid <= 0) return;
    kill(c->pid, SIGSTOP); /* forks no more */
    pgh_kill_children(c->pid, SIGKILL);
    kill(-c->pid, SIGKILL);
    waitpid(c->pid, NULL, 0);
    c->pid = 0;
}

/* Fast shutdown, waited for (5 s, then SIGKILL). */
static inline void pg_cluster_stop(pg_cluster_t *c)
{
    if (c->pid <= 0) return;
    kill(c->pid, SIGINT);
    uint64_t deadline = pgh_now_ms() + 5000;
    while (waitpid(c->pid, NULL, WNOHANG) == 0) {
        if (pgh_now_ms() > deadline) {
            kill(-c->pid, SIGKILL);
            waitpid(c->pid, NULL, 0);
            break;
        }
        pgh_nap(10);
    }
    c->pid = 0;
}

/* Stops the server and removes its directory. */
static inline void pg_cluster_cleanup(pg_cluster_t *c)
{
    pg_cluster_stop(c);
    if (c->dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", c->dir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", c->dir);
        c->dir[0] = '\0';
    }
}

static inline void pgh_quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* Blocking: runs sql on a new connection; the first value of the first row
 * into out (cap). 0, or -1 (said why). Test side only. */
static inline int pg_exec(const pg_cluster_t *c, const char *sql, char *out, size_t cap)
{
    char ci[256];
    pg_conninfo(c, ci, sizeof ci, NULL);
    PGconn *conn = PQconnectdb(ci);
    PQsetNoticeProcessor(conn, pgh_quiet, NULL); /* DROP ... IF EXISTS chatter */
    int rc = -1;
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "pg_exec: %s", PQerrorMessage(conn));
    } else {
        PGresult *r = PQexec(conn, sql);
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
            rc = 0;
            if (out && cap)
                snprintf(out, cap, "%s",
                         st == PGRES_TUPLES_OK && PQntuples(r) ? PQgetvalue(r, 0, 0) : "");
        } else {
            fprintf(stderr, "pg_exec %s: %s", sql, PQresultErrorMessage(r));
        }
        PQclear(r);
    }
    PQfinish(conn);
    return rc;
}

#endif
