//! Agent-side state of the offloaded sockets and the data path between a backend socket and the
//! RX/TX byte streams of its bindings.
//!
//! ```text
//!   SockTable: one Sock per OS socket (kind, flags, accept queue, bindings, ticket references)
//!   Session slot table: one Binding per (process, slot) naming a Sock; several processes may
//!   bind one Sock after fork (see docs/fork-model.md)
//!
//!   backend socket --readv--> RX stream of the ACTIVE binding [rx_tail owned here] --> read()
//!   host write() --> TX stream of ANY binding [tx_head owned here, per binding] --sendmsg--> socket
//!   host write() --> TX stream of the ONLY binding --lent--> engine builds frames from it
//! ```
//!
//! Lent TX (backends that build segments themselves, docs/channel.md): while a connection has
//! one binding, its TX stream is lent to the backend instead of copied into it. `tx_lent` marks
//! what was handed over; `tx_head` (what the host may overwrite) moves only when the peer
//! acknowledged the bytes, so the engine can read any unacknowledged byte again for a
//! retransmission. The loan ends (the backend copies what is unacknowledged) before the slot is
//! freed or a second binding appears.
//!
//! The agent keeps its own copies of the indices it owns (`rx_tail`, `tx_head`, per binding) and
//! validates the host's (`rx_head`, `tx_tail`) on every use; a violation drops that channel.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use shm_proto::*;

use crate::backend::{Backend, IoBuf};
use crate::channel::Channel;
use crate::framed::{self, Emit, Emitted, FramedRx};
use crate::pcie::Dir;
use crate::session::Violation;
use crate::urgent::{self, UrgRx};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Fresh,
    Listening,
    Connecting,
    Connected,
}

/// One binding of a socket: a slot of one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bind {
    pub sid: u32,
    pub slot: u32,
}

/// A parked `CF_WAIT` command (accept or connect): who asked, and the tag to complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parked {
    pub by: Bind,
    pub tag: u64,
}

/// A connection in a listener's queue.
pub enum Waiting<S> {
    /// Accepted from the backend, never given to a process.
    Fresh(S, SocketAddr),
    /// Handed to a process that did not take it (see [`Taker`]): back in the queue with its
    /// agent-side state, no binding, and what it received in its stash.
    Returned(SockId, SocketAddr),
}

/// A binding of a listener that takes connections by accept handoff (docs/channel.md, "Accept
/// handoff"): the agent binds queued connections in its session ahead of time and writes a
/// record for each into the listener slot's RX stream, where `accept` finds them without a
/// round trip. A binding becomes a taker when it sends `OP_ACCEPT`, and stops when a record
/// waited longer than the hold time (its process is not accepting: the records go back to
/// the shared queue, for every binding).
pub struct Taker {
    pub by: Bind,
    /// What the agent handed and the host has not provably taken, oldest first. The agent
    /// trusts these, never the bytes of a record the host could have rewritten.
    pub handed: VecDeque<Handed>,
}

/// One connection handed to a [`Taker`].
#[derive(Clone, Copy, Debug)]
pub struct Handed {
    /// Stream index of its record.
    pub at: u32,
    /// Its slot in the taker's session.
    pub slot: u32,
    pub conn: SockId,
    pub peer: SocketAddr,
    pub when: Instant,
}

/// Accept queue of a listener, shared by every binding.
pub struct Listener<S> {
    /// Connections the agent accepted that no host `accept` took yet.
    pub queue: VecDeque<Waiting<S>>,
    /// Bindings taking connections by handoff, served round-robin from `next_taker`.
    pub takers: Vec<Taker>,
    pub next_taker: usize,
    /// Queue limit; the rest waits in the kernel's backlog.
    pub cap: usize,
    /// `CF_WAIT` accepts waiting for a connection, oldest first, from any binding.
    pub parked: VecDeque<Parked>,
    /// The kernel may hold more connections (we stopped at `cap`).
    pub kernel_pending: bool,
    /// Connections of this listener get TLS terminated by the agent (`--tls-port`).
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// Connections queued so far (published as `accept_seq`).
    pub seq: u32,
}

/// One OS socket.
pub struct Sock<S> {
    pub os: S,
    pub domain: i32,
    pub kind: Kind,
    /// `SockState::flags` as published (the agent is their only writer). Non-active bindings of
    /// a live connection see them without `SF_RX_FIN` (see [`Sock::flags_for`]).
    pub flags: u32,
    /// `SockState::error` / `error_seq` as published to every binding.
    pub error: u32,
    pub error_seq: u32,
    pub registered: bool,
    /// End of stream or error seen: nothing more to read.
    pub rx_done: bool,
    /// Error seen: no more I/O at all.
    pub io_dead: bool,
    /// Host asked for SHUT_WR: shut the backend socket once every binding's TX is empty.
    pub shut_wr_pending: bool,
    /// A parked `CF_WAIT` connect.
    pub connect_tag: Option<Parked>,
    pub listener: Option<Listener<S>>,
    /// `SO_REUSEPORT` is set (as the host asked).
    pub reuseport: bool,
    /// Port registered in the reuseport table while bound.
    pub reuse_port_bound: Option<u16>,
    /// `SO_LINGER` with a timeout, kept here: a lingering close would block the agent.
    pub linger: Option<[u8; 8]>,
    /// Sessions holding the socket, in the order they got it.
    pub bindings: Vec<Bind>,
    /// The binding whose RX stream receives the connection's bytes.
    pub active: Option<Bind>,
    /// References held by unclaimed fork tickets.
    pub tickets: u32,
    /// RX bytes owed to the next active binding before anything new from the socket: what a
    /// closed binding had not read, or what arrived while no binding was active.
    pub stash: Vec<u8>,
    /// The last binding closed with unread RX bytes: the close resets the connection.
    pub abort_on_close: bool,
    /// The last TX bytes went with [`Backend::send_more`] for the FIN of the close that
    /// follows to ride on their segment ([`pump_tx`]'s `fin_follows`); a socket that is not
    /// closed after all pushes them ([`Backend::push`]).
    pub tx_held: bool,
    /// The binding whose TX stream is lent to the backend (see the module doc).
    pub lend_by: Option<Bind>,
    /// Waiting in a listener's queue after a handoff nobody took (a reference of its own).
    pub queued: bool,
    /// The peer's last urgent byte (urgent.rs), published to the active binding.
    pub urg: Option<UrgRx>,
    /// The backend reported urgent data: the next pump_rx asks about it first.
    pub urg_event: bool,
    /// When SIGURG last went to the socket's owner (at most one per millisecond: signals
    /// coalesce anyway, and each costs the agent reads of /proc).
    pub urg_signalled: Option<Instant>,
    /// The payload API: this connection's RX is framed into message records (framed.rs); on a
    /// listener, the framing its connections get. Declared with `SOL_SNSTACK` before
    /// `listen`/`connect`.
    pub framed: Option<Box<FramedRx>>,
    /// Why the framing failed (`record::REASONS` index + 1), published as
    /// `SockState::framing_error`; 0 while it did not.
    pub framing_error: u32,
    /// The agent terminates this connection's TLS (`--tls-port`, terminated.rs): the backend
    /// carries records, the host's streams plain bytes.
    pub tls: Option<Box<crate::tls::terminate::Session>>,
    /// The host program attached the "tls" ULP (`TCP_ULP`): kTLS options and, once `TLS_TX`
    /// is set, the records the agent seals for it (ktls.rs).
    pub ktls: Option<Box<crate::ktls::KtlsSock>>,
}

