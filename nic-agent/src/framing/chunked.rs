//! The chunked transfer coding (RFC 9112 7.1), as a body parser inside an HTTP/1.1 message.
//!
//! ```text
//!   chunk-size [ BWS ";" ext... ] CRLF  chunk-data CRLF   ...   0 [ext] CRLF  trailers  CRLF
//! ```
//!
//! Accepted: hex sizes of any case with leading zeros, whitespace after the size, extensions
//! after `;` made of visible bytes, SP and HTAB (not parsed further), and a trailer section of
//! field lines (RFC 9112 7.1.2) ended by an empty line. Rejected: a size that is not hex, is
//! missing, exceeds 2^60 or is not ended by CRLF (`bad_chunk_size`; a bare LF counts, because
//! chunk lines are where front ends and back ends disagree); a control byte in an extension
//! (`bad_chunk_ext`); more than [`HTTP_CHUNK_EXT_LIMIT`] extension bytes in one body
//! (`chunk_ext_too_long`, RFC 9112 7.1.1); data not followed by CRLF (`bad_chunk_end`); trailer
//! lines as the header section would reject them (`bad_header`), or longer in all than
//! [`HTTP_HEAD_LIMIT`] (`header_too_long`). Chunk data is skipped, never read.

use super::http1_fields::{FieldLines, FieldStep};
use super::input::Input;
use super::{is_vchar_or_obs, Reason, HTTP_CHUNK_EXT_LIMIT, HTTP_HEAD_LIMIT};

/// Largest chunk size accepted.
const CHUNK_SIZE_LIMIT: u64 = 1 << 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    /// In the hex digits; `digits` says whether one was read.
    Size {
        digits: bool,
    },
    /// Whitespace after the size.
    SizeWs,
    Ext,
    SizeLf,
    /// In chunk data; `left` bytes to go.
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    Trailers,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ChunkStep {
    /// The window ran out inside the body.
    Need,
    /// The body ended at the position reached.
    Done,
    Bad(Reason),
}

#[derive(Debug)]
pub(super) struct Chunked {
    st: St,
    size: u64,
    ext_len: usize,
    trailer_len: usize,
    trailers: FieldLines,
}

impl Chunked {
    pub(super) fn new() -> Self {
        Chunked {
            st: St::Size { digits: false },
            size: 0,
            ext_len: 0,
            trailer_len: 0,
            trailers: FieldLines::new(false),
        }
    }

    /// Parses `[*pos, limit)`, moving `*pos` past what it read.
    pub(super) fn advance(
        &mut self,
        input: &Input<'_>,
        pos: &mut usize,
        limit: usize,
    ) -> ChunkStep {
        while *pos < limit {
            if let St::Data { left } = self.st {
                let take = left.min((limit - *pos) as u64);
                *pos += take as usize;
                self.st = if take == left {
                    St::DataCr
                } else {
                    St::Data { left: left - take }
                };
                continue;
            }
            let Some(b) = input.get(*pos) else {
                return ChunkStep::Need;
            };
            *pos += 1;
            match self.byte(b) {
                Ok(false) => {}
                Ok(true) => return ChunkStep::Done,
                Err(r) => return ChunkStep::Bad(r),
            }
        }
        ChunkStep::Need
    }

