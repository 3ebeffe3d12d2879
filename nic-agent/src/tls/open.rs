//! RX: TLS records received on a connection into (content type, plaintext), with the checks and
//! errno of Linux's receive path (net/tls/tls_sw.c `tls_rx_msg_size`, `tls_decrypt_sg`,
//! `tls_padding_length`, `tls_record_content_type`).
//!
//! `peek` reads a header from the start of the received bytes and says how long the record is,
//! or how many more bytes it needs; `open_in_place` decrypts a whole record where it lies, and
//! `open_into` into a buffer of the caller's (the RX stream, say). Records split across reads are
//! gathered by `reassembly::RecordBuf`.
//!
//! | condition                                          | errno         |
//! |----------------------------------------------------|---------------|
//! | header length > `Layout::max_length` (2^14 + ...)  | `EMSGSIZE`    |
//! | header length < explicit nonce + tag               | `EBADMSG`     |
//! | header version other than 03 03                    | `EINVAL`      |
//! | authentication fails (any changed byte)            | `EBADMSG`     |
//! | TLS 1.3 inner plaintext all zeros (no type)        | `EBADMSG`     |
//! | content type 0                                     | `EBADMSG`     |
//! | the record after sequence number 2^64 - 1          | `EBADMSG`     |
//! | a TLS 1.3 KeyUpdate was opened, no new key yet     | `EKEYEXPIRED` |
//!
//! Every error but the last is final, as Linux aborts the socket with it: the same errno is
//! returned by every later call. Unknown content types are returned as they are, as Linux does
//! (the program sees them through `TLS_GET_RECORD_TYPE` and decides).
//!
//! One deliberate difference: a TLS 1.3 record's additional data is its header as received
//! (RFC 8446 section 5.2), so a record whose outer type was changed on the way fails with
//! `EBADMSG`. Linux builds it with application_data whatever the header says, and would accept
//! such a record. Peers always send application_data, so honest traffic cannot tell.

use std::ops::Range;

use ring::aead::Aad;

use super::cipher::RecordCipher;
use super::record::{content_type, Header, Layout, EXPLICIT_NONCE_LEN, HEADER_LEN};
use super::record::{HANDSHAKE_KEY_UPDATE, LEGACY_VERSION, TAG_LEN};
use super::seal::aad12;
use super::uapi::{CryptoInfo, Suite, Version};
use super::Errno;

/// What the start of the received bytes holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peek {
    /// Not a whole record yet: at least `need` more bytes.
    Incomplete { need: usize },
    /// A whole record of `len` bytes (header included) is there.
    Record { len: usize },
}

/// An opened record: its content type and where its plaintext lies in the caller's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    pub content_type: u8,
    pub plaintext: Range<usize>,
}

/// One socket's RX record state (`TLS_RX`).
#[derive(Debug)]
pub struct Opener {
    c: RecordCipher,
    /// The errno the connection failed with, returned again by every later call.
    failed: Option<Errno>,
    /// A TLS 1.3 KeyUpdate was opened: nothing more until `rekey`.
    key_update_pending: bool,
}

impl Opener {
    pub fn new(info: &CryptoInfo) -> Result<Opener, Errno> {
        Ok(Opener {
            c: RecordCipher::new(info)?,
            failed: None,
            key_update_pending: false,
        })
    }

    pub fn layout(&self) -> Layout {
        self.c.layout()
    }

    pub fn suite(&self) -> Suite {
        self.c.suite()
    }

    /// Sequence number the next record must have.
    pub fn seq(&self) -> u64 {
        self.c.seq()
    }

    /// The parameters for `getsockopt(SOL_TLS, TLS_RX)`, with the current sequence number.
    pub fn crypto_info(&self) -> CryptoInfo {
        self.c.current_info()
    }

    /// The error the connection's RX failed with, if it did.
    pub fn failed(&self) -> Option<Errno> {
        self.failed
    }

    /// A TLS 1.3 KeyUpdate has been opened and the program has not set the new RX key yet.
    pub fn key_update_pending(&self) -> bool {
        self.key_update_pending
    }

    /// TLS 1.3 rekey (`setsockopt(TLS_RX)` again, Linux 6.14+): the key after a KeyUpdate.
    pub fn rekey(&mut self, info: &CryptoInfo) -> Result<(), Errno> {
        self.c = RecordCipher::new(info)?;
        self.key_update_pending = false;
        Ok(())
    }

    fn check(&self) -> Result<(), Errno> {
        match self.failed {
            Some(e) => Err(e),
            None if self.key_update_pending => Err(libc::EKEYEXPIRED),
            None => Ok(()),
        }
    }

    fn fail<T>(&mut self, e: Errno) -> Result<T, Errno> {
        self.failed = Some(e);
        Err(e)
    }

