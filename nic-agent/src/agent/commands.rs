//! Commands from a process's ring: decoded requests (`session`) executed against the socket table,
//! and their completions.

use super::*;
use crate::framed::FramedRx;
use nic_agent::framing::ResponseTo;
use shm_proto::record;

impl<B: Backend> Core<B> {
    /// Posts a completion to binding `b`'s session, outside that session's own command.
    pub(super) fn complete_to(&mut self, b: Bind, tag: u64, result: i64, data: Payload<'_>) {
        if let Some(p) = self.procs.get_mut(&b.sid) {
            if let Err(v) = p.complete(tag, b.slot, result, data) {
                self.failed.push((b.sid, v));
            }
        }
    }

    /// Option buffer cell `cell` of session `sid`'s region (`CF_OPTBUF`), if both exist.
    fn opt_cell(&self, sid: u32, cell: usize) -> Option<*mut u8> {
        self.procs
            .get(&sid)
            .and_then(|p| p.chan.region().opt_cell(cell))
    }

    /// Session `sess` holds capability `bit` (root always does).
    fn has_cap(&self, sess: &Session<Binding>, bit: u32) -> bool {
        sess.uid == 0
            || self
                .backend
                .cap_eff(sess.pid)
                .map(|c| c & (1 << bit) != 0)
                .unwrap_or(false)
    }

    /// Completion of the acting session's command.
    pub(super) fn complete(
        &mut self,
        sid: u32,
        tag: u64,
        slot: u32,
        result: i64,
        data: Payload<'_>,
    ) -> Result<(), Violation> {
        match self.procs.get_mut(&sid) {
            Some(p) => p.complete(tag, slot, result, data),
            None => Ok(()),
        }
    }

    /// The socket a live slot names. decode() checked ownership, so this fails only on an agent
    /// bug, which must not panic.
    pub(super) fn sock_of(&self, b: Bind) -> Result<SockId, Violation> {
        self.procs
            .get(&b.sid)
            .and_then(|p| p.sess.table.get_any(b.slot))
            .filter(|(_, draining)| !draining)
            .map(|(bd, _)| bd.sock)
            .filter(|&id| self.socks.get(id).is_some())
            .ok_or(Violation::SlotNotOwned {
                slot: b.slot,
                op: 0,
            })
    }

    /// The socket of binding `b`, draining or not (`None`: the slot holds nothing of ours).
    fn sock_of_any(&self, b: Bind) -> Option<SockId> {
        self.procs
            .get(&b.sid)
            .and_then(|p| p.sess.table.get_any(b.slot))
            .map(|(bd, _)| bd.sock)
            .filter(|&id| self.socks.get(id).is_some())
    }

    /// New bytes in binding `b`'s TX stream (its TX-changed bit, or `OP_TX_KICK`): drain them.
    /// TX work may follow a close that another thread posted between publishing bytes and
    /// marking them: it still applies to the draining binding (whose bytes still go). A slot
    /// that holds nothing of ours (closed and released meanwhile) is ignored.
    pub(super) fn tx_changed(&mut self, b: Bind) {
        if let Some(id) = self.sock_of_any(b) {
            self.pump_tx(id, b);
        }
    }

