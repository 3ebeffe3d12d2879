//! exec: offloaded sockets survive `execve` (nginx's binary upgrade passes its listeners to the new
//! binary this way), and the new image keeps `LD_PRELOAD` and `SNSTACK_*`.
//!
//! Before the exec, the process takes a ticket from the agent (as for fork) naming itself as the
//! claimant, and passes it to the new image in the environment with the map of the fds that
//! survive the exec (those without FD_CLOEXEC): `SNSTACK_EXEC_TICKET=<hex>`,
//! `SNSTACK_EXEC_FDS=fd:slot:flags,...`. The new image's library claims the ticket in its
//! constructor, rebuilds its fd table from the map and removes both variables. The old image's
//! channel dies with it (its fds are close-on-exec); the ticket keeps the sockets alive meanwhile.

use crate::fdtable::{self, Entry};
use crate::util::{self, env};
use crate::{log, sys};
use core::sync::atomic::Ordering;
use libc::c_char;
use std::ffi::{CStr, CString};

const TICKET: &str = "SNSTACK_EXEC_TICKET";
const FDS: &str = "SNSTACK_EXEC_FDS";

/// Variables the new image must keep.
const KEEP: [&str; 8] = [
    "LD_PRELOAD",
    "SNSTACK_AGENT",
    "SNSTACK_OFFLOAD",
    "SNSTACK_STRICT",
    "SNSTACK_SPIN_US",
    "SNSTACK_LIVENESS_MS",
    "SNSTACK_YIELDS",
    "SNSTACK_LOG",
];

/// A prepared environment for the new image; keeps the strings alive until exec.
pub(crate) struct Env {
    _strings: Vec<CString>,
    ptrs: Vec<*const c_char>,
}

impl Env {
    pub(crate) fn as_ptr(&self) -> *const *const c_char {
        self.ptrs.as_ptr()
    }
}

fn name_of(entry: &[u8]) -> &[u8] {
    entry.split(|&b| b == b'=').next().unwrap_or(entry)
}

/// Builds the new image's environment from `envp` (null: the current `environ`).
///
/// # Safety
/// `envp` is null or a null-terminated array of C strings.
pub(crate) unsafe fn prepare(envp: *const *const c_char) -> Option<Env> {
    if crate::config::offload_disabled() {
        return None;
    }
    // Nothing to hand over: the application's environment goes through untouched.
    let handover = ticket_and_map()?;
    // SAFETY: caller's contract.
    unsafe { env_with(envp, handover) }
}

/// An fd action of `posix_spawn` as recorded by the `posix_spawn_file_actions_add*` hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Act {
    Close(i32),
    Dup2(i32, i32),
    /// `addopen`: the fd becomes a file.
    Open(i32),
    CloseFrom(i32),
}

/// `posix_spawn`: the environment for the child image when offloaded fds survive into it (after
/// `acts` and close-on-exec), with the ticket's secret; the caller ties the ticket to the child's
/// pid once it is known (until then the agent accepts a direct child of ours).
///
/// # Safety
/// `envp` is null or a null-terminated array of C strings.
pub(crate) unsafe fn prepare_spawn(envp: *const *const c_char, acts: &[Act]) -> Option<(Env, u64)> {
    if crate::config::offload_disabled() {
        return None;
    }
    crate::process::channel_if_attached()?;
    // fd -> (slot, nonblock, cloexec) as the child will see it.
    let mut fds: Vec<(i32, u32, bool, bool)> = surviving(false);
    for a in acts {
        match *a {
            Act::Close(fd) | Act::Open(fd) => fds.retain(|x| x.0 != fd),
            Act::CloseFrom(lo) => fds.retain(|x| x.0 < lo),
            Act::Dup2(from, to) if from == to => {
                // glibc: dup2 onto itself clears FD_CLOEXEC.
                for x in fds.iter_mut().filter(|x| x.0 == from) {
                    x.3 = false;
                }
            }
            Act::Dup2(from, to) => {
                let src = fds.iter().find(|x| x.0 == from).copied();
                fds.retain(|x| x.0 != to);
                if let Some((_, slot, nb, _)) = src {
                    fds.push((to, slot, nb, false));
                }
            }
        }
    }
    fds.retain(|x| !x.3);
    let map = fd_map(&fds);
    if map.is_empty() {
        return None;
    }
    let secret = crate::process::fork_prepare();
    if secret == 0 {
        return None;
    }
    // SAFETY: caller's contract.
    let env = unsafe { env_with(envp, (secret, map)) }?;
    Some((env, secret))
}

