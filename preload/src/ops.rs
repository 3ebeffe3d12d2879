//! Socket operations on offloaded fds, in safe(ish) Rust. The `extern "C"` layer (`hooks.rs`)
//! calls these and turns [`R`] into a return value and errno.

use crate::channel::Channel;
use crate::fdtable;
use crate::readiness::{self, want_rx};
use crate::sockref::{lookup, S};
use crate::tlsrx::Verdict;
use crate::{log, sys, util};
use core::sync::atomic::Ordering;
use libc::{c_int, c_uint, iovec};
use shm_proto::*;

/// Outcome of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum R {
    /// Not ours: call libc.
    Pass,
    Ok(isize),
    Err(i32),
}

macro_rules! try_sock {
    ($fd:expr) => {
        match lookup($fd) {
            None => return R::Pass,
            Some(Err(e)) => return R::Err(e),
            Some(Ok(s)) => s,
        }
    };
}

fn call(s: &S, req: Request) -> Result<Evt, i32> {
    s.c.call(s.slot, req)
}

fn res(r: Result<Evt, i32>) -> R {
    match r {
        Ok(e) if e.result >= 0 => R::Ok(e.result as isize),
        Ok(e) => R::Err((-e.result) as i32),
        Err(e) => R::Err(e),
    }
}

// ---------------------------------------------------------------- addresses

/// Reads a user sockaddr into the wire form, with Linux's length checks.
///
/// # Safety
/// `addr` must be null or point to `len` readable bytes.
pub(crate) unsafe fn read_addr(
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
) -> Result<WireAddr, i32> {
    if addr.is_null() {
        return Err(libc::EFAULT);
    }
    if (len as i32) < 0 {
        return Err(libc::EINVAL);
    }
    if (len as usize) < 2 {
        return Err(libc::EINVAL);
    }
    // SAFETY: at least 2 bytes readable.
    let fam = unsafe { core::ptr::read_unaligned(addr as *const u16) } as i32;
    let mut w = WireAddr {
        family: fam as u16,
        ..Default::default()
    };
    match fam {
        libc::AF_INET => {
            if (len as usize) < core::mem::size_of::<libc::sockaddr_in>() {
                return Err(libc::EINVAL);
            }
            // SAFETY: len covers a sockaddr_in.
            let a = unsafe { core::ptr::read_unaligned(addr as *const libc::sockaddr_in) };
            w.port = a.sin_port;
            w.addr[..4].copy_from_slice(&a.sin_addr.s_addr.to_ne_bytes());
        }
        libc::AF_INET6 => {
            if (len as usize) < 24 {
                return Err(libc::EINVAL);
            }
            let mut a: libc::sockaddr_in6 = // SAFETY: all-zero is a valid sockaddr_in6.
                unsafe { core::mem::zeroed() };
            let n = (len as usize).min(core::mem::size_of::<libc::sockaddr_in6>());
            // SAFETY: n bytes are readable from addr and fit in `a`.
            unsafe {
                core::ptr::copy_nonoverlapping(addr as *const u8, &mut a as *mut _ as *mut u8, n)
            };
            w.port = a.sin6_port;
            w.flowinfo = a.sin6_flowinfo;
            w.addr = a.sin6_addr.s6_addr;
            w.scope_id = a.sin6_scope_id;
        }
        _ => {}
    }
    Ok(w)
}

/// The address a request may carry. A family other than AF_INET, AF_INET6 or AF_UNSPEC is
/// answered here, as Linux answers it on an inet socket: it would be a protocol violation on the
/// wire (the agent drops the whole channel for it).
fn request_addr(w: WireAddr) -> Result<Addr, i32> {
    Addr::try_from(w).map_err(|_| libc::EAFNOSUPPORT)
}

/// Writes a wire address to a user sockaddr with Linux's truncation rule.
///
/// # Safety
/// `addr`/`len` must be null or valid for writes of `*len` bytes / one socklen_t.
pub(crate) unsafe fn write_addr(
    w: &WireAddr,
    addr: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
) -> Result<(), i32> {
    if addr.is_null() {
        return Ok(());
    }
    if len.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: len is non-null and the caller's.
    let cap = unsafe { *len } as i32;
    if cap < 0 {
        return Err(libc::EINVAL);
    }
    let mut buf = [0u8; 28];
    let actual = if w.family as i32 == libc::AF_INET6 {
        let mut a: libc::sockaddr_in6 = // SAFETY: all-zero is valid.
            unsafe { core::mem::zeroed() };
        a.sin6_family = libc::AF_INET6 as u16;
        a.sin6_port = w.port;
        a.sin6_flowinfo = w.flowinfo;
        a.sin6_addr.s6_addr = w.addr;
        a.sin6_scope_id = w.scope_id;
        // SAFETY: sockaddr_in6 is 28 plain bytes.
        unsafe {
            core::ptr::copy_nonoverlapping(&a as *const _ as *const u8, buf.as_mut_ptr(), 28)
        };
        28
    } else {
        let mut a: libc::sockaddr_in = // SAFETY: all-zero is valid.
            unsafe { core::mem::zeroed() };
        a.sin_family = libc::AF_INET as u16;
        a.sin_port = w.port;
        a.sin_addr.s_addr = u32::from_ne_bytes([w.addr[0], w.addr[1], w.addr[2], w.addr[3]]);
        // SAFETY: sockaddr_in is 16 plain bytes.
        unsafe {
            core::ptr::copy_nonoverlapping(&a as *const _ as *const u8, buf.as_mut_ptr(), 16)
        };
        16
    };
    let n = (cap as usize).min(actual);
    // SAFETY: the caller provides `cap` writable bytes at addr.
    unsafe {
        core::ptr::copy_nonoverlapping(buf.as_ptr(), addr as *mut u8, n);
        *len = actual as libc::socklen_t;
    }
    Ok(())
}

// ---------------------------------------------------------------- lifecycle

/// `socket()`. Returns `Pass` for anything we do not offload.
pub(crate) fn socket(domain: i32, ty: i32, proto: i32) -> R {
    let base = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    if (domain != libc::AF_INET && domain != libc::AF_INET6)
        || base != libc::SOCK_STREAM
        || (proto != 0 && proto != libc::IPPROTO_TCP)
    {
        return R::Pass;
    }
    // A program rule keeps this process on kernel sockets (and away from the agent).
    if crate::rules::process_kernel() {
        return R::Pass;
    }
    let c = match crate::process::channel() {
        crate::process::Chan::Attached(c) => c,
        crate::process::Chan::Pass => return R::Pass,
        crate::process::Chan::Strict => return R::Err(libc::ENETDOWN),
    };
    if c.is_dead() {
        return R::Err(libc::ENETDOWN);
    }
    let shadow = match crate::shadow::new(domain, ty) {
        Ok(f) => f,
        Err(e) => return R::Err(e),
    };
    let req = Request::Socket {
        domain,
        ty: base,
        protocol: proto,
    };
    let slot = match c.call(0, req) {
        Ok(e) if e.result >= 0 => e.result as u32,
        Ok(e) => {
            let _ = sys::close(shadow);
            return R::Err((-e.result) as i32);
        }
        Err(e) => {
            let _ = sys::close(shadow);
            return R::Err(e);
        }
    };
    if init_slot(c, slot, domain, ty & libc::SOCK_NONBLOCK != 0, false).is_err() {
        let _ = sys::close(shadow);
        return R::Err(libc::EIO);
    }
    if crate::rules::moves_sockets() {
        if let Some(hs) = c.socks.get(slot as usize) {
            hs.opts.clear();
        }
    }
    fdtable::set_sock(shadow, slot);
    R::Ok(shadow as isize)
}

fn init_slot(
    c: &Channel,
    slot: u32,
    domain: i32,
    nonblock: bool,
    oob_inline: bool,
) -> Result<(), ()> {
    let (Some(hs), Some(ctl)) = (c.socks.get(slot as usize), c.region.sock(slot)) else {
        let _ = c.post(slot, Request::Close);
        return Err(());
    };
    hs.inc.fetch_add(1, Ordering::AcqRel);
    hs.refs.store(1, Ordering::Relaxed);
    hs.nonblock.store(nonblock, Ordering::Relaxed);
    hs.domain.store(domain, Ordering::Relaxed);
    hs.rcvtimeo.store(0, Ordering::Relaxed);
    hs.sndtimeo.store(0, Ordering::Relaxed);
    hs.err_seen.store(
        ctl.state.0.error_seq.load(Ordering::Acquire),
        Ordering::Release,
    );
    crate::urgent::reset(hs, ctl, oob_inline);
    hs.ktls_tx.store(false, Ordering::Relaxed);
    hs.ktls_rx.store(false, Ordering::Relaxed);
    Ok(())
}

