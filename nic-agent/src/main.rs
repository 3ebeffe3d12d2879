//! `snstack-agent`: the NIC-side daemon of snstack. It owns every TCP socket of the host processes
//! attached to it and serves their socket calls over the shared-memory channel (docs/channel.md).
//!
//! Modules: `agent` (event loop, control plane, command execution), `session` (sans-IO slot
//! table, command decoding, policy), `ticket` (sans-IO fork tickets), `channel` (region endpoint,
//! batched wake-ups), `sock` (socket table, bindings, data path), `backend` (TCP implementations:
//! `kernel`, `user`), `stats`, `pcie` (optional model of the host <-> NIC link for benchmarks),
//! `sys` (every libc call), `config` (the configuration file), `metrics` (the Prometheus
//! endpoint), `tls` (the kTLS record layer: sans-IO, not yet on the data path; docs/tls.md).
//! The stats client lives in the library (`nic_agent::client`), shared with `snstack`, and so do
//! the payload API's message framers (`nic_agent::framing`, which `framed` runs on framed
//! connections).

mod agent;
mod backend;
mod channel;
mod config;
mod framed;
mod host_poll;
mod ktls;
mod ktls_rx;
mod metrics;
mod pcie;
mod session;
mod sock;
mod spin;
mod stats;
mod sys;
mod terminated;
mod ticket;
mod tls;
mod urgent;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use nic_agent::client::{self, DEFAULT_SOCKET};
use shm_proto::region::Geometry;

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
// Parsed once at start-up: the size of the arguments does not matter.
#[allow(clippy::large_enum_variant)]
enum Cmd {
    /// Run the agent (the default when no subcommand is given).
    Run(RunArgs),
    /// Print the counters of a running agent, one `key value` per line (or JSON).
    Stats(StatsArgs),
}

/// `--realtime`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Realtime {
    Off,
    Auto,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BackendKind {
    /// The host OS TCP stack through non-blocking sockets.
    Kernel,
    /// The agent's own TCP/IP stack over an AF_PACKET socket on --iface (needs CAP_NET_RAW).
    Afpacket,
    /// The agent's own TCP/IP stack over a DPDK port (binary built with `--features dpdk`).
    Dpdk,
    /// The agent's own TCP/IP stack over an AF_XDP socket on --iface (binary built with the
    /// system libxdp; needs CAP_NET_ADMIN and CAP_BPF).
    Xdp,
}

impl BackendKind {
    fn name(self) -> &'static str {
        match self {
            BackendKind::Kernel => "kernel",
            BackendKind::Afpacket => "afpacket",
            BackendKind::Dpdk => "dpdk",
            BackendKind::Xdp => "xdp",
        }
    }
}

/// The TCP/IP engine of the user-space backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum EngineKind {
    /// snstack-tcp, our own engine (SACK, RACK-TLP, PRR, CUBIC, SYN cookies, TSO/checksum
    /// offload, timer wheel): the default.
    Native,
    /// smoltcp 0.12, kept as a comparison point.
    Smoltcp,
    /// lwIP 2.1.3 as Debian packages it (liblwip), a comparison point (binary built with
    /// `--features lwip`; limits of the packaged build in docs/engines.md).
    Lwip,
}

/// Congestion control algorithms of the native engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum CcKind {
    Cubic,
    Reno,
    Bbr,
}

impl CcKind {
    fn algo(self) -> snstack_tcp::cc::CcAlgo {
        match self {
            CcKind::Cubic => snstack_tcp::cc::CcAlgo::Cubic,
            CcKind::Reno => snstack_tcp::cc::CcAlgo::Reno,
            CcKind::Bbr => snstack_tcp::cc::CcAlgo::Bbr,
        }
    }
}

