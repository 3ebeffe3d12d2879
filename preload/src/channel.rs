//! The host endpoint of the channel: attach, command/completion calls, doorbells and waits.
//!
//! One [`Channel`] per process, created at the first offloadable `socket()` (never at load time:
//! a program that opens no TCP socket never talks to the agent). Threads share it: the command
//! ring's producer sits behind a spin lock held only for the push; completions are delivered by
//! whichever waiting thread holds the event-ring try-lock, into per-request cells.

use crate::sys;
use crate::util::{SpinMutex, DEBUG, WARN};
use crate::{log, sock::HostSock};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use shm_proto::attach::{self, AttachError};
use shm_proto::msg::{Hello, HELLO_ATTACH, HELLO_ATTACH_CHILD};
use shm_proto::{wake, Cmd, Consumer, Evt, Producer, Region, Request, MAX_WAITERS};

const CELLS: usize = 256;

struct CellSlot {
    state: AtomicU32,
    gen: AtomicU32,
    evt: UnsafeCell<Evt>,
}

const CELL_FREE: u32 = 0;
const CELL_WAITING: u32 = 1;
const CELL_DONE: u32 = 2;

pub(crate) struct Channel {
    pub(crate) region: Region,
    ctl_fd: i32,
    bell_fd: i32,
    cmd: SpinMutex<Producer<Cmd>>,
    evt: SpinMutex<Consumer<Evt>>,
    cells: Box<[CellSlot]>,
    pub(crate) socks: Box<[HostSock]>,
    pub(crate) spin_ns: u64,
    dead: AtomicBool,
    ctl_lock: SpinMutex<()>,
    /// Waiter slots in use (bit i = waiter i).
    waiters_used: AtomicU64,
    /// Eventfd of each registered waiter, -1 when none.
    waiter_fd: [AtomicI32; MAX_WAITERS],
    /// Files opened with the agent for `sendfile` by reference (fileref.rs).
    pub(crate) files: crate::fileref::Files,
}

// SAFETY: cells are handed between threads through `state` with Release/Acquire; everything else
// is atomics, locks, or the shared region.
unsafe impl Sync for Channel {}
// SAFETY: as above.
unsafe impl Send for Channel {}

/// The library's system calls for the shared attach handshake (`shm_proto::attach`): raw
/// syscalls, never the libc symbols we interpose, and every fd it opens hidden from the
/// application (moved high, marked internal in the fd table).
struct RawSys;

impl attach::Sys for RawSys {
    fn seqpacket(&mut self) -> Result<i32, i32> {
        let fd = sys::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0)?;
        Ok(hide_fd(fd as i32))
    }

    fn connect_unix(&mut self, fd: i32, path: &[u8]) -> Result<(), i32> {
        sys::connect_unix(fd, path).map(|_| ())
    }

    unsafe fn sendmsg(
        &mut self,
        fd: i32,
        msg: *const libc::msghdr,
        flags: i32,
    ) -> Result<usize, i32> {
        // SAFETY: the caller's contract (`Sys::sendmsg`) is `sys::sendmsg`'s.
        unsafe { sys::sendmsg(fd, msg, flags) }
    }

    unsafe fn recvmsg(
        &mut self,
        fd: i32,
        msg: *mut libc::msghdr,
        flags: i32,
    ) -> Result<usize, i32> {
        // SAFETY: the caller's contract (`Sys::recvmsg`) is `sys::recvmsg`'s.
        unsafe { sys::recvmsg(fd, msg, flags) }
    }

    fn mmap_shared(&mut self, fd: i32, len: usize) -> Result<*mut u8, i32> {
        sys::mmap_shared(fd, len).map(|p| p as *mut u8)
    }

    fn munmap(&mut self, base: *mut u8, len: usize) {
        let _ = sys::munmap(base, len);
    }

    fn close(&mut self, fd: i32) {
        crate::fdtable::clear(fd);
        let _ = sys::close(fd);
    }
}

