//! The agent's configuration file: TOML `key = value` lines whose keys are the long flags of
//! `snstack-agent` without the dashes (`spin-us = 50`, `backend = "afpacket"`); `#` starts a
//! comment. Every value goes through the same parser as the flag, and a flag given on the command
//! line wins over the file. The commented template is `etc/agent.conf`; docs/operations.md.
//!
//! Default file: `PREFIX/etc/snstack/agent.conf` of an installed agent (`/etc/snstack/agent.conf`
//! when PREFIX is `/usr`), found from the binary's own place (`PREFIX/bin`); a binary anywhere
//! else (a checkout's `target/release`) reads no file unless `--config PATH` names one.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};
use thiserror::Error;

/// Flags that make no sense in the file.
const NOT_IN_FILE: &[&str] = &["config", "help", "version"];

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("{path}:{line}: {msg}")]
    Bad {
        path: PathBuf,
        line: usize,
        msg: String,
    },
}

/// One `key = value` of the file, as the flag's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// The file an installed agent reads by default, if it is installed (see the module doc).
pub fn default_path() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    installed_config(&exe)
}

fn installed_config(exe: &Path) -> Option<PathBuf> {
    let dir = exe.parent()?;
    if !matches!(dir.file_name()?.to_str()?, "bin" | "sbin") {
        return None;
    }
    let prefix = dir.parent()?;
    let etc = if prefix == Path::new("/usr") || prefix == Path::new("/") {
        PathBuf::from("/etc")
    } else {
        prefix.join("etc")
    };
    Some(etc.join("snstack").join("agent.conf"))
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Parses the file's text into entries, checked against the flags of `cmd`.
pub fn parse(path: &Path, text: &str, cmd: &Command) -> Result<Vec<Entry>, ConfigError> {
    let bad = |line: usize, msg: String| ConfigError::Bad {
        path: path.to_path_buf(),
        line,
        msg,
    };
    type Doc = BTreeMap<toml::Spanned<String>, toml::Spanned<toml::Value>>;
    let doc: Doc = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(text, s.start));
        bad(line, e.message().trim_end().to_string())
    })?;
    let mut out = Vec::new();
    for (k, v) in doc {
        let line = line_of(text, k.span().start);
        let key = k.into_inner();
        let value = match v.into_inner() {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => if b { "on" } else { "off" }.to_string(),
            toml::Value::Table(_) => {
                return Err(bad(line, format!("'{key}': sections are not used here")))
            }
            _ => return Err(bad(line, format!("'{key}': expected a string or a number"))),
        };
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()))
            .filter(|_| !NOT_IN_FILE.contains(&key.as_str()));
        if arg.is_none() {
            return Err(bad(
                line,
                format!(
                    "unknown key '{key}' (keys are the long flags of snstack-agent, e.g. spin-us)"
                ),
            ));
        }
        // The flag's own parser, on this one value.
        let probe = cmd
            .clone()
            .try_get_matches_from([OsString::from("snstack-agent"), flag(&key, &value)]);
        if let Err(e) = probe {
            let msg = e.render().to_string();
            let first = msg
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("error: ");
            return Err(bad(line, format!("'{key}': {first}")));
        }
        out.push(Entry { key, value, line });
    }
    Ok(out)
}

/// Reads and parses `path`.
pub fn load(path: &Path, cmd: &Command) -> Result<Vec<Entry>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Read {
        path: path.to_path_buf(),
        err,
    })?;
    parse(path, &text, cmd)
}

fn flag(key: &str, value: &str) -> OsString {
    format!("--{key}={value}").into()
}