/// `--cc`, or the namespace's default algorithm when the engine has it, else CUBIC.
fn congestion(a: &RunArgs) -> snstack_tcp::cc::CcAlgo {
    if let Some(c) = a.cc {
        return c.algo();
    }
    std::fs::read("/proc/sys/net/ipv4/tcp_congestion_control")
        .ok()
        .and_then(|v| snstack_tcp::cc::CcAlgo::from_name(v.trim_ascii()).ok())
        .unwrap_or_default()
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Configuration file: `key = value` lines whose keys are these long flags (docs in the
    /// installed template); flags on the command line win. Default: PREFIX/etc/snstack/agent.conf
    /// of an installed agent (/etc/snstack/agent.conf for PREFIX /usr) when it exists; none for
    /// a binary outside PREFIX/bin.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Serve the counters as Prometheus text on http://ADDR:PORT/metrics (its own thread, which
    /// asks the control socket like `snstack stats`); e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<SocketAddr>,
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
    #[arg(long, value_name = "BYTES", default_value_t = 262144, value_parser = ring_size)]
    tx_ring: u32,
    /// Microseconds the agent keeps polling without work before it sleeps in epoll_wait.
    #[arg(long, value_name = "N", default_value_t = 50)]
    spin_us: u64,
    /// `auto`: run the agent's loop at real-time priority (SCHED_RR 1) while its CPU is shared
    /// and its own share of it is under 20 %, so every wake-up preempts whatever runs there (as
    /// the kernel's softirq would); back to the normal class above 30 %, where batching pays
    /// (and held there at least 100 ms, doubling while it repeats). Needs CAP_SYS_NICE. `off` (the default): the normal class only.
    #[arg(long, value_enum, default_value = "off")]
    realtime: Realtime,
    /// Microseconds hosts should spin before sleeping (written into each region header). 0 (the
    /// default) sleeps at once: best CPU per request when cores are scarce; raise it (e.g. 50)
    /// for latency when the host has cores to spare. SNSTACK_SPIN_US overrides it per process.
    #[arg(long, value_name = "N", default_value_t = 0)]
    host_spin_us: u32,
    /// Microseconds between the agent's looks at a host's command ring while that host, on
    /// CPUs apart from the agent's, answers a batch the agent just delivered (4 or more
    /// connections): the host then writes no doorbell (on a real NIC
    /// a cheap MMIO store; emulated here, a wake-up of another CPU that the host pays for).
    /// Three looks in a row that find nothing bring the doorbells back. 0 turns it off.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    host_poll_us: u64,
    /// Terminate TLS on these local ports (comma-separated; repeatable): connections to
    /// offloaded listeners on them speak TLS on the wire with --tls-cert/--tls-key, and the
    /// program that listens reads and writes plain bytes (docs/tls.md).
    #[arg(
        long = "tls-port",
        value_name = "PORT[,PORT...]",
        value_delimiter = ','
    )]
    tls_port: Vec<u16>,
    /// Certificate chain (PEM) for --tls-port; several (comma-separated or repeated, each with
    /// its --tls-key in the same order): a client's SNI picks the first valid for its name, the
    /// first answers the others.
    #[arg(long, value_name = "FILE[,FILE...]", value_delimiter = ',')]
    tls_cert: Vec<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of each --tls-cert, in the same order.
    #[arg(long, value_name = "FILE[,FILE...]", value_delimiter = ',')]
    tls_key: Vec<PathBuf>,
    /// ALPN protocols offered on --tls-port (comma-separated, in order of preference).
    #[arg(long, value_name = "PROTO[,PROTO...]", value_delimiter = ',')]
    tls_alpn: Vec<String>,
    /// TCP implementation serving the sockets: `kernel` (the OS stack), or the agent's own
    /// user-space stack over `afpacket`, `dpdk` or `xdp` (those need --iface and --ip).
    #[arg(long, value_enum, default_value = "kernel")]
    backend: BackendKind,
    /// TCP/IP engine of the user-space backends (afpacket, dpdk, xdp).
    #[arg(long, value_enum, default_value = "native")]
    engine: EngineKind,
    /// Congestion control of the native engine's connections when a socket does not choose
    /// one with TCP_CONGESTION. Default: the agent's network namespace's
    /// net.ipv4.tcp_congestion_control when it names one of these, else cubic (Linux's
    /// per-namespace default).
    #[arg(long, value_enum, value_name = "cubic|reno|bbr")]
    cc: Option<CcKind>,
    /// Network interface of the user-space stack (af_packet binds to it; DPDK's default
    /// net_af_packet vdev attaches to it).
    #[arg(long, value_name = "NAME")]
    iface: Option<String>,
    /// IPv4 address and prefix the user-space stack owns, e.g. 10.0.0.2/24. Do not configure it
    /// on the kernel interface as well.
    #[arg(long, value_name = "ADDR/PREFIX", value_parser = parse_cidr)]
    ip: Option<(Ipv4Addr, u8)>,
    /// IPv6 address and prefix the user-space stack owns as well, e.g. fd00::2/64 (native engine;
    /// answers neighbour solicitations for it).
    #[arg(long, value_name = "ADDR/PREFIX", value_parser = parse_cidr6)]
    ip6: Option<(Ipv6Addr, u8)>,
    /// Default IPv6 gateway of the user-space stack.
    #[arg(long, value_name = "ADDR")]
    gateway6: Option<Ipv6Addr>,
    /// Default IPv4 gateway of the user-space stack.
    #[arg(long, value_name = "ADDR")]
    gateway: Option<Ipv4Addr>,
    /// MAC address of the user-space stack (default: the interface's own).
    #[arg(long, value_name = "MAC", value_parser = parse_mac)]
    mac: Option<[u8; 6]>,
    /// DPDK EAL arguments for --backend dpdk, replacing the defaults ("--no-huge --no-pci
    /// --no-shconf --no-telemetry -l 0 -m 128 --file-prefix=snstack<pid>"); a
    /// --vdev=net_af_packet0,iface=<iface> is added unless they name a device (--vdev/-a).
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    eal_args: Option<String>,
    /// Testing aid for the user-space stack: damage frames in both directions, e.g.
    /// "drop=10,reorder=10,dup=0,delay_us=4000" (per mille, seeded PRNG; delay of received
    /// frames in microseconds). For kernels without sch_netem.
    #[arg(long, value_name = "SPEC", value_parser = parse_faults)]
    inject_faults: Option<backend::user::device::Faults>,
    /// Loopback acceleration: a connect from an attached process to a local address where a
    /// listener of this agent listens is made inside the agent (no kernel or user-stack
    /// connection; bytes move by memcpy). `off` sends every connection through the backend.
    /// Local: 127.0.0.0/8, ::1 and the host's interface addresses (kernel backend), --ip (user
    /// backend). See docs/loopback.md.
    #[arg(long, value_enum, value_name = "on|off", default_value = "on")]
    loopback: OnOff,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Args, Debug)]
