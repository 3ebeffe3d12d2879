//! kTLS RX in the region: what the agent tells the host about the bytes of a socket whose
//! program handed its receive keys to the agent (`setsockopt(SOL_TLS, TLS_RX)`), in one 32-bit
//! word, `SockState::tls_rx` (docs/channel.md, *kTLS RX*).
//!
//! The agent opens the records and writes their plaintext into the RX stream. Application data
//! flows as bytes; every other record type (alerts, TLS 1.3 handshake messages such as
//! NewSessionTicket and KeyUpdate) must reach the program alone, with its type, as Linux's
//! `recvmsg` returns it with a `TLS_GET_RECORD_TYPE` control message. So the agent writes such a
//! record only into an *empty* stream (the host read everything before it), stores
//! [`TlsRx::Control`] before it publishes the tail after the record, and writes nothing more until
//! the host's head reached that tail; then it stores [`TlsRx::Data`] before publishing anything
//! else. An error (a record that failed to open) is stored the same way, once the stream is empty,
//! and stays.
//!
//! The host therefore loads the RX tail (Acquire) first and the word after it: whatever it finds
//! readable then is application data (`Data`), the control record's plaintext, or nothing
//! (`Control`: a tail read before the agent's publication shows no byte; `Error`: the stream is
//! empty for good and reads fail with the errno).

/// Bit 31: the readable bytes are one control record (type in bits 0..8).
const CONTROL: u32 = 1 << 31;
/// Bit 30: RX failed for good (errno in bits 0..16).
const ERROR: u32 = 1 << 30;

/// What the readable bytes of a kTLS RX stream are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsRx {
    /// Application data (also: no kTLS RX at all).
    #[default]
    Data,
    /// One record of this content type (never 23, application data), alone in the stream.
    Control(u8),
    /// Opening failed with this errno: the stream holds nothing more, reads fail with it.
    Error(u16),
}

impl TlsRx {
    pub fn pack(self) -> u32 {
        match self {
            TlsRx::Data => 0,
            TlsRx::Control(t) => CONTROL | u32::from(t),
            TlsRx::Error(e) => ERROR | u32::from(e),
        }
    }

    /// Any word the agent may have written; one with both bits (never written) reads as an
    /// error (`EIO`), so a scribbled word can only stop a read, never mislabel bytes as data.
    pub fn unpack(w: u32) -> TlsRx {
        match (w & CONTROL != 0, w & ERROR != 0) {
            (false, false) => TlsRx::Data,
            (true, false) => TlsRx::Control(w as u8),
            (false, true) => TlsRx::Error(w as u16),
            (true, true) => TlsRx::Error(5),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for v in [
            TlsRx::Data,
            TlsRx::Control(21),
            TlsRx::Control(22),
            TlsRx::Control(255),
            TlsRx::Error(74),
            TlsRx::Error(u16::MAX),
        ] {
            assert_eq!(TlsRx::unpack(v.pack()), v);
        }
        assert_eq!(TlsRx::Data.pack(), 0);
        assert_eq!(TlsRx::unpack(CONTROL | ERROR | 21), TlsRx::Error(5));
    }
}
