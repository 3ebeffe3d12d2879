//! The sans-IO TCP/IP engine of the user backend: a smoltcp [`Interface`] and its sockets, plus
//! what the agent needs on top of smoltcp and smoltcp does not have (docs/user-stack.md):
//!
//! - BSD socket lifetimes: a socket exists before it is bound, listens, connects or closes;
//!   a closed connection lives on as an orphan until its FIN (or RST) is through.
//! - A real listen backlog: smoltcp listens with one socket per connection, so each listener keeps
//!   a pool of listening sockets, replenished after every received frame, and a queue of
//!   connections not yet accepted (bounded by the backlog; SYNs beyond it are dropped, as Linux
//!   does, and the client retransmits).
//! - Ports: bind conflicts (EADDRINUSE, SO_REUSEADDR/SO_REUSEPORT), ephemeral ports for connect.
//! - Linux errnos: ECONNREFUSED (RST to our SYN), ETIMEDOUT (connect or retransmission gives up,
//!   keepalive), ECONNRESET (RST), EPIPE (send after the connection ended).
//! - Edge readiness: after each poll, every registered socket whose state, queued bytes or error
//!   changed is reported once.
//!
//! The engine never reads a clock and performs no I/O: every entry point takes `now`, and frames
//! go through a [`Port`] over any [`Device`].

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::atomic::{AtomicU32, Ordering};

use smoltcp::iface::{Config, Interface, PollIngressSingleResult, SocketHandle, SocketSet};
use smoltcp::socket::tcp::{self, State};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint,
};

use super::device::{Device, Port};
use super::sockopts::{self, SockOpts};
use crate::backend::{ConnectState, Readiness, SockEvent};

/// Listening sockets kept ready per listener (at most its backlog).
const SPARES: usize = 64;
/// Frames processed per poll before egress runs (bounded work per call).
const INGRESS_BUDGET: usize = 256;
/// A connect gives up (ETIMEDOUT) after this long without an answer (Linux: ~127 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(75);
/// Unacknowledged data without any progress for this long aborts the connection (ETIMEDOUT).
const RETRANSMIT_TIMEOUT: Duration = Duration::from_secs(120);
/// A closed connection whose FIN exchange does not finish is reset after this long.
const ORPHAN_TIMEOUT: Duration = Duration::from_secs(60);
const EPHEMERAL: std::ops::RangeInclusive<u16> = 32768..=60999;

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub mac: [u8; 6],
    /// Default receive/send buffer of a connection (SO_RCVBUF/SO_SNDBUF set before connect or
    /// listen override them).
    pub rx_buf: usize,
    pub tx_buf: usize,
    pub seed: u64,
}

/// The agent's handle of one engine socket (deliberately not `Clone`).
#[derive(Debug, PartialEq, Eq)]
pub struct UserSock(pub(crate) u32);

static TSVAL_MS: AtomicU32 = AtomicU32::new(0);

/// TCP timestamps (RFC 7323). smoltcp 0.12 sizes data segments as min(peer MSS, MTU - IP - 20)
/// and forgets the 12 bytes of the timestamp option; `device::clamp_syn_mss` lowers the MSS of
/// every received SYN that negotiates timestamps so full segments still fit the MTU.
const TIMESTAMPS: bool = true;

/// smoltcp's timestamp-option generator: the engine's last `now` in milliseconds (set by
/// [`Engine::poll`]), so smoltcp itself never reads a clock.
fn tsval() -> u32 {
    TSVAL_MS.load(Ordering::Relaxed)
}

fn tsval_generator() -> Option<fn() -> u32> {
    if TIMESTAMPS {
        Some(tsval)
    } else {
        None
    }
}

type Opts = SockOpts;

/// The options applied to a smoltcp socket.
fn apply_opts(o: &Opts, s: &mut tcp::Socket<'_>) {
    s.set_nagle_enabled(!o.nodelay);
    if o.keepalive {
        s.set_keep_alive(Some(Duration::from_secs(u64::from(o.keepidle.max(1)))));
        let dead = u64::from(o.keepidle) + u64::from(o.keepintvl) * u64::from(o.keepcnt);
        s.set_timeout(Some(Duration::from_secs(dead.max(1))));
    } else {
        s.set_keep_alive(None);
        s.set_timeout(None);
    }
}

/// What was last reported for a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Snap {
    state: State,
    rq: usize,
    sq: usize,
    err: i32,
}

struct Listen {
    cap: usize,
    endpoint: IpListenEndpoint,
    spares: Vec<SocketHandle>,
    /// Connections out of LISTEN (handshaking or established), oldest first.
    pending: VecDeque<SocketHandle>,
    /// Established connections in `pending` at the last report.
    reported: usize,
}

