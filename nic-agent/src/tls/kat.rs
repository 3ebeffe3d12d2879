//! Known-answer tests of the record layer, one per version and cipher, and its behaviour at the
//! edges: splits, tampering, limits, padding, sequence numbers, KeyUpdate.
//!
//! Vectors:
//! * TLS 1.3 AES-128-GCM: RFC 8448 section 3 ("Simple 1-RTT Handshake"), the application
//!   traffic keys ({client}/{server} "derive write traffic keys for application data") and the
//!   five records protected with them: the server's NewSessionTicket (seq 0), application data
//!   (seq 1) and alert (seq 2), the client's application data (seq 0) and alert (seq 1).
//! * The other five (TLS 1.2 AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305; TLS 1.3 AES-256-GCM,
//!   ChaCha20-Poly1305): no RFC publishes TLS 1.2 or these 1.3 records, so the expected bytes
//!   were produced once, independently of this code, with python3-cryptography 48.0 (its
//!   OpenSSL 3.0 backend) by this script, which follows RFC 5246 6.2.3.3 / RFC 5288 / RFC 7905
//!   / RFC 8446 5.2-5.3 and Linux's explicit-nonce rule (`iv` field, +1 per record):
//!
//! ```text
//! from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
//! def xor(a, b): return bytes(x ^ y for x, y in zip(a, b))
//! def be(n, w): return n.to_bytes(w, "big")
//! def rec12(aead, salt, iv, seq, explicit, typ, pt):
//!     if salt: exp = be(explicit, 8); nonce = salt + exp
//!     else:    exp = b""; nonce = xor(iv, bytes(4) + be(seq, 8))
//!     aad = be(seq, 8) + bytes([typ, 3, 3]) + be(len(pt), 2)
//!     body = exp + aead.encrypt(nonce, pt, aad)
//!     return bytes([typ, 3, 3]) + be(len(body), 2) + body
//! def rec13(aead, iv, seq, typ, pt):
//!     inner = pt + bytes([typ]); hdr = bytes([23, 3, 3]) + be(len(inner) + 16, 2)
//!     return hdr + aead.encrypt(xor(iv, bytes(4) + be(seq, 8)), inner, hdr)
//! K16, K32 = bytes(range(16)), bytes(range(32))
//! A = b"GET / HTTP/1.1\r\nHost: snstack\r\n\r\n"; B = bytes([1, 0])
//! S, I8, I12 = bytes(range(0xa0, 0xa4)), bytes(range(0xb0, 0xb8)), bytes(range(0xc0, 0xcc))
//! EX = int.from_bytes(I8, "big")
//! # records i = 0, 1 = (23, A), (21, B) at sequence numbers 5 and 6:
//! rec12(AESGCM(K16), S, None, 5 + i, EX + i, t, p)            # tls12 aes128
//! rec12(AESGCM(K32), S, None, 5 + i, EX + i, t, p)            # tls12 aes256
//! rec12(ChaCha20Poly1305(K32), b"", I12, 5 + i, None, t, p)   # tls12 chacha
//! rec13(AESGCM(K32), S + I8, 5 + i, t, p)                     # tls13 aes256
//! rec13(ChaCha20Poly1305(K32), I12, 5 + i, t, p)              # tls13 chacha
//! ```

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey};

use super::open::{Opener, Peek};
use super::reassembly::RecordBuf;
use super::record::{content_type as ct, Layout, MAX_PLAINTEXT, MAX_RECORD_LEN};
use super::seal::Sealer;
use super::uapi::{Cipher, CryptoInfo, Suite, Version};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn info(v: Version, c: Cipher, key: &[u8], salt: &[u8], iv: &[u8], seq: u64) -> CryptoInfo {
    CryptoInfo::new(
        Suite {
            version: v,
            cipher: c,
        },
        key,
        salt,
        iv,
        seq,
    )
    .unwrap()
}

