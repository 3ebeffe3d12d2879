//! poll/ppoll/select/pselect over sets that mix offloaded sockets with kernel fds.
//!
//! Offloaded readiness comes from shared memory; kernel fds are polled with timeout 0 while we spin.
//! To sleep, the call borrows a waiter slot: its bit goes into every offloaded socket's
//! `waiter_mask`, its eventfd joins the kernel `ppoll` set, and the agent rings it on any change.

use crate::fdtable::{self, Entry};
use crate::{readiness, sockref, sys};
use core::sync::atomic::Ordering;
use shm_proto::wake;

fn offloaded_revents(fd: i32, events: i16) -> Option<i16> {
    match fdtable::get(fd) {
        Entry::Sock(slot) => {
            let Ok(s) = sockref::sock(slot) else {
                return Some(libc::POLLNVAL);
            };
            let r = readiness::readiness(&s) as i16;
            if events & libc::POLLIN != 0 && r & libc::POLLIN == 0 {
                readiness::want_rx(&s, false);
            }
            Some(r & (events | libc::POLLERR | libc::POLLHUP))
        }
        Entry::Internal => Some(libc::POLLNVAL),
        _ => None,
    }
}

/// The core loop. `timeout_ns < 0`: infinite. `None`: no offloaded fd, pass to libc.
pub(crate) fn poll(
    fds: &mut [libc::pollfd],
    timeout_ns: i64,
    sigmask: *const libc::sigset_t,
) -> Option<Result<i32, i32>> {
    if !fds
        .iter()
        .any(|p| matches!(fdtable::get(p.fd), Entry::Sock(_) | Entry::Internal))
    {
        if !fds
            .iter()
            .any(|p| matches!(fdtable::get(p.fd), Entry::Epoll(_)))
        {
            return None;
        }
        return Some(poll_epolls(fds, timeout_ns, sigmask));
    }
    let c = crate::process::channel_if_attached()?;
    // An epoll fd of ours inside a poll set: keep its doorbell armed (see epoll::arm_nested).
    for p in fds.iter() {
        if let Entry::Epoll(idx) = fdtable::get(p.fd) {
            crate::epoll::arm_nested(idx);
        }
    }
    // Kernel part of the set (+1 spare entry for our eventfd when sleeping).
    let mut kidx: Vec<usize> = Vec::new();
    let mut kset: Vec<libc::pollfd> = Vec::new();
    for (i, p) in fds.iter().enumerate() {
        if p.fd >= 0 && matches!(fdtable::get(p.fd), Entry::None | Entry::Epoll(_)) {
            kidx.push(i);
            kset.push(libc::pollfd {
                fd: p.fd,
                events: p.events,
                revents: 0,
            });
        }
    }
    let start = sys::clock_ns();
    let sig0 = crate::signals::snap();
    let deadline = if timeout_ns < 0 {
        u64::MAX
    } else {
        start.saturating_add(timeout_ns as u64)
    };
    let mut iter = 0u32;
    let collect = |fds: &mut [libc::pollfd], kset: &[libc::pollfd]| -> i32 {
        let mut n = 0;
        for p in fds.iter_mut() {
            p.revents = 0;
            if p.fd < 0 {
                continue;
            }
            if let Some(r) = offloaded_revents(p.fd, p.events) {
                p.revents = r;
            }
        }
        for (j, &i) in kidx.iter().enumerate() {
            fds[i].revents = kset[j].revents;
            verify_epoll(&mut fds[i]);
        }
        for p in fds.iter() {
            if p.revents != 0 {
                n += 1;
            }
        }
        n
    };
    loop {
        for k in kset.iter_mut() {
            k.revents = 0;
        }
        if !kset.is_empty() && iter % 16 == 0 {
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: kset is a valid pollfd array.
            let r = unsafe { sys::ppoll(kset.as_mut_ptr(), kset.len(), &ts, core::ptr::null()) };
            if let Err(e) = r {
                return Some(Err(e));
            }
        }
        let n = collect(fds, &kset);
        if n > 0 {
            return Some(Ok(n));
        }
        let now = sys::clock_ns();
        if timeout_ns == 0 || now >= deadline {
            return Some(Ok(0));
        }
        // A handler that ran on this thread since the call began interrupts it, as it would the
        // kernel's sleep (poll and select are never restarted).
        if crate::signals::since(sig0).is_some() {
            return Some(Err(libc::EINTR));
        }
        iter += 1;
        if now - start < c.spin_ns {
            core::hint::spin_loop();
            continue;
        }
        // Sleep with a borrowed waiter.
        let (w, efd) = match c.alloc_waiter() {
            Ok(x) => x,
            Err(e) => return Some(Err(e)),
        };
        let bit = 1u64 << w;
        let mut slots: Vec<u32> = Vec::new();
        for p in fds.iter() {
            if let Entry::Sock(slot) = fdtable::get(p.fd) {
                if let Some(ctl) = c.region.sock(slot) {
                    ctl.host.0.waiter_mask.fetch_or(bit, Ordering::AcqRel);
                    slots.push(slot);
                }
            }
        }
        let wt = c.region.waiter(w)?;
        wake::announce(&wt.sleeping);
        let mut kk = kset.clone();
        for k in kk.iter_mut() {
            k.revents = 0;
        }
        let n = collect(fds, &kk);
        let mut result = None;
        if n > 0 {
            result = Some(Ok(n));
        } else if crate::signals::since(sig0).is_some() {
            result = Some(Err(libc::EINTR));
        } else {
            kk.push(libc::pollfd {
                fd: efd,
                events: libc::POLLIN,
                revents: 0,
            });
            let left = deadline.saturating_sub(now).min(1_000_000_000);
            let ts = libc::timespec {
                tv_sec: (left / 1_000_000_000) as _,
                tv_nsec: (left % 1_000_000_000) as _,
            };
            // SAFETY: kk is a valid pollfd array; sigmask is the application's (or null).
            let r = unsafe { sys::ppoll(kk.as_mut_ptr(), kk.len(), &ts, sigmask) };
            if let Some(me) = kk.pop() {
                if me.revents != 0 {
                    let mut b = [0u8; 8];
                    let _ = sys::read(efd, &mut b);
                }
            }
            match r {
                Err(e) => result = Some(Err(e)),
                Ok(k) => {
                    let n = collect(fds, &kk);
                    if n > 0 {
                        result = Some(Ok(n));
                    } else if k == 0 && left == 1_000_000_000 {
                        // Our one-second cap expired with nothing to report: is the agent alive?
                        let _ = c.check_alive();
                    }
                }
            }
        }
        wake::retract(&wt.sleeping);
        for slot in slots {
            if let Some(ctl) = c.region.sock(slot) {
                ctl.host.0.waiter_mask.fetch_and(!bit, Ordering::AcqRel);
            }
        }
        c.free_waiter(w);
        if let Some(r) = result {
            return Some(r);
        }
    }
}

