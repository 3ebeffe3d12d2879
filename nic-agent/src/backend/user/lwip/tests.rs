//! Pure logic of the lwIP engine (errnos, readiness, addresses, accept queue bounds).

use super::*;

#[test]
fn lwip_errors_map_to_linux_errnos() {
    assert_eq!(errno_of(l::ERR_RST, true), libc::ECONNREFUSED);
    assert_eq!(errno_of(l::ERR_RST, false), libc::ECONNRESET);
    assert_eq!(errno_of(l::ERR_ABRT, false), libc::ETIMEDOUT);
    assert_eq!(errno_of(l::ERR_ABRT, true), libc::ETIMEDOUT);
    assert_eq!(errno_of(l::ERR_USE, false), libc::EADDRINUSE);
    assert_eq!(errno_of(l::ERR_RTE, true), libc::ENETUNREACH);
    assert_eq!(errno_of(l::ERR_MEM, false), libc::ENOBUFS);
    assert_eq!(errno_of(l::ERR_OK, false), 0);
    assert_eq!(errno_of(-100, false), libc::EIO);
    // The error callback's view, as Linux's tcp_reset: by state.
    assert_eq!(gone_errno(l::ERR_RST, true, false), libc::ECONNREFUSED);
    assert_eq!(gone_errno(l::ERR_RST, false, false), libc::ECONNRESET);
    assert_eq!(gone_errno(l::ERR_RST, false, true), libc::EPIPE);
    assert_eq!(gone_errno(l::ERR_CLSD, false, false), 0);
    assert_eq!(gone_errno(l::ERR_ABRT, false, true), libc::ETIMEDOUT);
}

#[test]
fn readiness_of_connections() {
    let connecting = ConnView {
        connecting: true,
        sndbuf: 65535,
        ..ConnView::default()
    };
    assert_eq!(readiness(&connecting), Readiness::default());
    let refused = ConnView {
        err: libc::ECONNREFUSED,
        gone: true,
        ..connecting
    };
    let r = readiness(&refused);
    assert!(r.error && r.writable && r.readable && r.hup);
    let open = ConnView {
        sndbuf: 65535,
        ..ConnView::default()
    };
    let r = readiness(&open);
    assert!(r.writable && !r.readable && !r.hup && !r.error);
    let full = ConnView { sndbuf: 0, ..open };
    assert!(!readiness(&full).writable);
    let data = ConnView { rx_len: 10, ..full };
    assert!(readiness(&data).readable);
    let fin = ConnView { fin: true, ..full };
    let r = readiness(&fin);
    assert!(r.readable && r.hup && !r.error);
    // After our FIN the socket stays writable (the next send says EPIPE).
    let shut = ConnView {
        shut_wr: true,
        ..full
    };
    assert!(readiness(&shut).writable);
}

#[test]
fn addresses_are_ipv4_or_v4_mapped() {
    let a: SocketAddr = "10.0.0.2:80".parse().unwrap();
    assert_eq!(v4_of(&a), Some(Ipv4Addr::new(10, 0, 0, 2)));
    let m: SocketAddr = "[::ffff:10.0.0.2]:80".parse().unwrap();
    assert_eq!(v4_of(&m), Some(Ipv4Addr::new(10, 0, 0, 2)));
    let any6: SocketAddr = "[::]:80".parse().unwrap();
    assert_eq!(v4_of(&any6), Some(Ipv4Addr::UNSPECIFIED));
    let v6: SocketAddr = "[fd00::2]:80".parse().unwrap();
    assert_eq!(v4_of(&v6), None);
    let ip = u32::from(Ipv4Addr::new(10, 0, 0, 2));
    assert_eq!(sockaddr(libc::AF_INET, ip, 80), a);
    assert_eq!(sockaddr(libc::AF_INET6, ip, 80), m);
}

