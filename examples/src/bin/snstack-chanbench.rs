//! `snstack-chanbench`: what one trip across the channel costs, next to the hardware floor.
//!
//! * (a) `cacheline_rtt`: two threads pinned to two CPUs ping-pong one `AtomicU64` on its own
//!   cache line. One round trip = two cache-line transfers; no channel can beat it.
//! * (b) `agent_nop_rtt`: attach to a running `snstack-agent` exactly like `libsnstack.so` does,
//!   then push `OP_NOP` commands one at a time and spin on the event ring for each completion.
//!   This is the price of a blocking socket call's round trip minus the work of the call itself.
//!   Skipped (with a message) when the agent is unreachable.
//! * (c) `stream`: two pinned threads move 1 GiB through one 64 KiB `Stream` in a heap region
//!   (no agent) in 64 B, 1 KiB and 16 KiB chunks: the payload copy path of `send`/`recv`.
//! * (d) `sleep_wake`: a thread pinned to the first CPU sleeps in `FUTEX_WAIT`, one on the second
//!   wakes it every 100 us; the sleeper's own CPU time per wake-up (`CLOCK_THREAD_CPUTIME_ID`) is
//!   what a host thread pays each time it sleeps on the doorbell and is woken: the floor under
//!   its CPU per request is this divided by the requests it finds per wake-up.
//!
//! Round trips are timed per iteration with `Instant` (one clock read per trip); medians and p99
//! are reported. `--json` adds one JSON object per line after the table.

use shm_proto::attach;
use shm_proto::msg::{Hello, HELLO_ATTACH};
use shm_proto::region::Geometry;
use shm_proto::{wake, Cmd, Region, Request, EV_COMPLETION};
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::hint::{black_box, spin_loop};
use std::io::Error;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const DEFAULT_SOCKET: &str = "/run/snstack/agent.sock";
const USAGE: &str = "usage: snstack-chanbench [--socket PATH] [--json] [--quick] [--cpus A,B]

  --socket PATH  agent control socket (default $SNSTACK_AGENT or /run/snstack/agent.sock)
  --json         also print one JSON object per result line
  --quick        a tenth of the iterations and bytes (smoke test)
  --cpus A,B     the two CPUs for (a), (c) and (d) (default 0,1)";

struct Opts {
    socket: String,
    json: bool,
    scale: u64,
    cpus: (usize, usize),
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        socket: std::env::var("SNSTACK_AGENT").unwrap_or_else(|_| DEFAULT_SOCKET.into()),
        json: false,
        scale: 1,
        cpus: (0, 1),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--socket" => o.socket = it.next().ok_or("--socket needs a path")?,
            "--json" => o.json = true,
            "--quick" => o.scale = 10,
            "--cpus" => {
                let v = it.next().ok_or("--cpus needs A,B")?;
                let (a, b) = v.split_once(',').ok_or("--cpus needs A,B")?;
                o.cpus = (
                    a.parse().map_err(|_| "bad CPU number")?,
                    b.parse().map_err(|_| "bad CPU number")?,
                );
            }
            "-h" | "--help" => return Err(String::new()),
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    Ok(o)
}

/// Median and 99th percentile of per-iteration times (ns). Sorts `v`.
fn percentiles(v: &mut [u64]) -> (u64, u64) {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    (at(0.5), at(0.99))
}

/// Pins the calling thread to `cpu`; false when the kernel refuses (fewer CPUs, cpuset).
fn pin(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays inside it for cpu < 1024.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
            return false;
        }
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

#[repr(C, align(128))]
struct Padded<T>(T);

// ---------------------------------------------------------------------------------------------
// (a) cache-line round trip

struct Rtt {
    iters: usize,
    median: u64,
    p99: u64,
    pinned: bool,
}

