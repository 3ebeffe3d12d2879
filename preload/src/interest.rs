//! The user-space interest list of one epoll instance, indexed by socket slot, with the queue of
//! entries the next scan must examine.
//!
//! ```text
//!  heads[slot] ──► ents[p] ──next──► ents[q] ──► NONE     (one slot under several fds: dup)
//!  queue: [p, r, ...]   positions to examine next (each at most once: Ent::queued)
//! ```
//!
//! Entries live in a slab (`ents`) whose positions never move while an entry lives, so the queue
//! and the per-slot chains can hold positions. The queue flag belongs to the position, not to the
//! entry: a position freed while queued and reused by a new entry stays queued once, so no scan
//! examines (and reports) one entry twice.
//!
//! What goes into the queue is the caller's business (`epoll.rs`): slots the agent marked
//! changed, entries added or modified, entries that must be looked at again (level-triggered and
//! reported), or everything (`mark_all`). This module only guarantees that each queued position
//! is examined exactly once per [`List::scan`] that reaches it, in queue order, and that positions
//! a scan did not reach (the caller stopped it) stay queued, in front.

/// No position / end of a chain.
const NONE: u32 = u32::MAX;

/// One registration: an offloaded socket under one fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Interest {
    pub(crate) fd: i32,
    /// `HostSock::inc` of the slot when added: the entry lives while that socket does (as long as
    /// any fd refers to it), like a Linux registration keyed by (file, fd).
    pub(crate) inc: u32,
    pub(crate) slot: u32,
    pub(crate) events: u32,
    pub(crate) data: u64,
    /// EPOLLET: fingerprint at the last report (None = report the current level once).
    pub(crate) snap: Option<u64>,
    /// EPOLLONESHOT fired: disabled until EPOLL_CTL_MOD.
    pub(crate) off: bool,
}

struct Ent {
    it: Option<Interest>,
    /// Next position in the chain of `it.slot`.
    next: u32,
    /// The position is in `List::queue`.
    queued: bool,
    /// Queued again by the last scan (a level still reported): it keeps its place ahead of the
    /// entries that changed since, as a reported item goes back to the tail of Linux's ready
    /// list before newer events join it.
    carried: bool,
}

/// What a scan decided about one examined entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing more to do until the slot changes (or the entry is modified).
    Done,
    /// Examine it again at the next scan (level-triggered and reported, or waiting for a claim).
    Again,
    /// The entry no longer names a live socket: remove it.
    Stale,
}

pub(crate) struct List {
    ents: Vec<Ent>,
    free: Vec<u32>,
    len: usize,
    /// First position of each slot's chain (NONE: no entry), grown on demand.
    heads: Vec<u32>,
    queue: Vec<u32>,
    /// Scratch for the next queue (kept to avoid allocating per scan).
    spare: Vec<u32>,
    /// Scratch for ordering the queue: (stamp, position) per queued entry.
    keyed: Vec<(u64, u32)>,
    /// The next scan examines every entry.
    all: bool,
    /// Rotation of full scans, so a small output buffer does not always favour the same entries.
    rr: usize,
}

impl List {
    pub(crate) const fn new() -> List {
        List {
            ents: Vec::new(),
            free: Vec::new(),
            len: 0,
            heads: Vec::new(),
            queue: Vec::new(),
            spare: Vec::new(),
            keyed: Vec::new(),
            all: false,
            rr: 0,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every entry.
    pub(crate) fn clear(&mut self) {
        *self = List::new();
    }

    fn head(&self, slot: u32) -> u32 {
        self.heads.get(slot as usize).copied().unwrap_or(NONE)
    }

    /// Adds an entry (queued: a new registration reports its current level at the next scan).
    pub(crate) fn insert(&mut self, it: Interest) -> u32 {
        let slot = it.slot as usize;
        if self.heads.len() <= slot {
            self.heads.resize(slot + 1, NONE);
        }
        let next = self.heads[slot];
        let p = match self.free.pop() {
            Some(p) => {
                let e = &mut self.ents[p as usize];
                e.it = Some(it);
                e.next = next;
                p
            }
            None => {
                self.ents.push(Ent {
                    it: Some(it),
                    next,
                    queued: false,
                    carried: false,
                });
                (self.ents.len() - 1) as u32
            }
        };
        self.heads[slot] = p;
        self.len += 1;
        self.enqueue(p);
        p
    }

    /// Removes the entry at `p` and returns it.
    pub(crate) fn remove(&mut self, p: u32) -> Option<Interest> {
        let it = self.ents.get_mut(p as usize)?.it.take()?;
        let next = self.ents[p as usize].next;
        let mut cur = self.head(it.slot);
        if cur == p {
            self.heads[it.slot as usize] = next;
        } else {
            while cur != NONE {
                let n = self.ents[cur as usize].next;
                if n == p {
                    self.ents[cur as usize].next = next;
                    break;
                }
                cur = n;
            }
        }
        self.ents[p as usize].next = NONE;
        self.free.push(p);
        self.len -= 1;
        Some(it)
    }

    pub(crate) fn get(&self, p: u32) -> Option<&Interest> {
        self.ents.get(p as usize)?.it.as_ref()
    }

    pub(crate) fn get_mut(&mut self, p: u32) -> Option<&mut Interest> {
        self.ents.get_mut(p as usize)?.it.as_mut()
    }

    /// Positions of the entries of `slot`.
    pub(crate) fn chain(&self, slot: u32) -> impl Iterator<Item = u32> + '_ {
        let mut cur = self.head(slot);
        core::iter::from_fn(move || {
            if cur == NONE {
                return None;
            }
            let p = cur;
            cur = self.ents[p as usize].next;
            Some(p)
        })
    }

    /// Some entry names `slot`.
    pub(crate) fn has_slot(&self, slot: u32) -> bool {
        self.head(slot) != NONE
    }

    /// Every live entry with its position.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &Interest)> + '_ {
        self.ents
            .iter()
            .enumerate()
            .filter_map(|(p, e)| e.it.as_ref().map(|it| (p as u32, it)))
    }

    /// Every live entry, mutably.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Interest> + '_ {
        self.ents.iter_mut().filter_map(|e| e.it.as_mut())
    }

    /// The position of the entry (fd, slot, inc).
    pub(crate) fn find(&self, fd: i32, slot: u32, inc: u32) -> Option<u32> {
        self.chain(slot)
            .find(|&p| self.get(p).is_some_and(|it| it.fd == fd && it.inc == inc))
    }

    /// The next scan examines `p`.
    pub(crate) fn enqueue(&mut self, p: u32) {
        if let Some(e) = self.ents.get_mut(p as usize) {
            if !e.queued {
                e.queued = true;
                e.carried = false;
                self.queue.push(p);
            }
        }
    }

    /// The next scan examines every entry of `slot`.
    pub(crate) fn mark_slot(&mut self, slot: u32) {
        let mut cur = self.head(slot);
        while cur != NONE {
            let e = &mut self.ents[cur as usize];
            if !e.queued {
                e.queued = true;
                e.carried = false;
                self.queue.push(cur);
            }
            cur = e.next;
        }
    }

    /// Puts the queued entries that changed since the last scan (newly marked, added or
    /// modified) in the order of `stamp(slot)`, the order in which their sockets' changes arose;
    /// entries of equal stamps keep their order. Entries the last scan queued again (a level
    /// still reported) stay ahead, in their order, as reported items go back to the tail of
    /// Linux's ready list before newer events join it (so `maxevents` 1 rotates among them).
    pub(crate) fn order_queue(&mut self, stamp: impl Fn(u32) -> u64) {
        if self.queue.len() < 2 {
            return;
        }
        let mut keyed = core::mem::take(&mut self.keyed);
        keyed.clear();
        for (i, &p) in self.queue.iter().enumerate() {
            let e = &self.ents[p as usize];
            let k = match &e.it {
                Some(_) if e.carried => 0,
                Some(it) => stamp(it.slot).saturating_add(1),
                None => 0,
            };
            keyed.push((k, i as u32));
        }
        // Usually already in order (one change per scan, or changes that came in slot order):
        // then the queue stays as it is.
        if keyed.windows(2).all(|w| w[0].0 <= w[1].0) {
            self.keyed = keyed;
            return;
        }
        keyed.sort_unstable();
        let mut q = core::mem::take(&mut self.spare);
        q.clear();
        q.extend(keyed.iter().map(|&(_, i)| self.queue[i as usize]));
        self.spare = core::mem::replace(&mut self.queue, q);
        self.keyed = keyed;
    }

    /// The next scan examines everything (the changed-slot bitmap cannot be trusted).
    pub(crate) fn mark_all(&mut self) {
        self.all = true;
    }

    /// Positions queued now.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> impl Iterator<Item = u32> + '_ {
        self.queue.iter().copied()
    }

    /// Whether the next scan examines everything.
    #[cfg(test)]
    pub(crate) fn all_marked(&self) -> bool {
        self.all
    }

    /// Examines the queued entries in order. `visit` returns its verdict and whether to stop
    /// (e.g. the output buffer is full); entries not reached stay queued, ahead of those
    /// `visit` asked to see `Again`. `gone(slot)` is called after a stale entry was removed and
    /// no other entry of this list names its slot.
    pub(crate) fn scan(
        &mut self,
        mut visit: impl FnMut(&mut Interest) -> (Verdict, bool),
        mut gone: impl FnMut(u32),
    ) {
        if core::mem::take(&mut self.all) && !self.ents.is_empty() {
            let n = self.ents.len();
            let start = self.rr % n;
            self.rr = self.rr.wrapping_add(1);
            for j in 0..n {
                let p = ((start + j) % n) as u32;
                if self.ents[p as usize].it.is_some() {
                    self.enqueue(p);
                }
            }
        }
        let mut queue = core::mem::take(&mut self.queue);
        let mut again = core::mem::take(&mut self.spare);
        again.clear();
        let mut reached = queue.len();
        for (i, &p) in queue.iter().enumerate() {
            let e = &mut self.ents[p as usize];
            e.queued = false;
            let Some(it) = e.it.as_mut() else { continue };
            let (v, stop) = visit(it);
            match v {
                Verdict::Done => {}
                Verdict::Again => {
                    e.carried = true;
                    again.push(p);
                }
                Verdict::Stale => {
                    if let Some(old) = self.remove(p) {
                        if !self.has_slot(old.slot) {
                            gone(old.slot);
                        }
                    }
                }
            }
            if stop {
                reached = i + 1;
                break;
            }
        }
        // Next queue: the unreached rest, then the entries to see again.
        queue.drain(..reached);
        for &p in &again {
            if let Some(e) = self.ents.get_mut(p as usize) {
                if !e.queued && e.it.is_some() {
                    e.queued = true;
                    queue.push(p);
                }
            }
        }
        again.clear();
        self.spare = again;
        self.queue = queue;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn it(fd: i32, slot: u32) -> Interest {
        Interest {
            fd,
            inc: 1,
            slot,
            events: 0,
            data: fd as u64,
            snap: None,
            off: false,
        }
    }

    /// Runs a scan that records the fds it saw and answers from `f`.
    fn scan(l: &mut List, mut f: impl FnMut(&Interest) -> (Verdict, bool)) -> Vec<i32> {
        let mut seen = Vec::new();
        l.scan(
            |i| {
                seen.push(i.fd);
                f(i)
            },
            |_| {},
        );
        seen
    }

    #[test]
    fn the_queue_goes_in_the_order_readiness_arose() {
        let mut l = List::new();
        for (fd, slot) in [(10, 0), (11, 1), (12, 2), (13, 3)] {
            l.insert(it(fd, slot));
        }
        // Slot 3 changed first, then 1, then 0; slot 2 (stamp 0) was ready before all of them.
        let stamp = |slot: u32| [30, 20, 0, 10][slot as usize];
        l.order_queue(stamp);
        assert_eq!(scan(&mut l, |_| (Verdict::Again, false)), [12, 13, 11, 10]);
        // The level-triggered entries come back in the same order, ahead of a socket that
        // became ready since, whatever the stamps now say.
        l.insert(it(14, 4));
        l.order_queue(|slot| 100 - u64::from(slot));
        assert_eq!(
            scan(&mut l, |_| (Verdict::Done, false)),
            [12, 13, 11, 10, 14]
        );
    }

    #[test]
    fn new_entries_are_examined_once_then_only_when_marked() {
        let mut l = List::new();
        for fd in 10..20 {
            l.insert(it(fd, fd as u32));
        }
        assert_eq!(l.len(), 10);
        assert_eq!(
            scan(&mut l, |_| (Verdict::Done, false)),
            (10..20).collect::<Vec<_>>()
        );
        assert!(scan(&mut l, |_| (Verdict::Done, false)).is_empty());
        l.mark_slot(13);
        l.mark_slot(17);
        l.mark_slot(13);
        l.mark_slot(999);
        assert_eq!(scan(&mut l, |_| (Verdict::Done, false)), vec![13, 17]);
        assert!(scan(&mut l, |_| (Verdict::Done, false)).is_empty());
    }

    #[test]
    fn again_entries_come_back_until_done() {
        let mut l = List::new();
        for fd in 0..5 {
            l.insert(it(fd, fd as u32));
        }
        let first = scan(&mut l, |i| {
            let v = if i.fd == 2 {
                Verdict::Again
            } else {
                Verdict::Done
            };
            (v, false)
        });
        assert_eq!(first.len(), 5);
        assert_eq!(scan(&mut l, |_| (Verdict::Again, false)), vec![2]);
        assert_eq!(scan(&mut l, |_| (Verdict::Done, false)), vec![2]);
        assert!(scan(&mut l, |_| (Verdict::Done, false)).is_empty());
    }

    #[test]
    fn stopped_scan_keeps_the_rest_in_front() {
        let mut l = List::new();
        for fd in 0..6 {
            l.insert(it(fd, fd as u32));
        }
        // Room for two per scan; everything is level-ready.
        let take2 = |l: &mut List| {
            let mut n = 0;
            scan(l, |_| {
                n += 1;
                (Verdict::Again, n == 2)
            })
        };
        assert_eq!(take2(&mut l), vec![0, 1]);
        assert_eq!(take2(&mut l), vec![2, 3]);
        assert_eq!(take2(&mut l), vec![4, 5]);
        assert_eq!(take2(&mut l), vec![0, 1]);
    }

    #[test]
    fn dup_fds_share_a_slot_chain_and_removal_unlinks() {
        let mut l = List::new();
        let a = l.insert(it(3, 7));
        let b = l.insert(it(4, 7));
        let c = l.insert(it(5, 7));
        l.insert(it(6, 8));
        scan(&mut l, |_| (Verdict::Done, false));
        assert_eq!(l.chain(7).count(), 3);
        assert_eq!(l.find(4, 7, 1), Some(b));
        assert_eq!(l.find(4, 7, 2), None);
        assert_eq!(l.find(4, 8, 1), None);
        l.mark_slot(7);
        let mut seen = scan(&mut l, |_| (Verdict::Done, false));
        seen.sort_unstable();
        assert_eq!(seen, vec![3, 4, 5]);
        assert_eq!(l.remove(b).map(|i| i.fd), Some(4));
        assert_eq!(l.remove(b), None);
        assert_eq!(l.chain(7).collect::<Vec<_>>().len(), 2);
        assert_eq!(l.remove(c).map(|i| i.fd), Some(5));
        assert_eq!(l.remove(a).map(|i| i.fd), Some(3));
        assert!(!l.has_slot(7));
        assert!(l.has_slot(8));
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn a_position_reused_while_queued_is_examined_once() {
        let mut l = List::new();
        let a = l.insert(it(3, 1));
        assert!(l.remove(a).is_some());
        // The freed position is still queued; the new entry takes it and must not be queued twice.
        let b = l.insert(it(9, 2));
        assert_eq!(a, b);
        assert_eq!(l.queued().count(), 1);
        assert_eq!(scan(&mut l, |_| (Verdict::Again, false)), vec![9]);
        l.mark_slot(2);
        assert_eq!(scan(&mut l, |_| (Verdict::Again, false)), vec![9]);
    }

    #[test]
    fn stale_entries_are_removed_and_reported_when_their_slot_empties() {
        let mut l = List::new();
        l.insert(it(3, 1));
        l.insert(it(4, 1));
        l.insert(it(5, 2));
        let mut gone = Vec::new();
        l.scan(
            |i| {
                (
                    if i.fd != 5 {
                        Verdict::Stale
                    } else {
                        Verdict::Done
                    },
                    false,
                )
            },
            |s| gone.push(s),
        );
        assert_eq!(gone, vec![1]);
        assert_eq!(l.len(), 1);
        assert!(!l.has_slot(1));
    }

    #[test]
    fn mark_all_examines_everything_once() {
        let mut l = List::new();
        for fd in 0..4 {
            l.insert(it(fd, fd as u32));
        }
        scan(&mut l, |_| (Verdict::Done, false));
        l.mark_slot(2);
        l.mark_all();
        assert!(l.all_marked());
        let mut seen = scan(&mut l, |_| (Verdict::Done, false));
        seen.sort_unstable();
        assert_eq!(seen, vec![0, 1, 2, 3]);
        assert!(!l.all_marked());
        assert!(scan(&mut l, |_| (Verdict::Done, false)).is_empty());
    }

    #[test]
    fn random_operations_keep_chains_and_queue_consistent() {
        // A small deterministic generator (no dependency): xorshift.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut l = List::new();
        let mut model: Vec<(u32, Interest)> = Vec::new();
        for step in 0..20_000 {
            match rnd(5) {
                0 | 1 => {
                    let i = it(step, rnd(50) as u32);
                    let p = l.insert(i);
                    model.push((p, i));
                }
                2 if !model.is_empty() => {
                    let k = rnd(model.len() as u64) as usize;
                    let (p, i) = model.swap_remove(k);
                    assert_eq!(l.remove(p), Some(i));
                }
                3 => l.mark_slot(rnd(50) as u32),
                _ => {
                    let mut seen = Vec::new();
                    l.scan(
                        |i| {
                            seen.push(i.fd);
                            (Verdict::Done, false)
                        },
                        |_| {},
                    );
                    let n = seen.len();
                    seen.sort_unstable();
                    seen.dedup();
                    assert_eq!(seen.len(), n, "an entry examined twice in one scan");
                }
            }
            assert_eq!(l.len(), model.len());
        }
        for s in 0..50 {
            let mut a: Vec<u32> = l.chain(s).collect();
            let mut b: Vec<u32> = model
                .iter()
                .filter(|m| m.1.slot == s)
                .map(|m| m.0)
                .collect();
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b);
        }
    }
}
