//! Per-process state that needs no I/O: the slot table, validation of untrusted commands, and the
//! policy answers the agent gives on behalf of the kernel (privileged ports, `SO_REUSEPORT` across
//! users, socket options that must not run with the agent's root privileges).
//!
//! ```text
//!   Cmd (64 B, written by the host, hostile)
//!     │ Request::decode (shm-proto, shared with the host's encode): op known? family / length sane?
//!     │ Session::decode: slot in range and owned?
//!     ├── Err(Violation)  -> the agent drops the whole channel of that process
//!     └── Ok(Command{slot, tag, req: Request})  -> executed by the agent against its backend
//! ```
//!
//! Errors a well-behaved host can provoke (EAFNOSUPPORT, EINVAL, ...) are answers, not violations:
//! they come back as `-errno` completions, exactly as the kernel would give them.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

use shm_proto::*;
use thiserror::Error;

/// A positive errno value.
pub type Errno = i32;

/// A protocol violation by the host: the channel must be dropped.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Violation {
    #[error("channel corrupt: {0}")]
    Corrupt(&'static str),
    #[error("slot {slot} out of range (max_sockets {max})")]
    SlotOutOfRange { slot: u32, max: u32 },
    #[error("slot {slot} not owned by this process (op {op})")]
    SlotNotOwned { slot: u32, op: u16 },
    #[error("{0}")]
    Decode(DecodeError),
    #[error("malformed control message")]
    BadControl,
}

impl From<DecodeError> for Violation {
    fn from(e: DecodeError) -> Self {
        Violation::Decode(e)
    }
}

impl From<Corrupt> for Violation {
    fn from(c: Corrupt) -> Self {
        Violation::Corrupt(c.0)
    }
}

/// A decoded command: the envelope (`slot`, `tag`) and the request (`shm_proto::request`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub slot: u32,
    pub tag: u64,
    pub req: Request,
}

// ---------------------------------------------------------------------------------------------
// Slot table

/// One entry of the slot table.
#[derive(Debug)]
pub enum Slot<T> {
    Free,
    /// Owned by the host: commands may name it.
    Live(T),
    /// Closed by the host, still sending its TX bytes: commands naming it are violations, and the
    /// slot is not reused until the drain ends (the bytes live in its stream).
    Draining(T),
}

/// Slots of one process, allocated lowest-free-first.
#[derive(Debug)]
pub struct SlotTable<T> {
    slots: Vec<Slot<T>>,
    /// Freed slots below `slots.len()`.
    freed: BTreeSet<u32>,
    cap: u32,
    live: usize,
    draining: usize,
}

impl<T> SlotTable<T> {
    pub fn new(cap: u32) -> Self {
        SlotTable {
            slots: Vec::new(),
            freed: BTreeSet::new(),
            cap,
            live: 0,
            draining: 0,
        }
    }

    pub fn capacity(&self) -> u32 {
        self.cap
    }

    pub fn has_free(&self) -> bool {
        !self.freed.is_empty() || (self.slots.len() as u32) < self.cap
    }

    /// Stores `v` in `slot`, which must be free and in range (a forked child's inherited slots
    /// keep their numbers). Lower slots left unused stay free for [`SlotTable::alloc`].
    pub fn insert_at(&mut self, slot: u32, v: T) -> Result<(), T> {
        if slot >= self.cap {
            return Err(v);
        }
        let i = slot as usize;
        while self.slots.len() <= i {
            self.freed.insert(self.slots.len() as u32);
            self.slots.push(Slot::Free);
        }
        if !matches!(self.slots[i], Slot::Free) {
            return Err(v);
        }
        self.freed.remove(&slot);
        self.slots[i] = Slot::Live(v);
        self.live += 1;
        Ok(())
    }

    /// A live or draining slot.
    pub fn get_any(&self, slot: u32) -> Option<(&T, bool)> {
        match self.slots.get(slot as usize) {
            Some(Slot::Live(v)) => Some((v, false)),
            Some(Slot::Draining(v)) => Some((v, true)),
            _ => None,
        }
    }

