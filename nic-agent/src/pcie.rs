//! A model of the host <-> NIC link for benchmarks: what a real SmartNIC would add to the channel
//! that two processes on one machine do not pay.
//!
//! ```text
//!  host memory (region)                 PCIe                 NIC (agent)
//!  cmd ring  ──── read a batch of commands ───────────────►  one crossing  (+ latency)
//!  TX stream ──── fetch published payload ────────────────►  one crossing  (+ latency, bytes)
//!  evt ring / RX stream ◄── publish events, RX bytes ─────   one crossing  (+ latency, bytes)
//! ```
//!
//! Per loop iteration and channel, each of the three directions above counts as at most one
//! crossing (the agent batches: one DMA read of the command ring, one of a socket's TX payload, one
//! write of everything it publishes), and each crossing costs `latency` before the agent goes on.
//! Every byte that crosses (payload, plus 64 B per command or event entry) goes through a token
//! bucket of `bytes_per_sec` (burst [`BURST`]). The agent waits by spinning: the time shows up as
//! agent CPU, as it would on a NIC core stalled on a DMA completion; `pcie_delay_ns` and
//! `pcie_throttle_ns` in `snstack-agent stats` say how much of it was the model.
//!
//! The model is off unless `--pcie`, `--pcie-latency-ns` or `--pcie-gbytes-per-sec` is given, and
//! then costs one relaxed load per call site. [`Link`] is sans-IO (the caller passes the time and
//! is told how long to wait); the process-wide link behind [`cross`] does the waiting. The agent is
//! single-threaded, so one link stands for the one PCIe link of the NIC.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bytes the link may carry back to back before the rate applies.
pub const BURST: u64 = 64 * 1024;
/// Bytes charged for one command or event entry (the 64-byte ring entries).
pub const ENTRY_BYTES: u64 = 64;

/// Link parameters. `Model::default()` is the ideal link (no cost).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Model {
    /// Added per crossing.
    pub latency: Duration,
    /// Bandwidth cap in bytes per second; `None` = unlimited.
    pub bytes_per_sec: Option<f64>,
}

impl Model {
    /// BlueField-2 on PCIe Gen4 x16: about 0.5 us per crossing (0.3-1 us measured for MMIO/DMA
    /// round trips) and about 25 GB/s of the 32 GB/s raw after encoding and TLP overheads.
    pub const BF2: Model = Model {
        latency: Duration::from_nanos(500),
        bytes_per_sec: Some(25e9),
    };

    pub fn is_off(&self) -> bool {
        self.latency.is_zero() && self.bytes_per_sec.is_none()
    }
}

impl std::fmt::Display for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_off() {
            return f.write_str("off");
        }
        write!(f, "{} ns per crossing, ", self.latency.as_nanos())?;
        match self.bytes_per_sec {
            Some(b) => write!(f, "{:.2} GB/s", b / 1e9),
            None => f.write_str("unlimited bandwidth"),
        }
    }
}

/// What the model has cost so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub crossings: u64,
    pub bytes: u64,
    /// Time spent waiting for the per-crossing latency.
    pub delay_ns: u64,
    /// Time spent waiting for the bandwidth cap.
    pub throttle_ns: u64,
}

/// One link: the model plus the token bucket. Sans-IO.
#[derive(Debug)]
pub struct Link {
    model: Model,
    /// Bytes that may cross now; negative = debt being paid off at the rate.
    tokens: f64,
    last: Option<Instant>,
    pub stats: Stats,
}

impl Link {
    pub fn new(model: Model) -> Link {
        Link {
            model,
            tokens: BURST as f64,
            last: None,
            stats: Stats::default(),
        }
    }

    /// One crossing carrying `bytes` at `now`: returns (latency wait, bandwidth wait).
    pub fn cross(&mut self, now: Instant, bytes: u64) -> (Duration, Duration) {
        self.stats.crossings += 1;
        self.stats.bytes += bytes;
        let throttle = self.charge(now, bytes);
        self.stats.delay_ns += self.model.latency.as_nanos() as u64;
        self.stats.throttle_ns += throttle.as_nanos() as u64;
        (self.model.latency, throttle)
    }

    fn charge(&mut self, now: Instant, bytes: u64) -> Duration {
        let Some(rate) = self.model.bytes_per_sec.filter(|r| *r > 0.0) else {
            return Duration::ZERO;
        };
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * rate).min(BURST as f64);
        }
        self.last = Some(now);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / rate)
        }
    }
}

static ON: AtomicBool = AtomicBool::new(false);
static LINK: Mutex<Option<Link>> = Mutex::new(None);

