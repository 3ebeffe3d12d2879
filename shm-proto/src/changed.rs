//! Changed-slot bitmaps: the agent-fed "ready list" of an epoll waiter, and the host-fed
//! TX-changed bitmap of the agent (new TX bytes, in place of one command per send; the host's
//! threads are its setters and ring only when [`mark`] says so, the agent takes).
//!
//! Each waiter slot owns one bit per socket slot (`words`, in the region's changed area) and a
//! summary word (`Waiter::changed`, on the cache line of `Waiter::sleeping`) whose bit `g` says
//! "some word of group `g` may be non-zero". A group is [`group_len`] consecutive words, so 64
//! summary bits cover any `max_sockets`.
//!
//! ```text
//!  agent, per changed slot s, per waiter i in waiter_mask(s):
//!      publish state (Release)  ->  mark(i, s)  ->  must_ring(waiter[i].sleeping)
//!  host epoll scan:
//!      take(i) -> examine those slots (+ its own carried entries)
//!      ... announce(sleeping) -> take(i) -> examine -> block
//! ```
//!
//! Only the agent sets bits and only the host clears them (by swapping a word to 0), so a bit is
//! never lost: a change after the host's swap sets it again and, if the host already announced
//! its sleep, rings. The publication chain is Release (state, then `mark`'s RMWs) / Acquire (the
//! host's swaps), and the lost-wake-up argument is the flag form of [`crate::wake`]: the host's
//! `take` after `announce` either sees the bit (the agent's `must_ring` came first and the
//! announce acquired it) or the agent's `must_ring` reads the announcement and rings.
//! `tests/loom_wake.rs` model-checks both with these functions.

use crate::primitive::{AtomicU64, Ordering};

/// Words of a bitmap of `slots` bits.
pub const fn words_for(slots: u32) -> usize {
    (slots as usize).div_ceil(64)
}

/// Words covered by one summary bit for a bitmap of `words` words.
pub const fn group_len(words: usize) -> usize {
    let g = words.div_ceil(64);
    if g == 0 {
        1
    } else {
        g
    }
}

/// The setter's side: slot `slot` changed. Call after publishing the change and before the
/// taker's doorbell decision (`wake::must_ring`). Out-of-range slots are ignored (false).
///
/// The summary bit is set only when the word was empty: a non-empty word was made so by an
/// earlier `mark` whose summary bit is either still pending or already taken by a taker that has
/// not swapped this word yet (it swaps the words of a group only after taking the group's summary
/// bit, so it will see this bit too).
///
/// Returns true when this mark set a summary bit that was clear. A setter that may skip the
/// doorbell decision otherwise (the host's threads marking the TX-changed bitmap; the agent's
/// epoll marks always ring) may rely on it: a mark that returns false found its word or its
/// summary bit already set by a mark whose setter returned true (or will: the summary `fetch_or`
/// follows the word's). That bit stays set until the taker swaps the summary, and a taker that
/// swaps it goes on to swap the group's words, where it finds this bit; a taker about to sleep
/// announces first and then re-checks the summary, which the doorbell decision of the
/// true-returning setter orders (the flag form of [`crate::wake`]). Model-checked in
/// `tests/loom_wake.rs` (`changed_bitmap_*`, `tx_changed_*`).
pub fn mark(summary: &AtomicU64, words: &[AtomicU64], slot: u32) -> bool {
    let w = slot as usize / 64;
    let Some(word) = words.get(w) else {
        return false;
    };
    if word.fetch_or(1u64 << (slot % 64), Ordering::Release) != 0 {
        return false;
    }
    let bit = 1u64 << ((w / group_len(words.len())) % 64);
    summary.fetch_or(bit, Ordering::AcqRel) & bit == 0
}

/// Host: takes (clears) the changed bits, calling `f(slot)` for each set bit. Returns whether
/// anything was set. Each bit is reported to exactly one taker.
pub fn take(summary: &AtomicU64, words: &[AtomicU64], mut f: impl FnMut(u32)) -> bool {
    // A plain load first: in the busy steady state the summary is usually 0 and the line stays
    // shared instead of bouncing on every scan. After `announce` it still sees any mark whose
    // `must_ring` came first (the announce acquired it).
    if summary.load(Ordering::Relaxed) == 0 {
        return false;
    }
    let mut sum = summary.swap(0, Ordering::Acquire);
    let gl = group_len(words.len());
    let mut any = false;
    while sum != 0 {
        let g = sum.trailing_zeros() as usize;
        sum &= sum - 1;
        let lo = g * gl;
        let hi = (lo + gl).min(words.len());
        for (w, word) in words.iter().enumerate().take(hi).skip(lo) {
            if word.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let mut bits = word.swap(0, Ordering::Acquire);
            while bits != 0 {
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                any = true;
                f((w * 64) as u32 + b);
            }
        }
    }
    any
}

