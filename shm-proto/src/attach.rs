//! The host side of attaching to the agent, written once for the library, the tests and the
//! examples: connect to the agent's UNIX `SOCK_SEQPACKET` socket, send a [`Hello`], receive the
//! [`Reply`] with the region memfd and the agent's doorbell eventfd in `SCM_RIGHTS`, map the memfd
//! and validate the region (`docs/channel.md`, *Attach*).
//!
//! ```text
//!  host                                   agent
//!   socket + connect ───────────────────►  accept, SO_PEERCRED
//!   Hello{kind, arg}  ──────────────────►
//!                     ◄──────────────────  Reply{status, len} + SCM_RIGHTS [memfd, doorbell]
//!   mmap(memfd, len), Region::attach, close(memfd)
//! ```
//!
//! Why generic over [`Sys`] instead of calling libc: the preload library interposes `socket`,
//! `connect`, `sendmsg`, `close`, ... and must never call those symbols itself (inside
//! `libsnstack.so` they resolve to its own hooks), so it plugs in its raw system calls, while tests
//! and examples use [`LibcSys`]. The protocol (what is sent, which fds come back in which order,
//! what is checked, what is closed on every failure path) lives here and only here. Behind the
//! `std` feature because it needs `libc`'s socket types; the channel core stays `no_std`.

use crate::msg::{Hello, Reply, MSG_LEN};
use crate::region::{Region, RegionError};

/// The system calls the handshake needs. Errors are positive errno values.
pub trait Sys {
    /// `socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0)`.
    fn seqpacket(&mut self) -> Result<i32, i32>;
    /// `connect` to the UNIX socket at `path` (no NUL).
    fn connect_unix(&mut self, fd: i32, path: &[u8]) -> Result<(), i32>;
    /// `sendmsg(2)`.
    ///
    /// # Safety
    /// `msg` describes buffers valid for the call.
    unsafe fn sendmsg(
        &mut self,
        fd: i32,
        msg: *const libc::msghdr,
        flags: i32,
    ) -> Result<usize, i32>;
    /// `recvmsg(2)`.
    ///
    /// # Safety
    /// `msg` describes buffers valid for the call.
    unsafe fn recvmsg(&mut self, fd: i32, msg: *mut libc::msghdr, flags: i32)
        -> Result<usize, i32>;
    /// `mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)`.
    fn mmap_shared(&mut self, fd: i32, len: usize) -> Result<*mut u8, i32>;
    /// Unmaps what [`Sys::mmap_shared`] mapped (only on a failed attach).
    fn munmap(&mut self, base: *mut u8, len: usize);
    fn close(&mut self, fd: i32);
}

/// Why an attach failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachError {
    /// A system call on the control socket failed (errno); the agent is not there, or went away.
    Connect(i32),
    /// The agent answered something this protocol does not allow.
    Protocol(&'static str),
    /// The agent refused (its errno: `EPROTONOSUPPORT`, `ENOENT`/`EPERM` for a fork ticket, ...).
    Refused(u32),
    /// The region could not be mapped (errno).
    Map(i32),
    /// The mapped region failed validation.
    Region(RegionError),
}

impl core::fmt::Display for AttachError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AttachError::Connect(e) => write!(f, "control socket failed, errno {e}"),
            AttachError::Protocol(w) => write!(f, "{w}"),
            AttachError::Refused(e) => write!(f, "agent refused the attach, errno {e}"),
            AttachError::Map(e) => write!(f, "cannot map the region, errno {e}"),
            AttachError::Region(e) => write!(f, "agent region failed validation: {e}"),
        }
    }
}

impl std::error::Error for AttachError {}

/// An attached channel. The caller owns the two fds and the mapping (`base`, `len`): nothing here
/// closes or unmaps them, so `region` stays valid as long as the caller keeps the mapping.
#[derive(Debug)]
pub struct Attached {
    /// The control socket. Keep it open: its EOF tells the agent this process is gone.
    pub ctl: i32,
    /// The agent's doorbell eventfd (`wake::must_ring` says when to write it).
    pub bell: i32,
    pub base: *mut u8,
    pub len: usize,
    pub region: Region,
}

