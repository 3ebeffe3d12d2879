//! Segment-level tests of the engine: two engines joined by an in-memory wire (optionally
//! through the fault injector), driven at explicit virtual times. No sockets, no sleeps.

use std::net::SocketAddr;

use super::*;
use crate::backend::user::device::{self, FaultInjector, Faults, Loopback, Port};

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

struct Host {
    e: Engine,
    p: Port<FaultInjector<Loopback>>,
    ev: Vec<SockEvent>,
}

struct Net {
    a: Host,
    b: Host,
    now: Instant,
    /// Frames A sent, as seen on the wire (captured before B reads them).
    a_frames: Vec<Vec<u8>>,
    capture: bool,
}

fn cfg(last: u8, mac: [u8; 6]) -> EngineConfig {
    EngineConfig {
        ip: Ipv4Addr::new(10, 0, 0, last),
        prefix: 24,
        gateway: None,
        mac,
        rx_buf: 256 * 1024,
        tx_buf: 256 * 1024,
        seed: u64::from(last) * 7919,
    }
}

/// 10.0.0.`last`:`port`; `last` 0 is the wildcard address.
fn addr(last: u8, port: u16) -> SocketAddr {
    if last == 0 {
        return SocketAddr::from(([0, 0, 0, 0], port));
    }
    SocketAddr::from(([10, 0, 0, last], port))
}

impl Net {
    fn new(faults_a: Faults, faults_b: Faults) -> Net {
        let (la, lb) = Loopback::pair(MAC_A, MAC_B);
        let now = Instant::from_millis(1000);
        let mut pa = Port::new(FaultInjector::new(la, faults_a, 1));
        let mut pb = Port::new(FaultInjector::new(lb, faults_b, 2));
        let ea = Engine::new(cfg(1, MAC_A), &mut pa, now);
        let eb = Engine::new(cfg(2, MAC_B), &mut pb, now);
        Net {
            a: Host {
                e: ea,
                p: pa,
                ev: Vec::new(),
            },
            b: Host {
                e: eb,
                p: pb,
                ev: Vec::new(),
            },
            now,
            a_frames: Vec::new(),
            capture: false,
        }
    }

    fn clean() -> Net {
        Net::new(Faults::default(), Faults::default())
    }

    /// Advances virtual time by `ms` and polls both sides (A first).
    fn step(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        self.a.e.poll(self.now, &mut self.a.p, &mut self.a.ev);
        if self.capture {
            let w = self.b.p.dev.inner().peek();
            self.a_frames.extend(w);
        }
        self.b.e.poll(self.now, &mut self.b.p, &mut self.b.ev);
    }

    /// Steps until `f` holds; panics after `max_ms` of virtual time.
    fn until(&mut self, max_ms: u64, step: u64, mut f: impl FnMut(&mut Net) -> bool) {
        let end = self.now + Duration::from_millis(max_ms);
        while !f(self) {
            assert!(self.now < end, "condition not reached within {max_ms} ms");
            self.step(step);
        }
    }
}

fn recv_all(e: &mut Engine, s: &UserSock, out: &mut Vec<u8>) -> io::Result<usize> {
    let mut buf = vec![0u8; 65536];
    let mut total = 0;
    loop {
        match e.recv(s, &mut [&mut buf[..]]) {
            Ok(0) => return Ok(0),
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                total += n;
            }
            Err(err) if err.raw_os_error() == Some(libc::EAGAIN) => return Ok(total.max(1)),
            Err(err) => return Err(err),
        }
    }
}

/// A listens? No: B listens on `port`, A connects; returns (client on A, server conn on B).
fn connected(n: &mut Net, port: u16) -> (UserSock, UserSock, UserSock) {
    let l = n.b.e.socket(libc::AF_INET).unwrap();
    n.b.e.bind(&l, &addr(0, port)).unwrap();
    n.b.e.listen(&l, 128).unwrap();
    let c = n.a.e.socket(libc::AF_INET).unwrap();
    let r = n.a.e.connect(&c, &addr(2, port));
    assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EINPROGRESS));
    n.until(5000, 1, |n| {
        n.a.e.connect_state(&c) == ConnectState::Connected
    });
    let mut acc = None;
    n.until(1000, 1, |n| {
        acc = n.b.e.accept(&l).ok();
        acc.is_some()
    });
    let (s, peer) = acc.unwrap();
    assert_eq!(peer.ip(), addr(1, 0).ip());
    (c, s, l)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Sends `data` from A's `c` to B's `s` while stepping; returns what B received.
