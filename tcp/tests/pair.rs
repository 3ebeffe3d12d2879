//! Two stacks joined by a simulated link (delay, loss, reordering) at virtual time: handshakes,
//! bulk transfers under loss, closes, resets, listener overflow with SYN cookies.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use core::time::Duration;
use snstack_tcp::cc::bbr::Mode;
use snstack_tcp::cc::CcAlgo;
use snstack_tcp::stack::{SockId, SockOpt, Stack, StackConfig};
use snstack_tcp::{Instant, RxMeta};

const A_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

struct Link {
    /// (due, to_b, frame)
    q: VecDeque<(Instant, bool, Vec<u8>)>,
    delay: Duration,
    loss_ppm: u32,
    reorder_ppm: u32,
    rng: u64,
    dropped: u64,
    sent: u64,
    /// Bottleneck rate in bytes per second, each way (0: unlimited).
    rate: u64,
    /// When the bottleneck of each direction (to B, to A) is free again, in nanoseconds.
    busy: [u64; 2],
    /// Frames to A are held and released together at multiples of this (ACK compression).
    ack_batch: Duration,
    /// Drop A's data frame with this index (counted from 0), and every later frame carrying
    /// the same sequence number, up to `drop_again` of them (its retransmissions).
    drop_data_frame: Option<u64>,
    drop_again: u32,
    data_frames: u64,
    dropped_seq: Option<u32>,
    /// Every frame to A sent in this window is lost (a run of lost ACKs).
    blackout_to_a: Option<(Instant, Instant)>,
}

impl Link {
    fn rand(&mut self) -> u32 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x % 1_000_000) as u32
    }
    /// Whether the targeted drop (`drop_data_frame`) takes this frame.
    fn targeted(&mut self, to_b: bool, f: &[u8]) -> bool {
        if !to_b || f.len() <= 100 || self.drop_data_frame.is_none() {
            return false;
        }
        // Ethernet (14) + IPv4 without options (20): the TCP sequence number at 38.
        let seq = u32::from_be_bytes([f[38], f[39], f[40], f[41]]);
        let i = self.data_frames;
        self.data_frames += 1;
        if Some(i) == self.drop_data_frame {
            self.dropped_seq = Some(seq);
            return true;
        }
        if self.dropped_seq == Some(seq) && self.drop_again > 0 {
            self.drop_again -= 1;
            return true;
        }
        false
    }

    fn push(&mut self, now: Instant, to_b: bool, f: Vec<u8>) {
        self.sent += 1;
        let blackout = self
            .blackout_to_a
            .is_some_and(|(s, e)| !to_b && now >= s && now < e);
        if blackout || self.targeted(to_b, &f) {
            self.dropped += 1;
            return;
        }
        if self.rand() < self.loss_ppm {
            self.dropped += 1;
            return;
        }
        let mut due = now + self.delay;
        if let Some(ns) = (f.len() as u64 * 1_000_000_000).checked_div(self.rate) {
            // Serialization at the bottleneck, queued behind what is still being sent (kept
            // in nanoseconds: an MTU frame takes about a microsecond at 1.5 GB/s).
            let b = &mut self.busy[usize::from(!to_b)];
            let done = (*b).max(now.as_micros() * 1000) + ns;
            *b = done;
            due = Instant::from_micros(done.div_ceil(1000)) + self.delay;
        }
        if self.rand() < self.reorder_ppm {
            due = due + self.delay / 2 + Duration::from_micros(200);
        }
        if !to_b && !self.ack_batch.is_zero() {
            let b = self.ack_batch.as_micros() as u64;
            due = Instant::from_micros(due.as_micros().div_ceil(b) * b);
        }
        // Keep the queue sorted by due time (reordered frames overtake nothing before them).
        let pos = self
            .q
            .iter()
            .rposition(|(d, _, _)| *d <= due)
            .map_or(0, |p| p + 1);
        self.q.insert(pos, (due, to_b, f));
    }
}

struct Net {
    a: Stack,
    b: Stack,
    link: Link,
    now: Instant,
    /// Departure times and sizes of A's frames, when recorded.
    departures: Option<Vec<(Instant, usize)>>,
    /// Bytes B's application has (by `recv` or the direct path), checked against `pattern`.
    rx_got: usize,
    /// B's frames go through `handle_frame_into` with a sink that takes at most this many bytes
    /// per offer (the application's buffer), when set.
    direct_cap: Option<usize>,
    /// Bytes the sink took.
    direct_taken: usize,
    /// A's application stream when A's connection sends from it (snstack_tcp::source).
    lent: Option<LentRing>,
}

/// A's application TX stream for the lent path: a ring with free-running indices, like the
/// agent's channel TX stream. Freed bytes are overwritten with garbage at once, so a segment
/// read from anything but the unacknowledged range corrupts the stream B checks.
struct LentRing {
    buf: Vec<u8>,
    head: u32,
    tail: u32,
    /// Position in the pattern of the byte at `tail`.
    written: usize,
}

impl LentRing {
    fn new(size: usize) -> LentRing {
        LentRing {
            buf: vec![0xEE; size],
            head: 0x7fff_0000 - 1000,
            tail: 0x7fff_0000 - 1000,
            written: 0,
        }
    }
    fn mask(&self, i: u32) -> usize {
        i as usize & (self.buf.len() - 1)
    }
    /// Appends up to `n` pattern bytes that fit; returns how many.
    fn fill(&mut self, n: usize) -> usize {
        let room = self.buf.len() - self.tail.wrapping_sub(self.head) as usize;
        let k = n.min(room);
        for j in 0..k {
            let at = self.mask(self.tail.wrapping_add(j as u32));
            self.buf[at] = pattern(self.written + j);
        }
        self.tail = self.tail.wrapping_add(k as u32);
        self.written += k;
        k
    }
    fn free(&mut self, n: u32) {
        assert!(
            n <= self.tail.wrapping_sub(self.head),
            "acked more than lent"
        );
        for j in 0..n {
            let at = self.mask(self.head.wrapping_add(j));
            self.buf[at] = 0xEE;
        }
        self.head = self.head.wrapping_add(n);
    }
}

