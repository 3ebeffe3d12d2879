//! The unsafe side of the lwIP engine: every call into Debian's liblwip (crate `lwip-sys`) and
//! every `extern "C"` callback lwIP calls back, kept here so the engine's logic (`mod.rs`) holds
//! only safe handles.
//!
//! - [`Lwip`]: the process's one lwIP instance (lwIP keeps global state): `lwip_init` once,
//!   one Ethernet `netif`, frame input, the timer check. Debian builds lwIP with `NO_SYS=0` and
//!   core locking; `tcpip_thread` is never started, so `sys_check_core_locking` (which asserts
//!   only once that thread has marked itself) passes and the raw API is driven from the agent's
//!   thread alone.
//! - Callbacks never touch engine state: they append [`Event`]s and transmitted frames to a
//!   thread-local queue the engine drains after each call into lwIP, and never unwind into C
//!   (each body runs under `catch_unwind`).
//! - [`Pcb`] is lwIP's connection pointer. lwIP frees a pcb (1) after calling its error callback
//!   (also with `ERR_CLSD` when our LAST-ACK is acknowledged after a `shutdown(SHUT_WR)`),
//!   (2) when the engine closes or aborts it, and (3) silently when a TIME-WAIT that the
//!   engine's own FIN began expires. The engine therefore
//!   drops a `Pcb` at its [`Event::Error`], after [`Pcb::close`]/[`Pcb::abort`], and after
//!   [`Pcb::shutdown_write`], finding the pcb again by its key ([`find`]) instead of keeping a
//!   pointer that may dangle. The callback argument is the engine's socket key, never a Rust
//!   pointer.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::raw::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Once;

use lwip_sys as l;

use crate::backend::user::device::TxFrame;

/// Something lwIP told a callback, in the order it happened.
pub(super) enum Event {
    /// A listener (key) got an established connection, already given key `conn`.
    Accepted { listener: u32, conn: u32, pcb: Pcb },
    /// An active open completed.
    Connected { key: u32 },
    /// In-order bytes (an owned pbuf chain), or `None`: the peer's FIN.
    Recv { key: u32, data: Option<Pbuf> },
    /// The peer acknowledged `len` bytes: send room grew.
    Sent { key: u32 },
    /// The connection is gone (reset, timed out, aborted); lwIP has freed the pcb.
    Error { key: u32, err: i8 },
}

#[derive(Default)]
struct Shared {
    events: Vec<Event>,
    tx: VecDeque<TxFrame>,
    free: Vec<Vec<u8>>,
    callback_panics: u64,
}

thread_local! {
    static SHARED: RefCell<Shared> = RefCell::new(Shared::default());
}

/// Socket keys: one space for sockets the agent creates and connections lwIP accepts (0 is
/// "no owner": a pcb whose argument is null belongs to nobody).
static NEXT_KEY: AtomicU32 = AtomicU32::new(1);

pub(super) fn next_key() -> u32 {
    loop {
        let k = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        if k != 0 {
            return k;
        }
    }
}

fn key_arg(key: u32) -> *mut c_void {
    key as usize as *mut c_void
}

fn arg_key(arg: *mut c_void) -> u32 {
    arg as usize as u32
}

/// Runs a callback body; a panic becomes `fallback` (and is counted) instead of unwinding into C.
fn guard<R>(fallback: R, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            let _ = SHARED.try_with(|s| {
                if let Ok(mut s) = s.try_borrow_mut() {
                    s.callback_panics += 1;
                }
            });
            fallback
        }
    }
}

fn push(ev: Event) {
    SHARED.with(|s| s.borrow_mut().events.push(ev));
}

/// Moves the events queued by callbacks into `out` (appended, in order).
pub(super) fn take_events(out: &mut Vec<Event>) {
    SHARED.with(|s| out.append(&mut s.borrow_mut().events));
}

/// Hands the frames lwIP transmitted to `f` (the device's `tx_burst`) with the buffer free list.
pub(super) fn with_tx<R>(f: impl FnOnce(&mut VecDeque<TxFrame>, &mut Vec<Vec<u8>>) -> R) -> R {
    SHARED.with(|s| {
        let s = &mut *s.borrow_mut();
        f(&mut s.tx, &mut s.free)
    })
}

