//! The payload API's agent side: a listener that declared a framing (`SOL_SNSTACK`) gets its
//! connections' bytes as whole-message records (shm_proto::record), whatever pieces TCP
//! delivered them in; malformed input resets that connection with a counted reason and reaches
//! the host as nothing but `SF_ERROR`/`EPROTO` and the reason's code.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use shm_proto::record::{self, FramingSpec};
use shm_proto::*;

fn framing(h: &mut Host, slot: u32, spec: FramingSpec) -> i64 {
    let v = spec.encode();
    h.call(
        slot,
        Request::SetSockOpt {
            level: record::SOL_SNSTACK,
            name: record::SNSTACK_FRAMING,
            len: v.len(),
            val: OptVal::inline(&v),
        },
    )
    .result
}

/// A framed listener on 127.0.0.1; returns (listener slot, port).
fn service(h: &mut Host, spec: FramingSpec) -> (u32, u16) {
    let ls = h.call(0, tcp4()).result as u32;
    assert_eq!(framing(h, ls, spec), 0);
    assert_eq!(
        h.call(ls, bind_to(&"127.0.0.1:0".parse().unwrap())).result,
        0
    );
    assert_eq!(h.call(ls, Request::Listen { backlog: 16 }).result, 0);
    let port = port_of(&h.call(ls, Request::GetSockName));
    (ls, port)
}

/// The next connection of listener `ls`: a handoff record the agent wrote into its stream
/// (after the first accept the binding takes connections that way), else an `OP_ACCEPT`.
fn accept(h: &mut Host, ls: u32) -> u32 {
    let mut slot = None;
    until("a connection", || {
        let rx = h.region.rx(ls).unwrap();
        if let Some(r) = shm_proto::handoff::take(&rx).expect("handoff records") {
            slot = Some(r.slot);
            return true;
        }
        let e = h.call(ls, Request::Accept { wait: false });
        if e.result >= 0 {
            slot = Some(e.result as u32);
            return true;
        }
        assert_eq!(e.result, -(libc::EAGAIN as i64));
        false
    });
    slot.unwrap()
}

/// Takes every record published for `slot` (releasing them); `(message, part)`.
fn take_records(h: &mut Host, slot: u32, out: &mut Vec<(Vec<u8>, bool)>) {
    let rx = h.region.rx(slot).unwrap();
    let mut head = rx.load_head();
    while let Some(r) = record::next(&rx, head, rx.load_tail()).expect("well-formed records") {
        // SAFETY: `next` checked the record lies inside the ring and before the tail; the
        // agent does not rewrite it before the head passes it.
        let m = unsafe { std::slice::from_raw_parts(rx.ptr(r.off), r.len as usize) };
        out.push((m.to_vec(), r.part));
        head = r.next;
        rx.publish_head(head);
        if wake::rx_space_needed(&h.sock(slot).rx_head.0.blocked) {
            h.push(Request::RxSpace.to_cmd(slot));
        }
    }
}

const RESP: FramingSpec = FramingSpec {
    kind: record::FRAMING_RESP_REQUEST,
    flags: 0,
    width: 0,
    max_message: 0,
};