impl snstack_tcp::TxSource for LentRing {
    fn copy_tx(&self, _id: SockId, index: u32, out: &mut [u8]) -> bool {
        let off = index.wrapping_sub(self.head) as usize;
        assert!(
            off + out.len() <= self.tail.wrapping_sub(self.head) as usize,
            "read beyond the lent range"
        );
        for (j, b) in out.iter_mut().enumerate() {
            *b = self.buf[self.mask(index.wrapping_add(j as u32))];
        }
        true
    }
}

/// B's application buffer for the direct receive path: checks and counts what it takes.
struct DirectSink<'a> {
    got: &'a mut usize,
    taken: &'a mut usize,
    cap: usize,
}

impl snstack_tcp::RxSink for DirectSink<'_> {
    fn deliver(&mut self, _token: u64, data: &[u8]) -> usize {
        let n = data.len().min(self.cap);
        for (j, b) in data[..n].iter().enumerate() {
            assert_eq!(
                *b,
                pattern(*self.got + j),
                "byte {} corrupted (direct)",
                *self.got + j
            );
        }
        *self.got += n;
        *self.taken += n;
        n
    }
}

fn cfg(ip: Ipv4Addr, mac: u8) -> StackConfig {
    let mut c = StackConfig::new([2, 0, 0, 0, 0, mac]);
    c.ipv4 = Some((ip, 24));
    c.seed = u64::from(mac) * 7919;
    c
}

impl Net {
    fn new(delay: Duration, loss_ppm: u32, reorder_ppm: u32) -> Net {
        Net {
            a: Stack::new(cfg(A_IP, 1), Instant::ZERO),
            b: Stack::new(cfg(B_IP, 2), Instant::ZERO),
            link: Link {
                q: VecDeque::new(),
                delay,
                loss_ppm,
                reorder_ppm,
                rng: 0x1234_5678_9abc_def1,
                dropped: 0,
                sent: 0,
                rate: 0,
                busy: [0; 2],
                ack_batch: Duration::ZERO,
                drop_data_frame: None,
                drop_again: 0,
                data_frames: 0,
                dropped_seq: None,
                blackout_to_a: None,
            },
            now: Instant::ZERO,
            departures: None,
            rx_got: 0,
            direct_cap: None,
            direct_taken: 0,
            lent: None,
        }
    }

    /// Both stacks default to congestion control `cc`.
    fn with_cc(delay: Duration, loss_ppm: u32, reorder_ppm: u32, cc: CcAlgo) -> Net {
        let mut ca = cfg(A_IP, 1);
        let mut cb = cfg(B_IP, 2);
        ca.congestion = cc;
        cb.congestion = cc;
        let mut n = Net::new(delay, loss_ppm, reorder_ppm);
        n.a = Stack::new(ca, Instant::ZERO);
        n.b = Stack::new(cb, Instant::ZERO);
        n
    }

    fn pump_out(&mut self) {
        let now = self.now;
        match &self.lent {
            Some(r) => self.a.poll_transmit_from(now, r),
            None => self.a.poll_transmit(now),
        }
        while let Some(f) = self.a.frames().pop_front() {
            if let Some(d) = &mut self.departures {
                d.push((now, f.buf.len()));
            }
            self.link.push(now, true, f.buf);
        }
        self.b.poll_transmit(now);
        while let Some(f) = self.b.frames().pop_front() {
            self.link.push(now, false, f.buf);
        }
    }

    /// Advances to the next event (frame due or timer) no later than `limit`.
    fn step(&mut self, limit: Instant) {
        self.pump_out();
        let mut next = limit;
        if let Some((d, _, _)) = self.link.q.front() {
            next = next.min(*d);
        }
        for t in [self.a.next_timeout(), self.b.next_timeout()]
            .into_iter()
            .flatten()
        {
            next = next.min(t.max(self.now));
        }
        self.now = self.now.max(next);
        let now = self.now;
        while self.link.q.front().is_some_and(|(d, _, _)| *d <= now) {
            let (_, to_b, f) = self.link.q.pop_front().unwrap();
            if to_b {
                if let Some(cap) = self.direct_cap {
                    let mut sink = DirectSink {
                        got: &mut self.rx_got,
                        taken: &mut self.direct_taken,
                        cap,
                    };
                    self.b
                        .handle_frame_into(now, &f, RxMeta::default(), &mut sink);
                } else {
                    self.b.handle_frame(now, &f, RxMeta::default());
                }
            } else {
                self.a.handle_frame(now, &f, RxMeta::default());
            }
        }
        self.a.handle_timeout(now);
        self.b.handle_timeout(now);
        self.pump_out();
    }

    fn run_until(&mut self, limit: Instant, mut done: impl FnMut(&mut Net) -> bool) -> bool {
        while self.now < limit {
            if done(self) {
                return true;
            }
            self.step(limit);
        }
        done(self)
    }
}

fn drain_events(s: &mut Stack) {
    while s.poll_event().is_some() {}
}

/// Server listening on B:80, client on A connects; returns (client, server-side accepted).
fn connect(net: &mut Net) -> (SockId, SockId) {
    let l = net.b.socket(false).unwrap();
    net.b
        .bind(l, SocketAddr::new(IpAddr::V4(B_IP), 80))
        .unwrap();
    net.b.listen(l, 128).unwrap();
    connect_to(net, l)
}

/// A client on A connects to listener `l` of B (port 80).
fn connect_to(net: &mut Net, l: SockId) -> (SockId, SockId) {
    let c = net.a.socket(false).unwrap();
    assert_eq!(
        net.a.connect(c, SocketAddr::new(IpAddr::V4(B_IP), 80)),
        Err(115)
    );
    let mut acc = None;
    let deadline = net.now + Duration::from_secs(30);
    let ok = net.run_until(deadline, |n| {
        if acc.is_none() {
            if let Ok((s, _)) = n.b.accept(l) {
                acc = Some(s);
            }
        }
        acc.is_some() && n.a.connect_result(c) == Ok(true)
    });
    assert!(ok, "handshake did not complete");
    drain_events(&mut net.a);
    drain_events(&mut net.b);
    (c, acc.unwrap())
}

fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 9)) as u8
}

/// One round of a bulk transfer without checking the bytes: A sends from `chunk` until its
/// buffer is full or `total` went, B reads all it has.
#[allow(clippy::too_many_arguments)]
fn move_bytes(
    net: &mut Net,
    c: SockId,
    s: SockId,
    chunk: &[u8],
    buf: &mut [u8],
    total: usize,
    sent: &mut usize,
    got: &mut usize,
) {
    while *sent < total {
        match net.a.send(c, &[&chunk[..(total - *sent).min(chunk.len())]]) {
            Ok(w) => *sent += w,
            Err(_) => break,
        }
    }
    while let Ok(r) = net.b.recv(s, &mut [&mut buf[..]]) {
        if r == 0 {
            break;
        }
        *got += r;
    }
}

/// A sends pattern bytes from `*sent` on until its buffer is full or `total` went.
fn send_pattern(a: &mut Stack, c: SockId, chunk: &mut [u8], sent: &mut usize, total: usize) {
    while *sent < total {
        let k = chunk.len().min(total - *sent);
        for (j, b) in chunk[..k].iter_mut().enumerate() {
            *b = pattern(*sent + j);
        }
        match a.send(c, &[&chunk[..k]]) {
            Ok(w) => *sent += w,
            Err(11) => break,
            Err(e) => panic!("send: errno {e}"),
        }
    }
}

/// Sends `total` bytes from A to B; returns the virtual time it took.
fn transfer(net: &mut Net, c: SockId, s: SockId, total: usize, limit: Duration) -> Duration {
    let start = net.now;
    let mut sent = 0usize;
    net.rx_got = 0;
    let mut buf = vec![0u8; 65536];
    let mut chunk = vec![0u8; 65536];
    let deadline = start + limit;
    let ok = net.run_until(deadline, |n| {
        send_pattern(&mut n.a, c, &mut chunk, &mut sent, total);
        loop {
            match n.b.recv(s, &mut [&mut buf[..]]) {
                Ok(0) => break,
                Ok(r) => {
                    for (j, b) in buf[..r].iter().enumerate() {
                        assert_eq!(*b, pattern(n.rx_got + j), "byte {} corrupted", n.rx_got + j);
                    }
                    n.rx_got += r;
                }
                Err(11) => break,
                Err(e) => panic!("recv: errno {e}"),
            }
        }
        drain_events(&mut n.a);
        drain_events(&mut n.b);
        n.rx_got == total
    });
    assert!(
        ok,
        "transfer stalled: {} of {total} bytes after {limit:?}",
        net.rx_got
    );
    net.now - start
}

#[test]
fn handshake_and_small_exchange() {
    let mut net = Net::new(Duration::from_millis(1), 0, 0);
    let (c, s) = connect(&mut net);
    assert_eq!(net.a.send(c, &[b"hello"]), Ok(5));
    let mut buf = [0u8; 16];
    let ok = net.run_until(net.now + Duration::from_secs(1), |n| {
        n.b.tcb(s).unwrap().readable() == 5
    });
    assert!(ok);
    assert_eq!(net.b.recv(s, &mut [&mut buf[..]]), Ok(5));
    assert_eq!(&buf[..5], b"hello");
    let t = net.a.tcb(c).unwrap();
    assert_eq!(t.mss(), 1460 - 12, "timestamps take 12 bytes of the MSS");
}

#[test]
fn bulk_clean_link() {
    let mut net = Net::new(Duration::from_micros(500), 0, 0);
    let (c, s) = connect(&mut net);
    let d = transfer(&mut net, c, s, 20 << 20, Duration::from_secs(60));
    let rate = (20u64 << 20) as f64 / d.as_secs_f64() / 1e6;
    eprintln!("clean: 20 MiB in {d:?} ({rate:.0} MB/s virtual)");
    assert_eq!(net.a.tcb(c).unwrap().stats.retrans_segs, 0);
}

#[test]
fn bulk_one_percent_loss_and_reordering() {
    let mut net = Net::new(Duration::from_millis(2), 10_000, 10_000);
    let (c, s) = connect(&mut net);
    let d = transfer(&mut net, c, s, 20 << 20, Duration::from_secs(600));
    let st = net.a.tcb(c).unwrap().stats;
    let rate = (20u64 << 20) as f64 / d.as_secs_f64() / 1e6;
    eprintln!(
        "1% loss + reorder, 4 ms RTT: 20 MiB in {d:?} ({rate:.1} MB/s); {st:?}; dropped {} of {}",
        net.link.dropped, net.link.sent
    );
    assert!(st.rtos < 20, "recovery should rarely need the RTO: {st:?}");
}

#[test]
fn close_both_ways_and_time_wait() {
    let mut net = Net::new(Duration::from_millis(1), 0, 0);
    let (c, s) = connect(&mut net);
    net.a.shutdown(c, false, true).unwrap();
    let mut buf = [0u8; 8];
    let ok = net.run_until(net.now + Duration::from_secs(1), |n| {
        n.b.recv(s, &mut [&mut buf[..]]) == Ok(0)
    });
    assert!(ok, "server sees EOF");
    net.b.close(s);
    net.a.close(c);
    let ok = net.run_until(net.now + Duration::from_secs(2), |n| {
        n.b.socket_count() == 1
    });
    assert!(ok, "server side freed after LAST-ACK");
    // The client is in TIME-WAIT for 60 s, then gone.
    assert_eq!(net.a.socket_count(), 1);
    let ok = net.run_until(net.now + Duration::from_secs(70), |n| {
        n.a.socket_count() == 0
    });
    assert!(ok, "TIME-WAIT ended");
}

