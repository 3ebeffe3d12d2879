//! A small segment-script language in the spirit of packetdrill: a script drives ONE engine
//! `Stack` at explicit virtual times with hand-written peer segments and application calls, and
//! asserts every TCP segment the engine emits (nothing may go out unexpected).
//!
//! ```text
//! // comment                      (also '#')
//! 0.000 listen 80 backlog 8       time: absolute seconds, or +0.040 relative to the last line
//! 0.100 < S 0:0(0) win 65535 mss 1460 sackOK ts 100 0 wscale 7
//! 0.100 > S. 0:0(0) ack 1 win 65535 mss 1460 sackOK ts * 100 wscale 7
//! 0.101 < . 1:1(0) ack 1 win 512 ts 101 *
//! 0.101 accept
//! 0.200 < P. 1:101(100) ack 1 win 512 ts 102 *
//! 0.240 > . 1:1(0) ack 101
//! 0.300 > none                    nothing (more) sent up to 0.300
//! ```
//!
//! Segments: `<` comes from the peer, `>` is expected from the engine. Flags: any of `S F R P E
//! W U` then an optional `.` for ACK (`S.`, `P.`, `F.`, `R.`, `.`). Fields, all optional:
//! `S:E(L)` (relative sequence, payload length), `seq N`, `ack N`, `win N` (the raw header
//! field, i.e. the scaled-down value), `mss N`, `sackOK`, `ts V E`, `wscale N`, `sack a:b ..`
//! (relative to the engine's ISN on `<`, to the peer's on `>`), `port P` (the peer's port,
//! default 40000, or the port `connect` targeted), `noopts` (`>`: no option at all). On `>` a
//! `*` ignores a field, options are compared (presence of each kind, then values) only when the
//! line names at least one option, `S:E(L)` checks sequence and payload length. On `<`, `ts V *`
//! echoes the engine's last TSval on that flow. Sequence numbers are relative to each side's ISN
//! per peer port (a `<` SYN without ACK re-bases the peer's ISN, a `>` SYN the engine's).
//!
//! ICMP: `< icmp frag-needed mtu N` quotes the last segment the engine sent on that flow.
//!
//! Calls: `listen P [backlog N]`, `connect P`, `accept`, `write N`, `read N`, `close`,
//! `shutdown wr|rd|rdwr`, `setsockopt NAME V` (nodelay cork keepalive keepidle keepintvl
//! keepcnt linger rcvbuf sndbuf maxseg), `so_error`, and checks `state NAME`, `sockets N`.
//! Any call may end with `= N` or `= EXXX` (defaults: `connect = EINPROGRESS`, `read N`/`write
//! N = N`, others `= 0`; `so_error = 0`).
//!
//! Timing: before a `<` or a call at t the engine runs its timers up to t and must have sent
//! nothing unexpected. A `>` at t must appear within `tolerance` (default 2 ms, directive
//! `tolerance 0.004`) of t. On a mismatch the test panics with the script line and the segment.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use snstack_tcp::errno::{self, Errno};
use snstack_tcp::stack::{SockId, SockOpt, Stack, StackConfig};
use snstack_tcp::wire::tcp::{flags as F, TcpOptions, TcpRepr};
use snstack_tcp::wire::{arp, checksum, ethernet, icmpv4, ipv4, tcp};
use snstack_tcp::{Instant, RxMeta, Seq};

pub const ME_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 2);
const ME_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const PEER_ISN: u32 = 1_000_000;
const DEFAULT_PEER_PORT: u16 = 40000;

#[derive(Default, Clone, Copy)]
struct Flow {
    peer_isn: u32,
    my_isn: u32,
    my_port: u16,
    my_tsval: u32,
    last_out: Option<(TcpRepr, usize)>,
}

struct Out {
    at: Instant,
    repr: TcpRepr,
    len: usize,
}

pub struct Runner {
    stack: Stack,
    now: Instant,
    tol_us: u64,
    flows: HashMap<u16, Flow>,
    listener: Option<SockId>,
    conn: Option<SockId>,
    /// The port the last `connect` targeted (the default flow afterwards).
    default_port: u16,
    my_port: u16,
    pending: VecDeque<Out>,
    lineno: usize,
    line: String,
}

