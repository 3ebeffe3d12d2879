//! Framed RX (the payload API, docs/payload-api.md): a connection whose service declared a
//! framing (`SOL_SNSTACK`/`SNSTACK_FRAMING`) has its bytes split into whole messages here, on the
//! NIC, and written to its RX stream as records (`shm_proto::record`), so the host application
//! receives whole requests and never parses a stream.
//!
//! ```text
//!   OS socket / engine ──recv──► staging (this connection's bytes not yet in a record)
//!                                   │ Framer::scan (nic_agent::framing)
//!                                   ▼
//!   RX stream:  [hdr|message][hdr|message]...   published at record boundaries only
//! ```
//!
//! Sans-IO: [`FramedRx`] holds the framer and the staging buffer; the caller (`sock::pump_rx`)
//! receives into one buffer shared by every framed connection, at most [`FramedRx::room`] bytes,
//! and calls [`FramedRx::emit`] with them: whole messages go straight from that buffer into
//! records, and only the bytes of an incomplete message (or those the ring had no room for) are
//! staged per connection, so a connection between requests holds no buffer. The staging buffer
//! holds at most `max_message` plus one read's worth of bytes: the framer never needs more than
//! `max_message` bytes to find a boundary or a part, so a full staging buffer always makes
//! progress once the host frees ring space, and a slow host stops the reading (the TCP window
//! closes) instead of growing memory.
//!
//! Why a staging copy and not framing in place in the ring: a record needs its header in front
//! of the message and the message contiguous, and TCP delivers bytes without regard to either;
//! framing in place would move every pipelined message after the first. The extra copy is of
//! bytes already in the agent's cache.

use nic_agent::framing::{Framer, Framing, LengthWidth, Reason, Scan};
use shm_proto::record::{self, FramingSpec};
use shm_proto::{Corrupt, Stream};

/// Bytes one receive may add beyond `max_message`.
pub const READ_CHUNK: usize = 64 * 1024;

/// What [`FramedRx::emit`] stopped at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    /// Everything staged that forms a message is in the ring; more bytes are needed.
    Need,
    /// The ring has no room for the next record.
    Full,
    /// The peer broke the framing (or closed inside a message): the connection must end.
    /// Reported once; later calls say `Need`.
    Malformed(Reason),
    /// The stream ended and every message was delivered.
    Ended,
}

/// What [`FramedRx::emit`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Emitted {
    pub messages: u64,
    pub parts: u64,
    pub bytes: u64,
}

/// A framed connection's receive state.
#[derive(Debug)]
pub struct FramedRx {
    pub spec: FramingSpec,
    framer: Framer,
    /// Received bytes: `buf[start..]` are not in a record yet.
    buf: Vec<u8>,
    start: usize,
    eof: bool,
    failed: Option<Reason>,
}

/// The framer a spec names (the spec was validated by `FramingSpec::decode`).
fn framing_of(spec: &FramingSpec) -> Framing {
    match spec.kind {
        record::FRAMING_LENGTH => Framing::Length {
            width: if spec.width == 2 {
                LengthWidth::U16
            } else {
                LengthWidth::U32
            },
            big_endian: spec.flags & record::SPEC_BIG_ENDIAN != 0,
            includes_header: spec.flags & record::SPEC_INCLUDES_HEADER != 0,
        },
        record::FRAMING_LINE => Framing::Line {
            crlf: spec.flags & record::SPEC_CRLF != 0,
        },
        record::FRAMING_HTTP1_REQUEST => Framing::Http1Request,
        record::FRAMING_HTTP1_RESPONSE => Framing::Http1Response,
        record::FRAMING_RESP_REQUEST => Framing::RespRequest,
        record::FRAMING_RESP_REPLY => Framing::RespReply,
        _ => Framing::Raw,
    }
}

/// The `max_message` a spec gets on a ring of `rx_size` bytes: 0 asks for the largest, and no
/// message is larger than a record the ring can hold beside another.
pub fn effective_max(spec: &FramingSpec, rx_size: u32) -> u32 {
    // (Regions have rings of at least 4 KiB; the floor keeps a nonsense size from panicking.)
    let cap = record::max_record_len(rx_size.max(4096));
    match spec.max_message {
        0 => cap,
        m => m.clamp(nic_agent::framing::MIN_MAX_MESSAGE as u32, cap),
    }
}

