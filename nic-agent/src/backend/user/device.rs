//! Frame devices of the user-space stack and the adapter that lends them to smoltcp.
//!
//! A [`Device`] moves whole Ethernet frames in bursts and knows nothing of TCP: af_packet, a DPDK
//! port, or (in tests) an in-memory wire with an optional fault injector. [`Port`] sits between a
//! device and smoltcp: it buffers a received burst, queues transmitted frames until
//! [`Port::flush`], recycles frame buffers, and drops SYNs for listeners whose backlog is full
//! (as Linux does) instead of letting smoltcp answer them with RST.
//!
//! ```text
//!   smoltcp Interface ──receive()/transmit()──► Port ──rx_burst()/tx_burst()──► Device
//! ```

use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use snstack_tcp::{DeviceCaps, FrameWriter, Gso, RxCsum, RxMeta, TxMeta};

use super::offload;

/// Largest Ethernet frame of a 1500-byte MTU (1500 + 14-byte header).
#[cfg_attr(not(feature = "dpdk"), allow(dead_code))]
pub const MAX_FRAME: usize = 1514;
/// Frames taken from a device per burst.
pub const BURST: usize = 64;
/// Frames the port keeps queued for the device before smoltcp is told to wait.
const TX_QUEUE_MAX: usize = 1024;

/// A frame to send, with the offloads asked of the device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxFrame {
    pub buf: Vec<u8>,
    pub meta: TxMeta,
}

/// A source and sink of Ethernet frames. Non-blocking; sans-IO friendly (in-memory devices
/// implement it with queues).
pub trait Device {
    /// Offloads and MTU (replaces mtu()).
    fn caps(&self) -> DeviceCaps;
    /// The device's MAC address.
    fn mac(&self) -> [u8; 6];
    /// Calls `f` for each received frame (at most `max`), borrowed from the device's own memory
    /// (the ring slot) for the duration of the call; returns how many.
    fn rx_burst(&mut self, max: usize, f: &mut dyn FnMut(&[u8], RxMeta)) -> io::Result<usize>;
    /// Sends the frames written through [`Device::frame_writer`] since the last call, in the
    /// order written, then frames from the front of `frames`, removing each one sent and pushing
    /// its emptied buffer onto `done` for reuse; stops when the device is full (a written frame
    /// the device could not take yet stays first in line: no frame of `frames` passes it).
    /// Returns how many frames were sent.
    fn tx_burst(
        &mut self,
        frames: &mut VecDeque<TxFrame>,
        done: &mut Vec<Vec<u8>>,
    ) -> io::Result<usize>;
    /// A descriptor that becomes readable when frames wait; `None` for a polled device (DPDK).
    fn rx_fd(&self) -> Option<RawFd>;
    /// Frames wait, as far as the device can tell from its own memory without a syscall (a
    /// ring's next slot); when it cannot tell (the agent then relies on
    /// [`Device::rx_fd`]): `None`. Lets a busy agent skip an `epoll_wait` per loop iteration.
    fn rx_ready(&self) -> Option<bool> {
        None
    }
    /// When frames held back by the device itself (a delaying fault injector) become due: the
    /// backend polls again then, since no descriptor will wake it.
    fn next_due(&self) -> Option<std::time::Instant> {
        None
    }
    /// The device gives no checksum state although a virtual link may hand it frames whose
    /// checksum the sender left to offload (AF_XDP and DPDK's `net_af_packet` on a veth): the
    /// engine then accepts a TCP checksum field that holds exactly the pseudo-header sum.
    fn rx_csum_may_be_partial(&self) -> bool {
        false
    }
    /// Re-reads offload settings an administrator may change at run time (`ethtool -K`); the
    /// backend calls it about once a second and then reads [`Device::caps`] again.
    fn refresh_caps(&mut self) {}
    /// The device's own transmit memory, lent to the engine to build frames in
    /// (`snstack_tcp::writer`): the payload is then copied once, from the TX stream straight to
    /// the buffer the device sends. None (the default): frames come to [`Device::tx_burst`] in
    /// the engine's buffers (af_packet, whose `sendmsg` copy is the wire's).
    fn frame_writer(&mut self) -> Option<&mut dyn FrameWriter> {
        None
    }
}

impl<D: Device + ?Sized> Device for Box<D> {
    fn caps(&self) -> DeviceCaps {
        (**self).caps()
    }
    fn mac(&self) -> [u8; 6] {
        (**self).mac()
    }
    fn rx_burst(&mut self, max: usize, f: &mut dyn FnMut(&[u8], RxMeta)) -> io::Result<usize> {
        (**self).rx_burst(max, f)
    }
    fn tx_burst(
        &mut self,
        frames: &mut VecDeque<TxFrame>,
        done: &mut Vec<Vec<u8>>,
    ) -> io::Result<usize> {
        (**self).tx_burst(frames, done)
    }
    fn rx_fd(&self) -> Option<RawFd> {
        (**self).rx_fd()
    }
    fn rx_ready(&self) -> Option<bool> {
        (**self).rx_ready()
    }
    fn next_due(&self) -> Option<std::time::Instant> {
        (**self).next_due()
    }
    fn rx_csum_may_be_partial(&self) -> bool {
        (**self).rx_csum_may_be_partial()
    }
    fn refresh_caps(&mut self) {
        (**self).refresh_caps()
    }
    fn frame_writer(&mut self) -> Option<&mut dyn FrameWriter> {
        (**self).frame_writer()
    }
}

