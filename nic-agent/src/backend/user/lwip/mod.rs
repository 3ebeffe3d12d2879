//! The third user-space engine: lwIP 2.1.3 as Debian packages it (`liblwip`, crate `lwip-sys`,
//! cargo feature `lwip`), its raw/callback TCP API driven single-threaded from the agent's loop
//! over the same frame [`Device`]s as the other engines (`--engine lwip`).
//!
//! ```text
//!  agent epoll ──► wait_fd (epoll) ◄── device rx fd   (frames waiting)
//!                                  ◄── kick eventfd   (a call queued work)
//!                                  ◄── timerfd        (lwIP's next timer; polled devices)
//!  poll(): rx burst → (offload fix-ups) → lwIP ethernet_input → sys_check_timeouts
//!          → callbacks' events → tcp_output of written connections → tx burst → readiness
//! ```
//!
//! All unsafe code is in `sys.rs`; this file is the logic: BSD socket lifetimes over lwIP's
//! pcbs, the accept queue (lwIP is built without a listen backlog: SYNs to a listener whose
//! queue is full are dropped before lwIP sees them, as Linux drops them), Linux errnos, socket
//! options and edge readiness. Limits of the packaged build (64 KiB window, no SACK, no
//! timestamps, no IPv6 address here): docs/engines.md.

mod sys;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use lwip_sys as l;
use snstack_tcp::RxCsum;

use super::device::{self, Device, PortStats};
use super::engine::{EngineConfig, UserSock};
use super::offload;
use super::sockopts::{self, SockOpts};
use crate::backend::{Backend, ConnectState, EngineStats, IoBuf, Readiness, SockEvent};
use sys::{Event, Lwip, Pcb, RxQueue};

/// Frames taken from the device per burst, and bursts per poll.
const BURST: usize = 64;
const BURSTS: usize = 4;
/// Frames lwIP sent that the device has not taken yet, at most (TCP retransmits the rest).
const TX_QUEUE_MAX: usize = 4096;
/// A device without a descriptor (DPDK) is polled this often while traffic flows...
const BUSY_POLL: Duration = Duration::from_micros(50);
/// ...and this often after `IDLE_AFTER` without frames.
const IDLE_POLL: Duration = Duration::from_millis(2);
const IDLE_AFTER: Duration = Duration::from_millis(20);

