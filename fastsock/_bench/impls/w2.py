"""W2 ping-pong: echo one 4-byte big-endian length-prefixed frame at a time, until EOF."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any, Callable, Optional

from . import aio
from .common import Meter, accept_fastsock, fastsock_api, loop_missing, missing_fastsock, nodelay, run_loop
from .common import recvn as _recvn

MAX_FRAME = 1 << 20
HEADER = struct.Struct(">I")


def _accept(listener: socket.socket) -> socket.socket:
    conn, _ = listener.accept()
    nodelay(conn)
    return conn


def stdlib_naive(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
    conn = _accept(listener)
    meter.start()
    frames = 0
    while True:
        header = _recvn(conn, 4)
        if not header:
            break
        (n,) = struct.unpack(">I", header)
        payload = _recvn(conn, n)
        conn.sendall(struct.pack(">I", len(payload)))
        conn.sendall(payload)
        frames += 1
    meter.stop()
    conn.close()
    return {"ops": frames, "ok": True}


def stdlib_best(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
    """recv_into a preallocated buffer, memoryview slices, one sendall per reply."""
    conn = _accept(listener)
    buf = bytearray(4 + MAX_FRAME)
    view = memoryview(buf)
    recv_into, sendall, unpack_from = conn.recv_into, conn.sendall, HEADER.unpack_from
    meter.start()
    frames = 0
    have = 0  # bytes in buf (a frame never spans more than the buffer)
    while True:
        n = recv_into(view[have:])
        if not n:
            break
        have += n
        start = 0
        while have - start >= 4:
            (size,) = unpack_from(buf, start)
            if size > MAX_FRAME:
                raise ValueError("frame too large")
            end = start + 4 + size
            if end > have:
                break
            sendall(view[start:end])
            frames += 1
            start = end
        if start:
            view[: have - start] = view[start:have]  # memoryview copies with memmove
            have -= start
    meter.stop()
    conn.close()
    return {"ops": frames, "ok": have == 0}


def stdlib_makefile(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
    conn = _accept(listener)
    f = conn.makefile("rb")
    meter.start()
    frames = 0
    while True:
        header = f.read(4)
        if len(header) < 4:
            break
        payload = f.read(HEADER.unpack(header)[0])
        conn.sendall(header + payload)
        frames += 1
    meter.stop()
    f.close()
    conn.close()
    return {"ops": frames, "ok": True}


def fastsock_stream(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
    """Stream.read_frame + write_frame + flush per round trip."""
    fastsock = fastsock_api()
    conn = accept_fastsock(listener)
    nodelay(conn)
    stream = fastsock.Stream(conn, framing=fastsock.LengthPrefix(4, "big"))
    read_frame, write_frame, flush = stream.read_frame, stream.write_frame, stream.flush
    meter.start()
    frames = 0
    while True:
        try:
            payload = read_frame()
        except EOFError:  # IncompleteReadError at end of stream
            break
        write_frame(payload)
        flush()
        frames += 1
    meter.stop()
    conn.close()
    return {"ops": frames, "ok": True}


def asyncio_streams(kind: str) -> Callable[..., dict[str, Any]]:
    def run(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
        async def main() -> int:
            done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                meter.start()
                frames = 0
                try:
                    while True:
                        header = await reader.readexactly(4)
                        payload = await reader.readexactly(int.from_bytes(header, "big"))
                        writer.write(header + payload)
                        await writer.drain()
                        frames += 1
                except asyncio.IncompleteReadError:
                    pass
                meter.stop()
                writer.close()
                done.set_result(frames)

            server = await asyncio.start_server(handle, sock=listener)
            frames = await done
            server.close()
            return frames

        return {"ops": run_loop(kind, main), "ok": True}

    return run


def asyncio_protocol(kind: str) -> Callable[..., dict[str, Any]]:
    def run(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
        async def main() -> int:
            loop = asyncio.get_running_loop()
            done: asyncio.Future[int] = loop.create_future()

            class Echo(asyncio.Protocol):
                frames = 0

                def connection_made(self, transport: Any) -> None:
                    self.transport = transport
                    self.buf = bytearray()
                    meter.start()

                def data_received(self, data: bytes) -> None:
                    buf = self.buf
                    buf += data
                    start, have = 0, len(buf)
                    while have - start >= 4:
                        end = start + 4 + int.from_bytes(buf[start : start + 4], "big")
                        if end > have:
                            break
                        self.transport.write(bytes(buf[start:end]))
                        self.frames += 1
                        start = end
                    if start:
                        del buf[:start]

                def eof_received(self) -> None:
                    meter.stop()
                    done.set_result(self.frames)

            server = await loop.create_server(Echo, sock=listener)
            frames = await done
            server.close()
            return frames

        return {"ops": run_loop(kind, main), "ok": True}

    return run


SERVERS: dict[str, Callable[..., dict[str, Any]]] = {
    "stdlib-naive": stdlib_naive,
    "stdlib-best": stdlib_best,
    "stdlib-makefile": stdlib_makefile,
    "fastsock": fastsock_stream,
    "fastsock-pure": fastsock_stream,
    "asyncio-streams": asyncio_streams("asyncio"),
    "asyncio-protocol": asyncio_protocol("asyncio"),
    "uvloop-streams": asyncio_streams("uvloop"),
    "uvloop-protocol": asyncio_protocol("uvloop"),
}
SERVERS.update(aio.servers("W2"))  # the fastsock.aio rows (issue 12)


def missing(key: str) -> Optional[str]:
    """Why `key` cannot run here, or None."""
    if key in aio.KEYS:
        return aio.missing(key)
    if key.startswith("fastsock"):
        return missing_fastsock("Stream", "LengthPrefix")
    if key.startswith("uvloop"):
        return loop_missing("uvloop")
    return None