pub(super) fn callback_panics() -> u64 {
    SHARED.with(|s| s.borrow().callback_panics)
}

// ---------------------------------------------------------------------------------------------
// Callbacks

unsafe extern "C" fn on_linkoutput(_n: *mut l::netif, p: *mut l::pbuf) -> l::err_t {
    guard(l::ERR_IF, || {
        if p.is_null() {
            return l::ERR_ARG;
        }
        // SAFETY: lwIP passes a valid pbuf chain it owns for the duration of the call.
        let tot = unsafe { (*p).tot_len };
        SHARED.with(|s| {
            let s = &mut *s.borrow_mut();
            let mut buf = s.free.pop().unwrap_or_default();
            buf.clear();
            buf.resize(usize::from(tot), 0);
            // SAFETY: `buf` holds `tot` writable bytes; the chain holds `tot` bytes.
            let n = unsafe { l::pbuf_copy_partial(p, buf.as_mut_ptr().cast(), tot, 0) };
            buf.truncate(usize::from(n));
            // lwIP fills every checksum itself (CHECKSUM_GEN_*=1): no offload asked.
            s.tx.push_back(TxFrame {
                buf,
                meta: Default::default(),
            });
        });
        l::ERR_OK
    })
}

/// Sets the connection callbacks of `pcb` to ours under `key`.
///
/// # Safety
/// `pcb` is a live connection pcb.
unsafe fn attach(pcb: *mut l::tcp_pcb, key: u32) {
    // SAFETY: the caller's contract.
    unsafe {
        l::tcp_arg(pcb, key_arg(key));
        l::tcp_recv(pcb, Some(on_recv));
        l::tcp_sent(pcb, Some(on_sent));
        l::tcp_err(pcb, Some(on_err));
    }
}

unsafe extern "C" fn on_accept(
    arg: *mut c_void,
    newpcb: *mut l::tcp_pcb,
    err: l::err_t,
) -> l::err_t {
    // ERR_MEM: lwIP aborts the new pcb itself.
    guard(l::ERR_MEM, || {
        let Some(pcb) = NonNull::new(newpcb) else {
            return l::ERR_VAL;
        };
        if err != l::ERR_OK {
            return l::ERR_VAL;
        }
        let conn = next_key();
        // SAFETY: lwIP hands over a live, established pcb.
        unsafe { attach(newpcb, conn) };
        push(Event::Accepted {
            listener: arg_key(arg),
            conn,
            pcb: Pcb(pcb),
        });
        l::ERR_OK
    })
}

unsafe extern "C" fn on_recv(
    arg: *mut c_void,
    _pcb: *mut l::tcp_pcb,
    p: *mut l::pbuf,
    _err: l::err_t,
) -> l::err_t {
    // ERR_MEM: lwIP keeps the data and offers it again later.
    guard(l::ERR_MEM, || {
        let data = NonNull::new(p).map(Pbuf);
        push(Event::Recv {
            key: arg_key(arg),
            data,
        });
        l::ERR_OK
    })
}

unsafe extern "C" fn on_sent(arg: *mut c_void, _pcb: *mut l::tcp_pcb, _len: u16) -> l::err_t {
    guard(l::ERR_OK, || {
        push(Event::Sent { key: arg_key(arg) });
        l::ERR_OK
    })
}

unsafe extern "C" fn on_err(arg: *mut c_void, err: l::err_t) {
    guard((), || {
        push(Event::Error {
            key: arg_key(arg),
            err,
        })
    })
}

unsafe extern "C" fn on_connected(
    arg: *mut c_void,
    _pcb: *mut l::tcp_pcb,
    _err: l::err_t,
) -> l::err_t {
    guard(l::ERR_OK, || {
        push(Event::Connected { key: arg_key(arg) });
        l::ERR_OK
    })
}

// ---------------------------------------------------------------------------------------------
// The instance

static IN_USE: AtomicBool = AtomicBool::new(false);
static INIT: Once = Once::new();

/// The process's lwIP instance and its one interface.
pub(super) struct Lwip {
    netif: NonNull<l::netif>,
}

