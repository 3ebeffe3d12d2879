//! TX: plaintext of a given content type into TLS records, as Linux's `tls_sw_sendmsg` builds
//! them (`tls_fill_prepend`, `tls_make_aad`, `tls_do_encryption`).
//!
//! Sealing is in place so that the agent can build a record where it will be sent from: it
//! reserves `layout().prefix_len()` bytes, copies at most `MAX_PLAINTEXT` bytes of the TX stream
//! after them, leaves `layout().suffix_len()` bytes of room, and calls `seal_in_place`; the
//! record is then `record[..n]`, ready for a frame or the backend's send.
//!
//! ```text
//!  before:  [ prefix (reserved) | plaintext (len) | suffix (room) ]
//!  after:   [ header | nonce?   | ciphertext      | type? | tag   ]
//! ```
//! AAD: TLS 1.2 `seq (8) || type || 03 03 || plaintext length (2)`; TLS 1.3 the record header.

use ring::aead::Aad;

use super::cipher::RecordCipher;
use super::record::{content_type, Header, Layout, EXPLICIT_NONCE_LEN, HEADER_LEN};
use super::record::{LEGACY_VERSION, MAX_PLAINTEXT, TAG_LEN};
use super::uapi::{CryptoInfo, Suite, Version};
use super::Errno;

/// One socket's TX record state (`TLS_TX`).
#[derive(Debug)]
pub struct Sealer {
    c: RecordCipher,
}

impl Sealer {
    pub fn new(info: &CryptoInfo) -> Result<Sealer, Errno> {
        Ok(Sealer {
            c: RecordCipher::new(info)?,
        })
    }

    pub fn layout(&self) -> Layout {
        self.c.layout()
    }

    pub fn suite(&self) -> Suite {
        self.c.suite()
    }

    /// Sequence number the next record gets.
    pub fn seq(&self) -> u64 {
        self.c.seq()
    }

    /// The parameters for `getsockopt(SOL_TLS, TLS_TX)`: with the current sequence number (and,
    /// for TLS 1.2 AES-GCM, the current explicit nonce in the IV field).
    pub fn crypto_info(&self) -> CryptoInfo {
        self.c.current_info()
    }

    /// TLS 1.3 rekey (`setsockopt(TLS_TX)` again, Linux 6.14+): new key, IV and sequence number;
    /// records already sealed are unaffected. The caller checked the suite (`parse_crypto_info`).
    pub fn rekey(&mut self, info: &CryptoInfo) -> Result<(), Errno> {
        self.c = RecordCipher::new(info)?;
        Ok(())
    }

    /// Seals the `len` plaintext bytes at `record[prefix_len..]` into one record of
    /// `content_type`, writing the header and nonce before them and the inner type and tag
    /// after, and returns the record's length (`layout().record_len(len)`).
    ///
    /// * `len` over `MAX_PLAINTEXT`: `EMSGSIZE` (the caller splits: one record per 2^14 bytes);
    /// * `record` shorter than the record: `ENOBUFS` (nothing written);
    /// * TLS 1.3 with content type 0 (it would read as padding): `EINVAL`;
    /// * the record after sequence number 2^64 - 1: `EBADMSG`, for good (Linux aborts the
    ///   socket with it).
    pub fn seal_in_place(
        &mut self,
        content_type: u8,
        record: &mut [u8],
        len: usize,
    ) -> Result<usize, Errno> {
        if self.c.exhausted() {
            return Err(libc::EBADMSG);
        }
        if len > MAX_PLAINTEXT {
            return Err(libc::EMSGSIZE);
        }
        let layout = self.c.layout();
        let total = layout.record_len(len);
        if record.len() < total {
            return Err(libc::ENOBUFS);
        }
        let tls13 = self.c.version() == Version::Tls13;
        if tls13 && content_type == 0 {
            return Err(libc::EINVAL);
        }
        let header = Header {
            content_type: if tls13 {
                content_type::APPLICATION_DATA
            } else {
                content_type
            },
            version: LEGACY_VERSION,
            length: (total - HEADER_LEN) as u16,
        };
        header.emit(record);
        let explicit = self.c.explicit();
        if layout.explicit_nonce == EXPLICIT_NONCE_LEN {
            record[HEADER_LEN..HEADER_LEN + EXPLICIT_NONCE_LEN].copy_from_slice(&explicit);
        }
        let start = layout.prefix_len();
        let mut end = start + len;
        if tls13 {
            record[end] = content_type;
            end += 1;
        }
        let nonce = self.c.nonce(explicit);
        let (head, rest) = record.split_at_mut(start);
        let (body, tail) = rest.split_at_mut(end - start);
        let tag = if tls13 {
            self.c
                .key()
                .seal_in_place_separate_tag(nonce, Aad::from(&head[..HEADER_LEN]), body)
        } else {
            let aad = aad12(self.c.seq(), content_type, len);
            self.c
                .key()
                .seal_in_place_separate_tag(nonce, Aad::from(aad), body)
        }
        .map_err(|_| libc::EMSGSIZE)?;
        tail[..TAG_LEN].copy_from_slice(tag.as_ref());
        self.c.advance();
        Ok(total)
    }

