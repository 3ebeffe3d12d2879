//! A poll group: one attach to the agent (one channel), owned by one thread.
//!
//! ```text
//!  poll(&mut self)                                   &self calls, any time between polls
//!   1 release: publish rx_head past the last          send / send_vectored / reserve+commit:
//!     batch's records, OP_RX_SPACE if rx_blocked        bytes into the conn's TX ring, tail
//!     deferred closes go out                            published at once
//!   2 flush: TX-changed bit per conn whose TX         flush: the marks, one agent doorbell
//!     tail moved, one agent doorbell                  shutdown / close / abort: commands,
//!   3 collect: accepted conns, changed slots            delivered at the next flush or poll
//!     (waiter 0's bitmap), each examined:
//!       listener -> handoff records -> Opened
//!       conn     -> Connected, records -> Message, Closed once, Writable after a WouldBlock
//!   4 nothing? spin, then announce + FUTEX_WAIT on the waiter's flag
//! ```
//!
//! Message views point into the conn's RX ring. They stay valid until the next `poll` (or
//! [`Group::release`]): only then does the group move `rx_head` past them, and a `close` of a
//! conn whose records are still held is deferred until then too, so the agent can neither
//! overwrite nor recycle the bytes while the borrow checker lets the application see them.
//!
//! Everything read from the region is untrusted: a record, index or handoff that cannot be true
//! kills the group (`EBADMSG` from every call), it never reads out of bounds.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shm_proto::record::{self, SNSTACK_FRAMING, SOL_SNSTACK};
use shm_proto::{
    handoff, prefetch, wake, Addr, Cmd, Consumer, Corrupt, Evt, OptVal, Producer, Region, Request,
    WireAddr, SF_CONNECTED, SF_ERROR, SF_RESET, SF_RX_FIN, SF_TX_SHUT,
};

use crate::framing::Framing;
use crate::sys::{self, Io};

/// Default agent socket when neither an argument nor `SNSTACK_AGENT` names one.
pub const DEFAULT_AGENT: &str = "/run/snstack/agent.sock";

/// The waiter slot a group registers (a group is its own process-wide channel).
const WAITER: usize = 0;
/// Default bound on a command's round trip (a socket, a bind, an accept): past it the call
/// fails with `ETIMEDOUT` (the agent is alive but does not answer).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Spin before a command wait sleeps on the futex.
const CALL_SPIN: Duration = Duration::from_micros(50);
/// Each futex sleep of a command wait; the agent's liveness is checked between them.
const WAIT_SLICE: Duration = Duration::from_millis(100);
/// Listen backlog of a service (the agent caps it).
const BACKLOG: i32 = 4096;

/// A connection of a group: its slot and the slot's generation, so a handle kept after the
/// connection was closed (and the slot given to another one) gets `EBADF`, never that other
/// connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conn {
    slot: u32,
    gen: u32,
}

impl Conn {
    /// The handle as one number (the C API's `uint64_t`): generation in the high half.
    pub fn to_u64(self) -> u64 {
        (u64::from(self.gen) << 32) | u64::from(self.slot)
    }

    pub fn from_u64(v: u64) -> Conn {
        Conn {
            slot: v as u32,
            gen: (v >> 32) as u32,
        }
    }

    /// A small number naming the connection among the group's live ones (its channel slot):
    /// an index for a per-connection table. A later connection may get the same index once
    /// this one is closed; compare the `Conn` itself to tell them apart.
    pub fn index(self) -> u32 {
        self.slot
    }

    /// The channel slot (for logs).
    pub fn slot(self) -> u32 {
        self.slot
    }
}

/// A service (listen address + framing) of a group, numbered from 0 in `serve` order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Service(pub u32);

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed its side (FIN) and every message before it was delivered. The
    /// connection can still send until the application closes it.
    PeerClosed,
    /// The peer reset the connection.
    Reset,
    /// The connection failed with this errno (a refused or timed-out connect, ...).
    Error(i32),
    /// The peer broke the framing; the agent reset the connection. The name is one of
    /// `shm_proto::record::REASONS` ("bad_request_line", ...).
    Malformed(&'static str),
}

impl CloseReason {
    /// The errno a socket would have reported (0 for a clean close).
    pub fn errno(&self) -> i32 {
        match self {
            CloseReason::PeerClosed => 0,
            CloseReason::Reset => libc::ECONNRESET,
            CloseReason::Error(e) => *e,
            CloseReason::Malformed(_) => libc::EPROTO,
        }
    }
}

/// One event of a batch. `Message::data` borrows the group until its next `poll`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A client connected to `service`.
    Opened {
        conn: Conn,
        peer: SocketAddr,
        service: Service,
    },
    /// A connection made with [`Group::connect`] is established.
    Connected { conn: Conn },
    /// One whole message (`part`: a piece of a message longer than `max_message`; more pieces
    /// follow, the last one with `part == false`).
    Message {
        conn: Conn,
        data: &'a [u8],
        part: bool,
    },
    /// A send that failed with `WouldBlock` would fit now.
    Writable { conn: Conn },
    /// The connection ended (reported once, after its last message). The application still
    /// closes it ([`Group::close`]) to free its slot.
    Closed { conn: Conn, reason: CloseReason },
}

/// An event as the group stores it: no borrow, the message as a place in the conn's RX ring.
#[derive(Clone, Copy, Debug)]
enum Raw {
    Opened(Conn, SocketAddr, Service),
    Connected(Conn),
    Message(Conn, u32, u32, bool),
    Writable(Conn),
    Closed(Conn, CloseReason),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Kind {
    #[default]
    Free,
    Listener(u32),
    Conn,
}

/// What the group knows of one channel slot.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    kind: Kind,
    gen: u32,
    service: u32,
    /// `connect` posted, `SF_CONNECTED` not seen yet.
    connecting: bool,
    /// RX head as published, and the head past the records handed out (held until release).
    rx_pub: u32,
    rx_read: u32,
    /// Our TX tail (published), and the tail at the last kick decision.
    tx_tail: u32,
    tx_kicked: u32,
    /// Bytes a send wanted when it got `WouldBlock` (0: none): `Writable` when they fit.
    want: u32,
    /// Bytes reserved by a `Reply` not yet committed (0: none).
    reserved: u32,
    /// The application shut down (or closed) the write side.
    shut: bool,
    /// `Closed` was reported.
    ended: bool,
    /// The application closed it while records were held: `Some(abort)` until release.
    closing: Option<bool>,
    /// Bookkeeping of the lists the slot is in (`ready`, `held`, `tx_dirty`).
    in_ready: bool,
    held: bool,
    dirty: bool,
}

