"""fastsock.Server in pure Python: the twin of the compiled backend's C loop (server-spec.md).

One thread runs the loop: a level-triggered epoll (select.epoll where it exists, else
fastsock's pure Poller on poll/select), a dict from descriptor to Connection, and in each
turn of the loop:

1. wait for events (until the next timer, at once when some connection has work held over);
2. for each readable connection, ONE recv, then every complete frame is cut out and handed
   to the handler; the bytes of an unfinished frame are copied to the connection's own
   bytearray (idle connections and connections between frames hold no buffer at all);
3. deliveries held over (resume_reading, backpressure relief, a stop), then the calls that
   other threads queued (call_soon_threadsafe, cross-thread send/write/close/...);
4. timers: idle and frame timeouts (two heaps with lazy re-arming: activity only stores a
   time; nothing scans every connection), the accept back-off, the stop's grace period;
5. ONE send per connection with queued output (every reply of the turn was appended to the
   connection's output bytearray); EPOLLOUT is asked for only while a connection has
   output the kernel did not take.

Reads are the bytes objects socket.recv returns, not recv_into a preallocated bytearray:
in CPython that measured cheaper for both workloads (about 0.6 us per read of 16 small
frames, 0.2 us per raw read), because each frame is then one slice of an immutable object
(no memoryview to make and copy out of), and a raw-mode view of bytes is read-only by
nature and never sees its memory reused, so it needs no hand-over check. Only bytes held
over from earlier reads live in a (per-connection) bytearray, whose views are guarded.

What both backends share (option checks, listeners, the call queue, the signal handlers, the
workers supervisor, logging) lives in fastsock/_serverbase.py; the decisions the contract
leaves open are written down in the docstrings of Server and Connection below, which the
compiled backend follows too.
"""

from __future__ import annotations

import heapq
import itertools
import math
import operator
import select
import socket as _stdsocket
import sys
import threading
from _thread import get_ident
from time import monotonic
from typing import Any, Callable, Optional, Union

from .. import _serverbase as _sb
from .._errors import FrameTimeout, FrameTooLarge, IdleTimeout, IncompleteReadError
from ..framing import Framing, FramingError
from ..resp import Reply
from .poller import ERROR, HANGUP, READ, WRITE, Poller

__all__ = ["Server", "Connection", "serve", "IdleTimeout", "FrameTimeout"]

_recv = _stdsocket.socket.recv
_send = _stdsocket.socket.send
_MSG_NOSIGNAL = getattr(_stdsocket, "MSG_NOSIGNAL", 0)
_READ_EVENTS = READ | ERROR | HANGUP
_WRITE_EVENTS = WRITE | ERROR | HANGUP
_TCP_FAMILIES = (_stdsocket.AF_INET, _stdsocket.AF_INET6)

# Connection._hold bits: any of them set means "deliver no frame, read nothing".
_PAUSED = 1  # pause_reading()
_BACKPRESSURE = 2  # queued output above high_water
_CLOSING = 4  # close()/abort()/an error: no more frames; flush (or drop) and close
# Connection._stop: where a graceful stop has got with this connection.
_DRAIN = 1  # read what the kernel holds (until would-block), deliver it
_DRAINED = 2  # reads no more; half-closes once every reply has left
_HALF_CLOSED = 3  # SHUT_WR done; reads and discards until the peer's EOF
#: During a stop, a connection's "read until would-block" makes at most this many reads
#: (a peer that keeps sending as fast as the server reads cannot hold the stop forever).
_DRAIN_READS = 64
#: A turn accepts at most this many connections per listener (the others wait a turn).
_ACCEPT_BATCH = 64
#: The longest single wait of the loop, in seconds (a later deadline is waited for in steps).
_MAX_WAIT = 3600.0
#: A timer heap is rebuilt without the entries of closed connections once there are more
#: than this many of them and they are at least half of it (amortized O(1) per close), so
#: that a closed Connection is not held until its deadline (idle_timeout may be hours).
_COMPACT_MIN = 64

Bytes = Union[bytes, bytearray, memoryview]
#: What a scanner returns: (frames, end of the last frame, need, resume, error); see _scanner_for.
ScanResult = tuple[list[bytes], int, int, int, Optional[Exception]]


# -- the loop's wait ------------------------------------------------------------------


class _Epoll:
    """select.epoll, level-triggered; Poller's mask bits equal EPOLLIN/OUT/ERR/HUP on Linux."""

    def __init__(self) -> None:
        self._ep = select.epoll()
        self.register = self._ep.register
        self.modify = self._ep.modify
        self.unregister = self._ep.unregister

    def wait(self, timeout: float) -> list[tuple[int, int]]:
        return self._ep.poll(timeout)  # -1: forever; PEP 475

    def close(self) -> None:
        self._ep.close()


class _PollerWait:
    """fastsock's pure Poller (poll, or select), where there is no epoll."""

    def __init__(self) -> None:
        self._poller = Poller()
        self.register = self._poller.register
        self.modify = self._poller.modify
        self.unregister = self._poller.unregister

    def wait(self, timeout: float) -> list[tuple[int, int]]:
        return self._poller.poll(None if timeout < 0 else timeout)

    def close(self) -> None:
        self._poller.close()


_HAVE_EPOLL = hasattr(select, "epoll") and (select.EPOLLIN, select.EPOLLOUT, select.EPOLLERR, select.EPOLLHUP) == (
    READ, WRITE, ERROR, HANGUP)
_Waiter = Union[_Epoll, _PollerWait]


def _make_waiter() -> _Waiter:
    return _Epoll() if _HAVE_EPOLL else _PollerWait()


# -- framing: the one place that scans and the one place that encodes -------------------

#: No limit on the frames one scan takes.
_NO_LIMIT = sys.maxsize


def _scanner_for(framing: Framing) -> Callable[[Any, Optional[memoryview], int, int, int], ScanResult]:
    """scan(buf, view, pos, end, resume) -> (frames, stop, need, resume, error): every
    complete frame of buf[pos:end] as bytes (`view`, a memoryview of `buf` when it is a
    bytearray, is unused: the framing copies out of a bytearray itself), `stop` the offset
    after the last of them, then for the unfinished frame at `stop` the bytes it needs in
    all (0: unknown) and where its delimiter search resumes; `error` is the FrameTooLarge /
    FramingError raised by the frame at `stop` (the frames before it are returned: they are
    delivered first).

    Everything goes through the framing's `_scan_many` and `_scan`, so a new framing needs
    nothing here."""
    many = framing._scan_many
    scan = framing._scan

    def scan_frames(buf: Any, view: Optional[memoryview], pos: int, end: int, resume: int) -> ScanResult:
        frames, stop, resume = many(buf, pos, end, resume, _NO_LIMIT)
        if stop >= end:
            return frames, stop, 0, 0, None
        try:
            _, size, extra = scan(buf, stop, end, resume)
        except (FrameTooLarge, FramingError) as exc:
            return frames, stop, 0, 0, exc
        # _scan_many took every complete frame: the one at `stop` is partial (header < 0),
        # needing `size` bytes in all if known, else its delimiter search resumes at `extra`.
        return frames, stop, size, extra if size == 0 else 0, None

    return scan_frames


def _skip_frames(framing: Framing, buf: Any, count: int) -> int:
    """The offset after the first `count` frames of buf (all complete): where a delivery
    stopped part-way through a read (backpressure, pause_reading) resumes."""
    pos = 0
    end = len(buf)
    for _ in range(count):
        _, _, total = framing._scan(buf, pos, end, 0)
        pos += total
    return pos


def _as_buffer(payload: Any, what: str) -> Bytes:
    """payload as something whose len() is its size in bytes (TypeError if not bytes-like)."""
    kind = type(payload)
    if kind is bytes or kind is bytearray:
        return payload  # type: ignore[no-any-return]
    try:
        view = memoryview(payload)
    except TypeError:
        raise TypeError(f"{what} must be a bytes-like object, not {kind.__name__}") from None
    if view.itemsize != 1 or view.ndim != 1:
        try:
            view = view.cast("B")
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{what} must be a C-contiguous bytes-like object: {exc}") from None
    return view


