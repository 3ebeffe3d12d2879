/* pitfalls.md 9: fd races between threads.
 *   races close_wait   one thread sleeps in epoll_wait on a set holding a socket while another thread
 *                      closes that socket (and then reuses the fd number for a new, readable socket):
 *                      no crash; the waiter sees nothing from the closed or the new socket, as on
 *                      Linux, and returns at its timeout.
 *   races ctl_close    two threads: one loops epoll_ctl ADD/DEL on an fd, the other closes and
 *                      re-creates sockets under that number: no crash, no hang.
 *   races accept N     4 threads accept in a loop on one blocking listener while 2 client threads
 *                      connect N times in total; every connection gets a 1-byte greeting. Reports
 *                      whether any connection waited > 1 s for its greeting.
 * Deterministic output; diff kernel vs snstack. */
#include "tcputil.h"
#include <poll.h>
#include <pthread.h>
#include <sys/epoll.h>

struct cw { int ep; int n; unsigned long long data[8]; long long ms; };
static void *cw_wait(void *p)
{
    struct cw *c = p;
    struct epoll_event ev[8];
    long long t = now_ms();
    c->n = epoll_wait(c->ep, ev, 8, 1500);
    c->ms = now_ms() - t;
    for (int i = 0; i < c->n && i < 8; i++) c->data[i] = ev[i].data.u64;
    return NULL;
}

static void close_wait(void)
{
    int l, a, b, port;
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    tcp_pair(&l, &a, &b);
    getsockname(l, (struct sockaddr *)&sa, &sl);
    port = ntohs(sa.sin_port);
    int ep = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN, .data.u64 = 42};
    epoll_ctl(ep, EPOLL_CTL_ADD, b, &e);
    struct cw c = {.ep = ep};
    pthread_t t;
    pthread_create(&t, NULL, cw_wait, &c);
    msleep(200);
    int old = b;
    close(b);
    if (write(a, "x", 1) != 1) die("write"); /* to the closed socket's peer: RST, no event */
    /* Re-use the number: a new connection accepted into the same fd, then made readable. */
    int a2 = connect_to(port);
    int b2 = accept(l, NULL, NULL);
    if (b2 != old) {
        if (dup2(b2, old) < 0) die("dup2");
        close(b2);
        b2 = old;
    }
    if (write(a2, "y", 1) != 1) die("write");
    pthread_join(t, NULL);
    out("close_wait.waiter: n=%d%s%s returned_at_timeout=%s", c.n, c.n > 0 ? " data=" : "",
        c.n > 0 ? (c.data[0] == 42 ? "42(stale entry)" : "other") : "",
        c.n == 0 && c.ms >= 1400 ? "yes" : "no");
    /* The set no longer holds the old registration: a fresh wait on it sees nothing. */
    struct epoll_event ev[4];
    int n = epoll_wait(ep, ev, 4, 200);
    out("close_wait.after: n=%d", n);
    /* and the new socket (same number) can be added as a new entry */
    e.data.u64 = 43;
    out("close_wait.add_reused_number: %s", epoll_ctl(ep, EPOLL_CTL_ADD, b2, &e) ? ename(errno) : "OK");
    n = epoll_wait(ep, ev, 4, 1000);
    out("close_wait.reused_ready: n=%d data=%llu", n, n > 0 ? (unsigned long long)ev[0].data.u64 : 0ULL);
    close(ep);
    close(a);
    close(a2);
    close(b2);
    close(l);
}

static volatile int stop_flag;
static int shared_fd;
static void *ctl_loop(void *p)
{
    int ep = *(int *)p;
    long ops = 0;
    while (!stop_flag) {
        struct epoll_event e = {.events = EPOLLIN, .data.u64 = 1};
        epoll_ctl(ep, EPOLL_CTL_ADD, shared_fd, &e);
        epoll_ctl(ep, EPOLL_CTL_MOD, shared_fd, &e);
        struct epoll_event ev[4];
        epoll_wait(ep, ev, 4, 0);
        epoll_ctl(ep, EPOLL_CTL_DEL, shared_fd, &e);
        ops++;
    }
    return (void *)ops;
}

