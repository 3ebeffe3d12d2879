//! The group against an in-memory region, with the test playing the agent: it answers commands,
//! writes handoff records, message records and flags, drains TX, and marks slots changed as the
//! agent's `wake_sock` does.

use std::collections::VecDeque;
use std::io::{ErrorKind, IoSlice};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shm_proto::handoff::{self, Handoff};
use shm_proto::record;
use shm_proto::region::Geometry;
use shm_proto::*;

use crate::group::Group;
use crate::sys::Io;
use crate::{CloseReason, Conn, Event, Framing};

/// A zeroed, page-aligned heap buffer standing in for the memfd mapping.
struct Mem(*mut u8, std::alloc::Layout);

// SAFETY: plain heap memory, accessed through the region's atomics and bounded copies.
unsafe impl Send for Mem {}
// SAFETY: as above.
unsafe impl Sync for Mem {}

impl Drop for Mem {
    fn drop(&mut self) {
        // SAFETY: allocated in `region()` with this layout.
        unsafe { std::alloc::dealloc(self.0, self.1) };
    }
}

fn region() -> (Arc<Mem>, Region) {
    let geo = Geometry {
        cmd_entries: 64,
        evt_entries: 64,
        max_sockets: 16,
        rx_size: 4096,
        tx_size: 4096,
        spin_ns: 0,
    };
    let len = geo.offsets().unwrap().total as usize;
    let l = std::alloc::Layout::from_size_align(len, 4096).unwrap();
    // SAFETY: non-zero size.
    let p = unsafe { std::alloc::alloc_zeroed(l) };
    assert!(!p.is_null());
    let mem = Arc::new(Mem(p, l));
    // SAFETY: zeroed, aligned, `len` bytes, kept alive by `mem` for as long as the test and
    // the group (which holds an `Arc` through its Io) use the region.
    let r = unsafe { Region::init(p, len, geo) }.unwrap();
    (mem, r)
}

/// The scripted agent.
struct Agent {
    r: Region,
    cmds: Consumer<Cmd>,
    evts: Producer<Evt>,
    rx_tail: Vec<u32>,
    tx_head: Vec<u32>,
    next_slot: u32,
    /// Every command, in order.
    log: Vec<(u32, Request)>,
    /// Answers to `OP_ACCEPT`: slot and peer; empty: EAGAIN.
    accepts: VecDeque<(u32, SocketAddr)>,
    /// Answer to `OP_CONNECT`.
    connect: i64,
    /// Answer to `SOL_SNSTACK` setsockopt.
    framing: i64,
    /// Answer calls at all (false: a hung agent).
    answering: bool,
}

impl Agent {
    fn serve(&mut self) {
        while let Some(c) = self.cmds.pop().unwrap() {
            let req = Request::decode(&c).expect("the group encodes valid commands");
            self.log.push((c.slot, req));
            if c.tag == 0 || !self.answering {
                continue;
            }
            let (res, payload) = match req {
                Request::Socket { .. } => {
                    let s = self.next_slot;
                    self.next_slot += 1;
                    self.r.reset_sock(s);
                    (i64::from(s), Payload::None)
                }
                Request::Accept { .. } => match self.accepts.pop_front() {
                    Some((s, peer)) => {
                        self.new_conn(s);
                        (i64::from(s), Payload::Addr(peer.into()))
                    }
                    None => (-(libc::EAGAIN as i64), Payload::None),
                },
                Request::Connect { .. } => (self.connect, Payload::None),
                Request::SetSockOpt { level, .. } if level == record::SOL_SNSTACK => {
                    (self.framing, Payload::None)
                }
                _ => (0, Payload::None),
            };
            assert!(self
                .evts
                .push(Evt::completion(c.tag, c.slot, res, payload))
                .unwrap());
            let h = self.r.header();
            wake::bump(&h.region_seq.0, &h.region_waiters.0);
        }
    }