pub(crate) fn bind(fd: i32, addr: *const libc::sockaddr, len: libc::socklen_t) -> R {
    let s = try_sock!(fd);
    // SAFETY: the application's pointer/length pair, checked by read_addr.
    let addr = match unsafe { read_addr(addr, len) }.and_then(request_addr) {
        Ok(a) => a,
        Err(e) => return R::Err(e),
    };
    res(call(&s, Request::Bind { addr }))
}

pub(crate) fn listen(fd: i32, backlog: i32) -> R {
    let s = try_sock!(fd);
    res(call(&s, Request::Listen { backlog }))
}

pub(crate) fn connect(fd: i32, addr: *const libc::sockaddr, len: libc::socklen_t) -> R {
    let s = try_sock!(fd);
    // SAFETY: checked by read_addr.
    let addr = match unsafe { read_addr(addr, len) }.and_then(request_addr) {
        Ok(a) => a,
        Err(e) => return R::Err(e),
    };
    match res(call(&s, Request::Connect { addr, wait: false })) {
        R::Err(libc::EINPROGRESS) => {}
        other => return other,
    }
    if s.hs.nonblock.load(Ordering::Relaxed) {
        return R::Err(libc::EINPROGRESS);
    }
    let st = &s.ctl.state.0;
    let done = || st.flags.load(Ordering::Acquire) & SF_CONNECTING == 0;
    match wait_sock(&s, done, s.hs.sndtimeo.load(Ordering::Relaxed), None) {
        Ok(()) => {}
        Err(libc::EAGAIN) => return R::Err(libc::EINPROGRESS),
        Err(e) => return R::Err(e),
    }
    if let Some(e) = take_error(&s) {
        return R::Err(e);
    }
    if st.flags.load(Ordering::Acquire) & SF_CONNECTED != 0 {
        R::Ok(0)
    } else {
        R::Err(libc::ECONNREFUSED)
    }
}

pub(crate) fn accept4(
    fd: i32,
    addr: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
    flags: i32,
) -> R {
    let s = try_sock!(fd);
    if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 {
        return R::Err(libc::EINVAL);
    }
    let st = &s.ctl.state.0;
    let (slot, peer) = loop {
        if st.flags.load(Ordering::Acquire) & SF_LISTENING == 0 {
            return R::Err(libc::EINVAL);
        }
        // A connection the agent handed us ahead of time: no round trip (unless the agent
        // died: then its slots are gone too, and the paths below report it).
        if !s.c.is_dead() {
            match readiness::take_handoff(&s) {
                Ok(Some(h)) => break (h.slot, h.peer),
                Ok(None) => {}
                Err(e) => return R::Err(e),
            }
        }
        if st.accept_ready.load(Ordering::Acquire) > 0 {
            match call(&s, Request::Accept { wait: false }) {
                Ok(e) if e.result >= 0 => break (e.result as u32, e.addr()),
                Ok(e) if e.result == -(libc::EAGAIN as i64) => {}
                Ok(e) => return R::Err((-e.result) as i32),
                Err(e) => return R::Err(e),
            }
        }
        if s.hs.nonblock.load(Ordering::Relaxed) {
            return R::Err(libc::EAGAIN);
        }
        let ready = || {
            st.accept_ready.load(Ordering::Acquire) > 0
                || readiness::handoffs_waiting(&s)
                || st.flags.load(Ordering::Acquire) & SF_LISTENING == 0
        };
        let timeo = s.hs.rcvtimeo.load(Ordering::Relaxed);
        match wait_sock(&s, ready, timeo, None) {
            Ok(()) => {}
            Err(libc::EINTR) if restartable(timeo) => {}
            Err(e) => return R::Err(e),
        }
    };
    let domain = s.hs.domain.load(Ordering::Relaxed);
    let shadow = match crate::shadow::new(domain, flags) {
        Ok(f) => f,
        Err(e) => {
            let _ = s.c.post(slot, Request::Close);
            return R::Err(e);
        }
    };
    let inline = s.hs.oob_inline.load(Ordering::Relaxed);
    if init_slot(s.c, slot, domain, flags & libc::SOCK_NONBLOCK != 0, inline).is_err() {
        let _ = sys::close(shadow);
        return R::Err(libc::EIO);
    }
    fdtable::set_sock(shadow, slot);
    // SAFETY: the application's buffers; write_addr checks null and length.
    if let Err(e) = unsafe { write_addr(&peer, addr, len) } {
        return R::Err(e);
    }
    R::Ok(shadow as isize)
}

pub(crate) fn shutdown(fd: i32, how: i32) -> R {
    let s = try_sock!(fd);
    res(call(&s, Request::Shutdown { how }))
}

pub(crate) fn name(fd: i32, addr: *mut libc::sockaddr, len: *mut libc::socklen_t, peer: bool) -> R {
    let s = try_sock!(fd);
    if addr.is_null() || len.is_null() {
        return R::Err(libc::EFAULT);
    }
    let req = if peer {
        Request::GetPeerName
    } else {
        Request::GetSockName
    };
    match call(&s, req) {
        Ok(e) if e.result >= 0 => {
            let w = e.addr();
            // SAFETY: non-null application buffers.
            match unsafe { write_addr(&w, addr, len) } {
                Ok(()) => R::Ok(0),
                Err(e) => R::Err(e),
            }
        }
        Ok(e) => R::Err((-e.result) as i32),
        Err(e) => R::Err(e),
    }
}

// ---------------------------------------------------------------- errors and waiting

/// Reports a pending SO_ERROR once.
pub(crate) fn take_error(s: &S) -> Option<i32> {
    let st = &s.ctl.state.0;
    loop {
        let seq = st.error_seq.load(Ordering::Acquire);
        let seen = s.hs.err_seen.load(Ordering::Acquire);
        if seq == seen || st.flags.load(Ordering::Acquire) & SF_ERROR == 0 {
            return None;
        }
        if s.hs
            .err_seen
            .compare_exchange(seen, seq, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            let e = st.error.load(Ordering::Acquire) as i32;
            return Some(if e == 0 { libc::EIO } else { e });
        }
    }
}

/// Spin, then sleep on the socket's futex until `cond` holds. `timeout_ns == 0`: no timeout.
/// Errors: EINTR (a signal), EAGAIN (timeout), ECONNRESET (agent gone).
/// `since`: the caller's snapshot taken when its blocking call began (a handler that ran after it,
/// even before the wait, interrupts: the kernel checks for pending signals before it sleeps);
/// None: from now.
pub(crate) fn wait_sock(
    s: &S,
    mut cond: impl FnMut() -> bool,
    timeout_ns: u64,
    since: Option<crate::signals::Snap>,
) -> Result<(), i32> {
    // Handlers that run from here on interrupt the call, spinning or asleep, as in the kernel.
    let sig0 = since.unwrap_or_else(crate::signals::snap);
    let start = sys::clock_ns();
    let deadline = if timeout_ns == 0 {
        u64::MAX
    } else {
        start.saturating_add(timeout_ns)
    };
    let mut n = 0u32;
    loop {
        // A handler first: it may itself have made `cond` true (sent us bytes), where the
        // kernel's call would have returned EINTR before the handler ran. Nothing is lost: the
        // bytes wait for the next call (or the restarted one, with SA_RESTART).
        if let Some(all_restart) = crate::signals::since(sig0) {
            set_verdict(Some(all_restart));
            return Err(libc::EINTR);
        }
        if cond() {
            return Ok(());
        }
        n += 1;
        if n % 64 == 0 && sys::clock_ns().saturating_sub(start) > s.c.spin_ns {
            break;
        }
        core::hint::spin_loop();
    }
    let st = &s.ctl.state.0;
    let waiters = &s.ctl.host.0.waiters;
    let _kick = crate::signals::waiting_on(sig0, &st.wake_seq);
    loop {
        let seen = wake::prepare_wait(&st.wake_seq, waiters);
        if cond() {
            wake::finish_wait(waiters);
            return Ok(());
        }
        // A handler from here on bumps `wake_seq`, so the futex below cannot sleep past it.
        if let Some(all_restart) = crate::signals::since(sig0) {
            wake::finish_wait(waiters);
            set_verdict(Some(all_restart));
            return Err(libc::EINTR);
        }
        let now = sys::clock_ns();
        if now >= deadline {
            wake::finish_wait(waiters);
            return Err(libc::EAGAIN);
        }
        let r = sys::futex_wait(
            &st.wake_seq,
            seen,
            Some((deadline - now).min(crate::config::LIVENESS_NS.load(Ordering::Relaxed))),
        );
        wake::finish_wait(waiters);
        // A handler that ran on this thread interrupts the wait even when the futex returned for
        // another reason (its liveness timeout, or bytes the handler itself sent): the kernel's
        // recv would have returned EINTR.
        let ran = crate::signals::since(sig0);
        if r == Err(libc::EINTR) || ran.is_some() {
            set_verdict(ran);
            return Err(libc::EINTR);
        }
        if cond() {
            return Ok(());
        }
        if r == Err(libc::ETIMEDOUT) && !s.c.check_alive() {
            return Err(libc::ECONNRESET);
        }
    }
}

