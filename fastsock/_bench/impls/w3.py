"""W3 pipelined frames: parse every 4-byte big-endian length-prefixed frame, count frames and bytes."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any, Callable, Optional

from . import aio
from .common import Meter, accept_fastsock, fastsock_api, loop_missing, missing_fastsock, run_loop
from .common import recvn as _recvn

BUF = 256 * 1024
HEADER = struct.Struct(">I")


def _result(frames: int, nbytes: int, p: dict[str, Any], clean: bool = True) -> dict[str, Any]:
    ok = clean and frames == p["frames"] and nbytes == p["frames"] * p["payload"]
    return {"ops": frames, "bytes": nbytes, "ok": ok}


def stdlib_naive(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
    conn, _ = listener.accept()
    meter.start()
    frames = nbytes = 0
    while True:
        header = _recvn(conn, 4)
        if not header:
            break
        (n,) = struct.unpack(">I", header)
        payload = _recvn(conn, n)
        frames += 1
        nbytes += len(payload)
    meter.stop()
    conn.close()
    return _result(frames, nbytes, p)


def stdlib_best_frames(conn: socket.socket, limit: Optional[int] = None,
                       buf: Optional[bytearray] = None) -> tuple[int, int, bool]:
    """The one W3 *stdlib best* loop (bench/stream_servers.py runs it too): what a careful
    programmer writes with the stdlib. recv_into a preallocated buffer, parse in place with
    unpack_from, hand every payload on as a memoryview slice (no copy), and move the partial
    frame a read leaves at the end (under one frame) to the front before the next read.
    Reads until EOF, or until the read that completes `limit` frames, into `buf` (a new
    BUF-byte bytearray by default). Returns (frames, payload bytes, whether the input ended
    between frames)."""
    if buf is None:
        buf = bytearray(BUF)
    view = memoryview(buf)
    largest = len(buf) - 4
    recv_into, unpack_from = conn.recv_into, HEADER.unpack_from
    frames = nbytes = 0
    head = tail = 0
    # `while True` + break, not `while frames < limit`: CPython 3.11 specializes a function's
    # bytecode only after unconditional backward jumps (or 8 calls), and a loop whose only
    # backward jumps are conditional runs unspecialized: ~35% more instructions per frame.
    while True:
        if limit is not None and frames >= limit:
            break
        if head:
            view[: tail - head] = view[head:tail]
            tail -= head
            head = 0
        n = recv_into(view[tail:])
        if not n:
            break
        tail += n
        while tail - head >= 4:
            (size,) = unpack_from(buf, head)
            if size > largest:
                raise ValueError("frame too large")
            end = head + 4 + size
            if end > tail:
                break
            payload = view[head + 4 : end]  # the frame handed on, as a zero-copy slice
            frames += 1
            nbytes += len(payload)
            head = end
    return frames, nbytes, head == tail


def stdlib_best(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
    """W3's baseline: stdlib_best_frames over the accepted connection, to EOF."""
    conn, _ = listener.accept()
    buf = bytearray(BUF)  # allocated before the measured window, as every server here does
    meter.start()
    frames, nbytes, clean = stdlib_best_frames(conn, buf=buf)
    meter.stop()
    conn.close()
    return _result(frames, nbytes, p, clean)


