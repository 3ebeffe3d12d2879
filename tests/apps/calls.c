/* pitfalls.md 12: calls an interposer easily misses. Built with -O2 -D_FORTIFY_SOURCE=2 so that
 * read/recv/recvfrom/poll/ppoll become __read_chk/__recv_chk/__recvfrom_chk/__poll_chk/__ppoll_chk.
 *   calls fortify      the _chk variants on an offloaded connection
 *   calls close_range  close_range(fd, fd, 0) and close_range(fd, ~0U, 0) over offloaded sockets:
 *                      the peer sees EOF, sockets made afterwards work
 *   calls closefrom    glibc closefrom(fd) over offloaded sockets (glibc calls the close_range
 *                      syscall internally): the peer sees EOF, sockets made afterwards work
 *   calls pwait2       epoll_pwait2 on a set holding a readable offloaded socket
 *   calls raw          raw syscall(SYS_read / SYS_write / SYS_recvfrom) on an offloaded fd
 *   calls mmsg         sendmmsg/recvmmsg on an offloaded connection
 * Every blocking step is bounded (poll/SO_RCVTIMEO/alarm), so a miss prints a result, never hangs. */
#include "tcputil.h"
#include <poll.h>
#include <sys/epoll.h>
#include <sys/syscall.h>

/* Waits up to ms for fd to become readable (kernel or offloaded), then recv(MSG_DONTWAIT). */
static const char *peer_sees(int fd, int ms)
{
    static char b[64];
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int n = poll(&p, 1, ms);
    if (n <= 0) return "nothing (no EOF within the wait)";
    char buf[16];
    ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (r == 0) return "EOF";
    if (r < 0) {
        snprintf(b, sizeof b, "error %s", ename(errno));
        return b;
    }
    snprintf(b, sizeof b, "%zd bytes", r);
    return b;
}

/* A fresh connection works end to end. */
static const char *fresh_ok(void)
{
    int a, b;
    char c = 0;
    tcp_pair(NULL, &a, &b);
    struct timeval tv = {2, 0};
    setsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssize_t w = write(a, "k", 1), r = read(b, &c, 1);
    close(a);
    close(b);
    return (w == 1 && r == 1 && c == 'k') ? "works" : "BROKEN";
}

static void fortify(void)
{
    int a, b;
    char buf[16];
    /* run-time lengths: with a compile-time constant the compiler proves the call safe and emits
     * the plain function instead of the _chk variant */
    volatile size_t vn = 2, vfull = sizeof buf;
    volatile nfds_t vnf = 1;
    size_t n = vn, full = vfull;
    nfds_t nf = vnf;
    tcp_pair(NULL, &a, &b);
    struct timeval tv = {3, 0};
    setsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct pollfd p[1] = {{.fd = b, .events = POLLIN}};
    int r = poll(p, nf, 0);
    out("fortify.__poll_chk.idle: %d", r);
    if (write(a, "hello", 5) != 5) die("write");
    r = poll(p, nf, 3000);
    out("fortify.__poll_chk.ready: %d revents_in=%d", r, !!(p[0].revents & POLLIN));
    struct timespec ts = {3, 0};
    r = ppoll(p, nf, &ts, NULL);
    out("fortify.__ppoll_chk.ready: %d", r);
    memset(buf, 0, sizeof buf);
    ssize_t k = read(b, buf, n);
    out("fortify.__read_chk: %zd %.2s", k, buf);
    memset(buf, 0, sizeof buf);
    k = recv(b, buf, n, 0);
    out("fortify.__recv_chk: %zd %.2s", k, buf);
    memset(buf, 0, sizeof buf);
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    k = recvfrom(b, buf, full, 0, (struct sockaddr *)&from, &fl);
    out("fortify.__recvfrom_chk: %zd %.1s", k, buf);
    close(a);
    close(b);
}

static void do_close_range(void)
{
    int a, b, a2, b2;
    tcp_pair(NULL, &a, &b);
    int r = close_range(b, b, 0);
    out("close_range.single: ret=%s fd_closed=%s peer=%s", r ? ename(errno) : "OK",
        fcntl(b, F_GETFD) < 0 && errno == EBADF ? "yes" : "no", peer_sees(a, 2000));
    close(a);
    tcp_pair(NULL, &a, &b);
    tcp_pair(NULL, &a2, &b2);
    /* everything from b upwards, including the library's own fds if it has any */
    int lo = b < a2 ? b : a2;
    int keep = a; /* a < b: made first */
    if (keep >= lo) {
        out("close_range.open_ended: SKIPPED fd layout");
        return;
    }
    r = close_range(lo, ~0U, 0);
    out("close_range.open_ended: ret=%s peer=%s", r ? ename(errno) : "OK", peer_sees(keep, 2000));
    out("close_range.after: new connection %s", fresh_ok());
    close(a);
}

static void do_closefrom(void)
{
    int a, b;
    tcp_pair(NULL, &a, &b);
    closefrom(b); /* a < b stays open */
    out("closefrom: fd_closed=%s peer=%s", fcntl(b, F_GETFD) < 0 && errno == EBADF ? "yes" : "no",
        peer_sees(a, 2000));
    out("closefrom.after: new connection %s", fresh_ok());
    close(a);
}

