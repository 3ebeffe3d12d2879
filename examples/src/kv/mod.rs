//! `snstack-kv`: an in-memory key-value store speaking RESP2, sans-IO.
//!
//! ```text
//!  Message{data, part} ─► Session (parts ─► one request) ─► Server::handle(now, request, out)
//!                                                             │ ArgParser: ranges, no copies
//!                                                             │ Store: HashMap + deadlines
//!                                                             └─► reply bytes appended to out
//! ```
//!
//! One [`Server`] per poll group (thread); one [`Session`] per connection. The request is one
//! whole RESP command as the agent's framer delivers it (multibulk or inline); the reply is
//! appended to a caller's `Vec<u8>`. Enough of Redis for unmodified `redis-benchmark` (its
//! `CONFIG GET save`/`appendonly` probe, PING inline and multibulk, GET, SET, INCR, MSET,
//! pipelining) and `redis-cli` (`COMMAND DOCS` at start: an empty array, which it accepts).
//! Values are strings only, one database (`SELECT 0`), no persistence, no EXAT/PXAT (the clock
//! passed in is monotonic, not wall time).
//!
//! Hot path: a GET is a parse into reused ranges, one hash lookup (foldhash), and the reply
//! bytes; nothing is allocated but the growth of `out`.

mod resp;
mod store;

pub use resp::{parse_i64, ArgParser, Args, ProtocolError};
pub use store::{Millis, Store};

use crate::Action;

/// Requests assembled from parts are refused past this size (Redis's own `proto-max-bulk-len`
/// is 512 MiB per argument).
pub const MAX_REQUEST: usize = 512 << 20;

/// Commands answered by `COMMAND COUNT` and `COMMAND LIST`.
const COMMANDS: &[&str] = &[
    "append", "client", "command", "config", "dbsize", "decr", "decrby", "del", "echo", "exists",
    "expire", "flushall", "flushdb", "get", "getdel", "getset", "incr", "incrby", "info", "mget",
    "mset", "persist", "pexpire", "ping", "psetex", "pttl", "quit", "select", "set", "setex",
    "setnx", "strlen", "ttl", "type", "unlink",
];

/// `CONFIG GET` answers: what `redis-benchmark` and monitoring tools ask about.
const CONFIG: &[(&str, &str)] = &[
    ("appendonly", "no"),
    ("databases", "1"),
    ("maxmemory", "0"),
    ("maxmemory-policy", "noeviction"),
    ("port", "6379"),
    ("save", ""),
    ("timeout", "0"),
];

/// The key space of one poll group and the scratch space its commands reuse.
#[derive(Default)]
pub struct Server {
    store: Store,
    parser: ArgParser,
    commands_processed: u64,
}

/// Per-connection state: a request delivered in parts is concatenated here.
#[derive(Default)]
pub struct Session {
    buf: Vec<u8>,
    /// `buf` holds a finished request handed out last time: clear it before the next part.
    done: bool,
    /// An oversized request is being skipped to its last part.
    refusing: bool,
}

/// A request's parts added up to more than [`MAX_REQUEST`].
#[derive(Debug, PartialEq, Eq)]
pub struct TooLarge;

impl Session {
    /// Adds one delivered piece: `part` is true for every piece of a split request but the last.
    /// Returns the whole request when this was its last piece (borrowed from `data` itself when
    /// the request came in one piece). After `Err(TooLarge)` the rest of that request is
    /// dropped and `Ok(None)` returned for its remaining parts.
    pub fn push<'a>(
        &'a mut self,
        data: &'a [u8],
        part: bool,
    ) -> Result<Option<&'a [u8]>, TooLarge> {
        if self.done {
            self.done = false;
            // Keep a moderate buffer for the next split request, not a 512 MiB one.
            if self.buf.capacity() > 1 << 20 {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
        }
        if self.refusing {
            self.refusing = part;
            return Ok(None);
        }
        if !part && self.buf.is_empty() {
            return Ok(Some(data));
        }
        if self.buf.len() + data.len() > MAX_REQUEST {
            self.buf = Vec::new();
            self.refusing = part;
            return Err(TooLarge);
        }
        self.buf.extend_from_slice(data);
        if part {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(&self.buf))
    }
}

