#!/usr/bin/env python3
"""Opens N TCP connections to HOST:PORT at once (non-blocking connects, nothing sent until every
one is established), then sends one HTTP/1.1 GET /hello on each and reads the answers.

Prints `connected N`, `served N` and exits 0 only when all N were accepted and answered with
200. Plain kernel sockets: this is the unmodified peer of tests/integration/45-*.sh."""
import resource
import selectors
import socket
import sys
import time

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 60.0
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, n + 100)), hard))

sel = selectors.DefaultSelector()
socks = []
for _ in range(n):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex((host, port))
    sel.register(s, selectors.EVENT_WRITE)
    socks.append(s)

deadline = time.time() + timeout
connected = set()
failed = {}
while len(connected) + len(failed) < n and time.time() < deadline:
    for key, _ in sel.select(timeout=1.0):
        s = key.fileobj
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        sel.unregister(s)
        if err:
            failed[s] = err
        else:
            connected.add(s)
print(f"connected {len(connected)}", flush=True)
if failed:
    print(f"failed {len(failed)} errnos {sorted(set(failed.values()))}", flush=True)
if len(connected) != n:
    sys.exit(1)

req = f"GET /hello HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
bufs = {}
for s in socks:
    s.send(req)
    sel.register(s, selectors.EVENT_READ)
    bufs[s] = b""
served = 0
while served < n and time.time() < deadline:
    for key, _ in sel.select(timeout=1.0):
        s = key.fileobj
        try:
            d = s.recv(65536)
        except BlockingIOError:
            continue
        bufs[s] += d
        if b"\r\n\r\n" in bufs[s] and bufs[s].endswith(b"hello\n") or not d:
            sel.unregister(s)
            if bufs[s].startswith(b"HTTP/1.1 200"):
                served += 1
            else:
                print(f"bad answer: {bufs[s][:80]!r}", flush=True)
print(f"served {served}", flush=True)
for s in socks:
    s.close()
sys.exit(0 if served == n else 1)
