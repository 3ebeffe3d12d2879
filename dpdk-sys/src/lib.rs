//! Hand-written FFI bindings to the system DPDK (Debian `libdpdk-dev` 22.11, found with
//! pkg-config by `build.rs`), covering what snstack's DPDK port device needs: EAL start-up,
//! an mbuf pool, one ethdev port with one RX and one TX queue, and the burst fast path.
//!
//! DPDK's fast-path functions (`rte_eth_rx_burst`, `rte_eth_tx_burst`, `rte_pktmbuf_alloc`, ...)
//! are `static inline` in its headers; `shim/shim.c` compiles them into real `snstack_*` symbols.
//! Port configuration is in the shim too, so no version-specific struct layout (`rte_eth_conf`) is
//! mirrored here. Only opaque pointers and plain integers cross the boundary.
//!
//! Every function is `unsafe`: DPDK requires `rte_eal_init` to have succeeded first and the
//! fast-path calls to come from an EAL thread (the one that ran `rte_eal_init` qualifies).

#![allow(non_camel_case_types)]
// Without the system DPDK (and without the `require` feature) the crate is empty.
#![cfg(not(dpdk_missing))]

use std::os::raw::{c_char, c_int, c_uint, c_void};

/// The DPDK version pkg-config reported at build time.
pub const DPDK_VERSION: &str = env!("DPDK_VERSION");

/// `SOCKET_ID_ANY`.
pub const SOCKET_ID_ANY: c_int = -1;
/// `RTE_PKTMBUF_HEADROOM` of Debian's build (rte_config.h).
pub const RTE_PKTMBUF_HEADROOM: u16 = 128;
/// `RTE_MBUF_DEFAULT_BUF_SIZE`: 2048 bytes of data room plus the headroom.
pub const RTE_MBUF_DEFAULT_BUF_SIZE: u16 = 2048 + RTE_PKTMBUF_HEADROOM;

/// `snstack_port_start` turned on RX TCP/UDP checksum checking.
pub const OFFLOAD_RX_CSUM: u32 = 1;
/// ... TX TCP/UDP checksum offload.
pub const OFFLOAD_TX_CSUM: u32 = 2;
/// ... TCP segmentation offload (with multi-segment TX).
pub const OFFLOAD_TSO: u32 = 4;

/// Opaque `struct rte_mempool`.
#[repr(C)]
pub struct rte_mempool {
    _opaque: [u8; 0],
}

/// Opaque `struct rte_mbuf`.
#[repr(C)]
pub struct rte_mbuf {
    _opaque: [u8; 0],
}

/// `struct rte_ether_addr` (6 bytes, checked against the C size by [`check_layout`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct rte_ether_addr {
    pub addr_bytes: [u8; 6],
}

extern "C" {
    pub fn rte_eal_init(argc: c_int, argv: *mut *mut c_char) -> c_int;
    pub fn rte_eal_cleanup() -> c_int;
    pub fn rte_strerror(errnum: c_int) -> *const c_char;
    pub fn rte_pktmbuf_pool_create(
        name: *const c_char,
        n: c_uint,
        cache_size: c_uint,
        priv_size: u16,
        data_room_size: u16,
        socket_id: c_int,
    ) -> *mut rte_mempool;
    pub fn rte_mempool_free(mp: *mut rte_mempool);
    pub fn rte_eth_dev_count_avail() -> u16;
    pub fn rte_eth_dev_get_port_by_name(name: *const c_char, port_id: *mut u16) -> c_int;
    pub fn rte_eth_dev_is_valid_port(port_id: u16) -> c_int;
    pub fn rte_eth_macaddr_get(port_id: u16, mac: *mut rte_ether_addr) -> c_int;
    pub fn rte_eth_promiscuous_enable(port_id: u16) -> c_int;
    pub fn rte_eth_dev_stop(port_id: u16) -> c_int;
    pub fn rte_eth_dev_close(port_id: u16) -> c_int;

    // shim/shim.c
    pub fn snstack_rx_burst(port: u16, queue: u16, pkts: *mut *mut rte_mbuf, n: u16) -> u16;
    pub fn snstack_tx_burst(port: u16, queue: u16, pkts: *mut *mut rte_mbuf, n: u16) -> u16;
    pub fn snstack_pktmbuf_alloc(mp: *mut rte_mempool) -> *mut rte_mbuf;
    pub fn snstack_pktmbuf_free(m: *mut rte_mbuf);
    pub fn snstack_pktmbuf_data(m: *mut rte_mbuf) -> *mut c_void;
    pub fn snstack_pktmbuf_data_len(m: *const rte_mbuf) -> u16;
    pub fn snstack_pktmbuf_pkt_len(m: *const rte_mbuf) -> u32;
    pub fn snstack_pktmbuf_nb_segs(m: *const rte_mbuf) -> u16;
    pub fn snstack_pktmbuf_append(m: *mut rte_mbuf, len: u16) -> *mut c_char;
    pub fn snstack_errno() -> c_int;
    /// `offloads`: out, [`OFFLOAD_RX_CSUM`] | [`OFFLOAD_TX_CSUM`] | [`OFFLOAD_TSO`] turned on.
    pub fn snstack_port_start(
        port: u16,
        pool: *mut rte_mempool,
        nb_desc: u16,
        offloads: *mut u32,
    ) -> c_int;
    /// 0 unknown, 1 good, 2 bad, 3 none (partial checksum, data valid).
    pub fn snstack_rx_l4_csum(m: *const rte_mbuf) -> c_int;
    pub fn snstack_rx_lro_segsz(m: *const rte_mbuf) -> u16;
    pub fn snstack_tx_offload(
        m: *mut rte_mbuf,
        ipv6: c_int,
        l2_len: u16,
        l3_len: u16,
        l4_len: u16,
        l4_proto: c_int,
        tso_segsz: u16,
    );
    pub fn snstack_pktmbuf_from(
        mp: *mut rte_mempool,
        data: *const c_void,
        len: u32,
    ) -> *mut rte_mbuf;
    pub fn snstack_pktmbuf_copy_out(m: *const rte_mbuf, dst: *mut c_void, cap: u32) -> u32;
    pub fn snstack_sizeof_ether_addr() -> usize;
}

/// True when the Rust mirrors have the sizes of the C structs they stand for.
pub fn check_layout() -> bool {
    // SAFETY: a pure function of the compiled shim; needs no EAL.
    unsafe { snstack_sizeof_ether_addr() == std::mem::size_of::<rte_ether_addr>() }
}

/// DPDK's text for an errno (`rte_strerror` knows DPDK's own codes too).
pub fn strerror(e: c_int) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated string.
    let p = unsafe { rte_strerror(e) };
    if p.is_null() {
        return format!("error {e}");
    }
    // SAFETY: non-null, NUL-terminated (see above); copied before any other DPDK call.
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn layout_matches_c() {
        assert!(super::check_layout());
        assert!(
            super::DPDK_VERSION.starts_with("22."),
            "{}",
            super::DPDK_VERSION
        );
    }
}
