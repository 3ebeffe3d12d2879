//! CPU cost of the snstack-tcp engine alone per small request, without devices, channel or
//! scheduling: two stacks joined in memory (frames handed over directly), N keepalive
//! connections, each round every client sends a 64-byte request and the server answers 128
//! bytes. Reports the server stack's nanoseconds per request (frame handling, timers, output,
//! the application calls and readiness events it serves) and the frames per request, median of
//! several runs. This is the engine's share of the agent's per-request cost (`make bench`
//! prints the whole agent's beside it).
//!
//! Usage: snstack-enginebench [CONNS] [ROUNDS] [RUNS]   (defaults 100 2000 5)

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant as Wall;

use snstack_tcp::stack::{SockId, Stack, StackConfig};
use snstack_tcp::{Instant, RxMeta};

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn cfg(ip: Ipv4Addr, m: u8) -> StackConfig {
    let mut c = StackConfig::new([2, 0, 0, 0, 0, m]);
    c.ipv4 = Some((ip, 24));
    c.seed = u64::from(m);
    c
}

/// Moves every frame of `from` into `to`; returns how many.
fn hand(from: &mut Stack, to: &mut Stack, now: Instant) -> usize {
    from.poll_transmit(now);
    let mut n = 0;
    while let Some(f) = from.frames().pop_front() {
        to.handle_frame(now, &f.buf, RxMeta::default());
        from.recycle(f.buf);
        n += 1;
    }
    n
}

struct Run {
    ns_per_req: f64,
    frames_per_req: f64,
}

fn run(conns: usize, rounds: usize) -> Run {
    let mut a = Stack::new(cfg(A, 1), Instant::ZERO);
    let mut b = Stack::new(cfg(B, 2), Instant::ZERO);
    let mut now = Instant::from_micros(1);
    let l = b.socket(false).unwrap();
    b.bind(l, SocketAddr::new(IpAddr::V4(B), 80)).unwrap();
    b.listen(l, 4096).unwrap();
    let mut cs: Vec<SockId> = Vec::new();
    for _ in 0..conns {
        let c = a.socket(false).unwrap();
        let _ = a.connect(c, SocketAddr::new(IpAddr::V4(B), 80));
        cs.push(c);
    }
    let mut ss = Vec::new();
    // Handshakes (SYNs beyond the neighbour queue retry after their 1 s RTO).
    for _ in 0..400 {
        a.handle_timeout(now);
        b.handle_timeout(now);
        hand(&mut a, &mut b, now);
        hand(&mut b, &mut a, now);
        while let Ok((s, _)) = b.accept(l) {
            ss.push(s);
        }
        if ss.len() == conns {
            break;
        }
        now = Instant::from_micros(now.as_micros() + 10_000);
    }
    assert_eq!(ss.len(), conns, "all connections accepted");
    let req = [b'q'; 64];
    let resp = [b'r'; 128];
    let mut buf = [0u8; 256];
    let mut server_ns = 0u128;
    let mut frames = 0usize;
    for _ in 0..rounds {
        now = Instant::from_micros(now.as_micros() + 50);
        for &c in &cs {
            a.send(c, &[&req]).unwrap();
        }
        let mut batch: Vec<Vec<u8>> = Vec::new();
        loop {
            a.poll_transmit(now);
            let n = batch.len();
            batch.extend(a.frames().drain(..).map(|f| f.buf));
            if batch.len() == n {
                break;
            }
        }
        frames += batch.len();
        // The server's work: frames in, requests read, responses written, frames out.
        let t0 = Wall::now();
        for f in &batch {
            b.handle_frame(now, f, RxMeta::default());
        }
        b.handle_timeout(now);
        while b.poll_event().is_some() {}
        for &s in &ss {
            if let Ok(n) = b.recv(s, &mut [&mut buf[..]]) {
                for _ in 0..n / 64 {
                    b.send(s, &[&resp]).unwrap();
                }
            }
        }
        let mut out: Vec<Vec<u8>> = Vec::new();
        loop {
            b.poll_transmit(now);
            let n = out.len();
            out.extend(b.frames().drain(..).map(|f| f.buf));
            if out.len() == n {
                break;
            }
        }
        server_ns += t0.elapsed().as_nanos();
        frames += out.len();
        for f in &out {
            a.handle_frame(now, f, RxMeta::default());
        }
        for f in out {
            b.recycle(f);
        }
        for &c in &cs {
            let _ = a.recv(c, &mut [&mut buf[..]]);
        }
        while a.poll_event().is_some() {}
        hand(&mut a, &mut b, now);
    }
    let reqs = (conns * rounds) as f64;
    Run {
        ns_per_req: server_ns as f64 / reqs,
        frames_per_req: frames as f64 / reqs,
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let conns = args.first().copied().unwrap_or(100);
    let rounds = args.get(1).copied().unwrap_or(2000);
    let runs = args.get(2).copied().unwrap_or(5).max(1);
    let mut ns: Vec<f64> = Vec::new();
    let mut fr = 0.0;
    for _ in 0..runs {
        let r = run(conns, rounds);
        ns.push(r.ns_per_req);
        fr = r.frames_per_req;
    }
    ns.sort_by(|a, b| a.total_cmp(b));
    let med = ns[ns.len() / 2];
    println!(
        "snstack-enginebench conns={conns} rounds={rounds} runs={runs}: server engine {med:.0} ns/request (median; min {:.0}, max {:.0}), {fr:.2} frames/request",
        ns[0],
        ns[ns.len() - 1]
    );
}