/// Counters of a [`Port`].
#[derive(Clone, Copy, Debug, Default)]
pub struct PortStats {
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// SYNs dropped because every listener of the port had a full backlog.
    pub syn_dropped: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    /// Received frames whose checksum the port completed (`RxCsum::Partial`).
    pub rx_csum_completed: u64,
    /// Received super-frames (GRO/GSO) the port cut into MTU-sized segments, and the segments.
    pub rx_split: u64,
    pub rx_split_segments: u64,
    /// Received frames dropped: device-reported bad checksum, or oversized and not TCP.
    pub rx_dropped: u64,
}

/// The smoltcp side of a [`Device`].
pub struct Port<D: Device> {
    pub dev: D,
    rx: VecDeque<Vec<u8>>,
    txq: TxQueue,
    /// IP MTU of the device, refreshed with every received burst.
    mtu: usize,
    /// Local TCP ports whose listeners cannot take another connection: SYNs to them are dropped.
    pub full_ports: HashSet<u16>,
    pub stats: PortStats,
}

struct TxQueue {
    frames: VecDeque<TxFrame>,
    free: Vec<Vec<u8>>,
}

/// What smoltcp may be given of a received frame: smoltcp verifies checksums and takes only
/// MTU-sized frames, so a `CHECKSUM_PARTIAL` frame gets its TCP/UDP checksum completed and a
/// GRO/GSO super-frame (TCP over IPv4/IPv6 larger than 14 + MTU) is cut into MTU-sized segments,
/// in software. Everything else is passed on as it is.
pub(crate) fn accept_frame(
    frame: &[u8],
    meta: RxMeta,
    mtu: usize,
    rx: &mut VecDeque<Vec<u8>>,
    stats: &mut PortStats,
) {
    if meta.csum == RxCsum::Bad {
        stats.rx_dropped += 1;
        return;
    }
    if frame.len() > 14 + mtu {
        let Some(hdr_end) = offload::tcp_header_end(frame) else {
            stats.rx_dropped += 1;
            return;
        };
        // Headers stay as they are: the payload per segment is what fits in the MTU (and not
        // more than the sender's own segment size, when the device reported it).
        let fits = (14 + mtu).saturating_sub(hdr_end);
        let mss = meta
            .gso
            .map_or(fits, |g| usize::from(g.segment_size).min(fits));
        let n = offload::segment_tcp(frame, mss, &mut |seg| rx.push_back(seg.to_vec()));
        match n {
            Some(n) => {
                stats.rx_split += 1;
                stats.rx_split_segments += n as u64;
            }
            None => stats.rx_dropped += 1,
        }
        return;
    }
    let mut buf = frame.to_vec();
    if meta.csum == RxCsum::Partial && offload::fill_l4_csum(&mut buf) {
        stats.rx_csum_completed += 1;
    }
    rx.push_back(buf);
}

impl<D: Device> Port<D> {
    pub fn new(dev: D) -> Self {
        let mtu = dev.caps().mtu;
        Port {
            dev,
            rx: VecDeque::with_capacity(BURST),
            txq: TxQueue {
                frames: VecDeque::with_capacity(TX_QUEUE_MAX),
                free: Vec::new(),
            },
            mtu,
            full_ports: HashSet::new(),
            stats: PortStats::default(),
        }
    }

    /// Hands queued frames to the device. True when some stay queued (device full).
    pub fn flush(&mut self) -> bool {
        let before = self.txq.frames.len();
        if before == 0 {
            return false;
        }
        match self.dev.tx_burst(&mut self.txq.frames, &mut self.txq.free) {
            Ok(n) => self.stats.tx_frames += n as u64,
            Err(e) => {
                // A frame the device refuses is lost on the wire: TCP retransmits it.
                self.stats.tx_errors += 1;
                tracing::debug!("device tx: {e}");
                if let Some(mut f) = self.txq.frames.pop_front() {
                    f.buf.clear();
                    self.txq.free.push(f.buf);
                }
            }
        }
        !self.txq.frames.is_empty()
    }

    /// Frames received and not yet given to smoltcp, or device-side frames pending.
    pub fn rx_pending(&self) -> bool {
        !self.rx.is_empty()
    }

    fn refill(&mut self) {
        if !self.rx.is_empty() {
            return;
        }
        self.mtu = self.dev.caps().mtu;
        let Port {
            dev,
            rx,
            stats,
            mtu,
            ..
        } = self;
        let mtu = *mtu;
        let mut local = PortStats::default();
        let r = dev.rx_burst(BURST, &mut |frame, meta| {
            accept_frame(frame, meta, mtu, rx, &mut local)
        });
        stats.rx_csum_completed += local.rx_csum_completed;
        stats.rx_split += local.rx_split;
        stats.rx_split_segments += local.rx_split_segments;
        stats.rx_dropped += local.rx_dropped;
        match r {
            Ok(n) => stats.rx_frames += n as u64,
            Err(e) => {
                stats.rx_errors += 1;
                tracing::debug!("device rx: {e}");
            }
        }
    }
}