/// Fds received with a reply: at most two are kept, in the order the agent sent them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fds {
    pub fds: [i32; 2],
    pub n: usize,
}

impl Fds {
    fn close_all<S: Sys>(&self, sys: &mut S) {
        for &f in &self.fds[..self.n] {
            sys.close(f);
        }
    }
}

/// Sends one [`Hello`], with `pass_fd` in `SCM_RIGHTS` when given (`HELLO_WAITER`).
pub fn send_hello<S: Sys>(
    sys: &mut S,
    fd: i32,
    h: &Hello,
    pass_fd: Option<i32>,
) -> Result<(), i32> {
    let buf = h.encode();
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut _,
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 4];
    // SAFETY: a zeroed msghdr is valid; fields are filled below with pointers to live locals.
    let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(pfd) = pass_fd {
        msg.msg_control = cbuf.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is a pure computation.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as _;
        // SAFETY: msg_control points to `cbuf`, 32 bytes, at least CMSG_SPACE(4) and aligned for
        // a cmsghdr (u64 array); the header and its 4 data bytes fit.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(4) as _;
            core::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut i32, pfd);
        }
    }
    // SAFETY: msg describes `buf`, `iov` and `cbuf`, all alive across the call.
    let n = unsafe { sys.sendmsg(fd, &msg, libc::MSG_NOSIGNAL) }?;
    if n != MSG_LEN {
        return Err(libc::EMSGSIZE);
    }
    Ok(())
}

/// Receives one [`Reply`] and up to two fds (more are closed). Every fd received is either
/// returned or closed, on every path.
pub fn recv_reply<S: Sys>(sys: &mut S, fd: i32) -> Result<(Reply, Fds), AttachError> {
    let mut buf = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 8];
    // SAFETY: a zeroed msghdr is valid; filled with pointers to live locals.
    let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = core::mem::size_of_val(&cbuf) as _;
    let n = loop {
        // SAFETY: msg describes `buf`, `iov` and `cbuf`, all alive across the call.
        match unsafe { sys.recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) } {
            Err(libc::EINTR) => continue,
            Err(e) => return Err(AttachError::Connect(e)),
            Ok(n) => break n,
        }
    };
    let mut fds = Fds { fds: [-1; 2], n: 0 };
    let mut extra = [-1i32; 16];
    let mut n_extra = 0;
    // SAFETY: walks the control buffer the kernel filled, with the libc macros, which stay inside
    // `msg_controllen`; each fd is read once from the kernel-written data.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let cnt = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                for i in 0..cnt {
                    let f = core::ptr::read_unaligned((libc::CMSG_DATA(c) as *const i32).add(i));
                    if fds.n < 2 {
                        fds.fds[fds.n] = f;
                        fds.n += 1;
                    } else if n_extra < extra.len() {
                        extra[n_extra] = f;
                        n_extra += 1;
                    }
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    for &f in &extra[..n_extra] {
        sys.close(f);
    }
    if n != MSG_LEN {
        fds.close_all(sys);
        return Err(AttachError::Protocol("short reply from agent"));
    }
    match Reply::decode(&buf[..n]) {
        Some(r) => Ok((r, fds)),
        None => {
            fds.close_all(sys);
            Err(AttachError::Protocol("bad reply from agent"))
        }
    }
}

/// Attaches with `hello` (`HELLO_ATTACH`, or `HELLO_ATTACH_CHILD` with a fork ticket's secret):
/// connect, hello, reply + [memfd, doorbell], map, validate. On failure everything opened here is
/// closed again.
pub fn attach<S: Sys>(sys: &mut S, path: &[u8], hello: Hello) -> Result<Attached, AttachError> {
    let ctl = sys.seqpacket().map_err(AttachError::Connect)?;
    match attach_on(sys, ctl, path, hello) {
        Ok(a) => Ok(a),
        Err(e) => {
            sys.close(ctl);
            Err(e)
        }
    }
}

