//! The agent's only door to the OS: thin wrappers over libc that return `io::Result` and hand out
//! `OwnedFd`s. Everything above this module is safe Rust except the iovec I/O into shared memory
//! ([`readv`], [`sendv`]), whose contract the callers document.

use std::ffi::CStr;
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cvt_size(r: libc::ssize_t) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

fn owned(fd: libc::c_int) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful syscall that created it; nobody else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The errno of an `io::Error`, or EIO when it carries none.
pub fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

// ---------------------------------------------------------------------------------------------
// epoll

/// An epoll instance.
pub struct Epoll {
    fd: OwnedFd,
}

pub const EV_IN: u32 = libc::EPOLLIN as u32;
pub const EV_OUT: u32 = libc::EPOLLOUT as u32;
pub const EV_ERR: u32 = libc::EPOLLERR as u32;
pub const EV_HUP: u32 = libc::EPOLLHUP as u32;
pub const EV_RDHUP: u32 = libc::EPOLLRDHUP as u32;
pub const EV_ET: u32 = libc::EPOLLET as u32;
pub const EV_PRI: u32 = libc::EPOLLPRI as u32;

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall without pointers.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(Epoll { fd: owned(fd) })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) })?;
        Ok(())
    }

    pub fn add(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    pub fn modify(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, token)
    }

    /// Waits for events; `Ok(0)` on timeout or EINTR.
    pub fn wait(&self, buf: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
        let n = buf.len().min(i32::MAX as usize) as libc::c_int;
        // SAFETY: `buf` is valid for `n` writable entries.
        let r = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), buf.as_mut_ptr(), n, timeout_ms) };
        match cvt(r) {
            Ok(n) => Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// [`Epoll::wait`] with a timeout in nanoseconds (`epoll_pwait2`, Linux 5.11; `None`: no
    /// bound). Falls back to whole milliseconds, rounded up, where the call is missing.
    pub fn wait_for(
        &self,
        buf: &mut [libc::epoll_event],
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        let ms = |t: Duration| t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let t = match timeout {
            None => return self.wait(buf, -1),
            Some(t) if t.is_zero() || t.subsec_nanos() % 1_000_000 == 0 => {
                return self.wait(buf, ms(t))
            }
            Some(t) => t,
        };
        if NO_PWAIT2.load(std::sync::atomic::Ordering::Relaxed) {
            return self.wait(buf, ms(t));
        }
        let ts = libc::timespec {
            tv_sec: t.as_secs().min(i32::MAX as u64) as _,
            tv_nsec: t.subsec_nanos() as _,
        };
        let n = buf.len().min(i32::MAX as usize) as libc::c_int;
        // SAFETY: `buf` is valid for `n` writable entries, `ts` lives across the call, and a
        // NULL sigmask leaves the thread's mask alone.
        let r = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                self.fd.as_raw_fd(),
                buf.as_mut_ptr(),
                n,
                &ts as *const libc::timespec,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        match cvt(r as libc::c_int) {
            Ok(n) => Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                NO_PWAIT2.store(true, std::sync::atomic::Ordering::Relaxed);
                self.wait(buf, ms(t))
            }
            Err(e) => Err(e),
        }
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// `epoll_pwait2` returned ENOSYS once (a kernel older than 5.11).
static NO_PWAIT2: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sets the calling thread's timer slack (how late the kernel may fire its timers to batch
/// wake-ups; 50 us by default for normal threads, too coarse for a 20 us polling interval).
pub fn set_timer_slack(slack: Duration) -> io::Result<()> {
    let ns = slack.as_nanos().clamp(1, u64::MAX as u128) as libc::c_ulong;
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument; the rest are ignored.
    cvt(unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns, 0, 0, 0) }).map(|_| ())
}

/// An empty event buffer for [`Epoll::wait`].
pub fn event_buf(n: usize) -> Vec<libc::epoll_event> {
    vec![libc::epoll_event { events: 0, u64: 0 }; n]
}

// ---------------------------------------------------------------------------------------------
// eventfd, futex, signals, limits

pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall without pointers.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    Ok(owned(fd))
}

/// Adds `v` to an eventfd counter. EAGAIN (counter saturated) counts as success: the reader is
/// already due to wake.
pub fn eventfd_write(fd: RawFd, v: u64) -> io::Result<()> {
    let b = v.to_ne_bytes();
    // SAFETY: `b` is 8 readable bytes.
    let r = unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
    match cvt_size(r) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
}

/// Gives the CPU to another runnable task, if any (`sched_yield`, which cannot fail on Linux).
pub fn sched_yield() {
    // SAFETY: no arguments, no memory.
    unsafe { libc::sched_yield() };
}

/// Where process `pid` may run, seen from the calling thread (both affinity masks read with
/// `sched_getaffinity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Only on CPUs the calling thread may not run on.
    Apart,
    /// Only on the one CPU the calling thread may run on (to run, it takes the caller's CPU).
    Within,
    /// Anywhere else: on the caller's CPUs and others, on the caller's CPUs when the caller
    /// has several (it need not wait for the one the caller is on), or a mask could not be read.
    Mixed,
}

