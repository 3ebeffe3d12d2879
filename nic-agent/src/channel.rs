//! The agent's endpoint of one process's channel: the mapped region, the command consumer, the
//! event producer, and the batched wake-ups toward the host.
//!
//! Per loop iteration the agent pops commands, executes them (which posts completions and marks
//! sockets dirty), then calls [`Channel::flush`] once: pending events go into the ring, the region
//! futex is bumped once, and each dirty socket's futex and its waiters' eventfds are rung once.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;

use shm_proto::region::Geometry;
use shm_proto::{wake, Cmd, Consumer, Evt, Header, Payload, Producer, Region, MAX_WAITERS};

use crate::host_poll;
use crate::pcie::{self, Dir};
use crate::session::Violation;
use crate::stats::Counters;
use crate::sys;

pub struct Channel {
    region: Region,
    cmds: Consumer<Cmd>,
    evts: Producer<Evt>,
    /// Completions that did not fit the event ring yet (kept in order).
    overflow: VecDeque<Evt>,
    posted: bool,
    /// Commands were taken from the ring since the last flush: a host that found the ring full
    /// waits on the region futex for that space (preload `Channel::push`).
    consumed: bool,
    dirty: Vec<u32>,
    dirty_mark: Vec<bool>,
    /// Publication counter (`SockState::stamp`).
    stamp: u64,
    waiters: Vec<Option<OwnedFd>>,
    /// Sockets that changed since the agent last went to sleep (a round): how many connections
    /// the host has to answer at once (host_poll.rs). `round_of[slot]` is the round (mod 256)
    /// in which `slot` was last counted.
    delivered: u32,
    round: u8,
    round_of: Vec<u8>,
    /// A round delivered a batch, and no polling sleep has given up on the host since.
    hot: bool,
    /// The host runs on CPUs apart from the agent's (the shell reads its affinity).
    apart: bool,
    /// Waiters whose doorbell is owed: they announced sleep, the announcement was consumed
    /// (`wake::must_ring`), and the eventfd write waits for [`Channel::ring_owed`].
    owed: u64,
    pub counters: Counters,
    mirrored: Counters,
    /// PCIe crossings made in this loop iteration (model off: never touched).
    pcie: pcie::Batch,
    /// The region's memfd (a duplicate of the one the host maps): its allocated size is the
    /// channel memory `snstack-agent stats` reports.
    memfd: OwnedFd,
    /// Keeps `region`, `cmds` and `evts` valid; declared last so it is dropped last.
    _map: sys::Mmap,
}

impl Channel {
    /// Creates the memfd, maps and initialises a region. Returns the channel and the memfd to
    /// pass to the host.
    pub fn create(geo: Geometry) -> io::Result<(Channel, OwnedFd)> {
        let off = geo
            .offsets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let len =
            usize::try_from(off.total).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        let memfd = sys::memfd_sealed(c"snstack-region", off.total)?;
        let map = sys::Mmap::shared(&memfd, len)?;
        // SAFETY: a fresh MAP_SHARED mapping of a new memfd: zero-filled, page aligned, `len`
        // bytes, and owned by the returned Channel (`_map`), which outlives every view.
        let region = unsafe { Region::init(map.ptr(), map.len(), geo) }
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let n = geo.max_sockets as usize;
        let ch = Channel {
            cmds: region.cmd_consumer(),
            evts: region.evt_producer(),
            region,
            overflow: VecDeque::new(),
            posted: false,
            consumed: false,
            delivered: 0,
            round: 1,
            round_of: vec![0; n],
            hot: false,
            apart: false,
            owed: 0,
            dirty: Vec::new(),
            dirty_mark: vec![false; n],
            stamp: 0,
            waiters: (0..MAX_WAITERS).map(|_| None).collect(),
            counters: Counters::default(),
            mirrored: Counters::default(),
            pcie: pcie::Batch::default(),
            memfd: memfd.try_clone()?,
            _map: map,
        };
        Ok((ch, memfd))
    }

