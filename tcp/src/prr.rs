//! Proportional Rate Reduction, RFC 6937 section 3, with Slow Start Reduction Bound (SSRB).
//!
//! During fast recovery the window must come down from the flight size at loss to ssthresh.
//! RFC 6675 stops sending until pipe falls below cwnd (a half-RTT silence, then a burst) and
//! RFC 6582 can collapse to one segment on heavy losses; PRR instead paces the reduction: while
//! pipe is above ssthresh it sends `ssthresh / RecoverFS` of what is delivered, so the window
//! reaches ssthresh smoothly by the end of recovery; when losses have pulled pipe below
//! ssthresh, SSRB lets it grow back like slow start (at most one extra MSS per ACK), which is
//! the RFC's recommended bound (conservative but quick). Linux uses the same algorithm.
//!
//! All quantities are bytes. The caller creates one [`Prr`] when it enters recovery, reports
//! delivered and sent bytes, and asks [`Prr::sndcnt`] how much it may send on each ACK.

/// Per-recovery-episode PRR state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prr {
    /// FlightSize at the start of recovery.
    recover_fs: u32,
    /// Bytes delivered to the receiver since recovery started (cumulative + SACK).
    prr_delivered: u64,
    /// Bytes sent (new or retransmitted) since recovery started.
    prr_out: u64,
}

impl Prr {
    /// Starts recovery with `recover_fs` bytes in flight (RFC 6937: RecoverFS = snd.nxt - snd.una).
    pub fn start(recover_fs: u32) -> Prr {
        Prr {
            recover_fs,
            prr_delivered: 0,
            prr_out: 0,
        }
    }

    /// An ACK delivered `delivered` bytes (DeliveredData: the change in snd.una plus newly
    /// SACKed bytes).
    pub fn on_ack(&mut self, delivered: u32) {
        self.prr_delivered = self.prr_delivered.saturating_add(u64::from(delivered));
    }

    /// `bytes` were sent (new data or retransmissions).
    pub fn on_sent(&mut self, bytes: u32) {
        self.prr_out = self.prr_out.saturating_add(u64::from(bytes));
    }

    /// Bytes delivered since recovery started.
    pub fn delivered(&self) -> u64 {
        self.prr_delivered
    }

    /// Bytes sent since recovery started.
    pub fn out(&self) -> u64 {
        self.prr_out
    }

