//! One TCP connection: the RFC 9293 state machine with Linux's observable behaviour, fed one
//! segment at a time (`on_segment`), asked for segments (`output.rs`) and woken by its timers
//! (`on_timer`). It holds no frames and reads no clock; the stack passes `now` in.
//!
//! Send side: [`SendBuf`] holds the unacknowledged bytes, [`Scoreboard`] the per-segment
//! SACK/RACK state, loss recovery is RFC 6675 + RACK (RFC 8985) + PRR (RFC 6937), congestion
//! control CUBIC (RFC 9438, NewReno when the peer cannot SACK), NewReno or BBR (which sets cwnd
//! itself in recovery too, and paces: see `output.rs`). Every ACK also yields a delivery-rate
//! sample ([`RateState`]). Receive side: [`RecvBuf`] reassembles without a hole limit and names
//! the SACK blocks; the window autotunes.

use core::time::Duration;
use std::net::SocketAddr;

use crate::cc::{
    bbr::Bbr, cubic::Cubic, newreno::NewReno, AckState, CaState, CcAlgo, CongestionControl,
};
use crate::errno::{self, Errno};
use crate::prr::Prr;
use crate::rate::{RateSample, RateState};
use crate::recvbuf::RecvBuf;
use crate::rtt::RttEstimator;
use crate::scoreboard::Scoreboard;
use crate::sendbuf::SendBuf;
use crate::seq::Seq;
use crate::time::Instant;
use crate::wire::tcp::{flags as F, TcpRepr};

/// RFC 9293 connection states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Closed,
    SynSent,
    SynReceived,
    Established,
    FinWait1,
    FinWait2,
    CloseWait,
    Closing,
    LastAck,
    TimeWait,
}

impl State {
    /// Linux's `TCP_INFO` state numbers.
    pub fn linux(self) -> u8 {
        match self {
            State::Established => 1,
            State::SynSent => 2,
            State::SynReceived => 3,
            State::FinWait1 => 4,
            State::FinWait2 => 5,
            State::TimeWait => 6,
            State::Closed => 7,
            State::CloseWait => 8,
            State::LastAck => 9,
            State::Closing => 11,
        }
    }
}

/// Linux's TCP_TIMEWAIT_LEN and tcp_fin_timeout.
pub const TIME_WAIT: Duration = Duration::from_secs(60);
pub const FIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Delayed-ACK timer (Linux's TCP_ATO_MIN is 40 ms; its delack max 200 ms).
pub const DELACK: Duration = Duration::from_millis(40);
/// TCP_CORK / Nagle-with-cork hold time.
pub const CORK_HOLD: Duration = Duration::from_millis(200);
/// tcp_syn_retries and tcp_retries2.
pub const SYN_RETRIES: u32 = 6;
/// tcp_synack_retries: a half-open passive connection gives up after 5 SYN-ACK resends.
pub const SYNACK_RETRIES: u32 = 5;
pub const DATA_RETRIES: u32 = 15;
/// Segments acknowledged at once after the start (Linux's quick-ack mode).
const QUICKACKS: u32 = 16;
/// Largest window we advertise before scaling, and our window-scale shift (Linux: 7 for a
/// 6 MiB tcp_rmem max).
pub const RCV_WSCALE: u8 = 7;

/// Settings a connection starts with (socket options and the stack's defaults).
#[derive(Clone, Copy, Debug)]
pub struct ConnConfig {
    /// Largest TCP payload per wire segment on our link (MTU - IP - TCP headers).
    pub link_mss: u16,
    pub rcvbuf: usize,
    pub rcvbuf_max: usize,
    /// SO_RCVBUF set: no autotuning.
    pub rcvbuf_locked: bool,
    pub sndbuf: usize,
    pub sndbuf_max: usize,
    pub sndbuf_locked: bool,
    pub nodelay: bool,
    pub cork: bool,
    pub keepalive: Option<Keepalive>,
    /// Largest payload handed to the device in one TSO super-frame (0: no TSO).
    pub tso_max: u32,
    pub timestamps: bool,
    pub sack: bool,
    pub wscale: bool,
    pub initial_window: u32,
    /// Per-connection TSval offset (random, as Linux since 4.10).
    pub ts_offset: u32,
    /// Congestion control algorithm (TCP_CONGESTION or the stack's default).
    pub cc: CcAlgo,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    pub idle: Duration,
    pub interval: Duration,
    pub count: u32,
}

#[derive(Clone, Debug)]
enum Cc {
    Cubic(Cubic),
    NewReno(NewReno),
    /// Boxed: BBR's state is larger than the others', and every connection holds a `Cc`
    /// (twice, with the undo copy).
    Bbr(Box<Bbr>),
}

impl Cc {
    fn get(&mut self) -> &mut dyn CongestionControl {
        match self {
            Cc::Cubic(c) => c,
            Cc::NewReno(c) => c,
            Cc::Bbr(c) => c.as_mut(),
        }
    }
    fn peek(&self) -> &dyn CongestionControl {
        match self {
            Cc::Cubic(c) => c,
            Cc::NewReno(c) => c,
            Cc::Bbr(c) => c.as_ref(),
        }
    }
}

/// Pacing may lag the clock by this much and catch up: the engine is woken by a 1 ms timer
/// wheel, so a paced sender sends about 1 ms of data per wake-up at the pacing rate.
pub const PACING_SLACK: Duration = Duration::from_micros(crate::timer::TICK_US);
/// Linux's fq does not pace a flow's first 10 segments (the initial window goes at once).
const PACING_FREE_SEGS: u64 = 10;

/// Loss-recovery phase (Linux's CA states, reduced).
#[derive(Debug)]
enum Phase {
    Open,
    /// Fast recovery until `point` is acknowledged; PRR paces the sending.
    Recovery {
        point: Seq,
        prr: Prr,
    },
    /// After an RTO: everything outstanding was marked lost and is resent under cwnd.
    Loss {
        point: Seq,
    },
}

/// What the retransmission timer slot is armed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RtxKind {
    Rto,
    /// Tail loss probe (RFC 8985 section 7).
    Tlp,
    /// RACK reordering window (RFC 8985 6.2 step 5).
    Reorder,
    /// Zero-window probe.
    Persist,
}

/// What a segment or timer did that the stack must act on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Readiness may have changed (data, window, state, error).
    pub notify: bool,
    /// Entered ESTABLISHED from SYN-RECEIVED (a listener's accept queue gains it).
    pub established: bool,
    /// The connection is over and its state may be freed (CLOSED).
    pub closed: bool,
    /// Answer the segment with a RST (seq, ack, flags), as RFC 9293 3.10.7 says.
    pub reset: Option<(Seq, Seq, u8)>,
}

pub struct Tcb {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: State,
    pub(crate) cfg: ConnConfig,

    // Send sequence space.
    pub(crate) iss: Seq,
    pub(crate) snd_una: Seq,
    pub(crate) snd_nxt: Seq,
    /// Highest sequence ever sent (snd_nxt falls back to snd_una after an RTO in Linux; we keep
    /// snd_nxt = snd_max and resend through the scoreboard instead).
    pub(crate) snd_wnd: u32,
    pub(crate) max_snd_wnd: u32,
    pub(crate) snd_wl1: Seq,
    pub(crate) snd_wl2: Seq,
    pub(crate) snd_wscale: u8,
    /// End of the last segment smaller than an MSS (Minshall's Nagle).
    pub(crate) snd_sml: Seq,
    pub(crate) sendbuf: SendBuf,
    pub(crate) sb: Scoreboard,
    /// The application shut down writing: a FIN follows the data.
    pub(crate) fin_queued: bool,
    /// Sequence number of our FIN once sent.
    pub(crate) fin_seq: Option<Seq>,
    pub(crate) syn_sent_at: Option<Instant>,
    /// Effective send MSS (payload bytes per wire segment, options excluded).
    pub(crate) mss: u32,
    pub(crate) peer_mss: u16,

    // Receive sequence space.
    pub(crate) irs: Seq,
    pub(crate) rcv_nxt: Seq,
    /// Right edge of the window last advertised (never moved left, RFC 7323 2.4).
    pub(crate) rcv_adv: Seq,
    pub(crate) rcv_wscale: u8,
    pub(crate) recvbuf: RecvBuf,
    /// A FIN that arrived ahead of missing data.
    pub(crate) fin_rcvd: Option<Seq>,
    /// The peer's FIN was taken in order (`rcv_nxt` counts it).
    pub(crate) fin_taken: bool,
    /// Largest payload seen in one segment (the peer's effective MSS, for delayed ACKs).
    pub(crate) rcv_mss: u32,

    // Options.
    pub(crate) ts_ok: bool,
    pub(crate) ts_recent: u32,
    pub(crate) sack_ok: bool,

    // Recovery and congestion control.
    pub(crate) rtt: RttEstimator,
    cc: Cc,
    phase: Phase,
    /// Congestion state before the last reduction, restored when every retransmission of
    /// that episode turns out spurious (DSACK, RFC 2883 section 4 / Linux's undo).
    undo: Option<Cc>,
    /// Retransmitted segments of the episode not yet shown spurious by a DSACK.
    pub(crate) undo_retrans: u32,
    pub(crate) backoff: u32,
    pub(crate) retries: u32,
    dupacks: u32,
    /// The sender filled cwnd at the last output (growth is allowed).
    cwnd_limited: bool,
    /// See [`Tcb::loan_outgrown`].
    loan_outgrown: bool,
    /// Bytes delivered by the ACK being processed (PRR's DeliveredData).
    delivered_now: u32,
    /// Delivery-rate estimation (`rate.rs`).
    pub(crate) rate: RateState,
    /// Pacing: data segments leave no earlier than this (advanced by len / rate per send).
    pub(crate) pacing_next: Option<Instant>,
    /// Pacing timer: data waits for `pacing_next` (folded into `next_deadline`).
    pub(crate) pacing_at: Option<Instant>,
    /// Data segments (in MSS units) sent, for the unpaced start.
    data_segs_out: u64,