    /// Prepares `slot` for a new socket (`Region::reset_sock`). A previous socket that moved
    /// more than a page through either stream may have left many of its pages resident (bulk
    /// transfers walk the whole ring; small exchanges stay on the first page, stream.rs): those
    /// pages go back to the system first, so a region's memory follows its current use.
    /// Connections that never passed a page cost no syscall here.
    pub fn reset_slot(&self, slot: u32) {
        let r = &self.region;
        let moved = |s: Option<shm_proto::stream::Stream>| {
            s.is_some_and(|s| s.load_tail() as usize > sys::PAGE_SIZE)
        };
        if moved(r.rx(slot)) || moved(r.tx(slot)) {
            if let Some((off, len)) = r.slot_streams(slot) {
                if let Err(e) = self._map.remove(off, len) {
                    tracing::debug!("releasing slot {slot}'s stream pages: {e}");
                }
            }
        }
        r.reset_sock(slot);
    }

    /// Bytes of memory the region holds now (pages ever touched and not released).
    pub fn resident_bytes(&self) -> u64 {
        sys::allocated_bytes(self.memfd.as_raw_fd()).unwrap_or(0)
    }

    pub fn region(&self) -> &Region {
        &self.region
    }

    pub fn header(&self) -> &Header {
        self.region.header()
    }

    /// Next command, validated against the ring invariants.
    pub fn pop_cmd(&mut self) -> Result<Option<Cmd>, Violation> {
        let c = self.cmds.pop()?;
        if c.is_some() {
            self.consumed = true;
            self.counters.h2n_ops += 1;
            self.pcie(Dir::ReadCmds, pcie::ENTRY_BYTES);
        }
        Ok(c)
    }

    /// Cheap re-check before sleeping: commands, or TX-changed marks.
    pub fn cmds_pending(&self) -> bool {
        !self.cmds.is_empty() || self.region.tx_pending()
    }

    /// Takes the TX-changed marks into `out` (slots whose TX streams have new bytes). Each
    /// non-empty bitmap word read counts as one host -> NIC operation (one DMA read of up to 64
    /// sockets' marks on a NIC).
    pub fn take_tx(&mut self, out: &mut Vec<u32>) {
        if !self.region.tx_pending() {
            return;
        }
        let mut word = u32::MAX;
        let mut words = 0u64;
        self.region.take_tx(|slot| {
            if slot / 64 != word {
                word = slot / 64;
                words += 1;
            }
            out.push(slot);
        });
        self.counters.h2n_ops += words;
        for _ in 0..words {
            self.pcie(Dir::ReadCmds, 8);
        }
    }

    /// Completions waiting for room in the event ring.
    pub fn backlog(&self) -> usize {
        self.overflow.len()
    }

    /// Posts the completion of the command `tag` (no-op for tag 0).
    pub fn complete(
        &mut self,
        tag: u64,
        slot: u32,
        result: i64,
        payload: Payload<'_>,
    ) -> Result<(), Violation> {
        if tag == 0 {
            return Ok(());
        }
        let e = Evt::completion(tag, slot, result, payload);
        self.pcie(Dir::Publish, pcie::ENTRY_BYTES);
        if self.overflow.is_empty() && self.evts.push(e)? {
            self.counters.n2h_ops += 1;
            self.posted = true;
        } else {
            self.overflow.push_back(e);
        }
        Ok(())
    }

    /// PCIe model (pcie.rs): `bytes` cross the link going `dir`, before the peer may see them.
    #[inline]
    pub fn pcie(&mut self, dir: Dir, bytes: u64) {
        if pcie::enabled() {
            self.pcie.cross(dir, bytes);
        }
    }

    /// Remembers that the host may be waiting for a change of `slot`.
    pub fn dirty(&mut self, slot: u32) {
        if let Some(m) = self.dirty_mark.get_mut(slot as usize) {
            if !*m {
                *m = true;
                self.dirty.push(slot);
            }
        }
    }

    /// Registers the eventfd of waiter `i`.
    pub fn set_waiter(&mut self, i: usize, fd: OwnedFd) -> bool {
        match self.waiters.get_mut(i) {
            Some(w) => {
                *w = Some(fd);
                true
            }
            None => false,
        }
    }