/// Per thread slot: what the handlers that interrupted the last wait said about restarting
/// (0: unknown, a handler installed behind our back; 1: all had SA_RESTART; 2: one did not).
static VERDICT: [core::sync::atomic::AtomicU8; 4096] =
    [const { core::sync::atomic::AtomicU8::new(0) }; 4096];

fn set_verdict(ran: Option<bool>) {
    let v = match ran {
        None => 0,
        Some(true) => 1,
        Some(false) => 2,
    };
    VERDICT[sys::gettid() as usize % 4096].store(v, Ordering::Relaxed);
}

/// After EINTR: does the kernel's rule restart this call? Blocking socket calls without a
/// timeout restart when the handler that ran has SA_RESTART; with SO_RCVTIMEO/SO_SNDTIMEO they
/// never restart. Handlers the library installed say which ran (signals.rs); for one installed
/// by a raw syscall we require SA_RESTART of every installed handler.
fn restartable(timeout_ns: u64) -> bool {
    if timeout_ns != 0 {
        return false;
    }
    match VERDICT[sys::gettid() as usize % 4096].load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => sys::handlers_all_restart(),
    }
}

fn raise_sigpipe() {
    let _ = sys::tgkill(sys::getpid(), sys::gettid(), libc::SIGPIPE);
}

// ---------------------------------------------------------------- data path

/// A scatter list the data path copies into or out of.
pub(crate) struct Iov<'a> {
    pub(crate) v: &'a [libc::iovec],
}

impl Iov<'_> {
    pub(crate) fn total(&self) -> Result<usize, i32> {
        let mut t: usize = 0;
        for v in self.v {
            t = t.checked_add(v.iov_len).ok_or(libc::EINVAL)?;
        }
        if t > isize::MAX as usize {
            return Err(libc::EINVAL);
        }
        Ok(t)
    }

    /// Copies the list's bytes `[off, off + n)` into `tx` from stream index `at` (not
    /// published).
    fn copy_into(&self, tx: &shm_proto::Stream, at: u32, off: usize, n: usize) {
        let mut done = 0usize;
        self.walk(off, n, |p, len| {
            // SAFETY: p..p+len is application memory from its iovec.
            let src = unsafe { core::slice::from_raw_parts(p as *const u8, len) };
            tx.copy_in(at.wrapping_add(done as u32), src);
            done += len;
        });
    }

    /// Calls `f(ptr, len)` for the bytes `[off, off+len)` of the list, piece by piece.
    fn walk(&self, mut off: usize, mut len: usize, mut f: impl FnMut(*mut u8, usize)) {
        for v in self.v {
            if len == 0 {
                break;
            }
            if off >= v.iov_len {
                off -= v.iov_len;
                continue;
            }
            let n = (v.iov_len - off).min(len);
            // SAFETY: off < iov_len; the application owns iov_base[..iov_len].
            f(unsafe { (v.iov_base as *mut u8).add(off) }, n);
            len -= n;
            off = 0;
        }
    }
}

pub(crate) fn recv(fd: i32, iov: &Iov, flags: i32) -> R {
    let s = try_sock!(fd);
    recv_sock(&s, iov, flags)
}

pub(crate) fn recv_sock(s: &S, iov: &Iov, flags: i32) -> R {
    recv_typed(s, iov, flags, &mut TlsRead::default())
}

/// The record type side of a read on a kTLS RX socket (tlsrx.rs).
#[derive(Default)]
pub(crate) struct TlsRead {
    /// The caller has room for the `TLS_GET_RECORD_TYPE` control message.
    pub(crate) room: bool,
    /// The content type of what the read returned (`None`: nothing, or no kTLS RX).
    pub(crate) ty: Option<u8>,
}

/// [`recv_sock`]; on a socket with kTLS RX, one record type per read (`tls.ty` says which).
pub(crate) fn recv_typed(s: &S, iov: &Iov, flags: i32, tls: &mut TlsRead) -> R {
    let total = match iov.total() {
        Ok(t) => t,
        Err(e) => return R::Err(e),
    };
    let st = &s.ctl.state.0;
    if s.c.is_dead() {
        return R::Err(libc::ECONNRESET);
    }
    let fl = st.flags.load(Ordering::Acquire);
    if fl & SF_LISTENING != 0 {
        return R::Err(libc::ENOTCONN);
    }
    if flags & libc::MSG_OOB != 0 {
        let mut first: Option<*mut u8> = None;
        iov.walk(0, 1, |p, _| first = Some(p));
        // SAFETY: the first byte of the application's buffer, when it has one.
        let first = first.map(|p| unsafe { &mut *p });
        let (peek, trunc) = (flags & libc::MSG_PEEK != 0, flags & libc::MSG_TRUNC != 0);
        return match crate::urgent::recv_oob(s, first, peek, trunc) {
            Ok(n) => R::Ok(n as isize),
            Err(e) => R::Err(e),
        };
    }
    if total == 0 {
        return R::Ok(0);
    }
    let Some(rx) = s.c.region.rx(s.slot) else {
        return R::Err(libc::EBADF);
    };
    let peek = flags & libc::MSG_PEEK != 0;
    let waitall = flags & libc::MSG_WAITALL != 0 && !peek;
    let nb = s.hs.nonblock.load(Ordering::Relaxed) || flags & libc::MSG_DONTWAIT != 0;
    // A blocking call notes the signal handlers run so far (no syscall: a cached slot).
    let mut sig0 = (!nb).then(crate::signals::snap);
    let mut got = 0usize;
    loop {
        let mut last = false;
        {
            let _g = s.hs.rx.lock();
            let head = s.ctl.rx_head.0.head.load(Ordering::Relaxed);
            let mut avail = match rx.readable(head) {
                Ok(a) => a as usize,
                Err(_) => return R::Err(libc::EIO),
            };
            // Urgent data (urgent.rs): a read stops at the mark once it has something, and
            // there skips the urgent byte unless SO_OOBINLINE, as Linux's tcp_recvmsg.
            let mut skip = 0u32;
            match crate::urgent::mark_ahead(s, head) {
                Some(0) if got > 0 => return R::Ok(got as isize),
                Some(0) if avail > 0 && crate::urgent::skips(s) => {
                    skip = 1;
                    avail -= 1;
                }
                Some(d) if d > 0 => avail = avail.min(d as usize),
                _ => {}
            }
            // kTLS RX (tlsrx.rs): the word after the tail (`readable` loaded it), one record
            // type per read. Looked at on every socket and every read, not only where this
            // process set `TLS_RX` (`hs.ktls_rx`): a child forked before the keys or exec'd
            // after them, or a thread already in this read when they were set, reads the
            // socket too (the agent writes 0, data, on a socket without kTLS RX).
            let mut took_ty = None;
            let w = st.tls_rx.load(Ordering::Acquire);
            match crate::tlsrx::verdict(w, avail, total - got, tls.ty, tls.room) {
                Verdict::Take { ty, n, last: l } => {
                    took_ty = Some(ty);
                    avail = n;
                    last = l;
                }
                Verdict::Stop => return R::Ok(got as isize),
                Verdict::Fail(e) => return R::Err(e),
                Verdict::Empty => avail = 0,
            }
            if avail > 0 || skip > 0 {
                let want = (total - got).min(avail);
                let from = head.wrapping_add(skip);
                let mut done = 0usize;
                iov.walk(got, want, |p, n| {
                    // SAFETY: p..p+n is application memory from its iovec.
                    let dst = unsafe { core::slice::from_raw_parts_mut(p, n) };
                    rx.copy_out(from.wrapping_add(done as u32), dst);
                    done += n;
                });
                if !peek {
                    // A CAS, not a store: on a shared connection the agent may have taken these
                    // bytes for another process's reader meanwhile (OP_RX_CLAIM); then they are
                    // not ours and what we copied is dropped.
                    if rx.cas_head(head, from.wrapping_add(want as u32)) {
                        crate::urgent::read_past(s, head, from.wrapping_add(want as u32));
                        if wake::rx_space_needed(&s.ctl.rx_head.0.blocked) {
                            let _ = s.c.post(s.slot, Request::RxSpace);
                        }
                        got += want;
                        tls.ty = took_ty.or(tls.ty);
                    } else {
                        last = false;
                    }
                } else {
                    got += want;
                    tls.ty = took_ty.or(tls.ty);
                }
            }
        }
        if got > 0 && (!waitall || got == total || last) {
            return R::Ok(got as isize);
        }
        let fl = st.flags.load(Ordering::Acquire);
        // (An urgent byte a read would skip is not more to read: a peek that sits at the mark
        // with nothing after it waits or says EAGAIN, as Linux's does.)
        let more =
            crate::urgent::readable_past_mark(s, &rx, s.ctl.rx_head.0.head.load(Ordering::Relaxed))
                > 0;
        if more && !peek {
            continue;
        }
        if got > 0 && (fl & (SF_RX_FIN | SF_RX_SHUT | SF_ERROR) != 0 || nb) {
            return R::Ok(got as isize);
        }
        if more {
            // MSG_PEEK|MSG_WAITALL: what is there is what we give.
            continue;
        }
        if let Some(e) = take_error(s) {
            // EPIPE is a write-side verdict (our agent's send found the peer gone); a reader
            // on Linux sees end of stream there, never EPIPE.
            if got > 0 || e == libc::EPIPE {
                return R::Ok(got as isize);
            }
            return R::Err(e);
        }
        if fl & (SF_RX_FIN | SF_RX_SHUT | SF_ERROR) != 0 {
            return R::Ok(got as isize);
        }
        if fl & (SF_CONNECTED | SF_CONNECTING) == 0 {
            return R::Err(libc::ENOTCONN);
        }
        want_rx(s, true);
        if nb {
            return R::Err(libc::EAGAIN);
        }
        let head = s.ctl.rx_head.0.head.load(Ordering::Relaxed);
        let ready = || {
            crate::urgent::readable_past_mark(s, &rx, head) > 0
                || st.flags.load(Ordering::Acquire) & (SF_RX_FIN | SF_RX_SHUT | SF_ERROR) != 0
                || crate::tlsrx::failed(st.tls_rx.load(Ordering::Acquire))
        };
        let timeo = s.hs.rcvtimeo.load(Ordering::Relaxed);
        match wait_sock(s, ready, timeo, sig0) {
            Ok(()) => {}
            Err(libc::EINTR) if got == 0 && restartable(timeo) => {
                sig0 = Some(crate::signals::snap());
            }
            Err(e) => {
                return if got > 0 {
                    R::Ok(got as isize)
                } else {
                    R::Err(e)
                }
            }
        }
    }
}

