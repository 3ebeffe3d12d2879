//! The data path of a socket: its state published to every binding, RX into the active binding's
//! stream, TX from each binding's stream (copied, or lent to the engine), readiness from the backend.

use super::*;

/// Least time between two SIGURGs for one socket's owner (sock.rs, `urg_signalled`).
const URG_SIGNAL_GAP: Duration = Duration::from_millis(1);

impl<B: Backend> Core<B> {
    /// Writes socket `id`'s state into the control block of every binding and marks them dirty
    /// (their futex and waiters are woken at the next flush).
    pub(super) fn publish(&mut self, id: SockId) {
        if let Some(s) = self.socks.get(id) {
            Self::publish_to(s, &mut self.procs);
        }
    }

    /// [`Core::publish`] for a socket in hand (`procs`: the sessions its bindings are in).
    pub(super) fn publish_to(s: &Sock<B::Sock>, procs: &mut BTreeMap<u32, Proc>) {
        for &b in &s.bindings {
            if let Some(p) = procs.get_mut(&b.sid) {
                if let Some(ctl) = p.chan.region().sock(b.slot) {
                    s.write_ctl(ctl, b);
                }
                p.chan.dirty(b.slot);
            }
        }
    }

    /// Writes socket `id`'s state into binding `b`'s control block only (a binding that just
    /// appeared or became active; the others saw no change).
    pub(super) fn publish_one(&mut self, id: SockId, b: Bind) {
        let (Some(s), Some(p)) = (self.socks.get(id), self.procs.get_mut(&b.sid)) else {
            return;
        };
        if let Some(ctl) = p.chan.region().sock(b.slot) {
            s.write_ctl(ctl, b);
        }
        p.chan.dirty(b.slot);
    }

    /// RX into the active binding (when it is live, not draining).
    pub(super) fn pump_rx(&mut self, id: SockId) {
        self.pump_rx_with(id, true);
    }

    /// [`Core::pump_rx`]; `drain`: read on to WouldBlock or the end even after a short read
    /// (the readiness said the peer closed or failed, or the caller does not know).
    pub(super) fn pump_rx_with(&mut self, id: SockId, drain: bool) {
        let Some(s) = self.socks.get_mut(id) else {
            return;
        };
        let Some(b) = s.active else {
            return;
        };
        let Some(p) = self.procs.get_mut(&b.sid) else {
            return;
        };
        let Some((bd, false)) = p.sess.table.get_any_mut(b.slot) else {
            return;
        };
        let had_stash = !s.stash.is_empty();
        match sock::pump_rx(
            &mut self.backend,
            s,
            &mut p.chan,
            b.slot,
            &mut bd.rx_tail,
            drain,
        ) {
            Err(v) => self.failed.push((b.sid, v)),
            Ok(o) => {
                let now = self.now;
                let due = s
                    .urg_signalled
                    .map_or(true, |t| now.duration_since(t) >= URG_SIGNAL_GAP);
                let owner = (o.urgent.fresh && due)
                    .then(|| p.chan.region().sock(b.slot))
                    .flatten()
                    .and_then(|ctl| Owner::unpack(ctl.host.0.owner.load(Ordering::Acquire)));
                let pid = p.sess.pid;
                self.tls_term.handshakes += u64::from(o.tls_handshake);
                self.tls_term.failures += u64::from(o.tls_failed);
                let pl = &mut self.payload;
                pl.messages += o.framed.messages;
                pl.parts += o.framed.parts;
                pl.bytes += o.framed.bytes;
                if let Some(r) = o.malformed {
                    // The peer broke the service's framing: the connection ends with a reset
                    // (SO_LINGER 0 now, so closing it sends RST), counted under the reason;
                    // nothing of the bad message reached the host.
                    let code = crate::framed::reason_code(r);
                    if let Some(c) = pl.malformed.get_mut(code as usize - 1) {
                        *c += 1;
                    }
                    debug!(
                        session = b.sid,
                        slot = b.slot,
                        reason = r.name(),
                        "malformed framing"
                    );
                    let mut zero = [0u8; 8];
                    zero[..4].copy_from_slice(&1i32.to_ne_bytes());
                    if let Err(e) =
                        self.backend
                            .setsockopt(&s.os, libc::SOL_SOCKET, libc::SO_LINGER, &zero)
                    {
                        debug!("SO_LINGER 0 for a malformed connection: {e}");
                    }
                    s.framing_error = code;
                    s.fail(libc::EPROTO);
                    self.publish(id);
                    return;
                }
                if o.done {
                    s.rx_done = true;
                    s.set_flags(SF_RX_FIN, 0);
                }
                if let Some(e) = o.err {
                    s.fail(e);
                    Self::count_error(&mut self.procs, s.active, e);
                }
                if let Some(e) = o.tls_rx_error {
                    // A kTLS record failed to open: as Linux's tls_err_abort, the socket's
                    // error (SO_ERROR, EPOLLERR); the reader keeps getting it (the stream's
                    // tls_rx word), the connection itself goes on.
                    s.post_error(e, 0, 0);
                }
                if o.err.is_some() || o.tls_rx_error.is_some() {
                    self.publish(id);
                } else if o.done || (had_stash && s.stash.is_empty()) || o.urgent.changed {
                    // Only the active binding sees the end of the stream (and urgent data).
                    self.publish_one(id, b);
                }
                if let Some(owner) = owner {
                    // Urgent data arrived: SIGURG for the F_SETOWN owner, as the host's kernel
                    // would send it.
                    if let Some(s) = self.socks.get_mut(id) {
                        s.urg_signalled = Some(now);
                    }
                    self.backend.signal_owner(pid, owner);
                }
            }
        }
    }