#[test]
fn connect_refused_and_close_with_unread_data_resets() {
    let mut net = Net::new(Duration::from_millis(1), 0, 0);
    let c = net.a.socket(false).unwrap();
    net.a
        .connect(c, SocketAddr::new(IpAddr::V4(B_IP), 81))
        .unwrap_err();
    let ok = net.run_until(net.now + Duration::from_secs(2), |n| {
        n.a.connect_result(c) != Ok(false)
    });
    assert!(ok);
    assert_eq!(net.a.connect_result(c), Err(111));
    let (c, s) = connect(&mut net);
    assert_eq!(net.a.send(c, &[b"unread"]), Ok(6));
    net.run_until(net.now + Duration::from_millis(100), |_| false);
    net.b.close(s);
    let mut buf = [0u8; 8];
    let ok = net.run_until(net.now + Duration::from_secs(1), |n| {
        n.a.recv(c, &mut [&mut buf[..]]) == Err(104)
    });
    assert!(ok, "client sees ECONNRESET");
}

#[test]
fn syn_flood_past_backlog_uses_cookies() {
    let mut net = Net::new(Duration::from_millis(1), 0, 0);
    let l = net.b.socket(false).unwrap();
    net.b
        .bind(l, SocketAddr::new(IpAddr::V4(B_IP), 80))
        .unwrap();
    net.b.listen(l, 8).unwrap();
    // 8 half-open connections fill the SYN queue only if the handshake cannot finish: open 20
    // at once; the accept queue bounds at 8, the rest wait for accept() and retry.
    let mut cs = Vec::new();
    for _ in 0..20 {
        let c = net.a.socket(false).unwrap();
        net.a
            .connect(c, SocketAddr::new(IpAddr::V4(B_IP), 80))
            .unwrap_err();
        cs.push(c);
    }
    // Like Linux, a cookie ACK that finds the accept queue full is dropped; the client, which
    // believes it is connected, retransmits its first data and the cookie is checked again.
    let mut accepted = Vec::new();
    let mut said = vec![false; cs.len()];
    let ok = net.run_until(net.now + Duration::from_secs(30), |n| {
        while let Ok((s, _)) = n.b.accept(l) {
            accepted.push(s);
        }
        for (i, &c) in cs.iter().enumerate() {
            if !said[i] && n.a.connect_result(c) == Ok(true) {
                said[i] = n.a.send(c, &[b"x"]) == Ok(1);
            }
        }
        drain_events(&mut n.a);
        drain_events(&mut n.b);
        accepted.len() == 20
            && accepted
                .iter()
                .all(|&s| n.b.tcb(s).is_some_and(|t| t.readable() == 1))
    });
    let accepted = accepted.len();
    assert!(ok, "accepted {accepted} of 20; stats {:?}", net.b.stats);
    eprintln!("stats {:?}", net.b.stats);
}

#[test]
fn dbg_small_bulk() {
    let mut net = Net::new(Duration::from_micros(500), 0, 0);
    let (c, s) = connect(&mut net);
    let mut steps = 0u64;
    let mut data = vec![7u8; 100_000];
    let w = net.a.send(c, &[&data[..]]).unwrap();
    eprintln!("wrote {w}");
    let mut got = 0;
    while steps < 2000 && got < w {
        net.step(net.now + Duration::from_secs(1));
        steps += 1;
        if let Ok(n) = net.b.recv(s, &mut [&mut data[..]]) {
            got += n;
        }
        if steps % 100 == 0 || steps < 30 {
            let t = net.a.tcb(c).unwrap();
            eprintln!(
                "step {steps} now {:?} got {got} q {} cwnd {} next {:?}/{:?} linkq {}",
                net.now,
                t.send_queue(),
                t.cwnd(),
                net.a.next_timeout(),
                net.b.next_timeout(),
                net.link.q.len()
            );
        }
    }
}

#[test]
fn ten_thousand_idle_connections_memory() {
    let mut net = Net::new(Duration::from_micros(100), 0, 0);
    let l = net.b.socket(false).unwrap();
    net.b
        .bind(l, SocketAddr::new(IpAddr::V4(B_IP), 80))
        .unwrap();
    net.b.listen(l, 4096).unwrap();
    let count = 10_000;
    let mut cs = Vec::new();
    let mut acc = Vec::new();
    for k in 0..count {
        let c = net.a.socket(false).unwrap();
        net.a
            .connect(c, SocketAddr::new(IpAddr::V4(B_IP), 80))
            .unwrap_err();
        cs.push(c);
        if k % 500 == 499 {
            net.run_until(net.now + Duration::from_millis(20), |n| {
                while let Ok((s, _)) = n.b.accept(l) {
                    acc.push(s);
                }
                false
            });
        }
    }
    let ok = net.run_until(net.now + Duration::from_secs(30), |n| {
        while let Ok((s, _)) = n.b.accept(l) {
            acc.push(s);
        }
        drain_events(&mut n.a);
        drain_events(&mut n.b);
        acc.len() == count
    });
    assert!(ok, "accepted {} of {count}", acc.len());
    // One request/response on each, then idle.
    let mut buf = [0u8; 64];
    for &c in &cs {
        assert_eq!(net.a.send(c, &[b"GET / HTTP/1.1\r\n\r\n"]), Ok(18));
    }
    net.run_until(net.now + Duration::from_millis(200), |_| false);
    for &s in &acc {
        assert_eq!(net.b.recv(s, &mut [&mut buf[..]]), Ok(18));
        assert_eq!(net.b.send(s, &[b"HTTP/1.1 200 OK\r\n\r\n"]), Ok(19));
    }
    net.run_until(net.now + Duration::from_secs(2), |_| false);
    net.b.trim();
    let mem = net.b.memory();
    eprintln!(
        "{count} idle established connections: {} bytes of engine state ({} per connection)",
        mem,
        mem / count
    );
    assert!(
        mem / count < 2048,
        "per-connection memory {} bytes",
        mem / count
    );
}