/// The code `SockState::framing_error` carries for `r`.
pub fn reason_code(r: Reason) -> u32 {
    Reason::ALL
        .iter()
        .position(|&x| x == r)
        .map_or(0, |i| i as u32 + 1)
}

impl FramedRx {
    pub fn new(spec: FramingSpec, rx_size: u32) -> FramedRx {
        let max = effective_max(&spec, rx_size);
        let spec = FramingSpec {
            max_message: max,
            ..spec
        };
        FramedRx {
            framer: Framer::new(framing_of(&spec), max as usize),
            spec,
            buf: Vec::new(),
            start: 0,
            eof: false,
            failed: None,
        }
    }

    /// Bytes staged and not yet in a record.
    pub fn staged(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The peer closed (its last bytes may still be staged).
    pub fn eof(&self) -> bool {
        self.eof
    }

    /// How many bytes the next receive may bring (0: the staging buffer is full; stop reading
    /// until [`FramedRx::emit`] moves bytes into the ring).
    pub fn room(&self) -> usize {
        let cap = self.spec.max_message as usize + READ_CHUNK;
        cap.saturating_sub(self.staged()).min(READ_CHUNK)
    }

    /// Bytes the host left unread in a stream before it became framed, or taken back from it:
    /// they are framed before anything received later.
    pub fn prepend(&mut self, bytes: &[u8]) {
        let rest = self.buf.split_off(self.start);
        self.buf.clear();
        self.start = 0;
        self.buf.extend_from_slice(bytes);
        self.buf.extend_from_slice(&rest);
    }

    /// The client's next request (in sending order) needs a response framed as `to` (HTTP
    /// response framing only; false otherwise, or with 64 requests outstanding).
    pub fn expect_response(&mut self, to: nic_agent::framing::ResponseTo) -> bool {
        self.framer.expect_response(to)
    }

    /// The peer closed: no byte follows those staged.
    pub fn finish(&mut self) {
        self.eof = true;
        self.framer.finish();
    }

    /// Writes every whole message of the staged bytes followed by `fresh` (bytes just received
    /// into a buffer the caller reuses) into `rx` at `*tail` (not published: the caller
    /// publishes once), until the ring is full or a message needs more bytes. What is left of
    /// `fresh` is staged. The common case (whole requests arriving whole) frames straight from
    /// `fresh` and stages nothing, so an idle connection holds no buffer.
    pub fn emit(
        &mut self,
        fresh: &[u8],
        rx: &Stream,
        tail: &mut u32,
        out: &mut Emitted,
    ) -> Result<Emit, Corrupt> {
        let mut used = 0;
        let r = self.emit_from(fresh, &mut used, rx, tail, out);
        let rest = &fresh[used.min(fresh.len())..];
        if !rest.is_empty() && self.failed.is_none() {
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            self.buf.extend_from_slice(rest);
        }
        if self.staged() == 0 {
            // Give the memory back: a connection between requests holds nothing.
            self.buf = Vec::new();
            self.start = 0;
        }
        r
    }

    fn emit_from(
        &mut self,
        fresh: &[u8],
        used: &mut usize,
        rx: &Stream,
        tail: &mut u32,
        out: &mut Emitted,
    ) -> Result<Emit, Corrupt> {
        if self.failed.is_some() {
            // Reported once (the connection is reset and counted then); nothing more comes.
            return Ok(Emit::Need);
        }
        loop {
            let a = &self.buf[self.start..];
            let b = &fresh[*used..];
            let (n, part) = match self.framer.scan(a, b) {
                Scan::Need => {
                    if self.eof && a.is_empty() && b.is_empty() {
                        return Ok(Emit::Ended);
                    }
                    return Ok(Emit::Need);
                }
                Scan::Skip(n) => {
                    self.framer.consume(n);
                    self.take(n, used, fresh.len());
                    continue;
                }
                Scan::Malformed(r) => {
                    self.failed = Some(r);
                    return Ok(Emit::Malformed(r));
                }
                Scan::Message(n) => (n, false),
                Scan::Part(n) => (n, true),
            };
            let n = n.min(a.len() + b.len());
            // (`Message(0)`: a body that ended at the close right after a part; the empty
            // record ends the message.)
            let free = rx.writable(*tail)?;
            let Some(pad) = record::room(rx, *tail, free, n as u32)? else {
                return Ok(Emit::Full);
            };
            let from_a = n.min(a.len());
            record::write(rx, tail, pad, part, &a[..from_a], &b[..n - from_a]);
            self.framer.consume(n);
            self.take(n, used, fresh.len());
            out.bytes += n as u64;
            if part {
                out.parts += 1;
            } else {
                out.messages += 1;
            }
        }
    }

    /// Takes `n` bytes off the front of staged-then-fresh.
    fn take(&mut self, n: usize, used: &mut usize, fresh_len: usize) {
        let from_a = n.min(self.staged());
        self.start += from_a;
        *used = (*used + (n - from_a)).min(fresh_len);
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shm_proto::layout::Producer;
    use std::sync::atomic::AtomicU32;

    struct Ring {
        buf: Vec<u8>,
        prod: Box<Producer>,
        head: Box<AtomicU32>,
    }

    impl Ring {
        fn new(size: usize) -> Ring {
            Ring {
                buf: vec![0; size],
                prod: Box::default(),
                head: Box::new(AtomicU32::new(0)),
            }
        }
        fn stream(&mut self) -> Stream {
            let size = self.buf.len() as u32;
            // SAFETY: the view is used only while the ring lives.
            unsafe { Stream::new(self.buf.as_mut_ptr(), size, &self.prod, &self.head) }
        }
    }

    fn spec(kind: u8, flags: u8, max: u32) -> FramingSpec {
        FramingSpec {
            kind,
            flags,
            width: 0,
            max_message: max,
        }
    }

    /// Feeds `input` in pieces of `step`, draining the ring as a host would; returns the
    /// messages (parts joined, flagged) and the final verdict.
    fn run(
        f: &mut FramedRx,
        rx: &Stream,
        input: &[u8],
        step: usize,
    ) -> (Vec<(Vec<u8>, bool)>, Emit) {
        let (mut tail, mut head) = (0u32, 0u32);
        let mut got = Vec::new();
        let mut fed = 0;
        let mut st = Emitted::default();
        let mut pending: &[u8] = &[];
        loop {
            let last = f.emit(pending, rx, &mut tail, &mut st).unwrap();
            pending = &[];
            rx.publish_tail(tail);
            while let Some(r) = record::next(rx, head, rx.load_tail()).unwrap() {
                // SAFETY: inside the ring.
                let s = unsafe { std::slice::from_raw_parts(rx.ptr(r.off), r.len as usize) };
                got.push((s.to_vec(), r.part));
                head = r.next;
                rx.publish_head(head);
            }
            if matches!(last, Emit::Malformed(_) | Emit::Ended) {
                return (got, last);
            }
            if fed == input.len() {
                if f.eof {
                    if last == Emit::Need {
                        return (got, last);
                    }
                    continue;
                }
                f.finish();
                continue;
            }
            let k = f.room().min(step).min(input.len() - fed);
            pending = &input[fed..fed + k];
            fed += k;
        }
    }

    #[test]
    fn pipelined_resp_commands_become_records_fed_any_way() {
        let input = b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\nPING\r\n";
        for step in [1, 2, 3, 7, input.len()] {
            let mut r = Ring::new(4096);
            let rx = r.stream();
            let mut f = FramedRx::new(spec(record::FRAMING_RESP_REQUEST, 0, 0), 4096);
            let (got, end) = run(&mut f, &rx, input, step);
            assert_eq!(end, Emit::Ended, "step {step}");
            let msgs: Vec<&[u8]> = got.iter().map(|(m, _)| m.as_slice()).collect();
            assert_eq!(
                msgs,
                [
                    &b"*1\r\n$4\r\nPING\r\n"[..],
                    b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n",
                    b"PING\r\n"
                ]
            );
        }
    }

    #[test]
    fn long_messages_come_in_parts_through_a_small_ring() {
        let mut body = b"*2\r\n$3\r\nGET\r\n$100000\r\n".to_vec();
        body.extend(std::iter::repeat(b'x').take(100_000));
        body.extend_from_slice(b"\r\n");
        let mut r = Ring::new(4096);
        let rx = r.stream();
        let mut f = FramedRx::new(spec(record::FRAMING_RESP_REQUEST, 0, 0), 4096);
        assert_eq!(f.spec.max_message, record::max_record_len(4096));
        let (got, end) = run(&mut f, &rx, &body, 5000);
        assert_eq!(end, Emit::Ended);
        assert!(got.len() > 10);
        assert!(got[..got.len() - 1].iter().all(|(_, p)| *p));
        assert!(!got.last().unwrap().1);
        let joined: Vec<u8> = got.into_iter().flat_map(|(m, _)| m).collect();
        assert_eq!(joined, body);
    }

    #[test]
    fn malformed_input_stops_before_the_bad_message() {
        let mut r = Ring::new(4096);
        let rx = r.stream();
        let mut f = FramedRx::new(spec(record::FRAMING_LINE, record::SPEC_CRLF, 0), 4096);
        let (got, end) = run(&mut f, &rx, b"ok\r\nbad\nmore\r\n", 1);
        assert_eq!(got, [(b"ok\r\n".to_vec(), false)]);
        assert_eq!(end, Emit::Malformed(Reason::BareLf));
        assert_eq!(reason_code(Reason::BareLf), 4);
        assert_eq!(
            record::reason_name(reason_code(Reason::BareLf)),
            Some("bare_lf")
        );
    }

    #[test]
    fn a_violation_is_reported_once() {
        let mut r = Ring::new(4096);
        let rx = r.stream();
        let mut f = FramedRx::new(spec(record::FRAMING_LINE, record::SPEC_CRLF, 0), 4096);
        let (mut tail, mut st) = (0, Emitted::default());
        let bad = f.emit(b"a\r\nb\n", &rx, &mut tail, &mut st).unwrap();
        assert_eq!(bad, Emit::Malformed(Reason::BareLf));
        assert_eq!(
            f.emit(b"more\r\n", &rx, &mut tail, &mut st).unwrap(),
            Emit::Need
        );
        assert_eq!(st.messages, 1);
    }

    #[test]
    fn a_close_inside_a_message_is_truncated() {
        let mut r = Ring::new(4096);
        let rx = r.stream();
        let mut f = FramedRx::new(spec(record::FRAMING_HTTP1_REQUEST, 0, 0), 4096);
        let (got, end) = run(
            &mut f,
            &rx,
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTT",
            4,
        );
        assert_eq!(got.len(), 1);
        assert_eq!(end, Emit::Malformed(Reason::Truncated));
    }

    #[test]
    fn reason_codes_match_the_channel_names() {
        for r in Reason::ALL {
            assert_eq!(record::reason_name(reason_code(r)), Some(r.name()));
        }
    }

    #[test]
    fn a_full_ring_holds_the_bytes_until_the_host_frees_room() {
        let mut r = Ring::new(4096);
        let rx = r.stream();
        let mut f = FramedRx::new(spec(record::FRAMING_LINE, 0, 0), 4096);
        let line = [b'a'; 999];
        let mut input = Vec::new();
        for _ in 0..10 {
            input.extend_from_slice(&line);
            input.push(b'\n');
        }
        let mut tail = 0;
        let mut st = Emitted::default();
        assert_eq!(f.emit(&input, &rx, &mut tail, &mut st).unwrap(), Emit::Full);
        assert_eq!(st.messages, 4);
        assert_eq!(f.staged(), 6000);
        // The host consumes everything: the rest follows.
        rx.publish_tail(tail);
        rx.publish_head(tail);
        assert_eq!(f.emit(&[], &rx, &mut tail, &mut st).unwrap(), Emit::Full);
        assert_eq!(st.messages, 8);
    }
}
