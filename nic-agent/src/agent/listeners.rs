//! Listeners: the shared accept queue filled from the backend, parked `CF_WAIT` accepts, and one
//! accept handing a connection to a binding.

use super::*;

impl<B: Backend> Core<B> {
    /// Moves connections from the kernel into the shared accept queue (up to its cap), serves
    /// parked accepts of any binding oldest first, and publishes `accept_ready` to every binding.
    /// `changed`: the caller already changed the queue (publish even when nothing new came).
    pub(super) fn fill_accept_queue(&mut self, id: SockId, mut changed: bool) {
        loop {
            let Some(s) = self.socks.get_mut(id) else {
                return;
            };
            let Some(l) = s.listener.as_mut() else {
                return;
            };
            while l.queue.len() < l.cap {
                match self.backend.accept(&s.os) {
                    Ok(c) => {
                        l.queue.push_back(c);
                        l.seq = l.seq.wrapping_add(1);
                        changed = true;
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
            if changed || served {
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
        let Some(p) = self.procs.get_mut(&by.sid) else {
            return;
        };
        if p.closing {
            return;
        }
        if !p.sess.table.has_free() {
            return self.complete_to(by, tag, neg(libc::EMFILE), Payload::None);
        }
        let Some(l) = self.socks.get_mut(lid) else {
            return;
        };
        let domain = l.domain;
        let Some((os, peer)) = l.listener.as_mut().and_then(|l| l.queue.pop_front()) else {
            return self.complete_to(by, tag, neg(libc::EAGAIN), Payload::None);
        };
        let mut s = Sock::new(os, domain);
        s.kind = Kind::Connected;
        s.set_flags(SF_CONNECTED, 0);
        let id = self.socks.insert(s);
        let slot = match p.sess.table.alloc(Binding::new(id)) {
            Ok(n) => n,
            Err(_) => {
                if let Some(s) = self.socks.remove(id) {
                    self.close_os(s);
                }
                return self.complete_to(by, tag, neg(libc::EMFILE), Payload::None);
            }
        };
        p.chan.reset_slot(slot);
        let nb = Bind { sid: by.sid, slot };
        let Some(s) = self.socks.get_mut(id) else {
            return;
        };
        s.bindings.push(nb);
        s.active = Some(nb);
        if let Err(e) = self.backend.register(&s.os, id.token()) {
            warn!(pid = p.sess.pid, "accept: registering the socket: {e}");
            if let Some(b) = p.sess.table.free(slot) {
                if let Some(s) = self.socks.remove(b.sock) {
                    self.close_os(s);
                }
            }
            return self.complete_to(by, tag, err_of(&e), Payload::None);
        }
        s.registered = true;
        Self::publish_to(s, &mut self.procs);
        self.pump_rx(id);
        self.complete_to(by, tag, i64::from(slot), Payload::Addr(peer.into()));
    }
}
