//! The af_packet device: an `AF_PACKET`/`SOCK_RAW` socket bound to one interface, non-blocking.
//! Frames are received from a `TPACKET_V2` ring mapped into our memory (afpacket_ring.rs, no
//! syscall per frame, each frame visible and the fd readable as soon as the kernel wrote it) and
//! sent in bursts of up to [`TX_BATCH`], one io_uring submission each (afpacket_uring.rs: a
//! small frame staged behind its vnet header as one `send`, a TSO frame as a two-part `sendmsg`;
//! one `sendmmsg` where io_uring is unavailable), bypassing the qdisc (`PACKET_QDISC_BYPASS`).
//! With `PACKET_VNET_HDR` every frame carries a
//! `virtio_net_hdr` (vnet.rs): received frames report `CHECKSUM_PARTIAL` and GRO/GSO super-frames,
//! and sent frames may leave the TCP checksum and segmentation to the kernel (tx checksum, TSO up
//! to 64 KiB). It needs CAP_NET_RAW and no DPDK.
//!
//! The kernel must not own the IP we serve on that interface (it would answer ARP and send RSTs
//! for our connections): the agent's stack owns it. Frames we send are not looped back to us
//! (`PACKET_IGNORE_OUTGOING`); the interface goes promiscuous only when our MAC differs from its
//! own.

use std::collections::VecDeque;
use std::ffi::CString;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use snstack_tcp::{DeviceCaps, RxMeta};

use super::afpacket_ring::{RxRing, PACKET_QDISC_BYPASS, PACKET_VNET_HDR};
use super::afpacket_uring::{TxReq, TxUring};
use super::device::{Device, TxFrame};
use super::vnet::{self, VnetHdr};

const ETH_P_ALL: u16 = 0x0003;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// Why an af_packet device could not be opened (one line each).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("interface '{0}' not found (in this network namespace)")]
    NoInterface(String),
    #[error("opening an AF_PACKET socket needs CAP_NET_RAW (run as root): {0}")]
    Permission(io::Error),
    #[error("{what}: {err}")]
    Io { what: &'static str, err: io::Error },
}

/// Frames handed to the kernel per `sendmmsg`.
pub const TX_BATCH: usize = 64;
/// Largest frame sent with TSO: an IPv4 packet's 16-bit total length plus the Ethernet header
/// (the kernel's GSO limit on a veth is 64 KiB too).
pub const MAX_TSO_FRAME: usize = 14 + 65535;
/// Staging room per frame (vnet header + frame) for the io_uring `send` path: an MTU-sized
/// frame fits; larger (TSO) frames go out as two-part messages instead of being copied.
pub const TX_STAGE: usize = 2048;