    fn new_conn(&mut self, s: u32) {
        self.r.reset_sock(s);
        self.rx_tail[s as usize] = 0;
        self.tx_head[s as usize] = 0;
        self.set_flags(s, SF_OPEN | SF_CONNECTED);
    }

    /// What `wake_sock` does for a changed slot: mark it for every waiter in its mask.
    fn wake(&self, s: u32) {
        let ctl = self.r.sock(s).unwrap();
        let mask = ctl.host.0.waiter_mask.fetch_or(0, Ordering::AcqRel);
        for i in 0..64 {
            if mask & (1 << i) != 0 {
                self.r.mark_changed(i, s);
                wake::must_ring(&self.r.waiter(i).unwrap().sleeping);
            }
        }
    }

    fn set_flags(&self, s: u32, f: u32) {
        self.r
            .sock(s)
            .unwrap()
            .state
            .0
            .flags
            .store(f, Ordering::Release);
        self.wake(s);
    }

    fn fail(&self, s: u32, errno: i32, framing_error: u32, extra: u32) {
        let st = &self.r.sock(s).unwrap().state.0;
        st.framing_error.store(framing_error, Ordering::Release);
        st.error.store(errno as u32, Ordering::Release);
        let f = st.flags.load(Ordering::Acquire);
        self.set_flags(s, f | SF_ERROR | SF_TX_SHUT | SF_RX_FIN | extra);
    }

    fn handoff(&mut self, listener: u32, s: u32, peer: &str) {
        self.new_conn(s);
        let rx = self.r.rx(listener).unwrap();
        let h = Handoff {
            slot: s,
            peer: peer.parse::<SocketAddr>().unwrap().into(),
        };
        assert!(handoff::push(&rx, &mut self.rx_tail[listener as usize], &h).unwrap());
        self.wake(listener);
    }

    /// Appends one record without waking (several per publication are fine).
    fn record(&mut self, s: u32, msg: &[u8], part: bool) -> bool {
        let rx = self.r.rx(s).unwrap();
        let tail = &mut self.rx_tail[s as usize];
        let free = rx.writable(*tail).unwrap();
        let Some(pad) = record::room(&rx, *tail, free, msg.len() as u32).unwrap() else {
            return false;
        };
        record::write(&rx, tail, pad, part, msg, &[]);
        rx.publish_tail(*tail);
        true
    }

    fn message(&mut self, s: u32, msg: &[u8]) {
        assert!(self.record(s, msg, false));
        self.wake(s);
    }

    /// Takes every TX byte of `s` (sent), publishing the head.
    fn drain_tx(&mut self, s: u32) -> Vec<u8> {
        self.drain_tx_n(s, usize::MAX)
    }

    /// Takes up to `max` TX bytes of `s`.
    fn drain_tx_n(&mut self, s: u32, max: usize) -> Vec<u8> {
        let tx = self.r.tx(s).unwrap();
        let head = self.tx_head[s as usize];
        let n = tx.readable(head).unwrap().min(max as u32);
        let mut v = vec![0; n as usize];
        tx.copy_out(head, &mut v);
        self.tx_head[s as usize] = head.wrapping_add(n);
        tx.publish_head(self.tx_head[s as usize]);
        self.wake(s);
        v
    }

    fn take_log(&mut self) -> Vec<(u32, Request)> {
        self.serve();
        std::mem::take(&mut self.log)
    }

    /// The slots marked in the TX-changed bitmap since the last take, in slot order.
    fn take_tx(&mut self) -> Vec<u32> {
        let mut v = Vec::new();
        self.r.take_tx(|s| v.push(s));
        v
    }
}

struct FakeIo {
    _mem: Arc<Mem>,
    agent: Arc<Mutex<Agent>>,
    rings: Arc<AtomicU32>,
}

impl Io for FakeIo {
    fn ring_agent(&mut self) {
        self.rings.fetch_add(1, Ordering::Relaxed);
        self.agent.lock().unwrap().serve();
    }