    /// Ends socket `id`'s TX loan (sock.rs, *Lent TX*): the backend copies what is still
    /// unacknowledged, and the lending binding's stream is free up to what it handed over.
    /// Called before that binding's slot is freed and before a second binding is added.
    pub(super) fn end_loan(&mut self, id: SockId) {
        let Some(s) = self.socks.get_mut(id) else {
            return;
        };
        let Some(by) = s.lend_by.take() else {
            return;
        };
        self.backend.reclaim_tx(&s.os);
        let Some(p) = self.procs.get_mut(&by.sid) else {
            return;
        };
        if let Some((bd, _)) = p.sess.table.get_any_mut(by.slot) {
            if let Some(lent) = bd.tx_lent.take() {
                bd.tx_head = lent;
                if let Some(tx) = p.chan.region().tx(by.slot) {
                    tx.publish_head(lent);
                }
                p.chan.dirty(by.slot);
            }
        }
    }

    /// Sends binding `b`'s TX bytes. True when its TX is empty (or can never drain).
    pub(super) fn pump_tx(&mut self, id: SockId, b: Bind) -> bool {
        self.pump_tx_with(id, b, false)
    }

    /// [`Core::pump_tx`]; `fin_follows`: the caller closes the socket once this returns true
    /// (`sock::pump_tx`), or pushes what waits for the FIN (`Sock::tx_held`).
    pub(super) fn pump_tx_with(&mut self, id: SockId, b: Bind, fin_follows: bool) -> bool {
        let Some(s) = self.socks.get_mut(id) else {
            return true;
        };
        let Some(p) = self.procs.get_mut(&b.sid) else {
            return true;
        };
        let Some((bd, _)) = p.sess.table.get_any_mut(b.slot) else {
            return true;
        };
        match sock::pump_tx(&mut self.backend, s, &mut p.chan, b, bd, fin_follows) {
            Err(v) => {
                self.failed.push((b.sid, v));
                true
            }
            Ok(o) => {
                if let Some(e) = o.err {
                    s.fail(e);
                    Self::count_error(&mut self.procs, s.active, e);
                    self.publish(id);
                } else if o.done && s.shut_wr_pending {
                    self.shut_wr_if_drained(id);
                }
                o.done
            }
        }
    }

