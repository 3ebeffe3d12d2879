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

/* Configures `port` with one RX and one TX queue of `nb_desc` descriptors each (default
 * rte_eth_conf), starts it. Returns 0 or a negative errno. */
int snstack_port_start(uint16_t port, struct rte_mempool *pool, uint16_t nb_desc) {
    struct rte_eth_conf conf;
    struct rte_eth_dev_info info;
    int socket = rte_eth_dev_socket_id(port);
    int r;
    memset(&conf, 0, sizeof(conf));
    r = rte_eth_dev_info_get(port, &info);
    if (r != 0)
        return r;
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
