//! Message records: the RX stream of a *framed* connection (the payload API, docs/payload-api.md).
//!
//! A service declares a framing on its listener with `setsockopt(SOL_SNSTACK, SNSTACK_FRAMING,
//! FramingSpec)`; its connections inherit it. The agent then splits each connection's bytes into
//! whole messages on the NIC and writes its RX stream as records instead of a byte stream:
//!
//! ```text
//!   ring offset 0                                                         size
//!   | hdr | message ...... |pad| hdr | message ... |pad| ... | hdr(PAD) ........ |
//!     4 B   len bytes       to 4   (each record starts 4-aligned)   to the ring's end
//! ```
//!
//! * A header is a little-endian `u32`: the message length (`LEN_MASK`) and the flags [`F_PART`]
//!   (a piece of a message longer than the service's `max_message`; more pieces follow, the last
//!   one without the flag) and [`F_PAD`] (no message: the rest of the ring up to its end is
//!   skipped). A record occupies [`footprint`]`(len)` bytes: header plus message rounded up to 4.
//! * A message is always contiguous in the ring: a record that would cross the ring's end is
//!   preceded by a `PAD` record covering the end, and starts at offset 0. So the host hands the
//!   application a plain slice of the region, never two pieces.
//! * Records start at offsets that are multiples of 4 (the stream is rewound to offset 0 whenever
//!   it is empty, and every footprint is a multiple of 4), so a header never straddles the end.
//! * The agent publishes the tail only at record boundaries; the host consumes a record by moving
//!   its head past it (the bytes stay valid until then). Everything read here is untrusted: a
//!   header that points past the tail or the ring's end is [`Corrupt`].
//!
//! Malformed input from the wire never reaches the application: the agent resets the connection,
//! publishes `SF_ERROR` with `EPROTO`, and stores the reason's code ([`REASONS`]) in
//! `SockState::framing_error`.

use crate::stream::Stream;
use crate::Corrupt;

/// Socket option level the agent alone interprets (never a kernel level: far above Linux's
/// `SOL_*` numbers).
pub const SOL_SNSTACK: i32 = 0x534e_5300;
/// `SOL_SNSTACK` option: the connection's (or a listener's connections') framing, a
/// [`FramingSpec`] of [`SPEC_LEN`] bytes. Set it before `listen`/`connect`.
pub const SNSTACK_FRAMING: i32 = 1;

/// `SOL_SNSTACK` option of a connection framed as HTTP/1.1 responses (a client): one byte,
/// [`EXPECT_OTHER`], [`EXPECT_HEAD`] or [`EXPECT_CONNECT`], saying what the next request sent on
/// it is, in sending order (a HEAD's response has no body; a 2xx to CONNECT ends HTTP). Post it
/// before the request's bytes. Without it every response is read as an answer to a GET.
pub const SNSTACK_EXPECT_RESPONSE: i32 = 2;
pub const EXPECT_OTHER: u8 = 0;
pub const EXPECT_HEAD: u8 = 1;
pub const EXPECT_CONNECT: u8 = 2;

/// Header bytes of a record.
pub const HDR: u32 = 4;
/// Header flag: a piece of a longer message; more follow.
pub const F_PART: u32 = 1 << 31;
/// Header flag: padding to the ring's end, no message.
pub const F_PAD: u32 = 1 << 30;
/// Header bits holding the length.
pub const LEN_MASK: u32 = F_PAD - 1;

/// Ring bytes a record of `len` message bytes occupies.
pub const fn footprint(len: u32) -> u32 {
    (HDR + len + 3) & !3
}

/// Framing kinds on the wire of the option.
pub const FRAMING_RAW: u8 = 0;
pub const FRAMING_LENGTH: u8 = 1;
pub const FRAMING_LINE: u8 = 2;
pub const FRAMING_HTTP1_REQUEST: u8 = 3;
pub const FRAMING_HTTP1_RESPONSE: u8 = 4;
pub const FRAMING_RESP_REQUEST: u8 = 5;
pub const FRAMING_RESP_REPLY: u8 = 6;

