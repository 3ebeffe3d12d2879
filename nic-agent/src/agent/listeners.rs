//! Listeners: the shared accept queue filled from the backend, parked `CF_WAIT` accepts, one
//! accept handing a connection to a binding, and the accept handoff (connections bound ahead
//! of `accept` in the sessions that are accepting, docs/channel.md "Accept handoff").

use std::collections::VecDeque;
use std::net::SocketAddr;

use shm_proto::handoff::{self, Handoff};

use super::*;
use crate::sock::{Handed, Taker, Waiting};

/// Records a taker may hold unconsumed: beyond this, connections wait in the shared queue.
const HANDOFF_DEPTH: u32 = 8;
/// The same for a service's group (payload API), as far as its listener's RX stream holds them:
/// a group takes what it was handed at each poll without a command, but what waits in the
/// shared queue costs it an `OP_ACCEPT` round trip (a burst of 16 `Connection: close`
/// clients kept ~8 in the queue: half of `snstack-http`'s CPU per connection was that wait).
/// A service's takers are never timed out, so nothing is gained by holding connections back.
const HANDOFF_DEPTH_FRAMED: u32 = 64;
/// A record unconsumed this long means its process is not accepting: the taker's records go
/// back to the shared queue (for any binding) and it stops being a taker until it asks again.
pub(super) const HANDOFF_HOLD: Duration = Duration::from_millis(5);