    pub(super) fn exec(&mut self, sid: u32, cmd: Command) -> Result<(), Violation> {
        let (slot, tag) = (cmd.slot, cmd.tag);
        let b = Bind { sid, slot };
        // Requests that name no socket (or, for close, a slot that may be gone already).
        match cmd.req {
            Request::Nop => return self.complete(sid, tag, slot, 0, Payload::None),
            Request::Socket {
                domain,
                ty,
                protocol,
            } => return self.op_socket(sid, tag, slot, domain, ty, protocol),
            Request::Close => {
                self.close_binding(b);
                return self.complete(sid, tag, slot, 0, Payload::None);
            }
            Request::Fork => return self.op_fork(sid, tag, slot),
            Request::ForkChild { secret, pid } => {
                return self.op_fork_child(sid, tag, slot, secret, pid)
            }
            Request::FileOpen { fd, dev, ino } => {
                return self.op_file_open(sid, tag, slot, fd, dev, ino)
            }
            Request::FileClose { id } => {
                if let Some(p) = self.procs.get_mut(&sid) {
                    p.files.remove(&id);
                }
                return Ok(());
            }
            Request::TxKick => {
                self.tx_changed(b);
                return self.complete(sid, tag, slot, 0, Payload::None);
            }
            Request::TxUrgent { at } => {
                return match self.sock_of_any(b) {
                    Some(id) => self.op_tx_urgent(b, id, at),
                    None => Ok(()),
                };
            }
            Request::TxRecType { from, to, ty } => {
                return match self.sock_of_any(b) {
                    Some(id) => self.op_tx_rectype(b, id, crate::ktls::RecMark { from, to, ty }),
                    None => Ok(()),
                };
            }
            Request::TxFile {
                id: file,
                offset,
                len,
                at,
            } => {
                return match self.sock_of_any(b) {
                    Some(id) => self.op_tx_file(b, id, file, offset, len, at),
                    None => Ok(()),
                };
            }
            _ => {}
        }
        // The socket the slot names, looked up once and handed to the operation.
        let id = self.sock_of(b)?;
        match cmd.req {
            Request::Nop
            | Request::Socket { .. }
            | Request::Close
            | Request::Fork
            | Request::ForkChild { .. }
            | Request::FileOpen { .. }
            | Request::FileClose { .. } => Ok(()), // served above
            Request::TxFile { .. } | Request::TxUrgent { .. } | Request::TxRecType { .. } => {
                Ok(()) // served above
            }
            Request::Bind { addr } => self.op_bind(b, id, tag, addr),
            Request::Listen { backlog } => self.op_listen(b, id, tag, backlog),
            Request::Accept { wait } => self.op_accept(b, id, tag, wait),
            Request::Connect { addr, wait } => self.op_connect(b, id, tag, addr, wait),
            Request::Shutdown { how } => self.op_shutdown(b, id, tag, how),
            Request::GetSockName | Request::GetPeerName => {
                let Some(s) = self.socks.get(id) else {
                    return Ok(());
                };
                let r = if cmd.req == Request::GetPeerName {
                    self.backend.peer_addr(&s.os)
                } else {
                    self.backend.local_addr(&s.os)
                };
                match r {
                    Ok(a) => self.complete(sid, tag, slot, 0, Payload::Addr(a.into())),
                    Err(e) => self.complete(sid, tag, slot, err_of(&e), Payload::None),
                }
            }
            Request::SetSockOpt {
                level,
                name,
                len,
                val,
            } => match val {
                OptVal::Inline(val) => self.op_setsockopt(b, id, tag, level, name, &val[..len]),
                OptVal::Cell(cell) => {
                    // Copy out of shared memory first: the host may scribble on it meanwhile.
                    let mut big = [0u8; OPT_SIZE];
                    let Some(p) = self.opt_cell(sid, cell) else {
                        return Ok(());
                    };
                    // SAFETY: the cell is OPT_SIZE bytes inside the mapped region; len <= OPT_SIZE
                    // (checked by the decoder).
                    unsafe { std::ptr::copy_nonoverlapping(p, big.as_mut_ptr(), len) };
                    // The value may be a key (SOL_TLS): it does not stay in shared memory. The
                    // host reads nothing back from a set.
                    // SAFETY: as above; the cell is this request's until its completion.
                    unsafe { std::ptr::write_bytes(p, 0, len) };
                    let r = self.op_setsockopt(b, id, tag, level, name, &big[..len]);
                    crate::tls::wipe(&mut big[..len]);
                    r
                }
            },
            Request::GetSockOpt {
                level,
                name,
                len,
                cell,
            } => self.op_getsockopt(b, id, tag, level, name, len, cell),
            Request::TxKick => Ok(()), // served above
            Request::RxSpace => {
                if self.socks.get(id).is_some_and(|s| s.active == Some(b)) {
                    self.pump_rx(id);
                }
                self.complete(sid, tag, slot, 0, Payload::None)
            }
            Request::RxClaim => {
                self.rx_claim(id, b);
                Ok(())
            }
        }
    }

    /// `OP_FILE_OPEN`: the agent's own reference to the process's file, under a new id.
    fn op_file_open(
        &mut self,
        sid: u32,
        tag: u64,
        slot: u32,
        fd: i32,
        dev: u64,
        ino: u64,
    ) -> Result<(), Violation> {
        if !self.backend.file_refs() {
            return self.complete(sid, tag, slot, neg(libc::EOPNOTSUPP), Payload::None);
        }
        let Some(p) = self.procs.get(&sid) else {
            return Ok(());
        };
        if p.files.len() >= MAX_FILES {
            return self.complete(sid, tag, slot, neg(libc::EMFILE), Payload::None);
        }
        let pid = p.sess.pid;
        let file = match self.backend.host_file(pid, fd, dev, ino) {
            Ok(f) => Rc::new(f),
            Err(e) => {
                debug!(pid, fd, "file for sending by reference: {e}");
                return self.complete(sid, tag, slot, err_of(&e), Payload::None);
            }
        };
        let Some(p) = self.procs.get_mut(&sid) else {
            return Ok(());
        };
        let mut id = p.next_file;
        while p.files.contains_key(&id) {
            id = id.wrapping_add(1) & 0x7fff_ffff;
        }
        p.next_file = id.wrapping_add(1) & 0x7fff_ffff;
        p.files.insert(id, file);
        self.complete(sid, tag, slot, i64::from(id), Payload::None)
    }

