//! The neighbour cache (ARP for IPv4, NDP for IPv6): next-hop IP to MAC, with the frames that
//! wait for a resolution. Entries learnt from requests and replies addressed to us live 60 s
//! (refreshed by traffic from the peer); a resolution is asked again at most once a second; at
//! most [`MAX_PENDING`] frames wait per next hop (older ones are dropped: TCP retransmits).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use crate::frame::TxMeta;
use crate::time::Instant;
use core::time::Duration;

pub const MAX_PENDING: usize = 256;
const LIFETIME: Duration = Duration::from_secs(60);
const RETRY: Duration = Duration::from_secs(1);

struct Entry {
    mac: Option<[u8; 6]>,
    expires: Instant,
    asked: Option<Instant>,
    pending: VecDeque<(Vec<u8>, TxMeta)>,
}

#[derive(Default)]
pub struct Neighbors {
    map: HashMap<IpAddr, Entry>,
}

/// What to do with a frame for a next hop.
pub enum Resolve {
    Mac([u8; 6]),
    /// Queued; send a request now.
    QueuedAsk,
    /// Queued; a request is already out.
    Queued,
}

impl Neighbors {
    /// The MAC of a usable (resolved, unexpired) entry for `ip`, without side effects: no
    /// entry is made, nothing is queued or solicited (what [`Neighbors::resolve`] does for
    /// the rest). A frame built straight in device memory (crate::writer) goes only here.
    pub fn lookup(&self, ip: &IpAddr, now: Instant) -> Option<[u8; 6]> {
        self.map
            .get(ip)
            .filter(|e| e.expires > now)
            .and_then(|e| e.mac)
    }

    /// Resolves `ip` for `frame` (Ethernet header still to fill in): the MAC, or the frame is
    /// queued until [`Neighbors::learn`] answers. A dropped overflow buffer goes to `spill`.
    pub fn resolve(
        &mut self,
        ip: IpAddr,
        frame: (Vec<u8>, TxMeta),
        now: Instant,
        spill: &mut Vec<Vec<u8>>,
    ) -> (Resolve, Option<(Vec<u8>, TxMeta)>) {
        let e = self.map.entry(ip).or_insert_with(|| Entry {
            mac: None,
            expires: Instant::ZERO,
            asked: None,
            pending: VecDeque::new(),
        });
        if let Some(mac) = e.mac.filter(|_| e.expires > now) {
            return (Resolve::Mac(mac), Some(frame));
        }
        if e.pending.len() >= MAX_PENDING {
            if let Some((b, _)) = e.pending.pop_front() {
                spill.push(b);
            }
        }
        e.pending.push_back(frame);
        if e.asked.map_or(true, |t| now >= t + RETRY) {
            e.asked = Some(now);
            (Resolve::QueuedAsk, None)
        } else {
            (Resolve::Queued, None)
        }
    }

    /// Records `ip` at `mac`; returns the frames that waited for it.
    pub fn learn(&mut self, ip: IpAddr, mac: [u8; 6], now: Instant) -> VecDeque<(Vec<u8>, TxMeta)> {
        let e = self.map.entry(ip).or_insert_with(|| Entry {
            mac: None,
            expires: Instant::ZERO,
            asked: None,
            pending: VecDeque::new(),
        });
        e.mac = Some(mac);
        e.expires = now + LIFETIME;
        e.asked = None;
        std::mem::take(&mut e.pending)
    }

    /// Refreshes an entry the peer just proved alive (a frame from it).
    pub fn confirm(&mut self, ip: &IpAddr, mac: [u8; 6], now: Instant) {
        if let Some(e) = self.map.get_mut(ip) {
            if e.mac == Some(mac) {
                e.expires = now + LIFETIME;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_then_learn() {
        let mut n = Neighbors::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t = Instant::from_millis(1);
        let mut spill = Vec::new();
        let (r, f) = n.resolve(ip, (vec![1], TxMeta::default()), t, &mut spill);
        assert!(matches!(r, Resolve::QueuedAsk) && f.is_none());
        let (r, _) = n.resolve(ip, (vec![2], TxMeta::default()), t, &mut spill);
        assert!(matches!(r, Resolve::Queued));
        let q = n.learn(ip, [2; 6], t);
        assert_eq!(q.len(), 2);
        assert_eq!(n.lookup(&ip, t), Some([2; 6]));
        assert_eq!(n.lookup(&ip, t + Duration::from_secs(61)), None);
        // A second request after a second.
        let t2 = t + Duration::from_secs(62);
        let (r, _) = n.resolve(ip, (vec![3], TxMeta::default()), t2, &mut spill);
        assert!(matches!(r, Resolve::QueuedAsk));
    }
}
