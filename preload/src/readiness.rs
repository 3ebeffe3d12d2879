//! Readiness of an offloaded socket, computed on the host from the indices and flags the agent
//! publishes in the region: no syscall, no lock. `ops` (blocking calls), `epoll` and `poll` all
//! read it here, so none of them needs another.

use crate::sockref::S;
use crate::sys;
use core::sync::atomic::Ordering;
use shm_proto::*;

/// Minimum gap between two claims a poller (not a blocked reader) sends for one slot.
const CLAIM_GAP_NS: u64 = 200_000;

/// This process wants to read `s` and finds nothing: when the connection's bytes flow to another
/// process that holds it too (`SF_PASSIVE`), ask the agent to send them here. A blocked reader
/// (`force`) asks every time it is about to sleep; pollers at most every `CLAIM_GAP_NS`.
pub(crate) fn want_rx(s: &S, force: bool) {
    if !rx_elsewhere(s) {
        return;
    }
    let now = sys::clock_ns();
    let last = s.hs.claim_ns.load(Ordering::Relaxed);
    if !force && last != 0 && now.wrapping_sub(last) < CLAIM_GAP_NS {
        return;
    }
    s.hs.claim_ns.store(now, Ordering::Relaxed);
    let _ = s.c.post(s.slot, Request::RxClaim);
}

/// The connection's bytes flow to another process holding it (`SF_PASSIVE`): readers here must
/// claim them (`want_rx`).
pub(crate) fn rx_elsewhere(s: &S) -> bool {
    let fl = s.ctl.state.0.flags.load(Ordering::Acquire);
    fl & SF_PASSIVE != 0 && fl & SF_CONNECTED != 0
}

/// Current readiness of a socket as EPOLL* bits (identical to POLL* bits on Linux).
pub(crate) fn readiness(s: &S) -> u32 {
    let st = &s.ctl.state.0;
    let fl = st.flags.load(Ordering::Acquire);
    if s.c.is_dead() {
        // Agent gone: a listener never becomes ready again (reporting it would make an event
        // loop retry accept forever); a connection reports the error so that it gets closed.
        if fl & SF_LISTENING != 0 {
            return 0;
        }
        return (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLERR | libc::EPOLLHUP | libc::EPOLLRDHUP)
            as u32;
    }
    let mut ev = 0u32;
    if fl & SF_LISTENING != 0 {
        if st.accept_ready.load(Ordering::Acquire) > 0 || handoffs_waiting(s) {
            ev |= (libc::EPOLLIN | libc::EPOLLRDNORM) as u32;
        }
        return ev;
    }
    let rx_avail =
        s.c.region
            .rx(s.slot)
            .map(|rx| {
                rx.readable(s.ctl.rx_head.0.head.load(Ordering::Relaxed))
                    .unwrap_or(1)
            })
            .unwrap_or(0);
    let rx_end = fl & (SF_RX_FIN | SF_RX_SHUT | SF_ERROR) != 0;
    // At the urgent mark a read skips the urgent byte (no SO_OOBINLINE): that byte alone does
    // not make the socket readable (Linux's tcp_poll); it makes it EPOLLPRI.
    let rx_avail = if rx_avail == 1
        && crate::urgent::skips(s)
        && crate::urgent::mark_ahead(s, s.ctl.rx_head.0.head.load(Ordering::Relaxed)) == Some(0)
    {
        0
    } else {
        rx_avail
    };
    if crate::urgent::pri(s) {
        ev |= libc::EPOLLPRI as u32;
    }
    if rx_avail > 0 || rx_end {
        ev |= (libc::EPOLLIN | libc::EPOLLRDNORM) as u32;
    }
    if rx_end {
        ev |= libc::EPOLLRDHUP as u32;
    }
    if fl & SF_CONNECTED != 0 {
        let free =
            s.c.region
                .tx(s.slot)
                .map(|tx| s.tx_room(&tx).unwrap_or(0))
                .unwrap_or(0);
        if free > 0 || fl & SF_TX_SHUT != 0 {
            ev |= (libc::EPOLLOUT | libc::EPOLLWRNORM) as u32;
        }
    }
    if fl & SF_ERROR != 0 {
        ev |= (libc::EPOLLOUT | libc::EPOLLWRNORM | libc::EPOLLHUP) as u32;
        if error_pending(s) {
            ev |= libc::EPOLLERR as u32;
        }
    }
    if fl & SF_RX_FIN != 0 && fl & SF_TX_SHUT != 0 {
        ev |= libc::EPOLLHUP as u32;
    }
    if fl & (SF_CONNECTED | SF_CONNECTING | SF_ERROR) == 0 {
        // A socket that never connected: Linux reports OUT|HUP.
        ev |= (libc::EPOLLOUT | libc::EPOLLWRNORM | libc::EPOLLHUP) as u32;
    }
    ev
}

