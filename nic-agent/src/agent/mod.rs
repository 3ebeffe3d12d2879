//! The agent: a sans-IO core (the logic: sessions, sockets, fork tickets, every command) inside a
//! shell that holds every descriptor and the clock and runs the single-threaded loop.
//!
//! ```text
//!            +--------------------------- Agent (shell) ----------------------------+
//!  epoll  -> | signalfd, control listener, pending hellos, control conns, doorbells,  |
//!  clock     | pidfds; SpinPolicy; Instant::now()                                    |
//!            |    | attach/detach/drop_channel, ticket_child_exited (control.rs)     |
//!            |    | process_commands, poll_backend/poll_local, handle_timeout, flush  |
//!            |    v  (time passed in)                  ^ poll_action(): RingDoorbells,
//!            |  +-------------------- Core ----------------------+ WatchPid, UnwatchPid,
//!            |  | procs (Session + Channel), SockTable, Tickets, | Release{sid, chan}
//!            |  | reuseport; commands, listeners, bindings,      |
//!            |  | datapath, tickets  --> Backend trait (sockets,  |
//!            |  | host facts)  --> channels (shared memory)      |
//!            |  +------------------------------------------------+
//!            +-----------------------------------------------------------------------+
//!  loop {
//!    epoll_wait(agent set)   timeout 0 while busy; after --spin-us idle: announce sleep,
//!                            re-check rings, block
//!    backend readiness  -> accept queues, connect results, RX/TX pumps
//!    every command ring -> decode (violations drop the channel) -> execute
//!    timers             -> drains and fork tickets past their deadline
//!    flush per channel  -> overflowed events, one futex bump, dirty-socket wake-ups, counters;
//!                          owed doorbells written by the shell
//!  }
//! ```
//!
//! Sockets live in one table ([`SockTable`]); a session's slot is a *binding* of one of them.
//! After a fork several sessions bind the same socket: a listener's accept queue is shared by all
//! of them, a connection's RX goes to one active binding and moves on when that one closes (see
//! docs/fork-model.md). Every change of a socket's state is published to all its bindings.
//!
//! Files, one job each. The shell (`impl Agent`): `mod.rs` (startup), `event_loop.rs` (the
//! loop, sleeping, the actions the core asks for), `control.rs` (control connections, attach,
//! waiters, stats, exits, pidfds). The core (`impl Core`): `core.rs` (its state, inputs and
//! outputs; tests in `core/tests.rs`), `commands.rs` (one command of a ring, executed),
//! `tickets.rs` (fork tickets: taken, tied to a child, claimed, expired), `listeners.rs` (accept
//! queues), `bindings.rs` (close, drain, migration, socket release), `datapath.rs`
//! (publication, RX and TX pumps, backend readiness).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shm_proto::msg::{
    Hello, Reply, HELLO_ATTACH, HELLO_ATTACH_CHILD, HELLO_STATS, HELLO_WAITER, STATS_JSON,
    STATS_JSON_SOCKETS, STATS_TEXT,
};
use shm_proto::region::Geometry;
use shm_proto::*;
use thiserror::Error;
use tracing::{debug, error, info, warn};

use crate::backend::{Backend, ConnectState, Readiness, SockEvent};
use crate::channel::Channel;
use crate::host_poll::{Found, HostPoll};
use crate::session::{self, Command, OptPolicy, ReuseportTable, Session, Violation};
use crate::sock::{self, Bind, Binding, Kind, Listener, Parked, Sock, SockId, SockTable};
use crate::spin::{Idle, Next, SpinPolicy};
use crate::stats::{
    AgentFacts, ConnCounters, Counters, DroppedProc, ProcSnapshot, Snapshot, RECENT_DROPS,
};
use crate::sys;
use crate::ticket::{self, Tickets};

mod bindings;
mod commands;
mod control;
mod core;
mod datapath;
mod event_loop;
mod listeners;
mod tickets;

use self::core::Proc;
pub use self::core::{Action, Core, Cred};

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
/// A backend whose poll is a wait on its own set ([`Backend::poll_is_wait`]: the kernel's) is
/// polled on its own every EPOLL_EVERY while the agent is awake, and the agent set around it
/// only every this many of those polls: the agent set nests the backend's, so polling both reads
/// every ready socket's state twice, and nothing else in it is urgent while the loop reads the
/// command rings itself (control connections, signals and pidfds wait at most this many polls).
const OUTER_EVERY: u32 = 16;
/// Iterations a doorbell may wait while more input is queued (see `run`).
const DOORBELL_DEFER: u32 = 4;
/// On a contended CPU (the agent shares its core, spin::SpinPolicy), the longest an owed
/// doorbell of a process on CPUs apart from the agent's is held so that the sleeping host
/// wakes to a larger batch; always written before the agent sleeps (docs/agent-loop.md,
/// *Doorbells*).
const DOORBELL_HOLD: Duration = Duration::from_micros(30);
/// ... and for at most this many loop iterations.
const DOORBELL_HOLD_ITERS: u32 = 64;

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
    /// `--realtime auto`: real-time priority while the agent's CPU is contended and its own share
    /// of it small (spin.rs).
    pub realtime_auto: bool,
    /// `--host-poll-us`: the polling interval while hosts answer (host_poll.rs); zero: off.
    pub host_poll: Duration,
    /// `--metrics ADDR:PORT`: serve Prometheus text on `/metrics` (crate::metrics).
    pub metrics: Option<std::net::SocketAddr>,
    /// `--tls-port`: local ports whose connections the agent terminates TLS for, with the
    /// server configuration built from `--tls-cert`/`--tls-key` (tls::terminate).
    pub tls: Option<(Vec<u16>, std::sync::Arc<rustls::ServerConfig>)>,
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
    let metrics = match cfg.metrics {
        Some(addr) => Some(
            crate::metrics::Endpoint::bind(addr, cfg.socket.clone())
                .map_err(io_err(format!("metrics endpoint {addr}")))?,
        ),
        None => None,
    };
    let mut agent = Agent::new(cfg, backend)?;
    if let Some(m) = metrics {
        // Started after Agent::new: its thread inherits the blocked SIGTERM/SIGINT, which the
        // loop's signalfd reads.
        m.start().map_err(io_err("starting the metrics thread"))?;
    }
    agent.run();
    Ok(())
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

