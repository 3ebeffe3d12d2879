#!/usr/bin/env python3
"""memcached text-protocol load: THREADS threads, each on its own connection, do N set/get pairs
with random keys' values (1 B .. 16 KiB, random bytes) and verify every get byte-exact.

  mc_load.py PORT [THREADS] [N]      -> prints "ok sets=S gets=G hits=H" or "FAIL ..." (exit 1)
  mc_load.py PORT --stats            -> prints the server's `stats` as "name value" lines
"""
import os
import random
import socket
import sys
import threading


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def _fill(self):
        d = self.s.recv(65536)
        if not d:
            raise ConnectionError("server closed the connection")
        self.buf += d

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        l, self.buf = self.buf.split(b"\r\n", 1)
        return l

    def exact(self, n):
        while len(self.buf) < n:
            self._fill()
        d, self.buf = self.buf[:n], self.buf[n:]
        return d

    def set(self, k, v):
        self.s.sendall(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(v), v))
        r = self.line()
        if r != b"STORED":
            raise RuntimeError("set %r: %r" % (k, r))

    def get(self, k):
        self.s.sendall(b"get %s\r\n" % k)
        h = self.line()
        if h == b"END":
            return None
        p = h.split()
        if len(p) != 4 or p[0] != b"VALUE" or p[1] != k:
            raise RuntimeError("get %r: bad header %r" % (k, h))
        v = self.exact(int(p[3]) + 2)
        if v[-2:] != b"\r\n":
            raise RuntimeError("get %r: value not terminated" % k)
        end = self.line()
        if end != b"END":
            raise RuntimeError("get %r: %r instead of END" % (k, end))
        return v[:-2]


def worker(port, tid, n, res, errs):
    try:
        rnd = random.Random(os.urandom(8))
        c = Conn(port)
        sets = gets = hits = 0
        for i in range(n):
            k = b"t%d-k%d-%d" % (tid, i, rnd.randrange(1 << 30))
            v = rnd.randbytes(rnd.choice((1, rnd.randrange(1, 1024), rnd.randrange(1, 16384))))
            c.set(k, v)
            sets += 1
            g = c.get(k)
            gets += 1
            if g is None:
                raise RuntimeError("thread %d: key %r missing right after set" % (tid, k))
            if g != v:
                raise RuntimeError("thread %d: key %r: %d bytes back, %d set, differ" % (tid, k, len(g), len(v)))
            hits += 1
        c.s.close()
        res[tid] = (sets, gets, hits)
    except Exception as e:  # noqa: BLE001 - reported below
        errs.append("thread %d: %s: %s" % (tid, type(e).__name__, e))


def main():
    port = int(sys.argv[1])
    if len(sys.argv) > 2 and sys.argv[2] == "--stats":
        c = Conn(port)
        c.s.sendall(b"stats\r\n")
        while True:
            l = c.line()
            if l == b"END":
                break
            p = l.decode().split()
            print(p[1], p[2])
        return 0
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
    res, errs = {}, []
    ts = [threading.Thread(target=worker, args=(port, t, n, res, errs)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errs or len(res) != threads:
        print("FAIL %d error(s): %s" % (len(errs), "; ".join(errs[:5])))
        return 1
    s = [sum(r[i] for r in res.values()) for i in range(3)]
    print("ok sets=%d gets=%d hits=%d" % tuple(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
