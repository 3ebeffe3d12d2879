/* pitfalls.md 4: a SIGALRM (setitimer, 250 ms) must interrupt blocking socket calls as on Linux.
 *   sigint norestart : handler without SA_RESTART: recv, read, accept, epoll_wait, poll, select,
 *                      send on a full buffer fail with EINTR.
 *   sigint restart   : with SA_RESTART, Linux restarts recv/read/accept (they then complete when a
 *                      watchdog thread provides data/a connection at 1.5 s) but never epoll_wait,
 *                      poll, select; recv with SO_RCVTIMEO is not restarted either (EINTR).
 * A watchdog thread (SIGALRM blocked) unblocks every call after 1.5 s, so nothing hangs: a call the
 * signal failed to interrupt shows up as "woken_by=watchdog". A handler that itself sends on a
 * socket is also exercised. Output is deterministic; diff kernel vs snstack. */
#include "tcputil.h"
#include <poll.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/time.h>

static volatile sig_atomic_t handled;
static int handler_fd = -1;
static volatile sig_atomic_t handler_sent;
static void on_alarm(int sig)
{
    (void)sig;
    handled++;
    if (handler_fd >= 0) {
        int e = errno;
        if (send(handler_fd, "H", 1, MSG_NOSIGNAL) == 1) handler_sent++;
        errno = e;
    }
}

static void install(int restart)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = restart ? SA_RESTART : 0;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGALRM, &sa, NULL) < 0) die("sigaction");
}

static void arm_us(long us)
{
    struct itimerval it = {{0, 0}, {us / 1000000, us % 1000000}};
    setitimer(ITIMER_REAL, &it, NULL);
}
static void arm(int ms) { arm_us(ms * 1000L); }

/* Watchdog: after 1.5 s performs `action` unless cancelled. */
enum { W_WRITE, W_CONNECT, W_DRAIN };
struct wd { int kind, fd, port; volatile int cancel, fired; pthread_t t; };
static void *wd_fn(void *p)
{
    struct wd *w = p;
    for (int i = 0; i < 150 && !w->cancel; i++) msleep(10);
    if (w->cancel) return NULL;
    w->fired = 1;
    if (w->kind == W_WRITE) {
        if (write(w->fd, "w", 1) != 1) die("watchdog write");
    } else if (w->kind == W_CONNECT) {
        int c = connect_to(w->port);
        (void)c; /* left open until exit */
    } else { /* drain until the main thread's call returns */
        static char buf[65536];
        while (!w->cancel)
            if (recv(w->fd, buf, sizeof buf, MSG_DONTWAIT) <= 0) msleep(1);
    }
    return NULL;
}
static void wd_start(struct wd *w, int kind, int fd, int port)
{
    sigset_t s, old;
    memset(w, 0, sizeof *w);
    w->kind = kind;
    w->fd = fd;
    w->port = port;
    sigemptyset(&s);
    sigaddset(&s, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &s, &old);
    pthread_create(&w->t, NULL, wd_fn, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}
static const char *wd_stop(struct wd *w)
{
    w->cancel = 1;
    pthread_join(w->t, NULL);
    return w->fired ? "watchdog" : "signal";
}

static void report(const char *mode, const char *call, long r, int e, struct wd *w)
{
    const char *by = wd_stop(w);
    if (!strcmp(call, "accept") && r >= 0) r = 0; /* an fd number: not comparable */
    out("%s.%s: ret=%ld %s handled=%d woken_by=%s", mode, call, r < 0 ? -1 : r, r < 0 ? ename(e) : "OK",
        (int)handled, by);
}

static void run(const char *mode, int restart)
{
    int l, a, b, port, ep, e;
    long r;
    char buf[64];
    struct wd w;
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    install(restart);
    tcp_pair(&l, &a, &b);
    getsockname(l, (struct sockaddr *)&sa, &sl);
    port = ntohs(sa.sin_port);

#define CASE(name, kind, wfd, expr)                                                                  \
    do {                                                                                          \
        handled = 0;                                                                              \
        wd_start(&w, kind, wfd, port);                                                            \
        arm(250); /* boundary arrivals: see sweep() */                                            \
        errno = 0;                                                                                \
        r = (expr);                                                                               \
        e = errno;                                                                                \
        arm(0);                                                                                   \
        report(mode, name, r, e, &w);                                                             \
    } while (0)

    CASE("recv", W_WRITE, a, recv(b, buf, sizeof buf, 0));
    CASE("read", W_WRITE, a, read(b, buf, sizeof buf));
    CASE("accept", W_CONNECT, -1, accept(l, NULL, NULL));
    ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 1}, evs[4];
    epoll_ctl(ep, EPOLL_CTL_ADD, b, &ev);
    /* drain whatever earlier watchdogs wrote */
    while (recv(b, buf, sizeof buf, MSG_DONTWAIT) > 0) {
    }
    CASE("epoll_wait", W_WRITE, a, epoll_wait(ep, evs, 4, 5000));
    while (recv(b, buf, sizeof buf, MSG_DONTWAIT) > 0) {
    }
    struct pollfd p = {.fd = b, .events = POLLIN};
    CASE("poll", W_WRITE, a, poll(&p, 1, 5000));
    while (recv(b, buf, sizeof buf, MSG_DONTWAIT) > 0) {
    }
    fd_set rs;
    FD_ZERO(&rs);
    FD_SET(b, &rs);
    struct timeval tv = {5, 0};
    CASE("select", W_WRITE, a, select(b + 1, &rs, NULL, NULL, &tv));
    while (recv(b, buf, sizeof buf, MSG_DONTWAIT) > 0) {
    }

    /* recv with SO_RCVTIMEO: Linux never restarts it. */
    struct timeval to = {5, 0};
    setsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &to, sizeof to);
    CASE("recv_rcvtimeo", W_WRITE, a, recv(b, buf, sizeof buf, 0));
    struct timeval zero = {0, 0};
    setsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &zero, sizeof zero);
    while (recv(b, buf, sizeof buf, MSG_DONTWAIT) > 0) {
    }

    /* The handler itself sends on an offloaded socket while the main thread blocks in recv. */
    handler_fd = a;
    handler_sent = 0;
    CASE("recv_handler_sends", W_WRITE, a, recv(b, buf, sizeof buf, 0));
    handler_fd = -1;
    out("%s.recv_handler_sends.handler_sent: %d", mode, (int)handler_sent);
    while (recv(b, buf, sizeof buf, MSG_DONTWAIT) > 0) {
    }

    /* send on a full connection: fill b->a until sends keep failing with EAGAIN for 300 ms
     * (an offload stack may keep draining its TX stream for a while), then a blocking send. */
    int fl = fcntl(b, F_GETFL);
    static char big[1 << 20];
    fcntl(b, F_SETFL, fl | O_NONBLOCK);
    for (long long last = now_ms(); now_ms() - last < 300;) {
        if (send(b, big, sizeof big, MSG_NOSIGNAL) > 0) last = now_ms();
        else msleep(5);
    }
    fcntl(b, F_SETFL, fl);
    CASE("send_full", W_DRAIN, a, send(b, big, sizeof big, MSG_NOSIGNAL));
    close(ep);
    close(a);
    close(b);
    close(l);
}

