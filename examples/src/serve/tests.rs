use super::*;
use std::cell::RefCell;
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct TestConn {
    idx: u32,
    generation: u32,
}

impl ConnId for TestConn {
    fn index(&self) -> u32 {
        self.idx
    }
}

fn conn(idx: u32) -> TestConn {
    TestConn { idx, generation: 0 }
}

/// A TX ring per connection of `cap` bytes: sends are all or nothing, bytes leave when the
/// test drains them (the agent's part), and a send that failed arms a Writable event.
struct FakeTx {
    cap: usize,
    rings: RefCell<HashMap<TestConn, Ring>>,
    /// What `writable` answers is capped at this (simulates an API that reports 0).
    report_cap: usize,
    fail: RefCell<Option<TestConn>>,
}

#[derive(Default)]
struct Ring {
    queued: usize,
    delivered: Vec<u8>,
    armed: bool,
    closed: bool,
    aborted: bool,
    shut: bool,
    sends: usize,
}

impl FakeTx {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            rings: RefCell::default(),
            report_cap: usize::MAX,
            fail: RefCell::default(),
        }
    }

    /// The agent sends up to `n` bytes from the ring: returns whether a Writable event is due.
    fn drain(&self, c: TestConn, n: usize) -> bool {
        let mut rings = self.rings.borrow_mut();
        let r = rings.entry(c).or_default();
        r.queued -= n.min(r.queued);
        std::mem::take(&mut r.armed)
    }

    fn delivered(&self, c: TestConn) -> Vec<u8> {
        let rings = self.rings.borrow();
        rings
            .get(&c)
            .map(|r| r.delivered.clone())
            .unwrap_or_default()
    }

    fn closed(&self, c: TestConn) -> bool {
        self.rings.borrow().get(&c).is_some_and(|r| r.closed)
    }

    fn sends(&self, c: TestConn) -> usize {
        self.rings.borrow().get(&c).map_or(0, |r| r.sends)
    }
}

impl Transmit<TestConn> for FakeTx {
    fn writable(&self, c: TestConn) -> usize {
        let rings = self.rings.borrow();
        let queued = rings.get(&c).map_or(0, |r| r.queued);
        (self.cap - queued).min(self.report_cap)
    }

    fn send_vectored(&self, c: TestConn, bufs: &[IoSlice<'_>]) -> io::Result<()> {
        if *self.fail.borrow() == Some(c) {
            return Err(io::Error::from(io::ErrorKind::NotConnected));
        }
        let mut rings = self.rings.borrow_mut();
        let r = rings.entry(c).or_default();
        assert!(!r.closed, "send after close");
        let n: usize = bufs.iter().map(|b| b.len()).sum();
        if r.queued + n > self.cap {
            r.armed = true;
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        r.queued += n;
        r.sends += 1;
        for b in bufs {
            r.delivered.extend_from_slice(b);
        }
        Ok(())
    }

    fn close(&self, c: TestConn) {
        self.rings.borrow_mut().entry(c).or_default().closed = true;
    }

    fn shutdown(&self, c: TestConn) {
        self.rings.borrow_mut().entry(c).or_default().shut = true;
    }

    fn abort(&self, c: TestConn) {
        let mut rings = self.rings.borrow_mut();
        let r = rings.entry(c).or_default();
        r.closed = true;
        r.aborted = true;
    }
}

/// After its closing reply left, `c` is half-closed, not closed (a lingering close); the
/// peer's close (its `Closed` event) closes it.
fn lingers_then_closes<H: Handler>(d: &mut Driver<TestConn, H>, tx: &FakeTx, c: TestConn) {
    {
        let rings = tx.rings.borrow();
        let r = rings.get(&c).expect("the connection sent");
        assert!(r.shut && !r.closed, "half-closed, not closed");
    }
    d.input(Input::Closed(c));
    d.transmit(tx);
    assert!(tx.closed(c));
    assert_eq!(d.connections(), 0);
}

fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut m = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        m.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        m.extend_from_slice(a);
        m.extend_from_slice(b"\r\n");
    }
    m
}

fn kv_driver() -> Driver<TestConn, Kv> {
    Driver::new(Kv {
        server: Arc::new(Mutex::new(kv::Server::new())),
        now: 0,
    })
}

/// Runs the agent and the loop until nothing moves: drains every ring fully each round.
fn settle<H: Handler>(d: &mut Driver<TestConn, H>, tx: &FakeTx, conns: &[TestConn]) {
    for _ in 0..10_000 {
        d.transmit(tx);
        let mut woke = false;
        for &c in conns {
            if tx.drain(c, usize::MAX) {
                d.input(Input::Writable(c));
                woke = true;
            }
        }
        if !woke {
            d.transmit(tx);
            return;
        }
    }
    panic!("no progress");
}

