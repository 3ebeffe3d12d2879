//! Offload rules at `bind`, `listen` and `connect` (rules.rs): a socket a rule keeps on the kernel
//! leaves the agent there, under the same fd number.
//!
//! `socket()` cannot know the ports, so it made an offloaded socket (a shadow fd and a slot).
//! When a rule says `kernel`:
//!
//! ```text
//!  k = socket(domain, SOCK_STREAM | nonblock)      a real kernel socket
//!  options the application set (optlog.rs), SO_RCVTIMEO/SO_SNDTIMEO   replayed on k
//!  dup3(k, fd, cloexec of fd)                      for every fd naming the slot (dup'ed ones too)
//!  epoll registrations of fd                       moved into the kernel epoll sets (epoll.rs)
//!  fd table entries cleared, slot closed in the agent (waited for: its port is free again)
//!  bind to the address the agent held, if any      (a rule decided at listen or connect)
//! ```
//! then the call itself goes to libc on the kernel socket (`R::Pass`): its result and errno are
//! the kernel's. The number the application holds never changes.
//!
//! Not followed: a process that shares the socket (forked before bind/connect) keeps it
//! offloaded in that process.

use core::sync::atomic::Ordering;

use crate::ops::{self, R};
use crate::rules::{self, Action, Sa};
use crate::sockref::{lookup, S};
use crate::{epoll, fdtable, log, sys, util};
use libc::{sockaddr, socklen_t};
use shm_proto::{Request, WireAddr, SF_CONNECTED, SF_CONNECTING, SF_LISTENING};

/// `bind()`: server rules, on the address being bound.
pub(crate) fn bind(fd: i32, a: *const sockaddr, l: socklen_t) -> R {
    if rules::moves_sockets() {
        if let Some(Ok(s)) = lookup(fd) {
            // SAFETY: the application's pointer/length pair; read_addr checks both.
            let sa = unsafe { ops::read_addr(a, l) }
                .ok()
                .and_then(|w| Sa::from_wire(&w));
            if let Some(sa) = sa {
                if rules::rules().server(&sa) == Action::Kernel {
                    return moved(fd, &s, None);
                }
            }
        }
    }
    ops::bind(fd, a, l)
}

/// `listen()`: server rules, on the address the socket holds (a socket listening without
/// `bind`, or bound to port 0, gets its port here).
pub(crate) fn listen(fd: i32, backlog: i32) -> R {
    if rules::rules().has_server_kernel() {
        if let Some(Ok(s)) = lookup(fd) {
            if s.ctl.state.0.flags.load(Ordering::Acquire) & SF_LISTENING == 0 {
                if let Ok(w) = local_addr(&s) {
                    if Sa::from_wire(&w)
                        .is_some_and(|sa| rules::rules().server(&sa) == Action::Kernel)
                    {
                        return moved(fd, &s, held(w));
                    }
                }
            }
        }
    }
    ops::listen(fd, backlog)
}

/// `connect()`: client rules, on the remote address and (when a rule names one) the local one.
pub(crate) fn connect(fd: i32, a: *const sockaddr, l: socklen_t) -> R {
    if rules::moves_sockets() {
        if let Some(Ok(s)) = lookup(fd) {
            let busy = SF_CONNECTED | SF_CONNECTING | SF_LISTENING;
            // SAFETY: the application's pointer/length pair; read_addr checks both.
            let remote = unsafe { ops::read_addr(a, l) }
                .ok()
                .and_then(|w| Sa::from_wire(&w));
            if let (Some(remote), true) = (
                remote,
                s.ctl.state.0.flags.load(Ordering::Acquire) & busy == 0,
            ) {
                let mut local: Option<WireAddr> = None;
                let act = rules::rules().client(&remote, || {
                    let w = local_addr(&s).ok()?;
                    local = Some(w);
                    Sa::from_wire(&w)
                });
                if act == Action::Kernel {
                    let local = local.or_else(|| local_addr(&s).ok());
                    return moved(fd, &s, local.and_then(held));
                }
            }
        }
    }
    ops::connect(fd, a, l)
}

/// The address the agent's socket holds (any:0 when unbound).
fn local_addr(s: &S) -> Result<WireAddr, i32> {
    match s.c.call(s.slot, Request::GetSockName) {
        Ok(e) if e.result >= 0 => Ok(e.addr()),
        Ok(e) => Err((-e.result) as i32),
        Err(e) => Err(e),
    }
}

/// `w` if it is a binding the kernel socket must take over (a port or a specific address).
fn held(w: WireAddr) -> Option<WireAddr> {
    (w.port != 0 || w.addr.iter().any(|&b| b != 0)).then_some(w)
}

