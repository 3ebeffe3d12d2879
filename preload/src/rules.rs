//! Offload rules: which sockets go to the agent and which stay on kernel sockets, in the style of
//! XLIO's `libxlio.conf` (README.md, *Offload rules*).
//!
//! ```text
//!  kernel tcp_server *:5432                       a database port stays on the kernel
//!  kernel tcp_client redis-cli *:* 10.0.0.9:6379  one program's connections to one server
//!  kernel * backup-*                              a whole program (glob) on the kernel
//!  offload *                                      everything else (also the default)
//! ```
//!
//! Rules come from `SNSTACK_RULES` (separated by `;` or newlines), then from the file named by
//! `SNSTACK_RULES_FILE`; the first rule that matches a socket decides. They are read once per
//! process image (the constructor, [`load`]) into a fixed table: the program field is settled
//! there (this process's executable name and `comm`), so a program rule costs nothing later, and
//! what is left per socket is a few comparisons at bind/listen (server rules, local address) and
//! connect (client rules, remote and local address). A rule that does not parse is reported with
//! one line on stderr and ignored. Moving a socket that a rule sends to the kernel is
//! `tokernel.rs`'s work.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::{log, sys, util};

/// Rules kept per process; more are reported and ignored.
pub(crate) const MAX_RULES: usize = 64;
/// Longest rules file read (bytes); the rest is reported and ignored.
const MAX_FILE: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Offload,
    Kernel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Any,
    /// Matched at bind and listen against the local address.
    Server,
    /// Matched at connect against the remote and the local address.
    Client,
}

/// A socket address as rules see it: IPv4-mapped IPv6 addresses count as IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sa {
    pub(crate) v6: bool,
    /// IPv4 in the first 4 bytes.
    pub(crate) addr: [u8; 16],
    /// Host byte order.
    pub(crate) port: u16,
}

impl Sa {
    pub(crate) fn from_wire(w: &shm_proto::WireAddr) -> Option<Sa> {
        let port = u16::from_be(w.port);
        match w.family as i32 {
            libc::AF_INET => {
                let mut addr = [0u8; 16];
                addr[..4].copy_from_slice(&w.addr[..4]);
                Some(Sa {
                    v6: false,
                    addr,
                    port,
                })
            }
            libc::AF_INET6 => {
                let a = w.addr;
                let mapped = a[..10].iter().all(|&b| b == 0) && a[10] == 0xff && a[11] == 0xff;
                if mapped {
                    let mut addr = [0u8; 16];
                    addr[..4].copy_from_slice(&a[12..]);
                    Some(Sa {
                        v6: false,
                        addr,
                        port,
                    })
                } else {
                    Some(Sa {
                        v6: true,
                        addr: a,
                        port,
                    })
                }
            }
            _ => None,
        }
    }
}

/// `ADDR[/PREFIX]:PORTS` with wildcards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// 0: any address; 4 or 6: that family, `prefix` leading bits of `addr`.
    fam: u8,
    addr: [u8; 16],
    prefix: u8,
    lo: u16,
    hi: u16,
}

impl Endpoint {
    pub(crate) const ANY: Endpoint = Endpoint {
        fam: 0,
        addr: [0; 16],
        prefix: 0,
        lo: 0,
        hi: u16::MAX,
    };

    pub(crate) fn is_any(&self) -> bool {
        *self == Self::ANY
    }

    pub(crate) fn matches(&self, sa: &Sa) -> bool {
        if sa.port < self.lo || sa.port > self.hi {
            return false;
        }
        match self.fam {
            0 => true,
            4 if sa.v6 => false,
            6 if !sa.v6 => false,
            _ => prefix_eq(&self.addr, &sa.addr, self.prefix),
        }
    }