/// `s` is being reported `ev`: ask for the lines the application's next read and write will
/// touch (the message's first bytes, our RX head, our TX producer line and the line the reply
/// goes to), so that across a batch of ready sockets their misses overlap instead of coming one
/// per call (shm_proto::prefetch; a hint, never a fault).
pub(crate) fn prefetch_io(s: &S, ev: u32) {
    use shm_proto::prefetch;
    if ev & libc::EPOLLIN as u32 != 0 {
        if let Some(rx) = s.c.region.rx(s.slot) {
            let head = s.ctl.rx_head.0.head.load(Ordering::Relaxed);
            prefetch::read(rx.ptr(rx.pieces(head, 1)[0].0));
            prefetch::write(&s.ctl.rx_head);
        }
    }
    if let Some(tx) = s.c.region.tx(s.slot) {
        let tail = s.ctl.tx_prod.0.tail.load(Ordering::Relaxed);
        prefetch::write(&s.ctl.tx_prod);
        prefetch::write(tx.ptr(tx.pieces(tail, 1)[0].0));
    }
}

/// A listener has connections the agent handed to this process (shm_proto::handoff).
pub(crate) fn handoffs_waiting(s: &S) -> bool {
    // An error here is a head gone stale while other threads took records and the agent
    // refilled (records are there), or corruption, which the accept then reports (EIO).
    s.c.region.rx(s.slot).is_some_and(|rx| {
        rx.readable(s.ctl.rx_head.0.head.load(Ordering::Acquire))
            .map_or(true, |n| n > 0)
    })
}

/// Takes the oldest connection the agent handed to listener `s`, if any. A record naming a
/// slot outside the region is the agent's fault: EIO (the region is not trusted blindly
/// even from that side).
pub(crate) fn take_handoff(s: &S) -> Result<Option<handoff::Handoff>, i32> {
    let Some(rx) = s.c.region.rx(s.slot) else {
        return Ok(None);
    };
    match handoff::take(&rx) {
        Ok(Some(h)) if s.c.region.sock(h.slot).is_some() && h.slot != s.slot => Ok(Some(h)),
        Ok(Some(_)) | Err(_) => Err(libc::EIO),
        Ok(None) => Ok(None),
    }
}

/// A fingerprint of everything that can produce a new edge for EPOLLET.
pub(crate) fn edge_snapshot(s: &S) -> u64 {
    let st = &s.ctl.state.0;
    let a = s.ctl.rx_prod.0.tail.load(Ordering::Acquire) as u64;
    let b = s.ctl.tx_head.0.head.load(Ordering::Acquire) as u64;
    let c = st.flags.load(Ordering::Acquire) as u64;
    let d = st.accept_seq.load(Ordering::Acquire) as u64;
    let e = st.error_seq.load(Ordering::Acquire) as u64;
    // File bytes sent by reference free send budget as tx_head does.
    let f = st.tx_file_done.load(Ordering::Acquire);
    let g = st.urgent.load(Ordering::Acquire);
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for v in [a, b, c, d, e, f, g] {
        h = (h ^ v).wrapping_mul(0x0100_0000_01b3).rotate_left(29);
    }
    h
}

/// An error the application has not been told about yet (`SO_ERROR` unread): EPOLLERR.
pub(crate) fn error_pending(s: &S) -> bool {
    let st = &s.ctl.state.0;
    st.flags.load(Ordering::Acquire) & SF_ERROR != 0
        && st.error_seq.load(Ordering::Acquire) != s.hs.err_seen.load(Ordering::Acquire)
}
