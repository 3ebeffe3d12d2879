//! HTTP/1.1 responses (`Framing::Http1Response`, for clients): the status line (RFC 9112 4) and
//! the response-only body rules of RFC 9112 6.3. The message is the response's raw bytes.
//!
//! ```text
//!   HTTP/1.x SP 3DIGIT [SP reason-phrase] CRLF   fields   CRLF   body
//! ```
//!
//! Accepted: any HTTP/1.x version, a status code from 100 to 599, a reason phrase of visible
//! bytes, SP and HTAB; a missing `SP reason-phrase` is tolerated; CRLF or a bare LF ends the line.
//! Rejected: anything else in the status line (`bad_status_line`), a version other than 1.x
//! (`bad_version`); fields and lengths as for requests (`http1`).
//!
//! Bodies (RFC 9112 6.3): none for 1xx, 204 and 304 and for the response to a HEAD request;
//! none for a 2xx to CONNECT, after which the connection is a tunnel (raw framing), as after a
//! 101. Otherwise chunked if the last transfer coding is `chunked`; until the close if another
//! coding is last, or if there is neither Transfer-Encoding nor Content-Length (then
//! [`Framer::body_until_close`](super::Framer::body_until_close) is true, the body comes in parts
//! of `max_message`, and the rest as a `Message` after `finish`). The framer learns which
//! request a response answers from [`Framer::expect_response`](super::Framer::expect_response),
//! called once per request in sending order; without it every response answers a GET-like request.
//! 1xx responses are messages of their own and do not use up a request.

use super::http1_version::Version;
use super::{is_vchar_or_obs, Reason};

/// What the request a response answers was, as far as framing cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseTo {
    /// Any method whose response body follows the usual rules.
    Other,
    /// HEAD: the response has no body whatever its fields say.
    Head,
    /// CONNECT: a 2xx response has no body and opens a tunnel.
    Connect,
}

/// The requests sent and not yet answered, oldest first: 2 bits each, up to 64.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ResponseQueue {
    bits: u128,
    len: u8,
}

impl ResponseQueue {
    pub(super) fn push(&mut self, to: ResponseTo) -> bool {
        if self.len >= 64 {
            return false;
        }
        let code: u128 = match to {
            ResponseTo::Other => 0,
            ResponseTo::Head => 1,
            ResponseTo::Connect => 2,
        };
        self.bits |= code << (2 * u32::from(self.len));
        self.len += 1;
        true
    }

