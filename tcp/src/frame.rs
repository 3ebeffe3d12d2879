//! What a device tells the engine about a received frame, and asks of it for a sent one: the
//! offload state that Linux's `virtio_net_hdr` (af_packet `PACKET_VNET_HDR`), DPDK's mbuf
//! `ol_flags` and AF_XDP metadata carry. On a veth with default offloads the kernel leaves
//! checksums to be filled (`CHECKSUM_PARTIAL`) and hands over GRO/GSO super-frames: the engine
//! must honour both (pitfall 16).

/// Checksum state of a received frame's L4 (TCP/ICMP) checksum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RxCsum {
    /// Nothing known: verify in software.
    #[default]
    Unknown,
    /// The device or kernel verified it (`VIRTIO_NET_HDR_F_DATA_VALID`, `RTE_MBUF_F_RX_L4_CKSUM_GOOD`).
    Verified,
    /// The sender left it to offload (`VIRTIO_NET_HDR_F_NEEDS_CSUM`, `TP_STATUS_CSUMNOTREADY`): the
    /// field holds only the pseudo-header sum. The frame never crossed a wire, so it is trusted.
    Partial,
    /// The device found it wrong (`RTE_MBUF_F_RX_L4_CKSUM_BAD`): drop the frame.
    Bad,
}

/// A segmentation request or report for a TCP super-frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gso {
    /// Payload bytes per wire segment (the MSS the super-frame is cut at).
    pub segment_size: u16,
    pub ipv6: bool,
}

/// Metadata of a received frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxMeta {
    pub csum: RxCsum,
    /// The frame is a GRO super-frame (its IP length may exceed the MTU); informational.
    pub gso: Option<Gso>,
}

/// Metadata of a frame to send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxMeta {
    /// L4 checksum left to the device: `(start, offset)` from the frame's first byte; the field
    /// holds the pseudo-header sum (not complemented), as `CHECKSUM_PARTIAL` expects.
    pub csum: Option<(u16, u16)>,
    /// Cut this TCP super-frame into segments of `segment_size` (TSO/GSO).
    pub gso: Option<Gso>,
}

/// What a device can do for the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceCaps {
    /// IP MTU of the link (1500 on Ethernet).
    pub mtu: usize,
    /// The device fills L4 checksums of frames sent with [`TxMeta::csum`].
    pub tx_csum: bool,
    /// The device cuts TCP super-frames sent with [`TxMeta::gso`] (implies `tx_csum`).
    pub tso: bool,
    /// Largest frame (Ethernet header included) the engine may hand over with `gso` set.
    pub max_tso_frame: usize,
}

impl Default for DeviceCaps {
    fn default() -> Self {
        DeviceCaps {
            mtu: 1500,
            tx_csum: false,
            tso: false,
            max_tso_frame: 1514,
        }
    }
}
