//! The `extern "C"` surface: every interposed symbol is declared once, in `hook_table!` below,
//! with its exact C signature and what it does. The table is expanded twice: here by `wrappers!`
//! into the exported functions, and in `real.rs` by `slots!` into libc's definition of each
//! symbol (resolved lazily with `dlsym(RTLD_NEXT)` into an atomic).
//!
//! Each hook is thin. The kinds of entry:
//! * `run [fds]`: if none of `fds` is ours, libc's definition runs untouched (one atomic load per
//!   fd); otherwise the body (safe logic in `ops`/`fdmodel`/`sendfile`, returning [`R`]) runs
//!   inside `catch_unwind`; `R::Pass` calls libc's definition with the same arguments, `R::Err`
//!   sets errno and returns -1, a panic becomes `EIO`.
//! * `run_opt [fds]`: the same for bodies returning `Option<Result<c_int, errno>>` (`epoll`,
//!   `poll`: None passes to libc).
//! * `custom []`: the body is the whole function (fork, exec, dup, signals, the `_chk` variants).
//! * `naked [] target`: a naked trampoline that jumps to a C function (the variadic `execl*`).
//!
//! There is no reentrancy guard, because nothing needs one: the library never calls a symbol it
//! interposes through libc (its own OS calls are raw syscalls, `sys.rs`; libc's definitions are
//! called through `real`), so libc never enters a hook on the library's behalf. The few hooks that
//! build on another (`__poll_chk` on `poll`, `closefrom` on `close_range`) call it directly.

#![allow(clippy::missing_safety_doc)]
// time_t/suseconds_t widths differ between targets; the casts are for the 32-bit ones.
#![allow(clippy::unnecessary_cast)]

use crate::fdtable::{self, Entry};
use crate::ops::{self, iov_slice, Iov, R};
use crate::real::{CStrArr, SpawnFa};
use crate::sys::set_errno;
use crate::{epoll, fdmodel, poll, real, tokernel};
use libc::{c_int, c_uint, c_ulong, c_void, iovec, size_t, sockaddr, socklen_t, ssize_t};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `f`; `Pass` calls `pass`. Errors set errno and return -1.
#[inline]
fn run(f: impl FnOnce() -> R, pass: impl FnOnce() -> isize) -> isize {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(R::Pass) => pass(),
        Ok(R::Ok(v)) => v,
        Ok(R::Err(e)) => {
            set_errno(e);
            -1
        }
        Err(_) => {
            set_errno(libc::EIO);
            -1
        }
    }
}

fn run_opt(f: impl FnOnce() -> Option<Result<i32, i32>>, pass: impl FnOnce() -> c_int) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(None) => pass(),
        Ok(Some(Ok(v))) => v,
        Ok(Some(Err(e))) => {
            set_errno(e);
            -1
        }
        Err(_) => {
            set_errno(libc::EIO);
            -1
        }
    }
}

#[inline]
fn ours(fd: c_int) -> bool {
    !matches!(fdtable::get(fd), Entry::None)
}

fn one(b: *mut c_void, n: size_t) -> [iovec; 1] {
    [iovec {
        iov_base: b,
        iov_len: n,
    }]
}

fn zero_addrlen(l: *mut socklen_t) {
    if !l.is_null() {
        // SAFETY: non-null application pointer. A stream socket reports no source address.
        unsafe { *l = 0 };
    }
}

fn pollfds<'a>(f: *mut libc::pollfd, n: libc::nfds_t) -> Option<&'a mut [libc::pollfd]> {
    if f.is_null() || n == 0 {
        return None;
    }
    // SAFETY: the application passes n pollfds.
    Some(unsafe { core::slice::from_raw_parts_mut(f, n as usize) })
}

fn ts_ns(t: *const libc::timespec) -> Result<i64, i32> {
    if t.is_null() {
        return Ok(-1);
    }
    // SAFETY: non-null application timespec.
    let ts = unsafe { *t };
    if ts.tv_sec < 0 || ts.tv_nsec < 0 || ts.tv_nsec >= 1_000_000_000 {
        return Err(libc::EINVAL);
    }
    Ok((ts.tv_sec as i64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as i64))
}

