//! Agent-side state of one offloaded socket and the data path between its backend socket and its
//! RX/TX byte streams in the region.
//!
//! ```text
//!   backend socket --readv--> RX stream [rx_tail owned here] --> host read()
//!   host write() --> TX stream [tx_head owned here] --sendmsg--> backend socket
//! ```
//!
//! The agent keeps its own copies of the indices it owns (`rx_tail`, `tx_head`) and validates the
//! host's (`rx_head`, `tx_tail`) on every use; a violation drops the channel.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{fence, Ordering};
use std::time::Instant;

use shm_proto::*;

use crate::backend::{Backend, IoBuf};
use crate::channel::Channel;
use crate::session::Violation;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Fresh,
    Listening,
    Connecting,
    Connected,
}

/// Accept queue of a listener.
pub struct Listener<S> {
    /// Connections the agent accepted that no host `accept` took yet.
    pub queue: VecDeque<(S, SocketAddr)>,
    /// Queue limit; the rest waits in the kernel's backlog.
    pub cap: usize,
    /// Tags of `CF_WAIT` accepts waiting for a connection, oldest first.
    pub parked: VecDeque<u64>,
    /// The kernel may hold more connections (we stopped at `cap`).
    pub kernel_pending: bool,
}

pub struct Sock<S> {
    pub os: S,
    pub domain: i32,
    pub kind: Kind,
    /// Our copy of `SockState::flags` (we are its only writer).
    pub flags: u32,
    pub registered: bool,
    pub rx_tail: u32,
    pub tx_head: u32,
    /// End of stream or error seen: nothing more to read.
    pub rx_done: bool,
    /// Error seen: no more I/O at all.
    pub io_dead: bool,
    /// Host asked for SHUT_WR: shut the backend socket once TX is empty.
    pub shut_wr_pending: bool,
    /// Tag of a parked `CF_WAIT` connect.
    pub connect_tag: Option<u64>,
    pub listener: Option<Listener<S>>,
    /// `SO_REUSEPORT` is set (as the host asked).
    pub reuseport: bool,
    /// Port registered in the reuseport table while bound.
    pub reuse_port_bound: Option<u16>,
    /// `SO_LINGER` with a timeout, kept here: a lingering close would block the agent.
    pub linger: Option<[u8; 8]>,
    /// Set while draining after the host's close.
    pub drain_deadline: Option<Instant>,
}

impl<S> Sock<S> {
    pub fn new(os: S, domain: i32) -> Self {
        Sock {
            os,
            domain,
            kind: Kind::Fresh,
            flags: 0,
            registered: false,
            rx_tail: 0,
            tx_head: 0,
            rx_done: false,
            io_dead: false,
            shut_wr_pending: false,
            connect_tag: None,
            listener: None,
            reuseport: false,
            reuse_port_bound: None,
            linger: None,
            drain_deadline: None,
        }
    }

    /// Updates the shared flags and marks the socket dirty.
    pub fn set_flags(&mut self, chan: &mut Channel, slot: u32, set: u32, clear: u32) {
        let f = (self.flags & !clear) | set;
        if f != self.flags {
            self.flags = f;
            if let Some(ctl) = chan.region().sock(slot) {
                ctl.state.0.flags.store(f, Ordering::SeqCst);
            }
        }
        chan.dirty(slot);
    }

    /// Publishes an asynchronous socket error (`SO_ERROR`).
    pub fn post_error(&mut self, chan: &mut Channel, slot: u32, errno: i32, set: u32, clear: u32) {
        if let Some(ctl) = chan.region().sock(slot) {
            ctl.state.0.error.store(errno as u32, Ordering::SeqCst);
            ctl.state.0.error_seq.fetch_add(1, Ordering::SeqCst);
        }
        self.set_flags(chan, slot, SF_ERROR | set, clear);
    }

    /// The connection is dead (reset, timed out, ...): report it, stop all I/O.
    pub fn fail(&mut self, chan: &mut Channel, slot: u32, errno: i32) {
        self.io_dead = true;
        self.rx_done = true;
        self.shut_wr_pending = false;
        let mut set = SF_TX_SHUT | SF_RX_FIN;
        if errno == libc::ECONNRESET {
            set |= SF_RESET;
        }
        self.post_error(chan, slot, errno, set, 0);
    }

    /// Bytes the host published in TX that we have not sent.
    pub fn tx_pending(&self, chan: &Channel, slot: u32) -> Result<u32, Violation> {
        let tx = chan
            .region()
            .tx(slot)
            .ok_or(Violation::SlotOutOfRange { slot, max: 0 })?;
        Ok(tx.used(self.tx_head, tx.load_tail())?)
    }
}

