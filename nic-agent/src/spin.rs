//! When the agent's loop keeps spinning and when it goes to sleep (sans-IO: the loop passes the
//! time and the kernel's counters in).
//!
//! Spinning after the last piece of work saves the wake-up latency of the next one, but only
//! when the agent has a core to itself (a BlueField's Arm cores). Where it shares cores with the
//! applications it serves, every microsecond it spins is taken from them, and they are what
//! produces its work. So the policy watches two signals the kernel keeps for free: involuntary
//! context switches of the agent's thread (`ru_nivcsw`: a thread that is preempted wants a CPU
//! that someone else also wants) and the system's CPU pressure (`/proc/pressure/cpu`: time some
//! task waited for a CPU; a host woken behind a spinning agent often waits without preempting
//! it). A [`WINDOW`] with spinning on and at least [`CONTENDED_SWITCHES`] switches or
//! [`STALL_PCT`] % of pressure pauses spinning: the agent then sleeps as soon as one pass over
//! its inputs finds nothing. The pause lasts one window, and doubles (up to [`MAX_BACKOFF`]) each
//! time the probe that follows it finds contention again, because a spinning window on a
//! contended CPU is a burst of latency for whoever waits behind it; it stays on while contention
//! persists without spinning, and starts again from one window after [`QUIET_RESET`] quiet
//! spinning windows.
//!
//! While contended, the agent does not go to sleep at the first idle pass: it first gives its
//! CPU away with `sched_yield` for up to [`YIELD_PASSES`] passes. The tasks waiting for that CPU
//! are mostly the ones that produce the agent's next work (the application answering the request
//! just delivered, the device's receive thread); a yield hands the CPU to them directly, and the
//! agent's next pass finds their work without a sleep and wake-up pair (two context switches, an
//! inter-processor wake-up, and the host's doorbell write, which a host skips while the agent is
//! not announced asleep). With nobody waiting a yield returns at once and costs one syscall.
//! With a task that does not block waiting (a client that paces its sends by spinning), a yield
//! gives it the rest of its time slice, milliseconds during which the agent serves nothing: so
//! the loop reports how long each yield took ([`SpinPolicy::yielded`]), and one that took longer
//! than [`YIELD_SLOW`] turns yielding off for a while ([`YIELD_PAUSE`], doubling up to
//! [`MAX_BACKOFF`] while probes keep finding it slow), and the agent sleeps instead, to be woken
//! (and preferred by the scheduler, as a task that slept) when its input arrives.
//!
//! The loop reads no clock on a busy iteration: idle passes are counted, and the clock is read
//! every [`CLOCK_EVERY`] of them (and at least every [`CLOCK_MAX_ITERS`] iterations for timers).

use std::time::{Duration, Instant};

