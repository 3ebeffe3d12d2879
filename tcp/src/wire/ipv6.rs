//! IPv6 (RFC 8200) header and the extension headers an endpoint may have to step over.
//!
//! Hop-by-hop, routing and destination options are skipped: their options are for routers or are
//! of no use to TCP, and a routing header with segments left would not have been delivered to
//! us. The engine does not reassemble, so a fragment header is `Unsupported`. Anything else
//! (including No Next Header, ESP, AH) is returned as the upper-layer protocol for the caller to
//! dispatch or drop. The payload ends at the payload length, cutting off link padding.

use std::net::Ipv6Addr;

use super::WireError;

pub const HEADER_LEN: usize = 40;
pub const NEXT_TCP: u8 = 6;
pub const NEXT_ICMPV6: u8 = 58;
pub const NEXT_HOP_BY_HOP: u8 = 0;
pub const NEXT_ROUTING: u8 = 43;
pub const NEXT_FRAGMENT: u8 = 44;
pub const NEXT_NONE: u8 = 59;
pub const NEXT_DEST_OPTS: u8 = 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// Upper-layer protocol (after any skipped extension headers).
    pub next_header: u8,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub flow_label: u32,
    /// Length of the upper-layer payload (extension headers excluded).
    pub payload_len: usize,
}

fn addr(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    Ipv6Addr::from(a)
}

impl Ipv6Repr {
    /// Parses an IPv6 packet and returns its header and the upper-layer payload.
    ///
    /// - shorter than 40 bytes or than the payload length, or an extension header running past
    ///   the payload: `Truncated`;
    /// - version not 6, or a hop-by-hop header anywhere but first: `Malformed`;
    /// - a fragment header: `Unsupported`.
    pub fn parse(pkt: &[u8]) -> Result<(Ipv6Repr, &[u8]), WireError> {
        if pkt.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if pkt[0] >> 4 != 6 {
            return Err(WireError::Malformed);
        }
        let plen = usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
        if HEADER_LEN + plen > pkt.len() {
            return Err(WireError::Truncated);
        }
        let mut payload = &pkt[HEADER_LEN..HEADER_LEN + plen];
        let mut next = pkt[6];
        let mut first = true;
        loop {
            match next {
                NEXT_HOP_BY_HOP | NEXT_ROUTING | NEXT_DEST_OPTS => {
                    if next == NEXT_HOP_BY_HOP && !first {
                        return Err(WireError::Malformed);
                    }
                    if payload.len() < 2 {
                        return Err(WireError::Truncated);
                    }
                    let len = (usize::from(payload[1]) + 1) * 8;
                    if len > payload.len() {
                        return Err(WireError::Truncated);
                    }
                    next = payload[0];
                    payload = &payload[len..];
                }
                NEXT_FRAGMENT => return Err(WireError::Unsupported),
                _ => break,
            }
            first = false;
        }
        let repr = Ipv6Repr {
            src: addr(&pkt[8..24]),
            dst: addr(&pkt[24..40]),
            next_header: next,
            hop_limit: pkt[7],
            traffic_class: (pkt[0] << 4) | (pkt[1] >> 4),
            flow_label: u32::from_be_bytes([0, pkt[1] & 0x0f, pkt[2], pkt[3]]),
            payload_len: payload.len(),
        };
        Ok((repr, payload))
    }

    /// Parses the fixed header of a packet quoted in an ICMPv6 error (RFC 4443): the quote is
    /// cut short, so lengths are not checked; extension headers are not walked (the caller
    /// checks `next_header`).
    pub fn parse_quoted(pkt: &[u8]) -> Result<(Ipv6Repr, &[u8]), WireError> {
        if pkt.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if pkt[0] >> 4 != 6 {
            return Err(WireError::Malformed);
        }
        let repr = Ipv6Repr {
            src: addr(&pkt[8..24]),
            dst: addr(&pkt[24..40]),
            next_header: pkt[6],
            hop_limit: pkt[7],
            traffic_class: (pkt[0] << 4) | (pkt[1] >> 4),
            flow_label: u32::from_be_bytes([0, pkt[1] & 0x0f, pkt[2], pkt[3]]),
            payload_len: usize::from(u16::from_be_bytes([pkt[4], pkt[5]])),
        };
        Ok((repr, &pkt[HEADER_LEN..]))
    }