    /// `OP_TX_FILE`: the reference takes its place in binding `b`'s TX byte sequence.
    fn op_tx_file(
        &mut self,
        b: Bind,
        id: SockId,
        file: u32,
        offset: u64,
        len: u64,
        at: u32,
    ) -> Result<(), Violation> {
        let Some(p) = self.procs.get_mut(&b.sid) else {
            return Ok(());
        };
        let Some(f) = p.files.get(&file).cloned() else {
            return Err(Violation::Corrupt("OP_TX_FILE names no open file"));
        };
        let max = sock::max_file_refs(p.chan.region().geometry().tx_size);
        // A draining binding too (see op_tx_urgent).
        let Some((bd, _)) = p.sess.table.get_any_mut(b.slot) else {
            return Ok(());
        };
        if bd.files.len() >= max {
            return Err(Violation::Corrupt(
                "more file references than the TX budget allows",
            ));
        }
        if let Some(last) = bd.files.back() {
            if at.wrapping_sub(last.at) > i32::MAX as u32 {
                return Err(Violation::Corrupt("file references out of order"));
            }
        }
        bd.files.push_back(sock::FileRef {
            at,
            file: f,
            offset,
            left: len,
        });
        bd.file_taken += len;
        self.pump_tx(id, b);
        Ok(())
    }

    /// `OP_TX_RECTYPE`: a range of binding `b`'s TX stream forms kTLS records of one content
    /// type. Only a socket with kTLS TX on gets them (the host posts them only then).
    fn op_tx_rectype(
        &mut self,
        b: Bind,
        id: SockId,
        m: crate::ktls::RecMark,
    ) -> Result<(), Violation> {
        let Some(k) = self
            .socks
            .get_mut(id)
            .and_then(|s| s.ktls.as_deref_mut())
            .filter(|k| k.tx_on())
        else {
            return Err(Violation::Corrupt("record-type mark without kTLS TX"));
        };
        let kb = k.bind_mut(b);
        let Some(p) = self.procs.get(&b.sid) else {
            return Ok(());
        };
        let tx_size = p.chan.region().geometry().tx_size;
        // A draining binding too (see op_tx_urgent).
        let Some((bd, _)) = p.sess.table.get_any(b.slot) else {
            return Ok(());
        };
        if m.to.wrapping_sub(m.from) > tx_size {
            return Err(Violation::Corrupt(
                "record-type mark longer than the TX stream",
            ));
        }
        if (m.from.wrapping_sub(bd.tx_head) as i32) < 0 {
            return Err(Violation::Corrupt(
                "record-type mark behind what was sealed",
            ));
        }
        if let Some(last) = kb.recs.back() {
            if (m.from.wrapping_sub(last.to) as i32) < 0 {
                return Err(Violation::Corrupt("record-type marks out of order"));
            }
        }
        if kb.recs.len() >= crate::ktls::MAX_REC_MARKS {
            return Err(Violation::Corrupt("too many record-type marks"));
        }
        kb.recs.push_back(m);
        kb.rec_taken = kb.rec_taken.wrapping_add(1);
        self.pump_tx(id, b);
        Ok(())
    }

    /// `setsockopt(IPPROTO_TCP, TCP_ULP, "tls")`: the agent is the socket's kTLS.
    fn set_ulp(&mut self, id: SockId, val: &[u8]) -> Result<(), i32> {
        let s = self.socks.get_mut(id).ok_or(libc::EBADF)?;
        if s.tls.is_some() {
            // The agent terminates this connection's TLS itself: the program's bytes are
            // plain on its side, and a second TLS layer is not offered.
            return Err(libc::EOPNOTSUPP);
        }
        if s.framed.is_some() {
            // The payload API's framing reads the connection's bytes itself: no TLS under it.
            return Err(libc::EOPNOTSUPP);
        }
        let established = s.kind == Kind::Connected && !s.io_dead;
        let k = crate::tls::Ktls::attach(val, s.ktls.is_some(), established)?;
        s.ktls = Some(Box::new(crate::ktls::KtlsSock::new(k)));
        Ok(())
    }

