//! The user backend: the agent owns the TCP/IP state. A sans-IO [`engine::Engine`] (smoltcp
//! plus a listen backlog, BSD lifetimes and Linux errnos) runs over a frame [`device::Device`]
//! (af_packet, AF_XDP, DPDK, or in tests an in-memory wire).
//!
//! ```text
//!  agent epoll ──► wait_fd (epoll) ◄── device rx fd   (frames waiting; level)
//!                                  ◄── kick eventfd   (a call queued work: send, close, ...)
//!                                  ◄── timerfd        (smoltcp's next timer; polling devices)
//!  poll(): engine.poll(now) → readiness of changed sockets → re-arm the timer
//! ```
//!
//! Design and limits: docs/user-stack.md.

pub mod afpacket;
mod afpacket_ring;
mod afpacket_uring;
pub mod device;
#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod engine;
#[cfg(feature = "lwip")]
pub mod lwip;
pub mod native;
pub mod offload;
pub mod sockopts;
mod vnet;
#[cfg(snstack_xdp)]
pub mod xdp;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant as StdInstant;

use smoltcp::time::{Duration, Instant};

use super::{Backend, ConnectState, IoBuf, SockEvent};
use crate::sys;
use device::{Device, Port};
use engine::{Engine, EngineConfig, UserSock};

/// A device without a descriptor (DPDK) is polled this often while traffic flows...
const BUSY_POLL: Duration = Duration::from_micros(50);
/// ...and this often after `IDLE_AFTER` without frames.
const IDLE_POLL: Duration = Duration::from_millis(2);
const IDLE_AFTER: Duration = Duration::from_millis(20);

pub struct UserBackend<D: Device> {
    engine: Engine,
    port: Port<D>,
    epoll: sys::Epoll,
    kick: OwnedFd,
    timer: OwnedFd,
    kicked: bool,
    base: StdInstant,
    /// The device has no descriptor: it is polled on a timer.
    polled: bool,
    last_rx: Instant,
    last_rx_frames: u64,
}

/// What a user backend sleeps on (its `wait_fd`): one epoll set holding the device's descriptor
/// (none for a polled device), a kick eventfd (work queued by a call) and a timerfd (the engine's
/// next timer). Returns (epoll, kick, timer).
pub(crate) fn wake_set(rx_fd: Option<RawFd>) -> io::Result<(sys::Epoll, OwnedFd, OwnedFd)> {
    const TOK_DEV: u64 = 1;
    const TOK_KICK: u64 = 2;
    const TOK_TIMER: u64 = 3;
    let epoll = sys::Epoll::new()?;
    let kick = sys::eventfd()?;
    let timer = sys::timerfd()?;
    if let Some(fd) = rx_fd {
        epoll.add(fd, sys::EV_IN, TOK_DEV)?;
    }
    epoll.add(kick.as_raw_fd(), sys::EV_IN, TOK_KICK)?;
    epoll.add(timer.as_raw_fd(), sys::EV_IN, TOK_TIMER)?;
    Ok((epoll, kick, timer))
}

/// Arms the timerfd for smoltcp's relative delay (`None`: disarmed).
fn timer_set(fd: RawFd, d: Option<Duration>) -> io::Result<()> {
    sys::timerfd_set(
        fd,
        d.map(|d| std::time::Duration::from_micros(d.total_micros())),
    )
}

impl<D: Device> UserBackend<D> {
    pub fn new(dev: D, cfg: EngineConfig) -> io::Result<Self> {
        let mut port = Port::new(dev);
        let base = StdInstant::now();
        let engine = Engine::new(cfg, &mut port, Instant::from_micros(0));
        let polled = port.dev.rx_fd().is_none();
        let (epoll, kick, timer) = wake_set(port.dev.rx_fd())?;
        let mut b = UserBackend {
            engine,
            port,
            epoll,
            kick,
            timer,
            kicked: false,
            base,
            polled,
            last_rx: Instant::from_micros(0),
            last_rx_frames: 0,
        };
        // First poll right away (a polled device starts its timer there).
        b.kick_now();
        Ok(b)
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.base.elapsed().as_micros() as i64)
    }

    fn kick_now(&mut self) {
        if !self.kicked {
            self.kicked = true;
            if let Err(e) = sys::eventfd_write(self.kick.as_raw_fd(), 1) {
                tracing::error!("user backend: kick eventfd: {e}");
            }
        }
    }

    /// A call queued work that only a poll sends out: make the agent call `poll` soon.
    fn after_call(&mut self) {
        if self.engine.work_pending {
            self.kick_now();
        }
    }
}

