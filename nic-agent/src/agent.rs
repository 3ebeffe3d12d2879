//! The agent's single-threaded event loop: control plane (attach, waiter doorbells, stats), the
//! command rings of every attached process, and readiness of backend sockets.
//!
//! ```text
//!  loop {
//!    epoll_wait(agent set: signalfd, control listener, control conns, doorbells, backend fd)
//!        timeout 0 while busy; after --spin-us idle: announce sleep, re-check rings, block
//!    backend readiness  -> accept queues, connect results, RX/TX pumps
//!    every command ring -> decode (violations drop the channel) -> execute
//!    timers             -> drains past their deadline
//!    flush per channel  -> overflowed events, one futex bump, dirty-socket wake-ups, counters
//!  }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

use shm_proto::msg::{Hello, Reply, HELLO_ATTACH, HELLO_STATS, HELLO_WAITER};
use shm_proto::region::Geometry;
use shm_proto::*;
use thiserror::Error;
use tracing::{debug, error, info, warn};

use crate::backend::{Backend, ConnectState, Readiness, SockEvent};
use crate::channel::Channel;
use crate::session::{
    self, Addr, Command, OptPolicy, Request, ReuseportTable, Session, SlotTable, Violation,
};
use crate::sock::{pump_rx, pump_tx, Kind, Listener, Sock};
use crate::stats::{Counters, Snapshot};
use crate::sys;

/// How long a closed socket may take to hand its TX bytes to the network.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Commands taken from one ring per iteration (fairness between processes).
const CMD_BATCH: usize = 256;
/// Control connections that have not said hello yet (each holds an agent fd).
const MAX_PENDING_CONNS: usize = 1024;

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
struct Proc<S> {
    sess: Session<Sock<S>>,
    chan: Channel,
    ctl: Option<OwnedFd>,
    bell: Option<OwnedFd>,
    /// The process is gone: no more commands; finishing drains only.
    closing: bool,
}

/// What executing a command needs besides the process itself.
struct Env<'a, B: Backend> {
    backend: &'a mut B,
    reuseport: &'a mut ReuseportTable,
    next_timer: &'a mut Option<Instant>,
    sid: u32,
}

fn token(sid: u32, slot: u32) -> u64 {
    (u64::from(sid) << 32) | u64::from(slot)
}

fn neg(errno: i32) -> i64 {
    -i64::from(errno)
}