fn err(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// The Linux errno for an lwIP `err_t`. `connecting`: the error ended an active open (a reset
/// then means the port is closed). lwIP reports `ERR_ABRT` when its own timers give up (SYN or
/// data retransmissions, keepalive), since the engine never aborts a pcb that still has
/// callbacks.
pub fn errno_of(e: i8, connecting: bool) -> i32 {
    match e {
        l::ERR_OK => 0,
        l::ERR_RST if connecting => libc::ECONNREFUSED,
        l::ERR_RST => libc::ECONNRESET,
        l::ERR_CLSD => libc::EPIPE,
        l::ERR_ABRT | l::ERR_TIMEOUT => libc::ETIMEDOUT,
        l::ERR_MEM | l::ERR_BUF => libc::ENOBUFS,
        l::ERR_RTE => libc::ENETUNREACH,
        l::ERR_USE => libc::EADDRINUSE,
        l::ERR_ALREADY => libc::EALREADY,
        l::ERR_ISCONN => libc::EISCONN,
        l::ERR_CONN => libc::ENOTCONN,
        l::ERR_IF => libc::ENETDOWN,
        l::ERR_INPROGRESS => libc::EINPROGRESS,
        l::ERR_WOULDBLOCK => libc::EAGAIN,
        l::ERR_VAL | l::ERR_ARG => libc::EINVAL,
        _ => libc::EIO,
    }
}

/// The socket error for an lwIP error callback (the connection is gone). As Linux's
/// `tcp_reset`: a reset while connecting is `ECONNREFUSED`, in CLOSE-WAIT (the peer's FIN came,
/// ours did not go) `EPIPE`, else `ECONNRESET`. `ERR_CLSD` is a normal end (our LAST-ACK was
/// acknowledged after `shutdown(SHUT_WR)`): no error.
fn gone_errno(e: i8, connecting: bool, close_wait: bool) -> i32 {
    match e {
        l::ERR_CLSD => 0,
        l::ERR_RST if close_wait && !connecting => libc::EPIPE,
        e => errno_of(e, connecting),
    }
}

/// The IPv4 address of a socket address (v4, or v4-mapped v6); `None` for real IPv6.
fn v4_of(a: &SocketAddr) -> Option<Ipv4Addr> {
    match a {
        SocketAddr::V4(a) => Some(*a.ip()),
        SocketAddr::V6(a) if a.ip().is_unspecified() => Some(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped(),
    }
}

/// An IPv4 endpoint as a socket address of `domain` (v4-mapped for AF_INET6).
fn sockaddr(domain: i32, ip: u32, port: u16) -> SocketAddr {
    let ip = Ipv4Addr::from(ip);
    if domain == libc::AF_INET6 {
        SocketAddr::V6(SocketAddrV6::new(ip.to_ipv6_mapped(), port, 0, 0))
    } else {
        SocketAddr::V4(SocketAddrV4::new(ip, port))
    }
}

/// What the application may do with a connection now (pure: tested below).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ConnView {
    connecting: bool,
    /// lwIP no longer holds the connection for us (reset, timed out, or its FIN exchange done).
    gone: bool,
    rx_len: usize,
    fin: bool,
    shut_rd: bool,
    shut_wr: bool,
    sndbuf: u32,
    err: i32,
}

fn readiness(v: &ConnView) -> Readiness {
    if v.connecting && !v.gone && v.err == 0 {
        return Readiness::default();
    }
    Readiness {
        readable: v.rx_len > 0 || v.fin || v.shut_rd || v.gone || v.err != 0,
        writable: v.sndbuf > 0 || v.shut_wr || v.gone || v.err != 0,
        hup: v.fin || v.gone,
        error: v.err != 0,
        urgent: false,
    }
}

/// A TCP frame whose checksum field holds exactly the pseudo-header sum (what a sender that
/// left the checksum to offload puts there) rather than a valid checksum. Devices that carry no
/// checksum state (AF_XDP, DPDK's `net_af_packet`) hand such frames over from a veth peer with
/// tx-checksumming on; lwIP verifies every checksum, so the engine completes them first, as the
/// native engine accepts them (`Device::rx_csum_may_be_partial`).
fn pseudo_only_csum(f: &[u8]) -> bool {
    let Some(p) = offload::l4(f) else {
        return false;
    };
    if p.proto != 6 || p.end < p.off + 20 {
        return false;
    }
    let at = p.off + 16;
    let field = u16::from_be_bytes([f[at], f[at + 1]]);
    let pseudo = offload::pseudo_sum(f, &p, Some(p.end - p.off));
    let full = offload::sum_bytes(u32::from(pseudo), &f[p.off..p.end]) as u16;
    full != 0xffff && field == pseudo
}

/// An IPv4 frame claiming to come from our own address or from 127/8 (Linux drops such
/// "martians" too). lwIP must never see one: its answer would go to its own address, which
/// Debian's build (`LWIP_NETIF_LOOPBACK` with the loop queue served through `tcpip_thread`)
/// hands to a mailbox that does not exist here, and lwIP aborts the process.
fn martian_source(f: &[u8], own: Ipv4Addr) -> bool {
    if f.get(12..14) != Some(&[0x08, 0x00][..]) {
        return false;
    }
    let Some(src) = f.get(26..30) else {
        return false;
    };
    let src = Ipv4Addr::new(src[0], src[1], src[2], src[3]);
    src == own || src.is_loopback()
}

/// Whether a received frame may go to lwIP: ARP, and IPv4 not from a martian source. The engine
/// is IPv4-only, and Debian's lwIP has IPv6 (with forwarding, SLAAC and MLD) compiled in: IPv6
/// frames are dropped rather than left to code paths the engine never configures.
fn admit(f: &[u8], own: Ipv4Addr) -> bool {
    match f.get(12..14) {
        Some([0x08, 0x06]) => true,
        Some([0x08, 0x00]) => !martian_source(f, own),
        _ => false,
    }
}

/// The accept queue's capacity for a `listen(backlog)` (as the smoltcp engine: 16 to 4096).
fn accept_cap(backlog: i32) -> usize {
    if backlog < 0 {
        4096
    } else {
        (backlog as usize).clamp(16, 4096)
    }
}

type Opts = SockOpts;

/// The options applied to an lwIP pcb.
fn apply_opts(o: &Opts, pcb: Pcb) {
    pcb.set_nodelay(o.nodelay);
    pcb.set_reuseaddr(o.reuseaddr);
    pcb.set_keepalive(
        o.keepalive,
        o.keepidle.saturating_mul(1000),
        o.keepintvl.saturating_mul(1000),
        o.keepcnt,
    );
}

struct Conn {
    /// lwIP's pcb while it is certainly live (see sys.rs); `None` once gone or after our FIN
    /// (then found again by key while lwIP still has it).
    pcb: Option<Pcb>,
    connecting: bool,
    rx: RxQueue,
    fin: bool,
    shut_rd: bool,
    shut_wr: bool,
    /// lwIP let the connection go (error callback, or not found after our FIN).
    gone: bool,
    local: SocketAddr,
    peer: Option<SocketAddr>,
    /// Written since the last `tcp_output`.
    unflushed: bool,
}

enum Kind {
    /// A pcb not yet listening or connecting (bound or not).
    Fresh {
        pcb: Pcb,
        bound: Option<SocketAddr>,
    },
    Listen(Listen),
    Conn(Box<Conn>),
}

struct Listen {
    pcb: Pcb,
    local: SocketAddr,
    cap: usize,
    /// Established connections not accepted yet (keys), oldest first.
    queue: VecDeque<u32>,
}

struct Sock {
    domain: i32,
    token: Option<u64>,
    opts: Opts,
    err: i32,
    kind: Kind,
    /// Queued in `dirty` for a readiness report.
    queued: bool,
    /// A connection lwIP accepted that nobody took from its listener yet.
    listener: Option<u32>,
}

pub struct LwipBackend<D: Device> {
    lw: Lwip,
    dev: D,
    ip: Ipv4Addr,
    mtu: usize,
    socks: HashMap<u32, Sock>,
    /// Local ports whose listener's accept queue is full: their SYNs are dropped on input.
    full_ports: HashSet<u16>,
    dirty: Vec<u32>,
    unflushed: Vec<u32>,
    events: Vec<Event>,
    rxq: VecDeque<Vec<u8>>,
    port_stats: PortStats,
    rx_frames: u64,
    tx_frames: u64,
    tx_dropped: u64,
    syn_dropped: u64,
    rx_refused: u64,
    /// Frames not for lwIP: not ARP or IPv4, or from our own address or 127/8 (`admit`).
    martians: u64,
    epoll: crate::sys::Epoll,
    kick: OwnedFd,
    timer: OwnedFd,
    kicked: bool,
    polled: bool,
    last_rx: Instant,
    told_buffers: bool,
    /// Panics caught in lwIP callbacks, as last logged (a bug if ever non-zero).
    panics: u64,
}

macro_rules! sock {
    ($self:ident, $s:expr) => {
        $self.socks.get_mut(&$s.0).ok_or_else(|| err(libc::EBADF))?
    };
}

impl<D: Device> LwipBackend<D> {
    pub fn new(dev: D, cfg: &EngineConfig) -> io::Result<Self> {
        let caps = dev.caps();
        let mtu = caps.mtu.min(usize::from(u16::MAX));
        let mask = if cfg.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(cfg.prefix.min(32)))
        };
        let gw = cfg.gateway.map_or(0, u32::from);
        let lw = Lwip::new(cfg.mac, mtu as u16, u32::from(cfg.ip), mask, gw, cfg.seed)?;
        let polled = dev.rx_fd().is_none();
        let (epoll, kick, timer) = super::wake_set(dev.rx_fd())?;
        let mut b = LwipBackend {
            lw,
            dev,
            ip: cfg.ip,
            mtu,
            socks: HashMap::new(),
            full_ports: HashSet::new(),
            dirty: Vec::new(),
            unflushed: Vec::new(),
            events: Vec::new(),
            rxq: VecDeque::new(),
            port_stats: PortStats::default(),
            rx_frames: 0,
            tx_frames: 0,
            tx_dropped: 0,
            syn_dropped: 0,
            rx_refused: 0,
            martians: 0,
            epoll,
            kick,
            timer,
            kicked: false,
            polled,
            last_rx: Instant::now(),
            told_buffers: false,
            panics: 0,
        };
        b.kick_now();
        Ok(b)
    }

    fn kick_now(&mut self) {
        if !self.kicked {
            self.kicked = true;
            if let Err(e) = crate::sys::eventfd_write(self.kick.as_raw_fd(), 1) {
                tracing::error!("lwip backend: kick eventfd: {e}");
            }
        }
    }

    fn mark(&mut self, id: u32) {
        if let Some(s) = self.socks.get_mut(&id) {
            if !s.queued {
                s.queued = true;
                self.dirty.push(id);
            }
        }
    }

    /// The live pcb of a connection, if lwIP still has it (found by key after our FIN).
    fn conn_pcb(id: u32, c: &mut Conn) -> Option<Pcb> {
        if c.gone {
            return None;
        }
        if c.shut_wr {
            let p = sys::find(id);
            if p.is_none() {
                c.gone = true;
            }
            return p;
        }
        c.pcb
    }

    fn local_ok(&self, domain: i32, a: &SocketAddr, v6only: bool) -> io::Result<Ipv4Addr> {
        match v4_of(a) {
            Some(v4) if v4.is_unspecified() => Ok(v4),
            Some(v4) if v4 == self.ip && !(domain == libc::AF_INET6 && v6only) => Ok(v4),
            _ => Err(err(libc::EADDRNOTAVAIL)),
        }
    }

    /// Drains the callbacks' events into socket state.
    fn handle_events(&mut self) {
        let mut evs = std::mem::take(&mut self.events);
        sys::take_events(&mut evs);
        for ev in evs.drain(..) {
            match ev {
                Event::Accepted {
                    listener,
                    conn,
                    pcb,
                } => self.accepted(listener, conn, pcb),
                Event::Connected { key } => {
                    if let Some(Sock {
                        domain,
                        kind: Kind::Conn(c),
                        ..
                    }) = self.socks.get_mut(&key)
                    {
                        c.connecting = false;
                        if let Some(p) = c.pcb {
                            let (li, lp, ri, rp) = p.addrs();
                            c.local = sockaddr(*domain, li, lp);
                            c.peer = Some(sockaddr(*domain, ri, rp));
                        }
                    }
                    self.mark(key);
                }
                Event::Recv { key, data } => {
                    let Some(Sock {
                        kind: Kind::Conn(c),
                        ..
                    }) = self.socks.get_mut(&key)
                    else {
                        // Not ours any more (cannot happen: closing detaches callbacks).
                        continue;
                    };
                    match data {
                        Some(p) if c.shut_rd => {
                            // The reader is gone (SHUT_RD): discard, keep the window open.
                            let n = p.len();
                            drop(p);
                            if let Some(pcb) = Self::conn_pcb(key, c) {
                                pcb.recved(n);
                            }
                        }
                        Some(p) => c.rx.push(p),
                        None => c.fin = true,
                    }
                    self.mark(key);
                }
                Event::Sent { key } => self.mark(key),
                Event::Error { key, err: e } => {
                    if let Some(s) = self.socks.get_mut(&key) {
                        if let Kind::Conn(c) = &mut s.kind {
                            c.pcb = None;
                            c.gone = true;
                            let close_wait = c.fin && !c.shut_wr;
                            let n = gone_errno(e, c.connecting, close_wait);
                            if n != 0 {
                                s.err = n;
                            }
                            c.connecting = false;
                        }
                        self.mark(key);
                    }
                }
            }
        }
        self.events = evs;
    }

    fn accepted(&mut self, listener: u32, conn: u32, pcb: Pcb) {
        let Some(Sock {
            domain,
            opts,
            kind: Kind::Listen(lst),
            ..
        }) = self.socks.get_mut(&listener)
        else {
            // A listener we no longer have: reset the connection.
            pcb.abort();
            return;
        };
        lst.queue.push_back(conn);
        if lst.queue.len() >= lst.cap {
            self.full_ports.insert(lst.local.port());
        }
        let (domain, opts) = (
            *domain,
            Opts {
                linger: (0, 0),
                ..*opts
            },
        );
        apply_opts(&opts, pcb);
        let (li, lp, ri, rp) = pcb.addrs();
        self.socks.insert(
            conn,
            Sock {
                domain,
                token: None,
                opts,
                err: 0,
                kind: Kind::Conn(Box::new(Conn {
                    pcb: Some(pcb),
                    connecting: false,
                    rx: RxQueue::default(),
                    fin: false,
                    shut_rd: false,
                    shut_wr: false,
                    gone: false,
                    local: sockaddr(domain, li, lp),
                    peer: Some(sockaddr(domain, ri, rp)),
                    unflushed: false,
                })),
                queued: false,
                listener: Some(listener),
            },
        );
        self.mark(listener);
    }

    /// Frames from the device into lwIP (checksums completed and super-frames cut as the
    /// smoltcp engine's port does: lwIP verifies every checksum and takes MTU-sized frames).
    fn ingress(&mut self) -> bool {
        let mut more = false;
        for _ in 0..BURSTS {
            let LwipBackend {
                dev,
                lw,
                rxq,
                port_stats,
                full_ports,
                syn_dropped,
                rx_refused,
                martians,
                mtu,
                ip,
                ..
            } = self;
            let ip = *ip;
            let mtu = *mtu;
            let may_be_partial = dev.rx_csum_may_be_partial();
            let r = dev.rx_burst(BURST, &mut |frame, mut meta| {
                if may_be_partial && meta.csum == RxCsum::Unknown && pseudo_only_csum(frame) {
                    meta.csum = RxCsum::Partial;
                }
                device::accept_frame(frame, meta, mtu, rxq, port_stats);
                while let Some(f) = rxq.pop_front() {
                    if !admit(&f, ip) {
                        *martians += 1;
                        continue;
                    }
                    if !full_ports.is_empty() {
                        if let Some(p) = device::syn_dst_port(&f) {
                            if full_ports.contains(&p) {
                                *syn_dropped += 1;
                                continue;
                            }
                        }
                    }
                    if lw.input(&f) != l::ERR_OK {
                        *rx_refused += 1;
                    }
                }
            });
            match r {
                Ok(n) => {
                    self.rx_frames += n as u64;
                    if n > 0 {
                        self.last_rx = Instant::now();
                    }
                    if n < BURST {
                        break;
                    }
                    more = true;
                }
                Err(e) => {
                    tracing::debug!("lwip backend: device rx: {e}");
                    break;
                }
            }
        }
        more
    }

    /// Frames lwIP sent, to the device. True when some wait (device full).
    fn egress(&mut self) -> bool {
        let dev = &mut self.dev;
        let (sent, left, dropped) = sys::with_tx(|q, free| {
            let mut dropped = 0;
            while q.len() > TX_QUEUE_MAX {
                if let Some(f) = q.pop_front() {
                    free.push(f.buf);
                    dropped += 1;
                }
            }
            if q.is_empty() {
                return (0, 0, dropped);
            }
            let sent = match dev.tx_burst(q, free) {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!("lwip backend: device tx: {e}");
                    // A frame the device refuses is lost on the wire: TCP retransmits it.
                    if let Some(f) = q.pop_front() {
                        free.push(f.buf);
                        dropped += 1;
                    }
                    0
                }
            };
            (sent, q.len(), dropped)
        });
        self.tx_frames += sent as u64;
        self.tx_dropped += dropped;
        left > 0
    }

    /// `tcp_output` for connections written since the last poll.
    fn flush_writes(&mut self) {
        for id in std::mem::take(&mut self.unflushed) {
            if let Some(Sock {
                kind: Kind::Conn(c),
                ..
            }) = self.socks.get_mut(&id)
            {
                if std::mem::take(&mut c.unflushed) {
                    if let Some(p) = Self::conn_pcb(id, c) {
                        p.output();
                    }
                }
            }
        }
    }

    fn report(&mut self, out: &mut Vec<SockEvent>) {
        for id in std::mem::take(&mut self.dirty) {
            let Some(s) = self.socks.get_mut(&id) else {
                continue;
            };
            s.queued = false;
            let ready = match &mut s.kind {
                Kind::Fresh { .. } => continue,
                Kind::Listen(lst) => Readiness {
                    readable: !lst.queue.is_empty(),
                    ..Readiness::default()
                },
                Kind::Conn(c) => {
                    let pcb = Self::conn_pcb(id, c);
                    let v = ConnView {
                        connecting: c.connecting,
                        gone: c.gone,
                        rx_len: c.rx.len(),
                        fin: c.fin,
                        shut_rd: c.shut_rd,
                        shut_wr: c.shut_wr,
                        sndbuf: pcb.map_or(0, |p| p.sndbuf()),
                        err: s.err,
                    };
                    readiness(&v)
                }
            };
            if let Some(token) = s.token {
                out.push(SockEvent { token, ready });
            }
        }
    }

    /// One poll's work; true when more is due at once.
    fn run(&mut self, out: &mut Vec<SockEvent>) -> bool {
        let mut more = self.ingress();
        self.lw.check_timeouts();
        self.handle_events();
        self.flush_writes();
        // Output may have produced events (none today, but keep the order honest).
        self.handle_events();
        more |= self.egress();
        self.report(out);
        let p = sys::callback_panics();
        if p != self.panics {
            self.panics = p;
            tracing::error!(
                panics = p,
                "lwip backend: a callback panicked (caught; a bug)"
            );
        }
        more
    }

    fn after_call(&mut self) {
        if !self.unflushed.is_empty()
            || !self.dirty.is_empty()
            || sys::with_tx(|q, _| !q.is_empty())
        {
            self.kick_now();
        }
    }

    fn release_conn(&mut self, id: u32, mut c: Box<Conn>, linger0: bool) {
        let unread = c.rx.clear() > 0;
        if let Some(p) = Self::conn_pcb(id, &mut c) {
            if c.shut_wr {
                // Our FIN is out: only a reset is left to decide.
                if linger0 || unread {
                    p.abort();
                } else {
                    p.close();
                }
            } else if linger0 || unread {
                // Linux: close with unread data, or SO_LINGER {1, 0}, resets the connection.
                p.abort();
            } else {
                p.close();
            }
        }
    }
}

