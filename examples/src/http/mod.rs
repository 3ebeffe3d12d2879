//! `snstack-http`: HTTP/1.1 server logic for `/hello` and static files, sans-IO.
//!
//! ```text
//!  Message{data, part} ─► Session ─► Server::handle(request, date, head) ─► Reply { body, action }
//!                                      │ request::parse: method, target, version, Connection
//!                                      │ files::normalize + FileCache (read once, then memory)
//!                                      └─► status line and fields appended to `head`
//! ```
//!
//! A reply is two pieces: the head bytes, appended to a caller's `Vec<u8>`, and a [`Body`] that
//! borrows nothing (a `'static` slice or an `Arc` of a cached file), so the caller writes both into
//! the TX ring (or queues them under back-pressure) without building one buffer.
//!
//! Behaviour: GET and HEAD (HEAD: the same fields, no body); other methods of RFC 9110 get 405
//! with `Allow: GET, HEAD`, unknown ones 501; a head that cannot be read, a 1.1 request without
//! Host, a bad target: 400 and close. Keep-alive: HTTP/1.1 unless `Connection: close`; HTTP/1.0
//! only with `Connection: keep-alive` (echoed back, as `ab -k` expects). Request bodies are
//! ignored (the agent's framer has delimited them). Pipelined requests are consecutive messages
//! answered in order. Directories serve their `index.html` (no redirect to a trailing slash).
//! The `Date` value is the caller's (format it once a second with [`http_date`]).

mod files;
mod request;

pub use files::{content_type, normalize, BadPath, File, FileCache, Lookup, MAX_FILE, MAX_MISSING};
pub use request::{parse as parse_head, Head};

use crate::Action;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// The body of `/hello`.
pub const HELLO: &[u8] = b"Hello, world!\n";
/// Files up to this size are remembered for the next request of the same path ([`Server`]'s
/// `last`): the memo can hold at most this much beyond the cache's bound.
const MEMO_MAX: usize = 64 * 1024;
/// Default bound of the file cache.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// A reply's body: borrowed from nothing the server may change, so it can wait in a queue.
#[derive(Clone, Debug)]
pub enum Body {
    None,
    Static(&'static [u8]),
    Shared(Arc<[u8]>),
}

impl Body {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Body::None => &[],
            Body::Static(s) => s,
            Body::Shared(a) => a,
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What [`Server::handle`] produced besides the head bytes.
#[derive(Debug)]
#[must_use]
pub struct Reply {
    pub body: Body,
    pub action: Action,
}

/// The server of one poll group: the file cache and scratch space.
pub struct Server {
    files: Option<FileCache>,
    path: Vec<u8>,
    /// The request path of the last file found, and the file: a run of requests for one file
    /// (a load test, a hot asset) skips decoding, normalising and hashing the path.
    last: Option<(Vec<u8>, File)>,
}

/// Per-connection state for requests delivered in parts.
#[derive(Default)]
pub struct Session {
    /// The first part of a request was answered; its further parts are skipped to the last.
    skipping: bool,
}

impl Server {
    /// A server for `/hello` and, with `root`, the files under it (cache of `cache_bytes`).
    pub fn new(root: Option<&Path>, cache_bytes: usize) -> io::Result<Self> {
        let files = root.map(|r| FileCache::new(r, cache_bytes)).transpose()?;
        Ok(Self {
            files,
            path: Vec::new(),
            last: None,
        })
    }

    /// The file cache (to clear it for a reload: the memo of the last file goes with it).
    pub fn files(&mut self) -> Option<&mut FileCache> {
        self.last = None;
        self.files.as_mut()
    }

    /// One delivered message of a connection. A request longer than the service's max_message
    /// comes in parts: it is answered at its first part (which holds the whole head as long as
    /// max_message exceeds the framer's 64 KiB head limit; otherwise the answer is a 400) and its
    /// other parts are skipped: `None`.
    pub fn handle_message(
        &mut self,
        session: &mut Session,
        data: &[u8],
        part: bool,
        date: &str,
        head: &mut Vec<u8>,
    ) -> Option<Reply> {
        if session.skipping {
            session.skipping = part;
            return None;
        }
        session.skipping = part;
        Some(self.handle(data, date, head))
    }

