//! The next definition of each interposed symbol (libc's), resolved lazily with
//! `dlsym(RTLD_NEXT, name)` and cached in an atomic. No `Once`: `dlsym` may call `malloc`, and a
//! racing resolution is harmless (both threads store the same pointer).

#![allow(clippy::missing_safety_doc)]

use core::sync::atomic::{AtomicUsize, Ordering};
use libc::{c_int, c_uint, c_ulong, c_void, size_t, sockaddr, socklen_t, ssize_t};

pub(crate) fn resolve(slot: &AtomicUsize, name: &core::ffi::CStr) -> usize {
    let p = slot.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT finds libc's definition.
    let f = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
    slot.store(f, Ordering::Relaxed);
    f
}

macro_rules! real {
    ($( $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty ;)*) => {
        $(
            /// Calls libc's definition.
            ///
            /// # Safety
            /// Same contract as the libc function.
            pub(crate) unsafe fn $name($($arg: $ty),*) -> $ret {
                static SLOT: AtomicUsize = AtomicUsize::new(0);
                let p = resolve(&SLOT, {
                    const N: &[u8] = concat!(stringify!($name), "\0").as_bytes();
                    // SAFETY: N is NUL-terminated with no interior NUL.
                    unsafe { core::ffi::CStr::from_bytes_with_nul_unchecked(N) }
                });
                if p == 0 {
                    crate::sys::set_errno(libc::ENOSYS);
                    return (-1i32) as $ret;
                }
                // SAFETY: dlsym returned libc's symbol of this name, whose C signature matches.
                let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { core::mem::transmute(p) };
                // SAFETY: forwarded under the caller's contract.
                unsafe { f($($arg),*) }
            }
        )*
    };
}