/// Checks both directions against one known record: the opener yields the content type and
/// plaintext, and the sealer at the same state produces the record byte for byte.
fn check(
    sealer: &mut Sealer,
    opener: &mut Opener,
    ty: u8,
    plain: Option<&[u8]>,
    record: &[u8],
) -> Vec<u8> {
    let mut buf = record.to_vec();
    let o = opener.open_in_place(&mut buf).unwrap();
    assert_eq!(o.content_type, ty);
    let got = buf[o.plaintext].to_vec();
    if let Some(p) = plain {
        assert_eq!(got, p);
    }
    let mut out = vec![0u8; record.len() + 7];
    let n = sealer.seal(ty, &got, &mut out).unwrap();
    assert_eq!(
        &out[..n],
        record,
        "seal of {} bytes of type {ty}",
        got.len()
    );
    got
}

fn rfc8448_payload() -> Vec<u8> {
    (0u8..0x32).collect()
}

#[test]
fn tls13_aes128_rfc8448_client() {
    let i = info(
        Version::Tls13,
        Cipher::AesGcm128,
        &hex("17 42 2d da 59 6e d5 d9 ac d8 90 e3 c6 3f 50 51"),
        &hex("5b 78 92 3d"),
        &hex("ee 08 57 90 33 e5 23 d9"),
        0,
    );
    let (mut s, mut o) = (Sealer::new(&i).unwrap(), Opener::new(&i).unwrap());
    let app = hex(
        "17 03 03 00 43 a2 3f 70 54 b6 2c 94 d0 af fa fe 82 28 ba 55 cb ef ac ea 42 f9 14 aa
         66 bc ab 3f 2b 98 19 a8 a5 b4 6b 39 5b d5 4a 9a 20 44 1e 2b 62 97 4e 1f 5a 62 92 a2
         97 70 14 bd 1e 3d ea e6 3a ee bb 21 69 49 15 e4",
    );
    check(
        &mut s,
        &mut o,
        ct::APPLICATION_DATA,
        Some(&rfc8448_payload()),
        &app,
    );
    let alert = hex("17 03 03 00 13 c9 87 27 60 65 56 66 b7 4d 7f f1 15 3e fd 6d b6 d0 b0 e3");
    check(&mut s, &mut o, ct::ALERT, Some(&[1, 0]), &alert);
    assert_eq!((s.seq(), o.seq()), (2, 2));
}

#[test]
fn tls13_aes128_rfc8448_server() {
    let i = info(
        Version::Tls13,
        Cipher::AesGcm128,
        &hex("9f 02 28 3b 6c 9c 07 ef c2 6b b9 f2 ac 92 e3 56"),
        &hex("cf 78 2b 88"),
        &hex("dd 83 54 9a ad f1 e9 84"),
        0,
    );
    let (mut s, mut o) = (Sealer::new(&i).unwrap(), Opener::new(&i).unwrap());
    let nst = hex(
        "17 03 03 00 de 3a 6b 8f 90 41 4a 97 d6 95 9c 34 87 68 0d e5 13 4a 2b 24 0e 6c ff ac
         11 6e 95 d4 1d 6a f8 f6 b5 80 dc f3 d1 1d 63 c7 58 db 28 9a 01 59 40 25 2f 55 71 3e
         06 1d c1 3e 07 88 91 a3 8e fb cf 57 53 ad 8e f1 70 ad 3c 73 53 d1 6d 9d a7 73 b9 ca
         7f 2b 9f a1 b6 c0 d4 a3 d0 3f 75 e0 9c 30 ba 1e 62 97 2a c4 6f 75 f7 b9 81 be 63 43
         9b 29 99 ce 13 06 46 15 13 98 91 d5 e4 c5 b4 06 f1 6e 3f c1 81 a7 7c a4 75 84 00 25
         db 2f 0a 77 f8 1b 5a b0 5b 94 c0 13 46 75 5f 69 23 2c 86 51 9d 86 cb ee ac 87 aa c3
         47 d1 43 f9 60 5d 64 f6 50 db 4d 02 3e 70 e9 52 ca 49 fe 51 37 12 1c 74 bc 26 97 68
         7e 24 87 46 d6 df 35 30 05 f3 bc e1 86 96 12 9c 81 53 55 6b 3b 6c 67 79 b3 7b f1 59
         85 68 4f",
    );
    // The NewSessionTicket: a 205-byte handshake message (type 4, length 0xc9), a KeyUpdate it
    // is not.
    let t = check(&mut s, &mut o, ct::HANDSHAKE, None, &nst);
    assert_eq!((t.len(), &t[..4]), (205, &[4u8, 0, 0, 0xc9][..]));
    assert!(!o.key_update_pending());
    let app = hex(
        "17 03 03 00 43 2e 93 7e 11 ef 4a c7 40 e5 38 ad 36 00 5f c4 a4 69 32 fc 32 25 d0 5f
         82 aa 1b 36 e3 0e fa f9 7d 90 e6 df fc 60 2d cb 50 1a 59 a8 fc c4 9c 4b f2 e5 f0 a2
         1c 00 47 c2 ab f3 32 54 0d d0 32 e1 67 c2 95 5d",
    );
    check(
        &mut s,
        &mut o,
        ct::APPLICATION_DATA,
        Some(&rfc8448_payload()),
        &app,
    );
    let alert = hex("17 03 03 00 13 b5 8f d6 71 66 eb f5 99 d2 47 20 cf be 7e fa 7a 88 64 a9");
    check(&mut s, &mut o, ct::ALERT, Some(&[1, 0]), &alert);
}

