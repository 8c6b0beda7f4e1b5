"""W5 pipelined framed RPC under concurrency: answer every 4-byte big-endian length-prefixed
request frame with a frame carrying the same payload; the servers run until terminated.

Every request gets its own reply frame (per frame, not per read): the payload is cut out of
the read as a bytes object and a reply frame is built around it, as an RPC server hands each
request to its handler and frames what it returns. The hand-written servers share one parser
(`answer`), so they differ only in their event loop and I/O; each sends the replies of one
read with one call (`send`/`sendall`/`transport.write` of the joined replies), except the
streams servers, written as streams are meant to be used (`readexactly` the header, then the
payload, `write` the reply). The load generator (c/w5.c) checks every reply against its
request and reads this server's CPU clock, so these servers report nothing themselves.
"""

from __future__ import annotations

import asyncio
import selectors
import socket
import struct
import threading
from typing import Any, Callable, Optional

from . import aio
from .common import Meter, fastsock_api, loop_missing, missing_module, missing_server, nodelay, run_loop

READ_SIZE = 65536
HEADER = struct.Struct(">I")
MAX_PAYLOAD = 16 * 1024 * 1024  # a length prefix above this is a broken client: drop the connection


class BadFrame(ValueError):
    """A length prefix larger than MAX_PAYLOAD."""


def answer(data: Any, out: list[Any]) -> int:
    """Append the reply frames (header, payload) of every complete frame of `data` to `out`;
    return the offset after the last complete frame (the rest is an unfinished frame)."""
    unpack_from, pack, append = HEADER.unpack_from, HEADER.pack, out.append
    end = len(data)
    pos = 0
    while True:  # `while True` + break: see bench/README.md (CPython 3.11 specialization)
        if end - pos < 4:
            break
        (size,) = unpack_from(data, pos)
        if size > MAX_PAYLOAD:
            raise BadFrame(f"frame of {size} bytes")
        stop = pos + 4 + size
        if stop > end:
            break
        payload = bytes(data[pos + 4 : stop])  # the request, as the handler would get it
        append(pack(len(payload)))  # the reply: a frame around the same payload
        append(payload)
        pos = stop
    return pos


