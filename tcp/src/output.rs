//! What a connection sends next (Linux's tcp_write_xmit / tcp_xmit_retransmit_queue, reduced):
//! resets, SYNs, forced retransmissions (TLP, NewReno), lost segments under PRR or cwnd (RFC
//! 6675 NextSeg), new data under cwnd, the peer's window, Nagle (Minshall's variant), cork and
//! sender-side silly-window avoidance, FINs, window probes and pure ACKs. One call returns one
//! segment description; the stack copies its payload from the send buffer into a frame. With
//! TSO a data segment may span many MSS and is cut by the device.
//!
//! Pacing (when the congestion control gives a rate, i.e. BBR): data segments, new or
//! retransmitted, leave no earlier than `pacing_next`, which each one moves on by its length
//! at the pacing rate; while data waits, a pacing deadline wakes the connection. Pure ACKs,
//! RSTs, SYNs, probes and a lone FIN are never held. A TSO burst is then about 1 ms of data at
//! the pacing rate.

use crate::conn::{RtxKind, State, Tcb, CORK_HOLD};
use crate::seq::Seq;
use crate::time::Instant;
use crate::wire::tcp::{flags as F, TcpOptions, TcpRepr};

/// One segment to emit: header fields and which send-buffer bytes are its payload.
#[derive(Clone, Copy, Debug)]
pub struct OutSeg {
    pub repr: TcpRepr,
    /// Payload: `data_len` bytes from `data_off` bytes after snd_una in the send buffer.
    pub data_off: usize,
    pub data_len: usize,
    /// Cut into wire segments of this payload size (TSO) when the payload exceeds it.
    pub gso: Option<u16>,
}

impl Tcb {
    fn base_repr(&mut self, now: Instant, seq: Seq, flags: u8) -> TcpRepr {
        let mut r = TcpRepr {
            src_port: self.local.port(),
            dst_port: self.remote.port(),
            seq,
            ack: Seq(0),
            flags,
            window: 0,
            urgent: 0,
            opts: TcpOptions::default(),
        };
        if flags & F::SYN != 0 {
            r.window = self.recv_window().min(65535) as u16;
            r.opts.mss = Some(self.cfg.link_mss);
            if self.state == State::SynSent {
                r.opts.sack_permitted = self.cfg.sack;
                if self.cfg.timestamps {
                    r.opts.timestamp = Some((self.ts_now(now), 0));
                }
                if self.cfg.wscale {
                    r.opts.wscale = Some(self.rcv_wscale);
                }
            } else {
                r.opts.sack_permitted = self.sack_ok;
                if self.ts_ok {
                    r.opts.timestamp = Some((self.ts_now(now), self.ts_recent));
                }
                if self.rcv_wscale > 0 || self.snd_wscale > 0 {
                    r.opts.wscale = Some(self.rcv_wscale);
                }
            }
        } else {
            let w = self.recv_window();
            // Never move the right edge left (RFC 7323 2.4).
            let keep = self.rcv_nxt.dist(self.rcv_adv);
            let w = w.max(keep);
            let scaled = (w >> self.rcv_wscale).min(65535);
            r.window = scaled as u16;
            let edge = self.rcv_nxt + (scaled << self.rcv_wscale);
            if edge > self.rcv_adv {
                self.rcv_adv = edge;
            }
            if self.ts_ok {
                r.opts.timestamp = Some((self.ts_now(now), self.ts_recent));
            }
            let max = if self.ts_ok { 3 } else { 4 };
            let mut k = 0;
            if let Some(d) = self.dsack.take().filter(|_| self.sack_ok) {
                // A D-SACK block goes first (RFC 2883 4).
                r.opts.sack[0] = d;
                k = 1;
            }
            if self.sack_ok && self.recvbuf.has_ooo() {
                let mut ranges = [(0u32, 0u32); 4];
                let n = self.recvbuf.sack_ranges(&mut ranges[..max - k]);
                for (i, (s, e)) in ranges[..n].iter().enumerate() {
                    r.opts.sack[k + i] = (self.rcv_nxt + *s, self.rcv_nxt + *e);
                }
                k += n;
            }
            r.opts.sack_len = k as u8;
        }
        if flags & F::ACK != 0 {
            r.ack = self.rcv_nxt;
        }
        self.urgent_fields(&mut r);
        r
    }

    /// The sequence number of a pure ACK: SND.NXT, unless that lies past the right edge of
    /// the peer's window by a unit of its window scale or more (it shrank the window, or
    /// scaled it down to 0, after our data went out): the peer's first check drops an ACK
    /// beyond its window, and then never sees it (RFC 9293 3.10.7.4). The edge instead
    /// (Linux's tcp_acceptable_seq; the slack here is the peer's scale, the rounding of the
    /// windows it advertises).
    fn ack_seq(&self) -> Seq {
        let edge = self.snd_una + self.snd_wnd;
        if edge >= self.snd_nxt || edge.dist(self.snd_nxt) < 1 << self.snd_wscale {
            self.snd_nxt
        } else {
            edge
        }
    }