impl Server {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Active expiry, for the serve loop's idle moments: see [`Store::expire_some`].
    pub fn expire_some(&mut self, now: Millis, budget: usize) -> usize {
        self.store.expire_some(now, budget)
    }

    /// One delivered message of a connection (see [`Session::push`]): runs the request when it is
    /// whole. An oversized request gets an error reply and closes the connection.
    pub fn handle_message(
        &mut self,
        session: &mut Session,
        now: Millis,
        data: &[u8],
        part: bool,
        out: &mut Vec<u8>,
    ) -> Action {
        match session.push(data, part) {
            Ok(Some(request)) => self.handle(now, request, out),
            Ok(None) => Action::Continue,
            Err(TooLarge) => {
                resp::error(out, b"ERR Protocol error: request too large");
                Action::CloseAfterReply
            }
        }
    }

    /// Runs one whole request and appends its reply to `out`.
    pub fn handle(&mut self, now: Millis, request: &[u8], out: &mut Vec<u8>) -> Action {
        let Server {
            store,
            parser,
            commands_processed,
        } = self;
        let args = match parser.parse(request) {
            Ok(a) => a,
            Err(ProtocolError(text)) => {
                let mut e = b"ERR ".to_vec();
                e.extend_from_slice(text.as_bytes());
                resp::error(out, &e);
                return Action::CloseAfterReply;
            }
        };
        if args.is_empty() {
            return Action::Continue;
        }
        *commands_processed += 1;
        Cmd {
            store,
            now,
            args,
            out,
        }
        .run()
    }
}

struct Cmd<'a, 'o> {
    store: &'a mut Store,
    now: Millis,
    args: Args<'a>,
    out: &'o mut Vec<u8>,
}

/// Uppercases a command name into a stack buffer; longer names are no command of ours.
fn upper<const N: usize>(name: &[u8], buf: &mut [u8; N]) -> Option<usize> {
    if name.len() > N {
        return None;
    }
    for (d, s) in buf.iter_mut().zip(name) {
        *d = s.to_ascii_uppercase();
    }
    Some(name.len())
}

const E_INT: &[u8] = b"ERR value is not an integer or out of range";
const E_SYNTAX: &[u8] = b"ERR syntax error";

