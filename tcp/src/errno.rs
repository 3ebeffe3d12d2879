//! Linux errno values the engine reports (the agent hands them to applications unchanged). The
//! crate has no libc dependency: these are the x86-64/arm64 Linux numbers.

pub type Errno = i32;

pub const EPERM: Errno = 1;
pub const ENOENT: Errno = 2;
pub const EAGAIN: Errno = 11;
pub const ENOMEM: Errno = 12;
pub const EBUSY: Errno = 16;
pub const EINVAL: Errno = 22;
pub const EPIPE: Errno = 32;
pub const ENOPROTOOPT: Errno = 92;
pub const EOPNOTSUPP: Errno = 95;
pub const EAFNOSUPPORT: Errno = 97;
pub const EADDRINUSE: Errno = 98;
pub const EADDRNOTAVAIL: Errno = 99;
pub const ENETUNREACH: Errno = 101;
pub const ECONNABORTED: Errno = 103;
pub const ECONNRESET: Errno = 104;
pub const ENOBUFS: Errno = 105;
pub const EISCONN: Errno = 106;
pub const ENOTCONN: Errno = 107;
pub const ETIMEDOUT: Errno = 110;
pub const ECONNREFUSED: Errno = 111;
pub const EHOSTUNREACH: Errno = 113;
pub const EALREADY: Errno = 114;
pub const EINPROGRESS: Errno = 115;