impl Lwip {
    /// Initialises lwIP (once per process) and adds the interface; `EBUSY` while another
    /// instance exists (lwIP's state is global).
    /// `seed` seeds libc's `rand()`, lwIP's `LWIP_RAND` (first local port; its ISNs are not
    /// random: docs/engines.md).
    pub(super) fn new(
        mac: [u8; 6],
        mtu: u16,
        ip: u32,
        mask: u32,
        gw: u32,
        seed: u64,
    ) -> io::Result<Lwip> {
        if IN_USE.swap(true, Ordering::AcqRel) {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        INIT.call_once(|| {
            // SAFETY: srand has no preconditions; lwip_init runs once per process, before any
            // other lwIP call.
            unsafe {
                libc::srand(seed as u32);
                l::lwip_init();
            }
        });
        // SAFETY: lwIP is initialised; `mac` is 6 readable bytes; the callback has the right
        // type. Addresses go in network byte order.
        let n = unsafe {
            l::snstack_lwip_netif_new(
                mac.as_ptr(),
                mtu,
                ip.to_be(),
                mask.to_be(),
                gw.to_be(),
                on_linkoutput,
            )
        };
        match NonNull::new(n) {
            Some(netif) => Ok(Lwip { netif }),
            None => {
                IN_USE.store(false, Ordering::Release);
                Err(io::Error::from_raw_os_error(libc::ENOMEM))
            }
        }
    }

    /// One received Ethernet frame (lwIP copies it into a pbuf); lwIP's verdict.
    pub(super) fn input(&mut self, frame: &[u8]) -> l::err_t {
        let Ok(len) = u16::try_from(frame.len()) else {
            return l::ERR_BUF;
        };
        // SAFETY: the netif is ours and live; `frame` is `len` readable bytes.
        unsafe { l::snstack_lwip_input(self.netif.as_ptr(), frame.as_ptr().cast(), len) }
    }

    /// Runs lwIP's due timers (TCP every 250 ms, ARP, reassembly).
    pub(super) fn check_timeouts(&mut self) {
        // SAFETY: lwIP is initialised and entered from this thread only.
        unsafe { l::sys_check_timeouts() }
    }

    /// Milliseconds until lwIP's next timer (`None`: none armed).
    pub(super) fn sleeptime_ms(&self) -> Option<u32> {
        // SAFETY: as above.
        let t = unsafe { l::sys_timeouts_sleeptime() };
        (t != l::SYS_TIMEOUTS_SLEEPTIME_INFINITE).then_some(t)
    }

    /// A new IPv4 TCP pcb (not bound), owned by nobody until [`Pcb::attach`]/[`Pcb::listen`].
    pub(super) fn new_pcb(&mut self) -> io::Result<Pcb> {
        // SAFETY: lwIP is initialised.
        let p = unsafe { l::tcp_new_ip_type(l::IPADDR_TYPE_V4) };
        NonNull::new(p)
            .map(Pcb)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOBUFS))
    }
}

impl Drop for Lwip {
    fn drop(&mut self) {
        // SAFETY: the netif is ours; no pcb of the engine uses it any more (the engine aborted
        // its connections first).
        unsafe { l::snstack_lwip_netif_free(self.netif.as_ptr()) };
        SHARED.with(|s| {
            let s = &mut *s.borrow_mut();
            s.events.clear();
            s.tx.clear();
        });
        IN_USE.store(false, Ordering::Release);
    }
}

/// The live pcb whose key is `key` (active or TIME-WAIT), after the engine's FIN: see the
/// module doc.
pub(super) fn find(key: u32) -> Option<Pcb> {
    // SAFETY: walks lwIP's own lists; lwIP is initialised (a key exists only then).
    NonNull::new(unsafe { l::snstack_lwip_find(key_arg(key)) }).map(Pcb)
}

// ---------------------------------------------------------------------------------------------
// Handles

/// lwIP's pointer to one pcb, valid under the rules of the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Pcb(NonNull<l::tcp_pcb>);

/// Addresses of a pcb: (local ip, local port, remote ip, remote port), IPs in host order.
pub(super) type Addrs = (u32, u16, u32, u16);

impl Pcb {
    fn p(self) -> *mut l::tcp_pcb {
        self.0.as_ptr()
    }

