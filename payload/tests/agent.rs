//! End to end against a real `snstack-agent` (kernel backend): a line echo service served by a
//! group, and plain `std::net` clients.
//!
//! Needs the release agent (`cargo build --release --workspace` first, as `make test` does;
//! `SNSTACK_AGENT_BIN` names another binary).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use snstack_payload::{CloseReason, Event, Framing, Group};

const TIMEOUT: Duration = Duration::from_secs(10);

struct Agent {
    child: Child,
    dir: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn agent() -> (Agent, PathBuf) {
    let bin = std::env::var_os("SNSTACK_AGENT_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/snstack-agent"),
        PathBuf::from,
    );
    // One agent per test, and the tests run in parallel threads of one process.
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("snstack-payload-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("agent.sock");
    let child = Command::new(&bin)
        .args(["run", "--max-sockets", "64", "--socket"])
        .arg(&sock)
        .stdin(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("agent.log")).unwrap(),
        ))
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let a = Agent { child, dir };
    let t0 = Instant::now();
    while !sock.exists() {
        assert!(t0.elapsed() < TIMEOUT, "agent did not come up");
        std::thread::sleep(Duration::from_millis(10));
    }
    (a, sock)
}

#[test]
fn line_echo_with_std_clients() {
    let (_a, sock) = agent();
    let mut g = Group::attach(Some(&sock)).unwrap();
    let port = 20000 + (std::process::id() % 20000) as u16;
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    g.serve(addr, Framing::Line { crlf: false }, 1024).unwrap();
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        // Split writes: the framing, not the segments, decides the messages.
        s.write_all(b"hel").unwrap();
        s.write_all(b"lo\nwor").unwrap();
        s.write_all(b"ld\n").unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        assert_eq!(l, "hello\n");
        l.clear();
        r.read_line(&mut l).unwrap();
        assert_eq!(l, "world\n");
        s.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let (mut msgs, mut closed) = (Vec::new(), false);
    let t0 = Instant::now();
    while !closed {
        assert!(t0.elapsed() < TIMEOUT, "got {msgs:?}");
        let evs = g
            .poll(16, Duration::ZERO, Some(Duration::from_millis(100)))
            .unwrap();
        let g = evs.group();
        for ev in &evs {
            match ev {
                Event::Message { conn, data, part } => {
                    assert!(!part);
                    msgs.push(data.to_vec());
                    g.send(conn, data).unwrap();
                }
                Event::Closed { conn, reason } => {
                    assert_eq!(reason, CloseReason::PeerClosed);
                    g.close(conn).unwrap();
                    closed = true;
                }
                _ => {}
            }
        }
    }
    assert_eq!(msgs, [b"hello\n".to_vec(), b"world\n".to_vec()]);
    client.join().unwrap();
}

#[test]
fn a_client_group_connects_and_gets_whole_replies() {
    let (_a, sock) = agent();
    let mut g = Group::attach(Some(&sock)).unwrap();
    // A kernel server answering each length-prefixed request with two length-prefixed replies,
    // written a byte at a time.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        use std::io::Read;
        let (mut s, _) = l.accept().unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut hdr = [0u8; 2];
        s.read_exact(&mut hdr).unwrap();
        let mut req = vec![0u8; u16::from_be_bytes(hdr) as usize];
        s.read_exact(&mut req).unwrap();
        assert_eq!(req, b"ping");
        for r in [&b"pong"[..], b"again"] {
            let mut m = (r.len() as u16).to_be_bytes().to_vec();
            m.extend_from_slice(r);
            for b in m {
                s.write_all(&[b]).unwrap();
            }
        }
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    });
    let framing = Framing::Length {
        width: snstack_payload::Width::U16,
        big_endian: true,
        includes_header: false,
    };
    let c = g.connect(addr, framing, 1024).unwrap();
    let (mut got, mut connected, mut done) = (Vec::new(), false, false);
    let t0 = Instant::now();
    while !done {
        assert!(t0.elapsed() < TIMEOUT, "connected {connected}, got {got:?}");
        let evs = g
            .poll(16, Duration::ZERO, Some(Duration::from_millis(100)))
            .unwrap();
        let g = evs.group();
        for ev in &evs {
            match ev {
                Event::Connected { conn } => {
                    assert_eq!(conn, c);
                    connected = true;
                    g.send(conn, b"\x00\x04ping").unwrap();
                }
                Event::Message { conn, data, part } => {
                    assert_eq!((conn, part), (c, false));
                    got.push(data.to_vec());
                    if got.len() == 2 {
                        g.close(conn).unwrap();
                        done = true;
                    }
                }
                Event::Closed { reason, .. } => panic!("closed: {reason:?}"),
                _ => {}
            }
        }
    }
    // The close waited for the batch holding the connection's messages to be given back.
    g.release().unwrap();
    assert_eq!(got, [b"\x00\x04pong".to_vec(), b"\x00\x05again".to_vec()]);
    server.join().unwrap();
}

#[test]
fn an_http_client_group_frames_the_response_to_a_head_without_its_body() {
    let (_a, sock) = agent();
    let mut g = Group::attach(Some(&sock)).unwrap();
    // A kernel HTTP server: a HEAD answered with Content-Length 11 and no body, then a GET
    // answered with its 11 bytes, both in one write.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        use std::io::Read;
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 1024];
        while got.windows(4).filter(|w| w == b"\r\n\r\n").count() < 2 {
            let n = s.read(&mut b).unwrap();
            assert!(n > 0, "client closed early: {got:?}");
            got.extend_from_slice(&b[..n]);
        }
        assert!(got.starts_with(b"HEAD / HTTP/1.1\r\n"));
        s.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world",
        )
        .unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    let c = g
        .connect(addr, snstack_payload::Framing::Http1Response, 4096)
        .unwrap();
    let mut got: Vec<Vec<u8>> = Vec::new();
    let t0 = Instant::now();
    while got.len() < 2 {
        assert!(t0.elapsed() < TIMEOUT, "got {got:?}");
        let evs = g
            .poll(16, Duration::ZERO, Some(Duration::from_millis(100)))
            .unwrap();
        let g = evs.group();
        for ev in &evs {
            match ev {
                Event::Connected { conn } => {
                    g.expect_response(conn, snstack_payload::ResponseTo::Head)
                        .unwrap();
                    g.send(conn, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                    g.send(conn, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                }
                Event::Message { data, part, .. } => {
                    assert!(!part);
                    got.push(data.to_vec());
                }
                Event::Closed { reason, .. } => panic!("closed: {reason:?}"),
                _ => {}
            }
        }
    }
    assert_eq!(got[0], b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n");
    assert!(got[1].ends_with(b"\r\n\r\nhello world"));
    g.close(c).unwrap();
    g.release().unwrap();
    server.join().unwrap();
}
