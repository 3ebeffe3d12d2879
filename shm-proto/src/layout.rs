//! `#[repr(C)]` types of the region. Sizes are asserted at compile time; fields document who writes
//! them. "host" is `libsnstack.so` inside an application, "agent" is `snstack-agent` (the NIC side).

use crate::primitive::{AtomicU32, AtomicU64};

/// "SNSTACK" + NUL, little-endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SNSTACK\0");
/// Bumped on every incompatible change of anything in this crate.
pub const VERSION: u32 = 14;
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
    /// The TX-changed bitmap (host -> agent, one bit per socket slot, `changed_stride` bytes):
    /// "new bytes in this slot's TX stream" (see [`AgentWake::tx_changed`]).
    pub tx_changed_off: u64,
    /// `FEAT_*` bits: what this agent's backend offers (stored before the region is handed over).
    pub features: AtomicU32,
    _pad0: [u8; 12],
    /// The agent's sleep flag and the summary of the TX-changed bitmap, on one line.
    pub agent: Line<AgentWake>,
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

/// The host -> agent wake-up line of the header.
#[repr(C)]
#[derive(Default)]
pub struct AgentWake {
    /// Agent swaps in 1 before it blocks in the kernel; the host rings the agent doorbell
    /// (eventfd) after publishing a command or a TX-changed bit when it swaps a 1 out of it.
    /// See [`crate::wake`].
    pub sleeping: AtomicU32,
    _pad: u32,
    /// Summary of the TX-changed bitmap ([`Header::tx_changed_off`]): bit g = a word of group g
    /// may be non-zero (`changed::mark` by the host after it published TX bytes, `changed::take`
    /// by the agent, which then drains those slots' TX streams). It replaces a command per send:
    /// in a burst the host sets bits in words that stay in its cache, and only the send that
    /// finds the summary bit clear goes on to the doorbell decision, on this same line.
    pub tx_changed: AtomicU64,
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
    /// Of `h2n_bytes`: bytes read from host files by reference (`OP_TX_FILE`), the emulation of
    /// the NIC's DMA reads of page-cache pages the host registered.
    pub h2n_file_bytes: AtomicU64,
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
    /// Host sets 1 when this waiter blocks in `FUTEX_WAIT` on `sleeping` itself (a payload-API
    /// poll group: one system call per sleep, no fd to poll): the agent then wakes it with
    /// `FUTEX_WAKE` on `sleeping` instead of writing its eventfd. 0: the eventfd (an epoll
    /// instance must see an fd).
    pub futex: AtomicU32,
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

/// A byte stream's consumer side: written by the consumer, read by both.
#[repr(C)]
#[derive(Default)]
pub struct ConsumerSide {
    /// Free-running index of the next byte to read, published with Release.
    pub head: AtomicU32,
    /// RX only: the agent (producer) set 1 when it stopped reading from the wire because the
    /// stream was full, after re-checking (`wake::rx_block`). Beside the head on purpose: the
    /// host swaps it right after publishing the head, on the line it just wrote.
    pub blocked: AtomicU32,
}

/// Per-socket control block. One cache line per writer group.
#[repr(C)]
pub struct SockCtl {
    /// RX stream producer side (agent).
    pub rx_prod: Line<Producer>,
    /// RX stream consumer side (host).
    pub rx_head: Line<ConsumerSide>,
    /// TX stream producer side (host).
    pub tx_prod: Line<Producer>,
    /// TX stream consumer side (agent).
    pub tx_head: Line<ConsumerSide>,
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
    /// Slot generation, bumped by the agent each time the slot is reused.
    pub gen: AtomicU32,
    /// Bytes of `OP_TX_FILE` references the agent has handed to its backend (the host's send
    /// budget counts `SockHost::tx_file_posted - tx_file_done` as queued).
    pub tx_file_done: AtomicU64,
    /// The channel's publication counter when a change of this socket was last published
    /// (stored before the changed-slot mark): the host reports the sockets one scan finds
    /// changed in this order, the order in which the changes arose, as Linux's ready list does.
    pub stamp: AtomicU64,
    /// The urgent byte the peer sent last (TCP urgent data, `MSG_OOB`), packed by
    /// [`Urgent::pack`]; 0 while there has been none. Each new urgent pointer gets a new
    /// generation, so the host can tell one from the next (docs/channel.md, *Urgent data*).
    pub urgent: AtomicU64,
    /// Framed connections (payload API, `record.rs`): why the agent closed the connection for
    /// malformed input from the wire, as a [`crate::record::REASONS`] index plus one; 0: it did
    /// not. Stored before `SF_ERROR` (`EPROTO`) is published.
    pub framing_error: AtomicU32,
    /// kTLS RX (`setsockopt(SOL_TLS, TLS_RX)` served by the agent): what the readable bytes of
    /// the RX stream are, [`crate::TlsRx::pack`]ed: application data (0), one control record of
    /// a given type, or an error that ends the stream (docs/channel.md, *kTLS RX*).
    pub tls_rx: AtomicU32,
}

/// Host-written bookkeeping of a socket.
#[repr(C)]
#[derive(Default)]
pub struct SockHost {
    /// Host threads blocked in FUTEX_WAIT on `state.wake_seq`.
    pub waiters: AtomicU32,
    /// Bit i: waiter i (epoll instance or poller) wants to hear about this socket.
    pub waiter_mask: AtomicU64,
    /// Bytes of `OP_TX_FILE` references posted for this slot, stored (Release) after each
    /// command is on the ring and before any later TX byte is published: an agent that sees TX
    /// bytes past a reference's place also sees this count ahead of the references it took.
    pub tx_file_posted: AtomicU64,
    /// `OP_TX_URG` commands posted for this slot, stored (Release) before the TX tail that
    /// holds their urgent byte is published: an agent that sees the byte also sees the count,
    /// and waits for the command before it sends the byte as ordinary data.
    pub tx_urg_posted: AtomicU32,
    /// 1 while the application has `SO_OOBINLINE` (the host keeps urgent bytes in the data):
    /// the agent reads it where Linux drops an urgent byte that a newer one superseded.
    pub oob_inline: AtomicU32,
    /// `F_SETOWN` of the socket, for `SIGURG`: [`Owner::pack`]ed (0: none). The agent reads it
    /// when urgent data arrives and signals the owner only as the host process could.
    pub owner: AtomicU64,
    /// `OP_TX_RECTYPE` commands posted for this slot (kTLS control records), stored (Release)
    /// before the TX tail that holds their bytes is published: an agent that sees the bytes
    /// also sees the count, and waits for the command before it seals them as application data.
    pub tx_rec_posted: AtomicU32,
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
/// New bytes in the TX stream of `slot`: the agent drains it. The hosts in this tree set the
/// slot's bit in the TX-changed bitmap instead ([`AgentWake::tx_changed`]); the command stays for
/// clients that want the drain ordered among their other commands.
pub const OP_TX_KICK: u16 = 12;
/// The host consumed RX after the agent set `rx_head.blocked` (`wake::rx_space_needed`).
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

/// Opens a file of the process for sending by reference (slot ignored, `tag != 0`): `arg[0]` =
/// the host's fd, `arg[1]` = its `st_dev`, `arg[2]` = its `st_ino`. The agent takes its own
/// reference to the open file (`pidfd_getfd`) and checks it is that regular file. Completion: the
/// file's id (`>= 0`), or -errno (`EOPNOTSUPP` when the backend has no [`FEAT_FILE_REFS`],
/// `ESTALE` when the fd no longer names that file, `EMFILE` past [`MAX_FILES`]).
pub const OP_FILE_OPEN: u16 = 18;
/// Drops file `arg[0]` (tag 0, no completion); references already queued keep it open.
pub const OP_FILE_CLOSE: u16 = 19;
/// Sends `arg[2]` bytes of file `arg[0]` from offset `arg[1]` on socket `slot`, in the TX byte
/// sequence at TX stream index `arg[3]` (the tail when it was posted): the agent sends the
/// stream's bytes before that index, then the file's, then the stream's after it. Tag 0, no
/// completion; the host adds the length to `SockHost::tx_file_posted` afterwards. A file that
/// turns out shorter than promised resets the connection (the stream cannot be completed).
pub const OP_TX_FILE: u16 = 20;
/// Marks urgent data on socket `slot` (`send(MSG_OOB)`): the byte at TX stream index
/// `arg[0] - 1` is the urgent one (the urgent pointer goes after it, as Linux sends it). Tag 0,
/// no completion; the host bumps `SockHost::tx_urg_posted` before it publishes that byte.
pub const OP_TX_URG: u16 = 21;
/// kTLS control record on socket `slot` (`sendmsg` with a `SOL_TLS`/`TLS_SET_RECORD_TYPE`
/// control message): the TX stream bytes `arg[0]..arg[1]` form record(s) of content type
/// `arg[2]` (1..=255). Tag 0, no completion; the host bumps `SockHost::tx_rec_posted` before
/// it publishes those bytes.
pub const OP_TX_RECTYPE: u16 = 22;
/// Files one process may have open with the agent at a time.
pub const MAX_FILES: usize = 256;
/// Largest `OP_TX_FILE` length.
pub const MAX_TX_FILE: u64 = 1 << 30;
/// Smallest `OP_TX_FILE` length: smaller pieces cost less to copy than to post, and the bound
/// keeps the number of references a socket can have queued within `tx_size / MIN_TX_FILE + 1`
/// (the host keeps its stream bytes plus unsent reference bytes within `tx_size`).
pub const MIN_TX_FILE: u64 = 4096;

/// `Header::features`: the agent sends `OP_TX_FILE` references from the file itself (its
/// backend reads the host's pages, as a NIC's DMA would); without it hosts copy into the stream.
pub const FEAT_FILE_REFS: u32 = 1;
/// `Header::features`: the agent's backend carries TCP urgent data (`OP_TX_URG`,
/// `SockState::urgent`); without it hosts refuse `MSG_OOB` with `EOPNOTSUPP`.
pub const FEAT_URGENT: u32 = 2;

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
