//! The AF_XDP device: one XSK socket bound to queue 0 of an interface, with libxdp's default XDP
//! program (loaded by `xsk_socket__create`) redirecting that queue's frames into it. Needs a
//! binary built with the system libxdp/libbpf (`apt-get install libxdp-dev libbpf-dev`) and
//! CAP_NET_ADMIN + CAP_BPF (root).
//!
//! Memory: one UMEM of [`NUM_FRAMES`] frames of [`FRAME_SIZE`] bytes, half lent to the kernel
//! through the fill ring (kept full: every received frame goes back once `rx_burst`'s callback
//! returned), half for transmission (a free list refilled from the completion ring). Frames are
//! MTU-sized: no GRO/GSO super-frames and no checksum offload metadata cross AF_XDP here, so
//! [`Xdp::caps`] offers neither TX checksum nor TSO and every received frame is
//! [`RxCsum::Unknown`](snstack_tcp::RxCsum::Unknown) (the engine verifies in software).
//!
//! Copies: received frames are lent to the engine in place (no copy by us; in copy mode the
//! kernel copied them into the UMEM). The engine builds frames straight in free TX UMEM frames
//! ([`Device::frame_writer`], `snstack_tcp::writer`): the payload is copied once, from the TX
//! stream (or the engine's send buffer) into the UMEM. A frame the engine built in its own
//! buffer (no free UMEM frame or TX ring slot at that moment, or queued behind such a frame) is
//! copied from its `TxFrame` buffer into a UMEM frame, and the buffer goes back for reuse.
//!
//! Modes: native (driver) XDP first, then generic (SKB) XDP, whichever the interface accepts (one
//! info line says which, and whether the socket is zero-copy; on a veth it is always copy mode).
//! `SNSTACK_XDP_MODE=native` or `=generic` in the agent's environment allows only that mode.
//! On a veth, native XDP receives what the peer transmits without any setup on the peer (the
//! peer needs an XDP program or GRO only for frames *redirected* into a veth, which we do not
//! do; our TX goes through the generic transmit path). Attaching a (non-multi-buffer) XDP
//! program to a veth also turns the peer's software GSO off, so native mode sees MTU-sized
//! frames. Generic mode sees whatever the stack received: with TSO/GSO or TX checksum offload on
//! the peer, super-frames (dropped here: longer than MTU + 14, counted, logged once at debug;
//! ones longer than a UMEM frame the kernel drops itself) and frames with a partial checksum
//! (dropped by the engine's software check) can arrive: turn the peer's offloads off
//! (`ethtool -K <peer> tx off tso off gso off`), as the af_packet device requires too.
//!
//! Queues: only queue 0 is served. A veth has one queue (the supported case); on a multi-queue
//! interface frames hashed to other queues pass to the kernel stack (one warning at start).
//!
//! Wake-ups: [`Xdp::rx_fd`] is the XSK socket (readable while the RX ring holds frames). The
//! socket is bound with `XDP_USE_NEED_WAKEUP`: TX is kicked with `sendto(MSG_DONTWAIT)` only when
//! the kernel asks for it, and the fill ring with `recvfrom(MSG_DONTWAIT)` likewise.
//!
//! As with af_packet, the kernel must not own the IP we serve on that interface; while the
//! socket is bound, every frame of queue 0 goes to us and the kernel stack sees none of them.
//! The interface is not made promiscuous: with a `--mac` other than the interface's own, a real
//! NIC must be set promiscuous by hand (`ip link set IF promisc on`; a veth delivers every frame).

use std::collections::VecDeque;
use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};

use snstack_tcp::{DeviceCaps, FrameWriter, RxMeta, TxMeta, WriteOutcome};
use xdp_sys as sys;

use super::afpacket::iface_info;
use super::device::{Device, TxFrame};

/// Bytes per UMEM frame (one page: the aligned-mode maximum).
pub const FRAME_SIZE: usize = 4096;
/// Frames in the UMEM: the first half for RX (fill ring), the second half for TX.
pub const NUM_FRAMES: usize = 4096;
/// Entries of each of the four rings (fill, completion, RX, TX).
const RING: u32 = 2048;
/// `XDP_OPTIONS` socket option and its zero-copy flag (linux/if_xdp.h).
const XDP_OPTIONS: libc::c_int = 8;
const XDP_OPTIONS_ZEROCOPY: u32 = 1;

