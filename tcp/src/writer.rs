//! Frames built straight in device memory: a device that owns its transmit buffers (an AF_XDP
//! UMEM frame, a DPDK mbuf) lends one to the engine, which writes the whole frame into it
//! (Ethernet, IP and TCP headers, and the payload copied from the send buffer or the lent TX
//! stream). The payload is then copied once on its way from the host to the wire, with no frame
//! buffer of the engine's own in between.
//!
//! ```text
//!   Stack::poll_transmit_into ── write_frame(len, fill) ──► device buffer (UMEM frame / mbuf)
//!            │ NoRoom                                              │ submitted first by tx_burst
//!            ▼                                                     ▼
//!   Stack::frames() (Vec buffers) ─────── tx_burst copies ───────► wire
//! ```
//!
//! Order: within one poll, once the device refused a frame (NoRoom), every later frame goes to
//! [`crate::stack::Stack::frames`] too, so the device's `tx_burst` sends the frames it holds,
//! then the queued ones, in the engine's order.

use crate::frame::TxMeta;

/// What became of one frame offered to a [`FrameWriter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum WriteOutcome {
    /// Built in device memory; the device sends it with its next `tx_burst`, before any frame
    /// queued in the engine's buffers after it.
    Written,
    /// `fill` said there was nothing to send; the device took its buffer back.
    Dropped,
    /// The device has no buffer for it now (full, or `len` too large for one of its buffers):
    /// the engine builds the frame in a buffer of its own instead.
    NoRoom,
}

/// A device that lends its transmit buffers to the engine, one frame at a time.
pub trait FrameWriter {
    /// Builds one frame of exactly `len` bytes in device memory: calls `fill` once with a
    /// `len`-byte buffer (its contents are unspecified: `fill` writes every byte) unless it
    /// answers [`WriteOutcome::NoRoom`]. `fill` returns the frame's offload requests, or None
    /// when there is nothing to send ([`WriteOutcome::Dropped`]: the buffer goes back to the
    /// device, nothing is submitted).
    fn write_frame(
        &mut self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> Option<TxMeta>,
    ) -> WriteOutcome;
}

/// No device memory: every frame is built in the engine's own buffers.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoWriter;

