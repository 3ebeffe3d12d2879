//! IPv4 (RFC 791) header. The engine neither fragments nor reassembles (TCP segments are sized by
//! MSS and PMTU, and `DF` is set on what it sends), so a fragment is `Unsupported`. Options are
//! skipped: none changes how a TCP endpoint handles the datagram. The payload ends at the total
//! length, which cuts off the Ethernet padding of short frames.

use std::net::Ipv4Addr;

use super::{checksum, WireError};

pub const HEADER_LEN: usize = 20;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ttl: u8,
    pub tos: u8,
    pub ident: u16,
    pub dont_frag: bool,
    pub payload_len: usize,
}

impl Ipv4Repr {
    /// Parses an IPv4 datagram and returns its header and payload (options skipped, trailing bytes
    /// beyond the total length cut off).
    ///
    /// - shorter than 20 bytes, than the header length or than the total length: `Truncated`;
    /// - version not 4, header length < 20, total length < header length: `Malformed`;
    /// - header checksum wrong (only checked when `verify_checksum`): `Checksum`;
    /// - a fragment (MF set or a non-zero offset): `Unsupported`.
    pub fn parse(pkt: &[u8], verify_checksum: bool) -> Result<(Ipv4Repr, &[u8]), WireError> {
        if pkt.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if pkt[0] >> 4 != 4 {
            return Err(WireError::Malformed);
        }
        let ihl = usize::from(pkt[0] & 0x0f) * 4;
        if ihl < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if ihl > pkt.len() {
            return Err(WireError::Truncated);
        }
        let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
        if total < ihl {
            return Err(WireError::Malformed);
        }
        if total > pkt.len() {
            return Err(WireError::Truncated);
        }
        if verify_checksum && checksum::fold(checksum::accumulate(&pkt[..ihl], 0)) != 0xffff {
            return Err(WireError::Checksum);
        }
        let frag = u16::from_be_bytes([pkt[6], pkt[7]]);
        if frag & FLAG_MF != 0 || frag & FRAG_OFFSET_MASK != 0 {
            return Err(WireError::Unsupported);
        }
        let repr = Ipv4Repr {
            src: Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]),
            dst: Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]),
            proto: pkt[9],
            ttl: pkt[8],
            tos: pkt[1],
            ident: u16::from_be_bytes([pkt[4], pkt[5]]),
            dont_frag: frag & FLAG_DF != 0,
            payload_len: total - ihl,
        };
        Ok((repr, &pkt[ihl..total]))
    }

    /// Writes a 20-byte header without options at the start of `buf`, total length
    /// `20 + payload_len`, header checksum filled. Panics if `buf` is shorter than [`HEADER_LEN`];
    /// `payload_len` must not exceed 65515 (checked in debug builds).
    /// Parses the header of a datagram quoted in an ICMP error (RFC 792): the quote is cut
    /// short, so the total length is not checked against it and the payload is what remains.
    pub fn parse_quoted(pkt: &[u8]) -> Result<(Ipv4Repr, &[u8]), WireError> {
        if pkt.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if pkt[0] >> 4 != 4 {
            return Err(WireError::Malformed);
        }
        let ihl = usize::from(pkt[0] & 0x0f) * 4;
        if ihl < HEADER_LEN || ihl > pkt.len() {
            return Err(WireError::Malformed);
        }
        let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
        let frag = u16::from_be_bytes([pkt[6], pkt[7]]);
        let repr = Ipv4Repr {
            src: Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]),
            dst: Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]),
            proto: pkt[9],
            ttl: pkt[8],
            tos: pkt[1],
            ident: u16::from_be_bytes([pkt[4], pkt[5]]),
            dont_frag: frag & FLAG_DF != 0,
            payload_len: total.saturating_sub(ihl),
        };
        Ok((repr, &pkt[ihl..]))
    }

    pub fn emit(&self, buf: &mut [u8]) {
        debug_assert!(self.payload_len <= 0xffff - HEADER_LEN);
        let total = (HEADER_LEN + self.payload_len) as u16;
        buf[0] = 0x45;
        buf[1] = self.tos;
        buf[2..4].copy_from_slice(&total.to_be_bytes());
        buf[4..6].copy_from_slice(&self.ident.to_be_bytes());
        let frag = if self.dont_frag { FLAG_DF } else { 0 };
        buf[6..8].copy_from_slice(&frag.to_be_bytes());
        buf[8] = self.ttl;
        buf[9] = self.proto;
        buf[10] = 0;
        buf[11] = 0;
        buf[12..16].copy_from_slice(&self.src.octets());
        buf[16..20].copy_from_slice(&self.dst.octets());
        let c = checksum::finish(checksum::accumulate(&buf[..HEADER_LEN], 0));
        buf[10..12].copy_from_slice(&c.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::super::XorShift;
    use super::*;

    // A TCP SYN from 192.168.0.2 to 192.168.0.1 (header checksum 0x9d32), with the first TCP
    // header bytes and 4 bytes of Ethernet padding after the 44-byte datagram.
    fn syn() -> [u8; 48] {
        let mut p = [0u8; 48];
        p[..20].copy_from_slice(&[
            0x45, 0x00, 0x00, 0x2c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x9d, 0x32, 0xc0, 0xa8,
            0x00, 0x02, 0xc0, 0xa8, 0x00, 0x01,
        ]);
        p[20..24].copy_from_slice(&[0xc3, 0x50, 0x00, 0x50]);
        p
    }

    #[test]
    fn round_trip() {
        let p = syn();
        let (r, payload) = Ipv4Repr::parse(&p, true).unwrap();
        assert_eq!(
            r,
            Ipv4Repr {
                src: Ipv4Addr::new(192, 168, 0, 2),
                dst: Ipv4Addr::new(192, 168, 0, 1),
                proto: PROTO_TCP,
                ttl: 64,
                tos: 0,
                ident: 0x1c46,
                dont_frag: true,
                payload_len: 24,
            }
        );
        assert_eq!(payload.len(), 24);
        assert_eq!(&payload[..4], &[0xc3, 0x50, 0x00, 0x50]);
        let mut out = [0u8; HEADER_LEN];
        r.emit(&mut out);
        assert_eq!(out, p[..HEADER_LEN]);
    }

    #[test]
    fn known_udp_header() {
        // The textbook header with checksum b861.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let mut p = [0u8; 0x73];
        p[..20].copy_from_slice(&h);
        let (r, payload) = Ipv4Repr::parse(&p, true).unwrap();
        assert_eq!(r.proto, PROTO_UDP);
        assert_eq!(payload.len(), 0x73 - 20);
        let mut out = [0u8; 20];
        r.emit(&mut out);
        assert_eq!(out, h);
    }

    #[test]
    fn options_skipped() {
        // IHL 6 with a router-alert option (94 04 00 00); checksum recomputed.
        let mut p = [0u8; 28];
        p[..20].copy_from_slice(&syn()[..20]);
        p[0] = 0x46;
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[10] = 0;
        p[11] = 0;
        p[20..24].copy_from_slice(&[0x94, 0x04, 0x00, 0x00]);
        p[24..28].copy_from_slice(&[1, 2, 3, 4]);
        let c = checksum::finish(checksum::accumulate(&p[..24], 0));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let (r, payload) = Ipv4Repr::parse(&p, true).unwrap();
        assert_eq!(payload, &[1, 2, 3, 4]);
        assert_eq!(r.payload_len, 4);
    }

    #[test]
    fn errors() {
        let p = syn();
        assert_eq!(Ipv4Repr::parse(&p[..19], true), Err(WireError::Truncated));
        assert_eq!(Ipv4Repr::parse(&p[..43], true), Err(WireError::Truncated));
        let mut q = p;
        q[0] = 0x65;
        assert_eq!(Ipv4Repr::parse(&q, false), Err(WireError::Malformed));
        q[0] = 0x44;
        assert_eq!(Ipv4Repr::parse(&q, false), Err(WireError::Malformed));
        q[0] = 0x4f;
        assert_eq!(Ipv4Repr::parse(&q, false), Err(WireError::Truncated));
        let mut q = p;
        q[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(Ipv4Repr::parse(&q, false), Err(WireError::Malformed));
        let mut q = p;
        q[8] = 63;
        assert_eq!(Ipv4Repr::parse(&q, true), Err(WireError::Checksum));
        assert!(Ipv4Repr::parse(&q, false).is_ok());
        // MF set, then a non-zero offset (checksums fixed so only the fragment check fails).
        for frag in [0x2000u16, 0x0001, 0x40b9] {
            let mut q = p;
            q[6..8].copy_from_slice(&frag.to_be_bytes());
            q[10] = 0;
            q[11] = 0;
            let c = checksum::finish(checksum::accumulate(&q[..20], 0));
            q[10..12].copy_from_slice(&c.to_be_bytes());
            assert_eq!(Ipv4Repr::parse(&q, true), Err(WireError::Unsupported));
        }
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = XorShift(0x0bad_5eed_1234_4321);
        let mut buf = [0u8; 80];
        for _ in 0..20_000 {
            let d = rng.bytes(&mut buf);
            let _ = Ipv4Repr::parse(d, false);
            let mut p = syn();
            let d = rng.mutate(&mut p);
            for v in [false, true] {
                if let Ok((r, payload)) = Ipv4Repr::parse(d, v) {
                    assert_eq!(r.payload_len, payload.len());
                    assert!(payload.len() + HEADER_LEN <= d.len());
                }
            }
        }
    }
}
