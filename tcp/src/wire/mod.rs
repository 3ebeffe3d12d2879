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
