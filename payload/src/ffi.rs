//! The C API (`include/snstack_payload.h`): thin `extern "C"` wrappers over [`Group`]. Every
//! call returns 0 (or a count) or `-errno`; no panic crosses the boundary (`-EIO`). A group
//! belongs to one thread at a time; message pointers are valid until the next `snp_poll` on the
//! group or `snp_detach`.

use std::ffi::{c_char, c_int, CStr};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::Duration;

use shm_proto::record::FramingSpec;

use crate::{CloseReason, Conn, Event, Framing, Group};

/// Opaque to C.
pub struct SnpGroup(Group);

/// `snp_framing`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SnpFraming {
    pub kind: u8,
    pub flags: u8,
    pub width: u8,
    pub reserved: u8,
}

/// `snp_event`.
#[repr(C)]
pub struct SnpEvent {
    pub kind: u32,
    pub flags: u32,
    pub conn: u64,
    pub data: *const u8,
    pub len: usize,
    pub service: u32,
    pub reason: u32,
    pub error: i32,
    pub _pad: u32,
    pub reason_name: *const c_char,
    pub peer: libc::sockaddr_in6,
}

/// `snp_reply`.
#[repr(C)]
pub struct SnpReply {
    pub ptr: [*mut u8; 2],
    pub len: [usize; 2],
}

// The header asserts the same size.
const _: () = assert!(std::mem::size_of::<SnpEvent>() == 88);

pub const SNP_OPENED: u32 = 1;
pub const SNP_CONNECTED: u32 = 2;
pub const SNP_MESSAGE: u32 = 3;
pub const SNP_WRITABLE: u32 = 4;
pub const SNP_CLOSED: u32 = 5;
pub const SNP_PART: u32 = 1;
pub const SNP_PEER_CLOSED: u32 = 0;
pub const SNP_RESET: u32 = 1;
pub const SNP_ERROR: u32 = 2;
pub const SNP_MALFORMED: u32 = 3;

fn errno_of(e: &io::Error) -> c_int {
    match e.raw_os_error() {
        Some(n) => n,
        None if e.kind() == io::ErrorKind::WouldBlock => libc::EAGAIN,
        None if e.kind() == io::ErrorKind::InvalidInput => libc::EINVAL,
        None => libc::EIO,
    }
}

/// Runs `f`, mapping an error to `-errno` and a panic to `-EIO`.
fn guard(f: impl FnOnce() -> io::Result<c_int>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => -errno_of(&e),
        Err(_) => -libc::EIO,
    }
}

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

/// # Safety
/// `g` is null or a group from `snp_attach`, not detached, used by one thread at a time.
unsafe fn group<'a>(g: *mut SnpGroup) -> io::Result<&'a mut Group> {
    // SAFETY: the caller's contract.
    unsafe { g.as_mut() }.map(|g| &mut g.0).ok_or_else(einval)
}

/// # Safety
/// `s` is null or a NUL-terminated string.
unsafe fn text<'a>(s: *const c_char) -> io::Result<&'a str> {
    if s.is_null() {
        return Err(einval());
    }
    // SAFETY: the caller's contract.
    unsafe { CStr::from_ptr(s) }.to_str().map_err(|_| einval())
}

/// # Safety
/// `f` is null or points to an `snp_framing`.
unsafe fn framing(f: *const SnpFraming) -> io::Result<Framing> {
    // SAFETY: the caller's contract.
    let f = unsafe { f.as_ref() }.ok_or_else(einval)?;
    if f.reserved != 0 {
        return Err(einval());
    }
    let spec = FramingSpec {
        kind: f.kind,
        flags: f.flags,
        width: f.width,
        max_message: 0,
    };
    Framing::from_spec(&spec).ok_or_else(einval)
}

fn addr(s: &str) -> io::Result<SocketAddr> {
    s.parse().map_err(|_| einval())
}

