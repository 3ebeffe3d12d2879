//! TCP header (RFC 9293) and the options the engine negotiates: MSS, window scale (RFC 7323),
//! SACK-permitted and SACK blocks (RFC 2018), timestamps (RFC 7323).
//!
//! Option parsing follows Linux's `tcp_parse_options` so that peers see the same tolerance from
//! us as from a Linux host: a known option with a wrong length is skipped, a "silly" length
//! (< 2, or past the header) ends parsing and keeps what was found so far. Emission uses Linux's
//! `tcp_options_write` layout (32-bit aligned, NOP padded) so captures look familiar and
//! middleboxes that pattern-match the common layouts are happy.
//!
//! The checksum is not checked by [`TcpRepr::parse`]: depending on the device it was already
//! verified, is left to offload, or must be verified with [`verify_checksum`].

use super::{checksum, WireError};
use crate::seq::Seq;

pub const HEADER_LEN: usize = 20;
pub const MAX_HEADER_LEN: usize = 60;
/// Offset of the checksum field in the header.
pub const CSUM_OFFSET: usize = 16;
/// Room for options in a header.
pub const MAX_OPTIONS_LEN: usize = MAX_HEADER_LEN - HEADER_LEN;
/// Largest window scale shift (RFC 7323 section 2.3).
pub const MAX_WSCALE: u8 = 14;

pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

const OPT_EOL: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
const OPT_WSCALE: u8 = 3;
const OPT_SACK_PERM: u8 = 4;
const OPT_SACK: u8 = 5;
const OPT_TIMESTAMP: u8 = 8;

const LEN_MSS: usize = 4;
const LEN_WSCALE: usize = 3;
const LEN_SACK_PERM: usize = 2;
const LEN_TIMESTAMP: usize = 10;
const LEN_SACK_BASE: usize = 2;
const LEN_SACK_BLOCK: usize = 8;

/// TCP options found in (or to be written into) one header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpOptions {
    /// Maximum segment size (a zero MSS is ignored on parse, as Linux does).
    pub mss: Option<u16>,
    /// Window scale shift; parse clamps it to [`MAX_WSCALE`].
    pub wscale: Option<u8>,
    pub sack_permitted: bool,
    /// (TSval, TSecr).
    pub timestamp: Option<(u32, u32)>,
    /// SACK blocks as (left edge, right edge); the first `sack_len` are valid.
    pub sack: [(Seq, Seq); 4],
    pub sack_len: u8,
}

impl TcpOptions {
    /// The valid SACK blocks.
    pub fn sack_blocks(&self) -> &[(Seq, Seq)] {
        &self.sack[..usize::from(self.sack_len).min(4)]
    }

    /// Bytes of the timestamp option with its leading pad (or SACK-permitted) in the layout.
    fn ts_len(&self) -> usize {
        if self.timestamp.is_some() {
            12
        } else {
            0
        }
    }

    /// How many SACK blocks [`TcpRepr::emit`] writes: as many as fit after the other options.
    fn sack_emitted(&self) -> usize {
        let n = usize::from(self.sack_len).min(4);
        if n == 0 {
            return 0;
        }
        let used = self.fixed_len();
        let room = MAX_OPTIONS_LEN.saturating_sub(used + 4) / LEN_SACK_BLOCK;
        n.min(room)
    }

    /// Option bytes other than SACK blocks.
    fn fixed_len(&self) -> usize {
        let mut n = 0;
        if self.mss.is_some() {
            n += 4;
        }
        n += self.ts_len();
        if self.sack_permitted && self.timestamp.is_none() {
            n += 4;
        }
        if self.wscale.is_some() {
            n += 4;
        }
        n
    }

    /// Bytes of options [`TcpRepr::emit`] writes (a multiple of 4, at most 40).
    pub fn len(&self) -> usize {
        let s = self.sack_emitted();
        self.fixed_len() + if s > 0 { 4 + s * LEN_SACK_BLOCK } else { 0 }
    }