/// [`Placement`] of process `pid`.
pub fn cpu_placement(pid: i32) -> Placement {
    // SAFETY: all-zero bytes are a valid (empty) cpu_set_t.
    let mut theirs: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut ours: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: each call fills the cpu_set_t it is given, of the size it is told.
    let ok = unsafe {
        libc::sched_getaffinity(pid, size, &mut theirs) == 0
            && libc::sched_getaffinity(0, size, &mut ours) == 0
    };
    if !ok {
        return Placement::Mixed;
    }
    let (mut shared, mut alone, mut own) = (false, false, 0);
    for c in 0..libc::CPU_SETSIZE as usize {
        // SAFETY: CPU_ISSET reads a bit below CPU_SETSIZE of an initialised set.
        let (t, o) = unsafe { (libc::CPU_ISSET(c, &theirs), libc::CPU_ISSET(c, &ours)) };
        shared |= t && o;
        alone |= t && !o;
        own += usize::from(o);
    }
    match (shared, alone) {
        (false, _) => Placement::Apart,
        (true, false) if own == 1 => Placement::Within,
        _ => Placement::Mixed,
    }
}

/// The calling thread's involuntary context switches and CPU time (user + system, microseconds)
/// so far, from one `getrusage(RUSAGE_THREAD)`; zeros when the call fails.
pub fn thread_usage() -> (u64, u64) {
    // SAFETY: all-zero bytes are a valid `rusage`.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a writable rusage for the call to fill.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return (0, 0);
    }
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (ru.ru_nivcsw as u64, us(ru.ru_utime) + us(ru.ru_stime))
}

/// Puts the calling thread in the real-time class (`SCHED_RR`, priority 1, reset for children
/// across fork) or back in the normal one. Needs `CAP_SYS_NICE` (or an `RLIMIT_RTPRIO`) for
/// the first.
pub fn set_realtime(on: bool) -> io::Result<()> {
    let (policy, prio) = if on {
        (libc::SCHED_RR | libc::SCHED_RESET_ON_FORK, 1)
    } else {
        (libc::SCHED_OTHER, 0)
    };
    let p = libc::sched_param {
        sched_priority: prio,
    };
    // SAFETY: `p` is a valid sched_param; pid 0 is the calling thread.
    cvt(unsafe { libc::sched_setscheduler(0, policy, &p) }).map(|_| ())
}

/// Microseconds some task has waited for a CPU since boot (`/proc/pressure/cpu`, "some total");
/// `None` without PSI.
pub fn cpu_pressure_us() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/pressure/cpu").ok()?;
    s.lines()
        .find(|l| l.starts_with("some "))?
        .split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?
        .parse()
        .ok()
}

/// Resets a non-blocking eventfd counter.
pub fn eventfd_drain(fd: RawFd) {
    let mut b = [0u8; 8];
    // SAFETY: `b` is 8 writable bytes; a non-blocking eventfd read never blocks.
    let _ = unsafe { libc::read(fd, b.as_mut_ptr().cast(), b.len()) };
}

/// A non-blocking monotonic timerfd.
pub fn timerfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall without pointers.
    let fd = cvt(unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    })?;
    Ok(owned(fd))
}

/// Arms a one-shot relative timer (`d` > 0, rounded up to 1 us) or disarms it (`None`).
pub fn timerfd_set(fd: RawFd, d: Option<std::time::Duration>) -> io::Result<()> {
    let us = d.map_or(0, |d| {
        (d.as_micros().min(u128::from(u64::MAX)) as u64).max(1)
    });
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: (us / 1_000_000) as libc::time_t,
            tv_nsec: ((us % 1_000_000) * 1000) as libc::c_long,
        },
    };
    // SAFETY: `spec` is a valid itimerspec; the old value is not requested.
    cvt(unsafe { libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut()) }).map(drop)
}

/// True when `fd` is an eventfd (checked through /proc, as the kernel names anon inodes).
pub fn is_eventfd(fd: RawFd) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.as_os_str().as_bytes() == b"anon_inode:[eventfd]")
        .unwrap_or(false)
}

pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd we hold; no pointers.
    let fl = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) })?;
    Ok(())
}

/// `FUTEX_WAKE` (shared, not private: the word lives in a `MAP_SHARED` memfd another process maps).
pub fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: `word` is a valid, aligned u32; FUTEX_WAKE only uses its address as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word as *const AtomicU32,
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Blocks `sigs` for this (single-threaded) process and returns a signalfd that reports them.
pub fn signalfd(sigs: &[libc::c_int]) -> io::Result<OwnedFd> {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given.
    unsafe { libc::sigemptyset(set.as_mut_ptr()) };
    // SAFETY: initialised by sigemptyset above.
    let mut set = unsafe { set.assume_init() };
    for &s in sigs {
        // SAFETY: `set` is a valid sigset_t.
        cvt(unsafe { libc::sigaddset(&mut set, s) })?;
    }
    // SAFETY: `set` is valid; the old mask is not wanted.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    // SAFETY: `set` is valid; -1 asks for a new fd.
    let fd = cvt(unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })?;
    Ok(owned(fd))
}

