//! The key space: byte-string keys to byte-string values with optional expiry times.
//!
//! Time is passed in (`now`, milliseconds of a monotonic clock chosen by the caller): an entry
//! whose `expires_at <= now` is gone. Expired entries are removed lazily when touched, and by
//! [`Store::expire_some`], which walks a list of keys that were given a deadline (Redis samples
//! its `expires` dict; a walk over a list is the sans-IO equivalent without a second map).

use foldhash::fast::RandomState;
use std::collections::HashMap;

/// Milliseconds of the caller's monotonic clock.
pub type Millis = u64;

pub struct Entry {
    pub value: Vec<u8>,
    /// Deadline in ms, or `NO_EXPIRY`.
    expires_at: Millis,
    /// Whether the key is (probably) in `Store::with_ttl`: keeps the list free of duplicates
    /// while the entry lives.
    listed: bool,
}

const NO_EXPIRY: Millis = Millis::MAX;

impl Entry {
    pub fn expires_at(&self) -> Option<Millis> {
        (self.expires_at != NO_EXPIRY).then_some(self.expires_at)
    }
}

#[derive(Default)]
pub struct Store {
    map: HashMap<Box<[u8]>, Entry, RandomState>,
    /// Keys given a deadline, in no order; possibly stale (deleted, persisted): the sweep drops
    /// those it meets.
    with_ttl: Vec<Box<[u8]>>,
    sweep_at: usize,
}

/// A value a reused allocation may keep: shrink when it is far larger than what it holds.
fn assign(dst: &mut Vec<u8>, src: &[u8]) {
    if dst.capacity() > 4 * src.len() + 64 {
        *dst = src.to_vec();
    } else {
        dst.clear();
        dst.extend_from_slice(src);
    }
}

impl Store {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Number of live keys with a deadline (walks the key space: for INFO only).
    pub fn count_expiring(&self, now: Millis) -> usize {
        self.map
            .values()
            .filter(|e| e.expires_at != NO_EXPIRY && e.expires_at > now)
            .count()
    }

    /// The live entry under `key`; an expired one is removed.
    pub fn get(&mut self, now: Millis, key: &[u8]) -> Option<&Entry> {
        self.get_mut(now, key).map(|e| &*e)
    }

    pub fn get_mut(&mut self, now: Millis, key: &[u8]) -> Option<&mut Entry> {
        // Two lookups on the rare expired path keep the common path to one.
        let expired = match self.map.get(key) {
            None => return None,
            Some(e) => e.expires_at <= now,
        };
        if expired {
            self.map.remove(key);
            return None;
        }
        self.map.get_mut(key)
    }

    pub fn contains(&mut self, now: Millis, key: &[u8]) -> bool {
        self.get(now, key).is_some()
    }

    /// Sets `key` to `value`. `expires_at`: `Some(t)` a new deadline, `None` no deadline;
    /// `keep_ttl` keeps an existing key's deadline instead.
    pub fn set(
        &mut self,
        now: Millis,
        key: &[u8],
        value: &[u8],
        expires_at: Option<Millis>,
        keep_ttl: bool,
    ) {
        let deadline = expires_at.unwrap_or(NO_EXPIRY);
        let list = match self.get_mut(now, key) {
            Some(e) => {
                assign(&mut e.value, value);
                if !keep_ttl {
                    e.expires_at = deadline;
                }
                let list = e.expires_at != NO_EXPIRY && !e.listed;
                e.listed |= list;
                list
            }
            None => {
                let list = deadline != NO_EXPIRY;
                self.map.insert(
                    key.into(),
                    Entry {
                        value: value.to_vec(),
                        expires_at: deadline,
                        listed: list,
                    },
                );
                list
            }
        };
        if list {
            self.with_ttl.push(key.into());
        }
    }

    /// Inserts or replaces with an owned value (no deadline): for INCR's result.
    pub fn set_owned(&mut self, now: Millis, key: &[u8], value: Vec<u8>) {
        match self.get_mut(now, key) {
            Some(e) => e.value = value,
            None => {
                self.map.insert(
                    key.into(),
                    Entry {
                        value,
                        expires_at: NO_EXPIRY,
                        listed: false,
                    },
                );
            }
        }
    }

    /// Removes `key`; whether a live key was there.
    pub fn remove(&mut self, now: Millis, key: &[u8]) -> bool {
        match self.map.remove(key) {
            Some(e) => e.expires_at > now,
            None => false,
        }
    }

