//! Read-only mappings of files for `sendfile`, kept in a small cache.
//!
//! Mapping and unmapping per call costs more than the copies it saves: `munmap` flushes the TLB
//! (an IPI to every CPU the process ran on) and every fresh mapping faults its pages in again.
//! Servers send the same hot files over and over, so the last [`SLOTS`] windows stay mapped,
//! keyed by the file's identity (device, inode); a hit costs no system call at all. A mapping
//! shows the page cache, so it stays coherent with writes; the caller clamps every copy to the
//! size `fstat` just reported, so a file that shrank is never read past its end through an old
//! window (see the SIGBUS note in `sendfile.rs`).
//!
//! Concurrency without blocking: the table is guarded by a try-lock (a thread that finds it busy,
//! a signal handler included, maps privately and unmaps after use), and each slot counts its
//! users so a window is never unmapped while a copy reads it; eviction takes the least recently
//! used slot with no users. After `fork` the child inherits the windows; if another thread held
//! the lock at that moment the child just never hits the cache.
//!
//! Cost of caching: up to [`SLOTS`] x [`WINDOW`] bytes of address space (page cache, not memory
//! of our own), and a cached window keeps its inode alive: a file deleted while cached frees its
//! disk space when its slot is evicted.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Windows kept mapped.
const SLOTS: usize = 8;
/// Largest window mapped at once: a typical response is one window; bounds address space.
pub(crate) const WINDOW: usize = 1 << 20;

struct Slot {
    dev: u64,
    ino: u64,
    /// Mapping base; 0 = empty slot.
    base: usize,
    /// File offset of `base` (page-aligned).
    start: i64,
    len: usize,
    /// Last use, for eviction.
    stamp: u64,
    /// Views currently reading the window: written with the lock held when it grows, without it
    /// when a view drops.
    users: AtomicU32,
}

struct Table {
    busy: AtomicBool,
    clock: UnsafeCell<u64>,
    slots: UnsafeCell<[Slot; SLOTS]>,
}

// SAFETY: `clock` and the slots' plain fields are touched only by the thread holding `busy`;
// `users` is atomic.
unsafe impl Sync for Table {}

#[allow(clippy::declare_interior_mutable_const)] // each array element gets its own copy
const EMPTY: Slot = Slot {
    dev: 0,
    ino: 0,
    base: 0,
    start: 0,
    len: 0,
    stamp: 0,
    users: AtomicU32::new(0),
};

static TABLE: Table = Table {
    busy: AtomicBool::new(false),
    clock: UnsafeCell::new(0),
    slots: UnsafeCell::new([EMPTY; SLOTS]),
};

/// Bytes of a file readable through a mapping until dropped.
pub(crate) struct View {
    ptr: *const u8,
    len: usize,
    owner: Owner,
}

enum Owner {
    /// A slot of the table; its `users` was raised for us.
    Slot(usize),
    /// A private mapping, unmapped on drop.
    Own { base: *mut libc::c_void, len: usize },
}

impl View {
    pub(crate) fn iovec(&self) -> libc::iovec {
        libc::iovec {
            iov_base: self.ptr as *mut libc::c_void,
            iov_len: self.len,
        }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        match self.owner {
            Owner::Slot(i) => {
                // SAFETY: `users` is atomic; the slot array lives forever. Release: our reads of
                // the window happen before an evicting thread's Acquire sees 0 and unmaps it.
                let users = unsafe { &(*TABLE.slots.get())[i].users };
                users.fetch_sub(1, Ordering::Release);
            }
            Owner::Own { base, len } => {
                // SAFETY: unmaps exactly the private mapping `map` made; nothing else refers to it.
                unsafe { libc::munmap(base, len) };
            }
        }
    }
}

/// Maps `[start, start+len)` of `fd` read-only; `start` page-aligned.
fn map(fd: i32, start: i64, len: usize) -> Option<*mut libc::c_void> {
    // SAFETY: a fresh read-only mapping placed by the kernel; it aliases nothing of ours.
    let base = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            start,
        )
    };
    (base != libc::MAP_FAILED).then_some(base)
}