    /// How many bytes may be sent now (RFC 6937 section 3, "on every ACK"): the proportional
    /// part while `pipe > ssthresh`, otherwise the SSRB part; never negative.
    pub fn sndcnt(&self, pipe: u32, ssthresh: u32, mss: u32, delivered_this_ack: u32) -> u32 {
        let sndcnt = if pipe > ssthresh {
            // sndcnt = CEIL(prr_delivered * ssthresh / RecoverFS) - prr_out
            let fs = u128::from(self.recover_fs.max(1));
            let num = u128::from(self.prr_delivered) * u128::from(ssthresh);
            let allowed = num.div_ceil(fs);
            allowed.saturating_sub(u128::from(self.prr_out))
        } else {
            // limit = MAX(prr_delivered - prr_out, DeliveredData) + MSS
            // sndcnt = MIN(ssthresh - pipe, limit)
            let limit = self
                .prr_delivered
                .saturating_sub(self.prr_out)
                .max(u64::from(delivered_this_ack))
                .saturating_add(u64::from(mss));
            u128::from(u64::from(ssthresh - pipe).min(limit))
        };
        u32::try_from(sndcnt).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u32 = 1000;

    /// RFC 6937 section 6 style: 20 segments in flight, one lost, ssthresh = 10 segments, every
    /// ACK delivers one segment. PRR sends on alternate ACKs (starting with the first, the
    /// retransmission) until pipe reaches ssthresh, then one for one.
    #[test]
    fn single_loss_alternates_then_holds_ssthresh() {
        // In segment units (MSS = 1), as the RFC's tables are.
        let mss = 1;
        let ssthresh = 10;
        let mut prr = Prr::start(20);
        let mut pipe = 19; // 20 outstanding, 1 lost
        let mut sent = Vec::new();
        for _ in 0..19 {
            pipe -= 1;
            prr.on_ack(1);
            let n = prr.sndcnt(pipe, ssthresh, mss, 1);
            prr.on_sent(n);
            pipe += n;
            sent.push(n);
        }
        assert_eq!(
            &sent[..16],
            &[1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0]
        );
        // Pipe has come down to ssthresh (nothing sent at pipe == ssthresh) and PRR now keeps
        // it there (SSRB, one for one).
        assert_eq!(&sent[16..], &[0, 1, 1]);
        assert_eq!(pipe, ssthresh);
        assert_eq!(prr.delivered(), 19);
        assert_eq!(prr.out(), 10);
    }

    /// The same in bytes with a sender that only sends whole segments: the proportional
    /// allowance (half a segment per ACK) accumulates and a segment leaves every other ACK.
    #[test]
    fn bytes_with_whole_segments() {
        let mut prr = Prr::start(20 * MSS);
        let mut pipe = 19 * MSS;
        let mut sent = Vec::new();
        for _ in 0..10 {
            pipe -= MSS;
            prr.on_ack(MSS);
            let n = prr.sndcnt(pipe, 10 * MSS, MSS, MSS) / MSS * MSS;
            prr.on_sent(n);
            pipe += n;
            sent.push(n / MSS);
        }
        assert_eq!(sent, vec![0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
        assert_eq!(pipe, 14 * MSS);
    }

    #[test]
    fn proportional_rounds_up() {
        let mut prr = Prr::start(20_000);
        prr.on_ack(1000);
        // ceil(1000 * 14000 / 20000) = 700
        assert_eq!(prr.sndcnt(19_000, 14_000, MSS, 1000), 700);
        prr.on_sent(700);
        assert_eq!(prr.sndcnt(19_000, 14_000, MSS, 0), 0);
        prr.on_ack(1);
        // ceil(1001 * 14000 / 20000) = ceil(700.7) = 701
        assert_eq!(prr.sndcnt(19_000, 14_000, MSS, 1), 1);
        // Sent more than allowed: zero, not negative.
        prr.on_sent(5000);
        assert_eq!(prr.sndcnt(19_000, 14_000, MSS, 1), 0);
    }

    /// Heavy loss: pipe far below ssthresh. SSRB grows like slow start, one extra MSS per ACK
    /// over what was delivered, and never past ssthresh.
    #[test]
    fn ssrb_after_heavy_loss() {
        let ssthresh = 10 * MSS;
        let mut prr = Prr::start(20 * MSS);
        let mut pipe = 5 * MSS;
        let mut sent = Vec::new();
        for _ in 0..6 {
            pipe -= MSS;
            prr.on_ack(MSS);
            let n = prr.sndcnt(pipe, ssthresh, MSS, MSS);
            prr.on_sent(n);
            pipe += n;
            sent.push(n / MSS);
        }
        // pipe after each ACK: 4+2, 5+2, 6+2, 7+2, 8+2, then 9+1 (capped by ssthresh - pipe).
        assert_eq!(sent, vec![2, 2, 2, 2, 2, 1]);
        assert_eq!(pipe, ssthresh);
        // A stretch ACK delivering 3 MSS allows 3 + 1 when room remains.
        let mut prr = Prr::start(20 * MSS);
        prr.on_ack(3 * MSS);
        assert_eq!(prr.sndcnt(2 * MSS, ssthresh, MSS, 3 * MSS), 4 * MSS);
        // Accumulated unsent credit (prr_delivered - prr_out) counts too.
        let mut prr = Prr::start(20 * MSS);
        prr.on_ack(5 * MSS);
        assert_eq!(prr.sndcnt(2 * MSS, ssthresh, MSS, MSS), 6 * MSS);
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        let mut prr = Prr::start(0);
        prr.on_ack(u32::MAX);
        prr.on_ack(u32::MAX);
        assert_eq!(prr.sndcnt(u32::MAX, 1, 0, 0), u32::MAX);
        assert_eq!(prr.sndcnt(0, u32::MAX, u32::MAX, u32::MAX), u32::MAX);
        prr.on_sent(u32::MAX);
        assert_eq!(prr.sndcnt(5, 5, 0, 0), 0);
    }
}
