//! Linux's kTLS socket-option interface, as the agent receives it from a host program's
//! `setsockopt`: the constants of include/uapi/linux/tls.h and the byte layout of
//! `struct tls12_crypto_info_{aes_gcm_128, aes_gcm_256, chacha20_poly1305}`, parsed the way
//! net/tls/tls_main.c `do_tls_setsockopt_conf` parses them (same checks, same order, same errno)
//! and encoded the way `do_tls_getsockopt_conf` answers.
//!
//! ```text
//!  offset  0        2            4                          4+iv      4+iv+key   +salt
//!          version  cipher_type  iv[iv]                     key[key]  salt[salt] rec_seq[8]
//!          u16      u16          AES-GCM: 8, ChaCha20: 12   16 / 32   4 / 0      big-endian
//! ```
//! `struct tls12_crypto_info_aes_gcm_128` is 40 bytes, `_aes_gcm_256` and `_chacha20_poly1305`
//! 56 (no padding: every field after the header is a byte array). The two u16 are in the host's
//! byte order; every snstack host is little-endian, as is the channel (docs/channel.md).
//!
//! Linux also knows AES-CCM-128 (53), SM4-GCM/CCM (55, 56) and ARIA-GCM (57, 58): snstack
//! refuses them with `EINVAL`, the errno with which OpenSSL falls back to user-space TLS.

use super::{wipe, Errno};

/// `setsockopt` level of the kTLS options (`SOL_TLS`, include/linux/socket.h).
pub const SOL_TLS: i32 = 282;
/// `setsockopt(IPPROTO_TCP, TCP_ULP, "tls")` attaches the TLS upper-layer protocol.
pub const TCP_ULP: i32 = 31;
/// The ULP name buffer of Linux (`TCP_ULP_NAME_MAX`), NUL included.
pub const TCP_ULP_NAME_MAX: usize = 16;
/// The only ULP the agent serves.
pub const ULP_TLS: &[u8] = b"tls";

/// Transmit parameters: a `tls12_crypto_info_*`.
pub const TLS_TX: i32 = 1;
/// Receive parameters: a `tls12_crypto_info_*`.
pub const TLS_RX: i32 = 2;
/// TX zero-copy `sendfile` (an `unsigned int`, 0 or 1). Linux accepts it on any TLS socket and
/// uses it only with device offload; so does the agent (stored, answered, no effect).
pub const TLS_TX_ZEROCOPY_RO: i32 = 3;
/// TLS 1.3 RX: the peer promises not to pad (a `u32`, 0 or 1). An optimisation hint in Linux (a
/// padded record is still decrypted correctly); stored and answered here, with Linux's checks.
pub const TLS_RX_EXPECT_NO_PAD: i32 = 4;

/// `sendmsg` control message (level `SOL_TLS`): the content type of the record to send.
pub const TLS_SET_RECORD_TYPE: i32 = 1;
/// `recvmsg` control message (level `SOL_TLS`): the content type of the record received.
pub const TLS_GET_RECORD_TYPE: i32 = 2;

pub const TLS_1_2_VERSION: u16 = 0x0303;
pub const TLS_1_3_VERSION: u16 = 0x0304;

pub const TLS_CIPHER_AES_GCM_128: u16 = 51;
pub const TLS_CIPHER_AES_GCM_256: u16 = 52;
pub const TLS_CIPHER_CHACHA20_POLY1305: u16 = 54;

/// `struct tls_crypto_info`: version and cipher type.
pub const CRYPTO_INFO_HEADER_LEN: usize = 4;
/// `sizeof(struct tls12_crypto_info_aes_gcm_128)`.
pub const TLS12_CRYPTO_INFO_AES_GCM_128_LEN: usize = 40;
/// `sizeof(struct tls12_crypto_info_aes_gcm_256)`.
pub const TLS12_CRYPTO_INFO_AES_GCM_256_LEN: usize = 56;
/// `sizeof(struct tls12_crypto_info_chacha20_poly1305)`.
pub const TLS12_CRYPTO_INFO_CHACHA20_POLY1305_LEN: usize = 56;
/// The record sequence number field (`TLS_CIPHER_*_REC_SEQ_SIZE`, 8 for every cipher).
pub const REC_SEQ_LEN: usize = 8;

/// Protocol version of a kTLS socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Tls12,
    Tls13,
}

