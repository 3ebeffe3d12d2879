//! Raw system calls. The library never calls the libc symbols it interposes (a call to `write` from
//! inside the cdylib would resolve to our own hook), so every OS call it makes for itself goes through
//! `syscall` instructions here. Results are `Ok(value)` or `Err(errno)`.

#![allow(clippy::too_many_arguments)]

use core::arch::asm;

/// Sets the calling thread's errno (what a hook returns -1 with).
pub(crate) fn set_errno(e: i32) {
    // SAFETY: errno location of the calling thread.
    unsafe { *libc::__errno_location() = e };
}

pub(crate) type SysResult = Result<usize, i32>;

#[inline(always)]
fn ret(r: isize) -> SysResult {
    if (-4095..0).contains(&r) {
        Err(-r as i32)
    } else {
        Ok(r as usize)
    }
}

/// # Safety
/// The caller passes arguments valid for system call `n`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn syscall6(
    n: usize,
    a: usize,
    b: usize,
    c: usize,
    d: usize,
    e: usize,
    f: usize,
) -> SysResult {
    let r: isize;
    // SAFETY: the Linux x86_64 syscall ABI; rcx and r11 are clobbered by `syscall`.
    unsafe {
        asm!("syscall", inlateout("rax") n as isize => r, in("rdi") a, in("rsi") b, in("rdx") c,
             in("r10") d, in("r8") e, in("r9") f, lateout("rcx") _, lateout("r11") _,
             options(nostack));
    }
    ret(r)
}

/// # Safety
/// The caller passes arguments valid for system call `n`.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
pub(crate) unsafe fn syscall6(
    n: usize,
    a: usize,
    b: usize,
    c: usize,
    d: usize,
    e: usize,
    f: usize,
) -> SysResult {
    let r: isize;
    // SAFETY: the Linux aarch64 syscall ABI (svc 0, number in x8).
    unsafe {
        asm!("svc 0", in("x8") n, inlateout("x0") a as isize => r, in("x1") b, in("x2") c,
             in("x3") d, in("x4") e, in("x5") f, options(nostack));
    }
    ret(r)
}

macro_rules! sc {
    ($n:expr) => { sc!($n, 0, 0, 0, 0, 0, 0) };
    ($n:expr, $a:expr) => { sc!($n, $a, 0, 0, 0, 0, 0) };
    ($n:expr, $a:expr, $b:expr) => { sc!($n, $a, $b, 0, 0, 0, 0) };
    ($n:expr, $a:expr, $b:expr, $c:expr) => { sc!($n, $a, $b, $c, 0, 0, 0) };
    ($n:expr, $a:expr, $b:expr, $c:expr, $d:expr) => { sc!($n, $a, $b, $c, $d, 0, 0) };
    ($n:expr, $a:expr, $b:expr, $c:expr, $d:expr, $e:expr) => { sc!($n, $a, $b, $c, $d, $e, 0) };
    ($n:expr, $a:expr, $b:expr, $c:expr, $d:expr, $e:expr, $f:expr) => {
        // SAFETY: each wrapper below documents and upholds the arguments of its system call.
        unsafe {
            syscall6($n as usize, $a as usize, $b as usize, $c as usize, $d as usize, $e as usize,
                     $f as usize)
        }
    };
}

pub(crate) fn write(fd: i32, buf: &[u8]) -> SysResult {
    sc!(libc::SYS_write, fd, buf.as_ptr(), buf.len())
}

pub(crate) fn read(fd: i32, buf: &mut [u8]) -> SysResult {
    sc!(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len())
}

pub(crate) fn close(fd: i32) -> SysResult {
    sc!(libc::SYS_close, fd)
}

pub(crate) fn socket(domain: i32, ty: i32, proto: i32) -> SysResult {
    sc!(libc::SYS_socket, domain, ty, proto)
}

pub(crate) fn connect_unix(fd: i32, path: &[u8]) -> SysResult {
    // SAFETY: zeroed sockaddr_un is valid.
    let mut sa: libc::sockaddr_un = unsafe { core::mem::zeroed() };
    if path.len() >= sa.sun_path.len() {
        return Err(libc::ENAMETOOLONG);
    }
    sa.sun_family = libc::AF_UNIX as u16;
    for (d, s) in sa.sun_path.iter_mut().zip(path) {
        *d = *s as libc::c_char;
    }
    let len = core::mem::size_of::<libc::sa_family_t>() + path.len() + 1;
    sc!(libc::SYS_connect, fd, &sa as *const libc::sockaddr_un, len)
}

