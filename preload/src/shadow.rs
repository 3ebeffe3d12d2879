//! Shadow fds. Every offloaded socket's fd number is a real kernel socket fd, so numbers never
//! collide with the kernel's, `fcntl(F_GETFD)`/`fstat`/`poll` on it see a socket, and fork, exec
//! and `close_range` keep working on numbers. The socket behind it never carries a byte.
//!
//! Creating a kernel socket per offloaded socket costs what the offload is meant to save: for a
//! `Connection: close` server, the `socket()` and the final `close()` of the shadow were a quarter
//! of its CPU per request (socket allocation, inode, file; then `tcp_close`, RCU frees). So a
//! shadow is a duplicate of one *template* socket per address family (`F_DUPFD`: the lowest free
//! number, as `socket()` would give), and closing it only drops a reference.
//!
//! What the shadows of one family share is the open file description: status flags (the
//! library keeps `O_NONBLOCK` per socket itself and masks the shared one, `ops::fcntl`), the
//! owner for `O_ASYNC` (not supported on offloaded sockets: no kernel event ever fires on a
//! shadow) and the inode number `fstat` reports. Templates are internal fds (moved high, hidden
//! from the application, close-on-exec); a forked child closes them with the parent's other
//! internal fds and makes its own.

use core::sync::atomic::{AtomicI32, Ordering};

use crate::sys;

/// Template per family: [AF_INET, AF_INET6]; -1 until first needed.
static TEMPLATE: [AtomicI32; 2] = [AtomicI32::new(-1), AtomicI32::new(-1)];

fn template(domain: i32) -> Result<i32, i32> {
    let i = usize::from(domain == libc::AF_INET6);
    let t = TEMPLATE[i].load(Ordering::Acquire);
    if t >= 0 {
        return Ok(t);
    }
    let fd = sys::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)? as i32;
    let fd = crate::channel::hide_fd(fd);
    match TEMPLATE[i].compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Ok(fd),
        Err(other) => {
            // Another thread made one first.
            crate::fdtable::clear(fd);
            let _ = sys::close(fd);
            Ok(other)
        }
    }
}

/// A forked child closed its parent's internal fds, templates included: make new ones when
/// needed (the number may be reused by anything by then).
pub(crate) fn forget() {
    for t in &TEMPLATE {
        t.store(-1, Ordering::Release);
    }
}

/// A new shadow fd for a socket of `domain`; `flags` may hold `SOCK_CLOEXEC` (other bits are
/// the caller's business). Errors as `socket()` would give them (EMFILE, ENFILE, ...).
pub(crate) fn new(domain: i32, flags: i32) -> Result<i32, i32> {
    let t = template(domain)?;
    let cmd = if flags & libc::SOCK_CLOEXEC != 0 {
        libc::F_DUPFD_CLOEXEC
    } else {
        libc::F_DUPFD
    };
    let fd = sys::fcntl(t, cmd, 0)? as i32;
    if fd as usize >= crate::fdtable::MAX_FDS {
        let _ = sys::close(fd);
        return Err(libc::EMFILE);
    }
    Ok(fd)
}
