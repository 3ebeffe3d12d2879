//! What the clients of a running `snstack-agent` share: the control-socket stats client used by
//! `snstack-agent stats`, the `snstack` command (`stats`, `top`) and the agent's own metrics
//! endpoint. The agent itself is the `snstack-agent` binary (main.rs); nothing here runs in its
//! event loop.

pub mod client;
pub mod framing;
