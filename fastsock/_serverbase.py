"""What both backends' `Server` classes share: option checks, listening sockets, logging, the
names of the stats, the thread-safe call queue, the SIGINT/SIGTERM handlers, the workers
supervisor and `serve()`. Cold-path Python only, backend-neutral (the compiled Server calls
the same helpers from Cython); each backend has its own loop.

Decisions both backends follow (where the contract, server-spec.md, is silent) are stated in
the docstrings of the helpers that implement them and of the pure `fastsock._py.Server`.
"""

from __future__ import annotations

import errno
import logging
import math
import operator
import os
import selectors
import signal
import socket as _stdsocket
import sys
import threading
import time
from collections import deque
from typing import Any, Callable, NamedTuple, Optional, Protocol

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
    "KILL_MARGIN",
    "TRANSIENT_ACCEPT_ERRNOS",
    "ACCEPT_BACKOFF_MIN",
    "ACCEPT_BACKOFF_MAX",
    "TRANSIENT_ACCEPT_RUN",
    "TRANSIENT_ACCEPT_BACKOFF",
    "RESTART_DELAY_MIN",
    "RESTART_DELAY_MAX",
    "RESTART_RESET",
    "check_grace",
    "closed_error",
    "log_exception",
    "AcceptErrors",
    "CallQueue",
    "SignalHandlers",
    "ListenPlan",
    "Supervisor",
    "serve",
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


def bind_listener(address: Any, backlog: int, reuse_port: bool, listen: bool = True) -> _stdsocket.socket:
    """A non-blocking listening socket on `address`: (host, port) for TCP (IPv4 or IPv6 by
    what the host resolves to, SO_REUSEADDR set), or an AF_UNIX path. An existing AF_UNIX
    socket file is left alone (EADDRINUSE), never removed. listen=False: bound only (the
    workers supervisor's port reservation, see ListenPlan)."""
    if isinstance(address, (str, bytes, os.PathLike)):
        sock = _stdsocket.socket(_stdsocket.AF_UNIX, _stdsocket.SOCK_STREAM)
        try:
            sock.bind(os.fspath(address))
            if listen:
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
            if listen:
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


# -- stop, errors and logging ---------------------------------------------------------

#: A worker process still alive this long after the end of its stop's grace period is killed.
KILL_MARGIN = 2.0


def check_grace(grace: Any) -> float:
    """stop(grace)'s argument: seconds >= 0 (float("inf") waits for every connection);
    TypeError for a non-number, ValueError for a negative number or NaN."""
    if isinstance(grace, bool) or not isinstance(grace, (int, float)):
        raise TypeError(f"grace must be a number of seconds, not {type(grace).__name__}")
    value = float(grace)
    if not value >= 0:  # also refuses NaN
        raise ValueError(f"grace must be >= 0 seconds, not {grace!r}")
    return value


def closed_error() -> BrokenPipeError:
    """What send/write on a closed (or closing) Connection raise: EPIPE, as a closed socket."""
    return BrokenPipeError(errno.EPIPE, "the connection is closed")


def log_exception(what: str, conn: Any, exc: BaseException) -> None:
    """Log `exc` with its traceback at ERROR on `fastsock.server`: "<what> raised on <conn>"
    ("<what> raised" when conn is None). The policy of both backends for handler, hook and
    call_soon_threadsafe exceptions."""
    info = (type(exc), exc, exc.__traceback__)
    if conn is None:
        LOGGER.error("%s raised", what, exc_info=info)
    else:
        LOGGER.error("%s raised on %r", what, conn, exc_info=info)


#: accept() errors that concern one connection the kernel already gave up on (or a
#: network-level hiccup), not the listener: skip that connection and accept on (the
#: network errors Linux's accept(2) says to treat like EAGAIN).
TRANSIENT_ACCEPT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ECONNABORTED", "EPROTO", "EPERM", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET",
                 "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH", "ETIMEDOUT")
    if hasattr(errno, name)
)
#: After any other accept() error (EMFILE, ENFILE, ENOBUFS, ENOMEM, ...) every listener stops
#: accepting for this long, doubling while the error persists, up to ACCEPT_BACKOFF_MAX; the
#: first success resets it. The server never spins on a listener it cannot accept from.
ACCEPT_BACKOFF_MIN = 0.1
ACCEPT_BACKOFF_MAX = 1.0
#: This many transient errors in a row (no accept() succeeding between them) pause accepting
#: for TRANSIENT_ACCEPT_BACKOFF: a listener whose every accept() fails (a policy denying it
#: with EPERM, say) is never spun on. The compiled loop ends a turn's accepting after as many
#: (TRANSIENT_RUN in src_c/fs_server.c).
TRANSIENT_ACCEPT_RUN = 16
TRANSIENT_ACCEPT_BACKOFF = 0.01