real! {
    socket(d: c_int, t: c_int, p: c_int) -> c_int;
    bind(fd: c_int, a: *const sockaddr, l: socklen_t) -> c_int;
    listen(fd: c_int, b: c_int) -> c_int;
    accept(fd: c_int, a: *mut sockaddr, l: *mut socklen_t) -> c_int;
    accept4(fd: c_int, a: *mut sockaddr, l: *mut socklen_t, f: c_int) -> c_int;
    connect(fd: c_int, a: *const sockaddr, l: socklen_t) -> c_int;
    read(fd: c_int, b: *mut c_void, n: size_t) -> ssize_t;
    write(fd: c_int, b: *const c_void, n: size_t) -> ssize_t;
    readv(fd: c_int, v: *const libc::iovec, n: c_int) -> ssize_t;
    writev(fd: c_int, v: *const libc::iovec, n: c_int) -> ssize_t;
    recv(fd: c_int, b: *mut c_void, n: size_t, f: c_int) -> ssize_t;
    recvfrom(fd: c_int, b: *mut c_void, n: size_t, f: c_int, a: *mut sockaddr, l: *mut socklen_t) -> ssize_t;
    recvmsg(fd: c_int, m: *mut libc::msghdr, f: c_int) -> ssize_t;
    send(fd: c_int, b: *const c_void, n: size_t, f: c_int) -> ssize_t;
    sendto(fd: c_int, b: *const c_void, n: size_t, f: c_int, a: *const sockaddr, l: socklen_t) -> ssize_t;
    sendmsg(fd: c_int, m: *const libc::msghdr, f: c_int) -> ssize_t;
    close(fd: c_int) -> c_int;
    shutdown(fd: c_int, h: c_int) -> c_int;
    getsockname(fd: c_int, a: *mut sockaddr, l: *mut socklen_t) -> c_int;
    getpeername(fd: c_int, a: *mut sockaddr, l: *mut socklen_t) -> c_int;
    getsockopt(fd: c_int, lv: c_int, n: c_int, v: *mut c_void, l: *mut socklen_t) -> c_int;
    setsockopt(fd: c_int, lv: c_int, n: c_int, v: *const c_void, l: socklen_t) -> c_int;
    fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int;
    fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int;
    ioctl(fd: c_int, req: c_ulong, arg: *mut c_void) -> c_int;
    epoll_create(n: c_int) -> c_int;
    epoll_create1(f: c_int) -> c_int;
    epoll_ctl(ep: c_int, op: c_int, fd: c_int, ev: *mut libc::epoll_event) -> c_int;
    epoll_wait(ep: c_int, ev: *mut libc::epoll_event, n: c_int, t: c_int) -> c_int;
    epoll_pwait(ep: c_int, ev: *mut libc::epoll_event, n: c_int, t: c_int, m: *const libc::sigset_t) -> c_int;
    poll(f: *mut libc::pollfd, n: libc::nfds_t, t: c_int) -> c_int;
    ppoll(f: *mut libc::pollfd, n: libc::nfds_t, t: *const libc::timespec, m: *const libc::sigset_t) -> c_int;
    select(n: c_int, r: *mut libc::fd_set, w: *mut libc::fd_set, e: *mut libc::fd_set, t: *mut libc::timeval) -> c_int;
    pselect(n: c_int, r: *mut libc::fd_set, w: *mut libc::fd_set, e: *mut libc::fd_set, t: *const libc::timespec, m: *const libc::sigset_t) -> c_int;
    dup(fd: c_int) -> c_int;
    dup2(a: c_int, b: c_int) -> c_int;
    dup3(a: c_int, b: c_int, f: c_int) -> c_int;
    sendfile(o: c_int, i: c_int, off: *mut libc::off_t, n: size_t) -> ssize_t;
    sendfile64(o: c_int, i: c_int, off: *mut libc::off64_t, n: size_t) -> ssize_t;
    splice(a: c_int, oa: *mut libc::loff_t, b: c_int, ob: *mut libc::loff_t, n: size_t, f: c_uint) -> ssize_t;
    pread(fd: c_int, b: *mut c_void, n: size_t, off: libc::off_t) -> ssize_t;
    __read_chk(fd: c_int, b: *mut c_void, n: size_t, bl: size_t) -> ssize_t;
    __recv_chk(fd: c_int, b: *mut c_void, n: size_t, bl: size_t, f: c_int) -> ssize_t;
    __recvfrom_chk(fd: c_int, b: *mut c_void, n: size_t, bl: size_t, f: c_int, a: *mut sockaddr, l: *mut socklen_t) -> ssize_t;
    __poll_chk(f: *mut libc::pollfd, n: libc::nfds_t, t: c_int, fl: size_t) -> c_int;
    close_range(a: c_uint, b: c_uint, f: c_int) -> c_int;
    fork() -> libc::pid_t;
    execve(p: *const libc::c_char, a: *const *const libc::c_char, e: *const *const libc::c_char) -> c_int;
    execv(p: *const libc::c_char, a: *const *const libc::c_char) -> c_int;
    execvp(p: *const libc::c_char, a: *const *const libc::c_char) -> c_int;
    execvpe(p: *const libc::c_char, a: *const *const libc::c_char, e: *const *const libc::c_char) -> c_int;
    sigaction(s: c_int, a: *const libc::sigaction, o: *mut libc::sigaction) -> c_int;
    posix_spawn(pid: *mut libc::pid_t, p: *const libc::c_char, fa: *const libc::posix_spawn_file_actions_t, at: *const libc::posix_spawnattr_t, a: *const *mut libc::c_char, e: *const *mut libc::c_char) -> c_int;
    posix_spawnp(pid: *mut libc::pid_t, p: *const libc::c_char, fa: *const libc::posix_spawn_file_actions_t, at: *const libc::posix_spawnattr_t, a: *const *mut libc::c_char, e: *const *mut libc::c_char) -> c_int;
    posix_spawn_file_actions_init(fa: *mut libc::posix_spawn_file_actions_t) -> c_int;
    posix_spawn_file_actions_destroy(fa: *mut libc::posix_spawn_file_actions_t) -> c_int;
    posix_spawn_file_actions_addclose(fa: *mut libc::posix_spawn_file_actions_t, fd: c_int) -> c_int;
    posix_spawn_file_actions_adddup2(fa: *mut libc::posix_spawn_file_actions_t, fd: c_int, nfd: c_int) -> c_int;
    posix_spawn_file_actions_addopen(fa: *mut libc::posix_spawn_file_actions_t, fd: c_int, p: *const libc::c_char, o: c_int, m: libc::mode_t) -> c_int;
    posix_spawn_file_actions_addclosefrom_np(fa: *mut libc::posix_spawn_file_actions_t, fd: c_int) -> c_int;
    fexecve(fd: c_int, a: *const *const libc::c_char, e: *const *const libc::c_char) -> c_int;
    epoll_pwait2(ep: c_int, ev: *mut libc::epoll_event, n: c_int, t: *const libc::timespec, m: *const libc::sigset_t) -> c_int;
    recvmmsg(fd: c_int, v: *mut libc::mmsghdr, n: c_uint, f: c_int, t: *mut libc::timespec) -> c_int;
    sendmmsg(fd: c_int, v: *mut libc::mmsghdr, n: c_uint, f: c_int) -> c_int;
}
