//! Hand-written FFI bindings to the system libxdp (Debian `libxdp-dev` 1.3) and libbpf
//! (`libbpf-dev` 1.1), found with pkg-config by `build.rs`, covering what snstack's AF_XDP device
//! needs: a UMEM with its fill and completion rings, one XSK socket with its RX and TX rings
//! (libxdp's `xsk_socket__create` also loads its default XDP program, which redirects the bound
//! queue's frames to the socket), and the ring fast path.
//!
//! The ring accessors are `inline` in `<xdp/xsk.h>`; `shim/shim.c` compiles them into real
//! `snstack_*` symbols. The ring and config structs are mirrored here ([`check_layout`] compares
//! their sizes with the C ones).
//!
//! Without the system libraries the crate is empty and dependents' build scripts see
//! `DEP_XDP_AVAILABLE=0`.

#![allow(non_camel_case_types)]
#![cfg(not(xdp_missing))]

use std::os::raw::{c_char, c_int, c_void};

/// `XDP_FLAGS_UPDATE_IF_NOEXIST` (linux/if_link.h).
pub const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1 << 0;
/// `XDP_FLAGS_SKB_MODE`: generic XDP, in the stack's receive path; works on every interface.
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`: native XDP in the driver.
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// `XDP_COPY` bind flag (linux/if_xdp.h): frames are copied between the driver and the UMEM.
pub const XDP_COPY: u16 = 1 << 1;
/// `XDP_ZEROCOPY` bind flag.
pub const XDP_ZEROCOPY: u16 = 1 << 2;
/// `XDP_USE_NEED_WAKEUP` bind flag: the kernel says when it must be kicked.
pub const XDP_USE_NEED_WAKEUP: u16 = 1 << 3;
/// `SOL_XDP`.
pub const SOL_XDP: c_int = 283;
/// `XDP_STATISTICS` socket option.
pub const XDP_STATISTICS: c_int = 7;

/// `struct xsk_ring_prod` / `struct xsk_ring_cons` (same layout).
#[repr(C)]
#[derive(Debug)]
pub struct xsk_ring {
    pub cached_prod: u32,
    pub cached_cons: u32,
    pub mask: u32,
    pub size: u32,
    pub producer: *mut u32,
    pub consumer: *mut u32,
    pub ring: *mut c_void,
    pub flags: *mut u32,
}

pub type xsk_ring_prod = xsk_ring;
pub type xsk_ring_cons = xsk_ring;

impl Default for xsk_ring {
    fn default() -> Self {
        xsk_ring {
            cached_prod: 0,
            cached_cons: 0,
            mask: 0,
            size: 0,
            producer: std::ptr::null_mut(),
            consumer: std::ptr::null_mut(),
            ring: std::ptr::null_mut(),
            flags: std::ptr::null_mut(),
        }
    }
}

/// `struct xsk_umem_config`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct xsk_umem_config {
    pub fill_size: u32,
    pub comp_size: u32,
    pub frame_size: u32,
    pub frame_headroom: u32,
    pub flags: u32,
}

/// `struct xsk_socket_config` (`libxdp_flags` is the union with `libbpf_flags`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct xsk_socket_config {
    pub rx_size: u32,
    pub tx_size: u32,
    pub libxdp_flags: u32,
    pub xdp_flags: u32,
    pub bind_flags: u16,
}

/// `struct xdp_desc`: one RX or TX ring entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct xdp_desc {
    pub addr: u64,
    pub len: u32,
    pub options: u32,
}

/// `struct xdp_statistics` (getsockopt `SOL_XDP`/`XDP_STATISTICS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct xdp_statistics {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

/// Opaque `struct xsk_umem`.
#[repr(C)]
pub struct xsk_umem {
    _opaque: [u8; 0],
}

/// Opaque `struct xsk_socket`.
#[repr(C)]
pub struct xsk_socket {
    _opaque: [u8; 0],
}

extern "C" {
    /// Returns 0 or a negative errno.
    pub fn xsk_umem__create(
        umem: *mut *mut xsk_umem,
        umem_area: *mut c_void,
        size: u64,
        fill: *mut xsk_ring_prod,
        comp: *mut xsk_ring_cons,
        config: *const xsk_umem_config,
    ) -> c_int;
    /// Returns 0 or a negative errno (`-EBUSY` while sockets still use the UMEM).
    pub fn xsk_umem__delete(umem: *mut xsk_umem) -> c_int;
    /// Creates and binds the socket; unless `XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD`, attaches
    /// libxdp's default XDP program to `ifname` (mode from `xdp_flags`) and adds the socket to
    /// its XSK map. Returns 0 or a negative errno.
    pub fn xsk_socket__create(
        xsk: *mut *mut xsk_socket,
        ifname: *const c_char,
        queue_id: u32,
        umem: *mut xsk_umem,
        rx: *mut xsk_ring_cons,
        tx: *mut xsk_ring_prod,
        config: *const xsk_socket_config,
    ) -> c_int;
    /// Closes the socket; the XDP program is detached with the last socket of the interface.
    pub fn xsk_socket__delete(xsk: *mut xsk_socket);
    pub fn xsk_socket__fd(xsk: *const xsk_socket) -> c_int;

    // shim/shim.c
    pub fn snstack_xsk_prod_reserve(r: *mut xsk_ring_prod, nb: u32, idx: *mut u32) -> u32;
    pub fn snstack_xsk_prod_submit(r: *mut xsk_ring_prod, nb: u32);
    pub fn snstack_xsk_prod_nb_free(r: *mut xsk_ring_prod, nb: u32) -> u32;
    pub fn snstack_xsk_prod_needs_wakeup(r: *const xsk_ring_prod) -> c_int;
    pub fn snstack_xsk_prod_fill_addr(r: *mut xsk_ring_prod, idx: u32) -> *mut u64;
    pub fn snstack_xsk_prod_tx_desc(r: *mut xsk_ring_prod, idx: u32) -> *mut xdp_desc;
    pub fn snstack_xsk_cons_peek(r: *mut xsk_ring_cons, nb: u32, idx: *mut u32) -> u32;
    pub fn snstack_xsk_cons_release(r: *mut xsk_ring_cons, nb: u32);
    pub fn snstack_xsk_cons_comp_addr(r: *const xsk_ring_cons, idx: u32) -> *const u64;
    pub fn snstack_xsk_cons_rx_desc(r: *const xsk_ring_cons, idx: u32) -> *const xdp_desc;
    pub fn snstack_xsk_umem_get_data(area: *mut c_void, addr: u64) -> *mut c_void;
    pub fn snstack_xsk_sizeof(what: c_int) -> usize;
    /// Routes libxdp's and libbpf's messages to stderr (`on` != 0) or silences them.
    pub fn snstack_xdp_set_verbose(on: c_int);
}

/// Compares the mirrored structs' sizes with the C ones; `Err` names the first mismatch.
pub fn check_layout() -> Result<(), String> {
    let ours = [
        ("xsk_ring_prod", std::mem::size_of::<xsk_ring_prod>()),
        ("xsk_ring_cons", std::mem::size_of::<xsk_ring_cons>()),
        ("xsk_umem_config", std::mem::size_of::<xsk_umem_config>()),
        (
            "xsk_socket_config",
            std::mem::size_of::<xsk_socket_config>(),
        ),
        ("xdp_desc", std::mem::size_of::<xdp_desc>()),
    ];
    for (i, (name, size)) in ours.iter().enumerate() {
        // SAFETY: a pure function of its integer argument.
        let c = unsafe { snstack_xsk_sizeof(i as c_int) };
        if c != *size {
            return Err(format!("{name}: C size {c}, Rust size {size}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn layout_matches_c() {
        super::check_layout().unwrap();
    }
}
