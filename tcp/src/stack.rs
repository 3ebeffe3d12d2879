//! The endpoint: sockets, the connection table (hashed 4-tuple), listeners with Linux's bounded
//! SYN and accept queues and SYN cookies past them, ports, the timer wheel, the neighbour cache
//! and the frame paths in and out. Socket calls take Linux semantics and return Linux errnos.
//!
//! Work per call is proportional to what changed: a frame touches one connection; timers come
//! from the wheel; output walks only connections queued for it; readiness events are queued per
//! socket. Idle connections cost nothing per poll.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use core::time::Duration;

use crate::cc::CcAlgo;
use crate::conn::{ConnConfig, Effects, Keepalive, State, Tcb};
use crate::errno::{self, Errno};
use crate::frame::{DeviceCaps, Gso, RxCsum, RxMeta, TxMeta};
use crate::isn::IsnGenerator;
use crate::neigh::{Neighbors, Resolve};
use crate::seq::Seq;
use crate::source::{NoSource, TxSource};
use crate::syncookie::SynCookies;
use crate::time::Instant;
use crate::timer::TimerWheel;
use crate::timewait::{TimeWait, TwAction, MAX_TIME_WAIT};
use crate::wire::tcp::{flags as F, TcpOptions, TcpRepr};
use crate::wire::{arp, checksum, ethernet, icmpv4, icmpv6, ipv4, ipv6, tcp};
use crate::writer::{FrameWriter, NoWriter, WriteOutcome};

pub const EPHEMERAL: core::ops::RangeInclusive<u16> = 32768..=60999;
/// Linux's somaxconn.
pub const SOMAXCONN: usize = 4096;

/// Engine settings.
#[derive(Clone, Debug)]
pub struct StackConfig {
    pub mac: [u8; 6],
    pub ipv4: Option<(Ipv4Addr, u8)>,
    pub gateway4: Option<Ipv4Addr>,
    pub ipv6: Option<(Ipv6Addr, u8)>,
    pub gateway6: Option<Ipv6Addr>,
    pub caps: DeviceCaps,
    /// Default and largest receive buffer (Linux tcp_rmem[1], [2]).
    pub rcvbuf: usize,
    pub rcvbuf_max: usize,
    /// Default and largest send buffer (Linux tcp_wmem[1], [2]).
    pub sndbuf: usize,
    pub sndbuf_max: usize,
    pub timestamps: bool,
    pub sack: bool,
    pub wscale: bool,
    /// Initial congestion window in segments (RFC 6928: 10).
    pub initial_window: u32,
    /// Congestion control of connections whose socket did not choose one (TCP_CONGESTION);
    /// Linux's net.ipv4.tcp_congestion_control. CUBIC unless set.
    pub congestion: CcAlgo,
    /// Seeds ISNs, SYN cookies, timestamps offsets and port choice.
    pub seed: u64,
    /// Accept a TCP segment whose checksum field holds exactly the pseudo-header sum (a virtual
    /// link's CHECKSUM_PARTIAL frame seen by a device that carries no checksum state).
    pub trust_partial_csum: bool,
}

impl StackConfig {
    pub fn new(mac: [u8; 6]) -> StackConfig {
        StackConfig {
            mac,
            ipv4: None,
            gateway4: None,
            ipv6: None,
            gateway6: None,
            caps: DeviceCaps::default(),
            rcvbuf: 131072,
            rcvbuf_max: 6 << 20,
            sndbuf: 16384,
            sndbuf_max: 4 << 20,
            timestamps: true,
            sack: true,
            wscale: true,
            initial_window: 10,
            congestion: CcAlgo::Cubic,
            seed: 0x5eed,
            trust_partial_csum: false,
        }
    }
}

/// A socket handle (slab index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockId(pub u32);

/// Readiness of a socket, as Linux's poll would report it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    pub readable: bool,
    pub writable: bool,
    /// Peer finished sending or the connection is gone (EPOLLRDHUP/EPOLLHUP).
    pub hup: bool,
    pub error: bool,
    /// Urgent data: changes with each urgent pointer and when its byte arrives (0: never any;
    /// `Tcb::urgent_gen`).
    pub urgent: u32,
    /// Set by [`Stack::poll_event`] when `urgent` changed since the last report (never part of
    /// what is compared).
    pub urgent_news: bool,
}

/// Socket options the engine acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SockOpt {
    NoDelay(bool),
    Cork(bool),
    KeepAlive(bool),
    KeepIdle(u32),
    KeepIntvl(u32),
    KeepCnt(u32),
    /// SO_LINGER (on, seconds).
    Linger(bool, u32),
    ReuseAddr(bool),
    ReusePort(bool),
    /// SO_RCVBUF / SO_SNDBUF as the application passed them (doubled like Linux).
    RcvBuf(usize),
    SndBuf(usize),
    V6Only(bool),
    MaxSeg(u16),
    /// TCP_CONGESTION: before or after connect (a connection switches at once, keeping its
    /// window); [`CcAlgo::from_name`] parses the option's value.
    Congestion(CcAlgo),
}

#[derive(Clone, Copy, Debug)]
pub struct Opts {
    pub nodelay: bool,
    pub cork: bool,
    pub keepalive: bool,
    pub keepidle: u32,
    pub keepintvl: u32,
    pub keepcnt: u32,
    pub linger: Option<u32>,
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub rcvbuf: Option<usize>,
    pub sndbuf: Option<usize>,
    pub v6only: bool,
    pub maxseg: Option<u16>,
    /// TCP_CONGESTION as set on the socket (`None`: the stack's default).
    pub congestion: Option<CcAlgo>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            nodelay: false,
            cork: false,
            keepalive: false,
            keepidle: 7200,
            keepintvl: 75,
            keepcnt: 9,
            linger: None,
            reuseaddr: false,
            reuseport: false,
            rcvbuf: None,
            sndbuf: None,
            v6only: false,
            maxseg: None,
            congestion: None,
        }
    }
}

impl Opts {
    fn keepalive(&self) -> Option<Keepalive> {
        self.keepalive.then(|| Keepalive {
            idle: Duration::from_secs(u64::from(self.keepidle.max(1))),
            interval: Duration::from_secs(u64::from(self.keepintvl.max(1))),
            count: self.keepcnt.max(1),
        })
    }
}

struct Listener {
    backlog: usize,
    /// Connections in SYN-RECEIVED.
    syn_queue: usize,
    /// Established connections not yet accepted, oldest first.
    accept: VecDeque<u32>,
    reported: bool,
}

enum Kind {
    Fresh,
    Listen(Listener),
    Conn(Box<Tcb>),
    /// A connection in TIME-WAIT that nobody holds, reduced to what the wait needs.
    TimeWait(TimeWait),
}

struct Sock {
    v6: bool,
    kind: Kind,
    bound: Option<SocketAddr>,
    opts: Opts,
    token: u64,
    err: Errno,
    /// Held by the application (not yet closed; not a half-open child).
    user: bool,
    /// Child of a listener (slab index) until accepted.
    parent: Option<u32>,
    /// In the conn table under this key.
    keyed: Option<(SocketAddr, SocketAddr)>,
    in_txq: bool,
    in_evq: bool,
    last_ready: Option<Ready>,
    timer_at: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
struct PortUse {
    id: u32,
    addr: Option<IpAddr>,
    reuseaddr: bool,
    reuseport: bool,
    listening: bool,
}

/// A frame ready for the device.
pub struct Frame {
    pub buf: Vec<u8>,
    pub meta: TxMeta,
}

/// TCP counters summed over connections (live and gone).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpCounters {
    pub segs_in: u64,
    pub segs_out: u64,
    pub retrans_segs: u64,
    pub fast_recoveries: u64,
    pub rtos: u64,
    pub tlps: u64,
    pub dsacks: u64,
    pub undos: u64,
}

impl TcpCounters {
    fn add(&mut self, c: &crate::conn::ConnStats) {
        self.segs_in += c.segs_in;
        self.segs_out += c.segs_out;
        self.retrans_segs += c.retrans_segs;
        self.fast_recoveries += c.fast_recoveries;
        self.rtos += c.rtos;
        self.tlps += c.tlps;
        self.dsacks += c.dsacks;
        self.undos += c.undos;
    }
}

/// Counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct StackStats {
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub rx_dropped: u64,
    pub rx_csum_errors: u64,
    /// Segments accepted with a pseudo-header-only checksum (`trust_partial_csum`).
    pub rx_csum_partial: u64,
    pub rx_malformed: u64,
    pub syn_dropped: u64,
    pub syncookies_sent: u64,
    pub syncookies_ok: u64,
    pub syncookies_failed: u64,
    pub rst_sent: u64,
    pub retrans_segs: u64,
    pub active_opens: u64,
    pub passive_opens: u64,
    pub icmp_echo: u64,
    pub arp_requests: u64,
    pub conns: u64,
    /// Connections in TIME-WAIT (compact entries).
    pub time_wait: u64,
    /// Connections that skipped TIME-WAIT because MAX_TIME_WAIT entries existed.
    pub time_wait_overflow: u64,
    /// Segments not sent because their lent stream could not be read (crate::source).
    pub tx_lent_missing: u64,
    /// Data segments built straight in device memory (crate::writer), and data segments built
    /// in the engine's own frame buffers (no device writer, the device full, the next hop not
    /// resolved, or behind a frame already queued in [`Stack::frames`]).
    pub tx_data_direct: u64,
    pub tx_data_buffered: u64,
}

pub struct Stack {
    cfg: StackConfig,
    now: Instant,
    socks: Vec<Option<Sock>>,
    free: Vec<u32>,
    conns: Map<(SocketAddr, SocketAddr), u32>,
    listeners: Map<u16, Vec<u32>>,
    ports: Map<u16, Vec<PortUse>>,
    wheel: TimerWheel,
    fired: Vec<u32>,
    neigh: Neighbors,
    txq: VecDeque<u32>,
    evq: VecDeque<u32>,
    out: VecDeque<Frame>,
    pool: Vec<Vec<u8>>,
    /// Segment descriptors of the connection being transmitted (reused).
    segs: Vec<crate::output::OutSeg>,
    isn: IsnGenerator,
    cookies: SynCookies,
    rng: u64,
    pub stats: StackStats,
    /// Counters of connections already freed.
    retired: TcpCounters,
}

fn key_bytes(seed: u64, salt: u64) -> [u8; 16] {
    let mut x = seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut out = [0u8; 16];
    for chunk in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    out
}

fn is_unspecified(a: &SocketAddr) -> bool {
    a.ip().is_unspecified()
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canon(a: SocketAddr) -> SocketAddr {
    if let SocketAddr::V6(v6) = a {
        if let Some(v4) = v6.ip().to_ipv4_mapped() {
            return SocketAddr::new(IpAddr::V4(v4), v6.port());
        }
    }
    a
}

fn in_subnet(a: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix.min(32)))
            };
            u32::from(a) & m == u32::from(n) & m
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix.min(128)))
            };
            u128::from(a) & m == u128::from(n) & m
        }
        _ => false,
    }
}