fn err_of(e: &io::Error) -> i64 {
    neg(sys::errno_of(e))
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
    procs: BTreeMap<u32, Proc<B::Sock>>,
    next_sid: u32,
    reuseport: ReuseportTable,
    retired: Counters,
    dropped: u64,
    attaches: u64,
    next_timer: Option<Instant>,
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
            reuseport: ReuseportTable::default(),
            retired: Counters::default(),
            dropped: 0,
            attaches: 0,
            next_timer: None,
            stop: false,
            evbuf: sys::event_buf(256),
            sockevs: Vec::with_capacity(256),
        })
    }

    pub fn run(&mut self) {
        let mut idle_since = Instant::now();
        while !self.stop {
            let now = Instant::now();
            let sleepy = now.duration_since(idle_since) >= self.cfg.spin;
            let mut timeout = 0;
            if sleepy {
                for p in self.procs.values().filter(|p| !p.closing) {
                    p.chan.announce_sleep();
                }
                if !self
                    .procs
                    .values()
                    .any(|p| !p.closing && p.chan.cmds_pending())
                {
                    timeout = self.sleep_timeout(now);
                }
            }
            let n = match self.epoll.wait(&mut self.evbuf, timeout) {
                Ok(n) => n,
                Err(e) => {
                    error!("epoll_wait: {e}");
                    0
                }
            };
            if sleepy {
                for p in self.procs.values().filter(|p| !p.closing) {
                    p.chan.retract_sleep();
                }
            }
            let mut work = self.handle_events(n);
            work |= self.process_commands();
            self.run_timers();
            self.flush_all();
            if work {
                idle_since = Instant::now();
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

    /// Dispatches the agent epoll's events; true when anything happened.
    fn handle_events(&mut self, n: usize) -> bool {
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
        work
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
                    self.attach(fd);
                }
            }
            HELLO_STATS => {
                self.send_stats(fd);
                self.pending.remove(&id);
            }
            _ => Self::reply(fd, libc::EINVAL, 0),
        }
    }

    fn attach(&mut self, fd: OwnedFd) {
        let raw = fd.as_raw_fd();
        let cred = match sys::peer_cred(raw) {
            Ok(c) => c,
            Err(e) => {
                warn!("attach: SO_PEERCRED: {e}");
                Self::reply(raw, sys::errno_of(&e), 0);
                return;
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
        let reply = Reply::new(0, total).encode();
        if let Err(e) = sys::send_fds(raw, &reply, &[memfd.as_raw_fd(), bell.as_raw_fd()]) {
            warn!(pid = cred.pid, "attach: sending the region: {e}");
            return;
        }
        drop(memfd);
        let reg = self
            .epoll
            .modify(raw, sys::EV_IN, KIND_CTL | u64::from(sid))
            .and_then(|_| {
                self.epoll
                    .add(bell.as_raw_fd(), sys::EV_IN, KIND_BELL | u64::from(sid))
            });
        if let Err(e) = reg {
            warn!(pid = cred.pid, "attach: epoll_ctl: {e}");
            return;
        }
        info!(
            pid = cred.pid,
            uid = cred.uid,
            gid = cred.gid,
            session = sid,
            region = total,
            "process attached"
        );
        self.attaches += 1;
        let sess = Session::new(cred.pid, cred.uid, cred.gid, geo.max_sockets);
        self.procs.insert(
            sid,
            Proc {
                sess,
                chan,
                ctl: Some(fd),
                bell: Some(bell),
                closing: false,
            },
        );
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
                    return;
                }
            };
            if n == 0 {
                self.detach(sid);
                return;
            }
            let hello = if trunc {
                None
            } else {
                Hello::decode(&buf[..n])
            };
            let Some(h) = hello else {
                self.drop_proc(sid, &Violation::BadControl);
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
                HELLO_ATTACH => Self::reply(fd, libc::EISCONN, 0),
                _ => Self::reply(fd, libc::EINVAL, 0),
            }
        }
    }

    /// Readiness of backend sockets.
    fn on_backend(&mut self) -> bool {
        let mut evs = std::mem::take(&mut self.sockevs);
        evs.clear();
        if let Err(e) = self.backend.poll(&mut evs) {
            error!("backend poll: {e}");
        }
        let work = !evs.is_empty();
        let mut failed = Vec::new();
        {
            let Agent {
                procs,
                backend,
                reuseport,
                next_timer,
                ..
            } = self;
            for ev in &evs {
                let (sid, slot) = ((ev.token >> 32) as u32, ev.token as u32);
                let Some(p) = procs.get_mut(&sid) else {
                    continue;
                };
                let mut env = Env {
                    backend: &mut *backend,
                    reuseport: &mut *reuseport,
                    next_timer: &mut *next_timer,
                    sid,
                };
                if let Err(v) = p.on_ready(&mut env, slot, ev.ready) {
                    failed.push((sid, v));
                }
            }
        }
        self.sockevs = evs;
        for (sid, v) in failed {
            self.drop_proc(sid, &v);
        }
        work
    }

    fn process_commands(&mut self) -> bool {
        let mut work = false;
        let mut failed = Vec::new();
        let Agent {
            procs,
            backend,
            reuseport,
            next_timer,
            ..
        } = self;
        for (&sid, p) in procs.iter_mut() {
            if p.closing {
                continue;
            }
            let limit = p.chan.region().geometry().evt_entries as usize * 4;
            let mut env = Env {
                backend: &mut *backend,
                reuseport: &mut *reuseport,
                next_timer: &mut *next_timer,
                sid,
            };
            for _ in 0..CMD_BATCH {
                // Back-pressure: a host that does not drain its events gets no more commands run.
                if p.chan.backlog() >= limit {
                    break;
                }
                let r = match p.chan.pop_cmd() {
                    Ok(Some(c)) => p.sess.decode(&c).and_then(|c| p.exec(&mut env, c)),
                    Ok(None) => break,
                    Err(v) => Err(v),
                };
                work = true;
                if let Err(v) = r {
                    failed.push((sid, v));
                    break;
                }
            }
        }
        for (sid, v) in failed {
            self.drop_proc(sid, &v);
        }
        work
    }

    fn run_timers(&mut self) {
        let Some(t) = self.next_timer else { return };
        let now = Instant::now();
        if t > now {
            return;
        }
        self.next_timer = None;
        let mut failed = Vec::new();
        let Agent {
            procs,
            backend,
            reuseport,
            next_timer,
            ..
        } = self;
        for (&sid, p) in procs.iter_mut() {
            let mut env = Env {
                backend: &mut *backend,
                reuseport: &mut *reuseport,
                next_timer: &mut *next_timer,
                sid,
            };
            if let Err(v) = p.expire_drains(&mut env, now) {
                failed.push((sid, v));
            }
        }
        for (sid, v) in failed {
            self.drop_proc(sid, &v);
        }
    }

    fn flush_all(&mut self) {
        let mut failed = Vec::new();
        let mut finished = Vec::new();
        for (&sid, p) in self.procs.iter_mut() {
            if p.closing {
                if p.sess.table.live_count() + p.sess.table.draining_count() == 0 {
                    finished.push(sid);
                }
                continue;
            }
            if let Err(v) = p.chan.flush() {
                failed.push((sid, v));
            }
        }
        for (sid, v) in failed {
            self.drop_proc(sid, &v);
        }
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

    /// The process closed its control connection (exited): close its sockets as `close()` at exit
    /// would, letting TX bytes already written drain.
    fn detach(&mut self, sid: u32) {
        let Agent {
            procs,
            backend,
            reuseport,
            next_timer,
            ..
        } = self;
        let Some(p) = procs.get_mut(&sid) else { return };
        let mut env = Env {
            backend: &mut *backend,
            reuseport: &mut *reuseport,
            next_timer: &mut *next_timer,
            sid,
        };
        let live = p.sess.table.live_count();
        p.ctl = None;
        p.bell = None;
        p.closing = true;
        let mut failed = None;
        for slot in p.sess.table.used_slots() {
            if p.sess.table.is_live(slot) {
                if let Err(v) = p.close_slot(&mut env, slot) {
                    failed = Some(v);
                    break;
                }
            }
        }
        let draining = p.sess.table.draining_count();
        info!(
            pid = p.sess.pid,
            session = sid,
            sockets = live,
            draining,
            "process detached"
        );
        if let Some(v) = failed {
            self.drop_proc(sid, &v);
        }
    }

    /// Drops a misbehaving process's channel: one error line, `dead = 1`, everything closed.
    fn drop_proc(&mut self, sid: u32, why: &Violation) {
        let Some(mut p) = self.procs.remove(&sid) else {
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
        let mut env = Env {
            backend: &mut self.backend,
            reuseport: &mut self.reuseport,
            next_timer: &mut self.next_timer,
            sid,
        };
        p.close_all(&mut env);
        self.retired.add(&p.chan.counters);
    }

    fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot {
            io: self.retired,
            channels_dropped: self.dropped,
            attaches: self.attaches,
            ..Default::default()
        };
        for p in self.procs.values() {
            if !p.closing {
                s.processes += 1;
            }
            let t = &p.sess.table;
            let queued: usize = t
                .values()
                .filter_map(|s| s.listener.as_ref())
                .map(|l| l.queue.len())
                .sum();
            s.sockets += (t.live_count() + t.draining_count() + queued) as u64;
            s.draining += t.draining_count() as u64;
            s.accept_queued += queued as u64;
            s.io.add(&p.chan.counters);
        }
        s
    }

    fn shutdown(&mut self) {
        let sids: Vec<u32> = self.procs.keys().copied().collect();
        for sid in sids {
            if let Some(mut p) = self.procs.remove(&sid) {
                p.chan.kill();
                let mut env = Env {
                    backend: &mut self.backend,
                    reuseport: &mut self.reuseport,
                    next_timer: &mut self.next_timer,
                    sid,
                };
                p.close_all(&mut env);
            }
        }
        self.pending.clear();
        if self.socket_id.is_some() && sys::file_id(&self.cfg.socket) == self.socket_id {
            if let Err(e) = std::fs::remove_file(&self.cfg.socket) {
                warn!("removing {}: {e}", self.cfg.socket.display());
            }
        }
        info!("snstack-agent stopped");
    }
}