/// Attaches a group to the agent at `agent` (NULL: `$SNSTACK_AGENT`, else
/// `/run/snstack/agent.sock`).
///
/// # Safety
/// `agent` is NULL or a NUL-terminated path; `out` points to writable storage.
#[no_mangle]
pub unsafe extern "C" fn snp_attach(agent: *const c_char, out: *mut *mut SnpGroup) -> c_int {
    guard(|| {
        if out.is_null() {
            return Err(einval());
        }
        let path = if agent.is_null() {
            None
        } else {
            // SAFETY: the caller's contract.
            Some(Path::new(unsafe { text(agent) }?))
        };
        let g = Group::attach(path)?;
        // SAFETY: `out` is writable (the caller's contract, checked non-null).
        unsafe { *out = Box::into_raw(Box::new(SnpGroup(g))) };
        Ok(0)
    })
}

/// Detaches: kicks what was sent; the agent then drains and closes the group's connections.
///
/// # Safety
/// `g` is NULL or a group from `snp_attach`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn snp_detach(g: *mut SnpGroup) {
    if g.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the caller's contract: the group came from `Box::into_raw` in `snp_attach`.
        drop(unsafe { Box::from_raw(g) });
    }));
}

/// Declares a service on `addr` ("ip:port", "[v6]:port").
///
/// # Safety
/// Pointers as the header documents; `service_out` may be NULL.
#[no_mangle]
pub unsafe extern "C" fn snp_serve(
    g: *mut SnpGroup,
    addr_s: *const c_char,
    f: *const SnpFraming,
    max_message: u32,
    service_out: *mut u32,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's contract, for each pointer.
        let (g, a, f) = unsafe { (group(g)?, text(addr_s)?, framing(f)?) };
        let s = g.serve(addr(a)?, f, max_message)?;
        if !service_out.is_null() {
            // SAFETY: non-null and writable (the caller's contract).
            unsafe { *service_out = s.0 };
        }
        Ok(0)
    })
}

/// Connects out; `SNP_CONNECTED` or `SNP_CLOSED` follows.
///
/// # Safety
/// Pointers as the header documents; `conn_out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn snp_connect(
    g: *mut SnpGroup,
    addr_s: *const c_char,
    f: *const SnpFraming,
    max_message: u32,
    conn_out: *mut u64,
) -> c_int {
    guard(|| {
        if conn_out.is_null() {
            return Err(einval());
        }
        // SAFETY: the caller's contract, for each pointer.
        let (g, a, f) = unsafe { (group(g)?, text(addr_s)?, framing(f)?) };
        let c = g.connect(addr(a)?, f, max_message)?;
        // SAFETY: non-null and writable (the caller's contract).
        unsafe { *conn_out = c.to_u64() };
        Ok(0)
    })
}

fn peer_of(p: SocketAddr) -> libc::sockaddr_in6 {
    // SAFETY: all-zero is a valid sockaddr_in6 (and sockaddr_in).
    let mut s6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    match p {
        SocketAddr::V4(v4) => {
            let s4 = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: a sockaddr_in (16 bytes) fits in a sockaddr_in6 (28 bytes); both are
            // plain C structs, and C reads it back as a sockaddr_in by its family.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    (&s4 as *const libc::sockaddr_in).cast::<u8>(),
                    (&mut s6 as *mut libc::sockaddr_in6).cast::<u8>(),
                    std::mem::size_of::<libc::sockaddr_in>(),
                )
            };
        }
        SocketAddr::V6(v6) => {
            s6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            s6.sin6_port = v6.port().to_be();
            s6.sin6_flowinfo = v6.flowinfo();
            s6.sin6_addr.s6_addr = v6.ip().octets();
            s6.sin6_scope_id = v6.scope_id();
        }
    }
    s6
}