impl Version {
    pub fn from_wire(v: u16) -> Option<Version> {
        match v {
            TLS_1_2_VERSION => Some(Version::Tls12),
            TLS_1_3_VERSION => Some(Version::Tls13),
            _ => None,
        }
    }

    pub fn wire(self) -> u16 {
        match self {
            Version::Tls12 => TLS_1_2_VERSION,
            Version::Tls13 => TLS_1_3_VERSION,
        }
    }
}

/// The AEAD of a kTLS socket: the three snstack serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cipher {
    AesGcm128,
    AesGcm256,
    Chacha20Poly1305,
}

impl Cipher {
    /// The cipher of a `cipher_type`, or `None` for any other (including those Linux knows but
    /// snstack does not serve).
    pub fn from_wire(c: u16) -> Option<Cipher> {
        match c {
            TLS_CIPHER_AES_GCM_128 => Some(Cipher::AesGcm128),
            TLS_CIPHER_AES_GCM_256 => Some(Cipher::AesGcm256),
            TLS_CIPHER_CHACHA20_POLY1305 => Some(Cipher::Chacha20Poly1305),
            _ => None,
        }
    }

    pub fn wire(self) -> u16 {
        match self {
            Cipher::AesGcm128 => TLS_CIPHER_AES_GCM_128,
            Cipher::AesGcm256 => TLS_CIPHER_AES_GCM_256,
            Cipher::Chacha20Poly1305 => TLS_CIPHER_CHACHA20_POLY1305,
        }
    }

    pub fn key_len(self) -> usize {
        match self {
            Cipher::AesGcm128 => 16,
            Cipher::AesGcm256 | Cipher::Chacha20Poly1305 => 32,
        }
    }

    /// The `iv` field: for AES-GCM the 8 bytes after the salt, for ChaCha20 all 12.
    pub fn iv_len(self) -> usize {
        match self {
            Cipher::AesGcm128 | Cipher::AesGcm256 => 8,
            Cipher::Chacha20Poly1305 => 12,
        }
    }

    pub fn salt_len(self) -> usize {
        match self {
            Cipher::AesGcm128 | Cipher::AesGcm256 => 4,
            Cipher::Chacha20Poly1305 => 0,
        }
    }

    /// `sizeof` the cipher's `struct tls12_crypto_info_*`.
    pub fn info_len(self) -> usize {
        CRYPTO_INFO_HEADER_LEN + self.iv_len() + self.key_len() + self.salt_len() + REC_SEQ_LEN
    }

    fn iv_off(self) -> usize {
        CRYPTO_INFO_HEADER_LEN
    }

    fn key_off(self) -> usize {
        self.iv_off() + self.iv_len()
    }

    fn salt_off(self) -> usize {
        self.key_off() + self.key_len()
    }

    fn rec_seq_off(self) -> usize {
        self.salt_off() + self.salt_len()
    }
}

/// Version and cipher: what must agree between TX and RX, and across a TLS 1.3 rekey.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Suite {
    pub version: Version,
    pub cipher: Cipher,
}

impl Suite {
    /// How reports name it, e.g. `TLS1.3/AES-128-GCM`.
    pub fn label(self) -> &'static str {
        match (self.version, self.cipher) {
            (Version::Tls12, Cipher::AesGcm128) => "TLS1.2/AES-128-GCM",
            (Version::Tls12, Cipher::AesGcm256) => "TLS1.2/AES-256-GCM",
            (Version::Tls12, Cipher::Chacha20Poly1305) => "TLS1.2/CHACHA20-POLY1305",
            (Version::Tls13, Cipher::AesGcm128) => "TLS1.3/AES-128-GCM",
            (Version::Tls13, Cipher::AesGcm256) => "TLS1.3/AES-256-GCM",
            (Version::Tls13, Cipher::Chacha20Poly1305) => "TLS1.3/CHACHA20-POLY1305",
        }
    }
}

/// One direction's parameters: a parsed `struct tls12_crypto_info_*`. The key, salt and IV are
/// wiped when it is dropped and never printed (`Debug` shows version, cipher and sequence only).
#[derive(Clone)]
pub struct CryptoInfo {
    suite: Suite,
    key: [u8; 32],
    salt: [u8; 4],
    iv: [u8; 12],
    rec_seq: u64,
}

