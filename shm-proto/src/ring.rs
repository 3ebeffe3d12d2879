//! Single-producer single-consumer ring of fixed-size entries in shared memory.
//!
//! The io_uring scheme: free-running u32 `head`/`tail` on separate cache lines, slot = index & mask,
//! length = `tail - head` (wrapping). Each half keeps its own index privately and only *reads* the
//! peer's, so a peer that scribbles over our index cannot move us; the peer's index is checked
//! (`tail - head <= entries`) before any slot is touched. Entries are copied in and out by value.

use crate::layout::RingHdr;
use crate::primitive::{AtomicU32, Ordering};
use crate::Corrupt;

/// Producer half.
pub struct Producer<T: Copy> {
    hdr: *const RingHdr,
    ents: *mut T,
    mask: u32,
    tail: u32,
    head_cache: u32,
}

/// Consumer half.
pub struct Consumer<T: Copy> {
    hdr: *const RingHdr,
    ents: *mut T,
    mask: u32,
    head: u32,
    tail_cache: u32,
}

// SAFETY: the halves point into shared memory accessed with atomics/copies; moving them between
// threads is fine (they are not Sync: one user at a time).
unsafe impl<T: Copy> Send for Producer<T> {}
// SAFETY: as above.
unsafe impl<T: Copy> Send for Consumer<T> {}

fn tail_of(h: *const RingHdr) -> &'static AtomicU32 {
    // SAFETY: constructors require `h` valid for the lifetime of the half; we never hand out
    // this reference beyond a single call.
    unsafe { &(*h).tail.0 }
}

fn head_of(h: *const RingHdr) -> &'static AtomicU32 {
    // SAFETY: as in `tail_of`.
    unsafe { &(*h).head.0 }
}

impl<T: Copy> Producer<T> {
    /// # Safety
    /// `hdr` and `ents[..entries]` must stay valid while the producer lives; `entries` is a power of
    /// two; only one producer exists for the ring.
    pub unsafe fn new(hdr: *const RingHdr, ents: *mut T, entries: u32) -> Self {
        let tail = tail_of(hdr).load(Ordering::Acquire);
        let head = head_of(hdr).load(Ordering::Acquire);
        Producer {
            hdr,
            ents,
            mask: entries - 1,
            tail,
            head_cache: head,
        }
    }

    pub fn capacity(&self) -> u32 {
        self.mask + 1
    }

    /// Free entries, re-reading the consumer's head.
    pub fn free(&mut self) -> Result<u32, Corrupt> {
        let head = head_of(self.hdr).load(Ordering::Acquire);
        let used = self.tail.wrapping_sub(head);
        if used > self.capacity() {
            return Err(Corrupt("ring head ahead of tail"));
        }
        self.head_cache = head;
        Ok(self.capacity() - used)
    }

    /// Writes `v` and publishes it. `Ok(false)` when full.
    pub fn push(&mut self, v: T) -> Result<bool, Corrupt> {
        if self.tail.wrapping_sub(self.head_cache) >= self.capacity() && self.free()? == 0 {
            return Ok(false);
        }
        let idx = (self.tail & self.mask) as usize;
        // SAFETY: idx <= mask < entries; the slot is free (checked above), so the consumer does
        // not read it until the Release store below.
        unsafe { core::ptr::write_volatile(self.ents.add(idx), v) };
        self.tail = self.tail.wrapping_add(1);
        tail_of(self.hdr).store(self.tail, Ordering::Release);
        Ok(true)
    }

    /// Entries published and not yet consumed (as far as we know).
    pub fn pending(&self) -> u32 {
        self.tail
            .wrapping_sub(head_of(self.hdr).load(Ordering::Acquire))
    }
}

impl<T: Copy> Consumer<T> {
    /// # Safety
    /// As for [`Producer::new`], with one consumer.
    pub unsafe fn new(hdr: *const RingHdr, ents: *mut T, entries: u32) -> Self {
        let head = head_of(hdr).load(Ordering::Acquire);
        Consumer {
            hdr,
            ents,
            mask: entries - 1,
            head,
            tail_cache: head,
        }
    }

    pub fn capacity(&self) -> u32 {
        self.mask + 1
    }

    /// Entries available, re-reading the producer's tail.
    pub fn available(&mut self) -> Result<u32, Corrupt> {
        let tail = tail_of(self.hdr).load(Ordering::Acquire);
        let n = tail.wrapping_sub(self.head);
        if n > self.capacity() {
            return Err(Corrupt("ring tail more than a ring ahead of head"));
        }
        self.tail_cache = tail;
        Ok(n)
    }