impl<D: Device> Drop for LwipBackend<D> {
    fn drop(&mut self) {
        // Every pcb of ours goes before the interface does (lwIP's state outlives us).
        let ids: Vec<u32> = self.socks.keys().copied().collect();
        for id in ids {
            if let Some(s) = self.socks.remove(&id) {
                match s.kind {
                    Kind::Fresh { pcb, .. } => pcb.close(),
                    Kind::Listen(lst) => lst.pcb.close_listener(),
                    Kind::Conn(c) => self.release_conn(id, c, true),
                }
            }
        }
        self.handle_events();
        self.events.clear();
    }
}

impl<D: Device> Backend for LwipBackend<D> {
    type Sock = UserSock;

    fn socket(&mut self, domain: i32) -> io::Result<UserSock> {
        if domain != libc::AF_INET && domain != libc::AF_INET6 {
            return Err(err(libc::EAFNOSUPPORT));
        }
        let pcb = self.lw.new_pcb()?;
        let id = sys::next_key();
        self.socks.insert(
            id,
            Sock {
                domain,
                token: None,
                opts: Opts::default(),
                err: 0,
                kind: Kind::Fresh { pcb, bound: None },
                queued: false,
                listener: None,
            },
        );
        Ok(UserSock(id))
    }

    fn bind(&mut self, s: &UserSock, a: &SocketAddr) -> io::Result<()> {
        let (domain, v6only) = {
            let e = sock!(self, s);
            (e.domain, e.opts.v6only)
        };
        let ip = self.local_ok(domain, a, v6only)?;
        let e = sock!(self, s);
        let Kind::Fresh { pcb, bound } = &mut e.kind else {
            return Err(err(libc::EINVAL));
        };
        if bound.is_some() {
            return Err(err(libc::EINVAL));
        }
        let r = pcb.bind(u32::from(ip), a.port());
        if r != l::ERR_OK {
            return Err(err(match r {
                l::ERR_USE => libc::EADDRINUSE,
                r => errno_of(r, false),
            }));
        }
        let (_, port, _, _) = pcb.addrs();
        *bound = Some(sockaddr(domain, u32::from(ip), port));
        Ok(())
    }