fn errno_name(e: Errno) -> String {
    let names = [
        (errno::EAGAIN, "EAGAIN"),
        (errno::EINVAL, "EINVAL"),
        (errno::EPIPE, "EPIPE"),
        (errno::EADDRINUSE, "EADDRINUSE"),
        (errno::ECONNABORTED, "ECONNABORTED"),
        (errno::ECONNRESET, "ECONNRESET"),
        (errno::EISCONN, "EISCONN"),
        (errno::ENOTCONN, "ENOTCONN"),
        (errno::ETIMEDOUT, "ETIMEDOUT"),
        (errno::ECONNREFUSED, "ECONNREFUSED"),
        (errno::EALREADY, "EALREADY"),
        (errno::EINPROGRESS, "EINPROGRESS"),
        (errno::EHOSTUNREACH, "EHOSTUNREACH"),
        (errno::ENETUNREACH, "ENETUNREACH"),
    ];
    names
        .iter()
        .find(|(n, _)| *n == e)
        .map_or(format!("errno {e}"), |(_, s)| s.to_string())
}

fn errno_of(s: &str) -> Option<Errno> {
    (1..200).find(|&e| errno_name(e) == s)
}

fn flags_str(f: u8) -> String {
    let mut s = String::new();
    for (b, c) in [
        (F::SYN, 'S'),
        (F::FIN, 'F'),
        (F::RST, 'R'),
        (F::PSH, 'P'),
        (F::ECE, 'E'),
        (F::CWR, 'W'),
        (F::URG, 'U'),
    ] {
        if f & b != 0 {
            s.push(c);
        }
    }
    if f & F::ACK != 0 {
        s.push('.');
    }
    s
}

fn parse_flags(s: &str) -> Option<u8> {
    let mut f = 0;
    for c in s.chars() {
        f |= match c {
            'S' => F::SYN,
            'F' => F::FIN,
            'R' => F::RST,
            'P' => F::PSH,
            'E' => F::ECE,
            'W' => F::CWR,
            'U' => F::URG,
            '.' => F::ACK,
            _ => return None,
        };
    }
    Some(f)
}

/// A field that may be `*` (ignored on `>`, "echo" for TSecr on `<`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum V {
    Any,
    N(u32),
}

#[derive(Default, Debug)]
struct SegSpec {
    flags: u8,
    seq: Option<V>,
    len: Option<usize>,
    ack: Option<V>,
    win: Option<V>,
    mss: Option<V>,
    wscale: Option<V>,
    sack_ok: bool,
    ts: Option<(V, V)>,
    sack: Vec<(u32, u32)>,
    any_opt: bool,
    noopts: bool,
    port: Option<u16>,
    dport: Option<u16>,
    urg: Option<V>,
}

fn num(s: &str) -> Result<u32, String> {
    s.parse::<i64>()
        .ok()
        .filter(|n| (-(1i64 << 31)..1i64 << 32).contains(n))
        .map(|n| n as u32)
        .ok_or_else(|| format!("bad number {s:?}"))
}

fn val(s: &str) -> Result<V, String> {
    if s == "*" {
        Ok(V::Any)
    } else {
        num(s).map(V::N)
    }
}

