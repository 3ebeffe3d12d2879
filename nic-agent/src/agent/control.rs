//! The control plane (shell side of [`Core`]): the UNIX listener, attach (region and doorbells
//! over SCM_RIGHTS), waiter registration, stats queries, a process's exit (its control
//! connection's EOF), and the pidfds of fork tickets' children.

use super::*;

impl<B: Backend> Agent<B> {
    pub(super) fn on_listener(&mut self) {
        loop {
            match sys::accept_unix(self.listener.as_raw_fd()) {
                Ok(fd) => {
                    if self.pending.len() >= MAX_PENDING_CONNS {
                        warn!("too many control connections without a hello; refusing one");
                        continue;
                    }
                    let id = self.next_conn & ID_MASK;
                    self.next_conn = self.next_conn.wrapping_add(1);
                    if let Err(e) = self.epoll.add(fd.as_raw_fd(), sys::EV_IN, KIND_CONN | id) {
                        warn!("control connection: epoll_ctl: {e}");
                        continue;
                    }
                    self.pending.insert(id, fd);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::ECONNABORTED)) => {
                    continue
                }
                Err(e) => {
                    warn!("accepting a control connection: {e}");
                    return;
                }
            }
        }
    }

    pub(super) fn reply(fd: RawFd, status: i32, len: u64) {
        if let Err(e) = sys::send_fds(fd, &Reply::new(status as u32, len).encode(), &[]) {
            debug!("control reply: {e}");
        }
    }

    /// Answers `HELLO_STATS`: the report `arg` asks for (`STATS_TEXT`, `STATS_JSON`, `STATS_JSON_SOCKETS`), after
    /// its length, in datagrams of at most `client::CHUNK` bytes.
    pub(super) fn send_stats(&mut self, fd: RawFd, arg: u64) {
        let mut snap = self.core.snapshot();
        snap.spin_us = self.spin.effective_budget().as_micros() as u64;
        snap.spin_contended = self.spin.contended_windows;
        snap.slow_yields = self.spin.slow_yields;
        snap.realtime = u64::from(self.spin.realtime());
        snap.host_polls = self.host_poll.polls;
        snap.host_polls_empty = self.host_poll.empty_polls;
        if arg == STATS_JSON_SOCKETS {
            snap.tls_socks = self.core.tls_sockets();
        }
        let text = match arg {
            STATS_TEXT => snap.render(),
            STATS_JSON | STATS_JSON_SOCKETS => {
                let (user, system) = sys::cpu_time_us().unwrap_or_default();
                let facts = AgentFacts {
                    pid: std::process::id(),
                    cpu_user_us: user,
                    cpu_system_us: system,
                    uptime_ms: self.started.elapsed().as_millis() as u64,
                };
                crate::stats::render_json(&snap, &facts, &sys::proc_comm, Instant::now())
            }
            _ => return Self::reply(fd, libc::EINVAL, 0),
        };
        if text.len() > 128 * 1024 {
            // The socket is non-blocking: make room for the whole report in its send buffer.
            if let Err(e) = sys::grow_sndbuf(fd, text.len() + 64 * 1024) {
                debug!("stats reply: SO_SNDBUF: {e}");
            }
        }
        Self::reply(fd, 0, text.len() as u64);
        for chunk in text.as_bytes().chunks(nic_agent::client::CHUNK) {
            if let Err(e) = sys::send_fds(fd, chunk, &[]) {
                debug!("stats reply: {e}");
                return;
            }
        }
    }

    /// A message on a control connection that has not attached yet.
    pub(super) fn on_pending(&mut self, id: u64) {
        let Some(fd) = self.pending.get(&id).map(|f| f.as_raw_fd()) else {
            return;
        };
        let mut buf = [0u8; 64];
        let (n, _fds, trunc) = match sys::recv_fds(fd, &mut buf) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                debug!("control connection: {e}");
                self.pending.remove(&id);
                return;
            }
        };
        if n == 0 {
            self.pending.remove(&id);
            return;
        }
        let hello = (!trunc).then(|| Hello::decode(&buf[..n])).flatten();
        let Some(h) = hello else {
            warn!("control connection: malformed hello, closing it");
            self.pending.remove(&id);
            return;
        };
        if h.version != VERSION {
            warn!(
                "control connection speaks channel version {}, we speak {VERSION}",
                h.version
            );
            Self::reply(fd, libc::EPROTONOSUPPORT, 0);
            self.pending.remove(&id);
            return;
        }
        match h.kind {
            HELLO_ATTACH => {
                if let Some(fd) = self.pending.remove(&id) {
                    self.attach(fd, None);
                }
            }
            HELLO_ATTACH_CHILD => {
                if let Some(fd) = self.pending.remove(&id) {
                    self.attach(fd, Some(h.arg));
                }
            }
            HELLO_STATS => {
                self.send_stats(fd, h.arg);
                self.pending.remove(&id);
            }
            _ => Self::reply(fd, libc::EINVAL, 0),
        }
    }

    /// A new session: a plain attach, or (with a ticket secret) the child of a fork taking over
    /// the sockets of its parent under the same slot numbers.
    pub(super) fn attach(&mut self, fd: OwnedFd, secret: Option<u64>) {
        let raw = fd.as_raw_fd();
        let cred = match sys::peer_cred(raw) {
            Ok(c) => Cred {
                pid: c.pid,
                uid: c.uid,
                gid: c.gid,
            },
            Err(e) => {
                warn!("attach: SO_PEERCRED: {e}");
                Self::reply(raw, sys::errno_of(&e), 0);
                return;
            }
        };
        let ticket = match secret.map(|s| self.core.ticket_for_child(s, cred)) {
            None => None,
            Some(Ok(tid)) => Some(tid),
            Some(Err(e)) => {
                Self::reply(raw, e, 0);
                return;
            }
        };
        let geo = self.cfg.geometry;
        let made =
            Channel::create(geo).and_then(|(chan, memfd)| Ok((chan, memfd, sys::eventfd()?)));
        let (chan, memfd, bell) = match made {
            Ok(x) => x,
            Err(e) => {
                warn!(pid = cred.pid, "attach: creating the region: {e}");
                Self::reply(raw, sys::errno_of(&e), 0);
                return;
            }
        };
        let total = chan.region().offsets().total;
        let now = Instant::now();
        let (sid, inherited) = self.core.attach(Box::new(chan), cred, ticket, now);
        let reply = Reply::new(0, total).encode();
        let sent = sys::send_fds(raw, &reply, &[memfd.as_raw_fd(), bell.as_raw_fd()]);
        drop(memfd);
        let reg = sent.and_then(|_| {
            self.epoll
                .modify(raw, sys::EV_IN, KIND_CTL | u64::from(sid))
                .and_then(|_| {
                    self.epoll
                        .add(bell.as_raw_fd(), sys::EV_IN, KIND_BELL | u64::from(sid))
                })
        });
        if let Err(e) = reg {
            warn!(pid = cred.pid, "attach: sending the region: {e}");
            // As if the process exited at once: what it inherited is released.
            self.core.detach(sid, now);
            self.perform(false);
            return;
        }
        self.conns.insert(
            sid,
            Conn {
                ctl: fd,
                bell,
                pid: cred.pid,
                placement: sys::cpu_placement(cred.pid),
                placed_at: now,
            },
        );
        info!(
            pid = cred.pid,
            uid = cred.uid,
            gid = cred.gid,
            session = sid,
            region = total,
            inherited,
            child = secret.is_some(),
            "process attached"
        );
        self.perform(false);
    }

    /// A message (or EOF) on an attached process's control connection.
    pub(super) fn on_ctl(&mut self, sid: u32) {
        for _ in 0..16 {
            let Some(fd) = self.conns.get(&sid).map(|c| c.ctl.as_raw_fd()) else {
                return;
            };
            let mut buf = [0u8; 64];
            let (n, mut fds, trunc) = match sys::recv_fds(fd, &mut buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!(session = sid, "control connection: {e}");
                    self.on_exit(sid);
                    return;
                }
            };
            if n == 0 {
                self.on_exit(sid);
                return;
            }
            let hello = (!trunc).then(|| Hello::decode(&buf[..n])).flatten();
            let Some(h) = hello else {
                self.core
                    .drop_channel(sid, &Violation::BadControl, Instant::now());
                self.perform(false);
                return;
            };
            match h.kind {
                HELLO_WAITER => {
                    let ok = h.arg < MAX_WAITERS as u64
                        && fds.len() == 1
                        && sys::is_eventfd(fds[0].as_raw_fd())
                        && sys::set_nonblocking(fds[0].as_raw_fd()).is_ok();
                    if ok {
                        if let (Some(efd), Some(ch)) = (fds.pop(), self.core.channel_mut(sid)) {
                            ch.set_waiter(h.arg as usize, efd);
                        }
                        debug!(session = sid, waiter = h.arg, "waiter doorbell registered");
                        Self::reply(fd, 0, 0);
                    } else {
                        Self::reply(fd, libc::EINVAL, 0);
                    }
                }
                HELLO_STATS => self.send_stats(fd, h.arg),
                HELLO_ATTACH | HELLO_ATTACH_CHILD => Self::reply(fd, libc::EISCONN, 0),
                _ => Self::reply(fd, libc::EINVAL, 0),
            }
        }
    }

    /// The process closed its control connection (exited): its descriptors go, and the core
    /// closes its bindings as `close()` at exit would.
    fn on_exit(&mut self, sid: u32) {
        self.conns.remove(&sid);
        self.core.detach(sid, Instant::now());
        self.perform(false);
    }

    /// Watches the child of fork ticket `tid` with a pidfd in the agent's epoll set.
    pub(super) fn watch_pid(&mut self, tid: u64, pid: i32) {
        let fd = match sys::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                // Already gone (and reaped): it will never claim.
                debug!(child = pid, "fork child gone before OP_FORK_CHILD");
                self.core.ticket_child_exited(tid, self.clock);
                return;
            }
            Err(e) => {
                debug!("pidfd_open({pid}): {e}; the ticket only expires");
                return;
            }
        };
        match self
            .epoll
            .add(fd.as_raw_fd(), sys::EV_IN, KIND_PIDFD | (tid & ID_MASK))
        {
            Ok(()) => {
                self.pidfds.insert(tid, fd);
            }
            Err(e) => debug!("pidfd epoll_ctl: {e}; the ticket only expires"),
        }
    }
}
