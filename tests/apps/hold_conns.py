#!/usr/bin/env python3
"""hold_conns.py HOST PORT N [TIMEOUT_S] [BATCH]: opens N TCP connections to HOST:PORT (non-blocking
connects, at most BATCH (default 1000) in flight at a time), sends one HTTP/1.1 keepalive
GET /hello on each and reads the 200 answer, then keeps all N connections open and idle until
SIGTERM/SIGINT (then closes them and exits 0).

Prints `connected N`, `served N` and then `held N` (flushed) once every connection was accepted
and answered; exits 1 early (printing what failed) when not all of them were. Plain kernel
sockets: the unmodified peer used by ci/bench-engines.sh for its 1k/10k idle-connection
scenarios (tests/apps/many_conns.py opens them all at once and closes them after one request)."""
import resource
import selectors
import signal
import socket
import sys
import time

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 120.0
batch = int(sys.argv[5]) if len(sys.argv) > 5 else 1000
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, n + 100)), hard))

stop = False


def on_signal(_sig, _frm):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)

deadline = time.time() + timeout
sel = selectors.DefaultSelector()
socks = []
failed = {}
t0 = time.time()
while len(socks) < n and time.time() < deadline:
    pending = set()
    for _ in range(min(batch, n - len(socks) - len(failed))):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((host, port))
        sel.register(s, selectors.EVENT_WRITE)
        pending.add(s)
    while pending and time.time() < deadline:
        for key, _ in sel.select(timeout=1.0):
            s = key.fileobj
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            sel.unregister(s)
            pending.discard(s)
            if err:
                failed[s] = err
                s.close()
            else:
                socks.append(s)
    if failed or pending:
        break
print(f"connected {len(socks)} in {time.time() - t0:.1f} s", flush=True)
if failed:
    print(f"failed {len(failed)} errnos {sorted(set(failed.values()))}", flush=True)
if len(socks) != n:
    sys.exit(1)

req = f"GET /hello HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
bufs = {}
for s in socks:
    s.send(req)
    sel.register(s, selectors.EVENT_READ)
    bufs[s] = b""
served = 0
bad = 0
while served + bad < n and time.time() < deadline:
    for key, _ in sel.select(timeout=1.0):
        s = key.fileobj
        try:
            d = s.recv(65536)
        except BlockingIOError:
            continue
        except OSError as e:
            d = b""
            bufs[s] += f"<{e.__class__.__name__}>".encode()
        bufs[s] += d
        if (b"\r\n\r\n" in bufs[s] and bufs[s].endswith(b"hello\n")) or not d:
            sel.unregister(s)
            if bufs[s].startswith(b"HTTP/1.1 200") and d:
                served += 1
            else:
                bad += 1
                if bad <= 5:
                    print(f"bad answer: {bufs[s][:80]!r}", flush=True)
print(f"served {served} in {time.time() - t0:.1f} s", flush=True)
if served != n:
    sys.exit(1)
print(f"held {n}", flush=True)
while not stop:
    time.sleep(0.5)
for s in socks:
    s.close()
sys.exit(0)
