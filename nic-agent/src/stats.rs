//! Counters of the channel (the "DMA" figures), per-process connection events, and the reports
//! served to `snstack-agent stats` (`key value` text) and `snstack stats --json` / `snstack top`
//! / the metrics endpoint (JSON, [`render_json`]).
//!
//! Each channel counts its own traffic; process-wide totals are the counts of channels that are
//! gone (`retired`) plus those of the live ones, so nothing is counted twice. Connection events
//! are counted where a connection starts or fails (once per connection, never per request).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::{json, Map, Value};
use shm_proto::ChannelStats;

use crate::backend::{EngineStats, LoopStats};

/// Traffic of one channel, or a sum of channels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// TX payload bytes drained from the host.
    pub h2n_bytes: u64,
    /// Commands consumed.
    pub h2n_ops: u64,
    /// RX payload bytes written for the host.
    pub n2h_bytes: u64,
    /// Completions posted plus RX publications.
    pub n2h_ops: u64,
    /// Of `h2n_bytes`: read from host files by reference (`OP_TX_FILE`).
    pub h2n_file_bytes: u64,
    /// kTLS TX (ktls.rs): records the agent sealed, and their plaintext bytes.
    pub tls_tx_records: u64,
    pub tls_tx_bytes: u64,
    /// kTLS RX (ktls_rx.rs): records the agent opened, their plaintext bytes, and records that
    /// failed to open (authentication, length, version).
    pub tls_rx_records: u64,
    pub tls_rx_bytes: u64,
    pub tls_decrypt_errors: u64,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.h2n_bytes += o.h2n_bytes;
        self.h2n_ops += o.h2n_ops;
        self.n2h_bytes += o.n2h_bytes;
        self.n2h_ops += o.n2h_ops;
        self.h2n_file_bytes += o.h2n_file_bytes;
        self.tls_tx_records += o.tls_tx_records;
        self.tls_tx_bytes += o.tls_tx_bytes;
        self.tls_rx_records += o.tls_rx_records;
        self.tls_rx_bytes += o.tls_rx_bytes;
        self.tls_decrypt_errors += o.tls_decrypt_errors;
    }

    /// Mirrors the counters into the region header (the agent is their only writer).
    pub fn mirror(&self, to: &ChannelStats) {
        to.h2n_bytes.store(self.h2n_bytes, Ordering::Relaxed);
        to.h2n_ops.store(self.h2n_ops, Ordering::Relaxed);
        to.n2h_bytes.store(self.n2h_bytes, Ordering::Relaxed);
        to.n2h_ops.store(self.n2h_ops, Ordering::Relaxed);
        to.h2n_file_bytes
            .store(self.h2n_file_bytes, Ordering::Relaxed);
    }
}

/// Framed connections of the payload API (framed.rs): what went into message records, and the
/// connections closed for malformed input, by reason (`shm_proto::record::REASONS` order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PayloadStats {
    pub messages: u64,
    pub parts: u64,
    pub bytes: u64,
    pub malformed: [u64; shm_proto::record::REASONS.len()],
}

/// TLS termination (`--tls-port`, terminated.rs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsTermStats {
    /// Connections accepted on a terminated port.
    pub sessions: u64,
    /// Handshakes completed.
    pub handshakes: u64,
    /// Connections whose peer broke TLS (a bad record, a plain-text client, an alert).
    pub failures: u64,
}

/// `payload_malformed_<reason>`, in `REASONS` order (a test checks they match).
pub const MALFORMED_KEYS: [&str; shm_proto::record::REASONS.len()] = [
    "payload_malformed_truncated",
    "payload_malformed_length_too_large",
    "payload_malformed_length_too_small",
    "payload_malformed_bare_lf",
    "payload_malformed_bad_request_line",
    "payload_malformed_bad_status_line",
    "payload_malformed_bad_version",
    "payload_malformed_bad_header",
    "payload_malformed_header_too_long",
    "payload_malformed_bad_content_length",
    "payload_malformed_conflicting_content_length",
    "payload_malformed_te_and_content_length",
    "payload_malformed_bad_transfer_encoding",
    "payload_malformed_bad_chunk_size",
    "payload_malformed_bad_chunk_ext",
    "payload_malformed_chunk_ext_too_long",
    "payload_malformed_bad_chunk_end",
    "payload_malformed_bad_resp_type",
    "payload_malformed_bad_resp_length",
    "payload_malformed_bulk_too_large",
    "payload_malformed_array_too_large",
    "payload_malformed_bad_resp_integer",
    "payload_malformed_bad_resp_line",
    "payload_malformed_bad_bulk_end",
    "payload_malformed_resp_too_deep",
    "payload_malformed_inline_too_long",
];

