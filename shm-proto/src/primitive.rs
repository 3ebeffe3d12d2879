//! Atomics used by the channel, swapped for loom's under `cfg(loom)` so the wake protocol can be
//! model-checked with the same code that runs in production (crossbeam's approach).

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicU32, AtomicU64};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64};

pub(crate) use core::sync::atomic::Ordering;