    /// `setsockopt(SOL_TLS, name)` on binding `b`'s socket.
    fn set_tls(&mut self, b: Bind, id: SockId, name: i32, val: &[u8]) -> Result<(), i32> {
        use crate::tls::uapi;
        if !self.socks.get(id).is_some_and(|s| s.ktls.is_some()) {
            return Err(libc::ENOPROTOOPT);
        }
        match name {
            uapi::TLS_RX => {
                let s = self.socks.get_mut(id).ok_or(libc::EBADF)?;
                let k = s.ktls.as_mut().ok_or(libc::ENOPROTOOPT)?;
                let first = !k.rx_on();
                k.opts.setsockopt(name, val)?;
                if first {
                    // Bytes received before the keys that the host has not read are records
                    // under them (Linux still has them in the socket's receive queue): take
                    // them back from the reader's stream, with what was stashed for it, and
                    // open them before anything new.
                    let mut pump = crate::ktls_rx::RxPump::new();
                    let mut unread = 0;
                    if let Some(a) = s.active {
                        if let Some(p) = self.procs.get(&a.sid) {
                            if let Some((bd, _)) = p.sess.table.get_any(a.slot) {
                                match sock::take_unread_rx(&p.chan, a.slot, bd.rx_tail) {
                                    Ok(v) => {
                                        unread = v.len();
                                        pump.feed(&v);
                                    }
                                    Err(v) => self.failed.push((a.sid, v)),
                                }
                            }
                        }
                    }
                    pump.feed(&s.stash);
                    let stashed = std::mem::take(&mut s.stash).len();
                    if s.rx_done {
                        // The peer's end came before the keys: it is the end once the records
                        // before it are opened (the pump reports it again).
                        pump.eof = true;
                        s.flags &= !SF_RX_FIN;
                    }
                    // Urgent data means nothing inside TLS: marks of the plain stream go.
                    s.urg = None;
                    s.urg_event = false;
                    let k = s.ktls.as_mut().ok_or(libc::ENOPROTOOPT)?;
                    k.rx = Some(Box::new(pump));
                    if let Some(o) = k.opts.opener() {
                        let info = o.crypto_info();
                        debug!(
                            slot = b.slot,
                            version = ?info.version(),
                            cipher = ?info.cipher(),
                            unread,
                            stashed,
                            "kTLS RX on"
                        );
                    }
                }
                // (A rekey after a KeyUpdate lets the records waiting flow again.)
                self.pump_rx(id);
                self.publish(id);
                Ok(())
            }
            uapi::TLS_TX
                if !self
                    .socks
                    .get(id)
                    .is_some_and(|s| s.ktls.as_ref().is_some_and(|k| k.tx_on())) =>
            {
                // What the program wrote before the keys goes out as it is: hand the loan
                // back, send what the backend takes now, and remember where the rest ends.
                self.end_loan(id);
                self.pump_tx(id, b);
                let p = self.procs.get_mut(&b.sid).ok_or(libc::EBADF)?;
                let (Some(tx), Some(ctl)) =
                    (p.chan.region().tx(b.slot), p.chan.region().sock(b.slot))
                else {
                    return Err(libc::EBADF);
                };
                let (bd, _) = p.sess.table.get_any_mut(b.slot).ok_or(libc::EBADF)?;
                let tail = tx.load_tail();
                let files_waiting = !bd.files.is_empty()
                    || ctl.host.0.tx_file_posted.load(Ordering::Acquire) != bd.file_taken;
                if files_waiting {
                    // Plain file bytes still queued before the keys: not sorted out here
                    // (OpenSSL writes none during a handshake); the program keeps TLS.
                    debug!(slot = b.slot, "TLS_TX with file references queued: EBUSY");
                    return Err(libc::EBUSY);
                }
                let plain = (tail != bd.tx_head).then_some(tail);
                let s = self.socks.get_mut(id).ok_or(libc::EBADF)?;
                let k = s.ktls.as_mut().ok_or(libc::ENOPROTOOPT)?;
                k.opts.setsockopt(name, val)?;
                k.bind_mut(b).plain = plain;
                if let Some(sealer) = k.opts.sealer() {
                    let info = sealer.crypto_info();
                    debug!(
                        slot = b.slot,
                        version = ?info.version(),
                        cipher = ?info.cipher(),
                        unsent_plain = plain.map_or(0, |t| t.wrapping_sub(bd.tx_head)),
                        "kTLS TX on"
                    );
                }
                Ok(())
            }
            _ => {
                let s = self.socks.get_mut(id).ok_or(libc::EBADF)?;
                let k = s.ktls.as_mut().ok_or(libc::ENOPROTOOPT)?;
                k.opts.setsockopt(name, val)
            }
        }
    }

    /// `OP_TX_URG`: the byte before `at` in binding `b`'s TX stream is urgent.
    fn op_tx_urgent(&mut self, b: Bind, id: SockId, at: u32) -> Result<(), Violation> {
        let Some(p) = self.procs.get_mut(&b.sid) else {
            return Ok(());
        };
        let tx_size = p.chan.region().geometry().tx_size;
        // A draining binding too: a close posted by another thread may have overtaken the
        // mark, and its bytes still go (the posted count would otherwise hold the drain).
        let Some((bd, _)) = p.sess.table.get_any_mut(b.slot) else {
            return Ok(());
        };
        // The urgent byte (before `at`) must not have been handed over yet (a loan's bytes
        // included: pump_lent stops at a posted mark).
        let sent = bd.tx_sent();
        let last = bd.urgent.last().copied().unwrap_or(sent);
        if at.wrapping_sub(last) > i32::MAX as u32
            || at == sent
            || at.wrapping_sub(bd.tx_head) > tx_size
        {
            return Err(Violation::Corrupt("urgent mark out of order"));
        }
        if bd.urgent.len() >= sock::MAX_URGENT_MARKS {
            // A later urgent pointer supersedes an earlier one not sent yet, as Linux's snd_up
            // moves on: the oldest becomes an ordinary byte.
            bd.urgent.remove(0);
        }
        bd.urgent.push(at);
        bd.urg_taken = bd.urg_taken.wrapping_add(1);
        self.pump_tx(id, b);
        Ok(())
    }

