//! Line framing: each message is one line, delimiter included.
//!
//! - `crlf: false`: a line ends at `\n`; a `\r` before it is just content (so `\r\n` lines work
//!   too, and the message keeps the `\r`).
//! - `crlf: true`: a line ends at `\r\n`. A `\n` without a `\r` before it is `bare_lf`:
//!   a peer that sends one disagrees with us about where lines end (the trick behind SMTP
//!   smuggling), so we close rather than guess. A `\r` not followed by `\n` is content.
//!
//! A line longer than `max_message` is delivered in parts (the last one, with the delimiter, as
//! the message), never refused: the application sees the part flag and may close. An empty line
//! (just the delimiter) is a message.

use super::input::Input;
use super::{Cursor, Reason, Step};

#[derive(Debug)]
pub(super) struct LineFramer {
    crlf: bool,
    cur: Cursor,
    /// The byte before `cur.pos` (already scanned, maybe already delivered in a part) is `\r`.
    prev_cr: bool,
}

impl LineFramer {
    pub(super) fn new(crlf: bool) -> Self {
        LineFramer {
            crlf,
            cur: Cursor::default(),
            prev_cr: false,
        }
    }

    pub(super) fn advance(&mut self, input: &Input<'_>, limit: usize) -> Step {
        if let Some(e) = self.cur.end {
            return Step::End(e);
        }
        let start = self.cur.pos;
        if start >= limit {
            return Step::Need;
        }
        match input.find(b'\n', start, limit) {
            Some(i) => {
                if self.crlf {
                    let cr_before = if i == start {
                        self.prev_cr
                    } else {
                        input.get(i - 1) == Some(b'\r')
                    };
                    if !cr_before {
                        return Step::Bad(Reason::BareLf);
                    }
                }
                self.cur.pos = i + 1;
                self.cur.end = Some(i + 1);
                Step::End(i + 1)
            }
            None => {
                self.prev_cr = input.get(limit - 1) == Some(b'\r');
                self.cur.pos = limit;
                Step::Need
            }
        }
    }

    pub(super) fn consume(&mut self, n: usize) -> bool {
        let boundary = self.cur.consume(n);
        if boundary {
            self.cur = Cursor::default();
            self.prev_cr = false;
        }
        boundary
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Framer, Framing, Reason, Scan};

    const LF: Framing = Framing::Line { crlf: false };
    const CRLF: Framing = Framing::Line { crlf: true };

    #[test]
    fn lines_every_way() {
        let stream = b"hello\n\nwith\rcr\r\nlast\n";
        let expected = [
            Ev::Msg(b"hello\n".to_vec()),
            Ev::Msg(b"\n".to_vec()),
            Ev::Msg(b"with\rcr\r\n".to_vec()),
            Ev::Msg(b"last\n".to_vec()),
        ];
        check_every_way(LF, 1024, stream, &expected);
        let stream = b"GET a\r\n\r\nx\ry\r\nend\r\n";
        let expected = [
            Ev::Msg(b"GET a\r\n".to_vec()),
            Ev::Msg(b"\r\n".to_vec()),
            Ev::Msg(b"x\ry\r\n".to_vec()),
            Ev::Msg(b"end\r\n".to_vec()),
        ];
        check_every_way(CRLF, 1024, stream, &expected);
    }

    #[test]
    fn bare_lf_is_malformed_with_crlf() {
        let mut f = Framer::new(CRLF, 64);
        assert_eq!(f.scan(b"ok\r\nbad\n", b""), Scan::Message(4));
        f.consume(4);
        assert_eq!(f.scan(b"bad\n", b""), Scan::Malformed(Reason::BareLf));
        for stream in [&b"\n"[..], b"a\nb\r\n", b"ab\r\r\n\n"] {
            let ev = feed(CRLF, 64, &[stream], Split::Whole, false);
            assert_eq!(ev.last(), Some(&Ev::Bad(Reason::BareLf)), "{stream:?}");
            for k in 0..=stream.len() {
                let (x, y) = stream.split_at(k);
                assert_eq!(feed(CRLF, 64, &[x, y], Split::At(k / 2), false), ev);
            }
        }
    }

    #[test]
    fn long_lines_come_in_parts() {
        let line = [b'a'; 40];
        let mut stream = line.to_vec();
        stream.extend_from_slice(b"\r\nshort\r\n");
        let expected = [
            Ev::Part(stream[..16].to_vec()),
            Ev::Part(stream[16..32].to_vec()),
            Ev::Msg(stream[32..42].to_vec()),
            Ev::Msg(b"short\r\n".to_vec()),
        ];
        check_every_way(CRLF, 16, &stream, &expected);
        check_every_way(LF, 16, &stream, &expected);
        // The CR ends one part and its LF starts the last: still a CRLF, not a bare LF.
        let mut stream = [b'b'; 15].to_vec();
        stream.extend_from_slice(b"\r\n");
        let expected = [Ev::Part(stream[..16].to_vec()), Ev::Msg(b"\n".to_vec())];
        check_every_way(CRLF, 16, &stream, &expected);
        // ...but an LF after a part that did not end in CR is bare.
        let mut stream = [b'b'; 16].to_vec();
        stream.push(b'\n');
        let expected = [Ev::Part(stream[..16].to_vec()), Ev::Bad(Reason::BareLf)];
        check_every_way(CRLF, 16, &stream, &expected);
        // A line of exactly max bytes is whole.
        let mut stream = [b'c'; 14].to_vec();
        stream.extend_from_slice(b"\r\n");
        check_every_way(CRLF, 16, &stream, &[Ev::Msg(stream.clone())]);
    }

    #[test]
    fn truncated_at_close() {
        assert_eq!(
            feed(LF, 64, &[b"a\nb"], Split::Whole, true),
            [Ev::Msg(b"a\n".to_vec()), Ev::Bad(Reason::Truncated)]
        );
        assert_eq!(
            feed(LF, 64, &[b"a\n"], Split::Whole, true),
            [Ev::Msg(b"a\n".to_vec())]
        );
    }

    #[test]
    fn random_lines_frame_back_exactly() {
        let mut rng = Rng(11);
        for crlf in [false, true] {
            for _ in 0..200 {
                let mut stream = Vec::new();
                let mut msgs = Vec::new();
                for _ in 0..rng.below(10) {
                    let len = if rng.below(5) == 0 {
                        rng.below(500)
                    } else {
                        rng.below(20)
                    };
                    let mut m: Vec<u8> = (0..len)
                        .map(|_| match rng.below(10) {
                            0 => b'\r',
                            _ => b'a' + rng.below(26) as u8,
                        })
                        .collect();
                    m.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
                    stream.extend_from_slice(&m);
                    msgs.push(m);
                }
                let max = 16 + rng.below(100) as usize;
                check_random(&mut rng, Framing::Line { crlf }, max, &stream, &msgs);
            }
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        fuzz(LF, &[b"\n", b"\r", b"ab", b"\r\n"], 300, 1, true);
        fuzz(CRLF, &[b"\n", b"\r", b"ab", b"\r\n"], 300, 2, true);
    }
}
