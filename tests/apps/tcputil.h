/* Small helpers shared by the C test programs of tests/apps (compiled at test time). Every program
 * prints deterministic "label: result" lines so that a run on kernel sockets and a run under
 * libsnstack.so can be diffed line for line. */
#ifndef TCPUTIL_H
#define TCPUTIL_H
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static inline void die(const char *what)
{
    fprintf(stderr, "FATAL: %s: %s\n", what, strerror(errno));
    fflush(stdout);
    exit(2);
}

static inline const char *ename(int e)
{
    switch (e) {
    case 0: return "OK";
    case EINTR: return "EINTR";
    case EAGAIN: return "EAGAIN";
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    case ENOENT: return "ENOENT";
    case EEXIST: return "EEXIST";
    case ENOTCONN: return "ENOTCONN";
    case EPIPE: return "EPIPE";
    case ECONNRESET: return "ECONNRESET";
    case ENOPROTOOPT: return "ENOPROTOOPT";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EFAULT: return "EFAULT";
    case ENOTSOCK: return "ENOTSOCK";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ENOMEM: return "ENOMEM";
    case EIO: return "EIO";
    case ENOSYS: return "ENOSYS";
    case EDOM: return "EDOM";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ENODEV: return "ENODEV";
    case EISCONN: return "EISCONN";
    case EDESTADDRREQ: return "EDESTADDRREQ";
    default: {
        static char b[32];
        snprintf(b, sizeof b, "errno%d", e);
        return b;
    }
    }
}

static inline long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static inline long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static inline void msleep(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* A listening socket on 127.0.0.1 (ephemeral port); *port gets the port. */
static inline int listener(int *port, int backlog)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof sa;
    int one = 1, s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) die("socket");
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
    if (listen(s, backlog) < 0) die("listen");
    if (getsockname(s, (struct sockaddr *)&sa, &l) < 0) die("getsockname");
    *port = ntohs(sa.sin_port);
    return s;
}

static inline int connect_to(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                             .sin_port = htons(port)};
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) die("socket");
    if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect");
    return s;
}

/* A connected pair: *a (client side) and *b (accepted side). The listener stays open in *l if l. */
static inline void tcp_pair(int *l, int *a, int *b)
{
    int port, ls = listener(&port, 16);
    *a = connect_to(port);
    *b = accept(ls, NULL, NULL);
    if (*b < 0) die("accept");
    if (l)
        *l = ls;
    else
        close(ls);
}

static inline void out(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}
#endif
