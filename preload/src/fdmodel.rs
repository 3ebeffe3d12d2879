//! The fd model: what each fd number names and how the calls that make, copy and drop fd numbers
//! keep the fd table exact (docs/fd-model.md). One place for `close`, `dup`/`dup2`/`dup3`,
//! `fcntl(F_DUPFD*)`, `close_range` and `closefrom`.
//!
//! * An offloaded socket's slot is the analogue of an open file description: every fd naming it
//!   holds one reference (`HostSock::refs`); the last `close` posts `Close` to the agent.
//! * Closing an application epoll fd releases its instance (`epoll::release`), which is why this
//!   module sits above `epoll` in the layering.
//! * Internal fds (control socket, doorbells) behave as closed for the application: `close` says
//!   `EBADF`, `dup2`/`dup3` onto one say `EBUSY`, `close_range`/`closefrom` skip them.
//!
//! The kernel does the fd numbers' own work (the real `dup`, `close`, ...); these functions do
//! the bookkeeping before or after it, with the hooks deciding when libc runs.

use crate::channel::Channel;
use crate::fdtable::{self, Entry};
use crate::ops::R;
use crate::sock::HostSock;
use crate::sockref::lookup;
use crate::{epoll, real, sockref};
use core::sync::atomic::Ordering;
use libc::{c_int, c_uint, c_ulong};
use shm_proto::Request;

/// Drops one fd reference to a slot; the last one closes the agent's socket.
pub(crate) fn release(c: &Channel, slot: u32) {
    if let Some(hs) = c.socks.get(slot as usize) {
        if hs.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _ = c.post(slot, Request::Close);
        }
    }
}

/// One more fd (`newfd`) names `slot`.
fn add_ref(newfd: i32, slot: u32, hs: &HostSock) {
    if newfd as usize >= fdtable::MAX_FDS {
        return;
    }
    hs.refs.fetch_add(1, Ordering::AcqRel);
    fdtable::set_sock(newfd, slot);
}

/// `close(fd)` before libc closes the number: drop what the fd held. `Pass`: let libc close it.
pub(crate) fn close(fd: i32) -> R {
    match fdtable::get(fd) {
        Entry::None => R::Pass,
        Entry::Internal => R::Err(libc::EBADF),
        Entry::Epoll(idx) => {
            fdtable::clear(fd);
            epoll::release(idx);
            R::Pass
        }
        Entry::Sock(slot) => {
            if let Entry::Sock(_) = fdtable::take(fd) {
                if let Some(c) = crate::process::channel_if_attached() {
                    release(c, slot);
                }
            }
            R::Pass // the shadow fd is closed by libc
        }
    }
}

/// After libc's `dup(old)` returned `new`: `new` names what `old` names.
pub(crate) fn dup_done(old: i32, new: i32) {
    if let Entry::Sock(slot) = fdtable::get(old) {
        if let Ok(s) = sockref::sock(slot) {
            add_ref(new, slot, s.hs);
        }
    }
}

/// `dup2`/`dup3` onto one of our internal fds is refused (`EBUSY`), as the kernel does for an fd
/// being installed.
pub(crate) fn is_internal(fd: i32) -> bool {
    fdtable::get(fd) == Entry::Internal
}

/// After libc's `dup2(old, new)`/`dup3` succeeded.
pub(crate) fn dup2_done(old: i32, new: i32) {
    // dup2 closed `new` if it was open: drop what it held.
    match fdtable::take(new) {
        Entry::Sock(slot) => {
            if let Some(c) = crate::process::channel_if_attached() {
                release(c, slot);
            }
        }
        Entry::Epoll(idx) => epoll::release(idx),
        _ => {}
    }
    dup_done(old, new);
}

/// `fcntl(fd, F_DUPFD | F_DUPFD_CLOEXEC, min)` on an fd of ours: dup the shadow fd, then name the
/// same slot.
pub(crate) fn dupfd(fd: i32, cmd: i32, arg: c_ulong) -> R {
    let s = match lookup(fd) {
        None => return R::Pass,
        Some(Err(e)) => return R::Err(e),
        Some(Ok(s)) => s,
    };
    // SAFETY: dup of the shadow fd.
    let r = unsafe { real::fcntl(fd, cmd, arg) };
    if r < 0 {
        // SAFETY: errno location of this thread.
        return R::Err(unsafe { *libc::__errno_location() });
    }
    add_ref(r, s.slot, s.hs);
    R::Ok(r as isize)
}

/// `close_range(first, last, flags)` without `CLOSE_RANGE_CLOEXEC`: our internal fds in the range
/// survive (libc closes the application's fds around them); offloaded sockets and epolls in it
/// are released. Returns what libc's `close_range` returned (errno set by it).
pub(crate) fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    let end = (last as usize).min(fdtable::MAX_FDS - 1) as c_uint;
    let mut from = first;
    let mut fd = first;
    while fd <= end {
        match fdtable::get(fd as c_int) {
            Entry::Internal => {
                if fd > from {
                    // SAFETY: closing the application's fds below our internal one.
                    let r = unsafe { real::close_range(from, fd - 1, flags) };
                    if r < 0 {
                        return r;
                    }
                }
                from = fd + 1;
            }
            Entry::Sock(_) | Entry::Epoll(_) => {
                let _ = close(fd as c_int);
            }
            Entry::None => {}
        }
        if fd == c_uint::MAX {
            break;
        }
        fd += 1;
    }
    if from <= last {
        // SAFETY: the rest of the application's range.
        return unsafe { real::close_range(from, last, flags) };
    }
    0
}

/// `closefrom(low)` when `close_range` failed: glibc falls back to closing one by one, so do we,
/// with `close_one` (the `close` hook) for every fd from `low` up that is not internal.
pub(crate) fn closefrom_each(low: c_uint, mut close_one: impl FnMut(c_int)) {
    let end = fdtable::MAX_FDS as c_uint;
    let mut fd = low;
    while fd < end {
        if fdtable::get(fd as c_int) != Entry::Internal {
            close_one(fd as c_int);
        }
        fd += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // fd numbers at the top of the table: no test elsewhere uses them and no real fd is touched.
    fn base() -> i32 {
        (fdtable::MAX_FDS - 16) as i32
    }

    #[test]
    fn close_drops_entries_and_refuses_internal_fds() {
        let b = base();
        fdtable::set_sock(b, 5);
        assert_eq!(close(b), R::Pass);
        assert_eq!(fdtable::get(b), Entry::None);
        fdtable::set_internal(b + 1);
        assert!(is_internal(b + 1));
        assert_eq!(close(b + 1), R::Err(libc::EBADF));
        assert_eq!(fdtable::get(b + 1), Entry::Internal);
        fdtable::clear(b + 1);
        assert_eq!(close(b + 2), R::Pass);
    }

    #[test]
    fn dup2_onto_a_socket_fd_drops_its_entry() {
        let b = base() + 4;
        fdtable::set_sock(b + 1, 7);
        dup2_done(b, b + 1);
        assert_eq!(fdtable::get(b + 1), Entry::None);
    }

    #[test]
    fn closefrom_fallback_skips_internal_fds() {
        let b = base() + 8;
        fdtable::set_internal(b + 2);
        let mut seen = Vec::new();
        closefrom_each(b as c_uint, |fd| seen.push(fd));
        fdtable::clear(b + 2);
        let want: Vec<i32> = (b..fdtable::MAX_FDS as i32)
            .filter(|&f| f != b + 2)
            .collect();
        assert_eq!(seen, want);
    }
}
