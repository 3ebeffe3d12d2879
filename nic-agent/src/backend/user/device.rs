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

/// Largest Ethernet frame we send or accept (1500-byte MTU + 14-byte header).
pub const MAX_FRAME: usize = 1514;
/// Frames taken from a device per burst.
pub const BURST: usize = 64;
/// Frames the port keeps queued for the device before smoltcp is told to wait.
const TX_QUEUE_MAX: usize = 1024;

/// A source and sink of Ethernet frames. Non-blocking; sans-IO friendly (in-memory devices
/// implement it with queues).
pub trait Device {
    /// Appends up to `max` received frames to `out`; returns how many.
    fn rx_burst(&mut self, out: &mut VecDeque<Vec<u8>>, max: usize) -> io::Result<usize>;
    /// Sends frames from the front of `frames`, removing each one sent; stops (leaving the rest)
    /// when the device is full. Returns how many were sent.
    fn tx_burst(&mut self, frames: &mut VecDeque<Vec<u8>>) -> io::Result<usize>;
    /// The device's MAC address.
    fn mac(&self) -> [u8; 6];
    /// IP MTU (1500 for Ethernet).
    fn mtu(&self) -> usize {
        1500
    }
    /// A descriptor that becomes readable when frames wait; `None` for a polled device (DPDK).
    fn rx_fd(&self) -> Option<RawFd>;
}

