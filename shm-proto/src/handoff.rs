//! Accept handoff: connections the agent hands to a listener's binding before the host asks.
//!
//! A listener's slot never carries payload, so its RX stream carries *handoff records* instead:
//! each names a connection the agent already accepted and bound to a new slot of the same
//! session, with its peer address. The host's `accept` takes the oldest record with a
//! compare-and-swap on the stream's head and has a connected socket without a round trip; only
//! when no record is there does it ask the agent (`OP_ACCEPT`). The agent (the only producer)
//! writes records at its own tail and publishes it as for payload.
//!
//! Several consumers may race for one record: the host's threads (one listener fd, several
//! acceptors) and the agent itself, which takes records back when they wait too long or the
//! listener closes ([`withdraw`]). Each consumer copies the record at the head it read and keeps
//! it only if its CAS from that head wins; a record cannot be rewritten while it is unconsumed, so
//! the winner's copy is the record (a loser's copy may be torn and is dropped unread).
//!
//! Records are [`RECORD`] bytes and the producer only writes whole ones, so `tail - head` is a
//! multiple of [`RECORD`] unless a side scribbled on the indices: that is [`Corrupt`].

use crate::addr::WireAddr;
use crate::stream::Stream;
use crate::Corrupt;

/// Bytes of one record: the connection's slot (u32, native order) and its peer address.
pub const RECORD: u32 = 32;

/// One handed-off connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handoff {
    /// The connection's slot in the listener's session.
    pub slot: u32,
    pub peer: WireAddr,
}

impl Handoff {
    pub fn encode(&self) -> [u8; RECORD as usize] {
        let mut b = [0u8; RECORD as usize];
        b[..4].copy_from_slice(&self.slot.to_ne_bytes());
        b[4..].copy_from_slice(&self.peer.encode());
        b
    }

    pub fn decode(b: &[u8; RECORD as usize]) -> Self {
        Handoff {
            slot: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            peer: WireAddr::decode(&b[4..]),
        }
    }
}

/// Records waiting between the consumers' head and the producer's `tail` (validated).
pub fn pending(rx: &Stream, tail: u32) -> Result<u32, Corrupt> {
    let n = rx.used(rx.load_head(), tail)?;
    if n % RECORD != 0 {
        return Err(Corrupt("handoff stream not in whole records"));
    }
    Ok(n / RECORD)
}

/// Producer (agent): appends `h` at `*tail` and publishes it. False when the stream is full.
pub fn push(rx: &Stream, tail: &mut u32, h: &Handoff) -> Result<bool, Corrupt> {
    if rx.writable(*tail)? < RECORD {
        return Ok(false);
    }
    rx.copy_in(*tail, &h.encode());
    *tail = tail.wrapping_add(RECORD);
    rx.publish_tail(*tail);
    Ok(true)
}

/// Consumer (host `accept`, or the agent taking one back): the oldest record, removed for this
/// caller only; `None` when there is none. Retries while other consumers win the race.
pub fn take(rx: &Stream) -> Result<Option<Handoff>, Corrupt> {
    loop {
        let head = rx.load_head();
        let n = match rx.readable(head) {
            Ok(n) => n,
            // Other consumers took records and the producer refilled the ring between our two
            // loads: the head we hold is stale, not the indices corrupt. Only a head that stayed
            // put while the tail is more than a ring ahead is corruption.
            Err(_) if rx.load_head() != head => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(None);
        }
        if n % RECORD != 0 {
            return Err(Corrupt("handoff stream not in whole records"));
        }
        let mut b = [0u8; RECORD as usize];
        rx.copy_out(head, &mut b);
        if rx.cas_head(head, head.wrapping_add(RECORD)) {
            return Ok(Some(Handoff::decode(&b)));
        }
    }
}

