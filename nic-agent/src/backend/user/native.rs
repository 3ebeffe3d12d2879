//! The agent's default user-space engine: snstack-tcp (our own sans-IO TCP/IP stack, crate
//! `tcp/`) over a frame [`Device`]. This file is the I/O shell around it: the clock, the
//! device bursts, the wake-up descriptors, and the translation of Linux socket options.
//!
//! ```text
//!  agent epoll ──► wait_fd (epoll) ◄── device rx fd   (frames waiting)
//!                                  ◄── kick eventfd   (a call queued work)
//!                                  ◄── timerfd        (the engine's next timer; polled devices)
//!  poll(): rx burst → Stack::handle_frame → handle_timeout → poll_transmit → tx burst → events
//! ```

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant as StdInstant};

use snstack_tcp::stack::{SockId, SockOpt, Stack, StackConfig};
use snstack_tcp::{Instant, TxSource};

use super::device::{Device, TxFrame};
use crate::backend::{Backend, ConnectState, IoBuf, Readiness, RxSink, SockEvent};
use crate::sys;

/// Frames taken from the device per burst, and bursts per poll.
const BURST: usize = 64;
const BURSTS: usize = 8;
/// A device without a descriptor (DPDK) is polled this often while traffic flows, and this
/// often after `IDLE_AFTER` without frames.
const BUSY_POLL: Duration = Duration::from_micros(50);
const IDLE_POLL: Duration = Duration::from_millis(2);
const IDLE_AFTER: Duration = Duration::from_millis(20);
/// Idle connections give back their buffer memory this often.
const TRIM_EVERY: Duration = Duration::from_secs(1);
/// A timerfd armed this much after a deadline still counts as armed for it (re-arming costs a
/// syscall; the engine's deadlines are 1 ms ticks).
const ARM_SLACK: Duration = Duration::from_micros(50);

/// The agent's handle of one engine socket (not `Clone`: closing consumes it).
#[derive(Debug, PartialEq, Eq)]
pub struct NativeSock(SockId);

pub struct NativeBackend<D: Device> {
    stack: Stack,
    dev: D,
    epoll: sys::Epoll,
    kick: OwnedFd,
    timer: OwnedFd,
    kicked: bool,
    base: StdInstant,
    polled: bool,
    last_rx: StdInstant,
    last_trim: StdInstant,
    tx: VecDeque<TxFrame>,
    done: Vec<Vec<u8>>,
    /// When the timerfd is armed to fire (None: disarmed).
    armed: Option<StdInstant>,
    /// Frames the device refused (full): sent first at the next poll.
    pub tx_dropped: u64,
    /// The device lends its transmit memory (`Device::frame_writer`): every flush hands it to
    /// `tx_burst`, which sends the frames written there (some may wait from an earlier poll).
    direct: bool,
    /// TX streams lent to connections (engine socket index -> stream), read when segments are
    /// built (sock.rs, *Lent TX*).
    lent: Lent,
}

/// The lent TX streams, as the engine's [`TxSource`], indexed by engine socket index (read for
/// every segment built: no hashing).
#[derive(Default)]
struct Lent(Vec<Option<shm_proto::Stream>>);

impl Lent {
    fn insert(&mut self, i: u32, st: shm_proto::Stream) {
        let i = i as usize;
        if self.0.len() <= i {
            self.0.resize(i + 1, None);
        }
        self.0[i] = Some(st);
    }

    fn remove(&mut self, i: u32) -> Option<shm_proto::Stream> {
        self.0.get_mut(i as usize).and_then(Option::take)
    }
}

/// One stream taken out of [`Lent`], for the engine's last read of it.
struct OneLent(shm_proto::Stream);

impl TxSource for OneLent {
    fn copy_tx(&self, _id: SockId, index: u32, out: &mut [u8]) -> bool {
        if out.len() > self.0.size() as usize {
            return false;
        }
        self.0.copy_out(index, out);
        true
    }
}

impl TxSource for Lent {
    fn copy_tx(&self, id: SockId, index: u32, out: &mut [u8]) -> bool {
        match self.0.get(id.0 as usize) {
            Some(Some(st)) if out.len() <= st.size() as usize => {
                st.copy_out(index, out);
                true
            }
            _ => false,
        }
    }
}

fn err(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

fn int(val: &[u8]) -> io::Result<i32> {
    val.get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| err(libc::EINVAL))
}

