//! kTLS TX served by the agent (docs/tls.md): the TX pump of a socket whose host program
//! handed its record keys to the socket (`setsockopt(SOL_TLS, TLS_TX, ..)`), as Linux's
//! `tls_sw_sendmsg` would seal them.
//!
//! ```text
//!   TX stream (and files by reference) ─► one record per ≤ 2^14 bytes ─► Sealer::seal_in_place
//!        │  record-type marks (OP_TX_RECTYPE): that range, that type           │
//!        ▼                                                                    ▼
//!   tx_head moves when the bytes were sealed          ciphertext buffer (≤ OUT_CAP) ─► send
//! ```
//!
//! Bytes the host published before the keys arrived went out (or go out) as they are: the
//! `setsockopt` records the stream's tail then (`Binding::ktls_plain`), and the pump copies what
//! comes before it without sealing. The loan of the TX stream to the native engine ends when the
//! keys arrive: a record is sealed exactly once, so TCP keeps ciphertext for retransmissions.
//! Urgent data has no meaning on a kTLS socket (the host refuses `MSG_OOB`, as Linux does).

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use crate::backend::{Backend, IoBuf};
use crate::channel::Channel;
use crate::session::Violation;
use crate::sock::{Bind, Binding, Outcome, Sock};
use crate::tls::record::{content_type, MAX_PLAINTEXT};
use crate::tls::Ktls;

/// Ciphertext kept per socket before the agent stops sealing (plus the one record that crossed
/// it): the stream's head, and so the host's send budget, stays behind what the backend took.
pub const OUT_CAP: usize = 64 * 1024;

/// Record-type marks a binding may hold (each covers at least one byte; OpenSSL has at most a
/// few in flight).
pub const MAX_REC_MARKS: usize = 1024;

/// A range of a binding's TX stream that forms records of one content type
/// (`OP_TX_RECTYPE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecMark {
    pub from: u32,
    pub to: u32,
    pub ty: u8,
}

/// The kTLS state of one socket: its options and keys, and the records not yet sent.
#[derive(Debug, Default)]
pub struct KtlsSock {
    pub opts: Ktls,
    /// Sealed records (and plaintext from before the keys) the backend has not taken yet.
    out: Vec<u8>,
    /// Of `out`: sent already.
    sent: usize,
    /// Per binding: its record-type marks and where its plain bytes end. (Here, not in the
    /// `Binding`: rare, and bindings stay small.)
    binds: Vec<(Bind, KtlsBinding)>,
    /// Once `TLS_RX` is set: the records received and not yet all in the reader's stream
    /// (ktls_rx.rs).
    pub rx: Option<Box<crate::ktls_rx::RxPump>>,
    /// Records this socket's TX sealed, and their plaintext bytes (`stats --sockets`).
    pub tx_records: u64,
    pub tx_bytes: u64,
}

/// `io::Write`-free send of one buffer to the backend.
fn send_buf<B: Backend>(b: &mut B, os: &B::Sock, buf: &[u8]) -> io::Result<usize> {
    let iov = [IoBuf {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    }];
    // SAFETY: `buf` is readable for the call; the backend only reads it.
    unsafe { b.send(os, &iov) }
}

impl KtlsSock {
    pub fn new(opts: Ktls) -> Self {
        KtlsSock {
            opts,
            out: Vec::new(),
            sent: 0,
            binds: Vec::new(),
            rx: None,
            tx_records: 0,
            tx_bytes: 0,
        }
    }

    /// `TLS_RX` is set: the RX pump opens records (ktls_rx.rs).
    pub fn rx_on(&self) -> bool {
        self.rx.is_some()
    }

    /// The opener and the RX pump, once `TLS_RX` is set.
    pub fn rx_parts(&mut self) -> Option<(&mut crate::tls::Opener, &mut crate::ktls_rx::RxPump)> {
        let o = self.opts.opener()?;
        let p = self.rx.as_deref_mut()?;
        Some((o, p))
    }

    /// Binding `by`'s state (a fresh one if it has none).
    pub fn bind_mut(&mut self, by: Bind) -> &mut KtlsBinding {
        let i = match self.binds.iter().position(|(b, _)| *b == by) {
            Some(i) => i,
            None => {
                self.binds.push((by, KtlsBinding::default()));
                self.binds.len() - 1
            }
        };
        &mut self.binds[i].1
    }

    /// Forgets binding `by` (its slot was freed).
    pub fn unbind(&mut self, by: Bind) {
        self.binds.retain(|(b, _)| *b != by);
    }

    /// `TLS_TX` is set: the TX pump seals.
    pub fn tx_on(&self) -> bool {
        self.opts.has_tx()
    }

