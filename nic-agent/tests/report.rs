//! The agent's reports as `snstack stats --json`, `snstack top` and the metrics endpoint read
//! them (`nic_agent::client`): per-process counters follow a process's connects, a report longer
//! than one datagram arrives whole, an unknown report kind is refused.

mod common;

use std::net::TcpListener;
use std::os::fd::AsRawFd;

use common::*;
use nic_agent::client::{self, Format};
use serde_json::Value;
use shm_proto::msg::{Hello, Reply, HELLO_STATS, MSG_LEN};

fn report(a: &Agent) -> Value {
    client::report(&a.sock).unwrap_or_else(|e| panic!("report: {e}\n{}", a.log_text()))
}

/// This test process's row (its sessions all have its pid: pick by session).
fn row(r: &Value, session: u64) -> Value {
    r["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["session"] == session)
        .cloned()
        .unwrap_or_else(|| panic!("no session {session} in {r}"))
}

#[test]
fn per_process_counters_follow_connects() {
    let agent = Agent::start("report-conns");
    let mut h = Host::attach(&agent.sock);
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();

    let r0 = report(&agent);
    let procs = r0["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 1, "{r0}");
    let sid = procs[0]["session"].as_u64().unwrap();
    assert_eq!(procs[0]["pid"], std::process::id());
    assert_eq!(procs[0]["sockets"], 0);

    let s = h.call(0, tcp4()).result as u32;
    assert_eq!(h.call(s, connect_to(true, &addr)).result, 0);
    let _peer = server.accept().unwrap();
    let s2 = h.call(0, tcp4()).result as u32;
    let c = h.call(s2, connect_to(true, &dead));
    assert_eq!(c.result, -(libc::ECONNREFUSED as i64));

    let r = report(&agent);
    let p = row(&r, sid);
    assert_eq!(p["sockets"], 2, "{p}");
    assert_eq!(p["active_opens"], 2, "{p}");
    assert_eq!(p["connection_errors"], 1, "{p}");
    assert!(p["h2n_ops"].as_u64().unwrap() >= 4, "{p}");
    assert_eq!(r["totals"]["active_opens"], 2);
    assert_eq!(r["totals"]["connection_errors"], 1);
    assert!(r["agent"]["uptime_ms"].as_u64().is_some());

    // The process goes: its row goes, its counts stay in the totals.
    drop(h);
    until("session gone", || {
        report(&agent)["processes"] == serde_json::json!([])
    });
    let r = report(&agent);
    assert_eq!(r["totals"]["active_opens"], 2, "{r}");
    assert_eq!(r["totals"]["connection_errors"], 1, "{r}");
}

#[test]
fn a_report_longer_than_a_datagram_arrives_whole() {
    let agent = Agent::start("report-many");
    // About 260 bytes a row: 400 rows make well over one datagram whatever the pids are.
    const N: usize = 400;
    let hosts: Vec<Host> = (0..N).map(|_| Host::attach(&agent.sock)).collect();
    let text = client::query(&agent.sock, Format::Json).unwrap();
    assert!(
        text.len() > client::CHUNK,
        "{} bytes: not enough processes to need two datagrams",
        text.len()
    );
    let r: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["totals"]["processes"], N as u64);
    let mut sessions: Vec<u64> = r["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["session"].as_u64().unwrap())
        .collect();
    sessions.sort_unstable();
    sessions.dedup();
    assert_eq!(sessions.len(), N);
    // The text report agrees.
    let t = client::query(&agent.sock, Format::Text).unwrap();
    assert!(t.lines().any(|l| l == format!("processes {N}")), "{t}");
    drop(hosts);
}

#[test]
fn an_unknown_report_kind_is_refused() {
    let agent = Agent::start("report-kind");
    let fd = connect_seqpacket(&agent.sock).unwrap();
    let hello = Hello::new(HELLO_STATS, 7).encode();
    // SAFETY: sends the 32 readable bytes of `hello`.
    let n = unsafe { libc::send(fd.as_raw_fd(), hello.as_ptr().cast(), hello.len(), 0) };
    assert_eq!(n, MSG_LEN as isize);
    let mut b = [0u8; MSG_LEN];
    // SAFETY: receives at most MSG_LEN bytes into `b`.
    let n = unsafe { libc::recv(fd.as_raw_fd(), b.as_mut_ptr().cast(), b.len(), 0) };
    let r = Reply::decode(&b[..n as usize]).expect("a reply");
    assert_eq!(r.status, libc::EINVAL as u32);
}
