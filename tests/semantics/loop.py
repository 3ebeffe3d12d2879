#!/usr/bin/env python3
"""Differential probe of connections between two local endpoints (the agent's loopback path).

Run on kernel sockets and under LD_PRELOAD=libsnstack.so (agent --loopback on, then off): the
outputs must be identical. Every connection here goes to a listener of the same process on a
local address, which is exactly what the agent's loopback accelerator serves (docs/loopback.md):
end of stream, half-close both ways, RST on close with unread data and with SO_LINGER 0,
SO_ERROR after RST, EPIPE/SIGPIPE, addresses (IPv4, IPv6, v4-mapped), non-blocking connect
readiness, flow control on a large transfer, accept queue order, options on loop sockets, the
order in which epoll reports sockets that became readable.
Lines carry no ports or timings. Every wait is bounded.
"""
import errno, hashlib, os, select, signal, socket, struct, sys, threading, time

OUT = []


def p(*a):
    OUT.append(" ".join(str(x) for x in a))
    if os.environ.get("LOOP_PROBE_TRACE"):
        print(OUT[-1], file=sys.stderr, flush=True)


def en(e):
    return errno.errorcode.get(e.errno, str(e.errno)) if isinstance(e, OSError) else type(e).__name__


def tryit(label, f):
    try:
        r = f()
        p(label, "ok", r if r is not None else "")
    except OSError as e:
        p(label, "err", en(e))


PN = [("IN", select.POLLIN), ("OUT", select.POLLOUT), ("ERR", select.POLLERR),
      ("HUP", select.POLLHUP), ("RDHUP", 0x2000)]


def pollmask(s, t=0):
    po = select.poll()
    po.register(s, select.POLLIN | select.POLLOUT | 0x2000)
    r = po.poll(t)
    return "|".join(n for n, v in PN if r and r[0][1] & v) or "0"


def settle():
    time.sleep(0.2)


def listener(fam=socket.AF_INET, addr="127.0.0.1", backlog=16):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 0))
    s.listen(backlog)
    return s


def pair(fam=socket.AF_INET, addr="127.0.0.1"):
    l = listener(fam, addr)
    c = socket.socket(fam, socket.SOCK_STREAM)
    c.settimeout(5)
    c.connect(l.getsockname()[:2])
    c.settimeout(None)
    a, _ = l.accept()
    l.close()
    return c, a


def t_addresses():
    for fam, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            l = listener(fam, addr)
        except OSError as e:
            p("addr", addr, "unavailable", en(e))
            continue
        c = socket.socket(fam, socket.SOCK_STREAM)
        c.connect(l.getsockname()[:2])
        a, peer = l.accept()
        p("addr", addr, "peer==client-name", peer[:2] == c.getsockname()[:2],
          "client-peer==listener", c.getpeername()[:2] == l.getsockname()[:2],
          "accepted-name==listener", a.getsockname()[:2] == l.getsockname()[:2],
          "accepted-peer==client", a.getpeername()[:2] == c.getsockname()[:2],
          "client-ip", c.getsockname()[0], "ephemeral", c.getsockname()[1] >= 1024)
        # The client's port is really taken: nobody else may bind it.
        s = socket.socket(fam, socket.SOCK_STREAM)
        tryit("bind-client-port", lambda: s.bind((addr, c.getsockname()[1])))
        s.close()
        c.close(); a.close(); l.close()
    # IPv4 client to a dual-stack listener; v4-mapped client to an IPv4 listener.
    try:
        l = listener(socket.AF_INET6, "::")
        c = socket.create_connection(("127.0.0.1", l.getsockname()[1]), timeout=5)
        a, peer = l.accept()
        p("dualstack", "peer", peer[0], "name", a.getsockname()[0], "client-peer", c.getpeername()[0])
        c.close(); a.close(); l.close()
    except OSError as e:
        p("dualstack", "unavailable", en(e))
    l = listener()
    c = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    c.settimeout(5)
    c.connect(("::ffff:127.0.0.1", l.getsockname()[1]))
    a, peer = l.accept()
    p("v4mapped", "peer", peer[0], "client-name", c.getsockname()[0], "client-peer", c.getpeername()[0])
    c.close(); a.close(); l.close()
    # Explicitly bound client.
    l = listener()
    c = socket.socket()
    c.bind(("127.0.0.1", 0))
    port = c.getsockname()[1]
    c.connect(l.getsockname())
    a, peer = l.accept()
    p("bound-client", "keeps-port", c.getsockname()[1] == port, "peer-port", peer[1] == port)
    c.close(); a.close(); l.close()


