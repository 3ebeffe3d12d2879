//! SYN cookies (RFC 4987 section 3.6), used when a listener's SYN queue overflows: instead of
//! keeping state for a SYN, the listener encodes what it needs in the ISN of its SYN-ACK and
//! recovers it from the ACK that completes the handshake, so a SYN flood cannot exhaust memory.
//! The behaviour follows Linux's (an MSS index and a minute counter in the cookie, options in
//! the low bits of the timestamp); the encoding is snstack's own:
//!
//! ```text
//!   cookie = H1(tuple, peer_isn) + (minute mod 4) << 30 | mss_index << 28 | H2(...) & 0x0fff_ffff
//!   H2 = keyed hash of (tuple, peer_isn, full minute, mss_index), truncated to 28 bits
//! ```
//!
//! H1 hides the structured bits (so the ISN looks random, RFC 6528's goal); the 28-bit H2
//! authenticates everything, so a blind forger succeeds with probability 2^-28 per guess. A
//! cookie is valid in the minute it was made and the two after (the SYN-ACK may be
//! retransmitted for a while); the minute's two low bits let [`SynCookies::check`] recover the
//! full minute without trying every candidate, and the full minute inside H2 rejects a cookie
//! 4 or more minutes old that the low bits alone would alias. Both hashes are SipHash-2-4 with
//! the caller's secret, separated by a domain byte.
//!
//! MSS tables (2 bits, the largest entry not above the peer's MSS, the smallest when the peer's
//! is smaller still): IPv4 {536, 1300, 1440, 1460} as Linux (the minimum, PPPoE/tunnels, and
//! Ethernet with and without timestamps); IPv6 {1220, 1420, 1440, 8940}, also Linux's (the IPv6
//! minimum MTU 1280, 1480 and 1500 links, and 9000-byte jumbo frames, each less 60 bytes).
//!
//! Window scale and SACK-permitted cannot fit in the ISN; like Linux, when the peer sent
//! timestamps they travel in the low 6 bits of our SYN-ACK's TSval and come back in the ACK's
//! TSecr ([`SynCookies::ts_encode`], [`SynCookies::ts_decode`]).

use crate::isn::tuple_bytes;
use crate::seq::Seq;
use siphasher::sip::SipHasher24;
use std::net::SocketAddr;

/// MSS values encodable in an IPv4 cookie.
pub const MSS_TABLE_V4: [u16; 4] = [536, 1300, 1440, 1460];
/// MSS values encodable in an IPv6 cookie.
pub const MSS_TABLE_V6: [u16; 4] = [1220, 1420, 1440, 8940];
/// A cookie is valid for its own minute and this many after.
pub const MAX_AGE_MINUTES: u32 = 2;

const HASH_BITS: u32 = 28;
const HASH_MASK: u32 = (1 << HASH_BITS) - 1;
/// Low TSval bits used for options: 4 bits wscale, 1 bit SACK, 1 bit ECN (always 0 here).
const TS_OPT_BITS: u32 = 6;
const TS_OPT_MASK: u32 = (1 << TS_OPT_BITS) - 1;
const TS_WSCALE_NONE: u32 = 0xf;
const TS_SACK: u32 = 1 << 4;
/// The largest window scale shift (RFC 7323 section 2.3).
const MAX_WSCALE: u8 = 14;

/// SYN cookie generator and checker. Holds only the secret.
#[derive(Clone)]
pub struct SynCookies {
    hasher: SipHasher24,
}

impl core::fmt::Debug for SynCookies {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SynCookies { .. }")
    }
}

fn table(remote: SocketAddr) -> &'static [u16; 4] {
    if remote.is_ipv4() {
        &MSS_TABLE_V4
    } else {
        &MSS_TABLE_V6
    }
}

impl SynCookies {
    pub fn new(secret: [u8; 16]) -> Self {
        SynCookies {
            hasher: SipHasher24::new_with_key(&secret),
        }
    }

