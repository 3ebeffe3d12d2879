//! Segment scripts (tests/script/mod.rs): the engine's behaviour pinned segment by segment to
//! Linux's (net/ipv4/tcp_input.c, tcp_output.c, tcp_timer.c).

mod script;

use script::run;

/// Passive open with every option: SYN-ACK mirrors them, MSS 1460 on a 1500 MTU link.
#[test]
fn passive_open_with_options() {
    run(r#"
0.000 listen 80 backlog 8
0.100 < S 0:0(0) win 65535 mss 1460 sackOK ts 100 0 wscale 7
0.100 > S. 0:0(0) ack 1 mss 1460 sackOK ts * 100 wscale 7
0.101 < . 1:1(0) ack 1 win 512 ts 101 *
0.101 accept
0.101 state ESTABLISHED
0.200 < P. 1:101(100) ack 1 win 512 ts 102 *
0.200 > . 1:1(0) ack 101 ts * 102             // quick ACK at the start
"#);
}
