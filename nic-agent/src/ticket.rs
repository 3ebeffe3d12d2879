//! Fork tickets, sans I/O: the references a forking process hands to its child.
//!
//! ```text
//!  parent: OP_FORK        -> ticket {secret, parent pid/uid, (slot, socket) for every slot}
//!          fork()
//!  parent: OP_FORK_CHILD  -> ticket.child_pid = pid (and the agent watches it with a pidfd)
//!  child:  HELLO_ATTACH_CHILD(secret) on a new control connection
//!          -> claim_allowed(): same uid, and the recorded child (or, before OP_FORK_CHILD
//!             arrived, a process whose parent is the ticket's parent)
//!          -> a session whose slots carry the same numbers, bound to the same sockets
//! ```
//!
//! Each ticket holds one reference on each of its sockets until it is claimed (the references
//! become the child's bindings), expires ([`TICKET_TTL`]), or its child exits unclaimed.
//! The secret alone never suffices: it sits in memory the child inherited, but a process that is
//! not that child must not get another process's sockets.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::session::Errno;

/// An unclaimed ticket is dropped this long after `OP_FORK`.
pub const TICKET_TTL: Duration = Duration::from_secs(60);
/// Live tickets one session may hold (each pins every socket of the session).
pub const MAX_TICKETS_PER_SESSION: usize = 64;

#[derive(Debug)]
pub struct Ticket<Id> {
    pub id: u64,
    pub secret: u64,
    pub parent_sid: u32,
    pub parent_pid: i32,
    pub uid: u32,
    /// Set by `OP_FORK_CHILD`.
    pub child_pid: Option<i32>,
    /// Slot numbers of the parent and the sockets they named at `OP_FORK`.
    pub slots: Vec<(u32, Id)>,
    pub deadline: Instant,
}

/// Is the process `pid`/`uid` (from `SO_PEERCRED`) the one this ticket is for? `ppid` reads the
/// claimant's parent pid (`/proc/<pid>/stat`) and is only consulted when no child was recorded.
pub fn claim_allowed<Id>(
    t: &Ticket<Id>,
    pid: i32,
    uid: u32,
    ppid: impl FnOnce() -> Option<i32>,
) -> Result<(), Errno> {
    if uid != t.uid {
        return Err(libc::EPERM);
    }
    let ok = match t.child_pid {
        Some(child) => child == pid,
        None => ppid() == Some(t.parent_pid),
    };
    if ok {
        Ok(())
    } else {
        Err(libc::EPERM)
    }
}

/// A refused `create`: the errno, and the slots handed back.
pub type Refused<Id> = (Errno, Vec<(u32, Id)>);

/// Live tickets of all sessions.
#[derive(Debug)]
pub struct Tickets<Id> {
    map: BTreeMap<u64, Ticket<Id>>,
    next_id: u64,
}

impl<Id> Default for Tickets<Id> {
    fn default() -> Self {
        Tickets {
            map: BTreeMap::new(),
            next_id: 1,
        }
    }
}

impl<Id> Tickets<Id> {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn count_for(&self, sid: u32) -> usize {
        self.map.values().filter(|t| t.parent_sid == sid).count()
    }