impl<B: Backend> Core<B> {
    /// Moves connections from the kernel into the shared accept queue (up to its cap), serves
    /// parked accepts of any binding oldest first, hands the rest to the takers, and publishes
    /// `accept_ready` to every binding when the queue's length changed: a connection that went
    /// straight to a parked accept or a taker wakes only that process (the others would find
    /// nothing). `changed`: the caller already changed the queue (publish in any case).
    pub(super) fn fill_accept_queue(&mut self, id: SockId, mut changed: bool) {
        loop {
            let Some(s) = self.socks.get_mut(id) else {
                return;
            };
            let Some(l) = s.listener.as_mut() else {
                return;
            };
            let before = l.queue.len();
            while l.queue.len() < l.cap {
                match self.backend.accept(&s.os) {
                    Ok((c, peer)) => {
                        l.queue.push_back(Waiting::Fresh(c, peer));
                        l.seq = l.seq.wrapping_add(1);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        l.kernel_pending = false;
                        break;
                    }
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EINTR | libc::ECONNABORTED | libc::EPROTO)
                        ) => {}
                    Err(e) => {
                        // EMFILE/ENOMEM...: leave the rest in the kernel; the next event retries.
                        warn!("accept: {e}");
                        break;
                    }
                }
            }
            if l.queue.len() >= l.cap {
                l.kernel_pending = true;
            }
            let mut served = false;
            while let Some(p) = self.next_parked(id) {
                self.accept_one(id, p.by, p.tag);
                served = true;
            }
            served |= self.hand_off(id);
            let after = self
                .socks
                .get(id)
                .and_then(|s| s.listener.as_ref())
                .map_or(before, |l| l.queue.len());
            if changed || after != before {
                self.publish(id);
            }
            changed = false;
            let again = self
                .socks
                .get(id)
                .and_then(|s| s.listener.as_ref())
                .is_some_and(|l| served && l.kernel_pending && l.queue.len() < l.cap);
            if !again {
                return;
            }
        }
    }

    /// The oldest parked accept of listener `id`, when a connection is queued for it.
    pub(super) fn next_parked(&mut self, id: SockId) -> Option<Parked> {
        let l = self.socks.get_mut(id)?.listener.as_mut()?;
        if l.queue.is_empty() {
            return None;
        }
        l.parked.pop_front()
    }

    /// Takes the oldest queued connection of listener `lid` into a new slot of the accepting
    /// binding's session and completes `tag` there.
    pub(super) fn accept_one(&mut self, lid: SockId, by: Bind, tag: u64) {
        match self.bind_next(lid, by) {
            Ok(Some((slot, _, peer))) => {
                // The accepting binding's view of the listener first: a host that sees this
                // completion must not see the connection it took still counted in
                // `accept_ready` (a stale readiness under load, caught by tests/agent.rs
                // rx_backpressure_and_waiter_doorbell). The other bindings get the listener's
                // state when the caller publishes it, if it changed for them.
                self.publish_one(lid, by);
                self.complete_to(by, tag, i64::from(slot), Payload::Addr(peer.into()))
            }
            Ok(None) => self.complete_to(by, tag, neg(libc::EAGAIN), Payload::None),
            Err(e) => self.complete_to(by, tag, neg(e), Payload::None),
        }
    }

    /// Binds the oldest queued connection of listener `lid` to a new slot of `by`'s session:
    /// its slot, socket and peer; `None` when the queue is empty (or `by`'s process is gone);
    /// an errno when it cannot be bound (the connection stays queued, or is closed when the
    /// backend refuses it).
    fn bind_next(
        &mut self,
        lid: SockId,
        by: Bind,
    ) -> Result<Option<(u32, SockId, SocketAddr)>, i32> {
        let Some(p) = self.procs.get_mut(&by.sid) else {
            return Ok(None);
        };
        if p.closing {
            return Ok(None);
        }
        if !p.sess.table.has_free() {
            return Err(libc::EMFILE);
        }
        let Some(l) = self.socks.get_mut(lid) else {
            return Ok(None);
        };
        let domain = l.domain;
        // A service's connections are framed as its listener declared (payload API).
        let framing = l.framed.as_ref().map(|f| f.spec);
        let tls = l.listener.as_ref().and_then(|l| l.tls.clone());
        let rx_size = p.chan.region().geometry().rx_size;
        let Some(w) = l.listener.as_mut().and_then(|l| l.queue.pop_front()) else {
            return Ok(None);
        };
        let (id, peer, fresh) = match w {
            Waiting::Fresh(os, peer) => {
                let mut s = Sock::new(os, domain);
                s.framed = framing.map(|f| Box::new(crate::framed::FramedRx::new(f, rx_size)));
                if let Some(cfg) = &tls {
                    match crate::tls::terminate::Session::new(cfg) {
                        Ok(t) => {
                            s.tls = Some(Box::new(t));
                            self.tls_term.sessions += 1;
                        }
                        Err(e) => warn!("TLS session for an accepted connection: {e}"),
                    }
                }
                s.kind = Kind::Connected;
                s.set_flags(SF_CONNECTED, 0);
                (self.socks.insert(s), peer, true)
            }
            Waiting::Returned(id, peer) => match self.socks.get_mut(id) {
                Some(s) => {
                    s.queued = false;
                    (id, peer, false)
                }
                None => return Ok(None),
            },
        };
        let slot = match p.sess.table.alloc(Binding::new(id)) {
            Ok(n) => n,
            Err(_) => {
                if let Some(s) = self.socks.remove(id) {
                    self.close_os(s);
                }
                return Err(libc::EMFILE);
            }
        };
        p.chan.reset_slot(slot);
        let nb = Bind { sid: by.sid, slot };
        let Some(s) = self.socks.get_mut(id) else {
            return Ok(None);
        };
        s.bindings.push(nb);
        s.active = Some(nb);
        if fresh {
            if let Err(e) = self.backend.register(&s.os, id.token()) {
                warn!(pid = p.sess.pid, "accept: registering the socket: {e}");
                if let Some(b) = p.sess.table.free(slot) {
                    if let Some(s) = self.socks.remove(b.sock) {
                        self.close_os(s);
                    }
                }
                return Err(sys::errno_of(&e));
            }
            s.registered = true;
            // Urgent data that came before the connection was taken: its mark must be known
            // before the first bytes reach the host.
            s.urg_event |= self.backend.urgent_hint(&s.os);
            p.conns.passive_opens += 1;
        }
        Self::publish_to(s, &mut self.procs);
        // A fresh socket was registered before this first read: whatever is not read now (a
        // FIN behind a short read, bytes still on their way) raises an event (the registration
        // reports the readiness it found), so a short read needs no second call to say
        // WouldBlock. A returned socket's earlier events were consumed: read on to the end.
        self.pump_rx_with(id, !fresh);
        Ok(Some((slot, id, peer)))
    }

    /// Binding `b` of listener `lid` accepts: from now on it takes connections by handoff.
    pub(super) fn add_taker(&mut self, lid: SockId, b: Bind) {
        let Some(l) = self.socks.get_mut(lid).and_then(|s| s.listener.as_mut()) else {
            return;
        };
        if l.takers.iter().any(|t| t.by == b) {
            return;
        }
        l.takers.push(Taker {
            by: b,
            handed: VecDeque::new(),
        });
        if !self.handoff_lids.contains(&lid) {
            self.handoff_lids.push(lid);
        }
    }

    /// Hands queued connections of listener `lid` to its takers, round-robin, while they have
    /// room. True when it handed any.
    fn hand_off(&mut self, lid: SockId) -> bool {
        let mut handed = false;
        let mut misses = 0;
        loop {
            let Some(l) = self.socks.get_mut(lid).and_then(|s| s.listener.as_mut()) else {
                return handed;
            };
            let n = l.takers.len();
            if l.queue.is_empty() || n == 0 || misses >= n {
                return handed;
            }
            let i = l.next_taker % n;
            l.next_taker = (i + 1) % n;
            let by = l.takers[i].by;
            if !self.taker_has_room(lid, i, by) {
                misses += 1;
                continue;
            }
            let (slot, cid, peer) = match self.bind_next(lid, by) {
                Ok(Some(c)) => c,
                Ok(None) | Err(_) => {
                    misses += 1;
                    continue;
                }
            };
            misses = 0;
            let Some(p) = self.procs.get_mut(&by.sid) else {
                continue;
            };
            let rec = Handoff {
                slot,
                peer: peer.into(),
            };
            let pushed = match (p.sess.table.get_mut(by.slot), p.chan.region().rx(by.slot)) {
                (Some(bd), Some(rx)) => {
                    let at = bd.rx_tail;
                    handoff::push(&rx, &mut bd.rx_tail, &rec).map(|ok| ok.then_some(at))
                }
                _ => Ok(None),
            };
            p.chan.dirty(by.slot);
            match pushed {
                Ok(Some(at)) => {
                    handed = true;
                    let now = self.now;
                    if let Some(t) = self
                        .socks
                        .get_mut(lid)
                        .and_then(|s| s.listener.as_mut())
                        .and_then(|l| l.takers.iter_mut().find(|t| t.by == by))
                    {
                        t.handed.push_back(Handed {
                            at,
                            slot,
                            conn: cid,
                            peer,
                            when: now,
                        });
                    }
                    arm(&mut self.handoff_timer, now + HANDOFF_HOLD);
                }
                Ok(None) => {
                    // Checked for room above: only a scribbled head gets here. Close it.
                    self.finish_binding(Bind { sid: by.sid, slot });
                    misses += 1;
                }
                Err(c) => {
                    self.failed.push((by.sid, c.into()));
                    self.finish_binding(Bind { sid: by.sid, slot });
                    misses += 1;
                }
            }
        }
    }

    /// Whether taker `i` (binding `by`) of listener `lid` may get another record: its process
    /// is live, the listener binding is not closing, it has a free slot, and fewer than
    /// [`HANDOFF_DEPTH`] records wait. Forgets what the host took meanwhile.
    fn taker_has_room(&mut self, lid: SockId, i: usize, by: Bind) -> bool {
        let Some(p) = self.procs.get(&by.sid) else {
            return false;
        };
        if p.closing || !p.sess.table.is_live(by.slot) || !p.sess.table.has_free() {
            return false;
        }
        let (Some((bd, _)), Some(rx)) =
            (p.sess.table.get_any(by.slot), p.chan.region().rx(by.slot))
        else {
            return false;
        };
        let head = rx.load_head();
        let waiting = match handoff::pending(&rx, bd.rx_tail) {
            Ok(n) => n,
            Err(c) => {
                self.failed.push((by.sid, c.into()));
                return false;
            }
        };
        let framed = self.socks.get(lid).is_some_and(|s| s.framed.is_some());
        if let Some(t) = self
            .socks
            .get_mut(lid)
            .and_then(|s| s.listener.as_mut())
            .and_then(|l| l.takers.get_mut(i))
        {
            forget_taken(t, head);
        }
        waiting < handoff_depth(framed, rx.size())
    }

    /// Takes back every record binding `by` of listener `lid` has not consumed; each
    /// connection returns to the front of the shared queue (`requeue`) or closes as an
    /// unaccepted connection of a closed listener does (reset). `keep`: `by` stays a taker.
    pub(super) fn withdraw_handoffs(&mut self, lid: SockId, by: Bind, requeue: bool, keep: bool) {
        let Some(l) = self.socks.get_mut(lid).and_then(|s| s.listener.as_mut()) else {
            return;
        };
        let Some(i) = l.takers.iter().position(|t| t.by == by) else {
            return;
        };
        let mut t = if keep {
            Taker {
                by,
                handed: std::mem::take(&mut l.takers[i].handed),
            }
        } else {
            l.takers.remove(i)
        };
        let mut won = Vec::new();
        if let Some(p) = self.procs.get(&by.sid) {
            if let (Some((bd, _)), Some(rx)) =
                (p.sess.table.get_any(by.slot), p.chan.region().rx(by.slot))
            {
                if let Err(c) = handoff::withdraw(&rx, bd.rx_tail, |at, _| won.push(at)) {
                    self.failed.push((by.sid, c.into()));
                }
            }
        }
        // The agent's own list says which connection each won record named.
        let back: Vec<Handed> = won
            .into_iter()
            .filter_map(|at| t.handed.iter().find(|h| h.at == at).copied())
            .collect();
        t.handed.clear();
        // Oldest first to the front of the queue: push the newest first.
        for h in back.into_iter().rev() {
            self.return_conn(lid, by.sid, h, requeue);
        }
    }

    /// Connection `h`, handed to session `sid` and taken back: unbound from its slot and
    /// queued again with what it received, or closed.
    fn return_conn(&mut self, lid: SockId, sid: u32, h: Handed, requeue: bool) {
        let (slot, cid) = (h.slot, h.conn);
        let bound = self.procs.get(&sid).is_some_and(|p| {
            p.sess
                .table
                .get_any(slot)
                .is_some_and(|(bd, draining)| bd.sock == cid && !draining)
        });
        if !bound {
            return;
        }
        let b = Bind { sid, slot };
        let alone = self
            .socks
            .get(cid)
            .is_some_and(|s| s.bindings == [b] && s.tickets == 0);
        let listening = self.socks.get(lid).is_some_and(|s| s.listener.is_some());
        // A framed connection's unread RX is records, not bytes: it cannot wait for another
        // reader (takers of a framed listener are not timed out, so only a closing or forking
        // taker gets here).
        let framed = self.socks.get(cid).is_some_and(|s| s.framed.is_some());
        if !(requeue && alone && listening) || framed {
            self.finish_binding(b);
            return;
        }
        self.end_loan(cid);
        let Some(p) = self.procs.get_mut(&sid) else {
            return;
        };
        let unread = match p.sess.table.get_any(slot) {
            Some((bd, _)) => match sock::unread_rx(&p.chan, slot, bd.rx_tail) {
                Ok(v) => v,
                Err(v) => {
                    self.failed.push((sid, v));
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        p.sess.table.free(slot);
        if let Some(ctl) = p.chan.region().sock(slot) {
            ctl.state.0.flags.fetch_and(!SF_OPEN, Ordering::SeqCst);
        }
        p.chan.dirty(slot);
        let Some(s) = self.socks.get_mut(cid) else {
            return;
        };
        s.bindings.clear();
        s.active = None;
        if !unread.is_empty() {
            let mut st = unread;
            st.extend_from_slice(&s.stash);
            s.stash = st;
        }
        s.queued = true;
        if let Some(l) = self.socks.get_mut(lid).and_then(|s| s.listener.as_mut()) {
            l.queue.push_front(Waiting::Returned(cid, h.peer));
        }
    }

    /// Binding `b` (a listener's) ends: its unconsumed handoffs go back to the queue when
    /// another reference keeps the listener, or close with it.
    pub(super) fn end_taker(&mut self, lid: SockId, b: Bind) {
        let others = self.socks.get(lid).is_some_and(|s| s.refs() > 1);
        self.withdraw_handoffs(lid, b, others, false);
        if others {
            self.fill_accept_queue(lid, true);
        }
    }

    /// Every taker of session `sid` gives its records back (the process forks or goes away).
    /// `keep`: they stay takers.
    pub(super) fn withdraw_session(&mut self, sid: u32, keep: bool) {
        for lid in self.handoff_lids.clone() {
            let mine: Vec<Bind> = self
                .socks
                .get(lid)
                .and_then(|s| s.listener.as_ref())
                .map(|l| {
                    l.takers
                        .iter()
                        .map(|t| t.by)
                        .filter(|b| b.sid == sid)
                        .collect()
                })
                .unwrap_or_default();
            for b in mine {
                if keep {
                    // Not handed again now: a fork ticket is about to name the session's slots.
                    self.withdraw_handoffs(lid, b, true, true);
                    self.publish(lid);
                } else {
                    self.end_taker(lid, b);
                }
            }
        }
    }

    /// The handoff timer: takers whose oldest record waited [`HANDOFF_HOLD`] lose them (and
    /// their taker status); the records go to the queue and on to other takers.
    pub(super) fn handoff_timeout(&mut self, now: Instant) {
        match self.handoff_timer {
            Some(t) if t <= now => self.handoff_timer = None,
            _ => return,
        }
        self.handoff_lids.retain(|&lid| {
            self.socks
                .get(lid)
                .and_then(|s| s.listener.as_ref())
                .is_some_and(|l| !l.takers.is_empty())
        });
        for lid in self.handoff_lids.clone() {
            let mut stale = Vec::new();
            let mut next = None;
            let framed = self.socks.get(lid).is_some_and(|s| s.framed.is_some());
            if let Some(l) = self.socks.get_mut(lid).and_then(|s| s.listener.as_mut()) {
                for t in l.takers.iter_mut() {
                    let head = self
                        .procs
                        .get(&t.by.sid)
                        .and_then(|p| p.chan.region().rx(t.by.slot))
                        .map(|rx| rx.load_head());
                    if let Some(h) = head {
                        forget_taken(t, h);
                    }
                    match t.handed.front() {
                        // A service (payload API) takes its connections at its own pace.
                        Some(_) if framed => {}
                        Some(h) if h.when + HANDOFF_HOLD <= now => stale.push(t.by),
                        Some(h) => arm(&mut next, h.when + HANDOFF_HOLD),
                        None => {}
                    }
                }
            }
            for b in &stale {
                debug!(
                    session = b.sid,
                    slot = b.slot,
                    "handed connections not accepted in time: back to the queue"
                );
                self.withdraw_handoffs(lid, *b, true, false);
            }
            if let Some(t) = next {
                arm(&mut self.handoff_timer, t);
            }
            if !stale.is_empty() {
                self.fill_accept_queue(lid, true);
            }
        }
    }
}

/// Drops the records of taker `t` that the host consumed (stream index before `head`).
fn forget_taken(t: &mut Taker, head: u32) {
    while let Some(h) = t.handed.front() {
        if (head.wrapping_sub(h.at) as i32) > 0 {
            t.handed.pop_front();
        } else {
            break;
        }
    }
}

/// Records a taker may hold unconsumed (`HANDOFF_DEPTH`, `HANDOFF_DEPTH_FRAMED`), never more
/// than the listener's RX stream of `stream_size` bytes holds.
fn handoff_depth(framed: bool, stream_size: u32) -> u32 {
    let depth = if framed {
        HANDOFF_DEPTH_FRAMED
    } else {
        HANDOFF_DEPTH
    };
    depth.min(stream_size / handoff::RECORD)
}
