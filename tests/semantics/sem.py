#!/usr/bin/env python3
"""Differential socket-semantics probe.

Run once on kernel sockets and once under LD_PRELOAD=libsnstack.so: the outputs must be identical.
Every line is deterministic (no ports, no timings), so any difference is a semantic bug of the
interposer: an errno, a readiness bit, a byte count. Bounded: every wait has a timeout.
"""
import errno, fcntl, os, select, socket, stat, struct, sys, termios, threading, time

OUT = []


def p(*a):
    OUT.append(" ".join(str(x) for x in a))


def en(e):
    return errno.errorcode.get(e.errno, str(e.errno)) if isinstance(e, OSError) else type(e).__name__


def tryit(label, f):
    try:
        r = f()
        p(label, "ok", r if r is not None else "")
    except OSError as e:
        p(label, "err", en(e))


def listener(fam=socket.AF_INET, addr="127.0.0.1"):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 0))
    s.listen(16)
    return s


def pair():
    l = listener()
    c = socket.create_connection(l.getsockname(), timeout=5)
    c.settimeout(None)
    a, _ = l.accept()
    l.close()
    return c, a


def mask(ev, names):
    return "|".join(n for n, v in names if ev & v) or "0"


PN = [("IN", select.POLLIN), ("PRI", select.POLLPRI), ("OUT", select.POLLOUT), ("ERR", select.POLLERR),
      ("HUP", select.POLLHUP), ("NVAL", select.POLLNVAL), ("RDHUP", 0x2000)]
EN = [("IN", select.EPOLLIN), ("OUT", select.EPOLLOUT), ("ERR", select.EPOLLERR),
      ("HUP", select.EPOLLHUP), ("RDHUP", select.EPOLLRDHUP)]


def pollmask(s, ev, t=0):
    po = select.poll()
    po.register(s, ev)
    r = po.poll(t)
    return mask(r[0][1], PN) if r else "none"


def settle():
    time.sleep(0.2)


def t_errnos():
    l = listener()
    port = l.getsockname()[1]
    s = socket.socket()
    tryit("bind-inuse", lambda: s.bind(("127.0.0.1", port)))
    s.close()
    tryit("send-unconnected", lambda: socket.socket().send(b"x", socket.MSG_NOSIGNAL))
    tryit("recv-unconnected", lambda: socket.socket().recv(1))
    tryit("getpeername-unconnected", lambda: socket.socket().getpeername())
    tryit("shutdown-unconnected", lambda: socket.socket().shutdown(socket.SHUT_RDWR))
    l.setblocking(False)
    tryit("accept-empty-nonblock", lambda: l.accept())
    tryit("recv-listener", lambda: l.recv(1))
    tryit("sockopt-unknown", lambda: l.setsockopt(socket.SOL_SOCKET, 9999, 1))
    tryit("getsockopt-type", lambda: l.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE))
    tryit("getsockopt-acceptconn", lambda: l.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    tryit("getsockopt-reuseaddr", lambda: bool(l.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)))
    l.close()
    c = socket.socket()
    c.settimeout(5)
    tryit("connect-refused", lambda: c.connect(("127.0.0.1", port)))
    c.close()
    s = socket.socket()
    tryit("listen-after-listen", lambda: (s.bind(("127.0.0.1", 0)), s.listen(1), s.listen(5)) and None)
    tryit("connect-on-listener", lambda: s.connect(("127.0.0.1", 1)))
    s.close()
    tryit("fresh-poll", lambda: pollmask(socket.socket(), select.POLLIN | select.POLLOUT))