    fn wait_region(&mut self, _seq: &AtomicU32, _seen: u32, _t: Duration) {
        self.agent.lock().unwrap().serve();
    }

    fn sleep(&mut self, _flag: &AtomicU32, _t: Option<Duration>) -> Result<(), i32> {
        self.agent.lock().unwrap().serve();
        Ok(())
    }

    fn alive(&mut self) -> bool {
        true
    }
}

struct T {
    g: Group,
    a: Arc<Mutex<Agent>>,
    r: Region,
    rings: Arc<AtomicU32>,
}

/// An owned copy of an event (the borrowed one lives only until the next poll).
#[derive(Debug, PartialEq, Eq)]
enum Ev {
    Opened(Conn, SocketAddr, u32),
    Connected(Conn),
    Message(Conn, Vec<u8>, bool),
    Writable(Conn),
    Closed(Conn, CloseReason),
}

impl T {
    fn new() -> T {
        let (mem, r) = region();
        let a = Arc::new(Mutex::new(Agent {
            r,
            cmds: r.cmd_consumer(),
            evts: r.evt_producer(),
            rx_tail: vec![0; 16],
            tx_head: vec![0; 16],
            next_slot: 1,
            log: Vec::new(),
            accepts: VecDeque::new(),
            connect: -(libc::EINPROGRESS as i64),
            framing: 0,
            answering: true,
        }));
        let rings = Arc::new(AtomicU32::new(0));
        let io = FakeIo {
            _mem: mem,
            agent: a.clone(),
            rings: rings.clone(),
        };
        T {
            g: Group::with_io(r, Box::new(io)),
            a,
            r,
            rings,
        }
    }

    fn agent(&self) -> std::sync::MutexGuard<'_, Agent> {
        self.a.lock().unwrap()
    }

    fn poll(&mut self, max: usize) -> Vec<Ev> {
        let evs = self
            .g
            .poll(max, Duration::ZERO, Some(Duration::ZERO))
            .unwrap();
        evs.iter()
            .map(|e| match e {
                Event::Opened {
                    conn,
                    peer,
                    service,
                } => Ev::Opened(conn, peer, service.0),
                Event::Connected { conn } => Ev::Connected(conn),
                Event::Message { conn, data, part } => Ev::Message(conn, data.to_vec(), part),
                Event::Writable { conn } => Ev::Writable(conn),
                Event::Closed { conn, reason } => Ev::Closed(conn, reason),
            })
            .collect()
    }

    /// A service on slot 1 and a conn handed off on slot `s`.
    fn served(s: u32) -> (T, Conn) {
        let mut t = T::new();
        t.g.serve(
            "127.0.0.1:7000".parse().unwrap(),
            Framing::Line { crlf: false },
            1024,
        )
        .unwrap();
        t.agent().handoff(1, s, "10.0.0.9:5555");
        let ev = t.poll(8);
        let [Ev::Opened(c, _, 0)] = ev[..] else {
            panic!("{ev:?}")
        };
        t.agent().take_log();
        (t, c)
    }

    fn rx_head(&self, s: u32) -> u32 {
        self.r.rx(s).unwrap().load_head()
    }
}

fn ops(log: &[(u32, Request)]) -> Vec<(u32, u16)> {
    log.iter().map(|(s, r)| (*s, r.op())).collect()
}

