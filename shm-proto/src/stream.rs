//! Per-socket byte stream: a power-of-two byte ring in shared memory with free-running u32 indices.
//!
//! The producer copies payload at `tail & mask` and publishes `tail` with Release; the consumer reads
//! `tail` with Acquire, copies out at `head & mask` and publishes `head`. Payload only: no framing,
//! no headers. The peer's index is validated (`tail - head <= size`) on every read, and callers pass
//! their own index from private state so a scribbled own-index cannot be used against them.

use crate::primitive::{AtomicU32, Ordering};
use crate::Corrupt;

/// View of one byte stream.
#[derive(Clone, Copy)]
pub struct Stream {
    buf: *mut u8,
    size: u32,
    tail: *const AtomicU32,
    head: *const AtomicU32,
}

// SAFETY: points into shared memory accessed only through atomics and bounded copies.
unsafe impl Send for Stream {}
// SAFETY: as above.
unsafe impl Sync for Stream {}

impl Stream {
    /// # Safety
    /// `buf[..size]` and both atomics must stay valid while the view is used; `size` is a power of
    /// two.
    pub unsafe fn new(buf: *mut u8, size: u32, tail: &AtomicU32, head: &AtomicU32) -> Stream {
        Stream {
            buf,
            size,
            tail,
            head,
        }
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    fn tail_atomic(&self) -> &AtomicU32 {
        // SAFETY: valid per the constructor's contract.
        unsafe { &*self.tail }
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

    /// Producer: free bytes given our own `tail` (re-reads the consumer's head).
    pub fn writable(&self, tail: u32) -> Result<u32, Corrupt> {
        Ok(self.size - self.used(self.load_head(), tail)?)
    }

    /// Up to two contiguous pieces `(offset, len)` covering `len` bytes from index `at`.
    pub fn pieces(&self, at: u32, len: u32) -> [(usize, usize); 2] {
        let mask = self.size - 1;
        let pos = (at & mask) as usize;
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
        let tail = AtomicU32::new(u32::MAX - 100);
        let head = AtomicU32::new(u32::MAX - 100);
        // SAFETY: buffer and atomics outlive the view.
        let s = unsafe { Stream::new(buf.as_mut_ptr(), 4096, &tail, &head) };
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
        let tail = AtomicU32::new(0);
        let head = AtomicU32::new(0);
        // SAFETY: as above.
        let s = unsafe { Stream::new(buf.as_mut_ptr(), 4096, &tail, &head) };
        s.copy_in(0, &[7u8; 4096]);
        s.publish_tail(4096);
        assert_eq!(s.writable(4096).unwrap(), 0);
        assert_eq!(s.readable(0).unwrap(), 4096);
        assert_eq!(s.pieces(4000, 200), [(4000, 96), (0, 104)]);
    }
}