    fn listen(&mut self, s: &UserSock, backlog: i32) -> io::Result<()> {
        let id = s.0;
        let cap = accept_cap(backlog);
        let e = sock!(self, s);
        match &mut e.kind {
            Kind::Listen(lst) => {
                lst.cap = cap;
                if lst.queue.len() < cap {
                    self.full_ports.remove(&lst.local.port());
                }
                return Ok(());
            }
            Kind::Conn(_) => return Err(err(libc::EINVAL)),
            Kind::Fresh { .. } => {}
        }
        if matches!(e.kind, Kind::Fresh { bound: None, .. }) {
            let d = e.domain;
            let any = if d == libc::AF_INET6 {
                SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
            } else {
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
            };
            self.bind(s, &any)?;
        }
        let e = sock!(self, s);
        let Kind::Fresh {
            pcb,
            bound: Some(local),
        } = e.kind
        else {
            return Err(err(libc::EINVAL));
        };
        let lp = pcb.listen(id).map_err(|r| err(errno_of(r, false)))?;
        let local = match local {
            SocketAddr::V4(mut a) => {
                a.set_port(lp.listen_port());
                SocketAddr::V4(a)
            }
            SocketAddr::V6(mut a) => {
                a.set_port(lp.listen_port());
                SocketAddr::V6(a)
            }
        };
        e.kind = Kind::Listen(Listen {
            pcb: lp,
            local,
            cap,
            queue: VecDeque::new(),
        });
        self.kick_now();
        Ok(())
    }