/// [`FramingSpec::flags`]: length prefix in network order.
pub const SPEC_BIG_ENDIAN: u8 = 1;
/// [`FramingSpec::flags`]: the length prefix counts its own bytes.
pub const SPEC_INCLUDES_HEADER: u8 = 2;
/// [`FramingSpec::flags`]: lines end in CRLF (a bare LF is malformed).
pub const SPEC_CRLF: u8 = 4;

/// Bytes of an encoded [`FramingSpec`].
pub const SPEC_LEN: usize = 8;

/// The value of `SNSTACK_FRAMING`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramingSpec {
    /// `FRAMING_*`.
    pub kind: u8,
    /// `SPEC_*` bits (only those meaningful for `kind`).
    pub flags: u8,
    /// Length prefix width in bytes: 2 or 4 (`FRAMING_LENGTH` only, else 0).
    pub width: u8,
    /// Largest message delivered whole; longer ones come in [`F_PART`] pieces of this size. The
    /// agent raises it to 16 and lowers it to what fits the ring (half its size less a header).
    pub max_message: u32,
}

impl FramingSpec {
    pub fn encode(&self) -> [u8; SPEC_LEN] {
        let m = self.max_message.to_le_bytes();
        [self.kind, self.flags, self.width, 0, m[0], m[1], m[2], m[3]]
    }

    /// Decodes and validates (unknown kind, flags that do not belong to the kind, a bad width,
    /// a non-zero reserved byte: `None`).
    pub fn decode(b: &[u8]) -> Option<FramingSpec> {
        if b.len() != SPEC_LEN || b[3] != 0 {
            return None;
        }
        let s = FramingSpec {
            kind: b[0],
            flags: b[1],
            width: b[2],
            max_message: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        };
        let (flags_ok, width_ok) = match s.kind {
            FRAMING_LENGTH => (
                SPEC_BIG_ENDIAN | SPEC_INCLUDES_HEADER,
                s.width == 2 || s.width == 4,
            ),
            FRAMING_LINE => (SPEC_CRLF, s.width == 0),
            FRAMING_RAW..=FRAMING_RESP_REPLY => (0, s.width == 0),
            _ => return None,
        };
        (s.flags & !flags_ok == 0 && width_ok).then_some(s)
    }
}

/// Names of the reasons a framed connection is closed for (`SockState::framing_error` holds the
/// index plus one). Stable: counters (`payload_malformed_<name>`) and applications use them.
pub const REASONS: [&str; 26] = [
    "truncated",
    "length_too_large",
    "length_too_small",
    "bare_lf",
    "bad_request_line",
    "bad_status_line",
    "bad_version",
    "bad_header",
    "header_too_long",
    "bad_content_length",
    "conflicting_content_length",
    "te_and_content_length",
    "bad_transfer_encoding",
    "bad_chunk_size",
    "bad_chunk_ext",
    "chunk_ext_too_long",
    "bad_chunk_end",
    "bad_resp_type",
    "bad_resp_length",
    "bulk_too_large",
    "array_too_large",
    "bad_resp_integer",
    "bad_resp_line",
    "bad_bulk_end",
    "resp_too_deep",
    "inline_too_long",
];

/// The name of a `framing_error` code (`None` for 0 or an unknown code).
pub fn reason_name(code: u32) -> Option<&'static str> {
    REASONS.get((code as usize).checked_sub(1)?).copied()
}

/// Largest message length a ring of `size` bytes takes in one record (half the ring, so the
/// agent can fill one record while the host holds another).
pub const fn max_record_len(size: u32) -> u32 {
    size / 2 - HDR
}

/// Producer: the padding a record of `len` message bytes needs at `tail` (0: none, else the
/// bytes up to the ring's end, covered by a `PAD` record), or `None` when `free` bytes are not
/// enough for padding plus record. `Corrupt` when the tail's ring offset is not 4-aligned: the
/// offset depends on the stream's `base`, which sits in shared memory, so a host that moved it
/// would otherwise make the producer write a header across the ring's end.
pub fn room(rx: &Stream, tail: u32, free: u32, len: u32) -> Result<Option<u32>, Corrupt> {
    let pos = rx.pieces(tail, 0)[0].0 as u32;
    if pos % 4 != 0 {
        return Err(Corrupt("record stream base out of step"));
    }
    let end = rx.size() - pos;
    let need = footprint(len);
    let pad = if need <= end { 0 } else { end };
    Ok(pad
        .checked_add(need)
        .filter(|&total| total <= free)
        .map(|_| pad))
}

