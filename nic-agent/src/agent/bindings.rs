//! Bindings and socket lifetime: a host's close (drain, then release), the end of a binding, a
//! connection moving to another process's binding, and the release of an unreferenced socket.

use super::*;

impl<B: Backend> Core<B> {
    pub(super) fn bindings_of(&self, id: SockId) -> Vec<Bind> {
        self.socks
            .get(id)
            .map(|s| s.bindings.clone())
            .unwrap_or_default()
    }

    pub(super) fn is_draining(&self, b: Bind) -> bool {
        self.procs
            .get(&b.sid)
            .and_then(|p| p.sess.table.get_any(b.slot))
            .is_some_and(|(_, draining)| draining)
    }

    pub(super) fn draining_bindings(&self, id: SockId) -> Vec<Bind> {
        let mut v = self.bindings_of(id);
        v.retain(|&b| self.is_draining(b));
        v
    }

    /// The host closed binding `b` (or exited): release it now, or drain its TX first.
    pub(super) fn close_binding(&mut self, b: Bind) {
        let Some(id) = self
            .procs
            .get(&b.sid)
            .and_then(|p| p.sess.table.get_any(b.slot))
            .map(|(bd, _)| bd.sock)
        else {
            return;
        };
        let Some(s) = self.socks.get_mut(id) else {
            self.finish_binding(b);
            return;
        };
        // Commands this binding parked end with the fd (other bindings' stay parked).
        let mut ended = Vec::new();
        if let Some(l) = s.listener.as_mut() {
            l.parked.retain(|p| {
                let mine = p.by == b;
                if mine {
                    ended.push(*p);
                }
                !mine
            });
        }
        if s.connect_tag.is_some_and(|p| p.by == b) {
            ended.extend(s.connect_tag.take());
        }
        let may_drain = matches!(s.kind, Kind::Connected | Kind::Connecting) && !s.io_dead;
        for p in ended {
            self.complete_to(p.by, p.tag, neg(libc::EINVAL), Payload::None);
        }
        let pending = match self.procs.get(&b.sid).and_then(|p| {
            let (bd, _) = p.sess.table.get_any(b.slot)?;
            Some(sock::tx_pending(&p.chan, b.slot, bd))
        }) {
            Some(Ok(n)) => n,
            Some(Err(v)) => {
                self.failed.push((b.sid, v));
                0
            }
            None => 0,
        };
        // kTLS records sealed and not yet sent are the connection's too.
        let sealed = self
            .socks
            .get(id)
            .and_then(|s| s.ktls.as_ref())
            .map_or(0, |k| k.pending() as u64);
        let pending = pending + sealed;
        if !may_drain || pending == 0 {
            self.finish_binding(b);
            return;
        }
        let deadline = self.now + DRAIN_TIMEOUT;
        arm(&mut self.next_timer, deadline);
        if let Some(p) = self.procs.get_mut(&b.sid) {
            if let Some(bd) = p.sess.table.get_mut(b.slot) {
                bd.drain_deadline = Some(deadline);
            }
            p.sess.table.start_drain(b.slot);
        }
        // The last reference's close: the FIN can ride on the last bytes' segment. (Not for
        // a reset: its close would drop bytes held back for the FIN.)
        let fin_follows = self.socks.get(id).is_some_and(|s| {
            s.bindings == [b]
                && s.tickets == 0
                && !s.queued
                && !s.abort_on_close
                && s.kind == Kind::Connected
                && s.tls.is_none()
                && s.ktls.is_none()
        });
        if self.pump_tx_with(id, b, fin_follows) {
            self.finish_binding(b);
        }
        if let Some(s) = self.socks.get_mut(id) {
            if std::mem::take(&mut s.tx_held) {
                // Still open after all: the held bytes go now.
                self.backend.push(&s.os);
            }
        }
    }

