//! kTLS on the NIC (issue 13, item 1): the record layer the agent runs for a socket whose host
//! program handed it TLS keys with `setsockopt(SOL_TLS, TLS_TX / TLS_RX, ..)`, as Linux's kTLS
//! would. Design and status: docs/tls.md.
//!
//! Sans-IO: nothing here reads a clock, makes a system call or allocates per record. The caller
//! hands in the buffers; a record is sealed in place where its plaintext already sits (a frame,
//! a ring), and opened in place or into the caller's buffer.
//!
//! ```text
//!  setsockopt(SOL_TLS, TLS_TX, info)      TX stream bytes          received bytes
//!            |                                   |                         |
//!     uapi::parse_crypto_info              Sealer::seal_in_place     RecordBuf::fill (splits)
//!            |                                   |                   Opener::peek / open_*
//!      sockopt::Ktls  ---- owns ---->  Sealer (TX)   Opener (RX)           |
//!            |                                   |                         v
//!   getsockopt: info with the           TLS records to the        (content type, plaintext)
//!   current record sequence             backend send              to the RX stream
//! ```
//!
//! Modules: `uapi` (Linux's constants and `struct tls12_crypto_info_*`), `record` (wire format,
//! limits, per-suite layout), `cipher` (one direction's AEAD key, nonces and sequence number),
//! `seal` (TX), `open` (RX), `reassembly` (records split across reads), `sockopt` (one socket's
//! `SOL_TLS` options and `TCP_ULP`). Errors are the errno Linux gives (`Errno`), since they go
//! back to the host program as they are.

// TX and RX are on the data path (ktls.rs, ktls_rx.rs); parts of the API (`RecordBuf`, which
// the RX pump does not need: it gathers records in its own buffer) are used by the tests only.
#![allow(dead_code, unused_imports)]

mod cipher;
pub mod open;
pub mod reassembly;
pub mod record;
pub mod seal;
pub mod sockopt;
pub mod terminate;
pub mod uapi;

#[cfg(test)]
mod kat;

pub use open::{Opened, Opener, Peek};
pub use reassembly::RecordBuf;
pub use seal::Sealer;
pub use sockopt::Ktls;
pub use uapi::{Cipher, CryptoInfo, Version};

/// A positive errno value (`libc::EINVAL`, ...), as the rest of the agent answers socket calls.
pub type Errno = i32;

/// Overwrites key material before its memory is given back.
///
/// No crate and no `unsafe`: the stores are followed by `black_box`, which the compiler must
/// treat as reading the buffer, so they are not removed as dead (best effort, as the standard
/// library documents for `black_box`; good enough against the optimiser, which is the threat
/// here, not against a debugger).
pub(crate) fn wipe(buf: &mut [u8]) {
    buf.fill(0);
    std::hint::black_box(&*buf);
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}