fn fill(out: &mut SnpEvent, ev: Event<'_>) {
    // SAFETY: all-zero is valid for this plain C struct (null pointers, zero numbers).
    *out = unsafe { std::mem::zeroed() };
    match ev {
        Event::Opened {
            conn,
            peer,
            service,
        } => {
            out.kind = SNP_OPENED;
            out.conn = conn.to_u64();
            out.service = service.0;
            out.peer = peer_of(peer);
        }
        Event::Connected { conn } => {
            out.kind = SNP_CONNECTED;
            out.conn = conn.to_u64();
        }
        Event::Message { conn, data, part } => {
            out.kind = SNP_MESSAGE;
            out.conn = conn.to_u64();
            out.data = data.as_ptr();
            out.len = data.len();
            out.flags = if part { SNP_PART } else { 0 };
        }
        Event::Writable { conn } => {
            out.kind = SNP_WRITABLE;
            out.conn = conn.to_u64();
        }
        Event::Closed { conn, reason } => {
            out.kind = SNP_CLOSED;
            out.conn = conn.to_u64();
            out.error = reason.errno();
            out.reason = match reason {
                CloseReason::PeerClosed => SNP_PEER_CLOSED,
                CloseReason::Reset => SNP_RESET,
                CloseReason::Error(_) => SNP_ERROR,
                CloseReason::Malformed(_) => SNP_MALFORMED,
            };
            out.reason_name = reason_cstr(&reason);
        }
    }
}

/// A static NUL-terminated name for a close reason: the malformed reason's name, or one of
/// "peer_closed", "reset", "error".
fn reason_cstr(r: &CloseReason) -> *const c_char {
    let name = match r {
        CloseReason::PeerClosed => "peer_closed",
        CloseReason::Reset => "reset",
        CloseReason::Error(_) => "error",
        CloseReason::Malformed(n) => n,
    };
    cstr_of(name)
}

/// The NUL-terminated copy of a static name (built once per name).
fn cstr_of(name: &'static str) -> *const c_char {
    use std::collections::HashMap;
    use std::ffi::CString;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashMap<&'static str, CString>>> = OnceLock::new();
    let m = NAMES.get_or_init(Default::default);
    let mut m = m.lock().unwrap_or_else(|p| p.into_inner());
    m.entry(name)
        .or_insert_with(|| CString::new(name).unwrap_or_default())
        .as_ptr()
}

/// Waits for events (see `Group::poll`): fills up to `max` of `ev`, returns how many.
/// `timeout_ms < 0`: no bound.
///
/// # Safety
/// `ev` points to `max` writable `snp_event`s.
#[no_mangle]
pub unsafe extern "C" fn snp_poll(
    g: *mut SnpGroup,
    ev: *mut SnpEvent,
    max: c_int,
    spin_us: c_int,
    timeout_ms: c_int,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's contract.
        let g = unsafe { group(g) }?;
        if ev.is_null() || max <= 0 {
            return Err(einval());
        }
        let spin = Duration::from_micros(spin_us.max(0) as u64);
        let timeout = (timeout_ms >= 0).then(|| Duration::from_millis(timeout_ms as u64));
        let events = g.poll(max as usize, spin, timeout)?;
        // SAFETY: `ev` holds `max` events (the caller's contract); `poll` returned at most
        // `max`.
        let out = unsafe { std::slice::from_raw_parts_mut(ev, max as usize) };
        let mut n = 0;
        for (o, e) in out.iter_mut().zip(events.iter()) {
            fill(o, e);
            n += 1;
        }
        Ok(n)
    })
}

/// Sends `len` bytes whole, or fails with `-EAGAIN` (`SNP_WRITABLE` follows) / `-EMSGSIZE`.
///
/// # Safety
/// `buf` points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn snp_send(
    g: *mut SnpGroup,
    conn: u64,
    buf: *const u8,
    len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's contract.
        let g = unsafe { group(g) }?;
        if buf.is_null() && len != 0 {
            return Err(einval());
        }
        let data = if len == 0 {
            &[][..]
        } else {
            // SAFETY: `buf` holds `len` readable bytes (the caller's contract).
            unsafe { std::slice::from_raw_parts(buf, len) }
        };
        g.send(Conn::from_u64(conn), data).map(|_| 0)
    })
}

