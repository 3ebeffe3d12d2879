//! epoll emulation.
//!
//! An application epoll fd is a real kernel epoll. Kernel fds go into it untouched. Offloaded
//! sockets live in a user-space interest list here; their readiness is computed from shared memory,
//! so a busy `epoll_wait` costs no syscall. To sleep, the instance owns a waiter slot whose eventfd
//! sits in the kernel epoll (data = [`COOKIE`]); the agent writes it when a socket in the list
//! changes while we sleep, so one kernel `epoll_wait` wakes for both worlds.

use crate::fdtable::{self, Entry};
use crate::ops;
use crate::util::SpinMutex;
use crate::{log, sys, util};
use core::sync::atomic::Ordering;
use shm_proto::wake;

/// `data` of our eventfd inside an application's epoll set.
pub(crate) const COOKIE: u64 = 0x736e_7374_6163_6b21; // "snstack!"
const MAX_EP: usize = 4096;
/// Longest time kernel fds of a busy mixed epoll set go unpolled.
const KPOLL_NS: u64 = 1_000_000;

struct Interest {
    fd: i32,
    slot: u32,
    events: u32,
    data: u64,
    /// EPOLLET: fingerprint at the last report (None = report the current level once).
    snap: Option<u64>,
    /// EPOLLONESHOT fired: disabled until EPOLL_CTL_MOD.
    off: bool,
}

pub(crate) struct Ep {
    kfd: i32,
    /// Kernel fds the application added (so we know whether the kernel set needs polling).
    kernel_fds: u32,
    waiter: Option<(usize, i32)>,
    list: Vec<Interest>,
    rr: usize,
    /// When the kernel set was last polled while offloaded events were flowing.
    last_kpoll: u64,
}

static EPS: [SpinMutex<Option<Ep>>; MAX_EP] = [const { SpinMutex::new(None) }; MAX_EP];

/// Starts tracking a new application epoll fd.
pub(crate) fn created(kfd: i32) {
    if crate::offload_disabled() || kfd < 0 {
        return;
    }
    for (i, e) in EPS.iter().enumerate() {
        if let Some(mut g) = e.try_lock() {
            if g.is_none() {
                *g = Some(Ep {
                    kfd,
                    kernel_fds: 0,
                    waiter: None,
                    list: Vec::new(),
                    rr: 0,
                    last_kpoll: 0,
                });
                drop(g);
                fdtable::set_epoll(kfd, i as u32);
                return;
            }
        }
    }
    log!(
        util::WARN,
        "more than {MAX_EP} epoll instances: epoll fd {kfd} cannot hold offloaded sockets"
    );
}

/// The application closed the epoll fd.
pub(crate) fn release(idx: u32) {
    let Some(slot) = EPS.get(idx as usize) else {
        return;
    };
    let ep = slot.lock().take();
    if let Some(ep) = ep {
        if let Some(c) = crate::channel_if_attached() {
            for it in &ep.list {
                if let Some(ctl) = c.region.sock(it.slot) {
                    if let Some((w, _)) = ep.waiter {
                        ctl.host
                            .0
                            .waiter_mask
                            .fetch_and(!(1u64 << w), Ordering::AcqRel);
                    }
                }
            }
            if let Some((w, efd)) = ep.waiter {
                // The eventfd stays registered with the agent for the next user of the slot.
                let _ = efd;
                c.free_waiter(w);
            }
        }
    }
}

fn untracked_epoll_error(epfd: i32) -> i32 {
    if sys::fcntl(epfd, libc::F_GETFD, 0).is_err() {
        libc::EBADF
    } else {
        libc::EINVAL
    }
}