/// The destination port of a TCP SYN (without ACK) in an Ethernet frame, if it is one.
pub fn syn_dst_port(f: &[u8]) -> Option<u16> {
    let ethertype = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    let (proto, l4) = match ethertype {
        0x0800 => {
            let ihl = usize::from(f.get(14)? & 0x0f) * 4;
            let frag = u16::from_be_bytes([*f.get(20)?, *f.get(21)?]) & 0x1fff;
            if ihl < 20 || frag != 0 {
                return None;
            }
            (*f.get(23)?, 14 + ihl)
        }
        0x86dd => (*f.get(20)?, 14 + 40),
        _ => return None,
    };
    if proto != 6 {
        return None;
    }
    let flags = *f.get(l4 + 13)?;
    if flags & 0x02 != 0 && flags & 0x10 == 0 {
        Some(u16::from_be_bytes([*f.get(l4 + 2)?, *f.get(l4 + 3)?]))
    } else {
        None
    }
}

/// Lowers the MSS option of a TCP SYN (or SYN-ACK) that also carries a timestamp option to at most
/// `mtu - IP header - 20 - 12`, fixing the TCP checksum incrementally (RFC 1624). Returns true when
/// the frame was changed.
///
/// Why: smoltcp 0.12 sizes a data segment as min(peer MSS, MTU - headers) and then adds the
/// 12-byte timestamp option, so with timestamps every full segment would exceed the MTU. Clamping
/// the MSS it learns from the peer keeps its segments within the MTU (the "TCPMSS clamp" of
/// routers, applied to what we receive).
pub fn clamp_syn_mss(f: &mut [u8], ip_mtu: usize) -> bool {
    let Some(ethertype) = f.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
        return false;
    };
    let (l4, ip_hdr) = match ethertype {
        0x0800 => {
            let Some(&vihl) = f.get(14) else { return false };
            let ihl = usize::from(vihl & 0x0f) * 4;
            if ihl < 20 || f.get(23) != Some(&6) {
                return false;
            }
            (14 + ihl, ihl)
        }
        0x86dd => {
            if f.get(20) != Some(&6) {
                return false;
            }
            (14 + 40, 40)
        }
        _ => return false,
    };
    let (Some(&off), Some(&flags)) = (f.get(l4 + 12), f.get(l4 + 13)) else {
        return false;
    };
    let hlen = usize::from(off >> 4) * 4;
    if flags & 0x02 == 0 || hlen <= 20 || f.len() < l4 + hlen {
        return false;
    }
    let max = ip_mtu
        .saturating_sub(ip_hdr + 20 + 12)
        .min(usize::from(u16::MAX)) as u16;
    let (mut i, end) = (l4 + 20, l4 + hlen);
    let (mut mss_at, mut has_ts) = (None, false);
    while i < end {
        match f[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let Some(&len) = f.get(i + 1) else {
                    return false;
                };
                let len = usize::from(len);
                if len < 2 || i + len > end {
                    return false;
                }
                if kind == 2 && len == 4 {
                    mss_at = Some(i + 2);
                }
                if kind == 8 {
                    has_ts = true;
                }
                i += len;
            }
        }
    }
    let Some(at) = mss_at.filter(|_| has_ts) else {
        return false;
    };
    let old = u16::from_be_bytes([f[at], f[at + 1]]);
    if old <= max {
        return false;
    }
    f[at..at + 2].copy_from_slice(&max.to_be_bytes());
    // HC' = ~(~HC + ~m + m'), in one's-complement arithmetic.
    let hc = u16::from_be_bytes([f[l4 + 16], f[l4 + 17]]);
    let mut sum = u32::from(!hc) + u32::from(!old) + u32::from(max);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    f[l4 + 16..l4 + 18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    true
}

pub struct RxTok(Vec<u8>);
pub struct TxTok<'a>(&'a mut TxQueue);

impl phy::RxToken for RxTok {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxTok<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = self.0.free.pop().unwrap_or_default();
        buf.clear();
        buf.resize(len, 0);
        let r = f(&mut buf);
        // smoltcp fills every checksum itself: no offload asked of the device.
        self.0.frames.push_back(TxFrame {
            buf,
            meta: TxMeta::default(),
        });
        r
    }
}

impl<D: Device> phy::Device for Port<D> {
    type RxToken<'a>
        = RxTok
    where
        Self: 'a;
    type TxToken<'a>
        = TxTok<'a>
    where
        Self: 'a;

    fn receive(&mut self, _now: Instant) -> Option<(RxTok, TxTok<'_>)> {
        loop {
            self.refill();
            let mut frame = self.rx.pop_front()?;
            clamp_syn_mss(&mut frame, self.mtu);
            if !self.full_ports.is_empty() {
                if let Some(p) = syn_dst_port(&frame) {
                    if self.full_ports.contains(&p) {
                        self.stats.syn_dropped += 1;
                        continue;
                    }
                }
            }
            return Some((RxTok(frame), TxTok(&mut self.txq)));
        }
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxTok<'_>> {
        if self.txq.frames.len() >= TX_QUEUE_MAX {
            // Back-pressure: try the device once, then make smoltcp wait.
            self.flush();
            if self.txq.frames.len() >= TX_QUEUE_MAX {
                return None;
            }
        }
        Some(TxTok(&mut self.txq))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = self.mtu + 14;
        c.max_burst_size = Some(BURST);
        c
    }
}

