//! The sender's record of every unacknowledged segment: the retransmission-queue bookkeeping,
//! the SACK scoreboard and RACK loss detection. No payload is kept here (the bytes are in
//! [`SendBuf`](crate::sendbuf::SendBuf)); only one [`Record`] per transmitted range, in
//! sequence order, split and merged at the edges of ACKs, SACK blocks and retransmissions.
//!
//! What is implemented, and why:
//! - SACK scoreboard (RFC 2018 sections 3 and 8, RFC 6675 sections 2-4): SACKed ranges are
//!   marked so they are never retransmitted, and `pipe` (RFC 6675 section 4, `SetPipe`) is kept
//!   as a running total so congestion control can ask for it on every ACK at no cost.
//!   "Lost" here is the RACK verdict (RFC 8985 replaces RFC 6675's `IsLost` duplicate count).
//!   A byte counts once in `pipe` when it is not SACKed and not lost (RFC 6675 step (a)), and
//!   once more when it was retransmitted (step (b)); when the retransmission answered a loss
//!   mark, the original copy is known gone and only the retransmission counts.
//! - SACK blocks come from the network and are untrusted: a block must lie inside
//!   `[SND.UNA, SND.NXT]` and be non-empty, at most four are looked at (the most a TCP option
//!   holds), and a cumulative ACK beyond SND.NXT is ignored (RFC 9293 section 3.10.7.4).
//! - DSACK (RFC 2883 section 4): the first block is a duplicate report when it lies below the
//!   cumulative ACK or inside the second block. It is not a SACK; it proves a spurious
//!   retransmission, i.e. reordering, which drives RACK's reordering window.
//! - RACK (RFC 8985 section 6.2): step 2 (`RACK.xmit_ts`, `RACK.end_seq`, `RACK.rtt` from the
//!   most recently sent delivered segment, skipping retransmissions whose delivery may belong to
//!   the original, RFC 8985 section 6.2 step 2 / Karn), step 3 (reordering seen when a
//!   never-retransmitted segment is delivered below `RACK.fack`), step 4 (reordering window:
//!   `min_rtt / 4 * reo_wnd_mult`, capped at SRTT, zero before any reordering was seen once
//!   three segments are SACKed or during recovery; DSACK rounds grow the multiplier, 16
//!   DSACK-free recoveries reset it) and step 5 (a segment sent before the RACK segment is lost
//!   once `xmit_ts + RACK.rtt + reo_wnd` has passed; otherwise the reordering timer is armed).
//!   A DSACK also sets "reordering seen": it shows a retransmission was spurious, which is the
//!   evidence step 4 waits for. Step 2's timestamp test (TSecr before the retransmission) is
//!   left to the caller, which owns the timestamp option; the min_rtt test is done here.
//! - On RTO every non-SACKed record is marked lost (RFC 6675 section 5.1, RFC 8985 section 6.3);
//!   SACK information is kept (RFC 6675 section 5.1).
//!
//! Cost: an ACK touches only the records it acknowledges or SACKs (binary search to the block
//! edges, VecDeque front removal for the cumulative part); SACKed, SACKed-and-adjacent,
//! lost-and-adjacent and same-instant sends are merged, so long SACK runs stay one record.
//! RACK's loss scan stops at the first never-retransmitted record sent after the RACK segment:
//! original transmissions go out in sequence order and every later record, original or
//! retransmitted, was sent after it. (It still walks the records before that point; Linux keeps a
//! time-sorted list to avoid even that, a possible later refinement.) [`Scoreboard::next_lost`]
//! starts from a hint below which nothing is lost, so retransmitting a long loss run is not
//! quadratic.

use crate::rate::{DeliveredTx, TxSnapshot};
use crate::{Instant, Seq};
use core::time::Duration;
use std::collections::VecDeque;

/// RFC 6675 DupThresh, in segments (RFC 8985 section 6.2 step 4).
const DUPTHRESH: u64 = 3;
/// DSACK-free recoveries before the reordering window multiplier resets (RFC 8985 6.2 step 4).
const REO_WND_PERSIST: u32 = 16;
/// Upper bound of the reordering window multiplier (the window is capped at SRTT anyway).
const MAX_REO_WND_MULT: u32 = 64;
/// Most SACK blocks one TCP option can carry.
const MAX_SACK_BLOCKS: usize = 4;
/// Largest span of outstanding sequence space accepted (RFC 7323 window limit).
const MAX_WINDOW: u32 = 1 << 30;
/// RFC 9293 default MSS, used until [`Scoreboard::set_mss`].
const DEFAULT_MSS: u32 = 536;

/// One transmitted range `[start, end)` and its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub start: Seq,
    pub end: Seq,
    /// When the range was last (re)transmitted.
    pub xmit_time: Instant,
    /// Sent more than once: an ACK for it is ambiguous (Karn).
    pub retransmitted: bool,
    pub sacked: bool,
    /// Deemed lost and not retransmitted since: waiting for retransmission.
    pub lost: bool,
    /// The latest retransmission followed a loss mark, so the original copy is gone and only
    /// the retransmission is in flight.
    pub rexmit_after_loss: bool,
    /// Delivery-rate snapshot taken when the range was last sent ([`crate::rate`]); `None` for
    /// ranges sent through [`Scoreboard::on_send`]/[`Scoreboard::on_retransmit`].
    pub tx: Option<TxSnapshot>,
}

impl Record {
    fn len(&self) -> u32 {
        self.start.dist(self.end)
    }

    /// Contributions to (sacked, lost, pipe).
    fn weights(&self) -> (u64, u64, u64) {
        let n = u64::from(self.len());
        if self.sacked {
            (n, 0, 0)
        } else if self.lost {
            (0, n, 0)
        } else if self.retransmitted && !self.rexmit_after_loss {
            (0, 0, 2 * n)
        } else {
            (0, 0, n)
        }
    }

    fn plain(start: Seq, end: Seq, now: Instant) -> Record {
        Record {
            start,
            end,
            xmit_time: now,
            retransmitted: false,
            sacked: false,
            lost: false,
            rexmit_after_loss: false,
            tx: None,
        }
    }
}

/// The snapshot a merged lost run keeps: the later one (a conservative, smaller delivered
/// count if the run turns out delivered after all).
fn later_tx(a: Option<TxSnapshot>, b: Option<TxSnapshot>) -> Option<TxSnapshot> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.delivered > x.delivered { y } else { x }),
        (x, y) => x.or(y),
    }
}

/// Two neighbours can become one record without changing any answer the scoreboard gives.
fn mergeable(a: &Record, b: &Record) -> bool {
    if a.end != b.start || a.sacked != b.sacked {
        return false;
    }
    if a.sacked {
        return true;
    }
    if a.lost != b.lost || a.retransmitted != b.retransmitted {
        return false;
    }
    a.lost
        || (a.rexmit_after_loss == b.rexmit_after_loss
            && a.xmit_time == b.xmit_time
            && a.tx == b.tx)
}