    fn parse(t: &[u8]) -> Result<Endpoint, &'static str> {
        if t == b"*" {
            return Ok(Self::ANY);
        }
        let colon = t
            .iter()
            .rposition(|&b| b == b':')
            .ok_or("an address is ADDR:PORTS (e.g. *:5432, 10.0.0.0/8:*, [::1]:80-89)")?;
        let (a, p) = (&t[..colon], &t[colon + 1..]);
        let (lo, hi) = parse_ports(p)?;
        let mut e = Endpoint {
            lo,
            hi,
            ..Self::ANY
        };
        if a == b"*" {
            return Ok(e);
        }
        let (a, pfx) = match a.iter().rposition(|&b| b == b'/') {
            Some(i) => (
                &a[..i],
                Some(
                    util::parse_u64(&a[i + 1..])
                        .filter(|&n| n <= 128)
                        .ok_or("bad prefix length after '/'")? as u8,
                ),
            ),
            None => (a, None),
        };
        let s = core::str::from_utf8(a).map_err(|_| "bad address")?;
        if let Some(v6) = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            let ip: core::net::Ipv6Addr = v6.parse().map_err(|_| "bad IPv6 address")?;
            e.fam = 6;
            e.addr = ip.octets();
            e.prefix = pfx.unwrap_or(128);
            if e.prefix > 128 {
                return Err("IPv6 prefix over 128");
            }
        } else {
            let ip: core::net::Ipv4Addr = s
                .parse()
                .map_err(|_| "bad address (IPv4 dotted quad, [IPv6] or *)")?;
            e.fam = 4;
            e.addr[..4].copy_from_slice(&ip.octets());
            e.prefix = pfx.unwrap_or(32);
            if e.prefix > 32 {
                return Err("IPv4 prefix over 32");
            }
        }
        Ok(e)
    }
}

fn prefix_eq(a: &[u8; 16], b: &[u8; 16], bits: u8) -> bool {
    let full = usize::from(bits / 8);
    if a[..full] != b[..full] {
        return false;
    }
    let rest = bits % 8;
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[full] & mask == b[full] & mask
}

