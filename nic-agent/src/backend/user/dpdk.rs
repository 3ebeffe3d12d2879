//! The DPDK port device (cargo feature `dpdk`): EAL start-up from `--eal-args`, one mbuf pool,
//! one port with one RX and one TX queue, frames copied between mbufs and the engine's buffers.
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

use super::device::{Device, BURST, MAX_FRAME};

const POOL_MBUFS: u32 = 8191;
const POOL_CACHE: u32 = 256;
const DESCRIPTORS: u16 = 1024;

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

pub struct DpdkPort {
    port: u16,
    pool: *mut sys::rte_mempool,
    mac: [u8; 6],
    mbufs: Vec<*mut sys::rte_mbuf>,
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
        };
        // SAFETY: `port` is a probed port, `pool` a live mempool.
        let r = unsafe { sys::snstack_port_start(port, pool, DESCRIPTORS) };
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
            eal = %joined,
            "DPDK port started"
        );
        Ok(dev)
    }
}

impl Drop for DpdkPort {
    fn drop(&mut self) {
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

impl Device for DpdkPort {
    fn rx_burst(&mut self, out: &mut VecDeque<Vec<u8>>, max: usize) -> io::Result<usize> {
        let want = max.min(self.mbufs.len()) as u16;
        // SAFETY: `mbufs` has room for `want` pointers; the port and queue 0 are started.
        let n = unsafe { sys::snstack_rx_burst(self.port, 0, self.mbufs.as_mut_ptr(), want) };
        let mut got = 0;
        for &m in &self.mbufs[..usize::from(n)] {
            // SAFETY: `m` is an mbuf the PMD just handed us; we read its first segment and free
            // it exactly once.
            unsafe {
                let len = usize::from(sys::snstack_pktmbuf_data_len(m));
                if sys::snstack_pktmbuf_nb_segs(m) == 1 && (14..=MAX_FRAME).contains(&len) {
                    let p = sys::snstack_pktmbuf_data(m).cast::<u8>();
                    out.push_back(std::slice::from_raw_parts(p, len).to_vec());
                    got += 1;
                }
                sys::snstack_pktmbuf_free(m);
            }
        }
        Ok(got)
    }

    fn tx_burst(&mut self, frames: &mut VecDeque<Vec<u8>>) -> io::Result<usize> {
        let mut total = 0;
        while !frames.is_empty() {
            let mut k = 0;
            for f in frames.iter().take(self.mbufs.len()) {
                if f.len() > MAX_FRAME {
                    break;
                }
                // SAFETY: `pool` is a live mempool.
                let m = unsafe { sys::snstack_pktmbuf_alloc(self.pool) };
                if m.is_null() {
                    break;
                }
                // SAFETY: `m` is a fresh mbuf; append returns room for `len` bytes or NULL.
                let dst = unsafe { sys::snstack_pktmbuf_append(m, f.len() as u16) };
                if dst.is_null() {
                    // SAFETY: `m` is ours and freed once.
                    unsafe { sys::snstack_pktmbuf_free(m) };
                    break;
                }
                // SAFETY: `dst` has `f.len()` writable bytes inside the mbuf; no overlap.
                unsafe { std::ptr::copy_nonoverlapping(f.as_ptr(), dst.cast::<u8>(), f.len()) };
                self.mbufs[k] = m;
                k += 1;
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
            frames.drain(..sent);
            total += sent;
            if sent < k {
                break;
            }
        }
        Ok(total)
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn rx_fd(&self) -> Option<RawFd> {
        None
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
