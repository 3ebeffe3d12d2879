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
    let dir = std::env::temp_dir().join(format!("snstack-payload-{}", std::process::id()));
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
