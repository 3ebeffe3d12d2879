//! The af_packet receive ring: `PACKET_MMAP` with `TPACKET_V2`, shared with the kernel.
//!
//! The ring is an array of fixed-size frame slots, each with its own status word
//! (`tp_status`): the kernel writes a frame into the next free slot, flips the slot to
//! `TP_STATUS_USER` and wakes the socket at once (the fd is readable as long as the slot before
//! the kernel's head is ours). We read frames in place (no copy, no syscall) and give each slot
//! back, right after its frame was lent to the callback, by writing `TP_STATUS_KERNEL`. So a
//! frame is visible as soon as it is written — unlike `TPACKET_V3`, which hands frames over a
//! block at a time (when the block is full or its retire timer fires, ~1 ms at low rates).
//!
//! Sizes: a slot must hold a GRO/GSO super-frame whole — 14 + 65,535 bytes, after the
//! `tpacket2_hdr` + `sockaddr_ll` (52 bytes) and the 10-byte `virtio_net_hdr`: the kernel puts
//! the network header at align16(52 + 16) + 10 = 90, so `tp_mac` = 76 and 65,625 bytes in all.
//! Slots are [`FRAME_SIZE`] = 68 KiB. Slots do not straddle blocks and the kernel allocates a block as
//! 2^order pages, so blocks are a power of two: [`BLOCK_SIZE`] = 1 MiB holds 15 slots (4 KiB
//! unused), and [`BLOCK_NR`] = 16 blocks give [`FRAME_NR`] = 240 slots, 16 MiB per socket (as
//! the V3 ring had). A frame larger than a slot (a BIG TCP super-frame beyond 64 KiB) arrives
//! truncated (`tp_snaplen < tp_len`, or `TP_STATUS_COPY`): it is counted and dropped.
//!
//! With `PACKET_VNET_HDR` each frame is preceded in its slot by its `virtio_net_hdr`
//! (`tp_mac - 10`).

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};

use snstack_tcp::RxMeta;

use super::vnet::{self, VnetHdr};

pub const SOL_PACKET: libc::c_int = 263;
pub const PACKET_RX_RING: libc::c_int = 5;
pub const PACKET_VERSION: libc::c_int = 10;
pub const PACKET_VNET_HDR: libc::c_int = 15;
pub const PACKET_QDISC_BYPASS: libc::c_int = 20;
pub const TPACKET_V2: libc::c_int = 1;

/// One frame slot: a 64 KiB super-frame plus the ring's and the vnet header (multiple of 16).
pub const FRAME_SIZE: usize = 68 << 10;
/// A block (power of two, see the module doc): 15 slots.
pub const BLOCK_SIZE: usize = 1 << 20;
pub const BLOCK_NR: usize = 16;
pub const FRAMES_PER_BLOCK: usize = BLOCK_SIZE / FRAME_SIZE;
pub const FRAME_NR: usize = FRAMES_PER_BLOCK * BLOCK_NR;
// A 64 KiB GRO super-frame (14 + 65,535) at `tp_mac` = 76 fits a slot; the kernel wants slots
// aligned to 16 and blocks of whole pages (and allocates them as 2^order pages).
const _: () = assert!(76 + 14 + 65535 <= FRAME_SIZE && FRAME_SIZE % 16 == 0);
const _: () = assert!(BLOCK_SIZE.is_power_of_two() && BLOCK_SIZE % 4096 == 0);

const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_COPY: u32 = 1 << 1;
const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;
const TP_STATUS_CSUM_VALID: u32 = 1 << 7;

/// `struct tpacket_req`.
#[repr(C)]
struct TpacketReq {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
}

// `struct tpacket2_hdr` { tp_status, tp_len, tp_snaplen, tp_mac: u16, tp_net: u16, tp_sec,
// tp_nsec, tp_vlan_tci: u16, tp_vlan_tpid: u16, tp_padding[4] }: byte offsets.
const H_STATUS: usize = 0;
const H_LEN: usize = 4;
const H_SNAPLEN: usize = 8;
const H_MAC: usize = 12;
/// `sizeof(struct tpacket2_hdr)`: no frame starts before it.
const H_SIZE: usize = 32;

