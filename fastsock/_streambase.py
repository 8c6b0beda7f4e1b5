"""What both backends' `Stream` classes share: option checks, socket adoption, `connect`,
and the `sendfile` loop. Cold-path Python only; the hot paths live in each backend."""

from __future__ import annotations

import errno
import io
import operator
import os
import select
import socket as _stdsocket
import sys
from time import monotonic
from typing import Any, Callable

from ._errors import SocketTimeout
from .framing import Framing

__all__ = [
    "DEFAULT_READ_SIZE",
    "DEFAULT_MAX_BUFFER",
    "DEFAULT_WRITE_BUFFER",
    "COPY_MAX",
    "SHRINK_MIN",
    "SHRINK_READ_SIZES",
    "GROW_FROM",
    "shrink_threshold",
    "BUSY_MESSAGE",
    "check_socket",
    "check_options",
    "check_framing",
    "connect_socket",
    "sendfile",
]

#: Bytes asked of the kernel per recv into the read buffer.
DEFAULT_READ_SIZE = 65536
#: The read buffer never grows past this, whatever the peer sends (64 MiB).
DEFAULT_MAX_BUFFER = 64 * 1024 * 1024
#: Small writes are queued until this many bytes are pending, then sent together.
DEFAULT_WRITE_BUFFER = 65536
#: Writes larger than this are never copied into the write queue: they go out with writev.
COPY_MAX = 16384

# Read-buffer memory: one rule for both backends (each Stream reads these at import, and
# tests/test_stream_memory.py checks both against them).
#: The call that empties the read buffer gives its memory back if its capacity exceeds
#: shrink_threshold(read_size) = max(SHRINK_READ_SIZES * read_size, SHRINK_MIN): a
#: connection that once took a huge frame does not keep that memory while idle, and one
#: that reads ordinary traffic keeps its buffer across reads.
SHRINK_MIN = 1 << 20
#: See SHRINK_MIN.
SHRINK_READ_SIZES = 4
#: Memory taken before bytes arrive is bounded by this. A fill for a frame of known size
#: asks for max(read_size, min(rest, max(held, GROW_FROM))) bytes of free space; a large
#: frame or read_exactly result received straight into its own memory starts at
#: max(held, min(size, GROW_FROM)) bytes; either grows (at least doubling) only as bytes
#: arrive, so a length prefix alone cannot make a Stream reserve the size it announces.
GROW_FROM = 1 << 20


def shrink_threshold(read_size: int) -> int:
    """The capacity above which an emptied read buffer is given back (see SHRINK_MIN). The
    write queue follows the same rule with its own size: the flush that empties it gives
    its memory back if its capacity exceeds shrink_threshold(write_buffer) (a queue that
    took the unsent rest of a large write after a timeout does not keep it once sent)."""
    return max(SHRINK_READ_SIZES * read_size, SHRINK_MIN)


#: The RuntimeError message for a Stream used by a second thread (or a signal handler).
BUSY_MESSAGE = "Stream is already in use by another thread (or re-entered from a signal handler)"


def check_socket(sock: Any) -> None:
    """Stream's socket must be a connected-stream `socket.socket` (not TLS); TypeError/ValueError."""
    if not isinstance(sock, _stdsocket.socket):
        raise TypeError(f"Stream() needs a socket.socket, not {type(sock).__name__}")
    ssl = sys.modules.get("ssl")
    if ssl is not None and isinstance(sock, ssl.SSLSocket):
        raise TypeError("Stream() cannot wrap an ssl.SSLSocket: it reads and writes the fd directly")
    if sock.fileno() < 0:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))
    if sock.type != _stdsocket.SOCK_STREAM:
        raise ValueError(f"Stream() needs a SOCK_STREAM socket, not {sock.type!r}")


def _positive(value: Any, name: str, minimum: int) -> int:
    number = operator.index(value)
    if number < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {number}")
    if number > sys.maxsize // 4:
        raise ValueError(f"{name} is too large: {number}")
    return number


def check_options(read_size: Any, max_buffer: Any, write_buffer: Any) -> tuple[int, int, int]:
    """Validated (read_size, max_buffer, write_buffer): TypeError for non-integers, ValueError
    for sizes out of range (read_size must not exceed max_buffer)."""
    read = _positive(read_size, "read_size", 1)
    cap = _positive(max_buffer, "max_buffer", 1)
    write = _positive(write_buffer, "write_buffer", 0)
    if read > cap:
        raise ValueError(f"read_size ({read}) cannot exceed max_buffer ({cap})")
    return read, cap, write


def check_framing(framing: Any) -> Any:
    """None or a `fastsock.framing.Framing` instance; TypeError otherwise."""
    if framing is not None and not isinstance(framing, Framing):
        raise TypeError(f"framing must be a fastsock.framing.Framing (LengthPrefix, Delimiter, ...), "
                        f"not {type(framing).__name__}")
    return framing