fn cacheline_rtt(cpus: (usize, usize), iters: usize, warmup: usize) -> Rtt {
    let line = Arc::new(Padded(AtomicU64::new(0)));
    let total = (iters + warmup) as u64;
    let ponger = {
        let line = Arc::clone(&line);
        std::thread::spawn(move || {
            let pinned = pin(cpus.1);
            for i in 0..total {
                while line.0.load(Ordering::Acquire) != 2 * i + 1 {
                    spin_loop();
                }
                line.0.store(2 * i + 2, Ordering::Release);
            }
            pinned
        })
    };
    let pinned = pin(cpus.0);
    let mut samples = Vec::with_capacity(iters);
    let mut prev = Instant::now();
    for i in 0..total {
        line.0.store(2 * i + 1, Ordering::Release);
        while line.0.load(Ordering::Acquire) != 2 * i + 2 {
            spin_loop();
        }
        let now = Instant::now();
        if i >= warmup as u64 {
            samples.push((now - prev).as_nanos() as u64);
        }
        prev = now;
    }
    let pinned = ponger.join().unwrap_or(false) && pinned;
    let (median, p99) = percentiles(&mut samples);
    Rtt {
        iters,
        median,
        p99,
        pinned,
    }
}

// ---------------------------------------------------------------------------------------------
// (b) channel round trip through the agent

/// A region mapping received from the agent (`shm_proto::attach`, as the host library does).
struct Attached {
    _ctl: OwnedFd,
    bell: OwnedFd,
    base: *mut u8,
    len: usize,
    region: Region,
}

impl Drop for Attached {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping `attach` made; `region` goes with `self` and no view of the
        // mapping outlives it.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", Error::last_os_error())
}

fn attach(path: &str) -> Result<Attached, String> {
    let a = attach::attach(
        &mut attach::LibcSys::default(),
        path.as_bytes(),
        Hello::new(HELLO_ATTACH, 0),
    )
    .map_err(|e| format!("attach to {path}: {e}"))?;
    Ok(Attached {
        // SAFETY: both fds are ours alone from here on (`Attached` hands them over).
        _ctl: unsafe { OwnedFd::from_raw_fd(a.ctl) },
        // SAFETY: as above.
        bell: unsafe { OwnedFd::from_raw_fd(a.bell) },
        base: a.base,
        len: a.len,
        region: a.region,
    })
}

fn agent_rtt(path: &str, iters: usize, warmup: usize) -> Result<Rtt, String> {
    let a = attach(path)?;
    let region = &a.region;
    let hdr = region.header();
    let mut cmds = region.cmd_producer();
    let mut evts = region.evt_consumer();
    let mut samples = Vec::with_capacity(iters);
    let mut prev = Instant::now();
    for i in 0..(iters + warmup) as u64 {
        let tag = i + 1;
        let c = Cmd {
            tag,
            ..Request::Nop.to_cmd(0)
        };
        let t0 = Instant::now();
        while !cmds.push(c).map_err(|e| e.to_string())? {
            if t0.elapsed() > Duration::from_secs(2) {
                return Err("command ring stayed full for 2 s".into());
            }
            spin_loop();
        }
        if wake::must_ring(&hdr.agent.0.sleeping) {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live buffer to the doorbell eventfd.
            let r = unsafe { libc::write(a.bell.as_raw_fd(), one.as_ptr().cast(), 8) };
            if r != 8 {
                return Err(os_err("doorbell write"));
            }
        }
        let e = loop {
            if let Some(e) = evts.pop().map_err(|e| e.to_string())? {
                break e;
            }
            if hdr.dead.0.load(Ordering::Relaxed) != 0 {
                return Err("the agent dropped the channel".into());
            }
            if t0.elapsed() > Duration::from_secs(2) {
                return Err(format!("no completion for OP_NOP tag {tag} within 2 s"));
            }
            spin_loop();
        };
        if e.kind != EV_COMPLETION || e.tag != tag || e.result != 0 {
            return Err(format!("unexpected event for tag {tag}: {e:?}"));
        }
        let now = Instant::now();
        if i >= warmup as u64 {
            samples.push((now - prev).as_nanos() as u64);
        }
        prev = now;
    }
    let (median, p99) = percentiles(&mut samples);
    Ok(Rtt {
        iters,
        median,
        p99,
        pinned: false,
    })
}

// ---------------------------------------------------------------------------------------------
// (c) stream throughput

/// A zeroed, page-aligned heap block standing in for the shared mapping.
struct HeapRegion {
    ptr: *mut u8,
    layout: Layout,
}

impl HeapRegion {
    fn new(len: usize) -> HeapRegion {
        let layout = Layout::from_size_align(len, 4096).expect("region layout");
        // SAFETY: layout has non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory");
        HeapRegion { ptr, layout }
    }
}

