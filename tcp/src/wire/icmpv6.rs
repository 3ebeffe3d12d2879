//! ICMPv6 (RFC 4443) and the two Neighbor Discovery messages (RFC 4861) an endpoint needs to
//! resolve and answer for addresses: Neighbor Solicitation and Advertisement. Echo, Destination
//! Unreachable, Packet Too Big (path MTU, RFC 8201) and Time Exceeded are parsed for the same
//! reasons as in ICMPv4; router discovery, redirects, MLD and the rest come out as `Other`.
//!
//! Unlike ICMPv4 the checksum covers the IPv6 pseudo-header, hence the addresses in `parse` and
//! `emit`. Of the NDP options only the source/target link-layer address (Ethernet, 8 bytes) is
//! kept; others are skipped by their length, and a zero length is `Malformed` (RFC 4861 4.6).

use std::net::Ipv6Addr;

use super::{checksum, ipv6, WireError};

pub const TYPE_DST_UNREACHABLE: u8 = 1;
pub const TYPE_PACKET_TOO_BIG: u8 = 2;
pub const TYPE_TIME_EXCEEDED: u8 = 3;
pub const TYPE_ECHO_REQUEST: u8 = 128;
pub const TYPE_ECHO_REPLY: u8 = 129;
pub const TYPE_NEIGHBOR_SOLICIT: u8 = 135;
pub const TYPE_NEIGHBOR_ADVERT: u8 = 136;
/// Neighbor Advertisement flags (the byte after the checksum).
pub const NA_ROUTER: u8 = 0x80;
pub const NA_SOLICITED: u8 = 0x40;
pub const NA_OVERRIDE: u8 = 0x20;
/// Fixed part of every message: type, code, checksum, 4 type-specific bytes.
pub const HEADER_LEN: usize = 8;
/// Fixed part of NS/NA: the header and the 16-byte target address.
const ND_LEN: usize = 24;
const OPT_SOURCE_LL: u8 = 1;
const OPT_TARGET_LL: u8 = 2;
const LL_OPT_LEN: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icmpv6Repr<'a> {
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
    /// `original`: as much of the offending packet as fits (IPv6 header first).
    DstUnreachable {
        code: u8,
        original: &'a [u8],
    },
    PacketTooBig {
        mtu: u32,
        original: &'a [u8],
    },
    TimeExceeded {
        code: u8,
        original: &'a [u8],
    },
    NeighborSolicit {
        target: Ipv6Addr,
        source_mac: Option<[u8; 6]>,
    },
    /// `flags`: [`NA_ROUTER`] | [`NA_SOLICITED`] | [`NA_OVERRIDE`].
    NeighborAdvert {
        flags: u8,
        target: Ipv6Addr,
        target_mac: Option<[u8; 6]>,
    },
    Other {
        msg_type: u8,
        code: u8,
    },
}

/// Finds the link-layer address option of `kind` among NDP options.
fn ll_option(mut opts: &[u8], kind: u8) -> Result<Option<[u8; 6]>, WireError> {
    let mut found = None;
    while !opts.is_empty() {
        if opts.len() < 2 {
            return Err(WireError::Truncated);
        }
        let len = usize::from(opts[1]) * 8;
        if len == 0 {
            return Err(WireError::Malformed);
        }
        if len > opts.len() {
            return Err(WireError::Truncated);
        }
        if opts[0] == kind && len == LL_OPT_LEN && found.is_none() {
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&opts[2..8]);
            found = Some(mac);
        }
        opts = &opts[len..];
    }
    Ok(found)
}

fn emit_ll_option(buf: &mut [u8], kind: u8, mac: &[u8; 6]) {
    buf[0] = kind;
    buf[1] = (LL_OPT_LEN / 8) as u8;
    buf[2..8].copy_from_slice(mac);
}

