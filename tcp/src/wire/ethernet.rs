//! Ethernet II framing (IEEE 802.3 with an EtherType): destination, source, type; 14 bytes.
//!
//! The engine owns one untagged link, so VLAN tags (802.1Q/802.1ad) and 802.3 length framing
//! (type field <= 1500, used by LLC/STP) are reported as `Unsupported` rather than parsed. The FCS
//! is never seen: devices strip it.

use super::WireError;

pub const HEADER_LEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// 802.1Q customer VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// 802.1ad service VLAN tag (QinQ outer tag).
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
pub const BROADCAST: [u8; 6] = [0xff; 6];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthRepr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ethertype: u16,
}

impl EthRepr {
    /// Parses the header of `frame` and returns it with the payload after it. Frames shorter than
    /// the header are `Truncated`; VLAN-tagged and 802.3 length-framed frames are `Unsupported`.
    pub fn parse(frame: &[u8]) -> Result<(EthRepr, &[u8]), WireError> {
        if frame.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let mut dst = [0u8; 6];
        let mut src = [0u8; 6];
        dst.copy_from_slice(&frame[0..6]);
        src.copy_from_slice(&frame[6..12]);
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        if ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ || ethertype < 0x0600 {
            return Err(WireError::Unsupported);
        }
        Ok((
            EthRepr {
                dst,
                src,
                ethertype,
            },
            &frame[HEADER_LEN..],
        ))
    }

    /// Writes the 14-byte header at the start of `buf`. Panics if `buf` is shorter than
    /// [`HEADER_LEN`] (the caller sizes its buffer).
    pub fn emit(&self, buf: &mut [u8]) {
        buf[0..6].copy_from_slice(&self.dst);
        buf[6..12].copy_from_slice(&self.src);
        buf[12..14].copy_from_slice(&self.ethertype.to_be_bytes());
    }

    /// Is `mac` a group (multicast or broadcast) address (I/G bit set)?
    pub fn is_multicast(mac: &[u8; 6]) -> bool {
        mac[0] & 0x01 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::super::XorShift;
    use super::*;

    // An ARP request broadcast as a host puts it on the wire (before padding to 60 bytes).
    const FRAME: [u8; 16] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // src
        0x08, 0x06, // ARP
        0x00, 0x01, // first payload bytes
    ];

    #[test]
    fn round_trip() {
        let (r, payload) = EthRepr::parse(&FRAME).unwrap();
        assert_eq!(r.dst, BROADCAST);
        assert_eq!(r.src, [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        assert_eq!(r.ethertype, ETHERTYPE_ARP);
        assert_eq!(payload, &[0x00, 0x01]);
        assert!(EthRepr::is_multicast(&r.dst));
        assert!(!EthRepr::is_multicast(&r.src));
        let mut out = [0u8; HEADER_LEN];
        r.emit(&mut out);
        assert_eq!(out, FRAME[..HEADER_LEN]);
    }

    #[test]
    fn errors() {
        assert_eq!(EthRepr::parse(&FRAME[..13]), Err(WireError::Truncated));
        assert_eq!(EthRepr::parse(&[]), Err(WireError::Truncated));
        let mut tagged = FRAME;
        tagged[12] = 0x81;
        tagged[13] = 0x00;
        assert_eq!(EthRepr::parse(&tagged), Err(WireError::Unsupported));
        tagged[12] = 0x88;
        tagged[13] = 0xa8;
        assert_eq!(EthRepr::parse(&tagged), Err(WireError::Unsupported));
        let mut llc = FRAME;
        llc[12] = 0x00;
        llc[13] = 0x26;
        assert_eq!(EthRepr::parse(&llc), Err(WireError::Unsupported));
        let (r, p) = EthRepr::parse(&FRAME[..14]).unwrap();
        assert_eq!(r.ethertype, ETHERTYPE_ARP);
        assert!(p.is_empty());
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = XorShift(0x1234_5678_9abc_def1);
        let mut buf = [0u8; 64];
        for _ in 0..20_000 {
            let d = rng.bytes(&mut buf);
            if let Ok((r, p)) = EthRepr::parse(d) {
                assert_eq!(p.len() + HEADER_LEN, d.len());
                let mut out = [0u8; HEADER_LEN];
                r.emit(&mut out);
                assert_eq!(&out[..], &d[..HEADER_LEN]);
            }
        }
    }
}
