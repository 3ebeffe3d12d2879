//! The core driven through its command rings at explicit times, over an in-memory backend:
//! [`LoopBackend`] (connections between our own listeners, `LoopNet`) around [`Fake`], which
//! holds ports and answers the host facts. A [`Host`] plays the library's side of a channel.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;

use shm_proto::{Consumer, Producer, Region};

use super::listeners::HANDOFF_HOLD;
use super::*;
use crate::backend::loopback::LoopBackend;
use crate::backend::{ConnectState, IoBuf};
use shm_proto::handoff;

/// What the fake OS knows; shared with the test, which inspects it.
#[derive(Default)]
struct FakeOs {
    next: u32,
    bound: HashMap<u32, SocketAddr>,
    closed: Vec<u32>,
    /// Parent of each pid (absent: the process is gone).
    parents: HashMap<i32, i32>,
    secrets: u64,
    /// The errno the next getsockopt fails with.
    getsockopt_fails: Option<i32>,
    /// Whether the backend sends files by reference, and the files hosts may name (by fd).
    file_refs: bool,
    files: HashMap<i32, std::fs::File>,
    /// Connects to addresses that are not ours succeed, and their sockets take what is sent,
    /// logged in `sent` ("send N", "more N", "push", "close S").
    reachable: bool,
    sent: Vec<String>,
    /// What `has_unread` answers.
    unread: bool,
}

/// The OS under [`LoopBackend`]: sockets that bind and listen but never reach a network
/// (unless `FakeOs::reachable`).
struct Fake(Rc<RefCell<FakeOs>>);

impl Fake {
    /// A send of a reachable socket: everything taken, and logged under `how`.
    fn sent(&mut self, how: &str, bufs: &[IoBuf]) -> io::Result<usize> {
        let mut os = self.0.borrow_mut();
        if !os.reachable {
            return Err(err(libc::EAGAIN));
        }
        let n: usize = bufs.iter().map(|b| b.iov_len).sum();
        os.sent.push(format!("{how} {n}"));
        Ok(n)
    }
}

