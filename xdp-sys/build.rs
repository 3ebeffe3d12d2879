//! Finds the system libxdp and libbpf with pkg-config (Debian: `apt-get install libxdp-dev
//! libbpf-dev pkg-config`), compiles the C shim and links both libraries. Without them the crate
//! builds empty and tells dependents so: `cargo:available=0` (their build scripts read
//! `DEP_XDP_AVAILABLE`).

use std::process::Command;

const LIBS: [&str; 2] = ["libxdp", "libbpf"];

fn pkg_config(arg: &str) -> Result<String, String> {
    let out = Command::new("pkg-config")
        .arg(arg)
        .args(LIBS)
        .output()
        .map_err(|e| format!("running pkg-config: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "pkg-config cannot find libxdp/libbpf (apt-get install libxdp-dev libbpf-dev): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn main() {
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rustc-check-cfg=cfg(xdp_missing)");
    let (cflags, libs) = match (pkg_config("--cflags"), pkg_config("--libs")) {
        (Ok(c), Ok(l)) => (c, l),
        (Err(e), _) | (_, Err(e)) => {
            println!("cargo:warning=xdp-sys: building without AF_XDP ({e})");
            println!("cargo:rustc-cfg=xdp_missing");
            println!("cargo:available=0");
            return;
        }
    };
    let mut build = cc::Build::new();
    build.file("shim/shim.c").warnings(false);
    for t in cflags.split_whitespace() {
        match t.strip_prefix("-I") {
            Some(dir) => build.include(dir),
            None => build.flag(t),
        };
    }
    build.compile("snstack_xdp_shim");
    for t in libs.split_whitespace() {
        if let Some(l) = t.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={l}");
        } else if let Some(d) = t.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={d}");
        }
    }
    println!("cargo:available=1");
}
