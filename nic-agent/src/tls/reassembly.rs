//! Records that arrive split: TCP delivers a byte stream, so a record's header, body and tag can
//! be cut anywhere between two reads (or two segments, or the wrap of a ring). `RecordBuf`
//! gathers the bytes of one record, and only of one, in a buffer allocated once per connection
//! (`MAX_RECORD_LEN`, 16 KiB and a bit), then opens it in place.
//!
//! The data path uses it only when it must: when the received bytes hold whole records, the
//! agent opens them where they are (`Opener::open_in_place` / `open_into`) and copies nothing
//! here.
//!
//! ```text
//!   read 1: [ rec A (whole) | rec B ....       ]  -> open A in place; fill(B's start)
//!   read 2: [ .... rec B end | rec C ... ]         -> fill(B's end) -> complete -> open(B)
//! ```

use super::open::{Opener, Peek};
use super::record::{HEADER_LEN, MAX_RECORD_LEN};
use super::Errno;

/// One record's bytes, gathered across reads.
pub struct RecordBuf {
    buf: Box<[u8]>,
    len: usize,
    /// The record's whole length, once its header is in.
    want: Option<usize>,
}

impl Default for RecordBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl RecordBuf {
    pub fn new() -> RecordBuf {
        RecordBuf {
            buf: vec![0; MAX_RECORD_LEN].into_boxed_slice(),
            len: 0,
            want: None,
        }
    }

    /// Bytes gathered so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A whole record is gathered: `open` it.
    pub fn is_complete(&self) -> bool {
        self.want == Some(self.len)
    }

    /// Takes bytes from the start of `input`, up to the end of the record being gathered, and
    /// returns how many it took (0 once the record is complete). The header is checked as soon
    /// as it is in (`Opener::peek`'s errors).
    pub fn fill(&mut self, opener: &mut Opener, input: &[u8]) -> Result<usize, Errno> {
        let mut taken = 0;
        loop {
            let want = self.want.unwrap_or(HEADER_LEN);
            let n = (want - self.len).min(input.len() - taken);
            self.buf[self.len..self.len + n].copy_from_slice(&input[taken..taken + n]);
            self.len += n;
            taken += n;
            if self.want.is_some() || self.len < HEADER_LEN {
                return Ok(taken);
            }
            // The header is in: learn the record's length, then take its body.
            match opener.peek(&self.buf[..self.len])? {
                Peek::Record { len } => self.want = Some(len),
                Peek::Incomplete { need } => self.want = Some(self.len + need),
            }
        }
    }

    /// Opens the complete record (`EAGAIN` if it is not) and empties the buffer for the next
    /// one; returns its content type and plaintext.
    pub fn open(&mut self, opener: &mut Opener) -> Result<(u8, &[u8]), Errno> {
        if !self.is_complete() {
            return Err(libc::EAGAIN);
        }
        let len = self.len;
        self.len = 0;
        self.want = None;
        let o = opener.open_in_place(&mut self.buf[..len])?;
        Ok((o.content_type, &self.buf[o.plaintext]))
    }
}

impl std::fmt::Debug for RecordBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBuf")
            .field("len", &self.len)
            .field("want", &self.want)
            .finish_non_exhaustive()
    }
}
