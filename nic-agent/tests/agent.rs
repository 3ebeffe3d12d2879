//! Runs the built `snstack-agent` on a temporary socket and drives it the way the host library
//! does (helpers in `common`). Every wait is bounded; the agent is killed by PID when a test ends.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use shm_proto::*;

#[test]
fn serves_a_tcp_server_and_drops_only_a_corrupt_channel() {
    let mut agent = Agent::start("main");
    let mut h = Host::attach(&agent.sock);

    // NOP round trip.
    let e = h.call(0, Request::Nop);
    assert_eq!((e.kind, e.result), (EV_COMPLETION, 0));

    // socket + bind(127.0.0.1:0) + listen + getsockname.
    let l = h.call(0, tcp4());
    assert!(l.result >= 0, "socket: {}", l.result);
    let ls = l.result as u32;
    assert_ne!(h.sock(ls).state.0.flags.load(Ordering::SeqCst) & SF_OPEN, 0);
    let bind = bind_to(&"127.0.0.1:0".parse().unwrap());
    assert_eq!(h.call(ls, bind).result, 0);
    assert_eq!(h.call(ls, Request::Listen { backlog: 16 }).result, 0);
    let name = h.call(ls, Request::GetSockName);
    assert_eq!(name.result, 0);
    let port = port_of(&name);
    assert_ne!(port, 0);
    // Accept without a connection and without CF_WAIT: EAGAIN.
    assert_eq!(
        h.call(ls, Request::Accept { wait: false }).result,
        -(libc::EAGAIN as i64)
    );
    // Accept on a socket that does not listen: EINVAL.
    let other = h.call(0, tcp4()).result as u32;
    assert_eq!(
        h.call(other, Request::Accept { wait: false }).result,
        -(libc::EINVAL as i64)
    );
    // An unsupported family is an answer, not a violation.
    assert_eq!(
        h.call(
            0,
            Request::Socket {
                domain: libc::AF_UNIX,
                ty: libc::SOCK_STREAM,
                protocol: 0
            }
        )
        .result,
        -(libc::EAFNOSUPPORT as i64)
    );

    // A parked accept completes when a plain client connects.
    let tag = h.submit(ls, Request::Accept { wait: true });
    let mut client = TcpStream::connect(("127.0.0.1", port)).expect("client connect");
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    let acc = h.wait(tag);
    assert!(acc.result >= 0, "accept: {}", acc.result);
    let cs = acc.result as u32;
    assert_eq!(port_of(&acc), client.local_addr().unwrap().port());
    let flags = h.sock(cs).state.0.flags.load(Ordering::SeqCst);
    assert_eq!(flags & (SF_OPEN | SF_CONNECTED), SF_OPEN | SF_CONNECTED);

    // Client -> RX stream.
    client.write_all(b"hello agent").unwrap();
    let mut got = Vec::new();
    until("RX bytes", || {
        h.read_rx(cs, &mut got);
        got.len() >= 11
    });
    assert_eq!(&got, b"hello agent");

    // TX stream + OP_TX_KICK -> client.
    assert_eq!(h.write_tx(cs, b"hello client"), 12);
    let mut buf = [0u8; 12];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello client");
    until("TX drained", || {
        let tx = h.region.tx(cs).unwrap();
        tx.load_head() == tx.load_tail()
    });

    // Peer FIN -> SF_RX_FIN.
    client.shutdown(std::net::Shutdown::Write).unwrap();
    until("SF_RX_FIN", || {
        h.sock(cs).state.0.flags.load(Ordering::SeqCst) & SF_RX_FIN != 0
    });

    // Socket options pass through to the OS socket.
    let (level, name) = (libc::IPPROTO_TCP, libc::TCP_NODELAY);
    let set = Request::SetSockOpt {
        level,
        name,
        len: 4,
        val: OptVal::inline(&1i32.to_ne_bytes()),
    };
    assert_eq!(h.call(cs, set).result, 0);
    let get = |level, name| Request::GetSockOpt {
        level,
        name,
        len: 4,
        cell: None,
    };
    let g = h.call(cs, get(level, name));
    assert_eq!(g.result, 4);
    assert_ne!(i32::from_ne_bytes(g.value().try_into().unwrap()), 0);
    assert_eq!(
        h.call(cs, get(libc::SOL_SOCKET, 9999)).result,
        -(libc::ENOPROTOOPT as i64)
    );

    // Counters.
    let st = agent.stats();
    for k in [
        "processes",
        "sockets",
        "h2n_bytes",
        "h2n_ops",
        "n2h_bytes",
        "n2h_ops",
    ] {
        assert!(
            st.get(k).copied().unwrap_or(0) > 0,
            "stats {k} is zero: {st:?}"
        );
    }
    assert_eq!(st["processes"], 1);
    assert!(st["sockets"] >= 3, "{st:?}");
    assert!(st["h2n_bytes"] >= 12 && st["n2h_bytes"] >= 11, "{st:?}");
    assert_eq!(st["channels_dropped"], 0);
    assert!(h.region.header().stats.0.n2h_bytes.load(Ordering::Relaxed) >= 11);

    // Close: the slot is freed and reused lowest-first.
    h.push(Request::Close.to_cmd(cs));
    let mut eof = [0u8; 1];
    assert_eq!(
        client.read(&mut eof).unwrap(),
        0,
        "client sees EOF after close"
    );
    let again = h.call(0, tcp4());
    assert_eq!(again.result as u32, cs, "lowest free slot is reused");

    // A second process, then a corrupt command ring in the first.
    let mut h2 = Host::attach(&agent.sock);
    assert_eq!(h2.call(0, Request::Nop).result, 0);
    assert_eq!(agent.stats()["processes"], 2);
    // SAFETY: the ring header lies at cmd_off inside our mapping; we scribble the tail on purpose.
    let ring = unsafe { &*(h.base.add(h.region.offsets().cmd_off as usize) as *const RingHdr) };
    let head = ring.head.0.load(Ordering::SeqCst);
    ring.tail.0.store(head.wrapping_add(5000), Ordering::SeqCst);
    h.region
        .header()
        .agent
        .0
        .sleeping
        .store(1, Ordering::SeqCst);
    h.ring();
    until("channel marked dead", || h.dead());
    assert!(
        h.ctl_eof(),
        "agent closes the dropped channel's control connection"
    );
    // The other process is untouched.
    assert_eq!(h2.call(0, Request::Nop).result, 0);
    let s2 = h2.call(0, tcp4());
    assert_eq!(s2.result, 0, "session 2 allocates from its own table");
    // A third process names a slot it does not own: dropped too.
    let mut h3 = Host::attach(&agent.sock);
    h3.push(Cmd {
        op: OP_LISTEN,
        slot: 3,
        tag: 99,
        ..Default::default()
    });
    until("bad slot drops the channel", || h3.dead());
    assert_eq!(h2.call(0, Request::Nop).result, 0);
    let st = agent.stats();
    assert_eq!(st["channels_dropped"], 2, "{st:?}");
    assert_eq!(st["processes"], 1, "{st:?}");
    let log = agent.log_text();
    assert_eq!(
        log.matches("dropping channel").count(),
        2,
        "one error line per drop:\n{log}"
    );

    // Clean shutdown removes the socket.
    drop(h2);
    let st = agent.terminate();
    assert!(st.success(), "exit status {st:?}");
    assert!(!agent.sock.exists(), "socket file removed at exit");
}

