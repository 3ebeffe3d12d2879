/* snstack dpdk-sys shim: DPDK's fast-path functions are `static inline` in its headers, so Rust
 * cannot link to them; these one-line wrappers give them real symbols. Port setup lives here too,
 * so the Rust side never mirrors the large, version-specific `struct rte_eth_conf`. */
#include <string.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

uint16_t snstack_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t snstack_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_tx_burst(port, queue, pkts, n);
}

struct rte_mbuf *snstack_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

void snstack_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

/* Start of the first segment's data. */
void *snstack_pktmbuf_data(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, void *); }

uint16_t snstack_pktmbuf_data_len(const struct rte_mbuf *m) { return rte_pktmbuf_data_len(m); }

uint32_t snstack_pktmbuf_pkt_len(const struct rte_mbuf *m) { return rte_pktmbuf_pkt_len(m); }

uint16_t snstack_pktmbuf_nb_segs(const struct rte_mbuf *m) { return m->nb_segs; }

/* Appends `len` bytes to the packet; NULL when the tailroom is too small. */
char *snstack_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }

int snstack_errno(void) { return rte_errno; }

/* RX L4 checksum state from ol_flags: 0 unknown, 1 good, 2 bad, 3 none (not computed, data
 * valid: the checksum field is partial). */
int snstack_rx_l4_csum(const struct rte_mbuf *m) {
    uint64_t f = m->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_MASK;
    if (f == RTE_MBUF_F_RX_L4_CKSUM_GOOD)
        return 1;
    if (f == RTE_MBUF_F_RX_L4_CKSUM_BAD)
        return 2;
    if (f == RTE_MBUF_F_RX_L4_CKSUM_NONE)
        return 3;
    return 0;
}

/* Segment size of an LRO-merged packet, 0 for a plain one. */
uint16_t snstack_rx_lro_segsz(const struct rte_mbuf *m) {
    return (m->ol_flags & RTE_MBUF_F_RX_LRO) ? m->tso_segsz : 0;
}

/* Asks the NIC for the L4 checksum (l4_proto 6 TCP, 17 UDP) or, with tso_segsz > 0, TCP
 * segmentation of `m`. The L4 checksum field must hold the pseudo-header sum (without the length
 * for TSO), as DPDK documents for these flags. */
void snstack_tx_offload(struct rte_mbuf *m, int ipv6, uint16_t l2_len, uint16_t l3_len,
                        uint16_t l4_len, int l4_proto, uint16_t tso_segsz) {
    uint64_t f = ipv6 ? RTE_MBUF_F_TX_IPV6 : RTE_MBUF_F_TX_IPV4;
    m->l2_len = l2_len;
    m->l3_len = l3_len;
    m->l4_len = l4_len;
    if (tso_segsz > 0) {
        f |= RTE_MBUF_F_TX_TCP_SEG;
        m->tso_segsz = tso_segsz;
    } else {
        f |= l4_proto == 17 ? RTE_MBUF_F_TX_UDP_CKSUM : RTE_MBUF_F_TX_TCP_CKSUM;
    }
    m->ol_flags |= f;
}

/* A packet holding a copy of `data`, chained over as many mbufs as it needs; NULL when the pool
 * is empty. */
struct rte_mbuf *snstack_pktmbuf_from(struct rte_mempool *mp, const void *data, uint32_t len) {
    struct rte_mbuf *head = NULL;
    uint32_t off = 0;
    do {
        struct rte_mbuf *m = rte_pktmbuf_alloc(mp);
        uint32_t n;
        char *dst;
        if (m == NULL)
            goto fail;
        n = len - off;
        if (n > rte_pktmbuf_tailroom(m))
            n = rte_pktmbuf_tailroom(m);
        dst = rte_pktmbuf_append(m, (uint16_t)n);
        if (dst == NULL) {
            rte_pktmbuf_free(m);
            goto fail;
        }
        memcpy(dst, (const char *)data + off, n);
        off += n;
        if (head == NULL) {
            head = m;
        } else if (rte_pktmbuf_chain(head, m) != 0) {
            rte_pktmbuf_free(m);
            goto fail;
        }
    } while (off < len);
    return head;
fail:
    if (head != NULL)
        rte_pktmbuf_free(head);
    return NULL;
}

