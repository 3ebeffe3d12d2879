//! fd -> offload state, one atomic word per fd, lock-free to read. A zero word means "not ours":
//! the call goes to libc untouched, which is the fast path for every non-network fd.
//!
//! Word encoding: top 3 bits kind, low 29 bits index.
//! * `SOCK`: an offloaded socket; index = slot in the region. The fd itself is a real kernel socket
//!   (the "shadow") of the same domain and type, so numbers never collide with kernel fds.
//! * `EPOLL`: an application epoll fd (a real kernel epoll) that we track; index into `epoll::EPS`.
//! * `INTERNAL`: an fd the library owns (control socket, doorbells): the application never got it,
//!   so its calls on that number behave as on a closed fd.

use core::sync::atomic::{AtomicU32, Ordering};

pub(crate) const MAX_FDS: usize = 1 << 20;

const KIND_SHIFT: u32 = 29;
const INDEX_MASK: u32 = (1 << KIND_SHIFT) - 1;
pub(crate) const SOCK: u32 = 1;
pub(crate) const EPOLL: u32 = 2;
pub(crate) const INTERNAL: u32 = 3;

static TABLE: [AtomicU32; MAX_FDS] = [const { AtomicU32::new(0) }; MAX_FDS];
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Entry {
    None,
    Sock(u32),
    Epoll(u32),
    Internal,
}

fn decode(w: u32) -> Entry {
    match w >> KIND_SHIFT {
        SOCK => Entry::Sock(w & INDEX_MASK),
        EPOLL => Entry::Epoll(w & INDEX_MASK),
        INTERNAL => Entry::Internal,
        _ => Entry::None,
    }
}

fn encode(kind: u32, idx: u32) -> u32 {
    (kind << KIND_SHIFT) | (idx & INDEX_MASK)
}

#[inline]
pub(crate) fn get(fd: i32) -> Entry {
    if fd < 0 || fd as usize >= MAX_FDS {
        return Entry::None;
    }
    let w = TABLE[fd as usize].load(Ordering::Acquire);
    if w == 0 {
        Entry::None
    } else {
        decode(w)
    }
}

pub(crate) fn set_sock(fd: i32, slot: u32) {
    if fd >= 0 && (fd as usize) < MAX_FDS {
        TABLE[fd as usize].store(encode(SOCK, slot), Ordering::Release);
    }
}

pub(crate) fn set_epoll(fd: i32, idx: u32) {
    if fd >= 0 && (fd as usize) < MAX_FDS {
        TABLE[fd as usize].store(encode(EPOLL, idx), Ordering::Release);
    }
}

pub(crate) fn set_internal(fd: i32) {
    if fd >= 0 && (fd as usize) < MAX_FDS {
        TABLE[fd as usize].store(encode(INTERNAL, 0), Ordering::Release);
    }
}

/// Clears an entry and returns what it held.
pub(crate) fn take(fd: i32) -> Entry {
    if fd < 0 || fd as usize >= MAX_FDS {
        return Entry::None;
    }
    decode(TABLE[fd as usize].swap(0, Ordering::AcqRel))
}

pub(crate) fn clear(fd: i32) {
    let _ = take(fd);
}

/// Calls `f` for every fd holding a socket entry (fork handling, diagnostics).
pub(crate) fn for_each_sock(mut f: impl FnMut(i32, u32)) {
    for (i, w) in TABLE.iter().enumerate() {
        let v = w.load(Ordering::Relaxed);
        if v != 0 {
            if let Entry::Sock(s) = decode(v) {
                f(i as i32, s);
            }
        }
    }
}

/// Closes every fd the library owns (forked child: they belong to the parent's channel).
pub(crate) fn close_internal() {
    for (i, w) in TABLE.iter().enumerate() {
        let v = w.load(Ordering::Relaxed);
        if v != 0 && decode(v) == Entry::Internal {
            w.store(0, Ordering::Relaxed);
            let _ = crate::sys::close(i as i32);
        }
    }
}