    fn accept(&mut self, s: &UserSock) -> io::Result<(UserSock, SocketAddr)> {
        let e = sock!(self, s);
        let Kind::Listen(lst) = &mut e.kind else {
            return Err(err(libc::EINVAL));
        };
        let Some(cid) = lst.queue.pop_front() else {
            return Err(err(libc::EAGAIN));
        };
        if lst.queue.len() < lst.cap {
            self.full_ports.remove(&lst.local.port());
        }
        let c = self
            .socks
            .get_mut(&cid)
            .ok_or_else(|| err(libc::ECONNABORTED))?;
        c.listener = None;
        let peer = match &c.kind {
            Kind::Conn(conn) => conn.peer,
            _ => None,
        };
        let peer = peer.ok_or_else(|| err(libc::ECONNABORTED))?;
        self.mark(cid);
        Ok((UserSock(cid), peer))
    }

    fn connect(&mut self, s: &UserSock, a: &SocketAddr) -> io::Result<()> {
        let id = s.0;
        let e = sock!(self, s);
        let pcb = match &e.kind {
            Kind::Listen(_) => return Err(err(libc::EISCONN)),
            Kind::Conn(c) if c.connecting => return Err(err(libc::EALREADY)),
            Kind::Conn(_) => return Err(err(libc::EISCONN)),
            Kind::Fresh { pcb, .. } => *pcb,
        };
        let remote = match v4_of(a) {
            Some(v4) if !(e.domain == libc::AF_INET6 && e.opts.v6only) => v4,
            _ => return Err(err(libc::ENETUNREACH)),
        };
        if remote.is_unspecified() || a.port() == 0 {
            return Err(err(libc::ECONNREFUSED));
        }
        if remote == self.ip || remote.is_loopback() {
            // lwIP would queue the SYN in its loop queue, served only through tcpip_thread in
            // this build (it aborts without one). The agent's loopback acceleration (on by
            // default) serves connections to a local listener before they get here.
            tracing::debug!(
                %remote,
                "lwip backend: connect to our own address refused (ECONNREFUSED): lwIP as packaged loops it through tcpip_thread"
            );
            return Err(err(libc::ECONNREFUSED));
        }
        let r = pcb.connect(id, u32::from(remote), a.port());
        if r != l::ERR_OK {
            return Err(err(match r {
                l::ERR_USE => libc::EADDRNOTAVAIL,
                r => errno_of(r, true),
            }));
        }
        let (li, lp, _, _) = pcb.addrs();
        let domain = e.domain;
        e.kind = Kind::Conn(Box::new(Conn {
            pcb: Some(pcb),
            connecting: true,
            rx: RxQueue::default(),
            fin: false,
            shut_rd: false,
            shut_wr: false,
            gone: false,
            local: sockaddr(domain, li, lp),
            peer: Some(sockaddr(domain, u32::from(remote), a.port())),
            unflushed: true,
        }));
        self.unflushed.push(id);
        self.kick_now();
        Err(err(libc::EINPROGRESS))
    }