impl FrameWriter for NoWriter {
    fn write_frame(
        &mut self,
        _len: usize,
        _fill: &mut dyn FnMut(&mut [u8]) -> Option<TxMeta>,
    ) -> WriteOutcome {
        WriteOutcome::NoRoom
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    use core::time::Duration;

    use super::*;
    use crate::frame::{DeviceCaps, RxCsum, RxMeta};
    use crate::stack::{SockId, Stack, StackConfig, StackStats};
    use crate::time::Instant;
    use crate::TxSource;

    const A_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const B_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// When a test device has no room for a frame offered in one poll.
    #[derive(Clone, Copy, Debug)]
    enum Room {
        /// Takes every frame.
        Any,
        /// Takes none.
        Never,
        /// Takes the first `k` of each poll, then none (the device full).
        FullAfter(usize),
        /// Refuses only the frame offered `k`-th (0-based) in each poll (one too large for
        /// the device, say): later ones would fit.
        HoleAt(usize),
    }

    /// Device memory in a test: frames written are kept in order. Buffers are handed out full
    /// of garbage, so a byte `fill` fails to write shows in the comparison with the buffered
    /// path.
    struct FakeWriter {
        frames: Vec<(Vec<u8>, TxMeta)>,
        room: Room,
        offered: usize,
        /// Buffers `fill` gave back (nothing to send).
        returned: usize,
    }

    impl FakeWriter {
        fn new(room: Room) -> FakeWriter {
            FakeWriter {
                frames: Vec::new(),
                room,
                offered: 0,
                returned: 0,
            }
        }
    }

    impl FrameWriter for FakeWriter {
        fn write_frame(
            &mut self,
            len: usize,
            fill: &mut dyn FnMut(&mut [u8]) -> Option<TxMeta>,
        ) -> WriteOutcome {
            let k = self.offered;
            self.offered += 1;
            let refuse = match self.room {
                Room::Any => false,
                Room::Never => true,
                Room::FullAfter(n) => k >= n,
                Room::HoleAt(n) => k == n,
            };
            if refuse {
                return WriteOutcome::NoRoom;
            }
            let mut buf = vec![0xA5; len];
            match fill(&mut buf) {
                Some(meta) => {
                    self.frames.push((buf, meta));
                    WriteOutcome::Written
                }
                None => {
                    self.returned += 1;
                    WriteOutcome::Dropped
                }
            }
        }
    }

    /// A's lent TX stream: `data` from stream index `base`; `gone` makes every read fail.
    struct Lent {
        data: Vec<u8>,
        base: u32,
        gone: bool,
    }

    impl TxSource for Lent {
        fn copy_tx(&self, _id: SockId, index: u32, out: &mut [u8]) -> bool {
            let off = index.wrapping_sub(self.base) as usize;
            if self.gone || off + out.len() > self.data.len() {
                return false;
            }
            out.copy_from_slice(&self.data[off..off + out.len()]);
            true
        }
    }

    fn cfg(ip: Ipv4Addr, mac: u8, caps: DeviceCaps) -> StackConfig {
        let mut c = StackConfig::new([2, 0, 0, 0, 0, mac]);
        c.ipv4 = Some((ip, 24));
        c.seed = u64::from(mac) * 7919;
        c.caps = caps;
        c
    }

    fn rx_meta(m: &TxMeta) -> RxMeta {
        RxMeta {
            csum: if m.csum.is_some() {
                RxCsum::Partial
            } else {
                RxCsum::Unknown
            },
            gso: m.gso,
        }
    }

    /// What A put on the wire, in order, and its counters.
    struct Run {
        wire: Vec<(Vec<u8>, TxMeta)>,
        stats: StackStats,
        received: usize,
    }

    /// A (with `caps`) connecting to B's listener on port 80: (A, B, the listener, A's socket).
    fn pair(caps: DeviceCaps) -> (Stack, Stack, SockId, SockId) {
        let mut a = Stack::new(cfg(A_IP, 1, caps), Instant::ZERO);
        let mut b = Stack::new(cfg(B_IP, 2, DeviceCaps::default()), Instant::ZERO);
        let l = b.socket(false).unwrap();
        b.bind(l, SocketAddr::new(IpAddr::V4(B_IP), 80)).unwrap();
        b.listen(l, 16).unwrap();
        let c = a.socket(false).unwrap();
        let _ = a.connect(c, SocketAddr::new(IpAddr::V4(B_IP), 80));
        (a, b, l, c)
    }

    /// A sends `total` bytes (half through `send`, half from a lent stream) to B over a clean
    /// link, everything at explicit times (1 ms steps). `room`: None: A's frames are built in
    /// its own buffers only (`poll_transmit_from`); Some(r): A polls with a [`FakeWriter`]
    /// whose frames go on the wire before A's queued ones, as a device's `tx_burst` sends them.
    fn run(room: Option<Room>, caps: DeviceCaps, total: usize) -> Run {
        let (mut a, mut b, l, c) = pair(caps);
        let data: Vec<u8> = (0..total).map(|i| (i * 7 + i / 251) as u8).collect();
        let half = total / 2;
        let mut lent = Lent {
            data: data[half..].to_vec(),
            base: 1000,
            gone: false,
        };
        let mut srv = None;
        let mut sent = 0;
        let mut lent_on = false;
        let mut wire = Vec::new();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        for step in 0..4000u64 {
            let now = Instant::ZERO + Duration::from_millis(step);
            if sent < half && a.connect_result(c) == Ok(true) {
                sent += a.send(c, &[&data[sent..half]]).unwrap_or(0);
            }
            if sent == half && !lent_on && a.tcb(c).is_some_and(|t| t.send_queue() == 0) {
                a.lend_tx(c, lent.base, lent.data.len()).unwrap();
                assert_eq!(a.send_lent(c, lent.data.len()), Ok(lent.data.len()));
                lent_on = true;
            }
            let mut out = Vec::new();
            match room {
                None => a.poll_transmit_from(now, &lent),
                Some(r) => {
                    let mut w = FakeWriter::new(r);
                    let n = a.poll_transmit_into(now, &lent, &mut w);
                    assert_eq!(n, w.frames.len());
                    out.append(&mut w.frames);
                }
            }
            out.extend(a.frames().drain(..).map(|f| (f.buf, f.meta)));
            for (f, m) in &out {
                b.handle_frame(now, f, rx_meta(m));
            }
            wire.extend(out);
            b.poll_transmit(now);
            let back: Vec<_> = b.frames().drain(..).collect();
            for f in back {
                a.handle_frame(now, &f.buf, rx_meta(&f.meta));
                b.recycle(f.buf);
            }
            a.handle_timeout(now);
            b.handle_timeout(now);
            if srv.is_none() {
                srv = b.accept(l).ok().map(|(s, _)| s);
            }
            if let Some(s) = srv {
                while let Ok(n) = b.recv(s, &mut [&mut buf[..]]) {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
            }
            if got.len() == total {
                break;
            }
        }
        assert_eq!(got.len(), total, "transfer stalled");
        assert!(got == data, "stream corrupted");
        lent.gone = true;
        Run {
            wire,
            stats: a.stats,
            received: got.len(),
        }
    }

    /// Frames written into device memory are byte for byte (and offload for offload) those the
    /// buffered path builds, in the same order on the wire; with no room at all, nothing is
    /// direct; with a device that refuses mid-burst, every later frame of that poll is buffered
    /// and the wire order still equals the buffered-only order.
    #[test]
    fn direct_frames_equal_buffered_frames_in_order() {
        for caps in [
            DeviceCaps::default(),
            DeviceCaps {
                mtu: 1500,
                tx_csum: true,
                tso: true,
                max_tso_frame: 14 + 65535,
            },
        ] {
            let total = 600_000;
            let base = run(None, caps, total);
            assert_eq!(base.stats.tx_data_direct, 0);
            assert!(base.stats.tx_data_buffered > 0);
            for room in [
                Room::Any,
                Room::Never,
                Room::FullAfter(1),
                Room::FullAfter(3),
                Room::HoleAt(2),
            ] {
                let r = run(Some(room), caps, total);
                assert_eq!(r.received, total);
                assert_eq!(r.wire.len(), base.wire.len(), "room {room:?}");
                for (k, (x, y)) in r.wire.iter().zip(&base.wire).enumerate() {
                    assert!(x == y, "room {room:?} caps {caps:?}: frame {k} differs");
                }
                let (d, b) = (r.stats.tx_data_direct, r.stats.tx_data_buffered);
                assert_eq!(d + b, base.stats.tx_data_buffered, "room {room:?}");
                assert_eq!(r.stats.tx_frames, base.stats.tx_frames);
                match room {
                    Room::Never => assert_eq!(d, 0),
                    // Only segments behind a queued frame (the first ones, whose SYN waited
                    // for ARP, and those behind an ACK answered on input) are buffered.
                    Room::Any => assert!(d * 10 >= (d + b) * 9, "direct {d} buffered {b}"),
                    // (With TSO a poll sends few super-frames: a device refusing after one or
                    // three may never be reached.)
                    _ => assert!(d > 0 && (caps.tso || b > 0), "direct {d} buffered {b}"),
                }
            }
        }
    }

    /// Before the next hop is resolved nothing is written into device memory: the SYN waits
    /// in the neighbour queue and an ARP request goes out through the engine's buffers.
    #[test]
    fn unresolved_next_hop_goes_through_the_neighbour_queue() {
        let mut a = Stack::new(cfg(A_IP, 1, DeviceCaps::default()), Instant::ZERO);
        let c = a.socket(false).unwrap();
        let _ = a.connect(c, SocketAddr::new(IpAddr::V4(B_IP), 80));
        let mut w = FakeWriter::new(Room::Any);
        let n = a.poll_transmit_into(Instant::ZERO, &crate::NoSource, &mut w);
        assert_eq!(n, 0);
        assert!(w.frames.is_empty());
        let out: Vec<_> = a.frames().drain(..).collect();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].buf[12..14], [0x08, 0x06], "an ARP request");
        assert_eq!(a.stats.arp_requests, 1);
    }

