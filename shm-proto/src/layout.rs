//! `#[repr(C)]` types of the region. Sizes are asserted at compile time; fields document who writes
//! them. "host" is `libsnstack.so` inside an application, "agent" is `snstack-agent` (the NIC side).

use crate::primitive::{AtomicU32, AtomicU64};

/// "SNSTACK" + NUL, little-endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SNSTACK\0");
/// Bumped on every incompatible change of anything in this crate.
pub const VERSION: u32 = 7;
/// Bytes of the header page.
pub const HEADER_SIZE: usize = 4096;
/// Number of waiter slots (epoll instances and poll/select callers) per process. Also the width of
/// [`SockCtl::waiter_mask`].
pub const MAX_WAITERS: usize = 64;

/// Alignment of every ring/stream area.
pub const CACHE_LINE: usize = 64;

/// Padding helper: one value on its own cache line.
#[repr(C, align(64))]
#[derive(Default)]
pub struct Line<T>(pub T);

/// Region header. Written by the agent at creation; afterwards only the atomics change.
#[repr(C)]
pub struct Header {
    pub magic: u64,
    pub version: u32,
    pub header_size: u32,
    pub region_size: u64,
    pub cmd_off: u64,
    pub cmd_entries: u32,
    pub evt_entries: u32,
    pub evt_off: u64,
    pub waiter_off: u64,
    pub sock_off: u64,
    pub stream_off: u64,
    pub max_sockets: u32,
    pub rx_size: u32,
    pub tx_size: u32,
    /// Spin budget (ns) the agent suggests to the host before it sleeps. Host env may override.
    pub spin_ns: u32,
    /// Option buffers: [`OPT_CELLS`] cells of [`OPT_SIZE`] bytes for socket option values that do
    /// not fit a command (`CF_OPTBUF`).
    pub opt_off: u64,
    /// Changed-slot bitmaps: per waiter, [`Header::changed_stride`] bytes holding one bit per
    /// socket slot (see [`crate::changed`]).
    pub changed_off: u64,
    pub changed_stride: u64,
    _pad0: [u8; 24],
    /// Agent writes 1 before it blocks in the kernel; the host rings the agent doorbell (eventfd) after
    /// publishing a command when it reads 1 here. See [`crate::wake`].
    pub agent_sleeping: Line<AtomicU32>,
    /// Futex word for host threads waiting on completions or command-ring space. The agent bumps it
    /// and wakes when `region_waiters != 0`; host drainers bump it too.
    pub region_seq: Line<AtomicU32>,
    /// Host threads sleeping on `region_seq`.
    pub region_waiters: Line<AtomicU32>,
    /// Agent-written statistics of this channel (the "DMA" figures).
    pub stats: Line<ChannelStats>,
    /// Set by the agent (never cleared) when it dropped this channel; the host reports errors.
    pub dead: Line<AtomicU32>,
}

/// Channel statistics, written by the agent only.
#[repr(C)]
#[derive(Default)]
pub struct ChannelStats {
    /// Payload bytes moved host -> NIC (TX streams drained by the agent).
    pub h2n_bytes: AtomicU64,
    /// Channel operations host -> NIC (commands consumed).
    pub h2n_ops: AtomicU64,
    /// Payload bytes moved NIC -> host (written into RX streams).
    pub n2h_bytes: AtomicU64,
    /// Channel operations NIC -> host (completions posted and RX stream publications).
    pub n2h_ops: AtomicU64,
}

/// Head/tail of an entry ring. Free-running u32 indices; slot = index & (entries - 1).
#[repr(C)]
pub struct RingHdr {
    /// Written by the producer only.
    pub tail: Line<AtomicU32>,
    /// Written by the consumer only.
    pub head: Line<AtomicU32>,
}

/// A host -> NIC command. `tag == 0` means "no completion wanted".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cmd {
    pub op: u16,
    pub flags: u16,
    pub slot: u32,
    pub tag: u64,
    pub arg: [u64; 6],
}

/// A NIC -> host event: the completion of the command with the same `tag`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Evt {
    pub kind: u16,
    pub _pad: u16,
    pub slot: u32,
    pub tag: u64,
    /// `>= 0`: a value; `< 0`: `-errno` as Linux would give it.
    pub result: i64,
    pub data: [u8; 40],
}

