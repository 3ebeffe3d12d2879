//! The send buffer: bytes the application handed over that the peer has not acknowledged yet,
//! starting at SND.UNA (RFC 9293 section 3.3.1, "send sequence space"). The engine keeps every
//! unacknowledged byte because any of it may have to be retransmitted (RFC 9293 section 3.8.1,
//! RFC 6298); bytes leave only when cumulatively acknowledged ([`SendBuf::consume`]). SACKed
//! bytes stay too: a SACK is advisory and the receiver may renege (RFC 2018 section 8).
//!
//! Layout: one ring of bytes. Why a ring rather than a deque of chunks: segments are cut at
//! arbitrary offsets (MSS, PMTU changes, TLP, partial retransmissions), and a ring hands out any
//! range as at most two slices without per-chunk bookkeeping.
//!
//! Memory: the engine must hold many idle connections, so [`SendBuf::new`] allocates nothing,
//! the ring grows in powers of two (bounded by the capacity) only when bytes are stored, and
//! [`SendBuf::shrink`] gives memory back (all of it when empty).
//!
//! Lent mode ([`SendBuf::lend`], `crate::source`): the bytes stay in the application's stream;
//! the buffer only counts them and remembers the stream index of SND.UNA, and acknowledged bytes
//! are reported back ([`SendBuf::take_acked`]) so the owner can free them. [`SendBuf::reclaim`]
//! copies what is still unacknowledged into the ring and ends the loan.

/// Smallest ring ever allocated: avoids a string of tiny reallocations for small writes.
const MIN_ALLOC: usize = 64;

/// Ring size for holding `need` bytes when the buffer may hold `cap`: the next power of two
/// (at least [`MIN_ALLOC`]), but never more than `max(cap, need)`.
pub(crate) fn grow_size(need: usize, cap: usize) -> usize {
    let p = need
        .checked_next_power_of_two()
        .unwrap_or(need)
        .max(MIN_ALLOC);
    p.min(cap.max(need))
}

/// Unacknowledged application bytes, as a growable ring.
#[derive(Debug, Default)]
pub struct SendBuf {
    /// The ring; `buf.len()` is its size (0 when nothing is allocated).
    buf: Vec<u8>,
    /// Ring index of the first (oldest, SND.UNA) byte.
    head: usize,
    /// Bytes stored.
    len: usize,
    /// Most bytes the application may store.
    cap: usize,
    /// The bytes live in a lent stream: its index of the first (SND.UNA) byte.
    lent: Option<u32>,
    /// Lent mode: bytes acknowledged since the last [`take_acked`](Self::take_acked).
    acked: u32,
    /// Lent mode: the stream's size (the most that can be outstanding).
    lent_size: usize,
}

impl SendBuf {
    /// An empty buffer that may hold up to `capacity` bytes. Allocates nothing.
    pub fn new(capacity: usize) -> SendBuf {
        SendBuf {
            buf: Vec::new(),
            head: 0,
            len: 0,
            cap: capacity,
            lent: None,
            acked: 0,
            lent_size: 0,
        }
    }

    /// Starts lent mode at stream index `base` (the index the next appended byte has). Only an
    /// empty buffer can be lent; false otherwise.
    pub fn lend(&mut self, base: u32, size: usize) -> bool {
        if self.len != 0 || self.lent.is_some() {
            return false;
        }
        self.lent = Some(base);
        self.lent_size = size;
        self.acked = 0;
        self.buf = Vec::new();
        self.head = 0;
        true
    }

    /// The stream index of byte `offset` (counted from SND.UNA) when the bytes are lent.
    pub fn lent_index(&self, offset: usize) -> Option<u32> {
        self.lent.map(|b| b.wrapping_add(offset as u32))
    }

    pub fn is_lent(&self) -> bool {
        self.lent.is_some()
    }

    /// Lent mode: the stream's size.
    pub fn lent_size(&self) -> Option<usize> {
        self.lent.map(|_| self.lent_size)
    }

    /// Lent mode: `n` more bytes were appended to the stream (as many as [`free`](Self::free)
    /// allows are taken); returns how many.
    pub fn append_lent(&mut self, n: usize) -> usize {
        if self.lent.is_none() {
            return 0;
        }
        let n = n.min(self.free());
        self.len += n;
        n
    }

    /// Lent mode: bytes acknowledged since the last call (the stream's owner frees them).
    pub fn take_acked(&mut self) -> u32 {
        core::mem::take(&mut self.acked)
    }

    /// Lent mode: acknowledged bytes wait to be taken.
    pub fn has_acked(&self) -> bool {
        self.acked != 0
    }