    /// Looks at the received bytes at the start of `buf`: how long the record there is, or how
    /// many more bytes are needed to know or to have it. The header's limits are checked as
    /// soon as it is there (`EMSGSIZE`, `EBADMSG`, `EINVAL`).
    pub fn peek(&mut self, buf: &[u8]) -> Result<Peek, Errno> {
        self.check()?;
        let Some(h) = Header::parse(buf) else {
            return Ok(Peek::Incomplete {
                need: HEADER_LEN - buf.len(),
            });
        };
        let layout = self.c.layout();
        let length = usize::from(h.length);
        if length > layout.max_length() {
            return self.fail(libc::EMSGSIZE);
        }
        if length < layout.min_length() {
            return self.fail(libc::EBADMSG);
        }
        if h.version != LEGACY_VERSION {
            return self.fail(libc::EINVAL);
        }
        let len = HEADER_LEN + length;
        Ok(match buf.len() {
            n if n < len => Peek::Incomplete { need: len - n },
            _ => Peek::Record { len },
        })
    }

    /// Opens the record at the start of `buf` in place (bytes after it are left alone): the
    /// plaintext is `buf[opened.plaintext]`. `EAGAIN` if `buf` does not hold the whole record
    /// (nothing changes: call again with more); the other errors are in the module doc.
    pub fn open_in_place(&mut self, buf: &mut [u8]) -> Result<Opened, Errno> {
        let Peek::Record { len } = self.peek(buf)? else {
            return Err(libc::EAGAIN);
        };
        let h = Header::parse(buf).expect("peeked");
        let start = self.c.layout().prefix_len();
        let explicit = explicit_of(&buf[..len], self.c.layout());
        let (ty, n) = self.open_body(h, explicit, &mut buf[start..len])?;
        Ok(Opened {
            content_type: ty,
            plaintext: start..start + n,
        })
    }

    /// Opens the whole record `record` into `out`, which needs room for its ciphertext and tag
    /// (`record.len() - layout().prefix_len()` bytes; `ENOBUFS` if short, nothing changes), and
    /// returns the content type and the plaintext's length: `out[..n]`. `record` is not
    /// changed. `EAGAIN` if `record` is not a whole record yet.
    pub fn open_into(&mut self, record: &[u8], out: &mut [u8]) -> Result<(u8, usize), Errno> {
        let Peek::Record { len } = self.peek(record)? else {
            return Err(libc::EAGAIN);
        };
        let h = Header::parse(record).expect("peeked");
        let start = self.c.layout().prefix_len();
        let body = &record[start..len];
        let Some(dst) = out.get_mut(..body.len()) else {
            return Err(libc::ENOBUFS);
        };
        dst.copy_from_slice(body);
        let explicit = explicit_of(&record[..len], self.c.layout());
        self.open_body(h, explicit, dst)
    }

    /// Decrypts `body` (ciphertext and tag) in place; returns the content type and the length
    /// of the plaintext at its start.
    fn open_body(
        &mut self,
        h: Header,
        explicit: [u8; EXPLICIT_NONCE_LEN],
        body: &mut [u8],
    ) -> Result<(u8, usize), Errno> {
        if self.c.exhausted() {
            return self.fail(libc::EBADMSG);
        }
        let Some(ct_len) = body.len().checked_sub(TAG_LEN) else {
            return self.fail(libc::EBADMSG);
        };
        let nonce = self.c.nonce(explicit);
        let tls13 = self.c.version() == Version::Tls13;
        let opened = if tls13 {
            self.c
                .key()
                .open_in_place(nonce, Aad::from(h.to_bytes()), body)
        } else {
            let aad = aad12(self.c.seq(), h.content_type, ct_len);
            self.c.key().open_in_place(nonce, Aad::from(aad), body)
        };
        let plain = match opened {
            Ok(p) => p,
            Err(_) => return self.fail(libc::EBADMSG),
        };
        let (ty, n) = if tls13 {
            // The inner type is the last non-zero byte; zeros after it are padding.
            match plain.iter().rposition(|&b| b != 0) {
                Some(i) => (plain[i], i),
                None => return self.fail(libc::EBADMSG),
            }
        } else {
            (h.content_type, plain.len())
        };
        if ty == 0 {
            return self.fail(libc::EBADMSG);
        }
        if tls13 && ty == content_type::HANDSHAKE && plain.first() == Some(&HANDSHAKE_KEY_UPDATE) {
            self.key_update_pending = true;
        }
        self.c.advance();
        Ok((ty, n))
    }
}

/// The explicit nonce a TLS 1.2 AES-GCM record carries after its header (zeros otherwise).
fn explicit_of(record: &[u8], layout: Layout) -> [u8; EXPLICIT_NONCE_LEN] {
    let mut e = [0u8; EXPLICIT_NONCE_LEN];
    if layout.explicit_nonce == EXPLICIT_NONCE_LEN {
        e.copy_from_slice(&record[HEADER_LEN..HEADER_LEN + EXPLICIT_NONCE_LEN]);
    }
    e
}
