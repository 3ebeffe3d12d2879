//! Fork tickets and shared sockets against the built agent, with real forked children.
//!
//! The test process plays the parent (and the TCP peers); a `libc::fork` child attaches with
//! `HELLO_ATTACH_CHILD`. Children never print or unwind into the harness: they report through
//! their exit status. Every wait is bounded; agents and children are killed by PID on failure.
//! The tests run one at a time (a fork while another test thread allocates is legal with glibc,
//! but there is no need to risk it).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use shm_proto::msg::HELLO_ATTACH_CHILD;
use shm_proto::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Forks; the child runs `f` and `_exit`s with its result (101 when it panics).
fn in_child(f: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: fork(2); the child only runs `f` (syscalls, allocation: glibc's malloc is fork
    // safe) and leaves with _exit, never returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        std::panic::set_hook(Box::new(|_| {}));
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
        // SAFETY: leaving the child without running the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Exit code of child `pid` within the timeout (killed by PID otherwise).
fn wait_child(pid: libc::pid_t) -> i32 {
    let t0 = Instant::now();
    loop {
        let mut st = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        if r == pid {
            return if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else {
                -1
            };
        }
        if t0.elapsed() > TIMEOUT * 2 {
            // SAFETY: kill(2) on our own child's PID.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: reaping it.
            unsafe { libc::waitpid(pid, &mut st, 0) };
            panic!("child {pid} did not finish");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh fds owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// True when `fd` becomes readable (data or EOF) within `ms`.
fn readable(fd: RawFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) == 1 }
}

fn signal(fd: &OwnedFd) {
    // SAFETY: one readable byte.
    let n = unsafe { libc::write(fd.as_raw_fd(), b"x".as_ptr().cast(), 1) };
    assert_eq!(n, 1);
}

fn listener(h: &mut Host) -> (u32, u16) {
    let ls = h.call(0, tcp4()).result as u32;
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    assert_eq!(h.call(ls, bind_to(&any)).result, 0);
    assert_eq!(h.call(ls, Request::Listen { backlog: 128 }).result, 0);
    (ls, port_of(&h.call(ls, Request::GetSockName)))
}

fn fork_ticket(h: &mut Host) -> u64 {
    let e = h.call(0, Request::Fork);
    assert_eq!(e.result, 0, "OP_FORK");
    let secret = u64::from_le_bytes(e.data[..8].try_into().unwrap());
    assert_ne!(secret, 0);
    secret
}

fn close(h: &mut Host, slot: u32) {
    h.push(Request::Close.to_cmd(slot));
}

fn wait_stats(
    agent: &Agent,
    what: &str,
    f: impl Fn(&std::collections::HashMap<String, u64>) -> bool,
) {
    let t0 = Instant::now();
    loop {
        let st = agent.stats();
        if f(&st) {
            return;
        }
        assert!(
            t0.elapsed() < TIMEOUT,
            "timed out waiting for {what}: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads the one byte the accepting process writes on each connection.
fn who_accepted(s: &mut TcpStream, mut serve: impl FnMut()) -> u8 {
    s.set_nonblocking(true).unwrap();
    let t0 = Instant::now();
    let mut b = [0u8; 1];
    loop {
        serve();
        match s.read(&mut b) {
            Ok(1) => return b[0],
            Ok(_) => panic!("EOF before the greeting"),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("client read: {e}"),
        }
        assert!(t0.elapsed() < TIMEOUT, "nobody accepted the connection");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn parent_and_child_share_one_accept_queue() {
    let _g = serial();
    let agent = Agent::start("fork-listen");
    let mut h = Host::attach(&agent.sock);
    let (ls, port) = listener(&mut h);
    let secret = fork_ticket(&mut h);
    assert_eq!(agent.stats()["tickets"], 1);
    let (stop_r, stop_w) = pipe();
    let stop_w_raw = stop_w.as_raw_fd();
    let sock = agent.sock.clone();
    let pid = in_child(move || {
        // SAFETY: our copy of the write end (the parent keeps its own): EOF then means the
        // test process is gone.
        unsafe { libc::close(stop_w_raw) };
        let t0 = Instant::now();
        let Ok(mut c) = Host::attach_as(&sock, HELLO_ATTACH_CHILD, secret) else {
            return 2;
        };
        let f = c.sock(ls).state.0.flags.load(Ordering::SeqCst);
        if f & (SF_OPEN | SF_LISTENING) != SF_OPEN | SF_LISTENING {
            return 3;
        }
        // A new socket in the child skips the inherited slot number.
        let fresh = c.call(0, tcp4()).result as u32;
        if fresh == ls {
            return 4;
        }
        close(&mut c, fresh);
        let mut n = 0;
        loop {
            let tag = c.submit(ls, Request::Accept { wait: true });
            let e = loop {
                if let Some(e) = c.poll_tag(tag) {
                    break e;
                }
                if readable(stop_r.as_raw_fd(), 1) {
                    return n;
                }
                if t0.elapsed() > TIMEOUT * 3 {
                    return 99;
                }
            };
            if e.result < 0 {
                return 5;
            }
            let cs = e.result as u32;
            if c.write_tx(cs, b"C") != 1 {
                return 6;
            }
            close(&mut c, cs);
            n += 1;
        }
    });
    let r = h
        .call(
            0,
            Request::ForkChild {
                secret,
                pid: pid as u64,
            },
        )
        .result;
    assert!(r == 0 || r == -(libc::ENOENT as i64), "OP_FORK_CHILD: {r}");
    // One OS socket, bound in two sessions (the child's own new socket closed again).
    wait_stats(&agent, "the child's claim", |st| {
        st["sockets_shared"] == 1
            && st["tickets"] == 0
            && st["processes"] == 2
            && st["sockets"] == 1
    });

    // Both processes park accepts: connections are served oldest-parked first.
    let mut tag = h.submit(ls, Request::Accept { wait: true });
    let mut who = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        who.push(who_accepted(&mut s, || {
            if let Some(e) = h.poll_tag(tag) {
                assert!(e.result >= 0, "parent accept: {}", e.result);
                let cs = e.result as u32;
                assert_eq!(h.write_tx(cs, b"P"), 1);
                close(&mut h, cs);
                tag = h.submit(ls, Request::Accept { wait: true });
            }
        }));
    }
    let (p, c) = (
        who.iter().filter(|&&b| b == b'P').count(),
        who.iter().filter(|&&b| b == b'C').count(),
    );
    assert!(
        p > 0 && c > 0 && p + c == 20,
        "{}",
        String::from_utf8_lossy(&who)
    );

    // The parent closes its binding: its parked accept ends, the child keeps the listener.
    close(&mut h, ls);
    assert_eq!(h.wait(tag).result, -(libc::EINVAL as i64));
    for _ in 0..10 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert_eq!(who_accepted(&mut s, || {}), b'C');
    }
    assert_eq!(agent.stats()["sockets_shared"], 0);
    signal(&stop_w);
    assert_eq!(wait_child(pid) as usize, c + 10, "child's accept count");
    wait_stats(&agent, "the child's sockets to close", |st| {
        st["sockets"] == 0 && st["processes"] == 1
    });
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    assert_eq!(agent.stats()["channels_dropped"], 0);
}

#[test]
fn connection_moves_to_the_child_with_unread_bytes() {
    let _g = serial();
    let agent = Agent::start("fork-conn");
    let mut h = Host::attach(&agent.sock);
    let (ls, port) = listener(&mut h);
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let cs = h.call(ls, Request::Accept { wait: true }).result as u32;
    client.write_all(b"before-fork").unwrap();
    until("RX bytes", || {
        let rx = h.region.rx(cs).unwrap();
        rx.readable(rx.load_head()).unwrap() >= 11
    });
    // The parent reads 4 of them; the other 7 stay unread in its RX stream.
    let mut got = Vec::new();
    h.read_rx_max(cs, &mut got, 4);
    assert_eq!(&got, b"befo");

    let secret = fork_ticket(&mut h);
    let sock = agent.sock.clone();
    let pid = in_child(move || {
        let Ok(mut c) = Host::attach_as(&sock, HELLO_ATTACH_CHILD, secret) else {
            return 2;
        };
        let f = c.sock(cs).state.0.flags.load(Ordering::SeqCst);
        if f & (SF_OPEN | SF_CONNECTED) != SF_OPEN | SF_CONNECTED {
            return 3;
        }
        // Nothing arrives while the parent is the reader; then its unread bytes, then new ones.
        let want = b"re-forkafter-close";
        let mut got = Vec::new();
        let t0 = Instant::now();
        while got.len() < want.len() {
            c.read_rx(cs, &mut got);
            if got.len() < want.len()
                && c.sock(cs).state.0.flags.load(Ordering::SeqCst) & SF_RX_FIN != 0
            {
                return 4;
            }
            if t0.elapsed() > TIMEOUT {
                return 5;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if got != want {
            return 6;
        }
        if c.write_tx(cs, b"child-tx") != 8 {
            return 7;
        }
        close(&mut c, cs);
        0
    });
    let r = h
        .call(
            0,
            Request::ForkChild {
                secret,
                pid: pid as u64,
            },
        )
        .result;
    assert!(r == 0 || r == -(libc::ENOENT as i64), "OP_FORK_CHILD: {r}");

    // The peer does not read yet: fill the parent's TX until it stays full.
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let mut reader = client.try_clone().unwrap();
    let peer = std::thread::spawn(move || {
        go_rx.recv().unwrap();
        reader.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut all = Vec::new();
        reader.read_to_end(&mut all).unwrap();
        all
    });
    let chunk: Vec<u8> = (0..65536u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut sent = Vec::new();
    let mut full_since: Option<Instant> = None;
    let t0 = Instant::now();
    loop {
        let n = h.write_tx(cs, &chunk[sent.len() % chunk.len()..]);
        sent.extend_from_slice(&chunk[sent.len() % chunk.len()..][..n]);
        if n > 0 {
            full_since = None;
        } else if full_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_millis(50)
        {
            break;
        }
        assert!(
            t0.elapsed() < TIMEOUT && sent.len() < 256 << 20,
            "TX never fills"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    let tx = h.region.tx(cs).unwrap();
    assert!(
        tx.used(tx.load_head(), tx.load_tail()).unwrap() > 0,
        "TX pending at close"
    );
    close(&mut h, cs);
    client.write_all(b"after-close").unwrap();
    go_tx.send(()).unwrap();
    let all = peer.join().unwrap();
    assert_eq!(
        all.len(),
        sent.len() + 8,
        "peer got every TX byte, then the child's"
    );
    assert!(all[..sent.len()] == sent[..], "parent's TX corrupted");
    assert_eq!(&all[sent.len()..], b"child-tx");
    assert_eq!(wait_child(pid), 0, "child's view of the migrated RX");
    wait_stats(&agent, "the connection to close", |st| {
        st["sockets"] == 1 && st["sockets_shared"] == 0 && st["tickets"] == 0
    });
    assert_eq!(agent.stats()["channels_dropped"], 0);
}

#[test]
fn only_the_child_may_claim() {
    let _g = serial();
    let agent = Agent::start("fork-perm");
    let mut h = Host::attach(&agent.sock);
    let (ls, _port) = listener(&mut h);
    let secret = fork_ticket(&mut h);
    let sock = agent.sock.clone();

    // A wrong secret is unknown; the parent is not its own child.
    assert_eq!(
        Host::attach_as(&agent.sock, HELLO_ATTACH_CHILD, secret ^ 1).err(),
        Some(libc::ENOENT as u32)
    );
    assert_eq!(
        Host::attach_as(&agent.sock, HELLO_ATTACH_CHILD, secret).err(),
        Some(libc::EPERM as u32)
    );
    // Another session cannot tie the ticket to a child.
    let mut other = Host::attach(&agent.sock);
    assert_eq!(
        other.call(0, Request::ForkChild { secret, pid: 1 }).result,
        -(libc::ENOENT as i64)
    );
    // A grandchild (not the parent's child) is refused.
    let s2 = sock.clone();
    let a = in_child(move || {
        let g = in_child(
            move || match Host::attach_as(&s2, HELLO_ATTACH_CHILD, secret) {
                Err(e) if e == libc::EPERM as u32 => 0,
                Err(_) => 10,
                Ok(_) => 11,
            },
        );
        wait_child(g)
    });
    assert_eq!(wait_child(a), 0, "grandchild refused");
    // Once a child is recorded, a sibling is refused; the child claims once.
    let (go_r, go_w) = pipe();
    let s3 = sock.clone();
    let b = in_child(move || {
        if !readable(go_r.as_raw_fd(), 10_000) {
            return 20;
        }
        let Ok(c) = Host::attach_as(&s3, HELLO_ATTACH_CHILD, secret) else {
            return 21;
        };
        if c.sock(ls).state.0.flags.load(Ordering::SeqCst) & SF_LISTENING == 0 {
            return 22;
        }
        match Host::attach_as(&s3, HELLO_ATTACH_CHILD, secret) {
            Err(e) if e == libc::ENOENT as u32 => 0,
            _ => 23,
        }
    });
    assert_eq!(
        h.call(
            0,
            Request::ForkChild {
                secret,
                pid: b as u64
            }
        )
        .result,
        0
    );
    let s4 = sock.clone();
    let sibling = in_child(
        move || match Host::attach_as(&s4, HELLO_ATTACH_CHILD, secret) {
            Err(e) if e == libc::EPERM as u32 => 0,
            Err(_) => 30,
            Ok(_) => 31,
        },
    );
    assert_eq!(wait_child(sibling), 0, "sibling refused");
    signal(&go_w);
    assert_eq!(wait_child(b), 0, "the recorded child claims, once");
    assert!(agent.log_text().contains("child attach refused"));

    // OP_FORK_CHILD naming a process that is not the caller's child.
    let secret2 = fork_ticket(&mut h);
    assert_eq!(
        h.call(
            0,
            Request::ForkChild {
                secret: secret2,
                pid: 1
            }
        )
        .result,
        -(libc::ESRCH as i64)
    );
    // Same parent, other uid: refused (needs root to switch uids).
    // SAFETY: getuid(2) has no preconditions.
    if unsafe { libc::getuid() } == 0 {
        let s5 = sock.clone();
        let u = in_child(move || {
            // SAFETY: dropping privileges in the child only.
            if unsafe { libc::setgid(65534) } != 0 || unsafe { libc::setuid(65534) } != 0 {
                return 40;
            }
            match Host::attach_as(&s5, HELLO_ATTACH_CHILD, secret2) {
                Err(e) if e == libc::EPERM as u32 => 0,
                Err(_) => 41,
                Ok(_) => 42,
            }
        });
        assert_eq!(wait_child(u), 0, "other uid refused");
    }
    // OP_FORK without a tag is a violation of that channel only.
    other.push(Cmd {
        op: OP_FORK,
        ..Default::default()
    });
    until("tagless OP_FORK drops the channel", || other.dead());
    assert_eq!(h.call(0, Request::Nop).result, 0);
    assert_eq!(agent.stats()["channels_dropped"], 1);
}

#[test]
fn unclaimed_ticket_goes_with_its_child() {
    let _g = serial();
    let agent = Agent::start("fork-exit");
    let mut h = Host::attach(&agent.sock);
    let (ls, port) = listener(&mut h);
    assert_eq!(agent.stats()["sockets"], 1);
    let secret = fork_ticket(&mut h);
    let (go_r, go_w) = pipe();
    let pid = in_child(move || {
        readable(go_r.as_raw_fd(), 10_000);
        0
    });
    assert_eq!(
        h.call(
            0,
            Request::ForkChild {
                secret,
                pid: pid as u64
            }
        )
        .result,
        0
    );
    // The parent closes its listener: the ticket still holds it open.
    close(&mut h, ls);
    assert_eq!(h.call(0, Request::Nop).result, 0);
    let st = agent.stats();
    assert_eq!((st["sockets"], st["tickets"]), (1, 1), "{st:?}");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "listener held by the ticket"
    );
    // The child exits without claiming: the ticket and the listener go.
    signal(&go_w);
    assert_eq!(wait_child(pid), 0);
    wait_stats(&agent, "ticket dropped", |st| {
        st["tickets"] == 0 && st["sockets"] == 0
    });
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "listener closed"
    );
    assert_eq!(
        h.call(
            0,
            Request::ForkChild {
                secret,
                pid: pid as u64
            }
        )
        .result,
        -(libc::ENOENT as i64)
    );

    // A child already reaped when OP_FORK_CHILD arrives: the ticket goes at once.
    let (ls, _) = listener(&mut h);
    let secret = fork_ticket(&mut h);
    let pid = in_child(|| 0);
    assert_eq!(wait_child(pid), 0);
    assert_eq!(
        h.call(
            0,
            Request::ForkChild {
                secret,
                pid: pid as u64
            }
        )
        .result,
        0
    );
    let st = agent.stats();
    assert_eq!((st["tickets"], st["sockets"]), (0, 1), "{st:?}");
    close(&mut h, ls);
    wait_stats(&agent, "all closed", |st| st["sockets"] == 0);
}

#[test]
fn accept_then_fork_parent_closes_before_the_child_claims() {
    let _g = serial();
    let agent = Agent::start("fork-orphan");
    let mut h = Host::attach(&agent.sock);
    let (ls, port) = listener(&mut h);
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    let cs = h.call(ls, Request::Accept { wait: true }).result as u32;
    client.write_all(b"request").unwrap();
    until("RX bytes", || {
        let rx = h.region.rx(cs).unwrap();
        rx.readable(rx.load_head()).unwrap() >= 7
    });
    let secret = fork_ticket(&mut h);
    let (go_r, go_w) = pipe();
    let sock = agent.sock.clone();
    let pid = in_child(move || {
        if !readable(go_r.as_raw_fd(), 10_000) {
            return 2;
        }
        let Ok(mut c) = Host::attach_as(&sock, HELLO_ATTACH_CHILD, secret) else {
            return 3;
        };
        // Everything the parent left unread, everything that came meanwhile, then the FIN.
        let mut got = Vec::new();
        let t0 = Instant::now();
        loop {
            let fin = c.sock(cs).state.0.flags.load(Ordering::SeqCst) & SF_RX_FIN != 0;
            c.read_rx(cs, &mut got);
            if fin {
                break;
            }
            if t0.elapsed() > TIMEOUT {
                return 4;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if got != b"request-and-more" {
            return 5;
        }
        if c.write_tx(cs, b"response") != 8 {
            return 6;
        }
        close(&mut c, cs);
        close(&mut c, ls);
        0
    });
    assert_eq!(
        h.call(
            0,
            Request::ForkChild {
                secret,
                pid: pid as u64
            }
        )
        .result,
        0
    );
    // The parent hands the connection over and closes its copies before the child attaches.
    close(&mut h, cs);
    close(&mut h, ls);
    client.write_all(b"-and-more").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(h.call(0, Request::Nop).result, 0);
    let st = agent.stats();
    assert_eq!(
        (st["sockets"], st["tickets"]),
        (2, 1),
        "held by the ticket: {st:?}"
    );
    signal(&go_w);
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).unwrap();
    assert_eq!(&reply, b"response");
    assert_eq!(
        wait_child(pid),
        0,
        "child's view of the handed-over connection"
    );
    wait_stats(&agent, "everything closed", |st| {
        st["sockets"] == 0 && st["tickets"] == 0
    });
}
