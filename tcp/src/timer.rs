//! The engine's timers (retransmission, delayed ACK, keepalive, TIME-WAIT, persist, RACK/TLP) in
//! one hierarchical timing wheel (Varghese and Lauck, "Hashed and Hierarchical Timing Wheels",
//! 1987). RFC 6298 section 5 and RFC 9293 section 3.8 need per-connection timers that are
//! started, restarted and cancelled on almost every segment; a wheel makes each of those O(1),
//! where a heap would pay O(log n) per restart.
//!
//! Layout: a tick is 1 ms ([`TICK_US`]); that is finer than any TCP timer needs (RTO_MIN is
//! 200 ms, the delayed-ACK timer tens of ms, RACK's reordering window a quarter of min_rtt) and
//! coarse enough that the wheel turns rarely. There are [`LEVELS`] levels of 64 slots; level `L`
//! slot `s` holds entries that expire in the current level-`L+1` block of 64^(L+1) ticks, in its
//! level-`L` block number `s` (a block is a run of 64^L ticks): the level of an entry is the
//! highest 6-bit digit in which its expiry tick differs from the wheel's current tick. The six
//! levels span 64^6 ms (about 2.2 years); entries beyond the current top-level block wait in an
//! overflow list (a one-slot level above the top) and are re-cascaded into the wheel when it
//! reaches that block. Every level has a u64 occupancy bitmap, so finding the next non-empty slot
//! is a mask and a `trailing_zeros`, and [`TimerWheel::advance`] jumps straight to it: its cost
//! is the entries moved or fired (each moves down at most `LEVELS` times) plus a few word
//! operations per visited slot, never the idle ticks elapsed.
//!
//! Cancellation is lazy: keys are connection ids, duplicates are allowed, and the caller ignores a
//! key whose connection has no due deadline (and re-schedules it if it has a later one).

use crate::time::Instant;

/// Microseconds per tick.
pub const TICK_US: u64 = 1000;
/// Number of 64-slot levels.
pub const LEVELS: usize = 6;
const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
/// Bits of tick covered by all levels together: entries differing from the current tick above
/// these bits go to the overflow list.
const SPAN_BITS: u32 = SLOT_BITS * LEVELS as u32;

#[derive(Clone, Copy, Debug)]
struct Entry {
    key: u32,
    /// Expiry tick: the first tick whose start is at or after the scheduled instant.
    tick: u64,
}

/// A hierarchical timing wheel keyed by connection id. See the module documentation.
#[derive(Debug)]
pub struct TimerWheel {
    /// Every tick `<= cur` has been processed.
    cur: u64,
    /// `LEVELS * SLOTS` slots, level-major.
    slots: Vec<Vec<Entry>>,
    occupied: [u64; LEVELS],
    /// Entries beyond the current top-level block.
    overflow: Vec<Entry>,
    /// Entries already due when scheduled; they fire at the next advance.
    due: Vec<u32>,
    len: usize,
}

/// Where the next non-empty slot is.
#[derive(Clone, Copy, Debug)]
enum Next {
    Slot {
        level: usize,
        slot: usize,
        tick: u64,
    },
    Overflow {
        tick: u64,
    },
}

impl Next {
    fn tick(self) -> u64 {
        match self {
            Next::Slot { tick, .. } | Next::Overflow { tick } => tick,
        }
    }
}

impl TimerWheel {
    /// An empty wheel whose clock starts at `now` (ticks of 1 ms).
    pub fn new(now: Instant) -> TimerWheel {
        TimerWheel {
            cur: now.as_micros() / TICK_US,
            slots: (0..LEVELS * SLOTS).map(|_| Vec::new()).collect(),
            occupied: [0; LEVELS],
            overflow: Vec::new(),
            due: Vec::new(),
            len: 0,
        }
    }

    /// Schedules `key` to fire at the first [`advance`](Self::advance) whose `now` is at or after
    /// `at` rounded up to the tick. O(1). An `at` already due fires at the next advance.
    pub fn schedule(&mut self, key: u32, at: Instant) {
        // An instant that rounds past the last representable tick fires at the last one.
        let tick = at.as_micros().div_ceil(TICK_US).min(u64::MAX / TICK_US);
        self.len += 1;
        self.insert(Entry { key, tick });
    }

    /// Places an entry relative to `cur`; `len` is not touched.
    fn insert(&mut self, e: Entry) {
        if e.tick <= self.cur {
            self.due.push(e.key);
            return;
        }
        let diff = self.cur ^ e.tick;
        // Highest differing 6-bit digit; diff != 0 here.
        let level = ((63 - diff.leading_zeros()) / SLOT_BITS) as usize;
        if level >= LEVELS {
            self.overflow.push(e);
            return;
        }
        let slot = ((e.tick >> (SLOT_BITS * level as u32)) as usize) & (SLOTS - 1);
        self.slots[level * SLOTS + slot].push(e);
        self.occupied[level] |= 1 << slot;
    }