class AcceptErrors:
    """The accept() error policy of both backends: transient errors (TRANSIENT_ACCEPT_ERRNOS)
    skip one connection, unless TRANSIENT_ACCEPT_RUN of them come in a row, which pause
    accepting for TRANSIENT_ACCEPT_BACKOFF; any other error pauses accepting on every
    listener with an exponential back-off (ACCEPT_BACKOFF_MIN to ACCEPT_BACKOFF_MAX). Each
    kind of error (errno) is logged once per Server on `fastsock.server`: ERROR for the
    back-off kinds, DEBUG for the transient ones. Existing connections are served
    throughout."""

    def __init__(self) -> None:
        self._seen: set[Optional[int]] = set()
        self._delay = ACCEPT_BACKOFF_MIN
        self._transient_run = 0

    def failed(self, exc: OSError, listener: Any) -> float:
        """Record a failed accept(): 0.0 (accept on), or the seconds to stop accepting."""
        code = exc.errno
        if code in TRANSIENT_ACCEPT_ERRNOS:
            if code not in self._seen:
                self._seen.add(code)
                LOGGER.debug("accept() on %r: %s (skipped; logged once)", listener, exc)
            self._transient_run += 1
            if self._transient_run >= TRANSIENT_ACCEPT_RUN:
                self._transient_run = 0
                return TRANSIENT_ACCEPT_BACKOFF
            return 0.0
        delay = self._delay
        self._delay = min(2 * delay, ACCEPT_BACKOFF_MAX)
        if code not in self._seen:
            self._seen.add(code)
            LOGGER.error("accept() on %r failed: %s; accepting paused for %.1f s and retried with back-off "
                         "while it persists (existing connections are served; logged once)", listener, exc, delay)
        return delay

    def succeeded(self) -> None:
        """An accept() worked: the next failure starts the back-off (and the run) afresh."""
        self._delay = ACCEPT_BACKOFF_MIN
        self._transient_run = 0


# -- the thread-safe call queue ---------------------------------------------------------


class CallQueue:
    """The loop's inbox for other threads: a lock, a deque of (fn, args) and a wake-up
    descriptor (an eventfd where `os.eventfd` exists, Linux with Python 3.10+, else a
    non-blocking pipe) that the loop watches for reading.

    `put` (any thread) appends and wakes the loop only when the queue was empty; `take` (the
    loop, when `fileno()` is readable or whenever it likes) clears the descriptor first,
    then empties the deque, so no call is ever left behind without a pending wake-up. Calls
    come out in the order they were put. `wake` alone makes the loop's wait return (what
    stop() uses); it takes no lock, so a signal handler may call it."""

    def __init__(self) -> None:
        self._rfd = self._wfd = -1
        self._open()

    def _open(self) -> None:
        self._lock = threading.Lock()
        self._calls: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._eventfd = hasattr(os, "eventfd")
        if self._eventfd:
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._rfd = self._wfd = fd
        else:  # pragma: no cover  (platforms without eventfd)
            self._rfd, self._wfd = os.pipe()
            os.set_blocking(self._rfd, False)
            os.set_blocking(self._wfd, False)

    def fileno(self) -> int:
        """The descriptor to watch for reading (-1 once closed)."""
        return self._rfd

    def __len__(self) -> int:
        return len(self._calls)

    def put(self, fn: Callable[..., Any], args: tuple[Any, ...] = ()) -> None:
        """Queue fn(*args) for the loop's next turn (RuntimeError once closed)."""
        with self._lock:
            if self._wfd < 0:
                raise RuntimeError("the server is closed")
            first = not self._calls
            self._calls.append((fn, args))
        if first:
            self.wake()

    def wake(self) -> None:
        """Make the loop's wait return (no-op once closed)."""
        fd = self._wfd
        if fd < 0:
            return
        try:
            if self._eventfd:
                os.eventfd_write(fd, 1)
            else:  # pragma: no cover
                os.write(fd, b"\0")
        except BlockingIOError:  # already signalled (a full pipe, or an eventfd at its maximum)
            pass
        except OSError:  # closed by another thread meanwhile
            pass

    def take(self) -> list[tuple[Callable[..., Any], tuple[Any, ...]]]:
        """On the loop thread: the calls queued so far, oldest first (clears the wake-up)."""
        fd = self._rfd
        if fd >= 0:
            try:
                if self._eventfd:
                    os.eventfd_read(fd)
                else:  # pragma: no cover
                    while os.read(fd, 4096):
                        pass
            except (BlockingIOError, InterruptedError):
                pass
        with self._lock:
            calls = list(self._calls)
            self._calls.clear()
        return calls

    def after_fork(self) -> None:
        """In a forked child: fresh lock and descriptors, no inherited calls (the parent's
        calls are the parent's business; its descriptors are closed here)."""
        self._close_fds()
        self._open()

    def _close_fds(self) -> None:
        rfd, wfd = self._rfd, self._wfd
        self._rfd = self._wfd = -1
        for fd in {rfd, wfd}:
            if fd >= 0:
                os.close(fd)

    def close(self) -> None:
        """Release the descriptors and drop queued calls. Idempotent."""
        with self._lock:
            self._calls.clear()
            self._close_fds()

    def __del__(self) -> None:
        try:
            self._close_fds()
        except (AttributeError, OSError):  # half-built, or closed already
            pass