    /// Creates a ticket. `secret` must come from a good random source; 0 and secrets already in
    /// use are refused with EAGAIN (the caller draws again). ENOMEM past the per-session cap.
    pub fn create(
        &mut self,
        secret: u64,
        parent_sid: u32,
        parent_pid: i32,
        uid: u32,
        slots: Vec<(u32, Id)>,
        now: Instant,
    ) -> Result<&Ticket<Id>, Refused<Id>> {
        if self.count_for(parent_sid) >= MAX_TICKETS_PER_SESSION {
            return Err((libc::ENOMEM, slots));
        }
        if secret == 0 || self.find(secret).is_some() {
            return Err((libc::EAGAIN, slots));
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let t = Ticket {
            id,
            secret,
            parent_sid,
            parent_pid,
            uid,
            child_pid: None,
            slots,
            deadline: now + TICKET_TTL,
        };
        Ok(self.map.entry(id).or_insert(t))
    }

    /// The ticket with this secret.
    pub fn find(&self, secret: u64) -> Option<u64> {
        if secret == 0 {
            return None;
        }
        self.map.values().find(|t| t.secret == secret).map(|t| t.id)
    }

    pub fn get(&self, id: u64) -> Option<&Ticket<Id>> {
        self.map.get(&id)
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Ticket<Id>> {
        self.map.get_mut(&id)
    }

    pub fn remove(&mut self, id: u64) -> Option<Ticket<Id>> {
        self.map.remove(&id)
    }

    /// Tickets past their deadline.
    pub fn expired(&self, now: Instant) -> Vec<u64> {
        self.map
            .values()
            .filter(|t| t.deadline <= now)
            .map(|t| t.id)
            .collect()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.map.values().map(|t| t.deadline).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_find_cap_and_expiry() {
        let now = Instant::now();
        let mut t: Tickets<u32> = Tickets::default();
        let id = t.create(7, 1, 100, 1000, vec![(0, 5)], now).unwrap().id;
        assert_eq!(t.find(7), Some(id));
        assert_eq!(t.find(8), None);
        assert_eq!(t.find(0), None);
        assert_eq!(
            t.create(7, 1, 100, 1000, vec![], now).map(|_| ()),
            Err((libc::EAGAIN, vec![]))
        );
        assert_eq!(
            t.create(0, 1, 100, 1000, vec![], now).map(|_| ()),
            Err((libc::EAGAIN, vec![]))
        );
        for i in 1..MAX_TICKETS_PER_SESSION as u64 {
            t.create(100 + i, 1, 100, 1000, vec![], now).unwrap();
        }
        assert_eq!(t.count_for(1), MAX_TICKETS_PER_SESSION);
        assert_eq!(
            t.create(5000, 1, 100, 1000, vec![(3, 9)], now).map(|_| ()),
            Err((libc::ENOMEM, vec![(3, 9)]))
        );
        // Another session is not limited by the first one's tickets.
        assert!(t.create(5000, 2, 200, 1000, vec![], now).is_ok());
        assert!(t.expired(now).is_empty());
        assert_eq!(t.expired(now + TICKET_TTL).len(), t.len());
        assert_eq!(t.next_deadline(), Some(now + TICKET_TTL));
        let tk = t.remove(id).unwrap();
        assert_eq!(tk.slots, vec![(0, 5)]);
        assert_eq!(t.find(7), None);
    }

    #[test]
    fn claims_need_the_child() {
        let now = Instant::now();
        let mut ts: Tickets<u32> = Tickets::default();
        let id = ts.create(9, 1, 100, 1000, vec![], now).unwrap().id;
        let t = ts.get(id).unwrap();
        // Before OP_FORK_CHILD: any process of the uid whose parent is the ticket's parent.
        assert_eq!(claim_allowed(t, 101, 1000, || Some(100)), Ok(()));
        assert_eq!(claim_allowed(t, 101, 1000, || Some(1)), Err(libc::EPERM));
        assert_eq!(claim_allowed(t, 101, 1000, || None), Err(libc::EPERM));
        assert_eq!(claim_allowed(t, 101, 0, || Some(100)), Err(libc::EPERM));
        ts.get_mut(id).unwrap().child_pid = Some(101);
        let t = ts.get(id).unwrap();
        assert_eq!(claim_allowed(t, 101, 1000, || None), Ok(()));
        // A sibling (same parent) is not the recorded child.
        assert_eq!(claim_allowed(t, 102, 1000, || Some(100)), Err(libc::EPERM));
        assert_eq!(claim_allowed(t, 101, 1001, || None), Err(libc::EPERM));
    }
}
