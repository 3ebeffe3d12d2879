//! One socket's kTLS options: `TCP_ULP` "tls" (attach), then `SOL_TLS` `TLS_TX`, `TLS_RX`,
//! `TLS_TX_ZEROCOPY_RO` and `TLS_RX_EXPECT_NO_PAD`, set and got with Linux's semantics and errno
//! (net/ipv4/tcp.c `do_tcp_setsockopt` / `tcp_set_ulp`, net/tls/tls_main.c
//! `do_tls_setsockopt` / `do_tls_getsockopt`).
//!
//! `Ktls` owns the socket's `Sealer` and `Opener`, so `getsockopt` reports the live record
//! sequence numbers. A `SOL_TLS` call on a socket without the ULP never gets here: the data path
//! answers `ENOPROTOOPT` (Linux's TCP passes the unknown level down to IP, which does).

use super::open::Opener;
use super::seal::Sealer;
use super::uapi::{self, CryptoInfo, Suite, Version, CRYPTO_INFO_HEADER_LEN};
use super::uapi::{TCP_ULP_NAME_MAX, ULP_TLS};
use super::Errno;

/// The "tls" ULP of one socket and its two directions.
#[derive(Debug, Default)]
pub struct Ktls {
    tx: Option<Sealer>,
    rx: Option<Opener>,
    zerocopy_sendfile: bool,
    rx_no_pad: bool,
}

impl Ktls {
    /// `setsockopt(IPPROTO_TCP, TCP_ULP, name)`: `EINVAL` for an empty value, `ENOENT` for a
    /// name other than "tls" (the name ends at the first NUL, at most 15 bytes are read),
    /// `EEXIST` if the socket has a ULP already, `ENOTCONN` unless it is connected.
    pub fn attach(optval: &[u8], attached: bool, established: bool) -> Result<Ktls, Errno> {
        if optval.is_empty() {
            return Err(libc::EINVAL);
        }
        let name = &optval[..optval.len().min(TCP_ULP_NAME_MAX - 1)];
        let name = name.split(|&b| b == 0).next().unwrap_or_default();
        if name != ULP_TLS {
            return Err(libc::ENOENT);
        }
        if attached {
            return Err(libc::EEXIST);
        }
        if !established {
            return Err(libc::ENOTCONN);
        }
        Ok(Ktls::default())
    }

    /// `getsockopt(IPPROTO_TCP, TCP_ULP)` on an attached socket: the name in Linux's 16-byte
    /// field, cut to `out`'s length; returns the length written.
    pub fn ulp_name(out: &mut [u8]) -> usize {
        let mut field = [0u8; TCP_ULP_NAME_MAX];
        field[..ULP_TLS.len()].copy_from_slice(ULP_TLS);
        let n = out.len().min(TCP_ULP_NAME_MAX);
        out[..n].copy_from_slice(&field[..n]);
        n
    }

    /// The version both directions use, once one is set.
    pub fn version(&self) -> Option<Version> {
        self.suite(true).or(self.suite(false)).map(|s| s.version)
    }

    /// The suite of one direction (`tx`: `TLS_TX`, else `TLS_RX`), once set.
    pub fn suite(&self, tx: bool) -> Option<Suite> {
        if tx {
            self.tx.as_ref().map(Sealer::suite)
        } else {
            self.rx.as_ref().map(Opener::suite)
        }
    }

    /// `TLS_TX` is set.
    pub fn has_tx(&self) -> bool {
        self.tx.is_some()
    }

    pub fn sealer(&mut self) -> Option<&mut Sealer> {
        self.tx.as_mut()
    }

    pub fn opener(&mut self) -> Option<&mut Opener> {
        self.rx.as_mut()
    }

    pub fn zerocopy_sendfile(&self) -> bool {
        self.zerocopy_sendfile
    }

    pub fn rx_no_pad(&self) -> bool {
        self.rx_no_pad
    }

