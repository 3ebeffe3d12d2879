//! Compiles the few hooks that must be C: the variadic exec functions (stable Rust cannot define
//! a C-variadic function).
fn main() {
    println!("cargo:rerun-if-changed=csrc/execl.c");
    cc::Build::new()
        .file("csrc/execl.c")
        .flag_if_supported("-fvisibility=default")
        .warnings(true)
        .compile("snstack_execl");
}