    fn byte(&mut self, b: u8) -> Result<bool, Reason> {
        match self.st {
            St::Size { digits } => match b {
                _ if b.is_ascii_hexdigit() => {
                    let d = match b {
                        b'0'..=b'9' => b - b'0',
                        _ => (b | 0x20) - b'a' + 10,
                    };
                    self.size = self
                        .size
                        .checked_mul(16)
                        .map(|v| v + u64::from(d))
                        .filter(|&v| v <= CHUNK_SIZE_LIMIT)
                        .ok_or(Reason::BadChunkSize)?;
                    self.st = St::Size { digits: true };
                }
                _ if !digits => return Err(Reason::BadChunkSize),
                b' ' | b'\t' => self.st = St::SizeWs,
                b';' => self.st = St::Ext,
                b'\r' => self.st = St::SizeLf,
                _ => return Err(Reason::BadChunkSize),
            },
            St::SizeWs => match b {
                b' ' | b'\t' => {}
                b';' => self.st = St::Ext,
                b'\r' => self.st = St::SizeLf,
                _ => return Err(Reason::BadChunkSize),
            },
            St::Ext => {
                self.ext_len += 1;
                if self.ext_len > HTTP_CHUNK_EXT_LIMIT {
                    return Err(Reason::ChunkExtTooLong);
                }
                match b {
                    b'\r' => self.st = St::SizeLf,
                    b'\n' => return Err(Reason::BadChunkSize),
                    b' ' | b'\t' => {}
                    _ if is_vchar_or_obs(b) => {}
                    _ => return Err(Reason::BadChunkExt),
                }
            }
            St::SizeLf => match b {
                b'\n' if self.size == 0 => self.st = St::Trailers,
                b'\n' => {
                    self.st = St::Data { left: self.size };
                    self.size = 0;
                }
                _ => return Err(Reason::BadChunkSize),
            },
            St::DataCr => match b {
                b'\r' => self.st = St::DataLf,
                _ => return Err(Reason::BadChunkEnd),
            },
            St::DataLf => match b {
                b'\n' => self.st = St::Size { digits: false },
                _ => return Err(Reason::BadChunkEnd),
            },
            St::Trailers => {
                self.trailer_len += 1;
                if self.trailer_len > HTTP_HEAD_LIMIT {
                    return Err(Reason::HeaderTooLong);
                }
                match self.trailers.feed(b) {
                    FieldStep::More => {}
                    FieldStep::Done => return Ok(true),
                    FieldStep::Bad(r) => return Err(r),
                }
            }
            // Handled in `advance`.
            St::Data { .. } => {}
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body's length if it ends within `body`, fed in pieces of `piece` bytes.
    fn run(body: &[u8], piece: usize) -> Result<Option<usize>, Reason> {
        let mut c = Chunked::new();
        let mut pos = 0;
        let mut limit = 0;
        while limit < body.len() {
            limit = (limit + piece).min(body.len());
            match c.advance(&Input::new(body, b""), &mut pos, limit) {
                ChunkStep::Need => assert_eq!(pos, limit),
                ChunkStep::Done => return Ok(Some(pos)),
                ChunkStep::Bad(r) => return Err(r),
            }
        }
        Ok(None)
    }

    #[test]
    fn bodies() {
        for body in [
            &b"0\r\n\r\n"[..],
            b"5\r\nhello\r\n0\r\n\r\n",
            b"5;name=val;x=\"q s\"\r\nhello\r\nA \r\n0123456789\r\n000\r\nT: v\r\nU:w\r\n\r\n",
            b"1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\n",
            b"0 ; ext\r\n\r\n",
        ] {
            for piece in [1, 2, 3, body.len()] {
                assert_eq!(
                    run(body, piece),
                    Ok(Some(body.len())),
                    "{body:?} by {piece}"
                );
                let mut more = body.to_vec();
                more.extend_from_slice(b"GET /");
                assert_eq!(
                    run(&more, piece),
                    Ok(Some(body.len())),
                    "{body:?} by {piece}"
                );
            }
        }
        assert_eq!(run(b"5\r\nhel", 1), Ok(None));
    }

    #[test]
    fn malformed() {
        for (body, r) in [
            (&b"\r\n"[..], Reason::BadChunkSize),
            (b"g\r\n", Reason::BadChunkSize),
            (b"-1\r\n", Reason::BadChunkSize),
            (b"5\n", Reason::BadChunkSize),
            (b"5 5\r\n", Reason::BadChunkSize),
            (b"5\rx", Reason::BadChunkSize),
            (b"5;a\n", Reason::BadChunkSize),
            (b"ffffffffffffffffff\r\n", Reason::BadChunkSize),
            (b"5;a\x01\r\n", Reason::BadChunkExt),
            (b"5\r\nhelloX\r\n", Reason::BadChunkEnd),
            (b"5\r\nhello\rX", Reason::BadChunkEnd),
            (b"5\r\nhello\n0\r\n\r\n", Reason::BadChunkEnd),
            (b"5\r\nhelloX\n0\r\n\r\n", Reason::BadChunkEnd),
            (b"0\r\nbad trailer\r\n\r\n", Reason::BadHeader),
            (b"0\r\n folded\r\n\r\n", Reason::BadHeader),
        ] {
            for piece in [1, body.len()] {
                assert_eq!(run(body, piece), Err(r), "{body:?}");
            }
        }
        let mut long_ext = b"1;".to_vec();
        long_ext.extend(std::iter::repeat(b'x').take(HTTP_CHUNK_EXT_LIMIT + 1));
        assert_eq!(run(&long_ext, 4096), Err(Reason::ChunkExtTooLong));
        let mut long_trailer = b"0\r\nX: ".to_vec();
        long_trailer.extend(std::iter::repeat(b'x').take(HTTP_HEAD_LIMIT));
        assert_eq!(run(&long_trailer, 4096), Err(Reason::HeaderTooLong));
    }
}
