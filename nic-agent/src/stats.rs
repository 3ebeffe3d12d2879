//! Counters of the channel (the "DMA" figures) and the text served to `snstack-agent stats`.
//!
//! Each channel counts its own traffic; process-wide totals are the counts of channels that are
//! gone (`retired`) plus those of the live ones, so nothing is counted twice.

use std::fmt::Write as _;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::Ordering;

use shm_proto::msg::{Hello, Reply, HELLO_STATS, MSG_LEN};
use shm_proto::ChannelStats;
use thiserror::Error;

use crate::backend::{EngineStats, LoopStats};
use crate::sys;

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
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.h2n_bytes += o.h2n_bytes;
        self.h2n_ops += o.h2n_ops;
        self.n2h_bytes += o.n2h_bytes;
        self.n2h_ops += o.n2h_ops;
        self.h2n_file_bytes += o.h2n_file_bytes;
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

/// What `HELLO_STATS` reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
    /// Memory the attached processes' regions hold (pages touched and not released).
    pub channel_bytes: u64,
}

impl Snapshot {
    /// `key value` lines; the first seven keys are a stable interface.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let rows: [(&str, u64); 15] = [
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
            ("channel_bytes", self.channel_bytes),
            ("h2n_file_bytes", self.io.h2n_file_bytes),
        ];
        for (k, v) in rows {
            let _ = writeln!(s, "{k} {v}");
        }
        let lo = &self.loopback;
        let _ = writeln!(s, "loopback {}", u64::from(lo.enabled));
        let _ = writeln!(s, "loop_connections {}", lo.connections);
        let _ = writeln!(s, "loop_bytes {}", lo.bytes);
        let e = &self.engine;
        if e.enabled {
            for (k, v) in [
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
            ] {
                let _ = writeln!(s, "{k} {v}");
            }
        }
        // The PCIe model (pcie.rs) is process-wide, not per snapshot: zeros when it is off.
        let p = crate::pcie::stats();
        for (k, v) in [
            ("pcie_crossings", p.crossings),
            ("pcie_bytes", p.bytes),
            ("pcie_delay_ns", p.delay_ns),
            ("pcie_throttle_ns", p.throttle_ns),
        ] {
            let _ = writeln!(s, "{k} {v}");
        }
        s
    }
}

#[derive(Debug, Error)]
pub enum StatsError {
    #[error("cannot reach the agent at {path}: {err}")]
    Connect { path: String, err: std::io::Error },
    #[error("talking to the agent: {0}")]
    Io(#[from] std::io::Error),
    #[error("the agent sent a malformed reply")]
    BadReply,
    #[error("the agent refused the request (errno {0})")]
    Refused(u32),
}

/// Client side of `HELLO_STATS`: returns the agent's text.
pub fn query(path: &Path) -> Result<String, StatsError> {
    let fd = sys::seqpacket_connect(path).map_err(|err| StatsError::Connect {
        path: path.display().to_string(),
        err,
    })?;
    sys::set_timeouts(fd.as_raw_fd(), 5)?;
    sys::send(fd.as_raw_fd(), &Hello::new(HELLO_STATS, 0).encode())?;
    let mut b = [0u8; MSG_LEN];
    let n = sys::recv(fd.as_raw_fd(), &mut b)?;
    let r = Reply::decode(&b[..n]).ok_or(StatsError::BadReply)?;
    if r.status != 0 {
        return Err(StatsError::Refused(r.status));
    }
    let mut text = vec![0u8; (r.len as usize).clamp(1, 1 << 20)];
    let n = sys::recv(fd.as_raw_fd(), &mut text)?;
    text.truncate(n);
    String::from_utf8(text).map_err(|_| StatsError::BadReply)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        };
        a.add(&Counters {
            h2n_bytes: 2,
            h2n_ops: 3,
            n2h_bytes: 4,
            n2h_ops: 5,
            h2n_file_bytes: 6,
        });
        assert_eq!(
            a,
            Counters {
                h2n_bytes: 3,
                h2n_ops: 4,
                n2h_bytes: 5,
                n2h_ops: 6,
                h2n_file_bytes: 7
            }
        );
        let cs = ChannelStats::default();
        a.mirror(&cs);
        assert_eq!(cs.n2h_ops.load(Ordering::Relaxed), 6);
    }
}