    /// Once per loop iteration: pending events, the completion futex, socket futexes and the
    /// header counters; waiter doorbells become owed, written by [`Channel::ring_owed`].
    pub fn flush(&mut self) -> Result<(), Violation> {
        while let Some(e) = self.overflow.front().copied() {
            if !self.evts.push(e)? {
                break;
            }
            self.overflow.pop_front();
            self.counters.n2h_ops += 1;
            self.posted = true;
        }
        // Both new events and freed command-ring space are what region-futex waiters wait for.
        // Waking only for events lost the wake-up of a host blocked on a full command ring of
        // posts that have no completion (TX kicks): with 10,000 connections nginx then slept until
        // its liveness timeout for every ring's worth of responses.
        if std::mem::take(&mut self.posted) | std::mem::take(&mut self.consumed) {
            let h = self.region.header();
            if wake::bump(&h.region_seq.0, &h.region_waiters.0) {
                sys::futex_wake(&h.region_seq.0, i32::MAX);
            }
        }
        let dirty = std::mem::take(&mut self.dirty);
        for &slot in &dirty {
            if let Some(m) = self.dirty_mark.get_mut(slot as usize) {
                *m = false;
            }
            if let Some(r) = self.round_of.get_mut(slot as usize) {
                if *r != self.round {
                    *r = self.round;
                    self.delivered += 1;
                }
            }
            self.wake_sock(slot);
        }
        self.dirty = dirty;
        self.dirty.clear();
        if self.counters != self.mirrored {
            self.counters.mirror(&self.region.header().stats.0);
            self.mirrored = self.counters;
        }
        self.pcie.end();
        Ok(())
    }

    /// Writes the owed doorbells (each sleeping waiter's eventfd once).
    pub fn ring_owed(&mut self) {
        let mut owed = std::mem::take(&mut self.owed);
        while owed != 0 {
            let i = owed.trailing_zeros() as usize;
            owed &= owed - 1;
            if let Some(w) = self.region.waiter(i) {
                // A futex sleeper blocks on the flag that `must_ring` just cleared.
                if w.futex.load(Ordering::Relaxed) == 1 {
                    sys::futex_wake(&w.sleeping, 1);
                    continue;
                }
            }
            if let Some(Some(fd)) = self.waiters.get(i) {
                if let Err(e) = sys::eventfd_write(fd.as_raw_fd(), 1) {
                    tracing::debug!("waiter {i} doorbell: {e}");
                }
            }
        }
    }

    /// Doorbells are owed to sleeping host threads.
    pub fn owes(&self) -> bool {
        self.owed != 0
    }

    fn wake_sock(&mut self, slot: u32) {
        let Some(ctl) = self.region.sock(slot) else {
            return;
        };
        // Slots are flushed in the order they first changed in this iteration (the order the
        // backend reported their events), so the stamps carry that order to the host.
        self.stamp += 1;
        ctl.state.0.stamp.store(self.stamp, Ordering::Relaxed);
        if wake::bump(&ctl.state.0.wake_seq, &ctl.host.0.waiters) {
            sys::futex_wake(&ctl.state.0.wake_seq, i32::MAX);
        }
        // An RMW, not a load: it is ordered with the host's `fetch_or` of a new interest bit on
        // this one word, so either we see the bit (and mark/ring) or the host's later scan of the
        // new entry sees the state published above (wake.rs: decisions are RMWs on one word).
        let mut mask = ctl.host.0.waiter_mask.fetch_or(0, Ordering::AcqRel);
        while mask != 0 {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            // The changed-slot bit first, then the doorbell: a host that wakes (or re-checks
            // after announcing) finds the slot in its bitmap.
            self.region.mark_changed(i, slot);
            self.ring_waiter(i);
        }
    }

    fn ring_waiter(&mut self, i: usize) {
        let Some(w) = self.region.waiter(i) else {
            return;
        };
        if wake::must_ring(&w.sleeping) && i < 64 {
            self.owed |= 1 << i;
        }
    }

    /// Marks the channel dead and wakes every host thread that might be blocked on it: futex
    /// sleepers at once, every registered waiter's doorbell owed ([`Channel::ring_owed`]).
    pub fn kill(&mut self) {
        let h = self.region.header();
        h.dead.0.store(1, Ordering::SeqCst);
        wake::bump(&h.region_seq.0, &h.region_waiters.0);
        sys::futex_wake(&h.region_seq.0, i32::MAX);
        for slot in 0..self.region.geometry().max_sockets {
            if let Some(ctl) = self.region.sock(slot) {
                if ctl.host.0.waiters.load(Ordering::Relaxed) != 0 {
                    wake::bump(&ctl.state.0.wake_seq, &ctl.host.0.waiters);
                    sys::futex_wake(&ctl.state.0.wake_seq, i32::MAX);
                }
            }
        }
        for (i, w) in self.waiters.iter().enumerate() {
            if let (Some(_), Some(wt)) = (w, self.region.waiter(i)) {
                wt.sleeping.store(0, Ordering::SeqCst);
                if i < 64 {
                    self.owed |= 1 << i;
                }
            }
        }
    }

    /// The agent is about to sleep: a round that changed many sockets makes the channel hot.
    pub fn end_round(&mut self) {
        self.hot |= std::mem::take(&mut self.delivered) >= host_poll::HOT_BATCH;
        self.round = self.round.wrapping_add(1);
    }

    /// The host is answering a batch of what the agent published, large enough that polling
    /// for its answer beats its doorbell, from CPUs of its own (host_poll.rs).
    pub fn hot(&self) -> bool {
        self.hot && self.apart
    }

    /// Whether the host runs on CPUs apart from the agent's (only such a host's doorbell is a
    /// wake-up of another CPU; one that shares the agent's would lose CPU to its polling).
    pub fn set_apart(&mut self, apart: bool) {
        self.apart = apart;
    }

    /// Polling for the host's answer stopped paying: ask for its doorbell again.
    pub fn cool(&mut self) {
        self.hot = false;
    }

    /// Announce / retract the agent's sleep on this channel.
    pub fn announce_sleep(&self) {
        wake::announce(&self.header().agent.0.sleeping);
    }

