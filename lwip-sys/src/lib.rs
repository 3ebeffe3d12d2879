//! Hand-written FFI bindings to the system lwIP (Debian `liblwip-dev` 2.1.3, found with
//! pkg-config by `build.rs`), covering what snstack's lwIP engine needs: `lwip_init`, the timer
//! check, one Ethernet interface and the raw/callback TCP API.
//!
//! Struct fields and macros (`struct netif`, `struct tcp_pcb`, `ip_addr_t`, `tcp_sndbuf`,
//! `tcp_nagle_disable`, ...) are reached through `shim/shim.c`, compiled against the packaged
//! headers, so no configuration-dependent layout is mirrored here. The one mirrored struct,
//! [`pbuf`], has its size and offsets checked against the C compiler's by a test.
//!
//! Every function is `unsafe`: lwIP keeps global state, must be initialised once with
//! [`lwip_init`] and then entered from one thread at a time (Debian builds it with `NO_SYS=0`
//! and core locking; its lock check only asserts once `tcpip_thread` has run, which snstack
//! never starts).

#![allow(non_camel_case_types)]
// Without the system lwIP (and without the `require` feature) the crate is empty.
#![cfg(not(lwip_missing))]

use std::os::raw::{c_int, c_long, c_void};

/// The lwIP version pkg-config reported at build time.
pub const LWIP_VERSION: &str = env!("LWIP_VERSION");

/// `err_t` (`s8_t`).
pub type err_t = i8;
pub const ERR_OK: err_t = 0;
pub const ERR_MEM: err_t = -1;
pub const ERR_BUF: err_t = -2;
pub const ERR_TIMEOUT: err_t = -3;
pub const ERR_RTE: err_t = -4;
pub const ERR_INPROGRESS: err_t = -5;
pub const ERR_VAL: err_t = -6;
pub const ERR_WOULDBLOCK: err_t = -7;
pub const ERR_USE: err_t = -8;
pub const ERR_ALREADY: err_t = -9;
pub const ERR_ISCONN: err_t = -10;
pub const ERR_CONN: err_t = -11;
pub const ERR_IF: err_t = -12;
pub const ERR_ABRT: err_t = -13;
pub const ERR_RST: err_t = -14;
pub const ERR_CLSD: err_t = -15;
pub const ERR_ARG: err_t = -16;

/// `enum tcp_state`.
pub const CLOSED: u8 = 0;
pub const LISTEN: u8 = 1;
pub const SYN_SENT: u8 = 2;
pub const SYN_RCVD: u8 = 3;
pub const ESTABLISHED: u8 = 4;
pub const FIN_WAIT_1: u8 = 5;
pub const FIN_WAIT_2: u8 = 6;
pub const CLOSE_WAIT: u8 = 7;
pub const CLOSING: u8 = 8;
pub const LAST_ACK: u8 = 9;
pub const TIME_WAIT: u8 = 10;

/// `IPADDR_TYPE_V4`.
pub const IPADDR_TYPE_V4: u8 = 0;
/// `TCP_WRITE_FLAG_COPY`, `TCP_WRITE_FLAG_MORE`.
pub const TCP_WRITE_FLAG_COPY: u8 = 0x01;
pub const TCP_WRITE_FLAG_MORE: u8 = 0x02;
/// `SYS_TIMEOUTS_SLEEPTIME_INFINITE`.
pub const SYS_TIMEOUTS_SLEEPTIME_INFINITE: u32 = 0xFFFF_FFFF;

/// Opaque `struct netif`.
#[repr(C)]
pub struct netif {
    _opaque: [u8; 0],
}

/// Opaque `struct tcp_pcb` (and `struct tcp_pcb_listen`, which lwIP hands out as one).
#[repr(C)]
pub struct tcp_pcb {
    _opaque: [u8; 0],
}