fn parse_seg(toks: &[&str]) -> Result<SegSpec, String> {
    let mut sp = SegSpec {
        flags: parse_flags(toks.first().ok_or("missing flags")?)
            .ok_or_else(|| format!("bad flags {:?}", toks[0]))?,
        ..SegSpec::default()
    };
    let mut i = 1;
    let arg = |i: usize| toks.get(i).copied().ok_or("missing value".to_string());
    while i < toks.len() {
        let t = toks[i];
        match t {
            "seq" => {
                sp.seq = Some(val(arg(i + 1)?)?);
                i += 1;
            }
            "ack" => {
                sp.ack = Some(val(arg(i + 1)?)?);
                i += 1;
            }
            "win" => {
                sp.win = Some(val(arg(i + 1)?)?);
                i += 1;
            }
            "urg" => {
                sp.urg = Some(val(arg(i + 1)?)?);
                i += 1;
            }
            "mss" => {
                sp.mss = Some(val(arg(i + 1)?)?);
                sp.any_opt = true;
                i += 1;
            }
            "wscale" => {
                sp.wscale = Some(val(arg(i + 1)?)?);
                sp.any_opt = true;
                i += 1;
            }
            "sackOK" => {
                sp.sack_ok = true;
                sp.any_opt = true;
            }
            "ts" => {
                sp.ts = Some((val(arg(i + 1)?)?, val(arg(i + 2)?)?));
                sp.any_opt = true;
                i += 2;
            }
            "nosack" => sp.any_opt = true,
            "sack" => {
                sp.any_opt = true;
                while let Some(b) = toks.get(i + 1).and_then(|b| b.split_once(':')) {
                    sp.sack.push((num(b.0)?, num(b.1)?));
                    i += 1;
                }
                if sp.sack.is_empty() {
                    return Err("sack needs blocks a:b".into());
                }
            }
            "port" => {
                sp.port = Some(num(arg(i + 1)?)? as u16);
                i += 1;
            }
            "dport" => {
                sp.dport = Some(num(arg(i + 1)?)? as u16);
                i += 1;
            }
            "noopts" => sp.noopts = true,
            "..." => {}
            _ => {
                // S:E(L)
                let (se, l) = t
                    .strip_suffix(')')
                    .and_then(|x| x.split_once('('))
                    .ok_or_else(|| format!("unknown token {t:?}"))?;
                let (s, e) = se
                    .split_once(':')
                    .ok_or_else(|| format!("bad range {t:?}"))?;
                let (s, e, l) = (num(s)?, num(e)?, num(l)?);
                if e.wrapping_sub(s) != l {
                    return Err(format!("range {t:?}: end - start != length"));
                }
                sp.seq = Some(V::N(s));
                sp.len = Some(l as usize);
            }
        }
        i += 1;
    }
    Ok(sp)
}

impl Default for Runner {
    fn default() -> Self {
        Self::new()
    }
}

impl Runner {
    pub fn new() -> Runner {
        Self::with_config(|_| {})
    }

    pub fn with_config(f: impl FnOnce(&mut StackConfig)) -> Runner {
        let mut cfg = StackConfig::new(ME_MAC);
        cfg.ipv4 = Some((ME_IP, 24));
        f(&mut cfg);
        let mut stack = Stack::new(cfg, Instant::ZERO);
        // The peer announces itself (ARP request): the engine learns its MAC, answers, and later
        // segments need no resolution.
        let mut b = vec![0u8; ethernet::HEADER_LEN + arp::LEN];
        ethernet::EthRepr {
            dst: ethernet::BROADCAST,
            src: PEER_MAC,
            ethertype: ethernet::ETHERTYPE_ARP,
        }
        .emit(&mut b[..ethernet::HEADER_LEN]);
        arp::ArpRepr {
            op: arp::ArpOp::Request,
            sender_mac: PEER_MAC,
            sender_ip: PEER_IP,
            target_mac: [0; 6],
            target_ip: ME_IP,
        }
        .emit(&mut b[ethernet::HEADER_LEN..]);
        stack.handle_frame(Instant::ZERO, &b, RxMeta::default());
        stack.frames().clear();
        Runner {
            stack,
            now: Instant::ZERO,
            tol_us: 2000,
            flows: HashMap::new(),
            listener: None,
            conn: None,
            default_port: DEFAULT_PEER_PORT,
            my_port: 0,
            pending: VecDeque::new(),
            lineno: 0,
            line: String::new(),
        }
    }

    #[allow(dead_code)]
    pub fn stack(&mut self) -> &mut Stack {
        &mut self.stack
    }

    fn fail(&self, msg: impl AsRef<str>) -> ! {
        panic!(
            "\nscript line {}: {}\n  {}\n",
            self.lineno,
            self.line.trim(),
            msg.as_ref()
        );
    }

    fn flow(&mut self, port: u16) -> &mut Flow {
        let my_port = self.my_port;
        self.flows.entry(port).or_insert(Flow {
            peer_isn: PEER_ISN,
            my_port,
            ..Flow::default()
        })
    }

    /// The peer answers an ARP request (the engine re-resolves stale neighbours).
    fn arp_reply(&mut self) {
        let mut b = vec![0u8; ethernet::HEADER_LEN + arp::LEN];
        ethernet::EthRepr {
            dst: ME_MAC,
            src: PEER_MAC,
            ethertype: ethernet::ETHERTYPE_ARP,
        }
        .emit(&mut b[..ethernet::HEADER_LEN]);
        arp::ArpRepr {
            op: arp::ArpOp::Reply,
            sender_mac: PEER_MAC,
            sender_ip: PEER_IP,
            target_mac: ME_MAC,
            target_ip: ME_IP,
        }
        .emit(&mut b[ethernet::HEADER_LEN..]);
        self.stack.handle_frame(self.now, &b, RxMeta::default());
    }