/// Mutable state that `&self` calls (send, close, ...) touch while message views are alive.
struct Inner {
    cmd: Producer<Cmd>,
    evt: Consumer<Evt>,
    slots: Vec<Slot>,
    services: Vec<u32>,
    /// Slots to examine (changed, new, or cut short by the event budget).
    ready: VecDeque<u32>,
    /// Conns with records handed out and not released.
    held: Vec<u32>,
    /// Conns whose TX tail moved since the last flush.
    tx_dirty: Vec<u32>,
    /// Connections an `OP_ACCEPT` returned: slot, peer, service.
    accepted: VecDeque<(u32, WireAddr, u32)>,
    /// Closes deferred until release: slot, abort.
    closes: Vec<(u32, bool)>,
    /// A command was pushed and the agent not rung since.
    posted: bool,
    next_tag: u64,
    /// Tags whose caller gave up; a late `OP_SOCKET` success is closed again.
    retired: Vec<(u64, bool)>,
    /// The group is dead: every call fails with this errno.
    dead: Option<i32>,
    call_timeout: Duration,
}

/// A poll group. One per thread (it is `Send`, not `Sync`): `poll` takes `&mut self`, replies
/// and closes take `&self`, so a server replies inside its loop over a batch's messages.
pub struct Group {
    region: Region,
    inner: RefCell<Inner>,
    raw: Vec<Raw>,
    // Declared last: dropped last, it owns the mapping `region` points into.
    io: RefCell<Box<dyn Io + Send>>,
}

