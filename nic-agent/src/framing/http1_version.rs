//! The HTTP-version of a start line (RFC 9112 2.3): `HTTP/` DIGIT `.` DIGIT, case-sensitive.

use super::Reason;

#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Version {
    /// Bytes read so far.
    i: u8,
    minor: u8,
}

const NAME: &[u8] = b"HTTP/";

impl Version {
    /// Reads one byte of the version; true once it is complete (8 bytes). `syntax` is the reason
    /// for bytes that cannot be a version; a well-formed version other than 1.x is `bad_version`.
    pub(super) fn feed(&mut self, b: u8, syntax: Reason) -> Result<bool, Reason> {
        let i = usize::from(self.i);
        let ok = match i {
            0..=4 => NAME.get(i) == Some(&b),
            5 | 7 => b.is_ascii_digit(),
            6 => b == b'.',
            _ => false,
        };
        if !ok {
            return Err(syntax);
        }
        if i == 5 && b != b'1' {
            return Err(Reason::BadVersion);
        }
        if i == 7 {
            self.minor = b - b'0';
        }
        self.i += 1;
        Ok(self.i == 8)
    }

    /// HTTP/1.0 (no chunked coding, RFC 9112 6.1).
    pub(super) fn is_1_0(&self) -> bool {
        self.minor == 0
    }
}