    /// Moves TCP frames the engine produced into `pending`, stamped `now`.
    fn collect(&mut self) {
        self.stack.poll_transmit(self.now);
        let mut frames: VecDeque<_> = self.stack.frames().drain(..).collect();
        while let Some(fr) = frames.pop_front() {
            let Ok((eth, p)) = ethernet::EthRepr::parse(&fr.buf) else {
                continue;
            };
            if eth.ethertype == ethernet::ETHERTYPE_ARP {
                if arp::ArpRepr::parse(p).is_ok_and(|a| a.op == arp::ArpOp::Request) {
                    self.arp_reply();
                    frames.extend(self.stack.frames().drain(..));
                }
                continue;
            }
            if eth.ethertype != ethernet::ETHERTYPE_IPV4 {
                continue;
            }
            let Ok((ip, seg)) = ipv4::Ipv4Repr::parse(p, true) else {
                self.fail("engine sent a bad IPv4 header");
            };
            if ip.proto != ipv4::PROTO_TCP {
                continue;
            }
            let pseudo = checksum::pseudo_v4(ip.src, ip.dst, ipv4::PROTO_TCP, seg.len() as u32);
            if !tcp::verify_checksum(seg, pseudo) {
                self.fail("engine sent a bad TCP checksum");
            }
            let (repr, payload) = TcpRepr::parse(seg).unwrap();
            let fl = self.flow(repr.dst_port);
            fl.my_port = repr.src_port;
            if repr.flags & F::SYN != 0 {
                fl.my_isn = repr.seq.0;
            }
            if let Some((v, _)) = repr.opts.timestamp {
                fl.my_tsval = v;
            }
            fl.last_out = Some((repr, payload.len()));
            self.pending.push_back(Out {
                at: self.now,
                repr,
                len: payload.len(),
            });
            self.stack.recycle(fr.buf);
        }
    }

    /// Runs timers up to `t` (stops early at the first frame when `until_frame`).
    fn advance(&mut self, t: Instant, until_frame: bool) {
        let mut spins = 0;
        loop {
            self.collect();
            if until_frame && !self.pending.is_empty() {
                return;
            }
            match self.stack.next_timeout() {
                Some(d) if d <= t => {
                    if d <= self.now {
                        spins += 1;
                        if spins > 1000 {
                            self.fail("the engine's next_timeout does not move forward");
                        }
                    } else {
                        spins = 0;
                    }
                    self.now = self.now.max(d);
                    self.stack.handle_timeout(self.now);
                }
                _ => break,
            }
        }
        self.now = self.now.max(t);
        if !until_frame {
            self.stack.handle_timeout(self.now);
            self.collect();
        }
    }

    fn describe(&self, o: &Out) -> String {
        let fl = self
            .flows
            .get(&o.repr.dst_port)
            .copied()
            .unwrap_or_default();
        let r = &o.repr;
        let s = r.seq.0.wrapping_sub(fl.my_isn);
        let mut d = format!(
            "{:.6} > {} {}:{}({})",
            o.at.as_micros() as f64 / 1e6,
            flags_str(r.flags),
            s,
            s.wrapping_add(o.len as u32),
            o.len
        );
        if r.flags & F::ACK != 0 {
            d += &format!(" ack {}", r.ack.0.wrapping_sub(fl.peer_isn));
        }
        d += &format!(" win {}", r.window);
        let op = &r.opts;
        if let Some(m) = op.mss {
            d += &format!(" mss {m}");
        }
        if op.sack_permitted {
            d += " sackOK";
        }
        if let Some((v, e)) = op.timestamp {
            d += &format!(" ts {v} {e}");
        }
        if let Some(w) = op.wscale {
            d += &format!(" wscale {w}");
        }
        if op.sack_len > 0 {
            d += " sack";
            for (a, b) in op.sack_blocks() {
                d += &format!(
                    " {}:{}",
                    a.0.wrapping_sub(fl.peer_isn),
                    b.0.wrapping_sub(fl.peer_isn)
                );
            }
        }
        d += &format!(" port {}", r.dst_port);
        d
    }

    fn no_unexpected(&mut self) {
        if let Some(o) = self.pending.front() {
            let d = self.describe(o);
            self.fail(format!("unexpected segment from the engine: {d}"));
        }
    }