/// Connection events of one process, or a sum of processes (netstat's "active/passive
/// connection openings" and failures, per process).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnCounters {
    /// Connects that started (SYN sent, or a loopback connection made).
    pub active_opens: u64,
    /// Connections bound to the process by accept (or the accept handoff).
    pub passive_opens: u64,
    /// Connections that failed: connects refused, unreachable or timed out, established ones
    /// reset or timed out.
    pub errors: u64,
}

impl ConnCounters {
    pub fn add(&mut self, o: &ConnCounters) {
        self.active_opens += o.active_opens;
        self.passive_opens += o.passive_opens;
        self.errors += o.errors;
    }
}

/// An errno that ends a connection or a connection attempt (counted in [`ConnCounters::errors`]);
/// not the answers to a misuse such as a second `connect` (`EALREADY`, `EISCONN`).
pub fn is_connection_error(errno: i32) -> bool {
    matches!(
        errno,
        libc::ECONNREFUSED
            | libc::ECONNRESET
            | libc::ECONNABORTED
            | libc::ETIMEDOUT
            | libc::ENETUNREACH
            | libc::EHOSTUNREACH
            | libc::ENETDOWN
            | libc::EHOSTDOWN
            | libc::EPIPE
    )
}

/// One attached process in a [`Snapshot`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcSnapshot {
    pub session: u32,
    pub pid: i32,
    pub uid: u32,
    /// Live slots (sockets it has open through the agent).
    pub sockets: u64,
    /// Slots closed by the process whose TX bytes are still draining.
    pub draining: u64,
    pub io: Counters,
    pub conns: ConnCounters,
    /// Bytes of memory its region holds.
    pub channel_bytes: u64,
    /// Completions waiting for room in its event ring (the process is not draining it).
    pub backlog: u64,
}

/// One socket with kTLS keys (`TCP_ULP` "tls" and `TLS_TX` or `TLS_RX`) in a [`Snapshot`]:
/// `snstack-agent stats --sockets` and the JSON report's `tls_sockets`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSockSnapshot {
    /// The process whose binding receives its bytes, and that binding's channel slot.
    pub pid: i32,
    pub slot: u32,
    pub local: Option<std::net::SocketAddr>,
    pub peer: Option<std::net::SocketAddr>,
    /// `Suite::label` of each direction, once its key is set.
    pub tx: Option<&'static str>,
    pub rx: Option<&'static str>,
    pub tx_records: u64,
    pub tx_bytes: u64,
    pub rx_records: u64,
    pub rx_bytes: u64,
    pub decrypt_errors: u64,
}

/// A process whose channel the agent dropped for corrupting it (the last few are kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedProc {
    pub pid: i32,
    pub uid: u32,
    pub reason: String,
    pub at: Instant,
    pub io: Counters,
    pub conns: ConnCounters,
}

/// How many dropped processes a snapshot remembers.
pub const RECENT_DROPS: usize = 16;

/// What `HELLO_STATS` reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Attached processes.
    pub processes: u64,
    /// Agent-side OS sockets: bound in one or more sessions, held by a fork ticket, queued for
    /// accept, or draining after close. A socket shared by several processes counts once.
    pub sockets: u64,
    /// Of `sockets`: draining after close.
    pub draining: u64,
    /// Of `sockets`: accepted by the agent, not yet by the host.
    pub accept_queued: u64,
    pub io: Counters,
    pub channels_dropped: u64,
    /// Processes attached since start.
    pub attaches: u64,
    /// Live (unclaimed) fork tickets.
    pub tickets: u64,
    /// Sockets bound in more than one session.
    pub shared: u64,
    /// The loopback accelerator (docs/loopback.md).
    pub loopback: LoopStats,
    /// The user-space engine's counters (`--engine native`).
    pub engine: EngineStats,
    /// The agent's spin time in force (µs): `--spin-us`, or 0 while its CPU is contended.
    pub spin_us: u64,
    /// Spinning windows that found the agent's CPU contended, and yields that kept it off its
    /// CPU for more than a millisecond (spin.rs): each a burst of latency.
    pub spin_contended: u64,
    pub slow_yields: u64,
    /// 1 while `--realtime auto` has the agent's loop at real-time priority.
    pub realtime: u64,
    /// Sleeps that polled busy hosts' command rings on a timer instead of asking for their
    /// doorbells, and those whose timer found nothing (host_poll.rs).
    pub host_polls: u64,
    pub host_polls_empty: u64,
    /// Memory the attached processes' regions hold (pages touched and not released).
    pub channel_bytes: u64,
    /// Connection events of every process so far.
    pub conns: ConnCounters,
    /// Framed connections (payload API).
    pub payload: PayloadStats,
    /// TLS termination.
    pub tls_term: TlsTermStats,
    /// The attached processes (not those that exited and only drain).
    pub procs: Vec<ProcSnapshot>,
    /// The last [`RECENT_DROPS`] processes whose channel was dropped, oldest first.
    pub dropped: Vec<DroppedProc>,
    /// Sockets with kTLS keys, with their own counters.
    pub tls_socks: Vec<TlsSockSnapshot>,
}

