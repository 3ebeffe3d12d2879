//! HTTP/1.1 field lines (RFC 9112 5), byte by byte: the header section after the start line, and
//! the trailer section after a chunked body. Ends at the empty line.
//!
//! Accepted: `name ":" OWS value OWS` ending in CRLF, or a bare LF (RFC 9112 2.2 lets a recipient
//! take LF as the terminator). Names are tokens, matched without regard to case. Rejected
//! (`bad_header`): an empty name, whitespace or any non-token byte before the colon (RFC 9112
//! 5.1), a line starting with whitespace (obs-fold, RFC 9112 5.2: we reject it), a control byte
//! other than HTAB in a value (RFC 9110 5.5), and a CR not followed by LF.
//!
//! For the header section (`framing: true`) it also reads the two fields that decide where the
//! body ends (RFC 9112 6.3):
//! - Content-Length: a comma-separated list of decimal numbers, over any number of lines, that
//!   must all be equal (RFC 9110 8.6); anything else is `bad_content_length`, unequal values
//!   `conflicting_content_length`.
//! - Transfer-Encoding: a list of transfer codings over any number of lines; it records whether
//!   the last one is exactly `chunked` and how many `chunked` there were. Coding names are
//!   tokens; parameters after `;` are not checked. A stray byte is `bad_transfer_encoding`.

use super::{is_tchar, is_vchar_or_obs, Reason};

const CONTENT_LENGTH: &[u8] = b"content-length";
const TRANSFER_ENCODING: &[u8] = b"transfer-encoding";
const CHUNKED: &[u8] = b"chunked";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    LineStart,
    /// A CR at the start of a line: the section ends if LF follows.
    EndCr,
    Name,
    Value,
    ValueCr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Other,
    ContentLength,
    TransferEncoding,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TeElem {
    /// Before the coding's name (leading OWS or an empty list element).
    Before,
    Name,
    /// Whitespace after the name.
    After,
    /// After `;`: parameters, not checked.
    Params,
}

/// What a byte did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FieldStep {
    More,
    /// The empty line: the section is over.
    Done,
    Bad(Reason),
}

#[derive(Debug)]
pub(super) struct FieldLines {
    framing: bool,
    st: St,
    name_len: usize,
    maybe_cl: bool,
    maybe_te: bool,
    field: Field,
    /// The Content-Length value, once one element has been read.
    pub(super) content_length: Option<u64>,
    cl_elem: Option<u64>,
    cl_space_after: bool,
    pub(super) te_present: bool,
    pub(super) te_chunked_count: u32,
    pub(super) te_last_chunked: bool,
    te_elem: TeElem,
    te_name_len: usize,
    te_is_chunked: bool,
}

impl FieldLines {
    pub(super) fn new(framing: bool) -> Self {
        FieldLines {
            framing,
            st: St::LineStart,
            name_len: 0,
            maybe_cl: false,
            maybe_te: false,
            field: Field::Other,
            content_length: None,
            cl_elem: None,
            cl_space_after: false,
            te_present: false,
            te_chunked_count: 0,
            te_last_chunked: false,
            te_elem: TeElem::Before,
            te_name_len: 0,
            te_is_chunked: false,
        }
    }

    pub(super) fn feed(&mut self, b: u8) -> FieldStep {
        match self.step(b) {
            Ok(true) => FieldStep::Done,
            Ok(false) => FieldStep::More,
            Err(r) => FieldStep::Bad(r),
        }
    }

    fn step(&mut self, b: u8) -> Result<bool, Reason> {
        match self.st {
            St::LineStart => match b {
                b'\r' => self.st = St::EndCr,
                b'\n' => return Ok(true),
                _ if is_tchar(b) => {
                    self.st = St::Name;
                    self.name_len = 0;
                    self.maybe_cl = self.framing;
                    self.maybe_te = self.framing;
                    self.name_byte(b);
                }
                _ => return Err(Reason::BadHeader),
            },
            St::EndCr => match b {
                b'\n' => return Ok(true),
                _ => return Err(Reason::BadHeader),
            },
            St::Name => match b {
                b':' => {
                    self.field = if self.maybe_cl && self.name_len == CONTENT_LENGTH.len() {
                        Field::ContentLength
                    } else if self.maybe_te && self.name_len == TRANSFER_ENCODING.len() {
                        self.te_present = true;
                        Field::TransferEncoding
                    } else {
                        Field::Other
                    };
                    self.st = St::Value;
                }
                _ if is_tchar(b) => self.name_byte(b),
                _ => return Err(Reason::BadHeader),
            },
            St::Value => match b {
                b'\r' => self.st = St::ValueCr,
                b'\n' => self.line_end()?,
                b'\t' | b' ' => self.value_byte(b)?,
                _ if is_vchar_or_obs(b) => self.value_byte(b)?,
                _ => return Err(Reason::BadHeader),
            },
            St::ValueCr => match b {
                b'\n' => self.line_end()?,
                _ => return Err(Reason::BadHeader),
            },
        }
        Ok(false)
    }

