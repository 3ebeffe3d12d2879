//! The unconsumed input as one logical byte string held in up to two slices: a ring's bytes
//! before its wrap (`a`) and after it (`b`). Every accessor clamps, so no index panics.

#[derive(Clone, Copy, Debug)]
pub(super) struct Input<'a> {
    a: &'a [u8],
    b: &'a [u8],
}

impl<'a> Input<'a> {
    pub(super) fn new(a: &'a [u8], b: &'a [u8]) -> Input<'a> {
        Input { a, b }
    }

    pub(super) fn len(&self) -> usize {
        self.a.len() + self.b.len()
    }

    /// The byte at `i`, if there is one.
    pub(super) fn get(&self, i: usize) -> Option<u8> {
        match self.a.get(i) {
            Some(&x) => Some(x),
            None => self.b.get(i - self.a.len()).copied(),
        }
    }

    /// The bytes in `[start, end)` (clamped to the input) as two slices, in order.
    pub(super) fn range(&self, start: usize, end: usize) -> (&'a [u8], &'a [u8]) {
        let end = end.min(self.len());
        let start = start.min(end);
        let split = self.a.len();
        let a = self.a.get(start.min(split)..end.min(split)).unwrap_or(&[]);
        let b = self
            .b
            .get(start.saturating_sub(split)..end.saturating_sub(split))
            .unwrap_or(&[]);
        (a, b)
    }

    /// Offset of the first `byte` in `[start, end)`.
    pub(super) fn find(&self, byte: u8, start: usize, end: usize) -> Option<usize> {
        let (x, y) = self.range(start, end);
        match x.iter().position(|&c| c == byte) {
            Some(i) => Some(start + i),
            None => y
                .iter()
                .position(|&c| c == byte)
                .map(|i| start + x.len() + i),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_and_find_across_the_wrap() {
        let i = Input::new(b"abc", b"def");
        assert_eq!(i.len(), 6);
        assert_eq!(i.get(2), Some(b'c'));
        assert_eq!(i.get(3), Some(b'd'));
        assert_eq!(i.get(6), None);
        assert_eq!(i.range(1, 5), (&b"bc"[..], &b"de"[..]));
        assert_eq!(i.range(4, 99), (&b""[..], &b"ef"[..]));
        assert_eq!(i.range(5, 2), (&b""[..], &b""[..]));
        assert_eq!(i.range(0, 2), (&b"ab"[..], &b""[..]));
        assert_eq!(i.find(b'e', 0, 6), Some(4));
        assert_eq!(i.find(b'e', 0, 4), None);
        assert_eq!(i.find(b'b', 1, 6), Some(1));
        assert_eq!(i.find(b'b', 2, 6), None);
    }
}
