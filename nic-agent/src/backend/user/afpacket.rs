//! The af_packet device: an `AF_PACKET`/`SOCK_RAW` socket bound to one interface, non-blocking,
//! plain `recv`/`send` per frame (no TPACKET rings yet). It needs CAP_NET_RAW and no DPDK.
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

use super::device::{Device, MAX_FRAME};

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

pub struct AfPacket {
    fd: OwnedFd,
    mac: [u8; 6],
    mtu: usize,
    buf: Vec<u8>,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
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
        // SAFETY: plain syscall without pointers.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::c_int::from(proto),
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
        let one: libc::c_int = 1;
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
        // Deep socket buffers: bursts from a fast peer must not overflow between two polls.
        let bufsz: libc::c_int = 4 << 20;
        let _ = setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &bufsz,
        );
        let _ = setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            &bufsz,
        );
        Ok(AfPacket {
            fd,
            mac,
            mtu: mtu.min(1500),
            buf: vec![0; 65536],
        })
    }
}

impl Device for AfPacket {
    fn rx_burst(&mut self, out: &mut VecDeque<Vec<u8>>, max: usize) -> io::Result<usize> {
        let mut n = 0;
        while n < max {
            // SAFETY: `buf` is writable for its length; MSG_TRUNC makes the kernel return the
            // real frame length, which we compare against what fits.
            let r = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => break,
                    io::ErrorKind::Interrupted => continue,
                    _ => return if n > 0 { Ok(n) } else { Err(e) },
                }
            }
            let len = r as usize;
            // Oversized frames (GRO/GSO super-packets from an offloading peer) are dropped: the
            // peer must send MTU-sized frames (see docs/user-stack.md).
            if len > MAX_FRAME.max(self.mtu + 14) || len > self.buf.len() || len < 14 {
                continue;
            }
            out.push_back(self.buf[..len].to_vec());
            n += 1;
        }
        Ok(n)
    }

    fn tx_burst(&mut self, frames: &mut VecDeque<Vec<u8>>) -> io::Result<usize> {
        let mut n = 0;
        while let Some(f) = frames.front() {
            // SAFETY: `f` is readable for its length.
            let r = unsafe { libc::send(self.fd.as_raw_fd(), f.as_ptr().cast(), f.len(), 0) };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN | libc::ENOBUFS) => break,
                    Some(libc::EINTR) => continue,
                    _ => return Err(e),
                }
            }
            frames.pop_front();
            n += 1;
        }
        Ok(n)
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn mtu(&self) -> usize {
        self.mtu
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

    #[test]
    fn missing_interface_is_one_clear_error() {
        match AfPacket::open("nosuchif0", None) {
            Err(OpenError::NoInterface(n)) => assert_eq!(n, "nosuchif0"),
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => panic!("opened a missing interface"),
        }
    }
}