impl<D: Device> Backend for UserBackend<D> {
    type Sock = UserSock;

    fn socket(&mut self, domain: i32) -> io::Result<UserSock> {
        self.engine.socket(domain)
    }

    fn bind(&mut self, s: &UserSock, a: &SocketAddr) -> io::Result<()> {
        self.engine.bind(s, a)
    }

    fn listen(&mut self, s: &UserSock, backlog: i32) -> io::Result<()> {
        let r = self.engine.listen(s, backlog);
        self.after_call();
        r
    }

    fn accept(&mut self, s: &UserSock) -> io::Result<(UserSock, SocketAddr)> {
        let r = self.engine.accept(s);
        self.after_call();
        r
    }

    fn connect(&mut self, s: &UserSock, a: &SocketAddr) -> io::Result<()> {
        let r = self.engine.connect(s, a);
        self.after_call();
        r
    }

    fn connect_state(&mut self, s: &UserSock) -> ConnectState {
        self.engine.connect_state(s)
    }

    fn take_error(&mut self, s: &UserSock) -> i32 {
        self.engine.take_error(s)
    }

    fn shutdown(&mut self, s: &UserSock, how: i32) -> io::Result<()> {
        let r = self.engine.shutdown(s, how);
        self.after_call();
        r
    }

    fn local_addr(&mut self, s: &UserSock) -> io::Result<SocketAddr> {
        self.engine.local_addr(s)
    }

    fn peer_addr(&mut self, s: &UserSock) -> io::Result<SocketAddr> {
        self.engine.peer_addr(s)
    }

    fn setsockopt(&mut self, s: &UserSock, level: i32, name: i32, val: &[u8]) -> io::Result<()> {
        let r = self.engine.setsockopt(s, level, name, val);
        self.after_call();
        r
    }

    fn getsockopt(
        &mut self,
        s: &UserSock,
        level: i32,
        name: i32,
        buf: &mut [u8],
    ) -> io::Result<usize> {
        self.engine.getsockopt(s, level, name, buf)
    }

    unsafe fn recv(&mut self, s: &UserSock, bufs: &[IoBuf]) -> io::Result<usize> {
        // SAFETY: forwarded from the caller's contract (writable, unaliased buffers).
        let mut v = unsafe { super::iov_mut(bufs) };
        let r = self.engine.recv(s, &mut v);
        self.after_call();
        r
    }

    unsafe fn send(&mut self, s: &UserSock, bufs: &[IoBuf]) -> io::Result<usize> {
        // SAFETY: forwarded from the caller's contract (readable buffers).
        let v = unsafe { super::iov_ref(bufs) };
        let r = self.engine.send(s, &v);
        self.after_call();
        r
    }

    fn register(&mut self, s: &UserSock, token: u64) -> io::Result<()> {
        let r = self.engine.register(s, token);
        self.after_call();
        r
    }

    fn close(&mut self, s: UserSock) {
        self.engine.close(s);
        self.after_call();
    }

    fn poll(&mut self, out: &mut Vec<SockEvent>) -> io::Result<()> {
        sys::eventfd_drain(self.kick.as_raw_fd());
        sys::eventfd_drain(self.timer.as_raw_fd());
        self.kicked = false;
        let now = self.now();
        let more = self.engine.poll(now, &mut self.port, out);
        if more || self.engine.work_pending {
            self.kick_now();
        }
        let mut delay = self.engine.poll_delay(now);
        if self.polled {
            if self.port.stats.rx_frames != self.last_rx_frames {
                self.last_rx_frames = self.port.stats.rx_frames;
                self.last_rx = now;
            }
            let every = if now - self.last_rx < IDLE_AFTER {
                BUSY_POLL
            } else {
                IDLE_POLL
            };
            delay = Some(delay.map_or(every, |d| d.min(every)));
        }
        if let Some(due) = self.port.dev.next_due() {
            let d = due.saturating_duration_since(StdInstant::now());
            let d = Duration::from_micros(d.as_micros().min(u64::MAX as u128) as u64);
            delay = Some(delay.map_or(d, |x| x.min(d)));
        }
        match delay {
            Some(d) if d == Duration::ZERO => {
                self.kick_now();
                timer_set(self.timer.as_raw_fd(), None)?;
            }
            d => timer_set(self.timer.as_raw_fd(), d)?,
        }
        Ok(())
    }

    fn wait_fd(&self) -> RawFd {
        self.epoll.raw()
    }

    fn own_ip(&self) -> Option<std::net::IpAddr> {
        Some(std::net::IpAddr::V4(self.engine.ip()))
    }
}