#[test]
fn server_close_leaves_compact_time_wait() {
    let mut net = Net::new(Duration::from_millis(1), 0, 0);
    let l = net.b.socket(false).unwrap();
    net.b
        .bind(l, SocketAddr::new(IpAddr::V4(B_IP), 80))
        .unwrap();
    net.b.listen(l, 128).unwrap();
    let mut pairs = Vec::new();
    for _ in 0..50 {
        pairs.push(connect_to(&mut net, l));
    }
    // The server closes first (HTTP `Connection: close`): its side enters TIME-WAIT.
    for &(_, s) in &pairs {
        net.b.close(s);
    }
    net.run_until(net.now + Duration::from_millis(50), |_| false);
    for &(c, _) in &pairs {
        let mut buf = [0u8; 4];
        assert_eq!(net.a.recv(c, &mut [&mut buf[..]]), Ok(0));
        net.a.close(c);
    }
    net.run_until(net.now + Duration::from_secs(1), |_| false);
    assert_eq!(net.b.stats.time_wait, 50, "{:?}", net.b.stats);
    assert_eq!(net.b.stats.conns, 0);
    // A retransmitted FIN from the client is re-ACKed by the compact entry.
    let ok = net.run_until(net.now + Duration::from_secs(61), |n| {
        n.b.stats.time_wait == 0
    });
    assert!(ok, "TIME-WAIT entries expire: {:?}", net.b.stats);
    assert_eq!(net.b.socket_count(), 1, "only the listener is left");
}

#[test]
fn reordering_without_loss_is_undone() {
    let mut net = Net::new(Duration::from_millis(2), 0, 20_000);
    let (c, s) = connect(&mut net);
    let d = transfer(&mut net, c, s, 8 << 20, Duration::from_secs(120));
    let st = net.a.tcb(c).unwrap().stats;
    eprintln!("2% reordering, no loss: 8 MiB in {d:?}; {st:?}");
    assert_eq!(st.rtos, 0);
    // Every spurious recovery that a DSACK proved spurious is undone.
    assert!(st.fast_recoveries == 0 || st.undos > 0, "{st:?}");
}

#[test]
fn bulk_one_percent_loss_short_rtt() {
    let mut net = Net::new(Duration::from_micros(25), 10_000, 0);
    let (c, s) = connect(&mut net);
    let d = transfer(&mut net, c, s, 50 << 20, Duration::from_secs(600));
    let st = net.a.tcb(c).unwrap().stats;
    let rate = (50u64 << 20) as f64 / d.as_secs_f64() / 1e6;
    eprintln!("1% loss, 50 us RTT: 50 MiB in {d:?} ({rate:.1} MB/s); {st:?}");
}

#[test]
#[ignore = "diagnostic timeline, run by hand"]
fn dbg_timeline_short_rtt() {
    let mut net = Net::new(Duration::from_micros(25), 10_000, 0);
    let (c, s) = connect(&mut net);
    let total = 20usize << 20;
    let mut sent = 0usize;
    let mut got = 0usize;
    let mut buf = vec![0u8; 65536];
    let chunk = vec![1u8; 65536];
    let start = net.now;
    let mut last_print = start;
    let mut last_acked = 0u64;
    while got < total && net.now < start + Duration::from_secs(20) {
        move_bytes(&mut net, c, s, &chunk, &mut buf, total, &mut sent, &mut got);
        while net.a.poll_event().is_some() {}
        while net.b.poll_event().is_some() {}
        net.step(net.now + Duration::from_secs(1));
        if std::env::var("TRACE").is_ok()
            && net.now - start > Duration::from_millis(40)
            && net.now - start < Duration::from_millis(60)
        {
            let t = net.a.tcb(c).unwrap();
            let r = net.b.tcb(s).unwrap();
            eprintln!(
                "  {:>6}us acked {} cwnd {} pipe? rec {} next_a {:?} next_b {:?} a_deadline {:?} b_deadline {:?} b_readable {} linkq {}",
                (net.now - start).as_micros(),
                t.stats.bytes_acked,
                t.cwnd(),
                t.in_recovery(),
                net.a.next_timeout().map(|x| x.as_micros()),
                net.b.next_timeout().map(|x| x.as_micros()),
                t.next_deadline().map(|x| x.as_micros()),
                r.next_deadline().map(|x| x.as_micros()),
                r.readable(),
                net.link.q.len()
            );
        }
        if net.now - last_print >= Duration::from_millis(5) {
            let t = net.a.tcb(c).unwrap();
            let acked = t.stats.bytes_acked;
            eprintln!(
                "t={:>6}us acked+{:>8} cwnd {:>7} ssth {:>10} rec {} q {:>7} st {:?} rto {:?}",
                (net.now - start).as_micros(),
                acked - last_acked,
                t.cwnd(),
                t.ssthresh(),
                t.in_recovery(),
                t.send_queue(),
                t.stats,
                t.rto()
            );
            last_acked = acked;
            last_print = net.now;
        }
    }
}

/// Goodput of `total` bytes A to B at 1 % random loss each way, 4 ms RTT, with `cc`.
fn lossy_goodput(cc: CcAlgo, total: usize) -> (f64, snstack_tcp::conn::ConnStats) {
    let mut net = Net::with_cc(Duration::from_millis(2), 10_000, 0, cc);
    let (c, s) = connect(&mut net);
    assert_eq!(net.a.tcb(c).unwrap().congestion(), cc);
    let d = transfer(&mut net, c, s, total, Duration::from_secs(600));
    let st = net.a.tcb(c).unwrap().stats;
    let rate = total as f64 / d.as_secs_f64() / 1e6;
    eprintln!(
        "{}: 1% loss each way, 4 ms RTT: {total} bytes in {d:?} ({rate:.1} MB/s); {st:?}; dropped {} of {}",
        cc.name(),
        net.link.dropped,
        net.link.sent
    );
    (rate, st)
}