def t_nonblocking_connect():
    l = listener()
    c = socket.socket()
    c.setblocking(False)
    tryit("nb-connect", lambda: c.connect(l.getsockname()))
    r = select.select([], [c], [], 5)
    p("nb-writable", bool(r[1]), "poll", pollmask(c))
    p("nb-soerror", c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
    tryit("nb-connect-again", lambda: c.connect(l.getsockname()))
    tryit("nb-connect-third", lambda: c.connect(l.getsockname()))
    l.setblocking(False)
    a, _ = l.accept()
    p("nb-accepted-poll", pollmask(a))
    tryit("nb-recv-empty", lambda: c.recv(10))
    c.send(b"ping")
    r = select.select([a], [], [], 5)
    p("nb-peer-readable", bool(r[0]), a.recv(10))
    c.close(); a.close(); l.close()


def t_fin_and_halfclose():
    c, a = pair()
    c.sendall(b"request")
    c.shutdown(socket.SHUT_WR)
    settle()
    p("fin-peer-poll", pollmask(a))
    p("fin-peer-recv", a.recv(100), a.recv(100))
    p("fin-writer-poll", pollmask(c))
    tryit("fin-writer-send", lambda: c.send(b"x", socket.MSG_NOSIGNAL))
    a.sendall(b"response")
    a.shutdown(socket.SHUT_WR)
    settle()
    p("fin-back", c.recv(100), c.recv(100))
    p("both-shut-poll", pollmask(c), pollmask(a))
    c.close(); a.close()
    # shutdown(SHUT_RDWR) on one side.
    c, a = pair()
    a.sendall(b"unread?")
    settle()
    c.shutdown(socket.SHUT_RDWR)
    settle()
    p("rdwr-poll", pollmask(c), "peer", pollmask(a))
    p("rdwr-peer-recv", a.recv(10))
    tryit("rdwr-send", lambda: c.send(b"x", socket.MSG_NOSIGNAL))
    c.close(); a.close()
    # Peer closes: the reader gets the bytes, then EOF, the state stays readable.
    c, a = pair()
    a.sendall(b"last words")
    a.close()
    settle()
    p("close-recv", c.recv(100), c.recv(100), pollmask(c))
    c.close()


def t_reset():
    # Close with unread data: RST, the peer reads ECONNRESET.
    c, a = pair()
    c.sendall(b"never read")
    settle()
    a.close()
    settle()
    p("unread-close-poll", pollmask(c))
    p("unread-close-soerror", errno.errorcode.get(c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)))
    tryit("unread-close-recv", lambda: c.recv(10))
    tryit("unread-close-recv2", lambda: c.recv(10))
    tryit("unread-close-send", lambda: c.send(b"x", socket.MSG_NOSIGNAL))
    tryit("unread-close-getpeername", lambda: c.getpeername() and None)
    c.close()
    # SO_LINGER 0: RST even without unread data; bytes sent before still arrive first.
    c, a = pair()
    a.sendall(b"before-rst")
    settle()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    p("linger-get", struct.unpack("ii", c.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8)))
    c.close()
    settle()
    p("linger0-poll", pollmask(a))
    tryit("linger0-recv", lambda: a.recv(100))
    tryit("linger0-recv2", lambda: a.recv(100))
    a.close()
    # Write after the peer closed: the first write goes, the RST makes the next fail (SIGPIPE).
    c, a = pair()
    a.close()
    settle()
    got = []
    old = signal.signal(signal.SIGPIPE, lambda *x: got.append(1))
    tryit("write-closed-1", lambda: c.send(b"x" * 100))
    settle()
    p("write-closed-poll", pollmask(c))
    p("write-closed-soerror", errno.errorcode.get(c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), 0))
    tryit("write-closed-2", lambda: c.send(b"x" * 100))
    signal.signal(signal.SIGPIPE, old)
    p("sigpipe", bool(got))
    tryit("write-closed-recv", lambda: c.recv(10))
    c.close()