/// Idle passes between two clock reads while spinning.
pub const CLOCK_EVERY: u32 = 16;
/// Iterations after which the loop reads the clock even when every one had work (timers).
pub const CLOCK_MAX_ITERS: u32 = 1024;
/// Length of one contention sample (one `getrusage` per window; short, because a spinning
/// window on a contended CPU is a burst of latency for whoever waits behind it).
pub const WINDOW: Duration = Duration::from_millis(10);
/// Share of a window (percent) during which some task waited for a CPU (`/proc/pressure/cpu`,
/// "some") that means the CPU is contended.
pub const STALL_PCT: u64 = 2;
/// Involuntary switches in one window that mean the CPU is contended.
pub const CONTENDED_SWITCHES: u64 = 2;
/// Longest pause of spinning after a probe found the CPU contended again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Quiet spinning windows after which the pause starts again from one window.
pub const QUIET_RESET: u32 = 50;
/// Idle passes, each after a `sched_yield`, before a contended agent sleeps (see the module
/// doc). Measured on the 2-vCPU rig (nginx keepalive, wrk -c100, af_packet): agent CPU per
/// request about 10 % lower with 1 to 4 than with none, little difference between them.
pub const YIELD_PASSES: u32 = 2;
/// A yield that kept the agent off its CPU longer than this turns yielding off (module doc).
pub const YIELD_SLOW: Duration = Duration::from_millis(1);
/// First pause of yielding after a slow yield.
pub const YIELD_PAUSE: Duration = Duration::from_millis(100);
/// `--realtime auto`: a contended agent whose own CPU share in a window is below this (percent)
/// runs at real-time priority (its load is latency-bound: every wake-up should preempt)...
pub const RT_ENTER_PCT: u64 = 20;
/// ...and goes back to the normal class above this share (a busy agent batches better when it
/// does not preempt the tasks that produce its work). Real-time priority itself raises the
/// share of a busy load (each wake-up preempts the client and ends a batch: nginx
/// `Connection: close` 0.25 -> 0.38 of the CPU, 6.3 -> 12 us per connection on the 2-vCPU
/// rig), so this sits well under twice RT_ENTER_PCT: with 25 and 50 such loads stayed
/// real-time for good once a quiet moment (a ramp-up) let them in.
pub const RT_LEAVE_PCT: u64 = 30;
/// After leaving real-time priority for load, the agent stays in the normal class at least
/// this long before it may enter again (doubling up to [`MAX_BACKOFF`] while the same happens
/// again, back to this after [`QUIET_RESET`] windows in a row at real-time priority): a
/// steady load near the thresholds does not flip at every window.
pub const RT_HOLD: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct SpinPolicy {
    budget: Duration,
    idle_passes: u32,
    iters_since_clock: u32,
    idle_since: Option<Instant>,
    window_start: Option<Instant>,
    switches_at_start: u64,
    stall_at_start: Option<u64>,
    contended: bool,
    /// Spinning stays off until then (it was contended).
    off_until: Option<Instant>,
    /// The next pause when a probe finds the CPU contended again (doubles up to MAX_BACKOFF).
    backoff: Duration,
    /// Consecutive spinning windows without contention.
    quiet: u32,
    /// Yields since the last work.
    yields: u32,
    yield_passes: u32,
    /// Yielding stays off until then (a yield was slow).
    yield_off_until: Option<Instant>,
    /// The next pause after a slow yield (doubles up to MAX_BACKOFF; back to YIELD_PAUSE after a
    /// fast one).
    yield_backoff: Duration,
    /// Windows in which spinning found the CPU contended (each a burst of latency for whoever
    /// waited behind it), and yields that kept the agent off its CPU longer than YIELD_SLOW:
    /// `agent_spin_contended` and `agent_slow_yields` in the stats.
    pub contended_windows: u64,
    pub slow_yields: u64,
    /// `--realtime auto`: the policy may ask for real-time priority (RT_ENTER_PCT).
    rt_auto: bool,
    /// Real-time priority in force (as last asked of the loop).
    realtime: bool,
    /// A change of priority the loop has not applied yet.
    rt_change: Option<bool>,
    /// The agent thread's CPU time (µs) at the window's start.
    cpu_at_start: u64,
    /// No real-time priority before then (it was left for load: RT_HOLD).
    rt_hold_until: Option<Instant>,
    /// The next hold (doubles up to MAX_BACKOFF).
    rt_backoff: Duration,
    /// Windows in a row at real-time priority.
    rt_windows: u32,
}

/// What one idle pass asks of the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idle {
    /// Spin on: check the inputs again without a clock read.
    Spin,
    /// Read the clock and call [`SpinPolicy::check`].
    Check,
}

/// What the loop does after an idle pass that read the clock ([`SpinPolicy::check`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Keep spinning.
    Spin,
    /// Give the CPU to whoever waits for it (`sched_yield`), then pass over the inputs again.
    Yield,
    /// Announce the sleep and block.
    Sleep,
}

impl SpinPolicy {
    pub fn new(budget: Duration) -> SpinPolicy {
        SpinPolicy::with_yields(budget, YIELD_PASSES)
    }

