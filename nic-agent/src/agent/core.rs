//! The agent's sans-IO core: every attached process (session + channel), the socket table, fork
//! tickets and the reuseport table, driven by inputs and read through outputs.
//!
//! ```text
//!  inputs (time passed in)                     outputs
//!  attach(chan, cred, ticket, now) -> sid      poll_action() -> RingDoorbells(sid)
//!  detach(sid, now)                                           WatchPid { ticket, pid }
//!  handle_command(sid, cmd, now)                              UnwatchPid(ticket)
//!  process_commands(now)  (every ring)                        Release { sid, chan, killed }
//!  handle_ready(events, now) / poll_backend / poll_local
//!  handle_timeout(now)    (drains, tickets)    next_deadline(), snapshot()
//!  ticket_child_exited(ticket, now)
//! ```
//!
//! The core reads no clock and makes no system call except through its [`Backend`] (sockets,
//! and the host facts policy asks for: capabilities, parent pids, random secrets). Its
//! channels are plain shared memory handed in by the shell ([`super::Agent`]), which holds
//! every descriptor (epoll, control connections, doorbell and waiter eventfds, pidfds) and does
//! what the actions ask. The one wake-up the core does itself is the futex bump of a channel
//! flush, which is part of publishing to shared memory. The helpers live next door, one job per
//! file: `commands.rs`, `listeners.rs`, `bindings.rs`, `datapath.rs`, `tickets.rs`.

use std::collections::VecDeque;

use super::*;

/// One attached process.
pub(super) struct Proc {
    pub(super) sess: Session<Binding>,
    pub(super) chan: Box<Channel>,
    /// The process is gone: no more commands; finishing drains only.
    pub(super) closing: bool,
    /// Files it opened for sending by reference (`OP_FILE_OPEN`), by id; references queued in
    /// bindings hold their own `Rc`, so a file closed meanwhile stays open until they are sent.
    pub(super) files: HashMap<u32, Rc<OwnedFd>>,
    pub(super) next_file: u32,
    /// Its connection events (opened, failed), for `snstack top`.
    pub(super) conns: ConnCounters,
}

impl Proc {
    /// Posts the completion of command `tag` (about `slot`) to this process.
    pub(super) fn complete(
        &mut self,
        tag: u64,
        slot: u32,
        result: i64,
        data: Payload<'_>,
    ) -> Result<(), Violation> {
        self.chan.complete(tag, slot, result, data)
    }
}

/// Something the shell does for the core (the core has no descriptors).
#[must_use]
pub enum Action {
    /// Session `sid`'s channel owes doorbells to sleeping waiters: write them
    /// ([`Channel::ring_owed`] on [`Core::channel_mut`]) now or, while more input is queued, at
    /// a later flush.
    RingDoorbells(u32),
    /// Watch the child of fork ticket `ticket` (a pidfd in the agent's epoll set); when it
    /// exits, or is already gone, call [`Core::ticket_child_exited`].
    WatchPid { ticket: u64, pid: i32 },
    /// Fork ticket `ticket` is claimed or gone: stop watching its child.
    UnwatchPid(u64),
    /// Session `sid` is gone: close its control connection and doorbell, and release its
    /// region. `killed`: the channel was dropped (or the agent stops) and owes every waiter a
    /// doorbell, to be rung first.
    Release {
        sid: u32,
        chan: Box<Channel>,
        killed: bool,
    },
}

/// A process's credentials, from `SO_PEERCRED` (never from the process itself).
#[derive(Clone, Copy, Debug)]
pub struct Cred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