    /// The earliest non-empty slot after `cur` and the tick at which it must be visited.
    /// Lower levels always hold earlier entries than higher ones (see the module docs).
    fn next_slot(&self) -> Option<Next> {
        for level in 0..LEVELS {
            let shift = SLOT_BITS * level as u32;
            let pos = ((self.cur >> shift) as u32) & (SLOTS as u32 - 1);
            // Slots strictly after the current position at this level.
            let after = u64::MAX.checked_shl(pos + 1).unwrap_or(0);
            let m = self.occupied[level] & after;
            if m != 0 {
                let slot = m.trailing_zeros() as usize;
                let block = shift + SLOT_BITS;
                let base = (self.cur >> block) << block;
                let tick = base + ((slot as u64) << shift);
                return Some(Next::Slot { level, slot, tick });
            }
        }
        if self.overflow.is_empty() {
            None
        } else {
            // The start of the next top-level block; saturates at the end of time.
            let tick = ((self.cur >> SPAN_BITS) + 1)
                .checked_shl(SPAN_BITS)
                .unwrap_or(u64::MAX);
            Some(Next::Overflow { tick })
        }
    }

    /// Moves the clock to `now` and pushes onto `fired` every key whose time is `<= now` (each
    /// scheduled entry exactly once). A `now` earlier than a previous one only fires what was
    /// already due.
    pub fn advance(&mut self, now: Instant, fired: &mut Vec<u32>) {
        let target = (now.as_micros() / TICK_US).max(self.cur);
        self.len -= self.due.len();
        fired.append(&mut self.due);
        while let Some(next) = self.next_slot() {
            let tick = next.tick();
            if tick > target {
                break;
            }
            let entries = match next {
                Next::Slot { level, slot, .. } => {
                    self.occupied[level] &= !(1u64 << slot);
                    core::mem::take(&mut self.slots[level * SLOTS + slot])
                }
                Next::Overflow { .. } => core::mem::take(&mut self.overflow),
            };
            self.cur = tick;
            for e in entries {
                if e.tick <= target {
                    self.len -= 1;
                    fired.push(e.key);
                } else {
                    self.insert(e);
                }
            }
        }
        self.cur = target;
    }

