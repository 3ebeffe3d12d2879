//! CUBIC congestion control, RFC 9438: the window grows as a cubic function of the time since
//! the last reduction, `W_cubic(t) = C (t - K)^3 + W_max` (section 4.2), concave up to the
//! window where the last loss happened, then convex to probe beyond it; loss multiplies the
//! window by beta = 0.7 (section 4.6) with fast convergence (section 4.7); and a Reno-friendly
//! estimate `W_est` (section 4.3) keeps it at least as fast as Reno on short, low-RTT paths. It
//! is Linux's default and scales to large bandwidth-delay products, where Reno's one segment per
//! RTT takes minutes to refill a window.
//!
//! Units: the engine speaks bytes; the cubic function is computed in segments (as the RFC
//! defines it) with `f64`, and increments are accumulated per ACK in bytes, cwnd growing by
//! whole MSS (section 4.2: cwnd += (target - cwnd) / cwnd per acknowledged segment). `t` is
//! measured from the epoch start (the first ACK in congestion avoidance after a reduction) using
//! the caller's `now`, and the target is taken one RTT ahead (`min_rtt`, else this ACK's `rtt`).
//! The target is limited to 1.5 cwnd per RTT (section 4.2). Application-limited ACKs do not
//! grow the window (section 5.8 and RFC 7661's rationale). After an idle period (section 5.8
//! and RFC 5681 section 4.1), cwnd is cut to the initial window if larger (ssthresh kept at
//! least 3/4 of the old cwnd so slow start returns there quickly, as Linux's restart does) and
//! a new epoch starts in congestion avoidance; otherwise the epoch start is shifted by the idle
//! time so the idle period does not count as growth time.

use super::{rescale, slow_start, CongestionControl};
use crate::time::Instant;
use core::time::Duration;

/// RFC 9438 section 5.1: C = 0.4.
pub const C: f64 = 0.4;
/// RFC 9438 section 4.6: multiplicative decrease factor.
pub const BETA: f64 = 0.7;
/// RFC 9438 section 4.3: alpha_cubic = 3 (1 - beta) / (1 + beta), Reno's average rate at the
/// same loss rate given beta.
const ALPHA: f64 = 3.0 * (1.0 - BETA) / (1.0 + BETA);

#[derive(Clone, Debug)]
pub struct Cubic {
    mss: u32,
    initial_segments: u32,
    cwnd: u32,
    ssthresh: u32,
    /// Window before the last reduction, after fast convergence (segments).
    w_max: f64,
    /// cwnd when ssthresh was last set (segments): W_est switches to alpha = 1 there.
    cwnd_prior: f64,
    /// Start of the current congestion-avoidance epoch.
    epoch_start: Option<Instant>,
    /// Time to reach `origin` from the epoch start (seconds).
    k: f64,
    /// The plateau of the cubic curve: W_max, or cwnd when the epoch starts above W_max.
    origin: f64,
    /// Reno-friendly window estimate (segments).
    w_est: f64,
    /// Growth owed but not yet applied (bytes, less than one MSS after each ACK).
    credit: f64,
    /// Last ACK processed, to measure idle periods.
    last_ack: Option<Instant>,
}

impl Cubic {
    /// `initial_segments` is the initial window in segments (10 per RFC 6928).
    pub fn new(mss: u32, initial_segments: u32) -> Cubic {
        let mss = mss.max(1);
        let iw = initial_segments.max(1);
        Cubic {
            mss,
            initial_segments: iw,
            cwnd: mss.saturating_mul(iw),
            ssthresh: u32::MAX,
            w_max: 0.0,
            cwnd_prior: 0.0,
            epoch_start: None,
            k: 0.0,
            origin: 0.0,
            w_est: 0.0,
            credit: 0.0,
            last_ack: None,
        }
    }

    /// W_max in segments (after fast convergence), 0 before the first loss.
    pub fn w_max_segments(&self) -> f64 {
        self.w_max
    }

    /// K of the current epoch (seconds).
    pub fn k(&self) -> Duration {
        Duration::try_from_secs_f64(self.k).unwrap_or(Duration::ZERO)
    }

    /// Start of the current congestion-avoidance epoch, if one is running.
    pub fn epoch_start(&self) -> Option<Instant> {
        self.epoch_start
    }