    fn h1(&self, local: SocketAddr, remote: SocketAddr, peer_isn: Seq) -> u32 {
        let mut b = [0u8; 42];
        b[0] = 1;
        b[1..38].copy_from_slice(&tuple_bytes(local, remote));
        b[38..42].copy_from_slice(&peer_isn.0.to_be_bytes());
        self.hasher.hash(&b) as u32
    }

    fn h2(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        peer_isn: Seq,
        minute: u32,
        idx: u32,
    ) -> u32 {
        let mut b = [0u8; 47];
        b[0] = 2;
        b[1..38].copy_from_slice(&tuple_bytes(local, remote));
        b[38..42].copy_from_slice(&peer_isn.0.to_be_bytes());
        b[42..46].copy_from_slice(&minute.to_be_bytes());
        b[46] = idx as u8;
        (self.hasher.hash(&b) as u32) & HASH_MASK
    }

    /// Our ISN for a SYN from `remote` to `local` with sequence `peer_isn` and MSS option `mss`
    /// (536 or 1220 when the SYN had none), at `minute` (the caller's clock in minutes), and the
    /// MSS actually encoded (the one the connection will use once the cookie comes back).
    pub fn isn(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        peer_isn: Seq,
        mss: u16,
        minute: u32,
    ) -> (Seq, u16) {
        let t = table(remote);
        let idx = t.iter().rposition(|&m| m <= mss).unwrap_or(0);
        let enc = ((minute & 3) << 30)
            | ((idx as u32) << HASH_BITS)
            | self.h2(local, remote, peer_isn, minute, idx as u32);
        let cookie = self.h1(local, remote, peer_isn).wrapping_add(enc);
        (Seq(cookie), t[idx])
    }

    /// Checks the ACK completing a handshake: `our_isn` = its ACK number - 1, `peer_isn` = its
    /// sequence number - 1. Returns the encoded MSS when the cookie was made for this tuple and
    /// peer ISN in `minute` or the [`MAX_AGE_MINUTES`] before.
    pub fn check(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        our_isn: Seq,
        peer_isn: Seq,
        minute: u32,
    ) -> Option<u16> {
        let enc = our_isn.0.wrapping_sub(self.h1(local, remote, peer_isn));
        let age = minute.wrapping_sub(enc >> 30) & 3;
        if age > MAX_AGE_MINUTES {
            return None;
        }
        let made = minute.wrapping_sub(age);
        let idx = (enc >> HASH_BITS) & 3;
        if enc & HASH_MASK != self.h2(local, remote, peer_isn, made, idx) {
            return None;
        }
        Some(table(remote)[idx as usize])
    }

    /// The TSval for a cookie SYN-ACK: `ts_now` with its low 6 bits replaced by the window
    /// scale (4 bits, 0xf = none; larger shifts are sent as 14) and SACK-permitted (1 bit), the
    /// ECN bit 0; one option period (64) earlier when that would put it after `ts_now`, so the
    /// clock never runs ahead (it may run up to 64 ticks behind, which RFC 7323 tolerates).
    pub fn ts_encode(ts_now: u32, wscale: Option<u8>, sack: bool) -> u32 {
        let ws = wscale.map_or(TS_WSCALE_NONE, |w| u32::from(w.min(MAX_WSCALE)));
        let opts = ws | if sack { TS_SACK } else { 0 };
        let ts = (ts_now & !TS_OPT_MASK) | opts;
        if ts > ts_now {
            ts.wrapping_sub(1 << TS_OPT_BITS)
        } else {
            ts
        }
    }

