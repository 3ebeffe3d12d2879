//! kTLS RX on the host side: reads of a socket whose receive keys the agent holds
//! (`setsockopt(SOL_TLS, TLS_RX)`), derived from the RX stream and the word the agent publishes
//! beside it (`SockState::tls_rx`, `shm_proto::tlsrx`), as Linux's `tls_sw_recvmsg` gives them:
//!
//! * a read returns bytes of one record type: application data (records merged), or one control
//!   record (alert, handshake) alone; it stops where the type changes;
//! * `recvmsg` with room for a control message gets `SOL_TLS`/`TLS_GET_RECORD_TYPE` (one byte)
//!   with the type, for application data too; a read without that room (`read`, `recv`, or a
//!   `recvmsg` whose `msg_controllen` is under `CMSG_LEN(1)`) that reaches a control record fails
//!   with `EIO` and leaves it there (a later `recvmsg` with room gets it); `MSG_PEEK` looks
//!   without taking;
//! * once a record failed to open, reads return the plaintext before it, then fail with the
//!   errno every time (`EBADMSG`, `EMSGSIZE`, ...; `EKEYEXPIRED` until a TLS 1.3 rekey).
//!
//! The agent writes a control record only into an empty stream and stores its word before the
//! tail that publishes it; it writes nothing more until the head passed it. So the host loads
//! the tail first (the readable count) and the word after it, and whatever it finds readable is
//! of the word's type.

use shm_proto::TlsRx;

/// Linux's `SOL_TLS` and `TLS_GET_RECORD_TYPE` (include/uapi/linux/tls.h).
pub(crate) const SOL_TLS: i32 = 282;
pub(crate) const TLS_GET_RECORD_TYPE: i32 = 2;
/// Content type of application data.
pub(crate) const APPLICATION_DATA: u8 = 23;

/// What one step of a read may do at the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Copy `n` bytes of content type `ty`; `last`: the read ends after them (a control record
    /// is returned alone).
    Take { ty: u8, n: usize, last: bool },
    /// The type changes here: return what the read has.
    Stop,
    /// Fail the read (nothing copied yet) with this errno.
    Fail(i32),
    /// Nothing readable now (wait, or `EAGAIN`).
    Empty,
}

/// The step of a read with `want` more bytes wanted, `avail` readable (tail loaded before
/// `word`), the type of what it copied so far (`None`: nothing yet), and whether the caller
/// has room for the record-type control message.
pub(crate) fn verdict(
    word: u32,
    avail: usize,
    want: usize,
    so_far: Option<u8>,
    room: bool,
) -> Verdict {
    match TlsRx::unpack(word) {
        TlsRx::Data => {
            if so_far.is_some_and(|t| t != APPLICATION_DATA) {
                Verdict::Stop
            } else if avail == 0 {
                Verdict::Empty
            } else {
                Verdict::Take {
                    ty: APPLICATION_DATA,
                    n: avail.min(want),
                    last: false,
                }
            }
        }
        TlsRx::Control(ty) => {
            if so_far.is_some() {
                // Never merged with data before it (nor another control record).
                Verdict::Stop
            } else if avail == 0 {
                Verdict::Empty
            } else if !room {
                // tls_record_content_type: the cmsg cannot be put, the record stays.
                Verdict::Fail(libc::EIO)
            } else {
                Verdict::Take {
                    ty,
                    n: avail.min(want),
                    last: true,
                }
            }
        }
        TlsRx::Error(e) => {
            if so_far.is_some() {
                Verdict::Stop
            } else {
                Verdict::Fail(i32::from(e))
            }
        }
    }
}

/// The readable bytes will never come: the word holds an error (a blocked reader wakes for it).
pub(crate) fn failed(word: u32) -> bool {
    matches!(TlsRx::unpack(word), TlsRx::Error(_))
}

/// The readable bytes are a control record (`splice` refuses it with `EINVAL`, as Linux's
/// `tls_sw_splice_read`, and leaves it for `recvmsg`).
pub(crate) fn control(word: u32) -> bool {
    matches!(TlsRx::unpack(word), TlsRx::Control(_))
}

/// `recvmsg`'s room for the record type: `msg_controllen` of at least `CMSG_LEN(1)` (Linux's
/// `put_cmsg` truncates anything shorter and sets `MSG_CTRUNC`).
pub(crate) fn room(control: *const libc::c_void, controllen: usize) -> bool {
    // SAFETY: CMSG_LEN is arithmetic.
    !control.is_null() && controllen >= unsafe { libc::CMSG_LEN(1) } as usize
}

