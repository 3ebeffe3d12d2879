//! The seam between the agent and a TCP implementation.
//!
//! The agent (sessions, channel, wake-ups) speaks to a [`Backend`]; `kernel` drives the OS stack
//! with non-blocking sockets, and a user-space engine can be added beside it without touching the
//! channel code. Sockets are identified by the backend's own handle type; readiness comes back
//! through [`Backend::poll`] tagged with the token the agent registered.

pub mod kernel;
pub mod loopback;
pub mod user;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{OwnedFd, RawFd};

/// Readiness of one socket, as edge reports (the agent reads/writes until `WouldBlock`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    pub readable: bool,
    pub writable: bool,
    /// Peer closed or connection dead (EPOLLHUP / EPOLLRDHUP).
    pub hup: bool,
    /// An error is pending (EPOLLERR).
    pub error: bool,
    /// Urgent data arrived (EPOLLPRI): ask [`Backend::urgent_in`].
    pub urgent: bool,
}

/// What a backend knows of the urgent byte its peer sent last (TCP urgent data as Linux keeps
/// it: one byte, the BSD pointer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UrgentIn {
    /// The backend's count of urgent pointers received, when it keeps one (a new value is new
    /// urgent data); `None`: the agent tells one from the next by the mark (kernel).
    pub seq: Option<u32>,
    /// The byte, once it arrived.
    pub byte: Option<u8>,
    /// Bytes [`Backend::recv`] (or the receive sink) hands over before the urgent byte: `Some(0)`
    /// when it is next, negative when it was handed over that many bytes ago (inline backends);
    /// `None` when not known yet (somewhere after what was handed over).
    pub ahead: Option<i64>,
    /// The byte comes in the data at its place. `false`: the backend keeps it out of the data
    /// (the kernel's socket without `SO_OOBINLINE`), and the agent writes it into the RX stream
    /// when [`UrgentIn::ahead`] is `Some(0)`.
    pub inline: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct SockEvent {
    pub token: u64,
    pub ready: Readiness,
}

/// Progress of a non-blocking connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectState {
    Pending,
    Connected,
    Failed(i32),
}

/// Counters of the loopback accelerator (`backend::loopback`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopStats {
    pub enabled: bool,
    /// Loop connections made.
    pub connections: u64,
    /// Payload bytes moved between loop ends.
    pub bytes: u64,
}

/// Counters of the user-space engine (`snstack-agent stats`, keys `tcp_*`); all zero and
/// not printed for the kernel backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub enabled: bool,
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub rx_csum_errors: u64,
    pub rx_malformed: u64,
    pub conns: u64,
    pub time_wait: u64,
    pub memory_bytes: u64,
    /// The engine's own per-connection counters, summed.
    pub tcp: snstack_tcp::stack::TcpCounters,
    pub syn_dropped: u64,
    pub syncookies_sent: u64,
    pub syncookies_ok: u64,
    pub rst_sent: u64,
    /// Data segments built straight in the device's memory (one copy from the TX stream to the
    /// wire) and in the engine's own buffers (copied again by the device, except af_packet's).
    pub tx_data_direct: u64,
    pub tx_data_buffered: u64,
    /// Segments not sent because their lent TX stream could not be read.
    pub tx_lent_missing: u64,
}

pub use snstack_tcp::RxSink;

/// A raw buffer for vectored I/O into or out of shared memory.
pub type IoBuf = libc::iovec;

/// Byte slices made from an iovec list: up to [`Slices::INLINE`] without an allocation (the
/// channel's streams hand over at most two pieces, before and after the ring's wrap).
pub struct Slices<T: Default> {
    inline: [T; 4],
    n: usize,
    heap: Vec<T>,
}

impl<T: Default> Slices<T> {
    pub const INLINE: usize = 4;

    fn from_iter(it: impl Iterator<Item = T>) -> Self {
        let mut s = Slices {
            inline: Default::default(),
            n: 0,
            heap: Vec::new(),
        };
        for x in it {
            if s.heap.is_empty() && s.n < Self::INLINE {
                s.inline[s.n] = x;
                s.n += 1;
            } else {
                if s.heap.is_empty() {
                    s.heap.extend(s.inline.iter_mut().map(std::mem::take));
                }
                s.heap.push(x);
            }
        }
        s
    }
}

