"""What both backends' `socket` classes share: the stdlib subclass, `accept`, and adoption.

The accelerated methods (sendall, sendall_many, recv_exactly, recv_into_exactly) live in
each backend; everything here is cold-path Python used by both.
"""

from __future__ import annotations

import errno
import os
import socket as _stdsocket
import sys
from typing import Any, Callable, NamedTuple, TypeVar

__all__ = ["SocketBase", "adopt", "Factories", "factories_for", "EAGER_ALLOC_LIMIT", "LOWAT_MIN"]

#: recv_exactly allocates its result at once up to this size; beyond it the buffer grows
#: only as bytes actually arrive, so a hostile or mistaken size cannot reserve memory.
EAGER_ALLOC_LIMIT = 16 * 1024 * 1024

#: Reads of at least this many bytes on TCP sockets with a timeout wait with SO_RCVLOWAT
#: (one wake-up, not one per segment); blocking sockets use MSG_WAITALL instead.
LOWAT_MIN = 64 * 1024


class SocketBase(_stdsocket.socket):
    """A `socket.socket` whose `accept()` and `dup()` return the same (fastsock) class."""

    __slots__ = ()

    def accept(self) -> tuple[SocketBase, Any]:
        """Accept a connection; returns (fastsock socket, address) like `socket.accept`."""
        fd, addr = self._accept()  # type: ignore[attr-defined]  # _socket's private accept
        sock = type(self)(self.family, self.type, self.proto, fileno=fd)
        # Same rule as the stdlib: a listener with a timeout yields blocking sockets
        # unless a default timeout is set.
        if _stdsocket.getdefaulttimeout() is None and self.gettimeout():
            sock.setblocking(True)
        return sock, addr


S = TypeVar("S", bound=SocketBase)


def adopt(cls: type[S], sock: _stdsocket.socket) -> S:
    """Return a `cls` socket owning `sock`'s fd, with the same timeout; `sock` is detached.

    Nothing is closed or duplicated. A socket that already is a `cls` is returned as is.
    """
    if isinstance(sock, cls) and type(sock) is cls:
        return sock
    if not isinstance(sock, _stdsocket.socket):
        raise TypeError(f"wrap() argument must be a socket.socket, not {type(sock).__name__}")
    ssl = sys.modules.get("ssl")
    if ssl is not None and isinstance(sock, ssl.SSLSocket):
        raise TypeError("wrap() cannot adopt an ssl.SSLSocket: its TLS state lives in the object, not the fd")
    fd = sock.fileno()
    if fd < 0:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))
    timeout = sock.gettimeout()
    new = cls(sock.family, sock.type, sock.proto, fileno=fd)
    sock.detach()
    new.settimeout(timeout)
    return new


class Factories(NamedTuple):
    """The module-level constructors of one backend, bound to its socket class."""

    create_connection: Callable[..., Any]
    create_server: Callable[..., Any]
    socketpair: Callable[..., tuple[Any, Any]]
    fromfd: Callable[..., Any]
    wrap: Callable[[_stdsocket.socket], Any]


def factories_for(cls: type[S]) -> Factories:
    """Build create_connection/create_server/socketpair/fromfd/wrap returning `cls` sockets."""

    def create_connection(address: tuple[Any, ...], timeout: Any = _stdsocket._GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[attr-defined]
                          source_address: Any = None, **kwargs: Any) -> S:
        """Connect to `address` like `socket.create_connection`; returns a fastsock socket."""
        return adopt(cls, _stdsocket.create_connection(address, timeout, source_address, **kwargs))

    def create_server(address: Any, **kwargs: Any) -> S:
        """Bind and listen like `socket.create_server` (SO_REUSEADDR on POSIX); returns a fastsock socket."""
        return adopt(cls, _stdsocket.create_server(address, **kwargs))

    def socketpair(family: Any = None, type: int = _stdsocket.SOCK_STREAM, proto: int = 0) -> tuple[S, S]:
        """A connected pair like `socket.socketpair` (AF_UNIX by default); fastsock sockets."""
        if family is None:
            a, b = _stdsocket.socketpair(type=type, proto=proto)
        else:
            a, b = _stdsocket.socketpair(family, type, proto)
        return adopt(cls, a), adopt(cls, b)

    def fromfd(fd: int, family: int, type: int, proto: int = 0) -> S:
        """A fastsock socket on a duplicate of `fd`, like `socket.fromfd`."""
        return cls(family, type, proto, os.dup(fd))

    def wrap(sock: _stdsocket.socket) -> S:
        """Adopt an existing `socket.socket`: take over its fd and timeout, leave it detached.

        Nothing is closed; a fastsock socket of this backend is returned unchanged.
        """
        return adopt(cls, sock)

    made = Factories(create_connection, create_server, socketpair, fromfd, wrap)
    for fn in made:
        fn.__qualname__ = fn.__name__  # show as fastsock.create_connection, not a closure
        fn.__module__ = "fastsock"
    return made
