//! The requests the host sends over the command ring, defined once for both sides.
//!
//! The host builds a [`Request`] and [`Request::encode`]s it into a [`Cmd`]; the agent
//! [`Request::decode`]s every `Cmd` it pops. `Cmd::slot` and `Cmd::tag` are the envelope (which
//! socket, which completion) and stay outside the enum; `op`, `flags` and `arg` are what this file
//! owns. The layout of each op's words is the table in `docs/channel.md`.
//!
//! A `Cmd` is written by the host, so to the agent it is hostile: `decode` checks the op, lengths,
//! option cells and address families and returns a [`DecodeError`] (the agent then drops the
//! channel), never panics. Whether a slot is the host's to name is the agent's business (its slot
//! table), not this file's.

use crate::addr::{Addr, WireAddr};
use crate::layout::*;

/// A socket option value of `OP_SETSOCKOPT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptVal {
    /// Carried in the command itself (`len <= MAX_OPTVAL`); bytes past `len` are zero.
    Inline([u8; MAX_OPTVAL]),
    /// In option buffer cell `n` of the region (`CF_OPTBUF`, `len <= OPT_SIZE`).
    Cell(usize),
}

/// A host -> NIC command, one variant per opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `socket(domain, ty, protocol)`; `ty` without `SOCK_NONBLOCK`/`SOCK_CLOEXEC` (host state).
    Socket {
        domain: i32,
        ty: i32,
        protocol: i32,
    },
    Bind {
        addr: Addr,
    },
    Listen {
        backlog: i32,
    },
    /// `wait` (`CF_WAIT`): complete only when a connection was taken, not with `EAGAIN`.
    Accept {
        wait: bool,
    },
    /// `wait` (`CF_WAIT`): complete when connected or failed, not with `EINPROGRESS`.
    Connect {
        addr: Addr,
        wait: bool,
    },
    Close,
    Shutdown {
        how: i32,
    },
    GetSockName,
    GetPeerName,
    SetSockOpt {
        level: i32,
        name: i32,
        len: usize,
        val: OptVal,
    },
    /// `len`: bytes wanted; `cell` (`CF_OPTBUF`): write the value into this option buffer cell
    /// instead of the completion.
    GetSockOpt {
        level: i32,
        name: i32,
        len: usize,
        cell: Option<usize>,
    },
    TxKick,
    RxSpace,
    RxClaim,
    Nop,
    /// Take a fork ticket for every socket of the session (`tag` must be non-zero).
    Fork,
    /// Tie the ticket `secret` to the child `pid` (checked by the agent, so kept as sent).
    ForkChild {
        secret: u64,
        pid: u64,
    },
    /// Open the process's file `fd` (`st_dev`, `st_ino` as the host saw them) for
    /// [`Request::TxFile`] (slotless; `tag` must be non-zero: the completion is the file's id).
    FileOpen {
        fd: i32,
        dev: u64,
        ino: u64,
    },
    /// Drop file `id` (slotless, no completion).
    FileClose {
        id: u32,
    },
    /// Send `len` bytes of file `id` from `offset` at TX stream index `at` of the slot.
    TxFile {
        id: u32,
        offset: u64,
        len: u64,
        at: u32,
    },
    /// The byte at TX stream index `at - 1` of the slot is urgent (`send(MSG_OOB)`).
    TxUrgent {
        at: u32,
    },
    /// The TX stream bytes `from..to` of the slot form kTLS record(s) of content type `ty`
    /// (`sendmsg` with `TLS_SET_RECORD_TYPE`).
    TxRecType {
        from: u32,
        to: u32,
        ty: u8,
    },
}

