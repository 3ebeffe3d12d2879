//! Test helpers shared by the framings: feed a stream to a framer in chosen pieces, split the
//! unconsumed bytes into `(a, b)` like a ring's wrap, and compare what comes out.

use super::{Framer, Framing, Reason, Scan};

/// What came out of a framer, with the bytes it covered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Ev {
    Msg(Vec<u8>),
    Part(Vec<u8>),
    Skip(usize),
    Bad(Reason),
}

/// Where the unconsumed bytes are split into `(a, b)` at each scan.
/// Each of `ms` as one whole message.
pub(super) fn msgs(ms: &[&[u8]]) -> Vec<Ev> {
    ms.iter().map(|m| Ev::Msg(m.to_vec())).collect()
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Split {
    /// All in `a`.
    Whole,
    /// In the middle.
    Mid,
    /// After `k` bytes (or all in `a`).
    At(usize),
    /// At a pseudo-random place from this seed.
    Random(u64),
}

/// A small deterministic generator (xorshift64*), so failures replay.
pub(super) struct Rng(pub u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        let mut x = self.0 | 1;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `[0, n)`; 0 when `n` is 0.
    pub(super) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    pub(super) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Feeds `chunks` one after another, scanning until `Need` after each; with `eof`, calls
/// `finish` at the end and scans again. Stops at the first `Malformed`.
pub(super) fn feed(
    framing: Framing,
    max: usize,
    chunks: &[&[u8]],
    split: Split,
    eof: bool,
) -> Vec<Ev> {
    let mut f = Framer::new(framing, max);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut rng = Rng(match split {
        Split::Random(s) => s ^ 0x9e37_79b9_7f4a_7c15,
        _ => 1,
    });
    for (i, c) in chunks.iter().enumerate() {
        buf.extend_from_slice(c);
        if drain(&mut f, &mut buf, &mut out, split, &mut rng) {
            return out;
        }
        if eof && i + 1 == chunks.len() {
            f.finish();
            drain(&mut f, &mut buf, &mut out, split, &mut rng);
        }
    }
    if eof && chunks.is_empty() {
        f.finish();
        drain(&mut f, &mut buf, &mut out, split, &mut rng);
    }
    out
}

/// Scans until `Need`; true after a `Malformed`.
fn drain(
    f: &mut Framer,
    buf: &mut Vec<u8>,
    out: &mut Vec<Ev>,
    split: Split,
    rng: &mut Rng,
) -> bool {
    let mut empty_messages = 0;
    loop {
        let k = match split {
            Split::Whole => buf.len(),
            Split::Mid => buf.len() / 2,
            Split::At(k) => k.min(buf.len()),
            Split::Random(_) => rng.below(buf.len() as u64 + 1) as usize,
        };
        let (a, b) = buf.split_at(k);
        let verdict = f.scan(a, b);
        // The verdict is stable until consume.
        assert_eq!(verdict, f.scan(buf, &[]), "scan is not idempotent");
        let (ev, n) = match verdict {
            Scan::Need => return false,
            Scan::Malformed(r) => {
                out.push(Ev::Bad(r));
                return true;
            }
            Scan::Message(n) => (Ev::Msg(buf[..n].to_vec()), n),
            Scan::Part(n) => {
                assert_eq!(n, f.max_message(), "a part is max_message bytes");
                (Ev::Part(buf[..n].to_vec()), n)
            }
            Scan::Skip(n) => {
                assert!(n > 0 && n <= 5, "skip of {n}");
                (Ev::Skip(n), n)
            }
        };
        if n == 0 {
            empty_messages += 1;
            assert!(empty_messages < 2, "repeated empty messages");
        }
        assert!(n <= f.max_message(), "verdict beyond max_message");
        out.push(ev);
        buf.drain(..n);
        f.consume(n);
    }
}

/// `stream` framed in one piece, byte by byte, cut at every position (across two scans, and
/// across `a`/`b` within one), and in random pieces gives exactly `expected`.
pub(super) fn check_every_way(framing: Framing, max: usize, stream: &[u8], expected: &[Ev]) {
    check_every_way_eof(framing, max, stream, expected, false)
}

/// As [`check_every_way`]; with `eof`, the stream then ends (`finish`).
pub(super) fn check_every_way_eof(
    framing: Framing,
    max: usize,
    stream: &[u8],
    expected: &[Ev],
    eof: bool,
) {
    let ctx = |how: &str| {
        format!(
            "{framing:?} max {max} {how}, stream {:?}",
            String::from_utf8_lossy(stream)
        )
    };
    assert_eq!(
        feed(framing, max, &[stream], Split::Whole, eof),
        expected,
        "{}",
        ctx("one piece")
    );
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    for split in [Split::Whole, Split::Mid, Split::At(1)] {
        assert_eq!(
            feed(framing, max, &bytes, split, eof),
            expected,
            "{}",
            ctx(&format!("byte by byte {split:?}"))
        );
    }
    for k in 0..=stream.len() {
        assert_eq!(
            feed(framing, max, &[stream], Split::At(k), eof),
            expected,
            "{}",
            ctx(&format!("a/b at {k}"))
        );
        let (x, y) = stream.split_at(k);
        assert_eq!(
            feed(framing, max, &[x, y], Split::Whole, eof),
            expected,
            "{}",
            ctx(&format!("two scans at {k}"))
        );
        assert_eq!(
            feed(framing, max, &[x, y], Split::Random(k as u64), eof),
            expected,
            "{}",
            ctx(&format!("two scans at {k}, random a/b"))
        );
    }
    for seed in 0..8u64 {
        let mut rng = Rng(seed + 77);
        let chunks = random_chunks(&mut rng, stream);
        assert_eq!(
            feed(framing, max, &chunks, Split::Random(seed), eof),
            expected,
            "{}",
            ctx(&format!("random seed {seed}"))
        );
    }
}

/// `stream` cut into pieces of random sizes (mostly small, sometimes large).
pub(super) fn random_chunks<'a>(rng: &mut Rng, stream: &'a [u8]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let n = match rng.below(4) {
            0 => 1,
            1 => 1 + rng.below(8) as usize,
            2 => 1 + rng.below(100) as usize,
            _ => 1 + rng.below(5000) as usize,
        };
        let (c, r) = rest.split_at(n.min(rest.len()));
        chunks.push(c);
        rest = r;
    }
    chunks
}

