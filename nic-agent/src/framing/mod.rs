//! Message framers (issue 11, the payload API): the agent splits each connection's byte stream
//! into whole messages by a framing the application declared, so the host application receives
//! whole requests and never parses a stream.
//!
//! Sans-IO: a [`Framer`] is the per-connection state of one framing. It reads no clock, does no
//! I/O and allocates nothing after [`Framer::new`]. The caller hands it the unconsumed bytes as up
//! to two slices (a ring's bytes before and after its wrap) and gets a [`Scan`] verdict back:
//!
//! ```text
//!   unconsumed input:  [ a ..................... | b ........ ]
//!                      ^front
//!   scan(a, b)  ->  Need          no boundary yet: wait for more bytes
//!               ->  Message(n)    the first n bytes are one whole message (or the last part of one)
//!               ->  Part(n)       the message is longer than max_message: n == max_message bytes of it
//!               ->  Skip(n)       n <= 5 bytes that belong to no message (an empty line before an
//!                                 HTTP request, an empty RESP command)
//!               ->  Malformed(r)  the peer broke the framing: close the connection, count r.name()
//!   consume(n)      the caller took n bytes off the front (after Message, Part or Skip)
//! ```
//!
//! Each byte is examined once: the framer keeps its parse position between calls and skips body
//! and payload bytes whose length it already knows, so a message that trickles in byte by byte
//! costs O(n) in total. Boundaries do not depend on how the bytes arrived or where the ring
//! wrapped; the only exceptions are [`Framing::Raw`] (whatever is there is a message) and bodies
//! that end at the connection's close.
//!
//! Parts: a message longer than `max_message` is delivered as `Part(max_message)` verdicts while
//! at least `max_message` bytes of it are present, and ends with a `Message` (at most
//! `max_message` bytes). A framer looks at most `max_message` bytes past the front, so where the
//! parts fall depends only on the stream.
//!
//! End of stream: [`Framer::finish`] says no byte follows those given. A body that lasts until the
//! close (an HTTP response without a length) is then delivered; anything else cut short is
//! `Malformed(Reason::Truncated)`.
//!
//! Files: `input` (the two-slice view), one file per framing (`raw`, `length`, `line`,
//! `http1_request`, `http1_response`, `resp`) and the HTTP/1.1 pieces they share (`http1`: the
//! message machine, `http1_fields`: field lines, `http1_version`: `HTTP/x.y`, `chunked`: the
//! chunked body); `testutil` feeds streams every way for the tests. The agent runs them
//! on framed connections (`framed.rs` in the agent binary); the module is public in the library
//! so that tests and tools can reach it too.

mod chunked;
mod http1;
mod http1_fields;
mod http1_request;
mod http1_response;
mod http1_version;
mod input;
mod length;
mod line;
mod raw;
mod resp;
#[cfg(test)]
mod testutil;

use std::fmt;

pub use http1_response::ResponseTo;
use input::Input;

/// `max_message` is raised to at least this, so a length header, a chunk line's CRLF or an empty
/// line always fits in one window.
pub const MIN_MAX_MESSAGE: usize = 16;
/// Largest payload a length prefix may announce (not counting the header).
pub const LENGTH_HARD_LIMIT: u64 = 1 << 30;
/// Longest HTTP/1.1 head (start line, fields, empty line), and longest trailer section.
pub const HTTP_HEAD_LIMIT: usize = 64 * 1024;
/// Most chunk-extension bytes one chunked HTTP/1.1 body may carry (RFC 9112 7.1.1).
pub const HTTP_CHUNK_EXT_LIMIT: usize = 64 * 1024;
/// Largest RESP bulk string (Redis's default `proto-max-bulk-len`).
pub const RESP_BULK_LIMIT: u64 = 512 * 1024 * 1024;
/// Most elements a RESP array may announce (Redis refuses more than `INT_MAX`).
pub const RESP_ARRAY_LIMIT: u64 = i32::MAX as u64;
/// Deepest nesting of RESP arrays in a reply.
pub const RESP_DEPTH_LIMIT: usize = 32;
/// Longest RESP inline command, delimiter included (Redis's `PROTO_INLINE_MAX_SIZE`).
pub const RESP_INLINE_LIMIT: usize = 64 * 1024;

