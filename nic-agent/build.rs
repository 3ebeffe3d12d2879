//! `cfg(snstack_xdp)` when xdp-sys found the system libxdp/libbpf (its `DEP_XDP_AVAILABLE`): the
//! AF_XDP device is compiled in; otherwise `--backend xdp` exits with one line saying so.

fn main() {
    println!("cargo:rustc-check-cfg=cfg(snstack_xdp)");
    println!("cargo:rerun-if-env-changed=DEP_XDP_AVAILABLE");
    if std::env::var("DEP_XDP_AVAILABLE").as_deref() == Ok("1") {
        println!("cargo:rustc-cfg=snstack_xdp");
    }
}
