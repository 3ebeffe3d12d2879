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
//!
//! Files, one job each (all `impl Agent` blocks over the state defined here):
//! `event_loop.rs` (the loop, timers, flushes), `control.rs` (attach, detach, stats, dropped
//! channels), `tickets.rs` (fork tickets and their pidfds), `commands.rs` (one command of a ring,
//! executed), `listeners.rs` (accept queues), `bindings.rs` (close, drain, socket release),
//! `datapath.rs` (publication, RX and TX pumps, backend readiness).

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
use crate::spin::{Idle, Next, SpinPolicy};
use crate::stats::{Counters, Snapshot};
use crate::sys;
use crate::ticket::{self, Tickets};

mod bindings;
mod commands;
mod control;
mod datapath;
mod event_loop;
mod listeners;
mod tickets;

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
}
