"""Helpers the line-by-line probes share (peererr.py, urgent.py): printing, errno names, and a
connected pair over 127.0.0.1."""
import errno
import socket


def p(*a):
    print(*a, flush=True)


def en(e):
    return errno.errorcode.get(e.errno, str(e.errno))


def pair():
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)
    c = socket.create_connection(ls.getsockname())
    a, _ = ls.accept()
    ls.close()
    return c, a