struct StatsArgs {
    /// Control socket of the agent to query.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print the JSON report (agent, totals, each attached process, kTLS sockets) instead of
    /// `key value`.
    #[arg(long)]
    json: bool,
    /// After the counters, one line per socket with kTLS keys and its own TLS counters:
    /// `tls_socket pid=P slot=S local=A peer=A tx=SUITE rx=SUITE tls_tx_records=N ...`.
    #[arg(long, conflicts_with = "json")]
    sockets: bool,
}

fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (a, p) = s
        .split_once('/')
        .ok_or("expected ADDR/PREFIX, e.g. 10.0.0.2/24")?;
    let a: Ipv4Addr = a.parse().map_err(|e| format!("bad address '{a}': {e}"))?;
    let p: u8 = p.parse().map_err(|_| format!("bad prefix '{p}'"))?;
    if p == 0 || p > 32 || a.is_unspecified() || a.is_multicast() || a.is_broadcast() {
        return Err("prefix must be 1..32 and the address a unicast host address".into());
    }
    Ok((a, p))
}

fn parse_cidr6(s: &str) -> Result<(Ipv6Addr, u8), String> {
    let (a, p) = s
        .split_once('/')
        .ok_or("expected ADDR/PREFIX, e.g. fd00::2/64")?;
    let a: Ipv6Addr = a.parse().map_err(|e| format!("bad address '{a}': {e}"))?;
    let p: u8 = p.parse().map_err(|_| format!("bad prefix '{p}'"))?;
    if p == 0 || p > 128 || a.is_unspecified() || a.is_multicast() || a.is_loopback() {
        return Err("prefix must be 1..128 and the address a unicast host address".into());
    }
    Ok((a, p))
}

fn parse_faults(s: &str) -> Result<backend::user::device::Faults, String> {
    s.parse()
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let m = backend::user::afpacket::parse_mac(s).ok_or("expected a MAC like 02:00:00:00:00:01")?;
    if m[0] & 1 != 0 || m == [0; 6] {
        return Err("the MAC must be a unicast address".into());
    }
    Ok(m)
}