def _encoder_for(framing: Framing) -> Callable[[Any], tuple[Bytes, bytes, bytes]]:
    """encode(payload) -> (payload as a buffer, header, trailer): what a framed reply
    appends to the output (TypeError, FrameTooLarge, FramingError for a bad payload)."""
    if framing._value_codec:  # RESP: any reply value, encoded whole
        encode_value = framing.encode

        def encode_reply(value: Any) -> tuple[Bytes, bytes, bytes]:
            return (value if type(value) is Reply else encode_value(value)), b"", b""

        return encode_reply
    codec = framing._length_struct
    if codec is not None:  # a binary length header: encoded inline
        pack = codec.pack
        limit = framing.max_size

        def encode_length(payload: Any) -> tuple[Bytes, bytes, bytes]:
            if type(payload) is not bytes:
                payload = _as_buffer(payload, "a reply")
            size = len(payload)
            if size > limit:
                raise FrameTooLarge(size, limit)
            return payload, pack(size), b""

        return encode_length
    wrap = framing._wrap

    def encode_generic(payload: Any) -> tuple[Bytes, bytes, bytes]:
        payload = _as_buffer(payload, "a reply")
        header, trailer = wrap(payload)
        return payload, header, trailer

    return encode_generic


# -- Connection -------------------------------------------------------------------------


#: CPython refuses to resize a bytearray while a view of it lives (BufferError), which is how
#: raw mode learns that a handler kept a view of the held bytes (see _keep); PyPy resizes it
#: under the view, so there raw mode gives every held buffer a handler saw to the handler.
_EXPORTS_REFUSE_RESIZE = sys.implementation.name == "cpython"


class Connection:
    """A client connection of a fastsock.Server (created by the server; Connection() raises
    TypeError). Handlers, hooks and other threads reply and control it through its methods.

    On the loop thread (handlers, hooks, call_soon_threadsafe callbacks), `send`/`write`
    queue at once (raising BrokenPipeError on a closed or closing connection, BufferError
    past write_limit), and everything queued in one turn of the loop leaves in one system
    call. From any other thread, `send`/`write` copy and validate the payload (so a bad
    payload or a FrameTooLarge still raises to the caller), `close`/`abort`/`pause_reading`/
    `resume_reading` return at once, and the loop applies them at its next turn, in call
    order, after what is already queued; a failure found only then (the connection closed
    meanwhile, write_limit) is logged on `fastsock.server`.

    Attributes: `peer`, `sockname` (as getpeername()/getsockname() at accept; AF_UNIX peers
    are usually ''), `data` (free for the application; None at first), `server`."""

    __slots__ = (
        "server", "peer", "sockname", "data",
        "_sock", "_fd", "_held", "_resume", "_need", "_out", "_hold", "_events", "_want_write",
        "_dirty", "_ready", "_close_exc", "_aborted", "_xclosed", "_last_io", "_frame_start",
        "_frame_armed", "_stop", "_loop", "__weakref__",
    )

    server: Server
    peer: Any
    sockname: Any
    data: Any
    _sock: _stdsocket.socket
    _fd: int
    _held: Optional[bytearray]
    _resume: int
    _need: int
    _out: bytearray
    _hold: int
    _events: int
    _want_write: bool
    _dirty: bool
    _ready: bool
    _close_exc: Optional[BaseException]
    _aborted: bool
    _xclosed: bool
    _last_io: float
    _frame_start: Optional[float]
    _frame_armed: bool
    _stop: int
    _loop: Optional[int]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("Connection objects are created by a fastsock.Server, not instantiated")

    @classmethod
    def _make(cls, server: Server, sock: _stdsocket.socket, peer: Any, sockname: Any, now: float) -> Connection:
        self = object.__new__(cls)
        self.server = server
        self.peer = peer
        self.sockname = sockname
        self.data = None
        self._sock = sock
        self._fd = sock.fileno()
        self._held = None  # the bytes of an unfinished frame (or of held frames)
        self._resume = 0  # where the unfinished frame's delimiter search resumes
        self._need = 0  # the unfinished frame's total size, when its header told it
        self._out = bytearray()  # queued output
        self._hold = 0  # _PAUSED | _BACKPRESSURE | _CLOSING
        self._events = 0  # what the waiter watches for it now (0: not registered)
        self._want_write = False  # output the kernel did not take: wait for EPOLLOUT
        self._dirty = False  # in the server's end-of-turn list
        self._ready = False  # in the server's held-over deliveries
        self._close_exc = None
        self._aborted = False
        self._xclosed = False  # close()/abort() called from another thread, not applied yet
        self._last_io = now
        self._frame_start = None
        self._frame_armed = False
        self._stop = 0
        self._loop = server._loop_ident  # a connection lives within one run of the loop
        return self

    # -- replies ----------------------------------------------------------------------

    def send(self, payload: Any) -> None:
        """Frame `payload` (any bytes-like object, copied before this returns) with the
        server's framing and queue it; it leaves with the other replies of this turn.
        RuntimeError in raw mode (use write); BrokenPipeError if the connection is closed or
        closing (close() was called, or the server half-closed it in a stop: a reply a
        handler returns after close() takes the error path the same way); BufferError
        (nothing queued) past the server's write_limit; FrameTooLarge / FramingError /
        TypeError for a payload the framing refuses."""
        server = self.server
        if server._encode is None:
            raise RuntimeError("send() frames its payload, and this server has no framing (raw mode): use write()")
        if get_ident() != server._loop_ident:
            if self._xclosed or self._hold & _CLOSING or self._fd < 0 or self._stop == _HALF_CLOSED:
                raise _sb.closed_error()
            data, header, trailer = server._encode(payload)
            server._calls.put(server._apply_write, (self, b"".join((header, data, trailer)), 1))
            return
        if self._hold & _CLOSING or self._stop == _HALF_CLOSED:
            raise _sb.closed_error()
        server._reply(self, payload)

    def write(self, data: Any) -> None:
        """Queue raw bytes (any bytes-like object, copied before this returns), unframed;
        they leave with the other replies of this turn. BrokenPipeError if the connection is
        closed or closing (as for send); BufferError (nothing queued) past the server's
        write_limit."""
        if get_ident() != self._loop or self._hold:  # (a half-close clears _loop: see _half_close)
            self._write_slow(data)
            return
        kind = type(data)
        if kind is memoryview and data.c_contiguous:
            size = data.nbytes
        elif kind is bytes or kind is bytearray:
            size = len(data)
        else:
            data = _as_buffer(data, "write() data")
            size = len(data)
        out = self._out
        server = self.server
        if len(out) + size > server._write_limit:
            raise BufferError(f"queuing {size} more bytes would exceed the connection's write_limit of "
                              f"{server._write_limit} bytes ({len(out)} queued)")
        out += data
        server._frames_out += server._raw
        if len(out) > server._high:
            self._hold |= _BACKPRESSURE
            server._paused += 1
        if not self._dirty:
            self._dirty = True
            server._dirty.append(self)

    def _write_slow(self, data: Any) -> None:
        """write() from another thread, or on a connection that holds (paused or closing)."""
        server = self.server
        if get_ident() != server._loop_ident:
            if self._xclosed or self._hold & _CLOSING or self._fd < 0 or self._stop == _HALF_CLOSED:
                raise _sb.closed_error()
            server._calls.put(server._apply_write, (self, bytes(_as_buffer(data, "write() data")), server._raw))
            return
        if self._hold & _CLOSING or self._stop == _HALF_CLOSED:
            raise _sb.closed_error()
        if type(data) is not bytes:
            data = _as_buffer(data, "write() data")
        server._queue(self, data, server._raw)

    # -- control ----------------------------------------------------------------------

    def close(self) -> None:
        """Flush what is queued, then close (idempotent); on_close(conn, None) follows. The
        connection delivers no more frames from now on."""
        server = self.server
        if get_ident() != server._loop_ident:
            if not self._xclosed and self._fd >= 0:
                self._xclosed = True
                server._calls.put(server._close, (self, None))
            return
        server._close(self, None)

    def abort(self) -> None:
        """Close now, dropping queued output (idempotent); on_close(conn, None) follows."""
        server = self.server
        if get_ident() != server._loop_ident:
            if self._fd >= 0:
                self._xclosed = True
                server._calls.put(server._abort, (self, None))
            return
        server._abort(self, None)

    def pause_reading(self) -> None:
        """Deliver no more frames and stop reading the socket until resume_reading(): frames
        already buffered are held, not dropped. Independent of backpressure pausing."""
        server = self.server
        if get_ident() != server._loop_ident:
            server._calls.put(server._pause, (self,))
            return
        server._pause(self)

    def resume_reading(self) -> None:
        """Undo pause_reading(): frames held meanwhile are delivered at the loop's next turn,
        even if no new byte arrives."""
        server = self.server
        if get_ident() != server._loop_ident:
            server._calls.put(server._resume_conn, (self,))
            return
        server._resume_conn(self)

    # -- state ------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Bytes queued and not sent yet (0 once closed)."""
        return len(self._out)

    @property
    def closed(self) -> bool:
        """True once closed, or closing (close() or abort() called, from any thread; or
        half-closed by a stop)."""
        return self._fd < 0 or bool(self._hold & _CLOSING) or self._xclosed or self._stop == _HALF_CLOSED

    def fileno(self) -> int:
        """The connection's descriptor (-1 once closed)."""
        return self._fd

    def __repr__(self) -> str:
        if self._fd < 0:
            state = "closed"
        elif self.closed:
            state = "closing"
        elif self._hold & (_PAUSED | _BACKPRESSURE):
            state = "paused"
        else:
            state = "open"
        return f"<fastsock.Connection peer={self.peer!r} fd={self._fd} {state} pending={len(self._out)}>"


