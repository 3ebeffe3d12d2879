//! RESP2, the Redis protocol. A message is one complete top-level value.
//!
//! Requests (`RespRequest`, for servers), as Redis reads them:
//! - a multibulk command: `*N\r\n` then N bulk strings `$len\r\n<len bytes>\r\n`. Elements must be
//!   bulk strings (else `bad_resp_type`); `$-1` is `bad_resp_length`. `*0\r\n` and `*-1\r\n` are
//!   empty commands: Redis ignores them, so they come out as `Skip`.
//! - an inline command: any line not starting with `*`, ending at `\n` (usually `\r\n`), e.g.
//!   `PING\r\n`; longer than [`RESP_INLINE_LIMIT`] (64 KiB) is `inline_too_long`. An empty line
//!   (`\n` or `\r\n`) is `Skip`ped. Splitting the line into arguments is the application's job.
//!
//! Replies (`RespReply`, for clients): the full RESP2 value grammar: simple string `+...\r\n`,
//! error `-...\r\n` (neither may hold a CR or LF: `bad_resp_line`), integer `:[-]digits\r\n` (an
//! `i64`, else `bad_resp_integer`), bulk string `$len\r\n<data>\r\n` and null bulk `$-1\r\n`,
//! array `*N\r\n` + N values and null array `*-1\r\n`, nested up to [`RESP_DEPTH_LIMIT`]
//! (`resp_too_deep`). Any other type byte (RESP3's too) is `bad_resp_type`.
//!
//! Both: numbers are `0` or `[-]` then digits without a leading zero, then CRLF, as Redis's
//! `string2ll` reads them (else `bad_resp_length`, or `bad_resp_integer` after `:`); a bulk over
//! [`RESP_BULK_LIMIT`] (512 MiB) is `bulk_too_large`, an array over [`RESP_ARRAY_LIMIT`] elements
//! `array_too_large`; bulk data not followed by CRLF is `bad_bulk_end`. Bulk data is skipped,
//! never read, and the open arrays' remaining counts are kept between calls, so a large array
//! arriving byte by byte costs O(n).