struct Conn {
    h: SocketHandle,
    last: Option<Snap>,
    connecting: bool,
    connect_deadline: Option<Instant>,
    shut_rd: bool,
    /// Last time the connection made progress (acked bytes, received data, empty send queue).
    progress: Instant,
    progress_sq: usize,
}

enum Kind {
    Fresh,
    Listen(Listen),
    Conn(Conn),
}

struct Entry {
    domain: i32,
    token: Option<u64>,
    /// Local address held in the port table.
    bound: Option<SocketAddr>,
    opts: Opts,
    kind: Kind,
    /// Pending socket error (SO_ERROR).
    err: i32,
    /// Report readiness at the next poll even if nothing changed.
    dirty: bool,
}

#[derive(Clone, Copy, Debug)]
struct PortUse {
    id: u32,
    addr: Option<IpAddress>,
    reuseaddr: bool,
    reuseport: bool,
    listening: bool,
}

struct Orphan {
    h: SocketHandle,
    deadline: Instant,
}

/// The entry of a socket handle (a macro, so other fields of the engine stay borrowable).
macro_rules! entry {
    ($self:ident, $s:expr) => {
        $self
            .entries
            .get_mut(&$s.0)
            .ok_or_else(|| err(libc::EBADF))?
    };
}

fn err(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// The IPv4 address behind a socket address (v4, or v4-mapped v6).
fn v4_of(a: &SocketAddr) -> Option<Ipv4Addr> {
    match a {
        SocketAddr::V4(a) => Some(*a.ip()),
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped(),
    }
}

fn is_unspecified(a: &SocketAddr) -> bool {
    a.ip().is_unspecified()
}

/// A smoltcp endpoint as a socket address of `domain` (v4-mapped for AF_INET6).
fn sockaddr(domain: i32, ep: IpEndpoint) -> SocketAddr {
    let ip: IpAddr = match ep.addr {
        IpAddress::Ipv4(a) => IpAddr::V4(a),
        IpAddress::Ipv6(a) => IpAddr::V6(a),
    };
    match (domain, ip) {
        (libc::AF_INET6, IpAddr::V4(v4)) => {
            SocketAddr::V6(SocketAddrV6::new(v4.to_ipv6_mapped(), ep.port, 0, 0))
        }
        (_, ip) => SocketAddr::new(ip, ep.port),
    }
}

fn unspecified(domain: i32, port: u16) -> SocketAddr {
    if domain == libc::AF_INET6 {
        SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0))
    } else {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
    }
}

/// The sans-IO engine (see the module doc).
pub struct Engine {
    cfg: EngineConfig,
    iface: Interface,
    set: SocketSet<'static>,
    entries: HashMap<u32, Entry>,
    next_id: u32,
    ports: HashMap<u16, Vec<PortUse>>,
    next_ephemeral: u16,
    orphans: Vec<Orphan>,
    /// Ids of listening entries (replenished after every frame that changed a socket's state).
    listeners: Vec<u32>,
    /// Something changed that only a poll sends out (data, FIN, SYN, RST, window update).
    pub work_pending: bool,
    now: Instant,
}