impl<D: Device + ?Sized> Device for Box<D> {
    fn rx_burst(&mut self, out: &mut VecDeque<Vec<u8>>, max: usize) -> io::Result<usize> {
        (**self).rx_burst(out, max)
    }
    fn tx_burst(&mut self, frames: &mut VecDeque<Vec<u8>>) -> io::Result<usize> {
        (**self).tx_burst(frames)
    }
    fn mac(&self) -> [u8; 6] {
        (**self).mac()
    }
    fn mtu(&self) -> usize {
        (**self).mtu()
    }
    fn rx_fd(&self) -> Option<RawFd> {
        (**self).rx_fd()
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
}

/// The smoltcp side of a [`Device`].
pub struct Port<D: Device> {
    pub dev: D,
    rx: VecDeque<Vec<u8>>,
    txq: TxQueue,
    /// Local TCP ports whose listeners cannot take another connection: SYNs to them are dropped.
    pub full_ports: HashSet<u16>,
    pub stats: PortStats,
}

struct TxQueue {
    frames: VecDeque<Vec<u8>>,
    free: Vec<Vec<u8>>,
}

impl<D: Device> Port<D> {
    pub fn new(dev: D) -> Self {
        Port {
            dev,
            rx: VecDeque::with_capacity(BURST),
            txq: TxQueue {
                frames: VecDeque::with_capacity(TX_QUEUE_MAX),
                free: Vec::new(),
            },
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
        match self.dev.tx_burst(&mut self.txq.frames) {
            Ok(n) => self.stats.tx_frames += n as u64,
            Err(e) => {
                // A frame the device refuses is lost on the wire: TCP retransmits it.
                self.stats.tx_errors += 1;
                tracing::debug!("device tx: {e}");
                if let Some(f) = self.txq.frames.pop_front() {
                    self.txq.free.push(f);
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
        match self.dev.rx_burst(&mut self.rx, BURST) {
            Ok(n) => self.stats.rx_frames += n as u64,
            Err(e) => {
                self.stats.rx_errors += 1;
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
        self.0.frames.push_back(buf);
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
            clamp_syn_mss(&mut frame, self.dev.mtu());
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
        c.max_transmission_unit = self.dev.mtu() + 14;
        c.max_burst_size = Some(BURST);
        c
    }
}

// ---------------------------------------------------------------------------------------------
// Test devices (the engine's unit tests; kept in the binary for future fault-injection runs)

/// One direction of an in-memory wire.
#[cfg_attr(not(test), allow(dead_code))]
pub type Wire = Rc<RefCell<VecDeque<Vec<u8>>>>;

/// One end of an in-memory Ethernet cable: what it sends appears at the other end.
#[cfg_attr(not(test), allow(dead_code))]
pub struct Loopback {
    mac: [u8; 6],
    rx: Wire,
    tx: Wire,
}

#[cfg_attr(not(test), allow(dead_code))]
impl Loopback {
    /// Two connected ends with the given MACs.
    pub fn pair(a: [u8; 6], b: [u8; 6]) -> (Loopback, Loopback) {
        let ab: Wire = Rc::default();
        let ba: Wire = Rc::default();
        (
            Loopback {
                mac: a,
                rx: ba.clone(),
                tx: ab.clone(),
            },
            Loopback {
                mac: b,
                rx: ab,
                tx: ba,
            },
        )
    }

    /// Copies of the frames in flight towards this end (tests inspect segments on the wire).
    pub fn peek(&self) -> Vec<Vec<u8>> {
        self.rx.borrow().iter().cloned().collect()
    }
}

impl Device for Loopback {
    fn rx_burst(&mut self, out: &mut VecDeque<Vec<u8>>, max: usize) -> io::Result<usize> {
        let mut q = self.rx.borrow_mut();
        let n = q.len().min(max);
        out.extend(q.drain(..n));
        Ok(n)
    }

    fn tx_burst(&mut self, frames: &mut VecDeque<Vec<u8>>) -> io::Result<usize> {
        let n = frames.len();
        self.tx.borrow_mut().extend(frames.drain(..));
        Ok(n)
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn rx_fd(&self) -> Option<RawFd> {
        None
    }
}

/// Fault settings, in parts per thousand of frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    pub drop_pm: u32,
    pub dup_pm: u32,
    pub reorder_pm: u32,
}

impl std::str::FromStr for Faults {
    type Err = String;

    /// `drop=10,dup=0,reorder=10` (per mille; any subset).
    fn from_str(s: &str) -> Result<Faults, String> {
        let mut f = Faults::default();
        for kv in s.split(',').filter(|x| !x.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or(format!("expected KEY=PERMILLE, got '{kv}'"))?;
            let v: u32 = v
                .parse()
                .map_err(|_| format!("bad per-mille value '{v}'"))?;
            if v > 1000 {
                return Err(format!("{k}={v}: at most 1000 per mille"));
            }
            match k {
                "drop" => f.drop_pm = v,
                "dup" => f.dup_pm = v,
                "reorder" => f.reorder_pm = v,
                _ => return Err(format!("unknown fault '{k}' (drop, dup, reorder)")),
            }
        }
        Ok(f)
    }
}

/// Wraps a device and damages what it receives (drop, duplicate, reorder) with a seeded
/// xorshift PRNG, so a failing run replays exactly.
pub struct FaultInjector<D> {
    inner: D,
    faults: Faults,
    state: u64,
    held: Option<Vec<u8>>,
    pub dropped: u64,
}

impl<D: Device> FaultInjector<D> {
    pub fn new(inner: D, faults: Faults, seed: u64) -> Self {
        FaultInjector {
            inner,
            faults,
            state: seed | 1,
            held: None,
            dropped: 0,
        }
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
    pub fn set_faults(&mut self, f: Faults) {
        self.faults = f;
    }
}

impl<D: Device> Device for FaultInjector<D> {
    fn rx_burst(&mut self, out: &mut VecDeque<Vec<u8>>, max: usize) -> io::Result<usize> {
        let mut raw = VecDeque::new();
        self.inner.rx_burst(&mut raw, max)?;
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

    fn tx_burst(&mut self, frames: &mut VecDeque<Vec<u8>>) -> io::Result<usize> {
        // Sent frames are dropped or duplicated too (reordering is applied on receive only).
        let mut n = 0;
        let mut one = VecDeque::with_capacity(2);
        while let Some(f) = frames.pop_front() {
            if self.roll() < self.faults.drop_pm {
                self.dropped += 1;
                n += 1;
                continue;
            }
            if self.roll() < self.faults.dup_pm {
                one.push_back(f.clone());
            }
            one.push_back(f);
            let sent = self.inner.tx_burst(&mut one);
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

    fn mac(&self) -> [u8; 6] {
        self.inner.mac()
    }

    fn rx_fd(&self) -> Option<RawFd> {
        self.inner.rx_fd()
    }
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
            },
            42,
        );
        let mut q: VecDeque<Vec<u8>> = (0..200u8).map(|i| vec![i]).collect();
        assert_eq!(a.tx_burst(&mut q).unwrap(), 200);
        let mut got = VecDeque::new();
        while b.rx_burst(&mut got, 1000).unwrap() > 0 {}
        assert!(b.dropped > 10 && b.dropped < 80, "dropped {}", b.dropped);
        let again = {
            let (a2, b2) = Loopback::pair([0; 6], [0; 6]);
            let mut a2 = a2;
            let mut b2 = FaultInjector::new(b2, b.faults, 42);
            let mut q: VecDeque<Vec<u8>> = (0..200u8).map(|i| vec![i]).collect();
            a2.tx_burst(&mut q).unwrap();
            let mut g = VecDeque::new();
            while b2.rx_burst(&mut g, 1000).unwrap() > 0 {}
            g
        };
        assert_eq!(got, again);
    }

    #[test]
    fn fault_specs() {
        assert_eq!(
            "drop=10,reorder=5".parse::<Faults>(),
            Ok(Faults {
                drop_pm: 10,
                dup_pm: 0,
                reorder_pm: 5
            })
        );
        assert!("drop=1001".parse::<Faults>().is_err());
        assert!("loss=1".parse::<Faults>().is_err());
        assert!("drop".parse::<Faults>().is_err());
    }
}
