//! Two processes, one region: the channel over a real memfd shared across `fork`.
//!
//! The parent plays the agent (creates and initialises the region, consumes TX and commands,
//! produces completions); the child plays the host (maps the same memfd a second time at its own
//! address, attaches, produces TX bytes and commands, consumes completions). Both spin with
//! `sched_yield` when idle. Checked: every byte of a 64 MiB patterned TX stream, the order and
//! content of 100k commands and of their completions, and the child's exit status. The whole run
//! is bounded by a deadline on both sides.

#![cfg(all(target_os = "linux", not(loom)))]

use shm_proto::region::Geometry;
use shm_proto::{Cmd, Evt, Region, EV_COMPLETION, OP_NOP, SF_CONNECTED, SF_OPEN};
use std::ptr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const TX_BYTES: u64 = 64 << 20;
const COMMANDS: u64 = 100_000;
const SLOT: u32 = 3;
const DEADLINE: Duration = Duration::from_secs(120);

/// Payload byte at stream position `i`: every bit of `i` reaches the top byte, so a chunk that is
/// stale by a whole ring (or misplaced by one byte) does not match.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

/// Chunk sizes that land on many different ring offsets, including the wrap point.
const SIZES: [usize; 8] = [1, 7, 63, 64, 1000, 4096, 65536, 30011];

fn geometry() -> Geometry {
    Geometry {
        cmd_entries: 256,
        evt_entries: 128,
        max_sockets: 8,
        rx_size: 4096,
        tx_size: 64 * 1024,
        spin_ns: 0,
    }
}

fn check(ok: bool, what: &str) -> std::io::Result<()> {
    if ok {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
            .map_err(|e| std::io::Error::other(format!("{what}: {e}")))
    }
}

