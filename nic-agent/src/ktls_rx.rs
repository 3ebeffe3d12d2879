//! kTLS RX served by the agent (docs/tls.md): the RX pump of a socket whose host program handed
//! its receive keys to the socket (`setsockopt(SOL_TLS, TLS_RX, ..)`), as Linux's `tls_sw`
//! receive path would open its records.
//!
//! ```text
//!   backend recv ─► ciphertext buffer (≤ IN_CAP) ─► Opener::peek / open_in_place
//!                                                         │ (type, plaintext in place)
//!        application data ─► RX stream as bytes           │
//!        other types ─► alone in an empty RX stream, `SockState::tls_rx` = Control(type)
//!        a record that fails ─► after the plaintext before it: `tls_rx` = Error(errno)
//! ```
//!
//! [`RxPump`] is the sans-IO core: ciphertext in ([`RxPump::feed`], or received straight into
//! its buffer), plaintext out through an [`RxSink`] (the RX stream and its `tls_rx` word; a
//! fake in the tests). [`pump_rx`] is `sock::pump_rx` for such a socket.
//!
//! * **Flow control.** The pump opens a record only when everything opened before went into the
//!   stream, and receives only when it needs bytes for the next record: at most [`IN_CAP`]
//!   bytes of ciphertext wait in the agent, so a slow reader closes the peer's window as for
//!   plain bytes.
//! * **Control records** (every type but application data) go alone into an *empty* stream:
//!   the pump waits until the host read everything before, stores `Control(type)`, writes the
//!   record, and writes nothing more until the host read it too; then `Data` again. The host
//!   returns it alone with its type (`recvmsg` + `TLS_GET_RECORD_TYPE`), or `EIO` to a read
//!   without room for the control message, as Linux. Rare (alerts, NewSessionTicket,
//!   KeyUpdate): the round trip this costs does not matter.
//! * **Errors** are final, as Linux's `tls_err_abort`: the plaintext before the bad record
//!   reaches the host, then (the stream empty) `Error(errno)` and the socket's `SO_ERROR`; the
//!   agent reads nothing more from the connection. `EKEYEXPIRED` (a TLS 1.3 KeyUpdate opened,
//!   the new key not set yet) is not final: it lasts until `setsockopt(TLS_RX)` rekeys.
//! * Bytes received before the keys: the `setsockopt(TLS_RX)` takes back what the host had not
//!   read of its RX stream (and what was stashed for it), which is ciphertext, and feeds it to
//!   the pump before anything new (`Core::set_tls`).

use std::collections::VecDeque;
use std::io;

use shm_proto::TlsRx;

use crate::backend::{Backend, IoBuf};
use crate::channel::Channel;
use crate::session::Violation;
use crate::sock::{Kind, Outcome, Sock};
use crate::tls::record::{content_type, MAX_RECORD_LEN};
use crate::tls::{Errno, Opener, Peek};

/// Ciphertext the agent holds per connection before it stops receiving: two whole records.
pub const IN_CAP: usize = 2 * MAX_RECORD_LEN;

/// Where the pump puts plaintext: the host's RX stream and its `tls_rx` word.
pub trait RxSink {
    /// Bytes the stream can take now.
    fn free(&mut self) -> Result<usize, Violation>;
    /// The host has read everything written so far.
    fn drained(&mut self) -> Result<bool, Violation>;
    /// Appends `b` (at most `free()` bytes; published by the caller later).
    fn write(&mut self, b: &[u8]);
    /// Stores the word (before the caller publishes what follows).
    fn set_word(&mut self, w: TlsRx);
}

/// Why [`RxPump::run`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The stream is full, or the pump waits for the host to read what it holds.
    Wait,
    /// Everything opened is in the stream: more ciphertext is needed.
    NeedInput,
    /// Opening failed with this errno, now told to the host (once: the socket's `SO_ERROR`).
    Failed(Errno),
    /// Failed earlier, or waits for a new key: nothing more until something changes.
    Stopped,
}

/// What the pump opened (the `stats` counters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxCounts {
    pub records: u64,
    pub bytes: u64,
    pub errors: u64,
}

