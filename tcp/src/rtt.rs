//! Round-trip time estimation and the retransmission timeout, RFC 6298 sections 2 and 3
//! (SRTT/RTTVAR smoothing with alpha = 1/8 and beta = 1/4), with Linux's numbers: RTO_MIN of
//! 200 ms (RFC 6298 2.4 asks for 1 s, which is far too slow on a datacenter path, and Linux's
//! 200 ms has long proven safe), RTO_MAX of 120 s (RFC 6298 2.5 allows any maximum of at least
//! 60 s) and Linux's rule that the variance term is at least RTO_MIN, so that a very stable RTT
//! (RTTVAR near 0) still leaves room for a delayed ACK before a spurious timeout.
//!
//! It also keeps the windowed minimum RTT over the last 10 s that RACK (RFC 8985 section 6.2,
//! the reordering window) and CUBIC need: a three-sample running-minimum filter after Kathleen
//! Nichols' algorithm (the one Linux calls win_minmax), O(1) per sample.

use crate::time::Instant;
use core::time::Duration;

/// Lower bound of the retransmission timeout (Linux's TCP_RTO_MIN).
pub const RTO_MIN: Duration = Duration::from_millis(200);
/// Upper bound of the retransmission timeout (Linux's TCP_RTO_MAX).
pub const RTO_MAX: Duration = Duration::from_secs(120);
/// The timeout before any RTT sample (RFC 6298 section 2.1).
pub const RTO_INITIAL: Duration = Duration::from_secs(1);
/// The window of the minimum-RTT filter.
pub const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct MinSample {
    at: Instant,
    rtt_us: u64,
}

/// A windowed minimum: the best, second-best and third-best samples of the window, each later
/// than the one before, so that when the best ages out the next one is a good minimum of what
/// is left (Nichols' running min as used for BBR's and RACK's min_rtt).
#[derive(Clone, Copy, Debug, Default)]
struct WindowedMin {
    s: [MinSample; 3],
    valid: bool,
}

impl WindowedMin {
    fn update(&mut self, at: Instant, rtt_us: u64, win: Duration) -> u64 {
        let new = MinSample { at, rtt_us };
        if !self.valid || rtt_us <= self.s[0].rtt_us || at.saturating_since(self.s[2].at) > win {
            // A new minimum, or nothing in the window is left: restart with this sample.
            self.s = [new; 3];
            self.valid = true;
            return rtt_us;
        }
        if rtt_us <= self.s[1].rtt_us {
            self.s[1] = new;
            self.s[2] = new;
        } else if rtt_us <= self.s[2].rtt_us {
            self.s[2] = new;
        }
        // Age the candidates: the best expires after `win`, and the second and third are
        // refreshed after a quarter and a half of the window so they stay spread over it.
        let age = at.saturating_since(self.s[0].at);
        if age > win {
            self.s[0] = self.s[1];
            self.s[1] = self.s[2];
            self.s[2] = new;
            if at.saturating_since(self.s[0].at) > win {
                self.s[0] = self.s[1];
                self.s[1] = self.s[2];
                self.s[2] = new;
            }
        } else if self.s[1].at == self.s[0].at && age > win / 4 {
            self.s[1] = new;
            self.s[2] = new;
        } else if self.s[2].at == self.s[1].at && age > win / 2 {
            self.s[2] = new;
        }
        self.s[0].rtt_us
    }
}

/// RFC 6298 RTT estimator. Values are kept in microseconds, SRTT scaled by 8 and RTTVAR by 4
/// so that the 1/8 and 1/4 gains lose no precision to integer division.
#[derive(Clone, Debug, Default)]
pub struct RttEstimator {
    srtt8_us: Option<u64>,
    rttvar4_us: u64,
    latest_us: Option<u64>,
    min: WindowedMin,
}