    /// Bytes sealed (or copied) and not yet taken by the backend.
    pub fn pending(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Writes the waiting bytes to the backend until it would block. `Ok(true)` when none is
    /// left.
    pub fn flush<B: Backend>(&mut self, b: &mut B, os: &B::Sock) -> io::Result<bool> {
        while self.sent < self.out.len() {
            match send_buf(b, os, &self.out[self.sent..]) {
                Ok(0) => return Ok(false),
                Ok(k) => self.sent += k.min(self.out.len() - self.sent),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.sent = 0;
        Ok(true)
    }

    /// Seals `n` plaintext bytes that `fill` writes into the record as one record of type
    /// `ty` at the end of `out`. `Err(errno)` leaves `out` as it was.
    fn seal_with(
        &mut self,
        ty: u8,
        n: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<(), i32>,
    ) -> Result<(), i32> {
        let Some(sealer) = self.opts.sealer() else {
            return Err(libc::EIO);
        };
        let lay = sealer.layout();
        let at = self.out.len();
        self.out.resize(at + lay.record_len(n), 0);
        let pre = at + lay.prefix_len();
        let r = fill(&mut self.out[pre..pre + n])
            .and_then(|()| sealer.seal_in_place(ty, &mut self.out[at..], n));
        match r {
            Ok(len) => {
                self.out.truncate(at + len);
                Ok(())
            }
            Err(e) => {
                self.out.truncate(at);
                Err(e)
            }
        }
    }
}

/// What one pass of [`fill`] did.
enum Fill {
    /// The buffer reached [`OUT_CAP`]: send, then fill again.
    Full,
    /// Nothing more to take now; `done`: the binding's TX is empty.
    Idle { done: bool },
    /// The connection cannot go on (sequence numbers exhausted, a file that ended early).
    Failed(i32),
}

/// Counts of what [`fill`] sealed.
#[derive(Default)]
struct Sealed {
    records: u64,
    plain: u64,
}

/// Seals binding `bd`'s TX bytes into `k`'s buffer until it holds [`OUT_CAP`] bytes or nothing
/// is left to take.
fn fill(
    k: &mut KtlsSock,
    kb: &mut KtlsBinding,
    bd: &mut Binding,
    tx: &shm_proto::Stream,
    host: &shm_proto::SockHost,
    slot: u32,
    sealed: &mut Sealed,
) -> Result<Fill, Violation> {
    while k.out.len() < OUT_CAP {
        // The tail before the posted counts (their wake order: the host raises a count before
        // it publishes the bytes it concerns).
        let tail = tx.load_tail();
        let used = tx.used(bd.tx_head, tail)?;
        let file_posted = host.tx_file_posted.load(Ordering::Acquire);
        let rec_posted = host.tx_rec_posted.load(Ordering::Acquire);
        if let Some(p) = kb.plain {
            // Published before the keys: sent as they are.
            let before = p.wrapping_sub(bd.tx_head);
            if before > used {
                return Err(Violation::Corrupt(
                    "tx_tail moved back before the kTLS keys",
                ));
            }
            if before == 0 {
                kb.plain = None;
                continue;
            }
            let n = (before as usize).min(OUT_CAP - k.out.len());
            let at = k.out.len();
            k.out.resize(at + n, 0);
            tx.copy_out(bd.tx_head, &mut k.out[at..]);
            bd.tx_head = bd.tx_head.wrapping_add(n as u32);
            continue;
        }
        // Stream bytes before the next file reference (none while one is on its way).
        let file_limit = crate::sock::file_limit(bd, used, file_posted)?;
        // The content type of the bytes at the head, and how far it goes: application data up
        // to the next mark (none while a mark is on its way), the mark's range at its start.
        let (ty, rec_limit) = match kb.recs.front() {
            Some(m) => {
                let before = m.from.wrapping_sub(bd.tx_head);
                let end = m.to.wrapping_sub(bd.tx_head);
                if end > used || before >= end {
                    return Err(Violation::Corrupt("record-type mark past the TX tail"));
                }
                if before == 0 {
                    (m.ty, end)
                } else {
                    (content_type::APPLICATION_DATA, before)
                }
            }
            None if rec_posted != kb.rec_taken => (content_type::APPLICATION_DATA, 0),
            None => (content_type::APPLICATION_DATA, used),
        };
        let limit = file_limit.min(rec_limit);
        if limit > 0 {
            let n = (limit as usize).min(MAX_PLAINTEXT);
            let head = bd.tx_head;
            if let Err(e) = k.seal_with(ty, n, |p| {
                tx.copy_out(head, p);
                Ok(())
            }) {
                return Ok(Fill::Failed(e));
            }
            bd.tx_head = bd.tx_head.wrapping_add(n as u32);
            if kb.recs.front().is_some_and(|m| m.to == bd.tx_head) {
                kb.recs.pop_front();
            }
            sealed.records += 1;
            sealed.plain += n as u64;
            continue;
        }
        // A file whose place is here: its bytes are application data.
        let Some(f) = bd.files.front_mut().filter(|f| f.at == bd.tx_head) else {
            let done = used == 0
                && bd.files.is_empty()
                && file_posted == bd.file_taken
                && rec_posted == kb.rec_taken;
            return Ok(Fill::Idle { done });
        };
        let n = usize::try_from(f.left)
            .unwrap_or(usize::MAX)
            .min(MAX_PLAINTEXT);
        let (fd, offset) = (f.file.as_raw_fd(), f.offset);
        let r = k.seal_with(content_type::APPLICATION_DATA, n, |p| {
            let mut got = 0;
            while got < p.len() {
                let rest = &mut p[got..];
                // SAFETY: `rest` is a live, exclusively borrowed buffer of `rest.len()` bytes.
                let r = unsafe {
                    libc::pread(
                        fd,
                        rest.as_mut_ptr().cast(),
                        rest.len(),
                        (offset + got as u64) as libc::off_t,
                    )
                };
                match r {
                    r if r > 0 => got += r as usize,
                    0 => return Err(libc::EIO),
                    _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                    _ => return Err(libc::EIO),
                }
            }
            Ok(())
        });
        if let Err(e) = r {
            if e == libc::EIO {
                // The file ended early (or cannot be read): the byte sequence cannot be
                // completed, as on the copy path.
                tracing::warn!(
                    slot,
                    "file sent by reference unreadable; resetting the connection"
                );
            }
            return Ok(Fill::Failed(e));
        }
        f.offset += n as u64;
        f.left -= n as u64;
        bd.file_done += n as u64;
        if f.left == 0 {
            bd.files.pop_front();
        }
        sealed.records += 1;
        sealed.plain += n as u64;
    }
    Ok(Fill::Full)
}

/// `sock::pump_tx` for a socket with kTLS TX on. `done`: the stream is empty, no file
/// reference or record-type mark waits and every record went to the backend.
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
    if let Some(lent) = bd.tx_lent.take() {
        // Lent before the keys came (setsockopt ends the loan; this is the other binding's
        // or a race's): records are built from the stream here from now on.
        b.reclaim_tx(&s.os);
        s.lend_by = None;
        bd.tx_head = lent;
        tx.publish_head(lent);
        chan.dirty(slot);
    }
    // Urgent marks mean nothing inside TLS (the host refuses MSG_OOB): forgotten.
    bd.urgent.clear();
    bd.urg_taken = ctl.host.0.tx_urg_posted.load(Ordering::Acquire);
    let mut out = Outcome::default();
    let Sock { os, ktls, .. } = s;
    let Some(k) = ktls.as_deref_mut() else {
        return Ok(out);
    };
    let start = bd.tx_head;
    let file_start = bd.file_done;
    let mut sealed = Sealed::default();
    loop {
        match k.flush(b, os) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                out.err = Some(e.raw_os_error().unwrap_or(libc::EIO));
                out.done = true;
                break;
            }
        }
        let mut kb = std::mem::take(k.bind_mut(by));
        let r = fill(k, &mut kb, bd, &tx, &ctl.host.0, slot, &mut sealed);
        *k.bind_mut(by) = kb;
        match r? {
            Fill::Full => {}
            Fill::Idle { done } => {
                if k.pending() > 0 {
                    continue;
                }
                out.done = done;
                break;
            }
            Fill::Failed(e) => {
                tracing::debug!(slot, errno = e, "kTLS TX: connection failed");
                out.err = Some(e);
                out.done = true;
                break;
            }
        }
    }
    k.tx_records += sealed.records;
    k.tx_bytes += sealed.plain;
    chan.counters.tls_tx_records += sealed.records;
    chan.counters.tls_tx_bytes += sealed.plain;
    crate::sock::finish_tx(chan, &tx, ctl, slot, bd, (start, file_start), false);
    Ok(out)
}

/// A binding's kTLS TX state.
#[derive(Debug, Default)]
pub struct KtlsBinding {
    /// Record-type marks (`OP_TX_RECTYPE`) taken and not yet sealed, in order.
    pub recs: VecDeque<RecMark>,
    /// Marks taken (compared with the host's `tx_rec_posted`, as `Binding::file_taken`).
    pub rec_taken: u32,
    /// The TX stream's tail when the keys arrived: the bytes before it go unsealed.
    pub plain: Option<u32>,
}