/// A live slot's socket. decode() checked ownership, so this fails only on an agent bug, which
/// must not panic.
fn live<S>(t: &mut SlotTable<Sock<S>>, slot: u32) -> Result<&mut Sock<S>, Violation> {
    t.get_mut(slot)
        .ok_or(Violation::SlotNotOwned { slot, op: 0 })
}

impl<S> Proc<S> {
    fn has_cap(&self, bit: u32) -> bool {
        self.sess.uid == 0
            || sys::cap_eff(self.sess.pid)
                .map(|c| c & (1 << bit) != 0)
                .unwrap_or(false)
    }

    fn exec<B: Backend<Sock = S>>(
        &mut self,
        env: &mut Env<B>,
        cmd: Command,
    ) -> Result<(), Violation> {
        let (slot, tag) = (cmd.slot, cmd.tag);
        match cmd.req {
            Request::Nop => self.chan.complete(tag, slot, 0, &[]),
            Request::Socket {
                domain,
                ty,
                protocol,
            } => self.op_socket(env, tag, slot, domain, ty, protocol),
            Request::Bind(a) => self.op_bind(env, tag, slot, a),
            Request::Listen { backlog } => self.op_listen(env, tag, slot, backlog),
            Request::Accept { wait } => self.op_accept(env, tag, slot, wait),
            Request::Connect { addr, wait } => self.op_connect(env, tag, slot, addr, wait),
            Request::Close => {
                self.close_slot(env, slot)?;
                self.chan.complete(tag, slot, 0, &[])
            }
            Request::Shutdown { how } => self.op_shutdown(env, tag, slot, how),
            Request::GetSockName | Request::GetPeerName => {
                let peer = cmd.req == Request::GetPeerName;
                let s = live(&mut self.sess.table, slot)?;
                let r = if peer {
                    env.backend.peer_addr(&s.os)
                } else {
                    env.backend.local_addr(&s.os)
                };
                match r {
                    Ok(a) => self
                        .chan
                        .complete(tag, slot, 0, &session::wire_of(&a).encode()),
                    Err(e) => self.chan.complete(tag, slot, err_of(&e), &[]),
                }
            }
            Request::SetSockOpt {
                level,
                name,
                len,
                val,
            } => self.op_setsockopt(env, tag, slot, level, name, &val[..len]),
            Request::GetSockOpt { level, name, len } => {
                self.op_getsockopt(env, tag, slot, level, name, len)
            }
            Request::TxKick => {
                if let Some(ctl) = self.chan.region().sock(slot) {
                    // Clear the kick flag before reading tx_tail: bytes published after our read
                    // come with a new kick (Dekker pair with the host's swap).
                    ctl.host.0.tx_kick.store(0, Ordering::SeqCst);
                    fence(Ordering::SeqCst);
                }
                let s = self
                    .sess
                    .table
                    .get_mut(slot)
                    .ok_or(Violation::SlotNotOwned {
                        slot,
                        op: OP_TX_KICK,
                    })?;
                pump_tx(env.backend, &mut self.chan, slot, s)?;
                self.chan.complete(tag, slot, 0, &[])
            }
            Request::RxSpace => {
                let s = self
                    .sess
                    .table
                    .get_mut(slot)
                    .ok_or(Violation::SlotNotOwned {
                        slot,
                        op: OP_RX_SPACE,
                    })?;
                pump_rx(env.backend, &mut self.chan, slot, s)?;
                self.chan.complete(tag, slot, 0, &[])
            }
        }
    }