/// Writes the `TLS_GET_RECORD_TYPE` control message for `ty` at the start of the application's
/// control buffer (which [`room`] approved) and returns the bytes used (`CMSG_SPACE(1)`, or all
/// of `controllen` if that is less), the new `msg_controllen`.
///
/// # Safety
/// `control` must be writable for `controllen` bytes.
pub(crate) unsafe fn put_type(control: *mut libc::c_void, controllen: usize, ty: u8) -> usize {
    // SAFETY: arithmetic.
    let (len, space) = unsafe { (libc::CMSG_LEN(1) as usize, libc::CMSG_SPACE(1) as usize) };
    let mut buf = [0u8; 64];
    let hdr = libc::cmsghdr {
        cmsg_len: len as _,
        cmsg_level: SOL_TLS,
        cmsg_type: TLS_GET_RECORD_TYPE,
    };
    let h = core::mem::size_of::<libc::cmsghdr>();
    // SAFETY: `buf` holds a cmsghdr (at most 16 bytes) and is not aliased; unaligned write.
    unsafe { core::ptr::write_unaligned(buf.as_mut_ptr().cast::<libc::cmsghdr>(), hdr) };
    buf[h] = ty;
    let n = space.min(controllen).min(buf.len());
    // SAFETY: the caller's contract: `control` is writable for `controllen >= n` bytes.
    unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), control.cast::<u8>(), n) };
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTRL: fn(u8) -> u32 = |t| TlsRx::Control(t).pack();

    #[test]
    fn data_merges_and_stops_where_the_type_changes() {
        let data = TlsRx::Data.pack();
        assert_eq!(
            verdict(data, 100, 40, None, false),
            Verdict::Take {
                ty: 23,
                n: 40,
                last: false
            }
        );
        assert_eq!(
            verdict(data, 10, 40, Some(23), true),
            Verdict::Take {
                ty: 23,
                n: 10,
                last: false
            }
        );
        assert_eq!(verdict(data, 0, 40, None, true), Verdict::Empty);
        // Data after a control record in the same read: never.
        assert_eq!(verdict(data, 10, 40, Some(21), true), Verdict::Stop);
    }

    #[test]
    fn a_control_record_comes_alone_and_only_with_room_for_its_type() {
        assert_eq!(
            verdict(CTRL(21), 2, 100, None, true),
            Verdict::Take {
                ty: 21,
                n: 2,
                last: true
            }
        );
        // Partly, into a short buffer: the rest comes with the next read.
        assert_eq!(
            verdict(CTRL(22), 200, 50, None, true),
            Verdict::Take {
                ty: 22,
                n: 50,
                last: true
            }
        );
        // read()/recv(): EIO, and the record stays.
        assert_eq!(
            verdict(CTRL(21), 2, 100, None, false),
            Verdict::Fail(libc::EIO)
        );
        // After data: the read returns the data.
        assert_eq!(verdict(CTRL(21), 2, 100, Some(23), false), Verdict::Stop);
        // The word came before the bytes: nothing yet.
        assert_eq!(verdict(CTRL(21), 0, 100, None, false), Verdict::Empty);
    }

    #[test]
    fn errors_come_after_the_plaintext_and_stay() {
        let e = TlsRx::Error(libc::EBADMSG as u16).pack();
        assert_eq!(verdict(e, 0, 10, Some(23), true), Verdict::Stop);
        for _ in 0..3 {
            assert_eq!(verdict(e, 0, 10, None, true), Verdict::Fail(libc::EBADMSG));
        }
        assert!(failed(e));
        assert!(!failed(CTRL(21)) && !failed(0));
        assert!(control(CTRL(21)) && !control(e) && !control(0));
    }

    #[test]
    fn the_control_message_is_linuxs() {
        // SAFETY: arithmetic.
        let (len, space) = unsafe { (libc::CMSG_LEN(1) as usize, libc::CMSG_SPACE(1) as usize) };
        assert!(!room(core::ptr::null(), 100));
        let mut b = [0xaau8; 64];
        assert!(!room(b.as_ptr().cast(), len - 1));
        assert!(room(b.as_ptr().cast(), len));
        // SAFETY: `b` is writable for its length.
        let used = unsafe { put_type(b.as_mut_ptr().cast(), b.len(), 21) };
        assert_eq!(used, space);
        // SAFETY: msghdr is plain data; all zeros is a valid (empty) value.
        let mut m: libc::msghdr = unsafe { core::mem::zeroed() };
        m.msg_control = b.as_mut_ptr().cast();
        m.msg_controllen = used as _;
        // SAFETY: `m` describes `b`, which holds the message just written.
        let c = unsafe { libc::CMSG_FIRSTHDR(&m) };
        assert!(!c.is_null());
        // SAFETY: as above.
        let (lvl, ty, clen, data) = unsafe {
            (
                (*c).cmsg_level,
                (*c).cmsg_type,
                (*c).cmsg_len as usize,
                *libc::CMSG_DATA(c),
            )
        };
        assert_eq!(
            (lvl, ty, clen, data),
            (SOL_TLS, TLS_GET_RECORD_TYPE, len, 21)
        );
        // Exactly CMSG_LEN(1) of room: the header and the byte, no padding.
        let mut s = [0xaau8; 24];
        // SAFETY: `s` is writable for its length.
        assert_eq!(unsafe { put_type(s.as_mut_ptr().cast(), len, 22) }, len);
        assert_eq!(s[len], 0xaa);
    }
}