fn err(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

impl Backend for Fake {
    type Sock = u32;

    fn socket(&mut self, _domain: i32) -> io::Result<u32> {
        let mut os = self.0.borrow_mut();
        os.next += 1;
        Ok(os.next)
    }
    fn bind(&mut self, s: &u32, a: &SocketAddr) -> io::Result<()> {
        let mut os = self.0.borrow_mut();
        if os.bound.contains_key(s) {
            return Err(err(libc::EINVAL));
        }
        let mut a = *a;
        if a.port() == 0 {
            a.set_port(40000 + *s as u16);
        } else if os.bound.values().any(|b| b.port() == a.port()) {
            return Err(err(libc::EADDRINUSE));
        }
        os.bound.insert(*s, a);
        Ok(())
    }
    fn listen(&mut self, s: &u32, _backlog: i32) -> io::Result<()> {
        if !self.0.borrow().bound.contains_key(s) {
            self.bind(s, &"0.0.0.0:0".parse().unwrap())?;
        }
        Ok(())
    }
    fn accept(&mut self, _s: &u32) -> io::Result<(u32, SocketAddr)> {
        Err(err(libc::EAGAIN))
    }
    fn connect(&mut self, _s: &u32, _a: &SocketAddr) -> io::Result<()> {
        if self.0.borrow().reachable {
            return Ok(());
        }
        Err(err(libc::ECONNREFUSED))
    }
    fn connect_state(&mut self, _s: &u32) -> ConnectState {
        if self.0.borrow().reachable {
            return ConnectState::Connected;
        }
        ConnectState::Failed(libc::ECONNREFUSED)
    }
    fn take_error(&mut self, _s: &u32) -> i32 {
        0
    }
    fn shutdown(&mut self, _s: &u32, _how: i32) -> io::Result<()> {
        Ok(())
    }
    fn local_addr(&mut self, s: &u32) -> io::Result<SocketAddr> {
        Ok(self
            .0
            .borrow()
            .bound
            .get(s)
            .copied()
            .unwrap_or_else(|| "0.0.0.0:0".parse().unwrap()))
    }
    fn peer_addr(&mut self, _s: &u32) -> io::Result<SocketAddr> {
        Err(err(libc::ENOTCONN))
    }
    fn setsockopt(&mut self, _s: &u32, _level: i32, _name: i32, _val: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn getsockopt(&mut self, _s: &u32, _l: i32, _n: i32, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = self.0.borrow_mut().getsockopt_fails.take() {
            return Err(err(e));
        }
        buf.fill(0);
        Ok(buf.len().min(4))
    }
    unsafe fn recv(&mut self, _s: &u32, _bufs: &[IoBuf]) -> io::Result<usize> {
        Err(err(libc::EAGAIN))
    }
    unsafe fn send(&mut self, _s: &u32, bufs: &[IoBuf]) -> io::Result<usize> {
        self.sent("send", bufs)
    }
    unsafe fn send_more(&mut self, _s: &u32, bufs: &[IoBuf]) -> io::Result<usize> {
        self.sent("more", bufs)
    }
    fn push(&mut self, _s: &u32) {
        self.0.borrow_mut().sent.push("push".into());
    }
    fn has_unread(&mut self, _s: &u32) -> bool {
        self.0.borrow().unread
    }
    fn register(&mut self, _s: &u32, _token: u64) -> io::Result<()> {
        Ok(())
    }
    fn close(&mut self, s: u32) {
        let mut os = self.0.borrow_mut();
        if os.reachable {
            os.sent.push(format!("close {s}"));
        }
        os.bound.remove(&s);
        os.closed.push(s);
    }
    fn poll(&mut self, _out: &mut Vec<SockEvent>) -> io::Result<()> {
        Ok(())
    }
    fn wait_fd(&self) -> RawFd {
        -1
    }
    fn owns_loopback(&self) -> bool {
        true
    }
    fn file_refs(&self) -> bool {
        self.0.borrow().file_refs
    }
    fn host_file(&mut self, _pid: i32, fd: i32, _dev: u64, _ino: u64) -> io::Result<OwnedFd> {
        let os = self.0.borrow();
        let f = os.files.get(&fd).ok_or_else(|| err(libc::EBADF))?;
        Ok(OwnedFd::from(f.try_clone()?))
    }
    fn random_u64(&mut self) -> io::Result<u64> {
        let mut os = self.0.borrow_mut();
        os.secrets += 1;
        Ok(0x5ec0_0000 + os.secrets)
    }
    fn cap_eff(&self, _pid: i32) -> io::Result<u64> {
        Ok(0)
    }
    fn parent_pid(&self, pid: i32) -> io::Result<i32> {
        self.0
            .borrow()
            .parents
            .get(&pid)
            .copied()
            .ok_or_else(|| err(libc::ESRCH))
    }
    fn unprivileged_port_start(&self) -> u32 {
        1024
    }
    fn available_congestion_controls(&self) -> String {
        "reno cubic".into()
    }
    fn allowed_congestion_controls(&self) -> String {
        "reno cubic".into()
    }
}

const UID: u32 = 1000;

fn geo() -> Geometry {
    Geometry {
        max_sockets: 8,
        rx_size: 4096,
        tx_size: 4096,
        ..Geometry::default()
    }
}

/// The library's side of one channel.
struct Host {
    sid: u32,
    region: Region,
    cmds: Producer<Cmd>,
    evts: Consumer<Evt>,
    tag: u64,
    /// Completions popped but not asked for yet.
    seen: Vec<Evt>,
}

impl Host {
    fn send(&mut self, slot: u32, req: Request) -> u64 {
        self.tag += 1;
        let mut c = req.to_cmd(slot);
        c.tag = self.tag;
        assert!(self.cmds.push(c).unwrap(), "command ring full");
        self.tag
    }
    fn take(&mut self, tag: u64) -> Option<Evt> {
        while let Some(e) = self.evts.pop().unwrap() {
            self.seen.push(e);
        }
        let i = self.seen.iter().position(|e| e.tag == tag)?;
        Some(self.seen.remove(i))
    }
    fn flags(&self, slot: u32) -> u32 {
        self.region
            .sock(slot)
            .unwrap()
            .state
            .0
            .flags
            .load(Ordering::Acquire)
    }
    fn dead(&self) -> bool {
        self.region.header().dead.0.load(Ordering::Acquire) != 0
    }
    fn write(&self, slot: u32, data: &[u8]) {
        let tx = self.region.tx(slot).unwrap();
        let tail = tx.load_tail();
        assert!(tx.writable(tail).unwrap() as usize >= data.len());
        tx.copy_in(tail, data);
        tx.publish_tail(tail.wrapping_add(data.len() as u32));
    }
    /// Writes `data` and marks the slot in the TX-changed bitmap (as the library's `send`).
    fn send_tx(&self, slot: u32, data: &[u8]) {
        self.write(slot, data);
        self.region.mark_tx(slot);
    }
    fn read(&self, slot: u32) -> Vec<u8> {
        let rx = self.region.rx(slot).unwrap();
        let head = rx.load_head();
        let n = rx.readable(head).unwrap();
        let mut v = vec![0u8; n as usize];
        rx.copy_out(head, &mut v);
        rx.publish_head(head.wrapping_add(n));
        v
    }
}

/// The core and what the shell would have done for it.
struct Rig {
    core: Core<LoopBackend<Fake>>,
    os: Rc<RefCell<FakeOs>>,
    t0: Instant,
    now: Instant,
    /// Regions released by the core, kept mapped for the hosts that still look at them.
    released: Vec<(u32, Box<Channel>, bool)>,
    watched: Vec<(u64, i32)>,
    unwatched: Vec<u64>,
    /// The geometry of the regions `attach` creates.
    geo: Geometry,
}

impl Rig {
    fn new() -> Rig {
        let os = Rc::new(RefCell::new(FakeOs::default()));
        let t0 = Instant::now();
        Rig {
            core: Core::new(LoopBackend::new(Fake(os.clone()), true), t0),
            os,
            t0,
            now: t0,
            released: Vec::new(),
            watched: Vec::new(),
            unwatched: Vec::new(),
            geo: geo(),
        }
    }

    fn at(&mut self, secs: u64) {
        self.now = self.t0 + Duration::from_secs(secs);
    }

    fn host(&mut self, sid: u32) -> Host {
        let ch = self.core.channel_mut(sid).unwrap();
        // SAFETY: the channel's mapping stays alive (in the core, then in `released`) for as
        // long as the rig, which outlives every Host of a test.
        let region = unsafe { Region::attach(ch.region().base(), ch.region().len()) }.unwrap();
        Host {
            sid,
            cmds: region.cmd_producer(),
            evts: region.evt_consumer(),
            region,
            tag: 0,
            seen: Vec::new(),
        }
    }

    fn attach_as(&mut self, pid: i32, ticket: Option<u64>) -> (Host, usize) {
        let (chan, _memfd) = Channel::create(self.geo).unwrap();
        let cred = Cred {
            pid,
            uid: UID,
            gid: UID,
        };
        let (sid, n) = self.core.attach(Box::new(chan), cred, ticket, self.now);
        self.actions();
        (self.host(sid), n)
    }

    fn attach(&mut self, pid: i32) -> Host {
        self.attach_as(pid, None).0
    }

    /// One loop iteration's work for the core, then the shell's part.
    fn step(&mut self) {
        let now = self.now;
        self.core.process_commands(now);
        self.core.poll_local(now);
        self.core.handle_timeout(now);
        self.core.flush();
        self.actions();
    }

    fn actions(&mut self) {
        while let Some(a) = self.core.poll_action() {
            match a {
                Action::RingDoorbells(_) => {}
                Action::WatchPid { ticket, pid } => self.watched.push((ticket, pid)),
                Action::UnwatchPid(t) => self.unwatched.push(t),
                Action::Release { sid, chan, killed } => self.released.push((sid, chan, killed)),
            }
        }
    }

    /// Sends `req` and runs the core until it completes.
    fn call(&mut self, h: &mut Host, slot: u32, req: Request) -> Evt {
        let tag = h.send(slot, req);
        for _ in 0..4 {
            self.step();
            if let Some(e) = h.take(tag) {
                return e;
            }
        }
        panic!("{req:?} on slot {slot} did not complete");
    }

    fn ok(&mut self, h: &mut Host, slot: u32, req: Request) -> i64 {
        let r = self.call(h, slot, req).result;
        assert!(r >= 0, "{req:?} on slot {slot}: {r}");
        r
    }

    fn socket(&mut self, h: &mut Host) -> u32 {
        let req = Request::Socket {
            domain: libc::AF_INET,
            ty: libc::SOCK_STREAM,
            protocol: 0,
        };
        self.ok(h, 0, req) as u32
    }

    fn listener(&mut self, h: &mut Host, port: u16) -> u32 {
        let l = self.socket(h);
        self.ok(h, l, bind(port));
        self.ok(h, l, Request::Listen { backlog: 16 });
        l
    }

    /// A connected pair: (client slot in `c`, server slot in `s`, accepted through `ls`).
    fn connect(&mut self, c: &mut Host, s: &mut Host, ls: u32, port: u16) -> (u32, u32) {
        let cs = self.socket(c);
        let r = self.call(c, cs, connect(port, false)).result;
        assert_eq!(r, neg(libc::EINPROGRESS));
        self.step();
        assert_ne!(c.flags(cs) & SF_CONNECTED, 0);
        // As the library does: a connection handed ahead first, else ask.
        let ss = match take_handoff(s, ls) {
            Some(h) => h.slot,
            None => self.ok(s, ls, Request::Accept { wait: false }) as u32,
        };
        (cs, ss)
    }

    fn later(&mut self, d: Duration) {
        self.now += d;
    }

    /// `p` (pid 100) forks pid 101, which attaches with the ticket: the child's host and the
    /// number of sockets it inherited.
    fn fork_child(&mut self, p: &mut Host) -> (Host, usize) {
        let secret = self.call(p, 0, Request::Fork).secret();
        self.os.borrow_mut().parents.insert(101, 100);
        let cred = Cred {
            pid: 101,
            uid: UID,
            gid: UID,
        };
        let t = self.core.ticket_for_child(secret, cred).unwrap();
        self.attach_as(101, Some(t))
    }

    /// A client socket of `c` that connects to `port` and sends `data` (when not empty).
    fn client(&mut self, c: &mut Host, port: u16, data: &[u8]) -> u32 {
        let cs = self.socket(c);
        self.call(c, cs, connect(port, false));
        self.step();
        if !data.is_empty() {
            c.write(cs, data);
            self.ok(c, cs, Request::TxKick);
            self.step();
        }
        cs
    }

    fn sockets(&self) -> usize {
        self.core.socks.len()
    }
}

fn addr(port: u16) -> Addr {
    Addr::Inet(SocketAddr::from(([127, 0, 0, 1], port)))
}

fn bind(port: u16) -> Request {
    Request::Bind { addr: addr(port) }
}

fn connect(port: u16, wait: bool) -> Request {
    Request::Connect {
        addr: addr(port),
        wait,
    }
}

/// TX announced by the TX-changed bitmap instead of commands: one take drains every marked slot;
/// a close posted after marked bytes, which the agent executes before the take that finds their
/// mark, still sends them (the close drains first); a mark of a slot released meanwhile is
/// ignored.
#[test]
fn tx_changed_marks_drain_streams_and_a_close_after_them_still_sends() {
    let mut r = Rig::new();
    let mut a = r.attach(100);
    let mut b = r.attach(200);
    let ls = r.listener(&mut a, 8081);
    let mut pairs = Vec::new();
    for _ in 0..3 {
        let parked = a.send(ls, Request::Accept { wait: true });
        r.step();
        let cs = r.client(&mut b, 8081, b"");
        // The parked accept takes the first; later ones are handed ahead into the listener's
        // stream (an accepting binding).
        let ss = match a.take(parked) {
            Some(e) => e.result as u32,
            None => take_handoff(&a, ls).expect("handed ahead").slot,
        };
        pairs.push((cs, ss));
    }
    let cmds_before = b.region.header().stats.0.h2n_ops.load(Ordering::Relaxed);
    for (i, &(cs, _)) in pairs.iter().enumerate() {
        b.send_tx(cs, format!("request {i}").as_bytes());
    }
    assert!(
        r.core.cmds_pending(),
        "a mark keeps the agent from sleeping"
    );
    r.step();
    for (i, &(_, ss)) in pairs.iter().enumerate() {
        assert_eq!(a.read(ss), format!("request {i}").as_bytes());
    }
    assert!(!r.core.cmds_pending());
    let ops = b.region.header().stats.0.h2n_ops.load(Ordering::Relaxed) - cmds_before;
    assert_eq!(
        ops, 1,
        "three slots in one bitmap word: one operation, no command each"
    );

    // Bytes marked, then a close: one iteration runs the close before it takes the mark
    // (process_commands: the command ring first).
    let (cs, ss) = pairs[0];
    b.send_tx(cs, b"last words");
    let close = b.send(cs, Request::Close);
    r.step();
    assert_eq!(a.read(ss), b"last words");
    r.step();
    assert!(b.take(close).is_some());
    assert_ne!(a.flags(ss) & SF_RX_FIN, 0, "then the end of the stream");

    // A mark for a slot that holds nothing any more: ignored.
    b.region.mark_tx(cs);
    r.step();
    assert!(!b.dead() && !r.core.cmds_pending());
}

/// A close that drains a connection's last bytes sends them with MSG_MORE, so the FIN rides on
/// their segment; they are pushed before a close that would reset (unread bytes), and a socket
/// another process still holds gets them plainly.
#[test]
fn the_fin_rides_on_the_last_bytes_of_a_close() {
    let mut r = Rig::new();
    r.os.borrow_mut().reachable = true;
    let mut a = r.attach(100);
    let far = Request::Connect {
        addr: Addr::Inet(SocketAddr::from(([10, 9, 8, 7], 80))),
        wait: false,
    };
    let closing = |r: &mut Rig, a: &mut Host, data: &[u8]| {
        let s = r.socket(a);
        assert_eq!(r.call(a, s, far).result, 0);
        a.write(s, data);
        let close = a.send(s, Request::Close);
        r.step();
        assert!(a.take(close).is_some());
        std::mem::take(&mut r.os.borrow_mut().sent)
    };
    let sent = closing(&mut r, &mut a, b"bye");
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0], "more 3");
    assert!(sent[1].starts_with("close "), "{sent:?}");

    // Unread bytes: the close resets, which would drop held bytes; they go first.
    r.os.borrow_mut().unread = true;
    let sent = closing(&mut r, &mut a, b"reset");
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent[..2], ["more 5", "push"]);
    assert!(sent[2].starts_with("close "), "{sent:?}");
    r.os.borrow_mut().unread = false;

    // Shared with a child: the parent's close leaves the socket open, nothing is held; the
    // child's close is the last.
    let s = r.socket(&mut a);
    assert_eq!(r.call(&mut a, s, far).result, 0);
    let (mut c, n) = r.fork_child(&mut a);
    assert!(n >= 1);
    r.os.borrow_mut().sent.clear();
    a.write(s, b"parent");
    let close = a.send(s, Request::Close);
    r.step();
    assert!(a.take(close).is_some());
    assert_eq!(std::mem::take(&mut r.os.borrow_mut().sent), ["send 6"]);
    c.write(s, b"child");
    let close = c.send(s, Request::Close);
    r.step();
    assert!(c.take(close).is_some());
    let sent = std::mem::take(&mut r.os.borrow_mut().sent);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0], "more 5");
    assert!(sent[1].starts_with("close "), "{sent:?}");
}

