#!/usr/bin/env python3
"""Differential TCP-on-the-wire probe (tests/integration/49-user-stack-diff.sh).

    wire.py server DIR IP_A IP_B PORT_BASE   in namespace A: kernel sockets with IP_A on the
                                             veth, or preloaded through the agent's engine that
                                             owns IP_A; this code is the same in both setups
    wire.py client DIR IP_A IP_B PORT_BASE   in namespace B: always plain kernel sockets

Both roles walk the same scenario list in lock step, synchronised through files in DIR (both
namespaces share the filesystem, so no synchronisation traffic crosses the stack under test).
Each scenario has an A part (the "server" role; in the out_* scenarios A is the connecting side)
and a B part. B prints its observations and then A's (A writes them to DIR), one line each,
prefixed by the scenario's name: byte counts, sha256 prefixes, errnos by name, EOF vs
ECONNRESET, socket option values. No ports, addresses or timings, so the output of a correct
stack does not depend on the run, on the stack in namespace A, or on packet loss.

Every blocking call is bounded by a socket timeout (a lost peer prints `timeout`, never hangs).
The client role needs `nft` (the keepalive scenario blackholes its own connection in B).
"""
import errno, hashlib, os, random, select, socket, struct, subprocess, sys, threading, time

TMO = 20.0  # every socket operation
SYNC_TMO = 60.0  # waiting for the other role at a sync point
RUN = {}  # dir, ip_a, ip_b, base, role


def en(e):
    # socket.timeout is TimeoutError, which an OSError with errno ETIMEDOUT also is: the errno
    # decides (a socket timeout of Python's own has none).
    if isinstance(e, OSError) and e.errno is not None:
        return errno.errorcode.get(e.errno, str(e.errno))
    if isinstance(e, socket.timeout):
        return "timeout"
    return type(e).__name__


class Lines:
    def __init__(self):
        self.l = []

    def __call__(self, *a):
        self.l.append(" ".join(str(x) for x in a))

    def tryit(self, label, f):
        try:
            r = f()
            self(label, "ok", r if r is not None else "")
        except (OSError, socket.timeout) as e:
            self(label, "err", en(e))


def data(n, seed):
    return random.Random(seed).randbytes(n)


def digest(b):
    return hashlib.sha256(b).hexdigest()[:16]


def sock(timeout=TMO):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    return s


def listen(port, backlog=16):
    s = sock()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((RUN["ip_a"] if RUN["role"] == "server" else RUN["ip_b"], port))
    s.listen(backlog)
    return s


def accept(l, timeout=TMO):
    l.settimeout(timeout)
    c, _ = l.accept()
    c.settimeout(TMO)
    return c


def connect(port, timeout=TMO):
    ip = RUN["ip_b"] if RUN["role"] == "server" else RUN["ip_a"]
    s = sock(timeout)
    s.connect((ip, port))
    s.settimeout(TMO)
    return s


def recv_all(s, limit=1 << 30):
    """Reads until EOF; returns (bytes, how it ended: 'eof' or an errno name)."""
    buf = bytearray()
    try:
        while len(buf) < limit:
            b = s.recv(262144)
            if not b:
                return bytes(buf), "eof"
            buf += b
        return bytes(buf), "limit"
    except (OSError, socket.timeout) as e:
        return bytes(buf), en(e)


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        b = s.recv(n - len(buf))
        if not b:
            raise EOFError("eof after %d of %d" % (len(buf), n))
        buf += b
    return bytes(buf)


def send(s, b):
    s.sendall(b)


# ---- synchronisation through files in DIR -------------------------------------------------


def mark(tag, text=""):
    path = os.path.join(RUN["dir"], tag)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


def wait_mark(tag, timeout=SYNC_TMO):
    path = os.path.join(RUN["dir"], tag)
    end = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise TimeoutError("no %s from the other role within %ds" % (tag, timeout))
        time.sleep(0.005)
    with open(path) as f:
        return f.read()


class Ctx:
    """One scenario's view for one role: its port, its output lines, sync helpers."""

    def __init__(self, idx, name, p):
        self.idx, self.name, self.p = idx, name, p
        self.port = RUN["base"] + idx
        self.tryit = p.tryit

    def sig(self, what, text=""):
        mark("%02d.%s.%s" % (self.idx, RUN["role"], what), text)

    def wait(self, what, timeout=SYNC_TMO):
        other = "client" if RUN["role"] == "server" else "server"
        return wait_mark("%02d.%s.%s" % (self.idx, other, what), timeout)