/// Why an AF_XDP device could not be opened (one line each).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("interface '{0}' not found (in this network namespace)")]
    NoInterface(String),
    #[error(
        "attaching an XDP program and binding an AF_XDP socket needs CAP_NET_ADMIN and CAP_BPF (run as root): {0}"
    )]
    Permission(io::Error),
    #[error("interface '{iface}' refuses AF_XDP ({errs})")]
    Unsupported { iface: String, errs: String },
    #[error("{what}: {err}")]
    Io { what: &'static str, err: io::Error },
}

/// Where the XDP program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`).
    Native,
    /// In the stack's receive path (`XDP_FLAGS_SKB_MODE`).
    Generic,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Native => "native",
            Mode::Generic => "generic",
        }
    }
}

/// Counters of the device itself (the kernel's are in [`Xdp::kernel_stats`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct XdpStats {
    /// Received frames longer than MTU + 14 (super-frames of an offloading peer) or shorter than
    /// an Ethernet header: dropped.
    pub rx_dropped: u64,
    /// Frames to send longer than a UMEM frame: dropped.
    pub tx_dropped: u64,
    /// TX kicks (`sendto`) made, and those the kernel answered EBUSY/ENOBUFS/ENETDOWN (a frame
    /// dropped by the device, or the device busy: the rest wait for the next kick).
    pub tx_kicks: u64,
    pub tx_kick_busy: u64,
}

pub struct Xdp {
    area: *mut u8,
    umem: *mut sys::xsk_umem,
    xsk: *mut sys::xsk_socket,
    // Boxed: libxdp keeps pointers to the fill and completion rings between xsk_umem__create and
    // xsk_socket__create.
    fill: Box<sys::xsk_ring_prod>,
    comp: Box<sys::xsk_ring_cons>,
    rx: Box<sys::xsk_ring_cons>,
    tx: Box<sys::xsk_ring_prod>,
    fd: RawFd,
    mac: [u8; 6],
    mtu: usize,
    /// RX frames (addresses) waiting for room in the fill ring.
    fill_pending: Vec<u64>,
    /// TX frames not in the TX ring or in flight.
    tx_free: Vec<u64>,
    /// TX frames the engine wrote (address, length), in order, for the next `tx_burst` to put
    /// in the TX ring ahead of any `TxFrame`. The ring had a free slot for each when it was
    /// written, and only `tx_burst` takes slots: they are all there.
    tx_written: Vec<(u64, u32)>,
    pub stats: XdpStats,
}

fn os_err(neg_errno: libc::c_int) -> io::Error {
    io::Error::from_raw_os_error(-neg_errno)
}

/// Number of RX queues of `name` (1 when sysfs does not say).
fn rx_queues(name: &str) -> usize {
    std::fs::read_dir(format!("/sys/class/net/{name}/queues"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count()
        })
        .unwrap_or(1)
        .max(1)
}

/// An anonymous, page-aligned mapping for the UMEM.
struct Area(*mut u8);

impl Area {
    const LEN: usize = NUM_FRAMES * FRAME_SIZE;

    fn new() -> io::Result<Area> {
        // SAFETY: anonymous private mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Self::LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Area(p.cast()))
    }

    fn into_raw(self) -> *mut u8 {
        let p = self.0;
        std::mem::forget(self);
        p
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: `self.0` is our own mapping of `LEN` bytes, no longer used.
        unsafe { libc::munmap(self.0.cast(), Self::LEN) };
    }
}

/// One attempt: a fresh UMEM and a socket in `mode`. On failure everything is released (libxdp
/// cannot retry socket creation on a UMEM whose first socket failed).
#[allow(clippy::type_complexity)]
fn create(
    name: &CString,
    area: *mut u8,
    mode: Mode,
) -> Result<
    (
        *mut sys::xsk_umem,
        *mut sys::xsk_socket,
        [Box<sys::xsk_ring>; 4],
    ),
    io::Error,
