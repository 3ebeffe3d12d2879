//! `libsnstack.so`: loaded with `LD_PRELOAD` into an unmodified program, it moves the program's
//! AF_INET/AF_INET6 TCP sockets to `snstack-agent` over the shared-memory channel of `shm-proto`.
//!
//! Modules in layers; each uses only the layers below it (docs/preload.md):
//! ```text
//!  hooks.rs        extern "C", thin: fd not ours -> libc (RTLD_NEXT, real.rs)
//!    │
//!  fdmodel.rs      close: what an fd number names, kept exact
//!    │
//!  ops.rs  epoll.rs  poll.rs  sendfile.rs  exec.rs  spawn.rs  signals.rs     (logic)
//!    │
//!  readiness.rs  sockref.rs  sock.rs  fdtable.rs  interest.rs  filemap.rs    (state)
//!    │
//!  channel.rs ══ region ══ snstack-agent
//!    │
//!  sys.rs  util.rs  real.rs
//! ```
//! Every fd the library does not own goes to libc untouched after one atomic load (`fdtable`).
//! The library never calls a symbol it interposes: its own OS calls are raw syscalls (`sys`).
//! Configuration (environment, read once): `SNSTACK_OFFLOAD`, `SNSTACK_AGENT`, `SNSTACK_STRICT`,
//! `SNSTACK_SPIN_US`, `SNSTACK_YIELDS`, `SNSTACK_LIVENESS_MS`, `SNSTACK_LOG`. See README.md.

#![allow(clippy::missing_safety_doc)]

mod channel;
mod epoll;
mod exec;
mod fdmodel;
mod fdtable;
mod filemap;
mod hooks;
mod interest;
mod ops;
mod poll;
mod readiness;
mod real;
mod sendfile;
mod signals;
mod sock;
mod sockref;
mod spawn;
mod sys;
mod util;

use channel::Channel;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering};
use util::{env, parse_u64, SpinMutex};

pub(crate) fn set_errno(e: i32) {
    // SAFETY: errno location of the calling thread.
    unsafe { *libc::__errno_location() = e };
}

const ST_UNINIT: u8 = 0;
const ST_ATTACHED: u8 = 2;
const ST_PASS: u8 = 3;
const ST_STRICT: u8 = 4;

static STATE: AtomicU8 = AtomicU8::new(ST_UNINIT);
static CHAN: AtomicPtr<Channel> = AtomicPtr::new(core::ptr::null_mut());
static INIT_LOCK: SpinMutex<()> = SpinMutex::new(());

// Configuration, read once.
const CFG_UNREAD: u8 = 0;
const CFG_ON: u8 = 1;
const CFG_OFF: u8 = 2;
static CFG: AtomicU8 = AtomicU8::new(CFG_UNREAD);
static STRICT: AtomicU8 = AtomicU8::new(0);
/// Host spin budget override in ns (u64::MAX = use the agent's suggestion).
static SPIN_NS: AtomicU64 = AtomicU64::new(u64::MAX);
/// How often a thread blocked on the channel wakes to check that the agent is alive
/// (`SNSTACK_LIVENESS_MS`, default 1 s): the bound on how long a dead agent goes unnoticed.
pub(crate) static LIVENESS_NS: AtomicU64 = AtomicU64::new(1_000_000_000);
/// `epoll_wait` with nothing ready yields the CPU this many times (re-checking after each) before
/// it sleeps in the kernel (`SNSTACK_YIELDS`, 0..64, default 0; docs/epoll-model.md).
pub(crate) static YIELDS: AtomicU32 = AtomicU32::new(0);

pub(crate) const DEFAULT_AGENT: &[u8] = b"/run/snstack/agent.sock";