/// A view of `[at, at+n)` of the file `fd` (identified by `st`, `size` bytes long when last
/// asked) with `0 < n <= want`, or `None` if it cannot be mapped. The caller has clamped `want`
/// to `size`.
pub(crate) fn view(fd: i32, st: &libc::stat, size: i64, at: i64, want: usize) -> Option<View> {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as i64;
    let start = at & !(page - 1);
    let size = size.max(0);
    // The window: from the page holding `at`, up to WINDOW, never past the size just seen.
    let len = ((size - start).max(0) as usize).min(WINDOW);
    let skip = (at - start) as usize;
    if len <= skip {
        return None;
    }
    let (dev, ino) = (st.st_dev, st.st_ino);
    if TABLE
        .busy
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        let base = map(fd, start, len)?;
        return Some(View {
            // SAFETY: skip < len, inside the mapping.
            ptr: unsafe { (base as *const u8).add(skip) },
            len: (len - skip).min(want),
            owner: Owner::Own { base, len },
        });
    }
    // SAFETY: we hold `busy`, so the table's plain fields are ours until we release it.
    let (slots, clock) = unsafe { (&mut *TABLE.slots.get(), &mut *TABLE.clock.get()) };
    *clock += 1;
    let hit = slots.iter().position(|s| {
        s.base != 0 && s.dev == dev && s.ino == ino && s.start <= at && at < s.start + s.len as i64
    });
    let v = match hit {
        Some(i) => Some(slot_view(slots, i, *clock, at, want)),
        None => match map(fd, start, len) {
            None => None,
            Some(base) => {
                // Evict the least recently used window nobody reads (Acquire: pairs with the
                // Release of the last view's drop).
                let free = (0..SLOTS)
                    .filter(|&i| slots[i].users.load(Ordering::Acquire) == 0)
                    .min_by_key(|&i| (slots[i].base != 0, slots[i].stamp));
                match free {
                    Some(i) => {
                        let s = &mut slots[i];
                        if s.base != 0 {
                            // SAFETY: the slot's own mapping, which no view reads (users == 0,
                            // and new users need the lock we hold).
                            unsafe { libc::munmap(s.base as *mut libc::c_void, s.len) };
                        }
                        (s.dev, s.ino, s.base, s.start, s.len) =
                            (dev, ino, base as usize, start, len);
                        Some(slot_view(slots, i, *clock, at, want))
                    }
                    None => Some(View {
                        // SAFETY: skip < len, inside the mapping.
                        ptr: unsafe { (base as *const u8).add(skip) },
                        len: (len - skip).min(want),
                        owner: Owner::Own { base, len },
                    }),
                }
            }
        },
    };
    TABLE.busy.store(false, Ordering::Release);
    v
}

/// A view through slot `i`, which covers `at`; called with the lock held.
fn slot_view(slots: &mut [Slot; SLOTS], i: usize, now: u64, at: i64, want: usize) -> View {
    let s = &mut slots[i];
    s.stamp = now;
    s.users.fetch_add(1, Ordering::Relaxed);
    let skip = (at - s.start) as usize;
    View {
        // SAFETY: start <= at < start + len, inside the mapping.
        ptr: unsafe { (s.base as *const u8).add(skip) },
        len: (s.len - skip).min(want),
        owner: Owner::Slot(i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    fn file(tag: u8, len: usize) -> (std::fs::File, libc::stat) {
        let path =
            std::env::temp_dir().join(format!("snstack-filemap-{}-{tag}", std::process::id()));
        let mut f = std::fs::File::create(&path).unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 ^ tag).collect();
        f.write_all(&data).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        // SAFETY: fstat into a zeroed buffer we own.
        let mut st: libc::stat = unsafe { core::mem::zeroed() };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::fstat(f.as_raw_fd(), &mut st) }, 0);
        (f, st)
    }

    fn bytes(v: &View) -> &[u8] {
        // SAFETY: the view's bytes stay mapped while it lives.
        unsafe { core::slice::from_raw_parts(v.ptr, v.len) }
    }

    #[test]
    fn hits_clamps_and_never_evicts_a_window_in_use() {
        let (f, st) = file(0, 3 << 20);
        let fd = f.as_raw_fd();
        let held = view(fd, &st, st.st_size, 5000, 100).unwrap();
        assert!(matches!(held.owner, Owner::Slot(_)));
        assert_eq!(
            bytes(&held),
            &(5000..5100).map(|i| (i % 251) as u8).collect::<Vec<_>>()[..]
        );
        // Same window again: a hit on the same slot, bounded by the window's end.
        // (the window starts at the page holding 5000).
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let again = view(fd, &st, st.st_size, 6000, WINDOW).unwrap();
        assert_eq!(again.ptr as usize, held.ptr as usize + 1000);
        assert_eq!(again.len, WINDOW - (6000 - (5000 & !(page - 1))));
        drop(again);
        // Past the size the caller saw: nothing to map.
        assert!(view(fd, &st, 4096, 4096, 10).is_none());
        // Fill every other slot; the held window survives and still reads right.
        let others: Vec<_> = (1..=SLOTS as u8 + 2).map(|t| (t, file(t, 8192))).collect();
        for (t, (g, s)) in &others {
            let v = view(g.as_raw_fd(), s, s.st_size, 1, 10).unwrap();
            assert_eq!(bytes(&v), &(1..11u8).map(|i| i ^ t).collect::<Vec<_>>()[..]);
        }
        assert_eq!(bytes(&held)[0], (5000 % 251) as u8);
    }
}