/// How a connection's byte stream divides into messages. Each framing's file documents exactly
/// what it accepts and rejects; `docs/payload-api.md` ("Framing") sums it up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Every available byte is message content: `Message(min(available, max_message))`.
    Raw,
    /// A length header then that many payload bytes; the message is header plus payload.
    Length {
        width: LengthWidth,
        big_endian: bool,
        /// The length counts the header too (then it must be at least the header's width).
        includes_header: bool,
    },
    /// Lines ending in `\n`; with `crlf`, ending in `\r\n` and a bare `\n` is malformed. The
    /// message includes its delimiter.
    Line { crlf: bool },
    /// HTTP/1.1 requests (RFC 9112), for servers.
    Http1Request,
    /// HTTP/1.1 responses (RFC 9112), for clients; see [`Framer::expect_response`].
    Http1Response,
    /// RESP2 commands, for servers: multibulk arrays of bulk strings, and inline commands.
    RespRequest,
    /// RESP2 replies, for clients: one whole top-level value of the full RESP2 grammar.
    RespReply,
}

/// Width of a length prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LengthWidth {
    U16,
    U32,
}

impl LengthWidth {
    pub const fn bytes(self) -> usize {
        match self {
            LengthWidth::U16 => 2,
            LengthWidth::U32 => 4,
        }
    }
}

/// A framer's verdict on the unconsumed input.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// No boundary in the input yet: call again with more bytes.
    Need,
    /// The first `n` bytes are one whole message, or the last part of one delivered in parts.
    /// `n` is 0 only for a response body that ended at the close right after a part.
    Message(usize),
    /// The current message is longer than `max_message`: deliver its next `n` (`== max_message`)
    /// bytes as a part, flagged; more parts and a final `Message` follow.
    Part(usize),
    /// `n` bytes that belong to no message (an empty line where a request may start): consume
    /// them without delivering anything.
    Skip(usize),
    /// The input breaks the framing; the framer stays in this state. Close the connection.
    Malformed(Reason),
}

/// Why input was malformed. [`Reason::name`] is stable: counters and logs use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The stream ended inside a message (after [`Framer::finish`]).
    Truncated,
    /// A length prefix announced more than [`LENGTH_HARD_LIMIT`] payload bytes.
    LengthTooLarge,
    /// A length prefix that counts its header was smaller than the header.
    LengthTooSmall,
    /// A `\n` without `\r` before it where lines end in `\r\n`.
    BareLf,
    /// An HTTP request line that is not `method SP target SP HTTP/x.y` (RFC 9112 3), or a stray
    /// CR before it.
    BadRequestLine,
    /// An HTTP status line that is not `HTTP/x.y SP 3DIGIT [SP reason]` (RFC 9112 4).
    BadStatusLine,
    /// An HTTP version other than 1.x (RFC 9112 2.3).
    BadVersion,
    /// A malformed field line: no name, whitespace before the colon, obs-fold, a control byte in
    /// a value, a bare CR (RFC 9112 5, 5.1, 5.2; RFC 9110 5.5).
    BadHeader,
    /// The head (or trailer section) exceeded [`HTTP_HEAD_LIMIT`].
    HeaderTooLong,
    /// A Content-Length value that is not a list of decimal numbers (RFC 9112 6.3 item 5).
    BadContentLength,
    /// Content-Length values that differ (RFC 9110 8.6, RFC 9112 6.3 item 5).
    ConflictingContentLength,
    /// Both Transfer-Encoding and Content-Length (RFC 9112 6.3 item 3: request smuggling).
    TeAndContentLength,
    /// A request whose final transfer coding is not `chunked`, `chunked` applied twice, or any
    /// Transfer-Encoding in an HTTP/1.0 message (RFC 9112 6.1, 6.3 item 4).
    BadTransferEncoding,
    /// A chunk size that is not hex, too large, or not ended by CRLF (RFC 9112 7.1).
    BadChunkSize,
    /// A control byte in a chunk extension (RFC 9112 7.1.1).
    BadChunkExt,
    /// More than [`HTTP_CHUNK_EXT_LIMIT`] bytes of chunk extensions in one body.
    ChunkExtTooLong,
    /// Chunk data not followed by CRLF (RFC 9112 7.1).
    BadChunkEnd,
    /// A RESP value starting with a byte that is not a RESP2 type (or not `$` inside a command).
    BadRespType,
    /// A RESP `$` or `*` length that is not a decimal number (or `-1` where allowed).
    BadRespLength,
    /// A RESP bulk string longer than [`RESP_BULK_LIMIT`].
    BulkTooLarge,
    /// A RESP array announcing more than [`RESP_ARRAY_LIMIT`] elements.
    ArrayTooLarge,
    /// A RESP integer that is not a decimal `i64`.
    BadRespInteger,
    /// A RESP simple string or error with a CR or LF that is not its CRLF end.
    BadRespLine,
    /// A RESP bulk string's data not followed by CRLF.
    BadBulkEnd,
    /// RESP arrays nested deeper than [`RESP_DEPTH_LIMIT`].
    RespTooDeep,
    /// A RESP inline command longer than [`RESP_INLINE_LIMIT`].
    InlineTooLong,
}