pub struct AfPacket {
    /// Unmapped before the socket is closed (fields drop in order).
    ring: RxRing,
    fd: OwnedFd,
    mac: [u8; 6],
    mtu: usize,
    /// The socket has `PACKET_VNET_HDR`: offloads possible.
    vnet: bool,
    /// Interface name (for the ethtool queries of `refresh_caps`).
    name: String,
    /// The interface's own tx checksum offload and TSO, as `ethtool -k` shows them (read at
    /// open and by `refresh_caps`): a frame left to an offload the interface has turned off is
    /// dropped by the kernel, so the engine only asks for what is on.
    dev_csum: bool,
    dev_tso: bool,
    /// vnet headers of the batch being sent.
    tx_hdrs: Vec<[u8; vnet::LEN]>,
    /// io_uring path: [`TX_STAGE`] bytes per frame of a burst, where a small frame is copied
    /// behind its vnet header so that it goes out as one contiguous `send`.
    tx_stage: Vec<u8>,
    /// Bursts go out as one io_uring submission (afpacket_uring.rs); `sendmmsg` without it.
    uring: Option<TxUring>,
    /// Frames refused by a full device in the middle of an io_uring burst (dropped, as by a
    /// full NIC queue: TCP retransmits them).
    pub tx_full_drops: u64,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `ethtool -k`'s "tx-checksumming" and "tcp-segmentation-offload" of interface `name`
/// (legacy ETHTOOL_GTXCSUM / ETHTOOL_GTSO queries); both off when the query fails.
fn ethtool_offloads(fd: RawFd, name: &str) -> (bool, bool) {
    const ETHTOOL_GTXCSUM: u32 = 0x16;
    const ETHTOOL_GTSO: u32 = 0x1e;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let query = |cmd: u32| -> bool {
        let mut v = EthtoolValue { cmd, data: 0 };
        // SAFETY: ifreq is plain data; all-zero is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in ifr
            .ifr_name
            .iter_mut()
            .zip(name.bytes().take(libc::IFNAMSIZ - 1))
        {
            *d = s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_data = (&mut v as *mut EthtoolValue).cast();
        // SAFETY: SIOCETHTOOL reads the name and the command from `ifr` and writes the answer
        // into `v`, which outlives the call.
        let r = unsafe { libc::ioctl(fd, libc::SIOCETHTOOL, &mut ifr) };
        r == 0 && v.data != 0
    };
    (query(ETHTOOL_GTXCSUM), query(ETHTOOL_GTSO))
}

/// The index, MAC and MTU of interface `name`.
pub fn iface_info(name: &str) -> Result<(i32, [u8; 6], usize), OpenError> {
    let c = CString::new(name).map_err(|_| OpenError::NoInterface(name.to_string()))?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(OpenError::NoInterface(name.to_string()));
    }
    let sys = format!("/sys/class/net/{name}");
    let mac = std::fs::read_to_string(format!("{sys}/address"))
        .ok()
        .and_then(|s| parse_mac(s.trim()))
        .unwrap_or([0; 6]);
    let mtu = std::fs::read_to_string(format!("{sys}/mtu"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1500usize);
    Ok((idx as i32, mac, mtu))
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in m.iter_mut() {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` points to a live `T` of the size passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (v as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

impl AfPacket {
    /// Opens interface `name`; `mac` overrides the interface's own address (then promiscuous).
    pub fn open(name: &str, mac: Option<[u8; 6]>) -> Result<AfPacket, OpenError> {
        let (idx, if_mac, mtu) = iface_info(name)?;
        let proto = ETH_P_ALL.to_be();
        // Protocol 0: no frame is queued before the ring exists; `bind` below starts reception.
        // SAFETY: plain syscall without pointers.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => OpenError::Permission(e),
                _ => OpenError::Io {
                    what: "socket(AF_PACKET)",
                    err: e,
                },
            });
        }
        // SAFETY: `raw` was just created and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // The vnet header must be on before the ring is set up.
        let one: libc::c_int = 1;
        let vnet = match setsockopt(fd.as_raw_fd(), libc::SOL_PACKET, PACKET_VNET_HDR, &one) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("PACKET_VNET_HDR: {e} (no checksum/segmentation offloads)");
                false
            }
        };
        let ring = RxRing::new(fd.as_raw_fd(), vnet).map_err(|err| OpenError::Io {
            what: "PACKET_RX_RING (TPACKET_V2)",
            err,
        })?;
        if let Err(e) = setsockopt(fd.as_raw_fd(), libc::SOL_PACKET, PACKET_QDISC_BYPASS, &one) {
            tracing::warn!("PACKET_QDISC_BYPASS: {e} (frames go through the qdisc)");
        }
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = idx;
        // SAFETY: `sll` is a valid sockaddr_ll of the length passed.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })
        .map_err(|err| OpenError::Io {
            what: "bind(AF_PACKET)",
            err,
        })?;
        if let Err(e) = setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            PACKET_IGNORE_OUTGOING,
            &one,
        ) {
            tracing::warn!("PACKET_IGNORE_OUTGOING: {e} (own frames will be seen and ignored)");
        }
        let mac = mac.unwrap_or(if_mac);
        if mac != if_mac {
            let mr = libc::packet_mreq {
                mr_ifindex: idx,
                mr_type: libc::PACKET_MR_PROMISC as u16,
                mr_alen: 0,
                mr_address: [0; 8],
            };
            setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                &mr,
            )
            .map_err(|err| OpenError::Io {
                what: "PACKET_ADD_MEMBERSHIP(PROMISC)",
                err,
            })?;
        }
        // A deep send buffer: a burst of TSO frames must not stall on it (reception uses the
        // ring, not the receive buffer).
        let bufsz: libc::c_int = 4 << 20;
        let _ = setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            &bufsz,
        );
        tracing::debug!(
            iface = name,
            vnet,
            frame_kib = super::afpacket_ring::FRAME_SIZE >> 10,
            frames = super::afpacket_ring::FRAME_NR,
            "af_packet: TPACKET_V2 ring"
        );
        let (dev_csum, dev_tso) = ethtool_offloads(fd.as_raw_fd(), name);
        let uring = tx_uring(fd.as_raw_fd());
        Ok(AfPacket {
            ring,
            fd,
            mac,
            mtu: mtu.min(1500),
            vnet,
            name: name.to_string(),
            dev_csum,
            dev_tso,
            tx_hdrs: vec![[0; vnet::LEN]; TX_BATCH],
            tx_stage: vec![0; TX_BATCH * TX_STAGE],
            uring,
            tx_full_drops: 0,
        })
    }
}

/// The io_uring transmitter, unless io_uring is unavailable (one info line) or turned off with
/// `SNSTACK_AFPACKET_TX=sendmmsg`.
fn tx_uring(fd: RawFd) -> Option<TxUring> {
    if std::env::var("SNSTACK_AFPACKET_TX").is_ok_and(|v| v == "sendmmsg") {
        tracing::info!("af_packet: TX with sendmmsg (SNSTACK_AFPACKET_TX)");
        return None;
    }
    match TxUring::new(fd) {
        Ok(u) => Some(u),
        Err(e) => {
            tracing::info!("af_packet: io_uring unavailable ({e}): TX with sendmmsg");
            None
        }
    }
}

impl AfPacket {
    /// One `sendmmsg` of up to [`TX_BATCH`] frames from the front of `frames`. Returns how
    /// many the kernel took, or the error of the first frame.
    fn send_batch(&mut self, frames: &VecDeque<TxFrame>) -> io::Result<usize> {
        let k = frames.len().min(TX_BATCH);
        // SAFETY: iovec and mmsghdr are plain data; all-zero is a valid value.
        let mut iov: [libc::iovec; 2 * TX_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; TX_BATCH] = unsafe { std::mem::zeroed() };
        for (i, f) in frames.iter().take(k).enumerate() {
            let mut parts = 0;
            if self.vnet {
                self.tx_hdrs[i] = VnetHdr::for_tx(&f.buf, &f.meta).bytes();
                iov[2 * i] = libc::iovec {
                    iov_base: self.tx_hdrs[i].as_mut_ptr().cast(),
                    iov_len: vnet::LEN,
                };
                parts = 1;
            }
            iov[2 * i + parts] = libc::iovec {
                iov_base: f.buf.as_ptr().cast_mut().cast(),
                iov_len: f.buf.len(),
            };
            msgs[i].msg_hdr.msg_iov = iov[2 * i..].as_mut_ptr();
            msgs[i].msg_hdr.msg_iovlen = parts + 1;
        }
        if let Some(u) = self.uring.as_mut() {
            let mut reqs = [TxReq::Buf(std::ptr::null(), 0); TX_BATCH];
            let vlen = if self.vnet { vnet::LEN } else { 0 };
            for (i, f) in frames.iter().take(k).enumerate() {
                let n = vlen + f.buf.len();
                if n <= TX_STAGE {
                    // Small frame: vnet header and frame copied into one staging slot.
                    let slot = &mut self.tx_stage[i * TX_STAGE..i * TX_STAGE + n];
                    slot[..vlen].copy_from_slice(&self.tx_hdrs[i][..vlen]);
                    slot[vlen..].copy_from_slice(&f.buf);
                    reqs[i] = TxReq::Buf(slot.as_ptr(), n);
                } else {
                    reqs[i] = TxReq::Msg(&msgs[i].msg_hdr);
                }
            }
            // SAFETY: as for sendmmsg below; `msgs`, `iov`, `tx_stage`, the frames and `tx_hdrs`
            // outlive the call, which waits for every request.
            let b = unsafe { u.send(self.fd.as_raw_fd(), &reqs[..k]) }?;
            if b.sent == 0 && b.error.is_none() {
                // The device is full: everything stays queued for the next poll.
                return Ok(0);
            }
            if b.full > 0 {
                self.tx_full_drops += b.full as u64;
                tracing::debug!(dropped = b.full, "af_packet: device full within a burst");
            }
            if let Some(e) = b.error {
                tracing::debug!("af_packet tx: {}", io::Error::from_raw_os_error(e));
                if b.sent == 0 {
                    return Err(io::Error::from_raw_os_error(e));
                }
            }
            // Sent or dropped: the burst is done with.
            return Ok(k);
        }
        loop {
            // SAFETY: `msgs[..k]` point to iovecs of live buffers (the frames, which stay in
            // `frames`, and `tx_hdrs`) that the kernel only reads; the socket is bound, so no
            // address is needed.
            let r = unsafe {
                libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), k as libc::c_uint, 0)
            };
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN | libc::ENOBUFS) => return Ok(0),
                Some(libc::EINTR) => continue,
                _ => return Err(e),
            }
        }
    }
}

impl Device for AfPacket {
    fn caps(&self) -> DeviceCaps {
        let tx_csum = self.vnet && self.dev_csum;
        let tso = tx_csum && self.dev_tso;
        DeviceCaps {
            mtu: self.mtu,
            tx_csum,
            tso,
            max_tso_frame: if tso { MAX_TSO_FRAME } else { self.mtu + 14 },
        }
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn refresh_caps(&mut self) {
        let (c, t) = ethtool_offloads(self.fd.as_raw_fd(), &self.name);
        if (c, t) != (self.dev_csum, self.dev_tso) {
            tracing::info!(
                iface = %self.name,
                tx_csum = c,
                tso = t,
                "af_packet: the interface's offloads changed"
            );
        }
        self.dev_csum = c;
        self.dev_tso = t;
    }

    fn rx_burst(&mut self, max: usize, f: &mut dyn FnMut(&[u8], RxMeta)) -> io::Result<usize> {
        Ok(self.ring.recv(max, f))
    }

    fn rx_ready(&self) -> Option<bool> {
        Some(self.ring.ready())
    }

    fn tx_burst(
        &mut self,
        frames: &mut VecDeque<TxFrame>,
        done: &mut Vec<Vec<u8>>,
    ) -> io::Result<usize> {
        let mut total = 0;
        while !frames.is_empty() {
            let want = frames.len().min(TX_BATCH);
            let sent = match self.send_batch(frames) {
                Ok(n) => n,
                Err(e) if total > 0 => {
                    // Reported again (and then returned) by the next call.
                    tracing::trace!("af_packet tx: {e}");
                    break;
                }
                Err(e) => return Err(e),
            };
            for mut f in frames.drain(..sent) {
                f.buf.clear();
                done.push(f.buf);
            }
            total += sent;
            if sent < want {
                break;
            }
        }
        Ok(total)
    }

    fn rx_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("02:00:0a:ff:00:01"),
            Some([2, 0, 0x0a, 0xff, 0, 1])
        );
        assert_eq!(parse_mac("02:00:0a:ff:00"), None);
        assert_eq!(parse_mac("02:00:0a:ff:00:01:02"), None);
        assert_eq!(parse_mac("zz:00:0a:ff:00:01"), None);
        assert_eq!(parse_mac(""), None);
    }

    /// Root only (skips otherwise): a veth pair in a network namespace of this test's own
    /// thread, an af_packet device on each end. A plain frame, a frame with its checksum left to
    /// the kernel and a 3-segment TSO super-frame go from A to B through the ring and the vnet
    /// header; B sees them with the metadata that says how to read them.
    #[test]
    fn ring_and_vnet_header_on_a_veth() {
        use super::super::offload::{self, tests::tcp4};
        use snstack_tcp::{Gso, RxCsum, TxMeta};
        // SAFETY: plain syscall.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let t = std::thread::spawn(|| {
            // SAFETY: moves only this thread into a new network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                eprintln!(
                    "skipped: unshare(CLONE_NEWNET): {}",
                    io::Error::last_os_error()
                );
                return;
            }
            let ip = |args: &str| {
                let ok = std::process::Command::new("ip")
                    .args(args.split(' '))
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "ip {args}");
            };
            ip("link add snta type veth peer name sntb");
            ip("link set snta up");
            ip("link set sntb up");
            let mut a = AfPacket::open("snta", None).expect("open snta");
            let mut b = AfPacket::open("sntb", None).expect("open sntb");
            assert!(a.caps().tso && a.caps().tx_csum);
            let bcast = |mut f: Vec<u8>| {
                f[..6].fill(0xff);
                f
            };
            let data: Vec<u8> = (0..4000u32).map(|i| (i * 31) as u8).collect();
            let plain = bcast(tcp4(1, 0x18, &data[..100]));
            let mut partial = bcast(tcp4(101, 0x18, &data[..200]));
            let cs = offload::make_partial(&mut partial);
            let mut sup = bcast(tcp4(301, 0x18, &data[..3000]));
            let cs2 = offload::make_partial(&mut sup);
            let g = Gso {
                segment_size: 1000,
                ipv6: false,
            };
            let mut q = VecDeque::from([
                TxFrame {
                    buf: plain.clone(),
                    meta: TxMeta::default(),
                },
                TxFrame {
                    buf: partial,
                    meta: TxMeta {
                        csum: cs,
                        gso: None,
                    },
                },
                TxFrame {
                    buf: sup,
                    meta: TxMeta {
                        csum: cs2,
                        gso: Some(g),
                    },
                },
            ]);
            let mut done = Vec::new();
            assert_eq!(a.tx_burst(&mut q, &mut done).unwrap(), 3);
            assert_eq!(done.len(), 3);
            // The fd is readable as soon as a frame is in the ring (no block retire timer).
            let mut pfd = libc::pollfd {
                fd: b.rx_fd().unwrap(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `pfd` is one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, 1000) };
            assert!(r == 1 && pfd.revents & libc::POLLIN != 0, "poll: {r}");
            let mut got = Vec::new();
            let t0 = std::time::Instant::now();
            let mut payload = 0;
            while payload < 3300 && t0.elapsed() < std::time::Duration::from_secs(2) {
                b.rx_burst(64, &mut |f, m| {
                    // Only our TCP test frames (the kernel may send its own, e.g. IPv6 MLD).
                    if offload::l4(f).is_some_and(|p| p.proto == 6) {
                        payload += offload::tcp_payload_len(f).unwrap_or(0);
                        got.push((f.to_vec(), m));
                    }
                })
                .unwrap();
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            assert_eq!(payload, 3300, "frames: {}", got.len());
            assert_eq!(got[0].0, plain);
            assert_eq!(got[1].1.csum, RxCsum::Partial);
            // The super-frame arrives whole (veth keeps GSO) or cut by the kernel; either way
            // completing its checksum gives a valid frame.
            if got.len() == 3 {
                assert_eq!(got[2].1.gso, Some(g));
                assert_eq!(got[2].0.len(), 66 + 3000);
            }
            for (f, m) in &got[1..] {
                let mut f = f.clone();
                if m.csum == RxCsum::Partial {
                    offload::fill_l4_csum(&mut f);
                }
                let mut again = f.clone();
                offload::fill_l4_csum(&mut again);
                assert_eq!(f, again, "checksum complete");
            }
            // A ~60 KiB TSO super-frame fits one ring slot: received whole (or cut by the
            // kernel into segments), never truncated.
            let big: Vec<u8> = (0..60000u32).map(|i| (i * 7) as u8).collect();
            let mut sup = bcast(tcp4(5000, 0x18, &big));
            let csum = offload::make_partial(&mut sup);
            let g = Gso {
                segment_size: 1448,
                ipv6: false,
            };
            let mut q = VecDeque::from([TxFrame {
                buf: sup,
                meta: TxMeta { csum, gso: Some(g) },
            }]);
            assert_eq!(a.tx_burst(&mut q, &mut done).unwrap(), 1);
            let (mut payload, mut frames, mut whole) = (0, 0, None);
            let t0 = std::time::Instant::now();
            while payload < big.len() && t0.elapsed() < std::time::Duration::from_secs(2) {
                b.rx_burst(64, &mut |f, m| {
                    if offload::l4(f).is_some_and(|p| p.proto == 6) {
                        payload += offload::tcp_payload_len(f).unwrap_or(0);
                        frames += 1;
                        whole = Some((f.len(), m.gso));
                    }
                })
                .unwrap();
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            assert_eq!(payload, big.len(), "frames: {frames}");
            assert_eq!(b.ring.stats.truncated, 0);
            if frames == 1 {
                assert_eq!(whole, Some((66 + big.len(), Some(g))));
            }
        });
        t.join().unwrap();
    }

    #[test]
    fn missing_interface_is_one_clear_error() {
        match AfPacket::open("nosuchif0", None) {
            Err(OpenError::NoInterface(n)) => assert_eq!(n, "nosuchif0"),
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => panic!("opened a missing interface"),
        }
    }
}
