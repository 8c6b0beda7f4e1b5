"""The connection functions: asyncio's open_connection/start_server family, each connection
one fastsock.aio.Stream. Keyword arguments they do not know pass through to the loop's
create_connection / create_server (ssl=, server_hostname=, reuse_port=, backlog=, ...)."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable, Optional

from .. import _streambase
from ..framing import Framing
from . import _backend
from ._limits import DEFAULT_WRITE_LIMIT, check_write_limit
from .stream import Stream, _StreamProtocol

__all__ = ["open_connection", "open_unix_connection", "start_server", "start_unix_server"]

#: What start_server's callback may be: plain, or a coroutine function.
ClientConnected = Callable[[Stream], Any]


def _factory(framing: Optional[Framing], max_buffer: int, write_limit: Optional[int],
             on_connect: Optional[Callable[[Stream], None]]) -> Callable[[], _StreamProtocol]:
    """A protocol factory; the options are checked here, once (TypeError, ValueError)."""
    impl = _backend.impl
    decoder_class = impl.FrameDecoder
    encoder_class = impl.FrameEncoder
    decoder_class(framing, max_buffer=max_buffer)
    limit = check_write_limit(write_limit)

    def factory() -> _StreamProtocol:
        return _StreamProtocol(decoder_class(framing, max_buffer=max_buffer), encoder_class, limit, on_connect)

    return factory


class _ClientConnected:
    """start_server's per-connection call: runs the callback; a coroutine it returns runs as
    a task kept here until done. An exception (raised, or ending the task) goes to the loop's
    exception handler and closes that connection only."""

    def __init__(self, callback: ClientConnected, loop: asyncio.AbstractEventLoop) -> None:
        self._callback = callback
        self._loop = loop
        self._tasks: set[asyncio.Future[Any]] = set()

    def __call__(self, stream: Stream) -> None:
        try:
            result = self._callback(stream)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result, loop=self._loop)
                self._tasks.add(task)
                task.add_done_callback(lambda done: self._done(done, stream))
        except Exception as exc:  # noqa: BLE001 - reported to the loop, like asyncio's streams
            self._report(exc, stream)

    def _done(self, task: asyncio.Future[Any], stream: Stream) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                self._report(exc, stream)

    def _report(self, exc: BaseException, stream: Stream) -> None:
        self._loop.call_exception_handler({
            "message": "Unhandled exception in client_connected_cb",
            "exception": exc,
            "transport": stream.transport,
            "protocol": stream._protocol,
        })
        stream.close()


async def open_connection(host: Optional[str] = None, port: Optional[int] = None, *,
                          framing: Optional[Framing] = None,
                          max_buffer: int = _streambase.DEFAULT_MAX_BUFFER,
                          write_limit: Optional[int] = DEFAULT_WRITE_LIMIT, **kwargs: Any) -> Stream:
    """Connect over TCP (TLS with ssl=...) and return the connection's Stream.

    `framing` cuts read_frame()/write_frame() messages (None: bytes only); `max_buffer`
    bounds the bytes held for reading; `write_limit` the unsent bytes (None: no limit).
    Other keywords go to loop.create_connection()."""
    loop = asyncio.get_running_loop()
    factory = _factory(framing, max_buffer, write_limit, None)
    _, protocol = await loop.create_connection(factory, host, port, **kwargs)  # type: ignore[arg-type]
    return protocol._stream  # type: ignore[return-value]


async def open_unix_connection(path: Optional[str] = None, *, framing: Optional[Framing] = None,
                               max_buffer: int = _streambase.DEFAULT_MAX_BUFFER,
                               write_limit: Optional[int] = DEFAULT_WRITE_LIMIT, **kwargs: Any) -> Stream:
    """As open_connection, over an AF_UNIX socket at `path` (loop.create_unix_connection())."""
    loop = asyncio.get_running_loop()
    factory = _factory(framing, max_buffer, write_limit, None)
    _, protocol = await loop.create_unix_connection(factory, path, **kwargs)
    return protocol._stream  # type: ignore[return-value]


async def start_server(client_connected_cb: ClientConnected, host: Any = None, port: Optional[int] = None, *,
                       framing: Optional[Framing] = None, max_buffer: int = _streambase.DEFAULT_MAX_BUFFER,
                       write_limit: Optional[int] = DEFAULT_WRITE_LIMIT, **kwargs: Any) -> asyncio.Server:
    """Serve TCP (TLS with ssl=...): `client_connected_cb(stream)` is called with each
    connection's Stream. A coroutine function's coroutine runs as a task the server keeps;
    an exception from the callback is reported to the loop's exception handler and closes
    that connection only. Returns the asyncio.Server; other keywords go to
    loop.create_server()."""
    loop = asyncio.get_running_loop()
    factory = _factory(framing, max_buffer, write_limit, _ClientConnected(client_connected_cb, loop))
    return await loop.create_server(factory, host, port, **kwargs)


async def start_unix_server(client_connected_cb: ClientConnected, path: Optional[str] = None, *,
                            framing: Optional[Framing] = None, max_buffer: int = _streambase.DEFAULT_MAX_BUFFER,
                            write_limit: Optional[int] = DEFAULT_WRITE_LIMIT, **kwargs: Any) -> asyncio.Server:
    """As start_server, on an AF_UNIX socket at `path` (loop.create_unix_server())."""
    loop = asyncio.get_running_loop()
    factory = _factory(framing, max_buffer, write_limit, _ClientConnected(client_connected_cb, loop))
    return await loop.create_unix_server(factory, path, **kwargs)