fn read_config() -> u8 {
    let c = CFG.load(Ordering::Acquire);
    if c != CFG_UNREAD {
        return c;
    }
    if let Some(l) = env(c"SNSTACK_LOG") {
        let lvl = match l {
            b"error" => util::ERROR,
            b"warn" => util::WARN,
            b"info" => util::INFO,
            b"debug" | b"trace" => util::DEBUG,
            _ => util::WARN,
        };
        util::LOG_LEVEL.store(lvl, Ordering::Relaxed);
    }
    if env(c"SNSTACK_STRICT").is_some_and(|v| v == b"1") {
        STRICT.store(1, Ordering::Relaxed);
    }
    if let Some(us) = env(c"SNSTACK_SPIN_US").and_then(parse_u64) {
        SPIN_NS.store(us.saturating_mul(1000), Ordering::Relaxed);
    }
    if let Some(n) = env(c"SNSTACK_YIELDS").and_then(parse_u64) {
        YIELDS.store(n.min(64) as u32, Ordering::Relaxed);
    }
    if let Some(ms) = env(c"SNSTACK_LIVENESS_MS").and_then(parse_u64) {
        LIVENESS_NS.store(ms.clamp(1, 60_000) * 1_000_000, Ordering::Relaxed);
    }
    let off = env(c"SNSTACK_OFFLOAD").is_some_and(|v| v == b"0");
    let v = if off { CFG_OFF } else { CFG_ON };
    CFG.store(v, Ordering::Release);
    v
}

/// `SNSTACK_OFFLOAD=0`: the library is a pure pass-through for this process.
pub(crate) fn offload_disabled() -> bool {
    read_config() == CFG_OFF
}

pub(crate) enum Chan {
    Attached(&'static Channel),
    /// Offload off or agent unreachable (fallback): kernel sockets.
    Pass,
    /// Agent unreachable in strict mode: socket() fails.
    Strict,
}

#[inline]
pub(crate) fn channel_if_attached() -> Option<&'static Channel> {
    if STATE.load(Ordering::Acquire) == ST_ATTACHED {
        let p = CHAN.load(Ordering::Acquire);
        // SAFETY: set once to a leaked Box before ST_ATTACHED is published.
        return unsafe { p.as_ref() };
    }
    None
}

/// The process's channel, attaching on first use.
pub(crate) fn channel() -> Chan {
    match STATE.load(Ordering::Acquire) {
        ST_ATTACHED => {
            if let Some(c) = channel_if_attached() {
                return Chan::Attached(c);
            }
        }
        ST_PASS => return Chan::Pass,
        ST_STRICT => return Chan::Strict,
        _ => {}
    }
    if offload_disabled() {
        return Chan::Pass;
    }
    let _g = INIT_LOCK.lock();
    match STATE.load(Ordering::Acquire) {
        ST_UNINIT => {}
        _ => {
            drop(_g);
            return channel();
        }
    }
    let mut pathbuf = [0u8; 108];
    let path = agent_path(&mut pathbuf);
    let spin = SPIN_NS.load(Ordering::Relaxed);
    let spin = if spin == u64::MAX { None } else { Some(spin) };
    match Channel::attach(path, spin) {
        Ok(ch) => {
            let p = Box::into_raw(Box::new(ch));
            CHAN.store(p, Ordering::Release);
            STATE.store(ST_ATTACHED, Ordering::Release);
            log!(
                util::INFO,
                "attached to agent at {}",
                core::str::from_utf8(path).unwrap_or("?")
            );
            channel()
        }
        Err(e) => {
            let strict = STRICT.load(Ordering::Relaxed) == 1;
            let p = core::str::from_utf8(path).unwrap_or("?");
            if strict {
                log!(util::ERROR, "agent at {p} unreachable ({e}); SNSTACK_STRICT=1: TCP sockets fail with ENETDOWN");
                STATE.store(ST_STRICT, Ordering::Release);
                Chan::Strict
            } else {
                log!(
                    util::ERROR,
                    "warning: agent at {p} unreachable ({e}); using kernel sockets"
                );
                STATE.store(ST_PASS, Ordering::Release);
                Chan::Pass
            }
        }
    }
}

/// Ticket secret of a fork in progress through our `fork` hook (0 = none). Tells the atfork child
/// handler that the hook will hand the inherited sockets over to the child's own channel.
pub(crate) static FORK_SECRET: AtomicU64 = AtomicU64::new(0);