fn solicited_node(ip: &Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

fn ipv6_mcast_mac(ip: &Ipv6Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// Length of the Ethernet + IP + TCP frame of `repr` with `plen` payload bytes.
fn tcp_frame_len(v6: bool, repr: &TcpRepr, plen: usize) -> usize {
    let ip_len = if v6 {
        ipv6::HEADER_LEN
    } else {
        ipv4::HEADER_LEN
    };
    ethernet::HEADER_LEN + ip_len + repr.header_len() + plen
}

/// Writes the Ethernet header of a frame from `src` to `dst`.
fn write_eth(buf: &mut [u8], src: [u8; 6], dst: [u8; 6], v6: bool) {
    ethernet::EthRepr {
        dst,
        src,
        ethertype: if v6 {
            ethernet::ETHERTYPE_IPV6
        } else {
            ethernet::ETHERTYPE_IPV4
        },
    }
    .emit(&mut buf[..ethernet::HEADER_LEN]);
}

/// Writes the IP + TCP part of a frame into `b`, exactly [`tcp_frame_len`] bytes (the Ethernet
/// header's 14 bytes are left as they are, for the neighbour layer or the caller): the payload
/// is copied once, from the send buffer's slices or the lent stream into the frame, wherever
/// that frame lives (an engine buffer or device memory, crate::writer); every other byte is
/// written. The checksum is left to the device when it can (`CHECKSUM_PARTIAL`), and a payload
/// above the MSS is marked for TSO. None: the lent stream could not be read.
#[allow(clippy::too_many_arguments)]
fn write_tcp(
    b: &mut [u8],
    caps: &DeviceCaps,
    ident: u16,
    local: SocketAddr,
    remote: SocketAddr,
    repr: &TcpRepr,
    payload: Payload<'_>,
    gso: Option<u16>,
) -> Option<TxMeta> {
    let v6 = remote.is_ipv6();
    let ip_len = if v6 {
        ipv6::HEADER_LEN
    } else {
        ipv4::HEADER_LEN
    };
    let th = repr.header_len();
    let plen = payload.len();
    let l4 = th + plen;
    let start = ethernet::HEADER_LEN + ip_len;
    debug_assert_eq!(b.len(), start + l4);
    repr.emit(&mut b[start..start + th]);
    let body = &mut b[start + th..];
    match payload {
        Payload::Slices(x, y) => {
            body[..x.len()].copy_from_slice(x);
            body[x.len()..].copy_from_slice(y);
        }
        Payload::Lent { src, id, index, .. } => {
            if !src.copy_tx(id, index, body) {
                return None;
            }
        }
    }
    let pseudo = match (local.ip(), remote.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            ipv4::Ipv4Repr {
                src: s,
                dst: d,
                proto: ipv4::PROTO_TCP,
                ttl: 64,
                tos: 0,
                ident,
                dont_frag: true,
                payload_len: l4,
            }
            .emit(&mut b[ethernet::HEADER_LEN..start]);
            checksum::pseudo_v4(s, d, ipv4::PROTO_TCP, l4 as u32)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            ipv6::Ipv6Repr {
                src: s,
                dst: d,
                next_header: ipv6::NEXT_TCP,
                hop_limit: 64,
                traffic_class: 0,
                flow_label: 0,
                payload_len: l4,
            }
            .emit(&mut b[ethernet::HEADER_LEN..start]);
            checksum::pseudo_v6(&s, &d, ipv6::NEXT_TCP, l4 as u32)
        }
        _ => 0,
    };
    let mut meta = TxMeta::default();
    if caps.tx_csum {
        tcp::fill_checksum(&mut b[start..], pseudo, true);
        meta.csum = Some((start as u16, tcp::CSUM_OFFSET as u16));
    } else {
        tcp::fill_checksum(&mut b[start..], pseudo, false);
    }
    if let Some(g) = gso.filter(|&g| caps.tso && plen > usize::from(g)) {
        meta.gso = Some(Gso {
            segment_size: g,
            ipv6: v6,
        });
    }
    Some(meta)
}

/// The device writer of one [`Stack::poll_transmit_into`] call, and whether frames may still
/// go to it: not after one of this poll's frames went to [`Stack::frames`] (order on the wire).
struct Direct<'a> {
    w: &'a mut dyn FrameWriter,
    open: bool,
    written: usize,
}

/// The engine's hash maps, looked up for every frame: a fast keyed hash (foldhash) instead of
/// std's SipHash. The key comes from the stack's seed, so peers choosing 4-tuples cannot aim at
/// one bucket without knowing it (Linux keys its connection hash with a random secret the same
/// way, with jhash).
type Map<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

fn map_hasher(seed: u64) -> foldhash::fast::FixedState {
    let k = key_bytes(seed, 3);
    foldhash::fast::FixedState::with_seed(u64::from_le_bytes([
        k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7],
    ]))
}

/// A segment's payload: bytes at hand, or a range of a lent stream (crate::source) copied
/// straight into the frame.
#[derive(Clone, Copy)]
enum Payload<'a> {
    Slices(&'a [u8], &'a [u8]),
    Lent {
        src: &'a dyn TxSource,
        id: SockId,
        index: u32,
        len: usize,
    },
}

impl Payload<'_> {
    fn len(&self) -> usize {
        match self {
            Payload::Slices(x, y) => x.len() + y.len(),
            Payload::Lent { len, .. } => *len,
        }
    }
}

impl Stack {
    pub fn new(cfg: StackConfig, now: Instant) -> Stack {
        let seed = cfg.seed;
        let isn = IsnGenerator::new(key_bytes(cfg.seed, 1));
        let cookies = SynCookies::new(key_bytes(cfg.seed, 2));
        Stack {
            rng: cfg.seed | 1,
            cfg,
            now,
            socks: Vec::new(),
            free: Vec::new(),
            conns: Map::with_hasher(map_hasher(seed)),
            listeners: Map::with_hasher(map_hasher(seed)),
            ports: Map::with_hasher(map_hasher(seed)),
            wheel: TimerWheel::new(now),
            fired: Vec::new(),
            neigh: Neighbors::default(),
            txq: VecDeque::new(),
            evq: VecDeque::new(),
            out: VecDeque::new(),
            pool: Vec::new(),
            segs: Vec::new(),
            isn,
            cookies,
            stats: StackStats::default(),
            retired: TcpCounters::default(),
        }
    }

    pub fn config(&self) -> &StackConfig {
        &self.cfg
    }

    /// The device's offloads changed (an administrator's `ethtool -K`): segments built from
    /// now on follow them (TSO super-frames only while the device cuts them).
    pub fn set_caps(&mut self, caps: DeviceCaps) {
        self.cfg.caps = caps;
    }