/// RFC 8985 `RACK_sent_after(t1, seq1, t2, seq2)`.
fn sent_after(t1: Instant, seq1: Seq, t2: Instant, seq2: Seq) -> bool {
    t1 > t2 || (t1 == t2 && seq1 > seq2)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Totals {
    sacked: u64,
    lost: u64,
    pipe: u64,
}

impl Totals {
    fn add(&mut self, r: &Record) {
        let (s, l, p) = r.weights();
        self.sacked += s;
        self.lost += l;
        self.pipe += p;
    }

    fn sub(&mut self, r: &Record) {
        let (s, l, p) = r.weights();
        self.sacked = self.sacked.saturating_sub(s);
        self.lost = self.lost.saturating_sub(l);
        self.pipe = self.pipe.saturating_sub(p);
    }
}

/// What an ACK changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AckOutcome {
    /// Bytes newly acknowledged cumulatively (the SND.UNA advance).
    pub acked: u32,
    /// Bytes newly SACKed (not SACKed before, above the ACK).
    pub sacked: u32,
    /// RTT sample from the most recently sent newly delivered segment that was never
    /// retransmitted (Karn); `None` otherwise.
    pub rtt: Option<Duration>,
    /// The first SACK block is a DSACK (RFC 2883).
    pub dsack: bool,
    /// RACK state (`RACK.rtt`, `xmit_ts`, `end_seq`) was updated: run
    /// [`Scoreboard::rack_detect_loss`].
    pub rack_updated: bool,
    /// Bytes newly delivered, cumulatively or by SACK, each byte once (unlike `acked +
    /// sacked`, which counts again the SACKed bytes a cumulative ACK covers).
    pub delivered: u32,
    /// The most recently sent newly delivered segment that carries a rate snapshot
    /// ([`crate::rate::RateState::on_ack`] makes the sample from it).
    pub tx: Option<DeliveredTx>,
}

/// What a RACK loss detection pass found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RackOutcome {
    /// Bytes newly marked lost.
    pub newly_lost: u32,
    /// When to run detection again (the reordering timer), if some segment may still turn out
    /// lost.
    pub timeout: Option<Instant>,
}

/// Facts about the segments one ACK delivered, gathered while walking them.
#[derive(Default)]
struct Delivered {
    /// Latest `xmit_time` of a never-retransmitted segment (RTT sample).
    rtt_xmit: Option<Instant>,
    /// Latest (xmit_time, end) of a segment RACK may use.
    rack: Option<(Instant, Seq)>,
    /// Highest end delivered.
    max_end: Option<Seq>,
    /// A never-retransmitted segment was delivered below the previous RACK.fack.
    reordered: bool,
    /// Bytes newly delivered (each once).
    bytes: u32,
    /// The most recently sent delivered segment with a rate snapshot.
    tx: Option<DeliveredTx>,
}

impl Delivered {
    fn note(&mut self, r: &Record, now: Instant, min_rtt: Option<Duration>, fack: Option<Seq>) {
        self.bytes = self.bytes.saturating_add(r.len());
        if let Some(tx) = r.tx {
            let d = DeliveredTx {
                tx,
                sent: r.xmit_time,
                retransmitted: r.retransmitted,
            };
            if self.tx.map_or(true, |o| d.newer_than(&o)) {
                self.tx = Some(d);
            }
        }
        if !r.retransmitted {
            if self.rtt_xmit.map_or(true, |t| r.xmit_time > t) {
                self.rtt_xmit = Some(r.xmit_time);
            }
            if fack.is_some_and(|f| r.end < f) {
                self.reordered = true;
            }
        }
        // RFC 8985 6.2 step 2: a retransmitted segment delivered sooner than min_rtt after its
        // retransmission was most likely delivered by the original: ambiguous, skip it.
        let eligible =
            !r.retransmitted || min_rtt.is_some_and(|m| now.saturating_since(r.xmit_time) >= m);
        if eligible
            && self
                .rack
                .map_or(true, |(t, e)| sent_after(r.xmit_time, r.end, t, e))
        {
            self.rack = Some((r.xmit_time, r.end));
        }
        if self.max_end.map_or(true, |m| r.end > m) {
            self.max_end = Some(r.end);
        }
    }
}

/// Every unacknowledged transmitted range, with SACK and RACK state.
#[derive(Clone, Debug)]
pub struct Scoreboard {
    recs: VecDeque<Record>,
    /// SND.UNA and SND.NXT as last seen (equal when empty).
    una: Seq,
    nxt: Seq,
    /// Something was ever sent (before that, `una`/`nxt` mean nothing and ACKs are ignored).
    started: bool,
    tot: Totals,
    highest_sacked: Option<Seq>,
    /// No lost record starts below this (inside `[una, nxt]`): where [`next_lost`] starts.
    ///
    /// [`next_lost`]: Scoreboard::next_lost
    lost_hint: Seq,
    mss: u32,
    min_rtt: Option<Duration>,
    in_recovery: bool,
    // RACK (RFC 8985 section 6.1).
    rack_xmit_ts: Option<Instant>,
    rack_end_seq: Seq,
    rack_rtt: Duration,
    fack: Option<Seq>,
    reordering_seen: bool,
    reo_wnd_mult: u32,
    reo_wnd_persist: u32,
    dsack_round: Option<Seq>,
}

impl Default for Scoreboard {
    fn default() -> Self {
        Scoreboard::new()
    }
}

