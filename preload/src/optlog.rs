//! The socket options an application set on an offloaded socket, kept so that a socket an
//! offload rule moves to the kernel at bind/listen/connect (`tokernel.rs`) gets them too:
//! `SO_REUSEADDR` before `bind`, `TCP_NODELAY` or keepalive before `connect`, `IPV6_V6ONLY`,
//! buffer sizes... Kept only while some rule can move sockets (`rules::moves_sockets`).
//!
//! Values come from the application's own `setsockopt` calls, not from the agent: the agent's
//! backends report some values differently (a user-space engine's `SO_RCVBUF` is not doubled,
//! `SO_LINGER` is emulated). Per slot, [`ENTRIES`] words, each one option:
//!
//! ```text
//!  63      56 55    48 47       32 31                0
//!  [ option ][  aux  ][  unused   ][       value      ]   option 0 = free word
//! ```
//! `option` is 1 + the option's index in [`KNOWN`]; `aux` holds `l_onoff` for `SO_LINGER`.
//! String options (`TCP_CONGESTION`, `SO_BINDTODEVICE`) are only marked; their value is asked
//! of the agent when replayed. An option outside [`KNOWN`] (or one more than [`ENTRIES`]) is
//! remembered in `lost` and reported when the socket moves. Lock-free: `setsockopt` may run in
//! a signal handler.

use core::sync::atomic::{AtomicU64, Ordering};

pub(crate) const ENTRIES: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Int,
    Linger,
    Str,
}

/// Options replayed on a kernel socket: (level, name, kind).
pub(crate) const KNOWN: &[(i32, i32, Kind)] = {
    use libc::*;
    use Kind::*;
    &[
        (SOL_SOCKET, SO_REUSEADDR, Int),
        (SOL_SOCKET, SO_REUSEPORT, Int),
        (SOL_SOCKET, SO_KEEPALIVE, Int),
        (SOL_SOCKET, SO_RCVBUF, Int),
        (SOL_SOCKET, SO_SNDBUF, Int),
        (SOL_SOCKET, SO_LINGER, Linger),
        (SOL_SOCKET, SO_OOBINLINE, Int),
        (SOL_SOCKET, SO_PRIORITY, Int),
        (SOL_SOCKET, SO_MARK, Int),
        (SOL_SOCKET, SO_RCVLOWAT, Int),
        (SOL_SOCKET, SO_BINDTODEVICE, Str),
        (IPPROTO_IP, IP_TOS, Int),
        (IPPROTO_IP, IP_TTL, Int),
        (IPPROTO_IP, IP_FREEBIND, Int),
        (IPPROTO_IP, IP_TRANSPARENT, Int),
        (IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, Int),
        (IPPROTO_IP, IP_MTU_DISCOVER, Int),
        (IPPROTO_IPV6, IPV6_V6ONLY, Int),
        (IPPROTO_IPV6, IPV6_TCLASS, Int),
        (IPPROTO_IPV6, IPV6_UNICAST_HOPS, Int),
        (IPPROTO_TCP, TCP_NODELAY, Int),
        (IPPROTO_TCP, TCP_CORK, Int),
        (IPPROTO_TCP, TCP_KEEPIDLE, Int),
        (IPPROTO_TCP, TCP_KEEPINTVL, Int),
        (IPPROTO_TCP, TCP_KEEPCNT, Int),
        (IPPROTO_TCP, TCP_MAXSEG, Int),
        (IPPROTO_TCP, TCP_DEFER_ACCEPT, Int),
        (IPPROTO_TCP, TCP_FASTOPEN, Int),
        (IPPROTO_TCP, TCP_FASTOPEN_CONNECT, Int),
        (IPPROTO_TCP, TCP_QUICKACK, Int),
        (IPPROTO_TCP, TCP_USER_TIMEOUT, Int),
        (IPPROTO_TCP, TCP_WINDOW_CLAMP, Int),
        (IPPROTO_TCP, TCP_NOTSENT_LOWAT, Int),
        (IPPROTO_TCP, TCP_SYNCNT, Int),
        (IPPROTO_TCP, TCP_LINGER2, Int),
        (IPPROTO_TCP, TCP_CONGESTION, Str),
    ]
};

/// One option as it is replayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Opt {
    pub(crate) level: i32,
    pub(crate) name: i32,
    pub(crate) kind: Kind,
    /// `Int`: the value; `Linger`: `l_linger`.
    pub(crate) value: i32,
    /// `Linger`: `l_onoff`.
    pub(crate) aux: u8,
}

impl Opt {
    /// The option value as `setsockopt` takes it (`Str` has none here).
    pub(crate) fn bytes(&self) -> ([u8; 8], usize) {
        let mut b = [0u8; 8];
        match self.kind {
            Kind::Int => {
                b[..4].copy_from_slice(&self.value.to_ne_bytes());
                (b, 4)
            }
            Kind::Linger => {
                b[..4].copy_from_slice(&i32::from(self.aux).to_ne_bytes());
                b[4..].copy_from_slice(&self.value.to_ne_bytes());
                (b, 8)
            }
            Kind::Str => (b, 0),
        }
    }
}

pub(crate) struct OptLog {
    ents: [AtomicU64; ENTRIES],
    /// (level << 32 | name) of the first option not kept, 0 = none.
    lost: AtomicU64,
}

fn index_of(level: i32, name: i32) -> Option<usize> {
    KNOWN.iter().position(|&(l, n, _)| l == level && n == name)
}

fn encode(idx: usize, aux: u8, value: i32) -> u64 {
    ((idx as u64 + 1) << 56) | (u64::from(aux) << 48) | u64::from(value as u32)
}