> {
    let mut fill = Box::<sys::xsk_ring>::default();
    let mut comp = Box::<sys::xsk_ring>::default();
    let mut rx = Box::<sys::xsk_ring>::default();
    let mut tx = Box::<sys::xsk_ring>::default();
    let ucfg = sys::xsk_umem_config {
        fill_size: RING,
        comp_size: RING,
        frame_size: FRAME_SIZE as u32,
        frame_headroom: 0,
        flags: 0,
    };
    let mut umem = std::ptr::null_mut();
    // SAFETY: `area` is a page-aligned mapping of the size passed, kept until the UMEM is deleted;
    // the ring structs are boxed (stable addresses) and outlive the UMEM.
    let r = unsafe {
        sys::xsk_umem__create(
            &mut umem,
            area.cast(),
            Area::LEN as u64,
            &mut *fill,
            &mut *comp,
            &ucfg,
        )
    };
    if r != 0 {
        return Err(os_err(r));
    }
    let (xdp_flags, bind_flags) = match mode {
        // Native: zero-copy where the driver supports it, copy otherwise (veth).
        Mode::Native => (sys::XDP_FLAGS_DRV_MODE, sys::XDP_USE_NEED_WAKEUP),
        Mode::Generic => (
            sys::XDP_FLAGS_SKB_MODE,
            sys::XDP_COPY | sys::XDP_USE_NEED_WAKEUP,
        ),
    };
    let scfg = sys::xsk_socket_config {
        rx_size: RING,
        tx_size: RING,
        libxdp_flags: 0,
        xdp_flags,
        bind_flags,
    };
    let mut xsk = std::ptr::null_mut();
    // SAFETY: `name` is NUL-terminated; `umem` was just created; the rings are boxed and live as
    // long as the socket.
    let r = unsafe {
        sys::xsk_socket__create(&mut xsk, name.as_ptr(), 0, umem, &mut *rx, &mut *tx, &scfg)
    };
    if r != 0 {
        // SAFETY: `umem` has no socket (creation failed) and is not used again.
        unsafe { sys::xsk_umem__delete(umem) };
        return Err(os_err(r));
    }
    Ok((umem, xsk, [fill, comp, rx, tx]))
}

fn ring_pending(r: &sys::xsk_ring) -> u32 {
    // SAFETY: `consumer` points into the ring's kernel-shared mapping, alive with the socket;
    // the kernel updates it concurrently, hence the atomic load.
    let cons = unsafe { AtomicU32::from_ptr(r.consumer) }.load(Ordering::Acquire);
    r.cached_prod.wrapping_sub(cons)
}