impl Scoreboard {
    /// An empty scoreboard. Allocates nothing.
    pub fn new() -> Scoreboard {
        Scoreboard {
            recs: VecDeque::new(),
            una: Seq(0),
            nxt: Seq(0),
            started: false,
            tot: Totals::default(),
            highest_sacked: None,
            lost_hint: Seq(0),
            mss: DEFAULT_MSS,
            min_rtt: None,
            in_recovery: false,
            rack_xmit_ts: None,
            rack_end_seq: Seq(0),
            rack_rtt: Duration::ZERO,
            fack: None,
            reordering_seen: false,
            reo_wnd_mult: 1,
            reo_wnd_persist: REO_WND_PERSIST,
            dsack_round: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    /// First unacknowledged sequence number, `None` when nothing is outstanding.
    pub fn una(&self) -> Option<Seq> {
        self.recs.front().map(|r| r.start)
    }

    /// End of the last transmitted range, `None` when nothing is outstanding.
    pub fn nxt(&self) -> Option<Seq> {
        self.recs.back().map(|r| r.end)
    }

    pub fn len_records(&self) -> usize {
        self.recs.len()
    }

    /// The records, in sequence order.
    pub fn records(&self) -> impl Iterator<Item = &Record> + '_ {
        self.recs.iter()
    }

    /// Releases the record queue's memory when empty (idle connections).
    pub fn shrink(&mut self) {
        if self.recs.is_empty() {
            self.recs = VecDeque::new();
        }
    }

    /// Bytes on which segment counts are based (RFC 8985 step 4's "SACKed segments").
    pub fn set_mss(&mut self, mss: u32) {
        self.mss = mss.max(1);
    }

    /// The connection's minimum RTT (RFC 8985 `RACK.min_RTT`), set before [`on_ack`](Self::on_ack).
    pub fn set_min_rtt(&mut self, d: Duration) {
        self.min_rtt = Some(d);
    }

    /// Tells RACK whether fast or RTO recovery is under way (RFC 8985 step 4: the reordering
    /// window is zero in recovery until reordering was seen; leaving recovery counts down the
    /// DSACK persistence).
    pub fn set_recovery(&mut self, in_recovery: bool) {
        if self.in_recovery && !in_recovery {
            self.reo_wnd_persist = self.reo_wnd_persist.saturating_sub(1);
            if self.reo_wnd_persist == 0 {
                self.reo_wnd_mult = 1;
            }
        }
        self.in_recovery = in_recovery;
    }

    /// Whether reordering was detected (RFC 8985 `RACK.reordering_seen`).
    pub fn reordering_seen(&self) -> bool {
        self.reordering_seen
    }

    /// RFC 6675 pipe: bytes believed in flight.
    pub fn pipe(&self) -> u32 {
        u32::try_from(self.tot.pipe).unwrap_or(u32::MAX)
    }

    pub fn sacked_bytes(&self) -> u32 {
        u32::try_from(self.tot.sacked).unwrap_or(u32::MAX)
    }

    /// Bytes marked lost and not retransmitted since.
    pub fn lost_bytes(&self) -> u32 {
        u32::try_from(self.tot.lost).unwrap_or(u32::MAX)
    }

    /// End of the highest SACKed range above SND.UNA.
    pub fn highest_sacked(&self) -> Option<Seq> {
        self.highest_sacked
    }

    /// The last record, for a tail loss probe retransmission (RFC 8985 section 7.3): at most its
    /// final MSS ([`set_mss`](Self::set_mss)), since records merge and the probe is one segment.
    pub fn latest_xmit(&self) -> Option<(Seq, Seq)> {
        self.recs
            .back()
            .map(|r| (r.end - r.len().min(self.mss), r.end))
    }

    /// The first range neither SACKed nor acknowledged, at most one MSS: the hole a probe in
    /// recovery fills (its retransmission, lost too, is what stalls the connection).
    pub fn first_hole(&self) -> Option<(Seq, Seq)> {
        self.recs
            .iter()
            .find(|r| !r.sacked)
            .map(|r| (r.start, r.start + r.len().min(self.mss)))
    }

    /// The next range to retransmit: the first record marked lost, at most its first MSS
    /// ([`set_mss`](Self::set_mss)) since lost runs merge. Retransmitting it (see
    /// [`on_retransmit`](Self::on_retransmit)) moves this on to the next range.
    pub fn next_lost(&self) -> Option<(Seq, Seq)> {
        if self.tot.lost == 0 {
            return None;
        }
        let from = self.recs.partition_point(|r| r.end <= self.lost_hint);
        self.recs
            .range(from..)
            .find(|r| r.lost && !r.sacked)
            .map(|r| (r.start, r.start + r.len().min(self.mss)))
    }

    /// Transmission time of the oldest outstanding non-SACKed record (of the first record when
    /// all are SACKed): where the RTO counts from.
    pub fn oldest_xmit_time(&self) -> Option<Instant> {
        let mut oldest: Option<Instant> = None;
        for r in &self.recs {
            if r.sacked {
                continue;
            }
            if oldest.map_or(true, |t| r.xmit_time < t) {
                oldest = Some(r.xmit_time);
            }
            if !r.retransmitted {
                // Later records were all sent after this one (originals in order,
                // retransmissions after their originals).
                break;
            }
        }
        oldest.or_else(|| self.recs.front().map(|r| r.xmit_time))
    }

    /// Offset of `s` from SND.UNA, modulo 2^32.
    fn off(&self, s: Seq) -> u32 {
        s.0.wrapping_sub(self.una.0)
    }

    /// Outstanding sequence space, SND.NXT - SND.UNA.
    fn win(&self) -> u32 {
        self.off(self.nxt)
    }

    /// `s` clamped into `[una, nxt]`, as an offset from SND.UNA. Comparisons go through offsets
    /// because modular order is not transitive for values far outside the window.
    fn clamp_off(&self, s: Seq) -> u32 {
        let d = s - self.una;
        if d <= 0 {
            0
        } else {
            (d as u32).min(self.win())
        }
    }

    /// Index of the first record at or after `s`, splitting the record that straddles `s`.
    /// `s` must lie inside `[una, nxt]`.
    fn split_at(&mut self, s: Seq) -> usize {
        let i = self.recs.partition_point(|r| r.end <= s);
        if let Some(r) = self.recs.get_mut(i) {
            if r.start < s {
                let mut right = *r;
                right.start = s;
                r.end = s;
                self.recs.insert(i + 1, right);
                return i + 1;
            }
        }
        i
    }

    /// Merges mergeable neighbours among records `[lo, hi)`.
    fn compact(&mut self, lo: usize, hi: usize) {
        let hi = hi.min(self.recs.len());
        if hi <= lo + 1 {
            return;
        }
        let mut w = lo;
        for k in lo + 1..hi {
            let b = self.recs[k];
            let a = &mut self.recs[w];
            if mergeable(a, &b) {
                a.end = b.end;
                // A lost run keeps its oldest transmission time (the RTO counts from the oldest
                // outstanding byte); others keep the latest (RTT and RACK use the most recently
                // sent part).
                a.xmit_time = if a.lost {
                    a.xmit_time.min(b.xmit_time)
                } else {
                    a.xmit_time.max(b.xmit_time)
                };
                a.tx = later_tx(a.tx, b.tx);
            } else {
                w += 1;
                self.recs[w] = b;
            }
        }
        self.recs.drain(w + 1..hi);
    }

    /// New data `[start, end)` sent at `now`; `start` must be where the last record ended (any
    /// value when empty). A range reaching below SND.NXT is treated as a retransmission of that
    /// part; a gap above SND.NXT or an absurd length is ignored.
    pub fn on_send(&mut self, start: Seq, end: Seq, now: Instant) {
        self.send_inner(start, end, now, None);
    }

    /// [`on_send`](Self::on_send) with the delivery-rate snapshot taken for this send.
    pub fn send_tx(&mut self, start: Seq, end: Seq, now: Instant, tx: TxSnapshot) {
        self.send_inner(start, end, now, Some(tx));
    }

    fn send_inner(&mut self, start: Seq, end: Seq, now: Instant, tx: Option<TxSnapshot>) {
        let mut start = start;
        if self.recs.is_empty() {
            if end <= start || start.dist(end) > MAX_WINDOW {
                return;
            }
            self.started = true;
            self.una = start;
            self.nxt = start;
            self.lost_hint = start;
            // Stale sequence numbers must not be compared across a wrap.
            self.fack = None;
            self.highest_sacked = None;
            self.dsack_round = None;
        } else if start != self.nxt {
            if start > self.nxt || end <= start {
                return;
            }
            self.retransmit_inner(start, end.min(self.nxt), now, tx);
            if end <= self.nxt {
                return;
            }
            start = self.nxt;
        }
        if end <= start || self.una.dist(end) > MAX_WINDOW {
            return;
        }
        let r = Record {
            tx,
            ..Record::plain(start, end, now)
        };
        self.tot.add(&r);
        match self.recs.back_mut() {
            Some(last) if mergeable(last, &r) => last.end = end,
            _ => self.recs.push_back(r),
        }
        self.nxt = end;
    }

    /// `[start, end)` (clamped to what is outstanding) was sent again at `now`. SACKed parts are
    /// left alone.
    pub fn on_retransmit(&mut self, start: Seq, end: Seq, now: Instant) {
        self.retransmit_inner(start, end, now, None);
    }

    /// [`on_retransmit`](Self::on_retransmit) with the delivery-rate snapshot of this send.
    pub fn retransmit_tx(&mut self, start: Seq, end: Seq, now: Instant, tx: TxSnapshot) {
        self.retransmit_inner(start, end, now, Some(tx));
    }

    fn retransmit_inner(&mut self, start: Seq, end: Seq, now: Instant, tx: Option<TxSnapshot>) {
        if self.recs.is_empty() {
            return;
        }
        let so = self.clamp_off(start);
        let eo = self.clamp_off(end);
        if so >= eo {
            return;
        }
        let i = self.split_at(self.una + so);
        let j = self.split_at(self.una + eo);
        // Every record in [so, eo) stops being lost; if the hint was inside, it moves past.
        let ho = self.off(self.lost_hint);
        if ho >= so && ho < eo {
            self.lost_hint = self.una + eo;
        }
        for k in i..j {
            let r = &mut self.recs[k];
            if r.sacked {
                continue;
            }
            self.tot.sub(r);
            r.rexmit_after_loss = r.lost;
            r.lost = false;
            r.retransmitted = true;
            r.xmit_time = now;
            r.tx = tx;
            self.tot.add(r);
        }
        self.compact(i.saturating_sub(1), j + 1);
    }

    /// Processes an ACK: cumulative `ack` and the SACK blocks as received (untrusted).
    pub fn on_ack(&mut self, ack: Seq, sack: &[(Seq, Seq)], now: Instant) -> AckOutcome {
        let mut out = AckOutcome::default();
        if !self.started || ack - self.nxt > 0 {
            return out;
        }
        // RFC 2883 section 4: a first block below the ACK, or inside the second block.
        if let Some(&(s0, e0)) = sack.first() {
            if s0 < e0 && s0.dist(e0) <= MAX_WINDOW {
                let below = s0 < ack && s0.dist(ack) <= MAX_WINDOW;
                let inside = sack
                    .get(1)
                    .is_some_and(|&(s1, e1)| s1 < e1 && s1 <= s0 && e0 <= e1);
                out.dsack = below || inside;
            }
        }
        let mut dl = Delivered::default();
        let fack = self.fack;
        let min_rtt = self.min_rtt;

        // Cumulative part.
        let ack_off = self.off(ack);
        if !self.recs.is_empty() && ack_off > 0 && ack_off <= self.win() {
            let j = self.split_at(ack);
            for r in self.recs.drain(..j) {
                self.tot.sub(&r);
                if !r.sacked {
                    dl.note(&r, now, min_rtt, fack);
                }
            }
            out.acked = self.una.dist(ack);
            self.una = ack;
            if self.off(self.lost_hint) > self.win() {
                self.lost_hint = ack;
            }
            if self.highest_sacked.is_some_and(|h| h <= ack) {
                self.highest_sacked = None;
            }
        }

        // Selective part.
        let skip = usize::from(out.dsack);
        for &(s, e) in sack.iter().skip(skip).take(MAX_SACK_BLOCKS) {
            if self.recs.is_empty() {
                break;
            }
            let (so, eo) = (self.off(s), self.off(e));
            if so >= eo || eo > self.win() {
                continue;
            }
            let i = self.split_at(s);
            let j = self.split_at(e);
            for k in i..j {
                let r = &mut self.recs[k];
                if r.sacked {
                    continue;
                }
                self.tot.sub(r);
                r.sacked = true;
                r.lost = false;
                self.tot.add(r);
                out.sacked = out.sacked.saturating_add(r.len());
                dl.note(r, now, min_rtt, fack);
            }
            if self.highest_sacked.map_or(true, |h| e > h) {
                self.highest_sacked = Some(e);
            }
            self.compact(i.saturating_sub(1), j + 1);
        }

        // RTT sample (Karn) and RACK steps 2-3.
        out.rtt = dl.rtt_xmit.map(|t| now.saturating_since(t));
        out.delivered = dl.bytes;
        out.tx = dl.tx;
        if let Some((t, e)) = dl.rack {
            self.rack_rtt = now.saturating_since(t);
            let newer = match self.rack_xmit_ts {
                None => true,
                Some(rt) => sent_after(t, e, rt, self.rack_end_seq),
            };
            if newer {
                self.rack_xmit_ts = Some(t);
                self.rack_end_seq = e;
            }
            out.rack_updated = true;
        }
        if dl.reordered {
            self.reordering_seen = true;
        }
        if let Some(m) = dl.max_end {
            if self.fack.map_or(true, |f| m > f) {
                self.fack = Some(m);
            }
        }
        // Keep fack inside the window so that it never compares across a wrap; nothing newly
        // delivered later can end at or below SND.UNA.
        if self.fack.is_some_and(|f| f < self.una) {
            self.fack = Some(self.una);
        }

        // RACK step 4, DSACK part: one multiplier increase per round trip with DSACKs.
        if self.dsack_round.is_some_and(|r| self.una >= r) {
            self.dsack_round = None;
        }
        if out.dsack {
            self.reordering_seen = true;
            if self.dsack_round.is_none() {
                self.dsack_round = Some(self.nxt);
                self.reo_wnd_mult = (self.reo_wnd_mult + 1).min(MAX_REO_WND_MULT);
                self.reo_wnd_persist = REO_WND_PERSIST;
            }
        }
        out
    }

    /// RFC 8985 step 4: the reordering window.
    pub fn reo_wnd(&self, srtt: Duration) -> Duration {
        if !self.reordering_seen {
            if self.in_recovery {
                return Duration::ZERO;
            }
            if self.tot.sacked.div_ceil(u64::from(self.mss)) >= DUPTHRESH {
                return Duration::ZERO;
            }
        }
        let quarter = self.min_rtt.unwrap_or(srtt) / 4;
        quarter
            .checked_mul(self.reo_wnd_mult)
            .unwrap_or(srtt)
            .min(srtt)
    }

    /// RFC 8985 step 5: marks lost every unSACKed segment sent before the RACK segment whose
    /// `xmit_time + RACK.rtt + reo_wnd` has passed; returns when to look again for the others.
    pub fn rack_detect_loss(&mut self, now: Instant, srtt: Duration) -> RackOutcome {
        let mut out = RackOutcome::default();
        let Some(rx) = self.rack_xmit_ts else {
            return out;
        };
        let reo = self.reo_wnd(srtt);
        let mut touched: Option<(usize, usize)> = None;
        for k in 0..self.recs.len() {
            let r = &mut self.recs[k];
            if r.sacked || r.lost {
                continue;
            }
            if !sent_after(rx, self.rack_end_seq, r.xmit_time, r.end) {
                if r.retransmitted {
                    continue;
                }
                break;
            }
            let deadline = r.xmit_time + self.rack_rtt + reo;
            if deadline <= now {
                self.tot.sub(r);
                r.lost = true;
                self.tot.add(r);
                out.newly_lost = out.newly_lost.saturating_add(r.len());
                touched = Some(touched.map_or((k, k), |(lo, _)| (lo, k)));
            } else if out.timeout.map_or(true, |t| deadline > t) {
                // RFC 8985 keeps the largest remaining time.
                out.timeout = Some(deadline);
            }
        }
        if let Some((lo, hi)) = touched {
            let start = self.recs[lo].start;
            if self.off(start) < self.off(self.lost_hint) {
                self.lost_hint = start;
            }
            self.compact(lo.saturating_sub(1), hi + 2);
        }
        out
    }

    /// Retransmission timeout: every non-SACKed record is lost.
    pub fn mark_all_lost(&mut self) {
        for r in self.recs.iter_mut() {
            if r.sacked || r.lost {
                continue;
            }
            self.tot.sub(r);
            r.lost = true;
            self.tot.add(r);
        }
        self.lost_hint = self.una;
        self.compact(0, self.recs.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u32 = 1000;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn us(n: u64) -> Instant {
        Instant::from_micros(n)
    }

    /// Sends `n` MSS segments from `base`, segment i at `t0 + i * 100us`.
    fn send_segments(sb: &mut Scoreboard, base: Seq, first: u32, n: u32, t0: u64) {
        for i in first..first + n {
            let s = base + i * MSS;
            sb.on_send(s, s + MSS, us(t0 + u64::from(i - first) * 100));
        }
    }

    fn seg(base: Seq, i: u32) -> (Seq, Seq) {
        (base + i * MSS, base + (i + 1) * MSS)
    }

    fn check_invariants(sb: &Scoreboard) {
        let mut tot = Totals::default();
        let mut prev: Option<Seq> = None;
        let mut sum = 0u64;
        for r in sb.records() {
            assert!(r.start < r.end, "{r:?}");
            if let Some(p) = prev {
                assert_eq!(p, r.start);
            }
            prev = Some(r.end);
            assert!(!(r.sacked && r.lost));
            tot.add(r);
            sum += u64::from(r.len());
        }
        assert_eq!(tot, sb.tot);
        match (sb.una(), sb.nxt()) {
            (Some(u), Some(n)) => assert_eq!(u64::from(u.dist(n)), sum),
            _ => assert_eq!(sum, 0),
        }
        for w in sb.recs.iter().collect::<Vec<_>>().windows(2) {
            assert!(!mergeable(w[0], w[1]), "unmerged {:?} {:?}", w[0], w[1]);
        }
    }

    #[test]
    fn empty_and_basic_ack() {
        let mut sb = Scoreboard::new();
        assert!(sb.is_empty());
        assert_eq!(sb.una(), None);
        assert_eq!(sb.next_lost(), None);
        assert_eq!(sb.oldest_xmit_time(), None);
        assert_eq!(sb.on_ack(Seq(5), &[], us(0)), AckOutcome::default());
        sb.set_mss(MSS);
        let base = Seq(u32::MAX - 1500);
        send_segments(&mut sb, base, 0, 3, 1000);
        assert_eq!(sb.una(), Some(base));
        assert_eq!(sb.nxt(), Some(base + 3000));
        assert_eq!(sb.pipe(), 3000);
        assert_eq!(sb.len_records(), 3);
        let o = sb.on_ack(base + 2000, &[], us(11_000));
        assert_eq!(o.acked, 2000);
        assert_eq!(o.rtt, Some(Duration::from_micros(11_000 - 1100)));
        assert!(o.rack_updated);
        assert_eq!(sb.pipe(), 1000);
        assert_eq!(sb.latest_xmit(), Some(seg(base, 2)));
        assert_eq!(sb.oldest_xmit_time(), Some(us(1200)));
        let o = sb.on_ack(base + 3000, &[], us(12_000));
        assert_eq!(o.acked, 1000);
        assert!(sb.is_empty());
        assert_eq!(sb.pipe(), 0);
        sb.shrink();
        check_invariants(&sb);
        // Restart anywhere when empty.
        sb.on_send(Seq(7), Seq(9), us(13_000));
        assert_eq!(sb.una(), Some(Seq(7)));
        check_invariants(&sb);
    }

    #[test]
    fn same_instant_sends_merge() {
        let mut sb = Scoreboard::new();
        for i in 0..10 {
            sb.on_send(Seq(i * 100), Seq((i + 1) * 100), us(5));
        }
        assert_eq!(sb.len_records(), 1);
        sb.on_send(Seq(1000), Seq(1100), us(6));
        assert_eq!(sb.len_records(), 2);
        // A gap or an overlap past nxt.
        sb.on_send(Seq(2000), Seq(2100), us(7));
        assert_eq!(sb.nxt(), Some(Seq(1100)));
        sb.on_send(Seq(1050), Seq(1200), us(8));
        assert_eq!(sb.nxt(), Some(Seq(1200)));
        assert_eq!(sb.pipe(), 1200 + 50);
        check_invariants(&sb);
    }

    #[test]
    fn partial_acks_and_sacks_split_records() {
        let mut sb = Scoreboard::new();
        sb.on_send(Seq(1000), Seq(4000), us(0));
        let o = sb.on_ack(Seq(1500), &[], us(10_000));
        assert_eq!(o.acked, 500);
        assert_eq!(sb.una(), Some(Seq(1500)));
        assert_eq!(sb.len_records(), 1);
        let o = sb.on_ack(Seq(1500), &[(Seq(2000), Seq(2500))], us(10_100));
        assert_eq!(o.sacked, 500);
        assert_eq!(o.acked, 0);
        assert_eq!(sb.len_records(), 3);
        assert_eq!(sb.sacked_bytes(), 500);
        assert_eq!(sb.pipe(), 2000);
        assert_eq!(sb.highest_sacked(), Some(Seq(2500)));
        // Adjacent SACK merges with the SACKed record.
        let o = sb.on_ack(Seq(1500), &[(Seq(2500), Seq(3000))], us(10_200));
        assert_eq!(o.sacked, 500);
        assert_eq!(sb.len_records(), 3);
        // Repeated SACK: nothing new.
        let o = sb.on_ack(Seq(1500), &[(Seq(2000), Seq(3000))], us(10_300));
        assert_eq!(o.sacked, 0);
        assert_eq!(o.rtt, None);
        // Cumulative ACK into the SACKed range.
        let o = sb.on_ack(Seq(2700), &[], us(10_400));
        assert_eq!(o.acked, 1200);
        assert_eq!(sb.sacked_bytes(), 300);
        assert_eq!(sb.pipe(), 1000);
        let o = sb.on_ack(Seq(3000), &[], us(10_500));
        assert_eq!(sb.highest_sacked(), None);
        assert_eq!(sb.sacked_bytes(), 0);
        assert_eq!(o.acked, 300);
        check_invariants(&sb);
    }

    #[test]
    fn rtt_sample_excludes_retransmitted() {
        let mut sb = Scoreboard::new();
        sb.set_min_rtt(ms(5));
        sb.on_send(Seq(0), Seq(100), us(0));
        sb.on_send(Seq(100), Seq(200), us(1000));
        sb.on_send(Seq(200), Seq(300), us(2000));
        sb.on_retransmit(Seq(200), Seq(300), us(3000));
        assert_eq!(sb.pipe(), 100 + 100 + 200);
        let o = sb.on_ack(Seq(300), &[], us(10_000));
        assert_eq!(o.rtt, Some(Duration::from_micros(9000)));
        // Only a retransmitted segment delivered: no sample.
        sb.on_send(Seq(300), Seq(400), us(11_000));
        sb.on_retransmit(Seq(300), Seq(400), us(12_000));
        let o = sb.on_ack(Seq(400), &[], us(13_000));
        assert_eq!(o.rtt, None);
        // ... and RACK skips it too: delivered 1ms after the retransmission, below min_rtt.
        assert!(!o.rack_updated);
        sb.on_send(Seq(400), Seq(500), us(14_000));
        sb.on_retransmit(Seq(400), Seq(500), us(15_000));
        let o = sb.on_ack(Seq(500), &[], us(25_000));
        assert_eq!(o.rtt, None);
        assert!(o.rack_updated);
    }

    #[test]
    fn one_loss_in_twenty_detected_after_three_sacks() {
        let base = Seq(u32::MAX - 7000);
        let mut sb = Scoreboard::new();
        sb.set_mss(MSS);
        sb.set_min_rtt(ms(10));
        send_segments(&mut sb, base, 0, 20, 0);
        let srtt = ms(10);
        let o = sb.on_ack(base + 5 * MSS, &[], us(10_400));
        assert_eq!(o.acked, 5 * MSS);
        // Segment 5 is lost; 6, 7 and 8 arrive and are SACKed.
        let mut t = 10_600;
        for i in 6..9 {
            let (s, _) = seg(base, 6);
            let (_, e) = seg(base, i);
            let o = sb.on_ack(base + 5 * MSS, &[(s, e)], us(t));
            assert_eq!(o.sacked, MSS);
            assert!(o.rack_updated);
            let r = sb.rack_detect_loss(us(t), srtt);
            if i < 8 {
                // Below DupThresh: wait for the reordering window, min_rtt / 4.
                assert_eq!(r.newly_lost, 0);
                let due = us(500) + Duration::from_micros(t - (i as u64 * 100)) + ms(10) / 4;
                assert_eq!(r.timeout, Some(due));
            } else {
                assert_eq!(r.newly_lost, MSS);
                assert_eq!(r.timeout, None);
            }
            t += 100;
            check_invariants(&sb);
        }
        assert_eq!(sb.next_lost(), Some(seg(base, 5)));
        assert_eq!(sb.lost_bytes(), MSS);
        assert_eq!(sb.pipe(), 20 * MSS - 5 * MSS - 3 * MSS - MSS);
        sb.on_retransmit(seg(base, 5).0, seg(base, 5).1, us(t));
        assert_eq!(sb.next_lost(), None);
        assert_eq!(sb.pipe(), 12 * MSS);
        let o = sb.on_ack(base + 9 * MSS, &[], us(t + 10_000));
        assert_eq!(o.acked, 4 * MSS);
        assert_eq!(o.rtt, None);
        check_invariants(&sb);
    }

    #[test]
    fn one_loss_detected_after_reorder_window() {
        let base = Seq(1);
        let mut sb = Scoreboard::new();
        sb.set_mss(MSS);
        sb.set_min_rtt(ms(10));
        send_segments(&mut sb, base, 0, 20, 0);
        let srtt = ms(12);
        sb.on_ack(base + 5 * MSS, &[], us(10_400));
        sb.on_ack(base + 5 * MSS, &[seg(base, 6)], us(10_600));
        let r = sb.rack_detect_loss(us(10_600), srtt);
        assert_eq!(r.newly_lost, 0);
        let due = r.timeout.unwrap_or(Instant::ZERO);
        // x5 + RACK.rtt + min_rtt / 4 = 500 + (10_600 - 600) + 2500.
        assert_eq!(due, us(500 + 10_000 + 2500));
        let r = sb.rack_detect_loss(due - Duration::from_micros(1), srtt);
        assert_eq!(r.newly_lost, 0);
        let r = sb.rack_detect_loss(due, srtt);
        assert_eq!(r.newly_lost, MSS);
        assert_eq!(r.timeout, None);
        assert_eq!(sb.next_lost(), Some(seg(base, 5)));
        check_invariants(&sb);
    }

    /// Segment `late` of 20 from `first` arrives 3ms late; returns the lost bytes seen.
    fn reorder_round(sb: &mut Scoreboard, base: Seq, first: u32, t0: u64) -> u32 {
        let srtt = ms(10);
        send_segments(sb, base, first, 20, t0);
        let late = first + 5;
        sb.on_ack(base + late * MSS, &[], us(t0 + 10_500));
        let mut lost = 0;
        let mut t = t0 + 10_600;
        for i in late + 1..late + 5 {
            sb.on_ack(
                base + late * MSS,
                &[(seg(base, late + 1).0, seg(base, i).1)],
                us(t),
            );
            lost += sb.rack_detect_loss(us(t), srtt).newly_lost;
            t += 100;
        }
        // The late segment arrives 3ms late, then everything else.
        let t_late = t0 + 500 + 10_000 + 3000;
        if lost > 0 {
            // Spurious retransmission before it arrived.
            sb.on_retransmit(seg(base, late).0, seg(base, late).1, us(t));
        }
        lost += sb.rack_detect_loss(us(t_late - 1), srtt).newly_lost;
        sb.on_ack(base + (late + 5) * MSS, &[], us(t_late));
        sb.on_ack(base + (first + 20) * MSS, &[], us(t0 + 12_500));
        if lost > 0 {
            // The retransmission arrives too: DSACK.
            let o = sb.on_ack(
                base + (first + 20) * MSS,
                &[seg(base, late)],
                us(t0 + 30_000),
            );
            assert!(o.dsack);
        }
        check_invariants(sb);
        lost
    }

    #[test]
    fn reordering_not_lost_after_dsack_adaptation() {
        let base = Seq(u32::MAX - 30_000);
        let mut sb = Scoreboard::new();
        sb.set_mss(MSS);
        sb.set_min_rtt(ms(10));
        // First time: the window is zero with three SACKed segments: spurious loss, DSACK.
        assert_eq!(reorder_round(&mut sb, base, 0, 0), MSS);
        assert!(sb.reordering_seen());
        assert_eq!(sb.reo_wnd_mult, 2);
        assert_eq!(sb.reo_wnd(ms(10)), ms(5));
        // Same reordering again: the adapted window (min_rtt / 4 * 2 = 5ms > 3ms) absorbs it.
        assert_eq!(reorder_round(&mut sb, base, 20, 100_000), 0);
        assert_eq!(sb.lost_bytes(), 0);
        assert!(sb.is_empty());
        // 16 recoveries without DSACK reset the multiplier.
        for _ in 0..16 {
            sb.set_recovery(true);
            sb.set_recovery(false);
        }
        assert_eq!(sb.reo_wnd_mult, 1);
    }

    #[test]
    fn non_retransmitted_late_delivery_sets_reordering_seen() {
        let mut sb = Scoreboard::new();
        sb.set_mss(MSS);
        sb.set_min_rtt(ms(10));
        send_segments(&mut sb, Seq(0), 0, 5, 0);
        sb.on_ack(Seq(0), &[seg(Seq(0), 1)], us(10_000));
        assert!(!sb.reordering_seen());
        sb.on_ack(Seq(2000), &[], us(10_100));
        assert!(sb.reordering_seen());
    }

    #[test]
    fn dsack_detection() {
        let mut sb = Scoreboard::new();
        send_segments(&mut sb, Seq(0), 0, 10, 0);
        sb.on_ack(Seq(3000), &[], us(10_000));
        // Below the ACK.
        let o = sb.on_ack(Seq(3000), &[(Seq(1000), Seq(2000))], us(10_100));
        assert!(o.dsack);
        assert_eq!(o.sacked, 0);
        // Inside the second block.
        let o = sb.on_ack(
            Seq(3000),
            &[(Seq(5000), Seq(5500)), (Seq(5000), Seq(6000))],
            us(10_200),
        );
        assert!(o.dsack);
        assert_eq!(o.sacked, 1000);
        // A plain SACK.
        let o = sb.on_ack(Seq(3000), &[(Seq(7000), Seq(8000))], us(10_300));
        assert!(!o.dsack);
        assert_eq!(o.sacked, 1000);
        // DSACK when nothing is outstanding.
        sb.on_ack(Seq(10_000), &[], us(10_400));
        assert!(sb.is_empty());
        let o = sb.on_ack(Seq(10_000), &[(Seq(9000), Seq(10_000))], us(10_500));
        assert!(o.dsack);
        check_invariants(&sb);
    }

    #[test]
    fn malicious_input_ignored() {
        let mut sb = Scoreboard::new();
        send_segments(&mut sb, Seq(100), 0, 10, 0);
        let before = sb.clone();
        let bad: [(Seq, Seq); 6] = [
            (Seq(2000), Seq(2000)),           // empty
            (Seq(3000), Seq(2000)),           // reversed
            (Seq(9000), Seq(20_000)),         // beyond nxt
            (Seq(0), Seq(500)),               // below una
            (Seq(100), Seq(100 + (1 << 31))), // absurd
            (Seq(u32::MAX), Seq(5)),          // wraps
        ];
        for b in bad {
            let o = sb.on_ack(Seq(100), &[(Seq(1), Seq(2)), b], us(5000));
            assert_eq!(o.sacked, 0, "{b:?}");
            assert_eq!(o.acked, 0);
        }
        assert_eq!(
            sb.records().collect::<Vec<_>>(),
            before.records().collect::<Vec<_>>()
        );
        // ACK beyond nxt or absurdly far is ignored entirely.
        assert_eq!(
            sb.on_ack(Seq(100_000), &[], us(6000)),
            AckOutcome::default()
        );
        assert_eq!(
            sb.on_ack(Seq(100 + (1 << 31)), &[], us(6000)),
            AckOutcome::default()
        );
        // Too many blocks: only four are looked at.
        let many: Vec<(Seq, Seq)> = (0..10).map(|i| seg(Seq(100), i)).collect();
        let o = sb.on_ack(Seq(100), &many, us(7000));
        assert_eq!(o.sacked, 4 * MSS);
        // Retransmit outside: nothing.
        sb.on_retransmit(Seq(50_000), Seq(60_000), us(8000));
        sb.on_retransmit(Seq(500), Seq(400), us(8000));
        check_invariants(&sb);
        assert_eq!(sb.pipe(), 6 * MSS);
    }

    #[test]
    fn rto_marks_all_lost_and_pipe_accounting() {
        let mut sb = Scoreboard::new();
        sb.set_mss(MSS);
        send_segments(&mut sb, Seq(0), 0, 10, 0);
        sb.on_ack(Seq(0), &[seg(Seq(0), 4)], us(10_000));
        // Tail loss probe of the last segment: original and probe both in flight.
        sb.on_retransmit(seg(Seq(0), 9).0, seg(Seq(0), 9).1, us(11_000));
        assert_eq!(sb.pipe(), 10 * MSS);
        sb.mark_all_lost();
        assert_eq!(sb.pipe(), 0);
        assert_eq!(sb.lost_bytes(), 9 * MSS);
        // Lost runs merge: [0,4000) and [5000,10000) (the probe's record stays apart).
        assert_eq!(sb.len_records(), 4);
        assert_eq!(sb.next_lost(), Some((Seq(0), Seq(1000))));
        sb.on_retransmit(Seq(0), Seq(1000), us(20_000));
        assert_eq!(sb.pipe(), MSS);
        assert_eq!(sb.next_lost(), Some((Seq(1000), Seq(2000))));
        assert_eq!(sb.latest_xmit(), Some(seg(Seq(0), 9)));
        // Retransmitting the whole run walks next_lost through it, then past the SACKed hole.
        for i in 1..4 {
            let (s, e) = sb.next_lost().unwrap_or((Seq(0), Seq(0)));
            assert_eq!((s, e), seg(Seq(0), i));
            sb.on_retransmit(s, e, us(20_000 + u64::from(i)));
        }
        assert_eq!(sb.next_lost(), Some(seg(Seq(0), 5)));
        // The rest of the lost run keeps the run's oldest transmission time.
        assert_eq!(sb.oldest_xmit_time(), Some(us(500)));
        check_invariants(&sb);
    }

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            if n == 0 {
                0
            } else {
                self.next() % n
            }
        }
    }

    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    struct ByteState {
        sacked: bool,
        lost: bool,
        retransmitted: bool,
        rexmit_after_loss: bool,
    }

    /// Per-byte reference model of the scoreboard's flags.
    fn expand(sb: &Scoreboard) -> Vec<ByteState> {
        let mut v = Vec::new();
        for r in sb.records() {
            for _ in 0..r.len() {
                v.push(ByteState {
                    sacked: r.sacked,
                    lost: r.lost,
                    retransmitted: r.retransmitted,
                    rexmit_after_loss: r.rexmit_after_loss,
                });
            }
        }
        v
    }

    fn model_pipe(m: &[ByteState]) -> u32 {
        m.iter()
            .map(|b| {
                if b.sacked || b.lost {
                    0
                } else if b.retransmitted && !b.rexmit_after_loss {
                    2
                } else {
                    1
                }
            })
            .sum()
    }

    #[test]
    fn randomized_against_byte_model() {
        let mut rng = XorShift(0xdead_beef_cafe_f00d);
        let mut rack_lost_total = 0u64;
        for round in 0..40 {
            let mut sb = Scoreboard::new();
            sb.set_mss(100);
            let mut una = Seq((u32::MAX - 3000).wrapping_add(rng.below(6000) as u32));
            let mut nxt = una;
            let mut model: Vec<ByteState> = Vec::new();
            let mut now = 1000u64;
            for step in 0..400 {
                now += rng.below(3000);
                let t = us(now);
                if rng.below(4) == 0 {
                    sb.set_min_rtt(Duration::from_micros(rng.below(20_000)));
                }
                let win = una.dist(nxt);
                // A random sequence number around the window.
                let pick = |rng: &mut XorShift| -> Seq {
                    match rng.below(10) {
                        0 => Seq(rng.next() as u32),
                        1 => una - rng.below(300) as u32,
                        2 => nxt + rng.below(300) as u32,
                        _ => una + rng.below(u64::from(win) + 1) as u32,
                    }
                };
                match rng.below(9) {
                    0..=2 => {
                        if win < 4000 {
                            let len = 1 + rng.below(250) as u32;
                            sb.on_send(nxt, nxt + len, t);
                            if model.is_empty() {
                                una = nxt;
                            }
                            nxt += len;
                            model.extend((0..len).map(|_| ByteState::default()));
                        }
                    }
                    3 => {
                        let a = pick(&mut rng);
                        let b = pick(&mut rng);
                        sb.on_retransmit(a, b, t);
                        let w = una.dist(nxt);
                        let clamp = |x: Seq| {
                            let d = x - una;
                            if d <= 0 {
                                0
                            } else {
                                (d as u32).min(w)
                            }
                        };
                        let (so, eo) = (clamp(a), clamp(b));
                        if so < eo && !model.is_empty() {
                            for bs in &mut model[so as usize..eo as usize] {
                                if !bs.sacked {
                                    bs.rexmit_after_loss = bs.lost;
                                    bs.lost = false;
                                    bs.retransmitted = true;
                                }
                            }
                        }
                    }
                    4..=6 => {
                        let ack = if rng.below(3) == 0 {
                            pick(&mut rng)
                        } else {
                            una
                        };
                        let nblocks = rng.below(7) as usize;
                        let blocks: Vec<(Seq, Seq)> = (0..nblocks)
                            .map(|_| {
                                let s = pick(&mut rng);
                                let e = if rng.below(4) == 0 {
                                    pick(&mut rng)
                                } else {
                                    s + rng.below(400) as u32
                                };
                                (s, e)
                            })
                            .collect();
                        let o = sb.on_ack(ack, &blocks, t);
                        let off = |x: Seq, una: Seq| x.0.wrapping_sub(una.0);
                        if ack > nxt {
                            assert_eq!(o, AckOutcome::default());
                        } else {
                            let mut acked = 0;
                            let ao = off(ack, una);
                            if ao > 0 && ao <= off(nxt, una) && !model.is_empty() {
                                acked = una.dist(ack);
                                model.drain(..acked as usize);
                                una = ack;
                            }
                            assert_eq!(o.acked, acked, "round {round} step {step}");
                            let mut sacked = 0;
                            for &(s, e) in blocks.iter().skip(usize::from(o.dsack)).take(4) {
                                let (so, eo) = (off(s, una), off(e, una));
                                if model.is_empty() || so >= eo || eo > off(nxt, una) {
                                    continue;
                                }
                                for bs in &mut model[so as usize..eo as usize] {
                                    if !bs.sacked {
                                        sacked += 1;
                                        bs.sacked = true;
                                        bs.lost = false;
                                    }
                                }
                            }
                            assert_eq!(o.sacked, sacked, "round {round} step {step}");
                        }
                    }
                    7 => {
                        let r = sb.rack_detect_loss(t, Duration::from_micros(rng.below(30_000)));
                        let after = expand(&sb);
                        let mut newly = 0;
                        for (m, a) in model.iter_mut().zip(&after) {
                            if a.lost && !m.lost {
                                assert!(!m.sacked);
                                newly += 1;
                                m.lost = true;
                            }
                        }
                        assert_eq!(r.newly_lost, newly);
                        rack_lost_total += u64::from(newly);
                        if let Some(to) = r.timeout {
                            assert!(to > t);
                        }
                    }
                    _ => {
                        if rng.below(4) == 0 {
                            sb.mark_all_lost();
                            for m in &mut model {
                                m.lost = !m.sacked;
                            }
                        }
                    }
                }
                if model.is_empty() {
                    una = nxt;
                }
                check_invariants(&sb);
                // Flags that no longer matter once SACKed or lost are not compared.
                let norm = |b: &ByteState| ByteState {
                    sacked: b.sacked,
                    lost: b.lost,
                    retransmitted: b.retransmitted && !b.sacked,
                    rexmit_after_loss: b.rexmit_after_loss && !b.sacked && !b.lost,
                };
                let got: Vec<ByteState> = expand(&sb).iter().map(norm).collect();
                let model_n: Vec<ByteState> = model.iter().map(norm).collect();
                assert_eq!(got.len(), model.len(), "round {round} step {step}");
                if let Some(i) = got.iter().zip(&model_n).position(|(a, b)| a != b) {
                    panic!(
                        "round {round} step {step} byte {i}: {:?} != model {:?}\n{:?}",
                        got[i],
                        model_n[i],
                        sb.records().collect::<Vec<_>>()
                    );
                }
                assert_eq!(sb.pipe(), model_pipe(&model));
                assert_eq!(
                    sb.sacked_bytes() as usize,
                    model.iter().filter(|b| b.sacked).count()
                );
                assert_eq!(
                    sb.lost_bytes() as usize,
                    model.iter().filter(|b| b.lost).count()
                );
                let hs = model
                    .iter()
                    .rposition(|b| b.sacked)
                    .map(|i| una + (i as u32 + 1));
                assert_eq!(sb.highest_sacked(), hs);
                match model.iter().position(|b| b.lost) {
                    Some(i) => {
                        let (s, e) = sb.next_lost().unwrap_or((Seq(0), Seq(0)));
                        assert_eq!(s, una + i as u32);
                        assert!(s < e && s.dist(e) <= 100);
                        for b in &model[i..i + s.dist(e) as usize] {
                            assert!(b.lost);
                        }
                    }
                    None => assert_eq!(sb.next_lost(), None),
                }
                let brute = sb
                    .records()
                    .filter(|r| !r.sacked)
                    .map(|r| r.xmit_time)
                    .min()
                    .or_else(|| sb.records().next().map(|r| r.xmit_time));
                assert_eq!(sb.oldest_xmit_time(), brute);
                if !model.is_empty() {
                    assert_eq!(sb.una(), Some(una));
                    assert_eq!(sb.nxt(), Some(nxt));
                }
            }
        }
        assert!(rack_lost_total > 0, "RACK never marked anything lost");
    }
}
