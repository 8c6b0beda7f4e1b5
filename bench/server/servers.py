"""The servers of bench/server/measure.py, one per process: `python servers.py <workload> <kind>`
prints "PORT <n>" once it listens on 127.0.0.1 and serves until killed. It pins itself to
the CPU in $BENCH_CPU (default 0).

W5: frames with a 4-byte big-endian length prefix, one reply frame (the same payload) per
request frame. W4: echo of whatever arrives (1 KiB messages, one in flight). The hand-written
W5 servers share `answer` (as fastsock bench's W5 servers do): each request's payload is cut
out as a bytes object, as a handler would get it, and a reply frame is built around it; the
replies of one read leave in one send / transport.write.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import socket
import struct
import sys

HEADER = struct.Struct(">I")


def answer(data, out: list) -> int:
    """Append the reply frames (header, payload) of every complete frame of `data` to `out`;
    return the offset after the last complete frame."""
    unpack_from, pack, append = HEADER.unpack_from, HEADER.pack, out.append
    end = len(data)
    pos = 0
    while True:
        if end - pos < 4:
            break
        (size,) = unpack_from(data, pos)
        stop = pos + 4 + size
        if stop > end:
            break
        payload = bytes(data[pos + 4:stop])
        append(pack(len(payload)))
        append(payload)
        pos = stop
    return pos


def listener() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


def announce(sock: socket.socket) -> None:
    print("PORT", sock.getsockname()[1], flush=True)


# -- fastsock.Server -------------------------------------------------------------------------


def fastsock_server(workload: str, kind: str) -> None:
    import fastsock

    sock = listener()
    if workload == "w5":
        if kind.endswith("batch"):
            def handler(conn, frames):
                return frames

            server = fastsock.Server(handler, framing=fastsock.LengthPrefix(4), batch=True)
        else:
            def handler(conn, frame):
                return frame

            server = fastsock.Server(handler, framing=fastsock.LengthPrefix(4))
    else:
        def handler(conn, data):
            conn.write(data)
            return len(data)

        server = fastsock.Server(handler)
    server.listen(sock=sock)
    announce(sock)
    server.serve_forever()


# -- stdlib selectors ------------------------------------------------------------------------


def selectors_server(workload: str) -> None:
    sock = listener()
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ, None)
    bufs: dict[socket.socket, bytearray] = {}
    pending: dict[socket.socket, bytes] = {}
    announce(sock)
    while True:
        for key, mask in sel.select():
            s = key.fileobj
            if key.data is None:
                while True:
                    try:
                        c, _ = s.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    bufs[c] = bytearray()
                    sel.register(c, selectors.EVENT_READ, 1)
                continue
            if mask & selectors.EVENT_WRITE:
                rest = pending.pop(s)
                n = s.send(rest)
                if n < len(rest):
                    pending[s] = rest[n:]
                else:
                    sel.modify(s, selectors.EVENT_READ, 1)
                continue
            try:
                data = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(s)
                s.close()
                bufs.pop(s, None)
                pending.pop(s, None)
                continue
            if workload == "w4":
                out = data
            else:
                buf = bufs[s]
                buf += data
                replies: list = []
                del buf[:answer(buf, replies)]
                if not replies:
                    continue
                out = b"".join(replies)
            if s in pending:
                pending[s] += out
                continue
            n = s.send(out)
            if n < len(out):
                pending[s] = out[n:]
                sel.modify(s, selectors.EVENT_READ | selectors.EVENT_WRITE, 1)


# -- asyncio / uvloop Protocol ---------------------------------------------------------------


def protocol_server(workload: str, loop_kind: str) -> None:
    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.t = transport

        def data_received(self, data):
            self.t.write(data)

    class Frames(asyncio.Protocol):
        def connection_made(self, transport):
            self.t = transport
            self.buf = bytearray()

        def data_received(self, data):
            buf = self.buf
            buf += data
            replies: list = []
            del buf[:answer(buf, replies)]
            if replies:
                self.t.write(b"".join(replies))

    async def main():
        sock = listener()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo if workload == "w4" else Frames, sock=sock)
        announce(sock)
        await server.serve_forever()

    if loop_kind == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def main() -> None:
    workload, kind = sys.argv[1], sys.argv[2]
    os.sched_setaffinity(0, {int(os.environ.get("BENCH_CPU", "0"))})
    if kind.startswith("fastsock"):
        fastsock_server(workload, kind)
    elif kind == "selectors":
        selectors_server(workload)
    elif kind.endswith("protocol"):
        protocol_server(workload, kind.split("-")[0])
    else:
        raise SystemExit(f"unknown server kind {kind!r}")


if __name__ == "__main__":
    main()