    pub fn retract_sleep(&self) {
        wake::retract(&self.header().agent.0.sleeping);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four slots of 4 KiB streams.
    fn small() -> Geometry {
        Geometry {
            max_sockets: 4,
            rx_size: 4096,
            tx_size: 4096,
            ..Geometry::default()
        }
    }

    fn bell_rung(fd: std::os::fd::RawFd) -> bool {
        let mut b = [0u8; 8];
        // SAFETY: `b` is 8 writable bytes; the eventfd is non-blocking (EAGAIN when zero).
        unsafe { libc::read(fd, b.as_mut_ptr().cast(), b.len()) == 8 }
    }

    #[test]
    fn consuming_commands_wakes_a_host_waiting_for_ring_space() {
        let (mut ch, _memfd) = Channel::create(small()).unwrap();
        let region = *ch.region();
        let mut host = region.cmd_producer();
        let h = region.header();
        // A host filled the ring with posts that want no completion, and waits for space.
        let req = shm_proto::Request::TxKick;
        while host.push(req.to_cmd(1)).unwrap() {}
        let seen = wake::prepare_wait(&h.region_seq.0, &h.region_waiters.0);
        // The agent takes one; nothing is posted back.
        assert!(ch.pop_cmd().unwrap().is_some());
        ch.flush().unwrap();
        assert_ne!(
            h.region_seq.0.load(Ordering::Acquire),
            seen,
            "the waiter's futex word did not move"
        );
        wake::finish_wait(&h.region_waiters.0);
        // An iteration that took nothing and posted nothing leaves the word alone.
        let now = h.region_seq.0.load(Ordering::Acquire);
        ch.flush().unwrap();
        assert_eq!(h.region_seq.0.load(Ordering::Acquire), now);
    }

    #[test]
    fn a_batch_makes_the_channel_hot_one_request_does_not() {
        let (mut ch, _memfd) = Channel::create(small()).unwrap();
        let region = *ch.region();
        let mut host = region.cmd_producer();
        ch.set_apart(true);
        // One connection (a ping-pong), however many changes per round: the host keeps its
        // doorbell.
        for _ in 0..300 {
            for _ in 0..8 {
                ch.dirty(0);
                ch.flush().unwrap();
            }
            ch.end_round();
            assert!(!ch.hot());
        }
        // Four sockets changed in one round (over two iterations): polled for, and still
        // while the host answers and in later rounds.
        ch.dirty(0);
        ch.dirty(1);
        ch.flush().unwrap();
        assert!(!ch.hot(), "hot before the round ended");
        ch.dirty(2);
        ch.dirty(3);
        ch.flush().unwrap();
        ch.end_round();
        assert!(ch.hot());
        assert!(host.push(shm_proto::Request::TxKick.to_cmd(1)).unwrap());
        assert!(ch.pop_cmd().unwrap().is_some());
        ch.end_round();
        assert!(ch.hot(), "the host's answer or a quiet round ended polling");
        // A host sharing the agent's CPUs rings.
        ch.set_apart(false);
        assert!(!ch.hot());
        ch.set_apart(true);
        // Polling gave up: doorbells again until the next batch.
        ch.cool();
        assert!(!ch.hot());
    }

    #[test]
    fn region_memory_follows_use() {
        let geo = Geometry {
            max_sockets: 4,
            rx_size: 65536,
            tx_size: 65536,
            ..Geometry::default()
        };
        let (ch, _memfd) = Channel::create(geo).unwrap();
        let rx = ch.region().rx(2).unwrap();
        // Small exchanges, each consumed before the next: they stay on the stream's first page
        // (the first one touched it and the slot's control block).
        rx.copy_in(0, &[1u8; 300]);
        rx.publish_tail(300);
        rx.publish_head(300);
        let fresh = ch.resident_bytes();
        let mut t = 300u32;
        for i in 0..2000u32 {
            assert_eq!(rx.writable(t).unwrap(), 65536);
            rx.copy_in(t, &[i as u8; 300]);
            t = t.wrapping_add(300);
            rx.publish_tail(t);
            rx.publish_head(t);
        }
        let small = ch.resident_bytes() - fresh;
        assert_eq!(small, 0, "{small} more bytes for 600 kB of small exchanges");
        // A bulk transfer that never lets the stream empty walks the whole ring.
        let mut h = t;
        for _ in 0..6 {
            let n = rx.writable(t).unwrap().min(30000);
            rx.copy_in(t, &vec![9u8; n as usize]);
            t = t.wrapping_add(n);
            rx.publish_tail(t);
            h = h.wrapping_add(20000);
            rx.publish_head(h);
        }
        assert!(ch.resident_bytes() - fresh >= 60000);
        // A new socket in the slot: the pages go back, and it starts from zeros.
        ch.reset_slot(2);
        assert!(
            ch.resident_bytes() <= fresh,
            "{} left",
            ch.resident_bytes() - fresh
        );
        let rx = ch.region().rx(2).unwrap();
        assert_eq!((rx.load_tail(), rx.load_head(), rx.load_base()), (0, 0, 0));
        let mut b = [1u8; 16];
        rx.copy_out(0, &mut b);
        assert_eq!(b, [0u8; 16]);
        // A socket that moved less than a page costs no syscall and keeps its page.
        let before = ch.resident_bytes();
        rx.copy_in(0, &[5u8; 100]);
        rx.publish_tail(100);
        ch.reset_slot(2);
        assert!(
            ch.resident_bytes() >= before,
            "a slot that moved under a page gave pages back"
        );
    }

    #[test]
    fn doorbells_are_owed_by_flush_and_written_once_by_ring_owed() {
        let (mut ch, _memfd) = Channel::create(small()).unwrap();
        let bell = sys::eventfd().unwrap();
        let raw = bell.as_raw_fd();
        assert!(ch.set_waiter(3, bell));
        // Host side: waiter 3 watches slot 1 and sleeps.
        ch.region()
            .sock(1)
            .unwrap()
            .host
            .0
            .waiter_mask
            .fetch_or(1 << 3, Ordering::AcqRel);
        wake::announce(&ch.region().waiter(3).unwrap().sleeping);
        ch.dirty(1);
        ch.flush().unwrap();
        assert!(ch.owes());
        assert!(!bell_rung(raw), "flush alone writes no doorbell");
        let mut seen = Vec::new();
        ch.region().take_changed(3, |s| seen.push(s));
        assert_eq!(seen, [1]);
        ch.ring_owed();
        assert!(!ch.owes());
        assert!(bell_rung(raw));
        // The announcement was consumed: another change owes nothing until the host sleeps
        // again.
        ch.dirty(1);
        ch.flush().unwrap();
        assert!(!ch.owes());
        ch.ring_owed();
        assert!(!bell_rung(raw));
    }
}
