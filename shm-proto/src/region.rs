//! Geometry of a region and a validated view of a mapped one.

use crate::layout::*;
use crate::primitive::{AtomicU64, Ordering};
use crate::ring::{Consumer, Producer};
use crate::stream::Stream;

/// Parameters the agent chooses for a new region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub cmd_entries: u32,
    pub evt_entries: u32,
    pub max_sockets: u32,
    pub rx_size: u32,
    pub tx_size: u32,
    pub spin_ns: u32,
}

impl Default for Geometry {
    fn default() -> Self {
        Geometry {
            cmd_entries: 1024,
            evt_entries: 1024,
            max_sockets: 1024,
            rx_size: 64 * 1024,
            tx_size: 64 * 1024,
            spin_ns: 0,
        }
    }
}

/// Offsets computed from a [`Geometry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offsets {
    pub cmd_off: u64,
    pub evt_off: u64,
    pub waiter_off: u64,
    pub changed_off: u64,
    /// Bytes of one waiter's changed-slot bitmap (a multiple of the cache line).
    pub changed_stride: u64,
    /// The TX-changed bitmap (one bit per socket slot, `changed_stride` bytes).
    pub tx_changed_off: u64,
    pub opt_off: u64,
    pub sock_off: u64,
    pub stream_off: u64,
    pub total: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionError {
    TooSmall,
    BadMagic,
    BadVersion(u32),
    BadGeometry(&'static str),
}

impl core::fmt::Display for RegionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RegionError::TooSmall => write!(f, "region smaller than its header says"),
            RegionError::BadMagic => write!(f, "not an snstack region (bad magic)"),
            RegionError::BadVersion(v) => {
                write!(f, "channel version {v}, this library speaks {VERSION}")
            }
            RegionError::BadGeometry(w) => write!(f, "bad region geometry: {w}"),
        }
    }
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

impl Geometry {
    /// Checks limits and computes the offsets, or says what is wrong.
    pub fn offsets(&self) -> Result<Offsets, RegionError> {
        let pow2 = |v: u32| v != 0 && v.is_power_of_two();
        if !pow2(self.cmd_entries) || !pow2(self.evt_entries) {
            return Err(RegionError::BadGeometry(
                "ring entries must be powers of two",
            ));
        }
        if !pow2(self.rx_size) || !pow2(self.tx_size) || self.rx_size < 4096 || self.tx_size < 4096
        {
            return Err(RegionError::BadGeometry(
                "stream sizes must be powers of two >= 4096",
            ));
        }
        if self.rx_size > 1 << 30 || self.tx_size > 1 << 30 {
            return Err(RegionError::BadGeometry("stream size above 1 GiB"));
        }
        if self.max_sockets == 0 || self.max_sockets > 1 << 20 {
            return Err(RegionError::BadGeometry("max_sockets out of range"));
        }
        if self.cmd_entries > 1 << 20 || self.evt_entries > 1 << 20 {
            return Err(RegionError::BadGeometry("ring too large"));
        }
        let line = CACHE_LINE as u64;
        let cmd_off = HEADER_SIZE as u64;
        let evt_off = align_up(
            cmd_off + core::mem::size_of::<RingHdr>() as u64 + 64 * self.cmd_entries as u64,
            line,
        );
        let waiter_off = align_up(
            evt_off + core::mem::size_of::<RingHdr>() as u64 + 64 * self.evt_entries as u64,
            line,
        );
        let changed_off = waiter_off + (MAX_WAITERS * core::mem::size_of::<Waiter>()) as u64;
        let changed_stride = align_up(crate::changed::words_for(self.max_sockets) as u64 * 8, line);
        let tx_changed_off = changed_off + MAX_WAITERS as u64 * changed_stride;
        let opt_off = tx_changed_off + changed_stride;
        let sock_off = opt_off + (OPT_CELLS * OPT_SIZE) as u64;
        let stream_off = align_up(
            sock_off + self.max_sockets as u64 * core::mem::size_of::<SockCtl>() as u64,
            4096,
        );
        let per = self.rx_size as u64 + self.tx_size as u64;
        let total = stream_off + per * self.max_sockets as u64;
        Ok(Offsets {
            cmd_off,
            evt_off,
            waiter_off,
            changed_off,
            changed_stride,
            tx_changed_off,
            opt_off,
            sock_off,
            stream_off,
            total,
        })
    }
}

