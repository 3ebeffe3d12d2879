//! Cache prefetch hints for connection state.
//!
//! A connection's state is touched once per segment, hundreds of microseconds apart, while the
//! same core runs the application, the device's threads and other connections: by then its cache
//! lines have left the core's private caches, and each line the segment's path touches is a
//! separate miss (a `Tcb` spans about 20 lines). Asking for all of them as soon as the
//! connection is known overlaps those misses instead of taking them one after another, as the
//! path reaches each field. Linux gets part of the same effect by grouping `tcp_sock`'s hot
//! fields into few cache lines.

/// Bytes of one cache line (x86_64 and the Arm cores of a BlueField).
const LINE: usize = 64;
/// At most this many lines per call (beyond that the hint stops paying for itself).
const MAX_LINES: usize = 32;

/// Asks the CPU to bring every cache line of `*x` (up to [`MAX_LINES`]) towards L1. A hint:
/// no effect on the program's meaning, and none at all on other architectures.
#[inline]
pub fn prefetch<T>(x: &T) {
    let base = (x as *const T).cast::<u8>();
    let len = core::mem::size_of::<T>().min(MAX_LINES * LINE);
    let mut off = 0;
    while off < len {
        line(base.wrapping_add(off));
        off += LINE;
    }
}

/// The same for the first `max_lines` lines of a byte slice (a frame's headers).
#[inline]
pub fn prefetch_bytes(b: &[u8], max_lines: usize) {
    let len = b.len().min(max_lines * LINE);
    let mut off = 0;
    while off < len {
        line(b.as_ptr().wrapping_add(off));
        off += LINE;
    }
}

/// The same for `len` bytes (up to [`MAX_LINES`] lines) at `p`, memory the caller may not
/// borrow yet (a device ring slot another agent is still writing). A prefetch neither reads
/// nor writes: any address is fine, a bad one is simply ignored.
#[inline]
pub fn prefetch_raw(p: *const u8, len: usize) {
    let len = len.min(MAX_LINES * LINE);
    let mut off = 0;
    while off < len {
        line(p.wrapping_add(off));
        off += LINE;
    }
}

#[inline(always)]
#[allow(unsafe_code)]
fn line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that never faults and never changes memory; `p` points into
    // a live object the caller borrows.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `prfm` is a hint that never faults and never changes memory or flags.
    unsafe {
        core::arch::asm!("prfm pldl1keep, [{0}]", in(reg) p, options(nostack, readonly, preserves_flags))
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_touch_nothing() {
        let v = [7u8; 300];
        prefetch(&v);
        prefetch_bytes(&v, 2);
        prefetch_bytes(&[], 4);
        prefetch_raw(core::ptr::null(), 128);
        prefetch(&());
        assert!(v.iter().all(|&b| b == 7));
    }
}
