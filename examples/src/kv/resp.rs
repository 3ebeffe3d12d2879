//! RESP2 on the wire: one request message into arguments, replies appended to a `Vec<u8>`.
//!
//! The agent's framer has already checked the request's framing, but this parser trusts nothing:
//! every malformed input is an `Err` with the error text Redis would send, never a panic.
//! Arguments are kept as byte ranges into the message (or into a scratch buffer for inline
//! commands with quotes), in vectors reused from call to call, so parsing allocates nothing once
//! warm.

use std::ops::Range;

/// A request's arguments: ranges into the message, or into the parser's scratch buffer.
#[derive(Default)]
pub struct ArgParser {
    ranges: Vec<Range<usize>>,
    scratch: Vec<u8>,
    in_scratch: bool,
}

/// The parsed arguments of one request, borrowed from the message and the parser.
#[derive(Clone, Copy)]
pub struct Args<'a> {
    base: &'a [u8],
    ranges: &'a [Range<usize>],
}

impl<'a> Args<'a> {
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Argument `i` (`i < len()`).
    pub fn get(&self, i: usize) -> &'a [u8] {
        &self.base[self.ranges[i].clone()]
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        let base = self.base;
        self.ranges.iter().map(move |r| &base[r.clone()])
    }
}

/// Why a request could not be parsed: the error text (without `-` and CRLF).
#[derive(Debug, PartialEq, Eq)]
pub struct ProtocolError(pub &'static str);

impl ArgParser {
    /// Parses one whole request. An empty `Args` means an empty command (ignored by Redis).
    pub fn parse<'a>(&'a mut self, msg: &'a [u8]) -> Result<Args<'a>, ProtocolError> {
        self.ranges.clear();
        self.in_scratch = false;
        if msg.first() == Some(&b'*') {
            self.parse_multibulk(msg)?;
        } else {
            self.parse_inline(msg)?;
        }
        let base = if self.in_scratch {
            &self.scratch[..]
        } else {
            msg
        };
        Ok(Args {
            base,
            ranges: &self.ranges,
        })
    }

    fn parse_multibulk(&mut self, msg: &[u8]) -> Result<(), ProtocolError> {
        let (n, mut pos) =
            read_number(msg, 1).ok_or(ProtocolError("Protocol error: invalid multibulk length"))?;
        if n <= 0 {
            return Ok(());
        }
        if n > 1024 * 1024 || n as usize > msg.len() {
            return Err(ProtocolError("Protocol error: invalid multibulk length"));
        }
        for _ in 0..n {
            if msg.get(pos) != Some(&b'$') {
                return Err(ProtocolError("Protocol error: expected '$'"));
            }
            let (len, after) = read_number(msg, pos + 1)
                .ok_or(ProtocolError("Protocol error: invalid bulk length"))?;
            if len < 0 || len as u64 > 512 * 1024 * 1024 {
                return Err(ProtocolError("Protocol error: invalid bulk length"));
            }
            let end = after
                .checked_add(len as usize)
                .filter(|&e| e.checked_add(2).is_some_and(|e2| e2 <= msg.len()))
                .ok_or(ProtocolError("Protocol error: invalid bulk length"))?;
            if &msg[end..end + 2] != b"\r\n" {
                return Err(ProtocolError("Protocol error: invalid bulk length"));
            }
            self.ranges.push(after..end);
            pos = end + 2;
        }
        if pos != msg.len() {
            return Err(ProtocolError(
                "Protocol error: trailing bytes after the command",
            ));
        }
        Ok(())
    }

    /// Inline commands split as Redis's `sdssplitargs` does: whitespace between arguments,
    /// `"..."` with C escapes (`\n`, `\xHH`, ...), `'...'` with only `\'`.
    fn parse_inline(&mut self, msg: &[u8]) -> Result<(), ProtocolError> {
        let line = msg.strip_suffix(b"\n").unwrap_or(msg);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.iter().any(|&b| b == b'"' || b == b'\'') {
            let mut i = 0;
            while i < line.len() {
                if line[i].is_ascii_whitespace() {
                    i += 1;
                    continue;
                }
                let start = i;
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    i += 1;
                }
                self.ranges.push(start..i);
            }
            return Ok(());
        }
        self.in_scratch = true;
        self.scratch.clear();
        const UNBALANCED: ProtocolError =
            ProtocolError("Protocol error: unbalanced quotes in request");
        let mut i = 0;
        loop {
            while i < line.len() && line[i].is_ascii_whitespace() {
                i += 1;
            }
            if i == line.len() {
                return Ok(());
            }
            let start = self.scratch.len();
            let (mut in_dq, mut in_sq) = (false, false);
            loop {
                let c = line.get(i).copied();
                if in_dq {
                    match c {
                        None => return Err(UNBALANCED),
                        Some(b'\\')
                            if line.get(i + 1) == Some(&b'x')
                                && i + 3 < line.len()
                                && hex(line[i + 2]).is_some()
                                && hex(line[i + 3]).is_some() =>
                        {
                            let v =
                                hex(line[i + 2]).unwrap_or(0) * 16 + hex(line[i + 3]).unwrap_or(0);
                            self.scratch.push(v);
                            i += 3;
                        }
                        Some(b'\\') if i + 1 < line.len() => {
                            i += 1;
                            self.scratch.push(match line[i] {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => 8,
                                b'a' => 7,
                                other => other,
                            });
                        }
                        Some(b'"') => {
                            // The closing quote must be followed by a space or the end.
                            if line.get(i + 1).is_some_and(|b| !b.is_ascii_whitespace()) {
                                return Err(UNBALANCED);
                            }
                            in_dq = false;
                        }
                        Some(b) => self.scratch.push(b),
                    }
                } else if in_sq {
                    match c {
                        None => return Err(UNBALANCED),
                        Some(b'\\') if line.get(i + 1) == Some(&b'\'') => {
                            i += 1;
                            self.scratch.push(b'\'');
                        }
                        Some(b'\'') => {
                            if line.get(i + 1).is_some_and(|b| !b.is_ascii_whitespace()) {
                                return Err(UNBALANCED);
                            }
                            in_sq = false;
                        }
                        Some(b) => self.scratch.push(b),
                    }
                } else {
                    match c {
                        None => break,
                        Some(b) if b.is_ascii_whitespace() => break,
                        Some(b'"') => in_dq = true,
                        Some(b'\'') => in_sq = true,
                        Some(b) => self.scratch.push(b),
                    }
                }
                i += 1;
            }
            self.ranges.push(start..self.scratch.len());
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// A decimal number (optionally negative) at `pos` ended by CRLF: the value and the offset after
/// the CRLF.
fn read_number(msg: &[u8], pos: usize) -> Option<(i64, usize)> {
    let rest = msg.get(pos..)?;
    let end = rest.iter().position(|&b| b == b'\r')?;
    if rest.get(end + 1) != Some(&b'\n') {
        return None;
    }
    let v = parse_i64(&rest[..end])?;
    Some((v, pos + end + 2))
}

/// Parses an integer as Redis's `string2ll` does: optional `-`, digits, no leading zeros (except
/// `0` itself), no `+`, no spaces, within `i64`.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    match digits {
        [] => return None,
        [b'0'] => return if neg { None } else { Some(0) },
        [b'0', ..] => return None,
        _ => {}
    }
    if digits.len() > 19 {
        return None;
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if neg {
        if v <= i64::MAX as u64 + 1 {
            Some((v as i64).wrapping_neg())
        } else {
            None
        }
    } else {
        i64::try_from(v).ok()
    }
}

// ---- replies ----

pub fn ok(out: &mut Vec<u8>) {
    out.extend_from_slice(b"+OK\r\n");
}

pub fn simple(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'+');
    out.extend_from_slice(s);
    out.extend_from_slice(b"\r\n");
}

/// `-<text>\r\n`; CR and LF in `text` become spaces so the reply stays one line.
pub fn error(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'-');
    out.extend(
        text.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

pub fn integer(out: &mut Vec<u8>, v: i64) {
    out.push(b':');
    push_decimal(out, v);
    out.extend_from_slice(b"\r\n");
}

pub fn bulk(out: &mut Vec<u8>, data: &[u8]) {
    out.reserve(data.len() + 16);
    out.push(b'$');
    push_decimal(out, data.len() as i64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

pub fn nil(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

pub fn array_header(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    push_decimal(out, n as i64);
    out.extend_from_slice(b"\r\n");
}

/// Appends `v` in decimal without allocating.
pub fn push_decimal(out: &mut Vec<u8>, v: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut u = v.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(msg: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
        let mut p = ArgParser::default();
        let a = p.parse(msg)?;
        Ok(a.iter().map(<[u8]>::to_vec).collect())
    }

    fn v(items: &[&str]) -> Vec<Vec<u8>> {
        items.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn multibulk() {
        assert_eq!(
            args(b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n").unwrap(),
            v(&["GET", "key"])
        );
        assert_eq!(args(b"*1\r\n$0\r\n\r\n").unwrap(), v(&[""]));
        assert_eq!(args(b"*0\r\n").unwrap(), v(&[]));
        assert_eq!(args(b"*-1\r\n").unwrap(), v(&[]));
        // Binary data with CRLF inside.
        assert_eq!(args(b"*1\r\n$4\r\na\r\nb\r\n").unwrap(), v(&["a\r\nb"]));
    }

    #[test]
    fn multibulk_malformed_never_panics() {
        let good = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n";
        assert!(args(good).is_ok());
        for cut in 0..good.len() {
            let _ = args(&good[..cut]);
            let mut bad = good.to_vec();
            bad[cut] ^= 0x55;
            let _ = args(&bad);
        }
        assert!(args(b"*2\r\n$3\r\nGET\r\n").is_err());
        assert!(args(b"*1\r\n$3\r\nGETX\r\n").is_err());
        assert!(args(b"*1\r\n$-1\r\n").is_err());
        assert!(args(b"*1\r\n:3\r\n").is_err());
        assert!(args(b"*1\r\n$99999999999999999999\r\n").is_err());
        assert!(args(b"*1\r\n$1\r\nab\r\n").is_err());
        assert!(args(b"*x\r\n").is_err());
        assert!(args(b"*1\r\n$1\r\na\r\nextra").is_err());
    }

    #[test]
    fn inline() {
        assert_eq!(args(b"PING\r\n").unwrap(), v(&["PING"]));
        assert_eq!(args(b"PING\n").unwrap(), v(&["PING"]));
        assert_eq!(args(b"  set  a   b \r\n").unwrap(), v(&["set", "a", "b"]));
        assert_eq!(args(b"\r\n").unwrap(), v(&[]));
        assert_eq!(
            args(b"set \"a b\" 'c d'\r\n").unwrap(),
            v(&["set", "a b", "c d"])
        );
        assert_eq!(
            args(b"echo \"x\\ny\\x41\\\"\"\r\n").unwrap(),
            v(&["echo", "x\nyA\""])
        );
        assert_eq!(args(b"echo 'it\\'s'\r\n").unwrap(), v(&["echo", "it's"]));
        assert_eq!(args(b"echo \"\"\r\n").unwrap(), v(&["echo", ""]));
        assert!(args(b"echo \"abc\r\n").is_err());
        assert!(args(b"echo 'abc\r\n").is_err());
        assert!(args(b"echo \"a\"b\r\n").is_err());
        // A parser reused after a quoted line goes back to ranges in the message.
        let mut p = ArgParser::default();
        assert_eq!(p.parse(b"echo \"q\"\r\n").unwrap().get(1), b"q");
        assert_eq!(p.parse(b"get k\r\n").unwrap().get(1), b"k");
    }

    #[test]
    fn integers_as_redis_reads_them() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-1"), Some(-1));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"01",
            b"+1",
            b" 1",
            b"1 ",
            b"9223372036854775808",
            b"1a",
            b"99999999999999999999",
        ] {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn reply_writers() {
        let mut out = Vec::new();
        ok(&mut out);
        integer(&mut out, -42);
        integer(&mut out, i64::MIN);
        bulk(&mut out, b"hi");
        nil(&mut out);
        array_header(&mut out, 2);
        error(&mut out, b"ERR a\r\nb");
        simple(&mut out, b"PONG");
        assert_eq!(
            out,
            b"+OK\r\n:-42\r\n:-9223372036854775808\r\n$2\r\nhi\r\n$-1\r\n*2\r\n-ERR a  b\r\n+PONG\r\n"
        );
    }
}