    /// SHUT_WR asked for: shut the OS socket once no binding has TX bytes left.
    pub(super) fn shut_wr_if_drained(&mut self, id: SockId) {
        let Some(s) = self.socks.get_mut(id) else {
            return;
        };
        for &b in &s.bindings {
            let pending = self.procs.get(&b.sid).and_then(|p| {
                let (bd, _) = p.sess.table.get_any(b.slot)?;
                Some(sock::tx_pending(&p.chan, b.slot, bd))
            });
            match pending {
                Some(Ok(0)) | None => {}
                Some(Ok(_)) => return,
                Some(Err(v)) => self.failed.push((b.sid, v)),
            }
        }
        if let Some(k) = s.ktls.as_mut() {
            // kTLS: the records sealed so far go before the FIN.
            match k.flush(&mut self.backend, &s.os) {
                Ok(true) => {}
                Ok(false) => return, // the next writable edge pumps TX and comes back here
                Err(e) => debug!("kTLS records before SHUT_WR: {e}"),
            }
        }
        if let Some(t) = s.tls.as_mut() {
            // TLS first: close_notify after the last record, then the FIN once it is out.
            t.close_notify();
            match crate::terminated::flush(&mut self.backend, &s.os, t) {
                Ok(true) => {}
                Ok(false) => return, // the next writable edge pumps TX and comes back here
                Err(e) => debug!("close_notify before SHUT_WR: {e}"),
            }
        }
        s.shut_wr_pending = false;
        if let Err(e) = self.backend.shutdown(&s.os, libc::SHUT_WR) {
            debug!("shutdown(SHUT_WR) after drain: {e}");
        }
    }

    /// Readiness of the backend socket `id`.
    pub(super) fn on_ready(&mut self, id: SockId, r: Readiness) {
        let Some(s) = self.socks.get_mut(id) else {
            return;
        };
        let kind = s.kind;
        match kind {
            Kind::Fresh => return,
            Kind::Listening => {
                if r.readable || r.error || r.hup {
                    self.fill_accept_queue(id, false);
                }
                return;
            }
            Kind::Connecting => match self.backend.connect_state(&s.os) {
                ConnectState::Pending => return,
                ConnectState::Connected => {
                    s.kind = Kind::Connected;
                    s.set_flags(SF_CONNECTED, SF_CONNECTING);
                    let t = s.connect_tag.take();
                    Self::publish_to(s, &mut self.procs);
                    if let Some(t) = t {
                        self.complete_to(t.by, t.tag, 0, Payload::None);
                    }
                }
                ConnectState::Failed(e) => {
                    s.kind = Kind::Fresh;
                    let t = s.connect_tag.take();
                    let who = t.as_ref().map(|t| t.by).or(s.active);
                    Self::count_error(&mut self.procs, who, e);
                    if t.is_some() {
                        s.set_flags(0, SF_CONNECTING);
                    } else {
                        s.post_error(e, 0, SF_CONNECTING);
                    }
                    Self::publish_to(s, &mut self.procs);
                    if let Some(t) = t {
                        self.complete_to(t.by, t.tag, neg(e), Payload::None);
                    }
                    // Bytes written before the connect failed can never leave.
                    for b in self.draining_bindings(id) {
                        self.finish_binding(b);
                    }
                    return;
                }
            },
            Kind::Connected => {}
        }
        if r.urgent {
            if let Some(s) = self.socks.get_mut(id) {
                s.urg_event = true;
            }
        }
        if r.readable || r.hup || r.error || r.urgent || kind != Kind::Connected {
            self.pump_rx_with(id, r.hup || r.error || kind != Kind::Connected);
        }
        // Every binding's TX (pumping changes no binding list). Draining bindings whose TX
        // emptied are finished afterwards; no allocation in the common case.
        let mut finish: Vec<Bind> = Vec::new();
        let mut i = 0;
        while let Some(b) = self.socks.get(id).and_then(|s| s.bindings.get(i).copied()) {
            if self.pump_tx(id, b) && self.is_draining(b) {
                finish.push(b);
            }
            i += 1;
        }
        if let Some(s) = self.socks.get_mut(id) {
            if r.error && !s.io_dead {
                let e = self.backend.take_error(&s.os);
                if e != 0 {
                    s.fail(e);
                    Self::count_error(&mut self.procs, s.active, e);
                    self.publish(id);
                }
            }
        }
        if self.socks.get(id).is_some_and(|s| s.io_dead) {
            // Nothing more can be sent: every draining binding is done.
            for b in self.draining_bindings(id) {
                if !finish.contains(&b) {
                    finish.push(b);
                }
            }
        }
        for b in finish {
            self.finish_binding(b);
        }
    }
}
