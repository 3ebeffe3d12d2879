//! The HTTP/1.1 message machine shared by requests and responses (RFC 9112): the start line
//! (`http1_request` / `http1_response`), the header section (`http1_fields`), then the body,
//! whose end RFC 9112 6.3 decides:
//!
//! ```text
//!   Begin --CRLF/LF--> Skip (one empty line, RFC 9112 2.2)
//!     | other byte
//!   StartLine --LF--> Fields --empty line--> body decided:
//!        none (requests without length; 1xx/204/304; responses to HEAD)  -> message ends
//!        Content-Length n   -> n bytes, skipped unread                   -> message ends
//!        chunked            -> `chunked`                                 -> message ends
//!        until close        (responses only)                             -> ends at `finish`
//! ```
//!
//! Rules for both directions: the head (start line to the empty line) is at most
//! [`HTTP_HEAD_LIMIT`] bytes (`header_too_long`); Transfer-Encoding together with
//! Content-Length is `te_and_content_length` (RFC 9112 6.3 item 3: a smuggling attempt, refused
//! rather than resolved); Transfer-Encoding in an HTTP/1.0 message, or `chunked` applied twice,
//! is `bad_transfer_encoding` (RFC 9112 6.1). The message is the raw bytes, head and body.

use super::chunked::{ChunkStep, Chunked};
use super::http1_fields::{FieldLines, FieldStep};
use super::http1_request::RequestLine;
use super::http1_response::{ResponseQueue, ResponseTo, StatusLine};
use super::input::Input;
use super::{raw, Cursor, Reason, Step, HTTP_HEAD_LIMIT};

/// Largest Content-Length accepted (a larger one is `bad_content_length`).
pub(super) const CONTENT_LENGTH_LIMIT: u64 = 1 << 60;

#[derive(Debug)]
enum Start {
    Request(RequestLine),
    Response(StatusLine),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Begin,
    /// A CR where a message may start.
    LeadCr,
    StartLine,
    Fields,
    /// Content-Length body with this many bytes to go.
    Length(u64),
    Chunked,
    UntilClose,
    /// After a 101 or a CONNECT's 2xx: raw bytes from now on.
    Tunnel,
}

#[derive(Debug)]
pub(super) struct Http1 {
    cur: Cursor,
    /// `cur.end` ends an empty line to skip, not a message.
    skip: bool,
    phase: Phase,
    head_len: usize,
    start: Start,
    fields: FieldLines,
    chunked: Chunked,
    /// The current message switches the connection to a tunnel once consumed.
    tunnel_next: bool,
    queue: ResponseQueue,
}

impl Http1 {
    pub(super) fn new_request() -> Self {
        Self::new(Start::Request(RequestLine::new()))
    }

    pub(super) fn new_response() -> Self {
        Self::new(Start::Response(StatusLine::new()))
    }

    fn new(start: Start) -> Self {
        Http1 {
            cur: Cursor::default(),
            skip: false,
            phase: Phase::Begin,
            head_len: 0,
            start,
            fields: FieldLines::new(true),
            chunked: Chunked::new(),
            tunnel_next: false,
            queue: ResponseQueue::default(),
        }
    }

    fn is_response(&self) -> bool {
        matches!(self.start, Start::Response(_))
    }

    fn bad_start(&self) -> Reason {
        if self.is_response() {
            Reason::BadStatusLine
        } else {
            Reason::BadRequestLine
        }
    }

    pub(super) fn expect_response(&mut self, to: ResponseTo) -> bool {
        self.is_response() && self.queue.push(to)
    }

    pub(super) fn body_until_close(&self) -> bool {
        self.phase == Phase::UntilClose
    }

    pub(super) fn consume(&mut self, n: usize) -> bool {
        if self.phase == Phase::Tunnel {
            return true;
        }
        let boundary = self.cur.consume(n);
        if boundary {
            let tunnel = self.tunnel_next;
            self.cur = Cursor::default();
            self.skip = false;
            self.phase = if tunnel { Phase::Tunnel } else { Phase::Begin };
            self.head_len = 0;
            self.start = match self.start {
                Start::Request(_) => Start::Request(RequestLine::new()),
                Start::Response(_) => Start::Response(StatusLine::new()),
            };
            self.fields = FieldLines::new(true);
            self.chunked = Chunked::new();
            self.tunnel_next = false;
        }
        boundary
    }

