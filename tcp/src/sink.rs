//! Where in-order payload may go straight from a received frame: the application's buffer (the
//! agent's channel RX stream), skipping the connection's receive buffer, so received bytes are
//! copied once on their way from the wire to the host.
//!
//! The engine offers bytes only after the segment passed every check (sequence space, PAWS,
//! state), only when nothing is buffered before them (no unread bytes, no out-of-order ranges),
//! and only for sockets the application owns. Whatever the sink does not take is buffered as
//! usual; flow control is unchanged (the window is still the receive buffer's free space).

/// A consumer of in-order payload, keyed by the socket's token ([`crate::stack::Stack::set_token`]).
pub trait RxSink {
    /// Offers `data`, the next in-order bytes of the socket `token`; returns how many it took
    /// (a prefix; 0 when it has no room or does not want them).
    fn deliver(&mut self, token: u64, data: &[u8]) -> usize;
}

/// Takes nothing: every byte is buffered in the engine.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSink;

impl RxSink for NoSink {
    fn deliver(&mut self, _token: u64, _data: &[u8]) -> usize {
        0
    }
}