impl Snapshot {
    /// The agent-wide counters in report order: `(key, value)`; the first seven keys are a
    /// stable interface.
    pub fn rows(&self) -> Vec<(&'static str, u64)> {
        let mut rows = vec![
            ("processes", self.processes),
            ("sockets", self.sockets),
            ("h2n_bytes", self.io.h2n_bytes),
            ("h2n_ops", self.io.h2n_ops),
            ("n2h_bytes", self.io.n2h_bytes),
            ("n2h_ops", self.io.n2h_ops),
            ("channels_dropped", self.channels_dropped),
            ("sockets_draining", self.draining),
            ("sockets_accept_queued", self.accept_queued),
            ("attaches", self.attaches),
            ("tickets", self.tickets),
            ("sockets_shared", self.shared),
            ("agent_spin_us", self.spin_us),
            ("agent_spin_contended", self.spin_contended),
            ("agent_slow_yields", self.slow_yields),
            ("agent_realtime", self.realtime),
            ("agent_host_polls", self.host_polls),
            ("agent_host_polls_empty", self.host_polls_empty),
            ("channel_bytes", self.channel_bytes),
            ("h2n_file_bytes", self.io.h2n_file_bytes),
            ("active_opens", self.conns.active_opens),
            ("passive_opens", self.conns.passive_opens),
            ("connection_errors", self.conns.errors),
        ];
        let lo = &self.loopback;
        rows.extend([
            ("loopback", u64::from(lo.enabled)),
            ("loop_connections", lo.connections),
            ("loop_bytes", lo.bytes),
        ]);
        let e = &self.engine;
        if e.enabled {
            rows.extend([
                ("tcp_rx_frames", e.rx_frames),
                ("tcp_tx_frames", e.tx_frames),
                ("tcp_rx_csum_errors", e.rx_csum_errors),
                ("tcp_rx_malformed", e.rx_malformed),
                ("tcp_conns", e.conns),
                ("tcp_time_wait", e.time_wait),
                ("tcp_memory_bytes", e.memory_bytes),
                ("tcp_segs_in", e.tcp.segs_in),
                ("tcp_segs_out", e.tcp.segs_out),
                ("tcp_retrans_segs", e.tcp.retrans_segs),
                ("tcp_fast_recoveries", e.tcp.fast_recoveries),
                ("tcp_rtos", e.tcp.rtos),
                ("tcp_tlps", e.tcp.tlps),
                ("tcp_dsacks", e.tcp.dsacks),
                ("tcp_syn_dropped", e.syn_dropped),
                ("tcp_syncookies_sent", e.syncookies_sent),
                ("tcp_syncookies_ok", e.syncookies_ok),
                ("tcp_rst_sent", e.rst_sent),
                ("tcp_tx_data_direct", e.tx_data_direct),
                ("tcp_tx_data_buffered", e.tx_data_buffered),
                ("tcp_tx_lent_missing", e.tx_lent_missing),
            ]);
        }
        let pl = &self.payload;
        rows.extend([
            ("payload_messages", pl.messages),
            ("payload_parts", pl.parts),
            ("payload_bytes", pl.bytes),
        ]);
        rows.extend(MALFORMED_KEYS.iter().copied().zip(pl.malformed));
        rows.extend([
            ("tls_term_sessions", self.tls_term.sessions),
            ("tls_term_handshakes", self.tls_term.handshakes),
            ("tls_term_failures", self.tls_term.failures),
            ("tls_tx_records", self.io.tls_tx_records),
            ("tls_tx_bytes", self.io.tls_tx_bytes),
            ("tls_rx_records", self.io.tls_rx_records),
            ("tls_rx_bytes", self.io.tls_rx_bytes),
            ("tls_decrypt_errors", self.io.tls_decrypt_errors),
        ]);
        // The PCIe model (pcie.rs) is process-wide, not per snapshot: zeros when it is off.
        let p = crate::pcie::stats();
        rows.extend([
            ("pcie_crossings", p.crossings),
            ("pcie_bytes", p.bytes),
            ("pcie_delay_ns", p.delay_ns),
            ("pcie_throttle_ns", p.throttle_ns),
        ]);
        rows
    }

