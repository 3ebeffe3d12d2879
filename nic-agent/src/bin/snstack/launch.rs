//! `snstack run` (the program under the preload) and `snstack agent` (the daemon): both end in
//! `exec`, so the program keeps snstack's pid and its exit status reaches the caller.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::bail;
use clap::Args;

use crate::locate;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Agent socket (sets SNSTACK_AGENT; default /run/snstack/agent.sock).
    #[arg(long, value_name = "PATH")]
    agent: Option<OsString>,
    /// Fail socket() with ENETDOWN when the agent is unreachable (SNSTACK_STRICT=1), instead of
    /// falling back to kernel sockets.
    #[arg(long)]
    strict: bool,
    /// Busy-poll N microseconds before a blocking call sleeps (SNSTACK_SPIN_US).
    #[arg(long, value_name = "N")]
    spin_us: Option<u64>,
    /// Library log level: error, warn, info or debug (SNSTACK_LOG).
    #[arg(long, value_name = "LEVEL")]
    log: Option<String>,
    /// Load the library but offload nothing (SNSTACK_OFFLOAD=0).
    #[arg(long)]
    off: bool,
    /// Offload rules, e.g. "kernel tcp_server *:5432; offload *" (SNSTACK_RULES; README,
    /// Offload rules).
    #[arg(long, value_name = "RULES")]
    rules: Option<OsString>,
    /// A file of offload rules (SNSTACK_RULES_FILE).
    #[arg(long, value_name = "PATH")]
    rules_file: Option<OsString>,
    /// The program and its arguments (after `--` when they start with a dash).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = false,
        required = true,
        value_name = "CMD"
    )]
    cmd: Vec<OsString>,
}

/// The variables `snstack run` sets for the program (the library's `SNSTACK_*`, `LD_PRELOAD`).
pub fn run_env(a: &RunArgs, lib: &std::path::Path) -> Vec<(&'static str, OsString)> {
    let mut env = Vec::new();
    if let Some(p) = &a.agent {
        env.push(("SNSTACK_AGENT", p.clone()));
    }
    if a.strict {
        env.push(("SNSTACK_STRICT", "1".into()));
    }
    if let Some(n) = a.spin_us {
        env.push(("SNSTACK_SPIN_US", n.to_string().into()));
    }
    if let Some(l) = &a.log {
        env.push(("SNSTACK_LOG", l.into()));
    }
    if a.off {
        env.push(("SNSTACK_OFFLOAD", "0".into()));
    }
    if let Some(r) = &a.rules {
        env.push(("SNSTACK_RULES", r.clone()));
    }
    if let Some(f) = &a.rules_file {
        env.push(("SNSTACK_RULES_FILE", f.clone()));
    }
    let mut preload = lib.as_os_str().to_os_string();
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(old);
    }
    env.push(("LD_PRELOAD", preload));
    env
}

pub fn run(a: RunArgs) -> anyhow::Result<()> {
    let lib = locate::library()?;
    let Some((prog, args)) = a.cmd.split_first() else {
        bail!("run: no command given (snstack run [OPTIONS] -- CMD ARGS...)");
    };
    let mut c = Command::new(prog);
    c.args(args).envs(run_env(&a, &lib));
    let e = c.exec();
    bail!("cannot run {}: {e}", prog.to_string_lossy())
}

pub fn agent(args: Vec<OsString>) -> anyhow::Result<()> {
    let bin = locate::agent()?;
    let e = Command::new(&bin).args(args).exec();
    bail!("cannot run {}: {e}", bin.display())
}
