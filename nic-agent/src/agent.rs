//! The agent's single-threaded event loop: control plane (attach, fork-ticket claims, waiter
//! doorbells, stats), the command rings of every attached process, readiness of backend sockets,
//! and the execution of commands against the shared socket table.
//!
//! ```text
//!  loop {
//!    epoll_wait(agent set: signalfd, control listener, control conns, doorbells, pidfds,
//!               backend fd)  timeout 0 while busy; after --spin-us idle: announce sleep,
//!               re-check rings, block
//!    backend readiness  -> accept queues, connect results, RX/TX pumps
//!    every command ring -> decode (violations drop the channel) -> execute
//!    timers             -> drains and fork tickets past their deadline
//!    flush per channel  -> overflowed events, one futex bump, dirty-socket wake-ups, counters
//!  }
//! ```
//!
//! Sockets live in one table ([`SockTable`]); a session's slot is a *binding* of one of them.
//! After a fork several sessions bind the same socket: a listener's accept queue is shared by all
//! of them, a connection's RX goes to one active binding and moves on when that one closes (see
//! docs/fork-model.md). Every change of a socket's state is published to all its bindings.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shm_proto::msg::{Hello, Reply, HELLO_ATTACH, HELLO_ATTACH_CHILD, HELLO_STATS, HELLO_WAITER};
use shm_proto::region::Geometry;
use shm_proto::*;
use thiserror::Error;
use tracing::{debug, error, info, warn};

use crate::backend::{Backend, ConnectState, Readiness, SockEvent};
use crate::channel::Channel;
use crate::session::{self, Command, OptPolicy, ReuseportTable, Session, Violation};
use crate::sock::{self, Bind, Binding, Kind, Listener, Parked, Sock, SockId, SockTable};
use crate::spin::{Idle, SpinPolicy};
use crate::stats::{Counters, Snapshot};
use crate::sys;
use crate::ticket::{self, Tickets};

/// How long a closed socket may take to hand its TX bytes to the network.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Commands taken from one ring per iteration (fairness between processes).
const CMD_BATCH: usize = 256;
/// Control connections that have not said hello yet (each holds an agent fd).
const MAX_PENDING_CONNS: usize = 1024;
/// Rounds of backend-local readiness served per loop iteration.
const LOCAL_ROUNDS: usize = 8;
/// While spinning, the agent epoll set (control connections, doorbells, backend readiness) is
/// polled at most this often; the command rings and loopback events every iteration. A
/// zero-timeout epoll_wait is a syscall on the path of every command otherwise.
const EPOLL_EVERY: Duration = Duration::from_micros(4);
/// The same for a backend whose input the loop reads from memory ([`Backend::rx_pending`]):
/// the epoll set is polled every this many iterations, without a clock read.
const EPOLL_ITERS: u32 = 64;
/// Iterations a doorbell may wait while more input is queued (see `run`).
const DOORBELL_DEFER: u32 = 4;

const TOK_SIGNAL: u64 = 0;
const TOK_LISTENER: u64 = 1;
const TOK_BACKEND: u64 = 2;
const KIND_MASK: u64 = 0xff << 56;
const ID_MASK: u64 = !KIND_MASK;
/// A control connection that has not attached yet.
const KIND_CONN: u64 = 1 << 56;
/// The control connection of an attached process.
const KIND_CTL: u64 = 2 << 56;
/// The doorbell eventfd of an attached process.
const KIND_BELL: u64 = 3 << 56;
/// The pidfd of a fork ticket's child.
const KIND_PIDFD: u64 = 4 << 56;

/// Settings of `snstack-agent run`.
#[derive(Clone, Debug)]
pub struct Config {
    pub socket: PathBuf,
    pub geometry: Geometry,
    pub spin: Duration,
}

#[derive(Debug, Error)]
pub enum StartupError {
    #[error("{what}: {err}")]
    Io { what: String, err: io::Error },
    #[error("{0}")]
    Invalid(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> StartupError {
    let what = what.into();
    move |err| StartupError::Io { what, err }
}

/// Starts the agent and runs it until SIGTERM/SIGINT.
pub fn run<B: Backend>(cfg: Config, backend: B) -> Result<(), StartupError> {
    let mut agent = Agent::new(cfg, backend)?;
    agent.run();
    Ok(())
}

/// One attached process.
struct Proc {
    sess: Session<Binding>,
    chan: Channel,
    ctl: Option<OwnedFd>,
    bell: Option<OwnedFd>,
    /// The process is gone: no more commands; finishing drains only.
    closing: bool,
}

fn neg(errno: i32) -> i64 {
    -i64::from(errno)
}

fn err_of(e: &io::Error) -> i64 {
    neg(sys::errno_of(e))
}

fn arm(timer: &mut Option<Instant>, at: Instant) {
    if timer.map_or(true, |t| at < t) {
        *timer = Some(at);
    }
}

pub struct Agent<B: Backend> {
    cfg: Config,
    epoll: sys::Epoll,
    _sigfd: OwnedFd,
    sigfd_raw: RawFd,
    listener: OwnedFd,
    socket_id: Option<(u64, u64)>,
    backend: B,
    pending: HashMap<u64, OwnedFd>,
    next_conn: u64,
    procs: BTreeMap<u32, Proc>,
    next_sid: u32,
    /// Every OS socket held for the processes (a shared one once).
    socks: SockTable<B::Sock>,
    tickets: Tickets<SockId>,
    /// pidfds of ticket children, by ticket id.
    pidfds: HashMap<u64, OwnedFd>,
    reuseport: ReuseportTable,
    retired: Counters,
    dropped: u64,
    attaches: u64,
    next_timer: Option<Instant>,
    spin: SpinPolicy,
    /// Iterations the owed doorbells have waited.
    deferred: u32,
    /// Violations found while serving an event or another session's command: the channels are
    /// dropped once the current step is over.
    failed: Vec<(u32, Violation)>,
    stop: bool,
    evbuf: Vec<libc::epoll_event>,
    sockevs: Vec<SockEvent>,
}

/// Creates the parent directory, clears a stale socket file, refuses to steal a live one.
fn prepare_socket_path(path: &Path) -> Result<(), StartupError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(io_err(format!("creating {}", parent.display())))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if sys::seqpacket_connect(path).is_ok() {
                return Err(StartupError::Invalid(format!(
                    "another agent is already listening on {}",
                    path.display()
                )));
            }
            std::fs::remove_file(path)
                .map_err(io_err(format!("removing stale socket {}", path.display())))
        }
        Ok(_) => Err(StartupError::Invalid(format!(
            "{} exists and is not a socket",
            path.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("checking {}", path.display()))(e)),
    }
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

impl<B: Backend> Agent<B> {
    pub fn new(cfg: Config, backend: B) -> Result<Self, StartupError> {
        cfg.geometry
            .offsets()
            .map_err(|e| StartupError::Invalid(e.to_string()))?;
        sys::ignore_sigpipe();
        match sys::raise_nofile_limit() {
            Ok(n) => debug!("RLIMIT_NOFILE {n}"),
            Err(e) => warn!("cannot raise RLIMIT_NOFILE: {e}"),
        }
        let epoll = sys::Epoll::new().map_err(io_err("epoll_create"))?;
        let sigfd = sys::signalfd(&[libc::SIGTERM, libc::SIGINT]).map_err(io_err("signalfd"))?;
        prepare_socket_path(&cfg.socket)?;
        let listener = sys::seqpacket_listen(&cfg.socket)
            .map_err(io_err(format!("binding {}", cfg.socket.display())))?;
        let socket_id = sys::file_id(&cfg.socket);
        let cleanup = |e: StartupError| {
            let _ = std::fs::remove_file(&cfg.socket);
            e
        };
        std::fs::set_permissions(&cfg.socket, std::fs::Permissions::from_mode(0o666))
            .map_err(io_err(format!("chmod {}", cfg.socket.display())))
            .map_err(cleanup)?;
        let setup = || -> io::Result<()> {
            epoll.add(sigfd.as_raw_fd(), sys::EV_IN, TOK_SIGNAL)?;
            epoll.add(listener.as_raw_fd(), sys::EV_IN, TOK_LISTENER)?;
            epoll.add(backend.wait_fd(), sys::EV_IN, TOK_BACKEND)
        };
        setup().map_err(io_err("epoll_ctl")).map_err(cleanup)?;
        info!(
            socket = %cfg.socket.display(),
            max_sockets = cfg.geometry.max_sockets,
            rx = cfg.geometry.rx_size,
            tx = cfg.geometry.tx_size,
            "snstack-agent listening"
        );
        let spin = cfg.spin;
        Ok(Agent {
            sigfd_raw: sigfd.as_raw_fd(),
            _sigfd: sigfd,
            cfg,
            epoll,
            listener,
            socket_id,
            backend,
            pending: HashMap::new(),
            next_conn: 1,
            procs: BTreeMap::new(),
            next_sid: 1,
            socks: SockTable::default(),
            tickets: Tickets::default(),
            pidfds: HashMap::new(),
            reuseport: ReuseportTable::default(),
            retired: Counters::default(),
            dropped: 0,
            attaches: 0,
            next_timer: None,
            spin: SpinPolicy::new(spin),
            deferred: 0,
            failed: Vec::new(),
            stop: false,
            evbuf: sys::event_buf(256),
            sockevs: Vec::with_capacity(256),
        })
    }

