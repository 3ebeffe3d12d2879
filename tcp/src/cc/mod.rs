//! Congestion control (RFC 5681 section 3): the interface the engine drives, in bytes, and two
//! algorithms: [`cubic::Cubic`] (RFC 9438, the default, as in Linux) and [`newreno::NewReno`]
//! (RFC 5681 and RFC 6582, the fallback when the peer does not do SACK).
//!
//! Division of labour: loss detection and recovery (SACK scoreboard, RACK-TLP, PRR) are the
//! engine's; the algorithm only decides ssthresh at the start of a loss event, cwnd outside
//! recovery and the windows after a timeout or an idle period. During fast recovery cwnd is
//! driven by PRR ([`crate::prr`]) and the engine calls [`CongestionControl::on_recovery_end`]
//! when recovery ends, which sets cwnd = ssthresh (RFC 6937 section 3, RFC 6675 section 5).
//!
//! Slow start counts bytes (RFC 3465, Appropriate Byte Counting) with L = 2 MSS per ACK: a
//! delayed ACK covering two segments grows cwnd by two, while a stretch ACK cannot cause a
//! burst. Neither algorithm grows cwnd when the sender was application-limited (it did not
//! fill cwnd): the ACKs then say nothing about the path's capacity (RFC 7661's rationale).

use crate::time::Instant;
use core::time::Duration;

pub mod cubic;
pub mod newreno;

pub use cubic::Cubic;
pub use newreno::NewReno;

/// A congestion control algorithm, in bytes. See the module documentation for who calls what.
pub trait CongestionControl: core::fmt::Debug {
    fn name(&self) -> &'static str;
    /// Congestion window, bytes.
    fn cwnd(&self) -> u32;
    /// Slow-start threshold, bytes (`u32::MAX` until the first loss).
    fn ssthresh(&self) -> u32;
    /// The sender's MSS changed (e.g. after the handshake or a PMTU change); windows keep their
    /// size in segments.
    fn set_mss(&mut self, mss: u32);
    /// `acked` bytes newly delivered (cumulative + SACK) by an ACK received outside recovery.
    /// `rtt` is this ACK's sample if any, `min_rtt` the windowed minimum; `app_limited` means the
    /// sender did not fill cwnd since the data acked was sent.
    fn on_ack(
        &mut self,
        now: Instant,
        acked: u32,
        rtt: Option<Duration>,
        min_rtt: Option<Duration>,
        app_limited: bool,
    );
    /// Start of one loss event (fast recovery entered; called once per event): sets ssthresh
    /// from `flight` (bytes in flight at detection). cwnd is then PRR's until recovery ends.
    fn on_loss(&mut self, now: Instant, flight: u32);
    /// Fast recovery ended: cwnd = ssthresh.
    fn on_recovery_end(&mut self, now: Instant);
    /// Retransmission timeout: ssthresh reduced as for a loss, cwnd = 1 MSS (the loss window,
    /// RFC 5681 section 3.1).
    fn on_rto(&mut self, now: Instant, flight: u32);
    /// Sending resumes after an idle period longer than an RTO (RFC 5681 section 4.1): cwnd =
    /// min(cwnd, initial window).
    fn on_idle_restart(&mut self, now: Instant);
}

/// RFC 3465 slow start with L = 2 MSS, stopping at ssthresh: returns the new cwnd and the bytes
/// of `acked` left over for congestion avoidance.
pub(crate) fn slow_start(cwnd: u32, ssthresh: u32, acked: u32, mss: u32) -> (u32, u32) {
    let inc = acked.min(mss.saturating_mul(2));
    let room = ssthresh.saturating_sub(cwnd);
    if inc < room {
        (cwnd.saturating_add(inc), 0)
    } else {
        (ssthresh, acked.saturating_sub(room))
    }
}

/// Rescales a window in bytes from one MSS to another, keeping its size in segments.
pub(crate) fn rescale(bytes: u32, old_mss: u32, new_mss: u32) -> u32 {
    if bytes == u32::MAX {
        return bytes;
    }
    let v = u64::from(bytes) * u64::from(new_mss) / u64::from(old_mss.max(1));
    u32::try_from(v).unwrap_or(u32::MAX)
}