/// Next pending signal number from a signalfd, `None` when there is none.
pub fn read_signal(fd: RawFd) -> io::Result<Option<u32>> {
    let mut info = MaybeUninit::<libc::signalfd_siginfo>::zeroed();
    let len = size_of::<libc::signalfd_siginfo>();
    // SAFETY: `info` is `len` writable bytes.
    let r = unsafe { libc::read(fd, info.as_mut_ptr().cast(), len) };
    match cvt_size(r) {
        Ok(n) if n == len => {
            // SAFETY: the kernel filled the whole record.
            Ok(Some(unsafe { info.assume_init() }.ssi_signo))
        }
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes to a vanished peer must give EPIPE, never kill the agent.
pub fn ignore_sigpipe() {
    // SAFETY: installing SIG_IGN is async-signal-safe and has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Raises RLIMIT_NOFILE to its hard limit (every offloaded socket is an agent fd). Returns it.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit to fill.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit.
        cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    }
    Ok(lim.rlim_cur)
}

// ---------------------------------------------------------------------------------------------
// memfd and mappings

/// A memfd of `len` zero bytes whose size is sealed, so a host cannot shrink it under our mapping
/// (which would turn the agent's next access into SIGBUS).
pub fn memfd_sealed(name: &CStr, len: u64) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid C string.
    let fd = cvt(unsafe {
        libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
    })?;
    let fd = owned(fd);
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: plain syscall on an fd we own.
    cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), len) })?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: plain fcntl on an fd we own.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) })?;
    Ok(fd)
}

/// Bytes of a page (x86_64 and arm64 Linux as configured by Debian and BlueField's OS).
pub const PAGE_SIZE: usize = 4096;

/// Bytes of storage a file holds (`st_blocks`: shared memory pages ever touched and not freed,
/// for a memfd).
pub fn allocated_bytes(fd: RawFd) -> io::Result<u64> {
    // SAFETY: all-zero bytes are a valid `stat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a writable stat for the call to fill.
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st.st_blocks as u64 * 512)
}

/// A `MAP_SHARED` read/write mapping, unmapped on drop.
pub struct Mmap {
    ptr: *mut u8,
    len: usize,
}

impl Mmap {
    pub fn shared(fd: &OwnedFd, len: usize) -> io::Result<Mmap> {
        // SAFETY: a fresh mapping chosen by the kernel; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mmap { ptr: p.cast(), len })
    }