    /// `key value` lines ([`Snapshot::rows`]).
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (k, v) in self.rows() {
            let _ = writeln!(s, "{k} {v}");
        }
        s
    }
}

/// What the agent knows about itself beyond the core's counters (the control plane fills it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentFacts {
    pub pid: u32,
    /// CPU time of the whole agent process (every thread), microseconds.
    pub cpu_user_us: u64,
    pub cpu_system_us: u64,
    pub uptime_ms: u64,
}

fn io_json(m: &mut Map<String, Value>, io: &Counters, c: &ConnCounters) {
    for (k, v) in [
        ("h2n_bytes", io.h2n_bytes),
        ("h2n_ops", io.h2n_ops),
        ("n2h_bytes", io.n2h_bytes),
        ("n2h_ops", io.n2h_ops),
        ("h2n_file_bytes", io.h2n_file_bytes),
        ("tls_tx_records", io.tls_tx_records),
        ("tls_tx_bytes", io.tls_tx_bytes),
        ("tls_rx_records", io.tls_rx_records),
        ("tls_rx_bytes", io.tls_rx_bytes),
        ("tls_decrypt_errors", io.tls_decrypt_errors),
        ("active_opens", c.active_opens),
        ("passive_opens", c.passive_opens),
        ("connection_errors", c.errors),
    ] {
        m.insert(k.into(), v.into());
    }
}

