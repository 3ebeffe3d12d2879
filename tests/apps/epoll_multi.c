/* pitfalls.md 1 and 2: one socket in two epoll sets, epoll fds nested in epoll/poll/select, epoll
 * bookkeeping (ADD then MOD, ENOENT/EEXIST, no duplicate reports, dup'd fds), poll events=0.
 * Output is deterministic; run it on kernel sockets and under libsnstack.so and diff. */
#include "tcputil.h"
#include <poll.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/select.h>

static const char *evs(unsigned e)
{
    static __thread char bufs[4][128];
    static __thread int k;
    char *b = bufs[k++ % 4];
    b[0] = 0;
    if (!e) return "-";
    if (e & EPOLLIN) strcat(b, "IN|");
    if (e & EPOLLOUT) strcat(b, "OUT|");
    if (e & EPOLLERR) strcat(b, "ERR|");
    if (e & EPOLLHUP) strcat(b, "HUP|");
    if (e & EPOLLRDHUP) strcat(b, "RDHUP|");
    if (e & EPOLLPRI) strcat(b, "PRI|");
    if (e & ~(unsigned)(EPOLLIN | EPOLLOUT | EPOLLERR | EPOLLHUP | EPOLLRDHUP | EPOLLPRI | EPOLLRDNORM |
                        EPOLLWRNORM | EPOLLRDBAND | EPOLLWRBAND))
        strcat(b, "OTHER|");
    if (b[0]) b[strlen(b) - 1] = 0;
    else strcpy(b, "?");
    return b;
}

static int add(int ep, int fd, unsigned events, unsigned long long data)
{
    struct epoll_event e = {.events = events, .data.u64 = data};
    return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) == 0 ? 0 : errno;
}

static int mod(int ep, int fd, unsigned events, unsigned long long data)
{
    struct epoll_event e = {.events = events, .data.u64 = data};
    return epoll_ctl(ep, EPOLL_CTL_MOD, fd, &e) == 0 ? 0 : errno;
}

static int del(int ep, int fd)
{
    struct epoll_event e = {0};
    return epoll_ctl(ep, EPOLL_CTL_DEL, fd, &e) == 0 ? 0 : errno;
}

/* epoll_wait summary: "n=N data:EV,..." with entries sorted by data. */
static const char *wait_str(int ep, int timeout, long long *elapsed)
{
    static __thread char b[512];
    struct epoll_event ev[16];
    long long t0 = now_ms();
    int n = epoll_wait(ep, ev, 16, timeout), i, j;
    if (elapsed) *elapsed = now_ms() - t0;
    if (n < 0) {
        snprintf(b, sizeof b, "n=-1 %s", ename(errno));
        return b;
    }
    for (i = 0; i < n; i++)
        for (j = i + 1; j < n; j++)
            if (ev[j].data.u64 < ev[i].data.u64) {
                struct epoll_event t = ev[i];
                ev[i] = ev[j];
                ev[j] = t;
            }
    snprintf(b, sizeof b, "n=%d", n);
    for (i = 0; i < n; i++)
        snprintf(b + strlen(b), sizeof b - strlen(b), " %llu:%s", (unsigned long long)ev[i].data.u64,
                 evs(ev[i].events));
    return b;
}

static int drain(int fd)
{
    char buf[65536];
    int total = 0, n;
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    while ((n = read(fd, buf, sizeof buf)) > 0) total += n;
    fcntl(fd, F_SETFL, fl);
    return total;
}

/* Writes one byte to fd after ms milliseconds, from another thread. */
struct later { int fd, ms; };
static void *later_fn(void *p)
{
    struct later *l = p;
    msleep(l->ms);
    if (write(l->fd, "z", 1) != 1) die("later write");
    return NULL;
}
static pthread_t write_later(int fd, int ms)
{
    static struct later l[8];
    static int k;
    pthread_t t;
    struct later *x = &l[k++ % 8];
    x->fd = fd;
    x->ms = ms;
    pthread_create(&t, NULL, later_fn, x);
    return t;
}

static const char *fast(long long ms) { return ms < 1500 ? "fast" : "SLOW"; }

struct waiter { int ep; char res[256]; long long ms; };
static void *waiter_fn(void *p)
{
    struct waiter *w = p;
    snprintf(w->res, sizeof w->res, "%s", wait_str(w->ep, 3000, &w->ms));
    return NULL;
}