/// Moves an fd of ours above the range applications usually use and marks it internal.
pub(crate) fn hide_fd(fd: i32) -> i32 {
    let hi = match sys::fcntl(fd, libc::F_DUPFD_CLOEXEC, 700) {
        Ok(h) => {
            let _ = sys::close(fd);
            h as i32
        }
        Err(_) => fd,
    };
    crate::fdtable::set_internal(hi);
    hi
}

impl Channel {
    pub(crate) fn attach(path: &[u8], spin_ns_env: Option<u64>) -> Result<Channel, AttachError> {
        Self::attach_as(
            path,
            spin_ns_env,
            Hello::new(HELLO_ATTACH, sys::getpid() as u64),
        )
    }

    /// Attaches as the child of a fork, presenting the parent's fork ticket. The agent gives the
    /// child a region whose slots mirror the parent's, so the inherited fd table stays valid.
    pub(crate) fn attach_child(
        path: &[u8],
        spin_ns_env: Option<u64>,
        secret: u64,
    ) -> Result<Channel, AttachError> {
        Self::attach_as(path, spin_ns_env, Hello::new(HELLO_ATTACH_CHILD, secret))
    }

    fn attach_as(
        path: &[u8],
        spin_ns_env: Option<u64>,
        hello: Hello,
    ) -> Result<Channel, AttachError> {
        // The mapping is never unmapped: the channel lives for the rest of the process.
        let attach::Attached {
            ctl: fd,
            bell,
            region,
            ..
        } = attach::attach(&mut RawSys, path, hello)?;
        let bell = hide_fd(bell);
        let geo = region.geometry();
        let cells = (0..CELLS)
            .map(|_| CellSlot {
                state: AtomicU32::new(CELL_FREE),
                gen: AtomicU32::new(1),
                evt: UnsafeCell::new(Evt::default()),
            })
            .collect();
        let socks = (0..geo.max_sockets).map(|_| HostSock::new()).collect();
        Ok(Channel {
            cmd: SpinMutex::new(region.cmd_producer()),
            evt: SpinMutex::new(region.evt_consumer()),
            region,
            ctl_fd: fd,
            bell_fd: bell,
            cells,
            socks,
            spin_ns: spin_ns_env.unwrap_or(geo.spin_ns as u64),
            dead: AtomicBool::new(false),
            ctl_lock: SpinMutex::new(()),
            waiters_used: AtomicU64::new(0),
            waiter_fd: [const { AtomicI32::new(-1) }; MAX_WAITERS],
            files: crate::fileref::Files::new(),
        })
    }

    pub(crate) fn is_dead(&self) -> bool {
        if self.dead.load(Ordering::Relaxed) {
            return true;
        }
        if self.region.header().dead.0.load(Ordering::Relaxed) != 0 {
            self.mark_dead("the agent dropped this process's channel");
            return true;
        }
        false
    }

    fn mark_dead(&self, why: &str) {
        if !self.dead.swap(true, Ordering::SeqCst) {
            log!(
                crate::util::ERROR,
                "channel lost: {why}; offloaded sockets now fail"
            );
        }
    }

    /// Checks the control socket for EOF (agent gone). Costs a syscall: slow paths only.
    pub(crate) fn check_alive(&self) -> bool {
        if self.is_dead() {
            return false;
        }
        // Another thread mid-exchange with the agent (waiter registration) owns the socket and
        // its pending reply: the agent is evidently alive.
        let Some(_g) = self.ctl_lock.try_lock() else {
            return true;
        };
        match sys::poll_one(self.ctl_fd, libc::POLLIN, 0) {
            Ok(rev) if rev & libc::POLLNVAL as usize != 0 => {
                self.mark_dead("the control connection was closed under us");
                false
            }
            Ok(rev) if rev & (libc::POLLHUP | libc::POLLERR | libc::POLLIN) as usize != 0 => {
                // Look without consuming: only end of stream or an error means the agent is gone.
                let mut b = [0u8; 1];
                match sys::recv_peek(self.ctl_fd, &mut b) {
                    Ok(0) => {
                        self.mark_dead("agent closed the control connection");
                        false
                    }
                    Ok(_) | Err(libc::EAGAIN) | Err(libc::EINTR) => true,
                    Err(_) => {
                        self.mark_dead("the control connection failed");
                        false
                    }
                }
            }
            Ok(_) => true,
            Err(libc::EBADF) => {
                self.mark_dead("the control connection was closed under us");
                false
            }
            Err(_) => true,
        }
    }