#[test]
fn serve_declares_the_service_and_becomes_a_taker() {
    let mut t = T::new();
    let svc =
        t.g.serve(
            "127.0.0.1:7000".parse().unwrap(),
            Framing::Http1Request,
            8192,
        )
        .unwrap();
    assert_eq!(svc.0, 0);
    let log = t.agent().take_log();
    let want = Framing::Http1Request.spec(8192).encode();
    assert!(matches!(
        log[0],
        (
            _,
            Request::Socket {
                domain: libc::AF_INET,
                ty: libc::SOCK_STREAM,
                ..
            }
        )
    ));
    let opts: Vec<(i32, i32, Vec<u8>)> = log
        .iter()
        .filter_map(|(_, r)| match r {
            Request::SetSockOpt {
                level,
                name,
                len,
                val: OptVal::Inline(v),
            } => Some((*level, *name, v[..*len].to_vec())),
            _ => None,
        })
        .collect();
    assert_eq!(
        opts,
        vec![
            (record::SOL_SNSTACK, record::SNSTACK_FRAMING, want.to_vec()),
            (
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                1i32.to_ne_bytes().to_vec()
            ),
            (
                libc::SOL_SOCKET,
                libc::SO_REUSEPORT,
                1i32.to_ne_bytes().to_vec()
            ),
        ]
    );
    let tail: Vec<u16> = ops(&log)[4..].iter().map(|x| x.1).collect();
    assert_eq!(tail, [OP_BIND, OP_LISTEN, OP_ACCEPT]);
    assert!(log.iter().all(|(s, r)| r.slotless() || *s == 1));
    let mask =
        t.r.sock(1)
            .unwrap()
            .host
            .0
            .waiter_mask
            .load(Ordering::Relaxed);
    assert_eq!(mask, 1);
    assert!(t.poll(8).is_empty());
}

#[test]
fn refused_framing_closes_the_socket_again() {
    let t = T::new();
    t.agent().framing = -(libc::ENOPROTOOPT as i64);
    let e =
        t.g.serve("127.0.0.1:7000".parse().unwrap(), Framing::Raw, 100)
            .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOPROTOOPT));
    let log = t.agent().take_log();
    assert_eq!(log.last().unwrap(), &(1, Request::Close));
}

#[test]
fn handoffs_open_conns_and_bytes_before_the_bit_are_seen() {
    let mut t = T::new();
    t.g.serve("[::1]:7000".parse().unwrap(), Framing::Raw, 100)
        .unwrap();
    {
        let mut a = t.agent();
        a.handoff(1, 3, "10.0.0.1:1000");
        // Bytes arrive before the group set its waiter bit: no mark, yet they must be seen.
        assert!(a.record(3, b"early", false));
        a.handoff(1, 4, "[2001:db8::1]:2000");
    }
    let ev = t.poll(16);
    assert_eq!(ev.len(), 3, "{ev:?}");
    let Ev::Opened(c3, p3, 0) = ev[0] else {
        panic!()
    };
    assert_eq!((c3.slot(), p3), (3, "10.0.0.1:1000".parse().unwrap()));
    let Ev::Opened(c4, p4, 0) = ev[1] else {
        panic!()
    };
    assert_eq!((c4.slot(), p4), (4, "[2001:db8::1]:2000".parse().unwrap()));
    assert_eq!(ev[2], Ev::Message(c3, b"early".to_vec(), false));
    for s in [3, 4] {
        let m =
            t.r.sock(s)
                .unwrap()
                .host
                .0
                .waiter_mask
                .load(Ordering::Relaxed);
        assert_eq!(m, 1);
    }
    assert_eq!(t.g.service(c3).map(|s| s.0), Some(0));
}

#[test]
fn queued_connections_are_accepted_when_nothing_is_handed() {
    let mut t = T::new();
    t.g.serve("127.0.0.1:7000".parse().unwrap(), Framing::Raw, 100)
        .unwrap();
    t.agent().take_log();
    {
        let mut a = t.agent();
        a.accepts.push_back((6, "10.1.1.1:9".parse().unwrap()));
        let st = &a.r.sock(1).unwrap().state.0;
        st.accept_ready.store(1, Ordering::Release);
        a.wake(1);
    }
    let ev = t.poll(8);
    let [Ev::Opened(c, p, 0)] = ev[..] else {
        panic!("{ev:?}")
    };
    assert_eq!((c.slot(), p), (6, "10.1.1.1:9".parse().unwrap()));
    let log = t.agent().take_log();
    assert_eq!(
        ops(&log),
        [(1, OP_ACCEPT), (1, OP_ACCEPT)],
        "one more while it took one"
    );
    // EAGAIN: no retry until the listener changes again.
    assert!(t.poll(8).is_empty());
    assert!(t.agent().take_log().is_empty());
}