    /// The earliest instant at which some entry may fire: never later than the true earliest,
    /// exact to the tick for entries within the current 64 ms block, and `None` when empty. An
    /// entry already due reports the wheel's current tick.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.due.is_empty() {
            return Some(Instant::from_micros(self.cur.saturating_mul(TICK_US)));
        }
        self.next_slot()
            .map(|n| Instant::from_micros(n.tick().saturating_mul(TICK_US)))
    }

    /// Number of scheduled entries not yet fired.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    fn ms(v: u64) -> Instant {
        Instant::from_millis(v)
    }

    #[test]
    fn fires_at_rounded_up_tick_not_earlier() {
        let mut w = TimerWheel::new(ms(0));
        let mut f = Vec::new();
        w.schedule(1, Instant::from_micros(10_500)); // rounds up to 11 ms
        w.schedule(2, ms(10));
        assert_eq!(w.len(), 2);
        assert_eq!(w.next_deadline(), Some(ms(10)));
        w.advance(Instant::from_micros(9_999), &mut f);
        assert!(f.is_empty());
        w.advance(ms(10), &mut f);
        assert_eq!(f, vec![2]);
        assert_eq!(w.next_deadline(), Some(ms(11)));
        w.advance(Instant::from_micros(10_999), &mut f);
        assert_eq!(f, vec![2]);
        w.advance(ms(11), &mut f);
        assert_eq!(f, vec![2, 1]);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn past_and_duplicates() {
        let mut w = TimerWheel::new(ms(1000));
        let mut f = Vec::new();
        w.schedule(7, ms(5));
        w.schedule(7, ms(5));
        w.schedule(8, ms(1000));
        assert_eq!(w.next_deadline(), Some(ms(1000)));
        w.advance(ms(1000), &mut f);
        f.sort();
        assert_eq!(f, vec![7, 7, 8]);
        assert!(w.is_empty());
    }

    #[test]
    fn long_idle_and_far_future() {
        let mut w = TimerWheel::new(ms(3));
        let mut f = Vec::new();
        let year = 365 * 24 * 3600 * 1000;
        w.schedule(1, ms(5 * year)); // beyond the top level: overflow
        w.schedule(2, ms(70_000)); // level 2
        w.schedule(3, Instant::from_micros(u64::MAX)); // end of time
        let d = w.next_deadline().unwrap();
        assert!(d <= ms(70_000) && d > ms(3));
        w.advance(ms(69_999), &mut f);
        assert!(f.is_empty());
        assert_eq!(w.next_deadline(), Some(ms(70_000)));
        w.advance(ms(70_000), &mut f);
        assert_eq!(f, vec![2]);
        w.advance(ms(5 * year - 1), &mut f);
        assert_eq!(f, vec![2]);
        assert!(w.next_deadline().unwrap() <= ms(5 * year));
        w.advance(ms(5 * year), &mut f);
        assert_eq!(f, vec![2, 1]);
        assert_eq!(w.len(), 1);
        w.advance(Instant::from_micros(u64::MAX - TICK_US), &mut f);
        assert_eq!(f, vec![2, 1]);
        w.advance(Instant::from_micros(u64::MAX), &mut f);
        assert_eq!(f, vec![2, 1, 3]);
        assert!(w.is_empty());
    }

    /// Randomized against a heap: same keys fire at the same advance, never early, never twice,
    /// never lost; `next_deadline` is never later than the true earliest.
    #[test]
    fn randomized_against_heap() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let start = 123_456_789u64; // us, not tick aligned
        let mut now = start;
        let mut w = TimerWheel::new(Instant::from_micros(now));
        let mut heap: BinaryHeap<Reverse<(u64, u32)>> = BinaryHeap::new();
        let mut fired = Vec::new();
        let mut expect = Vec::new();
        let mut seen = vec![false; 100_000];
        let mut next_key = 0u32;
        let hour = 3_600_000_000u64;
        let mut rounds = 0;
        while next_key < 100_000 || !heap.is_empty() {
            rounds += 1;
            // Schedule a burst.
            let n = if next_key < 100_000 { rng.below(64) } else { 0 };
            for _ in 0..n {
                if next_key >= 100_000 {
                    break;
                }
                let delay = match rng.below(10) {
                    0 => 0,
                    1..=4 => rng.below(200_000),         // < 200 ms
                    5..=6 => rng.below(70_000_000),      // < 70 s
                    7 => rng.below(10 * hour),           // hours
                    8 => rng.below(3 * 24 * hour),       // days
                    _ => rng.below(3 * 365 * 24 * hour), // years: overflow
                };
                let at = if rng.below(20) == 0 {
                    now.saturating_sub(rng.below(5_000_000)) // in the past
                } else {
                    now + delay
                };
                w.schedule(next_key, Instant::from_micros(at));
                heap.push(Reverse((at, next_key)));
                next_key += 1;
            }
            assert_eq!(w.len(), heap.len());
            if let Some(Reverse((earliest, _))) = heap.peek() {
                let d = w.next_deadline().expect("non-empty");
                // Never later than the true earliest (rounded up to the tick).
                // (An entry already in the past reports the wheel's current tick.)
                let bound = (earliest.div_ceil(TICK_US) * TICK_US).max(now / TICK_US * TICK_US);
                assert!(
                    d.as_micros() <= bound,
                    "round {rounds} now {now} d {d:?} earliest {earliest} {w:?}"
                );
            } else {
                assert_eq!(w.next_deadline(), None);
            }
            // Advance: small steps mostly, sometimes straight to next_deadline or huge jumps.
            now += match rng.below(12) {
                0..=5 => rng.below(3_000),
                6..=7 => rng.below(2_000_000),
                8 => {
                    let d = w.next_deadline().map_or(0, |d| d.as_micros());
                    d.saturating_sub(now)
                }
                9 => rng.below(5 * hour),
                10 => rng.below(40 * 24 * hour),
                _ => {
                    if next_key >= 100_000 {
                        rng.below(400 * 24 * hour)
                    } else {
                        rng.below(1000)
                    }
                }
            };
            fired.clear();
            w.advance(Instant::from_micros(now), &mut fired);
            expect.clear();
            while let Some(Reverse((at, k))) = heap.peek().copied() {
                // Due once `now` reaches `at` rounded up to the tick.
                if at.div_ceil(TICK_US) * TICK_US <= now {
                    heap.pop();
                    expect.push(k);
                } else {
                    break;
                }
            }
            fired.sort_unstable();
            expect.sort_unstable();
            assert_eq!(fired, expect, "round {rounds} now {now}");
            for &k in &fired {
                assert!(!seen[k as usize], "key {k} fired twice");
                seen[k as usize] = true;
            }
        }
        assert!(w.is_empty());
        assert!(seen.iter().all(|&s| s));
    }
}