    fn connect_state(&mut self, s: &UserSock) -> ConnectState {
        let Some(e) = self.socks.get_mut(&s.0) else {
            return ConnectState::Failed(libc::EBADF);
        };
        match &e.kind {
            Kind::Conn(_) if e.err != 0 => ConnectState::Failed(std::mem::take(&mut e.err)),
            Kind::Conn(c) if c.connecting => ConnectState::Pending,
            Kind::Conn(_) => ConnectState::Connected,
            _ => ConnectState::Failed(if e.err != 0 {
                std::mem::take(&mut e.err)
            } else {
                libc::ENOTCONN
            }),
        }
    }

    fn take_error(&mut self, s: &UserSock) -> i32 {
        self.socks
            .get_mut(&s.0)
            .map_or(libc::EBADF, |e| std::mem::take(&mut e.err))
    }

    fn shutdown(&mut self, s: &UserSock, how: i32) -> io::Result<()> {
        let id = s.0;
        let e = sock!(self, s);
        if matches!(e.kind, Kind::Listen(_)) {
            if how == libc::SHUT_RD || how == libc::SHUT_RDWR {
                tracing::debug!(
                    "lwip backend: shutdown of a listener is not supported (EOPNOTSUPP)"
                );
                return Err(err(libc::EOPNOTSUPP));
            }
            return Err(err(libc::ENOTCONN));
        }
        let Kind::Conn(c) = &mut e.kind else {
            return Err(err(libc::ENOTCONN));
        };
        if c.connecting {
            return Err(err(libc::ENOTCONN));
        }
        if how == libc::SHUT_RD || how == libc::SHUT_RDWR {
            c.shut_rd = true;
            let n = c.rx.clear();
            if let Some(p) = Self::conn_pcb(id, c) {
                p.recved(n);
            }
        }
        if (how == libc::SHUT_WR || how == libc::SHUT_RDWR) && !c.shut_wr {
            if let Some(p) = Self::conn_pcb(id, c) {
                // Written bytes go first, then the FIN.
                p.output();
                let r = p.shutdown_write();
                if r != l::ERR_OK {
                    return Err(err(errno_of(r, false)));
                }
                p.output();
            }
            c.shut_wr = true;
            c.pcb = None;
        }
        self.mark(id);
        self.after_call();
        Ok(())
    }

