//! The payload API of snstack (issue 11, docs/payload-api.md): applications that never touch a
//! socket. A [`Group`] (one per thread) attaches to `snstack-agent`, declares services (a listen
//! address and a [`Framing`] the agent applies on the NIC) or connects out, and polls for
//! events: a connection opened, one whole message, a connection closed. Replies are written
//! into the connection's TX ring ([`Group::send`], [`Group::reserve`]) and kicked once per
//! batch ([`Group::flush`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use snstack_payload::{Event, Framing, Group};
//!
//! let mut g = Group::attach(None)?;
//! g.serve("0.0.0.0:7000".parse().unwrap(), Framing::Line { crlf: false }, 4096)?;
//! loop {
//!     let events = g.poll(64, Duration::from_micros(50), None)?;
//!     let g = events.group();
//!     for ev in &events {
//!         match ev {
//!             Event::Message { conn, data, .. } => {
//!                 if g.send(conn, data).is_err() {
//!                     g.abort(conn)?;
//!                 }
//!             }
//!             Event::Closed { conn, .. } => g.close(conn)?,
//!             _ => {}
//!         }
//!     }
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! `ffi` is the same API for C (`include/snstack_payload.h`); `sys` holds every system call,
//! so the group's logic is tested against an in-memory region with a scripted agent.

pub mod ffi;
mod framing;
mod group;
mod sys;

pub use framing::{Framing, ResponseTo, Width};
pub use group::{CloseReason, Conn, Event, Events, Group, Iter, Reply, Service, DEFAULT_AGENT};

#[cfg(test)]
mod tests;