/// Installs the process-wide link (once, at startup). An off model leaves every call site free.
pub fn install(model: Model) {
    let on = !model.is_off();
    *LINK.lock().unwrap_or_else(|e| e.into_inner()) = Some(Link::new(model));
    ON.store(on, Ordering::Relaxed);
}

/// Whether a model is active (call sites test this before doing any work).
#[inline]
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// One crossing carrying `bytes`: spins for the latency and for the bandwidth cap.
pub fn cross(bytes: u64) {
    if !enabled() {
        return;
    }
    let now = Instant::now();
    let (lat, thr) = match LINK.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        Some(l) => l.cross(now, bytes),
        None => return,
    };
    let until = now + lat + thr;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// Counters of the process-wide link (zeros when no model is installed).
pub fn stats() -> Stats {
    LINK.lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map_or_else(Stats::default, |l| l.stats)
}

/// Crossings already made by one channel in the current loop iteration (reset at each flush).
#[derive(Clone, Copy, Debug, Default)]
pub struct Batch {
    read: bool,
    fetch: bool,
    publish: bool,
}

/// Which way a crossing goes (see the module diagram).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// The agent reads commands from the host's ring.
    ReadCmds,
    /// The agent fetches TX payload from the host.
    FetchTx,
    /// The agent writes events or RX bytes to the host.
    Publish,
}

impl Batch {
    /// Charges `bytes` going `dir`; the first crossing of a direction in this batch also pays the
    /// latency. Bytes of later crossings in the batch still pass the bandwidth cap.
    pub fn cross(&mut self, dir: Dir, bytes: u64) {
        if !enabled() {
            return;
        }
        let open = match dir {
            Dir::ReadCmds => &mut self.read,
            Dir::FetchTx => &mut self.fetch,
            Dir::Publish => &mut self.publish,
        };
        if std::mem::replace(open, true) {
            throttle_only(bytes);
        } else {
            cross(bytes);
        }
    }

    /// Ends the batch (the agent's loop iteration for this channel).
    pub fn end(&mut self) {
        *self = Batch::default();
    }
}

/// Bytes inside a crossing already paid for: only the bandwidth cap applies.
fn throttle_only(bytes: u64) {
    let now = Instant::now();
    let thr = match LINK.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        Some(l) => {
            l.stats.bytes += bytes;
            let t = l.charge(now, bytes);
            l.stats.throttle_ns += t.as_nanos() as u64;
            t
        }
        None => return,
    };
    let until = now + thr;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// Parses `--pcie PRESET`.
pub fn preset(name: &str) -> Result<Model, String> {
    match name {
        "off" | "none" => Ok(Model::default()),
        "bf2" => Ok(Model::BF2),
        _ => Err(format!("unknown PCIe preset '{name}' (known: off, bf2)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_costs_nothing() {
        let mut l = Link::new(Model::default());
        let t = Instant::now();
        assert_eq!(l.cross(t, 1 << 30), (Duration::ZERO, Duration::ZERO));
        assert!(Model::default().is_off());
        assert_eq!(Model::default().to_string(), "off");
    }

    #[test]
    fn latency_per_crossing() {
        let mut l = Link::new(Model {
            latency: Duration::from_nanos(500),
            bytes_per_sec: None,
        });
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.cross(t, 100).0, Duration::from_nanos(500));
        }
        assert_eq!(l.stats.crossings, 3);
        assert_eq!(l.stats.delay_ns, 1500);
        assert_eq!(l.stats.bytes, 300);
    }

    #[test]
    fn bucket_allows_burst_then_paces() {
        // 1 GB/s: 1 byte per ns.
        let mut l = Link::new(Model {
            latency: Duration::ZERO,
            bytes_per_sec: Some(1e9),
        });
        let t0 = Instant::now();
        assert_eq!(l.cross(t0, BURST).1, Duration::ZERO);
        // Bucket empty: 1000 more bytes at the same instant wait 1 us.
        let w = l.cross(t0, 1000).1;
        assert!((w.as_nanos() as i64 - 1000).abs() <= 1, "{w:?}");
        // 3 us later the debt is paid and 2000 bytes are back.
        let w = l.cross(t0 + Duration::from_micros(3), 2000).1;
        assert_eq!(w, Duration::ZERO);
        // Refill never exceeds the burst.
        let w = l.cross(t0 + Duration::from_secs(10), BURST + 500).1;
        assert!((w.as_nanos() as i64 - 500).abs() <= 1, "{w:?}");
    }

    #[test]
    fn bf2_preset() {
        let m = preset("bf2").unwrap();
        assert_eq!(m.latency, Duration::from_nanos(500));
        assert_eq!(m.bytes_per_sec, Some(25e9));
        assert_eq!(m.to_string(), "500 ns per crossing, 25.00 GB/s");
        assert!(preset("off").unwrap().is_off());
        assert!(preset("x").is_err());
    }
}