fn transfer(n: &mut Net, c: &UserSock, s: &UserSock, data: &[u8], max_ms: u64) -> Vec<u8> {
    let mut sent = 0;
    let mut got = Vec::new();
    n.until(max_ms, 1, |n| {
        while sent < data.len() {
            match n.a.e.send(c, &[&data[sent..]]) {
                Ok(k) => sent += k,
                Err(_) => break,
            }
        }
        let _ = recv_all(&mut n.b.e, s, &mut got);
        got.len() >= data.len()
    });
    got
}

#[test]
fn handshake_data_and_options() {
    let mut n = Net::clean();
    n.capture = true;
    let (c, s, _l) = connected(&mut n, 80);
    // A's SYN carries window scaling, timestamps and an MSS.
    let syn = n
        .a_frames
        .iter()
        .find(|f| device::syn_dst_port(f) == Some(80))
        .expect("SYN on the wire");
    let opts = &syn[14 + 20 + 20..14 + 20 + usize::from(syn[14 + 20 + 12] >> 4) * 4];
    let mut kinds = Vec::new();
    let mut i = 0;
    let mut wscale = None;
    while i < opts.len() {
        match opts[i] {
            0 => break,
            1 => i += 1,
            k => {
                let len = usize::from(opts[i + 1]).max(2);
                if k == 3 {
                    wscale = Some(opts[i + 2]);
                }
                kinds.push(k);
                i += len;
            }
        }
    }
    assert!(kinds.contains(&2), "MSS option missing: {kinds:?}");
    assert_eq!(
        kinds.contains(&8),
        TIMESTAMPS,
        "timestamp option: {kinds:?}"
    );
    assert!(wscale.is_some_and(|w| w >= 2), "window scale {wscale:?}");
    n.capture = false;
    let data = pattern(2 << 20);
    let got = transfer(&mut n, &c, &s, &data, 20_000);
    assert_eq!(got, data);
    assert_eq!(n.a.e.peer_addr(&c).unwrap(), addr(2, 80));
    assert_eq!(n.b.e.local_addr(&s).unwrap(), addr(2, 80));
    // Readiness was reported under the registered token only.
    n.b.e.register(&s, 77).unwrap();
    n.b.ev.clear();
    n.step(1);
    assert!(n.b.ev.iter().all(|e| e.token == 77));
    assert!(!n.b.ev.is_empty());
}

/// The peer behaves like Linux on a veth with default offloads: its checksums arrive partial and
/// its segments merged into GRO super-frames. The port completes and cuts them for smoltcp.
#[test]
fn offloading_peer_partial_checksums_and_super_frames() {
    let mut n = Net::clean();
    let peer = device::PeerOffloads {
        partial_csum: true,
        gro_max: 65535,
    };
    n.a.p.dev.inner_mut().set_peer_offloads(peer);
    n.b.p.dev.inner_mut().set_peer_offloads(peer);
    let caps = snstack_tcp::DeviceCaps {
        tx_csum: true,
        ..snstack_tcp::DeviceCaps::default()
    };
    n.b.p.dev.inner_mut().set_caps(caps);
    assert_eq!(device::Device::caps(&n.b.p.dev), caps);
    let (c, s, _l) = connected(&mut n, 80);
    let data = pattern(2 << 20);
    // smoltcp sends one segment per socket per poll: A polls a few times before B reads, so
    // that several segments wait on the wire for GRO to merge.
    let (mut sent, mut got) = (0, Vec::new());
    for _ in 0..20_000 {
        while let Ok(k) = n.a.e.send(&c, &[&data[sent..]]) {
            sent += k;
            if sent == data.len() || k == 0 {
                break;
            }
        }
        for _ in 0..8 {
            n.a.e.poll(n.now, &mut n.a.p, &mut n.a.ev);
        }
        n.step(1);
        let _ = recv_all(&mut n.b.e, &s, &mut got);
        if got.len() >= data.len() {
            break;
        }
    }
    assert!(got == data, "payload corrupted");
    assert!(
        n.b.p.stats.rx_split > 0,
        "no super-frame: {:?}",
        n.b.p.stats
    );
    assert!(n.a.p.stats.rx_csum_completed > 0, "{:?}", n.a.p.stats);
    assert_eq!(n.b.p.stats.rx_dropped, 0);
}