pub struct Core<B: Backend> {
    pub(super) backend: B,
    pub(super) procs: BTreeMap<u32, Proc>,
    next_sid: u32,
    /// Every OS socket held for the processes (a shared one once).
    pub(super) socks: SockTable<B::Sock>,
    pub(super) tickets: Tickets<SockId>,
    pub(super) reuseport: ReuseportTable,
    retired: Counters,
    /// Connection events of the processes that are gone.
    retired_conns: ConnCounters,
    dropped: u64,
    /// The last processes whose channel was dropped (`stats::RECENT_DROPS`), oldest first.
    recent_drops: VecDeque<DroppedProc>,
    attaches: u64,
    pub(super) next_timer: Option<Instant>,
    /// When the oldest unconsumed accept handoff reaches its hold time (listeners.rs).
    pub(super) handoff_timer: Option<Instant>,
    /// Listeners that have takers (accept handoff).
    pub(super) handoff_lids: Vec<SockId>,
    /// Violations found while serving an event or another session's command: the channels are
    /// dropped once the current step is over.
    pub(super) failed: Vec<(u32, Violation)>,
    actions: VecDeque<Action>,
    /// The time of the input being handled (deadlines are counted from it).
    pub(super) now: Instant,
    sockevs: Vec<SockEvent>,
    /// Scratch for the slots one take of a TX-changed bitmap found (kept to avoid allocating).
    marked: Vec<u32>,
    /// Framed connections' records and malformed closes (payload API).
    pub(super) payload: crate::stats::PayloadStats,
    /// TLS termination's counters.
    pub(super) tls_term: crate::stats::TlsTermStats,
    /// Ports whose connections the agent terminates TLS for (`--tls-port`).
    pub(super) tls_ports: std::collections::HashMap<u16, std::sync::Arc<rustls::ServerConfig>>,
}

/// The engine's direct receive path into the channel (snstack_tcp::sink): a socket's bytes go
/// to its active binding's RX stream, as [`sock::pump_rx`] would put them.
struct DirectRx<'a, S> {
    socks: &'a SockTable<S>,
    procs: &'a mut BTreeMap<u32, Proc>,
}

impl<S> crate::backend::RxSink for DirectRx<'_, S> {
    fn deliver(&mut self, token: u64, data: &[u8]) -> usize {
        let Some(s) = self.socks.get(SockId::from_token(token)) else {
            return 0;
        };
        let Some(b) = s.active else {
            return 0;
        };
        let Some(p) = self.procs.get_mut(&b.sid) else {
            return 0;
        };
        if p.closing {
            return 0;
        }
        let Some((bd, false)) = p.sess.table.get_any_mut(b.slot) else {
            return 0;
        };
        sock::deliver(s, &mut p.chan, b.slot, &mut bd.rx_tail, data)
    }
}