const REQ: &[u8] = b"GET / HTTP/1.1\r\nHost: snstack\r\n\r\n";
const K32: [u8; 32] = {
    let mut k = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        k[i] = i as u8;
        i += 1;
    }
    k
};
const SALT: [u8; 4] = [0xa0, 0xa1, 0xa2, 0xa3];
const IV8: [u8; 8] = [0xb0, 0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7];
const IV12: [u8; 12] = [
    0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xcb,
];

/// The generated vectors' parameters for one suite (see the module doc).
fn generated(v: Version, c: Cipher) -> CryptoInfo {
    let key = &K32[..c.key_len()];
    match c {
        Cipher::Chacha20Poly1305 => info(v, c, key, &[], &IV12, 5),
        // TLS 1.3: the 12-byte IV S || I8, split into salt and iv as OpenSSL hands it to Linux.
        Cipher::AesGcm128 | Cipher::AesGcm256 => info(v, c, key, &SALT, &IV8, 5),
    }
}

fn kat_generated(v: Version, c: Cipher, records: [&str; 2]) {
    let i = generated(v, c);
    let (mut s, mut o) = (Sealer::new(&i).unwrap(), Opener::new(&i).unwrap());
    check(
        &mut s,
        &mut o,
        ct::APPLICATION_DATA,
        Some(REQ),
        &hex(records[0]),
    );
    check(&mut s, &mut o, ct::ALERT, Some(&[1, 0]), &hex(records[1]));
    assert_eq!((s.seq(), o.seq()), (7, 7));
}

#[test]
fn tls12_aes128_generated() {
    kat_generated(
        Version::Tls12,
        Cipher::AesGcm128,
        [
            "1703030039b0b1b2b3b4b5b6b737aa7654adff7f2866b4d8bebb99eabd830bf7e1d4f7521ab73317
             c546e51b801ddccdfe527a40753a581c2008af1024ee",
            "150303001ab0b1b2b3b4b5b6b81d2cde1775c473628f80219bdcc3486e0c3d",
        ],
    );
}

#[test]
fn tls12_aes256_generated() {
    kat_generated(
        Version::Tls12,
        Cipher::AesGcm256,
        [
            "1703030039b0b1b2b3b4b5b6b7e824bb84826c87bd80879edfef8347e684cf20b912af2362cf3ee1
             4ccd112b00f4fe6e07e45d3fe6a0a4b75e005ffe6128",
            "150303001ab0b1b2b3b4b5b6b8b5054c3fb64d7ef776c769c8311e773a878f",
        ],
    );
}