/// Host: the bits currently set, without clearing them (for a readiness peek that must not
/// consume). May miss marks racing with it; callers use it only where a later `take` follows.
pub fn peek(summary: &AtomicU64, words: &[AtomicU64], mut f: impl FnMut(u32)) {
    let mut sum = summary.load(Ordering::Acquire);
    let gl = group_len(words.len());
    while sum != 0 {
        let g = sum.trailing_zeros() as usize;
        sum &= sum - 1;
        let lo = g * gl;
        let hi = (lo + gl).min(words.len());
        for (w, word) in words.iter().enumerate().take(hi).skip(lo) {
            let mut bits = word.load(Ordering::Acquire);
            while bits != 0 {
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                f((w * 64) as u32 + b);
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn bitmap(slots: u32) -> (AtomicU64, Vec<AtomicU64>) {
        (
            AtomicU64::new(0),
            (0..words_for(slots)).map(|_| AtomicU64::new(0)).collect(),
        )
    }

    fn taken(s: &AtomicU64, w: &[AtomicU64]) -> Vec<u32> {
        let mut v = Vec::new();
        take(s, w, |x| v.push(x));
        v.sort_unstable();
        v
    }

    #[test]
    fn geometry() {
        assert_eq!(words_for(1), 1);
        assert_eq!(words_for(64), 1);
        assert_eq!(words_for(65), 2);
        assert_eq!(words_for(1024), 16);
        assert_eq!(group_len(16), 1);
        assert_eq!(group_len(64), 1);
        assert_eq!(group_len(65), 2);
        assert_eq!(group_len(words_for(1 << 20)), 256);
    }

    #[test]
    fn marks_are_taken_once() {
        let (s, w) = bitmap(1024);
        for slot in [0, 1, 63, 64, 500, 1023, 1, 1024, 5000] {
            mark(&s, &w, slot);
        }
        assert_eq!(taken(&s, &w), vec![0, 1, 63, 64, 500, 1023]);
        assert_eq!(s.load(Ordering::Relaxed), 0);
        assert!(taken(&s, &w).is_empty());
        mark(&s, &w, 7);
        assert_eq!(taken(&s, &w), vec![7]);
    }

    #[test]
    fn second_mark_in_a_word_skips_the_summary_but_is_still_taken() {
        let (s, w) = bitmap(128);
        mark(&s, &w, 3);
        let sum = s.load(Ordering::Relaxed);
        mark(&s, &w, 4);
        assert_eq!(s.load(Ordering::Relaxed), sum);
        assert_eq!(taken(&s, &w), vec![3, 4]);
    }

    #[test]
    fn large_bitmaps_group_words_under_one_summary_bit() {
        let slots = 1 << 20;
        let (s, w) = bitmap(slots);
        let marks = [0u32, 64 * 255, 64 * 256, slots - 1, 12345];
        for &m in &marks {
            mark(&s, &w, m);
        }
        // Slots 0, 12345 and 64*255 share group 0; 64*256 is group 1; the last slot group 63.
        assert_eq!(s.load(Ordering::Relaxed), 1 | 2 | 1 << 63);
        let mut want = marks.to_vec();
        want.sort_unstable();
        let mut peeked = Vec::new();
        peek(&s, &w, |x| peeked.push(x));
        peeked.sort_unstable();
        assert_eq!(peeked, want);
        assert_eq!(taken(&s, &w), want);
    }

    #[test]
    fn take_with_summary_set_but_words_already_taken() {
        // A mark racing a take can leave a summary bit over an empty word: harmless.
        let (s, w) = bitmap(64);
        s.store(1, Ordering::Relaxed);
        assert!(!take(&s, &w, |_| panic!("nothing is set")));
        assert_eq!(s.load(Ordering::Relaxed), 0);
    }
}
