"""fastsock.Poller and fastsock.Selector in pure Python: the twin of fastsock/_c/poller.pxi.

The wait itself is the standard library's: select.epoll by default where it exists (as the
compiled backend and selectors.DefaultSelector on Linux), else select.poll, else
select.select; method="poll" or "select" forces one. Masks, errors and the Selector's
behaviour are the compiled backend's (shared code in fastsock/_pollbase.py).
"""

from __future__ import annotations

import errno
import functools
import math
import operator
import os
import select
import selectors
import sys
import time
from typing import Any, Optional

from .. import _pollbase as _pb
from .._pollbase import ERROR, HANGUP, READ, WRITE

__all__ = ["Poller", "Selector", "READ", "WRITE", "ERROR", "HANGUP", "POLL_METHODS"]

_HAVE_EPOLL = hasattr(select, "epoll")
_HAVE_POLL = hasattr(select, "poll")
# The peer's half-close; PyPy's select module lacks both names on Linux, where the kernel has them.
_LINUX = sys.platform.startswith("linux")
_EPOLLRDHUP = getattr(select, "EPOLLRDHUP", _pb.LINUX_EPOLLRDHUP if _LINUX else 0)
_POLLRDHUP = getattr(select, "POLLRDHUP", _pb.LINUX_POLLRDHUP if _LINUX else 0)
POLL_METHODS: tuple[str, ...] = tuple(
    name for name, ok in (("epoll", _HAVE_EPOLL), ("poll", _HAVE_POLL), ("select", True)) if ok
)
_DEFAULT_METHOD = POLL_METHODS[0]  # epoll, else poll, else select

_EDGE = 1
_ONESHOT = 2
_FD_SETSIZE = 1024  # select.select() refuses descriptors at or above this

# Platform bits for each fastsock bit, and the reverse, per method.
_POLL_OUT = (
    [(READ, select.POLLIN), (WRITE, select.POLLOUT), (HANGUP, _POLLRDHUP)]
    if _HAVE_POLL
    else []
)
_POLL_IN = (
    [
        (select.POLLIN, READ),
        (select.POLLOUT, WRITE),
        (select.POLLERR | select.POLLNVAL, ERROR),  # POLLNVAL: closed while registered
        (select.POLLHUP | _POLLRDHUP, HANGUP),
    ]
    if _HAVE_POLL
    else []
)
if _HAVE_EPOLL:
    _EPOLL_OUT = [(READ, select.EPOLLIN), (WRITE, select.EPOLLOUT), (HANGUP, _EPOLLRDHUP)]
    _EPOLL_IN = [
        (select.EPOLLIN, READ),
        (select.EPOLLOUT, WRITE),
        (select.EPOLLERR, ERROR),
        (select.EPOLLHUP | _EPOLLRDHUP, HANGUP),
    ]


def _convert(bits: int, table: list[tuple[int, int]]) -> int:
    out = 0
    for have, give in table:
        if bits & have:
            out |= give
    return out


class _Translator(dict):  # type: ignore[type-arg]
    """Memoized mask translation (a handful of distinct masks occur)."""

    def __init__(self, table: list[tuple[int, int]]) -> None:
        super().__init__()
        self._table = table

    def __missing__(self, bits: int) -> int:
        value = self[bits] = _convert(bits, self._table)
        return value