#[test]
fn messages_are_held_until_the_next_poll_then_released() {
    let (mut t, c) = T::served(2);
    {
        let mut a = t.agent();
        assert!(a.record(2, b"one\n", false));
        assert!(a.record(2, b"two\n", false));
        a.wake(2);
    }
    let ev = t.poll(8);
    assert_eq!(
        ev,
        [
            Ev::Message(c, b"one\n".to_vec(), false),
            Ev::Message(c, b"two\n".to_vec(), false)
        ]
    );
    assert_eq!(t.rx_head(2), 0, "views still held");
    // The agent found RX full meanwhile.
    t.r.sock(2)
        .unwrap()
        .rx_head
        .0
        .blocked
        .store(1, Ordering::Release);
    assert!(t.poll(8).is_empty());
    let tail = t.r.rx(2).unwrap().load_tail();
    assert_eq!(t.rx_head(2), tail);
    assert_eq!(ops(&t.agent().take_log()), [(2, OP_RX_SPACE)]);
    // Not blocked: no OP_RX_SPACE.
    t.agent().message(2, b"three\n");
    assert_eq!(t.poll(8).len(), 1);
    t.g.release().unwrap();
    assert_eq!(t.rx_head(2), t.r.rx(2).unwrap().load_tail());
    assert!(t.agent().take_log().is_empty());
}

#[test]
fn parts_and_padding_come_out_as_written() {
    let (mut t, c) = T::served(2);
    let big: Vec<u8> = (0..1500u32).map(|i| i as u8).collect();
    let mut want = Vec::new();
    // Walk the 4 KiB ring around its end several times (the last batch's record is still held
    // when the next one is written, so the stream never empties and rewinds).
    for round in 0..12 {
        let part = round % 3 == 0;
        let len = 500 + round * 53;
        assert!(t.agent().record(2, &big[..len], part));
        t.agent().wake(2);
        want.push(Ev::Message(c, big[..len].to_vec(), part));
        let got = t.poll(8);
        assert_eq!(got, want[round..], "round {round}");
    }
}

#[test]
fn the_event_budget_carries_over() {
    let (mut t, c) = T::served(2);
    {
        let mut a = t.agent();
        for m in [b"a\n", b"b\n", b"c\n"] {
            a.record(2, m, false);
        }
        a.fail(2, 0, 0, 0);
        a.r.sock(2)
            .unwrap()
            .state
            .0
            .flags
            .fetch_and(!SF_ERROR, Ordering::AcqRel);
    }
    let ev = t.poll(2);
    assert_eq!(ev.len(), 2);
    let ev = t.poll(2);
    assert_eq!(
        ev,
        [
            Ev::Message(c, b"c\n".to_vec(), false),
            Ev::Closed(c, CloseReason::PeerClosed)
        ]
    );
    assert!(t.poll(2).is_empty(), "Closed is reported once");
}

#[test]
fn close_reasons() {
    let cases: [(i32, u32, u32, CloseReason); 4] = [
        (libc::ECONNRESET, 0, SF_RESET, CloseReason::Reset),
        (libc::ETIMEDOUT, 0, 0, CloseReason::Error(libc::ETIMEDOUT)),
        (
            libc::EPROTO,
            5,
            0,
            CloseReason::Malformed("bad_request_line"),
        ),
        (libc::EPROTO, 1, 0, CloseReason::Malformed("truncated")),
    ];
    for (errno, code, extra, want) in cases {
        let (mut t, c) = T::served(2);
        {
            let mut a = t.agent();
            a.record(2, b"last\n", false);
            a.fail(2, errno, code, extra);
        }
        assert_eq!(
            t.poll(8),
            [
                Ev::Message(c, b"last\n".to_vec(), false),
                Ev::Closed(c, want)
            ]
        );
        assert_eq!(
            t.g.send(c, b"x").unwrap_err().raw_os_error(),
            Some(libc::EPIPE)
        );
        t.agent().wake(2);
        assert!(t.poll(8).is_empty());
        assert_eq!(want.errno(), errno);
    }
}

