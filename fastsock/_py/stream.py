"""Pure-Python twin of the compiled `Stream`: the same buffering, framing, limits, errors and
nothing-lost rules as `fastsock._c._speedups.Stream`, over the standard library's socket
calls.

The read buffer is laid out like the compiled one (src_c/fs_buffer.h): a bytearray whose
[_rhead:_rtail] slice holds the unread bytes, filled in place by recv_into through a
memoryview kept beside it (_rview). Consuming moves _rhead; memory moves only when free
space runs short. The bytearray is never resized (it is replaced when it must grow, and
by a shared empty one when it gives its memory back): a bytearray that shrinks after each
read (CPython reallocates one whose size drops below half its allocation) and regrows on
the next one makes glibc trim and re-fault the heap on every call, which cost a third of
the W3 throughput. Memory follows the rules of fastsock._streambase (GROW_FROM,
shrink_threshold), the same for both backends.

Signals. A Python signal handler that raises does so at the interpreter's next check: when a
function starts, at a loop's back edge, or right after a call returns -- never between two
plain statements (an attribute store, `self._rhead += n`, a slice assignment). The code
below is laid out so that such an exception can strike anywhere without losing or
duplicating a byte, and without leaving the Stream busy:
- every recv/send result is stored before a handler can run: `(n,) = map(recv_into, ...)`
  calls recv_into from inside UNPACK_SEQUENCE, and no check comes before n is stored and
  used by plain statements (socket._recorded, map + list.extend, where a call follows);
  bytes received are in the read buffer, or in a buffer whose progress the caller holds
  (self._landing), at every check;
- helpers never consume buffered bytes when they return normally: the public method does,
  after its last call, then returns -- so nothing after the consumption may call anything.

The guard, written the same way in every public method that does I/O:

    while self._blocked:
        self._refuse()
    self._blocked = _IN_USE
    try:
        ...
    finally:
        if self._oversized and self._rhead == self._rtail:
            self._rbuf, self._rview, self._rhead, self._rtail, self._oversized = _EMPTY_BUFFER
        self._blocked = self._clock or self._landing or self._sending
        if self._blocked:
            self._leave()

`_blocked` is the one flag the entry tests: None when the Stream is free, _IN_USE while a
call runs, _CLOSED once closed, else what an interrupted call left to finish (its armed
_Deadline, its landing or its gather send). The entry's test and store have no call in
between (atomic under the GIL, and no handler can run in between); the loop re-tests after
the slow path (_refuse: raise if in use or closed, else finish the leftovers), so a thread
that slipped in meanwhile is seen. The exit is plain code on the hot path: it gives an
emptied oversized read buffer back (the compiled twin's consume does the same), stores the
flag, and calls the exit's slow path (_leave: keep a large read's bytes, settle an
interrupted gather send, restore the socket timeout) only when something is left. The flag
is stored before that call, so a handler raising at _leave's entry leaves the work to the
next call's entry instead of a Stream stuck busy; _leave claims the Stream first, so the
work is never done twice. A reading method's success path leaves nothing (it disarms
before consuming), so no call follows a consumption; a write's may leave the timeout to
restore, and consumes nothing. The pattern is not a decorator: a wrapper would hand each
consumed result back through one more return, where a handler's exception would drop it,
and would cost a Python call per method. tests/test_pure_stream_signal_windows.py raises
at each check of each method in turn.

No loop in a guarded body. CPython 3.13 (and 3.12 at times) can run a raising handler at a
`while` loop's back edge where no entry of the exception table covers it, even inside a
`try`: the exception then leaves the method without running its `finally`, and the Stream
stayed busy for good (the flag set, nobody to clear it). So the try body of every public
method, and of _leave, is straight-line code and calls; each loop lives in a helper
(_flush, _fill_to_eof, _next_frame, ...), whose exception reaches the guard at the call,
which the table covers. tests/test_stream_hostile.py checks the bytecode for this.
"""

from __future__ import annotations

import errno
import socket as _stdsocket
import sys
from collections.abc import Iterable
from itertools import chain
from typing import Any, NoReturn, Optional, Union

from .. import _streambase
from .. import framing as _framing_mod
from .._errors import FrameTooLarge, IncompleteReadError
from ..framing import (  # noqa: F401  (re-exported: one set of framings for both backends)
    DEFAULT_MAX_SIZE,
    RESP,
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
    _advance,
    _as_timeout_error,
    _Deadline,
    _readable_view,
    _recorded,
    _recv_into,
    _send,
    _sendmsg,
    _size,
    _tail,
    _writable_view,
)
from .socket import create_connection as _create_connection
from .socket import socket as _socket

__all__ = ["Stream", "connect", *_framing_mod.__all__]