    /// Ends lent mode: `a` then `b` are the bytes still unacknowledged (all [`len`](Self::len)
    /// of them, read from the stream by the caller), now copied into the ring. Returns the
    /// acknowledged count not yet taken (the owner frees those too).
    pub fn reclaim(&mut self, a: &[u8], b: &[u8]) -> u32 {
        debug_assert_eq!(a.len() + b.len(), self.len);
        let acked = self.take_acked();
        if self.lent.take().is_none() {
            return acked;
        }
        let n = self.len;
        self.len = 0;
        self.cap = self.cap.max(n);
        let k = a.len().min(n);
        self.write(&a[..k]);
        self.write(&b[..b.len().min(n - k)]);
        acked
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Changes the capacity. Below [`len`](Self::len), the bytes are kept and writes are refused
    /// until acknowledgments bring the length under the new capacity.
    pub fn set_capacity(&mut self, cap: usize) {
        self.cap = cap;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes [`write`](Self::write) would accept now.
    pub fn free(&self) -> usize {
        self.cap.saturating_sub(self.len)
    }

    /// Bytes of heap held.
    pub fn allocated(&self) -> usize {
        self.buf.capacity()
    }

    fn wrap(&self, i: usize) -> usize {
        if i >= self.buf.len() {
            i - self.buf.len()
        } else {
            i
        }
    }

    /// Appends up to [`free`](Self::free) bytes of `data`; returns how many were taken (none in
    /// lent mode: bytes are appended to the stream there).
    pub fn write(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.free());
        if n == 0 || self.lent.is_some() {
            return 0;
        }
        self.reserve(self.len + n);
        let size = self.buf.len();
        let tail = self.wrap(self.head + self.len);
        let first = n.min(size - tail);
        self.buf[tail..tail + first].copy_from_slice(&data[..first]);
        self.buf[..n - first].copy_from_slice(&data[first..n]);
        self.len += n;
        n
    }

    /// Makes the ring hold at least `need` bytes.
    fn reserve(&mut self, need: usize) {
        if need <= self.buf.len() {
            return;
        }
        self.realloc(grow_size(need, self.cap));
    }

    /// Moves the bytes into a fresh ring of `size` (>= len) bytes, starting at index 0.
    fn realloc(&mut self, size: usize) {
        let mut nb = vec![0u8; size];
        let (a, b) = self.slices(0, self.len);
        nb[..a.len()].copy_from_slice(a);
        nb[a.len()..a.len() + b.len()].copy_from_slice(b);
        self.buf = nb;
        self.head = 0;
    }

    /// Bytes `[offset, offset + len)` counted from the first unacknowledged byte, clamped to
    /// what is stored, as up to two slices (the ring may wrap).
    /// Empty in lent mode (see [`lent_index`](Self::lent_index)).
    pub fn slices(&self, offset: usize, len: usize) -> (&[u8], &[u8]) {
        let off = offset.min(self.len);
        let n = len.min(self.len - off);
        if n == 0 || self.lent.is_some() {
            return (&[], &[]);
        }
        let size = self.buf.len();
        let start = self.wrap(self.head + off);
        let first = n.min(size - start);
        (&self.buf[start..start + first], &self.buf[..n - first])
    }

    /// Copies bytes from `offset` into `out` (as many as fit and are stored); returns the count.
    pub fn copy_out(&self, offset: usize, out: &mut [u8]) -> usize {
        let (a, b) = self.slices(offset, out.len());
        out[..a.len()].copy_from_slice(a);
        out[a.len()..a.len() + b.len()].copy_from_slice(b);
        a.len() + b.len()
    }

    /// Drops `n` acknowledged bytes from the front (clamped to the length).
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        if let Some(b) = self.lent.as_mut() {
            *b = b.wrapping_add(n as u32);
            self.acked = self.acked.wrapping_add(n as u32);
            self.len -= n;
            return;
        }
        self.head = self.wrap(self.head + n);
        self.len -= n;
        if self.len == 0 {
            self.head = 0;
        }
    }

    /// Releases memory beyond what the stored bytes need; all of it when empty.
    pub fn shrink(&mut self) {
        if self.len == 0 || self.lent.is_some() {
            self.buf = Vec::new();
            self.head = 0;
            return;
        }
        let target = grow_size(self.len, self.cap);
        if target < self.buf.len() {
            self.realloc(target);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            if n == 0 {
                0
            } else {
                (self.next() % n as u64) as usize
            }
        }
    }

    fn collect(b: &SendBuf, off: usize, len: usize) -> Vec<u8> {
        let (x, y) = b.slices(off, len);
        let mut v = x.to_vec();
        v.extend_from_slice(y);
        v
    }

    #[test]
    fn no_allocation_until_written() {
        let mut b = SendBuf::new(1 << 20);
        assert_eq!(b.allocated(), 0);
        assert!(b.is_empty());
        assert_eq!(b.free(), 1 << 20);
        assert_eq!(b.write(&[]), 0);
        assert_eq!(b.allocated(), 0);
        assert_eq!(b.write(b"hello"), 5);
        assert_eq!(b.allocated(), MIN_ALLOC);
        assert_eq!(b.write(&[7u8; 100]), 100);
        assert_eq!(b.allocated(), 128);
        b.consume(1000);
        assert!(b.is_empty());
        b.shrink();
        assert_eq!(b.allocated(), 0);
    }

