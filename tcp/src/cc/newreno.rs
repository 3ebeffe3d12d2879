//! NewReno congestion control: RFC 5681 section 3.1 (slow start with RFC 3465 byte counting,
//! congestion avoidance of one MSS per cwnd of bytes acknowledged, ssthresh = max(FlightSize/2,
//! 2 MSS) on loss, a 1-MSS loss window after a timeout), section 4.1 (restart window after
//! idle), and the recovery exit of RFC 6582 section 3.2 step 3 (cwnd = ssthresh; the
//! "full"-ACK deflation, with PRR driving cwnd during recovery). It is the fallback for peers
//! without SACK, and a simple reference for the engine's tests.

use super::{rescale, slow_start, CongestionControl};
use crate::time::Instant;
use core::time::Duration;

#[derive(Clone, Debug)]
pub struct NewReno {
    mss: u32,
    initial_segments: u32,
    cwnd: u32,
    ssthresh: u32,
    /// RFC 5681 eq. 3 byte counter for congestion avoidance.
    bytes_acked: u32,
}

impl NewReno {
    /// `initial_segments` is the initial window in segments (10 per RFC 6928).
    pub fn new(mss: u32, initial_segments: u32) -> NewReno {
        let mss = mss.max(1);
        NewReno {
            mss,
            initial_segments: initial_segments.max(1),
            cwnd: mss.saturating_mul(initial_segments.max(1)),
            ssthresh: u32::MAX,
            bytes_acked: 0,
        }
    }

    fn iw(&self) -> u32 {
        self.mss.saturating_mul(self.initial_segments)
    }

    fn reduce(&mut self, flight: u32) {
        self.ssthresh = (flight / 2).max(self.mss.saturating_mul(2));
        self.bytes_acked = 0;
    }
}

impl CongestionControl for NewReno {
    fn name(&self) -> &'static str {
        "newreno"
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
    }

    fn on_ack(
        &mut self,
        _now: Instant,
        acked: u32,
        _rtt: Option<Duration>,
        _min_rtt: Option<Duration>,
        app_limited: bool,
    ) {
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
        // Congestion avoidance: one MSS per cwnd of bytes acknowledged.
        self.bytes_acked = self.bytes_acked.saturating_add(acked);
        if self.bytes_acked >= self.cwnd {
            self.bytes_acked -= self.cwnd;
            self.cwnd = self.cwnd.saturating_add(self.mss);
            // A stretch ACK larger than cwnd still grows one MSS (RFC 5681 eq. 3 bound).
            self.bytes_acked = self.bytes_acked.min(self.cwnd);
        }
    }

    fn on_loss(&mut self, _now: Instant, flight: u32) {
        self.reduce(flight);
    }

    fn on_recovery_end(&mut self, _now: Instant) {
        self.cwnd = self.ssthresh;
    }

    fn on_rto(&mut self, _now: Instant, flight: u32) {
        self.reduce(flight);
        self.cwnd = self.mss;
    }

    fn set_cwnd(&mut self, cwnd: u32) {
        self.cwnd = cwnd.max(self.mss);
    }

    fn on_idle_restart(&mut self, _now: Instant) {
        self.cwnd = self.cwnd.min(self.iw());
        self.bytes_acked = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u32 = 1000;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn slow_start_doubles_with_abc() {
        let mut c = NewReno::new(MSS, 10);
        assert_eq!(c.cwnd(), 10 * MSS);
        assert_eq!(c.ssthresh(), u32::MAX);
        // One RTT: every segment acked individually doubles cwnd.
        for _ in 0..10 {
            c.on_ack(t(10), MSS, None, None, false);
        }
        assert_eq!(c.cwnd(), 20 * MSS);
        // Delayed ACKs (2 segments each) also double.
        for _ in 0..10 {
            c.on_ack(t(20), 2 * MSS, None, None, false);
        }
        assert_eq!(c.cwnd(), 40 * MSS);
        // A stretch ACK of 10 segments grows only L = 2 MSS.
        c.on_ack(t(30), 10 * MSS, None, None, false);
        assert_eq!(c.cwnd(), 42 * MSS);
        // Application-limited: no growth.
        c.on_ack(t(40), 5 * MSS, None, None, true);
        assert_eq!(c.cwnd(), 42 * MSS);
    }

    #[test]
    fn loss_halves_flight_and_avoidance_is_linear() {
        let mut c = NewReno::new(MSS, 10);
        c.on_loss(t(0), 30 * MSS);
        assert_eq!(c.ssthresh(), 15 * MSS);
        assert_eq!(c.cwnd(), 10 * MSS); // PRR's during recovery
        c.on_recovery_end(t(100));
        assert_eq!(c.cwnd(), 15 * MSS);
        // One RTT of ACKs (cwnd bytes) grows exactly one MSS.
        for _ in 0..14 {
            c.on_ack(t(200), MSS, None, None, false);
        }
        assert_eq!(c.cwnd(), 15 * MSS);
        c.on_ack(t(200), MSS, None, None, false);
        assert_eq!(c.cwnd(), 16 * MSS);
        // Floor of 2 MSS.
        c.on_loss(t(300), MSS);
        assert_eq!(c.ssthresh(), 2 * MSS);
    }

    #[test]
    fn rto_idle_and_mss() {
        let mut c = NewReno::new(MSS, 10);
        for _ in 0..30 {
            c.on_ack(t(0), MSS, None, None, false);
        }
        assert_eq!(c.cwnd(), 40 * MSS);
        c.on_rto(t(10), 40 * MSS);
        assert_eq!(c.cwnd(), MSS);
        assert_eq!(c.ssthresh(), 20 * MSS);
        // Slow start back up to ssthresh, with the excess going to avoidance.
        for _ in 0..19 {
            c.on_ack(t(20), MSS, None, None, false);
        }
        assert_eq!(c.cwnd(), 20 * MSS);
        c.on_idle_restart(t(5000));
        assert_eq!(c.cwnd(), 10 * MSS);
        c.set_mss(1460);
        assert_eq!(c.cwnd(), 10 * 1460);
        assert_eq!(c.ssthresh(), 20 * 1460);
        assert_eq!(c.name(), "newreno");
    }
}