fn err(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

fn corrupt(inner: &mut Inner, _c: Corrupt) -> io::Error {
    inner.dead = Some(libc::EBADMSG);
    err(libc::EBADMSG)
}

impl Inner {
    fn new(region: &Region) -> Inner {
        let n = region.geometry().max_sockets as usize;
        Inner {
            cmd: region.cmd_producer(),
            evt: region.evt_consumer(),
            slots: vec![Slot::default(); n],
            services: Vec::new(),
            ready: VecDeque::with_capacity(n),
            held: Vec::with_capacity(n),
            tx_dirty: Vec::with_capacity(n),
            accepted: VecDeque::new(),
            closes: Vec::new(),
            posted: false,
            next_tag: 1,
            retired: Vec::new(),
            dead: None,
            call_timeout: CALL_TIMEOUT,
        }
    }

    fn check(&mut self, r: &Region) -> io::Result<()> {
        if let Some(e) = self.dead {
            return Err(err(e));
        }
        if r.header().dead.0.load(Ordering::Acquire) != 0 {
            self.dead = Some(libc::ECONNRESET);
            return Err(err(libc::ECONNRESET));
        }
        Ok(())
    }

    /// The slot of a live handle the application may still use.
    fn conn(&mut self, c: Conn) -> io::Result<&mut Slot> {
        match self.slots.get_mut(c.slot as usize) {
            Some(s) if s.kind == Kind::Conn && s.gen == c.gen && s.closing.is_none() => Ok(s),
            _ => Err(err(libc::EBADF)),
        }
    }

    fn ring(&mut self, r: &Region, io: &mut dyn Io) {
        if std::mem::take(&mut self.posted) && wake::must_ring(&r.header().agent.0.sleeping) {
            io.ring_agent();
        }
    }

    /// Pushes a command, waiting (bounded) while the ring is full.
    fn push(&mut self, r: &Region, io: &mut dyn Io, cmd: Cmd) -> io::Result<()> {
        self.check(r)?;
        loop {
            match self.cmd.push(cmd) {
                Ok(true) => {
                    self.posted = true;
                    return Ok(());
                }
                Ok(false) => {}
                Err(c) => return Err(corrupt(self, c)),
            }
            self.posted = true;
            self.ring(r, io);
            self.wait(r, io, |me| match me.cmd.free() {
                Ok(n) => Ok(n > 0),
                Err(c) => Err(corrupt(me, c)),
            })?;
        }
    }

    fn post(&mut self, r: &Region, io: &mut dyn Io, slot: u32, req: Request) -> io::Result<()> {
        self.push(r, io, req.to_cmd(slot))
    }

    /// Sends `req` and waits for its completion.
    fn call(&mut self, r: &Region, io: &mut dyn Io, slot: u32, req: Request) -> io::Result<Evt> {
        let tag = self.next_tag;
        self.next_tag += 1;
        let mut cmd = req.to_cmd(slot);
        cmd.tag = tag;
        self.push(r, io, cmd)?;
        self.ring(r, io);
        let mut got = None;
        let res = self.wait(r, io, |me| {
            me.drain(tag, &mut got)?;
            Ok(got.is_some())
        });
        match (res, got) {
            (Ok(()), Some(e)) => Ok(e),
            (Ok(()), None) => Err(err(libc::EIO)),
            (Err(e), _) => {
                self.retired
                    .push((tag, matches!(req, Request::Socket { .. })));
                Err(e)
            }
        }
    }

    /// Takes every completion on the event ring: `want`'s into `got`; late answers to retired
    /// calls are cleaned up (a socket nobody waits for any more is closed).
    fn drain(&mut self, want: u64, got: &mut Option<Evt>) -> io::Result<()> {
        loop {
            let e = match self.evt.pop() {
                Ok(Some(e)) => e,
                Ok(None) => return Ok(()),
                Err(c) => return Err(corrupt(self, c)),
            };
            if e.tag == want {
                *got = Some(e);
                continue;
            }
            if let Some(i) = self.retired.iter().position(|&(t, _)| t == e.tag) {
                let (_, socket) = self.retired.swap_remove(i);
                if socket && e.result >= 0 {
                    // Pushed without waiting: a full ring leaves it to the agent's cleanup
                    // when the group detaches.
                    if let Ok(true) = self.cmd.push(Request::Close.to_cmd(e.result as u32)) {
                        self.posted = true;
                    }
                }
            }
        }
    }

    /// Spins, then sleeps on the region's completion futex, until `cond` holds; fails when the
    /// agent is gone or does not answer within [`CALL_TIMEOUT`].
    fn wait(
        &mut self,
        r: &Region,
        io: &mut dyn Io,
        mut cond: impl FnMut(&mut Self) -> io::Result<bool>,
    ) -> io::Result<()> {
        let start = Instant::now();
        let mut n = 0u32;
        loop {
            if cond(self)? {
                return Ok(());
            }
            self.check(r)?;
            n += 1;
            if n % 64 == 0 && start.elapsed() > CALL_SPIN {
                break;
            }
            std::hint::spin_loop();
        }
        let h = r.header();
        loop {
            let seen = wake::prepare_wait(&h.region_seq.0, &h.region_waiters.0);
            let now = cond(self);
            if !matches!(now, Ok(false)) {
                wake::finish_wait(&h.region_waiters.0);
                return now.map(|_| ());
            }
            io.wait_region(&h.region_seq.0, seen, WAIT_SLICE);
            wake::finish_wait(&h.region_waiters.0);
            if cond(self)? {
                return Ok(());
            }
            self.check(r)?;
            if !io.alive() {
                self.dead = Some(libc::ECONNRESET);
                return Err(err(libc::ECONNRESET));
            }
            if start.elapsed() > self.call_timeout {
                return Err(err(libc::ETIMEDOUT));
            }
        }
    }

    /// Marks `slot` in the TX-changed bitmap when its TX tail moved since the last mark; the
    /// flush's doorbell decision follows when the mark set a summary bit
    /// (`shm_proto::changed::mark`).
    fn kick(&mut self, r: &Region, slot: u32) -> io::Result<()> {
        let s = &mut self.slots[slot as usize];
        s.dirty = false;
        if s.kind != Kind::Conn || s.tx_tail == s.tx_kicked {
            return Ok(());
        }
        s.tx_kicked = s.tx_tail;
        if r.mark_tx(slot) {
            self.posted = true;
        }
        Ok(())
    }

    fn flush(&mut self, r: &Region, io: &mut dyn Io) -> io::Result<()> {
        self.check(r)?;
        let mut d = std::mem::take(&mut self.tx_dirty);
        let mut res = Ok(());
        for &slot in &d {
            if res.is_ok() {
                res = self.kick(r, slot);
            } else {
                self.slots[slot as usize].dirty = false;
            }
        }
        d.clear();
        self.tx_dirty = d;
        self.ring(r, io);
        res
    }

    /// Close (or abort) `slot` now: its pending bytes kicked first, then the commands.
    fn close_now(&mut self, r: &Region, io: &mut dyn Io, slot: u32, abort: bool) -> io::Result<()> {
        if let Some(c) = r.sock(slot) {
            c.host
                .0
                .waiter_mask
                .fetch_and(!(1 << WAITER), Ordering::AcqRel);
        }
        let res = if abort {
            let mut v = [0u8; 8];
            v[..4].copy_from_slice(&1i32.to_ne_bytes());
            self.post(
                r,
                io,
                slot,
                Request::SetSockOpt {
                    level: libc::SOL_SOCKET,
                    name: libc::SO_LINGER,
                    len: 8,
                    val: OptVal::inline(&v),
                },
            )
        } else {
            self.kick(r, slot)
        };
        let s = &mut self.slots[slot as usize];
        *s = Slot {
            in_ready: s.in_ready,
            held: s.held,
            dirty: s.dirty,
            ..Slot::default()
        };
        res?;
        self.post(r, io, slot, Request::Close)
    }

    /// Publishes the RX heads past the records of the last batch and sends deferred closes.
    fn release(&mut self, r: &Region, io: &mut dyn Io) -> io::Result<()> {
        self.check(r)?;
        let mut held = std::mem::take(&mut self.held);
        let mut res = Ok(());
        for &slot in &held {
            let s = &mut self.slots[slot as usize];
            s.held = false;
            if s.kind != Kind::Conn || s.rx_read == s.rx_pub || res.is_err() {
                continue;
            }
            let (from, to, closing) = (s.rx_pub, s.rx_read, s.closing.is_some());
            s.rx_pub = to;
            let (Some(rx), Some(ctl)) = (r.rx(slot), r.sock(slot)) else {
                continue;
            };
            // We are the stream's only consumer: a head that moved under us is corruption.
            if !rx.cas_head(from, to) {
                res = Err(corrupt(self, Corrupt("rx head moved under the group")));
                continue;
            }
            if !closing && wake::rx_space_needed(&ctl.rx_head.0.blocked) {
                res = self.post(r, io, slot, Request::RxSpace);
            }
        }
        held.clear();
        self.held = held;
        res?;
        let mut res = Ok(());
        let mut closes = std::mem::take(&mut self.closes);
        for &(slot, abort) in &closes {
            if res.is_ok() {
                res = self.close_now(r, io, slot, abort);
            }
        }
        closes.clear();
        self.closes = closes;
        res
    }

    fn mark_ready(&mut self, slot: u32) {
        if let Some(s) = self.slots.get_mut(slot as usize) {
            if !s.in_ready {
                s.in_ready = true;
                self.ready.push_back(slot);
            }
        }
    }

    /// Takes `slot` as a connection of ours (handed off, accepted or connecting): watch it
    /// and examine it at once (bytes may have arrived before our waiter bit was set).
    fn adopt(&mut self, r: &Region, slot: u32, service: u32, connecting: bool) -> io::Result<Conn> {
        let (Some(ctl), Some(rx), Some(tx)) = (r.sock(slot), r.rx(slot), r.tx(slot)) else {
            return Err(corrupt(self, Corrupt("connection slot out of range")));
        };
        let gen = ctl.state.0.gen.load(Ordering::Acquire);
        let head = rx.load_head();
        let tail = tx.load_tail();
        let s = &mut self.slots[slot as usize];
        *s = Slot {
            kind: Kind::Conn,
            gen,
            service,
            connecting,
            rx_pub: head,
            rx_read: head,
            tx_tail: tail,
            tx_kicked: tail,
            in_ready: s.in_ready,
            held: s.held,
            dirty: s.dirty,
            ..Slot::default()
        };
        ctl.host
            .0
            .waiter_mask
            .fetch_or(1 << WAITER, Ordering::AcqRel);
        self.mark_ready(slot);
        Ok(Conn { slot, gen })
    }

    fn opened(
        &mut self,
        r: &Region,
        slot: u32,
        peer: WireAddr,
        service: u32,
        out: &mut Vec<Raw>,
    ) -> io::Result<()> {
        let Ok(peer) = SocketAddr::try_from(peer) else {
            return Err(corrupt(self, Corrupt("handed-off peer of no known family")));
        };
        if matches!(self.slots.get(slot as usize), Some(s) if matches!(s.kind, Kind::Listener(_))) {
            return Err(corrupt(self, Corrupt("handoff names a listener")));
        }
        let conn = self.adopt(r, slot, service, false)?;
        out.push(Raw::Opened(conn, peer, Service(service)));
        Ok(())
    }

    /// `OP_ACCEPT` on a listener: makes this group one of the agent's handoff takers again,
    /// and takes a queued connection if there is one. True when it got one.
    fn accept(&mut self, r: &Region, io: &mut dyn Io, slot: u32, service: u32) -> io::Result<bool> {
        let e = self.call(r, io, slot, Request::Accept { wait: false })?;
        if e.result < 0 {
            return Ok(false);
        }
        self.accepted
            .push_back((e.result as u32, e.addr(), service));
        Ok(true)
    }

    /// Examines one slot, appending at most `max - out.len()` events. False when the budget ran
    /// out before the slot had nothing more to say.
    fn examine(
        &mut self,
        r: &Region,
        io: &mut dyn Io,
        slot: u32,
        out: &mut Vec<Raw>,
        max: usize,
    ) -> io::Result<bool> {
        let s = self.slots[slot as usize];
        match s.kind {
            Kind::Free => Ok(true),
            Kind::Listener(svc) => self.examine_listener(r, io, slot, svc, out, max),
            Kind::Conn if s.closing.is_some() => Ok(true),
            Kind::Conn => self.examine_conn(r, slot, out, max),
        }
    }

    fn examine_listener(
        &mut self,
        r: &Region,
        io: &mut dyn Io,
        slot: u32,
        svc: u32,
        out: &mut Vec<Raw>,
        max: usize,
    ) -> io::Result<bool> {
        let (Some(rx), Some(ctl)) = (r.rx(slot), r.sock(slot)) else {
            return Ok(true);
        };
        loop {
            if out.len() >= max {
                return Ok(false);
            }
            match handoff::take(&rx) {
                Ok(Some(h)) => self.opened(r, h.slot, h.peer, svc, out)?,
                Ok(None) => break,
                Err(c) => return Err(corrupt(self, c)),
            }
        }
        // Connections waiting in the shared queue: the agent hands a taker at most 8 records
        // at a time and refills only when asked (or when the kernel queues more), so a burst
        // of connects leaves the rest in the queue. Ask (an accept also makes us a taker
        // again); the listener is examined again while that brings connections, and after an
        // EAGAIN the next change of the listener brings us back here.
        if ctl.state.0.accept_ready.load(Ordering::Acquire) > 0 && self.accept(r, io, slot, svc)? {
            self.mark_ready(slot);
        }
        Ok(true)
    }

    fn examine_conn(
        &mut self,
        r: &Region,
        slot: u32,
        out: &mut Vec<Raw>,
        max: usize,
    ) -> io::Result<bool> {
        let (Some(ctl), Some(rx), Some(tx)) = (r.sock(slot), r.rx(slot), r.tx(slot)) else {
            return Ok(true);
        };
        let st = &ctl.state.0;
        // Flags before the tail: the agent publishes the bytes before the flags that end them.
        let flags = st.flags.load(Ordering::Acquire);
        let s = self.slots[slot as usize];
        let conn = Conn { slot, gen: s.gen };
        if s.connecting {
            if flags & SF_CONNECTED != 0 {
                if out.len() >= max {
                    return Ok(false);
                }
                self.slots[slot as usize].connecting = false;
                out.push(Raw::Connected(conn));
            } else if flags & SF_ERROR != 0 {
                if out.len() >= max {
                    return Ok(false);
                }
                let e = st.error.load(Ordering::Acquire) as i32;
                let sl = &mut self.slots[slot as usize];
                sl.connecting = false;
                sl.ended = true;
                out.push(Raw::Closed(conn, CloseReason::Error(e)));
                return Ok(true);
            } else {
                return Ok(true);
            }
        }
        let tail = rx.load_tail();
        let mut head = s.rx_read;
        loop {
            if out.len() >= max {
                self.slots[slot as usize].rx_read = head;
                self.hold(slot);
                return Ok(false);
            }
            match record::next(&rx, head, tail) {
                Ok(Some(rec)) => {
                    out.push(Raw::Message(conn, rec.off as u32, rec.len, rec.part));
                    head = rec.next;
                }
                Ok(None) => break,
                Err(c) => return Err(corrupt(self, c)),
            }
        }
        if head != s.rx_read {
            self.slots[slot as usize].rx_read = head;
            self.hold(slot);
        }
        if !s.ended {
            let reason = if flags & SF_ERROR != 0 {
                let code = st.framing_error.load(Ordering::Acquire);
                let e = st.error.load(Ordering::Acquire) as i32;
                Some(match record::reason_name(code) {
                    Some(name) => CloseReason::Malformed(name),
                    None if flags & SF_RESET != 0 || e == libc::ECONNRESET => CloseReason::Reset,
                    None => CloseReason::Error(e),
                })
            } else if flags & SF_RESET != 0 {
                Some(CloseReason::Reset)
            } else if flags & SF_RX_FIN != 0 {
                Some(CloseReason::PeerClosed)
            } else {
                None
            };
            if let Some(reason) = reason {
                if out.len() >= max {
                    return Ok(false);
                }
                self.slots[slot as usize].ended = true;
                out.push(Raw::Closed(conn, reason));
            }
        }
        let s = self.slots[slot as usize];
        if s.want != 0 {
            if flags & (SF_ERROR | SF_TX_SHUT) != 0 || s.shut {
                self.slots[slot as usize].want = 0;
            } else {
                let free = match tx_free(&tx, s.tx_tail, s.reserved) {
                    Ok(n) => n,
                    Err(c) => return Err(corrupt(self, c)),
                };
                if free >= s.want {
                    if out.len() >= max {
                        return Ok(false);
                    }
                    self.slots[slot as usize].want = 0;
                    out.push(Raw::Writable(conn));
                }
            }
        }
        Ok(true)
    }

    /// Asks for the cache lines that examining and answering the first `max` ready connections
    /// will touch, all of them before the first is examined, so that their misses overlap
    /// (`shm_proto::prefetch`): first the control lines (the agent's producer index and state
    /// flags, our consumer head and producer line), then, from the bases those hold, the next
    /// message's first bytes and the line our next reply goes to.
    fn prefetch_ready(&self, r: &Region, max: usize) {
        let conns = || {
            self.ready
                .iter()
                .take(max)
                .filter(|&&slot| self.slots[slot as usize].kind == Kind::Conn)
        };
        for &slot in conns() {
            if let Some(ctl) = r.sock(slot) {
                prefetch::read(&ctl.rx_prod);
                prefetch::read(&ctl.state);
                prefetch::read(&ctl.tx_head);
                prefetch::write(&ctl.rx_head);
                prefetch::write(&ctl.tx_prod);
            }
        }
        for &slot in conns() {
            let s = &self.slots[slot as usize];
            if let (Some(rx), Some(tx)) = (r.rx(slot), r.tx(slot)) {
                prefetch::read(rx.ptr(rx.pieces(s.rx_read, 1)[0].0));
                // A reply to a drained stream goes to offset 0 (the send rewinds it).
                let at = if tx.load_head() == s.tx_tail {
                    0
                } else {
                    tx.pieces(s.tx_tail, 1)[0].0
                };
                prefetch::write(tx.ptr(at));
            }
        }
    }

    fn hold(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        if !s.held {
            s.held = true;
            self.held.push(slot);
        }
    }

    /// Gathers up to `max` events into `out` without blocking.
    fn collect(
        &mut self,
        r: &Region,
        io: &mut dyn Io,
        out: &mut Vec<Raw>,
        max: usize,
    ) -> io::Result<()> {
        self.check(r)?;
        let mut none = None;
        self.drain(0, &mut none)?;
        let (slots, ready) = (&mut self.slots, &mut self.ready);
        r.take_changed(WAITER, |slot| {
            if let Some(s) = slots.get_mut(slot as usize) {
                if !s.in_ready {
                    s.in_ready = true;
                    ready.push_back(slot);
                }
            }
        });
        self.prefetch_ready(r, max);
        while out.len() < max {
            // Connections an accept returned (in `serve`, or examining a listener just now).
            if let Some((slot, peer, svc)) = self.accepted.pop_front() {
                self.opened(r, slot, peer, svc, out)?;
                continue;
            }
            let Some(slot) = self.ready.pop_front() else {
                break;
            };
            self.slots[slot as usize].in_ready = false;
            if !self.examine(r, io, slot, out, max)? {
                self.slots[slot as usize].in_ready = true;
                self.ready.push_front(slot);
                break;
            }
        }
        // A sync accept in `examine` may have pushed commands: deliver them now.
        self.ring(r, io);
        Ok(())
    }
}

/// The events of one `poll`. Iterate it (`for ev in &events`); reply through
/// [`Events::group`] while iterating.
pub struct Events<'a> {
    group: &'a Group,
}