impl<'a> Icmpv6Repr<'a> {
    /// Parses an ICMPv6 message (the whole upper-layer payload) sent from `src` to `dst`.
    ///
    /// - shorter than its fixed part, or an NDP option running past the end: `Truncated`;
    /// - wrong checksum (only when `verify_checksum`): `Checksum`;
    /// - NS/NA with a non-zero code or a zero-length option: `Malformed`.
    ///
    /// Hop limit 255 on NDP (RFC 4861 7.1.1) is the IP layer's to check.
    pub fn parse(
        data: &'a [u8],
        src: &Ipv6Addr,
        dst: &Ipv6Addr,
        verify_checksum: bool,
    ) -> Result<Icmpv6Repr<'a>, WireError> {
        if data.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if verify_checksum {
            // A message longer than u32::MAX cannot exist in a slice of a real packet, but stay
            // total: such a length would fail the check anyway.
            let len = u32::try_from(data.len()).map_err(|_| WireError::Truncated)?;
            let sum = checksum::pseudo_v6(src, dst, ipv6::NEXT_ICMPV6, len);
            if checksum::fold(checksum::accumulate(data, sum)) != 0xffff {
                return Err(WireError::Checksum);
            }
        }
        let (msg_type, code) = (data[0], data[1]);
        let ident = u16::from_be_bytes([data[4], data[5]]);
        let seq = u16::from_be_bytes([data[6], data[7]]);
        let rest = &data[HEADER_LEN..];
        let target = || {
            let mut t = [0u8; 16];
            t.copy_from_slice(&data[8..24]);
            Ipv6Addr::from(t)
        };
        Ok(match msg_type {
            TYPE_ECHO_REQUEST if code == 0 => Icmpv6Repr::EchoRequest {
                ident,
                seq,
                data: rest,
            },
            TYPE_ECHO_REPLY if code == 0 => Icmpv6Repr::EchoReply {
                ident,
                seq,
                data: rest,
            },
            TYPE_DST_UNREACHABLE => Icmpv6Repr::DstUnreachable {
                code,
                original: rest,
            },
            TYPE_PACKET_TOO_BIG => Icmpv6Repr::PacketTooBig {
                mtu: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
                original: rest,
            },
            TYPE_TIME_EXCEEDED => Icmpv6Repr::TimeExceeded {
                code,
                original: rest,
            },
            TYPE_NEIGHBOR_SOLICIT | TYPE_NEIGHBOR_ADVERT => {
                if code != 0 {
                    return Err(WireError::Malformed);
                }
                if data.len() < ND_LEN {
                    return Err(WireError::Truncated);
                }
                let opts = &data[ND_LEN..];
                if msg_type == TYPE_NEIGHBOR_SOLICIT {
                    Icmpv6Repr::NeighborSolicit {
                        target: target(),
                        source_mac: ll_option(opts, OPT_SOURCE_LL)?,
                    }
                } else {
                    Icmpv6Repr::NeighborAdvert {
                        flags: data[4] & (NA_ROUTER | NA_SOLICITED | NA_OVERRIDE),
                        target: target(),
                        target_mac: ll_option(opts, OPT_TARGET_LL)?,
                    }
                }
            }
            _ => Icmpv6Repr::Other { msg_type, code },
        })
    }

    /// Bytes [`Icmpv6Repr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        match self {
            Icmpv6Repr::EchoRequest { data, .. } | Icmpv6Repr::EchoReply { data, .. } => {
                HEADER_LEN + data.len()
            }
            Icmpv6Repr::DstUnreachable { original, .. }
            | Icmpv6Repr::PacketTooBig { original, .. }
            | Icmpv6Repr::TimeExceeded { original, .. } => HEADER_LEN + original.len(),
            Icmpv6Repr::NeighborSolicit {
                source_mac: mac, ..
            }
            | Icmpv6Repr::NeighborAdvert {
                target_mac: mac, ..
            } => ND_LEN + if mac.is_some() { LL_OPT_LEN } else { 0 },
            Icmpv6Repr::Other { .. } => HEADER_LEN,
        }
    }

    /// Writes the message ([`Icmpv6Repr::buffer_len`] bytes) at the start of `buf` with the
    /// checksum over the pseudo-header of `src` -> `dst`. Panics if `buf` is shorter. The caller
    /// trims `original` so the error fits the minimum MTU of 1280 (RFC 4443 2.4 (c)). `Other`
    /// writes only its type and code with zero type-specific bytes: a contentless 8-byte
    /// message, not meant to be sent.
    pub fn emit(&self, src: &Ipv6Addr, dst: &Ipv6Addr, buf: &mut [u8]) {
        let len = self.buffer_len();
        buf[2] = 0;
        buf[3] = 0;
        let echo = |buf: &mut [u8], t: u8, ident: u16, seq: u16, data: &[u8]| {
            buf[0] = t;
            buf[1] = 0;
            buf[4..6].copy_from_slice(&ident.to_be_bytes());
            buf[6..8].copy_from_slice(&seq.to_be_bytes());
            buf[HEADER_LEN..HEADER_LEN + data.len()].copy_from_slice(data);
        };
        let error = |buf: &mut [u8], t: u8, code: u8, word: u32, original: &[u8]| {
            buf[0] = t;
            buf[1] = code;
            buf[4..8].copy_from_slice(&word.to_be_bytes());
            buf[HEADER_LEN..HEADER_LEN + original.len()].copy_from_slice(original);
        };
        match *self {
            Icmpv6Repr::EchoRequest { ident, seq, data } => {
                echo(buf, TYPE_ECHO_REQUEST, ident, seq, data)
            }
            Icmpv6Repr::EchoReply { ident, seq, data } => {
                echo(buf, TYPE_ECHO_REPLY, ident, seq, data)
            }
            Icmpv6Repr::DstUnreachable { code, original } => {
                error(buf, TYPE_DST_UNREACHABLE, code, 0, original)
            }
            Icmpv6Repr::PacketTooBig { mtu, original } => {
                error(buf, TYPE_PACKET_TOO_BIG, 0, mtu, original)
            }
            Icmpv6Repr::TimeExceeded { code, original } => {
                error(buf, TYPE_TIME_EXCEEDED, code, 0, original)
            }
            Icmpv6Repr::NeighborSolicit { target, source_mac } => {
                buf[0] = TYPE_NEIGHBOR_SOLICIT;
                buf[1] = 0;
                buf[4..8].fill(0);
                buf[8..24].copy_from_slice(&target.octets());
                if let Some(mac) = source_mac {
                    emit_ll_option(&mut buf[ND_LEN..], OPT_SOURCE_LL, &mac);
                }
            }
            Icmpv6Repr::NeighborAdvert {
                flags,
                target,
                target_mac,
            } => {
                buf[0] = TYPE_NEIGHBOR_ADVERT;
                buf[1] = 0;
                buf[4] = flags & (NA_ROUTER | NA_SOLICITED | NA_OVERRIDE);
                buf[5..8].fill(0);
                buf[8..24].copy_from_slice(&target.octets());
                if let Some(mac) = target_mac {
                    emit_ll_option(&mut buf[ND_LEN..], OPT_TARGET_LL, &mac);
                }
            }
            Icmpv6Repr::Other { msg_type, code } => {
                buf[0] = msg_type;
                buf[1] = code;
                buf[4..8].fill(0);
            }
        }
        let sum = checksum::pseudo_v6(src, dst, ipv6::NEXT_ICMPV6, len as u32);
        let c = checksum::finish(checksum::accumulate(&buf[..len], sum));
        buf[2..4].copy_from_slice(&c.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::super::XorShift;
    use super::*;

    fn ll(n: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5054, 0xff, 0xfe12, n)
    }

    fn solicited_node() -> Ipv6Addr {
        "ff02::1:ff12:1".parse().unwrap()
    }

    // NS from fe80::5054:ff:fe12:2 for fe80::5054:ff:fe12:1 to its solicited-node group, with a
    // source link-layer address option 52:54:00:12:00:02. Checksum 0x8b52.
    #[rustfmt::skip]
    const NS: [u8; 32] = [
        0x87, 0x00, 0x8b, 0x52, 0x00, 0x00, 0x00, 0x00, // header
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x50, 0x54, 0x00, 0xff, 0xfe, 0x12, 0x00, 0x01, // target
        0x01, 0x01, 0x52, 0x54, 0x00, 0x12, 0x00, 0x02, // SLLAO
    ];

    // The solicited NA back (S|O), target link-layer address 52:54:00:12:00:01.
    // Checksum 0xd982.
    #[rustfmt::skip]
    const NA: [u8; 32] = [
        0x88, 0x00, 0xd9, 0x82, 0x60, 0x00, 0x00, 0x00, // header, S|O
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x50, 0x54, 0x00, 0xff, 0xfe, 0x12, 0x00, 0x01, // target
        0x02, 0x01, 0x52, 0x54, 0x00, 0x12, 0x00, 0x01, // TLLAO
    ];

    // Echo request ident 0x0bad, seq 7, data "snstack". Checksum 0x24ea (fe80::..:2 -> ..:1).
    const ECHO: [u8; 15] = [
        0x80, 0x00, 0x24, 0xea, 0x0b, 0xad, 0x00, 0x07, b's', b'n', b's', b't', b'a', b'c', b'k',
    ];

    #[test]
    fn ns_round_trip() {
        let (s, d) = (ll(2), solicited_node());
        let r = Icmpv6Repr::parse(&NS, &s, &d, true).unwrap();
        assert_eq!(
            r,
            Icmpv6Repr::NeighborSolicit {
                target: ll(1),
                source_mac: Some([0x52, 0x54, 0x00, 0x12, 0x00, 0x02]),
            }
        );
        assert_eq!(r.buffer_len(), 32);
        let mut out = [0u8; 32];
        r.emit(&s, &d, &mut out);
        assert_eq!(out, NS);
        // Checksum depends on the pseudo-header.
        assert_eq!(
            Icmpv6Repr::parse(&NS, &s, &ll(1), true),
            Err(WireError::Checksum)
        );
        // Without the option (DAD probes from ::).
        let dad = Icmpv6Repr::NeighborSolicit {
            target: ll(1),
            source_mac: None,
        };
        assert_eq!(dad.buffer_len(), 24);
        dad.emit(&Ipv6Addr::UNSPECIFIED, &d, &mut out);
        assert_eq!(
            Icmpv6Repr::parse(&out[..24], &Ipv6Addr::UNSPECIFIED, &d, true),
            Ok(dad)
        );
    }

    #[test]
    fn na_round_trip() {
        let (s, d) = (ll(1), ll(2));
        let r = Icmpv6Repr::parse(&NA, &s, &d, true).unwrap();
        assert_eq!(
            r,
            Icmpv6Repr::NeighborAdvert {
                flags: NA_SOLICITED | NA_OVERRIDE,
                target: ll(1),
                target_mac: Some([0x52, 0x54, 0x00, 0x12, 0x00, 0x01]),
            }
        );
        let mut out = [0u8; 32];
        r.emit(&s, &d, &mut out);
        assert_eq!(out, NA);
    }

    #[test]
    fn echo_and_errors_round_trip() {
        let (s, d) = (ll(2), ll(1));
        let r = Icmpv6Repr::parse(&ECHO, &s, &d, true).unwrap();
        assert_eq!(
            r,
            Icmpv6Repr::EchoRequest {
                ident: 0x0bad,
                seq: 7,
                data: b"snstack"
            }
        );
        let mut out = [0u8; 64];
        r.emit(&s, &d, &mut out);
        assert_eq!(out[..15], ECHO);
        let quoted = [0x60u8; 40];
        for m in [
            Icmpv6Repr::EchoReply {
                ident: 1,
                seq: 2,
                data: &[],
            },
            Icmpv6Repr::PacketTooBig {
                mtu: 1280,
                original: &quoted,
            },
            Icmpv6Repr::DstUnreachable {
                code: 4,
                original: &quoted,
            },
            Icmpv6Repr::TimeExceeded {
                code: 0,
                original: &quoted[..8],
            },
            Icmpv6Repr::Other {
                msg_type: 134,
                code: 0,
            },
        ] {
            m.emit(&s, &d, &mut out);
            let n = m.buffer_len();
            assert_eq!(Icmpv6Repr::parse(&out[..n], &s, &d, true), Ok(m));
        }
        // Packet Too Big MTU 1280 is 00 00 05 00.
        Icmpv6Repr::PacketTooBig {
            mtu: 1280,
            original: &[],
        }
        .emit(&s, &d, &mut out);
        assert_eq!(&out[4..8], &[0, 0, 5, 0]);
    }

    #[test]
    fn ndp_options() {
        let (s, d) = (ll(2), solicited_node());
        // An unknown 16-byte option before the SLLAO is skipped.
        let mut m = [0u8; 48];
        m[..24].copy_from_slice(&NS[..24]);
        m[24..26].copy_from_slice(&[14, 2]);
        m[40..48].copy_from_slice(&NS[24..32]);
        let r = Icmpv6Repr::parse(&m, &s, &d, false).unwrap();
        assert_eq!(
            r,
            Icmpv6Repr::NeighborSolicit {
                target: ll(1),
                source_mac: Some([0x52, 0x54, 0x00, 0x12, 0x00, 0x02]),
            }
        );
        // A zero-length option.
        let mut z = NS;
        z[25] = 0;
        assert_eq!(
            Icmpv6Repr::parse(&z, &s, &d, false),
            Err(WireError::Malformed)
        );
        // An option running past the end.
        z[25] = 2;
        assert_eq!(
            Icmpv6Repr::parse(&z, &s, &d, false),
            Err(WireError::Truncated)
        );
        // A TLLAO in an NS is not a source address.
        let mut t = NS;
        t[24] = OPT_TARGET_LL;
        assert_eq!(
            Icmpv6Repr::parse(&t, &s, &d, false),
            Ok(Icmpv6Repr::NeighborSolicit {
                target: ll(1),
                source_mac: None
            })
        );
        // Non-zero code, short body.
        let mut c = NS;
        c[1] = 1;
        assert_eq!(
            Icmpv6Repr::parse(&c, &s, &d, false),
            Err(WireError::Malformed)
        );
        assert_eq!(
            Icmpv6Repr::parse(&NS[..23], &s, &d, false),
            Err(WireError::Truncated)
        );
        assert_eq!(
            Icmpv6Repr::parse(&NS[..7], &s, &d, false),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn random_input_never_panics() {
        let (s, d) = (ll(2), solicited_node());
        let mut rng = XorShift(0xfeed_face_0bad_f00d);
        let mut buf = [0u8; 64];
        let mut out = [0u8; 64];
        for i in 0..20_000 {
            {
                let b = rng.bytes(&mut buf);
                let _ = Icmpv6Repr::parse(b, &s, &d, true);
                if let Ok(r) = Icmpv6Repr::parse(b, &s, &d, false) {
                    r.emit(&s, &d, &mut out);
                }
            }
            // Random bodies under plausible types.
            buf[0] = [1, 2, 3, 128, 129, 135, 136, 134][i % 8];
            buf[1] = (rng.next() % 2) as u8;
            let n = (rng.next() % 65) as usize;
            if let Ok(r) = Icmpv6Repr::parse(&buf[..n], &s, &d, false) {
                r.emit(&s, &d, &mut out);
                assert_eq!(
                    Icmpv6Repr::parse(&out[..r.buffer_len()], &s, &d, true),
                    Ok(r)
                );
            }
            let mut m = if i % 2 == 0 { NS } else { NA };
            let _ = Icmpv6Repr::parse(rng.mutate(&mut m), &s, &d, true);
        }
    }
}