/// # Safety
/// `msg` must describe valid buffers.
pub(crate) unsafe fn sendmsg(fd: i32, msg: *const libc::msghdr, flags: i32) -> SysResult {
    sc!(libc::SYS_sendmsg, fd, msg, flags)
}

/// # Safety
/// `msg` must describe valid buffers.
pub(crate) unsafe fn recvmsg(fd: i32, msg: *mut libc::msghdr, flags: i32) -> SysResult {
    sc!(libc::SYS_recvmsg, fd, msg, flags)
}

pub(crate) fn mmap_shared(fd: i32, len: usize) -> SysResult {
    sc!(
        libc::SYS_mmap,
        0usize,
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED,
        fd,
        0usize
    )
}

pub(crate) fn munmap(base: *mut u8, len: usize) -> SysResult {
    sc!(libc::SYS_munmap, base, len)
}

pub(crate) fn eventfd(flags: i32) -> SysResult {
    sc!(libc::SYS_eventfd2, 0, flags)
}

pub(crate) fn fcntl(fd: i32, cmd: i32, arg: usize) -> SysResult {
    sc!(libc::SYS_fcntl, fd, cmd, arg)
}

pub(crate) fn getpid() -> i32 {
    sc!(libc::SYS_getpid).unwrap_or(0) as i32
}

pub(crate) fn gettid() -> i32 {
    sc!(libc::SYS_gettid).unwrap_or(0) as i32
}

pub(crate) fn tgkill(pid: i32, tid: i32, sig: i32) -> SysResult {
    sc!(libc::SYS_tgkill, pid, tid, sig)
}

/// FUTEX_WAIT (shared: the word lives in a MAP_SHARED memfd) with an optional relative timeout.
pub(crate) fn futex_wait(
    word: &core::sync::atomic::AtomicU32,
    val: u32,
    timeout_ns: Option<u64>,
) -> SysResult {
    let ts;
    let tsp = match timeout_ns {
        Some(ns) => {
            ts = libc::timespec {
                tv_sec: (ns / 1_000_000_000) as _,
                tv_nsec: (ns % 1_000_000_000) as _,
            };
            &ts as *const libc::timespec as usize
        }
        None => 0,
    };
    sc!(
        libc::SYS_futex,
        word.as_ptr(),
        libc::FUTEX_WAIT,
        val,
        tsp,
        0usize,
        0usize
    )
}

pub(crate) fn futex_wake(word: &core::sync::atomic::AtomicU32, n: i32) -> SysResult {
    sc!(
        libc::SYS_futex,
        word.as_ptr(),
        libc::FUTEX_WAKE,
        n,
        0usize,
        0usize,
        0usize
    )
}

/// # Safety
/// `fds` must point to `n` pollfd entries; `ts`/`mask` null or valid.
pub(crate) unsafe fn ppoll(
    fds: *mut libc::pollfd,
    n: usize,
    ts: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> SysResult {
    sc!(libc::SYS_ppoll, fds, n, ts, mask, 8usize)
}

pub(crate) fn poll_one(fd: i32, events: i16, timeout_ms: i32) -> SysResult {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: (timeout_ms / 1000) as _,
        tv_nsec: ((timeout_ms % 1000) * 1_000_000) as _,
    };
    // SAFETY: one valid pollfd and a valid timespec.
    let r = unsafe { ppoll(&mut p, 1, &ts, core::ptr::null()) }?;
    Ok(if r > 0 { p.revents as u16 as usize } else { 0 })
}

/// `sched_yield(2)`.
pub(crate) fn sched_yield() {
    // SAFETY: no arguments, no memory.
    unsafe { libc::syscall(libc::SYS_sched_yield) };
}

pub(crate) fn clock_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // clock_gettime through the vDSO would be cheaper; this is a raw syscall only on slow paths.
    // SAFETY: valid timespec pointer. libc's clock_gettime is not interposed by us, so use it.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The kernel's `struct sigaction` (x86_64/aarch64 layout, 64 signals).