/// A mapped region. Holds raw pointers; the mapping must outlive it (the endpoint owns the mmap).
#[derive(Clone, Copy, Debug)]
pub struct Region {
    base: *mut u8,
    len: usize,
    geo: Geometry,
    off: Offsets,
}

// SAFETY: the region is shared memory accessed only through atomics and bounds-checked copies; a
// `Region` is just its address and geometry.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// Agent side: writes a fresh header into zeroed memory of `len` bytes.
    ///
    /// # Safety
    /// `base..base+len` must be a writable mapping, zero-filled, aligned to 4096, that outlives the
    /// returned value.
    pub unsafe fn init(base: *mut u8, len: usize, geo: Geometry) -> Result<Region, RegionError> {
        let off = geo.offsets()?;
        if (len as u64) < off.total {
            return Err(RegionError::TooSmall);
        }
        let h = base as *mut Header;
        // SAFETY: the caller guarantees the mapping; the header fits (checked by the const assert)
        // and nobody else writes the plain fields.
        unsafe {
            (*h).magic = MAGIC;
            (*h).version = VERSION;
            (*h).header_size = HEADER_SIZE as u32;
            (*h).region_size = off.total;
            (*h).cmd_off = off.cmd_off;
            (*h).cmd_entries = geo.cmd_entries;
            (*h).evt_entries = geo.evt_entries;
            (*h).evt_off = off.evt_off;
            (*h).waiter_off = off.waiter_off;
            (*h).opt_off = off.opt_off;
            (*h).changed_off = off.changed_off;
            (*h).changed_stride = off.changed_stride;
            (*h).tx_changed_off = off.tx_changed_off;
            (*h).sock_off = off.sock_off;
            (*h).stream_off = off.stream_off;
            (*h).max_sockets = geo.max_sockets;
            (*h).rx_size = geo.rx_size;
            (*h).tx_size = geo.tx_size;
            (*h).spin_ns = geo.spin_ns;
        }
        Ok(Region {
            base,
            len,
            geo,
            off,
        })
    }

    /// Host side: validates the header of a mapped region of `len` bytes.
    ///
    /// # Safety
    /// `base..base+len` must be a readable and writable mapping that outlives the returned value.
    pub unsafe fn attach(base: *mut u8, len: usize) -> Result<Region, RegionError> {
        if len < HEADER_SIZE {
            return Err(RegionError::TooSmall);
        }
        let h = base as *const Header;
        // SAFETY: at least HEADER_SIZE bytes are mapped; plain fields are written once by the agent
        // before the memfd is handed over, so volatile reads see their final values.
        let (magic, version, geo) = unsafe {
            (
                core::ptr::read_volatile(&(*h).magic),
                core::ptr::read_volatile(&(*h).version),
                Geometry {
                    cmd_entries: core::ptr::read_volatile(&(*h).cmd_entries),
                    evt_entries: core::ptr::read_volatile(&(*h).evt_entries),
                    max_sockets: core::ptr::read_volatile(&(*h).max_sockets),
                    rx_size: core::ptr::read_volatile(&(*h).rx_size),
                    tx_size: core::ptr::read_volatile(&(*h).tx_size),
                    spin_ns: core::ptr::read_volatile(&(*h).spin_ns),
                },
            )
        };
        if magic != MAGIC {
            return Err(RegionError::BadMagic);
        }
        if version != VERSION {
            return Err(RegionError::BadVersion(version));
        }
        let off = geo.offsets()?;
        if (len as u64) < off.total {
            return Err(RegionError::TooSmall);
        }
        Ok(Region {
            base,
            len,
            geo,
            off,
        })
    }

    pub fn geometry(&self) -> Geometry {
        self.geo
    }

    pub fn offsets(&self) -> Offsets {
        self.off
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn base(&self) -> *mut u8 {
        self.base
    }

    pub fn header(&self) -> &Header {
        // SAFETY: validated at construction; Header's mutable fields are atomics.
        unsafe { &*(self.base as *const Header) }
    }

    fn ring_parts<T>(&self, off: u64, entries: u32) -> (*const RingHdr, *mut T, u32) {
        // SAFETY: offsets were computed from the validated geometry and lie inside the mapping.
        let hdr = unsafe { self.base.add(off as usize) } as *const RingHdr;
        // SAFETY: entries follow the ring header inside the mapping.
        let ents = unsafe {
            self.base
                .add(off as usize + core::mem::size_of::<RingHdr>())
        } as *mut T;
        (hdr, ents, entries)
    }

    /// Host: producer half of the command ring. Exactly one must exist per region at a time
    /// (the host serialises its threads behind one lock).
    pub fn cmd_producer(&self) -> Producer<Cmd> {
        let (h, e, n) = self.ring_parts::<Cmd>(self.off.cmd_off, self.geo.cmd_entries);
        // SAFETY: pointers come from the validated region.
        unsafe { Producer::new(h, e, n) }
    }

    /// Agent: consumer half of the command ring.
    pub fn cmd_consumer(&self) -> Consumer<Cmd> {
        let (h, e, n) = self.ring_parts::<Cmd>(self.off.cmd_off, self.geo.cmd_entries);
        // SAFETY: pointers come from the validated region.
        unsafe { Consumer::new(h, e, n) }
    }

    /// Agent: producer half of the event ring.
    pub fn evt_producer(&self) -> Producer<Evt> {
        let (h, e, n) = self.ring_parts::<Evt>(self.off.evt_off, self.geo.evt_entries);
        // SAFETY: pointers come from the validated region.
        unsafe { Producer::new(h, e, n) }
    }

    /// Host: consumer half of the event ring.
    pub fn evt_consumer(&self) -> Consumer<Evt> {
        let (h, e, n) = self.ring_parts::<Evt>(self.off.evt_off, self.geo.evt_entries);
        // SAFETY: pointers come from the validated region.
        unsafe { Consumer::new(h, e, n) }
    }

    /// The control block of socket `slot`, or `None` when out of range.
    pub fn sock(&self, slot: u32) -> Option<&SockCtl> {
        if slot >= self.geo.max_sockets {
            return None;
        }
        let off = self.off.sock_off as usize + slot as usize * core::mem::size_of::<SockCtl>();
        // SAFETY: slot < max_sockets, so the block lies inside the validated mapping; all fields
        // are atomics.
        Some(unsafe { &*(self.base.add(off) as *const SockCtl) })
    }

    /// Waiter `i`, or `None` when out of range.
    pub fn waiter(&self, i: usize) -> Option<&Waiter> {
        if i >= MAX_WAITERS {
            return None;
        }
        let off = self.off.waiter_off as usize + i * core::mem::size_of::<Waiter>();
        // SAFETY: inside the validated mapping; `sleeping` is atomic.
        Some(unsafe { &*(self.base.add(off) as *const Waiter) })
    }

    /// Waiter `i`'s changed-slot bitmap: (summary, words), or `None` when out of range.
    pub fn changed(&self, i: usize) -> Option<(&AtomicU64, &[AtomicU64])> {
        let w = self.waiter(i)?;
        let off = self.off.changed_off as usize + i * self.off.changed_stride as usize;
        let n = crate::changed::words_for(self.geo.max_sockets);
        // SAFETY: i < MAX_WAITERS and the stride holds `n` words, so the words lie inside the
        // validated mapping; the offset is a multiple of 8 (cache-line aligned areas); the memory
        // is only ever accessed through atomics.
        let words =
            unsafe { core::slice::from_raw_parts(self.base.add(off) as *const AtomicU64, n) };
        Some((&w.changed, words))
    }

    /// The TX-changed bitmap: (summary, words).
    pub fn tx_changed(&self) -> (&AtomicU64, &[AtomicU64]) {
        let n = crate::changed::words_for(self.geo.max_sockets);
        // SAFETY: the area holds `n` words (changed_stride >= 8 n) inside the validated mapping,
        // cache-line aligned; the memory is only ever accessed through atomics.
        let words = unsafe {
            core::slice::from_raw_parts(
                self.base.add(self.off.tx_changed_off as usize) as *const AtomicU64,
                n,
            )
        };
        (&self.header().agent.0.tx_changed, words)
    }

    /// Host, after publishing TX bytes of `slot`: marks the slot for the agent. True when the
    /// mark set a summary bit that was clear: the caller must then make sure the agent looks
    /// (`wake::must_ring` on `AgentWake::sleeping`); otherwise an earlier mark's caller did.
    pub fn mark_tx(&self, slot: u32) -> bool {
        if slot >= self.geo.max_sockets {
            return false;
        }
        let (s, w) = self.tx_changed();
        crate::changed::mark(s, w, slot)
    }

    /// Agent: whether some TX-changed bit may be set (a plain load: the re-check before sleep
    /// comes after `wake::announce`, which acquired any mark whose doorbell decision came first).
    pub fn tx_pending(&self) -> bool {
        self.header().agent.0.tx_changed.load(Ordering::Relaxed) != 0
    }

    /// Agent: takes the TX-changed slots, calling `f(slot)` for each. Returns whether there were
    /// any.
    pub fn take_tx(&self, f: impl FnMut(u32)) -> bool {
        let (s, w) = self.tx_changed();
        crate::changed::take(s, w, f)
    }

    /// Agent: slot `slot` changed; tell waiter `i` (before ringing it).
    pub fn mark_changed(&self, i: usize, slot: u32) {
        if let Some((s, w)) = self.changed(i) {
            let _ = crate::changed::mark(s, w, slot);
        }
    }

    /// Host: takes waiter `i`'s changed slots. Returns whether there were any.
    pub fn take_changed(&self, i: usize, f: impl FnMut(u32)) -> bool {
        match self.changed(i) {
            Some((s, w)) => crate::changed::take(s, w, f),
            None => false,
        }
    }

    /// Option buffer cell `idx` (`OPT_SIZE` bytes), or `None` when out of range.
    pub fn opt_cell(&self, idx: usize) -> Option<*mut u8> {
        if idx >= OPT_CELLS {
            return None;
        }
        // SAFETY: idx < OPT_CELLS keeps the cell inside the validated mapping.
        Some(unsafe { self.base.add(self.off.opt_off as usize + idx * OPT_SIZE) })
    }

    fn stream_base(&self, slot: u32) -> usize {
        self.off.stream_off as usize
            + slot as usize * (self.geo.rx_size as usize + self.geo.tx_size as usize)
    }

    /// Byte range `(offset, len)` of `slot`'s RX and TX streams inside the region (page
    /// aligned: the streams start on a page and are powers of two of at least 4096 bytes).
    pub fn slot_streams(&self, slot: u32) -> Option<(usize, usize)> {
        self.sock(slot)?;
        Some((
            self.stream_base(slot),
            self.geo.rx_size as usize + self.geo.tx_size as usize,
        ))
    }

    /// The RX byte stream of `slot` (agent produces, host consumes).
    pub fn rx(&self, slot: u32) -> Option<Stream> {
        let ctl = self.sock(slot)?;
        let b = self.stream_base(slot);
        // SAFETY: slot validated by `sock`; the stream lies inside the mapping.
        Some(unsafe {
            Stream::new(
                self.base.add(b),
                self.geo.rx_size,
                &ctl.rx_prod.0,
                &ctl.rx_head.0.head,
            )
        })
    }

    /// The TX byte stream of `slot` (host produces, agent consumes).
    pub fn tx(&self, slot: u32) -> Option<Stream> {
        let ctl = self.sock(slot)?;
        let b = self.stream_base(slot) + self.geo.rx_size as usize;
        // SAFETY: slot validated by `sock`; the stream lies inside the mapping.
        Some(unsafe {
            Stream::new(
                self.base.add(b),
                self.geo.tx_size,
                &ctl.tx_prod.0,
                &ctl.tx_head.0.head,
            )
        })
    }

    /// Agent: resets a socket block for reuse (indices to zero, state cleared, generation bumped).
    /// Only valid while the host holds no reference to the slot.
    pub fn reset_sock(&self, slot: u32) {
        if let Some(c) = self.sock(slot) {
            c.rx_prod.0.tail.store(0, Ordering::Relaxed);
            c.rx_prod.0.base.store(0, Ordering::Relaxed);
            c.rx_head.0.head.store(0, Ordering::Relaxed);
            c.rx_head.0.blocked.store(0, Ordering::Relaxed);
            c.tx_prod.0.tail.store(0, Ordering::Relaxed);
            c.tx_prod.0.base.store(0, Ordering::Relaxed);
            c.tx_head.0.head.store(0, Ordering::Relaxed);
            let s = &c.state.0;
            s.flags.store(0, Ordering::Relaxed);
            s.error.store(0, Ordering::Relaxed);
            s.error_seq.store(0, Ordering::Relaxed);
            s.accept_ready.store(0, Ordering::Relaxed);
            s.accept_seq.store(0, Ordering::Relaxed);
            s.tx_file_done.store(0, Ordering::Relaxed);
            s.stamp.store(0, Ordering::Relaxed);
            s.urgent.store(0, Ordering::Relaxed);
            s.framing_error.store(0, Ordering::Relaxed);
            s.tls_rx.store(0, Ordering::Relaxed);
            c.host.0.tx_file_posted.store(0, Ordering::Relaxed);
            c.host.0.tx_urg_posted.store(0, Ordering::Relaxed);
            c.host.0.tx_rec_posted.store(0, Ordering::Relaxed);
            c.host.0.oob_inline.store(0, Ordering::Relaxed);
            c.host.0.owner.store(0, Ordering::Relaxed);
            c.host.0.waiter_mask.store(0, Ordering::Relaxed);
            s.gen.fetch_add(1, Ordering::Release);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A zeroed, page-aligned heap buffer standing in for the memfd mapping.
    struct Buf(*mut u8, std::alloc::Layout);

    impl Buf {
        fn new(len: usize) -> Buf {
            let l = std::alloc::Layout::from_size_align(len, 4096).unwrap();
            // SAFETY: non-zero size.
            let p = unsafe { std::alloc::alloc_zeroed(l) };
            assert!(!p.is_null());
            Buf(p, l)
        }
    }

    impl Drop for Buf {
        fn drop(&mut self) {
            // SAFETY: allocated in `new` with this layout.
            unsafe { std::alloc::dealloc(self.0, self.1) };
        }
    }

    /// Small rings and streams, `max_sockets` slots: the bitmap areas are what varies.
    fn small(max_sockets: u32) -> Geometry {
        Geometry {
            max_sockets,
            cmd_entries: 64,
            evt_entries: 64,
            rx_size: 4096,
            tx_size: 4096,
            ..Default::default()
        }
    }

    #[test]
    fn changed_bitmaps_stay_in_their_area() {
        for max_sockets in [1, 64, 100, 1024, 5000] {
            let geo = small(max_sockets);
            let off = geo.offsets().unwrap();
            assert_eq!(off.changed_off % 64, 0);
            assert_eq!(off.changed_stride % 64, 0);
            assert!(off.changed_stride * 8 >= max_sockets as u64);
            let buf = Buf::new(off.total as usize);
            // SAFETY: zeroed, aligned, `total` bytes, outlives `r`.
            let r = unsafe { Region::init(buf.0, off.total as usize, geo) }.unwrap();
            // SAFETY: same mapping.
            let h = unsafe { Region::attach(buf.0, off.total as usize) }.unwrap();
            for i in [0, MAX_WAITERS - 1] {
                for s in 0..max_sockets {
                    r.mark_changed(i, s);
                }
            }
            // Waiter 1 (between the two) and every socket block are untouched.
            assert!(!h.take_changed(1, |_| panic!("waiter 1 has no marks")));
            for s in 0..max_sockets {
                assert_eq!(h.sock(s).unwrap().rx_prod.0.tail.load(Ordering::Relaxed), 0);
            }
            // SAFETY: the option area is inside the mapping.
            let opt = unsafe { *h.opt_cell(0).unwrap() };
            assert_eq!(opt, 0);
            for i in [0, MAX_WAITERS - 1] {
                let mut n = 0u32;
                assert!(h.take_changed(i, |s| {
                    assert_eq!(s, n);
                    n += 1;
                }));
                assert_eq!(n, max_sockets);
            }
            assert!(!h.take_changed(MAX_WAITERS, |_| {}));
        }
    }

    /// The TX-changed bitmap: host marks every slot (one summary transition per group reported
    /// to exactly one mark), the agent takes each once, nothing else in the region moves.
    #[test]
    fn tx_changed_bitmap_marks_and_takes_every_slot_once() {
        for max_sockets in [1, 64, 100, 1024, 5000] {
            let geo = small(max_sockets);
            let off = geo.offsets().unwrap();
            assert_eq!(off.tx_changed_off % 64, 0);
            assert!(
                off.tx_changed_off >= off.changed_off + MAX_WAITERS as u64 * off.changed_stride
            );
            assert!(off.tx_changed_off + off.changed_stride <= off.opt_off);
            let buf = Buf::new(off.total as usize);
            // SAFETY: zeroed, aligned, `total` bytes, outlives `r`.
            let agent = unsafe { Region::init(buf.0, off.total as usize, geo) }.unwrap();
            // SAFETY: same mapping.
            let host = unsafe { Region::attach(buf.0, off.total as usize) }.unwrap();
            assert!(!agent.tx_pending());
            let mut rings = 0;
            for s in 0..max_sockets {
                rings += host.mark_tx(s) as u32;
                // A second mark of a slot not taken yet never asks for a doorbell.
                assert!(!host.mark_tx(s));
            }
            let groups = crate::changed::words_for(max_sockets).div_ceil(
                crate::changed::group_len(crate::changed::words_for(max_sockets)),
            );
            assert_eq!(
                rings as usize, groups,
                "one doorbell decision per summary bit"
            );
            assert!(!host.mark_tx(max_sockets), "out of range: ignored");
            assert!(agent.tx_pending());
            assert!(!agent.take_changed(0, |_| panic!("the waiters' bitmaps are untouched")));
            // SAFETY: the option area is inside the mapping.
            assert_eq!(unsafe { *host.opt_cell(0).unwrap() }, 0);
            let mut n = 0u32;
            assert!(agent.take_tx(|s| {
                assert_eq!(s, n);
                n += 1;
            }));
            assert_eq!(n, max_sockets);
            assert!(!agent.tx_pending());
            assert!(!agent.take_tx(|_| panic!("taken once")));
            // Taken: the next mark of a slot asks for the doorbell again.
            assert!(host.mark_tx(0));
        }
    }
}
