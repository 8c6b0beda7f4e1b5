"""W1 bulk: the receiver of one TCP connection reads 256 KiB at a time into a buffer and discards."""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Callable, Optional

from .common import Meter, accept_fastsock, loop_missing, missing_fastsock, run_loop

CHUNK = 256 * 1024


def _result(total: int, expected: int) -> dict[str, Any]:
    return {"ops": total, "bytes": total, "ok": total == expected}


def stdlib_naive(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
    conn, _ = listener.accept()
    meter.start()
    total = 0
    while True:
        data = conn.recv(CHUNK)
        if not data:
            break
        total += len(data)
    meter.stop()
    conn.close()
    return _result(total, p["bytes"])


def stdlib_best(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
    conn, _ = listener.accept()
    buf = bytearray(CHUNK)
    recv_into = conn.recv_into
    meter.start()
    total = 0
    while True:
        n = recv_into(buf)
        if not n:
            break
        total += n
    meter.stop()
    conn.close()
    return _result(total, p["bytes"])


def fastsock_recv(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
    """recv_into_exactly of 256 KiB into a preallocated buffer (the C loop, GIL released)."""
    conn = accept_fastsock(listener)
    buf = bytearray(CHUNK)
    recv_into_exactly = conn.recv_into_exactly
    meter.start()
    remaining = p["bytes"]
    while remaining >= CHUNK:
        recv_into_exactly(buf)
        remaining -= CHUNK
    if remaining:
        recv_into_exactly(buf, remaining)
    meter.stop()
    at_eof = conn.recv(1) == b""
    conn.close()
    return {"ops": p["bytes"], "bytes": p["bytes"], "ok": at_eof}


def asyncio_streams(kind: str) -> Callable[..., dict[str, Any]]:
    def run(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
        async def main() -> int:
            done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                meter.start()
                total = 0
                while True:
                    data = await reader.read(CHUNK)
                    if not data:
                        break
                    total += len(data)
                meter.stop()
                writer.close()
                done.set_result(total)

            server = await asyncio.start_server(handle, sock=listener, limit=CHUNK)
            total = await done
            server.close()
            return total

        return _result(run_loop(kind, main), p["bytes"])

    return run


def asyncio_protocol(kind: str) -> Callable[..., dict[str, Any]]:
    def run(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
        async def main() -> int:
            loop = asyncio.get_running_loop()
            done: asyncio.Future[int] = loop.create_future()

            class Sink(asyncio.Protocol):
                total = 0

                def connection_made(self, transport: Any) -> None:
                    meter.start()

                def data_received(self, data: bytes) -> None:
                    self.total += len(data)

                def eof_received(self) -> None:
                    meter.stop()
                    done.set_result(self.total)

            server = await loop.create_server(Sink, sock=listener)
            total = await done
            server.close()
            return total

        return _result(run_loop(kind, main), p["bytes"])

    return run


class _LowatListener:
    """A listener whose accepted connections wake their reader once per CHUNK: SO_RCVLOWAT
    set once for the connection's life (what the C reference receiver does). Any
    implementation can do this; these rows show how much of W1 is that option."""

    def __init__(self, listener: socket.socket) -> None:
        self._listener = listener

    def accept(self) -> tuple[socket.socket, Any]:
        conn, addr = self._listener.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, CHUNK)
        return conn, addr


def with_lowat(server: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    def run(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
        return server(_LowatListener(listener), p, meter)

    return run


SERVERS: dict[str, Callable[..., dict[str, Any]]] = {
    "stdlib-best-lowat": with_lowat(stdlib_best),
    "fastsock-lowat": with_lowat(fastsock_recv),
    "stdlib-naive": stdlib_naive,
    "stdlib-best": stdlib_best,
    "fastsock": fastsock_recv,
    "fastsock-pure": fastsock_recv,
    "asyncio-streams": asyncio_streams("asyncio"),
    "asyncio-protocol": asyncio_protocol("asyncio"),
    "uvloop-streams": asyncio_streams("uvloop"),
    "uvloop-protocol": asyncio_protocol("uvloop"),
}


def missing(key: str) -> Optional[str]:
    """Why `key` cannot run here, or None."""
    if key.startswith("fastsock"):
        return missing_fastsock(socket_methods=("recv_into_exactly",))
    if key.startswith("uvloop"):
        return loop_missing("uvloop")
    return None