/// The user-space stack's settings from the command line.
fn user_config(a: &RunArgs, mac: [u8; 6]) -> anyhow::Result<backend::user::engine::EngineConfig> {
    let (ip, prefix) = a
        .ip
        .ok_or_else(|| anyhow::anyhow!("--backend {} needs --ip ADDR/PREFIX", a.backend.name()))?;
    if let Some(owner) = sys_ip_owner(ip) {
        anyhow::bail!(
            "address {ip} is in use: the kernel has it on interface {owner} (the user-space stack must own it alone; remove it with `ip addr del`)"
        );
    }
    if let Some(gw) = a.gateway {
        let mask = u32::MAX << (32 - u32::from(prefix));
        if u32::from(gw) & mask != u32::from(ip) & mask {
            anyhow::bail!("gateway {gw} is not inside {ip}/{prefix}");
        }
    }
    Ok(backend::user::engine::EngineConfig {
        ip,
        prefix,
        gateway: a.gateway,
        mac,
        rx_buf: 256 * 1024,
        tx_buf: 256 * 1024,
        // The engine's secrets (ISNs, SYN cookies, its connection hash) derive from this seed:
        // from the kernel's CSPRNG, never from something a peer could guess like the pid.
        seed: sys::random_u64().map_err(|e| anyhow::anyhow!("getrandom: {e}"))?,
    })
}

/// The kernel interface (in this namespace) that already holds `ip`, if any.
fn sys_ip_owner(ip: Ipv4Addr) -> Option<String> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is a valid out-pointer; the list is freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: `ifa_addr` is non-null and points to a sockaddr of the family it names.
        let fam = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        if fam != libc::AF_INET {
            continue;
        }
        // SAFETY: an AF_INET address is a sockaddr_in.
        let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
        if Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)) == ip {
            // SAFETY: ifa_name is a NUL-terminated string owned by the list.
            let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
            found = Some(name.to_string_lossy().into_owned());
            break;
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    found
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
    if let Some(p) = &a.config {
        tracing::info!(file = %p.display(), "configuration file read");
    }
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
    let tls = if a.tls_port.is_empty() {
        if !a.tls_cert.is_empty() || !a.tls_key.is_empty() || !a.tls_alpn.is_empty() {
            anyhow::bail!("--tls-cert, --tls-key and --tls-alpn need --tls-port");
        }
        None
    } else {
        // Read once, at start-up: a missing file or a key that does not match fails here.
        let cfg = tls::terminate::server_config(&a.tls_cert, &a.tls_key, &a.tls_alpn)?;
        tracing::info!(ports = ?a.tls_port, certs = a.tls_cert.len(), "TLS termination");
        Some((a.tls_port.clone(), cfg))
    };
    let cfg = agent::Config {
        socket: a.socket.clone(),
        geometry,
        spin: Duration::from_micros(a.spin_us),
        realtime_auto: a.realtime == Realtime::Auto,
        host_poll: Duration::from_micros(a.host_poll_us),
        metrics: a.metrics,
        tls,
    };
    let user = a.backend != BackendKind::Kernel;
    if !user
        && (a.iface.is_some()
            || a.ip.is_some()
            || a.gateway.is_some()
            || a.ip6.is_some()
            || a.gateway6.is_some()
            || a.mac.is_some()
            || a.inject_faults.is_some())
    {
        anyhow::bail!(
            "--iface/--ip/--ip6/--gateway/--gateway6/--mac/--inject-faults only apply to --backend afpacket, dpdk or xdp"
        );
    }
    if user && a.engine == EngineKind::Lwip && !cfg!(feature = "lwip") {
        // Before any device is opened: says so even when --iface is wrong.
        run_lwip_missing()?;
    }
    if user && a.iface.is_none() && !(a.backend == BackendKind::Dpdk && a.eal_args.is_some()) {
        anyhow::bail!("--backend {} needs --iface NAME", a.backend.name());
    }
    match a.backend {
        BackendKind::Kernel => {
            let b = backend::kernel::KernelBackend::new().context("creating the kernel backend")?;
            agent::run(cfg, with_loopback(&a, b))?;
        }
        BackendKind::Afpacket => {
            let iface = a.iface.as_deref().unwrap_or_default();
            let dev = backend::user::afpacket::AfPacket::open(iface, a.mac)
                .with_context(|| format!("opening interface {iface}"))?;
            let ucfg = user_config(&a, backend::user::device::Device::mac(&dev))?;
            tracing::info!(iface, ip = %ucfg.ip, prefix = ucfg.prefix, "user-space TCP/IP stack on af_packet");
            run_user(&a, cfg, ucfg, dev)?;
        }
        BackendKind::Dpdk => run_dpdk(&a, cfg)?,
        BackendKind::Xdp => run_xdp(&a, cfg)?,
    }
    Ok(())
}