#[test]
fn sends_are_whole_kicked_once_per_flush_and_writable_follows_would_block() {
    let (mut t, c) = T::served(2);
    t.g.send(c, b"hello ").unwrap();
    t.g.send_vectored(c, &[IoSlice::new(b"wor"), IoSlice::new(b"ld")])
        .unwrap();
    assert!(
        t.agent().take_tx().is_empty(),
        "published, not marked before the flush"
    );
    t.g.flush().unwrap();
    assert_eq!(t.agent().take_tx(), [2]);
    assert!(t.agent().take_log().is_empty(), "no command per send");
    assert_eq!(t.agent().drain_tx(2), b"hello world");
    // Marked again while the agent has not taken the mark: still one slot to drain.
    t.g.send(c, b"more").unwrap();
    t.g.flush().unwrap();
    t.g.send(c, b"!").unwrap();
    t.g.flush().unwrap();
    // A flush with nothing new marks nothing.
    assert_eq!(t.agent().take_tx(), [2]);
    t.g.flush().unwrap();
    assert!(t.agent().take_tx().is_empty());
    assert_eq!(t.agent().drain_tx(2), b"more!");
    t.poll(8);
    // Fill the ring: a send that does not fit fails whole.
    let big = vec![7u8; 3000];
    t.g.send(c, &big).unwrap();
    let e = t.g.send(c, &big).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock);
    assert_eq!(t.g.writable(c).unwrap(), 4096 - 3000);
    assert_eq!(
        t.g.send(c, &vec![0; 5000]).unwrap_err().raw_os_error(),
        Some(libc::EMSGSIZE)
    );
    assert!(t.poll(8).is_empty());
    assert_eq!(t.agent().drain_tx(2), big);
    assert_eq!(t.poll(8), [Ev::Writable(c)]);
    t.g.send(c, &big).unwrap();
}

#[test]
fn reserve_gives_the_ring_pieces_and_commits_what_was_used() {
    let (t, c) = T::served(2);
    t.g.send(c, &[1u8; 3990]).unwrap();
    // The agent sends all but 1000 bytes (an emptied stream would start again at 0).
    assert_eq!(t.agent().drain_tx_n(2, 2990).len(), 2990);
    t.g.send(c, &[2u8; 10]).unwrap();
    let mut r = t.g.reserve(c, 200).unwrap();
    assert_eq!(
        t.g.send(c, b"x").unwrap_err().raw_os_error(),
        Some(libc::EBUSY)
    );
    {
        let (a, b) = r.pieces();
        assert_eq!((a.len(), b.len()), (96, 104), "wraps at the ring's end");
    }
    let msg: Vec<u8> = (0..150u8).collect();
    r.write_at(0, &msg);
    r.commit_len(150).unwrap();
    let got = t.agent().drain_tx(2);
    assert_eq!(&got[..1000], &[1u8; 1000]);
    assert_eq!(&got[1000..1010], &[2u8; 10]);
    assert_eq!(&got[1010..], &msg[..]);
    // Dropped uncommitted: nothing published, the conn usable again.
    drop(t.g.reserve(c, 10).unwrap());
    assert!(t.agent().drain_tx(2).is_empty());
    t.g.send(c, b"ok").unwrap();
}