impl Reason {
    /// Every reason, for counter tables.
    pub const ALL: [Reason; 26] = [
        Reason::Truncated,
        Reason::LengthTooLarge,
        Reason::LengthTooSmall,
        Reason::BareLf,
        Reason::BadRequestLine,
        Reason::BadStatusLine,
        Reason::BadVersion,
        Reason::BadHeader,
        Reason::HeaderTooLong,
        Reason::BadContentLength,
        Reason::ConflictingContentLength,
        Reason::TeAndContentLength,
        Reason::BadTransferEncoding,
        Reason::BadChunkSize,
        Reason::BadChunkExt,
        Reason::ChunkExtTooLong,
        Reason::BadChunkEnd,
        Reason::BadRespType,
        Reason::BadRespLength,
        Reason::BulkTooLarge,
        Reason::ArrayTooLarge,
        Reason::BadRespInteger,
        Reason::BadRespLine,
        Reason::BadBulkEnd,
        Reason::RespTooDeep,
        Reason::InlineTooLong,
    ];

    /// The stable short name (snake case) for counters and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Truncated => "truncated",
            Reason::LengthTooLarge => "length_too_large",
            Reason::LengthTooSmall => "length_too_small",
            Reason::BareLf => "bare_lf",
            Reason::BadRequestLine => "bad_request_line",
            Reason::BadStatusLine => "bad_status_line",
            Reason::BadVersion => "bad_version",
            Reason::BadHeader => "bad_header",
            Reason::HeaderTooLong => "header_too_long",
            Reason::BadContentLength => "bad_content_length",
            Reason::ConflictingContentLength => "conflicting_content_length",
            Reason::TeAndContentLength => "te_and_content_length",
            Reason::BadTransferEncoding => "bad_transfer_encoding",
            Reason::BadChunkSize => "bad_chunk_size",
            Reason::BadChunkExt => "bad_chunk_ext",
            Reason::ChunkExtTooLong => "chunk_ext_too_long",
            Reason::BadChunkEnd => "bad_chunk_end",
            Reason::BadRespType => "bad_resp_type",
            Reason::BadRespLength => "bad_resp_length",
            Reason::BulkTooLarge => "bulk_too_large",
            Reason::ArrayTooLarge => "array_too_large",
            Reason::BadRespInteger => "bad_resp_integer",
            Reason::BadRespLine => "bad_resp_line",
            Reason::BadBulkEnd => "bad_bulk_end",
            Reason::RespTooDeep => "resp_too_deep",
            Reason::InlineTooLong => "inline_too_long",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a framing's parser found in the window `[0, limit)` of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// No end in the window; every byte of it belongs to the current message.
    Need,
    /// The current message ends after `n <= limit` bytes.
    End(usize),
    /// The first `n` bytes belong to no message.
    Skip(usize),
    Bad(Reason),
}

/// The parse position shared by the framings that scan: `pos` bytes from the front are parsed,
/// and `end` is the current message's end once found.
#[derive(Clone, Copy, Debug, Default)]
struct Cursor {
    pos: usize,
    end: Option<usize>,
}

impl Cursor {
    /// `n` bytes left the front. True when the current message (or skipped run) is over, or when
    /// the caller took bytes never scanned: then the next message starts at the new front.
    fn consume(&mut self, n: usize) -> bool {
        match self.end {
            Some(e) if n >= e => return true,
            Some(e) => self.end = Some(e - n),
            None => {}
        }
        if n <= self.pos {
            self.pos -= n;
            false
        } else {
            true
        }
    }
}

