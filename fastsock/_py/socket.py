"""Pure-Python twin of the compiled socket methods: the same loops, errors and partial-progress
reports as `fastsock._c._speedups`, written on the standard library's socket calls."""

from __future__ import annotations

import errno
import operator
import os
import select
import socket as _stdsocket
import sys
from collections.abc import Iterable
from time import monotonic
from typing import TYPE_CHECKING, Any, Callable, Optional

from .._errors import IncompleteReadError, SocketTimeout
from .._socketbase import EAGER_ALLOC_LIMIT, SocketBase, factories_for

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = [
    "socket",
    "SocketType",
    "create_connection",
    "create_server",
    "socketpair",
    "fromfd",
    "wrap",
]

# Plain ints: the stdlib's are MsgFlag members, whose & and | run Python code (~1 µs each).
_MSG_WAITALL = int(getattr(_stdsocket, "MSG_WAITALL", 0))
_MSG_NOSIGNAL = int(getattr(_stdsocket, "MSG_NOSIGNAL", 0))
_MSG_DONTWAIT = int(getattr(_stdsocket, "MSG_DONTWAIT", 0))
_MSG_PEEK = int(getattr(_stdsocket, "MSG_PEEK", 0))
_IOV_MAX = 1024

# The stdlib calls every pure loop is built on (called from C by map(), never wrapped: a
# Python wrapper would open a window where a raising signal handler loses a count).
_recv_into: Callable[..., int] = _stdsocket.socket.recv_into
_send: Callable[..., int] = _stdsocket.socket.send
_sendmsg: Optional[Callable[..., int]] = getattr(_stdsocket.socket, "sendmsg", None)

if SocketTimeout is _stdsocket.timeout:  # Python 3.10+: socket.timeout is TimeoutError

    def _as_timeout_error(exc: Optional[BaseException]) -> None:
        """Nothing to do: the stdlib's timeout already is a TimeoutError."""

else:  # pragma: no cover - Python 3.9 (and PyPy 3.9)

    def _as_timeout_error(exc: Optional[BaseException]) -> None:
        """Make a stdlib socket.timeout, in place, the SocketTimeout the compiled backend
        raises (also a TimeoutError), on its way out of a fastsock call."""
        if type(exc) is _stdsocket.timeout:
            exc.__class__ = SocketTimeout


def _readable_view(data: Any) -> memoryview:
    """A flat byte view of any C-contiguous buffer, with the stdlib's errors."""
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not '{type(data).__name__}'") from None
    if not view.c_contiguous:
        raise BufferError("memoryview: underlying buffer is not C-contiguous")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def _writable_view(buffer: Any, method: str) -> memoryview:
    try:
        view = memoryview(buffer)
    except TypeError:
        view = None
    if view is None or view.readonly or not view.c_contiguous:
        raise TypeError(
            f"{method}() argument 'buffer' must be read-write bytes-like object, not {type(buffer).__name__}"
        )
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


if sys.implementation.name == "pypy":  # pragma: no cover - PyPy only
    import ctypes

    def _tail(view: memoryview, start: int) -> Any:
        """view[start:] in a form PyPy's recv_into accepts: PyPy 7.3 refuses any slice of a
        cast memoryview (an array('i'), a 2-D view), but takes a ctypes array over the same
        memory."""
        return (ctypes.c_ubyte * (len(view) - start)).from_buffer(view, start)

else:

    def _tail(view: memoryview, start: int) -> Any:
        """view[start:], for recv_into (see the PyPy variant)."""
        return view[start:]


def _no_peek(flags: int) -> int:
    if flags & _MSG_PEEK:
        raise ValueError("MSG_PEEK cannot be used with an exact read: every retry would peek the same bytes")
    return flags


def _size(n: Any, method: str) -> int:
    size = operator.index(n)
    if size < 0:
        raise ValueError(f"negative buffersize in {method}")
    if size > sys.maxsize:
        raise OverflowError("Python int too large to convert to C ssize_t")
    return size


#: The timeout of a receive past its deadline with bytes waiting: the socket's poll returns
#: at once, so this never waits.
_AT_ONCE = 1e-3