# ---- scenarios: (name, A part, B part) ----------------------------------------------------


def echo_server(c, p):
    n = 0
    h = hashlib.sha256()
    try:
        while True:
            b = c.recv(262144)
            if not b:
                break
            n += len(b)
            h.update(b)
            c.sendall(b)
        how = "eof"
    except (OSError, socket.timeout) as e:
        how = en(e)
    p("echoed", n, h.hexdigest()[:16], how)


def echo_client(s, n, seed, p):
    payload = data(n, seed)
    res = {}

    def sender():
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            res["send"] = "ok"
        except (OSError, socket.timeout) as e:
            res["send"] = en(e)

    t = threading.Thread(target=sender)
    t.start()
    got, how = recv_all(s)
    t.join(TMO)
    p("sent", n, res.get("send", "hung"), "got", len(got), digest(got), "intact", got == payload, how)


def echo_pair(n, seed):
    def a(c):
        l = listen(c.port)
        c.sig("ready")
        s = accept(l)
        l.close()
        echo_server(s, c.p)
        s.close()

    def b(c):
        c.wait("ready")
        s = connect(c.port)
        echo_client(s, n, seed, c.p)
        s.close()

    return a, b


def out_echo_pair(n, seed):
    # The outgoing direction: A connects through its stack to a kernel echo server in B.
    def a(c):
        c.wait("ready")
        s = connect(c.port)
        echo_client(s, n, seed, c.p)
        s.close()

    def b(c):
        l = listen(c.port)
        c.sig("ready")
        s = accept(l)
        l.close()
        echo_server(s, c.p)
        s.close()

    return a, b


