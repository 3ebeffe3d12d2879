//! One direction's keyed state: the AEAD key, the nonce of each record and the record sequence
//! number, moved on per record exactly as Linux's `tls_advance_record_sn` does (net/tls/tls.h):
//!
//! * nonce, TLS 1.2 AES-GCM: `salt || explicit`, where `explicit` starts at the `iv` field and
//!   goes up by one per record (sent in clear; RFC 5288 lets the sender choose it);
//! * nonce, TLS 1.2 ChaCha20-Poly1305 (RFC 7905) and TLS 1.3 (RFC 8446 section 5.3): the 12-byte
//!   `salt || iv` XOR the sequence number, big-endian, right-aligned;
//! * the sequence number never wraps: after record 2^64 - 1 Linux aborts the socket with
//!   `EBADMSG`, and so does this state (`exhausted`).
//!
//! The raw key stays here too, in the `CryptoInfo` (wiped on drop), because `getsockopt` returns
//! it, as Linux does. The expanded key schedule inside `ring` is not wiped on drop: `ring` 0.17
//! offers no way to, and a safe wrapper cannot reach it.

use ring::aead::{self, LessSafeKey, Nonce, UnboundKey};

use super::record::{Layout, EXPLICIT_NONCE_LEN};
use super::uapi::{Cipher, CryptoInfo, Suite, Version};
use super::{wipe, Errno};

pub(super) const NONCE_LEN: usize = aead::NONCE_LEN;

pub(super) struct RecordCipher {
    /// As set, with the IV field and record sequence of the moment it was set.
    info: CryptoInfo,
    key: LessSafeKey,
    layout: Layout,
    /// `salt || iv` as set: the fixed part of every nonce.
    static_iv: [u8; NONCE_LEN],
    /// Sequence number of the next record.
    seq: u64,
    /// TLS 1.2 AES-GCM: the explicit nonce of the next record (the `iv` field, moving on).
    explicit: u64,
    /// The record with sequence number 2^64 - 1 has been processed.
    exhausted: bool,
}

impl RecordCipher {
    pub(super) fn new(info: &CryptoInfo) -> Result<RecordCipher, Errno> {
        let alg = match info.cipher() {
            Cipher::AesGcm128 => &aead::AES_128_GCM,
            Cipher::AesGcm256 => &aead::AES_256_GCM,
            Cipher::Chacha20Poly1305 => &aead::CHACHA20_POLY1305,
        };
        // The length was checked with the struct's; ring refuses nothing else.
        let key = UnboundKey::new(alg, info.key()).map_err(|_| libc::EINVAL)?;
        let mut static_iv = [0u8; NONCE_LEN];
        let salt = info.salt();
        static_iv[..salt.len()].copy_from_slice(salt);
        static_iv[salt.len()..].copy_from_slice(info.iv());
        let layout = Layout::of(info.version(), info.cipher());
        let explicit = if layout.explicit_nonce == EXPLICIT_NONCE_LEN {
            u64::from_be_bytes(static_iv[4..].try_into().expect("8 bytes after the salt"))
        } else {
            0
        };
        Ok(RecordCipher {
            info: info.clone(),
            key: LessSafeKey::new(key),
            layout,
            static_iv,
            seq: info.rec_seq(),
            explicit,
            exhausted: false,
        })
    }

    pub(super) fn layout(&self) -> Layout {
        self.layout
    }

    pub(super) fn version(&self) -> Version {
        self.info.version()
    }

    pub(super) fn suite(&self) -> Suite {
        self.info.suite()
    }

    pub(super) fn key(&self) -> &LessSafeKey {
        &self.key
    }

    pub(super) fn seq(&self) -> u64 {
        self.seq
    }

    pub(super) fn exhausted(&self) -> bool {
        self.exhausted
    }

    /// The explicit nonce the next TLS 1.2 AES-GCM record carries.
    pub(super) fn explicit(&self) -> [u8; EXPLICIT_NONCE_LEN] {
        self.explicit.to_be_bytes()
    }

    /// The nonce of the next record; `explicit` is the one read from a received TLS 1.2
    /// AES-GCM record (ignored by the other suites).
    pub(super) fn nonce(&self, explicit: [u8; EXPLICIT_NONCE_LEN]) -> Nonce {
        let mut n = self.static_iv;
        if self.layout.explicit_nonce == EXPLICIT_NONCE_LEN {
            n[4..].copy_from_slice(&explicit);
        } else {
            for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
                *b ^= s;
            }
        }
        Nonce::assume_unique_for_key(n)
    }

    /// After a record: the sequence number and (TLS 1.2 AES-GCM) the explicit nonce move on.
    pub(super) fn advance(&mut self) {
        self.seq = self.seq.wrapping_add(1);
        if self.seq == 0 {
            self.exhausted = true;
        }
        if self.layout.explicit_nonce == EXPLICIT_NONCE_LEN {
            self.explicit = self.explicit.wrapping_add(1);
        }
    }

    /// The parameters as `getsockopt` reports them: the key as set, the IV field and the record
    /// sequence as they are now (`do_tls_getsockopt_conf` copies `cctx->iv` and `rec_seq`).
    pub(super) fn current_info(&self) -> CryptoInfo {
        let mut iv = [0u8; 12];
        let n = self.info.iv().len();
        if self.layout.explicit_nonce == EXPLICIT_NONCE_LEN {
            iv[..n].copy_from_slice(&self.explicit.to_be_bytes());
        } else {
            iv[..n].copy_from_slice(self.info.iv());
        }
        let info = self.info.with_progress(&iv[..n], self.seq);
        wipe(&mut iv);
        info
    }
}

impl Drop for RecordCipher {
    fn drop(&mut self) {
        wipe(&mut self.static_iv);
    }
}

impl std::fmt::Debug for RecordCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordCipher")
            .field("version", &self.info.version())
            .field("cipher", &self.info.cipher())
            .field("seq", &self.seq)
            .field("exhausted", &self.exhausted)
            .finish_non_exhaustive()
    }
}
