//! TEMPORARY, deleted at the merge with the new `Device` trait (branch `devices`): a private copy
//! of the new trait's shape, which xdp.rs implements, and an adapter from it to the current
//! (old) `device::Device`, so the AF_XDP device runs on the current engine until then.
//!
//! Merge: delete this file and its `mod` line in mod.rs; in xdp.rs replace
//! `use super::xdp_compat::{Device, TxFrame};` with `use super::device::{Device, TxFrame};`.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;

use super::xdp::Xdp;

/// The new trait's frame to send (device.rs after the merge).
#[allow(dead_code)] // `meta` is read by the new engine only
pub struct TxFrame {
    pub buf: Vec<u8>,
    pub meta: snstack_tcp::TxMeta,
}

/// The new `Device` trait, verbatim (device.rs after the merge).
pub trait Device {
    fn caps(&self) -> snstack_tcp::DeviceCaps;
    fn mac(&self) -> [u8; 6];
    /// Calls `f` for each received frame (at most `max`), borrowed from the device's own memory
    /// (UMEM) for the duration of the call; returns how many.
    fn rx_burst(
        &mut self,
        max: usize,
        f: &mut dyn FnMut(&[u8], snstack_tcp::RxMeta),
    ) -> io::Result<usize>;
    /// Sends frames from the front of `frames`, removing each one sent and pushing its emptied
    /// buffer onto `done` for reuse; stops when the device is full. Returns how many were sent.
    fn tx_burst(
        &mut self,
        frames: &mut VecDeque<TxFrame>,
        done: &mut Vec<Vec<u8>>,
    ) -> io::Result<usize>;
    fn rx_fd(&self) -> Option<RawFd>;
    fn next_due(&self) -> Option<std::time::Instant> {
        None
    }
}

/// The old trait over the new one: received frames are copied out of the UMEM into owned
/// buffers (the old trait's only form), frames to send are wrapped without copying.
impl super::device::Device for Xdp {
    fn rx_burst(&mut self, out: &mut VecDeque<Vec<u8>>, max: usize) -> io::Result<usize> {
        Device::rx_burst(self, max, &mut |f, _| out.push_back(f.to_vec()))
    }

    fn tx_burst(&mut self, frames: &mut VecDeque<Vec<u8>>) -> io::Result<usize> {
        let mut q: VecDeque<TxFrame> = frames
            .drain(..)
            .map(|buf| TxFrame {
                buf,
                meta: snstack_tcp::TxMeta::default(),
            })
            .collect();
        let mut done = Vec::new();
        let r = Device::tx_burst(self, &mut q, &mut done);
        frames.extend(q.into_iter().map(|f| f.buf));
        r
    }

    fn mac(&self) -> [u8; 6] {
        Device::mac(self)
    }

    fn mtu(&self) -> usize {
        // The current engine's frames are at most 1514 bytes (device::MAX_FRAME).
        Device::caps(self).mtu.min(1500)
    }

    fn rx_fd(&self) -> Option<RawFd> {
        Device::rx_fd(self)
    }

    fn next_due(&self) -> Option<std::time::Instant> {
        Device::next_due(self)
    }
}