/// The shell around [`Core`]: every descriptor and the clock. It runs the loop, serves the
/// control plane, and does what the core's actions ask.
pub struct Agent<B: Backend> {
    cfg: Config,
    epoll: sys::Epoll,
    _sigfd: OwnedFd,
    sigfd_raw: RawFd,
    listener: OwnedFd,
    socket_id: Option<(u64, u64)>,
    /// Control connections that have not said hello yet.
    pending: HashMap<u64, OwnedFd>,
    next_conn: u64,
    /// The control connection and doorbell of each attached process, by session id.
    conns: HashMap<u32, Conn>,
    /// pidfds of ticket children, by ticket id.
    pidfds: HashMap<u64, OwnedFd>,
    core: Core<B>,
    /// The last clock read: the time handed to the core on iterations that read none.
    clock: Instant,
    spin: SpinPolicy,
    host_poll: HostPoll,
    /// Iterations the owed doorbells have waited.
    deferred: u32,
    /// Sessions whose owed doorbells are held, and since when the oldest waits.
    held: Vec<u32>,
    held_since: Option<Instant>,
    /// The agent's CPU is contended this iteration: doorbells of processes on CPUs apart from
    /// the agent's are held up to DOORBELL_HOLD, those of processes that can only run on the
    /// agent's one CPU while the agent is busy (`run`).
    holding: bool,
    /// This iteration found work.
    busy: bool,
    /// Backend polls since the agent set was last polled (OUTER_EVERY).
    outer_skips: u32,
    stop: bool,
    evbuf: Vec<libc::epoll_event>,
    /// When the agent started (`uptime_ms` in the JSON report).
    started: Instant,
}

/// An attached process's descriptors.
struct Conn {
    ctl: OwnedFd,
    bell: OwnedFd,
    /// The process's pid, where its CPUs are, seen from the agent's (its doorbells may be held
    /// on a contended agent CPU, `run`, and polled for: host_poll.rs), and when that was last
    /// read.
    pid: i32,
    placement: sys::Placement,
    placed_at: Instant,
}

impl Conn {
    /// Where the process runs (read again every second).
    fn placement(&mut self, now: Instant) -> sys::Placement {
        if now.saturating_duration_since(self.placed_at) >= Duration::from_secs(1) {
            self.placement = sys::cpu_placement(self.pid);
            self.placed_at = now;
        }
        self.placement
    }

    /// Whether the process runs on CPUs apart from the agent's.
    fn apart(&mut self, now: Instant) -> bool {
        self.placement(now) == sys::Placement::Apart
    }
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
        let cfg_tls = cfg.tls.clone();
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
        let listener = sys::seqpacket_listen(&cfg.socket, 0o666)
            .map_err(io_err(format!("binding {}", cfg.socket.display())))?;
        let socket_id = sys::file_id(&cfg.socket);
        let cleanup = |e: StartupError| {
            let _ = std::fs::remove_file(&cfg.socket);
            e
        };
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
        let realtime_auto = cfg.realtime_auto;
        let host_poll = cfg.host_poll;
        if !host_poll.is_zero() {
            if let Err(e) = sys::set_timer_slack(Duration::from_micros(1)) {
                warn!("timer slack: {e}");
            }
        }
        Ok(Agent {
            sigfd_raw: sigfd.as_raw_fd(),
            _sigfd: sigfd,
            cfg,
            epoll,
            listener,
            socket_id,
            pending: HashMap::new(),
            next_conn: 1,
            conns: HashMap::new(),
            pidfds: HashMap::new(),
            core: {
                let mut core = Core::new(backend, Instant::now());
                if let Some((ports, tls)) = &cfg_tls {
                    core.set_tls_termination(ports, tls.clone());
                }
                core
            },
            clock: Instant::now(),
            spin: SpinPolicy::new(spin).with_realtime_auto(realtime_auto),
            host_poll: HostPoll::new(host_poll),
            deferred: 0,
            held: Vec::new(),
            held_since: None,
            holding: false,
            busy: false,
            outer_skips: 0,
            stop: false,
            evbuf: sys::event_buf(256),
            started: Instant::now(),
        })
    }
}