// ---------------------------------------------------------------------------------------------
// Test devices (the engine's unit tests; kept in the binary for future fault-injection runs)

/// A frame in flight on an in-memory wire, with what the receiving device reports about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireFrame {
    pub buf: Vec<u8>,
    pub meta: RxMeta,
    /// GRO may still merge further segments into it (the last frame a [`PeerOffloads::gro_max`]
    /// sender put on the wire, not read yet: GRO merges what arrives within one NAPI poll).
    pub gro_open: bool,
}

/// One direction of an in-memory wire.
#[cfg_attr(not(test), allow(dead_code))]
pub type Wire = Rc<RefCell<VecDeque<WireFrame>>>;

/// How a [`Loopback`] end changes the plain frames it sends, to emulate a Linux peer with
/// default offloads on a veth (what af_packet then hands the agent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerOffloads {
    /// TCP/UDP checksums are left partial (pseudo-header sum; `RxCsum::Partial` at the other
    /// end), as with tx checksum offload.
    pub partial_csum: bool,
    /// GRO: consecutive TCP segments of one flow are merged into super-frames of at most this
    /// many bytes (0: off) while the receiver has not read them, reported with `RxMeta::gso`
    /// and `RxCsum::Partial`.
    pub gro_max: usize,
}

/// One end of an in-memory Ethernet cable: what it sends appears at the other end, with the
/// sender's offload requests turned into what a veth's receiver sees: a frame sent with
/// `TxMeta::csum` or `gso` arrives as `RxCsum::Partial` (a GSO super-frame arrives whole, with
/// `RxMeta::gso`), a plain frame as `RxCsum::Unknown`.
#[cfg_attr(not(test), allow(dead_code))]
pub struct Loopback {
    mac: [u8; 6],
    rx: Wire,
    tx: Wire,
    caps: DeviceCaps,
    peer: PeerOffloads,
    /// Device memory this end lends to the engine (`Device::frame_writer`), when set.
    lent: Option<LentTx>,
    /// What `Device::rx_fd` reports ([`Loopback::set_rx_fd`]); `None`: a polled device.
    rx_fd: Option<RawFd>,
}

/// Transmit memory a [`Loopback`] lends (tests): at most `room` frames written between two
/// `tx_burst`s, which sends them first. Buffers are handed out full of garbage.
struct LentTx {
    room: usize,
    written: VecDeque<TxFrame>,
}

impl FrameWriter for LentTx {
    fn write_frame(
        &mut self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> Option<TxMeta>,
    ) -> snstack_tcp::WriteOutcome {
        use snstack_tcp::WriteOutcome;
        if self.written.len() >= self.room {
            return WriteOutcome::NoRoom;
        }
        let mut buf = vec![0x5a; len];
        match fill(&mut buf) {
            Some(meta) => {
                self.written.push_back(TxFrame { buf, meta });
                WriteOutcome::Written
            }
            None => WriteOutcome::Dropped,
        }
    }
}

#[cfg_attr(not(test), allow(dead_code))]
impl Loopback {
    /// Two connected ends with the given MACs (no offloads, MTU 1500).
    pub fn pair(a: [u8; 6], b: [u8; 6]) -> (Loopback, Loopback) {
        let ab: Wire = Rc::default();
        let ba: Wire = Rc::default();
        (
            Loopback {
                mac: a,
                rx: ba.clone(),
                tx: ab.clone(),
                caps: DeviceCaps::default(),
                peer: PeerOffloads::default(),
                lent: None,
                rx_fd: None,
            },
            Loopback {
                mac: b,
                rx: ab,
                tx: ba,
                caps: DeviceCaps::default(),
                peer: PeerOffloads::default(),
                lent: None,
                rx_fd: None,
            },
        )
    }

    /// What this end reports from `caps()` (e.g. `tx_csum`/`tso` for an engine that offloads).
    pub fn set_caps(&mut self, caps: DeviceCaps) {
        self.caps = caps;
    }

    /// Reports `fd` as this end's receive descriptor, so the backend sleeps on it as on an
    /// af_packet socket instead of polling the device every few milliseconds (nothing ever
    /// writes to it: frames still arrive only through [`Device::rx_burst`]).
    pub fn set_rx_fd(&mut self, fd: RawFd) {
        self.rx_fd = Some(fd);
    }

    /// Lends the engine transmit memory for up to `room` frames between two `tx_burst`s.
    pub fn lend_tx(&mut self, room: usize) {
        self.lent = Some(LentTx {
            room,
            written: VecDeque::new(),
        });
    }

    /// Makes this end behave like an offloading Linux peer for the frames it sends.
    pub fn set_peer_offloads(&mut self, p: PeerOffloads) {
        self.peer = p;
    }

