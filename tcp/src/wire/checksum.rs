//! The Internet checksum (RFC 1071): the one's-complement sum of big-endian 16-bit words.
//!
//! One's-complement addition is associative and byte-order independent up to the final fold, so
//! words are summed eight bytes at a time into a `u64` with end-around carry and folded to 16 bits
//! only at the end (RFC 1071 section 2 (B), (C)). Partial sums compose: a pseudo-header sum from
//! [`pseudo_v4`]/[`pseudo_v6`] is the starting `sum` for the [`accumulate`] over the segment.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Adds `a` and `b` with end-around carry: the sum stays congruent modulo 2^16 - 1.
#[inline]
fn add_carry(a: u64, b: u64) -> u64 {
    let (s, c) = a.overflowing_add(b);
    // On overflow `s <= 2^64 - 2`, so adding the carry back cannot overflow again.
    s + u64::from(c)
}

/// Adds the big-endian 16-bit words of `data` to `sum`; an odd trailing byte is padded with a zero
/// byte on its right. `data` must start at an even offset of the checksummed message.
pub fn accumulate(data: &[u8], sum: u64) -> u64 {
    let mut sum = sum;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        sum = add_carry(sum, w);
    }
    let mut rest = chunks.remainder();
    if rest.len() >= 4 {
        sum = add_carry(
            sum,
            u64::from(u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]])),
        );
        rest = &rest[4..];
    }
    if rest.len() >= 2 {
        sum = add_carry(sum, u64::from(u16::from_be_bytes([rest[0], rest[1]])));
        rest = &rest[2..];
    }
    if let Some(&b) = rest.first() {
        sum = add_carry(sum, u64::from(b) << 8);
    }
    sum
}

/// Folds the carries of `sum` into 16 bits (not complemented).
pub fn fold(sum: u64) -> u16 {
    let mut s = (sum & 0xffff_ffff) + (sum >> 32);
    s = (s & 0xffff_ffff) + (s >> 32);
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The checksum to write into a header: the complement of [`fold`].
pub fn finish(sum: u64) -> u16 {
    !fold(sum)
}

/// Sum of the IPv4 pseudo-header (RFC 9293 section 3.1): addresses, protocol and the L4 length.
pub fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u32) -> u64 {
    let s = u64::from(u32::from(src));
    let d = u64::from(u32::from(dst));
    // A u32 is congruent to the sum of its two 16-bit halves modulo 2^16 - 1.
    s + d + u64::from(proto) + u64::from(len)
}

/// Sum of the IPv6 pseudo-header (RFC 8200 section 8.1): addresses, upper-layer length and the
/// next header value of the upper-layer protocol.
pub fn pseudo_v6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, len: u32) -> u64 {
    let s = u128::from(*src);
    let d = u128::from(*dst);
    let mut sum = u64::from(next_header) + u64::from(len);
    sum = add_carry(sum, (s >> 64) as u64);
    sum = add_carry(sum, s as u64);
    sum = add_carry(sum, (d >> 64) as u64);
    sum = add_carry(sum, d as u64);
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Word-at-a-time reference, written the slow obvious way.
    fn reference(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            s += u32::from(w);
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the sum of 0001 f203 f4f5 f6f7 is ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(accumulate(&d, 0)), 0xddf2);
        assert_eq!(finish(accumulate(&d, 0)), 0x220d);
        // Split at an even offset: partial sums compose.
        assert_eq!(fold(accumulate(&d[4..], accumulate(&d[..4], 0))), 0xddf2);
    }

    #[test]
    fn ipv4_header_example() {
        // A UDP datagram's IPv4 header with its checksum b861 in place: verifies to ffff.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(fold(accumulate(&h, 0)), 0xffff);
        let mut z = h;
        z[10] = 0;
        z[11] = 0;
        assert_eq!(finish(accumulate(&z, 0)), 0xb861);
    }

    #[test]
    fn odd_length_pads_right() {
        assert_eq!(fold(accumulate(&[0x12], 0)), 0x1200);
        assert_eq!(fold(accumulate(&[0x12, 0x34, 0x56], 0)), 0x1234 + 0x5600);
    }

    #[test]
    fn fold_extremes() {
        assert_eq!(fold(0), 0);
        assert_eq!(fold(0xffff), 0xffff);
        assert_eq!(fold(0x1_0000), 1);
        assert_eq!(fold(u64::MAX), 0xffff);
        assert_eq!(finish(0), 0xffff);
        // Many all-ones words never overflow the accumulator.
        let d = [0xffu8; 4096];
        assert_eq!(fold(accumulate(&d, u64::MAX)), 0xffff);
    }

    #[test]
    fn pseudo_headers_match_byte_layout() {
        let s4 = Ipv4Addr::new(192, 168, 1, 2);
        let d4 = Ipv4Addr::new(10, 0, 0, 1);
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&s4.octets());
        b[4..8].copy_from_slice(&d4.octets());
        b[9] = 6;
        b[10..12].copy_from_slice(&1480u16.to_be_bytes());
        assert_eq!(fold(pseudo_v4(s4, d4, 6, 1480)), reference(&b));

        let s6: Ipv6Addr = "fe80::1:2:3:4".parse().unwrap();
        let d6: Ipv6Addr = "ff02::1:ff00:1234".parse().unwrap();
        let mut b = [0u8; 40];
        b[..16].copy_from_slice(&s6.octets());
        b[16..32].copy_from_slice(&d6.octets());
        b[32..36].copy_from_slice(&70000u32.to_be_bytes());
        b[39] = 58;
        assert_eq!(fold(pseudo_v6(&s6, &d6, 58, 70000)), reference(&b));
        let ones = Ipv6Addr::from([0xff; 16]);
        let mut b = [0xffu8; 40];
        b[32..36].copy_from_slice(&u32::MAX.to_be_bytes());
        b[36..39].fill(0);
        assert_eq!(fold(pseudo_v6(&ones, &ones, 0xff, u32::MAX)), reference(&b));
    }

    #[test]
    fn random_against_reference() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut buf = [0u8; 300];
        for _ in 0..2000 {
            let len = (next() % 300) as usize;
            for b in buf[..len].iter_mut() {
                *b = next() as u8;
            }
            let d = &buf[..len];
            assert_eq!(fold(accumulate(d, 0)), reference(d), "{d:?}");
            // Any even split composes.
            let cut = (next() as usize % (len + 1)) & !1;
            assert_eq!(
                fold(accumulate(&d[cut..], accumulate(&d[..cut], 0))),
                reference(d)
            );
        }
    }
}
