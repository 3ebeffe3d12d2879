//! Which signal handlers ran on which thread.
//!
//! A blocked socket call sleeps on a futex and wakes every second to check that the agent is
//! alive. A signal whose handler runs right at such a wake-up makes the futex return ETIMEDOUT,
//! not EINTR, so without help the call would go back to sleep where the kernel's recv would have
//! returned EINTR (or restarted, by SA_RESTART). So the library installs every user handler
//! through a trampoline that counts, per thread, the handlers that ran and those without
//! SA_RESTART, then calls the application's handler. `sigaction` queries still report the
//! application's handler and flags.
//!
//! The trampoline runs in signal context: only atomics and a raw `gettid` syscall, no allocation,
//! no lock, no logging. Threads are told apart by `tid % SLOTS`; two threads sharing a slot can
//! only make an interrupted wait look interrupted when it timed out at the same moment, which at
//! worst turns a liveness wake-up into an EINTR that SA_RESTART then restarts.

use crate::sys;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

const NSIG: usize = 65;
const SLOTS: usize = 4096;

/// The application's handler and flags for each signal we installed the trampoline for.
static HANDLER: [AtomicUsize; NSIG] = [const { AtomicUsize::new(0) }; NSIG];
static FLAGS: [AtomicUsize; NSIG] = [const { AtomicUsize::new(0) }; NSIG];
/// Per thread slot: handlers run, and handlers run that lack SA_RESTART.
static RAN: [AtomicU32; SLOTS] = [const { AtomicU32::new(0) }; SLOTS];
static NORESTART: [AtomicU32; SLOTS] = [const { AtomicU32::new(0) }; SLOTS];
/// Per thread slot: the futex word the thread sleeps on in a blocking socket call (0: none). The
/// trampoline bumps it and wakes it, so a handler that runs just before the thread's futex wait
/// makes that wait return at once instead of after the liveness period.
static WAIT_WORD: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
/// Signals `siginterrupt(sig, 1)` asked not to restart (for later `signal()` calls).
static INTERRUPT: AtomicUsize = AtomicUsize::new(0);

fn slot() -> usize {
    sys::gettid() as usize % SLOTS
}

/// What this thread's handlers did so far (compare two snapshots). Holds the thread's slot, so
/// later checks against it make no syscall.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Snap {
    slot: usize,
    ran: u32,
    norestart: u32,
}

pub(crate) fn snap() -> Snap {
    let i = slot();
    Snap {
        slot: i,
        ran: RAN[i].load(Ordering::Acquire),
        norestart: NORESTART[i].load(Ordering::Acquire),
    }
}

/// While alive, a handler that runs on this thread kicks `word` (see `WAIT_WORD`).
pub(crate) struct WaitGuard(usize);

pub(crate) fn waiting_on(snap: Snap, word: &AtomicU32) -> WaitGuard {
    WAIT_WORD[snap.slot].store(word as *const AtomicU32 as usize, Ordering::SeqCst);
    WaitGuard(snap.slot)
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        WAIT_WORD[self.0].store(0, Ordering::SeqCst);
    }
}

/// Since `before` (taken on this thread): did a handler run on it, and did all that ran have
/// SA_RESTART?
pub(crate) fn since(before: Snap) -> Option<bool> {
    let i = before.slot;
    if RAN[i].load(Ordering::Acquire) == before.ran {
        None
    } else {
        Some(NORESTART[i].load(Ordering::Acquire) == before.norestart)
    }
}

extern "C" fn trampoline(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    let s = sig as usize;
    if s >= NSIG {
        return;
    }
    let i = slot();
    let flags = FLAGS[s].load(Ordering::Acquire);
    RAN[i].fetch_add(1, Ordering::AcqRel);
    if flags & libc::SA_RESTART as usize == 0 {
        NORESTART[i].fetch_add(1, Ordering::AcqRel);
    }
    let w = WAIT_WORD[i].load(Ordering::SeqCst);
    if w != 0 {
        // SAFETY: a futex word in a channel region, mapped for the rest of the process; only
        // atomic operations and a raw syscall here (async-signal-safe).
        let word = unsafe { &*(w as *const AtomicU32) };
        word.fetch_add(1, Ordering::SeqCst);
        let _ = sys::futex_wake(word, i32::MAX);
    }
    let h = HANDLER[s].load(Ordering::Acquire);
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        return;
    }
    if flags & libc::SA_SIGINFO as usize != 0 {
        // SAFETY: the application registered `h` with SA_SIGINFO: it takes these three arguments.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { core::mem::transmute(h) };
        f(sig, info, uc);
    } else {
        // SAFETY: a plain handler registered without SA_SIGINFO takes the signal number.
        let f: extern "C" fn(libc::c_int) = unsafe { core::mem::transmute(h) };
        f(sig);
    }
}

