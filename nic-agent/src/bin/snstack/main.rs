//! `snstack`: the command users run. `snstack run -- CMD` runs CMD with `libsnstack.so`
//! preloaded (in the spirit of Onload's `onload`), `snstack agent` starts the agent, `snstack
//! stats` prints its counters and `snstack top` shows them live, per process.
//!
//! It finds the library and the agent from its own place (locate.rs), so an installed
//! `PREFIX/bin/snstack` and a checkout's `target/release/snstack` both work from any directory.

mod launch;
mod locate;
mod sys;
mod top;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use nic_agent::client::{self, DEFAULT_SOCKET};

#[derive(Parser, Debug)]
#[command(
    name = "snstack",
    version,
    about = "Run unmodified programs with their TCP sockets offloaded to snstack-agent",
    after_help = "The library is $SNSTACK_LIB if set, else the libsnstack.so installed beside this \
command (PREFIX/lib/snstack/, PREFIX/lib/, or the same directory in a checkout's \
target/release). The agent binary is $SNSTACK_AGENT_BIN if set, else snstack-agent beside this \
command.\nNote: setuid/setgid programs ignore LD_PRELOAD and run on kernel sockets."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run CMD with libsnstack.so preloaded: its TCP sockets live in the agent.
    Run(launch::RunArgs),
    /// Run snstack-agent with these arguments (see `snstack agent --help`).
    #[command(disable_help_flag = true)]
    Agent {
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "AGENT ARGS"
        )]
        args: Vec<OsString>,
    },
    /// Print the agent's counters: `key value` lines, or the JSON report with --json.
    Stats(StatsArgs),
    /// Live view of the agent: per process sockets, connections/s, RX/TX bytes/s, channel
    /// operations/s, errors and dropped channels; the agent's CPU. `q` or Ctrl-C quits.
    Top(top::TopArgs),
}

#[derive(Args, Debug)]
struct StatsArgs {
    #[command(flatten)]
    agent: AgentSocket,
    /// The JSON report (agent, totals, each attached process, recently dropped channels, kTLS
    /// sockets).
    #[arg(long)]
    json: bool,
    /// After the counters, one line per socket with kTLS keys and its own TLS counters.
    #[arg(long, conflicts_with = "json")]
    sockets: bool,
}

/// Which agent to ask.
#[derive(Args, Debug, Clone)]
pub struct AgentSocket {
    /// The agent's control socket [default: $SNSTACK_AGENT, else /run/snstack/agent.sock]
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
}

impl AgentSocket {
    pub fn path(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(|| {
            std::env::var_os("SNSTACK_AGENT")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
        })
    }
}

fn stats(a: &StatsArgs) -> anyhow::Result<()> {
    let path = a.agent.path();
    if a.json {
        let r = client::report(&path)?;
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", client::query(&path, client::Format::Text)?);
        if a.sockets {
            print!(
                "{}",
                client::tls_socket_lines(&client::report_as(&path, client::Format::JsonSockets)?)
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Run(a) => launch::run(a),
        Cmd::Agent { args } => launch::agent(args),
        Cmd::Stats(a) => stats(&a),
        Cmd::Top(a) => top::run(&a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("snstack: {e:#}");
            ExitCode::from(2)
        }
    }
}