#[test]
fn retransmission_after_drops_keeps_data_intact() {
    let f = Faults {
        drop_pm: 30,
        dup_pm: 10,
        reorder_pm: 20,
        delay_us: 0,
    };
    let mut n = Net::new(f, f);
    let (c, s, _l) = connected(&mut n, 8080);
    let data = pattern(1 << 20);
    let got = transfer(&mut n, &c, &s, &data, 120_000);
    assert_eq!(got.len(), data.len());
    assert!(got == data, "payload corrupted");
    assert!(
        n.b.p.dev.dropped > 0 && n.a.p.dev.dropped > 0,
        "no loss injected"
    );
}

#[test]
fn fin_is_end_of_stream_and_hup() {
    let mut n = Net::clean();
    let (c, s, _l) = connected(&mut n, 81);
    n.b.e.register(&s, 5).unwrap();
    n.a.e.send(&c, &[b"bye"]).unwrap();
    n.a.e.shutdown(&c, libc::SHUT_WR).unwrap();
    let mut got = Vec::new();
    let mut eof = false;
    n.until(2000, 1, |n| {
        eof = recv_all(&mut n.b.e, &s, &mut got).unwrap() == 0;
        eof
    });
    assert_eq!(got, b"bye");
    assert!(n.b.ev.iter().any(|e| e.token == 5 && e.ready.hup));
    // The other direction still works (half close).
    n.b.e.send(&s, &[b"ok"]).unwrap();
    let mut back = Vec::new();
    n.until(2000, 1, |n| {
        let _ = recv_all(&mut n.a.e, &c, &mut back);
        back == b"ok"
    });
    n.b.e.close(s);
    let mut end = false;
    n.until(2000, 1, |n| {
        end = recv_all(&mut n.a.e, &c, &mut back).unwrap() == 0;
        end
    });
    n.a.e.close(c);
    n.step(10);
    n.step(10);
}

#[test]
fn linger_zero_close_sends_rst() {
    let mut n = Net::clean();
    let (c, s, _l) = connected(&mut n, 82);
    n.a.e.register(&c, 9).unwrap();
    let lz = [1i32.to_ne_bytes(), 0i32.to_ne_bytes()].concat();
    n.b.e
        .setsockopt(&s, libc::SOL_SOCKET, libc::SO_LINGER, &lz)
        .unwrap();
    n.b.e.close(s);
    n.until(1000, 1, |n| {
        n.a.ev.iter().any(|e| e.token == 9 && e.ready.error)
    });
    let mut buf = [0u8; 16];
    let e = n.a.e.recv(&c, &mut [&mut buf[..]]).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ECONNRESET));
    let e = n.a.e.send(&c, &[b"x"]).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPIPE));
}

#[test]
fn connect_to_closed_port_is_refused() {
    let mut n = Net::clean();
    let c = n.a.e.socket(libc::AF_INET).unwrap();
    let _ = n.a.e.connect(&c, &addr(2, 9));
    let mut st = ConnectState::Pending;
    n.until(2000, 1, |n| {
        st = n.a.e.connect_state(&c);
        st != ConnectState::Pending
    });
    assert_eq!(st, ConnectState::Failed(libc::ECONNREFUSED));
}

