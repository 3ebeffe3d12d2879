//! Between the payload API and the servers' logic: connections, outgoing queues, back-pressure.
//!
//! ```text
//!  poll ─► Input ─► Driver::input ──(queue below HIGH_WATER)──► Handler::message ─► OutQueue
//!                        │ (else, or behind older ones)              ▲
//!                        └─► backlog (messages copied: views end     │ replayed as room appears
//!                            at the next poll) ──────────────────────┘
//!  Driver::transmit ─► Transmit::send_vectored(pieces of at most writable(conn) bytes)
//! ```
//!
//! A message's view is valid only until the next poll, and a reply may be larger than the TX
//! ring (a 1 MB value, a large file): so replies go to a per-connection [`OutQueue`] (owned bytes,
//! or shared `Arc`s of cached files: never copied), and `transmit` hands the ring pieces of what
//! fits. While a connection's queue holds [`HIGH_WATER`] bytes or more, its further messages are
//! copied into its backlog instead of being run; they are run, in order, as the queue drains.
//! Nothing is dropped. After a reply that closes (QUIT, `Connection: close`), the connection's
//! further messages are ignored and it is closed once its queue is empty.
//!
//! Assumptions about the payload API (`snstack-payload`, planned), spelled out in [`Transmit`]:
//! `send_vectored` is all or nothing; `writable(conn)` tells how many bytes the TX ring takes
//! now; a `Writable(conn)` event follows a send that failed with `WouldBlock` once room appears;
//! `close` sends what was queued before the FIN, as `close(2)` on a socket does.

use crate::{http, kv, Action};
use std::collections::VecDeque;
use std::hash::Hash;
use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex};

/// A connection's outgoing queue stops taking replies (its messages wait in the backlog) at
/// this many bytes.
pub const HIGH_WATER: usize = 256 * 1024;
/// Bytes of requests a connection may have waiting in its backlog: a client that pipelines
/// without reading its replies is reset past this (as Redis does past its client output buffer
/// limit), instead of holding the server's memory without bound.
pub const BACKLOG_LIMIT: usize = 4 << 20;
/// Bodies shorter than this are copied into the queue's buffer: one slice instead of two.
const COPY_BELOW: usize = 2048;
/// At most this many slices per `send_vectored`.
const MAX_IOV: usize = 16;
/// How long a connection we half-closed after its last reply (QUIT, `Connection: close`) may
/// take to close its side before it is reset.
pub const LINGER_MS: u64 = 5_000;
/// Bytes a reply is first tried with, whole (a TX ring smaller than this says `EMSGSIZE`, and
/// the send is retried with what `writable` reports).
const OPTIMISTIC: usize = 64 * 1024;

/// A connection handle of the payload API: `Conn` is `Copy + Eq + Hash` with `index()`.
pub trait ConnId: Copy + Eq + Hash {
    /// The slot number: small, reused after close; the driver's tables are indexed by it.
    fn index(&self) -> u32;
}