#[test]
fn pseudo_header_only_checksums_are_recognised() {
    let f = offload::tests::tcp4(1, 0x18, b"hello world");
    assert!(!pseudo_only_csum(&f), "a valid checksum is not partial");
    let mut p = f.clone();
    offload::make_partial(&mut p).unwrap();
    assert!(pseudo_only_csum(&p));
    // Completing it gives the valid frame back.
    assert!(offload::fill_l4_csum(&mut p));
    assert_eq!(p, f);
    let mut g = f.clone();
    g[14 + 20 + 16] ^= 0xff;
    assert!(!pseudo_only_csum(&g), "a corrupted checksum is neither");
}

#[test]
fn accept_queue_bounds() {
    assert_eq!(accept_cap(-1), 4096);
    assert_eq!(accept_cap(0), 16);
    assert_eq!(accept_cap(511), 511);
    assert_eq!(accept_cap(100_000), 4096);
}

// ---------------------------------------------------------------------------------------------
// lwIP against snstack-tcp over an in-memory cable. lwIP reads its own clock (it is not
// sans-IO), so these run in real time: polls are cheap, and a stall guard (not a timing
// assertion) turns a hang into a failure.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::backend::user::device::Loopback;
use crate::backend::user::native::{NativeBackend, NativeSock};
use snstack_tcp::stack::StackConfig;

/// lwIP's state is global: one backend at a time in this process.
static LWIP: Mutex<()> = Mutex::new(());

const MAC_L: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_N: [u8; 6] = [2, 0, 0, 0, 0, 2];

struct Pair {
    lw: LwipBackend<Loopback>,
    nat: NativeBackend<Loopback>,
    ev: Vec<SockEvent>,
}

fn pair() -> Pair {
    let (la, lb) = Loopback::pair(MAC_L, MAC_N);
    let cfg = EngineConfig {
        ip: Ipv4Addr::new(10, 0, 0, 1),
        prefix: 24,
        gateway: None,
        mac: MAC_L,
        rx_buf: 0,
        tx_buf: 0,
        seed: 1,
    };
    let lw = LwipBackend::new(la, &cfg).unwrap();
    let mut nc = StackConfig::new(MAC_N);
    nc.ipv4 = Some((Ipv4Addr::new(10, 0, 0, 2), 24));
    nc.seed = 2;
    let nat = NativeBackend::new(lb, nc).unwrap();
    Pair {
        lw,
        nat,
        ev: Vec::new(),
    }
}

impl Pair {
    fn pump(&mut self) {
        for _ in 0..2 {
            self.lw.poll(&mut self.ev).unwrap();
            self.nat.poll_local(&mut self.ev);
            self.nat.poll(&mut self.ev).unwrap();
        }
        self.ev.clear();
    }

    /// Pumps until `f` holds; fails after 20 s (a hang, not a slow run).
    fn until(&mut self, what: &str, mut f: impl FnMut(&mut Pair) -> bool) {
        let t0 = Instant::now();
        while !f(self) {
            assert!(t0.elapsed() < Duration::from_secs(20), "stalled: {what}");
            self.pump();
        }
    }
}

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn iov(b: &[u8]) -> IoBuf {
    IoBuf {
        iov_base: b.as_ptr().cast_mut().cast(),
        iov_len: b.len(),
    }
}

fn send<B: Backend>(b: &mut B, s: &B::Sock, data: &[u8]) -> io::Result<usize> {
    // SAFETY: a buffer of ours, readable during the call.
    unsafe { b.send(s, &[iov(data)]) }
}

