//! Length-prefixed framing: a `u16` or `u32` length, big or little endian, then the payload.
//!
//! ```text
//!   [ len (2 or 4 bytes) ][ payload ............ ]    message = header + payload
//! ```
//!
//! By default the length counts the payload only; with `includes_header` it counts the header too
//! and a length smaller than the header is `length_too_small`. A payload over
//! [`LENGTH_HARD_LIMIT`] (1 GiB) is `length_too_large`; a zero-length payload is a message of just
//! the header. Payload bytes are never read: once the header is parsed the end is arithmetic.

use super::input::Input;
use super::{LengthWidth, Reason, Step, LENGTH_HARD_LIMIT};

#[derive(Debug)]
pub(super) struct LengthFramer {
    width: usize,
    big_endian: bool,
    includes_header: bool,
    /// Bytes of the current message from the front, once its header has been read.
    left: Option<usize>,
}

impl LengthFramer {
    pub(super) fn new(width: LengthWidth, big_endian: bool, includes_header: bool) -> Self {
        LengthFramer {
            width: width.bytes(),
            big_endian,
            includes_header,
            left: None,
        }
    }

    pub(super) fn advance(&mut self, input: &Input<'_>, limit: usize) -> Step {
        let total = match self.left {
            Some(t) => t,
            None => match self.header(input) {
                Ok(Some(t)) => {
                    self.left = Some(t);
                    t
                }
                Ok(None) => return Step::Need,
                Err(r) => return Step::Bad(r),
            },
        };
        if total <= limit {
            Step::End(total)
        } else {
            Step::Need
        }
    }

    /// The whole message's length from its header, if the header is all there.
    fn header(&self, input: &Input<'_>) -> Result<Option<usize>, Reason> {
        let mut v: u64 = 0;
        for i in 0..self.width {
            let Some(byte) = input.get(i) else {
                return Ok(None);
            };
            if self.big_endian {
                v = (v << 8) | u64::from(byte);
            } else {
                v |= u64::from(byte) << (8 * i);
            }
        }
        let width = self.width as u64;
        let payload = if self.includes_header {
            v.checked_sub(width).ok_or(Reason::LengthTooSmall)?
        } else {
            v
        };
        if payload > LENGTH_HARD_LIMIT {
            return Err(Reason::LengthTooLarge);
        }
        // payload + width <= 1 GiB + 4 fits in usize on every target we build for.
        usize::try_from(payload + width)
            .map(Some)
            .map_err(|_| Reason::LengthTooLarge)
    }