    fn expect_out(&mut self, t: Instant, sp: SegSpec) {
        let lo = Instant::from_micros(t.as_micros().saturating_sub(self.tol_us));
        let hi = t + core::time::Duration::from_micros(self.tol_us);
        self.advance(hi, true);
        let Some(o) = self.pending.pop_front() else {
            self.fail(format!(
                "expected a segment at {:.6}, nothing sent by {:.6}",
                t.as_micros() as f64 / 1e6,
                hi.as_micros() as f64 / 1e6
            ));
        };
        let d = self.describe(&o);
        if o.at < lo {
            self.fail(format!("segment sent too early: {d}"));
        }
        let port = sp.port.unwrap_or(self.default_port);
        let fl = *self.flow(port);
        let r = o.repr;
        let mut errs = Vec::new();
        if r.dst_port != port {
            errs.push(format!("port {} != {port}", r.dst_port));
        }
        if r.flags != sp.flags {
            errs.push(format!(
                "flags {} != {}",
                flags_str(r.flags),
                flags_str(sp.flags)
            ));
        }
        let chk = |name: &str, want: Option<V>, got: u32, errs: &mut Vec<String>| {
            if let Some(V::N(w)) = want {
                if w != got {
                    errs.push(format!("{name} {got} != {w}"));
                }
            }
        };
        chk("seq", sp.seq, r.seq.0.wrapping_sub(fl.my_isn), &mut errs);
        if let Some(l) = sp.len {
            if l != o.len {
                errs.push(format!("payload {} != {l}", o.len));
            }
        }
        if sp.ack.is_some() && r.flags & F::ACK != 0 {
            chk("ack", sp.ack, r.ack.0.wrapping_sub(fl.peer_isn), &mut errs);
        }
        chk("win", sp.win, u32::from(r.window), &mut errs);
        chk("urg", sp.urg, u32::from(r.urgent), &mut errs);
        let op = r.opts;
        if sp.noopts && !op.is_empty() {
            errs.push("options present".into());
        }
        if sp.any_opt {
            if sp.mss.is_some() != op.mss.is_some() {
                errs.push("mss presence".into());
            }
            chk("mss", sp.mss, u32::from(op.mss.unwrap_or(0)), &mut errs);
            if sp.wscale.is_some() != op.wscale.is_some() {
                errs.push("wscale presence".into());
            }
            chk(
                "wscale",
                sp.wscale,
                u32::from(op.wscale.unwrap_or(0)),
                &mut errs,
            );
            if sp.sack_ok != op.sack_permitted {
                errs.push("sackOK presence".into());
            }
            match (sp.ts, op.timestamp) {
                (Some((v, e)), Some((gv, ge))) => {
                    chk("tsval", Some(v), gv, &mut errs);
                    chk("tsecr", Some(e), ge, &mut errs);
                }
                (None, None) => {}
                _ => errs.push("ts presence".into()),
            }
            let got: Vec<(u32, u32)> = op
                .sack_blocks()
                .iter()
                .map(|(a, b)| (a.0.wrapping_sub(fl.peer_isn), b.0.wrapping_sub(fl.peer_isn)))
                .collect();
            if got != sp.sack {
                errs.push(format!("sack {got:?} != {:?}", sp.sack));
            }
        }
        if !errs.is_empty() {
            self.fail(format!("mismatch ({}): got {d}", errs.join(", ")));
        }
    }