    /// `setsockopt(SOL_TLS, optname, optval)`.
    pub fn setsockopt(&mut self, optname: i32, optval: &[u8]) -> Result<(), Errno> {
        match optname {
            uapi::TLS_TX | uapi::TLS_RX => self.set_conf(optname == uapi::TLS_TX, optval),
            uapi::TLS_TX_ZEROCOPY_RO => {
                let v: [u8; 4] = optval.try_into().map_err(|_| libc::EINVAL)?;
                match u32::from_ne_bytes(v) {
                    v @ (0 | 1) => self.zerocopy_sendfile = v == 1,
                    _ => return Err(libc::EINVAL),
                }
                Ok(())
            }
            uapi::TLS_RX_EXPECT_NO_PAD => {
                if self.version() != Some(Version::Tls13) || optval.len() < 4 {
                    return Err(libc::EINVAL);
                }
                let v = u32::from_ne_bytes(optval[..4].try_into().expect("4 bytes"));
                if v > 1 || optval[4..].iter().any(|&b| b != 0) || self.rx.is_none() {
                    return Err(libc::EINVAL);
                }
                // A hint for Linux's zero-copy path: the opener strips padding either way.
                self.rx_no_pad = v == 1;
                Ok(())
            }
            _ => Err(libc::ENOPROTOOPT),
        }
    }

    fn set_conf(&mut self, tx: bool, optval: &[u8]) -> Result<(), Errno> {
        let info = uapi::parse_crypto_info(optval, self.suite(tx), self.suite(!tx))?;
        match (tx, &mut self.tx, &mut self.rx) {
            (true, Some(s), _) => s.rekey(&info),
            (true, None, _) => Sealer::new(&info).map(|s| self.tx = Some(s)),
            (false, _, Some(o)) => o.rekey(&info),
            (false, _, None) => Opener::new(&info).map(|o| self.rx = Some(o)),
        }
    }