/// The RX record state of one kTLS socket beyond its `Opener`.
#[derive(Debug, Default)]
pub struct RxPump {
    /// Ciphertext from `head` to `end`; before `head`, records opened (their plaintext in
    /// place). Bytes past `end` are left over (initialized once: a receive does not clear its
    /// room each time).
    buf: Vec<u8>,
    head: usize,
    end: usize,
    /// The opened record whose plaintext is not all in the stream: its type and what is left.
    out: Option<(u8, std::ops::Range<usize>)>,
    /// Plaintext a reader that left had not read (a shared connection's reader moved), with
    /// its type: before anything else.
    front: VecDeque<(u8, Vec<u8>)>,
    /// The host's stream holds a control record of this type (the word says so).
    ctrl_live: Option<u8>,
    /// Opening failed: the errno, and whether the word says so yet.
    failed: Option<Errno>,
    reported: bool,
    /// The word says `EKEYEXPIRED` (waiting for the new key).
    key_wait: bool,
    /// The backend's end of stream was seen.
    pub eof: bool,
    /// The word as last stored (`Sock::write_ctl` writes it again).
    word: TlsRx,
    /// Bumped by every byte or word written: [`pump_rx`] tells progress from none.
    progress: u64,
    pub counts: RxCounts,
}

/// What writing one piece of plaintext did.
enum Put {
    /// All of it is in the stream.
    Done,
    /// The stream took part or none of it: wait for the host.
    Wait,
}

impl RxPump {
    pub fn new() -> RxPump {
        RxPump {
            buf: Vec::with_capacity(IN_CAP),
            ..RxPump::default()
        }
    }

    /// The word as last stored: what `Sock::write_ctl` publishes to the reader.
    pub fn word(&self) -> TlsRx {
        self.word
    }

    /// Appends received ciphertext (any amount: bytes taken back from the host's stream when
    /// the keys arrive may exceed [`IN_CAP`]).
    pub fn feed(&mut self, ciphertext: &[u8]) {
        self.compact();
        let end = self.end + ciphertext.len();
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        self.buf[self.end..end].copy_from_slice(ciphertext);
        self.end = end;
    }

    /// Ciphertext bytes the pump takes from the backend now.
    pub fn in_room(&self) -> usize {
        IN_CAP.saturating_sub(self.end - self.head)
    }

