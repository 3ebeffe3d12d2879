//! The agent's loop: one iteration polls the epoll set (or peeks the device ring), serves backend
//! readiness, every command ring and the timers, then flushes each channel once (docs/agent-loop.md).

use super::*;

impl<B: Backend> Agent<B> {
    pub fn run(&mut self) {
        let mut last_epoll = Instant::now();
        let mut iter: u32 = 0;
        let mut idle = None; // what the last iteration's idle pass asked for (None: it had work)
        while !self.stop {
            iter = iter.wrapping_add(1);
            let peek = self.backend.rx_pending();
            // The clock is read only where something depends on it: a spin decision, timers
            // (at least every CLOCK_MAX_ITERS iterations), and the epoll pacing of backends
            // that cannot be peeked at.
            let clock = self.spin.tick() || idle == Some(Idle::Check) || peek.is_none();
            let mut now = clock.then(|| {
                self.spin.clock_read();
                Instant::now()
            });
            if let Some(t) = now.filter(|&t| self.spin.sample_due(t)) {
                self.spin
                    .sample(t, sys::involuntary_switches(), sys::cpu_pressure_us());
            }
            let next = match now {
                Some(t) if idle == Some(Idle::Check) && !self.backend.has_local_events() => {
                    self.spin.check(t)
                }
                _ => Next::Spin,
            };
            if next == Next::Yield {
                sys::sched_yield();
            }
            let sleepy = next == Next::Sleep;
            let mut timeout = 0;
            if sleepy {
                for p in self.procs.values().filter(|p| !p.closing) {
                    p.chan.announce_sleep();
                }
                if !self
                    .procs
                    .values()
                    .any(|p| !p.closing && p.chan.cmds_pending())
                    && self.backend.rx_pending() != Some(true)
                {
                    timeout = self.sleep_timeout(now.unwrap_or_else(Instant::now));
                }
            }
            let do_epoll = sleepy
                || match (peek, now) {
                    // A peekable backend is polled from its ring; the epoll set (control
                    // connections, doorbells, timers) every EPOLL_ITERS iterations.
                    (Some(_), _) => iter % EPOLL_ITERS == 0,
                    (None, Some(t)) => t.duration_since(last_epoll) >= EPOLL_EVERY,
                    (None, None) => true,
                };
            let n = if do_epoll {
                if let Some(t) = now {
                    last_epoll = t;
                }
                match self.epoll.wait(&mut self.evbuf, timeout) {
                    Ok(n) => n,
                    Err(e) => {
                        error!("epoll_wait: {e}");
                        0
                    }
                }
            } else {
                0
            };
            if sleepy {
                for p in self.procs.values().filter(|p| !p.closing) {
                    p.chan.retract_sleep();
                }
                if timeout != 0 {
                    // Asleep for a while: timers need the time after it.
                    now = Some(Instant::now());
                }
            }
            let (mut work, polled) = self.handle_events(n);
            if !polled && self.backend.rx_pending() == Some(true) {
                work |= self.on_backend();
            }
            work |= self.process_commands();
            work |= self.on_local_events();
            if let Some(t) = now {
                self.run_timers(t);
            }
            // Doorbells wait while more input is already queued (the next iteration serves it
            // before the woken host takes this CPU), for at most DOORBELL_DEFER iterations:
            // interrupt moderation that adds no latency to an idle agent.
            let more = work
                && (self.backend.rx_pending() == Some(true)
                    || self
                        .procs
                        .values()
                        .any(|p| !p.closing && p.chan.cmds_pending()));
            let ring = !more || self.deferred >= DOORBELL_DEFER;
            self.deferred = if ring { 0 } else { self.deferred + 1 };
            self.flush_all(ring);
            if work {
                self.spin.on_work();
                idle = None;
            } else {
                idle = Some(self.spin.on_idle());
            }
        }
        self.shutdown();
    }

    pub(super) fn sleep_timeout(&self, now: Instant) -> i32 {
        if self.procs.values().any(|p| p.chan.backlog() > 0) {
            // The host frees event-ring space without a doorbell: poll for it.
            return 1;
        }
        match self.next_timer {
            None => -1,
            Some(t) if t <= now => 0,
            Some(t) => (t - now).as_millis().clamp(1, i32::MAX as u128) as i32,
        }
    }

    /// Dispatches the agent epoll's events: (anything happened, the backend was polled).
    pub(super) fn handle_events(&mut self, n: usize) -> (bool, bool) {
        let mut work = false;
        let mut backend_ready = false;
        for i in 0..n {
            let (token, _bits) = (self.evbuf[i].u64, self.evbuf[i].events);
            match (token & KIND_MASK, token & ID_MASK) {
                (0, TOK_SIGNAL) => self.on_signal(),
                (0, TOK_LISTENER) => self.on_listener(),
                (0, TOK_BACKEND) => backend_ready = true,
                (KIND_CONN, id) => self.on_pending(id),
                (KIND_CTL, id) => self.on_ctl(id as u32),
                (KIND_PIDFD, id) => self.on_pidfd(id),
                (KIND_BELL, id) => {
                    if let Some(b) = self.procs.get(&(id as u32)).and_then(|p| p.bell.as_ref()) {
                        sys::eventfd_drain(b.as_raw_fd());
                    }
                }
                _ => warn!("unknown epoll token {token:#x}"),
            }
            work = true;
        }
        if backend_ready {
            work |= self.on_backend();
        }
        (work, backend_ready)
    }

