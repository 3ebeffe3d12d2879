#!/usr/bin/env python3
"""fork/exec probe: prints deterministic lines; must match between kernel sockets and snstack.

1. prefork: a listener created before fork() is accepted from by 3 children and the parent.
2. accept-then-fork: the parent accepts, forks, closes its copy; the child serves (with bytes that
   arrived before the fork still readable in the child).
3. exec: a child execs a fresh python that takes over an inherited listener (fd number in argv)
   and serves one connection.
4. daemon-style: a child forks a grandchild and exits at once; the grandchild still serves.
6. spawn: an accepted connection becomes stdin/stdout of a shell started with os.posix_spawn
   (file actions dup2), with subprocess.Popen (vfork + execve in CPython), and with execl()
   from a forked child (called through ctypes); the parent closes its copy; the client gets the
   shell's answer.
5. shared readers: parent and child both keep an accepted connection and take turns reading it
   (bytes that arrived before the fork and sat unread in the parent are read by the child, via
   poll() and then a blocking recv; after the child exits the parent reads again).
"""
import os, socket, sys, time


def p(*a):
    print(" ".join(str(x) for x in a), flush=True)


def serve_one(l, tag):
    c, _ = l.accept()
    data = b""
    while not data.endswith(b"\n"):
        b = c.recv(100)
        if not b:
            break
        data += b
    c.sendall(tag.encode() + b":" + data)
    c.close()


def client(port, msg):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(msg)
    out = b""
    while True:
        b = s.recv(100)
        if not b:
            break
        out += b
    s.close()
    return out


def t_prefork():
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("127.0.0.1", 0))
    l.listen(64)
    port = l.getsockname()[1]
    kids = []
    for i in range(3):
        pid = os.fork()
        if pid == 0:
            try:
                for _ in range(4):
                    serve_one(l, "child")
            finally:
                os._exit(0)
        kids.append(pid)
    # the parent accepts too
    got = []
    import threading
    t = threading.Thread(target=lambda: [serve_one(l, "parent") for _ in range(4)])
    t.start()
    for i in range(16):
        got.append(client(port, b"hello %d\n" % i))
    t.join(20)
    ok = all(x.endswith(b"hello %d\n" % i) for i, x in enumerate(got))
    tags = sorted(set(x.split(b":")[0].decode() for x in got))
    for k in kids:
        _, st = os.waitpid(k, 0)
        ok = ok and st == 0
    p("prefork", len(got), ok, tags)
    l.close()


def t_accept_then_fork():
    l = socket.socket()
    l.bind(("127.0.0.1", 0))
    l.listen(8)
    port = l.getsockname()[1]
    c = socket.create_connection(("127.0.0.1", port))
    a, _ = l.accept()
    c.sendall(b"early\n")
    time.sleep(0.2)
    pid = os.fork()
    if pid == 0:
        try:
            l.close()
            data = b""
            while data.count(b"\n") < 2:
                b = a.recv(100)
                if not b:
                    break
                data += b
            a.sendall(b"child saw " + data.replace(b"\n", b"|"))
            a.close()
        finally:
            os._exit(0)
    a.close()
    c.sendall(b"late\n")
    out = b""
    while True:
        b = c.recv(100)
        if not b:
            break
        out += b
    _, st = os.waitpid(pid, 0)
    p("accept-then-fork", out.decode(), st)
    c.close()
    l.close()


EXEC_CHILD = r'''
import socket, sys
l = socket.socket(fileno=int(sys.argv[1]))
c, _ = l.accept()
d = c.recv(100)
c.sendall(b"exec:" + d)
c.close()
'''


def t_exec():
    l = socket.socket()
    l.bind(("127.0.0.1", 0))
    l.listen(8)
    port = l.getsockname()[1]
    fd = l.fileno()
    os.set_inheritable(fd, True)
    pid = os.fork()
    if pid == 0:
        try:
            os.execv(sys.executable, [sys.executable, "-c", EXEC_CHILD, str(fd)])
        finally:
            os._exit(3)
    l.close()
    time.sleep(0.3)
    out = client(port, b"ping\n")
    _, st = os.waitpid(pid, 0)
    p("exec", out.decode().strip(), st)


