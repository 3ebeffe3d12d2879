//! Urgent data (RFC 9293 3.8.5 with the BSD pointer, as Linux implements it): the byte before
//! the urgent pointer is the urgent one; one at a time, a later pointer superseding an earlier.
//!
//! Receiving (Linux's tcp_urg / tcp_check_urg): a segment's URG pointer names the urgent byte;
//! a pointer to data already received, or not beyond the last one, is ignored. The byte is taken
//! from whichever segment carries it. The bytes stay in the data (the engine delivers them in
//! order like any other); [`Tcb::urgent_in`] tells where the urgent one is relative to what was
//! handed over, and the application's side (snstack's host library) stops its reads there and
//! skips the byte unless `SO_OOBINLINE`.
//!
//! Sending (Linux's tcp_mark_urg and tcp_options_write): [`Tcb::mark_urgent`] puts the urgent
//! pointer after the last byte queued; every segment starting before it carries URG and the
//! pointer (0xFFFF when it lies further), and is kept to one MSS, since a device cutting a TSO
//! burst would copy the pointer unchanged into later segments. Urgent mode ends when the peer
//! acknowledged the pointer.

use crate::conn::{Effects, State, Tcb};
use crate::seq::Seq;
use crate::wire::tcp::{flags as F, TcpRepr};

/// The peer's last urgent byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RcvUrgent {
    /// Its sequence number.
    pub seq: Seq,
    /// Its value, once received.
    pub byte: Option<u8>,
    /// Urgent pointers taken so far (this one included).
    pub count: u32,
    /// The application's reads went past it.
    pub passed: bool,
}

/// [`Tcb::urgent_in`]: the peer's last urgent byte as the application's side needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UrgentView {
    pub count: u32,
    pub byte: Option<u8>,
    /// Bytes handed over (read, or passed to the direct sink) before the urgent one comes:
    /// 0 when it is next, negative when it was handed over that many bytes ago.
    pub ahead: i64,
}

impl Tcb {
    /// The sequence number of the next byte the application gets (a FIN taken is not a byte).
    fn copied_seq(&self) -> Seq {
        self.rcv_nxt - self.recvbuf.readable() as u32 - u32::from(self.fin_taken)
    }

    /// The URG bit of an acceptable segment, before its text is processed (RFC 9293 3.10.7.4,
    /// sixth check).
    pub(crate) fn check_urgent(&mut self, seg: &TcpRepr, payload: &[u8], fx: &mut Effects) {
        if !matches!(
            self.state,
            State::Established | State::FinWait1 | State::FinWait2
        ) {
            return;
        }
        if seg.flags & F::URG != 0 && seg.urgent != 0 {
            let up = seg.seq + (u32::from(seg.urgent) - 1);
            let copied = self.copied_seq();
            // A record the reader passed no longer bounds new pointers (Linux clears it then;
            // comparing with it forever would fail once sequence numbers wrapped).
            let stale = up < copied
                || up < self.rcv_nxt
                || self.rcv_urg.is_some_and(|u| !u.passed && up <= u.seq);
            if !stale {
                self.rcv_urg = Some(RcvUrgent {
                    seq: up,
                    byte: None,
                    count: self.rcv_urg.map_or(1, |u| u.count.wrapping_add(1)),
                    passed: false,
                });
                fx.notify = true;
            }
        }
        if let Some(u) = self.rcv_urg.as_mut().filter(|u| u.byte.is_none()) {
            if u.seq >= seg.seq {
                let off = seg.seq.dist(u.seq) as usize;
                if let Some(&b) = payload.get(off) {
                    u.byte = Some(b);
                    fx.notify = true;
                }
            }
        }
    }

    /// Reads moved on (`after_read`): a record they passed is retired.
    pub(crate) fn urgent_read(&mut self) {
        let copied = self.copied_seq();
        if let Some(u) = self
            .rcv_urg
            .as_mut()
            .filter(|u| !u.passed && u.seq < copied)
        {
            u.passed = true;
        }
    }

    /// The peer's last urgent byte, if any.
    pub fn urgent_in(&self) -> Option<UrgentView> {
        let u = self.rcv_urg?;
        Some(UrgentView {
            count: u.count,
            byte: u.byte,
            ahead: i64::from(u.seq - self.copied_seq()),
        })
    }

    /// Whether in-order data from `seq` on, `len` bytes, holds the urgent byte: it is not
    /// offered to the direct sink then, but buffered until the application's side asked about
    /// the urgent data (it must know the mark before it can read the byte).
    pub(crate) fn urgent_within(&self, seq: Seq, len: usize) -> bool {
        self.rcv_urg
            .is_some_and(|u| u.seq >= seq && u.seq.dist(seq + len as u32) > 0)
    }

    /// What readiness reports of urgent data: changes with every new pointer and when its byte
    /// arrives (0: none ever).
    pub fn urgent_gen(&self) -> u32 {
        self.rcv_urg
            .map_or(0, |u| u.count.wrapping_mul(2) | u32::from(u.byte.is_some()))
    }

    /// The urgent pointer goes after the last byte queued (`send(MSG_OOB)`).
    pub fn mark_urgent(&mut self) {
        if !self.sendbuf.is_empty() {
            self.snd_up = Some(self.data_end());
        }
    }

    /// Urgent mode is over once the peer acknowledged the pointer.
    pub(crate) fn urgent_acked(&mut self) {
        if self.snd_up.is_some_and(|up| up <= self.snd_una) {
            self.snd_up = None;
        }
    }

    /// The end of a segment starting at `s`: one MSS at most while it starts before the urgent
    /// pointer.
    pub(crate) fn urgent_clamp(&self, s: Seq, e: Seq) -> Seq {
        match self.snd_up {
            Some(up) if s < up && s.dist(e) > self.mss => s + self.mss,
            _ => e,
        }
    }

    /// URG and the pointer for a segment starting at `seq`.
    pub(crate) fn urgent_fields(&self, r: &mut TcpRepr) {
        let Some(up) = self.snd_up else {
            return;
        };
        if r.flags & F::SYN != 0 || r.seq >= up {
            return;
        }
        r.flags |= F::URG;
        r.urgent = u16::try_from(r.seq.dist(up)).unwrap_or(u16::MAX);
    }
}