    /// Stores `v` in the lowest free slot.
    pub fn alloc(&mut self, v: T) -> Result<u32, T> {
        let slot = if let Some(s) = self.freed.pop_first() {
            self.slots[s as usize] = Slot::Live(v);
            s
        } else if (self.slots.len() as u32) < self.cap {
            self.slots.push(Slot::Live(v));
            self.slots.len() as u32 - 1
        } else {
            return Err(v);
        };
        self.live += 1;
        Ok(slot)
    }

    pub fn is_live(&self, slot: u32) -> bool {
        matches!(self.slots.get(slot as usize), Some(Slot::Live(_)))
    }

    /// A live slot.
    pub fn get_mut(&mut self, slot: u32) -> Option<&mut T> {
        match self.slots.get_mut(slot as usize) {
            Some(Slot::Live(v)) => Some(v),
            _ => None,
        }
    }

    /// A live or draining slot, with `true` when draining.
    pub fn get_any_mut(&mut self, slot: u32) -> Option<(&mut T, bool)> {
        match self.slots.get_mut(slot as usize) {
            Some(Slot::Live(v)) => Some((v, false)),
            Some(Slot::Draining(v)) => Some((v, true)),
            _ => None,
        }
    }

    /// Live -> Draining. False when the slot was not live.
    pub fn start_drain(&mut self, slot: u32) -> bool {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return false;
        };
        match std::mem::replace(s, Slot::Free) {
            Slot::Live(v) => {
                *s = Slot::Draining(v);
                self.live -= 1;
                self.draining += 1;
                true
            }
            other => {
                *s = other;
                false
            }
        }
    }

    /// Frees a live or draining slot and returns its value.
    pub fn free(&mut self, slot: u32) -> Option<T> {
        let s = self.slots.get_mut(slot as usize)?;
        let v = match std::mem::replace(s, Slot::Free) {
            Slot::Live(v) => {
                self.live -= 1;
                v
            }
            Slot::Draining(v) => {
                self.draining -= 1;
                v
            }
            Slot::Free => return None,
        };
        self.freed.insert(slot);
        Some(v)
    }

    pub fn live_count(&self) -> usize {
        self.live
    }

    pub fn draining_count(&self) -> usize {
        self.draining
    }

    /// Slots currently live or draining, ascending.
    pub fn used_slots(&self) -> Vec<u32> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !matches!(s, Slot::Free))
            .map(|(i, _)| i as u32)
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Session

/// The sans-IO state of one attached process. `T` is the agent's per-socket state.
#[derive(Debug)]
pub struct Session<T> {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
    pub table: SlotTable<T>,
}

impl<T> Session<T> {
    pub fn new(pid: i32, uid: u32, gid: u32, max_sockets: u32) -> Self {
        Session {
            pid,
            uid,
            gid,
            table: SlotTable::new(max_sockets),
        }
    }

