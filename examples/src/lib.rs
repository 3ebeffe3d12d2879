//! Application logic of the payload-API example servers (issue 11), sans-IO.
//!
//! ```text
//!  snstack-payload Group ──Event──► serve::Driver ──message──► kv::Server / http::Server
//!        ▲                           (per-conn out queue,        (whole request in,
//!        └────── send_vectored ◄──── backlog, back-pressure)      reply bytes out)
//! ```
//!
//! * [`kv`]: an in-memory key-value store speaking RESP2 (`snstack-kv`).
//! * [`http`]: an HTTP/1.1 server for `/hello` and static files (`snstack-http`).
//! * [`serve`]: what both binaries do between the payload API and the logic: a per-connection
//!   table, an outgoing queue that sends replies in pieces as TX space appears, and a backlog of
//!   messages held back while a connection's replies cannot leave. It talks to the payload API
//!   through the [`serve::Transmit`] trait, so it is tested here with a small fake TX ring.
//!
//! Nothing in this crate reads a clock or does I/O on the hot path: time (`now`, the `Date`
//! string) is passed in; only the HTTP file cache reads files, once per file.

#![deny(unsafe_code)]

pub mod http;
pub mod kv;
pub mod payload;
pub mod serve;

/// What the caller does with a connection after writing a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Action {
    /// Keep reading requests.
    Continue,
    /// Send the replies written so far, then close the connection; ignore further requests.
    CloseAfterReply,
}
