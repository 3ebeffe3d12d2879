//! The publish / sleep / wake protocol, shared by both directions of the channel.
//!
//! A waker publishes (an index store) and then decides whether to ring a doorbell; a sleeper
//! announces itself, re-checks, and only then blocks. With both sides using SeqCst for the announce
//! and the check (a Dekker pair), at least one of them sees the other: either the sleeper's re-check
//! sees the publication, or the waker sees the announcement and rings. Two forms:
//!
//! * flag form (`agent_sleeping`, `Waiter::sleeping`): the doorbell is an eventfd; the waker swaps the
//!   flag to 0 so one sleep costs at most one doorbell write.
//! * sequence form (`wake_seq`/`waiters`, `region_seq`/`region_waiters`): the doorbell is a futex on
//!   the sequence word. The sleeper reads the sequence *before* its re-check and blocks only while the
//!   word still holds that value, so a bump between re-check and block is never lost.
//!
//! `tests/loom_wake.rs` model-checks both forms with these very functions.

use crate::primitive::{fence, AtomicU32, Ordering};

/// Flag form, sleeper: announce; then re-check the condition; then block (or [`retract`]).
pub fn announce(flag: &AtomicU32) {
    flag.store(1, Ordering::SeqCst);
    fence(Ordering::SeqCst);
}

/// Flag form, sleeper: no longer sleeping (woke up, or the re-check found work).
pub fn retract(flag: &AtomicU32) {
    flag.store(0, Ordering::SeqCst);
}

/// Flag form, waker, after publishing: true when the doorbell must be rung.
pub fn must_ring(flag: &AtomicU32) -> bool {
    fence(Ordering::SeqCst);
    flag.load(Ordering::SeqCst) != 0 && flag.swap(0, Ordering::SeqCst) != 0
}

/// Sequence form, sleeper: the value to pass to the futex wait. Call before the re-check.
pub fn prepare_wait(seq: &AtomicU32, waiters: &AtomicU32) -> u32 {
    let seen = seq.load(Ordering::SeqCst);
    waiters.fetch_add(1, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    seen
}

/// Sequence form, sleeper: after the wait returned (or was skipped).
pub fn finish_wait(waiters: &AtomicU32) {
    waiters.fetch_sub(1, Ordering::SeqCst);
}

/// Sequence form, waker, after publishing: bumps the sequence; true when a futex wake is needed.
pub fn bump(seq: &AtomicU32, waiters: &AtomicU32) -> bool {
    seq.fetch_add(1, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    waiters.load(Ordering::SeqCst) != 0
}
