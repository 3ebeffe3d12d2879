/* pitfalls.md 8: unknown socket options get the kernel's errno at once; the options iperf3-style
 * tools use answer as on Linux. Prints deterministic lines (values that differ between runs, like
 * RTTs, are not printed); diff kernel vs snstack. Every call is timed: "SLOW" marks > 1 s. */
#include "tcputil.h"
#include <sys/ioctl.h>
#include <linux/sockios.h>

#ifndef TCP_CONGESTION
#define TCP_CONGESTION 13
#endif

static long long worst;
static void timed_start(long long *t) { *t = now_ms(); }
static const char *timed_end(long long t)
{
    long long d = now_ms() - t;
    if (d > worst) worst = d;
    return d > 1000 ? " SLOW" : "";
}

static void set_int(const char *tag, int fd, int lvl, int name, int v)
{
    long long t;
    timed_start(&t);
    int r = setsockopt(fd, lvl, name, &v, sizeof v), e = errno;
    out("%s: set(%d,%d,%d) = %s%s", tag, lvl, name, v, r ? ename(e) : "OK", timed_end(t));
}

static void get_int(const char *tag, int fd, int lvl, int name)
{
    int v = -12345;
    socklen_t l = sizeof v;
    long long t;
    timed_start(&t);
    int r = getsockopt(fd, lvl, name, &v, &l), e = errno;
    if (r)
        out("%s: get(%d,%d) = %s%s", tag, lvl, name, ename(e), timed_end(t));
    else
        out("%s: get(%d,%d) = %d len=%u%s", tag, lvl, name, v, l, timed_end(t));
}