_COPY_MAX = _streambase.COPY_MAX
_BUSY = _streambase.BUSY_MESSAGE
_NO_FRAMING = "this Stream has no framing: pass framing=... to Stream() or set .framing"
#: A large frame's payload (or a read_exactly result) starts at max(held, min(size,
#: GROW_FROM)) bytes and at least doubles as bytes arrive: a new bytearray commits every
#: page, so a length prefix alone must not make it large.
_GROW_FROM = _streambase.GROW_FROM
#: read_frames() without a limit (the compiled backend's PY_SSIZE_T_MAX).
_NO_LIMIT = sys.maxsize
#: read_frames(max_frames=n) up to this n copies frames one by one instead of copying every
#: buffered byte first (see _drain).
_FEW_FRAMES = 64
#: _blocked while a call runs, and once the Stream is closed (see the module docstring).
_IN_USE = "in use"
_CLOSED = "closed"
#: The read buffer of a Stream that holds no memory: shared, and never written (every write
#: into a read buffer follows a _reserve that replaced it); the view's export makes any
#: attempt to resize it fail loudly. As one tuple: (_rbuf, _rview, _rhead, _rtail, _oversized).
_NO_MEMORY = bytearray()
try:  # what sys.getsizeof adds to a bytearray's allocation (see _write_capacity)
    _BYTEARRAY_SIZE: Optional[int] = sys.getsizeof(bytearray())
except TypeError:  # pragma: no cover - PyPy has no getsizeof
    _BYTEARRAY_SIZE = None