def connect_socket(socket_factory: Callable[..., Any], create_connection: Callable[..., Any],
                   address: Any, timeout: Any) -> Any:
    """A connected socket for `connect()`: TCP for (host, port) tuples (with TCP_NODELAY,
    since the Stream does its own coalescing), AF_UNIX for a path (str, bytes, PathLike)."""
    if isinstance(address, (str, bytes, os.PathLike)):
        sock = socket_factory(_stdsocket.AF_UNIX, _stdsocket.SOCK_STREAM)
        try:
            if timeout is not _stdsocket._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]
                sock.settimeout(timeout)
            sock.connect(os.fspath(address))
        except BaseException:
            sock.close()
            raise
        return sock
    sock = create_connection(address, timeout)
    try:
        sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
    except OSError:
        pass
    return sock


def _attach(exc: BaseException, sent: int) -> None:
    try:
        exc.bytes_sent = sent  # type: ignore[attr-defined]
    except AttributeError:
        pass


def _wait_writable(fd: int, deadline: float | None) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    while True:
        if deadline is None:
            timeout_ms = None
        else:
            left = deadline - monotonic()
            if left <= 0:
                raise SocketTimeout("timed out")
            timeout_ms = max(1, int(left * 1000 + 0.999))
        if poller.poll(timeout_ms):
            return


def sendfile(sock: Any, file: Any, offset: int, count: Any) -> int:
    """Send `count` bytes (None: to the end) of `file` from `offset`, with os.sendfile where
    the file has a descriptor, else by reading and sending. The socket's timeout is a
    deadline for the whole call; a failure carries `.bytes_sent` (resume at offset +
    bytes_sent). Like socket.sendfile, the file position ends after the last byte sent."""
    offset = operator.index(offset)
    if offset < 0:
        raise ValueError(f"negative offset: {offset}")
    if count is not None:
        count = operator.index(count)
        if count < 0:
            raise ValueError(f"negative count: {count}")
    if "b" not in getattr(file, "mode", "b"):
        raise ValueError("file should be opened in binary mode")
    timeout = sock.gettimeout()
    deadline = None if timeout is None else monotonic() + timeout
    try:
        file_fd = file.fileno()
        os.fstat(file_fd)
    except (AttributeError, OSError, io.UnsupportedOperation):
        file_fd = -1
    sent = 0
    try:
        if file_fd >= 0 and hasattr(os, "sendfile"):
            sent = _sendfile_zero_copy(sock.fileno(), file_fd, offset, count, timeout, deadline)
        else:
            sent = _sendfile_copy(sock, file, offset, count, deadline)
        return sent
    except BaseException as exc:
        progress = getattr(exc, "bytes_sent", 0)
        _attach(exc, progress)
        sent = progress
        raise
    finally:
        if sent > 0 and hasattr(file, "seek"):
            file.seek(offset + sent)


def _sendfile_zero_copy(out_fd: int, in_fd: int, offset: int, count: int | None,
                        timeout: float | None, deadline: float | None) -> int:
    if count is None:
        count = max(0, os.fstat(in_fd).st_size - offset)
    sent = 0
    try:
        while sent < count:
            try:
                n = os.sendfile(out_fd, in_fd, offset + sent, min(count - sent, 1 << 30))
            except BlockingIOError:
                if timeout == 0:
                    raise
                _wait_writable(out_fd, deadline)
                continue
            if n == 0:  # the file is shorter than announced
                break
            sent += n
        return sent
    except BaseException as exc:
        _attach(exc, sent)
        raise


def _sendfile_copy(sock: Any, file: Any, offset: int, count: int | None, deadline: float | None) -> int:
    if hasattr(file, "seek"):
        file.seek(offset)
    sent = 0
    timeout = sock.gettimeout()
    try:
        while count is None or sent < count:
            chunk = file.read(65536 if count is None else min(65536, count - sent))
            if not chunk:
                break
            if deadline is not None:
                left = deadline - monotonic()
                if left <= 0:
                    raise SocketTimeout("timed out")
                sock.settimeout(left)
            try:
                try:
                    _stdsocket.socket.sendall(sock, chunk)
                except _stdsocket.timeout as exc:
                    if isinstance(exc, SocketTimeout):
                        raise
                    raise SocketTimeout(*exc.args) from None  # Python 3.9: make it a TimeoutError too
            except BaseException as exc:
                sent += getattr(exc, "bytes_sent", 0)
                raise
            sent += len(chunk)
        return sent
    except BaseException as exc:
        _attach(exc, sent)
        raise
    finally:
        if deadline is not None:
            sock.settimeout(timeout)