impl CryptoInfo {
    /// Parameters from their parts (tests, and the TLS termination of issue 13 item 2, which
    /// derives keys itself). `EINVAL` when a part has the wrong length for the cipher.
    pub fn new(
        suite: Suite,
        key: &[u8],
        salt: &[u8],
        iv: &[u8],
        rec_seq: u64,
    ) -> Result<CryptoInfo, Errno> {
        let c = suite.cipher;
        if key.len() != c.key_len() || salt.len() != c.salt_len() || iv.len() != c.iv_len() {
            return Err(libc::EINVAL);
        }
        let mut info = CryptoInfo {
            suite,
            key: [0; 32],
            salt: [0; 4],
            iv: [0; 12],
            rec_seq,
        };
        info.key[..key.len()].copy_from_slice(key);
        info.salt[..salt.len()].copy_from_slice(salt);
        info.iv[..iv.len()].copy_from_slice(iv);
        Ok(info)
    }

    /// A `setsockopt(SOL_TLS, TLS_TX or TLS_RX)` value on a socket with neither direction set.
    pub fn parse(optval: &[u8]) -> Result<CryptoInfo, Errno> {
        parse_crypto_info(optval, None, None)
    }

    pub fn suite(&self) -> Suite {
        self.suite
    }

    pub fn version(&self) -> Version {
        self.suite.version
    }

    pub fn cipher(&self) -> Cipher {
        self.suite.cipher
    }

    pub fn key(&self) -> &[u8] {
        &self.key[..self.suite.cipher.key_len()]
    }

    pub fn salt(&self) -> &[u8] {
        &self.salt[..self.suite.cipher.salt_len()]
    }

    pub fn iv(&self) -> &[u8] {
        &self.iv[..self.suite.cipher.iv_len()]
    }

    /// The sequence number of the next record.
    pub fn rec_seq(&self) -> u64 {
        self.rec_seq
    }

    /// The same key with the IV field and the record sequence moved on (what Linux reports).
    pub(super) fn with_progress(&self, iv: &[u8], rec_seq: u64) -> CryptoInfo {
        let mut info = self.clone();
        info.iv[..iv.len()].copy_from_slice(iv);
        info.rec_seq = rec_seq;
        info
    }

    /// Writes the whole `struct tls12_crypto_info_*` (`cipher().info_len()` bytes) to the start
    /// of `out` and returns its length; `EINVAL` when `out` is shorter.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, Errno> {
        let c = self.suite.cipher;
        let n = c.info_len();
        let out = out.get_mut(..n).ok_or(libc::EINVAL)?;
        out[0..2].copy_from_slice(&self.suite.version.wire().to_le_bytes());
        out[2..4].copy_from_slice(&c.wire().to_le_bytes());
        out[c.iv_off()..c.key_off()].copy_from_slice(self.iv());
        out[c.key_off()..c.salt_off()].copy_from_slice(self.key());
        out[c.salt_off()..c.rec_seq_off()].copy_from_slice(self.salt());
        out[c.rec_seq_off()..n].copy_from_slice(&self.rec_seq.to_be_bytes());
        Ok(n)
    }

    /// Just `struct tls_crypto_info` (what `getsockopt` returns for a 4-byte `optlen`).
    pub fn encode_header(&self, out: &mut [u8; CRYPTO_INFO_HEADER_LEN]) {
        out[0..2].copy_from_slice(&self.suite.version.wire().to_le_bytes());
        out[2..4].copy_from_slice(&self.suite.cipher.wire().to_le_bytes());
    }
}

impl Drop for CryptoInfo {
    fn drop(&mut self) {
        wipe(&mut self.key);
        wipe(&mut self.salt);
        wipe(&mut self.iv);
    }
}

impl std::fmt::Debug for CryptoInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CryptoInfo")
            .field("version", &self.suite.version)
            .field("cipher", &self.suite.cipher)
            .field("rec_seq", &self.rec_seq)
            .finish_non_exhaustive()
    }
}

