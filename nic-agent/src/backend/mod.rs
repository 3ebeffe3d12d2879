//! The seam between the agent and a TCP implementation.
//!
//! The agent (sessions, channel, wake-ups) speaks to a [`Backend`]; `kernel` drives the OS stack
//! with non-blocking sockets, and a user-space engine can be added beside it without touching the
//! channel code. Sockets are identified by the backend's own handle type; readiness comes back
//! through [`Backend::poll`] tagged with the token the agent registered.

pub mod kernel;
pub mod user;

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// Readiness of one socket, as edge reports (the agent reads/writes until `WouldBlock`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    pub readable: bool,
    pub writable: bool,
    /// Peer closed or connection dead (EPOLLHUP / EPOLLRDHUP).
    pub hup: bool,
    /// An error is pending (EPOLLERR).
    pub error: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct SockEvent {
    pub token: u64,
    pub ready: Readiness,
}

/// Progress of a non-blocking connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectState {
    Pending,
    Connected,
    Failed(i32),
}

/// A raw buffer for vectored I/O into or out of shared memory.
pub type IoBuf = libc::iovec;

/// A TCP implementation. Every method is non-blocking; errors carry Linux errno values.
pub trait Backend {
    type Sock;

    fn socket(&mut self, domain: i32) -> io::Result<Self::Sock>;
    fn bind(&mut self, s: &Self::Sock, a: &SocketAddr) -> io::Result<()>;
    fn listen(&mut self, s: &Self::Sock, backlog: i32) -> io::Result<()>;
    fn accept(&mut self, s: &Self::Sock) -> io::Result<(Self::Sock, SocketAddr)>;
    /// Starts a connect: `Ok` when connected at once, `Err(EINPROGRESS)` when under way.
    fn connect(&mut self, s: &Self::Sock, a: &SocketAddr) -> io::Result<()>;
    fn connect_state(&mut self, s: &Self::Sock) -> ConnectState;
    /// Pending socket error (0 when none); reading clears it.
    fn take_error(&mut self, s: &Self::Sock) -> i32;
    fn shutdown(&mut self, s: &Self::Sock, how: i32) -> io::Result<()>;
    fn local_addr(&mut self, s: &Self::Sock) -> io::Result<SocketAddr>;
    fn peer_addr(&mut self, s: &Self::Sock) -> io::Result<SocketAddr>;
    fn setsockopt(&mut self, s: &Self::Sock, level: i32, name: i32, val: &[u8]) -> io::Result<()>;
    /// Returns the option's length (clamped to `buf.len()`).
    fn getsockopt(
        &mut self,
        s: &Self::Sock,
        level: i32,
        name: i32,
        buf: &mut [u8],
    ) -> io::Result<usize>;
    /// Receives into `bufs`; `Ok(0)` is end of stream.
    ///
    /// # Safety
    /// Every buffer must be writable memory that no Rust reference aliases during the call.
    unsafe fn recv(&mut self, s: &Self::Sock, bufs: &[IoBuf]) -> io::Result<usize>;
    /// Sends from `bufs` (never raises SIGPIPE).
    ///
    /// # Safety
    /// Every buffer must be readable memory.
    unsafe fn send(&mut self, s: &Self::Sock, bufs: &[IoBuf]) -> io::Result<usize>;
    /// Starts readiness reports for `s` under `token` (edge-triggered: read, write, hang-up).
    fn register(&mut self, s: &Self::Sock, token: u64) -> io::Result<()>;
    /// Releases a socket (the OS close for the kernel backend).
    fn close(&mut self, s: Self::Sock);
    /// Collects readiness without blocking.
    fn poll(&mut self, out: &mut Vec<SockEvent>) -> io::Result<()>;
    /// A descriptor that becomes readable when [`Backend::poll`] has something to report; the
    /// agent puts it in its own epoll set.
    fn wait_fd(&self) -> RawFd;
}