#[test]
fn socket_bind_listen_connect_accept_send_recv_close() {
    let mut r = Rig::new();
    let mut a = r.attach(100);
    let mut b = r.attach(200);
    let ls = r.listener(&mut a, 8080);
    assert_ne!(a.flags(ls) & SF_LISTENING, 0);
    let name = r.call(&mut a, ls, Request::GetSockName);
    assert_eq!(
        SocketAddr::try_from(name.addr()).unwrap(),
        SocketAddr::from(([127, 0, 0, 1], 8080))
    );
    // Nothing queued: a non-blocking accept says EAGAIN, a waiting one parks.
    let e = r.call(&mut a, ls, Request::Accept { wait: false });
    assert_eq!(e.result, neg(libc::EAGAIN));
    let parked = a.send(ls, Request::Accept { wait: true });
    r.step();
    assert!(a.take(parked).is_none());

    let cs = r.socket(&mut b);
    let e = r.call(&mut b, cs, connect(8080, false));
    assert_eq!(e.result, neg(libc::EINPROGRESS));
    r.step();
    assert_ne!(b.flags(cs) & SF_CONNECTED, 0);
    let acc = a.take(parked).expect("the parked accept completes");
    let ss = acc.result as u32;
    assert_eq!(
        SocketAddr::try_from(acc.addr()).unwrap(),
        r.core
            .backend
            .local_addr(&r.core.socks.get(sock_of(&r, b.sid, cs)).unwrap().os)
            .unwrap()
    );

    // TX of the client -> RX of the server, and back.
    b.write(cs, b"hello");
    r.ok(&mut b, cs, Request::TxKick);
    r.step();
    assert_eq!(a.read(ss), b"hello");
    a.write(ss, b"world!");
    r.ok(&mut a, ss, Request::TxKick);
    r.step();
    assert_eq!(b.read(cs), b"world!");

    // Close: the peer sees the end of the stream; both sockets go.
    r.ok(&mut b, cs, Request::Close);
    r.step();
    assert_ne!(a.flags(ss) & SF_RX_FIN, 0);
    assert_eq!(b.flags(cs) & SF_OPEN, 0);
    r.ok(&mut a, ss, Request::Close);
    r.step();
    assert_eq!(r.sockets(), 1, "only the listener is left");
    r.ok(&mut a, ls, Request::Close);
    assert_eq!(r.sockets(), 0);
    assert!(!a.dead() && !b.dead());
}