impl<S> Sock<S> {
    /// A socket no binding holds yet (the caller adds the first one and makes it active).
    pub fn new(os: S, domain: i32) -> Self {
        Sock {
            os,
            domain,
            kind: Kind::Fresh,
            flags: SF_OPEN,
            error: 0,
            error_seq: 0,
            registered: false,
            rx_done: false,
            io_dead: false,
            shut_wr_pending: false,
            connect_tag: None,
            listener: None,
            reuseport: false,
            reuse_port_bound: None,
            linger: None,
            bindings: Vec::new(),
            active: None,
            tickets: 0,
            stash: Vec::new(),
            abort_on_close: false,
            tx_held: false,
            lend_by: None,
            queued: false,
            urg: None,
            urg_event: false,
            urg_signalled: None,
            framed: None,
            framing_error: 0,
            tls: None,
            ktls: None,
        }
    }

    /// Another binding becomes the reader: a mark is an index of the old reader's stream, so
    /// the record goes and the backend is asked again (an inline backend places the byte anew
    /// in the new reader's stream; one that already handed it over out of band has no more to
    /// say: that urgent data is forgotten, never misplaced).
    pub fn forget_urgent_mark(&mut self) {
        if self.urg.take().is_some() {
            self.urg_event = true;
        }
    }

    /// Bindings, ticket references and a listener queue holding it: the OS socket closes when
    /// this reaches 0.
    pub fn refs(&self) -> usize {
        self.bindings.len() + self.tickets as usize + usize::from(self.queued)
    }

    pub fn set_flags(&mut self, set: u32, clear: u32) {
        self.flags = (self.flags & !clear) | set;
    }

    /// Records an asynchronous socket error (`SO_ERROR`).
    pub fn post_error(&mut self, errno: i32, set: u32, clear: u32) {
        self.error = errno as u32;
        self.error_seq = self.error_seq.wrapping_add(1);
        self.set_flags(SF_ERROR | set, clear);
    }

    /// The connection is dead (reset, timed out, ...): report it, stop all I/O.
    pub fn fail(&mut self, errno: i32) {
        self.io_dead = true;
        self.rx_done = true;
        self.shut_wr_pending = false;
        let mut set = SF_TX_SHUT | SF_RX_FIN;
        if errno == libc::ECONNRESET {
            set |= SF_RESET;
        }
        self.post_error(errno, set, 0);
    }

    /// Flags as binding `b` sees them. Only the active binding receives RX bytes, so only it
    /// may see the end of the stream, and only once the stash reached it: otherwise a host would
    /// read EOF while bytes are still on their way to it.
    /// A live connection's other bindings also see `SF_PASSIVE`: their reader must claim the
    /// bytes (`OP_RX_CLAIM`) before it waits for them.
    pub fn flags_for(&self, b: Bind) -> u32 {
        let owed = !self.stash.is_empty()
            || self
                .ktls
                .as_ref()
                .and_then(|k| k.rx.as_ref())
                .is_some_and(|p| p.owes());
        let sees_end =
            self.kind != Kind::Connected || self.io_dead || (self.active == Some(b) && !owed);
        let passive = self.kind == Kind::Connected && !self.io_dead && self.active != Some(b);
        let mut f = if sees_end {
            self.flags
        } else {
            self.flags & !SF_RX_FIN
        };
        if passive {
            f |= SF_PASSIVE;
        }
        f
    }

    /// Writes the socket's state into binding `b`'s control block (error before flags, so a
    /// host that sees `SF_ERROR` sees the error).
    pub fn write_ctl(&self, ctl: &SockCtl, b: Bind) {
        let st = &ctl.state.0;
        st.error.store(self.error, Ordering::SeqCst);
        st.error_seq.store(self.error_seq, Ordering::SeqCst);
        let (ready, seq) = self
            .listener
            .as_ref()
            .map_or((0, 0), |l| (l.queue.len() as u32, l.seq));
        st.accept_seq.store(seq, Ordering::SeqCst);
        st.accept_ready.store(ready, Ordering::SeqCst);
        // The mark is an index of the active binding's stream: only it sees urgent data.
        let urg = match self.urg {
            Some(u) if self.active == Some(b) => u.word(),
            _ => 0,
        };
        st.urgent.store(urg, Ordering::SeqCst);
        st.framing_error.store(self.framing_error, Ordering::SeqCst);
        // kTLS RX: what the readable bytes are, also an index of the active binding's stream.
        let tls_rx = match self.ktls.as_ref().and_then(|k| k.rx.as_ref()) {
            Some(p) if self.active == Some(b) => p.word().pack(),
            _ => 0,
        };
        st.tls_rx.store(tls_rx, Ordering::SeqCst);
        st.flags.store(self.flags_for(b), Ordering::SeqCst);
    }
}

/// A session's record of one slot.
#[derive(Debug)]
pub struct Binding {
    pub sock: SockId,
    /// Our RX producer index in this slot's stream.
    pub rx_tail: u32,
    /// Our TX consumer index in this slot's stream (with a loan: acknowledged up to here).
    pub tx_head: u32,
    /// With a loan: handed to the backend up to here (`tx_head..tx_lent` unacknowledged).
    pub tx_lent: Option<u32>,
    /// Set while draining after the host's close.
    pub drain_deadline: Option<Instant>,
    /// File references (`OP_TX_FILE`) taken from the command ring and not yet sent, in order.
    pub files: VecDeque<FileRef>,
    /// Bytes of every reference taken (compared with the host's `tx_file_posted`: while they
    /// differ, a reference is on its way and its place in the stream is not known yet).
    pub file_taken: u64,
    /// Bytes of references handed to the backend (published as `tx_file_done`).
    pub file_done: u64,
    /// Urgent marks (`OP_TX_URG`) taken and not yet sent, in order: the byte before each index
    /// is urgent. (Rare: a Vec keeps the binding small.)
    pub urgent: Vec<u32>,
    /// Marks taken (compared with the host's `tx_urg_posted`, as `file_taken`).
    pub urg_taken: u32,
}

/// Urgent marks a binding keeps unsent; more supersede the oldest.
pub const MAX_URGENT_MARKS: usize = 64;

/// A file's bytes in a binding's TX byte sequence: they go after the stream's bytes before
/// index `at` and before the ones from `at` on.
#[derive(Debug)]
pub struct FileRef {
    pub at: u32,
    pub file: Rc<OwnedFd>,
    pub offset: u64,
    pub left: u64,
}

impl Binding {
    pub fn new(sock: SockId) -> Self {
        Binding {
            sock,
            rx_tail: 0,
            tx_head: 0,
            tx_lent: None,
            drain_deadline: None,
            files: VecDeque::new(),
            file_taken: 0,
            file_done: 0,
            urgent: Vec::new(),
            urg_taken: 0,
        }
    }

    /// Where the TX bytes not yet given to the backend start.
    pub fn tx_sent(&self) -> u32 {
        self.tx_lent.unwrap_or(self.tx_head)
    }
}