    fn rand(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    fn sock(&self, id: SockId) -> Result<&Sock, Errno> {
        self.socks
            .get(id.0 as usize)
            .and_then(|s| s.as_ref())
            .filter(|s| s.user)
            .ok_or(errno::EINVAL)
    }

    fn sock_mut(&mut self, id: SockId) -> Result<&mut Sock, Errno> {
        self.socks
            .get_mut(id.0 as usize)
            .and_then(|s| s.as_mut())
            .filter(|s| s.user)
            .ok_or(errno::EINVAL)
    }

    fn alloc(&mut self, s: Sock) -> u32 {
        if let Some(i) = self.free.pop() {
            self.socks[i as usize] = Some(s);
            i
        } else {
            self.socks.push(Some(s));
            (self.socks.len() - 1) as u32
        }
    }

    fn new_sock(v6: bool) -> Sock {
        Sock {
            v6,
            kind: Kind::Fresh,
            bound: None,
            opts: Opts::default(),
            token: 0,
            err: 0,
            user: true,
            parent: None,
            keyed: None,
            in_txq: false,
            in_evq: false,
            last_ready: None,
            timer_at: None,
        }
    }

    fn release(&mut self, i: u32) {
        if let Some(s) = self.socks.get_mut(i as usize).and_then(|s| s.take()) {
            if let Some(k) = s.keyed {
                if self.conns.get(&k) == Some(&i) {
                    self.conns.remove(&k);
                }
            }
            if let Some(b) = s.bound {
                if let Some(v) = self.ports.get_mut(&b.port()) {
                    v.retain(|u| u.id != i);
                    if v.is_empty() {
                        self.ports.remove(&b.port());
                    }
                }
            }
            if let Kind::Listen(_) = s.kind {
                if let Some(b) = s.bound {
                    if let Some(v) = self.listeners.get_mut(&b.port()) {
                        v.retain(|&x| x != i);
                        if v.is_empty() {
                            self.listeners.remove(&b.port());
                        }
                    }
                }
            }
            match s.kind {
                Kind::Conn(t) => {
                    self.stats.conns = self.stats.conns.saturating_sub(1);
                    self.retired.add(&t.stats);
                }
                Kind::TimeWait(_) => self.stats.time_wait = self.stats.time_wait.saturating_sub(1),
                _ => {}
            }
            self.free.push(i);
        }
    }

    fn tcb_cfg(&self, opts: &Opts, v6: bool) -> ConnConfig {
        let ip_hdr = if v6 { 40 } else { 20 };
        let link_mss = (self.cfg.caps.mtu.saturating_sub(ip_hdr + 20)).clamp(88, 65495) as u16;
        let link_mss = opts.maxseg.map_or(link_mss, |m| m.clamp(88, link_mss));
        let tso_max = if self.cfg.caps.tso {
            (self.cfg.caps.max_tso_frame.saturating_sub(14 + ip_hdr + 60)).min(65535 - 60 - ip_hdr)
                as u32
        } else {
            0
        };
        let rcv = opts.rcvbuf.unwrap_or(self.cfg.rcvbuf);
        let snd = opts.sndbuf.unwrap_or(self.cfg.sndbuf);
        ConnConfig {
            link_mss,
            rcvbuf: rcv,
            rcvbuf_max: if opts.rcvbuf.is_some() {
                rcv
            } else {
                self.cfg.rcvbuf_max
            },
            rcvbuf_locked: opts.rcvbuf.is_some(),
            sndbuf: snd,
            sndbuf_max: if opts.sndbuf.is_some() {
                snd
            } else {
                self.cfg.sndbuf_max
            },
            sndbuf_locked: opts.sndbuf.is_some(),
            nodelay: opts.nodelay,
            cork: opts.cork,
            keepalive: opts.keepalive(),
            tso_max,
            timestamps: self.cfg.timestamps,
            sack: self.cfg.sack,
            wscale: self.cfg.wscale,
            initial_window: self.cfg.initial_window,
            ts_offset: 0,
            cc: opts.congestion.unwrap_or(self.cfg.congestion),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Socket calls

    pub fn socket(&mut self, v6: bool) -> Result<SockId, Errno> {
        if v6 && self.cfg.ipv6.is_none() && self.cfg.ipv4.is_none() {
            return Err(errno::EAFNOSUPPORT);
        }
        Ok(SockId(self.alloc(Self::new_sock(v6))))
    }

    pub fn set_token(&mut self, id: SockId, token: u64) -> Result<(), Errno> {
        let s = self.sock_mut(id)?;
        s.token = token;
        s.last_ready = None;
        self.queue_event(id.0);
        Ok(())
    }

    fn our_ip(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.cfg.ipv4.is_some_and(|(x, _)| x == a),
            IpAddr::V6(a) => self.cfg.ipv6.is_some_and(|(x, _)| x == a),
        }
    }

    fn port_free(&self, port: u16, u: &PortUse) -> bool {
        self.ports.get(&port).map_or(true, |v| {
            v.iter().all(|o| {
                let overlap = o.addr.is_none() || u.addr.is_none() || o.addr == u.addr;
                !overlap
                    || (o.reuseport && u.reuseport)
                    || (o.reuseaddr && u.reuseaddr && !(o.listening && u.listening))
            })
        })
    }

    fn pick_port(&mut self, remote: Option<SocketAddr>, local_ip: IpAddr) -> Result<u16, Errno> {
        let lo = *EPHEMERAL.start();
        let span = u32::from(*EPHEMERAL.end() - lo) + 1;
        let start = (self.rand() % u64::from(span)) as u32;
        for i in 0..span {
            let p = lo + ((start + i) % span) as u16;
            if self.ports.contains_key(&p) || self.listeners.contains_key(&p) {
                continue;
            }
            if let Some(r) = remote {
                if self.conns.contains_key(&(SocketAddr::new(local_ip, p), r)) {
                    continue;
                }
            }
            return Ok(p);
        }
        Err(errno::EADDRNOTAVAIL)
    }

    pub fn bind(&mut self, id: SockId, a: SocketAddr) -> Result<(), Errno> {
        let a = canon(a);
        let s = self.sock(id)?;
        if s.bound.is_some() || !matches!(s.kind, Kind::Fresh) {
            return Err(errno::EINVAL);
        }
        if a.is_ipv6() && !s.v6 {
            return Err(errno::EAFNOSUPPORT);
        }
        let opts = s.opts;
        let addr = if is_unspecified(&a) {
            None
        } else if self.our_ip(a.ip()) && !(a.is_ipv4() && s.v6 && opts.v6only) {
            Some(a.ip())
        } else {
            return Err(errno::EADDRNOTAVAIL);
        };
        let u = PortUse {
            id: id.0,
            addr,
            reuseaddr: opts.reuseaddr,
            reuseport: opts.reuseport,
            listening: false,
        };
        let port = if a.port() == 0 {
            let ip = addr.unwrap_or(a.ip());
            self.pick_port(None, ip)?
        } else {
            if !self.port_free(a.port(), &u) {
                return Err(errno::EADDRINUSE);
            }
            a.port()
        };
        self.ports.entry(port).or_default().push(u);
        let mut b = a;
        b.set_port(port);
        self.sock_mut(id)?.bound = Some(b);
        Ok(())
    }

    pub fn listen(&mut self, id: SockId, backlog: i32) -> Result<(), Errno> {
        let cap = if backlog < 0 {
            SOMAXCONN
        } else {
            (backlog as usize).min(SOMAXCONN)
        };
        let s = self.sock(id)?;
        match &s.kind {
            Kind::Listen(_) => {
                if let Kind::Listen(l) = &mut self.sock_mut(id)?.kind {
                    l.backlog = cap;
                }
                return Ok(());
            }
            Kind::Conn(_) | Kind::TimeWait(_) => return Err(errno::EINVAL),
            Kind::Fresh => {}
        }
        if s.bound.is_none() {
            let any = if s.v6 {
                SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)
            } else {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
            };
            self.bind(id, any)?;
        }
        let s = self.sock(id)?;
        let port = s.bound.map_or(0, |b| b.port());
        // Two listeners on one port need SO_REUSEPORT on both (SO_REUSEADDR is not enough).
        let me = self
            .ports
            .get(&port)
            .and_then(|v| v.iter().find(|u| u.id == id.0).copied());
        if let Some(me) = me {
            let clash = self.ports.get(&port).is_some_and(|v| {
                v.iter().any(|o| {
                    o.id != id.0
                        && o.listening
                        && (o.addr.is_none() || me.addr.is_none() || o.addr == me.addr)
                        && !(o.reuseport && me.reuseport)
                })
            });
            if clash {
                return Err(errno::EADDRINUSE);
            }
        }
        if let Some(v) = self.ports.get_mut(&port) {
            for u in v.iter_mut().filter(|u| u.id == id.0) {
                u.listening = true;
            }
        }
        let s = self.sock_mut(id)?;
        s.kind = Kind::Listen(Listener {
            backlog: cap,
            syn_queue: 0,
            accept: VecDeque::new(),
            reported: false,
        });
        self.listeners.entry(port).or_default().push(id.0);
        Ok(())
    }

    /// Takes the oldest established connection of a listener.
    pub fn accept(&mut self, id: SockId) -> Result<(SockId, SocketAddr), Errno> {
        let s = self.sock_mut(id)?;
        let Kind::Listen(l) = &mut s.kind else {
            return Err(errno::EINVAL);
        };
        let Some(c) = l.accept.pop_front() else {
            l.reported = false;
            return Err(errno::EAGAIN);
        };
        if l.accept.is_empty() {
            l.reported = false;
        }
        self.queue_event(id.0);
        let v6 = self.sock(id)?.v6;
        let opts = self.sock(id)?.opts;
        let child = self.socks[c as usize].as_mut().ok_or(errno::ECONNABORTED)?;
        child.user = true;
        child.parent = None;
        child.v6 = v6;
        child.opts = opts;
        let peer = match &child.kind {
            Kind::Conn(t) => t.remote,
            _ => return Err(errno::ECONNABORTED),
        };
        Ok((SockId(c), self.user_addr(v6, peer)))
    }

    /// An address as the application's family shows it (IPv4-mapped on IPv6 sockets).
    fn user_addr(&self, v6: bool, a: SocketAddr) -> SocketAddr {
        match (v6, a) {
            (true, SocketAddr::V4(v4)) => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            _ => a,
        }
    }

    /// Starts an active open: `Err(EINPROGRESS)` (never completes at once on a wire).
    pub fn connect(&mut self, id: SockId, remote: SocketAddr) -> Result<(), Errno> {
        let remote = canon(remote);
        let now = self.now;
        let s = self.sock(id)?;
        match &s.kind {
            Kind::Listen(_) | Kind::TimeWait(_) => return Err(errno::EISCONN),
            Kind::Conn(t) => {
                return Err(match t.state {
                    State::SynSent | State::SynReceived => errno::EALREADY,
                    State::Closed => {
                        if s.err != 0 {
                            s.err
                        } else {
                            errno::EISCONN
                        }
                    }
                    _ => errno::EISCONN,
                });
            }
            Kind::Fresh => {}
        }
        if remote.port() == 0 || remote.ip().is_unspecified() {
            return Err(errno::ECONNREFUSED);
        }
        if remote.is_ipv4() && s.v6 && s.opts.v6only {
            return Err(errno::ENETUNREACH);
        }
        let local_ip = match (
            remote.ip(),
            s.bound.map(|b| b.ip()).filter(|i| !i.is_unspecified()),
        ) {
            (_, Some(ip)) => ip,
            (IpAddr::V4(_), None) => IpAddr::V4(self.cfg.ipv4.ok_or(errno::ENETUNREACH)?.0),
            (IpAddr::V6(_), None) => IpAddr::V6(self.cfg.ipv6.ok_or(errno::ENETUNREACH)?.0),
        };
        if local_ip.is_ipv4() != remote.is_ipv4() {
            return Err(errno::ENETUNREACH);
        }
        if self.next_hop(remote.ip()).is_none() {
            return Err(errno::ENETUNREACH);
        }
        let opts = s.opts;
        let port = match s.bound {
            Some(b) => b.port(),
            None => {
                let p = self.pick_port(Some(remote), local_ip)?;
                self.ports.entry(p).or_default().push(PortUse {
                    id: id.0,
                    addr: Some(local_ip),
                    reuseaddr: opts.reuseaddr,
                    reuseport: opts.reuseport,
                    listening: false,
                });
                p
            }
        };
        let local = SocketAddr::new(local_ip, port);
        if self.conns.contains_key(&(local, remote)) {
            return Err(errno::EADDRNOTAVAIL);
        }
        let mut cfg = self.tcb_cfg(&opts, remote.is_ipv6());
        cfg.ts_offset = self.rand() as u32;
        let iss = self.isn.isn(local, remote, now);
        let t = Tcb::connect(local, remote, iss, cfg, now);
        let s = self.sock_mut(id)?;
        if s.bound.is_none() {
            s.bound = Some(local);
        }
        s.kind = Kind::Conn(Box::new(t));
        s.keyed = Some((local, remote));
        s.err = 0;
        self.conns.insert((local, remote), id.0);
        self.stats.active_opens += 1;
        self.stats.conns += 1;
        self.touch(id.0);
        Err(errno::EINPROGRESS)
    }

    /// The state of a connect under way: `Ok(true)` connected, `Ok(false)` pending, `Err`:
    /// failed with that errno.
    pub fn connect_result(&mut self, id: SockId) -> Result<bool, Errno> {
        let s = self.sock_mut(id)?;
        match &s.kind {
            Kind::Conn(t) => match t.state {
                State::SynSent | State::SynReceived => Ok(false),
                State::Closed if t.err != 0 || s.err != 0 => {
                    let e = if t.err != 0 { t.err } else { s.err };
                    Err(e)
                }
                _ => Ok(true),
            },
            _ => Err(errno::ENOTCONN),
        }
    }

    /// SO_ERROR: the pending error, cleared by reading.
    pub fn take_error(&mut self, id: SockId) -> Errno {
        let Ok(s) = self.sock_mut(id) else {
            return 0;
        };
        if let Kind::Conn(t) = &mut s.kind {
            if t.err != 0 {
                return core::mem::take(&mut t.err);
            }
        }
        core::mem::take(&mut s.err)
    }

    pub fn shutdown(&mut self, id: SockId, read: bool, write: bool) -> Result<(), Errno> {
        let s = self.sock_mut(id)?;
        match &mut s.kind {
            Kind::Conn(t) => {
                if matches!(t.state, State::SynSent) && write {
                    return Err(errno::ENOTCONN);
                }
                if read {
                    t.shut_rd = true;
                }
                if write {
                    t.shutdown_write();
                }
            }
            Kind::Listen(_) => {
                // Linux: shutdown of a listener stops it (accept then fails with EINVAL).
                return Err(errno::ENOTCONN);
            }
            Kind::Fresh | Kind::TimeWait(_) => return Err(errno::ENOTCONN),
        }
        self.touch(id.0);
        self.queue_event(id.0);
        Ok(())
    }

    pub fn local_addr(&self, id: SockId) -> Result<SocketAddr, Errno> {
        let s = self.sock(id)?;
        let a = match &s.kind {
            Kind::Conn(t) => t.local,
            _ => s.bound.unwrap_or_else(|| {
                if s.v6 {
                    SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)
                } else {
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
                }
            }),
        };
        Ok(self.user_addr(s.v6, a))
    }

    pub fn peer_addr(&self, id: SockId) -> Result<SocketAddr, Errno> {
        let s = self.sock(id)?;
        match &s.kind {
            Kind::Conn(t) if !matches!(t.state, State::SynSent | State::Closed) => {
                Ok(self.user_addr(s.v6, t.remote))
            }
            _ => Err(errno::ENOTCONN),
        }
    }