impl<T: Default> std::ops::Deref for Slices<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        if self.heap.is_empty() {
            &self.inline[..self.n]
        } else {
            &self.heap
        }
    }
}

impl<T: Default> std::ops::DerefMut for Slices<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        if self.heap.is_empty() {
            &mut self.inline[..self.n]
        } else {
            &mut self.heap
        }
    }
}

/// The non-empty buffers of `bufs` as byte slices to fill (for backends that copy in Rust).
///
/// # Safety
/// Each buffer must be writable memory of `iov_len` bytes that no other Rust reference aliases
/// while the slices live (the contract of [`Backend::recv`]).
pub unsafe fn iov_mut<'a>(bufs: &[IoBuf]) -> Slices<&'a mut [u8]> {
    Slices::from_iter(
        bufs.iter()
            .filter(|b| b.iov_len > 0)
            // SAFETY: the caller's contract.
            .map(|b| unsafe { std::slice::from_raw_parts_mut(b.iov_base.cast::<u8>(), b.iov_len) }),
    )
}

/// The non-empty buffers of `bufs` as byte slices to read.
///
/// # Safety
/// Each buffer must be readable memory of `iov_len` bytes, unchanged while the slices live (the
/// contract of [`Backend::send`]).
pub unsafe fn iov_ref<'a>(bufs: &[IoBuf]) -> Slices<&'a [u8]> {
    Slices::from_iter(
        bufs.iter()
            .filter(|b| b.iov_len > 0)
            // SAFETY: the caller's contract.
            .map(|b| unsafe {
                std::slice::from_raw_parts(b.iov_base.cast::<u8>().cast_const(), b.iov_len)
            }),
    )
}

/// [`Backend::send_file`] for backends that copy: up to 32 KiB of `file` from `offset` read into
/// a buffer and handed to `send` (a short send reads again next time); `Ok(0)` at the file's end.
pub fn send_file_chunk(
    file: RawFd,
    offset: u64,
    len: usize,
    send: impl FnOnce(&[u8]) -> io::Result<usize>,
) -> io::Result<usize> {
    let mut buf = [0u8; 32 * 1024];
    let n = crate::sys::pread(file, &mut buf[..len.min(32 * 1024)], offset)?;
    if n == 0 {
        return Ok(0);
    }
    send(&buf[..n])
}

/// A TCP implementation. Every method is non-blocking; errors carry Linux errno values.
pub trait Backend {
    type Sock;

