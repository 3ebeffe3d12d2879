//! `sendfile` into an offloaded socket.
//!
//! The kernel's `sendfile` hands page-cache pages to the socket. Our socket's bytes live in the TX
//! stream in shared memory, so one copy is unavoidable; we make it the only one. A window of the
//! file (at most [`filemap::WINDOW`] bytes, never past the size `fstat` reports) is mapped read-only
//! and given to `send_sock` as a one-entry iovec, so the bytes go from the page cache straight into
//! the TX stream with every rule of `send` (blocking, `EAGAIN`, `SO_SNDTIMEO`, signals, errors) for
//! free. Windows stay mapped in a small cache (`filemap.rs`), so a call costs `fcntl` + `fstat`
//! instead of one `pread` per 16 KiB.
//!
//! ```text
//!   file (page cache) --mmap window--> send_sock(iovec) --copy_in--> TX stream --> agent
//! ```
//!
//! What cannot be mapped goes through the old bounce buffer (`pread`/`read` 16 KiB at a time): a
//! regular file whose `mmap` fails (`/proc`, some file systems, an fd not open for reading, which
//! then gets the kernel's `EBADF`) and the bytes past the size `fstat` gave (a file that grew).
//! Pipes and sockets as `in_fd` get the kernel's answer (`EINVAL`, or `ESPIPE` with an offset).
//!
//! By reference: when the agent offers it (`FEAT_FILE_REFS`, its backend sends from the file
//! itself), a regular file's bytes are not copied at all. The file is opened with the agent once
//! (`fileref.rs`), and each piece of at least [`MIN_TX_FILE`] bytes becomes an `OP_TX_FILE`
//! command that names its place in the TX stream; pieces below that (a nearly full send budget,
//! the file's last bytes) are copied. The rules of `send` still apply, with the references
//! counted in the send budget ([`S::tx_room`]). What the application may rely on is what Linux's
//! `sendfile` gives it: the bytes of the file as they are when the agent sends them (a write to
//! the file after `sendfile` returned may or may not be seen by the peer, as with page-cache
//! pages on Linux); a file truncated before its bytes went resets the connection (one log line),
//! where Linux would send what its pages held.
//!
//! SIGBUS: touching a mapped page past the end of a file raises SIGBUS. Each window is clamped to
//! the size `fstat` reported just before mapping it, so only a truncate that lands between that
//! `fstat` and the copy (one window, at most 1 MiB) can fault; the kernel's `sendfile` would
//! return a short count there, the application here gets SIGBUS (by default it dies). Avoiding
//! that entirely would need a SIGBUS handler of our own (not ours to install in someone else's
//! process) or a lease on the file; servers that rewrite files in place should replace them by
//! `rename` instead, which is safe here as it is for nginx's own `open_file_cache`.

use core::sync::atomic::Ordering;

use shm_proto::{Request, MIN_TX_FILE};

use crate::filemap;
use crate::ops::{send_sock, send_with, Iov, R};
use crate::sockref::{lookup, S};

fn errno() -> i32 {
    // SAFETY: errno location of this thread.
    unsafe { *libc::__errno_location() }
}

/// `fstat` of `fd`, or the errno.
fn stat(fd: i32) -> Result<libc::stat, i32> {
    // SAFETY: fstat fills a zeroed stat buffer we own.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(errno());
    }
    Ok(st)
}