    fn local_addr(&mut self, s: &UserSock) -> io::Result<SocketAddr> {
        let e = sock!(self, s);
        let any = |d: i32| sockaddr(d, 0, 0);
        Ok(match &e.kind {
            Kind::Fresh { bound, .. } => bound.unwrap_or_else(|| any(e.domain)),
            Kind::Listen(lst) => lst.local,
            Kind::Conn(c) => c.local,
        })
    }

    fn peer_addr(&mut self, s: &UserSock) -> io::Result<SocketAddr> {
        let e = sock!(self, s);
        match &e.kind {
            Kind::Conn(c) if !(c.connecting || (c.gone && e.err != 0)) => {
                c.peer.ok_or_else(|| err(libc::ENOTCONN))
            }
            _ => Err(err(libc::ENOTCONN)),
        }
    }

    fn setsockopt(&mut self, s: &UserSock, level: i32, name: i32, val: &[u8]) -> io::Result<()> {
        let id = s.0;
        let mut tell_buffers = false;
        let e = sock!(self, s);
        let o = &mut e.opts;
        match (level, name) {
            (libc::SOL_SOCKET, libc::SO_RCVBUF | libc::SO_SNDBUF) => {
                // Fixed at lwIP's compile time (TCP_WND, TCP_SND_BUF); Linux clamps these
                // too, and getsockopt reports what is in force.
                sockopts::int(val)?;
                tell_buffers = true;
            }
            _ => {
                if !o.set(level, name, val)? {
                    // SO_REUSEPORT (lwIP has no port sharing), TCP_CORK, TCP_INFO,
                    // TCP_CONGESTION, TCP_MAXSEG, ...: not in the packaged lwIP.
                    tracing::debug!(
                        level,
                        name,
                        "lwip backend: setsockopt not supported by lwIP (ENOPROTOOPT)"
                    );
                    return Err(err(libc::ENOPROTOOPT));
                }
            }
        }
        let opts = *o;
        let pcb = match &mut e.kind {
            Kind::Fresh { pcb, .. } => Some(*pcb),
            Kind::Conn(c) => Self::conn_pcb(id, c),
            Kind::Listen(_) => None,
        };
        if let Some(p) = pcb {
            apply_opts(&opts, p);
        }
        if tell_buffers && !self.told_buffers {
            self.told_buffers = true;
            tracing::info!(
                window = l::opt("TCP_WND"),
                send_buffer = l::opt("TCP_SND_BUF"),
                "lwip backend: SO_RCVBUF/SO_SNDBUF have no effect: lwIP's buffers are fixed when it is compiled"
            );
        }
        Ok(())
    }

    fn getsockopt(
        &mut self,
        s: &UserSock,
        level: i32,
        name: i32,
        buf: &mut [u8],
    ) -> io::Result<usize> {
        let id = s.0;
        let e = sock!(self, s);
        let o = e.opts;
        let listening = matches!(e.kind, Kind::Listen(_));
        if let Some(n) = o.get(level, name, buf) {
            return Ok(n);
        }
        let v = match (level, name) {
            (libc::SOL_SOCKET, libc::SO_ERROR) => std::mem::take(&mut e.err),
            (libc::SOL_SOCKET, libc::SO_TYPE) => libc::SOCK_STREAM,
            (libc::SOL_SOCKET, libc::SO_DOMAIN) => e.domain,
            (libc::SOL_SOCKET, libc::SO_PROTOCOL) => libc::IPPROTO_TCP,
            (libc::SOL_SOCKET, libc::SO_ACCEPTCONN) => i32::from(listening),
            (libc::SOL_SOCKET, libc::SO_RCVBUF) => l::opt("TCP_WND").unwrap_or(0) as i32,
            (libc::SOL_SOCKET, libc::SO_SNDBUF) => l::opt("TCP_SND_BUF").unwrap_or(0) as i32,
            (libc::IPPROTO_TCP, libc::TCP_MAXSEG) => {
                let pcb = match &mut e.kind {
                    Kind::Conn(c) => Self::conn_pcb(id, c),
                    _ => None,
                };
                pcb.map_or(536, |p| i32::from(p.mss()))
            }
            _ => {
                tracing::debug!(
                    level,
                    name,
                    "lwip backend: getsockopt not supported by lwIP (ENOPROTOOPT)"
                );
                return Err(err(libc::ENOPROTOOPT));
            }
        };
        Ok(sockopts::put_int(buf, v))
    }

    unsafe fn recv(&mut self, s: &UserSock, bufs: &[IoBuf]) -> io::Result<usize> {
        let id = s.0;
        let e = sock!(self, s);
        let Kind::Conn(c) = &mut e.kind else {
            return Err(err(libc::ENOTCONN));
        };
        if c.shut_rd {
            return Ok(0);
        }
        let mut n = 0;
        if c.rx.len() > 0 {
            // SAFETY: forwarded from the caller's contract (writable, unaliased buffers).
            let mut v = unsafe { crate::backend::iov_mut(bufs) };
            for b in v.iter_mut() {
                let k = c.rx.read(b);
                n += k;
                if k < b.len() {
                    break;
                }
            }
        }
        if n > 0 {
            if let Some(p) = Self::conn_pcb(id, c) {
                // Opens the window (lwIP sends the update itself once it is worth one).
                p.recved(n);
            }
            self.after_call();
            return Ok(n);
        }
        if e.err != 0 {
            return Err(err(std::mem::take(&mut e.err)));
        }
        if c.fin || c.gone {
            Ok(0)
        } else {
            Err(err(libc::EAGAIN))
        }
    }

