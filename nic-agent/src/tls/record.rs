//! The TLS record on the wire (RFC 5246 section 6.2, RFC 8446 section 5) and where its parts sit
//! for each version and cipher, with the length limits Linux enforces.
//!
//! ```text
//!  TLS 1.2 AES-GCM     type | 03 03 | len | explicit nonce (8) | ciphertext        | tag (16)
//!  TLS 1.2 ChaCha20    type | 03 03 | len |                      ciphertext        | tag (16)
//!  TLS 1.3 (any)       23   | 03 03 | len |                      ciphertext | type | tag (16)
//!                      `---- header (5) --'   `-- prefix --'                  `--- suffix ---'
//! ```
//! `len` counts everything after the header. TLS 1.3 hides the real content type after the
//! plaintext (the inner type, possibly followed by zero padding) and always says
//! application_data outside; Linux sends 1.3 records unpadded and strips padding it receives.

use super::uapi::{Cipher, Version};

/// Record header: content type, legacy version, length.
pub const HEADER_LEN: usize = 5;
/// Most plaintext one record carries (2^14), in both versions.
pub const MAX_PLAINTEXT: usize = 1 << 14;
/// The AEAD tag of every served cipher.
pub const TAG_LEN: usize = 16;
/// TLS 1.2 AES-GCM's per-record nonce part sent in clear.
pub const EXPLICIT_NONCE_LEN: usize = 8;
/// The version bytes of every record header, 1.2 and 1.3 alike (Linux rejects any other with
/// `EINVAL`).
pub const LEGACY_VERSION: [u8; 2] = [3, 3];
/// The longest record any served suite can produce or accept (TLS 1.2 AES-GCM at 2^14).
pub const MAX_RECORD_LEN: usize = HEADER_LEN + EXPLICIT_NONCE_LEN + MAX_PLAINTEXT + TAG_LEN;

/// Content types (RFC 8446 section 5.1). Any other byte is passed on as Linux does: the
/// program sees it through `TLS_GET_RECORD_TYPE`.
pub mod content_type {
    pub const CHANGE_CIPHER_SPEC: u8 = 20;
    pub const ALERT: u8 = 21;
    pub const HANDSHAKE: u8 = 22;
    pub const APPLICATION_DATA: u8 = 23;
}

/// Handshake message type of a TLS 1.3 KeyUpdate (RFC 8446 section 4.6.3): after one, Linux
/// stops decrypting until the program installs the new RX key.
pub const HANDSHAKE_KEY_UPDATE: u8 = 24;

/// A record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub content_type: u8,
    pub version: [u8; 2],
    /// Bytes after the header.
    pub length: u16,
}

impl Header {
    /// The header at the start of `buf`, or `None` if fewer than `HEADER_LEN` bytes are there.
    pub fn parse(buf: &[u8]) -> Option<Header> {
        let b = buf.get(..HEADER_LEN)?;
        Some(Header {
            content_type: b[0],
            version: [b[1], b[2]],
            length: u16::from_be_bytes([b[3], b[4]]),
        })
    }

    /// Writes the header to the first `HEADER_LEN` bytes of `buf` (which must hold them).
    pub fn emit(&self, buf: &mut [u8]) {
        buf[0] = self.content_type;
        buf[1..3].copy_from_slice(&self.version);
        buf[3..5].copy_from_slice(&self.length.to_be_bytes());
    }

    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0; HEADER_LEN];
        self.emit(&mut b);
        b
    }
}

/// Where a protected record's parts sit for one version and cipher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Explicit nonce bytes after the header: 8 for TLS 1.2 AES-GCM, else 0.
    pub explicit_nonce: usize,
    /// Inner content type bytes after the plaintext: 1 for TLS 1.3, else 0.
    pub inner_type: usize,
}

impl Layout {
    pub fn of(version: Version, cipher: Cipher) -> Layout {
        match (version, cipher) {
            (Version::Tls12, Cipher::AesGcm128 | Cipher::AesGcm256) => Layout {
                explicit_nonce: EXPLICIT_NONCE_LEN,
                inner_type: 0,
            },
            (Version::Tls12, Cipher::Chacha20Poly1305) => Layout {
                explicit_nonce: 0,
                inner_type: 0,
            },
            (Version::Tls13, _) => Layout {
                explicit_nonce: 0,
                inner_type: 1,
            },
        }
    }

    /// Bytes before the plaintext: header and explicit nonce.
    pub fn prefix_len(&self) -> usize {
        HEADER_LEN + self.explicit_nonce
    }

    /// Bytes after the plaintext: inner type and tag.
    pub fn suffix_len(&self) -> usize {
        self.inner_type + TAG_LEN
    }

    pub fn overhead(&self) -> usize {
        self.prefix_len() + self.suffix_len()
    }

    /// The whole record for `plaintext_len` bytes of plaintext (unpadded).
    pub fn record_len(&self, plaintext_len: usize) -> usize {
        self.overhead() + plaintext_len
    }

    /// Largest header length accepted: Linux's `TLS_MAX_PAYLOAD_SIZE + cipher_overhead +
    /// tail_size` (tls_rx_msg_size); above it a received record is `EMSGSIZE`. TLS 1.3 allows
    /// 255 more bytes of padding (RFC 8446 section 5.2), which Linux, and so the agent, refuses.
    pub fn max_length(&self) -> usize {
        self.explicit_nonce + MAX_PLAINTEXT + TAG_LEN + self.inner_type
    }

    /// Smallest header length accepted (explicit nonce and tag); below it `EBADMSG`.
    pub fn min_length(&self) -> usize {
        self.explicit_nonce + TAG_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let bytes = [0x17, 0x03, 0x03, 0x00, 0x43];
        let h = Header::parse(&bytes).unwrap();
        assert_eq!(
            h,
            Header {
                content_type: content_type::APPLICATION_DATA,
                version: LEGACY_VERSION,
                length: 0x43
            }
        );
        assert_eq!(h.to_bytes(), bytes);
        assert_eq!(Header::parse(&bytes[..4]), None);
    }

    #[test]
    fn layouts_and_limits() {
        let gcm12 = Layout::of(Version::Tls12, Cipher::AesGcm256);
        assert_eq!((gcm12.prefix_len(), gcm12.suffix_len()), (13, 16));
        assert_eq!(gcm12.max_length(), 16384 + 24);
        assert_eq!(gcm12.min_length(), 24);
        let chacha12 = Layout::of(Version::Tls12, Cipher::Chacha20Poly1305);
        assert_eq!((chacha12.prefix_len(), chacha12.suffix_len()), (5, 16));
        assert_eq!(chacha12.max_length(), 16384 + 16);
        for c in [
            Cipher::AesGcm128,
            Cipher::AesGcm256,
            Cipher::Chacha20Poly1305,
        ] {
            let l = Layout::of(Version::Tls13, c);
            assert_eq!((l.prefix_len(), l.suffix_len()), (5, 17));
            assert_eq!(l.max_length(), 16384 + 17);
            assert_eq!(l.record_len(50), 72); // RFC 8448's 50-byte application data record
        }
        // MAX_RECORD_LEN covers every layout's largest record.
        for v in [Version::Tls12, Version::Tls13] {
            for c in [
                Cipher::AesGcm128,
                Cipher::AesGcm256,
                Cipher::Chacha20Poly1305,
            ] {
                let l = Layout::of(v, c);
                assert!(HEADER_LEN + l.max_length() <= MAX_RECORD_LEN);
            }
        }
    }
}
