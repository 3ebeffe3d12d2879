/* pitfalls.md 5 (lost wake-ups): two processes ping-pong N one-byte messages over one TCP
 * connection, each side sleeping in the stack between messages.
 *   pingpong server PORT N MODE      MODE: block (blocking read/write), poll, epoll
 *   pingpong client PORT N MODE      prints "ok n=N" plus round-trip statistics
 * A lost wake-up shows up as a round trip stalled until some timeout: the client counts round
 * trips over 50 ms and reports the longest. */
#include "tcputil.h"
#include <poll.h>
#include <sys/epoll.h>

static int mode_of(const char *m)
{
    if (!strcmp(m, "block")) return 0;
    if (!strcmp(m, "poll")) return 1;
    if (!strcmp(m, "epoll")) return 2;
    fprintf(stderr, "bad mode %s\n", m);
    exit(2);
}

static int ep = -1;
static void wait_readable(int fd, int mode)
{
    if (mode == 1) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r;
        while ((r = poll(&p, 1, -1)) < 0 && errno == EINTR) {
        }
        if (r != 1 || !(p.revents & POLLIN)) die("poll");
    } else if (mode == 2) {
        struct epoll_event e;
        int r;
        if (ep < 0) {
            ep = epoll_create1(0);
            e.events = EPOLLIN;
            e.data.fd = fd;
            if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0) die("epoll_ctl");
        }
        while ((r = epoll_wait(ep, &e, 1, -1)) < 0 && errno == EINTR) {
        }
        if (r != 1) die("epoll_wait");
    }
}

static void xread1(int fd, int mode)
{
    char c;
    ssize_t r;
    wait_readable(fd, mode);
    while ((r = read(fd, &c, 1)) < 0 && errno == EINTR) {
    }
    if (r != 1) {
        fprintf(stderr, "read returned %zd (%s)\n", r, r < 0 ? strerror(errno) : "EOF");
        exit(3);
    }
}

static void xwrite1(int fd)
{
    ssize_t r;
    while ((r = write(fd, "p", 1)) < 0 && errno == EINTR) {
    }
    if (r != 1) die("write");
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: pingpong server|client PORT N block|poll|epoll\n");
        return 2;
    }
    int port = atoi(argv[2]), n = atoi(argv[3]), mode = mode_of(argv[4]), one = 1;
    signal(SIGPIPE, SIG_IGN);
    if (!strcmp(argv[1], "server")) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                                 .sin_port = htons(port)};
        int l = socket(AF_INET, SOCK_STREAM, 0);
        setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(l, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(l, 4) < 0) die("bind/listen");
        int c = accept(l, NULL, NULL);
        if (c < 0) die("accept");
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        for (int i = 0; i < n; i++) {
            xread1(c, mode);
            xwrite1(c);
        }
        char x;
        if (read(c, &x, 1) != 0) fprintf(stderr, "server: expected EOF\n");
        close(c);
        close(l);
        out("server ok n=%d", n);
        return 0;
    }
    int c = connect_to(port);
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    long long t0 = now_us(), worst = 0, stalls = 0;
    for (int i = 0; i < n; i++) {
        long long s = now_us();
        xwrite1(c);
        xread1(c, mode);
        long long d = now_us() - s;
        if (d > worst) worst = d;
        if (d > 50000) stalls++;
    }
    long long total = now_us() - t0;
    close(c);
    out("ok n=%d mode=%s total_ms=%lld avg_us=%lld max_ms=%lld stalls_over_50ms=%lld", n, argv[4],
        total / 1000, total / n, worst / 1000, stalls);
    return 0;
}
