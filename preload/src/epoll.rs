//! epoll emulation.
//!
//! An application epoll fd is a real kernel epoll. Kernel fds go into it untouched. Offloaded
//! sockets live in a user-space interest list here; their readiness is computed from shared memory,
//! so a busy `epoll_wait` costs no syscall. To sleep, the instance owns a waiter slot whose eventfd
//! sits in the kernel epoll (data = [`COOKIE`]); the agent writes it when a socket in the list
//! changes while we sleep, so one kernel `epoll_wait` wakes for both worlds.
//!
//! A scan examines only what may have changed (docs/epoll-model.md, "Ready list"): the slots the
//! agent marked in this waiter's changed-slot bitmap (`shm_proto::changed`), entries added or
//! modified since the last scan, and entries that must be looked at again (level-triggered ones
//! that were reported). Everything else is known not to be reportable: only the agent makes a
//! socket more ready, and it marks the slot before it rings. When that cannot be trusted (agent
//! dead, after fork) the scan examines everything.

use crate::fdtable::{self, Entry};
use crate::interest::{Interest, List, Verdict};
use crate::util::SpinMutex;
use crate::{log, sys, util};
use crate::{readiness, sockref};
use core::sync::atomic::Ordering;
use shm_proto::wake;

/// `data` of our eventfd inside an application's epoll set.
pub(crate) const COOKIE: u64 = 0x736e_7374_6163_6b21; // "snstack!"
const MAX_EP: usize = 4096;
/// Longest time kernel fds of a busy mixed epoll set go unpolled.
const KPOLL_NS: u64 = 1_000_000;

pub(crate) struct Ep {
    kfd: i32,
    /// Kernel fds the application added (so we know whether the kernel set needs polling).
    kernel_fds: u32,
    waiter: Option<(usize, i32)>,
    list: List,
    /// When the kernel set was last polled while offloaded events were flowing.
    last_kpoll: u64,
    /// This epoll fd sits inside another epoll or poll set: its doorbell stays armed so the
    /// kernel sees it readable whenever one of its offloaded sockets is.
    nested: bool,
    /// Epoll fds of ours inside this one: (index, data word). A kernel report for one of them is
    /// checked against its real readiness (its doorbell may have rung for bytes read since).
    inners: Vec<(u32, u64)>,
}

static EPS: [SpinMutex<Option<Ep>>; MAX_EP] = [const { SpinMutex::new(None) }; MAX_EP];

/// The interest still names the socket it was registered for.
fn live(it: &Interest) -> bool {
    crate::process::channel_if_attached()
        .and_then(|c| c.socks.get(it.slot as usize))
        .is_some_and(|h| {
            h.refs.load(Ordering::Acquire) > 0 && h.inc.load(Ordering::Acquire) == it.inc
        })
}

/// The (slot, incarnation) an fd names now.
fn ident(fd: i32) -> Option<(u32, u32)> {
    let Entry::Sock(slot) = fdtable::get(fd) else {
        return None;
    };
    let h = crate::process::channel_if_attached()?
        .socks
        .get(slot as usize)?;
    Some((slot, h.inc.load(Ordering::Acquire)))
}