// ---------------------------------------------------------------------------------------------
// Socket table

/// A socket's handle: index plus generation (also its backend token).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SockId {
    idx: u32,
    gen: u32,
}

impl SockId {
    pub fn token(self) -> u64 {
        (u64::from(self.gen) << 32) | u64::from(self.idx)
    }

    pub fn from_token(t: u64) -> Self {
        SockId {
            idx: t as u32,
            gen: (t >> 32) as u32,
        }
    }
}

struct Entry<S> {
    gen: u32,
    sock: Option<Sock<S>>,
}

/// Every OS socket the agent holds for its processes.
pub struct SockTable<S> {
    entries: Vec<Entry<S>>,
    free: Vec<u32>,
    live: usize,
}

impl<S> Default for SockTable<S> {
    fn default() -> Self {
        SockTable {
            entries: Vec::new(),
            free: Vec::new(),
            live: 0,
        }
    }
}

impl<S> SockTable<S> {
    pub fn insert(&mut self, s: Sock<S>) -> SockId {
        self.live += 1;
        if let Some(idx) = self.free.pop() {
            let e = &mut self.entries[idx as usize];
            e.gen = e.gen.wrapping_add(1);
            e.sock = Some(s);
            return SockId { idx, gen: e.gen };
        }
        self.entries.push(Entry {
            gen: 0,
            sock: Some(s),
        });
        SockId {
            idx: self.entries.len() as u32 - 1,
            gen: 0,
        }
    }

    pub fn get(&self, id: SockId) -> Option<&Sock<S>> {
        self.entries
            .get(id.idx as usize)
            .filter(|e| e.gen == id.gen)
            .and_then(|e| e.sock.as_ref())
    }

    pub fn get_mut(&mut self, id: SockId) -> Option<&mut Sock<S>> {
        self.entries
            .get_mut(id.idx as usize)
            .filter(|e| e.gen == id.gen)
            .and_then(|e| e.sock.as_mut())
    }

