//! Process state: the process's channel to the agent (attached on first use, or pass-through, or
//! strict failure) and what happens to it across `fork`: the fork ticket the parent takes, the
//! child's own channel attached with it, and the atfork child handler.
//!
//! ```text
//!  UNINIT ──socket()──► ATTACHED          (agent reachable)
//!     │               ► PASS              (offload off, or agent unreachable: kernel sockets)
//!     │               ► STRICT            (agent unreachable, SNSTACK_STRICT=1: socket() fails)
//!  fork child: ATTACHED ──► UNINIT ──ticket──► ATTACHED (own channel, inherited sockets)
//! ```
//! What the layers above keep per process (the epoll instances) is fixed up in a forked child
//! through [`ChildFixups`], so this module never calls up into them.

use crate::channel::Channel;
use crate::util::{self, SpinMutex};
use crate::{config, fdtable, log};
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, Ordering};
use shm_proto::Request;

const ST_UNINIT: u8 = 0;
const ST_ATTACHED: u8 = 2;
const ST_PASS: u8 = 3;
const ST_STRICT: u8 = 4;

static STATE: AtomicU8 = AtomicU8::new(ST_UNINIT);
static CHAN: AtomicPtr<Channel> = AtomicPtr::new(core::ptr::null_mut());
static INIT_LOCK: SpinMutex<()> = SpinMutex::new(());

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
    if config::offload_disabled() {
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
    let path = config::agent_path(&mut pathbuf);
    let spin = config::spin_ns();
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
            let strict = config::strict();
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

/// Attaches a channel as the holder of a fork/exec ticket and makes it the process's channel.
pub(crate) fn attach_with_ticket(secret: u64) -> Option<&'static Channel> {
    let mut pathbuf = [0u8; 108];
    let path = config::agent_path(&mut pathbuf);
    let spin = config::spin_ns();
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

// ---------------------------------------------------------------- fork

/// What the layers above this one keep per process and must fix up in a forked child (the epoll
/// instances, `epoll::AFTER_FORK`).
pub(crate) struct ChildFixups {
    /// Release locks another thread held at fork time.
    pub(crate) unlock: fn(),
    /// Forget everything tied to the parent's channel.
    pub(crate) forget: fn(),
    /// Move everything over to the child's own channel.
    pub(crate) rebind: fn(&Channel),
}

/// Ticket secret of a fork in progress through our `fork` hook (0 = none). Tells the atfork child
/// handler that the hook will hand the inherited sockets over to the child's own channel.
static FORK_SECRET: AtomicU64 = AtomicU64::new(0);

/// Our `fork` hook announces (secret != 0) or ends (0) a fork that hands sockets over.
pub(crate) fn set_fork_secret(secret: u64) {
    FORK_SECRET.store(secret, Ordering::Relaxed);
}

/// Before fork: a ticket for the child, or 0 when there is nothing to hand over.
pub(crate) fn fork_prepare() -> u64 {
    let Some(c) = channel_if_attached() else {
        return 0;
    };
    if c.is_dead() || !c.has_sockets() {
        return 0;
    }
    match c.call(0, Request::Fork) {
        Ok(e) if e.result >= 0 => e.secret(),
        Ok(e) => {
            log!(util::WARN, "fork: the agent gave no ticket (errno {}); the child will not have the offloaded sockets", -e.result);
            0
        }
        Err(_) => 0,
    }
}

/// After fork, in the parent: let the agent tie the ticket to the child's life.
pub(crate) fn fork_parent(secret: u64, pid: i32) {
    if let Some(c) = channel_if_attached() {
        let req = Request::ForkChild {
            secret,
            pid: pid as u64,
        };
        let _ = c.call(0, req);
    }
}

/// Forgets the parent's offloaded fds in a child that cannot take them over.
fn drop_inherited(why: &str, fix: &ChildFixups) {
    let mut n = 0;
    fdtable::for_each_sock(|fd, _| {
        fdtable::clear(fd);
        n += 1;
    });
    fdtable::close_internal();
    crate::shadow::forget();
    (fix.forget)();
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
pub(crate) fn atfork_child(fix: &ChildFixups) {
    // SAFETY: the child has one thread; nobody holds these locks now.
    unsafe { INIT_LOCK.force_unlock() };
    (fix.unlock)();
    if STATE.load(Ordering::Acquire) != ST_ATTACHED {
        return;
    }
    if FORK_SECRET.load(Ordering::Relaxed) == 0 {
        drop_inherited("fork without a ticket (not through fork())", fix);
    }
}

/// Our `fork` hook, child side: attach a channel of our own as the parent's ticket holder.
pub(crate) fn fork_child(secret: u64, fix: &ChildFixups) {
    FORK_SECRET.store(0, Ordering::Relaxed);
    let parent = CHAN.load(Ordering::Acquire);
    // SAFETY: the parent's channel, copied into our memory by fork and never freed.
    let Some(parent) = (unsafe { parent.as_ref() }) else {
        return;
    };
    // The parent's internal fds (control socket, doorbells) are the parent's: close our copies.
    fdtable::close_internal();
    crate::shadow::forget();
    STATE.store(ST_UNINIT, Ordering::Release);
    match attach_with_ticket(secret) {
        Some(c) => {
            c.inherit_from(parent);
            (fix.rebind)(c);
            log!(util::INFO, "fork: child attached with the parent's sockets");
        }
        None => drop_inherited("the agent refused the child's attach", fix),
    }
}
