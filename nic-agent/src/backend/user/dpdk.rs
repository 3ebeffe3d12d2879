//! The DPDK port device (cargo feature `dpdk`): EAL start-up from `--eal-args`, one mbuf pool,
//! one port with one RX and one TX queue. Received frames are lent to the caller in place (the
//! mbuf's data; multi-segment packets are copied into one buffer first) with the port's RX
//! checksum verdict. The engine builds frames straight in mbufs of the pool
//! ([`Device::frame_writer`], `snstack_tcp::writer`: the payload is copied once, from the TX
//! stream into the mbuf); a frame it built in its own buffer instead (larger than one mbuf's
//! data room, e.g. a TSO super-frame, the pool empty, [`DIRECT_MAX`] mbufs already waiting, or
//! queued behind such a frame) is copied into mbufs (chained when larger than one). Both get
//! the TX checksum/TSO flags when the port has those offloads (`net_af_packet` has none: then
//! `caps()` says so and the engine fills checksums and cuts segments itself).
//!
//! Without `--eal-args` the EAL runs without hugepages, PCI or shared config, on lcore 0, and the
//! port is DPDK's `net_af_packet` virtual device on `--iface`: the same code path as a real NIC
//! PMD (mlx5 on a BlueField) with a device this machine has. DPDK devices have no descriptor to
//! sleep on, so the backend polls this device on a timer (50 µs while frames flow, 2 ms idle;
//! docs/user-stack.md).

use std::collections::VecDeque;
use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::os::raw::c_char;

use dpdk_sys as sys;
use snstack_tcp::{DeviceCaps, FrameWriter, Gso, RxCsum, RxMeta, TxMeta, WriteOutcome};

use super::device::{Device, TxFrame, BURST, MAX_FRAME};
use super::offload;

const POOL_MBUFS: u32 = 8191;
const POOL_CACHE: u32 = 256;
const DESCRIPTORS: u16 = 1024;
/// Mbufs the engine may have written and the PMD not yet taken (then it builds frames in its
/// own buffers until `tx_burst` made room).
pub const DIRECT_MAX: usize = 512;
/// Data room of one mbuf of the pool: the largest frame the engine can write into one.
const MBUF_DATA: usize = (sys::RTE_MBUF_DEFAULT_BUF_SIZE - sys::RTE_PKTMBUF_HEADROOM) as usize;

/// Why the DPDK port could not be started (one line each).
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    #[error("rte_eal_init failed: {msg} (EAL args: {args})")]
    Eal { msg: String, args: String },
    #[error("no DPDK port came up (EAL args: {0}); check --iface / --eal-args")]
    NoPort(String),
    #[error("{what} failed: {msg}")]
    Port { what: &'static str, msg: String },
    #[error("--eal-args contains a NUL byte")]
    BadArgs,
    #[error("dpdk-sys struct layout does not match the installed DPDK headers")]
    Layout,
}

/// Largest frame sent with TSO (IPv4 total length limit plus the Ethernet header).
const MAX_TSO_FRAME: usize = 14 + 65535;

pub struct DpdkPort {
    port: u16,
    pool: *mut sys::rte_mempool,
    mac: [u8; 6],
    mbufs: Vec<*mut sys::rte_mbuf>,
    /// `sys::OFFLOAD_*` the port turned on.
    offloads: u32,
    /// Multi-segment received packets are copied here to be lent as one slice.
    linear: Vec<u8>,
    /// For each mbuf of a TX batch, the frame (index in the queue) it belongs to.
    owner: Vec<usize>,
    /// Mbufs the engine wrote, in order, not taken by the PMD yet: sent first by `tx_burst`.
    written: Vec<*mut sys::rte_mbuf>,
    pub stats: DpdkStats,
}

/// Counters of the port's TX paths.
#[derive(Clone, Copy, Debug, Default)]
pub struct DpdkStats {
    /// Frames the engine wrote into mbufs, and frames it offered that were larger than an
    /// mbuf's data room (built in its own buffer, then copied into a chain).
    pub tx_written: u64,
    pub tx_too_large: u64,
    /// Segments of a written super-frame cut in software that found no mbuf (lost on the wire:
    /// TCP retransmits them).
    pub tx_dropped: u64,
}

