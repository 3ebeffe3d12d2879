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
//! SIGBUS: touching a mapped page past the end of a file raises SIGBUS. Each window is clamped to
//! the size `fstat` reported just before mapping it, so only a truncate that lands between that
//! `fstat` and the copy (one window, at most 1 MiB) can fault; the kernel's `sendfile` would
//! return a short count there, the application here gets SIGBUS (by default it dies). Avoiding
//! that entirely would need a SIGBUS handler of our own (not ours to install in someone else's
//! process) or a lease on the file; servers that rewrite files in place should replace them by
//! `rename` instead, which is safe here as it is for nginx's own `open_file_cache`.

use crate::filemap;
use crate::ops::{send_sock, Iov, R};
use crate::sockref::lookup;

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
pub(crate) fn sendfile(out_fd: i32, in_fd: i32, offset: *mut i64, count: usize) -> R {
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
    let mut buf = [0u8; 16384];
    let mut done = 0usize;
    let mut err = None;
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
                        Some(o) => crate::real::pread(
                            in_fd,
                            buf.as_mut_ptr().cast(),
                            want.min(buf.len()),
                            o,
                        ),
                        None => {
                            crate::real::read(in_fd, buf.as_mut_ptr().cast(), want.min(buf.len()))
                        }
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
