//! libc's definition of each interposed symbol (the next one after ours), resolved lazily with
//! `dlsym(RTLD_NEXT, name)` and cached in an atomic. No `Once`: `dlsym` may call `malloc`, and a
//! racing resolution is harmless (both threads store the same pointer).
//!
//! The functions here are generated from the hook table (`hook_table!` in hooks.rs, which declares
//! each symbol once): `slots!` reads only the signatures. A symbol the library calls but does not
//! interpose is added at the bottom.

#![allow(clippy::missing_safety_doc)]

use core::sync::atomic::{AtomicUsize, Ordering};
use libc::{c_int, c_uint, c_ulong, c_void, iovec, size_t, sockaddr, socklen_t, ssize_t};

/// `argv`/`envp` as the exec family takes them.
pub(crate) type CStrArr = *const *const libc::c_char;
pub(crate) type SpawnFa = libc::posix_spawn_file_actions_t;

pub(crate) fn resolve(slot: &AtomicUsize, name: &core::ffi::CStr) -> usize {
    let p = slot.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT finds libc's definition.
    let f = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
    slot.store(f, Ordering::Relaxed);
    f
}

/// For each table entry with a return value, `real::name(args)` calls libc's definition.
macro_rules! slots {
    ($(
        $(#[$attr:meta])*
        fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?
            => $kind:ident [$($fd:ident),*] $body:tt;
    )*) => {
        $( slots!(@slot $kind $name($($arg: $ty),*) $(-> $ret)?); )*
    };
    // A trampoline into C and a function without a result have no libc counterpart to call.
    (@slot naked $($t:tt)*) => {};
    (@slot $kind:ident $name:ident($($arg:ident: $ty:ty),*)) => {};
    (@slot $kind:ident $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        /// Calls libc's definition.
        ///
        /// # Safety
        /// Same contract as the libc function.
        #[allow(dead_code)]
        pub(crate) unsafe fn $name($($arg: $ty),*) -> $ret {
            static SLOT: AtomicUsize = AtomicUsize::new(0);
            let p = resolve(&SLOT, {
                const N: &[u8] = concat!(stringify!($name), "\0").as_bytes();
                // SAFETY: N is NUL-terminated with no interior NUL.
                unsafe { core::ffi::CStr::from_bytes_with_nul_unchecked(N) }
            });
            if p == 0 {
                crate::sys::set_errno(libc::ENOSYS);
                return (-1i32) as $ret;
            }
            // SAFETY: dlsym returned libc's symbol of this name, whose C signature matches.
            let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { core::mem::transmute(p) };
            // SAFETY: forwarded under the caller's contract.
            unsafe { f($($arg),*) }
        }
    };
}

hook_table!(slots);

// Called by the library (sendfile's fallback), not interposed.
slots!(@slot extra pread(fd: c_int, b: *mut c_void, n: size_t, off: libc::off_t) -> ssize_t);