    pub(crate) fn data_end(&self) -> Seq {
        self.snd_una + self.sendbuf.len() as u32
    }

    /// A data (or retransmitted) segment for `[s, e)` of the send space.
    fn data_seg(&mut self, now: Instant, s: Seq, e: Seq, retrans: bool) -> OutSeg {
        let e = self.urgent_clamp(s, e);
        let data_end = self.data_end();
        let pe = e.min(data_end);
        let len = s.dist(pe) as usize;
        let mut flags = F::ACK;
        if pe == data_end && len > 0 {
            flags |= F::PSH;
        }
        let fin = self
            .fin_seq
            .is_some_and(|f| f == data_end && pe == data_end)
            || (!retrans && self.fin_queued && self.fin_seq.is_none() && pe == data_end);
        if fin {
            flags |= F::FIN;
            if self.fin_seq.is_none() {
                self.fin_seq = Some(data_end);
                self.snd_nxt = data_end + 1;
            }
        }
        let repr = self.base_repr(now, s, flags);
        let off = self.snd_una.dist(s) as usize;
        if len > 0 {
            let segs = len.div_ceil(self.mss as usize);
            self.tx_start_check(now);
            let tx = self.rate.on_send(now, self.sb.is_empty());
            if retrans {
                self.sb.retransmit_tx(s, pe, now, tx);
                self.stats.retrans_segs += segs as u64;
                self.undo_retrans = self.undo_retrans.saturating_add(segs as u32);
            } else {
                self.sb.send_tx(s, pe, now, tx);
                self.on_new_data_sent(now);
            }
            self.paced_send(now, len as u32, segs as u64);
        }
        self.ack_sent();
        self.last_snd = now;
        self.stats.segs_out += 1;
        let gso = (len > self.mss as usize).then_some(self.mss as u16);
        OutSeg {
            repr,
            data_off: off,
            data_len: len,
            gso,
        }
    }

    /// The pure ACK that out-of-order input owes at once (see `Tcb::sack_ack`), if any.
    pub(crate) fn take_sack_ack(&mut self, now: Instant) -> Option<OutSeg> {
        if !core::mem::take(&mut self.sack_ack) || !self.ack_now {
            return None;
        }
        let s = self.bare(now, self.ack_seq(), F::ACK);
        self.ack_sent();
        Some(s)
    }

    fn bare(&mut self, now: Instant, seq: Seq, flags: u8) -> OutSeg {
        let repr = self.base_repr(now, seq, flags);
        self.stats.segs_out += 1;
        OutSeg {
            repr,
            data_off: 0,
            data_len: 0,
            gso: None,
        }
    }