pub(crate) fn send(fd: i32, iov: &Iov, flags: i32) -> R {
    let s = try_sock!(fd);
    send_sock(&s, iov, flags)
}

/// Tells the agent that `s`'s TX stream has new bytes (after they are published): the slot's bit
/// in the TX-changed bitmap, and the agent's doorbell when this mark is the one that must ring
/// (`shm_proto::changed::mark`). No command: in a burst of replies the bits land in words
/// this thread already holds in its cache.
pub(crate) fn kick(s: &S) -> Result<(), i32> {
    if s.c.is_dead() {
        return Err(libc::ECONNRESET);
    }
    if s.c.region.mark_tx(s.slot) {
        s.c.ring_agent();
    }
    Ok(())
}

pub(crate) fn send_sock(s: &S, iov: &Iov, flags: i32) -> R {
    let total = match iov.total() {
        Ok(t) => t,
        Err(e) => return R::Err(e),
    };
    if s.hs.ktls_tx.load(Ordering::Relaxed) && flags & !KTLS_SEND_FLAGS != 0 {
        // tls_sw_sendmsg takes no other flag (MSG_OOB included).
        return R::Err(libc::EOPNOTSUPP);
    }
    if flags & libc::MSG_OOB != 0 {
        return send_urgent(s, iov, total, flags);
    }
    send_with(s, total, flags, |tx, tail, sent, n| {
        iov.copy_into(tx, tail, sent, n);
        tx.publish_tail(tail.wrapping_add(n as u32));
        Ok((n, true))
    })
}

/// The `send` flags a kTLS socket takes (Linux's tls_sw_sendmsg).
const KTLS_SEND_FLAGS: i32 =
    libc::MSG_MORE | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL | libc::MSG_EOR;

/// `sendmsg`: on a socket with kTLS TX, a `SOL_TLS`/`TLS_SET_RECORD_TYPE` control message makes
/// the bytes record(s) of that content type ([`send_record`]), with Linux's errors
/// (tls_process_cmsg: `EINVAL` for a malformed control message, any other `SOL_TLS` one, control
/// data without a `SOL_TLS` message, or `MSG_MORE` with a record type). Elsewhere control
/// messages are ignored, as Linux's TCP ignores levels other than `SOL_SOCKET`.
pub(crate) fn sendmsg(fd: i32, msg: &libc::msghdr, flags: i32) -> R {
    let s = try_sock!(fd);
    let v = match iov_slice(msg.msg_iov, msg.msg_iovlen as c_int) {
        Ok(v) => v,
        Err(e) => return R::Err(e),
    };
    let iov = Iov { v };
    if !s.hs.ktls_tx.load(Ordering::Relaxed) || msg.msg_controllen == 0 {
        return send_sock(&s, &iov, flags);
    }
    match record_type(msg, flags) {
        Ok(ty) => send_record(&s, &iov, flags, ty),
        Err(e) => R::Err(e),
    }
}

/// The record type a kTLS `sendmsg`'s control data asks for (tls_process_cmsg's rules).
#[allow(clippy::unnecessary_cast)] // the lengths' types differ between C libraries
fn record_type(msg: &libc::msghdr, flags: i32) -> Result<u8, i32> {
    if msg.msg_control.is_null() {
        return Err(libc::EFAULT);
    }
    let hdr = core::mem::size_of::<libc::cmsghdr>();
    let end = msg.msg_control as usize + msg.msg_controllen as usize;
    let mut ty = Err(libc::EINVAL);
    // SAFETY: the application's msghdr describes `msg_controllen` readable bytes at
    // `msg_control`; CMSG_FIRSTHDR only reads its fields.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !c.is_null() {
        // SAFETY: CMSG_FIRSTHDR/CMSG_NXTHDR return a header that lies within the control
        // buffer (or null); the application's buffer holds it.
        let h = unsafe { &*c };
        if (h.cmsg_len as usize) < hdr || h.cmsg_len as usize > end - c as usize {
            return Err(libc::EINVAL);
        }
        if h.cmsg_level == SOL_TLS {
            if h.cmsg_type != TLS_SET_RECORD_TYPE {
                return Err(libc::EINVAL);
            }
            // SAFETY: CMSG_LEN is arithmetic.
            if (h.cmsg_len as usize) < unsafe { libc::CMSG_LEN(1) } as usize {
                return Err(libc::EINVAL);
            }
            if flags & libc::MSG_MORE != 0 {
                return Err(libc::EINVAL);
            }
            // SAFETY: the header's length covers one data byte (checked above).
            ty = Ok(unsafe { *libc::CMSG_DATA(c) });
        }
        // SAFETY: as for CMSG_FIRSTHDR; `c` is a header of this buffer.
        c = unsafe { libc::CMSG_NXTHDR(msg, c) };
    }
    ty
}

/// The bytes of one `sendmsg` with `TLS_SET_RECORD_TYPE` `ty` on a kTLS socket: written and
/// marked (`OP_TX_RECTYPE`) so that the agent seals exactly them as record(s) of that type. The
/// mark's count goes up before the bytes are published (the handshake of `OP_TX_URG`), and a
/// message up to 2^14 bytes goes in one piece (an alert must not be split across records).
fn send_record(s: &S, iov: &Iov, flags: i32, ty: u8) -> R {
    let total = match iov.total() {
        Ok(t) => t,
        Err(e) => return R::Err(e),
    };
    if flags & !KTLS_SEND_FLAGS != 0 {
        return R::Err(libc::EOPNOTSUPP);
    }
    if ty == 0 {
        // Content type 0 reads as padding in TLS 1.3; the channel does not carry it.
        return R::Err(libc::EINVAL);
    }
    let whole = total.min(TLS_MAX_PLAINTEXT);
    send_with_min(s, total, flags, whole, |tx, tail, sent, n| {
        iov.copy_into(tx, tail, sent, n);
        let to = tail.wrapping_add(n as u32);
        let posted = &s.ctl.host.0.tx_rec_posted;
        posted.store(
            posted.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Release,
        );
        tx.publish_tail(to);
        s.c.post(s.slot, Request::TxRecType { from: tail, to, ty })?;
        Ok((n, false))
    })
}

/// `send(MSG_OOB)`: the bytes as usual, the last one of each piece written marked urgent (Linux
/// moves its urgent pointer to the end of what it queued at each push). The mark's count goes up
/// before the byte is published, so the agent never sends it as an ordinary byte (urgent.rs).
fn send_urgent(s: &S, iov: &Iov, total: usize, flags: i32) -> R {
    static TOLD: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    if !crate::urgent::supported(s) {
        if !TOLD.swap(true, Ordering::Relaxed) {
            log!(
                util::WARN,
                "send(MSG_OOB): the agent's engine does not carry urgent data (EOPNOTSUPP)"
            );
        }
        return R::Err(libc::EOPNOTSUPP);
    }
    send_with(s, total, flags, |tx, tail, sent, n| {
        iov.copy_into(tx, tail, sent, n);
        let at = tail.wrapping_add(n as u32);
        let posted = &s.ctl.host.0.tx_urg_posted;
        posted.store(
            posted.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Release,
        );
        tx.publish_tail(at);
        s.c.post(s.slot, Request::TxUrgent { at })?;
        Ok((n, false))
    })
}