    fn socket(&mut self, domain: i32) -> io::Result<Self::Sock>;
    fn bind(&mut self, s: &Self::Sock, a: &SocketAddr) -> io::Result<()>;
    fn listen(&mut self, s: &Self::Sock, backlog: i32) -> io::Result<()>;
    fn accept(&mut self, s: &Self::Sock) -> io::Result<(Self::Sock, SocketAddr)>;
    /// Starts a connect: `Ok` when connected at once, `Err(EINPROGRESS)` when under way.
    fn connect(&mut self, s: &Self::Sock, a: &SocketAddr) -> io::Result<()>;
    fn connect_state(&mut self, s: &Self::Sock) -> ConnectState;
    /// Pending socket error (0 when none); reading clears it.
    fn take_error(&mut self, s: &Self::Sock) -> i32;
    fn shutdown(&mut self, s: &Self::Sock, how: i32) -> io::Result<()>;
    fn local_addr(&mut self, s: &Self::Sock) -> io::Result<SocketAddr>;
    fn peer_addr(&mut self, s: &Self::Sock) -> io::Result<SocketAddr>;
    fn setsockopt(&mut self, s: &Self::Sock, level: i32, name: i32, val: &[u8]) -> io::Result<()>;
    /// Returns the option's length (clamped to `buf.len()`).
    fn getsockopt(
        &mut self,
        s: &Self::Sock,
        level: i32,
        name: i32,
        buf: &mut [u8],
    ) -> io::Result<usize>;
    /// Receives into `bufs`; `Ok(0)` is end of stream.
    ///
    /// # Safety
    /// Every buffer must be writable memory that no Rust reference aliases during the call.
    unsafe fn recv(&mut self, s: &Self::Sock, bufs: &[IoBuf]) -> io::Result<usize>;
    /// Sends from `bufs` (never raises SIGPIPE).
    ///
    /// # Safety
    /// Every buffer must be readable memory.
    unsafe fn send(&mut self, s: &Self::Sock, bufs: &[IoBuf]) -> io::Result<usize>;
    /// [`Backend::send`] with more to follow at once (`MSG_MORE`): the bytes may wait in a
    /// partly filled segment for what comes next (the FIN of the close that follows), so both
    /// leave in one. The caller then closes, or calls [`Backend::push`]; a backend without the
    /// hint sends as `send` does.
    ///
    /// # Safety
    /// Every buffer must be readable memory.
    unsafe fn send_more(&mut self, s: &Self::Sock, bufs: &[IoBuf]) -> io::Result<usize> {
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.send(s, bufs) }
    }
    /// Sends what [`Backend::send_more`] left waiting, as a send without the hint would have
    /// (unless the application corked the socket itself).
    fn push(&mut self, _s: &Self::Sock) {}
    /// Whether received bytes wait unread in the backend's socket (closing it then resets
    /// the connection; bytes held by [`Backend::send_more`] must leave first).
    fn has_unread(&mut self, _s: &Self::Sock) -> bool {
        false
    }
    /// Whether the backend carries TCP urgent data ([`Backend::send_urgent`],
    /// [`Backend::urgent_in`]); the agent tells hosts with `FEAT_URGENT`.
    fn urgent_data(&self) -> bool {
        false
    }
    /// Sends from `bufs` as [`Backend::send`] does, the last byte taken being urgent
    /// (`MSG_OOB`: the urgent pointer goes after it). The agent hands over one byte at a time.
    ///
    /// # Safety
    /// Every buffer must be readable memory.
    unsafe fn send_urgent(&mut self, _s: &Self::Sock, _bufs: &[IoBuf]) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }
    /// The peer's urgent data, after a [`Readiness::urgent`] report (and, while its place is not
    /// known, before each [`Backend::recv`]); `None` when there is none.
    fn urgent_in(&mut self, _s: &Self::Sock) -> io::Result<Option<UrgentIn>> {
        Ok(None)
    }
    /// Whether `s` may hold urgent data, when that costs nothing to tell (no syscall): a
    /// connection just taken from a listener is asked before its first receive. `false` when
    /// the backend cannot tell cheaply (kernel: its `EPOLLPRI` report follows).
    fn urgent_hint(&self, _s: &Self::Sock) -> bool {
        false
    }
    /// Urgent data may have arrived on some socket without its readiness report having been
    /// collected yet: [`Backend::urgent_in`] should be asked before each receive until the next
    /// [`Backend::poll`] (kernel: a `SIGURG` came in since the last one).
    fn urgent_unpolled(&self) -> bool {
        false
    }
    /// Sends `SIGURG` to `owner` of a socket of host process `pid`, as that process could
    /// (Linux's permission rules for `F_SETOWN` signals).
    fn signal_owner(&mut self, pid: i32, owner: shm_proto::Owner) {
        crate::sys::send_sigurg(pid, owner);
    }
    /// Whether [`Backend::send_file`] sends from the file itself rather than through a buffer
    /// of the agent's (the kernel's `sendfile`). The agent then offers file references to
    /// hosts (`FEAT_FILE_REFS`: their `sendfile` posts `OP_TX_FILE` instead of copying into the
    /// TX stream); backends that copy anyway keep the host's one copy (docs/channel.md).
    fn file_refs(&self) -> bool {
        false
    }
    /// Sends up to `len` bytes of the regular file `file` from `offset`, as [`Backend::send`]
    /// does (partial counts, WouldBlock); `Ok(0)` for `len > 0` means the file ended first.
    /// The default reads a buffer's worth and sends it (a short send reads again next time).
    fn send_file(
        &mut self,
        s: &Self::Sock,
        file: RawFd,
        offset: u64,
        len: usize,
    ) -> io::Result<usize> {
        send_file_chunk(file, offset, len, |b| {
            let iov = IoBuf {
                iov_base: b.as_ptr().cast_mut().cast(),
                iov_len: b.len(),
            };
            // SAFETY: a buffer of ours, readable and unchanged during the call.
            unsafe { self.send(s, &[iov]) }
        })
    }
    /// Whether `s` can send straight from a lent TX stream (the native engine builds segments
    /// from it: one copy from the channel to the wire; sock.rs, docs/channel.md *Lent TX*).
    fn can_lend_tx(&self, _s: &Self::Sock) -> bool {
        false
    }
    /// Lends `stream` to `s` from index `at` on; [`Backend::send_lent`] then hands over the
    /// bytes appended after `at`.
    ///
    /// # Safety
    /// The stream's memory stays mapped, and its bytes from `at` on that were handed over stay
    /// unchanged, until [`Backend::take_acked`] reports them or [`Backend::reclaim_tx`] (or
    /// [`Backend::close`]) ends the loan.
    unsafe fn lend_tx(
        &mut self,
        _s: &Self::Sock,
        _stream: shm_proto::Stream,
        _at: u32,
    ) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }
    /// The lent stream grew by `n` bytes: queues what the connection takes (as `send`).
    fn send_lent(&mut self, _s: &Self::Sock, _n: usize) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }
    /// Lent bytes the peer acknowledged since the last call; `None` when `s` holds no loan (the
    /// connection is gone: nothing handed over is read again).
    fn take_acked(&mut self, _s: &Self::Sock) -> Option<u32> {
        None
    }
    /// The lent stream is too small for `s`'s path (it holds half the stream at the measured
    /// rate): the loan should end so the backend's buffer can grow with the window.
    fn loan_outgrown(&self, _s: &Self::Sock) -> bool {
        false
    }
    /// Ends the loan: the backend copies what is still unacknowledged into its own buffer.
    /// Returns the acknowledged count not yet taken.
    fn reclaim_tx(&mut self, _s: &Self::Sock) -> u32 {
        0
    }
    /// Starts readiness reports for `s` under `token` (edge-triggered: read, write, hang-up).
    fn register(&mut self, s: &Self::Sock, token: u64) -> io::Result<()>;
    /// Releases a socket (the OS close for the kernel backend).
    fn close(&mut self, s: Self::Sock);
    /// Collects readiness without blocking.
    fn poll(&mut self, out: &mut Vec<SockEvent>) -> io::Result<()>;
    /// [`Backend::poll`], offering received in-order payload to `sink` first (the channel's RX
    /// stream: one copy from the frame; snstack_tcp::sink). Backends that read from the OS
    /// ignore the sink.
    fn poll_into(&mut self, out: &mut Vec<SockEvent>, _sink: &mut dyn RxSink) -> io::Result<()> {
        self.poll(out)
    }
    /// A descriptor that becomes readable when [`Backend::poll`] has something to report; the
    /// agent puts it in its own epoll set.
    fn wait_fd(&self) -> RawFd;
    /// Readiness produced inside the agent (loopback connections), which no descriptor
    /// announces: the agent collects it with [`Backend::poll_local`] before it sleeps.
    fn has_local_events(&self) -> bool {
        false
    }
    /// After a short [`Backend::recv`]: whether another call could return something (bytes, the
    /// end of the stream or an error) rather than WouldBlock. `true` when the backend cannot
    /// tell cheaply (the caller then calls again).
    fn recv_more(&self, _s: &Self::Sock) -> bool {
        true
    }
    /// Input waits that [`Backend::poll`] would take, seen without a syscall (a device ring's
    /// next slot). A busy agent calls `poll` on this instead of waiting for
    /// [`Backend::wait_fd`] in an `epoll_wait`; `None` when the backend cannot tell (the agent
    /// then polls its epoll set every few microseconds while busy).
    fn rx_pending(&self) -> Option<bool> {
        None
    }
    /// [`Backend::poll`] with nothing ready is one non-blocking wait on the backend's own
    /// descriptor set (the kernel backend's epoll instance): a busy agent calls it directly
    /// instead of an `epoll_wait` on its own set, which nests this one and would read every
    /// ready socket's state a second time.
    fn poll_is_wait(&self) -> bool {
        false
    }
    /// Collects only the readiness of [`Backend::has_local_events`] (no syscall).
    fn poll_local(&mut self, _out: &mut Vec<SockEvent>) {}
    /// Counters of the loopback accelerator, when there is one.
    fn loop_stats(&self) -> LoopStats {
        LoopStats::default()
    }
    /// Counters of the user-space engine, when there is one.
    fn engine_stats(&self) -> EngineStats {
        EngineStats::default()
    }
    /// 127.0.0.0/8 and ::1 are this stack's own addresses (the kernel's; not the user stack's).
    fn owns_loopback(&self) -> bool {
        false
    }
    /// The one address this stack owns, when it owns exactly one (the user stack's `--ip`);
    /// `None`: every address of the host's interfaces.
    fn own_ip(&self) -> Option<IpAddr> {
        None
    }

    // Facts about the host that the agent's policy asks for. The core makes no system call of
    // its own (agent/core.rs), so it asks its backend; these defaults read the OS, and a test
    // backend answers them itself.

    /// 8 random bytes (fork ticket secrets).
    fn random_u64(&mut self) -> io::Result<u64> {
        crate::sys::random_u64()
    }
    /// Effective capability set of process `pid`.
    fn cap_eff(&self, pid: i32) -> io::Result<u64> {
        crate::sys::cap_eff(pid)
    }
    /// The agent's own reference to process `pid`'s open file `fd`, when it is the regular
    /// file `dev`/`ino` (`OP_FILE_OPEN`; the emulation of the host registering pages for DMA).
    fn host_file(&mut self, pid: i32, fd: i32, dev: u64, ino: u64) -> io::Result<OwnedFd> {
        crate::sys::host_file(pid, fd, dev, ino)
    }
    /// Parent of process `pid`.
    fn parent_pid(&self, pid: i32) -> io::Result<i32> {
        crate::sys::parent_pid(pid)
    }
    /// First port an unprivileged process may bind.
    fn unprivileged_port_start(&self) -> u32 {
        crate::sys::unprivileged_port_start()
    }
    /// Congestion controls the kernel has.
    fn available_congestion_controls(&self) -> String {
        crate::sys::available_congestion_controls()
    }
    /// Congestion controls an unprivileged process may choose.
    fn allowed_congestion_controls(&self) -> String {
        crate::sys::allowed_congestion_controls()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iov(b: &mut [u8]) -> IoBuf {
        IoBuf {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        }
    }

    #[test]
    fn slices_skip_empty_buffers_and_keep_order_past_the_inline_ones() {
        let mut bufs: Vec<Vec<u8>> = (0..7u8).map(|i| vec![i; usize::from(i % 3)]).collect();
        let list: Vec<IoBuf> = bufs.iter_mut().map(|b| iov(b)).collect();
        // SAFETY: the buffers outlive the slices and nothing else touches them meanwhile.
        let s = unsafe { iov_ref(&list) };
        let got: Vec<(u8, usize)> = s.iter().map(|b| (b[0], b.len())).collect();
        assert_eq!(got, [(1, 1), (2, 2), (4, 1), (5, 2)]);
        let mut more: Vec<Vec<u8>> = (1..=6u8).map(|i| vec![i; 1]).collect();
        let list: Vec<IoBuf> = more.iter_mut().map(|b| iov(b)).collect();
        // SAFETY: as above.
        let mut s = unsafe { iov_mut(&list) };
        assert_eq!(s.len(), 6);
        s[5][0] = 60;
        assert_eq!(
            s.iter().map(|b| b[0]).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 60]
        );
    }
}
