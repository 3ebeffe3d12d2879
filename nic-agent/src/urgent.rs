//! Urgent data (TCP `MSG_OOB`) on the agent's side, for every backend (docs/channel.md,
//! *Urgent data*).
//!
//! Receiving: the agent keeps, per socket, the peer's last urgent byte ([`UrgRx`]) and
//! publishes it to the active binding (`SockState::urgent`): its value and, once known, its
//! index in the RX stream, where the byte always is. The host does the rest as Linux does
//! (reads stop at the mark and skip the byte unless `SO_OOBINLINE`, `recv(MSG_OOB)`,
//! `SIOCATMARK`, `EPOLLPRI`). Backends that keep the byte in the data tell its place
//! exactly; the kernel's socket keeps it out of band, so the agent learns the place when its
//! reading reaches the mark and writes the byte there itself.
//!
//! Sending: `OP_TX_URG` marks a byte of a binding's TX stream as urgent; `sock::pump_tx` sends
//! the bytes before it as usual and the byte itself with [`Backend::send_urgent`].

use std::sync::atomic::Ordering;

use shm_proto::Urgent;

use crate::backend::{Backend, UrgentIn};
use crate::channel::Channel;
use crate::session::Violation;
use crate::sock::Sock;

/// The peer's last urgent byte as the agent knows and published it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UrgRx {
    /// Published generation (new urgent data, new generation).
    pub gen: u16,
    /// The backend's count for it, when the backend keeps one.
    pub seq: Option<u32>,
    pub byte: Option<u8>,
    /// Its index in the active binding's RX stream.
    pub mark: Option<u32>,
    /// Kernel: the agent wrote the byte into the stream and the OS socket still sits at the
    /// mark (its next receive skips the byte).
    pub skip: bool,
}

impl UrgRx {
    /// The word published in `SockState::urgent`.
    pub fn word(&self) -> u64 {
        Urgent {
            gen: self.gen,
            byte: self.byte,
            mark: self.mark,
        }
        .pack()
    }

    /// Whether the next receive must ask the backend first: the byte's place is not known
    /// yet, or the OS socket has not passed the byte the agent wrote.
    pub fn watching(&self) -> bool {
        self.mark.is_none() || self.skip
    }
}

/// What [`note`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Noted {
    /// The published word changed: the active binding needs it.
    pub changed: bool,
    /// New urgent data: `SIGURG` for the socket's owner.
    pub fresh: bool,
}

/// Whether `q` is urgent data other than `cur`.
fn is_fresh(cur: Option<&UrgRx>, q: &UrgentIn) -> bool {
    let Some(u) = cur else {
        return true;
    };
    match q.seq {
        Some(seq) => u.seq != Some(seq),
        // The kernel keeps one urgent pointer: data other than ours once the agent passed its
        // mark, or when the byte at the mark it still sits at changed (a second urgent byte
        // right behind the first; two equal ones in a row are taken for one).
        None => match (u.mark, u.skip) {
            // Its place not found yet: a different byte is a newer pointer (the kernel keeps
            // only the last).
            (None, _) => q.byte.is_some() && u.byte.is_some() && q.byte != u.byte,
            (Some(_), true) => q.ahead != Some(0) || (q.byte.is_some() && q.byte != u.byte),
            (Some(_), false) => true,
        },
    }
}

/// Asks the backend about socket `s`'s urgent data and records it; for a backend that keeps
/// the byte out of band, writes it into the RX stream of `slot` at `rx_tail` when the OS
/// socket is at the mark (and the stream has room; otherwise the next receive tries again).
/// Called by `sock::pump_rx`, which publishes the tail.
pub fn note<B: Backend>(
    b: &mut B,
    s: &mut Sock<B::Sock>,
    chan: &mut Channel,
    slot: u32,
    rx_tail: &mut u32,
) -> Result<Noted, Violation> {
    let q = match b.urgent_in(&s.os) {
        Ok(Some(q)) => q,
        Ok(None) => {
            // None pending: the OS socket is past whatever the agent wrote.
            if let Some(u) = s.urg.as_mut() {
                u.skip = false;
            }
            return Ok(Noted::default());
        }
        Err(e) => {
            tracing::debug!("urgent data: {e}");
            return Ok(Noted::default());
        }
    };
    let fresh = is_fresh(s.urg.as_ref(), &q);
    let before = s.urg.map(|u| u.word());
    let region = *chan.region();
    let (Some(rx), Some(ctl)) = (region.rx(slot), region.sock(slot)) else {
        return Err(Violation::SlotOutOfRange {
            slot,
            max: region.geometry().max_sockets,
        });
    };
    if let (true, Some(UrgRx { mark: Some(m), .. })) = (fresh, s.urg) {
        // A newer urgent byte supersedes one the reader sits at, unread, with data after it:
        // Linux drops the old byte (tcp_check_urg) unless SO_OOBINLINE: the reader's head moves
        // past it (a CAS: a host read wins). (The backends drop their own copy; the one in the
        // host's stream is the agent's to drop.)
        let inline = ctl.host.0.oob_inline.load(Ordering::Relaxed) != 0;
        // (The old byte must be in the stream: the head never passes the tail.)
        let received = rx.used(m, *rx_tail).is_ok_and(|n| n >= 1);
        if !inline && received && rx.load_head() == m {
            rx.cas_head(m, m.wrapping_add(1));
        }
    }
    let mut u = match s.urg {
        Some(u) if !fresh => u,
        old => UrgRx {
            gen: Urgent::next_gen(old.map_or(0, |u| u.gen)),
            seq: q.seq,
            ..UrgRx::default()
        },
    };
    if q.byte.is_some() {
        u.byte = q.byte;
    }
    if u.mark.is_none() {
        match (q.inline, q.ahead) {
            (true, Some(a)) => {
                let m = rx_tail.wrapping_add(a as u32);
                u.mark = Some(m);
                if u.byte.is_none() && a < 0 {
                    // Handed over already: it is in the stream.
                    let mut v = [0u8];
                    rx.copy_out(m, &mut v);
                    u.byte = Some(v[0]);
                }
            }
            (false, Some(0)) if s.stash.is_empty() => {
                if let Some(byte) = u.byte {
                    if rx.writable(*rx_tail)? > 0 {
                        rx.copy_in(*rx_tail, &[byte]);
                        u.mark = Some(*rx_tail);
                        u.skip = true;
                        // Published (and counted) with the bytes around it by pump_rx.
                        *rx_tail = rx_tail.wrapping_add(1);
                    }
                }
            }
            _ => {}
        }
    }
    s.urg = Some(u);
    let changed = before != Some(u.word());
    if changed {
        chan.dirty(slot);
    }
    Ok(Noted { changed, fresh })
}