impl<D: Device> NativeBackend<D> {
    pub fn new(mut dev: D, mut cfg: StackConfig) -> io::Result<Self> {
        cfg.caps = dev.caps();
        cfg.mac = dev.mac();
        cfg.trust_partial_csum = dev.rx_csum_may_be_partial();
        let base = StdInstant::now();
        let stack = Stack::new(cfg, Instant::ZERO);
        let polled = dev.rx_fd().is_none();
        let (epoll, kick, timer) = super::wake_set(dev.rx_fd())?;
        let direct = dev.frame_writer().is_some();
        let mut b = NativeBackend {
            stack,
            dev,
            epoll,
            kick,
            timer,
            kicked: false,
            base,
            polled,
            last_rx: base,
            last_trim: base,
            tx: VecDeque::new(),
            done: Vec::new(),
            armed: None,
            tx_dropped: 0,
            direct,
            lent: Lent::default(),
        };
        b.kick_now();
        Ok(b)
    }

    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.base.elapsed().as_micros() as u64)
    }

    fn kick_now(&mut self) {
        if !self.kicked {
            self.kicked = true;
            if let Err(e) = sys::eventfd_write(self.kick.as_raw_fd(), 1) {
                tracing::error!("native backend: kick eventfd: {e}");
            }
        }
    }

    /// A call queued output or an event: nothing to do here. The agent asks
    /// [`Backend::has_local_events`] at the end of every loop iteration and before it sleeps,
    /// and [`Backend::poll_local`] sends the output in one batch (no eventfd round trip).
    fn after_call(&mut self) {}

    /// Output, readiness and deadlines that calls produced, without touching the device's
    /// receive side.
    fn drain_local(&mut self, out: &mut Vec<SockEvent>) {
        let now = self.now();
        self.transmit(now);
        self.flush();
        self.collect_events(out);
        if let Some(t) = self.timer_behind() {
            self.arm_engine_deadline(t, now);
        }
    }

    /// The engine's earliest deadline when it comes before the timerfd's: a call scheduled it
    /// (a connect's SYN retransmission, a send's RTO on an idle connection, keepalive switched
    /// on). Only [`Backend::poll`] arms the timerfd otherwise, and with nothing on the wire to
    /// wake the agent (the SYN was lost) it would sleep through the deadline.
    fn timer_behind(&self) -> Option<Instant> {
        let t = self.stack.next_timeout()?;
        let at = self.base + Duration::from_micros(t.as_micros());
        self.armed.map_or(true, |a| a > at + ARM_SLACK).then_some(t)
    }

    /// Arms the timerfd for engine deadline `t` (a kick when it is due).
    fn arm_engine_deadline(&mut self, t: Instant, now: Instant) {
        let d = Duration::from_micros(t.as_micros().saturating_sub(now.as_micros()));
        if d.is_zero() {
            self.kick_now();
        } else if let Err(e) = self.arm(Some(d)) {
            // Taken as armed so the loop does not retry it here on every iteration; the next
            // `poll` arms again and reports the error to the agent.
            tracing::error!("native backend: timerfd: {e}");
            self.armed = Some(StdInstant::now() + d);
        }
    }

    fn collect_events(&mut self, out: &mut Vec<SockEvent>) {
        while let Some((_, token, r)) = self.stack.poll_event() {
            out.push(SockEvent {
                token,
                ready: Readiness {
                    readable: r.readable,
                    writable: r.writable,
                    hup: r.hup,
                    error: r.error,
                    urgent: r.urgent_news,
                },
            });
        }
    }

    /// Arms the timerfd for `delay` from now unless it is already armed to fire no later than
    /// that (an early wake-up only costs a poll; re-arming costs a syscall per poll, and the
    /// retransmission deadline moves later with every ACK).
    fn arm(&mut self, delay: Option<Duration>) -> io::Result<()> {
        let wall = StdInstant::now();
        let want = delay.map(|d| wall + d);
        let close = match (want, self.armed) {
            (None, _) => true,
            (Some(w), Some(a)) => a > wall && a <= w + ARM_SLACK,
            (Some(_), None) => false,
        };
        if !close {
            sys::timerfd_set(self.timer.as_raw_fd(), delay)?;
            self.armed = want;
        }
        Ok(())
    }

    fn sync_clock(&mut self) {
        let now = self.now();
        self.stack.handle_timeout(now);
    }

    /// The engine's output at `now`: built in the device's memory while the device has room
    /// and nothing of ours waits for it (a frame written there is sent before every queued one,
    /// so it must not be younger than any), else in the engine's buffers ([`Self::flush`]).
    fn transmit(&mut self, now: Instant) {
        let queued = !self.tx.is_empty() || !self.stack.frames().is_empty();
        match self.dev.frame_writer().filter(|_| !queued) {
            Some(w) => {
                let _ = self.stack.poll_transmit_into(now, &self.lent, w);
            }
            None => self.stack.poll_transmit_from(now, &self.lent),
        }
    }

    fn flush(&mut self) {
        for f in self.stack.frames().drain(..) {
            self.tx.push_back(TxFrame {
                buf: f.buf,
                meta: f.meta,
            });
        }
        if self.tx.is_empty() && !self.direct {
            return;
        }
        if let Err(e) = self.dev.tx_burst(&mut self.tx, &mut self.done) {
            // A frame the device refuses is lost on the wire: TCP retransmits it.
            tracing::debug!("device tx: {e}");
            if let Some(f) = self.tx.pop_front() {
                self.tx_dropped += 1;
                self.done.push(f.buf);
            }
        }
        for b in self.done.drain(..) {
            self.stack.recycle(b);
        }
    }
}

fn sockopt(level: i32, name: i32, val: &[u8]) -> io::Result<Option<SockOpt>> {
    let b = |v: i32| v != 0;
    Ok(Some(match (level, name) {
        (libc::SOL_SOCKET, libc::SO_REUSEADDR) => SockOpt::ReuseAddr(b(int(val)?)),
        (libc::SOL_SOCKET, libc::SO_REUSEPORT) => SockOpt::ReusePort(b(int(val)?)),
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => SockOpt::KeepAlive(b(int(val)?)),
        (libc::SOL_SOCKET, libc::SO_RCVBUF | libc::SO_RCVBUFFORCE) => {
            SockOpt::RcvBuf(int(val)?.max(0) as usize)
        }
        (libc::SOL_SOCKET, libc::SO_SNDBUF | libc::SO_SNDBUFFORCE) => {
            SockOpt::SndBuf(int(val)?.max(0) as usize)
        }
        (libc::SOL_SOCKET, libc::SO_LINGER) => {
            if val.len() < 8 {
                return Err(err(libc::EINVAL));
            }
            let on = int(val)?;
            let secs = i32::from_ne_bytes([val[4], val[5], val[6], val[7]]);
            SockOpt::Linger(on != 0, secs.max(0) as u32)
        }
        (libc::IPPROTO_TCP, libc::TCP_NODELAY) => SockOpt::NoDelay(b(int(val)?)),
        (libc::IPPROTO_TCP, libc::TCP_CORK) => SockOpt::Cork(b(int(val)?)),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE) => SockOpt::KeepIdle(int(val)?.max(0) as u32),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL) => SockOpt::KeepIntvl(int(val)?.max(0) as u32),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT) => SockOpt::KeepCnt(int(val)?.max(0) as u32),
        (libc::IPPROTO_TCP, libc::TCP_MAXSEG) => {
            let v = int(val)?;
            if !(0..=65535).contains(&v) {
                return Err(err(libc::EINVAL));
            }
            if v == 0 {
                return Ok(None);
            }
            SockOpt::MaxSeg(v as u16)
        }
        (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) => SockOpt::V6Only(b(int(val)?)),
        // "cubic", "reno" or "bbr" (NUL-terminated or not); another name is ENOENT, as Linux.
        (libc::IPPROTO_TCP, libc::TCP_CONGESTION) => {
            SockOpt::Congestion(snstack_tcp::cc::CcAlgo::from_name(val).map_err(err)?)
        }
        // Timeouts are enforced by the host library; these are accepted without effect.
        _ if super::sockopts::no_effect(level, name) => {
            int(val)?;
            return Ok(None);
        }
        _ => {
            tracing::debug!(
                level,
                name,
                "native engine: setsockopt not supported (ENOPROTOOPT)"
            );
            return Err(err(libc::ENOPROTOOPT));
        }
    }))
}