impl<'a> Events<'a> {
    pub fn len(&self) -> usize {
        self.group.raw.len()
    }

    pub fn is_empty(&self) -> bool {
        self.group.raw.is_empty()
    }

    /// The group, for replies and closes while the batch's messages are borrowed.
    pub fn group(&self) -> &'a Group {
        self.group
    }

    pub fn get(&self, i: usize) -> Option<Event<'a>> {
        self.group.raw.get(i).map(|r| self.group.event(r))
    }

    pub fn iter(&self) -> Iter<'a> {
        Iter {
            group: self.group,
            raw: self.group.raw.iter(),
        }
    }
}

/// The events of a batch, in order (no allocation).
pub struct Iter<'a> {
    group: &'a Group,
    raw: std::slice::Iter<'a, Raw>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = Event<'a>;

    fn next(&mut self) -> Option<Event<'a>> {
        self.raw.next().map(|r| self.group.event(r))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.raw.size_hint()
    }
}

impl<'a> IntoIterator for &Events<'a> {
    type Item = Event<'a>;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Bytes reserved at a connection's TX tail: fill them, then [`Reply::commit`] (or
/// [`Reply::commit_len`] for fewer). Dropped uncommitted, nothing is sent.
pub struct Reply<'g> {
    group: &'g Group,
    conn: Conn,
    a: (*mut u8, usize),
    b: (*mut u8, usize),
    done: bool,
}

impl Reply<'_> {
    pub fn len(&self) -> usize {
        self.a.1 + self.b.1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn conn(&self) -> Conn {
        self.conn
    }

    /// The reserved bytes: up to two pieces (the ring may wrap inside the reservation).
    pub fn pieces(&mut self) -> (&mut [u8], &mut [u8]) {
        // SAFETY: both pieces lie in the conn's TX ring beyond the published tail, inside the
        // free space `reserve` checked; the agent reads nothing there before the tail is
        // published, and the conn's `reserved` mark keeps any other writer of this group out
        // until commit or drop. `&mut self` makes the two slices the only views.
        unsafe {
            (
                std::slice::from_raw_parts_mut(self.a.0, self.a.1),
                std::slice::from_raw_parts_mut(self.b.0, self.b.1),
            )
        }
    }

    /// Copies `data` in at byte `at` of the reservation (panics past its end, as slices do).
    pub fn write_at(&mut self, at: usize, data: &[u8]) {
        assert!(at + data.len() <= self.len(), "write past the reservation");
        let (a, b) = self.pieces();
        let mut at = at;
        let mut data = data;
        if at < a.len() {
            let n = data.len().min(a.len() - at);
            a[at..at + n].copy_from_slice(&data[..n]);
            data = &data[n..];
            at = a.len();
        }
        let off = at - a.len();
        b[off..off + data.len()].copy_from_slice(data);
    }

    /// Publishes the whole reservation.
    pub fn commit(self) -> io::Result<()> {
        let n = self.len();
        self.commit_len(n)
    }

    /// Publishes the first `n` bytes (`n <= len`); the rest is given back.
    pub fn commit_len(mut self, n: usize) -> io::Result<()> {
        self.done = true;
        self.group.commit_raw(self.conn, n)
    }
}

impl Drop for Reply<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.group.commit_raw(self.conn, 0);
        }
    }
}

