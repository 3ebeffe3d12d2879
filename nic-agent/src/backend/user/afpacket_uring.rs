//! af_packet transmission of a burst in one io_uring submission.
//!
//! Why not `sendmmsg`: the kernel calls `cond_resched()` between the messages of one
//! `sendmmsg`, and each frame put on a veth wakes the peer's NAPI thread, which then preempts the
//! agent at the next message: a burst of 20 frames cost the agent about 7 context switches (half
//! its CPU per request under load, in `perf`). The same `sendmsg` operations submitted as one
//! batch of io_uring requests run back to back inside `io_uring_enter`, so the agent gives the
//! CPU up at most once per burst, when the syscall returns.
//!
//! Each request carries `MSG_DONTWAIT`, so a full device completes it at once with `EAGAIN`
//! instead of parking it in the kernel; the call waits for every completion before it returns,
//! so the message headers and buffers it points to are never used after it.

use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, types, IoUring};

/// Requests per submission (the ring is sized for one burst).
pub const MAX_BURST: usize = 64;

pub struct TxUring {
    ring: IoUring,
    /// The socket is registered with the ring (`IORING_REGISTER_FILES`, slot 0): requests name
    /// it by index, which spares the kernel a file-table lookup and reference per frame.
    fixed: Option<RawFd>,
    /// Completion result per request of the burst being sent.
    results: Vec<i32>,
}

/// One frame of a burst: a contiguous buffer (`IORING_OP_SEND`: no message header to copy
/// and no iovec array to import), or a message of several parts (`IORING_OP_SENDMSG`).
#[derive(Clone, Copy, Debug)]
pub enum TxReq {
    Buf(*const u8, usize),
    Msg(*const libc::msghdr),
}

/// What a burst came to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Burst {
    /// Requests the kernel took.
    pub sent: usize,
    /// Requests refused with `EAGAIN`/`ENOBUFS` (a full device).
    pub full: usize,
    /// The first other error (an errno).
    pub error: Option<i32>,
}

impl TxUring {
    /// A ring deep enough for one burst, with `fd` registered when the kernel allows it.
    /// Single-issuer and cooperative task running where the kernel has them (only the agent's
    /// thread submits, and sends on a non-blocking packet socket complete inline).
    pub fn new(fd: RawFd) -> io::Result<TxUring> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .build(MAX_BURST as u32)
            .or_else(|_| IoUring::new(MAX_BURST as u32))?;
        let fixed = ring.submitter().register_files(&[fd]).ok().map(|_| fd);
        Ok(TxUring {
            ring,
            fixed,
            results: vec![0; MAX_BURST],
        })
    }

    /// Submits up to [`MAX_BURST`] requests on `fd` as one batch and waits for all of them.
    ///
    /// # Safety
    /// Every buffer, message header and what it points to must stay valid and unchanged until
    /// the call returns (it does not return before the kernel is done with them).
    pub unsafe fn send(&mut self, fd: RawFd, reqs: &[TxReq]) -> io::Result<Burst> {
        let k = reqs.len().min(MAX_BURST);
        let fixed = self.fixed == Some(fd);
        {
            let mut sq = self.ring.submission();
            for (i, r) in reqs[..k].iter().enumerate() {
                let e = match (*r, fixed) {
                    (TxReq::Buf(p, n), true) => opcode::Send::new(types::Fixed(0), p, n as u32)
                        .flags(libc::MSG_DONTWAIT)
                        .build(),
                    (TxReq::Buf(p, n), false) => opcode::Send::new(types::Fd(fd), p, n as u32)
                        .flags(libc::MSG_DONTWAIT)
                        .build(),
                    (TxReq::Msg(m), true) => opcode::SendMsg::new(types::Fixed(0), m)
                        .flags(libc::MSG_DONTWAIT as u32)
                        .build(),
                    (TxReq::Msg(m), false) => opcode::SendMsg::new(types::Fd(fd), m)
                        .flags(libc::MSG_DONTWAIT as u32)
                        .build(),
                };
                // SAFETY: the caller keeps what the request points to alive until we return,
                // and we wait for every completion before returning.
                if unsafe { sq.push(&e.user_data(i as u64)) }.is_err() {
                    // Cannot happen: the ring holds MAX_BURST entries and is drained below.
                    return Err(io::Error::from_raw_os_error(libc::EBUSY));
                }
            }
        }
        let mut done = 0;
        let mut burst = Burst::default();
        let mut submitted = false;
        while done < k {
            let r = if submitted {
                self.ring.submitter().submit_and_wait(k - done)
            } else {
                self.ring.submit_and_wait(k)
            };
            match r {
                Ok(_) => submitted = true,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {
                    // Entries already consumed by the kernel stay consumed; waiting again
                    // submits nothing new.
                    submitted = true;
                    continue;
                }
                Err(e) if !submitted => return Err(e),
                Err(e) => {
                    // Submitted but cannot wait: the buffers must outlive the requests, so
                    // block until they complete (never returns with requests in flight).
                    tracing::warn!("af_packet io_uring wait: {e}");
                    continue;
                }
            }
            for c in self.ring.completion() {
                if let Some(slot) = self.results.get_mut(c.user_data() as usize) {
                    *slot = c.result();
                    done += 1;
                }
            }
        }
        for &r in &self.results[..k] {
            match r {
                r if r >= 0 => burst.sent += 1,
                r if r == -libc::EAGAIN || r == -libc::ENOBUFS => burst.full += 1,
                r => {
                    burst.error.get_or_insert(-r);
                }
            }
        }
        Ok(burst)
    }
}