    pub(super) fn on_signal(&mut self) {
        loop {
            match sys::read_signal(self.sigfd_raw) {
                Ok(Some(sig)) => {
                    info!("signal {sig}: shutting down");
                    self.stop = true;
                }
                Ok(None) => return,
                Err(e) => {
                    error!("reading signalfd: {e}");
                    return;
                }
            }
        }
    }

    /// Readiness of backend sockets; received in-order payload goes straight into the RX
    /// streams of the sockets' active bindings where there is room ([`DirectRx`]).
    pub(super) fn on_backend(&mut self) -> bool {
        let mut evs = std::mem::take(&mut self.sockevs);
        evs.clear();
        let mut sink = DirectRx {
            socks: &self.socks,
            procs: &mut self.procs,
        };
        if let Err(e) = self.backend.poll_into(&mut evs, &mut sink) {
            error!("backend poll: {e}");
        }
        let work = !evs.is_empty();
        for ev in &evs {
            self.on_ready(SockId::from_token(ev.token), ev.ready);
        }
        self.sockevs = evs;
        self.drop_failed();
        work
    }

    /// Readiness the backend made without a descriptor (loopback connections: a peer's
    /// `send` made this end readable). Served in the same iteration as the commands that caused
    /// it, so the peer's RX stream is published before the flush wakes its process.
    pub(super) fn on_local_events(&mut self) -> bool {
        let mut work = false;
        // Each round can cause the next (recv frees space: the writer is writable again);
        // bounded so the command rings are not starved.
        for _ in 0..LOCAL_ROUNDS {
            if !self.backend.has_local_events() {
                break;
            }
            let mut evs = std::mem::take(&mut self.sockevs);
            evs.clear();
            self.backend.poll_local(&mut evs);
            for ev in &evs {
                self.on_ready(SockId::from_token(ev.token), ev.ready);
            }
            self.sockevs = evs;
            self.drop_failed();
            work = true;
        }
        work
    }

    pub(super) fn process_commands(&mut self) -> bool {
        let mut work = false;
        let mut cursor = 0u32;
        while let Some(sid) = self.procs.range(cursor..).next().map(|(&s, _)| s) {
            for _ in 0..CMD_BATCH {
                let Some(p) = self.procs.get_mut(&sid) else {
                    break;
                };
                // Back-pressure: a host that does not drain its events gets no more commands run.
                let limit = p.chan.region().geometry().evt_entries as usize * 4;
                if p.closing || p.chan.backlog() >= limit {
                    break;
                }
                let r = match p.chan.pop_cmd() {
                    Ok(Some(c)) => match p.sess.decode(&c) {
                        Ok(cmd) => self.exec(sid, cmd),
                        Err(v) => Err(v),
                    },
                    Ok(None) => break,
                    Err(v) => Err(v),
                };
                work = true;
                if let Err(v) = r {
                    self.failed.push((sid, v));
                }
                if !self.failed.is_empty() {
                    break;
                }
            }
            self.drop_failed();
            match sid.checked_add(1) {
                Some(c) => cursor = c,
                None => break,
            }
        }
        work
    }

    pub(super) fn run_timers(&mut self, now: Instant) {
        let Some(t) = self.next_timer else { return };
        if t > now {
            return;
        }
        self.next_timer = None;
        let mut expired = Vec::new();
        for (&sid, p) in &self.procs {
            for slot in p.sess.table.used_slots() {
                let Some((b, true)) = p.sess.table.get_any(slot) else {
                    continue;
                };
                match b.drain_deadline {
                    Some(d) if d <= now => expired.push(Bind { sid, slot }),
                    Some(d) => arm(&mut self.next_timer, d),
                    None => {}
                }
            }
        }
        for b in expired {
            debug!(session = b.sid, slot = b.slot, "drain timed out, closing");
            self.finish_binding(b);
        }
        for tid in self.tickets.expired(now) {
            debug!("fork ticket expired unclaimed");
            self.drop_ticket(tid);
        }
        if let Some(d) = self.tickets.next_deadline() {
            arm(&mut self.next_timer, d);
        }
        self.drop_failed();
    }

    pub(super) fn flush_all(&mut self, ring: bool) {
        let mut finished = Vec::new();
        for (&sid, p) in self.procs.iter_mut() {
            if p.closing {
                if p.sess.table.live_count() + p.sess.table.draining_count() == 0 {
                    finished.push(sid);
                }
                continue;
            }
            if let Err(v) = p.chan.flush() {
                self.failed.push((sid, v));
            }
            if ring && p.chan.owes() {
                p.chan.ring_owed();
            }
        }
        self.drop_failed();
        for sid in finished {
            if let Some(p) = self.procs.remove(&sid) {
                debug!(
                    pid = p.sess.pid,
                    session = sid,
                    "last drain finished, region released"
                );
                self.retired.add(&p.chan.counters);
            }
        }
    }

    pub(super) fn shutdown(&mut self) {
        for p in self.procs.values_mut() {
            p.chan.kill();
        }
        self.procs.clear();
        for id in self.socks.ids() {
            if let Some(s) = self.socks.remove(id) {
                self.close_os(s);
            }
        }
        self.pidfds.clear();
        self.pending.clear();
        if self.socket_id.is_some() && sys::file_id(&self.cfg.socket) == self.socket_id {
            if let Err(e) = std::fs::remove_file(&self.cfg.socket) {
                warn!("removing {}: {e}", self.cfg.socket.display());
            }
        }
        info!("snstack-agent stopped");
    }
}