/// A shared mapping of `len` bytes of `fd`, unmapped on drop.
struct Mapping {
    base: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(fd: libc::c_int, len: usize) -> std::io::Result<Mapping> {
        // SAFETY: a fresh mapping chosen by the kernel; fd is a valid memfd of at least `len` bytes.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        check(p != libc::MAP_FAILED, "mmap")?;
        Ok(Mapping {
            base: p.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped; no view outlives the mapping in this test.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

fn expired(start: Instant) -> bool {
    start.elapsed() > DEADLINE
}

fn idle() {
    // SAFETY: no arguments, no memory touched.
    unsafe { libc::sched_yield() };
}

/// Host side, run in the child. Returns a description of the first failure.
fn host(fd: libc::c_int, len: usize, chunk: &mut [u8]) -> Result<(), String> {
    let start = Instant::now();
    let map = Mapping::new(fd, len).map_err(|e| e.to_string())?;
    // SAFETY: the mapping lives until the end of this function; the region outlives nothing here.
    let region =
        unsafe { Region::attach(map.base, map.len) }.map_err(|e| format!("attach: {e}"))?;
    if region.geometry() != geometry() {
        return Err(format!("geometry differs: {:?}", region.geometry()));
    }
    let flags = region
        .sock(SLOT)
        .ok_or("no slot")?
        .state
        .0
        .flags
        .load(Ordering::Acquire);
    if flags != SF_OPEN | SF_CONNECTED {
        return Err(format!(
            "slot state not visible across processes: {flags:#x}"
        ));
    }
    let tx = region.tx(SLOT).ok_or("no tx stream")?;
    let mut cmds = region.cmd_producer();
    let mut evts = region.evt_consumer();

    let mut tail = tx.load_tail();
    let mut sent: u64 = 0;
    let mut next_cmd: u64 = 0;
    let mut next_evt: u64 = 0;
    let mut k = 0usize;
    while sent < TX_BYTES || next_cmd < COMMANDS || next_evt < COMMANDS {
        if expired(start) {
            return Err(format!(
                "host timed out: sent {sent}, cmds {next_cmd}, evts {next_evt}"
            ));
        }
        let mut progress = false;
        if sent < TX_BYTES {
            let want = SIZES[k % SIZES.len()].min((TX_BYTES - sent) as usize);
            let free = tx.writable(tail).map_err(|e| e.to_string())? as usize;
            let n = want.min(free);
            if n > 0 {
                for (j, b) in chunk[..n].iter_mut().enumerate() {
                    *b = pattern(sent + j as u64);
                }
                tx.copy_in(tail, &chunk[..n]);
                tail = tail.wrapping_add(n as u32);
                tx.publish_tail(tail);
                sent += n as u64;
                k += 1;
                progress = true;
            }
        }
        while next_cmd < COMMANDS {
            let c = Cmd {
                op: OP_NOP,
                flags: (next_cmd % 7) as u16,
                slot: SLOT,
                tag: next_cmd + 1,
                arg: [next_cmd, !next_cmd, next_cmd * 3, 0, 0, u64::MAX - next_cmd],
            };
            if !cmds.push(c).map_err(|e| e.to_string())? {
                break;
            }
            next_cmd += 1;
            progress = true;
        }
        while let Some(e) = evts.pop().map_err(|e| e.to_string())? {
            let want = next_evt + 1;
            if e.kind != EV_COMPLETION || e.tag != want || e.result != (next_evt * 5) as i64 {
                return Err(format!("event {next_evt} out of order or wrong: {e:?}"));
            }
            if e.data[..8] != want.to_le_bytes() || e.data[39] != (next_evt as u8) {
                return Err(format!("event {next_evt} data wrong: {e:?}"));
            }
            next_evt += 1;
            progress = true;
        }
        if !progress {
            idle();
        }
    }
    Ok(())
}

/// Agent side, run in the parent while the child runs `host`.
fn agent(region: &Region, child: libc::pid_t) -> Result<(), String> {
    let start = Instant::now();
    let tx = region.tx(SLOT).ok_or("no tx stream")?;
    let mut cmds = region.cmd_consumer();
    let mut evts = region.evt_producer();
    let mut buf = vec![0u8; 20_000];
    let mut head = tx.load_head();
    let mut got: u64 = 0;
    let mut next_cmd: u64 = 0;
    let mut pending: Option<Evt> = None;
    let mut k = 0usize;
    while got < TX_BYTES || next_cmd < COMMANDS || pending.is_some() {
        if expired(start) {
            return Err(format!(
                "agent timed out: got {got} bytes, {next_cmd} commands"
            ));
        }
        let mut progress = false;
        // Reads of varying size so that the consumer's head also lands everywhere.
        let avail = tx.readable(head).map_err(|e| e.to_string())? as usize;
        let n = avail.min(1 + (k * 7919) % buf.len());
        if n > 0 {
            tx.copy_out(head, &mut buf[..n]);
            for (j, &b) in buf[..n].iter().enumerate() {
                if b != pattern(got + j as u64) {
                    return Err(format!(
                        "tx byte {} is {b:#x}, want {:#x}",
                        got + j as u64,
                        pattern(got + j as u64)
                    ));
                }
            }
            head = head.wrapping_add(n as u32);
            tx.publish_head(head);
            got += n as u64;
            k += 1;
            progress = true;
        }
        loop {
            if let Some(e) = pending {
                if !evts.push(e).map_err(|e| e.to_string())? {
                    break;
                }
                pending = None;
                progress = true;
            }
            let Some(c) = cmds.pop().map_err(|e| e.to_string())? else {
                break;
            };
            let i = next_cmd;
            let want = [i, !i, i * 3, 0, 0, u64::MAX - i];
            if c.op != OP_NOP
                || c.flags != (i % 7) as u16
                || c.slot != SLOT
                || c.tag != i + 1
                || c.arg != want
            {
                return Err(format!("command {i} out of order or wrong: {c:?}"));
            }
            let mut data = [0u8; 40];
            data[..8].copy_from_slice(&c.tag.to_le_bytes());
            data[39] = i as u8;
            pending = Some(Evt {
                kind: EV_COMPLETION,
                slot: c.slot,
                tag: c.tag,
                result: (i * 5) as i64,
                data,
                ..Evt::default()
            });
            next_cmd += 1;
        }
        if !progress {
            idle();
            if k % 64 == 0 {
                // Fail fast if the host died instead of waiting for the deadline.
                let mut status = 0;
                // SAFETY: child is our own child; WNOHANG never blocks.
                let r = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
                if r == child {
                    return Err(format!("host exited early, status {status:#x}"));
                }
            }
            k += 1;
        }
    }
    if tx.readable(head).map_err(|e| e.to_string())? != 0 {
        return Err("extra TX bytes after the end".into());
    }
    Ok(())
}

#[test]
fn stream_and_rings_across_processes() {
    let geo = geometry();
    let len = geo.offsets().unwrap().total as usize;
    // SAFETY: a NUL-terminated name; flags are valid.
    let fd = unsafe { libc::memfd_create(c"snstack-region-test".as_ptr(), libc::MFD_CLOEXEC) };
    check(fd >= 0, "memfd_create").unwrap();
    // SAFETY: fd is our memfd.
    check(
        unsafe { libc::ftruncate(fd, len as libc::off_t) } == 0,
        "ftruncate",
    )
    .unwrap();
    let map = Mapping::new(fd, len).unwrap();
    // SAFETY: fresh zero-filled, page-aligned shared mapping of `len` bytes, alive for the test.
    let region = unsafe { Region::init(map.base, len, geo) }.unwrap();
    let st = &region.sock(SLOT).unwrap().state.0;
    st.flags.store(SF_OPEN | SF_CONNECTED, Ordering::Release);

    // Everything the child needs is allocated before fork: other test-harness threads may hold the
    // allocator lock at that moment.
    let mut chunk = vec![0u8; 65536];
    // SAFETY: fork in a test process; the child only touches its own memory and the shared
    // mapping, and leaves with _exit without running the harness's destructors.
    let pid = unsafe { libc::fork() };
    check(pid >= 0, "fork").unwrap();
    if pid == 0 {
        let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            host(fd, len, &mut chunk)
        })) {
            Ok(Ok(())) => 0,
            Ok(Err(msg)) => {
                eprintln!("host (child): {msg}");
                1
            }
            Err(_) => 2,
        };
        // SAFETY: leaves the child at once.
        unsafe { libc::_exit(code) };
    }

    let t0 = Instant::now();
    let res = agent(&region, pid);
    let elapsed = t0.elapsed();
    if res.is_err() {
        // SAFETY: pid is our child; it may still be spinning.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let mut status = 0;
    // SAFETY: pid is our child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    // SAFETY: fd is ours and no longer needed (both mappings hold their own reference).
    unsafe { libc::close(fd) };
    res.unwrap();
    assert_eq!(r, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status:#x}"
    );
    eprintln!(
        "cross_process: {} MiB TX + {COMMANDS} commands/completions in {:.2?}",
        TX_BYTES >> 20,
        elapsed
    );
}