    fn inject(&mut self, sp: SegSpec) {
        let port = sp.port.unwrap_or(self.default_port);
        let my_port = if self.my_port != 0 {
            self.my_port
        } else {
            self.flow(port).my_port
        };
        let fl = self.flow(port);
        let my_port = if fl.my_port != 0 { fl.my_port } else { my_port };
        let my_port = sp.dport.unwrap_or(my_port);
        let rel = match sp.seq {
            Some(V::N(s)) => s,
            Some(V::Any) => 0,
            None => 0,
        };
        if sp.flags & F::SYN != 0 && sp.flags & F::ACK == 0 {
            fl.peer_isn = fl.peer_isn.wrapping_add(rel);
        }
        let seq = if sp.flags & F::SYN != 0 && sp.flags & F::ACK == 0 {
            fl.peer_isn
        } else {
            fl.peer_isn.wrapping_add(rel)
        };
        let ack = match sp.ack {
            Some(V::N(a)) => fl.my_isn.wrapping_add(a),
            _ => 0,
        };
        let mut opts = TcpOptions::default();
        if let Some(V::N(m)) = sp.mss {
            opts.mss = Some(m as u16);
        }
        if let Some(V::N(w)) = sp.wscale {
            opts.wscale = Some(w as u8);
        }
        opts.sack_permitted = sp.sack_ok;
        if let Some((v, e)) = sp.ts {
            let v = match v {
                V::N(v) => v,
                V::Any => 0,
            };
            let e = match e {
                V::N(e) => e,
                V::Any => fl.my_tsval,
            };
            opts.timestamp = Some((v, e));
        }
        for (i, (a, b)) in sp.sack.iter().take(4).enumerate() {
            opts.sack[i] = (
                Seq(fl.my_isn.wrapping_add(*a)),
                Seq(fl.my_isn.wrapping_add(*b)),
            );
            opts.sack_len = i as u8 + 1;
        }
        let repr = TcpRepr {
            src_port: port,
            dst_port: my_port,
            seq: Seq(seq),
            ack: Seq(ack),
            flags: sp.flags,
            window: match sp.win {
                Some(V::N(w)) => w as u16,
                _ => 65535,
            },
            urgent: match sp.urg {
                Some(V::N(u)) => u as u16,
                _ => 0,
            },
            opts,
        };
        let payload: Vec<u8> = (0..sp.len.unwrap_or(0)).map(|i| i as u8).collect();
        let th = repr.header_len();
        let mut seg = vec![0u8; th + payload.len()];
        repr.emit(&mut seg);
        seg[th..].copy_from_slice(&payload);
        let pseudo = checksum::pseudo_v4(PEER_IP, ME_IP, ipv4::PROTO_TCP, seg.len() as u32);
        tcp::fill_checksum(&mut seg, pseudo, false);
        self.send_ip(ipv4::PROTO_TCP, &seg);
    }

    fn send_ip(&mut self, proto: u8, l4: &[u8]) {
        let start = ethernet::HEADER_LEN + ipv4::HEADER_LEN;
        let mut b = vec![0u8; start + l4.len()];
        ethernet::EthRepr {
            dst: ME_MAC,
            src: PEER_MAC,
            ethertype: ethernet::ETHERTYPE_IPV4,
        }
        .emit(&mut b[..ethernet::HEADER_LEN]);
        ipv4::Ipv4Repr {
            src: PEER_IP,
            dst: ME_IP,
            proto,
            ttl: 64,
            tos: 0,
            ident: 0,
            dont_frag: true,
            payload_len: l4.len(),
        }
        .emit(&mut b[ethernet::HEADER_LEN..start]);
        b[start..].copy_from_slice(l4);
        self.stack.handle_frame(self.now, &b, RxMeta::default());
        self.collect();
    }

    fn icmp_frag_needed(&mut self, port: u16, mtu: u16) {
        let Some((r, _)) = self.flow(port).last_out else {
            self.fail("no segment of that flow to quote");
        };
        let mut quote = [0u8; ipv4::HEADER_LEN + 20];
        ipv4::Ipv4Repr {
            src: ME_IP,
            dst: PEER_IP,
            proto: ipv4::PROTO_TCP,
            ttl: 64,
            tos: 0,
            ident: 0,
            dont_frag: true,
            payload_len: 1500 - 20,
        }
        .emit(&mut quote[..ipv4::HEADER_LEN]);
        let mut r = r;
        r.opts = TcpOptions::default();
        r.emit(&mut quote[ipv4::HEADER_LEN..]);
        let m = icmpv4::Icmpv4Repr::DstUnreachable {
            code: icmpv4::CODE_FRAG_NEEDED,
            next_hop_mtu: mtu,
            original: &quote[..ipv4::HEADER_LEN + 8],
        };
        let mut b = vec![0u8; m.buffer_len()];
        m.emit(&mut b);
        self.send_ip(ipv4::PROTO_ICMP, &b);
    }

    fn conn(&self) -> SockId {
        self.conn
            .unwrap_or_else(|| self.fail("no connection (accept or connect first)"))
    }

    fn check_ret(&self, got: Result<usize, Errno>, want: Result<usize, Errno>) {
        if got != want {
            let show = |r: Result<usize, Errno>| match r {
                Ok(n) => n.to_string(),
                Err(e) => errno_name(e),
            };
            self.fail(format!(
                "call returned {}, expected {}",
                show(got),
                show(want)
            ));
        }
    }

