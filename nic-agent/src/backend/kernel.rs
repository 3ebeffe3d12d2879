//! The kernel backend: the OS TCP stack through non-blocking sockets and an edge-triggered epoll
//! instance of its own, nested in the agent's epoll set (so the agent wakes for socket events
//! without knowing what a socket is).
//!
//! Urgent data: the agent's sockets keep the urgent byte out of band (no `SO_OOBINLINE`; the
//! host library keeps the application's choice). On `EPOLLPRI` the agent peeks the byte and
//! learns its place when its reading reaches the mark (`SIOCATMARK`: the kernel's receive
//! stops there), then writes the byte into the RX stream at that place itself; the host reads
//! or skips it as Linux would (docs/channel.md, *Urgent data*). Every socket is owned by the
//! agent's thread for `SIGURG`, so a receive that reaches a mark whose readiness report was not
//! collected yet stops there (`EAGAIN` while the signal is pending) instead of passing it.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::{Backend, ConnectState, IoBuf, Readiness, SockEvent, UrgentIn};
use crate::sys;

pub struct KernelBackend {
    epoll: sys::Epoll,
    buf: Vec<libc::epoll_event>,
    /// The agent's thread: `SIGURG` of every socket goes to it.
    tid: i32,
    /// `SIGURG`s counted when the last poll started (see [`Backend::urgent_unpolled`]).
    urg_polled: u32,
}

impl KernelBackend {
    pub fn new() -> io::Result<Self> {
        sys::install_sigurg_handler()?;
        Ok(KernelBackend {
            epoll: sys::Epoll::new()?,
            buf: sys::event_buf(512),
            tid: sys::gettid(),
            urg_polled: sys::urg_signals(),
        })
    }

    fn own(&self, s: &OwnedFd) {
        if let Err(e) = sys::own_urgent_signals(s.as_raw_fd(), self.tid) {
            tracing::debug!("F_SETOWN_EX: {e}");
        }
    }
}

impl Backend for KernelBackend {
    type Sock = OwnedFd;

    fn socket(&mut self, domain: i32) -> io::Result<OwnedFd> {
        let s = sys::tcp_socket(domain)?;
        self.own(&s);
        Ok(s)
    }

    fn bind(&mut self, s: &OwnedFd, a: &SocketAddr) -> io::Result<()> {
        sys::bind(s.as_raw_fd(), a)
    }

    fn listen(&mut self, s: &OwnedFd, backlog: i32) -> io::Result<()> {
        sys::listen(s.as_raw_fd(), backlog)
    }

    fn accept(&mut self, s: &OwnedFd) -> io::Result<(OwnedFd, SocketAddr)> {
        // The owner is the open file's, so an accepted socket needs its own.
        let (c, a) = sys::accept_tcp(s.as_raw_fd())?;
        self.own(&c);
        Ok((c, a))
    }

    fn connect(&mut self, s: &OwnedFd, a: &SocketAddr) -> io::Result<()> {
        sys::connect(s.as_raw_fd(), a)
    }

    fn connect_state(&mut self, s: &OwnedFd) -> ConnectState {
        match sys::take_error(s.as_raw_fd()) {
            Ok(0) => {}
            Ok(e) => return ConnectState::Failed(e),
            Err(e) => return ConnectState::Failed(sys::errno_of(&e)),
        }
        // No error yet: connected only when the peer is known. A spurious wake-up during
        // SYN_SENT leaves ENOTCONN.
        match sys::peer_addr(s.as_raw_fd()) {
            Ok(_) => ConnectState::Connected,
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => ConnectState::Pending,
            Err(e) => ConnectState::Failed(sys::errno_of(&e)),
        }
    }

    fn take_error(&mut self, s: &OwnedFd) -> i32 {
        sys::take_error(s.as_raw_fd()).unwrap_or_else(|e| sys::errno_of(&e))
    }

    fn shutdown(&mut self, s: &OwnedFd, how: i32) -> io::Result<()> {
        sys::shutdown(s.as_raw_fd(), how)
    }

    fn local_addr(&mut self, s: &OwnedFd) -> io::Result<SocketAddr> {
        sys::local_addr(s.as_raw_fd())
    }

    fn peer_addr(&mut self, s: &OwnedFd) -> io::Result<SocketAddr> {
        sys::peer_addr(s.as_raw_fd())
    }

    fn setsockopt(&mut self, s: &OwnedFd, level: i32, name: i32, val: &[u8]) -> io::Result<()> {
        sys::setsockopt(s.as_raw_fd(), level, name, val)
    }

    fn getsockopt(
        &mut self,
        s: &OwnedFd,
        level: i32,
        name: i32,
        buf: &mut [u8],
    ) -> io::Result<usize> {
        sys::getsockopt(s.as_raw_fd(), level, name, buf).map(|n| n.min(buf.len()))
    }