    /// Receives up to [`RxPump::in_room`] bytes with `recv` straight into the buffer; returns
    /// what `recv` returned (0: end of stream).
    pub fn receive(
        &mut self,
        recv: impl FnOnce(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        self.compact();
        let at = self.end;
        let want = self.in_room();
        if self.buf.len() < at + want {
            self.buf.resize(at + want, 0);
        }
        let r = recv(&mut self.buf[at..at + want]);
        let got = match &r {
            Ok(k) => (*k).min(want),
            Err(_) => 0,
        };
        self.end = at + got;
        r.map(|_| got)
    }

    /// Drops the opened bytes before `head` (nothing refers to them once `out` is written).
    fn compact(&mut self) {
        if self.out.is_none() && self.head > 0 {
            self.buf.copy_within(self.head..self.end, 0);
            self.end -= self.head;
            self.head = 0;
        }
    }

    /// Plaintext opened is still to go into the stream (the reader must not see the end yet).
    pub fn owes(&self) -> bool {
        self.out.is_some() || !self.front.is_empty()
    }

    /// Progress counter (bytes and words written so far).
    pub fn progress(&self) -> u64 {
        self.progress
    }

    /// The reader of a shared connection moved to another binding: `unread` is what the old
    /// one had not read of its stream. It goes first into the new reader's stream, with its
    /// type (a control record the old reader had started stays one).
    pub fn take_back(&mut self, unread: Vec<u8>) {
        let ty = self
            .ctrl_live
            .take()
            .unwrap_or(content_type::APPLICATION_DATA);
        // The new reader's word starts as data; writing the unit sets it again.
        self.word = if self.reported || self.key_wait {
            self.word
        } else {
            TlsRx::Data
        };
        if !unread.is_empty() {
            self.front.push_front((ty, unread));
        }
    }

    fn set_word(&mut self, sink: &mut impl RxSink, w: TlsRx) {
        if self.word != w {
            self.word = w;
            sink.set_word(w);
            self.progress += 1;
        }
    }

    /// Writes plaintext `p` of type `ty`: data as far as the stream takes it, a control record
    /// alone into an empty stream. Returns the bytes written.
    fn put(&mut self, sink: &mut impl RxSink, ty: u8, p: &[u8]) -> Result<(usize, Put), Violation> {
        if p.is_empty() {
            // An empty record carries nothing (Linux would hand an empty control record over
            // as a read of 0 bytes, which a program takes for the end of the stream).
            return Ok((0, Put::Done));
        }
        if ty != content_type::APPLICATION_DATA {
            if self.ctrl_live.is_some() || !sink.drained()? {
                return Ok((0, Put::Wait));
            }
            // The word before the bytes (the caller publishes the tail later).
            self.set_word(sink, TlsRx::Control(ty));
        }
        let free = sink.free()?;
        let n = free.min(p.len());
        if n > 0 {
            sink.write(&p[..n]);
            self.progress += n as u64;
            if ty != content_type::APPLICATION_DATA {
                self.ctrl_live = Some(ty);
            }
        }
        Ok((n, if n == p.len() { Put::Done } else { Put::Wait }))
    }

    /// Moves what can move: plaintext waiting into the stream, then the next records opened
    /// with `opener`, until the stream cannot take more, the ciphertext runs out, or opening
    /// failed.
    pub fn run(&mut self, opener: &mut Opener, sink: &mut impl RxSink) -> Result<Step, Violation> {
        loop {
            if self.ctrl_live.is_some() {
                // A control record stands alone: nothing else until the host read it.
                if !sink.drained()? {
                    return Ok(Step::Wait);
                }
                self.ctrl_live = None;
                if !self.reported && !self.key_wait {
                    self.set_word(sink, TlsRx::Data);
                }
            }
            if let Some((ty, mut p)) = self.front.pop_front() {
                let (n, put) = self.put(sink, ty, &p)?;
                if let Put::Wait = put {
                    p.drain(..n);
                    self.front.push_front((ty, p));
                    return Ok(Step::Wait);
                }
                continue;
            }
            if let Some((ty, r)) = self.out.clone() {
                let (n, put) = {
                    let buf = std::mem::take(&mut self.buf);
                    let res = self.put(sink, ty, &buf[r.clone()]);
                    self.buf = buf;
                    res?
                };
                if let Put::Wait = put {
                    self.out = Some((ty, r.start + n..r.end));
                    return Ok(Step::Wait);
                }
                self.out = None;
                continue;
            }
            if self.reported {
                return Ok(Step::Stopped);
            }
            if let Some(e) = self.failed {
                // After every byte before the bad record: the host reads them, then the error.
                if !sink.drained()? {
                    return Ok(Step::Wait);
                }
                self.set_word(sink, TlsRx::Error(e as u16));
                self.reported = true;
                return Ok(Step::Failed(e));
            }
            if self.key_wait {
                if opener.key_update_pending() {
                    return Ok(Step::Stopped);
                }
                // The new key is set: records flow again.
                self.key_wait = false;
                self.set_word(sink, TlsRx::Data);
            }
            let rec = &mut self.buf[self.head..self.end];
            let len = match opener.peek(rec) {
                Ok(Peek::Record { len }) => len,
                Ok(Peek::Incomplete { .. }) => {
                    self.compact();
                    return Ok(Step::NeedInput);
                }
                Err(libc::EKEYEXPIRED) => {
                    // A KeyUpdate was handed over; Linux answers reads with EKEYEXPIRED until
                    // the program installs the next key (not final).
                    if !sink.drained()? {
                        return Ok(Step::Wait);
                    }
                    self.key_wait = true;
                    self.set_word(sink, TlsRx::Error(libc::EKEYEXPIRED as u16));
                    return Ok(Step::Stopped);
                }
                Err(e) => {
                    self.failed = Some(e);
                    self.counts.errors += 1;
                    continue;
                }
            };
            match opener.open_in_place(&mut rec[..len]) {
                Ok(o) => {
                    let at = self.head;
                    self.head += len;
                    self.counts.records += 1;
                    self.counts.bytes += o.plaintext.len() as u64;
                    self.out = Some((o.content_type, at + o.plaintext.start..at + o.plaintext.end));
                }
                Err(e) => {
                    self.failed = Some(e);
                    self.counts.errors += 1;
                }
            }
        }
    }
}

/// [`RxSink`] over a slot's RX stream.
struct StreamSink<'a> {
    rx: &'a shm_proto::Stream,
    word: &'a std::sync::atomic::AtomicU32,
    tail: &'a mut u32,
}