fn iovs(s: &Stream, at: u32, len: u32) -> ([IoBuf; 2], usize) {
    let p = s.pieces(at, len);
    let mk = |(off, len): (usize, usize)| IoBuf {
        iov_base: s.ptr(off).cast(),
        iov_len: len,
    };
    let v = [mk(p[0]), mk(p[1])];
    (v, if p[1].1 == 0 { 1 } else { 2 })
}

/// Moves bytes from the backend socket into the RX stream until it would block, the stream is
/// full, or the stream ended. One publication per call (coalescing what arrived).
pub fn pump_rx<B: Backend>(
    b: &mut B,
    chan: &mut Channel,
    slot: u32,
    s: &mut Sock<B::Sock>,
) -> Result<(), Violation> {
    if s.kind != Kind::Connected || s.rx_done || s.io_dead {
        return Ok(());
    }
    let region = *chan.region();
    let (Some(rx), Some(ctl)) = (region.rx(slot), region.sock(slot)) else {
        return Err(Violation::SlotOutOfRange {
            slot,
            max: region.geometry().max_sockets,
        });
    };
    let start = s.rx_tail;
    let mut fin = false;
    let mut err = None;
    loop {
        let mut free = rx.writable(s.rx_tail)?;
        if free == 0 {
            // Tell the host to send OP_RX_SPACE after it consumes, then look again: the host may
            // have consumed between our check and the store (Dekker pair with its swap).
            ctl.state.0.rx_blocked.store(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            free = rx.writable(s.rx_tail)?;
            if free == 0 {
                break;
            }
            ctl.state.0.rx_blocked.store(0, Ordering::SeqCst);
        }
        let (iov, n) = iovs(&rx, s.rx_tail, free);
        // SAFETY: the pieces are the free part of this slot's RX stream inside the live mapping;
        // the host never writes there (it only reads up to the published tail) and no Rust
        // reference to that memory exists.
        match unsafe { b.recv(&s.os, &iov[..n]) } {
            Ok(0) => {
                fin = true;
                break;
            }
            Ok(k) => s.rx_tail = s.rx_tail.wrapping_add(k.min(free as usize) as u32),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                err = Some(e.raw_os_error().unwrap_or(libc::EIO));
                break;
            }
        }
    }
    let moved = s.rx_tail.wrapping_sub(start);
    if moved != 0 {
        rx.publish_tail(s.rx_tail);
        chan.counters.n2h_bytes += u64::from(moved);
        chan.counters.n2h_ops += 1;
        chan.dirty(slot);
    }
    if fin {
        s.rx_done = true;
        s.set_flags(chan, slot, SF_RX_FIN, 0);
    }
    if let Some(e) = err {
        s.fail(chan, slot, e);
    }
    Ok(())
}

/// Sends what the host published in TX until it would block or TX is empty. Returns true when
/// TX is empty (or can never drain because the connection died).
pub fn pump_tx<B: Backend>(
    b: &mut B,
    chan: &mut Channel,
    slot: u32,
    s: &mut Sock<B::Sock>,
) -> Result<bool, Violation> {
    if s.io_dead {
        return Ok(true);
    }
    if s.kind != Kind::Connected {
        return Ok(s.tx_pending(chan, slot)? == 0);
    }
    let region = *chan.region();
    let Some(tx) = region.tx(slot) else {
        return Err(Violation::SlotOutOfRange {
            slot,
            max: region.geometry().max_sockets,
        });
    };
    let start = s.tx_head;
    let mut empty = false;
    let mut err = None;
    loop {
        let used = tx.used(s.tx_head, tx.load_tail())?;
        if used == 0 {
            empty = true;
            break;
        }
        let (iov, n) = iovs(&tx, s.tx_head, used);
        // SAFETY: the pieces lie in this slot's TX stream inside the live mapping; the kernel only
        // reads them and no Rust reference to that memory exists.
        match unsafe { b.send(&s.os, &iov[..n]) } {
            Ok(k) => s.tx_head = s.tx_head.wrapping_add(k.min(used as usize) as u32),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                err = Some(e.raw_os_error().unwrap_or(libc::EIO));
                break;
            }
        }
    }
    let moved = s.tx_head.wrapping_sub(start);
    if moved != 0 {
        tx.publish_head(s.tx_head);
        chan.counters.h2n_bytes += u64::from(moved);
        chan.dirty(slot);
    }
    if let Some(e) = err {
        s.fail(chan, slot, e);
        return Ok(true);
    }
    if empty && s.shut_wr_pending {
        s.shut_wr_pending = false;
        if let Err(e) = b.shutdown(&s.os, libc::SHUT_WR) {
            tracing::debug!(slot, "shutdown(SHUT_WR) after drain: {e}");
        }
    }
    Ok(empty)
}
