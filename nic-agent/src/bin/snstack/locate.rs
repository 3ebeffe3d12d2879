//! Where the library and the agent are: an environment override, else beside this executable.
//!
//! ```text
//! installed:  PREFIX/bin/snstack  ->  PREFIX/lib/snstack/libsnstack.so (or PREFIX/lib/)
//!                                     PREFIX/bin/snstack-agent
//! checkout:   target/release/snstack  ->  target/release/libsnstack.so, snstack-agent
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

const LIB: &str = "libsnstack.so";
const AGENT: &str = "snstack-agent";

/// The places, in order, where a `snstack` in `dir` looks for the library.
pub fn lib_candidates(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(prefix) = dir.parent() {
        v.push(prefix.join("lib").join("snstack").join(LIB));
        v.push(prefix.join("lib").join(LIB));
    }
    v.push(dir.join(LIB));
    v
}

fn exe_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding this executable (/proc/self/exe)")?;
    Ok(exe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/")))
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The preload library, as an absolute path (what `LD_PRELOAD` needs from any directory).
pub fn library() -> anyhow::Result<PathBuf> {
    if let Some(p) = env_path("SNSTACK_LIB") {
        return std::fs::canonicalize(&p)
            .with_context(|| format!("SNSTACK_LIB={} not found", p.display()));
    }
    let dir = exe_dir()?;
    let tried = lib_candidates(&dir);
    match tried.iter().find(|p| p.is_file()) {
        Some(p) => Ok(std::fs::canonicalize(p)?),
        None => bail!(
            "{LIB} not found (looked in {}): install it (make install), build it (make build) or set SNSTACK_LIB",
            tried
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The agent binary.
pub fn agent() -> anyhow::Result<PathBuf> {
    if let Some(p) = env_path("SNSTACK_AGENT_BIN") {
        return Ok(p);
    }
    let p = exe_dir()?.join(AGENT);
    if !p.is_file() {
        bail!(
            "{} not found: install it (make install), build it (make build) or set SNSTACK_AGENT_BIN",
            p.display()
        );
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_cover_installed_and_checkout() {
        let c = lib_candidates(Path::new("/usr/local/bin"));
        assert_eq!(
            c,
            [
                PathBuf::from("/usr/local/lib/snstack/libsnstack.so"),
                PathBuf::from("/usr/local/lib/libsnstack.so"),
                PathBuf::from("/usr/local/bin/libsnstack.so"),
            ]
        );
        let c = lib_candidates(Path::new("/w/target/release"));
        assert_eq!(
            c.last(),
            Some(&PathBuf::from("/w/target/release/libsnstack.so"))
        );
    }
}
