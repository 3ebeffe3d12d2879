//! What the clients of a running `snstack-agent` share: the control-socket stats client used by
//! `snstack-agent stats`, the `snstack` command (`stats`, `top`) and the agent's own metrics
//! endpoint. The agent itself is the `snstack-agent` binary (main.rs).
//!
//! `framing` holds the payload API's message framers (issue 11): sans-IO, so the agent's event
//! loop, the payload crate and their tests can all use the one definition.

pub mod client;
pub mod framing;
