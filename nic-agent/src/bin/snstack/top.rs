//! `snstack top`: the agent's JSON report (`nic_agent::client::report`) once per interval, shown
//! as rates between two reports. Rates are counted on the agent's own clock (`uptime_ms`), so a
//! slow refresh does not inflate them. [`frame`] is pure (tested below); [`run`] does the I/O:
//! a full-screen view on a terminal (alternate screen, `q` or Ctrl-C quits), plain frames one
//! after another with `--batch` or when stdout is not a terminal.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use nic_agent::client;
use serde_json::Value;

use crate::sys;
use crate::AgentSocket;

#[derive(Args, Debug)]
pub struct TopArgs {
    #[command(flatten)]
    agent: AgentSocket,
    /// Seconds between refreshes (0.1 or more).
    #[arg(short = 'd', long, value_name = "SECS", default_value_t = 1.0, value_parser = interval)]
    interval: f64,
    /// Stop after N frames.
    #[arg(short = 'n', long, value_name = "N")]
    iterations: Option<u64>,
    /// Plain frames on stdout, one after another (the default when stdout is not a terminal).
    #[arg(short = 'b', long)]
    batch: bool,
}

fn interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.1 => Ok(v),
        _ => Err("must be a number of seconds >= 0.1".into()),
    }
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// A value with a unit prefix: `950`, `12.3k`, `4.5M`.
pub fn human(v: f64) -> String {
    let units = ["", "k", "M", "G", "T"];
    let mut v = v.max(0.0);
    let mut i = 0;
    while v >= 999.95 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 && (v - v.round()).abs() < 0.05 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}{}", units[i])
    }
}

fn duration(ms: u64) -> String {
    let s = ms / 1000;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// One process row: what it is and its rates over the last interval.
struct Row {
    pid: i64,
    comm: String,
    sockets: u64,
    conns: Option<f64>,
    rx: Option<f64>,
    tx: Option<f64>,
    ops: Option<f64>,
    errors: u64,
    state: String,
}

/// Per-second rate of `key` between `prev` and `cur` over `dt` seconds (a counter missing
/// from `prev`, as for a process that attached meanwhile, started at 0).
fn rate(cur: &Value, prev: Option<&Value>, keys: &[&str], dt: Option<f64>) -> Option<f64> {
    let dt = dt?;
    let sum = |v: &Value| keys.iter().map(|k| num(&v[*k])).sum::<u64>();
    let before = prev.map_or(0, sum);
    Some(sum(cur).saturating_sub(before) as f64 / dt)
}

fn cell(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), human)
}

