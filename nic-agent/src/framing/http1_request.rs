//! HTTP/1.1 requests (`Framing::Http1Request`, for servers): the request line (RFC 9112 3).
//! The message is the request's raw bytes as on the wire: head and body.
//!
//! ```text
//!   method SP request-target SP HTTP/1.x CRLF   fields   CRLF   body
//! ```
//!
//! Accepted: a token method; a target of visible bytes (and obs-text), not parsed further; any
//! HTTP/1.x version; CRLF or a bare LF after it (RFC 9112 2.2). Empty lines before the request
//! line (CRLF or LF) are `Skip`ped one line at a time (RFC 9112 2.2). Rejected with
//! `bad_request_line`: an empty method or target, more than one SP between parts, a control byte,
//! a CR not followed by LF, a malformed version; an HTTP version other than 1.x is `bad_version`.
//! The fields and body follow `http1` (the shared message rules): Content-Length or chunked,
//! else no body (RFC 9112 6.3 item 7).

use super::http1_version::Version;
use super::{is_tchar, is_vchar_or_obs, Reason};

#[derive(Clone, Copy, Debug)]
enum St {
    Method { len: usize },
    Target { len: usize },
    Version,
    AfterVersion,
    Cr,
}

#[derive(Debug)]
pub(super) struct RequestLine {
    st: St,
    version: Version,
}

impl RequestLine {
    pub(super) fn new() -> Self {
        RequestLine {
            st: St::Method { len: 0 },
            version: Version::default(),
        }
    }

    pub(super) fn is_http10(&self) -> bool {
        self.version.is_1_0()
    }