/// `struct pbuf`: the leading fields, stable across lwIP 2.x configurations (size and offsets
/// checked against the C compiler's by `tests::pbuf_layout_matches_the_headers`).
#[repr(C)]
pub struct pbuf {
    pub next: *mut pbuf,
    pub payload: *mut c_void,
    pub tot_len: u16,
    pub len: u16,
    pub type_internal: u8,
    pub flags: u8,
    pub ref_: u8,
    pub if_idx: u8,
}

pub type netif_linkoutput_fn = unsafe extern "C" fn(*mut netif, *mut pbuf) -> err_t;
pub type tcp_accept_fn = unsafe extern "C" fn(*mut c_void, *mut tcp_pcb, err_t) -> err_t;
pub type tcp_recv_fn = unsafe extern "C" fn(*mut c_void, *mut tcp_pcb, *mut pbuf, err_t) -> err_t;
pub type tcp_sent_fn = unsafe extern "C" fn(*mut c_void, *mut tcp_pcb, u16) -> err_t;
pub type tcp_err_fn = unsafe extern "C" fn(*mut c_void, err_t);
pub type tcp_connected_fn = unsafe extern "C" fn(*mut c_void, *mut tcp_pcb, err_t) -> err_t;

/// Indices of [`snstack_lwip_opt`]: the packaged build's compile-time configuration.
pub const SNSTACK_OPTS: [&str; 23] = [
    "NO_SYS",
    "TCP_MSS",
    "TCP_WND",
    "TCP_SND_BUF",
    "TCP_SND_QUEUELEN",
    "MEMP_NUM_TCP_PCB",
    "MEMP_NUM_TCP_PCB_LISTEN",
    "PBUF_POOL_SIZE",
    "MEM_SIZE",
    "MEMP_MEM_MALLOC",
    "LWIP_WND_SCALE",
    "TCP_RCV_SCALE",
    "LWIP_TCP_SACK_OUT",
    "LWIP_TCP_TIMESTAMPS",
    "CHECKSUM_CHECK_TCP",
    "CHECKSUM_GEN_TCP",
    "LWIP_IPV6",
    "TCP_TMR_INTERVAL",
    "TCP_MAXRTX",
    "TCP_SYNMAXRTX",
    "TCP_QUEUE_OOSEQ",
    "LWIP_TCPIP_CORE_LOCKING",
    "PBUF_POOL_BUFSIZE",
];

/// The value of a compile-time option by name (see [`SNSTACK_OPTS`]); `None` for others.
pub fn opt(name: &str) -> Option<i64> {
    let i = SNSTACK_OPTS.iter().position(|&n| n == name)?;
    // SAFETY: a pure function of its argument (a switch over constants).
    let v: c_long = unsafe { snstack_lwip_opt(i as c_int) };
    #[allow(clippy::useless_conversion)] // c_long is i32 on 32-bit targets
    Some(i64::from(v))
}