    pub(super) fn advance(&mut self, input: &Input<'_>, limit: usize, eof: bool) -> Step {
        if self.phase == Phase::Tunnel {
            return raw::advance(limit);
        }
        if let Some(e) = self.cur.end {
            return if self.skip {
                Step::Skip(e)
            } else {
                Step::End(e)
            };
        }
        loop {
            match self.phase {
                Phase::Length(left) => {
                    let take = left.min((limit.saturating_sub(self.cur.pos)) as u64);
                    self.cur.pos += take as usize;
                    if take == left {
                        return self.end_at(self.cur.pos, false);
                    }
                    self.phase = Phase::Length(left - take);
                    return Step::Need;
                }
                Phase::Chunked => {
                    return match self.chunked.advance(input, &mut self.cur.pos, limit) {
                        ChunkStep::Need => Step::Need,
                        ChunkStep::Done => self.end_at(self.cur.pos, false),
                        ChunkStep::Bad(r) => Step::Bad(r),
                    };
                }
                Phase::UntilClose => {
                    self.cur.pos = self.cur.pos.max(limit);
                    if eof && limit == input.len() {
                        return self.end_at(self.cur.pos, false);
                    }
                    return Step::Need;
                }
                Phase::Tunnel => return raw::advance(limit),
                Phase::Begin | Phase::LeadCr | Phase::StartLine | Phase::Fields => {
                    if self.cur.pos >= limit {
                        return Step::Need;
                    }
                    let Some(b) = input.get(self.cur.pos) else {
                        return Step::Need;
                    };
                    self.cur.pos += 1;
                    if let Some(step) = self.head_byte(b) {
                        return step;
                    }
                }
            }
        }
    }

    /// One byte of the head; `Some` when the framer has a verdict.
    fn head_byte(&mut self, b: u8) -> Option<Step> {
        match self.phase {
            Phase::Begin => match b {
                b'\r' => {
                    self.phase = Phase::LeadCr;
                    return None;
                }
                b'\n' => return Some(self.end_at(self.cur.pos, true)),
                _ => self.phase = Phase::StartLine,
            },
            Phase::LeadCr => {
                return Some(match b {
                    b'\n' => self.end_at(self.cur.pos, true),
                    _ => Step::Bad(self.bad_start()),
                });
            }
            _ => {}
        }
        self.head_len += 1;
        if self.head_len > HTTP_HEAD_LIMIT {
            return Some(Step::Bad(Reason::HeaderTooLong));
        }
        if self.phase == Phase::StartLine {
            let done = match &mut self.start {
                Start::Request(l) => l.feed(b),
                Start::Response(l) => l.feed(b),
            };
            match done {
                Ok(true) => self.phase = Phase::Fields,
                Ok(false) => {}
                Err(r) => return Some(Step::Bad(r)),
            }
            return None;
        }
        match self.fields.feed(b) {
            FieldStep::More => None,
            FieldStep::Done => self.head_done(),
            FieldStep::Bad(r) => Some(Step::Bad(r)),
        }
    }

    /// The empty line ending the head: decide how the body ends (RFC 9112 6.3).
    fn head_done(&mut self) -> Option<Step> {
        let f = &self.fields;
        let http10 = match &self.start {
            Start::Request(l) => l.is_http10(),
            Start::Response(l) => l.is_http10(),
        };
        if f.te_present && f.content_length.is_some() {
            return Some(Step::Bad(Reason::TeAndContentLength));
        }
        if f.te_present && (http10 || f.te_chunked_count > 1) {
            return Some(Step::Bad(Reason::BadTransferEncoding));
        }
        let framed = if f.te_present && f.te_last_chunked {
            Phase::Chunked
        } else if f.te_present {
            // RFC 9112 6.3 item 4: a request must be refused; a response lasts until the close.
            Phase::UntilClose
        } else if let Some(n) = f.content_length {
            Phase::Length(n)
        } else {
            Phase::UntilClose
        };
        let phase = match &self.start {
            Start::Request(_) => match framed {
                Phase::UntilClose if f.te_present => {
                    return Some(Step::Bad(Reason::BadTransferEncoding))
                }
                // RFC 9112 6.3 item 7: no length, no body.
                Phase::UntilClose => Phase::Length(0),
                other => other,
            },
            Start::Response(l) => {
                let status = l.status();
                if (100..200).contains(&status) {
                    // Interim: no body, and the final response is still to come.
                    self.tunnel_next = status == 101;
                    Phase::Length(0)
                } else {
                    let to = self.queue.pop();
                    if to == ResponseTo::Connect && (200..300).contains(&status) {
                        self.tunnel_next = true;
                        Phase::Length(0)
                    } else if to == ResponseTo::Head || status == 204 || status == 304 {
                        Phase::Length(0)
                    } else {
                        framed
                    }
                }
            }
        };
        self.phase = phase;
        match phase {
            Phase::Length(0) => Some(self.end_at(self.cur.pos, false)),
            _ => None,
        }
    }

    fn end_at(&mut self, end: usize, skip: bool) -> Step {
        self.cur.pos = end;
        self.cur.end = Some(end);
        self.skip = skip;
        if skip {
            Step::Skip(end)
        } else {
            Step::End(end)
        }
    }
}