    pub(crate) fn ring_agent(&self) {
        if wake::must_ring(&self.region.header().agent.0.sleeping) {
            let _ = sys::write(self.bell_fd, &1u64.to_ne_bytes());
        }
    }

    /// Whether `sendfile` may post file references on this channel (the agent's backend sends
    /// from files itself, and neither the user nor the agent turned it off).
    pub(crate) fn file_refs(&self) -> bool {
        self.region.header().features.load(Ordering::Relaxed) & shm_proto::FEAT_FILE_REFS != 0
            && crate::config::FILE_REFS.load(Ordering::Relaxed) != 0
            && self.files.usable()
    }

    /// The agent's id for the regular file `fd` (`st` its `fstat`), opened with the agent on
    /// first use (fileref.rs). `None`: copy instead.
    pub(crate) fn file_id(&self, fd: i32, st: &libc::stat) -> Option<u32> {
        self.files.id(
            st.st_dev,
            st.st_ino,
            || {
                let req = Request::FileOpen {
                    fd,
                    dev: st.st_dev,
                    ino: st.st_ino,
                };
                match self.call(0, req) {
                    Ok(ev) if ev.result >= 0 => u32::try_from(ev.result).map_err(|_| 0),
                    Ok(ev) => Err(i32::try_from(-ev.result).unwrap_or(libc::EINVAL)),
                    Err(_) => Err(0),
                }
            },
            |id| {
                let _ = self.post(0, Request::FileClose { id });
            },
        )
    }

    /// Posts a request that wants no completion (`slot` is ignored by slotless requests).
    pub(crate) fn post(&self, slot: u32, req: Request) -> Result<(), i32> {
        self.push(req.to_cmd(slot))
    }

    fn push(&self, cmd: Cmd) -> Result<(), i32> {
        loop {
            if self.is_dead() {
                return Err(libc::ECONNRESET);
            }
            let pushed = {
                let mut p = self.cmd.lock();
                match p.push(cmd) {
                    Ok(v) => v,
                    Err(_) => {
                        drop(p);
                        self.mark_dead("command ring corrupt");
                        return Err(libc::ECONNRESET);
                    }
                }
            };
            self.ring_agent();
            if pushed {
                return Ok(());
            }
            // Ring full: the agent is behind. Wait for it to consume.
            self.wait_region(|| self.cmd.lock().free().map(|f| f > 0).unwrap_or(true))?;
        }
    }

    /// Sends a request and waits for its completion.
    pub(crate) fn call(&self, slot: u32, req: Request) -> Result<Evt, i32> {
        let idx = self.alloc_cell();
        let r = self.call_in(idx, req.to_cmd(slot));
        if r.is_ok() {
            self.free_cell(idx);
        }
        r
    }