/// `epoll_ctl` on an offloaded socket. Returns `None` to pass the call to libc.
pub(crate) fn ctl(
    epfd: i32,
    op: i32,
    fd: i32,
    ev: *mut libc::epoll_event,
) -> Option<Result<i32, i32>> {
    let slot = match fdtable::get(fd) {
        Entry::Sock(s) => s,
        Entry::Internal => return Some(Err(libc::EBADF)),
        _ => {
            // A kernel fd: count it so epoll_wait knows to poll the kernel set.
            if let Entry::Epoll(idx) = fdtable::get(epfd) {
                if fd == epfd {
                    return Some(Err(libc::EINVAL));
                }
                // SAFETY: forwarding the application's arguments to libc.
                let r = unsafe { crate::real::epoll_ctl(epfd, op, fd, ev) };
                if r == 0 {
                    if let Some(e) = EPS[idx as usize].lock().as_mut() {
                        match op {
                            libc::EPOLL_CTL_ADD => e.kernel_fds += 1,
                            libc::EPOLL_CTL_DEL => e.kernel_fds = e.kernel_fds.saturating_sub(1),
                            _ => {}
                        }
                    }
                    return Some(Ok(0));
                }
                // SAFETY: errno of this thread.
                return Some(Err(unsafe { *libc::__errno_location() }));
            }
            return None;
        }
    };
    let Entry::Epoll(idx) = fdtable::get(epfd) else {
        return Some(Err(untracked_epoll_error(epfd)));
    };
    let s = match ops::sock(slot) {
        Ok(s) => s,
        Err(e) => return Some(Err(e)),
    };
    if op != libc::EPOLL_CTL_DEL && ev.is_null() {
        return Some(Err(libc::EFAULT));
    }
    let (events, data) = if ev.is_null() {
        (0, 0)
    } else {
        // SAFETY: non-null application pointer to an epoll_event (packed on x86_64).
        let e = unsafe { core::ptr::read_unaligned(ev) };
        (e.events, e.u64)
    };
    let mut g = EPS[idx as usize].lock();
    let Some(ep) = g.as_mut() else {
        return Some(Err(libc::EBADF));
    };
    // Drop entries whose fd was closed or now names something else.
    ep.list
        .retain(|it| fdtable::get(it.fd) == Entry::Sock(it.slot));
    let pos = ep.list.iter().position(|it| it.fd == fd);
    let excl = libc::EPOLLEXCLUSIVE as u32;
    match op {
        libc::EPOLL_CTL_ADD => {
            if pos.is_some() {
                return Some(Err(libc::EEXIST));
            }
            if events & excl != 0
                && events
                    & !(excl
                        | (libc::EPOLLIN
                            | libc::EPOLLOUT
                            | libc::EPOLLERR
                            | libc::EPOLLHUP
                            | libc::EPOLLWAKEUP
                            | libc::EPOLLET) as u32)
                    != 0
            {
                return Some(Err(libc::EINVAL));
            }
            if ep.waiter.is_none() {
                match s.c.alloc_waiter() {
                    Ok((w, efd)) => {
                        let mut kev = libc::epoll_event {
                            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
                            u64: COOKIE,
                        };
                        // SAFETY: adding our eventfd to the application's kernel epoll.
                        let r = unsafe {
                            crate::real::epoll_ctl(ep.kfd, libc::EPOLL_CTL_ADD, efd, &mut kev)
                        };
                        if r != 0 {
                            // SAFETY: errno of this thread.
                            let e = unsafe { *libc::__errno_location() };
                            if e != libc::EEXIST {
                                s.c.free_waiter(w);
                                return Some(Err(e));
                            }
                        }
                        ep.waiter = Some((w, efd));
                    }
                    Err(e) => return Some(Err(e)),
                }
            }
            ep.list.push(Interest {
                fd,
                slot,
                events,
                data,
                snap: None,
                off: false,
            });
            if let Some((w, _)) = ep.waiter {
                s.ctl
                    .host
                    .0
                    .waiter_mask
                    .fetch_or(1u64 << w, Ordering::AcqRel);
            }
            Some(Ok(0))
        }
        libc::EPOLL_CTL_MOD => {
            let Some(p) = pos else {
                return Some(Err(libc::ENOENT));
            };
            if events & excl != 0 || ep.list[p].events & excl != 0 {
                return Some(Err(libc::EINVAL));
            }
            let it = &mut ep.list[p];
            it.events = events;
            it.data = data;
            it.snap = None;
            it.off = false;
            Some(Ok(0))
        }
        libc::EPOLL_CTL_DEL => {
            let Some(p) = pos else {
                return Some(Err(libc::ENOENT));
            };
            let it = ep.list.swap_remove(p);
            if let Some((w, _)) = ep.waiter {
                if !ep.list.iter().any(|o| o.slot == it.slot) {
                    s.ctl
                        .host
                        .0
                        .waiter_mask
                        .fetch_and(!(1u64 << w), Ordering::AcqRel);
                }
            }
            Some(Ok(0))
        }
        _ => Some(Err(libc::EINVAL)),
    }
}