    /// Frees binding `b`'s slot. When it was the active binding of a connection, its unread RX
    /// bytes go to the next live binding (or wait in the stash for a ticket's claimant). The OS
    /// socket closes with its last reference.
    pub(super) fn finish_binding(&mut self, b: Bind) {
        if let Some(id) = self
            .procs
            .get(&b.sid)
            .and_then(|p| p.sess.table.get_any(b.slot))
            .map(|(bd, _)| bd.sock)
        {
            self.end_loan(id);
            let taker = self
                .socks
                .get(id)
                .and_then(|s| s.listener.as_ref())
                .is_some_and(|l| l.takers.iter().any(|t| t.by == b));
            if taker {
                self.end_taker(id, b);
            }
        }
        let Some(p) = self.procs.get_mut(&b.sid) else {
            return;
        };
        let Some(bd) = p.sess.table.free(b.slot) else {
            return;
        };
        let id = bd.sock;
        if let Some(ctl) = p.chan.region().sock(b.slot) {
            ctl.state.0.flags.fetch_and(!SF_OPEN, Ordering::SeqCst);
            ctl.state.0.accept_ready.store(0, Ordering::SeqCst);
        }
        p.chan.dirty(b.slot);
        let Some(s) = self.socks.get_mut(id) else {
            return;
        };
        s.bindings.retain(|&x| x != b);
        if let Some(k) = s.ktls.as_deref_mut() {
            k.unbind(b);
        }
        if let Some(l) = s.listener.as_mut() {
            l.parked.retain(|p| p.by != b);
        }
        if s.connect_tag.is_some_and(|p| p.by == b) {
            s.connect_tag = None;
        }
        if s.active == Some(b) && s.framed.is_some() && s.refs() > 0 && !s.io_dead {
            // A framed connection's unread RX is records of this binding's stream, which no
            // other binding can take over as bytes (nor can the framer pick up mid-message in
            // another ring): the connection ends, with a reset, for the bindings left.
            debug!(
                session = b.sid,
                slot = b.slot,
                "framed connection's reader left: reset"
            );
            s.active = None;
            let mut zero = [0u8; 8];
            zero[..4].copy_from_slice(&1i32.to_ne_bytes());
            if let Err(e) = self
                .backend
                .setsockopt(&s.os, libc::SOL_SOCKET, libc::SO_LINGER, &zero)
            {
                debug!("SO_LINGER 0 for a framed connection left by its reader: {e}");
            }
            s.fail(libc::ECONNABORTED);
            self.publish(id);
            self.release_if_unused(id);
            return;
        }
        if s.active == Some(b) {
            let unread = if s.kind == Kind::Connected {
                match sock::unread_rx(&p.chan, b.slot, bd.rx_tail) {
                    Ok(v) => v,
                    Err(v) => {
                        self.failed.push((b.sid, v));
                        Vec::new()
                    }
                }
            } else {
                Vec::new()
            };
            if s.refs() == 0 {
                // Nobody to hand them to: the socket closes with bytes its reader never read,
                // and Linux answers that with RST rather than FIN.
                s.abort_on_close = !unread.is_empty() || !s.stash.is_empty();
                self.release_if_unused(id);
                return;
            }
            // What this binding had not read comes before what was still stashed for it (on a
            // kTLS RX socket: plaintext, before what the pump still holds, with its type).
            if let Some(pump) = s.ktls.as_deref_mut().and_then(|k| k.rx.as_deref_mut()) {
                pump.take_back(unread);
            } else if !unread.is_empty() {
                let mut st = unread;
                st.extend_from_slice(&s.stash);
                s.stash = st;
            }
            let procs = &self.procs;
            s.forget_urgent_mark();
            s.active = s.bindings.iter().copied().find(|x| {
                procs
                    .get(&x.sid)
                    .is_some_and(|p| !p.closing && p.sess.table.is_live(x.slot))
            });
            if let Some(next) = s.active {
                debug!(
                    from = b.sid,
                    to = next.sid,
                    slot = next.slot,
                    bytes = s.stash.len(),
                    "connection moves to another process"
                );
                // Bytes first, then the state (SF_RX_FIN must not precede them).
                self.pump_rx(id);
                self.publish_one(id, next);
            }
        }
        self.release_if_unused(id);
    }