    pub(super) fn op_socket(
        &mut self,
        sid: u32,
        tag: u64,
        slot: u32,
        domain: i32,
        ty: i32,
        protocol: i32,
    ) -> Result<(), Violation> {
        if let Err(e) = session::check_socket(domain, ty, protocol) {
            return self.complete(sid, tag, slot, neg(e), Payload::None);
        }
        if !self
            .procs
            .get(&sid)
            .is_some_and(|p| p.sess.table.has_free())
        {
            return self.complete(sid, tag, slot, neg(libc::EMFILE), Payload::None);
        }
        let os = match self.backend.socket(domain) {
            Ok(os) => os,
            Err(e) => return self.complete(sid, tag, slot, err_of(&e), Payload::None),
        };
        let id = self.socks.insert(Sock::new(os, domain));
        let new = match self
            .procs
            .get_mut(&sid)
            .map(|p| p.sess.table.alloc(Binding::new(id)))
        {
            Some(Ok(n)) => n,
            _ => {
                if let Some(s) = self.socks.remove(id) {
                    self.close_os(s);
                }
                return self.complete(sid, tag, slot, neg(libc::EMFILE), Payload::None);
            }
        };
        if let Some(p) = self.procs.get(&sid) {
            p.chan.reset_slot(new);
        }
        let b = Bind { sid, slot: new };
        if let Some(s) = self.socks.get_mut(id) {
            s.bindings.push(b);
            s.active = Some(b);
        }
        self.publish(id);
        self.complete(sid, tag, slot, i64::from(new), Payload::None)
    }

    pub(super) fn op_bind(
        &mut self,
        b: Bind,
        id: SockId,
        tag: u64,
        a: Addr,
    ) -> Result<(), Violation> {
        let (sid, slot) = (b.sid, b.slot);
        let Some((pid, uid)) = self.procs.get(&sid).map(|p| (p.sess.pid, p.sess.uid)) else {
            return Ok(());
        };
        let Some(domain) = self.socks.get(id).map(|s| s.domain) else {
            return Ok(());
        };
        let addr = match session::check_family(domain, &a) {
            Ok(a) => a,
            Err(e) => return self.complete(sid, tag, slot, neg(e), Payload::None),
        };
        let port = addr.port();
        let start = if port != 0 {
            self.backend.unprivileged_port_start()
        } else {
            0
        };
        let caps = || self.backend.cap_eff(pid).ok();
        let check = session::bind_allowed(port, start, uid, caps)
            .and_then(|_| self.reuseport.check(port, uid));
        if let Err(e) = check {
            debug!(pid, port, errno = e, "bind refused");
            return self.complete(sid, tag, slot, neg(e), Payload::None);
        }
        let Some(s) = self.socks.get_mut(id) else {
            return Ok(());
        };
        if let Err(e) = self.backend.bind(&s.os, &addr) {
            return self.complete(sid, tag, slot, err_of(&e), Payload::None);
        }
        if s.reuseport && s.reuse_port_bound.is_none() {
            if let Ok(local) = self.backend.local_addr(&s.os) {
                self.reuseport.add(local.port(), uid);
                s.reuse_port_bound = Some(local.port());
            }
        }
        self.complete(sid, tag, slot, 0, Payload::None)
    }

    pub(super) fn op_listen(
        &mut self,
        b: Bind,
        id: SockId,
        tag: u64,
        backlog: i32,
    ) -> Result<(), Violation> {
        let (sid, slot) = (b.sid, b.slot);
        let Some(s) = self.socks.get_mut(id) else {
            return Ok(());
        };
        // A port the agent terminates TLS on (`--tls-port`): its connections get a session.
        let mut tls = None;
        if !self.tls_ports.is_empty() {
            let port = self
                .backend
                .local_addr(&s.os)
                .map(|a| a.port())
                .unwrap_or(0);
            tls = self.tls_ports.get(&port).cloned();
            if tls.is_some() && s.framed.is_some() {
                // The payload API's framing runs on plain bytes; not yet behind termination.
                warn!(
                    session = sid,
                    port, "a framed service on a TLS-terminated port: refused"
                );
                return self.complete(sid, tag, slot, neg(libc::EOPNOTSUPP), Payload::None);
            }
        }
        if let Err(e) = self.backend.listen(&s.os, backlog) {
            return self.complete(sid, tag, slot, err_of(&e), Payload::None);
        }
        let cap = session::queue_cap(backlog);
        match s.listener.as_mut() {
            Some(l) => l.cap = cap,
            None => {
                s.listener = Some(Listener {
                    queue: Default::default(),
                    takers: Vec::new(),
                    next_taker: 0,
                    cap,
                    parked: Default::default(),
                    kernel_pending: true,
                    tls: None,
                    seq: 0,
                })
            }
        }
        if let Some(l) = s.listener.as_mut() {
            l.tls = tls;
        }
        s.kind = Kind::Listening;
        if !s.registered {
            if let Err(e) = self.backend.register(&s.os, id.token()) {
                warn!(session = sid, "listen: registering the socket: {e}");
                return self.complete(sid, tag, slot, err_of(&e), Payload::None);
            }
            s.registered = true;
        }
        s.set_flags(SF_LISTENING, 0);
        Self::publish_to(s, &mut self.procs);
        self.complete(sid, tag, slot, 0, Payload::None)?;
        self.fill_accept_queue(id, true);
        Ok(())
    }