/// The oldest connection the agent handed to listener `ls` of host `h`, taken as `accept` does.
fn take_handoff(h: &Host, ls: u32) -> Option<shm_proto::handoff::Handoff> {
    shm_proto::handoff::take(&h.region.rx(ls).unwrap()).unwrap()
}

/// Handoff records waiting in listener `ls` of host `h`.
fn handed(h: &Host, ls: u32) -> u32 {
    let rx = h.region.rx(ls).unwrap();
    rx.readable(rx.load_head()).unwrap() / handoff::RECORD
}

fn accept_ready(h: &Host, ls: u32) -> u32 {
    h.region
        .sock(ls)
        .unwrap()
        .state
        .0
        .accept_ready
        .load(Ordering::Acquire)
}

fn sock_of(r: &Rig, sid: u32, slot: u32) -> SockId {
    r.core.procs[&sid].sess.table.get_any(slot).unwrap().0.sock
}

#[test]
fn errors_are_completions_and_violations_drop_one_channel() {
    let mut r = Rig::new();
    let mut a = r.attach(100);
    let mut b = r.attach(200);
    let s1 = r.socket(&mut a);
    r.ok(&mut a, s1, bind(9000));
    // EADDRINUSE from the backend, EINVAL for a second bind.
    let s2 = r.socket(&mut a);
    assert_eq!(r.call(&mut a, s2, bind(9000)).result, neg(libc::EADDRINUSE));
    assert_eq!(r.call(&mut a, s1, bind(9001)).result, neg(libc::EINVAL));
    // A privileged port without CAP_NET_BIND_SERVICE.
    assert_eq!(r.call(&mut a, s2, bind(80)).result, neg(libc::EACCES));
    // accept on a socket that does not listen; an unknown address family.
    assert_eq!(
        r.call(&mut a, s2, Request::Accept { wait: false }).result,
        neg(libc::EINVAL)
    );
    let req = Request::Socket {
        domain: libc::AF_UNIX,
        ty: libc::SOCK_STREAM,
        protocol: 0,
    };
    assert!(r.call(&mut a, 0, req).result < 0);
    assert!(!a.dead());

    // b's socket, then a command of b naming a slot it does not own: b's channel goes, a's
    // stays, and b's socket is closed on the backend.
    let bs = r.socket(&mut b);
    let before = r.os.borrow().closed.len();
    b.send(5, Request::TxKick);
    r.step();
    assert!(b.dead());
    assert!(!a.dead());
    assert!(r
        .released
        .iter()
        .any(|(sid, _, killed)| *sid == b.sid && *killed));
    assert!(r.core.channel_mut(b.sid).is_none());
    assert_eq!(r.os.borrow().closed.len(), before + 1);
    let _ = bs;
    // a carries on.
    r.ok(&mut a, s1, Request::Listen { backlog: 4 });
    assert_eq!(r.core.snapshot().channels_dropped, 1);
}

#[test]
fn handle_command_runs_one_decoded_command() {
    let mut r = Rig::new();
    let a = r.attach(100);
    let cmd = Command {
        slot: 0,
        tag: 7,
        req: Request::Socket {
            domain: libc::AF_INET,
            ty: libc::SOCK_STREAM,
            protocol: 0,
        },
    };
    r.core.handle_command(a.sid, cmd, r.now);
    r.core.flush();
    r.actions();
    let mut a = a;
    let e = a.take(7).unwrap();
    assert!(e.result >= 0);
    // A command naming a slot the session does not hold is a violation (sock_of).
    let bad = Command {
        slot: 3,
        tag: 8,
        req: Request::GetSockName,
    };
    r.core.handle_command(a.sid, bad, r.now);
    r.actions();
    assert!(a.dead());
}

#[test]
fn fork_ticket_claimed_by_the_child() {
    let mut r = Rig::new();
    let mut p = r.attach(100);
    let ls = r.listener(&mut p, 7000);
    let fork = r.call(&mut p, 0, Request::Fork);
    assert_eq!(fork.result, 0);
    let secret = fork.secret();
    r.os.borrow_mut().parents.insert(101, 100);
    let e = r.call(&mut p, 0, Request::ForkChild { secret, pid: 101 });
    assert_eq!(e.result, 0);
    let tid = r.core.tickets.find(secret).unwrap();
    assert_eq!(r.watched, [(tid, 101)]);
    // A stranger presenting the secret is refused; the child gets the ticket.
    let stranger = Cred {
        pid: 555,
        uid: UID,
        gid: UID,
    };
    assert_eq!(r.core.ticket_for_child(secret, stranger), Err(libc::EPERM));
    let child = Cred {
        pid: 101,
        uid: UID,
        gid: UID,
    };
    let t = r.core.ticket_for_child(secret, child).unwrap();
    let (mut c, n) = r.attach_as(101, Some(t));
    assert_eq!(n, 1);
    assert!(r.unwatched.contains(&tid));
    assert_eq!(r.core.snapshot().tickets, 0);
    // Same slot, same listener: the child accepts a connection made to it.
    assert_ne!(c.flags(ls) & SF_LISTENING, 0);
    let mut x = r.attach(300);
    let (_cs, ss) = r.connect(&mut x, &mut c, ls, 7000);
    assert!(ss != ls);
    assert_eq!(r.core.snapshot().shared, 1);
}

#[test]
fn fork_ticket_expires_and_releases_what_only_it_held() {
    let mut r = Rig::new();
    let mut p = r.attach(100);
    let ls = r.listener(&mut p, 7001);
    let fork = r.call(&mut p, 0, Request::Fork);
    let secret = fork.secret();
    // The parent closes its copy: the ticket alone holds the listener.
    r.ok(&mut p, ls, Request::Close);
    assert_eq!(r.sockets(), 1);
    let deadline = r.core.next_deadline().unwrap();
    r.at(59);
    r.step();
    assert_eq!(r.sockets(), 1, "not yet");
    assert!(deadline <= r.t0 + Duration::from_secs(60));
    r.at(61);
    r.step();
    assert_eq!(r.sockets(), 0);
    assert_eq!(r.os.borrow().closed.len(), 1);
    assert_eq!(r.core.tickets.find(secret), None);
    // Its child exiting later changes nothing.
    r.core.ticket_child_exited(0, r.now);
}

