//! Model check of the wake protocol (`shm_proto::wake`) as `docs/channel.md` uses it.
//!
//! Also checked: the epoll changed-slot bitmap (`shm_proto::changed`) inside the flag form, the
//! TX-changed bitmap the host's threads mark for the agent, and the per-socket kick form
//! (`rx_blocked`), whose doorbell is a command on the ring.
//!
//! Run with:
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=/work/target-loom cargo test -p shm-proto --test loom_wake --release`
//!
//! The OS doorbells are modelled with loom's `Mutex` + `Condvar`:
//! * eventfd: a counter; `signal` adds 1, `wait` blocks until non-zero and resets it to 0;
//! * futex: `wait(word, seen)` takes the bucket lock and blocks only while `word == seen`; `wake`
//!   takes the same lock and notifies everyone, so a wake between the check and the block is
//!   impossible, exactly as in the kernel.
//!
//! A lost wake-up shows up as a thread blocked forever, which loom reports as a deadlock (a panic).
//! The `lost_wakeup_*` controls contain such a bug on purpose and must panic, proving that the model
//! would catch one in the real protocol.
//!
//! Loom 0.7 models acquire/release and RMWs exactly but treats SeqCst accesses as AcqRel, and it
//! does not order a plain store after a concurrent RMW that read an older value (C++ does, by RMW
//! atomicity). An earlier `wake.rs` (SeqCst store + fence in `announce`, load-then-swap in
//! `must_ring`) was correct in C++20, yet loom reported a lost wake-up for it in the flag form
//! (re-check finds work, `retract`, `announce` again, racing the host's swap). Keep the decision
//! points RMWs on one word, as they are now, or expect false alarms here.

#![cfg(loom)]

use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use shm_proto::changed::{mark, take};
use shm_proto::layout::{Cmd, Line, RingHdr};
use shm_proto::ring::{Consumer, Producer};
use shm_proto::wake::{
    announce, bump, finish_wait, must_ring, prepare_wait, retract, rx_block, rx_space_needed,
    rx_unblock,
};
use std::mem::ManuallyDrop;

/// Runs `f` under loom. `bound` caps preemptions for models whose full state space takes minutes
/// (`None`: exhaustive); `LOOM_MAX_PREEMPTIONS` in the environment overrides it.
fn model<F: Fn() + Sync + Send + 'static>(bound: Option<usize>, f: F) {
    let mut b = loom::model::Builder::new();
    if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
        b.preemption_bound = bound;
    }
    b.check(f);
}

/// Items the producer publishes in the flag-form models.
const N: u32 = 2;

/// An eventfd in counter mode.
#[derive(Default)]
struct Doorbell {
    count: Mutex<u64>,
    cv: Condvar,
}

impl Doorbell {
    fn signal(&self) {
        *self.count.lock().unwrap() += 1;
        self.cv.notify_one();
    }

    /// Blocking `read(2)` of the eventfd: waits for a non-zero counter and clears it.
    fn wait(&self) {
        let mut c = self.count.lock().unwrap();
        while *c == 0 {
            c = self.cv.wait(c).unwrap();
        }
        *c = 0;
    }
}

/// A futex on one 32-bit word.
#[derive(Default)]
struct Futex {
    bucket: Mutex<()>,
    cv: Condvar,
}

impl Futex {
    /// FUTEX_WAIT: sleeps only while `word == seen`; returns after one wake-up (or at once).
    fn wait(&self, word: &AtomicU32, seen: u32) {
        let g = self.bucket.lock().unwrap();
        if word.load(Ordering::SeqCst) == seen {
            drop(self.cv.wait(g).unwrap());
        }
    }

    /// FUTEX_WAKE(INT_MAX).
    fn wake_all(&self) {
        let _g = self.bucket.lock().unwrap();
        self.cv.notify_all();
    }
}

/// Host -> agent shape: `tail` is the command ring tail, `flag` is `AgentWake::sleeping`.
#[derive(Default)]
struct FlagChannel {
    tail: AtomicU32,
    flag: AtomicU32,
    bell: Doorbell,
}

fn flag_producer(ch: &FlagChannel) {
    for i in 1..=N {
        ch.tail.store(i, Ordering::Release);
        if must_ring(&ch.flag) {
            ch.bell.signal();
        }
    }
}

/// The agent's loop: consume, announce, re-check, block, retract.
fn flag_consumer(ch: &FlagChannel) {
    loop {
        let head = ch.tail.load(Ordering::Acquire);
        if head == N {
            return;
        }
        announce(&ch.flag);
        if ch.tail.load(Ordering::Acquire) != head {
            retract(&ch.flag);
            continue;
        }
        ch.bell.wait();
        retract(&ch.flag);
    }
}

/// The bug the protocol exists to prevent: check, then announce and block without a re-check.
fn flag_consumer_checks_before_announcing(ch: &FlagChannel) {
    loop {
        if ch.tail.load(Ordering::Acquire) == N {
            return;
        }
        announce(&ch.flag);
        ch.bell.wait();
        retract(&ch.flag);
    }
}

/// Holds a loom object that must not be dropped while a loom panic unwinds: loom's own bookkeeping
/// is gone by then and the drop would panic again (and abort the test binary).
struct KeepOnPanic<T>(ManuallyDrop<T>);

impl<T> KeepOnPanic<T> {
    fn new(v: T) -> Self {
        KeepOnPanic(ManuallyDrop::new(v))
    }
}

impl<T> KeepOnPanic<T> {
    /// The value, no longer guarded.
    fn take(mut self) -> ManuallyDrop<T> {
        // SAFETY: `self` is forgotten right after, so the value is moved out exactly once.
        let v = unsafe { ManuallyDrop::take(&mut self.0) };
        std::mem::forget(self);
        ManuallyDrop::new(v)
    }
}

impl<T> std::ops::Deref for KeepOnPanic<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> Drop for KeepOnPanic<T> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: dropped once, here; never used afterwards.
            unsafe { ManuallyDrop::drop(&mut self.0) };
        }
    }
}

#[test]
fn flag_form_no_lost_wakeup() {
    model(None, || {
        let ch = Arc::new(FlagChannel::default());
        let p = {
            let ch = ch.clone();
            thread::spawn(move || flag_producer(&ch))
        };
        flag_consumer(&ch);
        p.join().unwrap();
    });
}

#[test]
#[should_panic(expected = "deadlock")]
fn lost_wakeup_flag_form_check_before_announce() {
    model(None, || {
        let ch = KeepOnPanic::new(Arc::new(FlagChannel::default()));
        let p = {
            let ch = Arc::clone(&ch);
            thread::spawn(move || flag_producer(&ch))
        };
        flag_consumer_checks_before_announcing(&ch);
        p.join().unwrap();
    });
}

/// The same flag protocol over the real command ring: `Producer::push` publishes the tail with a
/// Release store only, so this checks that the flag's RMWs alone carry the publication to the
/// agent's re-check (`Consumer::available`).
#[test]
fn flag_form_over_cmd_ring() {
    const ENTRIES: u32 = 4;
    struct Shared {
        hdr: RingHdr,
        /// Written and read only through raw pointers by the ring halves, like shared memory.
        ents: std::cell::UnsafeCell<[Cmd; ENTRIES as usize]>,
        sleeping: AtomicU32,
        bell: Doorbell,
    }
    // SAFETY: `ents` is accessed only by the ring's producer and consumer, which hand entries over
    // with the tail/head atomics.
    unsafe impl Sync for Shared {}
    model(None, || {
        let sh = Arc::new(Shared {
            hdr: RingHdr {
                tail: Line(AtomicU32::new(0)),
                head: Line(AtomicU32::new(0)),
            },
            ents: std::cell::UnsafeCell::new([Cmd::default(); ENTRIES as usize]),
            sleeping: AtomicU32::new(0),
            bell: Doorbell::default(),
        });
        let hdr = &sh.hdr as *const RingHdr as usize;
        let ents = sh.ents.get() as *mut Cmd as usize;
        let p = {
            let sh = sh.clone();
            thread::spawn(move || {
                // SAFETY: `sh` keeps the ring alive for the whole thread; one producer. Entries are
                // written through the raw pointer only, never through a reference.
                let mut prod =
                    unsafe { Producer::new(hdr as *const RingHdr, ents as *mut Cmd, ENTRIES) };
                for i in 1..=N {
                    assert!(prod
                        .push(Cmd {
                            tag: i as u64,
                            ..Default::default()
                        })
                        .unwrap());
                    if must_ring(&sh.sleeping) {
                        sh.bell.signal();
                    }
                }
            })
        };
        // SAFETY: as above; one consumer.
        let mut cons = unsafe { Consumer::new(hdr as *const RingHdr, ents as *mut Cmd, ENTRIES) };
        let mut next = 1u64;
        loop {
            while let Some(c) = cons.pop().unwrap() {
                assert_eq!(c.tag, next);
                next += 1;
            }
            if next > N as u64 {
                break;
            }
            announce(&sh.sleeping);
            if cons.available().unwrap() != 0 {
                retract(&sh.sleeping);
                continue;
            }
            sh.bell.wait();
            retract(&sh.sleeping);
        }
        p.join().unwrap();
    });
}

/// Agent -> host blocking shape: `cond` stands for `rx_tail` (or any state a reader waits for),
/// `seq`/`waiters` for `state.wake_seq`/`host.waiters`.
#[derive(Default)]
struct SeqChannel {
    cond: AtomicU32,
    seq: AtomicU32,
    waiters: AtomicU32,
    futex: Futex,
}

fn seq_waker(ch: &SeqChannel, items: u32) {
    for i in 1..=items {
        ch.cond.store(i, Ordering::Release);
        if bump(&ch.seq, &ch.waiters) {
            ch.futex.wake_all();
        }
    }
}

/// A blocked reader: waits until `cond >= want`.
fn seq_waiter(ch: &SeqChannel, want: u32) {
    loop {
        if ch.cond.load(Ordering::Acquire) >= want {
            return;
        }
        let seen = prepare_wait(&ch.seq, &ch.waiters);
        if ch.cond.load(Ordering::Acquire) >= want {
            finish_wait(&ch.waiters);
            return;
        }
        ch.futex.wait(&ch.seq, seen);
        finish_wait(&ch.waiters);
    }
}

/// The bug: re-check first, read the sequence afterwards. A bump in between is taken as "seen".
fn seq_waiter_reads_seq_after_check(ch: &SeqChannel, want: u32) {
    loop {
        if ch.cond.load(Ordering::Acquire) >= want {
            return;
        }
        let seen = prepare_wait(&ch.seq, &ch.waiters);
        ch.futex.wait(&ch.seq, seen);
        finish_wait(&ch.waiters);
    }
}

#[test]
fn seq_form_no_lost_wakeup() {
    model(Some(6), || {
        let ch = Arc::new(SeqChannel::default());
        let w = {
            let ch = ch.clone();
            thread::spawn(move || seq_waker(&ch, 2))
        };
        seq_waiter(&ch, 2);
        w.join().unwrap();
        assert_eq!(ch.waiters.load(Ordering::SeqCst), 0);
    });
}

/// Two blocked threads on one word: the wake must reach both (`FUTEX_WAKE` all). Three threads:
/// bounded (4 preemptions: 4 s; 6 would take minutes).
#[test]
fn seq_form_two_waiters() {
    model(Some(4), || {
        let ch = Arc::new(SeqChannel::default());
        let w = {
            let ch = ch.clone();
            thread::spawn(move || seq_waker(&ch, 1))
        };
        let other = {
            let ch = ch.clone();
            thread::spawn(move || seq_waiter(&ch, 1))
        };
        seq_waiter(&ch, 1);
        w.join().unwrap();
        other.join().unwrap();
        assert_eq!(ch.waiters.load(Ordering::SeqCst), 0);
    });
}

#[test]
#[should_panic(expected = "deadlock")]
fn lost_wakeup_seq_form_seq_read_after_check() {
    model(None, || {
        let ch = KeepOnPanic::new(Arc::new(SeqChannel::default()));
        let w = {
            let ch = Arc::clone(&ch);
            thread::spawn(move || seq_waker(&ch, 1))
        };
        seq_waiter_reads_seq_after_check(&ch, 1);
        w.join().unwrap();
    });
}

/// Agent -> host epoll shape with the changed-slot bitmap (`shm_proto::changed`): the host
/// examines only the slots it takes from the bitmap, so a bit lost between the agent's mark and
/// the host's sleep shows up as a deadlock. `state[s]` stands for a socket's readiness (RX tail,
/// flags, ...), `mask` for `SockHost::waiter_mask` of slot 0 (one waiter, bit 0).
struct ReadyChannel {
    state: [AtomicU32; 3],
    summary: AtomicU64,
    /// Two words: slots 0 and 1 share word 0 (the second mark skips the summary), slot 2 stands
    /// for slot 64 (word 1) and is mapped there.
    words: [AtomicU64; 2],
    sleeping: AtomicU32,
    mask: AtomicU64,
    bell: Doorbell,
}

impl ReadyChannel {
    fn new(mask: u64) -> Self {
        ReadyChannel {
            state: [AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)],
            summary: AtomicU64::new(0),
            words: [AtomicU64::new(0), AtomicU64::new(0)],
            sleeping: AtomicU32::new(0),
            mask: AtomicU64::new(mask),
            bell: Doorbell::default(),
        }
    }
}

/// Model slot index -> bitmap slot number.
fn bit_of(s: usize) -> u32 {
    [0, 1, 64][s]
}

fn slot_of(bit: u32) -> usize {
    match bit {
        0 => 0,
        1 => 1,
        _ => 2,
    }
}

/// The agent's `flush` for one changed slot: publish, then (waiter in the mask) mark, then ring.
fn ready_agent(ch: &ReadyChannel, slots: &[usize], mark_first: bool) {
    for &s in slots {
        ch.state[s].store(1, Ordering::Release);
        if ch.mask.fetch_or(0, Ordering::AcqRel) & 1 == 0 {
            continue;
        }
        if mark_first {
            mark(&ch.summary, &ch.words, bit_of(s));
            if must_ring(&ch.sleeping) {
                ch.bell.signal();
            }
        } else {
            if must_ring(&ch.sleeping) {
                ch.bell.signal();
            }
            mark(&ch.summary, &ch.words, bit_of(s));
        }
    }
}

/// The host's epoll_wait until every slot in `want` was seen ready: `queued` are entries it must
/// examine anyway (just added); otherwise it looks only at slots taken from the bitmap.
fn ready_host(ch: &ReadyChannel, want: &[usize], queued: &[usize]) {
    let mut seen = [false; 3];
    let mut queue: Vec<usize> = queued.to_vec();
    let examine = |queue: &mut Vec<usize>, seen: &mut [bool; 3]| {
        take(&ch.summary, &ch.words, |b| queue.push(slot_of(b)));
        let mut found = false;
        for s in queue.drain(..) {
            if !seen[s] && ch.state[s].load(Ordering::Acquire) == 1 {
                seen[s] = true;
                found = true;
            }
        }
        found
    };
    loop {
        examine(&mut queue, &mut seen);
        if want.iter().all(|&s| seen[s]) {
            return;
        }
        announce(&ch.sleeping);
        if examine(&mut queue, &mut seen) {
            retract(&ch.sleeping);
            continue;
        }
        ch.bell.wait();
        retract(&ch.sleeping);
    }
}

#[test]
fn changed_bitmap_no_lost_wakeup() {
    model(Some(4), || {
        let ch = Arc::new(ReadyChannel::new(1));
        let a = {
            let ch = ch.clone();
            thread::spawn(move || ready_agent(&ch, &[0, 1, 2], true))
        };
        ready_host(&ch, &[0, 1, 2], &[]);
        a.join().unwrap();
    });
}

/// Two changes in one word: the second mark sees a non-empty word and skips the summary. Full
/// state space.
#[test]
fn changed_bitmap_same_word_exhaustive() {
    model(None, || {
        let ch = Arc::new(ReadyChannel::new(1));
        let a = {
            let ch = ch.clone();
            thread::spawn(move || ready_agent(&ch, &[0, 1], true))
        };
        ready_host(&ch, &[0, 1], &[]);
        a.join().unwrap();
    });
}

/// EPOLL_CTL_ADD racing a change: the host sets its mask bit (an RMW) after queueing the new
/// entry; the agent reads the mask with an RMW after publishing. Either the agent sees the bit
/// and marks, or the host's examination of the queued entry sees the state.
#[test]
fn changed_bitmap_add_races_change() {
    model(None, || {
        let ch = Arc::new(ReadyChannel::new(0));
        let a = {
            let ch = ch.clone();
            thread::spawn(move || ready_agent(&ch, &[0], true))
        };
        ch.mask.fetch_or(1, Ordering::AcqRel);
        ready_host(&ch, &[0], &[0]);
        a.join().unwrap();
    });
}

/// The bug the order exists to prevent: ring first, mark afterwards. The host wakes, finds no
/// bit, sleeps again, and the mark arrives with nobody ringing.
#[test]
#[should_panic(expected = "deadlock")]
fn lost_wakeup_changed_bitmap_ring_before_mark() {
    model(None, || {
        let ch = KeepOnPanic::new(Arc::new(ReadyChannel::new(1)));
        let a = {
            let ch = Arc::clone(&ch);
            thread::spawn(move || ready_agent(&ch, &[0], false))
        };
        ready_host(&ch, &[0], &[]);
        a.join().unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// TX: the TX-changed bitmap inside the flag form. RX: the kick form (`rx_blocked`), whose
// doorbell is a command (OP_RX_SPACE), modelled as a `Doorbell`: the receiver blocks until one
// arrived. A lost doorbell leaves the receiver blocked forever with bytes in the stream: loom
// reports a deadlock.

/// TX: the host's threads publish bytes (`tail[s]`, a slot's TX tail) and mark the slot in the
/// TX-changed bitmap (`shm_proto::changed::mark`); only a mark that set a summary bit goes on
/// to the doorbell decision on `sleeping` (`AgentWake::sleeping`), the eventfd `bell`. Slots 0
/// and 1 share word 0 (the second mark finds the word non-empty), slot 2 stands for slot 64.
struct TxChannel {
    tail: [AtomicU32; 3],
    summary: AtomicU64,
    words: [AtomicU64; 2],
    sleeping: AtomicU32,
    bell: Doorbell,
}

impl TxChannel {
    fn new() -> Self {
        TxChannel {
            tail: [AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)],
            summary: AtomicU64::new(0),
            words: [AtomicU64::new(0), AtomicU64::new(0)],
            sleeping: AtomicU32::new(0),
            bell: Doorbell::default(),
        }
    }
}

/// The host's `send` on slot `s` (preload `ops::kick`): publish, mark, ring when the mark set a
/// summary bit and the agent announced its sleep. `mark_first`: the bug the order prevents.
fn tx_host(ch: &TxChannel, slots: &[usize], mark_first: bool) {
    for &s in slots {
        if !mark_first {
            ch.tail[s].fetch_add(1, Ordering::Release);
        }
        if mark(&ch.summary, &ch.words, bit_of(s)) && must_ring(&ch.sleeping) {
            ch.bell.signal();
        }
        if mark_first {
            ch.tail[s].fetch_add(1, Ordering::Release);
        }
    }
}

/// The agent's loop: take the marked slots and drain them (read each tail), until `want[s]`
/// bytes of every slot were seen; before sleeping announce, re-check the summary with a plain
/// load (`Region::tx_pending`), then block on the doorbell. It has nothing else that would make
/// it look, so every byte needs a mark that reaches it.
fn tx_agent(ch: &TxChannel, want: [u32; 3]) {
    let mut seen = [0u32; 3];
    loop {
        take(&ch.summary, &ch.words, |b| {
            let s = slot_of(b);
            seen[s] = ch.tail[s].load(Ordering::Acquire);
        });
        if seen == want {
            return;
        }
        announce(&ch.sleeping);
        if ch.summary.load(Ordering::Relaxed) != 0 {
            retract(&ch.sleeping);
            continue;
        }
        ch.bell.wait();
        retract(&ch.sleeping);
    }
}

#[test]
fn tx_changed_no_lost_bytes() {
    model(Some(4), || {
        let ch = Arc::new(TxChannel::new());
        let h = {
            let ch = ch.clone();
            thread::spawn(move || tx_host(&ch, &[0, 1, 0, 2], false))
        };
        tx_agent(&ch, [2, 1, 1]);
        h.join().unwrap();
    });
}

/// Two host threads marking slots of one word: one mark finds the word non-empty and rings
/// nobody, while the other may not have set the summary yet. (The full state space takes about
/// 7 minutes here and found nothing more than this bound.)
#[test]
fn tx_changed_two_writers_one_word() {
    model(Some(4), || {
        let ch = Arc::new(TxChannel::new());
        let a = {
            let ch = ch.clone();
            thread::spawn(move || tx_host(&ch, &[0], false))
        };
        let b = {
            let ch = ch.clone();
            thread::spawn(move || tx_host(&ch, &[1], false))
        };
        tx_agent(&ch, [1, 1, 0]);
        a.join().unwrap();
        b.join().unwrap();
    });
}

/// Two host threads on one slot (the bitmap is per slot, not per thread) and one on another
/// word.
#[test]
fn tx_changed_two_writers_one_slot() {
    model(Some(3), || {
        let ch = Arc::new(TxChannel::new());
        let a = {
            let ch = ch.clone();
            thread::spawn(move || tx_host(&ch, &[0, 2], false))
        };
        let b = {
            let ch = ch.clone();
            thread::spawn(move || tx_host(&ch, &[0], false))
        };
        tx_agent(&ch, [2, 0, 1]);
        a.join().unwrap();
        b.join().unwrap();
    });
}

/// The bug the order exists to prevent: mark, then publish. The agent takes the bit, reads the
/// old tail, and the bytes published afterwards have no mark left to announce them.
#[test]
#[should_panic(expected = "deadlock")]
fn lost_wakeup_tx_changed_mark_before_publish() {
    model(None, || {
        let ch = KeepOnPanic::new(Arc::new(TxChannel::new()));
        let h = {
            let ch = Arc::clone(&ch);
            thread::spawn(move || tx_host(&ch, &[0], true))
        };
        tx_agent(&ch, [1, 0, 0]);
        h.join().unwrap();
    });
}

/// RX: the agent produces into a stream of `CAP` bytes, the host consumes. `blocked` is
/// `SockCtl::rx_head.blocked`, `space` the OP_RX_SPACE commands; the host waits for bytes on the
/// socket's futex (`seq`/`waiters`, the sequence form), as `recv` does.
#[derive(Default)]
struct RxChannel {
    tail: AtomicU32,
    head: AtomicU32,
    blocked: AtomicU32,
    space: Doorbell,
    seq: AtomicU32,
    waiters: AtomicU32,
    futex: Futex,
}

const CAP: u32 = 1;

/// `sock::pump_rx`: write while there is room; when full, announce, re-check, and stop until an
/// OP_RX_SPACE (`recheck` false: the bug, no re-check after the announcement).
fn rx_agent(ch: &RxChannel, items: u32, recheck: bool) {
    let mut tail = 0;
    while tail < items {
        if tail.wrapping_sub(ch.head.load(Ordering::Acquire)) < CAP {
            tail += 1;
            ch.tail.store(tail, Ordering::Release);
            if bump(&ch.seq, &ch.waiters) {
                ch.futex.wake_all();
            }
            continue;
        }
        rx_block(&ch.blocked);
        if recheck && tail.wrapping_sub(ch.head.load(Ordering::Acquire)) < CAP {
            rx_unblock(&ch.blocked);
            continue;
        }
        ch.space.wait();
    }
}

/// The host's `recv`: consume what is there, publish the head, post OP_RX_SPACE when the agent
/// stopped; with nothing to read, sleep on the futex.
fn rx_host(ch: &RxChannel, items: u32) {
    let mut head = 0;
    while head < items {
        let tail = ch.tail.load(Ordering::Acquire);
        if tail != head {
            head = tail;
            ch.head.store(head, Ordering::Release);
            if rx_space_needed(&ch.blocked) {
                ch.space.signal();
            }
            continue;
        }
        let seen = prepare_wait(&ch.seq, &ch.waiters);
        if ch.tail.load(Ordering::Acquire) != head {
            finish_wait(&ch.waiters);
            continue;
        }
        ch.futex.wait(&ch.seq, seen);
        finish_wait(&ch.waiters);
    }
}

#[test]
fn rx_blocked_no_lost_space() {
    model(Some(5), || {
        let ch = Arc::new(RxChannel::default());
        let a = {
            let ch = ch.clone();
            thread::spawn(move || rx_agent(&ch, 2, true))
        };
        rx_host(&ch, 2);
        a.join().unwrap();
    });
}

/// The bug: announce "blocked" without looking again. The host drained (and saw no flag) between
/// the agent's full check and its announcement; nobody posts OP_RX_SPACE.
#[test]
#[should_panic(expected = "deadlock")]
fn lost_wakeup_rx_blocked_without_recheck() {
    model(Some(5), || {
        // The agent runs on the model's main thread, so the deadlock is found while it waits for
        // OP_RX_SPACE (a join that never returns would unwind through loom's JoinHandle).
        let ch = KeepOnPanic::new(Arc::new(RxChannel::default()));
        let h = KeepOnPanic::new({
            let ch = Arc::clone(&ch);
            thread::spawn(move || rx_host(&ch, 2))
        });
        rx_agent(&ch, 2, false);
        ManuallyDrop::into_inner(h.take()).join().unwrap();
    });
}
