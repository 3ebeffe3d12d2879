//! `libsnstack.so`: loaded with `LD_PRELOAD` into an unmodified program, it moves the program's
//! AF_INET/AF_INET6 TCP sockets to `snstack-agent` over the shared-memory channel of `shm-proto`.
//!
//! Modules in layers; each uses only the layers below it (docs/preload.md):
//! ```text
//!  hooks.rs        extern "C", thin: fd not ours -> libc (RTLD_NEXT, real.rs)
//!    │
//!  fdmodel.rs      close: what an fd number names, kept exact
//!    │
//!  ops.rs  epoll.rs  poll.rs  sendfile.rs  exec.rs  spawn.rs  signals.rs     (logic)
//!    │
//!  readiness.rs  sockref.rs  sock.rs  fdtable.rs  interest.rs  filemap.rs    (state)
//!    │
//!  process.rs      the channel (attach on first use, fork ticket, fork child)
//!    │
//!  channel.rs ══ region ══ snstack-agent
//!    │
//!  config.rs  sys.rs  util.rs  real.rs
//! ```
//! Every fd the library does not own goes to libc untouched after one atomic load (`fdtable`).
//! The library never calls a symbol it interposes: its own OS calls are raw syscalls (`sys`).
//! Configuration (environment, read once, `config.rs`): `SNSTACK_OFFLOAD`, `SNSTACK_AGENT`,
//! `SNSTACK_STRICT`, `SNSTACK_SPIN_US`, `SNSTACK_YIELDS`, `SNSTACK_LIVENESS_MS`, `SNSTACK_LOG`.
//! See README.md. This file holds only the module list and the constructor glue.

#![allow(clippy::missing_safety_doc)]

mod channel;
mod config;
mod epoll;
mod exec;
mod fdmodel;
mod fdtable;
mod filemap;
#[macro_use]
mod hooks;
mod interest;
mod ops;
mod poll;
mod process;
mod readiness;
mod real;
mod sendfile;
mod signals;
mod sock;
mod sockref;
mod spawn;
mod sys;
mod util;

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;

extern "C" fn init() {
    // SAFETY: registering a fork handler with no prepare/parent hooks.
    unsafe { libc::pthread_atfork(None, None, Some(atfork_child)) };
    // A new image after exec: take over the sockets the previous image passed on.
    let _ = std::panic::catch_unwind(exec::adopt);
}

/// The atfork child handler (see [`process::atfork_child`]).
extern "C" fn atfork_child() {
    process::atfork_child(&epoll::AFTER_FORK);
}
