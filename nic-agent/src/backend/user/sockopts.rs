//! The socket options that the comparison engines (`--engine smoltcp`, `--engine lwip`) keep
//! for themselves, parsed and reported one way: what Linux takes, the errno it gives for a bad
//! value, and the options Linux accepts that these engines take without effect. Each engine
//! handles its own options first (buffers, port sharing, MSS) and then asks this table.

use std::io;

fn err(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// Options kept per socket.
#[derive(Clone, Copy, Debug)]
pub struct SockOpts {
    pub nodelay: bool,
    pub keepalive: bool,
    /// TCP_KEEPIDLE, TCP_KEEPINTVL (seconds) and TCP_KEEPCNT, Linux's defaults.
    pub keepidle: u32,
    pub keepintvl: u32,
    pub keepcnt: u32,
    /// SO_LINGER as set by the application: (on, seconds).
    pub linger: (i32, i32),
    pub reuseaddr: bool,
    pub v6only: bool,
    /// Engine-specific, set by the engine itself (smoltcp: SO_REUSEPORT, SO_RCVBUF, SO_SNDBUF).
    pub reuseport: bool,
    pub rcvbuf: Option<usize>,
    pub sndbuf: Option<usize>,
}

impl Default for SockOpts {
    fn default() -> Self {
        SockOpts {
            nodelay: false,
            keepalive: false,
            keepidle: 7200,
            keepintvl: 75,
            keepcnt: 9,
            linger: (0, 0),
            reuseaddr: false,
            v6only: false,
            reuseport: false,
            rcvbuf: None,
            sndbuf: None,
        }
    }
}

/// The `int` at the start of an option value (EINVAL when shorter, as Linux).
pub fn int(val: &[u8]) -> io::Result<i32> {
    val.get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| err(libc::EINVAL))
}

/// A count or interval that must be at least 1 (EINVAL otherwise, as Linux's keepalive options).
pub fn positive(v: i32) -> io::Result<u32> {
    if v < 1 {
        Err(err(libc::EINVAL))
    } else {
        Ok(v as u32)
    }
}

/// Writes an `int` option value (truncated to `buf` as Linux does); returns its length.
pub fn put_int(buf: &mut [u8], v: i32) -> usize {
    let b = v.to_ne_bytes();
    let n = buf.len().min(4);
    buf[..n].copy_from_slice(&b[..n]);
    n
}

/// Options Linux takes that every user-space engine accepts without effect (an `int` value is
/// still required): timeouts, which the host library enforces, and hints these engines ignore.
pub fn no_effect(level: i32, name: i32) -> bool {
    matches!(
        (level, name),
        (
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO
                | libc::SO_SNDTIMEO
                | libc::SO_RCVLOWAT
                | libc::SO_PRIORITY
                | libc::SO_OOBINLINE
                | libc::SO_BROADCAST
                | libc::SO_DONTROUTE,
        ) | (
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK | libc::TCP_DEFER_ACCEPT | libc::TCP_USER_TIMEOUT,
        ) | (libc::IPPROTO_IP, libc::IP_TOS | libc::IP_TTL)
            | (
                libc::IPPROTO_IPV6,
                libc::IPV6_TCLASS | libc::IPV6_UNICAST_HOPS
            )
    )
}