    fn iw(&self) -> u32 {
        self.mss.saturating_mul(self.initial_segments)
    }

    fn segs(&self, bytes: u32) -> f64 {
        f64::from(bytes) / f64::from(self.mss)
    }

    fn w_cubic(&self, t: f64) -> f64 {
        let d = t - self.k;
        C * d * d * d + self.origin
    }

    /// Section 4.6 and 4.7: W_max with fast convergence, ssthresh = beta * flight.
    fn reduce(&mut self, flight: u32) {
        let cwnd = self.segs(self.cwnd);
        self.w_max = if cwnd < self.w_max {
            cwnd * (1.0 + BETA) / 2.0
        } else {
            cwnd
        };
        self.cwnd_prior = cwnd;
        let ss = (f64::from(flight) * BETA) as u32;
        self.ssthresh = ss.max(self.mss.saturating_mul(2));
        self.epoch_start = None;
        self.credit = 0.0;
    }

    fn congestion_avoidance(&mut self, now: Instant, acked: u32, rtt: Duration) {
        let mss = f64::from(self.mss);
        let cwnd = self.segs(self.cwnd).max(1.0);
        let epoch = match self.epoch_start {
            Some(e) => e,
            None => {
                if cwnd < self.w_max {
                    self.k = ((self.w_max - cwnd) / C).cbrt();
                    self.origin = self.w_max;
                } else {
                    self.k = 0.0;
                    self.origin = cwnd;
                }
                self.w_est = cwnd;
                self.credit = 0.0;
                self.epoch_start = Some(now);
                now
            }
        };
        let t = now.saturating_since(epoch).as_secs_f64();
        // Section 4.3: W_est grows like Reno with alpha_cubic, and like Reno itself once it
        // passes the window at the last reduction.
        let alpha = if self.w_est >= self.cwnd_prior {
            1.0
        } else {
            ALPHA
        };
        self.w_est += alpha * (f64::from(acked) / mss) / cwnd;
        if self.w_cubic(t) < self.w_est {
            // Reno-friendly region: cwnd = W_est.
            let est = (self.w_est.floor() * mss).min(f64::from(u32::MAX)) as u32;
            if est > self.cwnd {
                self.cwnd = est;
                self.credit = 0.0;
            }
            return;
        }
        // Concave or convex region: aim at W_cubic one RTT ahead, within [cwnd, 1.5 cwnd].
        let target = self.w_cubic(t + rtt.as_secs_f64()).clamp(cwnd, 1.5 * cwnd);
        self.credit += (target - cwnd) / cwnd * f64::from(acked);
        if self.credit >= mss {
            let n = (self.credit / mss).floor();
            self.credit -= n * mss;
            let inc = (n * mss).min(f64::from(u32::MAX)) as u32;
            self.cwnd = self.cwnd.saturating_add(inc);
        }
    }
}