    /// Gives the pages of `len` bytes at `off` back to the system (`MADV_REMOVE`: the backing
    /// shared memory is freed too, for every process that maps it; they read zeros afterwards).
    /// `off` and `len` must be page aligned and inside the mapping.
    pub fn remove(&self, off: usize, len: usize) -> io::Result<()> {
        if off % PAGE_SIZE != 0
            || len % PAGE_SIZE != 0
            || off.checked_add(len).map_or(true, |e| e > self.len)
        {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: a page-aligned range inside our own mapping; its contents become zeros, which
        // the caller asked for (no Rust reference into the region points there).
        cvt(unsafe { libc::madvise(self.ptr.add(off).cast(), len, libc::MADV_REMOVE) })?;
        Ok(())
    }

    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr+len` is a mapping we created and nobody uses after drop (owners drop
        // every `Region` view before the `Mmap`).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

// ---------------------------------------------------------------------------------------------
// UNIX control sockets

fn sockaddr_un(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain old data; all zeroes is a valid value.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let b = path.as_os_str().as_bytes();
    if b.is_empty() || b.len() >= a.sun_path.len() || b.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "unusable UNIX socket path (empty, NUL or too long)",
        ));
    }
    for (d, s) in a.sun_path.iter_mut().zip(b) {
        *d = *s as libc::c_char;
    }
    let len = (size_of::<libc::sa_family_t>() + b.len() + 1) as libc::socklen_t;
    Ok((a, len))
}

fn seqpacket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall without pointers.
    let fd =
        cvt(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) })?;
    Ok(owned(fd))
}

/// A non-blocking `SOCK_SEQPACKET` listener at `path` with file mode `mode`.
pub fn seqpacket_listen(path: &Path, mode: u32) -> io::Result<OwnedFd> {
    use std::os::unix::fs::PermissionsExt;
    // The path appears only once the socket listens and has its mode: bound under a staging
    // name beside it, then renamed into place (atomic). Whoever waits for the file to exist
    // (scripts, tests) can connect at once instead of racing `bind` against `listen`.
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}.tmp", std::process::id()));
    let staging = std::path::PathBuf::from(name);
    // A name too long for sun_path: bind in place (the short window comes back, nothing else).
    let at = if sockaddr_un(&staging).is_ok() {
        staging.as_path()
    } else {
        path
    };
    let _ = std::fs::remove_file(&staging);
    let (a, len) = sockaddr_un(at)?;
    let fd = seqpacket()?;
    let publish = || -> io::Result<()> {
        // SAFETY: `a` is a valid sockaddr_un of `len` bytes.
        cvt(unsafe { libc::bind(fd.as_raw_fd(), (&a as *const libc::sockaddr_un).cast(), len) })?;
        // SAFETY: plain syscall.
        cvt(unsafe { libc::listen(fd.as_raw_fd(), 128) })?;
        set_nonblocking(fd.as_raw_fd())?;
        std::fs::set_permissions(at, std::fs::Permissions::from_mode(mode))?;
        if at != path {
            std::fs::rename(at, path)?;
        }
        Ok(())
    };
    match publish() {
        Ok(()) => Ok(fd),
        Err(e) => {
            if at != path {
                let _ = std::fs::remove_file(at);
            }
            Err(e)
        }
    }
}

/// A blocking `SOCK_SEQPACKET` connection to `path`.
pub fn seqpacket_connect(path: &Path) -> io::Result<OwnedFd> {
    let (a, len) = sockaddr_un(path)?;
    let fd = seqpacket()?;
    // SAFETY: `a` is a valid sockaddr_un of `len` bytes.
    cvt(unsafe { libc::connect(fd.as_raw_fd(), (&a as *const libc::sockaddr_un).cast(), len) })?;
    Ok(fd)
}

/// Raises a socket's send buffer to `bytes` (`SO_SNDBUFFORCE` where permitted, else
/// `SO_SNDBUF`, which the kernel caps at `net.core.wmem_max`).
pub fn grow_sndbuf(fd: RawFd, bytes: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let b = v.to_ne_bytes();
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &b)
        .or_else(|_| setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, &b))
}

/// CPU time of this process (all threads): user and system, microseconds.
pub fn cpu_time_us() -> io::Result<(u64, u64)> {
    let mut ru = MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `ru` is a valid out-pointer for one rusage.
    cvt(unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) })?;
    // SAFETY: getrusage succeeded and filled it (it was zeroed before anyway).
    let ru = unsafe { ru.assume_init() };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Ok((us(ru.ru_utime), us(ru.ru_stime)))
}

/// The command name of `pid` (`/proc/PID/comm`; the process may set it, display only).
pub fn proc_comm(pid: i32) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(s.trim_end_matches('\n').to_string())
}

/// Accepts one connection of a UNIX listener (non-blocking, close-on-exec).
pub fn accept_unix(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: null address pointers are allowed by accept4.
    let r = unsafe {
        libc::accept4(
            fd,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    Ok(owned(cvt(r)?))
}

/// `SO_PEERCRED` of a connected UNIX socket: the kernel's word on who is on the other end.
pub fn peer_cred(fd: RawFd) -> io::Result<libc::ucred> {
    let mut c = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `c` is `len` writable bytes.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut c as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok(c)
}

/// Control buffer big enough for `MAX_FDS` descriptors, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct CmsgBuf([u8; 128]);

const MAX_FDS: usize = 8;

/// Sends one datagram with `fds` attached (`SCM_RIGHTS`). Never blocks, never raises SIGPIPE.
pub fn send_fds(fd: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut cbuf = CmsgBuf([0; 128]);
    // SAFETY: msghdr is plain old data; all zeroes is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    let fds = &fds[..fds.len().min(MAX_FDS)];
    if !fds.is_empty() {
        let payload = std::mem::size_of_val(fds) as libc::c_uint;
        // SAFETY: CMSG_SPACE is pure arithmetic.
        let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
        msg.msg_control = cbuf.0.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at `space` <= 128 bytes, so the first header fits.
        let c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        // SAFETY: `c` is non-null (controllen >= one header) and points into `cbuf`; the data
        // area holds `payload` bytes per CMSG_SPACE.
        unsafe {
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(payload) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(c),
                payload as usize,
            );
        }
    }
    // SAFETY: `msg` and everything it points to are valid for the call.
    cvt_size(unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) })
}

/// Receives one datagram into `buf` with any descriptors attached to it. Every received fd comes
/// back owned (so unwanted ones are closed by dropping them). `Ok((0, _))` is EOF. `truncated` is
/// true when the datagram did not fit `buf`.
pub fn recv_fds(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>, bool)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = CmsgBuf([0; 128]);
    // SAFETY: msghdr is plain old data; all zeroes is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr().cast();
    msg.msg_controllen = cbuf.0.len() as _;
    // SAFETY: `msg` and the buffers it points to are valid and writable for the call.
    let n = cvt_size(unsafe {
        libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT)
    })?;
    let mut fds = Vec::new();
    // SAFETY: msg was filled by recvmsg; CMSG_FIRSTHDR/NXTHDR stay within msg_controllen.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !c.is_null() {
        // SAFETY: `c` is a valid header inside `cbuf` (checked by the CMSG macros).
        let (level, ty, clen) =
            unsafe { ((*c).cmsg_level, (*c).cmsg_type, (*c).cmsg_len as usize) };
        if level == libc::SOL_SOCKET && ty == libc::SCM_RIGHTS {
            // SAFETY: pure arithmetic.
            let hdr = unsafe { libc::CMSG_LEN(0) } as usize;
            let count = clen.saturating_sub(hdr) / size_of::<libc::c_int>();
            for i in 0..count {
                // SAFETY: the kernel wrote `count` ints after the header, inside `cbuf`;
                // read_unaligned because the data area need not be int-aligned in our buffer.
                let raw = unsafe {
                    std::ptr::read_unaligned((libc::CMSG_DATA(c) as *const libc::c_int).add(i))
                };
                if raw >= 0 {
                    fds.push(owned(raw));
                }
            }
        }
        // SAFETY: as above.
        c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
    }
    Ok((n, fds, msg.msg_flags & libc::MSG_TRUNC != 0))
}

// ---------------------------------------------------------------------------------------------
// TCP sockets

fn to_raw(a: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is valid.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut st as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut st as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (st, len as libc::socklen_t)
}

fn from_raw(st: &libc::sockaddr_storage, len: libc::socklen_t) -> io::Result<SocketAddr> {
    let len = len as usize;
    match st.ss_family as libc::c_int {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says sockaddr_in and enough bytes were written.
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read((st as *const libc::sockaddr_storage).cast()) };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Ok(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says sockaddr_in6 and enough bytes were written.
            let s: libc::sockaddr_in6 =
                unsafe { std::ptr::read((st as *const libc::sockaddr_storage).cast()) };
            let ip = Ipv6Addr::from(s.sin6_addr.s6_addr);
            Ok(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(s.sin6_port),
                s.sin6_flowinfo,
                s.sin6_scope_id,
            )))
        }
        _ => Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
    }
}

/// A non-blocking, close-on-exec TCP socket.
pub fn tcp_socket(domain: libc::c_int) -> io::Result<OwnedFd> {
    let ty = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: plain syscall without pointers.
    let fd = cvt(unsafe { libc::socket(domain, ty, libc::IPPROTO_TCP) })?;
    Ok(owned(fd))
}

pub fn bind(fd: RawFd, a: &SocketAddr) -> io::Result<()> {
    let (st, len) = to_raw(a);
    // SAFETY: `st` holds a valid sockaddr of `len` bytes.
    cvt(unsafe { libc::bind(fd, (&st as *const libc::sockaddr_storage).cast(), len) })?;
    Ok(())
}

pub fn listen(fd: RawFd, backlog: i32) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::listen(fd, backlog) })?;
    Ok(())
}

pub fn connect(fd: RawFd, a: &SocketAddr) -> io::Result<()> {
    let (st, len) = to_raw(a);
    // SAFETY: `st` holds a valid sockaddr of `len` bytes.
    cvt(unsafe { libc::connect(fd, (&st as *const libc::sockaddr_storage).cast(), len) })?;
    Ok(())
}

/// Accepts one connection (non-blocking, close-on-exec) with its peer address.
pub fn accept_tcp(fd: RawFd) -> io::Result<(OwnedFd, SocketAddr)> {
    // SAFETY: sockaddr_storage is plain old data.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `st` is `len` writable bytes.
    let r = unsafe {
        libc::accept4(
            fd,
            (&mut st as *mut libc::sockaddr_storage).cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    let nfd = owned(cvt(r)?);
    let a = from_raw(&st, len)?;
    Ok((nfd, a))
}

pub fn shutdown(fd: RawFd, how: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::shutdown(fd, how) })?;
    Ok(())
}

fn name_of(
    fd: RawFd,
    f: unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int,
) -> io::Result<SocketAddr> {
    // SAFETY: sockaddr_storage is plain old data.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `f` is getsockname or getpeername; `st` is `len` writable bytes.
    cvt(unsafe {
        f(
            fd,
            (&mut st as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    })?;
    from_raw(&st, len)
}

/// Every IPv4 and IPv6 address configured on this network namespace's interfaces.
pub fn local_addrs() -> io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is a valid out-pointer; the list is freed below.
    cvt(unsafe { libc::getifaddrs(&mut head) })?;
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: `ifa_addr` is non-null and points to a sockaddr of the family it names.
        match i32::from(unsafe { (*ifa.ifa_addr).sa_family }) {
            libc::AF_INET => {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
                out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            }
            libc::AF_INET6 => {
                // SAFETY: an AF_INET6 address is a sockaddr_in6.
                let sin6 = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
                out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
            _ => {}
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

pub fn local_addr(fd: RawFd) -> io::Result<SocketAddr> {
    name_of(fd, libc::getsockname)
}

pub fn peer_addr(fd: RawFd) -> io::Result<SocketAddr> {
    name_of(fd, libc::getpeername)
}

pub fn setsockopt(fd: RawFd, level: i32, name: i32, val: &[u8]) -> io::Result<()> {
    // SAFETY: `val` is readable for its length; the kernel copies it.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            val.as_ptr().cast(),
            val.len() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Returns the length the kernel reports (which may exceed `buf.len()`; callers clamp).
pub fn getsockopt(fd: RawFd, level: i32, name: i32, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf` is `len` writable bytes.
    cvt(unsafe { libc::getsockopt(fd, level, name, buf.as_mut_ptr().cast(), &mut len) })?;
    Ok(len as usize)
}

/// The MSS the kernel gives a TCP connection between two sockets of `ip` (a local address): a
/// throwaway connection is made and asked (`TCP_MAXSEG`), so the answer is whatever this kernel's
/// loopback MTU, window and option rules make it.
pub fn kernel_local_mss(ip: IpAddr) -> io::Result<u32> {
    let domain = if ip.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let l = tcp_socket(domain)?;
    bind(l.as_raw_fd(), &SocketAddr::new(ip, 0))?;
    listen(l.as_raw_fd(), 1)?;
    let at = local_addr(l.as_raw_fd())?;
    let c = tcp_socket(domain)?;
    match connect(c.as_raw_fd(), &at) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            let mut p = libc::pollfd {
                fd: c.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: one pollfd of ours; a local handshake completes at once, 1 s is a bound.
            cvt(unsafe { libc::poll(&mut p, 1, 1000) })?;
        }
        Err(e) => return Err(e),
    }
    take_error(c.as_raw_fd()).and_then(|e| {
        if e == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(e))
        }
    })?;
    let mut b = [0u8; 4];
    getsockopt(c.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_MAXSEG, &mut b)?;
    Ok(u32::from_ne_bytes(b))
}