/// Parses a `setsockopt(SOL_TLS, TLS_TX or TLS_RX)` value with `do_tls_setsockopt_conf`'s checks
/// in its order. `this` is the suite this direction already has (`None`: not set), `other` the
/// other direction's.
///
/// * shorter than `struct tls_crypto_info`: `EINVAL`;
/// * this direction already set: `EBUSY`, unless it is TLS 1.3 (a rekey, Linux 6.14+), which
///   must then keep its version and cipher (`EINVAL`);
/// * version neither 1.2 nor 1.3: `EINVAL`; version or cipher unlike the other direction's:
///   `EINVAL`;
/// * unknown or unserved cipher: `EINVAL`; length other than the cipher's struct: `EINVAL`.
pub fn parse_crypto_info(
    optval: &[u8],
    this: Option<Suite>,
    other: Option<Suite>,
) -> Result<CryptoInfo, Errno> {
    if optval.len() < CRYPTO_INFO_HEADER_LEN {
        return Err(libc::EINVAL);
    }
    if this.is_some_and(|s| s.version != Version::Tls13) {
        return Err(libc::EBUSY);
    }
    let version = u16::from_le_bytes([optval[0], optval[1]]);
    let cipher = u16::from_le_bytes([optval[2], optval[3]]);
    let same = |s: Suite| (s.version.wire(), s.cipher.wire()) == (version, cipher);
    match this {
        Some(cur) if !same(cur) => return Err(libc::EINVAL),
        Some(_) => {}
        None => {
            if Version::from_wire(version).is_none() {
                return Err(libc::EINVAL);
            }
            if other.is_some_and(|o| !same(o)) {
                return Err(libc::EINVAL);
            }
        }
    }
    let version = Version::from_wire(version).ok_or(libc::EINVAL)?;
    let c = Cipher::from_wire(cipher).ok_or(libc::EINVAL)?;
    if optval.len() != c.info_len() {
        return Err(libc::EINVAL);
    }
    let mut seq = [0u8; REC_SEQ_LEN];
    seq.copy_from_slice(&optval[c.rec_seq_off()..c.info_len()]);
    CryptoInfo::new(
        Suite { version, cipher: c },
        &optval[c.key_off()..c.salt_off()],
        &optval[c.salt_off()..c.rec_seq_off()],
        &optval[c.iv_off()..c.key_off()],
        u64::from_be_bytes(seq),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const GCM128: Suite = Suite {
        version: Version::Tls12,
        cipher: Cipher::AesGcm128,
    };

    /// A `struct tls12_crypto_info_aes_gcm_128` written field by field, as C lays it out.
    fn gcm128_bytes() -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&TLS_1_2_VERSION.to_le_bytes());
        v.extend_from_slice(&TLS_CIPHER_AES_GCM_128.to_le_bytes());
        v.extend_from_slice(&[0xb0, 0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7]); // iv
        v.extend(0u8..16); // key
        v.extend_from_slice(&[0xa0, 0xa1, 0xa2, 0xa3]); // salt
        v.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 2]); // rec_seq
        v
    }

    #[test]
    fn struct_sizes_match_linux() {
        assert_eq!(
            Cipher::AesGcm128.info_len(),
            TLS12_CRYPTO_INFO_AES_GCM_128_LEN
        );
        assert_eq!(
            Cipher::AesGcm256.info_len(),
            TLS12_CRYPTO_INFO_AES_GCM_256_LEN
        );
        assert_eq!(
            Cipher::Chacha20Poly1305.info_len(),
            TLS12_CRYPTO_INFO_CHACHA20_POLY1305_LEN
        );
        assert_eq!(gcm128_bytes().len(), 40);
    }

    #[test]
    fn parse_reads_each_field_at_its_offset() {
        let info = CryptoInfo::parse(&gcm128_bytes()).unwrap();
        assert_eq!(info.suite(), GCM128);
        assert_eq!(info.iv(), &[0xb0, 0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7]);
        assert_eq!(info.key(), &(0u8..16).collect::<Vec<_>>()[..]);
        assert_eq!(info.salt(), &[0xa0, 0xa1, 0xa2, 0xa3]);
        assert_eq!(info.rec_seq(), 0x0102);
        let mut out = [0u8; 40];
        assert_eq!(info.encode(&mut out), Ok(40));
        assert_eq!(&out[..], &gcm128_bytes()[..]);
        assert_eq!(info.encode(&mut [0u8; 39]), Err(libc::EINVAL));
    }

    #[test]
    fn chacha_layout_has_a_12_byte_iv_and_no_salt() {
        let mut v = Vec::new();
        v.extend_from_slice(&TLS_1_3_VERSION.to_le_bytes());
        v.extend_from_slice(&TLS_CIPHER_CHACHA20_POLY1305.to_le_bytes());
        v.extend(100u8..112); // iv
        v.extend(0u8..32); // key
        v.extend_from_slice(&7u64.to_be_bytes());
        let info = CryptoInfo::parse(&v).unwrap();
        assert_eq!(info.iv(), &(100u8..112).collect::<Vec<_>>()[..]);
        assert_eq!(info.salt(), &[] as &[u8]);
        assert_eq!(info.key(), &(0u8..32).collect::<Vec<_>>()[..]);
        assert_eq!(info.rec_seq(), 7);
        let mut out = [0u8; 56];
        info.encode(&mut out).unwrap();
        assert_eq!(&out[..], &v[..]);
    }

    #[test]
    fn bad_inputs_get_linux_errnos() {
        let good = gcm128_bytes();
        // Shorter than the header.
        assert_eq!(CryptoInfo::parse(&good[..3]).err(), Some(libc::EINVAL));
        assert_eq!(CryptoInfo::parse(&[]).err(), Some(libc::EINVAL));
        // Wrong length for the cipher, either way.
        assert_eq!(CryptoInfo::parse(&good[..39]).err(), Some(libc::EINVAL));
        let mut long = good.clone();
        long.push(0);
        assert_eq!(CryptoInfo::parse(&long).err(), Some(libc::EINVAL));
        // Unknown version (TLS 1.1, and a byte-swapped 1.2).
        for v in [0x0302u16, 0x0305, TLS_1_3_VERSION.swap_bytes()] {
            let mut b = good.clone();
            b[0..2].copy_from_slice(&v.to_le_bytes());
            assert_eq!(CryptoInfo::parse(&b).err(), Some(libc::EINVAL), "{v:#x}");
        }
        // Ciphers Linux knows but snstack does not serve (CCM, SM4, ARIA), and nonsense.
        for c in [0u16, 50, 53, 55, 56, 57, 58, 59, 0xffff] {
            let mut b = good.clone();
            b[2..4].copy_from_slice(&c.to_le_bytes());
            assert_eq!(CryptoInfo::parse(&b).err(), Some(libc::EINVAL), "{c}");
        }
    }

    #[test]
    fn second_set_is_busy_for_tls12_and_a_same_suite_rekey_for_tls13() {
        let good = gcm128_bytes();
        assert_eq!(
            parse_crypto_info(&good, Some(GCM128), None).err(),
            Some(libc::EBUSY)
        );
        // EBUSY comes before any look at the value, even a wrong one.
        assert_eq!(
            parse_crypto_info(&good[..10], Some(GCM128), None).err(),
            Some(libc::EBUSY)
        );
        let t13 = Suite {
            version: Version::Tls13,
            cipher: Cipher::AesGcm128,
        };
        let mut b13 = good.clone();
        b13[0..2].copy_from_slice(&TLS_1_3_VERSION.to_le_bytes());
        assert!(parse_crypto_info(&b13, Some(t13), None).is_ok());
        // A rekey may change neither version nor cipher.
        let other_cipher = Suite {
            cipher: Cipher::AesGcm256,
            ..t13
        };
        assert_eq!(
            parse_crypto_info(&b13, Some(other_cipher), None).err(),
            Some(libc::EINVAL)
        );
    }

    #[test]
    fn directions_must_agree() {
        let good = gcm128_bytes();
        assert!(parse_crypto_info(&good, None, Some(GCM128)).is_ok());
        let t13 = Suite {
            version: Version::Tls13,
            ..GCM128
        };
        assert_eq!(
            parse_crypto_info(&good, None, Some(t13)).err(),
            Some(libc::EINVAL)
        );
    }

    #[test]
    fn debug_never_shows_key_material() {
        let info = CryptoInfo::new(
            Suite {
                version: Version::Tls13,
                cipher: Cipher::AesGcm256,
            },
            &[0xab; 32],
            &[0xcd; 4],
            &[0xef; 8],
            3,
        )
        .unwrap();
        let s = format!("{info:?} {info:#?}");
        assert!(s.contains("Tls13") && s.contains("rec_seq"), "{s}");
        for needle in [
            "ab", "AB", "171", "cd", "205", "ef", "239", "key", "salt", "iv:",
        ] {
            assert!(!s.contains(needle), "{needle} in {s}");
        }
    }

    #[test]
    fn new_checks_part_lengths() {
        let s = GCM128;
        assert!(CryptoInfo::new(s, &[0; 16], &[0; 4], &[0; 8], 0).is_ok());
        assert_eq!(
            CryptoInfo::new(s, &[0; 32], &[0; 4], &[0; 8], 0).err(),
            Some(libc::EINVAL)
        );
        assert_eq!(
            CryptoInfo::new(s, &[0; 16], &[], &[0; 12], 0).err(),
            Some(libc::EINVAL)
        );
    }
}