#[test]
fn pipelined_replies_in_order_in_one_send() {
    let mut d = kv_driver();
    let tx = FakeTx::new(1 << 20);
    let c = conn(3);
    d.input(Input::Opened(c));
    let mut expect = Vec::new();
    for i in 0..16 {
        let k = format!("key:{i}");
        d.input(Input::Message {
            conn: c,
            data: &resp(&[b"SET", k.as_bytes(), b"v"]),
            part: false,
        });
        expect.extend_from_slice(b"+OK\r\n");
    }
    d.input(Input::Message {
        conn: c,
        data: &resp(&[b"GET", b"key:7"]),
        part: false,
    });
    expect.extend_from_slice(b"$1\r\nv\r\n");
    d.transmit(&tx);
    assert_eq!(tx.delivered(c), expect);
    assert_eq!(tx.sends(c), 1);
}

#[test]
fn reply_larger_than_the_ring_goes_in_pieces_and_later_messages_wait() {
    let mut d = kv_driver();
    let tx = FakeTx::new(64 * 1024);
    let c = conn(0);
    d.input(Input::Opened(c));
    let value: Vec<u8> = (0..1 << 20).map(|i| (i % 253) as u8).collect();
    // The 1 MB SET arrives in parts.
    let set = resp(&[b"SET", b"big", &value]);
    let chunks: Vec<&[u8]> = set.chunks(60_000).collect();
    for (i, ch) in chunks.iter().enumerate() {
        d.input(Input::Message {
            conn: c,
            data: ch,
            part: i + 1 < chunks.len(),
        });
    }
    // Three GETs of it and a PING, in one batch, with their buffer overwritten after each
    // input (the RX ring's view ends at the next poll): the backlog must hold copies.
    let mut rx = Vec::new();
    for m in [
        resp(&[b"GET", b"big"]),
        resp(&[b"GET", b"big"]),
        resp(&[b"GET", b"big"]),
        resp(&[b"PING"]),
    ] {
        rx.clear();
        rx.extend_from_slice(&m);
        d.input(Input::Message {
            conn: c,
            data: &rx,
            part: false,
        });
        rx.iter_mut().for_each(|b| *b = b'#');
    }
    d.transmit(&tx);
    assert_eq!(
        tx.delivered(c).len(),
        64 * 1024,
        "one ring's worth, then wait"
    );
    settle(&mut d, &tx, &[c]);
    let mut expect = b"+OK\r\n".to_vec();
    for _ in 0..3 {
        expect.extend_from_slice(b"$1048576\r\n");
        expect.extend_from_slice(&value);
        expect.extend_from_slice(b"\r\n");
    }
    expect.extend_from_slice(b"+PONG\r\n");
    let got = tx.delivered(c);
    assert_eq!(got.len(), expect.len());
    assert!(got == expect);
}

#[test]
fn partial_drains_deliver_every_byte() {
    let mut d = kv_driver();
    let tx = FakeTx::new(1000);
    let c = conn(1);
    d.input(Input::Opened(c));
    let mut expect = Vec::new();
    for i in 0..200 {
        let v = format!("value-{i}-{}", "x".repeat(i * 7));
        d.input(Input::Message {
            conn: c,
            data: &resp(&[b"ECHO", v.as_bytes()]),
            part: false,
        });
        expect.extend_from_slice(format!("${}\r\n{v}\r\n", v.len()).as_bytes());
    }
    for _ in 0..100_000 {
        d.transmit(&tx);
        if tx.drain(c, 333) {
            d.input(Input::Writable(c));
        }
        if tx.delivered(c).len() == expect.len() {
            break;
        }
    }
    assert!(tx.delivered(c) == expect);
}

#[test]
fn zero_writable_probes_and_waits_for_writable() {
    let mut d = kv_driver();
    let mut tx = FakeTx::new(100);
    tx.report_cap = 0;
    let c = conn(2);
    d.input(Input::Opened(c));
    d.input(Input::Message {
        conn: c,
        data: &resp(&[b"ECHO", &[b'a'; 500]]),
        part: false,
    });
    d.transmit(&tx);
    // The probe of PROBE bytes is larger than the ring: refused, which arms Writable.
    assert!(tx.delivered(c).is_empty());
    assert!(tx.drain(c, 0));
    tx.report_cap = usize::MAX;
    d.input(Input::Writable(c));
    settle(&mut d, &tx, &[c]);
    assert_eq!(tx.delivered(c).len(), 500 + 8);
}