impl Cmd<'_, '_> {
    fn run(mut self) -> Action {
        let mut buf = [0u8; 16];
        let Some(n) = upper(self.args.get(0), &mut buf) else {
            self.unknown_command();
            return Action::Continue;
        };
        let argc = self.args.len();
        // (name, minimum argc, maximum argc or 0 for no maximum)
        let arity = |min: usize, max: usize| argc >= min && (max == 0 || argc <= max);
        macro_rules! check {
            ($name:literal, $min:expr, $max:expr) => {
                if !arity($min, $max) {
                    self.wrong_args($name);
                    return Action::Continue;
                }
            };
        }
        match &buf[..n] {
            b"GET" => {
                check!("get", 2, 2);
                self.get();
            }
            b"SET" => {
                check!("set", 3, 0);
                self.set();
            }
            b"PING" => {
                check!("ping", 1, 2);
                if argc == 2 {
                    resp::bulk(self.out, self.args.get(1));
                } else {
                    resp::simple(self.out, b"PONG");
                }
            }
            b"INCR" => {
                check!("incr", 2, 2);
                self.incr_by(1);
            }
            b"DECR" => {
                check!("decr", 2, 2);
                self.incr_by(-1);
            }
            b"INCRBY" => {
                check!("incrby", 3, 3);
                match resp::parse_i64(self.args.get(2)) {
                    Some(d) => self.incr_by(d),
                    None => resp::error(self.out, E_INT),
                }
            }
            b"DECRBY" => {
                check!("decrby", 3, 3);
                match resp::parse_i64(self.args.get(2)) {
                    Some(i64::MIN) => resp::error(self.out, b"ERR decrement would overflow"),
                    Some(d) => self.incr_by(-d),
                    None => resp::error(self.out, E_INT),
                }
            }
            b"MGET" => {
                check!("mget", 2, 0);
                resp::array_header(self.out, argc - 1);
                for i in 1..argc {
                    match self.store.get(self.now, self.args.get(i)) {
                        Some(e) => resp::bulk(self.out, &e.value),
                        None => resp::nil(self.out),
                    }
                }
            }
            b"MSET" => {
                if argc < 3 || argc % 2 == 0 {
                    self.wrong_args("mset");
                    return Action::Continue;
                }
                for i in (1..argc).step_by(2) {
                    self.store.set(
                        self.now,
                        self.args.get(i),
                        self.args.get(i + 1),
                        None,
                        false,
                    );
                }
                resp::ok(self.out);
            }
            b"DEL" | b"UNLINK" => {
                if argc < 2 {
                    self.wrong_args(if n == 3 { "del" } else { "unlink" });
                    return Action::Continue;
                }
                let mut n = 0;
                for i in 1..argc {
                    n += i64::from(self.store.remove(self.now, self.args.get(i)));
                }
                resp::integer(self.out, n);
            }
            b"EXISTS" => {
                check!("exists", 2, 0);
                let mut n = 0;
                for i in 1..argc {
                    n += i64::from(self.store.contains(self.now, self.args.get(i)));
                }
                resp::integer(self.out, n);
            }
            b"ECHO" => {
                check!("echo", 2, 2);
                resp::bulk(self.out, self.args.get(1));
            }
            b"SETNX" => {
                check!("setnx", 3, 3);
                let (k, v) = (self.args.get(1), self.args.get(2));
                let fresh = !self.store.contains(self.now, k);
                if fresh {
                    self.store.set(self.now, k, v, None, false);
                }
                resp::integer(self.out, i64::from(fresh));
            }
            b"SETEX" | b"PSETEX" => {
                let ms = n == 6;
                if argc != 4 {
                    self.wrong_args(if ms { "psetex" } else { "setex" });
                    return Action::Continue;
                }
                let cmd = if ms { "psetex" } else { "setex" };
                match self.deadline(self.args.get(2), ms, cmd) {
                    Ok(t) => {
                        self.store.set(
                            self.now,
                            self.args.get(1),
                            self.args.get(3),
                            Some(t),
                            false,
                        );
                        resp::ok(self.out);
                    }
                    Err(e) => resp::error(self.out, &e),
                }
            }
            b"GETSET" => {
                check!("getset", 3, 3);
                let k = self.args.get(1);
                match self.store.get(self.now, k) {
                    Some(e) => resp::bulk(self.out, &e.value),
                    None => resp::nil(self.out),
                }
                self.store.set(self.now, k, self.args.get(2), None, false);
            }
            b"GETDEL" => {
                check!("getdel", 2, 2);
                let k = self.args.get(1);
                match self.store.get(self.now, k) {
                    Some(e) => resp::bulk(self.out, &e.value),
                    None => resp::nil(self.out),
                }
                self.store.remove(self.now, k);
            }
            b"APPEND" => {
                check!("append", 3, 3);
                let (k, v) = (self.args.get(1), self.args.get(2));
                let len = match self.store.get_mut(self.now, k) {
                    Some(e) if e.value.len() + v.len() > MAX_REQUEST => {
                        resp::error(
                            self.out,
                            b"ERR string exceeds maximum allowed size (proto-max-bulk-len)",
                        );
                        return Action::Continue;
                    }
                    Some(e) => {
                        e.value.extend_from_slice(v);
                        e.value.len()
                    }
                    None => {
                        self.store.set(self.now, k, v, None, false);
                        v.len()
                    }
                };
                resp::integer(self.out, len as i64);
            }
            b"STRLEN" => {
                check!("strlen", 2, 2);
                let len = self
                    .store
                    .get(self.now, self.args.get(1))
                    .map_or(0, |e| e.value.len());
                resp::integer(self.out, len as i64);
            }
            b"TYPE" => {
                check!("type", 2, 2);
                let t: &[u8] = if self.store.contains(self.now, self.args.get(1)) {
                    b"string"
                } else {
                    b"none"
                };
                resp::simple(self.out, t);
            }
            b"EXPIRE" | b"PEXPIRE" => {
                let ms = n == 7;
                let cmd = if ms { "pexpire" } else { "expire" };
                if argc < 3 {
                    self.wrong_args(cmd);
                    return Action::Continue;
                }
                self.expire(ms, cmd);
            }
            b"TTL" | b"PTTL" => {
                let ms = n == 4;
                if argc != 2 {
                    self.wrong_args(if ms { "pttl" } else { "ttl" });
                    return Action::Continue;
                }
                let v = match self.store.get(self.now, self.args.get(1)) {
                    None => -2,
                    Some(e) => match e.expires_at() {
                        None => -1,
                        Some(t) => {
                            let left = t.saturating_sub(self.now);
                            let left = if ms {
                                left
                            } else {
                                left.saturating_add(500) / 1000
                            };
                            i64::try_from(left).unwrap_or(i64::MAX)
                        }
                    },
                };
                resp::integer(self.out, v);
            }
            b"PERSIST" => {
                check!("persist", 2, 2);
                let k = self.args.get(1);
                let had = self
                    .store
                    .get(self.now, k)
                    .is_some_and(|e| e.expires_at().is_some());
                if had {
                    self.store.set_expiry(self.now, k, None);
                }
                resp::integer(self.out, i64::from(had));
            }
            b"DBSIZE" => {
                check!("dbsize", 1, 1);
                resp::integer(self.out, self.store.len() as i64);
            }
            b"FLUSHALL" | b"FLUSHDB" => {
                let cmd = if n == 8 { "flushall" } else { "flushdb" };
                if argc > 2 {
                    self.wrong_args(cmd);
                    return Action::Continue;
                }
                if argc == 2 {
                    let a = self.args.get(1);
                    if !a.eq_ignore_ascii_case(b"async") && !a.eq_ignore_ascii_case(b"sync") {
                        resp::error(self.out, E_SYNTAX);
                        return Action::Continue;
                    }
                }
                self.store.clear();
                resp::ok(self.out);
            }
            b"SELECT" => {
                check!("select", 2, 2);
                match resp::parse_i64(self.args.get(1)) {
                    Some(0) => resp::ok(self.out),
                    Some(_) => resp::error(self.out, b"ERR DB index is out of range"),
                    None => resp::error(self.out, E_INT),
                }
            }
            b"QUIT" => {
                resp::ok(self.out);
                return Action::CloseAfterReply;
            }
            b"COMMAND" => self.command(),
            b"CONFIG" => self.config(),
            b"INFO" => self.info(),
            b"CLIENT" => self.client(),
            _ => self.unknown_command(),
        }
        Action::Continue
    }