impl CongestionControl for Cubic {
    fn name(&self) -> &'static str {
        "cubic"
    }

    fn cwnd(&self) -> u32 {
        self.cwnd
    }

    fn ssthresh(&self) -> u32 {
        self.ssthresh
    }

    fn set_mss(&mut self, mss: u32) {
        let mss = mss.max(1);
        self.cwnd = rescale(self.cwnd, self.mss, mss);
        self.ssthresh = rescale(self.ssthresh, self.mss, mss);
        self.mss = mss;
        self.credit = 0.0;
    }

    fn on_ack(
        &mut self,
        now: Instant,
        acked: u32,
        rtt: Option<Duration>,
        min_rtt: Option<Duration>,
        app_limited: bool,
    ) {
        self.last_ack = Some(now);
        if app_limited || acked == 0 {
            return;
        }
        let mut acked = acked;
        if self.cwnd < self.ssthresh {
            (self.cwnd, acked) = slow_start(self.cwnd, self.ssthresh, acked, self.mss);
            if acked == 0 {
                return;
            }
        }
        let rtt = min_rtt.or(rtt).unwrap_or(Duration::ZERO);
        self.congestion_avoidance(now, acked, rtt);
    }

    fn on_loss(&mut self, _now: Instant, flight: u32) {
        self.reduce(flight);
    }

    fn on_recovery_end(&mut self, _now: Instant) {
        self.cwnd = self.ssthresh;
        self.epoch_start = None;
    }

    fn on_rto(&mut self, _now: Instant, flight: u32) {
        self.reduce(flight);
        self.cwnd = self.mss;
    }

    fn set_cwnd(&mut self, cwnd: u32) {
        self.cwnd = cwnd.max(self.mss);
    }

    fn on_idle_restart(&mut self, now: Instant) {
        let iw = self.iw();
        if self.cwnd > iw {
            self.ssthresh = self.ssthresh.max(self.cwnd / 4 * 3);
            self.cwnd = iw;
            self.epoch_start = None;
            self.credit = 0.0;
        } else if let (Some(epoch), Some(last)) = (self.epoch_start, self.last_ack) {
            // Section 5.8: the idle time does not count towards t.
            let idle = now.saturating_since(last);
            self.epoch_start = Some((epoch + idle).min(now));
        }
        self.last_ack = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u32 = 1000;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    /// A Cubic that has just recovered from a loss at `w` segments: cwnd = 0.7 w.
    fn after_loss(w: u32) -> Cubic {
        let mut c = Cubic::new(MSS, 10);
        while c.cwnd() < w * MSS {
            c.on_ack(t(0), MSS, None, None, false);
        }
        assert_eq!(c.cwnd(), w * MSS);
        c.on_loss(t(0), w * MSS);
        c.on_recovery_end(t(0));
        assert_eq!(c.cwnd(), w * MSS * 7 / 10);
        c
    }

    /// Runs `rtts` round trips from `start_ms`, each acknowledging one cwnd in MSS-sized ACKs
    /// spread over the RTT; returns cwnd (segments) at the end of each.
    fn run(c: &mut Cubic, start_ms: u64, rtt_ms: u64, rtts: u64) -> Vec<u32> {
        let rtt = Duration::from_millis(rtt_ms);
        let mut out = Vec::new();
        for r in 0..rtts {
            let segs = u64::from(c.cwnd() / MSS);
            for i in 0..segs {
                let now =
                    Instant::from_micros((start_ms + r * rtt_ms) * 1000 + i * rtt_ms * 1000 / segs);
                c.on_ack(now, MSS, Some(rtt), Some(rtt), false);
            }
            out.push(c.cwnd() / MSS);
        }
        out
    }

    #[test]
    fn slow_start_doubles_per_rtt() {
        let mut c = Cubic::new(MSS, 10);
        assert_eq!(
            (c.cwnd(), c.ssthresh(), c.name()),
            (10 * MSS, u32::MAX, "cubic")
        );
        let w = run(&mut c, 0, 100, 4);
        assert_eq!(w, vec![20, 40, 80, 160]);
        // ABC: a stretch ACK grows at most 2 MSS.
        c.on_ack(t(500), 50 * MSS, None, None, false);
        assert_eq!(c.cwnd(), 162 * MSS);
    }

    #[test]
    fn loss_cuts_to_beta_once_per_call() {
        let mut c = after_loss(100);
        assert_eq!(c.ssthresh(), 70 * MSS);
        assert_eq!(c.w_max_segments(), 100.0);
        // A second loss event below W_max: ssthresh from flight, fast convergence on W_max.
        c.on_loss(t(10), 70 * MSS);
        assert_eq!(c.ssthresh(), 49 * MSS);
        assert!((c.w_max_segments() - 70.0 * 0.85).abs() < 1e-9);
        c.on_recovery_end(t(20));
        assert_eq!(c.cwnd(), 49 * MSS);
        // Floor of 2 MSS.
        c.on_loss(t(30), MSS);
        assert_eq!(c.ssthresh(), 2 * MSS);
    }

    #[test]
    fn concave_then_convex() {
        let mut c = after_loss(100);
        // RTT 200 ms: the cubic curve dominates the Reno estimate over these 8 s.
        let w = run(&mut c, 1000, 200, 40);
        let k = c.k().as_secs_f64();
        assert!((k - 75f64.cbrt()).abs() < 1e-9, "K = {k}");
        // Growth per second (5 RTTs each).
        let at = |s: usize| if s == 0 { 70 } else { w[s * 5 - 1] };
        let g: Vec<i64> = (0..8)
            .map(|s| i64::from(at(s + 1)) - i64::from(at(s)))
            .collect();
        // Concave: slowing down toward W_max = 100 around K = 4.2 s...
        assert!(g[0] > g[1] && g[1] > g[2] && g[2] > g[3], "{g:?}");
        assert!((98..=101).contains(&at(4)), "{w:?}");
        // ...then convex: accelerating beyond it.
        assert!(g[5] < g[6] && g[6] < g[7], "{g:?}");
        assert!(at(8) > 110, "{w:?}");
    }

    #[test]
    fn reno_friendly_dominates_at_small_rtt() {
        let mut c = after_loss(100);
        let w = run(&mut c, 1000, 1, 200);
        // After 0.2 s, W_cubic(0.2 + RTT) is about 74 segments; Reno-like growth (0.53 per RTT
        // up to 100, then 1 per RTT) is far past it.
        let cubic_only = C * (0.201 - 75f64.cbrt()).powi(3) + 100.0;
        assert!(cubic_only < 75.0);
        let last = *w.last().unwrap();
        assert!(last > 200, "{last}");
    }

    #[test]
    fn no_growth_when_app_limited() {
        let mut c = Cubic::new(MSS, 10);
        for i in 0..100 {
            c.on_ack(t(i), MSS, None, None, true);
        }
        assert_eq!(c.cwnd(), 10 * MSS);
        let mut c = after_loss(100);
        for i in 0..1000 {
            c.on_ack(
                t(1000 + i * 10),
                MSS,
                Some(Duration::from_millis(50)),
                None,
                true,
            );
        }
        assert_eq!(c.cwnd(), 70 * MSS);
    }

    #[test]
    fn rto_and_idle_restart() {
        let mut c = after_loss(100);
        run(&mut c, 1000, 100, 5);
        let cw = c.cwnd();
        c.on_rto(t(2000), 80 * MSS);
        assert_eq!(c.cwnd(), MSS);
        assert_eq!(c.ssthresh(), 56 * MSS);
        // Slow start again (1 -> 2 -> 4).
        let w = run(&mut c, 3000, 100, 2);
        assert_eq!(w, vec![2, 4]);
        assert!(cw > 70 * MSS);
        // Idle restart from a large window: cut to IW, ssthresh at least 3/4 of cwnd.
        let mut c = after_loss(100);
        c.on_idle_restart(t(60_000));
        assert_eq!(c.cwnd(), 10 * MSS);
        // (max(ssthresh 70, 3/4 * 70) = 70)
        assert_eq!(c.ssthresh(), 70 * MSS);
        let mut c = after_loss(100);
        run(&mut c, 1000, 100, 40);
        let cw = c.cwnd();
        assert!(cw > 90 * MSS);
        c.on_idle_restart(t(60_000));
        assert_eq!(c.cwnd(), 10 * MSS);
        assert_eq!(c.ssthresh(), cw / 4 * 3);
        // Small window in avoidance: the epoch start moves by the idle time.
        let mut c = Cubic::new(MSS, 10);
        c.on_loss(t(0), 8 * MSS);
        c.on_recovery_end(t(0));
        assert_eq!(c.cwnd(), 5600);
        c.on_ack(t(1000), MSS, None, Some(Duration::from_millis(10)), false);
        assert_eq!(c.epoch_start(), Some(t(1000)));
        c.on_ack(t(1500), MSS, None, Some(Duration::from_millis(10)), false);
        c.on_idle_restart(t(11_500));
        assert_eq!(c.epoch_start(), Some(t(11_000)));
        assert!(c.cwnd() <= 10 * MSS);
    }

    #[test]
    fn set_mss_keeps_segments_and_degenerate_inputs() {
        let mut c = Cubic::new(536, 10);
        c.set_mss(1460);
        assert_eq!(c.cwnd(), 14_600);
        c.set_mss(0);
        c.on_ack(
            t(0),
            u32::MAX,
            Some(Duration::MAX),
            Some(Duration::MAX),
            false,
        );
        c.on_loss(t(1), u32::MAX);
        c.on_recovery_end(t(2));
        c.on_ack(t(3), u32::MAX, Some(Duration::MAX), None, false);
        c.on_ack(Instant::from_micros(u64::MAX), u32::MAX, None, None, false);
        c.on_idle_restart(t(0));
        c.on_rto(t(4), 0);
        assert!(c.cwnd() >= 1);
    }
}