fn recv<B: Backend>(b: &mut B, s: &B::Sock, buf: &mut [u8]) -> io::Result<usize> {
    let v = IoBuf {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: a buffer of ours, written only through this call.
    unsafe { b.recv(s, &[v]) }
}

/// Recomputes the IPv4 header checksum of an Ethernet frame (a crafted test frame).
fn ipv4_header_csum(f: &mut [u8]) {
    f[24..26].fill(0);
    let s = offload::sum_bytes(0, &f[14..34]) as u16;
    f[24..26].copy_from_slice(&(!s).to_be_bytes());
}

fn errno(r: io::Result<usize>) -> i32 {
    r.err().and_then(|e| e.raw_os_error()).unwrap_or(0)
}

/// An lwIP listener, a snstack-tcp client connected to it: (listener, lwIP's side, client).
fn connected(p: &mut Pair, port: u16) -> (UserSock, UserSock, NativeSock) {
    let l = p.lw.socket(libc::AF_INET).unwrap();
    p.lw.setsockopt(
        &l,
        libc::SOL_SOCKET,
        libc::SO_REUSEADDR,
        &1i32.to_ne_bytes(),
    )
    .unwrap();
    p.lw.bind(&l, &a(&format!("10.0.0.1:{port}"))).unwrap();
    p.lw.listen(&l, 16).unwrap();
    p.lw.register(&l, 1).unwrap();
    let c = p.nat.socket(libc::AF_INET).unwrap();
    let r = p.nat.connect(&c, &a(&format!("10.0.0.1:{port}")));
    assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EINPROGRESS));
    p.nat.register(&c, 2).unwrap();
    let mut acc = None;
    p.until("accept", |p| {
        match p.lw.accept(&l) {
            Ok(x) => acc = Some(x),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EAGAIN)),
        }
        acc.is_some()
    });
    let (s, peer) = acc.unwrap();
    assert_eq!(peer.ip(), Ipv4Addr::new(10, 0, 0, 2));
    assert_eq!(p.lw.local_addr(&s).unwrap(), a(&format!("10.0.0.1:{port}")));
    p.lw.register(&s, 3).unwrap();
    p.until("connected", |p| {
        p.nat.connect_state(&c) == ConnectState::Connected
    });
    (l, s, c)
}