/// `sendfile` into an offloaded socket (see the module doc).
pub(crate) fn sendfile(out_fd: i32, in_fd: i32, offset: *mut i64, mut count: usize) -> R {
    let s = match lookup(out_fd) {
        None => return R::Pass,
        Some(Err(e)) => return R::Err(e),
        Some(Ok(s)) => s,
    };
    // The kernel's first check: in_fd open for reading (a cached window must not bypass it).
    // SAFETY: F_GETFL reads the fd's flags.
    let fl = unsafe { libc::fcntl(in_fd, libc::F_GETFL) };
    if fl < 0 {
        return R::Err(errno());
    }
    if fl & libc::O_PATH != 0 || fl & libc::O_ACCMODE == libc::O_WRONLY {
        return R::Err(libc::EBADF);
    }
    let st = match stat(in_fd) {
        Ok(st) => st,
        Err(e) => return R::Err(e),
    };
    let fmt = st.st_mode & libc::S_IFMT;
    if fmt == libc::S_IFIFO || fmt == libc::S_IFSOCK {
        // The kernel wants a source it can splice from at an offset.
        return R::Err(if offset.is_null() {
            libc::EINVAL
        } else {
            libc::ESPIPE
        });
    }
    // Where to read: the caller's offset, or the file position (put back at the end, as a read
    // would have moved it). Character devices and the like have no position worth asking: read().
    let start = if !offset.is_null() {
        // SAFETY: non-null application pointer.
        Some(unsafe { *offset })
    } else if fmt == libc::S_IFREG {
        // SAFETY: lseek on the application's fd.
        let p = unsafe { libc::lseek(in_fd, 0, libc::SEEK_CUR) };
        (p >= 0).then_some(p)
    } else {
        None
    };
    if start.is_some_and(|p| p < 0) {
        return R::Err(libc::EINVAL);
    }
    let mut mappable = fmt == libc::S_IFREG;
    let mut size = st.st_size;
    // Not zeroed: only the bytes a read wrote are ever looked at (a memset per call was 2 % of a
    // file server's CPU).
    let mut buf = core::mem::MaybeUninit::<[u8; 16384]>::uninit();
    let cap = 16384;
    let mut done = 0usize;
    let mut err = None;
    if let Some(p) = start.filter(|_| fmt == libc::S_IFREG && s.c.file_refs()) {
        let avail = count.min(size.saturating_sub(p).max(0) as usize);
        if avail >= MIN_TX_FILE as usize {
            if let Some(id) = s.c.file_id(in_fd, &st) {
                match by_reference(&s, in_fd, id, p, avail) {
                    R::Ok(n) => done = n as usize,
                    R::Err(e) => err = Some(e),
                    R::Pass => {}
                }
                if done < avail {
                    // Short (non-blocking, an error, a signal): as send would return.
                    count = done;
                }
            }
        }
    }
    while done < count {
        let at = start.map(|p| p + done as i64);
        let want = count - done;
        // Map the next window when we can; else read a bounce buffer's worth.
        let mut map = None;
        if let (Some(at), true) = (at, mappable) {
            // A fresh size for every window after the first keeps the SIGBUS risk to one window.
            if done > 0 {
                size = stat(in_fd).map(|st| st.st_size).unwrap_or(0);
            }
            let len = want.min(size.saturating_sub(at).max(0) as usize);
            map = if len > 0 {
                filemap::view(in_fd, &st, size, at, len)
            } else {
                None
            };
            // Past the size we saw, or unmappable: the bounce buffer reads the rest (and finds EOF).
            mappable = map.is_some();
        }
        let v = match &map {
            Some(m) => m.iovec(),
            None => {
                // SAFETY: reading into our stack buffer.
                let r = unsafe {
                    match at {
                        Some(o) => {
                            crate::real::pread(in_fd, buf.as_mut_ptr().cast(), want.min(cap), o)
                        }
                        None => crate::real::read(in_fd, buf.as_mut_ptr().cast(), want.min(cap)),
                    }
                };
                if r < 0 {
                    err = Some(errno());
                    break;
                }
                if r == 0 {
                    break;
                }
                libc::iovec {
                    iov_base: buf.as_mut_ptr().cast(),
                    iov_len: r as usize,
                }
            }
        };
        let n = v.iov_len;
        // No MSG_NOSIGNAL: sendfile raises SIGPIPE on EPIPE as send does (when nothing went).
        let w = match send_sock(&s, &Iov { v: &[v] }, 0) {
            R::Ok(w) => w as usize,
            R::Err(e) => {
                err = Some(e);
                0
            }
            R::Pass => 0,
        };
        if at.is_none() && w < n {
            // Unread what read() took but the socket did not, as the kernel would not have
            // consumed it (works for seekable devices; a stream loses it, as before).
            // SAFETY: lseek on the application's fd.
            unsafe { libc::lseek(in_fd, -((n - w) as i64), libc::SEEK_CUR) };
        }
        done += w;
        if err.is_some() || w < n {
            break;
        }
    }
    if let Some(p) = start {
        if !offset.is_null() {
            // SAFETY: non-null application pointer.
            unsafe { *offset = p + done as i64 };
        } else if done > 0 {
            // SAFETY: lseek on the application's fd.
            unsafe { libc::lseek(in_fd, p + done as i64, libc::SEEK_SET) };
        }
    }
    match err {
        Some(e) if done == 0 => R::Err(e),
        _ => R::Ok(done as isize),
    }
}

/// Sends `len` bytes of `in_fd` from `at` as references to the agent's file `id` (see the module
/// doc); pieces under [`MIN_TX_FILE`] are read into the stream instead.
fn by_reference(s: &S, in_fd: i32, id: u32, at: i64, len: usize) -> R {
    let mut bounce = core::mem::MaybeUninit::<[u8; MIN_TX_FILE as usize]>::uninit();
    send_with(s, len, 0, |tx, tail, sent, room| {
        let off = at + sent as i64;
        if room >= MIN_TX_FILE as usize {
            // The count before the command: an agent that sees it ahead of the references it
            // took waits for the command instead of sending later bytes first (sock.rs).
            let posted = &s.ctl.host.0.tx_file_posted;
            posted.store(
                posted.load(Ordering::Relaxed) + room as u64,
                Ordering::Release,
            );
            s.c.post(
                s.slot,
                Request::TxFile {
                    id,
                    offset: off as u64,
                    len: room as u64,
                    at: tail,
                },
            )?;
            return Ok((room, false));
        }
        // SAFETY: reading into our own buffer of at least `room` bytes.
        let r = unsafe { crate::real::pread(in_fd, bounce.as_mut_ptr().cast(), room, off) };
        if r < 0 {
            return Err(errno());
        }
        let k = r as usize;
        if k == 0 {
            return Err(0);
        }
        // SAFETY: pread wrote the first `k` bytes.
        let got = unsafe { core::slice::from_raw_parts(bounce.as_ptr().cast::<u8>(), k) };
        tx.copy_in(tail, got);
        tx.publish_tail(tail.wrapping_add(k as u32));
        Ok((k, true))
    })
}
