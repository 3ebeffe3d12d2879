//! Loopback acceleration: a TCP connection between two processes served by this agent is made
//! by the agent itself, without a kernel (or user-stack) connection. Design: docs/loopback.md.
//!
//! ```text
//!  A write() -> A's TX stream --pump_tx/send--> Pipe (B's end) --pump_rx/recv--> B's RX stream
//!                                 (memcpy)                          (memcpy)
//!  LoopBackend<B>: every socket is a LoopSock { os: B::Sock, key }. Plain sockets and listeners
//!  go to the inner backend; a connect() to a local address where one of our listeners listens
//!  becomes a pair of `End`s here, peers of each other, and never touches the network.
//! ```
//!
//! [`LoopNet`] is the sans-IO core (ends, pipes, listeners' loop queues, readiness); the
//! [`LoopBackend`] wrapper adds what needs the inner backend: ports (the client's OS socket is
//! bound to the destination address with port 0 and kept as a placeholder for the connection's
//! life, so the kernel's port allocator never hands that port to anyone else), option storage
//! (each end keeps an OS socket for setsockopt/getsockopt) and the locality test.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::{Backend, ConnectState, IoBuf, LoopStats, Readiness, RxSink, SockEvent};

/// Bytes one end holds for its reader (the kernel's receive buffer). The whole path from a
/// writer to a reader holds its TX stream, this and the reader's RX stream.
pub const PIPE_CAP: usize = 256 * 1024;
/// Linux's default `net.core.somaxconn`: listen() clamps the backlog to it.
const SOMAXCONN: usize = 4096;

fn err(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// Bytes in flight to one end: written by its peer's `send`, read by its own `recv`.
#[derive(Debug, Default)]
pub struct Pipe {
    buf: VecDeque<u8>,
}

impl Pipe {
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn space(&self) -> usize {
        PIPE_CAP.saturating_sub(self.len())
    }

    /// Appends what fits of `src`; returns the bytes taken.
    pub fn push(&mut self, src: &[u8]) -> usize {
        let n = src.len().min(self.space());
        self.buf.extend(&src[..n]);
        n
    }

    /// The byte `i` places from the front, if there is one.
    pub fn byte(&self, i: usize) -> Option<u8> {
        self.buf.get(i).copied()
    }

    /// Moves the oldest bytes into `dst`; returns how many.
    pub fn pop(&mut self, dst: &mut [u8]) -> usize {
        let n = dst.len().min(self.buf.len());
        let (a, b) = self.buf.as_slices();
        let k = n.min(a.len());
        dst[..k].copy_from_slice(&a[..k]);
        dst[k..n].copy_from_slice(&b[..n - k]);
        self.buf.drain(..n);
        if self.buf.is_empty() && self.buf.capacity() > 64 * 1024 {
            // A burst is over: give the memory back (idle connections stay small).
            self.buf.shrink_to(4096);
        }
        n
    }
}

/// One end of a loop connection.
#[derive(Debug)]
pub struct End {
    /// The other end, while it exists.
    pub peer: Option<usize>,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// What the peer sent that this end has not received.
    pub rx: Pipe,
    /// The peer will send nothing more (its SHUT_WR or close): end of stream after `rx`.
    pub rx_fin: bool,
    pub rd_shut: bool,
    pub wr_shut: bool,
    /// The peer's socket is closed: the next bytes sent reset the connection, as the peer's
    /// stack would answer them with RST.
    pub peer_closed: bool,
    /// Reset: no more I/O. `recv` returns what is left of `rx`, then the error once, then 0.
    pub dead: bool,
    /// Pending `SO_ERROR`.
    pub err: i32,
    /// Our last send found the peer's pipe full: wake us when the peer reads.
    pub writer_blocked: bool,
    /// A server end not accepted yet: the listener whose loop queue holds it.
    pub queued: Option<usize>,
    /// A client end whose completion no later `connect` reported yet (Linux answers the
    /// first `connect` after an `EINPROGRESS` with 0, the next ones with `EISCONN`).
    pub connect_unreported: bool,
    /// Bytes `recv` took from `rx` so far (the index of `rx`'s first byte in the stream).
    pub rx_taken: u64,
    /// The peer's last urgent byte, kept out of the data as the kernel's socket keeps it.
    pub urg: Option<LoopUrg>,
}

/// An urgent byte in an end's `rx`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoopUrg {
    /// Urgent sends the peer made so far.
    pub seq: u32,
    /// The byte's index in the stream (see `End::rx_taken`).
    pub at: u64,
    /// `urgent_in` reported it: `recv` may pass it (before that, a receive that reaches it
    /// stops there, as a kernel receive does while SIGURG is pending).
    pub seen: bool,
}

impl End {
    fn new(local: SocketAddr, remote: SocketAddr, peer: usize) -> Self {
        End {
            peer: Some(peer),
            local,
            remote,
            rx: Pipe::default(),
            rx_fin: false,
            rd_shut: false,
            wr_shut: false,
            peer_closed: false,
            dead: false,
            err: 0,
            writer_blocked: false,
            queued: None,
            connect_unreported: false,
            rx_taken: 0,
            urg: None,
        }
    }

    fn readiness(&self) -> Readiness {
        Readiness {
            readable: !self.rx.is_empty() || self.rx_fin || self.dead,
            writable: true,
            hup: self.rx_fin || self.dead,
            error: self.err != 0,
            urgent: false,
        }
    }
}

/// A listener as loop connections see it.
#[derive(Debug)]
pub struct Listen {
    pub addr: SocketAddr,
    pub v6only: bool,
    /// Loop connections queued for accept, beyond the agent's own accept queue (the kernel's
    /// backlog, for loop connections): at most `cap`.
    pub pending: VecDeque<usize>,
    pub cap: usize,
}

#[derive(Debug)]
pub enum State {
    /// Served by the inner backend.
    Plain,
    Listening(Listen),
    Conn(End),
}

#[derive(Debug)]
struct Entry {
    state: State,
    token: Option<u64>,
    /// `SO_LINGER {1, 0}`: close resets the connection.
    linger0: bool,
    /// Readiness not reported yet.
    ev: Readiness,
}

fn any(r: Readiness) -> bool {
    r.readable || r.writable || r.hup || r.error || r.urgent
}

fn or(a: Readiness, b: Readiness) -> Readiness {
    Readiness {
        readable: a.readable || b.readable,
        writable: a.writable || b.writable,
        hup: a.hup || b.hup,
        error: a.error || b.error,
        urgent: a.urgent || b.urgent,
    }
}

const READ: Readiness = Readiness {
    readable: true,
    writable: false,
    hup: false,
    error: false,
    urgent: false,
};
const WRITE: Readiness = Readiness {
    readable: false,
    writable: true,
    hup: false,
    error: false,
    urgent: false,
};
const HUP: Readiness = Readiness {
    readable: true,
    writable: true,
    hup: true,
    error: false,
    urgent: false,
};
const URGENT: Readiness = Readiness {
    readable: true,
    writable: false,
    hup: false,
    error: false,
    urgent: true,
};
const ALL: Readiness = Readiness {
    readable: true,
    writable: true,
    hup: true,
    error: true,
    urgent: false,
};

