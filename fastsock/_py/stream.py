"""Pure-Python twin of the compiled `Stream`: the same buffering, framing, limits, errors and
nothing-lost rules as `fastsock._c._speedups.Stream`, over the standard library's socket
calls.

The read buffer is laid out like the compiled one (src_c/fs_buffer.h): a bytearray whose
[_rhead:_rtail] slice holds the unread bytes, filled in place by recv_into. Consuming moves
_rhead; memory moves only when free space runs short. The bytearray is never resized (it is
replaced when it must grow): a bytearray that shrinks after each read (CPython reallocates
one whose size drops below half its allocation) and regrows on the next one makes glibc
trim and re-fault the heap on every call, which cost a third of the W3 throughput.

Signals. A Python signal handler that raises does so at the interpreter's next check: when a
function starts, at a loop's back edge, or right after a call returns -- never between two
plain statements (an attribute store, `self._rhead += n`, a slice assignment). The code
below is laid out so that such an exception can strike anywhere without losing or
duplicating a byte, and without leaving the Stream busy:
- the busy flag is tested and set with no call in between, and cleared in the innermost
  `finally` by a plain store (like the compiled twin's flag);
- every recv/send result is stored inside C before a handler can run (`socket._recorded`),
  and bytes received are in the read buffer, or in a buffer whose progress the caller
  holds, at every check;
- helpers never consume buffered bytes when they return normally: the public method does,
  after its last call, then returns.
"""

from __future__ import annotations

import errno
import socket as _stdsocket
import sys
from collections.abc import Iterable
from typing import Any, NoReturn, Optional, Union

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
from .socket import (
    _IOV_MAX,
    _MSG_NOSIGNAL,
    _Deadline,
    _advance,
    _readable_view,
    _recorded,
    _size,
    _writable_view,
)
from .socket import create_connection as _create_connection
from .socket import socket as _socket

__all__ = ["Stream", "connect", *_framing_mod.__all__]