    pub fn remove(&mut self, id: SockId) -> Option<Sock<S>> {
        let e = self
            .entries
            .get_mut(id.idx as usize)
            .filter(|e| e.gen == id.gen)?;
        let s = e.sock.take()?;
        self.free.push(id.idx);
        self.live -= 1;
        Some(s)
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn iter(&self) -> impl Iterator<Item = (SockId, &Sock<S>)> {
        self.entries.iter().enumerate().filter_map(|(i, e)| {
            e.sock.as_ref().map(|s| {
                (
                    SockId {
                        idx: i as u32,
                        gen: e.gen,
                    },
                    s,
                )
            })
        })
    }

    pub fn ids(&self) -> Vec<SockId> {
        self.iter().map(|(id, _)| id).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Data path

/// Bytes the host published in `slot`'s TX (its stream and its file references) that binding
/// `bd` has not sent.
pub fn tx_pending(chan: &Channel, slot: u32, bd: &Binding) -> Result<u64, Violation> {
    let tx = chan
        .region()
        .tx(slot)
        .ok_or(Violation::SlotOutOfRange { slot, max: 0 })?;
    let files: u64 = bd.files.iter().map(|f| f.left).sum();
    Ok(u64::from(tx.used(bd.tx_sent(), tx.load_tail())?) + files)
}

/// Most file references a binding may have queued: the host posts pieces of at least
/// [`MIN_TX_FILE`] bytes and keeps what it posted within the TX stream's size.
pub fn max_file_refs(tx_size: u32) -> usize {
    tx_size as usize / MIN_TX_FILE as usize + 1
}

/// Takes what the host of `slot` has not read out of its RX stream: copies `[rx_head, rx_tail)`
/// and moves the host's `rx_head` to `rx_tail` with a compare-and-swap, retrying when the host
/// consumed meanwhile (its own CAS from the head it read at then fails, so every byte is read by
/// exactly one side).
pub fn take_unread_rx(chan: &Channel, slot: u32, rx_tail: u32) -> Result<Vec<u8>, Violation> {
    let rx = chan
        .region()
        .rx(slot)
        .ok_or(Violation::SlotOutOfRange { slot, max: 0 })?;
    // The host can only move its head forward towards our tail: a bounded number of retries.
    // Should a reader there keep winning anyway, its bytes stay with it (it may still read them).
    for _ in 0..64 {
        let head = rx.load_head();
        let n = rx.used(head, rx_tail)?;
        let mut v = vec![0u8; n as usize];
        rx.copy_out(head, &mut v);
        if n == 0 || rx.cas_head(head, rx_tail) {
            return Ok(v);
        }
    }
    Ok(Vec::new())
}

/// What the host of `slot` has not read from its RX stream (its published `rx_head` up to our
/// `rx_tail`, validated).
pub fn unread_rx(chan: &Channel, slot: u32, rx_tail: u32) -> Result<Vec<u8>, Violation> {
    let rx = chan
        .region()
        .rx(slot)
        .ok_or(Violation::SlotOutOfRange { slot, max: 0 })?;
    let head = rx.load_head();
    let n = rx.used(head, rx_tail)?;
    let mut v = vec![0u8; n as usize];
    rx.copy_out(head, &mut v);
    Ok(v)
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

/// What a pump saw that changes the socket's state (the caller publishes it to every binding).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// RX: end of stream. TX: the stream is empty (or can never drain).
    pub done: bool,
    /// The connection failed with this errno.
    pub err: Option<i32>,
    /// RX: the published urgent data changed (and is new: `SIGURG`).
    pub urgent: urgent::Noted,
    /// RX of a framed connection: the peer broke the framing.
    pub malformed: Option<nic_agent::framing::Reason>,
    /// RX of a framed connection: what went into records.
    pub framed: Emitted,
    /// RX of a TLS-terminated connection: the handshake completed now.
    pub tls_handshake: bool,
    /// RX of a TLS-terminated connection: the peer broke TLS.
    pub tls_failed: bool,
    /// RX of a kTLS RX socket: a record failed to open (the socket's `SO_ERROR` from now).
    pub tls_rx_error: Option<i32>,
}

/// Moves bytes into the RX stream of `slot` (the active binding): first the stash, then from the
/// backend socket until it would block, the stream is full, or the stream ended. One
/// publication per call (coalescing what arrived).
pub fn pump_rx<B: Backend>(
    b: &mut B,
    s: &mut Sock<B::Sock>,
    chan: &mut Channel,
    slot: u32,
    rx_tail: &mut u32,
    drain: bool,
) -> Result<Outcome, Violation> {
    if s.tls.is_some() {
        return crate::terminated::pump_rx(b, s, chan, slot, rx_tail);
    }
    if s.framed.is_some() {
        return pump_rx_framed(b, s, chan, slot, rx_tail, drain);
    }
    if s.ktls.as_ref().is_some_and(|k| k.rx_on()) {
        return crate::ktls_rx::pump_rx(b, s, chan, slot, rx_tail);
    }
    let from_os = s.kind == Kind::Connected && !s.rx_done && !s.io_dead;
    if !from_os && s.stash.is_empty() {
        return Ok(Outcome::default());
    }
    let region = *chan.region();
    let (Some(rx), Some(ctl)) = (region.rx(slot), region.sock(slot)) else {
        return Err(Violation::SlotOutOfRange {
            slot,
            max: region.geometry().max_sockets,
        });
    };
    let start = *rx_tail;
    let mut out = Outcome::default();
    let mut retried = false;
    loop {
        // (Not while a stash is owed first: the backend's place for the urgent byte counts
        // the stash's bytes as handed over, and the report waits until they are in the stream.)
        let urgent_check =
            s.urg_event || s.urg.is_some_and(|u| u.watching()) || b.urgent_unpolled();
        if from_os && s.stash.is_empty() && urgent_check {
            s.urg_event = false;
            let n = urgent::note(b, s, chan, slot, rx_tail)?;
            if n.changed {
                // The word goes out before any byte it marks (the tail is published below): a
                // host never reads the urgent byte as data for want of its mark.
                let w = s.urg.map_or(0, |u| u.word());
                ctl.state.0.urgent.store(w, Ordering::SeqCst);
            }
            out.urgent.changed |= n.changed;
            out.urgent.fresh |= n.fresh;
        }
        let mut free = rx.writable(*rx_tail)?;
        if free == 0 {
            // Tell the host to send OP_RX_SPACE after it consumes, then look again: the host may
            // have consumed between our check and the announcement (wake::rx_block).
            shm_proto::wake::rx_block(&ctl.rx_head.0.blocked);
            free = rx.writable(*rx_tail)?;
            if free == 0 {
                break;
            }
            shm_proto::wake::rx_unblock(&ctl.rx_head.0.blocked);
        }
        if !s.stash.is_empty() {
            let n = s.stash.len().min(free as usize);
            rx.copy_in(*rx_tail, &s.stash[..n]);
            s.stash.drain(..n);
            *rx_tail = rx_tail.wrapping_add(n as u32);
            continue;
        }
        if !from_os {
            break;
        }
        let (iov, n) = iovs(&rx, *rx_tail, free);
        // SAFETY: the pieces are the free part of this slot's RX stream inside the live mapping;
        // the host never writes there (it only reads up to the published tail) and no Rust
        // reference to that memory exists.
        match unsafe { b.recv(&s.os, &iov[..n]) } {
            Ok(0) => {
                out.done = true;
                break;
            }
            Ok(k) => {
                *rx_tail = rx_tail.wrapping_add(k.min(free as usize) as u32);
                if let Some(u) = s.urg.as_mut() {
                    // Bytes came: the OS socket is past a byte the agent wrote.
                    u.skip = false;
                }
                // (A receive stops short at an urgent mark: one whose place is still looked
                // for is asked about again.)
                let watching = s.urg.is_some_and(|u| u.watching());
                if k < free as usize && !drain && !watching && !b.recv_more(&s.os) {
                    // Short read and nothing behind it: skip the call that says WouldBlock.
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // At a mark whose byte the agent wrote, the kernel's receive says EAGAIN while
                // any signal is pending (tcp_recvmsg); the handler has run now: once more.
                if s.urg.is_some_and(|u| u.skip) && !std::mem::replace(&mut retried, true) {
                    continue;
                }
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                out.err = Some(e.raw_os_error().unwrap_or(libc::EIO));
                break;
            }
        }
    }
    finish_rx(chan, &rx, slot, start, *rx_tail);
    Ok(out)
}

thread_local! {
    /// Where framed connections receive (framed.rs): one buffer for all of them, so only the
    /// bytes of a message still incomplete are kept per connection.
    static RX_SCRATCH: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(vec![0; framed::READ_CHUNK]);
}

/// [`pump_rx`] for a framed connection (framed.rs): receives into the connection's staging
/// buffer and writes the whole messages in it into the RX stream as records, publishing the tail
/// once, at a record boundary. When the ring has no room for the next record the agent stops
/// reading (`rx_blocked`, as for a full byte stream), so a slow application closes the peer's
/// window instead of growing the agent's memory. Urgent data is not delivered on a framed
/// connection: the kernel keeps the byte out of band and nobody asks for it.
fn pump_rx_framed<B: Backend>(
    b: &mut B,
    s: &mut Sock<B::Sock>,
    chan: &mut Channel,
    slot: u32,
    rx_tail: &mut u32,
    drain: bool,
) -> Result<Outcome, Violation> {
    let region = *chan.region();
    let (Some(rx), Some(ctl)) = (region.rx(slot), region.sock(slot)) else {
        return Err(Violation::SlotOutOfRange {
            slot,
            max: region.geometry().max_sockets,
        });
    };
    let from_os = s.kind == Kind::Connected && !s.io_dead;
    let mut out = Outcome::default();
    let Some(f) = s.framed.as_mut() else {
        return Ok(out);
    };
    if !s.stash.is_empty() {
        // Bytes taken back from a reader (OP_RX_CLAIM): framed again, in front.
        f.prepend(&s.stash);
        s.stash.clear();
    }
    let start = *rx_tail;
    let mut last = false;
    RX_SCRATCH.with_borrow_mut(|scratch| -> Result<(), Violation> {
        let mut fresh = 0;
        loop {
            match f.emit(&scratch[..fresh], &rx, rx_tail, &mut out.framed)? {
                Emit::Need => {}
                Emit::Full => {
                    // As pump_rx: announce, then look again (the host may have consumed
                    // meanwhile).
                    shm_proto::wake::rx_block(&ctl.rx_head.0.blocked);
                    if f.emit(&[], &rx, rx_tail, &mut out.framed)? == Emit::Full {
                        break;
                    }
                    shm_proto::wake::rx_unblock(&ctl.rx_head.0.blocked);
                    fresh = 0;
                    continue;
                }
                Emit::Malformed(r) => {
                    out.malformed = Some(r);
                    break;
                }
                Emit::Ended => {
                    out.done = true;
                    break;
                }
            }
            fresh = 0;
            if !from_os || f.eof() || last {
                break;
            }
            let want = f.room().min(scratch.len());
            if want == 0 {
                break;
            }
            let iov = [IoBuf {
                iov_base: scratch.as_mut_ptr().cast(),
                iov_len: want,
            }];
            // SAFETY: the scratch buffer is alive and unaliased for the call (the pointer is not
            // used after it); `want` is within it.
            match unsafe { b.recv(&s.os, &iov) } {
                Ok(0) => f.finish(),
                Ok(k) => {
                    fresh = k.min(want);
                    if k < want && !drain && !b.recv_more(&s.os) {
                        // Short read and nothing behind it: frame, then stop.
                        last = true;
                    }
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => break,
                    io::ErrorKind::Interrupted => {}
                    _ => {
                        out.err = Some(e.raw_os_error().unwrap_or(libc::EIO));
                        break;
                    }
                },
            }
        }
        Ok(())
    })?;
    finish_rx(chan, &rx, slot, start, *rx_tail);
    Ok(out)
}

/// After an RX pump: publishes the tail of `slot`'s RX stream if it moved since `start` (one
/// publication per pump call, coalescing what arrived), counts it and marks the slot dirty.
/// Returns the bytes published. Shared by every RX pump (plain, framed, terminated TLS, kTLS).
pub fn finish_rx(chan: &mut Channel, rx: &Stream, slot: u32, start: u32, tail: u32) -> u32 {
    let moved = tail.wrapping_sub(start);
    if moved != 0 {
        chan.pcie(Dir::Publish, u64::from(moved));
        rx.publish_tail(tail);
        chan.counters.n2h_bytes += u64::from(moved);
        chan.counters.n2h_ops += 1;
        chan.dirty(slot);
    }
    moved
}

/// Writes in-order payload straight from a received frame into `slot`'s RX stream (the engine's
/// direct path, snstack_tcp::sink): as much as fits, published at once. Only for a connected
/// socket whose RX has nothing queued before it (no stash, no end); 0 otherwise, and the engine
/// buffers the bytes for [`pump_rx`].
pub fn deliver<S>(
    s: &Sock<S>,
    chan: &mut Channel,
    slot: u32,
    rx_tail: &mut u32,
    data: &[u8],
) -> usize {
    if s.kind != Kind::Connected
        || s.rx_done
        || s.io_dead
        || !s.stash.is_empty()
        || s.framed.is_some()
        || s.tls.is_some()
        || s.ktls.as_ref().is_some_and(|k| k.rx_on())
    {
        // (A framed connection's bytes go through its framer, a TLS one's through the session
        // or the kTLS opener: pump_rx.)
        return 0;
    }
    let region = *chan.region();
    let Some(rx) = region.rx(slot) else {
        return 0;
    };
    // A host that corrupted its indices is reported by the next pump_rx.
    let Ok(free) = rx.writable(*rx_tail) else {
        return 0;
    };
    let n = (free as usize).min(data.len());
    if n == 0 {
        return 0;
    }
    rx.copy_in(*rx_tail, &data[..n]);
    *rx_tail = rx_tail.wrapping_add(n as u32);
    chan.pcie(Dir::Publish, n as u64);
    rx.publish_tail(*rx_tail);
    chan.counters.n2h_bytes += n as u64;
    chan.counters.n2h_ops += 1;
    chan.dirty(slot);
    n
}

/// Sends what the host published in binding `by`'s TX until it would block or TX is empty
/// (through the loan when the backend takes one, see the module doc). `done` when every byte
/// was handed over (or can never be, because the connection died).
/// Stream bytes of binding `bd` that may go before its next file reference: up to the
/// reference's place; none while a reference is on its way (posted and not taken: its place is
/// unknown, so nothing more goes until the command runs, and it pumps the binding again); all
/// `used` otherwise. Shared by every TX pump (copy, terminated TLS, kTLS).
pub fn file_limit(bd: &Binding, used: u32, posted: u64) -> Result<u32, Violation> {
    match bd.files.front() {
        Some(f) => {
            let before = f.at.wrapping_sub(bd.tx_head);
            if before > used {
                return Err(Violation::Corrupt("file reference past the TX tail"));
            }
            Ok(before)
        }
        None if posted != bd.file_taken => Ok(0),
        None => Ok(used),
    }
}

/// After a TX pump: publishes binding `bd`'s head if it moved since `start` and the file bytes
/// done since `file_start` (`SockState::tx_file_done`), counts them, and marks the slot dirty.
/// `fetched`: the stream bytes' PCIe fetch is still to be counted (the copy path counts it when
/// it first reads the stream).
pub fn finish_tx(
    chan: &mut Channel,
    tx: &Stream,
    ctl: &SockCtl,
    slot: u32,
    bd: &Binding,
    (start, file_start): (u32, u64),
    fetched: bool,
) {
    let moved = bd.tx_head.wrapping_sub(start);
    if moved != 0 {
        if !fetched {
            chan.pcie(Dir::FetchTx, u64::from(moved));
        }
        tx.publish_head(bd.tx_head);
        chan.counters.h2n_bytes += u64::from(moved);
        chan.dirty(slot);
    }
    let file_moved = bd.file_done - file_start;
    if file_moved != 0 {
        ctl.state
            .0
            .tx_file_done
            .store(bd.file_done, Ordering::Release);
        chan.pcie(Dir::FetchTx, file_moved);
        chan.counters.h2n_bytes += file_moved;
        chan.counters.h2n_file_bytes += file_moved;
        chan.dirty(slot);
    }
}

/// Sends what binding `by` queued. `fin_follows`: the socket closes as soon as this returns
/// done (its last binding's close drains it): the last bytes go with [`Backend::send_more`] so
/// the FIN leaves in their segment, and `s.tx_held` says they wait for it.
pub fn pump_tx<B: Backend>(
    b: &mut B,
    s: &mut Sock<B::Sock>,
    chan: &mut Channel,
    by: Bind,
    bd: &mut Binding,
    fin_follows: bool,
) -> Result<Outcome, Violation> {
    if s.io_dead {
        return Ok(Outcome {
            done: true,
            ..Outcome::default()
        });
    }
    if s.kind != Kind::Connected {
        return Ok(Outcome {
            done: tx_pending(chan, by.slot, bd)? == 0,
            ..Outcome::default()
        });
    }
    if s.tls.is_some() {
        return crate::terminated::pump_tx(b, s, chan, by, bd);
    }
    // Before any loan: a kTLS socket's stream is sealed here, never lent as plaintext.
    if s.ktls.as_ref().is_some_and(|k| k.tx_on()) {
        return crate::ktls::pump_tx(b, s, chan, by, bd);
    }
    let slot = by.slot;
    let region = *chan.region();
    let Some(tx) = region.tx(slot) else {
        return Err(Violation::SlotOutOfRange {
            slot,
            max: region.geometry().max_sockets,
        });
    };
    let Some(ctl) = region.sock(slot) else {
        return Err(Violation::SlotOutOfRange {
            slot,
            max: region.geometry().max_sockets,
        });
    };
    // File references in play (queued, or posted and not yet taken from the command ring): the
    // copy path, which knows where they go in the byte sequence. A loan ends first (only a
    // hostile host posts references to a backend that lends: lending backends do not offer them).
    // Urgent marks too (urgent.rs): the copy path sends the urgent byte by itself.
    let files = !bd.files.is_empty()
        || ctl.host.0.tx_file_posted.load(Ordering::Acquire) != bd.file_taken
        || !bd.urgent.is_empty()
        || ctl.host.0.tx_urg_posted.load(Ordering::Acquire) != bd.urg_taken;
    if files {
        if let Some(lent) = bd.tx_lent.take() {
            b.reclaim_tx(&s.os);
            s.lend_by = None;
            bd.tx_head = lent;
            tx.publish_head(lent);
            chan.dirty(slot);
        }
    } else if let Some(o) = pump_lent(b, s, chan, by, bd, &tx)? {
        return Ok(o);
    }
    let start = bd.tx_head;
    let file_start = bd.file_done;
    let mut out = Outcome::default();
    let mut fetched = false;
    // Bytes sent with `send_more` and not yet followed by a send that pushes.
    let mut held = false;
    loop {
        // The tail before the posted count (wake order of `SockHost::tx_file_posted`).
        let tail = tx.load_tail();
        let used = tx.used(bd.tx_head, tail)?;
        let posted = ctl.host.0.tx_file_posted.load(Ordering::Acquire);
        let urg_posted = ctl.host.0.tx_urg_posted.load(Ordering::Acquire);
        // The bytes before the next urgent one; none while a mark is on its way (as for files).
        let urg_limit = match bd.urgent.first() {
            Some(&u) => {
                let before = u.wrapping_sub(1).wrapping_sub(bd.tx_head);
                if before >= used {
                    return Err(Violation::Corrupt("urgent mark past the TX tail"));
                }
                before
            }
            None if urg_posted != bd.urg_taken => 0,
            None => used,
        };
        let limit = file_limit(bd, used, posted)?.min(urg_limit);
        if limit == 0 && bd.files.front().map_or(true, |f| f.at != bd.tx_head) {
            // The urgent byte is next (a file placed here goes before it), or a command is
            // on its way.
            if bd.urgent.first() != Some(&bd.tx_head.wrapping_add(1)) {
                out.done = used == 0 && posted == bd.file_taken && urg_posted == bd.urg_taken;
                break;
            }
            if !std::mem::replace(&mut fetched, true) {
                chan.pcie(Dir::FetchTx, u64::from(used));
            }
            let (iov, n) = iovs(&tx, bd.tx_head, 1);
            // SAFETY: as for `send` below: one byte of this slot's TX stream, only read.
            match unsafe { b.send_urgent(&s.os, &iov[..n]) } {
                Ok(0) => break,
                Ok(_) => {
                    bd.tx_head = bd.tx_head.wrapping_add(1);
                    bd.urgent.remove(0);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    // An engine without urgent data (smoltcp; hosts are told by the missing
                    // FEAT_URGENT and refuse MSG_OOB): the byte goes as an ordinary one.
                    bd.urgent.remove(0);
                }
                Err(e) => {
                    out.err = Some(e.raw_os_error().unwrap_or(libc::EIO));
                    out.done = true;
                    break;
                }
            }
            continue;
        }
        if limit == 0 {
            let Some(f) = bd.files.front_mut() else {
                out.done = used == 0 && posted == bd.file_taken;
                break;
            };
            let want = usize::try_from(f.left).unwrap_or(usize::MAX);
            match b.send_file(&s.os, f.file.as_raw_fd(), f.offset, want) {
                Ok(0) => {
                    // The file is shorter than the host promised: the byte sequence cannot be
                    // completed, and a peer must not take a truncated stream for a whole one.
                    tracing::warn!(
                        slot,
                        offset = f.offset,
                        missing = f.left,
                        "file sent by reference ended early; resetting the connection"
                    );
                    let abort = libc::linger {
                        l_onoff: 1,
                        l_linger: 0,
                    };
                    // SAFETY: linger is plain data; its bytes are the option value.
                    let v = unsafe {
                        std::slice::from_raw_parts(
                            (&abort as *const libc::linger).cast::<u8>(),
                            std::mem::size_of::<libc::linger>(),
                        )
                    };
                    let _ = b.setsockopt(&s.os, libc::SOL_SOCKET, libc::SO_LINGER, v);
                    out.err = Some(libc::EIO);
                    out.done = true;
                    break;
                }
                Ok(k) => {
                    let k = (k as u64).min(f.left);
                    f.offset += k;
                    f.left -= k;
                    bd.file_done += k;
                    if f.left == 0 {
                        bd.files.pop_front();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    out.err = Some(e.raw_os_error().unwrap_or(libc::EIO));
                    out.done = true;
                    break;
                }
            }
            continue;
        }
        if !std::mem::replace(&mut fetched, true) {
            chan.pcie(Dir::FetchTx, u64::from(used));
        }
        let (iov, n) = iovs(&tx, bd.tx_head, limit);
        // A closing socket's last bytes wait for its FIN (`send_more`): one segment carries
        // both, where the kernel's own server sends them apart. (Holding an HTTP header for the
        // file behind it the same way measured no better: bench/results/2026-12-06-0710-fin.)
        let more = fin_follows
            && limit == used
            && bd.files.is_empty()
            && bd.urgent.is_empty()
            && posted == bd.file_taken
            && urg_posted == bd.urg_taken;
        let sent = if more {
            // SAFETY: as below.
            unsafe { b.send_more(&s.os, &iov[..n]) }
        } else {
            // SAFETY: the pieces lie in this slot's TX stream inside the live mapping; the
            // kernel only reads them and no Rust reference to that memory exists.
            unsafe { b.send(&s.os, &iov[..n]) }
        };
        match sent {
            Ok(k) => {
                let k = k.min(limit as usize) as u32;
                bd.tx_head = bd.tx_head.wrapping_add(k);
                // (A short send found the buffer full and pushed what it queued.)
                held = more && k == limit;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                out.err = Some(e.raw_os_error().unwrap_or(libc::EIO));
                out.done = true;
                break;
            }
        }
    }
    if held {
        if out.done && out.err.is_none() {
            s.tx_held = true;
        } else {
            // Not the end after all (a command on its way, an error): the held bytes go now,
            // as a plain send would have sent them.
            b.push(&s.os);
        }
    }
    // (The copy path counted the stream's fetch when it first read it.)
    finish_tx(chan, &tx, ctl, slot, bd, (start, file_start), true);
    Ok(out)
}

/// The lent TX path of [`pump_tx`]: hands the backend what the host appended and frees what
/// the peer acknowledged. `None` when binding `by` does not lend (another binding does, the
/// connection has several, or the backend copies).
fn pump_lent<B: Backend>(
    b: &mut B,
    s: &mut Sock<B::Sock>,
    chan: &mut Channel,
    by: Bind,
    bd: &mut Binding,
    tx: &Stream,
) -> Result<Option<Outcome>, Violation> {
    match (s.lend_by, bd.tx_lent) {
        (Some(l), Some(_)) if l == by => {}
        (None, None) => {
            if s.bindings.len() != 1 || s.tickets != 0 || !b.can_lend_tx(&s.os) {
                return Ok(None);
            }
            // SAFETY: the stream lies in this binding's slot of the live mapping, and the agent
            // neither frees the slot nor unmaps the region before the loan ends
            // (`Agent::end_loan` in finish_binding and when a fork ticket takes the socket); the
            // bytes from tx_head on are not rewritten while tx_head stays (the host writes only
            // past tx_tail).
            if unsafe { b.lend_tx(&s.os, *tx, bd.tx_head) }.is_err() {
                return Ok(None);
            }
            s.lend_by = Some(by);
            bd.tx_lent = Some(bd.tx_head);
        }
        _ => return Ok(None),
    }
    let mut lent = bd.tx_lent.unwrap_or(bd.tx_head);
    let tail = tx.load_tail();
    let used = tx.used(bd.tx_head, tail)?;
    let handed = lent.wrapping_sub(bd.tx_head);
    if handed > used {
        // The host moved its tail back over bytes it had published.
        return Err(Violation::Corrupt("tx_tail moved back over lent bytes"));
    }
    let mut out = Outcome::default();
    // An urgent mark (or a file reference) posted since pump_tx looked, its bytes already in
    // the tail read above: nothing more is handed over; its command ends the loan and takes
    // the copy path (the counts are read after the tail: the host raises them before).
    let marked = chan.region().sock(by.slot).is_some_and(|c| {
        c.host.0.tx_urg_posted.load(Ordering::Acquire) != bd.urg_taken
            || c.host.0.tx_file_posted.load(Ordering::Acquire) != bd.file_taken
    });
    let fresh = if marked { 0 } else { used - handed };
    if fresh > 0 {
        chan.pcie(Dir::FetchTx, u64::from(fresh));
        match b.send_lent(&s.os, fresh as usize) {
            Ok(k) => {
                let k = k.min(fresh as usize) as u32;
                lent = lent.wrapping_add(k);
                chan.counters.h2n_bytes += u64::from(k);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                out.err = Some(e.raw_os_error().unwrap_or(libc::EIO));
                out.done = true;
            }
        }
    }
    let old_head = bd.tx_head;
    match b.take_acked(&s.os) {
        Some(_) if b.loan_outgrown(&s.os) => {
            // The path needs more in flight than the stream holds: the backend takes over
            // what is unacknowledged and its buffer grows with the window from now on.
            b.reclaim_tx(&s.os);
            bd.tx_head = lent;
            bd.tx_lent = None;
            s.lend_by = None;
        }
        Some(k) => {
            let k = k.min(lent.wrapping_sub(bd.tx_head));
            bd.tx_head = bd.tx_head.wrapping_add(k);
            bd.tx_lent = Some(lent);
        }
        None => {
            // The backend holds no loan any more (the connection is gone): nothing handed
            // over will be read again.
            bd.tx_head = lent;
            bd.tx_lent = None;
            s.lend_by = None;
        }
    }
    if bd.tx_head != old_head {
        tx.publish_head(bd.tx_head);
        chan.dirty(by.slot);
    }
    out.done |= lent == tail;
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{ConnectState, SockEvent};
    use std::net::SocketAddr;
    use std::os::fd::RawFd;

    fn unsupported<T>() -> io::Result<T> {
        Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }

    /// The calls a data-path test backend never gets: connected, nothing else supported.
    macro_rules! connected_only {
        () => {
            type Sock = ();
            fn socket(&mut self, _: i32) -> io::Result<()> {
                unsupported()
            }
            fn bind(&mut self, _: &(), _: &SocketAddr) -> io::Result<()> {
                unsupported()
            }
            fn listen(&mut self, _: &(), _: i32) -> io::Result<()> {
                unsupported()
            }
            fn accept(&mut self, _: &()) -> io::Result<((), SocketAddr)> {
                unsupported()
            }
            fn connect(&mut self, _: &(), _: &SocketAddr) -> io::Result<()> {
                unsupported()
            }
            fn connect_state(&mut self, _: &()) -> ConnectState {
                ConnectState::Connected
            }
            fn take_error(&mut self, _: &()) -> i32 {
                0
            }
            fn shutdown(&mut self, _: &(), _: i32) -> io::Result<()> {
                unsupported()
            }
            fn local_addr(&mut self, _: &()) -> io::Result<SocketAddr> {
                unsupported()
            }
            fn peer_addr(&mut self, _: &()) -> io::Result<SocketAddr> {
                unsupported()
            }
            fn register(&mut self, _: &(), _: u64) -> io::Result<()> {
                Ok(())
            }
            fn close(&mut self, _: ()) {}
            fn poll(&mut self, _: &mut Vec<SockEvent>) -> io::Result<()> {
                Ok(())
            }
            fn wait_fd(&self) -> RawFd {
                -1
            }
        };
    }

    /// A backend that only takes loans: records what it was handed and acknowledges on demand.
    #[derive(Default)]
    struct Lender {
        stream: Option<(Stream, u32)>,
        handed: u32,
        acked: u32,
        gone: bool,
        outgrown: bool,
        reclaimed: Vec<u8>,
        /// Bytes taken by `send` (the copying path).
        copied: usize,
    }

    impl Backend for Lender {
        connected_only!();
        fn setsockopt(&mut self, _: &(), _: i32, _: i32, _: &[u8]) -> io::Result<()> {
            unsupported()
        }
        fn getsockopt(&mut self, _: &(), _: i32, _: i32, _: &mut [u8]) -> io::Result<usize> {
            unsupported()
        }
        unsafe fn recv(&mut self, _: &(), _: &[IoBuf]) -> io::Result<usize> {
            unsupported()
        }
        unsafe fn send(&mut self, _: &(), bufs: &[IoBuf]) -> io::Result<usize> {
            let n: usize = bufs.iter().map(|b| b.iov_len).sum();
            self.copied += n;
            Ok(n)
        }
        fn can_lend_tx(&self, _: &()) -> bool {
            true
        }
        unsafe fn lend_tx(&mut self, _: &(), stream: Stream, at: u32) -> io::Result<()> {
            self.stream = Some((stream, at));
            Ok(())
        }
        fn send_lent(&mut self, _: &(), n: usize) -> io::Result<usize> {
            self.handed += n as u32;
            Ok(n)
        }
        fn take_acked(&mut self, _: &()) -> Option<u32> {
            if self.gone {
                return None;
            }
            Some(std::mem::take(&mut self.acked))
        }
        fn loan_outgrown(&self, _: &()) -> bool {
            self.outgrown
        }
        fn reclaim_tx(&mut self, _: &()) -> u32 {
            if let Some((st, at)) = self.stream.take() {
                let mut b = vec![0u8; self.handed as usize];
                st.copy_out(at, &mut b);
                self.reclaimed = b;
            }
            0
        }
    }

    /// The host's side of slot 0's TX stream: write and publish.
    fn host_write(chan: &Channel, data: &[u8]) {
        let tx = chan.region().tx(0).unwrap();
        let tail = tx.load_tail();
        tx.copy_in(tail, data);
        tx.publish_tail(tail.wrapping_add(data.len() as u32));
    }

    fn setup() -> (Channel, Sock<()>, Binding, Bind) {
        let geo = shm_proto::region::Geometry {
            max_sockets: 4,
            ..Default::default()
        };
        let (chan, _fd) = Channel::create(geo).unwrap();
        let by = Bind { sid: 1, slot: 0 };
        let mut s = Sock::new((), libc::AF_INET);
        s.kind = Kind::Connected;
        s.bindings.push(by);
        (chan, s, Binding::new(SockId::from_token(0)), by)
    }

    /// Lent TX (module doc): bytes are handed over without a copy, the host's head moves only by
    /// what was acknowledged, a tail moved back over lent bytes drops the channel, and when the
    /// loan ends the backend takes what it was handed.
    #[test]
    fn lent_tx_frees_only_acknowledged_bytes() {
        let (mut chan, mut s, mut bd, by) = setup();
        let mut b = Lender::default();
        let tx = chan.region().tx(0).unwrap();
        host_write(&chan, &[7u8; 1000]);
        let o = pump_tx(&mut b, &mut s, &mut chan, by, &mut bd, false).unwrap();
        assert!(o.done && o.err.is_none());
        assert_eq!((b.handed, b.copied), (1000, 0));
        assert_eq!((bd.tx_head, bd.tx_lent), (0, Some(1000)));
        assert_eq!(
            tx.load_head(),
            0,
            "nothing acknowledged: the host may not overwrite"
        );
        assert_eq!(s.lend_by, Some(by));
        b.acked = 600;
        pump_tx(&mut b, &mut s, &mut chan, by, &mut bd, false).unwrap();
        assert_eq!((bd.tx_head, tx.load_head()), (600, 600));
        host_write(&chan, &[8u8; 200]);
        pump_tx(&mut b, &mut s, &mut chan, by, &mut bd, false).unwrap();
        assert_eq!((b.handed, bd.tx_lent), (1200, Some(1200)));
        // The path outgrew the stream: the backend takes the 600 unacknowledged bytes back.
        b.outgrown = true;
        pump_tx(&mut b, &mut s, &mut chan, by, &mut bd, false).unwrap();
        assert_eq!((bd.tx_head, bd.tx_lent, s.lend_by), (1200, None, None));
        assert_eq!(tx.load_head(), 1200);
        let mut want = vec![7u8; 1000];
        want.extend([8u8; 200]);
        assert_eq!(b.reclaimed, want, "reclaim reads from the lent index");
    }

    #[test]
    fn lent_tx_tail_moved_back_is_a_violation_and_a_gone_loan_frees_everything() {
        let (mut chan, mut s, mut bd, by) = setup();
        let mut b = Lender::default();
        let tx = chan.region().tx(0).unwrap();
        host_write(&chan, &[1u8; 500]);
        pump_tx(&mut b, &mut s, &mut chan, by, &mut bd, false).unwrap();
        tx.publish_tail(400);
        assert!(pump_tx(&mut b, &mut s, &mut chan, by, &mut bd, false).is_err());
        tx.publish_tail(500);
        b.gone = true;
        pump_tx(&mut b, &mut s, &mut chan, by, &mut bd, false).unwrap();
        assert_eq!((bd.tx_head, bd.tx_lent, s.lend_by), (500, None, None));
        assert_eq!(tx.load_head(), 500);
    }

    #[test]
    fn shared_connections_are_copied_not_lent() {
        let (mut chan, mut s, mut bd, by) = setup();
        s.bindings.push(Bind { sid: 2, slot: 0 });
        let mut b = Lender::default();
        host_write(&chan, &[1u8; 10]);
        pump_tx(&mut b, &mut s, &mut chan, by, &mut bd, false).unwrap();
        assert_eq!((b.copied, b.handed), (10, 0), "two bindings: copied");
        assert!(b.stream.is_none() && s.lend_by.is_none());
        assert_eq!(bd.tx_head, 10);
    }

    /// What a copying backend was asked to do, in order.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Call {
        Send(usize),
        SendMore(usize),
        File(usize),
        Push,
    }

    /// A copying backend that records its calls: sends take at most `room` bytes (then
    /// WouldBlock), `send_file` answers `file_answer`.
    struct Recorder {
        calls: Vec<Call>,
        room: usize,
        file_answer: Option<i32>,
    }

    impl Recorder {
        fn new() -> Self {
            Recorder {
                calls: Vec::new(),
                room: usize::MAX,
                file_answer: None,
            }
        }
        fn take(&mut self, bufs: &[IoBuf]) -> io::Result<usize> {
            let n: usize = bufs.iter().map(|b| b.iov_len).sum::<usize>().min(self.room);
            if n == 0 {
                return Err(io::Error::from_raw_os_error(libc::EAGAIN));
            }
            self.room -= n;
            Ok(n)
        }
    }

    impl Backend for Recorder {
        connected_only!();
        fn setsockopt(&mut self, _: &(), _: i32, _: i32, _: &[u8]) -> io::Result<()> {
            Ok(())
        }
        fn getsockopt(&mut self, _: &(), _: i32, _: i32, _: &mut [u8]) -> io::Result<usize> {
            unsupported()
        }
        unsafe fn recv(&mut self, _: &(), _: &[IoBuf]) -> io::Result<usize> {
            unsupported()
        }
        unsafe fn send(&mut self, _: &(), bufs: &[IoBuf]) -> io::Result<usize> {
            let n = self.take(bufs)?;
            self.calls.push(Call::Send(n));
            Ok(n)
        }
        unsafe fn send_more(&mut self, _: &(), bufs: &[IoBuf]) -> io::Result<usize> {
            let n = self.take(bufs)?;
            self.calls.push(Call::SendMore(n));
            Ok(n)
        }
        fn push(&mut self, _: &()) {
            self.calls.push(Call::Push);
        }
        fn send_file(&mut self, _: &(), _: RawFd, _: u64, len: usize) -> io::Result<usize> {
            if let Some(e) = self.file_answer {
                return Err(io::Error::from_raw_os_error(e));
            }
            self.calls.push(Call::File(len));
            Ok(len)
        }
    }

    fn file_at(bd: &mut Binding, at: u32, len: u64) {
        let f = std::fs::File::open("/dev/null").unwrap();
        bd.files.push_back(FileRef {
            at,
            file: Rc::new(OwnedFd::from(f)),
            offset: 0,
            left: len,
        });
    }

    /// A socket whose close follows: its last bytes go with MSG_MORE and wait for the FIN
    /// (`tx_held`); without a close behind them a plain send; when the buffer filled, nothing
    /// is held (the short send pushed).
    #[test]
    fn last_bytes_before_a_close_wait_for_the_fin() {
        let (mut chan, mut s, mut bd, by) = setup();
        let mut b = Recorder::new();
        host_write(&chan, &[1u8; 100]);
        let o = pump_tx(&mut b, &mut s, &mut chan, by, &mut bd, true).unwrap();
        assert!(o.done && o.err.is_none());
        assert_eq!(b.calls, [Call::SendMore(100)]);
        assert!(s.tx_held, "the caller closes or pushes");

        let (mut chan, mut s, mut bd, by) = setup();
        let mut b = Recorder::new();
        host_write(&chan, &[1u8; 100]);
        pump_tx(&mut b, &mut s, &mut chan, by, &mut bd, false).unwrap();
        assert_eq!(b.calls, [Call::Send(100)]);
        assert!(!s.tx_held);

        // The buffer takes 60: the short send pushed what it queued; nothing is held.
        let (mut chan, mut s, mut bd, by) = setup();
        let mut b = Recorder::new();
        b.room = 60;
        host_write(&chan, &[1u8; 100]);
        let o = pump_tx(&mut b, &mut s, &mut chan, by, &mut bd, true).unwrap();
        assert!(!o.done);
        assert_eq!(b.calls, [Call::SendMore(60)]);
        assert!(!s.tx_held);

        // A file still to go after the bytes: they wait for it, not for the FIN.
        let (mut chan, mut s, mut bd, by) = setup();
        let mut b = Recorder::new();
        host_write(&chan, &[1u8; 100]);
        file_at(&mut bd, 100, 5000);
        host_write(&chan, &[2u8; 10]);
        let o = pump_tx(&mut b, &mut s, &mut chan, by, &mut bd, true).unwrap();
        assert!(o.done);
        assert_eq!(
            b.calls,
            [Call::Send(100), Call::File(5000), Call::SendMore(10)]
        );
        assert!(s.tx_held);

        // A file that does not go: nothing was held for it.
        let (mut chan, mut s, mut bd, by) = setup();
        let mut b = Recorder::new();
        b.file_answer = Some(libc::EAGAIN);
        host_write(&chan, &[1u8; 100]);
        file_at(&mut bd, 100, 5000);
        let o = pump_tx(&mut b, &mut s, &mut chan, by, &mut bd, true).unwrap();
        assert!(!o.done);
        assert_eq!(b.calls, [Call::Send(100)]);
        assert!(!s.tx_held);
    }
}
