//! `snstack-agent`: the NIC-side daemon of snstack. It owns every TCP socket of the host processes
//! attached to it and serves their socket calls over the shared-memory channel (docs/channel.md).
//!
//! Modules: `agent` (event loop, control plane, command execution), `session` (sans-IO slot
//! table, command decoding, policy), `ticket` (sans-IO fork tickets), `channel` (region endpoint,
//! batched wake-ups), `sock` (socket table, bindings, data path), `backend` (TCP implementations:
//! `kernel`), `stats`, `pcie` (optional model of the host <-> NIC link for benchmarks), `sys`
//! (every libc call).

mod agent;
mod backend;
mod channel;
mod pcie;
mod session;
mod sock;
mod stats;
mod sys;
mod ticket;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use shm_proto::region::Geometry;

const DEFAULT_SOCKET: &str = "/run/snstack/agent.sock";

#[derive(Parser, Debug)]
#[command(
    name = "snstack-agent",
    version,
    about = "snstack NIC agent: serves offloaded TCP sockets of attached processes"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the agent (the default when no subcommand is given).
    Run(RunArgs),
    /// Print the counters of a running agent, one `key value` per line.
    Stats(StatsArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BackendKind {
    /// The host OS TCP stack through non-blocking sockets.
    Kernel,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Control socket (UNIX SOCK_SEQPACKET) that host processes attach to; its parent directory is
    /// created (0755) and the socket is made world-connectable (0666).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Log verbosity (to stderr).
    #[arg(long, value_enum, default_value = "info")]
    log_level: LogLevel,
    /// Sockets per attached process (slots in its region).
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    max_sockets: u32,
    /// Bytes of each socket's RX stream (power of two, >= 4096).
    #[arg(long, value_name = "BYTES", default_value_t = 65536, value_parser = ring_size)]
    rx_ring: u32,
    /// Bytes of each socket's TX stream (power of two, >= 4096).
    #[arg(long, value_name = "BYTES", default_value_t = 65536, value_parser = ring_size)]
    tx_ring: u32,
    /// Microseconds the agent keeps polling without work before it sleeps in epoll_wait.
    #[arg(long, value_name = "N", default_value_t = 50)]
    spin_us: u64,
    /// Microseconds hosts should spin before sleeping (written into each region header). 0 (the
    /// default) sleeps at once: best CPU per request when cores are scarce; raise it (e.g. 50)
    /// for latency when the host has cores to spare. SNSTACK_SPIN_US overrides it per process.
    #[arg(long, value_name = "N", default_value_t = 0)]
    host_spin_us: u32,
    /// TCP implementation serving the sockets.
    #[arg(long, value_enum, default_value = "kernel")]
    backend: BackendKind,
    /// Model of the host <-> NIC link (benchmarks): `bf2` = 500 ns per channel crossing and a
    /// 25 GB/s cap (BlueField-2, PCIe Gen4 x16); `off` (the default) adds nothing. The two flags
    /// below override the preset's values.
    #[arg(long, value_name = "PRESET", default_value = "off", value_parser = pcie::preset)]
    pcie: pcie::Model,
    /// Nanoseconds added per channel crossing (reading a batch of commands, fetching TX payload,
    /// publishing events/RX bytes); overrides the preset's latency.
    #[arg(long, value_name = "NS")]
    pcie_latency_ns: Option<u64>,
    /// Bandwidth cap of the channel in gigabytes (1e9 bytes) per second; 0 = unlimited.
    /// Overrides the preset's cap.
    #[arg(long, value_name = "G", value_parser = non_negative)]
    pcie_gbytes_per_sec: Option<f64>,
}

#[derive(Args, Debug)]
struct StatsArgs {
    /// Control socket of the agent to query.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
}

fn ring_size(s: &str) -> Result<u32, String> {
    let v: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if !v.is_power_of_two() || !(4096..=1 << 30).contains(&v) {
        return Err("must be a power of two between 4096 and 1073741824".into());
    }
    Ok(v)
}

fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err("must be a non-negative number".into()),
    }
}

fn pcie_model(a: &RunArgs) -> pcie::Model {
    let mut m = a.pcie;
    if let Some(ns) = a.pcie_latency_ns {
        m.latency = Duration::from_nanos(ns);
    }
    if let Some(g) = a.pcie_gbytes_per_sec {
        m.bytes_per_sec = (g > 0.0).then_some(g * 1e9);
    }
    m
}

fn init_logging(level: LogLevel) {
    use tracing_subscriber::filter::LevelFilter;
    let max = match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_max_level(max)
        .init();
}

fn run(a: RunArgs) -> anyhow::Result<()> {
    init_logging(a.log_level);
    let model = pcie_model(&a);
    pcie::install(model);
    if !model.is_off() {
        tracing::info!("PCIe model: {model}");
    }
    let geometry = Geometry {
        cmd_entries: 1024,
        evt_entries: 1024,
        max_sockets: a.max_sockets,
        rx_size: a.rx_ring,
        tx_size: a.tx_ring,
        spin_ns: a.host_spin_us.saturating_mul(1000),
    };
    let cfg = agent::Config {
        socket: a.socket,
        geometry,
        spin: Duration::from_micros(a.spin_us),
    };
    match a.backend {
        BackendKind::Kernel => {
            let b = backend::kernel::KernelBackend::new().context("creating the kernel backend")?;
            agent::run(cfg, b)?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        None => run(cli.run),
        Some(Cmd::Run(a)) => run(a),
        Some(Cmd::Stats(s)) => stats::query(&s.socket)
            .map(|t| print!("{t}"))
            .map_err(anyhow::Error::from),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("snstack-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