fn tramp_addr() -> usize {
    trampoline as *const () as usize
}

fn wrapped(h: usize) -> bool {
    h != libc::SIG_DFL && h != libc::SIG_IGN && h != libc::SIG_ERR
}

/// `sigaction` with the trampoline in place of a user handler.
///
/// # Safety
/// `act` and `old` are null or valid `struct sigaction` pointers (the caller's arguments).
pub(crate) unsafe fn sigaction(
    sig: libc::c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> libc::c_int {
    let s = sig as usize;
    if sig <= 0 || s >= NSIG || sig == libc::SIGKILL || sig == libc::SIGSTOP {
        // SAFETY: libc gives the errors (EINVAL) for these.
        return unsafe { crate::real::sigaction(sig, act, old) };
    }
    let prev = (
        HANDLER[s].load(Ordering::Acquire),
        FLAGS[s].load(Ordering::Acquire),
    );
    let mut mine: libc::sigaction;
    let mut act2 = act;
    if !act.is_null() {
        // SAFETY: non-null, the caller's struct.
        mine = unsafe { core::ptr::read(act) };
        if wrapped(mine.sa_sigaction) {
            HANDLER[s].store(mine.sa_sigaction, Ordering::Release);
            FLAGS[s].store(mine.sa_flags as usize, Ordering::Release);
            mine.sa_sigaction = tramp_addr();
            mine.sa_flags |= libc::SA_SIGINFO;
            act2 = &mine;
        }
    }
    // SAFETY: libc's sigaction with valid pointers.
    let r = unsafe { crate::real::sigaction(sig, act2, old) };
    if r != 0 {
        HANDLER[s].store(prev.0, Ordering::Release);
        FLAGS[s].store(prev.1, Ordering::Release);
        return r;
    }
    if !old.is_null() {
        // SAFETY: libc filled it.
        let o = unsafe { &mut *old };
        if o.sa_sigaction == tramp_addr() {
            o.sa_sigaction = prev.0;
            o.sa_flags = prev.1 as libc::c_int;
        }
    }
    r
}

/// `signal()` (BSD semantics, as glibc's): restart unless `siginterrupt` said otherwise.
///
/// # Safety
/// Installs a handler for the application.
pub(crate) unsafe fn signal(
    sig: libc::c_int,
    h: libc::sighandler_t,
    sysv: bool,
) -> libc::sighandler_t {
    if sig <= 0 || sig as usize >= NSIG {
        // SAFETY: errno of this thread.
        unsafe { *libc::__errno_location() = libc::EINVAL };
        return libc::SIG_ERR;
    }
    // SAFETY: an all-zero sigaction is a valid value to fill.
    let mut act: libc::sigaction = unsafe { core::mem::zeroed() };
    act.sa_sigaction = h;
    if sysv {
        act.sa_flags = libc::SA_RESETHAND | libc::SA_NODEFER;
    } else {
        // SAFETY: a local sigset.
        unsafe { libc::sigaddset(&mut act.sa_mask, sig) };
        if INTERRUPT.load(Ordering::Relaxed) & (1 << (sig as usize % 64)) == 0 {
            act.sa_flags = libc::SA_RESTART;
        }
    }
    // SAFETY: zeroed output struct.
    let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
    // SAFETY: our own structs.
    if unsafe { sigaction(sig, &act, &mut old) } != 0 {
        return libc::SIG_ERR;
    }
    old.sa_sigaction
}

/// `siginterrupt(sig, flag)`: clears (flag) or sets SA_RESTART on the installed action.
///
/// # Safety
/// Changes the application's signal action.
pub(crate) unsafe fn siginterrupt(sig: libc::c_int, flag: libc::c_int) -> libc::c_int {
    if sig <= 0 || sig as usize >= NSIG {
        // SAFETY: errno of this thread.
        unsafe { *libc::__errno_location() = libc::EINVAL };
        return -1;
    }
    // SAFETY: zeroed output struct.
    let mut act: libc::sigaction = unsafe { core::mem::zeroed() };
    // SAFETY: querying into our struct.
    if unsafe { sigaction(sig, core::ptr::null(), &mut act) } != 0 {
        return -1;
    }
    let bit = 1usize << (sig as usize % 64);
    if flag != 0 {
        INTERRUPT.fetch_or(bit, Ordering::Relaxed);
        act.sa_flags &= !libc::SA_RESTART;
    } else {
        INTERRUPT.fetch_and(!bit, Ordering::Relaxed);
        act.sa_flags |= libc::SA_RESTART;
    }
    // SAFETY: re-installing what we read, with the new flag.
    unsafe { sigaction(sig, &act, core::ptr::null_mut()) }
}