    // Timers (absolute deadlines).
    pub(crate) rtx_at: Option<(Instant, RtxKind)>,
    pub(crate) delack_at: Option<Instant>,
    pub(crate) keepalive_at: Option<Instant>,
    pub(crate) end_at: Option<Instant>,
    pub(crate) cork_at: Option<Instant>,
    /// The cork hold time ran out: the partial segment may go.
    pub(crate) cork_expired: bool,
    /// A duplicate segment to report in a D-SACK block (RFC 2883) with the next ACK.
    pub(crate) dsack: Option<(Seq, Seq)>,
    keep_probes: u32,
    pub(crate) last_rcv: Instant,
    pub(crate) last_snd: Instant,

    // ACK state.
    pub(crate) ack_now: bool,
    ack_bytes: u32,
    quickacks: u32,
    /// Interactive (request/response) mode, Linux's pingpong: data went out within the
    /// delayed-ACK time of the last data received, so ACKs wait to ride on the reply (no quick
    /// ACKs, no ACK when the reader empties the buffer). Left when a delayed ACK had to go alone
    /// or when out-of-order data puts the receiver back into quick-ACK mode.
    pingpong: bool,
    /// Small (below one MSS) data segments received since the last ACK (Linux's
    /// ICSK_ACK_PUSHED/PUSHED2): two of them are ACKed on read even in interactive mode.
    small_segs: u8,
    /// When data last arrived (Linux's icsk_ack.lrcvtime).
    last_data_rcv: Instant,
    /// The ACK owed reports out-of-order state (SACK blocks): it goes before the next segment
    /// of the same burst is processed, one per segment as Linux sends them, so the sender
    /// learns of every block even when more holes open than one ACK has room for.
    pub(crate) sack_ack: bool,
    /// A window update is owed (the application read and opened the window).
    pub(crate) win_update: bool,
    pub(crate) send_rst: bool,
    pub(crate) probe_pending: bool,
    /// A range to resend at once whatever the window says (tail loss probe, NewReno's fast
    /// retransmit and partial ACKs).
    pub(crate) rtx_force: Option<(Seq, Seq)>,
    /// One segment of new data may go regardless of cwnd (a tail loss probe).
    pub(crate) tlp_new: bool,

    // Autotuning.
    rcv_space_start: Instant,
    rcv_space_copied: usize,

    /// The peer's last urgent byte (urgent.rs).
    pub(crate) rcv_urg: Option<crate::urgent::RcvUrgent>,
    /// Our urgent pointer while in urgent mode (urgent.rs).
    pub(crate) snd_up: Option<Seq>,

    /// Pending socket error (SO_ERROR).
    pub err: Errno,
    /// Receiving is over (FIN or reset) and readers see end of stream.
    pub rd_closed: bool,
    /// The application shut down reading.
    pub shut_rd: bool,
    /// The application may no longer send (FIN queued or connection gone).
    pub shut_wr: bool,
    /// Closed by the application: the stack frees the state once the exchange ends.
    pub orphan: bool,
    /// Connection came through a listener (SYN-RECEIVED) and the listener still owns it.
    pub(crate) passive: bool,

    pub stats: ConnStats,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ConnStats {
    pub segs_in: u64,
    pub segs_out: u64,
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub retrans_segs: u64,
    pub fast_recoveries: u64,
    pub rtos: u64,
    pub tlps: u64,
    pub dsacks: u64,
    /// Recoveries undone because every retransmission was spurious (DSACK).
    pub undos: u64,
}

fn tsval(now: Instant, off: u32) -> u32 {
    (now.as_millis() as u32).wrapping_add(off)
}

impl Tcb {
    fn new(local: SocketAddr, remote: SocketAddr, iss: Seq, cfg: ConnConfig, now: Instant) -> Tcb {
        let mss = u32::from(cfg.link_mss);
        Tcb {
            local,
            remote,
            state: State::Closed,
            cfg,
            iss,
            snd_una: iss,
            snd_nxt: iss,
            snd_wnd: 0,
            max_snd_wnd: 0,
            snd_wl1: Seq(0),
            snd_wl2: iss,
            snd_wscale: 0,
            snd_sml: iss,
            sendbuf: SendBuf::new(cfg.sndbuf),
            sb: Scoreboard::new(),
            fin_queued: false,
            fin_seq: None,
            syn_sent_at: None,
            mss,
            peer_mss: 536,
            irs: Seq(0),
            rcv_nxt: Seq(0),
            rcv_adv: Seq(0),
            rcv_wscale: 0,
            recvbuf: RecvBuf::new(cfg.rcvbuf),
            fin_rcvd: None,
            fin_taken: false,
            rcv_mss: 536,
            ts_ok: false,
            ts_recent: 0,
            sack_ok: false,
            rtt: RttEstimator::new(),
            cc: Self::make_cc(cfg.cc, mss, &cfg, iss, now),
            phase: Phase::Open,
            undo: None,
            undo_retrans: 0,
            backoff: 0,
            retries: 0,
            dupacks: 0,
            cwnd_limited: false,
            loan_outgrown: false,
            delivered_now: 0,
            rate: RateState::new(),
            pacing_next: None,
            pacing_at: None,
            data_segs_out: 0,
            rtx_at: None,
            delack_at: None,
            keepalive_at: None,
            end_at: None,
            cork_at: None,
            cork_expired: false,
            dsack: None,
            keep_probes: 0,
            last_rcv: now,
            last_snd: now,
            ack_now: false,
            ack_bytes: 0,
            quickacks: QUICKACKS,
            pingpong: false,
            small_segs: 0,
            last_data_rcv: now,
            sack_ack: false,
            win_update: false,
            send_rst: false,
            probe_pending: false,
            rtx_force: None,
            tlp_new: false,
            rcv_space_start: now,
            rcv_space_copied: 0,
            rcv_urg: None,
            snd_up: None,
            err: 0,
            rd_closed: false,
            shut_rd: false,
            shut_wr: false,
            orphan: false,
            passive: false,
            stats: ConnStats::default(),
        }
    }

    fn make_cc(algo: CcAlgo, mss: u32, cfg: &ConnConfig, iss: Seq, now: Instant) -> Cc {
        match algo {
            CcAlgo::Cubic => Cc::Cubic(Cubic::new(mss, cfg.initial_window)),
            CcAlgo::Reno => Cc::NewReno(NewReno::new(mss, cfg.initial_window)),
            CcAlgo::Bbr => {
                // The gain-cycle phases are drawn from the ISN and the timestamp offset, both
                // random per connection.
                let seed = u64::from(iss.0) | (u64::from(cfg.ts_offset) << 32);
                Cc::Bbr(Box::new(Bbr::new(mss, cfg.initial_window, seed, now)))
            }
        }
    }

    /// Chooses another congestion control algorithm (TCP_CONGESTION after connect): it starts
    /// from the current window, as Linux's tcp_reinit_congestion_control.
    pub fn set_congestion(&mut self, algo: CcAlgo, now: Instant) {
        if algo == self.cfg.cc {
            return;
        }
        let cwnd = self.cwnd();
        let started = self.synchronized();
        self.cfg.cc = algo;
        self.cc = Self::make_cc(algo, self.mss, &self.cfg, self.iss, now);
        // Cubic without SACK is NewReno, as set_mss decides.
        self.pick_reno_fallback();
        if started {
            self.cc.get().set_cwnd(cwnd);
        }
        self.undo = None;
        self.pacing_next = None;
        self.pacing_at = None;
    }

    /// The congestion control algorithm chosen (TCP_CONGESTION).
    pub fn congestion(&self) -> CcAlgo {
        self.cfg.cc
    }

    /// The pacing rate in bytes per second, when the algorithm paces.
    pub fn pacing_rate(&self) -> Option<u64> {
        self.cc.peek().pacing_rate()
    }

    /// BBR's state, when the connection runs BBR (tests, diagnostics).
    pub fn bbr(&self) -> Option<&Bbr> {
        match &self.cc {
            Cc::Bbr(b) => Some(b),
            _ => None,
        }
    }

    /// The delivery-rate estimator's state.
    pub fn rate(&self) -> &RateState {
        &self.rate
    }

    /// An active open: SYN-SENT, the SYN goes out at the next output.
    pub fn connect(
        local: SocketAddr,
        remote: SocketAddr,
        iss: Seq,
        cfg: ConnConfig,
        now: Instant,
    ) -> Tcb {
        let mut t = Tcb::new(local, remote, iss, cfg, now);
        t.state = State::SynSent;
        t.snd_nxt = iss;
        t.rcv_wscale = if cfg.wscale { RCV_WSCALE } else { 0 };
        t.arm_rto(now);
        t
    }

    /// A passive open from a SYN (`syn` already validated by the listener): SYN-RECEIVED, the
    /// SYN-ACK goes out at the next output.
    pub fn accept_syn(
        local: SocketAddr,
        remote: SocketAddr,
        iss: Seq,
        syn: &TcpRepr,
        cfg: ConnConfig,
        now: Instant,
    ) -> Tcb {
        let mut t = Tcb::new(local, remote, iss, cfg, now);
        t.state = State::SynReceived;
        t.passive = true;
        t.take_syn_options(syn, now);
        t.arm_rto(now);
        t
    }