#[derive(Debug)]
enum Inner {
    Raw,
    Length(length::LengthFramer),
    Line(line::LineFramer),
    Http1(Box<http1::Http1>),
    Resp(resp::RespFramer),
}

impl Inner {
    fn new(framing: Framing) -> Inner {
        match framing {
            Framing::Raw => Inner::Raw,
            Framing::Length {
                width,
                big_endian,
                includes_header,
            } => Inner::Length(length::LengthFramer::new(
                width,
                big_endian,
                includes_header,
            )),
            Framing::Line { crlf } => Inner::Line(line::LineFramer::new(crlf)),
            Framing::Http1Request => Inner::Http1(Box::new(http1::Http1::new_request())),
            Framing::Http1Response => Inner::Http1(Box::new(http1::Http1::new_response())),
            Framing::RespRequest => Inner::Resp(resp::RespFramer::new(true)),
            Framing::RespReply => Inner::Resp(resp::RespFramer::new(false)),
        }
    }
}

/// Per-connection framing state. See the module doc for the protocol of `scan` and `consume`.
#[derive(Debug)]
pub struct Framer {
    framing: Framing,
    inner: Inner,
    max: usize,
    /// Bytes of the current message already delivered as parts.
    delivered: usize,
    eof: bool,
    failed: Option<Reason>,
}

