"""Client for tests/integration/35-offload-rules.sh.

rules_client.py HOST PORT [epoll] [bind=LPORT]: sets TCP_NODELAY and SO_RCVBUF before connect, GETs /hello,
then prints one line: `owner=NAME nodelay=N rcvbuf=N body=hello`, where NAME is the process
the kernel says owns the connection's local end (`ss -p`): this client itself when its socket is
a kernel socket, snstack-agent when it is offloaded. With `epoll`, the socket is non-blocking
and registered in an epoll set before connect; the connect, the request and the reply all wait
on that registration (it must follow the socket to the kernel when a rule moves it). With
`bind=LPORT`, the socket binds 127.0.0.1:LPORT before connect.
"""
import os
import re
import select
import socket
import subprocess
import sys

host, port = sys.argv[1], int(sys.argv[2])
use_epoll = "epoll" in sys.argv[3:]
bind = [int(a[5:]) for a in sys.argv[3:] if a.startswith("bind=")]
s = socket.socket()
if bind:
    s.bind(("127.0.0.1", bind[0]))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 100000)
req = b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
resp = b""
if use_epoll:
    s.setblocking(False)
    ep = select.epoll()
    ep.register(s.fileno(), select.EPOLLOUT)
    try:
        s.connect((host, port))
    except BlockingIOError:
        pass
    ev = ep.poll(5)
    assert ev and ev[0][1] & select.EPOLLOUT, f"no EPOLLOUT after connect: {ev}"
    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    assert err == 0, f"connect failed: {os.strerror(err)}"
    s.send(req)
    ep.modify(s.fileno(), select.EPOLLIN)
    while True:
        ev = ep.poll(5)
        assert ev, "no EPOLLIN for the reply"
        chunk = s.recv(4096)
        if not chunk:
            break
        resp += chunk
else:
    s.connect((host, port))
    s.sendall(req)
lport = s.getsockname()[1]
env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
ss = subprocess.run(["ss", "-Htnp", f"sport = :{lport}"], capture_output=True, text=True, env=env).stdout
m = re.search(r'users:\(\("([^"]+)"', ss)
owner = m.group(1) if m else "none"
if not use_epoll:
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        resp += chunk
nodelay = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
rcvbuf = s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
body = resp.split(b"\r\n\r\n", 1)[-1].strip().decode()
print(f"owner={owner} nodelay={nodelay} rcvbuf={rcvbuf} body={body}")