#[repr(C)]
struct KSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// True when every signal with a user handler has SA_RESTART: a blocking socket call interrupted
/// by a signal should then restart, as the kernel does for recv/send/accept without timeouts. Only
/// called after an EINTR (64 cheap syscalls on a rare path).
pub(crate) fn handlers_all_restart() -> bool {
    for sig in 1..=64usize {
        if sig == libc::SIGKILL as usize || sig == libc::SIGSTOP as usize {
            continue;
        }
        let mut old = KSigaction {
            handler: 0,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        // SAFETY: querying (act = NULL) into a local struct of the kernel's layout.
        let r = unsafe {
            syscall6(
                libc::SYS_rt_sigaction as usize,
                sig,
                0,
                &mut old as *mut KSigaction as usize,
                8,
                0,
                0,
            )
        };
        if r.is_err() {
            continue;
        }
        let user = old.handler != libc::SIG_DFL && old.handler != libc::SIG_IGN;
        if user && old.flags & libc::SA_RESTART as u64 == 0 {
            return false;
        }
    }
    true
}

/// recv(MSG_PEEK | MSG_DONTWAIT) on one of our own sockets.
pub(crate) fn recv_peek(fd: i32, buf: &mut [u8]) -> SysResult {
    sc!(
        libc::SYS_recvfrom,
        fd,
        buf.as_mut_ptr(),
        buf.len(),
        libc::MSG_PEEK | libc::MSG_DONTWAIT,
        0usize,
        0usize
    )
}

pub(crate) fn dup3(old: i32, new: i32, flags: i32) -> SysResult {
    sc!(libc::SYS_dup3, old, new, flags)
}

pub(crate) fn setsockopt(fd: i32, level: i32, name: i32, val: &[u8]) -> SysResult {
    sc!(
        libc::SYS_setsockopt,
        fd,
        level,
        name,
        val.as_ptr(),
        val.len()
    )
}

/// bind(2) to an address in its wire form (AF_INET or AF_INET6).
pub(crate) fn bind_wire(fd: i32, w: &shm_proto::WireAddr) -> SysResult {
    if w.family as i32 == libc::AF_INET6 {
        // SAFETY: all-zero is a valid sockaddr_in6.
        let mut a: libc::sockaddr_in6 = unsafe { core::mem::zeroed() };
        a.sin6_family = libc::AF_INET6 as u16;
        a.sin6_port = w.port;
        a.sin6_flowinfo = w.flowinfo;
        a.sin6_addr.s6_addr = w.addr;
        a.sin6_scope_id = w.scope_id;
        let len = core::mem::size_of::<libc::sockaddr_in6>();
        sc!(libc::SYS_bind, fd, &a as *const libc::sockaddr_in6, len)
    } else {
        // SAFETY: all-zero is a valid sockaddr_in.
        let mut a: libc::sockaddr_in = unsafe { core::mem::zeroed() };
        a.sin_family = libc::AF_INET as u16;
        a.sin_port = w.port;
        a.sin_addr.s_addr = u32::from_ne_bytes([w.addr[0], w.addr[1], w.addr[2], w.addr[3]]);
        let len = core::mem::size_of::<libc::sockaddr_in>();
        sc!(libc::SYS_bind, fd, &a as *const libc::sockaddr_in, len)
    }
}

/// The target of the symbolic link `path`, in `buf`.
pub(crate) fn readlink<'a>(path: &core::ffi::CStr, buf: &'a mut [u8]) -> Result<&'a [u8], i32> {
    let n = sc!(
        libc::SYS_readlinkat,
        libc::AT_FDCWD,
        path.as_ptr(),
        buf.as_mut_ptr(),
        buf.len()
    )?;
    Ok(&buf[..n.min(buf.len())])
}

/// Reads the file at `path` (not NUL-terminated, under 4 KiB) into `buf`: (bytes read, whether
/// that was the whole file).
pub(crate) fn read_file(path: &[u8], buf: &mut [u8]) -> Result<(usize, bool), i32> {
    let mut p = [0u8; 4096];
    if path.len() >= p.len() || path.contains(&0) {
        return Err(libc::ENAMETOOLONG);
    }
    p[..path.len()].copy_from_slice(path);
    let fd = sc!(
        libc::SYS_openat,
        libc::AT_FDCWD,
        p.as_ptr(),
        libc::O_RDONLY | libc::O_CLOEXEC
    )? as i32;
    let mut n = 0;
    let r = loop {
        if n == buf.len() {
            let mut one = [0u8; 1];
            break match read(fd, &mut one) {
                Ok(0) => Ok((n, true)),
                Ok(_) => Ok((n, false)),
                Err(e) => Err(e),
            };
        }
        match read(fd, &mut buf[n..]) {
            Ok(0) => break Ok((n, true)),
            Ok(k) => n += k,
            Err(libc::EINTR) => {}
            Err(e) => break Err(e),
        }
    };
    let _ = close(fd);
    r
}