    /// A connection completed from a SYN cookie: ESTABLISHED at once with what the cookie kept.
    #[allow(clippy::too_many_arguments)]
    pub fn from_cookie(
        local: SocketAddr,
        remote: SocketAddr,
        iss: Seq,
        irs: Seq,
        mss: u16,
        wscale: Option<u8>,
        sack: bool,
        ack: &TcpRepr,
        cfg: ConnConfig,
        now: Instant,
    ) -> Tcb {
        let mut t = Tcb::new(local, remote, iss, cfg, now);
        t.passive = true;
        t.irs = irs;
        t.rcv_nxt = irs + 1;
        t.peer_mss = mss;
        t.ts_ok = ack.opts.timestamp.is_some() && cfg.timestamps;
        if let Some((v, _)) = ack.opts.timestamp {
            t.ts_recent = v;
        }
        t.sack_ok = sack && cfg.sack && t.ts_ok;
        match wscale {
            Some(w) if cfg.wscale && t.ts_ok => {
                t.snd_wscale = w;
                t.rcv_wscale = RCV_WSCALE;
            }
            _ => {}
        }
        t.snd_una = iss + 1;
        t.snd_nxt = iss + 1;
        t.snd_sml = iss + 1;
        t.snd_wl1 = ack.seq;
        t.snd_wl2 = ack.ack;
        t.snd_wnd = u32::from(ack.window) << t.snd_wscale;
        t.max_snd_wnd = t.snd_wnd;
        t.rcv_adv = t.rcv_nxt;
        t.set_mss();
        t.state = State::Established;
        t.size_sndbuf();
        t
    }

    fn take_syn_options(&mut self, syn: &TcpRepr, now: Instant) {
        self.irs = syn.seq;
        self.rcv_nxt = syn.seq + 1;
        self.rcv_adv = self.rcv_nxt;
        self.peer_mss = syn.opts.mss.unwrap_or(536).max(64);
        self.ts_ok = self.cfg.timestamps && syn.opts.timestamp.is_some();
        if let Some((v, _)) = syn.opts.timestamp {
            self.ts_recent = v;
        }
        self.sack_ok = self.cfg.sack && syn.opts.sack_permitted;
        match syn.opts.wscale {
            Some(w) if self.cfg.wscale => {
                self.snd_wscale = w.min(14);
                self.rcv_wscale = RCV_WSCALE;
            }
            _ => {
                self.snd_wscale = 0;
                self.rcv_wscale = 0;
            }
        }
        // The window of a SYN is never scaled (RFC 7323 2.2).
        self.snd_wnd = u32::from(syn.window);
        self.max_snd_wnd = self.snd_wnd;
        self.snd_wl1 = syn.seq;
        self.last_rcv = now;
        self.set_mss();
    }

    /// Send MSS from the peer's MSS option, our link, and the options every segment carries.
    fn set_mss(&mut self) {
        let base = u32::from(self.peer_mss.min(self.cfg.link_mss));
        let opt = if self.ts_ok { 12 } else { 0 };
        self.mss = base.saturating_sub(opt).max(48);
        self.rcv_mss = self.rcv_mss.min(self.mss).max(536.min(self.mss));
        self.cc.get().set_mss(self.mss);
        self.sb.set_mss(self.mss);
        self.pick_reno_fallback();
    }

    /// CUBIC's recovery needs SACK: without it the scoreboard cannot see holes, and NewReno
    /// (RFC 6582) recovers instead. (An explicit "reno" or "bbr" stays what it is.)
    fn pick_reno_fallback(&mut self) {
        if self.cfg.cc != CcAlgo::Cubic {
            return;
        }
        if !self.sack_ok {
            if let Cc::Cubic(_) = self.cc {
                self.cc = Cc::NewReno(NewReno::new(self.mss, self.cfg.initial_window));
            }
        } else if let Cc::NewReno(_) = self.cc {
            self.cc = Cc::Cubic(Cubic::new(self.mss, self.cfg.initial_window));
        }
    }