impl SockOpts {
    /// `setsockopt` of an option this table knows: Ok(true) once applied (or accepted without
    /// effect), Ok(false) for an option it does not know (the engine decides: ENOPROTOOPT),
    /// EINVAL for a value Linux refuses.
    pub fn set(&mut self, level: i32, name: i32, val: &[u8]) -> io::Result<bool> {
        match (level, name) {
            (libc::SOL_SOCKET, libc::SO_REUSEADDR) => self.reuseaddr = int(val)? != 0,
            (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => self.keepalive = int(val)? != 0,
            (libc::SOL_SOCKET, libc::SO_LINGER) => {
                if val.len() < 8 {
                    return Err(err(libc::EINVAL));
                }
                let on = int(val)?;
                let secs = i32::from_ne_bytes([val[4], val[5], val[6], val[7]]);
                self.linger = (on, secs);
            }
            _ if no_effect(level, name) => {
                int(val)?;
            }
            (libc::IPPROTO_TCP, libc::TCP_NODELAY) => self.nodelay = int(val)? != 0,
            (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE) => self.keepidle = positive(int(val)?)?,
            (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL) => self.keepintvl = positive(int(val)?)?,
            (libc::IPPROTO_TCP, libc::TCP_KEEPCNT) => self.keepcnt = positive(int(val)?)?,
            (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) => self.v6only = int(val)? != 0,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// `getsockopt` of an option this table keeps: the bytes written to `buf`, or None for an
    /// option it does not keep.
    pub fn get(&self, level: i32, name: i32, buf: &mut [u8]) -> Option<usize> {
        let v = match (level, name) {
            (libc::SOL_SOCKET, libc::SO_REUSEADDR) => i32::from(self.reuseaddr),
            (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => i32::from(self.keepalive),
            (libc::SOL_SOCKET, libc::SO_LINGER) => {
                let mut b = [0u8; 8];
                b[..4].copy_from_slice(&self.linger.0.to_ne_bytes());
                b[4..].copy_from_slice(&self.linger.1.to_ne_bytes());
                let n = buf.len().min(8);
                buf[..n].copy_from_slice(&b[..n]);
                return Some(n);
            }
            (libc::IPPROTO_TCP, libc::TCP_NODELAY) => i32::from(self.nodelay),
            (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE) => self.keepidle as i32,
            (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL) => self.keepintvl as i32,
            (libc::IPPROTO_TCP, libc::TCP_KEEPCNT) => self.keepcnt as i32,
            (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) => i32::from(self.v6only),
            _ => return None,
        };
        Some(put_int(buf, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i(v: i32) -> [u8; 4] {
        v.to_ne_bytes()
    }

    #[test]
    fn set_get_round_trip_and_linux_errnos() {
        let mut o = SockOpts::default();
        assert!(o.set(libc::IPPROTO_TCP, libc::TCP_NODELAY, &i(1)).unwrap());
        assert!(o
            .set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, &i(30))
            .unwrap());
        let mut l = [0u8; 8];
        l[..4].copy_from_slice(&i(1));
        assert!(o.set(libc::SOL_SOCKET, libc::SO_LINGER, &l).unwrap());
        let mut b = [0u8; 8];
        assert_eq!(o.get(libc::IPPROTO_TCP, libc::TCP_NODELAY, &mut b), Some(4));
        assert_eq!(i32::from_ne_bytes([b[0], b[1], b[2], b[3]]), 1);
        assert_eq!(
            o.get(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, &mut b),
            Some(4)
        );
        assert_eq!(i32::from_ne_bytes([b[0], b[1], b[2], b[3]]), 30);
        assert_eq!(o.get(libc::SOL_SOCKET, libc::SO_LINGER, &mut b), Some(8));
        assert_eq!(o.linger, (1, 0));
        // Linux's EINVALs: a short value, a keepalive count below 1, a short linger.
        let e = |r: io::Result<bool>| r.unwrap_err().raw_os_error();
        assert_eq!(
            e(o.set(libc::IPPROTO_TCP, libc::TCP_NODELAY, &[1])),
            Some(libc::EINVAL)
        );
        assert_eq!(
            e(o.set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, &i(0))),
            Some(libc::EINVAL)
        );
        assert_eq!(
            e(o.set(libc::SOL_SOCKET, libc::SO_LINGER, &i(1))),
            Some(libc::EINVAL)
        );
        // Accepted without effect; unknown options left to the engine.
        assert!(o.set(libc::IPPROTO_IP, libc::IP_TOS, &i(16)).unwrap());
        assert!(!o.set(libc::SOL_SOCKET, libc::SO_REUSEPORT, &i(1)).unwrap());
        assert_eq!(o.get(libc::SOL_SOCKET, libc::SO_REUSEPORT, &mut b), None);
        // A 1-byte buffer gets the first byte, as Linux truncates.
        let mut one = [0u8; 1];
        assert_eq!(
            o.get(libc::IPPROTO_TCP, libc::TCP_NODELAY, &mut one),
            Some(1)
        );
    }
}