/// The backend behind the loopback accelerator (which passes everything through when off).
fn with_loopback<B: backend::Backend>(a: &RunArgs, b: B) -> backend::loopback::LoopBackend<B> {
    let on = a.loopback == OnOff::On;
    tracing::info!(
        loopback = on,
        "loopback acceleration {}",
        if on { "on" } else { "off" }
    );
    backend::loopback::LoopBackend::new(b, on)
}

/// Runs the agent on the user-space stack over `dev` (through the fault injector when asked).
fn run_user<D: backend::user::device::Device + 'static>(
    a: &RunArgs,
    cfg: agent::Config,
    ucfg: backend::user::engine::EngineConfig,
    dev: D,
) -> anyhow::Result<()> {
    let dev: Box<dyn backend::user::device::Device> = match a.inject_faults {
        Some(f) => {
            tracing::warn!(
                ?f,
                "injecting faults into the user-space stack's device (testing)"
            );
            Box::new(backend::user::device::FaultInjector::new(dev, f, ucfg.seed))
        }
        None => Box::new(dev),
    };
    match a.engine {
        EngineKind::Smoltcp => {
            if a.ip6.is_some() {
                anyhow::bail!("--ip6 needs --engine native (smoltcp is configured for IPv4 only)");
            }
            tracing::info!("engine: smoltcp");
            let b =
                backend::user::UserBackend::new(dev, ucfg).context("creating the user backend")?;
            agent::run(cfg, with_loopback(a, b))?;
        }
        EngineKind::Lwip => run_lwip(a, cfg, ucfg, dev)?,
        EngineKind::Native => {
            let mut scfg = snstack_tcp::stack::StackConfig::new(ucfg.mac);
            scfg.ipv4 = Some((ucfg.ip, ucfg.prefix));
            scfg.gateway4 = ucfg.gateway;
            scfg.ipv6 = a.ip6;
            scfg.gateway6 = a.gateway6;
            scfg.seed = ucfg.seed;
            scfg.congestion = congestion(a);
            let b = backend::user::native::NativeBackend::new(dev, scfg)
                .context("creating the user backend")?;
            let caps = b.stack().config().caps;
            tracing::debug!(
                tx_csum = caps.tx_csum,
                tso = caps.tso,
                mtu = caps.mtu,
                cc = b.stack().config().congestion.name(),
                "engine: snstack-tcp"
            );
            agent::run(cfg, with_loopback(a, b))?;
        }
    }
    Ok(())
}

#[cfg(feature = "lwip")]
fn run_lwip(
    a: &RunArgs,
    cfg: agent::Config,
    ucfg: backend::user::engine::EngineConfig,
    dev: Box<dyn backend::user::device::Device>,
) -> anyhow::Result<()> {
    if a.ip6.is_some() {
        anyhow::bail!("--ip6 needs --engine native (the lwIP engine is configured for IPv4 only)");
    }
    tracing::info!(
        version = lwip_sys::LWIP_VERSION,
        window = lwip_sys::opt("TCP_WND"),
        send_buffer = lwip_sys::opt("TCP_SND_BUF"),
        mss = lwip_sys::opt("TCP_MSS"),
        "engine: lwIP (Debian's liblwip; no SACK, no timestamps, 64 KiB window: docs/engines.md)"
    );
    let b =
        backend::user::lwip::LwipBackend::new(dev, &ucfg).context("creating the lwIP backend")?;
    agent::run(cfg, with_loopback(a, b))?;
    Ok(())
}

#[cfg(not(feature = "lwip"))]
fn run_lwip(
    _: &RunArgs,
    _: agent::Config,
    _: backend::user::engine::EngineConfig,
    _: Box<dyn backend::user::device::Device>,
) -> anyhow::Result<()> {
    run_lwip_missing()
}

#[cfg_attr(feature = "lwip", allow(dead_code))]
fn run_lwip_missing() -> anyhow::Result<()> {
    anyhow::bail!(
        "this snstack-agent was built without lwIP support (rebuild with `cargo build --release -p nic-agent --features lwip`; needs liblwip-dev)"
    )
}