    /// Answers one whole request (or the first part of one): appends the head to `head`.
    pub fn handle(&mut self, request: &[u8], date: &str, head: &mut Vec<u8>) -> Reply {
        let Some(req) = request::parse(request) else {
            return error(head, date, 400, false, Action::CloseAfterReply, false);
        };
        let keep_alive = if req.minor == 0 {
            req.conn_keep_alive && !req.conn_close
        } else {
            !req.conn_close
        };
        let action = if keep_alive {
            Action::Continue
        } else {
            Action::CloseAfterReply
        };
        // Echo keep-alive to an HTTP/1.0 client that asked for it; 1.1 keeps alive by default.
        let echo_keep_alive = keep_alive && req.minor == 0;
        let is_head = req.method == b"HEAD";
        if !is_head && req.method != b"GET" {
            const KNOWN: &[&[u8]] = &[
                b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE", b"CONNECT",
            ];
            let status = if KNOWN.contains(&req.method) {
                405
            } else {
                501
            };
            return error(head, date, status, echo_keep_alive, action, is_head);
        }
        if req.minor >= 1 && !req.has_host {
            return error(head, date, 400, false, Action::CloseAfterReply, is_head);
        }
        let Some(path) = origin_path(req.target) else {
            return error(head, date, 400, false, Action::CloseAfterReply, is_head);
        };
        let (status, content_type, body) = if path == b"/hello" {
            (200, "text/plain; charset=utf-8", Body::Static(HELLO))
        } else if let Some((_, f)) = self.last.as_ref().filter(|(p, _)| p[..] == *path) {
            (200, f.content_type, Body::Shared(f.data.clone()))
        } else {
            match normalize(path, &mut self.path) {
                Err(_) => return error(head, date, 400, false, Action::CloseAfterReply, is_head),
                Ok(()) => match self.files.as_mut().map(|f| f.get(&self.path)) {
                    Some(Lookup::Found(f)) if f.data.len() <= MEMO_MAX => {
                        let mut key = self.last.take().map(|(k, _)| k).unwrap_or_default();
                        key.clear();
                        key.extend_from_slice(path);
                        self.last = Some((key, f.clone()));
                        (200, f.content_type, Body::Shared(f.data))
                    }
                    Some(Lookup::Found(f)) => (200, f.content_type, Body::Shared(f.data)),
                    None | Some(Lookup::NotFound) => {
                        return error(head, date, 404, echo_keep_alive, action, is_head)
                    }
                    Some(Lookup::Forbidden) => {
                        return error(head, date, 403, echo_keep_alive, action, is_head)
                    }
                    Some(Lookup::Error) => {
                        return error(head, date, 500, echo_keep_alive, action, is_head)
                    }
                },
            }
        };
        write_head(
            head,
            status,
            date,
            content_type,
            body.len(),
            echo_keep_alive,
            action,
        );
        Reply {
            body: if is_head { Body::None } else { body },
            action,
        }
    }
}

/// The path of a request target: origin-form `/p?q`, or absolute-form `http://host/p?q`.
fn origin_path(target: &[u8]) -> Option<&[u8]> {
    let t = if target.starts_with(b"/") {
        target
    } else {
        let lower_scheme = target
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case(b"http://"));
        let after = if lower_scheme {
            &target[7..]
        } else if target
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case(b"https://"))
        {
            &target[8..]
        } else {
            return None;
        };
        let slash = after.iter().position(|&b| b == b'/');
        match slash {
            Some(i) => &after[i..],
            None => b"/",
        }
    };
    let end = t
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(t.len());
    Some(&t[..end])
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        _ => "Unknown",
    }
}

fn write_head(
    head: &mut Vec<u8>,
    status: u16,
    date: &str,
    content_type: &str,
    len: usize,
    echo_keep_alive: bool,
    action: Action,
) {
    head.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(head, status as usize);
    head.push(b' ');
    head.extend_from_slice(reason(status).as_bytes());
    head.extend_from_slice(b"\r\nServer: snstack-http\r\nDate: ");
    head.extend_from_slice(date.as_bytes());
    head.extend_from_slice(b"\r\nContent-Type: ");
    head.extend_from_slice(content_type.as_bytes());
    head.extend_from_slice(b"\r\nContent-Length: ");
    push_decimal(head, len);
    if status == 405 {
        head.extend_from_slice(b"\r\nAllow: GET, HEAD");
    }
    if action == Action::CloseAfterReply {
        head.extend_from_slice(b"\r\nConnection: close");
    } else if echo_keep_alive {
        head.extend_from_slice(b"\r\nConnection: keep-alive");
    }
    head.extend_from_slice(b"\r\n\r\n");
}

/// An error reply with a one-line text body (none on the wire for HEAD: its Content-Length still
/// tells the length a GET would have had, RFC 9110 9.3.2).
fn error(
    head: &mut Vec<u8>,
    date: &str,
    status: u16,
    echo_keep_alive: bool,
    action: Action,
    is_head: bool,
) -> Reply {
    let body: &'static [u8] = match status {
        400 => b"400 Bad Request\n",
        403 => b"403 Forbidden\n",
        404 => b"404 Not Found\n",
        405 => b"405 Method Not Allowed\n",
        501 => b"501 Not Implemented\n",
        _ => b"500 Internal Server Error\n",
    };
    write_head(
        head,
        status,
        date,
        "text/plain; charset=utf-8",
        body.len(),
        echo_keep_alive,
        action,
    );
    Reply {
        body: if is_head {
            Body::None
        } else {
            Body::Static(body)
        },
        action,
    }
}

fn push_decimal(out: &mut Vec<u8>, mut v: usize) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// An IMF-fixdate (RFC 9110 5.6.7) for seconds since the Unix epoch:
/// `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(unix_secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix_secs / 86_400;
    let secs = unix_secs % 86_400;
    // Civil date from days (Howard Hinnant's algorithm), all in unsigned arithmetic since the
    // epoch is after 0000-03-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests;