fn attach_on<S: Sys>(
    sys: &mut S,
    ctl: i32,
    path: &[u8],
    hello: Hello,
) -> Result<Attached, AttachError> {
    sys.connect_unix(ctl, path).map_err(AttachError::Connect)?;
    send_hello(sys, ctl, &hello, None).map_err(AttachError::Connect)?;
    let (reply, fds) = recv_reply(sys, ctl)?;
    if reply.status != 0 {
        fds.close_all(sys);
        return Err(AttachError::Refused(reply.status));
    }
    if fds.n != 2 {
        fds.close_all(sys);
        return Err(AttachError::Protocol("agent sent no region"));
    }
    let [memfd, bell] = fds.fds;
    let Ok(len) = usize::try_from(reply.len) else {
        fds.close_all(sys);
        return Err(AttachError::Protocol("region too large"));
    };
    let mapped = sys.mmap_shared(memfd, len);
    // The mapping keeps the memory; the memfd itself is of no further use.
    sys.close(memfd);
    let base = match mapped {
        Ok(p) => p,
        Err(e) => {
            sys.close(bell);
            return Err(AttachError::Map(e));
        }
    };
    // SAFETY: `base` maps `len` bytes MAP_SHARED, and stays mapped until the caller unmaps it
    // (`Attached` documents that the mapping is the caller's); on failure we unmap it right here
    // and the region is dropped unused.
    match unsafe { Region::attach(base, len) } {
        Ok(region) => Ok(Attached {
            ctl,
            bell,
            base,
            len,
            region,
        }),
        Err(e) => {
            sys.munmap(base, len);
            sys.close(bell);
            Err(AttachError::Region(e))
        }
    }
}

/// Registers `efd` as the doorbell of waiter slot `i` on an attached control socket
/// (`HELLO_WAITER`); returns the agent's status (0 or an errno).
pub fn register_waiter<S: Sys>(
    sys: &mut S,
    ctl: i32,
    i: u64,
    efd: i32,
) -> Result<u32, AttachError> {
    send_hello(
        sys,
        ctl,
        &Hello::new(crate::msg::HELLO_WAITER, i),
        Some(efd),
    )
    .map_err(AttachError::Connect)?;
    let (r, fds) = recv_reply(sys, ctl)?;
    fds.close_all(sys);
    Ok(r.status)
}

/// [`Sys`] through libc, for programs that do not interpose libc (tests, examples, tools).
#[derive(Debug, Clone, Copy, Default)]
pub struct LibcSys {
    /// Bound on each wait for a reply (`ETIMEDOUT` after it), so a test against a hung agent
    /// fails instead of hanging. `None`: wait as long as it takes.
    pub reply_timeout_ms: Option<i32>,
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

impl Sys for LibcSys {
    fn seqpacket(&mut self) -> Result<i32, i32> {
        // SAFETY: plain socket(2).
        let fd =
            unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(last_errno());
        }
        Ok(fd)
    }

    fn connect_unix(&mut self, fd: i32, path: &[u8]) -> Result<(), i32> {
        // SAFETY: a zeroed sockaddr_un is valid.
        let mut sa: libc::sockaddr_un = unsafe { core::mem::zeroed() };
        if path.len() >= sa.sun_path.len() {
            return Err(libc::ENAMETOOLONG);
        }
        sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in sa.sun_path.iter_mut().zip(path) {
            *d = *s as libc::c_char;
        }
        let len = core::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        // SAFETY: `sa` is a valid sockaddr_un of `len` bytes.
        if unsafe { libc::connect(fd, (&sa as *const libc::sockaddr_un).cast(), len) } != 0 {
            return Err(last_errno());
        }
        Ok(())
    }

