//! The head of one HTTP/1.x request: what the server needs of it, borrowed from the message.
//!
//! The agent's framer (`nic_agent::framing`, RFC 9112) has already checked the request line and
//! the field lines and delimited the body; this reads them again without trusting that: anything
//! it cannot read is `None` (a 400), never a panic.

/// What the server uses of a request head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head<'a> {
    pub method: &'a [u8],
    pub target: &'a [u8],
    /// The minor version: `HTTP/1.0` is 0, `HTTP/1.1` is 1.
    pub minor: u8,
    /// A `close` token in a Connection field.
    pub conn_close: bool,
    /// A `keep-alive` token in a Connection field.
    pub conn_keep_alive: bool,
    pub has_host: bool,
}

/// Splits off one line ending in LF (a CR before it is dropped): (line, rest).
fn line(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = buf.iter().position(|&b| b == b'\n')?;
    let l = &buf[..n];
    Some((l.strip_suffix(b"\r").unwrap_or(l), &buf[n + 1..]))
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// RFC 9110 5.6.2 token characters, by byte value (a table: the check runs on every byte of
/// every method and field name).
const TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    t
};

fn is_tchar(b: u8) -> bool {
    TCHAR[b as usize]
}

/// Parses the head at the start of `msg`; `None` when it is not a whole, readable HTTP/1.x head.
pub fn parse(msg: &[u8]) -> Option<Head<'_>> {
    let mut rest = msg;
    // RFC 9112 2.2: empty lines before the request line are ignored.
    let request_line = loop {
        let (l, r) = line(rest)?;
        rest = r;
        if !l.is_empty() {
            break l;
        }
    };
    let mut parts = request_line.split(|&b| b == b' ');
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next()?;
    if parts.next().is_some() || method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return None;
    }
    if target.is_empty() || !target.iter().all(|&b| b.is_ascii_graphic()) {
        return None;
    }
    let minor = match version {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', d] if d.is_ascii_digit() => d - b'0',
        _ => return None,
    };
    let mut head = Head {
        method,
        target,
        minor,
        conn_close: false,
        conn_keep_alive: false,
        has_host: false,
    };
    loop {
        let (l, r) = line(rest)?;
        rest = r;
        if l.is_empty() {
            return Some(head);
        }
        let colon = l.iter().position(|&b| b == b':')?;
        let (name, value) = (&l[..colon], trim_ows(&l[colon + 1..]));
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return None;
        }
        if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(trim_ows) {
                head.conn_close |= token.eq_ignore_ascii_case(b"close");
                head.conn_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            head.has_host = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_curl_ab_heads() {
        let h = parse(b"GET /index.html HTTP/1.1\r\nHost: localhost:8080\r\n\r\n").unwrap();
        assert_eq!(
            (h.method, h.target, h.minor, h.conn_close, h.has_host),
            (&b"GET"[..], &b"/index.html"[..], 1, false, true)
        );
        let h = parse(b"HEAD /x HTTP/1.0\r\nHost: a\r\nUser-Agent: ApacheBench/2.3\r\nConnection: Keep-Alive\r\n\r\n").unwrap();
        assert_eq!((h.minor, h.conn_keep_alive, h.conn_close), (0, true, false));
        let h = parse(b"GET / HTTP/1.1\nHost: a\nConnection: Upgrade, close\n\nbody").unwrap();
        assert!(h.conn_close);
        let h = parse(b"\r\n\r\nGET / HTTP/1.1\r\nX-Empty:\r\n\r\n").unwrap();
        assert!(!h.has_host);
    }

    #[test]
    fn unreadable_heads() {
        for bad in [
            &b""[..],
            b"GET / HTTP/1.1\r\nHost: a\r\n",
            b"GET / HTTP/1.1\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.1 x\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET /\x01 HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_token_table_is_rfc_9110s_tchar() {
        for b in 0..=255u8 {
            let want = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_tchar(b), want, "{b}");
        }
    }

    #[test]
    fn never_panics_on_prefixes() {
        let good = b"GET /a?b HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n";
        for n in 0..good.len() {
            let _ = parse(&good[..n]);
        }
        assert!(parse(good).is_some());
    }
}