def t_daemon():
    l = socket.socket()
    l.bind(("127.0.0.1", 0))
    l.listen(8)
    port = l.getsockname()[1]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        if os.fork() == 0:
            try:
                os.close(r)
                os.write(w, b"x")
                serve_one(l, "grandchild")
            finally:
                os._exit(0)
        os._exit(0)
    os.waitpid(pid, 0)
    os.close(w)
    os.read(r, 1)
    l.close()
    time.sleep(0.2)
    p("daemon", client(port, b"deep\n").decode().strip())


def readline(c):
    data = b""
    while not data.endswith(b"\n"):
        b = c.recv(1)
        if not b:
            break
        data += b
    return data.decode().strip()


def t_shared_readers():
    import select

    l = socket.socket()
    l.bind(("127.0.0.1", 0))
    l.listen(8)
    cl = socket.create_connection(l.getsockname(), timeout=10)
    c, _ = l.accept()
    cl.sendall(b"one\n")
    first = readline(c)
    cl.sendall(b"two\n")
    time.sleep(0.2)  # "two" is now queued for the parent, unread
    r, w = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            cl.close()
            l.close()
            os.close(r)
            os.close(w2)
            ready = select.select([c], [], [], 10)[0]
            got = [readline(c) if ready else "poll-timeout"]
            os.write(w, b"x")  # ask for "three"
            got.append(readline(c))
            c.sendall(("child:" + ",".join(got) + "\n").encode())
        finally:
            os._exit(0)
    os.close(w)
    os.close(w2)
    os.read(r, 1)
    cl.sendall(b"three\n")
    os.waitpid(pid, 0)
    cl.sendall(b"four\n")
    last = readline(c)
    c.sendall(("parent:%s,%s\n" % (first, last)).encode())
    c.close()
    l.close()
    out = b""
    while out.count(b"\n") < 2:
        b = cl.recv(100)
        if not b:
            break
        out += b
    cl.close()
    p("shared-readers", out.decode().replace("\n", " ").strip())


def t_spawn():
    import ctypes, subprocess

    SH = "read l; echo %s:$l"
    l = socket.socket()
    l.bind(("127.0.0.1", 0))
    l.listen(8)
    for how in ("posix_spawn", "subprocess", "execl"):
        cl = socket.create_connection(l.getsockname(), timeout=10)
        c, _ = l.accept()
        fd = c.fileno()
        if how == "posix_spawn":
            pid = os.posix_spawn(
                "/bin/sh",
                ["sh", "-c", SH % how],
                os.environ,
                file_actions=[(os.POSIX_SPAWN_DUP2, fd, 0), (os.POSIX_SPAWN_DUP2, fd, 1)],
            )
        elif how == "subprocess":
            pid = subprocess.Popen(["/bin/sh", "-c", SH % how], stdin=fd, stdout=fd).pid
        else:
            pid = os.fork()
            if pid == 0:
                try:
                    os.dup2(fd, 0)
                    os.dup2(fd, 1)
                    libc = ctypes.CDLL(None)
                    a = [ctypes.c_char_p(x) for x in (b"/bin/sh", b"sh", b"-c", (SH % how).encode())]
                    libc.execl(*a, ctypes.c_char_p(None))
                finally:
                    os._exit(127)
        c.close()
        cl.sendall(b"hi\n")
        out = b""
        while True:
            b = cl.recv(100)
            if not b:
                break
            out += b
        cl.close()
        _, st = os.waitpid(pid, 0)
        p("spawn", how, out.decode().strip(), st)
    l.close()


if __name__ == "__main__":
    for t in (t_prefork, t_accept_then_fork, t_exec, t_daemon, t_shared_readers, t_spawn):
        try:
            t()
        except Exception as e:
            p("EXCEPTION", t.__name__, type(e).__name__, e)