/// The environment for a new image (None: pass the application's own), never unwinding into C.
/// `e` is the application's envp or null for the current environment.
fn prepared_env(e: CStrArr) -> Option<crate::exec::Env> {
    // SAFETY: `e` is null or the null-terminated array the application passed to exec.
    catch_unwind(|| unsafe { crate::exec::prepare(e) })
        .ok()
        .flatten()
}

fn record_act(r: c_int, fa: *mut SpawnFa, a: crate::exec::Act) -> c_int {
    if r == 0 {
        let _ = catch_unwind(|| crate::spawn::record(fa as usize, a));
    }
    r
}

/// The child's environment when offloaded fds survive into it (None: spawn as asked).
fn spawn_env(fa: *const SpawnFa, e: *const *mut libc::c_char) -> Option<(crate::exec::Env, u64)> {
    catch_unwind(|| {
        let acts = crate::spawn::actions(fa as usize);
        // SAFETY: `e` is null or the application's null-terminated envp.
        unsafe { crate::exec::prepare_spawn(e as *const *const libc::c_char, &acts) }
    })
    .ok()
    .flatten()
}

type SpawnFn = unsafe fn(
    *mut libc::pid_t,
    *const libc::c_char,
    *const SpawnFa,
    *const libc::posix_spawnattr_t,
    *const *mut libc::c_char,
    *const *mut libc::c_char,
) -> c_int;

/// posix_spawn/posix_spawnp: with a prepared environment when offloaded fds survive into the
/// child, then the ticket is tied to the child's pid.
///
/// # Safety
/// The caller's arguments, as libc takes them.
unsafe fn spawn_with(
    real_fn: SpawnFn,
    pid: *mut libc::pid_t,
    p: *const libc::c_char,
    fa: *const SpawnFa,
    at: *const libc::posix_spawnattr_t,
    a: *const *mut libc::c_char,
    e: *const *mut libc::c_char,
) -> c_int {
    let Some((env, secret)) = spawn_env(fa, e) else {
        // SAFETY: the caller's arguments.
        return unsafe { real_fn(pid, p, fa, at, a, e) };
    };
    // SAFETY: libc's spawn with the prepared environment (alive until it returns).
    let r = unsafe { real_fn(pid, p, fa, at, a, env.as_ptr() as *const _) };
    if r == 0 && !pid.is_null() {
        // SAFETY: libc wrote the child's pid there.
        let child = unsafe { *pid };
        let _ = catch_unwind(|| crate::process::fork_parent(secret, child));
    }
    r
}

extern "C" {
    fn snstack_execl_c();
    fn snstack_execle_c();
    fn snstack_execlp_c();
}