/// The flags the file contributes: those of `entries` that the command line (`cli`, parsed
/// with `cmd`) did not give itself. Put them before the command line's own arguments.
pub fn flags_not_on_command_line(
    entries: &[Entry],
    cmd: &Command,
    cli: &ArgMatches,
) -> Vec<OsString> {
    entries
        .iter()
        .filter(|e| {
            let id = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(e.key.as_str()))
                .map(|a| a.get_id().as_str().to_string());
            id.is_some_and(|id| cli.value_source(&id) != Some(ValueSource::CommandLine))
        })
        .map(|e| flag(&e.key, &e.value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    fn cmd() -> Command {
        Command::new("t")
            .arg(
                Arg::new("spin_us")
                    .long("spin-us")
                    .value_parser(clap::value_parser!(u64))
                    .default_value("50"),
            )
            .arg(Arg::new("socket").long("socket").default_value("/run/x"))
            .arg(
                Arg::new("loopback")
                    .long("loopback")
                    .value_parser(["on", "off"])
                    .default_value("on"),
            )
            .arg(Arg::new("config").long("config"))
            .arg(Arg::new("v").long("verbose").action(ArgAction::SetTrue))
    }

    #[test]
    fn keys_values_and_lines() {
        let text =
            "# comment\nspin-us = 7\n\nsocket = \"/tmp/a b.sock\"  # trailing\nloopback = false\n";
        let e = parse(Path::new("f"), text, &cmd()).unwrap();
        let got: Vec<(&str, &str, usize)> = e
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str(), e.line))
            .collect();
        assert_eq!(
            got,
            [
                ("loopback", "off", 5),
                ("socket", "/tmp/a b.sock", 4),
                ("spin-us", "7", 2)
            ]
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let c = cmd();
        let err = |t: &str| {
            parse(Path::new("/etc/x.conf"), t, &c)
                .unwrap_err()
                .to_string()
        };
        assert!(err("spin-us = 1\nbogus = 2\n").starts_with("/etc/x.conf:2: unknown key 'bogus'"));
        assert!(err("\nspin-us = \"many\"\n").starts_with("/etc/x.conf:2: 'spin-us':"));
        assert!(err("spin-us = 1\nspin-us = 2\n").starts_with("/etc/x.conf:2:"));
        assert!(err("a b c\n").starts_with("/etc/x.conf:1:"));
        assert!(err("\n\nconfig = \"/x\"\n").starts_with("/etc/x.conf:3: unknown key 'config'"));
        assert!(err("[agent]\nspin-us = 1\n").starts_with("/etc/x.conf:1: 'agent': sections"));
        assert!(err("loopback = \"maybe\"\n").starts_with("/etc/x.conf:1: 'loopback':"));
    }

    #[test]
    fn command_line_wins() {
        let c = cmd();
        let e = parse(Path::new("f"), "spin-us = 7\nsocket = \"/f\"\n", &c).unwrap();
        let cli = c.clone().get_matches_from(["t", "--spin-us", "9"]);
        let extra = flags_not_on_command_line(&e, &c, &cli);
        assert_eq!(extra, [OsString::from("--socket=/f")]);
        let mut argv = vec![OsString::from("t")];
        argv.extend(extra);
        argv.extend(["--spin-us".into(), "9".into()]);
        let m = c.get_matches_from(argv);
        assert_eq!(m.get_one::<u64>("spin_us"), Some(&9));
        assert_eq!(
            m.get_one::<String>("socket").map(String::as_str),
            Some("/f")
        );
    }

    /// The installed template (etc/agent.conf) names every flag of the agent, and each of its
    /// commented settings, uncommented, is accepted by that flag's parser.
    #[test]
    fn template_covers_every_flag() {
        use clap::Args;
        let text = include_str!("../../etc/agent.conf");
        let cmd = crate::RunArgs::augment_args(Command::new("snstack-agent"));
        let settings: String = text
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .filter(|l| l.starts_with(|c: char| c.is_ascii_lowercase()) && l.contains(" = "))
            .map(|l| format!("{l}\n"))
            .collect();
        let e = parse(Path::new("etc/agent.conf"), &settings, &cmd).unwrap();
        let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
        for a in cmd.get_arguments() {
            let Some(long) = a.get_long() else { continue };
            if NOT_IN_FILE.contains(&long) {
                continue;
            }
            assert!(
                keys.contains(&long),
                "etc/agent.conf does not show '{long}'"
            );
        }
        // As shipped, everything is commented out: the defaults are the flags' own.
        assert!(parse(Path::new("f"), text, &cmd).unwrap().is_empty());
    }

    #[test]
    fn installed_paths() {
        let p = |s: &str| installed_config(Path::new(s)).map(|p| p.display().to_string());
        assert_eq!(
            p("/usr/bin/snstack-agent").as_deref(),
            Some("/etc/snstack/agent.conf")
        );
        assert_eq!(
            p("/usr/local/bin/snstack-agent").as_deref(),
            Some("/usr/local/etc/snstack/agent.conf")
        );
        assert_eq!(
            p("/opt/s/sbin/snstack-agent").as_deref(),
            Some("/opt/s/etc/snstack/agent.conf")
        );
        assert_eq!(p("/work/x/target/release/snstack-agent"), None);
    }
}