/// The rules of `send` for `total` bytes (blocking, `EAGAIN`, `SO_SNDTIMEO`, signals, errors,
/// `SIGPIPE` unless `MSG_NOSIGNAL`), with the bytes themselves added by `put`: called under the
/// socket's TX lock with the stream, its tail, the count already sent and the room (at least 1
/// byte of the send budget, [`S::tx_room`]); it publishes and returns how many it added and
/// whether the agent must be told about them (`kick`: the slot's TX-changed mark), or an errno (`Err(0)`: the source ended, the
/// call returns what was sent).
pub(crate) fn send_with(
    s: &S,
    total: usize,
    flags: i32,
    put: impl FnMut(&shm_proto::Stream, u32, usize, usize) -> Result<(usize, bool), i32>,
) -> R {
    send_with_min(s, total, flags, 1, put)
}

/// [`send_with`], calling `put` only with room for at least `min` bytes (or all that is left).
fn send_with_min(
    s: &S,
    total: usize,
    flags: i32,
    min: usize,
    mut put: impl FnMut(&shm_proto::Stream, u32, usize, usize) -> Result<(usize, bool), i32>,
) -> R {
    let nosig = flags & libc::MSG_NOSIGNAL != 0;
    let nb = s.hs.nonblock.load(Ordering::Relaxed) || flags & libc::MSG_DONTWAIT != 0;
    let mut sig0 = (!nb).then(crate::signals::snap);
    let st = &s.ctl.state.0;
    let Some(tx) = s.c.region.tx(s.slot) else {
        return R::Err(libc::EBADF);
    };
    let mut sent = 0usize;
    loop {
        if s.c.is_dead() {
            return if sent > 0 {
                R::Ok(sent as isize)
            } else {
                R::Err(libc::ECONNRESET)
            };
        }
        let fl = st.flags.load(Ordering::Acquire);
        if sent > 0 && crate::readiness::error_pending(s) {
            // What went is returned and the error stays for the next call, as Linux's
            // tcp_sendmsg returns a partial count without taking sk_err.
            return R::Ok(sent as isize);
        }
        if let Some(e) = take_error(s) {
            if e == libc::EPIPE && !nosig {
                raise_sigpipe();
            }
            return R::Err(e);
        }
        if fl & SF_TX_SHUT != 0 || fl & (SF_CONNECTED | SF_CONNECTING) == 0 {
            if sent > 0 {
                return R::Ok(sent as isize);
            }
            if !nosig {
                raise_sigpipe();
            }
            return R::Err(libc::EPIPE);
        }
        if total == 0 {
            return R::Ok(0);
        }
        let mut n = 0usize;
        let mut needs_kick = false;
        if fl & SF_CONNECTED != 0 {
            let g = s.hs.tx.lock();
            let tail = s.ctl.tx_prod.0.tail.load(Ordering::Relaxed);
            let free = match s.tx_room_to_write(&tx, &g) {
                Ok(f) => f as usize,
                Err(_) => return R::Err(libc::EIO),
            };
            let room = (total - sent).min(free);
            if room > 0 && room >= min.min(total - sent) {
                (n, needs_kick) = match put(&tx, tail, sent, room) {
                    Ok((k, nk)) => (k.min(room), nk),
                    Err(_) if sent > 0 => return R::Ok(sent as isize),
                    Err(0) => return R::Ok(0),
                    Err(e) => return R::Err(e),
                };
            }
        }
        if n > 0 {
            if needs_kick {
                if let Err(e) = kick(s) {
                    return R::Err(e);
                }
            }
            sent += n;
        }
        if sent == total {
            return R::Ok(sent as isize);
        }
        if nb {
            return if sent > 0 {
                R::Ok(sent as isize)
            } else {
                R::Err(libc::EAGAIN)
            };
        }
        let need = min.min(total - sent).max(1);
        let ready = || {
            let f = st.flags.load(Ordering::Acquire);
            f & (SF_ERROR | SF_TX_SHUT) != 0
                || (f & SF_CONNECTED != 0
                    && s.tx_room(&tx).map(|n| n as usize >= need).unwrap_or(true))
                || f & (SF_CONNECTED | SF_CONNECTING) == 0
        };
        let timeo = s.hs.sndtimeo.load(Ordering::Relaxed);
        match wait_sock(s, ready, timeo, sig0) {
            Ok(()) => {}
            Err(libc::EINTR) if sent == 0 && restartable(timeo) => {
                sig0 = Some(crate::signals::snap());
            }
            Err(e) => {
                return if sent > 0 {
                    R::Ok(sent as isize)
                } else {
                    R::Err(e)
                }
            }
        }
    }
}

/// Is `fd` a pipe (or FIFO)? Errors as `fstat` gives them (EBADF).
fn is_pipe(fd: i32) -> Result<bool, i32> {
    // SAFETY: fstat into a zeroed stat buffer we own.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(util_errno());
    }
    Ok(st.st_mode & libc::S_IFMT == libc::S_IFIFO)
}

/// Bytes a pipe can take now without blocking (one writer assumed, as the kernel's own splice
/// would see it at the moment it looked).
fn pipe_free(fd: i32) -> Result<usize, i32> {
    // SAFETY: fcntl/ioctl queries on the application's pipe.
    let size = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
    if size < 0 {
        return Err(util_errno());
    }
    let mut used: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut used) } < 0 {
        return Err(util_errno());
    }
    Ok((size as usize).saturating_sub(used.max(0) as usize))
}