static void common(const char *who, int fd)
{
    char tag[64];
#define T(x) (snprintf(tag, sizeof tag, "%s.%s", who, x), tag)
    /* unknown options */
    set_int(T("unknown_sol_socket"), fd, SOL_SOCKET, 12345, 1);
    get_int(T("unknown_sol_socket"), fd, SOL_SOCKET, 12345);
    set_int(T("unknown_tcp"), fd, IPPROTO_TCP, 999, 1);
    get_int(T("unknown_tcp"), fd, IPPROTO_TCP, 999);
    set_int(T("unknown_ip"), fd, IPPROTO_IP, 250, 1);
    get_int(T("unknown_ip"), fd, IPPROTO_IP, 250);
    set_int(T("unknown_level"), fd, 9999, 1, 1);
    get_int(T("unknown_level"), fd, 9999, 1);
    set_int(T("udp_level_on_tcp"), fd, IPPROTO_UDP, 1, 1);
    /* short optlen */
    {
        char c = 1;
        int r = setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &c, 1);
        out("%s: SO_KEEPALIVE optlen=1 = %s", T("short_optlen"), r ? ename(errno) : "OK");
    }
    /* iperf3-style options */
    set_int(T("SO_SNDBUF"), fd, SOL_SOCKET, SO_SNDBUF, 262144);
    get_int(T("SO_SNDBUF"), fd, SOL_SOCKET, SO_SNDBUF);
    set_int(T("SO_RCVBUF"), fd, SOL_SOCKET, SO_RCVBUF, 262144);
    get_int(T("SO_RCVBUF"), fd, SOL_SOCKET, SO_RCVBUF);
    set_int(T("TCP_NODELAY"), fd, IPPROTO_TCP, TCP_NODELAY, 1);
    get_int(T("TCP_NODELAY"), fd, IPPROTO_TCP, TCP_NODELAY);
    get_int(T("TCP_MAXSEG"), fd, IPPROTO_TCP, TCP_MAXSEG);
    set_int(T("SO_KEEPALIVE"), fd, SOL_SOCKET, SO_KEEPALIVE, 1);
    get_int(T("SO_KEEPALIVE"), fd, SOL_SOCKET, SO_KEEPALIVE);
    set_int(T("TCP_KEEPIDLE"), fd, IPPROTO_TCP, TCP_KEEPIDLE, 30);
    get_int(T("TCP_KEEPIDLE"), fd, IPPROTO_TCP, TCP_KEEPIDLE);
    set_int(T("IP_TOS"), fd, IPPROTO_IP, IP_TOS, 0x10);
    get_int(T("IP_TOS"), fd, IPPROTO_IP, IP_TOS);
    set_int(T("TCP_USER_TIMEOUT"), fd, IPPROTO_TCP, TCP_USER_TIMEOUT, 5000);
    get_int(T("TCP_USER_TIMEOUT"), fd, IPPROTO_TCP, TCP_USER_TIMEOUT);
    set_int(T("SO_REUSEADDR"), fd, SOL_SOCKET, SO_REUSEADDR, 1);
    get_int(T("SO_REUSEADDR"), fd, SOL_SOCKET, SO_REUSEADDR);
    get_int(T("SO_TYPE"), fd, SOL_SOCKET, SO_TYPE);
    get_int(T("SO_ERROR"), fd, SOL_SOCKET, SO_ERROR);
    {
        struct linger lg = {1, 5}, lg2 = {0, 0};
        socklen_t l = sizeof lg2;
        int r = setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        int r2 = getsockopt(fd, SOL_SOCKET, SO_LINGER, &lg2, &l);
        out("%s: set=%s get=%s onoff=%d linger=%d len=%u", T("SO_LINGER"), r ? ename(errno) : "OK",
            r2 ? ename(errno) : "OK", lg2.l_onoff, lg2.l_linger, l);
        lg.l_onoff = 0;
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    {
        char cc[32] = {0};
        socklen_t l = sizeof cc;
        int r = getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, &l);
        out("%s: get=%s value=%s", T("TCP_CONGESTION"), r ? ename(errno) : "OK", cc);
        r = setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, "reno", 4);
        memset(cc, 0, sizeof cc);
        l = sizeof cc;
        getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, &l);
        out("%s: set reno=%s now=%s", T("TCP_CONGESTION"), r ? ename(errno) : "OK", cc);
        r = setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, "no-such-cc", 10);
        out("%s: set no-such-cc=%s", T("TCP_CONGESTION"), r ? ename(errno) : "OK");
    }
    {
        /* iperf3 reads struct tcp_info (kernel uapi size); it uses fields past byte 32, e.g.
         * tcpi_snd_mss, tcpi_rtt, tcpi_snd_cwnd, tcpi_total_retrans. */
        struct tcp_info ti;
        memset(&ti, 0xAB, sizeof ti);
        socklen_t l = sizeof ti;
        long long t;
        timed_start(&t);
        int r = getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l);
        out("%s: get=%s len=%u (buffer %zu) state=%u snd_mss_set=%d rcv_mss_set=%d rtt_set=%d "
            "snd_cwnd_set=%d total_retrans=%u%s",
            T("TCP_INFO"), r ? ename(errno) : "OK", l, sizeof ti, ti.tcpi_state,
            ti.tcpi_snd_mss != 0xABABABABu, ti.tcpi_rcv_mss != 0xABABABABu, ti.tcpi_rtt != 0xABABABABu,
            ti.tcpi_snd_cwnd != 0xABABABABu, ti.tcpi_total_retrans, timed_end(t));
    }
    {
        /* An option value larger than 32 bytes (TCP_MD5SIG is 216 bytes): a bad key length must be
         * rejected by the kernel's own check (EINVAL), an unsupported address family likewise. */
        struct tcp_md5sig md;
        memset(&md, 0, sizeof md);
        struct sockaddr_in *sin = (struct sockaddr_in *)&md.tcpm_addr;
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        md.tcpm_keylen = 4;
        memcpy(md.tcpm_key, "abcd", 4);
        int r = setsockopt(fd, IPPROTO_TCP, TCP_MD5SIG, &md, sizeof md);
        out("%s: set (216 bytes, valid) = %s", T("TCP_MD5SIG"), r ? ename(errno) : "OK");
        md.tcpm_keylen = 0;
        setsockopt(fd, IPPROTO_TCP, TCP_MD5SIG, &md, sizeof md);
    }
    {
        int v = 0;
        int r = ioctl(fd, FIONREAD, &v);
        out("%s: FIONREAD=%s %d", T("ioctl"), r ? ename(errno) : "OK", v);
        v = -1;
        r = ioctl(fd, SIOCOUTQ, &v);
        out("%s: SIOCOUTQ=%s %d", T("ioctl"), r ? ename(errno) : "OK", v);
        v = -1;
        r = ioctl(fd, SIOCOUTQNSD, &v);
        out("%s: SIOCOUTQNSD=%s %d", T("ioctl"), r ? ename(errno) : "OK", v);
        v = -1;
        r = ioctl(fd, SIOCATMARK, &v);
        out("%s: SIOCATMARK=%s %d", T("ioctl"), r ? ename(errno) : "OK", v);
    }
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    long long t0 = now_ms();
    int fresh = socket(AF_INET, SOCK_STREAM, 0);
    common("fresh", fresh);
    int l, a, b;
    tcp_pair(&l, &a, &b);
    common("connected", a);
    common("listener", l);
    out("all_calls_fast: %s", worst <= 1000 ? "yes" : "NO");
    fprintf(stderr, "total %lld ms, slowest call %lld ms\n", now_ms() - t0, worst);
    out("done");
    return 0;
}