#[test]
fn pipelined_requests_arrive_as_whole_messages_however_tcp_splits_them() {
    let agent = Agent::start("framed-resp");
    let mut h = Host::attach(&agent.sock);
    let (ls, port) = service(&mut h, RESP);
    let mut want: Vec<Vec<u8>> = Vec::new();
    let mut stream = Vec::new();
    for i in 0..200 {
        let key = format!("key:{i}");
        let val = "v".repeat(i * 7 % 300);
        let m = format!(
            "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{val}\r\n",
            key.len(),
            val.len()
        );
        stream.extend_from_slice(m.as_bytes());
        want.push(m.into_bytes());
        if i % 10 == 0 {
            stream.extend_from_slice(b"PING\r\n");
            want.push(b"PING\r\n".to_vec());
        }
    }
    for step in [1usize, 3, 1000, stream.len()] {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_nodelay(true).unwrap();
        let cs = accept(&mut h, ls);
        let mut got = Vec::new();
        for piece in stream.chunks(step) {
            c.write_all(piece).unwrap();
            if step < 10 {
                // Let some pieces arrive alone.
                take_records(&mut h, cs, &mut got);
            }
        }
        until("every message", || {
            take_records(&mut h, cs, &mut got);
            got.len() >= want.len()
        });
        assert!(got.iter().all(|(_, p)| !p));
        let msgs: Vec<Vec<u8>> = got.into_iter().map(|(m, _)| m).collect();
        assert_eq!(msgs, want, "step {step}");
        // The peer closes between messages: the end of the stream, no error.
        drop(c);
        until("SF_RX_FIN", || {
            h.sock(cs).state.0.flags.load(Ordering::SeqCst) & SF_RX_FIN != 0
        });
        let st = &h.sock(cs).state.0;
        assert_eq!(st.flags.load(Ordering::SeqCst) & SF_ERROR, 0);
        assert_eq!(st.framing_error.load(Ordering::SeqCst), 0);
        h.push(Request::Close.to_cmd(cs));
        h.ring();
    }
    let s = agent.stats();
    assert!(s["payload_messages"] >= 4 * want.len() as u64, "{s:?}");
}

#[test]
fn a_message_larger_than_the_ring_comes_in_flagged_parts() {
    let agent = Agent::start("framed-parts");
    let mut h = Host::attach(&agent.sock);
    let (ls, port) = service(&mut h, RESP);
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let cs = accept(&mut h, ls);
    let big = vec![b'x'; 1 << 20];
    let mut m = format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n", big.len()).into_bytes();
    m.extend_from_slice(&big);
    m.extend_from_slice(b"\r\n");
    let w = {
        let m = m.clone();
        std::thread::spawn(move || {
            c.write_all(&m).unwrap();
            c.write_all(b"PING\r\n").unwrap();
            c
        })
    };
    let mut got = Vec::new();
    until("the big message and the next", || {
        take_records(&mut h, cs, &mut got);
        got.last().is_some_and(|(l, _)| l == b"PING\r\n")
    });
    let _c = w.join().unwrap();
    let n = got.len();
    assert!(n > 3, "{n} records");
    let max = record::max_record_len(h.region.geometry().rx_size) as usize;
    for (i, (p, part)) in got[..n - 2].iter().enumerate() {
        assert!(*part, "record {i} of the big message is flagged");
        assert_eq!(p.len(), max);
    }
    assert!(!got[n - 2].1, "the last piece ends the message");
    let joined: Vec<u8> = got[..n - 1].iter().flat_map(|(p, _)| p.clone()).collect();
    assert_eq!(joined, m);
    let s = agent.stats();
    assert_eq!(s["payload_parts"], n as u64 - 2, "{s:?}");
}

#[test]
fn malformed_input_resets_only_that_connection_and_is_counted() {
    let agent = Agent::start("framed-bad");
    let mut h = Host::attach(&agent.sock);
    let line = FramingSpec {
        kind: record::FRAMING_LINE,
        flags: record::SPEC_CRLF,
        width: 0,
        max_message: 0,
    };
    let (ls, port) = service(&mut h, line);
    let mut good = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let gs = accept(&mut h, ls);
    let mut bad = TcpStream::connect(("127.0.0.1", port)).unwrap();
    bad.set_read_timeout(Some(TIMEOUT)).unwrap();
    let bs = accept(&mut h, ls);
    bad.write_all(b"fine\r\nnot fine\nsecret\r\n").unwrap();
    good.write_all(b"one\r\n").unwrap();
    let (mut g, mut b) = (Vec::new(), Vec::new());
    until("the error", || {
        take_records(&mut h, bs, &mut b);
        h.sock(bs).state.0.flags.load(Ordering::SeqCst) & SF_ERROR != 0
    });
    take_records(&mut h, bs, &mut b);
    // Only what came before the violation reached the host.
    assert_eq!(b, [(b"fine\r\n".to_vec(), false)]);
    let st = &h.sock(bs).state.0;
    assert_eq!(st.error.load(Ordering::SeqCst), libc::EPROTO as u32);
    assert_eq!(
        record::reason_name(st.framing_error.load(Ordering::SeqCst)),
        Some("bare_lf")
    );
    // Closing it resets the peer.
    h.push(Request::Close.to_cmd(bs));
    h.ring();
    let mut buf = [0u8; 16];
    match bad.read(&mut buf) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
        Ok(n) => panic!("read {n} bytes, want a reset"),
    }
    // The other connection goes on.
    good.write_all(b"two\r\n").unwrap();
    until("the good connection's lines", || {
        take_records(&mut h, gs, &mut g);
        g.len() == 2
    });
    assert_eq!(g[1].0, b"two\r\n");
    let s = agent.stats();
    assert_eq!(s["payload_malformed_bare_lf"], 1, "{s:?}");
}