    /// Makes the engine's callbacks (under `key`) receive this connection's events.
    pub(super) fn attach(self, key: u32) {
        // SAFETY: a live pcb (module doc).
        unsafe { attach(self.p(), key) }
    }

    /// Detaches every callback (nothing is reported for this pcb any more).
    fn detach(self) {
        // SAFETY: a live pcb.
        unsafe {
            l::tcp_arg(self.p(), std::ptr::null_mut());
            l::tcp_recv(self.p(), None);
            l::tcp_sent(self.p(), None);
            l::tcp_err(self.p(), None);
        }
    }

    pub(super) fn bind(self, ip: u32, port: u16) -> l::err_t {
        // SAFETY: a live pcb; the address is passed by value.
        unsafe { l::snstack_lwip_bind(self.p(), ip.to_be(), port) }
    }

    /// Listens; lwIP replaces the pcb by a smaller listening one (returned), freeing this one.
    pub(super) fn listen(self, key: u32) -> Result<Pcb, l::err_t> {
        let mut err = l::ERR_OK;
        // SAFETY: a live, bound pcb; on success it is freed and the new one returned.
        let lp = unsafe { l::tcp_listen_with_backlog_and_err(self.p(), 255, &mut err) };
        let lp = NonNull::new(lp).ok_or(err)?;
        // SAFETY: the new listening pcb is live.
        unsafe {
            l::tcp_arg(lp.as_ptr(), key_arg(key));
            l::tcp_accept(lp.as_ptr(), Some(on_accept));
        }
        Ok(Pcb(lp))
    }

    /// Closes a listening pcb (freed at once).
    pub(super) fn close_listener(self) {
        // SAFETY: a live listening pcb; lwIP frees it (tcp_close of a listener cannot fail).
        unsafe {
            l::tcp_arg(self.p(), std::ptr::null_mut());
            l::tcp_accept(self.p(), None);
            l::tcp_close(self.p());
        }
    }

    pub(super) fn connect(self, key: u32, ip: u32, port: u16) -> l::err_t {
        self.attach(key);
        // SAFETY: a live pcb with our callbacks.
        unsafe { l::snstack_lwip_connect(self.p(), ip.to_be(), port, on_connected) }
    }

    /// Bytes `write` would take now.
    pub(super) fn sndbuf(self) -> u32 {
        // SAFETY: a live pcb.
        unsafe { l::snstack_lwip_sndbuf(self.p()) }
    }

    pub(super) fn mss(self) -> u16 {
        // SAFETY: a live pcb.
        unsafe { l::snstack_lwip_mss(self.p()) }
    }

    pub(super) fn addrs(self) -> Addrs {
        let (mut li, mut lp, mut ri, mut rp) = (0u32, 0u16, 0u32, 0u16);
        // SAFETY: a live pcb; four writable locals.
        unsafe { l::snstack_lwip_addrs(self.p(), &mut li, &mut lp, &mut ri, &mut rp) };
        (u32::from_be(li), lp, u32::from_be(ri), rp)
    }

    pub(super) fn listen_port(self) -> u16 {
        // SAFETY: a live listening pcb.
        unsafe { l::snstack_lwip_listen_port(self.p()) }
    }

    pub(super) fn set_nodelay(self, on: bool) {
        // SAFETY: a live pcb.
        unsafe { l::snstack_lwip_set_nodelay(self.p(), on.into()) }
    }

    pub(super) fn set_reuseaddr(self, on: bool) {
        // SAFETY: a live pcb.
        unsafe { l::snstack_lwip_set_reuseaddr(self.p(), on.into()) }
    }

    pub(super) fn set_keepalive(self, on: bool, idle_ms: u32, intvl_ms: u32, cnt: u32) {
        // SAFETY: a live pcb.
        unsafe { l::snstack_lwip_set_keepalive(self.p(), on.into(), idle_ms, intvl_ms, cnt) }
    }

