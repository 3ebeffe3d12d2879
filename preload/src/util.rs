//! Small allocation-free helpers: a spin mutex, stderr logging, errno.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// A lock for short critical sections that never sleep while held. Spins, then yields.
pub(crate) struct SpinMutex<T> {
    locked: AtomicBool,
    val: UnsafeCell<T>,
}

// SAFETY: access to `val` is serialised by `locked`.
unsafe impl<T: Send> Sync for SpinMutex<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for SpinMutex<T> {}

pub(crate) struct Guard<'a, T> {
    m: &'a SpinMutex<T>,
}

impl<T> SpinMutex<T> {
    pub(crate) const fn new(v: T) -> Self {
        SpinMutex {
            locked: AtomicBool::new(false),
            val: UnsafeCell::new(v),
        }
    }

    pub(crate) fn lock(&self) -> Guard<'_, T> {
        let mut spins = 0u32;
        loop {
            if !self.locked.load(Ordering::Relaxed)
                && self
                    .locked
                    .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return Guard { m: self };
            }
            spins += 1;
            if spins < 100 {
                core::hint::spin_loop();
            } else {
                sched_yield();
            }
        }
    }

    pub(crate) fn try_lock(&self) -> Option<Guard<'_, T>> {
        if self
            .locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            Some(Guard { m: self })
        } else {
            None
        }
    }

    /// Makes the lock usable again in a forked child, whose other threads are gone.
    ///
    /// # Safety
    /// Only in the child right after fork, before any other thread exists.
    pub(crate) unsafe fn force_unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }
}

impl<T> core::ops::Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: we hold the lock.
        unsafe { &*self.m.val.get() }
    }
}

impl<T> core::ops::DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: we hold the lock.
        unsafe { &mut *self.m.val.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        self.m.locked.store(false, Ordering::Release);
    }
}

pub(crate) fn sched_yield() {
    // SAFETY: no arguments.
    let _ = unsafe { crate::sys::syscall6(libc::SYS_sched_yield as usize, 0, 0, 0, 0, 0, 0) };
}

/// Log levels, ordered.
pub(crate) const ERROR: u8 = 1;
pub(crate) const WARN: u8 = 2;
pub(crate) const INFO: u8 = 3;
pub(crate) const DEBUG: u8 = 4;

pub(crate) static LOG_LEVEL: AtomicU8 = AtomicU8::new(WARN);

/// Formats into a stack buffer and writes one line to stderr with a raw syscall: no allocation,
/// no locks, no libc stdio.
pub(crate) struct LineBuf {
    buf: [u8; 512],
    len: usize,
}

impl LineBuf {
    pub(crate) fn new() -> Self {
        LineBuf {
            buf: [0; 512],
            len: 0,
        }
    }
    pub(crate) fn flush(&mut self) {
        if self.len < self.buf.len() {
            self.buf[self.len] = b'\n';
            self.len += 1;
        } else {
            self.buf[self.len - 1] = b'\n';
        }
        let _ = crate::sys::write(2, &self.buf[..self.len]);
    }
}

impl core::fmt::Write for LineBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.buf.len() - 1 - self.len.min(self.buf.len() - 1);
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

#[macro_export]
macro_rules! log {
    ($lvl:expr, $($arg:tt)*) => {{
        if $lvl <= $crate::util::LOG_LEVEL.load(core::sync::atomic::Ordering::Relaxed) {
            let mut lb = $crate::util::LineBuf::new();
            let _ = core::fmt::Write::write_fmt(&mut lb, format_args!("snstack[{}]: ", $crate::sys::getpid()));
            let _ = core::fmt::Write::write_fmt(&mut lb, format_args!($($arg)*));
            lb.flush();
        }
    }};
}

pub(crate) fn env(name: &core::ffi::CStr) -> Option<&'static [u8]> {
    // SAFETY: getenv with a NUL-terminated name; the returned string lives as long as the
    // environment is not modified, which we accept for configuration read once at start.
    let p = unsafe { libc::getenv(name.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: getenv returns a NUL-terminated string.
    Some(unsafe { core::ffi::CStr::from_ptr(p) }.to_bytes())
}

pub(crate) fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
    }
    Some(v)
}