#[test]
fn quit_closes_after_the_reply_left_and_ignores_the_rest() {
    let mut d = kv_driver();
    let tx = FakeTx::new(4);
    let c = conn(0);
    d.input(Input::Opened(c));
    d.input(Input::Message {
        conn: c,
        data: &resp(&[b"PING"]),
        part: false,
    });
    d.input(Input::Message {
        conn: c,
        data: &resp(&[b"QUIT"]),
        part: false,
    });
    d.input(Input::Message {
        conn: c,
        data: &resp(&[b"PING"]),
        part: false,
    });
    d.transmit(&tx);
    assert!(!tx.closed(c), "replies still queued");
    settle(&mut d, &tx, &[c]);
    assert_eq!(tx.delivered(c), b"+PONG\r\n+OK\r\n");
    lingers_then_closes(&mut d, &tx, c);
}

#[test]
fn quit_in_the_backlog_closes_too() {
    let mut d = kv_driver();
    let tx = FakeTx::new(1024);
    let c = conn(0);
    d.input(Input::Opened(c));
    d.input(Input::Message {
        conn: c,
        data: &resp(&[b"ECHO", &vec![b'z'; HIGH_WATER]]),
        part: false,
    });
    d.input(Input::Message {
        conn: c,
        data: &resp(&[b"QUIT"]),
        part: false,
    });
    d.input(Input::Message {
        conn: c,
        data: &resp(&[b"PING"]),
        part: false,
    });
    settle(&mut d, &tx, &[c]);
    assert!(tx.delivered(c).ends_with(b"z\r\n+OK\r\n"));
    lingers_then_closes(&mut d, &tx, c);
}

#[test]
fn a_peer_that_half_closed_gets_its_replies_then_the_close() {
    let mut d = kv_driver();
    let tx = FakeTx::new(1024);
    let c = conn(0);
    d.input(Input::Opened(c));
    d.input(Input::Message {
        conn: c,
        data: &resp(&[b"ECHO", &vec![b'y'; HIGH_WATER]]),
        part: false,
    });
    d.input(Input::Message {
        conn: c,
        data: &resp(&[b"PING"]),
        part: false,
    });
    d.input(Input::Closed(c));
    settle(&mut d, &tx, &[c]);
    assert!(tx.delivered(c).ends_with(b"y\r\n+PONG\r\n"));
    assert!(tx.closed(c));
    assert_eq!(d.connections(), 0);
}

#[test]
fn closed_and_stale_connections() {
    let mut d = kv_driver();
    let tx = FakeTx::new(1 << 16);
    let old = conn(5);
    d.input(Input::Opened(old));
    d.input(Input::Closed(old));
    // Nothing left to send: closed (the group's slot freed) at the next transmit.
    d.transmit(&tx);
    assert!(tx.closed(old));
    assert_eq!(d.connections(), 0);
    // Events for a closed connection, or an old one in a reused slot, are ignored.
    d.input(Input::Message {
        conn: old,
        data: &resp(&[b"PING"]),
        part: false,
    });
    let new = TestConn {
        idx: 5,
        generation: 1,
    };
    d.input(Input::Opened(new));
    d.input(Input::Message {
        conn: old,
        data: &resp(&[b"PING"]),
        part: false,
    });
    d.input(Input::Closed(old));
    assert_eq!(d.connections(), 1);
    d.input(Input::Message {
        conn: new,
        data: &resp(&[b"ECHO", b"n"]),
        part: false,
    });
    d.transmit(&tx);
    assert!(tx.delivered(old).is_empty());
    assert_eq!(tx.delivered(new), b"$1\r\nn\r\n");
}

#[test]
fn send_error_drops_the_connection_state() {
    let mut d = kv_driver();
    let tx = FakeTx::new(1 << 16);
    let c = conn(0);
    d.input(Input::Opened(c));
    *tx.fail.borrow_mut() = Some(c);
    d.input(Input::Message {
        conn: c,
        data: &resp(&[b"PING"]),
        part: false,
    });
    d.transmit(&tx);
    assert_eq!(d.connections(), 0);
}

#[test]
fn many_connections_share_one_store() {
    let mut d = kv_driver();
    let tx = FakeTx::new(1 << 16);
    let (a, b) = (conn(0), conn(1));
    d.input(Input::Opened(a));
    d.input(Input::Opened(b));
    d.input(Input::Message {
        conn: a,
        data: &resp(&[b"SET", b"k", b"from-a"]),
        part: false,
    });
    d.input(Input::Message {
        conn: b,
        data: &resp(&[b"GET", b"k"]),
        part: false,
    });
    d.transmit(&tx);
    assert_eq!(tx.delivered(a), b"+OK\r\n");
    assert_eq!(tx.delivered(b), b"$6\r\nfrom-a\r\n");
}