    /// Queues a copy of `data` (at most 64 KiB - 1); lwIP's verdict (ERR_MEM: no room).
    pub(super) fn write(self, data: &[u8]) -> l::err_t {
        let len = data.len().min(usize::from(u16::MAX)) as u16;
        // SAFETY: a live pcb; `data` readable for `len` bytes, copied by lwIP (FLAG_COPY).
        unsafe { l::tcp_write(self.p(), data.as_ptr().cast(), len, l::TCP_WRITE_FLAG_COPY) }
    }

    pub(super) fn output(self) -> l::err_t {
        // SAFETY: a live pcb.
        unsafe { l::tcp_output(self.p()) }
    }

    /// The application took `n` bytes: opens the window by as much.
    pub(super) fn recved(self, mut n: usize) {
        while n > 0 {
            let k = n.min(usize::from(u16::MAX));
            // SAFETY: a live pcb; `k` bytes were delivered by its recv callback.
            unsafe { l::tcp_recved(self.p(), k as u16) };
            n -= k;
        }
    }

    /// Sends our FIN. The pcb may be freed silently from now on: drop this handle.
    pub(super) fn shutdown_write(self) -> l::err_t {
        // SAFETY: a live pcb.
        unsafe { l::tcp_shutdown(self.p(), 0, 1) }
    }

    /// Lets the connection go: FIN (or RST when lwIP sees unread data), freed by lwIP later.
    pub(super) fn close(self) {
        self.detach();
        // SAFETY: a live pcb with no callbacks; ours no more after the call.
        let e = unsafe { l::tcp_close(self.p()) };
        if e != l::ERR_OK {
            // ERR_MEM: the FIN could not be queued; reset instead (lwIP then frees the pcb).
            // SAFETY: tcp_close failed, so the pcb is still live and ours.
            unsafe { l::tcp_abort(self.p()) };
        }
    }

    /// Resets the connection (RST) and frees the pcb.
    pub(super) fn abort(self) {
        self.detach();
        // SAFETY: a live pcb with no callbacks (no error callback runs).
        unsafe { l::tcp_abort(self.p()) }
    }
}

/// An owned pbuf chain handed over by the recv callback.
pub(super) struct Pbuf(NonNull<l::pbuf>);

impl Drop for Pbuf {
    fn drop(&mut self) {
        // SAFETY: we own one reference to the chain.
        unsafe { l::pbuf_free(self.0.as_ptr()) };
    }
}

impl Pbuf {
    pub(super) fn len(&self) -> usize {
        // SAFETY: a live chain we own.
        usize::from(unsafe { (*self.0.as_ptr()).tot_len })
    }
}

/// Received bytes of one connection: pbuf chains as lwIP delivered them, read from the front.
#[derive(Default)]
pub(super) struct RxQueue {
    bufs: VecDeque<Pbuf>,
    len: usize,
}

impl RxQueue {
    pub(super) fn push(&mut self, p: Pbuf) {
        self.len += p.len();
        self.bufs.push_back(p);
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Copies into `out` from the front; returns the bytes copied (and consumed).
    pub(super) fn read(&mut self, out: &mut [u8]) -> usize {
        let mut n = 0;
        while n < out.len() {
            let Some(front) = self.bufs.pop_front() else {
                break;
            };
            let have = front.len();
            let k = have.min(out.len() - n);
            let dst = &mut out[n..n + k];
            // SAFETY: a live chain of `have` >= `k` bytes; `dst` is `k` writable bytes.
            let got = unsafe {
                l::pbuf_copy_partial(front.0.as_ptr(), dst.as_mut_ptr().cast(), k as u16, 0)
            };
            let got = usize::from(got);
            n += got;
            self.len -= got;
            if got < have {
                let p = front.0.as_ptr();
                std::mem::forget(front);
                // SAFETY: we own the chain; freeing `got` (< tot_len) bytes from its front
                // returns the remaining chain (never null here), still owned by us.
                let rest = unsafe { l::pbuf_free_header(p, got as u16) };
                match NonNull::new(rest) {
                    Some(r) => self.bufs.push_front(Pbuf(r)),
                    None => self.len -= have - got,
                }
                break;
            }
        }
        n
    }

    /// Drops everything (a reset, or the reader shut down).
    pub(super) fn clear(&mut self) -> usize {
        let n = self.len;
        self.bufs.clear();
        self.len = 0;
        n
    }
}