impl RxSink for StreamSink<'_> {
    fn free(&mut self) -> Result<usize, Violation> {
        Ok(self.rx.writable(*self.tail)? as usize)
    }

    fn drained(&mut self) -> Result<bool, Violation> {
        Ok(self.rx.used(self.rx.load_head(), *self.tail)? == 0)
    }

    fn write(&mut self, b: &[u8]) {
        self.rx.copy_in(*self.tail, b);
        *self.tail = self.tail.wrapping_add(b.len() as u32);
    }

    fn set_word(&mut self, w: TlsRx) {
        // Before the tail that publishes the bytes it describes (tlsrx.rs).
        self.word
            .store(w.pack(), std::sync::atomic::Ordering::SeqCst);
    }
}

/// `sock::pump_rx` for a socket with kTLS RX on: plaintext of the records received into the RX
/// stream of `slot` (the active binding), one publication per call.
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
    let Sock { os, ktls, .. } = s;
    let Some(k) = ktls.as_deref_mut() else {
        return Ok(out);
    };
    let Some((opener, pump)) = k.rx_parts() else {
        return Ok(out);
    };
    let start = *rx_tail;
    let before = pump.counts;
    let progress = pump.progress();
    let blocked = &ctl.rx_head.0.blocked;
    let mut announced = false;
    {
        let mut sink = StreamSink {
            rx: &rx,
            word: &ctl.state.0.tls_rx,
            tail: rx_tail,
        };
        loop {
            let p0 = pump.progress();
            let step = pump.run(opener, &mut sink)?;
            if announced && pump.progress() != p0 {
                shm_proto::wake::rx_unblock(blocked);
                announced = false;
            }
            match step {
                Step::Wait => {
                    if announced {
                        break;
                    }
                    // Tell the host to send OP_RX_SPACE once it reads, then look again (it may
                    // have read meanwhile: wake::rx_block).
                    shm_proto::wake::rx_block(blocked);
                    announced = true;
                }
                Step::NeedInput => {
                    if pump.eof {
                        out.done = true;
                        break;
                    }
                    if !from_os {
                        break;
                    }
                    let r = pump.receive(|buf| {
                        let iov = [IoBuf {
                            iov_base: buf.as_mut_ptr().cast(),
                            iov_len: buf.len(),
                        }];
                        // SAFETY: `buf` is the pump's own buffer, live and unaliased for the
                        // call; the backend writes at most its length.
                        unsafe { b.recv(os, &iov) }
                    });
                    match r {
                        Ok(0) => pump.eof = true,
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            out.err = Some(e.raw_os_error().unwrap_or(libc::EIO));
                            break;
                        }
                    }
                }
                Step::Failed(e) => {
                    tracing::debug!(slot, errno = e, "kTLS RX: a record failed to open");
                    out.tls_rx_error = Some(e);
                    break;
                }
                Step::Stopped => break,
            }
        }
    }
    let c = pump.counts;
    chan.counters.tls_rx_records += c.records - before.records;
    chan.counters.tls_rx_bytes += c.bytes - before.bytes;
    chan.counters.tls_decrypt_errors += c.errors - before.errors;
    crate::sock::finish_rx(chan, &rx, slot, start, *rx_tail);
    if pump.progress() != progress || out.done {
        // (A word changed without bytes too: a control record read, an error now readable.)
        chan.dirty(slot);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::record::HANDSHAKE_KEY_UPDATE;
    use crate::tls::uapi::{Cipher, CryptoInfo, Suite, Version};
    use crate::tls::Sealer;

    /// The host's RX stream: bytes written and not read, and the words in the order stored.
    struct Host {
        cap: usize,
        unread: Vec<u8>,
        words: Vec<TlsRx>,
    }

    impl Host {
        fn new(cap: usize) -> Host {
            Host {
                cap,
                unread: Vec::new(),
                words: Vec::new(),
            }
        }

        fn word(&self) -> TlsRx {
            self.words.last().copied().unwrap_or_default()
        }

        /// Reads everything there, as the host would: (word, bytes).
        fn read_all(&mut self) -> (TlsRx, Vec<u8>) {
            (self.word(), std::mem::take(&mut self.unread))
        }
    }

    impl RxSink for Host {
        fn free(&mut self) -> Result<usize, Violation> {
            Ok(self.cap - self.unread.len())
        }
        fn drained(&mut self) -> Result<bool, Violation> {
            Ok(self.unread.is_empty())
        }
        fn write(&mut self, b: &[u8]) {
            assert!(self.unread.len() + b.len() <= self.cap);
            self.unread.extend_from_slice(b);
        }
        fn set_word(&mut self, w: TlsRx) {
            self.words.push(w);
        }
    }

    fn info(version: Version, cipher: Cipher) -> CryptoInfo {
        CryptoInfo::new(
            Suite { version, cipher },
            &vec![7; cipher.key_len()],
            &vec![3; cipher.salt_len()],
            &vec![1; cipher.iv_len()],
            0,
        )
        .unwrap()
    }

    fn pair(version: Version, cipher: Cipher) -> (Sealer, Opener) {
        let i = info(version, cipher);
        (Sealer::new(&i).unwrap(), Opener::new(&i).unwrap())
    }

    fn rec(s: &mut Sealer, ty: u8, p: &[u8]) -> Vec<u8> {
        let mut out = vec![0; s.layout().record_len(p.len())];
        let n = s.seal(ty, p, &mut out).unwrap();
        out.truncate(n);
        out
    }

    const DATA: u8 = content_type::APPLICATION_DATA;
    const ALERT: u8 = content_type::ALERT;

    #[test]
    fn data_records_flow_as_bytes_and_split_records_wait_for_their_end() {
        for (v, c) in [
            (Version::Tls12, Cipher::AesGcm128),
            (Version::Tls12, Cipher::AesGcm256),
            (Version::Tls12, Cipher::Chacha20Poly1305),
            (Version::Tls13, Cipher::AesGcm128),
            (Version::Tls13, Cipher::AesGcm256),
            (Version::Tls13, Cipher::Chacha20Poly1305),
        ] {
            let (mut s, mut o) = pair(v, c);
            let mut wire = rec(&mut s, DATA, b"hello ");
            wire.extend(rec(&mut s, DATA, b"world"));
            let mut p = RxPump::new();
            let mut h = Host::new(1 << 16);
            // Byte by byte: nothing until a record is whole.
            let (first, rest) = wire.split_at(10);
            for b in first {
                p.feed(&[*b]);
                assert_eq!(p.run(&mut o, &mut h).unwrap(), Step::NeedInput);
            }
            assert!(h.unread.is_empty());
            p.feed(rest);
            assert_eq!(p.run(&mut o, &mut h).unwrap(), Step::NeedInput);
            assert_eq!(h.read_all(), (TlsRx::Data, b"hello world".to_vec()));
            assert!(h.words.is_empty(), "data needs no word");
            assert_eq!(
                p.counts,
                RxCounts {
                    records: 2,
                    bytes: 11,
                    errors: 0
                }
            );
        }
    }

    #[test]
    fn a_full_stream_stops_opening_and_receiving() {
        let (mut s, mut o) = pair(Version::Tls13, Cipher::AesGcm128);
        let mut p = RxPump::new();
        let mut h = Host::new(8);
        p.feed(&rec(&mut s, DATA, b"0123456789abcdef"));
        p.feed(&rec(&mut s, DATA, b"XY"));
        assert_eq!(p.run(&mut o, &mut h).unwrap(), Step::Wait);
        assert_eq!(h.unread, b"01234567");
        // Only the first record is opened while its plaintext waits.
        assert_eq!(p.counts.records, 1);
        assert!(p.owes());
        h.unread.clear();
        assert_eq!(p.run(&mut o, &mut h).unwrap(), Step::Wait);
        assert_eq!(h.unread, b"89abcdefXY"[..8].to_vec());
        h.unread.clear();
        assert_eq!(p.run(&mut o, &mut h).unwrap(), Step::NeedInput);
        assert_eq!(h.unread, b"XY");
        assert!(!p.owes());
    }

    #[test]
    fn a_control_record_waits_for_an_empty_stream_and_comes_alone_with_its_type() {
        // TLS 1.3: the type is the inner one (the header says application data).
        for v in [Version::Tls12, Version::Tls13] {
            let (mut s, mut o) = pair(v, Cipher::AesGcm256);
            let mut p = RxPump::new();
            let mut h = Host::new(1 << 16);
            p.feed(&rec(&mut s, DATA, b"before"));
            p.feed(&rec(&mut s, ALERT, &[1, 0]));
            p.feed(&rec(&mut s, DATA, b"after"));
            assert_eq!(p.run(&mut o, &mut h).unwrap(), Step::Wait);
            assert_eq!(h.read_all(), (TlsRx::Data, b"before".to_vec()));
            // The stream is empty: the alert goes in, its word first.
            assert_eq!(p.run(&mut o, &mut h).unwrap(), Step::Wait);
            assert_eq!(h.words, [TlsRx::Control(ALERT)]);
            assert_eq!(h.read_all(), (TlsRx::Control(ALERT), vec![1, 0]));
            // Read: data again, and only now the bytes after it.
            assert_eq!(p.run(&mut o, &mut h).unwrap(), Step::NeedInput);
            assert_eq!(h.words, [TlsRx::Control(ALERT), TlsRx::Data]);
            assert_eq!(h.read_all(), (TlsRx::Data, b"after".to_vec()));
        }
    }

    #[test]
    fn two_control_records_are_two_reads() {
        let (mut s, mut o) = pair(Version::Tls13, Cipher::Chacha20Poly1305);
        let mut p = RxPump::new();
        let mut h = Host::new(1 << 16);
        p.feed(&rec(&mut s, 22, b"ticket"));
        p.feed(&rec(&mut s, ALERT, &[1, 0]));
        assert_eq!(p.run(&mut o, &mut h).unwrap(), Step::Wait);
        assert_eq!(h.read_all(), (TlsRx::Control(22), b"ticket".to_vec()));
        assert_eq!(p.run(&mut o, &mut h).unwrap(), Step::Wait);
        assert_eq!(h.read_all(), (TlsRx::Control(ALERT), vec![1, 0]));
        assert_eq!(p.run(&mut o, &mut h).unwrap(), Step::NeedInput);
        assert_eq!(h.word(), TlsRx::Data);
    }

    #[test]
    fn a_tampered_record_fails_after_the_plaintext_before_it_for_good() {
        let (mut s, mut o) = pair(Version::Tls12, Cipher::AesGcm128);
        let mut p = RxPump::new();
        let mut h = Host::new(1 << 16);
        p.feed(&rec(&mut s, DATA, b"one"));
        p.feed(&rec(&mut s, DATA, b"two"));
        let mut bad = rec(&mut s, DATA, b"three");
        bad[20] ^= 1;
        p.feed(&bad);
        p.feed(&rec(&mut s, DATA, b"four"));
        // The plaintext before it, and the error only once the host read it.
        assert_eq!(p.run(&mut o, &mut h).unwrap(), Step::Wait);
        assert_eq!(h.read_all(), (TlsRx::Data, b"onetwo".to_vec()));
        assert_eq!(p.run(&mut o, &mut h).unwrap(), Step::Failed(libc::EBADMSG));
        assert_eq!(h.word(), TlsRx::Error(libc::EBADMSG as u16));
        assert!(h.unread.is_empty());
        assert_eq!(p.counts.errors, 1);
        assert_eq!(p.counts.records, 2);
        // Final: nothing more, reported once.
        p.feed(&rec(&mut s, DATA, b"five"));
        assert_eq!(p.run(&mut o, &mut h).unwrap(), Step::Stopped);
        assert!(h.unread.is_empty());
        assert_eq!(p.counts.errors, 1);
    }

    #[test]
    fn header_errors_are_linuxs() {
        for (hdr, e) in [
            ([23u8, 3, 3, 0x40, 0x12], libc::EMSGSIZE), // 2^14 + 18 > 2^14 + 17 (TLS 1.3)
            ([23, 3, 3, 0, 15], libc::EBADMSG),         // shorter than a tag
            ([23, 3, 1, 0, 40], libc::EINVAL),          // version
        ] {
            let (_, mut o) = pair(Version::Tls13, Cipher::AesGcm128);
            let mut p = RxPump::new();
            let mut h = Host::new(1 << 16);
            p.feed(&hdr);
            assert_eq!(p.run(&mut o, &mut h).unwrap(), Step::Failed(e), "{hdr:?}");
            assert_eq!(h.word(), TlsRx::Error(e as u16));
        }
    }

    #[test]
    fn key_update_holds_records_until_the_new_key() {
        let (mut s, mut o) = pair(Version::Tls13, Cipher::AesGcm128);
        let mut p = RxPump::new();
        let mut h = Host::new(1 << 16);
        p.feed(&rec(&mut s, 22, &[HANDSHAKE_KEY_UPDATE, 0, 0, 1, 0]));
        let next = info(Version::Tls13, Cipher::AesGcm128);
        let mut s2 = Sealer::new(&next).unwrap();
        p.feed(&rec(&mut s2, DATA, b"new key"));
        assert_eq!(p.run(&mut o, &mut h).unwrap(), Step::Wait);
        assert_eq!(h.read_all().0, TlsRx::Control(22));
        assert_eq!(p.run(&mut o, &mut h).unwrap(), Step::Stopped);
        assert_eq!(h.word(), TlsRx::Error(libc::EKEYEXPIRED as u16));
        o.rekey(&next).unwrap();
        assert_eq!(p.run(&mut o, &mut h).unwrap(), Step::NeedInput);
        assert_eq!(h.read_all(), (TlsRx::Data, b"new key".to_vec()));
    }

    #[test]
    fn a_reader_that_leaves_gives_back_plaintext_with_its_type() {
        let (mut s, mut o) = pair(Version::Tls12, Cipher::Chacha20Poly1305);
        let mut p = RxPump::new();
        let mut h = Host::new(1 << 16);
        p.feed(&rec(&mut s, ALERT, &[2, 40]));
        p.feed(&rec(&mut s, DATA, b"later"));
        assert_eq!(p.run(&mut o, &mut h).unwrap(), Step::Wait);
        // The old reader read one byte of the alert; the other goes to the new reader, still
        // an alert, and only then the data.
        let (_, mut left) = h.read_all();
        left.remove(0);
        p.take_back(left);
        assert!(p.owes());
        let mut h2 = Host::new(1 << 16);
        assert_eq!(p.run(&mut o, &mut h2).unwrap(), Step::Wait);
        assert_eq!(h2.read_all(), (TlsRx::Control(ALERT), vec![40]));
        assert_eq!(p.run(&mut o, &mut h2).unwrap(), Step::NeedInput);
        assert_eq!(h2.read_all(), (TlsRx::Data, b"later".to_vec()));
    }

    #[test]
    fn ciphertext_held_is_bounded() {
        let (mut s, mut o) = pair(Version::Tls12, Cipher::AesGcm256);
        let mut p = RxPump::new();
        let mut h = Host::new(100);
        let big = vec![5u8; 16384];
        let r = rec(&mut s, DATA, &big);
        assert_eq!(p.in_room(), IN_CAP);
        p.feed(&r);
        p.feed(&r);
        assert_eq!(p.in_room(), IN_CAP - 2 * r.len());
        assert_eq!(p.run(&mut o, &mut h).unwrap(), Step::Wait);
        // A receive takes no more than the room.
        let got = p.receive(|b| Ok(b.len())).unwrap();
        assert!(got <= IN_CAP - 2 * r.len() + r.len());
    }
}