fn parse_ports(p: &[u8]) -> Result<(u16, u16), &'static str> {
    if p == b"*" {
        return Ok((0, u16::MAX));
    }
    let port = |b: &[u8]| {
        util::parse_u64(b)
            .filter(|&n| n <= u64::from(u16::MAX))
            .map(|n| n as u16)
            .ok_or("a port is *, N or N-M with N, M in 0..65535")
    };
    match p.iter().position(|&b| b == b'-') {
        Some(i) => {
            let (lo, hi) = (port(&p[..i])?, port(&p[i + 1..])?);
            if lo > hi {
                return Err("port range N-M with N > M");
            }
            Ok((lo, hi))
        }
        None => {
            let n = port(p)?;
            Ok((n, n))
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rule {
    pub(crate) action: Action,
    pub(crate) role: Role,
    pub(crate) local: Endpoint,
    pub(crate) remote: Endpoint,
}

impl Rule {
    /// Matches every socket of the process: decided once, at `socket()`.
    fn catch_all(&self) -> bool {
        self.role == Role::Any && self.local.is_any() && self.remote.is_any()
    }
}

/// One rule as written, its program pattern not yet matched.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Parsed<'a> {
    pub(crate) rule: Rule,
    pub(crate) program: &'a [u8],
}

/// `ACTION ROLE [PROGRAM] [LOCAL [REMOTE]]`, whitespace-separated. PROGRAM is there when the
/// token after ROLE holds no ':' (addresses always do, except a bare `*` after PROGRAM).
pub(crate) fn parse(text: &[u8]) -> Result<Parsed<'_>, &'static str> {
    let mut toks = text
        .split(|b| b.is_ascii_whitespace())
        .filter(|t| !t.is_empty());
    let action = match toks.next() {
        Some(b"kernel") => Action::Kernel,
        Some(b"offload") => Action::Offload,
        _ => return Err("the action is `kernel` or `offload`"),
    };
    let role = match toks.next() {
        None | Some(b"*") => Role::Any,
        Some(b"tcp_server") => Role::Server,
        Some(b"tcp_client") => Role::Client,
        Some(_) => return Err("the role is tcp_server, tcp_client or *"),
    };
    let mut next = toks.next();
    let mut program: &[u8] = b"*";
    if let Some(t) = next {
        if !t.contains(&b':') {
            program = t;
            next = toks.next();
        }
    }
    let local = next.map_or(Ok(Endpoint::ANY), Endpoint::parse)?;
    let remote = toks.next().map_or(Ok(Endpoint::ANY), Endpoint::parse)?;
    if toks.next().is_some() {
        return Err("too many fields (ACTION ROLE [PROGRAM] [LOCAL [REMOTE]])");
    }
    if role == Role::Server && !remote.is_any() {
        return Err("a tcp_server rule has no remote address (a listener has no peer)");
    }
    Ok(Parsed {
        rule: Rule {
            action,
            role,
            local,
            remote,
        },
        program,
    })
}

/// Shell-style glob: `*` any run, `?` one byte; everything else literal.
pub(crate) fn glob(pat: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut back: Option<(usize, usize)> = None;
    while n < name.len() {
        match pat.get(p) {
            Some(b'*') => {
                back = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match back {
                Some((bp, bn)) => {
                    p = bp + 1;
                    n = bn + 1;
                    back = Some((bp, bn + 1));
                }
                None => return false,
            },
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// This process's rules, program field settled.
pub(crate) struct Table {
    rules: [Rule; MAX_RULES],
    len: usize,
    /// A catch-all ended the table (rules after it never match).
    closed: bool,
    /// The first rule is `kernel` for every socket: `socket()` passes to libc.
    process_kernel: bool,
    /// Some rule can send a socket to the kernel after `socket()`.
    moves: bool,
}

impl Table {
    pub(crate) const fn new() -> Table {
        Table {
            rules: [Rule {
                action: Action::Offload,
                role: Role::Any,
                local: Endpoint::ANY,
                remote: Endpoint::ANY,
            }; MAX_RULES],
            len: 0,
            closed: false,
            process_kernel: false,
            moves: false,
        }
    }

    /// Adds a rule whose program matched. False when the table is full.
    pub(crate) fn push(&mut self, r: Rule) -> bool {
        if self.closed {
            return true; // unreachable behind a catch-all: nothing to keep
        }
        if self.len == MAX_RULES {
            return false;
        }
        self.rules[self.len] = r;
        self.len += 1;
        if r.catch_all() {
            self.closed = true;
            if self.len == 1 && r.action == Action::Kernel {
                self.process_kernel = true;
            }
        }
        self.moves = !self.process_kernel
            && self.rules[..self.len]
                .iter()
                .any(|r| r.action == Action::Kernel);
        true
    }

    pub(crate) fn process_kernel(&self) -> bool {
        self.process_kernel
    }

    pub(crate) fn moves_sockets(&self) -> bool {
        self.moves
    }

    /// Some server rule may send a socket to the kernel at listen (so the local address the
    /// agent holds is worth asking for).
    pub(crate) fn has_server_kernel(&self) -> bool {
        self.moves
            && self.rules[..self.len]
                .iter()
                .any(|r| r.action == Action::Kernel && r.role != Role::Client)
    }

    /// A socket bound (or listening) at `local`. Rules with a remote address never match here.
    pub(crate) fn server(&self, local: &Sa) -> Action {
        self.rules[..self.len]
            .iter()
            .find(|r| r.role != Role::Client && r.remote.is_any() && r.local.matches(local))
            .map_or(Action::Offload, |r| r.action)
    }

    /// A socket connecting to `remote`; `local` is asked only when a rule needs it (None: not
    /// known, only a wildcard local matches).
    pub(crate) fn client(&self, remote: &Sa, local: impl FnOnce() -> Option<Sa>) -> Action {
        let mut local = Some(local);
        let mut known: Option<Option<Sa>> = None;
        for r in self.rules[..self.len].iter() {
            if r.role == Role::Server || !r.remote.matches(remote) {
                continue;
            }
            if !r.local.is_any() {
                let l = *known.get_or_insert_with(|| local.take().and_then(|f| f()));
                if !l.is_some_and(|l| r.local.matches(&l)) {
                    continue;
                }
            }
            return r.action;
        }
        Action::Offload
    }

    /// Splits `text` into rules (`;` or newline; `#` to the end of a line is a comment) and adds
    /// those whose program matches one of `names`. Returns how many rules were ignored.
    pub(crate) fn load_text(&mut self, text: &[u8], names: &[&[u8]], origin: &str) -> usize {
        let mut bad = 0;
        for line in text.split(|&b| b == b'\n') {
            let line = match line.iter().position(|&b| b == b'#') {
                Some(i) => &line[..i],
                None => line,
            };
            for item in line.split(|&b| b == b';') {
                if item.iter().all(|b| b.is_ascii_whitespace()) {
                    continue;
                }
                let shown = core::str::from_utf8(item.trim_ascii()).unwrap_or("?");
                match parse(item) {
                    Ok(p) => {
                        if names.iter().any(|n| glob(p.program, n)) && !self.push(p.rule) {
                            bad += 1;
                            log!(
                                util::ERROR,
                                "rules: ignoring rule \"{shown}\" from {origin}: more than {MAX_RULES} rules"
                            );
                        }
                    }
                    Err(why) => {
                        bad += 1;
                        log!(
                            util::ERROR,
                            "rules: ignoring rule \"{shown}\" from {origin}: {why}"
                        );
                    }
                }
            }
        }
        bad
    }
}

// ---------------------------------------------------------------- the process's table

struct Global(UnsafeCell<Table>);
// SAFETY: written only by the one thread that moved STATE from UNREAD to LOADING, read only
// after STATE is READY (Release/Acquire).
unsafe impl Sync for Global {}

static TABLE: Global = Global(UnsafeCell::new(Table::new()));
static STATE: AtomicU8 = AtomicU8::new(UNREAD);
const UNREAD: u8 = 0;
const LOADING: u8 = 1;
const READY: u8 = 2;

/// Reads the rules of this process image (the constructor calls it; later calls return at once).
pub(crate) fn load() {
    if STATE.load(Ordering::Acquire) == READY {
        return;
    }
    if STATE
        .compare_exchange(UNREAD, LOADING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        // Another thread is loading (only before the constructor ran: a library's own
        // constructor making sockets from two threads).
        while STATE.load(Ordering::Acquire) != READY {
            util::sched_yield();
        }
        return;
    }
    // SAFETY: LOADING is ours alone; nobody reads the table before READY.
    fill(unsafe { &mut *TABLE.0.get() });
    STATE.store(READY, Ordering::Release);
}

fn fill(t: &mut Table) {
    let env = util::env(c"SNSTACK_RULES");
    let file = util::env(c"SNSTACK_RULES_FILE").filter(|p| !p.is_empty());
    // SNSTACK_OFFLOAD=0 wins: no rule is read, nothing moves. (Reading the configuration also
    // sets the log level.)
    if (env.is_none() && file.is_none()) || crate::config::offload_disabled() {
        return;
    }
    let mut exe = [0u8; 256];
    let mut comm = [0u8; 32];
    let exe = basename(sys::readlink(c"/proc/self/exe", &mut exe).unwrap_or(&[]));
    let comm = read_small(c"/proc/self/comm", &mut comm).trim_ascii_end();
    let names: [&[u8]; 2] = [exe, comm];
    if let Some(e) = env {
        t.load_text(e, &names, "SNSTACK_RULES");
    }
    if let Some(path) = file {
        let mut buf = [0u8; MAX_FILE];
        let shown = core::str::from_utf8(path).unwrap_or("?");
        match sys::read_file(path, &mut buf) {
            Ok((n, whole)) => {
                if !whole {
                    log!(
                        util::ERROR,
                        "rules: {shown} is over {MAX_FILE} bytes: its rules after that are ignored"
                    );
                }
                // A cut-off last line would be half a rule: drop it.
                let text = if whole {
                    &buf[..n]
                } else {
                    &buf[..buf[..n].iter().rposition(|&b| b == b'\n').unwrap_or(0)]
                };
                t.load_text(text, &names, shown);
            }
            Err(e) => log!(
                util::ERROR,
                "rules: cannot read SNSTACK_RULES_FILE {shown} (errno {e}): its rules are ignored"
            ),
        }
    }
    log!(
        util::DEBUG,
        "rules: {} in force for {}{}",
        t.len,
        core::str::from_utf8(exe).unwrap_or("?"),
        if t.process_kernel {
            " (every socket on the kernel)"
        } else {
            ""
        }
    );
}

fn basename(p: &[u8]) -> &[u8] {
    p.rsplit(|&b| b == b'/').next().unwrap_or(p)
}

fn read_small<'a>(path: &core::ffi::CStr, buf: &'a mut [u8]) -> &'a [u8] {
    match sys::read_file(path.to_bytes(), buf) {
        Ok((n, _)) => &buf[..n],
        Err(_) => &[],
    }
}

fn table() -> &'static Table {
    load();
    // SAFETY: READY: the table is no longer written.
    unsafe { &*TABLE.0.get() }
}

/// A program rule sends every socket of this process to the kernel.
pub(crate) fn process_kernel() -> bool {
    table().process_kernel()
}

/// Some rule may move a socket to the kernel after `socket()` (the option log is kept then).
#[inline]
pub(crate) fn moves_sockets() -> bool {
    table().moves_sockets()
}

pub(crate) fn rules() -> &'static Table {
    table()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4], port: u16) -> Sa {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&a);
        Sa {
            v6: false,
            addr,
            port,
        }
    }

    fn v6(s: &str, port: u16) -> Sa {
        let ip: core::net::Ipv6Addr = s.parse().unwrap();
        Sa {
            v6: true,
            addr: ip.octets(),
            port,
        }
    }

    fn table(text: &str, names: &[&[u8]]) -> (Table, usize) {
        let mut t = Table::new();
        let bad = t.load_text(text.as_bytes(), names, "test");
        (t, bad)
    }

    const NGINX: &[&[u8]] = &[b"nginx", b"nginx"];

    #[test]
    fn parse_fields_and_defaults() {
        let p = parse(b"kernel tcp_server *:5432").unwrap();
        assert_eq!(p.program, b"*");
        assert_eq!(p.rule.action, Action::Kernel);
        assert_eq!(p.rule.role, Role::Server);
        assert!(p.rule.local.matches(&v4([1, 2, 3, 4], 5432)));
        assert!(!p.rule.local.matches(&v4([1, 2, 3, 4], 5433)));
        assert!(p.rule.remote.is_any());

        let p = parse(b"  offload   *  ").unwrap();
        assert!(p.rule.catch_all() && p.rule.action == Action::Offload);
        let p = parse(b"kernel").unwrap();
        assert!(p.rule.catch_all());

        let p = parse(b"kernel tcp_client curl * 10.0.0.0/8:80-89").unwrap();
        assert_eq!(p.program, b"curl");
        assert!(p.rule.local.is_any());
        assert!(p.rule.remote.matches(&v4([10, 9, 8, 7], 85)));
        assert!(!p.rule.remote.matches(&v4([11, 0, 0, 1], 85)));
        assert!(!p.rule.remote.matches(&v4([10, 0, 0, 1], 90)));

        let p = parse(b"kernel * redis* [::1]:6379").unwrap();
        assert_eq!(p.program, b"redis*");
        assert!(p.rule.local.matches(&v6("::1", 6379)));
        assert!(!p.rule.local.matches(&v4([127, 0, 0, 1], 6379)));

        let p = parse(b"kernel * * [fd00::]/8:*").unwrap();
        assert!(p.rule.local.matches(&v6("fd12::5", 1)));
        assert!(!p.rule.local.matches(&v6("fe80::5", 1)));
    }

    #[test]
    fn parse_errors() {
        for bad in [
            "keep tcp_server *:1",               // action
            "kernel tcp_srv *:1",                // role
            "kernel tcp_server *:99999",         // port range
            "kernel tcp_server *:9-1",           // reversed range
            "kernel tcp_server 10.0.0.1.2:80",   // address
            "kernel tcp_server 10.0.0.0/33:80",  // prefix
            "kernel tcp_server [::1/129]:80",    // v6 in brackets, prefix outside
            "kernel tcp_server * *:1 *:2",       // server with a remote
            "kernel tcp_client * *:* *:* extra", // too many
            "kernel tcp_client * nocolon",       // endpoint without port
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn glob_matches_like_a_shell() {
        assert!(glob(b"*", b"nginx"));
        assert!(glob(b"nginx", b"nginx"));
        assert!(!glob(b"nginx", b"nginx2"));
        assert!(glob(b"ng*", b"nginx"));
        assert!(glob(b"*x", b"nginx"));
        assert!(glob(b"n?inx", b"nginx"));
        assert!(glob(b"*i*x*", b"nginx"));
        assert!(!glob(b"*y*", b"nginx"));
        assert!(glob(b"redis-*", b"redis-server"));
        assert!(!glob(b"redis-*", b"redis"));
        assert!(glob(b"a*b*c", b"aXbYbZc"));
        assert!(!glob(b"?", b""));
    }

    #[test]
    fn first_match_wins_for_servers() {
        let (t, bad) = table(
            "offload tcp_server 127.0.0.1:5432; kernel tcp_server *:5432; offload *",
            NGINX,
        );
        assert_eq!(bad, 0);
        assert_eq!(t.server(&v4([127, 0, 0, 1], 5432)), Action::Offload);
        assert_eq!(t.server(&v4([0, 0, 0, 0], 5432)), Action::Kernel);
        assert_eq!(t.server(&v6("::", 5432)), Action::Kernel);
        assert_eq!(t.server(&v4([0, 0, 0, 0], 80)), Action::Offload);
        assert!(t.moves_sockets() && t.has_server_kernel() && !t.process_kernel());
    }

    #[test]
    fn server_rules_ignore_client_rules_and_back() {
        let (t, _) = table(
            "kernel tcp_client * *:* *:5432; kernel tcp_server *:80",
            NGINX,
        );
        // A socket bound to 5432 is not matched by a rule about remote ports.
        assert_eq!(t.server(&v4([0; 4], 5432)), Action::Offload);
        assert_eq!(t.server(&v4([0; 4], 80)), Action::Kernel);
        assert_eq!(t.client(&v4([10, 0, 0, 1], 5432), || None), Action::Kernel);
        assert_eq!(t.client(&v4([10, 0, 0, 1], 80), || None), Action::Offload);
    }

    #[test]
    fn client_local_asked_only_when_needed() {
        let (t, _) = table(
            "kernel tcp_client * 10.1.1.1:* *:443; kernel tcp_client * *:* *:25",
            NGINX,
        );
        let mut asked = 0;
        let r = t.client(&v4([1, 1, 1, 1], 25), || {
            asked += 1;
            None
        });
        assert_eq!((r, asked), (Action::Kernel, 0));
        let r = t.client(&v4([1, 1, 1, 1], 443), || {
            asked += 1;
            Some(v4([10, 1, 1, 1], 40000))
        });
        assert_eq!((r, asked), (Action::Kernel, 1));
        assert_eq!(t.client(&v4([1, 1, 1, 1], 443), || None), Action::Offload);
        assert_eq!(
            t.client(&v4([1, 1, 1, 1], 443), || Some(v4([10, 1, 1, 2], 1))),
            Action::Offload
        );
    }

    #[test]
    fn v4_mapped_counts_as_v4() {
        let mut w = shm_proto::WireAddr {
            family: libc::AF_INET6 as u16,
            port: 5432u16.to_be(),
            ..Default::default()
        };
        w.addr[10] = 0xff;
        w.addr[11] = 0xff;
        w.addr[12..].copy_from_slice(&[10, 0, 0, 7]);
        let sa = Sa::from_wire(&w).unwrap();
        assert_eq!(sa, v4([10, 0, 0, 7], 5432));
        let (t, _) = table("kernel tcp_client * *:* 10.0.0.0/24:5432", NGINX);
        assert_eq!(t.client(&sa, || None), Action::Kernel);
    }

    #[test]
    fn program_rules_settle_per_process() {
        let text = "kernel * redis-*; kernel tcp_server nginx *:8080";
        let (t, _) = table(text, &[b"redis-server", b"redis-server"]);
        assert!(t.process_kernel() && !t.moves_sockets());
        let (t, _) = table(text, NGINX);
        assert!(!t.process_kernel() && t.moves_sockets());
        assert_eq!(t.server(&v4([0; 4], 8080)), Action::Kernel);
        let (t, _) = table(text, &[b"curl", b"curl"]);
        assert!(!t.process_kernel() && !t.moves_sockets());
        // comm matches though the executable does not (python3.11 running as "python3").
        let (t, _) = table("kernel * python3", &[b"python3.11", b"python3"]);
        assert!(t.process_kernel());
    }

    #[test]
    fn catch_all_ends_the_table() {
        // Everything offloaded first: the kernel rule after it never applies.
        let (t, _) = table("offload *; kernel tcp_server *:5432", NGINX);
        assert_eq!(t.server(&v4([0; 4], 5432)), Action::Offload);
        assert!(!t.moves_sockets());
        // A kernel catch-all after others: sockets move at bind/connect, not at socket().
        let (t, _) = table("offload tcp_server *:80; kernel *", NGINX);
        assert!(!t.process_kernel() && t.moves_sockets());
        assert_eq!(t.server(&v4([0; 4], 80)), Action::Offload);
        assert_eq!(t.server(&v4([0; 4], 81)), Action::Kernel);
        assert_eq!(t.client(&v4([1, 2, 3, 4], 80), || None), Action::Kernel);
    }

    #[test]
    fn malformed_rules_are_skipped_and_the_rest_kept() {
        let text = "# database on the kernel\nkernel tcp_server *:5432 # pg\n\nkernel tcp_srv *:1; kernel tcp_server *:6379\n";
        let (t, bad) = table(text, NGINX);
        assert_eq!(bad, 1);
        assert_eq!(t.server(&v4([0; 4], 5432)), Action::Kernel);
        assert_eq!(t.server(&v4([0; 4], 6379)), Action::Kernel);
        assert_eq!(t.server(&v4([0; 4], 1)), Action::Offload);
    }

    #[test]
    fn table_overflow_is_reported() {
        let mut text = String::new();
        for p in 0..MAX_RULES + 3 {
            text.push_str(&format!("kernel tcp_server *:{p};"));
        }
        let (t, bad) = table(&text, NGINX);
        assert_eq!(bad, 3);
        assert_eq!(
            t.server(&v4([0; 4], (MAX_RULES - 1) as u16)),
            Action::Kernel
        );
        assert_eq!(t.server(&v4([0; 4], MAX_RULES as u16)), Action::Offload);
    }
}
