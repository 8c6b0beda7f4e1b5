"""Helpers for the fastsock.aio tests: the `aio` fixture (backend x event loop) and bounded runs.

`aio` runs fastsock.aio on the backend of conftest's `impl` fixture (by patching
`fastsock.aio._backend.impl`, the one attribute fastsock.aio reads its FrameDecoder and
FrameEncoder from) and on each event loop: asyncio's default loop and uvloop (skipped with
its reason where uvloop does not install, e.g. PyPy or Windows). `aio.run(coro)` runs a
coroutine on that loop with a hard timeout, so no test can hang.

Test files import it like the other helpers (`from aioutil import aio, ...`): tests/ is on
sys.path under pytest's rootdir-based import mode, and importing the fixture into the test
module registers it there.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
from collections.abc import AsyncIterator, Coroutine, Iterator
from types import ModuleType
from typing import Any, Callable, Optional, TypeVar

import pytest

import fastsock.aio._backend as aio_backend

T = TypeVar("T")

LOOPS = ["asyncio", "uvloop"]
HOST = "127.0.0.1"
#: The hard bound of one aio.run() (the machine is shared and slow; a test takes far less).
TIMEOUT = 10.0


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """A new-event-loop function for `name` ("asyncio" or "uvloop"; skips without uvloop)."""
    if name == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError as exc:
        reason = f"uvloop is not installed here ({exc}); the uvloop runs are skipped"
        print(reason)
        pytest.skip(reason)
    return uvloop.new_event_loop  # type: ignore[no-any-return]


class Aio:
    """One backend x loop combination: `impl` (the backend module), `loop_name`, `run()`."""

    def __init__(self, impl: ModuleType, loop_name: str) -> None:
        self.impl = impl
        self.loop_name = loop_name
        self._new_loop = loop_factory(loop_name)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = TIMEOUT) -> T:
        """Run `coro` to completion on a fresh loop of this kind, within `timeout` seconds
        (asyncio.TimeoutError past it); the loop's unhandled-exception reports are kept in
        `self.errors`."""
        loop = self._new_loop()
        self.errors: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: self.errors.append(context))
        try:
            return loop.run_until_complete(asyncio.wait_for(coro, timeout))
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def __repr__(self) -> str:
        return f"Aio({self.impl.__name__}, {self.loop_name})"


@pytest.fixture(params=LOOPS)
def aio(request: pytest.FixtureRequest, impl: ModuleType, monkeypatch: pytest.MonkeyPatch) -> Iterator[Aio]:
    """fastsock.aio on the backend `impl`, on the loop of the parameter (asyncio, uvloop)."""
    runner = Aio(impl, str(request.param))
    monkeypatch.setattr(aio_backend, "impl", impl)
    yield runner


def chunks(data: bytes, rng: random.Random, most: int = 7) -> list[bytes]:
    """`data` cut at random points into pieces of 1..most bytes (occasionally larger)."""
    pieces = []
    i = 0
    while i < len(data):
        size = rng.randint(1, most) if rng.random() < 0.9 else rng.randint(most, most * 40)
        pieces.append(data[i:i + size])
        i += size
    return pieces


def nodelay(stream: Any) -> None:
    """TCP_NODELAY on a Stream's socket (TCP only), so every piece goes out on its own."""
    sock = stream.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def write_pieces(stream: Any, pieces: list[bytes]) -> None:
    """Write each piece with a drain and a loop turn between (the peer reads them apart)."""
    for piece in pieces:
        stream.write(piece)
        await stream.drain()
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def server_pair(framing: Any = None, *, server_kw: Optional[dict[str, Any]] = None,
                      client_kw: Optional[dict[str, Any]] = None) -> AsyncIterator[tuple[Any, Any]]:
    """(client, server) Streams of one TCP connection on 127.0.0.1, both closed afterwards."""
    from fastsock import aio

    accepted: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def on_connect(stream: Any) -> None:
        if not accepted.done():
            accepted.set_result(stream)

    server = await aio.start_server(on_connect, HOST, 0, framing=framing, **(server_kw or {}))
    port = server.sockets[0].getsockname()[1]
    client = await aio.open_connection(HOST, port, framing=framing, **(client_kw or {}))
    peer = await accepted
    nodelay(client)
    nodelay(peer)
    try:
        yield client, peer
    finally:
        client.close()
        peer.close()
        server.close()
        await server.wait_closed()


async def turns(count: int = 20) -> None:
    """Let the loop run `count` times (each turn polls the sockets once)."""
    for _ in range(count):
        await asyncio.sleep(0)


async def waiting(task: asyncio.Future[Any], count: int = 20) -> None:
    """Let the loop run `count` times and check `task` is still waiting (bounded)."""
    await turns(count)
    assert not task.done(), task


async def until(predicate: Callable[[], bool], what: str = "", bound: float = TIMEOUT / 2) -> None:
    """Poll `predicate` every millisecond until it is true; AssertionError naming `what`
    after `bound` seconds (a guard against a hang, not a timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"still false after {bound} s: {what or predicate}")
        await asyncio.sleep(0.001)


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) TLS contexts from a throwaway trustme CA, the server's certificate
    for "localhost" (pass server_hostname="localhost"). Skips, printing why, without trustme
    (it needs cryptography, which does not build on PyPy here)."""
    try:
        import trustme
    except ImportError as exc:
        reason = f"trustme is not installed here ({exc}); the TLS tests need its certificates"
        print(reason)
        pytest.skip(reason)
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx
