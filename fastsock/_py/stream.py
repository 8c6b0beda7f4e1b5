"""Pure-Python twin of the compiled `Stream`: the same buffering, framing, limits, errors and
nothing-lost rules as `fastsock._c._speedups.Stream`, on a bytearray read buffer (front
deletion is O(1) in CPython) and the standard library's socket calls."""

from __future__ import annotations

import errno
import operator
import socket as _stdsocket
import threading
from collections.abc import Iterable
from typing import Any, Optional, Union

from .. import _streambase
from .. import framing as _framing_mod
from .._errors import FrameTooLarge, IncompleteReadError
from .._socketbase import EAGER_ALLOC_LIMIT
from ..framing import (  # noqa: F401  (re-exported: one set of framings for both backends)
    DEFAULT_MAX_SIZE,
    AsciiLength,
    Delimiter,
    FixedLength,
    Framing,
    FramingError,
    LengthPrefix,
    Netstring,
    Varint,
)
from .socket import _Deadline, _readable_view, _writable_view
from .socket import create_connection as _create_connection
from .socket import socket as _socket

__all__ = ["Stream", "connect", *_framing_mod.__all__]

_COPY_MAX = _streambase.COPY_MAX
_BUSY = _streambase.BUSY_MESSAGE
_recv = _stdsocket.socket.recv
_recv_into = _stdsocket.socket.recv_into
_sendall = _socket.sendall
_sendall_many = _socket.sendall_many


def _size(n: Any, method: str) -> int:
    size = operator.index(n)
    if size < 0:
        raise ValueError(f"negative size in {method}")
    return size