#[test]
fn a_reservation_survives_the_agent_draining_the_ring_under_it() {
    let (t, c) = T::served(2);
    t.g.send(c, &[1u8; 100]).unwrap();
    let mut r = t.g.reserve(c, 5).unwrap();
    r.write_at(0, b"HELLO");
    // The agent sends everything; asking for room now must not rewind the stream under the
    // reservation (its pieces were worked out at the old offsets).
    assert_eq!(t.agent().drain_tx(2), vec![1u8; 100]);
    assert!(t.g.writable(c).unwrap() >= 5);
    r.commit().unwrap();
    assert_eq!(t.agent().drain_tx(2), b"HELLO");
}

#[test]
fn stale_handles_get_ebadf_and_closes_wait_for_held_views() {
    let (mut t, c) = T::served(2);
    t.agent().message(2, b"req\n");
    {
        let evs = t.g.poll(8, Duration::ZERO, Some(Duration::ZERO)).unwrap();
        let g = evs.group();
        let mut n = 0;
        for ev in &evs {
            if let Event::Message { conn, data, .. } = ev {
                g.send(conn, data).unwrap();
                g.close(conn).unwrap();
                // The view is still good: the close waits for the release.
                assert_eq!(data, b"req\n");
                n += 1;
            }
        }
        assert_eq!(n, 1);
        assert_eq!(
            g.send(c, b"x").unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
    }
    assert!(t.agent().take_log().is_empty(), "deferred");
    assert!(t.poll(8).is_empty());
    assert_eq!(ops(&t.agent().take_log()), [(2, OP_CLOSE)]);
    assert_eq!(
        t.agent().take_tx(),
        [2],
        "its bytes marked before the close"
    );
    assert_eq!(
        t.r.sock(2)
            .unwrap()
            .host
            .0
            .waiter_mask
            .load(Ordering::Relaxed),
        0
    );
    // The slot comes back for another connection: the old handle stays dead.
    t.agent().handoff(1, 2, "10.0.0.3:3");
    let ev = t.poll(8);
    let [Ev::Opened(c2, _, 0)] = ev[..] else {
        panic!("{ev:?}")
    };
    assert_eq!(c2.slot(), c.slot());
    assert_ne!(c2, c);
    assert_eq!(t.g.close(c).unwrap_err().raw_os_error(), Some(libc::EBADF));
    assert_eq!(Conn::from_u64(c2.to_u64()), c2);
    t.g.send(c2, b"fine").unwrap();
}

#[test]
fn shutdown_and_abort() {
    let (mut t, c) = T::served(2);
    t.g.send(c, b"bye").unwrap();
    t.g.shutdown(c).unwrap();
    assert_eq!(
        t.g.send(c, b"x").unwrap_err().raw_os_error(),
        Some(libc::EPIPE)
    );
    t.g.abort(c).unwrap();
    t.poll(8);
    let log = t.agent().take_log();
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(
        t.agent().take_tx(),
        [2],
        "the bytes before the shutdown marked"
    );
    assert_eq!(log[0], (2, Request::Shutdown { how: libc::SHUT_WR }));
    let mut linger = [0u8; 8];
    linger[..4].copy_from_slice(&1i32.to_ne_bytes());
    assert_eq!(
        log[1],
        (
            2,
            Request::SetSockOpt {
                level: libc::SOL_SOCKET,
                name: libc::SO_LINGER,
                len: 8,
                val: OptVal::inline(&linger)
            }
        )
    );
    assert_eq!(log[2], (2, Request::Close));
}

#[test]
fn connect_reports_connected_or_the_error() {
    let mut t = T::new();
    let c =
        t.g.connect("10.0.0.2:80".parse().unwrap(), Framing::Http1Response, 4096)
            .unwrap();
    let log = t.agent().take_log();
    assert_eq!(ops(&log).last(), Some(&(1, OP_CONNECT)));
    assert_eq!(
        t.g.send(c, b"x").unwrap_err().raw_os_error(),
        Some(libc::ENOTCONN)
    );
    assert!(t.poll(8).is_empty());
    t.agent().set_flags(1, SF_OPEN | SF_CONNECTED);
    assert_eq!(t.poll(8), [Ev::Connected(c)]);
    assert_eq!(t.g.service(c), None);
    t.g.send(c, b"GET / HTTP/1.1\r\n\r\n").unwrap();

    let c2 =
        t.g.connect("10.0.0.2:81".parse().unwrap(), Framing::Raw, 4096)
            .unwrap();
    t.agent().fail(2, libc::ECONNREFUSED, 0, 0);
    assert_eq!(
        t.poll(8),
        [Ev::Closed(c2, CloseReason::Error(libc::ECONNREFUSED))]
    );

    t.agent().connect = -(libc::ENETUNREACH as i64);
    let e =
        t.g.connect("10.0.0.2:82".parse().unwrap(), Framing::Raw, 4096)
            .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENETUNREACH));
    assert_eq!(t.agent().take_log().last(), Some(&(3, Request::Close)));
}