def t_nonblocking_connect():
    l = listener()
    c = socket.socket()
    c.setblocking(False)
    tryit("nb-connect", lambda: c.connect(l.getsockname()))
    r = select.select([], [c], [], 5)
    p("nb-connect-writable", bool(r[1]))
    p("nb-connect-soerror", c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
    tryit("nb-connect-again", lambda: c.connect(l.getsockname()))
    tryit("nb-recv-empty", lambda: c.recv(10))
    p("fcntl-nonblock", bool(fcntl.fcntl(c.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK))
    c.setblocking(True)
    p("fcntl-block", bool(fcntl.fcntl(c.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK))
    c.close()
    port = l.getsockname()[1]
    l.close()
    c = socket.socket()
    c.setblocking(False)
    tryit("nb-connect-closed", lambda: c.connect(("127.0.0.1", port)))
    r = select.select([], [c], [], 5)
    p("nb-refused-writable", bool(r[1]))
    p("nb-refused-soerror", errno.errorcode.get(c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)))
    p("nb-refused-soerror-cleared", c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
    c.close()


def t_data():
    c, a = pair()
    c.sendall(b"hello world")
    settle()
    p("fionread", struct.unpack("i", fcntl.ioctl(a.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0])
    p("peek", a.recv(5, socket.MSG_PEEK))
    p("recv", a.recv(5))
    p("recv-rest", a.recv(100))
    def later():
        time.sleep(0.2)
        c.send(b"abc")
        time.sleep(0.2)
        c.send(b"defgh")
    t = threading.Thread(target=later)
    t.start()
    p("waitall", a.recv(8, socket.MSG_WAITALL))
    t.join()
    p("sendmsg", c.sendmsg([b"ab", b"cd", b"ef"]))
    settle()
    b1, b2 = bytearray(3), bytearray(10)
    p("recvmsg_into", a.recvmsg_into([b1, b2])[0], bytes(b1), bytes(b2[:3]))
    p("dontwait", en_try(lambda: a.recv(1, socket.MSG_DONTWAIT)))
    # shutdown write: peer sees EOF, reverse direction still works
    c.shutdown(socket.SHUT_WR)
    settle()
    p("after-shutwr-peer-recv", a.recv(10))
    p("after-shutwr-peer-poll", pollmask(a, select.POLLIN | select.POLLOUT | 0x2000))
    p("after-shutwr-send", en_try(lambda: c.send(b"x", socket.MSG_NOSIGNAL)))
    a.sendall(b"back")
    settle()
    p("reverse", c.recv(10))
    a.close()
    settle()
    p("after-peer-close-recv", c.recv(10))
    p("after-close-poll", pollmask(c, select.POLLIN | select.POLLOUT))
    c.close()


def en_try(f):
    try:
        return f()
    except OSError as e:
        return en(e)


def t_poll_zero_events():
    c, a = pair()
    a.send(b"x")
    settle()
    p("poll-events0", pollmask(c, 0))
    p("poll-in", pollmask(c, select.POLLIN))
    p("poll-out", pollmask(c, select.POLLOUT))
    c.close(); a.close()


def t_epoll():
    c, a = pair()
    ep = select.epoll()
    ep.register(a, select.EPOLLIN)
    p("lt-empty", ep.poll(0))
    c.send(b"12345")
    settle()
    p("lt-1", [(1, mask(e, EN)) for _, e in ep.poll(0)])
    p("lt-2", [(1, mask(e, EN)) for _, e in ep.poll(0)])
    a.recv(100)
    p("lt-drained", ep.poll(0))
    ep.modify(a, select.EPOLLIN | select.EPOLLET)
    c.send(b"x")
    settle()
    p("et-1", len(ep.poll(0)))
    p("et-2", len(ep.poll(0)))
    c.send(b"y")
    settle()
    p("et-3", len(ep.poll(0)))
    a.recv(100)
    ep.modify(a, select.EPOLLIN | select.EPOLLONESHOT)
    c.send(b"z")
    settle()
    p("oneshot-1", len(ep.poll(0)))
    p("oneshot-2", len(ep.poll(0)))
    ep.modify(a, select.EPOLLIN)
    p("oneshot-rearm", len(ep.poll(0)))
    tryit("epoll-add-dup", lambda: ep.register(a, select.EPOLLIN))
    ep.unregister(a)
    tryit("epoll-mod-missing", lambda: ep.modify(a, select.EPOLLIN))
    tryit("epoll-del-missing", lambda: ep.unregister(a))
    # the data word comes back as given; a mixed set with a pipe
    r, w = os.pipe()
    ep.register(r, select.EPOLLIN)
    ep.register(a, select.EPOLLIN | select.EPOLLRDHUP)
    os.write(w, b"p")
    p("mixed-pipe", sorted((fd == r, mask(e, EN)) for fd, e in ep.poll(1)))
    os.read(r, 1)
    c.shutdown(socket.SHUT_WR)
    settle()
    p("rdhup", sorted((fd == a.fileno(), mask(e, EN)) for fd, e in ep.poll(1)))
    # a blocking wait woken by the peer
    ep.unregister(a)
    c2, a2 = pair()
    ep.register(a2, select.EPOLLIN)
    threading.Timer(0.3, lambda: c2.send(b"wake")).start()
    t0 = time.time()
    ev = ep.poll(5)
    p("epoll-sleep-woken", [(fd == a2.fileno(), mask(e, EN)) for fd, e in ev], time.time() - t0 < 4)
    # a registered fd closed: it disappears from the set
    a2.recv(100)
    a2.close()
    c2.send(b"more")
    settle()
    p("closed-fd-gone", [fd for fd, _ in ep.poll(0)])
    ep.close(); c.close(); a.close(); c2.close(); os.close(r); os.close(w)


def t_epoll_many():
    """Many registered sockets, few of them changing: what an agent-fed ready list must get right
    (LT reported again while the level lasts, ET once per arrival, ONESHOT, MOD, DEL, dup, a
    small maxevents, a wait woken by one socket among many)."""
    n = 150
    l = listener()
    l.listen(n)
    cs, acc = [], []
    for _ in range(n):
        cs.append(socket.create_connection(l.getsockname(), timeout=5))
        a, _ = l.accept()
        acc.append(a)
    idx = {a.fileno(): i for i, a in enumerate(acc)}
    lt, et, os1 = select.epoll(), select.epoll(), select.epoll()
    for a in acc:
        lt.register(a, select.EPOLLIN)
        et.register(a, select.EPOLLIN | select.EPOLLET)
        os1.register(a, select.EPOLLIN | select.EPOLLONESHOT)
    lt.register(l, select.EPOLLIN)
    idx[l.fileno()] = "L"
    d50 = os.dup(acc[50].fileno())
    lt.register(d50, select.EPOLLIN)
    idx[d50] = "dup50"

    def got(ep, t=0, m=-1):
        return sorted((str(idx.get(fd, fd)), mask(e, EN)) for fd, e in ep.poll(t, m))

    p("many-idle", got(lt), got(et), got(os1))
    for i in (3, 77, 149):
        cs[i].send(b"x")
    settle()
    p("many-lt-1", got(lt))
    p("many-lt-2", got(lt))
    p("many-et-1", got(et))
    p("many-et-2", got(et))
    p("many-os-1", got(os1))
    p("many-os-2", got(os1))
    acc[77].recv(10)
    p("many-lt-drained", got(lt), got(et))
    cs[3].send(b"y")
    settle()
    p("many-et-again", got(et), got(lt))
    # maxevents=1: every call reports one; the level-ready ones all come round.
    seen = set()
    counts = []
    for _ in range(6):
        r = got(lt, 0, 1)
        counts.append(len(r))
        seen.update(x for x, _ in r)
    p("many-max1", counts, sorted(seen))
    cs[10].close()
    cs[50].send(b"z")
    settle()
    p("many-fin-dup", got(lt), got(et))
    # modify one entry to OUT (always ready), delete a ready one
    lt.modify(acc[120], select.EPOLLOUT)
    lt.unregister(acc[149])
    p("many-mod-del", got(lt))
    lt.modify(acc[120], select.EPOLLIN)
    p("many-mod-back", got(lt))
    # re-arm a fired ONESHOT with data pending
    os1.modify(acc[3], select.EPOLLIN | select.EPOLLONESHOT)
    p("many-os-rearm", got(os1), got(os1))
    # a new connection on the registered listener; then a sleeping ET wait woken by one socket
    c2 = socket.create_connection(l.getsockname(), timeout=5)
    settle()
    p("many-listener", got(lt))
    threading.Timer(0.3, lambda: cs[100].send(b"w")).start()
    t0 = time.time()
    r = got(et, 5)
    p("many-et-sleep-woken", r, time.time() - t0 < 4)
    p("many-lt-after-wake", got(lt))
    a2, _ = l.accept()
    for e in (lt, et, os1):
        e.close()
    os.close(d50)
    for x in cs + acc + [l, c2, a2]:
        x.close()


def t_select_mixed():
    c, a = pair()
    r, w = os.pipe()
    rr, ww, _ = select.select([a, r], [c], [], 0)
    p("select-1", [x is a for x in rr], [x is c for x in ww])
    c.send(b"q")
    os.write(w, b"z")
    settle()
    rr, _, _ = select.select([a, r], [], [], 1)
    p("select-2", sorted(x is a for x in rr))
    threading.Timer(0.3, lambda: os.write(w, b"y")).start()
    a.recv(10); os.read(r, 10)
    t0 = time.time()
    rr, _, _ = select.select([a, r], [], [], 5)
    p("select-wake-pipe", [x == r for x in rr], time.time() - t0 < 4)
    os.read(r, 10)
    threading.Timer(0.3, lambda: c.send(b"k")).start()
    po = select.poll()
    po.register(a, select.POLLIN)
    po.register(r, select.POLLIN)
    t0 = time.time()
    ev = po.poll(5000)
    p("poll-wake-sock", [(fd == a.fileno(), mask(e, PN)) for fd, e in ev], time.time() - t0 < 4)
    c.close(); a.close(); os.close(r); os.close(w)


def t_timeout():
    c, a = pair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 200000))
    t0 = time.time()
    p("rcvtimeo", en_try(lambda: a.recv(1)), 0.1 < time.time() - t0 < 3)
    p("rcvtimeo-get", struct.unpack("ll", a.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)))
    a.settimeout(0.2)
    t0 = time.time()
    p("py-timeout", en_try(lambda: a.recv(1)), 0.1 < time.time() - t0 < 3)
    c.close(); a.close()


def t_opts_names():
    c, a = pair()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    p("nodelay", c.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    p("keepalive-default", c.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))
    p("names", c.getsockname() == a.getpeername(), c.getpeername() == a.getsockname())
    p("domain", c.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN) == socket.AF_INET)
    c.close(); a.close()
    l = listener(socket.AF_INET6, "::")
    c = socket.create_connection(("127.0.0.1", l.getsockname()[1]), timeout=5)
    a, peer = l.accept()
    p("v6-dualstack-peer", peer[0], a.family == socket.AF_INET6)
    c.close(); a.close(); l.close()
    l = listener(socket.AF_INET6, "::1")
    c = socket.create_connection(("::1", l.getsockname()[1]), timeout=5)
    a, peer = l.accept()
    p("v6-loopback-peer", peer[0], c.getpeername()[0])
    c.close(); a.close(); l.close()