    fn get(&mut self) {
        match self.store.get(self.now, self.args.get(1)) {
            Some(e) => resp::bulk(self.out, &e.value),
            None => resp::nil(self.out),
        }
    }

    /// A relative expire time argument as an absolute deadline, with Redis's checks and texts.
    fn deadline(&self, arg: &[u8], ms: bool, cmd: &str) -> Result<Millis, Vec<u8>> {
        let v = resp::parse_i64(arg).ok_or_else(|| E_INT.to_vec())?;
        let invalid = || format!("ERR invalid expire time in '{cmd}' command").into_bytes();
        if v <= 0 {
            return Err(invalid());
        }
        let ms_left = if ms { Some(v) } else { v.checked_mul(1000) };
        ms_left
            .and_then(|m| self.now.checked_add(m as u64))
            .filter(|&t| t < Millis::MAX)
            .ok_or_else(invalid)
    }

    fn set(&mut self) {
        let (mut nx, mut xx, mut get, mut keep_ttl) = (false, false, false, false);
        let mut expire: Option<(usize, bool)> = None; // (arg index, milliseconds)
        let mut i = 3;
        while i < self.args.len() {
            let a = self.args.get(i);
            let has_next = i + 1 < self.args.len();
            if a.eq_ignore_ascii_case(b"NX") && !xx {
                nx = true;
            } else if a.eq_ignore_ascii_case(b"XX") && !nx {
                xx = true;
            } else if a.eq_ignore_ascii_case(b"GET") {
                get = true;
            } else if a.eq_ignore_ascii_case(b"KEEPTTL") && expire.is_none() {
                keep_ttl = true;
            } else if (a.eq_ignore_ascii_case(b"EX") || a.eq_ignore_ascii_case(b"PX"))
                && !keep_ttl
                && expire.is_none()
                && has_next
            {
                expire = Some((i + 1, a[0].eq_ignore_ascii_case(&b'P')));
                i += 1;
            } else {
                resp::error(self.out, E_SYNTAX);
                return;
            }
            i += 1;
        }
        let deadline = match expire {
            None => None,
            Some((at, ms)) => match self.deadline(self.args.get(at), ms, "set") {
                Ok(t) => Some(t),
                Err(e) => {
                    resp::error(self.out, &e);
                    return;
                }
            },
        };
        let (k, v) = (self.args.get(1), self.args.get(2));
        let exists = match self.store.get(self.now, k) {
            Some(e) => {
                if get {
                    resp::bulk(self.out, &e.value);
                }
                true
            }
            None => {
                if get {
                    resp::nil(self.out);
                }
                false
            }
        };
        if (nx && exists) || (xx && !exists) {
            if !get {
                resp::nil(self.out);
            }
            return;
        }
        self.store.set(self.now, k, v, deadline, keep_ttl);
        if !get {
            resp::ok(self.out);
        }
    }