/// The EAL command line: `--eal-args` split on whitespace, or the defaults; a `net_af_packet`
/// vdev on `iface` is added unless the arguments name a device already.
pub fn eal_argv(iface: Option<&str>, eal_args: Option<&str>) -> Vec<String> {
    let mut v = vec!["snstack-agent".to_string()];
    match eal_args {
        Some(a) => v.extend(a.split_whitespace().map(str::to_string)),
        None => {
            // (--in-memory is refused together with --no-huge: --no-shconf and a per-process
            // file prefix keep agents from sharing EAL state instead.)
            v.extend(
                [
                    "--no-huge",
                    "--no-pci",
                    "--no-shconf",
                    "--no-telemetry",
                    "-l",
                    "0",
                    "-m",
                    "128",
                    "--log-level=*:warning",
                ]
                .iter()
                .map(|s| s.to_string()),
            );
            v.push(format!("--file-prefix=snstack{}", std::process::id()));
        }
    }
    let has_dev = v
        .iter()
        .any(|a| a.starts_with("--vdev") || a.starts_with("-a") || a.starts_with("--allow"));
    if let (Some(i), false) = (iface, has_dev) {
        v.push(format!("--vdev=net_af_packet0,iface={i},qpairs=1"));
    }
    v
}

fn block_stop_signals() {
    // SAFETY: `set` is initialised by sigemptyset before use; pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

fn rte_err() -> String {
    // SAFETY: reads DPDK's per-thread errno; no preconditions.
    sys::strerror(unsafe { sys::snstack_errno() })
}

impl DpdkPort {
    pub fn open(
        iface: Option<&str>,
        eal_args: Option<&str>,
        mac: Option<[u8; 6]>,
    ) -> Result<DpdkPort, DpdkError> {
        if !sys::check_layout() {
            return Err(DpdkError::Layout);
        }
        if let Some(i) = iface {
            // The same clear error as af_packet for a missing interface.
            let c = CString::new(i).map_err(|_| DpdkError::BadArgs)?;
            // SAFETY: `c` is a valid NUL-terminated string.
            if unsafe { libc::if_nametoindex(c.as_ptr()) } == 0 {
                return Err(DpdkError::Port {
                    what: "looking up the interface",
                    msg: format!("interface '{i}' not found (in this network namespace)"),
                });
            }
        }
        let argv = eal_argv(iface, eal_args);
        let joined = argv[1..].join(" ");
        let cargs: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(a.as_str()))
            .collect::<Result<_, _>>()
            .map_err(|_| DpdkError::BadArgs)?;
        // The EAL starts threads of its own; they inherit this thread's signal mask. The agent
        // takes SIGTERM/SIGINT through a signalfd, so they must be blocked in those threads too
        // (else a stop signal lands there and kills the process with its default action).
        block_stop_signals();
        // rte_eal_init may permute argv: hand it pointers it owns for the process lifetime.
        let mut ptrs: Vec<*mut c_char> = cargs.into_iter().map(CString::into_raw).collect();
        let argc = ptrs.len() as i32;
        ptrs.push(std::ptr::null_mut());
        let ptrs = ptrs.leak();
        // SAFETY: argv is `argc` valid NUL-terminated strings plus a NULL, leaked so they outlive
        // the EAL; called once per process.
        let r = unsafe { sys::rte_eal_init(argc, ptrs.as_mut_ptr()) };
        if r < 0 {
            return Err(DpdkError::Eal {
                msg: rte_err(),
                args: joined,
            });
        }
        // SAFETY: the EAL is initialised.
        if unsafe { sys::rte_eth_dev_count_avail() } == 0 {
            // SAFETY: the EAL is initialised and no port is in use.
            unsafe { sys::rte_eal_cleanup() };
            return Err(DpdkError::NoPort(joined));
        }
        let mut port = 0u16;
        let name = CString::new("net_af_packet0").map_err(|_| DpdkError::BadArgs)?;
        // SAFETY: `name` is a valid string, `port` a valid out-pointer.
        if unsafe { sys::rte_eth_dev_get_port_by_name(name.as_ptr(), &mut port) } != 0 {
            // Not our default vdev: the first port the EAL probed.
            port = 0;
        }
        let pool_name = CString::new("snstack_pool").map_err(|_| DpdkError::BadArgs)?;
        // SAFETY: the EAL is initialised; the name is a valid string.
        let pool = unsafe {
            sys::rte_pktmbuf_pool_create(
                pool_name.as_ptr(),
                POOL_MBUFS,
                POOL_CACHE,
                0,
                sys::RTE_MBUF_DEFAULT_BUF_SIZE,
                sys::SOCKET_ID_ANY,
            )
        };
        if pool.is_null() {
            let msg = rte_err();
            // SAFETY: the EAL is initialised.
            unsafe { sys::rte_eal_cleanup() };
            return Err(DpdkError::Port {
                what: "rte_pktmbuf_pool_create",
                msg,
            });
        }
        let mut dev = DpdkPort {
            port,
            pool,
            mac: [0; 6],
            mbufs: vec![std::ptr::null_mut(); BURST],
            offloads: 0,
            linear: vec![0; 1 << 17],
            owner: Vec::with_capacity(BURST),
            written: Vec::with_capacity(DIRECT_MAX),
            stats: DpdkStats::default(),
        };
        // SAFETY: `port` is a probed port, `pool` a live mempool, `offloads` an out-pointer.
        let r = unsafe { sys::snstack_port_start(port, pool, DESCRIPTORS, &mut dev.offloads) };
        if r != 0 {
            return Err(DpdkError::Port {
                what: "configuring and starting the port",
                msg: sys::strerror(-r),
            });
        }
        let mut a = sys::rte_ether_addr::default();
        // SAFETY: `a` is a valid out-pointer of the C struct's size (checked above).
        let r = unsafe { sys::rte_eth_macaddr_get(port, &mut a) };
        if r != 0 {
            return Err(DpdkError::Port {
                what: "rte_eth_macaddr_get",
                msg: sys::strerror(-r),
            });
        }
        dev.mac = a.addr_bytes;
        if let Some(m) = mac.filter(|m| *m != dev.mac) {
            // SAFETY: the port is started.
            let r = unsafe { sys::rte_eth_promiscuous_enable(port) };
            if r != 0 {
                return Err(DpdkError::Port {
                    what: "rte_eth_promiscuous_enable (needed for --mac)",
                    msg: sys::strerror(-r),
                });
            }
            dev.mac = m;
        }
        tracing::info!(
            port,
            dpdk = sys::DPDK_VERSION,
            offloads = dev.offloads,
            eal = %joined,
            "DPDK port started"
        );
        Ok(dev)
    }
}