/// The JSON report (`snstack stats --json`; docs/operations.md lists the fields). `comm` names
/// a pid's command (from /proc, display only); `now` dates the dropped processes.
pub fn render_json(
    s: &Snapshot,
    agent: &AgentFacts,
    comm: &dyn Fn(i32) -> Option<String>,
    now: Instant,
) -> String {
    let totals: Map<String, Value> = s
        .rows()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into()))
        .collect();
    let procs: Vec<Value> = s
        .procs
        .iter()
        .map(|p| {
            let mut m = Map::new();
            m.insert("pid".into(), p.pid.into());
            m.insert("comm".into(), comm(p.pid).unwrap_or_default().into());
            m.insert("uid".into(), p.uid.into());
            m.insert("session".into(), p.session.into());
            m.insert("sockets".into(), p.sockets.into());
            m.insert("sockets_draining".into(), p.draining.into());
            io_json(&mut m, &p.io, &p.conns);
            m.insert("channel_bytes".into(), p.channel_bytes.into());
            m.insert("event_backlog".into(), p.backlog.into());
            Value::Object(m)
        })
        .collect();
    let dropped: Vec<Value> = s
        .dropped
        .iter()
        .map(|d| {
            let mut m = Map::new();
            m.insert("pid".into(), d.pid.into());
            m.insert("uid".into(), d.uid.into());
            m.insert("reason".into(), d.reason.clone().into());
            let ago = now.saturating_duration_since(d.at).as_millis();
            m.insert(
                "ago_ms".into(),
                u64::try_from(ago).unwrap_or(u64::MAX).into(),
            );
            io_json(&mut m, &d.io, &d.conns);
            Value::Object(m)
        })
        .collect();
    let tls: Vec<Value> = s
        .tls_socks
        .iter()
        .map(|t| {
            let addr = |a: Option<std::net::SocketAddr>| a.map(|a| a.to_string());
            json!({
                "pid": t.pid,
                "slot": t.slot,
                "local": addr(t.local),
                "peer": addr(t.peer),
                "tx": t.tx,
                "rx": t.rx,
                "tls_tx_records": t.tx_records,
                "tls_tx_bytes": t.tx_bytes,
                "tls_rx_records": t.rx_records,
                "tls_rx_bytes": t.rx_bytes,
                "tls_decrypt_errors": t.decrypt_errors,
            })
        })
        .collect();
    let v = json!({
        "agent": {
            "pid": agent.pid,
            "cpu_user_us": agent.cpu_user_us,
            "cpu_system_us": agent.cpu_system_us,
            "uptime_ms": agent.uptime_ms,
        },
        "totals": totals,
        "processes": procs,
        "dropped": dropped,
        "tls_sockets": tls,
    });
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_keys_name_the_reasons() {
        for (k, r) in MALFORMED_KEYS.iter().zip(shm_proto::record::REASONS) {
            assert_eq!(k.strip_prefix("payload_malformed_"), Some(r));
        }
    }

    #[test]
    fn tls_sockets_in_the_json_report_and_as_lines() {
        let s = Snapshot {
            tls_socks: vec![
                TlsSockSnapshot {
                    pid: 42,
                    slot: 3,
                    local: Some("127.0.0.1:443".parse().unwrap()),
                    peer: Some("[::1]:5000".parse().unwrap()),
                    tx: Some("TLS1.3/AES-128-GCM"),
                    rx: None,
                    tx_records: 7,
                    tx_bytes: 70_000,
                    rx_records: 0,
                    rx_bytes: 0,
                    decrypt_errors: 0,
                },
                TlsSockSnapshot {
                    pid: 43,
                    slot: 0,
                    rx: Some("TLS1.2/CHACHA20-POLY1305"),
                    rx_records: 2,
                    rx_bytes: 11,
                    decrypt_errors: 1,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let j = render_json(&s, &AgentFacts::default(), &|_| None, Instant::now());
        let v: Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["tls_sockets"][0]["peer"], "[::1]:5000");
        assert_eq!(v["tls_sockets"][1]["local"], Value::Null);
        assert_eq!(
            nic_agent::client::tls_socket_lines(&v),
            "tls_socket pid=42 slot=3 local=127.0.0.1:443 peer=[::1]:5000 tx=TLS1.3/AES-128-GCM \
             rx=- tls_tx_records=7 tls_tx_bytes=70000 tls_rx_records=0 tls_rx_bytes=0 \
             tls_decrypt_errors=0\n\
             tls_socket pid=43 slot=0 local=- peer=- tx=- rx=TLS1.2/CHACHA20-POLY1305 \
             tls_tx_records=0 tls_tx_bytes=0 tls_rx_records=2 tls_rx_bytes=11 \
             tls_decrypt_errors=1\n"
        );
    }

    #[test]
    fn render_has_required_keys() {
        let s = Snapshot {
            processes: 2,
            sockets: 5,
            io: Counters {
                h2n_bytes: 1,
                h2n_ops: 2,
                n2h_bytes: 3,
                n2h_ops: 4,
                h2n_file_bytes: 9,
                tls_tx_records: 10,
                tls_tx_bytes: 11,
                tls_rx_records: 12,
                tls_rx_bytes: 13,
                tls_decrypt_errors: 14,
            },
            channels_dropped: 1,
            ..Default::default()
        };
        let t = s.render();
        for (k, v) in [
            ("processes", 2),
            ("sockets", 5),
            ("h2n_bytes", 1),
            ("h2n_ops", 2),
            ("n2h_bytes", 3),
            ("n2h_ops", 4),
            ("channels_dropped", 1),
            ("h2n_file_bytes", 9),
            ("tls_tx_records", 10),
            ("tls_tx_bytes", 11),
            ("tls_rx_records", 12),
            ("tls_rx_bytes", 13),
            ("tls_decrypt_errors", 14),
        ] {
            assert!(
                t.lines().any(|l| l == format!("{k} {v}")),
                "{k} missing in {t}"
            );
        }
    }

    #[test]
    fn counters_add_and_mirror() {
        let mut a = Counters {
            h2n_bytes: 1,
            h2n_ops: 1,
            n2h_bytes: 1,
            n2h_ops: 1,
            h2n_file_bytes: 1,
            tls_tx_records: 1,
            tls_tx_bytes: 1,
            tls_rx_records: 1,
            tls_rx_bytes: 1,
            tls_decrypt_errors: 1,
        };
        a.add(&Counters {
            h2n_bytes: 2,
            h2n_ops: 3,
            n2h_bytes: 4,
            n2h_ops: 5,
            h2n_file_bytes: 6,
            tls_tx_records: 7,
            tls_tx_bytes: 8,
            tls_rx_records: 2,
            tls_rx_bytes: 3,
            tls_decrypt_errors: 4,
        });
        assert_eq!(
            a,
            Counters {
                h2n_bytes: 3,
                h2n_ops: 4,
                n2h_bytes: 5,
                n2h_ops: 6,
                h2n_file_bytes: 7,
                tls_tx_records: 8,
                tls_tx_bytes: 9,
                tls_rx_records: 3,
                tls_rx_bytes: 4,
                tls_decrypt_errors: 5,
            }
        );
        let cs = ChannelStats::default();
        a.mirror(&cs);
        assert_eq!(cs.n2h_ops.load(Ordering::Relaxed), 6);
    }
}