    /// Lowers the MSS after an ICMP "fragmentation needed"/"packet too big" (RFC 1191/8201).
    pub fn pmtu_update(&mut self, mtu: u32, ip_header: u32) {
        let link = mtu.saturating_sub(ip_header + 20).max(536);
        if link < u32::from(self.cfg.link_mss) {
            self.cfg.link_mss = link as u16;
            self.set_mss();
            // Linux's tcp_simple_retransmit: what is in flight and no longer fits is lost and
            // goes again at once at the new size, without a congestion-window reduction.
            // (Records merge consecutive sends, so everything unSACKed is marked.)
            let mss = self.mss;
            let too_big = self
                .sb
                .records()
                .any(|r| !r.sacked && r.start.dist(r.end) > mss);
            if self.synchronized() && too_big {
                self.sb.mark_all_lost();
                if !matches!(self.phase, Phase::Loss { .. }) {
                    self.phase = Phase::Loss {
                        point: self.snd_nxt,
                    };
                }
                self.sb.set_recovery(true);
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Getters

    pub fn cwnd(&self) -> u32 {
        self.cc.peek().cwnd()
    }

    pub fn ssthresh(&self) -> u32 {
        self.cc.peek().ssthresh()
    }

    pub fn mss(&self) -> u32 {
        self.mss
    }

    pub fn readable(&self) -> usize {
        self.recvbuf.readable()
    }

    pub fn unsent(&self) -> usize {
        self.sendbuf
            .len()
            .saturating_sub(self.snd_una.dist(self.snd_nxt) as usize)
    }

    /// Payload bytes `[off, off + len)` after snd_una, for the frame being built.
    pub fn sendbuf_slices(&self, off: usize, len: usize) -> (&[u8], &[u8]) {
        self.sendbuf.slices(off, len)
    }

    pub fn sendbuf_capacity(&self) -> usize {
        self.sendbuf.capacity()
    }

    pub fn recvbuf_capacity(&self) -> usize {
        self.recvbuf.capacity()
    }

    pub fn send_queue(&self) -> usize {
        self.sendbuf.len()
    }

    /// Free send space that makes the socket writable (Linux: free >= queued / 2). With a lent
    /// stream: acknowledged bytes wait to be handed back (the owner frees stream space).
    pub fn writable(&self) -> bool {
        if self.sendbuf.is_lent() {
            // The stream's space is its owner's; acknowledged bytes are what frees it. An
            // outgrown loan is news too: its owner should end it (reclaim) without waiting for
            // an acknowledgement that may not come before the RTO.
            return self.sendbuf.has_acked() || self.loan_outgrown;
        }
        if self.shut_wr || !self.synchronized_or_closing() {
            return false;
        }
        let free = self.sendbuf.free();
        free > 0 && free >= self.sendbuf.len() / 2
    }

    pub fn send_space(&self) -> usize {
        if self.shut_wr {
            0
        } else {
            self.sendbuf.free()
        }
    }

    fn synchronized_or_closing(&self) -> bool {
        matches!(self.state, State::Established | State::CloseWait)
    }

    pub fn is_connecting(&self) -> bool {
        matches!(self.state, State::SynSent | State::SynReceived)
    }

    pub fn memory(&self) -> usize {
        core::mem::size_of::<Tcb>()
            + self.sendbuf.allocated()
            + self.recvbuf.allocated()
            + self.sb.len_records() * 48
    }

    pub fn rto(&self) -> Duration {
        self.rto_backed_off()
    }

    pub fn rttvar(&self) -> Duration {
        self.rtt.rttvar()
    }

    pub fn rcv_mss(&self) -> u32 {
        self.rcv_mss
    }

    pub fn srtt(&self) -> Option<Duration> {
        self.rtt.srtt()
    }

    pub fn in_recovery(&self) -> bool {
        !matches!(self.phase, Phase::Open)
    }

    /// The earliest of this connection's timers.
    pub fn next_deadline(&self) -> Option<Instant> {
        // Pairwise, without building an array on the stack (this runs after every event).
        fn earlier(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
            match (a, b) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, None) => x,
                (None, y) => y,
            }
        }
        let a = earlier(self.rtx_at.map(|(t, _)| t), self.delack_at);
        let b = earlier(self.keepalive_at, self.end_at);
        earlier(earlier(a, b), earlier(self.cork_at, self.pacing_at))
    }

    /// Work for the output path: something to send now.
    pub fn wants_output(&self) -> bool {
        self.ack_now
            || self.win_update
            || self.send_rst
            || self.probe_pending
            || (matches!(self.state, State::SynSent | State::SynReceived)
                && self.syn_sent_at.is_none())
            || self.unsent() > 0
            || (self.fin_queued && self.fin_seq.is_none())
            || self.rtx_force.is_some()
            || self.tlp_new
            || self.sb.next_lost().is_some()
    }

    /// New data went out: a reply within the delayed-ACK time of the last data received makes
    /// the connection interactive (Linux's tcp_event_data_sent; TCP_PINGPONG_THRESH is 1).
    pub(crate) fn on_new_data_sent(&mut self, now: Instant) {
        if now - self.last_data_rcv < DELACK {
            self.pingpong = true;
        }
    }

    /// Interactive mode (for tests and TCP_INFO-like views).
    pub fn interactive(&self) -> bool {
        self.pingpong
    }

    pub(crate) fn ts_now(&self, now: Instant) -> u32 {
        tsval(now, self.cfg.ts_offset)
    }

    // -----------------------------------------------------------------------------------------
    // Application calls

    /// Appends application bytes; returns how many were taken.
    pub fn write(&mut self, data: &[u8]) -> usize {
        if self.shut_wr {
            return 0;
        }
        self.before_append(data.len());
        self.sendbuf.write(data)
    }

    /// Lent stream (crate::source): `n` more bytes were appended to it; returns how many taken.
    pub fn append_lent(&mut self, n: usize) -> usize {
        if self.shut_wr {
            return 0;
        }
        self.before_append(n);
        self.sendbuf.append_lent(n)
    }

    /// Lends the send side to a stream whose next byte has index `base` (only while nothing is
    /// queued); `size` bounds what may be outstanding (the stream's size).
    pub fn lend(&mut self, base: u32, size: usize) -> bool {
        if self.loan_outgrown || !self.sendbuf.lend(base, size) {
            return false;
        }
        self.sendbuf.set_capacity(size);
        true
    }

    /// The lent stream is too small for the path: it holds at most twice what the path does
    /// (bandwidth x minimum RTT), or a hole pinned it full with everything sent (a loss then
    /// stalls the sender). Its owner should end the loan and let the send buffer grow with the
    /// window; until it does the socket stays writable (no further edges). Once set, the
    /// connection is never lent again.
    pub fn loan_outgrown(&self) -> bool {
        self.loan_outgrown
    }

    /// The send side is lent to a stream.
    pub fn is_lent(&self) -> bool {
        self.sendbuf.is_lent()
    }

    /// The send buffer's view of SND.UNA + `off` in the lent stream (None: not lent).
    pub fn lent_index(&self, off: usize) -> Option<u32> {
        self.sendbuf.lent_index(off)
    }

    /// Lent stream: bytes acknowledged since the last call; None when nothing is lent.
    pub fn take_acked(&mut self) -> Option<u32> {
        self.sendbuf.is_lent().then(|| self.sendbuf.take_acked())
    }

    /// Ends the loan: the unacknowledged bytes (read from the stream by the caller) are copied
    /// into the send buffer. Returns the acknowledged count not yet taken.
    pub fn reclaim(&mut self, a: &[u8], b: &[u8]) -> u32 {
        self.sendbuf.reclaim(a, b)
    }

    /// Bookkeeping before `n` new application bytes are queued.
    fn before_append(&mut self, n: usize) {
        if n != 0 && self.synchronized() {
            // A new write after the sender ran dry: the samples until now were limited by the
            // application, not the path (the draft's check at sendmsg time, as Linux).
            let unsent = u32::try_from(self.unsent()).unwrap_or(u32::MAX);
            self.rate.check_app_limited(
                unsent,
                self.mss,
                self.sb.pipe(),
                self.cwnd(),
                self.sb.lost_bytes() > 0,
            );
        }
    }

    /// Reads received bytes; updates the window (and may owe the peer a window update).
    pub fn read(&mut self, out: &mut [u8], now: Instant) -> usize {
        let n = self.recvbuf.read(out);
        if n > 0 {
            self.after_read(n, now);
        }
        n
    }

    /// Drops `n` readable bytes (after the caller copied them from [`Tcb::read_slices`]).
    pub fn consume(&mut self, n: usize, now: Instant) {
        self.recvbuf.consume(n);
        if n > 0 {
            self.after_read(n, now);
        }
    }

    pub fn read_slices(&self) -> (&[u8], &[u8]) {
        self.recvbuf.slices()
    }

    fn after_read(&mut self, n: usize, now: Instant) {
        self.rcv_space_copied += n;
        if self.rcv_urg.is_some() {
            self.urgent_read();
        }
        self.autotune_rcv(now);
        // Linux's tcp_cleanup_rbuf: a window update when the window at least doubles (and
        // grows by an MSS or more).
        let adv = self.rcv_nxt.dist(self.rcv_adv) as usize;
        let new = self.recv_window() as usize;
        if new >= 2 * adv && new >= adv + self.rcv_mss as usize {
            self.win_update = true;
        }
        if self.recvbuf.readable() == 0
            && self.delack_at.is_some()
            && self.ack_bytes > 0
            && (!self.pingpong || self.small_segs >= 2)
        {
            // Everything was read: the pending delayed ACK goes now with the open window
            // (Linux's tcp_cleanup_rbuf), unless a reply is expected to carry it.
            self.ack_now = true;
        }
    }

    /// Receive-buffer autotuning (Linux's tcp_rcv_space_adjust, simplified): once per RTT,
    /// if the application drained more than half the buffer, double the buffer.
    fn autotune_rcv(&mut self, now: Instant) {
        if self.cfg.rcvbuf_locked {
            return;
        }
        let rtt = self
            .rtt
            .srtt()
            .unwrap_or(Duration::from_millis(1))
            .max(Duration::from_micros(100));
        if now - self.rcv_space_start < rtt {
            return;
        }
        let cap = self.recvbuf.capacity();
        if self.rcv_space_copied * 2 > cap && cap < self.cfg.rcvbuf_max {
            self.recvbuf
                .set_capacity((cap * 2).min(self.cfg.rcvbuf_max));
        }
        self.rcv_space_start = now;
        self.rcv_space_copied = 0;
    }

    /// The application shut down writing (or closed): FIN after the queued data.
    pub fn shutdown_write(&mut self) {
        if self.shut_wr {
            return;
        }
        self.shut_wr = true;
        match self.state {
            State::SynSent => {
                self.state = State::Closed;
            }
            State::SynReceived | State::Established => {
                self.fin_queued = true;
                if self.state == State::Established {
                    self.state = State::FinWait1;
                }
            }
            State::CloseWait => {
                self.fin_queued = true;
                self.state = State::LastAck;
            }
            _ => {}
        }
    }

    /// Aborts: a RST goes out (when synchronized) and the connection is over.
    pub fn abort(&mut self) {
        if matches!(
            self.state,
            State::SynReceived
                | State::Established
                | State::FinWait1
                | State::FinWait2
                | State::CloseWait
        ) {
            self.send_rst = true;
        }
        self.enter_closed();
    }

    /// At establishment the send buffer holds two initial windows (Linux's
    /// tcp_init_buffer_space / tcp_sndbuf_expand: 2 x cwnd segments), then grows with cwnd.
    fn size_sndbuf(&mut self) {
        if !self.cfg.sndbuf_locked {
            let want = self.sndbuf_want();
            if want > self.sendbuf.capacity() {
                self.sendbuf.set_capacity(want);
            }
        }
    }

    /// Send buffer for the window: cwnd times the algorithm's expansion (2, BBR 3).
    fn sndbuf_want(&self) -> usize {
        let n = self.cc.peek().sndbuf_expand() as usize;
        (n * self.cwnd() as usize).clamp(self.cfg.sndbuf, self.cfg.sndbuf_max)
    }

    fn enter_closed(&mut self) {
        self.state = State::Closed;
        self.rd_closed = true;
        self.shut_wr = true;
        self.pacing_at = None;
        self.rtx_at = None;
        self.delack_at = None;
        self.keepalive_at = None;
        self.cork_at = None;
        self.end_at = None;
    }

    fn enter_time_wait(&mut self, now: Instant) {
        self.state = State::TimeWait;
        self.pacing_at = None;
        self.rtx_at = None;
        self.keepalive_at = None;
        self.cork_at = None;
        self.end_at = Some(now + TIME_WAIT);
        // Buffers are not needed any more (a lent one holds no memory, and its count of
        // acknowledged bytes is still owed to the stream's owner).
        if !self.sendbuf.is_lent() {
            self.sendbuf = SendBuf::new(0);
        }
        self.recvbuf.shrink();
    }

    pub fn set_keepalive(&mut self, k: Option<Keepalive>, now: Instant) {
        self.cfg.keepalive = k;
        self.keep_probes = 0;
        self.rearm_keepalive(now);
    }

    fn rearm_keepalive(&mut self, now: Instant) {
        self.keepalive_at = match (self.cfg.keepalive, self.state) {
            (Some(k), State::Established | State::CloseWait | State::FinWait2) => {
                Some(self.last_rcv.max(now) + k.idle)
            }
            _ => None,
        };
    }

    pub fn set_nodelay(&mut self, on: bool) {
        self.cfg.nodelay = on;
    }

    pub fn set_cork(&mut self, on: bool) {
        self.cfg.cork = on;
        if !on {
            self.cork_at = None;
            self.cork_expired = false;
        }
    }

    pub fn set_sndbuf(&mut self, bytes: usize) {
        self.cfg.sndbuf = bytes;
        self.cfg.sndbuf_locked = true;
        self.sendbuf.set_capacity(bytes);
    }

    pub fn set_rcvbuf(&mut self, bytes: usize) {
        self.cfg.rcvbuf = bytes;
        self.cfg.rcvbuf_locked = true;
        self.recvbuf.set_capacity(bytes);
    }

    /// Releases buffer memory an idle connection does not need.
    pub fn trim(&mut self) {
        if self.sendbuf.is_empty() {
            self.sendbuf.shrink();
        }
        if self.recvbuf.readable() == 0 && !self.recvbuf.has_ooo() {
            self.recvbuf.shrink();
        }
    }

    // -----------------------------------------------------------------------------------------
    // Windows and timers

    /// The receive window we can offer now (bytes, unscaled).
    pub(crate) fn recv_window(&self) -> u32 {
        let w = self.recvbuf.window().min(u32::MAX as usize) as u32;
        let max = 65535u32 << self.rcv_wscale;
        w.min(max)
    }

    pub(crate) fn arm_rto(&mut self, now: Instant) {
        let rto = self.rto_backed_off();
        self.rtx_at = Some((now + rto, RtxKind::Rto));
    }

    fn rto_backed_off(&self) -> Duration {
        let base = self.rtt.rto();
        let mut d = base;
        for _ in 0..self.backoff.min(16) {
            d = d.saturating_mul(2);
            if d >= crate::rtt::RTO_MAX {
                return crate::rtt::RTO_MAX;
            }
        }
        d.min(crate::rtt::RTO_MAX)
    }

    /// New data waits for the peer's window: it has less room than a segment (or than what is
    /// left to send). With nothing in flight no ACK will come to open it, and a window update
    /// of the peer's may be lost, so the probe timer runs (RFC 9293 3.8.6.1 for a zero window;
    /// Linux arms it whenever nothing is in flight and data waits, tcp_check_probe_timer):
    /// below a segment the sender-side SWS rules hold the data just as a zero window does.
    fn window_blocks(&self) -> bool {
        let room = self.snd_nxt.dist(self.snd_una + self.snd_wnd) as usize;
        room < self.unsent().min(self.mss as usize)
    }

    /// After output or an ACK: the right timer for what is outstanding (RFC 6298 5.1-5.3,
    /// RFC 8985 7.2 for the probe timeout).
    pub(crate) fn rearm_rtx(&mut self, now: Instant, restart: bool) {
        let outstanding = !self.sb.is_empty()
            || self.fin_seq.is_some_and(|f| self.snd_una <= f)
            || matches!(self.state, State::SynSent | State::SynReceived);
        if !outstanding {
            self.rtx_at = if self.unsent() > 0 && self.window_blocks() {
                // An armed probe timer keeps its deadline: output runs on every wake-up (a
                // write, a stale timer) and must not push the probe back each time.
                match self.rtx_at {
                    Some((t, RtxKind::Persist)) => Some((t, RtxKind::Persist)),
                    _ => Some((now + self.rto_backed_off(), RtxKind::Persist)),
                }
            } else {
                None
            };
            return;
        }
        if matches!(self.rtx_at, Some((_, RtxKind::Reorder))) {
            return;
        }
        if !restart && matches!(self.rtx_at, Some((_, RtxKind::Rto | RtxKind::Tlp))) {
            return;
        }
        // Tail loss probe: with SACK, no retransmission backoff, in the open phase or in fast
        // recovery. RFC 8985 and Linux probe only in the open phase; FreeBSD's RACK stack also
        // probes in recovery (its default), and so do we: there, when the ACK clock stops
        // (the last ACKs of a flight lost, a retransmission lost with nothing sent after it
        // to reveal it, the window spent), nothing but the RTO (200 ms at least) would move
        // the connection, a thousand round trips on a short path.
        let recovering = matches!(self.phase, Phase::Recovery { .. });
        if self.sack_ok
            && (recovering || (matches!(self.phase, Phase::Open) && self.sb.lost_bytes() == 0))
            && self.backoff == 0
            && self.synchronized()
        {
            if let Some(srtt) = self.rtt.srtt() {
                // RFC 8985 7.2 with Linux's slack: 2 SRTT plus 2 ms (TCP_TIMEOUT_MIN), or plus
                // the peer's worst delayed ACK when a single segment is out (in recovery the
                // peer ACKs at once: it holds out-of-order data). A single segment, as Linux
                // counts packets_out: two small writes sent apart (TCP_NODELAY) are two
                // segments in flight with less than an MSS between them, and the second one
                // lost is probed after 2 ms, not 200 (records of different send times are
                // never merged on the scoreboard).
                let single = self.sb.pipe() <= self.mss && self.sb.len_records() <= 1;
                let pto = if single && !recovering {
                    srtt * 2 + Duration::from_millis(200)
                } else {
                    srtt * 2 + Duration::from_millis(2)
                };
                let pto = pto.min(self.rtt.rto());
                self.rtx_at = Some((now + pto, RtxKind::Tlp));
                return;
            }
        }
        self.rtx_at = Some((now + self.rto_backed_off(), RtxKind::Rto));
    }

    fn synchronized(&self) -> bool {
        !matches!(
            self.state,
            State::SynSent | State::SynReceived | State::Closed
        )
    }

    /// Fires whichever timers are due at `now`.
    pub fn on_timer(&mut self, now: Instant) -> Effects {
        let mut fx = Effects::default();
        if self.end_at.is_some_and(|t| t <= now) {
            self.end_at = None;
            match self.state {
                State::TimeWait => {
                    self.state = State::Closed;
                    fx.closed = true;
                    return fx;
                }
                State::FinWait2 => {
                    // Linux turns the orphan into a FIN-WAIT-2 timewait socket that expires
                    // silently after tcp_fin_timeout: no RST.
                    self.enter_closed();
                    fx.closed = true;
                    fx.notify = true;
                    return fx;
                }
                State::Closing | State::LastAck | State::FinWait1 => {
                    // An orphan's FIN exchange did not finish: reset it (Linux's fin timeout).
                    self.abort();
                    fx.closed = true;
                    fx.notify = true;
                    return fx;
                }
                _ => {}
            }
        }
        if self.delack_at.is_some_and(|t| t <= now) {
            self.delack_at = None;
            if self.ack_bytes > 0 || self.win_update {
                self.ack_now = true;
                // No reply carried it: not interactive after all (Linux's delack timer).
                self.pingpong = false;
            }
        }
        if self.cork_at.is_some_and(|t| t <= now) {
            self.cork_at = None;
            self.cork_expired = true;
        }
        if self.pacing_at.is_some_and(|t| t <= now) {
            // The paced data may go: the stack runs output after timers.
            self.pacing_at = None;
        }
        if let Some((t, kind)) = self.rtx_at {
            if t <= now {
                self.rtx_at = None;
                match kind {
                    RtxKind::Rto => fx = self.on_rto(now),
                    RtxKind::Tlp => self.on_tlp(now),
                    RtxKind::Reorder => {
                        let srtt = self.rtt.srtt().unwrap_or(Duration::from_millis(1));
                        let r = self.sb.rack_detect_loss(now, srtt);
                        if let Some(t) = r.timeout {
                            self.rtx_at = Some((t, RtxKind::Reorder));
                        }
                        if r.newly_lost > 0 {
                            self.enter_recovery(now);
                        }
                        if self.rtx_at.is_none() {
                            self.rearm_rtx(now, true);
                        }
                    }
                    RtxKind::Persist => {
                        self.probe_pending = true;
                        self.backoff = (self.backoff + 1).min(16);
                        self.rtx_at = Some((now + self.rto_backed_off(), RtxKind::Persist));
                    }
                }
            }
        }
        if self.keepalive_at.is_some_and(|t| t <= now) {
            if let Some(k) = self.cfg.keepalive {
                if now - self.last_rcv >= k.idle {
                    if self.keep_probes >= k.count {
                        self.err = errno::ETIMEDOUT;
                        self.abort();
                        fx.notify = true;
                        fx.closed = true;
                        return fx;
                    }
                    self.keep_probes += 1;
                    self.probe_pending = true;
                    self.keepalive_at = Some(now + k.interval);
                } else {
                    // Idle counts from the last segment received (Linux's keepalive timer
                    // re-arms for keepalive_time - elapsed).
                    self.keepalive_at = Some(self.last_rcv + k.idle);
                }
            } else {
                self.keepalive_at = None;
            }
        }
        fx
    }

    fn on_rto(&mut self, now: Instant) -> Effects {
        let mut fx = Effects::default();
        self.stats.rtos += 1;
        self.retries += 1;
        let half_open = self.state == State::SynReceived && self.passive;
        let limit = if half_open {
            SYNACK_RETRIES
        } else if matches!(self.state, State::SynSent | State::SynReceived) {
            SYN_RETRIES
        } else {
            DATA_RETRIES
        };
        if self.retries > limit && half_open {
            // Linux's request socket just expires: no RST.
            self.enter_closed();
            fx.closed = true;
            return fx;
        }
        if self.retries > limit {
            self.err = errno::ETIMEDOUT;
            self.abort();
            fx.notify = true;
            fx.closed = true;
            return fx;
        }
        self.backoff = (self.backoff + 1).min(16);
        match self.state {
            State::SynSent | State::SynReceived => {
                // The SYN (or SYN-ACK) goes again; Karn: no RTT sample from it.
                self.syn_sent_at = None;
            }
            _ => {
                let flight = self.snd_una.dist(self.snd_nxt).max(self.mss);
                if !matches!(self.phase, Phase::Loss { .. }) {
                    // An RTO is not undone (Linux undoes it only with timestamps or F-RTO).
                    self.undo = None;
                    self.cc.get().on_rto(now, flight);
                } else {
                    // Another RTO in the same loss episode: ssthresh stays, but the window
                    // starts again from one segment (Linux's tcp_enter_loss, every time).
                    self.cc.get().set_cwnd(self.mss);
                }
                self.sb.mark_all_lost();
                self.sb.set_recovery(true);
                self.phase = Phase::Loss {
                    point: self.snd_nxt,
                };
                self.dupacks = 0;
                if self.sb.is_empty() && self.fin_seq.is_some_and(|f| self.snd_una <= f) {
                    // Only the FIN is outstanding: send it again.
                    self.fin_seq = None;
                    self.snd_nxt = self.snd_nxt - 1;
                }
            }
        }
        self.arm_rto(now);
        fx
    }

    fn on_tlp(&mut self, now: Instant) {
        self.stats.tlps += 1;
        let hole = match self.phase {
            Phase::Recovery { .. } => self.sb.next_lost().or_else(|| self.sb.first_hole()),
            _ => None,
        };
        if let Some(hole) = hole {
            // In recovery the probe fills the first hole: a segment known lost and held back
            // by the window, or one retransmitted already, whose retransmission may be lost
            // with nothing sent after it to tell (a probe of the highest segment, SACKed
            // already, would draw an ACK that says nothing new).
            self.rtx_force = Some(hole);
        } else if self.unsent() > 0 && self.snd_wnd > self.snd_una.dist(self.snd_nxt) {
            // New data makes the probe (RFC 8985 7.3).
            self.tlp_new = true;
        } else if let Some((s, e)) = self.sb.latest_xmit() {
            let s = s.max(e - self.mss.min(s.dist(e)));
            self.rtx_force = Some((s, e));
        }
        self.rtx_at = Some((now + self.rto_backed_off(), RtxKind::Rto));
    }

    /// A DSACK reports one retransmission as spurious; once every retransmission of the last
    /// fast-recovery episode was, the reduction was a mistake (reordering, not loss): restore
    /// the congestion state saved at its start and leave recovery.
    fn dsack_undo(&mut self) {
        if self.undo.is_none() {
            return;
        }
        self.undo_retrans = self.undo_retrans.saturating_sub(1);
        if self.undo_retrans > 0 || self.sb.lost_bytes() > 0 {
            return;
        }
        if let Some(cc) = self.undo.take() {
            if self.cc.peek().rate_based() {
                // The model (bandwidth, min RTT) was not reduced: keep it, only tell the
                // algorithm (BBR restarts its full-pipe detection).
                self.cc.get().on_undo();
            } else if cc.peek().cwnd() > self.cwnd() {
                // Like Linux's tcp_undo_cwnd_reduction: never below what the window is now.
                self.cc = cc;
            }
            self.stats.undos += 1;
            if matches!(self.phase, Phase::Recovery { .. }) {
                self.phase = Phase::Open;
                self.sb.set_recovery(false);
            }
        }
    }

    fn enter_recovery(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::Open) {
            return;
        }
        // RFC 5681 FlightSize and RFC 6937 RecoverFS: everything outstanding, SACKed or not
        // (the pipe estimate would under-count right after a burst of SACKs).
        let flight = self.snd_una.dist(self.snd_nxt).max(self.mss);
        self.undo = Some(self.cc.clone());
        self.undo_retrans = 0;
        self.cc.get().on_loss(now, flight);
        self.stats.fast_recoveries += 1;
        self.sb.set_recovery(true);
        self.phase = Phase::Recovery {
            point: self.snd_nxt,
            prr: Prr::start(flight.max(1)),
        };
    }