    pub fn run(&mut self) {
        let mut last_epoll = Instant::now();
        let mut iter: u32 = 0;
        let mut idle = None; // what the last iteration's idle pass asked for (None: it had work)
        while !self.stop {
            iter = iter.wrapping_add(1);
            let peek = self.backend.rx_pending();
            // The clock is read only where something depends on it: a spin decision, timers
            // (at least every CLOCK_MAX_ITERS iterations), and the epoll pacing of backends
            // that cannot be peeked at.
            let clock = self.spin.tick() || idle == Some(Idle::Check) || peek.is_none();
            let mut now = clock.then(|| {
                self.spin.clock_read();
                Instant::now()
            });
            if let Some(t) = now.filter(|&t| self.spin.sample_due(t)) {
                self.spin
                    .sample(t, sys::involuntary_switches(), sys::cpu_pressure_us());
            }
            let sleepy = idle == Some(Idle::Check)
                && now.is_some_and(|t| self.spin.check(t))
                && !self.backend.has_local_events();
            let mut timeout = 0;
            if sleepy {
                for p in self.procs.values().filter(|p| !p.closing) {
                    p.chan.announce_sleep();
                }
                if !self
                    .procs
                    .values()
                    .any(|p| !p.closing && p.chan.cmds_pending())
                    && self.backend.rx_pending() != Some(true)
                {
                    timeout = self.sleep_timeout(now.unwrap_or_else(Instant::now));
                }
            }
            let do_epoll = sleepy
                || match (peek, now) {
                    // A peekable backend is polled from its ring; the epoll set (control
                    // connections, doorbells, timers) every EPOLL_ITERS iterations.
                    (Some(_), _) => iter % EPOLL_ITERS == 0,
                    (None, Some(t)) => t.duration_since(last_epoll) >= EPOLL_EVERY,
                    (None, None) => true,
                };
            let n = if do_epoll {
                if let Some(t) = now {
                    last_epoll = t;
                }
                match self.epoll.wait(&mut self.evbuf, timeout) {
                    Ok(n) => n,
                    Err(e) => {
                        error!("epoll_wait: {e}");
                        0
                    }
                }
            } else {
                0
            };
            if sleepy {
                for p in self.procs.values().filter(|p| !p.closing) {
                    p.chan.retract_sleep();
                }
                if timeout != 0 {
                    // Asleep for a while: timers need the time after it.
                    now = Some(Instant::now());
                }
            }
            let (mut work, polled) = self.handle_events(n);
            if !polled && self.backend.rx_pending() == Some(true) {
                work |= self.on_backend();
            }
            work |= self.process_commands();
            work |= self.on_local_events();
            if let Some(t) = now {
                self.run_timers(t);
            }
            // Doorbells wait while more input is already queued (the next iteration serves it
            // before the woken host takes this CPU), for at most DOORBELL_DEFER iterations:
            // interrupt moderation that adds no latency to an idle agent.
            let more = work
                && (self.backend.rx_pending() == Some(true)
                    || self
                        .procs
                        .values()
                        .any(|p| !p.closing && p.chan.cmds_pending()));
            let ring = !more || self.deferred >= DOORBELL_DEFER;
            self.deferred = if ring { 0 } else { self.deferred + 1 };
            self.flush_all(ring);
            if work {
                self.spin.on_work();
                idle = None;
            } else {
                idle = Some(self.spin.on_idle());
            }
        }
        self.shutdown();
    }

    fn sleep_timeout(&self, now: Instant) -> i32 {
        if self.procs.values().any(|p| p.chan.backlog() > 0) {
            // The host frees event-ring space without a doorbell: poll for it.
            return 1;
        }
        match self.next_timer {
            None => -1,
            Some(t) if t <= now => 0,
            Some(t) => (t - now).as_millis().clamp(1, i32::MAX as u128) as i32,
        }
    }

    /// Dispatches the agent epoll's events: (anything happened, the backend was polled).
    fn handle_events(&mut self, n: usize) -> (bool, bool) {
        let mut work = false;
        let mut backend_ready = false;
        for i in 0..n {
            let (token, _bits) = (self.evbuf[i].u64, self.evbuf[i].events);
            match (token & KIND_MASK, token & ID_MASK) {
                (0, TOK_SIGNAL) => self.on_signal(),
                (0, TOK_LISTENER) => self.on_listener(),
                (0, TOK_BACKEND) => backend_ready = true,
                (KIND_CONN, id) => self.on_pending(id),
                (KIND_CTL, id) => self.on_ctl(id as u32),
                (KIND_PIDFD, id) => self.on_pidfd(id),
                (KIND_BELL, id) => {
                    if let Some(b) = self.procs.get(&(id as u32)).and_then(|p| p.bell.as_ref()) {
                        sys::eventfd_drain(b.as_raw_fd());
                    }
                }
                _ => warn!("unknown epoll token {token:#x}"),
            }
            work = true;
        }
        if backend_ready {
            work |= self.on_backend();
        }
        (work, backend_ready)
    }

    fn on_signal(&mut self) {
        loop {
            match sys::read_signal(self.sigfd_raw) {
                Ok(Some(sig)) => {
                    info!("signal {sig}: shutting down");
                    self.stop = true;
                }
                Ok(None) => return,
                Err(e) => {
                    error!("reading signalfd: {e}");
                    return;
                }
            }
        }
    }

    fn on_listener(&mut self) {
        loop {
            match sys::accept_unix(self.listener.as_raw_fd()) {
                Ok(fd) => {
                    if self.pending.len() >= MAX_PENDING_CONNS {
                        warn!("too many control connections without a hello; refusing one");
                        continue;
                    }
                    let id = self.next_conn & ID_MASK;
                    self.next_conn = self.next_conn.wrapping_add(1);
                    if let Err(e) = self.epoll.add(fd.as_raw_fd(), sys::EV_IN, KIND_CONN | id) {
                        warn!("control connection: epoll_ctl: {e}");
                        continue;
                    }
                    self.pending.insert(id, fd);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::ECONNABORTED)) => {
                    continue
                }
                Err(e) => {
                    warn!("accepting a control connection: {e}");
                    return;
                }
            }
        }
    }

    fn reply(fd: RawFd, status: i32, len: u64) {
        if let Err(e) = sys::send_fds(fd, &Reply::new(status as u32, len).encode(), &[]) {
            debug!("control reply: {e}");
        }
    }

    fn send_stats(&self, fd: RawFd) {
        let text = self.snapshot().render();
        Self::reply(fd, 0, text.len() as u64);
        if let Err(e) = sys::send_fds(fd, text.as_bytes(), &[]) {
            debug!("stats reply: {e}");
        }
    }

