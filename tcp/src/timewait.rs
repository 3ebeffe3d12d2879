//! TIME-WAIT without the connection: once a closed connection reaches TIME-WAIT and no
//! application holds it, the stack keeps only what the 2MSL wait needs (Linux's
//! `inet_timewait_sock`): the sequence numbers to re-ACK a retransmitted FIN, the timestamp
//! state for PAWS and for echoing, and the expiry. A few dozen bytes instead of a connection, so
//! a server closing 20,000 connections a second holds its 60 s of TIME-WAIT in tens of MiB.

use crate::seq::Seq;
use crate::time::Instant;
use crate::wire::tcp::{flags as F, TcpOptions, TcpRepr};

/// Linux's tcp_max_tw_buckets default on a machine of this size: past it, connections skip
/// TIME-WAIT (Linux logs "time wait bucket table overflow").
pub const MAX_TIME_WAIT: usize = 262_144;

#[derive(Clone, Copy, Debug)]
pub struct TimeWait {
    pub local_port: u16,
    pub remote_port: u16,
    pub snd_nxt: Seq,
    pub rcv_nxt: Seq,
    pub rcv_wscale: u8,
    /// (our TSval offset, the peer's last TSval) when timestamps are in use.
    pub ts: Option<(u32, u32)>,
    pub expires: Instant,
}

/// What a segment to a TIME-WAIT entry asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TwAction {
    Ignore,
    /// Re-ACK (a retransmitted FIN or data): restart the wait.
    Ack,
    /// An acceptable RST ends the wait (Linux's default, tcp_rfc1337 = 0).
    Kill,
    /// A new SYN above the old sequence space (or with a newer timestamp) may reopen the
    /// connection (RFC 6191): drop the entry and hand the SYN to the listener.
    Reopen,
}

impl TimeWait {
    pub fn on_segment(&mut self, now: Instant, seg: &TcpRepr, len: u32) -> TwAction {
        let has = |f: u8| seg.flags & f != 0;
        if has(F::RST) {
            return if seg.seq == self.rcv_nxt {
                TwAction::Kill
            } else {
                TwAction::Ignore
            };
        }
        if has(F::SYN) && !has(F::ACK) {
            let newer_ts = match (self.ts, seg.opts.timestamp) {
                (Some((_, recent)), Some((v, _))) => (v.wrapping_sub(recent) as i32) > 0,
                _ => false,
            };
            if seg.seq > self.rcv_nxt || newer_ts {
                return TwAction::Reopen;
            }
            return TwAction::Ack;
        }
        // PAWS (RFC 7323 5.3): an old duplicate is answered, not acted on.
        if let (Some((_, recent)), Some((v, _))) = (self.ts, seg.opts.timestamp) {
            if (v.wrapping_sub(recent) as i32) < 0 {
                return TwAction::Ack;
            }
        }
        if has(F::FIN) || len > 0 {
            self.expires = now + crate::conn::TIME_WAIT;
            if let (Some((off, _)), Some((v, _))) = (self.ts, seg.opts.timestamp) {
                self.ts = Some((off, v));
            }
            return TwAction::Ack;
        }
        TwAction::Ignore
    }

    /// The ACK this entry answers with.
    pub fn ack(&self, now: Instant) -> TcpRepr {
        let mut opts = TcpOptions::default();
        if let Some((off, recent)) = self.ts {
            opts.timestamp = Some(((now.as_millis() as u32).wrapping_add(off), recent));
        }
        TcpRepr {
            src_port: self.local_port,
            dst_port: self.remote_port,
            seq: self.snd_nxt,
            ack: self.rcv_nxt,
            flags: F::ACK,
            window: 0,
            urgent: 0,
            opts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    fn tw() -> TimeWait {
        TimeWait {
            local_port: 80,
            remote_port: 4000,
            snd_nxt: Seq(500),
            rcv_nxt: Seq(1000),
            rcv_wscale: 7,
            ts: Some((7, 100)),
            expires: Instant::from_millis(60_000),
        }
    }

    fn seg(flags: u8, seq: u32, ts: Option<u32>) -> TcpRepr {
        TcpRepr {
            flags,
            seq: Seq(seq),
            opts: TcpOptions {
                timestamp: ts.map(|v| (v, 0)),
                ..TcpOptions::default()
            },
            ..TcpRepr::default()
        }
    }

    #[test]
    fn fin_is_acked_and_restarts_the_wait() {
        let mut t = tw();
        let now = Instant::from_millis(10_000);
        assert_eq!(
            t.on_segment(now, &seg(F::FIN | F::ACK, 999, Some(101)), 1),
            TwAction::Ack
        );
        assert_eq!(t.expires, now + Duration::from_secs(60));
        let a = t.ack(now);
        assert_eq!((a.seq, a.ack, a.flags), (Seq(500), Seq(1000), F::ACK));
        assert_eq!(a.opts.timestamp, Some((10_007, 101)));
    }

    #[test]
    fn rst_and_syn_rules() {
        let mut t = tw();
        let now = Instant::from_millis(1);
        assert_eq!(
            t.on_segment(now, &seg(F::RST, 999, None), 0),
            TwAction::Ignore
        );
        assert_eq!(
            t.on_segment(now, &seg(F::RST, 1000, None), 0),
            TwAction::Kill
        );
        assert_eq!(
            t.on_segment(now, &seg(F::SYN, 5000, None), 0),
            TwAction::Reopen
        );
        assert_eq!(
            t.on_segment(now, &seg(F::SYN, 10, Some(200)), 0),
            TwAction::Reopen
        );
        assert_eq!(
            t.on_segment(now, &seg(F::SYN, 10, Some(50)), 0),
            TwAction::Ack
        );
        // PAWS: an old timestamp is re-ACKed, not acted on.
        assert_eq!(
            t.on_segment(now, &seg(F::ACK, 1000, Some(50)), 10),
            TwAction::Ack
        );
        assert_eq!(t.expires, Instant::from_millis(60_000));
    }
}