    /// `getsockopt(SOL_TLS, optname)` with an `optlen` of `out.len()`; returns the length of
    /// the value written at the start of `out`.
    ///
    /// `TLS_TX`/`TLS_RX`: `EINVAL` if `optlen` is under 4; `EBUSY` if the direction is not set;
    /// for exactly 4 just version and cipher; else `optlen` must be the cipher's struct size
    /// (`EINVAL`), and the struct comes with the current record sequence number. Linux leaves
    /// `optlen` as it was for these (it is the length returned here).
    pub fn getsockopt(&self, optname: i32, out: &mut [u8]) -> Result<usize, Errno> {
        match optname {
            uapi::TLS_TX | uapi::TLS_RX => {
                if out.len() < CRYPTO_INFO_HEADER_LEN {
                    return Err(libc::EINVAL);
                }
                let info: CryptoInfo = match optname {
                    uapi::TLS_TX => self.tx.as_ref().map(Sealer::crypto_info),
                    _ => self.rx.as_ref().map(Opener::crypto_info),
                }
                .ok_or(libc::EBUSY)?;
                if out.len() == CRYPTO_INFO_HEADER_LEN {
                    let mut h = [0u8; CRYPTO_INFO_HEADER_LEN];
                    info.encode_header(&mut h);
                    out.copy_from_slice(&h);
                    return Ok(CRYPTO_INFO_HEADER_LEN);
                }
                if out.len() != info.cipher().info_len() {
                    return Err(libc::EINVAL);
                }
                info.encode(out)
            }
            uapi::TLS_TX_ZEROCOPY_RO => {
                let out: &mut [u8; 4] = out.try_into().map_err(|_| libc::EINVAL)?;
                *out = u32::from(self.zerocopy_sendfile).to_ne_bytes();
                Ok(4)
            }
            uapi::TLS_RX_EXPECT_NO_PAD => {
                if self.version() != Some(Version::Tls13) || out.len() < 4 || self.rx.is_none() {
                    return Err(libc::EINVAL);
                }
                out[..4].copy_from_slice(&u32::from(self.rx_no_pad).to_ne_bytes());
                Ok(4)
            }
            _ => Err(libc::ENOPROTOOPT),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::uapi::{Cipher, TLS_RX, TLS_RX_EXPECT_NO_PAD, TLS_TX, TLS_TX_ZEROCOPY_RO};

    fn info_bytes(version: Version, cipher: Cipher, seq: u64) -> Vec<u8> {
        let info = CryptoInfo::new(
            Suite { version, cipher },
            &vec![9; cipher.key_len()],
            &vec![8; cipher.salt_len()],
            &vec![0; cipher.iv_len()],
            seq,
        )
        .unwrap();
        let mut v = vec![0; cipher.info_len()];
        info.encode(&mut v).unwrap();
        v
    }

    fn attached() -> Ktls {
        Ktls::attach(b"tls\0", false, true).unwrap()
    }

    #[test]
    fn debug_of_the_socket_state_shows_no_key() {
        let mut k = attached();
        k.setsockopt(TLS_TX, &info_bytes(Version::Tls12, Cipher::AesGcm256, 0))
            .unwrap();
        k.setsockopt(TLS_RX, &info_bytes(Version::Tls12, Cipher::AesGcm256, 0))
            .unwrap();
        let s = format!("{k:?}");
        // The key is 32 bytes of 9, the salt 4 of 8: neither appears, in any radix.
        assert!(s.contains("AesGcm256") && s.contains("seq"), "{s}");
        assert!(
            !s.contains("9, 9") && !s.contains("8, 8") && !s.contains("0909"),
            "{s}"
        );
    }

    #[test]
    fn ulp_attach_errnos() {
        assert_eq!(Ktls::attach(b"", false, true).err(), Some(libc::EINVAL));
        assert_eq!(Ktls::attach(b"tcp", false, true).err(), Some(libc::ENOENT));
        assert_eq!(Ktls::attach(b"tlsx", false, true).err(), Some(libc::ENOENT));
        assert_eq!(Ktls::attach(b"tls", true, true).err(), Some(libc::EEXIST));
        assert_eq!(
            Ktls::attach(b"tls", false, false).err(),
            Some(libc::ENOTCONN)
        );
        // Only 15 bytes are read, and the name ends at a NUL.
        assert!(Ktls::attach(b"tls", false, true).is_ok());
        assert!(Ktls::attach(b"tls\0garbage", false, true).is_ok());
        let mut out = [0xffu8; 20];
        assert_eq!(Ktls::ulp_name(&mut out), 16);
        assert_eq!(&out[..5], b"tls\0\0");
        assert_eq!(Ktls::ulp_name(&mut out[..2]), 2);
    }

    #[test]
    fn set_then_get_reports_the_live_sequence() {
        let mut k = attached();
        let mut buf = [0u8; 56];
        assert_eq!(k.getsockopt(TLS_TX, &mut buf[..40]), Err(libc::EBUSY));
        let set = info_bytes(Version::Tls12, Cipher::AesGcm128, 100);
        k.setsockopt(TLS_TX, &set).unwrap();
        assert_eq!(k.getsockopt(TLS_TX, &mut buf[..40]), Ok(40));
        assert_eq!(&buf[..40], &set[..]);
        let mut rec = [0u8; 64];
        k.sealer().unwrap().seal(23, b"hi", &mut rec).unwrap();
        k.getsockopt(TLS_TX, &mut buf[..40]).unwrap();
        let got = CryptoInfo::parse(&buf[..40]).unwrap();
        assert_eq!(got.rec_seq(), 101);
        assert_eq!(got.key(), &[9; 16]);
        // optlen 4: the header only; under 4 or another size: EINVAL.
        assert_eq!(k.getsockopt(TLS_TX, &mut buf[..4]), Ok(4));
        assert_eq!(&buf[..4], &set[..4]);
        assert_eq!(k.getsockopt(TLS_TX, &mut buf[..3]), Err(libc::EINVAL));
        assert_eq!(k.getsockopt(TLS_TX, &mut buf[..41]), Err(libc::EINVAL));
        assert_eq!(k.getsockopt(TLS_RX, &mut buf[..40]), Err(libc::EBUSY));
        assert_eq!(k.getsockopt(99, &mut buf), Err(libc::ENOPROTOOPT));
        assert_eq!(k.setsockopt(99, &set), Err(libc::ENOPROTOOPT));
    }

    #[test]
    fn tls12_second_set_is_busy_and_directions_must_match() {
        let mut k = attached();
        let gcm = info_bytes(Version::Tls12, Cipher::AesGcm256, 0);
        k.setsockopt(TLS_TX, &gcm).unwrap();
        assert_eq!(k.setsockopt(TLS_TX, &gcm), Err(libc::EBUSY));
        let chacha = info_bytes(Version::Tls12, Cipher::Chacha20Poly1305, 0);
        assert_eq!(k.setsockopt(TLS_RX, &chacha), Err(libc::EINVAL));
        let t13 = info_bytes(Version::Tls13, Cipher::AesGcm256, 0);
        assert_eq!(k.setsockopt(TLS_RX, &t13), Err(libc::EINVAL));
        k.setsockopt(TLS_RX, &gcm).unwrap();
        assert_eq!(k.version(), Some(Version::Tls12));
    }

    #[test]
    fn tls13_rekey_replaces_key_and_sequence() {
        let mut k = attached();
        k.setsockopt(TLS_TX, &info_bytes(Version::Tls13, Cipher::AesGcm128, 0))
            .unwrap();
        let mut rec = [0u8; 64];
        k.sealer().unwrap().seal(23, b"x", &mut rec).unwrap();
        assert_eq!(k.sealer().unwrap().seq(), 1);
        k.setsockopt(TLS_TX, &info_bytes(Version::Tls13, Cipher::AesGcm128, 0))
            .unwrap();
        assert_eq!(k.sealer().unwrap().seq(), 0);
        let other = info_bytes(Version::Tls13, Cipher::Chacha20Poly1305, 0);
        assert_eq!(k.setsockopt(TLS_TX, &other), Err(libc::EINVAL));
    }

    #[test]
    fn zerocopy_and_no_pad_follow_linux() {
        let mut k = attached();
        let mut out = [0u8; 8];
        // TX zero-copy: any TLS socket, exactly 4 bytes, 0 or 1.
        assert_eq!(
            k.setsockopt(TLS_TX_ZEROCOPY_RO, &[1, 0, 0]),
            Err(libc::EINVAL)
        );
        assert_eq!(
            k.setsockopt(TLS_TX_ZEROCOPY_RO, &2u32.to_ne_bytes()),
            Err(libc::EINVAL)
        );
        k.setsockopt(TLS_TX_ZEROCOPY_RO, &1u32.to_ne_bytes())
            .unwrap();
        assert_eq!(k.getsockopt(TLS_TX_ZEROCOPY_RO, &mut out[..4]), Ok(4));
        assert_eq!(out[..4], 1u32.to_ne_bytes());
        assert_eq!(
            k.getsockopt(TLS_TX_ZEROCOPY_RO, &mut out[..5]),
            Err(libc::EINVAL)
        );
        // No padding: TLS 1.3 with RX set only.
        let one = 1u32.to_ne_bytes();
        assert_eq!(k.setsockopt(TLS_RX_EXPECT_NO_PAD, &one), Err(libc::EINVAL));
        k.setsockopt(TLS_TX, &info_bytes(Version::Tls13, Cipher::AesGcm256, 0))
            .unwrap();
        assert_eq!(k.setsockopt(TLS_RX_EXPECT_NO_PAD, &one), Err(libc::EINVAL));
        assert_eq!(
            k.getsockopt(TLS_RX_EXPECT_NO_PAD, &mut out),
            Err(libc::EINVAL)
        );
        k.setsockopt(TLS_RX, &info_bytes(Version::Tls13, Cipher::AesGcm256, 0))
            .unwrap();
        assert_eq!(
            k.setsockopt(TLS_RX_EXPECT_NO_PAD, &[1, 0]),
            Err(libc::EINVAL)
        );
        assert_eq!(
            k.setsockopt(TLS_RX_EXPECT_NO_PAD, &2u32.to_ne_bytes()),
            Err(libc::EINVAL)
        );
        // Longer values are fine if the rest is zero.
        assert_eq!(
            k.setsockopt(TLS_RX_EXPECT_NO_PAD, &[1, 0, 0, 0, 0, 1]),
            Err(libc::EINVAL)
        );
        k.setsockopt(TLS_RX_EXPECT_NO_PAD, &[1, 0, 0, 0, 0, 0])
            .unwrap();
        assert!(k.rx_no_pad());
        assert_eq!(k.getsockopt(TLS_RX_EXPECT_NO_PAD, &mut out), Ok(4));
        assert_eq!(out[..4], one);
        assert_eq!(
            k.getsockopt(TLS_RX_EXPECT_NO_PAD, &mut out[..3]),
            Err(libc::EINVAL)
        );
    }
}