    /// A message on a control connection that has not attached yet.
    fn on_pending(&mut self, id: u64) {
        let Some(fd) = self.pending.get(&id).map(|f| f.as_raw_fd()) else {
            return;
        };
        let mut buf = [0u8; 64];
        let (n, _fds, trunc) = match sys::recv_fds(fd, &mut buf) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                debug!("control connection: {e}");
                self.pending.remove(&id);
                return;
            }
        };
        if n == 0 {
            self.pending.remove(&id);
            return;
        }
        let hello = if trunc {
            None
        } else {
            Hello::decode(&buf[..n])
        };
        let Some(h) = hello else {
            warn!("control connection: malformed hello, closing it");
            self.pending.remove(&id);
            return;
        };
        if h.version != VERSION {
            warn!(
                "control connection speaks channel version {}, we speak {VERSION}",
                h.version
            );
            Self::reply(fd, libc::EPROTONOSUPPORT, 0);
            self.pending.remove(&id);
            return;
        }
        match h.kind {
            HELLO_ATTACH => {
                if let Some(fd) = self.pending.remove(&id) {
                    self.attach(fd, None);
                }
            }
            HELLO_ATTACH_CHILD => {
                if let Some(fd) = self.pending.remove(&id) {
                    self.attach(fd, Some(h.arg));
                }
            }
            HELLO_STATS => {
                self.send_stats(fd);
                self.pending.remove(&id);
            }
            _ => Self::reply(fd, libc::EINVAL, 0),
        }
    }

    /// A new session: a plain attach, or (with a ticket secret) the child of a fork taking over
    /// the sockets of its parent under the same slot numbers.
    fn attach(&mut self, fd: OwnedFd, secret: Option<u64>) {
        let raw = fd.as_raw_fd();
        let cred = match sys::peer_cred(raw) {
            Ok(c) => c,
            Err(e) => {
                warn!("attach: SO_PEERCRED: {e}");
                Self::reply(raw, sys::errno_of(&e), 0);
                return;
            }
        };
        let ticket = match secret {
            None => None,
            Some(secret) => {
                let Some(tid) = self.tickets.find(secret) else {
                    debug!(pid = cred.pid, "child attach: no such ticket");
                    Self::reply(raw, libc::ENOENT, 0);
                    return;
                };
                let Some(t) = self.tickets.get(tid) else {
                    Self::reply(raw, libc::ENOENT, 0);
                    return;
                };
                let allowed =
                    ticket::claim_allowed(t, cred.pid, cred.uid, || sys::parent_pid(cred.pid).ok());
                if let Err(e) = allowed {
                    warn!(
                        pid = cred.pid,
                        uid = cred.uid,
                        ticket_parent = t.parent_pid,
                        ticket_child = ?t.child_pid,
                        "child attach refused: not the ticket's child"
                    );
                    Self::reply(raw, e, 0);
                    return;
                }
                Some(tid)
            }
        };
        let geo = self.cfg.geometry;
        let made =
            Channel::create(geo).and_then(|(chan, memfd)| Ok((chan, memfd, sys::eventfd()?)));
        let (chan, memfd, bell) = match made {
            Ok(x) => x,
            Err(e) => {
                warn!(pid = cred.pid, "attach: creating the region: {e}");
                Self::reply(raw, sys::errno_of(&e), 0);
                return;
            }
        };
        let total = chan.region().offsets().total;
        let mut sid = self.next_sid;
        while sid == 0 || self.procs.contains_key(&sid) {
            sid = sid.wrapping_add(1);
        }
        self.next_sid = sid.wrapping_add(1);
        let sess = Session::new(cred.pid, cred.uid, cred.gid, geo.max_sockets);
        self.procs.insert(
            sid,
            Proc {
                sess,
                chan,
                ctl: None,
                bell: None,
                closing: false,
            },
        );
        self.attaches += 1;
        // The child's slots are ready before it can map the region.
        let inherited = ticket.map_or(0, |tid| self.claim(sid, tid));
        let reply = Reply::new(0, total).encode();
        let sent = sys::send_fds(raw, &reply, &[memfd.as_raw_fd(), bell.as_raw_fd()]);
        drop(memfd);
        let reg = sent.and_then(|_| {
            self.epoll
                .modify(raw, sys::EV_IN, KIND_CTL | u64::from(sid))
                .and_then(|_| {
                    self.epoll
                        .add(bell.as_raw_fd(), sys::EV_IN, KIND_BELL | u64::from(sid))
                })
        });
        if let Err(e) = reg {
            warn!(pid = cred.pid, "attach: sending the region: {e}");
            // As if the process exited at once: what it inherited is released.
            self.detach(sid);
            self.drop_failed();
            return;
        }
        if let Some(p) = self.procs.get_mut(&sid) {
            p.ctl = Some(fd);
            p.bell = Some(bell);
        }
        info!(
            pid = cred.pid,
            uid = cred.uid,
            gid = cred.gid,
            session = sid,
            region = total,
            inherited,
            child = secret.is_some(),
            "process attached"
        );
        self.drop_failed();
    }

    /// Turns ticket `tid`'s references into bindings of session `sid` (same slot numbers).
    /// Returns the number of sockets bound.
    fn claim(&mut self, sid: u32, tid: u64) -> usize {
        let Some(t) = self.tickets.remove(tid) else {
            return 0;
        };
        self.pidfds.remove(&tid);
        let mut n = 0;
        for (slot, id) in t.slots {
            let Some(s) = self.socks.get_mut(id) else {
                continue;
            };
            s.tickets = s.tickets.saturating_sub(1);
            let b = Bind { sid, slot };
            let Some(p) = self.procs.get_mut(&sid) else {
                self.release_if_unused(id);
                continue;
            };
            if p.sess.table.insert_at(slot, Binding::new(id)).is_err() {
                warn!(
                    session = sid,
                    slot, "child attach: slot unusable, socket not inherited"
                );
                self.release_if_unused(id);
                continue;
            }
            p.chan.region().reset_sock(slot);
            s.bindings.push(b);
            if s.active.is_none() {
                s.active = Some(b);
            }
            n += 1;
            // Stashed RX first, then the state (so SF_RX_FIN never precedes the bytes).
            self.pump_rx(id);
            self.publish_one(id, b);
        }
        debug!(
            session = sid,
            parent = t.parent_pid,
            sockets = n,
            "fork ticket claimed"
        );
        n
    }

    /// A message (or EOF) on an attached process's control connection.
    fn on_ctl(&mut self, sid: u32) {
        for _ in 0..16 {
            let Some(p) = self.procs.get_mut(&sid) else {
                return;
            };
            let Some(fd) = p.ctl.as_ref().map(|f| f.as_raw_fd()) else {
                return;
            };
            let mut buf = [0u8; 64];
            let (n, mut fds, trunc) = match sys::recv_fds(fd, &mut buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!(session = sid, "control connection: {e}");
                    self.detach(sid);
                    self.drop_failed();
                    return;
                }
            };
            if n == 0 {
                self.detach(sid);
                self.drop_failed();
                return;
            }
            let hello = if trunc {
                None
            } else {
                Hello::decode(&buf[..n])
            };
            let Some(h) = hello else {
                self.drop_proc(sid, &Violation::BadControl);
                self.drop_failed();
                return;
            };
            match h.kind {
                HELLO_WAITER => {
                    let ok = h.arg < MAX_WAITERS as u64
                        && fds.len() == 1
                        && sys::is_eventfd(fds[0].as_raw_fd())
                        && sys::set_nonblocking(fds[0].as_raw_fd()).is_ok();
                    if ok {
                        if let Some(efd) = fds.pop() {
                            p.chan.set_waiter(h.arg as usize, efd);
                        }
                        debug!(session = sid, waiter = h.arg, "waiter doorbell registered");
                        Self::reply(fd, 0, 0);
                    } else {
                        Self::reply(fd, libc::EINVAL, 0);
                    }
                }
                HELLO_STATS => self.send_stats(fd),
                HELLO_ATTACH | HELLO_ATTACH_CHILD => Self::reply(fd, libc::EISCONN, 0),
                _ => Self::reply(fd, libc::EINVAL, 0),
            }
        }
    }

    /// The child of ticket `tid` exited.
    fn on_pidfd(&mut self, tid: u64) {
        if let Some(t) = self.tickets.get(tid) {
            debug!(
                parent = t.parent_pid,
                child = ?t.child_pid,
                "fork child exited without claiming its ticket"
            );
        }
        self.drop_ticket(tid);
        self.drop_failed();
    }

    /// Releases an unclaimed ticket's references.
    fn drop_ticket(&mut self, tid: u64) {
        self.pidfds.remove(&tid);
        let Some(t) = self.tickets.remove(tid) else {
            return;
        };
        for (_, id) in t.slots {
            if let Some(s) = self.socks.get_mut(id) {
                s.tickets = s.tickets.saturating_sub(1);
            }
            self.release_if_unused(id);
        }
    }

    /// Readiness of backend sockets; received in-order payload goes straight into the RX
    /// streams of the sockets' active bindings where there is room ([`DirectRx`]).
    fn on_backend(&mut self) -> bool {
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
        for ev in &evs {
            self.on_ready(SockId::from_token(ev.token), ev.ready);
        }
        self.sockevs = evs;
        self.drop_failed();
        work
    }

    /// Readiness the backend made without a descriptor (loopback connections: a peer's
    /// `send` made this end readable). Served in the same iteration as the commands that caused
    /// it, so the peer's RX stream is published before the flush wakes its process.
    fn on_local_events(&mut self) -> bool {
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
            for ev in &evs {
                self.on_ready(SockId::from_token(ev.token), ev.ready);
            }
            self.sockevs = evs;
            self.drop_failed();
            work = true;
        }
        work
    }

    fn process_commands(&mut self) -> bool {
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
            match sid.checked_add(1) {
                Some(c) => cursor = c,
                None => break,
            }
        }
        work
    }

    fn run_timers(&mut self, now: Instant) {
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

    fn flush_all(&mut self, ring: bool) {
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
            if ring && p.chan.owes() {
                p.chan.ring_owed();
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
            }
        }
    }

    /// The process closed its control connection (exited): close its bindings as `close()` at
    /// exit would, letting TX bytes already written drain.
    fn detach(&mut self, sid: u32) {
        self.late_fork_children(sid);
        let Some(p) = self.procs.get_mut(&sid) else {
            return;
        };
        let live = p.sess.table.live_count();
        p.ctl = None;
        p.bell = None;
        p.closing = true;
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
    }

    /// A parent that forks and exits at once may leave its `OP_FORK_CHILD` in the ring: run
    /// those (and nothing else) so the child can still claim by pid.
    fn late_fork_children(&mut self, sid: u32) {
        let Some(n) = self
            .procs
            .get(&sid)
            .map(|p| p.chan.region().geometry().cmd_entries)
        else {
            return;
        };
        for _ in 0..n {
            let Some(p) = self.procs.get_mut(&sid) else {
                return;
            };
            let cmd = match p.chan.pop_cmd() {
                Ok(Some(c)) if c.op == OP_FORK_CHILD => p.sess.decode(&c),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            };
            if let Ok(cmd) = cmd {
                let _ = self.exec(sid, cmd);
            }
        }
    }

    /// Drops the channels of the processes that violated the protocol.
    fn drop_failed(&mut self) {
        while let Some((sid, v)) = self.failed.pop() {
            self.drop_proc(sid, &v);
        }
    }

    /// Drops a misbehaving process's channel: one error line, `dead = 1`, its bindings removed
    /// at once (sockets it shared with other processes stay open for them).
    fn drop_proc(&mut self, sid: u32, why: &Violation) {
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
        }
        p.chan.kill();
        p.ctl = None;
        p.bell = None;
        p.closing = true;
        for slot in p.sess.table.used_slots() {
            self.finish_binding(Bind { sid, slot });
        }
        if let Some(p) = self.procs.remove(&sid) {
            self.retired.add(&p.chan.counters);
        }
    }

    fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot {
            io: self.retired,
            channels_dropped: self.dropped,
            attaches: self.attaches,
            tickets: self.tickets.len() as u64,
            ..Default::default()
        };
        for p in self.procs.values() {
            if !p.closing {
                s.processes += 1;
            }
            s.draining += p.sess.table.draining_count() as u64;
            s.io.add(&p.chan.counters);
        }
        s.sockets = self.socks.len() as u64;
        s.loopback = self.backend.loop_stats();
        s.engine = self.backend.engine_stats();
        s.spin_us = self.spin.effective_budget().as_micros() as u64;
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

    fn shutdown(&mut self) {
        for p in self.procs.values_mut() {
            p.chan.kill();
        }
        self.procs.clear();
        for id in self.socks.ids() {
            if let Some(s) = self.socks.remove(id) {
                self.close_os(s);
            }
        }
        self.pidfds.clear();
        self.pending.clear();
        if self.socket_id.is_some() && sys::file_id(&self.cfg.socket) == self.socket_id {
            if let Err(e) = std::fs::remove_file(&self.cfg.socket) {
                warn!("removing {}: {e}", self.cfg.socket.display());
            }
        }
        info!("snstack-agent stopped");
    }

    // -----------------------------------------------------------------------------------------
    // Publication and the data path

    /// Writes socket `id`'s state into the control block of every binding and marks them dirty
    /// (their futex and waiters are woken at the next flush).
    fn publish(&mut self, id: SockId) {
        let Some(s) = self.socks.get(id) else {
            return;
        };
        for &b in &s.bindings {
            if let Some(p) = self.procs.get_mut(&b.sid) {
                if let Some(ctl) = p.chan.region().sock(b.slot) {
                    s.write_ctl(ctl, b);
                }
                p.chan.dirty(b.slot);
            }
        }
    }

    /// Writes socket `id`'s state into binding `b`'s control block only (a binding that just
    /// appeared or became active; the others saw no change).
    fn publish_one(&mut self, id: SockId, b: Bind) {
        let (Some(s), Some(p)) = (self.socks.get(id), self.procs.get_mut(&b.sid)) else {
            return;
        };
        if let Some(ctl) = p.chan.region().sock(b.slot) {
            s.write_ctl(ctl, b);
        }
        p.chan.dirty(b.slot);
    }

    /// RX into the active binding (when it is live, not draining).
    fn pump_rx(&mut self, id: SockId) {
        self.pump_rx_with(id, true);
    }

    /// [`Agent::pump_rx`]; `drain`: read on to WouldBlock or the end even after a short read
    /// (the readiness said the peer closed or failed, or the caller does not know).
    fn pump_rx_with(&mut self, id: SockId, drain: bool) {
        let Some(s) = self.socks.get_mut(id) else {
            return;
        };
        let Some(b) = s.active else {
            return;
        };
        let Some(p) = self.procs.get_mut(&b.sid) else {
            return;
        };
        let Some((bd, false)) = p.sess.table.get_any_mut(b.slot) else {
            return;
        };
        let had_stash = !s.stash.is_empty();
        match sock::pump_rx(
            &mut self.backend,
            s,
            &mut p.chan,
            b.slot,
            &mut bd.rx_tail,
            drain,
        ) {
            Err(v) => self.failed.push((b.sid, v)),
            Ok(o) => {
                if o.done {
                    s.rx_done = true;
                    s.set_flags(SF_RX_FIN, 0);
                }
                if let Some(e) = o.err {
                    s.fail(e);
                }
                if o.err.is_some() {
                    self.publish(id);
                } else if o.done || (had_stash && s.stash.is_empty()) {
                    // Only the active binding sees the end of the stream.
                    self.publish_one(id, b);
                }
            }
        }
    }

    /// Ends socket `id`'s TX loan (sock.rs, *Lent TX*): the backend copies what is still
    /// unacknowledged, and the lending binding's stream is free up to what it handed over.
    /// Called before that binding's slot is freed and before a second binding is added.
    fn end_loan(&mut self, id: SockId) {
        let Some(s) = self.socks.get_mut(id) else {
            return;
        };
        let Some(by) = s.lend_by.take() else {
            return;
        };
        self.backend.reclaim_tx(&s.os);
        let Some(p) = self.procs.get_mut(&by.sid) else {
            return;
        };
        if let Some((bd, _)) = p.sess.table.get_any_mut(by.slot) {
            if let Some(lent) = bd.tx_lent.take() {
                bd.tx_head = lent;
                if let Some(tx) = p.chan.region().tx(by.slot) {
                    tx.publish_head(lent);
                }
                p.chan.dirty(by.slot);
            }
        }
    }

    /// Sends binding `b`'s TX bytes. True when its TX is empty (or can never drain).
    fn pump_tx(&mut self, id: SockId, b: Bind) -> bool {
        let Some(s) = self.socks.get_mut(id) else {
            return true;
        };
        let Some(p) = self.procs.get_mut(&b.sid) else {
            return true;
        };
        let Some((bd, _)) = p.sess.table.get_any_mut(b.slot) else {
            return true;
        };
        match sock::pump_tx(&mut self.backend, s, &mut p.chan, b, bd) {
            Err(v) => {
                self.failed.push((b.sid, v));
                true
            }
            Ok(o) => {
                if let Some(e) = o.err {
                    s.fail(e);
                    self.publish(id);
                } else if o.done && s.shut_wr_pending {
                    self.shut_wr_if_drained(id);
                }
                o.done
            }
        }
    }

    /// SHUT_WR asked for: shut the OS socket once no binding has TX bytes left.
    fn shut_wr_if_drained(&mut self, id: SockId) {
        let Some(s) = self.socks.get_mut(id) else {
            return;
        };
        for &b in &s.bindings {
            let pending = self.procs.get(&b.sid).and_then(|p| {
                let (bd, _) = p.sess.table.get_any(b.slot)?;
                Some(sock::tx_pending(&p.chan, b.slot, bd.tx_sent()))
            });
            match pending {
                Some(Ok(0)) | None => {}
                Some(Ok(_)) => return,
                Some(Err(v)) => self.failed.push((b.sid, v)),
            }
        }
        s.shut_wr_pending = false;
        if let Err(e) = self.backend.shutdown(&s.os, libc::SHUT_WR) {
            debug!("shutdown(SHUT_WR) after drain: {e}");
        }
    }

    /// Posts a completion to binding `b`'s session, outside that session's own command.
    fn complete_to(&mut self, b: Bind, tag: u64, result: i64, data: Payload<'_>) {
        if let Some(p) = self.procs.get_mut(&b.sid) {
            if let Err(v) = p.chan.complete(tag, b.slot, result, data) {
                self.failed.push((b.sid, v));
            }
        }
    }

    /// Readiness of the backend socket `id`.
    fn on_ready(&mut self, id: SockId, r: Readiness) {
        let Some(s) = self.socks.get_mut(id) else {
            return;
        };
        let kind = s.kind;
        match kind {
            Kind::Fresh => return,
            Kind::Listening => {
                if r.readable || r.error || r.hup {
                    self.fill_accept_queue(id, false);
                }
                return;
            }
            Kind::Connecting => match self.backend.connect_state(&s.os) {
                ConnectState::Pending => return,
                ConnectState::Connected => {
                    s.kind = Kind::Connected;
                    s.set_flags(SF_CONNECTED, SF_CONNECTING);
                    let t = s.connect_tag.take();
                    self.publish(id);
                    if let Some(t) = t {
                        self.complete_to(t.by, t.tag, 0, Payload::None);
                    }
                }
                ConnectState::Failed(e) => {
                    s.kind = Kind::Fresh;
                    let t = s.connect_tag.take();
                    if t.is_some() {
                        s.set_flags(0, SF_CONNECTING);
                    } else {
                        s.post_error(e, 0, SF_CONNECTING);
                    }
                    self.publish(id);
                    if let Some(t) = t {
                        self.complete_to(t.by, t.tag, neg(e), Payload::None);
                    }
                    // Bytes written before the connect failed can never leave.
                    for b in self.draining_bindings(id) {
                        self.finish_binding(b);
                    }
                    return;
                }
            },
            Kind::Connected => {}
        }
        if r.readable || r.hup || r.error || kind != Kind::Connected {
            self.pump_rx_with(id, r.hup || r.error || kind != Kind::Connected);
        }
        // Every binding's TX (pumping changes no binding list). Draining bindings whose TX
        // emptied are finished afterwards; no allocation in the common case.
        let mut finish: Vec<Bind> = Vec::new();
        let mut i = 0;
        while let Some(b) = self.socks.get(id).and_then(|s| s.bindings.get(i).copied()) {
            if self.pump_tx(id, b) && self.is_draining(b) {
                finish.push(b);
            }
            i += 1;
        }
        if let Some(s) = self.socks.get_mut(id) {
            if r.error && !s.io_dead {
                let e = self.backend.take_error(&s.os);
                if e != 0 {
                    s.fail(e);
                    self.publish(id);
                }
            }
        }
        if self.socks.get(id).is_some_and(|s| s.io_dead) {
            // Nothing more can be sent: every draining binding is done.
            for b in self.draining_bindings(id) {
                if !finish.contains(&b) {
                    finish.push(b);
                }
            }
        }
        for b in finish {
            self.finish_binding(b);
        }
    }

    fn bindings_of(&self, id: SockId) -> Vec<Bind> {
        self.socks
            .get(id)
            .map(|s| s.bindings.clone())
            .unwrap_or_default()
    }

    fn is_draining(&self, b: Bind) -> bool {
        self.procs
            .get(&b.sid)
            .and_then(|p| p.sess.table.get_any(b.slot))
            .is_some_and(|(_, draining)| draining)
    }

    fn draining_bindings(&self, id: SockId) -> Vec<Bind> {
        let mut v = self.bindings_of(id);
        v.retain(|&b| self.is_draining(b));
        v
    }

    // -----------------------------------------------------------------------------------------
    // Bindings and socket lifetime

    /// The host closed binding `b` (or exited): release it now, or drain its TX first.
    fn close_binding(&mut self, b: Bind) {
        let Some(id) = self
            .procs
            .get(&b.sid)
            .and_then(|p| p.sess.table.get_any(b.slot))
            .map(|(bd, _)| bd.sock)
        else {
            return;
        };
        let Some(s) = self.socks.get_mut(id) else {
            self.finish_binding(b);
            return;
        };
        // Commands this binding parked end with the fd (other bindings' stay parked).
        let mut ended = Vec::new();
        if let Some(l) = s.listener.as_mut() {
            l.parked.retain(|p| {
                let mine = p.by == b;
                if mine {
                    ended.push(*p);
                }
                !mine
            });
        }
        if s.connect_tag.is_some_and(|p| p.by == b) {
            ended.extend(s.connect_tag.take());
        }
        let may_drain = matches!(s.kind, Kind::Connected | Kind::Connecting) && !s.io_dead;
        for p in ended {
            self.complete_to(p.by, p.tag, neg(libc::EINVAL), Payload::None);
        }
        let pending = match self.procs.get(&b.sid).and_then(|p| {
            let (bd, _) = p.sess.table.get_any(b.slot)?;
            Some(sock::tx_pending(&p.chan, b.slot, bd.tx_sent()))
        }) {
            Some(Ok(n)) => n,
            Some(Err(v)) => {
                self.failed.push((b.sid, v));
                0
            }
            None => 0,
        };
        if !may_drain || pending == 0 {
            self.finish_binding(b);
            return;
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        arm(&mut self.next_timer, deadline);
        if let Some(p) = self.procs.get_mut(&b.sid) {
            if let Some(bd) = p.sess.table.get_mut(b.slot) {
                bd.drain_deadline = Some(deadline);
            }
            p.sess.table.start_drain(b.slot);
        }
        if self.pump_tx(id, b) {
            self.finish_binding(b);
        }
    }

    /// Frees binding `b`'s slot. When it was the active binding of a connection, its unread RX
    /// bytes go to the next live binding (or wait in the stash for a ticket's claimant). The OS
    /// socket closes with its last reference.
    fn finish_binding(&mut self, b: Bind) {
        if let Some(id) = self
            .procs
            .get(&b.sid)
            .and_then(|p| p.sess.table.get_any(b.slot))
            .map(|(bd, _)| bd.sock)
        {
            self.end_loan(id);
        }
        let Some(p) = self.procs.get_mut(&b.sid) else {
            return;
        };
        let Some(bd) = p.sess.table.free(b.slot) else {
            return;
        };
        let id = bd.sock;
        if let Some(ctl) = p.chan.region().sock(b.slot) {
            ctl.state.0.flags.fetch_and(!SF_OPEN, Ordering::SeqCst);
            ctl.state.0.accept_ready.store(0, Ordering::SeqCst);
        }
        p.chan.dirty(b.slot);
        let Some(s) = self.socks.get_mut(id) else {
            return;
        };
        s.bindings.retain(|&x| x != b);
        if let Some(l) = s.listener.as_mut() {
            l.parked.retain(|p| p.by != b);
        }
        if s.connect_tag.is_some_and(|p| p.by == b) {
            s.connect_tag = None;
        }
        if s.active == Some(b) {
            let unread = if s.kind == Kind::Connected {
                match sock::unread_rx(&p.chan, b.slot, bd.rx_tail) {
                    Ok(v) => v,
                    Err(v) => {
                        self.failed.push((b.sid, v));
                        Vec::new()
                    }
                }
            } else {
                Vec::new()
            };
            if s.refs() == 0 {
                // Nobody to hand them to: the socket closes with bytes its reader never read,
                // and Linux answers that with RST rather than FIN.
                s.abort_on_close = !unread.is_empty() || !s.stash.is_empty();
                self.release_if_unused(id);
                return;
            }
            // What this binding had not read comes before what was still stashed for it.
            if !unread.is_empty() {
                let mut st = unread;
                st.extend_from_slice(&s.stash);
                s.stash = st;
            }
            let procs = &self.procs;
            s.active = s.bindings.iter().copied().find(|x| {
                procs
                    .get(&x.sid)
                    .is_some_and(|p| !p.closing && p.sess.table.is_live(x.slot))
            });
            if let Some(next) = s.active {
                debug!(
                    from = b.sid,
                    to = next.sid,
                    slot = next.slot,
                    bytes = s.stash.len(),
                    "connection moves to another process"
                );
                // Bytes first, then the state (SF_RX_FIN must not precede them).
                self.pump_rx(id);
                self.publish_one(id, next);
            }
        }
        self.release_if_unused(id);
    }

    /// Binding `b` of a shared connection wants to read: what the active binding had not read
    /// and everything after it flows to `b` from now on (the kernel lets any holder of a socket
    /// read it; which process gets which bytes is a race there too).
    fn rx_claim(&mut self, id: SockId, b: Bind) {
        let Some(s) = self.socks.get(id) else {
            return;
        };
        if s.kind != Kind::Connected || s.io_dead || s.active == Some(b) {
            return;
        }
        if self.is_draining(b) || !s.bindings.contains(&b) {
            return;
        }
        let old = s.active;
        let mut taken = Vec::new();
        if let Some(a) = old {
            if let Some(p) = self.procs.get(&a.sid) {
                if let Some((bd, _)) = p.sess.table.get_any(a.slot) {
                    match sock::take_unread_rx(&p.chan, a.slot, bd.rx_tail) {
                        Ok(v) => taken = v,
                        Err(v) => self.failed.push((a.sid, v)),
                    }
                }
            }
        }
        let Some(s) = self.socks.get_mut(id) else {
            return;
        };
        if !taken.is_empty() {
            taken.extend_from_slice(&s.stash);
            s.stash = taken;
        }
        s.active = Some(b);
        debug!(
            from = old.map(|a| a.sid),
            to = b.sid,
            slot = b.slot,
            bytes = s.stash.len(),
            "reader claims a shared connection"
        );
        if let Some(a) = old {
            self.publish_one(id, a);
        }
        self.pump_rx(id);
        self.publish_one(id, b);
    }

    /// Closes socket `id` when no binding and no ticket holds it any more.
    fn release_if_unused(&mut self, id: SockId) {
        if self.socks.get(id).is_some_and(|s| s.refs() == 0) {
            if let Some(s) = self.socks.remove(id) {
                self.close_os(s);
            }
        }
    }

    /// Releases everything an unreferenced socket holds.
    fn close_os(&mut self, mut s: Sock<B::Sock>) {
        if let Some(p) = s.reuse_port_bound.take() {
            self.reuseport.remove(p);
        }
        let mut parked = Vec::new();
        if let Some(l) = s.listener.take() {
            for (c, _) in l.queue {
                self.backend.close(c);
            }
            parked.extend(l.parked);
        }
        parked.extend(s.connect_tag.take());
        if s.abort_on_close && !s.io_dead {
            let mut zero = [0u8; 8];
            zero[..4].copy_from_slice(&1i32.to_ne_bytes());
            if let Err(e) = self
                .backend
                .setsockopt(&s.os, libc::SOL_SOCKET, libc::SO_LINGER, &zero)
            {
                debug!("SO_LINGER 0 before a close with unread data: {e}");
            }
        }
        self.backend.close(s.os);
        for p in parked {
            self.complete_to(p.by, p.tag, neg(libc::EINVAL), Payload::None);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Listeners

    /// Moves connections from the kernel into the shared accept queue (up to its cap), serves
    /// parked accepts of any binding oldest first, and publishes `accept_ready` to every binding.
    /// `changed`: the caller already changed the queue (publish even when nothing new came).
    fn fill_accept_queue(&mut self, id: SockId, mut changed: bool) {
        loop {
            let Some(s) = self.socks.get_mut(id) else {
                return;
            };
            let Some(l) = s.listener.as_mut() else {
                return;
            };
            while l.queue.len() < l.cap {
                match self.backend.accept(&s.os) {
                    Ok(c) => {
                        l.queue.push_back(c);
                        l.seq = l.seq.wrapping_add(1);
                        changed = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        l.kernel_pending = false;
                        break;
                    }
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EINTR | libc::ECONNABORTED | libc::EPROTO)
                        ) => {}
                    Err(e) => {
                        // EMFILE/ENOMEM...: leave the rest in the kernel; the next event retries.
                        warn!("accept: {e}");
                        break;
                    }
                }
            }
            if l.queue.len() >= l.cap {
                l.kernel_pending = true;
            }
            let mut served = false;
            while let Some(p) = self.next_parked(id) {
                self.accept_one(id, p.by, p.tag);
                served = true;
            }
            if changed || served {
                self.publish(id);
            }
            changed = false;
            let again = self
                .socks
                .get(id)
                .and_then(|s| s.listener.as_ref())
                .is_some_and(|l| served && l.kernel_pending && l.queue.len() < l.cap);
            if !again {
                return;
            }
        }
    }

    /// The oldest parked accept of listener `id`, when a connection is queued for it.
    fn next_parked(&mut self, id: SockId) -> Option<Parked> {
        let l = self.socks.get_mut(id)?.listener.as_mut()?;
        if l.queue.is_empty() {
            return None;
        }
        l.parked.pop_front()
    }

    /// Takes the oldest queued connection of listener `lid` into a new slot of the accepting
    /// binding's session and completes `tag` there.
    fn accept_one(&mut self, lid: SockId, by: Bind, tag: u64) {
        let Some(p) = self.procs.get_mut(&by.sid) else {
            return;
        };
        if p.closing {
            return;
        }
        if !p.sess.table.has_free() {
            return self.complete_to(by, tag, neg(libc::EMFILE), Payload::None);
        }
        let Some(l) = self.socks.get_mut(lid) else {
            return;
        };
        let domain = l.domain;
        let Some((os, peer)) = l.listener.as_mut().and_then(|l| l.queue.pop_front()) else {
            return self.complete_to(by, tag, neg(libc::EAGAIN), Payload::None);
        };
        let mut s = Sock::new(os, domain);
        s.kind = Kind::Connected;
        s.set_flags(SF_CONNECTED, 0);
        let id = self.socks.insert(s);
        let slot = match p.sess.table.alloc(Binding::new(id)) {
            Ok(n) => n,
            Err(_) => {
                if let Some(s) = self.socks.remove(id) {
                    self.close_os(s);
                }
                return self.complete_to(by, tag, neg(libc::EMFILE), Payload::None);
            }
        };
        p.chan.region().reset_sock(slot);
        let nb = Bind { sid: by.sid, slot };
        let Some(s) = self.socks.get_mut(id) else {
            return;
        };
        s.bindings.push(nb);
        s.active = Some(nb);
        if let Err(e) = self.backend.register(&s.os, id.token()) {
            warn!(pid = p.sess.pid, "accept: registering the socket: {e}");
            if let Some(b) = p.sess.table.free(slot) {
                if let Some(s) = self.socks.remove(b.sock) {
                    self.close_os(s);
                }
            }
            return self.complete_to(by, tag, err_of(&e), Payload::None);
        }
        s.registered = true;
        self.publish(id);
        self.pump_rx(id);
        self.complete_to(by, tag, i64::from(slot), Payload::Addr(peer.into()));
    }

    // -----------------------------------------------------------------------------------------
    // Commands

    fn has_cap(&self, sid: u32, bit: u32) -> bool {
        self.procs.get(&sid).is_some_and(|p| {
            p.sess.uid == 0
                || sys::cap_eff(p.sess.pid)
                    .map(|c| c & (1 << bit) != 0)
                    .unwrap_or(false)
        })
    }

    /// Completion of the acting session's command.
    fn complete(
        &mut self,
        sid: u32,
        tag: u64,
        slot: u32,
        result: i64,
        data: Payload<'_>,
    ) -> Result<(), Violation> {
        match self.procs.get_mut(&sid) {
            Some(p) => p.chan.complete(tag, slot, result, data),
            None => Ok(()),
        }
    }

    /// The socket a live slot names. decode() checked ownership, so this fails only on an agent
    /// bug, which must not panic.
    fn sock_of(&self, b: Bind) -> Result<SockId, Violation> {
        self.procs
            .get(&b.sid)
            .and_then(|p| p.sess.table.get_any(b.slot))
            .filter(|(_, draining)| !draining)
            .map(|(bd, _)| bd.sock)
            .filter(|&id| self.socks.get(id).is_some())
            .ok_or(Violation::SlotNotOwned {
                slot: b.slot,
                op: 0,
            })
    }

    fn exec(&mut self, sid: u32, cmd: Command) -> Result<(), Violation> {
        let (slot, tag) = (cmd.slot, cmd.tag);
        let b = Bind { sid, slot };
        match cmd.req {
            Request::Nop => self.complete(sid, tag, slot, 0, Payload::None),
            Request::Socket {
                domain,
                ty,
                protocol,
            } => self.op_socket(sid, tag, slot, domain, ty, protocol),
            Request::Bind { addr } => self.op_bind(b, tag, addr),
            Request::Listen { backlog } => self.op_listen(b, tag, backlog),
            Request::Accept { wait } => self.op_accept(b, tag, wait),
            Request::Connect { addr, wait } => self.op_connect(b, tag, addr, wait),
            Request::Close => {
                self.close_binding(b);
                self.complete(sid, tag, slot, 0, Payload::None)
            }
            Request::Shutdown { how } => self.op_shutdown(b, tag, how),
            Request::GetSockName | Request::GetPeerName => {
                let id = self.sock_of(b)?;
                let Some(s) = self.socks.get(id) else {
                    return Ok(());
                };
                let r = if cmd.req == Request::GetPeerName {
                    self.backend.peer_addr(&s.os)
                } else {
                    self.backend.local_addr(&s.os)
                };
                match r {
                    Ok(a) => self.complete(sid, tag, slot, 0, Payload::Addr(a.into())),
                    Err(e) => self.complete(sid, tag, slot, err_of(&e), Payload::None),
                }
            }
            Request::SetSockOpt {
                level,
                name,
                len,
                val,
            } => match val {
                OptVal::Inline(val) => self.op_setsockopt(b, tag, level, name, &val[..len]),
                OptVal::Cell(cell) => {
                    // Copy out of shared memory first: the host may scribble on it meanwhile.
                    let mut big = [0u8; OPT_SIZE];
                    let Some(p) = self
                        .procs
                        .get(&sid)
                        .and_then(|p| p.chan.region().opt_cell(cell))
                    else {
                        return Ok(());
                    };
                    // SAFETY: the cell is OPT_SIZE bytes inside the mapped region; len <= OPT_SIZE
                    // (checked by the decoder).
                    unsafe { core::ptr::copy_nonoverlapping(p, big.as_mut_ptr(), len) };
                    self.op_setsockopt(b, tag, level, name, &big[..len])
                }
            },
            Request::GetSockOpt {
                level,
                name,
                len,
                cell,
            } => self.op_getsockopt(b, tag, level, name, len, cell),
            Request::TxKick => {
                let id = self.sock_of(b)?;
                if let Some(ctl) = self
                    .procs
                    .get(&sid)
                    .and_then(|p| p.chan.region().sock(slot))
                {
                    // Before pump_tx reads tx_tail: bytes published after that read come with a
                    // new kick (wake::kick_taken).
                    wake::kick_taken(&ctl.host.0.tx_kick);
                }
                self.pump_tx(id, b);
                self.complete(sid, tag, slot, 0, Payload::None)
            }
            Request::RxSpace => {
                let id = self.sock_of(b)?;
                if self.socks.get(id).is_some_and(|s| s.active == Some(b)) {
                    self.pump_rx(id);
                }
                self.complete(sid, tag, slot, 0, Payload::None)
            }
            Request::RxClaim => {
                let id = self.sock_of(b)?;
                self.rx_claim(id, b);
                Ok(())
            }
            Request::Fork => self.op_fork(sid, tag, slot),
            Request::ForkChild { secret, pid } => self.op_fork_child(sid, tag, slot, secret, pid),
        }
    }

    fn op_socket(
        &mut self,
        sid: u32,
        tag: u64,
        slot: u32,
        domain: i32,
        ty: i32,
        protocol: i32,
    ) -> Result<(), Violation> {
        if let Err(e) = session::check_socket(domain, ty, protocol) {
            return self.complete(sid, tag, slot, neg(e), Payload::None);
        }
        if !self
            .procs
            .get(&sid)
            .is_some_and(|p| p.sess.table.has_free())
        {
            return self.complete(sid, tag, slot, neg(libc::EMFILE), Payload::None);
        }
        let os = match self.backend.socket(domain) {
            Ok(os) => os,
            Err(e) => return self.complete(sid, tag, slot, err_of(&e), Payload::None),
        };
        let id = self.socks.insert(Sock::new(os, domain));
        let new = match self
            .procs
            .get_mut(&sid)
            .map(|p| p.sess.table.alloc(Binding::new(id)))
        {
            Some(Ok(n)) => n,
            _ => {
                if let Some(s) = self.socks.remove(id) {
                    self.close_os(s);
                }
                return self.complete(sid, tag, slot, neg(libc::EMFILE), Payload::None);
            }
        };
        if let Some(p) = self.procs.get(&sid) {
            p.chan.region().reset_sock(new);
        }
        let b = Bind { sid, slot: new };
        if let Some(s) = self.socks.get_mut(id) {
            s.bindings.push(b);
            s.active = Some(b);
        }
        self.publish(id);
        self.complete(sid, tag, slot, i64::from(new), Payload::None)
    }

    fn op_bind(&mut self, b: Bind, tag: u64, a: Addr) -> Result<(), Violation> {
        let (sid, slot) = (b.sid, b.slot);
        let id = self.sock_of(b)?;
        let Some((pid, uid)) = self.procs.get(&sid).map(|p| (p.sess.pid, p.sess.uid)) else {
            return Ok(());
        };
        let Some(domain) = self.socks.get(id).map(|s| s.domain) else {
            return Ok(());
        };
        let addr = match session::check_family(domain, &a) {
            Ok(a) => a,
            Err(e) => return self.complete(sid, tag, slot, neg(e), Payload::None),
        };
        let port = addr.port();
        let start = if port != 0 {
            sys::unprivileged_port_start()
        } else {
            0
        };
        let caps = || sys::cap_eff(pid).ok();
        let check = session::bind_allowed(port, start, uid, caps)
            .and_then(|_| self.reuseport.check(port, uid));
        if let Err(e) = check {
            debug!(pid, port, errno = e, "bind refused");
            return self.complete(sid, tag, slot, neg(e), Payload::None);
        }
        let Some(s) = self.socks.get_mut(id) else {
            return Ok(());
        };
        if let Err(e) = self.backend.bind(&s.os, &addr) {
            return self.complete(sid, tag, slot, err_of(&e), Payload::None);
        }
        if s.reuseport && s.reuse_port_bound.is_none() {
            if let Ok(local) = self.backend.local_addr(&s.os) {
                self.reuseport.add(local.port(), uid);
                s.reuse_port_bound = Some(local.port());
            }
        }
        self.complete(sid, tag, slot, 0, Payload::None)
    }

    fn op_listen(&mut self, b: Bind, tag: u64, backlog: i32) -> Result<(), Violation> {
        let (sid, slot) = (b.sid, b.slot);
        let id = self.sock_of(b)?;
        let Some(s) = self.socks.get_mut(id) else {
            return Ok(());
        };
        if let Err(e) = self.backend.listen(&s.os, backlog) {
            return self.complete(sid, tag, slot, err_of(&e), Payload::None);
        }
        let cap = session::queue_cap(backlog);
        match s.listener.as_mut() {
            Some(l) => l.cap = cap,
            None => {
                s.listener = Some(Listener {
                    queue: Default::default(),
                    cap,
                    parked: Default::default(),
                    kernel_pending: true,
                    seq: 0,
                })
            }
        }
        s.kind = Kind::Listening;
        if !s.registered {
            if let Err(e) = self.backend.register(&s.os, id.token()) {
                warn!(session = sid, "listen: registering the socket: {e}");
                return self.complete(sid, tag, slot, err_of(&e), Payload::None);
            }
            s.registered = true;
        }
        s.set_flags(SF_LISTENING, 0);
        self.publish(id);
        self.complete(sid, tag, slot, 0, Payload::None)?;
        self.fill_accept_queue(id, true);
        Ok(())
    }

    fn op_accept(&mut self, b: Bind, tag: u64, wait: bool) -> Result<(), Violation> {
        let (sid, slot) = (b.sid, b.slot);
        let id = self.sock_of(b)?;
        let Some(s) = self.socks.get_mut(id) else {
            return Ok(());
        };
        let Some(l) = s.listener.as_mut().filter(|_| s.kind == Kind::Listening) else {
            return self.complete(sid, tag, slot, neg(libc::EINVAL), Payload::None);
        };
        if l.queue.is_empty() {
            // A parked accept without a tag could never deliver its slot: treat as non-blocking.
            if wait && tag != 0 {
                l.parked.push_back(Parked { by: b, tag });
                return Ok(());
            }
            return self.complete(sid, tag, slot, neg(libc::EAGAIN), Payload::None);
        }
        self.accept_one(id, b, tag);
        self.fill_accept_queue(id, true);
        Ok(())
    }

    fn op_connect(&mut self, b: Bind, tag: u64, a: Addr, wait: bool) -> Result<(), Violation> {
        let (sid, slot) = (b.sid, b.slot);
        let id = self.sock_of(b)?;
        let Some(s) = self.socks.get_mut(id) else {
            return Ok(());
        };
        let addr = match session::check_family(s.domain, &a) {
            Ok(a) => a,
            Err(e) => return self.complete(sid, tag, slot, neg(e), Payload::None),
        };
        let r = self.backend.connect(&s.os, &addr);
        let in_progress = matches!(&r, Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS));
        if let Err(e) = &r {
            if !in_progress {
                return self.complete(sid, tag, slot, err_of(e), Payload::None);
            }
        }
        if !s.registered {
            if let Err(e) = self.backend.register(&s.os, id.token()) {
                warn!(session = sid, "connect: registering the socket: {e}");
                return self.complete(sid, tag, slot, err_of(&e), Payload::None);
            }
            s.registered = true;
        }
        if in_progress {
            s.kind = Kind::Connecting;
            s.set_flags(SF_CONNECTING, 0);
            let park = wait && tag != 0;
            if park {
                s.connect_tag = Some(Parked { by: b, tag });
            }
            self.publish(id);
            if park {
                return Ok(());
            }
            return self.complete(sid, tag, slot, neg(libc::EINPROGRESS), Payload::None);
        }
        s.kind = Kind::Connected;
        s.set_flags(SF_CONNECTED, 0);
        self.publish(id);
        self.complete(sid, tag, slot, 0, Payload::None)?;
        self.pump_rx(id);
        self.pump_tx(id, b);
        Ok(())
    }

    fn op_shutdown(&mut self, b: Bind, tag: u64, how: i32) -> Result<(), Violation> {
        let (sid, slot) = (b.sid, b.slot);
        let id = self.sock_of(b)?;
        if !(0..=2).contains(&how) {
            return self.complete(sid, tag, slot, neg(libc::EINVAL), Payload::None);
        }
        let rd = how == libc::SHUT_RD || how == libc::SHUT_RDWR;
        let wr = how == libc::SHUT_WR || how == libc::SHUT_RDWR;
        let Some(s) = self.socks.get_mut(id) else {
            return Ok(());
        };
        if s.kind == Kind::Connected && !s.io_dead {
            if rd {
                s.set_flags(SF_RX_SHUT, 0);
                if let Err(e) = self.backend.shutdown(&s.os, libc::SHUT_RD) {
                    debug!(slot, "shutdown(SHUT_RD): {e}");
                }
            }
            if wr {
                s.set_flags(SF_TX_SHUT, 0);
                s.shut_wr_pending = true;
            }
            self.publish(id);
            if wr && self.pump_tx(id, b) {
                self.shut_wr_if_drained(id);
            }
            return self.complete(sid, tag, slot, 0, Payload::None);
        }
        if let Err(e) = self.backend.shutdown(&s.os, how) {
            return self.complete(sid, tag, slot, err_of(&e), Payload::None);
        }
        // A listener shut for reading stops listening (every binding's parked accept ends); a
        // connect in progress is abandoned.
        let mut parked = Vec::new();
        let mut closed = Vec::new();
        if s.kind == Kind::Listening && rd {
            if let Some(l) = s.listener.take() {
                parked.extend(l.parked);
                closed.extend(l.queue.into_iter().map(|(c, _)| c));
            }
            s.kind = Kind::Fresh;
            s.set_flags(0, SF_LISTENING);
        } else if s.kind == Kind::Connecting {
            s.kind = Kind::Fresh;
            parked.extend(s.connect_tag.take());
            s.set_flags(0, SF_CONNECTING);
        }
        for c in closed {
            self.backend.close(c);
        }
        self.publish(id);
        for p in parked {
            self.complete_to(p.by, p.tag, neg(libc::EINVAL), Payload::None);
        }
        self.complete(sid, tag, slot, 0, Payload::None)
    }

    fn op_setsockopt(
        &mut self,
        b: Bind,
        tag: u64,
        level: i32,
        name: i32,
        val: &[u8],
    ) -> Result<(), Violation> {
        let (sid, slot) = (b.sid, b.slot);
        let id = self.sock_of(b)?;
        let allowed = match session::sockopt_policy(level, name, true, val) {
            OptPolicy::Pass => Ok(()),
            OptPolicy::Deny(e) => Err(e),
            OptPolicy::NeedNetAdmin => {
                if self.has_cap(sid, session::CAP_NET_ADMIN) {
                    Ok(())
                } else {
                    Err(libc::EPERM)
                }
            }
            OptPolicy::Congestion => {
                // Linux looks the name up first (ENOENT from the backend for an unknown one),
                // then checks the unprivileged allow-list.
                if self.has_cap(sid, session::CAP_NET_ADMIN)
                    || session::congestion_allowed(val, &sys::allowed_congestion_controls())
                    || !session::congestion_allowed(val, &sys::available_congestion_controls())
                {
                    Ok(())
                } else {
                    Err(libc::EPERM)
                }
            }
        };
        if let Err(e) = allowed {
            debug!(session = sid, level, name, errno = e, "setsockopt refused");
            return self.complete(sid, tag, slot, neg(e), Payload::None);
        }
        let Some(s) = self.socks.get_mut(id) else {
            return Ok(());
        };
        let int = |v: &[u8], at: usize| {
            v.get(at..at + 4)
                .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        };
        let r = if level == libc::SOL_SOCKET && name == libc::SO_LINGER && val.len() >= 8 {
            // A lingering close() blocks even on a non-blocking socket, which would stall every
            // process served by the agent: keep the timeout here, drain in the background.
            let (on, secs) = (int(val, 0).unwrap_or(0), int(val, 4).unwrap_or(0));
            if on != 0 && secs > 0 {
                let off = [0u8; 8];
                let r = self.backend.setsockopt(&s.os, level, name, &off);
                if r.is_ok() {
                    let mut keep = [0u8; 8];
                    keep.copy_from_slice(&val[..8]);
                    s.linger = Some(keep);
                }
                r
            } else {
                let r = self.backend.setsockopt(&s.os, level, name, val);
                if r.is_ok() {
                    s.linger = None;
                }
                r
            }
        } else {
            let r = self.backend.setsockopt(&s.os, level, name, val);
            if r.is_ok() && level == libc::SOL_SOCKET && name == libc::SO_REUSEPORT {
                s.reuseport = int(val, 0).unwrap_or(0) != 0;
            }
            r
        };
        match r {
            Ok(()) => self.complete(sid, tag, slot, 0, Payload::None),
            Err(e) => self.complete(sid, tag, slot, err_of(&e), Payload::None),
        }
    }

    fn op_getsockopt(
        &mut self,
        b: Bind,
        tag: u64,
        level: i32,
        name: i32,
        len: usize,
        cell: Option<usize>,
    ) -> Result<(), Violation> {
        let (sid, slot) = (b.sid, b.slot);
        let id = self.sock_of(b)?;
        match session::sockopt_policy(level, name, false, &[]) {
            OptPolicy::Deny(e) => return self.complete(sid, tag, slot, neg(e), Payload::None),
            OptPolicy::NeedNetAdmin if !self.has_cap(sid, session::CAP_NET_ADMIN) => {
                return self.complete(sid, tag, slot, neg(libc::EPERM), Payload::None);
            }
            _ => {}
        }
        let Some(s) = self.socks.get(id) else {
            return Ok(());
        };
        let mut buf = [0u8; OPT_SIZE];
        let got = if let (libc::SOL_SOCKET, libc::SO_LINGER, Some(l)) = (level, name, s.linger) {
            let n = len.min(l.len());
            buf[..n].copy_from_slice(&l[..n]);
            Ok(n)
        } else {
            self.backend.getsockopt(&s.os, level, name, &mut buf[..len])
        };
        match got {
            Ok(n) => match cell {
                None => self.complete(sid, tag, slot, n as i64, Payload::Value(&buf[..n])),
                Some(cell) => {
                    let Some(p) = self
                        .procs
                        .get(&sid)
                        .and_then(|p| p.chan.region().opt_cell(cell))
                    else {
                        return Ok(());
                    };
                    let n = n.min(OPT_SIZE);
                    // SAFETY: the cell is OPT_SIZE bytes inside the mapped region.
                    unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), p, n) };
                    self.complete(sid, tag, slot, n as i64, Payload::None)
                }
            },
            Err(e) => self.complete(sid, tag, slot, err_of(&e), Payload::None),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Fork tickets

    /// `OP_FORK`: a ticket holding a reference to every socket the session holds now.
    fn op_fork(&mut self, sid: u32, tag: u64, slot: u32) -> Result<(), Violation> {
        let Some(p) = self.procs.get(&sid) else {
            return Ok(());
        };
        let (pid, uid) = (p.sess.pid, p.sess.uid);
        let mut slots: Vec<(u32, SockId)> = p
            .sess
            .table
            .used_slots()
            .into_iter()
            .filter_map(|n| match p.sess.table.get_any(n) {
                Some((bd, false)) => Some((n, bd.sock)),
                _ => None,
            })
            .collect();
        let now = Instant::now();
        let mut result = Err(libc::EAGAIN);
        for _ in 0..8 {
            let secret = match sys::random_u64() {
                Ok(s) => s,
                Err(e) => {
                    warn!(session = sid, "fork ticket: getrandom: {e}");
                    return self.complete(sid, tag, slot, err_of(&e), Payload::None);
                }
            };
            match self.tickets.create(secret, sid, pid, uid, slots, now) {
                Ok(t) => {
                    result = Ok((t.secret, t.deadline, t.slots.clone()));
                    break;
                }
                Err((e, back)) => {
                    slots = back;
                    result = Err(e);
                    if e != libc::EAGAIN {
                        break;
                    }
                }
            }
        }
        let (secret, deadline, held) = match result {
            Ok(x) => x,
            Err(e) => {
                debug!(session = sid, errno = e, "fork ticket refused");
                return self.complete(sid, tag, slot, neg(e), Payload::None);
            }
        };
        for (_, id) in &held {
            // A child will bind the socket too: its TX is copied from now on.
            self.end_loan(*id);
            if let Some(s) = self.socks.get_mut(*id) {
                s.tickets = s.tickets.saturating_add(1);
            }
        }
        arm(&mut self.next_timer, deadline);
        debug!(session = sid, sockets = held.len(), "fork ticket taken");
        self.complete(sid, tag, slot, 0, Payload::Secret(secret))
    }

    /// `OP_FORK_CHILD`: ties a ticket to the process that will claim it and watches that process.
    fn op_fork_child(
        &mut self,
        sid: u32,
        tag: u64,
        slot: u32,
        secret: u64,
        pid: u64,
    ) -> Result<(), Violation> {
        let tid = self
            .tickets
            .find(secret)
            .filter(|&t| self.tickets.get(t).is_some_and(|t| t.parent_sid == sid));
        let Some(tid) = tid else {
            return self.complete(sid, tag, slot, neg(libc::ENOENT), Payload::None);
        };
        let Ok(pid) = i32::try_from(pid) else {
            return self.complete(sid, tag, slot, neg(libc::EINVAL), Payload::None);
        };
        if pid <= 0 {
            return self.complete(sid, tag, slot, neg(libc::EINVAL), Payload::None);
        }
        let Some(own) = self.procs.get(&sid).map(|p| p.sess.pid) else {
            return Ok(());
        };
        match self.tickets.get(tid).and_then(|t| t.child_pid) {
            Some(c) if c == pid => return self.complete(sid, tag, slot, 0, Payload::None),
            Some(_) => return self.complete(sid, tag, slot, neg(libc::EINVAL), Payload::None),
            None => {}
        }
        let pidfd = match sys::pidfd_open(pid) {
            Ok(fd) => Some(fd),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                // Already gone (and reaped): it will never claim.
                debug!(
                    session = sid,
                    child = pid,
                    "fork child gone before OP_FORK_CHILD"
                );
                self.drop_ticket(tid);
                return self.complete(sid, tag, slot, 0, Payload::None);
            }
            Err(e) => {
                debug!(
                    session = sid,
                    "pidfd_open({pid}): {e}; the ticket only expires"
                );
                None
            }
        };
        // The claimant must be the parent's child, or the parent itself (a ticket across exec).
        if pid != own {
            if let Ok(pp) = sys::parent_pid(pid) {
                if pp != own {
                    warn!(
                        session = sid,
                        child = pid,
                        parent = pp,
                        "OP_FORK_CHILD names a process that is not the caller's child"
                    );
                    return self.complete(sid, tag, slot, neg(libc::ESRCH), Payload::None);
                }
            }
        }
        if let Some(t) = self.tickets.get_mut(tid) {
            t.child_pid = Some(pid);
        }
        if let Some(fd) = pidfd {
            match self
                .epoll
                .add(fd.as_raw_fd(), sys::EV_IN, KIND_PIDFD | (tid & ID_MASK))
            {
                Ok(()) => {
                    self.pidfds.insert(tid, fd);
                }
                Err(e) => debug!(
                    session = sid,
                    "pidfd epoll_ctl: {e}; the ticket only expires"
                ),
            }
        }
        self.complete(sid, tag, slot, 0, Payload::None)
    }
}