    // -----------------------------------------------------------------------------------------
    // Segment arrival (RFC 9293 3.10.7)

    /// Processes a segment addressed to this connection.
    pub fn on_segment(&mut self, now: Instant, seg: &TcpRepr, payload: &[u8]) -> Effects {
        self.on_segment_into(now, seg, payload, &mut |_| 0)
    }

    /// [`Tcb::on_segment`], offering in-order payload to `direct` first (see [`crate::sink`]):
    /// it returns how many of the offered bytes it took.
    pub fn on_segment_into(
        &mut self,
        now: Instant,
        seg: &TcpRepr,
        payload: &[u8],
        direct: &mut dyn FnMut(&[u8]) -> usize,
    ) -> Effects {
        self.stats.segs_in += 1;
        match self.state {
            State::Closed => Effects::default(),
            State::SynSent => self.on_segment_syn_sent(now, seg, payload),
            _ => self.on_segment_sync(now, seg, payload, direct),
        }
    }

    fn on_segment_syn_sent(&mut self, now: Instant, seg: &TcpRepr, payload: &[u8]) -> Effects {
        let mut fx = Effects::default();
        let has = |f: u8| seg.flags & f != 0;
        if has(F::ACK) && (seg.ack <= self.iss || seg.ack > self.snd_nxt) {
            if !has(F::RST) {
                fx.reset = Some((seg.ack, Seq(0), F::RST));
            }
            return fx;
        }
        if has(F::RST) {
            if has(F::ACK) {
                self.err = errno::ECONNREFUSED;
                self.enter_closed();
                fx.notify = true;
                fx.closed = true;
            }
            return fx;
        }
        if !has(F::SYN) {
            return fx;
        }
        self.take_syn_options(seg, now);
        if has(F::ACK) {
            // SYN-ACK: established.
            if let Some(t) = self.syn_sent_at.filter(|_| self.retries == 0) {
                self.rtt.on_sample(now - t, now);
            }
            self.snd_una = seg.ack;
            self.snd_nxt = seg.ack;
            self.snd_sml = seg.ack;
            self.snd_wl2 = seg.ack;
            self.state = State::Established;
            self.size_sndbuf();
            self.retries = 0;
            self.backoff = 0;
            self.rtx_at = None;
            self.ack_now = true;
            self.rearm_keepalive(now);
            fx.notify = true;
            if !payload.is_empty() || has(F::FIN) {
                let mut s = *seg;
                s.seq = seg.seq + 1;
                s.flags &= !F::SYN;
                self.accept_data(now, &s, payload, &mut fx, &mut |_| 0);
            }
        } else {
            // Simultaneous open (RFC 9293 3.5 figure 8): SYN-RECEIVED, SYN-ACK out.
            self.state = State::SynReceived;
            self.syn_sent_at = None;
            self.snd_nxt = self.iss;
        }
        fx
    }