#[test]
fn connect_to_silent_peer_times_out() {
    let mut n = Net::new(
        Faults {
            drop_pm: 1000,
            ..Faults::default()
        },
        Faults {
            drop_pm: 1000,
            ..Faults::default()
        },
    );
    let c = n.a.e.socket(libc::AF_INET).unwrap();
    let _ = n.a.e.connect(&c, &addr(2, 80));
    let mut st = ConnectState::Pending;
    n.until(100_000, 100, |n| {
        st = n.a.e.connect_state(&c);
        st != ConnectState::Pending
    });
    assert_eq!(st, ConnectState::Failed(libc::ETIMEDOUT));
}

#[test]
fn thousand_connects_to_one_listener_are_all_accepted() {
    let mut n = Net::clean();
    let l = n.b.e.socket(libc::AF_INET).unwrap();
    n.b.e.bind(&l, &addr(0, 80)).unwrap();
    n.b.e.listen(&l, 1024).unwrap();
    n.b.e.register(&l, 1).unwrap();
    let clients: Vec<UserSock> = (0..1000)
        .map(|_| {
            let c = n.a.e.socket(libc::AF_INET).unwrap();
            let _ = n.a.e.connect(&c, &addr(2, 80));
            c
        })
        .collect();
    let mut accepted = Vec::new();
    n.until(30_000, 1, |n| {
        while let Ok((s, _)) = n.b.e.accept(&l) {
            accepted.push(s);
        }
        accepted.len() == 1000
    });
    for c in &clients {
        assert_eq!(n.a.e.connect_state(c), ConnectState::Connected);
    }
    // Every connection carries data both ways.
    for (i, s) in accepted.iter().enumerate().take(50) {
        n.b.e.send(s, &[format!("hello {i}").as_bytes()]).unwrap();
    }
    n.step(5);
    n.step(5);
    let mut greeted = 0;
    for c in &clients {
        let mut got = Vec::new();
        let _ = recv_all(&mut n.a.e, c, &mut got);
        if got.starts_with(b"hello ") {
            greeted += 1;
        }
    }
    assert_eq!(greeted, 50);
}

#[test]
fn full_backlog_drops_syns_and_clients_retry() {
    let mut n = Net::clean();
    let l = n.b.e.socket(libc::AF_INET).unwrap();
    n.b.e.bind(&l, &addr(0, 80)).unwrap();
    n.b.e.listen(&l, 16).unwrap();
    let clients: Vec<UserSock> = (0..40)
        .map(|_| {
            let c = n.a.e.socket(libc::AF_INET).unwrap();
            let _ = n.a.e.connect(&c, &addr(2, 80));
            c
        })
        .collect();
    // Nobody accepts for a while: the queue holds 16, the other SYNs are dropped, none refused.
    for _ in 0..500 {
        n.step(1);
    }
    assert!(n.b.p.stats.syn_dropped > 0);
    for c in &clients {
        assert_ne!(
            n.a.e.connect_state(c),
            ConnectState::Failed(libc::ECONNREFUSED)
        );
    }
    let mut accepted = 0;
    n.until(60_000, 5, |n| {
        while n.b.e.accept(&l).is_ok() {
            accepted += 1;
        }
        accepted == 40
    });
}

#[test]
fn ports_conflict_and_ephemeral_ports_differ() {
    let mut n = Net::clean();
    let a = n.b.e.socket(libc::AF_INET).unwrap();
    n.b.e.bind(&a, &addr(0, 80)).unwrap();
    n.b.e.listen(&a, 16).unwrap();
    let b = n.b.e.socket(libc::AF_INET).unwrap();
    assert_eq!(
        n.b.e.bind(&b, &addr(2, 80)).unwrap_err().raw_os_error(),
        Some(libc::EADDRINUSE)
    );
    assert_eq!(
        n.b.e.bind(&b, &addr(3, 81)).unwrap_err().raw_os_error(),
        Some(libc::EADDRNOTAVAIL)
    );
    n.b.e.close(a);
    n.b.e.bind(&b, &addr(2, 80)).unwrap();
    let x = n.a.e.socket(libc::AF_INET).unwrap();
    let y = n.a.e.socket(libc::AF_INET).unwrap();
    let _ = n.a.e.connect(&x, &addr(2, 80));
    let _ = n.a.e.connect(&y, &addr(2, 80));
    let px = n.a.e.local_addr(&x).unwrap().port();
    let py = n.a.e.local_addr(&y).unwrap().port();
    assert_ne!(px, py);
    assert!(EPHEMERAL.contains(&px) && EPHEMERAL.contains(&py));
}