    pub fn set_opt(&mut self, id: SockId, o: SockOpt) -> Result<(), Errno> {
        let now = self.now;
        let s = self.sock_mut(id)?;
        let op = &mut s.opts;
        match o {
            SockOpt::NoDelay(v) => op.nodelay = v,
            SockOpt::Cork(v) => op.cork = v,
            SockOpt::KeepAlive(v) => op.keepalive = v,
            SockOpt::KeepIdle(v) if (1..=32767).contains(&v) => op.keepidle = v,
            SockOpt::KeepIntvl(v) if (1..=32767).contains(&v) => op.keepintvl = v,
            SockOpt::KeepCnt(v) if (1..=127).contains(&v) => op.keepcnt = v,
            SockOpt::KeepIdle(_) | SockOpt::KeepIntvl(_) | SockOpt::KeepCnt(_) => {
                return Err(errno::EINVAL)
            }
            SockOpt::Linger(on, secs) => op.linger = on.then_some(secs),
            SockOpt::ReuseAddr(v) => op.reuseaddr = v,
            SockOpt::ReusePort(v) => op.reuseport = v,
            SockOpt::RcvBuf(v) => op.rcvbuf = Some((v.min(1 << 30) * 2).clamp(2304, 32 << 20)),
            SockOpt::SndBuf(v) => op.sndbuf = Some((v.min(1 << 30) * 2).clamp(4608, 32 << 20)),
            SockOpt::V6Only(v) => {
                if s.bound.is_some() {
                    return Err(errno::EINVAL);
                }
                op.v6only = v
            }
            SockOpt::MaxSeg(v) => {
                if !(88..=32767).contains(&v) {
                    return Err(errno::EINVAL);
                }
                op.maxseg = Some(v)
            }
            SockOpt::Congestion(a) => op.congestion = Some(a),
        }
        let opts = s.opts;
        if let Kind::Conn(t) = &mut s.kind {
            match o {
                SockOpt::NoDelay(_) => t.set_nodelay(opts.nodelay),
                SockOpt::Cork(_) => t.set_cork(opts.cork),
                SockOpt::KeepAlive(_)
                | SockOpt::KeepIdle(_)
                | SockOpt::KeepIntvl(_)
                | SockOpt::KeepCnt(_) => t.set_keepalive(opts.keepalive(), now),
                SockOpt::RcvBuf(_) => t.set_rcvbuf(opts.rcvbuf.unwrap_or(0)),
                SockOpt::SndBuf(_) => t.set_sndbuf(opts.sndbuf.unwrap_or(0)),
                SockOpt::Congestion(a) => t.set_congestion(a, now),
                _ => {}
            }
        }
        self.touch(id.0);
        Ok(())
    }

    pub fn opts(&self, id: SockId) -> Result<Opts, Errno> {
        Ok(self.sock(id)?.opts)
    }

    /// The socket's congestion control algorithm (getsockopt TCP_CONGESTION): the
    /// connection's, else the one chosen on the socket, else the stack's default.
    pub fn congestion(&self, id: SockId) -> Result<CcAlgo, Errno> {
        let s = self.sock(id)?;
        Ok(match &s.kind {
            Kind::Conn(t) => t.congestion(),
            _ => s.opts.congestion.unwrap_or(self.cfg.congestion),
        })
    }

    pub fn is_listening(&self, id: SockId) -> bool {
        self.sock(id)
            .is_ok_and(|s| matches!(s.kind, Kind::Listen(_)))
    }

    /// Effective receive and send buffer sizes (SO_RCVBUF/SO_SNDBUF answers).
    pub fn buffer_sizes(&self, id: SockId) -> Result<(usize, usize), Errno> {
        let s = self.sock(id)?;
        Ok(match &s.kind {
            Kind::Conn(t) => (t.recvbuf_capacity(), t.sendbuf_capacity()),
            _ => (
                s.opts.rcvbuf.unwrap_or(self.cfg.rcvbuf),
                s.opts.sndbuf.unwrap_or(self.cfg.sndbuf),
            ),
        })
    }

    /// The connection (for TCP_INFO, TCP_MAXSEG and tests).
    pub fn tcb(&self, id: SockId) -> Option<&Tcb> {
        match &self.sock(id).ok()?.kind {
            Kind::Conn(t) => Some(t),
            _ => None,
        }
    }

    /// Reads into `bufs`: `Ok(0)` is end of stream.
    pub fn recv(&mut self, id: SockId, bufs: &mut [&mut [u8]]) -> Result<usize, Errno> {
        let now = self.now;
        let s = self.sock_mut(id)?;
        let Kind::Conn(t) = &mut s.kind else {
            return Err(errno::ENOTCONN);
        };
        if t.shut_rd && t.readable() == 0 {
            return Ok(0);
        }
        let mut n = 0;
        for b in bufs.iter_mut() {
            let k = t.read(b, now);
            n += k;
            if k < b.len() {
                break;
            }
        }
        if n > 0 {
            let wants = t.wants_output();
            let r = Self::baseline(s);
            s.last_ready = Some(r);
            if wants {
                self.touch(id.0);
            }
            return Ok(n);
        }
        if t.err != 0 {
            return Err(core::mem::take(&mut t.err));
        }
        if t.rd_closed || t.state == State::Closed {
            return Ok(0);
        }
        if t.state == State::SynSent {
            return Err(errno::EAGAIN);
        }
        Err(errno::EAGAIN)
    }

    /// Whether [`Stack::recv`] would answer EAGAIN now (no byte, no error, no end of stream):
    /// lets a caller that just had a short read skip the call that would say so.
    pub fn recv_would_block(&self, id: SockId) -> bool {
        match self.socks.get(id.0 as usize) {
            Some(Some(Sock {
                kind: Kind::Conn(t),
                ..
            })) => {
                t.readable() == 0
                    && t.err == 0
                    && !t.rd_closed
                    && !t.shut_rd
                    && t.state != State::Closed
            }
            _ => false,
        }
    }

    /// Appends to the send buffer (never blocks; EPIPE after the end, never a signal).
    pub fn send(&mut self, id: SockId, bufs: &[&[u8]]) -> Result<usize, Errno> {
        self.append(id, false, |t| {
            let mut n = 0;
            for b in bufs {
                let k = t.write(b);
                n += k;
                if k < b.len() {
                    break;
                }
            }
            n
        })
    }

    /// [`Stack::send`] of urgent data (`MSG_OOB`): the urgent pointer goes after the last byte
    /// taken (tcp/src/urgent.rs).
    pub fn send_urgent(&mut self, id: SockId, bufs: &[&[u8]]) -> Result<usize, Errno> {
        let n = self.send(id, bufs)?;
        if let Ok(Sock {
            kind: Kind::Conn(t),
            ..
        }) = self.sock_mut(id)
        {
            t.mark_urgent();
        }
        Ok(n)
    }

    /// The peer's last urgent byte on connection `id`.
    pub fn urgent_in(&self, id: SockId) -> Option<crate::urgent::UrgentView> {
        match self.socks.get(id.0 as usize) {
            Some(Some(Sock {
                kind: Kind::Conn(t),
                ..
            })) => t.urgent_in(),
            _ => None,
        }
    }

    /// The checks and bookkeeping around queueing application bytes ([`Stack::send`],
    /// [`Stack::send_lent`]): `f` queues and returns how many; none queued is EAGAIN unless
    /// `nothing_ok` (a lent stream that did not grow).
    fn append(
        &mut self,
        id: SockId,
        nothing_ok: bool,
        f: impl FnOnce(&mut Tcb) -> usize,
    ) -> Result<usize, Errno> {
        let s = self.sock_mut(id)?;
        let Kind::Conn(t) = &mut s.kind else {
            return Err(errno::EPIPE);
        };
        if t.err != 0 {
            return Err(core::mem::take(&mut t.err));
        }
        match t.state {
            State::SynSent | State::SynReceived => return Err(errno::EAGAIN),
            State::Established | State::CloseWait if !t.shut_wr => {}
            _ => return Err(errno::EPIPE),
        }
        let n = f(t);
        // What the caller saw is the new baseline: a later change is reported as an edge.
        let r = Self::baseline(s);
        s.last_ready = Some(r);
        if n == 0 && !nothing_ok {
            return Err(errno::EAGAIN);
        }
        self.touch(id.0);
        Ok(n)
    }

    /// Lends socket `id`'s send side to the application's stream (crate::source): from now on
    /// [`Stack::send_lent`] counts bytes appended there, starting at stream index `base`, and
    /// segments are copied from it through the [`TxSource`] given to
    /// [`Stack::poll_transmit_from`]. Only a connection with nothing queued can be lent (EBUSY);
    /// `size` is the stream's size (the most that may be outstanding).
    pub fn lend_tx(&mut self, id: SockId, base: u32, size: usize) -> Result<(), Errno> {
        let s = self.sock_mut(id)?;
        let Kind::Conn(t) = &mut s.kind else {
            return Err(errno::ENOTCONN);
        };
        if t.lend(base, size) {
            Ok(())
        } else {
            Err(errno::EBUSY)
        }
    }

    /// A lent stream grew by `n` bytes: queues as many as the connection takes ([`Stack::send`]'s
    /// rules and errors).
    pub fn send_lent(&mut self, id: SockId, n: usize) -> Result<usize, Errno> {
        self.append(id, n == 0, |t| t.append_lent(n))
    }

    /// Lent stream bytes acknowledged since the last call (the owner frees them); None when the
    /// socket holds no loan any more (never lent, reclaimed, or the connection is gone: then
    /// nothing it was handed will be read again).
    pub fn take_acked(&mut self, id: SockId) -> Option<u32> {
        let s = self.sock_mut(id).ok()?;
        let Kind::Conn(t) = &mut s.kind else {
            return None;
        };
        let k = t.take_acked();
        // What the caller saw is the new baseline (as `send`): the next acknowledgment makes
        // the socket writable again, which is then reported as an edge.
        let r = Self::ready_of(s);
        s.last_ready = Some(r);
        k
    }

    /// Socket `id`'s lent stream is too small for its path ([`Tcb::loan_outgrown`]): its owner
    /// should end the loan ([`Stack::reclaim_tx`]).
    pub fn loan_outgrown(&self, id: SockId) -> bool {
        self.tcb(id)
            .is_some_and(|t| t.is_lent() && t.loan_outgrown())
    }

    /// Ends socket `id`'s loan: what is still unacknowledged is read from `src` into the send
    /// buffer (the stream's owner may then reuse it). Returns the acknowledged count not yet
    /// taken; 0 when nothing was lent.
    pub fn reclaim_tx(&mut self, id: SockId, src: &dyn TxSource) -> u32 {
        let Ok(s) = self.sock_mut(id) else {
            return 0;
        };
        let Kind::Conn(t) = &mut s.kind else {
            return 0;
        };
        let Some(index) = t.lent_index(0) else {
            return 0;
        };
        let mut held = vec![0u8; t.send_queue()];
        let ok = src.copy_tx(id, index, &mut held);
        let acked = t.reclaim(&held, &[]);
        if !ok {
            // The stream is unreadable: the count stays right; the bytes are lost.
            self.stats.tx_lent_missing += 1;
        }
        acked
    }