/// Linux's `struct tcp_info` (the fields up to tcpi_total_retrans, 104 bytes).
fn tcp_info(t: &snstack_tcp::conn::Tcb) -> [u8; 104] {
    let mut b = [0u8; 104];
    b[0] = t.state.linux();
    let put =
        |b: &mut [u8; 104], off: usize, v: u32| b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    let us = |d: Option<Duration>| d.map_or(0, |d| d.as_micros().min(u128::from(u32::MAX)) as u32);
    put(&mut b, 8, us(Some(t.rto()))); // tcpi_rto
    put(&mut b, 16, t.mss()); // tcpi_snd_mss
    put(&mut b, 20, t.rcv_mss()); // tcpi_rcv_mss
    put(&mut b, 24, (t.send_queue() as u32).div_ceil(t.mss().max(1))); // tcpi_unacked
    put(&mut b, 68, us(t.srtt())); // tcpi_rtt
    put(&mut b, 72, us(Some(t.rttvar()))); // tcpi_rttvar
    put(&mut b, 76, t.ssthresh().min(u32::MAX / 2) / t.mss().max(1)); // tcpi_snd_ssthresh
    put(&mut b, 80, t.cwnd() / t.mss().max(1)); // tcpi_snd_cwnd
    put(
        &mut b,
        100,
        t.stats.retrans_segs.min(u64::from(u32::MAX)) as u32,
    ); // tcpi_total_retrans
    b
}

impl<D: Device> Backend for NativeBackend<D> {
    type Sock = NativeSock;

    fn socket(&mut self, domain: i32) -> io::Result<NativeSock> {
        if domain != libc::AF_INET && domain != libc::AF_INET6 {
            return Err(err(libc::EAFNOSUPPORT));
        }
        self.stack
            .socket(domain == libc::AF_INET6)
            .map(NativeSock)
            .map_err(err)
    }

    fn bind(&mut self, s: &NativeSock, a: &SocketAddr) -> io::Result<()> {
        self.stack.bind(s.0, *a).map_err(err)
    }

    fn listen(&mut self, s: &NativeSock, backlog: i32) -> io::Result<()> {
        self.stack.listen(s.0, backlog).map_err(err)
    }

    fn accept(&mut self, s: &NativeSock) -> io::Result<(NativeSock, SocketAddr)> {
        let r = self
            .stack
            .accept(s.0)
            .map(|(c, a)| (NativeSock(c), a))
            .map_err(err);
        self.after_call();
        r
    }

    fn connect(&mut self, s: &NativeSock, a: &SocketAddr) -> io::Result<()> {
        self.sync_clock();
        self.stack.connect(s.0, *a).map_err(err)
    }

    fn connect_state(&mut self, s: &NativeSock) -> ConnectState {
        match self.stack.connect_result(s.0) {
            Ok(true) => ConnectState::Connected,
            Ok(false) => ConnectState::Pending,
            Err(e) => ConnectState::Failed(e),
        }
    }

    fn take_error(&mut self, s: &NativeSock) -> i32 {
        self.stack.take_error(s.0)
    }

    fn shutdown(&mut self, s: &NativeSock, how: i32) -> io::Result<()> {
        let (rd, wr) = match how {
            libc::SHUT_RD => (true, false),
            libc::SHUT_WR => (false, true),
            libc::SHUT_RDWR => (true, true),
            _ => return Err(err(libc::EINVAL)),
        };
        self.stack.shutdown(s.0, rd, wr).map_err(err)
    }

    fn local_addr(&mut self, s: &NativeSock) -> io::Result<SocketAddr> {
        self.stack.local_addr(s.0).map_err(err)
    }

    fn peer_addr(&mut self, s: &NativeSock) -> io::Result<SocketAddr> {
        self.stack.peer_addr(s.0).map_err(err)
    }

    fn setsockopt(&mut self, s: &NativeSock, level: i32, name: i32, val: &[u8]) -> io::Result<()> {
        match sockopt(level, name, val)? {
            Some(o) => self.stack.set_opt(s.0, o).map_err(err),
            None => Ok(()),
        }
    }

