//! Configuration: the `SNSTACK_*` variables of the application's environment, read once (on the
//! first call that needs them) into atomics. Every variable is documented in README.md.
//!
//! `SNSTACK_OFFLOAD=0` makes the library a pure pass-through; `SNSTACK_AGENT` is the agent's
//! socket; `SNSTACK_STRICT=1` makes TCP sockets fail when the agent is unreachable;
//! `SNSTACK_SPIN_US`, `SNSTACK_YIELDS`, `SNSTACK_LIVENESS_MS` tune waiting; `SNSTACK_FILE_REFS=0`
//! makes `sendfile` copy; `SNSTACK_LOG` the log.

use crate::util::{self, env, parse_u64};
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

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
/// `SNSTACK_FILE_REFS=0`: `sendfile` copies into the TX stream even when the agent takes file
/// references (docs/channel.md, *Files by reference*); for comparisons.
pub(crate) static FILE_REFS: AtomicU8 = AtomicU8::new(1);

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
    if env(c"SNSTACK_FILE_REFS").is_some_and(|v| v == b"0") {
        FILE_REFS.store(0, Ordering::Relaxed);
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

/// `SNSTACK_STRICT=1`: an unreachable agent makes TCP sockets fail instead of falling back.
pub(crate) fn strict() -> bool {
    STRICT.load(Ordering::Relaxed) == 1
}

/// `SNSTACK_SPIN_US` in ns, or None to use the agent's suggestion.
pub(crate) fn spin_ns() -> Option<u64> {
    let spin = SPIN_NS.load(Ordering::Relaxed);
    if spin == u64::MAX {
        None
    } else {
        Some(spin)
    }
}

/// The agent socket path from the environment (`SNSTACK_AGENT`, else [`DEFAULT_AGENT`]).
pub(crate) fn agent_path(buf: &mut [u8; 108]) -> &[u8] {
    match env(c"SNSTACK_AGENT") {
        Some(p) if !p.is_empty() && p.len() < buf.len() => {
            buf[..p.len()].copy_from_slice(p);
            &buf[..p.len()]
        }
        _ => DEFAULT_AGENT,
    }
}