    /// Gives a live key a deadline (`Some`) or removes its deadline (`None`).
    /// Returns false when there is no such key.
    pub fn set_expiry(&mut self, now: Millis, key: &[u8], expires_at: Option<Millis>) -> bool {
        let Some(e) = self.get_mut(now, key) else {
            return false;
        };
        e.expires_at = expires_at.unwrap_or(NO_EXPIRY);
        let list = e.expires_at != NO_EXPIRY && !e.listed;
        e.listed |= list;
        if list {
            self.with_ttl.push(key.into());
        }
        true
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.with_ttl.clear();
        self.sweep_at = 0;
    }

    /// Active expiry: looks at up to `budget` keys that were given a deadline and removes the
    /// expired ones. Returns how many it removed. Call it from the idle path of the serve loop.
    pub fn expire_some(&mut self, now: Millis, budget: usize) -> usize {
        let mut removed = 0;
        for _ in 0..budget {
            if self.with_ttl.is_empty() {
                break;
            }
            if self.sweep_at >= self.with_ttl.len() {
                self.sweep_at = 0;
            }
            let i = self.sweep_at;
            let drop_from_list = match self.map.get_mut(&self.with_ttl[i]) {
                None => true,
                Some(e) if e.expires_at <= now => {
                    self.map.remove(&self.with_ttl[i]);
                    removed += 1;
                    true
                }
                Some(e) if e.expires_at == NO_EXPIRY => {
                    e.listed = false;
                    true
                }
                Some(_) => false,
            };
            if drop_from_list {
                self.with_ttl.swap_remove(i);
            } else {
                self.sweep_at += 1;
            }
        }
        removed
    }

    #[cfg(test)]
    fn listed_len(&self) -> usize {
        self.with_ttl.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lazy_expiry() {
        let mut s = Store::default();
        s.set(100, b"a", b"1", Some(150), false);
        s.set(100, b"b", b"2", None, false);
        assert_eq!(
            s.get(149, b"a").map(|e| e.value.clone()),
            Some(b"1".to_vec())
        );
        assert!(s.get(150, b"a").is_none());
        assert_eq!(s.len(), 1);
        assert!(s.contains(1_000_000, b"b"));
    }

    #[test]
    fn keep_ttl_and_overwrite() {
        let mut s = Store::default();
        s.set(0, b"k", b"v", Some(50), false);
        s.set(10, b"k", b"w", None, true);
        assert_eq!(s.get(10, b"k").unwrap().expires_at(), Some(50));
        s.set(10, b"k", b"x", None, false);
        assert_eq!(s.get(10, b"k").unwrap().expires_at(), None);
        assert_eq!(s.get(100, b"k").unwrap().value, b"x");
    }

    #[test]
    fn remove_reports_only_live_keys() {
        let mut s = Store::default();
        s.set(0, b"k", b"v", Some(5), false);
        assert!(!s.remove(5, b"k"));
        s.set(0, b"k", b"v", None, false);
        assert!(s.remove(5, b"k"));
        assert!(!s.remove(5, b"k"));
    }

    #[test]
    fn active_expiry_sweeps_and_forgets_stale_entries() {
        let mut s = Store::default();
        for i in 0..100u32 {
            s.set(
                0,
                &i.to_le_bytes(),
                b"v",
                Some(10 + u64::from(i % 2) * 1000),
                false,
            );
        }
        s.set(0, b"forever", b"v", None, false);
        assert_eq!(s.listed_len(), 100);
        let mut removed = 0;
        for _ in 0..10 {
            removed += s.expire_some(20, 16);
        }
        assert_eq!(removed, 50);
        assert_eq!(s.len(), 51);
        assert_eq!(s.listed_len(), 50);
        // Persisted and deleted keys leave the list at the next visit.
        for i in 0..50u32 {
            let k = (i * 2 + 1).to_le_bytes();
            if i % 2 == 0 {
                assert!(s.set_expiry(20, &k, None));
            } else {
                assert!(s.remove(20, &k));
            }
        }
        assert_eq!(s.expire_some(20, 1000), 0);
        assert_eq!(s.listed_len(), 0);
        // A persisted key given a deadline again is listed again.
        assert!(s.set_expiry(20, &1u32.to_le_bytes(), Some(30)));
        assert_eq!(s.listed_len(), 1);
        assert_eq!(s.expire_some(30, 10), 1);
        assert_eq!(s.expire_some(30, 10), 0);
    }

    #[test]
    fn big_values_and_shrinking() {
        let mut s = Store::default();
        let big = vec![7u8; 1 << 20];
        s.set(0, b"k", &big, None, false);
        assert_eq!(s.get(0, b"k").unwrap().value.len(), 1 << 20);
        s.set(0, b"k", b"small", None, false);
        assert!(s.get(0, b"k").unwrap().value.capacity() < 1024);
    }
}