# -- SIGINT and SIGTERM ---------------------------------------------------------------


class SignalHandlers:
    """SIGINT and SIGTERM handlers while a loop (or the workers supervisor) runs in the main
    thread.

    `install()` (a no-op returning False outside the main thread, where Python cannot set
    handlers) sets Python handlers for both signals and points `signal.set_wakeup_fd` at a
    non-blocking socketpair whose reading end, `fileno()`, the loop watches: a signal then
    wakes a loop that waits in C with the GIL released or in select(), whichever thread the
    kernel delivered the signal to, and the Python handler runs as soon as the main thread
    runs Python code again. The loop calls `drain()` when `fileno()` is readable.

    Each signal calls `stop()` (a graceful stop with the default grace: both backends pass
    `DEFAULT_GRACE` as this module holds it when the signal arrives; a stop under way keeps
    its earlier end), except the second SIGINT these handlers receive, and any after it,
    which call `abort()`. Only SIGINTs received here count, not a stop under way for
    another reason: one Ctrl-C reaches a workers supervisor and its workers alike (the
    process group), and the stop the supervisor forwards may reach a worker before the
    worker's own SIGINT handler runs, which must still be a graceful stop; a second Ctrl-C
    aborts everywhere. SIGTERM never aborts. `restore()` puts the previous handlers and
    wake-up fd back."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, stop: Callable[[], None], abort: Callable[[], None]) -> None:
        self._stop = stop
        self._abort = abort
        self._sigints = 0  # SIGINTs received since install()
        self._previous: dict[int, Any] = {}
        self._old_wakeup: Optional[int] = None
        self._pair: Optional[tuple[_stdsocket.socket, _stdsocket.socket]] = None

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            self._sigints += 1
            if self._sigints > 1:
                self._abort()
                return
        self._stop()

    def install(self) -> bool:
        """Install the handlers (main thread only); False, doing nothing, elsewhere."""
        if threading.current_thread() is not threading.main_thread() or self._pair is not None:
            return False
        pair = _stdsocket.socketpair()
        for s in pair:
            s.setblocking(False)
        try:
            self._old_wakeup = signal.set_wakeup_fd(pair[1].fileno(), warn_on_full_buffer=False)
        except (ValueError, OSError):  # pragma: no cover  (not the main interpreter)
            for s in pair:
                s.close()
            return False
        self._pair = pair
        self._sigints = 0
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return True

    def fileno(self) -> int:
        """The descriptor a signal makes readable (-1 when not installed)."""
        return self._pair[0].fileno() if self._pair is not None else -1

    def drain(self) -> None:
        """Consume the wake-up bytes (the Python handlers themselves run on their own)."""
        if self._pair is None:
            return
        try:
            while self._pair[0].recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def restore(self) -> None:
        """Put back the previous handlers and wake-up fd. Idempotent."""
        if self._pair is None:
            return
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()
        signal.set_wakeup_fd(self._old_wakeup if self._old_wakeup is not None else -1)
        for s in self._pair:
            s.close()
        self._pair = None

    def close_in_child(self) -> None:
        """In a forked child: forget the parent's wake-up socketpair (closed here only) and
        point the wake-up fd nowhere, without touching any handler."""
        if self._pair is not None:
            signal.set_wakeup_fd(-1)
            for s in self._pair:
                s.close()
            self._pair = None
            self._previous.clear()


# -- workers ----------------------------------------------------------------------------

#: A worker that dies is restarted after this delay, doubling up to RESTART_DELAY_MAX for a
#: slot whose workers keep dying; a worker that lived RESTART_RESET seconds resets it.
RESTART_DELAY_MIN = 0.1
RESTART_DELAY_MAX = 5.0
RESTART_RESET = 10.0
#: Where os.pidfd_open is missing, the supervisor checks its children this often.
REAP_INTERVAL = 0.1


def _reuseport_listener(family: int, sockaddr: Any, backlog: int) -> _stdsocket.socket:
    sock = _stdsocket.socket(family, _stdsocket.SOCK_STREAM)
    try:
        sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_REUSEADDR, 1)
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


class ListenPlan:
    """What the workers of a supervisor listen on, decided in the supervisor.

    `add_address` binds in the supervisor. A TCP address where SO_REUSEPORT exists is bound
    with SO_REUSEPORT but never listened on: that reserves the port (and tells port 0's
    number) while the kernel hands no connection to it; each worker then binds and listens
    on its own SO_REUSEPORT socket on that address, and the kernel spreads new connections
    over the workers' listeners. An AF_UNIX path, a platform without SO_REUSEPORT, and a
    socket given to `add_socket` (listen(sock=...)): one listening socket, bound here and
    inherited by every worker."""

    def __init__(self) -> None:
        self._entries: list[tuple[_stdsocket.socket, bool, int]] = []  # (sock, reserved only, backlog)

    def add_address(self, address: Any, backlog: int) -> Any:
        """Bind `address` for the workers; returns the bound address."""
        reserve = hasattr(_stdsocket, "SO_REUSEPORT") and not isinstance(address, (str, bytes, os.PathLike))
        sock = bind_listener(address, backlog, reuse_port=reserve, listen=not reserve)
        self._entries.append((sock, reserve, backlog))
        return sock.getsockname()

    def add_socket(self, sock: _stdsocket.socket) -> Any:
        """Share an adopted listening socket with every worker; returns its address."""
        self._entries.append((adopt_listener(sock), False, 0))
        return sock.getsockname()

    @property
    def addresses(self) -> list[Any]:
        """The bound addresses."""
        return [sock.getsockname() for sock, _, _ in self._entries]

    def __len__(self) -> int:
        return len(self._entries)

    def open_in_worker(self) -> list[_stdsocket.socket]:
        """In a worker: its listening sockets (own SO_REUSEPORT ones, and the shared ones);
        the worker's copies of the reserving sockets are closed."""
        out = []
        for sock, reserved, backlog in self._entries:
            if reserved:
                out.append(_reuseport_listener(sock.family, sock.getsockname(), backlog))
                sock.close()
            else:
                out.append(sock)
        self._entries = []
        return out

    def close(self) -> None:
        """Close every socket of the plan (an AF_UNIX path's file is left alone)."""
        entries, self._entries = self._entries, []
        for sock, _, _ in entries:
            sock.close()


