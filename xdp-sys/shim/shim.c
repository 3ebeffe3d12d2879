/* snstack xdp-sys shim: libxdp's AF_XDP ring accessors are `inline` (C99 inline: no external
 * definition) in <xdp/xsk.h>, so Rust cannot link to them; these one-line wrappers give them real
 * symbols. The library's log output is routed here too (va_list does not cross FFI). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <bpf/libbpf.h>
#include <xdp/libxdp.h>
#include <xdp/xsk.h>

__u32 snstack_xsk_prod_reserve(struct xsk_ring_prod *r, __u32 nb, __u32 *idx) {
    return xsk_ring_prod__reserve(r, nb, idx);
}
void snstack_xsk_prod_submit(struct xsk_ring_prod *r, __u32 nb) { xsk_ring_prod__submit(r, nb); }
__u32 snstack_xsk_prod_nb_free(struct xsk_ring_prod *r, __u32 nb) { return xsk_prod_nb_free(r, nb); }
int snstack_xsk_prod_needs_wakeup(const struct xsk_ring_prod *r) {
    return xsk_ring_prod__needs_wakeup(r);
}
__u64 *snstack_xsk_prod_fill_addr(struct xsk_ring_prod *r, __u32 idx) {
    return xsk_ring_prod__fill_addr(r, idx);
}
struct xdp_desc *snstack_xsk_prod_tx_desc(struct xsk_ring_prod *r, __u32 idx) {
    return xsk_ring_prod__tx_desc(r, idx);
}
__u32 snstack_xsk_cons_peek(struct xsk_ring_cons *r, __u32 nb, __u32 *idx) {
    return xsk_ring_cons__peek(r, nb, idx);
}
void snstack_xsk_cons_release(struct xsk_ring_cons *r, __u32 nb) { xsk_ring_cons__release(r, nb); }
const __u64 *snstack_xsk_cons_comp_addr(const struct xsk_ring_cons *r, __u32 idx) {
    return xsk_ring_cons__comp_addr(r, idx);
}
const struct xdp_desc *snstack_xsk_cons_rx_desc(const struct xsk_ring_cons *r, __u32 idx) {
    return xsk_ring_cons__rx_desc(r, idx);
}
void *snstack_xsk_umem_get_data(void *area, __u64 addr) { return xsk_umem__get_data(area, addr); }

/* Sizes of the structs the Rust side mirrors (checked by xdp_sys::check_layout). */
size_t snstack_xsk_sizeof(int what) {
    switch (what) {
    case 0: return sizeof(struct xsk_ring_prod);
    case 1: return sizeof(struct xsk_ring_cons);
    case 2: return sizeof(struct xsk_umem_config);
    case 3: return sizeof(struct xsk_socket_config);
    case 4: return sizeof(struct xdp_desc);
    default: return 0;
    }
}

static int verbose;

static int print_libxdp(enum libxdp_print_level level, const char *fmt, va_list ap) {
    (void)level;
    if (!verbose)
        return 0;
    return vfprintf(stderr, fmt, ap);
}

static int print_libbpf(enum libbpf_print_level level, const char *fmt, va_list ap) {
    (void)level;
    if (!verbose)
        return 0;
    return vfprintf(stderr, fmt, ap);
}

/* Silences libxdp's and libbpf's own messages (the caller reports errors in one line), or passes
 * them to stderr when `on` (the agent's --log-level debug). */
void snstack_xdp_set_verbose(int on) {
    verbose = on;
    libxdp_set_print(print_libxdp);
    libbpf_set_print(print_libbpf);
}