    /// Binding `b` of a shared connection wants to read: what the active binding had not read
    /// and everything after it flows to `b` from now on (the kernel lets any holder of a socket
    /// read it; which process gets which bytes is a race there too).
    pub(super) fn rx_claim(&mut self, id: SockId, b: Bind) {
        let Some(s) = self.socks.get(id) else {
            return;
        };
        if s.kind != Kind::Connected || s.io_dead || s.active == Some(b) {
            return;
        }
        if self.is_draining(b) || !s.bindings.contains(&b) {
            return;
        }
        if s.framed.is_some() {
            // Records cannot move to another binding's stream as bytes: a framed connection
            // keeps the reader it has (the payload API never shares one).
            debug!(
                session = b.sid,
                slot = b.slot,
                "OP_RX_CLAIM on a framed connection ignored"
            );
            return;
        }
        let old = s.active;
        let mut taken = Vec::new();
        if let Some(a) = old {
            if let Some(p) = self.procs.get(&a.sid) {
                if let Some((bd, _)) = p.sess.table.get_any(a.slot) {
                    match sock::take_unread_rx(&p.chan, a.slot, bd.rx_tail) {
                        Ok(v) => taken = v,
                        Err(v) => self.failed.push((a.sid, v)),
                    }
                }
            }
        }
        let Some(s) = self.socks.get_mut(id) else {
            return;
        };
        if let Some(pump) = s.ktls.as_deref_mut().and_then(|k| k.rx.as_deref_mut()) {
            pump.take_back(taken);
        } else if !taken.is_empty() {
            taken.extend_from_slice(&s.stash);
            s.stash = taken;
        }
        s.forget_urgent_mark();
        s.active = Some(b);
        debug!(
            from = old.map(|a| a.sid),
            to = b.sid,
            slot = b.slot,
            bytes = s.stash.len(),
            "reader claims a shared connection"
        );
        if let Some(a) = old {
            self.publish_one(id, a);
        }
        self.pump_rx(id);
        self.publish_one(id, b);
    }

    /// Closes socket `id` when no binding and no ticket holds it any more.
    pub(super) fn release_if_unused(&mut self, id: SockId) {
        if self.socks.get(id).is_some_and(|s| s.refs() == 0) {
            if let Some(s) = self.socks.remove(id) {
                self.close_os(s);
            }
        }
    }

    /// Closes a connection no process accepted (its listener stops): reset, as Linux resets
    /// the connections of a closed listener's queue.
    pub(super) fn discard_waiting(&mut self, w: sock::Waiting<B::Sock>) {
        match w {
            sock::Waiting::Fresh(c, _) => self.backend.close(c),
            sock::Waiting::Returned(id, _) => {
                if let Some(s) = self.socks.get_mut(id) {
                    s.queued = false;
                    s.abort_on_close = true;
                }
                self.release_if_unused(id);
            }
        }
    }

    /// Releases everything an unreferenced socket holds.
    pub(super) fn close_os(&mut self, mut s: Sock<B::Sock>) {
        if let Some(p) = s.reuse_port_bound.take() {
            self.reuseport.remove(p);
        }
        let mut parked = Vec::new();
        if let Some(l) = s.listener.take() {
            for w in l.queue {
                self.discard_waiting(w);
            }
            parked.extend(l.parked);
        }
        parked.extend(s.connect_tag.take());
        if let Some(mut t) = s.tls.take() {
            // A terminated connection ends its TLS first (close_notify), as far as the
            // backend takes it now.
            if !s.io_dead && !s.abort_on_close {
                t.close_notify();
                let _ = crate::terminated::flush(&mut self.backend, &s.os, &mut t);
            }
        }
        if s.tx_held && !s.io_dead && (s.abort_on_close || self.backend.has_unread(&s.os)) {
            // A close that resets drops unsent bytes: those held for the FIN go first, as
            // they would have gone without the hold.
            self.backend.push(&s.os);
        }
        if s.abort_on_close && !s.io_dead {
            let mut zero = [0u8; 8];
            zero[..4].copy_from_slice(&1i32.to_ne_bytes());
            if let Err(e) = self
                .backend
                .setsockopt(&s.os, libc::SOL_SOCKET, libc::SO_LINGER, &zero)
            {
                debug!("SO_LINGER 0 before a close with unread data: {e}");
            }
        }
        self.backend.close(s.os);
        for p in parked {
            self.complete_to(p.by, p.tag, neg(libc::EINVAL), Payload::None);
        }
    }
}
