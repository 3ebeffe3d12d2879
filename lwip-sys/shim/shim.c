/*
 * snstack's C side of the lwIP bindings (lwip-sys). Compiled by build.rs against the packaged
 * headers (pkg-config lwip), so every struct field it touches has the layout Debian's build has:
 * the Rust side passes only pointers and plain integers. Written for snstack; no lwIP code copied.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lwip/opt.h"
#include "lwip/init.h"
#include "lwip/pbuf.h"
#include "lwip/netif.h"
#include "lwip/etharp.h"
#include "lwip/tcp.h"
#include "lwip/priv/tcp_priv.h"
#include "lwip/timeouts.h"
#include "netif/ethernet.h"

/* ---- facts of the build, for the Rust side and docs/engines.md ---- */

/* Index order is SNSTACK_OPTS in src/lib.rs. */
long snstack_lwip_opt(int i)
{
    switch (i) {
    case 0: return NO_SYS;
    case 1: return TCP_MSS;
    case 2: return TCP_WND;
    case 3: return TCP_SND_BUF;
    case 4: return TCP_SND_QUEUELEN;
    case 5: return MEMP_NUM_TCP_PCB;
    case 6: return MEMP_NUM_TCP_PCB_LISTEN;
    case 7: return PBUF_POOL_SIZE;
    case 8: return MEM_SIZE;
    case 9: return MEMP_MEM_MALLOC;
    case 10: return LWIP_WND_SCALE;
    case 11: return TCP_RCV_SCALE;
    case 12: return LWIP_TCP_SACK_OUT;
    case 13: return LWIP_TCP_TIMESTAMPS;
    case 14: return CHECKSUM_CHECK_TCP;
    case 15: return CHECKSUM_GEN_TCP;
    case 16: return LWIP_IPV6;
    case 17: return TCP_TMR_INTERVAL;
    case 18: return TCP_MAXRTX;
    case 19: return TCP_SYNMAXRTX;
    case 20: return TCP_QUEUE_OOSEQ;
    case 21: return LWIP_TCPIP_CORE_LOCKING;
    case 22: return PBUF_POOL_BUFSIZE;
    default: return -1;
    }
}

/* sizeof(struct pbuf) and the offsets of the fields the Rust mirror reads (checked by a test). */
long snstack_lwip_pbuf_layout(int i)
{
    switch (i) {
    case 0: return (long)sizeof(struct pbuf);
    case 1: return (long)offsetof(struct pbuf, next);
    case 2: return (long)offsetof(struct pbuf, payload);
    case 3: return (long)offsetof(struct pbuf, tot_len);
    case 4: return (long)offsetof(struct pbuf, len);
    default: return -1;
    }
}

/* ---- the interface ---- */

struct snstack_netif_cfg {
    const uint8_t *mac;
    uint16_t mtu;
    netif_linkoutput_fn linkoutput;
};

static err_t snstack_netif_init(struct netif *n)
{
    const struct snstack_netif_cfg *c = (const struct snstack_netif_cfg *)n->state;
    n->name[0] = 's';
    n->name[1] = 'n';
    n->hwaddr_len = ETH_HWADDR_LEN;
    memcpy(n->hwaddr, c->mac, ETH_HWADDR_LEN);
    n->mtu = c->mtu;
    n->flags = NETIF_FLAG_BROADCAST | NETIF_FLAG_ETHARP | NETIF_FLAG_ETHERNET | NETIF_FLAG_LINK_UP;
    n->output = etharp_output;
    n->linkoutput = c->linkoutput;
    return ERR_OK;
}

/* A new Ethernet interface owning `ip`/`mask` (network byte order), default route via `gw`
 * (0: none), frames out through `linkoutput`; it is up and the default. NULL when lwIP refuses. */
struct netif *snstack_lwip_netif_new(const uint8_t mac[6], uint16_t mtu, uint32_t ip, uint32_t mask,
                                     uint32_t gw, netif_linkoutput_fn linkoutput)
{
    struct netif *n = calloc(1, sizeof(*n));
    struct snstack_netif_cfg cfg = { mac, mtu, linkoutput };
    ip4_addr_t a, m, g;
    if (n == NULL)
        return NULL;
    a.addr = ip;
    m.addr = mask;
    g.addr = gw;
    if (netif_add(n, &a, &m, &g, &cfg, snstack_netif_init, ethernet_input) == NULL) {
        free(n);
        return NULL;
    }
    n->state = NULL; /* cfg lives on this stack frame only */
    netif_set_default(n);
    netif_set_up(n);
    netif_set_link_up(n);
    return n;
}

void snstack_lwip_netif_free(struct netif *n)
{
    if (n != NULL) {
        netif_remove(n);
        free(n);
    }
}

