//! Where a connection's unacknowledged bytes may live instead of its send buffer: in the
//! application's own byte stream (the agent's channel TX stream), "lent" to the engine. Segments
//! are then built by copying straight from that stream into the frame, so payload is copied once
//! on its way from the host to the wire, and the engine holds no copy of what it sent.
//!
//! The owner of the stream promises that the bytes from the lent index on stay as they were
//! appended until the engine reports them acknowledged ([`crate::stack::Stack::take_acked`]) or
//! takes them back into its own buffer ([`crate::stack::Stack::reclaim_tx`]).

use crate::stack::SockId;

/// A reader of lent streams, keyed by the engine's socket id.
pub trait TxSource {
    /// Copies `out.len()` bytes of socket `id`'s lent stream, starting at the stream's
    /// free-running index `index`, into `out`; false when `id` has no lent stream.
    fn copy_tx(&self, id: SockId, index: u32, out: &mut [u8]) -> bool;
}

/// No lent streams: every connection keeps its bytes in its send buffer.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSource;

impl TxSource for NoSource {
    fn copy_tx(&self, _id: SockId, _index: u32, _out: &mut [u8]) -> bool {
        false
    }
}
