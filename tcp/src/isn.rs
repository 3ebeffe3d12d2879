//! Initial sequence numbers, RFC 6528 section 3: ISN = M + F(localip, localport, remoteip,
//! remoteport, secretkey), where M is a clock ticking every 4 microseconds and F a keyed hash.
//!
//! Why: an off-path attacker must not be able to guess the ISN of a connection (to inject data
//! or reset it, RFC 5961 and RFC 6528 section 1), while a new incarnation of the same 4-tuple
//! should still start above the previous one's sequence space (the clock part, RFC 9293
//! section 3.4.1). F is SipHash-2-4 keyed with a 128-bit secret the caller draws at start-up; it
//! is a PRF, which is what RFC 6528 asks of F (MD5 in its day).

use crate::seq::Seq;
use crate::time::Instant;
use siphasher::sip::SipHasher24;
use std::net::{IpAddr, SocketAddr};

/// Serializes a 4-tuple for hashing: a family byte, addresses as 16 bytes (IPv4 mapped into
/// IPv6 is distinguished from IPv4 by the family byte), ports big-endian. Fixed length, so no
/// two tuples serialize alike.
pub(crate) fn tuple_bytes(local: SocketAddr, remote: SocketAddr) -> [u8; 37] {
    let mut b = [0u8; 37];
    fn addr(ip: IpAddr) -> (u8, [u8; 16]) {
        match ip {
            IpAddr::V4(a) => (4, a.to_ipv6_mapped().octets()),
            IpAddr::V6(a) => (6, a.octets()),
        }
    }
    let (fl, la) = addr(local.ip());
    let (fr, ra) = addr(remote.ip());
    b[0] = fl | (fr << 4);
    b[1..17].copy_from_slice(&la);
    b[17..33].copy_from_slice(&ra);
    b[33..35].copy_from_slice(&local.port().to_be_bytes());
    b[35..37].copy_from_slice(&remote.port().to_be_bytes());
    b
}

/// RFC 6528 ISN generator. Holds only the secret; `isn` is a pure function of its inputs.
#[derive(Clone)]
pub struct IsnGenerator {
    hasher: SipHasher24,
}

impl core::fmt::Debug for IsnGenerator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print the key.
        f.write_str("IsnGenerator { .. }")
    }
}

impl IsnGenerator {
    /// `secret` must be random and kept for the life of the stack (a new secret after a
    /// restart is fine: TIME-WAIT state is lost with it anyway).
    pub fn new(secret: [u8; 16]) -> Self {
        IsnGenerator {
            hasher: SipHasher24::new_with_key(&secret),
        }
    }

    /// The ISN for a connection from `local` to `remote` opened at `now`.
    pub fn isn(&self, local: SocketAddr, remote: SocketAddr, now: Instant) -> Seq {
        let f = self.hasher.hash(&tuple_bytes(local, remote)) as u32;
        // M: a 4 us clock, wrapping every 2^32 * 4 us (about 4.8 hours).
        let m = (now.as_micros() / 4) as u32;
        Seq(f.wrapping_add(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn clock_ticks_every_4us() {
        let g = IsnGenerator::new([7; 16]);
        let (l, r) = (sa("10.0.0.1:80"), sa("10.0.0.2:40000"));
        let a = g.isn(l, r, Instant::from_micros(1000));
        assert_eq!(g.isn(l, r, Instant::from_micros(1003)), a);
        assert_eq!(g.isn(l, r, Instant::from_micros(1004)), a + 1);
        assert_eq!(
            g.isn(l, r, Instant::from_micros(1000 + 4_000_000)),
            a + 1_000_000
        );
        // Deterministic for one secret, different for another.
        assert_eq!(
            IsnGenerator::new([7; 16]).isn(l, r, Instant::from_micros(1000)),
            a
        );
        assert_ne!(
            IsnGenerator::new([8; 16]).isn(l, r, Instant::from_micros(1000)),
            a
        );
    }

    #[test]
    fn tuple_changes_the_offset() {
        let g = IsnGenerator::new(*b"0123456789abcdef");
        let now = Instant::from_millis(5);
        let base = g.isn(sa("10.0.0.1:80"), sa("10.0.0.2:40000"), now);
        let others = [
            g.isn(sa("10.0.0.1:80"), sa("10.0.0.2:40001"), now),
            g.isn(sa("10.0.0.1:81"), sa("10.0.0.2:40000"), now),
            g.isn(sa("10.0.0.3:80"), sa("10.0.0.2:40000"), now),
            g.isn(sa("10.0.0.2:40000"), sa("10.0.0.1:80"), now),
            g.isn(
                sa("[::ffff:10.0.0.1]:80"),
                sa("[::ffff:10.0.0.2]:40000"),
                now,
            ),
            g.isn(sa("[fe80::1]:80"), sa("[fe80::2]:40000"), now),
        ];
        for o in others {
            assert_ne!(o, base);
        }
        assert!(!format!("{g:?}").contains("0123"));
    }
}