/// `SO_ERROR`: the pending error (0 when none), cleared by the read.
pub fn take_error(fd: RawFd) -> io::Result<i32> {
    let mut b = [0u8; 4];
    getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, &mut b)?;
    Ok(i32::from_ne_bytes(b))
}

/// `readv` into raw buffers (`recv` when there is one).
///
/// # Safety
/// Every iovec must describe memory writable by the kernel on behalf of this process and not
/// concurrently accessed through a Rust reference.
pub unsafe fn readv(fd: RawFd, iov: &[libc::iovec]) -> io::Result<usize> {
    if let [one] = iov {
        // One buffer (the ring did not wrap): `recv` spares the kernel the iovec import and
        // the VFS layer; on a socket it reads what `readv` would.
        // SAFETY: the caller vouches for the buffer.
        return cvt_size(unsafe { libc::recv(fd, one.iov_base, one.iov_len, 0) });
    }
    // SAFETY: the caller vouches for the buffers.
    cvt_size(unsafe { libc::readv(fd, iov.as_ptr(), iov.len() as libc::c_int) })
}

/// `sendmsg(MSG_NOSIGNAL | MSG_DONTWAIT)` from raw buffers (`send` when there is one).
///
/// # Safety
/// Every iovec must describe readable memory of this process.
pub unsafe fn sendv(fd: RawFd, iov: &[libc::iovec]) -> io::Result<usize> {
    // SAFETY: forwarded from the caller's contract.
    unsafe { sendv_flags(fd, iov, 0) }
}

