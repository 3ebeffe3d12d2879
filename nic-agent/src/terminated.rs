//! The socket pumps of a connection whose TLS the agent terminates (`--tls-port`,
//! `tls::terminate`): the backend carries TLS records, the host program's streams plain bytes.
//!
//! ```text
//!   RX: backend recv ─► scratch ─► Session::feed ─► Session::read_plain ─► RX stream
//!   TX: TX stream (and files by reference) ─► Session::write_plain ─► Session::write_tls ─► send
//! ```
//!
//! RX feeds the session at most as much ciphertext as the RX stream has room for (plaintext is
//! never longer than its record), so a slow reader stops the agent's reading and closes the
//! peer's window, as for plain bytes. TX takes bytes from the stream while the session's
//! outgoing buffer has room (`terminate::SEND_LIMIT`); the stream's head moves when the session
//! took them. Urgent data has no meaning inside TLS: marks are dropped and the byte goes as data.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use crate::backend::{Backend, IoBuf};
use crate::channel::Channel;
use crate::session::Violation;
use crate::sock::{Bind, Binding, Kind, Outcome, Sock};
use crate::tls::terminate::{self, Plain, Session};

/// Ciphertext read per receive, and plaintext moved per step.
const CHUNK: usize = 16 * 1024;

/// `io::Write` over the backend's send, for `Session::write_tls`.
struct SendTo<'a, B: Backend> {
    b: &'a mut B,
    os: &'a B::Sock,
}

impl<B: Backend> io::Write for SendTo<'_, B> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let iov = [IoBuf {
            iov_base: buf.as_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        }];
        // SAFETY: `buf` is readable for the call; the backend only reads it.
        unsafe { self.b.send(self.os, &iov) }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes the session's waiting ciphertext to the backend until it would block. `Ok(true)` when