impl Drop for DpdkPort {
    fn drop(&mut self) {
        tracing::debug!(stats = ?self.stats, unsent = self.written.len(), "DPDK port closed");
        for m in self.written.drain(..) {
            // SAFETY: written mbufs the PMD never took are still ours; freed once.
            unsafe { sys::snstack_pktmbuf_free(m) };
        }
        // SAFETY: the port was started and the pool created by `open`; nothing uses them after
        // this, and the EAL is torn down last.
        unsafe {
            sys::rte_eth_dev_stop(self.port);
            sys::rte_eth_dev_close(self.port);
            sys::rte_mempool_free(self.pool);
            sys::rte_eal_cleanup();
        }
    }
}

/// Prepares a frame built with `meta` for a port with `caps` (ONE rule for written and copied
/// frames): a checksum the port cannot fill is filled here; for TSO the checksum field gets the
/// pseudo-header sum without the length, as DPDK wants. Returns the offloads to ask of the
/// port: (L4 checksum, TSO). A super-frame the port cannot cut is not handled here.
fn prepare(buf: &mut [u8], meta: &TxMeta, caps: &DeviceCaps) -> (bool, Option<Gso>) {
    let hw_csum = meta.csum.is_some() && caps.tx_csum;
    if meta.csum.is_some() && !caps.tx_csum {
        offload::fill_l4_csum(buf);
    }
    let tso = meta.gso.filter(|_| caps.tso);
    if let (Some(_), Some(p)) = (tso, offload::l4(buf)) {
        let ps = offload::pseudo_sum(buf, &p, None);
        let at = p.off + 16;
        if at + 2 <= buf.len() {
            buf[at..at + 2].copy_from_slice(&ps.to_be_bytes());
        }
    }
    (hw_csum, tso)
}

