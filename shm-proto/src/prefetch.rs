//! Cache prefetch hints for a consumer that is about to look at many sockets at once.
//!
//! Each socket a poll finds changed costs its reader a few cache misses on lines the other side
//! wrote (the producer index, the state flags, the first bytes of the message, the TX line it
//! is about to write): taken one socket after the other they add up to most of a small
//! request's host CPU. Asking for all of them first lets the misses of a batch overlap. A hint
//! only: it never faults (any address may be passed) and changes no value; where the target
//! has no stable prefetch instruction it does nothing.

/// Hints that the cache line holding `p` will be read soon.
#[inline(always)]
pub fn read<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    hint::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Hints that the cache line holding `p` will be written soon: PREFETCHW (the line asked for
/// exclusive) when the build targets a CPU that has it (`-C target-cpu`), a read prefetch with
/// the default x86-64 target.
#[inline(always)]
pub fn write<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    hint::<{ core::arch::x86_64::_MM_HINT_ET0 }>(p.cast());
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn hint<const STRATEGY: i32>(p: *const i8) {
    // SAFETY: PREFETCH* is a hint: it does not fault on any address and writes nothing.
    unsafe { core::arch::x86_64::_mm_prefetch::<STRATEGY>(p) };
}

#[cfg(all(test, not(loom)))]
mod tests {
    #[test]
    fn hints_change_nothing_and_take_any_address() {
        let v = [7u64; 16];
        super::read(v.as_ptr());
        super::write(v.as_ptr());
        // Not mapped, not aligned: still no fault.
        super::read(8usize as *const u8);
        super::write(usize::MAX as *const u8);
        assert_eq!(v, [7u64; 16]);
    }
}