/// The TX side of a poll group.
pub trait Transmit<C> {
    /// Bytes the connection's TX ring takes now.
    fn writable(&self, conn: C) -> usize;
    /// All of `bufs` or nothing: `Err(WouldBlock)` when the ring lacks room. Other errors mean
    /// the connection is gone (its `Closed` event follows).
    fn send_vectored(&self, conn: C, bufs: &[IoSlice<'_>]) -> io::Result<()>;
    /// Closes after what was sent leaves.
    fn close(&self, conn: C);
    /// Resets the connection (what was not sent is dropped).
    fn abort(&self, conn: C);
    /// Half-closes: FIN after what was sent leaves; the peer's bytes still arrive.
    fn shutdown(&self, conn: C);
}

/// The events of the payload API the driver uses.
#[derive(Debug)]
pub enum Input<'a, C> {
    Opened(C),
    Message { conn: C, data: &'a [u8], part: bool },
    Writable(C),
    Closed(C),
}

/// The application: one message in, replies into the connection's queue.
pub trait Handler {
    type Session: Default;
    fn message(
        &mut self,
        session: &mut Self::Session,
        data: &[u8],
        part: bool,
        out: &mut OutQueue,
    ) -> Action;
}

enum Seg {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
    Static(&'static [u8]),
}

impl Seg {
    fn bytes(&self) -> &[u8] {
        match self {
            Seg::Owned(v) => v,
            Seg::Shared(a) => a,
            Seg::Static(s) => s,
        }
    }
}

/// A connection's unsent replies: owned bytes and shared bodies, in order.
#[derive(Default)]
pub struct OutQueue {
    segs: VecDeque<Seg>,
    /// Bytes of the front segment already sent.
    sent: usize,
    /// Emptied buffers kept for the next replies (no allocation per reply once warm).
    spare: Vec<Vec<u8>>,
}

impl OutQueue {
    /// The buffer to append reply bytes to (after anything queued).
    pub fn buf(&mut self) -> &mut Vec<u8> {
        if !matches!(self.segs.back(), Some(Seg::Owned(_))) {
            let v = self.spare.pop().unwrap_or_default();
            self.segs.push_back(Seg::Owned(v));
        }
        match self.segs.back_mut() {
            Some(Seg::Owned(v)) => v,
            _ => unreachable!("an owned segment was just pushed"),
        }
    }

    /// Queues a shared body (copied when short).
    pub fn push_shared(&mut self, data: Arc<[u8]>) {
        if data.len() < COPY_BELOW {
            self.buf().extend_from_slice(&data);
        } else if !data.is_empty() {
            self.segs.push_back(Seg::Shared(data));
        }
    }

    pub fn push_static(&mut self, data: &'static [u8]) {
        if data.len() < COPY_BELOW {
            self.buf().extend_from_slice(data);
        } else {
            self.segs.push_back(Seg::Static(data));
        }
    }

    /// Unsent bytes.
    pub fn len(&self) -> usize {
        self.segs.iter().map(|s| s.bytes().len()).sum::<usize>() - self.sent
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slices covering the first `max` unsent bytes (at most `iov.len()` slices): (slices, bytes).
    fn gather<'a>(&'a self, max: usize, iov: &mut [IoSlice<'a>]) -> (usize, usize) {
        let (mut n, mut bytes) = (0, 0);
        for (i, seg) in self.segs.iter().enumerate() {
            if n == iov.len() || bytes == max {
                break;
            }
            let b = if i == 0 {
                &seg.bytes()[self.sent..]
            } else {
                seg.bytes()
            };
            let take = b.len().min(max - bytes);
            if take == 0 {
                continue;
            }
            iov[n] = IoSlice::new(&b[..take]);
            n += 1;
            bytes += take;
        }
        (n, bytes)
    }

    /// Drops `n` sent bytes from the front (and empty segments there).
    fn advance(&mut self, mut n: usize) {
        while let Some(front) = self.segs.front() {
            let left = front.bytes().len() - self.sent;
            if n < left {
                self.sent += n;
                return;
            }
            n -= left;
            self.sent = 0;
            if let Some(Seg::Owned(mut v)) = self.segs.pop_front() {
                if v.capacity() <= 64 * 1024 && self.spare.len() < 4 {
                    v.clear();
                    self.spare.push(v);
                }
            }
        }
    }
}

struct Slot<C, S> {
    conn: C,
    session: S,
    out: OutQueue,
    /// Messages not yet run (copied out of the RX ring), with their `part` flag.
    backlog: VecDeque<(Box<[u8]>, bool)>,
    /// Bytes in `backlog`.
    backlog_bytes: usize,
    /// Reset at the next transmit (backlog over [`BACKLOG_LIMIT`], or idle too long).
    abort: bool,
    /// The driver's clock ([`Driver::set_now`]) when the connection last sent something.
    last_input: u64,
    closing: bool,
    /// Half-closed after its closing reply (the driver's clock when that was): closed when the
    /// peer closes, reset after [`LINGER_MS`].
    lingering: Option<u64>,
    /// The connection ended (the peer closed, or it failed): close it once the replies to what
    /// it sent before are out (or cannot go out).
    ended: bool,
    /// Waiting for `Writable`.
    blocked: bool,
    /// In `Driver::dirty`.
    dirty: bool,
}

/// Per-group connection table and transmit logic, generic over the application.
pub struct Driver<C, H: Handler> {
    handler: H,
    slots: Vec<Option<Slot<C, H::Session>>>,
    dirty: Vec<u32>,
    scratch: Vec<u32>,
    live: usize,
    /// Milliseconds, from [`Driver::set_now`] (the driver reads no clock).
    now: u64,
}

impl<C: ConnId, H: Handler> Driver<C, H> {
    pub fn new(handler: H) -> Self {
        Self {
            handler,
            slots: Vec::new(),
            dirty: Vec::new(),
            scratch: Vec::new(),
            live: 0,
            now: 0,
        }
    }

    pub fn handler(&self) -> &H {
        &self.handler
    }

    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.live
    }

    /// The time (milliseconds on any monotonic clock) for what follows.
    pub fn set_now(&mut self, now_ms: u64) {
        self.now = now_ms;
    }

    /// Marks for a reset every connection half-closed more than [`LINGER_MS`] ago, and every
    /// connection that sent nothing for `idle_ms` while it has nothing of ours left to send (a peer holding a connection, or trickling a request that never
    /// completes, does not hold the server's slot and memory forever); the next
    /// [`Driver::transmit`] resets them. Returns how many.
    pub fn expire_idle(&mut self, idle_ms: u64) -> usize {
        let now = self.now;
        let mut n = 0;
        for slot in self.slots.iter_mut().flatten() {
            if slot
                .lingering
                .is_some_and(|t| now.saturating_sub(t) >= LINGER_MS)
                && !slot.abort
            {
                slot.abort = true;
                Self::mark_dirty(&mut self.dirty, slot);
                n += 1;
                continue;
            }
            if !slot.abort
                && slot.lingering.is_none()
                && slot.out.is_empty()
                && slot.backlog.is_empty()
                && now.saturating_sub(slot.last_input) >= idle_ms
            {
                slot.abort = true;
                Self::mark_dirty(&mut self.dirty, slot);
                n += 1;
            }
        }
        n
    }

    fn mark_dirty(dirty: &mut Vec<u32>, slot: &mut Slot<C, H::Session>) {
        if !slot.dirty {
            slot.dirty = true;
            dirty.push(slot.conn.index());
        }
    }

    /// One event from the poll. Replies are queued; call [`Driver::transmit`] after the batch.
    pub fn input(&mut self, input: Input<'_, C>) {
        match input {
            Input::Opened(conn) => {
                let i = conn.index() as usize;
                if self.slots.len() <= i {
                    self.slots.resize_with(i + 1, || None);
                }
                let fresh = Slot {
                    conn,
                    session: H::Session::default(),
                    out: OutQueue::default(),
                    backlog: VecDeque::new(),
                    backlog_bytes: 0,
                    abort: false,
                    last_input: self.now,
                    closing: false,
                    lingering: None,
                    ended: false,
                    blocked: false,
                    dirty: false,
                };
                if self.slots[i].replace(fresh).is_none() {
                    self.live += 1;
                }
            }
            Input::Message { conn, data, part } => {
                let Some(slot) = (match self.slots.get_mut(conn.index() as usize) {
                    Some(Some(s)) if s.conn == conn => Some(s),
                    _ => None,
                }) else {
                    return;
                };
                if slot.closing || slot.abort {
                    return;
                }
                slot.last_input = self.now;
                if !slot.backlog.is_empty() || slot.out.len() >= HIGH_WATER {
                    slot.backlog_bytes += data.len();
                    if slot.backlog_bytes > BACKLOG_LIMIT {
                        slot.backlog.clear();
                        slot.abort = true;
                    } else {
                        slot.backlog.push_back((data.into(), part));
                    }
                } else if self
                    .handler
                    .message(&mut slot.session, data, part, &mut slot.out)
                    == Action::CloseAfterReply
                {
                    slot.closing = true;
                }
                Self::mark_dirty(&mut self.dirty, slot);
            }
            Input::Writable(conn) => {
                let dirty = &mut self.dirty;
                if let Some(Some(slot)) = self.slots.get_mut(conn.index() as usize) {
                    if slot.conn == conn {
                        slot.blocked = false;
                        Self::mark_dirty(dirty, slot);
                    }
                }
            }
            Input::Closed(conn) => {
                // The group keeps the connection's slot until we close it: do so once the
                // replies to its last requests are sent (a peer that half-closed still reads
                // them), at once when nothing is left (transmit).
                let dirty = &mut self.dirty;
                if let Some(Some(slot)) = self.slots.get_mut(conn.index() as usize) {
                    if slot.conn == conn {
                        slot.ended = true;
                        slot.blocked = false;
                        Self::mark_dirty(dirty, slot);
                    }
                }
            }
        }
    }

    /// Marks every connection waiting for `Writable` for another try: a safety net for the idle
    /// path of the serve loop (a lost wake-up then costs a delay, not a stalled connection).
    pub fn retry_blocked(&mut self) {
        for slot in self.slots.iter_mut().flatten() {
            if slot.blocked {
                slot.blocked = false;
                Self::mark_dirty(&mut self.dirty, slot);
            }
        }
    }

    /// Sends what fits of every connection that has news, runs backlogs as queues drain, and
    /// closes connections whose closing reply has left.
    pub fn transmit<T: Transmit<C>>(&mut self, tx: &T) {
        let mut work = std::mem::take(&mut self.scratch);
        std::mem::swap(&mut work, &mut self.dirty);
        for &i in &work {
            let Some(Some(slot)) = self.slots.get_mut(i as usize) else {
                continue;
            };
            slot.dirty = false;
            if slot.abort {
                tx.abort(slot.conn);
                self.slots[i as usize] = None;
                self.live -= 1;
                continue;
            }
            if slot.blocked {
                continue;
            }
            match Self::pump(&mut self.handler, slot, tx) {
                Ok(()) => {}
                Err(()) => {
                    // The connection is gone: nothing more can be sent. Close it (its slot is
                    // ours until then) and drop its state.
                    tx.close(slot.conn);
                    self.slots[i as usize] = None;
                    self.live -= 1;
                    continue;
                }
            }
            if slot.out.is_empty() && slot.closing && !slot.ended {
                // The closing reply is out. Closing now would reset the connection when the
                // peer pipelined more requests (unread bytes), and a reset can destroy the
                // reply before the peer reads it: half-close instead (a lingering close, as
                // nginx and Apache do) and close when the peer does (or after LINGER_MS).
                if slot.lingering.is_none() {
                    tx.shutdown(slot.conn);
                    slot.lingering = Some(self.now);
                }
                continue;
            }
            if slot.out.is_empty() && (slot.closing || (slot.ended && slot.backlog.is_empty())) {
                tx.close(slot.conn);
                self.slots[i as usize] = None;
                self.live -= 1;
            }
        }
        work.clear();
        self.scratch = work;
    }

    /// Sends, then runs backlog while the queue is low, until blocked or out of work.
    fn pump<T: Transmit<C>>(
        handler: &mut H,
        slot: &mut Slot<C, H::Session>,
        tx: &T,
    ) -> Result<(), ()> {
        loop {
            while !slot.out.is_empty() {
                // Optimistically all of it (up to one ring's worth): asking for room first
                // reads the index the agent writes, a cache miss per reply. Only a refusal
                // (which also arms the `Writable` event) makes us ask and send what fits.
                let mut iov = [IoSlice::new(&[]); MAX_IOV];
                let (n, bytes) = slot.out.gather(OPTIMISTIC, &mut iov);
                let mut r = tx.send_vectored(slot.conn, &iov[..n]).map(|()| bytes);
                let refused = |e: &io::Error| {
                    e.kind() == io::ErrorKind::WouldBlock
                        || e.raw_os_error() == Some(libc::EMSGSIZE)
                };
                if matches!(&r, Err(e) if refused(e)) {
                    let room = tx.writable(slot.conn);
                    if room != 0 {
                        let (n, bytes) = slot.out.gather(room, &mut iov);
                        r = tx.send_vectored(slot.conn, &iov[..n]).map(|()| bytes);
                    }
                }
                match r {
                    Ok(bytes) => slot.out.advance(bytes),
                    Err(e) if refused(&e) => {
                        slot.blocked = true;
                        return Ok(());
                    }
                    Err(_) => return Err(()),
                }
            }
            if slot.closing || slot.backlog.is_empty() {
                return Ok(());
            }
            while slot.out.len() < HIGH_WATER {
                let Some((msg, part)) = slot.backlog.pop_front() else {
                    break;
                };
                slot.backlog_bytes -= msg.len();
                if handler.message(&mut slot.session, &msg, part, &mut slot.out)
                    == Action::CloseAfterReply
                {
                    slot.closing = true;
                    slot.backlog.clear();
                    break;
                }
            }
        }
    }
}

/// `snstack-kv`'s handler: one store shared by the group's threads (behind a mutex: multi-key
/// commands stay atomic; a sharded store is for later), `now` set by the serve loop.
pub struct Kv {
    pub server: Arc<Mutex<kv::Server>>,
    /// Milliseconds of the serve loop's monotonic clock, refreshed once per poll.
    pub now: kv::Millis,
}

impl Handler for Kv {
    type Session = kv::Session;

    fn message(
        &mut self,
        session: &mut kv::Session,
        data: &[u8],
        part: bool,
        out: &mut OutQueue,
    ) -> Action {
        let mut server = self.server.lock().unwrap_or_else(|p| p.into_inner());
        server.handle_message(session, self.now, data, part, out.buf())
    }
}

/// `snstack-http`'s handler: a server (and file cache) per thread, the `Date` value set by the
/// serve loop once a second.
pub struct Http {
    pub server: http::Server,
    pub date: String,
}

impl Handler for Http {
    type Session = http::Session;

    fn message(
        &mut self,
        session: &mut http::Session,
        data: &[u8],
        part: bool,
        out: &mut OutQueue,
    ) -> Action {
        let Some(reply) = self
            .server
            .handle_message(session, data, part, &self.date, out.buf())
        else {
            return Action::Continue;
        };
        match reply.body {
            http::Body::None => {}
            http::Body::Static(s) => out.push_static(s),
            http::Body::Shared(a) => out.push_shared(a),
        }
        reply.action
    }
}

#[cfg(test)]
mod tests;