static void two_sets(void)
{
    int a, b, ep1 = epoll_create1(0), ep2 = epoll_create1(0);
    long long t1, t2;
    tcp_pair(NULL, &a, &b);
    out("two_sets.add: %s %s", ename(add(ep1, b, EPOLLIN, 1)), ename(add(ep2, b, EPOLLIN, 2)));
    out("two_sets.idle: ep1 %s ep2 %s", wait_str(ep1, 0, NULL), wait_str(ep2, 0, NULL));
    if (write(a, "x", 1) != 1) die("write");
    out("two_sets.ready.ep1: %s", wait_str(ep1, 2000, &t1));
    out("two_sets.ready.ep2: %s", wait_str(ep2, 2000, &t2));
    out("two_sets.ready.speed: %s %s", fast(t1), fast(t2));
    out("two_sets.drain: %d", drain(b));

    /* Both sets asleep at once when the byte arrives. */
    struct waiter w1 = {.ep = ep1}, w2 = {.ep = ep2};
    pthread_t x1, x2;
    pthread_create(&x1, NULL, waiter_fn, &w1);
    pthread_create(&x2, NULL, waiter_fn, &w2);
    msleep(300);
    if (write(a, "y", 1) != 1) die("write");
    pthread_join(x1, NULL);
    pthread_join(x2, NULL);
    out("two_sets.sleeping.ep1: %s %s", w1.res, fast(w1.ms));
    out("two_sets.sleeping.ep2: %s %s", w2.res, fast(w2.ms));
    out("two_sets.drain: %d", drain(b));
    close(ep1);
    close(ep2);
    close(a);
    close(b);
}

static void nested(void)
{
    int a, b, inner = epoll_create1(0), outer = epoll_create1(0);
    long long t;
    pthread_t th;
    tcp_pair(NULL, &a, &b);
    out("nested.add: inner<-sock %s outer<-inner %s", ename(add(inner, b, EPOLLIN, 1)),
        ename(add(outer, inner, EPOLLIN, 77)));
    out("nested.idle: %s", wait_str(outer, 0, NULL));
    /* Arrives while the outer epoll sleeps. */
    th = write_later(a, 300);
    out("nested.epoll.sleeping: %s", wait_str(outer, 3000, &t));
    pthread_join(th, NULL);
    out("nested.epoll.sleeping.speed: %s", fast(t));
    out("nested.inner: %s", wait_str(inner, 0, NULL));
    out("nested.drain: %d", drain(b));
    out("nested.after_drain: %s", wait_str(outer, 0, NULL));
    /* Already readable before the outer wait starts. */
    if (write(a, "x", 1) != 1) die("write");
    msleep(200);
    out("nested.epoll.ready: %s", wait_str(outer, 1000, &t));
    out("nested.drain: %d", drain(b));

    /* An epoll fd holding an offloaded socket inside a poll set. */
    struct pollfd p = {.fd = inner, .events = POLLIN};
    int n = poll(&p, 1, 0);
    out("nested.poll.idle: n=%d %s", n, evs(p.revents));
    th = write_later(a, 300);
    t = now_ms();
    p.revents = 0;
    n = poll(&p, 1, 3000);
    t = now_ms() - t;
    pthread_join(th, NULL);
    out("nested.poll.sleeping: n=%d %s %s", n, evs(p.revents), fast(t));
    out("nested.drain: %d", drain(b));
    if (write(a, "x", 1) != 1) die("write");
    msleep(200);
    p.revents = 0;
    n = poll(&p, 1, 1000);
    out("nested.poll.ready: n=%d %s", n, evs(p.revents));
    out("nested.drain: %d", drain(b));

    /* ... and inside a select set. */
    fd_set r;
    struct timeval tv = {3, 0};
    FD_ZERO(&r);
    FD_SET(inner, &r);
    th = write_later(a, 300);
    t = now_ms();
    n = select(inner + 1, &r, NULL, NULL, &tv);
    t = now_ms() - t;
    pthread_join(th, NULL);
    out("nested.select.sleeping: n=%d isset=%d %s", n, n > 0 && FD_ISSET(inner, &r), fast(t));
    out("nested.drain: %d", drain(b));
    close(outer);
    close(inner);
    close(a);
    close(b);
}