    /// Copies `plaintext` into `out` and seals it there (`seal_in_place`); returns the record's
    /// length.
    pub fn seal(
        &mut self,
        content_type: u8,
        plaintext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, Errno> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(libc::EMSGSIZE);
        }
        let layout = self.c.layout();
        if out.len() < layout.record_len(plaintext.len()) {
            return Err(libc::ENOBUFS);
        }
        let start = layout.prefix_len();
        out[start..start + plaintext.len()].copy_from_slice(plaintext);
        self.seal_in_place(content_type, out, plaintext.len())
    }
}

/// TLS 1.2's additional data (RFC 5246 section 6.2.3.3): sequence number, type, version and
/// plaintext length.
pub(super) fn aad12(seq: u64, content_type: u8, len: usize) -> [u8; 13] {
    let mut aad = [0u8; 13];
    aad[..8].copy_from_slice(&seq.to_be_bytes());
    aad[8] = content_type;
    aad[9..11].copy_from_slice(&LEGACY_VERSION);
    aad[11..].copy_from_slice(&(len as u16).to_be_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::uapi::{Cipher, Suite};

    fn sealer(version: Version, cipher: Cipher, seq: u64) -> Sealer {
        let suite = Suite { version, cipher };
        let info = CryptoInfo::new(
            suite,
            &vec![7; cipher.key_len()],
            &vec![1; cipher.salt_len()],
            &vec![2; cipher.iv_len()],
            seq,
        )
        .unwrap();
        Sealer::new(&info).unwrap()
    }

    #[test]
    fn limits_and_buffer_errors_write_nothing() {
        let mut s = sealer(Version::Tls12, Cipher::AesGcm128, 0);
        let mut buf = vec![0xeeu8; MAX_PLAINTEXT + 100];
        assert_eq!(
            s.seal_in_place(23, &mut buf, MAX_PLAINTEXT + 1),
            Err(libc::EMSGSIZE)
        );
        assert_eq!(s.seal_in_place(23, &mut buf[..40], 20), Err(libc::ENOBUFS));
        assert!(buf.iter().all(|&b| b == 0xee));
        assert_eq!(s.seq(), 0);
        // Exactly 2^14 fits, in a buffer of exactly the record's size.
        let n = s.layout().record_len(MAX_PLAINTEXT);
        assert_eq!(s.seal_in_place(23, &mut buf[..n], MAX_PLAINTEXT), Ok(n));
        assert_eq!(s.seq(), 1);
    }

    #[test]
    fn tls13_refuses_content_type_zero() {
        let mut s = sealer(Version::Tls13, Cipher::AesGcm256, 0);
        let mut buf = [0u8; 64];
        assert_eq!(s.seal(0, b"x", &mut buf), Err(libc::EINVAL));
        // TLS 1.2 sends whatever type the program asked for, as Linux does.
        let mut s = sealer(Version::Tls12, Cipher::AesGcm256, 0);
        assert!(s.seal(0, b"x", &mut buf).is_ok());
    }

    #[test]
    fn sequence_number_does_not_wrap() {
        for c in [Cipher::AesGcm128, Cipher::Chacha20Poly1305] {
            let mut s = sealer(Version::Tls12, c, u64::MAX - 1);
            let mut buf = [0u8; 64];
            assert!(s.seal(23, b"a", &mut buf).is_ok());
            assert_eq!(s.seq(), u64::MAX);
            // The record numbered 2^64 - 1 still goes out ...
            assert!(s.seal(23, b"b", &mut buf).is_ok());
            // ... then Linux's rec_seq wraps to 0 and it aborts the socket with EBADMSG.
            assert_eq!(s.crypto_info().rec_seq(), 0);
            assert_eq!(s.seal(23, b"c", &mut buf), Err(libc::EBADMSG));
            assert_eq!(s.seal(23, b"", &mut buf), Err(libc::EBADMSG));
        }
    }

    #[test]
    fn getsockopt_view_moves_with_the_records() {
        let mut s = sealer(Version::Tls12, Cipher::AesGcm128, 10);
        let mut buf = [0u8; 64];
        s.seal(23, b"abc", &mut buf).unwrap();
        s.seal(23, b"abc", &mut buf).unwrap();
        let info = s.crypto_info();
        assert_eq!(info.rec_seq(), 12);
        // The IV field is the next explicit nonce: 0x0202..02 + 2.
        assert_eq!(info.iv(), &[2, 2, 2, 2, 2, 2, 2, 4]);
        assert_eq!(info.key(), &[7; 16]);
        assert_eq!(info.salt(), &[1; 4]);
        // ChaCha20 keeps its IV: only the sequence number moves.
        let mut s = sealer(Version::Tls12, Cipher::Chacha20Poly1305, 0);
        s.seal(23, b"abc", &mut buf).unwrap();
        assert_eq!(s.crypto_info().iv(), &[2; 12]);
        assert_eq!(s.crypto_info().rec_seq(), 1);
    }
}