    /// The oldest unanswered request (`Other` when none was recorded).
    pub(super) fn pop(&mut self) -> ResponseTo {
        if self.len == 0 {
            return ResponseTo::Other;
        }
        let code = self.bits & 3;
        self.bits >>= 2;
        self.len -= 1;
        match code {
            1 => ResponseTo::Head,
            2 => ResponseTo::Connect,
            _ => ResponseTo::Other,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum St {
    Version,
    Sp,
    Code { digits: u8 },
    AfterCode,
    Phrase,
    Cr,
}

#[derive(Debug)]
pub(super) struct StatusLine {
    st: St,
    version: Version,
    status: u16,
}

impl StatusLine {
    pub(super) fn new() -> Self {
        StatusLine {
            st: St::Version,
            version: Version::default(),
            status: 0,
        }
    }

    pub(super) fn is_http10(&self) -> bool {
        self.version.is_1_0()
    }

    pub(super) fn status(&self) -> u16 {
        self.status
    }

    /// One byte of the status line; true at its final LF.
    pub(super) fn feed(&mut self, b: u8) -> Result<bool, Reason> {
        const BAD: Reason = Reason::BadStatusLine;
        match self.st {
            St::Version => {
                if self.version.feed(b, BAD)? {
                    self.st = St::Sp;
                }
            }
            St::Sp => match b {
                b' ' => self.st = St::Code { digits: 0 },
                _ => return Err(BAD),
            },
            St::Code { digits } => match b {
                b'0'..=b'9' => {
                    self.status = self.status * 10 + u16::from(b - b'0');
                    self.st = if digits == 2 {
                        if !(100..=599).contains(&self.status) {
                            return Err(BAD);
                        }
                        St::AfterCode
                    } else {
                        St::Code { digits: digits + 1 }
                    };
                }
                _ => return Err(BAD),
            },
            St::AfterCode => match b {
                b' ' => self.st = St::Phrase,
                b'\r' => self.st = St::Cr,
                b'\n' => return Ok(true),
                _ => return Err(BAD),
            },
            St::Phrase => match b {
                b'\r' => self.st = St::Cr,
                b'\n' => return Ok(true),
                b' ' | b'\t' => {}
                _ if is_vchar_or_obs(b) => {}
                _ => return Err(BAD),
            },
            St::Cr => match b {
                b'\n' => return Ok(true),
                _ => return Err(BAD),
            },
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Framer, Framing, Reason, ResponseTo, Scan};

    const F: Framing = Framing::Http1Response;

    #[test]
    fn pipelined_responses_every_way() {
        let resps: [&[u8]; 7] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\nX: y\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
            b"HTTP/1.0 200\nContent-Length: 1\n\nz",
            b"HTTP/1.1 404 \r\ncontent-length: 0\r\n\r\n",
        ];
        check_every_way(F, 1 << 20, &resps.concat(), &msgs(&resps));
    }

    #[test]
    fn head_responses_have_no_body() {
        let stream = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let mut f = Framer::new(F, 1024);
        assert!(f.expect_response(ResponseTo::Head));
        assert!(f.expect_response(ResponseTo::Other));
        let first = 38;
        assert_eq!(f.scan(stream, b""), Scan::Message(first));
        f.consume(first);
        assert_eq!(
            f.scan(&stream[first..], b""),
            Scan::Message(stream.len() - first)
        );
        // Without the HEAD mark the first body swallows 5 bytes of the second response.
        let mut f = Framer::new(F, 1024);
        assert_eq!(f.scan(stream, b""), Scan::Message(first + 5));
        // The queue is bounded.
        let mut f = Framer::new(F, 1024);
        for _ in 0..64 {
            assert!(f.expect_response(ResponseTo::Other));
        }
        assert!(!f.expect_response(ResponseTo::Head));
        assert!(!Framer::new(Framing::Http1Request, 64).expect_response(ResponseTo::Head));
    }

    #[test]
    fn until_close_bodies() {
        let resp = b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nsome body bytes that runs on";
        let mut f = Framer::new(F, 1024);
        assert_eq!(f.scan(resp, b""), Scan::Need);
        assert!(f.body_until_close());
        f.finish();
        assert_eq!(f.scan(resp, b""), Scan::Message(resp.len()));
        check_every_way_eof(F, 1024, resp, &msgs(&[resp]), true);
        // Longer than max: parts while bytes come, the rest at the close.
        let expected = [
            Ev::Part(resp[..16].to_vec()),
            Ev::Part(resp[16..32].to_vec()),
            Ev::Part(resp[32..48].to_vec()),
            Ev::Msg(resp[48..].to_vec()),
        ];
        check_every_way_eof(F, 16, resp, &expected, true);
        // A part that happens to end the stream leaves an empty final message.
        let expected = [
            Ev::Part(resp[..resp.len() / 2].to_vec()),
            Ev::Part(resp[resp.len() / 2..].to_vec()),
            Ev::Msg(Vec::new()),
        ];
        assert_eq!(resp.len() % 2, 0);
        check_every_way_eof(F, resp.len() / 2, resp, &expected, true);
        // A transfer coding other than chunked last: until close too.
        let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n\x1f\x8b";
        check_every_way_eof(F, 1024, resp, &msgs(&[resp]), true);
        // HTTP/1.0 without a length.
        let resp = b"HTTP/1.0 200 OK\r\n\r\nabc";
        check_every_way_eof(F, 1024, resp, &msgs(&[resp]), true);
    }

    #[test]
    fn tunnels_after_101_and_connect() {
        let stream = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello";
        let head = stream.len() - 7;
        assert_eq!(
            feed(F, 1024, &[stream], Split::Whole, false),
            [
                Ev::Msg(stream[..head].to_vec()),
                Ev::Msg(stream[head..].to_vec())
            ]
        );
        let mut f = Framer::new(F, 1024);
        assert!(f.expect_response(ResponseTo::Connect));
        let stream = b"HTTP/1.1 200 Connection established\r\n\r\nraw";
        assert_eq!(f.scan(stream, b""), Scan::Message(stream.len() - 3));
        f.consume(stream.len() - 3);
        assert_eq!(f.scan(b"raw", b"more"), Scan::Message(7));
        // A refused CONNECT has an ordinary body.
        let mut f = Framer::new(F, 1024);
        assert!(f.expect_response(ResponseTo::Connect));
        let stream = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nnoHTTP/1.1";
        assert_eq!(f.scan(stream, b""), Scan::Message(stream.len() - 8));
    }

    #[test]
    fn malformed_responses() {
        let cases: &[(&[u8], Reason)] = &[
            (b"HTTP/1.1 20 OK\r\n\r\n", Reason::BadStatusLine),
            (b"HTTP/1.1 2000 OK\r\n\r\n", Reason::BadStatusLine),
            (b"HTTP/1.1 099 X\r\n\r\n", Reason::BadStatusLine),
            (b"HTTP/1.1 600 X\r\n\r\n", Reason::BadStatusLine),
            (b"HTTP/1.1  200 OK\r\n\r\n", Reason::BadStatusLine),
            (b"HTTP/1.1 200 O\x00K\r\n\r\n", Reason::BadStatusLine),
            (b"HTTP/1.1\r\n\r\n", Reason::BadStatusLine),
            (b"HTTX/1.1 200 OK\r\n\r\n", Reason::BadStatusLine),
            (b"\rHTTP/1.1 200 OK\r\n\r\n", Reason::BadStatusLine),
            (b"HTTP/2.0 200 OK\r\n\r\n", Reason::BadVersion),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Reason::TeAndContentLength,
            ),
            (
                b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Reason::BadTransferEncoding,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1,2\r\n\r\n",
                Reason::ConflictingContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nx\r\n",
                Reason::BadChunkSize,
            ),
        ];
        for &(stream, reason) in cases {
            assert_eq!(
                feed(F, 4096, &[stream], Split::Whole, false),
                [Ev::Bad(reason)],
                "{}",
                String::from_utf8_lossy(stream)
            );
            let bytes: Vec<&[u8]> = stream.chunks(1).collect();
            assert_eq!(feed(F, 4096, &bytes, Split::Mid, false), [Ev::Bad(reason)]);
        }
        assert_eq!(
            feed(
                F,
                4096,
                &[b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab"],
                Split::Whole,
                true
            ),
            [Ev::Bad(Reason::Truncated)]
        );
    }

    fn random_response(rng: &mut Rng) -> Vec<u8> {
        let status = *rng.pick(&[200u16, 201, 404, 500, 204, 304, 100]);
        let mut r = format!("HTTP/1.1 {status} Reason {}\r\n", rng.below(99)).into_bytes();
        for i in 0..rng.below(4) {
            r.extend_from_slice(format!("X-{i}: {}\r\n", rng.next()).as_bytes());
        }
        if matches!(status, 204 | 304 | 100) {
            r.extend_from_slice(b"\r\n");
            return r;
        }
        let len = if rng.below(4) == 0 {
            rng.below(300)
        } else {
            rng.below(20)
        } as usize;
        let body: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if rng.below(2) == 0 {
            r.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            for c in body.chunks(1 + rng.below(40) as usize) {
                r.extend_from_slice(format!("{:X}\r\n", c.len()).as_bytes());
                r.extend_from_slice(c);
                r.extend_from_slice(b"\r\n");
            }
            r.extend_from_slice(b"0\r\n\r\n");
        } else {
            r.extend_from_slice(format!("Content-Length: {len}\r\n\r\n").as_bytes());
            r.extend_from_slice(&body);
        }
        r
    }

    #[test]
    fn random_responses_frame_back_exactly() {
        let mut rng = Rng(99);
        for _ in 0..300 {
            let mut stream = Vec::new();
            let mut resps = Vec::new();
            for _ in 0..rng.below(6) {
                let r = random_response(&mut rng);
                stream.extend_from_slice(&r);
                resps.push(r);
            }
            let max = 16 + rng.below(500) as usize;
            check_random(&mut rng, F, max, &stream, &resps);
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let alphabet: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 101 S\r\n",
            b"HTTP/1.0 304 N\r\n",
            b"\r\n",
            b"\n",
            b"Content-Length: 2\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"Transfer-Encoding: gzip\r\n",
            b"2\r\nab\r\n",
            b"0\r\n\r\n",
            b"xyz",
        ];
        fuzz(F, alphabet, 1500, 4, false);
        let no_tunnel: Vec<&[u8]> = alphabet
            .iter()
            .copied()
            .filter(|a| !a.starts_with(b"HTTP/1.1 101"))
            .collect();
        fuzz(F, &no_tunnel, 1500, 7, true);
    }
}