    fn seg_len(seg: &TcpRepr, payload: &[u8]) -> u32 {
        payload.len() as u32
            + u32::from(seg.flags & F::SYN != 0)
            + u32::from(seg.flags & F::FIN != 0)
    }

    /// The receive window the first check measures segments against.
    fn check_window(&self) -> u32 {
        self.rcv_nxt.dist(self.rcv_adv).max(self.recv_window())
    }

    /// RFC 9293 3.10.7.4 first check: does the segment overlap the receive window?
    fn acceptable(&self, seg: &TcpRepr, len: u32) -> bool {
        let wnd = self.check_window();
        let s = seg.seq;
        if len == 0 {
            if wnd == 0 {
                s == self.rcv_nxt
            } else {
                self.rcv_nxt <= s && s < self.rcv_nxt + wnd
            }
        } else if wnd == 0 {
            // "If the RCV.WND is zero, no segments will be acceptable, but special allowance
            // should be made to accept valid ACKs": a segment at RCV.NXT goes on for its ACK,
            // its data and FIN are dropped (Linux's tcp_sequence, then tcp_data_queue's
            // zero-window drop). Without it, two ends that each wait for the other's ACK to
            // free room (an echo whose reader waits for its writes) ignore each other's
            // retransmissions forever.
            s == self.rcv_nxt
        } else {
            let e = s + (len - 1);
            (self.rcv_nxt <= s && s < self.rcv_nxt + wnd)
                || (self.rcv_nxt <= e && e < self.rcv_nxt + wnd)
                || (s < self.rcv_nxt && e >= self.rcv_nxt + wnd)
        }
    }

    fn on_segment_sync(
        &mut self,
        now: Instant,
        seg: &TcpRepr,
        payload: &[u8],
        direct: &mut dyn FnMut(&[u8]) -> usize,
    ) -> Effects {
        let mut fx = Effects::default();
        let has = |f: u8| seg.flags & f != 0;
        let len = Self::seg_len(seg, payload);

        // PAWS (RFC 7323 5.3).
        if self.ts_ok && !has(F::RST) {
            if let Some((tsval, _)) = seg.opts.timestamp {
                if (tsval.wrapping_sub(self.ts_recent) as i32) < 0 && !has(F::SYN) {
                    self.ack_now = true;
                    return fx;
                }
            }
        }

        if self.state == State::TimeWait {
            return self.on_segment_time_wait(now, seg, len);
        }

        // Simultaneous open (RFC 9293 figure 8): the peer's SYN-ACK in SYN-RECEIVED acknowledges
        // our SYN; its SYN is old news and gets an ACK (Linux's tcp_validate_incoming lets
        // exactly this SYN through).
        let simultaneous = self.state == State::SynReceived
            && !self.passive
            && has(F::SYN)
            && has(F::ACK)
            && !has(F::RST)
            && seg.seq == self.irs
            && seg.ack == self.snd_nxt;
        if self.state == State::SynReceived
            && seg.flags & (F::SYN | F::ACK | F::RST) == F::SYN
            && seg.seq == self.irs
        {
            // The peer resent its SYN: our SYN-ACK was lost, send it again (Linux's
            // tcp_check_req). The window check below would only ACK it.
            self.syn_sent_at = None;
            return fx;
        }
        if simultaneous {
            self.ack_now = true;
        } else if !self.acceptable(seg, len) {
            if !has(F::RST) {
                self.ack_now = true;
                // Old data again: D-SACK it (Linux's tcp_send_dupack).
                if !payload.is_empty() && seg.seq < self.rcv_nxt {
                    let end = seg.seq + payload.len() as u32;
                    self.set_dsack(seg.seq, end.min(self.rcv_nxt));
                }
            }
            return fx;
        }

        if has(F::RST) {
            // RFC 5961 3.2: exact match resets, anything else in the window gets a challenge.
            if seg.seq == self.rcv_nxt {
                self.err = match self.state {
                    State::SynReceived if self.passive => errno::ECONNREFUSED,
                    State::CloseWait => errno::EPIPE,
                    State::Closing | State::LastAck => 0,
                    _ => errno::ECONNRESET,
                };
                self.enter_closed();
                self.rd_closed = true;
                fx.notify = true;
                fx.closed = true;
            } else {
                self.ack_now = true;
            }
            return fx;
        }

        if has(F::SYN) && !simultaneous {
            if self.state == State::SynReceived && seg.seq == self.irs {
                // Our SYN-ACK was lost: send it again.
                self.syn_sent_at = None;
                return fx;
            }
            // RFC 5961 4.2: challenge ACK.
            self.ack_now = true;
            return fx;
        }

        if !has(F::ACK) {
            return fx;
        }

        // Timestamps: remember the peer's clock for PAWS and echo (RFC 7323 4.3).
        if let Some((tsval, _)) = seg.opts.timestamp {
            if self.ts_ok
                && seg.seq <= self.rcv_nxt
                && (tsval.wrapping_sub(self.ts_recent) as i32) >= 0
            {
                self.ts_recent = tsval;
            }
        }
        self.last_rcv = now;
        self.keep_probes = 0;

        if self.state == State::SynReceived {
            if self.snd_una < seg.ack && seg.ack <= self.snd_nxt {
                if let Some(t) = self.syn_sent_at.filter(|_| self.retries == 0) {
                    self.rtt.on_sample(now - t, now);
                }
                self.state = State::Established;
                self.size_sndbuf();
                self.snd_una = seg.ack;
                self.snd_sml = seg.ack;
                self.snd_wnd = u32::from(seg.window) << self.snd_wscale;
                self.max_snd_wnd = self.max_snd_wnd.max(self.snd_wnd);
                self.snd_wl1 = seg.seq;
                self.snd_wl2 = seg.ack;
                self.retries = 0;
                self.backoff = 0;
                self.rtx_at = None;
                self.rearm_keepalive(now);
                fx.established = true;
                fx.notify = true;
                if self.fin_queued {
                    self.state = State::FinWait1;
                }
            } else {
                fx.reset = Some((seg.ack, Seq(0), F::RST));
                return fx;
            }
        }

        if seg.ack > self.snd_nxt {
            // An ACK of unsent data: Linux's tcp_ack discards the whole segment, data
            // included, and sends nothing (tcp_rcv_established "goto discard").
            return fx;
        }
        // Data or a FIN at a zero window was let through for its ACK only (`acceptable`).
        let zero_window = len > 0 && self.check_window() == 0;
        self.on_ack(now, seg, payload.len(), &mut fx);
        if self.state == State::Closed {
            return fx;
        }
        if zero_window {
            self.ack_now = true;
            return fx;
        }
        self.check_urgent(seg, payload, &mut fx);
        self.accept_data(now, seg, payload, &mut fx, direct);
        fx
    }

