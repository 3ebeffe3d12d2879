//! Messages on the control socket (UNIX `SOCK_SEQPACKET`), fixed 32-byte records.
//!
//! host -> agent: [`Hello`] (`HELLO_ATTACH`, `HELLO_STATS`, `HELLO_WAITER` with an eventfd in
//! `SCM_RIGHTS`, `HELLO_ATTACH_CHILD` with a fork ticket's secret in `arg`). agent -> host: [`Reply`]; for attach it carries the region memfd and the agent's
//! doorbell eventfd in `SCM_RIGHTS`; for stats it is followed by the report (`Reply::len` bytes) in
//! datagrams of at most 64 KiB: `key value` text, or JSON when the hello's `arg` is [`STATS_JSON`].

use crate::layout::{MAGIC, VERSION};

pub const HELLO_ATTACH: u32 = 1;
pub const HELLO_STATS: u32 = 2;
pub const HELLO_WAITER: u32 = 3;
/// `HELLO_STATS`'s `arg`: the `key value` text report.
pub const STATS_TEXT: u64 = 0;
/// `HELLO_STATS`'s `arg`: the JSON report (per-process counters; nic-agent/src/stats.rs).
pub const STATS_JSON: u64 = 1;
/// `HELLO_STATS`'s `arg`: the JSON report with each kTLS socket's counters (`tls_sockets`; asks
/// the backend for every such socket's addresses, so only on request: `stats --sockets`).
pub const STATS_JSON_SOCKETS: u64 = 2;
/// On a new control connection: attach as the child of a fork, `arg` = the ticket's secret
/// (`OP_FORK`). Replied like `HELLO_ATTACH`, or `status` EPERM (not the ticket's child) / ENOENT
/// (unknown, expired or already claimed ticket) without fds.
pub const HELLO_ATTACH_CHILD: u32 = 4;

pub const MSG_LEN: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    pub magic: u64,
    pub version: u32,
    pub kind: u32,
    pub arg: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    pub magic: u64,
    pub version: u32,
    /// 0, or a positive errno.
    pub status: u32,
    /// Attach: region length in bytes. Stats: length of the report that follows.
    pub len: u64,
}

fn put(b: &mut [u8; MSG_LEN], magic: u64, version: u32, word: u32, arg: u64) {
    b[0..8].copy_from_slice(&magic.to_le_bytes());
    b[8..12].copy_from_slice(&version.to_le_bytes());
    b[12..16].copy_from_slice(&word.to_le_bytes());
    b[16..24].copy_from_slice(&arg.to_le_bytes());
}

fn get(b: &[u8]) -> Option<(u64, u32, u32, u64)> {
    if b.len() != MSG_LEN {
        return None;
    }
    let magic = u64::from_le_bytes(b[0..8].try_into().ok()?);
    if magic != MAGIC {
        return None;
    }
    Some((
        magic,
        u32::from_le_bytes(b[8..12].try_into().ok()?),
        u32::from_le_bytes(b[12..16].try_into().ok()?),
        u64::from_le_bytes(b[16..24].try_into().ok()?),
    ))
}

impl Hello {
    pub fn new(kind: u32, arg: u64) -> Self {
        Hello {
            magic: MAGIC,
            version: VERSION,
            kind,
            arg,
        }
    }
    pub fn encode(&self) -> [u8; MSG_LEN] {
        let mut b = [0; MSG_LEN];
        put(&mut b, self.magic, self.version, self.kind, self.arg);
        b
    }
    pub fn decode(b: &[u8]) -> Option<Self> {
        let (magic, version, kind, arg) = get(b)?;
        Some(Hello {
            magic,
            version,
            kind,
            arg,
        })
    }
}

impl Reply {
    pub fn new(status: u32, len: u64) -> Self {
        Reply {
            magic: MAGIC,
            version: VERSION,
            status,
            len,
        }
    }
    pub fn encode(&self) -> [u8; MSG_LEN] {
        let mut b = [0; MSG_LEN];
        put(&mut b, self.magic, self.version, self.status, self.len);
        b
    }
    pub fn decode(b: &[u8]) -> Option<Self> {
        let (magic, version, status, len) = get(b)?;
        Some(Reply {
            magic,
            version,
            status,
            len,
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let h = Hello::new(HELLO_WAITER, 7);
        assert_eq!(Hello::decode(&h.encode()), Some(h));
        let r = Reply::new(13, 1 << 30);
        assert_eq!(Reply::decode(&r.encode()), Some(r));
        let mut bad = h.encode();
        bad[0] ^= 1;
        assert_eq!(Hello::decode(&bad), None);
        assert_eq!(Hello::decode(&bad[..10]), None);
    }
}