/// `snp_send` of the concatenation of `iovcnt` buffers.
///
/// # Safety
/// `iov` points to `iovcnt` iovecs describing readable memory.
#[no_mangle]
pub unsafe extern "C" fn snp_sendv(
    g: *mut SnpGroup,
    conn: u64,
    iov: *const libc::iovec,
    iovcnt: c_int,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's contract.
        let g = unsafe { group(g) }?;
        if iovcnt < 0 || (iov.is_null() && iovcnt != 0) || iovcnt > libc::UIO_MAXIOV {
            return Err(einval());
        }
        let iovs = if iovcnt == 0 {
            &[][..]
        } else {
            // SAFETY: `iov` holds `iovcnt` iovecs (the caller's contract); `IoSlice` is
            // ABI-compatible with `struct iovec` on Unix, and each describes readable memory.
            unsafe { std::slice::from_raw_parts(iov.cast::<IoSlice<'_>>(), iovcnt as usize) }
        };
        g.send_vectored(Conn::from_u64(conn), iovs).map(|_| 0)
    })
}

/// Reserves `len` bytes at the conn's TX tail: `r` gets the (up to two) pieces to fill.
///
/// # Safety
/// `r` points to a writable `snp_reply`.
#[no_mangle]
pub unsafe extern "C" fn snp_reserve(
    g: *mut SnpGroup,
    conn: u64,
    len: usize,
    r: *mut SnpReply,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's contract.
        let (g, r) = unsafe { (group(g)?, r.as_mut().ok_or_else(einval)?) };
        let (a, b) = g.reserve_raw(Conn::from_u64(conn), len)?;
        r.ptr = [a.0, b.0];
        r.len = [a.1, b.1];
        Ok(0)
    })
}

/// Publishes the first `used` bytes of the conn's reservation (0: cancels it).
///
/// # Safety
/// `g` as for every call.
#[no_mangle]
pub unsafe extern "C" fn snp_commit(g: *mut SnpGroup, conn: u64, used: usize) -> c_int {
    guard(|| {
        // SAFETY: the caller's contract.
        let g = unsafe { group(g) }?;
        g.commit_raw(Conn::from_u64(conn), used).map(|_| 0)
    })
}

/// Kicks the conns sent to since the last flush and rings the agent once.
///
/// # Safety
/// `g` as for every call.
#[no_mangle]
pub unsafe extern "C" fn snp_flush(g: *mut SnpGroup) -> c_int {
    guard(|| {
        // SAFETY: the caller's contract.
        unsafe { group(g) }?.flush().map(|_| 0)
    })
}

/// Shuts the write side of `conn` (FIN once its bytes are sent).
///
/// # Safety
/// `g` as for every call.
#[no_mangle]
pub unsafe extern "C" fn snp_shutdown(g: *mut SnpGroup, conn: u64) -> c_int {
    guard(|| {
        // SAFETY: the caller's contract.
        unsafe { group(g) }?
            .shutdown(Conn::from_u64(conn))
            .map(|_| 0)
    })
}

/// Announces what the next request on an HTTP/1.1 client connection is (`SNP_EXPECT_*`), for
/// the framing of its response; before sending it.
///
/// # Safety
/// `g` as for every call.
#[no_mangle]
pub unsafe extern "C" fn snp_expect_response(g: *mut SnpGroup, conn: u64, to: c_int) -> c_int {
    guard(|| {
        let to = match to {
            0 => crate::ResponseTo::Other,
            1 => crate::ResponseTo::Head,
            2 => crate::ResponseTo::Connect,
            _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
        };
        // SAFETY: the caller's contract.
        unsafe { group(g) }?
            .expect_response(Conn::from_u64(conn), to)
            .map(|_| 0)
    })
}