    pub(super) fn op_accept(
        &mut self,
        b: Bind,
        id: SockId,
        tag: u64,
        wait: bool,
    ) -> Result<(), Violation> {
        let (sid, slot) = (b.sid, b.slot);
        let Some(s) = self.socks.get_mut(id) else {
            return Ok(());
        };
        let Some(l) = s.listener.as_mut().filter(|_| s.kind == Kind::Listening) else {
            return self.complete(sid, tag, slot, neg(libc::EINVAL), Payload::None);
        };
        let empty = l.queue.is_empty();
        self.add_taker(id, b);
        let Some(l) = self.socks.get_mut(id).and_then(|s| s.listener.as_mut()) else {
            return Ok(());
        };
        if empty {
            // A parked accept without a tag could never deliver its slot: treat as non-blocking.
            if wait && tag != 0 {
                l.parked.push_back(Parked { by: b, tag });
                return Ok(());
            }
            return self.complete(sid, tag, slot, neg(libc::EAGAIN), Payload::None);
        }
        self.accept_one(id, b, tag);
        self.fill_accept_queue(id, true);
        Ok(())
    }

    pub(super) fn op_connect(
        &mut self,
        b: Bind,
        id: SockId,
        tag: u64,
        a: Addr,
        wait: bool,
    ) -> Result<(), Violation> {
        let (sid, slot) = (b.sid, b.slot);
        let Some(s) = self.socks.get_mut(id) else {
            return Ok(());
        };
        let addr = match session::check_family(s.domain, &a) {
            Ok(a) => a,
            Err(e) => return self.complete(sid, tag, slot, neg(e), Payload::None),
        };
        let r = self.backend.connect(&s.os, &addr);
        let in_progress = matches!(&r, Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS));
        if r.is_ok() || in_progress {
            Self::count_conn(&mut self.procs, sid, |c| c.active_opens += 1);
        }
        if let Err(e) = &r {
            if !in_progress {
                Self::count_error(&mut self.procs, Some(b), sys::errno_of(e));
                return self.complete(sid, tag, slot, err_of(e), Payload::None);
            }
        }
        if !s.registered {
            if let Err(e) = self.backend.register(&s.os, id.token()) {
                warn!(session = sid, "connect: registering the socket: {e}");
                return self.complete(sid, tag, slot, err_of(&e), Payload::None);
            }
            s.registered = true;
        }
        if in_progress {
            s.kind = Kind::Connecting;
            s.set_flags(SF_CONNECTING, 0);
            let park = wait && tag != 0;
            if park {
                s.connect_tag = Some(Parked { by: b, tag });
            }
            Self::publish_to(s, &mut self.procs);
            if park {
                return Ok(());
            }
            return self.complete(sid, tag, slot, neg(libc::EINPROGRESS), Payload::None);
        }
        s.kind = Kind::Connected;
        s.set_flags(SF_CONNECTED, 0);
        Self::publish_to(s, &mut self.procs);
        self.complete(sid, tag, slot, 0, Payload::None)?;
        self.pump_rx(id);
        self.pump_tx(id, b);
        Ok(())
    }

    pub(super) fn op_shutdown(
        &mut self,
        b: Bind,
        id: SockId,
        tag: u64,
        how: i32,
    ) -> Result<(), Violation> {
        let (sid, slot) = (b.sid, b.slot);
        if !(0..=2).contains(&how) {
            return self.complete(sid, tag, slot, neg(libc::EINVAL), Payload::None);
        }
        let rd = how == libc::SHUT_RD || how == libc::SHUT_RDWR;
        let wr = how == libc::SHUT_WR || how == libc::SHUT_RDWR;
        if rd {
            // A listener stops: what it handed and nobody accepted closes with its queue.
            let takers: Vec<Bind> = self
                .socks
                .get(id)
                .filter(|s| s.kind == Kind::Listening)
                .and_then(|s| s.listener.as_ref())
                .map(|l| l.takers.iter().map(|t| t.by).collect())
                .unwrap_or_default();
            for t in takers {
                self.withdraw_handoffs(id, t, false, false);
            }
        }
        let Some(s) = self.socks.get_mut(id) else {
            return Ok(());
        };
        if s.kind == Kind::Connected && !s.io_dead {
            if rd {
                s.set_flags(SF_RX_SHUT, 0);
                if let Err(e) = self.backend.shutdown(&s.os, libc::SHUT_RD) {
                    debug!(slot, "shutdown(SHUT_RD): {e}");
                }
            }
            if wr {
                s.set_flags(SF_TX_SHUT, 0);
                s.shut_wr_pending = true;
            }
            self.publish(id);
            if wr && self.pump_tx(id, b) {
                self.shut_wr_if_drained(id);
            }
            return self.complete(sid, tag, slot, 0, Payload::None);
        }
        if let Err(e) = self.backend.shutdown(&s.os, how) {
            return self.complete(sid, tag, slot, err_of(&e), Payload::None);
        }
        // A listener shut for reading stops listening (every binding's parked accept ends); a
        // connect in progress is abandoned.
        let mut parked = Vec::new();
        let mut closed = Vec::new();
        if s.kind == Kind::Listening && rd {
            if let Some(l) = s.listener.take() {
                parked.extend(l.parked);
                closed.extend(l.queue);
            }
            s.kind = Kind::Fresh;
            s.set_flags(0, SF_LISTENING);
        } else if s.kind == Kind::Connecting {
            s.kind = Kind::Fresh;
            parked.extend(s.connect_tag.take());
            s.set_flags(0, SF_CONNECTING);
        }
        for w in closed {
            self.discard_waiting(w);
        }
        self.publish(id);
        for p in parked {
            self.complete_to(p.by, p.tag, neg(libc::EINVAL), Payload::None);
        }
        self.complete(sid, tag, slot, 0, Payload::None)
    }

    pub(super) fn op_setsockopt(
        &mut self,
        b: Bind,
        id: SockId,
        tag: u64,
        level: i32,
        name: i32,
        val: &[u8],
    ) -> Result<(), Violation> {
        let (sid, slot) = (b.sid, b.slot);
        if level == record::SOL_SNSTACK {
            let r = self.set_framing(sid, id, name, val);
            return self.complete(sid, tag, slot, r.map_or_else(neg, |()| 0), Payload::None);
        }
        if level == crate::tls::uapi::SOL_TLS
            || (level == libc::IPPROTO_TCP
                && name == crate::tls::uapi::TCP_ULP
                && val.starts_with(b"tls")
                && val.get(3).map_or(true, |&c| c == 0))
        {
            // kTLS is the agent's (ktls.rs); the backend's socket never sees the ULP or keys.
            let r = if level == libc::IPPROTO_TCP {
                self.set_ulp(id, val)
            } else {
                self.set_tls(b, id, name, val)
            };
            if let Err(e) = r {
                debug!(
                    session = sid,
                    slot,
                    level,
                    name,
                    errno = e,
                    "kTLS option refused"
                );
            }
            return self.complete(sid, tag, slot, r.map_or_else(neg, |()| 0), Payload::None);
        }
        let net_admin = || {
            self.procs
                .get(&sid)
                .is_some_and(|p| self.has_cap(&p.sess, session::CAP_NET_ADMIN))
        };
        let allowed = match session::sockopt_policy(level, name, true, val) {
            OptPolicy::Pass => Ok(()),
            OptPolicy::Deny(e) => Err(e),
            OptPolicy::NeedNetAdmin => {
                if net_admin() {
                    Ok(())
                } else {
                    Err(libc::EPERM)
                }
            }
            OptPolicy::Congestion => {
                // Linux looks the name up first (ENOENT from the backend for an unknown one),
                // then checks the unprivileged allow-list.
                if net_admin()
                    || session::congestion_allowed(val, &self.backend.allowed_congestion_controls())
                    || !session::congestion_allowed(
                        val,
                        &self.backend.available_congestion_controls(),
                    )
                {
                    Ok(())
                } else {
                    Err(libc::EPERM)
                }
            }
        };
        if let Err(e) = allowed {
            debug!(session = sid, level, name, errno = e, "setsockopt refused");
            return self.complete(sid, tag, slot, neg(e), Payload::None);
        }
        let Some(s) = self.socks.get_mut(id) else {
            return Ok(());
        };
        let int = |v: &[u8], at: usize| {
            v.get(at..at + 4)
                .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        };
        let r = if level == libc::SOL_SOCKET && name == libc::SO_LINGER && val.len() >= 8 {
            // A lingering close() blocks even on a non-blocking socket, which would stall every
            // process served by the agent: keep the timeout here, drain in the background.
            let (on, secs) = (int(val, 0).unwrap_or(0), int(val, 4).unwrap_or(0));
            if on != 0 && secs > 0 {
                let off = [0u8; 8];
                let r = self.backend.setsockopt(&s.os, level, name, &off);
                if r.is_ok() {
                    let mut keep = [0u8; 8];
                    keep.copy_from_slice(&val[..8]);
                    s.linger = Some(keep);
                }
                r
            } else {
                let r = self.backend.setsockopt(&s.os, level, name, val);
                if r.is_ok() {
                    s.linger = None;
                }
                r
            }
        } else {
            let r = self.backend.setsockopt(&s.os, level, name, val);
            if r.is_ok() && level == libc::SOL_SOCKET && name == libc::SO_REUSEPORT {
                s.reuseport = int(val, 0).unwrap_or(0) != 0;
            }
            r
        };
        match r {
            Ok(()) => self.complete(sid, tag, slot, 0, Payload::None),
            Err(e) => self.complete(sid, tag, slot, err_of(&e), Payload::None),
        }
    }

    #[allow(clippy::too_many_arguments)] // the request's four fields, unpacked
    pub(super) fn op_getsockopt(
        &mut self,
        b: Bind,
        id: SockId,
        tag: u64,
        level: i32,
        name: i32,
        len: usize,
        cell: Option<usize>,
    ) -> Result<(), Violation> {
        let (sid, slot) = (b.sid, b.slot);
        if level == record::SOL_SNSTACK {
            let spec = match (name, self.socks.get(id).and_then(|s| s.framed.as_ref())) {
                (record::SNSTACK_FRAMING, Some(f)) => f.spec.encode(),
                (record::SNSTACK_FRAMING, None) => {
                    return self.complete(sid, tag, slot, neg(libc::ENODATA), Payload::None)
                }
                _ => return self.complete(sid, tag, slot, neg(libc::ENOPROTOOPT), Payload::None),
            };
            let n = len.min(spec.len());
            if let Some(cell) = cell {
                let Some(p) = self.opt_cell(sid, cell) else {
                    return Ok(());
                };
                // SAFETY: the cell is OPT_SIZE bytes inside the mapped region; n <= 8.
                unsafe { std::ptr::copy_nonoverlapping(spec.as_ptr(), p, n) };
                return self.complete(sid, tag, slot, n as i64, Payload::None);
            }
            return self.complete(sid, tag, slot, n as i64, Payload::Value(&spec[..n]));
        }
        let net_admin = || {
            self.procs
                .get(&sid)
                .is_some_and(|p| self.has_cap(&p.sess, session::CAP_NET_ADMIN))
        };
        match session::sockopt_policy(level, name, false, &[]) {
            OptPolicy::Deny(e) => return self.complete(sid, tag, slot, neg(e), Payload::None),
            OptPolicy::NeedNetAdmin if !net_admin() => {
                return self.complete(sid, tag, slot, neg(libc::EPERM), Payload::None);
            }
            _ => {}
        }
        let Some(s) = self.socks.get(id) else {
            return Ok(());
        };
        let mut buf = [0u8; OPT_SIZE];
        let ulp = level == libc::IPPROTO_TCP && name == crate::tls::uapi::TCP_ULP;
        let got = if level == crate::tls::uapi::SOL_TLS {
            match s.ktls.as_ref() {
                Some(k) => k
                    .opts
                    .getsockopt(name, &mut buf[..len])
                    .map_err(io::Error::from_raw_os_error),
                None => Err(io::Error::from_raw_os_error(libc::ENOPROTOOPT)),
            }
        } else if let (true, Some(_)) = (ulp, s.ktls.as_ref()) {
            Ok(crate::tls::Ktls::ulp_name(&mut buf[..len]))
        } else if let (libc::SOL_SOCKET, libc::SO_LINGER, Some(l)) = (level, name, s.linger) {
            let n = len.min(l.len());
            buf[..n].copy_from_slice(&l[..n]);
            Ok(n)
        } else {
            self.backend.getsockopt(&s.os, level, name, &mut buf[..len])
        };
        match got {
            Ok(n) => match cell {
                None => self.complete(sid, tag, slot, n as i64, Payload::Value(&buf[..n])),
                Some(cell) => {
                    let Some(p) = self.opt_cell(sid, cell) else {
                        return Ok(());
                    };
                    let n = n.min(OPT_SIZE);
                    // SAFETY: the cell is OPT_SIZE bytes inside the mapped region.
                    unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), p, n) };
                    // (A SOL_TLS value holds the key: the host zeroes the cell after copying.)
                    crate::tls::wipe(&mut buf[..n]);
                    self.complete(sid, tag, slot, n as i64, Payload::None)
                }
            },
            Err(e) => self.complete(sid, tag, slot, err_of(&e), Payload::None),
        }
    }

    /// `setsockopt(SOL_SNSTACK, name)`: the payload API's options, which only the agent
    /// interprets. `SNSTACK_FRAMING` declares how the connection's bytes (a listener's: its
    /// connections') divide into messages; allowed only before `listen` or `connect`, once.
    fn set_framing(&mut self, sid: u32, id: SockId, name: i32, val: &[u8]) -> Result<(), i32> {
        if name == record::SNSTACK_EXPECT_RESPONSE {
            // An HTTP client's next request (in sending order) was a HEAD or a CONNECT: its
            // response is framed accordingly (RFC 9112 6.3: no body, or the end of HTTP).
            let to = match val {
                [record::EXPECT_OTHER] => ResponseTo::Other,
                [record::EXPECT_HEAD] => ResponseTo::Head,
                [record::EXPECT_CONNECT] => ResponseTo::Connect,
                _ => return Err(libc::EINVAL),
            };
            let f = self
                .socks
                .get_mut(id)
                .ok_or(libc::EBADF)?
                .framed
                .as_mut()
                .ok_or(libc::EINVAL)?;
            if f.spec.kind != record::FRAMING_HTTP1_RESPONSE {
                return Err(libc::EINVAL);
            }
            return if f.expect_response(to) {
                Ok(())
            } else {
                Err(libc::ENOBUFS)
            };
        }
        if name != record::SNSTACK_FRAMING {
            return Err(libc::ENOPROTOOPT);
        }
        let spec = record::FramingSpec::decode(val).ok_or(libc::EINVAL)?;
        let rx_size = self
            .procs
            .get(&sid)
            .map_or(0, |p| p.chan.region().geometry().rx_size);
        let s = self.socks.get_mut(id).ok_or(libc::EBADF)?;
        match s.kind {
            Kind::Fresh if s.framed.is_none() => {}
            Kind::Fresh => return Err(libc::EALREADY),
            Kind::Connected | Kind::Connecting => return Err(libc::EISCONN),
            Kind::Listening => return Err(libc::EINVAL),
        }
        s.framed = Some(Box::new(FramedRx::new(spec, rx_size)));
        Ok(())
    }
}
