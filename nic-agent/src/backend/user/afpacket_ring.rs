//! The af_packet receive ring: `PACKET_MMAP` with `TPACKET_V3`, shared with the kernel.
//!
//! The kernel fills variable-sized frames into fixed blocks and hands a block to us when it is
//! full or when the retire timer fires; we read the frames in place (no copy, no syscall) and
//! give the block back by writing its status. Sizes:
//!
//! - blocks of [`BLOCK_SIZE`] = 1 MiB, [`BLOCK_NR`] = 16 of them (16 MiB per socket). A frame
//!   must fit in one block: GRO/GSO super-frames of up to 64 KiB + headers do (the V3 limit is
//!   the block size, not `tp_frame_size`).
//! - retire timeout [`RETIRE_MS`] = 1 ms: a block that is not full is handed over at the latest
//!   after 1 ms, so at low packet rates a frame waits up to ~1 ms (the kernel wakes the socket
//!   only when a block is retired). Under load blocks fill and are retired at once.
//!
//! With `PACKET_VNET_HDR` each frame is preceded in the ring by its `virtio_net_hdr`
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
pub const TPACKET_V3: libc::c_int = 2;

pub const BLOCK_SIZE: usize = 1 << 20;
pub const BLOCK_NR: usize = 16;
/// Nominal frame slot (V3 packs frames of any size; the kernel only checks the arithmetic).
const FRAME_SIZE: usize = 2048;
pub const RETIRE_MS: u32 = 1;

const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;
const TP_STATUS_CSUM_VALID: u32 = 1 << 7;

/// `struct tpacket_req3`.
#[repr(C)]
#[derive(Default)]
struct TpacketReq3 {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
    retire_blk_tov: u32,
    sizeof_priv: u32,
    feature_req_word: u32,
}

// `struct tpacket_block_desc` { version, offset_to_priv, tpacket_hdr_v1 { block_status,
// num_pkts, offset_to_first_pkt, blk_len, seq_num, ts... } }: byte offsets.
const BD_STATUS: usize = 8;
const BD_NUM_PKTS: usize = 12;
const BD_FIRST: usize = 16;
// `struct tpacket3_hdr`: byte offsets.
const H_NEXT: usize = 0;
const H_SNAPLEN: usize = 12;
const H_LEN: usize = 16;
const H_STATUS: usize = 20;
const H_MAC: usize = 24;

/// Counters of the ring.
#[derive(Clone, Copy, Debug, Default)]
pub struct RingStats {
    /// Frames cut short by the ring (did not fit a block): dropped.
    pub truncated: u64,
}

pub struct RxRing {
    map: *mut u8,
    len: usize,
    vnet: bool,
    block: usize,
    /// Inside a user-owned block: packets left and the offset of the next one.
    in_block: bool,
    left: u32,
    next: usize,
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

impl RxRing {
    /// Sets `TPACKET_V3` and the ring on `fd` (after `PACKET_VNET_HDR`, before `bind`) and maps
    /// it. `vnet` says whether the socket has the vnet header on.
    pub fn new(fd: RawFd, vnet: bool) -> io::Result<RxRing> {
        setsockopt(fd, PACKET_VERSION, &TPACKET_V3)?;
        let req = TpacketReq3 {
            block_size: BLOCK_SIZE as u32,
            block_nr: BLOCK_NR as u32,
            frame_size: FRAME_SIZE as u32,
            frame_nr: (BLOCK_SIZE / FRAME_SIZE * BLOCK_NR) as u32,
            retire_blk_tov: RETIRE_MS,
            ..TpacketReq3::default()
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
            block: 0,
            in_block: false,
            left: 0,
            next: 0,
            stats: RingStats::default(),
        })
    }

    fn status(&self, block: usize) -> &AtomicU32 {
        // SAFETY: the block descriptor is inside the mapping, 4-byte aligned (blocks are
        // page-aligned), and the kernel accesses the word only atomically with respect to us
        // (it writes it with a barrier before waking us; we hand it back with release).
        unsafe {
            &*self
                .map
                .add(block * BLOCK_SIZE + BD_STATUS)
                .cast::<AtomicU32>()
        }
    }

    /// Calls `f` for up to `max` frames, in place in the ring; returns how many. A block is
    /// given back to the kernel once all its frames were seen.
    pub fn recv(&mut self, max: usize, f: &mut dyn FnMut(&[u8], RxMeta)) -> usize {
        let mut n = 0;
        while n < max {
            let base = self.block * BLOCK_SIZE;
            if !self.in_block {
                if self.status(self.block).load(Ordering::Acquire) & TP_STATUS_USER == 0 {
                    break;
                }
                // SAFETY: the block is ours (TP_STATUS_USER) and its header in the mapping.
                unsafe {
                    let b = self.map.add(base);
                    self.left = rd32(b, BD_NUM_PKTS);
                    self.next = rd32(b, BD_FIRST) as usize;
                }
                self.in_block = true;
            }
            while self.left > 0 && n < max {
                if self.next + 32 > BLOCK_SIZE {
                    // A corrupt offset: give the block back rather than read outside it.
                    self.left = 0;
                    break;
                }
                // SAFETY: the frame header lies in our block (checked above); the kernel
                // does not write a block it handed to us.
                let (next, snap, len, status, mac) = unsafe {
                    let h = self.map.add(base + self.next);
                    (
                        rd32(h, H_NEXT) as usize,
                        rd32(h, H_SNAPLEN) as usize,
                        rd32(h, H_LEN) as usize,
                        rd32(h, H_STATUS),
                        usize::from(h.add(H_MAC).cast::<u16>().read_unaligned()),
                    )
                };
                let start = self.next + mac;
                let ok = snap == len
                    && snap >= 14
                    && start + snap <= BLOCK_SIZE
                    && (!self.vnet || mac >= vnet::LEN);
                if ok {
                    let mut hdr = [0u8; vnet::LEN];
                    // SAFETY: frame and vnet header are inside our block (checked above).
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
                } else {
                    self.stats.truncated += 1;
                }
                self.left -= 1;
                self.next += next;
            }
            if self.left == 0 {
                self.status(self.block)
                    .store(TP_STATUS_KERNEL, Ordering::Release);
                self.block = (self.block + 1) % BLOCK_NR;
                self.in_block = false;
            }
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
