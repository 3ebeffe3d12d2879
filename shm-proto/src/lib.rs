//! The host <-> NIC channel of snstack.
//!
//! One *region* per attached host process: a memfd that the agent creates, sizes and initialises, and
//! that both sides map `MAP_SHARED`. It stands in for the PCIe BAR/DMA window of a real SmartNIC, so it
//! carries only commands, completions and payload bytes; never headers, never pointers.
//!
//! ```text
//!  offset 0      Header (magic, version, geometry, agent-written counters, the agent's wake line)
//!  cmd_off       RingHdr + [Cmd; cmd_entries]      host -> NIC commands (64 B each)
//!  evt_off       RingHdr + [Evt; evt_entries]      NIC -> host completions (64 B each)
//!  waiter_off    [Waiter; MAX_WAITERS]             epoll/poll sleepers and their doorbells
//!  changed_off   [bitmap; MAX_WAITERS]             per waiter: one bit per socket slot that changed
//!  opt_off       [[u8; OPT_SIZE]; OPT_CELLS]       large socket option values
//!  sock_off      [SockCtl; max_sockets]            per-socket indices, state, futex word
//!  stream_off    per slot: RX bytes (rx_size) then TX bytes (tx_size)
//! ```
//!
//! Every index, offset and length one side reads from the other is untrusted: rings and streams
//! validate `tail - head <= capacity` and mask positions before use, and report [`Corrupt`] instead of
//! reading out of bounds. This crate holds no OS code; the endpoints (`preload`, `nic-agent`) map the
//! memory and provide futex/eventfd doorbells. See `docs/channel.md` for the protocol.

#![cfg_attr(not(any(test, loom, feature = "std")), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod addr;
#[cfg(feature = "std")]
pub mod attach;
pub mod changed;
pub mod completion;
pub mod handoff;
pub mod layout;
pub mod msg;
pub mod prefetch;
mod primitive;
pub mod record;
pub mod region;
pub mod request;
pub mod ring;
pub mod stream;
pub mod tlsrx;
pub mod urgent;
pub mod wake;

pub use addr::{Addr, WireAddr};
pub use completion::Payload;
pub use layout::*;
pub use region::{Region, RegionError};
pub use request::{DecodeError, OptVal, Request};
pub use ring::{Consumer, Producer};
pub use stream::Stream;
pub use tlsrx::TlsRx;
pub use urgent::{Owner, Urgent};

/// The peer wrote an index or length that cannot be true. The reader must drop the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corrupt(pub &'static str);

impl core::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "channel corrupt: {}", self.0)
    }
}