    /// No option set.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parses the options area of a header, Linux style (see the module docs).
    fn parse(mut opts: &[u8]) -> TcpOptions {
        let mut o = TcpOptions::default();
        while let Some(&kind) = opts.first() {
            match kind {
                OPT_EOL => break,
                OPT_NOP => {
                    opts = &opts[1..];
                    continue;
                }
                _ => {}
            }
            if opts.len() < 2 {
                break;
            }
            let size = usize::from(opts[1]);
            if size < 2 || size > opts.len() {
                break;
            }
            let body = &opts[2..size];
            match kind {
                OPT_MSS if size == LEN_MSS => {
                    let mss = u16::from_be_bytes([body[0], body[1]]);
                    if mss != 0 {
                        o.mss = Some(mss);
                    }
                }
                OPT_WSCALE if size == LEN_WSCALE => o.wscale = Some(body[0].min(MAX_WSCALE)),
                OPT_SACK_PERM if size == LEN_SACK_PERM => o.sack_permitted = true,
                OPT_TIMESTAMP if size == LEN_TIMESTAMP => {
                    let val = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    let ecr = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                    o.timestamp = Some((val, ecr));
                }
                OPT_SACK
                    if size >= LEN_SACK_BASE + LEN_SACK_BLOCK
                        && (size - LEN_SACK_BASE) % LEN_SACK_BLOCK == 0 =>
                {
                    // A later SACK option replaces an earlier one (Linux keeps the last).
                    o.sack_len = 0;
                    for b in body.chunks_exact(LEN_SACK_BLOCK).take(4) {
                        let l = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                        let r = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
                        o.sack[usize::from(o.sack_len)] = (Seq(l), Seq(r));
                        o.sack_len += 1;
                    }
                }
                _ => {}
            }
            opts = &opts[size..];
        }
        o
    }

    /// Writes the options (exactly [`TcpOptions::len`] bytes) at the start of `buf`.
    fn emit(&self, buf: &mut [u8]) -> usize {
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            buf[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        if let Some(mss) = self.mss {
            let m = mss.to_be_bytes();
            put(&[OPT_MSS, LEN_MSS as u8, m[0], m[1]]);
        }
        if let Some((val, ecr)) = self.timestamp {
            if self.sack_permitted {
                put(&[OPT_SACK_PERM, LEN_SACK_PERM as u8]);
            } else {
                put(&[OPT_NOP, OPT_NOP]);
            }
            put(&[OPT_TIMESTAMP, LEN_TIMESTAMP as u8]);
            put(&val.to_be_bytes());
            put(&ecr.to_be_bytes());
        } else if self.sack_permitted {
            put(&[OPT_NOP, OPT_NOP, OPT_SACK_PERM, LEN_SACK_PERM as u8]);
        }
        if let Some(ws) = self.wscale {
            put(&[OPT_NOP, OPT_WSCALE, LEN_WSCALE as u8, ws]);
        }
        let n = self.sack_emitted();
        if n > 0 {
            put(&[
                OPT_NOP,
                OPT_NOP,
                OPT_SACK,
                (LEN_SACK_BASE + n * LEN_SACK_BLOCK) as u8,
            ]);
            for &(l, r) in &self.sack[..n] {
                put(&l.0.to_be_bytes());
                put(&r.0.to_be_bytes());
            }
        }
        at
    }
}

/// A TCP header: ports, sequence and acknowledgment numbers, flags, window, urgent pointer and
/// options. The checksum lives outside (see [`fill_checksum`], [`verify_checksum`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: Seq,
    pub ack: Seq,
    /// Bits of [`flags`] (the byte at offset 13; the reserved/AE bits are dropped).
    pub flags: u8,
    pub window: u16,
    pub urgent: u16,
    pub opts: TcpOptions,
}

impl TcpRepr {
    /// Parses a segment (header and payload exactly as the IP layer delimited it) and returns
    /// the header and the payload. Shorter than 20 bytes: `Truncated`; data offset < 5 or past
    /// the segment: `Malformed`. The checksum is not checked.
    pub fn parse(seg: &[u8]) -> Result<(TcpRepr, &[u8]), WireError> {
        if seg.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let hlen = usize::from(seg[12] >> 4) * 4;
        if hlen < HEADER_LEN || hlen > seg.len() {
            return Err(WireError::Malformed);
        }
        let be16 = |at: usize| u16::from_be_bytes([seg[at], seg[at + 1]]);
        let be32 = |at: usize| u32::from_be_bytes([seg[at], seg[at + 1], seg[at + 2], seg[at + 3]]);
        let repr = TcpRepr {
            src_port: be16(0),
            dst_port: be16(2),
            seq: Seq(be32(4)),
            ack: Seq(be32(8)),
            flags: seg[13],
            window: be16(14),
            urgent: be16(18),
            opts: TcpOptions::parse(&seg[HEADER_LEN..hlen]),
        };
        Ok((repr, &seg[hlen..]))
    }