class Poller:
    """Poller(method=None)

    Readiness of many descriptors at once. method: "epoll" (Linux; the default where
    available), "poll" (the default elsewhere) or "select"; see POLL_METHODS. poll()
    returns [(fd, mask), ...] with mask made of READ, WRITE, ERROR and HANGUP, the same
    values as the compiled backend.
    """

    def __init__(self, method: Optional[str] = None) -> None:
        if method is None:
            method = _DEFAULT_METHOD
        elif not isinstance(method, str):
            raise TypeError(f"method must be a str or None, not {type(method).__name__}")
        elif method not in POLL_METHODS:
            raise ValueError(f"poll method {method!r} is not available here; this backend has {POLL_METHODS}")
        self.method: str = method
        self._regs: dict[int, tuple[int, int]] = {}  # fd -> (events, flags)
        self._disarmed: set[int] = set()  # poll/select: oneshots that fired, until modify()
        self._closed = False
        self._busy = False  # select.poll refuses concurrent poll(): the second waiter builds its own
        self._rotate = 0
        self._ep: Any = None
        self._pl: Any = None
        if method == "epoll":
            self._ep = select.epoll()
            self._from = _Translator(_EPOLL_IN)
        elif method == "poll":
            self._pl = select.poll()
            self._from = _Translator(_POLL_IN)
        else:
            self._from = _Translator([(READ, READ), (WRITE, WRITE), (ERROR, ERROR)])  # ours already

    # -- registration ----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise _pb.closed_error("poller")

    @property
    def closed(self) -> bool:
        """True once close() was called."""
        return self._closed

    def _epoll_bits(self, events: int, flags: int) -> int:
        bits = _convert(events, _EPOLL_OUT)
        if flags & _EDGE:
            bits |= select.EPOLLET
        if flags & _ONESHOT:
            bits |= select.EPOLLONESHOT
        return bits

    def register(self, fileobj: Any, events: int = READ, *, edge: bool = False, oneshot: bool = False) -> None:
        """Watch a descriptor (fd or object with fileno()) for `events` (READ, WRITE,
        HANGUP; ERROR and full hang-ups are always reported). edge=True: edge-triggered
        (epoll; poll and select report level-triggered). oneshot=True: report once, then
        stay silent until modify() re-arms. KeyError if already registered, OSError(EBADF)
        for a closed descriptor, ValueError for an invalid one; with epoll, PermissionError
        for a descriptor it cannot watch (a regular file), as selectors.EpollSelector."""
        fd = _pb.fileobj_to_fd(fileobj)
        events = _pb.check_poller_events(events)
        self._check_open()
        if fd in self._regs:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        flags = (_EDGE if edge else 0) | (_ONESHOT if oneshot else 0)
        if self._ep is not None:
            self._ep.register(fd, self._epoll_bits(events, flags))
        else:
            if self.method == "select" and fd >= _FD_SETSIZE:
                raise ValueError(f"fd {fd} is too large for the select method (FD_SETSIZE {_FD_SETSIZE})")
            os.fstat(fd)  # poll()/select() would only complain later: refuse a closed fd now
            if self._pl is not None:
                self._pl.register(fd, _convert(events, _POLL_OUT))
        self._regs[fd] = (events, flags)

    def modify(self, fileobj: Any, events: int = READ, *, edge: bool = False, oneshot: bool = False) -> None:
        """Change a registration's events and flags (re-arms a oneshot). KeyError if not registered."""
        fd = _pb.fileobj_to_fd(fileobj)
        events = _pb.check_poller_events(events)
        self._check_open()
        if fd not in self._regs:
            raise KeyError(f"{fileobj!r} is not registered")
        flags = (_EDGE if edge else 0) | (_ONESHOT if oneshot else 0)
        if self._ep is not None:
            self._ep.modify(fd, self._epoll_bits(events, flags))
        else:
            os.fstat(fd)  # closed since registered: fail like epoll_ctl
            if self._pl is not None:
                self._pl.register(fd, _convert(events, _POLL_OUT))  # register() also updates
        self._disarmed.discard(fd)
        self._regs[fd] = (events, flags)

    def unregister(self, fileobj: Any) -> None:
        """Stop watching a descriptor. KeyError if not registered. A descriptor closed while
        registered can (and should) still be unregistered by its fd number."""
        fd = _pb.fileobj_to_fd(fileobj)
        self._check_open()
        if self._regs.pop(fd, None) is None:
            raise KeyError(f"{fileobj!r} is not registered")
        if self._ep is not None:
            try:
                self._ep.unregister(fd)
            except OSError:  # closed (and maybe reused) since: the kernel already dropped it
                pass
        elif self._pl is not None and fd not in self._disarmed:
            self._pl.unregister(fd)
        self._disarmed.discard(fd)

    def __contains__(self, fileobj: Any) -> bool:
        try:
            return _pb.fileobj_to_fd(fileobj) in self._regs
        except ValueError:
            return False

    def __len__(self) -> int:
        return len(self._regs)

    # -- waiting ---------------------------------------------------------------------

    def poll(self, timeout: Optional[float] = None, max_events: Optional[int] = None) -> list[tuple[int, int]]:
        """poll(timeout=None, max_events=None) -> list of (fd, mask)

        Wait until a registered descriptor is ready. timeout in seconds, rounded up to the
        next millisecond; None or negative waits forever, 0 returns at once. At most
        max_events results (default: as many as are registered)."""
        ms = _pb.poller_timeout_ms(timeout)
        cap = 0
        if max_events is not None:
            cap = operator.index(max_events)
            if cap <= 0:
                raise ValueError("max_events must be positive")
        self._check_open()
        return self._poll_ms(ms, cap)

    def _poll_ms(self, ms: int, cap: int) -> list[tuple[int, int]]:
        if ms <= _pb.MAX_TIMEOUT_MS:
            return self._wait_once(ms, cap)
        deadline = time.monotonic() + ms / 1e3  # longer than one syscall can wait
        while True:
            left = max(0, math.ceil((deadline - time.monotonic()) * 1e3))
            ready = self._wait_once(min(left, _pb.MAX_TIMEOUT_MS), cap)
            if ready or left <= _pb.MAX_TIMEOUT_MS:
                return ready

    def _wait_once(self, ms: int, cap: int) -> list[tuple[int, int]]:
        regs = self._regs
        if not cap:
            cap = max(len(regs), 1)
        if self._ep is not None:
            raw = self._ep.poll(ms / 1e3 if ms >= 0 else -1, cap)  # handles EINTR (PEP 475)
        elif self._pl is not None:
            raw = self._poll_raw(ms)
        else:
            raw = self._select_raw(ms)
        if self._closed:
            return []
        if len(raw) > cap:  # start where the last capped call stopped, so nobody starves
            start = self._rotate % len(raw)
            raw = raw[start:] + raw[:start]
            self._rotate = start + cap
        convert = self._from
        emulate = self._ep is None
        ready = []
        for fd, bits in raw:
            reg = regs.get(fd)
            if reg is None or fd in self._disarmed:  # unregistered meanwhile, or a fired oneshot
                continue
            mask = convert[bits]
            if emulate:
                mask &= reg[0] | ERROR | HANGUP  # a modify() during the wait
                if not mask:
                    continue
                if reg[1] & _ONESHOT:
                    self._disarm(fd)
            ready.append((fd, mask))
            if len(ready) == cap:
                break
        return ready

    def _disarm(self, fd: int) -> None:
        self._disarmed.add(fd)
        if self._pl is not None:
            self._pl.unregister(fd)

    def _poll_raw(self, ms: int) -> list[tuple[int, int]]:
        pl = self._pl
        if self._busy:  # another thread is waiting on self._pl
            pl = select.poll()
            for fd, (events, _) in self._regs.items():
                if fd not in self._disarmed:
                    pl.register(fd, _convert(events, _POLL_OUT))
            return pl.poll(ms if ms >= 0 else None)
        self._busy = True
        try:
            return pl.poll(ms if ms >= 0 else None)  # type: ignore[no-any-return]
        finally:
            self._busy = False

    def _select_raw(self, ms: int) -> list[tuple[int, int]]:
        readers = []
        writers = []
        for fd, (events, _) in self._regs.items():
            if fd in self._disarmed:
                continue
            if events & READ:
                readers.append(fd)
            if events & WRITE:
                writers.append(fd)
        timeout = ms / 1e3 if ms >= 0 else None
        try:
            r, w, _ = select.select(readers, writers, [], timeout)
        except OSError as exc:
            if exc.errno != errno.EBADF:
                raise
            # a descriptor was closed while registered: report it as ERROR, as poll does
            return [(fd, ERROR) for fd in [*readers, *writers] if not _fd_is_open(fd)]
        bits: dict[int, int] = {}
        for fd in r:
            bits[fd] = READ
        for fd in w:
            bits[fd] = bits.get(fd, 0) | WRITE
        return list(bits.items())

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Release the epoll descriptor and registrations. Idempotent; later calls raise ValueError."""
        if self._closed:
            return
        self._closed = True
        self._regs.clear()
        self._disarmed.clear()
        if self._ep is not None:
            self._ep.close()

    def __enter__(self) -> Poller:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        ep = getattr(self, "_ep", None)
        if ep is not None:
            ep.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._regs)} registered"
        return f"<fastsock.Poller method={self.method!r} {state}>"


def _fd_is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


class Selector(selectors.BaseSelector):
    """Selector(method=None)

    A selectors.BaseSelector on fastsock's Poller (epoll by default where available, as
    selectors.DefaultSelector on Linux; see Poller for `method`): a drop-in for
    selectors.DefaultSelector, and for asyncio: asyncio.SelectorEventLoop(fastsock.Selector()).
    Returns selectors.SelectorKey objects.
    """

    def __init__(self, method: Optional[str] = None) -> None:
        self._poller = Poller(method)
        self._fd_to_key: dict[int, selectors.SelectorKey] = {}
        self._map: Optional[_pb.SelectorMapping] = _pb.SelectorMapping(
            self._fd_to_key, functools.partial(_pb.fileobj_lookup, self._fd_to_key)
        )

    @property
    def method(self) -> str:
        """The poll method in use."""
        return self._poller.method

    def _fileobj_lookup(self, fileobj: Any) -> int:
        return _pb.fileobj_lookup(self._fd_to_key, fileobj)

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        """Register a file object for EVENT_READ and/or EVENT_WRITE; returns its SelectorKey."""
        _pb.check_selector_events(events)
        fd = self._fileobj_lookup(fileobj)
        if fd in self._fd_to_key:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        if self._poller.closed:
            raise _pb.closed_error("selector")
        key = _pb.SelectorKey(fileobj, fd, events, data)
        self._poller.register(fd, _pb.poller_request(events))
        self._fd_to_key[fd] = key
        return key

    def _forget(self, fd: int) -> None:
        self._fd_to_key.pop(fd, None)
        try:
            self._poller.unregister(fd)
        except (KeyError, ValueError):
            pass

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        """Unregister a file object (even one closed since); returns its SelectorKey."""
        fd = self._fileobj_lookup(fileobj)
        key = self._fd_to_key.get(fd)
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        self._forget(fd)
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        """Change the events and/or data of a registered file object; returns the new key."""
        fd = self._fileobj_lookup(fileobj)
        key = self._fd_to_key.get(fd)
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        changed = False
        if events != key.events:
            _pb.check_selector_events(events)
            try:
                self._poller.modify(fd, _pb.poller_request(events))
            except BaseException:
                self._forget(fd)  # as selectors (bpo-30014): a failed modify unregisters
                raise
            changed = True
        if data != key.data:
            changed = True
        if changed:
            key = _pb.SelectorKey(key.fileobj, fd, events, data)
            self._fd_to_key[fd] = key
        return key

    def select(self, timeout: Optional[float] = None) -> list[tuple[selectors.SelectorKey, int]]:
        """select(timeout=None) -> list of (SelectorKey, events)

        Wait until some registered file objects are ready or the timeout expires: None
        waits forever, <= 0 polls, else seconds rounded up to the next millisecond.
        Signals run their handlers and the wait resumes (PEP 475)."""
        ms = _pb.selector_timeout_ms(timeout)
        if self._poller.closed:
            raise _pb.closed_error("selector")
        fd_to_key = self._fd_to_key
        to_events = _pb.selector_events
        ready = []
        for fd, mask in self._poller._poll_ms(ms, 0):
            key = fd_to_key.get(fd)
            if key is not None:
                events = to_events(mask) & key.events
                if events:
                    ready.append((key, events))
        return ready

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        """The SelectorKey of a registered file object (KeyError if not; RuntimeError once closed)."""
        if self._map is None:
            raise RuntimeError("Selector is closed")
        key = self._fd_to_key.get(self._fileobj_lookup(fileobj))
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        return key

    def get_map(self) -> Optional[_pb.SelectorMapping]:  # type: ignore[override]  # None once closed, as selectors
        """A read-only mapping of file objects to keys (None once closed)."""
        return self._map

    def close(self) -> None:
        """Unregister everything and release the poller."""
        self._fd_to_key.clear()
        self._map = None
        self._poller.close()