# -- Server -----------------------------------------------------------------------------


class Server:
    """Server(handler, *, framing=None, batch=False, on_connect=None, on_close=None,
    on_error=None, max_connections=None, idle_timeout=None, frame_timeout=None,
    read_size=65536, max_buffer=None, high_water=1 MiB, low_water=None, write_limit=None,
    backlog=1024, workers=1, reuse_port=False)

    An event-loop server for many framed connections with Python handlers:

        def handle(conn, frame):     # once per complete frame, on the loop's thread
            return frame             # bytes-like: framed and queued; None: no reply

        server = fastsock.Server(handle, framing=fastsock.LengthPrefix(4))
        server.listen(("127.0.0.1", 0))
        server.serve_forever()       # until stop(), SIGTERM or SIGINT

    Modes: framed (`handler(conn, frame: bytes)`), framed with batch=True (`handler(conn,
    frames: list[bytes])` once per read, returning None or an iterable of replies), raw
    (framing=None: `handler(conn, data: memoryview)` with every byte buffered so far,
    returning how many it consumed; replies with conn.write). Every reply produced in one
    turn of the loop leaves in one send() per connection. The contract (server-spec.md)
    gives the rest; where it is silent, both backends do this:

    - Raw mode: the handler is called again with what is left as long as it consumes
      something (0 means "wait for more bytes"); `bool` and non-int returns are TypeError,
      n outside 0..len(data) ValueError (on the error path; nothing is consumed).
    - A reply the handler returns that the framing refuses (FrameTooLarge, FramingError,
      TypeError) or that would pass write_limit (BufferError) takes the error path like an
      exception raised by the handler; the replies queued before it still leave. So does a
      reply returned by a handler that called conn.close() (BrokenPipeError: it is not
      sent; the close keeps its own reason).
    - Raw mode: `data` is released when the handler returns (ValueError if it is used
      after; a slice taken during the call stays valid, its memory never reused). The
      compiled backend's `data.obj` refuses new exports after the call too (ValueError);
      here `data.obj` is the bytes object of the read (or the connection's held
      bytearray), which Python code cannot revoke: use `bytes(data)` to keep the bytes.
    - A handler exception is counted in stats()["errors"] whether or not on_error handles
      it. Without on_error the connection is closed after flushing the replies already
      queued; with on_error it stays open and the next frames are delivered.
    - Peer EOF: complete frames are delivered and their replies flushed, then the
      connection closes; on_close gets None, or IncompleteReadError(partial, expected) when
      the peer left in the middle of a frame (expected: the frame's size when known).
    - FrameTooLarge / FramingError / FrameTimeout close the connection after flushing the
      replies already queued; IdleTimeout (nothing moved for idle_timeout) and reset /
      OSError drop the queued output. An abort() by the application reports None.
    - The frame clock runs only while the connection is being read: paused (either way)
      its clock is suspended, and it restarts when reading resumes. The idle clock always
      runs (a client that stops reading is closed by idle_timeout).
    - Accepted TCP connections get TCP_NODELAY (the server coalesces replies itself).
    - accept() errors: see fastsock._serverbase.AcceptErrors (transient ones skip a
      connection, the others pause accepting with a back-off; each kind logged once).
    - stop(): a later call can only bring the end of the grace closer; stop(0) still
      delivers and answers, in that turn, what was read, then aborts. A connection the
      application paused with pause_reading() is half-closed only once resumed (or aborted
      at the end of the grace). At the end of the grace, on_close gets None for connections
      that were already half-closed (every reply delivered) and TimeoutError otherwise.
      Replies a thread pool sends after its connection was half-closed are lost (logged):
      stop the pool's work first. The calls queued by other threads before the loop ends
      run before serve_forever returns.
    - A BaseException that is not an Exception (KeyboardInterrupt, SystemExit) raised by a
      handler or hook ends serve_forever: every connection is aborted (on_close gets it),
      the listeners stay open, and it propagates.
    - workers=N: stats() are per process (the supervisor's count no connection);
      max_connections applies per worker; a worker whose loop stops on its own (a
      handler called stop()) is restarted like one that crashed. See
      fastsock._serverbase.Supervisor.
    - listen() from a thread other than the loop's while serving binds at once (errors
      raise to the caller) and the loop starts accepting on it at its next turn.
    - close() is final: listen() and serve_forever() raise RuntimeError afterwards.
    """

    def __init__(self, handler: Callable[..., Any], *, framing: Optional[Framing] = None, batch: bool = False,
                 on_connect: Optional[Callable[..., Any]] = None, on_close: Optional[Callable[..., Any]] = None,
                 on_error: Optional[Callable[..., Any]] = None, max_connections: Optional[int] = None,
                 idle_timeout: Optional[float] = None, frame_timeout: Optional[float] = None,
                 read_size: int = 65536, max_buffer: Optional[int] = None, high_water: int = _sb.DEFAULT_HIGH_WATER,
                 low_water: Optional[int] = None, write_limit: Optional[int] = None,
                 backlog: int = _sb.DEFAULT_BACKLOG, workers: int = 1, reuse_port: bool = False) -> None:
        o = self._options = _sb.check_options(
            handler, framing=framing, batch=batch, on_connect=on_connect, on_close=on_close, on_error=on_error,
            max_connections=max_connections, idle_timeout=idle_timeout, frame_timeout=frame_timeout,
            read_size=read_size, max_buffer=max_buffer, high_water=high_water, low_water=low_water,
            write_limit=write_limit, backlog=backlog, workers=workers, reuse_port=reuse_port)
        self._handler = o.handler
        self._framing = o.framing
        self._on_connect = o.on_connect
        self._on_close = o.on_close
        self._on_error = o.on_error
        self._max_conns = o.max_connections
        self._idle_timeout = o.idle_timeout
        self._frame_timeout = o.frame_timeout
        self._read_size = o.read_size
        self._max_buffer = o.max_buffer
        self._high = o.high_water
        self._low = o.low_water
        self._write_limit = o.write_limit
        self._raw = 1 if o.framing is None else 0  # what a write() adds to frames_out
        if o.framing is None:
            self._scan: Optional[Callable[[Any, Optional[memoryview], int, int, int], ScanResult]] = None
            self._encode: Optional[Callable[[Any], tuple[Bytes, bytes, bytes]]] = None
            self._deliver: Callable[[Connection, Union[bytes, bytearray], int, int], None] = self._deliver_raw
        else:
            self._scan = _scanner_for(o.framing)
            self._encode = _encoder_for(o.framing)
            self._deliver = self._deliver_batch if o.batch else self._deliver_frames

        self._calls = _sb.CallQueue()
        self._state_lock = threading.Lock()
        self._listeners: dict[int, _stdsocket.socket] = {}
        self._conns: dict[int, Connection] = {}
        self._waiter: Optional[_Waiter] = None
        self._running = False
        self._closed = False
        self._loop_ident: Optional[int] = None
        self._now = monotonic()
        self._dirty: list[Connection] = []
        self._ready: list[Connection] = []
        self._idle_heap: list[tuple[float, int, Connection]] = []
        self._frame_heap: list[tuple[float, int, Connection]] = []
        self._idle_dead = self._frame_dead = 0  # entries of closed connections (about)
        self._seq = itertools.count()
        self._accepting = False  # the listeners are registered with the waiter
        self._accept_after = 0.0  # accept back-off: not before this time
        self._accept_errors = _sb.AcceptErrors()
        self._stop_requested = False
        self._stop_deadline = math.inf
        self._stopping = False  # the loop has begun the stop
        self._plan: Optional[_sb.ListenPlan] = _sb.ListenPlan() if o.workers > 1 else None
        self._supervisor: Optional[_sb.Supervisor] = None
        self._reset_stats()
        if o.framing is not None and o.framing._length_struct is not None and not o.batch:
            self._deliver = self._length_deliverer()

    def _reset_stats(self) -> None:
        self._accepted = self._closed_count = self._frames_in = self._frames_out = 0
        self._bytes_in = self._bytes_out = self._writes = self._paused = self._timeouts = self._errors = 0

    # -- public API ---------------------------------------------------------------------

    def listen(self, address: Any = None, *, sock: Any = None, backlog: Optional[int] = None) -> Any:
        """Bind and listen on `address` ((host, port), IPv4 or IPv6, host resolved with
        getaddrinfo, SO_REUSEADDR set; or an AF_UNIX path, never removed if it exists:
        EADDRINUSE), or adopt `sock`, a bound and listening SOCK_STREAM socket the server
        owns from then on (ValueError otherwise). Returns the bound address (port 0 gets a
        port). May be called several times, before or while serving, from any thread (with
        workers=N: before serve_forever only, RuntimeError otherwise)."""
        if (address is None) == (sock is None):
            raise TypeError("listen() takes an address or sock=, exactly one of them")
        if self._closed:
            raise RuntimeError("the server is closed")
        depth = self._options.backlog if backlog is None else _sb._count(backlog, "backlog", 0, 1 << 20)
        if self._plan is not None:
            if self._running:
                raise RuntimeError("with workers, listen() before serve_forever(): the workers are forked "
                                   "with the listeners they will have")
            return self._plan.add_address(address, depth) if sock is None else self._plan.add_socket(sock)
        if sock is None:
            lsock = _sb.bind_listener(address, depth, self._options.reuse_port)
        else:
            lsock = _sb.adopt_listener(sock)
        name = lsock.getsockname()
        if self._running and get_ident() != self._loop_ident:
            self._calls.put(self._add_listener, (lsock,))
        else:
            self._add_listener(lsock)
        return name

    @property
    def addresses(self) -> list[Any]:
        """The bound addresses of the open listeners."""
        if self._plan is not None:
            return self._plan.addresses
        return [s.getsockname() for s in list(self._listeners.values())]

    def serve_forever(self) -> None:
        """Run the loop in this thread until a stop completes (stop(), or SIGINT/SIGTERM when
        called from the main thread: the handlers are installed for the call and restored on
        return; a second SIGINT during the grace period aborts). An empty server waits.
        RuntimeError if already running. With workers=N, runs the workers supervisor."""
        with self._state_lock:
            if self._closed:
                raise RuntimeError("the server is closed")
            if self._running:
                raise RuntimeError("serve_forever() is already running")
            self._running = True
        try:
            if self._plan is not None:
                self._supervise(self._plan)
            else:
                self._serve()
        finally:
            self._running = False

    def stop(self, grace: float = _sb.DEFAULT_GRACE) -> None:
        """Begin a graceful stop, from any thread or a handler: close the listeners; deliver
        and answer every frame already received (buffered, or held by the kernel); flush;
        half-close each connection and close it at the peer's EOF; abort what remains after
        `grace` seconds. serve_forever returns when every connection is closed. Before
        serve_forever, makes the next one return at once. Idempotent."""
        grace = _sb.check_grace(grace)
        supervisor = self._supervisor
        if supervisor is not None:
            supervisor.stop(grace)
            return
        self._stop_here(grace)

    def _stop_here(self, grace: float) -> None:
        """stop() of this process's loop (a worker's control thread calls it)."""
        deadline = monotonic() + grace
        if deadline < self._stop_deadline:
            self._stop_deadline = deadline
        self._stop_requested = True
        self._calls.wake()

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (from any thread): connections (open now), accepted,
        closed, frames_in, frames_out, bytes_in, bytes_out, writes (send system calls),
        paused (by backpressure, now), timeouts, errors, listeners, running."""
        listeners = len(self._plan) if self._plan is not None else len(self._listeners)
        return {
            "connections": len(self._conns),
            "accepted": self._accepted,
            "closed": self._closed_count,
            "frames_in": self._frames_in,
            "frames_out": self._frames_out,
            "bytes_in": self._bytes_in,
            "bytes_out": self._bytes_out,
            "writes": self._writes,
            "paused": self._paused,
            "timeouts": self._timeouts,
            "errors": self._errors,
            "listeners": listeners,
            "running": self._running,
        }

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run fn(*args) on the loop thread at its next turn (from any thread; calls run in
        the order they were made; an exception is logged on `fastsock.server`)."""
        if not callable(fn):
            raise TypeError(f"call_soon_threadsafe() needs a callable, not {type(fn).__name__}")
        self._calls.put(fn, args)

    def close(self) -> None:
        """Abort everything at once: listeners and connections (RuntimeError while
        serve_forever runs: use stop()). Idempotent; the server cannot serve again."""
        if self._running:
            raise RuntimeError("close() cannot be called while serve_forever() runs: use stop()")
        if self._closed:
            return
        self._closed = True
        try:
            self._finalize_all(None)
        finally:
            self._close_listeners()
            if self._plan is not None:
                self._plan.close()
            self._calls.close()

    def __enter__(self) -> Server:
        """`with Server(...) as server:` closes it on exit."""
        return self

    def __exit__(self, *exc_info: Any) -> None:
        """close() (RuntimeError if serve_forever still runs in another thread)."""
        self.close()

    def __repr__(self) -> str:
        mode = f"framing={self._framing!r}{' batch' if self._options.batch else ''}" if self._framing else "raw"
        state = "running" if self._running else ("closed" if self._closed else "idle")
        return (f"<fastsock.Server {mode} {state} connections={len(self._conns)} "
                f"addresses={self.addresses!r}>")

    # -- listeners and accept -----------------------------------------------------------

    def _add_listener(self, lsock: _stdsocket.socket) -> None:
        if self._closed:
            lsock.close()
            return
        self._listeners[lsock.fileno()] = lsock
        if self._accepting and self._waiter is not None:
            self._waiter.register(lsock.fileno(), READ)
        elif self._waiter is not None:
            self._sync_accepting()

    def _close_listeners(self) -> None:
        self._set_accepting(False)
        listeners = list(self._listeners.values())
        self._listeners.clear()
        for lsock in listeners:
            lsock.close()

    def _set_accepting(self, on: bool) -> None:
        waiter = self._waiter
        if on == self._accepting or waiter is None:
            return
        self._accepting = on
        for fd in self._listeners:
            if on:
                waiter.register(fd, READ)
            else:
                try:
                    waiter.unregister(fd)
                except (KeyError, OSError, ValueError):
                    pass

    def _sync_accepting(self) -> None:
        self._set_accepting(
            self._waiter is not None and not self._stopping and not self._stop_requested
            and (not self._max_conns or len(self._conns) < self._max_conns)
            and self._now >= self._accept_after)

    def _accept(self, lsock: _stdsocket.socket) -> None:
        conns = self._conns
        limit = self._max_conns
        for _ in range(_ACCEPT_BATCH):
            if limit and len(conns) >= limit:
                self._set_accepting(False)
                return
            try:
                sock, peer = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                delay = self._accept_errors.failed(exc, lsock)
                if delay:
                    self._accept_after = monotonic() + delay
                    self._set_accepting(False)
                    return
                continue
            self._accept_errors.succeeded()
            self._add_conn(sock, peer)

    def _add_conn(self, sock: _stdsocket.socket, peer: Any) -> None:
        try:
            sock.setblocking(False)
            if sock.family in _TCP_FAMILIES:
                sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
            sockname = sock.getsockname()
        except OSError:  # reset before we looked at it
            sock.close()
            return
        now = self._now
        conn = Connection._make(self, sock, peer, sockname, now)
        self._conns[conn._fd] = conn
        self._accepted += 1
        self._update_events(conn)
        if self._idle_timeout is not None:
            heapq.heappush(self._idle_heap, (now + self._idle_timeout, next(self._seq), conn))
        hook = self._on_connect
        if hook is not None:
            try:
                hook(conn)
            except Exception as exc:  # noqa: BLE001  (a handler's failure must not end the loop)
                _sb.log_exception("on_connect", conn, exc)
                self._close(conn, exc)

    # -- reading and delivering ---------------------------------------------------------

    def _read(self, conn: Connection) -> bool:
        """One recv for `conn`, then the delivery of what it completes. True if bytes came.

        A read is a new bytes object (what socket.recv returns): frames are sliced out of
        it, a raw-mode view of it is read-only by nature and never sees its memory reused;
        only the bytes of an unfinished frame are copied, to the connection's bytearray."""
        held = conn._held
        if held is None:
            size = self._read_size  # <= max_buffer
        else:
            size = self._max_buffer - len(held)
            if size <= 0:
                return False
            if size > self._read_size:
                size = self._read_size
        try:
            data = _recv(conn._sock, size)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            self._abort(conn, exc)
            return False
        n = len(data)
        if not n:
            self._peer_eof(conn)
            return False
        self._bytes_in += n
        conn._last_io = self._now
        if held is None:
            self._deliver(conn, data, n, 0)
        else:
            old = len(held)
            try:
                held += data
            except BufferError:  # raw mode: the application kept a view of it: it is theirs now
                held = conn._held = bytearray(held) + data
            self._deliver(conn, held, old + n, old)
        return True

    def _scan_buffer(self, conn: Connection, buf: Union[bytes, bytearray], end: int) -> ScanResult:
        """Every complete frame of buf[:end] (a fresh read, or the connection's held bytes)."""
        scan = self._scan
        assert scan is not None
        if type(buf) is bytes:
            return scan(buf, None, 0, end, 0)
        with memoryview(buf) as held:  # released before the buffer is trimmed
            return scan(buf, held, 0, end, conn._resume)

    def _deliver_frames(self, conn: Connection, buf: Union[bytes, bytearray], end: int, old: int) -> None:
        """Per-frame mode: handler(conn, frame) for each complete frame of buf[:end] (the
        first `old` bytes were held from earlier reads), until the connection holds.
        (A binary length header has its own fused loop: _length_deliverer.)"""
        frames, pos, need, resume, error = self._scan_buffer(conn, buf, end)
        handler = self._handler
        done = 0
        for frame in frames:
            done += 1
            try:
                reply = handler(conn, frame)
                if reply is not None:
                    self._reply(conn, reply)
            except Exception as exc:  # noqa: BLE001  (a handler's failure must not end the loop)
                self._handler_error(conn, exc)
            if conn._hold:
                break
        self._frames_in += done
        if done < len(frames):  # held part-way: resume after the frames delivered
            pos = _skip_frames(self._framing, buf, done)  # type: ignore[arg-type]
            need = resume = 0
            error = None
        elif pos >= end and not old and conn._frame_start is None and not conn._hold:  # a fresh read
            return  # all consumed, nothing was held: nothing to keep
        self._keep(conn, buf, pos, end, old, need, resume, error)

    def _length_deliverer(self) -> Callable[[Connection, Union[bytes, bytearray], int, int], None]:
        """_deliver_frames for a framing with a binary length header (LengthPrefix: see
        Framing._length_struct), with the scan fused into the delivery loop (the same checks
        as its _scan, and as _reply for bytes replies): the common case,
        where a separate scan pass costs the pure backend a list and a loop per read. A
        closure, so that its constants are cell loads rather than attribute loads."""
        framing = self._framing
        assert framing is not None
        codec = framing._length_struct
        assert codec is not None
        handler = self._handler
        unpack = codec.unpack_from
        pack = codec.pack
        width = codec.size
        limit = framing.max_size
        high = self._high
        hard = self._write_limit - width
        reply_slow = self._reply
        handler_error = self._handler_error
        keep = self._keep

        def deliver_length(conn: Connection, buf: Union[bytes, bytearray], end: int, old: int) -> None:
            view = None if type(buf) is bytes else memoryview(buf)
            pos = done = replies = need = 0
            error: Optional[Exception] = None
            out = conn._out  # replaced only by abort(), which drops what is appended to it
            try:
                while end - pos >= width:
                    (size,) = unpack(buf, pos)
                    if size > limit:
                        error = FrameTooLarge(size, limit)
                        break
                    stop = pos + width + size
                    if stop > end:
                        need = width + size
                        break
                    frame = buf[pos + width:stop] if view is None else view[pos + width:stop].tobytes()
                    pos = stop
                    done += 1
                    try:
                        reply = handler(conn, frame)
                        if reply is not None:
                            if type(reply) is bytes and (n := len(reply)) <= limit and len(out) + n <= hard \
                                    and not conn._hold & _CLOSING:  # (else _reply refuses it)
                                out += pack(n)
                                out += reply
                                replies += 1
                                if len(out) > high and not conn._hold & _BACKPRESSURE:
                                    conn._hold |= _BACKPRESSURE
                                    self._paused += 1
                            else:
                                reply_slow(conn, reply)
                    except Exception as exc:  # noqa: BLE001  (a handler's failure must not end the loop)
                        handler_error(conn, exc)
                    if conn._hold:
                        break
            finally:
                if view is not None:
                    view.release()
            self._frames_in += done
            if replies:
                self._frames_out += replies
                if not conn._dirty:
                    conn._dirty = True
                    self._dirty.append(conn)
            if pos >= end and not old and conn._frame_start is None and not conn._hold:
                return  # a fresh read, all consumed: nothing to keep
            keep(conn, buf, pos, end, old, need, 0, error)

        return deliver_length

    def _deliver_batch(self, conn: Connection, buf: Union[bytes, bytearray], end: int, old: int) -> None:
        """batch=True: handler(conn, frames) once with every complete frame of buf[:end]."""
        frames, pos, need, resume, error = self._scan_buffer(conn, buf, end)
        if frames:
            self._frames_in += len(frames)
            try:
                replies = self._handler(conn, frames)
                if replies is not None:
                    if isinstance(replies, (bytes, bytearray, memoryview, str)):
                        raise TypeError("a batch handler returns None or an iterable of replies, "
                                        f"not {type(replies).__name__}")
                    for reply in replies:
                        self._reply(conn, reply)
            except Exception as exc:  # noqa: BLE001  (a handler's failure must not end the loop)
                self._handler_error(conn, exc)
        self._keep(conn, buf, pos, end, old, need, resume, error)

    def _read_raw(self, conn: Connection) -> bool:
        """_read for raw mode, with the common case inlined: nothing held, and one handler
        call consumes the whole read (the view is of a bytes object: read-only by nature)."""
        if conn._held is not None:
            return self._read(conn)
        try:
            data = _recv(conn._sock, self._read_size)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            self._abort(conn, exc)
            return False
        n = len(data)
        if not n:
            self._peer_eof(conn)
            return False
        self._bytes_in += n
        conn._last_io = self._now
        if conn._hold:  # paused meanwhile in this turn: hold the bytes
            self._raw_loop(conn, data, n, 0, 0, 0)
            return True
        view = memoryview(data)
        try:
            k = self._handler(conn, view)
            if type(k) is not int or not 0 <= k <= n:
                k = self._check_consumed(k, n)
        except Exception as exc:  # noqa: BLE001  (a handler's failure must not end the loop)
            k = -1
            self._handler_error(conn, exc)
        try:
            view.release()
        except BufferError:  # exported by the handler: it keeps the memory
            pass
        if k == n and not conn._hold:
            self._frames_in += 1
            conn._frame_start = None
            return True
        self._raw_loop(conn, data, n, 0, k, 1)
        return True

    def _deliver_raw(self, conn: Connection, buf: Union[bytes, bytearray], end: int, old: int) -> None:
        """Raw mode: handler(conn, view of buf[pos:end]) while it consumes something."""
        self._raw_loop(conn, buf, end, old, 0, 0)

    def _raw_loop(self, conn: Connection, buf: Union[bytes, bytearray], end: int, old: int, pos: int,
                  calls: int) -> None:
        """The raw-mode handler calls from `pos` on (`calls` made already; pos -1: the last
        call failed, so no more calls), then what is left is held (_keep)."""
        handler = self._handler
        fresh = type(buf) is bytes  # a view of bytes is read-only, its memory never reused
        more = pos >= 0 and (pos > 0 or not calls)  # a call that consumed nothing ends the calls
        if pos < 0:
            pos = 0
        while more and pos < end and not conn._hold:
            if fresh:
                view = memoryview(buf)[pos:end] if pos else memoryview(buf)
            else:
                view = memoryview(buf)[pos:end].toreadonly()  # the intermediate views die at once
            calls += 1
            try:
                n = handler(conn, view)
                if type(n) is not int or not 0 <= n <= end - pos:
                    n = self._check_consumed(n, end - pos)
            except Exception as exc:  # noqa: BLE001  (a handler's failure must not end the loop)
                n = 0
                self._handler_error(conn, exc)
            finally:
                try:
                    view.release()
                except BufferError:  # exported by the handler: it keeps the memory (see _keep)
                    pass
            if not n:
                break
            pos += n
        self._frames_in += calls
        self._keep(conn, buf, pos, end, old, 0, 0, None)

    @staticmethod
    def _check_consumed(n: Any, size: int) -> int:
        """A raw-mode handler's result as the count it consumed (TypeError / ValueError)."""
        if type(n) is not int:
            if isinstance(n, bool) or not hasattr(type(n), "__index__"):
                raise TypeError("a raw-mode handler returns the number of bytes it consumed (an int), "
                                f"not {type(n).__name__}")
            n = operator.index(n)
        if not 0 <= n <= size:
            raise ValueError(f"a raw-mode handler consumed {n} bytes of the {size} it was given")
        return int(n)

    def _keep(self, conn: Connection, buf: Union[bytes, bytearray], pos: int, end: int, old: int, need: int,
              resume: int, error: Optional[Exception]) -> None:
        """After a delivery consumed buf[:pos] of buf[:end]: hold the rest (a copy of it, for
        a fresh read; a new bytearray, if the application kept a view of the old one), run
        the frame clock, report a framing error or a frame that can never fit max_buffer."""
        if conn._hold & _CLOSING:
            conn._held = None
            conn._frame_start = None
            return
        if pos >= end:
            conn._held = None
            conn._frame_start = None
            conn._need = conn._resume = 0
            return
        if type(buf) is bytes:  # a fresh read: copy what is left
            conn._held = bytearray(memoryview(buf)[pos:end]) if pos else bytearray(buf)
        elif self._raw and not _EXPORTS_REFUSE_RESIZE:  # the handler may keep a view of buf,
            conn._held = buf[pos:end]  # type: ignore[assignment]  # nothing would tell: never change buf again
        elif pos:
            try:
                del buf[:pos]  # type: ignore[union-attr]
            except BufferError:  # raw mode: the application kept a view: a new buffer for us
                conn._held = buf[pos:end]  # type: ignore[assignment]
        elif self._raw:
            try:
                buf.append(buf.pop())  # type: ignore[union-attr]  # refused while a view of it lives
            except BufferError:  # ... so that memory is the application's now: never reused
                conn._held = buf[:end]  # type: ignore[assignment]
        conn._need = need
        conn._resume = resume
        if error is not None:
            self._errors += 1
            self._close(conn, error)
            conn._held = None
            return
        held = end - pos
        if not conn._hold and (held >= self._max_buffer or need > self._max_buffer):
            self._errors += 1
            self._close(conn, FrameTooLarge(max(held, need), self._max_buffer,
                                            f"a frame of {max(held, need)} bytes cannot fit the connection's "
                                            f"max_buffer of {self._max_buffer} bytes"))
            conn._held = None
            return
        if pos >= old or conn._frame_start is None:
            conn._frame_start = self._now
            self._arm_frame_timer(conn)

    def _arm_frame_timer(self, conn: Connection) -> None:
        timeout = self._frame_timeout
        if timeout is not None and not conn._frame_armed and conn._frame_start is not None:
            conn._frame_armed = True
            heapq.heappush(self._frame_heap, (conn._frame_start + timeout, next(self._seq), conn))

    def _peer_eof(self, conn: Connection) -> None:
        held = conn._held
        exc: Optional[BaseException] = None
        if held:
            exc = IncompleteReadError(bytes(held), conn._need or None)
        conn._held = None
        self._close(conn, exc)

    def _discard(self, conn: Connection) -> None:
        """A half-closed connection of a stop: read and drop, close at the peer's EOF."""
        try:
            data = _recv(conn._sock, self._read_size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            conn._close_exc = exc
            self._finalize(conn)
            return
        if not data:
            self._finalize(conn)

    # -- replies ------------------------------------------------------------------------

    def _reply(self, conn: Connection, payload: Any) -> None:
        """Frame and queue one reply (loop thread): BrokenPipeError once closing (a handler
        that called close() and then returned a reply: as the compiled backend)."""
        if conn._hold & _CLOSING:
            raise _sb.closed_error()
        data, header, trailer = self._encode(payload)  # type: ignore[misc]
        out = conn._out
        if len(out) + len(header) + len(data) + len(trailer) > self._write_limit:
            raise BufferError(f"queuing {len(header) + len(data) + len(trailer)} more bytes would exceed the "
                              f"connection's write_limit of {self._write_limit} bytes ({len(out)} queued)")
        out += header
        out += data
        if trailer:
            out += trailer
        self._frames_out += 1
        if len(out) > self._high and not conn._hold & _BACKPRESSURE:
            conn._hold |= _BACKPRESSURE
            self._paused += 1
        if not conn._dirty:
            conn._dirty = True
            self._dirty.append(conn)

    def _queue(self, conn: Connection, data: Bytes, frames: int) -> None:
        """Queue bytes already framed (or raw) (loop thread)."""
        out = conn._out
        if len(out) + len(data) > self._write_limit:
            raise BufferError(f"queuing {len(data)} more bytes would exceed the connection's write_limit of "
                              f"{self._write_limit} bytes ({len(out)} queued)")
        out += data
        self._frames_out += frames
        if len(out) > self._high and not conn._hold & _BACKPRESSURE:
            conn._hold |= _BACKPRESSURE
            self._paused += 1
        if not conn._dirty:
            conn._dirty = True
            self._dirty.append(conn)

    def _apply_write(self, conn: Connection, data: bytes, frames: int) -> None:
        """A send/write from another thread, at the loop's turn."""
        if conn._hold & _CLOSING or conn._fd < 0 or conn._stop == _HALF_CLOSED:
            _sb.LOGGER.warning("a reply sent from another thread to %r was dropped: the connection is closed", conn)
            return
        try:
            self._queue(conn, data, frames)
        except BufferError as exc:
            _sb.LOGGER.error("a reply sent from another thread to %r was dropped: %s", conn, exc)

    # -- errors and closing -------------------------------------------------------------

    def _handler_error(self, conn: Connection, exc: Exception) -> None:
        self._errors += 1
        on_error = self._on_error
        if on_error is not None:
            try:
                on_error(conn, exc)
                return
            except Exception as again:  # noqa: BLE001  (a handler's failure must not end the loop)
                exc = again
            _sb.log_exception("on_error", conn, exc)
        else:
            _sb.log_exception("handler", conn, exc)
        self._close(conn, exc)

    def _mark(self, conn: Connection) -> None:
        if not conn._dirty:
            conn._dirty = True
            self._dirty.append(conn)

    def _close(self, conn: Connection, exc: Optional[BaseException]) -> None:
        """Flush, then close (loop thread); the first reason given is what on_close gets."""
        if conn._fd < 0 or conn._hold & _CLOSING:
            return
        conn._hold |= _CLOSING
        conn._close_exc = exc
        conn._held = None
        conn._frame_start = None
        self._mark(conn)

    def _abort(self, conn: Connection, exc: Optional[BaseException]) -> None:
        """Close now, dropping queued output (loop thread; the socket closes at the end of
        this turn)."""
        if conn._fd < 0 or conn._aborted:
            return
        if not conn._hold & _CLOSING:
            conn._close_exc = exc
        conn._hold |= _CLOSING
        conn._aborted = True
        conn._held = None
        conn._out = bytearray()
        self._mark(conn)

    def _finalize(self, conn: Connection) -> None:
        """Close the socket now and report it to on_close (exactly once)."""
        fd = conn._fd
        if fd < 0:
            return
        if conn._events and self._waiter is not None:
            try:
                self._waiter.unregister(fd)
            except (KeyError, OSError, ValueError):
                pass
        conn._events = 0
        del self._conns[fd]
        conn._fd = -1
        conn._hold |= _CLOSING
        if conn._hold & _BACKPRESSURE:
            conn._hold &= ~_BACKPRESSURE
            self._paused -= 1
        conn._out = bytearray()
        conn._held = None
        conn._frame_start = None
        conn._sock.close()
        self._closed_count += 1
        if self._idle_timeout is not None:  # its idle heap entry is dead now
            self._idle_dead += 1
            if self._idle_dead > _COMPACT_MIN and 2 * self._idle_dead >= len(self._idle_heap):
                self._idle_heap = self._live_entries(self._idle_heap)
                self._idle_dead = 0
        if conn._frame_armed:
            conn._frame_armed = False
            self._frame_dead += 1
            if self._frame_dead > _COMPACT_MIN and 2 * self._frame_dead >= len(self._frame_heap):
                self._frame_heap = self._live_entries(self._frame_heap)
                self._frame_dead = 0
        if self._max_conns and not self._accepting and self._waiter is not None:
            self._sync_accepting()
        hook = self._on_close
        if hook is not None:
            try:
                hook(conn, conn._close_exc)
            except Exception as exc:  # noqa: BLE001  (a handler's failure must not end the loop)
                _sb.log_exception("on_close", conn, exc)

    def _finalize_all(self, exc: Optional[BaseException]) -> None:
        """Close every connection now (`exc` for those without a reason of their own). An
        on_close raising a BaseException (KeyboardInterrupt) does not leave the others open:
        they are all closed and reported, then the first such exception is raised."""
        first: Optional[BaseException] = None
        for conn in list(self._conns.values()):
            if exc is not None and conn._close_exc is None:
                conn._close_exc = exc
            try:
                self._finalize(conn)
            except BaseException as again:  # noqa: BLE001  (raised below, after the others)
                if first is None:
                    first = again
        if first is not None:
            raise first

    @staticmethod
    def _live_entries(heap: list[tuple[float, int, Connection]]) -> list[tuple[float, int, Connection]]:
        """A timer heap without the entries of closed connections."""
        live = [entry for entry in heap if entry[2]._fd >= 0]
        heapq.heapify(live)
        return live

    def _pause(self, conn: Connection) -> None:
        if conn._fd >= 0 and not conn._hold & _PAUSED:
            conn._hold |= _PAUSED
            self._mark(conn)

    def _resume_conn(self, conn: Connection) -> None:
        if conn._fd >= 0 and conn._hold & _PAUSED:
            conn._hold &= ~_PAUSED
            self._unheld(conn)

    def _unheld(self, conn: Connection, mark: bool = True) -> None:
        """A pause ended: deliver the held frames (next turn) and restart the frame clock."""
        if mark:
            self._mark(conn)
        if conn._hold:
            return
        if conn._held is not None:
            conn._frame_start = self._now
            self._arm_frame_timer(conn)
        if (conn._held is not None or conn._stop == _DRAIN) and not conn._ready:
            conn._ready = True
            self._ready.append(conn)

    def _update_events(self, conn: Connection) -> None:
        if conn._stop == _HALF_CLOSED:
            want = READ
        elif conn._hold or conn._stop == _DRAINED:
            want = 0
        else:
            want = READ
        if conn._want_write:
            want |= WRITE
        have = conn._events
        if want == have:
            return
        waiter = self._waiter
        if waiter is None:
            return
        if not have:
            waiter.register(conn._fd, want)
        elif not want:
            waiter.unregister(conn._fd)
        else:
            waiter.modify(conn._fd, want)
        conn._events = want

    # -- the end of a turn --------------------------------------------------------------

    def _flush(self) -> None:
        """One send per connection with queued output, then each one's state follows."""
        dirty = self._dirty
        self._dirty = []
        # now, not the turn's start: after a slow handler batch, what is sent now restarts
        # the idle clock now (a stale time would expire the connection right after its reply)
        now = self._now = monotonic()
        writes = sent_total = 0
        for conn in dirty:
            conn._dirty = False
            out = conn._out
            if out and not conn._hold and not conn._want_write and not conn._stop:  # the common case
                try:
                    sent = _send(conn._sock, out, _MSG_NOSIGNAL)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError as exc:
                    writes += 1
                    conn._close_exc = exc
                    self._finalize(conn)
                    continue
                writes += 1
                sent_total += sent
                conn._last_io = now
                if sent == len(out):
                    out.clear()
                    if conn._events == READ:
                        continue  # all sent, reading on: nothing else to do
                else:
                    del out[:sent]
                    conn._want_write = True
            elif out and not conn._want_write and not conn._aborted and conn._fd >= 0:  # closing, paused, ...
                try:
                    sent = _send(conn._sock, out, _MSG_NOSIGNAL)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError as exc:
                    writes += 1
                    if not conn._hold & _CLOSING:
                        conn._close_exc = exc
                    self._finalize(conn)
                    continue
                writes += 1
                if sent:
                    sent_total += sent
                    conn._last_io = now
                    del out[:sent]
                if out:
                    conn._want_write = True
            self._after_send(conn)
        self._writes += writes
        self._bytes_out += sent_total

    def _after_send(self, conn: Connection) -> None:
        """A dirty connection's state after its send (or without one)."""
        if conn._fd < 0:
            return
        if conn._aborted:
            self._finalize(conn)
            return
        out = conn._out
        if conn._hold & _BACKPRESSURE and len(out) <= self._low:
            conn._hold &= ~_BACKPRESSURE
            self._paused -= 1
            self._unheld(conn, mark=False)  # this pass handles it
        if conn._hold & _CLOSING:
            if not out:
                self._finalize(conn)
                return
        elif conn._stop == _DRAINED and not out and not conn._hold:
            self._half_close(conn)
            if conn._fd < 0:
                return
        self._update_events(conn)

    def _half_close(self, conn: Connection) -> None:
        conn._held = None
        conn._frame_start = None
        try:
            conn._sock.shutdown(_stdsocket.SHUT_WR)
        except OSError as exc:
            conn._close_exc = exc
            self._finalize(conn)
            return
        conn._stop = _HALF_CLOSED  # closed for send/write/closed, on any thread
        conn._loop = None  # write()'s fast path takes the slow one, which refuses

    def _run_ready(self) -> None:
        """Deliveries held over: resumed connections' buffered frames, a stop's reads."""
        ready = self._ready
        self._ready = []
        for conn in ready:
            conn._ready = False
            if conn._fd < 0 or conn._hold:
                continue
            held = conn._held
            if held is not None:
                self._deliver(conn, held, len(held), len(held))
            if conn._stop == _DRAIN:
                for _ in range(_DRAIN_READS):
                    if conn._hold or not self._read(conn):
                        break
                if not conn._hold:
                    conn._stop = _DRAINED
            self._mark(conn)

    def _run_calls(self) -> None:
        for fn, args in self._calls.take():
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001  (a handler's failure must not end the loop)
                _sb.log_exception(f"call_soon_threadsafe callback {fn!r}", None, exc)

    # -- timers -------------------------------------------------------------------------

    def _next_timeout(self) -> float:
        if self._ready or self._dirty:
            return 0.0
        when = math.inf
        if self._idle_heap:
            when = self._idle_heap[0][0]
        if self._frame_heap and self._frame_heap[0][0] < when:
            when = self._frame_heap[0][0]
        if not self._accepting and self._accept_after > self._now and self._accept_after < when:
            when = self._accept_after
        if self._stopping and self._stop_deadline < when:
            when = self._stop_deadline
        if when == math.inf:
            return -1.0
        # (capped: a deadline years away, idle_timeout=1e11 say, is a wait the waiters'
        # time_t / int milliseconds cannot take; the loop just wakes up and waits again)
        return min(max(0.0, when - monotonic()), _MAX_WAIT)

    def _run_timers(self, now: float) -> None:
        heap = self._idle_heap
        if heap and heap[0][0] <= now:
            timeout = self._idle_timeout
            assert timeout is not None
            while heap and heap[0][0] <= now:
                _, _, conn = heapq.heappop(heap)
                if conn._fd < 0:
                    continue
                due = conn._last_io + timeout
                if due <= now:
                    self._timeouts += 1
                    self._abort(conn, IdleTimeout(f"no byte received or sent for {timeout:g} s"))
                else:
                    heapq.heappush(heap, (due, next(self._seq), conn))
        heap = self._frame_heap
        if heap and heap[0][0] <= now:
            timeout = self._frame_timeout
            assert timeout is not None
            while heap and heap[0][0] <= now:
                _, _, conn = heapq.heappop(heap)
                started = conn._frame_start
                if conn._fd < 0 or started is None or conn._hold or conn._stop >= _DRAINED:
                    conn._frame_armed = False  # re-armed when a frame starts or reading resumes
                    continue
                due = started + timeout
                if due <= now:
                    conn._frame_armed = False
                    self._timeouts += 1
                    self._close(conn, FrameTimeout(f"a frame begun {now - started:.3g} s ago is still incomplete "
                                                   f"(frame_timeout {timeout:g} s)"))
                else:
                    heapq.heappush(heap, (due, next(self._seq), conn))
        if not self._accepting and self._accept_after and now >= self._accept_after:
            self._accept_after = 0.0
            self._sync_accepting()

    # -- the loop -----------------------------------------------------------------------

    def _serve(self) -> None:
        waiter = self._waiter = _make_waiter()
        self._loop_ident = get_ident()
        handlers = _sb.SignalHandlers(stop=lambda: self.stop(_sb.DEFAULT_GRACE), abort=lambda: self.stop(0.0))
        self._now = monotonic()
        normal = False
        try:
            waiter.register(self._calls.fileno(), READ)
            if handlers.install():
                waiter.register(handlers.fileno(), READ)
            self._accepting = False
            self._sync_accepting()
            self._loop(waiter, handlers)
            normal = True
        except BaseException as exc:
            self._finalize_all(exc)
            raise
        finally:
            try:
                if normal:
                    self._run_calls()
            finally:
                handlers.restore()
                self._set_accepting(False)
                self._waiter = None
                waiter.close()
                self._loop_ident = None
                self._dirty = []
                self._ready = []
                self._idle_heap = []
                self._frame_heap = []
                self._idle_dead = self._frame_dead = 0
                self._stopping = False
                self._stop_requested = False
                self._stop_deadline = math.inf

    def _begin_stop(self) -> None:
        self._stopping = True
        self._close_listeners()
        for conn in list(self._conns.values()):
            if conn._hold & _CLOSING:
                continue
            conn._stop = _DRAIN
            self._unheld(conn)

    def _loop(self, waiter: _Waiter, handlers: _sb.SignalHandlers) -> None:
        conns = self._conns
        wait = waiter._ep.poll if isinstance(waiter, _Epoll) else waiter.wait
        calls_fd = self._calls.fileno()
        signal_fd = handlers.fileno()
        listeners = self._listeners
        read = self._read_raw if self._raw else self._read
        write_events = _WRITE_EVENTS
        read_events = _READ_EVENTS
        while True:
            if self._stop_requested and not self._stopping:
                self._begin_stop()
            if self._stopping:
                if not conns:
                    return
                if monotonic() >= self._stop_deadline:
                    self._end_grace()
                    continue
            if self._ready or self._dirty or self._idle_heap or self._frame_heap or self._accept_after or \
                    self._stopping:
                events = wait(self._next_timeout())
            else:
                events = wait(-1.0)
            now = self._now = monotonic()
            calls = False
            for fd, mask in events:
                conn = conns.get(fd)
                if conn is not None:
                    if mask & write_events and conn._want_write:  # ERROR/HANGUP: the send tells
                        conn._want_write = False
                        if not conn._dirty:
                            conn._dirty = True
                            self._dirty.append(conn)
                    if mask & read_events and not conn._ready:
                        # (a connection with held frames to deliver this turn reads after
                        # them: an EOF already waiting must not be reported before them)
                        if not conn._hold and not conn._stop:
                            read(conn)
                        elif conn._stop == _HALF_CLOSED:
                            self._discard(conn)
                        elif not conn._hold and conn._events & READ:
                            read(conn)
                elif fd == calls_fd:
                    calls = True
                elif fd in listeners:
                    self._accept(listeners[fd])
                elif fd == signal_fd:
                    handlers.drain()
            if self._ready:
                self._run_ready()
            if calls:
                self._run_calls()
            if self._idle_heap or self._frame_heap or self._accept_after:
                self._run_timers(now)
            if self._dirty:
                self._flush()

    def _end_grace(self) -> None:
        for conn in list(self._conns.values()):
            if conn._stop != _HALF_CLOSED and conn._close_exc is None:
                conn._close_exc = TimeoutError("the server's stop grace period ended before this connection was done")
            self._finalize(conn)

    # -- workers ------------------------------------------------------------------------

    def _supervise(self, plan: _sb.ListenPlan) -> None:
        if self._stop_requested:
            self._stop_requested = False
            self._stop_deadline = math.inf
            plan.close()
            return
        self._supervisor = _sb.Supervisor(self._options.workers, plan, self._calls, self._run_as_worker,
                                          self._stop_here)
        try:
            self._supervisor.run()
        finally:
            self._supervisor = None
            plan.close()
            self._stop_requested = False
            self._stop_deadline = math.inf

    def _run_as_worker(self, listeners: list[_stdsocket.socket]) -> None:
        """In a forked worker: this Server, as a plain one-process server on `listeners`."""
        self._supervisor = None
        self._plan = None
        self._reset_stats()
        for lsock in listeners:
            self._listeners[lsock.fileno()] = lsock
        self._serve()


def serve(handler: Callable[..., Any], address: Any, **options: Any) -> None:
    """Serve `handler` on `address` until stopped: Server(handler, **options), listen(address),
    serve_forever() (the workers supervisor with workers=N), then close(). In the main
    thread, SIGINT and SIGTERM stop it gracefully."""
    _sb.serve(Server, handler, address, **options)