    fn getsockopt(
        &mut self,
        s: &NativeSock,
        level: i32,
        name: i32,
        buf: &mut [u8],
    ) -> io::Result<usize> {
        let put = |buf: &mut [u8], b: &[u8]| {
            let n = buf.len().min(b.len());
            buf[..n].copy_from_slice(&b[..n]);
            n
        };
        let o = self.stack.opts(s.0).map_err(err)?;
        let v: i32 = match (level, name) {
            (libc::SOL_SOCKET, libc::SO_ERROR) => self.stack.take_error(s.0),
            (libc::SOL_SOCKET, libc::SO_TYPE) => libc::SOCK_STREAM,
            (libc::SOL_SOCKET, libc::SO_PROTOCOL) => libc::IPPROTO_TCP,
            (libc::SOL_SOCKET, libc::SO_ACCEPTCONN) => i32::from(self.stack.is_listening(s.0)),
            (libc::SOL_SOCKET, libc::SO_REUSEADDR) => i32::from(o.reuseaddr),
            (libc::SOL_SOCKET, libc::SO_REUSEPORT) => i32::from(o.reuseport),
            (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => i32::from(o.keepalive),
            (libc::SOL_SOCKET, libc::SO_RCVBUF) => self
                .stack
                .buffer_sizes(s.0)
                .map_err(err)?
                .0
                .min(i32::MAX as usize) as i32,
            (libc::SOL_SOCKET, libc::SO_SNDBUF) => self
                .stack
                .buffer_sizes(s.0)
                .map_err(err)?
                .1
                .min(i32::MAX as usize) as i32,
            (libc::SOL_SOCKET, libc::SO_LINGER) => {
                let mut b = [0u8; 8];
                b[..4].copy_from_slice(&i32::from(o.linger.is_some()).to_ne_bytes());
                b[4..].copy_from_slice(&(o.linger.unwrap_or(0) as i32).to_ne_bytes());
                return Ok(put(buf, &b));
            }
            (libc::IPPROTO_TCP, libc::TCP_NODELAY) => i32::from(o.nodelay),
            (libc::IPPROTO_TCP, libc::TCP_CORK) => i32::from(o.cork),
            (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE) => o.keepidle as i32,
            (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL) => o.keepintvl as i32,
            (libc::IPPROTO_TCP, libc::TCP_KEEPCNT) => o.keepcnt as i32,
            (libc::IPPROTO_TCP, libc::TCP_MAXSEG) => match self.stack.tcb(s.0) {
                Some(t) => t.mss() as i32,
                None => i32::from(o.maxseg.unwrap_or(536)),
            },
            (libc::IPPROTO_TCP, libc::TCP_INFO) => {
                let info = self.stack.tcb(s.0).map(tcp_info).unwrap_or_else(|| {
                    let mut b = [0u8; 104];
                    b[0] = if self.stack.is_listening(s.0) { 10 } else { 7 };
                    b
                });
                return Ok(put(buf, &info));
            }
            (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) => i32::from(o.v6only),
            (libc::IPPROTO_TCP, libc::TCP_CONGESTION) => {
                // Linux copies min(len, 16) bytes of the NUL-padded name.
                let mut name = [0u8; 16];
                let a = self.stack.congestion(s.0).map_err(err)?.name().as_bytes();
                name[..a.len()].copy_from_slice(a);
                return Ok(put(buf, &name));
            }
            _ => {
                tracing::debug!(
                    level,
                    name,
                    "native engine: getsockopt not supported (ENOPROTOOPT)"
                );
                return Err(err(libc::ENOPROTOOPT));
            }
        };
        Ok(put(buf, &v.to_ne_bytes()))
    }

    unsafe fn recv(&mut self, s: &NativeSock, bufs: &[IoBuf]) -> io::Result<usize> {
        // SAFETY: forwarded from the caller's contract (writable, unaliased buffers).
        let mut v = unsafe { super::super::iov_mut(bufs) };
        let r = self.stack.recv(s.0, &mut v).map_err(err);
        self.after_call();
        r
    }

    unsafe fn send(&mut self, s: &NativeSock, bufs: &[IoBuf]) -> io::Result<usize> {
        // SAFETY: forwarded from the caller's contract (readable buffers).
        let v = unsafe { super::super::iov_ref(bufs) };
        self.stack.send(s.0, &v).map_err(err)
    }

    fn urgent_data(&self) -> bool {
        true
    }

    unsafe fn send_urgent(&mut self, s: &NativeSock, bufs: &[IoBuf]) -> io::Result<usize> {
        // SAFETY: forwarded from the caller's contract (readable buffers).
        let v = unsafe { super::super::iov_ref(bufs) };
        self.stack.send_urgent(s.0, &v).map_err(err)
    }

    fn urgent_hint(&self, s: &NativeSock) -> bool {
        self.stack.urgent_in(s.0).is_some()
    }

    fn urgent_in(&mut self, s: &NativeSock) -> io::Result<Option<super::super::UrgentIn>> {
        // The engine keeps the urgent byte in the data at its place (tcp/src/urgent.rs).
        Ok(self.stack.urgent_in(s.0).map(|u| super::super::UrgentIn {
            seq: Some(u.count),
            byte: u.byte,
            ahead: Some(u.ahead),
            inline: true,
        }))
    }

    fn can_lend_tx(&self, _s: &NativeSock) -> bool {
        true
    }

    unsafe fn lend_tx(
        &mut self,
        s: &NativeSock,
        stream: shm_proto::Stream,
        at: u32,
    ) -> io::Result<()> {
        self.stack
            .lend_tx(s.0, at, stream.size() as usize)
            .map_err(err)?;
        self.lent.insert(s.0 .0, stream);
        Ok(())
    }

    fn send_lent(&mut self, s: &NativeSock, n: usize) -> io::Result<usize> {
        self.stack.send_lent(s.0, n).map_err(err)
    }

    fn take_acked(&mut self, s: &NativeSock) -> Option<u32> {
        let r = self.stack.take_acked(s.0);
        if r.is_none() {
            self.lent.remove(s.0 .0);
        }
        r
    }

    fn loan_outgrown(&self, s: &NativeSock) -> bool {
        self.stack.loan_outgrown(s.0)
    }

    fn reclaim_tx(&mut self, s: &NativeSock) -> u32 {
        let Some(st) = self.lent.remove(s.0 .0) else {
            return 0;
        };
        self.stack.reclaim_tx(s.0, &OneLent(st))
    }

    fn register(&mut self, s: &NativeSock, token: u64) -> io::Result<()> {
        self.stack.set_token(s.0, token).map_err(err)
    }

    fn close(&mut self, s: NativeSock) {
        self.sync_clock();
        // The agent ends loans before it frees a slot; this only keeps a closed socket from
        // ever reading a stream again.
        self.reclaim_tx(&s);
        self.stack.close(s.0);
    }

    fn poll(&mut self, out: &mut Vec<SockEvent>) -> io::Result<()> {
        self.poll_into(out, &mut snstack_tcp::NoSink)
    }

    fn poll_into(&mut self, out: &mut Vec<SockEvent>, sink: &mut dyn RxSink) -> io::Result<()> {
        if self.kicked {
            sys::eventfd_drain(self.kick.as_raw_fd());
            self.kicked = false;
        }
        if self.armed.is_some_and(|t| StdInstant::now() >= t) {
            sys::eventfd_drain(self.timer.as_raw_fd());
            self.armed = None;
        }
        let mut more = false;
        let mut got = 0;
        for _ in 0..BURSTS {
            let now = self.now();
            let stack = &mut self.stack;
            let n = match self
                .dev
                .rx_burst(BURST, &mut |f, m| stack.handle_frame_into(now, f, m, sink))
            {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!("device rx: {e}");
                    0
                }
            };
            got += n;
            // Answer each burst at once: ACKs and data go out while the next burst arrives.
            self.transmit(now);
            self.flush();
            if n < BURST {
                break;
            }
            more = true;
        }
        let now = self.now();
        self.stack.handle_timeout(now);
        self.transmit(now);
        self.flush();
        self.collect_events(out);
        let wall = StdInstant::now();
        if got > 0 {
            self.last_rx = wall;
        }
        if wall.duration_since(self.last_trim) >= TRIM_EVERY {
            self.last_trim = wall;
            self.stack.trim();
            self.dev.refresh_caps();
            let caps = self.dev.caps();
            if caps != self.stack.config().caps {
                self.stack.set_caps(caps);
            }
        }
        let mut delay = self
            .stack
            .next_timeout()
            .map(|t| Duration::from_micros(t.as_micros().saturating_sub(now.as_micros())));
        if more || !self.tx.is_empty() {
            delay = Some(Duration::ZERO);
        }
        if self.polled {
            let every = if wall.duration_since(self.last_rx) < IDLE_AFTER {
                BUSY_POLL
            } else {
                IDLE_POLL
            };
            delay = Some(delay.map_or(every, |d| d.min(every)));
        }
        if let Some(due) = self.dev.next_due() {
            let d = due.saturating_duration_since(StdInstant::now());
            delay = Some(delay.map_or(d, |x| x.min(d)));
        }
        match delay {
            Some(d) if d.is_zero() => {
                self.kick_now();
                self.arm(None)?;
            }
            d => self.arm(d)?,
        }
        Ok(())
    }

