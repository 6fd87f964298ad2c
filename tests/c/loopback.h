/*
 * loopback.h — loopback ports for the tests and benchmarks that start real
 * servers: a port free now, and whether a port accepts a connection. No
 * cmocka here, so benchmarks include it too. Static functions only.
 */
#ifndef MQR_TEST_LOOPBACK_H
#define MQR_TEST_LOOPBACK_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <unistd.h>

/* A loopback TCP port nobody listens on now, or -1. */
static inline int lb_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* A connected socket to 127.0.0.1:port, or -1. */
static inline int lb_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static inline bool lb_port_accepts(int port)
{
    int fd = lb_connect(port);
    if (fd >= 0) close(fd);
    return fd >= 0;
}

#endif