def _readable_now(sock: Any) -> bool:
    """True when a receive on `sock` would not wait (bytes, EOF or an error are there)."""
    if not hasattr(select, "poll"):  # pragma: no cover - every POSIX system we test has poll
        return bool(select.select([sock], [], [], 0)[0])
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class _Deadline:
    """The socket's timeout turned into a deadline for one whole call (restores it at exit)."""

    __slots__ = ("sock", "timeout", "deadline", "nonblocking", "at_once")

    def __init__(self, sock: _stdsocket.socket, flags: int = 0) -> None:
        self.sock = sock
        self.timeout = sock.gettimeout()
        # MSG_DONTWAIT makes this one call non-blocking, as with the stdlib's recv/send.
        self.nonblocking = bool(flags & _MSG_DONTWAIT) and self.timeout != 0
        self.deadline = None if not self.timeout or self.nonblocking else monotonic() + self.timeout
        self.at_once = False  # the socket's timeout is 0 for now (see arm_send)

    def arm(self) -> None:
        """Before each receive: let the socket wait no longer than what is left of the deadline."""
        if self.deadline is not None:
            left = self.deadline - monotonic()
            if left <= 0:
                # Past the deadline, what is already there is still taken (fs_io tries the
                # recv first too): timed out only if nothing is.
                if not _readable_now(self.sock):
                    raise SocketTimeout("timed out")
                left = _AT_ONCE
            _stdsocket.socket.settimeout(self.sock, left)
            self.at_once = False
        elif self.nonblocking:
            _stdsocket.socket.settimeout(self.sock, 0.0)

    def arm_send(self) -> None:
        """Before each send: make it try at once (as fs_io does), never wait first. A socket
        with a timeout polls before it sends, even when there is room (and PyPy's sendmsg
        with a timeout can send nothing), so the socket is non-blocking for this call and a
        send that would block waits in wait_writable, for what is left of the deadline."""
        if (self.deadline is not None or self.nonblocking) and not self.at_once:
            _stdsocket.socket.settimeout(self.sock, 0.0)
            self.at_once = True

    def wait_writable(self, exc: BaseException) -> None:
        """After a send raised BlockingIOError `exc` (nothing sent): wait until the socket
        can send again, SocketTimeout once the deadline passes; a non-blocking call (no
        deadline) raises `exc` itself."""
        if self.deadline is None:
            raise exc
        fd = self.sock.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        while True:
            left = self.deadline - monotonic()
            if left <= 0:
                raise SocketTimeout("timed out")
            if poller.poll(max(1, int(left * 1000 + 0.999))):  # rounded up: never spin
                return  # room, or an error that the next send reports

    def restore(self) -> None:
        if self.deadline is not None or self.nonblocking:
            _stdsocket.socket.settimeout(self.sock, self.timeout)


def _check_open(sock: _stdsocket.socket) -> None:
    """A closed socket (fileno() == -1): the stdlib's OSError(EBADF), before any work."""
    if sock.fileno() < 0:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))


def _attach(exc: BaseException, name: str, count: object) -> None:
    """Record partial progress on the exception leaving a call (which, on Python 3.9, is
    made a TimeoutError too if it is the stdlib's socket.timeout)."""
    _as_timeout_error(exc)
    try:
        setattr(exc, name, count)
    except AttributeError:  # an exception type without __dict__: nothing to attach to
        pass


def _recorded(moved: list[int], fn: Any, *args: Any) -> int:
    """Call fn(*args) and append its byte count to `moved`, both inside C (map + extend).

    A signal handler that raises runs at the interpreter's next check after a call returns;
    calling through map/extend means the count is already recorded by then, so an
    exception raised by the handler can still report every byte that was moved."""
    moved.extend(map(fn, *zip(args)))  # zip(args): one 1-tuple per argument
    return moved[-1]


def _advance(views: list[memoryview], idx: int, n: int) -> int:
    """After a gather send of views[idx:] moved n bytes: drop the views that went out, slice
    a partly sent one in place; returns the index of the first view not fully sent."""
    while n > 0:
        first = len(views[idx])
        if n >= first:
            n -= first
            idx += 1
        else:
            views[idx] = views[idx][n:]
            n = 0
    return idx


# The send loops run in functions of their own, called from the try of the method that
# reports progress and restores the timeout: CPython 3.12+ can raise a signal handler's
# exception at a loop's back edge outside the exception table of a try around the loop, so
# its except/finally would not run (see fastsock/_py/stream.py, "No loop in a guarded body").

def _send_loop(sock: Any, view: memoryview, flags: int, clock: _Deadline, moved: list[int]) -> None:
    """sendall's loop: each count recorded in `moved` (from C), waits only on would-block."""
    sent = 0
    total = len(view)
    while sent < total:
        clock.arm_send()
        try:
            sent += _recorded(moved, _send, sock, view[sent:], flags)
        except BlockingIOError as exc:  # nothing sent
            clock.wait_writable(exc)


def _sendmsg_loop(sock: Any, views: list[memoryview], flags: int, clock: _Deadline, moved: list[int]) -> int:
    """sendall_many's loop (views non-empty, sliced in place as they go out); the count."""
    sent = 0
    idx = 0  # first view not yet fully sent
    while idx < len(views):
        clock.arm_send()
        try:
            n = _recorded(moved, _sendmsg, sock, views[idx:idx + _IOV_MAX], (), flags)
        except BlockingIOError as exc:  # nothing sent
            clock.wait_writable(exc)
            continue
        sent += n
        idx = _advance(views, idx, n)
    return sent