impl<B: Backend> Core<B> {
    pub fn new(backend: B, now: Instant) -> Self {
        Core {
            backend,
            procs: BTreeMap::new(),
            next_sid: 1,
            socks: SockTable::default(),
            tickets: Tickets::default(),
            reuseport: ReuseportTable::default(),
            retired: Counters::default(),
            retired_conns: ConnCounters::default(),
            dropped: 0,
            recent_drops: VecDeque::new(),
            attaches: 0,
            next_timer: None,
            handoff_timer: None,
            handoff_lids: Vec::new(),
            failed: Vec::new(),
            actions: VecDeque::with_capacity(64),
            now,
            sockevs: Vec::with_capacity(256),
            marked: Vec::with_capacity(64),
            payload: Default::default(),
            tls_ports: Default::default(),
            tls_term: Default::default(),
        }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The next thing the shell must do, oldest first.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub(super) fn act(&mut self, a: Action) {
        self.actions.push_back(a);
    }

    /// Session `sid`'s channel (the shell registers waiters and writes owed doorbells).
    pub fn channel_mut(&mut self, sid: u32) -> Option<&mut Channel> {
        self.procs.get_mut(&sid).map(|p| &mut *p.chan)
    }

    /// When [`Core::handle_timeout`] has work next (drains, fork tickets).
    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.next_timer, self.handoff_timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A live process has commands waiting in its ring.
    pub fn cmds_pending(&self) -> bool {
        self.procs
            .values()
            .any(|p| !p.closing && p.chan.cmds_pending())
    }

    /// Completions wait for room in some event ring (the host frees it without a doorbell).
    pub fn has_backlog(&self) -> bool {
        self.procs.values().any(|p| p.chan.backlog() > 0)
    }

    /// Tells every live process that the agent is about to sleep (they ring its doorbell);
    /// `polling`: all but the hot ones, whose commands the agent's timer will pick up
    /// (host_poll.rs).
    pub fn announce_sleep(&self, polling: bool) {
        for p in self.procs.values().filter(|p| !p.closing) {
            if !(polling && p.chan.hot()) {
                p.chan.announce_sleep();
            }
        }
    }

    /// The agent is about to sleep: each channel's round of publications ends. True when some
    /// live process is answering a batch the agent published (host_poll.rs).
    pub fn end_round(&mut self) -> bool {
        let mut hot = false;
        for p in self.procs.values_mut() {
            p.chan.end_round();
            hot |= !p.closing && p.chan.hot();
        }
        hot
    }

    /// Polling stopped paying: every process rings the doorbell again.
    pub fn cool_all(&mut self) {
        for p in self.procs.values_mut() {
            p.chan.cool();
        }
    }

    pub fn retract_sleep(&self) {
        for p in self.procs.values().filter(|p| !p.closing) {
            p.chan.retract_sleep();
        }
    }

    /// The ticket a child presents at attach (`secret`), if process `cred` may claim it:
    /// `Err(errno)` otherwise (docs/fork-model.md, *Tickets*).
    pub fn ticket_for_child(&self, secret: u64, cred: Cred) -> Result<u64, i32> {
        let Some(tid) = self.tickets.find(secret) else {
            debug!(pid = cred.pid, "child attach: no such ticket");
            return Err(libc::ENOENT);
        };
        let Some(t) = self.tickets.get(tid) else {
            return Err(libc::ENOENT);
        };
        let allowed = ticket::claim_allowed(t, cred.pid, cred.uid, || {
            self.backend.parent_pid(cred.pid).ok()
        });
        if let Err(e) = allowed {
            warn!(
                pid = cred.pid,
                uid = cred.uid,
                ticket_parent = t.parent_pid,
                ticket_child = ?t.child_pid,
                "child attach refused: not the ticket's child"
            );
            return Err(e);
        }
        Ok(tid)
    }

    /// A new session over `chan` (set up by the shell): a plain attach, or (with a ticket from
    /// [`Core::ticket_for_child`]) the child of a fork taking over the sockets of its parent
    /// under the same slot numbers. Returns the session id and the number of sockets inherited.
    pub fn attach(
        &mut self,
        chan: Box<Channel>,
        cred: Cred,
        ticket: Option<u64>,
        now: Instant,
    ) -> (u32, usize) {
        self.now = now;
        let max = chan.region().geometry().max_sockets;
        let mut sid = self.next_sid;
        while sid == 0 || self.procs.contains_key(&sid) {
            sid = sid.wrapping_add(1);
        }
        self.next_sid = sid.wrapping_add(1);
        let sess = Session::new(cred.pid, cred.uid, cred.gid, max);
        let mut features = 0;
        if self.backend.file_refs() {
            features |= FEAT_FILE_REFS;
        }
        if self.backend.urgent_data() {
            features |= FEAT_URGENT;
        }
        chan.header().features.store(features, Ordering::Relaxed);
        let p = Proc {
            sess,
            chan,
            closing: false,
            files: HashMap::new(),
            next_file: 0,
            conns: ConnCounters::default(),
        };
        self.procs.insert(sid, p);
        self.attaches += 1;
        // The child's slots are ready before it can map the region.
        let inherited = ticket.map_or(0, |tid| self.claim(sid, tid));
        self.drop_failed();
        (sid, inherited)
    }

    /// The process closed its control connection (exited): close its bindings as `close()` at
    /// exit would, letting TX bytes already written drain.
    pub fn detach(&mut self, sid: u32, now: Instant) {
        self.now = now;
        self.late_fork_children(sid);
        let Some(p) = self.procs.get_mut(&sid) else {
            return;
        };
        let live = p.sess.table.live_count();
        p.closing = true;
        // Connections handed to it and not accepted go back to listeners others still hold.
        self.withdraw_session(sid, false);
        let Some(p) = self.procs.get(&sid) else {
            return;
        };
        for slot in p.sess.table.used_slots() {
            let live = self
                .procs
                .get(&sid)
                .is_some_and(|p| p.sess.table.is_live(slot));
            if live {
                self.close_binding(Bind { sid, slot });
            }
        }
        if let Some(p) = self.procs.get(&sid) {
            info!(
                pid = p.sess.pid,
                session = sid,
                sockets = live,
                draining = p.sess.table.draining_count(),
                "process detached"
            );
        }
        self.drop_failed();
    }

    /// Drops session `sid`'s channel for `why` (a malformed control message, a failed attach).
    pub fn drop_channel(&mut self, sid: u32, why: &Violation, now: Instant) {
        self.now = now;
        self.drop_proc(sid, why);
        self.drop_failed();
    }

    /// Drops the channels of the processes that violated the protocol.
    pub(super) fn drop_failed(&mut self) {
        while let Some((sid, v)) = self.failed.pop() {
            self.drop_proc(sid, &v);
        }
    }

    /// Drops a misbehaving process's channel: one error line, `dead = 1`, its bindings removed
    /// at once (sockets it shared with other processes stay open for them).
    pub(super) fn drop_proc(&mut self, sid: u32, why: &Violation) {
        let Some(p) = self.procs.get_mut(&sid) else {
            return;
        };
        if p.closing {
            warn!(
                pid = p.sess.pid,
                session = sid,
                "abandoning drains of an exited process: {why}"
            );
        } else {
            error!(
                pid = p.sess.pid,
                uid = p.sess.uid,
                gid = p.sess.gid,
                session = sid,
                "dropping channel: {why}"
            );
            self.dropped += 1;
            if self.recent_drops.len() == RECENT_DROPS {
                self.recent_drops.pop_front();
            }
            self.recent_drops.push_back(DroppedProc {
                pid: p.sess.pid,
                uid: p.sess.uid,
                reason: why.to_string(),
                at: self.now,
                io: p.chan.counters,
                conns: p.conns,
            });
        }
        p.chan.kill();
        p.closing = true;
        self.withdraw_session(sid, false);
        let Some(p) = self.procs.get(&sid) else {
            return;
        };
        for slot in p.sess.table.used_slots() {
            self.finish_binding(Bind { sid, slot });
        }
        if let Some(p) = self.procs.remove(&sid) {
            self.retired.add(&p.chan.counters);
            self.retired_conns.add(&p.conns);
            self.act(Action::Release {
                sid,
                chan: p.chan,
                killed: true,
            });
        }
    }

    /// One decoded command of session `sid`. A violation drops that session's channel. (The
    /// loop runs whole rings, [`Core::process_commands`]; tests feed single commands.)
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn handle_command(&mut self, sid: u32, cmd: Command, now: Instant) {
        self.now = now;
        if let Err(v) = self.exec(sid, cmd) {
            self.failed.push((sid, v));
        }
        self.drop_failed();
    }

    /// Every attached process's command ring, up to [`CMD_BATCH`] commands each. True when
    /// there was a command.
    pub fn process_commands(&mut self, now: Instant) -> bool {
        self.now = now;
        let mut work = false;
        let mut cursor = 0u32;
        while let Some(sid) = self.procs.range(cursor..).next().map(|(&s, _)| s) {
            for _ in 0..CMD_BATCH {
                let Some(p) = self.procs.get_mut(&sid) else {
                    break;
                };
                // Back-pressure: a host that does not drain its events gets no more commands run.
                let limit = p.chan.region().geometry().evt_entries as usize * 4;
                if p.closing || p.chan.backlog() >= limit {
                    break;
                }
                let r = match p.chan.pop_cmd() {
                    Ok(Some(c)) => match p.sess.decode(&c) {
                        Ok(cmd) => self.exec(sid, cmd),
                        Err(v) => Err(v),
                    },
                    Ok(None) => break,
                    Err(v) => Err(v),
                };
                work = true;
                if let Err(v) = r {
                    self.failed.push((sid, v));
                }
                if !self.failed.is_empty() {
                    break;
                }
            }
            self.drop_failed();
            // New TX bytes the host marked (after its commands: a command posted after bytes
            // whose mark this take misses was ordered after those bytes, and the commands that
            // care drain the stream themselves, docs/channel.md, *TX-changed bitmap*).
            work |= self.tx_marked(sid);
            match sid.checked_add(1) {
                Some(c) => cursor = c,
                None => break,
            }
        }
        work
    }

    /// Drains the TX streams session `sid` marked in its TX-changed bitmap. True when any was.
    fn tx_marked(&mut self, sid: u32) -> bool {
        let mut slots = std::mem::take(&mut self.marked);
        slots.clear();
        if let Some(p) = self.procs.get_mut(&sid).filter(|p| !p.closing) {
            p.chan.take_tx(&mut slots);
        }
        for &slot in &slots {
            self.tx_changed(Bind { sid, slot });
        }
        let any = !slots.is_empty();
        self.marked = slots;
        if any {
            self.drop_failed();
        }
        any
    }

    /// Readiness of backend sockets, as the backend reported it.
    pub fn handle_ready(&mut self, evs: &[SockEvent], now: Instant) {
        self.now = now;
        for ev in evs {
            self.on_ready(SockId::from_token(ev.token), ev.ready);
        }
        self.drop_failed();
    }

    /// Polls the backend (its descriptor was readable, or its ring holds input); received
    /// in-order payload goes straight into the RX streams of the sockets' active bindings where
    /// there is room ([`DirectRx`]). True when something was ready.
    pub fn poll_backend(&mut self, now: Instant) -> bool {
        let mut evs = std::mem::take(&mut self.sockevs);
        evs.clear();
        let mut sink = DirectRx {
            socks: &self.socks,
            procs: &mut self.procs,
        };
        if let Err(e) = self.backend.poll_into(&mut evs, &mut sink) {
            error!("backend poll: {e}");
        }
        let work = !evs.is_empty();
        self.handle_ready(&evs, now);
        self.sockevs = evs;
        work
    }

    /// Readiness the backend made without a descriptor (loopback connections: a peer's
    /// `send` made this end readable). Served in the same iteration as the commands that caused
    /// it, so the peer's RX stream is published before the flush wakes its process.
    pub fn poll_local(&mut self, now: Instant) -> bool {
        let mut work = false;
        // Each round can cause the next (recv frees space: the writer is writable again);
        // bounded so the command rings are not starved.
        for _ in 0..LOCAL_ROUNDS {
            if !self.backend.has_local_events() {
                break;
            }
            let mut evs = std::mem::take(&mut self.sockevs);
            evs.clear();
            self.backend.poll_local(&mut evs);
            self.handle_ready(&evs, now);
            self.sockevs = evs;
            work = true;
        }
        work
    }

    /// Drains past their deadline and fork tickets past theirs.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        self.handoff_timeout(now);
        self.drop_failed();
        let Some(t) = self.next_timer else { return };
        if t > now {
            return;
        }
        self.next_timer = None;
        let mut expired = Vec::new();
        for (&sid, p) in &self.procs {
            for slot in p.sess.table.used_slots() {
                let Some((b, true)) = p.sess.table.get_any(slot) else {
                    continue;
                };
                match b.drain_deadline {
                    Some(d) if d <= now => expired.push(Bind { sid, slot }),
                    Some(d) => arm(&mut self.next_timer, d),
                    None => {}
                }
            }
        }
        for b in expired {
            debug!(session = b.sid, slot = b.slot, "drain timed out, closing");
            self.finish_binding(b);
        }
        for tid in self.tickets.expired(now) {
            debug!("fork ticket expired unclaimed");
            self.drop_ticket(tid);
        }
        if let Some(d) = self.tickets.next_deadline() {
            arm(&mut self.next_timer, d);
        }
        self.drop_failed();
    }