/// Collects ready offloaded sockets into `out`. Returns how many.
fn scan(ep: &mut Ep, out: &mut [libc::epoll_event]) -> usize {
    let n = ep.list.len();
    if n == 0 || out.is_empty() {
        return 0;
    }
    let mut k = 0;
    let start = ep.rr % n;
    let mut stale = false;
    for j in 0..n {
        let i = (start + j) % n;
        let it = &mut ep.list[i];
        if it.off {
            continue;
        }
        if fdtable::get(it.fd) != Entry::Sock(it.slot) {
            stale = true;
            continue;
        }
        let Ok(s) = ops::sock(it.slot) else { continue };
        let r = ops::readiness(&s);
        let want = r & (it.events | (libc::EPOLLERR | libc::EPOLLHUP) as u32);
        if want == 0 {
            continue;
        }
        if it.events & libc::EPOLLET as u32 != 0 {
            let cur = ops::edge_snapshot(&s);
            if it.snap == Some(cur) {
                continue;
            }
            it.snap = Some(cur);
        }
        if it.events & libc::EPOLLONESHOT as u32 != 0 {
            it.off = true;
        }
        out[k] = libc::epoll_event {
            events: want,
            u64: it.data,
        };
        k += 1;
        if k == out.len() {
            ep.rr = i + 1;
            break;
        }
    }
    if stale {
        if let Some(c) = crate::channel_if_attached() {
            let w = ep.waiter.map(|(w, _)| w);
            ep.list.retain(|it| {
                let keep = fdtable::get(it.fd) == Entry::Sock(it.slot);
                if !keep {
                    if let (Some(w), Some(ctl)) = (w, c.region.sock(it.slot)) {
                        ctl.host
                            .0
                            .waiter_mask
                            .fetch_and(!(1u64 << w), Ordering::AcqRel);
                    }
                }
                keep
            });
        }
    }
    k
}

/// Removes our eventfd's entry from kernel results, draining it. Returns the new count.
fn filter_cookie(out: &mut [libc::epoll_event], n: usize, efd: Option<i32>) -> usize {
    let mut w = 0;
    for r in 0..n {
        let e = out[r];
        if e.u64 == COOKIE {
            // Registered edge-triggered: every agent write is a new edge, so no drain syscall.
            let _ = efd;
            continue;
        }
        out[w] = e;
        w += 1;
    }
    w
}

