//! The agent's loop (the shell around [`Core`]): one iteration polls the epoll set (or peeks the
//! device ring), hands backend readiness, every command ring and the timers to the core, then
//! flushes each channel once and does what the core asked (docs/agent-loop.md).

use super::*;

impl<B: Backend> Agent<B> {
    pub fn run(&mut self) {
        let mut last_epoll = Instant::now();
        let mut iter: u32 = 0;
        let mut idle = None; // what the last iteration's idle pass asked for (None: it had work)
        while !self.stop {
            iter = iter.wrapping_add(1);
            let peek = self.core.backend().rx_pending();
            // The clock is read only where something depends on it: a spin decision, timers
            // (at least every CLOCK_MAX_ITERS iterations), and the epoll pacing of backends
            // that cannot be peeked at.
            let clock = self.spin.tick() || idle == Some(Idle::Check) || peek.is_none();
            let mut now = clock.then(|| {
                self.spin.clock_read();
                Instant::now()
            });
            if let Some(t) = now {
                self.clock = t;
            }
            if let Some(t) = now.filter(|&t| self.spin.sample_due(t)) {
                let (switches, cpu_us) = sys::thread_usage();
                self.spin
                    .sample(t, switches, sys::cpu_pressure_us(), cpu_us);
                if let Some(rt) = self.spin.take_priority_change() {
                    self.set_realtime(rt);
                }
            }
            let next = match now {
                Some(t) if idle == Some(Idle::Check) && !self.core.backend().has_local_events() => {
                    self.spin.check(t)
                }
                _ => Next::Spin,
            };
            if next == Next::Yield {
                let start = now.unwrap_or_else(Instant::now);
                sys::sched_yield();
                let end = Instant::now();
                self.spin.yielded(start, end);
                now = Some(end);
                self.clock = end;
            }
            let sleepy = next == Next::Sleep;
            let mut timeout = Some(Duration::ZERO);
            let mut polling = false;
            if sleepy {
                self.ring_held();
                // While a host answers what it was just given, a timer picks its commands up
                // and it writes no doorbell (host_poll.rs).
                let hot = self.host_poll.enabled() && {
                    self.refresh_apart();
                    self.core.end_round()
                };
                let poll = self.host_poll.sleep(hot);
                self.core.announce_sleep(poll.is_some());
                if !self.core.cmds_pending() && self.core.backend().rx_pending() != Some(true) {
                    timeout = self.sleep_timeout(now.unwrap_or_else(Instant::now));
                    if let Some(p) = poll {
                        polling = true;
                        timeout = Some(timeout.map_or(p, |t| t.min(p)));
                    }
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
            // Awake, a backend whose poll is a wait on its own set is polled on its own, the
            // agent set around it every OUTER_EVERY polls.
            let direct = do_epoll
                && !sleepy
                && self.outer_skips < OUTER_EVERY
                && self.core.backend().poll_is_wait();
            if do_epoll {
                self.outer_skips = if direct { self.outer_skips + 1 } else { 0 };
                if let Some(t) = now {
                    last_epoll = t;
                }
            }
            let n = if do_epoll && !direct {
                match self.epoll.wait_for(&mut self.evbuf, timeout) {
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
                self.core.retract_sleep();
                if polling {
                    let found = if self.core.cmds_pending() {
                        Found::Commands
                    } else if n > 0 {
                        Found::Other
                    } else {
                        Found::Nothing
                    };
                    if self.host_poll.woke(found) {
                        self.core.cool_all();
                    }
                }
                if timeout != Some(Duration::ZERO) {
                    // Asleep for a while: timers need the time after it.
                    now = Some(Instant::now());
                    self.clock = now.unwrap_or(self.clock);
                }
            }
            // Commands and readiness get the last clock read: deadlines they start (drains,
            // tickets) may be that much early, never late.
            let t = self.clock;
            let (mut work, polled) = self.handle_events(n, t);
            if direct || (!polled && self.core.backend().rx_pending() == Some(true)) {
                work |= self.core.poll_backend(t);
            }
            work |= self.core.process_commands(t);
            work |= self.core.poll_local(t);
            if let Some(t) = now {
                self.core.handle_timeout(t);
            }
            self.perform(false);
            // Doorbells wait while more input is already queued (the next iteration serves it
            // before the woken host takes this CPU), for at most DOORBELL_DEFER iterations:
            // interrupt moderation that adds no latency to an idle agent.
            let more = work
                && (self.core.backend().rx_pending() == Some(true) || self.core.cmds_pending());
            // On a contended CPU the doorbells of processes on CPUs apart from the agent's are
            // held while the agent works and yields (the CPU goes to the tasks producing its
            // input), for at most DOORBELL_HOLD (aged by the loop's own clock reads: every
            // idle pass reads it; a busy run is bounded by DOORBELL_HOLD_ITERS) and never
            // across a sleep: such a host wakes, on an idle core of its own, to a larger batch.
            // Those of processes that can only run on the agent's one CPU are held while the
            // iteration had work and rung by the first idle one (before the agent yields or
            // sleeps): woken earlier, such a host preempts the agent in the middle of its batch
            // and wakes to a smaller one of its own.
            self.holding = self.spin.contended();
            self.busy = work;
            let ring = !more || self.deferred >= DOORBELL_DEFER;
            let hold_due = self.deferred >= DOORBELL_HOLD_ITERS
                || self
                    .held_since
                    .is_some_and(|t| self.clock.saturating_duration_since(t) >= DOORBELL_HOLD);
            self.core.flush();
            self.perform(ring);
            self.ring_due(ring, hold_due);
            // Iterations the held doorbells have waited.
            self.deferred = if self.held.is_empty() {
                0
            } else {
                self.deferred + 1
            };
            if work {
                self.spin.on_work();
                idle = None;
            } else {
                idle = Some(self.spin.on_idle());
            }
        }
        self.shutdown();
    }

    /// `--realtime auto` asked for (or out of) real-time priority (spin.rs).
    fn set_realtime(&mut self, on: bool) {
        match sys::set_realtime(on) {
            Ok(()) => debug!(on, "real-time priority"),
            Err(e) => {
                // Only entering the real-time class needs a privilege: this is the first request.
                warn!("--realtime auto: cannot change the scheduling class ({e}); staying in the normal one");
                self.spin.realtime_refused();
            }
        }
    }

    /// How long a sleep may last (`None`: until something happens).
    pub(super) fn sleep_timeout(&self, now: Instant) -> Option<Duration> {
        if self.core.has_backlog() {
            // The host frees event-ring space without a doorbell: poll for it.
            return Some(Duration::from_millis(1));
        }
        // Timers in whole milliseconds, at least one (as before `epoll_pwait2`: a timer due
        // within a millisecond waits for it rather than spinning through zero timeouts).
        self.core
            .next_deadline()
            .map(|t| match t.checked_duration_since(now) {
                None => Duration::ZERO,
                Some(d) if d.is_zero() => Duration::ZERO,
                Some(d) => Duration::from_millis(d.as_millis().clamp(1, u64::MAX as u128) as u64),
            })
    }

    /// Dispatches the agent epoll's events: (anything happened, the backend was polled).
    pub(super) fn handle_events(&mut self, n: usize, now: Instant) -> (bool, bool) {
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
                (KIND_PIDFD, id) => self.core.ticket_child_exited(id, now),
                (KIND_BELL, id) => {
                    if let Some(c) = self.conns.get(&(id as u32)) {
                        sys::eventfd_drain(c.bell.as_raw_fd());
                    }
                }
                _ => warn!("unknown epoll token {token:#x}"),
            }
            work = true;
        }
        if backend_ready {
            work |= self.core.poll_backend(now);
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

    /// Does what the core asked. `ring`: owed doorbells are written now (else they wait for
    /// a later flush, which asks again).
    pub(super) fn perform(&mut self, ring: bool) {
        while let Some(a) = self.core.poll_action() {
            match a {
                Action::RingDoorbells(sid) => {
                    if ring && !self.may_hold(sid) {
                        if let Some(ch) = self.core.channel_mut(sid) {
                            ch.ring_owed();
                        }
                    } else if !self.held.contains(&sid) {
                        self.held.push(sid);
                        self.held_since.get_or_insert_with(Instant::now);
                    }
                }
                Action::WatchPid { ticket, pid } => self.watch_pid(ticket, pid),
                Action::UnwatchPid(ticket) => {
                    self.pidfds.remove(&ticket);
                }
                Action::Release {
                    sid,
                    mut chan,
                    killed,
                } => {
                    self.conns.remove(&sid);
                    if killed {
                        chan.ring_owed();
                    }
                }
            }
        }
    }

    /// Whether session `sid`'s doorbells may be held this iteration: the agent's CPU is
    /// contended, and the process runs on CPUs apart from the agent's, or only on the agent's
    /// CPUs while the agent is busy (woken now, it would take the CPU from the agent's batch;
    /// docs/agent-loop.md, *Doorbells*).
    fn may_hold(&mut self, sid: u32) -> bool {
        let now = self.clock;
        let (holding, busy) = (self.holding, self.busy);
        self.conns
            .get_mut(&sid)
            .is_some_and(|c| may_hold(holding, busy, c.placement(now)))
    }

    /// Tells each channel whether its process runs apart from the agent's CPUs (only those are
    /// polled for instead of rung: host_poll.rs).
    fn refresh_apart(&mut self) {
        let now = self.clock;
        for (&sid, c) in self.conns.iter_mut() {
            let apart = c.apart(now);
            if let Some(ch) = self.core.channel_mut(sid) {
                ch.set_apart(apart);
            }
        }
    }

    /// Writes the held doorbells that are due: all of them when the hold ran out (`hold_due`),
    /// else, when the iteration rings (`ring`), those of processes that may not be held.
    fn ring_due(&mut self, ring: bool, hold_due: bool) {
        if self.held.is_empty() || !(ring || hold_due) {
            return;
        }
        let mut i = 0;
        while i < self.held.len() {
            let sid = self.held[i];
            if hold_due || !self.may_hold(sid) {
                if let Some(ch) = self.core.channel_mut(sid) {
                    ch.ring_owed();
                }
                self.held.swap_remove(i);
            } else {
                i += 1;
            }
        }
        if self.held.is_empty() {
            self.held_since = None;
        }
    }

    /// Writes every held doorbell (before the agent sleeps).
    pub(super) fn ring_held(&mut self) {
        self.ring_due(true, true);
    }

    pub(super) fn shutdown(&mut self) {
        self.core.shutdown();
        self.holding = false;
        self.busy = false;
        self.perform(true);
        self.ring_held();
        self.conns.clear();
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

/// The doorbell hold policy (docs/agent-loop.md, *Doorbells*): on a contended agent CPU
/// (`holding`) a process on CPUs apart from the agent's is held (it wakes to a larger batch on a
/// core of its own), one that can only run on the agent's one CPU while the agent is `busy`
/// (woken now it would preempt the agent's batch), and one that may also run elsewhere never (it
/// would wait for a CPU it could be using). An agent with a core of its own holds nobody.
fn may_hold(holding: bool, busy: bool, placement: sys::Placement) -> bool {
    holding
        && match placement {
            sys::Placement::Apart => true,
            sys::Placement::Within => busy,
            sys::Placement::Mixed => false,
        }
}

#[cfg(test)]
mod tests {
    use super::may_hold;
    use crate::sys::Placement::{Apart, Mixed, Within};

    #[test]
    fn doorbells_are_held_only_on_a_contended_cpu_and_by_placement() {
        for p in [Apart, Within, Mixed] {
            for busy in [false, true] {
                assert!(!may_hold(false, busy, p), "a core of its own holds nobody");
            }
        }
        assert!(may_hold(true, false, Apart) && may_hold(true, true, Apart));
        assert!(
            may_hold(true, true, Within),
            "only on the agent's one CPU: held while busy"
        );
        assert!(
            !may_hold(true, false, Within),
            "...and rung by the first idle iteration"
        );
        assert!(!may_hold(true, true, Mixed) && !may_hold(true, false, Mixed));
    }
}