/// [`sendv`] with `extra` flags (`MSG_MORE`, `MSG_OOB`).
///
/// # Safety
/// As [`sendv`].
pub unsafe fn sendv_flags(fd: RawFd, iov: &[libc::iovec], extra: i32) -> io::Result<usize> {
    let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT | extra;
    if let [one] = iov {
        // One buffer: `send` spares the kernel the message header and iovec copies.
        // SAFETY: the caller vouches for the buffer; the kernel only reads it.
        return cvt_size(unsafe { libc::send(fd, one.iov_base, one.iov_len, flags) });
    }
    // SAFETY: msghdr is plain old data; all zeroes is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len() as _;
    // SAFETY: the caller vouches for the buffers; the kernel only reads through msg_iov.
    cvt_size(unsafe { libc::sendmsg(fd, &msg, flags) })
}

/// Bytes waiting unread in socket `fd` (`FIONREAD`).
pub fn unread(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    cvt(unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) })?;
    Ok(n.max(0) as usize)
}

// ---------------------------------------------------------------------------------------------
// urgent data (TCP MSG_OOB)

/// `SIGURG`s this process received (its handler counts them: async-signal-safe).
static URG_SIGNALS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_sigurg(_sig: libc::c_int) {
    URG_SIGNALS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Installs the agent's `SIGURG` handler (a counter). The agent owns its kernel sockets
/// ([`own_urgent_signals`]), so the kernel signals it when urgent data arrives; a signal pending
/// while a receive reaches the urgent mark makes that receive stop there (`EAGAIN`) instead of
/// passing the byte unnoticed (Linux's tcp_recvmsg). `SIGURG` is ignored by default, and an
/// ignored signal is never pending: hence a handler.
pub fn install_sigurg_handler() -> io::Result<()> {
    // SAFETY: sigaction is plain data; all zeroes is valid (empty mask, no flags).
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_sigurg as extern "C" fn(libc::c_int) as usize;
    sa.sa_flags = libc::SA_RESTART;
    // SAFETY: installs a handler that only increments an atomic.
    cvt(unsafe { libc::sigaction(libc::SIGURG, &sa, std::ptr::null_mut()) })?;
    Ok(())
}

/// How many `SIGURG`s arrived so far.
pub fn urg_signals() -> u32 {
    URG_SIGNALS.load(std::sync::atomic::Ordering::Relaxed)
}

/// This thread's id.
pub fn gettid() -> i32 {
    // SAFETY: plain syscall.
    unsafe { libc::gettid() }
}

// Not in the libc crate (asm-generic/fcntl.h, asm-generic/sockios.h).
const F_SETOWN_EX: libc::c_int = 15;
const F_OWNER_TID: libc::c_int = 0;
const SIOCATMARK: libc::c_ulong = 0x8905;

/// `struct f_owner_ex`.
#[repr(C)]
struct FOwnerEx {
    kind: libc::c_int,
    pid: libc::pid_t,
}

/// `F_SETOWN_EX(F_OWNER_TID, tid)`: `SIGURG` for `fd`'s urgent data goes to thread `tid`.
pub fn own_urgent_signals(fd: RawFd, tid: i32) -> io::Result<()> {
    let o = FOwnerEx {
        kind: F_OWNER_TID,
        pid: tid,
    };
    // SAFETY: F_SETOWN_EX reads one f_owner_ex.
    cvt(unsafe { libc::fcntl(fd, F_SETOWN_EX, &o as *const FOwnerEx) })?;
    Ok(())
}

/// `SIOCATMARK`: the next byte a receive returns is at the urgent mark.
pub fn at_mark(fd: RawFd) -> io::Result<bool> {
    let mut v: libc::c_int = 0;
    // SAFETY: SIOCATMARK writes one int.
    cvt(unsafe { libc::ioctl(fd, SIOCATMARK, &mut v) })?;
    Ok(v != 0)
}

/// The urgent byte, without taking it (`recv(MSG_OOB | MSG_PEEK)`): `Ok(None)` when there is
/// none (`EINVAL`), `WouldBlock` when its pointer came but the byte did not yet.
pub fn peek_oob(fd: RawFd) -> io::Result<Option<u8>> {
    let mut b = 0u8;
    let fl = libc::MSG_OOB | libc::MSG_PEEK | libc::MSG_DONTWAIT;
    // SAFETY: one writable byte.
    let r = unsafe { libc::recv(fd, (&mut b as *mut u8).cast(), 1, fl) };
    match cvt_size(r as libc::ssize_t) {
        Ok(1) => Ok(Some(b)),
        Ok(_) => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(e),
    }
}

/// [`sendv`] with `MSG_OOB`: the urgent pointer goes after the last byte sent.
///
/// # Safety
/// Every iovec must describe readable memory of this process.
pub unsafe fn sendv_oob(fd: RawFd, iov: &[libc::iovec]) -> io::Result<usize> {
    // SAFETY: forwarded from the caller's contract.
    unsafe { sendv_flags(fd, iov, libc::MSG_OOB) }
}

/// Real and effective uid, saved uid of a process or thread (`/proc/<id>/status`).
fn uids(id: i32) -> Option<[u32; 3]> {
    let s = std::fs::read_to_string(format!("/proc/{id}/status")).ok()?;
    let l = s.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    let mut it = l.split_ascii_whitespace().map(|v| v.parse::<u32>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Field `n` of `/proc/<id>/stat` counted after the command name from 1 (1: state, 3: pgrp).
fn stat_field(id: i32, n: usize) -> Option<i32> {
    let s = std::fs::read(format!("/proc/{id}/stat")).ok()?;
    let close = s.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&s[close + 1..]).ok()?;
    rest.split_ascii_whitespace().nth(n - 1)?.parse().ok()
}

/// Sends `SIGURG` to `owner` on behalf of host process `pid`, only where that process could
/// itself (Linux's rule for signals to a file's owner: the setter's uid or euid is root or
/// matches the target's uid or saved uid). The agent runs privileged; a host must not reach
/// processes through it that it could not signal.
pub fn send_sigurg(pid: i32, owner: shm_proto::Owner) {
    use shm_proto::Owner;
    let Some([h_uid, h_euid, _]) = uids(pid) else {
        return;
    };
    let may = |target: i32| {
        h_euid == 0
            || uids(target).is_some_and(|[uid, _, suid]| {
                h_euid == uid || h_euid == suid || h_uid == uid || h_uid == suid
            })
    };
    match owner {
        Owner::Pid(p) if p > 0 && may(p) => {
            // SAFETY: plain syscall.
            unsafe { libc::kill(p, libc::SIGURG) };
        }
        Owner::Tid(t) if t > 0 && may(t) => {
            if let Some(tgid) = std::fs::read_to_string(format!("/proc/{t}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("Tgid:"))
                        .and_then(|v| v.trim().parse::<i32>().ok())
                })
            {
                // SAFETY: plain syscall.
                unsafe { libc::syscall(libc::SYS_tgkill, tgid, t, libc::SIGURG) };
            }
        }
        Owner::Pgrp(g) if g > 0 => {
            // Each member the host may signal (a rare path: F_SETOWN of a process group).
            let Ok(dir) = std::fs::read_dir("/proc") else {
                return;
            };
            for e in dir.flatten() {
                let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                    continue;
                };
                if stat_field(p, 3) == Some(g) && may(p) {
                    // SAFETY: plain syscall.
                    unsafe { libc::kill(p, libc::SIGURG) };
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// /proc facts used by policy

/// First unprivileged port (`net.ipv4.ip_unprivileged_port_start`), 1024 when unreadable.
pub fn unprivileged_port_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(1024)
}

/// Effective capability set (`CapEff`) of process `pid`.
pub fn cap_eff(pid: i32) -> io::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no CapEff line"))
}

/// The congestion control algorithms this kernel has (`tcp_available_congestion_control`).
pub fn available_congestion_controls() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
        .unwrap_or_default()
}

/// Congestion control algorithms an unprivileged process may choose.
pub fn allowed_congestion_controls() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_allowed_congestion_control").unwrap_or_default()
}

/// (device, inode) of a path, to remove only the socket file we created.
pub fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Parent pid of `pid` (field 4 of `/proc/<pid>/stat`; the command name in field 2 may hold
/// spaces and parentheses, so fields are counted after its last `)`).
pub fn parent_pid(pid: i32) -> io::Result<i32> {
    let s = std::fs::read(format!("/proc/{pid}/stat"))?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc/<pid>/stat");
    let close = s.iter().rposition(|&b| b == b')').ok_or_else(bad)?;
    let rest = std::str::from_utf8(&s[close + 1..]).map_err(|_| bad())?;
    // After the name: state, ppid, ...
    rest.split_ascii_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(bad)
}

// ---------------------------------------------------------------------------------------------
// fork tickets

/// A pidfd for `pid`: readable once the process exits (only ever polled, never read). pidfds
/// are always close-on-exec.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall without pointers.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(owned(r as libc::c_int))
}

/// 8 bytes from the kernel's CSPRNG.
pub fn random_u64() -> io::Result<u64> {
    let mut b = [0u8; 8];
    let mut got = 0;
    while got < b.len() {
        // SAFETY: `b[got..]` is writable for `len - got` bytes.
        let r = unsafe { libc::getrandom(b[got..].as_mut_ptr().cast(), b.len() - got, 0) };
        match cvt_size(r) {
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(u64::from_ne_bytes(b))
}

/// The agent's own reference to process `pid`'s open file `fd` (`pidfd_getfd`), when it is the
/// regular file the host named by `dev` and `ino`: `ESTALE` when the number now names another
/// file (closed and reused meanwhile), `EINVAL` for anything but a regular file.
pub fn host_file(pid: i32, fd: i32, dev: u64, ino: u64) -> io::Result<OwnedFd> {
    let pidfd = pidfd_open(pid)?;
    // SAFETY: plain syscall; the pidfd is ours and open.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let file = owned(r as libc::c_int);
    // SAFETY: fstat fills a zeroed stat buffer we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the fd is ours.
    if unsafe { libc::fstat(file.as_raw_fd(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    if st.st_dev != dev || st.st_ino != ino {
        return Err(io::Error::from_raw_os_error(libc::ESTALE));
    }
    Ok(file)
}

/// `pread` into `buf` at `offset`.
pub fn pread(fd: RawFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `buf` is writable for its length.
    cvt_size(unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), off) })
}

/// `sendfile` of up to `len` bytes of `file` from `offset` into socket `sock` (non-blocking
/// socket: partial counts and WouldBlock as the kernel gives them).
pub fn sendfile(sock: RawFd, file: RawFd, offset: u64, len: usize) -> io::Result<usize> {
    let mut off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `off` is ours; both fds are the caller's open descriptors.
    cvt_size(unsafe { libc::sendfile(sock, file, &mut off, len) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_placement_of_ourselves_of_nobody_and_of_a_pinned_child() {
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        assert_eq!(
            cpu_placement(i32::MAX),
            Placement::Mixed,
            "an unreadable mask is never 'apart'"
        );
        // A child pinned to a CPU the test thread may not use is apart (needs 2 CPUs).
        // SAFETY: all-zero bytes are a valid cpu_set_t.
        let mut ours: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: fills `ours`.
        assert_eq!(unsafe { libc::sched_getaffinity(0, size, &mut ours) }, 0);
        // SAFETY: reads bits of an initialised set.
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &ours) })
            .collect();
        let own = if cpus.len() == 1 {
            Placement::Within
        } else {
            Placement::Mixed
        };
        assert_eq!(
            cpu_placement(me),
            own,
            "within only the one CPU the caller has"
        );
        if cpus.len() < 2 {
            return;
        }
        let mut child = std::process::Command::new("taskset")
            .args(["-c", &cpus[0].to_string(), "sleep", "5"])
            .spawn()
            .expect("taskset");
        std::thread::sleep(std::time::Duration::from_millis(200));
        let pid = child.id() as i32;
        let pinned_elsewhere = std::thread::spawn(move || {
            // SAFETY: all-zero bytes are a valid cpu_set_t; CPU_SET writes one bit of it.
            let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            unsafe { libc::CPU_SET(cpus[1], &mut one) };
            // SAFETY: pins this thread only.
            assert_eq!(unsafe { libc::sched_setaffinity(0, size, &one) }, 0);
            let apart = cpu_placement(pid) == Placement::Apart;
            // The test process's main thread may run here and elsewhere.
            assert_eq!(cpu_placement(me), Placement::Mixed);
            // SAFETY: as above.
            unsafe { libc::CPU_SET(cpus[0], &mut one) };
            // SAFETY: pins this thread only.
            assert_eq!(unsafe { libc::sched_setaffinity(0, size, &one) }, 0);
            // On our CPU, while we may also run on the other: it need not wait for ours.
            let both = cpu_placement(pid);
            // SAFETY: as above.
            unsafe { libc::CPU_CLR(cpus[1], &mut one) };
            // SAFETY: pins this thread only.
            assert_eq!(unsafe { libc::sched_setaffinity(0, size, &one) }, 0);
            assert_eq!(both, Placement::Mixed);
            (apart, cpu_placement(pid))
        })
        .join()
        .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(pinned_elsewhere.0);
        assert_eq!(
            pinned_elsewhere.1,
            Placement::Within,
            "pinned to one of ours"
        );
    }

    #[test]
    fn proc_facts_and_randomness() {
        // SAFETY: getpid/getppid have no preconditions.
        let (me, parent) = unsafe { (libc::getpid(), libc::getppid()) };
        assert_eq!(parent_pid(me).unwrap(), parent);
        assert!(parent_pid(-5).is_err());
        let (a, b) = (random_u64().unwrap(), random_u64().unwrap());
        assert_ne!(a, b);
        let fd = pidfd_open(me).unwrap();
        assert!(fd.as_raw_fd() >= 0);
    }
}