#[test]
fn the_option_is_checked_and_read_back() {
    let agent = Agent::start("framed-opt");
    let mut h = Host::attach(&agent.sock);
    let s = h.call(0, tcp4()).result as u32;
    let get = Request::GetSockOpt {
        level: record::SOL_SNSTACK,
        name: record::SNSTACK_FRAMING,
        len: record::SPEC_LEN,
        cell: None,
    };
    assert_eq!(h.call(s, get).result, -(libc::ENODATA as i64));
    let bad = FramingSpec { width: 3, ..RESP };
    assert_eq!(framing(&mut h, s, bad), -(libc::EINVAL as i64));
    let spec = FramingSpec {
        kind: record::FRAMING_LENGTH,
        flags: record::SPEC_BIG_ENDIAN,
        width: 4,
        max_message: 100,
    };
    assert_eq!(framing(&mut h, s, spec), 0);
    assert_eq!(framing(&mut h, s, spec), -(libc::EALREADY as i64));
    let e = h.call(s, get);
    assert_eq!(e.result, record::SPEC_LEN as i64);
    assert_eq!(FramingSpec::decode(e.value()), Some(spec));
    let unknown = Request::SetSockOpt {
        level: record::SOL_SNSTACK,
        name: 99,
        len: 4,
        val: OptVal::inline(&[0; 4]),
    };
    assert_eq!(h.call(s, unknown).result, -(libc::ENOPROTOOPT as i64));
    // Announcing a HEAD is for HTTP response framing only.
    let expect = |v: u8| Request::SetSockOpt {
        level: record::SOL_SNSTACK,
        name: record::SNSTACK_EXPECT_RESPONSE,
        len: 1,
        val: OptVal::inline(&[v]),
    };
    assert_eq!(
        h.call(s, expect(record::EXPECT_HEAD)).result,
        -(libc::EINVAL as i64)
    );
    let hc = h.call(0, tcp4()).result as u32;
    let http = FramingSpec {
        kind: record::FRAMING_HTTP1_RESPONSE,
        ..RESP
    };
    assert_eq!(framing(&mut h, hc, http), 0);
    assert_eq!(h.call(hc, expect(record::EXPECT_HEAD)).result, 0);
    assert_eq!(h.call(hc, expect(7)).result, -(libc::EINVAL as i64));
    // After listen: too late.
    let (ls, _) = service(&mut h, RESP);
    assert_eq!(framing(&mut h, ls, RESP), -(libc::EINVAL as i64));
    let plain = h.call(0, tcp4()).result as u32;
    assert_eq!(
        h.call(plain, bind_to(&"127.0.0.1:0".parse().unwrap()))
            .result,
        0
    );
    assert_eq!(h.call(plain, Request::Listen { backlog: 4 }).result, 0);
    assert_eq!(framing(&mut h, plain, RESP), -(libc::EINVAL as i64));
    std::thread::sleep(Duration::from_millis(1));
}
