//! The completions the agent posts on the event ring, defined once for both sides.
//!
//! An [`Evt`] answers the command with the same `tag`: `result` is a value or `-errno`, and
//! `data` holds a [`Payload`] whose shape depends on the request it answers (the host knows which,
//! it sent the request). The agent builds events with [`Evt::completion`]; the host reads the
//! payload back with [`Evt::addr`], [`Evt::value`] or [`Evt::secret`]. `data` is written by the
//! agent, so to the host it is untrusted: the readers bound every length and never panic.

use crate::addr::WireAddr;
use crate::layout::{Evt, EV_COMPLETION};

/// Bytes of `Evt::data`.
pub const EVT_DATA: usize = 40;

/// What a completion carries in `Evt::data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    None,
    /// `OP_ACCEPT` (the peer), `OP_GETSOCKNAME`, `OP_GETPEERNAME`: a [`WireAddr`] in
    /// `data[..WireAddr::LEN]`.
    Addr(WireAddr),
    /// `OP_GETSOCKOPT` without `CF_OPTBUF`: the value's bytes (`result` says how many).
    Value(&'a [u8]),
    /// `OP_FORK`: the ticket's secret, little-endian in `data[..8]`.
    Secret(u64),
}

impl Payload<'_> {
    /// Writes the payload into `data` (the rest stays zero). A value longer than `data` is cut.
    pub fn encode(&self, data: &mut [u8; EVT_DATA]) {
        *data = [0; EVT_DATA];
        match *self {
            Payload::None => {}
            Payload::Addr(w) => data[..WireAddr::LEN].copy_from_slice(&w.encode()),
            Payload::Value(v) => {
                let n = v.len().min(EVT_DATA);
                data[..n].copy_from_slice(&v[..n]);
            }
            Payload::Secret(s) => data[..8].copy_from_slice(&s.to_le_bytes()),
        }
    }
}

impl Evt {
    /// The completion of the command `tag` on `slot`.
    pub fn completion(tag: u64, slot: u32, result: i64, payload: Payload<'_>) -> Evt {
        let mut e = Evt {
            kind: EV_COMPLETION,
            slot,
            tag,
            result,
            ..Default::default()
        };
        payload.encode(&mut e.data);
        e
    }

    /// The [`Payload::Addr`] of this completion. Its family is not checked here: the reader
    /// converts it (`TryFrom`) or copies it out as a sockaddr.
    pub fn addr(&self) -> WireAddr {
        WireAddr::decode(&self.data[..WireAddr::LEN])
    }

    /// The [`Payload::Value`] of a successful completion: `result` bytes, bounded by `data`.
    pub fn value(&self) -> &[u8] {
        let n = usize::try_from(self.result).unwrap_or(0).min(EVT_DATA);
        &self.data[..n]
    }

    /// The [`Payload::Secret`] of this completion.
    pub fn secret(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.data[..8]);
        u64::from_le_bytes(b)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use core::net::SocketAddr;

    #[test]
    fn payloads_round_trip() {
        let a: SocketAddr = "[2001:db8::7]:8443".parse().unwrap();
        let e = Evt::completion(5, 2, 9, Payload::Addr(a.into()));
        assert_eq!((e.kind, e.tag, e.slot, e.result), (EV_COMPLETION, 5, 2, 9));
        assert_eq!(SocketAddr::try_from(e.addr()), Ok(a));

        let e = Evt::completion(5, 2, 4, Payload::Value(&7i32.to_ne_bytes()));
        assert_eq!(e.value(), &7i32.to_ne_bytes());

        let e = Evt::completion(1, 0, 0, Payload::Secret(0x0102_0304_0506_0708));
        assert_eq!(e.secret(), 0x0102_0304_0506_0708);
        assert_eq!(e.data[0], 8, "little-endian");

        let e = Evt::completion(1, 0, -11, Payload::None);
        assert_eq!(e.data, [0; EVT_DATA]);
        assert_eq!(e.value(), &[] as &[u8]);
    }

    #[test]
    fn hostile_results_stay_in_bounds() {
        let mut e = Evt::completion(1, 0, 0, Payload::Value(&[1; 64]));
        assert_eq!(e.data, [1; EVT_DATA]);
        e.result = i64::MAX;
        assert_eq!(e.value().len(), EVT_DATA);
        e.result = i64::MIN;
        assert!(e.value().is_empty());
    }
}
