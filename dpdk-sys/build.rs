//! Finds the system DPDK with pkg-config (Debian: `apt-get install libdpdk-dev pkg-config`),
//! compiles the C shim with DPDK's own compile flags and links the DPDK libraries.

use std::process::Command;

fn pkg_config(args: &[&str]) -> Result<String, String> {
    let out = Command::new("pkg-config")
        .args(args)
        .arg("libdpdk")
        .output()
        .map_err(|e| format!("running pkg-config: {e} (apt-get install pkg-config libdpdk-dev)"))?;
    if !out.status.success() {
        return Err(format!(
            "pkg-config cannot find libdpdk (apt-get install libdpdk-dev): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn main() {
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rustc-check-cfg=cfg(dpdk_missing)");
    let (cflags, libs) = match (pkg_config(&["--cflags"]), pkg_config(&["--libs"])) {
        (Ok(c), Ok(l)) => (c, l),
        (Err(e), _) | (_, Err(e)) => {
            if std::env::var_os("CARGO_FEATURE_REQUIRE").is_some() {
                // nic-agent --features dpdk: one clear line instead of a wall of linker errors.
                eprintln!("dpdk-sys: {e}");
                println!("cargo:warning=dpdk-sys: {e}");
                std::process::exit(1);
            }
            // A plain workspace build on a machine without DPDK: an empty crate.
            println!("cargo:warning=dpdk-sys: DPDK not found, building without bindings ({e})");
            println!("cargo:rustc-cfg=dpdk_missing");
            return;
        }
    };
    let version = pkg_config(&["--modversion"]).unwrap_or_default();
    println!("cargo:rustc-env=DPDK_VERSION={}", version.trim());

    let mut build = cc::Build::new();
    build.file("shim/shim.c").warnings(false);
    let mut toks = cflags.split_whitespace();
    while let Some(t) = toks.next() {
        if let Some(dir) = t.strip_prefix("-I") {
            build.include(dir);
        } else if t == "-include" {
            if let Some(f) = toks.next() {
                build.flag("-include").flag(f);
            }
        } else {
            build.flag(t);
        }
    }
    build.compile("snstack_dpdk_shim");

    for t in libs.split_whitespace() {
        if let Some(l) = t.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={l}");
        } else if let Some(d) = t.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={d}");
        } else if t.starts_with("-Wl,") {
            println!("cargo:rustc-link-arg={t}");
        }
    }
}