#[test]
fn bbr_holds_its_rate_under_random_loss() {
    let total = 8 << 20;
    let (cubic, _) = lossy_goodput(CcAlgo::Cubic, total);
    let (bbr, st) = lossy_goodput(CcAlgo::Bbr, total);
    assert!(
        bbr >= 3.0 * cubic,
        "BBR {bbr:.1} MB/s vs CUBIC {cubic:.1} MB/s at 1% loss"
    );
    assert!(st.retrans_segs > 0, "the link did lose segments");
    // The receiver ACKs each out-of-order segment as it arrives (not one ACK per burst), so
    // its SACK blocks cover every hole and RACK retransmits about what was lost (1 %), not
    // segments whose SACK blocks no ACK had room for.
    let ratio = st.retrans_segs as f64 / st.segs_out as f64;
    assert!(
        ratio < 0.02,
        "{:.1} % of segments retransmitted",
        ratio * 100.0
    );
}

/// A's data frames (longer than a bare header) after `from`: (time, frame length).
fn data_departures(net: &Net, from: Instant) -> Vec<(Instant, usize)> {
    net.departures
        .as_ref()
        .unwrap()
        .iter()
        .filter(|(t, len)| *t >= from && *len > 100)
        .copied()
        .collect()
}

#[test]
fn bbr_paces_segments_at_its_rate() {
    // A 1 MB/s bottleneck, 10 ms RTT, ACKs released in batches every 5 ms: BBR estimates
    // about 1 MB/s and paces one 1514-byte frame about every 1.5 ms (no TSO here: one MSS per
    // frame) instead of answering each batch of ACKs with a burst.
    let mut net = Net::with_cc(Duration::from_millis(5), 0, 0, CcAlgo::Bbr);
    net.link.rate = 1_000_000;
    net.link.ack_batch = Duration::from_millis(5);
    let (c, s) = connect(&mut net);
    let total = 3 << 20;
    let mut sent = 0usize;
    let chunk = vec![0x5au8; 65536];
    let mut buf = vec![0u8; 65536];
    let mut got = 0usize;
    let mut pacing = Vec::new();
    let start = net.now;
    net.departures = Some(Vec::new());
    while got < total && net.now < start + Duration::from_secs(20) {
        move_bytes(&mut net, c, s, &chunk, &mut buf, total, &mut sent, &mut got);
        drain_events(&mut net.a);
        drain_events(&mut net.b);
        let t = net.a.tcb(c).unwrap();
        if let (Some(rate), Some(b)) = (t.pacing_rate(), t.bbr()) {
            pacing.push((net.now, rate, b.mode()));
        }
        net.step(net.now + Duration::from_secs(1));
    }
    assert_eq!(got, total);
    let t = net.a.tcb(c).unwrap();
    let bw = t.bbr().unwrap().bw();
    assert!((900_000..=1_010_000).contains(&bw), "bw estimate {bw}");
    // From 1 s on (PROBE_BW), each data frame leaves no sooner after the previous one than
    // its length at the pacing rate allows, less the 1 ms timer slack.
    let from = start + Duration::from_secs(1);
    assert!(pacing.iter().any(|p| p.0 < from && p.2 == Mode::ProbeBw));
    let deps = data_departures(&net, from);
    assert!(deps.len() > 1000, "{} frames", deps.len());
    let rate_at = |t: Instant| pacing.iter().rev().find(|p| p.0 <= t).map(|p| p.1).unwrap();
    let mut early = 0;
    for w in deps.windows(2) {
        let gap = w[1].0 - w[0].0;
        let payload = (w[0].1 - 66) as u64;
        let want = Duration::from_micros(payload * 1_000_000 / rate_at(w[0].0));
        if gap + Duration::from_millis(1) < want {
            early += 1;
        }
    }
    assert_eq!(early, 0, "frames sent ahead of the pacing schedule");
    // On average they leave at the bottleneck rate (pacing, not bursts and queueing).
    let span = deps.last().unwrap().0 - deps[0].0;
    let bytes: usize = deps[..deps.len() - 1].iter().map(|d| d.1).sum();
    let avg = bytes as f64 / span.as_secs_f64();
    assert!(
        (850_000.0..=1_100_000.0).contains(&avg),
        "average departure rate {avg:.0} B/s"
    );
    // Most gaps are about one frame time (1.5 ms), not zero as in a burst.
    let zero = deps.windows(2).filter(|w| w[1].0 == w[0].0).count();
    assert!(
        zero * 10 < deps.len(),
        "{zero} back-to-back frames of {}",
        deps.len()
    );

    // CUBIC on the same path answers each batch of ACKs with a burst: back-to-back frames
    // abound.
    let mut net = Net::with_cc(Duration::from_millis(5), 0, 0, CcAlgo::Cubic);
    net.link.rate = 1_000_000;
    net.link.ack_batch = Duration::from_millis(5);
    let (c, s) = connect(&mut net);
    net.departures = Some(Vec::new());
    let from = net.now;
    transfer(&mut net, c, s, 1 << 20, Duration::from_secs(20));
    let deps = data_departures(&net, from);
    let zero = deps.windows(2).filter(|w| w[1].0 == w[0].0).count();
    assert!(
        zero * 2 > deps.len(),
        "CUBIC: {zero} back-to-back of {}",
        deps.len()
    );
}