def sockopts_a(c):
    l = listen(c.port)
    c.sig("ready")
    s = accept(l)
    G = lambda lvl, opt: s.getsockopt(lvl, opt)
    rep = [
        ("listener-acceptconn", l.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)),
        ("type", G(socket.SOL_SOCKET, socket.SO_TYPE)),
        ("acceptconn", G(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)),
        ("error", G(socket.SOL_SOCKET, socket.SO_ERROR)),
        ("reuseaddr-inherited", int(bool(G(socket.SOL_SOCKET, socket.SO_REUSEADDR)))),
        ("keepalive", G(socket.SOL_SOCKET, socket.SO_KEEPALIVE)),
        ("nodelay", G(socket.IPPROTO_TCP, socket.TCP_NODELAY)),
        ("linger", struct.unpack("ii", s.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8))),
        ("sockname-is-ours", s.getsockname()[0] == RUN["ip_a"]),
        ("sockname-port", s.getsockname()[1] == c.port),
        ("peername-is-b", s.getpeername()[0] == RUN["ip_b"]),
    ]
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rep.append(("nodelay-after-set", G(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    rep.append(("keepalive-after-set", G(socket.SOL_SOCKET, socket.SO_KEEPALIVE)))
    l.close()
    msg = "".join("%s=%s\n" % kv for kv in rep).encode()
    s.sendall(struct.pack("!I", len(msg)) + msg)
    got, how = recv_all(s)
    c.p("after-report", len(got), how)
    s.close()


def sockopts_b(c):
    c.wait("ready")
    s = connect(c.port)
    n = struct.unpack("!I", recv_exact(s, 4))[0]
    for line in recv_exact(s, n).decode().splitlines():
        c.p("server-reports", line)
    s.shutdown(socket.SHUT_WR)
    got, how = recv_all(s)
    c.p("then", len(got), how)
    s.close()


def sizes_a(c):
    # Values that are the stack's own defaults: MSS on an established connection (MTU 1500 with
    # timestamps: 1448), buffer sizes before any data (tcp_rmem[1], tcp_wmem[1]).
    l = listen(c.port)
    c.sig("ready")
    s = accept(l)
    l.close()
    c.tryit("maxseg", lambda: s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG))
    c.tryit("rcvbuf", lambda: s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    c.tryit("sndbuf", lambda: s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    c.tryit("rcvbuf-after-set-64k", lambda: s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    s.close()


def sizes_b(c):
    c.wait("ready")
    s = connect(c.port)
    got, how = recv_all(s)
    c.p("read", len(got), how)
    s.close()


def srv_shutwr_a(c):
    l = listen(c.port)
    c.sig("ready")
    s = accept(l)
    l.close()
    s.sendall(data(1000, 11))
    s.shutdown(socket.SHUT_WR)
    got, how = recv_all(s)
    c.p("read", len(got), digest(got), "intact", got == data(262144, 12), how)
    c.tryit("send-after-shutwr", lambda: s.send(b"x", socket.MSG_NOSIGNAL))
    c.tryit("recv-after-eof", lambda: s.recv(10))
    s.close()


def srv_shutwr_b(c):
    c.wait("ready")
    s = connect(c.port)
    got, how = recv_all(s)
    c.p("read", len(got), "intact", got == data(1000, 11), how)
    c.tryit("recv-again", lambda: s.recv(10))
    c.tryit("send-256k", lambda: s.sendall(data(262144, 12)))
    s.shutdown(socket.SHUT_WR)
    c.tryit("recv-after-own-shutwr", lambda: s.recv(10))
    c.wait("done")
    s.close()


def cli_shutwr_a(c):
    l = listen(c.port)
    c.sig("ready")
    s = accept(l)
    l.close()
    got, how = recv_all(s)
    c.p("read", len(got), "intact", got == data(102400, 21), how)
    c.tryit("recv-after-eof", lambda: s.recv(10))
    c.tryit("send-200k", lambda: s.sendall(data(204800, 22)))
    s.close()


def cli_shutwr_b(c):
    c.wait("ready")
    s = connect(c.port)
    s.sendall(data(102400, 21))
    s.shutdown(socket.SHUT_WR)
    c.tryit("send-after-own-shutwr", lambda: s.send(b"x", socket.MSG_NOSIGNAL))
    got, how = recv_all(s)
    c.p("read", len(got), digest(got), "intact", got == data(204800, 22), how)
    s.close()


def unread_rst_a(c):
    l = listen(c.port)
    c.sig("ready")
    s = accept(l)
    l.close()
    po = select.poll()
    po.register(s, select.POLLIN)
    c.p("readable", bool(po.poll(TMO * 1000)))
    c.tryit("recv-10", lambda: len(recv_exact(s, 10)))
    c.wait("sent")
    s.close()  # unread data (990 bytes, or what is still in flight): RST, no FIN


def unread_rst_b(c):
    c.wait("ready")
    s = connect(c.port)
    s.sendall(data(1000, 31))
    c.sig("sent")
    c.tryit("recv", lambda: s.recv(100))
    c.tryit("send", lambda: s.send(b"x", socket.MSG_NOSIGNAL))
    c.tryit("recv-again", lambda: s.recv(100))
    c.tryit("soerror", lambda: s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
    s.close()


def linger_rst_a(c):
    l = listen(c.port)
    c.sig("ready")
    s = accept(l)
    l.close()
    c.tryit("recv-1000", lambda: digest(recv_exact(s, 1000)))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.p("linger", struct.unpack("ii", s.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8)))
    c.wait("sent")
    s.close()


def linger_rst_b(c):
    c.wait("ready")
    s = connect(c.port)
    s.sendall(data(1000, 41))
    c.sig("sent")
    c.tryit("recv", lambda: s.recv(100))
    c.tryit("send", lambda: s.send(b"x", socket.MSG_NOSIGNAL))
    c.tryit("recv-again", lambda: s.recv(100))
    s.close()


def close_then_data_a(c):
    # A sends a reply and closes normally (FIN); B then sends into the closed socket: RST.
    l = listen(c.port)
    c.sig("ready")
    s = accept(l)
    l.close()
    c.tryit("recv-100", lambda: digest(recv_exact(s, 100)))
    s.sendall(data(5000, 52))
    s.close()


def close_then_data_b(c):
    c.wait("ready")
    s = connect(c.port)
    s.sendall(data(100, 51))
    got, how = recv_all(s)
    c.p("read", len(got), "intact", got == data(5000, 52), how)
    c.tryit("send-after-eof", lambda: s.send(b"y" * 100, socket.MSG_NOSIGNAL))
    po = select.poll()
    po.register(s, 0)  # only ERR/HUP: wait for the RST
    r = po.poll(TMO * 1000)
    ev = r[0][1] if r else 0
    if ev and not ev & select.POLLHUP:
        # Linux reports the reset's error (and wakes the poller) a moment before it closes the
        # socket (tcp_reset: sk_error_report, then tcp_done): look again once it settled.
        time.sleep(0.05)
        r = po.poll(0)
        ev |= r[0][1] if r else 0
    c.p("poll", "ERR" if ev & select.POLLERR else "-", "HUP" if ev & select.POLLHUP else "-")
    c.tryit("send-after-rst", lambda: s.send(b"z", socket.MSG_NOSIGNAL))
    c.tryit("send-again", lambda: s.send(b"z", socket.MSG_NOSIGNAL))
    c.tryit("recv", lambda: s.recv(10))
    s.close()


SENDERS = ("send", "sendmsg", "writev", "sendfile", "splice")


def send_via(how, s, fd):
    """One small send on `s` by way of `how` (no SIGPIPE: Python ignores it)."""
    if how == "send":
        return s.send(b"x" * 100, socket.MSG_NOSIGNAL)
    if how == "sendmsg":
        return s.sendmsg([b"x" * 50, b"y" * 50], [], socket.MSG_NOSIGNAL)
    if how == "writev":
        return os.writev(s.fileno(), [b"x" * 50, b"y" * 50])
    if how == "sendfile":
        return os.sendfile(s.fileno(), fd, 0, 8192)
    r, w = os.pipe()
    try:
        os.write(w, b"s" * 100)
        return os.splice(r, s.fileno(), 100)
    finally:
        os.close(r)
        os.close(w)


def peer_err_send(c):
    """Connects once per way of sending; the peer resets (closes with our bytes unread); then two
    sends: ECONNRESET, then EPIPE, whatever the call (issue 12 item 3)."""
    fd = os.open(RUN["dir"], os.O_TMPFILE | os.O_RDWR, 0o600)
    os.write(fd, data(16384, 71))
    c.wait("ready")
    for how in SENDERS:
        s = connect(c.port)
        s.sendall(data(100, 72))
        c.sig("sent-" + how)
        c.wait("closed-" + how)
        time.sleep(0.2)
        c.tryit(how + "-1", lambda: send_via(how, s, fd))
        c.tryit(how + "-2", lambda: send_via(how, s, fd))
        c.tryit(how + "-soerror", lambda: s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
        s.close()
    os.close(fd)


def peer_err_reset(c):
    l = listen(c.port)
    c.sig("ready")
    for how in SENDERS:
        s = accept(l)
        c.wait("sent-" + how)
        po = select.poll()
        po.register(s, select.POLLIN)
        po.poll(TMO * 1000)  # the bytes are here (a lost segment is retransmitted first)
        s.close()  # 100 bytes unread: RST
        c.sig("closed-" + how)
    l.close()


def ready_order_a(c):
    """A accepts 16 connections and waits; B writes one byte on each in a shuffled order; one
    epoll_wait reports them in the order they arrived (issue 12 item 1)."""
    n = 16
    l = listen(c.port, backlog=n)
    c.sig("ready")
    accs = [accept(l) for _ in range(n)]
    l.close()
    ids = {}
    for a in accs:
        ids[a.fileno()] = int(recv_exact(a, 2).decode())  # B numbers its connections
    ep = select.epoll()
    for a in accs:
        ep.register(a.fileno(), select.EPOLLIN)
    c.sig("registered")
    c.wait("written")
    time.sleep(0.2)
    got = [ids[fd] for fd, _ in ep.poll(1, n)]
    c.p("order", " ".join(str(i) for i in got))
    ep.close()
    for a in accs:
        a.close()


def ready_order_b(c):
    import random
    n = 16
    c.wait("ready")
    cs = []
    for i in range(n):
        s = connect(c.port)
        s.sendall(b"%02d" % i)
        cs.append(s)
    c.wait("registered")
    order = list(range(n))
    random.Random(11).shuffle(order)
    import fcntl, termios
    for i in order:
        cs[i].send(b"r")
        # Acknowledged before the next write (SIOCOUTQ 0), so a segment lost to the loss rule
        # is retransmitted first and the bytes reach A in this order on every run.
        end = time.monotonic() + TMO
        while time.monotonic() < end:
            q = struct.unpack("i", fcntl.ioctl(cs[i].fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
            if q == 0:
                break
            time.sleep(0.001)
    c.sig("written")
    c.p("wrote", " ".join(str(i) for i in order))
    time.sleep(0.5)
    for s in cs:
        s.close()


def refused_a(c):
    c.sig("ready")  # nothing listens on A's port


def refused_b(c):
    c.wait("ready")
    c.tryit("connect", lambda: connect(c.port) and None)


def out_refused_a(c):
    c.wait("ready")
    c.tryit("connect", lambda: connect(c.port) and None)


def out_refused_b(c):
    c.sig("ready")  # nothing listens on B's port


NBACK = 10


def backlog_a(c):
    l = listen(c.port, backlog=2)
    c.sig("ready")
    c.wait("connecting")
    time.sleep(0.5)  # late accepts: the queue is full, the other SYNs wait (not an observation)
    served = []
    for _ in range(NBACK):
        try:
            s = accept(l)
        except (OSError, socket.timeout) as e:
            c.p("accept", en(e))
            break
        try:
            i = recv_exact(s, 1)[0]
            s.sendall(b"ack %d" % i)
            served.append(i)
        except (OSError, socket.timeout, EOFError) as e:
            c.p("serve", en(e))
        s.close()
    c.p("served", len(served), sorted(served) == list(range(NBACK)))
    l.close()


def backlog_b(c):
    c.wait("ready")
    res = {}

    def one(i):
        try:
            s = connect(c.port)
            s.sendall(bytes([i]))
            got, how = recv_all(s)
            res[i] = "%s %s" % (got.decode(errors="replace"), how)
            s.close()
        except (OSError, socket.timeout) as e:
            res[i] = "err " + en(e)

    ts = [threading.Thread(target=one, args=(i,)) for i in range(NBACK)]
    for t in ts:
        t.start()
    c.sig("connecting")
    for t in ts:
        t.join(TMO * 3)
    for i in range(NBACK):
        c.p("conn", i, res.get(i, "hung"))


def zerowin_a(c):
    l = listen(c.port)
    c.sig("ready")
    s = accept(l)
    l.close()
    payload = data(8 << 20, 61)
    s.setblocking(False)
    off, eagain = 0, False
    po = select.poll()
    po.register(s, select.POLLOUT)
    end = time.monotonic() + 3 * TMO
    try:
        while off < len(payload) and time.monotonic() < end:
            try:
                off += s.send(payload[off:off + 1048576])
            except BlockingIOError:
                eagain = True
                po.poll(1000)
        c.p("sent", off, "eagain-seen", eagain)
    except OSError as e:
        c.p("sent", off, "err", en(e))
    s.settimeout(TMO)
    s.shutdown(socket.SHUT_WR)
    got, how = recv_all(s)
    c.p("then", len(got), how)
    s.close()


def zerowin_b(c):
    c.wait("ready")
    s = connect(c.port)
    time.sleep(1.5)  # not reading: the window closes; the sender probes it
    got, how = recv_all(s)
    c.p("read", len(got), digest(got), "intact", got == data(8 << 20, 61), how)
    s.close()


ROUNDS = 1000


def pingpong_a(c):
    l = listen(c.port)
    c.sig("ready")
    s = accept(l)
    l.close()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.p("nodelay", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    bad = 0
    try:
        for r in range(ROUNDS):
            (v,) = struct.unpack("!I", recv_exact(s, 4))
            bad += v != r
            # Two small writes per reply: without TCP_NODELAY the second would wait for an ACK.
            s.sendall(struct.pack("!H", (v + 1) >> 16))
            s.sendall(struct.pack("!H", (v + 1) & 0xFFFF))
        c.p("rounds", ROUNDS, "bad", bad)
    except (OSError, socket.timeout, EOFError) as e:
        c.p("failed", en(e))
    got, how = recv_all(s)
    c.p("then", len(got), how)
    s.close()


def pingpong_b(c):
    c.wait("ready")
    s = connect(c.port)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    bad = 0
    try:
        for r in range(ROUNDS):
            s.sendall(struct.pack("!I", r))
            (v,) = struct.unpack("!I", recv_exact(s, 4))
            bad += v != r + 1
        c.p("rounds", ROUNDS, "bad", bad)
    except (OSError, socket.timeout, EOFError) as e:
        c.p("failed", en(e))
    s.shutdown(socket.SHUT_WR)
    got, how = recv_all(s)
    c.p("then", len(got), how)
    s.close()


KA = (1, 1, 2)  # TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT: ETIMEDOUT about 3 s after silence


def keepalive_a(c):
    l = listen(c.port)
    c.sig("ready")
    s = accept(l)
    l.close()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KA[0])
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KA[1])
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KA[2])
    vals = (s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT))
    s.sendall(b"ka %d %d %d %d\n" % vals)
    # B's "go" carries the ACK of the report: nothing of ours is unacknowledged when B cuts
    # the link, so the keepalive timer (not retransmissions) is what gives up.
    c.tryit("recv-go", lambda: recv_exact(s, 3).decode())
    c.sig("got-go")  # B cuts the link only now (a lost "go!" must not be retransmitted into it)
    c.wait("blackholed")
    s.settimeout(30)
    c.tryit("recv-while-cut", lambda: s.recv(10))
    c.tryit("soerror-after", lambda: s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
    c.tryit("send-after", lambda: s.send(b"x", socket.MSG_NOSIGNAL))
    s.close()


def nft(script):
    r = subprocess.run(["nft", "-f", "-"], input=script.encode(), capture_output=True, timeout=10)
    if r.returncode != 0:
        raise RuntimeError("nft: " + r.stderr.decode().strip())


def keepalive_b(c):
    c.wait("ready")
    s = connect(c.port)
    line = b""
    while not line.endswith(b"\n"):
        b = s.recv(100)
        if not b:
            break
        line += b
    c.p("server-reports keepalive idle intvl cnt:", line.decode().strip())
    s.sendall(b"go!")
    c.wait("got-go")
    table = "wirediff_cut_%d" % c.port
    nft("table ip %s {\n chain i { type filter hook input priority -10; tcp sport %d drop; }\n"
        " chain o { type filter hook output priority -10; tcp dport %d drop; }\n}\n"
        % (table, c.port, c.port))
    c.sig("blackholed")
    try:
        c.wait("done", 60)
    finally:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        nft("delete table ip %s\n" % table)


def urg_rd(s, flags=0):
    """A non-blocking read of up to 64 bytes, as printed (bytes or errno name)."""
    try:
        return repr(s.recv(64, flags | socket.MSG_DONTWAIT))
    except OSError as e:
        return en(e)


def urg_wait(s, n):
    """Until urgent data is reported (POLLPRI) and n ordinary bytes are readable before the
    mark (they follow at once: never timing-dependent), then a pause for the rest."""
    po = select.poll()
    po.register(s, select.POLLPRI)
    po.poll(15000)
    end = time.monotonic() + 15
    while time.monotonic() < end:
        try:
            if len(s.recv(64, socket.MSG_PEEK | socket.MSG_DONTWAIT)) >= n:
                break
        except OSError:
            pass
        time.sleep(0.01)
    time.sleep(0.3)


def urg_view(s):
    """What a receiver of urgent data observes, once "abc" + urgent "!" + "def" arrived."""
    import array
    import fcntl

    def atmark():
        b = array.array("i", [7])
        fcntl.ioctl(s.fileno(), 0x8905, b, True)  # SIOCATMARK
        return b[0]

    def pri():
        po = select.poll()
        po.register(s, select.POLLIN | select.POLLPRI)
        r = po.poll(0)
        return "PRI" if r and r[0][1] & select.POLLPRI else "-"

    urg_wait(s, 3)
    rd = urg_rd
    return ["pri", pri(), "atmark", atmark(), "recv", rd(s), "atmark", atmark(), "pri", pri(),
            "oob", rd(s, socket.MSG_OOB), "again", rd(s, socket.MSG_OOB), "pri", pri(),
            "recv", rd(s), "atmark", atmark()]


def urgent_a(c):
    l = listen(c.port)
    c.sig("ready")
    s = accept(l)
    l.close()
    c.p("got", *urg_view(s))
    s.send(b"abc")
    s.send(b"!", socket.MSG_OOB)
    s.send(b"def")
    c.wait("done")
    s.close()


def urgent_b(c):
    c.wait("ready")
    s = connect(c.port)
    s.send(b"abc")
    s.send(b"!", socket.MSG_OOB)
    s.send(b"def")
    c.p("got", *urg_view(s))
    c.sig("done")
    s.close()


def urgent_close_a(c):
    """send(MSG_OOB) then close() from B: the mark keeps its place before the FIN."""
    l = listen(c.port)
    c.sig("ready")
    s = accept(l)
    l.close()
    urg_wait(s, 2)
    c.p("recv", urg_rd(s), "oob", urg_rd(s, socket.MSG_OOB), "recv", urg_rd(s))
    s.close()


def urgent_close_b(c):
    c.wait("ready")
    s = connect(c.port)
    s.send(b"ab")
    s.send(b"!", socket.MSG_OOB)
    s.close()


SCENARIOS = [
    ("sockopts", sockopts_a, sockopts_b),
    ("sockopts_sizes", sizes_a, sizes_b),
    ("echo_1", *echo_pair(1, 1)),
    ("echo_64k", *echo_pair(65536, 2)),
    ("echo_4m", *echo_pair(4 << 20, 3)),
    ("srv_shutwr", srv_shutwr_a, srv_shutwr_b),
    ("cli_shutwr", cli_shutwr_a, cli_shutwr_b),
    ("unread_rst", unread_rst_a, unread_rst_b),
    ("linger_rst", linger_rst_a, linger_rst_b),
    ("close_then_data", close_then_data_a, close_then_data_b),
    ("refused", refused_a, refused_b),
    ("ready_order", ready_order_a, ready_order_b),
    ("backlog", backlog_a, backlog_b),
    ("zerowin", zerowin_a, zerowin_b),
    ("pingpong", pingpong_a, pingpong_b),
    ("keepalive", keepalive_a, keepalive_b),
    ("out_echo_1", *out_echo_pair(1, 4)),
    ("out_echo_64k", *out_echo_pair(65536, 5)),
    ("out_echo_4m", *out_echo_pair(4 << 20, 6)),
    ("out_refused", out_refused_a, out_refused_b),
    # The same exchanges with the roles swapped: A connects, B (kernel) listens, so what A
    # observes is the engine's and the preload's reporting of what B's kernel does.
    ("out_srv_shutwr", srv_shutwr_b, srv_shutwr_a),
    ("out_cli_shutwr", cli_shutwr_b, cli_shutwr_a),
    ("out_unread_rst", unread_rst_b, unread_rst_a),
    ("out_linger_rst", linger_rst_b, linger_rst_a),
    ("out_close_then_data", close_then_data_b, close_then_data_a),
    ("out_backlog", backlog_b, backlog_a),
    ("out_zerowin", zerowin_b, zerowin_a),
    ("out_pingpong", pingpong_b, pingpong_a),
    # Urgent data both ways (the engine receives it first, then sends it).
    ("urgent", urgent_a, urgent_b),
    ("out_urgent", urgent_b, urgent_a),
    ("urgent_close", urgent_close_a, urgent_close_b),
    # A (the engine) sends after B reset the connection, with each way of sending.
    ("out_peer_err", peer_err_send, peer_err_reset),
]


def main():
    if len(sys.argv) != 6 or sys.argv[1] not in ("server", "client"):
        sys.exit(__doc__)
    role = sys.argv[1]
    RUN.update(role=role, dir=sys.argv[2], ip_a=sys.argv[3], ip_b=sys.argv[4], base=int(sys.argv[5]))
    only = os.environ.get("WIRE_ONLY", "").split()
    # Scenarios an engine cannot run at all (both roles and both stacks leave them out).
    skip = os.environ.get("WIRE_SKIP", "").split()
    for idx, (name, a, b) in enumerate(SCENARIOS):
        if (only and name not in only) or name in skip:
            continue
        p = Lines()
        c = Ctx(idx, name, p)
        t0 = time.monotonic()
        try:
            (a if role == "server" else b)(c)
        except Exception as e:  # noqa: BLE001 - any failure is an observation
            p("EXCEPTION", type(e).__name__, en(e) if isinstance(e, OSError) else "")
            print("%s %s: %r" % (role, name, e), file=sys.stderr)
        print("%s %s %.2fs" % (role, name, time.monotonic() - t0), file=sys.stderr)
        if role == "server":
            c.sig("done", "".join(x + "\n" for x in p.l))
            c.wait("done")
        else:
            c.sig("done")
            for line in p.l:
                print("[%s] b: %s" % (name, line))
            try:
                srv = c.wait("done")
            except TimeoutError:
                srv = "NO REPORT from the server role\n"
            for line in srv.splitlines():
                print("[%s] a: %s" % (name, line))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