    /// The next segment to send at `now`, or `None` when nothing may go. `tso_max`: largest
    /// payload per super-frame (0 or <= MSS: no TSO).
    pub fn next_segment(&mut self, now: Instant, tso_max: u32) -> Option<OutSeg> {
        if self.send_rst {
            self.send_rst = false;
            let s = self.bare(now, self.snd_nxt, F::RST | F::ACK);
            return Some(s);
        }
        match self.state {
            State::Closed => return None,
            State::SynSent | State::SynReceived if self.syn_sent_at.is_none() => {
                self.syn_sent_at = Some(now);
                let flags = if self.state == State::SynSent {
                    F::SYN
                } else {
                    F::SYN | F::ACK
                };
                let s = self.bare(now, self.iss, flags);
                self.snd_nxt = self.iss + 1;
                self.ack_sent();
                self.rearm_rtx(now, true);
                return Some(s);
            }
            State::SynSent => return None,
            State::SynReceived => {
                if self.ack_now {
                    self.ack_now = false;
                    return Some(self.bare(now, self.snd_nxt, F::ACK));
                }
                return None;
            }
            _ => {}
        }
        let mss = self.mss;
        let tso = self.tso_size(tso_max);
        let seg_max = if tso_max > mss && tso > mss {
            tso / mss * mss
        } else {
            mss
        };
        // Pacing holds every data segment until its time.
        let paced = self.pacing_wait(now);
        if let Some(t) = paced {
            let data_waits =
                self.rtx_force.is_some() || self.sb.next_lost().is_some() || self.unsent() > 0;
            if data_waits {
                self.pacing_at = Some(t);
            }
        }

        // Forced retransmission (TLP probe, NewReno).
        if let Some((s, e)) = self.rtx_force.take_if(|_| paced.is_none()) {
            let s = s.max(self.snd_una);
            if s < e && e <= self.snd_nxt {
                let e = e.min(s + seg_max);
                let seg = self.data_seg(now, s, e, true);
                self.rearm_rtx(now, false);
                return Some(seg);
            }
        }

        // Lost segments first (RFC 6675 NextSeg rule 1).
        let pipe = self.sb.pipe();
        let allowed = self.phase_allows(pipe);
        if let Some((s, e)) = self.sb.next_lost().filter(|_| paced.is_none()) {
            if allowed > 0 || self.sb.pipe() == 0 {
                let n = allowed.max(mss).min(seg_max);
                let n = if n >= mss { n / mss * mss } else { mss };
                let e = e.min(s + n);
                let seg = self.data_seg(now, s, e, true);
                self.on_sent_bytes(seg.data_len as u32, true);
                // Recovery retransmissions run under the RTO, not a probe timer armed before
                // the loss was known (Linux's tcp_xmit_retransmit_queue rearms the RTO).
                if matches!(self.rtx_at, Some((_, RtxKind::Tlp))) {
                    self.rtx_at = None;
                }
                self.rearm_rtx(now, false);
                return Some(seg);
            }
        }

        // New data.
        let in_flight_end = self.snd_nxt;
        let data_end = self.data_end();
        let unsent = in_flight_end.dist(data_end);
        let may_send = matches!(
            self.state,
            State::Established
                | State::CloseWait
                | State::FinWait1
                | State::LastAck
                | State::Closing
        );
        if may_send
            && ((unsent > 0 && paced.is_none())
                || (unsent == 0 && self.fin_queued && self.fin_seq.is_none()))
        {
            let wnd_end = self.snd_una + self.snd_wnd;
            let wnd_room = in_flight_end.dist(wnd_end);
            let mut cwnd_room = self.phase_allows(pipe);
            // A loss probe of new data goes now: one segment past cwnd, and past Nagle and
            // cork (Linux's tcp_send_loss_probe writes with TCP_NAGLE_OFF); held back, the
            // probe would be no probe and the RTO would fire.
            let probe = core::mem::take(&mut self.tlp_new);
            if probe {
                cwnd_room = cwnd_room.max(mss);
            }
            if unsent == 0 {
                // Only the FIN remains.
                let seg = self.data_seg(now, in_flight_end, in_flight_end, false);
                self.rearm_rtx(now, false);
                return Some(seg);
            }
            let mut len = unsent.min(wnd_room).min(seg_max);
            let cwnd_full = len > cwnd_room;
            if len > cwnd_room {
                len = if cwnd_room >= mss {
                    cwnd_room / mss * mss
                } else {
                    0
                };
            }
            self.set_cwnd_limited(cwnd_full);
            if len > 0 {
                let full = len >= mss;
                let is_rest = len == unsent;
                let nagle_ok = self.cfg.nodelay || self.snd_sml <= self.snd_una;
                let cork_wait = self.cfg.cork && !full && self.cork_at.is_some_and(|t| t > now);
                let sws_ok = full
                    || (is_rest && nagle_ok && !cork_wait && !self.cfg.cork)
                    || (is_rest && self.cfg.cork && self.cork_expired)
                    || (self.max_snd_wnd > 0 && len >= self.max_snd_wnd / 2 && nagle_ok)
                    || (is_rest && self.fin_queued)
                    || probe;
                if self.cfg.cork
                    && !full
                    && self.cork_at.is_none()
                    && !self.cork_expired
                    && !self.fin_queued
                {
                    // Linux releases a corked partial segment with its zero-window probe
                    // timer: max(RTO, 200 ms).
                    self.cork_at = Some(now + self.rto().max(CORK_HOLD));
                }
                if sws_ok {
                    self.idle_restart(now);
                    let e = in_flight_end + len;
                    self.snd_nxt = e;
                    if len % mss != 0 {
                        self.snd_sml = e;
                    }
                    let seg = self.data_seg(now, in_flight_end, e, false);
                    self.on_sent_bytes(len, cwnd_full);
                    self.cork_expired = false;
                    // New data: the probe timeout counts from the latest send (Linux
                    // recomputes it after every tcp_write_xmit, RFC 8985 7.2).
                    if matches!(self.rtx_at, Some((_, RtxKind::Tlp))) {
                        self.rtx_at = None;
                    }
                    self.rearm_rtx(now, false);
                    return Some(seg);
                }
            }
            if wnd_room < unsent.min(mss) {
                // Held for the window alone (zero, or below what the SWS rules send): the
                // probe timer (Tcb::window_blocks).
                self.rearm_rtx(now, false);
            }
        }

        if self.probe_pending {
            self.probe_pending = false;
            // A zero-window or keepalive probe: an old sequence number elicits an ACK.
            let s = self.bare(now, self.snd_una - 1, F::ACK);
            return Some(s);
        }
        if self.ack_now || self.win_update {
            let s = self.bare(now, self.ack_seq(), F::ACK);
            self.ack_sent();
            return Some(s);
        }
        None
    }
}
