//! Socket addresses on the channel.
//!
//! Commands (`OP_BIND`, `OP_CONNECT`) and completions (`OP_ACCEPT`, `OP_GETSOCKNAME`,
//! `OP_GETPEERNAME`) carry an address as a [`WireAddr`]: the `sockaddr_in6` layout for both
//! families, so one 28-byte shape fits every address the agent offloads. Both sides convert from
//! and to `core::net` types here and nowhere else; a `WireAddr` read from the peer is untrusted, so
//! the way back is fallible ([`TryFrom`]).

use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::request::DecodeError;

/// Linux's address family numbers. The region exists only between Linux processes, and this
/// crate has no libc: the values are fixed by the kernel ABI.
pub const AF_UNSPEC: u16 = 0;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// A socket address as carried in commands and events: the `sockaddr_in6` layout for both families.
/// `port` is in network byte order, as in `sockaddr_in(6)`. For AF_INET the address is `addr[..4]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WireAddr {
    pub family: u16,
    pub port: u16,
    pub flowinfo: u32,
    pub addr: [u8; 16],
    pub scope_id: u32,
}

impl WireAddr {
    /// Bytes of the encoded form.
    pub const LEN: usize = 28;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..2].copy_from_slice(&self.family.to_ne_bytes());
        b[2..4].copy_from_slice(&self.port.to_ne_bytes());
        b[4..8].copy_from_slice(&self.flowinfo.to_ne_bytes());
        b[8..24].copy_from_slice(&self.addr);
        b[24..28].copy_from_slice(&self.scope_id.to_ne_bytes());
        b
    }

    /// Decodes the first [`WireAddr::LEN`] bytes of `b`; all zero (`AF_UNSPEC`) when `b` is shorter.
    pub fn decode(b: &[u8]) -> Self {
        let mut a = WireAddr::default();
        if b.len() < Self::LEN {
            return a;
        }
        a.family = u16::from_ne_bytes([b[0], b[1]]);
        a.port = u16::from_ne_bytes([b[2], b[3]]);
        a.flowinfo = u32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
        a.addr.copy_from_slice(&b[8..24]);
        a.scope_id = u32::from_ne_bytes([b[24], b[25], b[26], b[27]]);
        a
    }

    /// Packs into four command words (28 bytes in 32, the rest zero).
    pub(crate) fn to_words(self) -> [u64; 4] {
        let mut b = [0u8; 32];
        b[..Self::LEN].copy_from_slice(&self.encode());
        let mut w = [0u64; 4];
        for (i, w) in w.iter_mut().enumerate() {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[i * 8..i * 8 + 8]);
            *w = u64::from_ne_bytes(x);
        }
        w
    }

    pub(crate) fn from_words(words: &[u64; 4]) -> Self {
        let mut b = [0u8; 32];
        for (i, w) in words.iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&w.to_ne_bytes());
        }
        Self::decode(&b)
    }
}

/// An address a request may carry. `Unspec` (`AF_UNSPEC`: "disconnect" for `connect`, "any" for
/// some `bind`s) is legal on the wire; what it means is the agent's policy, not the channel's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addr {
    Inet(SocketAddr),
    Unspec,
}

impl From<SocketAddr> for WireAddr {
    fn from(a: SocketAddr) -> Self {
        match a {
            SocketAddr::V4(v4) => {
                let mut addr = [0u8; 16];
                addr[..4].copy_from_slice(&v4.ip().octets());
                WireAddr {
                    family: AF_INET,
                    port: v4.port().to_be(),
                    flowinfo: 0,
                    addr,
                    scope_id: 0,
                }
            }
            SocketAddr::V6(v6) => WireAddr {
                family: AF_INET6,
                port: v6.port().to_be(),
                flowinfo: v6.flowinfo(),
                addr: v6.ip().octets(),
                scope_id: v6.scope_id(),
            },
        }
    }
}

impl From<Addr> for WireAddr {
    fn from(a: Addr) -> Self {
        match a {
            Addr::Inet(s) => s.into(),
            Addr::Unspec => WireAddr::default(),
        }
    }
}

impl TryFrom<WireAddr> for Addr {
    type Error = DecodeError;

    /// Only the family is checked: the bytes of an IPv4 address past `addr[..4]`, and `flowinfo`
    /// / `scope_id` of one, are ignored as the kernel ignores `sin_zero`.
    fn try_from(w: WireAddr) -> Result<Self, DecodeError> {
        match w.family {
            AF_INET => Ok(Addr::Inet(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::new(w.addr[0], w.addr[1], w.addr[2], w.addr[3]),
                u16::from_be(w.port),
            )))),
            AF_INET6 => Ok(Addr::Inet(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(w.addr),
                u16::from_be(w.port),
                w.flowinfo,
                w.scope_id,
            )))),
            AF_UNSPEC => Ok(Addr::Unspec),
            f => Err(DecodeError::BadFamily(f)),
        }
    }
}

impl TryFrom<WireAddr> for SocketAddr {
    type Error = DecodeError;

    fn try_from(w: WireAddr) -> Result<Self, DecodeError> {
        match Addr::try_from(w)? {
            Addr::Inet(s) => Ok(s),
            Addr::Unspec => Err(DecodeError::BadFamily(AF_UNSPEC)),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn socket_addr_round_trips() {
        for s in ["127.0.0.1:8080", "[::1]:443", "[fe80::1%3]:9", "0.0.0.0:0"] {
            let a: SocketAddr = s.parse().unwrap();
            let w = WireAddr::from(a);
            assert_eq!(SocketAddr::try_from(w), Ok(a));
            assert_eq!(WireAddr::decode(&w.encode()), w);
            assert_eq!(WireAddr::from_words(&w.to_words()), w);
        }
        let v6 = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 1, 0xabcd, 7));
        assert_eq!(SocketAddr::try_from(WireAddr::from(v6)), Ok(v6));
    }

    #[test]
    fn wire_layout_is_sockaddr_in6() {
        let w = WireAddr::from("10.1.2.3:258".parse::<SocketAddr>().unwrap());
        let b = w.encode();
        assert_eq!(&b[0..2], &AF_INET.to_ne_bytes());
        assert_eq!(&b[2..4], &[1, 2]); // port 258, network order
        assert_eq!(&b[8..12], &[10, 1, 2, 3]);
    }

    #[test]
    fn bad_families_are_errors() {
        let mut w = WireAddr {
            family: 1,
            ..Default::default()
        };
        assert_eq!(Addr::try_from(w), Err(DecodeError::BadFamily(1)));
        w.family = AF_UNSPEC;
        assert_eq!(Addr::try_from(w), Ok(Addr::Unspec));
        assert_eq!(
            SocketAddr::try_from(w),
            Err(DecodeError::BadFamily(AF_UNSPEC))
        );
        assert_eq!(WireAddr::from(Addr::Unspec), WireAddr::default());
        // Too short to be an address: AF_UNSPEC, never a panic.
        assert_eq!(WireAddr::decode(&[2, 0, 1]), WireAddr::default());
    }
}