#[cfg(feature = "dpdk")]
fn run_dpdk(a: &RunArgs, cfg: agent::Config) -> anyhow::Result<()> {
    let dev = backend::user::dpdk::DpdkPort::open(a.iface.as_deref(), a.eal_args.as_deref(), a.mac)
        .context("starting the DPDK port")?;
    let ucfg = user_config(a, backend::user::device::Device::mac(&dev))?;
    tracing::info!(ip = %ucfg.ip, prefix = ucfg.prefix, "user-space TCP/IP stack on DPDK");
    run_user(a, cfg, ucfg, dev)
}

#[cfg(not(feature = "dpdk"))]
fn run_dpdk(_: &RunArgs, _: agent::Config) -> anyhow::Result<()> {
    anyhow::bail!(
        "this snstack-agent was built without DPDK support (rebuild with `cargo build --release -p nic-agent --features dpdk`)"
    )
}

#[cfg(snstack_xdp)]
fn run_xdp(a: &RunArgs, cfg: agent::Config) -> anyhow::Result<()> {
    let iface = a.iface.as_deref().unwrap_or_default();
    // Address checks before anything is attached to the interface.
    let if_mac = backend::user::afpacket::iface_info(iface).map_or([0; 6], |i| i.1);
    let ucfg = user_config(a, a.mac.unwrap_or(if_mac))?;
    let dev = backend::user::xdp::Xdp::open(iface, a.mac)
        .with_context(|| format!("opening interface {iface} (AF_XDP)"))?;
    tracing::info!(iface, ip = %ucfg.ip, prefix = ucfg.prefix, "user-space TCP/IP stack on AF_XDP");
    run_user(a, cfg, ucfg, dev)
}

#[cfg(not(snstack_xdp))]
fn run_xdp(_: &RunArgs, _: agent::Config) -> anyhow::Result<()> {
    anyhow::bail!(
        "this agent was built without AF_XDP support: install libxdp-dev libbpf-dev and rebuild"
    )
}

/// The run arguments with the configuration file's values under those of the command line.
/// `argv` is the whole command line; `m` its matches (top level or `run`'s).
fn with_config(argv: &[OsString], m: &ArgMatches) -> anyhow::Result<RunArgs> {
    let mut cli = RunArgs::from_arg_matches(m)?;
    let (path, explicit) = match cli.config.take() {
        Some(p) => (Some(p), true),
        None => (config::default_path(), false),
    };
    let Some(path) = path.filter(|p| explicit || p.exists()) else {
        return Ok(cli);
    };
    let cmd = RunArgs::augment_args(clap::Command::new("snstack-agent"));
    let entries = config::load(&path, &cmd)?;
    // Re-parse with the file's flags first: the command line's own come after and win (only
    // flags it did not give are taken from the file, so nothing is given twice).
    let skip = if argv.get(1).is_some_and(|a| a == "run") {
        2
    } else {
        1
    };
    let mut merged = vec![OsString::from("snstack-agent")];
    merged.extend(config::flags_not_on_command_line(&entries, &cmd, m));
    merged.extend(argv.iter().skip(skip).cloned());
    let m2 = cmd.try_get_matches_from(merged)?;
    let mut a = RunArgs::from_arg_matches(&m2)?;
    a.config = Some(path);
    Ok(a)
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let m = Cli::command().get_matches_from(&argv);
    let r = match m.subcommand() {
        Some(("stats", sm)) => StatsArgs::from_arg_matches(sm)
            .map_err(anyhow::Error::from)
            .and_then(|s| {
                let f = if s.json {
                    client::Format::Json
                } else {
                    client::Format::Text
                };
                let t = client::query(&s.socket, f)?;
                print!("{t}");
                if s.json {
                    println!();
                }
                if s.sockets {
                    print!(
                        "{}",
                        client::tls_socket_lines(&client::report_as(
                            &s.socket,
                            client::Format::JsonSockets
                        )?)
                    );
                }
                Ok(())
            }),
        Some(("run", rm)) => with_config(&argv, rm).and_then(run),
        _ => with_config(&argv, &m).and_then(run),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Usage errors of the merged arguments print as clap prints them.
            if let Some(ce) = e.downcast_ref::<clap::Error>() {
                let _ = ce.print();
                return ExitCode::from(2);
            }
            eprintln!("snstack-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
