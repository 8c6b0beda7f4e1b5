"""fastsock.aio.Stream: an asyncio stream (reader and writer in one object) over a FrameDecoder,
and the private BufferedProtocol that feeds it.

Reading. The protocol's buffer_updated() commits the received bytes to the decoder and does
nothing else unless the decoder holds at least `_mark` bytes: `_mark` is what a waiting read
needs (the bytes it asked for, or one more than it saw), else the high-water mark. A read
first tries the decoder without waiting (a frame, a line, n bytes: no future is created when
the buffer holds the answer); otherwise it sets `_mark`, awaits one future, and tries again.
The future only says "look again": bytes are consumed by the read itself, after it resumed,
so a cancelled read (asyncio.timeout, wait_for, task.cancel) leaves every byte buffered.

Flow control. With no read waiting for more, reaching the high-water mark (4 x 64 KiB, or
max_buffer if lower) pauses the transport's reading; a read that must wait resumes it, and
so does a read that leaves fewer than the low mark (a quarter of it) buffered. A read that
waits for more than the high-water mark (a large frame) still gets it: each wait resumes
reading for at least one more byte (so reading pauses and resumes a few times per large
frame), and max_buffer bounds everything.

Writing. Every write first checks that the transport's unsent bytes plus its own stay within
write_limit (WriteLimitExceeded, nothing queued); drain() waits while the transport has
paused writing (fastsock.aio._flow).
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Iterable
from typing import Any, Optional, Union

from .._errors import FrameTooLarge, IncompleteReadError
from ..framing import Framing, FramingError
from ._flow import WriteFlow
from ._limits import NEVER, queue_buffers, read_marks, total_size
from .errors import WriteLimitExceeded

__all__ = ["Stream"]

_NO_FRAMING = "this Stream has no framing: pass framing=... to open_connection()/start_server() or set .framing"


class Stream:
    """One connection of fastsock.aio, read and written through one object (made by
    `open_connection`, `open_unix_connection`, or given to `start_server`'s callback).

    Reads are coroutines with fastsock.Stream's semantics: `read_frame()`,
    `read_frames(max_frames)`, `async for frame in stream`, `read_exactly(n)`,
    `read_exactly_into(buffer)`, `readline(limit)`, `read_until(delimiter, limit, keep)`,
    `read(n)`; `peek(n)` and `at_eof()` do not wait. A read cancelled (by asyncio.timeout,
    wait_for, ...) consumes nothing: every byte stays buffered for the next call. One read at
    a time: a read started while another waits raises RuntimeError. Once the connection is
    lost with an error, a read that the buffer cannot satisfy raises that error.

    Writes queue in the transport: `write(data)`, `writelines(data)`, `write_frame(payload)`,
    `write_frames(payloads)`, then `await drain()`. A write that would leave more than
    write_limit bytes unsent raises `WriteLimitExceeded` and queues nothing.
    """

    __slots__ = ("_protocol", "_transport", "_decoder", "_encoder", "_loop", "_waiter", "_paused",
                 "_eof", "_error", "_high", "_low", "_max_buffer", "_write_limit", "_closers",
                 "_over_ssl", "__weakref__")

    def __init__(self, transport: Any, protocol: _StreamProtocol) -> None:
        """Made by the connection functions (see the class docstring), not by hand."""
        self._transport = transport
        self._protocol = protocol
        decoder = protocol._decoder
        self._decoder = decoder
        framing = decoder.framing
        self._encoder = None if framing is None else protocol._encoder_class(framing)
        self._loop = asyncio.get_running_loop()
        self._waiter: Optional[asyncio.Future[None]] = None
        self._paused = False  # reading paused by flow control
        self._eof = False
        self._error: Optional[BaseException] = None
        self._max_buffer: int = decoder.max_buffer
        self._high, self._low = read_marks(self._max_buffer)
        self._write_limit = protocol._write_limit
        self._closers: Optional[list[asyncio.Future[None]]] = None
        self._over_ssl = transport.get_extra_info("sslcontext") is not None

    # -- waiting (the slow path of every read) --------------------------------------------

    def _busy(self, name: str) -> None:
        raise RuntimeError(f"{name}() called while another coroutine is already waiting for incoming data")

    def _arm(self, want: int) -> asyncio.Future[None]:
        """A future the protocol completes once `want` bytes are buffered (or at EOF)."""
        if want > self._max_buffer:
            raise FrameTooLarge(want, self._max_buffer,
                                f"waiting for {want} bytes, more than max_buffer={self._max_buffer}")
        waiter = self._loop.create_future()
        self._waiter = waiter
        self._protocol._mark = want
        if self._paused:  # a read waits: read again
            self._paused = False
            self._transport.resume_reading()
        return waiter

    def _disarm(self) -> None:
        self._waiter = None
        self._protocol._mark = NEVER if self._paused else self._high

    def _arrived(self) -> None:
        """The protocol's call: at least `_mark` bytes are buffered."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
            if self._decoder.buffered < self._high:
                self._protocol._mark = self._high
                return
        # The high-water mark is reached and no read waits for more.
        self._protocol._mark = NEVER
        if not self._paused and not self._eof:
            self._paused = True
            self._transport.pause_reading()

    def _consumed(self) -> None:
        """After a read while reading is paused: resume below the low mark."""
        if self._decoder.buffered < self._low and not self._eof:
            self._paused = False
            self._protocol._mark = self._high
            self._transport.resume_reading()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def _lose(self, exc: Optional[BaseException]) -> None:
        self._eof = True
        if exc is not None:
            self._error = exc
        self._wake()
        closers = self._closers
        if closers:
            self._closers = None
            for waiter in closers:
                if not waiter.done():
                    waiter.set_result(None)

    def _frame_end(self) -> None:
        """No complete frame is buffered and the input ended: raise the connection's error,
        or IncompleteReadError (consuming the partial frame); return at a clean EOF."""
        if self._error is not None:
            raise self._error
        decoder = self._decoder
        try:
            decoder.eof()
        except IncompleteReadError as exc:
            decoder.discard(len(exc.partial))
            raise

    def _bytes_end(self) -> bytes:
        """The input ended before a byte read was satisfied: raise the connection's error,
        else return every buffered byte (consumed), for the caller to return or raise."""
        if self._error is not None:
            raise self._error
        return self._decoder.read()  # type: ignore[no-any-return]

    # -- frames ---------------------------------------------------------------------------

    async def read_frame(self) -> Any:
        """The next frame (bytes; RESP: a list of bytes). EOFError at a clean EOF between
        frames; IncompleteReadError (.partial, .expected) at EOF inside one; FrameTooLarge or
        FramingError, with the bytes left buffered, for a frame too large or malformed."""
        if self._waiter is not None:
            self._busy("read_frame")
        decoder = self._decoder
        while True:
            frame = decoder.next_frame()
            if frame is not None:
                if self._paused:
                    self._consumed()
                return frame
            if self._eof:
                self._frame_end()
                raise EOFError("end of stream")
            waiter = self._arm(decoder.buffered + 1)
            try:
                await waiter
            finally:
                self._disarm()

    async def read_frames(self, max_frames: Optional[int] = None) -> list[Any]:
        """Every complete frame buffered (at most max_frames), waiting only while there is
        none; [] at a clean EOF. Frames before a bad one are returned first; the next call
        raises its FrameTooLarge or FramingError."""
        if self._waiter is not None:
            self._busy("read_frames")
        decoder = self._decoder
        while True:
            try:
                frames = decoder.frames(max_frames)
            except (FrameTooLarge, FramingError) as exc:
                frames = getattr(exc, "frames", None)
                if not frames:
                    raise
            if frames:
                if self._paused:
                    self._consumed()
                return frames  # type: ignore[no-any-return]
            if self._eof:
                self._frame_end()
                return []
            waiter = self._arm(decoder.buffered + 1)
            try:
                await waiter
            finally:
                self._disarm()

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> Any:
        """The next frame; StopAsyncIteration at a clean EOF between frames."""
        try:
            return await self.read_frame()
        except EOFError:
            raise StopAsyncIteration from None

    # -- bytes ----------------------------------------------------------------------------

    async def read_exactly(self, n: int) -> bytes:
        """Exactly n bytes (n <= max_buffer, else FrameTooLarge). EOF first raises
        IncompleteReadError (.partial: every byte left, consumed; .expected: n)."""
        if self._waiter is not None:
            self._busy("read_exactly")
        decoder = self._decoder
        while True:
            data = decoder.read_exactly(n)
            if data is not None:
                if self._paused:
                    self._consumed()
                return data  # type: ignore[no-any-return]
            if self._eof:
                raise IncompleteReadError(self._bytes_end(), operator.index(n))
            waiter = self._arm(operator.index(n))
            try:
                await waiter
            finally:
                self._disarm()

    async def read_exactly_into(self, buffer: Any) -> int:
        """Fill all of the writable `buffer` (at most max_buffer bytes); returns its size.
        EOF first raises IncompleteReadError (.partial: every byte left, consumed)."""
        view = memoryview(buffer)
        if view.readonly:
            raise TypeError("read_exactly_into() needs a writable buffer")
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        size = view.nbytes
        if self._waiter is not None:
            self._busy("read_exactly_into")
        decoder = self._decoder
        while True:
            if decoder.buffered >= size:
                decoder.read_into(view)
                if self._paused:
                    self._consumed()
                return size
            if self._eof:
                raise IncompleteReadError(self._bytes_end(), size)
            waiter = self._arm(size)
            try:
                await waiter
            finally:
                self._disarm()

    async def readline(self, limit: Optional[int] = None) -> bytes:
        """One line, ending with b"\\n" (at EOF: the rest, possibly without it; b"" when
        nothing is left). More than `limit` bytes (default max_buffer) before the newline
        raise FrameTooLarge, with every byte still buffered."""
        if self._waiter is not None:
            self._busy("readline")
        decoder = self._decoder
        while True:
            line = decoder.readline(limit)
            if line is not None:
                if self._paused:
                    self._consumed()
                return line  # type: ignore[no-any-return]
            if self._eof:
                return self._bytes_end()
            waiter = self._arm(decoder.buffered + 1)
            try:
                await waiter
            finally:
                self._disarm()

    async def read_until(self, delimiter: Union[bytes, tuple[bytes, ...]], limit: Optional[int] = None,
                         keep: bool = True) -> bytes:
        """Bytes up to the earliest occurrence of `delimiter` (bytes, or a tuple of bytes:
        the earliest match wins), including it unless keep=False. More than `limit` bytes
        (default max_buffer) before it raise FrameTooLarge; EOF first raises
        IncompleteReadError (.partial holds the rest, consumed)."""
        if self._waiter is not None:
            self._busy("read_until")
        decoder = self._decoder
        while True:
            data = decoder.read_until(delimiter, limit, keep)
            if data is not None:
                if self._paused:
                    self._consumed()
                return data  # type: ignore[no-any-return]
            if self._eof:
                raise IncompleteReadError(self._bytes_end(), None)
            waiter = self._arm(decoder.buffered + 1)
            try:
                await waiter
            finally:
                self._disarm()

    async def read(self, n: Optional[int] = -1) -> bytes:
        """Up to n bytes: what is buffered, else what the next read brings (b"" at EOF).
        n < 0 (or None) reads to EOF: FrameTooLarge if more than max_buffer bytes come first."""
        if self._waiter is not None:
            self._busy("read")
        decoder = self._decoder
        size = -1 if n is None else operator.index(n)
        while True:
            if size < 0:
                if self._eof:
                    return self._bytes_end()
                if decoder.buffered >= self._max_buffer:
                    raise FrameTooLarge(decoder.buffered, self._max_buffer,
                                        f"read() to EOF: more than max_buffer={self._max_buffer} bytes")
                want = self._max_buffer
            else:
                if size == 0:
                    return b""
                data = decoder.read(size)
                if data:
                    if self._paused:
                        self._consumed()
                    return data  # type: ignore[no-any-return]
                if self._eof:
                    return self._bytes_end()
                want = 1
            waiter = self._arm(want)
            try:
                await waiter
            finally:
                self._disarm()

    def peek(self, n: Optional[int] = -1) -> bytes:
        """Up to n buffered bytes (n < 0: all) without consuming them; never waits."""
        return self._decoder.peek(-1 if n is None else n)  # type: ignore[no-any-return]

    def at_eof(self) -> bool:
        """True when the peer has finished sending and every buffered byte has been read."""
        return self._eof and not self._decoder.buffered

    @property
    def buffered(self) -> int:
        """Bytes received and held, not yet read."""
        return self._decoder.buffered  # type: ignore[no-any-return]

    # -- writing --------------------------------------------------------------------------

    def write(self, data: Any) -> None:
        """Queue the bytes-like `data` in the transport (WriteLimitExceeded past write_limit)."""
        size = len(data) if type(data) is bytes else memoryview(data).nbytes
        transport = self._transport
        pending = transport.get_write_buffer_size()
        if pending + size > self._write_limit:
            raise WriteLimitExceeded(size, pending, self._write_limit)
        transport.write(data)

    def writelines(self, data: Iterable[Any]) -> None:
        """Queue every bytes-like object of `data` with one writelines() (all or nothing)."""
        buffers = list(data)
        queue_buffers(self._transport, buffers, total_size(buffers), self._write_limit)

    def write_frame(self, payload: Any) -> None:
        """Queue one frame carrying `payload` (a RESP value for RESP). FrameTooLarge above the
        framing's max_size, TypeError for what it cannot carry, WriteLimitExceeded past
        write_limit: in each case nothing is queued."""
        encoder = self._encoder
        if encoder is None:
            raise ValueError(_NO_FRAMING)
        buffers = encoder.encode(payload)
        queue_buffers(self._transport, buffers, sum(map(len, buffers)), self._write_limit)

    def write_frames(self, payloads: Iterable[Any]) -> None:
        """Queue one frame per payload with one writelines(): all or nothing (every payload
        is validated, and write_limit checked, before anything is queued)."""
        encoder = self._encoder
        if encoder is None:
            raise ValueError(_NO_FRAMING)
        buffers = encoder.encode_many(payloads)
        queue_buffers(self._transport, buffers, sum(map(len, buffers)), self._write_limit)

    async def drain(self) -> None:
        """Wait while the transport's write buffer is above its high-water mark. Once the
        connection is lost: its error, or ConnectionResetError."""
        protocol = self._protocol
        if protocol._write_paused or protocol._lost or self._transport.is_closing():
            await protocol.drain()

    def write_eof(self) -> None:
        """Half-close: the peer reads EOF once the queued bytes are sent; reading goes on."""
        self._transport.write_eof()

    def close(self) -> None:
        """Close the transport (queued bytes are still sent)."""
        self._transport.close()

    def is_closing(self) -> bool:
        """True once the transport is closing or closed."""
        return self._transport.is_closing()  # type: ignore[no-any-return]

    async def wait_closed(self) -> None:
        """Wait until the connection is closed (connection_lost). Never raises the
        connection's error: reads and drain() report it."""
        if self._protocol._lost:
            return
        waiter = self._loop.create_future()
        if self._closers is None:
            self._closers = [waiter]
        else:
            self._closers.append(waiter)
        await waiter

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The transport's get_extra_info() ("peername", "socket", "ssl_object", ...)."""
        return self._transport.get_extra_info(name, default)

    @property
    def transport(self) -> Any:
        """The asyncio transport."""
        return self._transport

    @property
    def framing(self) -> Optional[Framing]:
        """The framing of read_frame/write_frame (settable, e.g. after a handshake; not while
        a read waits)."""
        return self._decoder.framing  # type: ignore[no-any-return]

    @framing.setter
    def framing(self, value: Optional[Framing]) -> None:
        if self._waiter is not None:
            raise RuntimeError("cannot change the framing while a read waits")
        self._decoder.framing = value
        self._encoder = None if value is None else self._protocol._encoder_class(value)

    def __repr__(self) -> str:
        state = "closed" if self._protocol._lost else ("eof" if self._eof else "open")
        return (f"<fastsock.aio.Stream {state} framing={self.framing!r} buffered={self._decoder.buffered} "
                f"pending={self._transport.get_write_buffer_size()}>")


class _StreamProtocol(WriteFlow, asyncio.BufferedProtocol):
    """The protocol under a Stream: the transport receives straight into the decoder
    (get_buffer is the decoder's own method), and buffer_updated wakes the Stream only when
    its mark is reached."""

    def __init__(self, decoder: Any, encoder_class: Any, write_limit: int,
                 on_connect: Optional[Any] = None) -> None:
        self._decoder = decoder
        self.get_buffer = decoder.get_buffer  # type: ignore[method-assign]
        self._encoder_class = encoder_class
        self._write_limit = write_limit
        self._on_connect = on_connect
        self._mark = NEVER
        self._stream: Optional[Stream] = None
        self.transport: Any = None
        self._init_flow()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        stream = Stream(transport, self)
        self._stream = stream
        self._mark = stream._high
        on_connect = self._on_connect
        if on_connect is not None:
            self._on_connect = None
            on_connect(stream)

    def buffer_updated(self, nbytes: int) -> None:
        decoder = self._decoder
        decoder.commit(nbytes)
        if decoder.buffered >= self._mark:
            self._stream._arrived()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        stream = self._stream
        if stream is None:
            return False
        stream._feed_eof()
        # Keep the transport open for writing (half-close), except under TLS, where asyncio
        # ignores it with a warning.
        return not stream._over_ssl

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self._lose_flow(exc)
        if self._stream is not None:
            self._stream._lose(exc)