    /// A policy that yields at most `yield_passes` times before a contended sleep.
    pub fn with_yields(budget: Duration, yield_passes: u32) -> SpinPolicy {
        SpinPolicy {
            budget,
            idle_passes: 0,
            iters_since_clock: 0,
            idle_since: None,
            window_start: None,
            switches_at_start: 0,
            stall_at_start: None,
            contended: false,
            off_until: None,
            backoff: WINDOW,
            quiet: 0,
            yields: 0,
            yield_passes,
            yield_off_until: None,
            yield_backoff: YIELD_PAUSE,
            contended_windows: 0,
            slow_yields: 0,
            rt_auto: false,
            realtime: false,
            rt_change: None,
            cpu_at_start: 0,
            rt_hold_until: None,
            rt_backoff: RT_HOLD,
            rt_windows: 0,
        }
    }

    /// `--realtime auto` when `on`: real-time priority while the CPU is contended and the agent's
    /// own share of it is small (see [`SpinPolicy::take_priority_change`]).
    pub fn with_realtime_auto(mut self, on: bool) -> SpinPolicy {
        self.rt_auto = on;
        self
    }

    /// The priority the loop should switch to (true: real-time), once per change.
    pub fn take_priority_change(&mut self) -> Option<bool> {
        self.rt_change.take()
    }

    /// Real-time priority could not be set (no `CAP_SYS_NICE`): the policy stops asking.
    pub fn realtime_refused(&mut self) {
        self.rt_auto = false;
        self.realtime = false;
    }

    /// Real-time priority in force.
    pub fn realtime(&self) -> bool {
        self.realtime
    }

    /// An iteration found work.
    pub fn on_work(&mut self) {
        self.yields = 0;
        self.idle_passes = 0;
        self.idle_since = None;
    }

    /// An iteration found nothing.
    pub fn on_idle(&mut self) -> Idle {
        self.idle_passes = self.idle_passes.saturating_add(1);
        if self.effective_budget().is_zero() || self.idle_passes % CLOCK_EVERY == 0 {
            Idle::Check
        } else {
            Idle::Spin
        }
    }

    /// Counts an iteration; true when the loop should read the clock for its timers anyway.
    pub fn tick(&mut self) -> bool {
        self.iters_since_clock += 1;
        self.iters_since_clock >= CLOCK_MAX_ITERS
    }

    /// The loop read the clock.
    pub fn clock_read(&mut self) {
        self.iters_since_clock = 0;
    }

    /// Whether a contention sample is due (then pass the thread's involuntary switch count to
    /// [`SpinPolicy::sample`]).
    pub fn sample_due(&self, now: Instant) -> bool {
        self.window_start
            .map_or(true, |s| now.saturating_duration_since(s) >= WINDOW)
    }