    unsafe fn recv(&mut self, s: &OwnedFd, bufs: &[IoBuf]) -> io::Result<usize> {
        // SAFETY: forwarded from the caller's contract.
        unsafe { sys::readv(s.as_raw_fd(), bufs) }
    }

    unsafe fn send(&mut self, s: &OwnedFd, bufs: &[IoBuf]) -> io::Result<usize> {
        // SAFETY: forwarded from the caller's contract.
        unsafe { sys::sendv(s.as_raw_fd(), bufs) }
    }

    unsafe fn send_more(&mut self, s: &OwnedFd, bufs: &[IoBuf]) -> io::Result<usize> {
        // SAFETY: forwarded from the caller's contract.
        unsafe { sys::sendv_flags(s.as_raw_fd(), bufs, libc::MSG_MORE) }
    }

    fn push(&mut self, s: &OwnedFd) {
        // Clearing TCP_CORK pushes the pending segments (Nagle still applies); an application's
        // own cork stays.
        let fd = s.as_raw_fd();
        let mut v = [0u8; 4];
        let corked = sys::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_CORK, &mut v)
            .is_ok_and(|_| i32::from_ne_bytes(v) != 0);
        if !corked {
            if let Err(e) =
                sys::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_CORK, &0i32.to_ne_bytes())
            {
                tracing::debug!("TCP_CORK 0 to push held bytes: {e}");
            }
        }
    }

    fn has_unread(&mut self, s: &OwnedFd) -> bool {
        sys::unread(s.as_raw_fd()).map_or(true, |n| n > 0)
    }

    unsafe fn send_urgent(&mut self, s: &OwnedFd, bufs: &[IoBuf]) -> io::Result<usize> {
        // SAFETY: forwarded from the caller's contract.
        unsafe { sys::sendv_oob(s.as_raw_fd(), bufs) }
    }

    fn urgent_in(&mut self, s: &OwnedFd) -> io::Result<Option<UrgentIn>> {
        let fd = s.as_raw_fd();
        let byte = match sys::peek_oob(fd) {
            Ok(None) => return Ok(None),
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => return Err(e),
        };
        let ahead = sys::at_mark(fd)?.then_some(0);
        Ok(Some(UrgentIn {
            seq: None,
            byte,
            ahead,
            inline: false,
        }))
    }

    fn urgent_data(&self) -> bool {
        true
    }

    /// One `recv(MSG_OOB|MSG_PEEK)` per accepted connection: urgent data that came before the
    /// agent owned the socket raised no SIGURG for it, and the first receive must not pass it.
    fn urgent_hint(&self, s: &OwnedFd) -> bool {
        match sys::peek_oob(s.as_raw_fd()) {
            Ok(b) => b.is_some(),
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        }
    }

    fn urgent_unpolled(&self) -> bool {
        sys::urg_signals() != self.urg_polled
    }

    fn file_refs(&self) -> bool {
        true
    }

    fn send_file(
        &mut self,
        s: &OwnedFd,
        file: RawFd,
        offset: u64,
        len: usize,
    ) -> io::Result<usize> {
        sys::sendfile(s.as_raw_fd(), file, offset, len)
    }

    fn register(&mut self, s: &OwnedFd, token: u64) -> io::Result<()> {
        let ev = sys::EV_IN | sys::EV_OUT | sys::EV_RDHUP | sys::EV_PRI | sys::EV_ET;
        self.epoll.add(s.as_raw_fd(), ev, token)
    }

    fn close(&mut self, s: OwnedFd) {
        // Closing the last reference also removes it from the epoll set.
        drop(s);
    }

    fn poll(&mut self, out: &mut Vec<SockEvent>) -> io::Result<()> {
        // Urgent data signalled before this poll has its EPOLLPRI report in it.
        self.urg_polled = sys::urg_signals();
        loop {
            let n = self.epoll.wait(&mut self.buf, 0)?;
            for ev in &self.buf[..n] {
                let (bits, token) = (ev.events, ev.u64);
                out.push(SockEvent {
                    token,
                    ready: Readiness {
                        readable: bits & sys::EV_IN != 0,
                        writable: bits & sys::EV_OUT != 0,
                        hup: bits & (sys::EV_HUP | sys::EV_RDHUP) != 0,
                        error: bits & sys::EV_ERR != 0,
                        urgent: bits & sys::EV_PRI != 0,
                    },
                });
            }
            if n < self.buf.len() {
                return Ok(());
            }
        }
    }

    fn wait_fd(&self) -> RawFd {
        self.epoll.raw()
    }

    fn poll_is_wait(&self) -> bool {
        true
    }

    /// A short read drained the TCP socket: with edge-triggered epoll every later byte, FIN or
    /// error raises a new event, and an event that already carried RDHUP/HUP/ERR has the caller
    /// read on to the end. Saves the `recvmsg` that would answer EAGAIN, one per request.
    fn recv_more(&self, _s: &Self::Sock) -> bool {
        false
    }

    fn owns_loopback(&self) -> bool {
        true
    }
}