    fn call(&mut self, toks: &[&str]) {
        // Split "= X".
        let (toks, want) = match toks.iter().position(|t| *t == "=") {
            Some(p) => {
                let w = toks
                    .get(p + 1)
                    .unwrap_or_else(|| self.fail("'=' needs a value"));
                let w = match w.parse::<usize>() {
                    Ok(n) => Ok(n),
                    Err(_) => Err(errno_of(w).unwrap_or_else(|| self.fail("unknown errno"))),
                };
                (&toks[..p], Some(w))
            }
            None => (toks, None),
        };
        let n = |i: usize| -> u32 {
            toks.get(i)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| self.fail("missing number"))
        };
        let ok0 = Ok(0usize);
        match toks[0] {
            "listen" => {
                let port = n(1) as u16;
                let backlog = if toks.get(2) == Some(&"backlog") {
                    n(3) as i32
                } else {
                    128
                };
                let s = self.stack.socket(false).unwrap();
                let r = self
                    .stack
                    .bind(s, SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
                    .and_then(|_| self.stack.listen(s, backlog))
                    .map(|_| 0);
                self.check_ret(r, want.unwrap_or(ok0));
                self.listener = Some(s);
                self.my_port = port;
            }
            "connect" => {
                let port = n(1) as u16;
                let s = self.stack.socket(false).unwrap();
                let r = self
                    .stack
                    .connect(s, SocketAddr::new(IpAddr::V4(PEER_IP), port))
                    .map(|_| 0);
                self.check_ret(r, want.unwrap_or(Err(errno::EINPROGRESS)));
                self.conn = Some(s);
                self.default_port = port;
            }
            "accept" => {
                let l = self.listener.unwrap_or_else(|| self.fail("no listener"));
                let r = self.stack.accept(l);
                let got = r.as_ref().map(|_| 0).map_err(|e| *e);
                self.check_ret(got, want.unwrap_or(ok0));
                if let Ok((s, peer)) = r {
                    self.conn = Some(s);
                    self.default_port = peer.port();
                }
            }
            "write" => {
                let len = n(1) as usize;
                let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let c = self.conn();
                let r = self.stack.send(c, &[&data]);
                self.check_ret(r, want.unwrap_or(Ok(len)));
            }
            "write_oob" => {
                let len = n(1) as usize;
                let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let c = self.conn();
                let r = self.stack.send_urgent(c, &[&data]);
                self.check_ret(r, want.unwrap_or(Ok(len)));
            }
            "urgent" => {
                // `urgent none` or `urgent COUNT BYTE|- AHEAD`: what Stack::urgent_in reports.
                let got = self.stack.urgent_in(self.conn()).map(|u| {
                    let b = u.byte.map_or("-".to_string(), |b| b.to_string());
                    format!("{} {} {}", u.count, b, u.ahead)
                });
                let want = toks[1..].join(" ");
                let got = got.unwrap_or_else(|| "none".into());
                if got != want {
                    self.fail(format!("urgent {got} != {want}"));
                }
            }
            "read" => {
                let len = n(1) as usize;
                let mut buf = vec![0u8; len];
                let c = self.conn();
                let r = self.stack.recv(c, &mut [&mut buf]);
                self.check_ret(r, want.unwrap_or(Ok(len)));
            }
            "close" => {
                let c = if toks.get(1) == Some(&"listener") {
                    self.listener.take()
                } else {
                    self.conn.take()
                };
                self.stack
                    .close(c.unwrap_or_else(|| self.fail("nothing to close")));
            }
            "shutdown" => {
                let (rd, wr) = match toks.get(1).copied() {
                    Some("wr") => (false, true),
                    Some("rd") => (true, false),
                    Some("rdwr") => (true, true),
                    _ => self.fail("shutdown wr|rd|rdwr"),
                };
                let c = self.conn();
                let r = self.stack.shutdown(c, rd, wr).map(|_| 0);
                self.check_ret(r, want.unwrap_or(ok0));
            }
            "setsockopt" => {
                let v = n(2);
                let o = match toks.get(1).copied() {
                    Some("nodelay") => SockOpt::NoDelay(v != 0),
                    Some("cork") => SockOpt::Cork(v != 0),
                    Some("keepalive") => SockOpt::KeepAlive(v != 0),
                    Some("keepidle") => SockOpt::KeepIdle(v),
                    Some("keepintvl") => SockOpt::KeepIntvl(v),
                    Some("keepcnt") => SockOpt::KeepCnt(v),
                    Some("linger") => SockOpt::Linger(true, v),
                    Some("rcvbuf") => SockOpt::RcvBuf(v as usize),
                    Some("sndbuf") => SockOpt::SndBuf(v as usize),
                    Some("maxseg") => SockOpt::MaxSeg(v as u16),
                    _ => self.fail("unknown option"),
                };
                let s = self.conn.or(self.listener).unwrap();
                let r = self.stack.set_opt(s, o).map(|_| 0);
                self.check_ret(r, want.unwrap_or(ok0));
            }
            "so_error" => {
                let c = self.conn();
                let e = self.stack.take_error(c);
                let got = if e == 0 { Ok(0) } else { Err(e) };
                self.check_ret(got, want.unwrap_or(ok0));
            }
            "state" => {
                let c = self.conn();
                let st = self.stack.tcb(c).map(|t| format!("{:?}", t.state));
                let st = st.unwrap_or_else(|| "None".into());
                if !st.eq_ignore_ascii_case(&toks[1].replace(['-', '_'], "")) {
                    self.fail(format!("state is {st}"));
                }
            }
            "sockets" => {
                let c = self.stack.socket_count();
                if c != n(1) as usize {
                    self.fail(format!("{c} sockets in use"));
                }
            }
            "tolerance" => {}
            other => self.fail(format!("unknown call {other:?}")),
        }
        self.collect();
    }