    /// Once per loop iteration: each channel's events, futex bump and dirty-socket wake-ups
    /// ([`Channel::flush`]); doorbells owed come out as [`Action::RingDoorbells`]. Processes
    /// whose last drain finished are released.
    pub fn flush(&mut self) {
        let mut finished = Vec::new();
        for (&sid, p) in self.procs.iter_mut() {
            if p.closing {
                if p.sess.table.live_count() + p.sess.table.draining_count() == 0 {
                    finished.push(sid);
                }
                continue;
            }
            if let Err(v) = p.chan.flush() {
                self.failed.push((sid, v));
            }
            if p.chan.owes() {
                self.actions.push_back(Action::RingDoorbells(sid));
            }
        }
        self.drop_failed();
        for sid in finished {
            if let Some(p) = self.procs.remove(&sid) {
                debug!(
                    pid = p.sess.pid,
                    session = sid,
                    "last drain finished, region released"
                );
                self.retired.add(&p.chan.counters);
                self.retired_conns.add(&p.conns);
                self.act(Action::Release {
                    sid,
                    chan: p.chan,
                    killed: false,
                });
            }
        }
    }

    /// The agent stops: every channel dies, every socket closes.
    pub fn shutdown(&mut self) {
        for (sid, mut p) in std::mem::take(&mut self.procs) {
            p.chan.kill();
            self.act(Action::Release {
                sid,
                chan: p.chan,
                killed: true,
            });
        }
        for id in self.socks.ids() {
            if let Some(s) = self.socks.remove(id) {
                self.close_os(s);
            }
        }
    }

