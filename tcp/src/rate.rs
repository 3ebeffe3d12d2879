//! Delivery-rate estimation, after the IETF draft "Delivery Rate Estimation"
//! (draft-cheng-iccrg-delivery-rate-estimation) and Linux's implementation of it: on every ACK,
//! how fast did the network deliver our data? BBR ([`crate::cc::bbr`]) builds its bandwidth model
//! from these samples.
//!
//! The connection keeps a running count of bytes delivered (cumulatively ACKed or SACKed, each
//! byte once), the time of the last delivery, and the send time of the most recently delivered
//! segment. When a segment is sent or resent it takes a [`TxSnapshot`] of that state, which the
//! scoreboard stores in the segment's record. When an ACK newly delivers segments, the one sent
//! most recently (the highest snapshot of `delivered`) gives the sample:
//!
//! ```text
//!   delivered = C.delivered - P.delivered                 (bytes delivered since P was sent)
//!   send phase = P.sent - P.first_sent_time               (how long the flight took to send)
//!   ack phase  = now - P.delivered_time                   (how long it took to be acknowledged)
//!   interval   = max(send phase, ack phase)
//!   delivery_rate = delivered / interval
//! ```
//!
//! The longer of the two phases is used so that neither ACK compression (ACKs bunched up) nor a
//! burst of sends can inflate the rate. A sample whose interval is shorter than the minimum RTT
//! is physically impossible (it comes from a spurious retransmission or a misattributed ACK)
//! and is discarded, as Linux does.
//!
//! Application-limited periods: when the sender has less than one MSS to send, is not limited by
//! cwnd and has no lost data waiting, the connection marks itself application-limited until
//! everything in flight at that moment is delivered; samples of segments sent meanwhile say so
//! (`is_app_limited`), so that a congestion controller does not lower its bandwidth estimate
//! because the application, not the network, was slow.
//!
//! Units: bytes, microsecond instants, rates in bytes per second.

use crate::time::Instant;
use core::time::Duration;

/// The connection's delivery state at the moment a segment was (re)sent, kept with the segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxSnapshot {
    /// Bytes delivered so far.
    pub delivered: u64,
    /// When the last of those bytes was delivered (or the flight started).
    pub delivered_time: Instant,
    /// Send time of the most recently delivered segment (or the flight start).
    pub first_sent_time: Instant,
    /// The connection was application-limited.
    pub is_app_limited: bool,
}

/// The segment an ACK newly delivered whose snapshot makes the sample: the most recently sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveredTx {
    pub tx: TxSnapshot,
    /// When the segment was (last) sent.
    pub sent: Instant,
    pub retransmitted: bool,
}

impl DeliveredTx {
    /// Was `self` sent after `other` (a higher delivered count at send, or later for equal)?
    pub fn newer_than(&self, other: &DeliveredTx) -> bool {
        (self.tx.delivered, self.sent) > (other.tx.delivered, other.sent)
    }
}

/// One ACK's delivery-rate sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateSample {
    /// Bytes delivered between the sampled segment's send and this ACK.
    pub delivered: u64,
    /// The sampling interval; `None` when this ACK gives no valid sample (nothing newly
    /// delivered with a snapshot, or an interval shorter than the minimum RTT).
    pub interval: Option<Duration>,
    /// `delivered / interval` in bytes per second (0 without a valid interval).
    pub delivery_rate: u64,
    /// RTT sample of this ACK (most recently sent, never retransmitted segment; Karn).
    pub rtt: Option<Duration>,
    /// The sampled segment was sent while the connection was application-limited.
    pub is_app_limited: bool,
    /// The sampled segment was a retransmission.
    pub is_retrans: bool,
    /// Connection's delivered count when the sampled segment was sent.
    pub prior_delivered: u64,
    /// Bytes newly marked lost while processing this ACK.
    pub lost: u32,
    /// Bytes newly delivered by this ACK (cumulatively or by SACK).
    pub acked_sacked: u32,
    /// Bytes in flight before this ACK.
    pub prior_in_flight: u32,
}

