#!/usr/bin/env python3
"""Errors from the peer reaching a sender, line by line (issue 12 item 3; pitfalls.md 15).

For each way the peer goes (close with unread data, SO_LINGER 0, the peer process killed with
bytes unread) and each way of sending (send, sendmsg, writev, sendfile, splice), after the peer is
gone: the results of a few sends in a row (the first gets ECONNRESET, later ones EPIPE, as
Linux gives them), SO_ERROR afterwards, and whether SIGPIPE came. Then a sender blocked in
send / sendfile when the peer resets must wake with ECONNRESET or EPIPE. Run on kernel sockets and under
snstack (tests/integration/18-peer-errors-diff.sh): the lines must be the same.
"""
import errno
import os
import signal
import socket
import struct
import sys
import tempfile
import threading
import time

pipes = []


from probe import en, p, pair  # noqa: E402 - beside this script


fd, path = tempfile.mkstemp()
os.unlink(path)
os.write(fd, os.urandom(64 << 10))


def via_send(c):
    return c.send(b"y" * 1000)


def via_sendmsg(c):
    return c.sendmsg([b"y" * 500, b"z" * 500])


def via_writev(c):
    return os.writev(c.fileno(), [b"y" * 500, b"z" * 500])


def via_sendfile(c):
    return os.sendfile(c.fileno(), fd, 0, 8192)


def via_splice(c):
    r, w = os.pipe()
    os.write(w, b"s" * 1000)
    try:
        return os.splice(r, c.fileno(), 1000)
    finally:
        os.close(r)
        os.close(w)


SENDERS = [("send", via_send), ("sendmsg", via_sendmsg), ("writev", via_writev),
           ("sendfile", via_sendfile), ("splice", via_splice)]


def close_unread(a):
    a.close()


def linger0(a):
    a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    a.close()


def killed(a):
    # The accepted socket lives only in a child process, which dies with the bytes unread.
    pid = os.fork()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    a.close()
    time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


PEERS = [("close-unread", close_unread), ("linger0", linger0), ("killed", killed)]

sigs = []
signal.signal(signal.SIGPIPE, lambda *x: sigs.append(1))


def run(peer, how, send):
    c, a = pair()
    c.sendall(b"x" * 100)  # never read by the peer
    time.sleep(0.05)
    how(a)
    time.sleep(0.3)  # the reset has arrived (and, under snstack, reached the agent)
    del sigs[:]
    res = []
    for _ in range(4):
        try:
            send(c)
            res.append("ok")
        except OSError as e:
            res.append(en(e))
        time.sleep(0.02)
    err = c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    p(peer, "results", " ".join(res), "so_error", errno.errorcode.get(err, err),
      "sigpipe", len(sigs) > 0)
    c.close()


def reset_while(c, a, body):
    """Runs `body()` on another thread, resets the connection from the peer's side half a
    second later, and returns what `body` returned or the errno name it raised."""
    got = []

    def run():
        try:
            got.append(body())
        except OSError as e:
            got.append(en(e))
    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.5)
    linger0(a)
    t.join(10)
    if not got:
        p("still blocked after the reset")
        os._exit(1)
    return got[0]


def blocked(name, fill):
    """A sender blocked on a full buffer wakes with the peer's reset."""
    c, a = pair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

    def forever():
        while True:
            fill(c)
    got = reset_while(c, a, forever)
    # Which of ECONNRESET or EPIPE depends on whether the blocked call had queued bytes when the
    # reset came (a partial count, the error for the next call), so on the buffer sizes, which
    # differ between the kernel's socket and the agent's streams: the line says it woke with one.
    p("blocked", name, "woke with an error" if got in ("ECONNRESET", "EPIPE") else got)
    c.close()


def partial():
    """A send larger than every buffer, blocked with bytes queued when the peer resets: it
    returns the partial count, and the error waits for the next call (Linux's tcp_sendmsg)."""
    c, a = pair()
    big = b"p" * (32 << 20)
    got = reset_while(c, a, lambda: c.send(big))
    first = "partial" if isinstance(got, int) and 0 < got < len(big) else got
    try:
        c.send(b"q")
        nxt = "ok"
    except OSError as e:
        nxt = en(e)
    p("blocked-partial send", first, "then", nxt)
    c.close()


for peer, how in PEERS:
    for name, send in SENDERS:
        run(peer + " " + name, how, send)
partial()
blocked("send", lambda c: c.send(b"z" * 65536))
blocked("sendfile", lambda c: os.sendfile(c.fileno(), fd, 0, 65536))
os.close(fd)