#[test]
fn fork_ticket_ends_when_its_child_exits() {
    let mut r = Rig::new();
    let mut p = r.attach(100);
    let s = r.socket(&mut p);
    let secret = r.call(&mut p, 0, Request::Fork).secret();
    r.os.borrow_mut().parents.insert(101, 100);
    r.ok(&mut p, 0, Request::ForkChild { secret, pid: 101 });
    // ForkChild for a process that is not the caller's child.
    let secret2 = r.call(&mut p, 0, Request::Fork).secret();
    r.os.borrow_mut().parents.insert(999, 1);
    let e = r.call(
        &mut p,
        0,
        Request::ForkChild {
            secret: secret2,
            pid: 999,
        },
    );
    assert_eq!(e.result, neg(libc::ESRCH));
    let (tid, _) = r.watched[0];
    r.ok(&mut p, s, Request::Close);
    assert_eq!(r.sockets(), 1, "the tickets hold it");
    r.core.ticket_child_exited(tid, r.now);
    r.actions();
    assert_eq!(r.core.snapshot().tickets, 1);
    let t2 = r.core.tickets.find(secret2).unwrap();
    r.core.ticket_child_exited(t2, r.now);
    assert_eq!(r.sockets(), 0);
}

#[test]
fn a_listener_shared_by_two_processes_has_one_queue() {
    let mut r = Rig::new();
    let mut p = r.attach(100);
    let ls = r.listener(&mut p, 7002);
    let (mut c, _) = r.fork_child(&mut p);
    // The child parks a blocking accept; two connections arrive.
    let parked = c.send(ls, Request::Accept { wait: true });
    r.step();
    let seq = |h: &Host| {
        h.region
            .sock(ls)
            .unwrap()
            .state
            .0
            .accept_seq
            .load(Ordering::Acquire)
    };
    let parent_seq = seq(&p);
    let mut x = r.attach(300);
    let c1 = r.socket(&mut x);
    let c2 = r.socket(&mut x);
    r.call(&mut x, c1, connect(7002, false));
    r.call(&mut x, c2, connect(7002, false));
    r.step();
    // The first went to the parked accept. The child accepts, so the second is handed to it
    // ahead of its next accept; the parent, which never accepted, finds nothing.
    let got = c.take(parked).expect("child's parked accept served");
    assert!(got.result >= 0);
    assert_eq!((accept_ready(&p, ls), accept_ready(&c, ls)), (0, 0));
    assert_eq!(seq(&p), parent_seq, "the parent is not woken for nothing");
    assert!(take_handoff(&p, ls).is_none());
    let e = r.call(&mut p, ls, Request::Accept { wait: false });
    assert_eq!(e.result, neg(libc::EAGAIN));
    let h = take_handoff(&c, ls).expect("handed to the accepting child");
    assert_ne!(c.flags(h.slot) & SF_CONNECTED, 0);
    // The parent accepts too: from now on both take turns.
    r.client(&mut x, 7002, b"");
    r.client(&mut x, 7002, b"");
    assert!(take_handoff(&p, ls).is_some() && take_handoff(&c, ls).is_some());
    assert_eq!((accept_ready(&p, ls), accept_ready(&c, ls)), (0, 0));
    // A binding's parked accept ends when it closes its copy; the other's listener stays.
    let parked = c.send(ls, Request::Accept { wait: true });
    r.step();
    r.ok(&mut c, ls, Request::Close);
    assert_eq!(c.take(parked).unwrap().result, neg(libc::EINVAL));
    assert_ne!(p.flags(ls) & SF_LISTENING, 0);
}

#[test]
fn a_dead_process_releases_only_what_it_alone_held() {
    let mut r = Rig::new();
    let mut p = r.attach(100);
    let ls = r.listener(&mut p, 7003);
    let own = r.socket(&mut p);
    let (mut c, n) = r.fork_child(&mut p);
    assert_eq!(n, 2);
    // The child opens one of its own.
    let mine = r.socket(&mut c);
    assert_eq!(r.sockets(), 3);
    // The child dies: its own socket closes, the shared ones stay for the parent.
    r.core.detach(c.sid, r.now);
    r.step();
    assert_eq!(r.sockets(), 2);
    assert_eq!(r.os.borrow().closed.len(), 1);
    assert!(r
        .released
        .iter()
        .any(|(sid, _, killed)| *sid == c.sid && !killed));
    assert_ne!(p.flags(ls) & SF_LISTENING, 0);
    let _ = (own, mine);
    // The parent dies too: everything goes.
    r.core.detach(p.sid, r.now);
    r.step();
    assert_eq!(r.sockets(), 0);
    assert_eq!(r.core.snapshot().processes, 0);
}

#[test]
fn a_dead_process_drains_its_tx_until_the_deadline() {
    let mut r = Rig::new();
    let mut a = r.attach(100);
    let mut b = r.attach(200);
    let ls = r.listener(&mut a, 7004);
    let (cs, ss) = r.connect(&mut b, &mut a, ls, 7004);
    // Fill the server's RX and the loop pipe (256 KiB) so that the client's TX cannot leave.
    let chunk = [7u8; 4096];
    let mut backed_up = false;
    for _ in 0..128 {
        let tx = b.region.tx(cs).unwrap();
        let room = tx.writable(tx.load_tail()).unwrap() as usize;
        b.write(cs, &chunk[..room]);
        r.ok(&mut b, cs, Request::TxKick);
        let tx = b.region.tx(cs).unwrap();
        if tx.used(tx.load_head(), tx.load_tail()).unwrap() > 0 {
            backed_up = true;
            break;
        }
    }
    assert!(backed_up, "TX never backed up");
    r.core.detach(b.sid, r.now);
    r.step();
    assert_eq!(r.core.snapshot().draining, 1, "the close drains");
    r.at(29);
    r.step();
    assert_eq!(r.core.snapshot().draining, 1);
    r.at(31);
    r.step();
    assert_eq!(r.core.snapshot().draining, 0);
    assert!(r.released.iter().any(|(sid, _, _)| *sid == b.sid));
    // The server reads what had left and then sees the end.
    let mut n = 0;
    for _ in 0..200 {
        if a.flags(ss) & (SF_RX_FIN | SF_ERROR) != 0 {
            break;
        }
        n += a.read(ss).len();
        r.ok(&mut a, ss, Request::RxSpace);
    }
    assert!(n > 0);
    assert_ne!(a.flags(ss) & (SF_RX_FIN | SF_ERROR), 0);
}

#[test]
fn rx_and_tx_flow_through_the_streams_with_back_pressure() {
    let mut r = Rig::new();
    let mut a = r.attach(100);
    let mut b = r.attach(200);
    let ls = r.listener(&mut a, 7005);
    let (cs, ss) = r.connect(&mut b, &mut a, ls, 7005);
    // More than the RX stream holds: the rest waits until the host reads and says RxSpace.
    let total: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let mut off = 0;
    let mut got = Vec::new();
    for _ in 0..200 {
        let tx = b.region.tx(cs).unwrap();
        let room = tx.writable(tx.load_tail()).unwrap() as usize;
        let n = room.min(total.len() - off);
        if n > 0 {
            b.write(cs, &total[off..off + n]);
            off += n;
            r.ok(&mut b, cs, Request::TxKick);
        }
        r.step();
        let data = a.read(ss);
        if !data.is_empty() {
            got.extend_from_slice(&data);
            r.ok(&mut a, ss, Request::RxSpace);
        }
        if got.len() == total.len() {
            break;
        }
    }
    assert_eq!(got.len(), total.len());
    assert!(got == total);
}