extern "C" {
    // lwIP itself.
    pub fn lwip_init();
    pub fn sys_check_timeouts();
    pub fn sys_timeouts_sleeptime() -> u32;
    pub fn pbuf_free(p: *mut pbuf) -> u8;
    pub fn pbuf_copy_partial(p: *const pbuf, dataptr: *mut c_void, len: u16, offset: u16) -> u16;
    pub fn pbuf_free_header(q: *mut pbuf, size: u16) -> *mut pbuf;
    pub fn tcp_new_ip_type(ty: u8) -> *mut tcp_pcb;
    pub fn tcp_arg(pcb: *mut tcp_pcb, arg: *mut c_void);
    pub fn tcp_accept(pcb: *mut tcp_pcb, accept: Option<tcp_accept_fn>);
    pub fn tcp_recv(pcb: *mut tcp_pcb, recv: Option<tcp_recv_fn>);
    pub fn tcp_sent(pcb: *mut tcp_pcb, sent: Option<tcp_sent_fn>);
    pub fn tcp_err(pcb: *mut tcp_pcb, err: Option<tcp_err_fn>);
    pub fn tcp_listen_with_backlog_and_err(
        pcb: *mut tcp_pcb,
        backlog: u8,
        err: *mut err_t,
    ) -> *mut tcp_pcb;
    pub fn tcp_write(pcb: *mut tcp_pcb, data: *const c_void, len: u16, apiflags: u8) -> err_t;
    pub fn tcp_output(pcb: *mut tcp_pcb) -> err_t;
    pub fn tcp_recved(pcb: *mut tcp_pcb, len: u16);
    pub fn tcp_close(pcb: *mut tcp_pcb) -> err_t;
    pub fn tcp_shutdown(pcb: *mut tcp_pcb, shut_rx: c_int, shut_tx: c_int) -> err_t;
    pub fn tcp_abort(pcb: *mut tcp_pcb);

    // shim/shim.c
    pub fn snstack_lwip_opt(i: c_int) -> c_long;
    pub fn snstack_lwip_pbuf_layout(i: c_int) -> c_long;
    pub fn snstack_lwip_netif_new(
        mac: *const u8,
        mtu: u16,
        ip: u32,
        mask: u32,
        gw: u32,
        linkoutput: netif_linkoutput_fn,
    ) -> *mut netif;
    pub fn snstack_lwip_netif_free(n: *mut netif);
    pub fn snstack_lwip_input(n: *mut netif, frame: *const c_void, len: u16) -> err_t;
    pub fn snstack_lwip_state(pcb: *const tcp_pcb) -> u8;
    pub fn snstack_lwip_sndbuf(pcb: *const tcp_pcb) -> u32;
    pub fn snstack_lwip_unsent(pcb: *const tcp_pcb) -> u32;
    pub fn snstack_lwip_mss(pcb: *const tcp_pcb) -> u16;
    pub fn snstack_lwip_addrs(
        pcb: *const tcp_pcb,
        lip: *mut u32,
        lport: *mut u16,
        rip: *mut u32,
        rport: *mut u16,
    );
    pub fn snstack_lwip_listen_port(l: *const tcp_pcb) -> u16;
    pub fn snstack_lwip_set_nodelay(pcb: *mut tcp_pcb, on: c_int);
    pub fn snstack_lwip_set_reuseaddr(pcb: *mut tcp_pcb, on: c_int);
    pub fn snstack_lwip_set_keepalive(
        pcb: *mut tcp_pcb,
        on: c_int,
        idle_ms: u32,
        intvl_ms: u32,
        cnt: u32,
    );
    pub fn snstack_lwip_bind(pcb: *mut tcp_pcb, ip: u32, port: u16) -> err_t;
    pub fn snstack_lwip_connect(
        pcb: *mut tcp_pcb,
        ip: u32,
        port: u16,
        done: tcp_connected_fn,
    ) -> err_t;
    pub fn snstack_lwip_find(arg: *mut c_void) -> *mut tcp_pcb;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbuf_layout_matches_the_headers() {
        // SAFETY: pure functions of their argument.
        let c = |i| unsafe { snstack_lwip_pbuf_layout(i) } as usize;
        assert_eq!(c(0), std::mem::size_of::<pbuf>());
        assert_eq!(c(1), std::mem::offset_of!(pbuf, next));
        assert_eq!(c(2), std::mem::offset_of!(pbuf, payload));
        assert_eq!(c(3), std::mem::offset_of!(pbuf, tot_len));
        assert_eq!(c(4), std::mem::offset_of!(pbuf, len));
    }

    #[test]
    fn packaged_configuration_is_the_one_documented() {
        // docs/engines.md records these; a different build of liblwip should be noticed.
        assert_eq!(opt("NO_SYS"), Some(0));
        assert_eq!(opt("TCP_WND"), Some(65535));
        assert_eq!(opt("TCP_SND_BUF"), Some(65535));
        assert_eq!(opt("LWIP_TCP_SACK_OUT"), Some(0));
        assert_eq!(opt("LWIP_TCP_TIMESTAMPS"), Some(0));
        assert_eq!(opt("MEMP_MEM_MALLOC"), Some(1));
        assert_eq!(opt("NO_SUCH_OPTION"), None);
    }
}