    /// A lent stream that cannot be read: the device gets its buffer back, nothing is sent and
    /// the segment counts as `tx_lent_missing`.
    #[test]
    fn missing_lent_stream_gives_the_buffer_back() {
        let (mut a, mut b, _l, c) = pair(DeviceCaps::default());
        let mut now = Instant::ZERO;
        for _ in 0..10 {
            a.poll_transmit(now);
            for f in a.frames().drain(..).collect::<Vec<_>>() {
                b.handle_frame(now, &f.buf, RxMeta::default());
            }
            b.poll_transmit(now);
            for f in b.frames().drain(..).collect::<Vec<_>>() {
                a.handle_frame(now, &f.buf, RxMeta::default());
            }
            now += Duration::from_millis(1);
        }
        assert_eq!(a.connect_result(c), Ok(true));
        let src = Lent {
            data: vec![1; 4000],
            base: 7,
            gone: true,
        };
        a.lend_tx(c, src.base, 4096).unwrap();
        assert_eq!(a.send_lent(c, 4000), Ok(4000));
        let mut w = FakeWriter::new(Room::Any);
        let n = a.poll_transmit_into(now, &src, &mut w);
        assert_eq!(n, 0);
        assert!(w.frames.is_empty());
        assert!(w.returned > 0);
        assert_eq!(a.stats.tx_lent_missing, w.returned as u64);
        assert_eq!(a.stats.tx_data_direct, 0);
        assert!(a.frames().is_empty(), "nothing sent in its place");
    }
}
