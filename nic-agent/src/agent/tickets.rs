//! Fork tickets: a parent's sockets held for a child that has not attached yet (docs/fork-model.md);
//! claims, expiry, and the pidfds that tell when the child is gone.

use super::*;

impl<B: Backend> Core<B> {
    /// Turns ticket `tid`'s references into bindings of session `sid` (same slot numbers).
    /// Returns the number of sockets bound.
    pub(super) fn claim(&mut self, sid: u32, tid: u64) -> usize {
        let Some(t) = self.tickets.remove(tid) else {
            return 0;
        };
        self.act(Action::UnwatchPid(tid));
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

    /// The child of ticket `tid` exited (its pidfd became readable, or it was gone already).
    pub fn ticket_child_exited(&mut self, tid: u64, now: Instant) {
        self.now = now;
        if let Some(t) = self.tickets.get(tid) {
            debug!(
                parent = t.parent_pid,
                child = ?t.child_pid,
                "fork child exited without claiming its ticket"
            );
        }
        // Whatever became of the ticket, its pidfd has nothing more to say.
        self.act(Action::UnwatchPid(tid));
        self.drop_ticket(tid);
        self.drop_failed();
    }

    /// Releases an unclaimed ticket's references.
    pub(super) fn drop_ticket(&mut self, tid: u64) {
        let Some(t) = self.tickets.remove(tid) else {
            return;
        };
        self.act(Action::UnwatchPid(tid));
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
        // Connections handed to the session but not accepted have no fd to inherit: they go
        // back to the queue rather than into the ticket.
        self.withdraw_session(sid, true);
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
        let now = self.now;
        let mut result = Err(libc::EAGAIN);
        for _ in 0..8 {
            let secret = match self.backend.random_u64() {
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
        // The claimant must be the parent's child, or the parent itself (a ticket across exec).
        if pid != own {
            if let Ok(pp) = self.backend.parent_pid(pid) {
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
        // The shell opens a pidfd (a child already gone ends the ticket at once).
        self.act(Action::WatchPid { ticket: tid, pid });
        self.complete(sid, tag, slot, 0, Payload::None)
    }
}