    unsafe fn sendmsg(
        &mut self,
        fd: i32,
        msg: *const libc::msghdr,
        flags: i32,
    ) -> Result<usize, i32> {
        // SAFETY: the caller's contract (`Sys::sendmsg`).
        let n = unsafe { libc::sendmsg(fd, msg, flags) };
        usize::try_from(n).map_err(|_| last_errno())
    }

    unsafe fn recvmsg(
        &mut self,
        fd: i32,
        msg: *mut libc::msghdr,
        flags: i32,
    ) -> Result<usize, i32> {
        if let Some(ms) = self.reply_timeout_ms {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            match unsafe { libc::poll(&mut pfd, 1, ms) } {
                0 => return Err(libc::ETIMEDOUT),
                r if r < 0 => return Err(last_errno()),
                _ => {}
            }
        }
        // SAFETY: the caller's contract (`Sys::recvmsg`).
        let n = unsafe { libc::recvmsg(fd, msg, flags) };
        usize::try_from(n).map_err(|_| last_errno())
    }

    fn mmap_shared(&mut self, fd: i32, len: usize) -> Result<*mut u8, i32> {
        // SAFETY: a fresh shared mapping of `fd`; the result is checked.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(last_errno());
        }
        Ok(p.cast())
    }

    fn munmap(&mut self, base: *mut u8, len: usize) {
        // SAFETY: `Sys::munmap` is called only for a mapping `mmap_shared` made and nobody uses.
        unsafe { libc::munmap(base.cast(), len) };
    }

    fn close(&mut self, fd: i32) {
        // SAFETY: closes an fd this handshake opened or received and owns.
        unsafe { libc::close(fd) };
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::msg::HELLO_ATTACH;

    #[test]
    fn no_agent_is_a_connect_error() {
        let r = attach(
            &mut LibcSys::default(),
            b"/nonexistent/snstack-agent.sock",
            Hello::new(HELLO_ATTACH, 0),
        );
        assert!(
            matches!(r, Err(AttachError::Connect(libc::ENOENT))),
            "{r:?}"
        );
    }

    /// A fake agent on a socketpair: a reply that refuses, and one that passes fds, which are
    /// closed or returned as promised.
    #[test]
    fn replies_and_fds() {
        let mut sv = [0i32; 2];
        // SAFETY: socketpair into a 2-element array.
        let r =
            unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0, sv.as_mut_ptr()) };
        assert_eq!(r, 0);
        let (host, agent) = (sv[0], sv[1]);
        let mut sys = LibcSys {
            reply_timeout_ms: Some(5000),
        };
        // Refusal, no fds.
        let refuse = Reply::new(libc::EPROTONOSUPPORT as u32, 0).encode();
        // SAFETY: sends a live buffer.
        unsafe { libc::send(agent, refuse.as_ptr().cast(), refuse.len(), 0) };
        let (rep, fds) = recv_reply(&mut sys, host).unwrap();
        assert_eq!((rep.status, fds.n), (libc::EPROTONOSUPPORT as u32, 0));
        // A reply with one fd, as a waiter registration's answer would carry none: kept here.
        // SAFETY: plain eventfd(2).
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        let ok = Reply::new(0, 0);
        // Use send_hello's fd passing from the "agent" side by sending a Hello-shaped record:
        // recv_reply only checks magic and length, which a Hello has too.
        send_hello(&mut sys, agent, &Hello::new(ok.status, 0), Some(efd)).unwrap();
        let (_, fds) = recv_reply(&mut sys, host).unwrap();
        assert_eq!(fds.n, 1);
        assert!(fds.fds[0] >= 0 && fds.fds[0] != efd);
        // A short datagram is a protocol error.
        // SAFETY: sends a live buffer.
        unsafe { libc::send(agent, refuse.as_ptr().cast(), 10, 0) };
        assert_eq!(
            recv_reply(&mut sys, host).unwrap_err(),
            AttachError::Protocol("short reply from agent")
        );
        for f in [host, agent, efd, fds.fds[0]] {
            sys.close(f);
        }
    }
}