#[test]
fn a_corrupt_record_kills_the_group() {
    let (mut t, c) = T::served(2);
    {
        let mut a = t.agent();
        a.message(2, b"ok\n");
        // A header whose length runs past the tail.
        let rx = a.r.rx(2).unwrap();
        rx.copy_in(0, &100u32.to_le_bytes());
    }
    let e =
        t.g.poll(8, Duration::ZERO, Some(Duration::ZERO))
            .err()
            .unwrap();
    assert_eq!(e.raw_os_error(), Some(libc::EBADMSG));
    assert_eq!(
        t.g.send(c, b"x").unwrap_err().raw_os_error(),
        Some(libc::EBADMSG)
    );
    assert!(t.g.poll(8, Duration::ZERO, Some(Duration::ZERO)).is_err());
}

#[test]
fn a_dead_agent_fails_calls_and_polls() {
    let (mut t, c) = T::served(2);
    t.r.header().dead.0.store(1, Ordering::Release);
    let e = t.g.poll(8, Duration::ZERO, None).err().unwrap();
    assert_eq!(e.raw_os_error(), Some(libc::ECONNRESET));
    assert_eq!(
        t.g.send(c, b"x").unwrap_err().raw_os_error(),
        Some(libc::ECONNRESET)
    );
}

#[test]
fn a_silent_agent_times_calls_out_and_a_late_socket_is_closed() {
    let mut t = T::new();
    t.g.set_call_timeout(Duration::from_millis(30));
    t.agent().answering = false;
    let e =
        t.g.serve("127.0.0.1:7000".parse().unwrap(), Framing::Raw, 100)
            .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ETIMEDOUT));
    let log = t.agent().take_log();
    assert_eq!(ops(&log), [(0, OP_SOCKET)]);
    // The answer comes late: the group closes the socket nobody waits for.
    {
        let mut a = t.agent();
        a.r.reset_sock(1);
        assert!(a
            .evts
            .push(Evt::completion(1, 0, 1, Payload::None))
            .unwrap());
    }
    assert!(t.poll(8).is_empty());
    assert_eq!(t.agent().take_log(), [(1, Request::Close)]);
}

#[test]
fn the_agent_is_rung_only_when_it_sleeps() {
    let (t, c) = T::served(2);
    let before = t.rings.load(Ordering::Relaxed);
    t.g.send(c, b"a").unwrap();
    t.g.flush().unwrap();
    assert_eq!(
        t.rings.load(Ordering::Relaxed),
        before,
        "agent awake: no doorbell"
    );
    t.r.header().agent.0.sleeping.store(1, Ordering::Release);
    assert_eq!(t.agent().take_tx(), [2]);
    t.g.send(c, b"b").unwrap();
    t.g.flush().unwrap();
    assert_eq!(t.rings.load(Ordering::Relaxed), before + 1);
}

#[test]
fn a_group_moves_between_threads() {
    fn send<T: Send>() {}
    send::<Group>();
}