    /// One byte of the request line; true at its final LF.
    pub(super) fn feed(&mut self, b: u8) -> Result<bool, Reason> {
        const BAD: Reason = Reason::BadRequestLine;
        match self.st {
            St::Method { len } => match b {
                b' ' if len > 0 => self.st = St::Target { len: 0 },
                _ if is_tchar(b) => self.st = St::Method { len: len + 1 },
                _ => return Err(BAD),
            },
            St::Target { len } => match b {
                b' ' if len > 0 => self.st = St::Version,
                _ if is_vchar_or_obs(b) => self.st = St::Target { len: len + 1 },
                _ => return Err(BAD),
            },
            St::Version => {
                if self.version.feed(b, BAD)? {
                    self.st = St::AfterVersion;
                }
            }
            St::AfterVersion => match b {
                b'\r' => self.st = St::Cr,
                b'\n' => return Ok(true),
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
    use super::super::{Framer, Framing, Reason, Scan, HTTP_HEAD_LIMIT};

    const F: Framing = Framing::Http1Request;

    #[test]
    fn pipelined_requests_every_way() {
        let reqs: [&[u8]; 6] = [
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST /x?y=1 HTTP/1.1\r\nContent-Length: 5\r\ncontent-type: text/plain\r\n\r\nhello",
            b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
            b"GET /lf HTTP/1.0\nHost:b\n\n",
            b"POST / HTTP/1.1\r\ncontent-length:0\r\n\r\n",
            b"DELETE /d HTTP/1.1\r\nCONTENT-LENGTH: 3, 3\r\nContent-Length: 3\r\n\r\nxyz",
        ];
        let stream: Vec<u8> = reqs.concat();
        check_every_way(F, 1 << 20, &stream, &msgs(&reqs));
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let stream = b"\r\n\n\r\nGET / HTTP/1.1\r\n\r\n\r\nGET /2 HTTP/1.1\r\n\r\n";
        let expected = [
            Ev::Skip(2),
            Ev::Skip(1),
            Ev::Skip(2),
            Ev::Msg(b"GET / HTTP/1.1\r\n\r\n".to_vec()),
            Ev::Skip(2),
            Ev::Msg(b"GET /2 HTTP/1.1\r\n\r\n".to_vec()),
        ];
        check_every_way(F, 1024, stream, &expected);
    }

    #[test]
    fn large_requests_come_in_parts() {
        let mut req = b"POST /big HTTP/1.1\r\nContent-Length: 100\r\n\r\n".to_vec();
        let head = req.len();
        req.extend(std::iter::repeat(b'b').take(100));
        let mut stream = req.clone();
        stream.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let max = 64;
        let expected = [
            Ev::Part(req[..64].to_vec()),
            Ev::Part(req[64..128].to_vec()),
            Ev::Msg(req[128..].to_vec()),
            Ev::Msg(b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ];
        assert!(head < 64);
        check_every_way(F, max, &stream, &expected);
        // A head longer than max_message (but within the head limit) also comes in parts.
        let mut req = b"GET / HTTP/1.1\r\nX: ".to_vec();
        req.extend(std::iter::repeat(b'h').take(50));
        req.extend_from_slice(b"\r\n\r\n");
        let expected = [
            Ev::Part(req[..32].to_vec()),
            Ev::Part(req[32..64].to_vec()),
            Ev::Msg(req[64..].to_vec()),
        ];
        check_every_way(F, 32, &req, &expected);
    }

    #[test]
    fn chunked_large_body_in_parts() {
        let mut req = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n".to_vec();
        req.extend(std::iter::repeat(b'c').take(64));
        req.extend_from_slice(b"\r\n0\r\n\r\n");
        let expected: Vec<Ev> = {
            let mut v: Vec<Ev> = req.chunks(40).map(|c| Ev::Part(c.to_vec())).collect();
            let last = match v.pop() {
                Some(Ev::Part(p)) => p,
                _ => unreachable!(),
            };
            v.push(Ev::Msg(last));
            v
        };
        assert_ne!(req.len() % 40, 0);
        check_every_way(F, 40, &req, &expected);
    }

    #[test]
    fn malformed_requests() {
        let cases: &[(&[u8], Reason)] = &[
            (b"GET  / HTTP/1.1\r\n\r\n", Reason::BadRequestLine),
            (b"GET  HTTP/1.1\r\n\r\n", Reason::BadRequestLine),
            (b" GET / HTTP/1.1\r\n\r\n", Reason::BadRequestLine),
            (b"GET / HTTP/1.1 \r\n\r\n", Reason::BadRequestLine),
            (b"GET /\x01 HTTP/1.1\r\n\r\n", Reason::BadRequestLine),
            (b"GET / http/1.1\r\n\r\n", Reason::BadRequestLine),
            (b"GET / HTTP/1.1\rX\r\n", Reason::BadRequestLine),
            (b"GET /\r\n\r\n", Reason::BadRequestLine),
            (b"\rGET / HTTP/1.1\r\n\r\n", Reason::BadRequestLine),
            (b"G(T / HTTP/1.1\r\n\r\n", Reason::BadRequestLine),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Reason::BadVersion),
            (b"GET / HTTP/0.9\r\n\r\n", Reason::BadVersion),
            (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", Reason::BadHeader),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
                Reason::BadHeader,
            ),
            (
                b"GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                Reason::ConflictingContentLength,
            ),
            (
                b"GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                Reason::BadContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                Reason::TeAndContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                Reason::TeAndContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                Reason::BadTransferEncoding,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                Reason::BadTransferEncoding,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                Reason::BadTransferEncoding,
            ),
            (
                b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                Reason::BadTransferEncoding,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                Reason::BadChunkSize,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;\x7f\r\n",
                Reason::BadChunkExt,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
                Reason::BadChunkEnd,
            ),
        ];
        for &(stream, reason) in cases {
            let ev = feed(F, 1 << 16, &[stream], Split::Whole, false);
            assert_eq!(ev, [Ev::Bad(reason)], "{}", String::from_utf8_lossy(stream));
            let bytes: Vec<&[u8]> = stream.chunks(1).collect();
            assert_eq!(feed(F, 1 << 16, &bytes, Split::Mid, false), ev);
            // After a good request too.
            let mut two = b"GET / HTTP/1.1\r\n\r\n".to_vec();
            two.extend_from_slice(stream);
            let ev2 = feed(F, 1 << 16, &[&two], Split::At(7), false);
            assert_eq!(
                ev2,
                [Ev::Msg(b"GET / HTTP/1.1\r\n\r\n".to_vec()), Ev::Bad(reason)]
            );
        }
    }

    #[test]
    fn head_limit() {
        let mut req = b"GET / HTTP/1.1\r\nX: ".to_vec();
        req.extend(std::iter::repeat(b'a').take(HTTP_HEAD_LIMIT));
        let mut f = Framer::new(F, 1 << 20);
        assert_eq!(f.scan(&req, b""), Scan::Malformed(Reason::HeaderTooLong));
        // Just within the limit.
        let mut req = b"GET / HTTP/1.1\r\nX: ".to_vec();
        req.extend(std::iter::repeat(b'a').take(HTTP_HEAD_LIMIT - req.len() - 4));
        req.extend_from_slice(b"\r\n\r\n");
        assert_eq!(req.len(), HTTP_HEAD_LIMIT);
        let mut f = Framer::new(F, 1 << 20);
        assert_eq!(f.scan(&req, b""), Scan::Message(HTTP_HEAD_LIMIT));
        // With parts: the limit still counts the whole head.
        req.insert(20, b'a');
        let ev = feed(F, 1000, &[&req], Split::Whole, false);
        assert_eq!(ev.last(), Some(&Ev::Bad(Reason::HeaderTooLong)));
        assert_eq!(ev.len(), 1 + HTTP_HEAD_LIMIT / 1000);
    }

    #[test]
    fn truncated_at_close() {
        for stream in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab",
            b"\r",
        ] {
            assert_eq!(
                feed(F, 1024, &[stream], Split::Whole, true),
                [Ev::Bad(Reason::Truncated)]
            );
        }
        assert_eq!(
            feed(F, 1024, &[b"GET / HTTP/1.1\r\n\r\n"], Split::Whole, true),
            msgs(&[b"GET / HTTP/1.1\r\n\r\n"])
        );
    }

    /// A random valid request and its bytes.
    pub(crate) fn random_request(rng: &mut Rng) -> Vec<u8> {
        let method = *rng.pick(&["GET", "POST", "PUT", "X-CUSTOM"]);
        let minor = rng.below(2);
        let http10 = minor == 0;
        let mut r = format!("{method} /p{} HTTP/1.{minor}", rng.below(1000)).into_bytes();
        let eol: &[u8] = if rng.below(6) == 0 { b"\n" } else { b"\r\n" };
        r.extend_from_slice(eol);
        for i in 0..rng.below(5) {
            r.extend_from_slice(
                format!(
                    "X-H{i}:{}v{}",
                    " ".repeat(rng.below(3) as usize),
                    rng.next()
                )
                .as_bytes(),
            );
            r.extend_from_slice(eol);
        }
        let len = if rng.below(4) == 0 {
            rng.below(400)
        } else {
            rng.below(20)
        } as usize;
        let body: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        match rng.below(3) {
            0 if len == 0 => {}
            1 if !http10 => {
                r.extend_from_slice(b"Transfer-Encoding: chunked");
                r.extend_from_slice(eol);
                r.extend_from_slice(eol);
                for c in body.chunks(1 + rng.below(50) as usize) {
                    r.extend_from_slice(
                        format!(
                            "{:x}{}\r\n",
                            c.len(),
                            if rng.below(3) == 0 { ";a=b" } else { "" }
                        )
                        .as_bytes(),
                    );
                    r.extend_from_slice(c);
                    r.extend_from_slice(b"\r\n");
                }
                r.extend_from_slice(b"0\r\n");
                if rng.below(2) == 0 {
                    r.extend_from_slice(b"Trailer-X: 1\r\n");
                }
                r.extend_from_slice(b"\r\n");
                return r;
            }
            _ => {
                r.extend_from_slice(format!("Content-Length: {len}").as_bytes());
                r.extend_from_slice(eol);
            }
        }
        r.extend_from_slice(eol);
        r.extend_from_slice(&body);
        r
    }

    #[test]
    fn random_requests_frame_back_exactly() {
        let mut rng = Rng(1234);
        for _ in 0..300 {
            let mut stream = Vec::new();
            let mut reqs = Vec::new();
            for _ in 0..rng.below(6) {
                if rng.below(5) == 0 {
                    stream.extend_from_slice(b"\r\n");
                }
                let r = random_request(&mut rng);
                stream.extend_from_slice(&r);
                reqs.push(r);
            }
            let max = 16 + rng.below(600) as usize;
            check_random(&mut rng, F, max, &stream, &reqs);
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let alphabet: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\n",
            b"POST / HTTP/1.0\r\n",
            b"\r\n",
            b"\n",
            b"\r",
            b"Content-Length: 3\r\n",
            b"Content-Length: 3, 4\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"Host: x\r\n",
            b"3\r\nabc\r\n",
            b"0\r\n\r\n",
            b"a;x\r\n",
            b" ",
            b":",
            b"abc",
        ];
        fuzz(F, alphabet, 1500, 3, true);
    }
}