impl DpdkPort {
    /// One mbuf (chain) holding `buf`, with the TX offload flags `tso`/`csum` ask for; null when
    /// the pool is empty.
    fn mbuf_for(&self, buf: &[u8], csum: bool, tso: Option<Gso>) -> *mut sys::rte_mbuf {
        // SAFETY: `pool` is a live mempool; `buf` is readable for its length.
        let m =
            unsafe { sys::snstack_pktmbuf_from(self.pool, buf.as_ptr().cast(), buf.len() as u32) };
        if !m.is_null() {
            Self::set_offloads(m, buf, csum, tso);
        }
        m
    }

    /// Sets the TX offload fields of `m`, whose data is `buf`, for `csum`/`tso`.
    fn set_offloads(m: *mut sys::rte_mbuf, buf: &[u8], csum: bool, tso: Option<Gso>) {
        if !(csum || tso.is_some()) {
            return;
        }
        let Some(p) = offload::l4(buf) else { return };
        let l4_len = match p.proto {
            6 => offload::tcp_header_end(buf).map_or(20, |e| e - p.off),
            _ => 8,
        };
        let seg = tso.map_or(0, |g| g.segment_size);
        // SAFETY: `m` is a fresh mbuf we own; the call only sets its offload fields.
        unsafe {
            sys::snstack_tx_offload(
                m,
                i32::from(p.ipv6),
                14,
                (p.off - 14) as u16,
                l4_len as u16,
                i32::from(p.proto),
                seg,
            )
        };
    }

    /// Hands the written mbufs to the PMD, in order; those it does not take stay first in line.
    /// Returns how many it took.
    fn send_written(&mut self) -> usize {
        if self.written.is_empty() {
            return 0;
        }
        let k = self.written.len().min(usize::from(u16::MAX)) as u16;
        // SAFETY: the first `k` entries are written mbufs we own; the PMD takes those it sends.
        let sent = unsafe { sys::snstack_tx_burst(self.port, 0, self.written.as_mut_ptr(), k) };
        self.written.drain(..usize::from(sent));
        usize::from(sent)
    }
}

