//! The fd model: what each fd number names and how `close` keeps that exact. See
//! docs/fd-model.md.

use crate::channel::Channel;
use crate::fdtable::{self, Entry};
use crate::ops::R;
use core::sync::atomic::Ordering;
use shm_proto::Request;

/// Drops one fd reference to a slot; the last one closes the agent's socket.
pub(crate) fn release(c: &Channel, slot: u32) {
    if let Some(hs) = c.socks.get(slot as usize) {
        if hs.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _ = c.post(slot, Request::Close);
        }
    }
}

pub(crate) fn close(fd: i32) -> R {
    match fdtable::get(fd) {
        Entry::None => R::Pass,
        Entry::Internal => R::Err(libc::EBADF),
        Entry::Epoll(idx) => {
            fdtable::clear(fd);
            crate::epoll::release(idx);
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
