//! The terminal side of `snstack top`: keys without Enter, signals as events, the window size.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub fn is_tty(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// Rows and columns of the terminal on `fd`.
pub fn window_size(fd: RawFd) -> Option<(u16, u16)> {
    let mut ws = MaybeUninit::<libc::winsize>::zeroed();
    // SAFETY: TIOCGWINSZ writes one winsize into the valid out-pointer.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, ws.as_mut_ptr()) };
    if r != 0 {
        return None;
    }
    // SAFETY: the ioctl succeeded and filled it (zeroed before anyway).
    let ws = unsafe { ws.assume_init() };
    (ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// stdin without line buffering and echo (one key at a time) while this lives. Ctrl-C still
/// raises SIGINT, which [`Signals`] turns into an event.
pub struct RawKeys {
    fd: RawFd,
    saved: libc::termios,
}

impl RawKeys {
    pub fn new(fd: RawFd) -> io::Result<RawKeys> {
        let mut t = MaybeUninit::<libc::termios>::zeroed();
        // SAFETY: tcgetattr writes one termios into the valid out-pointer.
        cvt(unsafe { libc::tcgetattr(fd, t.as_mut_ptr()) })?;
        // SAFETY: tcgetattr succeeded and filled it.
        let saved = unsafe { t.assume_init() };
        let mut raw = saved;
        raw.c_lflag &= !(libc::ICANON | libc::ECHO);
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        // SAFETY: `raw` is a valid termios.
        cvt(unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) })?;
        Ok(RawKeys { fd, saved })
    }
}

impl Drop for RawKeys {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `new`.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// SIGINT, SIGTERM, SIGHUP and SIGWINCH delivered through a signalfd (blocked otherwise), so
/// the view restores the terminal before it exits and redraws when the window changes.
pub struct Signals {
    fd: OwnedFd,
}

impl Signals {
    pub fn new() -> io::Result<Signals> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set; sigaddset adds valid signal numbers to it.
        let set = unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGWINCH] {
                libc::sigaddset(set.as_mut_ptr(), s);
            }
            set.assume_init()
        };
        // SAFETY: `set` is initialised; this process is single-threaded.
        cvt(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) })?;
        // SAFETY: `set` is initialised.
        let raw = cvt(unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })?;
        // SAFETY: a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Signals { fd })
    }

    fn take(&self) -> Option<u32> {
        let mut info = MaybeUninit::<libc::signalfd_siginfo>::zeroed();
        let len = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reads at most `len` bytes into `info`.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), info.as_mut_ptr().cast(), len) };
        // SAFETY: a full record was read (checked), else the zeroed value is not used.
        (n == len as isize).then(|| unsafe { info.assume_init() }.ssi_signo)
    }
}

pub enum Event {
    Timeout,
    Key(u8),
    /// stdin closed or unreadable: keys will never come.
    KeysGone,
    Resize,
    Quit,
}

/// Waits up to `t` for a key on `keys` (when given) or a signal.
pub fn wait(t: Duration, keys: Option<RawFd>, sig: &Signals) -> io::Result<Event> {
    let mut fds = [
        libc::pollfd {
            fd: sig.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: keys.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ms = libc::c_int::try_from(t.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fds` is a valid array of two pollfd (a negative fd is ignored by poll).
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(Event::Timeout)
        } else {
            Err(e)
        };
    }
    if fds[0].revents != 0 {
        return Ok(match sig.take() {
            Some(s) if s == libc::SIGWINCH as u32 => Event::Resize,
            Some(_) => Event::Quit,
            None => Event::Timeout,
        });
    }
    if fds[1].revents != 0 {
        let mut b = [0u8; 1];
        // SAFETY: reads at most one byte into `b`.
        let r = unsafe { libc::read(fds[1].fd, b.as_mut_ptr().cast(), 1) };
        return Ok(if r == 1 {
            Event::Key(b[0])
        } else {
            Event::KeysGone
        });
    }
    Ok(Event::Timeout)
}
