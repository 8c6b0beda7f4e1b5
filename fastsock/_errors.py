"""Exceptions shared by both backends (one class each, so `except` clauses work on either)."""

from __future__ import annotations

import socket as _stdsocket

__all__ = ["IncompleteReadError", "FrameTooLarge", "SocketTimeout", "IdleTimeout", "FrameTimeout"]

if issubclass(_stdsocket.timeout, TimeoutError):  # Python 3.10+: socket.timeout is TimeoutError
    SocketTimeout = _stdsocket.timeout
else:  # Python 3.9 (and PyPy 3.9): two unrelated classes

    class SocketTimeout(_stdsocket.timeout, TimeoutError):  # type: ignore[no-redef,misc]
        """What fastsock raises when a deadline passes: on Python 3.9 both a `socket.timeout`
        and a `TimeoutError`, as the one class `socket.timeout` is on 3.10 and later, so the
        documented `except TimeoutError` works on every supported version."""


class IncompleteReadError(EOFError):
    """The peer closed the connection before `expected` bytes arrived.

    `partial` holds every byte that did arrive, so nothing is lost.
    """

    def __init__(self, partial: bytes, expected: int | None) -> None:
        self.partial = partial
        self.expected = expected
        want = "undefined" if expected is None else f"{expected}"
        super().__init__(f"{len(partial)} bytes read on a total of {want} expected bytes")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return type(self), (self.partial, self.expected)


class FrameTooLarge(ValueError):
    """A frame (announced by a length prefix, or not delimited within the limit) exceeds `limit`.

    Raised before any memory is allocated for the frame; the bytes stay buffered.
    `size` is the announced size, or the number of bytes scanned without finding a delimiter.
    """

    def __init__(self, size: int, limit: int, message: str | None = None) -> None:
        self.size = size
        self.limit = limit
        super().__init__(message or f"frame of {size} bytes exceeds the limit of {limit} bytes")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return type(self), (self.size, self.limit, self.args[0] if self.args else None)


class IdleTimeout(TimeoutError):
    """A Server connection carried no byte in either direction for `idle_timeout` seconds."""


class FrameTimeout(TimeoutError):
    """A Server connection began a frame and did not complete it within `frame_timeout` seconds."""
