//! [`S`]: an offloaded socket as an operation holds it (the process's channel, the slot, the
//! slot's host-private [`HostSock`] and its control block in the region), found from an fd through
//! the fd table.

use crate::channel::Channel;
use crate::fdtable::{self, Entry};
use crate::sock::HostSock;
use crate::util::Guard;
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

impl S {
    /// Bytes a write may add now (`tx` is this slot's TX stream): the stream's free space less
    /// the file bytes posted by reference and not yet sent, so a stream and its references
    /// share one send budget of the stream's size (docs/channel.md, *Files by reference*).
    ///
    /// Only reads: any thread may ask (readiness for poll/epoll, a blocked writer's wait
    /// condition), without the TX lock. The tail it loads may be stale by the time it reads
    /// the head, so it must never rewind the stream (`shm_proto::Stream::writable`): see
    /// [`S::tx_room_to_write`].
    pub(crate) fn tx_room(&self, tx: &shm_proto::Stream) -> Result<u32, shm_proto::Corrupt> {
        use core::sync::atomic::Ordering;
        let free = tx.free_keeping_base(self.ctl.tx_prod.0.tail.load(Ordering::Relaxed))?;
        Ok(self.less_files(free))
    }

    /// [`S::tx_room`] for the writer, which holds the socket's TX lock (`_locked`) and so owns the
    /// tail: an empty stream is rewound, and the bytes it writes next go to ring offset 0
    /// (memory that grows with use, `shm_proto::stream`). A rewind from any other thread, with a
    /// tail a writer has since moved on from, once moved the base under published bytes: the
    /// agent's engine sent other bytes of the ring in their place (the corrupted `out_echo_4m`
    /// of 2026-12-05, whose reading thread polled while the other one wrote).
    pub(crate) fn tx_room_to_write(
        &self,
        tx: &shm_proto::Stream,
        _locked: &Guard<'_, ()>,
    ) -> Result<u32, shm_proto::Corrupt> {
        use core::sync::atomic::Ordering;
        let free = tx.writable(self.ctl.tx_prod.0.tail.load(Ordering::Relaxed))?;
        Ok(self.less_files(free))
    }

    fn less_files(&self, free: u32) -> u32 {
        use core::sync::atomic::Ordering;
        let posted = self.ctl.host.0.tx_file_posted.load(Ordering::Relaxed);
        let done = self.ctl.state.0.tx_file_done.load(Ordering::Acquire);
        let queued = posted.saturating_sub(done).min(u64::from(u32::MAX)) as u32;
        free.saturating_sub(queued)
    }
}
