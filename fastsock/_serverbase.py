"""What both backends' `Server` classes share: option checks, listening sockets, logging and
the names of the stats. Cold-path Python only; each backend has its own loop."""

from __future__ import annotations

import errno
import logging
import operator
import os
import socket as _stdsocket
from typing import Any, Callable, NamedTuple, Optional

from .framing import Framing

__all__ = [
    "LOGGER",
    "DEFAULT_HIGH_WATER",
    "DEFAULT_RAW_MAX_BUFFER",
    "DEFAULT_BACKLOG",
    "DEFAULT_GRACE",
    "STATS_KEYS",
    "Options",
    "check_options",
    "bind_listener",
    "adopt_listener",
]

#: Every Server logs here: handler exceptions (with traceback), accept errors (once).
LOGGER = logging.getLogger("fastsock.server")

#: Above this many queued output bytes a connection stops being read (backpressure).
DEFAULT_HIGH_WATER = 1 << 20
#: The read buffer bound of a raw-mode connection (framed mode: framing.max_size + 64 KiB).
DEFAULT_RAW_MAX_BUFFER = 1 << 20
#: Room for a frame's header and the start of the next frame beside a max_size payload.
FRAMED_MAX_BUFFER_SLACK = 64 * 1024
DEFAULT_BACKLOG = 1024
#: stop() and the SIGTERM/SIGINT handlers wait this long for connections to finish.
DEFAULT_GRACE = 5.0

#: The keys every backend's stats() returns.
STATS_KEYS = (
    "connections",  # open now
    "accepted",
    "closed",
    "frames_in",
    "frames_out",
    "bytes_in",
    "bytes_out",
    "writes",  # send system calls made (one per connection per turn, unless the kernel takes part)
    "paused",  # connections paused by backpressure now
    "timeouts",  # idle and frame timeouts
    "errors",  # handler exceptions, framing errors and frames too large
    "listeners",
    "running",
)


class Options(NamedTuple):
    """A Server's validated options (see `check_options`)."""

    handler: Callable[..., Any]
    framing: Optional[Framing]
    batch: bool
    on_connect: Optional[Callable[..., Any]]
    on_close: Optional[Callable[..., Any]]
    on_error: Optional[Callable[..., Any]]
    max_connections: int  # 0: unlimited
    idle_timeout: Optional[float]
    frame_timeout: Optional[float]
    read_size: int
    max_buffer: int
    high_water: int
    low_water: int
    write_limit: int
    backlog: int
    workers: int
    reuse_port: bool


def _callable(value: Any, name: str, required: bool = False) -> Any:
    if value is None and not required:
        return None
    if not callable(value):
        raise TypeError(f"{name} must be callable, not {type(value).__name__}")
    return value


def _count(value: Any, name: str, minimum: int, maximum: int = 1 << 40) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not bool")
    number = operator.index(value)
    if not minimum <= number <= maximum:
        raise ValueError(f"{name} must be between {minimum} and {maximum}, not {number}")
    return number