def t_bulk():
    c, a = pair()
    data = os.urandom(8 << 20)
    def writer():
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
    t = threading.Thread(target=writer)
    t.start()
    h = hashlib.sha256()
    n = 0
    slow = 0
    while True:
        b = a.recv(1 << 16)
        if not b:
            break
        n += len(b)
        h.update(b)
        if slow < 20:  # a slow reader first: the writer must wait, not lose bytes
            slow += 1
            time.sleep(0.01)
    t.join()
    p("bulk", n, h.hexdigest() == hashlib.sha256(data).hexdigest())
    c.close(); a.close()
    # Both directions at once, both bigger than every buffer on the way.
    c, a = pair()
    up, down = os.urandom(3 << 20), os.urandom(3 << 20)
    res = {}
    def reader(s, n, key):
        got = bytearray()
        while len(got) < n:
            b = s.recv(1 << 16)
            if not b:
                break
            got += b
        res[key] = bytes(got)
    ts = [threading.Thread(target=reader, args=(a, len(up), "a")),
          threading.Thread(target=reader, args=(c, len(down), "c")),
          threading.Thread(target=lambda: c.sendall(up))]
    for t in ts:
        t.start()
    a.sendall(down)
    for t in ts:
        t.join(30)
    p("bulk-both", res.get("a") == up, res.get("c") == down)
    c.close(); a.close()
    # Non-blocking writer: EAGAIN when the path is full, writable again once the reader reads.
    c, a = pair()
    c.setblocking(False)
    sent = 0
    # Fill until EAGAIN, and again after a pause, until the path stays full: bytes still on
    # their way (in the agent, or in the kernel's queues) free space late on either path.
    for _ in range(50):
        progress = False
        while sent <= (64 << 20):
            try:
                sent += c.send(b"z" * 65536)
                progress = True
            except BlockingIOError:
                break
        if not progress:
            break
        time.sleep(0.05)
    p("nb-fill-blocked", sent < (64 << 20), "poll-out", "OUT" in pollmask(c))
    total = 0
    while total < sent:
        total += len(a.recv(1 << 20))
    r = select.select([], [c], [], 5)
    p("nb-fill-writable-again", bool(r[1]), total == sent)
    c.close(); a.close()


def t_accept_queue():
    l = listener(backlog=4)
    cs = []
    for i in range(3):
        c = socket.create_connection(l.getsockname(), timeout=5)
        c.sendall(b"n%d" % i)
        cs.append(c)
    settle()
    l.setblocking(False)
    order = []
    for _ in range(3):
        a, _ = l.accept()
        order.append(a.recv(10).decode())
        a.close()
    p("accept-order", order)
    tryit("accept-empty", lambda: l.accept())
    # A connection that closed before accept still delivers its bytes and EOF.
    c = socket.create_connection(l.getsockname(), timeout=5)
    c.sendall(b"early")
    c.close()
    settle()
    a, _ = l.accept()
    a.settimeout(5)
    p("closed-before-accept", a.recv(10), a.recv(10))
    a.close()
    for c in cs:
        c.close()
    l.close()


def t_options():
    c, a = pair()
    for s, who in ((c, "client"), (a, "accepted")):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        p("opt", who,
          "nodelay", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
          "keepalive", s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
          "rcvbuf", s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
          "sndbuf", s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
          "type", s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE),
          "acceptconn", s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN),
          "error", s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
        info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        p("tcp_info", who, "state", info[0])
    c.sendall(b"after-opts")
    p("opt-data", a.recv(100))
    c.close(); a.close()


def t_ready_order():
    """epoll reports sockets in the order their readiness arose (Linux's ready list), not in fd
    or slot order: requests written on 16 connections in a shuffled order, then one epoll_wait
    (level, edge, oneshot), and again with the writer in another process (issue 12 item 1)."""
    import random
    n = 16
    l = listener(backlog=n)
    cs, accs = [], []
    for _ in range(n):
        c = socket.create_connection(l.getsockname())
        a, _ = l.accept()
        cs.append(c)
        accs.append(a)
    l.close()
    idx = {a.fileno(): i for i, a in enumerate(accs)}
    order = list(range(n))
    random.Random(7).shuffle(order)
    for mode, flags in (("lt", 0), ("et", select.EPOLLET), ("oneshot", select.EPOLLONESHOT)):
        ep = select.epoll()
        for a in accs:
            ep.register(a.fileno(), select.EPOLLIN | flags)
        for i in order:
            cs[i].send(b"r")
            time.sleep(0.003)
        settle()
        got = [idx[fd] for fd, _ in ep.poll(1, n)]
        p("ready-order", mode, "in write order" if got == order else "differs", got == sorted(got))
        for a in accs:
            a.recv(10)
        ep.close()
    # The writer in another process (its own channel under snstack): the order still holds.
    ep = select.epoll()
    for a in accs:
        ep.register(a.fileno(), select.EPOLLIN)
    pid = os.fork()
    if pid == 0:
        for i in order:
            cs[i].send(b"f")
            time.sleep(0.003)
        os._exit(0)
    os.waitpid(pid, 0)
    settle()
    got = [idx[fd] for fd, _ in ep.poll(1, n)]
    p("ready-order", "forked-writer", "in write order" if got == order else "differs")
    ep.close()
    for x in cs + accs:
        x.close()


def main():
    for t in (t_addresses, t_nonblocking_connect, t_fin_and_halfclose, t_reset, t_bulk,
              t_accept_queue, t_options, t_ready_order):
        try:
            t()
        except Exception as e:  # a probe that raises is a difference too
            p(t.__name__, "EXCEPTION", type(e).__name__, en(e) if isinstance(e, OSError) else e)
    print("\n".join(OUT), flush=True)


if __name__ == "__main__":
    main()