#[test]
fn connect_send_and_drain_after_close() {
    let agent = Agent::start("drain");
    let mut h = Host::attach(&agent.sock);
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    const TOTAL: usize = 1 << 20;
    let reader = std::thread::spawn(move || {
        let (mut c, _) = server.accept().unwrap();
        c.set_read_timeout(Some(TIMEOUT)).unwrap();
        c.write_all(b"greeting").unwrap();
        // Read slowly at first so the agent's TX backs up and the close must drain.
        std::thread::sleep(Duration::from_millis(300));
        let mut all = Vec::new();
        c.read_to_end(&mut all).unwrap();
        all
    });
    let s = h.call(0, tcp4()).result as u32;
    let c = h.call(s, connect_to(true, &addr));
    assert_eq!(c.result, 0, "blocking connect");
    let flags = h.sock(s).state.0.flags.load(Ordering::SeqCst);
    assert_ne!(flags & SF_CONNECTED, 0);
    assert_eq!(flags & SF_CONNECTING, 0);
    let peer = h.call(s, Request::GetPeerName);
    assert_eq!((peer.result, port_of(&peer)), (0, addr.port()));
    let mut got = Vec::new();
    until("greeting", || {
        h.read_rx(s, &mut got);
        got.len() >= 8
    });
    assert_eq!(&got, b"greeting");

    let data: Vec<u8> = (0..TOTAL).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut off = 0;
    let t0 = Instant::now();
    while off < TOTAL {
        let n = h.write_tx(s, &data[off..]);
        off += n;
        if n == 0 {
            assert!(t0.elapsed() < TIMEOUT, "TX never drains");
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    // Close with bytes still in TX: they must all arrive, then EOF.
    h.push(Request::Close.to_cmd(s));
    let all = reader.join().unwrap();
    assert_eq!(all.len(), TOTAL);
    assert!(all == data, "payload corrupted");

    // Connecting to a closed port: CF_WAIT gives the error, no pending SO_ERROR.
    let dead_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let s = h.call(0, tcp4()).result as u32;
    let c = h.call(s, connect_to(true, &dead_port));
    assert_eq!(c.result, -(libc::ECONNREFUSED as i64));
    let f = h.sock(s).state.0.flags.load(Ordering::SeqCst);
    assert_eq!(f & (SF_CONNECTING | SF_ERROR), 0);
    // Without CF_WAIT: EINPROGRESS, then SF_ERROR with error = ECONNREFUSED.
    let s = h.call(0, tcp4()).result as u32;
    let c = h.call(s, connect_to(false, &dead_port));
    assert!(c.result == -(libc::EINPROGRESS as i64) || c.result == -(libc::ECONNREFUSED as i64));
    if c.result == -(libc::EINPROGRESS as i64) {
        until("SF_ERROR", || {
            h.sock(s).state.0.flags.load(Ordering::SeqCst) & SF_ERROR != 0
        });
        assert_eq!(
            h.sock(s).state.0.error.load(Ordering::SeqCst),
            libc::ECONNREFUSED as u32
        );
    }
    // Bad shutdown `how` is EINVAL; shutdown of an unconnected socket ENOTCONN.
    assert_eq!(
        h.call(s, Request::Shutdown { how: 7 }).result,
        -(libc::EINVAL as i64)
    );
    let fresh = h.call(0, tcp4()).result as u32;
    assert_eq!(
        h.call(fresh, Request::Shutdown { how: libc::SHUT_WR })
            .result,
        -(libc::ENOTCONN as i64)
    );
    let st = agent.stats();
    assert!(st["h2n_bytes"] >= TOTAL as u64, "{st:?}");
}

#[test]
fn process_exit_closes_its_sockets() {
    let agent = Agent::start("exit");
    let port;
    {
        let mut h = Host::attach(&agent.sock);
        let l = h.call(0, tcp4()).result as u32;
        assert_eq!(
            h.call(l, bind_to(&"127.0.0.1:0".parse().unwrap())).result,
            0
        );
        assert_eq!(h.call(l, Request::Listen { backlog: 4 }).result, 0);
        port = port_of(&h.call(l, Request::GetSockName));
        let _c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        until("queued connection", || {
            h.sock(l).state.0.accept_ready.load(Ordering::SeqCst) == 1
        });
        assert!(agent.stats()["sockets"] >= 2);
    } // control connection closed: the process is gone
    let t0 = Instant::now();
    loop {
        let st = agent.stats();
        if st["processes"] == 0 && st["sockets"] == 0 {
            break;
        }
        assert!(
            t0.elapsed() < TIMEOUT,
            "sockets of an exited process linger: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "listener closed"
    );
    assert!(agent.log_text().contains("process detached"));
}

#[test]
fn unusable_socket_path_is_one_error_line() {
    let out = Command::new(bin())
        .args(["--socket", "/proc/snstack-nonexistent/agent.sock"])
        .output()
        .expect("run agent");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn socket_path_appears_only_once_it_listens() {
    use std::os::unix::fs::PermissionsExt;
    // Scripts wait for the file to exist and connect at once: that first connect must work
    // (bind-then-listen in place left a window where it was refused), with the file's mode set.
    for round in 0..200 {
        let dir = temp_dir(&format!("publish-{round}"));
        let sock = dir.join("agent.sock");
        let mut child = Command::new(bin())
            .args(["run", "--max-sockets", "16", "--socket"])
            .arg(&sock)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn agent");
        let t0 = Instant::now();
        while std::fs::symlink_metadata(&sock).is_err() {
            assert!(t0.elapsed() < TIMEOUT, "agent did not come up");
            std::hint::spin_loop();
        }
        let first = connect_seqpacket(&sock);
        let mode = std::fs::metadata(&sock).map(|m| m.permissions().mode() & 0o777);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(first.is_ok(), "round {round}: {:?}", first.err());
        assert_eq!(mode.unwrap(), 0o666);
        assert_eq!(names, ["agent.sock"], "no staging name left behind");
    }
}

#[test]
fn rx_backpressure_and_waiter_doorbell() {
    let agent = Agent::start("rx");
    let mut h = Host::attach(&agent.sock);
    // SAFETY: plain eventfd(2).
    let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    assert!(efd >= 0);
    // SAFETY: fresh fd owned by nobody else.
    let efd = unsafe { OwnedFd::from_raw_fd(efd) };
    assert_eq!(h.register_waiter(0, efd.as_raw_fd()), 0);
    assert_eq!(
        h.register_waiter(MAX_WAITERS as u64, efd.as_raw_fd()),
        libc::EINVAL as u32
    );

    let l = h.call(0, tcp4()).result as u32;
    assert_eq!(
        h.call(l, bind_to(&"127.0.0.1:0".parse().unwrap())).result,
        0
    );
    assert_eq!(h.call(l, Request::Listen { backlog: 8 }).result, 0);
    let port = port_of(&h.call(l, Request::GetSockName));
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    until("accept queue", || {
        h.sock(l).state.0.accept_ready.load(Ordering::SeqCst) == 1
    });
    assert!(h.sock(l).state.0.accept_seq.load(Ordering::SeqCst) >= 1);
    let s = h.call(l, Request::Accept { wait: false }).result as u32;
    assert_eq!(h.sock(l).state.0.accept_ready.load(Ordering::SeqCst), 0);

    // A sleeping waiter interested in `s` gets its eventfd rung when bytes arrive.
    h.sock(s).host.0.waiter_mask.store(1, Ordering::SeqCst);
    wake::announce(&h.region.waiter(0).unwrap().sleeping);
    client.write_all(b"ping").unwrap();
    let mut pfd = libc::pollfd {
        fd: efd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let rung = unsafe { libc::poll(&mut pfd, 1, TIMEOUT.as_millis() as i32) };
    assert_eq!(rung, 1, "waiter not rung");
    assert_eq!(
        h.region.waiter(0).unwrap().sleeping.load(Ordering::SeqCst),
        0
    );

    // 1 MiB through a 64 KiB RX stream read in small bites: rx_blocked / OP_RX_SPACE.
    const TOTAL: usize = 1 << 20;
    let data: Vec<u8> = (0..TOTAL).map(|i| (i % 253) as u8).collect();
    let send = data.clone();
    let writer = std::thread::spawn(move || {
        client.write_all(&send).unwrap();
        client
    });
    let mut got = Vec::new();
    until("ping", || {
        h.read_rx_max(s, &mut got, 4);
        got.len() >= 4
    });
    assert_eq!(&got, b"ping");
    got.clear();
    let mut blocked_seen = false;
    until("1 MiB through RX", || {
        blocked_seen |= h.sock(s).rx_head.0.blocked.load(Ordering::SeqCst) == 1;
        h.read_rx_max(s, &mut got, 16 * 1024);
        got.len() >= TOTAL
    });
    assert!(got == data, "payload corrupted");
    assert!(blocked_seen, "RX never filled up");
    drop(writer.join().unwrap());
    until("SF_RX_FIN", || {
        h.sock(s).state.0.flags.load(Ordering::SeqCst) & SF_RX_FIN != 0
    });
}