#[test]
fn backend_and_policy_errors_complete_the_command() {
    let mut r = Rig::new();
    let mut a = r.attach(100);
    let s = r.socket(&mut a);
    // The backend's errno comes back as the completion, the channel lives on.
    r.os.borrow_mut().getsockopt_fails = Some(libc::EBADF);
    let get = Request::GetSockOpt {
        level: libc::SOL_SOCKET,
        name: libc::SO_RCVBUF,
        len: 4,
        cell: None,
    };
    assert_eq!(r.call(&mut a, s, get).result, neg(libc::EBADF));
    assert_eq!(r.call(&mut a, s, get).result, 4);
    // EINVAL: a bad `how`.
    let bad = Request::Shutdown { how: 7 };
    assert_eq!(r.call(&mut a, s, bad).result, neg(libc::EINVAL));
    // No listener of ours and a backend that refuses: the connect fails at once.
    let far = Request::Connect {
        addr: Addr::Inet(SocketAddr::from(([10, 9, 8, 7], 80))),
        wait: false,
    };
    assert_eq!(r.call(&mut a, s, far).result, neg(libc::ECONNREFUSED));
    // A policy refusal: SO_MARK needs CAP_NET_ADMIN (the backend's cap_eff says none).
    let set = Request::SetSockOpt {
        level: libc::SOL_SOCKET,
        name: libc::SO_MARK,
        len: 4,
        val: OptVal::inline(&1i32.to_ne_bytes()),
    };
    assert_eq!(r.call(&mut a, s, set).result, neg(libc::EPERM));
    // EMFILE once every slot is taken.
    for _ in 1..geo().max_sockets {
        r.socket(&mut a);
    }
    let req = Request::Socket {
        domain: libc::AF_INET,
        ty: libc::SOCK_STREAM,
        protocol: 0,
    };
    assert_eq!(r.call(&mut a, 0, req).result, neg(libc::EMFILE));
    assert!(!a.dead());
}

#[test]
fn doorbells_owed_to_a_sleeping_waiter_are_asked_of_the_shell() {
    let mut r = Rig::new();
    let mut a = r.attach(100);
    let mut b = r.attach(200);
    let ls = r.listener(&mut a, 7006);
    let bell = sys::eventfd().unwrap();
    assert!(r.core.channel_mut(a.sid).unwrap().set_waiter(2, bell));
    // Waiter 2 of process a watches the listener and sleeps.
    let ctl = a.region.sock(ls).unwrap();
    ctl.host.0.waiter_mask.fetch_or(1 << 2, Ordering::AcqRel);
    wake::announce(&a.region.waiter(2).unwrap().sleeping);
    let cs = r.socket(&mut b);
    b.send(cs, connect(7006, false));
    let now = r.now;
    r.core.process_commands(now);
    r.core.poll_local(now);
    r.core.flush();
    let mut asked = Vec::new();
    while let Some(act) = r.core.poll_action() {
        if let Action::RingDoorbells(sid) = act {
            asked.push(sid);
        }
    }
    assert_eq!(asked, [a.sid]);
    // Not rung yet (the shell may defer): the next flush asks again.
    r.core.flush();
    assert!(matches!(r.core.poll_action(), Some(Action::RingDoorbells(sid)) if sid == a.sid));
    r.core.channel_mut(a.sid).unwrap().ring_owed();
    r.core.flush();
    assert!(r.core.poll_action().is_none());
}

#[test]
fn an_accepting_process_gets_connections_handed_with_their_bytes() {
    let mut r = Rig::new();
    let mut a = r.attach(100);
    let mut b = r.attach(200);
    let ls = r.listener(&mut a, 7010);
    // Its first accept asks (and makes it a taker); the rest arrive ahead of the next accept.
    let (_c0, s0) = r.connect(&mut b, &mut a, ls, 7010);
    for i in 0..3u8 {
        r.client(&mut b, 7010, &[b'a' + i; 3]);
    }
    assert_eq!(accept_ready(&a, ls), 0, "nothing waits in the shared queue");
    assert!(a.evts.pop().unwrap().is_none(), "handing completes nothing");
    for i in 0..3u8 {
        let h = take_handoff(&a, ls).expect("handed");
        assert_ne!(h.slot, s0);
        let peer = SocketAddr::try_from(h.peer).unwrap();
        assert_eq!(peer.ip(), std::net::IpAddr::from([127, 0, 0, 1]));
        assert_eq!(a.read(h.slot), [b'a' + i; 3]);
    }
    assert!(take_handoff(&a, ls).is_none());
    // Taken records are forgotten: nothing is withdrawn after the hold time.
    r.later(HANDOFF_HOLD * 2);
    r.step();
    assert_eq!(accept_ready(&a, ls), 0);
    assert_eq!(r.sockets(), 1 + 4 + 4);
}

#[test]
fn handed_connections_not_accepted_in_time_go_back_to_the_queue() {
    let mut r = Rig::new();
    let mut a = r.attach(100);
    let mut b = r.attach(200);
    let ls = r.listener(&mut a, 7011);
    let _ = r.connect(&mut b, &mut a, ls, 7011);
    let cs = r.client(&mut b, 7011, b"first");
    assert_eq!(handed(&a, ls), 1);
    // The process does not accept for the hold time: the record is withdrawn, the connection
    // (and its bytes) wait in the shared queue for any accept.
    r.later(HANDOFF_HOLD + Duration::from_millis(1));
    r.step();
    assert!(take_handoff(&a, ls).is_none());
    assert_eq!(accept_ready(&a, ls), 1);
    b.write(cs, b" second");
    r.ok(&mut b, cs, Request::TxKick);
    r.step();
    let ss = r.ok(&mut a, ls, Request::Accept { wait: false }) as u32;
    assert_eq!(a.read(ss), b"first second");
    a.write(ss, b"reply");
    r.ok(&mut a, ss, Request::TxKick);
    r.step();
    assert_eq!(b.read(cs), b"reply");
}

#[test]
fn a_taker_that_exits_returns_its_handoffs_to_the_other_holders() {
    let mut r = Rig::new();
    let mut p = r.attach(100);
    let ls = r.listener(&mut p, 7012);
    let (mut c, _) = r.fork_child(&mut p);
    let e = r.call(&mut c, ls, Request::Accept { wait: false });
    assert_eq!(e.result, neg(libc::EAGAIN));
    let mut x = r.attach(300);
    r.client(&mut x, 7012, b"hello");
    assert_eq!(handed(&c, ls), 1);
    // The child exits before accepting it: the parent gets the connection, bytes intact.
    r.core.detach(c.sid, r.now);
    r.step();
    assert_eq!(accept_ready(&p, ls), 1);
    let ss = r.ok(&mut p, ls, Request::Accept { wait: false }) as u32;
    assert_eq!(p.read(ss), b"hello");
    assert!(r.os.borrow().closed.is_empty());
    // A fork takes back what was handed (no fd to inherit): the ticket does not name it.
    r.client(&mut x, 7012, b"");
    assert_eq!(handed(&p, ls), 1);
    let held = r.sockets();
    r.call(&mut p, 0, Request::Fork).secret();
    assert!(take_handoff(&p, ls).is_none());
    assert_eq!(accept_ready(&p, ls), 1);
    assert_eq!(r.sockets(), held);
}