#[test]
fn congestion_option_per_socket() {
    let mut net = Net::new(Duration::from_millis(1), 0, 0);
    let l = net.b.socket(false).unwrap();
    net.b
        .bind(l, SocketAddr::new(IpAddr::V4(B_IP), 80))
        .unwrap();
    net.b.listen(l, 16).unwrap();
    // Before connect: the socket's choice; the stack default (CUBIC) otherwise.
    assert_eq!(net.b.congestion(l), Ok(CcAlgo::Cubic));
    net.b.set_opt(l, SockOpt::Congestion(CcAlgo::Bbr)).unwrap();
    assert_eq!(net.b.congestion(l), Ok(CcAlgo::Bbr));
    let (c, s) = connect_to(&mut net, l);
    // Accepted connections inherit the listener's algorithm.
    assert_eq!(net.b.congestion(s), Ok(CcAlgo::Bbr));
    assert!(net.b.tcb(s).unwrap().pacing_rate().is_some());
    assert_eq!(net.a.congestion(c), Ok(CcAlgo::Cubic));
    assert_eq!(net.a.tcb(c).unwrap().pacing_rate(), None);
    // After connect: the connection switches and keeps its window.
    let w = net.a.tcb(c).unwrap().cwnd();
    net.a.set_opt(c, SockOpt::Congestion(CcAlgo::Bbr)).unwrap();
    assert_eq!(net.a.congestion(c), Ok(CcAlgo::Bbr));
    assert_eq!(net.a.tcb(c).unwrap().cwnd(), w);
    net.a.set_opt(c, SockOpt::Congestion(CcAlgo::Reno)).unwrap();
    assert_eq!(net.a.tcb(c).unwrap().congestion().name(), "reno");
    // Data still flows both ways after the switches.
    let d = transfer(&mut net, c, s, 1 << 20, Duration::from_secs(30));
    assert!(d < Duration::from_secs(30));
    assert_eq!(CcAlgo::from_name(b"bbr\0\0\0"), Ok(CcAlgo::Bbr));
    assert_eq!(CcAlgo::from_name(b"cubic"), Ok(CcAlgo::Cubic));
    assert_eq!(CcAlgo::from_name(b"vegas"), Err(2), "ENOENT as Linux");
    assert_eq!(CcAlgo::from_name(b""), Err(2));
}

/// Sends `total` pattern bytes from A to B, first from a lent ring of `ring` bytes (the engine
/// copies segments from it; the ring frees only what A reports acknowledged, and only when A
/// reports the socket writable, as the agent does), then, once `stop(net, written)` says so, by
/// reclaiming the loan and going on with `send`. Returns (bytes freed through the loan, bytes
/// written into the ring).
fn lent_transfer(
    net: &mut Net,
    ring: usize,
    total: usize,
    stop: impl Fn(&Net, SockId, usize) -> bool,
) -> (u64, usize) {
    let (c, s) = connect(net);
    let r = LentRing::new(ring);
    net.a
        .lend_tx(c, r.tail, r.buf.len())
        .expect("an idle connection can be lent");
    net.lent = Some(r);
    let mut buf = vec![0u8; 65536];
    let mut chunk = vec![0u8; 65536];
    let mut freed = 0u64;
    let mut sent = 0usize;
    let mut lent_total = 0usize;
    let deadline = net.now + Duration::from_secs(600);
    let ok = net.run_until(deadline, |n| {
        let mut writable = false;
        while let Some((id, _, r)) = n.a.poll_event() {
            writable |= id == c && r.writable;
        }
        let written = n.lent.as_ref().map_or(0, |r| r.written);
        if n.lent.is_some() && (written >= total || stop(n, c, written)) {
            // End the loan: what is unacknowledged moves into the engine.
            let r = n.lent.as_mut().unwrap();
            let k = n.a.reclaim_tx(c, r);
            r.free(k);
            freed += u64::from(k);
            assert_eq!(n.a.take_acked(c), None, "no loan after reclaim");
            sent = r.written;
            lent_total = r.written;
            n.lent = None;
        }
        if let Some(r) = n.lent.as_mut() {
            // An outgrown loan stays writable until it ends (no new edges): an owner that
            // keeps the loan anyway looks at what was acknowledged on its own.
            if writable || n.a.loan_outgrown(c) {
                if let Some(k) = n.a.take_acked(c) {
                    r.free(k);
                    freed += u64::from(k);
                }
            }
            let k = r.fill(total - r.written);
            if k > 0 {
                assert_eq!(n.a.send_lent(c, k), Ok(k), "the ring's bytes all fit");
            }
        } else {
            send_pattern(&mut n.a, c, &mut chunk, &mut sent, total);
        }
        while let Ok(r) = n.b.recv(s, &mut [&mut buf[..]]) {
            if r == 0 {
                break;
            }
            for (j, b) in buf[..r].iter().enumerate() {
                assert_eq!(*b, pattern(n.rx_got + j), "byte {} corrupted", n.rx_got + j);
            }
            n.rx_got += r;
        }
        // A's events were taken above.
        drain_events(&mut n.b);
        n.rx_got == total
    });
    assert!(ok, "stalled at {} of {total}", net.rx_got);
    assert_eq!(net.a.stats.tx_lent_missing, 0);
    (freed, lent_total)
}

/// The lent send path (snstack_tcp::source) under loss and reordering: segments and
/// retransmissions are copied from the application's ring, which frees only acknowledged bytes
/// (and scribbles over them); halfway the loan is reclaimed and the rest goes through `send`.
#[test]
fn lent_stream_sends_intact_and_frees_only_acked_bytes() {
    let mut net = Net::new(Duration::from_millis(2), 10_000, 10_000);
    let total = 3 << 20;
    let (freed, lent) = lent_transfer(&mut net, 64 << 10, total, |_, _, w| w >= total / 2);
    assert!(net.link.dropped > 0, "the link lost nothing");
    assert!(lent >= total / 2, "lent only {lent}");
    assert!(freed > 0 && freed <= lent as u64, "freed {freed} of {lent}");
}

/// A loan on a path that holds more than half the ring (10 ms x 100 MB/s = 1 MB against
/// 64 KiB) is reported outgrown, so the owner moves the connection back to the engine's own
/// buffer; on a short path (100 us) it is not.
#[test]
fn lent_stream_outgrown_on_a_long_fat_path() {
    let mut long = Net::new(Duration::from_millis(5), 0, 0);
    long.link.rate = 100_000_000;
    let total = 8 << 20;
    let (_, lent) = lent_transfer(&mut long, 64 << 10, total, |n, c, _| n.a.loan_outgrown(c));
    assert!(lent < total, "the loan was never reported outgrown");
    let mut short = Net::new(Duration::from_micros(50), 0, 0);
    short.link.rate = 100_000_000;
    let total = 4 << 20;
    let (_, lent) = lent_transfer(&mut short, 256 << 10, total, |n, c, _| n.a.loan_outgrown(c));
    assert_eq!(lent, total, "a short path outgrew a 256 KiB loan");
}

