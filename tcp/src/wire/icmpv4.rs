//! ICMP for IPv4 (RFC 792): the messages a TCP endpoint acts on. Echo so the host answers ping;
//! Destination Unreachable (with the RFC 1191 next-hop MTU for path MTU discovery) and Time
//! Exceeded so errors can be matched to a connection via the quoted datagram (RFC 5927 checks).
//! Every other type is reported as `Other` for the caller to count and drop.

use super::{checksum, WireError};

pub const TYPE_ECHO_REPLY: u8 = 0;
pub const TYPE_DST_UNREACHABLE: u8 = 3;
pub const TYPE_ECHO_REQUEST: u8 = 8;
pub const TYPE_TIME_EXCEEDED: u8 = 11;
/// Destination Unreachable code "fragmentation needed and DF set" (carries the next-hop MTU).
pub const CODE_FRAG_NEEDED: u8 = 4;
/// Fixed part of every message: type, code, checksum, 4 type-specific bytes.
pub const HEADER_LEN: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icmpv4Repr<'a> {
    EchoRequest {
        ident: u16,
        seq: u16,
        data: &'a [u8],
    },
    EchoReply {
        ident: u16,
        seq: u16,
        data: &'a [u8],
    },
    /// `original`: the quoted IP header and leading bytes of the offending datagram.
    DstUnreachable {
        code: u8,
        next_hop_mtu: u16,
        original: &'a [u8],
    },
    TimeExceeded {
        code: u8,
        original: &'a [u8],
    },
    Other {
        msg_type: u8,
        code: u8,
    },
}

impl<'a> Icmpv4Repr<'a> {
    /// Parses an ICMP message (the whole IP payload). Shorter than 8 bytes: `Truncated`; wrong
    /// checksum (only when `verify_checksum`): `Checksum`.
    pub fn parse(data: &'a [u8], verify_checksum: bool) -> Result<Icmpv4Repr<'a>, WireError> {
        if data.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if verify_checksum && checksum::fold(checksum::accumulate(data, 0)) != 0xffff {
            return Err(WireError::Checksum);
        }
        let (msg_type, code) = (data[0], data[1]);
        let ident = u16::from_be_bytes([data[4], data[5]]);
        let seq = u16::from_be_bytes([data[6], data[7]]);
        let rest = &data[HEADER_LEN..];
        Ok(match msg_type {
            TYPE_ECHO_REQUEST if code == 0 => Icmpv4Repr::EchoRequest {
                ident,
                seq,
                data: rest,
            },
            TYPE_ECHO_REPLY if code == 0 => Icmpv4Repr::EchoReply {
                ident,
                seq,
                data: rest,
            },
            TYPE_DST_UNREACHABLE => Icmpv4Repr::DstUnreachable {
                code,
                next_hop_mtu: seq,
                original: rest,
            },
            TYPE_TIME_EXCEEDED => Icmpv4Repr::TimeExceeded {
                code,
                original: rest,
            },
            _ => Icmpv4Repr::Other { msg_type, code },
        })
    }

    /// Bytes [`Icmpv4Repr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Icmpv4Repr::EchoRequest { data, .. } | Icmpv4Repr::EchoReply { data, .. } => {
                    data.len()
                }
                Icmpv4Repr::DstUnreachable { original, .. }
                | Icmpv4Repr::TimeExceeded { original, .. } => original.len(),
                Icmpv4Repr::Other { .. } => 0,
            }
    }

    /// Writes the message ([`Icmpv4Repr::buffer_len`] bytes) at the start of `buf`, checksum
    /// filled. Panics if `buf` is shorter. The caller trims `original` to what fits the
    /// minimum MTU (RFC 1812: at most 576 bytes for the whole error datagram). `Other` writes
    /// only its type and code with zero type-specific bytes: a valid-looking but contentless
    /// 8-byte message, not meant to be sent.
    pub fn emit(&self, buf: &mut [u8]) {
        let (t, code, word, body): (u8, u8, [u8; 4], &[u8]) = match *self {
            Icmpv4Repr::EchoRequest { ident, seq, data } => {
                (TYPE_ECHO_REQUEST, 0, be_pair(ident, seq), data)
            }
            Icmpv4Repr::EchoReply { ident, seq, data } => {
                (TYPE_ECHO_REPLY, 0, be_pair(ident, seq), data)
            }
            Icmpv4Repr::DstUnreachable {
                code,
                next_hop_mtu,
                original,
            } => (
                TYPE_DST_UNREACHABLE,
                code,
                be_pair(0, next_hop_mtu),
                original,
            ),
            Icmpv4Repr::TimeExceeded { code, original } => {
                (TYPE_TIME_EXCEEDED, code, [0; 4], original)
            }
            Icmpv4Repr::Other { msg_type, code } => (msg_type, code, [0; 4], &[]),
        };
        let len = HEADER_LEN + body.len();
        buf[0] = t;
        buf[1] = code;
        buf[2] = 0;
        buf[3] = 0;
        buf[4..8].copy_from_slice(&word);
        buf[HEADER_LEN..len].copy_from_slice(body);
        let c = checksum::finish(checksum::accumulate(&buf[..len], 0));
        buf[2..4].copy_from_slice(&c.to_be_bytes());
    }
}