/// Starts tracking a new application epoll fd.
pub(crate) fn created(kfd: i32) {
    if crate::config::offload_disabled() || kfd < 0 {
        return;
    }
    for (i, e) in EPS.iter().enumerate() {
        if let Some(mut g) = e.try_lock() {
            if g.is_none() {
                *g = Some(Ep {
                    kfd,
                    kernel_fds: 0,
                    waiter: None,
                    list: List::new(),
                    last_kpoll: 0,
                    nested: false,
                    inners: Vec::new(),
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
        if let Some(c) = crate::process::channel_if_attached() {
            for (_, it) in ep.list.iter() {
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
            if let Entry::Epoll(inner) = fdtable::get(fd) {
                if fd != epfd {
                    // An epoll fd of ours goes into (or out of) another epoll set.
                    // SAFETY: forwarding the application's arguments to libc.
                    let r = unsafe { crate::real::epoll_ctl(epfd, op, fd, ev) };
                    if r != 0 {
                        // SAFETY: errno of this thread.
                        return Some(Err(unsafe { *libc::__errno_location() }));
                    }
                    let data = if ev.is_null() {
                        0
                    } else {
                        // SAFETY: non-null application epoll_event.
                        unsafe { core::ptr::read_unaligned(ev) }.u64
                    };
                    if let Entry::Epoll(outer) = fdtable::get(epfd) {
                        if let Some(e) = EPS[outer as usize].lock().as_mut() {
                            e.inners.retain(|&(i, _)| i != inner);
                            match op {
                                libc::EPOLL_CTL_ADD => {
                                    e.kernel_fds += 1;
                                    e.inners.push((inner, data));
                                }
                                libc::EPOLL_CTL_MOD => e.inners.push((inner, data)),
                                _ => e.kernel_fds = e.kernel_fds.saturating_sub(1),
                            }
                        }
                    }
                    if op != libc::EPOLL_CTL_DEL {
                        arm_nested(inner);
                    }
                    return Some(Ok(0));
                }
            }
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
    let s = match sockref::sock(slot) {
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
    let cur = ident(fd);
    // Drop entries of this slot left by a socket that is gone (closed without EPOLL_CTL_DEL, the
    // slot reused since). Stale entries elsewhere are dropped when a scan meets them.
    prune(&mut ep.list, slot);
    let pos = cur.and_then(|(sl, inc)| ep.list.find(fd, sl, inc));
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
                match add_waiter(s.c, ep.kfd) {
                    Ok(w) => ep.waiter = Some(w),
                    Err(e) => return Some(Err(e)),
                }
            }
            let nested = ep.nested;
            ep.list.insert(Interest {
                fd,
                inc: cur.map(|c| c.1).unwrap_or(0),
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
            if nested {
                rearm(ep);
            }
            Some(Ok(0))
        }
        libc::EPOLL_CTL_MOD => {
            let Some(p) = pos else {
                return Some(Err(libc::ENOENT));
            };
            if events & excl != 0 || ep.list.get(p).is_some_and(|it| it.events & excl != 0) {
                return Some(Err(libc::EINVAL));
            }
            if let Some(it) = ep.list.get_mut(p) {
                it.events = events;
                it.data = data;
                it.snap = None;
                it.off = false;
            }
            // A modified entry reports its current level at the next scan.
            ep.list.enqueue(p);
            Some(Ok(0))
        }
        libc::EPOLL_CTL_DEL => {
            let Some(p) = pos else {
                return Some(Err(libc::ENOENT));
            };
            let Some(it) = ep.list.remove(p) else {
                return Some(Err(libc::ENOENT));
            };
            if let Some((w, _)) = ep.waiter {
                if !ep.list.has_slot(it.slot) {
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

/// Offloaded socket `fd` (`slot` incarnation `inc`) has become a kernel socket under the same
/// number (an offload rule, `tokernel.rs`): its registrations leave our interest lists for the
/// kernel epoll sets, with their events and data, as if the application had added the kernel
/// socket itself. Called after the number names the kernel socket. Returns how many
/// registrations moved, or the first errno the kernel gave (the others still move).
pub(crate) fn to_kernel(
    fd: i32,
    slot: u32,
    inc: u32,
    ctl: &shm_proto::SockCtl,
) -> Result<u32, i32> {
    // Only an instance whose waiter bit is set on the slot can hold it.
    let mask = ctl.host.0.waiter_mask.load(Ordering::Acquire);
    if mask == 0 {
        return Ok(0);
    }
    let (mut moved, mut err) = (0, None);
    for e in EPS.iter() {
        let mut g = e.lock();
        let Some(ep) = g.as_mut() else {
            continue;
        };
        if !ep.waiter.is_some_and(|(w, _)| mask & (1u64 << w) != 0) {
            continue;
        }
        while let Some(p) = ep.list.find(fd, slot, inc) {
            let Some(it) = ep.list.remove(p) else {
                break;
            };
            let excl = libc::EPOLLEXCLUSIVE as u32;
            // A one-shot registration that fired stays as disabled as the kernel allows: only
            // its flags go over (the kernel adds EPOLLERR|EPOLLHUP to any registration).
            let events = if it.off {
                it.events & (libc::EPOLLONESHOT as u32 | libc::EPOLLET as u32 | excl)
            } else {
                it.events
            };
            let mut ev = libc::epoll_event {
                events,
                u64: it.data,
            };
            // SAFETY: a valid epoll_event for the application's epoll fd and socket.
            let r = unsafe { crate::real::epoll_ctl(ep.kfd, libc::EPOLL_CTL_ADD, fd, &mut ev) };
            if r == 0 {
                ep.kernel_fds += 1;
                moved += 1;
            } else if err.is_none() {
                // SAFETY: errno of this thread.
                err = Some(unsafe { *libc::__errno_location() });
            }
        }
        if let Some((w, _)) = ep.waiter {
            if !ep.list.has_slot(slot) {
                ctl.host
                    .0
                    .waiter_mask
                    .fetch_and(!(1u64 << w), Ordering::AcqRel);
            }
        }
    }
    match err {
        Some(e) => Err(e),
        None => Ok(moved),
    }
}

/// Removes entries of `slot` that no longer name a live socket.
fn prune(list: &mut List, slot: u32) {
    loop {
        let stale = list
            .chain(slot)
            .find(|&p| list.get(p).is_some_and(|it| !live(it)));
        match stale {
            Some(p) => {
                list.remove(p);
            }
            None => return,
        }
    }
}

/// Collects ready offloaded sockets into `out`. Returns how many.
///
/// Examines the entries of slots the agent marked changed for this waiter, plus the entries
/// `List` keeps queued (added/modified, or to be seen again); everything when the bitmap cannot
/// be trusted. The per-entry logic is the one a full scan would apply; an entry leaves the queue
/// only when nothing but an agent change can make it reportable again.
fn scan(ep: &mut Ep, out: &mut [libc::epoll_event]) -> usize {
    if ep.list.is_empty() || out.is_empty() {
        return 0;
    }
    let Some(c) = crate::process::channel_if_attached() else {
        return 0;
    };
    let w = ep.waiter.map(|(w, _)| w);
    match w {
        // A dead agent changes every connection's readiness without marking anything.
        Some(w) if !c.is_dead() => {
            let list = &mut ep.list;
            c.region.take_changed(w, |slot| list.mark_slot(slot));
            // In the order readiness arose (SockState::stamp), not in slot or registration
            // order: a server must see connection 1's request before connection 2's when 1's
            // bytes came first, as Linux's ready list gives them.
            // The first touch of each changed socket: ask for the other lines that readiness
            // reads (the agent's RX producer and TX consumer lines) now, so that the misses of
            // the whole batch overlap (shm_proto::prefetch).
            list.order_queue(|slot| {
                c.region.sock(slot).map_or(0, |ctl| {
                    shm_proto::prefetch::read(&ctl.rx_prod);
                    shm_proto::prefetch::read(&ctl.tx_head);
                    ctl.state.0.stamp.load(Ordering::Relaxed)
                })
            });
        }
        _ => ep.list.mark_all(),
    }
    let cap = out.len();
    let mut k = 0;
    let always = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
    // Entries that name one socket (dup'd fds) see one readiness per scan, as Linux's ready
    // list gets both items from one wake-up: read apart, bytes arriving between the two reads
    // reported one and not the other (90-epoll-multi's dup.both, once under load). A slot's
    // entries sit next to each other in the queue (its chain is queued together, ordered by the
    // slot's stamp), so the last slot read is enough.
    let mut last: Option<(u32, u32)> = None;
    ep.list.scan(
        |it| {
            if it.off {
                return (Verdict::Done, false);
            }
            if !live(it) {
                return (Verdict::Stale, false);
            }
            let Ok(s) = sockref::sock(it.slot) else {
                return (Verdict::Done, false);
            };
            let r = match last {
                Some((slot, r)) if slot == it.slot => r,
                _ => {
                    let r = readiness::readiness(&s);
                    last = Some((it.slot, r));
                    r
                }
            };
            let want = r & (it.events | always);
            if want == 0 {
                if it.events & libc::EPOLLIN as u32 != 0 {
                    readiness::want_rx(&s, false);
                    // Bytes flow to another process holding the connection: keep asking (rate
                    // limited in want_rx), as a full scan would on every call.
                    if readiness::rx_elsewhere(&s) {
                        return (Verdict::Again, false);
                    }
                }
                return (Verdict::Done, false);
            }
            let et = it.events & libc::EPOLLET as u32 != 0;
            if et {
                let cur = readiness::edge_snapshot(&s);
                if it.snap == Some(cur) {
                    return (Verdict::Done, false);
                }
                it.snap = Some(cur);
            }
            // Level-triggered entries are reported while the level lasts: look again next time.
            // A new edge, or a re-armed ONESHOT, needs an agent change or EPOLL_CTL_MOD.
            let mut v = if et { Verdict::Done } else { Verdict::Again };
            if it.events & libc::EPOLLONESHOT as u32 != 0 {
                it.off = true;
                v = Verdict::Done;
            }
            readiness::prefetch_io(&s, want);
            out[k] = libc::epoll_event {
                events: want,
                u64: it.data,
            };
            k += 1;
            (v, k == cap)
        },
        |slot| {
            if let (Some(w), Some(ctl)) = (w, c.region.sock(slot)) {
                ctl.host
                    .0
                    .waiter_mask
                    .fetch_and(!(1u64 << w), Ordering::AcqRel);
            }
        },
    );
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
    let (kernel_fds, waiter, nested, inners) = {
        let g = slot.lock();
        let ep = g.as_ref()?;
        if ep.list.is_empty() && ep.inners.is_empty() {
            return None;
        }
        (ep.kernel_fds, ep.waiter, ep.nested, ep.inners.clone())
    };
    if max <= 0 {
        return Some(Err(libc::EINVAL));
    }
    if events.is_null() {
        return Some(Err(libc::EFAULT));
    }
    let is_empty = slot
        .lock()
        .as_ref()
        .map(|e| e.list.is_empty())
        .unwrap_or(true);
    if is_empty {
        return Some(wait_kernel_only(
            epfd, events, max, timeout_ms, sigmask, &inners,
        ));
    }
    if nested {
        // Our doorbell stays readable while armed-and-rung: drain it so the enclosing set does
        // not keep seeing this fd readable; `rearm` restores it when something is still ready.
        if let Some((_, efd)) = waiter {
            let mut b = [0u8; 8];
            let _ = sys::read(efd, &mut b);
        }
        let r = wait_inner(
            epfd, slot, kernel_fds, waiter, &inners, events, max, timeout_ms, sigmask,
        );
        if let Some(ep) = slot.lock().as_ref() {
            rearm(ep);
        }
        return r;
    }
    wait_inner(
        epfd, slot, kernel_fds, waiter, &inners, events, max, timeout_ms, sigmask,
    )
}

#[allow(clippy::too_many_arguments)]
fn wait_inner(
    epfd: i32,
    slot: &SpinMutex<Option<Ep>>,
    kernel_fds: u32,
    waiter: Option<(usize, i32)>,
    inners: &[(u32, u64)],
    events: *mut libc::epoll_event,
    max: i32,
    timeout_ms: i32,
    sigmask: *const libc::sigset_t,
) -> Option<Result<i32, i32>> {
    if max <= 0 {
        return Some(Err(libc::EINVAL));
    }
    if events.is_null() {
        return Some(Err(libc::EFAULT));
    }
    // SAFETY: the application passes `max` writable epoll_event entries.
    let out = unsafe { core::slice::from_raw_parts_mut(events, max as usize) };
    let c = crate::process::channel_if_attached()?;
    let start = sys::clock_ns();
    let deadline = if timeout_ms < 0 {
        u64::MAX
    } else {
        start + timeout_ms as u64 * 1_000_000
    };
    let efd = waiter.map(|(_, f)| f);
    // A handler that runs on this thread while we spin, scan or re-loop after a liveness wake-up
    // interrupts the call, as it would the kernel's sleep (epoll_wait is never restarted).
    let sig0 = crate::signals::snap();
    let mut iter = 0u32;
    let mut yielded = false;
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
                let m = filter_cookie(&mut out[n..], k as usize, efd);
                n += filter_nested(&mut out[n..], m, inners);
            }
        }
        if n > 0 {
            return Some(Ok(n as i32));
        }
        let now = sys::clock_ns();
        if timeout_ms == 0 || now >= deadline {
            return Some(Ok(0));
        }
        if crate::signals::since(sig0).is_some() {
            return Some(Err(libc::EINTR));
        }
        iter += 1;
        if now - start < c.spin_ns {
            core::hint::spin_loop();
            continue;
        }
        // Before sleeping, give the CPU to whoever is runnable here (the agent, the load
        // generator) a few times: work that arrives meanwhile is taken without a sleep and a
        // doorbell. A handler that ran meanwhile interrupts the call, as it would the kernel's
        // sleep (epoll_wait is never restarted).
        let yields = if yielded {
            0
        } else {
            crate::config::YIELDS.load(Ordering::Relaxed)
        };
        yielded = true;
        if yields > 0 {
            for _ in 0..yields {
                sys::sched_yield();
                if crate::signals::since(sig0).is_some() {
                    return Some(Err(libc::EINTR));
                }
                let n = match slot.lock().as_mut() {
                    Some(ep) => scan(ep, out),
                    None => 0,
                };
                if n > 0 {
                    return Some(Ok(n as i32));
                }
            }
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
        if crate::signals::since(sig0).is_some() {
            wake::retract(&wt.sleeping);
            return Some(Err(libc::EINTR));
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
        let m = filter_cookie(out, k as usize, efd);
        let mut n = filter_nested(out, m, inners);
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
/// What a forked child does to the epoll instances (see `process::atfork_child`, `fork_child`).
pub(crate) const AFTER_FORK: crate::process::ChildFixups = crate::process::ChildFixups {
    unlock: unlock_all_after_fork,
    forget: forget_all,
    rebind: rebind_after_fork,
};

pub(crate) fn forget_all() {
    for e in EPS.iter() {
        if let Some(ep) = e.lock().as_mut() {
            ep.list.clear();
            ep.waiter = None;
        }
    }
}

/// Forked child: locks held by the parent's other threads at fork time are free in the child.
pub(crate) fn unlock_all_after_fork() {
    for e in EPS.iter() {
        // SAFETY: called in the single-threaded child right after fork.
        unsafe { e.force_unlock() };
    }
}

/// Forked child with its own channel: each epoll instance that holds offloaded sockets gets a
/// waiter of the child's channel (its eventfd joins the kernel epoll, which the child shares with
/// the parent) and the interest bits in the child's region.
pub(crate) fn rebind_after_fork(c: &crate::channel::Channel) {
    for e in EPS.iter() {
        let mut g = e.lock();
        let Some(ep) = g.as_mut() else { continue };
        ep.waiter = None;
        if ep.list.is_empty() {
            continue;
        }
        match add_waiter(c, ep.kfd) {
            Ok(w) => {
                ep.waiter = Some(w);
                for it in ep.list.iter_mut() {
                    if let Some(ctl) = c.region.sock(it.slot) {
                        ctl.host
                            .0
                            .waiter_mask
                            .fetch_or(1u64 << w.0, Ordering::AcqRel);
                    }
                    it.snap = None;
                }
                // A new waiter and region: nothing marked so far can be trusted.
                ep.list.mark_all();
            }
            Err(_) => ep.list.clear(),
        }
    }
}

/// Takes a waiter slot and puts its eventfd (edge-triggered, data = COOKIE) into kernel epoll `kfd`.
fn add_waiter(c: &crate::channel::Channel, kfd: i32) -> Result<(usize, i32), i32> {
    let (w, efd) = c.alloc_waiter()?;
    let mut kev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLET) as u32,
        u64: COOKIE,
    };
    // SAFETY: adding our eventfd to the application's kernel epoll.
    let r = unsafe { crate::real::epoll_ctl(kfd, libc::EPOLL_CTL_ADD, efd, &mut kev) };
    if r != 0 {
        // SAFETY: errno of this thread.
        let e = unsafe { *libc::__errno_location() };
        if e != libc::EEXIST {
            c.free_waiter(w);
            return Err(e);
        }
    }
    Ok((w, efd))
}

/// True when a wait on this instance would report something now (no state changes).
fn peek_ready(ep: &Ep) -> bool {
    ep.list.iter().any(|(_, it)| {
        if it.off || !live(it) {
            return false;
        }
        let Ok(s) = sockref::sock(it.slot) else {
            return false;
        };
        let want =
            readiness::readiness(&s) & (it.events | (libc::EPOLLERR | libc::EPOLLHUP) as u32);
        want != 0
            && (it.events & libc::EPOLLET as u32 == 0
                || it.snap != Some(readiness::edge_snapshot(&s)))
    })
}

/// Nested instance: arm the doorbell for the next change and, if something is ready already, ring
/// it ourselves so the enclosing epoll/poll sees this fd readable.
fn rearm(ep: &Ep) {
    let (Some((w, efd)), Some(c)) = (ep.waiter, crate::process::channel_if_attached()) else {
        return;
    };
    let Some(wt) = c.region.waiter(w) else { return };
    wake::announce(&wt.sleeping);
    if peek_ready(ep) {
        let _ = sys::write(efd, &1u64.to_ne_bytes());
    }
}

/// An epoll fd went into another epoll or poll set (pitfall: events never arrived).
pub(crate) fn arm_nested(idx: u32) {
    if let Some(e) = EPS.get(idx as usize) {
        if let Some(ep) = e.lock().as_mut() {
            ep.nested = true;
            rearm(ep);
        }
    }
}

/// Is nested instance `idx` really readable? Its doorbell count may be stale (rung for bytes the
/// application has read since): then drain it and ask the kernel about its kernel fds alone.
pub(crate) fn nested_verify(idx: u32) -> bool {
    let Some(e) = EPS.get(idx as usize) else {
        return true;
    };
    let g = e.lock();
    let Some(ep) = g.as_ref() else { return true };
    if peek_ready(ep) {
        return true;
    }
    if let Some((_, efd)) = ep.waiter {
        let mut b = [0u8; 8];
        let _ = sys::read(efd, &mut b);
    }
    // The ring we just drained consumed the armed flag: arm again for the next change (this also
    // closes the race with a change that landed after the peek above).
    rearm(ep);
    if peek_ready(ep) {
        return true;
    }
    let kfd = ep.kfd;
    drop(g);
    sys::poll_one(kfd, libc::POLLIN, 0)
        .map(|r| r != 0)
        .unwrap_or(true)
}

/// Drops kernel reports of nested instances that are not really readable. Returns the new count.
fn filter_nested(out: &mut [libc::epoll_event], n: usize, inners: &[(u32, u64)]) -> usize {
    if inners.is_empty() {
        return n;
    }
    let mut w = 0;
    for r in 0..n {
        let e = out[r];
        if let Some(&(idx, _)) = inners.iter().find(|&&(_, d)| d == e.u64) {
            if !nested_verify(idx) {
                continue;
            }
        }
        out[w] = e;
        w += 1;
    }
    w
}

/// An epoll set whose only special members are nested epoll fds of ours: the kernel waits, and
/// reports of nested members are checked against their real readiness.
fn wait_kernel_only(
    epfd: i32,
    events: *mut libc::epoll_event,
    max: i32,
    timeout_ms: i32,
    sigmask: *const libc::sigset_t,
    inners: &[(u32, u64)],
) -> Result<i32, i32> {
    // SAFETY: the application passes `max` writable entries (checked non-null by the caller).
    let out = unsafe { core::slice::from_raw_parts_mut(events, max as usize) };
    let start = sys::clock_ns();
    loop {
        let left = if timeout_ms < 0 {
            -1
        } else {
            let spent = ((sys::clock_ns() - start) / 1_000_000) as i64;
            (timeout_ms as i64 - spent).max(0) as i32
        };
        // SAFETY: the application's buffer and sigmask.
        let k = unsafe { crate::real::epoll_pwait(epfd, out.as_mut_ptr(), max, left, sigmask) };
        if k < 0 {
            // SAFETY: errno of this thread.
            return Err(unsafe { *libc::__errno_location() });
        }
        let n = filter_nested(out, k as usize, inners);
        if n > 0 || k == 0 || left == 0 {
            return Ok(n as i32);
        }
    }
}