    /// Takes one entry, or `Ok(None)` when empty.
    pub fn pop(&mut self) -> Result<Option<T>, Corrupt> {
        if self.head == self.tail_cache && self.available()? == 0 {
            return Ok(None);
        }
        let idx = (self.head & self.mask) as usize;
        // SAFETY: idx < entries; the producer published this entry (Acquire load of tail above)
        // and will not overwrite it until we advance head.
        let v = unsafe { core::ptr::read_volatile(self.ents.add(idx)) };
        self.head = self.head.wrapping_add(1);
        head_of(self.hdr).store(self.head, Ordering::Release);
        Ok(Some(v))
    }

    /// True when the producer has published nothing new (cheap check, no validation).
    pub fn is_empty(&self) -> bool {
        tail_of(self.hdr).load(Ordering::Acquire) == self.head
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::layout::{Cmd, Line};

    fn ring(n: usize) -> (Box<RingHdr>, Vec<Cmd>) {
        let hdr = Box::new(RingHdr {
            tail: Line(AtomicU32::new(0)),
            head: Line(AtomicU32::new(0)),
        });
        (hdr, vec![Cmd::default(); n])
    }

    #[test]
    fn full_empty_and_wrap() {
        let (hdr, mut ents) = ring(4);
        // SAFETY: the box and vec outlive both halves.
        let (mut p, mut c) = unsafe {
            (
                Producer::new(&*hdr, ents.as_mut_ptr(), 4),
                Consumer::new(&*hdr, ents.as_mut_ptr(), 4),
            )
        };
        assert_eq!(c.pop().unwrap(), None);
        for round in 0..1000u32 {
            for i in 0..4 {
                assert!(p
                    .push(Cmd {
                        slot: round * 4 + i,
                        ..Default::default()
                    })
                    .unwrap());
            }
            assert!(
                !p.push(Cmd::default()).unwrap(),
                "full ring accepts no more"
            );
            for i in 0..4 {
                assert_eq!(c.pop().unwrap().unwrap().slot, round * 4 + i);
            }
            assert_eq!(c.pop().unwrap(), None);
        }
    }

    #[test]
    fn index_wraps_past_u32_max() {
        let (hdr, mut ents) = ring(8);
        hdr.tail.0.store(u32::MAX - 3, Ordering::Relaxed);
        hdr.head.0.store(u32::MAX - 3, Ordering::Relaxed);
        // SAFETY: as above.
        let (mut p, mut c) = unsafe {
            (
                Producer::new(&*hdr, ents.as_mut_ptr(), 8),
                Consumer::new(&*hdr, ents.as_mut_ptr(), 8),
            )
        };
        for i in 0..8 {
            assert!(p
                .push(Cmd {
                    slot: i,
                    ..Default::default()
                })
                .unwrap());
        }
        assert!(!p.push(Cmd::default()).unwrap());
        for i in 0..8 {
            assert_eq!(c.pop().unwrap().unwrap().slot, i);
        }
    }

    #[test]
    fn corrupt_tail_is_detected() {
        let (hdr, mut ents) = ring(8);
        // SAFETY: as above.
        let mut c = unsafe { Consumer::new(&*hdr, ents.as_mut_ptr(), 8) };
        hdr.tail.0.store(9, Ordering::Relaxed);
        assert!(c.pop().is_err());
        hdr.tail.0.store(u32::MAX, Ordering::Relaxed); // "behind" head
        assert!(c.pop().is_err());
    }

    #[test]
    fn corrupt_head_is_detected() {
        let (hdr, mut ents) = ring(8);
        // SAFETY: as above.
        let mut p = unsafe { Producer::new(&*hdr, ents.as_mut_ptr(), 8) };
        for _ in 0..8 {
            p.push(Cmd::default()).unwrap();
        }
        hdr.head.0.store(100, Ordering::Relaxed);
        assert!(p.push(Cmd::default()).is_err());
    }

    #[test]
    fn threads_spsc() {
        let (hdr, mut ents) = ring(16);
        let hp = &*hdr as *const RingHdr as usize;
        let ep = ents.as_mut_ptr() as usize;
        const N: u32 = 200_000;
        let t = std::thread::spawn(move || {
            // SAFETY: the main thread keeps hdr/ents alive until join.
            let mut p = unsafe { Producer::new(hp as *const RingHdr, ep as *mut Cmd, 16) };
            for i in 0..N {
                while !p
                    .push(Cmd {
                        slot: i,
                        ..Default::default()
                    })
                    .unwrap()
                {
                    std::hint::spin_loop();
                }
            }
        });
        // SAFETY: as above.
        let mut c = unsafe { Consumer::new(hp as *const RingHdr, ep as *mut Cmd, 16) };
        let mut next = 0;
        while next < N {
            if let Some(v) = c.pop().unwrap() {
                assert_eq!(v.slot, next);
                next += 1;
            }
        }
        t.join().unwrap();
    }
}