    /// `involuntary_switches`: the agent thread's so far; `stall_us`: the system's CPU pressure
    /// total (microseconds some task waited for a CPU), when the kernel has PSI; `cpu_us`: the
    /// agent thread's CPU time so far.
    pub fn sample(
        &mut self,
        now: Instant,
        involuntary_switches: u64,
        stall_us: Option<u64>,
        cpu_us: u64,
    ) {
        if let Some(start) = self.window_start {
            let window_us = now.saturating_duration_since(start).as_micros() as u64;
            if self.rt_auto && window_us > 0 {
                let share = cpu_us.saturating_sub(self.cpu_at_start) * 100 / window_us;
                // Contention is what makes a wake-up wait (a task on the agent's CPU that the
                // wake-up does not preempt); at real-time priority the agent is preempted no
                // more, so only its share decides the way back.
                let want = if self.realtime {
                    self.rt_windows = self.rt_windows.saturating_add(1);
                    if self.rt_windows >= QUIET_RESET {
                        self.rt_backoff = RT_HOLD;
                    }
                    share <= RT_LEAVE_PCT
                } else {
                    self.contended
                        && share < RT_ENTER_PCT
                        && self.rt_hold_until.map_or(true, |t| now >= t)
                };
                if want != self.realtime {
                    if !want {
                        // Left for load: hold the normal class for a while (RT_HOLD).
                        self.rt_hold_until = Some(now + self.rt_backoff);
                        self.rt_backoff = (self.rt_backoff * 2).min(MAX_BACKOFF);
                    }
                    self.rt_windows = 0;
                    self.realtime = want;
                    self.rt_change = Some(want);
                }
            }
            let stalled = match (stall_us, self.stall_at_start) {
                (Some(b), Some(a)) => b.saturating_sub(a) * 100 >= window_us * STALL_PCT,
                _ => false,
            };
            let hot = stalled
                || involuntary_switches.saturating_sub(self.switches_at_start)
                    >= CONTENDED_SWITCHES;
            if !self.contended {
                // A window with spinning on.
                if hot {
                    // Spinning takes a CPU someone else wants: pause it, longer each time a
                    // probe finds the same (a probe's window is a burst of latency for them).
                    self.contended = true;
                    self.contended_windows += 1;
                    self.off_until = Some(now + self.backoff);
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    self.quiet = 0;
                } else {
                    self.quiet += 1;
                    if self.quiet >= QUIET_RESET {
                        self.backoff = WINDOW;
                    }
                }
            } else if hot {
                // Preempted although it sleeps at once: busy regardless; stay off.
                self.off_until = Some(now + WINDOW.max(self.backoff / 2));
            } else if self.off_until.map_or(true, |t| t <= now) {
                // The pause is over: probe with spinning on.
                self.contended = false;
                self.off_until = None;
            }
        }
        self.window_start = Some(now);
        self.switches_at_start = involuntary_switches;
        self.stall_at_start = stall_us;
        self.cpu_at_start = cpu_us;
    }

    /// At a clock read during idle passes: what the loop does next.
    pub fn check(&mut self, now: Instant) -> Next {
        let since = *self.idle_since.get_or_insert(now);
        if now.saturating_duration_since(since) < self.effective_budget() {
            Next::Spin
        } else if self.contended
            && !self.realtime
            && self.yields < self.yield_passes
            && self.yield_off_until.map_or(true, |t| now >= t)
        {
            self.yields += 1;
            Next::Yield
        } else {
            Next::Sleep
        }
    }

    /// The loop's `sched_yield` ran from `start` to `end`: a slow one pauses yielding.
    pub fn yielded(&mut self, start: Instant, end: Instant) {
        if end.saturating_duration_since(start) > YIELD_SLOW {
            self.slow_yields += 1;
            self.yield_off_until = Some(end + self.yield_backoff);
            self.yield_backoff = (self.yield_backoff * 2).min(MAX_BACKOFF);
        } else {
            self.yield_backoff = YIELD_PAUSE;
        }
    }

    /// The spin time in force: the configured one, or none while the CPU is contended.
    /// The agent's CPU is contended (it shares its core): spinning is off.
    pub fn contended(&self) -> bool {
        self.contended
    }