    /// Writes the 40-byte header (no extension headers) at the start of `buf`. Panics if `buf` is
    /// shorter than [`HEADER_LEN`]; `payload_len` must fit 16 bits (checked in debug builds) and
    /// only the low 20 bits of `flow_label` are used.
    pub fn emit(&self, buf: &mut [u8]) {
        debug_assert!(self.payload_len <= 0xffff);
        let first =
            (6u32 << 28) | (u32::from(self.traffic_class) << 20) | (self.flow_label & 0xfffff);
        buf[0..4].copy_from_slice(&first.to_be_bytes());
        buf[4..6].copy_from_slice(&(self.payload_len as u16).to_be_bytes());
        buf[6] = self.next_header;
        buf[7] = self.hop_limit;
        buf[8..24].copy_from_slice(&self.src.octets());
        buf[24..40].copy_from_slice(&self.dst.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::super::XorShift;
    use super::*;

    // A TCP header start from 2001:db8::2 to 2001:db8::1, traffic class 0x2e, flow label
    // 0x12345, hop limit 64, 20-byte payload,
    // followed by 2 bytes of trailing junk.
    fn pkt() -> [u8; 62] {
        let mut p = [0u8; 62];
        p[..8].copy_from_slice(&[0x62, 0xe1, 0x23, 0x45, 0x00, 0x14, 0x06, 0x40]);
        p[8..10].copy_from_slice(&[0x20, 0x01]);
        p[10..12].copy_from_slice(&[0x0d, 0xb8]);
        p[23] = 2;
        p[24..26].copy_from_slice(&[0x20, 0x01]);
        p[26..28].copy_from_slice(&[0x0d, 0xb8]);
        p[39] = 1;
        p[40..44].copy_from_slice(&[0xc3, 0x50, 0x00, 0x50]);
        p[60] = 0xaa;
        p[61] = 0xbb;
        p
    }

    #[test]
    fn round_trip() {
        let p = pkt();
        let (r, payload) = Ipv6Repr::parse(&p).unwrap();
        assert_eq!(
            r,
            Ipv6Repr {
                src: "2001:db8::2".parse().unwrap(),
                dst: "2001:db8::1".parse().unwrap(),
                next_header: NEXT_TCP,
                hop_limit: 64,
                traffic_class: 0x2e,
                flow_label: 0x12345,
                payload_len: 20,
            }
        );
        assert_eq!(payload, &p[40..60]);
        let mut out = [0u8; HEADER_LEN];
        r.emit(&mut out);
        assert_eq!(out, p[..HEADER_LEN]);
    }

    #[test]
    fn extension_headers_skipped() {
        // Hop-by-hop (8 bytes: PadN), destination options (16 bytes), then ICMPv6 with 4 bytes.
        let mut p = [0u8; 68];
        p[..40].copy_from_slice(&pkt()[..40]);
        p[4..6].copy_from_slice(&28u16.to_be_bytes());
        p[6] = NEXT_HOP_BY_HOP;
        p[40..48].copy_from_slice(&[NEXT_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
        p[48] = NEXT_ICMPV6;
        p[49] = 1;
        p[50..52].copy_from_slice(&[1, 12]);
        p[64..68].copy_from_slice(&[128, 0, 0xde, 0xad]);
        let (r, payload) = Ipv6Repr::parse(&p).unwrap();
        assert_eq!(r.next_header, NEXT_ICMPV6);
        assert_eq!(r.payload_len, 4);
        assert_eq!(payload, &[128, 0, 0xde, 0xad]);

        // Hop-by-hop after destination options: malformed.
        let mut q = p;
        q[6] = NEXT_DEST_OPTS;
        q[40] = NEXT_HOP_BY_HOP;
        assert_eq!(Ipv6Repr::parse(&q), Err(WireError::Malformed));
        // Fragment header.
        let mut q = p;
        q[40] = NEXT_FRAGMENT;
        assert_eq!(Ipv6Repr::parse(&q), Err(WireError::Unsupported));
        // Destination options claiming more than the payload.
        let mut q = p;
        q[49] = 2;
        assert_eq!(Ipv6Repr::parse(&q), Err(WireError::Truncated));
        // No next header: nothing to skip, empty upper layer is fine.
        let mut q = p;
        q[4..6].copy_from_slice(&8u16.to_be_bytes());
        q[40] = NEXT_NONE;
        let (r, payload) = Ipv6Repr::parse(&q).unwrap();
        assert_eq!(r.next_header, NEXT_NONE);
        assert!(payload.is_empty());
    }

    #[test]
    fn errors() {
        let p = pkt();
        assert_eq!(Ipv6Repr::parse(&p[..39]), Err(WireError::Truncated));
        assert_eq!(Ipv6Repr::parse(&p[..59]), Err(WireError::Truncated));
        let mut q = p;
        q[0] = 0x42;
        assert_eq!(Ipv6Repr::parse(&q), Err(WireError::Malformed));
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = XorShift(0x5151_7e7e_a5a5_3c3c);
        let mut buf = [0u8; 120];
        for i in 0..20_000 {
            {
                let d = rng.bytes(&mut buf);
                let _ = Ipv6Repr::parse(d);
            }
            // Plausible headers: right version, random next headers and lengths.
            buf[0] = 0x60;
            buf[4] = 0;
            buf[5] = (rng.next() % 90) as u8;
            buf[6] = [0, 43, 60, 44, 6, 58][i % 6];
            buf[40] = [0, 43, 60, 44, 6, 58][(rng.next() % 6) as usize];
            buf[41] = (rng.next() % 4) as u8;
            if let Ok((r, payload)) = Ipv6Repr::parse(&buf) {
                assert_eq!(r.payload_len, payload.len());
                assert!(payload.len() <= usize::from(buf[5]));
            }
            let mut p = pkt();
            let _ = Ipv6Repr::parse(rng.mutate(&mut p));
        }
    }
}