/* One received Ethernet frame into the stack (copied into a pbuf). ERR_OK or why it was dropped.
 *
 * PBUF_RAM, not PBUF_POOL: Debian's liblwip 2.1.3 is inconsistent there. Its memp.c sizes a
 * PBUF_POOL element at 616 bytes (memp_PBUF_POOL in .rodata: a 592-byte buffer), while its
 * pbuf.c fills pool pbufs up to PBUF_POOL_BUFSIZE = 1536 bytes, so every pool pbuf longer than
 * 592 bytes overruns its malloc block (found with valgrind; docs/engines.md). A PBUF_RAM pbuf is
 * sized from the requested length in one place. */
err_t snstack_lwip_input(struct netif *n, const void *frame, uint16_t len)
{
    struct pbuf *p = pbuf_alloc(PBUF_RAW, len, PBUF_RAM);
    err_t e;
    if (p == NULL)
        return ERR_MEM;
    if (pbuf_take(p, frame, len) != ERR_OK) {
        pbuf_free(p);
        return ERR_BUF;
    }
    e = n->input(p, n);
    if (e != ERR_OK)
        pbuf_free(p);
    return e;
}

/* ---- connection (tcp_pcb) fields and macros ---- */

uint8_t snstack_lwip_state(const struct tcp_pcb *pcb) { return (uint8_t)pcb->state; }

/* Bytes tcp_write would take now (0 also when the segment queue is full). */
uint32_t snstack_lwip_sndbuf(const struct tcp_pcb *pcb)
{
    if (pcb->snd_queuelen >= LWIP_MIN(TCP_SND_QUEUELEN, TCP_SNDQUEUELEN_OVERFLOW))
        return 0;
    return tcp_sndbuf(pcb);
}

/* Segments queued and not yet acknowledged or sent. */
uint32_t snstack_lwip_unsent(const struct tcp_pcb *pcb)
{
    return (uint32_t)pcb->snd_queuelen;
}

uint16_t snstack_lwip_mss(const struct tcp_pcb *pcb) { return tcp_mss(pcb); }

/* Addresses in network byte order, ports in host order; 0 when not IPv4 (never here). */
void snstack_lwip_addrs(const struct tcp_pcb *pcb, uint32_t *lip, uint16_t *lport, uint32_t *rip,
                        uint16_t *rport)
{
    *lip = IP_IS_V4_VAL(pcb->local_ip) ? ip_2_ip4(&pcb->local_ip)->addr : 0;
    *rip = IP_IS_V4_VAL(pcb->remote_ip) ? ip_2_ip4(&pcb->remote_ip)->addr : 0;
    *lport = pcb->local_port;
    *rport = pcb->remote_port;
}

/* Local port of a listening pcb (struct tcp_pcb_listen). */
uint16_t snstack_lwip_listen_port(const struct tcp_pcb_listen *l) { return l->local_port; }

void snstack_lwip_set_nodelay(struct tcp_pcb *pcb, int on)
{
    if (on)
        tcp_nagle_disable(pcb);
    else
        tcp_nagle_enable(pcb);
}

void snstack_lwip_set_reuseaddr(struct tcp_pcb *pcb, int on)
{
    if (on)
        ip_set_option(pcb, SOF_REUSEADDR);
    else
        ip_reset_option(pcb, SOF_REUSEADDR);
}

/* SO_KEEPALIVE with Linux's three knobs (idle and interval in milliseconds). */
void snstack_lwip_set_keepalive(struct tcp_pcb *pcb, int on, uint32_t idle_ms, uint32_t intvl_ms,
                                uint32_t cnt)
{
    if (on)
        ip_set_option(pcb, SOF_KEEPALIVE);
    else
        ip_reset_option(pcb, SOF_KEEPALIVE);
    pcb->keep_idle = idle_ms;
    pcb->keep_intvl = intvl_ms;
    pcb->keep_cnt = cnt;
}

err_t snstack_lwip_bind(struct tcp_pcb *pcb, uint32_t ip, uint16_t port)
{
    ip_addr_t a = IPADDR4_INIT(ip);
    return tcp_bind(pcb, &a, port);
}

err_t snstack_lwip_connect(struct tcp_pcb *pcb, uint32_t ip, uint16_t port, tcp_connected_fn done)
{
    ip_addr_t a = IPADDR4_INIT(ip);
    return tcp_connect(pcb, &a, port, done);
}

/* The live pcb (active or TIME-WAIT) whose callback argument is `arg`, or NULL: lwIP frees a
 * pcb whose FIN exchange ended without calling anyone, so after our FIN the Rust side finds it
 * again by its argument instead of keeping a pointer that may dangle. */
struct tcp_pcb *snstack_lwip_find(void *arg)
{
    struct tcp_pcb *p;
    for (p = tcp_active_pcbs; p != NULL; p = p->next)
        if (p->callback_arg == arg)
            return p;
    for (p = tcp_tw_pcbs; p != NULL; p = p->next)
        if (p->callback_arg == arg)
            return p;
    return NULL;
}