const FD_BITS: usize = 8 * core::mem::size_of::<libc::c_ulong>();

fn fd_isset(set: *const libc::fd_set, fd: i32) -> bool {
    if set.is_null() {
        return false;
    }
    let w = set as *const libc::c_ulong;
    // SAFETY: fd < nfds <= FD_SETSIZE, inside the application's fd_set.
    unsafe { *w.add(fd as usize / FD_BITS) & (1 << (fd as usize % FD_BITS)) != 0 }
}

fn fd_set_bit(set: *mut libc::fd_set, fd: i32, on: bool) {
    if set.is_null() {
        return;
    }
    let w = set as *mut libc::c_ulong;
    // SAFETY: as above.
    unsafe {
        let p = w.add(fd as usize / FD_BITS);
        if on {
            *p |= 1 << (fd as usize % FD_BITS);
        } else {
            *p &= !(1 << (fd as usize % FD_BITS));
        }
    }
}

/// select/pselect through the poll core. `None`: no offloaded fd in the sets.
pub(crate) fn select(
    nfds: i32,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    timeout_ns: i64,
    sigmask: *const libc::sigset_t,
) -> Option<Result<i32, i32>> {
    if nfds < 0 {
        return Some(Err(libc::EINVAL));
    }
    let nfds = nfds.min(libc::FD_SETSIZE as i32);
    let mut any = false;
    let mut pfds: Vec<libc::pollfd> = Vec::new();
    for fd in 0..nfds {
        let (rr, ww, ee) = (fd_isset(r, fd), fd_isset(w, fd), fd_isset(e, fd));
        if !(rr || ww || ee) {
            continue;
        }
        if matches!(fdtable::get(fd), Entry::Sock(_) | Entry::Epoll(_)) {
            any = true;
        }
        let mut ev = 0;
        if rr {
            ev |= libc::POLLIN;
        }
        if ww {
            ev |= libc::POLLOUT;
        }
        if ee {
            ev |= libc::POLLPRI;
        }
        pfds.push(libc::pollfd {
            fd,
            events: ev,
            revents: 0,
        });
    }
    if !any {
        return None;
    }
    let res = poll(&mut pfds, timeout_ns, sigmask)?;
    let n = match res {
        Err(e) => return Some(Err(e)),
        Ok(n) => n,
    };
    let _ = n;
    let mut count = 0;
    for p in &pfds {
        if p.revents & libc::POLLNVAL != 0 {
            return Some(Err(libc::EBADF));
        }
    }
    for p in &pfds {
        let rd = p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
            && p.events & libc::POLLIN != 0;
        let wr = p.revents & (libc::POLLOUT | libc::POLLERR) != 0 && p.events & libc::POLLOUT != 0;
        let ex = p.revents & libc::POLLPRI != 0 && p.events & libc::POLLPRI != 0;
        fd_set_bit(r, p.fd, rd);
        fd_set_bit(w, p.fd, wr);
        fd_set_bit(e, p.fd, ex);
        count += rd as i32 + wr as i32 + ex as i32;
    }
    Some(Ok(count))
}

