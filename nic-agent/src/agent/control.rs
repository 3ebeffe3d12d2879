//! The control plane: the UNIX listener, attach (region and doorbells over SCM_RIGHTS), waiter
//! registration, stats queries, a process's exit (its control connection's EOF) and the channel of
//! a process that broke the protocol.

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

    pub(super) fn send_stats(&self, fd: RawFd) {
        let text = self.snapshot().render();
        Self::reply(fd, 0, text.len() as u64);
        if let Err(e) = sys::send_fds(fd, text.as_bytes(), &[]) {
            debug!("stats reply: {e}");
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
        let hello = if trunc {
            None
        } else {
            Hello::decode(&buf[..n])
        };
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
                self.send_stats(fd);
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
            Ok(c) => c,
            Err(e) => {
                warn!("attach: SO_PEERCRED: {e}");
                Self::reply(raw, sys::errno_of(&e), 0);
                return;
            }
        };
        let ticket = match secret {
            None => None,
            Some(secret) => {
                let Some(tid) = self.tickets.find(secret) else {
                    debug!(pid = cred.pid, "child attach: no such ticket");
                    Self::reply(raw, libc::ENOENT, 0);
                    return;
                };
                let Some(t) = self.tickets.get(tid) else {
                    Self::reply(raw, libc::ENOENT, 0);
                    return;
                };
                let allowed =
                    ticket::claim_allowed(t, cred.pid, cred.uid, || sys::parent_pid(cred.pid).ok());
                if let Err(e) = allowed {
                    warn!(
                        pid = cred.pid,
                        uid = cred.uid,
                        ticket_parent = t.parent_pid,
                        ticket_child = ?t.child_pid,
                        "child attach refused: not the ticket's child"
                    );
                    Self::reply(raw, e, 0);
                    return;
                }
                Some(tid)
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
        let mut sid = self.next_sid;
        while sid == 0 || self.procs.contains_key(&sid) {
            sid = sid.wrapping_add(1);
        }
        self.next_sid = sid.wrapping_add(1);
        let sess = Session::new(cred.pid, cred.uid, cred.gid, geo.max_sockets);
        self.procs.insert(
            sid,
            Proc {
                sess,
                chan,
                ctl: None,
                bell: None,
                closing: false,
            },
        );
        self.attaches += 1;
        // The child's slots are ready before it can map the region.
        let inherited = ticket.map_or(0, |tid| self.claim(sid, tid));
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
            self.detach(sid);
            self.drop_failed();
            return;
        }
        if let Some(p) = self.procs.get_mut(&sid) {
            p.ctl = Some(fd);
            p.bell = Some(bell);
        }
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
        self.drop_failed();
    }

    /// A message (or EOF) on an attached process's control connection.
    pub(super) fn on_ctl(&mut self, sid: u32) {
        for _ in 0..16 {
            let Some(p) = self.procs.get_mut(&sid) else {
                return;
            };
            let Some(fd) = p.ctl.as_ref().map(|f| f.as_raw_fd()) else {
                return;
            };
            let mut buf = [0u8; 64];
            let (n, mut fds, trunc) = match sys::recv_fds(fd, &mut buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!(session = sid, "control connection: {e}");
                    self.detach(sid);
                    self.drop_failed();
                    return;
                }
            };
            if n == 0 {
                self.detach(sid);
                self.drop_failed();
                return;
            }
            let hello = if trunc {
                None
            } else {
                Hello::decode(&buf[..n])
            };
            let Some(h) = hello else {
                self.drop_proc(sid, &Violation::BadControl);
                self.drop_failed();
                return;
            };
            match h.kind {
                HELLO_WAITER => {
                    let ok = h.arg < MAX_WAITERS as u64
                        && fds.len() == 1
                        && sys::is_eventfd(fds[0].as_raw_fd())
                        && sys::set_nonblocking(fds[0].as_raw_fd()).is_ok();
                    if ok {
                        if let Some(efd) = fds.pop() {
                            p.chan.set_waiter(h.arg as usize, efd);
                        }
                        debug!(session = sid, waiter = h.arg, "waiter doorbell registered");
                        Self::reply(fd, 0, 0);
                    } else {
                        Self::reply(fd, libc::EINVAL, 0);
                    }
                }
                HELLO_STATS => self.send_stats(fd),
                HELLO_ATTACH | HELLO_ATTACH_CHILD => Self::reply(fd, libc::EISCONN, 0),
                _ => Self::reply(fd, libc::EINVAL, 0),
            }
        }
    }

    /// The process closed its control connection (exited): close its bindings as `close()` at
    /// exit would, letting TX bytes already written drain.
    pub(super) fn detach(&mut self, sid: u32) {
        self.late_fork_children(sid);
        let Some(p) = self.procs.get_mut(&sid) else {
            return;
        };
        let live = p.sess.table.live_count();
        p.ctl = None;
        p.bell = None;
        p.closing = true;
        for slot in p.sess.table.used_slots() {
            let live = self
                .procs
                .get(&sid)
                .is_some_and(|p| p.sess.table.is_live(slot));
            if live {
                self.close_binding(Bind { sid, slot });
            }
        }
        if let Some(p) = self.procs.get(&sid) {
            info!(
                pid = p.sess.pid,
                session = sid,
                sockets = live,
                draining = p.sess.table.draining_count(),
                "process detached"
            );
        }
    }

    /// Drops the channels of the processes that violated the protocol.
    pub(super) fn drop_failed(&mut self) {
        while let Some((sid, v)) = self.failed.pop() {
            self.drop_proc(sid, &v);
        }
    }

    /// Drops a misbehaving process's channel: one error line, `dead = 1`, its bindings removed
    /// at once (sockets it shared with other processes stay open for them).
    pub(super) fn drop_proc(&mut self, sid: u32, why: &Violation) {
        let Some(p) = self.procs.get_mut(&sid) else {
            return;
        };
        if p.closing {
            warn!(
                pid = p.sess.pid,
                session = sid,
                "abandoning drains of an exited process: {why}"
            );
        } else {
            error!(
                pid = p.sess.pid,
                uid = p.sess.uid,
                gid = p.sess.gid,
                session = sid,
                "dropping channel: {why}"
            );
            self.dropped += 1;
        }
        p.chan.kill();
        p.ctl = None;
        p.bell = None;
        p.closing = true;
        for slot in p.sess.table.used_slots() {
            self.finish_binding(Bind { sid, slot });
        }
        if let Some(p) = self.procs.remove(&sid) {
            self.retired.add(&p.chan.counters);
        }
    }

    pub(super) fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot {
            io: self.retired,
            channels_dropped: self.dropped,
            attaches: self.attaches,
            tickets: self.tickets.len() as u64,
            ..Default::default()
        };
        for p in self.procs.values() {
            if !p.closing {
                s.processes += 1;
            }
            s.draining += p.sess.table.draining_count() as u64;
            s.io.add(&p.chan.counters);
            s.channel_bytes += p.chan.resident_bytes();
        }
        s.sockets = self.socks.len() as u64;
        s.loopback = self.backend.loop_stats();
        s.engine = self.backend.engine_stats();
        s.spin_us = self.spin.effective_budget().as_micros() as u64;
        for (_, so) in self.socks.iter() {
            let queued = so.listener.as_ref().map_or(0, |l| l.queue.len()) as u64;
            s.sockets += queued;
            s.accept_queued += queued;
            if so.bindings.len() > 1 {
                s.shared += 1;
            }
        }
        s
    }
}