    unsafe fn send(&mut self, s: &UserSock, bufs: &[IoBuf]) -> io::Result<usize> {
        let id = s.0;
        let e = sock!(self, s);
        let Kind::Conn(c) = &mut e.kind else {
            return Err(err(libc::ENOTCONN));
        };
        if e.err != 0 {
            return Err(err(std::mem::take(&mut e.err)));
        }
        if c.shut_wr {
            return Err(err(libc::EPIPE));
        }
        if c.connecting {
            return Err(err(libc::EAGAIN));
        }
        let Some(p) = Self::conn_pcb(id, c) else {
            return Err(err(libc::EPIPE));
        };
        // SAFETY: forwarded from the caller's contract (readable buffers).
        let v = unsafe { crate::backend::iov_ref(bufs) };
        let mut n = 0;
        'bufs: for b in v.iter() {
            let mut off = 0;
            while off < b.len() {
                let room = p.sndbuf() as usize;
                if room == 0 {
                    break 'bufs;
                }
                let k = room.min(b.len() - off).min(usize::from(u16::MAX));
                if p.write(&b[off..off + k]) != l::ERR_OK {
                    break 'bufs;
                }
                off += k;
                n += k;
            }
        }
        if n == 0 {
            return Err(err(libc::EAGAIN));
        }
        if !c.unflushed {
            c.unflushed = true;
            self.unflushed.push(id);
        }
        self.kick_now();
        Ok(n)
    }

    fn register(&mut self, s: &UserSock, token: u64) -> io::Result<()> {
        sock!(self, s).token = Some(token);
        self.mark(s.0);
        self.kick_now();
        Ok(())
    }

    fn close(&mut self, s: UserSock) {
        let Some(e) = self.socks.remove(&s.0) else {
            return;
        };
        match e.kind {
            Kind::Fresh { pcb, .. } => pcb.close(),
            Kind::Listen(lst) => {
                lst.pcb.close_listener();
                self.full_ports.remove(&lst.local.port());
                // Connections nobody accepted are reset, as Linux does.
                for cid in lst.queue {
                    if let Some(Sock {
                        kind: Kind::Conn(c),
                        ..
                    }) = self.socks.remove(&cid)
                    {
                        self.release_conn(cid, c, true);
                    }
                }
            }
            Kind::Conn(c) => {
                if let Some(lid) = e.listener {
                    if let Some(Sock {
                        kind: Kind::Listen(lst),
                        ..
                    }) = self.socks.get_mut(&lid)
                    {
                        lst.queue.retain(|&x| x != s.0);
                    }
                }
                let linger0 = e.opts.linger.0 != 0 && e.opts.linger.1 == 0;
                self.release_conn(s.0, c, linger0);
            }
        }
        self.after_call();
    }

    fn poll(&mut self, out: &mut Vec<SockEvent>) -> io::Result<()> {
        crate::sys::eventfd_drain(self.kick.as_raw_fd());
        crate::sys::eventfd_drain(self.timer.as_raw_fd());
        self.kicked = false;
        let more = self.run(out);
        if more {
            self.kick_now();
        }
        let mut delay = self
            .lw
            .sleeptime_ms()
            .map(|ms| Duration::from_millis(u64::from(ms)));
        if self.polled {
            let every = if self.last_rx.elapsed() < IDLE_AFTER {
                BUSY_POLL
            } else {
                IDLE_POLL
            };
            delay = Some(delay.map_or(every, |d| d.min(every)));
        }
        if let Some(due) = self.dev.next_due() {
            let d = due.saturating_duration_since(Instant::now());
            delay = Some(delay.map_or(d, |x| x.min(d)));
        }
        match delay {
            Some(d) if d.is_zero() => {
                self.kick_now();
                crate::sys::timerfd_set(self.timer.as_raw_fd(), None)?;
            }
            d => crate::sys::timerfd_set(self.timer.as_raw_fd(), d)?,
        }
        Ok(())
    }

    fn wait_fd(&self) -> RawFd {
        self.epoll.raw()
    }

    fn engine_stats(&self) -> EngineStats {
        let conns = self
            .socks
            .values()
            .filter(|s| matches!(&s.kind, Kind::Conn(c) if !c.gone))
            .count();
        EngineStats {
            enabled: true,
            rx_frames: self.rx_frames,
            tx_frames: self.tx_frames,
            rx_malformed: self.rx_refused + self.port_stats.rx_dropped + self.martians,
            conns: conns as u64,
            syn_dropped: self.syn_dropped,
            ..EngineStats::default()
        }
    }

    fn own_ip(&self) -> Option<std::net::IpAddr> {
        Some(std::net::IpAddr::V4(self.ip))
    }
}

#[cfg(test)]
mod tests;