/// The address `a` as a socket of `domain` reports it (IPv4 seen from an AF_INET6 socket is
/// v4-mapped; a v4-mapped address seen from an AF_INET socket is plain IPv4).
pub fn in_family(a: SocketAddr, domain: i32) -> SocketAddr {
    match (a, domain) {
        (SocketAddr::V4(v4), libc::AF_INET6) => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        (SocketAddr::V6(v6), libc::AF_INET) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        _ => a,
    }
}

/// IPv4 for v4-mapped addresses, the address itself otherwise.
pub fn canon(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The sans-IO core: loop connection ends, listeners' loop queues and readiness to report.
#[derive(Debug, Default)]
pub struct LoopNet {
    entries: Vec<Option<Entry>>,
    free: Vec<usize>,
    /// Listening keys by port.
    listeners: HashMap<u16, Vec<usize>>,
    /// Keys with readiness to report (each at most once while its `ev` is non-empty).
    events: Vec<usize>,
    pub stats: LoopStats,
}

impl LoopNet {
    /// A socket served by the inner backend until it listens or connects here.
    pub fn add_plain(&mut self) -> usize {
        self.add(State::Plain)
    }

    fn add(&mut self, state: State) -> usize {
        let e = Entry {
            state,
            token: None,
            linger0: false,
            ev: Readiness::default(),
        };
        match self.free.pop() {
            Some(k) => {
                self.entries[k] = Some(e);
                k
            }
            None => {
                self.entries.push(Some(e));
                self.entries.len() - 1
            }
        }
    }

    fn entry(&self, k: usize) -> Option<&Entry> {
        self.entries.get(k).and_then(|e| e.as_ref())
    }

    fn entry_mut(&mut self, k: usize) -> Option<&mut Entry> {
        self.entries.get_mut(k).and_then(|e| e.as_mut())
    }

    pub fn state(&self, k: usize) -> Option<&State> {
        self.entry(k).map(|e| &e.state)
    }

    pub fn is_plain(&self, k: usize) -> bool {
        matches!(self.state(k), Some(State::Plain))
    }

    pub fn end(&self, k: usize) -> Option<&End> {
        match self.state(k) {
            Some(State::Conn(e)) => Some(e),
            _ => None,
        }
    }

    fn end_mut(&mut self, k: usize) -> Option<&mut End> {
        match self.entry_mut(k).map(|e| &mut e.state) {
            Some(State::Conn(e)) => Some(e),
            _ => None,
        }
    }

    /// Queues readiness `r` of `k` for the next [`LoopNet::poll`].
    fn notify(&mut self, k: usize, r: Readiness) {
        if let Some(e) = self.entry_mut(k) {
            let was = any(e.ev);
            e.ev = or(e.ev, r);
            if !was {
                self.events.push(k);
            }
        }
    }

    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Readiness changes of registered keys since the last call.
    pub fn poll(&mut self, out: &mut Vec<SockEvent>) {
        for k in std::mem::take(&mut self.events) {
            let Some(e) = self.entry_mut(k) else {
                continue;
            };
            let ready = std::mem::take(&mut e.ev);
            if let (Some(token), true) = (e.token, any(ready)) {
                out.push(SockEvent { token, ready });
            }
        }
    }

    /// Readiness reports for `k` go to `token` from now on (edge-triggered, as epoll: what is
    /// already true is reported once at once).
    pub fn register(&mut self, k: usize, token: u64) {
        let Some(e) = self.entry_mut(k) else {
            return;
        };
        e.token = Some(token);
        let now = match &e.state {
            State::Conn(end) => end.readiness(),
            State::Listening(l) if !l.pending.is_empty() => READ,
            _ => return,
        };
        self.notify(k, now);
    }

    pub fn set_linger0(&mut self, k: usize, on: bool) {
        if let Some(e) = self.entry_mut(k) {
            e.linger0 = on;
        }
    }

    /// `k` listens on `addr` (again: a new backlog).
    pub fn listen(&mut self, k: usize, addr: SocketAddr, v6only: bool, backlog: i32) {
        let cap = (backlog.max(0) as usize).min(SOMAXCONN) + 1;
        let Some(e) = self.entry_mut(k) else {
            return;
        };
        match &mut e.state {
            State::Listening(l) => l.cap = cap,
            State::Plain => {
                e.state = State::Listening(Listen {
                    addr,
                    v6only,
                    pending: VecDeque::new(),
                    cap,
                });
                self.listeners.entry(addr.port()).or_default().push(k);
            }
            State::Conn(_) => {}
        }
    }

    /// `k` stops listening: its unaccepted loop connections are reset, as Linux resets the
    /// connections still in a closed listener's queue.
    pub fn unlisten(&mut self, k: usize) {
        let Some(e) = self.entry_mut(k) else {
            return;
        };
        let State::Listening(l) = std::mem::replace(&mut e.state, State::Plain) else {
            return;
        };
        if let Some(v) = self.listeners.get_mut(&l.addr.port()) {
            v.retain(|&x| x != k);
            if v.is_empty() {
                self.listeners.remove(&l.addr.port());
            }
        }
        for s in l.pending {
            self.close(s, true);
        }
    }

    /// The listener a connect to `dst` reaches, when it has room in its queue: an exact address
    /// match before a wildcard one; IPv4 reaches a dual-stack `[::]` listener.
    pub fn find_listener(&self, dst: SocketAddr) -> Option<usize> {
        let ip = canon(dst.ip());
        let keys = self.listeners.get(&dst.port())?;
        let mut wild = None;
        for &k in keys {
            let Some(State::Listening(l)) = self.state(k) else {
                continue;
            };
            if l.pending.len() >= l.cap {
                continue;
            }
            let lip = canon(l.addr.ip());
            if lip == ip {
                return Some(k);
            }
            let reaches = match (lip, ip) {
                (IpAddr::V4(a), IpAddr::V4(_)) => a.is_unspecified(),
                (IpAddr::V6(a), IpAddr::V6(_)) => a.is_unspecified(),
                (IpAddr::V6(a), IpAddr::V4(_)) => a.is_unspecified() && !l.v6only,
                (IpAddr::V4(_), IpAddr::V6(_)) => false,
            };
            if reaches && wild.is_none() {
                wild = Some(k);
            }
        }
        wild
    }

    pub fn listen_addr(&self, k: usize) -> Option<SocketAddr> {
        match self.state(k) {
            Some(State::Listening(l)) => Some(l.addr),
            _ => None,
        }
    }

    /// Connects plain socket `client` to listener `lk`: the client's end is established at
    /// once, the server's end waits in the listener's loop queue. Returns the server end.
    pub fn connect(
        &mut self,
        client: usize,
        lk: usize,
        client_addrs: (SocketAddr, SocketAddr),
        server_addrs: (SocketAddr, SocketAddr),
    ) -> Option<usize> {
        if !self.is_plain(client) {
            return None;
        }
        match self.state(lk) {
            Some(State::Listening(l)) if l.pending.len() < l.cap => {}
            _ => return None,
        }
        let mut end = End::new(server_addrs.0, server_addrs.1, client);
        end.queued = Some(lk);
        let server = self.add(State::Conn(end));
        if let Some(e) = self.entry_mut(client) {
            let mut end = End::new(client_addrs.0, client_addrs.1, server);
            end.connect_unreported = true;
            e.state = State::Conn(end);
        }
        if let Some(Entry {
            state: State::Listening(l),
            ..
        }) = self.entry_mut(lk)
        {
            l.pending.push_back(server);
        }
        self.stats.connections += 1;
        self.notify(lk, READ);
        self.notify(client, WRITE);
        Some(server)
    }

    /// `connect` on a connected loop end: 0 once after the connect that made it, then EISCONN.
    pub fn reconnect(&mut self, k: usize) -> io::Result<()> {
        match self
            .end_mut(k)
            .map(|e| std::mem::take(&mut e.connect_unreported))
        {
            Some(true) => Ok(()),
            _ => Err(err(libc::EISCONN)),
        }
    }

    /// The oldest loop connection queued on listener `lk`, with its peer's address.
    pub fn accept(&mut self, lk: usize) -> Option<(usize, SocketAddr)> {
        let Some(State::Listening(l)) = self.entry_mut(lk).map(|e| &mut e.state) else {
            return None;
        };
        let k = l.pending.pop_front()?;
        let e = self.end_mut(k)?;
        e.queued = None;
        Some((k, e.remote))
    }

    /// Two distinct ends, mutably.
    fn pair_mut(&mut self, a: usize, b: usize) -> Option<(&mut End, &mut End)> {
        if a == b || a >= self.entries.len() || b >= self.entries.len() {
            return None;
        }
        let (x, y) = if a < b {
            let (lo, hi) = self.entries.split_at_mut(b);
            (&mut lo[a], &mut hi[0])
        } else {
            let (lo, hi) = self.entries.split_at_mut(a);
            (&mut hi[0], &mut lo[b])
        };
        match (
            x.as_mut().map(|e| &mut e.state),
            y.as_mut().map(|e| &mut e.state),
        ) {
            (Some(State::Conn(x)), Some(State::Conn(y))) => Some((x, y)),
            _ => None,
        }
    }

    /// Sends from `bufs` to the peer's pipe: what fits, `WouldBlock` when nothing does.
    pub fn send(&mut self, k: usize, bufs: &[&[u8]]) -> io::Result<usize> {
        let Some(e) = self.end_mut(k) else {
            return Err(err(libc::ENOTCONN));
        };
        if e.dead {
            return Err(err(match std::mem::take(&mut e.err) {
                0 => libc::EPIPE,
                x => x,
            }));
        }
        if e.wr_shut {
            return Err(err(libc::EPIPE));
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Ok(0);
        }
        let Some(p) = e.peer else {
            // The peer's socket is gone: its stack would take these bytes and answer RST.
            // A connection that had received FIN (CLOSE_WAIT) reports EPIPE, as Linux does.
            e.dead = true;
            e.err = if e.rx_fin {
                libc::EPIPE
            } else {
                libc::ECONNRESET
            };
            self.notify(k, ALL);
            return Ok(total);
        };
        let Some((me, peer)) = self.pair_mut(k, p) else {
            return Err(err(libc::EPIPE));
        };
        let mut n = 0;
        for b in bufs {
            let took = peer.rx.push(b);
            n += took;
            if took < b.len() {
                break;
            }
        }
        me.writer_blocked = n < total;
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.stats.bytes += n as u64;
        self.notify(p, READ);
        Ok(n)
    }

    /// [`LoopNet::send`] of urgent data: the last byte taken is urgent for the peer. As Linux's
    /// tcp_check_urg, an older urgent byte its reader sits at (unread, received) is dropped.
    pub fn send_urgent(&mut self, k: usize, bufs: &[&[u8]]) -> io::Result<usize> {
        let n = self.send(k, bufs)?;
        let peer = self.end(k).and_then(|e| e.peer);
        if let (true, Some(p)) = (n > 0, peer) {
            if let Some(e) = self.end_mut(p) {
                if e.urg.is_some_and(|u| u.at == e.rx_taken) && e.rx.len() > 1 {
                    let mut b = [0u8];
                    e.rx.pop(&mut b);
                    e.rx_taken += 1;
                }
                if !e.rx.is_empty() {
                    let at = e.rx_taken + e.rx.len() as u64 - 1;
                    let seq = e.urg.map_or(1, |u| u.seq.wrapping_add(1));
                    e.urg = Some(LoopUrg {
                        seq,
                        at,
                        seen: false,
                    });
                    self.notify(p, URGENT);
                }
            }
        }
        Ok(n)
    }

    /// The urgent byte the peer of end `k` sent last, until `recv` passed it.
    pub fn urgent_in(&mut self, k: usize) -> Option<super::UrgentIn> {
        let e = self.end_mut(k)?;
        let u = e.urg.as_mut().filter(|u| u.at >= e.rx_taken)?;
        u.seen = true;
        let ahead = u.at - e.rx_taken;
        Some(super::UrgentIn {
            seq: Some(u.seq),
            byte: usize::try_from(ahead).ok().and_then(|i| e.rx.byte(i)),
            ahead: i64::try_from(ahead).ok(),
            inline: false,
        })
    }

    /// Receives into `bufs`: the pipe's bytes, then end of stream or the reset's error.
    pub fn recv(&mut self, k: usize, bufs: &mut [&mut [u8]]) -> io::Result<usize> {
        let Some(e) = self.end_mut(k) else {
            return Err(err(libc::ENOTCONN));
        };
        // An urgent byte ahead: the receive stops before it, or skips it (the agent wrote it
        // into the host's stream itself), or waits while the agent has not seen it.
        let mut limit = usize::MAX;
        if let Some(u) = e.urg.filter(|u| u.at >= e.rx_taken) {
            let d = usize::try_from(u.at - e.rx_taken).unwrap_or(usize::MAX);
            if d == 0 {
                if !u.seen {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let mut b = [0u8];
                e.rx.pop(&mut b);
                e.rx_taken += 1;
            } else {
                limit = d;
            }
        }
        if !e.rx.is_empty() {
            let mut n = 0;
            for b in bufs.iter_mut() {
                let room = b.len().min(limit - n);
                let got = e.rx.pop(&mut b[..room]);
                n += got;
                if got < b.len() {
                    break;
                }
            }
            e.rx_taken += n as u64;
            if let Some(p) = e.peer {
                if self.end(p).is_some_and(|x| x.writer_blocked) {
                    if let Some(w) = self.end_mut(p) {
                        w.writer_blocked = false;
                    }
                    self.notify(p, WRITE);
                }
            }
            return Ok(n);
        }
        if e.dead {
            return match std::mem::take(&mut e.err) {
                0 => Ok(0),
                x => Err(err(x)),
            };
        }
        if e.rx_fin || e.rd_shut {
            return Ok(0);
        }
        Err(io::ErrorKind::WouldBlock.into())
    }

    /// `shutdown` of an end; `None` when `k` is not a loop connection.
    pub fn shutdown(&mut self, k: usize, how: i32) -> Option<io::Result<()>> {
        let e = self.end_mut(k)?;
        if e.dead {
            return Some(Err(err(libc::ENOTCONN)));
        }
        let rd = how == libc::SHUT_RD || how == libc::SHUT_RDWR;
        let wr = how == libc::SHUT_WR || how == libc::SHUT_RDWR;
        if !rd && !wr {
            return Some(Err(err(libc::EINVAL)));
        }
        let mut fin_to = None;
        if rd {
            e.rd_shut = true;
        }
        if wr && !e.wr_shut {
            e.wr_shut = true;
            fin_to = e.peer;
        }
        if rd {
            self.notify(k, READ);
        }
        if let Some(p) = fin_to {
            if let Some(pe) = self.end_mut(p) {
                pe.rx_fin = true;
            }
            self.notify(p, HUP);
        }
        Some(Ok(()))
    }

    /// Pending `SO_ERROR` of a loop end (cleared); `None` when `k` is not one.
    pub fn take_error(&mut self, k: usize) -> Option<i32> {
        self.end_mut(k).map(|e| std::mem::take(&mut e.err))
    }

    /// Releases `k`. A connection closed with unread bytes, or with `SO_LINGER {1, 0}`, resets
    /// its peer (Linux sends RST then); otherwise the peer reads the end of the stream.
    pub fn close(&mut self, k: usize, abort: bool) {
        let linger0 = self.entry(k).is_some_and(|e| e.linger0);
        if matches!(self.state(k), Some(State::Listening(_))) {
            self.unlisten(k);
        }
        let Some(e) = self.entries.get_mut(k).and_then(|e| e.take()) else {
            return;
        };
        self.free.push(k);
        let State::Conn(end) = e.state else {
            return;
        };
        // A server end still queued on a listener leaves the queue.
        if let Some(lk) = end.queued {
            if let Some(State::Listening(l)) = self.entry_mut(lk).map(|e| &mut e.state) {
                l.pending.retain(|&x| x != k);
            }
        }
        let Some(p) = end.peer else {
            return;
        };
        let reset = abort || linger0 || !end.rx.is_empty();
        let Some(pe) = self.end_mut(p) else {
            return;
        };
        pe.peer = None;
        if pe.dead {
            return;
        }
        if reset {
            pe.dead = true;
            pe.err = libc::ECONNRESET;
            self.notify(p, ALL);
        } else {
            pe.rx_fin = true;
            pe.peer_closed = true;
            self.notify(p, HUP);
        }
    }
}

/// Addresses of this host other than loopback, looked up at most once a second.
struct LocalAddrs {
    at: Option<Instant>,
    addrs: Vec<IpAddr>,
}

/// The loopback accelerator in front of a backend (see the module doc).
pub struct LoopBackend<B: Backend> {
    inner: B,
    net: LoopNet,
    enabled: bool,
    local: LocalAddrs,
    /// `TCP_MAXSEG` of a kernel connection between local addresses, per family (v4, v6),
    /// measured on first use.
    mss: [Option<u32>; 2],
}

/// A socket of [`LoopBackend`]: the inner backend's socket (for a loop end: the port
/// placeholder on the client side, an option holder on the server side) and our key.
pub struct LoopSock<S> {
    os: S,
    key: usize,
}

impl<B: Backend> LoopBackend<B> {
    pub fn new(inner: B, enabled: bool) -> Self {
        LoopBackend {
            inner,
            net: LoopNet::default(),
            enabled,
            local: LocalAddrs {
                at: None,
                addrs: Vec::new(),
            },
            mss: [None; 2],
        }
    }

    /// The MSS a kernel connection to `ip` would have (536, the kernel's default, if it cannot be
    /// measured).
    fn local_mss(&mut self, ip: std::net::IpAddr) -> u32 {
        let i = usize::from(ip.is_ipv6());
        *self.mss[i].get_or_insert_with(|| {
            crate::sys::kernel_local_mss(ip).unwrap_or_else(|e| {
                tracing::debug!("measuring the local MSS: {e}");
                536
            })
        })
    }

    fn wrap(&mut self, os: B::Sock) -> LoopSock<B::Sock> {
        LoopSock {
            os,
            key: self.net.add_plain(),
        }
    }

    /// Is `ip` an address of this host (the kernel backend) or of the user stack?
    fn is_local(&mut self, ip: IpAddr) -> bool {
        if ip.is_loopback() {
            return self.inner.owns_loopback();
        }
        if let Some(own) = self.inner.own_ip() {
            return own == ip;
        }
        let stale = self
            .local
            .at
            .map_or(true, |t| t.elapsed() > Duration::from_secs(1));
        if stale {
            self.local.addrs = crate::sys::local_addrs().unwrap_or_default();
            self.local.at = Some(Instant::now());
        }
        self.local.addrs.contains(&ip)
    }

    /// A connect that a listener of ours answers: `None` leaves it to the inner backend.
    fn loop_connect(&mut self, s: &LoopSock<B::Sock>, a: &SocketAddr) -> Option<()> {
        let dst = SocketAddr::new(canon(a.ip()), a.port());
        let lk = self.net.find_listener(dst)?;
        if !self.is_local(dst.ip()) {
            return None;
        }
        let laddr = self.net.listen_addr(lk)?;
        let ldomain = if laddr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // The client's port: the one it bound, else an ephemeral one the kernel (or user
        // stack) reserves for us by binding the client's own socket to port 0.
        let bound = self.inner.local_addr(&s.os).ok().filter(|l| l.port() != 0);
        let local = match bound {
            Some(l) => l,
            None => {
                self.inner.bind(&s.os, &SocketAddr::new(a.ip(), 0)).ok()?;
                self.inner.local_addr(&s.os).ok()?
            }
        };
        let local = if local.ip().is_unspecified() {
            SocketAddr::new(a.ip(), local.port())
        } else {
            local
        };
        let server_local = in_family(dst, ldomain);
        let server_remote = in_family(local, ldomain);
        self.net
            .connect(s.key, lk, (local, *a), (server_local, server_remote))
            .map(|_| ())
    }
}

impl<B: Backend> Backend for LoopBackend<B> {
    type Sock = LoopSock<B::Sock>;

    fn socket(&mut self, domain: i32) -> io::Result<Self::Sock> {
        let os = self.inner.socket(domain)?;
        Ok(self.wrap(os))
    }

    fn bind(&mut self, s: &Self::Sock, a: &SocketAddr) -> io::Result<()> {
        if !self.net.is_plain(s.key) {
            return Err(err(libc::EINVAL));
        }
        self.inner.bind(&s.os, a)
    }

    fn listen(&mut self, s: &Self::Sock, backlog: i32) -> io::Result<()> {
        if matches!(self.net.state(s.key), Some(State::Conn(_))) {
            return Err(err(libc::EINVAL));
        }
        self.inner.listen(&s.os, backlog)?;
        let addr = self.inner.local_addr(&s.os)?;
        let mut v6only = false;
        if addr.is_ipv6() {
            let mut b = [0u8; 4];
            if let Ok(4) =
                self.inner
                    .getsockopt(&s.os, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, &mut b)
            {
                v6only = i32::from_ne_bytes(b) != 0;
            }
        }
        self.net.listen(s.key, addr, v6only, backlog);
        Ok(())
    }

    fn accept(&mut self, s: &Self::Sock) -> io::Result<(Self::Sock, SocketAddr)> {
        if let Some(State::Listening(l)) = self.net.state(s.key) {
            if !l.pending.is_empty() {
                let domain = if l.addr.is_ipv4() {
                    libc::AF_INET
                } else {
                    libc::AF_INET6
                };
                // The option holder first: when it fails the connection stays queued.
                let os = self.inner.socket(domain)?;
                if let Some((key, peer)) = self.net.accept(s.key) {
                    return Ok((LoopSock { os, key }, peer));
                }
                self.inner.close(os);
            }
        }
        let (os, peer) = self.inner.accept(&s.os)?;
        Ok((self.wrap(os), peer))
    }

    fn connect(&mut self, s: &Self::Sock, a: &SocketAddr) -> io::Result<()> {
        if matches!(self.net.state(s.key), Some(State::Conn(_))) {
            return self.net.reconnect(s.key);
        }
        if self.enabled && self.net.is_plain(s.key) && self.loop_connect(s, a).is_some() {
            // As on Linux loopback: a non-blocking connect says EINPROGRESS and the socket is
            // writable at once (the report is queued already).
            return Err(err(libc::EINPROGRESS));
        }
        self.inner.connect(&s.os, a)
    }

    fn connect_state(&mut self, s: &Self::Sock) -> ConnectState {
        match self.net.state(s.key) {
            Some(State::Conn(_)) => ConnectState::Connected,
            _ => self.inner.connect_state(&s.os),
        }
    }

    fn take_error(&mut self, s: &Self::Sock) -> i32 {
        match self.net.take_error(s.key) {
            Some(e) => e,
            None => self.inner.take_error(&s.os),
        }
    }

    fn shutdown(&mut self, s: &Self::Sock, how: i32) -> io::Result<()> {
        if let Some(r) = self.net.shutdown(s.key, how) {
            return r;
        }
        self.inner.shutdown(&s.os, how)?;
        if how != libc::SHUT_WR {
            // A listener shut for reading stops listening.
            self.net.unlisten(s.key);
        }
        Ok(())
    }

    fn local_addr(&mut self, s: &Self::Sock) -> io::Result<SocketAddr> {
        match self.net.end(s.key) {
            Some(e) => Ok(e.local),
            None => self.inner.local_addr(&s.os),
        }
    }

    fn peer_addr(&mut self, s: &Self::Sock) -> io::Result<SocketAddr> {
        match self.net.end(s.key) {
            Some(e) if e.dead => Err(err(libc::ENOTCONN)),
            Some(e) => Ok(e.remote),
            None => self.inner.peer_addr(&s.os),
        }
    }

    fn setsockopt(&mut self, s: &Self::Sock, level: i32, name: i32, val: &[u8]) -> io::Result<()> {
        self.inner.setsockopt(&s.os, level, name, val)?;
        if level == libc::SOL_SOCKET && name == libc::SO_LINGER && val.len() >= 8 {
            let on = i32::from_ne_bytes([val[0], val[1], val[2], val[3]]) != 0;
            let secs = i32::from_ne_bytes([val[4], val[5], val[6], val[7]]);
            self.net.set_linger0(s.key, on && secs == 0);
        }
        Ok(())
    }

    fn getsockopt(
        &mut self,
        s: &Self::Sock,
        level: i32,
        name: i32,
        buf: &mut [u8],
    ) -> io::Result<usize> {
        let n = self.inner.getsockopt(&s.os, level, name, buf)?;
        if level == libc::IPPROTO_TCP && name == libc::TCP_MAXSEG && n == 4 {
            if let Some(ip) = self.net.end(s.key).map(|e| e.local.ip()) {
                // The option holder is not connected (it reports the default 536, or the
                // user's TCP_MAXSEG): a connected kernel socket reports its path's MSS, capped
                // by the user's value.
                let user = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
                let path = self.local_mss(ip);
                let v = if user == 536 { path } else { user.min(path) };
                buf[..4].copy_from_slice(&v.to_ne_bytes());
            }
        }
        if let Some(e) = self.net.end(s.key) {
            if level == libc::IPPROTO_TCP && name == libc::TCP_INFO && n > 0 {
                // The option holder is not connected: report the loop connection's state.
                buf[0] = match (e.dead, e.rx_fin) {
                    (true, _) => 7,     // TCP_CLOSE
                    (false, true) => 8, // TCP_CLOSE_WAIT
                    _ => 1,             // TCP_ESTABLISHED
                };
            }
        }
        Ok(n)
    }

    unsafe fn recv(&mut self, s: &Self::Sock, bufs: &[IoBuf]) -> io::Result<usize> {
        if self.net.end(s.key).is_none() {
            // SAFETY: forwarded from the caller's contract.
            return unsafe { self.inner.recv(&s.os, bufs) };
        }
        // SAFETY: forwarded from the caller's contract (writable, unaliased buffers).
        let mut v = unsafe { super::iov_mut(bufs) };
        self.net.recv(s.key, &mut v)
    }

    fn recv_more(&self, s: &Self::Sock) -> bool {
        // A loop connection's end is asked again (it is cheap); others are the inner backend's.
        self.net.end(s.key).is_some() || self.inner.recv_more(&s.os)
    }

    unsafe fn send(&mut self, s: &Self::Sock, bufs: &[IoBuf]) -> io::Result<usize> {
        if self.net.end(s.key).is_none() {
            // SAFETY: forwarded from the caller's contract.
            return unsafe { self.inner.send(&s.os, bufs) };
        }
        // SAFETY: forwarded from the caller's contract (readable buffers).
        let v = unsafe { super::iov_ref(bufs) };
        self.net.send(s.key, &v)
    }

    unsafe fn send_more(&mut self, s: &Self::Sock, bufs: &[IoBuf]) -> io::Result<usize> {
        if self.net.end(s.key).is_none() {
            // SAFETY: forwarded from the caller's contract.
            return unsafe { self.inner.send_more(&s.os, bufs) };
        }
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.send(s, bufs) }
    }

    fn push(&mut self, s: &Self::Sock) {
        if self.net.end(s.key).is_none() {
            self.inner.push(&s.os);
        }
    }

    fn has_unread(&mut self, s: &Self::Sock) -> bool {
        if self.net.end(s.key).is_none() {
            return self.inner.has_unread(&s.os);
        }
        false
    }

    unsafe fn send_urgent(&mut self, s: &Self::Sock, bufs: &[IoBuf]) -> io::Result<usize> {
        if self.net.end(s.key).is_none() {
            // SAFETY: forwarded from the caller's contract.
            return unsafe { self.inner.send_urgent(&s.os, bufs) };
        }
        // SAFETY: forwarded from the caller's contract (readable buffers).
        let v = unsafe { super::iov_ref(bufs) };
        self.net.send_urgent(s.key, &v)
    }

    fn urgent_in(&mut self, s: &Self::Sock) -> io::Result<Option<super::UrgentIn>> {
        if self.net.end(s.key).is_none() {
            return self.inner.urgent_in(&s.os);
        }
        Ok(self.net.urgent_in(s.key))
    }

    fn urgent_unpolled(&self) -> bool {
        self.inner.urgent_unpolled()
    }

    fn urgent_hint(&self, s: &Self::Sock) -> bool {
        match self.net.end(s.key) {
            Some(e) => e.urg.is_some(),
            None => self.inner.urgent_hint(&s.os),
        }
    }

    fn signal_owner(&mut self, pid: i32, owner: shm_proto::Owner) {
        self.inner.signal_owner(pid, owner);
    }

    fn file_refs(&self) -> bool {
        self.inner.file_refs()
    }

    fn urgent_data(&self) -> bool {
        // Loop connections carry it themselves; the others are the inner backend's.
        self.inner.urgent_data()
    }

    fn send_file(
        &mut self,
        s: &Self::Sock,
        file: RawFd,
        offset: u64,
        len: usize,
    ) -> io::Result<usize> {
        if self.net.end(s.key).is_none() {
            return self.inner.send_file(&s.os, file, offset, len);
        }
        // A loop connection: the file's bytes go to the peer's side as a send's would.
        let net = &mut self.net;
        super::send_file_chunk(file, offset, len, |b| net.send(s.key, &[b]))
    }

    fn can_lend_tx(&self, s: &Self::Sock) -> bool {
        self.net.end(s.key).is_none() && self.inner.can_lend_tx(&s.os)
    }

    unsafe fn lend_tx(
        &mut self,
        s: &Self::Sock,
        stream: shm_proto::Stream,
        at: u32,
    ) -> io::Result<()> {
        if self.net.end(s.key).is_some() {
            return Err(err(libc::EOPNOTSUPP));
        }
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.inner.lend_tx(&s.os, stream, at) }
    }

    fn send_lent(&mut self, s: &Self::Sock, n: usize) -> io::Result<usize> {
        self.inner.send_lent(&s.os, n)
    }

    fn take_acked(&mut self, s: &Self::Sock) -> Option<u32> {
        self.inner.take_acked(&s.os)
    }

    fn loan_outgrown(&self, s: &Self::Sock) -> bool {
        self.inner.loan_outgrown(&s.os)
    }

    fn reclaim_tx(&mut self, s: &Self::Sock) -> u32 {
        self.inner.reclaim_tx(&s.os)
    }

    fn register(&mut self, s: &Self::Sock, token: u64) -> io::Result<()> {
        self.net.register(s.key, token);
        if self.net.end(s.key).is_some() {
            // A loop end's OS socket never connects: its readiness would only mislead.
            return Ok(());
        }
        self.inner.register(&s.os, token)
    }

    fn close(&mut self, s: Self::Sock) {
        self.net.close(s.key, false);
        self.inner.close(s.os);
    }

    fn poll(&mut self, out: &mut Vec<SockEvent>) -> io::Result<()> {
        self.inner.poll(out)?;
        self.net.poll(out);
        Ok(())
    }

    fn poll_into(&mut self, out: &mut Vec<SockEvent>, sink: &mut dyn RxSink) -> io::Result<()> {
        self.inner.poll_into(out, sink)?;
        self.net.poll(out);
        Ok(())
    }

    fn wait_fd(&self) -> std::os::fd::RawFd {
        self.inner.wait_fd()
    }

    fn has_local_events(&self) -> bool {
        self.net.has_events() || self.inner.has_local_events()
    }

    fn poll_local(&mut self, out: &mut Vec<SockEvent>) {
        self.inner.poll_local(out);
        self.net.poll(out);
    }

    fn rx_pending(&self) -> Option<bool> {
        self.inner.rx_pending()
    }

    fn poll_is_wait(&self) -> bool {
        // Its own part of a poll reads memory only.
        self.inner.poll_is_wait()
    }

    fn loop_stats(&self) -> LoopStats {
        let mut s = self.net.stats;
        s.enabled = self.enabled;
        s
    }

    fn owns_loopback(&self) -> bool {
        self.inner.owns_loopback()
    }

    fn engine_stats(&self) -> super::EngineStats {
        self.inner.engine_stats()
    }

    fn own_ip(&self) -> Option<IpAddr> {
        self.inner.own_ip()
    }

    fn random_u64(&mut self) -> io::Result<u64> {
        self.inner.random_u64()
    }

    fn host_file(&mut self, pid: i32, fd: i32, dev: u64, ino: u64) -> io::Result<OwnedFd> {
        self.inner.host_file(pid, fd, dev, ino)
    }

    fn cap_eff(&self, pid: i32) -> io::Result<u64> {
        self.inner.cap_eff(pid)
    }

    fn parent_pid(&self, pid: i32) -> io::Result<i32> {
        self.inner.parent_pid(pid)
    }

    fn unprivileged_port_start(&self) -> u32 {
        self.inner.unprivileged_port_start()
    }

    fn available_congestion_controls(&self) -> String {
        self.inner.available_congestion_controls()
    }

    fn allowed_congestion_controls(&self) -> String {
        self.inner.allowed_congestion_controls()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A listener on 127.0.0.1:80 and a connected, accepted pair (client, server).
    fn pair(net: &mut LoopNet) -> (usize, usize, usize) {
        let l = net.add_plain();
        net.listen(l, sa("127.0.0.1:80"), false, 8);
        net.register(l, 100);
        let c = net.add_plain();
        net.register(c, 200);
        let lk = net.find_listener(sa("127.0.0.1:80")).unwrap();
        assert_eq!(lk, l);
        let s = net
            .connect(
                c,
                l,
                (sa("127.0.0.1:5000"), sa("127.0.0.1:80")),
                (sa("127.0.0.1:80"), sa("127.0.0.1:5000")),
            )
            .unwrap();
        let (a, peer) = net.accept(l).unwrap();
        assert_eq!((a, peer), (s, sa("127.0.0.1:5000")));
        net.register(s, 300);
        (l, c, s)
    }

    fn events(net: &mut LoopNet) -> Vec<(u64, Readiness)> {
        let mut v = Vec::new();
        net.poll(&mut v);
        v.into_iter().map(|e| (e.token, e.ready)).collect()
    }

    fn recv(net: &mut LoopNet, k: usize, n: usize) -> io::Result<Vec<u8>> {
        let mut b = vec![0u8; n];
        let got = net.recv(k, &mut [&mut b[..]])?;
        b.truncate(got);
        Ok(b)
    }

    fn errno(r: io::Result<impl std::fmt::Debug>) -> i32 {
        r.unwrap_err().raw_os_error().unwrap_or(-1)
    }

    #[test]
    fn pipe_wraps_and_caps() {
        let mut p = Pipe::default();
        assert_eq!(p.push(&[1, 2, 3]), 3);
        let mut b = [0u8; 2];
        assert_eq!(p.pop(&mut b), 2);
        assert_eq!(b, [1, 2]);
        let big = vec![7u8; PIPE_CAP + 10];
        assert_eq!(p.push(&big), PIPE_CAP - 1);
        assert_eq!(p.space(), 0);
        let mut out = vec![0u8; PIPE_CAP];
        assert_eq!(p.pop(&mut out), PIPE_CAP);
        assert_eq!(out[0], 3);
        assert!(out[1..].iter().all(|&x| x == 7));
    }

    #[test]
    fn connect_reports_listener_and_client() {
        let mut net = LoopNet::default();
        let l = net.add_plain();
        net.listen(l, sa("0.0.0.0:80"), false, 1);
        net.register(l, 1);
        let c = net.add_plain();
        net.register(c, 2);
        assert!(events(&mut net).is_empty());
        // Wildcard v4 listener reached by 127.0.0.1 and by a v4-mapped destination.
        assert_eq!(net.find_listener(sa("127.0.0.1:80")), Some(l));
        assert_eq!(net.find_listener(sa("[::ffff:127.0.0.1]:80")), Some(l));
        assert_eq!(net.find_listener(sa("[::1]:80")), None);
        assert_eq!(net.find_listener(sa("127.0.0.1:81")), None);
        let a = (sa("127.0.0.1:5000"), sa("127.0.0.1:80"));
        net.connect(c, l, a, (a.1, a.0)).unwrap();
        let ev = events(&mut net);
        assert!(ev.contains(&(1, READ)));
        assert!(ev.contains(&(2, WRITE)));
        // Backlog 1 admits 2 (as Linux); the third goes elsewhere.
        let c2 = net.add_plain();
        assert!(net.connect(c2, l, a, (a.1, a.0)).is_some());
        assert_eq!(net.find_listener(sa("127.0.0.1:80")), None);
    }

    #[test]
    fn exact_listener_before_wildcard_and_v6only() {
        let mut net = LoopNet::default();
        let w = net.add_plain();
        net.listen(w, sa("[::]:80"), true, 4);
        assert_eq!(net.find_listener(sa("127.0.0.1:80")), None);
        assert_eq!(net.find_listener(sa("[::1]:80")), Some(w));
        let e = net.add_plain();
        net.listen(e, sa("[::1]:80"), false, 4);
        assert_eq!(net.find_listener(sa("[::1]:80")), Some(e));
        net.unlisten(e);
        assert_eq!(net.find_listener(sa("[::1]:80")), Some(w));
        assert_eq!(
            in_family(sa("127.0.0.1:9"), libc::AF_INET6),
            sa("[::ffff:127.0.0.1]:9")
        );
        assert_eq!(
            in_family(sa("[::ffff:127.0.0.1]:9"), libc::AF_INET),
            sa("127.0.0.1:9")
        );
    }

    #[test]
    fn data_both_ways_with_readiness() {
        let mut net = LoopNet::default();
        let (_, c, s) = pair(&mut net);
        events(&mut net);
        assert_eq!(net.send(c, &[b"hel", b"lo"]).unwrap(), 5);
        assert_eq!(events(&mut net), vec![(300, READ)]);
        assert_eq!(recv(&mut net, s, 3).unwrap(), b"hel");
        assert_eq!(recv(&mut net, s, 10).unwrap(), b"lo");
        assert_eq!(
            net.recv(s, &mut [&mut [0u8; 4][..]]).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert_eq!(net.send(s, &[b"back"]).unwrap(), 4);
        assert_eq!(recv(&mut net, c, 10).unwrap(), b"back");
        assert_eq!(net.stats.bytes, 9);
        assert_eq!(net.stats.connections, 1);
    }

    #[test]
    fn flow_control_wakes_the_writer() {
        let mut net = LoopNet::default();
        let (_, c, s) = pair(&mut net);
        events(&mut net);
        let chunk = vec![1u8; 100_000];
        let mut sent = 0;
        loop {
            match net.send(c, &[&chunk[..]]) {
                Ok(n) => sent += n,
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                    break;
                }
            }
        }
        assert_eq!(sent, PIPE_CAP);
        events(&mut net);
        assert_eq!(recv(&mut net, s, 1000).unwrap().len(), 1000);
        assert_eq!(events(&mut net), vec![(200, WRITE)]);
        assert_eq!(net.send(c, &[&chunk[..]]).unwrap(), 1000);
        // No wake-up while the writer is not blocked.
        assert_eq!(
            net.send(c, &[&chunk[..]]).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let mut got = 0;
        while let Ok(v) = recv(&mut net, s, 65536) {
            if v.is_empty() {
                break;
            }
            got += v.len();
        }
        assert_eq!(got, PIPE_CAP);
    }

    #[test]
    fn shutdown_write_is_fin_after_data() {
        let mut net = LoopNet::default();
        let (_, c, s) = pair(&mut net);
        net.send(c, &[b"last"]).unwrap();
        net.shutdown(c, libc::SHUT_WR).unwrap().unwrap();
        events(&mut net);
        assert_eq!(errno(net.send(c, &[b"x"])), libc::EPIPE);
        assert_eq!(recv(&mut net, s, 10).unwrap(), b"last");
        assert_eq!(recv(&mut net, s, 10).unwrap(), b"");
        // The other direction still works.
        net.send(s, &[b"reply"]).unwrap();
        assert_eq!(recv(&mut net, c, 10).unwrap(), b"reply");
        // SHUT_RD: reads end at once.
        net.shutdown(s, libc::SHUT_RD).unwrap().unwrap();
        assert_eq!(recv(&mut net, s, 10).unwrap(), b"");
    }

    #[test]
    fn close_is_fin_then_send_resets_with_epipe() {
        let mut net = LoopNet::default();
        let (_, c, s) = pair(&mut net);
        net.send(c, &[b"bye"]).unwrap();
        events(&mut net);
        net.close(c, false);
        assert_eq!(events(&mut net), vec![(300, HUP)]);
        assert_eq!(recv(&mut net, s, 10).unwrap(), b"bye");
        assert_eq!(recv(&mut net, s, 10).unwrap(), b"");
        // Writing to the closed peer: accepted, then the reset (CLOSE_WAIT: EPIPE).
        assert_eq!(net.send(s, &[b"x"]).unwrap(), 1);
        assert_eq!(events(&mut net), vec![(300, ALL)]);
        assert_eq!(net.take_error(s), Some(libc::EPIPE));
        assert_eq!(net.take_error(s), Some(0));
        assert_eq!(errno(net.send(s, &[b"x"])), libc::EPIPE);
    }

    #[test]
    fn close_with_unread_data_resets_peer() {
        let mut net = LoopNet::default();
        let (_, c, s) = pair(&mut net);
        net.send(s, &[b"unread"]).unwrap();
        net.send(c, &[b"for-s"]).unwrap();
        events(&mut net);
        net.close(c, false);
        assert_eq!(events(&mut net), vec![(300, ALL)]);
        // What had arrived is still readable, then ECONNRESET once, then end of stream.
        assert_eq!(recv(&mut net, s, 10).unwrap(), b"for-s");
        assert_eq!(errno(recv(&mut net, s, 10)), libc::ECONNRESET);
        assert_eq!(recv(&mut net, s, 10).unwrap(), b"");
        assert_eq!(
            errno(net.shutdown(s, libc::SHUT_WR).unwrap()),
            libc::ENOTCONN
        );
    }

    #[test]
    fn linger_zero_and_abort_reset() {
        let mut net = LoopNet::default();
        let (l, c, s) = pair(&mut net);
        net.set_linger0(c, true);
        net.close(c, false);
        assert_eq!(net.take_error(s), Some(libc::ECONNRESET));
        net.close(l, false);
        let (_, c, s) = pair(&mut net);
        net.close(s, true);
        assert_eq!(errno(recv(&mut net, c, 1)), libc::ECONNRESET);
    }

    #[test]
    fn listener_close_resets_queued_connections() {
        let mut net = LoopNet::default();
        let l = net.add_plain();
        net.listen(l, sa("127.0.0.1:80"), false, 8);
        let c = net.add_plain();
        net.register(c, 7);
        let a = (sa("127.0.0.1:5000"), sa("127.0.0.1:80"));
        let s = net.connect(c, l, a, (a.1, a.0)).unwrap();
        // Bytes sent before accept wait for the server.
        net.send(c, &[b"early"]).unwrap();
        assert_eq!(net.end(s).unwrap().rx.len(), 5);
        events(&mut net);
        net.close(l, false);
        assert!(net.end(s).is_none());
        assert_eq!(events(&mut net), vec![(7, ALL)]);
        assert_eq!(net.take_error(c), Some(libc::ECONNRESET));
        assert_eq!(net.find_listener(sa("127.0.0.1:80")), None);
    }

    #[test]
    fn closed_keys_are_reused_without_stale_links() {
        let mut net = LoopNet::default();
        let (l, c, s) = pair(&mut net);
        net.close(s, false);
        net.close(c, false);
        let again = net.add_plain();
        assert!(again == c || again == s);
        assert!(net.is_plain(again));
        net.close(l, false);
        assert!(net.listeners.is_empty());
        // Unknown keys are harmless.
        assert_eq!(errno(net.send(999, &[b"x"])), libc::ENOTCONN);
        net.close(999, true);
        assert!(net.shutdown(999, libc::SHUT_WR).is_none());
    }

    fn iov(b: &[u8]) -> IoBuf {
        IoBuf {
            iov_base: b.as_ptr().cast_mut().cast(),
            iov_len: b.len(),
        }
    }

    /// The wrapper over the real kernel backend: listener, connect, accept, addresses, the
    /// reserved client port, data, and `--loopback off` leaving everything to the kernel.
    #[test]
    fn wrapper_over_the_kernel_backend() {
        use crate::backend::kernel::KernelBackend;
        let mut b = LoopBackend::new(KernelBackend::new().unwrap(), true);
        let l = b.socket(libc::AF_INET).unwrap();
        b.bind(&l, &sa("127.0.0.1:0")).unwrap();
        b.listen(&l, 8).unwrap();
        b.register(&l, 1).unwrap();
        let laddr = b.local_addr(&l).unwrap();
        let c = b.socket(libc::AF_INET).unwrap();
        assert_eq!(errno(b.connect(&c, &laddr)), libc::EINPROGRESS);
        b.register(&c, 2).unwrap();
        assert!(b.has_local_events());
        let mut ev = Vec::new();
        b.poll_local(&mut ev);
        let toks: Vec<u64> = ev.iter().map(|e| e.token).collect();
        assert!(toks.contains(&1) && toks.contains(&2));
        assert_eq!(b.connect_state(&c), ConnectState::Connected);
        let (s, peer) = b.accept(&l).unwrap();
        let caddr = b.local_addr(&c).unwrap();
        assert_eq!(peer, caddr);
        assert_eq!(b.peer_addr(&c).unwrap(), laddr);
        assert_eq!(b.local_addr(&s).unwrap(), laddr);
        assert_eq!(b.peer_addr(&s).unwrap(), caddr);
        // The client's port is held in the kernel for the connection's life.
        let other = crate::sys::tcp_socket(libc::AF_INET).unwrap();
        use std::os::fd::AsRawFd;
        assert_eq!(
            errno(crate::sys::bind(other.as_raw_fd(), &caddr)),
            libc::EADDRINUSE
        );
        // SAFETY: the buffers are live locals for the duration of the calls.
        assert_eq!(unsafe { b.send(&c, &[iov(b"ping")]) }.unwrap(), 4);
        let mut buf = [0u8; 8];
        // SAFETY: as above; `buf` is not otherwise borrowed during the call.
        let n = unsafe {
            b.recv(
                &s,
                &[IoBuf {
                    iov_base: buf.as_mut_ptr().cast(),
                    iov_len: buf.len(),
                }],
            )
        }
        .unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(b.loop_stats().connections, 1);
        b.close(c);
        b.close(s);
        b.close(l);

        // Off: the kernel connects, nothing local happens.
        let mut b = LoopBackend::new(KernelBackend::new().unwrap(), false);
        let l = b.socket(libc::AF_INET).unwrap();
        b.bind(&l, &sa("127.0.0.1:0")).unwrap();
        b.listen(&l, 8).unwrap();
        let laddr = b.local_addr(&l).unwrap();
        let c = b.socket(libc::AF_INET).unwrap();
        assert_eq!(errno(b.connect(&c, &laddr)), libc::EINPROGRESS);
        assert!(!b.has_local_events());
        assert_eq!(b.loop_stats(), LoopStats::default());
        b.close(c);
        b.close(l);
    }
}
