//! [`S`]: an offloaded socket as an operation holds it (the process's channel, the slot, the
//! slot's host-private [`HostSock`] and its control block in the region), found from an fd through
//! the fd table.

use crate::channel::Channel;
use crate::fdtable::{self, Entry};
use crate::sock::HostSock;
use shm_proto::SockCtl;

/// A socket the call operates on.
pub(crate) struct S {
    pub(crate) c: &'static Channel,
    pub(crate) slot: u32,
    pub(crate) hs: &'static HostSock,
    pub(crate) ctl: &'static SockCtl,
}

/// Looks up an offloaded socket fd.
#[inline]
pub(crate) fn lookup(fd: i32) -> Option<Result<S, i32>> {
    match fdtable::get(fd) {
        Entry::Sock(slot) => Some(sock(slot)),
        Entry::Internal => Some(Err(libc::EBADF)),
        _ => None,
    }
}

pub(crate) fn sock(slot: u32) -> Result<S, i32> {
    let c = crate::process::channel_if_attached().ok_or(libc::EBADF)?;
    let ctl = c.region.sock(slot).ok_or(libc::EBADF)?;
    let hs = c.socks.get(slot as usize).ok_or(libc::EBADF)?;
    Ok(S {
        c,
        slot,
        hs,
        // SAFETY: the channel and its mapping live for the rest of the process (leaked at attach).
        ctl: unsafe { &*(ctl as *const SockCtl) },
    })
}