#[test]
fn closing_the_only_listener_resets_what_it_was_handed() {
    let mut r = Rig::new();
    let mut a = r.attach(100);
    let mut b = r.attach(200);
    let ls = r.listener(&mut a, 7013);
    let _ = r.connect(&mut b, &mut a, ls, 7013);
    let cs = r.client(&mut b, 7013, b"unread");
    let n = r.sockets();
    r.ok(&mut a, ls, Request::Close);
    r.step();
    // The listener and the handed connection are gone; the client sees the end.
    assert_eq!(r.sockets(), n - 2);
    assert_ne!(b.flags(cs) & (SF_RX_FIN | SF_ERROR), 0);
}

#[test]
fn a_scribbled_handoff_head_drops_only_that_channel() {
    let mut r = Rig::new();
    let mut a = r.attach(100);
    let mut b = r.attach(200);
    let ls = r.listener(&mut a, 7014);
    let _ = r.connect(&mut b, &mut a, ls, 7014);
    a.region.rx(ls).unwrap().publish_head(12345);
    r.client(&mut b, 7014, b"");
    assert!(a.dead());
    assert!(!b.dead());
}

/// A file the fake OS lets hosts name as fd `fd`: `len` bytes of a pattern.
fn host_file(r: &Rig, fd: i32, len: usize) -> Vec<u8> {
    use std::io::Write;
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "snstack-core-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    f.write_all(&data).unwrap();
    let mut os = r.os.borrow_mut();
    os.file_refs = true;
    os.files.insert(fd, f);
    data
}

/// `OP_FILE_OPEN` of fd `fd` of `h`: the file's id.
fn open_file(r: &mut Rig, h: &mut Host, fd: i32) -> u32 {
    r.ok(h, 0, Request::FileOpen { fd, dev: 0, ino: 0 }) as u32
}

/// As the library's `sendfile` does: count, then the command.
fn post_file(h: &mut Host, slot: u32, id: u32, offset: u64, len: u64) {
    let ctl = h.region.sock(slot).unwrap();
    let posted = &ctl.host.0.tx_file_posted;
    posted.store(posted.load(Ordering::Relaxed) + len, Ordering::Release);
    let at = h.region.tx(slot).unwrap().load_tail();
    h.send(
        slot,
        Request::TxFile {
            id,
            offset,
            len,
            at,
        },
    );
}

/// Same bytes (compared without printing megabytes when they differ).
fn same(got: &[u8], want: &[u8]) {
    let diff = got.iter().zip(want).position(|(a, b)| a != b);
    assert!(
        diff.is_none() && got.len() == want.len(),
        "got {} bytes, want {}; first difference at {diff:?}",
        got.len(),
        want.len()
    );
}

/// Reads what `slot` of `h` receives until `want` bytes came (telling the agent about the room
/// made, as the library does after a read).
fn read_all(r: &mut Rig, h: &mut Host, slot: u32, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    for _ in 0..64 {
        got.extend(h.read(slot));
        if got.len() >= want {
            break;
        }
        h.send(slot, Request::RxSpace);
        r.step();
    }
    got
}

#[test]
fn file_references_go_in_their_place_in_the_byte_sequence() {
    let mut r = Rig::new();
    let data = host_file(&r, 7, 10_000);
    let mut a = r.attach(100);
    let mut b = r.attach(200);
    assert_eq!(
        b.region.header().features.load(Ordering::Relaxed) & FEAT_FILE_REFS,
        FEAT_FILE_REFS
    );
    let ls = r.listener(&mut a, 8080);
    let (cs, ss) = r.connect(&mut b, &mut a, ls, 8080);
    let id = open_file(&mut r, &mut b, 7);
    // Bytes before the reference, the file's from 1000 on, bytes after.
    b.write(cs, b"head-");
    post_file(&mut b, cs, id, 1000, 6000);
    b.write(cs, b"-tail");
    r.ok(&mut b, cs, Request::TxKick);
    let mut want = b"head-".to_vec();
    want.extend_from_slice(&data[1000..7000]);
    want.extend_from_slice(b"-tail");
    same(&read_all(&mut r, &mut a, ss, want.len()), &want);
    let ctl = b.region.sock(cs).unwrap();
    assert_eq!(ctl.state.0.tx_file_done.load(Ordering::Acquire), 6000);
    r.core.flush();
    let st = &b.region.header().stats.0;
    assert_eq!(st.h2n_file_bytes.load(Ordering::Relaxed), 6000);
    assert!(st.h2n_bytes.load(Ordering::Relaxed) >= 6010);

    // A count ahead of the references taken: nothing more goes, not even the bytes before the
    // reference, until its command runs.
    b.write(cs, b"<");
    let posted = &ctl.host.0.tx_file_posted;
    posted.store(posted.load(Ordering::Relaxed) + 5000, Ordering::Release);
    let at = b.region.tx(cs).unwrap().load_tail();
    b.write(cs, b">");
    r.ok(&mut b, cs, Request::TxKick);
    r.step();
    assert_eq!(
        a.read(ss),
        b"",
        "bytes overtook a reference still on its way"
    );
    b.send(
        cs,
        Request::TxFile {
            id,
            offset: 0,
            len: 5000,
            at,
        },
    );
    let mut want = b"<".to_vec();
    want.extend_from_slice(&data[..5000]);
    want.push(b'>');
    same(&read_all(&mut r, &mut a, ss, want.len()), &want);

    // The id closed with references of it still queued would keep the file; closed now, a new
    // reference to it is a protocol violation that drops only this channel.
    b.send(0, Request::FileClose { id });
    post_file(&mut b, cs, id, 0, 4096);
    r.step();
    assert!(b.dead());
    assert!(!a.dead());
}

#[test]
fn a_file_shorter_than_its_reference_fails_the_connection() {
    let mut r = Rig::new();
    host_file(&r, 7, 5000);
    let mut a = r.attach(100);
    let mut b = r.attach(200);
    let ls = r.listener(&mut a, 8080);
    let (cs, ss) = r.connect(&mut b, &mut a, ls, 8080);
    let id = open_file(&mut r, &mut b, 7);
    post_file(&mut b, cs, id, 0, 8192);
    assert_eq!(read_all(&mut r, &mut a, ss, 5000).len(), 5000);
    r.step();
    assert_ne!(b.flags(cs) & SF_ERROR, 0);
    let ctl = b.region.sock(cs).unwrap();
    assert_eq!(ctl.state.0.error.load(Ordering::Acquire), libc::EIO as u32);
    assert!(!b.dead(), "the host did nothing wrong");
}

#[test]
fn file_references_are_refused_where_the_backend_copies() {
    let mut r = Rig::new();
    host_file(&r, 7, 5000);
    r.os.borrow_mut().file_refs = false;
    let mut b = r.attach(200);
    assert_eq!(b.region.header().features.load(Ordering::Relaxed), 0);
    let open = Request::FileOpen {
        fd: 7,
        dev: 0,
        ino: 0,
    };
    assert_eq!(r.call(&mut b, 0, open).result, neg(libc::EOPNOTSUPP));
    // An fd the process does not have: the backend's errno.
    r.os.borrow_mut().file_refs = true;
    let bad = Request::FileOpen {
        fd: 9,
        dev: 0,
        ino: 0,
    };
    assert_eq!(r.call(&mut b, 0, bad).result, neg(libc::EBADF));
    assert!(!b.dead());
}