    fn name_byte(&mut self, b: u8) {
        let lower = b.to_ascii_lowercase();
        let i = self.name_len;
        self.maybe_cl &= CONTENT_LENGTH.get(i) == Some(&lower);
        self.maybe_te &= TRANSFER_ENCODING.get(i) == Some(&lower);
        self.name_len = i.saturating_add(1);
    }

    fn value_byte(&mut self, b: u8) -> Result<(), Reason> {
        match self.field {
            Field::Other => Ok(()),
            Field::ContentLength => self.cl_byte(b),
            Field::TransferEncoding => self.te_byte(b),
        }
    }

    fn line_end(&mut self) -> Result<(), Reason> {
        match self.field {
            Field::Other => {}
            Field::ContentLength => self.cl_elem_end()?,
            Field::TransferEncoding => self.te_elem_end()?,
        }
        self.field = Field::Other;
        self.st = St::LineStart;
        Ok(())
    }

    fn cl_byte(&mut self, b: u8) -> Result<(), Reason> {
        match b {
            b'0'..=b'9' => {
                if self.cl_space_after {
                    return Err(Reason::BadContentLength);
                }
                let v = self
                    .cl_elem
                    .unwrap_or(0)
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(u64::from(b - b'0')))
                    .filter(|&v| v <= super::http1::CONTENT_LENGTH_LIMIT)
                    .ok_or(Reason::BadContentLength)?;
                self.cl_elem = Some(v);
            }
            b' ' | b'\t' => self.cl_space_after = self.cl_elem.is_some(),
            b',' => self.cl_elem_end()?,
            _ => return Err(Reason::BadContentLength),
        }
        Ok(())
    }

    fn cl_elem_end(&mut self) -> Result<(), Reason> {
        let v = self.cl_elem.take().ok_or(Reason::BadContentLength)?;
        self.cl_space_after = false;
        match self.content_length {
            Some(prev) if prev != v => Err(Reason::ConflictingContentLength),
            _ => {
                self.content_length = Some(v);
                Ok(())
            }
        }
    }

    fn te_byte(&mut self, b: u8) -> Result<(), Reason> {
        match (self.te_elem, b) {
            (_, b',') => self.te_elem_end()?,
            (TeElem::Params, _) => {}
            (TeElem::Name, b' ' | b'\t') => self.te_elem = TeElem::After,
            (TeElem::Before | TeElem::After, b' ' | b'\t') => {}
            (TeElem::Name | TeElem::After, b';') => self.te_elem = TeElem::Params,
            (TeElem::Before, _) if is_tchar(b) => {
                self.te_elem = TeElem::Name;
                self.te_name_len = 0;
                self.te_is_chunked = true;
                self.te_name_byte(b);
            }
            (TeElem::Name, _) if is_tchar(b) => self.te_name_byte(b),
            _ => return Err(Reason::BadTransferEncoding),
        }
        Ok(())
    }

    fn te_name_byte(&mut self, b: u8) {
        let i = self.te_name_len;
        self.te_is_chunked &= CHUNKED.get(i) == Some(&b.to_ascii_lowercase());
        self.te_name_len = i.saturating_add(1);
    }

    fn te_elem_end(&mut self) -> Result<(), Reason> {
        match self.te_elem {
            // An empty list element (RFC 9110 5.6.1 asks recipients to accept them).
            TeElem::Before => {}
            // `chunked` takes no parameters: `chunked;x` is some other coding.
            TeElem::Params => self.te_last_chunked = false,
            TeElem::Name | TeElem::After => {
                let chunked = self.te_is_chunked && self.te_name_len == CHUNKED.len();
                self.te_last_chunked = chunked;
                if chunked {
                    self.te_chunked_count = self.te_chunked_count.saturating_add(1);
                }
            }
        }
        self.te_elem = TeElem::Before;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds a section; the verdict on its last byte, or `More` if no byte gave one earlier.
    fn run(section: &[u8]) -> (FieldStep, FieldLines) {
        let mut f = FieldLines::new(true);
        for (i, &b) in section.iter().enumerate() {
            match f.feed(b) {
                FieldStep::More => {}
                s => {
                    assert!(
                        matches!(s, FieldStep::Bad(_)) || i + 1 == section.len(),
                        "{section:?}"
                    );
                    return (s, f);
                }
            }
        }
        (FieldStep::More, f)
    }

    #[test]
    fn content_length_lists() {
        for (s, v) in [
            (&b"Content-Length: 12\r\n\r\n"[..], 12),
            (b"content-LENGTH:12 \r\n\n", 12),
            (b"Content-Length: 5, 5\r\nContent-Length:5\r\n\r\n", 5),
            (b"Content-Length:\t0\t\r\n\r\n", 0),
        ] {
            let (step, f) = run(s);
            assert_eq!(step, FieldStep::Done, "{s:?}");
            assert_eq!(f.content_length, Some(v));
        }
        for (s, r) in [
            (
                &b"Content-Length: 5, 6\r\n"[..],
                Reason::ConflictingContentLength,
            ),
            (
                b"Content-Length: 5\r\nContent-Length: 6\r\n",
                Reason::ConflictingContentLength,
            ),
            (b"Content-Length: 1 2\r\n", Reason::BadContentLength),
            (b"Content-Length: +1\r\n", Reason::BadContentLength),
            (b"Content-Length: \r\n", Reason::BadContentLength),
            (b"Content-Length: 5,\r\n", Reason::BadContentLength),
            (b"Content-Length: 0x10\r\n", Reason::BadContentLength),
            (
                b"Content-Length: 99999999999999999999999\r\n",
                Reason::BadContentLength,
            ),
        ] {
            assert_eq!(run(s).0, FieldStep::Bad(r), "{s:?}");
        }
        // Other fields that start like it are not it.
        let (step, f) = run(b"Content-Lengths: x\r\nContent-Lengt: y\r\n\r\n");
        assert_eq!((step, f.content_length), (FieldStep::Done, None));
    }

    #[test]
    fn transfer_encoding_lists() {
        for (s, last, count) in [
            (&b"Transfer-Encoding: chunked\r\n\r\n"[..], true, 1),
            (b"TRANSFER-encoding: gzip, Chunked \r\n\r\n", true, 1),
            (
                b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
                true,
                1,
            ),
            (b"Transfer-Encoding: chunked, gzip\r\n\r\n", false, 1),
            (b"Transfer-Encoding: chunked,,\r\n\r\n", true, 1),
            (b"Transfer-Encoding: chunked;x=1\r\n\r\n", false, 0),
            (b"Transfer-Encoding: chunkedx\r\n\r\n", false, 0),
            (b"Transfer-Encoding: chunked, chunked\r\n\r\n", true, 2),
            (b"Transfer-Encoding:\r\n\r\n", false, 0),
        ] {
            let (step, f) = run(s);
            assert_eq!(step, FieldStep::Done, "{s:?}");
            assert!(f.te_present);
            assert_eq!(
                (f.te_last_chunked, f.te_chunked_count),
                (last, count),
                "{s:?}"
            );
        }
        assert_eq!(
            run(b"Transfer-Encoding: chun ked\r\n").0,
            FieldStep::Bad(Reason::BadTransferEncoding)
        );
        assert_eq!(
            run(b"Transfer-Encoding: \"chunked\"\r\n").0,
            FieldStep::Bad(Reason::BadTransferEncoding)
        );
    }

    #[test]
    fn field_syntax() {
        for s in [
            &b"Host : x\r\n"[..],
            b": x\r\n",
            b" folded\r\n",
            b"Host: x\r\n continued\r\n",
            b"Host: a\x00b\r\n",
            b"Host: a\rb\r\n",
            b"Ho(st: x\r\n",
            b"Host x\r\n",
            b"\rX",
        ] {
            assert_eq!(run(s).0, FieldStep::Bad(Reason::BadHeader), "{s:?}");
        }
        for s in [&b"\r\n"[..], b"\n", b"A: \xff\t x \r\nB:\nC:c\r\n\r\n"] {
            assert_eq!(run(s).0, FieldStep::Done, "{s:?}");
        }
        // Trailers do not interpret the framing fields.
        let mut f = FieldLines::new(false);
        for &b in b"Content-Length: nope\r\n" {
            assert_eq!(f.feed(b), FieldStep::More);
        }
    }
}
