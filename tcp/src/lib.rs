//! snstack's own TCP/IP engine, sans-IO: no clock, no syscalls, no threads. Frames and
//! application calls go in with the time (`handle_*`), frames and events come out (`poll_*`).
//! Design and limits: docs/user-stack.md.
//!
//! ```text
//!   device frames ──► Stack::handle_frame ──► wire::* parse ──► conn table (hashed 4-tuple)
//!                                                 │                  │  Conn: RFC 9293 states,
//!   app calls ──► Stack::{send,recv,close,..} ──► │                  │  SendBuf/Scoreboard/RACK,
//!                                                 ▼                  │  RecvBuf (ranges), CUBIC, PRR
//!   device ◄── Stack::poll_transmit ◄── timers (wheel) ◄────────────┘
//! ```
#![deny(unsafe_code)]

pub mod cc;
pub mod conn;
pub mod errno;
pub mod frame;
pub mod isn;
pub mod muldiv;
pub mod neigh;
pub mod output;
pub mod prefetch;
pub mod prr;
pub mod rate;
pub mod recvbuf;
pub mod rtt;
pub mod scoreboard;
pub mod sendbuf;
pub mod seq;
pub mod sink;
pub mod source;
pub mod stack;
pub mod syncookie;
pub mod time;
pub mod timer;
pub mod timewait;
pub mod urgent;
pub mod wire;
pub mod writer;

pub use frame::{DeviceCaps, Gso, RxCsum, RxMeta, TxMeta};
pub use seq::Seq;
pub use sink::{NoSink, RxSink};
pub use source::{NoSource, TxSource};
pub use time::Instant;
pub use writer::{FrameWriter, NoWriter, WriteOutcome};