/// The environment for a new image that takes over the sockets of `handover` (secret, fd map).
///
/// # Safety
/// `envp` is null or a null-terminated array of C strings.
unsafe fn env_with(envp: *const *const c_char, handover: (u64, String)) -> Option<Env> {
    let mut strings: Vec<CString> = Vec::new();
    let mut have: Vec<Vec<u8>> = Vec::new();
    let src = if envp.is_null() {
        // SAFETY: the process environment.
        unsafe { libc_environ() }
    } else {
        envp
    };
    if !src.is_null() {
        let mut i = 0;
        loop {
            // SAFETY: null-terminated array of C strings (caller's contract).
            let p = unsafe { *src.add(i) };
            if p.is_null() {
                break;
            }
            // SAFETY: a C string from the array.
            let e = unsafe { CStr::from_ptr(p) }.to_bytes();
            let n = name_of(e);
            if n != TICKET.as_bytes() && n != FDS.as_bytes() {
                have.push(n.to_vec());
                strings.push(CString::new(e).ok()?);
            }
            i += 1;
        }
    }
    // LD_PRELOAD and SNSTACK_* are put back into an environment that dropped them (nginx builds
    // the new binary's environment from scratch) when sockets are handed over: the new image needs
    // the library to use them. Otherwise the application's choice stands (`env -u LD_PRELOAD`).
    {
        for k in KEEP {
            if have.iter().any(|h| h == k.as_bytes()) {
                continue;
            }
            let mut name = k.as_bytes().to_vec();
            name.push(0);
            let Ok(cname) = CStr::from_bytes_with_nul(&name) else {
                continue;
            };
            if let Some(v) = env(cname) {
                let mut s = k.as_bytes().to_vec();
                s.push(b'=');
                s.extend_from_slice(v);
                strings.push(CString::new(s).ok()?);
            }
        }
    }
    let (secret, map) = handover;
    strings.push(CString::new(format!("{TICKET}={secret:x}")).ok()?);
    strings.push(CString::new(format!("{FDS}={map}")).ok()?);
    let mut ptrs: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
    ptrs.push(core::ptr::null());
    Some(Env {
        _strings: strings,
        ptrs,
    })
}

extern "C" {
    static mut environ: *const *const c_char;
}

/// # Safety
/// Reads the process-global `environ`.
unsafe fn libc_environ() -> *const *const c_char {
    // SAFETY: reading the pointer value of libc's environ.
    unsafe { core::ptr::addr_of!(environ).read() }
}

/// Offloaded fds of this process: (fd, slot, nonblock, cloexec); `only_kept`: without the
/// close-on-exec ones.
fn surviving(only_kept: bool) -> Vec<(i32, u32, bool, bool)> {
    let Some(c) = crate::process::channel_if_attached() else {
        return Vec::new();
    };
    let mut v = Vec::new();
    fdtable::for_each_sock(|fd, slot| {
        let cloexec = sys::fcntl(fd, libc::F_GETFD, 0)
            .map(|f| f as i32 & libc::FD_CLOEXEC != 0)
            .unwrap_or(true);
        if cloexec && only_kept {
            return;
        }
        let nb = c
            .socks
            .get(slot as usize)
            .map(|h| h.nonblock.load(Ordering::Relaxed))
            .unwrap_or(false);
        v.push((fd, slot, nb, cloexec));
    });
    v
}