def _seconds(value: Any, name: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, not {type(value).__name__}")
    seconds = float(value)
    if not seconds > 0 or seconds == float("inf"):  # also refuses NaN
        raise ValueError(f"{name} must be a positive, finite number of seconds, not {value!r}")
    return seconds


def check_options(handler: Any, *, framing: Any = None, batch: Any = False, on_connect: Any = None,
                  on_close: Any = None, on_error: Any = None, max_connections: Any = None,
                  idle_timeout: Any = None, frame_timeout: Any = None, read_size: Any = 65536,
                  max_buffer: Any = None, high_water: Any = DEFAULT_HIGH_WATER, low_water: Any = None,
                  write_limit: Any = None, backlog: Any = DEFAULT_BACKLOG, workers: Any = 1,
                  reuse_port: Any = False) -> Options:
    """Validate Server(...)'s arguments: TypeError for wrong types, ValueError for bad values."""
    _callable(handler, "handler", required=True)
    if framing is not None and not isinstance(framing, Framing):
        raise TypeError(f"framing must be a fastsock.framing.Framing or None (raw mode), "
                        f"not {type(framing).__name__}")
    if not isinstance(batch, bool):
        raise TypeError(f"batch must be a bool, not {type(batch).__name__}")
    if batch and framing is None:
        raise ValueError("batch=True needs a framing: raw mode (framing=None) already sees every byte")
    read = _count(read_size, "read_size", 1, 1 << 30)
    if max_buffer is None:
        cap = (framing.max_size + FRAMED_MAX_BUFFER_SLACK) if framing is not None else DEFAULT_RAW_MAX_BUFFER
        cap = max(cap, read)
    else:
        cap = _count(max_buffer, "max_buffer", 1)
        if read > cap:
            raise ValueError(f"read_size ({read}) cannot exceed max_buffer ({cap})")
    high = _count(high_water, "high_water", 1)
    low = high // 4 if low_water is None else _count(low_water, "low_water", 0)
    if low > high:
        raise ValueError(f"low_water ({low}) cannot exceed high_water ({high})")
    hard = max(16 << 20, 4 * high) if write_limit is None else _count(write_limit, "write_limit", 1)
    if hard < high:
        raise ValueError(f"write_limit ({hard}) cannot be below high_water ({high})")
    if not isinstance(reuse_port, bool):
        raise TypeError(f"reuse_port must be a bool, not {type(reuse_port).__name__}")
    return Options(
        handler=handler,
        framing=framing,
        batch=batch,
        on_connect=_callable(on_connect, "on_connect"),
        on_close=_callable(on_close, "on_close"),
        on_error=_callable(on_error, "on_error"),
        max_connections=0 if max_connections is None else _count(max_connections, "max_connections", 1),
        idle_timeout=_seconds(idle_timeout, "idle_timeout"),
        frame_timeout=_seconds(frame_timeout, "frame_timeout"),
        read_size=read,
        max_buffer=cap,
        high_water=high,
        low_water=low,
        write_limit=hard,
        backlog=_count(backlog, "backlog", 0, 1 << 20),
        workers=_count(workers, "workers", 1, 4096),
        reuse_port=reuse_port,
    )


def bind_listener(address: Any, backlog: int, reuse_port: bool) -> _stdsocket.socket:
    """A non-blocking listening socket on `address`: (host, port) for TCP (IPv4 or IPv6 by
    what the host resolves to, SO_REUSEADDR set), or an AF_UNIX path. An existing AF_UNIX
    socket file is left alone (EADDRINUSE), never removed."""
    if isinstance(address, (str, bytes, os.PathLike)):
        sock = _stdsocket.socket(_stdsocket.AF_UNIX, _stdsocket.SOCK_STREAM)
        try:
            sock.bind(os.fspath(address))
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
    else:
        if not isinstance(address, tuple) or len(address) < 2:
            raise TypeError(f"address must be (host, port) or an AF_UNIX path, not {address!r}")
        host, port = address[0], address[1]
        infos = _stdsocket.getaddrinfo(host, port, 0, _stdsocket.SOCK_STREAM, 0, _stdsocket.AI_PASSIVE)
        if not infos:
            raise OSError(errno.EADDRNOTAVAIL, f"cannot resolve {host!r}")
        family, kind, proto, _, sockaddr = infos[0]
        sock = _stdsocket.socket(family, kind, proto)
        try:
            sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_REUSEADDR, 1)
            if reuse_port:
                if not hasattr(_stdsocket, "SO_REUSEPORT"):
                    raise OSError(errno.ENOPROTOOPT, "SO_REUSEPORT is not available on this platform")
                sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_REUSEPORT, 1)
            if family == _stdsocket.AF_INET6:
                sock.setsockopt(_stdsocket.IPPROTO_IPV6, _stdsocket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
    sock.setblocking(False)
    return sock


def adopt_listener(sock: Any) -> _stdsocket.socket:
    """Check a socket handed to listen(sock=...): a listening SOCK_STREAM socket.socket
    (TypeError / ValueError otherwise); it is made non-blocking and owned from then on."""
    if not isinstance(sock, _stdsocket.socket):
        raise TypeError(f"sock must be a socket.socket, not {type(sock).__name__}")
    if sock.fileno() < 0:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))
    if sock.type != _stdsocket.SOCK_STREAM:
        raise ValueError(f"sock must be a SOCK_STREAM socket, not {sock.type!r}")
    if not sock.getsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_ACCEPTCONN):
        raise ValueError("sock must be listening (call sock.listen() first)")
    sock.setblocking(False)
    return sock