impl Xdp {
    /// Opens queue 0 of interface `name`; `mac` overrides the interface's own address.
    pub fn open(name: &str, mac: Option<[u8; 6]>) -> Result<Xdp, OpenError> {
        let (_, if_mac, mtu) = iface_info(name).map_err(|e| match e {
            super::afpacket::OpenError::NoInterface(n) => OpenError::NoInterface(n),
            e => OpenError::Io {
                what: "interface",
                err: io::Error::other(e.to_string()),
            },
        })?;
        sys::check_layout().map_err(|e| OpenError::Io {
            what: "libxdp struct layout",
            err: io::Error::other(e),
        })?;
        let queues = rx_queues(name);
        if queues > 1 {
            tracing::warn!(
                iface = name,
                queues,
                "AF_XDP serves queue 0 only: frames on the other queues go to the kernel stack"
            );
        }
        // SAFETY: sets two global print callbacks in the shim.
        unsafe { sys::snstack_xdp_set_verbose(tracing::enabled!(tracing::Level::TRACE).into()) };
        // Kernels before 5.11 charge the UMEM to RLIMIT_MEMLOCK.
        let inf = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: `inf` is a valid rlimit; failure is harmless (memcg accounting on newer kernels).
        let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &inf) };

        let cname = CString::new(name).map_err(|_| OpenError::NoInterface(name.to_string()))?;
        let area = Area::new().map_err(|err| OpenError::Io {
            what: "mmap(UMEM)",
            err,
        })?;
        let modes: &[Mode] = match std::env::var("SNSTACK_XDP_MODE").as_deref() {
            Ok("native") => &[Mode::Native],
            Ok("generic") => &[Mode::Generic],
            _ => &[Mode::Native, Mode::Generic],
        };
        let mut errs = Vec::new();
        let mut made = None;
        for (i, &mode) in modes.iter().enumerate() {
            let mut r = create(&cname, area.0, mode);
            // A failed attempt's socket releases its queue asynchronously (a kernel work item):
            // the next bind can meet EBUSY for a few milliseconds.
            for _ in 0..40 {
                match &r {
                    Err(e) if i > 0 && e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(25));
                        r = create(&cname, area.0, mode);
                    }
                    _ => break,
                }
            }
            match r {
                Ok(x) => {
                    made = Some((mode, x));
                    break;
                }
                Err(e) => {
                    tracing::debug!(iface = name, ?mode, "AF_XDP socket: {e}");
                    match e.raw_os_error() {
                        Some(libc::EPERM | libc::EACCES) => return Err(OpenError::Permission(e)),
                        Some(libc::ENODEV | libc::ENXIO) => {
                            return Err(OpenError::NoInterface(name.to_string()))
                        }
                        _ => {}
                    }
                    errs.push(format!("{} XDP: {e}", mode.name()));
                }
            }
        }
        let Some((mode, (umem, xsk, [fill, comp, rx, tx]))) = made else {
            return Err(OpenError::Unsupported {
                iface: name.to_string(),
                errs: errs.join("; "),
            });
        };
        // SAFETY: `xsk` is a live socket.
        let fd = unsafe { sys::xsk_socket__fd(xsk) };
        let mut opts: u32 = 0;
        let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
        // SAFETY: `opts` is writable for `len` bytes.
        let r = unsafe {
            libc::getsockopt(
                fd,
                sys::SOL_XDP,
                XDP_OPTIONS,
                (&mut opts as *mut u32).cast(),
                &mut len,
            )
        };
        let zero_copy = r == 0 && opts & XDP_OPTIONS_ZEROCOPY != 0;
        let half = (NUM_FRAMES / 2) as u64;
        let mut dev = Xdp {
            area: area.into_raw(),
            umem,
            xsk,
            fill,
            comp,
            rx,
            tx,
            fd,
            mac: mac.unwrap_or(if_mac),
            mtu: mtu.min(FRAME_SIZE - 14),
            fill_pending: (0..half).map(|i| i * FRAME_SIZE as u64).collect(),
            tx_free: (half..NUM_FRAMES as u64)
                .map(|i| i * FRAME_SIZE as u64)
                .collect(),
            tx_written: Vec::with_capacity(RING as usize),
            stats: XdpStats::default(),
        };
        dev.refill();
        tracing::info!(
            iface = name,
            queues,
            "AF_XDP socket on queue 0: {} XDP, {}",
            match mode {
                Mode::Native => "native (driver)",
                Mode::Generic => "generic (SKB)",
            },
            if zero_copy { "zero-copy" } else { "copy mode" }
        );
        Ok(dev)
    }

    /// The kernel's counters of this socket (`XDP_STATISTICS`).
    pub fn kernel_stats(&self) -> io::Result<sys::xdp_statistics> {
        let mut st = sys::xdp_statistics::default();
        let mut len = std::mem::size_of::<sys::xdp_statistics>() as libc::socklen_t;
        // SAFETY: `st` is writable for `len` bytes.
        let r = unsafe {
            libc::getsockopt(
                self.fd,
                sys::SOL_XDP,
                sys::XDP_STATISTICS,
                (&mut st as *mut sys::xdp_statistics).cast(),
                &mut len,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(st)
    }

    /// Gives waiting RX frames back to the kernel through the fill ring.
    fn refill(&mut self) {
        if self.fill_pending.is_empty() {
            return;
        }
        let want = self.fill_pending.len() as u32;
        // SAFETY: the fill ring belongs to our live UMEM.
        let n = unsafe { sys::snstack_xsk_prod_nb_free(&mut *self.fill, want) }.min(want);
        if n == 0 {
            return;
        }
        let mut idx = 0;
        // SAFETY: as above; `n` entries are free.
        let got = unsafe { sys::snstack_xsk_prod_reserve(&mut *self.fill, n, &mut idx) };
        for i in 0..got {
            let addr = self.fill_pending.pop().unwrap_or_default();
            // SAFETY: `idx + i` is a reserved slot; the returned pointer is into the ring.
            unsafe {
                *sys::snstack_xsk_prod_fill_addr(&mut *self.fill, idx.wrapping_add(i)) = addr
            };
        }
        // SAFETY: the `got` reserved slots were written.
        unsafe { sys::snstack_xsk_prod_submit(&mut *self.fill, got) };
        // SAFETY: reads the ring's flags word.
        if unsafe { sys::snstack_xsk_prod_needs_wakeup(&*self.fill) } != 0 {
            // SAFETY: a zero-length, non-blocking recvfrom on our socket only wakes the kernel.
            unsafe {
                libc::recvfrom(
                    self.fd,
                    std::ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
        }
    }

    /// Returns sent TX frames from the completion ring to the free list.
    fn drain_completions(&mut self) {
        let mut idx = 0;
        // SAFETY: the completion ring belongs to our live UMEM.
        let n = unsafe { sys::snstack_xsk_cons_peek(&mut *self.comp, RING, &mut idx) };
        for i in 0..n {
            // SAFETY: `idx + i` is a peeked entry.
            let addr =
                unsafe { *sys::snstack_xsk_cons_comp_addr(&*self.comp, idx.wrapping_add(i)) };
            self.tx_free.push(addr & !(FRAME_SIZE as u64 - 1));
        }
        if n > 0 {
            // SAFETY: the `n` peeked entries were read.
            unsafe { sys::snstack_xsk_cons_release(&mut *self.comp, n) };
        }
    }

    /// Makes the kernel transmit what the TX ring holds, when it asks to be woken. In copy mode
    /// one `sendto` sends a limited batch (32 frames) and says EAGAIN while more wait.
    fn kick_tx(&mut self) {
        for _ in 0..(RING / 16) {
            if ring_pending(&self.tx) == 0 {
                break;
            }
            // SAFETY: reads the ring's flags word.
            if unsafe { sys::snstack_xsk_prod_needs_wakeup(&*self.tx) } == 0 {
                break;
            }
            self.stats.tx_kicks += 1;
            // SAFETY: a zero-length, non-blocking sendto on our socket only wakes the kernel.
            let r = unsafe {
                libc::sendto(
                    self.fd,
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if r >= 0 {
                continue;
            }
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => continue,
                // Device busy or down: the frames stay in the ring for the next kick.
                Some(libc::EBUSY | libc::ENOBUFS | libc::ENETDOWN) => {
                    self.stats.tx_kick_busy += 1;
                    break;
                }
                e => {
                    tracing::debug!("AF_XDP tx kick: errno {e:?}");
                    break;
                }
            }
        }
        self.drain_completions();
    }
}

impl Xdp {
    /// Puts the frames the engine wrote into the TX ring, in order; returns how many.
    fn submit_written(&mut self) -> usize {
        let want = self.tx_written.len() as u32;
        if want == 0 {
            return 0;
        }
        let mut idx = 0;
        // SAFETY: the TX ring belongs to our live socket.
        let n = unsafe {
            let room = sys::snstack_xsk_prod_nb_free(&mut *self.tx, want).min(want);
            sys::snstack_xsk_prod_reserve(&mut *self.tx, room, &mut idx)
        };
        for (i, &(addr, len)) in self.tx_written[..n as usize].iter().enumerate() {
            // SAFETY: `idx + i` is a slot reserved above; the frame at `addr` holds `len` bytes
            // the engine wrote.
            unsafe {
                *sys::snstack_xsk_prod_tx_desc(&mut *self.tx, idx.wrapping_add(i as u32)) =
                    sys::xdp_desc {
                        addr,
                        len,
                        options: 0,
                    };
            }
        }
        if n > 0 {
            // SAFETY: the `n` reserved descriptors were written.
            unsafe { sys::snstack_xsk_prod_submit(&mut *self.tx, n) };
            self.tx_written.drain(..n as usize);
        }
        n as usize
    }
}

impl FrameWriter for Xdp {
    fn write_frame(
        &mut self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> Option<TxMeta>,
    ) -> WriteOutcome {
        if len > FRAME_SIZE {
            return WriteOutcome::NoRoom;
        }
        if self.tx_free.is_empty() {
            self.drain_completions();
        }
        // A TX ring slot for this frame and every one written before it.
        let slots = self.tx_written.len() as u32 + 1;
        // SAFETY: the TX ring belongs to our live socket; this only reads its indices.
        if unsafe { sys::snstack_xsk_prod_nb_free(&mut *self.tx, slots) } < slots {
            return WriteOutcome::NoRoom;
        }
        let Some(addr) = self.tx_free.pop() else {
            return WriteOutcome::NoRoom;
        };
        // SAFETY: `addr` is a free TX frame of the UMEM (FRAME_SIZE bytes, `len` fits), in no
        // ring, so neither the kernel nor another slice touches it until we submit it.
        let buf = unsafe {
            std::slice::from_raw_parts_mut(
                sys::snstack_xsk_umem_get_data(self.area.cast(), addr).cast::<u8>(),
                len,
            )
        };
        // No offloads cross AF_XDP (`caps`): the engine filled every checksum itself.
        match fill(buf) {
            Some(_) => {
                self.tx_written.push((addr, len as u32));
                WriteOutcome::Written
            }
            None => {
                self.tx_free.push(addr);
                WriteOutcome::Dropped
            }
        }
    }
}

impl Device for Xdp {
    fn frame_writer(&mut self) -> Option<&mut dyn FrameWriter> {
        Some(self)
    }

    fn rx_csum_may_be_partial(&self) -> bool {
        // No per-frame checksum state reaches us from a veth peer with tx offload on.
        !self.caps().tx_csum
    }

    fn caps(&self) -> DeviceCaps {
        DeviceCaps {
            mtu: self.mtu,
            tx_csum: false,
            tso: false,
            max_tso_frame: self.mtu + 14,
        }
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn rx_burst(&mut self, max: usize, f: &mut dyn FnMut(&[u8], RxMeta)) -> io::Result<usize> {
        // Frames still in the TX ring (a kick that met EAGAIN) go out with the next poll.
        if ring_pending(&self.tx) != 0 {
            self.kick_tx();
        }
        let mut delivered = 0;
        while delivered < max {
            let want = (max - delivered).min(RING as usize) as u32;
            let mut idx = 0;
            // SAFETY: the RX ring belongs to our live socket.
            let n = unsafe { sys::snstack_xsk_cons_peek(&mut *self.rx, want, &mut idx) };
            if n == 0 {
                break;
            }
            for i in 0..n {
                // SAFETY: `idx + i` is a peeked entry.
                let d = unsafe { *sys::snstack_xsk_cons_rx_desc(&*self.rx, idx.wrapping_add(i)) };
                let len = d.len as usize;
                let base = d.addr & !(FRAME_SIZE as u64 - 1);
                self.fill_pending.push(base);
                if len < 14 || len > self.mtu + 14 || (d.addr - base) as usize + len > FRAME_SIZE {
                    if self.stats.rx_dropped == 0 {
                        tracing::debug!(
                            len,
                            mtu = self.mtu,
                            "AF_XDP: dropping a frame longer than MTU + 14 (a super-frame: turn \
                             TSO/GSO off on the peer) or shorter than a header (logged once)"
                        );
                    }
                    self.stats.rx_dropped += 1;
                    continue;
                }
                // SAFETY: the kernel wrote `len` bytes at `addr` inside the UMEM (checked to stay
                // in its frame); the frame is ours until it goes back to the fill ring, which
                // happens after the callback.
                let frame = unsafe {
                    std::slice::from_raw_parts(
                        sys::snstack_xsk_umem_get_data(self.area.cast(), d.addr).cast::<u8>(),
                        len,
                    )
                };
                f(frame, RxMeta::default());
                delivered += 1;
            }
            // SAFETY: the `n` peeked entries were read.
            unsafe { sys::snstack_xsk_cons_release(&mut *self.rx, n) };
            self.refill();
        }
        Ok(delivered)
    }

    fn tx_burst(
        &mut self,
        frames: &mut VecDeque<TxFrame>,
        done: &mut Vec<Vec<u8>>,
    ) -> io::Result<usize> {
        self.drain_completions();
        // The engine's frames first: they were written before any of `frames` was queued.
        let mut sent = self.submit_written();
        while let Some(front) = frames.front().filter(|_| self.tx_written.is_empty()) {
            if front.buf.len() > FRAME_SIZE {
                self.stats.tx_dropped += 1;
                if let Some(f) = frames.pop_front() {
                    let mut b = f.buf;
                    b.clear();
                    done.push(b);
                }
                continue;
            }
            let batch = frames
                .iter()
                .take(self.tx_free.len())
                .take_while(|f| f.buf.len() <= FRAME_SIZE)
                .count() as u32;
            if batch == 0 {
                break;
            }
            let mut idx = 0;
            // SAFETY: the TX ring belongs to our live socket.
            let n = unsafe {
                let room = sys::snstack_xsk_prod_nb_free(&mut *self.tx, batch).min(batch);
                sys::snstack_xsk_prod_reserve(&mut *self.tx, room, &mut idx)
            };
            if n == 0 {
                break;
            }
            for i in 0..n {
                let (Some(f), Some(addr)) = (frames.pop_front(), self.tx_free.pop()) else {
                    unreachable!("batch counted frames and free UMEM frames");
                };
                let len = f.buf.len();
                // SAFETY: `addr` is a free TX frame of the UMEM (FRAME_SIZE bytes, `len` fits),
                // not in any ring; the one copy of a sent frame.
                unsafe {
                    let dst = sys::snstack_xsk_umem_get_data(self.area.cast(), addr).cast::<u8>();
                    std::ptr::copy_nonoverlapping(f.buf.as_ptr(), dst, len);
                    *sys::snstack_xsk_prod_tx_desc(&mut *self.tx, idx.wrapping_add(i)) =
                        sys::xdp_desc {
                            addr,
                            len: len as u32,
                            options: 0,
                        };
                }
                let mut b = f.buf;
                b.clear();
                done.push(b);
            }
            // SAFETY: the `n` reserved descriptors were written.
            unsafe { sys::snstack_xsk_prod_submit(&mut *self.tx, n) };
            sent += n as usize;
        }
        if sent > 0 {
            self.kick_tx();
        }
        Ok(sent)
    }

    fn rx_fd(&self) -> Option<RawFd> {
        Some(self.fd)
    }

    fn next_due(&self) -> Option<std::time::Instant> {
        // Frames left in the TX ring by a kick that met EAGAIN, or written and not in the ring
        // yet: poll again soon to kick again.
        (ring_pending(&self.tx) != 0 || !self.tx_written.is_empty())
            .then(|| std::time::Instant::now() + std::time::Duration::from_micros(50))
    }
}

impl Drop for Xdp {
    fn drop(&mut self) {
        if let Ok(st) = self.kernel_stats() {
            tracing::debug!(?st, ours = ?self.stats, tx_pending = ring_pending(&self.tx), "AF_XDP socket closed");
        }
        // SAFETY: the socket, then its UMEM, then the UMEM's memory: each freed once, in the
        // order libxdp requires, and never used again.
        unsafe {
            sys::xsk_socket__delete(self.xsk);
            sys::xsk_umem__delete(self.umem);
            libc::munmap(self.area.cast(), Area::LEN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_interface_is_one_clear_error() {
        match Xdp::open("nosuchif0", None) {
            Err(OpenError::NoInterface(n)) => assert_eq!(n, "nosuchif0"),
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => panic!("opened a missing interface"),
        }
    }
}
