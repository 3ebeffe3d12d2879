//! The publish / sleep / wake protocol, shared by both directions of the channel.
//!
//! A waker publishes (an index store) and then decides whether to ring a doorbell; a sleeper
//! announces itself, re-checks, and only then blocks. The decision points are read-modify-writes on
//! one word (the flag or the waiter count), never plain loads: RMWs on one location are totally
//! ordered, so either the waker's RMW comes first and the sleeper's RMW *acquires* it, and with it
//! the publication, so the re-check sees the work; or the sleeper's RMW comes first and the waker's
//! RMW reads the announcement and rings. This needs only acquire/release reasoning (no SeqCst
//! fence between different words), which is also what loom models exactly.
//!
//! In the busy steady state the word stays in the waker's cache (the sleeper touches it only when
//! it goes to sleep), so the RMW is a local locked instruction.
//!
//! * flag form (`AgentWake::sleeping`, `Waiter::sleeping`): the doorbell is an eventfd; the waker swaps
//!   the flag to 0, so one sleep costs at most one doorbell write.
//! * sequence form (`wake_seq`/`waiters`, `region_seq`/`region_waiters`): the doorbell is a futex on
//!   the sequence word. The sleeper reads the sequence *before* it counts itself in and re-checks,
//!   and blocks only while the word still holds that value, so a bump between re-check and block is
//!   never lost.
//!
//! * kick form (`rx_blocked` = `SockCtl::rx_head.blocked`, on the line of the index it guards): a
//!   per-socket flag that says whether the stream's producer (the agent) will look at the
//!   consumer's index again by itself. The "doorbell" is a command on the ring (`OP_RX_SPACE`),
//!   so the flag also keeps those commands to one per need. Same shape as the flag form,
//!   described at [`rx_block`].
//!
//! New TX bytes are announced with the TX-changed bitmap (`changed::mark` by the host,
//! `changed::take` by the agent) inside the flag form: a mark that sets a summary bit is a
//! publication followed by `must_ring` on `AgentWake::sleeping`.
//!
//! `tests/loom_wake.rs` model-checks every form with these very functions.

use crate::primitive::{AtomicU32, Ordering};

/// Flag form, sleeper: announce; then re-check the condition; then block (or [`retract`]).
pub fn announce(flag: &AtomicU32) {
    flag.swap(1, Ordering::AcqRel);
}

/// Flag form, sleeper: no longer sleeping (woke up, or the re-check found work).
pub fn retract(flag: &AtomicU32) {
    flag.swap(0, Ordering::AcqRel);
}

/// Flag form, waker, after publishing: true when the doorbell must be rung.
pub fn must_ring(flag: &AtomicU32) -> bool {
    flag.swap(0, Ordering::AcqRel) != 0
}

/// Sequence form, sleeper: the value to pass to the futex wait. Call before the re-check.
pub fn prepare_wait(seq: &AtomicU32, waiters: &AtomicU32) -> u32 {
    let seen = seq.load(Ordering::Acquire);
    waiters.fetch_add(1, Ordering::AcqRel);
    seen
}

/// Sequence form, sleeper: after the wait returned (or was skipped).
pub fn finish_wait(waiters: &AtomicU32) {
    waiters.fetch_sub(1, Ordering::AcqRel);
}

/// Sequence form, waker, after publishing: bumps the sequence; true when a futex wake is needed.
pub fn bump(seq: &AtomicU32, waiters: &AtomicU32) -> bool {
    seq.fetch_add(1, Ordering::AcqRel);
    waiters.fetch_add(0, Ordering::AcqRel) != 0
}

// Kick form, RX: the agent produces into the RX stream, the host drains it; `rx_blocked` = 1
// means "the agent found RX full and stopped reading: it will not look at rx_head again until an
// OP_RX_SPACE".

/// RX blocked, agent, when RX looked full: announce; then re-check the free space; then stop
/// reading, or [`rx_unblock`] and go on when the re-check found room.
///
/// The host may drain RX at any moment and never sleeps on the agent's behalf, so what must not be
/// lost is the agent's next look: either the host's [`rx_space_needed`] swap comes after this one
/// and reads the 1 (and posts `OP_RX_SPACE`), or it came before, and this swap acquires the host's
/// publication of `rx_head` so the re-check sees the room. The flag form with the agent as the
/// sleeper and `OP_RX_SPACE` as the doorbell.
pub fn rx_block(rx_blocked: &AtomicU32) {
    rx_blocked.swap(1, Ordering::AcqRel);
}

/// RX blocked, agent: the re-check after [`rx_block`] found room. An `OP_RX_SPACE` the host posts
/// meanwhile is harmless (one more look).
pub fn rx_unblock(rx_blocked: &AtomicU32) {
    rx_blocked.swap(0, Ordering::AcqRel);
}

/// RX blocked, host, after publishing `rx_head`: true when it must post `OP_RX_SPACE`.
pub fn rx_space_needed(rx_blocked: &AtomicU32) -> bool {
    rx_blocked.swap(0, Ordering::AcqRel) != 0
}
