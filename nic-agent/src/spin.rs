//! When the agent's loop keeps spinning and when it goes to sleep (sans-IO: the loop passes the
//! time and the scheduler's counter in).
//!
//! Spinning after the last piece of work saves the wake-up latency of the next one, but only
//! when the agent has a core to itself (a BlueField's Arm cores). Where it shares cores with the
//! applications it serves, every microsecond it spins is taken from them, and they are what
//! produces its work. So the policy watches one signal the kernel keeps for free: involuntary
//! context switches of the agent's thread (`ru_nivcsw`). A thread that is preempted wants a CPU
//! that someone else also wants; while that happens (at least [`CONTENDED_SWITCHES`] in a
//! [`WINDOW`]) the agent sleeps as soon as one pass over its inputs finds nothing, and spins the
//! configured time again once a window passes without them.
//!
//! The loop reads no clock on a busy iteration: idle passes are counted, and the clock is read
//! every [`CLOCK_EVERY`] of them (and at least every [`CLOCK_MAX_ITERS`] iterations for timers).

use std::time::{Duration, Instant};

/// Idle passes between two clock reads while spinning.
pub const CLOCK_EVERY: u32 = 16;
/// Iterations after which the loop reads the clock even when every one had work (timers).
pub const CLOCK_MAX_ITERS: u32 = 1024;
/// Length of one contention sample.
pub const WINDOW: Duration = Duration::from_millis(20);
/// Involuntary switches in one window that mean the CPU is contended.
pub const CONTENDED_SWITCHES: u64 = 2;

#[derive(Debug)]
pub struct SpinPolicy {
    budget: Duration,
    idle_passes: u32,
    iters_since_clock: u32,
    idle_since: Option<Instant>,
    window_start: Option<Instant>,
    switches_at_start: u64,
    contended: bool,
}

/// What one idle pass asks of the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idle {
    /// Spin on: check the inputs again without a clock read.
    Spin,
    /// Read the clock and call [`SpinPolicy::check`].
    Check,
}

impl SpinPolicy {
    pub fn new(budget: Duration) -> SpinPolicy {
        SpinPolicy {
            budget,
            idle_passes: 0,
            iters_since_clock: 0,
            idle_since: None,
            window_start: None,
            switches_at_start: 0,
            contended: false,
        }
    }

    /// An iteration found work.
    pub fn on_work(&mut self) {
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

    pub fn sample(&mut self, now: Instant, involuntary_switches: u64) {
        if self.window_start.is_some() {
            let d = involuntary_switches.saturating_sub(self.switches_at_start);
            self.contended = d >= CONTENDED_SWITCHES;
        }
        self.window_start = Some(now);
        self.switches_at_start = involuntary_switches;
    }

    /// At a clock read during idle passes: true when the loop should sleep now.
    pub fn check(&mut self, now: Instant) -> bool {
        let since = *self.idle_since.get_or_insert(now);
        now.saturating_duration_since(since) >= self.effective_budget()
    }

    /// The spin time in force: the configured one, or none while the CPU is contended.
    pub fn effective_budget(&self) -> Duration {
        if self.contended {
            Duration::ZERO
        } else {
            self.budget
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spins_the_budget_then_sleeps() {
        let t0 = Instant::now();
        let mut p = SpinPolicy::new(Duration::from_micros(50));
        p.sample(t0, 0);
        p.on_work();
        for _ in 1..CLOCK_EVERY {
            assert_eq!(p.on_idle(), Idle::Spin);
        }
        assert_eq!(p.on_idle(), Idle::Check);
        assert!(!p.check(t0)); // starts the idle period
        assert!(!p.check(t0 + Duration::from_micros(49)));
        assert!(p.check(t0 + Duration::from_micros(50)));
        // Work restarts the period.
        p.on_work();
        assert!(!p.check(t0 + Duration::from_micros(60)));
    }

    #[test]
    fn preemption_turns_spinning_off_until_a_quiet_window() {
        let t0 = Instant::now();
        let mut p = SpinPolicy::new(Duration::from_micros(50));
        p.sample(t0, 10);
        assert!(!p.sample_due(t0 + WINDOW / 2));
        assert!(p.sample_due(t0 + WINDOW));
        p.sample(t0 + WINDOW, 10 + CONTENDED_SWITCHES);
        assert_eq!(p.effective_budget(), Duration::ZERO);
        // Contended: the first idle pass already decides, and it says sleep.
        p.on_work();
        assert_eq!(p.on_idle(), Idle::Check);
        assert!(p.check(t0 + WINDOW));
        // One quiet window: spinning again.
        p.sample(t0 + 2 * WINDOW, 10 + CONTENDED_SWITCHES + 1);
        assert_eq!(p.effective_budget(), Duration::from_micros(50));
        p.on_work();
        assert_eq!(p.on_idle(), Idle::Spin);
    }

    #[test]
    fn zero_budget_checks_every_idle_pass() {
        let t0 = Instant::now();
        let mut p = SpinPolicy::new(Duration::ZERO);
        assert_eq!(p.on_idle(), Idle::Check);
        assert!(p.check(t0));
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