_COPY_MAX = _streambase.COPY_MAX
_BUSY = _streambase.BUSY_MESSAGE
_recv_into = _stdsocket.socket.recv_into
_send = _stdsocket.socket.send
_sendmsg = getattr(_stdsocket.socket, "sendmsg", None)
#: A large frame's payload buffer starts this big (or as big as what is already buffered)
#: and doubles as bytes arrive: a new bytearray commits every page, so a length prefix alone
#: must not make it large.
_FRAME_GROW_FROM = 1 << 18
#: read_frames() without a limit (the compiled backend's PY_SSIZE_T_MAX).
_NO_LIMIT = sys.maxsize
#: read_frames(max_frames=n) up to this n copies frames one by one instead of copying every
#: buffered byte first (see _drain).
_FEW_FRAMES = 64
#: An emptied read buffer keeps its memory up to this size (or 4 x read_size), as compiled.
_SHRINK_MIN = 1 << 20


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
        self._rhead = 0  # _rbuf[:_rhead] consumed, [_rhead:_rtail] held, [_rtail:] free space
        self._rtail = 0
        self._shrink_at = max(4 * self._read_size, _SHRINK_MIN)
        self._wbuf = bytearray()
        self._resume = 0
        self._eof = False
        self._closed = False
        self._busy = False
        self._clock: Optional[_Deadline] = None
        # Bytes being received straight into a result: (result, start, progress).
        self._landing: Optional[tuple[Any, int, list[int]]] = None
        # A gather send in progress: (parts, counts sent).
        self._sending: Optional[tuple[list[Any], list[int]]] = None

    @classmethod
    def from_fd(cls, fd: int, **options: Any) -> "Stream":
        """A Stream over a new socket object that takes ownership of the connected stream
        socket `fd` (family and type are detected); `options` as for Stream()."""
        return cls(_socket(fileno=fd), **options)

    # -- plumbing ---------------------------------------------------------------------
    #
    # Every public method that does I/O starts with
    #     if (self._busy or self._closed or self._clock is not None or self._landing is not None
    #             or self._sending is not None):
    #         self._refuse()
    #     self._busy = True
    # (no call between the test and the store: atomic under the GIL, and no signal handler
    # can run in between) and ends with
    #     finally:
    #         try:
    #             if self._clock is not None:
    #                 self._disarm()
    #         finally:
    #             self._busy = False
    # so that the flag is cleared even when a handler raises inside _disarm.

    def _refuse(self) -> None:
        """A call cannot simply start: raise if the Stream is busy or closed; else finish what
        a signal handler's exception interrupted in an earlier call's cleanup (keep a large
        frame's bytes, restore the socket timeout), and go on."""
        if self._busy:
            raise RuntimeError(_BUSY)
        if self._closed:
            raise OSError(errno.EBADF, "I/O operation on a closed Stream")
        self._land()
        self._settle()
        self._disarm()

    def _disarm(self) -> None:
        clock = self._clock
        if clock is not None:
            clock.restore()
            self._clock = None

    def _arm(self) -> None:
        """Before each wait: the socket may wait only for what is left of this call's deadline
        (kept in self._clock only for a socket with a timeout: nothing to restore otherwise)."""
        clock = self._clock
        if clock is None:
            if not self._sock.gettimeout():
                return  # blocking or non-blocking: no deadline to keep
            clock = _Deadline(self._sock)
            if clock.deadline is None:
                return
            self._clock = clock
        clock.arm()

    def _reserve(self, want: int, limit: int) -> int:
        """Free space after the held bytes for `want` more (as fs_buffer_reserve): move the
        held bytes to the front, then grow (at least doubling) up to `limit` (a capacity
        already above it is kept). Returns the free space, below `want` only when `limit`
        stopped the growth. Every store follows the last call: a signal handler's exception
        leaves the old layout or the new one, never a mix."""
        buf = self._rbuf
        cap = len(buf)
        head = self._rhead
        tail = self._rtail
        if cap - tail >= want:
            return cap - tail
        held = tail - head
        if cap - held < want and cap < limit:
            new = bytearray(min(max(2 * cap, held + want), limit))
            new[:held] = memoryview(buf)[head:tail]
            self._rbuf = new
            self._rhead = 0
            self._rtail = held
            return len(new) - held
        if head:
            view = memoryview(buf)
            view[:held] = view[head:tail]  # overlapping: memoryview assignment uses memmove
            self._rhead = 0
            self._rtail = held
        return cap - held

    def _fill(self, need: int = 0) -> int:
        """One recv_into the buffer's free space (room for read_size bytes at least, for a
        known frame's `need` held bytes if more, the buffer never growing past max_buffer).
        Returns the count, 0 at EOF."""
        held = self._rtail - self._rhead
        if not held:
            if len(self._rbuf) > self._shrink_at:
                self._rbuf = bytearray()  # after a huge read, do not keep its memory
            self._rhead = self._rtail = 0  # as fs_buffer_consume: an empty buffer starts at 0
        # bytearray(n) commits n zeroed bytes: grow for a known frame only as bytes arrive.
        want = max(self._read_size, min(need - held, max(held, _FRAME_GROW_FROM)))
        if self._reserve(want, self._max_buffer) <= 0:
            raise FrameTooLarge(held, self._max_buffer,
                                f"the read buffer is full ({held} bytes, max_buffer={self._max_buffer})")
        self._arm()
        tail = self._rtail
        free = memoryview(self._rbuf)[tail:]
        got: list[int] = []
        try:
            _recorded(got, _recv_into, self._sock, free)
        finally:
            # The count was stored in `got` inside C: the bytes are kept even when a signal
            # handler raised right after recv_into returned.
            if got:
                if got[0]:
                    self._rtail = tail + got[0]
                else:
                    self._eof = True
        return got[0]

    def _fill_to(self, size: int) -> bool:
        while self._rtail - self._rhead < size:
            if self._eof or self._fill(size) == 0:
                return False
        return True

    def _head(self, n: int) -> bytes:
        """The first n buffered bytes (n <= buffered), not consumed."""
        head = self._rhead
        return bytes(memoryview(self._rbuf)[head:head + n])

    def _raise_incomplete(self, expected: Optional[int]) -> NoReturn:
        """EOF inside a read: raise IncompleteReadError with every buffered byte (consumed)."""
        exc = IncompleteReadError(self._head(self._rtail - self._rhead), expected)
        if self._clock is not None:
            self._disarm()
        self._rhead = self._rtail  # after the last call: consumed once the error holds them
        self._resume = 0
        raise exc

    def _direct(self, dst: memoryview, prog: list[int]) -> bool:
        """recv_into dst from prog[0] on until it is full; True when full, False at EOF.
        prog[0] counts the bytes in dst; a count that a signal handler's exception kept from
        being added waits in prog[1]: sum(prog) is always exact (see _land)."""
        size = len(dst)
        sock = self._sock
        while prog[0] < size:
            self._arm()
            n = _recorded(prog, _recv_into, sock, dst[prog[0]:])
            prog[0] += n
            del prog[1:]
            if n == 0:
                self._eof = True
                return False
        return True

    def _receive(self, out: bytearray, size: int, prog: list[int]) -> bool:
        """_direct into `out`, growing it (doubling, up to `size`) only as bytes arrive;
        True once it holds `size` bytes, False at EOF."""
        while not self._eof:
            view = memoryview(out)
            try:
                complete = self._direct(view, prog)
            finally:
                view.release()
            if not complete:
                return False
            if len(out) >= size:
                return True
            out += bytes(min(size, 2 * len(out)) - len(out))
        return False

    def _land(self) -> None:
        """After an exception: the bytes received straight into a result (dst[start:], the
        held bytes having been copied to dst[:start] without being consumed) join the read
        buffer. The append and the reset are two plain statements: done once, or not at all
        (then the next call's entry does it)."""
        landing = self._landing
        if landing is not None:
            dst, start, prog = landing
            end = sum(prog)
            self._reserve(end - start, _NO_LIMIT)  # consistent layout whether or not it ends
            tail = self._rtail
            self._rbuf[tail:tail + end - start] = dst[start:end]  # same length: no resize
            self._rtail = tail + end - start
            self._landing = None

    def _settle(self) -> None:
        """After a failed gather send: exactly the unsent bytes become the write queue (the
        same all-or-nothing way as _land)."""
        sending = self._sending
        if sending is not None:
            parts, moved = sending
            rest = _unsent(parts, sum(moved))
            self._wbuf = rest
            self._sending = None

    def _need_framing(self) -> Framing:
        if self._framing is None:
            raise ValueError("this Stream has no framing: pass framing=... to Stream() or set .framing")
        return self._framing  # type: ignore[no-any-return]

    def _next_frame(self) -> tuple[Optional[bytes], int]:
        """(the next frame, bytes to consume), reading as needed; (None, 0) at a clean EOF
        between frames. Consumes nothing (the caller does, last)."""
        framing = self._framing
        while True:
            head = self._rhead
            held = self._rtail - head
            header, payload, total = framing._scan(self._rbuf, head, self._rtail, self._resume)
            if header >= 0:
                start = head + header
                return bytes(memoryview(self._rbuf)[start:start + payload]), total
            need, extra = payload, total
            self._resume = extra  # a delimiter's resume offset (unused by sized framings)
            if self._eof:
                if held == 0:
                    return None, 0
                self._raise_incomplete(need or None)
            trailer = len(framing._trailer)
            if need and not trailer and need - held >= self._read_size:
                return self._large_frame(need, extra)
            if need > self._max_buffer:
                raise FrameTooLarge(need, self._max_buffer,
                                    f"a frame of {need} bytes does not fit max_buffer={self._max_buffer}")
            self._fill(need)

    def _large_frame(self, total: int, header: int) -> tuple[bytes, int]:
        """Receive the rest of a large header-announced payload straight into the result,
        whose memory grows only as bytes arrive (a peer's length prefix alone commits at most
        _FRAME_GROW_FROM bytes). Until the caller consumes the frame, self._landing says
        where the received bytes are, so that an exception (even one raised by a signal
        handler as this returns) puts them in the read buffer."""
        head = self._rhead
        held = self._rtail - head
        payload = total - header
        have = held - header
        out = bytearray(min(payload, max(have, _FRAME_GROW_FROM)))
        out[:have] = memoryview(self._rbuf)[head + header:self._rtail]
        prog = [have]
        self._landing = (out, have, prog)  # until consumed: see _land
        try:
            complete = self._receive(out, payload, prog)
            result = bytes(out) if complete else self._head(header) + bytes(out[:prog[0]])
        except BaseException:
            self._land()
            raise
        if complete:
            return result, held
        exc = IncompleteReadError(result, total)
        if self._clock is not None:
            self._disarm()
        self._rhead += held
        self._resume = 0
        self._landing = None
        raise exc

    def _drain(self, limit: int, start: int) -> tuple[list[bytes], int, int]:
        """Every complete frame buffered from offset `start` on (at most `limit`); no I/O:
        (frames, offset after them, resume offset for the next scan). Stops quietly at a bad
        frame if it already has one (the next call raises). Consumes nothing."""
        framing = self._framing
        head = self._rhead
        end = self._rtail - head
        try:
            first = framing._scan(self._rbuf, head + start, self._rtail, self._resume if start == 0 else 0)
        except (FrameTooLarge, FramingError):
            return [], start, 0
        if first[0] < 0:
            return [], start, first[2]
        if limit <= _FEW_FRAMES:
            return self._drain_few(limit, start)
        # One copy per call; each frame is then one slice of bytes (cheaper per frame than
        # bytes(memoryview slice)).
        data = bytes(memoryview(self._rbuf)[head:self._rtail])
        frames: list[bytes] = []
        append = frames.append
        pos = start
        resume = 0
        if type(framing) is LengthPrefix:
            unpack = framing._struct.unpack_from  # type: ignore[attr-defined]
            width = framing.size
            limit_size = framing.max_size
            while limit_size >= end:
                # The common case, with two checks fewer per frame: no frame that fits in
                # the buffer can exceed max_size, and n bytes hold at most n // width
                # frames, so max_frames cannot be passed inside `region`.
                room = limit - len(frames)
                region = end if room >= (end - pos) // width else pos + room * width
                last = region - width
                before = pos
                while pos <= last:
                    body = pos + width
                    stop = body + unpack(data, pos)[0]
                    if stop > region:
                        break
                    append(data[body:stop])
                    pos = stop
                if region == end:
                    return frames, pos, 0
                if pos == before:
                    break  # no frame fits in the region: the checked loop finishes
            count = len(frames)
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
        return frames, pos, resume

    def _drain_few(self, limit: int, start: int) -> tuple[list[bytes], int, int]:
        """_drain for a small `limit`: each frame copied straight out of the buffer, so the
        cost follows the frames taken, not the bytes buffered."""
        framing = self._framing
        buf = self._rbuf
        head = self._rhead
        tail = self._rtail
        view = memoryview(buf)
        frames: list[bytes] = []
        pos = start
        resume = self._resume if start == 0 else 0
        while len(frames) < limit:
            try:
                header, payload, total = framing._scan(buf, head + pos, tail, resume)
            except (FrameTooLarge, FramingError):
                break
            if header < 0:
                resume = total
                break
            at = head + pos + header
            frames.append(bytes(view[at:at + payload]))
            pos += total
            resume = 0
        return frames, pos, resume

    def _until(self, delims: tuple[bytes, ...], limit: Any, keep: bool, line: bool) -> tuple[bytes, int]:
        """(bytes up to the earliest delimiter, bytes to consume); consumes nothing unless
        it raises IncompleteReadError."""
        if not delims:
            raise ValueError("read_until() needs at least one delimiter")
        lim = self._max_buffer if limit is None else _size(limit, "readline" if line else "read_until")
        for d in delims:
            if not isinstance(d, bytes):
                raise TypeError(f"delimiters must be bytes, not {type(d).__name__}")
            if not d:
                raise ValueError("delimiters cannot be empty")
        maxlen = max(map(len, delims))
        resume = 0
        while True:
            buf = self._rbuf
            head = self._rhead
            held = self._rtail - head
            at, which = -1, b""
            for d in delims:  # earliest match; the first listed wins a tie
                stop = held if at < 0 else min(held, at + len(d) - 1)
                hit = buf.find(d, head + resume, head + stop)
                if hit >= 0 and (at < 0 or hit - head < at):
                    at, which = hit - head, d
            if at >= 0:
                if at > lim:
                    raise FrameTooLarge(at, lim)
                end = at + len(which)
                return self._head(end if keep else at), end
            if held >= lim + maxlen:
                raise FrameTooLarge(held, lim, f"no delimiter within {lim} bytes")
            if self._eof:
                if line:
                    return self._head(held), held
                self._raise_incomplete(None)
            resume = max(0, held - (maxlen - 1))
            self._fill(0)

    def _gather(self, extra: list[Any]) -> None:
        """Send the write queue then `extra` (views) with gather sends. Each send's count is
        recorded inside C before a signal handler can raise, so on any failure exactly the
        unsent bytes stay queued: nothing lost, nothing sent twice."""
        parts = [bytes(self._wbuf), *extra] if self._wbuf else list(extra)
        moved: list[int] = []
        self._sending = (parts, moved)  # until settled: see _settle
        try:
            self._send_all(parts, moved)
            del self._wbuf[:]  # sent: the queue empties with no call in between
            self._sending = None
        except BaseException:
            self._settle()
            raise

    def _send_all(self, parts: list[Any], moved: list[int]) -> None:
        views = [memoryview(p) for p in parts if len(p)]
        sock = self._sock
        idx = 0  # first view not yet fully sent
        while idx < len(views):
            self._arm()
            if idx == len(views) - 1 or _sendmsg is None:
                n = _recorded(moved, _send, sock, views[idx], _MSG_NOSIGNAL)
            else:
                n = _recorded(moved, _sendmsg, sock, views[idx:idx + _IOV_MAX], (), _MSG_NOSIGNAL)
            idx = _advance(views, idx, n)

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
        if (self._busy or self._closed or self._clock is not None or self._landing is not None
                or self._sending is not None):
            self._refuse()
        self._busy = True
        try:
            if n is None or n < 0:
                while not self._eof:
                    self._fill(0)
                size = self._rtail - self._rhead
            else:
                size = _size(n, "read")
                if size == 0:
                    return b""
                if self._rtail == self._rhead and not self._eof:
                    self._fill(0)
                size = min(size, self._rtail - self._rhead)
            out = self._head(size)
            if self._clock is not None:
                self._disarm()
            self._rhead += size
            self._resume = 0
            return out
        finally:
            try:
                if self._clock is not None:
                    self._disarm()
            finally:
                self._busy = False

    def read_exactly(self, n: int) -> bytes:
        """Exactly n bytes. EOF first raises IncompleteReadError (.partial, .expected); on
        timeout or error every byte received stays buffered for the next call."""
        size = _size(n, "read_exactly")
        if (self._busy or self._closed or self._clock is not None or self._landing is not None
                or self._sending is not None):
            self._refuse()
        self._busy = True
        try:
            held = self._rtail - self._rhead
            if held < size and size <= self._max_buffer and size - held < self._read_size:
                if not self._fill_to(size):
                    self._raise_incomplete(size)
                held = size
            if held >= size:
                out = self._head(size)
                if self._clock is not None:
                    self._disarm()
                self._rhead += size
                self._resume = 0
                return out
            # Straight from the socket into the result (every held byte first); memory
            # beyond 16 MiB is taken as bytes arrive.
            result = bytearray(max(held, min(size, EAGER_ALLOC_LIMIT)))
            result[:held] = memoryview(self._rbuf)[self._rhead:self._rtail]
            prog = [held]
            self._landing = (result, held, prog)  # until consumed: see _land
            try:
                complete = self._receive(result, size, prog)
                out = bytes(result) if complete else b""
                exc = None if complete else IncompleteReadError(bytes(result[:prog[0]]), size)
                if self._clock is not None:
                    self._disarm()
            except BaseException:
                self._land()
                raise
            self._rhead += held
            self._resume = 0
            self._landing = None
            if exc is not None:
                raise exc
            return out
        finally:
            try:
                if self._clock is not None:
                    self._disarm()
            finally:
                self._busy = False

    def readinto(self, buffer: Any) -> int:
        """Fill `buffer` with what is buffered, else one recv (straight into `buffer` when it is
        at least read_size bytes); returns the count, 0 at EOF."""
        view = _writable_view(buffer, "readinto")
        if (self._busy or self._closed or self._clock is not None or self._landing is not None
                or self._sending is not None):
            self._refuse()
        self._busy = True
        try:
            if len(view) == 0:
                return 0
            if self._rtail == self._rhead and not self._eof:
                if len(view) >= self._read_size:
                    self._arm()
                    got: list[int] = []
                    try:
                        _recorded(got, _recv_into, self._sock, view)
                        if self._clock is not None:
                            self._disarm()
                    except BaseException:
                        if got and got[0]:  # received, but this call fails: the next read has them
                            # The buffer is empty: replace it, with no call (and no resize).
                            self._rbuf = self._rbuf[:0] + view[:got[0]]
                            self._rhead = 0
                            self._rtail = got[0]
                        raise
                    if got[0] == 0:
                        self._eof = True
                    return got[0]
                self._fill(0)
            head = self._rhead
            k = min(len(view), self._rtail - head)
            view[:k] = memoryview(self._rbuf)[head:head + k]
            if self._clock is not None:
                self._disarm()
            self._rhead += k
            self._resume = 0
            return k
        finally:
            try:
                if self._landing is not None:
                    self._land()
            finally:
                try:
                    if self._clock is not None:
                        self._disarm()
                finally:
                    self._busy = False

    def read_exactly_into(self, buffer: Any) -> int:
        """Fill all of `buffer`; returns its size. EOF first raises IncompleteReadError; on
        timeout or error every byte received stays buffered (the buffer's contents are then
        unspecified)."""
        view = _writable_view(buffer, "read_exactly_into")
        if (self._busy or self._closed or self._clock is not None or self._landing is not None
                or self._sending is not None):
            self._refuse()
        self._busy = True
        try:
            size = len(view)
            held = self._rtail - self._rhead
            if held < size and size <= self._max_buffer and size - held < self._read_size:
                if not self._fill_to(size):
                    self._raise_incomplete(size)
                held = size
            if held >= size:
                head = self._rhead
                view[:] = memoryview(self._rbuf)[head:head + size]
                if self._clock is not None:
                    self._disarm()
                self._rhead += size
                self._resume = 0
                return size
            view[:held] = memoryview(self._rbuf)[self._rhead:self._rtail]
            prog = [held]
            self._landing = (view, held, prog)  # until consumed: see _land
            try:
                complete = False if self._eof else self._direct(view, prog)
                exc = None if complete else IncompleteReadError(bytes(view[:prog[0]]), size)
                if self._clock is not None:
                    self._disarm()
            except BaseException:
                # The received bytes are in the caller's buffer, which the caller may reuse
                # before a landing deferred by a second exception (at _land's start) is done:
                # land from a private copy, taken with no call (prog is [count] or
                # [count, count not yet added]; see _direct).
                pending = prog[1:]
                end = prog[0] + (pending[0] if pending else 0)
                self._landing = (self._rbuf[:0] + view[held:end], 0, [end - held])
                self._land()
                raise
            self._rhead += held
            self._resume = 0
            self._landing = None
            if exc is not None:
                raise exc
            return size
        finally:
            try:
                if self._clock is not None:
                    self._disarm()
            finally:
                self._busy = False

    def readline(self, limit: Optional[int] = None) -> bytes:
        """One line, ending with b"\\n" (at EOF: the rest, possibly without it; b"" when
        nothing is left). More than `limit` bytes (default max_buffer) before the newline
        raise FrameTooLarge, with every byte still buffered."""
        if (self._busy or self._closed or self._clock is not None or self._landing is not None
                or self._sending is not None):
            self._refuse()
        self._busy = True
        try:
            out, used = self._until((b"\n",), limit, True, True)
            if self._clock is not None:
                self._disarm()
            self._rhead += used
            self._resume = 0
            return out
        finally:
            try:
                if self._clock is not None:
                    self._disarm()
            finally:
                self._busy = False

    def read_until(self, delimiter: Union[bytes, tuple[bytes, ...]], limit: Optional[int] = None,
                   keep: bool = True) -> bytes:
        """Bytes up to the earliest occurrence of `delimiter` (bytes, or a tuple of bytes:
        the earliest match wins, the first listed on a tie), including it unless keep=False.
        More than `limit` bytes (default max_buffer) before it raise FrameTooLarge; EOF first
        raises IncompleteReadError (.partial holds the rest)."""
        delims = delimiter if isinstance(delimiter, tuple) else (delimiter,)
        delims = tuple(bytes(d) if isinstance(d, (bytearray, memoryview)) else d for d in delims)
        if (self._busy or self._closed or self._clock is not None or self._landing is not None
                or self._sending is not None):
            self._refuse()
        self._busy = True
        try:
            out, used = self._until(delims, limit, keep, False)
            if self._clock is not None:
                self._disarm()
            self._rhead += used
            self._resume = 0
            return out
        finally:
            try:
                if self._clock is not None:
                    self._disarm()
            finally:
                self._busy = False

    def peek(self, n: Optional[int] = -1) -> bytes:
        """Up to n buffered bytes (n < 0: all) without consuming them; reads the socket once
        only if nothing is buffered."""
        if (self._busy or self._closed or self._clock is not None or self._landing is not None
                or self._sending is not None):
            self._refuse()
        self._busy = True
        try:
            if self._rtail == self._rhead and not self._eof:
                self._fill(0)
            size = self._rtail - self._rhead
            if n is not None and n >= 0:
                size = min(size, _size(n, "peek"))
            return self._head(size)
        finally:
            try:
                if self._clock is not None:
                    self._disarm()
            finally:
                self._busy = False

    def discard(self, n: int) -> int:
        """Drop up to n buffered bytes (no I/O); returns how many were dropped. Use it to
        skip past a frame refused by FrameTooLarge or FramingError."""
        size = _size(n, "discard")
        if (self._busy or self._closed or self._clock is not None or self._landing is not None
                or self._sending is not None):
            self._refuse()
        self._busy = True
        try:
            k = min(size, self._rtail - self._rhead)
            self._rhead += k
            self._resume = 0
            return k
        finally:
            self._busy = False

    def read_frame(self) -> bytes:
        """The next frame's payload. EOFError at a clean EOF between frames;
        IncompleteReadError (.partial: the frame's bytes so far, .expected: its length if
        known) at EOF inside one; FrameTooLarge or FramingError, with the bytes left
        buffered, for a frame that is too large or malformed."""
        if (self._busy or self._closed or self._clock is not None or self._landing is not None
                or self._sending is not None):
            self._refuse()
        self._busy = True
        try:
            self._need_framing()
            frame, used = self._next_frame()
            if frame is None:
                raise EOFError("end of stream")
            if self._clock is not None:
                self._disarm()
            self._rhead += used
            self._resume = 0
            self._landing = None
            return frame
        finally:
            try:
                if self._landing is not None:
                    self._land()
            finally:
                try:
                    if self._clock is not None:
                        self._disarm()
                finally:
                    self._busy = False

    def read_frames(self, max_frames: Optional[int] = None) -> list[bytes]:
        """Every complete frame already buffered (at most max_frames), as a list. Reads the
        socket only when no complete frame is buffered, until one is; [] at a clean EOF."""
        limit = _NO_LIMIT
        if max_frames is not None:
            limit = _size(max_frames, "read_frames")
            if limit == 0:
                raise ValueError("max_frames must be >= 1")
        if (self._busy or self._closed or self._clock is not None or self._landing is not None
                or self._sending is not None):
            self._refuse()
        self._busy = True
        try:
            self._need_framing()
            frames, used, resume = self._drain(limit, 0)
            if not frames:
                frame, used = self._next_frame()
                if frame is None:
                    return frames
                more, used, resume = self._drain(limit - 1, used) if limit > 1 else ([], used, 0)
                frames = [frame, *more]
            if self._clock is not None:
                self._disarm()
            self._rhead += used
            self._resume = resume
            self._landing = None
            return frames
        finally:
            try:
                if self._landing is not None:
                    self._land()
            finally:
                try:
                    if self._clock is not None:
                        self._disarm()
                finally:
                    self._busy = False

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> bytes:
        """The next frame; StopIteration at a clean EOF between frames."""
        if (self._busy or self._closed or self._clock is not None or self._landing is not None
                or self._sending is not None):
            self._refuse()
        self._busy = True
        try:
            self._need_framing()
            frame, used = self._next_frame()
            if frame is None:
                raise StopIteration
            if self._clock is not None:
                self._disarm()
            self._rhead += used
            self._resume = 0
            self._landing = None
            return frame
        finally:
            try:
                if self._landing is not None:
                    self._land()
            finally:
                try:
                    if self._clock is not None:
                        self._disarm()
                finally:
                    self._busy = False

    def at_eof(self) -> bool:
        """True when the peer has closed its side and every buffered byte has been read."""
        return self._eof and self._rtail == self._rhead

    @property
    def buffered(self) -> int:
        """Bytes received and held in the read buffer."""
        return self._rtail - self._rhead

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
        if (self._busy or self._closed or self._clock is not None or self._landing is not None
                or self._sending is not None):
            self._refuse()
        self._busy = True
        try:
            if len(view) <= _COPY_MAX and len(self._wbuf) + len(view) <= self._write_buffer:
                self._wbuf += view
                return None
            self._gather([view])
        finally:
            try:
                if self._clock is not None:
                    self._disarm()
            finally:
                self._busy = False

    def writelines(self, lines: Iterable[Any]) -> None:
        """write() every bytes-like object of `lines`, with one gather send if they do not all
        fit the write queue."""
        if (self._busy or self._closed or self._clock is not None or self._landing is not None
                or self._sending is not None):
            self._refuse()
        self._busy = True
        try:
            self._write_many(lines, False)
        finally:
            try:
                if self._clock is not None:
                    self._disarm()
            finally:
                self._busy = False

    def write_frame(self, payload: Any) -> None:
        """Queue one frame carrying `payload`, encoded per the framing. A large payload goes
        out at once with header and queue in one sendmsg. Raises FrameTooLarge above the
        framing's max_size, FramingError for a payload it cannot carry; failures of the
        send itself keep the unsent bytes queued (see write)."""
        view = _readable_view(payload)
        if (self._busy or self._closed or self._clock is not None or self._landing is not None
                or self._sending is not None):
            self._refuse()
        self._busy = True
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
            try:
                if self._clock is not None:
                    self._disarm()
            finally:
                self._busy = False

    def write_frames(self, payloads: Iterable[Any]) -> None:
        """Queue one frame per payload; if they do not fit the write queue, send the queue and
        every frame with one gather send (small payloads joined, large ones sent from their
        own memory). Every payload is validated before anything is sent."""
        if (self._busy or self._closed or self._clock is not None or self._landing is not None
                or self._sending is not None):
            self._refuse()
        self._busy = True
        try:
            self._need_framing()
            self._write_many(payloads, True)
        finally:
            try:
                if self._clock is not None:
                    self._disarm()
            finally:
                self._busy = False

    def flush(self) -> None:
        """Send every queued byte (the timeout is a deadline for the whole flush). On failure
        the unsent bytes stay queued; call flush() again to resume."""
        if (self._busy or self._closed or self._clock is not None or self._landing is not None
                or self._sending is not None):
            self._refuse()
        self._busy = True
        try:
            self._flush()
        finally:
            try:
                if self._clock is not None:
                    self._disarm()
            finally:
                self._busy = False

    def sendfile(self, file: Any, offset: int = 0, count: Optional[int] = None) -> int:
        """Flush, then send `count` bytes (None: to the end) of binary `file` from `offset`,
        with os.sendfile (zero-copy) where the file has a descriptor. Returns the bytes sent;
        a failure carries `.bytes_sent`. The file position ends after the last byte sent."""
        if (self._busy or self._closed or self._clock is not None or self._landing is not None
                or self._sending is not None):
            self._refuse()
        self._busy = True
        try:
            self._flush()
            return _streambase.sendfile(self._sock, file, offset, count)
        finally:
            try:
                if self._clock is not None:
                    self._disarm()
            finally:
                self._busy = False

    def shutdown_write(self) -> None:
        """Flush, then half-close: the peer sees EOF, and this side can still read to EOF."""
        if (self._busy or self._closed or self._clock is not None or self._landing is not None
                or self._sending is not None):
            self._refuse()
        self._busy = True
        try:
            self._flush()
            self._sock.shutdown(_stdsocket.SHUT_WR)
        finally:
            try:
                if self._clock is not None:
                    self._disarm()
            finally:
                self._busy = False

    def close(self) -> None:
        """Flush, then close the socket (closed even if the flush fails, whose error is then
        raised). Closing twice is harmless."""
        if self._closed:
            return
        if self._busy:
            raise RuntimeError(_BUSY)
        self._busy = True
        try:
            self._settle()
            if self._wbuf and self._sock.fileno() >= 0:
                self._flush()
        finally:
            self._closed = True
            self._rbuf = bytearray()
            self._rhead = self._rtail = 0
            self._wbuf = bytearray()
            self._landing = None
            self._sending = None
            try:
                self._disarm()
            finally:
                self._busy = False
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
        if self._busy:
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
                f"buffered={self._rtail - self._rhead} pending={len(self._wbuf)}>")


def _unsent(parts: list[Any], sent: int) -> bytearray:
    """What is left of `parts` once their first `sent` bytes went out."""
    rest = bytearray()
    for part in parts:
        size = len(part)
        if sent >= size:
            sent -= size
            continue
        rest += part[sent:] if sent else part
        sent = 0
    return rest


def connect(address: Any, *, timeout: Any = _stdsocket._GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[attr-defined]
            **options: Any) -> Stream:
    """Connect to `address` and return a Stream over the new socket: (host, port) for TCP
    (TCP_NODELAY set: the Stream coalesces writes itself), a path for AF_UNIX. `timeout`
    applies to connecting and stays on the socket; `options` as for Stream()."""
    return Stream(_streambase.connect_socket(_socket, _create_connection, address, timeout), **options)