static void pwait2(void)
{
    int a, b;
    tcp_pair(NULL, &a, &b);
    int ep = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN, .data.u64 = 7}, ev[4];
    epoll_ctl(ep, EPOLL_CTL_ADD, b, &e);
    if (write(a, "x", 1) != 1) die("write");
    /* Let the byte arrive (checked through the intercepted epoll_wait). */
    int n0 = epoll_wait(ep, ev, 4, 2000);
    struct timespec ts = {1, 0};
    long long t = now_ms();
    int n = epoll_pwait2(ep, ev, 4, &ts, NULL);
    int e2 = errno;
    t = now_ms() - t;
    if (n < 0)
        out("epoll_pwait2: epoll_wait=%d pwait2=-1 %s", n0, ename(e2));
    else
        out("epoll_pwait2: epoll_wait=%d pwait2=%d data=%llu %s", n0, n,
            n > 0 ? (unsigned long long)ev[0].data.u64 : 0ULL, t >= 900 ? "(timed out)" : "");
    /* and with the socket idle: must time out with 0 */
    char c;
    while (recv(b, &c, 1, MSG_DONTWAIT) > 0) {
    }
    ts.tv_sec = 0;
    ts.tv_nsec = 300000000;
    n = epoll_pwait2(ep, ev, 4, &ts, NULL);
    out("epoll_pwait2.idle: %d%s", n, n > 0 && ev[0].data.u64 != 7 ? " (foreign data word)" : "");
    close(ep);
    close(a);
    close(b);
}

static void raw(void)
{
    int a, b;
    char buf[16] = {0};
    tcp_pair(NULL, &a, &b);
    if (write(a, "hello", 5) != 5) die("write");
    struct pollfd p = {.fd = b, .events = POLLIN};
    poll(&p, 1, 2000);
    alarm(10); /* a raw call that blocks forever would be a bug: SIGALRM kills us */
    long r = syscall(SYS_read, b, buf, 5);
    out("raw.SYS_read: %ld %s %.5s", r, r < 0 ? ename(errno) : "", r > 0 ? buf : "");
    r = syscall(SYS_write, b, "abc", 3);
    out("raw.SYS_write: %ld %s", r, r < 0 ? ename(errno) : "");
    r = syscall(SYS_sendto, b, "abc", 3, MSG_NOSIGNAL, NULL, 0);
    out("raw.SYS_sendto: %ld %s", r, r < 0 ? ename(errno) : "");
    r = syscall(SYS_recvfrom, b, buf, 5, MSG_DONTWAIT, NULL, NULL);
    out("raw.SYS_recvfrom: %ld %s", r, r < 0 ? ename(errno) : "");
    alarm(0);
    close(a);
    close(b);
}

static void mmsg(void)
{
    int a, b;
    tcp_pair(NULL, &a, &b);
    struct iovec iv[2] = {{"abc", 3}, {"defg", 4}};
    struct mmsghdr m[2];
    memset(m, 0, sizeof m);
    m[0].msg_hdr.msg_iov = &iv[0];
    m[0].msg_hdr.msg_iovlen = 1;
    m[1].msg_hdr.msg_iov = &iv[1];
    m[1].msg_hdr.msg_iovlen = 1;
    int r = sendmmsg(a, m, 2, MSG_NOSIGNAL);
    out("sendmmsg: %d %s len0=%u len1=%u", r, r < 0 ? ename(errno) : "", m[0].msg_len, m[1].msg_len);
    struct pollfd p = {.fd = b, .events = POLLIN};
    poll(&p, 1, 2000);
    msleep(100);
    char b1[16] = {0};
    struct iovec ri = {b1, sizeof b1};
    struct mmsghdr rm = {.msg_hdr = {.msg_iov = &ri, .msg_iovlen = 1}};
    struct timespec to = {1, 0};
    r = recvmmsg(b, &rm, 1, MSG_DONTWAIT, &to);
    out("recvmmsg: %d %s len=%u data=%s", r, r < 0 ? ename(errno) : "", r > 0 ? rm.msg_len : 0,
        r > 0 ? b1 : "");
    /* No vector at all. */
    r = recvmmsg(b, NULL, 1, MSG_DONTWAIT, NULL);
    out("recvmmsg NULL: %d %s", r, r < 0 ? ename(errno) : "");
    /* The second message's iovec count is out of range: the first one is still sent. */
    struct mmsghdr bad[2];
    memset(bad, 0, sizeof bad);
    bad[0].msg_hdr.msg_iov = &iv[0];
    bad[0].msg_hdr.msg_iovlen = 1;
    bad[1].msg_hdr.msg_iov = &iv[1];
    bad[1].msg_hdr.msg_iovlen = 100000;
    r = sendmmsg(a, bad, 2, MSG_NOSIGNAL);
    out("sendmmsg bad second: %d %s len0=%u", r, r < 0 ? ename(errno) : "", bad[0].msg_len);
    poll(&p, 1, 2000);
    msleep(100);
    /* MSG_WAITFORONE: the first message waits, later ones do not: one message, not two. */
    char c1[16] = {0}, c2[16] = {0};
    struct iovec r1 = {c1, sizeof c1}, r2 = {c2, sizeof c2};
    struct mmsghdr two[2];
    memset(two, 0, sizeof two);
    two[0].msg_hdr.msg_iov = &r1;
    two[0].msg_hdr.msg_iovlen = 1;
    two[1].msg_hdr.msg_iov = &r2;
    two[1].msg_hdr.msg_iovlen = 1;
    r = recvmmsg(b, two, 2, MSG_WAITFORONE, &to);
    out("recvmmsg waitforone: %d %s len0=%u data=%s", r, r < 0 ? ename(errno) : "",
        r > 0 ? two[0].msg_len : 0, r > 0 ? c1 : "");
    close(a);
    close(b);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "fortify")) fortify();
        else if (!strcmp(argv[i], "close_range")) do_close_range();
        else if (!strcmp(argv[i], "closefrom")) do_closefrom();
        else if (!strcmp(argv[i], "pwait2")) pwait2();
        else if (!strcmp(argv[i], "raw")) raw();
        else if (!strcmp(argv[i], "mmsg")) mmsg();
        else return 2;
    }
    out("done");
    return 0;
}
