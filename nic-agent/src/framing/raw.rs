//! Raw framing: no structure. Whatever bytes are present form one message, at most
//! `max_message` of them, so a part is never needed and nothing is ever malformed.

use super::Step;

/// `limit` is `min(available, max_message)`.
pub(super) fn advance(limit: usize) -> Step {
    if limit == 0 {
        Step::Need
    } else {
        Step::End(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Framer, Framing, Scan};

    #[test]
    fn everything_present_is_a_message() {
        let mut f = Framer::new(Framing::Raw, 32);
        assert_eq!(f.scan(b"", b""), Scan::Need);
        assert_eq!(f.scan(b"abc", b"de"), Scan::Message(5));
        f.consume(5);
        assert_eq!(f.scan(&[7; 40], b""), Scan::Message(32));
        f.consume(32);
        assert_eq!(f.scan(&[7; 8], b""), Scan::Message(8));
    }

    #[test]
    fn bytes_come_back_in_order_however_split() {
        let data: Vec<u8> = (0..=255).collect();
        for max in [16, 17, 100, 1000] {
            for chunk in [1, 3, 16, 255] {
                let chunks: Vec<&[u8]> = data.chunks(chunk).collect();
                let ev = feed(
                    Framing::Raw,
                    max,
                    &chunks,
                    Split::Random(chunk as u64),
                    false,
                );
                let mut got = Vec::new();
                for e in ev {
                    match e {
                        Ev::Msg(m) => {
                            assert!(!m.is_empty() && m.len() <= max.max(16));
                            got.extend(m);
                        }
                        other => panic!("{other:?}"),
                    }
                }
                assert_eq!(got, data);
            }
        }
    }
}