    fn has_local_events(&self) -> bool {
        self.stack.has_pending() || self.timer_behind().is_some()
    }

    fn poll_local(&mut self, out: &mut Vec<SockEvent>) {
        self.drain_local(out);
    }

    fn recv_more(&self, s: &NativeSock) -> bool {
        !self.stack.recv_would_block(s.0)
    }

    fn rx_pending(&self) -> Option<bool> {
        // `kicked`: the last poll left work (a full burst, frames the device refused).
        self.dev.rx_ready().map(|r| r || self.kicked)
    }

    fn wait_fd(&self) -> RawFd {
        self.epoll.raw()
    }

    fn engine_stats(&self) -> crate::backend::EngineStats {
        let st = &self.stack.stats;
        crate::backend::EngineStats {
            enabled: true,
            rx_frames: st.rx_frames,
            tx_frames: st.tx_frames,
            rx_csum_errors: st.rx_csum_errors,
            rx_malformed: st.rx_malformed,
            conns: st.conns,
            time_wait: st.time_wait,
            memory_bytes: self.stack.memory() as u64,
            tcp: self.stack.tcp_counters(),
            syn_dropped: st.syn_dropped,
            syncookies_sent: st.syncookies_sent,
            syncookies_ok: st.syncookies_ok,
            rst_sent: st.rst_sent,
            tx_data_direct: st.tx_data_direct,
            tx_data_buffered: st.tx_data_buffered,
            tx_lent_missing: st.tx_lent_missing,
        }
    }