impl FrameWriter for DpdkPort {
    fn write_frame(
        &mut self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> Option<TxMeta>,
    ) -> WriteOutcome {
        if len > MBUF_DATA {
            self.stats.tx_too_large += 1;
            return WriteOutcome::NoRoom;
        }
        if self.written.len() >= DIRECT_MAX {
            return WriteOutcome::NoRoom;
        }
        // SAFETY: `pool` is a live mempool.
        let m = unsafe { sys::snstack_pktmbuf_alloc(self.pool) };
        if m.is_null() {
            return WriteOutcome::NoRoom;
        }
        // SAFETY: `m` is a fresh mbuf we own, with MBUF_DATA bytes of tailroom.
        let p = unsafe { sys::snstack_pktmbuf_append(m, len as u16) };
        if p.is_null() {
            // SAFETY: ours, freed once.
            unsafe { sys::snstack_pktmbuf_free(m) };
            return WriteOutcome::NoRoom;
        }
        // SAFETY: `append` made `len` bytes at `p` the data of `m` (data_len and pkt_len set);
        // `m` is ours alone until it goes to the PMD.
        let buf = unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) };
        let Some(meta) = fill(buf) else {
            // SAFETY: ours, freed once.
            unsafe { sys::snstack_pktmbuf_free(m) };
            return WriteOutcome::Dropped;
        };
        let caps = self.caps();
        let mut cut = Vec::new();
        let soft_gso = meta.gso.filter(|_| !caps.tso).and_then(|g| {
            offload::segment_tcp(buf, usize::from(g.segment_size), &mut |s| {
                cut.push(s.to_vec())
            })
        });
        if soft_gso.is_some() {
            // A super-frame the port cannot cut (the engine's caps are the port's, so only
            // after a change of them), cut in software into mbufs of their own, as `tx_burst`
            // does (a frame that cannot be cut goes as it is, as there).
            // SAFETY: ours, freed once; `buf` is not used after this.
            unsafe { sys::snstack_pktmbuf_free(m) };
            for (i, s) in cut.iter().enumerate() {
                let c = self.mbuf_for(s, false, None);
                if c.is_null() {
                    // The pool ran dry: the rest is lost on the wire (TCP retransmits it).
                    self.stats.tx_dropped += (cut.len() - i) as u64;
                    break;
                }
                self.written.push(c);
            }
            return WriteOutcome::Written;
        }
        let (hw_csum, tso) = prepare(buf, &meta, &caps);
        Self::set_offloads(m, buf, hw_csum, tso);
        self.written.push(m);
        self.stats.tx_written += 1;
        WriteOutcome::Written
    }
}

impl Device for DpdkPort {
    fn rx_csum_may_be_partial(&self) -> bool {
        // No per-frame checksum state reaches us from a veth peer with tx offload on.
        !self.caps().tx_csum
    }