    pub(super) fn consume(&mut self, n: usize) -> bool {
        match self.left {
            Some(t) if n < t => {
                self.left = Some(t - n);
                false
            }
            _ => {
                self.left = None;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Framer, Framing, LengthWidth, Reason, Scan};

    fn framing(width: LengthWidth, big_endian: bool, includes_header: bool) -> Framing {
        Framing::Length {
            width,
            big_endian,
            includes_header,
        }
    }

    /// A message: header then payload.
    fn msg(width: LengthWidth, big_endian: bool, includes_header: bool, payload: &[u8]) -> Vec<u8> {
        let n = payload.len() + if includes_header { width.bytes() } else { 0 };
        let mut m = match (width, big_endian) {
            (LengthWidth::U16, true) => (n as u16).to_be_bytes().to_vec(),
            (LengthWidth::U16, false) => (n as u16).to_le_bytes().to_vec(),
            (LengthWidth::U32, true) => (n as u32).to_be_bytes().to_vec(),
            (LengthWidth::U32, false) => (n as u32).to_le_bytes().to_vec(),
        };
        m.extend_from_slice(payload);
        m
    }

    const ALL: [(LengthWidth, bool, bool); 8] = [
        (LengthWidth::U16, true, false),
        (LengthWidth::U16, false, false),
        (LengthWidth::U32, true, false),
        (LengthWidth::U32, false, false),
        (LengthWidth::U16, true, true),
        (LengthWidth::U16, false, true),
        (LengthWidth::U32, true, true),
        (LengthWidth::U32, false, true),
    ];

    #[test]
    fn reads_each_width_and_byte_order() {
        let mut f = Framer::new(framing(LengthWidth::U16, true, false), 64);
        assert_eq!(f.scan(&[0, 3, b'a'], b"bc"), Scan::Message(5));
        let mut f = Framer::new(framing(LengthWidth::U16, false, false), 64);
        assert_eq!(f.scan(&[3, 0, b'a', b'b', b'c'], b""), Scan::Message(5));
        let mut f = Framer::new(framing(LengthWidth::U32, true, false), 64);
        assert_eq!(f.scan(&[0, 0, 0, 1, b'a'], b""), Scan::Message(5));
        let mut f = Framer::new(framing(LengthWidth::U32, false, false), 64);
        assert_eq!(f.scan(&[1, 0], &[0, 0, b'a']), Scan::Message(5));
        let mut f = Framer::new(framing(LengthWidth::U32, false, true), 64);
        assert_eq!(f.scan(&[5, 0, 0, 0, b'a'], b""), Scan::Message(5));
        // An empty payload is a message of just the header.
        let mut f = Framer::new(framing(LengthWidth::U16, true, false), 64);
        assert_eq!(f.scan(&[0, 0, 9], b""), Scan::Message(2));
        let mut f = Framer::new(framing(LengthWidth::U16, true, true), 64);
        assert_eq!(f.scan(&[0, 2, 9], b""), Scan::Message(2));
    }

    #[test]
    fn samples_every_way() {
        for (w, be, inc) in ALL {
            let mut stream = Vec::new();
            let mut expected = Vec::new();
            for p in [&b""[..], b"x", b"hello", &[0u8; 300][..], &[0xff; 17][..]] {
                let m = msg(w, be, inc, p);
                expected.push(Ev::Msg(m.clone()));
                stream.extend(m);
            }
            check_every_way(framing(w, be, inc), 1 << 20, &stream, &expected);
        }
    }

    #[test]
    fn oversized_messages_come_in_parts() {
        let f = framing(LengthWidth::U32, true, false);
        let m = msg(LengthWidth::U32, true, false, &[b'z'; 100]);
        let mut stream = m.clone();
        stream.extend(msg(LengthWidth::U32, true, false, b"tail"));
        let expected = vec![
            Ev::Part(m[..40].to_vec()),
            Ev::Part(m[40..80].to_vec()),
            Ev::Msg(m[80..].to_vec()),
            Ev::Msg(msg(LengthWidth::U32, true, false, b"tail")),
        ];
        check_every_way(f, 40, &stream, &expected);
        // A part as soon as max_message bytes of an oversized message are there, not later.
        let mut fr = Framer::new(f, 40);
        assert_eq!(fr.scan(&m[..39], b""), Scan::Need);
        assert_eq!(fr.scan(&m[..20], &m[20..40]), Scan::Part(40));
        fr.consume(40);
        assert_eq!(fr.delivered(), 40);
        assert_eq!(fr.scan(&m[40..80], b""), Scan::Part(40));
        fr.consume(40);
        assert_eq!(fr.scan(&m[80..], b""), Scan::Message(24));
        fr.consume(24);
        assert_eq!(fr.delivered(), 0);
        // Exactly max: whole.
        let m = msg(LengthWidth::U32, true, false, &[1; 36]);
        check_every_way(f, 40, &m, &[Ev::Msg(m.clone())]);
    }

    #[test]
    fn malformed_lengths() {
        let mut f = Framer::new(framing(LengthWidth::U32, true, false), 64);
        assert_eq!(
            f.scan(&[0x40, 0, 0, 0], b""),
            Scan::Need,
            "exactly 1 GiB is allowed"
        );
        let mut f = Framer::new(framing(LengthWidth::U32, true, false), 64);
        assert_eq!(
            f.scan(&[0x40, 0, 0, 1], b""),
            Scan::Malformed(Reason::LengthTooLarge)
        );
        assert_eq!(
            f.scan(b"", b""),
            Scan::Malformed(Reason::LengthTooLarge),
            "sticky"
        );
        let mut f = Framer::new(framing(LengthWidth::U32, true, true), 64);
        assert_eq!(
            f.scan(&[0, 0, 0, 3], b""),
            Scan::Malformed(Reason::LengthTooSmall)
        );
        let mut f = Framer::new(framing(LengthWidth::U16, false, true), 64);
        assert_eq!(f.scan(&[1], &[0]), Scan::Malformed(Reason::LengthTooSmall));
        let mut f = Framer::new(framing(LengthWidth::U16, false, false), 64);
        assert_eq!(f.scan(&[5, 0, 1], b""), Scan::Need);
        f.finish();
        assert_eq!(f.scan(&[5, 0, 1], b""), Scan::Malformed(Reason::Truncated));
        // The reasons also hold byte by byte.
        let bad = [0u8, 0, 0, 2];
        let chunks: Vec<&[u8]> = bad.chunks(1).collect();
        let ev = feed(
            framing(LengthWidth::U32, true, true),
            64,
            &chunks,
            Split::Mid,
            false,
        );
        assert_eq!(ev, vec![Ev::Bad(Reason::LengthTooSmall)]);
    }

    #[test]
    fn random_streams_frame_back_exactly() {
        for (w, be, inc) in ALL {
            let mut rng = Rng(0x5eed ^ w.bytes() as u64 ^ ((be as u64) << 8) ^ ((inc as u64) << 9));
            for _ in 0..40 {
                let mut stream = Vec::new();
                let mut msgs = Vec::new();
                for _ in 0..rng.below(8) {
                    let len = if rng.below(4) == 0 {
                        rng.below(3000)
                    } else {
                        rng.below(40)
                    };
                    let p: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    let m = msg(w, be, inc, &p);
                    stream.extend_from_slice(&m);
                    msgs.push(m);
                }
                let max = 16 + rng.below(200) as usize;
                check_random(&mut rng, framing(w, be, inc), max, &stream, &msgs);
            }
        }
    }
}