/// Per-connection delivery-rate state (the draft's C.delivered, C.delivered_time,
/// C.first_sent_time, C.app_limited).
#[derive(Clone, Debug, Default)]
pub struct RateState {
    delivered: u64,
    delivered_time: Instant,
    first_sent_time: Instant,
    /// Non-zero: application-limited until `delivered` exceeds this value.
    app_limited: u64,
    lost: u64,
    /// The last valid sample not application-limited, or the best application-limited one.
    rate_delivered: u64,
    rate_interval: Duration,
    rate_app_limited: bool,
}

impl RateState {
    pub fn new() -> RateState {
        RateState::default()
    }

    /// Bytes delivered (cumulatively ACKed or SACKed) over the connection's life.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// When data was last delivered.
    pub fn delivered_time(&self) -> Instant {
        self.delivered_time
    }

    /// Bytes marked lost over the connection's life.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    pub fn is_app_limited(&self) -> bool {
        self.app_limited != 0
    }

    /// The recorded delivery rate (bytes per second) and whether it was application-limited
    /// (what Linux's TCP_INFO reports as tcpi_delivery_rate).
    pub fn delivery_rate(&self) -> (u64, bool) {
        (
            rate_of(self.rate_delivered, self.rate_interval),
            self.rate_app_limited,
        )
    }

    /// A segment is (re)sent at `now`; `idle` says nothing was outstanding (no unacknowledged
    /// segment) before it, so the flight starts now. Returns the snapshot to keep with it.
    pub fn on_send(&mut self, now: Instant, idle: bool) -> TxSnapshot {
        if idle {
            self.first_sent_time = now;
            self.delivered_time = now;
        }
        TxSnapshot {
            delivered: self.delivered,
            delivered_time: self.delivered_time,
            first_sent_time: self.first_sent_time,
            is_app_limited: self.app_limited != 0,
        }
    }

    /// Marks the connection application-limited until what is in flight now is delivered.
    pub fn mark_app_limited(&mut self, in_flight: u32) {
        self.app_limited = (self.delivered + u64::from(in_flight)).max(1);
    }

    /// The draft's check at a send opportunity: less than one MSS of data waiting, cwnd not
    /// full and no lost data left to resend mean the application is what limits the sender.
    pub fn check_app_limited(
        &mut self,
        unsent: u32,
        mss: u32,
        in_flight: u32,
        cwnd: u32,
        lost_pending: bool,
    ) {
        if unsent < mss && in_flight < cwnd && !lost_pending {
            self.mark_app_limited(in_flight);
        }
    }

    /// Processes one ACK: `acked_sacked` bytes newly delivered, `lost` bytes newly marked lost,
    /// `tx` the most recently sent segment among those delivered (from the scoreboard), `rtt`
    /// this ACK's RTT sample, `min_rtt` the connection's minimum RTT, `prior_in_flight` the
    /// bytes in flight before the ACK. Returns the sample.
    #[allow(clippy::too_many_arguments)]
    pub fn on_ack(
        &mut self,
        now: Instant,
        acked_sacked: u32,
        lost: u32,
        tx: Option<DeliveredTx>,
        rtt: Option<Duration>,
        min_rtt: Option<Duration>,
        prior_in_flight: u32,
    ) -> RateSample {
        self.delivered += u64::from(acked_sacked);
        self.lost += u64::from(lost);
        if self.app_limited != 0 && self.delivered > self.app_limited {
            // Everything in flight when the application ran dry is delivered.
            self.app_limited = 0;
        }
        if acked_sacked > 0 {
            self.delivered_time = now;
        }
        let mut rs = RateSample {
            rtt,
            lost,
            acked_sacked,
            prior_in_flight,
            ..RateSample::default()
        };
        let Some(d) = tx else {
            return rs;
        };
        rs.prior_delivered = d.tx.delivered;
        rs.is_app_limited = d.tx.is_app_limited;
        rs.is_retrans = d.retransmitted;
        rs.delivered = self.delivered.saturating_sub(d.tx.delivered);
        // The next flight's send phase starts at this segment's send time.
        self.first_sent_time = d.sent;
        let send_phase = d.sent.saturating_since(d.tx.first_sent_time);
        let ack_phase = now.saturating_since(d.tx.delivered_time);
        let interval = send_phase.max(ack_phase);
        if interval.is_zero() || min_rtt.is_some_and(|m| interval < m) {
            return rs;
        }
        rs.interval = Some(interval);
        rs.delivery_rate = rate_of(rs.delivered, interval);
        // Keep the latest sample that is not app-limited, or an app-limited one that shows a
        // higher rate than the one kept.
        let higher = u128::from(rs.delivered) * self.rate_interval.as_micros()
            >= u128::from(self.rate_delivered) * interval.as_micros();
        if !rs.is_app_limited || higher {
            self.rate_delivered = rs.delivered;
            self.rate_interval = interval;
            self.rate_app_limited = rs.is_app_limited;
        }
        rs
    }
}