impl Group {
    /// Attaches to the agent: `agent`, else `$SNSTACK_AGENT`, else [`DEFAULT_AGENT`].
    pub fn attach(agent: Option<&Path>) -> io::Result<Group> {
        let env = std::env::var_os("SNSTACK_AGENT");
        let path = match (agent, &env) {
            (Some(p), _) => p,
            (None, Some(e)) => Path::new(e),
            (None, None) => Path::new(DEFAULT_AGENT),
        };
        let (region, io) = sys::attach(path)?;
        Ok(Group::with_io(region, Box::new(io)))
    }

    /// A group on a region whose memory `io` keeps alive (tests pass a scripted agent).
    pub(crate) fn with_io(region: Region, io: Box<dyn Io + Send>) -> Group {
        Group {
            inner: RefCell::new(Inner::new(&region)),
            raw: Vec::new(),
            region,
            io: RefCell::new(io),
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Inner, &Region, &mut dyn Io) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut inner = self.inner.borrow_mut();
        let mut io = self.io.borrow_mut();
        f(&mut inner, &self.region, &mut **io)
    }

    fn event(&self, r: &Raw) -> Event<'_> {
        match *r {
            Raw::Opened(conn, peer, service) => Event::Opened {
                conn,
                peer,
                service,
            },
            Raw::Connected(conn) => Event::Connected { conn },
            Raw::Writable(conn) => Event::Writable { conn },
            Raw::Closed(conn, reason) => Event::Closed { conn, reason },
            Raw::Message(conn, off, len, part) => {
                let data = match self.region.rx(conn.slot) {
                    // SAFETY: `record::next` validated `off + len` inside the conn's RX ring
                    // (a record never crosses the ring's end). The bytes stay put until the
                    // group publishes the head past them, which only `release` (next poll,
                    // `&mut self`) does; a close of this conn is deferred until then too, so
                    // the slot is not recycled while `&self` is borrowed. The agent writes
                    // only past the tail; one that scribbles here anyway changes message
                    // bytes of its own making, not memory safety of the mapping.
                    Some(rx) => unsafe {
                        std::slice::from_raw_parts(rx.ptr(off as usize), len as usize)
                    },
                    None => &[],
                };
                Event::Message { conn, data, part }
            }
        }
    }

    /// Declares a service: listen on `addr` with `framing`; messages longer than `max_message`
    /// come in parts. Several groups may serve one address (`SO_REUSEPORT`): the agent spreads
    /// new connections over them.
    pub fn serve(
        &self,
        addr: SocketAddr,
        framing: Framing,
        max_message: u32,
    ) -> io::Result<Service> {
        self.with(|inner, r, io| {
            let slot = socket(inner, r, io, addr, framing, max_message)?;
            let res = (|| {
                let one = 1i32.to_ne_bytes();
                for name in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
                    setopt(inner, r, io, slot, libc::SOL_SOCKET, name, &one)?;
                }
                result(inner.call(
                    r,
                    io,
                    slot,
                    Request::Bind {
                        addr: Addr::Inet(addr),
                    },
                )?)?;
                result(inner.call(r, io, slot, Request::Listen { backlog: BACKLOG })?)
            })();
            if let Err(e) = res {
                let _ = inner.post(r, io, slot, Request::Close);
                inner.ring(r, io);
                return Err(e);
            }
            let svc = inner.services.len() as u32;
            inner.services.push(slot);
            let gen = r
                .sock(slot)
                .map_or(0, |c| c.state.0.gen.load(Ordering::Acquire));
            inner.slots[slot as usize] = Slot {
                kind: Kind::Listener(svc),
                gen,
                ..Slot::default()
            };
            if let Some(c) = r.sock(slot) {
                c.host.0.waiter_mask.fetch_or(1 << WAITER, Ordering::AcqRel);
            }
            // Become a handoff taker now (the agent hands connections only to bindings that
            // accept); a connection already queued comes back at once.
            inner.accept(r, io, slot, svc)?;
            inner.mark_ready(slot);
            Ok(Service(svc))
        })
    }

    /// Connects to `addr` (clients, proxies). Returns at once; `Connected` or `Closed` follows.
    pub fn connect(
        &self,
        addr: SocketAddr,
        framing: Framing,
        max_message: u32,
    ) -> io::Result<Conn> {
        self.with(|inner, r, io| {
            let slot = socket(inner, r, io, addr, framing, max_message)?;
            // Watch it before connecting: SF_CONNECTED must mark our bitmap.
            let conn = inner.adopt(r, slot, u32::MAX, true)?;
            let e = inner.call(
                r,
                io,
                slot,
                Request::Connect {
                    addr: Addr::Inet(addr),
                    wait: false,
                },
            );
            match e {
                Ok(e) if e.result == 0 || e.result == -(libc::EINPROGRESS as i64) => Ok(conn),
                Ok(e) => {
                    let _ = inner.close_now(r, io, slot, false);
                    inner.ring(r, io);
                    Err(err((-e.result) as i32))
                }
                Err(e) => {
                    let _ = inner.close_now(r, io, slot, false);
                    Err(e)
                }
            }
        })
    }

    /// Waits for events: releases the last batch's messages, flushes, then collects up to
    /// `max_events`; with none, spins up to `spin` (no system call), then sleeps on the
    /// group's doorbell until `timeout` (`None`: no bound; the agent's death still ends it).
    pub fn poll(
        &mut self,
        max_events: usize,
        spin: Duration,
        timeout: Option<Duration>,
    ) -> io::Result<Events<'_>> {
        if max_events == 0 {
            return Err(err(libc::EINVAL));
        }
        self.raw.clear();
        let start = Instant::now();
        let region = self.region;
        let inner = self.inner.get_mut();
        let io = &mut **self.io.get_mut();
        let out = &mut self.raw;
        inner.release(&region, io)?;
        inner.flush(&region, io)?;
        inner.collect(&region, io, out, max_events)?;
        let mut n = 0u32;
        while out.is_empty() && start.elapsed() < spin {
            std::hint::spin_loop();
            n += 1;
            if n % 16 == 0 {
                inner.collect(&region, io, out, max_events)?;
            }
        }
        let w = region.waiter(WAITER).map(|w| &w.sleeping);
        while out.is_empty() {
            let left = match timeout {
                Some(t) => match t.checked_sub(start.elapsed()) {
                    Some(l) if !l.is_zero() => Some(l),
                    _ => break,
                },
                None => None,
            };
            let Some(w) = w else { break };
            wake::announce(w);
            let r = inner.collect(&region, io, out, max_events);
            if r.is_err() || !out.is_empty() {
                wake::retract(w);
                r?;
                break;
            }
            let slept = io.sleep(w, left);
            wake::retract(w);
            if let Err(e) = slept {
                inner.dead = Some(e);
                return Err(err(e));
            }
            inner.collect(&region, io, out, max_events)?;
        }
        Ok(Events { group: self })
    }

    /// Gives the last batch's messages back now instead of at the next poll (their views are
    /// gone: this takes `&mut self`).
    pub fn release(&mut self) -> io::Result<()> {
        self.raw.clear();
        let region = self.region;
        let inner = self.inner.get_mut();
        let io = &mut **self.io.get_mut();
        inner.release(&region, io)?;
        inner.flush(&region, io)
    }

    /// Sends `data` whole or not at all: `WouldBlock` when the TX ring lacks room (a
    /// `Writable` event follows when it has), `EMSGSIZE` when it never could. Published at
    /// once, kicked at the next [`Group::flush`] or poll.
    pub fn send(&self, conn: Conn, data: &[u8]) -> io::Result<()> {
        self.send_parts(conn, data.len(), std::iter::once(data))
    }

    /// [`Group::send`] of the concatenation of `bufs`.
    pub fn send_vectored(&self, conn: Conn, bufs: &[IoSlice<'_>]) -> io::Result<()> {
        let total = bufs.iter().map(|b| b.len()).sum();
        self.send_parts(conn, total, bufs.iter().map(|b| &b[..]))
    }

    fn send_parts<'d>(
        &self,
        conn: Conn,
        total: usize,
        parts: impl Iterator<Item = &'d [u8]>,
    ) -> io::Result<()> {
        self.with(|inner, r, _| {
            let (at, tx) = room(inner, r, conn, total)?;
            let mut off = at;
            for p in parts {
                tx.copy_in(off, p);
                off = off.wrapping_add(p.len() as u32);
            }
            publish(inner, conn.slot, at.wrapping_add(total as u32), &tx);
            Ok(())
        })
    }

    /// Reserves `n` bytes at the conn's TX tail to be written in place (all or nothing, as
    /// [`Group::send`]). One reservation per conn at a time (`EBUSY`).
    pub fn reserve(&self, conn: Conn, n: usize) -> io::Result<Reply<'_>> {
        let (a, b) = self.reserve_raw(conn, n)?;
        Ok(Reply {
            group: self,
            conn,
            a,
            b,
            done: false,
        })
    }

    /// The pieces of a reservation (the C API keeps them across calls).
    #[allow(clippy::type_complexity)]
    pub(crate) fn reserve_raw(
        &self,
        conn: Conn,
        n: usize,
    ) -> io::Result<((*mut u8, usize), (*mut u8, usize))> {
        self.with(|inner, r, _| {
            let (at, tx) = room(inner, r, conn, n)?;
            inner.slots[conn.slot as usize].reserved = n as u32;
            let [(o1, l1), (o2, l2)] = tx.pieces(at, n as u32);
            Ok(((tx.ptr(o1), l1), (tx.ptr(o2), l2)))
        })
    }

    /// Ends a reservation: publishes its first `n` bytes (0: cancels it).
    pub(crate) fn commit_raw(&self, conn: Conn, n: usize) -> io::Result<()> {
        self.with(|inner, r, _| {
            let s = inner.conn(conn)?;
            let reserved = std::mem::take(&mut s.reserved) as usize;
            if reserved == 0 {
                return Err(err(libc::EINVAL));
            }
            if n > reserved {
                return Err(err(libc::EINVAL));
            }
            if n > 0 {
                let tail = s.tx_tail.wrapping_add(n as u32);
                if let Some(tx) = r.tx(conn.slot) {
                    publish(inner, conn.slot, tail, &tx);
                }
            }
            Ok(())
        })
    }

    /// Bytes a send to `conn` could take now.
    pub fn writable(&self, conn: Conn) -> io::Result<usize> {
        self.with(|inner, r, _| {
            let s = inner.conn(conn)?;
            let tx = r.tx(conn.slot).ok_or_else(|| err(libc::EBADF))?;
            match tx_free(&tx, s.tx_tail, s.reserved) {
                Ok(n) => Ok(n as usize),
                Err(c) => Err(corrupt(inner, c)),
            }
        })
    }

    /// Marks every conn whose TX tail moved since the last flush in the TX-changed bitmap (no
    /// command) and rings the agent once, if it sleeps.
    pub fn flush(&self) -> io::Result<()> {
        self.with(|inner, r, io| inner.flush(r, io))
    }

    /// Shuts the write side (FIN after the bytes already sent). Messages still arrive.
    pub fn shutdown(&self, conn: Conn) -> io::Result<()> {
        self.with(|inner, r, io| {
            let s = inner.conn(conn)?;
            if s.connecting {
                return Err(err(libc::ENOTCONN));
            }
            s.shut = true;
            inner.kick(r, conn.slot)?;
            inner.post(r, io, conn.slot, Request::Shutdown { how: libc::SHUT_WR })
        })
    }

    /// Tells the agent what the next request sent on this HTTP/1.1 client connection
    /// ([`crate::Framing::Http1Response`]) is, so that its response is framed right (a HEAD's
    /// has no body; a 2xx to CONNECT ends HTTP). Call it before sending the request; requests
    /// not announced are taken for GETs. Up to 64 may be outstanding (`ENOBUFS` beyond, from
    /// the agent, which then ignores it: send fewer at a time).
    pub fn expect_response(&self, conn: Conn, to: crate::ResponseTo) -> io::Result<()> {
        self.with(|inner, r, io| {
            inner.conn(conn)?;
            let v = [to.code()];
            inner.post(
                r,
                io,
                conn.slot,
                Request::SetSockOpt {
                    level: shm_proto::record::SOL_SNSTACK,
                    name: shm_proto::record::SNSTACK_EXPECT_RESPONSE,
                    len: 1,
                    val: OptVal::inline(&v),
                },
            )
        })
    }

    /// Closes the connection: bytes already sent still go out, then FIN. The handle is dead
    /// at once; if this batch holds messages of it, the command waits for the next poll.
    pub fn close(&self, conn: Conn) -> io::Result<()> {
        self.end(conn, false)
    }

    /// Resets the connection (`SO_LINGER` 0, then close): unsent bytes are dropped.
    pub fn abort(&self, conn: Conn) -> io::Result<()> {
        self.end(conn, true)
    }

    fn end(&self, conn: Conn, abort: bool) -> io::Result<()> {
        self.with(|inner, r, io| {
            let s = inner.conn(conn)?;
            if s.reserved != 0 {
                return Err(err(libc::EBUSY));
            }
            if s.held {
                s.closing = Some(abort);
                inner.closes.push((conn.slot, abort));
                return Ok(());
            }
            inner.close_now(r, io, conn.slot, abort)
        })
    }

    /// The service a conn was opened by (`None` for conns made by `connect`, or a dead handle).
    pub fn service(&self, conn: Conn) -> Option<Service> {
        let mut inner = self.inner.borrow_mut();
        let s = inner.conn(conn).ok()?;
        (s.service != u32::MAX).then_some(Service(s.service))
    }

    /// Bound on each command round trip (default 10 s): past it the call fails with
    /// `ETIMEDOUT`.
    pub fn set_call_timeout(&mut self, t: Duration) {
        self.inner.get_mut().call_timeout = t;
    }

    /// The region's geometry (ring sizes: a message is at most half the RX ring).
    pub fn geometry(&self) -> shm_proto::region::Geometry {
        self.region.geometry()
    }

    /// How long a poll should spin before it sleeps, as the drop-in library decides it:
    /// `SNSTACK_SPIN_US` when set, else what the agent wrote into the region
    /// (`snstack-agent --host-spin-us`, 0 by default: sleep at once, the best CPU per request
    /// when cores are scarce; spinning buys latency only where the host has a core to spare).
    pub fn spin_hint(&self) -> Duration {
        let env = std::env::var("SNSTACK_SPIN_US")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok());
        match env {
            Some(us) => Duration::from_micros(us),
            None => Duration::from_nanos(u64::from(self.region.geometry().spin_ns)),
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // Kick what was sent; the control socket's close then makes the agent drain and close
        // every connection of the group.
        let _ = self.release();
    }
}