/// The direct receive path (snstack_tcp::sink): in-order payload goes from the frame into the
/// application's buffer when nothing is buffered before it, the rest through the receive
/// buffer, and the stream stays intact under loss and reordering, whether the buffer takes
/// whole segments or only part of each.
#[test]
fn direct_delivery_keeps_the_stream_intact() {
    // Room for whole segments: most bytes go direct (not those behind a hole). Room for part
    // of one: the rest of it is buffered and what follows in the same burst waits behind it.
    for (cap, min_direct) in [(usize::MAX, 2usize), (1000, 20)] {
        let mut net = Net::new(Duration::from_millis(2), 10_000, 10_000);
        net.direct_cap = Some(cap);
        let (c, s) = connect(&mut net);
        let total = 4 << 20;
        transfer(&mut net, c, s, total, Duration::from_secs(600));
        assert_eq!(net.rx_got, total);
        assert!(
            net.direct_taken > total / min_direct,
            "cap {cap}: only {} of {total} bytes went direct",
            net.direct_taken
        );
        eprintln!("cap {cap}: {} of {total} bytes direct", net.direct_taken);
    }
}

/// A link with a bottleneck of `rate` B/s, `delay` each way and `loss_ppm` per frame each way,
/// both ends with `cc`; A sends TSO super-frames of up to 64 KiB when `tso` (the link then
/// loses a super-frame whole, as an nftables rule on a veth does).
fn tso_net(cc: CcAlgo, tso: bool, rate: u64, delay: Duration, loss_ppm: u32) -> Net {
    let mut ca = cfg(A_IP, 1);
    let mut cb = cfg(B_IP, 2);
    ca.congestion = cc;
    cb.congestion = cc;
    if tso {
        ca.caps.tx_csum = true;
        ca.caps.tso = true;
        ca.caps.max_tso_frame = 65_536;
        cb.trust_partial_csum = true;
    }
    let mut net = Net::new(delay, loss_ppm, 0);
    net.a = Stack::new(ca, Instant::ZERO);
    net.b = Stack::new(cb, Instant::ZERO);
    net.link.rate = rate;
    net
}

/// A lent stream pinned by a hole: at 1 % loss of whole TSO super-frames on a short fast path,
/// a 256 KiB stream fills behind SND.UNA with everything sent, so a lost retransmission had
/// nothing sent after it to reveal it and waited for the 200 ms RTO (0.27x the rate of the
/// engine's own buffer here). The loan is reported outgrown instead, the owner hands the bytes
/// to the engine, and the transfer keeps its pace without an RTO.
#[test]
fn lent_stream_handed_back_when_a_hole_pins_it() {
    let (rate, delay, loss) = (1_500_000_000, Duration::from_micros(25), 10_000);
    let total = 48 << 20;
    let mut own = tso_net(CcAlgo::Bbr, true, rate, delay, loss);
    let (c, s) = connect(&mut own);
    let d_own = transfer(&mut own, c, s, total, Duration::from_secs(600));
    let mut net = tso_net(CcAlgo::Bbr, true, rate, delay, loss);
    let t0 = net.now;
    let (_, lent) = lent_transfer(&mut net, 256 << 10, total, |n, c, _| n.a.loan_outgrown(c));
    let d = net.now - t0;
    let k = net.a.tcp_counters();
    eprintln!("own buffer {d_own:?}, lent {d:?} (loan ended after {lent} bytes); {k:?}");
    assert!(net.link.dropped > 10, "the link lost {}", net.link.dropped);
    assert!(lent < total, "the loan was never reported outgrown");
    assert_eq!(k.rtos, 0, "a retransmission timeout: {k:?}");
    assert!(
        d.as_secs_f64() < 1.25 * d_own.as_secs_f64(),
        "lent {d:?} against {d_own:?} with the engine's buffer"
    );
}

/// A hole in the last flight whose retransmission is lost too, with nothing left to send: no
/// later segment can reveal the second loss and no ACK comes. A probe in recovery (FreeBSD
/// RACK's default) sends it again after about two round trips instead of waiting for the
/// 200 ms RTO.
#[test]
fn lost_retransmission_at_the_tail_is_probed_not_timed_out() {
    for cc in [CcAlgo::Cubic, CcAlgo::Bbr] {
        let mut net = Net::with_cc(Duration::from_micros(50), 0, 0, cc);
        let (c, s) = connect(&mut net);
        // Warm up (RTT samples, a window), then the flight with the hole in its middle.
        transfer(&mut net, c, s, 64 << 10, Duration::from_secs(10));
        net.link.drop_data_frame = Some(net.link.data_frames + 55);
        net.link.drop_again = 1;
        let d = transfer(&mut net, c, s, 60 * 1448, Duration::from_secs(10));
        let st = net.a.tcb(c).unwrap().stats;
        assert!(
            net.link.drop_again == 0,
            "{}: the retransmission was not lost",
            cc.name()
        );
        assert_eq!(st.rtos, 0, "{}: {st:?}", cc.name());
        assert!(st.tlps >= 1, "{}: {st:?}", cc.name());
        assert!(
            d < Duration::from_millis(20),
            "{}: {d:?}; {st:?}",
            cc.name()
        );
    }
}

/// Every ACK of a flight lost while the sender has nothing more it may send (its lent stream
/// full): the tail loss probe, not the RTO, gets the ACK clock going again.
#[test]
fn lost_acks_of_a_full_lent_stream_are_probed() {
    let mut net = tso_net(
        CcAlgo::Bbr,
        true,
        1_500_000_000,
        Duration::from_micros(25),
        0,
    );
    net.link.blackout_to_a = Some((Instant::from_millis(30), Instant::from_micros(30_300)));
    let t0 = net.now;
    lent_transfer(&mut net, 256 << 10, 64 << 20, |_, _, _| false);
    let d = net.now - t0;
    let k = net.a.tcp_counters();
    eprintln!("{d:?}; {k:?}; dropped {}", net.link.dropped);
    assert!(net.link.dropped > 0);
    assert_eq!(k.rtos, 0, "{k:?}");
}