    fn own_ip(&self) -> Option<std::net::IpAddr> {
        self.stack
            .config()
            .ipv4
            .map(|(ip, _)| std::net::IpAddr::V4(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::user::device::Loopback;
    use snstack_tcp::cc::CcAlgo;

    /// (sequence number, payload length) of an IPv4 TCP frame.
    fn tcp_seg(f: &[u8]) -> Option<(u32, usize)> {
        if f.get(12..14)? != [0x08, 0x00] || *f.get(23)? != 6 {
            return None;
        }
        let ihl = usize::from(f[14] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
        let t = 14 + ihl;
        let thl = usize::from(f.get(t + 12)? >> 4) * 4;
        let seq = u32::from_be_bytes(f.get(t + 4..t + 8)?.try_into().ok()?);
        Some((seq, total.checked_sub(ihl + thl)?))
    }

    /// A bulk transfer between two backends over an in-memory cable whose sending end lends
    /// the engine room for `room` frames per burst: the bytes arrive intact, the data segments
    /// leave in sequence order (frames written into device memory go first, then the ones
    /// queued behind them), and the counters say which way each one took.
    fn lent_device_transfer(room: usize) -> snstack_tcp::stack::StackStats {
        let (mut la, lb) = Loopback::pair([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        la.lend_tx(room);
        let mut a = NativeBackend::new(la, native_cfg(1)).unwrap();
        let mut b = NativeBackend::new(lb, native_cfg(2)).unwrap();
        let l = b.stack.socket(false).unwrap();
        b.stack.bind(l, "10.0.0.2:80".parse().unwrap()).unwrap();
        b.stack.listen(l, 16).unwrap();
        let c = a.stack.socket(false).unwrap();
        let _ = a.stack.connect(c, "10.0.0.2:80".parse().unwrap());
        let total = 2 << 20;
        let data: Vec<u8> = (0..total).map(|i| (i * 13 + i / 509) as u8).collect();
        let (mut sent, mut got, mut srv) = (0, Vec::new(), None);
        let mut buf = vec![0u8; 1 << 16];
        let mut next_seq: Option<u32> = None;
        let mut resent = 0u64;
        let mut ev = Vec::new();
        let t0 = StdInstant::now();
        while got.len() < total {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "stalled at {}",
                got.len()
            );
            if a.stack.connect_result(c) == Ok(true) && sent < total {
                sent += a.stack.send(c, &[&data[sent..]]).unwrap_or(0);
            }
            a.poll(&mut ev).unwrap();
            for f in b.dev.peek() {
                if let Some((seq, len)) = tcp_seg(&f).filter(|s| s.1 > 0) {
                    let end = seq.wrapping_add(len as u32);
                    match next_seq {
                        // Behind the highest byte sent: a retransmission (this loop runs on
                        // the wall clock, so a stalled test machine may fire a probe or RTO).
                        Some(n) if (end.wrapping_sub(n) as i32) <= 0 => {
                            resent += 1;
                            continue;
                        }
                        Some(n) => assert_eq!(seq, n, "new data out of order on the wire"),
                        None => {}
                    }
                    next_seq = Some(end);
                }
            }
            b.poll(&mut ev).unwrap();
            if srv.is_none() {
                srv = b.stack.accept(l).ok().map(|(s, _)| s);
            }
            if let Some(s) = srv {
                while let Ok(n) = b.stack.recv(s, &mut [&mut buf[..]]) {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
            }
        }
        assert!(got == data, "stream corrupted");
        // Every segment that went back on the wire is one the engine counts as resent.
        assert!(
            a.stack.tcp_counters().retrans_segs >= resent,
            "{resent} segments behind the send edge, {:?}",
            a.stack.tcp_counters()
        );
        a.stack.stats
    }

    /// A receive descriptor that stays quiet, as an af_packet socket on a silent link: a
    /// backend given it sleeps on it and its timerfd (a device without one is polled every
    /// 2 ms, which would hide a timer that was never armed).
    fn quiet_fd() -> OwnedFd {
        use std::os::fd::FromRawFd;
        // SAFETY: plain syscall; the descriptor is owned below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        assert!(fd >= 0);
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    /// The agent's loop around a backend until `done`: the local work, then a sleep on the
    /// backend's descriptor (an early wake-up, e.g. at the start of a timer wheel slot, is
    /// another round). Panics when the descriptor stays quiet for 10 s: a liveness check.
    fn sleep_until<D: Device>(
        a: &mut NativeBackend<D>,
        mut done: impl FnMut(&NativeBackend<D>) -> bool,
    ) {
        let mut ev = Vec::new();
        let t0 = StdInstant::now();
        loop {
            for _ in 0..8 {
                if !a.has_local_events() {
                    break;
                }
                a.poll_local(&mut ev);
            }
            if done(a) {
                return;
            }
            let left = Duration::from_secs(10).saturating_sub(t0.elapsed());
            let mut pfd = libc::pollfd {
                fd: a.wait_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
            assert_eq!(
                n, 1,
                "the backend's descriptor never woke the agent for its timer"
            );
            a.poll(&mut ev).unwrap();
        }
    }

    fn arp_requests(d: &Loopback) -> usize {
        d.peek()
            .iter()
            .filter(|f| f.get(12..14) == Some(&[0x08, 0x06]) && f.get(20..22) == Some(&[0, 1]))
            .count()
    }

    /// A cable whose end A (10.0.0.1) sleeps on a quiet descriptor ([`quiet_fd`], returned to
    /// be kept open), and its other end.
    fn quiet_end() -> (NativeBackend<Loopback>, Loopback, OwnedFd) {
        let (mut la, lb) = Loopback::pair([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let quiet = quiet_fd();
        la.set_rx_fd(quiet.as_raw_fd());
        (NativeBackend::new(la, native_cfg(1)).unwrap(), lb, quiet)
    }

    fn native_cfg(last: u8) -> StackConfig {
        let mut c = StackConfig::new([2, 0, 0, 0, 0, last]);
        c.ipv4 = Some((std::net::Ipv4Addr::new(10, 0, 0, last), 24));
        c.seed = u64::from(last);
        c
    }

    /// A call that gives an idle engine its only deadline arms the timerfd before the agent
    /// sleeps. Here a connect to a peer that never answers (its SYN and the ARP request ahead
    /// of it are lost): the agent's loop runs the local work and then waits on the backend's
    /// descriptor, which must wake it for the retransmission (1 s); it slept forever when only
    /// `poll` armed the timerfd (the stalled connect of 49-user-stack-diff under 1% loss,
    /// 2026-12-05).
    #[test]
    fn a_call_arms_the_timer_of_an_idle_engine() {
        let (mut a, lb, _quiet) = quiet_end();
        let mut ev = Vec::new();
        a.poll(&mut ev).unwrap();
        assert!(!a.has_local_events(), "an idle engine has nothing to do");
        let s = a.socket(libc::AF_INET).unwrap();
        let r = a.connect(&s, &"10.0.0.2:80".parse().unwrap());
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EINPROGRESS));
        sleep_until(&mut a, |_| arp_requests(&lb) >= 1);
        assert_eq!(
            arp_requests(&lb),
            1,
            "the connect asked for the peer's address"
        );
        sleep_until(&mut a, |_| arp_requests(&lb) >= 2);
    }

    /// The same for keepalive switched on over an idle connection (setsockopt makes no output):
    /// the first probe leaves after TCP_KEEPIDLE (1 s) with nothing else to wake the agent.
    #[test]
    fn keepalive_set_on_an_idle_connection_arms_the_timer() {
        let (mut a, lb, _quiet) = quiet_end();
        let mut b = NativeBackend::new(lb, native_cfg(2)).unwrap();
        let l = b.stack.socket(false).unwrap();
        b.stack.bind(l, "10.0.0.2:80".parse().unwrap()).unwrap();
        b.stack.listen(l, 4).unwrap();
        let c = a.socket(libc::AF_INET).unwrap();
        let _ = a.connect(&c, &"10.0.0.2:80".parse().unwrap());
        // Up, then quiet: every delayed ACK and stale wheel entry of A's spent.
        let mut ev = Vec::new();
        let t0 = StdInstant::now();
        let mut srv = None;
        while srv.is_none() || a.stack.next_timeout().is_some() {
            assert!(t0.elapsed() < Duration::from_secs(10), "no idle connection");
            a.poll(&mut ev).unwrap();
            b.poll(&mut ev).unwrap();
            srv = srv.or_else(|| b.stack.accept(l).ok());
            std::thread::sleep(Duration::from_millis(5));
        }
        // B stops reading its wire: what A sends from now on stays there to be counted.
        let before = b.dev.peek().len();
        for (name, v) in [(libc::TCP_KEEPIDLE, 1i32), (libc::TCP_KEEPINTVL, 1)] {
            a.setsockopt(&c, libc::IPPROTO_TCP, name, &v.to_ne_bytes())
                .unwrap();
        }
        a.setsockopt(
            &c,
            libc::SOL_SOCKET,
            libc::SO_KEEPALIVE,
            &1i32.to_ne_bytes(),
        )
        .unwrap();
        sleep_until(&mut a, |_| b.dev.peek().len() > before);
    }

    #[test]
    fn device_memory_frames_go_first_and_in_order() {
        // Room for everything: every data segment is written into the device's memory.
        let st = lent_device_transfer(usize::MAX);
        assert!(st.tx_data_direct > 0);
        assert_eq!(st.tx_data_buffered, 0, "{st:?}");
        // Room for 3 per burst: the rest of a poll's segments queue behind them.
        let st = lent_device_transfer(3);
        assert!(st.tx_data_direct > 0 && st.tx_data_buffered > 0, "{st:?}");
        assert_eq!(st.tx_lent_missing, 0);
    }

    /// Byte `off` of a stream keyed `key` (a keyed hash of the offset: a byte from any other
    /// place of the stream is caught).
    fn keyed(key: u64, off: u64) -> u8 {
        let mut z = key ^ (off >> 3).wrapping_mul(0x1000_0000_01b3);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z >> ((off & 7) * 8)) as u8
    }

    struct Xs(u64);
    impl Xs {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n.max(1)
        }
    }

    /// Lent TX end to end on the agent's side: a host writer on a real channel TX stream (the
    /// preload's producer rules: room from `Stream::writable` with its own tail, so an emptied
    /// stream is rewound), the agent's `sock::pump_tx`/`pump_lent` bookkeeping, this backend's
    /// loans (`Lent`, `OneLent`) and engine, loss and reordering on the cable, loans ended at
    /// random moments (as `Agent::end_loan` does for an urgent mark, a file reference or a
    /// second binding) and started again. Every payload byte on the wire towards B and every
    /// byte B reads is checked against the host's pattern. Runs on the wall clock (the
    /// backend's), with no timing assertion.
    ///
    /// A poller on another thread (the preload's readiness) asks for the room with a tail it
    /// loaded some steps before: read-only, as the preload does since the corrupted echo of
    /// 2026-12-05; `observer_rewinds` makes it rewind as it did then (`Stream::writable`).
    fn agent_lent_tx(seed: u64, total: u64, observer_rewinds: bool) {
        use crate::backend::user::device::{FaultInjector, Faults};
        use crate::channel::Channel;
        use crate::sock::{self, Bind, Binding, Kind, Sock};
        let mut rng = Xs(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let tx_size = [4096u32, 16384, 65536, 262_144][rng.below(4) as usize];
        let (la, lb) = Loopback::pair([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let faults = Faults {
            drop_pm: [0, 0, 1, 5][rng.below(4) as usize],
            dup_pm: [0, 2][rng.below(2) as usize],
            reorder_pm: [0, 10, 50][rng.below(3) as usize],
            delay_us: 0,
        };
        let mut la = FaultInjector::new(la, faults, seed | 1);
        if rng.below(2) == 0 {
            la.inner_mut().lend_tx(1 + rng.below(8) as usize);
        }
        let cfg = |last: u8| {
            let mut c = StackConfig::new([2, 0, 0, 0, 0, last]);
            c.ipv4 = Some((std::net::Ipv4Addr::new(10, 0, 0, last), 24));
            c.seed = seed.wrapping_add(u64::from(last));
            c
        };
        let mut a = NativeBackend::new(la, cfg(1)).unwrap();
        let mut b = NativeBackend::new(lb, cfg(2)).unwrap();
        let l = b.stack.socket(false).unwrap();
        b.stack.bind(l, "10.0.0.2:80".parse().unwrap()).unwrap();
        b.stack.listen(l, 16).unwrap();
        let c = a.stack.socket(false).unwrap();
        let _ = a.stack.connect(c, "10.0.0.2:80".parse().unwrap());
        let geo = shm_proto::region::Geometry {
            max_sockets: 4,
            tx_size,
            ..Default::default()
        };
        let (mut chan, _fd) = Channel::create(geo).unwrap();
        let by = Bind { sid: 1, slot: 0 };
        let mut s = Sock::new(NativeSock(c), libc::AF_INET);
        s.kind = Kind::Connected;
        s.bindings.push(by);
        let mut bd = Binding::new(sock::SockId::from_token(0));
        let tx = chan.region().tx(0).unwrap();
        // The stream's indices start where this seed says (near the u32 wrap for some).
        let start = [0u32, u32::MAX - 70_000, rng.below(1 << 32) as u32][rng.below(3) as usize];
        tx.publish_tail(start);
        tx.publish_head(start);
        bd.tx_head = start;
        let key = rng.below(u64::MAX);
        let (mut written, mut got, mut wire, mut ends) = (0u64, 0u64, 0u64, 0u32);
        let (mut lent_pumps, mut rewinds, mut base) = (0u64, 0u64, tx.load_base());
        let mut srv = None;
        let mut iss: Option<u32> = None;
        let mut ev = Vec::new();
        let mut buf = vec![0u8; 1 << 18];
        let max_write = [100u64, 3000, 70_000][rng.below(3) as usize];
        let scribble = vec![0xa5u8; tx_size as usize];
        let mut stale: Option<u32> = None;
        let t0 = StdInstant::now();
        while got < total {
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "seed {seed}: stalled at {got} of {total}"
            );
            if a.stack.connect_result(c) == Ok(true) && written < total && rng.below(4) != 0 {
                // The host: room from its own tail (rewinds an emptied stream), then bytes.
                let tail = tx.load_tail();
                let room = u64::from(tx.writable(tail).unwrap());
                let n = (1 + rng.below(max_write)).min(room).min(total - written);
                let data: Vec<u8> = (0..n).map(|j| keyed(key, written + j)).collect();
                tx.copy_in(tail, &data);
                let tail = tail.wrapping_add(n as u32);
                tx.publish_tail(tail);
                written += n;
                // The producer owns the free part of the ring: scribble over all of it (bytes the
                // agent freed too early show on the wire).
                let free = tx.free_keeping_base(tail).unwrap() as usize;
                tx.copy_in(tail, &scribble[..free]);
            }
            match stale.take() {
                None if rng.below(8) == 0 => stale = Some(tx.load_tail()),
                Some(t) if rng.below(4) == 0 => {
                    // Its room is not used: only what asking does to the stream matters.
                    let _ = if observer_rewinds {
                        tx.writable(t)
                    } else {
                        tx.free_keeping_base(t)
                    };
                }
                other => stale = other,
            }
            if a.stack.connect_result(c) == Ok(true) && rng.below(3) != 0 {
                let o = sock::pump_tx(&mut a, &mut s, &mut chan, by, &mut bd, false).unwrap();
                assert!(o.err.is_none(), "seed {seed}: {o:?}");
                lent_pumps += u64::from(s.lend_by.is_some());
            }
            if tx.load_base() != base {
                base = tx.load_base();
                rewinds += 1;
            }
            if s.lend_by.is_some() && rng.below(500) == 0 {
                // Agent::end_loan.
                s.lend_by = None;
                a.reclaim_tx(&s.os);
                if let Some(lent) = bd.tx_lent.take() {
                    bd.tx_head = lent;
                    tx.publish_head(lent);
                }
                ends += 1;
            }
            a.poll(&mut ev).unwrap();
            for f in b.dev.peek() {
                let Some((seq, len)) = tcp_seg(&f) else {
                    continue;
                };
                let t = 14 + usize::from(f[14] & 0x0f) * 4;
                if f[t + 13] & 0x12 == 0x02 {
                    iss = Some(seq);
                }
                let Some(i) = iss.filter(|_| len > 0) else {
                    continue;
                };
                let off = u64::from(seq.wrapping_sub(i.wrapping_add(1)));
                let at = t + usize::from(f[t + 12] >> 4) * 4;
                let p = &f[at..at + len];
                for (j, x) in p.iter().enumerate() {
                    let o = off + j as u64;
                    assert_eq!(
                        *x,
                        keyed(key, o),
                        "seed {seed}: wrong byte on the wire at {o}"
                    );
                }
                wire += len as u64;
            }
            b.poll(&mut ev).unwrap();
            if srv.is_none() {
                srv = b.stack.accept(l).ok().map(|(s, _)| s);
            }
            if let Some(sv) = srv.filter(|_| rng.below(3) != 0) {
                let k = 1 + rng.below(buf.len() as u64) as usize;
                if let Ok(n) = b.stack.recv(sv, &mut [&mut buf[..k]]) {
                    for (j, x) in buf[..n].iter().enumerate() {
                        let o = got + j as u64;
                        assert_eq!(*x, keyed(key, o), "seed {seed}: B read a wrong byte at {o}");
                    }
                    got += n as u64;
                }
            }
        }
        assert!(wire >= total);
        assert_eq!(a.stack.stats.tx_lent_missing, 0);
        eprintln!(
            "seed {seed}: tx {tx_size} start {start} {faults:?} write<={max_write}: wire {wire}, \
             pumps with a loan {lent_pumps}, loans ended {ends}, rewinds {rewinds}, {:?}",
            a.stack.tcp_counters()
        );
    }

    #[test]
    fn agent_lent_tx_sends_what_the_host_wrote() {
        for seed in 1..=6 {
            agent_lent_tx(seed, 1 << 20, false);
        }
    }

    /// The control: the model catches a poller that rewinds the stream from its stale tail.
    #[test]
    #[should_panic = "wrong byte"]
    fn agent_lent_tx_control_observer_rewinds() {
        for seed in 1..=20 {
            agent_lent_tx(seed, 1 << 20, true);
        }
    }

    /// `AGENT_LENT_SEEDS=N cargo test --release -p nic-agent agent_lent_tx_long -- --ignored`.
    #[test]
    #[ignore]
    fn agent_lent_tx_long() {
        let n = std::env::var("AGENT_LENT_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(100);
        for seed in 100..100 + n {
            agent_lent_tx(seed, 4 << 20, false);
        }
    }

    #[test]
    fn tcp_congestion_maps_names_and_refuses_others() {
        let opt = |v: &[u8]| sockopt(libc::IPPROTO_TCP, libc::TCP_CONGESTION, v);
        assert_eq!(opt(b"bbr").unwrap(), Some(SockOpt::Congestion(CcAlgo::Bbr)));
        assert_eq!(
            opt(b"cubic\0").unwrap(),
            Some(SockOpt::Congestion(CcAlgo::Cubic))
        );
        assert_eq!(
            opt(b"reno").unwrap(),
            Some(SockOpt::Congestion(CcAlgo::Reno))
        );
        assert_eq!(
            opt(b"vegas").unwrap_err().raw_os_error(),
            Some(libc::ENOENT)
        );
    }
}