/// The lines of one frame, each at most `cols` characters; at most `rows` lines when given.
pub fn frame(
    prev: Option<&Value>,
    cur: &Value,
    socket: &Path,
    cols: usize,
    rows: Option<usize>,
) -> Vec<String> {
    let a = &cur["agent"];
    let t = &cur["totals"];
    let up = num(&a["uptime_ms"]);
    let dt = prev
        .map(|p| up.saturating_sub(num(&p["agent"]["uptime_ms"])) as f64 / 1000.0)
        .filter(|d| *d > 0.0);
    let pa = prev.map(|p| &p["agent"]);
    let cpu = |k: &str| {
        rate(a, pa, &[k], dt).map_or_else(|| "-".to_string(), |r| format!("{:.1}%", r / 1e4))
    };
    let mut out = vec![format!(
        "snstack top - agent pid {} up {} - cpu {} (user {} sys {}) - {}",
        num(&a["pid"]),
        duration(up),
        cpu_total(a, pa, dt),
        cpu("cpu_user_us"),
        cpu("cpu_system_us"),
        socket.display()
    )];
    let pt = prev.map(|p| &p["totals"]);
    out.push(format!(
        "processes {}  sockets {}  conn/s {}  rx {}B/s  tx {}B/s  ops/s {}  conn errors {}  channels dropped {}",
        num(&t["processes"]),
        num(&t["sockets"]),
        cell(rate(t, pt, &["active_opens", "passive_opens"], dt)),
        cell(rate(t, pt, &["n2h_bytes"], dt)),
        cell(rate(t, pt, &["h2n_bytes"], dt)),
        cell(rate(t, pt, &["h2n_ops", "n2h_ops"], dt)),
        num(&t["connection_errors"]),
        num(&t["channels_dropped"]),
    ));
    let mut third = format!(
        "loopback {} ({} connections)  channel memory {}B",
        if num(&t["loopback"]) == 1 {
            "on"
        } else {
            "off"
        },
        num(&t["loop_connections"]),
        human(num(&t["channel_bytes"]) as f64)
    );
    if t.get("tcp_conns").is_some() {
        third.push_str(&format!(
            "  engine: conns {}  retrans/s {}  rst sent {}",
            num(&t["tcp_conns"]),
            cell(rate(t, pt, &["tcp_retrans_segs"], dt)),
            num(&t["tcp_rst_sent"])
        ));
    }
    out.push(third);
    out.push(String::new());
    out.push(format!(
        "{:>8} {:<15} {:>6} {:>7} {:>8} {:>8} {:>8} {:>6}  {}",
        "PID", "COMMAND", "SOCK", "CONN/s", "RX B/s", "TX B/s", "OPS/s", "ERRORS", "STATE"
    ));
    let before: HashMap<u64, &Value> = prev
        .and_then(|p| p["processes"].as_array())
        .map(|v| v.iter().map(|p| (num(&p["session"]), p)).collect())
        .unwrap_or_default();
    let mut table: Vec<Row> = cur["processes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|p| {
            let b = before.get(&num(&p["session"])).copied();
            let backlog = num(&p["event_backlog"]);
            Row {
                pid: p["pid"].as_i64().unwrap_or(0),
                comm: p["comm"].as_str().unwrap_or("").to_string(),
                sockets: num(&p["sockets"]),
                conns: rate(p, b, &["active_opens", "passive_opens"], dt),
                rx: rate(p, b, &["n2h_bytes"], dt),
                tx: rate(p, b, &["h2n_bytes"], dt),
                ops: rate(p, b, &["h2n_ops", "n2h_ops"], dt),
                errors: num(&p["connection_errors"]),
                state: if backlog > 0 {
                    format!("backlog {backlog}")
                } else {
                    "ok".to_string()
                },
            }
        })
        .collect();
    let key = |r: &Row| r.rx.unwrap_or(0.0) + r.tx.unwrap_or(0.0) + r.ops.unwrap_or(0.0);
    table.sort_by(|x, y| key(y).total_cmp(&key(x)).then(x.pid.cmp(&y.pid)));
    for d in cur["dropped"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        table.push(Row {
            pid: d["pid"].as_i64().unwrap_or(0),
            comm: String::new(),
            sockets: 0,
            conns: None,
            rx: None,
            tx: None,
            ops: None,
            errors: num(&d["connection_errors"]),
            state: format!(
                "DROPPED {}s ago: {}",
                num(&d["ago_ms"]) / 1000,
                d["reason"].as_str().unwrap_or("")
            ),
        });
    }
    for r in &table {
        let comm: String = r.comm.chars().take(15).collect();
        out.push(format!(
            "{:>8} {:<15} {:>6} {:>7} {:>8} {:>8} {:>8} {:>6}  {}",
            r.pid,
            comm,
            r.sockets,
            cell(r.conns),
            cell(r.rx),
            cell(r.tx),
            cell(r.ops),
            r.errors,
            r.state
        ));
    }
    if let Some(n) = rows {
        out.truncate(n);
    }
    for l in &mut out {
        if l.chars().count() > cols {
            *l = l.chars().take(cols).collect();
        }
    }
    out
}

fn cpu_total(a: &Value, pa: Option<&Value>, dt: Option<f64>) -> String {
    rate(a, pa, &["cpu_user_us", "cpu_system_us"], dt)
        .map_or_else(|| "-".to_string(), |r| format!("{:.1}%", r / 1e4))
}

pub fn run(a: &TopArgs) -> anyhow::Result<()> {
    let path = a.agent.path();
    let every = Duration::from_secs_f64(a.interval);
    if a.batch || !sys::is_tty(1) {
        return batch(&path, every, a.iterations);
    }
    let sig = sys::Signals::new().context("signalfd")?;
    let raw = if sys::is_tty(0) {
        sys::RawKeys::new(0).ok()
    } else {
        None
    };
    let mut keys = raw.as_ref().map(|_| 0);
    let _screen = Screen::enter();
    let mut prev: Option<Value> = None;
    let mut frames = 0u64;
    loop {
        let (rows, cols) = sys::window_size(1).unwrap_or((24, 80));
        let mut lines = match client::report(&path) {
            Ok(cur) => {
                let l = frame(prev.as_ref(), &cur, &path, cols.into(), Some(rows.into()));
                prev = Some(cur);
                l
            }
            Err(e) => vec![format!("snstack top: {e} (retrying)")],
        };
        if keys.is_some() && lines.len() < rows as usize {
            lines.push(String::new());
            lines.push("q: quit".into());
        }
        draw(&lines)?;
        frames += 1;
        if a.iterations.is_some_and(|n| frames >= n) {
            return Ok(());
        }
        let until = Instant::now() + every;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match sys::wait(left, keys, &sig)? {
                sys::Event::Key(b'q' | b'Q') | sys::Event::Quit => return Ok(()),
                sys::Event::KeysGone => keys = None,
                sys::Event::Resize => break,
                sys::Event::Key(_) | sys::Event::Timeout => {}
            }
        }
    }
}