#[test]
fn socket_options() {
    let mut n = Net::clean();
    let s = n.a.e.socket(libc::AF_INET).unwrap();
    let one = 1i32.to_ne_bytes();
    n.a.e
        .setsockopt(&s, libc::IPPROTO_TCP, libc::TCP_NODELAY, &one)
        .unwrap();
    n.a.e
        .setsockopt(&s, libc::SOL_SOCKET, libc::SO_KEEPALIVE, &one)
        .unwrap();
    n.a.e
        .setsockopt(&s, libc::SOL_SOCKET, libc::SO_REUSEADDR, &one)
        .unwrap();
    n.a.e
        .setsockopt(
            &s,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &(1i32 << 20).to_ne_bytes(),
        )
        .unwrap();
    let mut b = [0u8; 4];
    assert_eq!(
        n.a.e
            .getsockopt(&s, libc::IPPROTO_TCP, libc::TCP_NODELAY, &mut b)
            .unwrap(),
        4
    );
    assert_eq!(i32::from_ne_bytes(b), 1);
    n.a.e
        .getsockopt(&s, libc::SOL_SOCKET, libc::SO_RCVBUF, &mut b)
        .unwrap();
    assert_eq!(i32::from_ne_bytes(b), 2 << 20);
    assert_eq!(
        n.a.e
            .setsockopt(&s, libc::IPPROTO_TCP, libc::TCP_CORK, &one)
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENOPROTOOPT)
    );
    assert_eq!(
        n.a.e
            .setsockopt(&s, libc::IPPROTO_TCP, libc::TCP_NODELAY, &[1])
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EINVAL)
    );
}

#[test]
fn keepalive_detects_a_dead_peer() {
    let mut n = Net::clean();
    let (c, _s, _l) = connected(&mut n, 83);
    let set = |n: &mut Net, name: i32, v: i32| {
        let lvl = if name == libc::SO_KEEPALIVE {
            libc::SOL_SOCKET
        } else {
            libc::IPPROTO_TCP
        };
        n.a.e.setsockopt(&c, lvl, name, &v.to_ne_bytes()).unwrap();
    };
    set(&mut n, libc::TCP_KEEPIDLE, 5);
    set(&mut n, libc::TCP_KEEPINTVL, 1);
    set(&mut n, libc::TCP_KEEPCNT, 3);
    set(&mut n, libc::SO_KEEPALIVE, 1);
    n.a.e.register(&c, 3).unwrap();
    // The cable is cut.
    let cut = Faults {
        drop_pm: 1000,
        ..Faults::default()
    };
    n.a.p.dev.set_faults(cut);
    n.b.p.dev.set_faults(cut);
    n.until(60_000, 100, |n| {
        n.a.ev.iter().any(|e| e.token == 3 && e.ready.error)
    });
    let e = n.a.e.take_error(&c);
    assert!(e == libc::ETIMEDOUT || e == libc::ECONNRESET, "errno {e}");
}

#[test]
fn listener_shut_for_reading_stops_listening() {
    let mut n = Net::clean();
    let l = n.b.e.socket(libc::AF_INET).unwrap();
    n.b.e.bind(&l, &addr(0, 80)).unwrap();
    n.b.e.listen(&l, 16).unwrap();
    n.b.e.shutdown(&l, libc::SHUT_RD).unwrap();
    let c = n.a.e.socket(libc::AF_INET).unwrap();
    let _ = n.a.e.connect(&c, &addr(2, 80));
    let mut st = ConnectState::Pending;
    n.until(2000, 1, |n| {
        st = n.a.e.connect_state(&c);
        st != ConnectState::Pending
    });
    assert_eq!(st, ConnectState::Failed(libc::ECONNREFUSED));
    // It may listen again on the port it kept.
    n.b.e.listen(&l, 16).unwrap();
    assert_eq!(n.b.e.local_addr(&l).unwrap().port(), 80);
}
