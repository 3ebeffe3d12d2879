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
    /// Results of the last burst, by message index.
    results: Vec<i32>,
}

/// What one burst did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Burst {
    /// Messages the kernel took.
    pub sent: usize,
    /// Messages refused because the device was full (`EAGAIN`/`ENOBUFS`).
    pub full: usize,
    /// The first other error, if any (its message is lost, as a frame dropped on a wire).
    pub error: Option<i32>,
}

impl TxUring {
    /// A ring for bursts of up to [`MAX_BURST`] messages; an error when io_uring is not
    /// available here (disabled by `kernel.io_uring_disabled`, or a seccomp filter).
    pub fn new() -> io::Result<TxUring> {
        Ok(TxUring {
            ring: IoUring::new(MAX_BURST as u32)?,
            results: vec![0; MAX_BURST],
        })
    }

    /// Sends `msgs` on `fd` (at most [`MAX_BURST`]) and waits for every completion. Messages
    /// after a refused one are still attempted: the order the wire sees is the order of the
    /// messages that were taken.
    ///
    /// # Safety
    /// Every header in `msgs`, and the memory it points to, must be valid for reads for the
    /// duration of the call.
    pub unsafe fn send(&mut self, fd: RawFd, msgs: &[libc::msghdr]) -> io::Result<Burst> {
        let k = msgs.len().min(MAX_BURST);
        {
            let mut sq = self.ring.submission();
            for (i, m) in msgs[..k].iter().enumerate() {
                let e = opcode::SendMsg::new(types::Fd(fd), m)
                    .flags(libc::MSG_DONTWAIT as u32)
                    .build()
                    .user_data(i as u64);
                // SAFETY: the entry points to `msgs[i]`, which the caller keeps valid until this
                // call returns, and this call waits for all k completions before it returns.
                if unsafe { sq.push(&e) }.is_err() {
                    // Cannot happen: the ring has MAX_BURST entries and each call drains it.
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
