//! `libsnstack.so`: loaded with `LD_PRELOAD` into an unmodified program, it moves the program's
//! AF_INET/AF_INET6 TCP sockets to `snstack-agent` over the shared-memory channel of `shm-proto`.
//!
//! Modules in layers; each uses only the layers below it (inside the logic layer, also along the
//! arrows). docs/preload.md says where each concept lives.
//! ```text
//!  hooks.rs        hook_table!: each interposed symbol once; thin extern "C" wrappers
//!     │
//!  fdmodel.rs      close, dup*, F_DUPFD*, close_range, closefrom: the fd table kept exact
//!  tokernel.rs     offload rules at bind/listen/connect: the socket moves to the kernel, same fd
//!     │
//!  ops.rs ◄─ sendfile.rs    epoll.rs ◄─ poll.rs    exec.rs ◄─ spawn.rs            (logic)
//!     │
//!  readiness.rs    readiness of an offloaded socket from shared memory
//!  sockref.rs      fd -> S (channel, slot, HostSock, SockCtl)
//!  signals.rs      handlers counted, so a wait returns EINTR as the kernel's would
//!     │
//!  process.rs      the process's channel: attach, fork ticket, fork child
//!     │
//!  channel.rs ══ region ══ snstack-agent
//!     │
//!  config.rs  rules.rs  fdtable.rs  sock.rs  optlog.rs  interest.rs  filemap.rs  real.rs
//!  util.rs  sys.rs
//! ```
//! Every fd the library does not own goes to libc untouched after one atomic load (`fdtable`).
//! The library never calls a symbol it interposes: its own OS calls are raw syscalls (`sys`).
//! Configuration (environment, read once, `config.rs`): `SNSTACK_OFFLOAD`, `SNSTACK_AGENT`,
//! `SNSTACK_STRICT`, `SNSTACK_SPIN_US`, `SNSTACK_YIELDS`, `SNSTACK_LIVENESS_MS`, `SNSTACK_LOG`;
//! offload rules (`SNSTACK_RULES`, `SNSTACK_RULES_FILE`, read by the constructor, `rules.rs`).
//! See README.md. This file holds only the module list and the constructor glue.

#![allow(clippy::missing_safety_doc)]

mod channel;
mod config;
mod epoll;
mod exec;
mod fdmodel;
mod fdtable;
mod filemap;
mod fileref;
// `hook_table!` (hooks.rs) is also expanded by real.rs, declared after it.
#[macro_use]
mod hooks;
mod interest;
mod ops;
mod optlog;
mod poll;
mod process;
mod readiness;
mod real;
mod rules;
mod sendfile;
mod shadow;
mod signals;
mod sock;
mod sockref;
mod spawn;
mod sys;
mod tlsrx;
mod tokernel;
mod urgent;
mod util;

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;

extern "C" fn init() {
    // SAFETY: registering a fork handler with no prepare/parent hooks.
    unsafe { libc::pthread_atfork(None, None, Some(atfork_child)) };
    // Offload rules of this image (SNSTACK_RULES, SNSTACK_RULES_FILE), before any socket.
    let _ = std::panic::catch_unwind(rules::load);
    // A new image after exec: take over the sockets the previous image passed on.
    let _ = std::panic::catch_unwind(exec::adopt);
}

/// The atfork child handler (see [`process::atfork_child`]).
extern "C" fn atfork_child() {
    process::atfork_child(&epoll::AFTER_FORK);
}