    fn op_socket<B: Backend<Sock = S>>(
        &mut self,
        env: &mut Env<B>,
        tag: u64,
        slot: u32,
        domain: i32,
        ty: i32,
        protocol: i32,
    ) -> Result<(), Violation> {
        if let Err(e) = session::check_socket(domain, ty, protocol) {
            return self.chan.complete(tag, slot, neg(e), &[]);
        }
        if !self.sess.table.has_free() {
            return self.chan.complete(tag, slot, neg(libc::EMFILE), &[]);
        }
        let os = match env.backend.socket(domain) {
            Ok(os) => os,
            Err(e) => return self.chan.complete(tag, slot, err_of(&e), &[]),
        };
        let new = match self.sess.table.alloc(Sock::new(os, domain)) {
            Ok(n) => n,
            Err(s) => {
                env.backend.close(s.os);
                return self.chan.complete(tag, slot, neg(libc::EMFILE), &[]);
            }
        };
        self.chan.region().reset_sock(new);
        let s = live(&mut self.sess.table, new)?;
        s.set_flags(&mut self.chan, new, SF_OPEN, 0);
        self.chan.complete(tag, slot, i64::from(new), &[])
    }

    fn op_bind<B: Backend<Sock = S>>(
        &mut self,
        env: &mut Env<B>,
        tag: u64,
        slot: u32,
        a: Addr,
    ) -> Result<(), Violation> {
        let (pid, uid) = (self.sess.pid, self.sess.uid);
        let domain = live(&mut self.sess.table, slot)?.domain;
        let addr = match session::check_family(domain, &a) {
            Ok(a) => a,
            Err(e) => return self.chan.complete(tag, slot, neg(e), &[]),
        };
        let port = addr.port();
        let start = if port != 0 {
            sys::unprivileged_port_start()
        } else {
            0
        };
        let caps = || sys::cap_eff(pid).ok();
        let check = session::bind_allowed(port, start, uid, caps)
            .and_then(|_| env.reuseport.check(port, uid));
        if let Err(e) = check {
            debug!(pid, port, errno = e, "bind refused");
            return self.chan.complete(tag, slot, neg(e), &[]);
        }
        let s = live(&mut self.sess.table, slot)?;
        if let Err(e) = env.backend.bind(&s.os, &addr) {
            return self.chan.complete(tag, slot, err_of(&e), &[]);
        }
        if s.reuseport && s.reuse_port_bound.is_none() {
            if let Ok(local) = env.backend.local_addr(&s.os) {
                env.reuseport.add(local.port(), uid);
                s.reuse_port_bound = Some(local.port());
            }
        }
        self.chan.complete(tag, slot, 0, &[])
    }