impl RttEstimator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one RTT measurement (RFC 6298 2.2 and 2.3; the caller follows Karn's algorithm and
    /// gives no sample from a retransmitted segment unless timestamps disambiguate it).
    pub fn on_sample(&mut self, rtt: Duration, now: Instant) {
        // A zero sample (same-tick ACK) counts as 1 us, as Linux does.
        let r = us(rtt).max(1);
        self.latest_us = Some(r);
        match self.srtt8_us {
            None => {
                // 2.2: SRTT = R, RTTVAR = R/2.
                self.srtt8_us = Some(r.saturating_mul(8));
                self.rttvar4_us = r.saturating_mul(2);
            }
            Some(srtt8) => {
                // 2.3: RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R'| (with the old SRTT), then
                // SRTT = 7/8 SRTT + 1/8 R'.
                let srtt = srtt8 / 8;
                let err = srtt.abs_diff(r);
                self.rttvar4_us = (self.rttvar4_us - self.rttvar4_us / 4).saturating_add(err);
                self.srtt8_us = Some((srtt8 - srtt8 / 8).saturating_add(r));
            }
        }
        self.min.update(now, r, MIN_RTT_WINDOW);
    }

    /// The retransmission timeout: SRTT + max(4 RTTVAR, RTO_MIN), within [RTO_MIN, RTO_MAX];
    /// RTO_INITIAL before the first sample. (Backoff is the caller's: it doubles this value.)
    pub fn rto(&self) -> Duration {
        let Some(srtt8) = self.srtt8_us else {
            return RTO_INITIAL;
        };
        let var = self.rttvar4_us.max(us(RTO_MIN));
        let rto = (srtt8 / 8).saturating_add(var);
        Duration::from_micros(rto).clamp(RTO_MIN, RTO_MAX)
    }

    /// Smoothed RTT, `None` before the first sample.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt8_us.map(|s| Duration::from_micros(s / 8))
    }

    /// RTT variation (zero before the first sample).
    pub fn rttvar(&self) -> Duration {
        Duration::from_micros(self.rttvar4_us / 4)
    }

    /// The most recent sample.
    pub fn latest(&self) -> Option<Duration> {
        self.latest_us.map(Duration::from_micros)
    }

    /// The minimum RTT over the last 10 s of samples (as of the latest sample).
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min
            .valid
            .then(|| Duration::from_micros(self.min.s[0].rtt_us))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }
    fn at(v: u64) -> Instant {
        Instant::from_millis(v)
    }

    #[test]
    fn initial_and_first_sample() {
        let mut e = RttEstimator::new();
        assert_eq!(e.rto(), RTO_INITIAL);
        assert_eq!(e.srtt(), None);
        assert_eq!(e.min_rtt(), None);
        e.on_sample(ms(1000), at(0));
        assert_eq!(e.srtt(), Some(ms(1000)));
        assert_eq!(e.rttvar(), ms(500));
        assert_eq!(e.rto(), ms(3000)); // 1000 + 4 * 500
        assert_eq!(e.latest(), Some(ms(1000)));
    }

    #[test]
    fn smoothing_uses_old_srtt() {
        let mut e = RttEstimator::new();
        e.on_sample(ms(1000), at(0));
        e.on_sample(ms(200), at(1000));
        // RTTVAR = 3/4 * 500 + 1/4 * |1000 - 200| = 575; SRTT = 7/8 * 1000 + 1/8 * 200 = 900.
        assert_eq!(e.rttvar(), ms(575));
        assert_eq!(e.srtt(), Some(ms(900)));
        assert_eq!(e.rto(), ms(900 + 2300));
        assert_eq!(e.latest(), Some(ms(200)));
    }

    #[test]
    fn variance_floor_and_clamps() {
        let mut e = RttEstimator::new();
        for i in 0..50 {
            e.on_sample(ms(10), at(i * 10));
        }
        assert_eq!(e.srtt(), Some(ms(10)));
        // RTTVAR has decayed to about 0: SRTT + RTO_MIN, not RTO_MIN alone.
        assert_eq!(e.rto(), ms(210));
        let mut e = RttEstimator::new();
        e.on_sample(Duration::from_micros(50), at(0));
        assert_eq!(e.rto(), Duration::from_micros(50 + 200_000));
        let mut e = RttEstimator::new();
        e.on_sample(Duration::from_secs(100), at(0));
        assert_eq!(e.rto(), RTO_MAX);
        e.on_sample(Duration::MAX, at(1)); // no overflow, no panic
        assert_eq!(e.rto(), RTO_MAX);
        let mut e = RttEstimator::default();
        e.on_sample(Duration::ZERO, at(0));
        assert_eq!(e.srtt(), Some(Duration::from_micros(1)));
    }

    #[test]
    fn min_rtt_window() {
        let mut e = RttEstimator::new();
        e.on_sample(ms(50), at(0));
        e.on_sample(ms(80), at(1_000));
        e.on_sample(ms(30), at(2_000));
        assert_eq!(e.min_rtt(), Some(ms(30)));
        // Larger samples do not replace the minimum within the window...
        e.on_sample(ms(60), at(5_000));
        e.on_sample(ms(70), at(9_000));
        e.on_sample(ms(90), at(11_000));
        assert_eq!(e.min_rtt(), Some(ms(30)));
        // ...but it expires 10 s after it was taken, leaving the best of the later ones.
        e.on_sample(ms(95), at(12_500));
        assert!(e.min_rtt().unwrap() > ms(30));
        assert!(e.min_rtt().unwrap() <= ms(95));
        // After a long silence the next sample alone is the minimum.
        e.on_sample(ms(120), at(40_000));
        assert_eq!(e.min_rtt(), Some(ms(120)));
        e.on_sample(ms(100), at(40_100));
        assert_eq!(e.min_rtt(), Some(ms(100)));
    }

    /// Against a brute-force minimum: the filter never reports less than the true minimum of
    /// the last 10 s, and never more than the minimum of the last ~2.5 s (its guarantee).
    #[test]
    fn min_rtt_brute_force() {
        let mut e = RttEstimator::new();
        let mut all: Vec<(u64, u64)> = Vec::new();
        let mut x = 12345u64;
        let mut t = 0u64;
        for _ in 0..5000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            t += (x >> 33) % 300;
            let r = 10 + (x >> 40) % 90;
            e.on_sample(ms(r), at(t));
            all.push((t, r));
            let lo = all
                .iter()
                .filter(|&&(s, _)| t - s <= 10_000)
                .map(|&(_, v)| v)
                .min()
                .unwrap();
            let recent = all
                .iter()
                .filter(|&&(s, _)| t - s <= 2_500)
                .map(|&(_, v)| v)
                .min()
                .unwrap();
            let m = e.min_rtt().unwrap();
            assert!(
                m >= ms(lo) && m <= ms(recent),
                "t {t}: {m:?} not in [{lo}, {recent}]"
            );
        }
    }
}