impl Drop for HeapRegion {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with the same layout.
        unsafe { dealloc(self.ptr, self.layout) };
    }
}

struct Throughput {
    chunk: usize,
    bytes: u64,
    secs: f64,
}

fn stream_throughput(cpus: (usize, usize), chunk: usize, bytes: u64) -> Throughput {
    let geo = Geometry {
        max_sockets: 1,
        rx_size: 4096,
        tx_size: 64 * 1024,
        ..Geometry::default()
    };
    let len = geo.offsets().expect("geometry").total as usize;
    let heap = HeapRegion::new(len);
    // SAFETY: zeroed, page-aligned, `len` bytes, freed only after both threads are joined.
    let region = unsafe { Region::init(heap.ptr, len, geo) }.expect("region init");
    let tx = region.tx(0).expect("slot 0");
    let start = Arc::new(Barrier::new(2));
    let consumer = {
        let start = Arc::clone(&start);
        std::thread::spawn(move || {
            pin(cpus.1);
            let mut dst = vec![0u8; chunk];
            let mut head = tx.load_head();
            let mut got = 0u64;
            start.wait();
            while got < bytes {
                let n = (tx.readable(head).expect("stream corrupt") as usize).min(chunk);
                if n == 0 {
                    spin_loop();
                    continue;
                }
                tx.copy_out(head, &mut dst[..n]);
                black_box(&mut dst);
                head = head.wrapping_add(n as u32);
                tx.publish_head(head);
                got += n as u64;
            }
        })
    };
    pin(cpus.0);
    let src = vec![0x5au8; chunk];
    let mut tail = tx.load_tail();
    let mut sent = 0u64;
    start.wait();
    let t0 = Instant::now();
    while sent < bytes {
        let n = chunk.min((bytes - sent) as usize);
        if (tx.writable(tail).expect("stream corrupt") as usize) < n {
            spin_loop();
            continue;
        }
        tx.copy_in(tail, black_box(&src[..n]));
        tail = tail.wrapping_add(n as u32);
        tx.publish_tail(tail);
        sent += n as u64;
    }
    consumer.join().expect("consumer thread");
    let secs = t0.elapsed().as_secs_f64();
    drop(heap);
    Throughput { chunk, bytes, secs }
}

// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// (d) what a sleep and a wake-up cost the sleeper

struct SleepWake {
    wakes: u64,
    cpu_ns_per_wake: u64,
}

fn thread_cpu_ns() -> u64 {
    // SAFETY: a zeroed timespec is valid and clock_gettime writes only into it.
    unsafe {
        let mut t: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t);
        t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
    }
}

