//! The receive buffer: bytes received in order and not yet read by the application, followed by
//! out-of-order bytes stored at their offsets.
//!
//! - Reassembly (RFC 9293 section 3.10.7.4, "segment arrives", seventh step): segments beyond
//!   RCV.NXT but inside the window are kept rather than dropped, so a single loss costs one
//!   retransmission, not the whole window. There is no limit on the number of holes: the
//!   out-of-order ranges live in a sorted `Vec` searched by binary search (O(log n) to find the
//!   place; merging removes the ranges a segment bridges).
//! - SACK generation (RFC 2018 section 4): the first block must describe the range holding the
//!   most recently received segment, the others repeat the most recently reported ranges. Each
//!   range therefore carries a stamp of its last change and [`RecvBuf::sack_ranges`] lists them
//!   newest first.
//! - The advertised window (RFC 9293 section 3.8.6) is the capacity minus the unread in-order
//!   bytes; out-of-order bytes lie inside that window already.
//!
//! Memory: like [`SendBuf`](crate::sendbuf::SendBuf), one ring that is not allocated until bytes
//! are stored, grows in powers of two up to the capacity, and is released by
//! [`RecvBuf::shrink`] when empty. Positions are kept as absolute 64-bit stream offsets so that
//! reading never has to renumber the out-of-order ranges.

use crate::sendbuf::grow_size;

/// One out-of-order range `[start, end)` in absolute stream offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Range {
    start: u64,
    end: u64,
    /// Value of [`RecvBuf::stamp`] when the range last grew or was last hit: orders SACK blocks.
    stamp: u64,
}

/// Received bytes: the in-order part the application reads, then out-of-order ranges.
#[derive(Debug, Default)]
pub struct RecvBuf {
    /// The ring; its length is its size. Ring index `head` holds stream offset `base`.
    buf: Vec<u8>,
    head: usize,
    /// Absolute stream offset of the first unread byte.
    base: u64,
    /// In-order bytes ready for the application.
    readable: usize,
    cap: usize,
    /// Out-of-order ranges: sorted, disjoint, never touching each other, all after the readable
    /// bytes (never touching them either).
    ranges: Vec<Range>,
    /// Sum of the ranges' lengths.
    ooo: usize,
    stamp: u64,
}