/// `splice` with an offloaded socket on one side and a pipe on the other (Linux requires a pipe
/// on one side). The bytes go through a bounce buffer: sockets' bytes live in shared memory,
/// which a kernel pipe cannot reference. Nothing is consumed that was not delivered: socket to
/// pipe peeks, writes what the pipe takes, then consumes exactly that; pipe to socket reads only
/// what the TX stream can take.
pub(crate) fn splice(
    fd_in: i32,
    off_in: *mut i64,
    fd_out: i32,
    off_out: *mut i64,
    len: usize,
    flags: u32,
) -> R {
    let (sin, sout) = (lookup(fd_in), lookup(fd_out));
    if sin.is_none() && sout.is_none() {
        return R::Pass;
    }
    for r in [&sin, &sout] {
        if let Some(Err(e)) = r {
            return R::Err(*e);
        }
    }
    let nonblock_pipe = flags & libc::SPLICE_F_NONBLOCK != 0;
    let mut buf = [0u8; 65536];
    match (sin, sout) {
        (Some(Ok(s)), None) => {
            match is_pipe(fd_out) {
                Err(e) => return R::Err(e),
                Ok(false) => return R::Err(libc::EINVAL),
                Ok(true) => {}
            }
            // Linux: an offset for the pipe is ESPIPE, for the socket (no pread) EINVAL.
            if !off_out.is_null() {
                return R::Err(libc::ESPIPE);
            }
            if !off_in.is_null() {
                return R::Err(libc::EINVAL);
            }
            if len == 0 {
                return R::Ok(0);
            }
            let mut want = len.min(buf.len());
            if nonblock_pipe {
                match pipe_free(fd_out) {
                    Err(e) => return R::Err(e),
                    Ok(0) => return R::Err(libc::EAGAIN),
                    Ok(f) => want = want.min(f),
                }
            }
            let v = [libc::iovec {
                iov_base: buf.as_mut_ptr() as *mut _,
                iov_len: want,
            }];
            let peek_flags = libc::MSG_PEEK | if nonblock_pipe { libc::MSG_DONTWAIT } else { 0 };
            let n = match recv_sock(&s, &Iov { v: &v }, peek_flags) {
                R::Ok(n) => n as usize,
                // kTLS RX: a control record is next (a read without room for its type says
                // EIO); tls_sw_splice_read says EINVAL and leaves it for recvmsg.
                R::Err(libc::EIO)
                    if crate::tlsrx::control(s.ctl.state.0.tls_rx.load(Ordering::Acquire)) =>
                {
                    return R::Err(libc::EINVAL)
                }
                other => return other,
            };
            if n == 0 {
                return R::Ok(0);
            }
            // SAFETY: writing our own buffer's first n bytes to the application's pipe.
            let w = unsafe { crate::real::write(fd_out, buf.as_ptr() as *const _, n) };
            if w <= 0 {
                return R::Err(if w < 0 { util_errno() } else { libc::EIO });
            }
            let w = w as usize;
            // Consume exactly what the pipe took.
            let v = [libc::iovec {
                iov_base: buf.as_mut_ptr() as *mut _,
                iov_len: w,
            }];
            match recv_sock(&s, &Iov { v: &v }, libc::MSG_WAITALL) {
                R::Ok(_) => R::Ok(w as isize),
                other => other,
            }
        }
        (None, Some(Ok(s))) => {
            match is_pipe(fd_in) {
                Err(e) => return R::Err(e),
                Ok(false) => return R::Err(libc::EINVAL),
                Ok(true) => {}
            }
            if !off_in.is_null() {
                return R::Err(libc::ESPIPE);
            }
            if !off_out.is_null() {
                return R::Err(libc::EINVAL);
            }
            if len == 0 {
                return R::Ok(0);
            }
            let Some(tx) = s.c.region.tx(s.slot) else {
                return R::Err(libc::EBADF);
            };
            let mut want = len.min(buf.len());
            if s.hs.nonblock.load(Ordering::Relaxed) {
                let free = s.tx_room(&tx).unwrap_or(0) as usize;
                if free == 0 {
                    return R::Err(libc::EAGAIN);
                }
                want = want.min(free);
            }
            if nonblock_pipe {
                let mut avail: libc::c_int = 0;
                // SAFETY: FIONREAD writes one int.
                if unsafe { libc::ioctl(fd_in, libc::FIONREAD, &mut avail) } < 0 {
                    return R::Err(util_errno());
                }
                if avail <= 0 {
                    // Empty pipe: end of data when no writer is left (POLLHUP), else EAGAIN.
                    let mut p = libc::pollfd {
                        fd: fd_in,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one pollfd of ours, timeout 0.
                    let r = unsafe { crate::real::poll(&mut p, 1, 0) };
                    return if r > 0 && p.revents & libc::POLLHUP != 0 {
                        R::Ok(0)
                    } else {
                        R::Err(libc::EAGAIN)
                    };
                }
                want = want.min(avail as usize);
            }
            // SAFETY: reading into our own buffer.
            let r = unsafe { crate::real::read(fd_in, buf.as_mut_ptr() as *mut _, want) };
            if r <= 0 {
                return if r == 0 {
                    R::Ok(0)
                } else {
                    R::Err(util_errno())
                };
            }
            let r = r as usize;
            let v = [libc::iovec {
                iov_base: buf.as_mut_ptr() as *mut _,
                iov_len: r,
            }];
            match send_sock(&s, &Iov { v: &v }, libc::MSG_NOSIGNAL) {
                R::Ok(w) => R::Ok(w),
                R::Err(e) => {
                    if e == libc::EPIPE {
                        raise_sigpipe();
                    }
                    R::Err(e)
                }
                R::Pass => R::Err(libc::EBADF),
            }
        }
        // Socket to socket (or to an epoll fd): Linux wants a pipe on one side.
        _ => R::Err(libc::EINVAL),
    }
}

fn util_errno() -> i32 {
    // SAFETY: errno location of this thread.
    unsafe { *libc::__errno_location() }
}

// ---------------------------------------------------------------- options and control

fn timeval_ns(v: *const libc::c_void, len: libc::socklen_t) -> Result<u64, i32> {
    if (len as usize) < core::mem::size_of::<libc::timeval>() {
        return Err(libc::EINVAL);
    }
    // SAFETY: len covers a timeval.
    let tv = unsafe { core::ptr::read_unaligned(v as *const libc::timeval) };
    if tv.tv_usec < 0 || tv.tv_usec >= 1_000_000 {
        return Err(libc::EDOM);
    }
    if tv.tv_sec < 0 {
        return Ok(0);
    }
    Ok((tv.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(tv.tv_usec as u64 * 1000))
}

pub(crate) fn setsockopt(
    fd: i32,
    level: i32,
    name: i32,
    val: *const libc::c_void,
    len: libc::socklen_t,
) -> R {
    let s = try_sock!(fd);
    if (len as i32) < 0 {
        return R::Err(libc::EINVAL);
    }
    if val.is_null() && len > 0 {
        return R::Err(libc::EFAULT);
    }
    if level == shm_proto::record::SOL_SNSTACK {
        // The payload API's level (message framing) is the agent's alone: a drop-in socket is
        // a byte stream, and to the application this level does not exist, as in Linux.
        return R::Err(libc::ENOPROTOOPT);
    }
    if level == libc::SOL_SOCKET && name == libc::SO_OOBINLINE {
        // The application's choice lives here; the agent's sockets keep urgent data out of band
        // (urgent.rs).
        if (len as usize) < core::mem::size_of::<i32>() {
            return R::Err(libc::EINVAL);
        }
        // SAFETY: val has len >= 4 readable bytes (checked above; application's contract).
        let v = unsafe { core::slice::from_raw_parts(val as *const u8, len as usize) };
        let on = v[..4] != [0; 4];
        crate::urgent::set_inline(&s, on);
        record_opt(&s, level, name, v);
        return R::Ok(0);
    }
    if level == libc::SOL_SOCKET && (name == libc::SO_RCVTIMEO || name == libc::SO_SNDTIMEO) {
        return match timeval_ns(val, len) {
            Ok(ns) => {
                let t = if name == libc::SO_RCVTIMEO {
                    &s.hs.rcvtimeo
                } else {
                    &s.hs.sndtimeo
                };
                t.store(ns, Ordering::Relaxed);
                R::Ok(0)
            }
            Err(e) => R::Err(e),
        };
    }
    if len as usize > OPT_SIZE {
        log!(
            util::WARN,
            "setsockopt(level {level}, name {name}): values over {OPT_SIZE} bytes are not supported"
        );
        return R::Err(libc::EINVAL);
    }
    let v: &[u8] = if len > 0 {
        // SAFETY: val has len readable bytes (application's contract).
        unsafe { core::slice::from_raw_parts(val as *const u8, len as usize) }
    } else {
        &[]
    };
    let len = len as usize;
    let r = if len > MAX_OPTVAL {
        let req = |cell| Request::SetSockOpt {
            level,
            name,
            len,
            val: OptVal::Cell(cell),
        };
        res(s.c.call_opt(s.slot, req, v, &mut []))
    } else {
        let val = OptVal::inline(v);
        res(call(
            &s,
            Request::SetSockOpt {
                level,
                name,
                len,
                val,
            },
        ))
    };
    if matches!(r, R::Ok(_)) {
        if level == SOL_TLS && name == TLS_TX {
            s.hs.ktls_tx.store(true, Ordering::Relaxed);
        }
        if level == SOL_TLS && name == TLS_RX {
            s.hs.ktls_rx.store(true, Ordering::Relaxed);
        }
        record_opt(&s, level, name, v);
    }
    r
}

/// Linux's `SOL_TLS` level and the names the library looks at (include/uapi/linux/tls.h).
const SOL_TLS: i32 = 282;
const TLS_TX: i32 = 1;
const TLS_RX: i32 = 2;
const TLS_SET_RECORD_TYPE: i32 = 1;
const TCP_ULP: i32 = 31;
/// Largest TLS record plaintext: a control message up to this size goes in one piece.
const TLS_MAX_PLAINTEXT: usize = 1 << 14;

/// A socket that a rule may still move to the kernel keeps what it was set to (tokernel.rs);
/// one that is connected or listening stays where it is.
fn record_opt(s: &S, level: i32, name: i32, v: &[u8]) {
    // kTLS keys never leave the call (and need a connected socket anyway).
    if level == SOL_TLS || (level == libc::IPPROTO_TCP && name == TCP_ULP) {
        return;
    }
    if crate::rules::moves_sockets()
        && s.ctl.state.0.flags.load(Ordering::Acquire)
            & (SF_CONNECTED | SF_CONNECTING | SF_LISTENING)
            == 0
    {
        s.hs.opts.record(level, name, v);
    }
}

fn put_int(val: *mut libc::c_void, len: *mut libc::socklen_t, v: i32) -> R {
    // SAFETY: len non-null (checked by caller); val has *len writable bytes.
    unsafe {
        let cap = (*len as usize).min(4);
        core::ptr::copy_nonoverlapping(&v as *const i32 as *const u8, val as *mut u8, cap);
        *len = cap as libc::socklen_t;
    }
    R::Ok(0)
}

pub(crate) fn getsockopt(
    fd: i32,
    level: i32,
    name: i32,
    val: *mut libc::c_void,
    len: *mut libc::socklen_t,
) -> R {
    let s = try_sock!(fd);
    if len.is_null() {
        return R::Err(libc::EFAULT);
    }
    if level == shm_proto::record::SOL_SNSTACK {
        return R::Err(libc::ENOPROTOOPT);
    }
    // SAFETY: non-null application pointer.
    let cap = unsafe { *len } as i32;
    if cap < 0 {
        return R::Err(libc::EINVAL);
    }
    if val.is_null() && cap > 0 {
        return R::Err(libc::EFAULT);
    }
    if level == libc::SOL_SOCKET {
        match name {
            libc::SO_ERROR => return put_int(val, len, take_error(&s).unwrap_or(0)),
            libc::SO_TYPE => return put_int(val, len, libc::SOCK_STREAM),
            libc::SO_DOMAIN => return put_int(val, len, s.hs.domain.load(Ordering::Relaxed)),
            libc::SO_PROTOCOL => return put_int(val, len, libc::IPPROTO_TCP),
            libc::SO_OOBINLINE => {
                let on = s.hs.oob_inline.load(Ordering::Relaxed);
                return put_int(val, len, i32::from(on));
            }
            libc::SO_ACCEPTCONN => {
                let l = s.ctl.state.0.flags.load(Ordering::Acquire) & SF_LISTENING != 0;
                return put_int(val, len, l as i32);
            }
            libc::SO_RCVTIMEO | libc::SO_SNDTIMEO => {
                let ns = if name == libc::SO_RCVTIMEO {
                    &s.hs.rcvtimeo
                } else {
                    &s.hs.sndtimeo
                }
                .load(Ordering::Relaxed);
                let tv = libc::timeval {
                    tv_sec: (ns / 1_000_000_000) as _,
                    tv_usec: ((ns % 1_000_000_000) / 1000) as _,
                };
                let n = (cap as usize).min(core::mem::size_of::<libc::timeval>());
                // SAFETY: val has cap writable bytes; len non-null.
                unsafe {
                    core::ptr::copy_nonoverlapping(&tv as *const _ as *const u8, val as *mut u8, n);
                    *len = n as libc::socklen_t;
                }
                return R::Ok(0);
            }
            _ => {}
        }
    }
    if cap as usize > MAX_OPTVAL {
        let want = (cap as usize).min(OPT_SIZE);
        let req = |cell| Request::GetSockOpt {
            level,
            name,
            len: want,
            cell: Some(cell),
        };
        // SAFETY: val has cap >= want writable bytes (application's contract).
        let out = unsafe { core::slice::from_raw_parts_mut(val as *mut u8, want) };
        return match s.c.call_opt(s.slot, req, &[], out) {
            Ok(e) if e.result >= 0 => {
                // SAFETY: len non-null.
                unsafe { *len = (e.result as usize).min(want) as libc::socklen_t };
                R::Ok(0)
            }
            Ok(e) => R::Err((-e.result) as i32),
            Err(e) => R::Err(e),
        };
    }
    let req = Request::GetSockOpt {
        level,
        name,
        len: (cap as usize).min(MAX_OPTVAL),
        cell: None,
    };
    match call(&s, req) {
        Ok(e) if e.result >= 0 => {
            let v = e.value();
            let n = v.len().min(cap as usize);
            // SAFETY: val has cap writable bytes; len non-null.
            unsafe {
                core::ptr::copy_nonoverlapping(v.as_ptr(), val as *mut u8, n);
                *len = n as libc::socklen_t;
            }
            R::Ok(0)
        }
        Ok(e) => R::Err((-e.result) as i32),
        Err(e) => R::Err(e),
    }
}

/// fcntl on an offloaded fd: O_NONBLOCK lives with us (the agent's socket is always non-blocking);
/// everything else acts on the shadow fd. F_DUPFD* are the fd model's (`fdmodel::dupfd`).
pub(crate) fn fcntl(fd: i32, cmd_: i32, arg: libc::c_ulong) -> R {
    let s = try_sock!(fd);
    match cmd_ {
        libc::F_GETFL => {
            // SAFETY: fcntl on the shadow fd.
            let r = unsafe { crate::real::fcntl(fd, libc::F_GETFL, 0) };
            if r < 0 {
                return R::Err(util_errno());
            }
            let nb = if s.hs.nonblock.load(Ordering::Relaxed) {
                libc::O_NONBLOCK
            } else {
                0
            };
            R::Ok(((r & !libc::O_NONBLOCK) | nb) as isize)
        }
        libc::F_SETFL => {
            // SAFETY: fcntl on the shadow fd keeps its flags in step.
            let r = unsafe { crate::real::fcntl(fd, libc::F_SETFL, arg) };
            if r < 0 {
                return R::Err(util_errno());
            }
            s.hs.nonblock
                .store(arg as i32 & libc::O_NONBLOCK != 0, Ordering::Relaxed);
            R::Ok(r as isize)
        }
        // The owner for SIGURG is the socket's (urgent.rs): the shadow's file is shared.
        libc::F_SETOWN => {
            let who = arg as i32;
            let o = match who {
                0 => None,
                i32::MIN => return R::Err(libc::EINVAL),
                w if w > 0 => Some(Owner::Pid(w)),
                w => Some(Owner::Pgrp(-w)),
            };
            set_owner(&s, o)
        }
        libc::F_GETOWN => R::Ok(match crate::urgent::owner(&s) {
            None => 0,
            Some(Owner::Pid(p) | Owner::Tid(p)) => p as isize,
            Some(Owner::Pgrp(g)) => -(g as isize),
        }),
        F_SETOWN_EX => {
            if arg == 0 {
                return R::Err(libc::EFAULT);
            }
            // SAFETY: F_SETOWN_EX takes a struct f_owner_ex* (two ints).
            let [kind, id] = unsafe { core::ptr::read_unaligned(arg as *const [i32; 2]) };
            let o = match (kind, id) {
                (0..=2, 0) => None,
                (_, i32::MIN..=-1) => return R::Err(libc::EINVAL),
                (F_OWNER_TID, t) => Some(Owner::Tid(t)),
                (F_OWNER_PID, p) => Some(Owner::Pid(p)),
                (F_OWNER_PGRP, g) => Some(Owner::Pgrp(g)),
                _ => return R::Err(libc::EINVAL),
            };
            set_owner(&s, o)
        }
        F_GETOWN_EX => {
            if arg == 0 {
                return R::Err(libc::EFAULT);
            }
            let v = match crate::urgent::owner(&s) {
                None => [F_OWNER_PID, 0],
                Some(Owner::Tid(t)) => [F_OWNER_TID, t],
                Some(Owner::Pid(p)) => [F_OWNER_PID, p],
                Some(Owner::Pgrp(g)) => [F_OWNER_PGRP, g],
            };
            // SAFETY: F_GETOWN_EX writes a struct f_owner_ex (two ints).
            unsafe { core::ptr::write_unaligned(arg as *mut [i32; 2], v) };
            R::Ok(0)
        }
        _ => R::Pass,
    }
}

// Not in the libc crate (asm-generic/fcntl.h).
const F_SETOWN_EX: i32 = 15;
const F_GETOWN_EX: i32 = 16;
const F_OWNER_TID: i32 = 0;
const F_OWNER_PID: i32 = 1;
const F_OWNER_PGRP: i32 = 2;

/// Records the `SIGURG` owner after Linux's check that it exists (`ESRCH`).
fn set_owner(s: &S, o: Option<Owner>) -> R {
    let probe = match o {
        None => None,
        Some(Owner::Pid(p) | Owner::Tid(p)) => Some(p),
        Some(Owner::Pgrp(g)) => Some(-g),
    };
    if let Some(p) = probe {
        // SAFETY: signal 0 only checks that the target exists.
        if unsafe { libc::kill(p, 0) } < 0 && util_errno() == libc::ESRCH {
            return R::Err(libc::ESRCH);
        }
    }
    crate::urgent::set_owner(s, o);
    R::Ok(0)
}

/// `SIOCATMARK` (asm-generic/sockios.h; not in the libc crate).
const SIOCATMARK: libc::c_ulong = 0x8905;

pub(crate) fn ioctl(fd: i32, req: libc::c_ulong, arg: *mut libc::c_void) -> R {
    let s = try_sock!(fd);
    match req {
        libc::FIONBIO => {
            if arg.is_null() {
                return R::Err(libc::EFAULT);
            }
            // SAFETY: FIONBIO takes an int*.
            let on = unsafe { *(arg as *const i32) } != 0;
            // SAFETY: same request on the shadow fd keeps its flags in step.
            unsafe { crate::real::ioctl(fd, req, arg) };
            s.hs.nonblock.store(on, Ordering::Relaxed);
            R::Ok(0)
        }
        SIOCATMARK => {
            if arg.is_null() {
                return R::Err(libc::EFAULT);
            }
            // SAFETY: SIOCATMARK takes an int*.
            unsafe { *(arg as *mut i32) = i32::from(crate::urgent::at_mark(&s)) };
            R::Ok(0)
        }
        libc::FIONREAD | libc::TIOCOUTQ | libc::SIOCOUTQNSD => {
            if arg.is_null() {
                return R::Err(libc::EFAULT);
            }
            let fl = s.ctl.state.0.flags.load(Ordering::Acquire);
            if fl & SF_LISTENING != 0 {
                return R::Err(libc::EINVAL);
            }
            let n = if req == libc::FIONREAD {
                s.c.region.rx(s.slot).and_then(|rx| {
                    rx.readable(s.ctl.rx_head.0.head.load(Ordering::Relaxed))
                        .ok()
                })
            } else {
                s.c.region.tx(s.slot).and_then(|tx| {
                    tx.used(
                        s.ctl.tx_head.0.head.load(Ordering::Acquire),
                        s.ctl.tx_prod.0.tail.load(Ordering::Relaxed),
                    )
                    .ok()
                })
            };
            // SAFETY: these requests take an int*.
            unsafe { *(arg as *mut i32) = n.unwrap_or(0) as i32 };
            R::Ok(0)
        }
        _ => R::Pass,
    }
}

// ---------------------------------------------------------------- message vectors

/// The application's iovec array, checked as the kernel checks it.
pub(crate) fn iov_slice<'a>(v: *const iovec, n: c_int) -> Result<&'a [iovec], i32> {
    if !(0..=libc::UIO_MAXIOV).contains(&n) {
        return Err(libc::EINVAL);
    }
    if n == 0 {
        return Ok(&[]);
    }
    if v.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: the application passes n iovecs.
    Ok(unsafe { core::slice::from_raw_parts(v, n as usize) })
}

/// Runs `one` on each of the `n` messages at `v` in turn (at most `UIO_MAXIOV`), as Linux's
/// recvmmsg/sendmmsg do on a stream socket: an error after the first message ends the call with
/// the count so far; `one` returns `Ok(true)` to go on, `Ok(false)` to stop after this message.
fn each_mmsg(
    v: *mut libc::mmsghdr,
    n: libc::c_uint,
    mut one: impl FnMut(&mut libc::mmsghdr, &[libc::iovec]) -> Result<bool, R>,
) -> R {
    if v.is_null() {
        return R::Err(libc::EFAULT);
    }
    let mut done = 0u32;
    while done < n.min(libc::UIO_MAXIOV as c_uint) {
        // SAFETY: the application passes n mmsghdrs.
        let mm = unsafe { &mut *v.add(done as usize) };
        let step = match iov_slice(mm.msg_hdr.msg_iov, mm.msg_hdr.msg_iovlen as c_int) {
            Ok(iov) => one(mm, iov),
            Err(e) => Err(R::Err(e)),
        };
        match step {
            Ok(go_on) => {
                done += 1;
                if !go_on {
                    break;
                }
            }
            Err(R::Err(_)) if done > 0 => break,
            Err(r) => return r,
        }
    }
    R::Ok(done as isize)
}

/// `recvmsg`: on a socket with kTLS RX, the record type as a `SOL_TLS`/`TLS_GET_RECORD_TYPE`
/// control message when the caller has room for it (`MSG_CTRUNC` when not), one type per call
/// (tlsrx.rs); elsewhere no control data (a TCP socket has none to give here).
pub(crate) fn recvmsg(fd: i32, msg: &mut libc::msghdr, flags: i32) -> R {
    let s = try_sock!(fd);
    let v = match iov_slice(msg.msg_iov, msg.msg_iovlen as c_int) {
        Ok(v) => v,
        Err(e) => return R::Err(e),
    };
    #[allow(clippy::unnecessary_cast)] // the length's type differs between C libraries
    let controllen = msg.msg_controllen as usize;
    let mut tls = TlsRead {
        room: flags & libc::MSG_OOB == 0 && crate::tlsrx::room(msg.msg_control, controllen),
        ty: None,
    };
    let r = recv_typed(&s, &Iov { v }, flags, &mut tls);
    if let R::Ok(n) = r {
        msg.msg_controllen = 0;
        msg.msg_flags = recv_msg_flags(flags, n, v);
        msg.msg_namelen = 0;
        // Data has its type told where this process set `TLS_RX`; a control record anywhere
        // (only a kTLS RX socket has one: a process that did not set the keys reads it too).
        let typed =
            |ty| s.hs.ktls_rx.load(Ordering::Relaxed) || ty != crate::tlsrx::APPLICATION_DATA;
        match tls.ty.filter(|&ty| typed(ty)) {
            Some(ty) if tls.room => {
                // SAFETY: `room` checked the buffer; the application's msghdr says it holds
                // `controllen` writable bytes.
                let used = unsafe { crate::tlsrx::put_type(msg.msg_control, controllen, ty) };
                msg.msg_controllen = used as _;
            }
            // put_cmsg without room (data only gets here): truncated.
            Some(_) => msg.msg_flags |= libc::MSG_CTRUNC,
            None => {}
        }
    }
    r
}

/// `msg_flags` of a `recvmsg` that returned `n` into `v` with `flags`: urgent data is flagged
/// `MSG_OOB` (and `MSG_TRUNC` when the buffer had no room for the byte).
pub(crate) fn recv_msg_flags(flags: i32, n: isize, v: &[iovec]) -> i32 {
    if flags & libc::MSG_OOB == 0 {
        return 0;
    }
    let room = v.iter().any(|x| x.iov_len > 0);
    if n == 0 && !room {
        libc::MSG_OOB | libc::MSG_TRUNC
    } else {
        libc::MSG_OOB
    }
}

/// recvmmsg on a stream socket: fills messages in turn; later ones never block (as Linux).
/// Each message is a [`recvmsg`], as in Linux's `do_recvmmsg` (on a kTLS RX socket: one record
/// type per message, with its `TLS_GET_RECORD_TYPE` control message).
pub(crate) fn recvmmsg(fd: i32, v: *mut libc::mmsghdr, n: libc::c_uint, f: i32) -> R {
    let mut flags = f & !libc::MSG_WAITFORONE;
    each_mmsg(v, n, |mm, _| match recvmsg(fd, &mut mm.msg_hdr, flags) {
        R::Ok(k) => {
            mm.msg_len = k as c_uint;
            if f & libc::MSG_WAITFORONE != 0 {
                flags |= libc::MSG_DONTWAIT;
            }
            Ok(k != 0)
        }
        r => Err(r),
    })
}

/// sendmmsg on a stream socket: sends messages in turn until one fails.
pub(crate) fn sendmmsg(fd: i32, v: *mut libc::mmsghdr, n: libc::c_uint, f: i32) -> R {
    each_mmsg(v, n, |mm, iov| match send(fd, &Iov { v: iov }, f) {
        R::Ok(k) => {
            mm.msg_len = k as c_uint;
            Ok(true)
        }
        r => Err(r),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_round_trip_v4_and_v6() {
        let mut sa: libc::sockaddr_in = // SAFETY: all-zero is valid.
            unsafe { core::mem::zeroed() };
        sa.sin_family = libc::AF_INET as u16;
        sa.sin_port = 8080u16.to_be();
        sa.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let len = core::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: valid sockaddr_in.
        let w = unsafe { read_addr(&sa as *const _ as *const libc::sockaddr, len) }.unwrap();
        assert_eq!(w.port, 8080u16.to_be());
        assert_eq!(&w.addr[..4], &[127, 0, 0, 1]);
        let mut out = [0u8; 64];
        let mut l: libc::socklen_t = 64;
        // SAFETY: 64-byte buffer.
        unsafe { write_addr(&w, out.as_mut_ptr() as *mut _, &mut l) }.unwrap();
        assert_eq!(l, 16);
        // Truncation: copy what fits, report the full length.
        let mut small = [0u8; 4];
        let mut l2: libc::socklen_t = 4;
        // SAFETY: 4-byte buffer and its length.
        unsafe { write_addr(&w, small.as_mut_ptr() as *mut _, &mut l2) }.unwrap();
        assert_eq!(l2, 16);
        assert_eq!(&small[..], &out[..4]);

        let mut s6: libc::sockaddr_in6 = // SAFETY: all-zero is valid.
            unsafe { core::mem::zeroed() };
        s6.sin6_family = libc::AF_INET6 as u16;
        s6.sin6_port = 443u16.to_be();
        s6.sin6_addr.s6_addr[15] = 1;
        s6.sin6_scope_id = 3;
        // SAFETY: valid sockaddr_in6.
        let w6 = unsafe { read_addr(&s6 as *const _ as *const libc::sockaddr, 28) }.unwrap();
        assert_eq!(w6.scope_id, 3);
        // SAFETY: 20 readable bytes (too short for an IPv6 address).
        let short = unsafe { read_addr(&s6 as *const _ as *const libc::sockaddr, 20) };
        assert_eq!(short, Err(libc::EINVAL));
        // SAFETY: a null pointer is rejected before any read.
        let null = unsafe { read_addr(core::ptr::null(), 16) };
        assert_eq!(null, Err(libc::EFAULT));
    }

    #[test]
    fn iov_walk_spans_pieces() {
        let mut a = [0u8; 3];
        let mut b = [0u8; 5];
        let v = [
            libc::iovec {
                iov_base: a.as_mut_ptr() as *mut _,
                iov_len: 3,
            },
            libc::iovec {
                iov_base: b.as_mut_ptr() as *mut _,
                iov_len: 5,
            },
        ];
        let iov = Iov { v: &v };
        assert_eq!(iov.total(), Ok(8));
        let mut seen = Vec::new();
        iov.walk(2, 4, |_, n| seen.push(n));
        assert_eq!(seen, vec![1, 3]);
    }
}
