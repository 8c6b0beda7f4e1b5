"""W2/W3 server loops for fastsock.Stream and the stdlib baselines (importable, no pytest).

Each W3 function takes a connected socket, parses `n_frames` frames with a 4-byte big-endian
length prefix, and returns (frames, payload_bytes). Each W2 function echoes `rounds` frames.
W3's stdlib best is the benchmark runner's own (fastsock/_bench/impls/w3.py), so both measure
the same baseline.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from types import ModuleType
from typing import Any

from fastsock._bench.impls.w3 import stdlib_best_frames

HEADER = struct.Struct(">I")


# -- W3: pipelined frames --------------------------------------------------------------

def w3_stream_read_frames(impl: ModuleType, sock: socket.socket, n_frames: int) -> tuple[int, int]:
    """fastsock.Stream: loop over read_frames(), counting frames and payload bytes."""
    stream = impl.Stream(sock, framing=impl.LengthPrefix(), read_size=256 * 1024)
    frames = total = 0
    read_frames = stream.read_frames
    while frames < n_frames:
        batch = read_frames()
        if not batch:
            break
        frames += len(batch)
        total += sum(map(len, batch))
    return frames, total


def w3_stream_read_frame(impl: ModuleType, sock: socket.socket, n_frames: int) -> tuple[int, int]:
    """fastsock.Stream: one read_frame() call per frame."""
    stream = impl.Stream(sock, framing=impl.LengthPrefix(), read_size=256 * 1024)
    read_frame = stream.read_frame
    total = 0
    for _ in range(n_frames):
        total += len(read_frame())
    return n_frames, total


def w3_stdlib_best(sock: socket.socket, n_frames: int) -> tuple[int, int]:
    """stdlib best: the runner's W3 baseline (fastsock._bench.impls.w3.stdlib_best_frames),
    stopped after n_frames."""
    frames, total, _ = stdlib_best_frames(sock, n_frames)
    return frames, total


def w3_stdlib_naive(sock: socket.socket, n_frames: int) -> tuple[int, int]:
    """The HOWTO's loops: recv until n bytes, struct.unpack the header."""
    def recv_n(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    total = 0
    for _ in range(n_frames):
        (size,) = HEADER.unpack(recv_n(4))
        total += len(recv_n(size))
    return n_frames, total


def w3_makefile(sock: socket.socket, n_frames: int) -> tuple[int, int]:
    """sock.makefile('rb') with read(4) / read(n)."""
    f = sock.makefile("rb")
    read = f.read
    unpack = HEADER.unpack
    total = 0
    for _ in range(n_frames):
        (size,) = unpack(read(4))
        total += len(read(size))
    f.close()
    return n_frames, total


def w3_asyncio_protocol(sock: socket.socket, n_frames: int, use_uvloop: bool = False) -> tuple[int, int]:
    """asyncio (or uvloop) Protocol: data_received with manual buffer parsing."""
    result: dict[str, Any] = {}

    class Parser(asyncio.Protocol):
        def __init__(self, done: asyncio.Future[None]) -> None:
            self.buf = bytearray()
            self.frames = self.total = 0
            self.done = done

        def data_received(self, data: bytes) -> None:
            buf = self.buf
            buf += data
            pos = 0
            end = len(buf)
            unpack = HEADER.unpack_from
            frames = self.frames
            total = self.total
            while end - pos >= 4:
                size = unpack(buf, pos)[0]
                stop = pos + 4 + size
                if stop > end:
                    break
                total += len(buf[pos + 4:stop])
                frames += 1
                pos = stop
            del buf[:pos]
            self.frames, self.total = frames, total
            if frames >= n_frames and not self.done.done():
                self.done.set_result(None)

        def connection_lost(self, exc: BaseException | None) -> None:
            if not self.done.done():
                self.done.set_result(None)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        transport, proto = await loop.connect_accepted_socket(lambda: Parser(done), sock)
        await done
        result["r"] = (proto.frames, proto.total)
        transport.abort()

    if use_uvloop:
        import uvloop
        uvloop.run(main())  # type: ignore[attr-defined]
    else:
        asyncio.run(main())
    return result["r"]  # type: ignore[no-any-return]


# -- W2: ping-pong -----------------------------------------------------------------------

def w2_stream_server(impl: ModuleType, sock: socket.socket, rounds: int) -> None:
    """fastsock.Stream: read_frame + write_frame + flush per round trip."""
    stream = impl.Stream(sock, framing=impl.LengthPrefix())
    read_frame, write_frame, flush = stream.read_frame, stream.write_frame, stream.flush
    for _ in range(rounds):
        write_frame(read_frame())
        flush()


def w2_stdlib_server(sock: socket.socket, rounds: int) -> None:
    """stdlib best: recv_into a preallocated buffer until the frame is whole, one sendall."""
    buf = bytearray(65536)
    view = memoryview(buf)
    recv_into = sock.recv_into
    unpack = HEADER.unpack_from
    for _ in range(rounds):
        got = 0
        while got < 4 or got < 4 + unpack(buf, 0)[0]:
            n = recv_into(view[got:])
            if n == 0:
                return
            got += n
        sock.sendall(view[:got])


def w2_client(sock: socket.socket, rounds: int, payload: bytes = b"p" * 64) -> None:
    """The W2 client: send one framed 64-byte payload, read the whole echo, repeat."""
    frame = HEADER.pack(len(payload)) + payload
    size = len(frame)
    buf = bytearray(size)
    view = memoryview(buf)
    for _ in range(rounds):
        sock.sendall(frame)
        got = 0
        while got < size:
            n = sock.recv_into(view[got:])
            if n == 0:
                raise EOFError
            got += n
