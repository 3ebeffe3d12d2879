//! Client side of `HELLO_STATS` on the agent's control socket (UNIX `SOCK_SEQPACKET`): one
//! hello, one [`Reply`] whose `len` is the report's length, then the report in datagrams of at
//! most [`CHUNK`] bytes. `arg` [`STATS_JSON`] asks for the JSON report ([`STATS_JSON_SOCKETS`]: with each kTLS socket), 0 for `key value` text.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shm_proto::msg::{
    Hello, Reply, HELLO_STATS, MSG_LEN, STATS_JSON, STATS_JSON_SOCKETS, STATS_TEXT,
};
use thiserror::Error;

mod sys;

/// The agent's control socket when nothing else names one.
pub const DEFAULT_SOCKET: &str = "/run/snstack/agent.sock";
/// Largest datagram of a report (the agent splits longer ones).
pub const CHUNK: usize = 64 * 1024;
/// Largest report a client accepts.
const MAX_REPORT: u64 = 64 << 20;
/// How long a query may wait for the agent.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Which report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `key value` lines of the agent-wide counters.
    Text,
    /// The JSON report: agent facts, totals, each attached process, recently dropped ones.
    Json,
    /// The same with each kTLS socket's counters (`tls_sockets`).
    JsonSockets,
}

#[derive(Debug, Error)]
pub enum QueryError {
    #[error("cannot reach the agent at {path}: {err}")]
    Connect { path: PathBuf, err: std::io::Error },
    #[error("talking to the agent at {path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("the agent at {0} sent a malformed reply")]
    BadReply(PathBuf),
    #[error(
        "the agent at {path} refused the request (errno {errno}; an agent of another version?)"
    )]
    Refused { path: PathBuf, errno: u32 },
}

/// Asks the agent at `path` for a report.
pub fn query(path: &Path, format: Format) -> Result<String, QueryError> {
    let io = |err| QueryError::Io {
        path: path.to_path_buf(),
        err,
    };
    let fd = sys::seqpacket_connect(path).map_err(|err| QueryError::Connect {
        path: path.to_path_buf(),
        err,
    })?;
    let fd = fd.as_raw_fd();
    sys::set_timeouts(fd, TIMEOUT).map_err(io)?;
    let arg = match format {
        Format::Text => STATS_TEXT,
        Format::Json => STATS_JSON,
        Format::JsonSockets => STATS_JSON_SOCKETS,
    };
    sys::send(fd, &Hello::new(HELLO_STATS, arg).encode()).map_err(io)?;
    let mut b = [0u8; MSG_LEN];
    let n = sys::recv(fd, &mut b).map_err(io)?;
    let bad = || QueryError::BadReply(path.to_path_buf());
    let r = Reply::decode(&b[..n]).ok_or_else(bad)?;
    if r.status != 0 {
        return Err(QueryError::Refused {
            path: path.to_path_buf(),
            errno: r.status,
        });
    }
    if r.len > MAX_REPORT {
        return Err(bad());
    }
    let want = r.len as usize;
    let mut text = Vec::with_capacity(want);
    let mut buf = vec![0u8; CHUNK];
    while text.len() < want {
        let n = sys::recv(fd, &mut buf).map_err(io)?;
        if n == 0 || text.len() + n > want {
            return Err(bad());
        }
        text.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(text).map_err(|_| bad())
}

/// The JSON report, parsed.
pub fn report(path: &Path) -> Result<serde_json::Value, QueryError> {
    report_as(path, Format::Json)
}

/// A JSON report (`Format::Json` or `Format::JsonSockets`), parsed.
pub fn report_as(path: &Path, format: Format) -> Result<serde_json::Value, QueryError> {
    let text = query(path, format)?;
    serde_json::from_str(&text).map_err(|_| QueryError::BadReply(path.to_path_buf()))
}

/// The report's kTLS sockets as text (`stats --sockets`): one line each,
/// `tls_socket pid=P slot=S local=A peer=A tx=SUITE rx=SUITE` then its counters as `key=value`
/// (`-` for a direction without a key or an unknown address).
pub fn tls_socket_lines(report: &serde_json::Value) -> String {
    let mut out = String::new();
    let empty = Vec::new();
    let socks = report["tls_sockets"].as_array().unwrap_or(&empty);
    for t in socks {
        let s = |k: &str| t[k].as_str().unwrap_or("-").to_string();
        let n = |k: &str| t[k].as_u64().unwrap_or(0);
        out.push_str(&format!(
            "tls_socket pid={} slot={} local={} peer={} tx={} rx={}",
            t["pid"].as_i64().unwrap_or(0),
            n("slot"),
            s("local"),
            s("peer"),
            s("tx"),
            s("rx")
        ));
        for k in [
            "tls_tx_records",
            "tls_tx_bytes",
            "tls_rx_records",
            "tls_rx_bytes",
            "tls_decrypt_errors",
        ] {
            out.push_str(&format!(" {k}={}", n(k)));
        }
        out.push('\n');
    }
    out
}