def stdlib_makefile(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
    conn, _ = listener.accept()
    f = conn.makefile("rb")
    read, unpack = f.read, HEADER.unpack
    meter.start()
    frames = nbytes = 0
    while True:
        header = read(4)
        if len(header) < 4:
            break
        payload = read(unpack(header)[0])
        frames += 1
        nbytes += len(payload)
    meter.stop()
    f.close()
    conn.close()
    return _result(frames, nbytes, p)


def _stream(conn: Any) -> Any:
    fastsock = fastsock_api()
    return fastsock.Stream(conn, framing=fastsock.LengthPrefix(4, "big"), read_size=BUF)


def fastsock_read_frames(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
    """Every complete frame buffered, from at most one recv per call."""
    stream = _stream(accept_fastsock(listener))
    read_frames = stream.read_frames
    meter.start()
    frames = nbytes = 0
    while True:
        try:
            batch = read_frames(max_frames=1 << 16)
        except EOFError:
            break
        if not batch:  # EOF
            break
        frames += len(batch)
        nbytes += sum(map(len, batch))  # the frames are parsed in C; count them at C speed too
    meter.stop()
    return _result(frames, nbytes, p)


def fastsock_read_frame(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
    stream = _stream(accept_fastsock(listener))
    read_frame = stream.read_frame
    meter.start()
    frames = nbytes = 0
    while True:
        try:
            payload = read_frame()
        except EOFError:
            break
        frames += 1
        nbytes += len(payload)
    meter.stop()
    return _result(frames, nbytes, p)


def asyncio_streams(kind: str) -> Callable[..., dict[str, Any]]:
    def run(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
        async def main() -> tuple[int, int]:
            done: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()

            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                meter.start()
                frames = nbytes = 0
                readexactly = reader.readexactly
                try:
                    while True:
                        header = await readexactly(4)
                        payload = await readexactly(int.from_bytes(header, "big"))
                        frames += 1
                        nbytes += len(payload)
                except asyncio.IncompleteReadError:
                    pass
                meter.stop()
                writer.close()
                done.set_result((frames, nbytes))

            server = await asyncio.start_server(handle, sock=listener, limit=BUF)
            totals = await done
            server.close()
            return totals

        frames, nbytes = run_loop(kind, main)
        return _result(frames, nbytes, p)

    return run


def asyncio_protocol(kind: str) -> Callable[..., dict[str, Any]]:
    def run(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
        async def main() -> tuple[int, int, bool]:
            loop = asyncio.get_running_loop()
            done: asyncio.Future[tuple[int, int, bool]] = loop.create_future()
            unpack_from = HEADER.unpack_from

            class Parser(asyncio.Protocol):
                frames = nbytes = 0

                def connection_made(self, transport: Any) -> None:
                    self.buf = bytearray()
                    meter.start()

                def data_received(self, data: bytes) -> None:
                    buf = self.buf
                    buf += data
                    head, tail = 0, len(buf)
                    frames = nbytes = 0
                    while tail - head >= 4:
                        (size,) = unpack_from(buf, head)
                        end = head + 4 + size
                        if end > tail:
                            break
                        payload = buf[head + 4 : end]  # each frame handed on (one copy, as Stream's)
                        frames += 1
                        nbytes += len(payload)
                        head = end
                    self.frames += frames
                    self.nbytes += nbytes
                    if head:
                        del buf[:head]

                def eof_received(self) -> None:
                    meter.stop()
                    done.set_result((self.frames, self.nbytes, not self.buf))

            server = await loop.create_server(Parser, sock=listener)
            totals = await done
            server.close()
            return totals

        frames, nbytes, clean = run_loop(kind, main)
        return _result(frames, nbytes, p, clean)

    return run


SERVERS: dict[str, Callable[..., dict[str, Any]]] = {
    "stdlib-naive": stdlib_naive,
    "stdlib-best": stdlib_best,
    "stdlib-makefile": stdlib_makefile,
    "fastsock": fastsock_read_frames,
    "fastsock-frame": fastsock_read_frame,
    "fastsock-pure": fastsock_read_frames,
    "asyncio-streams": asyncio_streams("asyncio"),
    "asyncio-protocol": asyncio_protocol("asyncio"),
    "uvloop-streams": asyncio_streams("uvloop"),
    "uvloop-protocol": asyncio_protocol("uvloop"),
}
SERVERS.update(aio.servers("W3"))  # the fastsock.aio rows (issue 12)


def missing(key: str) -> Optional[str]:
    """Why `key` cannot run here, or None."""
    if key in aio.KEYS:
        return aio.missing(key)
    if key.startswith("fastsock"):
        return missing_fastsock("Stream", "LengthPrefix")
    if key.startswith("uvloop"):
        return loop_missing("uvloop")
    return None