impl Default for Evt {
    fn default() -> Self {
        Evt {
            kind: 0,
            _pad: 0,
            slot: 0,
            tag: 0,
            result: 0,
            data: [0; 40],
        }
    }
}

/// A waiter slot: one application epoll instance, or one thread inside poll/select.
#[repr(C)]
pub struct Waiter {
    /// Host swaps in 1 (`wake::announce`) before re-checking and blocking; the agent swaps it to 0 and writes the
    /// waiter's eventfd (registered over the control socket) when it publishes to a socket whose
    /// `waiter_mask` has this waiter's bit.
    pub sleeping: AtomicU32,
    pub _pad0: u32,
    /// Summary of this waiter's changed-slot bitmap: bit g = a word of group g may be non-zero.
    /// Agent sets (`changed::mark`), host clears (`changed::take`). Beside `sleeping` on purpose:
    /// the agent touches both for every change, the host both when it goes to sleep.
    pub changed: AtomicU64,
    pub _pad: [u8; 48],
}

/// A byte stream's producer side (stream.rs): written only by the producer, read by both.
#[repr(C)]
#[derive(Default)]
pub struct Producer {
    /// Free-running index of the next byte to write, published with Release.
    pub tail: AtomicU32,
    /// Index that sits at ring offset 0: a byte's offset is `(index - base) & (size - 1)`. The
    /// producer moves it to `tail` when it finds the stream empty, so small exchanges keep
    /// landing on the ring's first page (memory that grows with use, docs/channel.md).
    pub base: AtomicU32,
}

/// Per-socket control block. One cache line per writer group.
#[repr(C)]
pub struct SockCtl {
    /// RX stream producer side (agent).
    pub rx_prod: Line<Producer>,
    /// RX stream consumer index (host).
    pub rx_head: Line<AtomicU32>,
    /// TX stream producer side (host).
    pub tx_prod: Line<Producer>,
    /// TX stream consumer index (agent).
    pub tx_head: Line<AtomicU32>,
    /// Agent-written socket state.
    pub state: Line<SockState>,
    /// Host-written wait bookkeeping.
    pub host: Line<SockHost>,
}

/// Agent-written state of a socket.
#[repr(C)]
#[derive(Default)]
pub struct SockState {
    /// `SF_*` bits.
    pub flags: AtomicU32,
    /// Pending `SO_ERROR` (errno), valid while `flags & SF_ERROR`.
    pub error: AtomicU32,
    /// Bumped whenever `error` is set; the host remembers the last one it reported.
    pub error_seq: AtomicU32,
    /// Listeners: connections waiting in the agent's accept queue.
    pub accept_ready: AtomicU32,
    /// Listeners: bumped per connection queued (edge source for EPOLLET).
    pub accept_seq: AtomicU32,
    /// Futex word: bumped on every change a blocked host thread may wait for.
    pub wake_seq: AtomicU32,
    /// Agent sets 1 when it stopped reading because RX was full (after re-checking).
    pub rx_blocked: AtomicU32,
    /// Slot generation, bumped by the agent each time the slot is reused.
    pub gen: AtomicU32,
}

/// Host-written bookkeeping of a socket.
#[repr(C)]
#[derive(Default)]
pub struct SockHost {
    /// Host threads blocked in FUTEX_WAIT on `state.wake_seq`.
    pub waiters: AtomicU32,
    /// 1 while a `TxKick` command for this slot is outstanding.
    pub tx_kick: AtomicU32,
    /// Bit i: waiter i (epoll instance or poller) wants to hear about this socket.
    pub waiter_mask: AtomicU64,
}