#[test]
fn urgent_marks_reach_the_peer_at_their_place_and_wait_for_their_command() {
    let mut r = Rig::new();
    let mut a = r.attach(100);
    let mut b = r.attach(200);
    assert_eq!(
        b.region.header().features.load(Ordering::Relaxed) & FEAT_URGENT,
        0,
        "the test backend carries no urgent data of its own"
    );
    let ls = r.listener(&mut a, 8080);
    let (cs, ss) = r.connect(&mut b, &mut a, ls, 8080);
    let urgent = |b: &mut Host, slot: u32| {
        let posted = &b.region.sock(slot).unwrap().host.0.tx_urg_posted;
        posted.store(posted.load(Ordering::Relaxed) + 1, Ordering::Release);
    };
    // "ab!" with its last byte urgent, then "cd": the loop connection keeps the byte out of band,
    // and the agent writes it into the reader's stream at the mark.
    b.write(cs, b"ab");
    urgent(&mut b, cs);
    b.write(cs, b"!");
    let at = b.region.tx(cs).unwrap().load_tail();
    b.write(cs, b"cd");
    r.ok(&mut b, cs, Request::TxKick);
    r.step();
    assert_eq!(
        a.read(ss),
        b"",
        "bytes overtook an urgent mark still on its way"
    );
    b.send(cs, Request::TxUrgent { at });
    same(&read_all(&mut r, &mut a, ss, 5), b"ab!cd");
    let word = a
        .region
        .sock(ss)
        .unwrap()
        .state
        .0
        .urgent
        .load(Ordering::Acquire);
    let u = Urgent::unpack(word).expect("urgent data published");
    assert_eq!(u.byte, Some(b'!'));
    let start = a.region.rx(ss).unwrap().load_tail().wrapping_sub(5);
    assert_eq!(u.mark, Some(start.wrapping_add(2)));
    // A mark at the binding's own head (nothing before it) is a protocol violation.
    let head = b.region.tx(cs).unwrap().load_tail();
    b.send(cs, Request::TxUrgent { at: head });
    r.step();
    assert!(b.dead());
    assert!(!a.dead());
}

#[test]
fn an_urgent_mark_overtaken_by_the_close_still_lets_the_drain_finish() {
    let mut r = Rig::new();
    let mut a = r.attach(100);
    let mut b = r.attach(200);
    let ls = r.listener(&mut a, 8080);
    let (cs, ss) = r.connect(&mut b, &mut a, ls, 8080);
    // Another thread closed between this one's count and its command.
    b.write(cs, b"x");
    let posted = &b.region.sock(cs).unwrap().host.0.tx_urg_posted;
    posted.store(posted.load(Ordering::Relaxed) + 1, Ordering::Release);
    b.write(cs, b"!");
    let at = b.region.tx(cs).unwrap().load_tail();
    b.send(cs, Request::Close);
    r.step();
    b.send(cs, Request::TxUrgent { at });
    same(&read_all(&mut r, &mut a, ss, 2), b"x!");
    assert!(!b.dead());
}

/// A process handed a batch (requests on four connections in one round) is not told the agent
/// sleeps, so it writes no doorbell while it answers; a quiet process is told; and once polling
/// gave up (`cool_all`), both are told again (host_poll.rs).
#[test]
fn sleep_is_not_announced_to_a_process_answering_a_batch() {
    let mut r = Rig::new();
    let mut srv = r.attach(100);
    let mut cli = r.attach(200);
    let quiet = r.attach(300);
    for h in [&srv, &cli, &quiet] {
        r.core.channel_mut(h.sid).unwrap().set_apart(true);
    }
    let ls = r.listener(&mut srv, 8080);
    let mut pairs = Vec::new();
    for _ in 0..4 {
        pairs.push(r.connect(&mut cli, &mut srv, ls, 8080));
    }
    r.core.end_round();
    let sleeping = |h: &Host| h.region.header().agent.0.sleeping.load(Ordering::Acquire);
    // The round above changed each side's sockets: everyone answered since, so cool down.
    r.core.cool_all();
    // One round: a request on every connection.
    round(&mut r, &mut cli, &pairs, b"GET / HTTP/1.1\r\n\r\n");
    r.core.announce_sleep(true);
    assert_eq!(
        sleeping(&srv),
        0,
        "the server answering four requests was told to ring"
    );
    assert_eq!(
        sleeping(&quiet),
        1,
        "a quiet process was not told the agent sleeps"
    );
    r.core.retract_sleep();
    for &(_, ss) in &pairs {
        assert_eq!(srv.read(ss), b"GET / HTTP/1.1\r\n\r\n");
    }
    // Polling gave up: everyone rings again.
    r.core.cool_all();
    assert!(!r.core.end_round(), "hot after cooling, with nothing new");
    r.core.announce_sleep(true);
    assert_eq!(
        (sleeping(&srv), sleeping(&cli), sleeping(&quiet)),
        (1, 1, 1)
    );
    // Announcing without polling tells everyone, hot or not.
    r.core.retract_sleep();
    round(&mut r, &mut cli, &pairs, b"x");
    r.core.announce_sleep(false);
    assert_eq!(sleeping(&srv), 1);
}

/// `c` sends `data` on each of its sockets in `pairs`, and the agent's round ends.
fn round(r: &mut Rig, c: &mut Host, pairs: &[(u32, u32)], data: &[u8]) {
    for &(cs, _) in pairs {
        c.write(cs, data);
        c.send(cs, Request::TxKick);
    }
    r.step();
    assert!(r.core.end_round());
}

#[test]
fn a_service_is_handed_a_whole_burst_a_socket_listener_eight() {
    use shm_proto::record::{FramingSpec, FRAMING_RAW, SNSTACK_FRAMING, SOL_SNSTACK};
    let mut r = Rig::new();
    r.geo.max_sockets = 64;
    let mut a = r.attach(100);
    let mut b = r.attach(200);
    // A listener of the socket API: at most 8 records wait; the rest of a burst waits in the
    // shared queue for an accept.
    let ls = r.listener(&mut a, 7030);
    let _ = r.connect(&mut b, &mut a, ls, 7030);
    for _ in 0..12 {
        r.client(&mut b, 7030, b"");
    }
    assert_eq!(handed(&a, ls), 8);
    assert_eq!(accept_ready(&a, ls), 4);
    // A service's listener (a framing declared, payload API): the whole burst is handed.
    let fs = r.socket(&mut a);
    let spec = FramingSpec {
        kind: FRAMING_RAW,
        flags: 0,
        width: 0,
        max_message: 1024,
    }
    .encode();
    r.ok(
        &mut a,
        fs,
        Request::SetSockOpt {
            level: SOL_SNSTACK,
            name: SNSTACK_FRAMING,
            len: spec.len(),
            val: OptVal::inline(&spec),
        },
    );
    r.ok(&mut a, fs, bind(7031));
    r.ok(&mut a, fs, Request::Listen { backlog: 16 });
    let _ = r.connect(&mut b, &mut a, fs, 7031);
    for _ in 0..12 {
        r.client(&mut b, 7031, b"");
    }
    assert_eq!(handed(&a, fs), 12);
    assert_eq!(accept_ready(&a, fs), 0);
}