use super::input::Input;
use super::{
    Cursor, Reason, Step, RESP_ARRAY_LIMIT, RESP_BULK_LIMIT, RESP_DEPTH_LIMIT, RESP_INLINE_LIMIT,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NumKind {
    Integer,
    Bulk,
    Array,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    /// At the first byte of a value.
    Type,
    /// In a simple string or error, up to its CR.
    Line,
    LineLf,
    /// In the digits after `:`, `$` or `*`.
    Num(NumKind),
    NumLf(NumKind),
    /// In bulk data; `bulk_left` bytes to go.
    Bulk,
    BulkCr,
    BulkLf,
    /// A request that began with `\r`: an empty line if `\n` follows.
    InlineCr,
    /// In an inline command, up to its `\n`.
    Inline,
}

#[derive(Debug)]
pub(super) struct RespFramer {
    requests: bool,
    cur: Cursor,
    /// `cur.end` ends a run to skip, not a message.
    skip: bool,
    st: St,
    /// Elements still expected by each open array, outermost first.
    stack: [u32; RESP_DEPTH_LIMIT],
    depth: usize,
    num: u64,
    neg: bool,
    digits: bool,
    bulk_left: u64,
    /// Bytes of the inline command scanned so far.
    inline_len: usize,
}

impl RespFramer {
    pub(super) fn new(requests: bool) -> Self {
        RespFramer {
            requests,
            cur: Cursor::default(),
            skip: false,
            st: St::Type,
            stack: [0; RESP_DEPTH_LIMIT],
            depth: 0,
            num: 0,
            neg: false,
            digits: false,
            bulk_left: 0,
            inline_len: 0,
        }
    }

    fn reset(&mut self) {
        *self = RespFramer::new(self.requests);
    }

    pub(super) fn consume(&mut self, n: usize) -> bool {
        let boundary = self.cur.consume(n);
        if boundary {
            self.reset();
        }
        boundary
    }

    pub(super) fn advance(&mut self, input: &Input<'_>, limit: usize) -> Step {
        if let Some(e) = self.cur.end {
            return if self.skip {
                Step::Skip(e)
            } else {
                Step::End(e)
            };
        }
        while self.cur.pos < limit {
            match self.st {
                St::Bulk => {
                    let room = (limit - self.cur.pos) as u64;
                    let take = self.bulk_left.min(room);
                    self.cur.pos += take as usize;
                    self.bulk_left -= take;
                    if self.bulk_left == 0 {
                        self.st = St::BulkCr;
                    }
                    continue;
                }
                St::Inline => {
                    let start = self.cur.pos;
                    match input.find(b'\n', start, limit) {
                        Some(i) => {
                            self.inline_len += i + 1 - start;
                            if self.inline_len > RESP_INLINE_LIMIT {
                                return Step::Bad(Reason::InlineTooLong);
                            }
                            return self.end_at(i + 1, false);
                        }
                        None => {
                            self.inline_len += limit - start;
                            self.cur.pos = limit;
                            if self.inline_len >= RESP_INLINE_LIMIT {
                                return Step::Bad(Reason::InlineTooLong);
                            }
                            return Step::Need;
                        }
                    }
                }
                _ => {}
            }
            let Some(b) = input.get(self.cur.pos) else {
                return Step::Need;
            };
            self.cur.pos += 1;
            if let Some(step) = self.byte(b) {
                return step;
            }
        }
        Step::Need
    }

    /// One byte in a state that reads bytes one at a time; `Some` when the framer has a verdict.
    fn byte(&mut self, b: u8) -> Option<Step> {
        match self.st {
            St::Type => self.value_start(b),
            St::Line => match b {
                b'\r' => {
                    self.st = St::LineLf;
                    None
                }
                b'\n' => Some(Step::Bad(Reason::BadRespLine)),
                _ => None,
            },
            St::LineLf => match b {
                b'\n' => self.value_done(),
                _ => Some(Step::Bad(Reason::BadRespLine)),
            },
            St::Num(kind) => self.digit(kind, b),
            St::NumLf(kind) => match b {
                b'\n' => self.number_done(kind),
                _ => Some(Step::Bad(bad_number(kind))),
            },
            St::BulkCr => match b {
                b'\r' => {
                    self.st = St::BulkLf;
                    None
                }
                _ => Some(Step::Bad(Reason::BadBulkEnd)),
            },
            St::BulkLf => match b {
                b'\n' => self.value_done(),
                _ => Some(Step::Bad(Reason::BadBulkEnd)),
            },
            St::InlineCr => match b {
                b'\n' => Some(self.end_at(self.cur.pos, true)),
                _ => {
                    self.st = St::Inline;
                    self.inline_len = 2;
                    None
                }
            },
            // Handled in `advance`.
            St::Bulk | St::Inline => None,
        }
    }

    fn value_start(&mut self, b: u8) -> Option<Step> {
        self.num = 0;
        self.neg = false;
        self.digits = false;
        if self.requests && self.depth == 0 {
            match b {
                b'*' => self.st = St::Num(NumKind::Array),
                b'\n' => return Some(self.end_at(self.cur.pos, true)),
                b'\r' => self.st = St::InlineCr,
                _ => {
                    self.st = St::Inline;
                    self.inline_len = 1;
                }
            }
            return None;
        }
        if self.requests && b != b'$' {
            return Some(Step::Bad(Reason::BadRespType));
        }
        self.st = match b {
            b'+' | b'-' => St::Line,
            b':' => St::Num(NumKind::Integer),
            b'$' => St::Num(NumKind::Bulk),
            b'*' => St::Num(NumKind::Array),
            _ => return Some(Step::Bad(Reason::BadRespType)),
        };
        None
    }

    fn digit(&mut self, kind: NumKind, b: u8) -> Option<Step> {
        match b {
            b'-' if !self.neg && !self.digits => {
                self.neg = true;
                None
            }
            // Redis refuses leading zeros (string2ll): `0` alone is the only number starting with 0.
            b'0'..=b'9' if self.digits && self.num == 0 => Some(Step::Bad(bad_number(kind))),
            b'0'..=b'9' => {
                self.digits = true;
                let v = self
                    .num
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(u64::from(b - b'0')));
                let Some(v) = v else {
                    return Some(Step::Bad(bad_number(kind)));
                };
                self.num = v;
                let bad = match (kind, self.neg) {
                    (NumKind::Integer, neg) => {
                        (v > i64::MAX as u64 + u64::from(neg)).then_some(Reason::BadRespInteger)
                    }
                    // Only -1 is a valid negative length.
                    (_, true) => (v > 1).then_some(Reason::BadRespLength),
                    (NumKind::Bulk, false) => (v > RESP_BULK_LIMIT).then_some(Reason::BulkTooLarge),
                    (NumKind::Array, false) => {
                        (v > RESP_ARRAY_LIMIT).then_some(Reason::ArrayTooLarge)
                    }
                };
                bad.map(Step::Bad)
            }
            b'\r' if self.digits => {
                self.st = St::NumLf(kind);
                None
            }
            _ => Some(Step::Bad(bad_number(kind))),
        }
    }

    fn number_done(&mut self, kind: NumKind) -> Option<Step> {
        if self.neg && kind != NumKind::Integer && self.num != 1 {
            return Some(Step::Bad(Reason::BadRespLength));
        }
        if self.neg && self.num == 0 {
            return Some(Step::Bad(Reason::BadRespInteger));
        }
        let null = self.neg && kind != NumKind::Integer;
        match kind {
            NumKind::Integer => self.value_done(),
            NumKind::Bulk if null => {
                if self.requests {
                    Some(Step::Bad(Reason::BadRespLength))
                } else {
                    self.value_done()
                }
            }
            NumKind::Bulk => {
                self.bulk_left = self.num;
                self.st = if self.num == 0 { St::BulkCr } else { St::Bulk };
                None
            }
            NumKind::Array if null || self.num == 0 => {
                if self.requests {
                    Some(self.end_at(self.cur.pos, true))
                } else {
                    self.value_done()
                }
            }
            NumKind::Array => {
                if self.depth >= RESP_DEPTH_LIMIT || (self.requests && self.depth >= 1) {
                    return Some(Step::Bad(Reason::RespTooDeep));
                }
                // num <= RESP_ARRAY_LIMIT fits in u32.
                self.stack[self.depth] = u32::try_from(self.num).unwrap_or(u32::MAX);
                self.depth += 1;
                self.st = St::Type;
                None
            }
        }
    }

    /// A value ended at `cur.pos`: the message ends if it was the top-level one.
    fn value_done(&mut self) -> Option<Step> {
        while self.depth > 0 {
            let top = &mut self.stack[self.depth - 1];
            *top = top.saturating_sub(1);
            if *top > 0 {
                self.st = St::Type;
                return None;
            }
            self.depth -= 1;
        }
        Some(self.end_at(self.cur.pos, false))
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

fn bad_number(kind: NumKind) -> Reason {
    match kind {
        NumKind::Integer => Reason::BadRespInteger,
        NumKind::Bulk | NumKind::Array => Reason::BadRespLength,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Framer, Framing, Reason, Scan, RESP_DEPTH_LIMIT, RESP_INLINE_LIMIT};

    const REQ: Framing = Framing::RespRequest;
    const REP: Framing = Framing::RespReply;

    #[test]
    fn commands_every_way() {
        let cmds: [&[u8]; 6] = [
            b"*1\r\n$4\r\nPING\r\n",
            b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nv\r\nal\r\n",
            b"PING\r\n",
            b"get  \"a b\" c\n",
            b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n",
            b"x\ry\r\n",
        ];
        check_every_way(REQ, 1 << 20, &cmds.concat(), &msgs(&cmds));
    }

    #[test]
    fn empty_commands_are_skipped() {
        let stream = b"\r\n\n*0\r\n*-1\r\nPING\r\n";
        let expected = [
            Ev::Skip(2),
            Ev::Skip(1),
            Ev::Skip(4),
            Ev::Skip(5),
            Ev::Msg(b"PING\r\n".to_vec()),
        ];
        check_every_way(REQ, 64, stream, &expected);
    }

    #[test]
    fn replies_every_way() {
        let replies: [&[u8]; 11] = [
            b"+OK\r\n",
            b"-ERR unknown command\r\n",
            b":1000\r\n",
            b":-42\r\n",
            b"$5\r\nhello\r\n",
            b"$-1\r\n",
            b"$0\r\n\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*3\r\n:1\r\n*2\r\n+a\r\n$1\r\n\n\r\n*0\r\n",
            b"*2\r\n*1\r\n*1\r\n$-1\r\n-E\r\n",
        ];
        check_every_way(REP, 1 << 20, &replies.concat(), &msgs(&replies));
    }

    #[test]
    fn big_values_come_in_parts() {
        let mut v = b"$100\r\n".to_vec();
        v.extend(std::iter::repeat(b'v').take(100));
        v.extend_from_slice(b"\r\n");
        let mut cmd = b"*2\r\n$3\r\nSET\r\n".to_vec();
        cmd.extend_from_slice(&v);
        let parts = |m: &[u8], max: usize| -> Vec<Ev> {
            let mut ev: Vec<Ev> = m.chunks(max).map(|c| Ev::Part(c.to_vec())).collect();
            if let Some(Ev::Part(last)) = ev.pop() {
                ev.push(Ev::Msg(last));
            }
            ev
        };
        check_every_way(REQ, 32, &cmd, &parts(&cmd, 32));
        check_every_way(REP, 20, &v, &parts(&v, 20));
        // A long inline command too.
        let mut inline = vec![b'a'; 70];
        inline.extend_from_slice(b"\r\n");
        check_every_way(REQ, 30, &inline, &parts(&inline, 30));
    }

    #[test]
    fn a_large_array_byte_by_byte_is_linear() {
        let n = 10_000;
        let mut reply = format!("*{n}\r\n").into_bytes();
        for i in 0..n {
            reply.extend_from_slice(format!("${}\r\n{i}\r\n", i.to_string().len()).as_bytes());
        }
        let mut f = Framer::new(REP, 1 << 20);
        for k in 1..reply.len() {
            assert_eq!(f.scan(&reply[..k / 2], &reply[k / 2..k]), Scan::Need);
        }
        assert_eq!(f.scan(&reply, b""), Scan::Message(reply.len()));
        // O(n): the framer looked at each byte once. A rescan per call would take minutes here
        // (~1.5e5 calls over up to 1.5e5 bytes each); this test is the guard.
    }

    #[test]
    fn malformed_commands() {
        let cases: &[(&[u8], Reason)] = &[
            (b"*1\r\n+PING\r\n", Reason::BadRespType),
            (b"*1\r\n*1\r\n", Reason::BadRespType),
            (b"*x\r\n", Reason::BadRespLength),
            (b"*1\r\n$-1\r\n", Reason::BadRespLength),
            (b"*1\r\n$\r\n", Reason::BadRespLength),
            (b"*1\n", Reason::BadRespLength),
            (b"*-2\r\n", Reason::BadRespLength),
            (b"*1\r\n$536870913\r\n", Reason::BulkTooLarge),
            (b"*2147483648\r\n", Reason::ArrayTooLarge),
            (b"*1\r\n$3\r\nGETx\r\n", Reason::BadBulkEnd),
            (b"*1\r\n$3\r\nGET\rx", Reason::BadBulkEnd),
        ];
        for &(stream, reason) in cases {
            assert_eq!(
                feed(REQ, 4096, &[stream], Split::Whole, false),
                [Ev::Bad(reason)],
                "{}",
                String::from_utf8_lossy(stream)
            );
            let bytes: Vec<&[u8]> = stream.chunks(1).collect();
            assert_eq!(
                feed(REQ, 4096, &bytes, Split::Mid, false),
                [Ev::Bad(reason)]
            );
        }
        // 512 MiB exactly is allowed.
        let mut f = Framer::new(REQ, 4096);
        assert_eq!(f.scan(b"*1\r\n$536870912\r\n", b""), Scan::Need);
        // Inline commands are bounded.
        let long = vec![b'a'; RESP_INLINE_LIMIT];
        assert_eq!(
            feed(REQ, 1 << 20, &[&long], Split::Whole, false),
            [Ev::Bad(Reason::InlineTooLong)]
        );
        let mut ok = vec![b'a'; RESP_INLINE_LIMIT - 2];
        ok.extend_from_slice(b"\r\n");
        assert_eq!(
            feed(REQ, 1 << 20, &[&ok], Split::Whole, false),
            msgs(&[&ok])
        );
        let mut f = Framer::new(REQ, 4096);
        assert_eq!(f.scan(b"PING", b""), Scan::Need);
        f.finish();
        assert_eq!(f.scan(b"PING", b""), Scan::Malformed(Reason::Truncated));
    }

    #[test]
    fn malformed_replies() {
        let cases: &[(&[u8], Reason)] = &[
            (b"?x\r\n", Reason::BadRespType),
            (b"_\r\n", Reason::BadRespType),
            (b"*1\r\n%1\r\n", Reason::BadRespType),
            (b"+OK\n", Reason::BadRespLine),
            (b"+O\rK\r\n", Reason::BadRespLine),
            (b"-E\nX\r\n", Reason::BadRespLine),
            (b":12a\r\n", Reason::BadRespInteger),
            (b":\r\n", Reason::BadRespInteger),
            (b":--1\r\n", Reason::BadRespInteger),
            (b":9223372036854775808\r\n", Reason::BadRespInteger),
            (b"$-2\r\n", Reason::BadRespLength),
            (b"$-0\r\n", Reason::BadRespLength),
            (b"$1x\r\n", Reason::BadRespLength),
            (b"$999999999999\r\n", Reason::BulkTooLarge),
            (b"*99999999999\r\n", Reason::ArrayTooLarge),
            (b"$2\r\nabc\r\n", Reason::BadBulkEnd),
            (b"$01\r\na\r\n", Reason::BadRespLength),
            (b"*00\r\n", Reason::BadRespLength),
            (b":007\r\n", Reason::BadRespInteger),
            (b":-0\r\n", Reason::BadRespInteger),
        ];
        for &(stream, reason) in cases {
            assert_eq!(
                feed(REP, 4096, &[stream], Split::Whole, false),
                [Ev::Bad(reason)],
                "{}",
                String::from_utf8_lossy(stream)
            );
        }
        assert_eq!(
            feed(
                REP,
                64,
                &[b":-9223372036854775808\r\n"],
                Split::Whole,
                false
            ),
            msgs(&[b":-9223372036854775808\r\n"])
        );
        let deep_ok = "*1\r\n".repeat(RESP_DEPTH_LIMIT) + ":1\r\n";
        assert_eq!(
            feed(REP, 4096, &[deep_ok.as_bytes()], Split::Whole, false),
            msgs(&[deep_ok.as_bytes()])
        );
        let deep = "*1\r\n".repeat(RESP_DEPTH_LIMIT + 1);
        assert_eq!(
            feed(REP, 4096, &[deep.as_bytes()], Split::Whole, false),
            [Ev::Bad(Reason::RespTooDeep)]
        );
    }

    /// A random valid reply, at most `depth` arrays deep.
    fn random_reply(rng: &mut Rng, depth: usize, out: &mut Vec<u8>) {
        match rng.below(if depth == 0 { 6 } else { 7 }) {
            0 => out.extend_from_slice(format!("+s{}\r\n", rng.below(1000)).as_bytes()),
            1 => out.extend_from_slice(b"-ERR x\r\n"),
            2 => out.extend_from_slice(format!(":{}\r\n", rng.next() as i64).as_bytes()),
            3 => out.extend_from_slice(b"$-1\r\n"),
            4 | 5 => {
                let len = if rng.below(5) == 0 {
                    rng.below(300)
                } else {
                    rng.below(10)
                } as usize;
                out.extend_from_slice(format!("${len}\r\n").as_bytes());
                out.extend((0..len).map(|_| rng.next() as u8));
                out.extend_from_slice(b"\r\n");
            }
            _ => {
                let n = rng.below(5);
                out.extend_from_slice(format!("*{n}\r\n").as_bytes());
                for _ in 0..n {
                    random_reply(rng, depth - 1, out);
                }
            }
        }
    }

    fn random_command(rng: &mut Rng) -> Vec<u8> {
        if rng.below(4) == 0 {
            return format!("CMD {} x\r\n", rng.below(100)).into_bytes();
        }
        let n = 1 + rng.below(5);
        let mut c = format!("*{n}\r\n").into_bytes();
        for _ in 0..n {
            let len = if rng.below(5) == 0 {
                rng.below(300)
            } else {
                rng.below(10)
            } as usize;
            c.extend_from_slice(format!("${len}\r\n").as_bytes());
            c.extend((0..len).map(|_| rng.next() as u8));
            c.extend_from_slice(b"\r\n");
        }
        c
    }

    #[test]
    fn random_values_frame_back_exactly() {
        let mut rng = Rng(7);
        for round in 0..400 {
            let mut stream = Vec::new();
            let mut values = Vec::new();
            for _ in 0..rng.below(6) {
                let mut v = Vec::new();
                if round % 2 == 0 {
                    random_reply(&mut rng, 4, &mut v);
                } else {
                    v = random_command(&mut rng);
                }
                stream.extend_from_slice(&v);
                values.push(v);
            }
            let max = 16 + rng.below(400) as usize;
            let framing = if round % 2 == 0 { REP } else { REQ };
            check_random(&mut rng, framing, max, &stream, &values);
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let alphabet: &[&[u8]] = &[
            b"*",
            b"$",
            b"+",
            b"-",
            b":",
            b"1",
            b"2",
            b"-1",
            b"\r\n",
            b"\r",
            b"\n",
            b"*2\r\n",
            b"$3\r\nabc\r\n",
            b"PING",
        ];
        fuzz(REQ, alphabet, 1500, 5, true);
        fuzz(REP, alphabet, 1500, 6, true);
    }
}