/// `SNSTACK_EXEC_FDS`'s value: `fd:slot:nonblock,...`.
fn fd_map(fds: &[(i32, u32, bool, bool)]) -> String {
    let mut map = String::new();
    for (fd, slot, nb, _) in fds {
        if !map.is_empty() {
            map.push(',');
        }
        map.push_str(&format!("{fd}:{slot}:{}", *nb as u8));
    }
    map
}

/// Takes a ticket naming ourselves and lists the offloaded fds that survive the exec.
fn ticket_and_map() -> Option<(u64, String)> {
    let map = fd_map(&surviving(true));
    if map.is_empty() {
        return None;
    }
    let secret = crate::process::fork_prepare();
    if secret == 0 {
        return None;
    }
    crate::process::fork_parent(secret, sys::getpid());
    Some((secret, map))
}

fn parse_hex(b: &[u8]) -> Option<u64> {
    u64::from_str_radix(core::str::from_utf8(b).ok()?, 16).ok()
}

/// New image, at load: claim the ticket the old image left, rebuild the fd table.
pub(crate) fn adopt() {
    let Some(t) = env(c"SNSTACK_EXEC_TICKET").and_then(parse_hex) else {
        return;
    };
    let map = env(c"SNSTACK_EXEC_FDS")
        .map(|m| m.to_vec())
        .unwrap_or_default();
    // SAFETY: removing our own variables at load time, before the program runs.
    unsafe {
        libc::unsetenv(c"SNSTACK_EXEC_TICKET".as_ptr());
        libc::unsetenv(c"SNSTACK_EXEC_FDS".as_ptr());
    }
    if crate::config::offload_disabled() {
        return;
    }
    let Some(c) = crate::process::attach_with_ticket(t) else {
        return;
    };
    let mut n = 0;
    for item in map.split(|&b| b == b',') {
        let mut it = item.split(|&b| b == b':');
        let (Some(fd), Some(slot), Some(nb)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let (Some(fd), Some(slot)) = (util::parse_u64(fd), util::parse_u64(slot)) else {
            continue;
        };
        let (fd, slot) = (fd as i32, slot as u32);
        let Some(hs) = c.socks.get(slot as usize) else {
            continue;
        };
        if fdtable::get(fd) != Entry::None || sys::fcntl(fd, libc::F_GETFD, 0).is_err() {
            continue;
        }
        let mut dom: i32 = 0;
        let mut len = 4u32;
        // SAFETY: getsockopt(SO_DOMAIN) on the shadow socket into a local int.
        let ok = unsafe {
            sys::syscall6(
                libc::SYS_getsockopt as usize,
                fd as usize,
                libc::SOL_SOCKET as usize,
                libc::SO_DOMAIN as usize,
                &mut dom as *mut i32 as usize,
                &mut len as *mut u32 as usize,
                0,
            )
        }
        .is_ok();
        if !ok {
            continue;
        }
        if hs.refs.fetch_add(1, Ordering::AcqRel) == 0 {
            hs.inc.fetch_add(1, Ordering::AcqRel);
            hs.nonblock.store(nb == b"1", Ordering::Relaxed);
            hs.domain.store(dom, Ordering::Relaxed);
            if let Some(ctl) = c.region.sock(slot) {
                hs.err_seen.store(
                    ctl.state.0.error_seq.load(Ordering::Acquire),
                    Ordering::Relaxed,
                );
            }
        }
        fdtable::set_sock(fd, slot);
        n += 1;
    }
    // Sockets the ticket carried whose fds were close-on-exec: nobody here holds them.
    let max = c.region.geometry().max_sockets;
    for slot in 0..max {
        let open = c
            .region
            .sock(slot)
            .map(|ctl| ctl.state.0.flags.load(Ordering::Acquire) & shm_proto::SF_OPEN != 0);
        let unheld = c
            .socks
            .get(slot as usize)
            .map(|h| h.refs.load(Ordering::Acquire) == 0);
        if open == Some(true) && unheld == Some(true) {
            let _ = c.post(slot, shm_proto::Request::Close);
        }
    }
    log!(
        util::INFO,
        "exec: {n} offloaded socket(s) taken over from the previous image"
    );
}