/// `epoll_wait`/`epoll_pwait` on a tracked epoll fd that holds offloaded sockets. `None`: pass.
pub(crate) fn wait(
    epfd: i32,
    events: *mut libc::epoll_event,
    max: i32,
    timeout_ms: i32,
    sigmask: *const libc::sigset_t,
) -> Option<Result<i32, i32>> {
    let Entry::Epoll(idx) = fdtable::get(epfd) else {
        return None;
    };
    let slot = &EPS[idx as usize];
    let (kernel_fds, waiter) = {
        let g = slot.lock();
        let ep = g.as_ref()?;
        if ep.list.is_empty() {
            return None;
        }
        (ep.kernel_fds, ep.waiter)
    };
    if max <= 0 {
        return Some(Err(libc::EINVAL));
    }
    if events.is_null() {
        return Some(Err(libc::EFAULT));
    }
    // SAFETY: the application passes `max` writable epoll_event entries.
    let out = unsafe { core::slice::from_raw_parts_mut(events, max as usize) };
    let c = crate::channel_if_attached()?;
    let start = sys::clock_ns();
    let deadline = if timeout_ms < 0 {
        u64::MAX
    } else {
        start + timeout_ms as u64 * 1_000_000
    };
    let efd = waiter.map(|(_, f)| f);
    let mut iter = 0u32;
    loop {
        let mut kpoll = false;
        let mut n = {
            let mut g = slot.lock();
            match g.as_mut() {
                Some(ep) => {
                    let n = scan(ep, out);
                    // The kernel set is looked at (a syscall) only for a non-blocking call, or
                    // at most every KPOLL_NS while offloaded events flow or we spin: a sleep
                    // below blocks in the kernel epoll, which reports kernel fds anyway.
                    if kernel_fds > 0 && n < out.len() {
                        let now = sys::clock_ns();
                        if (iter == 0 && timeout_ms == 0)
                            || now.saturating_sub(ep.last_kpoll) > KPOLL_NS
                        {
                            ep.last_kpoll = now;
                            kpoll = true;
                        }
                    }
                    n
                }
                None => return Some(Err(libc::EBADF)),
            }
        };
        if kpoll {
            // SAFETY: the remaining entries of the application's buffer.
            let k = unsafe {
                crate::real::epoll_wait(epfd, out[n..].as_mut_ptr(), (out.len() - n) as i32, 0)
            };
            if k > 0 {
                n += filter_cookie(&mut out[n..], k as usize, efd);
            }
        }
        if n > 0 {
            return Some(Ok(n as i32));
        }
        let now = sys::clock_ns();
        if timeout_ms == 0 || now >= deadline {
            return Some(Ok(0));
        }
        iter += 1;
        if now - start < c.spin_ns {
            core::hint::spin_loop();
            continue;
        }
        // Sleep: announce, re-check, block in the kernel epoll (wakes for kernel fds and our bell).
        let (w, _) = waiter?;
        let wt = c.region.waiter(w)?;
        wake::announce(&wt.sleeping);
        let n = {
            let mut g = slot.lock();
            match g.as_mut() {
                Some(ep) => scan(ep, out),
                None => 0,
            }
        };
        if n > 0 {
            wake::retract(&wt.sleeping);
            return Some(Ok(n as i32));
        }
        let left_ms = if deadline == u64::MAX {
            -1
        } else {
            (deadline - now).div_ceil(1_000_000).min(i32::MAX as u64) as i32
        };
        // Bound the sleep so a dead agent is noticed.
        let t = if !(0..=1000).contains(&left_ms) {
            1000
        } else {
            left_ms
        };
        // SAFETY: the application's buffer and sigmask.
        let k = unsafe {
            crate::real::epoll_pwait(epfd, out.as_mut_ptr(), out.len() as i32, t, sigmask)
        };
        wake::retract(&wt.sleeping);
        if k < 0 {
            // SAFETY: errno of this thread.
            return Some(Err(unsafe { *libc::__errno_location() }));
        }
        let mut n = filter_cookie(out, k as usize, efd);
        if n < out.len() {
            let mut g = slot.lock();
            if let Some(ep) = g.as_mut() {
                n += scan(ep, &mut out[n..]);
            }
        }
        if n > 0 {
            return Some(Ok(n as i32));
        }
        if k == 0 && t == 1000 {
            // Notices a dead agent; the sockets then report ERR|HUP on the next scan.
            let _ = c.check_alive();
        }
    }
}

/// Forked child: forget offloaded interests (they belong to the parent's channel).
pub(crate) fn forget_all() {
    for e in EPS.iter() {
        // SAFETY: single-threaded child right after fork; no lock is really held.
        unsafe { e.force_unlock() };
        if let Some(ep) = e.lock().as_mut() {
            ep.list.clear();
            ep.waiter = None;
        }
    }
}
