//! Property test: arbitrary and mutated frames never panic the engine or break its invariants
//! (every connection's send queue within its buffer, the socket count bounded).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use core::time::Duration;
use snstack_tcp::stack::{Stack, StackConfig};
use snstack_tcp::wire::{checksum, ethernet, ipv4, tcp};
use snstack_tcp::{Instant, RxCsum, RxMeta, Seq};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const ME: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

/// A valid TCP/IPv4 frame to us with fields drawn from `r`, then maybe mutated.
fn tcp_frame(r: &mut Rng, isn_hint: u32) -> Vec<u8> {
    let plen = [0usize, 1, 10, 1448, 3000][r.below(5) as usize];
    let mut opts = tcp::TcpOptions::default();
    if r.below(2) == 0 {
        opts.mss = Some(r.below(70000) as u16);
    }
    if r.below(2) == 0 {
        opts.wscale = Some(r.below(20) as u8);
    }
    opts.sack_permitted = r.below(2) == 0;
    if r.below(2) == 0 {
        opts.timestamp = Some((r.next() as u32, r.next() as u32));
    }
    let n = r.below(4) as u8;
    for i in 0..usize::from(n) {
        let a = isn_hint.wrapping_add(r.below(200_000) as u32);
        opts.sack[i] = (Seq(a), Seq(a.wrapping_add(r.below(5000) as u32)));
    }
    opts.sack_len = n;
    let repr = tcp::TcpRepr {
        src_port: [40000u16, 40001, 0][r.below(3) as usize],
        dst_port: [80u16, 81, 0][r.below(3) as usize],
        seq: Seq(isn_hint.wrapping_add(r.below(100_000) as u32)),
        ack: Seq(r.next() as u32),
        flags: r.next() as u8,
        window: r.next() as u16,
        urgent: 0,
        opts,
    };
    let th = repr.header_len();
    let l4 = th + plen;
    let mut f = vec![0u8; ethernet::HEADER_LEN + ipv4::HEADER_LEN + l4];
    ethernet::EthRepr {
        dst: MAC,
        src: [2, 0, 0, 0, 0, 1],
        ethertype: ethernet::ETHERTYPE_IPV4,
    }
    .emit(&mut f[..14]);
    ipv4::Ipv4Repr {
        src: PEER,
        dst: ME,
        proto: ipv4::PROTO_TCP,
        ttl: 64,
        tos: 0,
        ident: 1,
        dont_frag: true,
        payload_len: l4,
    }
    .emit(&mut f[14..34]);
    repr.emit(&mut f[34..34 + th]);
    for b in &mut f[34 + th..] {
        *b = r.next() as u8;
    }
    let pseudo = checksum::pseudo_v4(PEER, ME, ipv4::PROTO_TCP, l4 as u32);
    tcp::fill_checksum(&mut f[34..], pseudo, false);
    // Mutations: flip bytes, truncate, extend.
    match r.below(6) {
        0 => {
            let i = r.below(f.len() as u64) as usize;
            f[i] ^= r.next() as u8 | 1;
        }
        1 => {
            let n = r.below(f.len() as u64) as usize;
            f.truncate(n);
        }
        2 => f.extend((0..r.below(64)).map(|_| r.next() as u8)),
        _ => {}
    }
    f
}

#[test]
fn random_frames_never_panic() {
    let mut cfg = StackConfig::new(MAC);
    cfg.ipv4 = Some((ME, 24));
    let mut s = Stack::new(cfg, Instant::ZERO);
    let l = s.socket(false).unwrap();
    s.bind(l, SocketAddr::new(IpAddr::V4(ME), 80)).unwrap();
    s.listen(l, 16).unwrap();
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut now = Instant::ZERO;
    let iters = if cfg!(debug_assertions) {
        60_000
    } else {
        400_000
    };
    let mut buf = [0u8; 4096];
    for i in 0..iters {
        now += Duration::from_micros(r.below(20_000));
        let meta = RxMeta {
            csum: [
                RxCsum::Unknown,
                RxCsum::Verified,
                RxCsum::Partial,
                RxCsum::Bad,
            ][r.below(4) as usize],
            gso: None,
        };
        let f = if r.below(10) == 0 {
            (0..r.below(200)).map(|_| r.next() as u8).collect()
        } else {
            tcp_frame(&mut r, (i as u32).wrapping_mul(2654435761))
        };
        s.handle_frame(now, &f, meta);
        s.handle_timeout(now);
        s.poll_transmit(now);
        while let Some(fr) = s.frames().pop_front() {
            assert!(fr.buf.len() >= 14);
            s.recycle(fr.buf);
        }
        while let Ok((c, _)) = s.accept(l) {
            let _ = s.send(c, &[&buf[..r.below(4096) as usize]]);
            let _ = s.recv(c, &mut [&mut buf[..]]);
            if r.below(3) == 0 {
                s.close(c);
            }
        }
        while s.poll_event().is_some() {}
        assert!(s.socket_count() < 10_000);
    }
    // Everything times out eventually.
    for _ in 0..400 {
        now += Duration::from_secs(10);
        s.handle_timeout(now);
        s.poll_transmit(now);
        while s.frames().pop_front().is_some() {}
    }
    eprintln!("stats {:?}, sockets left {}", s.stats, s.socket_count());
}