    /// A socket option call whose value travels in the option buffer cell of the request
    /// (`CF_OPTBUF`): `set` is copied in before, up to `get.len()` bytes are copied out after.
    /// `req` builds the request for the cell it is given (the cell is the request's own).
    pub(crate) fn call_opt(
        &self,
        slot: u32,
        req: impl FnOnce(usize) -> Request,
        set: &[u8],
        get: &mut [u8],
    ) -> Result<Evt, i32> {
        let idx = self.alloc_cell();
        let Some(cell) = self.region.opt_cell(idx) else {
            self.free_cell(idx);
            return Err(libc::EINVAL);
        };
        let n = set.len().min(shm_proto::OPT_SIZE);
        // SAFETY: the cell is OPT_SIZE bytes of our region and is ours while the request is.
        unsafe { core::ptr::copy_nonoverlapping(set.as_ptr(), cell, n) };
        let r = match self.call_in(idx, req(idx).to_cmd(slot)) {
            Ok(r) => r,
            Err(e) => {
                // The call failed (a dead channel, an interrupted wait): the value (a kTLS key,
                // maybe) does not stay in the shared region either.
                // SAFETY: as above; the cell was ours for this request.
                unsafe { core::ptr::write_bytes(cell, 0, n) };
                return Err(e);
            }
        };
        let mut m = 0;
        if r.result > 0 {
            m = (r.result as usize).min(get.len()).min(shm_proto::OPT_SIZE);
            // SAFETY: as above; the agent wrote the value before completing.
            unsafe { core::ptr::copy_nonoverlapping(cell, get.as_mut_ptr(), m) };
        }
        // Option values may be keys (kTLS's `SOL_TLS`): none stays in the shared region.
        // SAFETY: as above; the cell is still ours.
        unsafe { core::ptr::write_bytes(cell, 0, n.max(m)) };
        self.free_cell(idx);
        Ok(r)
    }

    fn call_in(&self, idx: usize, mut cmd: Cmd) -> Result<Evt, i32> {
        let cell = &self.cells[idx];
        let gen = cell.gen.load(Ordering::Relaxed);
        cmd.tag = ((gen as u64) << 32) | (idx as u64 + 1);
        if let Err(e) = self.push(cmd) {
            self.free_cell(idx);
            return Err(e);
        }
        let r = self.wait_region(|| {
            self.drain_events();
            cell.state.load(Ordering::Acquire) == CELL_DONE
        });
        if let Err(e) = r {
            // The completion may still arrive; retire the cell's generation so it is ignored.
            self.free_cell(idx);
            return Err(e);
        }
        // SAFETY: CELL_DONE was published with Release after the event was written; we own the cell.
        let evt = unsafe { *cell.evt.get() };
        // The caller frees the cell (after reading its option buffer, if any).
        Ok(evt)
    }