#[test]
fn lwip_engine_against_snstack_tcp() {
    let _g = LWIP.lock().unwrap_or_else(|e| e.into_inner());
    let mut p = pair();

    // Local refusals: an address that is not ours, a second listener on a port, an option
    // lwIP lacks.
    let x = p.lw.socket(libc::AF_INET).unwrap();
    assert_eq!(
        p.lw.bind(&x, &a("10.0.0.9:80")).unwrap_err().raw_os_error(),
        Some(libc::EADDRNOTAVAIL)
    );
    assert_eq!(
        p.lw.setsockopt(
            &x,
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            &1i32.to_ne_bytes()
        )
        .unwrap_err()
        .raw_os_error(),
        Some(libc::ENOPROTOOPT)
    );
    let mut b = [0u8; 4];
    p.lw.getsockopt(&x, libc::SOL_SOCKET, libc::SO_RCVBUF, &mut b)
        .unwrap();
    assert_eq!(i32::from_ne_bytes(b), 65535);

    let (l, s, c) = connected(&mut p, 80);
    p.lw.bind(&x, &a("10.0.0.1:80")).unwrap_err();
    p.lw.close(x);

    // 1 MiB each way at once, through lwIP's 64 KiB buffers.
    let total = 1 << 20;
    let up: Vec<u8> = (0..total).map(|i| (i * 7 + i / 251) as u8).collect();
    let down: Vec<u8> = (0..total).map(|i| (i * 11 + i / 509) as u8).collect();
    let (mut sent_up, mut sent_down) = (0, 0);
    let (mut got_up, mut got_down) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; 1 << 16];
    p.until("1 MiB each way", |p| {
        if sent_up < total {
            sent_up += send(&mut p.nat, &c, &up[sent_up..]).unwrap_or(0);
        }
        if sent_down < total {
            match send(&mut p.lw, &s, &down[sent_down..]) {
                Ok(n) => sent_down += n,
                Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EAGAIN)),
            }
        }
        while let Ok(n) = recv(&mut p.lw, &s, &mut buf) {
            assert!(n > 0, "early EOF on lwIP's side");
            got_up.extend_from_slice(&buf[..n]);
        }
        while let Ok(n) = recv(&mut p.nat, &c, &mut buf) {
            assert!(n > 0, "early EOF on the client");
            got_down.extend_from_slice(&buf[..n]);
        }
        got_up.len() >= total && got_down.len() >= total
    });
    assert!(got_up == up, "bytes to lwIP differ");
    assert!(got_down == down, "bytes from lwIP differ");

    // Half-close: the client's FIN is lwIP's end of stream; lwIP still sends, then closes.
    p.nat.shutdown(&c, libc::SHUT_WR).unwrap();
    p.until("EOF at lwIP", |p| {
        recv(&mut p.lw, &s, &mut buf).ok() == Some(0)
    });
    assert_eq!(send(&mut p.lw, &s, b"bye").unwrap(), 3);
    p.lw.close(s);
    let mut tail = Vec::new();
    p.until("lwIP's tail and FIN", |p| {
        match recv(&mut p.nat, &c, &mut buf) {
            Ok(0) => true,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                false
            }
            Err(_) => false,
        }
    });
    assert_eq!(tail, b"bye");
    p.nat.close(c);

    // Closing with unread data resets (as Linux): the client sees ECONNRESET.
    let (l2, s2, c2) = connected(&mut p, 81);
    assert_eq!(send(&mut p.nat, &c2, b"unread").unwrap(), 6);
    p.until("data at lwIP", |p| {
        p.lw.poll(&mut p.ev).unwrap();
        matches!(&p.lw.socks[&s2.0].kind, Kind::Conn(c) if c.rx.len() == 6)
    });
    p.lw.close(s2);
    p.until("reset at the client", |p| {
        errno(recv(&mut p.nat, &c2, &mut buf)) == libc::ECONNRESET
            || p.nat.take_error(&c2) == libc::ECONNRESET
    });
    p.nat.close(c2);

    // The client resets: lwIP's connection reports ECONNRESET, then EPIPE.
    let (l3, s3, c3) = connected(&mut p, 82);
    p.nat
        .setsockopt(
            &c3,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &[1, 0, 0, 0, 0, 0, 0, 0],
        )
        .unwrap();
    p.nat.close(c3);
    p.until("reset at lwIP", |p| {
        errno(recv(&mut p.lw, &s3, &mut buf)) == libc::ECONNRESET
    });
    assert_eq!(errno(send(&mut p.lw, &s3, b"x")), libc::EPIPE);
    p.lw.close(s3);

    // lwIP half-closes first: its FIN is the client's end of stream, the client still sends
    // (lwIP keeps receiving on a pcb it now finds by key), then the FIN exchange ends and lwIP
    // frees the pcb on its own: the engine notices and the close finds nothing to free.
    let (l4, s4, c4) = connected(&mut p, 83);
    assert_eq!(send(&mut p.lw, &s4, b"last words").unwrap(), 10);
    p.lw.shutdown(&s4, libc::SHUT_WR).unwrap();
    assert_eq!(errno(send(&mut p.lw, &s4, b"x")), libc::EPIPE);
    let mut got = Vec::new();
    p.until("lwIP's FIN at the client", |p| {
        match recv(&mut p.nat, &c4, &mut buf) {
            Ok(0) => true,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                false
            }
            Err(_) => false,
        }
    });
    assert_eq!(got, b"last words");
    assert_eq!(send(&mut p.nat, &c4, b"reply").unwrap(), 5);
    let mut reply = Vec::new();
    p.until("the reply at lwIP", |p| {
        if let Ok(n) = recv(&mut p.lw, &s4, &mut buf) {
            reply.extend_from_slice(&buf[..n]);
        }
        reply.len() >= 5
    });
    assert_eq!(reply, b"reply");
    p.nat.close(c4);
    p.until("EOF at lwIP after its own FIN", |p| {
        recv(&mut p.lw, &s4, &mut buf).ok() == Some(0)
    });
    // lwIP closed first: its pcb waits in TIME-WAIT, still found by key.
    p.lw.mark(s4.0);
    p.lw.report(&mut Vec::new());
    assert!(matches!(&p.lw.socks[&s4.0].kind, Kind::Conn(c) if !c.gone));
    p.lw.close(s4);

    // The peer closes first, then lwIP: once its LAST-ACK is acknowledged lwIP frees the pcb
    // without a word; the engine notices (not found by key) and the close frees nothing twice.
    let (l5, s5, c5) = connected(&mut p, 84);
    p.nat.shutdown(&c5, libc::SHUT_WR).unwrap();
    p.until("the peer's FIN at lwIP", |p| {
        recv(&mut p.lw, &s5, &mut buf).ok() == Some(0)
    });
    p.lw.shutdown(&s5, libc::SHUT_WR).unwrap();
    p.until("lwIP let the pcb go", |p| {
        let _ = recv(&mut p.nat, &c5, &mut buf);
        p.lw.mark(s5.0);
        p.lw.report(&mut Vec::new());
        matches!(&p.lw.socks[&s5.0].kind, Kind::Conn(c) if c.gone)
    });
    assert_eq!(recv(&mut p.lw, &s5, &mut buf).unwrap(), 0);
    p.lw.close(s5);
    p.nat.close(c5);

    // Its own address and 127/8 are out of lwIP's reach (its loop queue needs tcpip_thread in
    // this build: lwIP would abort): refused, and a frame claiming to come from there is
    // dropped before lwIP could answer it (it would abort the whole agent).
    let own = p.lw.socket(libc::AF_INET).unwrap();
    for dst in ["10.0.0.1:80", "127.0.0.1:80"] {
        assert_eq!(
            p.lw.connect(&own, &a(dst)).unwrap_err().raw_os_error(),
            Some(libc::ECONNREFUSED)
        );
    }
    p.lw.close(own);
    for src in [[10, 0, 0, 1], [127, 0, 0, 1]] {
        let mut syn = offload::tests::tcp4(1, 0x02, b"");
        syn[0..6].copy_from_slice(&MAC_L);
        syn[26..30].copy_from_slice(&src);
        syn[30..34].copy_from_slice(&[10, 0, 0, 1]);
        assert!(martian_source(&syn, Ipv4Addr::new(10, 0, 0, 1)));
        ipv4_header_csum(&mut syn);
        assert!(offload::fill_l4_csum(&mut syn));
        p.lw.dev.inject(syn, snstack_tcp::RxMeta::default());
        p.pump();
    }
    let ok = offload::tests::tcp4(1, 0x02, b"");
    assert!(!martian_source(&ok, Ipv4Addr::new(10, 0, 0, 2)));
    assert!(admit(&ok, Ipv4Addr::new(10, 0, 0, 2)));
    let mut v6 = ok.clone();
    v6[12..14].copy_from_slice(&[0x86, 0xdd]);
    assert!(!admit(&v6, Ipv4Addr::new(10, 0, 0, 2)));

    // lwIP connects to a port nobody listens on: ECONNREFUSED.
    let o = p.lw.socket(libc::AF_INET).unwrap();
    let r = p.lw.connect(&o, &a("10.0.0.2:9"));
    assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EINPROGRESS));
    p.until("refused", |p| {
        p.lw.connect_state(&o) == ConnectState::Failed(libc::ECONNREFUSED)
    });
    p.lw.close(o);

    // lwIP connects out and talks (the outgoing direction).
    let nl = p.nat.socket(libc::AF_INET).unwrap();
    p.nat.bind(&nl, &a("10.0.0.2:7000")).unwrap();
    p.nat.listen(&nl, 16).unwrap();
    let o = p.lw.socket(libc::AF_INET6).unwrap();
    let r = p.lw.connect(&o, &a("[::ffff:10.0.0.2]:7000"));
    assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EINPROGRESS));
    p.until("lwIP connected", |p| {
        p.lw.connect_state(&o) == ConnectState::Connected
    });
    assert_eq!(p.lw.peer_addr(&o).unwrap(), a("[::ffff:10.0.0.2]:7000"));
    let mut srv = None;
    p.until("native accept", |p| {
        srv = p.nat.accept(&nl).ok();
        srv.is_some()
    });
    let (ns, _) = srv.unwrap();
    assert_eq!(send(&mut p.lw, &o, b"hello").unwrap(), 5);
    let mut got = Vec::new();
    p.until("hello", |p| {
        if let Ok(n) = recv(&mut p.nat, &ns, &mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        got.len() >= 5
    });
    assert_eq!(got, b"hello");
    p.lw.close(o);
    p.nat.close(ns);
    p.nat.close(nl);
    for l in [l, l2, l3, l4, l5] {
        p.lw.close(l);
    }
    p.pump();
    assert_eq!(sys::callback_panics(), 0);
}