class _Child(NamedTuple):
    slot: int
    started: float
    control: int  # write end of the worker's control pipe
    pidfd: int  # -1 without os.pidfd_open


class Supervisor:
    """The `workers=N` parent: forks N workers, restarts them, stops them, reaps them.

    Each worker is forked with `run_worker(listeners)` to run (its Server's loop on its own
    listeners, see ListenPlan; it returns when the worker's loop stopped) and gets a control
    pipe from the supervisor, read by a thread of the worker: a line with a number of seconds
    calls `stop_worker(grace)`, and end-of-file (the supervisor died) calls
    `stop_worker(DEFAULT_GRACE)`, so workers never outlive their supervisor for long. A
    worker exits with status 0 when `run_worker` returns, 1 when it raised (logged).

    `run()` returns when every worker has exited after a stop: `stop(grace)` from any thread,
    or SIGINT/SIGTERM in the main thread (SignalHandlers: the first one stops, a second
    SIGINT aborts, i.e. stops with grace 0). The stop is forwarded to every worker through
    its control pipe (with the grace, which signals could not carry); a worker still alive
    KILL_MARGIN seconds after the grace is killed with SIGKILL. A worker that dies while no
    stop is under way (whatever its exit status) is restarted after RESTART_DELAY_MIN
    seconds, doubling up to RESTART_DELAY_MAX for a slot whose workers keep dying, reset by
    a worker that lived RESTART_RESET seconds. Every child is reaped before run() returns or
    raises. `calls` (the Server's CallQueue) runs call_soon_threadsafe calls in the
    supervisor."""

    def __init__(self, workers: int, plan: ListenPlan, calls: CallQueue,
                 run_worker: Callable[[list[_stdsocket.socket]], None],
                 stop_worker: Callable[[float], None]) -> None:
        self.workers = workers
        self._plan = plan
        self._calls = calls
        self._run_worker = run_worker
        self._stop_worker = stop_worker
        self._children: dict[int, _Child] = {}
        self._stopping = False
        self._stop_deadline = math.inf
        self._stop_sent = False
        self._sent_deadline = math.inf
        self._kill_at = math.inf
        self._delay = [RESTART_DELAY_MIN] * workers
        self._due: dict[int, float] = {}  # slot -> when to (re)start its worker
        self._handlers: Optional[SignalHandlers] = None
        self._selector: Optional[selectors.BaseSelector] = None

    @property
    def pids(self) -> list[int]:
        """The workers alive now."""
        return sorted(self._children)

    @property
    def stopping(self) -> bool:
        """True once stop() was called."""
        return self._stopping

    def stop(self, grace: float = DEFAULT_GRACE) -> None:
        """Stop every worker gracefully (any thread, or a signal handler); a later call can
        only bring the end of the grace period closer."""
        deadline = time.monotonic() + check_grace(grace)
        if deadline < self._stop_deadline:
            self._stop_deadline = deadline
        self._stopping = True
        self._calls.wake()

    def run(self) -> None:
        """Fork the workers and supervise them until a stop completes (see the class)."""
        handlers = self._handlers = SignalHandlers(  # DEFAULT_GRACE as it is when the signal comes
            stop=lambda: self.stop(DEFAULT_GRACE), abort=lambda: self.stop(0.0))
        sel = self._selector = selectors.DefaultSelector()
        try:
            sel.register(self._calls.fileno(), selectors.EVENT_READ, "calls")
            if handlers.install():
                sel.register(handlers.fileno(), selectors.EVENT_READ, "signals")
            now = time.monotonic()
            for slot in range(self.workers):
                self._due[slot] = now
            self._supervise(sel, handlers)
        finally:
            try:
                self._kill_and_reap_all()
            finally:
                handlers.restore()
                sel.close()
                self._selector = self._handlers = None

    def _supervise(self, sel: selectors.BaseSelector, handlers: SignalHandlers) -> None:
        while True:
            now = time.monotonic()
            if self._stopping and not self._stop_sent:
                self._stop_sent = True
                self._due.clear()
                self._forward_stop(now)
            elif self._stop_deadline < self._sent_deadline:
                self._forward_stop(now)
            self._reap(now)
            if self._stopping and not self._children:
                return
            for slot, due in sorted(self._due.items()):
                if due <= now:
                    del self._due[slot]
                    self._spawn(slot)
            now = time.monotonic()
            if now >= self._kill_at:
                for pid in list(self._children):
                    LOGGER.error("worker %d did not stop within its grace period: killed", pid)
                    self._kill(pid)
                self._kill_at = math.inf
                continue
            wake = min([self._kill_at, *self._due.values()])
            if any(child.pidfd < 0 for child in self._children.values()):
                wake = min(wake, now + REAP_INTERVAL)
            timeout = None if wake == math.inf else max(0.0, wake - now)
            for key, _ in sel.select(timeout):
                if key.data == "calls":
                    for fn, args in self._calls.take():
                        try:
                            fn(*args)
                        except Exception as exc:  # noqa: BLE001
                            log_exception("call_soon_threadsafe callback", fn, exc)
                elif key.data == "signals":
                    handlers.drain()
                # a pidfd: its worker exited; reaped at the top of the loop

    def _forward_stop(self, now: float) -> None:
        deadline = self._sent_deadline = self._stop_deadline
        self._kill_at = deadline + KILL_MARGIN
        for child in self._children.values():
            self._tell(child, max(0.0, deadline - now))

    def _tell(self, child: _Child, grace: float) -> None:
        try:
            os.write(child.control, b"%r\n" % grace)
        except OSError:  # the worker is gone already (EPIPE): reaped soon
            pass

    def _spawn(self, slot: int) -> None:
        rfd, wfd = os.pipe()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(rfd)
            os.close(wfd)
            delay = self._delay[slot]
            self._delay[slot] = min(2 * delay, RESTART_DELAY_MAX)
            self._due[slot] = time.monotonic() + delay
            LOGGER.error("cannot fork worker %d: %s; retrying in %.1f s", slot, exc, delay)
            return
        if pid == 0:  # the worker; never returns
            self._worker(rfd, wfd)
        os.close(rfd)
        pidfd = -1
        if hasattr(os, "pidfd_open"):
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:  # pragma: no cover  (kernels before 5.3)
                pidfd = -1
        child = self._children[pid] = _Child(slot, time.monotonic(), wfd, pidfd)
        if pidfd >= 0 and self._selector is not None:
            self._selector.register(pidfd, selectors.EVENT_READ, "child")
        if self._stop_sent:  # a stop raced with the fork
            self._tell(child, max(0.0, self._stop_deadline - time.monotonic()))

    def _worker(self, rfd: int, wfd: int) -> None:
        code = 1
        try:
            os.close(wfd)
            self._calls.after_fork()
            # Nothing of the supervisor's stays open here: its selector, its wake-up fds,
            # the other workers' control pipes (or their end-of-file would never come).
            if self._selector is not None:
                self._selector.close()
            if self._handlers is not None:
                self._handlers.close_in_child()
            for child in self._children.values():
                os.close(child.control)
                if child.pidfd >= 0:
                    os.close(child.pidfd)
            self._children.clear()
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            listeners = self._plan.open_in_worker()
            threading.Thread(target=self._control, args=(rfd,), name="fastsock-worker-control",
                             daemon=True).start()
            self._run_worker(listeners)
            code = 0
        except BaseException as exc:  # noqa: BLE001
            try:
                log_exception("worker", os.getpid(), exc)
            except BaseException:  # noqa: BLE001
                pass
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except BaseException:  # noqa: BLE001
                    pass
            os._exit(code)

    def _control(self, rfd: int) -> None:
        pending = b""
        while True:
            try:
                data = os.read(rfd, 256)
            except InterruptedError:  # pragma: no cover
                continue
            except OSError:
                data = b""
            if not data:
                self._stop_worker(DEFAULT_GRACE)
                return
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                try:
                    grace = float(line)
                except ValueError:
                    continue
                self._stop_worker(grace)

    def _reap(self, now: float) -> None:
        for pid, child in list(self._children.items()):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else (a SIGCHLD handler of the program)
                done, status = pid, 0
            if done == 0:
                continue
            self._forget(pid)
            code = os.waitstatus_to_exitcode(status)
            if self._stopping:
                if code != 0:
                    LOGGER.warning("worker %d exited with status %d during the stop", pid, code)
                continue
            lived = now - child.started
            if lived >= RESTART_RESET:
                self._delay[child.slot] = RESTART_DELAY_MIN
            delay = self._delay[child.slot]
            self._delay[child.slot] = min(2 * delay, RESTART_DELAY_MAX)
            self._due[child.slot] = now + delay
            LOGGER.error("worker %d exited with status %d after %.1f s; restarting it in %.1f s",
                         pid, code, lived, delay)

    def _forget(self, pid: int) -> None:
        child = self._children.pop(pid)
        os.close(child.control)
        if child.pidfd >= 0:
            if self._selector is not None:
                try:
                    self._selector.unregister(child.pidfd)
                except (KeyError, ValueError):
                    pass
            os.close(child.pidfd)

    def _kill(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _kill_and_reap_all(self) -> None:
        """The failure path (run() raised, or every stop path ended): no child survives,
        every child is reaped."""
        for pid in list(self._children):
            self._kill(pid)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            self._forget(pid)


# -- serve() ------------------------------------------------------------------------------


class _ServerLike(Protocol):
    def listen(self, address: Any = None, *, sock: Any = None, backlog: Any = None) -> Any: ...
    def serve_forever(self) -> None: ...
    def close(self) -> None: ...


def serve(server_class: Callable[..., _ServerLike], handler: Any, address: Any, **options: Any) -> None:
    """serve(handler, address, **options) of a backend: build `server_class(handler,
    **options)` (workers is one of the options), listen on `address` and serve until
    stopped (SIGINT/SIGTERM in the main thread, or stop() from a handler); the server is
    closed on return."""
    server = server_class(handler, **options)
    try:
        server.listen(address)
        server.serve_forever()
    finally:
        server.close()