def _report(exc: BaseException, name: str, count: int) -> None:
    _attach(exc, name, count)
    if isinstance(exc, BlockingIOError) and name == "bytes_sent":
        exc.characters_written = count


class socket(SocketBase):
    """A `socket.socket` whose send/recv loops report partial progress (pure-Python backend)."""

    __slots__ = ()

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        """Send every byte of `data` (any C-contiguous buffer); the timeout is a deadline for
        the whole call. On failure the exception's `.bytes_sent` says how much went out."""
        view = _readable_view(data)
        flags = operator.index(flags) | _MSG_NOSIGNAL
        _check_open(self)
        moved: list[int] = []
        clock = _Deadline(self, flags)
        try:
            _send_loop(self, view, flags, clock, moved)
            return None
        except BaseException as exc:
            _report(exc, "bytes_sent", sum(moved))
            raise
        finally:
            clock.restore()

    def sendall_many(self, buffers: Iterable[ReadableBuffer], flags: int = 0) -> int:
        """Send every buffer of `buffers` in order with gather writes (sendmsg), never joining
        them; returns the byte count. On failure `.bytes_sent` says how much went out."""
        if isinstance(buffers, (bytes, bytearray, memoryview, str)):
            raise TypeError("sendall_many() takes an iterable of bytes-like objects, not a single "
                            f"{type(buffers).__name__}")
        try:
            views = [_readable_view(b) for b in buffers]
        except TypeError as exc:
            if "is not iterable" in str(exc):
                raise TypeError("sendall_many() argument must be an iterable of bytes-like objects") from None
            raise
        flags = operator.index(flags) | _MSG_NOSIGNAL
        _check_open(self)
        views = [v for v in views if len(v)]
        moved: list[int] = []
        clock = _Deadline(self, flags)
        try:
            return _sendmsg_loop(self, views, flags, clock, moved)
        except BaseException as exc:
            _report(exc, "bytes_sent", sum(moved))
            raise
        finally:
            clock.restore()

    def _fill(self, view: memoryview, moved: list[int], got: int, flags: int, clock: _Deadline) -> bool:
        """recv into view[got:] until full, recording each count in `moved`; False on EOF."""
        want = len(view)
        if clock.timeout is None and not clock.nonblocking:
            flags |= _MSG_WAITALL  # blocking: let the kernel gather the whole range
        while got < want:
            clock.arm()
            n = _recorded(moved, _recv_into, self, _tail(view, got), want - got, flags)
            if n == 0:
                return False
            got += n
        return True

    def recv_into_exactly(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        """Fill `buffer` (or its first `nbytes`) completely; returns the count. Allocates nothing.
        EOF first raises IncompleteReadError; other failures carry `.bytes_received`."""
        view = _writable_view(buffer, "recv_into_exactly")
        size = _size(nbytes, "recv_into_exactly")
        flags = _no_peek(operator.index(flags))
        if size == 0:
            size = len(view)
        elif size > len(view):
            raise ValueError("buffer too small for requested bytes")
        view = view[:size]
        _check_open(self)
        if size == 0:
            return 0
        moved: list[int] = []
        clock = _Deadline(self, flags)
        try:
            complete = self._fill(view, moved, 0, flags, clock)
        except BaseException as exc:
            _attach(exc, "bytes_received", sum(moved))
            raise
        finally:
            clock.restore()
        if not complete:
            raise IncompleteReadError(bytes(view[:sum(moved)]), size)
        return size

    def recv_exactly(self, n: int, flags: int = 0) -> bytes:
        """Receive exactly `n` bytes. EOF first raises IncompleteReadError (with `.partial`);
        other failures carry `.bytes_received` and `.partial`, so no byte is lost. Memory
        beyond 16 MiB is taken only as bytes arrive."""
        size = _size(n, "recv_exactly")
        flags = _no_peek(operator.index(flags))
        _check_open(self)
        if size == 0:
            return b""
        buf = bytearray(min(size, EAGER_ALLOC_LIMIT))
        moved: list[int] = []
        clock = _Deadline(self, flags)
        try:
            while True:
                with memoryview(buf) as view:
                    complete = self._fill(view, moved, sum(moved), flags, clock)
                if not complete:
                    raise IncompleteReadError(bytes(buf[:sum(moved)]), size)
                if len(buf) == size:
                    return bytes(buf)
                buf.extend(bytes(min(size, 2 * len(buf)) - len(buf)))  # grow as data arrives
        except IncompleteReadError:
            raise
        except BaseException as exc:
            got = sum(moved)
            _attach(exc, "bytes_received", got)
            _attach(exc, "partial", bytes(buf[:got]))
            raise
        finally:
            clock.restore()


SocketType = socket

create_connection, create_server, socketpair, fromfd, wrap = factories_for(socket)
