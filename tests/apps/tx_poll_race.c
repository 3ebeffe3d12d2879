/* One thread writes a keyed byte pattern to a TCP connection while other threads poll the same
 * socket (POLLIN|POLLOUT, no wait) as fast as they can; a kernel sink on the peer checks every
 * byte. Under libsnstack.so each poll computes the socket's TX room from the region; a poller that
 * moved the TX stream's base from a stale tail (fixed: it only reads now) made the agent send
 * other bytes of the ring in place of published ones (ci/stress-tx-poll-race.sh).
 *
 *   tx_poll_race sink PORT SECONDS           kernel side: accept, check, count; exit 1 on a bad byte
 *   tx_poll_race send IP PORT SECONDS POLLERS
 *
 * The writer sends pieces of random size (1..24 KiB) with short random pauses, so the stream
 * empties and fills often and the agent's head often stops at a write boundary. A new connection
 * every 2 seconds; each connection's pattern has its own key (sent as the first 8 bytes). */
#include "tcputil.h"
#include <poll.h>
#include <pthread.h>
#include <stdint.h>

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Byte `i` of the stream keyed `key`: a misplaced byte of the same stream is caught too. */
static uint8_t pat(uint64_t key, uint64_t i)
{
    return (uint8_t)(mix(key ^ (i >> 3) * 0x100000001b3ull) >> ((i & 7) * 8));
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static uint64_t rng = 88172645463325252ull;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int sink(int port, double secs)
{
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 8))
        die("bind/listen");
    double end = now_s() + secs + 30;
    alarm((unsigned)secs + 90);
    uint64_t total = 0;
    int conns = 0;
    static uint8_t buf[1 << 18];
    while (now_s() < end) {
        int c = accept(l, NULL, NULL);
        if (c < 0)
            die("accept");
        uint64_t key = 0, off = 0;
        int keyed = 0;
        unsigned char kb[8];
        for (;;) {
            ssize_t n = recv(c, buf, sizeof buf, 0);
            if (n <= 0)
                break;
            for (ssize_t j = 0; j < n; j++) {
                if (keyed < 8) {
                    kb[keyed++] = buf[j];
                    if (keyed == 8)
                        memcpy(&key, kb, 8);
                    continue;
                }
                if (buf[j] != pat(key, off)) {
                    ssize_t k = j;
                    while (k < n && buf[k] != pat(key, off + (k - j)))
                        k++;
                    printf("CORRUPT conn %d at byte %llu (%zd bad bytes from there in this read)\n",
                           conns, (unsigned long long)off, k - j);
                    fflush(stdout);
                    return 1;
                }
                off++;
            }
        }
        close(c);
        conns++;
        total += off;
        if (off == 0 && keyed == 0)
            break; /* the sender's "done" connection */
    }
    printf("sink: %d connections, %llu bytes, intact\n", conns - 1, (unsigned long long)total);
    return 0;
}

static volatile int stop_polling;
static int cur_fd = -1;
static unsigned long polls;

static void *poller(void *arg)
{
    (void)arg;
    unsigned long n = 0;
    while (!stop_polling) {
        struct pollfd p = {.fd = __atomic_load_n(&cur_fd, __ATOMIC_RELAXED),
                           .events = POLLIN | POLLOUT};
        if (p.fd >= 0)
            poll(&p, 1, 0);
        n++;
    }
    __atomic_fetch_add(&polls, n, __ATOMIC_RELAXED);
    return NULL;
}

static int send_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int sender(const char *ip, int port, double secs, int npoll)
{
    pthread_t th[64];
    if (npoll > 64)
        npoll = 64;
    for (int i = 0; i < npoll; i++)
        pthread_create(&th[i], NULL, poller, NULL);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    double end = now_s() + secs;
    static uint8_t buf[24 << 10];
    unsigned long long total = 0;
    int conns = 0;
    rng ^= (uint64_t)getpid() << 20;
    while (now_s() < end) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&a, sizeof a))
            die("connect");
        uint64_t key = rnd(), off = 0;
        if (send_all(fd, (uint8_t *)&key, 8))
            die("send key");
        __atomic_store_n(&cur_fd, fd, __ATOMIC_RELAXED);
        double until = now_s() + 2;
        while (now_s() < until && now_s() < end) {
            size_t n = 1 + rnd() % sizeof buf;
            for (size_t j = 0; j < n; j++)
                buf[j] = pat(key, off + j);
            if (send_all(fd, buf, n))
                die("send");
            off += n;
            uint64_t r = rnd() % 8;
            if (r == 0)
                usleep(rnd() % 300);
            else if (r == 1)
                sched_yield();
        }
        __atomic_store_n(&cur_fd, -1, __ATOMIC_RELAXED);
        shutdown(fd, SHUT_WR);
        char c;
        while (recv(fd, &c, 1, 0) > 0) {
        }
        close(fd);
        total += off;
        conns++;
    }
    stop_polling = 1;
    for (int i = 0; i < npoll; i++)
        pthread_join(th[i], NULL);
    /* An empty connection tells the sink we are done. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
        close(fd);
    printf("send: %d connections, %llu bytes, %lu polls\n", conns, total, polls);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && !strcmp(argv[1], "sink"))
        return sink(atoi(argv[2]), atof(argv[3]));
    if (argc >= 6 && !strcmp(argv[1], "send"))
        return sender(argv[2], atoi(argv[3]), atof(argv[4]), atoi(argv[5]));
    fprintf(stderr, "usage: tx_poll_race sink PORT SECONDS | send IP PORT SECONDS POLLERS\n");
    return 2;
}