fn be_pair(a: u16, b: u16) -> [u8; 4] {
    let (a, b) = (a.to_be_bytes(), b.to_be_bytes());
    [a[0], a[1], b[0], b[1]]
}

#[cfg(test)]
mod tests {
    use super::super::XorShift;
    use super::*;

    // `ping -p 61 -s 4`: echo request ident 0x1234, seq 1, data "aaaa"; checksum 0x2308.
    const ECHO: [u8; 12] = [
        0x08, 0x00, 0x23, 0x08, 0x12, 0x34, 0x00, 0x01, 0x61, 0x61, 0x61, 0x61,
    ];

    // Fragmentation needed, next-hop MTU 1400, quoting a 20-byte IPv4 header + 8 TCP bytes.
    // Checksum 0xcb36 (the quoted header's own checksum 0x04d4).
    #[rustfmt::skip]
    const FRAG_NEEDED: [u8; 36] = [
        0x03, 0x04, 0xcb, 0x36, 0x00, 0x00, 0x05, 0x78, // ICMP header
        0x45, 0x00, 0x05, 0xdc, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x04, 0xd4, // quoted IP header
        0x0a, 0x00, 0x00, 0x02, 0x0a, 0x00, 0x00, 0x01, // (addresses)
        0xc3, 0x50, 0x00, 0x50, 0x12, 0x34, 0x56, 0x78, // quoted TCP ports and seq
    ];

    #[test]
    fn echo_round_trip() {
        let r = Icmpv4Repr::parse(&ECHO, true).unwrap();
        assert_eq!(
            r,
            Icmpv4Repr::EchoRequest {
                ident: 0x1234,
                seq: 1,
                data: b"aaaa"
            }
        );
        assert_eq!(r.buffer_len(), 12);
        let mut out = [0u8; 12];
        r.emit(&mut out);
        assert_eq!(out, ECHO);
        let reply = Icmpv4Repr::EchoReply {
            ident: 0x1234,
            seq: 1,
            data: b"aaaa",
        };
        reply.emit(&mut out);
        assert_eq!(&out[..4], &[0x00, 0x00, 0x2b, 0x08]);
        assert_eq!(Icmpv4Repr::parse(&out, true), Ok(reply));
    }

    #[test]
    fn frag_needed_round_trip() {
        let r = Icmpv4Repr::parse(&FRAG_NEEDED, true).unwrap();
        assert_eq!(
            r,
            Icmpv4Repr::DstUnreachable {
                code: CODE_FRAG_NEEDED,
                next_hop_mtu: 1400,
                original: &FRAG_NEEDED[8..]
            }
        );
        let mut out = [0u8; 36];
        assert_eq!(r.buffer_len(), 36);
        r.emit(&mut out);
        assert_eq!(out, FRAG_NEEDED);

        let te = Icmpv4Repr::TimeExceeded {
            code: 0,
            original: &FRAG_NEEDED[8..],
        };
        te.emit(&mut out);
        assert_eq!(Icmpv4Repr::parse(&out, true), Ok(te));
    }

    #[test]
    fn errors_and_other() {
        assert_eq!(
            Icmpv4Repr::parse(&ECHO[..7], false),
            Err(WireError::Truncated)
        );
        let mut bad = ECHO;
        bad[11] = 0x62;
        assert_eq!(Icmpv4Repr::parse(&bad, true), Err(WireError::Checksum));
        assert!(Icmpv4Repr::parse(&bad, false).is_ok());
        let other = Icmpv4Repr::Other {
            msg_type: 13,
            code: 0,
        };
        let mut out = [0u8; 8];
        assert_eq!(other.buffer_len(), 8);
        other.emit(&mut out);
        assert_eq!(Icmpv4Repr::parse(&out, true), Ok(other));
        // An echo request with a non-zero code is not one.
        let mut odd = ECHO;
        odd[1] = 1;
        assert_eq!(
            Icmpv4Repr::parse(&odd, false),
            Ok(Icmpv4Repr::Other {
                msg_type: 8,
                code: 1
            })
        );
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = XorShift(0x0123_4567_89ab_cdef);
        let mut buf = [0u8; 64];
        let mut out = [0u8; 64];
        for i in 0..20_000 {
            {
                let d = rng.bytes(&mut buf);
                let _ = Icmpv4Repr::parse(d, true);
                if let Ok(r) = Icmpv4Repr::parse(d, false) {
                    assert!(r.buffer_len() <= d.len().max(HEADER_LEN));
                    r.emit(&mut out);
                }
            }
            let mut m = if i % 2 == 0 {
                ECHO.to_vec()
            } else {
                FRAG_NEEDED.to_vec()
            };
            if let Ok(r) = Icmpv4Repr::parse(rng.mutate(&mut m), false) {
                r.emit(&mut out);
                assert_eq!(Icmpv4Repr::parse(&out[..r.buffer_len()], true), Ok(r));
            }
        }
    }
}