    /// Validates and decodes one command the host wrote: the request itself
    /// (`Request::decode`), then that its slot is this process's to name.
    pub fn decode(&self, cmd: &Cmd) -> Result<Command, Violation> {
        let req = Request::decode(cmd)?;
        if !req.slotless() {
            if cmd.slot >= self.table.capacity() {
                return Err(Violation::SlotOutOfRange {
                    slot: cmd.slot,
                    max: self.table.capacity(),
                });
            }
            // TX work posted for bytes published before a close another thread posted first
            // (the close overtook it on the ring) still names the draining slot.
            let tx_work = matches!(
                req,
                Request::TxKick
                    | Request::TxFile { .. }
                    | Request::TxUrgent { .. }
                    | Request::TxRecType { .. }
            );
            let draining = self.table.get_any(cmd.slot).is_some_and(|(_, d)| d);
            if !(self.table.is_live(cmd.slot) || (tx_work && draining)) {
                return Err(Violation::SlotNotOwned {
                    slot: cmd.slot,
                    op: cmd.op,
                });
            }
        }
        Ok(Command {
            slot: cmd.slot,
            tag: cmd.tag,
            req,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Policy

/// `socket(domain, type, protocol)` as Linux answers it for what the agent offloads.
pub fn check_socket(domain: i32, ty: i32, protocol: i32) -> Result<(), Errno> {
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return Err(libc::EAFNOSUPPORT);
    }
    let base = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    if base != libc::SOCK_STREAM {
        return Err(libc::EINVAL);
    }
    if protocol != 0 && protocol != libc::IPPROTO_TCP {
        return Err(libc::EPROTONOSUPPORT);
    }
    Ok(())
}

/// An address for a socket of `domain` (bind, connect), as Linux answers it.
pub fn check_family(domain: i32, a: &Addr) -> Result<SocketAddr, Errno> {
    match (domain, a) {
        (_, Addr::Unspec) => Err(libc::EAFNOSUPPORT),
        (libc::AF_INET, Addr::Inet(s @ SocketAddr::V4(_))) => Ok(*s),
        (libc::AF_INET, Addr::Inet(SocketAddr::V6(_))) => Err(libc::EAFNOSUPPORT),
        // A sockaddr_in is shorter than SIN6_LEN_RFC2133: Linux says EINVAL.
        (libc::AF_INET6, Addr::Inet(SocketAddr::V4(_))) => Err(libc::EINVAL),
        (libc::AF_INET6, Addr::Inet(s @ SocketAddr::V6(_))) => Ok(*s),
        _ => Err(libc::EAFNOSUPPORT),
    }
}

pub const CAP_NET_BIND_SERVICE: u32 = 10;
pub const CAP_NET_ADMIN: u32 = 12;

/// May a process of `uid` with effective capabilities `caps` (None: unknown) bind `port`?
pub fn bind_allowed(
    port: u16,
    unpriv_start: u32,
    uid: u32,
    caps: impl FnOnce() -> Option<u64>,
) -> Result<(), Errno> {
    if port == 0 || u32::from(port) >= unpriv_start || uid == 0 {
        return Ok(());
    }
    match caps() {
        Some(c) if c & (1 << CAP_NET_BIND_SERVICE) != 0 => Ok(()),
        _ => Err(libc::EACCES),
    }
}

/// Accept-queue length the agent keeps for a listener.
pub fn queue_cap(backlog: i32) -> usize {
    let b = if backlog < 0 { 4096 } else { backlog as usize };
    b.clamp(16, 4096)
}

/// Local ports held by `SO_REUSEPORT` sockets, with the uid of their group. The agent owns every
/// socket as root, so the kernel's same-uid rule for reuseport groups must be enforced here.
#[derive(Debug, Default)]
pub struct ReuseportTable {
    ports: HashMap<u16, (u32, u32)>,
}

impl ReuseportTable {
    /// May `uid` bind `port`?
    pub fn check(&self, port: u16, uid: u32) -> Result<(), Errno> {
        match self.ports.get(&port) {
            Some(&(owner, _)) if port != 0 && owner != uid => Err(libc::EADDRINUSE),
            _ => Ok(()),
        }
    }

    pub fn add(&mut self, port: u16, uid: u32) {
        let e = self.ports.entry(port).or_insert((uid, 0));
        e.1 += 1;
    }

    pub fn remove(&mut self, port: u16) {
        if let Some(e) = self.ports.get_mut(&port) {
            e.1 -= 1;
            if e.1 == 0 {
                self.ports.remove(&port);
            }
        }
    }
}

/// What to do with a socket option before it reaches a socket owned by a root agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptPolicy {
    /// Hand it to the kernel.
    Pass,
    /// Answer with this errno without touching the socket.
    Deny(Errno),
    /// Only for a requester with CAP_NET_ADMIN (or uid 0); else EPERM.
    NeedNetAdmin,
    /// TCP_CONGESTION: the algorithm must be in the unprivileged allow-list unless CAP_NET_ADMIN.
    Congestion,
}

/// Options whose values carry pointers or fds of the host (meaningless, or dangerous, in the
/// agent's address space) are refused; options the kernel would only let a privileged process
/// use are checked against the requester's capabilities, because the agent itself is root.
pub fn sockopt_policy(level: i32, name: i32, set: bool, val: &[u8]) -> OptPolicy {
    const SO_ATTACH_FILTER: i32 = 26;
    const SO_ATTACH_BPF: i32 = 50;
    const SO_ATTACH_REUSEPORT_CBPF: i32 = 51;
    const SO_ATTACH_REUSEPORT_EBPF: i32 = 52;
    const TCP_REPAIR: i32 = 19;
    const TCP_REPAIR_QUEUE: i32 = 20;
    const TCP_QUEUE_SEQ: i32 = 21;
    const TCP_REPAIR_OPTIONS: i32 = 22;
    const TCP_REPAIR_WINDOW: i32 = 29;
    const TCP_ULP: i32 = 31;
    const TCP_ZEROCOPY_RECEIVE: i32 = 35;
    const IP_IPSEC_POLICY: i32 = 16;
    const IP_XFRM_POLICY: i32 = 17;
    const IPV6_IPSEC_POLICY: i32 = 34;
    const IPV6_XFRM_POLICY: i32 = 35;
    match level {
        libc::SOL_SOCKET => match name {
            SO_ATTACH_FILTER
            | SO_ATTACH_BPF
            | SO_ATTACH_REUSEPORT_CBPF
            | SO_ATTACH_REUSEPORT_EBPF => OptPolicy::Deny(libc::EOPNOTSUPP),
            // The host library keeps SO_OOBINLINE; the agent's sockets keep urgent data out of
            // band (urgent.rs).
            libc::SO_OOBINLINE if set => OptPolicy::Deny(libc::EOPNOTSUPP),
            libc::SO_DEBUG
            | libc::SO_MARK
            | libc::SO_RCVBUFFORCE
            | libc::SO_SNDBUFFORCE
            | libc::SO_BUSY_POLL
                if set =>
            {
                OptPolicy::NeedNetAdmin
            }
            libc::SO_PRIORITY if set => {
                let v = val
                    .get(..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                if (0..=6).contains(&v) {
                    OptPolicy::Pass
                } else {
                    OptPolicy::NeedNetAdmin
                }
            }
            _ => OptPolicy::Pass,
        },
        libc::IPPROTO_TCP => match name {
            TCP_ZEROCOPY_RECEIVE => OptPolicy::Deny(libc::EOPNOTSUPP),
            TCP_REPAIR | TCP_REPAIR_QUEUE | TCP_QUEUE_SEQ | TCP_REPAIR_OPTIONS
            | TCP_REPAIR_WINDOW
                if set =>
            {
                OptPolicy::NeedNetAdmin
            }
            libc::TCP_CONGESTION if set => OptPolicy::Congestion,
            TCP_ULP if set => {
                if val.starts_with(b"tls") && val.get(3).map_or(true, |&b| b == 0) {
                    OptPolicy::Pass
                } else {
                    OptPolicy::NeedNetAdmin
                }
            }
            _ => OptPolicy::Pass,
        },
        // Names from 64 up reach netfilter (iptables, ip6tables, IPVS) through any inet socket.
        libc::IPPROTO_IP => match name {
            n if n >= 64 => OptPolicy::NeedNetAdmin,
            libc::IP_TRANSPARENT | IP_IPSEC_POLICY | IP_XFRM_POLICY if set => {
                OptPolicy::NeedNetAdmin
            }
            _ => OptPolicy::Pass,
        },
        libc::IPPROTO_IPV6 => match name {
            64..=69 => OptPolicy::NeedNetAdmin,
            n if n > 80 => OptPolicy::NeedNetAdmin,
            libc::IPV6_TRANSPARENT | IPV6_IPSEC_POLICY | IPV6_XFRM_POLICY if set => {
                OptPolicy::NeedNetAdmin
            }
            _ => OptPolicy::Pass,
        },
        _ => OptPolicy::Pass,
    }
}

/// Is `algo` (NUL-padded option value) in the space-separated allow-list?
pub fn congestion_allowed(val: &[u8], allowed: &str) -> bool {
    let end = val.iter().position(|&b| b == 0).unwrap_or(val.len());
    let Ok(name) = std::str::from_utf8(&val[..end]) else {
        return false;
    };
    !name.is_empty() && allowed.split_whitespace().any(|a| a == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sess() -> Session<u32> {
        Session::new(42, 1000, 1000, 4)
    }

    fn cmd(op: u16, slot: u32) -> Cmd {
        Cmd {
            op,
            slot,
            tag: 7,
            ..Default::default()
        }
    }

    #[test]
    fn slots_lowest_free_first_and_reuse() {
        let mut t = SlotTable::new(3);
        assert_eq!(t.alloc(10), Ok(0));
        assert_eq!(t.alloc(11), Ok(1));
        assert_eq!(t.alloc(12), Ok(2));
        assert_eq!(t.alloc(13), Err(13));
        assert!(!t.has_free());
        assert_eq!(t.free(1), Some(11));
        assert_eq!(t.free(1), None);
        assert!(t.start_drain(0));
        assert!(!t.is_live(0));
        assert_eq!(t.get_any_mut(0).map(|(v, d)| (*v, d)), Some((10, true)));
        assert_eq!(t.get_mut(0), None);
        assert_eq!((t.live_count(), t.draining_count()), (1, 1));
        // Draining slot 0 is not reused; 1 is.
        assert_eq!(t.alloc(20), Ok(1));
        assert_eq!(t.free(0), Some(10));
        assert_eq!(t.alloc(21), Ok(0));
        assert_eq!(t.used_slots(), vec![0, 1, 2]);
        let vals: Vec<i32> = t
            .used_slots()
            .into_iter()
            .filter_map(|n| t.get_any(n).map(|(v, _)| *v))
            .collect();
        assert_eq!(vals, vec![21, 20, 12]);
    }

    #[test]
    fn insert_at_keeps_numbers_and_alloc_skips_them() {
        let mut t = SlotTable::new(8);
        assert_eq!(t.insert_at(3, 30), Ok(()));
        assert_eq!(t.insert_at(3, 31), Err(31));
        assert_eq!(t.insert_at(8, 80), Err(80));
        assert_eq!(t.insert_at(1, 10), Ok(()));
        assert_eq!(t.alloc(0), Ok(0));
        assert_eq!(t.alloc(2), Ok(2));
        assert_eq!(t.alloc(4), Ok(4));
        assert_eq!(t.used_slots(), vec![0, 1, 2, 3, 4]);
        assert_eq!(t.live_count(), 5);
        assert_eq!(t.get_any(3), Some((&30, false)));
        assert_eq!(t.free(1), Some(10));
        assert_eq!(t.alloc(9), Ok(1));
    }

    #[test]
    fn decode_fork_ops() {
        let s = sess();
        let mut c = cmd(OP_FORK, 999);
        assert_eq!(s.decode(&c).unwrap().req, Request::Fork);
        c.tag = 0;
        assert_eq!(
            s.decode(&c),
            Err(Violation::Decode(DecodeError::MissingTag(OP_FORK)))
        );
        let req = Request::ForkChild {
            secret: 0xfeed,
            pid: 1234,
        };
        let mut c = req.to_cmd(u32::MAX);
        c.tag = 7;
        assert_eq!(s.decode(&c).unwrap().req, req);
    }

    #[test]
    fn decode_rejects_bad_slots_and_ops() {
        let mut s = sess();
        assert_eq!(s.decode(&cmd(OP_NOP, 999)).unwrap().req, Request::Nop);
        assert_eq!(
            s.decode(&cmd(99, 0)),
            Err(Violation::Decode(DecodeError::UnknownOp(99)))
        );
        assert_eq!(
            s.decode(&cmd(0, 0)),
            Err(Violation::Decode(DecodeError::UnknownOp(0)))
        );
        assert_eq!(
            s.decode(&cmd(OP_LISTEN, 4)),
            Err(Violation::SlotOutOfRange { slot: 4, max: 4 })
        );
        assert_eq!(
            s.decode(&cmd(OP_LISTEN, u32::MAX)),
            Err(Violation::SlotOutOfRange {
                slot: u32::MAX,
                max: 4
            })
        );
        assert_eq!(
            s.decode(&cmd(OP_LISTEN, 0)),
            Err(Violation::SlotNotOwned {
                slot: 0,
                op: OP_LISTEN
            })
        );
        s.table.alloc(1).unwrap();
        let mut c = Request::Listen { backlog: -1 }.to_cmd(0);
        c.tag = 7;
        assert_eq!(
            s.decode(&c).unwrap(),
            Command {
                slot: 0,
                tag: 7,
                req: Request::Listen { backlog: -1 }
            }
        );
        s.table.start_drain(0);
        // TX work for bytes published before the close (another thread's close overtook it on
        // the ring) still names the draining slot; anything else there is a violation.
        assert!(s.decode(&cmd(OP_TX_KICK, 0)).is_ok());
        let mut l = Request::Listen { backlog: 1 }.to_cmd(0);
        l.tag = 8;
        assert!(matches!(s.decode(&l), Err(Violation::SlotNotOwned { .. })));
    }

    /// The request's own checks (family, lengths: `shm_proto::request`) come before the slot's.
    #[test]
    fn decode_errors_are_violations() {
        let mut s = sess();
        s.table.alloc(1).unwrap();
        let c = Cmd {
            arg: [1, 0, 0, 0, 0, 0], // family AF_UNIX
            ..cmd(OP_CONNECT, 0)
        };
        assert_eq!(
            s.decode(&c),
            Err(Violation::Decode(DecodeError::BadFamily(1)))
        );
        let c = Cmd {
            arg: [0, 33, 0, 0, 0, 0], // length 33 inline
            ..cmd(OP_SETSOCKOPT, 0)
        };
        assert_eq!(
            s.decode(&c),
            Err(Violation::Decode(DecodeError::BadLen(33)))
        );
        let v6: SocketAddr = "[::1]:443".parse().unwrap();
        let req = Request::Connect {
            addr: Addr::Inet(v6),
            wait: true,
        };
        assert_eq!(s.decode(&req.to_cmd(0)).unwrap().req, req);
    }

    #[test]
    fn socket_and_family_rules() {
        assert_eq!(check_socket(libc::AF_INET, libc::SOCK_STREAM, 0), Ok(()));
        assert_eq!(
            check_socket(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 6),
            Ok(())
        );
        assert_eq!(
            check_socket(libc::AF_UNIX, libc::SOCK_STREAM, 0),
            Err(libc::EAFNOSUPPORT)
        );
        assert_eq!(
            check_socket(libc::AF_INET, libc::SOCK_DGRAM, 0),
            Err(libc::EINVAL)
        );
        assert_eq!(
            check_socket(libc::AF_INET, libc::SOCK_STREAM, 17),
            Err(libc::EPROTONOSUPPORT)
        );
        let v4 = Addr::Inet("1.2.3.4:5".parse().unwrap());
        let v6 = Addr::Inet("[::1]:5".parse().unwrap());
        assert!(check_family(libc::AF_INET, &v4).is_ok());
        assert_eq!(check_family(libc::AF_INET, &v6), Err(libc::EAFNOSUPPORT));
        assert_eq!(check_family(libc::AF_INET6, &v4), Err(libc::EINVAL));
        assert!(check_family(libc::AF_INET6, &v6).is_ok());
        assert_eq!(
            check_family(libc::AF_INET, &Addr::Unspec),
            Err(libc::EAFNOSUPPORT)
        );
    }

    #[test]
    fn privileged_ports() {
        let none = || None;
        let bind_cap = || Some(1u64 << CAP_NET_BIND_SERVICE);
        let other_caps = || Some(1u64 << CAP_NET_ADMIN);
        assert_eq!(bind_allowed(80, 1024, 1000, none), Err(libc::EACCES));
        assert_eq!(bind_allowed(80, 1024, 1000, other_caps), Err(libc::EACCES));
        assert_eq!(bind_allowed(80, 1024, 1000, bind_cap), Ok(()));
        assert_eq!(bind_allowed(80, 1024, 0, none), Ok(()));
        assert_eq!(bind_allowed(0, 1024, 1000, none), Ok(()));
        assert_eq!(bind_allowed(1024, 1024, 1000, none), Ok(()));
        assert_eq!(bind_allowed(80, 0, 1000, none), Ok(()));
    }

    #[test]
    fn reuseport_groups_are_per_uid() {
        let mut r = ReuseportTable::default();
        r.add(8080, 1000);
        r.add(8080, 1000);
        assert_eq!(r.check(8080, 1000), Ok(()));
        assert_eq!(r.check(8080, 1001), Err(libc::EADDRINUSE));
        assert_eq!(r.check(8081, 1001), Ok(()));
        r.remove(8080);
        assert_eq!(r.check(8080, 1001), Err(libc::EADDRINUSE));
        r.remove(8080);
        assert_eq!(r.check(8080, 1001), Ok(()));
        r.remove(8080); // unknown port: no-op
    }

    #[test]
    fn sockopt_policy_guards_root() {
        let one = 1i32.to_ne_bytes();
        assert_eq!(
            sockopt_policy(libc::SOL_SOCKET, libc::SO_REUSEADDR, true, &one),
            OptPolicy::Pass
        );
        assert_eq!(
            sockopt_policy(libc::SOL_SOCKET, libc::SO_MARK, true, &one),
            OptPolicy::NeedNetAdmin
        );
        assert_eq!(
            sockopt_policy(libc::SOL_SOCKET, libc::SO_MARK, false, &one),
            OptPolicy::Pass
        );
        assert_eq!(
            sockopt_policy(libc::SOL_SOCKET, 26, true, &one),
            OptPolicy::Deny(libc::EOPNOTSUPP)
        );
        assert_eq!(
            sockopt_policy(libc::SOL_SOCKET, libc::SO_PRIORITY, true, &one),
            OptPolicy::Pass
        );
        assert_eq!(
            sockopt_policy(
                libc::SOL_SOCKET,
                libc::SO_PRIORITY,
                true,
                &7i32.to_ne_bytes()
            ),
            OptPolicy::NeedNetAdmin
        );
        assert_eq!(
            sockopt_policy(libc::IPPROTO_IP, 64, true, &one),
            OptPolicy::NeedNetAdmin
        );
        assert_eq!(
            sockopt_policy(libc::IPPROTO_IP, 65, false, &one),
            OptPolicy::NeedNetAdmin
        );
        assert_eq!(
            sockopt_policy(libc::IPPROTO_IP, libc::IP_TOS, true, &one),
            OptPolicy::Pass
        );
        assert_eq!(
            sockopt_policy(libc::IPPROTO_IPV6, 64, true, &one),
            OptPolicy::NeedNetAdmin
        );
        assert_eq!(
            sockopt_policy(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, true, &one),
            OptPolicy::Pass
        );
        assert_eq!(
            sockopt_policy(libc::IPPROTO_TCP, libc::TCP_NODELAY, true, &one),
            OptPolicy::Pass
        );
        assert_eq!(
            sockopt_policy(libc::IPPROTO_TCP, 35, false, &one),
            OptPolicy::Deny(libc::EOPNOTSUPP)
        );
        assert_eq!(
            sockopt_policy(libc::IPPROTO_TCP, 31, true, b"tls\0"),
            OptPolicy::Pass
        );
        assert_eq!(
            sockopt_policy(libc::IPPROTO_TCP, 31, true, b"tlsx"),
            OptPolicy::NeedNetAdmin
        );
        assert_eq!(
            sockopt_policy(libc::IPPROTO_TCP, libc::TCP_CONGESTION, true, b"bbr"),
            OptPolicy::Congestion
        );
        assert!(congestion_allowed(b"cubic\0\0", "reno cubic"));
        assert!(!congestion_allowed(b"bbr\0", "reno cubic"));
        assert!(!congestion_allowed(b"\0", "reno cubic"));
    }

    #[test]
    fn queue_caps() {
        assert_eq!(queue_cap(0), 16);
        assert_eq!(queue_cap(511), 511);
        assert_eq!(queue_cap(-1), 4096);
        assert_eq!(queue_cap(i32::MAX), 4096);
    }
}
