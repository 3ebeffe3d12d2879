//! Every system call of the crate: attaching (through `shm_proto::attach`), the waiter eventfd,
//! the agent's doorbell, futex waits on the region's completion word, and liveness checks of
//! the control socket. The group's logic (`group.rs`) reaches them only through [`Io`], so its
//! tests run against an in-memory region with a scripted agent instead.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use shm_proto::attach::{self, AttachError, LibcSys};
use shm_proto::msg::{Hello, HELLO_ATTACH};
use shm_proto::{Region, RegionError};

/// Bound on each reply of the attach handshake: a hung agent fails the attach, never hangs it.
const ATTACH_REPLY_MS: i32 = 10_000;
/// Longest single futex sleep of a poll group: the agent's liveness is checked between them.
const LIVENESS_SLICE: Duration = Duration::from_millis(100);

/// What the group needs from the outside world. Errors are positive errno values.
pub(crate) trait Io {
    /// Writes the agent's doorbell (the caller decided it must: `wake::must_ring`).
    fn ring_agent(&mut self);
    /// Blocks while `*seq == seen`, at most `timeout` (futex; spurious returns are fine).
    fn wait_region(&mut self, seq: &AtomicU32, seen: u32, timeout: Duration);
    /// Blocks while the announced waiter `flag` holds 1 (the agent's ring clears it), at most
    /// `timeout` (`None`: no bound) and at most one liveness slice; `Err(ECONNRESET)` when the
    /// agent is gone.
    fn sleep(&mut self, flag: &AtomicU32, timeout: Option<Duration>) -> Result<(), i32>;
    /// False when the agent is known to be gone (control socket EOF or error).
    fn alive(&mut self) -> bool;
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// The attached channel's OS resources. Owns the region's mapping: the `Region` handed out with
/// it is valid exactly as long as this lives.
pub(crate) struct SysIo {
    ctl: OwnedFd,
    bell: OwnedFd,
    waiter: OwnedFd,
    base: *mut u8,
    len: usize,
}

// SAFETY: the raw pointer is the mapping this value owns; nothing else refers to it through
// this value, and the mapping may be used (and unmapped) from any thread.
unsafe impl Send for SysIo {}

impl Drop for SysIo {
    fn drop(&mut self) {
        // SAFETY: `base..base+len` is the mapping `attach` made for us; the group that used the
        // region through it is gone (it drops this value last).
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

fn attach_errno(e: AttachError) -> io::Error {
    let n = match e {
        AttachError::Connect(e) | AttachError::Map(e) => e,
        AttachError::Refused(e) => e as i32,
        AttachError::Protocol(_) => libc::EPROTO,
        AttachError::Region(RegionError::BadVersion(_)) => libc::EPROTONOSUPPORT,
        AttachError::Region(_) => libc::EPROTO,
    };
    io::Error::from_raw_os_error(n)
}

/// Attaches to the agent at `path` and registers waiter 0, a futex sleeper.
pub(crate) fn attach(path: &Path) -> io::Result<(Region, SysIo)> {
    use std::os::unix::ffi::OsStrExt;
    // The waiter's doorbell first: if the attach fails it simply closes again.
    // SAFETY: plain eventfd(2).
    let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if efd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    let waiter = unsafe { OwnedFd::from_raw_fd(efd) };
    let mut sys = LibcSys {
        reply_timeout_ms: Some(ATTACH_REPLY_MS),
    };
    // SAFETY: getpid(2) cannot fail.
    let pid = unsafe { libc::getpid() } as u64;
    let a = attach::attach(
        &mut sys,
        path.as_os_str().as_bytes(),
        Hello::new(HELLO_ATTACH, pid),
    )
    .map_err(attach_errno)?;
    // SAFETY: `attach` handed us these two fds; nobody else owns them.
    let (ctl, bell) = unsafe { (OwnedFd::from_raw_fd(a.ctl), OwnedFd::from_raw_fd(a.bell)) };
    // Owns the mapping from here on, so a failure below unmaps it.
    let io = SysIo {
        ctl,
        bell,
        waiter,
        base: a.base,
        len: a.len,
    };
    // A futex sleeper (`Waiter::futex`), set before its first sleep: the eventfd registered
    // here is what the registration carries, never written for this waiter.
    if let Some(w) = a.region.waiter(0) {
        w.futex.store(1, std::sync::atomic::Ordering::Relaxed);
    }
    match attach::register_waiter(&mut sys, io.ctl.as_raw_fd(), 0, io.waiter.as_raw_fd()) {
        Ok(0) => Ok((a.region, io)),
        Ok(st) => Err(io::Error::from_raw_os_error(st as i32)),
        Err(e) => Err(attach_errno(e)),
    }
}

/// Looks at the control socket without consuming anything: end of stream or an error means the
/// agent is gone.
fn ctl_alive(ctl: i32) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: `b` is a valid 1-byte buffer; MSG_PEEK leaves the datagram queued.
    let n = unsafe {
        libc::recv(
            ctl,
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n > 0 {
        return true;
    }
    if n == 0 {
        return false;
    }
    matches!(errno(), libc::EAGAIN | libc::EINTR)
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs().min(i32::MAX as u64) as _,
        tv_nsec: d.subsec_nanos() as _,
    }
}

/// `FUTEX_WAIT` while `word` holds `expected`, at most `timeout`; true when the timeout ran out
/// (spurious returns and a changed word are both false).
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) -> bool {
    let ts = timespec(timeout);
    // SAFETY: FUTEX_WAIT on a word of the shared mapping (not PRIVATE: the agent wakes it from
    // another process) with a timeout that lives across the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            0usize,
            0usize,
        )
    };
    r < 0 && errno() == libc::ETIMEDOUT
}

impl Io for SysIo {
    fn ring_agent(&mut self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to our eventfd. A full counter (EAGAIN)
        // means the agent has rings pending anyway.
        unsafe { libc::write(self.bell.as_raw_fd(), one.as_ptr().cast(), 8) };
    }

    fn wait_region(&mut self, seq: &AtomicU32, seen: u32, timeout: Duration) {
        futex_wait(seq, seen, timeout);
    }

    fn sleep(&mut self, flag: &AtomicU32, timeout: Option<Duration>) -> Result<(), i32> {
        // The group's waiter is a futex sleeper (`Waiter::futex`): one FUTEX_WAIT on the
        // announced flag, which the agent clears and wakes. It cannot see the control socket
        // close, so the wait is cut into slices and the agent's liveness checked after each
        // slice that ran out (a dead agent: an error within one slice, never a hang).
        let slice = timeout.map_or(LIVENESS_SLICE, |t| t.min(LIVENESS_SLICE));
        if futex_wait(flag, 1, slice) && !ctl_alive(self.ctl.as_raw_fd()) {
            return Err(libc::ECONNRESET);
        }
        Ok(())
    }

    fn alive(&mut self) -> bool {
        let mut p = libc::pollfd {
            fd: self.ctl.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n <= 0 || ctl_alive(self.ctl.as_raw_fd())
    }
}