/* A signal must interrupt a blocking recv whenever it arrives, including when it lands while the
 * stack is between two internal sleeps (e.g. a periodic liveness check). Sweep the arrival time
 * over 90..110 ms in 1 ms steps (41 arrivals also over 190..210 ms); count recvs the signal did not
 * interrupt (a watchdog unblocks them after 1.5 s). */
static void sweep(const char *mode, int restart)
{
    int a, b, missed = 0, total = 0;
    char buf[64];
    struct wd w;
    install(restart);
    tcp_pair(NULL, &a, &b);
    for (int base = 90; base <= 190; base += 100)
        for (int d = 0; d <= 20; d++) {
            handled = 0;
            wd_start(&w, W_WRITE, a, 0);
            arm_us((base + d) * 1000L);
            ssize_t r = recv(b, buf, sizeof buf, 0);
            int e = errno;
            arm(0);
            wd_stop(&w);
            while (recv(b, buf, sizeof buf, MSG_DONTWAIT) > 0) {
            }
            total++;
            if (!(r < 0 && e == EINTR)) {
                missed++;
                fprintf(stderr, "sweep: arrival at %d ms: recv returned %zd (%s), handled=%d\n", base + d, r,
                        r < 0 ? ename(e) : "data", (int)handled);
            }
        }
    out("%s.recv_sweep: %d signals, %d did not interrupt recv", mode, total, missed);
    close(a);
    close(b);
}

/* 400 signals at arrival times spread over 0.3..2 ms; run under snstack with SNSTACK_LIVENESS_MS=1
 * the library's blocked recv wakes every millisecond, so many signals land while it is between two
 * sleeps, where only the library's own bookkeeping can tell that a handler ran. */
static void storm(const char *mode)
{
    int a, b, missed = 0, total = 0;
    char buf[64];
    struct wd w;
    install(0);
    tcp_pair(NULL, &a, &b);
    for (int i = 0; i < 400; i++) {
        handled = 0;
        wd_start(&w, W_WRITE, a, 0);
        arm_us(300 + (i * 37) % 1700);
        ssize_t r = recv(b, buf, sizeof buf, 0);
        int e = errno;
        arm(0);
        wd_stop(&w);
        while (recv(b, buf, sizeof buf, MSG_DONTWAIT) > 0) {
        }
        total++;
        if (!(r < 0 && e == EINTR)) {
            missed++;
            fprintf(stderr, "storm: signal %d: recv returned %zd (%s), handled=%d\n", i, r,
                    r < 0 ? ename(e) : "data", (int)handled);
        }
    }
    out("%s.recv_storm: %d signals, %d did not interrupt recv", mode, total, missed);
    close(a);
    close(b);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2 || !strcmp(argv[1], "norestart")) run("norestart", 0);
    if (argc < 2 || !strcmp(argv[1], "restart")) run("restart", 1);
    if (argc < 2 || !strcmp(argv[1], "sweep")) sweep("norestart", 0);
    if (argc >= 2 && !strcmp(argv[1], "storm")) storm("norestart");
    out("done");
    return 0;
}