class Stream:
    """Stream(sock, *, framing=None, read_size=65536, max_buffer=64 MiB, write_buffer=65536)

    A buffered, framed byte stream over a connected stream socket (fastsock's or the
    standard library's; TCP over IPv4/IPv6 or AF_UNIX). `read_frame`/`read_frames` cut the
    byte stream into messages per `framing`; small writes are coalesced and sent by
    `flush()` (or once `write_buffer` bytes are pending); large payloads go out with
    sendmsg, never copied.

    The socket's timeout applies to every call as a deadline (None blocks, 0 raises
    BlockingIOError, t > 0 raises TimeoutError); on timeout, would-block, signal or error
    nothing is lost: received bytes stay buffered, unsent bytes stay queued. The Stream owns
    the socket: `close()` flushes then closes it. Using one Stream from two threads at once
    raises RuntimeError.
    """

    def __init__(self, sock: _stdsocket.socket, *, framing: Optional[Framing] = None,
                 read_size: int = _streambase.DEFAULT_READ_SIZE,
                 max_buffer: int = _streambase.DEFAULT_MAX_BUFFER,
                 write_buffer: int = _streambase.DEFAULT_WRITE_BUFFER) -> None:
        _streambase.check_socket(sock)
        self._read_size, self._max_buffer, self._write_buffer = _streambase.check_options(
            read_size, max_buffer, write_buffer)
        self._framing = _streambase.check_framing(framing)
        self._sock = sock
        self._rbuf = bytearray()
        self._wbuf = bytearray()
        self._resume = 0
        self._eof = False
        self._closed = False
        self._clock: Optional[_Deadline] = None
        self._lock = threading.Lock()

    @classmethod
    def from_fd(cls, fd: int, **options: Any) -> "Stream":
        """A Stream over a new socket object that takes ownership of the connected stream
        socket `fd` (family and type are detected); `options` as for Stream()."""
        return cls(_socket(fileno=fd), **options)

    # -- plumbing ---------------------------------------------------------------------

    def _enter(self) -> None:
        if not self._lock.acquire(False):
            raise RuntimeError(_BUSY)
        if self._closed:
            self._lock.release()
            raise OSError(errno.EBADF, "I/O operation on a closed Stream")

    def _exit(self) -> None:
        if self._clock is not None:
            self._clock.restore()
            self._clock = None
        self._lock.release()

    def _arm(self) -> None:
        """Before each wait: the socket may wait only for what is left of this call's deadline."""
        if self._clock is None:
            self._clock = _Deadline(self._sock)
        self._clock.arm()

    def _fill(self, need: int = 0) -> int:
        """One recv appended to the buffer (at least read_size bytes asked, more if a known
        frame needs it, never past max_buffer). Returns the count, 0 at EOF."""
        held = len(self._rbuf)
        want = max(self._read_size, need - held)
        room = min(want, self._max_buffer - held)
        if room <= 0:
            raise FrameTooLarge(held, self._max_buffer,
                                f"the read buffer is full ({held} bytes, max_buffer={self._max_buffer})")
        self._arm()
        chunk = _recv(self._sock, room)
        if not chunk:
            self._eof = True
            return 0
        self._rbuf += chunk
        return len(chunk)

    def _fill_to(self, size: int) -> bool:
        while len(self._rbuf) < size:
            if self._eof or self._fill(size) == 0:
                return False
        return True

    def _take(self, n: int) -> bytes:
        buf = self._rbuf
        out = bytes(buf) if n >= len(buf) else bytes(memoryview(buf)[:n])
        del buf[:n]
        self._resume = 0
        return out

    def _direct(self, dst: memoryview, got: int, keep_from: int) -> tuple[int, bool]:
        """recv_into dst[got:] until full; returns (got, complete). On an exception the bytes
        received into dst[keep_from:got] are appended to the read buffer (nothing lost)."""
        size = len(dst)
        try:
            while got < size:
                self._arm()
                n = _recv_into(self._sock, dst[got:])
                if n == 0:
                    self._eof = True
                    return got, False
                got += n
            return got, True
        except BaseException:
            if got > keep_from:
                self._rbuf += dst[keep_from:got]
            raise

    def _need_framing(self) -> Framing:
        if self._framing is None:
            raise ValueError("this Stream has no framing: pass framing=... to Stream() or set .framing")
        return self._framing  # type: ignore[no-any-return]

    def _next_frame(self) -> Optional[bytes]:
        """The next frame, reading as needed; None at a clean EOF between frames."""
        framing = self._framing
        buf = self._rbuf
        while True:
            held = len(buf)
            header, payload, total = framing._scan(buf, 0, held, self._resume)
            if header >= 0:
                out = bytes(memoryview(buf)[header:header + payload])
                del buf[:total]
                self._resume = 0
                return out
            need, extra = payload, total
            self._resume = extra  # a delimiter's resume offset (unused by sized framings)
            if self._eof:
                if held == 0:
                    return None
                raise IncompleteReadError(self._take(held), need or None)
            trailer = len(framing._trailer)
            if need and not trailer and need - held >= self._read_size:
                return self._large_frame(need, extra)
            if need > self._max_buffer:
                raise FrameTooLarge(need, self._max_buffer,
                                    f"a frame of {need} bytes does not fit max_buffer={self._max_buffer}")
            self._fill(need)

    def _large_frame(self, total: int, header: int) -> bytes:
        """Receive the rest of a large header-announced payload directly into the result."""
        buf = self._rbuf
        held = len(buf)
        payload = total - header
        out = bytearray(payload)
        have = held - header
        out[:have] = memoryview(buf)[header:]
        with memoryview(out) as view:
            got, complete = self._direct(view, have, have)
        if not complete:
            partial = bytes(buf[:header]) + bytes(out[:got])
            self._take(held)
            raise IncompleteReadError(partial, total)
        self._take(held)
        return bytes(out)

    def _drain(self, limit: int) -> list[bytes]:
        """Every complete frame already buffered (at most `limit`); no I/O. Stops quietly at a
        bad frame if it already has one (the next call raises)."""
        framing = self._framing
        buf = self._rbuf
        end = len(buf)
        try:
            first = framing._scan(buf, 0, end, self._resume)
        except (FrameTooLarge, FramingError):
            return []
        if first[0] < 0:
            self._resume = first[2]
            return []
        data = bytes(buf)  # one copy per call; frames are then sliced from bytes directly
        frames: list[bytes] = []
        append = frames.append
        pos = 0
        resume = 0
        if type(framing) is LengthPrefix:
            unpack = framing._struct.unpack_from  # type: ignore[attr-defined]
            width = framing.size
            limit_size = framing.max_size
            if limit_size >= end and limit >= end // width:
                # The common case, with two checks fewer per frame: no frame that fits in
                # the buffer can exceed max_size, and max_frames cannot be reached.
                last = end - width
                while pos <= last:
                    start = pos + width
                    stop = start + unpack(data, pos)[0]
                    if stop > end:
                        break
                    append(data[start:stop])
                    pos = stop
                del buf[:pos]
                self._resume = 0
                return frames
            count = 0
            while count < limit and end - pos >= width:
                size = unpack(data, pos)[0]
                stop = pos + width + size
                if size > limit_size or stop > end:
                    break
                append(data[pos + width:stop])
                pos = stop
                count += 1
        else:
            scan = framing._scan
            while len(frames) < limit:
                try:
                    header, payload, total = scan(data, pos, end, resume)
                except (FrameTooLarge, FramingError):
                    break
                if header < 0:
                    resume = total
                    break
                append(data[pos + header:pos + header + payload])
                pos += total
                resume = 0
        del buf[:pos]
        self._resume = resume
        return frames

    def _until(self, delims: tuple[bytes, ...], limit: Any, keep: bool, line: bool) -> bytes:
        if not delims:
            raise ValueError("read_until() needs at least one delimiter")
        lim = self._max_buffer if limit is None else _size(limit, "read_until")
        for d in delims:
            if not isinstance(d, bytes):
                raise TypeError(f"delimiters must be bytes, not {type(d).__name__}")
            if not d:
                raise ValueError("delimiters cannot be empty")
        maxlen = max(map(len, delims))
        buf = self._rbuf
        resume = 0
        while True:
            held = len(buf)
            at, which = -1, b""
            for d in delims:  # earliest match; the first listed wins a tie
                stop = held if at < 0 else min(held, at + len(d) - 1)
                hit = buf.find(d, resume, stop)
                if hit >= 0 and (at < 0 or hit < at):
                    at, which = hit, d
            if at >= 0:
                if at > lim:
                    raise FrameTooLarge(at, lim)
                end = at + len(which)
                out = bytes(memoryview(buf)[:end if keep else at])
                del buf[:end]
                self._resume = 0
                return out
            if held >= lim + maxlen:
                raise FrameTooLarge(held, lim, f"no delimiter within {lim} bytes")
            if self._eof:
                partial = self._take(held)
                if line:
                    return partial
                raise IncompleteReadError(partial, None)
            resume = max(0, held - (maxlen - 1))
            self._fill(0)

    def _gather(self, extra: list[Any]) -> None:
        """Send the write queue then `extra` (views); on failure keep every unsent byte queued."""
        parts = [bytes(self._wbuf), *extra] if self._wbuf else list(extra)
        try:
            if len(parts) == 1:
                _sendall(self._sock, parts[0])  # type: ignore[arg-type]
            else:
                _sendall_many(self._sock, parts)  # type: ignore[arg-type]
        except BaseException as exc:
            sent = getattr(exc, "bytes_sent", 0)
            rest = bytearray()
            for part in parts:
                size = len(part)
                if sent >= size:
                    sent -= size
                    continue
                rest += part[sent:] if sent else part
                sent = 0
            self._wbuf = rest
            raise
        self._wbuf = bytearray()

    def _flush(self) -> None:
        if self._wbuf:
            self._gather([])

    def _write_many(self, items: Any, framed: bool) -> None:
        if isinstance(items, (bytes, bytearray, memoryview, str)):
            raise TypeError(f"expected an iterable of bytes-like objects, not a single {type(items).__name__}")
        try:
            views = [_readable_view(b) for b in items]
        except TypeError as exc:
            if "is not iterable" in str(exc):
                raise TypeError("expected an iterable of bytes-like objects") from None
            raise
        framing = self._framing
        trailer = framing._trailer if framed else b""
        headers = [framing.header(v) for v in views] if framed else [b""] * len(views)
        total = sum(len(v) for v in views) + sum(map(len, headers)) + len(trailer) * len(views)
        big = any(len(v) > _COPY_MAX for v in views)
        if not big and len(self._wbuf) + total <= self._write_buffer:
            wbuf = self._wbuf
            for head, view in zip(headers, views):
                wbuf += head
                wbuf += view
                wbuf += trailer
            return
        parts: list[Any] = []
        small = bytearray()
        for head, view in zip(headers, views):
            small += head
            if len(view) <= _COPY_MAX:
                small += view
            else:
                if small:
                    parts.append(bytes(small))
                    small = bytearray()
                parts.append(view)
            small += trailer
        if small:
            parts.append(bytes(small))
        self._gather(parts)

    # -- reading ----------------------------------------------------------------------

    def read(self, n: Optional[int] = -1) -> bytes:
        """Up to n bytes: what is buffered, else one recv (b"" at EOF). n < 0 reads to EOF
        (FrameTooLarge if more than max_buffer bytes arrive first)."""
        self._enter()
        try:
            if n is None or n < 0:
                while not self._eof:
                    self._fill(0)
                return self._take(len(self._rbuf))
            size = _size(n, "read")
            if size == 0:
                return b""
            if not self._rbuf and not self._eof:
                self._fill(0)
            return self._take(min(size, len(self._rbuf)))
        finally:
            self._exit()

    def read_exactly(self, n: int) -> bytes:
        """Exactly n bytes. EOF first raises IncompleteReadError (.partial, .expected); on
        timeout or error every byte received stays buffered for the next call."""
        size = _size(n, "read_exactly")
        self._enter()
        try:
            buf = self._rbuf
            held = len(buf)
            if held >= size:
                return self._take(size)
            if size <= self._max_buffer and size - held < self._read_size:
                if not self._fill_to(size):
                    raise IncompleteReadError(self._take(len(buf)), size)
                return self._take(size)
            out = bytearray(min(size, EAGER_ALLOC_LIMIT))
            out[:held] = buf
            got = held
            while True:
                if self._eof:
                    complete = False
                else:
                    with memoryview(out) as view:
                        got, complete = self._direct(view, got, held)
                if not complete:
                    self._take(held)
                    raise IncompleteReadError(bytes(out[:got]), size)
                if got == size:
                    self._take(held)
                    return bytes(out)
                out += bytes(min(size, 2 * len(out)) - len(out))  # grow as data arrives
        finally:
            self._exit()

    def readinto(self, buffer: Any) -> int:
        """Fill `buffer` with what is buffered, else one recv (straight into `buffer` when it is
        at least read_size bytes); returns the count, 0 at EOF."""
        view = _writable_view(buffer, "readinto")
        self._enter()
        try:
            if len(view) == 0:
                return 0
            if not self._rbuf and not self._eof:
                if len(view) >= self._read_size:
                    self._arm()
                    n = _recv_into(self._sock, view)
                    if n == 0:
                        self._eof = True
                    return n
                self._fill(0)
            k = min(len(view), len(self._rbuf))
            view[:k] = memoryview(self._rbuf)[:k]
            del self._rbuf[:k]
            self._resume = 0
            return k
        finally:
            self._exit()

    def read_exactly_into(self, buffer: Any) -> int:
        """Fill all of `buffer`; returns its size. EOF first raises IncompleteReadError; on
        timeout or error every byte received stays buffered (the buffer's contents are then
        unspecified)."""
        view = _writable_view(buffer, "read_exactly_into")
        self._enter()
        try:
            size = len(view)
            buf = self._rbuf
            held = len(buf)
            if held < size and size <= self._max_buffer and size - held < self._read_size:
                if not self._fill_to(size):
                    raise IncompleteReadError(self._take(len(buf)), size)
                held = size
            if held >= size:
                view[:] = memoryview(buf)[:size]
                self._take(size)
                return size
            view[:held] = buf
            got, complete = (held, False) if self._eof else self._direct(view, held, held)
            if not complete:
                self._take(held)
                raise IncompleteReadError(bytes(view[:got]), size)
            self._take(held)
            return size
        finally:
            self._exit()

    def readline(self, limit: Optional[int] = None) -> bytes:
        """One line, ending with b"\\n" (at EOF: the rest, possibly without it; b"" when
        nothing is left). More than `limit` bytes (default max_buffer) before the newline
        raise FrameTooLarge, with every byte still buffered."""
        self._enter()
        try:
            return self._until((b"\n",), limit, True, True)
        finally:
            self._exit()

    def read_until(self, delimiter: Union[bytes, tuple[bytes, ...]], limit: Optional[int] = None,
                   keep: bool = True) -> bytes:
        """Bytes up to the earliest occurrence of `delimiter` (bytes, or a tuple of bytes:
        the earliest match wins, the first listed on a tie), including it unless keep=False.
        More than `limit` bytes (default max_buffer) before it raise FrameTooLarge; EOF first
        raises IncompleteReadError (.partial holds the rest)."""
        delims = delimiter if isinstance(delimiter, tuple) else (delimiter,)
        delims = tuple(bytes(d) if isinstance(d, (bytearray, memoryview)) else d for d in delims)
        self._enter()
        try:
            return self._until(delims, limit, keep, False)
        finally:
            self._exit()

    def peek(self, n: Optional[int] = -1) -> bytes:
        """Up to n buffered bytes (n < 0: all) without consuming them; reads the socket once
        only if nothing is buffered."""
        self._enter()
        try:
            if not self._rbuf and not self._eof:
                self._fill(0)
            size = len(self._rbuf)
            if n is not None and n >= 0:
                size = min(size, _size(n, "peek"))
            return bytes(memoryview(self._rbuf)[:size])
        finally:
            self._exit()

    def discard(self, n: int) -> int:
        """Drop up to n buffered bytes (no I/O); returns how many were dropped. Use it to
        skip past a frame refused by FrameTooLarge or FramingError."""
        size = _size(n, "discard")
        self._enter()
        try:
            k = min(size, len(self._rbuf))
            del self._rbuf[:k]
            self._resume = 0
            return k
        finally:
            self._exit()

    def read_frame(self) -> bytes:
        """The next frame's payload. EOFError at a clean EOF between frames;
        IncompleteReadError (.partial: the frame's bytes so far, .expected: its length if
        known) at EOF inside one; FrameTooLarge or FramingError, with the bytes left
        buffered, for a frame that is too large or malformed."""
        self._enter()
        try:
            self._need_framing()
            frame = self._next_frame()
            if frame is None:
                raise EOFError("end of stream")
            return frame
        finally:
            self._exit()

    def read_frames(self, max_frames: Optional[int] = None) -> list[bytes]:
        """Every complete frame already buffered (at most max_frames), as a list. Reads the
        socket only when no complete frame is buffered, until one is; [] at a clean EOF."""
        limit = 1 << 62
        if max_frames is not None:
            limit = _size(max_frames, "read_frames")
            if limit == 0:
                raise ValueError("max_frames must be >= 1")
        self._enter()
        try:
            self._need_framing()
            frames = self._drain(limit)
            if not frames:
                frame = self._next_frame()
                if frame is not None:
                    frames.append(frame)
                    if limit > 1:
                        frames += self._drain(limit - 1)
            return frames
        finally:
            self._exit()

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> bytes:
        """The next frame; StopIteration at a clean EOF between frames."""
        self._enter()
        try:
            self._need_framing()
            frame = self._next_frame()
            if frame is None:
                raise StopIteration
            return frame
        finally:
            self._exit()

    def at_eof(self) -> bool:
        """True when the peer has closed its side and every buffered byte has been read."""
        return self._eof and not self._rbuf

    @property
    def buffered(self) -> int:
        """Bytes received and held in the read buffer."""
        return len(self._rbuf)

    @property
    def pending(self) -> int:
        """Bytes queued for writing and not yet sent."""
        return len(self._wbuf)

    # -- writing ----------------------------------------------------------------------

    def write(self, data: Any) -> None:
        """Queue `data` (coalesced with other small writes); sends once write_buffer bytes
        are pending, or at once with sendmsg for payloads over 16 KiB (never copied). If the
        send fails (timeout, would-block, error), the unsent bytes stay queued: nothing is
        lost, nothing needs resending; call flush() to continue."""
        view = _readable_view(data)
        self._enter()
        try:
            if len(view) <= _COPY_MAX and len(self._wbuf) + len(view) <= self._write_buffer:
                self._wbuf += view
                return None
            self._gather([view])
        finally:
            self._exit()

    def writelines(self, lines: Iterable[Any]) -> None:
        """write() every bytes-like object of `lines`, with one gather send if they do not all
        fit the write queue."""
        self._enter()
        try:
            self._write_many(lines, False)
        finally:
            self._exit()

    def write_frame(self, payload: Any) -> None:
        """Queue one frame carrying `payload`, encoded per the framing. A large payload goes
        out at once with header and queue in one sendmsg. Raises FrameTooLarge above the
        framing's max_size, FramingError for a payload it cannot carry; failures of the
        send itself keep the unsent bytes queued (see write)."""
        view = _readable_view(payload)
        self._enter()
        try:
            framing = self._need_framing()
            header = framing.header(view)
            trailer = framing._trailer
            size = len(view)
            if size <= _COPY_MAX and len(self._wbuf) + len(header) + size + len(trailer) <= self._write_buffer:
                wbuf = self._wbuf
                wbuf += header
                wbuf += view
                wbuf += trailer
                return None
            self._gather([part for part in (header, view, trailer) if len(part)])
        finally:
            self._exit()

    def write_frames(self, payloads: Iterable[Any]) -> None:
        """Queue one frame per payload; if they do not fit the write queue, send the queue and
        every frame with one gather send (small payloads joined, large ones sent from their
        own memory). Every payload is validated before anything is sent."""
        self._enter()
        try:
            self._need_framing()
            self._write_many(payloads, True)
        finally:
            self._exit()

    def flush(self) -> None:
        """Send every queued byte (the timeout is a deadline for the whole flush). On failure
        the unsent bytes stay queued; call flush() again to resume."""
        self._enter()
        try:
            self._flush()
        finally:
            self._exit()

    def sendfile(self, file: Any, offset: int = 0, count: Optional[int] = None) -> int:
        """Flush, then send `count` bytes (None: to the end) of binary `file` from `offset`,
        with os.sendfile (zero-copy) where the file has a descriptor. Returns the bytes sent;
        a failure carries `.bytes_sent`. The file position ends after the last byte sent."""
        self._enter()
        try:
            self._flush()
            return _streambase.sendfile(self._sock, file, offset, count)
        finally:
            self._exit()

    def shutdown_write(self) -> None:
        """Flush, then half-close: the peer sees EOF, and this side can still read to EOF."""
        self._enter()
        try:
            self._flush()
            self._sock.shutdown(_stdsocket.SHUT_WR)
        finally:
            self._exit()

    def close(self) -> None:
        """Flush, then close the socket (closed even if the flush fails, whose error is then
        raised). Closing twice is harmless."""
        if self._closed:
            return
        if not self._lock.acquire(False):
            raise RuntimeError(_BUSY)
        try:
            if self._wbuf and self._sock.fileno() >= 0:
                self._flush()
        finally:
            self._closed = True
            self._rbuf = bytearray()
            self._wbuf = bytearray()
            if self._clock is not None:
                self._clock.restore()
                self._clock = None
            self._lock.release()
            self._sock.close()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- attributes -------------------------------------------------------------------

    @property
    def framing(self) -> Optional[Framing]:
        """The framing used by read_frame/write_frame (settable, e.g. after a handshake)."""
        return self._framing  # type: ignore[no-any-return]

    @framing.setter
    def framing(self, value: Optional[Framing]) -> None:
        if self._lock.locked():
            raise RuntimeError(_BUSY)
        self._framing = _streambase.check_framing(value)
        self._resume = 0

    @property
    def socket(self) -> _stdsocket.socket:
        """The wrapped socket."""
        return self._sock

    @property
    def closed(self) -> bool:
        """True after close()."""
        return self._closed

    def fileno(self) -> int:
        """The socket's file descriptor (-1 once closed)."""
        return -1 if self._closed else self._sock.fileno()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self._sock.fileno()}"
        return (f"<fastsock.Stream {state} framing={self._framing!r} "
                f"buffered={len(self._rbuf)} pending={len(self._wbuf)}>")


def connect(address: Any, *, timeout: Any = _stdsocket._GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[attr-defined]
            **options: Any) -> Stream:
    """Connect to `address` and return a Stream over the new socket: (host, port) for TCP
    (TCP_NODELAY set: the Stream coalesces writes itself), a path for AF_UNIX. `timeout`
    applies to connecting and stays on the socket; `options` as for Stream()."""
    return Stream(_streambase.connect_socket(_socket, _create_connection, address, timeout), **options)