static void ctl_close(void)
{
    int port, l = listener(&port, 64);
    int ep = epoll_create1(0);
    int a = connect_to(port), b = accept(l, NULL, NULL);
    shared_fd = b;
    pthread_t t;
    pthread_create(&t, NULL, ctl_loop, &ep);
    long long t0 = now_ms();
    int rounds = 0;
    while (now_ms() - t0 < 2000 && rounds < 400) {
        /* close the registered fd and put a new socket under the same number */
        int na = connect_to(port), nb = accept(l, NULL, NULL);
        close(a);
        if (dup2(nb, b) < 0) die("dup2");
        close(nb);
        a = na;
        rounds++;
    }
    stop_flag = 1;
    void *ops;
    pthread_join(t, &ops);
    out("ctl_close: survived=yes rounds_ok=%s ctl_ops_ok=%s", rounds > 20 ? "yes" : "no",
        (long)ops > 100 ? "yes" : "no");
    fprintf(stderr, "ctl_close: %d close/reuse rounds, %ld ctl cycles\n", rounds, (long)ops);
    close(ep);
    close(a);
    close(b);
    close(l);
}

static int acc_l, acc_port, acc_total;
static volatile int acc_count;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static void *acceptor(void *p)
{
    (void)p;
    for (;;) {
        int c = accept(acc_l, NULL, NULL);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            return NULL; /* listener shut down */
        }
        if (write(c, "g", 1) != 1) die("greeting");
        close(c);
        pthread_mutex_lock(&mu);
        int done = ++acc_count >= acc_total;
        pthread_mutex_unlock(&mu);
        if (done) return NULL;
    }
}
static long long worst_us, slow;
static void *connector(void *p)
{
    int n = *(int *)p;
    for (int i = 0; i < n; i++) {
        long long t = now_us();
        int c = connect_to(acc_port);
        char g;
        if (read(c, &g, 1) != 1) die("read greeting");
        close(c);
        long long d = now_us() - t;
        pthread_mutex_lock(&mu);
        if (d > worst_us) worst_us = d;
        if (d > 1000000) slow++;
        pthread_mutex_unlock(&mu);
    }
    return NULL;
}

static void accept_race(int total)
{
    acc_l = listener(&acc_port, 512);
    acc_total = total;
    pthread_t acc[4], con[2];
    int half = total / 2;
    for (int i = 0; i < 4; i++) pthread_create(&acc[i], NULL, acceptor, NULL);
    long long t0 = now_ms();
    for (int i = 0; i < 2; i++) pthread_create(&con[i], NULL, connector, &half);
    for (int i = 0; i < 2; i++) pthread_join(con[i], NULL);
    long long el = now_ms() - t0;
    /* Release the acceptors still blocked in accept (Linux: shutdown wakes them with EINVAL). */
    shutdown(acc_l, SHUT_RDWR);
    int released = 1;
    for (int i = 0; i < 4; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 3;
        if (pthread_timedjoin_np(acc[i], NULL, &ts) != 0) released = 0;
    }
    out("accept: connections=%d accepted=%d stalls_over_1s=%lld acceptors_released_by_shutdown=%s",
        total, acc_count, slow, released ? "yes" : "no");
    fprintf(stderr, "accept: %d connections in %lld ms, worst %lld ms\n", total, el, worst_us / 1000);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        fprintf(stderr, "usage: races close_wait|ctl_close|accept [N]\n");
        return 2;
    }
    if (!strcmp(argv[1], "close_wait")) close_wait();
    else if (!strcmp(argv[1], "ctl_close")) ctl_close();
    else if (!strcmp(argv[1], "accept")) accept_race(argc > 2 ? atoi(argv[2]) : 2000);
    else return 2;
    out("done");
    return 0;
}