    fn on_segment_time_wait(&mut self, now: Instant, seg: &TcpRepr, len: u32) -> Effects {
        let fx = Effects::default();
        let has = |f: u8| seg.flags & f != 0;
        if has(F::RST) {
            // RFC 1337: ignore RSTs in TIME-WAIT (Linux's default tcp_rfc1337=0 kills it; we
            // follow Linux).
            if seg.seq == self.rcv_nxt {
                let mut fx = fx;
                self.state = State::Closed;
                fx.closed = true;
                return fx;
            }
            return fx;
        }
        if has(F::FIN) || len > 0 {
            // A retransmitted FIN: ACK it and restart the 2MSL wait.
            self.ack_now = true;
            self.end_at = Some(now + TIME_WAIT);
        }
        fx
    }

    /// RFC 9293 3.10.7.4 fifth check, with SACK/RACK/PRR loss recovery.
    fn on_ack(&mut self, now: Instant, seg: &TcpRepr, payload_len: usize, fx: &mut Effects) {
        let ack = seg.ack;
        if ack > self.snd_nxt {
            // Acknowledges something not yet sent.
            self.ack_now = true;
            return;
        }
        let max_back = self.max_snd_wnd.max(65535);
        if ack < self.snd_una - max_back {
            // RFC 5961 5.2: too old.
            self.ack_now = true;
            return;
        }
        let wnd = u32::from(seg.window) << self.snd_wscale;
        let prior_una = self.snd_una;
        let prior_wnd = self.snd_wnd;

        // SACK blocks (only meaningful once negotiated).
        let sacks: &[(Seq, Seq)] = if self.sack_ok {
            &seg.opts.sack[..usize::from(seg.opts.sack_len.min(4))]
        } else {
            &[]
        };
        let data_ack = if self.fin_seq.is_some_and(|f| ack > f) {
            ack - 1
        } else {
            ack
        };
        let prior_in_flight = self.sb.pipe();
        let mut out = crate::scoreboard::AckOutcome::default();
        if !self.sb.is_empty() {
            if let Some(m) = self.rtt.min_rtt() {
                self.sb.set_min_rtt(m);
            }
            out = self.sb.on_ack(data_ack, sacks, now);
        }
        if out.dsack {
            self.stats.dsacks += 1;
            self.dsack_undo();
        }
        if let Some(r) = out.rtt {
            self.rtt.on_sample(r, now);
        }

        if ack > prior_una {
            let acked = prior_una.dist(ack);
            let data = prior_una.dist(data_ack) as usize;
            self.sendbuf.consume(data);
            self.snd_una = ack;
            self.urgent_acked();
            self.stats.bytes_acked += acked as u64;
            self.retries = 0;
            self.backoff = 0;
            fx.notify = true;
            if !self.cfg.sndbuf_locked {
                let want = self.sndbuf_want();
                if want > self.sendbuf.capacity() {
                    self.sendbuf.set_capacity(want);
                }
            }
        }

        // Window update (RFC 9293 3.10.7.4, SND.WL1/WL2).
        if self.snd_wl1 < seg.seq || (self.snd_wl1 == seg.seq && self.snd_wl2 <= ack) {
            self.snd_wnd = wnd;
            self.max_snd_wnd = self.max_snd_wnd.max(wnd);
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = ack;
            if wnd > prior_wnd {
                fx.notify = true;
                let probing = matches!(self.rtx_at, Some((_, RtxKind::Persist)));
                if prior_wnd == 0 || probing {
                    self.backoff = 0;
                    if probing {
                        self.rtx_at = None;
                    }
                }
            }
        }

        let delivered = out.acked + out.sacked;
        self.delivered_now = delivered;

        // Duplicate ACK (RFC 5681 2) for the NewReno path.
        let dup = ack == prior_una
            && payload_len == 0
            && seg.flags & (F::SYN | F::FIN) == 0
            && wnd == prior_wnd
            && !self.sb.is_empty();
        if ack > prior_una {
            self.dupacks = 0;
        } else if dup {
            self.dupacks += 1;
        }

        // Loss detection.
        let mut newly_lost = 0;
        if self.sack_ok {
            let srtt = self.rtt.srtt().unwrap_or(Duration::from_millis(1));
            let r = self.sb.rack_detect_loss(now, srtt);
            newly_lost = r.newly_lost;
            if r.newly_lost > 0 {
                self.enter_recovery(now);
            }
            if let Some(t) = r.timeout {
                self.rtx_at = Some((t, RtxKind::Reorder));
            } else if matches!(self.rtx_at, Some((_, RtxKind::Reorder))) {
                self.rtx_at = None;
            }
        } else if self.dupacks == 3 && matches!(self.phase, Phase::Open) {
            // NewReno fast retransmit (RFC 6582): the first unacknowledged segment.
            self.enter_recovery(now);
            self.retransmit_head();
        }

        // Phase bookkeeping.
        let rate_based = self.cc.peek().rate_based();
        match &mut self.phase {
            Phase::Recovery { point, prr } => {
                prr.on_ack(delivered);
                if ack >= *point {
                    self.phase = Phase::Open;
                    self.sb.set_recovery(false);
                    self.cc.get().on_recovery_end(now);
                } else if !self.sack_ok && ack > prior_una {
                    // NewReno partial ACK: the next hole goes at once.
                    self.retransmit_head();
                }
            }
            Phase::Loss { point } => {
                if ack >= *point {
                    self.phase = Phase::Open;
                    self.sb.set_recovery(false);
                } else if delivered > 0 && !rate_based {
                    let lim = !self.cwnd_limited;
                    self.cc
                        .get()
                        .on_ack(now, delivered, out.rtt, self.rtt.min_rtt(), lim);
                }
            }
            Phase::Open => {
                if delivered > 0 && !rate_based {
                    let lim = !self.cwnd_limited;
                    self.cc
                        .get()
                        .on_ack(now, delivered, out.rtt, self.rtt.min_rtt(), lim);
                }
            }
        }

        // Delivery rate, and the rate-based algorithm's turn (Linux's tcp_rate_gen and
        // cong_control, after the recovery state was updated).
        let rs = self.rate.on_ack(
            now,
            out.delivered,
            newly_lost,
            out.tx,
            out.rtt,
            self.rtt.min_rtt(),
            prior_in_flight,
        );
        if rate_based {
            self.rate_control(now, &rs, prior_in_flight, out.sacked);
        }
        if let Some(size) = self.sendbuf.lent_size().filter(|_| !self.loan_outgrown) {
            // Bytes the path itself holds at the measured rate (not counting queues, which an
            // RTT under load would: a busy host fills any stream without gaining throughput).
            let bdp = self.rtt.min_rtt().map_or(0, |m| {
                u128::from(rs.delivery_rate) * m.as_micros() / 1_000_000
            });
            // Or a hole pins SND.UNA while the stream is full and all of it has gone out:
            // nothing new can be sent until the hole is filled, so a lost retransmission has
            // no later segment to reveal it (RACK) and waits for the RTO; at veth speed that is
            // a thousand round trips. Either way the engine's own buffer, which grows with the
            // window, should take over.
            let pinned = (self.in_recovery() || self.sb.sacked_bytes() > 0)
                && self.sendbuf.len() >= size
                && self.unsent() == 0;
            if bdp * 2 >= size as u128 || pinned {
                self.loan_outgrown = true;
            }
        }

        // Our FIN acknowledged?
        let fin_acked = self.fin_seq.is_some_and(|f| ack > f);
        if fin_acked {
            match self.state {
                State::FinWait1 => {
                    self.state = State::FinWait2;
                    fx.notify = true;
                    if self.orphan {
                        self.end_at = Some(now + FIN_TIMEOUT);
                    }
                }
                State::Closing => {
                    self.enter_time_wait(now);
                    fx.notify = true;
                }
                State::LastAck => {
                    self.enter_closed();
                    fx.closed = true;
                    fx.notify = true;
                    return;
                }
                _ => {}
            }
        }
        if ack > prior_una || out.sacked > 0 {
            self.rearm_rtx(now, ack > prior_una);
        }
    }