    /// INCR family: the value must read as an `i64`; the key's deadline is kept, as in Redis.
    fn incr_by(&mut self, delta: i64) {
        let k = self.args.get(1);
        let (now, out) = (self.now, &mut *self.out);
        match self.store.get_mut(now, k) {
            Some(e) => {
                let Some(old) = resp::parse_i64(&e.value) else {
                    resp::error(out, E_INT);
                    return;
                };
                let Some(new) = old.checked_add(delta) else {
                    resp::error(out, b"ERR increment or decrement would overflow");
                    return;
                };
                e.value.clear();
                resp::push_decimal(&mut e.value, new);
                resp::integer(out, new);
            }
            None => {
                let mut v = Vec::with_capacity(20);
                resp::push_decimal(&mut v, delta);
                self.store.set_owned(now, k, v);
                resp::integer(out, delta);
            }
        }
    }

    fn expire(&mut self, ms: bool, cmd: &str) {
        let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
        for i in 3..self.args.len() {
            let a = self.args.get(i);
            if a.eq_ignore_ascii_case(b"NX") {
                nx = true;
            } else if a.eq_ignore_ascii_case(b"XX") {
                xx = true;
            } else if a.eq_ignore_ascii_case(b"GT") {
                gt = true;
            } else if a.eq_ignore_ascii_case(b"LT") {
                lt = true;
            } else {
                let mut e = b"ERR Unsupported option ".to_vec();
                e.extend_from_slice(a);
                resp::error(self.out, &e);
                return;
            }
        }
        if nx && (xx || gt || lt) {
            resp::error(
                self.out,
                b"ERR NX and XX, GT or LT options at the same time are not compatible",
            );
            return;
        }
        if gt && lt {
            resp::error(
                self.out,
                b"ERR GT and LT options at the same time are not compatible",
            );
            return;
        }
        let Some(when) = resp::parse_i64(self.args.get(2)) else {
            resp::error(self.out, E_INT);
            return;
        };
        let invalid = || format!("ERR invalid expire time in '{cmd}' command").into_bytes();
        let Some(when_ms) = (if ms {
            Some(when)
        } else {
            when.checked_mul(1000)
        }) else {
            resp::error(self.out, &invalid());
            return;
        };
        let deadline = i128::from(self.now) + i128::from(when_ms);
        if deadline >= i128::from(Millis::MAX) {
            resp::error(self.out, &invalid());
            return;
        }
        let k = self.args.get(1);
        let Some(e) = self.store.get(self.now, k) else {
            resp::integer(self.out, 0);
            return;
        };
        // No deadline counts as an infinite one for GT and LT.
        let current = e.expires_at().map_or(i128::MAX, i128::from);
        let has = e.expires_at().is_some();
        let refused = (nx && has)
            || (xx && !has)
            || (gt && deadline <= current)
            || (lt && deadline >= current);
        if refused {
            resp::integer(self.out, 0);
            return;
        }
        if deadline <= i128::from(self.now) {
            self.store.remove(self.now, k);
        } else {
            self.store.set_expiry(self.now, k, Some(deadline as Millis));
        }
        resp::integer(self.out, 1);
    }

