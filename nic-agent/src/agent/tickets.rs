//! Fork tickets: a parent's sockets held for a child that has not attached yet (docs/fork-model.md);
//! claims, expiry, and the pidfds that tell when the child is gone.

use super::*;

impl<B: Backend> Agent<B> {
    /// Turns ticket `tid`'s references into bindings of session `sid` (same slot numbers).
    /// Returns the number of sockets bound.
    pub(super) fn claim(&mut self, sid: u32, tid: u64) -> usize {
        let Some(t) = self.tickets.remove(tid) else {
            return 0;
        };
        self.pidfds.remove(&tid);
        let mut n = 0;
        for (slot, id) in t.slots {
            let Some(s) = self.socks.get_mut(id) else {
                continue;
            };
            s.tickets = s.tickets.saturating_sub(1);
            let b = Bind { sid, slot };
            let Some(p) = self.procs.get_mut(&sid) else {
                self.release_if_unused(id);
                continue;
            };
            if p.sess.table.insert_at(slot, Binding::new(id)).is_err() {
                warn!(
                    session = sid,
                    slot, "child attach: slot unusable, socket not inherited"
                );
                self.release_if_unused(id);
                continue;
            }
            p.chan.reset_slot(slot);
            s.bindings.push(b);
            if s.active.is_none() {
                s.active = Some(b);
            }
            n += 1;
            // Stashed RX first, then the state (so SF_RX_FIN never precedes the bytes).
            self.pump_rx(id);
            self.publish_one(id, b);
        }
        debug!(
            session = sid,
            parent = t.parent_pid,
            sockets = n,
            "fork ticket claimed"
        );
        n
    }

    /// The child of ticket `tid` exited.
    pub(super) fn on_pidfd(&mut self, tid: u64) {
        if let Some(t) = self.tickets.get(tid) {
            debug!(
                parent = t.parent_pid,
                child = ?t.child_pid,
                "fork child exited without claiming its ticket"
            );
        }
        self.drop_ticket(tid);
        self.drop_failed();
    }

    /// Releases an unclaimed ticket's references.
    pub(super) fn drop_ticket(&mut self, tid: u64) {
        self.pidfds.remove(&tid);
        let Some(t) = self.tickets.remove(tid) else {
            return;
        };
        for (_, id) in t.slots {
            if let Some(s) = self.socks.get_mut(id) {
                s.tickets = s.tickets.saturating_sub(1);
            }
            self.release_if_unused(id);
        }
    }

    /// A parent that forks and exits at once may leave its `OP_FORK_CHILD` in the ring: run
    /// those (and nothing else) so the child can still claim by pid.
    pub(super) fn late_fork_children(&mut self, sid: u32) {
        let Some(n) = self
            .procs
            .get(&sid)
            .map(|p| p.chan.region().geometry().cmd_entries)
        else {
            return;
        };
        for _ in 0..n {
            let Some(p) = self.procs.get_mut(&sid) else {
                return;
            };
            let cmd = match p.chan.pop_cmd() {
                Ok(Some(c)) if c.op == OP_FORK_CHILD => p.sess.decode(&c),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            };
            if let Ok(cmd) = cmd {
                let _ = self.exec(sid, cmd);
            }
        }
    }