/* Copies a (possibly multi-segment) packet into `dst`; returns its length, or 0 when it does
 * not fit in `cap`. */
uint32_t snstack_pktmbuf_copy_out(const struct rte_mbuf *m, void *dst, uint32_t cap) {
    uint32_t len = rte_pktmbuf_pkt_len(m);
    const void *p;
    if (len > cap)
        return 0;
    p = rte_pktmbuf_read(m, 0, len, dst);
    if (p == NULL)
        return 0;
    if (p != dst)
        memcpy(dst, p, len);
    return len;
}

/* Offloads snstack_port_start turned on (its `*offloads` out-parameter). */
#define SNSTACK_OFFLOAD_RX_CSUM 1u
#define SNSTACK_OFFLOAD_TX_CSUM 2u
#define SNSTACK_OFFLOAD_TSO 4u

/* Configures `port` with one RX and one TX queue of `nb_desc` descriptors each, starts it. Turns
 * on what the port can do of: RX TCP/UDP checksum checking, TX TCP/UDP checksum, TCP TSO (with
 * multi-segment TX, our super-frames being mbuf chains); reports it in `*offloads`
 * (SNSTACK_OFFLOAD_*). Returns 0 or a negative errno. */
int snstack_port_start(uint16_t port, struct rte_mempool *pool, uint16_t nb_desc,
                       uint32_t *offloads) {
    struct rte_eth_conf conf;
    struct rte_eth_dev_info info;
    int socket = rte_eth_dev_socket_id(port);
    int r;
    memset(&conf, 0, sizeof(conf));
    r = rte_eth_dev_info_get(port, &info);
    if (r != 0)
        return r;
    *offloads = 0;
    {
        const uint64_t rx_csum = RTE_ETH_RX_OFFLOAD_TCP_CKSUM | RTE_ETH_RX_OFFLOAD_UDP_CKSUM;
        const uint64_t tx_csum = RTE_ETH_TX_OFFLOAD_TCP_CKSUM | RTE_ETH_TX_OFFLOAD_UDP_CKSUM;
        const uint64_t tso = RTE_ETH_TX_OFFLOAD_TCP_TSO | RTE_ETH_TX_OFFLOAD_MULTI_SEGS;
        if ((info.rx_offload_capa & rx_csum) == rx_csum) {
            conf.rxmode.offloads |= rx_csum;
            *offloads |= SNSTACK_OFFLOAD_RX_CSUM;
        }
        if ((info.tx_offload_capa & tx_csum) == tx_csum) {
            conf.txmode.offloads |= tx_csum;
            *offloads |= SNSTACK_OFFLOAD_TX_CSUM;
            if ((info.tx_offload_capa & tso) == tso) {
                conf.txmode.offloads |= tso;
                *offloads |= SNSTACK_OFFLOAD_TSO;
            }
        }
    }
    r = rte_eth_dev_configure(port, 1, 1, &conf);
    if (r != 0)
        return r;
    uint16_t nrx = nb_desc, ntx = nb_desc;
    r = rte_eth_dev_adjust_nb_rx_tx_desc(port, &nrx, &ntx);
    if (r != 0)
        return r;
    if (socket < 0)
        socket = 0;
    r = rte_eth_rx_queue_setup(port, 0, nrx, (unsigned)socket, NULL, pool);
    if (r != 0)
        return r;
    r = rte_eth_tx_queue_setup(port, 0, ntx, (unsigned)socket, NULL);
    if (r != 0)
        return r;
    return rte_eth_dev_start(port);
}

/* Size checks the Rust side relies on. */
size_t snstack_sizeof_ether_addr(void) { return sizeof(struct rte_ether_addr); }
