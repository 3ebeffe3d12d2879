//! Files the agent may read by reference: `sendfile` on an offloaded socket posts `OP_TX_FILE`
//! (file, offset, length, place in the TX stream) instead of copying the bytes into the stream,
//! when the agent offers it (`FEAT_FILE_REFS`: its backend sends from the file itself, the
//! kernel's `sendfile` on the SoC; docs/channel.md, *Files by reference*).
//!
//! A file is opened with the agent once (`OP_FILE_OPEN`, one round trip: the agent takes its own
//! reference to the process's open file and checks it is the `st_dev`/`st_ino` we name) and
//! known by id afterwards. This cache maps `(st_dev, st_ino)` to that id, so a server that opens
//! the same file per request (nginx without `open_file_cache`) pays the round trip once. A
//! file the agent refused is remembered as refused. The least recently used entry makes room
//! (its id is closed with `OP_FILE_CLOSE`; references already queued keep the agent's file open).
//!
//! The cache belongs to one channel (`Channel::file_id` asks the agent through it): a forked
//! child attaches its own and starts empty.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::util::SpinMutex;

/// Files remembered per process (the agent allows `shm_proto::MAX_FILES`).
const ENTRIES: usize = 64;

#[derive(Clone, Copy)]
struct Entry {
    dev: u64,
    ino: u64,
    /// The agent's id, or `None` when the agent refused this file.
    id: Option<u32>,
    /// Last use (0 = empty).
    used: u64,
}

const EMPTY: Entry = Entry {
    dev: 0,
    ino: 0,
    id: None,
    used: 0,
};

pub(crate) struct Files {
    table: SpinMutex<([Entry; ENTRIES], u64)>,
    /// Off for the rest of the process: the agent cannot take files from us at all.
    off: AtomicBool,
}

impl Files {
    pub(crate) fn new() -> Files {
        Files {
            table: SpinMutex::new(([EMPTY; ENTRIES], 0)),
            off: AtomicBool::new(false),
        }
    }
}

/// Errors of `OP_FILE_OPEN` that no other file would escape.
fn refuses_all(e: i32) -> bool {
    matches!(
        e,
        libc::EOPNOTSUPP | libc::EPERM | libc::EACCES | libc::ENOSYS
    )
}

/// The entry of `dev`/`ino`, marked used now: `Some(its id or None for a refusal)`.
fn touch(t: &mut ([Entry; ENTRIES], u64), dev: u64, ino: u64) -> Option<Option<u32>> {
    t.1 += 1;
    let now = t.1;
    let e =
        t.0.iter_mut()
            .find(|e| e.used != 0 && e.dev == dev && e.ino == ino)?;
    e.used = now;
    Some(e.id)
}

impl Files {
    /// False once the agent showed it cannot take our files at all.
    pub(crate) fn usable(&self) -> bool {
        !self.off.load(Ordering::Relaxed)
    }

    /// The agent's id for the file `dev`/`ino`: cached, or asked with `open` (the
    /// `OP_FILE_OPEN` round trip: the id, `Err(errno)` when the agent refused, `Err(0)` when the
    /// channel failed). An id that loses its entry, or that another thread's open made
    /// redundant, goes to `close` (`OP_FILE_CLOSE`). `None`: copy instead.
    pub(crate) fn id(
        &self,
        dev: u64,
        ino: u64,
        open: impl FnOnce() -> Result<u32, i32>,
        close: impl Fn(u32),
    ) -> Option<u32> {
        if let Some(id) = touch(&mut self.table.lock(), dev, ino) {
            return id;
        }
        let id = match open() {
            Ok(id) => Some(id),
            Err(0) => return None,
            Err(e) => {
                if refuses_all(e) && !self.off.swap(true, Ordering::Relaxed) {
                    crate::log!(
                        crate::util::INFO,
                        "sendfile: the agent cannot read our files (errno {}); copying instead",
                        e
                    );
                }
                None
            }
        };
        let mut t = self.table.lock();
        if let Some(keep) = touch(&mut t, dev, ino) {
            // Another thread opened it meanwhile: keep its id, close ours.
            drop(t);
            if let Some(mine) = id.filter(|&m| Some(m) != keep) {
                close(mine);
            }
            return keep;
        }
        t.1 += 1;
        let now = t.1;
        let mut v = 0;
        for (i, e) in t.0.iter().enumerate() {
            if e.used < t.0[v].used {
                v = i;
            }
        }
        let victim = &mut t.0[v];
        let old = (victim.used != 0).then_some(victim.id).flatten();
        *victim = Entry {
            dev,
            ino,
            id,
            used: now,
        };
        drop(t);
        if let Some(old) = old {
            close(old);
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn ids_are_cached_refusals_remembered_and_the_oldest_closed() {
        let f = Files::new();
        let closed = RefCell::new(Vec::new());
        let opens = RefCell::new(0);
        let opens = &opens;
        let open = |id: u32| {
            move || {
                *opens.borrow_mut() += 1;
                Ok(id)
            }
        };
        let close = |id| closed.borrow_mut().push(id);
        assert_eq!(f.id(1, 1, open(10), close), Some(10));
        assert_eq!(f.id(1, 1, open(99), close), Some(10), "cached");
        assert_eq!(*opens.borrow(), 1);
        // A refusal for one file is remembered for it; other files still ask.
        assert_eq!(f.id(1, 2, || Err(libc::ESTALE), close), None);
        assert_eq!(f.id(1, 2, open(99), close), None);
        assert!(f.usable());
        // Fill the table: the least recently used entry (1/2; 1/1 was used later) goes.
        for i in 3..(ENTRIES as u64 + 1) {
            assert_eq!(
                f.id(1, i, open(i as u32 + 100), close),
                Some(i as u32 + 100)
            );
        }
        assert!(closed.borrow().is_empty(), "the refusal's entry held no id");
        assert_eq!(f.id(1, 1, open(99), close), Some(10));
        assert_eq!(f.id(2, 0, open(500), close), Some(500));
        assert_eq!(f.id(2, 1, open(501), close), Some(501));
        assert_eq!(
            *closed.borrow(),
            [103],
            "the oldest id went back to the agent"
        );
        // A failed channel caches nothing; a refusal every file would meet turns references off.
        assert_eq!(f.id(3, 3, || Err(0), close), None);
        assert_eq!(f.id(3, 3, open(7), close), Some(7));
        assert_eq!(f.id(4, 4, || Err(libc::EPERM), close), None);
        assert!(!f.usable());
    }
}
