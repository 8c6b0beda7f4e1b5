"""W6 real protocols, real clients: RESP and HTTP/1.1 servers with the examples' protocol code;
they run until terminated, and the runner reads their CPU clock around the load generator's run.

- fastsock Server (C and python backends): the example's own server, `make_server()` (with
  Server's defaults: one process), else its handler on the Server the example describes:
  examples/resp_server.py's batch handler on `fastsock.Server(handler, framing=fastsock.RESP(),
  batch=True)`, examples/http_server.py's raw handler on `fastsock.Server(handler)`.
- stdlib selectors, asyncio Protocol and uvloop Protocol: one `respond(buf) -> (consumed,
  replies, close)` per protocol, called on every read: for HTTP the example's `respond`; for
  RESP the plain-Python parser of respparse feeding the example's `execute`, replies encoded by
  `fastsock.resp.encode`. The bytes a call did not consume are kept and prefixed to the next
  read; the replies of one read leave in one send (`send`, `transport.write`).
"""

from __future__ import annotations

import asyncio
import importlib
import selectors
import socket
from typing import Any, Callable, Optional

from . import examples
from .common import Meter, fastsock_api, loop_missing, missing_server, nodelay, run_loop
from .respparse import ProtocolError, responder

READ_SIZE = 65536

# the example of each protocol, and the names each kind of server takes from it
EXAMPLE = {"resp": "resp_server", "http": "http_server"}
NEEDS = {("resp", "server"): ("handler",), ("resp", "loop"): ("execute",),
         ("http", "server"): ("handler",), ("http", "loop"): ("respond",)}

Respond = Callable[[bytes], "tuple[int, bytes, bool]"]


def _resp() -> Any:
    """fastsock.resp (imported by name: it lands on main while W6 is written)."""
    return importlib.import_module("fastsock.resp")


def _example(protocol: str, kind: str) -> tuple[Any, Optional[str]]:
    return examples.load(EXAMPLE[protocol], NEEDS[(protocol, kind)])


def respond_for(protocol: str) -> Respond:
    """The hand-written servers' protocol code: respond(buf) -> (consumed, replies, close)."""
    mod, reason = _example(protocol, "loop")
    if mod is None:
        raise RuntimeError(reason)
    if protocol == "http":
        return mod.respond  # type: ignore[no-any-return]
    return responder(mod.execute, _resp().encode)


def selector_server(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
    """A selectors loop over non-blocking sockets: recv, respond, one send of the replies;
    replies the kernel does not take whole are kept, and that connection is not read until
    they left; a `close` from respond closes the connection once its replies left."""
    respond = respond_for(p["variant"])
    sel = selectors.DefaultSelector()
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ, None)
    EVENT_READ, EVENT_WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
    rest: dict[Any, bytes] = {}  # bytes respond did not consume yet
    pending: dict[Any, tuple[bytes, bool]] = {}  # replies the kernel did not take yet, close after

    def drop(sock: Any) -> None:
        sel.unregister(sock)
        rest.pop(sock, None)
        pending.pop(sock, None)
        sock.close()

    def send(sock: Any, out: bytes, close: bool) -> None:
        try:
            sent = sock.send(out)
        except BlockingIOError:
            sent = 0
        except OSError:
            drop(sock)
            return
        if sent < len(out):
            pending[sock] = (out[sent:], close)
            sel.modify(sock, EVENT_WRITE, True)
        elif close:
            drop(sock)

    while True:
        for key, mask in sel.select():
            sock: Any = key.fileobj
            if key.data is None:  # the listener
                while True:
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    nodelay(conn)
                    sel.register(conn, EVENT_READ, True)
                continue
            if mask & EVENT_WRITE:
                out, close = pending.pop(sock)
                sel.modify(sock, EVENT_READ, True)
                send(sock, out, close)
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
            held = rest.pop(sock, None)
            if held:
                data = held + data
            try:
                used, out, close = respond(data)
            except ProtocolError:
                drop(sock)
                continue
            if used < len(data):
                rest[sock] = data[used:]
            if out or close:
                send(sock, out, close)


def asyncio_protocol(kind: str) -> Callable[..., Any]:
    """Protocol: data_received calls respond on the unconsumed bytes; one transport.write."""

    def run(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
        respond = respond_for(p["variant"])

        class Server(asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:
                self.transport = transport
                self.write = transport.write
                self.rest = b""

            def data_received(self, data: bytes) -> None:
                if self.rest:
                    data = self.rest + data
                try:
                    used, out, close = respond(data)
                except ProtocolError:
                    self.transport.abort()
                    return
                self.rest = data[used:]
                if out:
                    self.write(out)
                if close:
                    self.transport.close()  # after the replies it holds

        async def main() -> None:
            server = await asyncio.get_running_loop().create_server(Server, sock=listener)
            await server.serve_forever()

        return run_loop(kind, main)  # type: ignore[no-any-return]

    return run


def fastsock_server(listener: socket.socket, p: dict[str, Any], meter: Meter) -> dict[str, Any]:
    """The example's server: its make_server() when it has one, else its handler on
    fastsock.Server (RESP: batch mode on fastsock.RESP frames; HTTP: raw mode)."""
    fastsock = fastsock_api()
    mod, reason = _example(p["variant"], "server")
    if mod is None:
        raise RuntimeError(reason)
    if hasattr(mod, "make_server"):
        server = mod.make_server()
    elif p["variant"] == "resp":
        server = fastsock.Server(mod.handler, framing=fastsock.RESP(), batch=True)
    else:
        server = fastsock.Server(mod.handler)
    server.listen(sock=listener)
    server.serve_forever()  # until the runner's SIGTERM (a graceful stop) or SIGKILL
    return {}


SERVERS: dict[str, Callable[..., Any]] = {
    "stdlib-best": selector_server,
    "asyncio-protocol": asyncio_protocol("asyncio"),
    "uvloop-protocol": asyncio_protocol("uvloop"),
    "fastsock-server": fastsock_server,
    "fastsock-server-pure": fastsock_server,
}


def missing(key: str, protocol: str = "resp") -> Optional[str]:
    """Why `key` cannot serve `protocol` here, or None."""
    if key.startswith("fastsock-server"):
        reason = missing_server()
        if reason:
            return reason
        if protocol == "resp" and not hasattr(fastsock_api(), "RESP"):
            return "fastsock.RESP is not in this fastsock build"
        return _example(protocol, "server")[1]
    if key.startswith("uvloop"):
        reason = loop_missing("uvloop")
        if reason:
            return reason
    if protocol == "resp":
        try:
            resp = _resp()
        except ImportError:
            return "fastsock.resp is not in this fastsock build"
        if not hasattr(resp, "encode"):
            return "fastsock.resp has no encode"
    return _example(protocol, "loop")[1]