    #[test]
    fn capacity_limits_and_growth_bound() {
        let mut b = SendBuf::new(100);
        assert_eq!(b.write(&[1u8; 150]), 100);
        assert_eq!(b.allocated(), 100);
        assert_eq!(b.free(), 0);
        assert_eq!(b.write(b"x"), 0);
        b.set_capacity(50);
        assert_eq!(b.free(), 0);
        b.consume(60);
        assert_eq!(b.len(), 40);
        assert_eq!(b.free(), 10);
        b.shrink();
        assert_eq!(b.allocated(), 50);
        assert_eq!(collect(&b, 0, 100), vec![1u8; 40]);
    }

    #[test]
    fn wrap_gives_two_slices() {
        let mut b = SendBuf::new(64);
        b.write(&[0u8; 60]);
        b.consume(50);
        let data: Vec<u8> = (0..30).collect();
        assert_eq!(b.write(&data), 30);
        let (x, y) = b.slices(10, 30);
        assert!(!y.is_empty());
        assert_eq!([x, y].concat(), data);
        let mut out = [0u8; 8];
        assert_eq!(b.copy_out(35, &mut out), 5);
        assert_eq!(&out[..5], &data[25..30]);
        assert_eq!(b.copy_out(1000, &mut out), 0);
        assert_eq!(b.slices(usize::MAX, usize::MAX), (&[][..], &[][..]));
    }

    #[test]
    fn lent_mode_counts_reports_acks_and_reclaims() {
        let mut b = SendBuf::new(1000);
        b.write(b"x");
        assert!(!b.lend(7, 100), "only an empty buffer is lent");
        b.consume(1);
        assert!(b.lend(u32::MAX - 2, 1000));
        assert_eq!(b.lent_size(), Some(1000));
        assert_eq!(b.write(b"abc"), 0, "lent: bytes go to the stream");
        assert_eq!(b.append_lent(10), 10);
        assert_eq!(b.lent_index(0), Some(u32::MAX - 2));
        assert_eq!(
            b.lent_index(4),
            Some(1),
            "the index wraps like the stream's"
        );
        b.consume(4);
        assert!(b.has_acked());
        assert_eq!(b.take_acked(), 4);
        assert_eq!(b.take_acked(), 0);
        assert_eq!(b.lent_index(0), Some(1));
        assert_eq!(b.allocated(), 0, "a lent buffer holds no bytes");
        b.consume(2);
        let data = [9u8, 8, 7, 6];
        assert_eq!(b.reclaim(&data[..1], &data[1..]), 2);
        assert!(!b.is_lent());
        assert_eq!(collect(&b, 0, 10), data.to_vec());
        assert_eq!(b.append_lent(3), 0, "not lent any more");
    }

    #[test]
    fn randomized_against_deque() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _round in 0..50 {
            let cap = 1 + rng.below(5000);
            let mut b = SendBuf::new(cap);
            let mut model: VecDeque<u8> = VecDeque::new();
            let mut cap_now = cap;
            let mut counter = 0u8;
            for _ in 0..400 {
                match rng.below(6) {
                    0 | 1 => {
                        let n = rng.below(700);
                        let data: Vec<u8> = (0..n)
                            .map(|_| {
                                counter = counter.wrapping_add(1);
                                counter
                            })
                            .collect();
                        let took = b.write(&data);
                        let expect = n.min(cap_now.saturating_sub(model.len()));
                        assert_eq!(took, expect);
                        model.extend(&data[..took]);
                    }
                    2 => {
                        let n = rng.below(800);
                        b.consume(n);
                        for _ in 0..n.min(model.len()) {
                            model.pop_front();
                        }
                    }
                    3 => b.shrink(),
                    4 => {
                        cap_now = 1 + rng.below(5000);
                        b.set_capacity(cap_now);
                    }
                    _ => {
                        let off = rng.below(model.len() + 10);
                        let len = rng.below(model.len() + 10);
                        let got = collect(&b, off, len);
                        let want: Vec<u8> = model.iter().skip(off).take(len).copied().collect();
                        assert_eq!(got, want);
                        let mut out = vec![0u8; len];
                        let n = b.copy_out(off, &mut out);
                        assert_eq!(&out[..n], &want[..]);
                    }
                }
                assert_eq!(b.len(), model.len());
                assert_eq!(b.free(), cap_now.saturating_sub(model.len()));
                assert!(b.allocated() >= b.len());
                if model.is_empty() {
                    b.shrink();
                    assert_eq!(b.allocated(), 0);
                }
            }
        }
    }
}
