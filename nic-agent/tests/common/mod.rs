//! Shared by the integration tests: runs the built `snstack-agent` on a temporary socket and
//! drives it the way the host library does: attach over SOCK_SEQPACKET, map the region, push
//! commands, read events and streams. Every wait is bounded; the agent is killed by PID when a
//! test ends.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shm_proto::attach::{self, Sys};
use shm_proto::msg::{Hello, HELLO_ATTACH};
use shm_proto::*;

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// libc system calls for `shm_proto::attach`, every reply bounded by `TIMEOUT`.
pub fn sys() -> attach::LibcSys {
    attach::LibcSys {
        reply_timeout_ms: Some(TIMEOUT.as_millis() as i32),
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_snstack-agent")
}

pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("snstack-agent-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// The agent process; killed (by PID) and reaped on drop.
pub struct Agent {
    pub child: Child,
    pub dir: PathBuf,
    pub sock: PathBuf,
    pub log: PathBuf,
}

impl Agent {
    pub fn start(name: &str) -> Agent {
        let dir = temp_dir(name);
        let sock = dir.join("run/agent.sock");
        let log = dir.join("agent.log");
        let child = Command::new(bin())
            .args([
                "run",
                "--log-level",
                "debug",
                "--max-sockets",
                "64",
                "--socket",
            ])
            .arg(&sock)
            .stdin(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).expect("log file")))
            .spawn()
            .expect("spawn agent");
        let a = Agent {
            child,
            dir,
            sock,
            log,
        };
        let t0 = Instant::now();
        while connect_seqpacket(&a.sock).is_err() {
            assert!(
                t0.elapsed() < TIMEOUT,
                "agent did not come up: {}",
                a.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        a
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stats(&self) -> HashMap<String, u64> {
        let out = Command::new(bin())
            .arg("stats")
            .arg("--socket")
            .arg(&self.sock)
            .output()
            .expect("stats");
        assert!(
            out.status.success(),
            "stats failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect()
    }

    /// SIGTERM, then the exit status within the timeout.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            assert!(t0.elapsed() < TIMEOUT, "agent ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- agent log ---\n{}", self.log_text());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A connected control socket (the agent is up), without any hello.
pub fn connect_seqpacket(path: &Path) -> Result<OwnedFd, i32> {
    let mut s = sys();
    // SAFETY: a fresh fd owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(s.seqpacket()?) };
    s.connect_unix(fd.as_raw_fd(), path.as_os_str().as_bytes())?;
    Ok(fd)
}

/// A host endpoint, as the preload library would hold it.
pub struct Host {
    pub ctl: OwnedFd,
    pub bell: OwnedFd,
    pub base: *mut u8,
    pub len: usize,
    pub region: Region,
    pub cmds: Producer<Cmd>,
    pub evts: Consumer<Evt>,
    pub next_tag: u64,
    pub stash: HashMap<u64, Evt>,
}

impl Host {
    pub fn attach(path: &Path) -> Host {
        Host::attach_as(path, HELLO_ATTACH, 0).unwrap_or_else(|st| panic!("attach refused: {st}"))
    }

    /// Attaches with `Hello{kind, arg}` (`shm_proto::attach`, as the library does); `Err(status)`
    /// when the agent refuses.
    pub fn attach_as(path: &Path, kind: u32, arg: u64) -> Result<Host, u32> {
        let a = match attach::attach(
            &mut sys(),
            path.as_os_str().as_bytes(),
            Hello::new(kind, arg),
        ) {
            Ok(a) => a,
            Err(attach::AttachError::Refused(st)) => return Err(st),
            Err(e) => panic!("attach: {e}"),
        };
        Ok(Host {
            // SAFETY: both fds are ours alone from here on (`Attached` hands them over).
            ctl: unsafe { OwnedFd::from_raw_fd(a.ctl) },
            // SAFETY: as above.
            bell: unsafe { OwnedFd::from_raw_fd(a.bell) },
            base: a.base,
            len: a.len,
            cmds: a.region.cmd_producer(),
            evts: a.region.evt_consumer(),
            region: a.region,
            next_tag: 1,
            stash: HashMap::new(),
        })
    }

    pub fn ring(&self) {
        if wake::must_ring(&self.region.header().agent.0.sleeping) {
            let one = 1u64.to_ne_bytes();
            // SAFETY: 8 readable bytes to an eventfd.
            unsafe { libc::write(self.bell.as_raw_fd(), one.as_ptr().cast(), 8) };
        }
    }

    pub fn push(&mut self, c: Cmd) {
        let t0 = Instant::now();
        while !self.cmds.push(c).expect("cmd ring") {
            assert!(t0.elapsed() < TIMEOUT, "command ring stays full");
            std::thread::sleep(Duration::from_millis(1));
        }
        self.ring();
    }

    /// Pushes `req` for `slot` with a fresh tag; returns the tag.
    pub fn submit(&mut self, slot: u32, req: Request) -> u64 {
        let tag = self.next_tag;
        self.next_tag += 1;
        let mut c = req.to_cmd(slot);
        c.tag = tag;
        self.push(c);
        tag
    }

    pub fn wait(&mut self, tag: u64) -> Evt {
        let t0 = Instant::now();
        loop {
            if let Some(e) = self.stash.remove(&tag) {
                return e;
            }
            match self.evts.pop().expect("event ring") {
                Some(e) if e.tag == tag => return e,
                Some(e) => {
                    self.stash.insert(e.tag, e);
                }
                None => {
                    assert!(t0.elapsed() < TIMEOUT, "no completion for tag {tag}");
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    }

    /// The completion of `tag` if it arrived (never blocks, never asserts).
    pub fn poll_tag(&mut self, tag: u64) -> Option<Evt> {
        if let Some(e) = self.stash.remove(&tag) {
            return Some(e);
        }
        while let Ok(Some(e)) = self.evts.pop() {
            if e.tag == tag {
                return Some(e);
            }
            self.stash.insert(e.tag, e);
        }
        None
    }

    pub fn call(&mut self, slot: u32, req: Request) -> Evt {
        let t = self.submit(slot, req);
        self.wait(t)
    }

    pub fn sock(&self, slot: u32) -> &SockCtl {
        self.region.sock(slot).expect("slot in range")
    }

    /// Reads up to `max` RX bytes published for `slot`, telling the agent when it had stopped
    /// reading because RX was full.
    pub fn read_rx_max(&mut self, slot: u32, out: &mut Vec<u8>, max: usize) {
        let rx = self.region.rx(slot).unwrap();
        let head = rx.load_head();
        let n = (rx.readable(head).unwrap() as usize).min(max);
        let mut buf = vec![0u8; n];
        rx.copy_out(head, &mut buf);
        rx.publish_head(head.wrapping_add(n as u32));
        out.extend_from_slice(&buf);
        if wake::rx_space_needed(&self.sock(slot).rx_head.0.blocked) {
            self.push(Request::RxSpace.to_cmd(slot));
        }
    }

    pub fn read_rx(&mut self, slot: u32, out: &mut Vec<u8>) {
        self.read_rx_max(slot, out, usize::MAX)
    }

    /// Registers `efd` as the doorbell of waiter `i`; returns the reply status.
    pub fn register_waiter(&self, i: u64, efd: RawFd) -> u32 {
        attach::register_waiter(&mut sys(), self.ctl.as_raw_fd(), i, efd).expect("waiter reply")
    }

    /// Copies as much of `data` as fits into TX and marks the slot for the agent (its TX-changed
    /// bit, the doorbell when the mark asks for it). Returns bytes written.
    pub fn write_tx(&mut self, slot: u32, data: &[u8]) -> usize {
        let tx = self.region.tx(slot).unwrap();
        let tail = tx.load_tail();
        let n = (tx.writable(tail).unwrap() as usize).min(data.len());
        if n == 0 {
            return 0;
        }
        tx.copy_in(tail, &data[..n]);
        tx.publish_tail(tail.wrapping_add(n as u32));
        if self.region.mark_tx(slot) {
            self.ring();
        }
        n
    }

    pub fn dead(&self) -> bool {
        self.region.header().dead.0.load(Ordering::SeqCst) != 0
    }

    /// True when the agent closed our control connection (EOF) within the timeout.
    pub fn ctl_eof(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.ctl.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, TIMEOUT.as_millis() as i32) } != 1 {
            return false;
        }
        let mut b = [0u8; 64];
        // SAFETY: `b` is writable.
        let n = unsafe {
            libc::recv(
                self.ctl.as_raw_fd(),
                b.as_mut_ptr().cast(),
                b.len(),
                libc::MSG_DONTWAIT,
            )
        };
        n == 0
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping; `region` is not used afterwards.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

pub fn until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `socket(AF_INET, SOCK_STREAM, 0)`.
pub fn tcp4() -> Request {
    Request::Socket {
        domain: libc::AF_INET,
        ty: libc::SOCK_STREAM,
        protocol: 0,
    }
}

pub fn bind_to(a: &SocketAddr) -> Request {
    Request::Bind {
        addr: Addr::Inet(*a),
    }
}

pub fn connect_to(wait: bool, a: &SocketAddr) -> Request {
    Request::Connect {
        addr: Addr::Inet(*a),
        wait,
    }
}

/// The port of the IPv4 address in a completion (`OP_GETSOCKNAME`, `OP_ACCEPT`).
pub fn port_of(e: &Evt) -> u16 {
    match SocketAddr::try_from(e.addr()) {
        Ok(SocketAddr::V4(v4)) => v4.port(),
        other => panic!("not an IPv4 address: {other:?}"),
    }
}