fn decode(w: u64) -> Option<Opt> {
    let idx = (w >> 56) as usize;
    let &(level, name, kind) = KNOWN.get(idx.checked_sub(1)?)?;
    Some(Opt {
        level,
        name,
        kind,
        value: w as u32 as i32,
        aux: (w >> 48) as u8,
    })
}

impl OptLog {
    pub(crate) const fn new() -> Self {
        OptLog {
            ents: [const { AtomicU64::new(0) }; ENTRIES],
            lost: AtomicU64::new(0),
        }
    }

    /// A new socket took the slot.
    pub(crate) fn clear(&self) {
        for e in &self.ents {
            e.store(0, Ordering::Relaxed);
        }
        self.lost.store(0, Ordering::Relaxed);
    }

    /// The application set `level`/`name` to `val` and the agent accepted it.
    pub(crate) fn record(&self, level: i32, name: i32, val: &[u8]) {
        let Some(idx) = index_of(level, name) else {
            self.lose(level, name);
            return;
        };
        let int = |at: usize| {
            if val.len() >= at + 4 {
                i32::from_ne_bytes([val[at], val[at + 1], val[at + 2], val[at + 3]])
            } else {
                // Linux takes a one-byte value for some IP options (IP_TOS, IP_TTL, ...).
                val.get(at).map_or(0, |&b| i32::from(b))
            }
        };
        let w = match KNOWN[idx].2 {
            Kind::Int => encode(idx, 0, int(0)),
            Kind::Linger => encode(idx, u8::from(int(0) != 0), int(4)),
            Kind::Str => encode(idx, 0, 0),
        };
        let tag = (idx as u64 + 1) << 56;
        // The same option set again replaces its word; a new one takes a free word.
        for e in &self.ents {
            let cur = e.load(Ordering::Acquire);
            if cur & (0xff << 56) == tag {
                e.store(w, Ordering::Release);
                return;
            }
        }
        for e in &self.ents {
            if e.compare_exchange(0, w, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return;
            }
        }
        self.lose(level, name);
    }

    fn lose(&self, level: i32, name: i32) {
        let v = (u64::from(level as u32) << 32) | u64::from(name as u32);
        let _ = self
            .lost
            .compare_exchange(0, v, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// The options kept, in the order they were first set.
    pub(crate) fn each(&self, mut f: impl FnMut(Opt)) {
        for e in &self.ents {
            if let Some(o) = decode(e.load(Ordering::Acquire)) {
                f(o);
            }
        }
    }

    /// (level, name) of the first option set but not kept.
    pub(crate) fn lost(&self) -> Option<(i32, i32)> {
        match self.lost.load(Ordering::Acquire) {
            0 => None,
            v => Some(((v >> 32) as u32 as i32, v as u32 as i32)),
        }
    }

    /// Forked child: the parent's log for the same slot.
    pub(crate) fn copy_from(&self, o: &OptLog) {
        for (d, s) in self.ents.iter().zip(o.ents.iter()) {
            d.store(s.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.lost
            .store(o.lost.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(l: &OptLog) -> Vec<Opt> {
        let mut v = Vec::new();
        l.each(|o| v.push(o));
        v
    }

    #[test]
    fn records_replaces_and_decodes() {
        let l = OptLog::new();
        l.record(libc::SOL_SOCKET, libc::SO_REUSEADDR, &1i32.to_ne_bytes());
        l.record(libc::IPPROTO_TCP, libc::TCP_NODELAY, &1i32.to_ne_bytes());
        l.record(libc::SOL_SOCKET, libc::SO_RCVBUF, &65536i32.to_ne_bytes());
        l.record(libc::SOL_SOCKET, libc::SO_RCVBUF, &(-5i32).to_ne_bytes());
        let mut lg = [0u8; 8];
        lg[..4].copy_from_slice(&1i32.to_ne_bytes());
        lg[4..].copy_from_slice(&7i32.to_ne_bytes());
        l.record(libc::SOL_SOCKET, libc::SO_LINGER, &lg);
        l.record(libc::IPPROTO_IP, libc::IP_TOS, &[0x10]);
        l.record(libc::IPPROTO_TCP, libc::TCP_CONGESTION, b"reno");
        let v = all(&l);
        let got: Vec<_> = v.iter().map(|o| (o.level, o.name, o.value)).collect();
        assert_eq!(
            got,
            [
                (libc::SOL_SOCKET, libc::SO_REUSEADDR, 1),
                (libc::IPPROTO_TCP, libc::TCP_NODELAY, 1),
                (libc::SOL_SOCKET, libc::SO_RCVBUF, -5),
                (libc::SOL_SOCKET, libc::SO_LINGER, 7),
                (libc::IPPROTO_IP, libc::IP_TOS, 0x10),
                (libc::IPPROTO_TCP, libc::TCP_CONGESTION, 0),
            ]
        );
        assert_eq!(v[3].bytes(), (lg, 8));
        assert_eq!(v[5].kind, Kind::Str);
        assert_eq!(l.lost(), None);
        l.clear();
        assert!(all(&l).is_empty());
    }

    #[test]
    fn unknown_and_overflow_are_lost_first_one_kept() {
        let l = OptLog::new();
        l.record(libc::SOL_SOCKET, 9999, &1i32.to_ne_bytes());
        l.record(libc::SOL_SOCKET, 9998, &1i32.to_ne_bytes());
        assert_eq!(l.lost(), Some((libc::SOL_SOCKET, 9999)));
        let l = OptLog::new();
        for &(lv, n, _) in KNOWN.iter().take(ENTRIES + 1) {
            l.record(lv, n, &1i32.to_ne_bytes());
        }
        assert_eq!(all(&l).len(), ENTRIES);
        assert_eq!(l.lost(), Some((KNOWN[ENTRIES].0, KNOWN[ENTRIES].1)));
    }
}