/// Closes `conn` (its bytes still go out). The handle is dead afterwards.
///
/// # Safety
/// `g` as for every call.
#[no_mangle]
pub unsafe extern "C" fn snp_close(g: *mut SnpGroup, conn: u64) -> c_int {
    guard(|| {
        // SAFETY: the caller's contract.
        unsafe { group(g) }?.close(Conn::from_u64(conn)).map(|_| 0)
    })
}

/// Resets `conn` (unsent bytes dropped). The handle is dead afterwards.
///
/// # Safety
/// `g` as for every call.
#[no_mangle]
pub unsafe extern "C" fn snp_abort(g: *mut SnpGroup, conn: u64) -> c_int {
    guard(|| {
        // SAFETY: the caller's contract.
        unsafe { group(g) }?.abort(Conn::from_u64(conn)).map(|_| 0)
    })
}

/// The name of a malformed-input reason code (`SockState::framing_error`: 1 = "truncated",
/// ...), or NULL for an unknown code.
#[no_mangle]
pub extern "C" fn snp_reason_name(code: u32) -> *const c_char {
    catch_unwind(|| match shm_proto::record::reason_name(code) {
        Some(n) => cstr_of(n),
        None => std::ptr::null(),
    })
    .unwrap_or(std::ptr::null())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_c_strings() {
        let p = snp_reason_name(5);
        // SAFETY: a static NUL-terminated name.
        let name = unsafe { CStr::from_ptr(p) };
        assert_eq!(name.to_str(), Ok("bad_request_line"));
        assert_eq!(p, snp_reason_name(5), "the same pointer each time");
        assert!(snp_reason_name(0).is_null());
        assert!(snp_reason_name(1000).is_null());
    }

    #[test]
    fn events_fill_c_structs() {
        let mut e: SnpEvent = {
            // SAFETY: all-zero is valid for the struct.
            unsafe { std::mem::zeroed() }
        };
        let conn = Conn::from_u64(7 | (3 << 32));
        fill(
            &mut e,
            Event::Opened {
                conn,
                peer: "10.0.0.1:258".parse().unwrap(),
                service: crate::Service(2),
            },
        );
        assert_eq!((e.kind, e.conn, e.service), (SNP_OPENED, conn.to_u64(), 2));
        // SAFETY: a sockaddr_in was written at the start of the storage.
        let s4: libc::sockaddr_in = unsafe { std::mem::transmute_copy(&e.peer) };
        assert_eq!(s4.sin_family as i32, libc::AF_INET);
        assert_eq!(u16::from_be(s4.sin_port), 258);
        assert_eq!(s4.sin_addr.s_addr.to_ne_bytes(), [10, 0, 0, 1]);
        fill(
            &mut e,
            Event::Closed {
                conn,
                reason: CloseReason::Malformed("bare_lf"),
            },
        );
        assert_eq!(
            (e.kind, e.reason, e.error),
            (SNP_CLOSED, SNP_MALFORMED, libc::EPROTO)
        );
        // SAFETY: a static NUL-terminated name.
        let name = unsafe { CStr::from_ptr(e.reason_name) };
        assert_eq!(name.to_str(), Ok("bare_lf"));
        fill(
            &mut e,
            Event::Message {
                conn,
                data: b"hi",
                part: true,
            },
        );
        assert_eq!((e.kind, e.len, e.flags), (SNP_MESSAGE, 2, SNP_PART));
    }

    #[test]
    fn bad_arguments_are_einval_not_crashes() {
        // SAFETY: null pointers are part of the contract (rejected).
        unsafe {
            assert_eq!(snp_flush(std::ptr::null_mut()), -libc::EINVAL);
            assert_eq!(
                snp_attach(std::ptr::null(), std::ptr::null_mut()),
                -libc::EINVAL
            );
            let mut g = std::ptr::null_mut();
            let missing = c"/nonexistent/snstack.sock";
            let r = snp_attach(missing.as_ptr(), &mut g);
            assert!(r == -libc::ENOENT || r == -libc::ECONNREFUSED, "{r}");
            assert!(g.is_null());
            snp_detach(std::ptr::null_mut());
        }
    }
}