    /// Puts a frame on the wire towards this end, as if the other end had sent it with `meta`
    /// (tests craft partial-checksum frames and super-frames this way).
    pub fn inject(&self, buf: Vec<u8>, meta: RxMeta) {
        self.rx.borrow_mut().push_back(WireFrame {
            buf,
            meta,
            gro_open: false,
        });
    }

    /// Copies of the frames in flight towards this end (tests inspect segments on the wire).
    pub fn peek(&self) -> Vec<Vec<u8>> {
        self.rx.borrow().iter().map(|w| w.buf.clone()).collect()
    }

    /// Copies of the frames in flight towards this end, with their receive metadata.
    pub fn peek_meta(&self) -> Vec<WireFrame> {
        self.rx.borrow().iter().cloned().collect()
    }
}

impl Device for Loopback {
    fn caps(&self) -> DeviceCaps {
        self.caps
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn rx_burst(&mut self, max: usize, f: &mut dyn FnMut(&[u8], RxMeta)) -> io::Result<usize> {
        let mut n = 0;
        while n < max {
            let Some(w) = self.rx.borrow_mut().pop_front() else {
                break;
            };
            f(&w.buf, w.meta);
            n += 1;
        }
        Ok(n)
    }

    fn frame_writer(&mut self) -> Option<&mut dyn FrameWriter> {
        self.lent.as_mut().map(|l| l as &mut dyn FrameWriter)
    }

    fn tx_burst(
        &mut self,
        frames: &mut VecDeque<TxFrame>,
        done: &mut Vec<Vec<u8>>,
    ) -> io::Result<usize> {
        // Written frames first (their buffers then go to `done` like the others').
        if let Some(l) = &mut self.lent {
            while let Some(f) = l.written.pop_back() {
                frames.push_front(f);
            }
        }
        let n = frames.len();
        let mut wire = self.tx.borrow_mut();
        for TxFrame { mut buf, meta } in frames.drain(..) {
            let offloaded = meta.csum.is_some() || meta.gso.is_some();
            let mut rx = RxMeta {
                csum: if offloaded {
                    RxCsum::Partial
                } else {
                    RxCsum::Unknown
                },
                gso: meta.gso,
            };
            let plain = !offloaded;
            if plain && self.peer.gro_max > 0 {
                if let Some(w) = wire.back_mut().filter(|w| w.gro_open) {
                    let first = offload::tcp_payload_len(&w.buf);
                    if offload::gro_merge(&mut w.buf, &buf, self.peer.gro_max) {
                        offload::make_partial(&mut w.buf);
                        w.meta.csum = RxCsum::Partial;
                        if w.meta.gso.is_none() {
                            w.meta.gso = first.map(|l| Gso {
                                segment_size: l as u16,
                                ipv6: w.buf.get(12..14) == Some(&[0x86, 0xdd][..]),
                            });
                        }
                        buf.clear();
                        done.push(buf);
                        continue;
                    }
                }
            }
            if plain && self.peer.partial_csum && offload::make_partial(&mut buf).is_some() {
                rx.csum = RxCsum::Partial;
            }
            if let Some(w) = wire.back_mut() {
                w.gro_open = false;
            }
            wire.push_back(WireFrame {
                buf: buf.clone(),
                meta: rx,
                gro_open: plain && self.peer.gro_max > 0,
            });
            buf.clear();
            done.push(buf);
        }
        Ok(n)
    }

    fn rx_fd(&self) -> Option<RawFd> {
        self.rx_fd
    }
}

/// Fault settings, in parts per thousand of frames, and a one-way delay applied to received
/// frames (the stand-in for netem's `delay` on kernels without sch_netem).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    pub drop_pm: u32,
    pub dup_pm: u32,
    pub reorder_pm: u32,
    pub delay_us: u32,
}

impl std::str::FromStr for Faults {
    type Err = String;

    /// `drop=10,dup=0,reorder=10,delay_us=4000` (per mille, delay in microseconds; any subset).
    fn from_str(s: &str) -> Result<Faults, String> {
        let mut f = Faults::default();
        for kv in s.split(',').filter(|x| !x.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or(format!("expected KEY=PERMILLE, got '{kv}'"))?;
            let v: u32 = v.parse().map_err(|_| format!("bad value '{v}'"))?;
            if k == "delay_us" {
                if v > 1_000_000 {
                    return Err(format!("delay_us={v}: at most 1000000 (1 s)"));
                }
                f.delay_us = v;
                continue;
            }
            if v > 1000 {
                return Err(format!("{k}={v}: at most 1000 per mille"));
            }
            match k {
                "drop" => f.drop_pm = v,
                "dup" => f.dup_pm = v,
                "reorder" => f.reorder_pm = v,
                _ => {
                    return Err(format!(
                        "unknown fault '{k}' (drop, dup, reorder, delay_us)"
                    ))
                }
            }
        }
        Ok(f)
    }
}