// Socket state flags (SockState::flags).
/// A connection is established (connected or accepted).
pub const SF_CONNECTED: u32 = 1 << 0;
/// Non-blocking connect in progress.
pub const SF_CONNECTING: u32 = 1 << 1;
/// Listening.
pub const SF_LISTENING: u32 = 1 << 2;
/// The peer sent FIN; after the RX stream drains, reads return 0.
pub const SF_RX_FIN: u32 = 1 << 3;
/// The connection was reset or failed; `error` holds the errno.
pub const SF_ERROR: u32 = 1 << 4;
/// Write side shut down (by `shutdown` or by an error): writes fail with EPIPE.
pub const SF_TX_SHUT: u32 = 1 << 5;
/// The host asked for SHUT_RD: reads return 0 once RX drains.
pub const SF_RX_SHUT: u32 = 1 << 6;
/// The connection was reset by the peer (reads give ECONNRESET once, then 0).
pub const SF_RESET: u32 = 1 << 7;
/// The slot holds a live socket.
pub const SF_OPEN: u32 = 1 << 8;
/// A connection shared with another process (fork, exec) whose bytes currently flow to that
/// other process: a reader here sends `OP_RX_CLAIM` before it waits or reports EAGAIN.
pub const SF_PASSIVE: u32 = 1 << 9;

// Command opcodes.
pub const OP_SOCKET: u16 = 1;
pub const OP_BIND: u16 = 2;
pub const OP_LISTEN: u16 = 3;
pub const OP_ACCEPT: u16 = 4;
pub const OP_CONNECT: u16 = 5;
pub const OP_CLOSE: u16 = 6;
pub const OP_SHUTDOWN: u16 = 7;
pub const OP_GETSOCKNAME: u16 = 8;
pub const OP_GETPEERNAME: u16 = 9;
pub const OP_SETSOCKOPT: u16 = 10;
pub const OP_GETSOCKOPT: u16 = 11;
/// New bytes in the TX stream (sent only when `SockHost::tx_kick` went 0 -> 1: `wake::kick_needed`).
pub const OP_TX_KICK: u16 = 12;
/// The host consumed RX after the agent set `rx_blocked` (`wake::rx_space_needed`).
pub const OP_RX_SPACE: u16 = 13;
/// No operation; completes with 0 (used by benchmarks for the channel round trip).
pub const OP_NOP: u16 = 14;
/// Takes a fork ticket (`tag != 0`, slot ignored): a reference to every socket the session holds
/// now. Completion 0 with `data[0..8]` = the ticket's secret (little-endian, never 0), or -ENOMEM
/// when the session holds too many live tickets.
pub const OP_FORK: u16 = 15;
/// Ties a ticket to the child that will claim it (slot ignored): `arg[0]` = secret, `arg[1]` =
/// child pid. Only the session that took the ticket may do this. Completion 0, or -ENOENT when the
/// ticket is already claimed or gone.
pub const OP_FORK_CHILD: u16 = 16;
/// A reader of a shared connection whose slot shows `SF_PASSIVE` wants its bytes (slot; tag 0, no
/// completion). The agent takes what the active process had not read (it moves that process's
/// `rx_head` to its tail with a compare-and-swap, so a concurrent read there either finished
/// first or fails its own CAS and reads nothing), and the connection's bytes flow here from then on.
pub const OP_RX_CLAIM: u16 = 17;

/// Command flag: complete only when the operation finished (blocking accept/connect).
pub const CF_WAIT: u16 = 1;

/// Event kinds.
pub const EV_COMPLETION: u16 = 1;

/// Largest socket option value carried inline.
pub const MAX_OPTVAL: usize = 32;
/// Command flag (OP_SETSOCKOPT/OP_GETSOCKOPT): the value is in option buffer cell `arg[2]`,
/// `arg[1]` bytes long (up to [`OPT_SIZE`]), not inline.
pub const CF_OPTBUF: u16 = 2;
/// Option buffer cells in a region (one per host request in flight).
pub const OPT_CELLS: usize = 256;
/// Bytes of one option buffer cell (struct tcp_info, TCP_MD5SIG keys, ...).
pub const OPT_SIZE: usize = 512;

#[cfg(not(loom))]
const _: () = {
    assert!(core::mem::size_of::<Header>() <= HEADER_SIZE);
    assert!(core::mem::size_of::<Cmd>() == 64);
    assert!(core::mem::size_of::<Evt>() == 64);
    assert!(core::mem::size_of::<Waiter>() == 64);
    assert!(core::mem::size_of::<RingHdr>() == 128);
    assert!(core::mem::size_of::<SockCtl>() == 384);
    assert!(core::mem::align_of::<SockCtl>() == 64);
};
