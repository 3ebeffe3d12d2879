//! Per-socket byte stream: a power-of-two byte ring in shared memory with free-running u32 indices.
//!
//! The producer copies payload at offset `(tail - base) & mask` and publishes `tail` with Release;
//! the consumer reads `tail` with Acquire, copies out at `(head - base) & mask` and publishes
//! `head`. Payload only: no framing, no headers. The peer's index is validated
//! (`tail - head <= size`) on every read, and callers pass their own index from private state so a
//! scribbled own-index cannot be used against them.
//!
//! `base` (on the producer's cache line, [`crate::layout::Producer`]) makes the ring's memory grow
//! with use. With plain `tail & mask` offsets, a connection that exchanges a few hundred bytes at a
//! time walks its whole ring, and every page of it ends up resident: 10,000 keepalive connections
//! with 320 KiB of rings each would hold 3.2 GiB. Instead, whenever the producer finds the stream
//! empty ([`Stream::writable`] sees `head == tail`) it moves `base` to `tail`, so the next bytes
//! land at offset 0 again and small exchanges only ever touch the first page. This is safe because
//! an empty stream has no byte anyone still reads: the consumer published `head == tail` only after
//! it was done with them (the agent's engine reads a lent TX stream until the bytes are
//! acknowledged, and moves `head` only then). The consumer loads `base` after its Acquire load of
//! `tail`, so it sees the base the bytes were written at. A consumer that reads a stale `base`
//! therefore only ever does so for bytes it is not allowed to read.

use crate::layout::Producer;
use crate::primitive::{AtomicU32, Ordering};
use crate::Corrupt;

/// View of one byte stream.
#[derive(Clone, Copy)]
pub struct Stream {
    buf: *mut u8,
    size: u32,
    prod: *const Producer,
    head: *const AtomicU32,
}

// SAFETY: points into shared memory accessed only through atomics and bounded copies.
unsafe impl Send for Stream {}
// SAFETY: as above.
unsafe impl Sync for Stream {}