/// A reported epoll fd of ours: keep POLLIN only if it is really readable (see
/// `epoll::nested_verify`).
fn verify_epoll(p: &mut libc::pollfd) {
    if p.revents & libc::POLLIN != 0 {
        if let Entry::Epoll(idx) = fdtable::get(p.fd) {
            if !crate::epoll::nested_verify(idx) {
                p.revents &= !libc::POLLIN;
            }
        }
    }
}

/// A poll set with epoll fds of ours but no offloaded socket: the kernel waits; epoll members'
/// reports are verified.
fn poll_epolls(
    fds: &mut [libc::pollfd],
    timeout_ns: i64,
    sigmask: *const libc::sigset_t,
) -> Result<i32, i32> {
    for p in fds.iter() {
        if let Entry::Epoll(idx) = fdtable::get(p.fd) {
            crate::epoll::arm_nested(idx);
        }
    }
    let start = sys::clock_ns();
    loop {
        let left = if timeout_ns < 0 {
            None
        } else {
            Some((timeout_ns as u64).saturating_sub(sys::clock_ns() - start))
        };
        let ts = left.map(|l| libc::timespec {
            tv_sec: (l / 1_000_000_000) as _,
            tv_nsec: (l % 1_000_000_000) as _,
        });
        let tsp = ts
            .as_ref()
            .map(|t| t as *const libc::timespec)
            .unwrap_or(core::ptr::null());
        // SAFETY: the application's pollfd array and sigmask.
        let r = unsafe { sys::ppoll(fds.as_mut_ptr(), fds.len(), tsp, sigmask) }?;
        let mut n = 0;
        for p in fds.iter_mut() {
            verify_epoll(p);
            if p.revents != 0 {
                n += 1;
            }
        }
        if n > 0 || r == 0 || left == Some(0) {
            return Ok(n);
        }
    }
}

/// `select` with its `timeval` timeout: checked as Linux does, and updated on return with the time
/// not slept (Linux's behaviour). None: no offloaded fd in the sets, libc's select runs.
// time_t/suseconds_t widths differ between targets; the casts are for the 32-bit ones.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn select_timeval(
    n: i32,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    t: *mut libc::timeval,
) -> Option<Result<i32, i32>> {
    let ns = if t.is_null() {
        -1
    } else {
        // SAFETY: non-null application timeval.
        let tv = unsafe { *t };
        if tv.tv_sec < 0 || tv.tv_usec < 0 {
            return Some(Err(libc::EINVAL));
        }
        (tv.tv_sec as i64)
            .saturating_mul(1_000_000_000)
            .saturating_add(tv.tv_usec as i64 * 1000)
    };
    let start = sys::clock_ns();
    let res = select(n, r, w, e, ns, core::ptr::null());
    if res.is_some() && !t.is_null() && ns >= 0 {
        // Linux updates the timeout with the time not slept.
        let left = (ns - (sys::clock_ns() - start) as i64).max(0);
        // SAFETY: non-null application timeval.
        unsafe {
            (*t).tv_sec = (left / 1_000_000_000) as _;
            (*t).tv_usec = ((left % 1_000_000_000) / 1000) as _;
        }
    }
    res
}