/// Why a command cannot be decoded. For the agent every one of these is a protocol violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    UnknownOp(u16),
    BadFamily(u16),
    /// An option length over what its carrier holds.
    BadLen(u64),
    /// An option buffer cell index out of range.
    BadCell(u64),
    /// A word that must hold a sign-extended `i32` does not.
    BadInt(u64),
    /// The op needs a completion and `tag` is 0.
    MissingTag(u16),
    /// An `OP_TX_FILE` length under [`MIN_TX_FILE`] or over [`MAX_TX_FILE`], an offset past `i64::MAX`, or an
    /// id or index over 32 bits.
    BadFileRef,
    BadUrgent,
    /// An `OP_TX_RECTYPE` with an index over 32 bits, an empty or reversed range, or a content
    /// type of 0 or over a byte.
    BadRecType,
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::UnknownOp(op) => write!(f, "unknown op {op}"),
            DecodeError::BadFamily(fam) => write!(f, "bad address family {fam}"),
            DecodeError::BadLen(n) => write!(f, "bad option length {n}"),
            DecodeError::BadCell(n) => write!(f, "option buffer cell {n} out of range"),
            DecodeError::BadInt(w) => write!(f, "word {w:#x} is not an int"),
            DecodeError::MissingTag(op) => write!(f, "op {op} needs a completion tag"),
            DecodeError::BadFileRef => write!(f, "bad file reference"),
            DecodeError::BadUrgent => write!(f, "bad urgent mark"),
            DecodeError::BadRecType => write!(f, "bad record-type mark"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DecodeError {}

/// `int` arguments travel sign-extended, as `(x as i64) as u64`.
fn int_word(x: i32) -> u64 {
    i64::from(x) as u64
}

fn word_int(w: u64) -> Result<i32, DecodeError> {
    i32::try_from(w as i64).map_err(|_| DecodeError::BadInt(w))
}

/// `level | name << 32`: both are `int`s, kept as their 32-bit patterns.
fn opt_word(level: i32, name: i32) -> u64 {
    u64::from(level as u32) | (u64::from(name as u32) << 32)
}

fn word_opt(w: u64) -> (i32, i32) {
    (w as u32 as i32, (w >> 32) as u32 as i32)
}

fn addr_words(args: &[u64; 6]) -> [u64; 4] {
    [args[0], args[1], args[2], args[3]]
}

fn val_words(v: &[u8; MAX_OPTVAL]) -> [u64; 4] {
    let mut w = [0u64; 4];
    for (i, w) in w.iter_mut().enumerate() {
        let mut x = [0u8; 8];
        x.copy_from_slice(&v[i * 8..i * 8 + 8]);
        *w = u64::from_ne_bytes(x);
    }
    w
}

fn words_val(w: &[u64]) -> [u8; MAX_OPTVAL] {
    let mut v = [0u8; MAX_OPTVAL];
    for (i, w) in w.iter().take(4).enumerate() {
        v[i * 8..i * 8 + 8].copy_from_slice(&w.to_ne_bytes());
    }
    v
}

impl OptVal {
    /// An inline value from the application's bytes (at most [`MAX_OPTVAL`] of them are kept).
    pub fn inline(bytes: &[u8]) -> OptVal {
        let mut v = [0u8; MAX_OPTVAL];
        let n = bytes.len().min(MAX_OPTVAL);
        v[..n].copy_from_slice(&bytes[..n]);
        OptVal::Inline(v)
    }
}

impl Request {
    /// The opcode (`OP_*`).
    pub fn op(&self) -> u16 {
        match self {
            Request::Socket { .. } => OP_SOCKET,
            Request::Bind { .. } => OP_BIND,
            Request::Listen { .. } => OP_LISTEN,
            Request::Accept { .. } => OP_ACCEPT,
            Request::Connect { .. } => OP_CONNECT,
            Request::Close => OP_CLOSE,
            Request::Shutdown { .. } => OP_SHUTDOWN,
            Request::GetSockName => OP_GETSOCKNAME,
            Request::GetPeerName => OP_GETPEERNAME,
            Request::SetSockOpt { .. } => OP_SETSOCKOPT,
            Request::GetSockOpt { .. } => OP_GETSOCKOPT,
            Request::TxKick => OP_TX_KICK,
            Request::RxSpace => OP_RX_SPACE,
            Request::RxClaim => OP_RX_CLAIM,
            Request::Nop => OP_NOP,
            Request::Fork => OP_FORK,
            Request::ForkChild { .. } => OP_FORK_CHILD,
            Request::FileOpen { .. } => OP_FILE_OPEN,
            Request::FileClose { .. } => OP_FILE_CLOSE,
            Request::TxFile { .. } => OP_TX_FILE,
            Request::TxUrgent { .. } => OP_TX_URG,
            Request::TxRecType { .. } => OP_TX_RECTYPE,
        }
    }

    /// True when the request names no socket (`Cmd::slot` is ignored).
    pub fn slotless(&self) -> bool {
        matches!(
            self,
            Request::Nop
                | Request::Socket { .. }
                | Request::Fork
                | Request::ForkChild { .. }
                | Request::FileOpen { .. }
                | Request::FileClose { .. }
        )
    }

    /// Writes `op`, `flags` and `arg` of `cmd` (unused words become 0); `slot` and `tag` are the
    /// caller's.
    pub fn encode(&self, cmd: &mut Cmd) {
        let mut a = [0u64; 6];
        let mut flags = 0u16;
        match *self {
            Request::Socket {
                domain,
                ty,
                protocol,
            } => {
                a[0] = int_word(domain);
                a[1] = int_word(ty);
                a[2] = int_word(protocol);
            }
            Request::Bind { addr } => {
                a[..4].copy_from_slice(&WireAddr::from(addr).to_words());
            }
            Request::Listen { backlog } => a[0] = int_word(backlog),
            Request::Accept { wait } => {
                if wait {
                    flags |= CF_WAIT;
                }
            }
            Request::Connect { addr, wait } => {
                a[..4].copy_from_slice(&WireAddr::from(addr).to_words());
                if wait {
                    flags |= CF_WAIT;
                }
            }
            Request::Shutdown { how } => a[0] = int_word(how),
            Request::SetSockOpt {
                level,
                name,
                len,
                val,
            } => {
                a[0] = opt_word(level, name);
                a[1] = len as u64;
                match val {
                    OptVal::Inline(v) => a[2..6].copy_from_slice(&val_words(&v)),
                    OptVal::Cell(c) => {
                        flags |= CF_OPTBUF;
                        a[2] = c as u64;
                    }
                }
            }
            Request::GetSockOpt {
                level,
                name,
                len,
                cell,
            } => {
                a[0] = opt_word(level, name);
                a[1] = len as u64;
                if let Some(c) = cell {
                    flags |= CF_OPTBUF;
                    a[2] = c as u64;
                }
            }
            Request::ForkChild { secret, pid } => {
                a[0] = secret;
                a[1] = pid;
            }
            Request::FileOpen { fd, dev, ino } => {
                a[0] = int_word(fd);
                a[1] = dev;
                a[2] = ino;
            }
            Request::FileClose { id } => a[0] = u64::from(id),
            Request::TxFile {
                id,
                offset,
                len,
                at,
            } => {
                a[0] = u64::from(id);
                a[1] = offset;
                a[2] = len;
                a[3] = u64::from(at);
            }
            Request::TxUrgent { at } => a[0] = u64::from(at),
            Request::TxRecType { from, to, ty } => {
                a[0] = u64::from(from);
                a[1] = u64::from(to);
                a[2] = u64::from(ty);
            }
            Request::Close
            | Request::GetSockName
            | Request::GetPeerName
            | Request::TxKick
            | Request::RxSpace
            | Request::RxClaim
            | Request::Nop
            | Request::Fork => {}
        }
        cmd.op = self.op();
        cmd.flags = flags;
        cmd.arg = a;
    }

    /// A command for socket `slot` (0 for slotless requests), tag 0: the channel assigns the tag
    /// when it wants a completion.
    pub fn to_cmd(&self, slot: u32) -> Cmd {
        let mut c = Cmd {
            slot,
            ..Default::default()
        };
        self.encode(&mut c);
        c
    }

    /// Decodes a command the host wrote. Flags an op does not use are ignored, as are words it
    /// does not use.
    pub fn decode(cmd: &Cmd) -> Result<Request, DecodeError> {
        let a = &cmd.arg;
        let wait = cmd.flags & CF_WAIT != 0;
        let optbuf = cmd.flags & CF_OPTBUF != 0;
        Ok(match cmd.op {
            OP_NOP => Request::Nop,
            OP_SOCKET => Request::Socket {
                domain: word_int(a[0])?,
                ty: word_int(a[1])?,
                protocol: word_int(a[2])?,
            },
            OP_BIND => Request::Bind {
                addr: WireAddr::from_words(&addr_words(a)).try_into()?,
            },
            OP_LISTEN => Request::Listen {
                backlog: word_int(a[0])?,
            },
            OP_ACCEPT => Request::Accept { wait },
            OP_CONNECT => Request::Connect {
                addr: WireAddr::from_words(&addr_words(a)).try_into()?,
                wait,
            },
            OP_CLOSE => Request::Close,
            OP_SHUTDOWN => Request::Shutdown {
                how: word_int(a[0])?,
            },
            OP_GETSOCKNAME => Request::GetSockName,
            OP_GETPEERNAME => Request::GetPeerName,
            OP_SETSOCKOPT | OP_GETSOCKOPT => {
                let (level, name) = word_opt(a[0]);
                let max = if optbuf { OPT_SIZE } else { MAX_OPTVAL };
                if a[1] > max as u64 {
                    return Err(DecodeError::BadLen(a[1]));
                }
                let len = a[1] as usize;
                let cell = if optbuf {
                    if a[2] >= OPT_CELLS as u64 {
                        return Err(DecodeError::BadCell(a[2]));
                    }
                    Some(a[2] as usize)
                } else {
                    None
                };
                if cmd.op == OP_SETSOCKOPT {
                    let val = match cell {
                        Some(c) => OptVal::Cell(c),
                        None => OptVal::Inline(words_val(&a[2..6])),
                    };
                    Request::SetSockOpt {
                        level,
                        name,
                        len,
                        val,
                    }
                } else {
                    Request::GetSockOpt {
                        level,
                        name,
                        len,
                        cell,
                    }
                }
            }
            OP_TX_KICK => Request::TxKick,
            OP_RX_SPACE => Request::RxSpace,
            OP_RX_CLAIM => Request::RxClaim,
            OP_FORK if cmd.tag == 0 => return Err(DecodeError::MissingTag(cmd.op)),
            OP_FORK => Request::Fork,
            OP_FORK_CHILD => Request::ForkChild {
                secret: a[0],
                pid: a[1],
            },
            OP_FILE_OPEN if cmd.tag == 0 => return Err(DecodeError::MissingTag(cmd.op)),
            OP_FILE_OPEN => Request::FileOpen {
                fd: word_int(a[0])?,
                dev: a[1],
                ino: a[2],
            },
            OP_FILE_CLOSE => Request::FileClose {
                id: u32::try_from(a[0]).map_err(|_| DecodeError::BadFileRef)?,
            },
            OP_TX_FILE => {
                let bad = a[2] < MIN_TX_FILE
                    || a[2] > MAX_TX_FILE
                    || a[1] > i64::MAX as u64
                    || a[0] > u64::from(u32::MAX)
                    || a[3] > u64::from(u32::MAX);
                if bad {
                    return Err(DecodeError::BadFileRef);
                }
                Request::TxFile {
                    id: a[0] as u32,
                    offset: a[1],
                    len: a[2],
                    at: a[3] as u32,
                }
            }
            OP_TX_URG => Request::TxUrgent {
                at: u32::try_from(a[0]).map_err(|_| DecodeError::BadUrgent)?,
            },
            OP_TX_RECTYPE => {
                let word = |w: u64| u32::try_from(w).map_err(|_| DecodeError::BadRecType);
                let (from, to) = (word(a[0])?, word(a[1])?);
                // A content type of 0 would read as padding in TLS 1.3; an empty range marks
                // nothing.
                let ty = match u8::try_from(a[2]) {
                    Ok(t) if t != 0 => t,
                    _ => return Err(DecodeError::BadRecType),
                };
                if from == to || to.wrapping_sub(from) > i32::MAX as u32 {
                    return Err(DecodeError::BadRecType);
                }
                Request::TxRecType { from, to, ty }
            }
            op => return Err(DecodeError::UnknownOp(op)),
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use core::net::SocketAddr;

    fn sa(s: &str) -> Addr {
        Addr::Inet(s.parse::<SocketAddr>().unwrap())
    }

    fn every_variant() -> std::vec::Vec<Request> {
        let mut val = [0u8; MAX_OPTVAL];
        val[..4].copy_from_slice(&1i32.to_ne_bytes());
        val[31] = 0xee;
        std::vec![
            Request::Socket {
                domain: 10,
                ty: 1,
                protocol: 6
            },
            Request::Socket {
                domain: -1,
                ty: i32::MIN,
                protocol: i32::MAX
            },
            Request::Bind {
                addr: sa("127.0.0.1:8080")
            },
            Request::Bind { addr: Addr::Unspec },
            Request::Listen { backlog: -1 },
            Request::Listen { backlog: 511 },
            Request::Accept { wait: false },
            Request::Accept { wait: true },
            Request::Connect {
                addr: sa("[fe80::1%2]:443"),
                wait: true
            },
            Request::Connect {
                addr: sa("10.0.0.1:1"),
                wait: false
            },
            Request::Close,
            Request::Shutdown { how: 1 },
            Request::Shutdown { how: -5 },
            Request::GetSockName,
            Request::GetPeerName,
            Request::SetSockOpt {
                level: 1,
                name: 2,
                len: 4,
                val: OptVal::Inline(val)
            },
            Request::SetSockOpt {
                level: -1,
                name: i32::MIN,
                len: OPT_SIZE,
                val: OptVal::Cell(OPT_CELLS - 1)
            },
            Request::GetSockOpt {
                level: 6,
                name: 11,
                len: MAX_OPTVAL,
                cell: None
            },
            Request::GetSockOpt {
                level: 6,
                name: 11,
                len: 104,
                cell: Some(3)
            },
            Request::TxKick,
            Request::RxSpace,
            Request::RxClaim,
            Request::Nop,
            Request::Fork,
            Request::ForkChild {
                secret: u64::MAX,
                pid: 1234
            },
            Request::FileOpen {
                fd: 7,
                dev: u64::MAX,
                ino: 1 << 40
            },
            Request::FileClose { id: u32::MAX },
            Request::TxFile {
                id: 3,
                offset: i64::MAX as u64,
                len: MAX_TX_FILE,
                at: u32::MAX
            },
            Request::TxUrgent { at: u32::MAX },
            Request::TxRecType {
                from: u32::MAX,
                to: 4,
                ty: 21,
            },
        ]
    }

    #[test]
    fn every_variant_round_trips() {
        let mut ops = std::collections::BTreeSet::new();
        for r in every_variant() {
            let mut c = r.to_cmd(3);
            c.tag = 9;
            assert_eq!(c.op, r.op());
            assert_eq!(Request::decode(&c), Ok(r), "{r:?}");
            ops.insert(r.op());
        }
        // Every opcode the channel defines has a variant (OP_SOCKET = 1 .. OP_TX_RECTYPE = 22).
        assert_eq!(
            ops.into_iter().collect::<std::vec::Vec<_>>(),
            (1..=22).collect::<std::vec::Vec<u16>>()
        );
    }

    /// The words the host wrote by hand before this file existed, for a few commands: the format
    /// did not change.
    #[test]
    fn wire_fixtures() {
        let c = Request::Socket {
            domain: 2,
            ty: 1,
            protocol: 0,
        }
        .to_cmd(0);
        assert_eq!((c.op, c.flags, c.arg), (1, 0, [2, 1, 0, 0, 0, 0]));
        let c = Request::Listen { backlog: -1 }.to_cmd(5);
        assert_eq!((c.op, c.slot, c.arg[0]), (3, 5, u64::MAX));
        let c = Request::Bind {
            addr: sa("1.2.3.4:258"),
        }
        .to_cmd(0);
        let fam_port = u64::from_ne_bytes([2, 0, 1, 2, 0, 0, 0, 0]);
        let ip = u64::from_ne_bytes([1, 2, 3, 4, 0, 0, 0, 0]);
        assert_eq!(c.arg, [fam_port, ip, 0, 0, 0, 0]);
        let c = Request::GetSockOpt {
            level: 6,
            name: 1,
            len: 4,
            cell: None,
        }
        .to_cmd(0);
        assert_eq!((c.op, c.flags, c.arg[0], c.arg[1]), (11, 0, 6 | 1 << 32, 4));
        let c = Request::SetSockOpt {
            level: 1,
            name: 2,
            len: 200,
            val: OptVal::Cell(7),
        }
        .to_cmd(0);
        assert_eq!((c.flags, c.arg[1], c.arg[2]), (CF_OPTBUF, 200, 7));
        let c = Request::Connect {
            addr: Addr::Unspec,
            wait: true,
        }
        .to_cmd(0);
        assert_eq!((c.op, c.flags, c.arg), (5, CF_WAIT, [0; 6]));
        let c = Request::ForkChild { secret: 7, pid: 99 }.to_cmd(0);
        assert_eq!((c.op, c.arg[0], c.arg[1]), (16, 7, 99));
        let c = Request::FileOpen {
            fd: 5,
            dev: 2049,
            ino: 77,
        }
        .to_cmd(0);
        assert_eq!((c.op, c.arg), (18, [5, 2049, 77, 0, 0, 0]));
        let c = Request::TxFile {
            id: 2,
            offset: 4096,
            len: 5000,
            at: 9,
        }
        .to_cmd(4);
        assert_eq!((c.op, c.slot, c.arg), (20, 4, [2, 4096, 5000, 9, 0, 0]));
        let c = Request::TxRecType {
            from: 10,
            to: 12,
            ty: 21,
        }
        .to_cmd(1);
        assert_eq!((c.op, c.slot, c.arg), (22, 1, [10, 12, 21, 0, 0, 0]));
    }

    fn cmd(op: u16) -> Cmd {
        Cmd {
            op,
            tag: 1,
            ..Default::default()
        }
    }

    #[test]
    fn malformed_commands_are_errors() {
        assert_eq!(Request::decode(&cmd(0)), Err(DecodeError::UnknownOp(0)));
        assert_eq!(Request::decode(&cmd(23)), Err(DecodeError::UnknownOp(23)));
        // Record types: 0 or over a byte, an empty or reversed range, 33-bit indices.
        for (from, to, ty) in [
            (0, 5, 0),
            (0, 5, 256),
            (5, 5, 22),
            (5, 4, 22),
            (u64::from(u32::MAX) + 1, 5, 22),
            (0, u64::from(u32::MAX) + 1, 22),
        ] {
            let mut c = cmd(OP_TX_RECTYPE);
            c.arg[..3].copy_from_slice(&[from, to, ty]);
            assert_eq!(Request::decode(&c), Err(DecodeError::BadRecType), "{c:?}");
        }
        let mut c = cmd(OP_TX_URG);
        c.arg[0] = u64::from(u32::MAX) + 1;
        assert_eq!(Request::decode(&c), Err(DecodeError::BadUrgent));
        assert_eq!(
            Request::decode(&cmd(u16::MAX)),
            Err(DecodeError::UnknownOp(u16::MAX))
        );
        let mut c = cmd(OP_FORK);
        c.tag = 0;
        assert_eq!(Request::decode(&c), Err(DecodeError::MissingTag(OP_FORK)));
        let mut c = cmd(OP_FILE_OPEN);
        c.tag = 0;
        assert_eq!(
            Request::decode(&c),
            Err(DecodeError::MissingTag(OP_FILE_OPEN))
        );

        // File references: a length under the floor or over the cap, offsets past i64, 33-bit ids/indices.
        let good = Request::TxFile {
            id: 1,
            offset: 0,
            len: MIN_TX_FILE,
            at: 0,
        }
        .to_cmd(0);
        assert!(Request::decode(&good).is_ok());
        for (i, w) in [
            (2, 0),
            (2, MIN_TX_FILE - 1),
            (2, MAX_TX_FILE + 1),
            (1, 1 << 63),
            (0, 1 << 32),
            (3, 1 << 32),
        ] {
            let mut c = good;
            c.arg[i] = w;
            assert_eq!(Request::decode(&c), Err(DecodeError::BadFileRef), "arg {i}");
        }
        let mut c = cmd(OP_FILE_CLOSE);
        c.arg[0] = 1 << 32;
        assert_eq!(Request::decode(&c), Err(DecodeError::BadFileRef));

        // Address families.
        for op in [OP_BIND, OP_CONNECT] {
            let mut c = cmd(op);
            c.arg[0] = 1; // AF_UNIX
            assert_eq!(Request::decode(&c), Err(DecodeError::BadFamily(1)));
            c.arg[0] = 0xffff;
            assert_eq!(Request::decode(&c), Err(DecodeError::BadFamily(0xffff)));
        }

        // Ints that are not sign-extended i32s.
        let mut c = cmd(OP_LISTEN);
        c.arg[0] = 1 << 32;
        assert_eq!(Request::decode(&c), Err(DecodeError::BadInt(1 << 32)));
        let mut c = cmd(OP_SOCKET);
        c.arg[2] = 0x8000_0000;
        assert_eq!(Request::decode(&c), Err(DecodeError::BadInt(0x8000_0000)));
        let mut c = cmd(OP_SHUTDOWN);
        c.arg[0] = u64::MAX - (1 << 40);
        assert!(matches!(Request::decode(&c), Err(DecodeError::BadInt(_))));

        // Option lengths and cells.
        for op in [OP_SETSOCKOPT, OP_GETSOCKOPT] {
            let mut c = cmd(op);
            c.arg[1] = MAX_OPTVAL as u64 + 1;
            assert_eq!(Request::decode(&c), Err(DecodeError::BadLen(33)));
            c.arg[1] = u64::MAX;
            assert_eq!(Request::decode(&c), Err(DecodeError::BadLen(u64::MAX)));
            c.flags = CF_OPTBUF;
            c.arg[1] = OPT_SIZE as u64 + 1;
            assert_eq!(
                Request::decode(&c),
                Err(DecodeError::BadLen(OPT_SIZE as u64 + 1))
            );
            c.arg[1] = OPT_SIZE as u64;
            c.arg[2] = OPT_CELLS as u64;
            assert_eq!(
                Request::decode(&c),
                Err(DecodeError::BadCell(OPT_CELLS as u64))
            );
            c.arg[2] = u64::MAX;
            assert_eq!(Request::decode(&c), Err(DecodeError::BadCell(u64::MAX)));
        }
    }

    /// Arbitrary words never panic the decoder (a cheap stand-in for the fuzz target).
    #[test]
    fn decode_never_panics() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let w = next();
            let c = Cmd {
                op: (w % 20) as u16,
                flags: (w >> 8) as u16 & 3,
                slot: 0,
                tag: w >> 40,
                arg: [next(), next() % 600, next() % 300, next(), next(), next()],
            };
            if let Ok(r) = Request::decode(&c) {
                // What decodes re-encodes to something that decodes the same.
                let mut again = r.to_cmd(0);
                again.tag = c.tag;
                assert_eq!(Request::decode(&again), Ok(r));
            }
        }
    }
}