/// `bytes / interval` in bytes per second (0 for an empty interval).
pub fn rate_of(bytes: u64, interval: Duration) -> u64 {
    let us = u64::try_from(interval.as_micros()).unwrap_or(u64::MAX);
    crate::muldiv::mul_div(bytes, 1_000_000, us)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoreboard::Scoreboard;
    use crate::Seq;

    const MSS: u32 = 1000;

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    /// A sender over the real scoreboard: sends MSS segments, ACKs them, returns samples.
    struct Sender {
        sb: Scoreboard,
        rate: RateState,
        nxt: Seq,
    }

    impl Sender {
        fn new() -> Sender {
            let mut sb = Scoreboard::new();
            sb.set_mss(MSS);
            Sender {
                sb,
                rate: RateState::new(),
                nxt: Seq(1000),
            }
        }
        fn send(&mut self, n: u32, now: Instant) {
            for _ in 0..n {
                let tx = self.rate.on_send(now, self.sb.is_empty());
                self.sb.send_tx(self.nxt, self.nxt + MSS, now, tx);
                self.nxt += MSS;
            }
        }
        fn ack(&mut self, ack: Seq, sack: &[(Seq, Seq)], now: Instant) -> RateSample {
            let prior = self.sb.pipe();
            let out = self.sb.on_ack(ack, sack, now);
            let min_rtt = Some(core::time::Duration::from_millis(10));
            self.rate
                .on_ack(now, out.delivered, 0, out.tx, out.rtt, min_rtt, prior)
        }
    }

    #[test]
    fn steady_flight_measures_the_ack_rate() {
        let mut s = Sender::new();
        // 10 segments at t=0; ACKs come back one per ms from t=20 ms (a 1 MB/s bottleneck).
        s.send(10, ms(0));
        let base = Seq(1000);
        let mut last = RateSample::default();
        for i in 1..=10u32 {
            last = s.ack(base + i * MSS, &[], ms(19 + u64::from(i)));
            assert_eq!(last.acked_sacked, MSS);
            assert_eq!(last.prior_delivered, 0);
            assert_eq!(last.delivered, u64::from(i * MSS));
            // Send phase 0, ack phase = 19 + i ms since the flight started at 0.
            assert_eq!(
                last.interval,
                Some(Duration::from_millis(19 + u64::from(i)))
            );
            assert_eq!(last.rtt, Some(Duration::from_millis(19 + u64::from(i))));
        }
        assert_eq!(last.delivery_rate, 10_000 * 1000 / 29);
        assert_eq!(s.rate.delivered(), 10_000);
        assert_eq!(s.rate.delivered_time(), ms(29));
        // The next flight starts from idle at 29 ms (nothing outstanding): both phases count
        // from there.
        s.send(2, ms(29));
        let rs = s.ack(base + 11 * MSS, &[], ms(49));
        assert_eq!(rs.prior_delivered, 10_000);
        assert_eq!(rs.delivered, 1000);
        assert_eq!(rs.interval, Some(Duration::from_millis(20)));
        assert_eq!(rs.prior_in_flight, 2 * MSS);
        // A segment sent while one is outstanding: its send phase counts from the send time of
        // the latest delivered segment (29 ms), its ack phase from the last delivery (49 ms).
        s.send(1, ms(60));
        let rs = s.ack(base + 13 * MSS, &[], ms(90));
        assert_eq!(rs.delivered, 2000);
        assert_eq!(rs.interval, Some(Duration::from_millis(41)));
    }

    #[test]
    fn sack_delivers_once_and_picks_the_latest_sent() {
        let mut s = Sender::new();
        let base = Seq(1000);
        s.send(4, ms(0));
        s.send(4, ms(5));
        // Segment 0 is lost; a SACK for 1..8 comes at 30 ms.
        let rs = s.ack(base, &[(base + MSS, base + 8 * MSS)], ms(30));
        assert_eq!(rs.acked_sacked, 7 * MSS);
        // The latest sent delivered segment was sent at 5 ms with delivered 0 and
        // first_sent_time 0: send phase 5 ms, ack phase 30 ms.
        assert_eq!(rs.interval, Some(Duration::from_millis(30)));
        assert_eq!(rs.delivered, 7000);
        // The cumulative ACK later delivers only segment 0 (SACKed bytes count once).
        let rs = s.ack(base + 8 * MSS, &[], ms(31));
        assert_eq!(rs.acked_sacked, MSS);
        assert_eq!(s.rate.delivered(), 8000);
        // Segment 0 was sent at 0 ms with delivered 0 and both times 0: send phase 0, ack
        // phase 31 ms.
        assert_eq!(rs.interval, Some(Duration::from_millis(31)));
        assert_eq!(rs.delivered, 8000);
    }

    #[test]
    fn shorter_than_min_rtt_is_not_a_sample() {
        let mut s = Sender::new();
        let base = Seq(1000);
        s.send(2, ms(0));
        let rs = s.ack(base + MSS, &[], ms(5));
        assert_eq!(rs.interval, None, "5 ms < 10 ms min_rtt");
        assert_eq!(rs.delivery_rate, 0);
        assert_eq!(rs.acked_sacked, MSS);
        // No delivered snapshot at all (a pure window update): no sample either.
        let rs = s.ack(base + MSS, &[], ms(6));
        assert_eq!((rs.interval, rs.acked_sacked), (None, 0));
    }

    #[test]
    fn app_limited_marks_samples_until_the_bubble_is_delivered() {
        let mut s = Sender::new();
        let base = Seq(1000);
        s.send(2, ms(0));
        // Nothing more to send, cwnd not full: app-limited until 2000 bytes are delivered.
        s.rate.check_app_limited(0, MSS, 2 * MSS, 10 * MSS, false);
        assert!(s.rate.is_app_limited());
        s.send(1, ms(1));
        let rs = s.ack(base + 2 * MSS, &[], ms(20));
        assert!(!rs.is_app_limited, "sent before the mark");
        assert!(
            s.rate.is_app_limited(),
            "2000 delivered is not past the marker"
        );
        let rs = s.ack(base + 3 * MSS, &[], ms(21));
        assert!(rs.is_app_limited, "sent while app-limited");
        assert!(!s.rate.is_app_limited(), "the bubble is gone");
        // cwnd-limited or lost data pending: not app-limited.
        s.rate.check_app_limited(0, MSS, 10 * MSS, 10 * MSS, false);
        s.rate.check_app_limited(0, MSS, 0, 10 * MSS, true);
        s.rate.check_app_limited(5 * MSS, MSS, 0, 10 * MSS, false);
        assert!(!s.rate.is_app_limited());
        // The kept rate: the app-limited sample at 21 ms (3000 bytes over 21 ms) replaced the
        // one at 20 ms (2000 over 20 ms) because it is higher.
        let (r, lim) = s.rate.delivery_rate();
        assert_eq!((r, lim), (3000 * 1000 / 21, true));
    }

    #[test]
    fn retransmission_takes_a_new_snapshot() {
        let mut s = Sender::new();
        let base = Seq(1000);
        s.send(3, ms(0));
        // Segment 0 lost; 1 and 2 SACKed at 20 ms.
        s.ack(base, &[(base + MSS, base + 3 * MSS)], ms(20));
        assert_eq!(s.rate.delivered(), 2000);
        let tx = s.rate.on_send(ms(21), s.sb.is_empty());
        s.sb.retransmit_tx(base, base + MSS, ms(21), tx);
        let rs = s.ack(base + 3 * MSS, &[], ms(41));
        assert!(rs.is_retrans);
        assert_eq!(rs.prior_delivered, 2000);
        assert_eq!(rs.delivered, 1000);
        // send phase 21 - 0 (first_sent_time = send time of segment 2) = 21 ms, ack phase
        // 41 - 20 = 21 ms.
        assert_eq!(rs.interval, Some(Duration::from_millis(21)));
        assert_eq!(rs.rtt, None, "Karn: no RTT from a retransmission");
    }
}