fn result(e: Evt) -> io::Result<Evt> {
    if e.result < 0 {
        Err(err(i32::try_from(-e.result).unwrap_or(libc::EIO)))
    } else {
        Ok(e)
    }
}

fn setopt(
    inner: &mut Inner,
    r: &Region,
    io: &mut dyn Io,
    slot: u32,
    level: i32,
    name: i32,
    v: &[u8],
) -> io::Result<()> {
    let req = Request::SetSockOpt {
        level,
        name,
        len: v.len(),
        val: OptVal::inline(v),
    };
    result(inner.call(r, io, slot, req)?).map(|_| ())
}

/// A new framed stream socket of the agent's: its slot.
fn socket(
    inner: &mut Inner,
    r: &Region,
    io: &mut dyn Io,
    addr: SocketAddr,
    framing: Framing,
    max_message: u32,
) -> io::Result<u32> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let e = result(inner.call(
        r,
        io,
        0,
        Request::Socket {
            domain,
            ty: libc::SOCK_STREAM,
            protocol: 0,
        },
    )?)?;
    let slot = match u32::try_from(e.result) {
        Ok(s) if r.sock(s).is_some() => s,
        _ => return Err(corrupt(inner, Corrupt("socket completion names no slot"))),
    };
    let spec = framing.spec(max_message).encode();
    if let Err(e) = setopt(inner, r, io, slot, SOL_SNSTACK, SNSTACK_FRAMING, &spec) {
        let _ = inner.post(r, io, slot, Request::Close);
        inner.ring(r, io);
        return Err(e);
    }
    Ok(slot)
}