fn put_header(rx: &Stream, at: u32, h: u32) {
    rx.copy_in(at, &h.to_le_bytes());
}

/// Producer: writes a record at `*tail` (after a `PAD` record of `pad` bytes when
/// [`room`] said so), its message being `a` then `b`, and advances `*tail` past it. Does not
/// publish: the caller publishes once per batch.
pub fn write(rx: &Stream, tail: &mut u32, pad: u32, part: bool, a: &[u8], b: &[u8]) {
    if pad >= HDR {
        put_header(rx, *tail, F_PAD | (pad - HDR));
        *tail = tail.wrapping_add(pad);
    }
    let len = (a.len() + b.len()) as u32;
    put_header(rx, *tail, len | if part { F_PART } else { 0 });
    let at = tail.wrapping_add(HDR);
    rx.copy_in(at, a);
    rx.copy_in(at.wrapping_add(a.len() as u32), b);
    *tail = tail.wrapping_add(footprint(len));
}

/// One record the consumer found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rec {
    /// Ring offset of the message's first byte (`Stream::ptr`).
    pub off: usize,
    pub len: u32,
    /// [`F_PART`] was set.
    pub part: bool,
    /// The head that consumes this record (and any padding before it).
    pub next: u32,
}

/// Consumer: the next record between `head` and `tail` (padding skipped), validated against the
/// ring; `None` when there is none.
pub fn next(rx: &Stream, mut head: u32, tail: u32) -> Result<Option<Rec>, Corrupt> {
    loop {
        let avail = rx.used(head, tail)?;
        if avail == 0 {
            return Ok(None);
        }
        let pos = rx.pieces(head, 0)[0].0 as u32;
        if pos % 4 != 0 || avail < HDR {
            return Err(Corrupt("record stream out of step"));
        }
        let mut h = [0u8; 4];
        rx.copy_out(head, &mut h);
        let h = u32::from_le_bytes(h);
        let len = h & LEN_MASK;
        let fp = footprint(len);
        if fp > avail || fp > rx.size() - pos {
            return Err(Corrupt("record past the tail or the ring's end"));
        }
        if h & F_PAD != 0 {
            if h & F_PART != 0 || pos + fp != rx.size() {
                return Err(Corrupt("padding record not at the ring's end"));
            }
            head = head.wrapping_add(fp);
            continue;
        }
        return Ok(Some(Rec {
            off: (pos + HDR) as usize,
            len,
            part: h & F_PART != 0,
            next: head.wrapping_add(fp),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Producer;
    use crate::primitive::AtomicU32;

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
            // SAFETY: the buffer and indices live as long as the ring and the test uses the view
            // only while the ring is alive.
            unsafe { Stream::new(self.buf.as_mut_ptr(), size, &self.prod, &self.head) }
        }
    }

    fn push(rx: &Stream, tail: &mut u32, msg: &[u8], part: bool) -> bool {
        let free = rx.writable(*tail).unwrap();
        let Some(pad) = room(rx, *tail, free, msg.len() as u32).unwrap() else {
            return false;
        };
        let (a, b) = msg.split_at(msg.len() / 3);
        write(rx, tail, pad, part, a, b);
        rx.publish_tail(*tail);
        true
    }

    fn pop(rx: &Stream, head: &mut u32) -> Option<(Vec<u8>, bool)> {
        let r = next(rx, *head, rx.load_tail()).unwrap()?;
        let mut v = vec![0; r.len as usize];
        // SAFETY: inside the ring (next validated it).
        let s = unsafe { std::slice::from_raw_parts(rx.ptr(r.off), r.len as usize) };
        v.copy_from_slice(s);
        *head = r.next;
        rx.publish_head(*head);
        Some((v, r.part))
    }

    #[test]
    fn spec_round_trips_and_rejects_nonsense() {
        let s = FramingSpec {
            kind: FRAMING_LENGTH,
            flags: SPEC_BIG_ENDIAN,
            width: 2,
            max_message: 1 << 20,
        };
        assert_eq!(FramingSpec::decode(&s.encode()), Some(s));
        let bad = [
            FramingSpec { width: 3, ..s },
            FramingSpec {
                flags: SPEC_CRLF,
                ..s
            },
            FramingSpec {
                kind: FRAMING_LINE,
                flags: SPEC_BIG_ENDIAN,
                width: 0,
                max_message: 0,
            },
            FramingSpec {
                kind: FRAMING_RESP_REQUEST,
                flags: 0,
                width: 2,
                max_message: 0,
            },
            FramingSpec { kind: 7, ..s },
        ];
        for b in bad {
            assert_eq!(FramingSpec::decode(&b.encode()), None, "{b:?}");
        }
        assert_eq!(FramingSpec::decode(&[0; 7]), None);
        let mut e = s.encode();
        e[3] = 1;
        assert_eq!(FramingSpec::decode(&e), None);
    }

    #[test]
    fn reasons_have_codes() {
        assert_eq!(reason_name(0), None);
        assert_eq!(reason_name(1), Some("truncated"));
        assert_eq!(reason_name(26), Some("inline_too_long"));
        assert_eq!(reason_name(27), None);
    }

    #[test]
    fn messages_stay_contiguous_across_the_wrap() {
        let mut r = Ring::new(4096);
        let rx = r.stream();
        let (mut tail, mut head) = (0u32, 0u32);
        let mut sent = std::collections::VecDeque::new();
        // Lengths that walk every alignment and wrap the ring many times; the consumer lags.
        for round in 0..4000u32 {
            let len = (round * 37) % 1500;
            let msg: Vec<u8> = (0..len).map(|i| (i + round) as u8).collect();
            while !push(&rx, &mut tail, &msg, round % 5 == 0) {
                let (got, part) = pop(&rx, &mut head).expect("full ring has a record");
                assert_eq!((got, part), sent.pop_front().unwrap());
            }
            sent.push_back((msg, round % 5 == 0));
            if round % 3 == 0 {
                if let Some(got) = pop(&rx, &mut head) {
                    assert_eq!(got, sent.pop_front().unwrap());
                }
            }
        }
        while let Some(got) = pop(&rx, &mut head) {
            assert_eq!(got, sent.pop_front().unwrap());
        }
        assert!(sent.is_empty());
    }

    #[test]
    fn largest_record_fits_an_empty_ring_at_any_tail() {
        let mut r = Ring::new(4096);
        let rx = r.stream();
        let (mut tail, mut head) = (0u32, 0u32);
        let big = vec![7u8; max_record_len(4096) as usize];
        for skew in [0u32, 4, 100, 2048, 4092] {
            assert!(push(&rx, &mut tail, &vec![1; skew as usize], false));
            pop(&rx, &mut head).unwrap();
            for _ in 0..3 {
                assert!(push(&rx, &mut tail, &big, false));
                assert_eq!(pop(&rx, &mut head).unwrap().0, big);
            }
        }
    }

    #[test]
    fn a_scribbled_base_is_corrupt_for_the_producer() {
        let mut r = Ring::new(4096);
        r.prod.base.store(3, std::sync::atomic::Ordering::Relaxed);
        let rx = r.stream();
        // Tail 0 now sits at ring offset 4093: no aligned header fits there.
        assert!(room(&rx, 0, 4096, 10).is_err());
    }

    #[test]
    fn scribbled_headers_are_corrupt_not_out_of_bounds() {
        let mut r = Ring::new(4096);
        let rx = r.stream();
        let mut tail = 0;
        assert!(push(&rx, &mut tail, b"hello", false));
        // A length past the tail.
        r.buf[..4].copy_from_slice(&(100u32).to_le_bytes());
        let rx = r.stream();
        assert!(next(&rx, 0, tail).is_err());
        // A length past the ring's end.
        r.buf[..4].copy_from_slice(&(5000u32).to_le_bytes());
        let rx = r.stream();
        assert!(next(&rx, 0, 4096).is_err());
        // Padding that does not end at the ring's end.
        r.buf[..4].copy_from_slice(&(F_PAD | 8).to_le_bytes());
        let rx = r.stream();
        assert!(next(&rx, 0, tail).is_err());
        // A head out of step with the records.
        r.buf[..4].copy_from_slice(&(5u32).to_le_bytes());
        let rx = r.stream();
        assert!(next(&rx, 1, tail).is_err());
    }
}