    /// Header length [`TcpRepr::emit`] writes: 20 plus the set options, padded to a multiple
    /// of 4 and capped at 60 (SACK blocks that do not fit are left out).
    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.opts.len()
    }

    /// Writes the header and options at the start of `buf` with a zero checksum field and
    /// returns the header length ([`TcpRepr::header_len`]). Panics if `buf` is shorter.
    ///
    /// Options are laid out as Linux's `tcp_options_write` does: MSS; SACK-permitted + timestamp
    /// (or NOP NOP timestamp, or NOP NOP SACK-permitted); NOP window scale; NOP NOP SACK blocks.
    /// On a SYN that yields Linux's SYN layout, on other segments NOP NOP TS then NOP NOP SACK.
    /// Every option that is set is written, whatever the flags: leaving MSS, window scale and
    /// SACK-permitted out of non-SYN segments is the caller's job. SACK blocks that do not fit
    /// in the 40 bytes of option space (at most 3 with timestamps) are dropped from the end.
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let hlen = self.header_len();
        buf[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        buf[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        buf[4..8].copy_from_slice(&self.seq.0.to_be_bytes());
        buf[8..12].copy_from_slice(&self.ack.0.to_be_bytes());
        buf[12] = ((hlen / 4) as u8) << 4;
        buf[13] = self.flags;
        buf[14..16].copy_from_slice(&self.window.to_be_bytes());
        buf[16..18].copy_from_slice(&[0, 0]);
        buf[18..20].copy_from_slice(&self.urgent.to_be_bytes());
        let n = self.opts.emit(&mut buf[HEADER_LEN..hlen]);
        debug_assert_eq!(HEADER_LEN + n, hlen);
        hlen
    }

    /// Payload length as counted in sequence space (SYN and FIN take one each).
    pub fn seq_len(&self, payload_len: usize) -> usize {
        payload_len
            + usize::from(self.flags & flags::SYN != 0)
            + usize::from(self.flags & flags::FIN != 0)
    }
}

/// Writes the checksum field of `seg` (header and payload). `pseudo` is the pseudo-header sum
/// ([`checksum::pseudo_v4`]/[`checksum::pseudo_v6`] with the segment's length). With `partial`
/// the field gets only the folded pseudo-header sum, not complemented, for the device to finish
/// (`CHECKSUM_PARTIAL`, virtio `NEEDS_CSUM`); otherwise the full checksum. Panics if `seg` is
/// shorter than 20 bytes.
pub fn fill_checksum(seg: &mut [u8], pseudo: u64, partial: bool) {
    let c = if partial {
        checksum::fold(pseudo)
    } else {
        seg[CSUM_OFFSET] = 0;
        seg[CSUM_OFFSET + 1] = 0;
        checksum::finish(checksum::accumulate(seg, pseudo))
    };
    seg[CSUM_OFFSET..CSUM_OFFSET + 2].copy_from_slice(&c.to_be_bytes());
}