    /// `OP_FORK`: a ticket holding a reference to every socket the session holds now.
    pub(super) fn op_fork(&mut self, sid: u32, tag: u64, slot: u32) -> Result<(), Violation> {
        let Some(p) = self.procs.get(&sid) else {
            return Ok(());
        };
        let (pid, uid) = (p.sess.pid, p.sess.uid);
        let mut slots: Vec<(u32, SockId)> = p
            .sess
            .table
            .used_slots()
            .into_iter()
            .filter_map(|n| match p.sess.table.get_any(n) {
                Some((bd, false)) => Some((n, bd.sock)),
                _ => None,
            })
            .collect();
        let now = Instant::now();
        let mut result = Err(libc::EAGAIN);
        for _ in 0..8 {
            let secret = match sys::random_u64() {
                Ok(s) => s,
                Err(e) => {
                    warn!(session = sid, "fork ticket: getrandom: {e}");
                    return self.complete(sid, tag, slot, err_of(&e), Payload::None);
                }
            };
            match self.tickets.create(secret, sid, pid, uid, slots, now) {
                Ok(t) => {
                    result = Ok((t.secret, t.deadline, t.slots.clone()));
                    break;
                }
                Err((e, back)) => {
                    slots = back;
                    result = Err(e);
                    if e != libc::EAGAIN {
                        break;
                    }
                }
            }
        }
        let (secret, deadline, held) = match result {
            Ok(x) => x,
            Err(e) => {
                debug!(session = sid, errno = e, "fork ticket refused");
                return self.complete(sid, tag, slot, neg(e), Payload::None);
            }
        };
        for (_, id) in &held {
            // A child will bind the socket too: its TX is copied from now on.
            self.end_loan(*id);
            if let Some(s) = self.socks.get_mut(*id) {
                s.tickets = s.tickets.saturating_add(1);
            }
        }
        arm(&mut self.next_timer, deadline);
        debug!(session = sid, sockets = held.len(), "fork ticket taken");
        self.complete(sid, tag, slot, 0, Payload::Secret(secret))
    }

    /// `OP_FORK_CHILD`: ties a ticket to the process that will claim it and watches that process.
    pub(super) fn op_fork_child(
        &mut self,
        sid: u32,
        tag: u64,
        slot: u32,
        secret: u64,
        pid: u64,
    ) -> Result<(), Violation> {
        let tid = self
            .tickets
            .find(secret)
            .filter(|&t| self.tickets.get(t).is_some_and(|t| t.parent_sid == sid));
        let Some(tid) = tid else {
            return self.complete(sid, tag, slot, neg(libc::ENOENT), Payload::None);
        };
        let Ok(pid) = i32::try_from(pid) else {
            return self.complete(sid, tag, slot, neg(libc::EINVAL), Payload::None);
        };
        if pid <= 0 {
            return self.complete(sid, tag, slot, neg(libc::EINVAL), Payload::None);
        }
        let Some(own) = self.procs.get(&sid).map(|p| p.sess.pid) else {
            return Ok(());
        };
        match self.tickets.get(tid).and_then(|t| t.child_pid) {
            Some(c) if c == pid => return self.complete(sid, tag, slot, 0, Payload::None),
            Some(_) => return self.complete(sid, tag, slot, neg(libc::EINVAL), Payload::None),
            None => {}
        }
        let pidfd = match sys::pidfd_open(pid) {
            Ok(fd) => Some(fd),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                // Already gone (and reaped): it will never claim.
                debug!(
                    session = sid,
                    child = pid,
                    "fork child gone before OP_FORK_CHILD"
                );
                self.drop_ticket(tid);
                return self.complete(sid, tag, slot, 0, Payload::None);
            }
            Err(e) => {
                debug!(
                    session = sid,
                    "pidfd_open({pid}): {e}; the ticket only expires"
                );
                None
            }
        };
        // The claimant must be the parent's child, or the parent itself (a ticket across exec).
        if pid != own {
            if let Ok(pp) = sys::parent_pid(pid) {
                if pp != own {
                    warn!(
                        session = sid,
                        child = pid,
                        parent = pp,
                        "OP_FORK_CHILD names a process that is not the caller's child"
                    );
                    return self.complete(sid, tag, slot, neg(libc::ESRCH), Payload::None);
                }
            }
        }
        if let Some(t) = self.tickets.get_mut(tid) {
            t.child_pid = Some(pid);
        }
        if let Some(fd) = pidfd {
            match self
                .epoll
                .add(fd.as_raw_fd(), sys::EV_IN, KIND_PIDFD | (tid & ID_MASK))
            {
                Ok(()) => {
                    self.pidfds.insert(tid, fd);
                }
                Err(e) => debug!(
                    session = sid,
                    "pidfd epoll_ctl: {e}; the ticket only expires"
                ),
            }
        }
        self.complete(sid, tag, slot, 0, Payload::None)
    }
}
