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

use crate::errno::{self, Errno};
use crate::rate::RateSample;
use crate::time::Instant;
use core::time::Duration;

pub mod bbr;
pub mod cubic;
pub mod newreno;

pub use bbr::Bbr;
pub use cubic::Cubic;
pub use newreno::NewReno;

/// The algorithms a socket can choose (TCP_CONGESTION), by Linux's names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CcAlgo {
    /// CUBIC, the engine's default (NewReno recovery when the peer does not do SACK).
    #[default]
    Cubic,
    /// NewReno ("reno").
    Reno,
    /// BBR v1 with pacing.
    Bbr,
}

impl CcAlgo {
    /// Linux's name of the algorithm (what getsockopt(TCP_CONGESTION) returns).
    pub fn name(self) -> &'static str {
        match self {
            CcAlgo::Cubic => "cubic",
            CcAlgo::Reno => "reno",
            CcAlgo::Bbr => "bbr",
        }
    }

    /// Parses a TCP_CONGESTION value: the name up to the first NUL, at most 15 bytes as Linux
    /// reads it; an unknown name is `ENOENT`, as Linux answers.
    pub fn from_name(v: &[u8]) -> Result<CcAlgo, Errno> {
        let v = &v[..v.len().min(15)];
        let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
        match &v[..end] {
            b"cubic" => Ok(CcAlgo::Cubic),
            b"reno" => Ok(CcAlgo::Reno),
            b"bbr" => Ok(CcAlgo::Bbr),
            _ => Err(errno::ENOENT),
        }
    }
}

/// A connection's loss-recovery state as a rate-based algorithm sees it (Linux's CA states,
/// reduced: Disorder and CWR do not exist here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CaState {
    Open,
    /// Fast recovery.
    Recovery,
    /// After a retransmission timeout.
    Loss,
}

/// What the engine tells a rate-based algorithm about the connection with each ACK's sample.
#[derive(Clone, Copy, Debug)]
pub struct AckState {
    pub ca_state: CaState,
    /// Bytes in flight after the ACK (RFC 6675 pipe, losses marked).
    pub in_flight: u32,
    /// Bytes delivered over the connection's life, and when the last were.
    pub delivered: u64,
    pub delivered_time: Instant,
    /// Smoothed RTT, if any sample yet.
    pub srtt: Option<Duration>,
    /// When the pacer lets the next data segment go (`None`: not paced).
    pub next_send: Option<Instant>,
    /// The ACK acknowledged a lone small segment and may have been delayed: its RTT sample
    /// is not evidence of a longer path (Linux's FLAG_ACK_MAYBE_DELAYED).
    pub ack_maybe_delayed: bool,
}

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
    /// Sets cwnd (the algorithm was chosen on a connection that already has a window: it
    /// starts from that window, as Linux's tcp_reinit_congestion_control keeps snd_cwnd).
    fn set_cwnd(&mut self, cwnd: u32);

    /// Rate-based control (Linux's `cong_control` hook): the algorithm sets cwnd and the pacing
    /// rate itself from every ACK's delivery-rate sample, in and out of recovery, through
    /// [`on_rate_sample`](Self::on_rate_sample). The engine then applies no PRR, no
    /// recovery-exit cwnd, no restart after idle, and `on_ack`/`on_recovery_end` are not called.
    fn rate_based(&self) -> bool {
        false
    }
    /// One ACK's rate sample (rate-based algorithms only). Returns true when the connection
    /// must be marked application-limited (BBR's PROBE_RTT ignores its own low-rate samples).
    fn on_rate_sample(&mut self, _now: Instant, _rs: &RateSample, _st: &AckState) -> bool {
        false
    }
    /// Pacing rate in bytes per second; `None`: segments go unpaced.
    fn pacing_rate(&self) -> Option<u64> {
        None
    }
    /// Data is sent with nothing in flight (Linux's CA_EVENT_TX_START); `app_limited` says the
    /// connection is application-limited.
    fn on_tx_start(&mut self, _now: Instant, _app_limited: bool) {}
    /// A recovery was undone (every retransmission shown spurious by DSACK), for algorithms
    /// whose state the engine does not restore itself (rate-based ones).
    fn on_undo(&mut self) {}
    /// Fewest segments per TSO burst when pacing (Linux's min_tso_segs).
    fn min_tso_segs(&self) -> u32 {
        2
    }
    /// The send buffer is grown to this many congestion windows (Linux's sndbuf_expand).
    fn sndbuf_expand(&self) -> u32 {
        2
    }
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