impl Framer {
    /// A framer at the start of a stream. `max_message` (raised to [`MIN_MAX_MESSAGE`]) is the
    /// largest message delivered whole; longer ones come in parts.
    pub fn new(framing: Framing, max_message: usize) -> Framer {
        Framer {
            framing,
            inner: Inner::new(framing),
            max: max_message.max(MIN_MAX_MESSAGE),
            delivered: 0,
            eof: false,
            failed: None,
        }
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    pub fn max_message(&self) -> usize {
        self.max
    }

    /// Bytes of the current message already delivered as parts (0 between messages).
    pub fn delivered(&self) -> usize {
        self.delivered
    }

    /// The next boundary in the unconsumed input `a` then `b` (`b` may be empty). The answer does
    /// not depend on how the input was split across calls or between `a` and `b`; calling again
    /// without `consume` gives the same answer. The input must start at the front and hold every
    /// unconsumed byte given before.
    pub fn scan(&mut self, a: &[u8], b: &[u8]) -> Scan {
        if let Some(r) = self.failed {
            return Scan::Malformed(r);
        }
        let input = Input::new(a, b);
        let limit = input.len().min(self.max);
        let step = match &mut self.inner {
            Inner::Raw => raw::advance(limit),
            Inner::Length(f) => f.advance(&input, limit),
            Inner::Line(f) => f.advance(&input, limit),
            Inner::Http1(f) => f.advance(&input, limit, self.eof),
            Inner::Resp(f) => f.advance(&input, limit),
        };
        match step {
            Step::End(n) => Scan::Message(n),
            Step::Skip(n) => Scan::Skip(n),
            Step::Bad(r) => self.fail(r),
            Step::Need if input.len() >= self.max => Scan::Part(self.max),
            Step::Need if self.eof && (input.len() > 0 || self.delivered > 0) => {
                self.fail(Reason::Truncated)
            }
            Step::Need => Scan::Need,
        }
    }

    fn fail(&mut self, r: Reason) -> Scan {
        self.failed = Some(r);
        Scan::Malformed(r)
    }

    /// The caller took `n` bytes off the front: the `n` of a `Message`, `Part` or `Skip` verdict.
    /// Taking more than a message's length drops the extra bytes unparsed (the next message starts
    /// after them).
    pub fn consume(&mut self, n: usize) {
        let boundary = match &mut self.inner {
            Inner::Raw => true,
            Inner::Length(f) => f.consume(n),
            Inner::Line(f) => f.consume(n),
            Inner::Http1(f) => f.consume(n),
            Inner::Resp(f) => f.consume(n),
        };
        if boundary {
            self.delivered = 0;
        } else {
            self.delivered = self.delivered.saturating_add(n);
        }
    }

    /// The peer closed its direction: no byte will follow those already given. A response body
    /// delimited by the close is then delivered; any other unfinished message is `Truncated`.
    pub fn finish(&mut self) {
        self.eof = true;
    }

    /// HTTP/1.1 responses only: record, in the order the requests were sent, what the next
    /// unanswered request was. Needed for HEAD (its response has no body) and CONNECT (a 2xx
    /// response turns the connection into a tunnel); a client that sends neither may skip it.
    /// Returns false (and records nothing) for other framings or with 64 requests outstanding.
    pub fn expect_response(&mut self, to: ResponseTo) -> bool {
        match &mut self.inner {
            Inner::Http1(f) => f.expect_response(to),
            _ => false,
        }
    }

    /// HTTP/1.1 responses: whether the current response's body lasts until the connection closes
    /// (RFC 9112 6.3 items 4 and 8). Its bytes come as parts of `max_message` and the rest as a
    /// `Message` after [`Framer::finish`].
    pub fn body_until_close(&self) -> bool {
        match &self.inner {
            Inner::Http1(f) => f.body_until_close(),
            _ => false,
        }
    }

    /// From the next message on, the stream is raw bytes (after the application accepted an
    /// HTTP upgrade or a CONNECT tunnel). Call it between messages. HTTP/1.1 response framers
    /// switch by themselves after a 101 response and a 2xx response to CONNECT.
    pub fn switch_to_raw(&mut self) {
        self.inner = Inner::Raw;
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// VCHAR or obs-text (RFC 9110 5.5).
fn is_vchar_or_obs(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

#[cfg(test)]
mod tests {
    use super::testutil::Rng;
    use super::*;

    const ALL_FRAMINGS: [Framing; 9] = [
        Framing::Raw,
        Framing::Length {
            width: LengthWidth::U16,
            big_endian: true,
            includes_header: false,
        },
        Framing::Length {
            width: LengthWidth::U32,
            big_endian: false,
            includes_header: true,
        },
        Framing::Line { crlf: false },
        Framing::Line { crlf: true },
        Framing::Http1Request,
        Framing::Http1Response,
        Framing::RespRequest,
        Framing::RespReply,
    ];

    #[test]
    fn reason_names_are_unique_snake_case() {
        let mut names: Vec<&str> = Reason::ALL.iter().map(|r| r.name()).collect();
        for n in &names {
            assert!(
                n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{n}"
            );
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Reason::ALL.len());
        assert_eq!(Reason::BadChunkSize.to_string(), "bad_chunk_size");
    }

    #[test]
    fn max_message_has_a_floor() {
        let f = Framer::new(Framing::Raw, 0);
        assert_eq!(f.max_message(), MIN_MAX_MESSAGE);
    }

    /// Random bytes, random windows, random (even wrong) consume amounts and a random close:
    /// no framer may panic, loop, or claim bytes it was not given.
    #[test]
    fn random_bytes_and_misuse_never_panic() {
        let mut rng = Rng(0xf00d);
        for round in 0..4000 {
            let framing = ALL_FRAMINGS[round % ALL_FRAMINGS.len()];
            let mut f = Framer::new(framing, rng.below(200) as usize);
            let mut buf: Vec<u8> = Vec::new();
            let dense = rng.below(2) == 0;
            for _ in 0..rng.below(30) {
                for _ in 0..rng.below(40) {
                    buf.push(if dense {
                        rng.next() as u8
                    } else {
                        *rng.pick(b"\r\n*$+-:0123456789 abcHTTP/1.1:;")
                    });
                }
                if rng.below(10) == 0 {
                    f.finish();
                }
                if rng.below(20) == 0 {
                    let _ = f.expect_response(ResponseTo::Head);
                }
                for _ in 0..8 {
                    let k = rng.below(buf.len() as u64 + 1) as usize;
                    let (a, b) = buf.split_at(k);
                    let n = match f.scan(a, b) {
                        Scan::Need | Scan::Malformed(_) => break,
                        Scan::Message(n) | Scan::Part(n) | Scan::Skip(n) => n,
                    };
                    assert!(n <= buf.len() && n <= f.max_message(), "{framing:?}");
                    // Usually the right amount; sometimes less, more, or anything.
                    let take = match rng.below(8) {
                        0 => n / 2,
                        1 => n + rng.below(5) as usize,
                        2 => rng.below(1 << 40) as usize,
                        _ => n,
                    };
                    f.consume(take);
                    buf.drain(..take.min(buf.len()));
                }
            }
            let _ = f.body_until_close();
            let _ = f.delivered();
        }
    }
}