/// Randomly cut and split, `stream` frames back into exactly `messages` (parts reassembled,
/// skips dropped), with the same events as in one piece.
pub(super) fn check_random(
    rng: &mut Rng,
    framing: Framing,
    max: usize,
    stream: &[u8],
    messages: &[Vec<u8>],
) {
    let reference = feed(framing, max, &[stream], Split::Whole, false);
    let chunks = random_chunks(rng, stream);
    let seed = rng.next();
    let events = feed(framing, max, &chunks, Split::Random(seed), false);
    assert_eq!(
        events, reference,
        "{framing:?} max {max}: depends on the cuts"
    );
    assert_eq!(reassemble(max, &events), messages, "{framing:?} max {max}");
}

/// Whole messages from events: parts joined to the message that ends them, skips dropped.
pub(super) fn reassemble(max: usize, events: &[Ev]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = Vec::new();
    for e in events {
        match e {
            Ev::Part(p) => {
                assert_eq!(p.len(), max.max(super::MIN_MAX_MESSAGE));
                acc.extend_from_slice(p);
            }
            Ev::Msg(m) => {
                acc.extend_from_slice(m);
                out.push(std::mem::take(&mut acc));
            }
            Ev::Skip(_) => assert!(acc.is_empty(), "skip inside a message"),
            Ev::Bad(r) => panic!("malformed: {r}"),
        }
    }
    assert!(acc.is_empty(), "parts without an end");
    out
}

/// Feeds random bytes from `alphabet` (plus any byte now and then) in random pieces to a framer
/// and checks only that it neither panics nor breaks its own invariants.
/// With `deterministic`, also checks that the events do not depend on the cuts (not so for raw
/// framing, nor after an HTTP response switched to it).
pub(super) fn fuzz(
    framing: Framing,
    alphabet: &[&[u8]],
    rounds: usize,
    seed: u64,
    deterministic: bool,
) {
    let mut rng = Rng(seed);
    for _ in 0..rounds {
        let mut stream = Vec::new();
        for _ in 0..rng.below(60) {
            if rng.below(8) == 0 {
                stream.push(rng.next() as u8);
            } else {
                stream.extend_from_slice(rng.pick::<&[u8]>(alphabet));
            }
        }
        let max = 16 + rng.below(64) as usize;
        let chunks = random_chunks(&mut rng, &stream);
        let seed = rng.next();
        let eof = rng.below(2) == 0;
        let events = feed(framing, max, &chunks, Split::Random(seed), eof);
        let mut total = 0;
        for e in &events {
            total += match e {
                Ev::Msg(m) | Ev::Part(m) => m.len(),
                Ev::Skip(n) => *n,
                Ev::Bad(_) => 0,
            };
        }
        assert!(total <= stream.len());
        if deterministic {
            assert_eq!(
                events,
                feed(framing, max, &[&stream], Split::Whole, eof),
                "{framing:?} {stream:?}"
            );
        }
    }
}