    pub fn effective_budget(&self) -> Duration {
        // At real-time priority a spin would keep the tasks of the agent's CPU off it (a yield
        // does not hand the CPU to the normal class): sleep at once, each wake-up preempts.
        if self.contended || self.realtime {
            Duration::ZERO
        } else {
            self.budget
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_sleeps(p: &mut SpinPolicy, now: Instant) {
        assert_eq!(p.check(now), Next::Sleep);
    }

    #[test]
    fn spins_the_budget_then_sleeps() {
        let t0 = Instant::now();
        let mut p = SpinPolicy::new(Duration::from_micros(50));
        p.sample(t0, 0, None, 0);
        p.on_work();
        for _ in 1..CLOCK_EVERY {
            assert_eq!(p.on_idle(), Idle::Spin);
        }
        assert_eq!(p.on_idle(), Idle::Check);
        assert_eq!(Next::Spin, p.check(t0)); // starts the idle period
        assert_eq!(Next::Spin, p.check(t0 + Duration::from_micros(49)));
        assert_sleeps(&mut p, t0 + Duration::from_micros(50));
        // Work restarts the period.
        p.on_work();
        assert_eq!(Next::Spin, p.check(t0 + Duration::from_micros(60)));
    }

    #[test]
    fn preemption_turns_spinning_off_until_a_quiet_window() {
        let t0 = Instant::now();
        let mut p = SpinPolicy::new(Duration::from_micros(50));
        p.sample(t0, 10, None, 0);
        assert!(!p.sample_due(t0 + WINDOW / 2));
        assert!(p.sample_due(t0 + WINDOW));
        p.sample(t0 + WINDOW, 10 + CONTENDED_SWITCHES, None, 0);
        assert_eq!(p.effective_budget(), Duration::ZERO);
        // Contended: the first idle pass already decides: yield the CPU, a bounded number of
        // passes, then sleep; work in between starts the yields again.
        p.on_work();
        assert_eq!(p.on_idle(), Idle::Check);
        for _ in 0..YIELD_PASSES {
            assert_eq!(p.check(t0 + WINDOW), Next::Yield);
        }
        assert_sleeps(&mut p, t0 + WINDOW);
        p.on_work();
        assert_eq!(p.check(t0 + WINDOW), Next::Yield);
        // A slow yield (a task that kept the CPU for its slice) turns yielding off for a pause,
        // longer each time the probe after it is slow again; a fast one resets the pause.
        let t1 = t0 + WINDOW;
        p.yielded(t1, t1 + YIELD_SLOW + Duration::from_micros(1));
        p.on_work();
        assert_sleeps(&mut p, t1);
        assert_sleeps(&mut p, t1 + YIELD_PAUSE - Duration::from_micros(1));
        p.on_work();
        let t2 = t1 + YIELD_PAUSE + 2 * YIELD_SLOW;
        assert_eq!(p.check(t2), Next::Yield);
        p.yielded(t2, t2 + Duration::from_millis(3));
        p.on_work();
        assert_sleeps(&mut p, t2 + Duration::from_millis(3) + YIELD_PAUSE);
        p.on_work();
        let t3 = t2 + Duration::from_millis(3) + 2 * YIELD_PAUSE;
        assert_eq!(p.check(t3), Next::Yield);
        p.yielded(t3, t3 + Duration::from_micros(5));
        p.yielded(t3, t3 + YIELD_SLOW * 2);
        p.on_work();
        assert_sleeps(&mut p, t3 + YIELD_PAUSE);
        // Counted for the stats: the one contended spinning window, the three slow yields.
        assert_eq!((p.contended_windows, p.slow_yields), (1, 3));
        let mut q = SpinPolicy::with_yields(Duration::from_micros(50), 0);
        q.sample(t0, 0, None, 0);
        q.sample(t0 + WINDOW, CONTENDED_SWITCHES, None, 0);
        assert_sleeps(&mut q, t0 + WINDOW);
        // One quiet window: spinning again.
        p.sample(t0 + 2 * WINDOW, 10 + CONTENDED_SWITCHES + 1, None, 0);
        assert_eq!(p.effective_budget(), Duration::from_micros(50));
        p.on_work();
        assert_eq!(p.on_idle(), Idle::Spin);
    }

    #[test]
    fn realtime_auto_while_contended_and_lightly_loaded() {
        let t0 = Instant::now();
        let w = WINDOW.as_micros() as u64;
        let mut p = SpinPolicy::new(Duration::from_micros(50)).with_realtime_auto(true);
        p.sample(t0, 0, None, 0);
        // Contended (preempted), 10 % of the CPU: the next window asks for real-time, once.
        p.sample(t0 + WINDOW, CONTENDED_SWITCHES, None, w / 10);
        assert!(p.contended() && !p.realtime());
        p.sample(t0 + 2 * WINDOW, CONTENDED_SWITCHES, None, 2 * w / 10);
        assert!(p.realtime());
        assert_eq!(p.take_priority_change(), Some(true));
        assert_eq!(p.take_priority_change(), None);
        // Real-time: no spin, no yields, sleep at the first idle pass.
        assert_eq!(p.effective_budget(), Duration::ZERO);
        p.on_work();
        assert_eq!(p.on_idle(), Idle::Check);
        assert_sleeps(&mut p, t0 + 2 * WINDOW);
        // Up to RT_LEAVE_PCT it stays; above it, back to the normal class.
        p.sample(
            t0 + 3 * WINDOW,
            CONTENDED_SWITCHES,
            None,
            2 * w / 10 + w * RT_LEAVE_PCT / 100,
        );
        assert_eq!(p.take_priority_change(), None);
        p.sample(
            t0 + 4 * WINDOW,
            CONTENDED_SWITCHES,
            None,
            2 * w / 10 + w * RT_LEAVE_PCT / 100 + w * 9 / 10,
        );
        assert!(!p.realtime());
        assert_eq!(p.take_priority_change(), Some(false));
        // Busy (above RT_ENTER_PCT) and contended: not again.
        p.sample(t0 + 5 * WINDOW, 2 * CONTENDED_SWITCHES, None, 2 * w);
        p.sample(t0 + 6 * WINDOW, 3 * CONTENDED_SWITCHES, None, 2 * w + w / 2);
        assert_eq!(p.take_priority_change(), None);
        // Without `with_realtime_auto`, or once refused, it never asks.
        let mut q = SpinPolicy::new(Duration::from_micros(50));
        q.sample(t0, 0, None, 0);
        q.sample(t0 + WINDOW, CONTENDED_SWITCHES, None, 0);
        q.sample(t0 + 2 * WINDOW, CONTENDED_SWITCHES, None, 0);
        assert_eq!(q.take_priority_change(), None);
        p.realtime_refused();
        p.sample(t0 + 7 * WINDOW, 4 * CONTENDED_SWITCHES, None, 2 * w + w / 2);
        p.sample(t0 + 8 * WINDOW, 5 * CONTENDED_SWITCHES, None, 2 * w + w / 2);
        assert_eq!(p.take_priority_change(), None);
    }

    #[test]
    fn realtime_left_for_load_is_not_entered_again_at_once() {
        let t0 = Instant::now();
        let w = WINDOW.as_micros() as u64;
        let mut p = SpinPolicy::new(Duration::from_micros(50)).with_realtime_auto(true);
        let (mut t, mut cpu, mut sw) = (t0, 0, 0);
        // One window of the given share, contended.
        let mut window = |p: &mut SpinPolicy, t: &mut Instant, pct: u64| {
            *t += WINDOW;
            cpu += w * pct / 100;
            sw += CONTENDED_SWITCHES;
            p.sample(*t, sw, None, cpu);
            p.take_priority_change()
        };
        p.sample(t, 0, None, 0);
        window(&mut p, &mut t, 5); // contended from here on
        assert_eq!(window(&mut p, &mut t, 5), Some(true));
        // Real-time priority made the load busier than RT_LEAVE_PCT: back to normal...
        assert_eq!(window(&mut p, &mut t, RT_LEAVE_PCT + 5), Some(false));
        // ...and held there for RT_HOLD although its share is under RT_ENTER_PCT again.
        let left = t;
        while t + WINDOW < left + RT_HOLD {
            assert_eq!(window(&mut p, &mut t, RT_ENTER_PCT - 5), None);
        }
        assert_eq!(window(&mut p, &mut t, RT_ENTER_PCT - 5), Some(true));
        // The same again: the next hold is twice as long.
        assert_eq!(window(&mut p, &mut t, RT_LEAVE_PCT + 5), Some(false));
        let left = t;
        while t + WINDOW < left + 2 * RT_HOLD {
            assert_eq!(window(&mut p, &mut t, 5), None);
        }
        assert_eq!(window(&mut p, &mut t, 5), Some(true));
        // A long quiet stint at real-time priority brings the hold back to RT_HOLD.
        for _ in 0..QUIET_RESET {
            assert_eq!(window(&mut p, &mut t, 5), None);
        }
        assert_eq!(window(&mut p, &mut t, RT_LEAVE_PCT + 5), Some(false));
        let left = t;
        while t + WINDOW < left + RT_HOLD {
            assert_eq!(window(&mut p, &mut t, 5), None);
        }
        assert_eq!(window(&mut p, &mut t, 5), Some(true));
    }

    #[test]
    fn probes_that_find_contention_again_back_off_exponentially() {
        let t0 = Instant::now();
        let mut p = SpinPolicy::new(Duration::from_micros(50));
        let mut t = t0;
        let mut sw = 0;
        p.sample(t, sw, None, 0);
        let spin = Duration::from_micros(50);
        let mut pauses = Vec::new();
        for _ in 0..6 {
            // A spinning window that gets preempted.
            assert_eq!(p.effective_budget(), spin);
            t += WINDOW;
            sw += CONTENDED_SWITCHES;
            p.sample(t, sw, None, 0);
            assert_eq!(p.effective_budget(), Duration::ZERO);
            // Quiet windows while not spinning, until the probe.
            let off = t;
            while p.effective_budget().is_zero() {
                t += WINDOW;
                p.sample(t, sw, None, 0);
            }
            pauses.push((t - off).as_millis());
        }
        let w = WINDOW.as_millis();
        assert_eq!(pauses, [w, 2 * w, 4 * w, 8 * w, 16 * w, 32 * w]);
        // Still preempted while sleeping at once: spinning stays off.
        t += WINDOW;
        sw += CONTENDED_SWITCHES;
        p.sample(t, sw, None, 0);
        for _ in 0..100 {
            t += WINDOW;
            sw += CONTENDED_SWITCHES;
            p.sample(t, sw, None, 0);
            assert_eq!(p.effective_budget(), Duration::ZERO);
        }
        // Long quiet spinning resets the pause.
        while p.effective_budget().is_zero() {
            t += WINDOW;
            p.sample(t, sw, None, 0);
        }
        for _ in 0..QUIET_RESET {
            t += WINDOW;
            p.sample(t, sw, None, 0);
        }
        t += WINDOW;
        sw += CONTENDED_SWITCHES;
        p.sample(t, sw, None, 0);
        let off = t;
        while p.effective_budget().is_zero() {
            t += WINDOW;
            p.sample(t, sw, None, 0);
        }
        assert_eq!(t - off, WINDOW);
    }

    #[test]
    fn cpu_pressure_pauses_spinning_without_preemption() {
        // A host waiting behind the spinning agent shows as CPU pressure even when it never
        // preempts the agent.
        let t0 = Instant::now();
        let mut p = SpinPolicy::new(Duration::from_micros(50));
        p.sample(t0, 0, Some(1_000), 0);
        let w = WINDOW.as_micros() as u64;
        p.sample(t0 + WINDOW, 0, Some(1_000 + w * STALL_PCT / 100 / 2), 0);
        assert_eq!(
            p.effective_budget(),
            Duration::from_micros(50),
            "below the threshold"
        );
        p.sample(t0 + 2 * WINDOW, 0, Some(1_000 + w * STALL_PCT / 100 * 2), 0);
        assert_eq!(p.effective_budget(), Duration::ZERO);
    }

    #[test]
    fn zero_budget_checks_every_idle_pass() {
        let t0 = Instant::now();
        let mut p = SpinPolicy::new(Duration::ZERO);
        assert_eq!(p.on_idle(), Idle::Check);
        assert_sleeps(&mut p, t0);
    }

    #[test]
    fn busy_loop_reads_the_clock_for_timers() {
        let mut p = SpinPolicy::new(Duration::from_micros(50));
        for _ in 1..CLOCK_MAX_ITERS {
            assert!(!p.tick());
        }
        assert!(p.tick());
        p.clock_read();
        assert!(!p.tick());
    }
}