/// Generates the exported function of each table entry (see the module doc for the kinds).
macro_rules! wrappers {
    ($(
        $(#[$attr:meta])*
        fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?
            => $kind:ident [$($fd:ident),*] $body:tt;
    )*) => {
        $(
            wrappers!(@hook $kind [$($fd),*] $(#[$attr])*
                fn $name($($arg: $ty),*) $(-> $ret)? => $body);
        )*
    };
    (@bypass [] $name:ident($($arg:ident),*)) => {};
    (@bypass [$($fd:ident),+] $name:ident($($arg:ident),*)) => {
        if $(!ours($fd))&&+ {
            // SAFETY: libc's definition of this symbol, with the caller's arguments.
            return unsafe { real::$name($($arg),*) };
        }
    };
    (@hook run [$($fd:ident),*] $(#[$attr:meta])*
        fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty => $body:block) => {
        $(#[$attr])*
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            wrappers!(@bypass [$($fd),*] $name($($arg),*));
            run(
                || $body,
                // SAFETY: libc's definition of this symbol, with the caller's arguments.
                || unsafe { real::$name($($arg),*) } as isize,
            ) as $ret
        }
    };
    (@hook run_opt [$($fd:ident),*] $(#[$attr:meta])*
        fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty => $body:block) => {
        $(#[$attr])*
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            wrappers!(@bypass [$($fd),*] $name($($arg),*));
            run_opt(
                || $body,
                // SAFETY: libc's definition of this symbol, with the caller's arguments.
                || unsafe { real::$name($($arg),*) },
            )
        }
    };
    (@hook custom [] $(#[$attr:meta])*
        fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? => $body:block) => {
        $(#[$attr])*
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) $(-> $ret)? $body
    };
    (@hook naked [] $(#[$attr:meta])* fn $name:ident() => $target:ident) => {
        $(#[$attr])*
        /// Jumps to the C body with the caller's registers and stack as they are.
        #[no_mangle]
        #[unsafe(naked)]
        pub unsafe extern "C" fn $name() {
            #[cfg(target_arch = "x86_64")]
            core::arch::naked_asm!("jmp {}", sym $target);
            #[cfg(target_arch = "aarch64")]
            core::arch::naked_asm!("b {}", sym $target);
        }
    };
}

/// Every symbol `libsnstack.so` interposes, once: `fn name(C signature) => kind [fds] body;`.
/// `$gen` is the generator to feed it to: `wrappers` (this file) or `slots` (real.rs). Keep the
/// signatures exactly libc's: they are also the types libc's definitions are called with.
macro_rules! hook_table {
    ($gen:ident) => {
        $gen! {
            fn socket(
                domain: c_int,
                ty: c_int,
                proto: c_int,
            ) -> c_int => run [] { ops::socket(domain, ty, proto) };
            fn bind(
                fd: c_int,
                a: *const sockaddr,
                l: socklen_t,
            ) -> c_int => run [] { tokernel::bind(fd, a, l) };
            fn listen(fd: c_int, b: c_int) -> c_int => run [] { tokernel::listen(fd, b) };
            fn accept(
                fd: c_int,
                a: *mut sockaddr,
                l: *mut socklen_t,
            ) -> c_int => run [] { ops::accept4(fd, a, l, 0) };
            fn accept4(
                fd: c_int,
                a: *mut sockaddr,
                l: *mut socklen_t,
                f: c_int,
            ) -> c_int => run [] { ops::accept4(fd, a, l, f) };
            fn connect(
                fd: c_int,
                a: *const sockaddr,
                l: socklen_t,
            ) -> c_int => run [] { tokernel::connect(fd, a, l) };
            fn read(
                fd: c_int,
                b: *mut c_void,
                n: size_t,
            ) -> ssize_t => run [fd] { ops::recv(fd, &Iov { v: &one(b, n) }, 0) };
            fn __read_chk(
                fd: c_int,
                b: *mut c_void,
                n: size_t,
                bl: size_t,
            ) -> ssize_t => custom [] {
                if !ours(fd) {
                    // SAFETY: libc's definition, with the caller's arguments.
                    return unsafe { real::__read_chk(fd, b, n, bl) };
                }
                if n > bl {
                    // SAFETY: _FORTIFY_SOURCE semantics: a buffer overflow aborts.
                    unsafe { libc::abort() };
                }
                run(
                    || ops::recv(fd, &Iov { v: &one(b, n) }, 0),
                    // SAFETY: libc's definition of the unchecked call, with the caller's arguments.
                    || unsafe { real::read(fd, b, n) },
                )
            };
            fn write(fd: c_int, b: *const c_void, n: size_t) -> ssize_t => run [fd] {
                ops::send(
                    fd,
                    &Iov {
                        v: &one(b as *mut _, n),
                    },
                    0,
                )
            };
            fn readv(fd: c_int, v: *const iovec, n: c_int) -> ssize_t => run [fd] {
                match iov_slice(v, n) {
                    Ok(s) => ops::recv(fd, &Iov { v: s }, 0),
                    Err(e) => R::Err(e),
                }
            };
            fn writev(fd: c_int, v: *const iovec, n: c_int) -> ssize_t => run [fd] {
                match iov_slice(v, n) {
                    Ok(s) => ops::send(fd, &Iov { v: s }, 0),
                    Err(e) => R::Err(e),
                }
            };
            fn recv(
                fd: c_int,
                b: *mut c_void,
                n: size_t,
                f: c_int,
            ) -> ssize_t => run [] { ops::recv(fd, &Iov { v: &one(b, n) }, f) };
            fn __recv_chk(
                fd: c_int,
                b: *mut c_void,
                n: size_t,
                bl: size_t,
                f: c_int,
            ) -> ssize_t => custom [] {
                if !ours(fd) {
                    // SAFETY: libc's definition, with the caller's arguments.
                    return unsafe { real::__recv_chk(fd, b, n, bl, f) };
                }
                if n > bl {
                    // SAFETY: _FORTIFY_SOURCE semantics.
                    unsafe { libc::abort() };
                }
                run(
                    || ops::recv(fd, &Iov { v: &one(b, n) }, f),
                    // SAFETY: libc's definition of the unchecked call, with the caller's arguments.
                    || unsafe { real::recv(fd, b, n, f) },
                )
            };
            fn recvfrom(
                fd: c_int,
                b: *mut c_void,
                n: size_t,
                f: c_int,
                a: *mut sockaddr,
                l: *mut socklen_t,
            ) -> ssize_t => run [] {
                let r = ops::recv(fd, &Iov { v: &one(b, n) }, f);
                if matches!(r, R::Ok(_)) && !a.is_null() {
                    zero_addrlen(l);
                }
                r
            };
            fn __recvfrom_chk(
                fd: c_int,
                b: *mut c_void,
                n: size_t,
                bl: size_t,
                f: c_int,
                a: *mut sockaddr,
                l: *mut socklen_t,
            ) -> ssize_t => custom [] {
                if !ours(fd) {
                    // SAFETY: libc's definition, with the caller's arguments.
                    return unsafe { real::__recvfrom_chk(fd, b, n, bl, f, a, l) };
                }
                if n > bl {
                    // SAFETY: _FORTIFY_SOURCE semantics.
                    unsafe { libc::abort() };
                }
                // SAFETY: our recvfrom hook with the caller's arguments (buffer length checked).
                unsafe { recvfrom(fd, b, n, f, a, l) }
            };
            fn recvmsg(fd: c_int, m: *mut libc::msghdr, f: c_int) -> ssize_t => run [] {
                if m.is_null() {
                    return R::Err(libc::EFAULT);
                }
                // SAFETY: non-null application msghdr.
                let msg = unsafe { &mut *m };
                ops::recvmsg(fd, msg, f)
            };
            fn send(fd: c_int, b: *const c_void, n: size_t, f: c_int) -> ssize_t => run [] {
                ops::send(
                    fd,
                    &Iov {
                        v: &one(b as *mut _, n),
                    },
                    f,
                )
            };
            /// A connected stream socket ignores the destination, as Linux TCP does.
            fn sendto(
                fd: c_int,
                b: *const c_void,
                n: size_t,
                f: c_int,
                a: *const sockaddr,
                l: socklen_t,
            ) -> ssize_t => run [] {
                ops::send(
                    fd,
                    &Iov {
                        v: &one(b as *mut _, n),
                    },
                    f,
                )
            };
            fn sendmsg(fd: c_int, m: *const libc::msghdr, f: c_int) -> ssize_t => run [] {
                if m.is_null() {
                    return R::Err(libc::EFAULT);
                }
                // SAFETY: non-null application msghdr.
                let msg = unsafe { &*m };
                ops::sendmsg(fd, msg, f)
            };
            fn close(fd: c_int) -> c_int => run [fd] { fdmodel::close(fd) };
            fn shutdown(fd: c_int, h: c_int) -> c_int => run [] { ops::shutdown(fd, h) };
            fn getsockname(
                fd: c_int,
                a: *mut sockaddr,
                l: *mut socklen_t,
            ) -> c_int => run [] { ops::name(fd, a, l, false) };
            fn getpeername(
                fd: c_int,
                a: *mut sockaddr,
                l: *mut socklen_t,
            ) -> c_int => run [] { ops::name(fd, a, l, true) };
            fn getsockopt(
                fd: c_int,
                lv: c_int,
                n: c_int,
                v: *mut c_void,
                l: *mut socklen_t,
            ) -> c_int => run [] { ops::getsockopt(fd, lv, n, v, l) };
            fn setsockopt(
                fd: c_int,
                lv: c_int,
                n: c_int,
                v: *const c_void,
                l: socklen_t,
            ) -> c_int => run [] { ops::setsockopt(fd, lv, n, v, l) };
            fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int => run [fd] {
                match cmd {
                    libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => fdmodel::dupfd(fd, cmd, arg),
                    _ => ops::fcntl(fd, cmd, arg),
                }
            };
            fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int => run [fd] {
                match cmd {
                    libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => fdmodel::dupfd(fd, cmd, arg),
                    _ => ops::fcntl(fd, cmd, arg),
                }
            };
            fn ioctl(
                fd: c_int,
                req: c_ulong,
                arg: *mut c_void,
            ) -> c_int => run [fd] { ops::ioctl(fd, req, arg) };
            fn epoll_create(n: c_int) -> c_int => custom [] {
                // SAFETY: libc's definition, with the caller's arguments.
                let r = unsafe { real::epoll_create(n) };
                if r >= 0 {
                    let _ = catch_unwind(|| epoll::created(r));
                }
                r
            };
            fn epoll_create1(f: c_int) -> c_int => custom [] {
                // SAFETY: libc's definition, with the caller's arguments.
                let r = unsafe { real::epoll_create1(f) };
                if r >= 0 {
                    let _ = catch_unwind(|| epoll::created(r));
                }
                r
            };
            fn epoll_ctl(
                ep: c_int,
                op: c_int,
                fd: c_int,
                ev: *mut libc::epoll_event,
            ) -> c_int => run_opt [fd, ep] { epoll::ctl(ep, op, fd, ev) };
            fn epoll_wait(
                ep: c_int,
                ev: *mut libc::epoll_event,
                n: c_int,
                t: c_int,
            ) -> c_int => run_opt [ep] { epoll::wait(ep, ev, n, t, core::ptr::null()) };
            fn epoll_pwait(
                ep: c_int,
                ev: *mut libc::epoll_event,
                n: c_int,
                t: c_int,
                m: *const libc::sigset_t,
            ) -> c_int => run_opt [ep] { epoll::wait(ep, ev, n, t, m) };
            fn poll(f: *mut libc::pollfd, n: libc::nfds_t, t: c_int) -> c_int => run_opt [] {
                let fds = pollfds(f, n)?;
                let ns = if t < 0 { -1 } else { t as i64 * 1_000_000 };
                poll::poll(fds, ns, core::ptr::null())
            };
            fn __poll_chk(
                f: *mut libc::pollfd,
                n: libc::nfds_t,
                t: c_int,
                fl: size_t,
            ) -> c_int => custom [] {
                if (fl / core::mem::size_of::<libc::pollfd>()) < n as usize {
                    // SAFETY: _FORTIFY_SOURCE semantics.
                    unsafe { libc::abort() };
                }
                // SAFETY: our poll hook, with the caller's arguments (the array length checked).
                unsafe { poll(f, n, t) }
            };
            fn ppoll(
                f: *mut libc::pollfd,
                n: libc::nfds_t,
                t: *const libc::timespec,
                m: *const libc::sigset_t,
            ) -> c_int => run_opt [] {
                let fds = pollfds(f, n)?;
                match ts_ns(t) {
                    Ok(ns) => poll::poll(fds, ns, m),
                    Err(e) => Some(Err(e)),
                }
            };
            fn select(
                n: c_int,
                r: *mut libc::fd_set,
                w: *mut libc::fd_set,
                e: *mut libc::fd_set,
                t: *mut libc::timeval,
            ) -> c_int => run_opt [] { poll::select_timeval(n, r, w, e, t) };
            fn pselect(
                n: c_int,
                r: *mut libc::fd_set,
                w: *mut libc::fd_set,
                e: *mut libc::fd_set,
                t: *const libc::timespec,
                m: *const libc::sigset_t,
            ) -> c_int => run_opt [] {
                match ts_ns(t) {
                    Ok(ns) => poll::select(n, r, w, e, ns, m),
                    Err(e) => Some(Err(e)),
                }
            };
            fn dup(fd: c_int) -> c_int => custom [] {
                // SAFETY: libc's definition, with the caller's arguments.
                let r = unsafe { real::dup(fd) };
                if r >= 0 {
                    fdmodel::dup_done(fd, r);
                }
                r
            };
            fn dup2(old: c_int, new: c_int) -> c_int => custom [] {
                if old == new || (!ours(old) && !ours(new)) {
                    // SAFETY: libc's definition, with the caller's arguments.
                    return unsafe { real::dup2(old, new) };
                }
                if fdmodel::is_internal(new) {
                    set_errno(libc::EBUSY);
                    return -1;
                }
                // SAFETY: libc's definition, with the caller's arguments.
                let r = unsafe { real::dup2(old, new) };
                if r >= 0 {
                    let _ = catch_unwind(|| fdmodel::dup2_done(old, new));
                }
                r
            };
            fn dup3(old: c_int, new: c_int, f: c_int) -> c_int => custom [] {
                if !ours(old) && !ours(new) {
                    // SAFETY: libc's definition, with the caller's arguments.
                    return unsafe { real::dup3(old, new, f) };
                }
                if fdmodel::is_internal(new) {
                    set_errno(libc::EBUSY);
                    return -1;
                }
                // SAFETY: libc's definition, with the caller's arguments.
                let r = unsafe { real::dup3(old, new, f) };
                if r >= 0 {
                    let _ = catch_unwind(|| fdmodel::dup2_done(old, new));
                }
                r
            };
            fn sendfile(
                o: c_int,
                i: c_int,
                off: *mut libc::off_t,
                n: size_t,
            ) -> ssize_t => run [o] { crate::sendfile::sendfile(o, i, off, n) };
            fn sendfile64(
                o: c_int,
                i: c_int,
                off: *mut libc::off64_t,
                n: size_t,
            ) -> ssize_t => run [o] { crate::sendfile::sendfile(o, i, off, n) };
            /// splice between an offloaded socket and a pipe (through a bounce buffer; see
            /// `ops::splice`).
            fn splice(
                fi: c_int,
                oi: *mut libc::loff_t,
                fo: c_int,
                oo: *mut libc::loff_t,
                n: size_t,
                f: c_uint,
            ) -> ssize_t => run [fi, fo] { ops::splice(fi, oi, fo, oo, n, f) };
            /// vfork is fork here: the child must get a channel of its own before it touches an
            /// offloaded socket or execs with one, and a vfork child shares its parent's memory
            /// (channel included). POSIX allows vfork to be fork; a correct vfork caller only execs
            /// or `_exit`s in the child.
            fn vfork() -> libc::pid_t => custom [] {
                // SAFETY: our fork hook.
                unsafe { fork() }
            };
            /// close_range: our own fds in the range survive; offloaded sockets and epolls in it
            /// are released.
            fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int => custom [] {
                if flags & libc::CLOSE_RANGE_CLOEXEC as c_int != 0 || first > last {
                    // SAFETY: libc's definition, with the caller's arguments.
                    return unsafe { real::close_range(first, last, flags) };
                }
                let r = catch_unwind(|| fdmodel::close_range(first, last, flags));
                r.unwrap_or_else(|_| {
                    set_errno(libc::EIO);
                    -1
                })
            };
            fn __ppoll_chk(
                f: *mut libc::pollfd,
                n: libc::nfds_t,
                t: *const libc::timespec,
                m: *const libc::sigset_t,
                fl: size_t,
            ) -> c_int => custom [] {
                if (fl / core::mem::size_of::<libc::pollfd>()) < n as usize {
                    // SAFETY: _FORTIFY_SOURCE semantics.
                    unsafe { libc::abort() };
                }
                // SAFETY: our ppoll hook, with the caller's arguments (the array length checked).
                unsafe { ppoll(f, n, t, m) }
            };
            /// fork: a process holding offloaded sockets first takes a fork ticket from the agent
            /// (every one of its sockets gains a reference); the child attaches its own channel
            /// with that ticket and keeps every inherited fd working; the parent tells the agent
            /// the child's pid so an unclaimed ticket dies with the child.
            fn fork() -> libc::pid_t => custom [] {
                let secret = catch_unwind(crate::process::fork_prepare).unwrap_or(0);
                crate::process::set_fork_secret(secret);
                // SAFETY: libc's fork; its atfork handlers run inside.
                let pid = unsafe { real::fork() };
                if pid == 0 {
                    crate::signals::forget_tid();
                }
                if secret != 0 {
                    if pid == 0 {
                        let _ = catch_unwind(|| {
                            crate::process::fork_child(secret, &epoll::AFTER_FORK)
                        });
                    } else {
                        crate::process::set_fork_secret(0);
                        if pid > 0 {
                            let _ = catch_unwind(|| crate::process::fork_parent(secret, pid));
                        }
                    }
                }
                pid
            };
            fn epoll_pwait2(
                ep: c_int,
                ev: *mut libc::epoll_event,
                n: c_int,
                t: *const libc::timespec,
                m: *const libc::sigset_t,
            ) -> c_int => run_opt [ep] {
                // epoll_wait's millisecond timeout, rounded up so a short wait is not a busy poll.
                let ms = match ts_ns(t) {
                    Ok(ns) if ns < 0 => -1,
                    Ok(ns) => ((ns + 999_999) / 1_000_000).min(i32::MAX as i64) as i32,
                    Err(e) => return Some(Err(e)),
                };
                epoll::wait(ep, ev, n, ms, m)
            };
            /// recvmmsg on a stream socket: fills messages in turn; later ones never block (as
            /// Linux).
            fn recvmmsg(
                fd: c_int,
                v: *mut libc::mmsghdr,
                n: c_uint,
                f: c_int,
                t: *mut libc::timespec,
            ) -> c_int => run [fd] { ops::recvmmsg(fd, v, n, f) };
            fn sendmmsg(
                fd: c_int,
                v: *mut libc::mmsghdr,
                n: c_uint,
                f: c_int,
            ) -> c_int => run [fd] { ops::sendmmsg(fd, v, n, f) };
            // ---- signals: user handlers run through a counting trampoline (see signals.rs).
            fn sigaction(
                sig: c_int,
                act: *const libc::sigaction,
                old: *mut libc::sigaction,
            ) -> c_int => custom [] {
                // SAFETY: the caller's arguments, passed on.
                unsafe { crate::signals::sigaction(sig, act, old) }
            };
            fn signal(sig: c_int, h: libc::sighandler_t) -> libc::sighandler_t => custom [] {
                // SAFETY: the caller's arguments, passed on to the signal layer.
                unsafe { crate::signals::signal(sig, h, false) }
            };
            fn bsd_signal(sig: c_int, h: libc::sighandler_t) -> libc::sighandler_t => custom [] {
                // SAFETY: the caller's arguments, passed on to the signal layer.
                unsafe { crate::signals::signal(sig, h, false) }
            };
            fn sysv_signal(sig: c_int, h: libc::sighandler_t) -> libc::sighandler_t => custom [] {
                // SAFETY: the caller's arguments, passed on to the signal layer.
                unsafe { crate::signals::signal(sig, h, true) }
            };
            fn __sysv_signal(sig: c_int, h: libc::sighandler_t) -> libc::sighandler_t => custom [] {
                // SAFETY: the caller's arguments, passed on to the signal layer.
                unsafe { crate::signals::signal(sig, h, true) }
            };
            fn siginterrupt(sig: c_int, flag: c_int) -> c_int => custom [] {
                // SAFETY: the caller's arguments, passed on to the signal layer.
                unsafe { crate::signals::siginterrupt(sig, flag) }
            };
            // ---- posix_spawn: the file-action adders are recorded (the object is opaque), spawn
            // replays them.
            fn posix_spawn_file_actions_init(fa: *mut SpawnFa) -> c_int => custom [] {
                let _ = catch_unwind(|| crate::spawn::reset(fa as usize));
                // SAFETY: libc's function with the caller's argument.
                unsafe { real::posix_spawn_file_actions_init(fa) }
            };
            fn posix_spawn_file_actions_destroy(fa: *mut SpawnFa) -> c_int => custom [] {
                let _ = catch_unwind(|| crate::spawn::reset(fa as usize));
                // SAFETY: libc's definition, with the caller's arguments.
                unsafe { real::posix_spawn_file_actions_destroy(fa) }
            };
            fn posix_spawn_file_actions_addclose(
                fa: *mut SpawnFa,
                fd: c_int,
            ) -> c_int => custom [] {
                // SAFETY: libc's definition, with the caller's arguments.
                let r = unsafe { real::posix_spawn_file_actions_addclose(fa, fd) };
                record_act(r, fa, crate::exec::Act::Close(fd))
            };
            fn posix_spawn_file_actions_adddup2(
                fa: *mut SpawnFa,
                fd: c_int,
                nfd: c_int,
            ) -> c_int => custom [] {
                // SAFETY: libc's definition, with the caller's arguments.
                let r = unsafe { real::posix_spawn_file_actions_adddup2(fa, fd, nfd) };
                record_act(r, fa, crate::exec::Act::Dup2(fd, nfd))
            };
            fn posix_spawn_file_actions_addopen(
                fa: *mut SpawnFa,
                fd: c_int,
                p: *const libc::c_char,
                o: c_int,
                m: libc::mode_t,
            ) -> c_int => custom [] {
                // SAFETY: libc's definition, with the caller's arguments.
                let r = unsafe { real::posix_spawn_file_actions_addopen(fa, fd, p, o, m) };
                record_act(r, fa, crate::exec::Act::Open(fd))
            };
            fn posix_spawn_file_actions_addclosefrom_np(
                fa: *mut SpawnFa,
                fd: c_int,
            ) -> c_int => custom [] {
                // SAFETY: libc's definition, with the caller's arguments.
                let r = unsafe { real::posix_spawn_file_actions_addclosefrom_np(fa, fd) };
                record_act(r, fa, crate::exec::Act::CloseFrom(fd))
            };
            fn posix_spawn(
                pid: *mut libc::pid_t,
                p: *const libc::c_char,
                fa: *const SpawnFa,
                at: *const libc::posix_spawnattr_t,
                a: *const *mut libc::c_char,
                e: *const *mut libc::c_char,
            ) -> c_int => custom [] {
                // SAFETY: the caller's arguments.
                unsafe { spawn_with(real::posix_spawn, pid, p, fa, at, a, e) }
            };
            fn posix_spawnp(
                pid: *mut libc::pid_t,
                p: *const libc::c_char,
                fa: *const SpawnFa,
                at: *const libc::posix_spawnattr_t,
                a: *const *mut libc::c_char,
                e: *const *mut libc::c_char,
            ) -> c_int => custom [] {
                // SAFETY: the caller's arguments.
                unsafe { spawn_with(real::posix_spawnp, pid, p, fa, at, a, e) }
            };
            // ---- execl, execle, execlp: variadic. Their bodies are C (csrc/execl.c); the exported
            // symbols are naked trampolines (rustc exports only Rust-defined symbols from a cdylib)
            // that jump to the C body with the caller's registers and stack as they are.
            fn execl() => naked [] snstack_execl_c;
            fn execle() => naked [] snstack_execle_c;
            fn execlp() => naked [] snstack_execlp_c;
            /// exec family: the new image keeps LD_PRELOAD/SNSTACK_* and the offloaded fds that
            /// survive exec.
            fn execve(p: *const libc::c_char, a: CStrArr, e: CStrArr) -> c_int => custom [] {
                let env = prepared_env(e);
                let e2 = env.as_ref().map(|v| v.as_ptr()).unwrap_or(e);
                // SAFETY: libc's execve with the application's arguments.
                unsafe { real::execve(p, a, e2) }
            };
            fn execv(p: *const libc::c_char, a: CStrArr) -> c_int => custom [] {
                let env = prepared_env(core::ptr::null());
                match env {
                    // SAFETY: libc's execve with the prepared environment.
                    Some(v) => unsafe { real::execve(p, a, v.as_ptr()) },
                    // SAFETY: libc's definition, with the caller's arguments.
                    None => unsafe { real::execv(p, a) },
                }
            };
            fn execvpe(p: *const libc::c_char, a: CStrArr, e: CStrArr) -> c_int => custom [] {
                let env = prepared_env(e);
                let e2 = env.as_ref().map(|v| v.as_ptr()).unwrap_or(e);
                // SAFETY: libc's execvpe.
                unsafe { real::execvpe(p, a, e2) }
            };
            fn execvp(p: *const libc::c_char, a: CStrArr) -> c_int => custom [] {
                let env = prepared_env(core::ptr::null());
                match env {
                    // SAFETY: libc's execvpe with the prepared environment.
                    Some(v) => unsafe { real::execvpe(p, a, v.as_ptr()) },
                    // SAFETY: libc's definition, with the caller's arguments.
                    None => unsafe { real::execvp(p, a) },
                }
            };
            fn fexecve(fd: c_int, a: CStrArr, e: CStrArr) -> c_int => custom [] {
                let env = prepared_env(e);
                let e2 = env.as_ref().map(|v| v.as_ptr()).unwrap_or(e);
                // SAFETY: libc's fexecve.
                unsafe { real::fexecve(fd, a, e2) }
            };
            /// closefrom (glibc 2.34+, OpenSSH): closes the application's fds from `low` up, never
            /// ours.
            fn closefrom(low: c_int) => custom [] {
                let low = if low < 0 { 0 } else { low as c_uint };
                // SAFETY: our close_range keeps the library's own fds and releases offloaded ones.
                let r = unsafe { close_range(low, c_uint::MAX, 0) };
                if r < 0 {
                    // glibc's closefrom falls back to closing one by one; so do we, through our
                    // close.
                    fdmodel::closefrom_each(low, |fd| {
                        // SAFETY: closing the application's fd through our hook.
                        unsafe { close(fd) };
                    });
                }
            };
        }
    };
}

hook_table!(wrappers);