    fn subcommand(&self) -> Option<([u8; 16], usize)> {
        let mut buf = [0u8; 16];
        let n = upper(self.args.get(1), &mut buf)?;
        Some((buf, n))
    }

    fn unknown_subcommand(&mut self, container: &str) {
        let mut e = b"ERR unknown subcommand '".to_vec();
        e.extend(self.args.get(1).iter().take(128));
        e.extend_from_slice(format!("'. Try {container} HELP.").as_bytes());
        resp::error(self.out, &e);
    }

    fn command(&mut self) {
        if self.args.len() == 1 {
            // The full command table: clients only use it for hints, an empty one is valid.
            resp::array_header(self.out, 0);
            return;
        }
        let Some((buf, n)) = self.subcommand() else {
            return self.unknown_subcommand("COMMAND");
        };
        match &buf[..n] {
            // redis-cli 7 asks for DOCS at start and takes an empty reply as "no hints".
            b"DOCS" | b"INFO" => resp::array_header(self.out, 0),
            b"COUNT" => resp::integer(self.out, COMMANDS.len() as i64),
            b"LIST" => {
                resp::array_header(self.out, COMMANDS.len());
                for c in COMMANDS {
                    resp::bulk(self.out, c.as_bytes());
                }
            }
            _ => self.unknown_subcommand("COMMAND"),
        }
    }

    fn config(&mut self) {
        if self.args.len() == 1 {
            return self.wrong_args("config");
        }
        let Some((buf, n)) = self.subcommand() else {
            return self.unknown_subcommand("CONFIG");
        };
        match &buf[..n] {
            b"GET" => {
                if self.args.len() < 3 {
                    return self.wrong_args("config|get");
                }
                let hits: Vec<&(&str, &str)> = CONFIG
                    .iter()
                    .filter(|(name, _)| {
                        (2..self.args.len()).any(|i| glob_match(self.args.get(i), name.as_bytes()))
                    })
                    .collect();
                resp::array_header(self.out, hits.len() * 2);
                for (name, value) in hits {
                    resp::bulk(self.out, name.as_bytes());
                    resp::bulk(self.out, value.as_bytes());
                }
            }
            b"SET" => {
                if self.args.len() < 4 || self.args.len() % 2 != 0 {
                    return self.wrong_args("config|set");
                }
                let mut e =
                    b"ERR Unknown option or number of arguments for CONFIG SET - '".to_vec();
                e.extend(self.args.get(2).iter().take(128));
                e.push(b'\'');
                resp::error(self.out, &e);
            }
            b"RESETSTAT" => resp::ok(self.out),
            _ => self.unknown_subcommand("CONFIG"),
        }
    }

    fn info(&mut self) {
        let keys = self.store.len();
        let expires = self.store.count_expiring(self.now);
        let text = format!(
            "# Server\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\nsnstack_kv:1\r\n\r\n\
             # Persistence\r\nloading:0\r\naof_enabled:0\r\n\r\n\
             # Keyspace\r\ndb0:keys={keys},expires={expires},avg_ttl=0\r\n"
        );
        resp::bulk(self.out, text.as_bytes());
    }