    /// Counts a connection event of session `sid` (`f` picks the counter).
    pub(super) fn count_conn(
        procs: &mut BTreeMap<u32, Proc>,
        sid: u32,
        f: impl FnOnce(&mut ConnCounters),
    ) {
        if let Some(p) = procs.get_mut(&sid) {
            f(&mut p.conns);
        }
    }

    /// Counts a failed connection (or connection attempt) of binding `who` when `errno` is a
    /// connection error ([`crate::stats::is_connection_error`]).
    pub(super) fn count_error(procs: &mut BTreeMap<u32, Proc>, who: Option<Bind>, errno: i32) {
        if let Some(b) = who.filter(|_| crate::stats::is_connection_error(errno)) {
            Self::count_conn(procs, b.sid, |c| c.errors += 1);
        }
    }

    /// Terminate TLS on these local ports (`--tls-port`) with this server configuration.
    pub fn set_tls_termination(
        &mut self,
        ports: &[u16],
        cfg: std::sync::Arc<rustls::ServerConfig>,
    ) {
        for &p in ports {
            self.tls_ports.insert(p, cfg.clone());
        }
    }

    /// The sockets with kTLS keys and their counters (`stats --sockets`; asks the backend for
    /// their addresses).
    pub fn tls_sockets(&mut self) -> Vec<crate::stats::TlsSockSnapshot> {
        let mut out = Vec::new();
        for (_, so) in self.socks.iter() {
            let Some(k) = so.ktls.as_deref() else {
                continue;
            };
            let (tx, rx) = (k.opts.suite(true), k.opts.suite(false));
            if tx.is_none() && rx.is_none() {
                continue;
            }
            let Some(b) = so.active.or(so.bindings.first().copied()) else {
                continue;
            };
            let c = k.rx.as_ref().map(|p| p.counts).unwrap_or_default();
            out.push(crate::stats::TlsSockSnapshot {
                pid: self.procs.get(&b.sid).map_or(0, |p| p.sess.pid),
                slot: b.slot,
                local: self.backend.local_addr(&so.os).ok(),
                peer: self.backend.peer_addr(&so.os).ok(),
                tx: tx.map(|s| s.label()),
                rx: rx.map(|s| s.label()),
                tx_records: k.tx_records,
                tx_bytes: k.tx_bytes,
                rx_records: c.records,
                rx_bytes: c.bytes,
                decrypt_errors: c.errors,
            });
        }
        out.sort_by_key(|t| (t.pid, t.slot));
        out
    }