/// Checks that `total` bytes fit `conn`'s TX ring now: the tail to write them at, and the
/// ring. Remembers a `WouldBlock` so a `Writable` event follows.
/// Free TX space at `tail`. While a reservation is open its pieces were worked out against the
/// stream's current base, so an empty stream must not be rewound under it (the committed bytes
/// would be published at the wrong offsets and stale ring bytes sent instead).
fn tx_free(tx: &shm_proto::Stream, tail: u32, reserved: u32) -> Result<u32, Corrupt> {
    if reserved != 0 {
        tx.free_keeping_base(tail)
    } else {
        tx.writable(tail)
    }
}

fn room(
    inner: &mut Inner,
    r: &Region,
    conn: Conn,
    total: usize,
) -> io::Result<(u32, shm_proto::Stream)> {
    inner.check(r)?;
    let s = inner.conn(conn)?;
    if s.reserved != 0 {
        return Err(err(libc::EBUSY));
    }
    if s.connecting {
        return Err(err(libc::ENOTCONN));
    }
    if s.shut {
        return Err(err(libc::EPIPE));
    }
    let (Some(ctl), Some(tx)) = (r.sock(conn.slot), r.tx(conn.slot)) else {
        return Err(err(libc::EBADF));
    };
    if ctl.state.0.flags.load(Ordering::Acquire) & (SF_TX_SHUT | SF_ERROR) != 0 {
        return Err(err(libc::EPIPE));
    }
    if total > tx.size() as usize {
        return Err(err(libc::EMSGSIZE));
    }
    let tail = s.tx_tail;
    let free = match tx.writable(tail) {
        Ok(n) => n as usize,
        Err(c) => return Err(corrupt(inner, c)),
    };
    if free < total {
        inner.slots[conn.slot as usize].want = total as u32;
        return Err(io::ErrorKind::WouldBlock.into());
    }
    Ok((tail, tx))
}

/// Publishes `tail` as `slot`'s TX tail and queues the slot for the next flush.
fn publish(inner: &mut Inner, slot: u32, tail: u32, tx: &shm_proto::Stream) {
    tx.publish_tail(tail);
    let s = &mut inner.slots[slot as usize];
    s.tx_tail = tail;
    if !s.dirty {
        s.dirty = true;
        inner.tx_dirty.push(slot);
    }
}
