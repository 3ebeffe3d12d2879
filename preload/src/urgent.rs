//! Urgent data (TCP `MSG_OOB`) on an offloaded socket, with Linux's semantics: one urgent byte,
//! the BSD urgent pointer (docs/channel.md, *Urgent data*).
//!
//! The agent publishes the peer's last urgent byte (`SockState::urgent`): its value once it
//! arrived and, once its reading reached it, its index in the RX stream, where the byte always
//! is. From that and this socket's RX head the host gives what Linux gives: reads stop at the
//! mark and skip the byte unless `SO_OOBINLINE` (`ops::recv_sock`), `recv(MSG_OOB)` returns it
//! once ([`recv_oob`]), `SIOCATMARK` ([`at_mark`]), `EPOLLPRI`/`POLLPRI`/`select`'s exception
//! set ([`pri`]). The mark is passed once the head went beyond it: then there is no urgent
//! data, as Linux clears it when the reader passed it. Sending (`MSG_OOB`): `ops::send_sock`
//! posts `OP_TX_URG` after the bytes; `SIGURG` goes to the `F_SETOWN` owner ([`set_owner`]),
//! sent by the agent.

use core::sync::atomic::Ordering;
use shm_proto::{Owner, Urgent};

use crate::sockref::S;

/// The published urgent data, unless this socket's reads passed its mark (recorded by
/// [`read_past`], so a mark left far behind never looks ahead again when the 32-bit stream
/// indices wrap).
fn word(s: &S) -> Option<Urgent> {
    let u = Urgent::unpack(s.ctl.state.0.urgent.load(Ordering::Acquire))?;
    (s.hs.urg_passed.load(Ordering::Relaxed) != u32::from(u.gen)).then_some(u)
}

/// The peer's urgent data as socket `s` sees it (none once its reads passed the mark).
pub(crate) fn current(s: &S) -> Option<Urgent> {
    let u = word(s)?;
    if let Some(m) = u.mark {
        let head = s.ctl.rx_head.0.head.load(Ordering::Acquire);
        if (m.wrapping_sub(head) as i32) < 0 {
            return None;
        }
    }
    Some(u)
}

/// Bytes a read from `head` takes before it reaches the urgent byte (`Some(0)`: it is next).
pub(crate) fn mark_ahead(s: &S, head: u32) -> Option<u32> {
    let u = word(s)?;
    let d = u.mark?.wrapping_sub(head);
    ((d as i32) >= 0).then_some(d)
}

/// A read moved the head from `from` to `to`: when that passed the mark, the urgent data is
/// over for this socket (Linux clears it when the reader passes the byte).
pub(crate) fn read_past(s: &S, from: u32, to: u32) {
    if let Some(u) = word(s) {
        if let Some(m) = u.mark {
            if m.wrapping_sub(from) < to.wrapping_sub(from) {
                s.hs.urg_passed.store(u32::from(u.gen), Ordering::Relaxed);
            }
        }
    }
}

/// Bytes a read from `head` could return: the stream's, less an urgent byte at the mark that it
/// would skip (a corrupt stream counts as readable: the read reports it).
pub(crate) fn readable_past_mark(s: &S, rx: &shm_proto::Stream, head: u32) -> u32 {
    let n = rx.readable(head).unwrap_or(1);
    if n > 0 && skips(s) && mark_ahead(s, head) == Some(0) {
        n - 1
    } else {
        n
    }
}

/// `EPOLLPRI`: an urgent byte arrived that `recv(MSG_OOB)` has not taken and reads did not pass.
pub(crate) fn pri(s: &S) -> bool {
    current(s).is_some_and(|u| {
        u.byte.is_some() && s.hs.urg_taken.load(Ordering::Relaxed) != u32::from(u.gen)
    })
}

/// `SIOCATMARK`.
pub(crate) fn at_mark(s: &S) -> bool {
    mark_ahead(s, s.ctl.rx_head.0.head.load(Ordering::Acquire)) == Some(0)
}

/// Whether reads skip the urgent byte at the mark (no `SO_OOBINLINE`).
pub(crate) fn skips(s: &S) -> bool {
    !s.hs.oob_inline.load(Ordering::Relaxed)
}

/// The agent carries urgent data (`FEAT_URGENT`): `send(MSG_OOB)` can be served.
pub(crate) fn supported(s: &S) -> bool {
    s.c.region.header().features.load(Ordering::Relaxed) & shm_proto::FEAT_URGENT != 0
}

/// `recv(MSG_OOB)`: the urgent byte into `first` (the first byte of the caller's buffer; `None`
/// for an empty one), as Linux's tcp_recv_urg: `EINVAL` with `SO_OOBINLINE`, with no urgent
/// byte or one already taken; `EAGAIN` (never blocking) while only its pointer came; 0 at end of
/// stream. Returns the count (1, or 0 for an empty buffer: `MSG_TRUNC`); `trunc` (the caller's
/// `MSG_TRUNC`): the byte is counted, not copied, as Linux does.
pub(crate) fn recv_oob(
    s: &S,
    first: Option<&mut u8>,
    peek: bool,
    trunc: bool,
) -> Result<usize, i32> {
    if !skips(s) {
        return Err(libc::EINVAL);
    }
    let Some(u) = current(s) else {
        return Err(libc::EINVAL);
    };
    if s.hs.urg_taken.load(Ordering::Relaxed) == u32::from(u.gen) {
        return Err(libc::EINVAL);
    }
    let Some(b) = u.byte else {
        let fl = s.ctl.state.0.flags.load(Ordering::Acquire);
        if fl & (shm_proto::SF_RX_FIN | shm_proto::SF_RX_SHUT | shm_proto::SF_ERROR) != 0 {
            return Ok(0);
        }
        return Err(libc::EAGAIN);
    };
    if !peek {
        s.hs.urg_taken.store(u32::from(u.gen), Ordering::Relaxed);
    }
    match first {
        Some(p) => {
            if !trunc {
                *p = b;
            }
            Ok(1)
        }
        None => Ok(0),
    }
}

/// A new socket in the slot: no urgent byte taken, no owner (an accepted socket keeps its
/// listener's `SO_OOBINLINE`, as Linux copies the flag).
pub(crate) fn reset(s_hs: &crate::sock::HostSock, ctl: &shm_proto::SockCtl, inline: bool) {
    s_hs.urg_taken.store(0, Ordering::Relaxed);
    s_hs.urg_passed.store(0, Ordering::Relaxed);
    s_hs.oob_inline.store(inline, Ordering::Relaxed);
    ctl.host
        .0
        .oob_inline
        .store(u32::from(inline), Ordering::Relaxed);
    s_hs.owner.store(0, Ordering::Relaxed);
    ctl.host.0.owner.store(0, Ordering::Release);
}

/// `SO_OOBINLINE`.
pub(crate) fn set_inline(s: &S, on: bool) {
    s.hs.oob_inline.store(on, Ordering::Relaxed);
    s.ctl
        .host
        .0
        .oob_inline
        .store(u32::from(on), Ordering::Relaxed);
}

/// `F_SETOWN`/`F_SETOWN_EX`: who gets `SIGURG`.
pub(crate) fn set_owner(s: &S, o: Option<Owner>) {
    let v = Owner::pack(o);
    s.hs.owner.store(v, Ordering::Relaxed);
    s.ctl.host.0.owner.store(v, Ordering::Release);
}

/// `F_GETOWN`/`F_GETOWN_EX`.
pub(crate) fn owner(s: &S) -> Option<Owner> {
    Owner::unpack(s.hs.owner.load(Ordering::Relaxed))
}
