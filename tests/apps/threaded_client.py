#!/usr/bin/env python3
"""Blocking-socket thread stress.

  threaded_client.py server PORT                socketserver.ThreadingTCPServer echo on 127.0.0.1
  threaded_client.py client PORT [THREADS] [N]  THREADS threads, each its own blocking connection
                                                (no Python timeout: plain blocking recv/send),
                                                N request/response round trips of random sizes,
                                                every response verified; prints
                                                "ok threads=T roundtrips=R bytes=B" or "FAIL ..."
"""
import os
import random
import socket
import socketserver
import sys
import threading


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        while True:
            d = s.recv(65536)
            if not d:
                return
            s.sendall(d)


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


def recv_exact(s, n):
    b = bytearray()
    while len(b) < n:
        d = s.recv(n - len(b))
        if not d:
            raise ConnectionError("EOF after %d of %d bytes" % (len(b), n))
        b += d
    return bytes(b)


def worker(port, tid, n, res, errs, start):
    try:
        rnd = random.Random(os.urandom(8))
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start.wait()
        total = 0
        for i in range(n):
            size = rnd.choice((1, rnd.randint(1, 512), rnd.randint(1, 16384)))
            req = rnd.randbytes(size)
            s.sendall(req)
            got = recv_exact(s, size)
            if got != req:
                raise RuntimeError("round trip %d: %d-byte response differs" % (i, size))
            total += size
        s.shutdown(socket.SHUT_WR)
        if s.recv(1) != b"":
            raise RuntimeError("data after the last response")
        s.close()
        res[tid] = (n, total)
    except Exception as e:  # noqa: BLE001 - reported below
        errs.append("thread %d: %s: %s" % (tid, type(e).__name__, e))
        try:
            start.abort()
        except Exception:  # noqa: BLE001
            pass


def main():
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "server":
        with Server(("127.0.0.1", port), Echo) as srv:
            print("listening", port, flush=True)
            srv.serve_forever()
        return 0
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 200
    res, errs = {}, []
    start = threading.Barrier(threads)
    ts = [threading.Thread(target=worker, args=(port, t, n, res, errs, start)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errs or len(res) != threads:
        print("FAIL %d error(s): %s" % (len(errs), "; ".join(errs[:5])))
        return 1
    print("ok threads=%d roundtrips=%d bytes=%d" % (threads, sum(r[0] for r in res.values()),
                                                    sum(r[1] for r in res.values())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
