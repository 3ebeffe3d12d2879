//! `snstack-corrupt MODE PORT`: a misbehaving host process for the agent's robustness test
//! (`tests/integration/50-corrupt-region.sh`). Run it under `LD_PRELOAD=libsnstack.so`.
//!
//! It connects a TCP socket to 127.0.0.1:PORT through the preload library (which attaches the
//! channel), sends a few bytes, finds its own region in `/proc/self/maps` (the memfd named
//! `snstack-region`), and breaks one invariant the agent must never trust:
//!
//! | MODE       | corruption                                                            |
//! |------------|-----------------------------------------------------------------------|
//! | `cmd-tail` | command ring tail = head + 100000                                     |
//! | `tx-tail`  | TX tail of the connected slot far past its head, then an `OP_TX_KICK` |
//! | `bad-op`   | a command with op 999                                                 |
//! | `bad-slot` | `OP_TX_KICK` for slot 0xFFFFFF                                        |
//!
//! Then it rings the agent doorbell itself (every eventfd it holds, with raw syscalls: the library's
//! own next push would republish its private, correct index and so repair the damage), waits 1 s,
//! reports `Header::dead`, tries one more send and recv, prints the results with errno, and exits 0.
//! Exit 2: bad usage or no region (not preloaded). A watchdog exits 3 if a call hangs.

use shm_proto::{Cmd, Region, RingHdr, OP_TX_KICK, SF_CONNECTED, SF_OPEN};
use std::io::Error;
use std::process::exit;
use std::sync::atomic::Ordering;
use std::time::Duration;

const USAGE: &str = "usage: snstack-corrupt cmd-tail|tx-tail|bad-op|bad-slot PORT";
const WATCHDOG: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    CmdTail,
    TxTail,
    BadOp,
    BadSlot,
}

fn errno() -> i32 {
    Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn errno_str(e: i32) -> String {
    format!("errno={e} ({})", Error::from_raw_os_error(e))
}

/// Prints `what: ret` and, for -1, the errno.
fn report(what: &str, ret: isize) {
    if ret < 0 {
        println!("{what}: {ret} {}", errno_str(errno()));
    } else {
        println!("{what}: {ret}");
    }
}

/// The first mapping whose path names the snstack memfd: (base, len).
fn find_region() -> Option<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let range = f.next()?;
        let perms = f.next()?;
        let offset = f.next()?;
        let path = f.nth(2)?;
        if !path.contains("snstack-region") || !perms.starts_with("rw") {
            return None;
        }
        if u64::from_str_radix(offset, 16).ok()? != 0 {
            return None;
        }
        let (a, b) = range.split_once('-')?;
        let a = usize::from_str_radix(a, 16).ok()?;
        let b = usize::from_str_radix(b, 16).ok()?;
        Some((a, b - a))
    })
}

/// Our eventfds: the agent doorbell is one of them (the library holds it, number unknown to us).
fn eventfds() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let fd: i32 = e.file_name().to_str()?.parse().ok()?;
        let target = std::fs::read_link(e.path()).ok()?;
        (target.to_str()? == "anon_inode:[eventfd]").then_some(fd)
    })
    .collect()
}

/// Writes 1 to every eventfd we hold, bypassing the preload library's hooks.
fn ring_doorbells() -> usize {
    let one = 1u64.to_ne_bytes();
    let mut rung = 0;
    for fd in eventfds() {
        // SAFETY: writes 8 bytes from a live buffer to an fd of ours; a raw syscall so that the
        // library's `write` hook is not involved.
        let r = unsafe { libc::syscall(libc::SYS_write, fd, one.as_ptr(), one.len()) };
        if r == 8 {
            rung += 1;
        }
    }
    rung
}

fn ring_hdr(region: &Region) -> &RingHdr {
    // SAFETY: cmd_off comes from the validated geometry and the RingHdr lies inside the mapping;
    // its fields are atomics.
    unsafe { &*(region.base().add(region.offsets().cmd_off as usize) as *const RingHdr) }
}

/// Writes `c` at the published tail of the command ring and publishes tail + 1, as a (rogue)
/// producer would. The library's producer is idle: this program is single-threaded.
fn push_raw(region: &Region, c: Cmd) -> u32 {
    let hdr = ring_hdr(region);
    let tail = hdr.tail.0.load(Ordering::Acquire);
    let mask = region.geometry().cmd_entries - 1;
    let at = region.offsets().cmd_off as usize
        + std::mem::size_of::<RingHdr>()
        + (tail & mask) as usize * std::mem::size_of::<Cmd>();
    // SAFETY: the entry lies inside the command ring of the validated region.
    unsafe { std::ptr::write_volatile(region.base().add(at) as *mut Cmd, c) };
    hdr.tail.0.store(tail.wrapping_add(1), Ordering::Release);
    tail
}