/// Wraps a device and damages what it receives (drop, duplicate, reorder) with a seeded
/// xorshift PRNG, so a failing run replays exactly. Received frames are copied out of the inner
/// device (they may be held across bursts); their metadata travels with them.
pub struct FaultInjector<D> {
    inner: D,
    faults: Faults,
    state: u64,
    held: Option<WireFrame>,
    /// Received frames waiting out `delay_us`, with the time each becomes due.
    delayed: VecDeque<(std::time::Instant, WireFrame)>,
    /// Frames ready for the caller (scratch between the inner burst and `f`).
    ready: VecDeque<WireFrame>,
    pub dropped: u64,
}

impl<D: Device> FaultInjector<D> {
    pub fn new(inner: D, faults: Faults, seed: u64) -> Self {
        FaultInjector {
            inner,
            faults,
            state: seed | 1,
            held: None,
            delayed: VecDeque::new(),
            ready: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Drops, duplicates and reorders what the inner device received.
    fn damage(&mut self, out: &mut VecDeque<WireFrame>, max: usize) -> io::Result<usize> {
        let mut raw = Vec::new();
        self.inner.rx_burst(max, &mut |b, meta| {
            raw.push(WireFrame {
                buf: b.to_vec(),
                meta,
                gro_open: false,
            })
        })?;
        let start = out.len();
        for f in raw {
            if self.roll() < self.faults.drop_pm {
                self.dropped += 1;
                continue;
            }
            if self.roll() < self.faults.dup_pm {
                out.push_back(f.clone());
            }
            if self.held.is_none() && self.roll() < self.faults.reorder_pm {
                self.held = Some(f);
                continue;
            }
            out.push_back(f);
            if let Some(h) = self.held.take() {
                out.push_back(h);
            }
        }
        // A held frame is released at the latest with the next burst, even an empty one.
        if out.len() == start {
            if let Some(h) = self.held.take() {
                out.push_back(h);
            }
        }
        Ok(out.len() - start)
    }

    fn roll(&mut self) -> u32 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        (x % 1000) as u32
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub fn inner(&self) -> &D {
        &self.inner
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub fn inner_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub fn set_faults(&mut self, f: Faults) {
        self.faults = f;
    }
}

impl<D: Device> Device for FaultInjector<D> {
    fn refresh_caps(&mut self) {
        self.inner.refresh_caps()
    }
    fn rx_csum_may_be_partial(&self) -> bool {
        self.inner.rx_csum_may_be_partial()
    }
    fn caps(&self) -> DeviceCaps {
        self.inner.caps()
    }

    fn mac(&self) -> [u8; 6] {
        self.inner.mac()
    }

    fn rx_burst(&mut self, max: usize, f: &mut dyn FnMut(&[u8], RxMeta)) -> io::Result<usize> {
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        if self.faults.delay_us == 0 {
            self.damage(&mut ready, max)?;
        } else {
            // Damage as usual, hold every frame for the delay, release what is due (in order).
            let mut fresh = VecDeque::new();
            self.damage(&mut fresh, max)?;
            let now = std::time::Instant::now();
            let due = now + std::time::Duration::from_micros(u64::from(self.faults.delay_us));
            self.delayed.extend(fresh.into_iter().map(|f| (due, f)));
            while ready.len() < max && self.delayed.front().is_some_and(|(t, _)| *t <= now) {
                if let Some((_, w)) = self.delayed.pop_front() {
                    ready.push_back(w);
                }
            }
        }
        let n = ready.len();
        for w in ready.drain(..) {
            f(&w.buf, w.meta);
        }
        self.ready = ready;
        Ok(n)
    }

    fn next_due(&self) -> Option<std::time::Instant> {
        self.delayed.front().map(|(t, _)| *t)
    }

    fn tx_burst(
        &mut self,
        frames: &mut VecDeque<TxFrame>,
        done: &mut Vec<Vec<u8>>,
    ) -> io::Result<usize> {
        // Sent frames are dropped or duplicated too (reordering is applied on receive only).
        let mut n = 0;
        let mut one = VecDeque::with_capacity(2);
        while let Some(mut f) = frames.pop_front() {
            if self.roll() < self.faults.drop_pm {
                self.dropped += 1;
                n += 1;
                f.buf.clear();
                done.push(f.buf);
                continue;
            }
            if self.roll() < self.faults.dup_pm {
                one.push_back(f.clone());
            }
            one.push_back(f);
            let sent = self.inner.tx_burst(&mut one, done);
            if let Err(e) = sent {
                one.clear();
                return Err(e);
            }
            if let Some(back) = one.pop_back() {
                one.clear();
                frames.push_front(back);
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    fn rx_fd(&self) -> Option<RawFd> {
        self.inner.rx_fd()
    }

    // No `frame_writer`: frames written into the inner device's memory would reach its wire
    // without passing the drop/duplicate roll above. Under fault injection every frame takes
    // the engine's buffers (the path that copies twice on DPDK and AF_XDP).
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syn_frame(port: u16, flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12] = 0x08;
        f[14] = 0x45;
        f[23] = 6;
        f[34 + 2..34 + 4].copy_from_slice(&port.to_be_bytes());
        f[34 + 13] = flags;
        f
    }

    /// The TCP checksum of an IPv4 frame, computed from scratch.
    fn tcp_checksum(f: &[u8]) -> u16 {
        let l4 = 14 + usize::from(f[14] & 0x0f) * 4;
        let tcp = &f[l4..];
        let mut sum: u32 = 0;
        let mut add = |b: &[u8]| {
            for c in b.chunks(2) {
                sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            }
        };
        add(&f[26..34]);
        add(&[0, 6]);
        add(&(tcp.len() as u16).to_be_bytes());
        let mut t = tcp.to_vec();
        t[16] = 0;
        t[17] = 0;
        add(&t);
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn syn_with_options(opts: &[u8]) -> Vec<u8> {
        let mut f = syn_frame(80, 0x02);
        f.extend_from_slice(opts);
        f[34 + 12] = (((20 + opts.len()) / 4) as u8) << 4;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        let c = tcp_checksum(&f);
        f[34 + 16..34 + 18].copy_from_slice(&c.to_be_bytes());
        f
    }

    #[test]
    fn mss_clamp_with_timestamps_keeps_the_checksum_valid() {
        // MSS 1460, SACK permitted, timestamps, NOP, window scale 7.
        let opts = [
            2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        let mut f = syn_with_options(&opts);
        assert!(clamp_syn_mss(&mut f, 1500));
        assert_eq!(u16::from_be_bytes([f[56], f[57]]), 1448);
        assert_eq!(tcp_checksum(&f), u16::from_be_bytes([f[50], f[51]]));
        // Already small enough, or no timestamps: untouched.
        assert!(!clamp_syn_mss(&mut f, 1500));
        let mut g = syn_with_options(&[2, 4, 0x05, 0xb4]);
        assert!(!clamp_syn_mss(&mut g, 1500));
        // Truncated options are left alone.
        let mut h = syn_with_options(&opts);
        h.truncate(60);
        assert!(!clamp_syn_mss(&mut h, 1500));
    }

    #[test]
    fn syn_detection() {
        assert_eq!(syn_dst_port(&syn_frame(80, 0x02)), Some(80));
        assert_eq!(syn_dst_port(&syn_frame(80, 0x12)), None);
        assert_eq!(syn_dst_port(&syn_frame(80, 0x10)), None);
        assert_eq!(syn_dst_port(&[0u8; 10]), None);
        assert_eq!(syn_dst_port(&syn_frame(80, 0x02)[..40]), None);
    }

    fn frames(v: impl IntoIterator<Item = Vec<u8>>) -> VecDeque<TxFrame> {
        v.into_iter()
            .map(|buf| TxFrame {
                buf,
                meta: TxMeta::default(),
            })
            .collect()
    }

    fn recv_into(d: &mut impl Device, got: &mut Vec<Vec<u8>>, max: usize) -> usize {
        d.rx_burst(max, &mut |b, _| got.push(b.to_vec())).unwrap()
    }

    #[test]
    fn loopback_and_faults_are_deterministic() {
        let (a, b) = Loopback::pair([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let mut a = a;
        let mut b = FaultInjector::new(
            b,
            Faults {
                drop_pm: 200,
                dup_pm: 100,
                reorder_pm: 100,
                delay_us: 0,
            },
            42,
        );
        let mut q = frames((0..200u8).map(|i| vec![i]));
        let mut done = Vec::new();
        assert_eq!(a.tx_burst(&mut q, &mut done).unwrap(), 200);
        assert_eq!(done.len(), 200, "every sent buffer comes back for reuse");
        let mut got = Vec::new();
        while recv_into(&mut b, &mut got, 1000) > 0 {}
        assert!(b.dropped > 10 && b.dropped < 80, "dropped {}", b.dropped);
        let again = {
            let (a2, b2) = Loopback::pair([0; 6], [0; 6]);
            let mut a2 = a2;
            let mut b2 = FaultInjector::new(b2, b.faults, 42);
            let mut q = frames((0..200u8).map(|i| vec![i]));
            a2.tx_burst(&mut q, &mut Vec::new()).unwrap();
            let mut g = Vec::new();
            while recv_into(&mut b2, &mut g, 1000) > 0 {}
            g
        };
        assert_eq!(got, again);
    }

    #[test]
    fn delay_holds_frames_until_due_in_order() {
        let (a, b) = Loopback::pair([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let mut a = a;
        let f = Faults {
            delay_us: 20_000,
            ..Faults::default()
        };
        let mut b = FaultInjector::new(b, f, 7);
        let mut q = frames((0..5u8).map(|i| vec![i]));
        a.tx_burst(&mut q, &mut Vec::new()).unwrap();
        let t0 = std::time::Instant::now();
        let mut got = Vec::new();
        assert_eq!(
            recv_into(&mut b, &mut got, 64),
            0,
            "released before the delay"
        );
        let due = b.next_due().expect("frames are held");
        assert!(due >= t0 + std::time::Duration::from_millis(19));
        while got.len() < 5 {
            std::thread::sleep(std::time::Duration::from_millis(5));
            recv_into(&mut b, &mut got, 64);
        }
        assert!(t0.elapsed() >= std::time::Duration::from_millis(20));
        assert_eq!(got, (0..5u8).map(|i| vec![i]).collect::<Vec<_>>());
        assert_eq!(b.next_due(), None);
    }

    /// Everything smoltcp is given through the port, in order.
    fn port_frames<D: Device>(p: &mut Port<D>) -> Vec<Vec<u8>> {
        use smoltcp::phy::{Device as _, RxToken as _};
        let mut v = Vec::new();
        while let Some((rx, _tx)) = p.receive(Instant::from_millis(0)) {
            v.push(rx.consume(|b| b.to_vec()));
        }
        v
    }

    #[test]
    fn port_completes_partial_checksums_and_splits_super_frames() {
        use super::offload::tests::tcp4;
        let data: Vec<u8> = (0..6000u32).map(|i| (i * 13) as u8).collect();
        let segs: Vec<Vec<u8>> = data
            .chunks(1000)
            .enumerate()
            .map(|(i, c)| tcp4(1 + (i as u32) * 1000, 0x10, c))
            .collect();
        let (mut peer, me) = Loopback::pair([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        peer.set_peer_offloads(PeerOffloads {
            partial_csum: true,
            gro_max: 4200,
        });
        peer.tx_burst(&mut frames(segs.clone()), &mut Vec::new())
            .unwrap();
        // GRO: 4 segments (4,132 bytes with headers) in one, then 2 in another; all partial.
        let wire = me.peek_meta();
        assert_eq!(wire.len(), 2);
        assert!(wire.iter().all(|w| w.meta.csum == RxCsum::Partial));
        assert_eq!(wire[0].buf.len(), 66 + 4000);
        assert_eq!(
            wire[0].meta.gso,
            Some(Gso {
                segment_size: 1000,
                ipv6: false
            })
        );
        // A super-frame from a peer with a larger MTU-sized segment size than ours is cut at
        // our MTU; a frame with a stale partial checksum is completed.
        let mut big = tcp4(6001, 0x18, &data[..3000]);
        offload::make_partial(&mut big);
        me.inject(
            big,
            RxMeta {
                csum: RxCsum::Partial,
                gso: Some(Gso {
                    segment_size: 9000,
                    ipv6: false,
                }),
            },
        );
        let mut p = Port::new(me);
        let got = port_frames(&mut p);
        assert_eq!(got.len(), 6 + 3);
        for (g, s) in got.iter().zip(&segs) {
            // Same TCP segment (checksum included); the IP ID may differ (GSO counts up).
            assert_eq!(g[34..], s[34..]);
            assert_eq!(g.len(), s.len());
        }
        let tail: Vec<usize> = got[6..].iter().map(|g| g.len() - 66).collect();
        assert_eq!(tail, [1500 - 52, 1500 - 52, 3000 - 2 * 1448]);
        assert_eq!(got[8][47], 0x18, "PSH stays on the last segment only");
        assert_eq!(got[6][47], 0x10);
        assert!(got.iter().all(|g| g.len() <= 1514));
        let want = tcp4(6001 + 1448, 0x10, &data[1448..2896]);
        assert_eq!(got[7][34..], want[34..]);
        assert_eq!(p.stats.rx_split, 3);
        assert_eq!(p.stats.rx_split_segments, 4 + 2 + 3);
        // A device-reported bad checksum is dropped; oversized non-TCP too.
        p.dev.inject(
            segs[0].clone(),
            RxMeta {
                csum: RxCsum::Bad,
                gso: None,
            },
        );
        p.dev.inject(vec![0u8; 3000], RxMeta::default());
        assert!(port_frames(&mut p).is_empty());
        assert_eq!(p.stats.rx_dropped, 2);
    }

    #[test]
    fn loopback_carries_offload_requests_as_receive_metadata() {
        let (mut a, b) = Loopback::pair([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let g = Gso {
            segment_size: 1448,
            ipv6: false,
        };
        let mut q = VecDeque::from([
            TxFrame {
                buf: vec![1],
                meta: TxMeta {
                    csum: Some((34, 16)),
                    gso: None,
                },
            },
            TxFrame {
                buf: vec![2],
                meta: TxMeta {
                    csum: Some((34, 16)),
                    gso: Some(g),
                },
            },
            TxFrame {
                buf: vec![3],
                meta: TxMeta::default(),
            },
        ]);
        a.tx_burst(&mut q, &mut Vec::new()).unwrap();
        let m: Vec<RxMeta> = b.peek_meta().iter().map(|w| w.meta).collect();
        assert_eq!(m[0].csum, RxCsum::Partial);
        assert_eq!(
            m[1],
            RxMeta {
                csum: RxCsum::Partial,
                gso: Some(g)
            }
        );
        assert_eq!(m[2], RxMeta::default());
    }

    #[test]
    fn fault_specs() {
        assert_eq!(
            "drop=10,reorder=5".parse::<Faults>(),
            Ok(Faults {
                drop_pm: 10,
                dup_pm: 0,
                reorder_pm: 5,
                delay_us: 0,
            })
        );
        assert_eq!(
            "delay_us=2000".parse::<Faults>().map(|f| f.delay_us),
            Ok(2000)
        );
        assert!("delay_us=2000000".parse::<Faults>().is_err());
        assert!("drop=1001".parse::<Faults>().is_err());
        assert!("loss=1".parse::<Faults>().is_err());
        assert!("drop".parse::<Faults>().is_err());
    }
}