    fn alloc_cell(&self) -> usize {
        loop {
            for (i, c) in self.cells.iter().enumerate() {
                if c.state.load(Ordering::Relaxed) == CELL_FREE
                    && c.state
                        .compare_exchange(
                            CELL_FREE,
                            CELL_WAITING,
                            Ordering::Acquire,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                {
                    return i;
                }
            }
            crate::util::sched_yield();
        }
    }

    fn free_cell(&self, idx: usize) {
        let c = &self.cells[idx];
        c.gen.fetch_add(1, Ordering::Relaxed);
        c.state.store(CELL_FREE, Ordering::Release);
    }

    /// Delivers queued completions into their cells (whoever holds the try-lock does it).
    fn drain_events(&self) {
        let Some(mut ev) = self.evt.try_lock() else {
            return;
        };
        let mut delivered = false;
        loop {
            match ev.pop() {
                Ok(Some(e)) => {
                    let idx = (e.tag & 0xffff_ffff) as usize;
                    let gen = (e.tag >> 32) as u32;
                    if idx == 0 || idx > CELLS {
                        continue;
                    }
                    let c = &self.cells[idx - 1];
                    if c.gen.load(Ordering::Relaxed) == gen
                        && c.state.load(Ordering::Acquire) == CELL_WAITING
                    {
                        // SAFETY: the cell is WAITING with our generation: its owner reads `evt` only
                        // after it sees CELL_DONE (Release below).
                        unsafe { *c.evt.get() = e };
                        c.state.store(CELL_DONE, Ordering::Release);
                        delivered = true;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    drop(ev);
                    self.mark_dead("event ring corrupt");
                    return;
                }
            }
        }
        drop(ev);
        if delivered {
            let h = self.region.header();
            if wake::bump(&h.region_seq.0, &h.region_waiters.0) {
                let _ = sys::futex_wake(&h.region_seq.0, i32::MAX);
            }
        }
    }

    /// Spin, then sleep on the region futex, until `cond` holds. Fails when the agent is gone.
    fn wait_region(&self, mut cond: impl FnMut() -> bool) -> Result<(), i32> {
        let start = sys::clock_ns();
        let mut n = 0u32;
        loop {
            if cond() {
                return Ok(());
            }
            n += 1;
            if n % 64 == 0 && sys::clock_ns() - start > self.spin_ns {
                break;
            }
            core::hint::spin_loop();
        }
        let h = self.region.header();
        loop {
            let seen = wake::prepare_wait(&h.region_seq.0, &h.region_waiters.0);
            if cond() {
                wake::finish_wait(&h.region_waiters.0);
                return Ok(());
            }
            let r = sys::futex_wait(
                &h.region_seq.0,
                seen,
                Some(crate::config::LIVENESS_NS.load(Ordering::Relaxed)),
            );
            wake::finish_wait(&h.region_waiters.0);
            if cond() {
                return Ok(());
            }
            if r == Err(libc::ETIMEDOUT) && !self.check_alive() {
                return Err(libc::ECONNRESET);
            }
        }
    }

    /// Allocates a waiter slot with a registered eventfd. Returns (index, eventfd).
    pub(crate) fn alloc_waiter(&self) -> Result<(usize, i32), i32> {
        loop {
            let used = self.waiters_used.load(Ordering::Acquire);
            if used == u64::MAX {
                log!(
                    WARN,
                    "more than {MAX_WAITERS} epoll instances/pollers with offloaded sockets"
                );
                return Err(libc::ENOMEM);
            }
            let i = (!used).trailing_zeros() as usize;
            if self
                .waiters_used
                .compare_exchange(used, used | (1 << i), Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            let fd = self.waiter_fd[i].load(Ordering::Acquire);
            if fd >= 0 {
                // A reused doorbell may hold rings meant for its previous user: start clean.
                let mut b = [0u8; 8];
                let _ = sys::read(fd, &mut b);
                return Ok((i, fd));
            }
            let efd = match sys::eventfd(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) {
                Ok(f) => hide_fd(f as i32),
                Err(e) => {
                    self.waiters_used.fetch_and(!(1 << i), Ordering::AcqRel);
                    return Err(e);
                }
            };
            let ok = {
                let _g = self.ctl_lock.lock();
                attach::register_waiter(&mut RawSys, self.ctl_fd, i as u64, efd) == Ok(0)
            };
            if !ok {
                crate::fdtable::clear(efd);
                let _ = sys::close(efd);
                self.waiters_used.fetch_and(!(1 << i), Ordering::AcqRel);
                return Err(libc::ENOMEM);
            }
            log!(DEBUG, "waiter {i} registered (eventfd {efd})");
            self.waiter_fd[i].store(efd, Ordering::Release);
            return Ok((i, efd));
        }
    }

    pub(crate) fn free_waiter(&self, i: usize) {
        self.waiters_used.fetch_and(!(1u64 << i), Ordering::AcqRel);
    }
}

impl Channel {
    /// True when the process holds any offloaded socket.
    pub(crate) fn has_sockets(&self) -> bool {
        self.socks
            .iter()
            .any(|h| h.refs.load(Ordering::Relaxed) > 0)
    }

    /// Forked child: takes over the host-side state of the parent's slots.
    pub(crate) fn inherit_from(&self, parent: &Channel) {
        for (i, (n, p)) in self.socks.iter().zip(parent.socks.iter()).enumerate() {
            n.copy_from(p);
            if n.refs.load(Ordering::Relaxed) > 0 {
                if let Some(ctl) = self.region.sock(i as u32) {
                    // What the agent reads of the socket's urgent-data settings (urgent.rs):
                    // the claimed slot starts from zero in the child's region.
                    ctl.host
                        .0
                        .owner
                        .store(n.owner.load(Ordering::Relaxed), Ordering::Release);
                    let inline = u32::from(n.oob_inline.load(Ordering::Relaxed));
                    ctl.host.0.oob_inline.store(inline, Ordering::Relaxed);
                }
            }
        }
    }
}