/// Slots that look like our connected socket (there is only one in this process).
fn connected_slots(region: &Region) -> Vec<u32> {
    let want = SF_OPEN | SF_CONNECTED;
    (0..region.geometry().max_sockets)
        .filter(|&s| {
            region
                .sock(s)
                .is_some_and(|c| c.state.0.flags.load(Ordering::Acquire) & want == want)
        })
        .collect()
}

fn corrupt(region: &Region, mode: Mode) {
    match mode {
        Mode::CmdTail => {
            let hdr = ring_hdr(region);
            let head = hdr.head.0.load(Ordering::Acquire);
            let tail = head.wrapping_add(100_000);
            hdr.tail.0.store(tail, Ordering::SeqCst);
            println!("corrupt: cmd-tail head={head} tail={tail}");
        }
        Mode::TxTail => {
            let mut slots = connected_slots(region);
            if slots.is_empty() {
                println!("corrupt: no slot is SF_OPEN|SF_CONNECTED; corrupting every slot");
                slots = (0..region.geometry().max_sockets).collect();
            }
            let far = region
                .geometry()
                .tx_size
                .wrapping_mul(16)
                .wrapping_add(12345);
            for &s in &slots {
                if let Some(c) = region.sock(s) {
                    let head = c.tx_head.0.head.load(Ordering::Acquire);
                    c.tx_prod
                        .0
                        .tail
                        .store(head.wrapping_add(far), Ordering::SeqCst);
                }
            }
            // Tell the agent to look (our own kick: the library's would republish its tail).
            let s = slots[0];
            let at = push_raw(
                region,
                Cmd {
                    op: OP_TX_KICK,
                    slot: s,
                    ..Cmd::default()
                },
            );
            println!(
                "corrupt: tx-tail slots={slots:?} tail=head+{far}; OP_TX_KICK slot {s} at ring index {at}"
            );
        }
        Mode::BadOp => {
            let at = push_raw(
                region,
                Cmd {
                    op: 999,
                    tag: 0x0bad,
                    ..Cmd::default()
                },
            );
            println!("corrupt: bad-op op=999 at ring index {at}");
        }
        Mode::BadSlot => {
            let c = Cmd {
                op: OP_TX_KICK,
                slot: 0xFF_FFFF,
                ..Cmd::default()
            };
            let at = push_raw(region, c);
            println!("corrupt: bad-slot OP_TX_KICK slot=0xffffff at ring index {at}");
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("{USAGE}");
        exit(2);
    }
    let mode = match args[1].as_str() {
        "cmd-tail" => Mode::CmdTail,
        "tx-tail" => Mode::TxTail,
        "bad-op" => Mode::BadOp,
        "bad-slot" => Mode::BadSlot,
        _ => {
            eprintln!("{USAGE}");
            exit(2);
        }
    };
    let Ok(port) = args[2].parse::<u16>() else {
        eprintln!("{USAGE}");
        exit(2);
    };
    std::thread::spawn(|| {
        std::thread::sleep(WATCHDOG);
        eprintln!("snstack-corrupt: a call hung for {WATCHDOG:?}; giving up");
        // SAFETY: ends the process at once.
        unsafe { libc::_exit(3) };
    });
    println!("pid: {}", std::process::id());

    // SAFETY: plain socket call; goes through the preload library.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    report("socket", fd as isize);
    if fd < 0 {
        exit(1);
    }
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sa is a valid sockaddr_in of the length given.
    let r = unsafe {
        libc::connect(
            fd,
            &sa as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    report("connect", r as isize);
    let msg = b"snstack-corrupt says hello\n";
    // SAFETY: sends from a live buffer; MSG_NOSIGNAL keeps a dead channel from raising SIGPIPE.
    let n = unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), libc::MSG_NOSIGNAL) };
    report("send", n);

    let Some((base, len)) = find_region() else {
        println!("region: none (no snstack-region mapping: is libsnstack.so preloaded?)");
        exit(2);
    };
    // SAFETY: the library mapped these `len` bytes MAP_SHARED for the life of the process.
    let region = match unsafe { Region::attach(base as *mut u8, len) } {
        Ok(r) => r,
        Err(e) => {
            println!("region: {base:#x}+{len}: {e}");
            exit(2);
        }
    };
    let g = region.geometry();
    println!(
        "region: {base:#x}+{len} cmd_entries={} max_sockets={} tx_size={} connected_slots={:?}",
        g.cmd_entries,
        g.max_sockets,
        g.tx_size,
        connected_slots(&region)
    );

    corrupt(&region, mode);
    let rung = ring_doorbells();
    println!("doorbell: wrote 1 to {rung} eventfd(s)");
    std::thread::sleep(Duration::from_secs(1));
    println!("dead: {}", region.header().dead.0.load(Ordering::SeqCst));

    // SAFETY: as for the first send.
    let n = unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), libc::MSG_NOSIGNAL) };
    report("send after corruption", n);
    let mut buf = [0u8; 256];
    // SAFETY: receives into a live buffer of the given length; never blocks.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    report("recv after corruption", n);
    // SAFETY: closes our socket.
    let r = unsafe { libc::close(fd) };
    report("close", r as isize);
    exit(0);
}