    fn caps(&self) -> DeviceCaps {
        let tso = self.offloads & sys::OFFLOAD_TSO != 0;
        DeviceCaps {
            mtu: 1500,
            tx_csum: self.offloads & sys::OFFLOAD_TX_CSUM != 0,
            tso,
            max_tso_frame: if tso { MAX_TSO_FRAME } else { MAX_FRAME },
        }
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn rx_burst(&mut self, max: usize, f: &mut dyn FnMut(&[u8], RxMeta)) -> io::Result<usize> {
        let want = max.min(self.mbufs.len()) as u16;
        // SAFETY: `mbufs` has room for `want` pointers; the port and queue 0 are started.
        let n = unsafe { sys::snstack_rx_burst(self.port, 0, self.mbufs.as_mut_ptr(), want) };
        let mut got = 0;
        for i in 0..usize::from(n) {
            let m = self.mbufs[i];
            // SAFETY: `m` is an mbuf the PMD just handed us: its data is readable for
            // `data_len` bytes until we free it, after `f` returned; freed exactly once.
            unsafe {
                let csum = match sys::snstack_rx_l4_csum(m) {
                    1 => RxCsum::Verified,
                    2 => RxCsum::Bad,
                    3 => RxCsum::Partial,
                    _ => RxCsum::Unknown,
                };
                let lro = sys::snstack_rx_lro_segsz(m);
                let frame: &[u8] = if sys::snstack_pktmbuf_nb_segs(m) == 1 {
                    let len = usize::from(sys::snstack_pktmbuf_data_len(m));
                    let p = sys::snstack_pktmbuf_data(m).cast::<u8>();
                    std::slice::from_raw_parts(p, len)
                } else {
                    let len = sys::snstack_pktmbuf_copy_out(
                        m,
                        self.linear.as_mut_ptr().cast(),
                        self.linear.len() as u32,
                    );
                    &self.linear[..len as usize]
                };
                if frame.len() >= 14 {
                    let ipv6 = frame[12..14] == [0x86, 0xdd];
                    let gso = (lro > 0).then_some(Gso {
                        segment_size: lro,
                        ipv6,
                    });
                    f(frame, RxMeta { csum, gso });
                    got += 1;
                }
                sys::snstack_pktmbuf_free(m);
            }
        }
        Ok(got)
    }

    fn tx_burst(
        &mut self,
        frames: &mut VecDeque<TxFrame>,
        done: &mut Vec<Vec<u8>>,
    ) -> io::Result<usize> {
        let caps = self.caps();
        // The engine's mbufs first: they were written before any of `frames` was queued, and
        // none of `frames` passes one the PMD has not taken.
        let mut total = self.send_written();
        while !frames.is_empty() && self.written.is_empty() {
            // Fill a batch of mbufs; a frame whose offloads the port lacks is completed here
            // (checksum filled, or cut into several mbufs).
            self.owner.clear();
            let mut k = 0;
            let mut taken = 0;
            'fill: for (fi, f) in frames.iter_mut().enumerate() {
                let soft_gso = f.meta.gso.filter(|_| !caps.tso);
                let need = if soft_gso.is_some() {
                    let seg = usize::from(soft_gso.map_or(1, |g| g.segment_size)).max(1);
                    offload::tcp_payload_len(&f.buf).map_or(1, |l| l.div_ceil(seg).max(1))
                } else {
                    1
                };
                if k + need > self.mbufs.len() {
                    break;
                }
                if let Some(g) = soft_gso {
                    let mut segs = Vec::new();
                    let cut = offload::segment_tcp(&f.buf, usize::from(g.segment_size), &mut |s| {
                        segs.push(s.to_vec())
                    });
                    if cut.is_none() {
                        segs.push(f.buf.clone());
                    }
                    for s in segs {
                        let m = self.mbuf_for(&s, false, None);
                        if m.is_null() {
                            break 'fill;
                        }
                        self.mbufs[k] = m;
                        self.owner.push(fi);
                        k += 1;
                    }
                } else {
                    let (hw_csum, tso) = prepare(&mut f.buf, &f.meta, &caps);
                    let m = self.mbuf_for(&f.buf, hw_csum, tso);
                    if m.is_null() {
                        break;
                    }
                    self.mbufs[k] = m;
                    self.owner.push(fi);
                    k += 1;
                }
                taken = fi + 1;
            }
            if k == 0 {
                break;
            }
            // SAFETY: the first `k` entries are filled mbufs; the PMD takes those it sends.
            let sent =
                unsafe { sys::snstack_tx_burst(self.port, 0, self.mbufs.as_mut_ptr(), k as u16) };
            let sent = usize::from(sent);
            for &m in &self.mbufs[sent..k] {
                // SAFETY: mbufs the PMD did not take are still ours; freed once.
                unsafe { sys::snstack_pktmbuf_free(m) };
            }
            // A frame counts as sent when its first mbuf was (the unsent rest of a software-cut
            // super-frame is lost on the wire: TCP retransmits it).
            let frames_sent = if sent == k {
                taken
            } else {
                self.owner[sent].min(taken)
                    + usize::from(sent > 0 && self.owner[sent - 1] == self.owner[sent])
            };
            for mut f in frames.drain(..frames_sent) {
                f.buf.clear();
                done.push(f.buf);
            }
            total += frames_sent;
            if sent < k || frames_sent == 0 {
                break;
            }
        }
        Ok(total)
    }

    fn rx_fd(&self) -> Option<RawFd> {
        None
    }

    fn next_due(&self) -> Option<std::time::Instant> {
        // Written mbufs the PMD did not take yet: poll again soon.
        (!self.written.is_empty())
            .then(|| std::time::Instant::now() + std::time::Duration::from_micros(50))
    }

    fn frame_writer(&mut self) -> Option<&mut dyn FrameWriter> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eal_arguments() {
        let v = eal_argv(Some("veth0"), None);
        assert!(v.contains(&"--no-huge".to_string()));
        assert_eq!(
            v.last().map(String::as_str),
            Some("--vdev=net_af_packet0,iface=veth0,qpairs=1")
        );
        let v = eal_argv(Some("veth0"), Some("--no-huge --vdev=net_tap0"));
        assert_eq!(v, ["snstack-agent", "--no-huge", "--vdev=net_tap0"]);
        let v = eal_argv(None, Some("-l 0"));
        assert_eq!(v, ["snstack-agent", "-l", "0"]);
    }
}