    /// Counters for `snstack-agent stats` (the shell adds its own).
    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot {
            io: self.retired,
            channels_dropped: self.dropped,
            attaches: self.attaches,
            tickets: self.tickets.len() as u64,
            conns: self.retired_conns,
            dropped: self.recent_drops.iter().cloned().collect(),
            payload: self.payload,
            tls_term: self.tls_term,
            ..Default::default()
        };
        for (&sid, p) in &self.procs {
            let draining = p.sess.table.draining_count() as u64;
            let channel_bytes = p.chan.resident_bytes();
            if !p.closing {
                s.processes += 1;
                s.procs.push(ProcSnapshot {
                    session: sid,
                    pid: p.sess.pid,
                    uid: p.sess.uid,
                    sockets: p.sess.table.live_count() as u64,
                    draining,
                    io: p.chan.counters,
                    conns: p.conns,
                    channel_bytes,
                    backlog: p.chan.backlog() as u64,
                });
            }
            s.draining += draining;
            s.io.add(&p.chan.counters);
            s.conns.add(&p.conns);
            s.channel_bytes += channel_bytes;
        }
        s.sockets = self.socks.len() as u64;
        s.loopback = self.backend.loop_stats();
        s.engine = self.backend.engine_stats();
        for (_, so) in self.socks.iter() {
            let queued = so.listener.as_ref().map_or(0, |l| l.queue.len()) as u64;
            s.sockets += queued;
            s.accept_queued += queued;
            if so.bindings.len() > 1 {
                s.shared += 1;
            }
        }
        s
    }
}

#[cfg(test)]
mod tests;
