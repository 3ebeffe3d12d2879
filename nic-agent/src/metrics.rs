//! `--metrics ADDR:PORT`: the agent's counters as Prometheus text on `GET /metrics`.
//!
//! A thread of its own accepts one connection at a time and, per scrape, asks the agent's
//! control socket for the JSON report exactly as `snstack stats --json` does: the event loop
//! serves it like any stats query, between iterations, and the data path never sees the
//! endpoint. The HTTP side is the minimum a scraper needs, and bounded: a request line and
//! headers of at most [`MAX_REQUEST`] bytes read within [`REQUEST_DEADLINE`] (each read within
//! [`IO_TIMEOUT`]), `GET`/`HEAD` of
//! `/metrics` only, one response with `Content-Length` and `Connection: close`
//! (docs/operations.md, *Metrics endpoint*).

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Request line plus headers.
const MAX_REQUEST: usize = 8 * 1024;
/// Per read and per write of one connection.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// The whole request must arrive within this (a client trickling bytes cannot hold the endpoint).
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// The bound endpoint, not yet serving.
pub struct Endpoint {
    listener: TcpListener,
    /// The agent's control socket.
    socket: PathBuf,
}

impl Endpoint {
    pub fn bind(addr: SocketAddr, socket: PathBuf) -> io::Result<Endpoint> {
        let listener = TcpListener::bind(addr)?;
        Ok(Endpoint { listener, socket })
    }

    /// Serves scrapes on a thread of its own until the process exits.
    pub fn start(self) -> io::Result<()> {
        let addr = self.listener.local_addr()?;
        std::thread::Builder::new()
            .name("snstack-metrics".into())
            .spawn(move || self.serve())?;
        tracing::info!(%addr, "metrics endpoint: http://{addr}/metrics");
        Ok(())
    }