/// Does the checksum of `seg` (header and payload) verify against the pseudo-header sum?
pub fn verify_checksum(seg: &[u8], pseudo: u64) -> bool {
    checksum::fold(checksum::accumulate(seg, pseudo)) == 0xffff
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::super::{ipv4, XorShift};
    use super::*;

    /// A Linux SYN: 10.0.0.2:50000 -> 10.0.0.1:80, seq 0x12345678, window 64240,
    /// MSS 1460, SACK_PERM, TS (0x01020304, 0), NOP, WS 7. TCP checksum 0x08ba.
    #[rustfmt::skip]
    const SYN: [u8; 40] = [
        0xc3, 0x50, 0x00, 0x50, // ports
        0x12, 0x34, 0x56, 0x78, // seq
        0x00, 0x00, 0x00, 0x00, // ack
        0xa0, 0x02, 0xfa, 0xf0, // offset 10, SYN, window
        0x08, 0xba, 0x00, 0x00, // checksum, urgent
        0x02, 0x04, 0x05, 0xb4, // MSS 1460
        0x04, 0x02, 0x08, 0x0a, 0x01, 0x02, 0x03, 0x04, 0x00, 0x00, 0x00, 0x00, // SACK_PERM, TS
        0x01, 0x03, 0x03, 0x07, // NOP, WS 7
    ];

    /// An ACK with data: 10.0.0.1:80 -> 10.0.0.2:50000, seq 0xaabbccdd, ack 0x12345679,
    /// window 509, NOP NOP TS (0x0a0b0c0d, 0x01020304), NOP NOP SACK one block
    /// (0x1234567a, 0x12345680), payload "hello". TCP checksum 0x575f.
    const ACK_SACK: [u8; 49] = [
        0x00, 0x50, 0xc3, 0x50, 0xaa, 0xbb, 0xcc, 0xdd, 0x12, 0x34, 0x56, 0x79, 0xb0, 0x18, 0x01,
        0xfd, 0x57, 0x5f, 0x00, 0x00, // header (PSH|ACK)
        0x01, 0x01, 0x08, 0x0a, 0x0a, 0x0b, 0x0c, 0x0d, 0x01, 0x02, 0x03, 0x04, // TS
        0x01, 0x01, 0x05, 0x0a, 0x12, 0x34, 0x56, 0x7a, 0x12, 0x34, 0x56, 0x80, // SACK
        b'h', b'e', b'l', b'l', b'o',
    ];

    fn a(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, n)
    }

    #[test]
    fn syn_round_trip() {
        let (r, payload) = TcpRepr::parse(&SYN).unwrap();
        assert!(payload.is_empty());
        assert_eq!(
            r,
            TcpRepr {
                src_port: 50000,
                dst_port: 80,
                seq: Seq(0x12345678),
                ack: Seq(0),
                flags: flags::SYN,
                window: 64240,
                urgent: 0,
                opts: TcpOptions {
                    mss: Some(1460),
                    wscale: Some(7),
                    sack_permitted: true,
                    timestamp: Some((0x01020304, 0)),
                    ..TcpOptions::default()
                },
            }
        );
        assert_eq!(r.seq_len(0), 1);
        assert_eq!(r.header_len(), 40);
        let pseudo = checksum::pseudo_v4(a(2), a(1), ipv4::PROTO_TCP, 40);
        assert!(verify_checksum(&SYN, pseudo));
        let mut out = [0xeeu8; 40];
        assert_eq!(r.emit(&mut out), 40);
        assert_eq!(&out[..16], &SYN[..16]);
        assert_eq!(&out[16..18], &[0, 0]);
        assert_eq!(&out[18..], &SYN[18..]);
        fill_checksum(&mut out, pseudo, false);
        assert_eq!(out, SYN);
    }

    #[test]
    fn ack_sack_round_trip() {
        let (r, payload) = TcpRepr::parse(&ACK_SACK).unwrap();
        assert_eq!(payload, b"hello");
        assert_eq!(r.flags, flags::PSH | flags::ACK);
        assert_eq!(r.opts.timestamp, Some((0x0a0b0c0d, 0x01020304)));
        assert_eq!(r.opts.sack_blocks(), &[(Seq(0x1234567a), Seq(0x12345680))]);
        assert_eq!(r.opts.mss, None);
        let pseudo = checksum::pseudo_v4(a(1), a(2), ipv4::PROTO_TCP, 49);
        assert!(verify_checksum(&ACK_SACK, pseudo));
        let mut bad = ACK_SACK;
        bad[48] ^= 1;
        assert!(!verify_checksum(&bad, pseudo));
        let mut out = [0u8; 49];
        assert_eq!(r.emit(&mut out), 44);
        out[44..].copy_from_slice(payload);
        fill_checksum(&mut out, pseudo, false);
        assert_eq!(out, ACK_SACK);
    }

    #[test]
    fn partial_checksum_is_folded_pseudo_sum() {
        let pseudo = checksum::pseudo_v4(a(1), a(2), ipv4::PROTO_TCP, 49);
        let mut seg = ACK_SACK;
        fill_checksum(&mut seg, pseudo, true);
        let p = u16::from_be_bytes([seg[16], seg[17]]);
        assert_eq!(p, checksum::fold(pseudo));
        // What the device then does: checksum from the header start, pseudo sum in the field.
        let c = checksum::finish(checksum::accumulate(&seg, 0));
        seg[16..18].copy_from_slice(&c.to_be_bytes());
        assert_eq!(seg, ACK_SACK);
    }

    #[test]
    fn ipv6_checksum() {
        let s: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let d: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let mut seg = SYN;
        let pseudo = checksum::pseudo_v6(&s, &d, 6, 40);
        fill_checksum(&mut seg, pseudo, false);
        assert!(verify_checksum(&seg, pseudo));
        // The same bytes under the IPv4 pseudo-header fail.
        assert!(!verify_checksum(
            &seg,
            checksum::pseudo_v4(a(2), a(1), 6, 40)
        ));
    }

    #[test]
    fn emit_layouts() {
        let base = TcpRepr {
            flags: flags::SYN,
            ..TcpRepr::default()
        };
        let cases: [(TcpOptions, &[u8]); 6] = [
            (TcpOptions::default(), &[]),
            (
                TcpOptions {
                    mss: Some(1460),
                    sack_permitted: true,
                    wscale: Some(9),
                    ..TcpOptions::default()
                },
                &[2, 4, 5, 0xb4, 1, 1, 4, 2, 1, 3, 3, 9],
            ),
            (
                TcpOptions {
                    mss: Some(536),
                    timestamp: Some((1, 2)),
                    ..TcpOptions::default()
                },
                &[2, 4, 2, 0x18, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
            ),
            (
                TcpOptions {
                    wscale: Some(0),
                    ..TcpOptions::default()
                },
                &[1, 3, 3, 0],
            ),
            (
                TcpOptions {
                    sack: [
                        (Seq(1), Seq(2)),
                        (Seq(3), Seq(4)),
                        (Seq(5), Seq(6)),
                        (Seq(7), Seq(8)),
                    ],
                    sack_len: 4,
                    ..TcpOptions::default()
                },
                &[
                    1, 1, 5, 34, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0,
                    0, 6, 0, 0, 0, 7, 0, 0, 0, 8,
                ],
            ),
            (
                // Timestamps leave room for 3 blocks only.
                TcpOptions {
                    timestamp: Some((0xffffffff, 0x80000000)),
                    sack: [
                        (Seq(1), Seq(2)),
                        (Seq(3), Seq(4)),
                        (Seq(5), Seq(6)),
                        (Seq(7), Seq(8)),
                    ],
                    sack_len: 4,
                    ..TcpOptions::default()
                },
                &[
                    1, 1, 8, 10, 0xff, 0xff, 0xff, 0xff, 0x80, 0, 0, 0, 1, 1, 5, 26, 0, 0, 0, 1, 0,
                    0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6,
                ],
            ),
        ];
        for (opts, want) in cases {
            let r = TcpRepr { opts, ..base };
            let mut out = [0u8; MAX_HEADER_LEN];
            let n = r.emit(&mut out);
            assert_eq!(n, r.header_len());
            assert_eq!(n, HEADER_LEN + want.len());
            assert_eq!(&out[HEADER_LEN..n], want);
            assert_eq!(usize::from(out[12] >> 4) * 4, n);
            let (back, payload) = TcpRepr::parse(&out[..n]).unwrap();
            assert!(payload.is_empty());
            let mut expect = r;
            let k = opts.sack_emitted();
            expect.opts.sack_len = k as u8;
            expect.opts.sack[k..].fill(Default::default());
            assert_eq!(back, expect);
        }
    }

    #[test]
    fn option_quirks() {
        let with_opts = |opts: &[u8]| {
            let mut seg = [0u8; 60];
            seg[12] = (((HEADER_LEN + opts.len()) / 4) as u8) << 4;
            seg[HEADER_LEN..HEADER_LEN + opts.len()].copy_from_slice(opts);
            TcpRepr::parse(&seg[..HEADER_LEN + opts.len()])
                .unwrap()
                .0
                .opts
        };
        // Wrong length for MSS: skipped, parsing goes on.
        let o = with_opts(&[2, 3, 5, 1, 3, 3, 20, 0]);
        assert_eq!(o.mss, None);
        assert_eq!(o.wscale, Some(14), "clamped");
        // Zero MSS ignored.
        assert_eq!(with_opts(&[2, 4, 0, 0]).mss, None);
        // EOL ends the list.
        assert_eq!(with_opts(&[0, 0, 2, 4, 5, 0xb4, 0, 0]).mss, None);
        // Length < 2: stop, keep what was parsed.
        let o = with_opts(&[2, 4, 5, 0xb4, 0x22, 1, 4, 2]);
        assert_eq!(o.mss, Some(1460));
        assert!(!o.sack_permitted);
        // Length past the header: stop.
        let o = with_opts(&[4, 2, 1, 1, 8, 10, 0, 0]);
        assert!(o.sack_permitted);
        assert_eq!(o.timestamp, None);
        // Kind in the last byte without a length byte.
        assert!(with_opts(&[1, 1, 4, 2, 1, 1, 1, 8]).sack_permitted);
        // SACK with a bad length is ignored, a good one after it kept.
        let o = with_opts(&[5, 6, 0, 0, 0, 0, 5, 10, 0, 0, 0, 9, 0, 0, 0, 10]);
        assert_eq!(o.sack_blocks(), &[(Seq(9), Seq(10))]);
        // Unknown options skipped by their length.
        let o = with_opts(&[30, 4, 0, 0, 2, 4, 0x23, 0x28]);
        assert_eq!(o.mss, Some(9000));
    }

    #[test]
    fn errors() {
        assert_eq!(TcpRepr::parse(&SYN[..19]), Err(WireError::Truncated));
        let mut s = SYN;
        s[12] = 0x40;
        assert_eq!(TcpRepr::parse(&s), Err(WireError::Malformed));
        s[12] = 0xb0;
        assert_eq!(TcpRepr::parse(&s), Err(WireError::Malformed));
        assert_eq!(TcpRepr::parse(&SYN[..36]), Err(WireError::Malformed));
        // Data offset 5: options become payload.
        s[12] = 0x50;
        let (r, p) = TcpRepr::parse(&s).unwrap();
        assert_eq!(r.opts, TcpOptions::default());
        assert_eq!(p.len(), 20);
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = XorShift(0x7c9e_13a5_0f0f_e1d2);
        let mut buf = [0u8; 80];
        for i in 0..30_000 {
            {
                let d = rng.bytes(&mut buf);
                if let Ok((r, p)) = TcpRepr::parse(d) {
                    assert!(p.len() <= d.len() - HEADER_LEN);
                    check_reemit(&r);
                }
            }
            // A plausible data offset and option-ish bytes.
            buf[12] = (5 + (rng.next() % 11) as u8) << 4;
            for b in buf[HEADER_LEN..MAX_HEADER_LEN].iter_mut() {
                *b = [0, 1, 2, 3, 4, 5, 8, 10, (rng.next() as u8)][(rng.next() % 9) as usize];
            }
            let n = HEADER_LEN + (rng.next() % 60) as usize;
            if let Ok((r, _)) = TcpRepr::parse(&buf[..n]) {
                check_reemit(&r);
            }
            let mut s = if i % 2 == 0 {
                SYN.to_vec()
            } else {
                ACK_SACK.to_vec()
            };
            if let Ok((r, _)) = TcpRepr::parse(rng.mutate(&mut s)) {
                check_reemit(&r);
            }
        }
    }

    /// Whatever was parsed re-emits into at most 60 bytes and parses back (SACK blocks that
    /// did not fit aside).
    fn check_reemit(r: &TcpRepr) {
        assert!(r.opts.sack_len <= 4);
        if let Some(w) = r.opts.wscale {
            assert!(w <= MAX_WSCALE);
        }
        let mut out = [0u8; MAX_HEADER_LEN];
        let n = r.emit(&mut out);
        assert!(n <= MAX_HEADER_LEN && n % 4 == 0 && n == r.header_len());
        let (back, p) = TcpRepr::parse(&out[..n]).unwrap();
        assert!(p.is_empty());
        assert_eq!(back.opts.mss, r.opts.mss);
        assert_eq!(back.opts.wscale, r.opts.wscale);
        assert_eq!(back.opts.timestamp, r.opts.timestamp);
        assert_eq!(back.opts.sack_permitted, r.opts.sack_permitted);
        let k = usize::from(back.opts.sack_len);
        assert_eq!(back.opts.sack_blocks(), &r.opts.sack_blocks()[..k]);
        assert_eq!(
            (back.src_port, back.seq, back.flags),
            (r.src_port, r.seq, r.flags)
        );
    }
}
