//! `snstack-kv`: an in-memory key-value store speaking RESP2 over the payload API (issue 11).
//!
//! The agent frames each connection's stream into whole Redis commands; this program runs them
//! (`snstack_examples::kv`) and writes the replies. `redis-benchmark` and `redis-cli` work
//! unmodified against it. Needs the cargo feature `payload` (the `snstack-payload` host crate);
//! built without it, it says so and exits with status 2.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "snstack-kv",
    about = "In-memory key-value store (RESP2) on the snstack payload API"
)]
struct Args {
    /// The agent's control socket (default: $SNSTACK_AGENT or /run/snstack/agent.sock).
    #[arg(long, value_name = "SOCK")]
    agent: Option<PathBuf>,
    /// Address to serve, e.g. 0.0.0.0:6379.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// Poll groups, one thread each; they share one store.
    #[arg(long, default_value_t = 1, value_name = "N")]
    threads: usize,
    /// Longest message the agent delivers whole; longer commands come in parts and are
    /// assembled here (up to 512 MiB). 0: the largest the agent's ring allows.
    #[arg(long, default_value_t = 0, value_name = "BYTES")]
    max_message: u32,
    /// Seconds a connection may stay silent (with no reply pending) before it is reset; 0 (the
    /// default, as Redis's `timeout 0`): never.
    #[arg(long, default_value_t = 0, value_name = "SECS")]
    idle_timeout: u64,
}

fn run(args: Args) -> ExitCode {
    let svc = snstack_examples::payload::Service {
        agent: args.agent,
        listen: args.listen,
        threads: args.threads,
        max_message: args.max_message,
        idle_timeout: std::time::Duration::from_secs(args.idle_timeout),
    };
    match snstack_examples::payload::run_kv(&svc) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("snstack-kv: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    run(Args::parse())
}
