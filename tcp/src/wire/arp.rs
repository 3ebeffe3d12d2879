//! ARP (RFC 826) for IPv4 over Ethernet, the only pairing the engine resolves: a fixed 28-byte
//! packet. Other hardware/protocol types and opcodes (RARP, InARP) are `Unsupported`.

use std::net::Ipv4Addr;

use super::WireError;

pub const LEN: usize = 28;
const HTYPE_ETHERNET: u16 = 1;
const PTYPE_IPV4: u16 = 0x0800;
const OP_REQUEST: u16 = 1;
const OP_REPLY: u16 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArpOp {
    Request,
    Reply,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpRepr {
    pub op: ArpOp,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_mac: [u8; 6],
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    /// Parses an ARP packet (the Ethernet payload; trailing padding is ignored).
    pub fn parse(data: &[u8]) -> Result<ArpRepr, WireError> {
        if data.len() < 8 {
            return Err(WireError::Truncated);
        }
        let htype = u16::from_be_bytes([data[0], data[1]]);
        let ptype = u16::from_be_bytes([data[2], data[3]]);
        if htype != HTYPE_ETHERNET || ptype != PTYPE_IPV4 || data[4] != 6 || data[5] != 4 {
            return Err(WireError::Unsupported);
        }
        let op = match u16::from_be_bytes([data[6], data[7]]) {
            OP_REQUEST => ArpOp::Request,
            OP_REPLY => ArpOp::Reply,
            _ => return Err(WireError::Unsupported),
        };
        if data.len() < LEN {
            return Err(WireError::Truncated);
        }
        let mac = |at: usize| {
            let mut m = [0u8; 6];
            m.copy_from_slice(&data[at..at + 6]);
            m
        };
        let ip = |at: usize| Ipv4Addr::new(data[at], data[at + 1], data[at + 2], data[at + 3]);
        Ok(ArpRepr {
            op,
            sender_mac: mac(8),
            sender_ip: ip(14),
            target_mac: mac(18),
            target_ip: ip(24),
        })
    }

    /// Writes the 28-byte packet at the start of `buf`. Panics if `buf` is shorter than [`LEN`].
    pub fn emit(&self, buf: &mut [u8]) {
        buf[0..2].copy_from_slice(&HTYPE_ETHERNET.to_be_bytes());
        buf[2..4].copy_from_slice(&PTYPE_IPV4.to_be_bytes());
        buf[4] = 6;
        buf[5] = 4;
        let op = match self.op {
            ArpOp::Request => OP_REQUEST,
            ArpOp::Reply => OP_REPLY,
        };
        buf[6..8].copy_from_slice(&op.to_be_bytes());
        buf[8..14].copy_from_slice(&self.sender_mac);
        buf[14..18].copy_from_slice(&self.sender_ip.octets());
        buf[18..24].copy_from_slice(&self.target_mac);
        buf[24..28].copy_from_slice(&self.target_ip.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::super::XorShift;
    use super::*;

    // "Who has 10.0.0.1? Tell 10.0.0.2" from 52:54:00:12:34:56, followed by Ethernet padding.
    const REQUEST: [u8; 32] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // Ethernet, IPv4, 6, 4, request
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 10, 0, 0, 2, // sender
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 0, 0, 1, // target
        0, 0, 0, 0, // padding
    ];

    #[test]
    fn round_trip() {
        let r = ArpRepr::parse(&REQUEST).unwrap();
        assert_eq!(
            r,
            ArpRepr {
                op: ArpOp::Request,
                sender_mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
                sender_ip: Ipv4Addr::new(10, 0, 0, 2),
                target_mac: [0; 6],
                target_ip: Ipv4Addr::new(10, 0, 0, 1),
            }
        );
        let mut out = [0u8; LEN];
        r.emit(&mut out);
        assert_eq!(out, REQUEST[..LEN]);

        let reply = ArpRepr {
            op: ArpOp::Reply,
            sender_mac: [2, 0, 0, 0, 0, 1],
            sender_ip: Ipv4Addr::new(10, 0, 0, 1),
            target_mac: r.sender_mac,
            target_ip: r.sender_ip,
        };
        reply.emit(&mut out);
        assert_eq!(&out[6..8], &[0, 2]);
        assert_eq!(ArpRepr::parse(&out), Ok(reply));
    }

    #[test]
    fn errors() {
        assert_eq!(ArpRepr::parse(&REQUEST[..27]), Err(WireError::Truncated));
        assert_eq!(ArpRepr::parse(&REQUEST[..3]), Err(WireError::Truncated));
        for (i, v) in [(1, 6), (3, 0xdd), (4, 8), (5, 16), (7, 3)] {
            let mut p = REQUEST;
            p[i] = v;
            assert_eq!(ArpRepr::parse(&p), Err(WireError::Unsupported), "byte {i}");
        }
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = XorShift(0xdead_beef_cafe_f00d);
        let mut buf = [0u8; 40];
        for _ in 0..20_000 {
            let _ = ArpRepr::parse(rng.bytes(&mut buf));
            let mut p = REQUEST;
            if let Ok(r) = ArpRepr::parse(rng.mutate(&mut p)) {
                let mut out = [0u8; LEN];
                r.emit(&mut out);
                assert_eq!(ArpRepr::parse(&out), Ok(r));
            }
        }
    }
}
