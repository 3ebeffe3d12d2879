#!/usr/bin/env python3
"""pitfalls.md 6: fork while other threads are inside socket calls (holding any lock the library
takes). 4 threads keep echoing over offloaded connections and waiting in epoll; the main thread
forks 40 times; each child must write on an inherited connection and make a round trip on a new
one, then exit, all within a deadline. Prints deterministic lines (same on kernel sockets and
under snstack). (The child does not read the inherited connection while the parent keeps it:
reading one connection from two processes is a documented limit, docs/fork-model.md.)"""
import os, select, socket, sys, threading, time

srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(128)
port = srv.getsockname()[1]
stop = threading.Event()


def echo_server():
    ep = select.epoll()
    ep.register(srv, select.EPOLLIN)
    conns = {}
    while not stop.is_set():
        for fd, ev in ep.poll(0.05):
            if fd == srv.fileno():
                c, _ = srv.accept()
                c.setblocking(False)
                conns[c.fileno()] = c
                ep.register(c, select.EPOLLIN)
            else:
                c = conns[fd]
                try:
                    d = c.recv(65536)
                except BlockingIOError:
                    continue
                if not d:
                    ep.unregister(c)
                    c.close()
                    del conns[fd]
                else:
                    c.sendall(d)


def pinger(n):
    s = socket.create_connection(("127.0.0.1", port))
    i = 0
    while not stop.is_set():
        m = b"t%d-%d\n" % (n, i)
        s.sendall(m)
        got = b""
        while len(got) < len(m):
            try:
                b = s.recv(100)
            except ConnectionResetError:
                b = b""  # the echo server closed with our bytes unread (shutdown)
            if not b:
                # The echo server stops first at shutdown: its end of stream is ours too.
                assert stop.is_set(), "echo connection closed while running"
                s.close()
                return
            got += b
        assert got == m
        i += 1
    s.close()


threads = [threading.Thread(target=echo_server)] + [threading.Thread(target=pinger, args=(i,)) for i in range(3)]
for t in threads:
    t.start()
time.sleep(0.3)
shared = socket.create_connection(("127.0.0.1", port))
ok = 0
for k in range(40):
    pid = os.fork()
    if pid == 0:
        # Child: only this thread exists. Use the inherited connection and a new one.
        try:
            shared.sendall(b"child%d\n" % k)
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"new\n")
            r = s.recv(100)
            s.close()
            os._exit(0 if r == b"new\n" else 1)
        except BaseException:
            os._exit(2)
    # parent: wait with a deadline
    deadline = time.time() + 20
    while True:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            ok += st == 0
            break
        if time.time() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            print("child", k, "hung")
            break
        time.sleep(0.01)
# The parent still owns the shared connection: the children's lines came back to it, in order.
shared.settimeout(10)
want = b"".join(b"child%d\n" % k for k in range(40))
got = b""
while len(got) < len(want):
    b = shared.recv(65536)
    if not b:
        break
    got += b
print("shared connection intact", got == want)
stop.set()
for t in threads:
    t.join(10)
print("forks", 40, "ok", ok)
