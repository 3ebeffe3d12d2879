//! Wire formats, each a header `Repr` with `parse` (untrusted input: never panics, every length
//! checked) and `emit` (into a caller's buffer of at least `HEADER_LEN`/`buffer_len()` bytes),
//! plus the Internet checksum. No allocation.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;

/// Why a frame or header was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than its header or than the length it claims.
    Truncated,
    /// A field has a value the format forbids (version, header length, option layout...).
    Malformed,
    /// The checksum does not match.
    Checksum,
    /// Valid but not handled by the engine (IPv4 fragments, IP options we drop, unknown types).
    Unsupported,
}

/// A tiny xorshift64 generator for the parsers' property-style tests (no dependencies).
#[cfg(test)]
pub(crate) struct XorShift(pub(crate) u64);

#[cfg(test)]
impl XorShift {
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Fills `buf` with random bytes and returns a random-length prefix of it.
    pub(crate) fn bytes<'a>(&mut self, buf: &'a mut [u8]) -> &'a [u8] {
        for b in buf.iter_mut() {
            *b = self.next() as u8;
        }
        let n = (self.next() % (buf.len() as u64 + 1)) as usize;
        &buf[..n]
    }

    /// Flips a few random bytes of `buf` (mutation of a valid fixture) and truncates it at random
    /// now and then.
    pub(crate) fn mutate<'a>(&mut self, buf: &'a mut [u8]) -> &'a [u8] {
        let flips = 1 + self.next() % 4;
        for _ in 0..flips {
            let i = (self.next() % buf.len() as u64) as usize;
            buf[i] = self.next() as u8;
        }
        let n = if self.next() % 4 == 0 {
            (self.next() % (buf.len() as u64 + 1)) as usize
        } else {
            buf.len()
        };
        &buf[..n]
    }
}
