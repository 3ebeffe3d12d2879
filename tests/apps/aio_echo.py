#!/usr/bin/env python3
"""asyncio TCP echo.

  aio_echo.py server PORT                 echo server on 127.0.0.1:PORT (runs until killed)
  aio_echo.py client PORT [CONNS] [N]     CONNS concurrent connections x N echoes of random sizes
                                          (1 B .. 64 KiB), each verified byte-exact; prints
                                          "ok conns=C echoes=E bytes=B" or "FAIL ..." (exit 1)
"""
import asyncio
import os
import random
import sys


async def handle(reader, writer):
    try:
        while True:
            d = await reader.read(65536)
            if not d:
                break
            writer.write(d)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def server(port):
    srv = await asyncio.start_server(handle, "127.0.0.1", port, backlog=512)
    print("listening", port, flush=True)
    async with srv:
        await srv.serve_forever()


async def one(port, cid, n, stats):
    rnd = random.Random(os.urandom(8))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for i in range(n):
        size = rnd.choice((1, rnd.randint(1, 1024), rnd.randint(1, 65536)))
        data = rnd.randbytes(size)
        writer.write(data)
        await writer.drain()
        got = await reader.readexactly(size)
        if got != data:
            diff = next(j for j in range(size) if got[j] != data[j])
            raise RuntimeError("conn %d echo %d: %d bytes differ from byte %d" % (cid, i, size, diff))
        stats[0] += 1
        stats[1] += size
    writer.write_eof()
    rest = await reader.read()
    if rest:
        raise RuntimeError("conn %d: %d unexpected bytes after the last echo" % (cid, len(rest)))
    writer.close()
    await writer.wait_closed()


async def client(port, conns, n):
    stats = [0, 0]
    res = await asyncio.gather(*(one(port, c, n, stats) for c in range(conns)), return_exceptions=True)
    errs = [r for r in res if isinstance(r, BaseException)]
    if errs:
        print("FAIL %d of %d connections failed; first: %s: %s" % (len(errs), conns, type(errs[0]).__name__, errs[0]))
        return 1
    if stats[0] != conns * n:
        print("FAIL %d echoes, expected %d" % (stats[0], conns * n))
        return 1
    print("ok conns=%d echoes=%d bytes=%d" % (conns, stats[0], stats[1]))
    return 0


def main():
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "server":
        asyncio.run(server(port))
        return 0
    conns = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 50
    return asyncio.run(client(port, conns, n))


if __name__ == "__main__":
    sys.exit(main())