static void bookkeeping(void)
{
    int a, b, ep = epoll_create1(0);
    tcp_pair(NULL, &a, &b);
    out("ctl.add: %s", ename(add(ep, b, EPOLLIN, 10)));
    out("ctl.mod_right_after_add: %s", ename(mod(ep, b, EPOLLIN | EPOLLOUT, 11)));
    out("ctl.mod_result: %s", wait_str(ep, 1000, NULL));
    out("ctl.add_again: %s", ename(add(ep, b, EPOLLIN, 12)));
    out("ctl.mod_unregistered: %s", ename(mod(ep, a, EPOLLIN, 13)));
    out("ctl.del: %s", ename(del(ep, b)));
    out("ctl.del_again: %s", ename(del(ep, b)));
    out("ctl.mod_after_del: %s", ename(mod(ep, b, EPOLLIN, 14)));
    out("ctl.readd: %s", ename(add(ep, b, EPOLLIN, 15)));
    out("ctl.readd_result_idle: %s", wait_str(ep, 0, NULL));
    close(ep);

    /* Level-triggered: one arrival, one report; drained, no more reports. */
    char buf[100];
    memset(buf, 'q', sizeof buf);
    ep = epoll_create1(0);
    add(ep, b, EPOLLIN, 30);
    if (write(a, buf, sizeof buf) != (ssize_t)sizeof buf) die("write");
    out("lt.arrival: %s", wait_str(ep, 2000, NULL));
    msleep(100);
    out("lt.again_before_read: %s", wait_str(ep, 0, NULL));
    out("lt.drain: %d", drain(b));
    out("lt.after_drain: %s", wait_str(ep, 300, NULL));
    close(ep);

    /* Edge-triggered: one report per arrival, none for the remaining level. */
    ep = epoll_create1(0);
    add(ep, b, EPOLLIN | EPOLLET, 40);
    if (write(a, buf, sizeof buf) != (ssize_t)sizeof buf) die("write");
    out("et.arrival: %s", wait_str(ep, 2000, NULL));
    msleep(100);
    out("et.no_new_arrival: %s", wait_str(ep, 0, NULL));
    out("et.partial_read: %zd", read(b, buf, 10));
    out("et.after_partial_read: %s", wait_str(ep, 200, NULL));
    if (write(a, "x", 1) != 1) die("write");
    out("et.second_arrival: %s", wait_str(ep, 2000, NULL));
    out("et.drain: %d", drain(b));
    close(ep);

    /* A dup'd fd is its own entry; closing the dup does not remove it while the file lives. */
    ep = epoll_create1(0);
    int d = dup(b);
    out("dup.add: %s %s", ename(add(ep, b, EPOLLIN, 20)), ename(add(ep, d, EPOLLIN, 21)));
    if (write(a, "x", 1) != 1) die("write");
    out("dup.both: %s", wait_str(ep, 2000, NULL));
    close(d);
    out("dup.after_close_dup: %s", wait_str(ep, 500, NULL));
    out("dup.del_closed_dup: %s", ename(del(ep, d)));
    out("dup.drain: %d", drain(b));
    close(ep);

    /* poll with events = 0 */
    struct pollfd p = {.fd = b, .events = 0};
    int n = poll(&p, 1, 100);
    out("poll0.connected_idle: n=%d %s", n, evs(p.revents));
    if (write(a, "x", 1) != 1) die("write");
    msleep(100);
    p.revents = 0;
    n = poll(&p, 1, 100);
    out("poll0.connected_data: n=%d %s", n, evs(p.revents));
    p.events = POLLOUT;
    p.revents = 0;
    n = poll(&p, 1, 100);
    out("poll0.pollout_only: n=%d %s", n, evs(p.revents));
    shutdown(a, SHUT_WR);
    msleep(100);
    p.events = 0;
    p.revents = 0;
    n = poll(&p, 1, 100);
    out("poll0.peer_shut_wr: n=%d %s", n, evs(p.revents));
    int port, l = listener(&port, 4);
    struct pollfd q[2] = {{.fd = l, .events = 0}, {.fd = socket(AF_INET, SOCK_STREAM, 0), .events = 0}};
    n = poll(q, 2, 100);
    out("poll0.listener_and_fresh: n=%d listener=%s fresh=%s", n, evs(q[0].revents), evs(q[1].revents));
    close(q[1].fd);
    close(l);
    close(a);
    close(b);
}

/* Usage: epoll_multi [two_sets|nested|bookkeeping]... (default: all, in that order). */
int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        two_sets();
        nested();
        bookkeeping();
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "two_sets")) two_sets();
        else if (!strcmp(argv[i], "nested")) nested();
        else if (!strcmp(argv[i], "bookkeeping")) bookkeeping();
        else {
            fprintf(stderr, "unknown section %s\n", argv[i]);
            return 2;
        }
    }
    out("done");
    return 0;
}
