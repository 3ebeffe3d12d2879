//! Linux's `struct virtio_net_hdr` (10 bytes), which af_packet with `PACKET_VNET_HDR` puts before
//! every received frame and expects before every sent one: the checksum and segmentation offload
//! state of the frame (the skb's `ip_summed`, `gso_type`, `gso_size`). Fields are in the host's
//! byte order (virtio "legacy" little-endian on the little-endian hosts we run on).

use snstack_tcp::{Gso, RxCsum, RxMeta, TxMeta};

use super::offload;

pub const LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the L4 checksum is partial (`csum_start`/`csum_offset`).
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was verified.
pub const F_DATA_VALID: u8 = 2;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_ECN: u8 = 0x80;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8; LEN]) -> VnetHdr {
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        }
    }

    pub fn bytes(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    /// What the engine is told about a received frame. `needs_csum`/`csum_valid` are the
    /// ring's `TP_STATUS_CSUMNOTREADY`/`TP_STATUS_CSUM_VALID` (the same facts, also reported
    /// without the vnet header).
    pub fn rx_meta(&self, needs_csum: bool, csum_valid: bool) -> RxMeta {
        let csum = if self.flags & F_NEEDS_CSUM != 0 || needs_csum {
            RxCsum::Partial
        } else if self.flags & F_DATA_VALID != 0 || csum_valid {
            RxCsum::Verified
        } else {
            RxCsum::Unknown
        };
        let gso = match self.gso_type & !GSO_ECN {
            GSO_TCPV4 | GSO_TCPV6 if self.gso_size > 0 => Some(Gso {
                segment_size: self.gso_size,
                ipv6: self.gso_type & !GSO_ECN == GSO_TCPV6,
            }),
            _ => None,
        };
        RxMeta { csum, gso }
    }

    /// The header to send `frame` with the offloads `meta` asks for. A GSO request without a
    /// checksum request gets one anyway (the kernel needs `NEEDS_CSUM` to segment).
    pub fn for_tx(frame: &[u8], meta: &TxMeta) -> VnetHdr {
        let mut h = VnetHdr::default();
        let mut csum = meta.csum;
        if let Some(g) = meta.gso {
            if let Some(end) = offload::tcp_header_end(frame) {
                h.gso_type = if g.ipv6 { GSO_TCPV6 } else { GSO_TCPV4 };
                h.gso_size = g.segment_size;
                h.hdr_len = end as u16;
                if csum.is_none() {
                    csum = offload::l4(frame).map(|p| (p.off as u16, 16));
                }
            }
        }
        if let Some((start, off)) = csum {
            h.flags = F_NEEDS_CSUM;
            h.csum_start = start;
            h.csum_offset = off;
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_meta() {
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4 | GSO_ECN,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::parse(&h.bytes()), h);
        let m = h.rx_meta(false, false);
        assert_eq!(m.csum, RxCsum::Partial);
        assert_eq!(
            m.gso,
            Some(Gso {
                segment_size: 1448,
                ipv6: false
            })
        );
        let v = VnetHdr {
            flags: F_DATA_VALID,
            ..VnetHdr::default()
        };
        assert_eq!(v.rx_meta(false, false).csum, RxCsum::Verified);
        assert_eq!(
            VnetHdr::default().rx_meta(false, true).csum,
            RxCsum::Verified
        );
        assert_eq!(VnetHdr::default().rx_meta(true, true).csum, RxCsum::Partial);
        assert_eq!(VnetHdr::default().rx_meta(false, false), RxMeta::default());
    }

    #[test]
    fn tx_header_from_meta() {
        let f = super::super::offload::tests::tcp4(1, 0x10, &[0u8; 3000]);
        let g = Gso {
            segment_size: 1448,
            ipv6: false,
        };
        let h = VnetHdr::for_tx(
            &f,
            &TxMeta {
                csum: None,
                gso: Some(g),
            },
        );
        assert_eq!(
            (
                h.flags,
                h.gso_type,
                h.gso_size,
                h.hdr_len,
                h.csum_start,
                h.csum_offset
            ),
            (F_NEEDS_CSUM, GSO_TCPV4, 1448, 66, 34, 16)
        );
        assert_eq!(VnetHdr::for_tx(&f, &TxMeta::default()), VnetHdr::default());
    }
}