#[test]
fn retry_blocked_recovers_a_lost_wakeup() {
    let mut d = kv_driver();
    let tx = FakeTx::new(10);
    let c = conn(0);
    d.input(Input::Opened(c));
    d.input(Input::Message {
        conn: c,
        data: &resp(&[b"ECHO", b"0123456789abcdef"]),
        part: false,
    });
    d.transmit(&tx);
    let _ = tx.drain(c, usize::MAX); // the Writable event is "lost"
    d.transmit(&tx);
    assert_eq!(tx.delivered(c).len(), 10);
    d.retry_blocked();
    d.transmit(&tx);
    assert_eq!(tx.delivered(c).len(), 20);
    settle(&mut d, &tx, &[c]);
    assert_eq!(tx.delivered(c), b"$16\r\n0123456789abcdef\r\n");
}

struct Root(std::path::PathBuf);
impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn http_large_file_and_close() {
    let root =
        Root(std::env::temp_dir().join(format!("snstack-serve-http-{}", std::process::id())));
    std::fs::create_dir_all(&root.0).unwrap();
    let file: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(root.0.join("f.bin"), &file).unwrap();
    let server = http::Server::new(Some(&root.0), http::DEFAULT_CACHE_BYTES).unwrap();
    let mut d = Driver::new(Http {
        server,
        date: http::http_date(0),
    });
    let tx = FakeTx::new(256 * 1024);
    let c = conn(9);
    d.input(Input::Opened(c));
    d.input(Input::Message {
        conn: c,
        data: b"GET /f.bin HTTP/1.1\r\nHost: a\r\n\r\n",
        part: false,
    });
    d.input(Input::Message {
        conn: c,
        data: b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n",
        part: false,
    });
    d.input(Input::Message {
        conn: c,
        data: b"HEAD /f.bin HTTP/1.0\r\n\r\n",
        part: false,
    });
    d.input(Input::Message {
        conn: c,
        data: b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n",
        part: false,
    });
    settle(&mut d, &tx, &[c]);
    let got = tx.delivered(c);
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = std::str::from_utf8(&got[..head_end]).unwrap();
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("Content-Length: 3000000\r\n")
    );
    assert!(got[head_end..head_end + file.len()] == file[..]);
    let rest = std::str::from_utf8(&got[head_end + file.len()..]).unwrap();
    assert_eq!(
        rest.matches("HTTP/1.1 200 OK").count(),
        2,
        "the HEAD closes: the last request is not answered"
    );
    assert!(rest.ends_with("Connection: close\r\n\r\n"), "{rest}");
    assert!(rest.contains(std::str::from_utf8(http::HELLO).unwrap()));
    lingers_then_closes(&mut d, &tx, c);
}

#[test]
fn a_client_that_never_reads_is_reset_past_the_backlog_limit() {
    let mut d = kv_driver();
    let tx = FakeTx::new(64 * 1024);
    let c = conn(1);
    d.input(Input::Opened(c));
    let big = resp(&[b"ECHO", &vec![b'q'; 64 * 1024]]);
    let mut n = 0;
    // Nobody drains the ring: replies pile up to HIGH_WATER, then requests to the limit.
    while !tx.rings.borrow().get(&c).is_some_and(|r| r.aborted) {
        d.input(Input::Message {
            conn: c,
            data: &big,
            part: false,
        });
        d.transmit(&tx);
        n += 1;
        assert!(n < 200, "never reset");
    }
    assert!(n * big.len() > BACKLOG_LIMIT);
    assert_eq!(d.connections(), 0);
}

#[test]
fn idle_connections_are_reset() {
    let mut d = kv_driver();
    let tx = FakeTx::new(1 << 16);
    let (a, b) = (conn(1), conn(2));
    d.set_now(1000);
    d.input(Input::Opened(a));
    d.input(Input::Opened(b));
    d.set_now(50_000);
    d.input(Input::Message {
        conn: b,
        data: &resp(&[b"PING"]),
        part: false,
    });
    settle(&mut d, &tx, &[a, b]);
    d.set_now(61_000);
    assert_eq!(d.expire_idle(60_000), 1);
    d.transmit(&tx);
    assert!(tx.rings.borrow().get(&a).is_some_and(|r| r.aborted));
    assert!(!tx.closed(b));
    assert_eq!(d.connections(), 1);
}

#[test]
fn a_peer_that_never_closes_after_quit_is_reset_after_the_linger_time() {
    let mut d = kv_driver();
    let tx = FakeTx::new(1 << 16);
    let c = conn(4);
    d.set_now(10);
    d.input(Input::Opened(c));
    d.input(Input::Message {
        conn: c,
        data: &resp(&[b"QUIT"]),
        part: false,
    });
    settle(&mut d, &tx, &[c]);
    assert!(tx.rings.borrow()[&c].shut);
    d.set_now(10 + LINGER_MS - 1);
    assert_eq!(d.expire_idle(u64::MAX), 0);
    d.set_now(10 + LINGER_MS);
    assert_eq!(d.expire_idle(u64::MAX), 1);
    d.transmit(&tx);
    assert!(tx.rings.borrow()[&c].aborted);
    assert_eq!(d.connections(), 0);
}