fn batch(path: &Path, every: Duration, iterations: Option<u64>) -> anyhow::Result<()> {
    let mut prev: Option<Value> = None;
    let mut frames = 0u64;
    let mut out = std::io::stdout().lock();
    loop {
        let cur = client::report(path)?;
        for l in frame(prev.as_ref(), &cur, path, usize::MAX, None) {
            writeln!(out, "{l}")?;
        }
        writeln!(out)?;
        out.flush()?;
        prev = Some(cur);
        frames += 1;
        if iterations.is_some_and(|n| frames >= n) {
            return Ok(());
        }
        std::thread::sleep(every);
    }
}

fn draw(lines: &[String]) -> std::io::Result<()> {
    let mut s = String::from("\x1b[H");
    for l in lines {
        s.push_str(l);
        s.push_str("\x1b[K\n");
    }
    s.push_str("\x1b[J");
    let mut o = std::io::stdout().lock();
    o.write_all(s.as_bytes())?;
    o.flush()
}

/// The alternate screen with the cursor hidden, while this lives.
struct Screen;

impl Screen {
    fn enter() -> Screen {
        print!("\x1b[?1049h\x1b[?25l");
        Screen
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        print!("\x1b[?25h\x1b[?1049l");
        let _ = std::io::stdout().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(up: u64, cpu: u64, rx: u64, opens: u64) -> Value {
        json!({
            "agent": {"pid": 7, "cpu_user_us": cpu, "cpu_system_us": 0, "uptime_ms": up},
            "totals": {"processes": 1, "sockets": 3, "n2h_bytes": rx, "h2n_bytes": 0,
                       "active_opens": opens, "passive_opens": 0, "h2n_ops": 0, "n2h_ops": 0,
                       "connection_errors": 0, "channels_dropped": 1, "loopback": 1},
            "processes": [{"pid": 42, "comm": "nginx", "session": 1, "sockets": 3,
                           "n2h_bytes": rx, "h2n_bytes": 0, "active_opens": opens,
                           "passive_opens": 0, "h2n_ops": 0, "n2h_ops": 0,
                           "connection_errors": 2, "event_backlog": 0}],
            "dropped": [{"pid": 9, "reason": "channel corrupt: x", "ago_ms": 3000,
                         "connection_errors": 0}],
        })
    }

    #[test]
    fn rates_come_from_the_agent_clock() {
        let a = report(1000, 0, 0, 0);
        let b = report(3000, 500_000, 4_000_000, 20);
        let f = frame(Some(&a), &b, Path::new("/s"), 200, None);
        assert!(f[0].contains("cpu 25.0%"), "{}", f[0]);
        assert!(f[1].contains("conn/s 10  rx 2.0MB/s"), "{}", f[1]);
        let row = f.iter().find(|l| l.contains("nginx")).unwrap();
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cols[..8],
            ["42", "nginx", "3", "10", "2.0M", "0", "0", "2"],
            "{row}"
        );
        let dropped = f.iter().find(|l| l.contains("DROPPED")).unwrap();
        assert!(dropped.trim_start().starts_with("9 "), "{dropped}");
        assert!(
            dropped.contains("DROPPED 3s ago: channel corrupt: x"),
            "{dropped}"
        );
    }

    #[test]
    fn first_frame_has_no_rates_and_fits() {
        let f = frame(None, &report(1000, 0, 5, 1), Path::new("/s"), 40, Some(3));
        assert_eq!(f.len(), 3);
        assert!(f.iter().all(|l| l.chars().count() <= 40));
        let f = frame(None, &report(1000, 0, 5, 1), Path::new("/s"), 500, None);
        let row = f.iter().find(|l| l.contains("nginx")).unwrap();
        assert_eq!(row.split_whitespace().nth(3), Some("-"), "{row}");
    }

    #[test]
    fn human_units() {
        assert_eq!(human(0.0), "0");
        assert_eq!(human(950.0), "950");
        assert_eq!(human(0.5), "0.5");
        assert_eq!(human(12_345.0), "12.3k");
        assert_eq!(human(4_500_000.0), "4.5M");
        assert_eq!(human(999_999.0), "1.0M");
    }
}