_EMPTY_BUFFER = (_NO_MEMORY, memoryview(_NO_MEMORY), 0, 0, False)


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
        self._lead = _lead(self._framing)
        self._sock = sock
        # _rbuf[:_rhead] consumed, [_rhead:_rtail] held, [_rtail:] free space; _rview is
        # memoryview(_rbuf); _oversized: len(_rbuf) > _shrink_at (given back once emptied).
        self._rbuf, self._rview, self._rhead, self._rtail, self._oversized = _EMPTY_BUFFER
        self._shrink_at = _streambase.shrink_threshold(self._read_size)
        self._wbuf = bytearray()
        # A queue emptied from more than this many bytes is replaced by a new one (its
        # memory given back), the compiled twin's rule (fastsock._streambase.shrink_threshold).
        self._wshrink_at = _streambase.shrink_threshold(self._write_buffer)
        self._resume = 0
        self._eof = False
        self._closed = False
        self._blocked: Any = None  # see the module docstring
        self._clock: Optional[_Deadline] = None
        # Bytes being received straight into a result: (result, start, progress).
        self._landing: Optional[tuple[Any, int, list[int]]] = None
        # A gather send in progress: (parts, counts sent).
        self._sending: Optional[tuple[list[Any], list[int]]] = None

    @classmethod
    def from_fd(cls, fd: int, **options: Any) -> Stream:
        """A Stream over a new socket object that takes ownership of the connected stream
        socket `fd` (family and type are detected); `options` as for Stream()."""
        return cls(_socket(fileno=fd), **options)

    # -- plumbing (the guard: see the module docstring) ---------------------------------

    def _refuse(self) -> None:
        """The entry's slow path (the flag is set): raise if the Stream is in use or closed,
        else finish what an interrupted call left (_leave) and return, for the entry to
        test the flag again."""
        state = self._blocked
        if state is _IN_USE:
            raise RuntimeError(_BUSY)
        if state is _CLOSED:
            raise OSError(errno.EBADF, "I/O operation on a closed Stream")
        self._leave()

    def _leave(self) -> None:
        """The exit's slow path, run again by the next call's entry if an exception kept it
        from finishing: keep a large read's received bytes, make exactly the unsent bytes of
        a gather send the write queue, restore the socket timeout. It claims the Stream
        first (test and store, no call in between) and does nothing if another call has."""
        state = self._blocked
        if state is None or state is _IN_USE or state is _CLOSED:
            return
        self._blocked = _IN_USE
        try:
            self._land()
            self._settle()
            self._disarm()
            _as_timeout_error(sys.exc_info()[1])  # a deadline that passed leaves through here
        finally:
            self._blocked = self._clock or self._landing or self._sending

    def _disarm(self) -> None:
        clock = self._clock
        if clock is not None:
            clock.restore()
            self._clock = None

    def _arm(self) -> None:
        """Before each wait: the socket may wait only for what is left of this call's deadline
        (kept in self._clock only for a socket with a timeout: nothing to restore otherwise).
        Hot paths test `self._clock is not None or self._sock.timeout` before calling it."""
        clock = self._clock
        if clock is None:
            if not self._sock.gettimeout():
                return  # blocking or non-blocking: no deadline to keep
            clock = _Deadline(self._sock)
            if clock.deadline is None:
                return
            self._clock = clock
        clock.arm()

    def _arm_send(self) -> None:
        """Before each send: the socket tries it at once, never waiting first (a send that
        would block waits in _wait_send). Hot paths test as for _arm."""
        clock = self._clock
        if clock is None:
            if not self._sock.gettimeout():
                return
            clock = _Deadline(self._sock)
            if clock.deadline is None:
                return
            self._clock = clock
        clock.arm_send()

    def _wait_send(self, exc: BaseException) -> None:
        """A send raised BlockingIOError `exc`, sending nothing: wait for room until the
        deadline (TimeoutError), or raise `exc` for a non-blocking socket."""
        clock = self._clock
        if clock is None:
            raise exc
        clock.wait_writable(exc)

    def _reserve(self, want: int, limit: int) -> int:
        """Free space after the held bytes for `want` more (as fs_buffer_reserve): move the
        held bytes to the front, then grow (at least doubling) up to `limit` (a capacity
        already above it is kept). Returns the free space, below `want` only when `limit`
        stopped the growth. Every store follows the last call: a signal handler's exception
        leaves the old layout or the new one, never a mix."""
        cap = len(self._rbuf)
        head = self._rhead
        tail = self._rtail
        if cap - tail >= want:
            return cap - tail
        held = tail - head
        view = self._rview
        if cap - held < want and cap < limit:
            new = bytearray(min(max(2 * cap, held + want), limit))
            new_view = memoryview(new)
            new_view[:held] = view[head:tail]
            oversized = len(new) > self._shrink_at
            self._rbuf, self._rview, self._rhead, self._rtail, self._oversized = new, new_view, 0, held, oversized
            return len(new) - held
        if head:
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
            self._rhead = self._rtail = 0  # as fs_buffer_consume: an empty buffer starts at 0
        want = self._read_size
        if need - held > want:
            # bytearray(n) commits n zeroed bytes: grow for a known frame only as bytes arrive.
            want = max(want, min(need - held, max(held, _GROW_FROM)))
        if len(self._rbuf) - self._rtail < want and self._reserve(want, self._max_buffer) <= 0:
            raise FrameTooLarge(held, self._max_buffer,
                                f"the read buffer is full ({held} bytes, max_buffer={self._max_buffer})")
        sock = self._sock
        if self._clock is not None or sock.timeout:
            self._arm()
        tail = self._rtail
        (n,) = map(_recv_into, (sock,), (self._rview[tail:],))  # stored with no check between
        if n:
            self._rtail = tail + n
        else:
            self._eof = True
        return n

    def _fill_to_eof(self) -> None:
        """read(-1): fill until EOF (a loop kept out of the guarded body: see _no_loops)."""
        while not self._eof:
            self._fill(0)

    def _fill_to(self, size: int) -> bool:
        while self._rtail - self._rhead < size:
            if self._eof or self._fill(size) == 0:
                return False
        return True

    def _head(self, n: int) -> bytes:
        """The first n buffered bytes (n <= buffered), not consumed."""
        head = self._rhead
        return bytes(self._rview[head:head + n])

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
            n = _recorded(prog, _recv_into, sock, _tail(dst, prog[0]))
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
        buffer. The append and the reset are plain statements: done once, or not at all
        (then the exit's or the next call's _leave does it)."""
        landing = self._landing
        if landing is not None:
            dst, start, prog = landing
            end = sum(prog)
            if self._rhead == self._rtail:
                self._rhead = self._rtail = 0  # as fs_buffer_consume: an empty buffer starts at 0
            self._reserve(end - start, _NO_LIMIT)  # consistent layout whether or not it ends
            tail = self._rtail
            self._rview[tail:tail + end - start] = dst[start:end]  # same length: no resize
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

    def _next_frame(self) -> tuple[Optional[bytes], int]:
        """(the next frame, bytes to consume), reading as needed; (None, 0) at a clean EOF
        between frames. Consumes nothing (the caller does, last)."""
        framing = self._framing
        if framing is None:
            raise ValueError(_NO_FRAMING)
        while True:
            head = self._rhead
            if head != self._rtail:
                header, need, extra = framing._scan(self._rbuf, head, self._rtail, self._resume)
                if header >= 0:  # (header, payload, total)
                    start = head + header
                    frame = bytes(self._rview[start:start + need])
                    if framing._decode_payload is not None:  # RESP: the argument list
                        return framing._decode_payload(frame), extra
                    return frame, extra
            else:
                header, need, extra = self._lead  # what the framing needs before any byte
                if not need and not self._eof:
                    # The usual case (a frame's size shows in its first bytes): _fill(0) for
                    # an empty buffer, inline.
                    self._rhead = self._rtail = 0
                    if len(self._rbuf) < self._read_size:
                        self._reserve(self._read_size, self._max_buffer)
                    sock = self._sock
                    if self._clock is not None or sock.timeout:
                        self._arm()
                    (n,) = map(_recv_into, (sock,), (self._rview,))  # stored with no check between
                    if n:
                        self._rtail = n
                    else:
                        self._eof = True
                    continue
            # (-1, total or 0, x): x is a delimiter's resume offset, or where a payload that
            # ends the frame starts (-1 if bytes follow it); see framing.Scan.
            held = self._rtail - head
            self._resume = 0 if need else extra
            if self._eof:
                if held == 0:
                    return None, 0
                self._raise_incomplete(need or None)
            if need:
                # Straight into the result, unless more than GROW_FROM is held already
                # (landed by interrupted calls): copying it into a new result at every call
                # made a trickling frame quadratic; the buffer grows by doubling instead.
                if extra >= 0 and need - held >= self._read_size and (
                        held <= _GROW_FROM or need > self._max_buffer):
                    return self._large_frame(need, extra)
                if need > self._max_buffer:
                    raise FrameTooLarge(need, self._max_buffer,
                                        f"a frame of {need} bytes does not fit max_buffer={self._max_buffer}")
            self._fill(need)

    def _large_frame(self, total: int, header: int) -> tuple[bytes, int]:
        """Receive the rest of a large header-announced payload straight into the result,
        whose memory starts at max(held, min(payload, GROW_FROM)) and grows only as bytes
        arrive (a peer's length prefix alone commits at most GROW_FROM bytes). Until the
        caller consumes the frame, self._landing says where the received bytes are, so that
        an exception (even one raised by a signal handler as this returns) puts them in the
        read buffer."""
        head = self._rhead
        held = self._rtail - head
        payload = total - header
        have = held - header
        out = bytearray(max(have, min(payload, _GROW_FROM)))
        out[:have] = self._rview[head + header:self._rtail]
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
        (frames, offset after them, resume offset for the next scan), by the framing's
        _scan_many. Stops quietly at a bad frame (the next _next_frame raises). Consumes
        nothing."""
        framing = self._framing
        head = self._rhead
        tail = self._rtail
        resume = self._resume if start == 0 else 0
        if limit <= _FEW_FRAMES:
            # Each frame copied straight out of the buffer: the cost follows the frames taken.
            frames, stop, resume = framing._scan_many(self._rbuf, head + start, tail, resume, limit)
            return frames, stop - head, resume
        try:
            header, need, extra = framing._scan(self._rbuf, head + start, tail, resume)
        except (FrameTooLarge, FramingError):
            return [], start, 0
        if header < 0:
            return [], start, 0 if need else extra
        # One copy per call (only once a frame is complete); each frame is then one slice of
        # bytes, cheaper per frame than bytes(memoryview slice).
        data = bytes(self._rview[head:tail])
        return framing._scan_many(data, start, tail - head, resume, limit)  # type: ignore[no-any-return]

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
            if len(self._wbuf) > self._wshrink_at:
                self._wbuf = bytearray()  # a call first: an exception here is settled below
            else:
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
            self._arm_send()
            try:
                if idx == len(views) - 1 or _sendmsg is None:
                    n = _recorded(moved, _send, sock, views[idx], _MSG_NOSIGNAL)
                else:
                    n = _recorded(moved, _sendmsg, sock, views[idx:idx + _IOV_MAX], (), _MSG_NOSIGNAL)
            except BlockingIOError as exc:  # nothing sent
                self._wait_send(exc)
                continue
            idx = _advance(views, idx, n)

    def _flush(self) -> None:
        """Send the write queue, from the queue itself: each send's count is stored and the
        sent bytes dropped with no check in between, so no state is needed to settle."""
        wbuf = self._wbuf
        sock = self._sock
        large = len(wbuf) > self._wshrink_at
        while wbuf:
            if self._clock is not None or sock.timeout:
                self._arm_send()
            try:
                (sent,) = map(_send, (sock,), (wbuf,), (_MSG_NOSIGNAL,))
            except BlockingIOError as exc:  # nothing sent
                self._wait_send(exc)
                continue
            del wbuf[:sent]  # no check since the send returned
        if large:
            self._wbuf = bytearray()  # emptied: a new queue, the old one's memory given back

    def _write_many(self, items: Any, framed: bool) -> None:
        if isinstance(items, (bytes, bytearray, memoryview, str)):
            raise TypeError(f"expected an iterable of bytes-like objects, not a single {type(items).__name__}")
        try:
            views = [_readable_view(b) for b in items]
        except TypeError as exc:
            if "is not iterable" in str(exc):
                raise TypeError("expected an iterable of bytes-like objects") from None
            raise
        if framed:
            wrap = self._framing._wrap
            wraps = [wrap(v) for v in views]
        else:
            wraps = [(b"", b"")] * len(views)
        sizes = list(map(len, views))
        total = sum(sizes) + sum(map(len, chain.from_iterable(wraps)))
        big = max(sizes, default=0) > _COPY_MAX
        if not big and len(self._wbuf) + total <= self._write_buffer:
            wbuf = self._wbuf
            for (head, tail), view in zip(wraps, views):
                wbuf += head
                wbuf += view
                wbuf += tail
            return
        parts: list[Any] = []
        small = bytearray()
        for (head, tail), view in zip(wraps, views):
            small += head
            if len(view) <= _COPY_MAX:
                small += view
            else:
                if small:
                    parts.append(bytes(small))
                    small = bytearray()
                parts.append(view)
            small += tail
        if small:
            parts.append(bytes(small))
        self._gather(parts)

    # -- reading ----------------------------------------------------------------------

    def read(self, n: Optional[int] = -1) -> bytes:
        """Up to n bytes: what is buffered, else one recv (b"" at EOF). n < 0 reads to EOF
        (FrameTooLarge if more than max_buffer bytes arrive first)."""
        while self._blocked:
            self._refuse()
        self._blocked = _IN_USE
        try:
            if n is None or n < 0:
                self._fill_to_eof()
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
            if self._oversized and self._rhead == self._rtail:
                self._rbuf, self._rview, self._rhead, self._rtail, self._oversized = _EMPTY_BUFFER
            self._blocked = self._clock or self._landing or self._sending
            if self._blocked:
                self._leave()

    def read_exactly(self, n: int) -> bytes:
        """Exactly n bytes. EOF first raises IncompleteReadError (.partial, .expected); on
        timeout or error every byte received stays buffered for the next call."""
        size = _size(n, "read_exactly")
        while self._blocked:
            self._refuse()
        self._blocked = _IN_USE
        try:
            held = self._rtail - self._rhead
            if held < size and size <= self._max_buffer and (
                    size - held < self._read_size or held > _GROW_FROM):  # see _next_frame
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
            # beyond max(held, GROW_FROM) is taken as bytes arrive.
            result = bytearray(max(held, min(size, _GROW_FROM)))
            result[:held] = self._rview[self._rhead:self._rtail]
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
            if self._oversized and self._rhead == self._rtail:
                self._rbuf, self._rview, self._rhead, self._rtail, self._oversized = _EMPTY_BUFFER
            self._blocked = self._clock or self._landing or self._sending
            if self._blocked:
                self._leave()

    def readinto(self, buffer: Any) -> int:
        """Fill `buffer` with what is buffered, else one recv (straight into `buffer` when it is
        at least read_size bytes); returns the count, 0 at EOF."""
        view = _writable_view(buffer, "readinto")
        while self._blocked:
            self._refuse()
        self._blocked = _IN_USE
        try:
            if len(view) == 0:
                return 0
            if self._rtail == self._rhead and not self._eof:
                if len(view) >= self._read_size:
                    self._arm()
                    got: list[int] = []
                    try:
                        _recorded(got, _recv_into, self._sock, _tail(view, 0))
                        if self._clock is not None:
                            self._disarm()
                    except BaseException:
                        if got and got[0]:  # received, but this call fails: the next read has them
                            # A private copy (the caller may reuse its buffer), made with no
                            # call and landed in the read buffer by the exit's _leave.
                            self._landing = (self._rbuf[:0] + view[:got[0]], 0, [got[0]])
                        raise
                    if got[0] == 0:
                        self._eof = True
                    return got[0]
                self._fill(0)
            head = self._rhead
            k = min(len(view), self._rtail - head)
            view[:k] = self._rview[head:head + k]
            if self._clock is not None:
                self._disarm()
            self._rhead += k
            self._resume = 0
            return k
        finally:
            if self._oversized and self._rhead == self._rtail:
                self._rbuf, self._rview, self._rhead, self._rtail, self._oversized = _EMPTY_BUFFER
            self._blocked = self._clock or self._landing or self._sending
            if self._blocked:
                self._leave()

    def read_exactly_into(self, buffer: Any) -> int:
        """Fill all of `buffer`; returns its size. EOF first raises IncompleteReadError; on
        timeout or error every byte received stays buffered (the buffer's contents are then
        unspecified)."""
        view = _writable_view(buffer, "read_exactly_into")
        while self._blocked:
            self._refuse()
        self._blocked = _IN_USE
        try:
            size = len(view)
            held = self._rtail - self._rhead
            if held < size and size <= self._max_buffer and (
                    size - held < self._read_size or held > _GROW_FROM):  # see _next_frame
                if not self._fill_to(size):
                    self._raise_incomplete(size)
                held = size
            if held >= size:
                head = self._rhead
                view[:] = self._rview[head:head + size]
                if self._clock is not None:
                    self._disarm()
                self._rhead += size
                self._resume = 0
                return size
            view[:held] = self._rview[self._rhead:self._rtail]
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
            if self._oversized and self._rhead == self._rtail:
                self._rbuf, self._rview, self._rhead, self._rtail, self._oversized = _EMPTY_BUFFER
            self._blocked = self._clock or self._landing or self._sending
            if self._blocked:
                self._leave()

    def readline(self, limit: Optional[int] = None) -> bytes:
        """One line, ending with b"\\n" (at EOF: the rest, possibly without it; b"" when
        nothing is left). More than `limit` bytes (default max_buffer) before the newline
        raise FrameTooLarge, with every byte still buffered."""
        while self._blocked:
            self._refuse()
        self._blocked = _IN_USE
        try:
            out, used = self._until((b"\n",), limit, True, True)
            if self._clock is not None:
                self._disarm()
            self._rhead += used
            self._resume = 0
            return out
        finally:
            if self._oversized and self._rhead == self._rtail:
                self._rbuf, self._rview, self._rhead, self._rtail, self._oversized = _EMPTY_BUFFER
            self._blocked = self._clock or self._landing or self._sending
            if self._blocked:
                self._leave()

    def read_until(self, delimiter: Union[bytes, tuple[bytes, ...]], limit: Optional[int] = None,
                   keep: bool = True) -> bytes:
        """Bytes up to the earliest occurrence of `delimiter` (bytes, or a tuple of bytes:
        the earliest match wins, the first listed on a tie), including it unless keep=False.
        More than `limit` bytes (default max_buffer) before it raise FrameTooLarge; EOF first
        raises IncompleteReadError (.partial holds the rest)."""
        delims = delimiter if isinstance(delimiter, tuple) else (delimiter,)
        delims = tuple(bytes(d) if isinstance(d, (bytearray, memoryview)) else d for d in delims)
        while self._blocked:
            self._refuse()
        self._blocked = _IN_USE
        try:
            out, used = self._until(delims, limit, keep, False)
            if self._clock is not None:
                self._disarm()
            self._rhead += used
            self._resume = 0
            return out
        finally:
            if self._oversized and self._rhead == self._rtail:
                self._rbuf, self._rview, self._rhead, self._rtail, self._oversized = _EMPTY_BUFFER
            self._blocked = self._clock or self._landing or self._sending
            if self._blocked:
                self._leave()

    def peek(self, n: Optional[int] = -1) -> bytes:
        """Up to n buffered bytes (n < 0: all) without consuming them; reads the socket once
        only if nothing is buffered."""
        while self._blocked:
            self._refuse()
        self._blocked = _IN_USE
        try:
            if self._rtail == self._rhead and not self._eof:
                self._fill(0)
            size = self._rtail - self._rhead
            if n is not None and n >= 0:
                size = min(size, _size(n, "peek"))
            return self._head(size)
        finally:
            if self._oversized and self._rhead == self._rtail:
                self._rbuf, self._rview, self._rhead, self._rtail, self._oversized = _EMPTY_BUFFER
            self._blocked = self._clock or self._landing or self._sending
            if self._blocked:
                self._leave()

    def discard(self, n: int) -> int:
        """Drop up to n buffered bytes (no I/O); returns how many were dropped. Use it to
        skip past a frame refused by FrameTooLarge or FramingError."""
        size = _size(n, "discard")
        while self._blocked:
            self._refuse()
        self._blocked = _IN_USE
        try:
            k = min(size, self._rtail - self._rhead)
            self._rhead += k
            self._resume = 0
            return k
        finally:
            if self._oversized and self._rhead == self._rtail:
                self._rbuf, self._rview, self._rhead, self._rtail, self._oversized = _EMPTY_BUFFER
            self._blocked = self._clock or self._landing or self._sending
            if self._blocked:
                self._leave()

    def read_frame(self) -> bytes:
        """The next frame's payload. EOFError at a clean EOF between frames;
        IncompleteReadError (.partial: the frame's bytes so far, .expected: its length if
        known) at EOF inside one; FrameTooLarge or FramingError, with the bytes left
        buffered, for a frame that is too large or malformed."""
        while self._blocked:
            self._refuse()
        self._blocked = _IN_USE
        try:
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
            if self._oversized and self._rhead == self._rtail:
                self._rbuf, self._rview, self._rhead, self._rtail, self._oversized = _EMPTY_BUFFER
            self._blocked = self._clock or self._landing or self._sending
            if self._blocked:
                self._leave()

    def read_frames(self, max_frames: Optional[int] = None) -> list[bytes]:
        """Every complete frame already buffered (at most max_frames), as a list. Reads the
        socket only when no complete frame is buffered, until one is; [] at a clean EOF."""
        limit = _NO_LIMIT
        if max_frames is not None:
            limit = _size(max_frames, "read_frames")
            if limit == 0:
                raise ValueError("max_frames must be >= 1")
        while self._blocked:
            self._refuse()
        self._blocked = _IN_USE
        try:
            if self._framing is None:
                raise ValueError(_NO_FRAMING)
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
            if self._oversized and self._rhead == self._rtail:
                self._rbuf, self._rview, self._rhead, self._rtail, self._oversized = _EMPTY_BUFFER
            self._blocked = self._clock or self._landing or self._sending
            if self._blocked:
                self._leave()

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> bytes:
        """The next frame; StopIteration at a clean EOF between frames."""
        while self._blocked:
            self._refuse()
        self._blocked = _IN_USE
        try:
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
            if self._oversized and self._rhead == self._rtail:
                self._rbuf, self._rview, self._rhead, self._rtail, self._oversized = _EMPTY_BUFFER
            self._blocked = self._clock or self._landing or self._sending
            if self._blocked:
                self._leave()

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

    @property
    def _read_capacity(self) -> int:
        """For tests: the bytes allocated for the read buffer (the compiled twin has the same
        property), to check the memory rules of fastsock._streambase."""
        return len(self._rbuf)

    @property
    def _write_capacity(self) -> int:
        """For tests: the bytes allocated for the write queue (the compiled twin has the same
        property; on PyPy, which cannot tell, the bytes it holds)."""
        if _BYTEARRAY_SIZE is None:
            return len(self._wbuf)
        return sys.getsizeof(self._wbuf) - _BYTEARRAY_SIZE

    # -- writing ----------------------------------------------------------------------

    def write(self, data: Any) -> None:
        """Queue `data` (coalesced with other small writes); sends once write_buffer bytes
        are pending, or at once with sendmsg for payloads over 16 KiB (never copied). If the
        send fails (timeout, would-block, error), the unsent bytes stay queued: nothing is
        lost, nothing needs resending; call flush() to continue."""
        view = data if type(data) is bytes else _readable_view(data)
        while self._blocked:
            self._refuse()
        self._blocked = _IN_USE
        try:
            if len(view) <= _COPY_MAX and len(self._wbuf) + len(view) <= self._write_buffer:
                self._wbuf += view
                return None
            self._gather([view])
        finally:
            if self._oversized and self._rhead == self._rtail:
                self._rbuf, self._rview, self._rhead, self._rtail, self._oversized = _EMPTY_BUFFER
            self._blocked = self._clock or self._landing or self._sending
            if self._blocked:
                self._leave()

    def writelines(self, lines: Iterable[Any]) -> None:
        """write() every bytes-like object of `lines`, with one gather send if they do not all
        fit the write queue."""
        while self._blocked:
            self._refuse()
        self._blocked = _IN_USE
        try:
            self._write_many(lines, False)
        finally:
            if self._oversized and self._rhead == self._rtail:
                self._rbuf, self._rview, self._rhead, self._rtail, self._oversized = _EMPTY_BUFFER
            self._blocked = self._clock or self._landing or self._sending
            if self._blocked:
                self._leave()

    def write_frame(self, payload: Any) -> None:
        """Queue one frame carrying `payload`, encoded per the framing. A large payload goes
        out at once with header and queue in one sendmsg. Raises FrameTooLarge above the
        framing's max_size, FramingError for a payload it cannot carry; failures of the
        send itself keep the unsent bytes queued (see write)."""
        framing = self._framing
        if framing is not None and framing._value_codec:  # RESP: a value, encoded as a reply
            return self.write(framing.encode(payload))
        view = payload if type(payload) is bytes else _readable_view(payload)
        while self._blocked:
            self._refuse()
        self._blocked = _IN_USE
        try:
            framing = self._framing
            if framing is None:
                raise ValueError(_NO_FRAMING)
            header, trailer = framing._wrap(view)
            if len(view) > _COPY_MAX:
                self._gather([header, view, trailer])  # empty parts are skipped when sent
                return None
            wbuf = self._wbuf
            wbuf += header
            wbuf += view
            if trailer:
                wbuf += trailer
            if len(wbuf) > self._write_buffer:
                self._flush()  # the queue, this frame included, in one send
        finally:
            if self._oversized and self._rhead == self._rtail:
                self._rbuf, self._rview, self._rhead, self._rtail, self._oversized = _EMPTY_BUFFER
            self._blocked = self._clock or self._landing or self._sending
            if self._blocked:
                self._leave()

    def write_frames(self, payloads: Iterable[Any]) -> None:
        """Queue one frame per payload; if they do not fit the write queue, send the queue and
        every frame with one gather send (small payloads joined, large ones sent from their
        own memory). Every payload is validated before anything is sent."""
        framing = self._framing
        if framing is not None and framing._value_codec:  # RESP: values, each encoded as a reply
            encode = framing.encode
            return self.writelines([encode(value) for value in payloads])
        while self._blocked:
            self._refuse()
        self._blocked = _IN_USE
        try:
            if self._framing is None:
                raise ValueError(_NO_FRAMING)
            self._write_many(payloads, True)
        finally:
            if self._oversized and self._rhead == self._rtail:
                self._rbuf, self._rview, self._rhead, self._rtail, self._oversized = _EMPTY_BUFFER
            self._blocked = self._clock or self._landing or self._sending
            if self._blocked:
                self._leave()

    def flush(self) -> None:
        """Send every queued byte (the timeout is a deadline for the whole flush). On failure
        the unsent bytes stay queued; call flush() again to resume."""
        while self._blocked:
            self._refuse()
        self._blocked = _IN_USE
        try:
            if self._wbuf:
                self._flush()
        finally:
            if self._oversized and self._rhead == self._rtail:
                self._rbuf, self._rview, self._rhead, self._rtail, self._oversized = _EMPTY_BUFFER
            self._blocked = self._clock or self._landing or self._sending
            if self._blocked:
                self._leave()

    def sendfile(self, file: Any, offset: int = 0, count: Optional[int] = None) -> int:
        """Flush, then send `count` bytes (None: to the end) of binary `file` from `offset`,
        with os.sendfile (zero-copy) where the file has a descriptor. Returns the bytes sent;
        a failure carries `.bytes_sent`. The file position ends after the last byte sent."""
        while self._blocked:
            self._refuse()
        self._blocked = _IN_USE
        try:
            if self._wbuf:
                self._flush()
            return _streambase.sendfile(self._sock, file, offset, count)
        finally:
            if self._oversized and self._rhead == self._rtail:
                self._rbuf, self._rview, self._rhead, self._rtail, self._oversized = _EMPTY_BUFFER
            self._blocked = self._clock or self._landing or self._sending
            if self._blocked:
                self._leave()

    def shutdown_write(self) -> None:
        """Flush, then half-close: the peer sees EOF, and this side can still read to EOF."""
        while self._blocked:
            self._refuse()
        self._blocked = _IN_USE
        try:
            if self._wbuf:
                self._flush()
            self._sock.shutdown(_stdsocket.SHUT_WR)
        finally:
            if self._oversized and self._rhead == self._rtail:
                self._rbuf, self._rview, self._rhead, self._rtail, self._oversized = _EMPTY_BUFFER
            self._blocked = self._clock or self._landing or self._sending
            if self._blocked:
                self._leave()

    def close(self) -> None:
        """Flush, then close the socket (closed even if the flush fails, whose error is then
        raised). Closing twice is harmless."""
        state = self._blocked
        if state is _CLOSED:
            return
        if state is _IN_USE:
            raise RuntimeError(_BUSY)
        self._blocked = _IN_USE  # tested and set with no call in between, as at every entry
        try:
            self._settle()
            if self._wbuf and self._sock.fileno() >= 0:
                self._flush()
        except BaseException as exc:
            _as_timeout_error(exc)  # Python 3.9: a stdlib socket.timeout leaves as a TimeoutError
            raise
        finally:
            self._closed = True
            self._blocked = _CLOSED  # from here on every call raises EBADF; close() returns
            self._rbuf, self._rview, self._rhead, self._rtail, self._oversized = _EMPTY_BUFFER
            self._landing = None
            self._sending = None
            try:
                self._wbuf = bytearray()
                self._disarm()
            finally:
                self._sock.close()

    def __enter__(self) -> Stream:
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
        if self._blocked is _IN_USE:
            raise RuntimeError(_BUSY)
        self._framing = _streambase.check_framing(value)
        self._lead = _lead(self._framing)
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


def _lead(framing: Optional[Framing]) -> _framing_mod.Scan:
    """framing._scan of no bytes, asked once (the answer depends on nothing else): spares a
    scan of an empty buffer on every read that finds nothing held."""
    return (-1, 0, 0) if framing is None else framing._scan(_NO_MEMORY, 0, 0, 0)


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