    /// Hands one ACK's rate sample to a rate-based algorithm (BBR).
    fn rate_control(&mut self, now: Instant, rs: &RateSample, prior_in_flight: u32, sacked: u32) {
        let ca_state = match self.phase {
            Phase::Open => CaState::Open,
            Phase::Recovery { .. } => CaState::Recovery,
            Phase::Loss { .. } => CaState::Loss,
        };
        let in_flight = self.sb.pipe();
        let st = AckState {
            ca_state,
            in_flight,
            delivered: self.rate.delivered(),
            delivered_time: self.rate.delivered_time(),
            srtt: self.rtt.srtt(),
            next_send: self.pacing_next,
            // A lone segment of at most one MSS, cumulatively acknowledged: the receiver may
            // have held the ACK for its delayed-ACK timer.
            ack_maybe_delayed: sacked == 0
                && rs.acked_sacked > 0
                && rs.acked_sacked <= self.mss
                && prior_in_flight <= self.mss,
        };
        if self.cc.get().on_rate_sample(now, rs, &st) {
            self.rate.mark_app_limited(in_flight);
        }
    }

    /// Pacing: when the next data segment may leave, if later than `now`.
    pub(crate) fn pacing_wait(&self, now: Instant) -> Option<Instant> {
        self.cc.peek().pacing_rate()?;
        self.pacing_next.filter(|&t| t > now)
    }

    /// `len` payload bytes (`segs` wire segments) left at `now`: the next may leave len / rate
    /// later. The clock may run ahead of the schedule by at most [`PACING_SLACK`] (the timer
    /// granularity), so a late wake-up catches up that much and no more.
    pub(crate) fn paced_send(&mut self, now: Instant, len: u32, segs: u64) {
        self.data_segs_out += segs;
        let Some(rate) = self.cc.peek().pacing_rate() else {
            return;
        };
        if rate == 0 || self.data_segs_out < PACING_FREE_SEGS {
            return;
        }
        let base = match self.pacing_next {
            Some(t) => t.max(now - PACING_SLACK),
            None => now,
        };
        let us = u64::from(len) * 1_000_000 / rate;
        self.pacing_next = Some(base + Duration::from_micros(us));
    }

    /// Largest payload per TSO burst: about 1 ms of data at the pacing rate (Linux's
    /// bbr_tso_segs, which takes the place of tcp_tso_autosize for BBR), at least the
    /// algorithm's minimum of segments, at most `tso_max`; `tso_max` when not pacing.
    pub(crate) fn tso_size(&self, tso_max: u32) -> u32 {
        let Some(rate) = self.cc.peek().pacing_rate() else {
            return tso_max;
        };
        let min = self.cc.peek().min_tso_segs().saturating_mul(self.mss);
        let bytes = u32::try_from(rate >> 10).unwrap_or(u32::MAX);
        bytes.max(min).min(tso_max)
    }

    /// A data segment leaves with nothing in flight (Linux's CA_EVENT_TX_START).
    pub(crate) fn tx_start_check(&mut self, now: Instant) {
        if self.sb.pipe() == 0 {
            let lim = self.rate.is_app_limited();
            self.cc.get().on_tx_start(now, lim);
        }
    }

    /// NewReno: resend the segment at snd_una.
    fn retransmit_head(&mut self) {
        let end = self.snd_una + self.mss.min(self.snd_una.dist(self.snd_nxt));
        if end > self.snd_una {
            self.rtx_force = Some((self.snd_una, end));
        }
    }

    fn set_dsack(&mut self, s: Seq, e: Seq) {
        if self.sack_ok && s < e {
            self.dsack = Some((s, e));
        }
    }

    /// RFC 9293 3.10.7.4 seventh and eighth checks: segment text and FIN.
    fn accept_data(
        &mut self,
        now: Instant,
        seg: &TcpRepr,
        payload: &[u8],
        fx: &mut Effects,
        direct: &mut dyn FnMut(&[u8]) -> usize,
    ) {
        let may_recv = matches!(
            self.state,
            State::Established | State::FinWait1 | State::FinWait2
        );
        let has_fin = seg.flags & F::FIN != 0;
        if !payload.is_empty() && may_recv {
            self.rcv_mss = self
                .rcv_mss
                .max((payload.len() as u32).min(self.mss.max(536)));
            // Trim what we already have (and D-SACK it, RFC 2883).
            let (data, seq) = if seg.seq < self.rcv_nxt {
                let skip = seg.seq.dist(self.rcv_nxt) as usize;
                let end = seg.seq + payload.len() as u32;
                self.set_dsack(seg.seq, end.min(self.rcv_nxt));
                if skip >= payload.len() {
                    (&payload[..0], self.rcv_nxt)
                } else {
                    (&payload[skip..], self.rcv_nxt)
                }
            } else {
                (payload, seg.seq)
            };
            if !data.is_empty() {
                if self.shut_rd || self.orphan {
                    // Linux: data for a socket whose reader is gone resets the connection.
                    if self.orphan {
                        self.abort();
                        fx.closed = true;
                        fx.notify = true;
                        return;
                    }
                }
                let off = self.rcv_nxt.dist(seq) as usize;
                let had_ooo = self.recvbuf.has_ooo();
                // In order with nothing buffered before it: offered to the application's buffer
                // directly (one copy from the frame); the rest is buffered here.
                let mut passed = 0;
                if off == 0
                    && !had_ooo
                    && self.recvbuf.readable() == 0
                    && !self.shut_rd
                    && !self.urgent_within(seq, data.len())
                {
                    passed = direct(data).min(data.len());
                    if passed > 0 {
                        self.recvbuf.pass_through(passed);
                        self.rcv_nxt += passed as u32;
                    }
                }
                let adv = passed + self.recvbuf.insert(off, &data[passed..]);
                self.rcv_nxt += (adv - passed) as u32;
                self.stats.bytes_received += adv as u64;
                if adv > 0 {
                    fx.notify = true;
                }
                self.last_data_rcv = now;
                if data.len() < self.rcv_mss as usize {
                    self.small_segs = self.small_segs.saturating_add(1);
                }
                if off > 0 || had_ooo || self.recvbuf.has_ooo() {
                    // Out of order, or filling a hole: ACK at once with SACK (RFC 5681 4.2),
                    // and keep ACKing every segment for a while (Linux's quick-ack mode on
                    // out-of-order data): the sender is recovering and paces on our ACKs.
                    self.ack_now = true;
                    self.sack_ack = true;
                    self.quickacks = QUICKACKS;
                    self.pingpong = false;
                } else {
                    self.ack_bytes += adv as u32;
                    if self.quickacks > 0 && !self.pingpong {
                        self.quickacks -= 1;
                        self.ack_now = true;
                    } else if self.ack_bytes >= 2 * self.rcv_mss {
                        self.ack_now = true;
                    } else if self.delack_at.is_none() {
                        self.delack_at = Some(now + DELACK);
                    }
                }
                if passed > 0 {
                    // As if the application had read them now (autotuning, window updates).
                    self.after_read(passed, now);
                }
            } else {
                // A duplicate: tell the sender (DSACK-worthy; a plain ACK here).
                self.ack_now = true;
            }
        }
        if has_fin && may_recv {
            let fin = seg.seq + payload.len() as u32;
            self.fin_rcvd = Some(fin);
        }
        if let Some(fin) = self.fin_rcvd {
            if fin == self.rcv_nxt && !self.recvbuf.has_ooo() {
                self.fin_rcvd = None;
                self.rcv_nxt += 1;
                self.fin_taken = true;
                self.rd_closed = true;
                self.ack_now = true;
                fx.notify = true;
                match self.state {
                    State::Established => self.state = State::CloseWait,
                    State::FinWait1 => {
                        if self.fin_seq.is_some_and(|f| self.snd_una > f) {
                            self.enter_time_wait(now);
                        } else {
                            self.state = State::Closing;
                        }
                    }
                    State::FinWait2 => self.enter_time_wait(now),
                    _ => {}
                }
                self.rearm_keepalive(now);
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Output bookkeeping used by output.rs

    pub(crate) fn phase_allows(&mut self, pipe: u32) -> u32 {
        let cwnd = self.cwnd();
        match &self.phase {
            // A rate-based algorithm sets cwnd in recovery itself (no PRR, as Linux skips
            // tcp_cwnd_reduction for cong_control algorithms).
            Phase::Recovery { prr, .. } if !self.cc.peek().rate_based() => {
                prr.sndcnt(pipe, self.ssthresh(), self.mss, self.delivered_now)
            }
            _ => cwnd.saturating_sub(pipe),
        }
    }

    pub(crate) fn on_sent_bytes(&mut self, bytes: u32, cwnd_full: bool) {
        if let Phase::Recovery { prr, .. } = &mut self.phase {
            prr.on_sent(bytes);
        }
        self.cwnd_limited = cwnd_full;
    }

    pub(crate) fn set_cwnd_limited(&mut self, v: bool) {
        self.cwnd_limited = v;
    }

    /// After an idle period the window restarts (RFC 5681 4.1 / RFC 9438 4.8).
    pub(crate) fn idle_restart(&mut self, now: Instant) {
        if self.sb.is_empty() && now - self.last_snd > self.rtt.rto() {
            self.cc.get().on_idle_restart(now);
        }
    }

    /// Called when the delivered-bytes of this ACK have been used for sending.
    pub(crate) fn ack_sent(&mut self) {
        self.ack_now = false;
        self.ack_bytes = 0;
        self.small_segs = 0;
        self.delack_at = None;
        self.win_update = false;
    }
}
