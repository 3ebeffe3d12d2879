//! Host-private state of an offloaded socket slot (the analogue of a Linux open file description:
//! shared by every fd that `dup` made of it).

use crate::optlog::OptLog;
use crate::util::SpinMutex;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};

pub(crate) struct HostSock {
    /// Number of fds referring to this slot.
    pub(crate) refs: AtomicU32,
    /// Bumped each time a new socket takes this slot: epoll interests compare it, because Linux
    /// keys a registration by (open file, fd) and drops it only when the file goes.
    pub(crate) inc: AtomicU32,
    pub(crate) nonblock: AtomicBool,
    pub(crate) domain: AtomicI32,
    /// SO_RCVTIMEO / SO_SNDTIMEO in ns, 0 = none.
    pub(crate) rcvtimeo: AtomicU64,
    pub(crate) sndtimeo: AtomicU64,
    /// Last `error_seq` reported to the application (SO_ERROR reads and clears).
    pub(crate) err_seen: AtomicU32,
    /// When this process last sent `OP_RX_CLAIM` for the slot (clock ns; rate limit for pollers).
    pub(crate) claim_ns: AtomicU64,
    /// Serialises readers (RX head) and writers (TX tail) of this socket among threads.
    pub(crate) rx: SpinMutex<()>,
    pub(crate) tx: SpinMutex<()>,
    /// `SO_OOBINLINE`: urgent bytes stay in the data (urgent.rs).
    pub(crate) oob_inline: AtomicBool,
    /// Generation of the urgent byte `recv(MSG_OOB)` took (0: none): it is not offered again.
    pub(crate) urg_taken: AtomicU32,
    /// Generation of the urgent byte whose mark this socket's reads passed (0: none).
    pub(crate) urg_passed: AtomicU32,
    /// `F_SETOWN`/`F_SETOWN_EX` as the application set it (`shm_proto::Owner::pack`), also
    /// written to the slot for the agent's `SIGURG`.
    pub(crate) owner: AtomicU64,
    /// The agent accepted `setsockopt(SOL_TLS, TLS_TX)`: it seals what is sent, `sendmsg`
    /// carries control records (`TLS_SET_RECORD_TYPE`) and `MSG_OOB` is refused, as on Linux.
    pub(crate) ktls_tx: AtomicBool,
    /// The agent accepted `setsockopt(SOL_TLS, TLS_RX)` from this process: `recvmsg` tells the
    /// type of application data too (`TLS_GET_RECORD_TYPE`). (One record type per read and the
    /// control records' type come from the agent's word, in every process: tlsrx.rs.)
    pub(crate) ktls_rx: AtomicBool,
    /// Options set before bind/connect, for a socket a rule may move to the kernel.
    pub(crate) opts: OptLog,
}

impl HostSock {
    pub(crate) fn new() -> Self {
        HostSock {
            refs: AtomicU32::new(0),
            inc: AtomicU32::new(0),
            nonblock: AtomicBool::new(false),
            domain: AtomicI32::new(0),
            rcvtimeo: AtomicU64::new(0),
            sndtimeo: AtomicU64::new(0),
            err_seen: AtomicU32::new(0),
            claim_ns: AtomicU64::new(0),
            rx: SpinMutex::new(()),
            tx: SpinMutex::new(()),
            oob_inline: AtomicBool::new(false),
            urg_taken: AtomicU32::new(0),
            urg_passed: AtomicU32::new(0),
            owner: AtomicU64::new(0),
            ktls_tx: AtomicBool::new(false),
            ktls_rx: AtomicBool::new(false),
            opts: OptLog::new(),
        }
    }
}

impl HostSock {
    /// Copies the per-description state (forked child taking over its parent's slots).
    pub(crate) fn copy_from(&self, o: &HostSock) {
        self.refs
            .store(o.refs.load(Ordering::Relaxed), Ordering::Relaxed);
        self.nonblock
            .store(o.nonblock.load(Ordering::Relaxed), Ordering::Relaxed);
        self.domain
            .store(o.domain.load(Ordering::Relaxed), Ordering::Relaxed);
        self.rcvtimeo
            .store(o.rcvtimeo.load(Ordering::Relaxed), Ordering::Relaxed);
        self.sndtimeo
            .store(o.sndtimeo.load(Ordering::Relaxed), Ordering::Relaxed);
        self.err_seen
            .store(o.err_seen.load(Ordering::Relaxed), Ordering::Relaxed);
        self.opts.copy_from(&o.opts);
        self.oob_inline
            .store(o.oob_inline.load(Ordering::Relaxed), Ordering::Relaxed);
        self.urg_taken
            .store(o.urg_taken.load(Ordering::Relaxed), Ordering::Relaxed);
        self.urg_passed
            .store(o.urg_passed.load(Ordering::Relaxed), Ordering::Relaxed);
        self.owner
            .store(o.owner.load(Ordering::Relaxed), Ordering::Relaxed);
        self.ktls_tx
            .store(o.ktls_tx.load(Ordering::Relaxed), Ordering::Relaxed);
        self.ktls_rx
            .store(o.ktls_rx.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}
