//! Finds the system lwIP with pkg-config (Debian: `apt-get install liblwip-dev pkg-config`),
//! compiles the C shim against its headers (so struct layouts are the compiler's, never
//! mirrored by hand except `struct pbuf`, which a test checks) and links liblwip.

use std::process::Command;

fn pkg_config(args: &[&str]) -> Result<String, String> {
    let out = Command::new("pkg-config")
        .args(args)
        .arg("lwip")
        .output()
        .map_err(|e| format!("running pkg-config: {e} (apt-get install pkg-config liblwip-dev)"))?;
    if !out.status.success() {
        return Err(format!(
            "pkg-config cannot find lwip (apt-get install liblwip-dev): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn main() {
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_LIBDIR");
    println!("cargo:rustc-check-cfg=cfg(lwip_missing)");
    let (cflags, libs) = match (pkg_config(&["--cflags"]), pkg_config(&["--libs"])) {
        (Ok(c), Ok(l)) => (c, l),
        (Err(e), _) | (_, Err(e)) => {
            if std::env::var_os("CARGO_FEATURE_REQUIRE").is_some() {
                // nic-agent --features lwip: one clear line instead of a wall of linker errors.
                eprintln!("lwip-sys: {e}");
                println!("cargo:warning=lwip-sys: {e}");
                std::process::exit(1);
            }
            println!("cargo:warning=lwip-sys: lwIP not found, building without bindings ({e})");
            println!("cargo:rustc-cfg=lwip_missing");
            return;
        }
    };
    let version = pkg_config(&["--modversion"]).unwrap_or_default();
    println!("cargo:rustc-env=LWIP_VERSION={}", version.trim());

    let mut build = cc::Build::new();
    build.file("shim/shim.c");
    for t in cflags.split_whitespace() {
        if let Some(dir) = t.strip_prefix("-I") {
            build.include(dir);
        } else {
            build.flag(t);
        }
    }
    build.compile("snstack_lwip_shim");
    for t in libs.split_whitespace() {
        if let Some(l) = t.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={l}");
        } else if let Some(d) = t.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={d}");
        }
    }
}