def t_bulk():
    c, a = pair()
    data = os.urandom(4 << 20)
    t = threading.Thread(target=lambda: (c.sendall(data), c.shutdown(socket.SHUT_WR)))
    t.start()
    got = bytearray()
    while True:
        b = a.recv(1 << 16)
        if not b:
            break
        got += b
    t.join()
    p("bulk", len(got), got == data)
    c.close(); a.close()


def t_dup():
    c, a = pair()
    d = os.dup(c.fileno())
    os.write(d, b"via-dup")
    settle()
    p("dup-write", a.recv(100))
    os.close(d)
    c.send(b"still")
    settle()
    p("dup-close-keeps", a.recv(100))
    c.close(); a.close()


def t_fd_flags_per_socket():
    """Flags of one socket never show on another (offloaded sockets share kernel shadow
    templates), fd numbers are the lowest free, close-on-exec is per fd."""
    l = listener()
    c1 = socket.create_connection(l.getsockname())
    c2 = socket.create_connection(l.getsockname())
    a1, _ = l.accept()
    a2, _ = l.accept()
    fl = lambda s: bool(fcntl.fcntl(s.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK)
    fcntl.fcntl(c1.fileno(), fcntl.F_SETFL, fcntl.fcntl(c1.fileno(), fcntl.F_GETFL) | os.O_NONBLOCK)
    a1.setblocking(False)
    p("nonblock-own", fl(c1), fl(a1), "others", fl(c2), fl(a2))
    t = threading.Timer(0.3, lambda: c2.send(b"x"))
    t.start()
    tryit("blocking-other-waits", lambda: a2.recv(1))
    t.join()
    p("st-sock", stat.S_ISSOCK(os.fstat(a2.fileno()).st_mode))
    n = a2.fileno()
    a2.close()
    a3 = socket.create_connection(l.getsockname())
    a4, _ = l.accept()
    p("lowest-free", a3.fileno() == n)
    ce = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    nc = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    nc.set_inheritable(True)
    p("cloexec", bool(fcntl.fcntl(ce.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC),
      bool(fcntl.fcntl(nc.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC))
    for s in (l, c1, c2, a1, a3, a4, ce, nc):
        s.close()


def t_sigpipe():
    import signal
    c, a = pair()
    a.close()
    settle()
    got = []
    old = signal.signal(signal.SIGPIPE, lambda *x: got.append(1))
    err = None
    for _ in range(50):
        try:
            c.send(b"x" * 1000)
        except OSError as e:
            err = en(e)
            break
        time.sleep(0.02)
    signal.signal(signal.SIGPIPE, old)
    p("send-after-peer-close", err in ("EPIPE", "ECONNRESET"), "sigpipe" if got else "no-sigpipe" if err == "ECONNRESET" else "no-sigpipe?")
    c.close()


def t_splice():
    c, a = pair()
    r, w = os.pipe()
    c.sendall(b"hello splice")
    settle()
    # socket -> pipe, then pipe -> socket
    tryit("splice-sock-to-pipe", lambda: os.splice(a.fileno(), w, 5))
    tryit("pipe-has", lambda: os.read(r, 100))
    tryit("splice-rest", lambda: os.splice(a.fileno(), w, 100))
    tryit("pipe-has-rest", lambda: os.read(r, 100))
    os.write(w, b"back through a pipe")
    tryit("splice-pipe-to-sock", lambda: os.splice(r, c.fileno(), 100))
    settle()
    tryit("peer-got", lambda: a.recv(100))
    # errors: no pipe on either side, offsets on pipes/sockets, empty non-blocking pipe
    tryit("splice-sock-to-sock", lambda: os.splice(a.fileno(), c.fileno(), 10))
    tryit("splice-offset-on-sock", lambda: os.splice(a.fileno(), w, 10, offset_src=0))
    tryit("splice-offset-on-pipe", lambda: os.splice(r, c.fileno(), 10, offset_src=0))
    tryit("splice-empty-nb-pipe", lambda: os.splice(r, c.fileno(), 10, flags=os.SPLICE_F_NONBLOCK))
    a.setblocking(False)
    tryit("splice-empty-nb-sock", lambda: os.splice(a.fileno(), w, 10))
    # EOF from the socket
    c.close()
    settle()
    tryit("splice-eof", lambda: os.splice(a.fileno(), w, 10))
    a.close()
    os.close(r)
    os.close(w)


def recv_exact(s, n):
    got = bytearray()
    while len(got) < n:
        b = s.recv(min(1 << 16, n - len(got)))
        if not b:
            break
        got += b
    return bytes(got)


def t_sendfile():
    import tempfile
    # 32 MiB: more than the TX stream, a mapping window and the kernel's socket buffers together.
    data = bytes(range(251)) * ((32 << 20) // 251)
    fd, path = tempfile.mkstemp()
    os.unlink(path)
    os.write(fd, data)
    c, a = pair()
    # NULL offset: reads at and advances the file position
    os.lseek(fd, 7, os.SEEK_SET)
    tryit("sf-null", lambda: os.sendfile(c.fileno(), fd, None, 100))
    p("sf-null-pos", os.lseek(fd, 0, os.SEEK_CUR))
    # explicit offset: the position stays
    tryit("sf-off", lambda: os.sendfile(c.fileno(), fd, 5000, 50))
    p("sf-off-pos", os.lseek(fd, 0, os.SEEK_CUR))
    # past EOF: short count, then 0
    tryit("sf-past-eof", lambda: os.sendfile(c.fileno(), fd, len(data) - 10, 100))
    tryit("sf-at-eof", lambda: os.sendfile(c.fileno(), fd, len(data), 100))
    os.lseek(fd, len(data) - 5, os.SEEK_SET)
    tryit("sf-null-past-eof", lambda: os.sendfile(c.fileno(), fd, None, 100))
    p("sf-null-past-eof-pos", os.lseek(fd, 0, os.SEEK_CUR) == len(data))
    tryit("sf-count-0", lambda: os.sendfile(c.fileno(), fd, 0, 0))
    want = data[7:107] + data[5000:5050] + data[-10:] + data[-5:]
    p("sf-peer-got", recv_exact(a, len(want)) == want)
    # sources the kernel refuses or cannot read
    r, w = os.pipe()
    os.write(w, b"abc")
    tryit("sf-pipe", lambda: os.sendfile(c.fileno(), r, None, 3))
    tryit("sf-pipe-off", lambda: os.sendfile(c.fileno(), r, 0, 3))
    os.close(r); os.close(w)
    wo = os.open("/dev/null", os.O_WRONLY)
    tryit("sf-wronly", lambda: os.sendfile(c.fileno(), wo, 0, 3))
    os.close(wo)
    wo = os.open("/proc/self/fd/%d" % fd, os.O_WRONLY)
    tryit("sf-wronly-file", lambda: os.sendfile(c.fileno(), wo, 0, 3))
    os.close(wo)
    tryit("sf-neg-off", lambda: os.sendfile(c.fileno(), fd, -1, 3))
    # blocking, a file much larger than the TX stream, read by a thread: all of it arrives
    got = []
    t = threading.Thread(target=lambda: got.append(recv_exact(a, len(data))))
    t.start()
    os.lseek(fd, 0, os.SEEK_SET)
    sent = 0
    while sent < len(data):
        n = os.sendfile(c.fileno(), fd, None, len(data) - sent)
        if n <= 0:
            break
        sent += n
    t.join(30)
    p("sf-big", sent == len(data), os.lseek(fd, 0, os.SEEK_CUR) == len(data), got and got[0] == data)
    # non-blocking: fill until EAGAIN, then EPOLLOUT once the peer reads, then the rest
    c.setblocking(False)
    sent, first, eagain = 0, None, False
    while sent < len(data):
        try:
            n = os.sendfile(c.fileno(), fd, sent, len(data) - sent)
        except BlockingIOError:
            eagain = True
            break
        first = n if first is None else first
        sent += n
    p("sf-nb-fill", first is not None and 0 < first < len(data), eagain, 0 < sent < len(data))
    got = []
    # the reader starts late, so the sender's next try meets the full buffer (EAGAIN) and has to
    # wait for EPOLLOUT; without the delay a fast reader can drain first and no EAGAIN comes
    def late_reader():
        time.sleep(0.5)
        got.append(recv_exact(a, len(data)))
    t = threading.Thread(target=late_reader)
    t.start()
    ep = select.epoll()
    ep.register(c.fileno(), select.EPOLLOUT | select.EPOLLET)
    outs = 0
    while sent < len(data):
        try:
            sent += os.sendfile(c.fileno(), fd, sent, len(data) - sent)
        except BlockingIOError:
            if not ep.poll(5):
                break
            outs += 1
    t.join(30)
    ep.close()
    p("sf-nb-rest", sent == len(data), outs > 0, got and got[0] == data)
    c.close(); a.close()
    # peer gone: EPIPE and SIGPIPE, as send
    import signal
    c, a = pair()
    a.close()
    settle()
    sig = []
    old = signal.signal(signal.SIGPIPE, lambda *x: sig.append(1))
    err = None
    for _ in range(50):
        try:
            os.sendfile(c.fileno(), fd, 0, 1000)
        except OSError as e:
            err = en(e)
            break
        time.sleep(0.02)
    signal.signal(signal.SIGPIPE, old)
    p("sf-after-peer-close", err in ("EPIPE", "ECONNRESET"), "sigpipe" if sig else "no-sigpipe" if err == "ECONNRESET" else "no-sigpipe?")
    c.close(); os.close(fd)


TESTS = [t_errnos, t_nonblocking_connect, t_data, t_poll_zero_events, t_epoll, t_epoll_many, t_select_mixed,
         t_timeout, t_opts_names, t_bulk, t_dup, t_fd_flags_per_socket, t_sigpipe, t_splice,
         t_sendfile]

if __name__ == "__main__":
    only = sys.argv[1:]
    for t in TESTS:
        if only and t.__name__ not in only:
            continue
        p("##", t.__name__)
        try:
            t()
        except Exception as e:  # a crash is a difference too
            p("EXCEPTION", type(e).__name__, en(e) if isinstance(e, OSError) else e)
    print("\n".join(OUT))