fn moved(fd: i32, s: &S, rebind: Option<WireAddr>) -> R {
    match to_kernel(fd, s, rebind) {
        Ok(()) => R::Pass,
        Err(e) => R::Err(e),
    }
}

/// Moves the socket `fd` names to a new kernel socket under the same number(s).
fn to_kernel(fd: i32, s: &S, rebind: Option<WireAddr>) -> Result<(), i32> {
    let domain = s.hs.domain.load(Ordering::Relaxed);
    let nb = if s.hs.nonblock.load(Ordering::Relaxed) {
        libc::SOCK_NONBLOCK
    } else {
        0
    };
    let k = sys::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | nb, 0)? as i32;
    replay(fd, k, s);
    let inc = s.hs.inc.load(Ordering::Acquire);
    let mut moved = 0u32;
    let mut one = |f: i32| -> Result<(), i32> {
        let cloexec =
            sys::fcntl(f, libc::F_GETFD, 0).map_or(true, |v| v as i32 & libc::FD_CLOEXEC != 0);
        sys::dup3(k, f, if cloexec { libc::O_CLOEXEC } else { 0 })?;
        fdtable::clear(f);
        moved += 1;
        if let Err(e) = epoll::to_kernel(f, s.slot, inc, s.ctl) {
            log!(
                util::ERROR,
                "rules: fd {f} moved to a kernel socket but an epoll set refused it (errno {e}): that set no longer reports it"
            );
        }
        Ok(())
    };
    let first = one(fd);
    if first.is_ok() && s.hs.refs.load(Ordering::Acquire) > 1 {
        // dup'ed numbers name the same socket: they move with it.
        fdtable::for_each_sock(|f, slot| {
            if slot == s.slot {
                if let Err(e) = one(f) {
                    log!(
                        util::ERROR,
                        "rules: fd {f}, a dup of fd {fd}, could not follow it to the kernel (errno {e})"
                    );
                }
            }
        });
    }
    let _ = sys::close(k);
    first?;
    if moved > 0 && s.hs.refs.fetch_sub(moved, Ordering::AcqRel) == moved {
        // Waited for, so the port the agent held is free before the kernel socket binds it.
        let _ = s.c.call(s.slot, Request::Close);
    }
    if let Some(w) = rebind {
        if let Err(e) = sys::bind_wire(fd, &w) {
            log!(
                util::ERROR,
                "rules: fd {fd} moved to a kernel socket could not bind the port {} the agent held (errno {e})",
                u16::from_be(w.port)
            );
            return Err(e);
        }
    }
    log!(util::INFO, "rules: fd {fd} is a kernel socket now");
    Ok(())
}

/// The options the application set on the offloaded socket, onto kernel socket `k`.
fn replay(fd: i32, k: i32, s: &S) {
    s.hs.opts.each(|o| {
        let r = match o.kind {
            crate::optlog::Kind::Str => {
                let req = Request::GetSockOpt {
                    level: o.level,
                    name: o.name,
                    len: shm_proto::MAX_OPTVAL,
                    cell: None,
                };
                match s.c.call(s.slot, req) {
                    Ok(e) if e.result >= 0 => sys::setsockopt(k, o.level, o.name, e.value()),
                    Ok(e) => Err((-e.result) as i32),
                    Err(e) => Err(e),
                }
            }
            _ => {
                let (b, n) = o.bytes();
                sys::setsockopt(k, o.level, o.name, &b[..n])
            }
        };
        if let Err(e) = r {
            log!(
                util::WARN,
                "rules: fd {fd}: socket option (level {}, name {}) not carried to its kernel socket (errno {e})",
                o.level,
                o.name
            );
        }
    });
    if let Some((level, name)) = s.hs.opts.lost() {
        log!(
            util::WARN,
            "rules: fd {fd}: socket option (level {level}, name {name}) not kept (nor any later unknown one): not on its kernel socket"
        );
    }
    for (name, t) in [
        (libc::SO_RCVTIMEO, &s.hs.rcvtimeo),
        (libc::SO_SNDTIMEO, &s.hs.sndtimeo),
    ] {
        let ns = t.load(Ordering::Relaxed);
        if ns == 0 {
            continue;
        }
        let tv = libc::timeval {
            tv_sec: (ns / 1_000_000_000) as _,
            tv_usec: ((ns % 1_000_000_000) / 1000) as _,
        };
        // SAFETY: a timeval is plain bytes.
        let b = unsafe {
            core::slice::from_raw_parts(
                &tv as *const libc::timeval as *const u8,
                core::mem::size_of::<libc::timeval>(),
            )
        };
        let _ = sys::setsockopt(k, libc::SOL_SOCKET, name, b);
    }
}