    fn op_listen<B: Backend<Sock = S>>(
        &mut self,
        env: &mut Env<B>,
        tag: u64,
        slot: u32,
        backlog: i32,
    ) -> Result<(), Violation> {
        let sid = env.sid;
        let s = live(&mut self.sess.table, slot)?;
        if let Err(e) = env.backend.listen(&s.os, backlog) {
            return self.chan.complete(tag, slot, err_of(&e), &[]);
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
                })
            }
        }
        s.kind = Kind::Listening;
        if !s.registered {
            if let Err(e) = env.backend.register(&s.os, token(sid, slot)) {
                warn!(pid = self.sess.pid, "listen: registering the socket: {e}");
                return self.chan.complete(tag, slot, err_of(&e), &[]);
            }
            s.registered = true;
        }
        s.set_flags(&mut self.chan, slot, SF_LISTENING, 0);
        self.chan.complete(tag, slot, 0, &[])?;
        self.fill_accept_queue(env, slot)
    }

    /// Moves connections from the kernel into the agent's queue (up to its cap), serves parked
    /// accepts, and publishes `accept_ready`.
    fn fill_accept_queue<B: Backend<Sock = S>>(
        &mut self,
        env: &mut Env<B>,
        lslot: u32,
    ) -> Result<(), Violation> {
        loop {
            let Some(s) = self.sess.table.get_mut(lslot) else {
                return Ok(());
            };
            let Some(l) = s.listener.as_mut() else {
                return Ok(());
            };
            let mut queued = 0u32;
            while l.queue.len() < l.cap {
                match env.backend.accept(&s.os) {
                    Ok(c) => {
                        l.queue.push_back(c);
                        queued += 1;
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
                        warn!(pid = self.sess.pid, "accept: {e}");
                        break;
                    }
                }
            }
            if l.queue.len() >= l.cap {
                l.kernel_pending = true;
            }
            if queued > 0 {
                if let Some(ctl) = self.chan.region().sock(lslot) {
                    ctl.state.0.accept_seq.fetch_add(queued, Ordering::SeqCst);
                }
            }
            let mut served = false;
            while let Some(tag) = self.next_parked(lslot) {
                self.accept_one(env, lslot, tag)?;
                served = true;
            }
            self.publish_accept_ready(lslot);
            let again = self
                .sess
                .table
                .get_mut(lslot)
                .and_then(|s| s.listener.as_ref())
                .is_some_and(|l| served && l.kernel_pending && l.queue.len() < l.cap);
            if !again {
                return Ok(());
            }
        }
    }

    /// The oldest parked accept of `lslot`, when a connection is queued for it.
    fn next_parked(&mut self, lslot: u32) -> Option<u64> {
        let l = self.sess.table.get_mut(lslot)?.listener.as_mut()?;
        if l.queue.is_empty() {
            return None;
        }
        l.parked.pop_front()
    }

    fn publish_accept_ready(&mut self, lslot: u32) {
        let n = self
            .sess
            .table
            .get_mut(lslot)
            .and_then(|s| s.listener.as_ref())
            .map_or(0, |l| l.queue.len());
        if let Some(ctl) = self.chan.region().sock(lslot) {
            ctl.state.0.accept_ready.store(n as u32, Ordering::SeqCst);
        }
        self.chan.dirty(lslot);
    }

    /// Takes the oldest queued connection of `lslot` into a new slot and completes `tag`.
    fn accept_one<B: Backend<Sock = S>>(
        &mut self,
        env: &mut Env<B>,
        lslot: u32,
        tag: u64,
    ) -> Result<(), Violation> {
        if !self.sess.table.has_free() {
            return self.chan.complete(tag, lslot, neg(libc::EMFILE), &[]);
        }
        let l = live(&mut self.sess.table, lslot)?;
        let domain = l.domain;
        let Some((os, peer)) = l.listener.as_mut().and_then(|l| l.queue.pop_front()) else {
            return self.chan.complete(tag, lslot, neg(libc::EAGAIN), &[]);
        };
        let mut s = Sock::new(os, domain);
        s.kind = Kind::Connected;
        let slot = match self.sess.table.alloc(s) {
            Ok(n) => n,
            Err(s) => {
                env.backend.close(s.os);
                return self.chan.complete(tag, lslot, neg(libc::EMFILE), &[]);
            }
        };
        self.chan.region().reset_sock(slot);
        let s = live(&mut self.sess.table, slot)?;
        if let Err(e) = env.backend.register(&s.os, token(env.sid, slot)) {
            warn!(pid = self.sess.pid, "accept: registering the socket: {e}");
            if let Some(s) = self.sess.table.free(slot) {
                env.backend.close(s.os);
            }
            return self.chan.complete(tag, lslot, err_of(&e), &[]);
        }
        s.registered = true;
        s.set_flags(&mut self.chan, slot, SF_OPEN | SF_CONNECTED, 0);
        pump_rx(env.backend, &mut self.chan, slot, s)?;
        self.chan.complete(
            tag,
            lslot,
            i64::from(slot),
            &session::wire_of(&peer).encode(),
        )
    }

    fn op_accept<B: Backend<Sock = S>>(
        &mut self,
        env: &mut Env<B>,
        tag: u64,
        slot: u32,
        wait: bool,
    ) -> Result<(), Violation> {
        let s = live(&mut self.sess.table, slot)?;
        let Some(l) = s.listener.as_mut().filter(|_| s.kind == Kind::Listening) else {
            return self.chan.complete(tag, slot, neg(libc::EINVAL), &[]);
        };
        if l.queue.is_empty() {
            // A parked accept without a tag could never deliver its slot: treat as non-blocking.
            if wait && tag != 0 {
                l.parked.push_back(tag);
                return Ok(());
            }
            return self.chan.complete(tag, slot, neg(libc::EAGAIN), &[]);
        }
        self.accept_one(env, slot, tag)?;
        self.fill_accept_queue(env, slot)
    }

    fn op_connect<B: Backend<Sock = S>>(
        &mut self,
        env: &mut Env<B>,
        tag: u64,
        slot: u32,
        a: Addr,
        wait: bool,
    ) -> Result<(), Violation> {
        let sid = env.sid;
        let s = live(&mut self.sess.table, slot)?;
        let addr = match session::check_family(s.domain, &a) {
            Ok(a) => a,
            Err(e) => return self.chan.complete(tag, slot, neg(e), &[]),
        };
        let r = env.backend.connect(&s.os, &addr);
        let in_progress = matches!(&r, Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS));
        if let Err(e) = &r {
            if !in_progress {
                return self.chan.complete(tag, slot, err_of(e), &[]);
            }
        }
        if !s.registered {
            if let Err(e) = env.backend.register(&s.os, token(sid, slot)) {
                warn!(pid = self.sess.pid, "connect: registering the socket: {e}");
                return self.chan.complete(tag, slot, err_of(&e), &[]);
            }
            s.registered = true;
        }
        if in_progress {
            s.kind = Kind::Connecting;
            s.set_flags(&mut self.chan, slot, SF_CONNECTING, 0);
            if wait && tag != 0 {
                s.connect_tag = Some(tag);
                return Ok(());
            }
            return self.chan.complete(tag, slot, neg(libc::EINPROGRESS), &[]);
        }
        s.kind = Kind::Connected;
        s.set_flags(&mut self.chan, slot, SF_CONNECTED, 0);
        self.chan.complete(tag, slot, 0, &[])?;
        pump_rx(env.backend, &mut self.chan, slot, s)?;
        pump_tx(env.backend, &mut self.chan, slot, s).map(|_| ())
    }

    fn op_shutdown<B: Backend<Sock = S>>(
        &mut self,
        env: &mut Env<B>,
        tag: u64,
        slot: u32,
        how: u64,
    ) -> Result<(), Violation> {
        if how > 2 {
            return self.chan.complete(tag, slot, neg(libc::EINVAL), &[]);
        }
        let how = how as i32;
        let rd = how == libc::SHUT_RD || how == libc::SHUT_RDWR;
        let wr = how == libc::SHUT_WR || how == libc::SHUT_RDWR;
        let s = live(&mut self.sess.table, slot)?;
        if s.kind == Kind::Connected && !s.io_dead {
            if rd {
                s.set_flags(&mut self.chan, slot, SF_RX_SHUT, 0);
                if let Err(e) = env.backend.shutdown(&s.os, libc::SHUT_RD) {
                    debug!(slot, "shutdown(SHUT_RD): {e}");
                }
            }
            if wr {
                s.set_flags(&mut self.chan, slot, SF_TX_SHUT, 0);
                s.shut_wr_pending = true;
                pump_tx(env.backend, &mut self.chan, slot, s)?;
            }
            return self.chan.complete(tag, slot, 0, &[]);
        }
        if let Err(e) = env.backend.shutdown(&s.os, how) {
            return self.chan.complete(tag, slot, err_of(&e), &[]);
        }
        // A listener shut for reading stops listening; a connect in progress is abandoned.
        let mut parked = Vec::new();
        let mut closed = Vec::new();
        if s.kind == Kind::Listening && rd {
            if let Some(l) = s.listener.take() {
                parked.extend(l.parked);
                closed.extend(l.queue.into_iter().map(|(c, _)| c));
            }
            s.kind = Kind::Fresh;
            s.set_flags(&mut self.chan, slot, 0, SF_LISTENING);
        } else if s.kind == Kind::Connecting {
            s.kind = Kind::Fresh;
            parked.extend(s.connect_tag.take());
            s.set_flags(&mut self.chan, slot, 0, SF_CONNECTING);
        }
        for c in closed {
            env.backend.close(c);
        }
        self.publish_accept_ready(slot);
        for t in parked {
            self.chan.complete(t, slot, neg(libc::EINVAL), &[])?;
        }
        self.chan.complete(tag, slot, 0, &[])
    }

    fn op_setsockopt<B: Backend<Sock = S>>(
        &mut self,
        env: &mut Env<B>,
        tag: u64,
        slot: u32,
        level: i32,
        name: i32,
        val: &[u8],
    ) -> Result<(), Violation> {
        let allowed = match session::sockopt_policy(level, name, true, val) {
            OptPolicy::Pass => Ok(()),
            OptPolicy::Deny(e) => Err(e),
            OptPolicy::NeedNetAdmin => {
                if self.has_cap(session::CAP_NET_ADMIN) {
                    Ok(())
                } else {
                    Err(libc::EPERM)
                }
            }
            OptPolicy::Congestion => {
                if self.has_cap(session::CAP_NET_ADMIN)
                    || session::congestion_allowed(val, &sys::allowed_congestion_controls())
                {
                    Ok(())
                } else {
                    Err(libc::EPERM)
                }
            }
        };
        if let Err(e) = allowed {
            debug!(
                pid = self.sess.pid,
                level,
                name,
                errno = e,
                "setsockopt refused"
            );
            return self.chan.complete(tag, slot, neg(e), &[]);
        }
        let s = live(&mut self.sess.table, slot)?;
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
                let r = env.backend.setsockopt(&s.os, level, name, &off);
                if r.is_ok() {
                    let mut keep = [0u8; 8];
                    keep.copy_from_slice(&val[..8]);
                    s.linger = Some(keep);
                }
                r
            } else {
                let r = env.backend.setsockopt(&s.os, level, name, val);
                if r.is_ok() {
                    s.linger = None;
                }
                r
            }
        } else {
            let r = env.backend.setsockopt(&s.os, level, name, val);
            if r.is_ok() && level == libc::SOL_SOCKET && name == libc::SO_REUSEPORT {
                s.reuseport = int(val, 0).unwrap_or(0) != 0;
            }
            r
        };
        match r {
            Ok(()) => self.chan.complete(tag, slot, 0, &[]),
            Err(e) => self.chan.complete(tag, slot, err_of(&e), &[]),
        }
    }

    fn op_getsockopt<B: Backend<Sock = S>>(
        &mut self,
        env: &mut Env<B>,
        tag: u64,
        slot: u32,
        level: i32,
        name: i32,
        len: usize,
    ) -> Result<(), Violation> {
        match session::sockopt_policy(level, name, false, &[]) {
            OptPolicy::Deny(e) => return self.chan.complete(tag, slot, neg(e), &[]),
            OptPolicy::NeedNetAdmin if !self.has_cap(session::CAP_NET_ADMIN) => {
                return self.chan.complete(tag, slot, neg(libc::EPERM), &[]);
            }
            _ => {}
        }
        let s = live(&mut self.sess.table, slot)?;
        if let (libc::SOL_SOCKET, libc::SO_LINGER, Some(l)) = (level, name, s.linger) {
            let n = len.min(l.len());
            return self.chan.complete(tag, slot, n as i64, &l[..n]);
        }
        let mut buf = [0u8; MAX_OPTVAL];
        match env.backend.getsockopt(&s.os, level, name, &mut buf[..len]) {
            Ok(n) => self.chan.complete(tag, slot, n as i64, &buf[..n]),
            Err(e) => self.chan.complete(tag, slot, err_of(&e), &[]),
        }
    }

    /// The host closed `slot` (or exited): close now, or drain TX first.
    fn close_slot<B: Backend<Sock = S>>(
        &mut self,
        env: &mut Env<B>,
        slot: u32,
    ) -> Result<(), Violation> {
        let s = live(&mut self.sess.table, slot)?;
        let may_drain = matches!(s.kind, Kind::Connected | Kind::Connecting) && !s.io_dead;
        if !may_drain || s.tx_pending(&self.chan, slot)? == 0 {
            return self.finish_close(env, slot);
        }
        s.connect_tag = None;
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        s.drain_deadline = Some(deadline);
        if env.next_timer.map_or(true, |t| deadline < t) {
            *env.next_timer = Some(deadline);
        }
        self.sess.table.start_drain(slot);
        let Some((s, _)) = self.sess.table.get_any_mut(slot) else {
            return Ok(());
        };
        if pump_tx(env.backend, &mut self.chan, slot, s)? {
            return self.finish_close(env, slot);
        }
        Ok(())
    }

    /// Releases a slot and everything its socket holds.
    fn finish_close<B: Backend<Sock = S>>(
        &mut self,
        env: &mut Env<B>,
        slot: u32,
    ) -> Result<(), Violation> {
        let Some(mut s) = self.sess.table.free(slot) else {
            return Ok(());
        };
        if let Some(p) = s.reuse_port_bound.take() {
            env.reuseport.remove(p);
        }
        let mut parked = Vec::new();
        if let Some(l) = s.listener.take() {
            for (c, _) in l.queue {
                env.backend.close(c);
            }
            parked.extend(l.parked);
        }
        parked.extend(s.connect_tag.take());
        env.backend.close(s.os);
        if let Some(ctl) = self.chan.region().sock(slot) {
            ctl.state.0.flags.fetch_and(!SF_OPEN, Ordering::SeqCst);
            ctl.state.0.accept_ready.store(0, Ordering::SeqCst);
        }
        self.chan.dirty(slot);
        for t in parked {
            self.chan.complete(t, slot, neg(libc::EINVAL), &[])?;
        }
        Ok(())
    }

    /// Closes every socket at once (channel dropped or agent stopping).
    fn close_all<B: Backend<Sock = S>>(&mut self, env: &mut Env<B>) {
        for slot in self.sess.table.used_slots() {
            let _ = self.finish_close(env, slot);
        }
    }

    fn expire_drains<B: Backend<Sock = S>>(
        &mut self,
        env: &mut Env<B>,
        now: Instant,
    ) -> Result<(), Violation> {
        for slot in self.sess.table.used_slots() {
            let Some((s, true)) = self.sess.table.get_any_mut(slot) else {
                continue;
            };
            match s.drain_deadline {
                Some(d) if d <= now => {
                    debug!(pid = self.sess.pid, slot, "drain timed out, closing");
                    self.finish_close(env, slot)?;
                }
                Some(d) if env.next_timer.map_or(true, |t| d < t) => *env.next_timer = Some(d),
                _ => {}
            }
        }
        Ok(())
    }

    /// Readiness of the backend socket of `slot` (live or draining).
    fn on_ready<B: Backend<Sock = S>>(
        &mut self,
        env: &mut Env<B>,
        slot: u32,
        r: Readiness,
    ) -> Result<(), Violation> {
        let Some((s, draining)) = self.sess.table.get_any_mut(slot) else {
            return Ok(());
        };
        let kind = s.kind;
        match kind {
            Kind::Fresh => return Ok(()),
            Kind::Listening => {
                if r.readable || r.error || r.hup {
                    return self.fill_accept_queue(env, slot);
                }
                return Ok(());
            }
            Kind::Connecting => match env.backend.connect_state(&s.os) {
                ConnectState::Pending => return Ok(()),
                ConnectState::Connected => {
                    s.kind = Kind::Connected;
                    s.set_flags(&mut self.chan, slot, SF_CONNECTED, SF_CONNECTING);
                    if let Some(t) = s.connect_tag.take() {
                        self.chan.complete(t, slot, 0, &[])?;
                    }
                }
                ConnectState::Failed(e) => {
                    s.kind = Kind::Fresh;
                    if let Some(t) = s.connect_tag.take() {
                        s.set_flags(&mut self.chan, slot, 0, SF_CONNECTING);
                        self.chan.complete(t, slot, neg(e), &[])?;
                    } else {
                        s.post_error(&mut self.chan, slot, e, 0, SF_CONNECTING);
                    }
                    if draining {
                        return self.finish_close(env, slot);
                    }
                    return Ok(());
                }
            },
            Kind::Connected => {}
        }
        let just_connected = s.kind == Kind::Connected && !matches!(kind, Kind::Connected);
        let Some((s, _)) = self.sess.table.get_any_mut(slot) else {
            return Ok(());
        };
        if !draining && (r.readable || r.hup || r.error || just_connected) {
            pump_rx(env.backend, &mut self.chan, slot, s)?;
        }
        let empty = pump_tx(env.backend, &mut self.chan, slot, s)?;
        if r.error && !s.io_dead {
            let e = env.backend.take_error(&s.os);
            if e != 0 {
                s.fail(&mut self.chan, slot, e);
            }
        }
        if draining && (empty || s.io_dead) {
            return self.finish_close(env, slot);
        }
        Ok(())
    }
}