    /// The options carried by a cookie ACK's TSecr: (window scale, SACK-permitted).
    pub fn ts_decode(tsecr: u32) -> (Option<u8>, bool) {
        let ws = tsecr & 0xf;
        let wscale = if ws == TS_WSCALE_NONE {
            None
        } else {
            Some((ws as u8).min(MAX_WSCALE))
        };
        (wscale, tsecr & TS_SACK != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn round_trip_and_mss_tables() {
        let c = SynCookies::new([42; 16]);
        let (l, r) = (sa("192.0.2.1:443"), sa("198.51.100.7:51000"));
        let peer = Seq(0xdead_beef);
        for (mss, want) in [
            (1460, 1460),
            (1500, 1460),
            (1452, 1440),
            (1400, 1300),
            (600, 536),
            (100, 536),
        ] {
            let (isn, enc) = c.isn(l, r, peer, mss, 1000);
            assert_eq!(enc, want);
            for now in 1000..=1002 {
                assert_eq!(
                    c.check(l, r, isn, peer, now),
                    Some(want),
                    "mss {mss} minute {now}"
                );
            }
        }
        let (l6, r6) = (sa("[2001:db8::1]:443"), sa("[2001:db8::2]:51000"));
        for (mss, want) in [(1440, 1440), (1430, 1420), (9000, 8940), (536, 1220)] {
            let (isn, enc) = c.isn(l6, r6, peer, mss, 7);
            assert_eq!(enc, want);
            assert_eq!(c.check(l6, r6, isn, peer, 9), Some(want));
        }
        // Minute counter wrapping.
        let (isn, _) = c.isn(l, r, peer, 1460, u32::MAX);
        assert_eq!(c.check(l, r, isn, peer, 1), Some(1460));
    }

    #[test]
    fn rejects_wrong_tuple_isn_and_stale() {
        let c = SynCookies::new([42; 16]);
        let (l, r) = (sa("192.0.2.1:443"), sa("198.51.100.7:51000"));
        let peer = Seq(12345);
        let (isn, _) = c.isn(l, r, peer, 1460, 500);
        assert!(c.check(l, r, isn, peer, 500).is_some());
        // Wrong tuple.
        assert_eq!(c.check(l, sa("198.51.100.7:51001"), isn, peer, 500), None);
        assert_eq!(c.check(sa("192.0.2.2:443"), r, isn, peer, 500), None);
        assert_eq!(c.check(r, l, isn, peer, 500), None);
        // Wrong peer ISN, altered cookie (every single bit).
        assert_eq!(c.check(l, r, isn, peer + 1, 500), None);
        for bit in 0..32 {
            assert_eq!(
                c.check(l, r, Seq(isn.0 ^ (1 << bit)), peer, 500),
                None,
                "bit {bit}"
            );
        }
        // Stale (3, 4, 5 minutes later) and from the future.
        for now in [503, 504, 505, 600, 499] {
            assert_eq!(c.check(l, r, isn, peer, now), None, "minute {now}");
        }
        // Another secret.
        assert_eq!(SynCookies::new([43; 16]).check(l, r, isn, peer, 500), None);
    }

    #[test]
    fn timestamp_options() {
        let ts = SynCookies::ts_encode(1_000_000, Some(7), true);
        assert!(ts <= 1_000_000 && 1_000_000 - ts < 64);
        assert_eq!(ts & 0x20, 0); // ECN bit
        assert_eq!(SynCookies::ts_decode(ts), (Some(7), true));
        let ts = SynCookies::ts_encode(1_000_000, None, false);
        assert_eq!(SynCookies::ts_decode(ts), (None, false));
        assert!(ts <= 1_000_000 && 1_000_000 - ts < 64);
        // 1_000_000 = 0xF4240: low 6 bits 0 -> options would exceed ts_now -> minus 64.
        assert_eq!(SynCookies::ts_encode(0xF4240, Some(0), false), 0xF4240);
        assert_eq!(SynCookies::ts_encode(0xF4240, Some(1), false), 0xF4241 - 64);
        assert_eq!(
            SynCookies::ts_encode(0xF427F, Some(3), true),
            0xF4240 | 0x13
        );
        assert_eq!(
            SynCookies::ts_decode(SynCookies::ts_encode(5, Some(20), false)),
            (Some(14), false)
        );
        // Wrap near zero does not panic.
        let ts = SynCookies::ts_encode(3, Some(14), true);
        assert_eq!(ts, 0u32.wrapping_sub(64) | 0x1e);
        assert_eq!(SynCookies::ts_decode(ts), (Some(14), true));
    }
}
