//! `snstack-http`: an HTTP/1.1 server for `/hello` and static files over the payload API
//! (issue 11).
//!
//! The agent frames each connection's stream into whole requests; this program answers them
//! (`snstack_examples::http`) from a read-once file cache. `wrk`, `curl` and `ab` work
//! unmodified against it. Needs the cargo feature `payload` (the `snstack-payload` host crate);
//! built without it, it says so and exits with status 2.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "snstack-http",
    about = "HTTP/1.1 static file server on the snstack payload API"
)]
struct Args {
    /// The agent's control socket (default: $SNSTACK_AGENT or /run/snstack/agent.sock).
    #[arg(long, value_name = "SOCK")]
    agent: Option<PathBuf>,
    /// Address to serve, e.g. 0.0.0.0:8080.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// Directory of the files served (`/hello` is always served).
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// Poll groups, one thread each (each with its own file cache).
    #[arg(long, default_value_t = 1, value_name = "N")]
    threads: usize,
    /// Bytes of file contents kept in memory per group; larger files are read per request.
    #[arg(long, default_value_t = snstack_examples::http::DEFAULT_CACHE_BYTES, value_name = "BYTES")]
    cache_bytes: usize,
    /// Longest message the agent delivers whole (0: the largest its ring allows, 32 KiB less a
    /// header with the default 64 KiB ring); longer requests come in parts, and a request's head
    /// must fit in its first part.
    #[arg(long, default_value_t = 0, value_name = "BYTES")]
    max_message: u32,
    /// Seconds a connection may stay silent (with no reply pending) before it is reset: idle
    /// keepalive connections and requests that never complete (slowloris); 0: never.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    idle_timeout: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Check the root before anything else: a typo is the likeliest failure.
    if let Err(e) = snstack_examples::http::FileCache::new(&args.root, 0) {
        eprintln!("snstack-http: --root {}: {e}", args.root.display());
        return ExitCode::FAILURE;
    }
    run(args)
}

fn run(args: Args) -> ExitCode {
    let svc = snstack_examples::payload::Service {
        agent: args.agent,
        listen: args.listen,
        threads: args.threads,
        max_message: args.max_message,
        idle_timeout: std::time::Duration::from_secs(args.idle_timeout),
    };
    match snstack_examples::payload::run_http(&svc, args.root, args.cache_bytes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("snstack-http: {e}");
            ExitCode::FAILURE
        }
    }
}
