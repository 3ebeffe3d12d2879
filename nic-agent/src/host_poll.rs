//! When the agent polls its hosts' command rings on a timer instead of asking for their doorbells
//! (sans-IO: the loop says what it found, this says how long to sleep).
//!
//! A host's doorbell is an MMIO write on a real NIC: a posted store, a fraction of a microsecond.
//! Emulated on one machine it is an `eventfd` write that wakes the agent's thread on another CPU,
//! and on a virtual machine that inter-processor wake-up costs the *host* several microseconds
//! (the profile of nginx under the preload, keepalive, 16 connections: a fifth of its CPU time in
//! `eventfd_write`; `snstack-http`: a third). The agent knows when a doorbell is coming: right
//! after it delivered requests, the host is busy answering them. So while a channel is *hot*
//! (the agent published events or stream bytes to it), the agent sleeps for a short interval
//! without announcing its sleep to that channel: the host sees an agent that is not asleep and
//! writes no doorbell, and the agent's timer picks its commands up. The cost moves to the agent
//! (a local timer wake-up, no inter-processor wake-up), where on a NIC it belongs.
//!
//! Only a batch is worth it: a channel turns hot when at least [`HOT_BATCH`] of its sockets
//! changed between two of the agent's sleeps, and stays hot until polling gives up on it. One
//! connection (a ping-pong, a paced client) keeps its doorbell: there the host is
//! idle, the doorbell is one per request either way, and the timer would only add latency (up to
//! an interval per round trip). Adaptive interrupt moderation (Linux's net DIM) draws the same
//! line by events per interrupt.
//!
//! And only for a host on CPUs apart from the agent's (its affinity, read every second, as for
//! the doorbell hold of docs/agent-loop.md): only there is the doorbell an inter-processor
//! wake-up, and a host that shares the agent's CPUs would lose them to its polling (measured on
//! the unpinned veth rig: no host CPU saved, agent CPU per request up 5-15 %).
//!
//! Polling stops when it stops paying: after [`MAX_EMPTY`] timer wake-ups in a row that found no
//! command, the hot channels are cooled and the agent announces its sleep to everyone again, as
//! before. Linux's `napi_defer_hard_irqs` with `gro_flush_timeout` is the same trade in the other
//! direction (keep the device's interrupts masked and poll on a timer while traffic flows).

use std::time::Duration;

/// Sockets changed in one round from which a host's answer is polled for (module doc).
pub const HOT_BATCH: u32 = 4;
/// Timer wake-ups in a row that found no command before the agent goes back to doorbells.
pub const MAX_EMPTY: u32 = 3;

#[derive(Debug)]
pub struct HostPoll {
    /// The polling interval; `None`: never poll (`--host-poll-us 0`).
    interval: Option<Duration>,
    /// Timer wake-ups in a row that found nothing.
    empty: u32,
    /// Polling sleeps taken (stats: `agent_host_polls`).
    pub polls: u64,
    /// ... of which found no command (`agent_host_polls_empty`).
    pub empty_polls: u64,
}

/// What a sleep found, for [`HostPoll::woke`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// Host commands were waiting.
    Commands,
    /// Something else woke the agent (its backend, a control connection): says nothing about
    /// the hosts.
    Other,
    /// The timer expired with nothing to do.
    Nothing,
}

impl HostPoll {
    pub fn new(interval: Duration) -> HostPoll {
        HostPoll {
            interval: (!interval.is_zero()).then_some(interval),
            empty: 0,
            polls: 0,
            empty_polls: 0,
        }
    }

    /// Polling is on (`--host-poll-us` not 0).
    pub fn enabled(&self) -> bool {
        self.interval.is_some()
    }

    /// The agent is about to sleep; `hot`: some channel's host is answering what the agent
    /// delivered. `Some(interval)`: sleep at most that long without announcing to hot channels.
    pub fn sleep(&mut self, hot: bool) -> Option<Duration> {
        let i = self.interval.filter(|_| hot)?;
        self.polls += 1;
        Some(i)
    }

    /// After a polling sleep. True when polling stopped paying: cool the hot channels.
    pub fn woke(&mut self, found: Found) -> bool {
        match found {
            Found::Commands => self.empty = 0,
            Found::Other => {}
            Found::Nothing => {
                self.empty_polls += 1;
                self.empty += 1;
                if self.empty >= MAX_EMPTY {
                    self.empty = 0;
                    return true;
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: Duration = Duration::from_micros(20);

    #[test]
    fn polls_only_while_a_channel_is_hot() {
        let mut p = HostPoll::new(I);
        assert_eq!(p.sleep(false), None);
        assert_eq!(p.sleep(true), Some(I));
        assert_eq!(p.polls, 1);
    }

    #[test]
    fn off_never_polls() {
        let mut p = HostPoll::new(Duration::ZERO);
        assert_eq!(p.sleep(true), None);
        assert_eq!(p.polls, 0);
    }

    #[test]
    fn gives_up_after_empty_polls_in_a_row() {
        let mut p = HostPoll::new(I);
        for _ in 0..MAX_EMPTY - 1 {
            assert!(!p.woke(Found::Nothing));
        }
        // Other wake-ups neither count nor reset.
        assert!(!p.woke(Found::Other));
        assert!(p.woke(Found::Nothing));
        assert_eq!(p.empty_polls, u64::from(MAX_EMPTY));
        // A poll that found commands starts the count again.
        for _ in 0..MAX_EMPTY - 1 {
            assert!(!p.woke(Found::Nothing));
        }
        assert!(!p.woke(Found::Commands));
        for _ in 0..MAX_EMPTY - 1 {
            assert!(!p.woke(Found::Nothing));
        }
        assert!(p.woke(Found::Nothing));
    }
}