def selector_rpc(make_selector: Callable[[], selectors.BaseSelector], wrap: Callable[[Any], Any]) -> Callable[..., Any]:
    """The stdlib best: a selectors loop over non-blocking sockets; per connection a bytearray
    holds an unfinished frame; each read is parsed in place and its replies leave in one send;
    a reply the kernel does not take whole is kept and the connection is not read until it left."""

    def run(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
        sel = make_selector()
        listener.setblocking(False)
        sel.register(listener, selectors.EVENT_READ, None)
        EVENT_READ, EVENT_WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
        held: dict[Any, bytearray] = {}  # the unfinished frame of a connection, when there is one
        pending: dict[Any, bytes] = {}  # replies the kernel did not take yet

        def drop(sock: Any) -> None:
            sel.unregister(sock)
            held.pop(sock, None)
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
                    out = pending[sock]
                    try:
                        sent = sock.send(out)
                    except BlockingIOError:
                        continue
                    except OSError:
                        drop(sock)
                        continue
                    if sent < len(out):
                        pending[sock] = out[sent:]
                    else:
                        del pending[sock]
                        sel.modify(sock, EVENT_READ, True)
                    continue
                try:
                    data: Any = sock.recv(READ_SIZE)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    drop(sock)
                    continue
                buf = held.get(sock)
                if buf is not None:
                    buf += data
                    data = buf
                replies: list[Any] = []
                try:
                    pos = answer(data, replies)
                except BadFrame:
                    drop(sock)
                    continue
                if buf is not None:
                    if pos == len(buf):
                        del held[sock]
                    else:
                        del buf[:pos]
                elif pos < len(data):
                    held[sock] = bytearray(data[pos:])
                if not replies:
                    continue
                out = b"".join(replies)
                try:
                    sent = sock.send(out)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    drop(sock)
                    continue
                if sent < len(out):
                    pending[sock] = out[sent:]
                    sel.modify(sock, EVENT_WRITE, True)

    return run


def _serve_blocking(conn: Any) -> None:
    """One blocking connection (a thread's or a greenlet's): recv, answer every complete
    frame, one sendall per read, until EOF or a bad frame; then close it."""
    with conn:
        nodelay(conn)
        recv, sendall = conn.recv, conn.sendall
        rest = b""
        while True:
            data = recv(READ_SIZE)
            if not data:
                return
            if rest:
                data = rest + data
            replies: list[Any] = []
            try:
                pos = answer(data, replies)
            except BadFrame:
                return
            rest = data[pos:]
            if replies:
                sendall(b"".join(replies))


def threaded(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
    """One thread per connection (_serve_blocking)."""
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_serve_blocking, args=(conn,), daemon=True).start()


def asyncio_protocol(kind: str) -> Callable[..., Any]:
    """Protocol: data_received parses the buffer; one transport.write of the joined replies."""

    def run(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
        class RPC(asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:
                self.transport = transport
                self.write = transport.write
                self.rest = b""

            def data_received(self, data: bytes) -> None:
                if self.rest:
                    data = self.rest + data
                replies: list[Any] = []
                try:
                    pos = answer(data, replies)
                except BadFrame:
                    self.transport.abort()
                    return
                self.rest = data[pos:]
                if replies:
                    self.write(b"".join(replies))

        async def main() -> None:
            server = await asyncio.get_running_loop().create_server(RPC, sock=listener)
            await server.serve_forever()

        return run_loop(kind, main)  # type: ignore[no-any-return]

    return run


def asyncio_streams(kind: str) -> Callable[..., Any]:
    """Streams as they are meant to be used: readexactly the header, then the payload, write
    the reply; drain when the transport holds unsent data (flow control), not after every
    write (the check is the public get_write_buffer_size(); drain() would do nothing)."""

    def run(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
        unpack, pack = HEADER.unpack, HEADER.pack

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            readexactly, write, buffered = reader.readexactly, writer.write, writer.transport.get_write_buffer_size
            try:
                while True:
                    (size,) = unpack(await readexactly(4))
                    if size > MAX_PAYLOAD:
                        break
                    payload = await readexactly(size)
                    write(pack(len(payload)) + payload)
                    if buffered():
                        await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
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
        _serve_blocking(conn)

    gsock = gevent.socket.socket(listener.family, listener.type, listener.proto, fileno=listener.detach())
    StreamServer(gsock, handle).serve_forever()
    return {}


def fastsock_server(batch: bool) -> Callable[..., Any]:
    """fastsock.Server with a per-frame handler returning the payload (or, batch=True, one
    handler call per read returning the list of payloads); the Server frames each reply."""

    def run(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
        fastsock = fastsock_api()
        if batch:
            server = fastsock.Server(lambda conn, frames: frames, framing=fastsock.LengthPrefix(4), batch=True)
        else:
            server = fastsock.Server(lambda conn, frame: frame, framing=fastsock.LengthPrefix(4))
        server.listen(sock=listener)
        server.serve_forever()  # until the runner's SIGTERM (a graceful stop) or SIGKILL
        return {}

    return run


SERVERS: dict[str, Callable[..., Any]] = {
    "stdlib-best": selector_rpc(selectors.DefaultSelector, lambda conn: conn),
    "threaded": threaded,
    "asyncio-protocol": asyncio_protocol("asyncio"),
    "asyncio-streams": asyncio_streams("asyncio"),
    "asyncio-fastsock": asyncio_protocol("fastsock"),
    "uvloop-protocol": asyncio_protocol("uvloop"),
    "uvloop-streams": asyncio_streams("uvloop"),
    "gevent": gevent_server,
    "fastsock-server": fastsock_server(batch=False),
    "fastsock-server-pure": fastsock_server(batch=False),
    "fastsock-server-batch": fastsock_server(batch=True),
}
SERVERS.update(aio.servers("W5"))  # the fastsock.aio rows (issue 12)

def missing(key: str) -> Optional[str]:
    """Why `key` cannot run here, or None."""
    if key in aio.KEYS:
        return aio.missing(key)
    if key.startswith("fastsock-server"):
        return missing_server()
    if key == "asyncio-fastsock":
        return loop_missing("fastsock")
    if key.startswith("uvloop"):
        return loop_missing("uvloop")
    if key == "gevent":
        return missing_module("gevent")
    return None