fn futex(word: &std::sync::atomic::AtomicU32, op: i32, val: u32) {
    // SAFETY: FUTEX_WAIT/FUTEX_WAKE on a live, aligned u32; no timeout, no second word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op | libc::FUTEX_PRIVATE_FLAG,
            val,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

fn sleep_wake(cpus: (usize, usize), wakes: u64) -> SleepWake {
    use std::sync::atomic::AtomicU32;
    // 0: nothing posted; 1: posted, not taken yet; 2: stop.
    let word = Arc::new(Padded(AtomicU32::new(0)));
    let sleeper = {
        let word = Arc::clone(&word);
        std::thread::spawn(move || {
            pin(cpus.0);
            let (mut got, c0) = (0u64, thread_cpu_ns());
            loop {
                match word.0.load(Ordering::Acquire) {
                    2 => break,
                    // Taken only from 1: a stop (2) stored meanwhile is not wiped out.
                    1 if word
                        .0
                        .compare_exchange(1, 0, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok() =>
                    {
                        got += 1
                    }
                    1 => {}
                    _ => futex(&word.0, libc::FUTEX_WAIT, 0),
                }
            }
            (got, thread_cpu_ns() - c0)
        })
    };
    pin(cpus.1);
    for _ in 0..wakes {
        let until = Instant::now() + Duration::from_micros(100);
        while Instant::now() < until {
            spin_loop();
        }
        if word
            .0
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            futex(&word.0, libc::FUTEX_WAKE, 1);
        }
    }
    word.0.store(2, Ordering::Release);
    futex(&word.0, libc::FUTEX_WAKE, 1);
    let (got, ns) = sleeper.join().unwrap_or((0, 0));
    SleepWake {
        wakes: got,
        cpu_ns_per_wake: ns / got.max(1),
    }
}

fn human_size(n: usize) -> String {
    if n >= 1024 && n % 1024 == 0 {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} B")
    }
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("snstack-chanbench: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rtt_iters = (1_000_000 / o.scale) as usize;
    let agent_iters = (100_000 / o.scale) as usize;
    let agent_warmup = (10_000 / o.scale) as usize;
    let stream_bytes = (1u64 << 30) / o.scale;
    let mut json = Vec::new();
    let mut failed = false;

    println!(
        "snstack-chanbench: {} CPUs online",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<42} {:>12} {:>12} {:>10}",
        "benchmark", "median", "p99", ""
    );

    let a = cacheline_rtt(o.cpus, rtt_iters, rtt_iters / 10);
    let pin_note = if a.pinned {
        format!("CPUs {},{}", o.cpus.0, o.cpus.1)
    } else {
        "unpinned".into()
    };
    println!(
        "{:<42} {:>9} ns {:>9} ns   {}",
        format!("(a) cache-line round trip x{}", a.iters),
        a.median,
        a.p99,
        pin_note
    );
    json.push(format!(
        r#"{{"bench":"cacheline_rtt","iters":{},"median_ns":{},"p99_ns":{},"pinned":{},"cpus":[{},{}]}}"#,
        a.iters, a.median, a.p99, a.pinned, o.cpus.0, o.cpus.1
    ));

    match agent_rtt(&o.socket, agent_iters, agent_warmup) {
        Ok(b) => {
            let ratio = b.median as f64 / a.median.max(1) as f64;
            let ratio99 = b.p99 as f64 / a.p99.max(1) as f64;
            println!(
                "{:<42} {:>9} ns {:>9} ns   {:.1}x (a) median, {:.1}x p99",
                format!("(b) agent OP_NOP round trip x{}", b.iters),
                b.median,
                b.p99,
                ratio,
                ratio99
            );
            json.push(format!(
                r#"{{"bench":"agent_nop_rtt","iters":{},"warmup":{},"median_ns":{},"p99_ns":{},"ratio_median":{:.2},"ratio_p99":{:.2},"socket":"{}"}}"#,
                b.iters, agent_warmup, b.median, b.p99, ratio, ratio99, o.socket.replace('"', "\\\"")
            ));
        }
        Err(e) => {
            // Unreachable agent: skip. Reachable but misbehaving: a failure.
            let unreachable = e.starts_with("connect") || e.starts_with("socket");
            let what = if unreachable { "skipped" } else { "FAILED" };
            println!("{:<42} {what}: {e}", "(b) agent OP_NOP round trip");
            json.push(format!(
                r#"{{"bench":"agent_nop_rtt","{}":"{}"}}"#,
                if unreachable { "skipped" } else { "error" },
                e.replace('\\', "\\\\").replace('"', "\\\"")
            ));
            failed |= !unreachable;
        }
    }

    for chunk in [64usize, 1024, 16 * 1024] {
        let t = stream_throughput(o.cpus, chunk, stream_bytes);
        let gbps = t.bytes as f64 / t.secs / 1e9;
        println!(
            "{:<42} {:>9.2} GB/s ({} MiB in {:.3} s)",
            format!("(c) stream, {} chunks", human_size(t.chunk)),
            gbps,
            t.bytes >> 20,
            t.secs
        );
        json.push(format!(
            r#"{{"bench":"stream","chunk":{},"bytes":{},"secs":{:.6},"gbps":{:.3}}}"#,
            t.chunk, t.bytes, t.secs, gbps
        ));
    }

    let d = sleep_wake(o.cpus, 20_000 / o.scale);
    println!(
        "{:<42} {:>9} ns of the sleeper's CPU per wake-up",
        format!("(d) futex sleep + wake-up x{}", d.wakes),
        d.cpu_ns_per_wake
    );
    json.push(format!(
        r#"{{"bench":"sleep_wake","wakes":{},"cpu_ns_per_wake":{}}}"#,
        d.wakes, d.cpu_ns_per_wake
    ));

    if o.json {
        for j in &json {
            println!("{j}");
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
