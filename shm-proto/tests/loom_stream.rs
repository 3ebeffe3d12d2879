//! Model check of a byte stream's rewind (`shm_proto::stream`, docs/channel.md): the producer moves
//! `base` to `tail` when it finds the stream empty, and the consumer, which loads `base` after its
//! Acquire load of `tail`, must always find the bytes where they were written.
//!
//! Run with:
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=/work/target-loom cargo test -p shm-proto --test loom_stream --release`
//!
//! The ring's bytes are plain memory, written and read between the model's atomic steps; a
//! consumer that computed an offset from a stale base reads bytes that are not the message, and
//! the check fails. `control_base_after_tail` moves the base after publishing (the wrong order)
//! and must fail, proving the model would catch it.
//!
//! An observer (the host's readiness for poll/epoll, or a writer's wait condition, on any thread
//! and without the socket's TX lock) asks for the free space with the tail it loaded, which the
//! producer may have moved on by the time it looks at the head. It must not rewind:
//! `control_observer_rewinds` has it call [`Stream::writable`] (a rewind from a stale tail that
//! the consumer's head happens to equal moves the base under published bytes) and must fail;
//! `observer_keeps_the_base` has it call [`Stream::free_keeping_base`], as the host does.

#![cfg(loom)]

use loom::sync::atomic::{AtomicU32, Ordering};
use loom::sync::Arc;
use loom::thread;
use shm_proto::layout::Producer;
use shm_proto::stream::Stream;

const SIZE: u32 = 8;
const MSGS: [&[u8]; 3] = [&[1, 2, 3], &[4, 5], &[6, 7, 8, 9, 10]];

struct Shared {
    buf: std::cell::UnsafeCell<[u8; SIZE as usize]>,
    prod: Producer,
    head: AtomicU32,
}

// SAFETY: the buffer is only touched through the stream protocol under test (one producer, one
// consumer), which is what the model checks.
unsafe impl Sync for Shared {}
// SAFETY: as above.
unsafe impl Send for Shared {}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            buf: std::cell::UnsafeCell::new([0; SIZE as usize]),
            prod: Producer::default(),
            head: AtomicU32::new(0),
        })
    }

    fn stream(&self) -> Stream {
        // SAFETY: the buffer and atomics live as long as the Arc the thread holds.
        unsafe { Stream::new(self.buf.get().cast(), SIZE, &self.prod, &self.head) }
    }
}

fn consumer(sh: &Shared) {
    let s = sh.stream();
    let want: Vec<u8> = MSGS.concat();
    let mut got = Vec::new();
    let mut h = 0u32;
    while got.len() < want.len() {
        let r = s.readable(h).unwrap();
        if r == 0 {
            thread::yield_now();
            continue;
        }
        let mut out = vec![0u8; r as usize];
        s.copy_out(h, &mut out);
        got.extend_from_slice(&out);
        h = h.wrapping_add(r);
        s.publish_head(h);
    }
    assert_eq!(got, want);
}

fn producer(sh: &Shared, base_after_tail: bool) {
    let s = sh.stream();
    let mut t = 0u32;
    for m in MSGS {
        loop {
            let free = if base_after_tail {
                // The wrong order: the free space without the rewind, which comes later.
                SIZE - s.used(s.load_head(), t).unwrap()
            } else {
                s.writable(t).unwrap()
            };
            if free >= m.len() as u32 {
                break;
            }
            thread::yield_now();
        }
        let empty = s.load_head() == t;
        if base_after_tail && empty {
            // Bytes written where the rewound base will put them, published, then the base.
            for (k, b) in m.iter().enumerate() {
                // SAFETY: the producer owns the free part of the ring.
                unsafe { *sh.buf.get().cast::<u8>().add(k) = *b };
            }
            s.publish_tail(t.wrapping_add(m.len() as u32));
            sh.prod.base.store(t, Ordering::Relaxed);
        } else {
            s.copy_in(t, m);
            s.publish_tail(t.wrapping_add(m.len() as u32));
        }
        t = t.wrapping_add(m.len() as u32);
    }
}

/// A thread that is not the producer asks how much room there is, once, as the host's readiness
/// does (`preload/src/readiness.rs`): with the tail as it loaded it, which may be stale by the
/// time the head is read.
fn observer(sh: &Shared, rewinds: bool) {
    let s = sh.stream();
    let tail = sh.prod.tail.load(Ordering::Relaxed);
    let _free = if rewinds {
        s.writable(tail)
    } else {
        s.free_keeping_base(tail)
    };
}

fn run(base_after_tail: bool) {
    loom::model(move || {
        let sh = Shared::new();
        let c = {
            let sh = sh.clone();
            thread::spawn(move || consumer(&sh))
        };
        producer(&sh, base_after_tail);
        c.join().unwrap();
    });
}

/// The producer, the consumer and one observer (see the module doc). Bounded: the observer's
/// harm needs only a few preemptions (its tail load, the producer's write past it, the
/// consumer's head reaching that tail, its head load), and the full space takes minutes.
fn run_observed(rewinds: bool) {
    let mut b = loom::model::Builder::new();
    if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
        b.preemption_bound = Some(3);
    }
    b.check(move || {
        let sh = Shared::new();
        let c = {
            let sh = sh.clone();
            thread::spawn(move || consumer(&sh))
        };
        let o = {
            let sh = sh.clone();
            thread::spawn(move || observer(&sh, rewinds))
        };
        producer(&sh, false);
        o.join().unwrap();
        c.join().unwrap();
    });
}

#[test]
fn rewound_bytes_are_read_where_they_were_written() {
    run(false);
}

#[test]
#[should_panic]
fn control_base_after_tail() {
    run(true);
}

#[test]
fn observer_keeps_the_base() {
    run_observed(false);
}

#[test]
#[should_panic]
fn control_observer_rewinds() {
    run_observed(true);
}
