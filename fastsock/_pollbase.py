"""What both backends' Poller and Selector share: constants, argument checks, the key map.

Only cold paths live here (registration checks, error texts, get_map's mapping); the
compiled backend keeps select()/poll() themselves in Cython.
"""

from __future__ import annotations

import math
import selectors
from collections.abc import Iterator, Mapping
from typing import Any, Callable, Optional

# Event bits of Poller masks. They equal select.EPOLLIN/EPOLLOUT/EPOLLERR/EPOLLHUP (and the
# POLL* twins) on Linux, on both backends; other platforms translate in C / in _py/poller.py.
READ = 0x001
WRITE = 0x004
ERROR = 0x008
HANGUP = 0x010
ALL_EVENTS = READ | WRITE | ERROR | HANGUP

# selectors.SelectorKey is what asyncio and selectors code expect back from a Selector.
SelectorKey = selectors.SelectorKey
EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE

# The largest C int: epoll_wait / poll take an int of milliseconds, and a descriptor is an int.
INT_MAX = 2**31 - 1
MAX_TIMEOUT_MS = INT_MAX
# Timeouts longer than this (about 31 years) block forever; keeps deadlines in int64 ns.
MAX_FINITE_MS = 10**12

# Linux's values, for interpreters whose select module lacks the constants (PyPy 3.9).
LINUX_EPOLLRDHUP = 0x2000
LINUX_POLLRDHUP = 0x2000


def fileobj_to_fd(fileobj: Any) -> int:
    """The descriptor of an int or an object with fileno(), as selectors does (ValueError)."""
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    if fd > INT_MAX:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd


def fileobj_lookup(fd_to_key: Mapping[int, selectors.SelectorKey], fileobj: Any) -> int:
    """fileobj_to_fd, or, for an object that no longer has a valid fileno() (a closed
    socket), the fd it was registered with: selectors' exhaustive search."""
    try:
        return fileobj_to_fd(fileobj)
    except ValueError:
        for key in fd_to_key.values():
            if key.fileobj is fileobj:
                return key.fd
        raise


def check_poller_events(events: Any) -> int:
    """A Poller event request: a subset of READ|WRITE|ERROR|HANGUP (ERROR and a full
    hang-up are reported whether asked or not; HANGUP also asks for the peer's half-close)."""
    if not isinstance(events, int):
        raise TypeError(f"events must be an int, not {type(events).__name__}")
    if events < 0 or events & ~ALL_EVENTS:
        raise ValueError(f"Invalid events: {events!r}")
    return events


def check_selector_events(events: Any) -> int:
    """A Selector event request: a nonzero subset of EVENT_READ|EVENT_WRITE (ValueError)."""
    if (not events) or (events & ~(EVENT_READ | EVENT_WRITE)):
        raise ValueError(f"Invalid events: {events!r}")
    return int(events)


def poller_timeout_ms(timeout: Optional[float]) -> int:
    """Poller.poll's timeout in ms: None or negative blocks (-1), like select.epoll.poll;
    else seconds rounded UP to the next millisecond, so the wait is never shorter than asked."""
    if timeout is None:
        return -1
    if isinstance(timeout, (str, bytes, bytearray)):
        raise TypeError(f"timeout must be a number or None, not {type(timeout).__name__}")
    t = float(timeout)
    if t != t:
        raise ValueError("timeout must not be NaN")
    if t < 0:
        return -1
    if t * 1e3 >= MAX_FINITE_MS:  # inf, or decades: wait as long as it takes
        return -1
    return math.ceil(t * 1e3)


def selector_timeout_ms(timeout: Optional[float]) -> int:
    """BaseSelector.select's timeout in ms: None blocks, <= 0 polls, else rounded up."""
    if timeout is None:
        return -1
    if timeout <= 0:
        return 0
    return poller_timeout_ms(timeout)


def selector_events(mask: int) -> int:
    """Selector events for a Poller mask: as selectors.EpollSelector, an error or hang-up
    wakes both readers and writers (the caller masks with key.events)."""
    events = 0
    if mask & (READ | ERROR | HANGUP):
        events |= EVENT_READ
    if mask & (WRITE | ERROR | HANGUP):
        events |= EVENT_WRITE
    return events


def poller_request(events: int) -> int:
    """Poller events for a Selector request."""
    request = 0
    if events & EVENT_READ:
        request |= READ
    if events & EVENT_WRITE:
        request |= WRITE
    return request


def closed_error(what: str) -> ValueError:
    return ValueError(f"I/O operation on closed {what}")


class SelectorMapping(Mapping[Any, selectors.SelectorKey]):
    """Read-only view of a Selector's keys, like selectors' own: indexed by file object or
    fd, iterating over fds."""

    __slots__ = ("_fd_to_key", "_lookup")

    def __init__(self, fd_to_key: dict[int, selectors.SelectorKey], lookup: Callable[[Any], int]) -> None:
        self._fd_to_key = fd_to_key
        self._lookup = lookup

    def __len__(self) -> int:
        return len(self._fd_to_key)

    def __getitem__(self, fileobj: Any) -> selectors.SelectorKey:
        # ValueError from the lookup propagates, as in selectors
        try:
            return self._fd_to_key[self._lookup(fileobj)]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None

    def __iter__(self) -> Iterator[int]:
        return iter(self._fd_to_key)