impl Engine {
    pub fn new<D: Device>(cfg: EngineConfig, port: &mut Port<D>, now: Instant) -> Engine {
        let mut c = Config::new(HardwareAddress::Ethernet(EthernetAddress(cfg.mac)));
        c.random_seed = cfg.seed;
        let mut iface = Interface::new(c, port, now);
        iface.update_ip_addrs(|a| {
            // One address on a fresh interface always fits.
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(cfg.ip), cfg.prefix));
        });
        if let Some(gw) = cfg.gateway {
            let _ = iface.routes_mut().add_default_ipv4_route(gw);
        }
        let eph = *EPHEMERAL.start() + (cfg.seed % 20000) as u16;
        Engine {
            cfg,
            iface,
            set: SocketSet::new(Vec::new()),
            entries: HashMap::new(),
            next_id: 1,
            ports: HashMap::new(),
            next_ephemeral: eph,
            orphans: Vec::new(),
            listeners: Vec::new(),
            work_pending: false,
            now,
        }
    }

    fn new_tcp(&self, o: &Opts) -> tcp::Socket<'static> {
        let rx = o.rcvbuf.unwrap_or(self.cfg.rx_buf);
        let tx = o.sndbuf.unwrap_or(self.cfg.tx_buf);
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; rx]),
            tcp::SocketBuffer::new(vec![0u8; tx]),
        );
        s.set_congestion_control(tcp::CongestionControl::Cubic);
        s.set_tsval_generator(tsval_generator());
        apply_opts(o, &mut s);
        s
    }

    // -----------------------------------------------------------------------------------------
    // Socket calls

    /// The IPv4 address the stack owns.
    pub fn ip(&self) -> Ipv4Addr {
        self.cfg.ip
    }

    pub fn socket(&mut self, domain: i32) -> io::Result<UserSock> {
        if domain != libc::AF_INET && domain != libc::AF_INET6 {
            return Err(err(libc::EAFNOSUPPORT));
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.entries.insert(
            id,
            Entry {
                domain,
                token: None,
                bound: None,
                opts: Opts::default(),
                kind: Kind::Fresh,
                err: 0,
                dirty: false,
            },
        );
        Ok(UserSock(id))
    }

    /// Checks that `a` is an address of ours; returns the smoltcp address (None: any).
    fn local_ip(&self, domain: i32, a: &SocketAddr, v6only: bool) -> io::Result<Option<IpAddress>> {
        if is_unspecified(a) {
            return Ok(None);
        }
        match v4_of(a) {
            Some(v4) if v4 == self.cfg.ip && !(domain == libc::AF_INET6 && v6only) => {
                Ok(Some(IpAddress::Ipv4(v4)))
            }
            _ => Err(err(libc::EADDRNOTAVAIL)),
        }
    }

    fn port_free(&self, port: u16, u: &PortUse) -> bool {
        self.ports.get(&port).map_or(true, |v| {
            v.iter().all(|o| {
                let overlap = o.addr.is_none() || u.addr.is_none() || o.addr == u.addr;
                !overlap
                    || (o.reuseport && u.reuseport)
                    || (o.reuseaddr && u.reuseaddr && !o.listening && !u.listening)
            })
        })
    }

    fn ephemeral(&mut self, u: &PortUse) -> io::Result<u16> {
        let span = u32::from(*EPHEMERAL.end() - *EPHEMERAL.start()) + 1;
        for _ in 0..span {
            let p = self.next_ephemeral;
            self.next_ephemeral = if p >= *EPHEMERAL.end() {
                *EPHEMERAL.start()
            } else {
                p + 1
            };
            // An ephemeral port is never shared.
            if !self.ports.contains_key(&p) {
                let _ = u;
                return Ok(p);
            }
        }
        Err(err(libc::EADDRNOTAVAIL))
    }

    pub fn bind(&mut self, s: &UserSock, a: &SocketAddr) -> io::Result<()> {
        let id = s.0;
        let e = entry!(self, s);
        if e.bound.is_some() || !matches!(e.kind, Kind::Fresh) {
            return Err(err(libc::EINVAL));
        }
        let (domain, opts) = (e.domain, e.opts);
        let addr = self.local_ip(domain, a, opts.v6only)?;
        let mut u = PortUse {
            id,
            addr,
            reuseaddr: opts.reuseaddr,
            reuseport: opts.reuseport,
            listening: false,
        };
        let port = if a.port() == 0 {
            self.ephemeral(&u)?
        } else {
            if !self.port_free(a.port(), &u) {
                return Err(err(libc::EADDRINUSE));
            }
            a.port()
        };
        u.listening = false;
        self.ports.entry(port).or_default().push(u);
        let mut b = *a;
        b.set_port(port);
        entry!(self, s).bound = Some(b);
        Ok(())
    }

    fn release_port(&mut self, id: u32, bound: Option<SocketAddr>) {
        if let Some(b) = bound {
            if let Some(v) = self.ports.get_mut(&b.port()) {
                v.retain(|u| u.id != id);
                if v.is_empty() {
                    self.ports.remove(&b.port());
                }
            }
        }
    }

    pub fn listen(&mut self, s: &UserSock, backlog: i32) -> io::Result<()> {
        let id = s.0;
        let e = entry!(self, s);
        let cap = if backlog < 0 { 4096 } else { backlog as usize }.clamp(16, 4096);
        match &mut e.kind {
            Kind::Listen(l) => {
                l.cap = cap;
                return Ok(());
            }
            Kind::Conn(_) => return Err(err(libc::EINVAL)),
            Kind::Fresh => {}
        }
        if e.bound.is_none() {
            let d = entry!(self, s).domain;
            self.bind(s, &unspecified(d, 0))?;
        }
        let e = entry!(self, s);
        let Some(b) = e.bound else {
            return Err(err(libc::EINVAL));
        };
        let addr = if is_unspecified(&b) {
            None
        } else {
            v4_of(&b).map(IpAddress::Ipv4)
        };
        e.kind = Kind::Listen(Listen {
            cap,
            endpoint: IpListenEndpoint {
                addr,
                port: b.port(),
            },
            spares: Vec::new(),
            pending: VecDeque::new(),
            reported: 0,
        });
        if let Some(v) = self.ports.get_mut(&b.port()) {
            for u in v.iter_mut().filter(|u| u.id == id) {
                u.listening = true;
            }
        }
        self.listeners.push(id);
        self.replenish(id);
        Ok(())
    }

    /// Refills listener `id`'s pool and moves sockets that left LISTEN to its pending queue.
    fn replenish(&mut self, id: u32) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        let opts = e.opts;
        let Kind::Listen(l) = &mut e.kind else {
            return;
        };
        let set = &mut self.set;
        let mut i = 0;
        while i < l.spares.len() {
            if set.get::<tcp::Socket>(l.spares[i]).state() != State::Listen {
                let h = l.spares.swap_remove(i);
                l.pending.push_back(h);
            } else {
                i += 1;
            }
        }
        let want = SPARES.min(l.cap);
        let endpoint = l.endpoint;
        let mut add = 0;
        while l.spares.len() + add < want && l.pending.len() + l.spares.len() + add < l.cap {
            add += 1;
        }
        let mut fresh = Vec::with_capacity(add);
        for _ in 0..add {
            let rx = opts.rcvbuf.unwrap_or(self.cfg.rx_buf);
            let tx = opts.sndbuf.unwrap_or(self.cfg.tx_buf);
            let mut t = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0u8; rx]),
                tcp::SocketBuffer::new(vec![0u8; tx]),
            );
            t.set_congestion_control(tcp::CongestionControl::Cubic);
            t.set_tsval_generator(tsval_generator());
            apply_opts(&opts, &mut t);
            if t.listen(endpoint).is_err() {
                break;
            }
            fresh.push(set.add(t));
        }
        let Some(Entry {
            kind: Kind::Listen(l),
            ..
        }) = self.entries.get_mut(&id)
        else {
            return;
        };
        l.spares.extend(fresh);
    }

    pub fn accept(&mut self, s: &UserSock) -> io::Result<(UserSock, SocketAddr)> {
        let id = s.0;
        let e = entry!(self, s);
        let (domain, opts) = (e.domain, e.opts);
        let Kind::Listen(l) = &mut e.kind else {
            return Err(err(libc::EINVAL));
        };
        let set = &mut self.set;
        let pos = l.pending.iter().position(|&h| {
            let st = set.get::<tcp::Socket>(h).state();
            !matches!(st, State::SynReceived | State::Listen | State::Closed)
        });
        let Some(pos) = pos else {
            return Err(err(libc::EAGAIN));
        };
        let Some(h) = l.pending.remove(pos) else {
            return Err(err(libc::EAGAIN));
        };
        l.reported = l.reported.saturating_sub(1);
        let Some(peer) = set.get::<tcp::Socket>(h).remote_endpoint() else {
            set.remove(h);
            return Err(err(libc::ECONNABORTED));
        };
        let nid = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let now = self.now;
        self.entries.insert(
            nid,
            Entry {
                domain,
                token: None,
                bound: None,
                opts: Opts {
                    linger: (0, 0),
                    ..opts
                },
                kind: Kind::Conn(Conn {
                    h,
                    last: None,
                    connecting: false,
                    connect_deadline: None,
                    shut_rd: false,
                    progress: now,
                    progress_sq: 0,
                }),
                err: 0,
                dirty: true,
            },
        );
        self.replenish(id);
        Ok((UserSock(nid), sockaddr(domain, peer)))
    }

    pub fn connect(&mut self, s: &UserSock, a: &SocketAddr) -> io::Result<()> {
        let id = s.0;
        let e = entry!(self, s);
        match &e.kind {
            Kind::Listen(_) => return Err(err(libc::EISCONN)),
            Kind::Conn(c) if c.connecting => return Err(err(libc::EALREADY)),
            Kind::Conn(_) => return Err(err(libc::EISCONN)),
            Kind::Fresh => {}
        }
        let remote = match v4_of(a) {
            Some(v4) if !(e.domain == libc::AF_INET6 && e.opts.v6only) => v4,
            _ => return Err(err(libc::ENETUNREACH)),
        };
        if remote.is_unspecified() || a.port() == 0 {
            return Err(err(libc::ECONNREFUSED));
        }
        if e.bound.is_none() {
            let d = e.domain;
            self.bind(s, &unspecified(d, 0))?;
        }
        let e = entry!(self, s);
        let opts = e.opts;
        let Some(b) = e.bound else {
            return Err(err(libc::EINVAL));
        };
        let mut t = self.new_tcp(&opts);
        let local = IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(self.cfg.ip)),
            port: b.port(),
        };
        let remote_ep = IpEndpoint::new(IpAddress::Ipv4(remote), a.port());
        match t.connect(self.iface.context(), remote_ep, local) {
            Ok(()) => {}
            Err(tcp::ConnectError::Unaddressable) => return Err(err(libc::ENETUNREACH)),
            Err(tcp::ConnectError::InvalidState) => return Err(err(libc::EISCONN)),
        }
        let h = self.set.add(t);
        let now = self.now;
        let Some(e) = self.entries.get_mut(&id) else {
            self.set.remove(h);
            return Err(err(libc::EBADF));
        };
        e.kind = Kind::Conn(Conn {
            h,
            last: None,
            connecting: true,
            connect_deadline: Some(now + CONNECT_TIMEOUT),
            shut_rd: false,
            progress: now,
            progress_sq: 0,
        });
        e.dirty = true;
        self.work_pending = true;
        Err(err(libc::EINPROGRESS))
    }

    pub fn connect_state(&mut self, s: &UserSock) -> ConnectState {
        let Some(e) = self.entries.get_mut(&s.0) else {
            return ConnectState::Failed(libc::EBADF);
        };
        let Kind::Conn(c) = &mut e.kind else {
            return ConnectState::Failed(if e.err != 0 {
                std::mem::take(&mut e.err)
            } else {
                libc::ENOTCONN
            });
        };
        if e.err != 0 {
            c.connecting = false;
            return ConnectState::Failed(std::mem::take(&mut e.err));
        }
        match self.set.get::<tcp::Socket>(c.h).state() {
            State::SynSent | State::SynReceived => ConnectState::Pending,
            State::Closed | State::Listen => {
                c.connecting = false;
                ConnectState::Failed(libc::ECONNREFUSED)
            }
            _ => {
                c.connecting = false;
                ConnectState::Connected
            }
        }
    }

    pub fn take_error(&mut self, s: &UserSock) -> i32 {
        self.entries
            .get_mut(&s.0)
            .map_or(libc::EBADF, |e| std::mem::take(&mut e.err))
    }

    pub fn shutdown(&mut self, s: &UserSock, how: i32) -> io::Result<()> {
        let e = entry!(self, s);
        let rd = how == libc::SHUT_RD || how == libc::SHUT_RDWR;
        if rd && matches!(e.kind, Kind::Listen(_)) {
            // Linux: a listener shut for reading stops listening (queued connections are reset)
            // and keeps its port.
            let Kind::Listen(l) = std::mem::replace(&mut e.kind, Kind::Fresh) else {
                return Ok(());
            };
            let port = l.endpoint.port;
            self.listeners.retain(|&x| x != s.0);
            if let Some(v) = self.ports.get_mut(&port) {
                for u in v.iter_mut().filter(|u| u.id == s.0) {
                    u.listening = false;
                }
            }
            self.drop_listen(l);
            return Ok(());
        }
        let Kind::Conn(c) = &mut e.kind else {
            return Err(err(libc::ENOTCONN));
        };
        let h = c.h;
        if how == libc::SHUT_RD || how == libc::SHUT_RDWR {
            c.shut_rd = true;
        }
        e.dirty = true;
        if how == libc::SHUT_WR || how == libc::SHUT_RDWR {
            self.set.get_mut::<tcp::Socket>(h).close();
        }
        self.work_pending = true;
        Ok(())
    }

    pub fn local_addr(&mut self, s: &UserSock) -> io::Result<SocketAddr> {
        let e = entry!(self, s);
        let domain = e.domain;
        if let Kind::Conn(c) = &e.kind {
            if let Some(ep) = self.set.get::<tcp::Socket>(c.h).local_endpoint() {
                return Ok(sockaddr(domain, ep));
            }
        }
        Ok(e.bound.unwrap_or_else(|| unspecified(domain, 0)))
    }

    pub fn peer_addr(&mut self, s: &UserSock) -> io::Result<SocketAddr> {
        let e = entry!(self, s);
        let domain = e.domain;
        if let Kind::Conn(c) = &e.kind {
            let t = self.set.get::<tcp::Socket>(c.h);
            if !matches!(t.state(), State::SynSent | State::Closed) {
                if let Some(ep) = t.remote_endpoint() {
                    return Ok(sockaddr(domain, ep));
                }
            }
        }
        Err(err(libc::ENOTCONN))
    }

    pub fn setsockopt(
        &mut self,
        s: &UserSock,
        level: i32,
        name: i32,
        val: &[u8],
    ) -> io::Result<()> {
        let e = entry!(self, s);
        let o = &mut e.opts;
        let int = || sockopts::int(val);
        match (level, name) {
            (libc::SOL_SOCKET, libc::SO_REUSEPORT) => o.reuseport = int()? != 0,
            (libc::SOL_SOCKET, libc::SO_RCVBUF) => {
                o.rcvbuf = Some((int()?.max(0) as usize * 2).clamp(4096, 16 << 20))
            }
            (libc::SOL_SOCKET, libc::SO_SNDBUF) => {
                o.sndbuf = Some((int()?.max(0) as usize * 2).clamp(4096, 16 << 20))
            }
            _ => {
                if !o.set(level, name, val)? {
                    tracing::debug!(
                        level,
                        name,
                        "user backend: setsockopt not supported (ENOPROTOOPT)"
                    );
                    return Err(err(libc::ENOPROTOOPT));
                }
            }
        }
        let opts = e.opts;
        let h = match &e.kind {
            Kind::Conn(c) => Some(c.h),
            _ => None,
        };
        if let Some(h) = h {
            apply_opts(&opts, self.set.get_mut::<tcp::Socket>(h));
            // A keepalive or timeout just set may be the interface's earliest deadline: only a
            // poll arms the backend's timer for it.
            self.work_pending = true;
        }
        Ok(())
    }

    pub fn getsockopt(
        &mut self,
        s: &UserSock,
        level: i32,
        name: i32,
        buf: &mut [u8],
    ) -> io::Result<usize> {
        let e = entry!(self, s);
        let o = e.opts;
        let listening = matches!(e.kind, Kind::Listen(_));
        let conn = match &e.kind {
            Kind::Conn(c) => Some(c.h),
            _ => None,
        };
        if let Some(n) = o.get(level, name, buf) {
            return Ok(n);
        }
        let v = match (level, name) {
            (libc::SOL_SOCKET, libc::SO_ERROR) => std::mem::take(&mut e.err),
            (libc::SOL_SOCKET, libc::SO_TYPE) => libc::SOCK_STREAM,
            (libc::SOL_SOCKET, libc::SO_DOMAIN) => e.domain,
            (libc::SOL_SOCKET, libc::SO_PROTOCOL) => libc::IPPROTO_TCP,
            (libc::SOL_SOCKET, libc::SO_ACCEPTCONN) => i32::from(listening),
            (libc::SOL_SOCKET, libc::SO_REUSEPORT) => i32::from(o.reuseport),
            (libc::SOL_SOCKET, libc::SO_RCVBUF) => o.rcvbuf.unwrap_or(self.cfg.rx_buf) as i32,
            (libc::SOL_SOCKET, libc::SO_SNDBUF) => o.sndbuf.unwrap_or(self.cfg.tx_buf) as i32,
            (libc::IPPROTO_TCP, libc::TCP_MAXSEG) => {
                let _ = conn;
                1460
            }
            _ => {
                tracing::debug!(
                    level,
                    name,
                    "user backend: getsockopt not supported (ENOPROTOOPT)"
                );
                return Err(err(libc::ENOPROTOOPT));
            }
        };
        Ok(sockopts::put_int(buf, v))
    }

    /// Receives into `buf`; `Ok(0)` is end of stream.
    pub fn recv(&mut self, s: &UserSock, bufs: &mut [&mut [u8]]) -> io::Result<usize> {
        let e = entry!(self, s);
        let Kind::Conn(c) = &mut e.kind else {
            return Err(err(libc::ENOTCONN));
        };
        if c.shut_rd {
            return Ok(0);
        }
        let h = c.h;
        let t = self.set.get_mut::<tcp::Socket>(h);
        let mut n = 0;
        for b in bufs.iter_mut() {
            match t.recv_slice(b) {
                Ok(k) => {
                    n += k;
                    if k < b.len() {
                        break;
                    }
                }
                Err(tcp::RecvError::Finished) => break,
                Err(tcp::RecvError::InvalidState) => break,
            }
        }
        if n > 0 {
            // The window opened: smoltcp may owe the peer a window update.
            self.work_pending = true;
            return Ok(n);
        }
        if e.err != 0 {
            return Err(err(std::mem::take(&mut e.err)));
        }
        let t = self.set.get::<tcp::Socket>(h);
        if t.may_recv() || matches!(t.state(), State::SynSent | State::SynReceived) {
            Err(err(libc::EAGAIN))
        } else {
            Ok(0)
        }
    }

    /// Sends from `bufs` (never blocks, never raises SIGPIPE).
    pub fn send(&mut self, s: &UserSock, bufs: &[&[u8]]) -> io::Result<usize> {
        let e = entry!(self, s);
        let Kind::Conn(c) = &mut e.kind else {
            return Err(err(libc::ENOTCONN));
        };
        let h = c.h;
        if e.err != 0 {
            return Err(err(std::mem::take(&mut e.err)));
        }
        let t = self.set.get_mut::<tcp::Socket>(h);
        if !t.may_send() {
            return Err(err(match t.state() {
                State::SynSent | State::SynReceived => libc::EAGAIN,
                _ => libc::EPIPE,
            }));
        }
        let mut n = 0;
        for b in bufs {
            match t.send_slice(b) {
                Ok(k) => {
                    n += k;
                    if k < b.len() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        if n == 0 {
            return Err(err(libc::EAGAIN));
        }
        self.work_pending = true;
        Ok(n)
    }

    pub fn register(&mut self, s: &UserSock, token: u64) -> io::Result<()> {
        let e = entry!(self, s);
        e.token = Some(token);
        e.dirty = true;
        self.work_pending = true;
        Ok(())
    }

    pub fn close(&mut self, s: UserSock) {
        let Some(e) = self.entries.remove(&s.0) else {
            return;
        };
        self.release_port(s.0, e.bound);
        let now = self.now;
        match e.kind {
            Kind::Fresh => {}
            Kind::Listen(l) => {
                self.listeners.retain(|&x| x != s.0);
                self.drop_listen(l);
            }
            Kind::Conn(c) => {
                let t = self.set.get_mut::<tcp::Socket>(c.h);
                // SO_LINGER with a zero timeout, or unread data, resets the connection (Linux).
                let reset = (e.opts.linger.0 != 0 && e.opts.linger.1 == 0) || t.recv_queue() > 0;
                if reset {
                    t.abort();
                } else {
                    t.close();
                }
                self.orphans.push(Orphan {
                    h: c.h,
                    deadline: now + ORPHAN_TIMEOUT,
                });
            }
        }
        self.work_pending = true;
    }

    /// Releases a listener's pool; connections nobody accepted are reset, as Linux does.
    fn drop_listen(&mut self, l: Listen) {
        for h in l.spares {
            self.set.remove(h);
        }
        for h in l.pending {
            self.set.get_mut::<tcp::Socket>(h).abort();
            self.orphans.push(Orphan {
                h,
                deadline: self.now,
            });
        }
        // The port filter is recomputed at the next poll.
        self.work_pending = true;
    }

    // -----------------------------------------------------------------------------------------
    // Time and frames

    /// Processes received frames, timers and queued sends at `now`; appends readiness changes of
    /// registered sockets to `out`. Returns true when more work is already due (frames left
    /// unprocessed, or the device is full).
    pub fn poll<D: Device>(
        &mut self,
        now: Instant,
        port: &mut Port<D>,
        out: &mut Vec<SockEvent>,
    ) -> bool {
        self.now = now;
        TSVAL_MS.store(now.total_millis() as u32, Ordering::Relaxed);
        self.work_pending = false;
        let mut budget = INGRESS_BUDGET;
        let mut more = false;
        while budget > 0 {
            match self.iface.poll_ingress_single(now, port, &mut self.set) {
                PollIngressSingleResult::None => break,
                PollIngressSingleResult::PacketProcessed => {}
                PollIngressSingleResult::SocketStateChanged => self.replenish_all(port),
            }
            budget -= 1;
        }
        if budget == 0 {
            more = true;
        }
        self.iface.poll_egress(now, port, &mut self.set);
        self.maintain(now, port, out);
        if self.work_pending {
            self.work_pending = false;
            self.iface.poll_egress(now, port, &mut self.set);
        }
        more |= port.flush();
        more || port.rx_pending()
    }

    fn replenish_all<D: Device>(&mut self, port: &mut Port<D>) {
        for i in 0..self.listeners.len() {
            self.replenish(self.listeners[i]);
        }
        self.update_full_ports(port);
    }

    /// Ports where no listener has a listening socket left: their SYNs are dropped.
    fn update_full_ports<D: Device>(&mut self, port: &mut Port<D>) {
        port.full_ports.clear();
        let mut open: HashMap<u16, bool> = HashMap::new();
        for id in &self.listeners {
            if let Some(Entry {
                kind: Kind::Listen(l),
                ..
            }) = self.entries.get(id)
            {
                *open.entry(l.endpoint.port).or_default() |= !l.spares.is_empty();
            }
        }
        for (p, o) in open {
            if !o {
                port.full_ports.insert(p);
            }
        }
    }

    fn maintain<D: Device>(&mut self, now: Instant, port: &mut Port<D>, out: &mut Vec<SockEvent>) {
        self.replenish_all(port);
        let set = &mut self.set;
        for e in self.entries.values_mut() {
            match &mut e.kind {
                Kind::Fresh => {}
                Kind::Listen(l) => {
                    l.pending.retain(|&h| {
                        if set.get::<tcp::Socket>(h).state() == State::Closed {
                            set.remove(h);
                            false
                        } else {
                            true
                        }
                    });
                    let ready = l
                        .pending
                        .iter()
                        .filter(|&&h| {
                            !matches!(
                                set.get::<tcp::Socket>(h).state(),
                                State::SynReceived | State::Listen
                            )
                        })
                        .count();
                    let changed = ready > l.reported || (e.dirty && ready > 0);
                    l.reported = ready;
                    if let (true, Some(token)) = (changed, e.token) {
                        out.push(SockEvent {
                            token,
                            ready: Readiness {
                                readable: true,
                                ..Readiness::default()
                            },
                        });
                    }
                    e.dirty = false;
                }
                Kind::Conn(c) => {
                    let t = set.get_mut::<tcp::Socket>(c.h);
                    let state = t.state();
                    let sq = t.send_queue();
                    let rq = t.recv_queue();
                    if sq < c.progress_sq || sq == 0 || rq > c.last.map_or(0, |l| l.rq) {
                        c.progress = now;
                    }
                    c.progress_sq = sq;
                    let prev = c.last.map(|l| l.state);
                    if state == State::Closed
                        && e.err == 0
                        && !matches!(
                            prev,
                            Some(State::Closed | State::LastAck | State::TimeWait | State::Closing)
                        )
                    {
                        e.err = if c.connecting {
                            if c.connect_deadline.is_some_and(|d| now >= d) {
                                libc::ETIMEDOUT
                            } else {
                                libc::ECONNREFUSED
                            }
                        } else if e.opts.keepalive && !t.is_open() && prev.is_some() {
                            // smoltcp aborts after the keepalive timeout without telling us
                            // why; a reset and a dead peer both end here.
                            if now >= c.progress + Duration::from_secs(u64::from(e.opts.keepidle)) {
                                libc::ETIMEDOUT
                            } else {
                                libc::ECONNRESET
                            }
                        } else {
                            libc::ECONNRESET
                        };
                    }
                    if c.connecting && state == State::SynSent {
                        if let Some(d) = c.connect_deadline.filter(|&d| now >= d) {
                            let _ = d;
                            t.abort();
                            e.err = libc::ETIMEDOUT;
                            self.work_pending = true;
                        }
                    }
                    if sq > 0 && state != State::Closed && now >= c.progress + RETRANSMIT_TIMEOUT {
                        t.abort();
                        e.err = libc::ETIMEDOUT;
                        self.work_pending = true;
                    }
                    let snap = Snap {
                        state: t.state(),
                        rq,
                        sq,
                        err: e.err,
                    };
                    if c.last != Some(snap) || e.dirty {
                        c.last = Some(snap);
                        e.dirty = false;
                        if let Some(token) = e.token {
                            let remote_done = matches!(
                                snap.state,
                                State::CloseWait
                                    | State::LastAck
                                    | State::Closing
                                    | State::TimeWait
                                    | State::Closed
                            );
                            out.push(SockEvent {
                                token,
                                ready: Readiness {
                                    readable: rq > 0 || !t.may_recv() || snap.err != 0,
                                    writable: t.can_send() || !t.may_send(),
                                    hup: remote_done,
                                    error: snap.err != 0,
                                    urgent: false,
                                },
                            });
                        }
                    }
                }
            }
        }
        // Orphans: gone once closed (or in TIME-WAIT); reset when they overstay.
        let mut i = 0;
        while i < self.orphans.len() {
            let o = &self.orphans[i];
            let t = self.set.get_mut::<tcp::Socket>(o.h);
            match t.state() {
                State::Closed | State::TimeWait => {
                    let o = self.orphans.swap_remove(i);
                    self.set.remove(o.h);
                    continue;
                }
                _ if now >= o.deadline => {
                    t.abort();
                    self.work_pending = true;
                }
                _ => {}
            }
            i += 1;
        }
    }

    /// When the engine next needs a poll without new frames (None: only frames or calls wake
    /// it).
    pub fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        let mut d = self.iface.poll_delay(now, &self.set);
        let mut at = |t: Instant| {
            let x = if t > now { t - now } else { Duration::ZERO };
            d = Some(d.map_or(x, |y| y.min(x)));
        };
        for e in self.entries.values() {
            if let Kind::Conn(c) = &e.kind {
                if c.connecting {
                    if let Some(t) = c.connect_deadline {
                        at(t);
                    }
                }
                if c.progress_sq > 0 {
                    at(c.progress + RETRANSMIT_TIMEOUT);
                }
            }
        }
        for o in &self.orphans {
            at(o.deadline);
        }
        d
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
