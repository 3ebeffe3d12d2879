//! The serve loops of `snstack-kv` and `snstack-http` over `snstack-payload`.
//!
//! One poll group per thread; every group serves the same address (the agent spreads new
//! connections over them as `SO_REUSEPORT` listeners) and runs:
//!
//! ```text
//!  loop {
//!      tick (clock for the handler; now and then: active expiry / Date, retry_blocked)
//!      for ev in group.poll(..) { driver.input(ev) }   // replies queued, views not kept
//!      driver.transmit(&group)                          // pieces of what each TX ring takes
//!      group.flush()                                    // one kick per connection per batch
//!  }
//! ```
//!
//! `Group::attach`, `serve`, `poll` returning events that borrow the group, `writable`,
//! `send_vectored` (all or nothing, `WouldBlock`), `flush`, `close` (docs/payload-api.md). The
//! events are consumed before any send; that costs one copy of each reply (into the
//! connection's queue) which replying in place (`Events::group`, `Group::reserve`) could remove
//! for replies that fit.

use crate::serve::{ConnId, Driver, Handler, Input, Transmit};
use crate::{http, kv, serve};
use snstack_payload::{Conn, Event, Framing, Group};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// Events taken per poll.
const MAX_EVENTS: usize = 256;
/// Longest sleep: the idle work (expiry, Date, retries) runs at least this often.
const TICK: Duration = Duration::from_millis(100);

impl ConnId for Conn {
    fn index(&self) -> u32 {
        Conn::index(*self)
    }
}

struct Tx<'g>(&'g Group);

impl Transmit<Conn> for Tx<'_> {
    fn writable(&self, conn: Conn) -> usize {
        // A dead or stale connection takes nothing; its send says why.
        self.0.writable(conn).unwrap_or(0)
    }

    fn send_vectored(&self, conn: Conn, bufs: &[IoSlice<'_>]) -> io::Result<()> {
        self.0.send_vectored(conn, bufs)
    }

    fn close(&self, conn: Conn) {
        #[allow(clippy::let_unit_value)]
        let _ = self.0.close(conn);
    }

    fn abort(&self, conn: Conn) {
        let _ = self.0.abort(conn);
    }

    fn shutdown(&self, conn: Conn) {
        let _ = self.0.shutdown(conn);
    }
}

/// Where and how to serve.
pub struct Service {
    pub agent: Option<PathBuf>,
    pub listen: SocketAddr,
    pub threads: usize,
    pub max_message: u32,
    /// Connections silent this long with nothing of ours to send are reset (0: never).
    pub idle_timeout: Duration,
}

/// Runs one group per thread until one fails; returns that error.
fn run_groups<H, F, T>(svc: &Service, framing: fn() -> Framing, make: F, tick: T) -> io::Result<()>
where
    H: Handler + 'static,
    F: Fn() -> io::Result<H> + Send + Sync + 'static,
    T: Fn(&mut H, Instant, &mut Instant) + Clone + Send + 'static,
{
    let make = Arc::new(make);
    let mut workers = Vec::new();
    for i in 0..svc.threads.max(1) {
        let (agent, listen, max_message, idle, make, tick) = (
            svc.agent.clone(),
            svc.listen,
            svc.max_message,
            svc.idle_timeout,
            make.clone(),
            tick.clone(),
        );
        let worker = thread::Builder::new().name(format!("group-{i}")).spawn(
            move || -> io::Result<()> {
                let mut group = Group::attach(agent.as_deref())?;
                group.serve(listen, framing(), max_message)?;
                let driver = Driver::new(make()?);
                serve_loop(&mut group, driver, idle, &tick)
            },
        )?;
        workers.push(worker);
    }
    for w in workers {
        w.join()
            .map_err(|_| io::Error::other("a group's thread panicked"))??;
    }
    Ok(())
}

fn serve_loop<H: Handler, T: Fn(&mut H, Instant, &mut Instant)>(
    group: &mut Group,
    mut driver: Driver<Conn, H>,
    idle: Duration,
    tick: &T,
) -> io::Result<()> {
    let start = Instant::now();
    let mut last_idle = start;
    // Busy polling before the group sleeps on its doorbell: as the drop-in library
    // (SNSTACK_SPIN_US, else the agent's --host-spin-us, 0 by default).
    let spin = group.spin_hint();
    loop {
        let now = Instant::now();
        driver.set_now(now.duration_since(start).as_millis() as u64);
        tick(driver.handler_mut(), now, &mut last_idle);
        if now.duration_since(last_idle) >= TICK {
            driver.retry_blocked();
            // (Also ends lingering closes that the peer never finished.)
            let idle_ms = if idle.is_zero() {
                u64::MAX
            } else {
                idle.as_millis() as u64
            };
            driver.expire_idle(idle_ms);
            last_idle = now;
        }
        for event in &group.poll(MAX_EVENTS, spin, Some(TICK))? {
            match event {
                Event::Opened { conn, .. } => driver.input(Input::Opened(conn)),
                Event::Message { conn, data, part } => {
                    driver.input(Input::Message { conn, data, part })
                }
                Event::Writable { conn } => driver.input(Input::Writable(conn)),
                Event::Closed { conn, .. } => driver.input(Input::Closed(conn)),
                Event::Connected { .. } => {}
            }
        }
        driver.transmit(&Tx(group));
        group.flush()?;
    }
}

/// `snstack-kv`: one store shared by all groups.
pub fn run_kv(svc: &Service) -> io::Result<()> {
    let store = Arc::new(Mutex::new(kv::Server::new()));
    let start = Instant::now();
    run_groups(
        svc,
        || Framing::RespRequest,
        move || {
            Ok(serve::Kv {
                server: store.clone(),
                now: 0,
            })
        },
        move |h: &mut serve::Kv, now, last_idle| {
            h.now = now.duration_since(start).as_millis() as kv::Millis;
            if now.duration_since(*last_idle) >= TICK {
                // About 20 sweeps a second per group over at most 200 deadlines each.
                let mut s = h.server.lock().unwrap_or_else(|p| p.into_inner());
                s.expire_some(h.now, 200);
            }
        },
    )
}

/// `snstack-http`: a server and file cache per group.
pub fn run_http(svc: &Service, root: PathBuf, cache_bytes: usize) -> io::Result<()> {
    run_groups(
        svc,
        || Framing::Http1Request,
        move || {
            Ok(serve::Http {
                server: http::Server::new(Some(&root), cache_bytes)?,
                date: date_now(),
            })
        },
        |h: &mut serve::Http, now, last_idle| {
            if now.duration_since(*last_idle) >= TICK {
                let d = date_now();
                if d != h.date {
                    h.date = d;
                }
            }
        },
    )
}

fn date_now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    http::http_date(secs)
}