/// Counters of the ring.
#[derive(Clone, Copy, Debug, Default)]
pub struct RingStats {
    /// Frames cut short by the ring (larger than a slot): dropped.
    pub truncated: u64,
}

pub struct RxRing {
    map: *mut u8,
    len: usize,
    vnet: bool,
    /// The next slot to look at (the kernel fills slots in this order too).
    slot: usize,
    pub stats: RingStats,
}

fn setsockopt<T>(fd: RawFd, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` points to a live `T` of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            SOL_PACKET,
            name,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads a native-endian u32 at `p + off`.
///
/// # Safety
/// `p + off .. p + off + 4` must be inside the mapping.
unsafe fn rd32(p: *const u8, off: usize) -> u32 {
    // SAFETY: in bounds per the caller; the ring is only read unaligned-safe.
    unsafe { p.add(off).cast::<u32>().read_unaligned() }
}

/// Byte offset of slot `i` in the mapping (slots never straddle a block).
fn slot_offset(i: usize) -> usize {
    (i / FRAMES_PER_BLOCK) * BLOCK_SIZE + (i % FRAMES_PER_BLOCK) * FRAME_SIZE
}

/// Where the frame of a slot whose header says `status`, `len`, `snap`, `mac` lies in the
/// slot: `Some(mac)` when it is whole and inside the slot (with room for the vnet header when
/// `vnet`), `None` when it must be dropped (truncated, or a header that makes no sense).
fn frame_in_slot(status: u32, len: usize, snap: usize, mac: usize, vnet: bool) -> Option<usize> {
    let whole = status & TP_STATUS_COPY == 0 && snap == len;
    let inside = mac >= H_SIZE + if vnet { vnet::LEN } else { 0 }
        && mac.checked_add(snap).is_some_and(|end| end <= FRAME_SIZE);
    (whole && inside && snap >= 14).then_some(mac)
}

impl RxRing {
    /// Sets `TPACKET_V2` and the ring on `fd` (after `PACKET_VNET_HDR`, before `bind`) and maps
    /// it. `vnet` says whether the socket has the vnet header on.
    pub fn new(fd: RawFd, vnet: bool) -> io::Result<RxRing> {
        setsockopt(fd, PACKET_VERSION, &TPACKET_V2)?;
        let req = TpacketReq {
            block_size: BLOCK_SIZE as u32,
            block_nr: BLOCK_NR as u32,
            frame_size: FRAME_SIZE as u32,
            frame_nr: FRAME_NR as u32,
        };
        setsockopt(fd, PACKET_RX_RING, &req)?;
        let len = BLOCK_SIZE * BLOCK_NR;
        // SAFETY: maps the ring the kernel just allocated for `fd`; no existing memory is
        // touched. MAP_LOCKED is not asked (it needs RLIMIT_MEMLOCK); MAP_POPULATE prefaults.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(RxRing {
            map: map.cast(),
            len,
            vnet,
            slot: 0,
            stats: RingStats::default(),
        })
    }

    fn status(&self, slot: usize) -> &AtomicU32 {
        // SAFETY: the status word starts the slot, inside the mapping and 4-byte aligned
        // (blocks are page-aligned, slots a multiple of 16 bytes). The kernel and we hand the
        // slot to each other through this word only: it stores it after the frame (with a
        // barrier) and we load it with acquire; we give the slot back with a release store.
        unsafe {
            &*self
                .map
                .add(slot_offset(slot) + H_STATUS)
                .cast::<AtomicU32>()
        }
    }

    /// The kernel has handed the next slot over (a frame waits), read from the ring alone.
    pub fn ready(&self) -> bool {
        self.status(self.slot).load(Ordering::Acquire) & TP_STATUS_USER != 0
    }

    /// Calls `f` for up to `max` frames, in place in the ring; returns how many. Each slot is
    /// given back to the kernel as soon as `f` returned.
    pub fn recv(&mut self, max: usize, f: &mut dyn FnMut(&[u8], RxMeta)) -> usize {
        let mut n = 0;
        while n < max {
            let status = self.status(self.slot).load(Ordering::Acquire);
            if status & TP_STATUS_USER == 0 {
                break;
            }
            let base = slot_offset(self.slot);
            // SAFETY: the slot is ours (TP_STATUS_USER, loaded with acquire) and its header
            // (`H_SIZE` bytes) is inside the mapping.
            let (len, snap, mac) = unsafe {
                let h = self.map.add(base);
                (
                    rd32(h, H_LEN) as usize,
                    rd32(h, H_SNAPLEN) as usize,
                    usize::from(h.add(H_MAC).cast::<u16>().read_unaligned()),
                )
            };
            // The next slot's header and frame are fetched while this frame is handled.
            let next = slot_offset((self.slot + 1) % FRAME_NR);
            snstack_tcp::prefetch::prefetch_raw(self.map.wrapping_add(next), mac + 128);
            match frame_in_slot(status, len, snap, mac, self.vnet) {
                Some(start) => {
                    let mut hdr = [0u8; vnet::LEN];
                    // SAFETY: frame and vnet header lie inside our slot (`frame_in_slot`
                    // checked `H_SIZE + LEN <= mac` and `mac + snap <= FRAME_SIZE`); the
                    // kernel does not write a slot it handed to us, and the slice does not
                    // outlive the call of `f`, before the slot is given back.
                    let frame = unsafe {
                        if self.vnet {
                            std::ptr::copy_nonoverlapping(
                                self.map.add(base + start - vnet::LEN),
                                hdr.as_mut_ptr(),
                                vnet::LEN,
                            );
                        }
                        std::slice::from_raw_parts(self.map.add(base + start), snap)
                    };
                    let meta = VnetHdr::parse(&hdr).rx_meta(
                        status & TP_STATUS_CSUMNOTREADY != 0,
                        status & TP_STATUS_CSUM_VALID != 0,
                    );
                    f(frame, meta);
                    n += 1;
                }
                None => {
                    self.stats.truncated += 1;
                    let t = self.stats.truncated;
                    if t.is_power_of_two() {
                        tracing::warn!(
                            len,
                            snap,
                            slot = FRAME_SIZE,
                            "af_packet: frame larger than a ring slot dropped ({t} so far)"
                        );
                    }
                }
            }
            self.status(self.slot)
                .store(TP_STATUS_KERNEL, Ordering::Release);
            self.slot = (self.slot + 1) % FRAME_NR;
        }
        n
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: `map`/`len` are the mapping made in `new`; no slice into it outlives a
        // `recv` call.
        unsafe { libc::munmap(self.map.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry() {
        assert_eq!((FRAMES_PER_BLOCK, FRAME_NR), (15, 240));
        assert_eq!(slot_offset(14), 14 * FRAME_SIZE);
        assert_eq!(slot_offset(15), BLOCK_SIZE);
        assert_eq!(
            slot_offset(FRAME_NR - 1) + FRAME_SIZE,
            BLOCK_SIZE * BLOCK_NR - 4096
        );
    }

    #[test]
    fn truncated_and_bogus_frames_are_refused() {
        let user = TP_STATUS_USER;
        assert_eq!(frame_in_slot(user, 100, 100, 76, true), Some(76));
        assert_eq!(frame_in_slot(user, 65549, 65549, 76, true), Some(76));
        // Cut by the ring: snaplen < len, or a copy went to the receive queue.
        assert_eq!(frame_in_slot(user, 70000, FRAME_SIZE - 76, 76, true), None);
        assert_eq!(
            frame_in_slot(user | TP_STATUS_COPY, 100, 100, 76, true),
            None
        );
        // Outside the slot, no room for the vnet header, a runt.
        assert_eq!(frame_in_slot(user, FRAME_SIZE, FRAME_SIZE, 76, true), None);
        assert_eq!(frame_in_slot(user, 100, 100, 34, true), None);
        assert_eq!(frame_in_slot(user, 100, 100, 34, false), Some(34));
        assert_eq!(frame_in_slot(user, 10, 10, 76, true), None);
    }
}
