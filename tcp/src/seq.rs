//! TCP sequence numbers: 32-bit, compared modulo 2^32 (RFC 9293 section 3.4). `a < b` means `b`
//! is less than 2^31 ahead of `a`; the comparison is only meaningful inside one window.

use core::cmp::Ordering;
use core::fmt;
use core::ops::{Add, AddAssign, Sub};

#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Seq(pub u32);

impl Seq {
    /// The later of two sequence numbers.
    pub fn max(self, o: Seq) -> Seq {
        if self < o {
            o
        } else {
            self
        }
    }

    /// The earlier of two sequence numbers.
    pub fn min(self, o: Seq) -> Seq {
        if self < o {
            self
        } else {
            o
        }
    }

    /// Bytes from `self` to `later` (0 when `later` is not after `self`).
    pub fn dist(self, later: Seq) -> u32 {
        let d = later - self;
        if d > 0 {
            d as u32
        } else {
            0
        }
    }
}

impl fmt::Debug for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Add<u32> for Seq {
    type Output = Seq;
    fn add(self, n: u32) -> Seq {
        Seq(self.0.wrapping_add(n))
    }
}

impl AddAssign<u32> for Seq {
    fn add_assign(&mut self, n: u32) {
        self.0 = self.0.wrapping_add(n);
    }
}

impl Sub<u32> for Seq {
    type Output = Seq;
    fn sub(self, n: u32) -> Seq {
        Seq(self.0.wrapping_sub(n))
    }
}

/// Signed distance `self - o` (positive when `self` is after `o`).
impl Sub<Seq> for Seq {
    type Output = i32;
    fn sub(self, o: Seq) -> i32 {
        self.0.wrapping_sub(o.0) as i32
    }
}

impl PartialOrd for Seq {
    fn partial_cmp(&self, o: &Seq) -> Option<Ordering> {
        Some((*self - *o).cmp(&0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps() {
        let a = Seq(u32::MAX - 10);
        let b = a + 20;
        assert_eq!(b, Seq(9));
        assert!(a < b);
        assert!(b > a);
        assert_eq!(b - a, 20);
        assert_eq!(a - b, -20);
        assert_eq!(a.dist(b), 20);
        assert_eq!(b.dist(a), 0);
        assert_eq!(a.max(b), b);
        assert_eq!(a.min(b), a);
    }
}
