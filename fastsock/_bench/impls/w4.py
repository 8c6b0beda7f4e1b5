"""W4 echo under concurrency: echo servers for many connections; they run until terminated.

The load generator reads this server's CPU clock at the start and end of each point,
so these servers report nothing themselves.
"""

from __future__ import annotations

import asyncio
import selectors
import socket
import threading
from typing import Any, Callable, Optional

from . import aio
from .common import (
    Meter,
    as_fastsock,
    fastsock_api,
    loop_missing,
    missing_fastsock,
    missing_module,
    missing_server,
    nodelay,
    run_loop,
)

READ_SIZE = 65536


def selector_echo(make_selector: Callable[[], selectors.BaseSelector],
                  wrap: Callable[[Any], Any]) -> Callable[..., Any]:
    """The HOWTO's non-blocking server: one selector, accept, recv, send, keep what was not sent."""

    def run(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
        sel = make_selector()
        listener.setblocking(False)
        sel.register(listener, selectors.EVENT_READ, None)
        pending: dict[Any, bytes] = {}
        EVENT_READ, EVENT_WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE

        def drop(sock: Any) -> None:
            sel.unregister(sock)
            pending.pop(sock, None)
            sock.close()

        while True:
            for key, mask in sel.select():
                sock: Any = key.fileobj
                if key.data is None:  # the listener
                    while True:
                        try:
                            conn, _ = listener.accept()
                        except BlockingIOError:
                            break
                        conn = wrap(conn)
                        conn.setblocking(False)
                        nodelay(conn)
                        sel.register(conn, EVENT_READ, True)
                    continue
                if mask & EVENT_WRITE:
                    data = pending[sock]
                    try:
                        sent = sock.send(data)
                    except BlockingIOError:
                        continue
                    except OSError:
                        drop(sock)
                        continue
                    if sent < len(data):
                        pending[sock] = data[sent:]
                    else:
                        del pending[sock]
                        sel.modify(sock, EVENT_READ, True)
                    continue
                try:
                    data = sock.recv(READ_SIZE)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    drop(sock)
                    continue
                try:
                    sent = sock.send(data)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    drop(sock)
                    continue
                if sent < len(data):
                    pending[sock] = data[sent:]
                    sel.modify(sock, EVENT_WRITE, True)

    return run


def _fastsock_selector() -> selectors.BaseSelector:
    return fastsock_api().Selector()  # type: ignore[no-any-return]


def threaded(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
    """One thread per connection: recv, sendall."""

    def handle(conn: socket.socket) -> None:
        with conn:
            nodelay(conn)
            recv, sendall = conn.recv, conn.sendall
            while True:
                data = recv(READ_SIZE)
                if not data:
                    return
                sendall(data)

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def asyncio_protocol(kind: str) -> Callable[..., Any]:
    def run(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
        class Echo(asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:
                self.write = transport.write

            def data_received(self, data: bytes) -> None:
                self.write(data)

        async def main() -> None:
            server = await asyncio.get_running_loop().create_server(Echo, sock=listener)
            await server.serve_forever()

        return run_loop(kind, main)  # type: ignore[no-any-return]

    return run


def asyncio_streams(kind: str) -> Callable[..., Any]:
    def run(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
            writer.close()

        async def main() -> None:
            server = await asyncio.start_server(handle, sock=listener)
            await server.serve_forever()

        return run_loop(kind, main)  # type: ignore[no-any-return]

    return run


def gevent_server(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
    import gevent.socket  # type: ignore[import-untyped, unused-ignore]
    from gevent.server import StreamServer  # type: ignore[import-untyped, unused-ignore]

    def handle(conn: Any, address: Any) -> None:
        nodelay(conn)
        while True:
            data = conn.recv(READ_SIZE)
            if not data:
                break
            conn.sendall(data)
        conn.close()

    gsock = gevent.socket.socket(listener.family, listener.type, listener.proto, fileno=listener.detach())
    StreamServer(gsock, handle).serve_forever()
    return {}


def fastsock_server(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
    """fastsock.Server in raw mode (framing=None): write back what arrived and consume it."""
    fastsock = fastsock_api()

    def echo(conn: Any, data: Any) -> int:
        conn.write(data)
        return len(data)

    server = fastsock.Server(echo, framing=None)
    server.listen(sock=listener)
    server.serve_forever()  # until the runner's SIGTERM (a graceful stop) or SIGKILL
    return {}


SERVERS: dict[str, Callable[..., Any]] = {
    "stdlib-best": selector_echo(selectors.DefaultSelector, lambda conn: conn),
    "fastsock": selector_echo(_fastsock_selector, as_fastsock),
    "fastsock-pure": selector_echo(_fastsock_selector, as_fastsock),
    "threaded": threaded,
    "asyncio-protocol": asyncio_protocol("asyncio"),
    "asyncio-streams": asyncio_streams("asyncio"),
    "asyncio-fastsock": asyncio_protocol("fastsock"),
    "uvloop-protocol": asyncio_protocol("uvloop"),
    "uvloop-streams": asyncio_streams("uvloop"),
    "gevent": gevent_server,
    "fastsock-server": fastsock_server,
    "fastsock-server-pure": fastsock_server,
}
SERVERS.update(aio.servers("W4"))  # the fastsock.aio rows (issue 12)


def missing(key: str) -> Optional[str]:
    """Why `key` cannot run here, or None."""
    if key in aio.KEYS:
        return aio.missing(key)
    if key in ("fastsock", "fastsock-pure"):
        return missing_fastsock("Selector")
    if key.startswith("fastsock-server"):
        return missing_server()
    if key == "asyncio-fastsock":
        return loop_missing("fastsock")
    if key.startswith("uvloop"):
        return loop_missing("uvloop")
    if key == "gevent":
        return missing_module("gevent")
    return None