/// none is left.
pub fn flush<B: Backend>(b: &mut B, os: &B::Sock, t: &mut Session) -> io::Result<bool> {
    while t.wants_write() {
        match t.write_tls(&mut SendTo { b, os }) {
            Ok(0) => return Ok(false),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// `sock::pump_rx` for a terminated connection.
pub fn pump_rx<B: Backend>(
    b: &mut B,
    s: &mut Sock<B::Sock>,
    chan: &mut Channel,
    slot: u32,
    rx_tail: &mut u32,
) -> Result<Outcome, Violation> {
    let region = *chan.region();
    let (Some(rx), Some(ctl)) = (region.rx(slot), region.sock(slot)) else {
        return Err(Violation::SlotOutOfRange {
            slot,
            max: region.geometry().max_sockets,
        });
    };
    let mut out = Outcome::default();
    let from_os = s.kind == Kind::Connected && !s.io_dead && !s.rx_done;
    let Some(t) = s.tls.as_mut() else {
        return Ok(out);
    };
    let start = *rx_tail;
    // Plaintext taken back from another reader (a handoff withdrawn, OP_RX_CLAIM) goes first.
    while !s.stash.is_empty() {
        let free = rx.writable(*rx_tail)?;
        if free == 0 {
            break;
        }
        let n = s.stash.len().min(free as usize);
        rx.copy_in(*rx_tail, &s.stash[..n]);
        s.stash.drain(..n);
        *rx_tail = rx_tail.wrapping_add(n as u32);
    }
    let mut buf = [0u8; CHUNK];
    let mut eof = false;
    loop {
        if !s.stash.is_empty() {
            break;
        }
        // Plaintext first, into whatever room the stream has.
        let mut free = rx.writable(*rx_tail)?;
        if free == 0 {
            shm_proto::wake::rx_block(&ctl.rx_head.0.blocked);
            free = rx.writable(*rx_tail)?;
            if free == 0 {
                break;
            }
            shm_proto::wake::rx_unblock(&ctl.rx_head.0.blocked);
        }
        let want = (free as usize).min(CHUNK);
        match t.read_plain(&mut buf[..want]) {
            Plain::Bytes(n) => {
                rx.copy_in(*rx_tail, &buf[..n]);
                *rx_tail = rx_tail.wrapping_add(n as u32);
                continue;
            }
            Plain::End => {
                tracing::debug!(slot, eof, "TLS: end of the peer's stream");
                out.done = true;
                break;
            }
            Plain::Empty => {}
        }
        if !from_os || eof {
            break;
        }
        // More ciphertext: no more than the stream could take as plaintext.
        let iov = [IoBuf {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: want,
        }];
        // SAFETY: `buf` is a live local array; the backend writes at most `want` bytes into it.
        let r = unsafe { b.recv(&s.os, &iov) };
        let got = match r {
            Ok(k) => k.min(want),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!(slot, "TLS: receive: {e}");
                out.err = Some(e.raw_os_error().unwrap_or(libc::EIO));
                break;
            }
        };
        eof = got == 0;
        if let Err(e) = t.feed(&buf[..got]) {
            tracing::debug!(slot, "TLS from the peer: {e}");
            out.err = Some(terminate::errno_of(&e));
            out.tls_failed = true;
            // The alert goes out before the connection is failed.
            let _ = flush(b, &s.os, t);
            break;
        }
    }
    out.tls_handshake = t.handshake_done();
    // Handshake messages, alerts, and records the session sealed meanwhile.
    if !s.io_dead {
        if let Err(e) = flush(b, &s.os, t) {
            out.err.get_or_insert(e.raw_os_error().unwrap_or(libc::EIO));
        }
    }
    crate::sock::finish_rx(chan, &rx, slot, start, *rx_tail);
    Ok(out)
}

/// `sock::pump_tx` for a terminated connection. `done`: the stream is empty, no file reference
/// waits and every record went to the backend.
pub fn pump_tx<B: Backend>(
    b: &mut B,
    s: &mut Sock<B::Sock>,
    chan: &mut Channel,
    by: Bind,
    bd: &mut Binding,
) -> Result<Outcome, Violation> {
    let slot = by.slot;
    let region = *chan.region();
    let (Some(tx), Some(ctl)) = (region.tx(slot), region.sock(slot)) else {
        return Err(Violation::SlotOutOfRange {
            slot,
            max: region.geometry().max_sockets,
        });
    };
    let mut out = Outcome::default();
    let Some(t) = s.tls.as_mut() else {
        return Ok(out);
    };
    // Urgent marks mean nothing inside TLS: the byte goes as data.
    bd.urgent.clear();
    bd.urg_taken = ctl.host.0.tx_urg_posted.load(Ordering::Acquire);
    let start = bd.tx_head;
    let file_start = bd.file_done;
    let mut buf = [0u8; CHUNK];
    loop {
        match flush(b, &s.os, t) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                out.err = Some(e.raw_os_error().unwrap_or(libc::EIO));
                out.done = true;
                break;
            }
        }
        let tail = tx.load_tail();
        let used = tx.used(bd.tx_head, tail)?;
        let posted = ctl.host.0.tx_file_posted.load(Ordering::Acquire);
        // Bytes before the next file reference (none while one is on its way: its place is
        // not known yet, as on the copy path).
        let limit = crate::sock::file_limit(bd, used, posted)?;
        let took = if limit > 0 {
            let n = (limit as usize).min(CHUNK);
            tx.copy_out(bd.tx_head, &mut buf[..n]);
            let k = t.write_plain(&buf[..n]);
            bd.tx_head = bd.tx_head.wrapping_add(k as u32);
            k
        } else if let Some(f) = bd.files.front_mut() {
            let n = usize::try_from(f.left).unwrap_or(usize::MAX).min(CHUNK);
            // SAFETY: `buf` is a live local array of at least `n` bytes.
            let r = unsafe {
                libc::pread(
                    f.file.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    n,
                    f.offset as libc::off_t,
                )
            };
            if r <= 0 {
                // The file ended early (or cannot be read): the byte sequence cannot be
                // completed, as on the copy path.
                tracing::warn!(
                    slot,
                    "file sent by reference unreadable; resetting the connection"
                );
                out.err = Some(libc::EIO);
                out.done = true;
                break;
            }
            let k = t.write_plain(&buf[..r as usize]);
            f.offset += k as u64;
            f.left -= k as u64;
            bd.file_done += k as u64;
            if f.left == 0 {
                bd.files.pop_front();
            }
            k
        } else {
            out.done = used == 0 && posted == bd.file_taken && !t.wants_write();
            break;
        };
        if took == 0 && !t.wants_write() {
            // The session's buffer is full and nothing is left to write: cannot happen (a
            // full buffer is sealed records waiting); stop rather than spin.
            break;
        }
    }
    crate::sock::finish_tx(chan, &tx, ctl, slot, bd, (start, file_start), false);
    Ok(out)
}