    /// Runs a script; panics on the first mismatch.
    pub fn run(&mut self, script: &str) {
        let mut last = 0f64;
        for (i, raw) in script.lines().enumerate() {
            self.lineno = i + 1;
            self.line = raw.to_string();
            let l = raw.split("//").next().unwrap().split('#').next().unwrap();
            let toks: Vec<&str> = l.split_whitespace().collect();
            if toks.is_empty() {
                continue;
            }
            if toks[0] == "tolerance" {
                let t: f64 = toks[1]
                    .parse()
                    .unwrap_or_else(|_| self.fail("bad tolerance"));
                self.tol_us = (t * 1e6).round() as u64;
                continue;
            }
            let t = if let Some(r) = toks[0].strip_prefix('+') {
                last + r.parse::<f64>().unwrap_or_else(|_| self.fail("bad time"))
            } else {
                toks[0]
                    .parse::<f64>()
                    .unwrap_or_else(|_| self.fail("bad time"))
            };
            if t + 1e-9 < last {
                self.fail("time goes backwards");
            }
            last = t;
            let at = Instant::from_micros((t * 1e6).round() as u64);
            let rest = &toks[1..];
            if rest.is_empty() {
                self.fail("empty event");
            }
            match rest[0] {
                ">" => {
                    if rest.get(1) == Some(&"none") {
                        self.advance(at, false);
                        self.no_unexpected();
                        continue;
                    }
                    let sp = parse_seg(&rest[1..]).unwrap_or_else(|e| self.fail(e));
                    self.expect_out(at, sp);
                }
                "<" => {
                    self.advance(at, false);
                    self.no_unexpected();
                    if rest.get(1) == Some(&"icmp") {
                        // < icmp frag-needed mtu N [port P]
                        let mtu = rest
                            .iter()
                            .position(|x| *x == "mtu")
                            .and_then(|p| rest.get(p + 1))
                            .and_then(|m| m.parse().ok())
                            .unwrap_or_else(|| self.fail("icmp frag-needed mtu N"));
                        let port = rest
                            .iter()
                            .position(|x| *x == "port")
                            .and_then(|p| rest.get(p + 1))
                            .and_then(|m| m.parse().ok())
                            .unwrap_or(self.default_port);
                        self.icmp_frag_needed(port, mtu);
                        continue;
                    }
                    let sp = parse_seg(&rest[1..]).unwrap_or_else(|e| self.fail(e));
                    self.inject(sp);
                }
                _ => {
                    self.advance(at, false);
                    self.no_unexpected();
                    self.call(rest);
                }
            }
        }
        // Everything the engine sent by the end was expected.
        self.lineno = 0;
        self.line = "(end of script)".into();
        self.no_unexpected();
    }
}

/// Runs `script` against a fresh engine with default settings.
pub fn run(script: &str) -> Runner {
    let mut r = Runner::new();
    r.run(script);
    r
}