/// Producer taking every waiting record back (the listener closes, or they waited too long):
/// `f` gets the stream index and the bytes of each one this call removed (a producer that
/// keeps its own list of what it wrote goes by the index). A host `accept` racing with it gets each record at most
/// once: whoever wins the head's CAS.
pub fn withdraw(rx: &Stream, tail: u32, mut f: impl FnMut(u32, Handoff)) -> Result<(), Corrupt> {
    loop {
        let head = rx.load_head();
        let n = rx.used(head, tail)?;
        if n == 0 {
            return Ok(());
        }
        if n % RECORD != 0 {
            return Err(Corrupt("handoff stream not in whole records"));
        }
        let mut b = [0u8; RECORD as usize];
        rx.copy_out(head, &mut b);
        if rx.cas_head(head, head.wrapping_add(RECORD)) {
            f(head, Handoff::decode(&b));
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::layout::Producer;
    use crate::primitive::AtomicU32;
    use core::net::SocketAddr;

    struct Ring {
        buf: Vec<u8>,
        prod: Producer,
        head: AtomicU32,
    }

    impl Ring {
        fn new(size: usize) -> Box<Ring> {
            Box::new(Ring {
                buf: vec![0; size],
                prod: Producer::default(),
                head: AtomicU32::new(0),
            })
        }

        fn stream(&mut self) -> Stream {
            let size = self.buf.len() as u32;
            // SAFETY: the boxed ring outlives every view the test makes of it.
            unsafe { Stream::new(self.buf.as_mut_ptr(), size, &self.prod, &self.head) }
        }
    }

    fn rec(slot: u32) -> Handoff {
        let a: SocketAddr = format!("10.0.0.{}:{}", slot % 250, 1000 + slot % 60_000)
            .parse()
            .unwrap();
        Handoff {
            slot,
            peer: a.into(),
        }
    }

    #[test]
    fn records_round_trip_in_order_until_full() {
        let mut r = Ring::new(128);
        let rx = r.stream();
        let mut tail = 0;
        for i in 0..4 {
            assert!(push(&rx, &mut tail, &rec(i)).unwrap());
        }
        assert!(
            !push(&rx, &mut tail, &rec(9)).unwrap(),
            "a fifth record fits nowhere"
        );
        assert_eq!(pending(&rx, tail), Ok(4));
        assert_eq!(take(&rx).unwrap(), Some(rec(0)));
        assert_eq!(take(&rx).unwrap(), Some(rec(1)));
        // Wraps past the end of the ring.
        assert!(push(&rx, &mut tail, &rec(4)).unwrap());
        let mut back = Vec::new();
        withdraw(&rx, tail, |_, h| back.push(h.slot)).unwrap();
        assert_eq!(back, [2, 3, 4]);
        assert_eq!(take(&rx).unwrap(), None);
        assert_eq!(pending(&rx, tail), Ok(0));
        // Empty again: the next record lands at offset 0.
        assert!(push(&rx, &mut tail, &rec(5)).unwrap());
        assert_eq!(&r.buf[..4], &5u32.to_ne_bytes());
    }

    #[test]
    fn scribbled_indices_are_corrupt() {
        let mut r = Ring::new(128);
        let rx = r.stream();
        let mut tail = 0;
        push(&rx, &mut tail, &rec(1)).unwrap();
        rx.publish_head(8);
        assert!(pending(&rx, tail).is_err());
        assert!(take(&rx).is_err());
        assert!(withdraw(&rx, tail, |_, _| {}).is_err());
        rx.publish_head(tail.wrapping_add(64));
        assert!(pending(&rx, tail).is_err());
    }

    #[test]
    fn racing_consumers_get_each_record_once() {
        let mut r = Ring::new(1 << 12);
        let rx = r.stream();
        let total = 20_000u32;
        let got: Vec<Vec<u32>> = std::thread::scope(|sc| {
            let takers: Vec<_> = (0..3)
                .map(|_| {
                    sc.spawn(move || {
                        let mut v = Vec::new();
                        let mut idle = 0;
                        while idle < 2_000_000 {
                            match take(&rx).unwrap() {
                                Some(h) if h.slot == u32::MAX => break,
                                Some(h) => {
                                    assert_eq!(h, rec(h.slot), "a torn record was kept");
                                    v.push(h.slot);
                                    idle = 0;
                                }
                                None => {
                                    idle += 1;
                                    std::hint::spin_loop();
                                }
                            }
                        }
                        v
                    })
                })
                .collect();
            let mut tail = 0;
            let mut mine = Vec::new();
            for i in 0..total {
                while !push(&rx, &mut tail, &rec(i)).unwrap() {
                    std::hint::spin_loop();
                }
                if i % 97 == 0 {
                    withdraw(&rx, tail, |_, h| mine.push(h.slot)).unwrap();
                }
            }
            for _ in 0..3 {
                while !push(&rx, &mut tail, &rec(u32::MAX)).unwrap() {
                    std::hint::spin_loop();
                }
            }
            let mut all: Vec<Vec<u32>> = takers.into_iter().map(|t| t.join().unwrap()).collect();
            withdraw(&rx, tail, |_, h| mine.push(h.slot)).unwrap();
            mine.retain(|&s| s != u32::MAX);
            all.push(mine);
            all
        });
        let mut seen: Vec<u32> = got.into_iter().flatten().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..total).collect::<Vec<_>>());
    }
}