    /// The application closes: FIN after the data (RST with unread data or SO_LINGER 0, as
    /// Linux), the state finishes in the background.
    pub fn close(&mut self, id: SockId) {
        let now = self.now;
        let Ok(s) = self.sock_mut(id) else {
            return;
        };
        s.user = false;
        let linger0 = s.opts.linger == Some(0);
        match &mut s.kind {
            Kind::Fresh => {
                self.release(id.0);
            }
            Kind::TimeWait(_) => {}
            Kind::Listen(l) => {
                let children: Vec<u32> = l.accept.drain(..).collect();
                self.release(id.0);
                for c in children {
                    self.abort_child(c);
                }
                // Half-open children: their listener is gone; they are reset when they finish.
                let orphans: Vec<u32> = self
                    .socks
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| {
                        s.as_ref()
                            .filter(|s| s.parent == Some(id.0))
                            .map(|_| i as u32)
                    })
                    .collect();
                for c in orphans {
                    self.abort_child(c);
                }
            }
            Kind::Conn(t) => {
                t.orphan = true;
                if linger0 || t.readable() > 0 {
                    t.abort();
                } else {
                    t.shutdown_write();
                    if t.state == State::FinWait2 {
                        t.end_at = Some(now + crate::conn::FIN_TIMEOUT);
                    }
                }
                let done = t.state == State::Closed;
                self.touch(id.0);
                if done {
                    self.finish_if_closed(id.0);
                }
            }
        }
    }

    fn abort_child(&mut self, c: u32) {
        if let Some(Some(s)) = self.socks.get_mut(c as usize) {
            s.parent = None;
            s.user = false;
            if let Kind::Conn(t) = &mut s.kind {
                t.orphan = true;
                t.abort();
            }
            self.touch(c);
        }
    }

    /// Frees a closed connection nobody holds any more (after its RST went out).
    fn finish_if_closed(&mut self, i: u32) {
        let Some(Some(s)) = self.socks.get_mut(i as usize) else {
            return;
        };
        if let Kind::Conn(t) = &s.kind {
            if t.state == State::Closed && !t.wants_output() {
                if let Some(k) = s.keyed.take() {
                    if self.conns.get(&k) == Some(&i) {
                        self.conns.remove(&k);
                    }
                }
                if !s.user && s.parent.is_none() && !s.in_txq {
                    self.release(i);
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Readiness

    fn queue_event(&mut self, i: u32) {
        if let Some(Some(s)) = self.socks.get_mut(i as usize) {
            if s.user && !s.in_evq {
                s.in_evq = true;
                self.evq.push_back(i);
            }
        }
    }

    /// Current readiness of a socket.
    pub fn ready(&self, id: SockId) -> Ready {
        let Ok(s) = self.sock(id) else {
            return Ready::default();
        };
        Self::ready_of(s)
    }

    /// The readiness a caller saw with a call: the new baseline for edges, except urgent
    /// data, which a read does not report (it is always an event of its own).
    fn baseline(s: &Sock) -> Ready {
        Ready {
            urgent: s.last_ready.map_or(0, |o| o.urgent),
            ..Self::ready_of(s)
        }
    }

    fn ready_of(s: &Sock) -> Ready {
        match &s.kind {
            Kind::Fresh | Kind::TimeWait(_) => Ready {
                writable: false,
                hup: true,
                ..Ready::default()
            },
            Kind::Listen(l) => Ready {
                readable: !l.accept.is_empty(),
                ..Ready::default()
            },
            Kind::Conn(t) => {
                let closed = t.state == State::Closed;
                let err = t.err != 0 || s.err != 0;
                Ready {
                    readable: t.readable() > 0 || t.rd_closed || closed || err,
                    writable: t.writable() || (closed && !t.is_connecting()) || err,
                    hup: t.rd_closed || closed,
                    error: err,
                    urgent: t.urgent_gen(),
                    urgent_news: false,
                }
            }
        }
    }

    /// The next socket whose readiness changed since it was last reported: (token, readiness).
    pub fn poll_event(&mut self) -> Option<(SockId, u64, Ready)> {
        while let Some(i) = self.evq.pop_front() {
            let Some(Some(s)) = self.socks.get_mut(i as usize) else {
                continue;
            };
            s.in_evq = false;
            if !s.user {
                continue;
            }
            let r = Self::ready_of(s);
            if s.last_ready != Some(r) || r.readable || r.writable {
                let changed = s.last_ready != Some(r);
                let news = s.last_ready.map_or(r.urgent, |o| o.urgent) != r.urgent
                    || (s.last_ready.is_none() && r.urgent != 0);
                s.last_ready = Some(r);
                if changed || r.readable {
                    let r = Ready {
                        urgent_news: news,
                        ..r
                    };
                    return Some((SockId(i), s.token, r));
                }
            }
        }
        None
    }

    // -----------------------------------------------------------------------------------------
    // Time

    pub fn now(&self) -> Instant {
        self.now
    }

    /// Queues socket `i` for output and re-arms its timer.
    fn touch(&mut self, i: u32) {
        let Some(Some(s)) = self.socks.get_mut(i as usize) else {
            return;
        };
        if let Kind::Conn(t) = &s.kind {
            if !s.in_txq && t.wants_output() {
                s.in_txq = true;
                self.txq.push_back(i);
            }
        }
        self.compact_time_wait(i);
        self.arm_timer(i);
    }

    /// Replaces an unheld connection in TIME-WAIT whose last segment went out by a compact
    /// entry (or frees it when MAX_TIME_WAIT entries exist, as Linux does).
    fn compact_time_wait(&mut self, i: u32) {
        let Some(Some(s)) = self.socks.get_mut(i as usize) else {
            return;
        };
        let Kind::Conn(t) = &s.kind else { return };
        if t.state != State::TimeWait
            || s.user
            || s.parent.is_some()
            || s.in_txq
            || t.wants_output()
        {
            return;
        }
        if self.stats.time_wait as usize >= MAX_TIME_WAIT {
            self.stats.time_wait_overflow += 1;
            self.release(i);
            return;
        }
        let st = t.stats;
        let tw = TimeWait {
            local_port: t.local.port(),
            remote_port: t.remote.port(),
            snd_nxt: t.snd_nxt,
            rcv_nxt: t.rcv_nxt,
            rcv_wscale: t.rcv_wscale,
            ts: t.ts_ok.then_some((t.cfg.ts_offset, t.ts_recent)),
            expires: t.end_at.unwrap_or(self.now + crate::conn::TIME_WAIT),
        };
        s.kind = Kind::TimeWait(tw);
        s.timer_at = None;
        self.retired.add(&st);
        self.stats.conns = self.stats.conns.saturating_sub(1);
        self.stats.time_wait += 1;
    }

    /// Puts socket `i`'s earliest deadline on the wheel (when it moved earlier).
    fn arm_timer(&mut self, i: u32) {
        let Some(Some(s)) = self.socks.get_mut(i as usize) else {
            return;
        };
        let d = match &s.kind {
            Kind::Conn(t) => t.next_deadline(),
            Kind::TimeWait(tw) => Some(tw.expires),
            _ => None,
        };
        if let Some(d) = d {
            if s.timer_at.map_or(true, |x| d < x || x <= self.now) {
                s.timer_at = Some(d);
                self.wheel.schedule(i, d);
            }
        }
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        let now = self.now;
        let mut fired = core::mem::take(&mut self.fired);
        fired.clear();
        self.wheel.advance(now, &mut fired);
        for &i in &fired {
            let Some(Some(s)) = self.socks.get_mut(i as usize) else {
                continue;
            };
            if s.timer_at.is_some_and(|x| x <= now) {
                s.timer_at = None;
            }
            if let Kind::TimeWait(tw) = &s.kind {
                if tw.expires <= now {
                    self.release(i);
                } else {
                    self.arm_timer(i);
                }
                continue;
            }
            let Kind::Conn(t) = &mut s.kind else {
                continue;
            };
            if t.next_deadline().is_some_and(|d| d <= now) {
                let fx = t.on_timer(now);
                self.apply(i, fx);
            }
            self.touch(i);
        }
        self.fired = fired;
    }

    /// Output or readiness events are queued (an application call produced them): the caller
    /// should run [`Stack::poll_transmit`] and [`Stack::poll_event`] soon.
    pub fn has_pending(&self) -> bool {
        !self.txq.is_empty() || !self.evq.is_empty() || !self.out.is_empty()
    }

    /// When the engine next needs [`Stack::handle_timeout`] (None: only frames or calls).
    pub fn next_timeout(&self) -> Option<Instant> {
        if !self.txq.is_empty() {
            return Some(self.now);
        }
        self.wheel.next_deadline()
    }

    // -----------------------------------------------------------------------------------------
    // Effects of a segment or timer

    fn apply(&mut self, i: u32, fx: Effects) {
        let Some(Some(s)) = self.socks.get_mut(i as usize) else {
            return;
        };
        if fx.established {
            if let Some(p) = s.parent {
                if let Some(Some(ps)) = self.socks.get_mut(p as usize) {
                    if let Kind::Listen(l) = &mut ps.kind {
                        l.syn_queue = l.syn_queue.saturating_sub(1);
                        l.accept.push_back(i);
                    }
                }
                self.queue_event(p);
            }
        }
        if fx.notify {
            self.queue_event(i);
        }
        if fx.closed {
            let Some(Some(s)) = self.socks.get_mut(i as usize) else {
                return;
            };
            if let (Some(p), Kind::Conn(t)) = (s.parent, &s.kind) {
                // A half-open child died before the handshake finished.
                if t.passive && !fx.established {
                    let in_accept = match self.socks.get(p as usize) {
                        Some(Some(Sock {
                            kind: Kind::Listen(l),
                            ..
                        })) => l.accept.contains(&i),
                        _ => false,
                    };
                    if !in_accept {
                        if let Some(Some(ps)) = self.socks.get_mut(p as usize) {
                            if let Kind::Listen(l) = &mut ps.kind {
                                l.syn_queue = l.syn_queue.saturating_sub(1);
                            }
                        }
                        if let Some(Some(s)) = self.socks.get_mut(i as usize) {
                            s.parent = None;
                        }
                    }
                }
            }
            self.touch(i);
            self.finish_if_closed(i);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Output

    fn take_buf(&mut self) -> Vec<u8> {
        let mut b = self.pool.pop().unwrap_or_default();
        b.clear();
        b
    }

    /// Returns a sent frame's buffer for reuse.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.pool.len() < 1024 {
            self.pool.push(buf);
        }
    }

    /// Frames ready for the device.
    pub fn frames(&mut self) -> &mut VecDeque<Frame> {
        &mut self.out
    }

    fn next_hop(&self, dst: IpAddr) -> Option<IpAddr> {
        match dst {
            IpAddr::V4(d) => {
                let (ip, prefix) = self.cfg.ipv4?;
                if in_subnet(dst, IpAddr::V4(ip), prefix) {
                    Some(IpAddr::V4(d))
                } else {
                    self.cfg.gateway4.map(IpAddr::V4)
                }
            }
            IpAddr::V6(d) => {
                let (ip, prefix) = self.cfg.ipv6?;
                if in_subnet(dst, IpAddr::V6(ip), prefix) || (d.segments()[0] & 0xffc0) == 0xfe80 {
                    Some(IpAddr::V6(d))
                } else {
                    self.cfg.gateway6.map(IpAddr::V6)
                }
            }
        }
    }

    /// Hands a frame whose Ethernet header is still blank to the neighbour layer.
    fn send_ip(&mut self, dst: IpAddr, buf: Vec<u8>, meta: TxMeta) {
        let Some(hop) = self.next_hop(dst) else {
            self.recycle(buf);
            return;
        };
        let mut spill = Vec::new();
        let (r, f) = self.neigh.resolve(hop, (buf, meta), self.now, &mut spill);
        for b in spill {
            self.recycle(b);
        }
        match r {
            Resolve::Mac(mac) => {
                if let Some((mut buf, meta)) = f {
                    self.fill_eth(&mut buf, mac, dst.is_ipv6());
                    self.out.push_back(Frame { buf, meta });
                    self.stats.tx_frames += 1;
                }
            }
            Resolve::QueuedAsk => self.solicit(hop),
            Resolve::Queued => {}
        }
    }

    /// Records a neighbour and sends the frames that waited for it.
    fn learn(&mut self, ip: IpAddr, mac: [u8; 6]) {
        let waiting = self.neigh.learn(ip, mac, self.now);
        for (mut buf, meta) in waiting {
            self.fill_eth(&mut buf, mac, ip.is_ipv6());
            self.out.push_back(Frame { buf, meta });
            self.stats.tx_frames += 1;
        }
    }

    fn fill_eth(&self, buf: &mut [u8], dst: [u8; 6], v6: bool) {
        write_eth(buf, self.cfg.mac, dst, v6);
    }

    /// An ICMPv6 message (NDP, echo reply) from `me` to `dst` at `mac`, hop limit 255 as NDP needs.
    fn send_icmpv6(
        &mut self,
        me: Ipv6Addr,
        dst: Ipv6Addr,
        mac: [u8; 6],
        msg: &icmpv6::Icmpv6Repr<'_>,
    ) {
        let l = msg.buffer_len();
        let start = ethernet::HEADER_LEN + ipv6::HEADER_LEN;
        let mut b = self.take_buf();
        b.resize(start + l, 0);
        ethernet::EthRepr {
            dst: mac,
            src: self.cfg.mac,
            ethertype: ethernet::ETHERTYPE_IPV6,
        }
        .emit(&mut b[..ethernet::HEADER_LEN]);
        ipv6::Ipv6Repr {
            src: me,
            dst,
            next_header: ipv6::NEXT_ICMPV6,
            hop_limit: 255,
            traffic_class: 0,
            flow_label: 0,
            payload_len: l,
        }
        .emit(&mut b[ethernet::HEADER_LEN..start]);
        msg.emit(&me, &dst, &mut b[start..]);
        self.out.push_back(Frame {
            buf: b,
            meta: TxMeta::default(),
        });
    }

    /// ARP request or NDP neighbour solicitation for `hop`.
    fn solicit(&mut self, hop: IpAddr) {
        match hop {
            IpAddr::V4(t) => {
                let Some((me, _)) = self.cfg.ipv4 else { return };
                let mut b = self.take_buf();
                b.resize(ethernet::HEADER_LEN + arp::LEN, 0);
                ethernet::EthRepr {
                    dst: ethernet::BROADCAST,
                    src: self.cfg.mac,
                    ethertype: ethernet::ETHERTYPE_ARP,
                }
                .emit(&mut b[..ethernet::HEADER_LEN]);
                arp::ArpRepr {
                    op: arp::ArpOp::Request,
                    sender_mac: self.cfg.mac,
                    sender_ip: me,
                    target_mac: [0; 6],
                    target_ip: t,
                }
                .emit(&mut b[ethernet::HEADER_LEN..]);
                self.stats.arp_requests += 1;
                self.out.push_back(Frame {
                    buf: b,
                    meta: TxMeta::default(),
                });
            }
            IpAddr::V6(t) => {
                let Some((me, _)) = self.cfg.ipv6 else { return };
                let dst = solicited_node(&t);
                let msg = icmpv6::Icmpv6Repr::NeighborSolicit {
                    target: t,
                    source_mac: Some(self.cfg.mac),
                };
                self.send_icmpv6(me, dst, ipv6_mcast_mac(&dst), &msg);
            }
        }
    }

    /// Writes IP + TCP headers and payload for a segment into a new frame buffer.
    fn build_tcp(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        repr: &TcpRepr,
        payload: (&[u8], &[u8]),
        gso: Option<u16>,
    ) -> (Vec<u8>, TxMeta) {
        let mut b = self.take_buf();
        self.rng = self.rng.wrapping_add(1);
        let ident = (self.rng & 0xffff) as u16;
        let plen = payload.0.len() + payload.1.len();
        b.resize(tcp_frame_len(remote.is_ipv6(), repr, plen), 0);
        let meta = write_tcp(
            &mut b,
            &self.cfg.caps,
            ident,
            local,
            remote,
            repr,
            Payload::Slices(payload.0, payload.1),
            gso,
        )
        .unwrap_or_default();
        (b, meta)
    }

    /// Builds the frame of segment `seg` of connection `i`, in device memory through `direct`
    /// when it may (crate::writer), else in a buffer of the engine's that goes to the neighbour
    /// layer and [`Stack::frames`]; false when `i` is no longer a connection. (Not `build_tcp`:
    /// the payload borrows the connection's send buffer, or is copied from its lent stream
    /// through `src`.)
    fn emit(
        &mut self,
        i: u32,
        local: SocketAddr,
        remote: SocketAddr,
        seg: &crate::output::OutSeg,
        src: &dyn TxSource,
        direct: &mut Direct<'_>,
    ) -> bool {
        let spare = self.pool.pop();
        self.rng = self.rng.wrapping_add(1);
        let ident = (self.rng & 0xffff) as u16;
        let Some(Some(Sock {
            kind: Kind::Conn(t),
            ..
        })) = self.socks.get(i as usize)
        else {
            if let Some(b) = spare {
                self.pool.push(b);
            }
            return false;
        };
        let payload = match t.lent_index(seg.data_off) {
            Some(index) if seg.data_len > 0 => Payload::Lent {
                src,
                id: SockId(i),
                index,
                len: seg.data_len,
            },
            _ => {
                let (x, y) = t.sendbuf_slices(seg.data_off, seg.data_len);
                Payload::Slices(x, y)
            }
        };
        let v6 = remote.is_ipv6();
        let len = tcp_frame_len(v6, &seg.repr, seg.data_len);
        let caps = &self.cfg.caps;
        // Straight into device memory: only behind nothing queued in `out` (a direct frame must
        // not overtake one sent through the engine's buffers) and only to a next hop whose MAC
        // is known now (anything else takes the buffered path, which queues and solicits).
        let mac = if direct.open && self.out.is_empty() {
            self.next_hop(remote.ip())
                .and_then(|hop| self.neigh.lookup(&hop, self.now))
        } else {
            None
        };
        if let Some(mac) = mac {
            let me = self.cfg.mac;
            let mut fill = |buf: &mut [u8]| {
                write_eth(buf, me, mac, v6);
                write_tcp(buf, caps, ident, local, remote, &seg.repr, payload, seg.gso)
            };
            match direct.w.write_frame(len, &mut fill) {
                WriteOutcome::Written => {
                    if let Some(b) = spare {
                        self.pool.push(b);
                    }
                    direct.written += 1;
                    self.stats.tx_frames += 1;
                    if seg.data_len > 0 {
                        self.stats.tx_data_direct += 1;
                    }
                    if seg.repr.flags & F::RST != 0 {
                        self.stats.rst_sent += 1;
                    }
                    return true;
                }
                WriteOutcome::Dropped => {
                    // The lent stream is gone: as below.
                    if let Some(b) = spare {
                        self.pool.push(b);
                    }
                    self.stats.tx_lent_missing += 1;
                    return true;
                }
                WriteOutcome::NoRoom => direct.open = false,
            }
        }
        let mut b = spare.unwrap_or_default();
        b.clear();
        b.resize(len, 0);
        let Some(meta) = write_tcp(
            &mut b, caps, ident, local, remote, &seg.repr, payload, seg.gso,
        ) else {
            // The lent stream is gone (its owner broke the loan's contract): nothing to send;
            // the bytes count as lost and the timers retry.
            self.stats.tx_lent_missing += 1;
            self.pool.push(b);
            return true;
        };
        if seg.data_len > 0 {
            self.stats.tx_data_buffered += 1;
        }
        if seg.repr.flags & F::RST != 0 {
            self.stats.rst_sent += 1;
        }
        self.send_ip(remote.ip(), b, meta);
        true
    }

    /// Collects segments of every connection with something to send into [`Stack::frames`].
    pub fn poll_transmit(&mut self, now: Instant) {
        self.poll_transmit_from(now, &NoSource);
    }

    /// [`Stack::poll_transmit`], copying the payload of connections with a lent stream from
    /// `src` (crate::source).
    pub fn poll_transmit_from(&mut self, now: Instant, src: &dyn TxSource) {
        let _ = self.poll_transmit_into(now, src, &mut NoWriter);
    }

    /// [`Stack::poll_transmit_from`], building frames straight in the device memory `out` lends
    /// while it has room (crate::writer), and in [`Stack::frames`] from the first frame it
    /// refuses on (and whenever [`Stack::frames`] is not empty at the start: call it with
    /// the device's queue drained, then hand the device both, its own frames first). Returns
    /// how many frames `out` took.
    #[must_use]
    pub fn poll_transmit_into(
        &mut self,
        now: Instant,
        src: &dyn TxSource,
        out: &mut dyn FrameWriter,
    ) -> usize {
        self.now = self.now.max(now);
        let now = self.now;
        let mut direct = Direct {
            w: out,
            open: true,
            written: 0,
        };
        let mut budget = 4096usize;
        while let Some(i) = self.txq.pop_front() {
            // The next connection's state is fetched while this one's segments are built.
            if let Some(&n) = self.txq.front() {
                if let Some(Some(Sock {
                    kind: Kind::Conn(t),
                    ..
                })) = self.socks.get(n as usize)
                {
                    crate::prefetch::prefetch(&**t);
                }
            }
            let Some(Some(s)) = self.socks.get_mut(i as usize) else {
                continue;
            };
            s.in_txq = false;
            let Kind::Conn(t) = &mut s.kind else {
                continue;
            };
            let tso = if self.cfg.caps.tso { t.cfg.tso_max } else { 0 };
            let (local, remote) = (t.local, t.remote);
            let mut segs = core::mem::take(&mut self.segs);
            segs.clear();
            let mut n = 0;
            while n < 64 && budget > 0 {
                match t.next_segment(now, tso) {
                    Some(seg) => {
                        segs.push(seg);
                        n += 1;
                        budget -= 1;
                    }
                    None => break,
                }
            }
            // Build frames, the payload copied straight from the send buffer.
            for seg in &segs {
                if !self.emit(i, local, remote, seg, src, &mut direct) {
                    break;
                }
            }
            self.segs = segs;
            // A connection that stopped short of its budget has nothing more it may send now;
            // new input, a call or a timer queues it again.
            if n == 64 {
                if let Some(Some(s)) = self.socks.get_mut(i as usize) {
                    if !s.in_txq {
                        s.in_txq = true;
                        self.txq.push_back(i);
                    }
                }
            }
            self.compact_time_wait(i);
            self.arm_timer(i);
            self.finish_if_closed(i);
            if budget == 0 {
                break;
            }
        }
        direct.written
    }

    fn send_rst_for(&mut self, local: SocketAddr, remote: SocketAddr, seg: &TcpRepr, plen: usize) {
        if seg.flags & F::RST != 0 {
            return;
        }
        let (seq, ack, flags) = if seg.flags & F::ACK != 0 {
            (seg.ack, Seq(0), F::RST)
        } else {
            let len = plen as u32
                + u32::from(seg.flags & F::SYN != 0)
                + u32::from(seg.flags & F::FIN != 0);
            (Seq(0), seg.seq + len, F::RST | F::ACK)
        };
        self.send_bare(local, remote, seq, ack, flags, 0, TcpOptions::default());
        self.stats.rst_sent += 1;
    }

    #[allow(clippy::too_many_arguments)]
    fn send_bare(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        seq: Seq,
        ack: Seq,
        flags: u8,
        window: u16,
        opts: TcpOptions,
    ) {
        let r = TcpRepr {
            src_port: local.port(),
            dst_port: remote.port(),
            seq,
            ack,
            flags,
            window,
            urgent: 0,
            opts,
        };
        let (buf, meta) = self.build_tcp(local, remote, &r, (&[], &[]), None);
        self.send_ip(remote.ip(), buf, meta);
    }

    // -----------------------------------------------------------------------------------------
    // Input

    /// Processes one received frame.
    pub fn handle_frame(&mut self, now: Instant, frame: &[u8], meta: RxMeta) {
        self.handle_frame_into(now, frame, meta, &mut crate::sink::NoSink);
    }

    /// [`Stack::handle_frame`], offering in-order payload of application sockets to `sink`
    /// (see [`crate::sink`]).
    pub fn handle_frame_into(
        &mut self,
        now: Instant,
        frame: &[u8],
        meta: RxMeta,
        sink: &mut dyn crate::sink::RxSink,
    ) {
        self.now = self.now.max(now);
        self.stats.rx_frames += 1;
        let Ok((eth, payload)) = ethernet::EthRepr::parse(frame) else {
            self.stats.rx_malformed += 1;
            return;
        };
        let to_us = eth.dst == self.cfg.mac
            || eth.dst == ethernet::BROADCAST
            || (eth.dst[0] == 0x33 && eth.dst[1] == 0x33);
        if !to_us {
            self.stats.rx_dropped += 1;
            return;
        }
        match eth.ethertype {
            ethernet::ETHERTYPE_ARP => self.handle_arp(payload),
            ethernet::ETHERTYPE_IPV4 => self.handle_ipv4(&eth, payload, meta, sink),
            ethernet::ETHERTYPE_IPV6 => self.handle_ipv6(&eth, payload, meta, sink),
            _ => self.stats.rx_dropped += 1,
        }
    }

    fn handle_arp(&mut self, p: &[u8]) {
        let Ok(a) = arp::ArpRepr::parse(p) else {
            self.stats.rx_malformed += 1;
            return;
        };
        let Some((me, _)) = self.cfg.ipv4 else { return };
        if a.target_ip != me {
            return;
        }
        if a.sender_ip.is_unspecified() || a.sender_mac[0] & 1 != 0 {
            return;
        }
        self.learn(IpAddr::V4(a.sender_ip), a.sender_mac);
        if a.op == arp::ArpOp::Request {
            let mut b = self.take_buf();
            b.resize(ethernet::HEADER_LEN + arp::LEN, 0);
            ethernet::EthRepr {
                dst: a.sender_mac,
                src: self.cfg.mac,
                ethertype: ethernet::ETHERTYPE_ARP,
            }
            .emit(&mut b[..ethernet::HEADER_LEN]);
            arp::ArpRepr {
                op: arp::ArpOp::Reply,
                sender_mac: self.cfg.mac,
                sender_ip: me,
                target_mac: a.sender_mac,
                target_ip: a.sender_ip,
            }
            .emit(&mut b[ethernet::HEADER_LEN..]);
            self.out.push_back(Frame {
                buf: b,
                meta: TxMeta::default(),
            });
        }
    }

    fn l4_ok(&mut self, meta: RxMeta, seg: &[u8], pseudo: u64) -> bool {
        match meta.csum {
            RxCsum::Verified | RxCsum::Partial => true,
            RxCsum::Bad => {
                self.stats.rx_csum_errors += 1;
                false
            }
            RxCsum::Unknown => {
                let mut ok = checksum::fold(checksum::accumulate(seg, pseudo)) == 0xffff;
                if !ok && self.cfg.trust_partial_csum && seg.len() >= tcp::HEADER_LEN {
                    let field =
                        u16::from_be_bytes([seg[tcp::CSUM_OFFSET], seg[tcp::CSUM_OFFSET + 1]]);
                    ok = field == checksum::fold(pseudo);
                    if ok {
                        self.stats.rx_csum_partial += 1;
                    }
                }
                if !ok {
                    self.stats.rx_csum_errors += 1;
                }
                ok
            }
        }
    }

    fn handle_ipv4(
        &mut self,
        eth: &ethernet::EthRepr,
        p: &[u8],
        meta: RxMeta,
        sink: &mut dyn crate::sink::RxSink,
    ) {
        let Ok((ip, payload)) = ipv4::Ipv4Repr::parse(p, true) else {
            self.stats.rx_malformed += 1;
            return;
        };
        let Some((me, _)) = self.cfg.ipv4 else { return };
        if ip.dst != me {
            self.stats.rx_dropped += 1;
            return;
        }
        self.neigh.confirm(&IpAddr::V4(ip.src), eth.src, self.now);
        match ip.proto {
            ipv4::PROTO_TCP => {
                let pseudo =
                    checksum::pseudo_v4(ip.src, ip.dst, ipv4::PROTO_TCP, payload.len() as u32);
                if !self.l4_ok(meta, payload, pseudo) {
                    return;
                }
                self.handle_tcp(IpAddr::V4(ip.dst), IpAddr::V4(ip.src), payload, sink);
            }
            ipv4::PROTO_ICMP => self.handle_icmpv4(&ip, payload, meta),
            _ => self.stats.rx_dropped += 1,
        }
    }

    fn handle_icmpv4(&mut self, ip: &ipv4::Ipv4Repr, p: &[u8], meta: RxMeta) {
        let verify = !matches!(meta.csum, RxCsum::Verified | RxCsum::Partial);
        let Ok(m) = icmpv4::Icmpv4Repr::parse(p, verify) else {
            self.stats.rx_malformed += 1;
            return;
        };
        match m {
            icmpv4::Icmpv4Repr::EchoRequest { ident, seq, data } => {
                self.stats.icmp_echo += 1;
                let reply = icmpv4::Icmpv4Repr::EchoReply { ident, seq, data };
                let l = reply.buffer_len();
                let mut b = self.take_buf();
                let start = ethernet::HEADER_LEN + ipv4::HEADER_LEN;
                b.resize(start + l, 0);
                ipv4::Ipv4Repr {
                    src: ip.dst,
                    dst: ip.src,
                    proto: ipv4::PROTO_ICMP,
                    ttl: 64,
                    tos: 0,
                    ident: 0,
                    dont_frag: false,
                    payload_len: l,
                }
                .emit(&mut b[ethernet::HEADER_LEN..start]);
                reply.emit(&mut b[start..]);
                self.send_ip(IpAddr::V4(ip.src), b, TxMeta::default());
            }
            icmpv4::Icmpv4Repr::DstUnreachable {
                code: 4,
                next_hop_mtu,
                original,
            } => {
                // Fragmentation needed: path MTU discovery (RFC 1191).
                if let Ok((oip, rest)) = ipv4::Ipv4Repr::parse_quoted(original) {
                    if oip.proto == ipv4::PROTO_TCP && rest.len() >= 4 && oip.src == ip.dst {
                        let sp = u16::from_be_bytes([rest[0], rest[1]]);
                        let dp = u16::from_be_bytes([rest[2], rest[3]]);
                        let k = (
                            SocketAddr::new(IpAddr::V4(oip.src), sp),
                            SocketAddr::new(IpAddr::V4(oip.dst), dp),
                        );
                        self.pmtu(k, u32::from(next_hop_mtu), 20);
                    }
                }
            }
            _ => {}
        }
    }

    fn pmtu(&mut self, k: (SocketAddr, SocketAddr), mtu: u32, ip_hdr: u32) {
        if mtu < 68 {
            return;
        }
        if let Some(&i) = self.conns.get(&k) {
            if let Some(Some(Sock {
                kind: Kind::Conn(t),
                ..
            })) = self.socks.get_mut(i as usize)
            {
                t.pmtu_update(mtu, ip_hdr);
            }
            self.touch(i);
        }
    }

    fn handle_ipv6(
        &mut self,
        eth: &ethernet::EthRepr,
        p: &[u8],
        meta: RxMeta,
        sink: &mut dyn crate::sink::RxSink,
    ) {
        let Ok((ip, payload)) = ipv6::Ipv6Repr::parse(p) else {
            self.stats.rx_malformed += 1;
            return;
        };
        let Some((me, _)) = self.cfg.ipv6 else { return };
        let for_us = ip.dst == me || ip.dst == solicited_node(&me);
        if !for_us {
            self.stats.rx_dropped += 1;
            return;
        }
        match ip.next_header {
            ipv6::NEXT_TCP if ip.dst == me => {
                let pseudo =
                    checksum::pseudo_v6(&ip.src, &ip.dst, ipv6::NEXT_TCP, payload.len() as u32);
                if !self.l4_ok(meta, payload, pseudo) {
                    return;
                }
                self.neigh.confirm(&IpAddr::V6(ip.src), eth.src, self.now);
                self.handle_tcp(IpAddr::V6(ip.dst), IpAddr::V6(ip.src), payload, sink);
            }
            ipv6::NEXT_ICMPV6 => {
                let verify = !matches!(meta.csum, RxCsum::Verified | RxCsum::Partial);
                let Ok(m) = icmpv6::Icmpv6Repr::parse(payload, &ip.src, &ip.dst, verify) else {
                    self.stats.rx_malformed += 1;
                    return;
                };
                self.handle_icmpv6(&ip, eth, m, me);
            }
            _ => self.stats.rx_dropped += 1,
        }
    }

    fn handle_icmpv6(
        &mut self,
        ip: &ipv6::Ipv6Repr,
        eth: &ethernet::EthRepr,
        m: icmpv6::Icmpv6Repr<'_>,
        me: Ipv6Addr,
    ) {
        match m {
            icmpv6::Icmpv6Repr::NeighborSolicit { target, source_mac } if target == me => {
                let mac = source_mac.unwrap_or(eth.src);
                if !ip.src.is_unspecified() {
                    self.learn(IpAddr::V6(ip.src), mac);
                }
                let na = icmpv6::Icmpv6Repr::NeighborAdvert {
                    flags: 0x40 | 0x20,
                    target: me,
                    target_mac: Some(self.cfg.mac),
                };
                self.send_icmpv6(me, ip.src, mac, &na);
            }
            icmpv6::Icmpv6Repr::NeighborAdvert {
                target, target_mac, ..
            } => {
                let mac = target_mac.unwrap_or(eth.src);
                self.learn(IpAddr::V6(target), mac);
            }
            icmpv6::Icmpv6Repr::EchoRequest { ident, seq, data } if ip.dst == me => {
                self.stats.icmp_echo += 1;
                let msg = icmpv6::Icmpv6Repr::EchoReply { ident, seq, data };
                self.send_icmpv6(me, ip.src, eth.src, &msg);
            }
            icmpv6::Icmpv6Repr::PacketTooBig { mtu, original } => {
                if let Ok((oip, rest)) = ipv6::Ipv6Repr::parse_quoted(original) {
                    if oip.next_header == ipv6::NEXT_TCP && rest.len() >= 4 {
                        let sp = u16::from_be_bytes([rest[0], rest[1]]);
                        let dp = u16::from_be_bytes([rest[2], rest[3]]);
                        let k = (
                            SocketAddr::new(IpAddr::V6(oip.src), sp),
                            SocketAddr::new(IpAddr::V6(oip.dst), dp),
                        );
                        self.pmtu(k, mtu.max(1280), 40);
                    }
                }
            }
            _ => {}
        }
    }

    fn handle_tcp(
        &mut self,
        dst: IpAddr,
        src: IpAddr,
        seg: &[u8],
        sink: &mut dyn crate::sink::RxSink,
    ) {
        let Ok((repr, payload)) = TcpRepr::parse(seg) else {
            self.stats.rx_malformed += 1;
            return;
        };
        let local = SocketAddr::new(dst, repr.dst_port);
        let remote = SocketAddr::new(src, repr.src_port);
        if repr.src_port == 0 || repr.dst_port == 0 {
            self.stats.rx_dropped += 1;
            return;
        }
        let now = self.now;
        if let Some(&i) = self.conns.get(&(local, remote)) {
            let Some(Some(s)) = self.socks.get_mut(i as usize) else {
                return;
            };
            if let Kind::Conn(t) = &s.kind {
                crate::prefetch::prefetch(&**t);
            }
            if let Kind::TimeWait(tw) = &mut s.kind {
                let len = payload.len() as u32
                    + u32::from(repr.flags & F::SYN != 0)
                    + u32::from(repr.flags & F::FIN != 0);
                match tw.on_segment(now, &repr, len) {
                    TwAction::Ignore => {}
                    TwAction::Ack => {
                        let a = tw.ack(now);
                        self.send_bare(local, remote, a.seq, a.ack, a.flags, 0, a.opts);
                        self.arm_timer(i);
                    }
                    TwAction::Kill => self.release(i),
                    TwAction::Reopen => {
                        self.release(i);
                        self.listen_input(local, remote, &repr, payload);
                    }
                }
                return;
            }
            let (user, token) = (s.user, s.token);
            let Kind::Conn(t) = &mut s.kind else {
                return;
            };
            // A new SYN to a connection in TIME-WAIT may reopen it (RFC 6191 / Linux).
            if t.state == State::TimeWait
                && repr.flags & (F::SYN | F::ACK | F::RST) == F::SYN
                && repr.seq > t.rcv_nxt
            {
                self.conns.remove(&(local, remote));
                if let Some(Some(s)) = self.socks.get_mut(i as usize) {
                    s.keyed = None;
                }
                self.finish_tw(i);
                self.listen_input(local, remote, &repr, payload);
                return;
            }
            let fx = if user {
                t.on_segment_into(now, &repr, payload, &mut |d| sink.deliver(token, d))
            } else {
                t.on_segment(now, &repr, payload)
            };
            let sack_ack = t.take_sack_ack(now);
            if let Some((seq, ack, flags)) = fx.reset {
                self.send_bare(local, remote, seq, ack, flags, 0, TcpOptions::default());
                self.stats.rst_sent += 1;
            }
            if let Some(seg) = sack_ack {
                // A pure ACK: no payload to read.
                let mut none = Direct {
                    w: &mut NoWriter,
                    open: false,
                    written: 0,
                };
                self.emit(i, local, remote, &seg, &NoSource, &mut none);
            }
            self.apply(i, fx);
            self.touch(i);
            return;
        }
        self.listen_input(local, remote, &repr, payload);
    }

    fn finish_tw(&mut self, i: u32) {
        if let Some(Some(s)) = self.socks.get_mut(i as usize) {
            if let Kind::Conn(t) = &mut s.kind {
                t.state = State::Closed;
            }
        }
        self.finish_if_closed(i);
    }

    /// Picks the listener for a local address: an exact address before the wildcard; among
    /// SO_REUSEPORT peers, by hash of the remote end.
    fn find_listener(&self, local: SocketAddr, remote: SocketAddr) -> Option<u32> {
        let v = self.listeners.get(&local.port())?;
        let fits = |i: &&u32| -> bool {
            let Some(Some(s)) = self.socks.get(**i as usize) else {
                return false;
            };
            let Some(b) = s.bound else { return false };
            let fam_ok = if local.is_ipv4() {
                !s.v6 || !s.opts.v6only
            } else {
                s.v6
            };
            fam_ok && (b.ip().is_unspecified() || b.ip() == local.ip())
        };
        let exact: Vec<u32> = v
            .iter()
            .filter(fits)
            .filter(|i| {
                self.socks[**i as usize]
                    .as_ref()
                    .and_then(|s| s.bound)
                    .is_some_and(|b| !b.ip().is_unspecified())
            })
            .copied()
            .collect();
        let pool: Vec<u32> = if exact.is_empty() {
            v.iter().filter(fits).copied().collect()
        } else {
            exact
        };
        if pool.is_empty() {
            return None;
        }
        let h = (u64::from(remote.port())
            ^ match remote.ip() {
                IpAddr::V4(a) => u64::from(u32::from(a)),
                IpAddr::V6(a) => u128::from(a) as u64,
            })
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Some(pool[(h >> 32) as usize % pool.len()])
    }

    fn minute(&self) -> u32 {
        (self.now.as_micros() / 60_000_000) as u32
    }

    fn listen_input(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        seg: &TcpRepr,
        payload: &[u8],
    ) {
        let Some(li) = self.find_listener(local, remote) else {
            self.send_rst_for(local, remote, seg, payload.len());
            return;
        };
        let now = self.now;
        let has = |f: u8| seg.flags & f != 0;
        if has(F::RST) {
            return;
        }
        let (backlog, syn_q, acc_q, opts, v6) = match &self.socks[li as usize] {
            Some(Sock {
                kind: Kind::Listen(l),
                opts,
                v6,
                ..
            }) => (l.backlog, l.syn_queue, l.accept.len(), *opts, *v6),
            _ => return,
        };
        let _ = v6;
        if has(F::ACK) && !has(F::SYN) {
            // The end of a SYN-cookie handshake?
            let our_isn = seg.ack - 1;
            let peer_isn = seg.seq - 1;
            let Some(mss) = self
                .cookies
                .check(local, remote, our_isn, peer_isn, self.minute())
            else {
                self.stats.syncookies_failed += 1;
                self.send_rst_for(local, remote, seg, payload.len());
                return;
            };
            if acc_q >= backlog.max(1) {
                self.stats.syn_dropped += 1;
                return;
            }
            self.stats.syncookies_ok += 1;
            let (wscale, sack) = match seg.opts.timestamp {
                Some((_, ecr)) => SynCookies::ts_decode(ecr),
                None => (None, false),
            };
            let mut cfg = self.tcb_cfg(&opts, remote.is_ipv6());
            cfg.ts_offset = 0;
            if let Some((_, ecr)) = seg.opts.timestamp {
                // Keep echoing in the clock the SYN-ACK used.
                cfg.ts_offset = ecr.wrapping_sub(now.as_millis() as u32);
            }
            let mut t = Tcb::from_cookie(
                local, remote, our_isn, peer_isn, mss, wscale, sack, seg, cfg, now,
            );
            let fx = t.on_segment(now, seg, payload);
            let i = self.adopt(li, t, local, remote);
            if let Some(Some(Sock {
                kind: Kind::Listen(l),
                ..
            })) = self.socks.get_mut(li as usize)
            {
                l.accept.push_back(i);
            }
            self.queue_event(li);
            self.apply(
                i,
                Effects {
                    established: false,
                    ..fx
                },
            );
            self.touch(i);
            return;
        }
        if !has(F::SYN) || has(F::ACK) {
            if has(F::ACK) {
                self.send_rst_for(local, remote, seg, payload.len());
            }
            return;
        }
        // A SYN.
        if acc_q >= backlog.max(1) {
            // Linux drops SYNs while the accept queue is full; the client retries.
            self.stats.syn_dropped += 1;
            return;
        }
        if syn_q >= backlog.max(1) {
            self.syn_cookie_reply(local, remote, seg);
            return;
        }
        let mut cfg = self.tcb_cfg(&opts, remote.is_ipv6());
        cfg.ts_offset = self.rand() as u32;
        let iss = self.isn.isn(local, remote, now);
        let t = Tcb::accept_syn(local, remote, iss, seg, cfg, now);
        let i = self.adopt(li, t, local, remote);
        if let Some(Some(Sock {
            kind: Kind::Listen(l),
            ..
        })) = self.socks.get_mut(li as usize)
        {
            l.syn_queue += 1;
        }
        self.stats.passive_opens += 1;
        self.touch(i);
    }

    fn adopt(&mut self, parent: u32, t: Tcb, local: SocketAddr, remote: SocketAddr) -> u32 {
        let mut s = Self::new_sock(local.is_ipv6());
        s.user = false;
        s.parent = Some(parent);
        s.keyed = Some((local, remote));
        s.kind = Kind::Conn(Box::new(t));
        let i = self.alloc(s);
        self.conns.insert((local, remote), i);
        self.stats.conns += 1;
        i
    }

    fn syn_cookie_reply(&mut self, local: SocketAddr, remote: SocketAddr, seg: &TcpRepr) {
        let peer_mss = seg.opts.mss.unwrap_or(536);
        let ip_hdr = if remote.is_ipv6() { 40 } else { 20 };
        let link = self.cfg.caps.mtu.saturating_sub(ip_hdr + 20) as u16;
        let (isn, mss) =
            self.cookies
                .isn(local, remote, seg.seq, peer_mss.min(link), self.minute());
        let mut opts = TcpOptions {
            mss: Some(mss),
            ..TcpOptions::default()
        };
        if let (Some((tsval, _)), true) = (seg.opts.timestamp, self.cfg.timestamps) {
            let ws = seg
                .opts
                .wscale
                .filter(|_| self.cfg.wscale)
                .map(|_| crate::conn::RCV_WSCALE);
            let sack = seg.opts.sack_permitted && self.cfg.sack;
            let ts = SynCookies::ts_encode(
                self.now.as_millis() as u32,
                seg.opts.wscale.filter(|_| self.cfg.wscale),
                sack,
            );
            opts.timestamp = Some((ts, tsval));
            opts.wscale = ws;
            opts.sack_permitted = sack;
        }
        self.stats.syncookies_sent += 1;
        let win = self.cfg.rcvbuf.min(65535) as u16;
        self.send_bare(local, remote, isn, seg.seq + 1, F::SYN | F::ACK, win, opts);
    }

    // -----------------------------------------------------------------------------------------
    // Introspection

    /// Sockets in use (connections of every state, listeners, fresh sockets).
    pub fn socket_count(&self) -> usize {
        self.socks.len() - self.free.len()
    }

    /// Bytes of engine memory held by connections (state and buffers).
    pub fn memory(&self) -> usize {
        self.socks
            .iter()
            .flatten()
            .map(|s| {
                core::mem::size_of::<Sock>()
                    + match &s.kind {
                        Kind::Conn(t) => t.memory(),
                        _ => 0,
                    }
            })
            .sum::<usize>()
            + self.socks.capacity() * core::mem::size_of::<Option<Sock>>()
    }

    /// Releases buffer memory of idle connections (call now and then).
    pub fn trim(&mut self) {
        for s in self.socks.iter_mut().flatten() {
            if let Kind::Conn(t) = &mut s.kind {
                t.trim();
            }
        }
    }

    /// TCP counters of every connection so far (walks the live ones: for stats queries).
    pub fn tcp_counters(&self) -> TcpCounters {
        let mut c = self.retired;
        for s in self.socks.iter().flatten() {
            if let Kind::Conn(t) = &s.kind {
                c.add(&t.stats);
            }
        }
        c
    }

    pub fn neighbors(&self) -> usize {
        self.neigh.len()
    }
}