impl RecvBuf {
    /// An empty buffer accepting up to `capacity` bytes. Allocates nothing.
    pub fn new(capacity: usize) -> RecvBuf {
        RecvBuf {
            cap: capacity,
            ..RecvBuf::default()
        }
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Changes the capacity (receive-buffer autotuning). Shrinking below what is stored keeps
    /// the bytes; only new bytes beyond the capacity are refused.
    pub fn set_capacity(&mut self, cap: usize) {
        self.cap = cap;
    }

    /// Bytes of heap held (ring plus range list).
    pub fn allocated(&self) -> usize {
        self.buf.capacity() + self.ranges.capacity() * core::mem::size_of::<Range>()
    }

    /// Bytes from the first unread byte to the end of the last stored byte.
    fn span(&self) -> usize {
        match self.ranges.last() {
            Some(r) => usize::try_from(r.end - self.base).unwrap_or(usize::MAX),
            None => self.readable,
        }
    }

    /// Releases memory beyond what the stored bytes need; all of it when empty.
    pub fn shrink(&mut self) {
        let span = self.span();
        if span == 0 {
            self.buf = Vec::new();
            self.head = 0;
        } else {
            let target = grow_size(span, self.cap);
            if target < self.buf.len() {
                self.realloc(target);
            }
        }
        if self.ranges.is_empty() {
            self.ranges = Vec::new();
        } else {
            self.ranges.shrink_to_fit();
        }
    }

    /// Contiguous bytes ready for the application.
    pub fn readable(&self) -> usize {
        self.readable
    }

    /// The receive window to advertise: capacity minus unread in-order bytes.
    pub fn window(&self) -> usize {
        self.cap.saturating_sub(self.readable)
    }

    pub fn has_ooo(&self) -> bool {
        !self.ranges.is_empty()
    }

    /// Out-of-order bytes stored.
    pub fn ooo_bytes(&self) -> usize {
        self.ooo
    }

    fn wrap(&self, i: usize) -> usize {
        if i >= self.buf.len() {
            i - self.buf.len()
        } else {
            i
        }
    }

    /// Moves the stored span into a fresh ring of `size` (>= span) bytes, at index 0.
    fn realloc(&mut self, size: usize) {
        let span = self.span();
        let mut nb = vec![0u8; size];
        let old = self.buf.len();
        if old > 0 {
            let first = span.min(old - self.head);
            nb[..first].copy_from_slice(&self.buf[self.head..self.head + first]);
            nb[first..span].copy_from_slice(&self.buf[..span - first]);
        }
        self.buf = nb;
        self.head = 0;
    }

    /// Stores `data` at `offset` bytes after the end of the readable bytes (0: in order).
    /// Bytes beyond the capacity, counted from the first unread byte, are dropped; overlaps and
    /// duplicates are fine. Returns how many bytes became readable (the in-order advance, which
    /// exceeds `data.len()` when the data fills a hole).
    pub fn insert(&mut self, offset: usize, data: &[u8]) -> usize {
        let rd_end = self.base + self.readable as u64;
        let limit = self.base.saturating_add(self.cap as u64);
        let start = rd_end.saturating_add(offset as u64);
        let end = start.saturating_add(data.len() as u64).min(limit);
        if start >= end {
            return 0;
        }
        // Both below `limit`, so they fit a usize.
        let rel = (start - self.base) as usize;
        let n = (end - start) as usize;
        let need = rel + n;
        if need > self.buf.len() {
            let want = grow_size(need.max(self.span()), self.cap.max(need));
            self.realloc(want);
        }
        let size = self.buf.len();
        let at = self.wrap(self.head + rel);
        let first = n.min(size - at);
        self.buf[at..at + first].copy_from_slice(&data[..first]);
        self.buf[..n - first].copy_from_slice(&data[first..n]);

        if start == rd_end {
            // In order: absorb every range the new bytes reach.
            let k = self.ranges.partition_point(|r| r.start <= end);
            let mut new_end = end;
            if k > 0 {
                new_end = new_end.max(self.ranges[k - 1].end);
                let gone: u64 = self.ranges[..k].iter().map(|r| r.end - r.start).sum();
                self.ooo -= gone as usize;
                self.ranges.drain(..k);
            }
            let adv = (new_end - rd_end) as usize;
            self.readable += adv;
            adv
        } else {
            self.stamp += 1;
            let i = self.ranges.partition_point(|r| r.end < start);
            let j = self.ranges.partition_point(|r| r.start <= end);
            let mut merged = Range {
                start,
                end,
                stamp: self.stamp,
            };
            if i < j {
                merged.start = merged.start.min(self.ranges[i].start);
                merged.end = merged.end.max(self.ranges[j - 1].end);
                let gone: u64 = self.ranges[i..j].iter().map(|r| r.end - r.start).sum();
                self.ooo -= gone as usize;
                self.ranges[i] = merged;
                self.ranges.drain(i + 1..j);
            } else {
                self.ranges.insert(i, merged);
            }
            self.ooo += (merged.end - merged.start) as usize;
            0
        }
    }

    /// The readable bytes, as up to two slices (the ring may wrap).
    pub fn slices(&self) -> (&[u8], &[u8]) {
        let n = self.readable;
        if n == 0 {
            return (&[], &[]);
        }
        let first = n.min(self.buf.len() - self.head);
        (
            &self.buf[self.head..self.head + first],
            &self.buf[..n - first],
        )
    }

    /// Copies readable bytes into `out` and consumes them; returns the count.
    pub fn read(&mut self, out: &mut [u8]) -> usize {
        let (a, b) = self.slices();
        let na = a.len().min(out.len());
        out[..na].copy_from_slice(&a[..na]);
        let nb = b.len().min(out.len() - na);
        out[na..na + nb].copy_from_slice(&b[..nb]);
        self.consume(na + nb);
        na + nb
    }

    /// The next `n` in-order bytes were handed to the application without being stored (see
    /// [`crate::sink`]): the stream moves past them. Only while nothing is buffered.
    pub fn pass_through(&mut self, n: usize) {
        debug_assert!(self.readable == 0 && self.ranges.is_empty());
        if self.readable == 0 && self.ranges.is_empty() {
            self.base += n as u64;
            self.head = 0;
        }
    }

    /// Drops `n` readable bytes (clamped to [`readable`](Self::readable)).
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.readable);
        if n == 0 {
            return;
        }
        self.head = self.wrap(self.head + n);
        self.readable -= n;
        self.base += n as u64;
        if self.readable == 0 && self.ranges.is_empty() {
            self.head = 0;
        }
    }

    /// Writes the out-of-order ranges as `(start, end)` offsets after the end of the readable
    /// bytes: first the range holding the most recently inserted out-of-order bytes, then the
    /// others, most recently changed first (RFC 2018 section 4). At most `out.len()`; returns
    /// the count.
    pub fn sack_ranges(&self, out: &mut [(u32, u32)]) -> usize {
        let rd_end = self.base + self.readable as u64;
        let rel = |r: &Range| {
            (
                u32::try_from(r.start - rd_end).unwrap_or(u32::MAX),
                u32::try_from(r.end - rd_end).unwrap_or(u32::MAX),
            )
        };
        let k = out.len().min(self.ranges.len());
        if k <= 8 {
            // Selection by decreasing stamp: O(ranges * k), no allocation. Stamps are unique.
            let mut below = u64::MAX;
            for slot in out.iter_mut().take(k) {
                let mut best: Option<&Range> = None;
                for r in &self.ranges {
                    if r.stamp < below && best.map_or(true, |b| r.stamp > b.stamp) {
                        best = Some(r);
                    }
                }
                match best {
                    Some(r) => {
                        *slot = rel(r);
                        below = r.stamp;
                    }
                    None => return 0,
                }
            }
        } else {
            let mut order: Vec<&Range> = self.ranges.iter().collect();
            order.sort_unstable_by_key(|r| core::cmp::Reverse(r.stamp));
            for (slot, r) in out.iter_mut().zip(order) {
                *slot = rel(r);
            }
        }
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn readable_vec(b: &RecvBuf) -> Vec<u8> {
        let (x, y) = b.slices();
        [x, y].concat()
    }

    #[test]
    fn in_order_and_window() {
        let mut b = RecvBuf::new(1000);
        assert_eq!(b.allocated(), 0);
        assert_eq!(b.window(), 1000);
        assert_eq!(b.insert(0, b"hello"), 5);
        assert_eq!(b.readable(), 5);
        assert_eq!(b.window(), 995);
        let mut out = [0u8; 3];
        assert_eq!(b.read(&mut out), 3);
        assert_eq!(&out, b"hel");
        assert_eq!(readable_vec(&b), b"lo");
        b.consume(100);
        assert_eq!(b.readable(), 0);
        b.shrink();
        assert_eq!(b.allocated(), 0);
    }

    #[test]
    fn holes_fill_and_advance_beyond_data() {
        let mut b = RecvBuf::new(1000);
        assert_eq!(b.insert(10, &[b'c'; 10]), 0); // [10,20)
        assert_eq!(b.insert(30, &[b'e'; 10]), 0); // [30,40)
        assert_eq!(b.ooo_bytes(), 20);
        assert!(b.has_ooo());
        assert_eq!(b.insert(20, &[b'd'; 10]), 0); // bridges: [10,40)
        assert_eq!(b.ooo_bytes(), 30);
        let mut s = [(0u32, 0u32); 4];
        assert_eq!(b.sack_ranges(&mut s), 1);
        assert_eq!(s[0], (10, 40));
        assert_eq!(b.insert(0, &[b'a'; 12]), 40); // overlapping fill
        assert!(!b.has_ooo());
        assert_eq!(b.ooo_bytes(), 0);
        let v = readable_vec(&b);
        assert_eq!(&v[..12], &[b'a'; 12]);
        assert_eq!(&v[12..20], &[b'c'; 8]);
        assert_eq!(&v[20..30], &[b'd'; 10]);
        assert_eq!(&v[30..], &[b'e'; 10]);
    }

    #[test]
    fn capacity_drops_excess_and_shrink_keeps_bytes() {
        let mut b = RecvBuf::new(100);
        assert_eq!(b.insert(90, &[1u8; 50]), 0);
        assert_eq!(b.ooo_bytes(), 10);
        assert_eq!(b.insert(200, &[1u8; 5]), 0);
        assert_eq!(b.insert(usize::MAX, &[1u8; 5]), 0);
        assert_eq!(b.ooo_bytes(), 10);
        assert_eq!(b.insert(0, &[2u8; 95]), 100);
        assert_eq!(b.window(), 0);
        b.set_capacity(10);
        assert_eq!(b.readable(), 100);
        assert_eq!(b.insert(0, b"x"), 0);
        b.shrink();
        assert_eq!(readable_vec(&b).len(), 100);
        b.set_capacity(200);
        assert_eq!(b.window(), 100);
        assert_eq!(b.insert(0, b"xy"), 2);
    }

    #[test]
    fn sack_order_most_recent_first() {
        let mut b = RecvBuf::new(10_000);
        b.insert(100, &[0; 10]); // A
        b.insert(300, &[0; 10]); // B
        b.insert(500, &[0; 10]); // C
        let mut s = [(0u32, 0u32); 3];
        assert_eq!(b.sack_ranges(&mut s), 3);
        assert_eq!(s, [(500, 510), (300, 310), (100, 110)]);
        b.insert(110, &[0; 10]); // grows A
        assert_eq!(b.sack_ranges(&mut s), 3);
        assert_eq!(s, [(100, 120), (500, 510), (300, 310)]);
        b.insert(305, &[0; 2]); // duplicate inside B: B reported first
        let mut two = [(0u32, 0u32); 2];
        assert_eq!(b.sack_ranges(&mut two), 2);
        assert_eq!(two, [(300, 310), (100, 120)]);
        // Offsets are relative to the readable end.
        b.insert(0, &[0; 50]);
        assert_eq!(b.sack_ranges(&mut two), 2);
        assert_eq!(two, [(250, 260), (50, 70)]);
        let mut many = [(0u32, 0u32); 12];
        assert_eq!(b.sack_ranges(&mut many), 3);
        assert_eq!(&many[..3], &[(250, 260), (50, 70), (450, 460)]);
        assert_eq!(b.sack_ranges(&mut []), 0);
    }

    #[test]
    fn many_holes() {
        let mut b = RecvBuf::new(1 << 20);
        for i in (1..5000).rev() {
            assert_eq!(b.insert(i * 2, &[i as u8]), 0);
        }
        assert_eq!(b.ooo_bytes(), 4999);
        let mut s = [(0u32, 0u32); 4];
        assert_eq!(b.sack_ranges(&mut s), 4);
        assert_eq!(s[0], (2, 3));
        assert_eq!(b.insert(0, &[0u8; 10_000]), 10_000);
        assert_eq!(b.ooo_bytes(), 0);
    }

    /// Reference model: one Option<u8> per stream byte from the first unread byte.
    #[test]
    fn randomized_against_model() {
        let mut rng = XorShift(0x1234_5678_9abc_def1);
        for round in 0..60 {
            let mut cap = 1 + rng.below(3000);
            let mut b = RecvBuf::new(cap);
            // model[i] = byte at stream offset base+i, None = hole; readable = leading Somes.
            let mut model: Vec<Option<u8>> = Vec::new();
            let mut readable = 0usize;
            let mut last_ooo: Option<(usize, usize)> = None; // abs-ish start..end of last ooo insert
            let mut stream_base = 0usize;
            for step in 0..300 {
                match rng.below(8) {
                    0..=3 => {
                        let off = if rng.below(3) == 0 {
                            0
                        } else {
                            rng.below(cap + 50)
                        };
                        let len = rng.below(400);
                        let start = readable + off;
                        let data: Vec<u8> = (0..len)
                            .map(|i| ((stream_base + start + i) * 7 % 251) as u8)
                            .collect();
                        let got = b.insert(off, &data);
                        let end = (start + len).min(cap);
                        let old_readable = readable;
                        if start < end {
                            if model.len() < end {
                                model.resize(end, None);
                            }
                            for (i, m) in model.iter_mut().enumerate().take(end).skip(start) {
                                *m = Some(data[i - start]);
                            }
                            if off != 0 {
                                last_ooo = Some((stream_base + start, stream_base + end));
                            }
                        }
                        while readable < model.len() && model[readable].is_some() {
                            readable += 1;
                        }
                        assert_eq!(got, readable - old_readable, "round {round} step {step}");
                    }
                    4 => {
                        let mut out = vec![0u8; rng.below(500)];
                        let n = b.read(&mut out);
                        let want = out.len().min(readable);
                        assert_eq!(n, want);
                        for (i, o) in out.iter().enumerate().take(n) {
                            assert_eq!(Some(*o), model[i]);
                        }
                        model.drain(..n);
                        readable -= n;
                        stream_base += n;
                    }
                    5 => b.shrink(),
                    6 => {
                        cap = 1 + rng.below(3000);
                        b.set_capacity(cap);
                        // The model's limit is relative to the first unread byte too.
                    }
                    _ => {
                        let n = rng.below(300);
                        b.consume(n);
                        let n = n.min(readable);
                        model.drain(..n);
                        readable -= n;
                        stream_base += n;
                    }
                }
                // Check readable bytes and out-of-order ranges.
                assert_eq!(b.readable(), readable);
                assert_eq!(b.window(), cap.saturating_sub(readable));
                let rv = readable_vec(&b);
                for (i, x) in rv.iter().enumerate() {
                    assert_eq!(Some(*x), model[i]);
                }
                let mut want_ranges = Vec::new();
                let mut i = readable;
                while i < model.len() {
                    if model[i].is_some() {
                        let s = i;
                        while i < model.len() && model[i].is_some() {
                            i += 1;
                        }
                        want_ranges.push(((s - readable) as u32, (i - readable) as u32));
                    } else {
                        i += 1;
                    }
                }
                let ooo: usize = want_ranges.iter().map(|(s, e)| (e - s) as usize).sum();
                assert_eq!(b.ooo_bytes(), ooo);
                assert_eq!(b.has_ooo(), !want_ranges.is_empty());
                let mut got = vec![(0u32, 0u32); want_ranges.len() + 2];
                let k = b.sack_ranges(&mut got);
                assert_eq!(k, want_ranges.len());
                got.truncate(k);
                if let (Some(first), Some((ls, le))) = (got.first(), last_ooo) {
                    let rd_abs = stream_base + readable;
                    if le > rd_abs {
                        // The first block contains the last out-of-order insert's bytes.
                        let (fs, fe) = (rd_abs + first.0 as usize, rd_abs + first.1 as usize);
                        assert!(
                            fs <= ls.max(rd_abs) && le <= fe,
                            "round {round} step {step}"
                        );
                    }
                }
                got.sort_unstable();
                assert_eq!(got, want_ranges);
                // Bytes of out-of-order ranges survive until read: checked when they become
                // readable above.
                assert!(b.allocated() >= b.span());
            }
        }
    }
}