/// Forgets the parent's offloaded fds in a child that cannot take them over.
fn drop_inherited(why: &str) {
    let mut n = 0;
    fdtable::for_each_sock(|fd, _| {
        fdtable::clear(fd);
        n += 1;
    });
    fdtable::close_internal();
    epoll::forget_all();
    CHAN.store(core::ptr::null_mut(), Ordering::Release);
    STATE.store(ST_UNINIT, Ordering::Release);
    if n > 0 {
        log!(
            util::WARN,
            "fork: {n} offloaded socket(s) inherited by the child are not usable in it: {why}"
        );
    }
}

/// atfork child handler. The child never uses its parent's channel (host-side locks, completion
/// cells and the region belong to the parent's session). Locks another thread held at fork time
/// are released (that thread does not exist in the child). When the fork went through our `fork`
/// hook, the hook hands the sockets over (see [`fork_child`]); a fork we did not see (`_Fork`,
/// a raw `clone`) leaves the child without the inherited sockets, with one log line.
extern "C" fn atfork_child() {
    // SAFETY: the child has one thread; nobody holds these locks now.
    unsafe { INIT_LOCK.force_unlock() };
    epoll::unlock_all_after_fork();
    if STATE.load(Ordering::Acquire) != ST_ATTACHED {
        return;
    }
    if FORK_SECRET.load(Ordering::Relaxed) == 0 {
        drop_inherited("fork without a ticket (not through fork())");
    }
}

/// The agent socket path from the environment.
fn agent_path(buf: &mut [u8; 108]) -> &[u8] {
    match env(c"SNSTACK_AGENT") {
        Some(p) if !p.is_empty() && p.len() < buf.len() => {
            buf[..p.len()].copy_from_slice(p);
            &buf[..p.len()]
        }
        _ => DEFAULT_AGENT,
    }
}

/// Attaches a channel as the holder of a fork/exec ticket and makes it the process's channel.
pub(crate) fn attach_with_ticket(secret: u64) -> Option<&'static Channel> {
    let mut pathbuf = [0u8; 108];
    let path = agent_path(&mut pathbuf);
    let spin = SPIN_NS.load(Ordering::Relaxed);
    let spin = if spin == u64::MAX { None } else { Some(spin) };
    match Channel::attach_child(path, spin, secret) {
        Ok(ch) => {
            let p = Box::into_raw(Box::new(ch));
            CHAN.store(p, Ordering::Release);
            STATE.store(ST_ATTACHED, Ordering::Release);
            // SAFETY: just stored, never freed.
            Some(unsafe { &*p })
        }
        Err(e) => {
            log!(util::ERROR, "the agent refused the inherited sockets ({e})");
            None
        }
    }
}

/// Our `fork` hook, child side: attach a channel of our own as the parent's ticket holder.
pub(crate) fn fork_child(secret: u64) {
    FORK_SECRET.store(0, Ordering::Relaxed);
    let parent = CHAN.load(Ordering::Acquire);
    // SAFETY: the parent's channel, copied into our memory by fork and never freed.
    let Some(parent) = (unsafe { parent.as_ref() }) else {
        return;
    };
    // The parent's internal fds (control socket, doorbells) are the parent's: close our copies.
    fdtable::close_internal();
    STATE.store(ST_UNINIT, Ordering::Release);
    match attach_with_ticket(secret) {
        Some(c) => {
            c.inherit_from(parent);
            epoll::rebind_after_fork(c);
            log!(util::INFO, "fork: child attached with the parent's sockets");
        }
        None => drop_inherited("the agent refused the child's attach"),
    }
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;

extern "C" fn init() {
    // SAFETY: registering a fork handler with no prepare/parent hooks.
    unsafe { libc::pthread_atfork(None, None, Some(atfork_child)) };
    // A new image after exec: take over the sockets the previous image passed on.
    let _ = std::panic::catch_unwind(exec::adopt);
}