    fn serve(self) {
        for conn in self.listener.incoming() {
            match conn {
                Ok(c) => {
                    if let Err(e) = self.handle(c) {
                        tracing::debug!("metrics connection: {e}");
                    }
                }
                Err(e) => {
                    tracing::debug!("metrics accept: {e}");
                    // EMFILE and the like: do not spin on a persistent error.
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn handle(&self, mut c: TcpStream) -> io::Result<()> {
        c.set_read_timeout(Some(IO_TIMEOUT))?;
        c.set_write_timeout(Some(IO_TIMEOUT))?;
        let head = match read_head(&mut c)? {
            Some(h) => h,
            None => return respond(&mut c, 400, "Bad Request", "", "bad request\n", false),
        };
        let (status, reason, extra, body, head_only) = match parse_request_line(&head) {
            Err(()) => (400, "Bad Request", "", "bad request\n".to_string(), false),
            Ok((m, _)) if m != "GET" && m != "HEAD" => (
                405,
                "Method Not Allowed",
                "Allow: GET, HEAD\r\n",
                "only GET and HEAD\n".to_string(),
                false,
            ),
            Ok((m, "/metrics")) => match nic_agent::client::report(&self.socket) {
                Ok(r) => (200, "OK", "", render(&r), m == "HEAD"),
                Err(e) => (
                    503,
                    "Service Unavailable",
                    "",
                    format!("{e}\n"),
                    m == "HEAD",
                ),
            },
            Ok(_) => (404, "Not Found", "", "see /metrics\n".to_string(), false),
        };
        respond(&mut c, status, reason, extra, &body, head_only)
    }
}

/// Reads up to the blank line that ends the headers: `None` when the request is larger than
/// [`MAX_REQUEST`], ends early, or is not text; an error past [`REQUEST_DEADLINE`].
fn read_head(c: &mut TcpStream) -> io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let deadline = Instant::now() + REQUEST_DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        c.set_read_timeout(Some(left.min(IO_TIMEOUT)))?;
        if let Some(end) = find(&buf, b"\r\n\r\n").or_else(|| find(&buf, b"\n\n")) {
            buf.truncate(end);
            return Ok(String::from_utf8(buf).ok());
        }
        if buf.len() >= MAX_REQUEST {
            return Ok(None);
        }
        let n = c.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(h: &[u8], needle: &[u8]) -> Option<usize> {
    h.windows(needle.len()).position(|w| w == needle)
}

/// `METHOD SP TARGET SP HTTP/1.x`: the method and the target's path (query string dropped).
fn parse_request_line(head: &str) -> Result<(&str, &str), ()> {
    let line = head.lines().next().ok_or(())?;
    let mut it = line.split(' ');
    let (m, target, version) = (it.next(), it.next(), it.next());
    let (Some(m), Some(target), Some(version), None) = (m, target, version, it.next()) else {
        return Err(());
    };
    if m.is_empty() || !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Err(());
    }
    Ok((m, target.split('?').next().unwrap_or(target)))
}

fn respond(
    c: &mut TcpStream,
    status: u16,
    reason: &str,
    extra: &str,
    body: &str,
    head_only: bool,
) -> io::Result<()> {
    let ctype = if status == 200 {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        out.push_str(body);
    }
    c.write_all(out.as_bytes())?;
    c.flush()
}

/// Agent-wide keys that are levels, not running totals (Prometheus gauges).
const GAUGES: &[&str] = &[
    "processes",
    "sockets",
    "sockets_draining",
    "sockets_accept_queued",
    "tickets",
    "sockets_shared",
    "agent_spin_us",
    "agent_realtime",
    "channel_bytes",
    "loopback",
    "tcp_conns",
    "tcp_time_wait",
    "tcp_memory_bytes",
];

/// Per-process fields: (JSON key, metric name, is a counter, help).
const PROC_FIELDS: &[(&str, &str, bool, &str)] = &[
    (
        "sockets",
        "snstack_process_sockets",
        false,
        "Sockets the process has open through the agent.",
    ),
    (
        "h2n_bytes",
        "snstack_process_h2n_bytes_total",
        true,
        "Payload bytes host to NIC (TX).",
    ),
    (
        "n2h_bytes",
        "snstack_process_n2h_bytes_total",
        true,
        "Payload bytes NIC to host (RX).",
    ),
    (
        "h2n_ops",
        "snstack_process_h2n_ops_total",
        true,
        "Commands host to NIC.",
    ),
    (
        "n2h_ops",
        "snstack_process_n2h_ops_total",
        true,
        "Completions and RX publications NIC to host.",
    ),
    (
        "active_opens",
        "snstack_process_active_opens_total",
        true,
        "Connects started.",
    ),
    (
        "passive_opens",
        "snstack_process_passive_opens_total",
        true,
        "Connections accepted.",
    ),
    (
        "connection_errors",
        "snstack_process_connection_errors_total",
        true,
        "Connections and connects that failed.",
    ),
    (
        "channel_bytes",
        "snstack_process_channel_bytes",
        false,
        "Memory the process's region holds.",
    ),
];

/// Escapes a label value (backslash, double quote, newline).
fn label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for ch in v.chars() {
        match ch {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The JSON report (`nic_agent::client::report`) as Prometheus text exposition format 0.0.4.
pub fn render(r: &Value) -> String {
    let mut s = String::new();
    let a = &r["agent"];
    let cpu = |k: &str| num(&a[k]) as f64 / 1e6;
    let _ = writeln!(
        s,
        "# HELP snstack_agent_cpu_seconds_total CPU time of the agent process.\n# TYPE snstack_agent_cpu_seconds_total counter\nsnstack_agent_cpu_seconds_total{{mode=\"user\"}} {}\nsnstack_agent_cpu_seconds_total{{mode=\"system\"}} {}",
        cpu("cpu_user_us"),
        cpu("cpu_system_us")
    );
    let _ = writeln!(
        s,
        "# HELP snstack_agent_uptime_seconds Time since the agent started.\n# TYPE snstack_agent_uptime_seconds gauge\nsnstack_agent_uptime_seconds {}",
        num(&a["uptime_ms"]) as f64 / 1e3
    );
    if let Some(t) = r["totals"].as_object() {
        for (k, v) in t {
            let gauge = GAUGES.contains(&k.as_str());
            let name = if gauge {
                format!("snstack_{k}")
            } else {
                format!("snstack_{k}_total")
            };
            let kind = if gauge { "gauge" } else { "counter" };
            let _ = writeln!(
                s,
                "# HELP {name} snstack-agent stats: {k}.\n# TYPE {name} {kind}\n{name} {}",
                num(v)
            );
        }
    }
    let procs = r["processes"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    for &(key, name, counter, help) in PROC_FIELDS {
        let kind = if counter { "counter" } else { "gauge" };
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for p in procs {
            let _ = writeln!(
                s,
                "{name}{{pid=\"{}\",comm=\"{}\",session=\"{}\"}} {}",
                num(&p["pid"]),
                label(p["comm"].as_str().unwrap_or("")),
                num(&p["session"]),
                num(&p[key])
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(
            parse_request_line("GET /metrics HTTP/1.1\r\nHost: x"),
            Ok(("GET", "/metrics"))
        );
        assert_eq!(
            parse_request_line("GET /metrics?x=1 HTTP/1.0"),
            Ok(("GET", "/metrics"))
        );
        assert_eq!(parse_request_line("GET /metrics"), Err(()));
        assert_eq!(parse_request_line("GET metrics HTTP/1.1"), Err(()));
        assert_eq!(parse_request_line("GET /a b HTTP/1.1"), Err(()));
        assert_eq!(parse_request_line(""), Err(()));
    }

    #[test]
    fn render_has_types_and_escaped_labels() {
        let r = serde_json::json!({
            "agent": {"pid": 1, "cpu_user_us": 1_500_000, "cpu_system_us": 500_000, "uptime_ms": 2000},
            "totals": {"processes": 1, "h2n_bytes": 10},
            "processes": [{"pid": 42, "comm": "a\"b\\c", "session": 3, "sockets": 2, "n2h_bytes": 7}],
            "dropped": [],
        });
        let t = render(&r);
        assert!(
            t.contains("snstack_agent_cpu_seconds_total{mode=\"user\"} 1.5\n"),
            "{t}"
        );
        assert!(
            t.contains("# TYPE snstack_processes gauge\nsnstack_processes 1\n"),
            "{t}"
        );
        assert!(
            t.contains("# TYPE snstack_h2n_bytes_total counter\nsnstack_h2n_bytes_total 10\n"),
            "{t}"
        );
        assert!(
            t.contains("snstack_process_n2h_bytes_total{pid=\"42\",comm=\"a\\\"b\\\\c\",session=\"3\"} 7\n"),
            "{t}"
        );
        // Every sample line is `name{labels} value` or `name value` with a numeric value.
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let v = l.rsplit(' ').next().unwrap();
            assert!(v.parse::<f64>().is_ok(), "bad sample line {l}");
        }
    }
}