    fn client(&mut self) {
        if self.args.len() == 1 {
            return self.wrong_args("client");
        }
        let Some((buf, n)) = self.subcommand() else {
            return self.unknown_subcommand("CLIENT");
        };
        match &buf[..n] {
            b"SETNAME" if self.args.len() == 3 => resp::ok(self.out),
            b"SETINFO" if self.args.len() == 4 => resp::ok(self.out),
            b"GETNAME" if self.args.len() == 2 => resp::nil(self.out),
            b"SETNAME" => self.wrong_args("client|setname"),
            b"SETINFO" => self.wrong_args("client|setinfo"),
            b"GETNAME" => self.wrong_args("client|getname"),
            _ => self.unknown_subcommand("CLIENT"),
        }
    }

    fn wrong_args(&mut self, cmd: &str) {
        resp::error(
            self.out,
            format!("ERR wrong number of arguments for '{cmd}' command").as_bytes(),
        );
    }

    /// Redis 7's text: the name (128 bytes at most), then quoted arguments while the list is
    /// shorter than 128 bytes. `%s` stops at a NUL byte, so does this.
    fn unknown_command(&mut self) {
        fn c_str(s: &[u8]) -> &[u8] {
            s.iter().position(|&b| b == 0).map_or(s, |n| &s[..n])
        }
        let mut e = b"ERR unknown command '".to_vec();
        let name = c_str(self.args.get(0));
        e.extend_from_slice(&name[..name.len().min(128)]);
        e.extend_from_slice(b"', with args beginning with: ");
        let mut list: Vec<u8> = Vec::new();
        for a in self.args.iter().skip(1) {
            if list.len() >= 128 {
                break;
            }
            let room = 128 - list.len();
            let a = c_str(a);
            list.push(b'\'');
            list.extend_from_slice(&a[..a.len().min(room)]);
            list.extend_from_slice(b"' ");
        }
        e.extend_from_slice(&list);
        resp::error(self.out, &e);
    }
}

/// Redis's `stringmatchlen` for CONFIG GET patterns, without case folding: `*`, `?`, `[...]`
/// (ranges, `^` negation) and `\` escapes.
fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    // Backtracking point for the last `*`: (pattern index after it, string index it covers up to).
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p + 1, i));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => class_match(pattern, p, s[i]),
            Some(b'\\') if p + 1 < pattern.len() => (pattern[p + 1] == s[i]).then_some(p + 2),
            Some(&c) => (c == s[i]).then_some(p + 1),
            None => None,
        };
        match (step, star) {
            (Some(np), _) => {
                p = np;
                i += 1;
            }
            (None, Some((sp, si))) => {
                p = sp;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// A `[...]` class at `pattern[p]` against `c`: the pattern index after the class if it matches.
fn class_match(pattern: &[u8], p: usize, c: u8) -> Option<usize> {
    let mut j = p + 1;
    let negate = pattern.get(j) == Some(&b'^');
    if negate {
        j += 1;
    }
    let mut hit = false;
    loop {
        match pattern.get(j) {
            None => break, // unterminated: Redis treats the end as closing the class
            Some(b']') => {
                j += 1;
                break;
            }
            Some(b'\\') if j + 1 < pattern.len() => {
                hit |= pattern[j + 1] == c;
                j += 2;
            }
            Some(&lo)
                if pattern.get(j + 1) == Some(&b'-')
                    && j + 2 < pattern.len()
                    && pattern[j + 2] != b']' =>
            {
                let hi = pattern[j + 2];
                let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                hit |= (lo..=hi).contains(&c);
                j += 3;
            }
            Some(&x) => {
                hit |= x == c;
                j += 1;
            }
        }
    }
    (hit != negate).then_some(j)
}

#[cfg(test)]
mod tests;