#[test]
fn tls12_chacha20_generated() {
    kat_generated(
        Version::Tls12,
        Cipher::Chacha20Poly1305,
        [
            "1703030031bda3b62032c4056133fe6bc4e42ac782dd941062740548538054919011484f08d38567
             2e2fe7894f2240f4460784bf8463",
            "15030300127e1130acabe7b2ad371011841f5020a54d80",
        ],
    );
}

#[test]
fn tls13_aes256_generated() {
    kat_generated(
        Version::Tls13,
        Cipher::AesGcm256,
        [
            "170303003265bf8553815773d79cc55782be5f84034357de38c22dcf892276ef53adeeb2ae3acf82
             b2e75f1366fbf4b0634c462b889a91",
            "1703030013a1e2eabe8ff0ea8bbb7c7a8065da7acc4e5a40",
        ],
    );
}

#[test]
fn tls13_chacha20_generated() {
    kat_generated(
        Version::Tls13,
        Cipher::Chacha20Poly1305,
        [
            "1703030032bda3b62032c4056133fe6bc4e42ac782dd941062740548538054919011484f08d3a678
             56f6f5bbf4fd3dd46aa1b1dcbe7199",
            "17030300137e113dc54197fbe66a8449ba922196a76ce1b8",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Behaviour, for every suite.

const SUITES: [(Version, Cipher); 6] = [
    (Version::Tls12, Cipher::AesGcm128),
    (Version::Tls12, Cipher::AesGcm256),
    (Version::Tls12, Cipher::Chacha20Poly1305),
    (Version::Tls13, Cipher::AesGcm128),
    (Version::Tls13, Cipher::AesGcm256),
    (Version::Tls13, Cipher::Chacha20Poly1305),
];

fn pair(v: Version, c: Cipher, seq: u64) -> (Sealer, Opener) {
    let key = &K32[..c.key_len()];
    let i = info(v, c, key, &SALT[..c.salt_len()], &IV12[..c.iv_len()], seq);
    (Sealer::new(&i).unwrap(), Opener::new(&i).unwrap())
}

/// Seals `msgs` one record each, back to back.
fn stream(s: &mut Sealer, msgs: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; MAX_RECORD_LEN];
    for (ty, m) in msgs {
        let n = s.seal(*ty, m, &mut buf).unwrap();
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// Feeds `chunks` through a `RecordBuf` and opens every record as it completes.
fn receive(o: &mut Opener, chunks: &[&[u8]]) -> Vec<(u8, Vec<u8>)> {
    let mut rb = RecordBuf::new();
    let mut got = Vec::new();
    for chunk in chunks {
        let mut rest = *chunk;
        while !rest.is_empty() {
            let n = rb.fill(o, rest).unwrap();
            rest = &rest[n..];
            if rb.is_complete() {
                let (ty, p) = rb.open(o).unwrap();
                got.push((ty, p.to_vec()));
            }
        }
    }
    assert!(rb.is_empty());
    got
}

fn msgs() -> Vec<(u8, Vec<u8>)> {
    vec![
        (ct::APPLICATION_DATA, b"hello".to_vec()),
        (ct::APPLICATION_DATA, Vec::new()),
        (ct::HANDSHAKE, (0..40).collect()),
        (ct::ALERT, vec![1, 0]),
    ]
}

#[test]
fn round_trip_at_every_split_position() {
    for (v, c) in SUITES {
        let (mut s, _) = pair(v, c, 1000);
        let wire = stream(&mut s, &msgs());
        for cut in 0..=wire.len() {
            let (_, mut o) = pair(v, c, 1000);
            let got = receive(&mut o, &[&wire[..cut], &wire[cut..]]);
            assert_eq!(got, msgs(), "{v:?} {c:?} cut {cut}");
        }
        // Two cuts, a sample of pairs; and one byte at a time.
        for a in (0..wire.len()).step_by(7) {
            for b in (a..wire.len()).step_by(5) {
                let (_, mut o) = pair(v, c, 1000);
                let got = receive(&mut o, &[&wire[..a], &wire[a..b], &wire[b..]]);
                assert_eq!(got, msgs(), "{v:?} {c:?} cuts {a} {b}");
            }
        }
        let (_, mut o) = pair(v, c, 1000);
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(receive(&mut o, &bytes), msgs());
    }
}

#[test]
fn full_size_records_split_anywhere_and_the_limit() {
    for (v, c) in SUITES {
        let big: Vec<u8> = (0..MAX_PLAINTEXT).map(|i| (i * 7) as u8).collect();
        let (mut s, _) = pair(v, c, 0);
        let wire = stream(&mut s, &[(ct::APPLICATION_DATA, big.clone())]);
        assert_eq!(wire.len(), Layout::of(v, c).record_len(MAX_PLAINTEXT));
        for cut in [1, 4, 5, 6, 13, 14, 4096, wire.len() - 17, wire.len() - 1] {
            let (_, mut o) = pair(v, c, 0);
            let got = receive(&mut o, &[&wire[..cut], &wire[cut..]]);
            assert_eq!(got, vec![(ct::APPLICATION_DATA, big.clone())]);
        }
        // One byte more than 2^14 is refused by the sealer.
        let mut buf = vec![0u8; MAX_RECORD_LEN + 1];
        assert_eq!(
            s.seal(ct::APPLICATION_DATA, &vec![0; MAX_PLAINTEXT + 1], &mut buf),
            Err(libc::EMSGSIZE)
        );
    }
}

#[test]
fn open_into_matches_open_in_place() {
    for (v, c) in SUITES {
        let (mut s, mut o) = pair(v, c, 3);
        let wire = stream(&mut s, &[(ct::APPLICATION_DATA, REQ.to_vec())]);
        let mut out = vec![0u8; wire.len()];
        let need = wire.len() - Layout::of(v, c).prefix_len();
        assert_eq!(o.open_into(&wire, &mut out[..need - 1]), Err(libc::ENOBUFS));
        assert_eq!(
            o.open_into(&wire[..wire.len() - 1], &mut out),
            Err(libc::EAGAIN)
        );
        let (ty, n) = o.open_into(&wire, &mut out[..need]).unwrap();
        assert_eq!((ty, &out[..n]), (ct::APPLICATION_DATA, REQ));
        assert_eq!(o.seq(), 4);
    }
}

#[test]
fn zero_length_records() {
    for (v, c) in SUITES {
        let (mut s, mut o) = pair(v, c, 0);
        let mut buf = vec![0u8; 64];
        let n = s.seal(ct::APPLICATION_DATA, &[], &mut buf).unwrap();
        assert_eq!(n, Layout::of(v, c).overhead());
        let got = o.open_in_place(&mut buf[..n]).unwrap();
        assert_eq!(got.content_type, ct::APPLICATION_DATA);
        assert!(got.plaintext.is_empty());
    }
}

#[test]
fn any_changed_byte_fails() {
    for (v, c) in SUITES {
        let (mut s, _) = pair(v, c, 9);
        let wire = stream(&mut s, &[(ct::APPLICATION_DATA, REQ.to_vec())]);
        for i in 0..wire.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = wire.clone();
                bad[i] ^= bit;
                let (_, mut o) = pair(v, c, 9);
                let want = match i {
                    // The type: part of the additional data in both versions.
                    0 => Err(libc::EBADMSG),
                    1 | 2 => Err(libc::EINVAL),
                    // The length: too long (EMSGSIZE) or no longer the record's (EAGAIN: more
                    // bytes wanted, or EBADMSG: the tag is read from elsewhere).
                    3 | 4 => match o.peek(&bad) {
                        Err(e) => Err(e),
                        Ok(Peek::Incomplete { .. }) => Err(libc::EAGAIN),
                        Ok(Peek::Record { .. }) => Err(libc::EBADMSG),
                    },
                    _ => Err(libc::EBADMSG),
                };
                let (_, mut o) = pair(v, c, 9);
                assert_eq!(
                    o.open_in_place(&mut bad).map(|_| ()),
                    want,
                    "{v:?} {c:?} byte {i} bit {bit:#x}"
                );
            }
        }
        // The failure is final, as Linux aborts the socket: the intact record does not open.
        let (_, mut o) = pair(v, c, 9);
        let mut bad = wire.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(o.open_in_place(&mut bad), Err(libc::EBADMSG));
        assert_eq!(o.failed(), Some(libc::EBADMSG));
        assert_eq!(o.open_in_place(&mut wire.clone()), Err(libc::EBADMSG));
        assert_eq!(o.peek(&wire), Err(libc::EBADMSG));
    }
}

#[test]
fn replayed_or_reordered_records_fail() {
    for (v, c) in SUITES {
        let (mut s, mut o) = pair(v, c, 0);
        let first = stream(&mut s, &[(ct::APPLICATION_DATA, b"one".to_vec())]);
        let second = stream(&mut s, &[(ct::APPLICATION_DATA, b"two".to_vec())]);
        // Replayed: the sequence number has moved on.
        o.open_in_place(&mut first.clone()).unwrap();
        assert_eq!(
            o.open_in_place(&mut first.clone()),
            Err(libc::EBADMSG),
            "{v:?} {c:?}"
        );
        // Reordered: the second record first.
        let (_, mut o) = pair(v, c, 0);
        assert_eq!(
            o.open_in_place(&mut second.clone()),
            Err(libc::EBADMSG),
            "{v:?} {c:?}"
        );
    }
}

#[test]
fn oversized_and_undersized_headers() {
    for (v, c) in SUITES {
        let l = Layout::of(v, c);
        let header = |len: usize| [23u8, 3, 3, (len >> 8) as u8, len as u8];
        // The longest allowed length only wants more bytes ...
        let (_, mut o) = pair(v, c, 0);
        assert_eq!(
            o.peek(&header(l.max_length())),
            Ok(Peek::Incomplete {
                need: l.max_length()
            })
        );
        // ... one more is EMSGSIZE at once, from the header alone, and for good.
        assert_eq!(o.peek(&header(l.max_length() + 1)), Err(libc::EMSGSIZE));
        assert_eq!(o.peek(&header(10)), Err(libc::EMSGSIZE));
        let (_, mut o) = pair(v, c, 0);
        assert_eq!(o.peek(&header(0xffff)), Err(libc::EMSGSIZE));
        // Shorter than nonce and tag: EBADMSG.
        let (_, mut o) = pair(v, c, 0);
        assert_eq!(o.peek(&header(l.min_length() - 1)), Err(libc::EBADMSG));
        // A bad version: EINVAL.
        let (_, mut o) = pair(v, c, 0);
        assert_eq!(o.peek(&[23, 3, 1, 0, 40]), Err(libc::EINVAL));
        // Partial headers want the rest.
        let (_, mut o) = pair(v, c, 0);
        assert_eq!(o.peek(&[23, 3]), Ok(Peek::Incomplete { need: 3 }));
        assert_eq!(o.peek(&[]), Ok(Peek::Incomplete { need: 5 }));
        // Through a RecordBuf the same: the header is judged as soon as it is in.
        let (_, mut o) = pair(v, c, 0);
        let mut rb = RecordBuf::new();
        assert_eq!(rb.fill(&mut o, &header(l.max_length() + 1)[..4]), Ok(4));
        assert_eq!(rb.fill(&mut o, &[0xff]), Err(libc::EMSGSIZE));
    }
}

/// A TLS 1.3 record with an arbitrary inner plaintext (content, type, padding), sealed with
/// `ring` directly: the sealer never pads.
fn seal13_raw(c: Cipher, seq: u64, outer: u8, inner: &[u8]) -> Vec<u8> {
    let alg = match c {
        Cipher::AesGcm128 => &ring::aead::AES_128_GCM,
        Cipher::AesGcm256 => &ring::aead::AES_256_GCM,
        Cipher::Chacha20Poly1305 => &ring::aead::CHACHA20_POLY1305,
    };
    let key = LessSafeKey::new(UnboundKey::new(alg, &K32[..c.key_len()]).unwrap());
    let mut nonce = [0u8; 12];
    nonce[..c.salt_len()].copy_from_slice(&SALT[..c.salt_len()]);
    nonce[c.salt_len()..].copy_from_slice(&IV12[..c.iv_len()]);
    for (n, s) in nonce[4..].iter_mut().zip(seq.to_be_bytes()) {
        *n ^= s;
    }
    let len = inner.len() + 16;
    let mut rec = vec![outer, 3, 3, (len >> 8) as u8, len as u8];
    let mut body = inner.to_vec();
    let aad = [23, 3, 3, (len >> 8) as u8, len as u8];
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut body,
        )
        .unwrap();
    rec.extend_from_slice(&body);
    rec.extend_from_slice(tag.as_ref());
    rec
}

#[test]
fn tls13_padding_inner_types_and_outer_type() {
    for c in [
        Cipher::AesGcm128,
        Cipher::AesGcm256,
        Cipher::Chacha20Poly1305,
    ] {
        let v = Version::Tls13;
        // Padding is stripped; the inner type is the last non-zero byte.
        let (_, mut o) = pair(v, c, 0);
        let mut rec = seal13_raw(c, 0, 23, b"data\x17\0\0\0\0\0");
        let got = o.open_in_place(&mut rec).unwrap();
        assert_eq!((got.content_type, &rec[got.plaintext]), (23, &b"data"[..]));
        // Trailing zeros of the content itself are kept (they come before the type).
        let mut rec = seal13_raw(c, 1, 23, b"ab\0\0\x16\0");
        let got = o.open_in_place(&mut rec).unwrap();
        assert_eq!(
            (got.content_type, &rec[got.plaintext]),
            (22, &b"ab\0\0"[..])
        );
        // An unknown inner type is passed on, as Linux passes it to TLS_GET_RECORD_TYPE.
        let mut rec = seal13_raw(c, 2, 23, b"?\x63");
        let got = o.open_in_place(&mut rec).unwrap();
        assert_eq!((got.content_type, &rec[got.plaintext]), (0x63, &b"?"[..]));
        // The sealer sends unknown types too.
        let (mut s, mut o2) = pair(v, c, 0);
        let wire = stream(&mut s, &[(0x63, b"x".to_vec())]);
        assert_eq!(receive(&mut o2, &[&wire]), vec![(0x63, b"x".to_vec())]);
        // All zeros: no type, EBADMSG; empty inner plaintext likewise.
        let (_, mut o) = pair(v, c, 0);
        let mut rec = seal13_raw(c, 0, 23, &[0; 8]);
        assert_eq!(o.open_in_place(&mut rec), Err(libc::EBADMSG));
        let (_, mut o) = pair(v, c, 0);
        let mut rec = seal13_raw(c, 0, 23, &[]);
        assert_eq!(o.open_in_place(&mut rec), Err(libc::EBADMSG));
        // An outer type other than application_data fails authentication (RFC 8446 5.2; Linux
        // would accept it, see open.rs).
        let (_, mut o) = pair(v, c, 0);
        let mut rec = seal13_raw(c, 0, 22, b"x\x16");
        assert_eq!(o.open_in_place(&mut rec), Err(libc::EBADMSG));
        // 2^14 of content plus padding beyond Linux's limit: EMSGSIZE (RFC 8446 would allow
        // 255 more bytes; Linux does not).
        let mut inner = vec![1u8; MAX_PLAINTEXT];
        inner.extend_from_slice(&[23, 0]);
        let (_, mut o) = pair(v, c, 0);
        let mut rec = seal13_raw(c, 0, 23, &inner);
        assert_eq!(o.open_in_place(&mut rec), Err(libc::EMSGSIZE));
        inner.pop();
        let (_, mut o) = pair(v, c, 0);
        let mut rec = seal13_raw(c, 0, 23, &inner);
        let got = o.open_in_place(&mut rec).unwrap();
        assert_eq!(got.plaintext.len(), MAX_PLAINTEXT);
    }
}

#[test]
fn tls12_content_type_zero_is_ebadmsg() {
    for c in [Cipher::AesGcm128, Cipher::Chacha20Poly1305] {
        let (mut s, mut o) = pair(Version::Tls12, c, 0);
        let mut wire = stream(&mut s, &[(0, b"x".to_vec())]);
        assert_eq!(o.open_in_place(&mut wire), Err(libc::EBADMSG));
    }
}

#[test]
fn receive_sequence_does_not_wrap() {
    for (v, c) in SUITES {
        let (mut s, mut o) = pair(v, c, u64::MAX - 1);
        let wire = stream(
            &mut s,
            &[
                (ct::APPLICATION_DATA, b"a".to_vec()),
                (ct::APPLICATION_DATA, b"b".to_vec()),
            ],
        );
        let got = receive(&mut o, &[&wire]);
        assert_eq!(got.len(), 2);
        assert_eq!(o.crypto_info().rec_seq(), 0);
        // Record 2^64 would reuse nonce 0: Linux aborted the socket with EBADMSG.
        let (mut s2, _) = pair(v, c, 0);
        let mut next = stream(&mut s2, &[(ct::APPLICATION_DATA, b"c".to_vec())]);
        assert_eq!(o.open_in_place(&mut next), Err(libc::EBADMSG));
    }
}

#[test]
fn tls13_key_update_pauses_until_rekey() {
    for c in [Cipher::AesGcm128, Cipher::Chacha20Poly1305] {
        let v = Version::Tls13;
        let (mut s, mut o) = pair(v, c, 0);
        // KeyUpdate (24), length 1, update_not_requested (0), then data under the new key.
        let wire = stream(&mut s, &[(ct::HANDSHAKE, vec![24, 0, 0, 1, 0])]);
        let got = receive(&mut o, &[&wire]);
        assert_eq!(got, vec![(ct::HANDSHAKE, vec![24, 0, 0, 1, 0])]);
        assert!(o.key_update_pending());
        let new = info(
            v,
            c,
            &[0x55; 32][..c.key_len()],
            &[1; 4][..c.salt_len()],
            &[2; 12][..c.iv_len()],
            0,
        );
        let mut s2 = Sealer::new(&new).unwrap();
        let mut next = stream(&mut s2, &[(ct::APPLICATION_DATA, b"new".to_vec())]);
        assert_eq!(o.peek(&next), Err(libc::EKEYEXPIRED));
        assert_eq!(o.open_in_place(&mut next.clone()), Err(libc::EKEYEXPIRED));
        assert_eq!(o.failed(), None);
        o.rekey(&new).unwrap();
        let got = o.open_in_place(&mut next).unwrap();
        assert_eq!(got.content_type, ct::APPLICATION_DATA);
        // TLS 1.2 has no KeyUpdate: a handshake record starting with 24 is just data.
        let (mut s, mut o) = pair(Version::Tls12, c, 0);
        let wire = stream(&mut s, &[(ct::HANDSHAKE, vec![24, 0, 0, 1, 0])]);
        receive(&mut o, &[&wire]);
        assert!(!o.key_update_pending());
    }
}

#[test]
fn seal_in_place_builds_the_record_around_the_plaintext() {
    // The shape the data path uses: plaintext copied once, at prefix_len, into the frame.
    for (v, c) in SUITES {
        let (mut s, mut o) = pair(v, c, 0);
        let l = s.layout();
        let mut frame = vec![0u8; l.record_len(REQ.len()) + 3];
        frame[l.prefix_len()..l.prefix_len() + REQ.len()].copy_from_slice(REQ);
        let n = s
            .seal_in_place(ct::APPLICATION_DATA, &mut frame, REQ.len())
            .unwrap();
        assert_eq!(n, l.record_len(REQ.len()));
        let got = o.open_in_place(&mut frame[..n]).unwrap();
        assert_eq!(&frame[got.plaintext], REQ);
    }
}