impl Stream {
    /// # Safety
    /// `buf[..size]`, `prod` and `head` must stay valid while the view is used; `size` is a power
    /// of two.
    pub unsafe fn new(buf: *mut u8, size: u32, prod: &Producer, head: &AtomicU32) -> Stream {
        Stream {
            buf,
            size,
            prod,
            head,
        }
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    fn prod(&self) -> &Producer {
        // SAFETY: valid per the constructor's contract.
        unsafe { &*self.prod }
    }

    fn tail_atomic(&self) -> &AtomicU32 {
        &self.prod().tail
    }

    /// The index at ring offset 0 (see the module doc). Relaxed: a consumer calls it after its
    /// Acquire load of `tail`, which orders it after the producer's store; the producer owns it.
    pub fn load_base(&self) -> u32 {
        self.prod().base.load(Ordering::Relaxed)
    }

    fn head_atomic(&self) -> &AtomicU32 {
        // SAFETY: valid per the constructor's contract.
        unsafe { &*self.head }
    }

    /// Producer index as published (Acquire).
    pub fn load_tail(&self) -> u32 {
        self.tail_atomic().load(Ordering::Acquire)
    }

    /// Consumer index as published (Acquire).
    pub fn load_head(&self) -> u32 {
        self.head_atomic().load(Ordering::Acquire)
    }

    /// Producer: publishes a new tail. A Release store: whether the consumer must be woken is
    /// decided by read-modify-writes on the wake words afterwards (wake.rs), which carry the
    /// publication to a consumer that announced itself (model-checked in tests/loom_wake.rs with
    /// Release publishes); a SeqCst store (`xchg` on x86) would only add a full barrier.
    pub fn publish_tail(&self, tail: u32) {
        self.tail_atomic().store(tail, Ordering::Release);
    }

    /// Consumer: publishes a new head (Release, as [`Stream::publish_tail`]).
    pub fn publish_head(&self, head: u32) {
        self.head_atomic().store(head, Ordering::Release);
    }

    /// Moves the head from `from` to `to` unless someone else moved it first. RX heads of shared
    /// connections have two writers: the reading host and the agent taking unread bytes away
    /// (`OP_RX_CLAIM`); each advances the head only from the value it read the bytes at.
    pub fn cas_head(&self, from: u32, to: u32) -> bool {
        self.head_atomic()
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Bytes readable between `head` and `tail`, validated.
    pub fn used(&self, head: u32, tail: u32) -> Result<u32, Corrupt> {
        let n = tail.wrapping_sub(head);
        if n > self.size {
            return Err(Corrupt("stream indices more than a ring apart"));
        }
        Ok(n)
    }

    /// Consumer: bytes readable given our own `head` (re-reads the producer's tail).
    pub fn readable(&self, head: u32) -> Result<u32, Corrupt> {
        self.used(head, self.load_tail())
    }

    /// Producer: free bytes given our own `tail` (re-reads the consumer's head). An empty stream
    /// is rewound: its next bytes go to ring offset 0 (module doc).
    ///
    /// Only the producer calls it, with the tail it published last, and while no other write
    /// can be published (the host: under the socket's TX lock). Anyone else asking for the room
    /// (readiness for poll/epoll, a blocked writer's wait condition) calls
    /// [`Stream::free_keeping_base`]: its tail may be stale by the time it reads the head, and a
    /// head that has just reached that stale tail says "empty" while newer bytes are published;
    /// a rewind then moves the base under them and the consumer reads other bytes in their place
    /// (`tests/loom_stream.rs`, `a_rewind_from_a_stale_tail_moves_published_bytes` below).
    pub fn writable(&self, tail: u32) -> Result<u32, Corrupt> {
        let used = self.used(self.load_head(), tail)?;
        if used == 0 && self.load_base() != tail {
            // Ordered before the bytes by the Release publication of the next tail.
            self.prod().base.store(tail, Ordering::Relaxed);
        }
        Ok(self.size - used)
    }

    /// Free bytes given `tail`, without rewinding an empty stream: for a producer that has
    /// worked out ring offsets for bytes it has not published yet (a reservation), which a rewind
    /// would move, and for any thread that is not the producer (see [`Stream::writable`]). Only
    /// reads.
    pub fn free_keeping_base(&self, tail: u32) -> Result<u32, Corrupt> {
        Ok(self.size - self.used(self.load_head(), tail)?)
    }

    /// Up to two contiguous pieces `(offset, len)` covering `len` bytes from index `at`.
    pub fn pieces(&self, at: u32, len: u32) -> [(usize, usize); 2] {
        let mask = self.size - 1;
        let pos = (at.wrapping_sub(self.load_base()) & mask) as usize;
        let len = len.min(self.size) as usize;
        let first = len.min(self.size as usize - pos);
        [(pos, first), (0, len - first)]
    }

    /// Raw pointer to byte `off` of the buffer (`off < size`), for readv/writev into the ring.
    pub fn ptr(&self, off: usize) -> *mut u8 {
        debug_assert!(off <= self.size as usize);
        // SAFETY: off <= size keeps the pointer inside (or one past) the buffer.
        unsafe { self.buf.add(off.min(self.size as usize)) }
    }

    /// Copies `src` in at index `at`. The caller checked there is room.
    pub fn copy_in(&self, at: u32, src: &[u8]) {
        let mut done = 0;
        for (off, len) in self.pieces(at, src.len() as u32) {
            if len == 0 {
                continue;
            }
            // SAFETY: pieces() keeps off+len within the buffer; the range is owned by the producer
            // until published.
            unsafe {
                core::ptr::copy_nonoverlapping(src.as_ptr().add(done), self.buf.add(off), len)
            };
            done += len;
        }
    }

    /// Copies out `dst.len()` bytes from index `at`. The caller checked they are readable.
    pub fn copy_out(&self, at: u32, dst: &mut [u8]) {
        let mut done = 0;
        for (off, len) in self.pieces(at, dst.len() as u32) {
            if len == 0 {
                continue;
            }
            // SAFETY: pieces() keeps off+len within the buffer; the range was published by the
            // producer and is not rewritten until we publish head.
            unsafe {
                core::ptr::copy_nonoverlapping(self.buf.add(off), dst.as_mut_ptr().add(done), len)
            };
            done += len;
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn wrap_copy_and_validation() {
        let mut buf = vec![0u8; 4096];
        let prod = Producer::default();
        prod.tail.store(u32::MAX - 100, Ordering::Relaxed);
        let tail = &prod.tail;
        let head = AtomicU32::new(u32::MAX - 100);
        // SAFETY: buffer and atomics outlive the view.
        let s = unsafe { Stream::new(buf.as_mut_ptr(), 4096, &prod, &head) };
        let mut t = s.load_tail();
        let mut h = s.load_head();
        let mut next_in = 0u8;
        let mut next_out = 0u8;
        for round in 0..500 {
            let n = (round * 37 % 4000 + 1) as u32;
            let w = s.writable(t).unwrap().min(n);
            let data: Vec<u8> = (0..w)
                .map(|_| {
                    next_in = next_in.wrapping_add(1);
                    next_in
                })
                .collect();
            s.copy_in(t, &data);
            t = t.wrapping_add(w);
            s.publish_tail(t);
            let r = s.readable(h).unwrap();
            assert_eq!(r, t.wrapping_sub(h));
            let mut out = vec![0u8; r as usize];
            s.copy_out(h, &mut out);
            for b in out {
                next_out = next_out.wrapping_add(1);
                assert_eq!(b, next_out);
            }
            h = h.wrapping_add(r);
            s.publish_head(h);
        }
        assert_eq!(s.writable(t).unwrap(), 4096);
        tail.store(h.wrapping_add(4097), Ordering::Relaxed);
        assert!(s.readable(h).is_err());
    }

    #[test]
    fn full_stream() {
        let mut buf = vec![0u8; 4096];
        let prod = Producer::default();
        let head = AtomicU32::new(0);
        // SAFETY: as above.
        let s = unsafe { Stream::new(buf.as_mut_ptr(), 4096, &prod, &head) };
        s.copy_in(0, &[7u8; 4096]);
        s.publish_tail(4096);
        assert_eq!(s.writable(4096).unwrap(), 0);
        assert_eq!(s.readable(0).unwrap(), 4096);
        assert_eq!(s.pieces(4000, 200), [(4000, 96), (0, 104)]);
    }

    /// The interleaving behind a corrupted echo (2026-12-05 CI, `out_echo_4m`): a thread that is
    /// not the producer (the host's readiness for a `poll` on the reading thread) loads the tail,
    /// the producer publishes more bytes, the consumer's head reaches the tail the observer
    /// loaded, and then the observer reads the head. A rewind there moves the base under the
    /// newer bytes; the query for observers leaves it.
    #[test]
    fn a_rewind_from_a_stale_tail_moves_published_bytes() {
        for observer_rewinds in [true, false] {
            let mut buf = vec![0u8; 4096];
            let prod = Producer::default();
            let head = AtomicU32::new(0);
            // SAFETY: as above.
            let s = unsafe { Stream::new(buf.as_mut_ptr(), 4096, &prod, &head) };
            let old: Vec<u8> = (0..1000u32).map(|k| (k * 13) as u8).collect();
            let new: Vec<u8> = (0..700u32).map(|k| (k * 7 + 1) as u8).collect();
            assert_eq!(s.writable(0).unwrap(), 4096);
            s.copy_in(0, &old);
            s.publish_tail(1000);
            // The observer loads the tail...
            let stale = prod.tail.load(Ordering::Relaxed);
            // ...the producer writes on (the consumer still holds the old bytes: no rewind)...
            assert_eq!(s.writable(1000).unwrap(), 3096);
            s.copy_in(1000, &new);
            s.publish_tail(1700);
            // ...the consumer is done with the old bytes (a lent stream: acknowledged)...
            s.publish_head(1000);
            // ...and the observer reads the head.
            let free = if observer_rewinds {
                s.writable(stale).unwrap()
            } else {
                s.free_keeping_base(stale).unwrap()
            };
            assert_eq!(free, 4096, "from its stale tail the stream looks empty");
            let mut out = vec![0u8; 700];
            s.copy_out(1000, &mut out);
            assert_eq!(out == new, !observer_rewinds);
        }
    }

    #[test]
    fn an_emptied_stream_starts_again_at_offset_zero() {
        let mut buf = vec![0u8; 16384];
        let prod = Producer::default();
        let head = AtomicU32::new(0);
        // SAFETY: as above.
        let s = unsafe { Stream::new(buf.as_mut_ptr(), 16384, &prod, &head) };
        let (mut t, mut h) = (0u32, 0u32);
        let mut highest = 0usize;
        // Request/response sized exchanges, each read before the next is written: 100,000 of
        // them walk 30 MB of index space but stay on the first page.
        for i in 0..100_000u32 {
            let n = 100 + (i % 200);
            assert_eq!(s.writable(t).unwrap(), 16384);
            let data: Vec<u8> = (0..n).map(|k| (i + k) as u8).collect();
            for (off, len) in s.pieces(t, n) {
                highest = highest.max(off + len);
            }
            s.copy_in(t, &data);
            t = t.wrapping_add(n);
            s.publish_tail(t);
            let mut out = vec![0u8; s.readable(h).unwrap() as usize];
            s.copy_out(h, &mut out);
            assert_eq!(out, data);
            h = t;
            s.publish_head(h);
        }
        assert!(highest <= 300, "bytes went up to offset {highest}");
        // Not emptied: the base stays, and bytes wrap around the ring as before.
        let first = s.writable(t).unwrap();
        assert_eq!(first, 16384);
        let big: Vec<u8> = (0..12000u32).map(|k| (k * 7) as u8).collect();
        s.copy_in(t, &big);
        t = t.wrapping_add(12000);
        s.publish_tail(t);
        let mut out = vec![0u8; 8000];
        s.copy_out(h, &mut out);
        h = h.wrapping_add(8000);
        s.publish_head(h);
        assert_eq!(s.writable(t).unwrap(), 16384 - 4000);
        s.copy_in(t, &big[..10000]);
        assert_eq!(s.pieces(t, 10000), [(12000, 4384), (0, 5616)]);
        t = t.wrapping_add(10000);
        s.publish_tail(t);
        let mut rest = vec![0u8; 14000];
        s.copy_out(h, &mut rest);
        assert_eq!(&rest[..4000], &big[8000..]);
        assert_eq!(&rest[4000..], &big[..10000]);
    }
}
