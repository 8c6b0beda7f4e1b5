# fastsock.Server, compiled: the loop's mechanics are C (src_c/fs_server.c: epoll, buffers,
# framing in place, timers, one send per connection per turn, with the GIL released while
# it waits); this file calls the handlers for each batch of events with the GIL held and
# queues their replies straight into C. The pure twin is fastsock/_py/server.py; what both
# share (option checks, listeners, the call queue, signal handlers, workers, serve(), the
# logging and accept-error policies) is fastsock/_serverbase.py. Where the contract
# (server-spec.md) is silent, this file does what the pure twin's docstrings say.
#
# Uses _io.pxi (framing_to_c) and nothing of the other feature files.
#
# Per frame, the hot path makes one bytes object (the frame) and one handler call; the reply
# is copied into the connection's C output queue from the returned object's buffer.

cimport cython
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBuffer_FillInfo, PyBUF_SIMPLE, PyBUF_WRITABLE
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_CheckExact
from cpython.exc cimport PyErr_CheckSignals
from cpython.ref cimport Py_INCREF, Py_DECREF, Py_REFCNT
from libc.errno cimport EPIPE, ENOBUFS, ENOMEM, EMSGSIZE, EINVAL
from libc.stdint cimport int64_t, uint64_t, INT64_MAX
from libc.stdlib cimport free
from libc.string cimport strerror

from fastsock._c.includes.fs_frame cimport (
    fs_framing, fs_frame_header, fs_frame_trailer, FS_FRAME_HEADER_MAX, FS_FRAMING_FIXED, FS_FRAMING_RESP,
)
from fastsock._c.includes.fs_server cimport *

cdef extern from "Python.h":
    object PyMemoryView_FromObject(object obj)
    object PyUnicode_DecodeFSDefaultAndSize(const char *s, Py_ssize_t size)
    unsigned long PyThread_get_thread_ident()

cdef extern from "<netdb.h>" nogil:
    int getnameinfo(const sockaddr *sa, socklen_t salen, char *host, socklen_t hostlen,
                    char *serv, socklen_t servlen, int flags)
    const int NI_NUMERICHOST
    const int NI_NUMERICSERV

cdef extern from "<netinet/in.h>" nogil:
    struct sockaddr_in:
        unsigned short sin_port
    struct sockaddr_in6:
        unsigned short sin6_port
        unsigned int sin6_flowinfo
        unsigned int sin6_scope_id
    unsigned short ntohs(unsigned short)
    unsigned int ntohl(unsigned int)

cdef extern from "<sys/un.h>" nogil:
    struct sockaddr_un:
        char sun_path[108]

cdef extern from "<string.h>" nogil:
    size_t strnlen(const char *s, size_t maxlen)

cdef extern from "<errno.h>":
    const int ENOTSUP

cdef extern from *:
    """
    #include <stddef.h>
    #define FS_SUN_PATH_OFFSET ((int)offsetof(struct sockaddr_un, sun_path))
    """
    const int FS_SUN_PATH_OFFSET

import math as _math
import sys as _server_sys
from time import monotonic as _monotonic
import socket as _server_stdsocket
import threading as _threading

from fastsock import _serverbase as _sb
from fastsock._errors import (
    FrameTimeout, FrameTooLarge as _FrameTooLarge, IdleTimeout, IncompleteReadError as _IncompleteReadError,
)
from fastsock.framing import FramingError as _ServerFramingError, _too_many_args as _server_too_many_args
from fastsock.resp import Reply as _Reply

SERVER_ALL = ["Server", "Connection", "serve", "IdleTimeout", "FrameTimeout"]

cdef object _LOGGER = _sb.LOGGER
cdef object _TCP_FAMILIES = (_server_stdsocket.AF_INET, _server_stdsocket.AF_INET6)
cdef double _NS = 1e9
cdef int _MODE_FRAMES = 0, _MODE_BATCH = 1, _MODE_RAW = 2
cdef int _WATCH_CALLS = 0, _WATCH_SIGNALS = 1
cdef object _CONN_TOKEN = object()  # only the Server can make a Connection (not even via __new__)


cdef inline int64_t _ns(double seconds):
    """Seconds (maybe inf, or past int64's nanoseconds) as int64 nanoseconds: 0 for what is
    not > 0, INT64_MAX ("never": the C loop saturates its deadlines there) from 2**63 ns on,
    so that no float-to-int conversion overflows."""
    if not seconds > 0:
        return 0
    if seconds >= 9.2e9:  # INT64_MAX ns is 9.223e9 s
        return INT64_MAX
    return <int64_t>(seconds * _NS)


cdef object _sockaddr_py(const sockaddr *sa, socklen_t length):
    """A C socket address as the socket module gives it (getpeername/getsockname)."""
    cdef char host[128]
    cdef const sockaddr_in *a4
    cdef const sockaddr_in6 *a6
    cdef const sockaddr_un *un
    cdef Py_ssize_t plen
    if length == 0:
        return None
    if sa.sa_family == _server_stdsocket.AF_INET or sa.sa_family == _server_stdsocket.AF_INET6:
        if getnameinfo(sa, length, host, sizeof(host), NULL, 0, NI_NUMERICHOST | NI_NUMERICSERV) != 0:
            return None
        if sa.sa_family == _server_stdsocket.AF_INET:
            a4 = <const sockaddr_in *>sa
            return (host.decode("ascii"), ntohs(a4.sin_port))
        a6 = <const sockaddr_in6 *>sa
        return (host.decode("ascii"), ntohs(a6.sin6_port), ntohl(a6.sin6_flowinfo), a6.sin6_scope_id)
    if sa.sa_family == AF_UNIX:
        un = <const sockaddr_un *>sa
        plen = <Py_ssize_t>length - FS_SUN_PATH_OFFSET
        if plen <= 0:
            return ""
        if un.sun_path[0] == 0:  # Linux's abstract namespace: bytes, as the socket module gives
            return PyBytes_FromStringAndSize(un.sun_path, plen)
        return PyUnicode_DecodeFSDefaultAndSize(un.sun_path, <Py_ssize_t>strnlen(un.sun_path, <size_t>plen))
    return None


@cython.final
cdef class _RawView:
    """The read-only buffer a raw-mode handler's memoryview wraps: a window into a
    connection's C read buffer. When an export outlives the handler call (a slice kept),
    the memory block is handed over to this object (`owned`, freed with it) and never read
    or reused by the connection again."""

    cdef const char *buf
    cdef Py_ssize_t length
    cdef Py_ssize_t exports
    cdef char *owned
    cdef bint live  # in the handler call, or owning its memory: new exports allowed

    def __getbuffer__(self, Py_buffer *view, int flags):
        if flags & PyBUF_WRITABLE:
            raise BufferError("a raw-mode handler's data is read-only")
        if not self.live:  # data.obj kept after the call: its window is gone
            raise ValueError("a raw-mode handler's data cannot be used after the handler returned")
        PyBuffer_FillInfo(view, self, <void *>self.buf, self.length, 1, flags)
        self.exports += 1

    def __releasebuffer__(self, Py_buffer *view):
        self.exports -= 1

    def __dealloc__(self):
        free(self.owned)


@cython.final
@cython.no_gc_clear
cdef class Connection:
    """A client connection of a fastsock.Server (created by the server; Connection() raises
    TypeError). Handlers, hooks and other threads reply and control it through its methods.

    On the loop thread (handlers, hooks, call_soon_threadsafe callbacks), `send`/`write`
    queue at once, copied into the connection's output queue (BrokenPipeError on a closed or
    closing connection, BufferError past write_limit), and everything queued in one turn of
    the loop leaves in one system call. From any other thread, `send`/`write` copy and
    validate the payload, `close`/`abort`/`pause_reading`/`resume_reading` return at once,
    and the loop applies them at its next turn, in call order, after what is already queued;
    a failure found only then (the connection closed meanwhile, write_limit) is logged on
    `fastsock.server`.

    Attributes: `peer`, `sockname` (as getpeername()/getsockname() at accept; AF_UNIX peers
    are usually ''), `data` (free for the application; None at first), `server`.

    Threads: on the loop thread every method works on the C connection, after checking that
    the C slot is still this connection's (`_live`); from other threads, while the loop
    runs without the GIL, only what the C loop publishes for them is read (fd, state bits,
    pending; the addresses, fixed at accept), and everything else is queued to the loop."""

    cdef Server _server
    cdef fs_conn *_c        # NULL once its close was reported (the slot may be reused)
    cdef uint64_t _id
    cdef public object data
    cdef object _peer
    cdef object _sockname
    cdef object _exc        # the reason the Python side closed it with, reported to on_close
    cdef bint _xclosed      # close()/abort() called from another thread, not applied yet
    cdef object __weakref__

    def __cinit__(self, token=None, *args, **kwargs):
        if token is not _CONN_TOKEN:
            raise TypeError("Connection objects are created by a fastsock.Server, not instantiated")

    cdef inline bint _on_loop(self):
        return PyThread_get_thread_ident() == self._server._loop_ident

    cdef inline fs_conn *_live(self):
        """The C connection (loop thread only), or NULL once closed and reported, or if its
        slot is another connection's now: a stale object never reaches a reused slot."""
        cdef fs_conn *c = self._c
        if c != NULL and fs_server_conn(self._server._srv, self._id) != c:
            return NULL
        return c

    cdef inline bint _gone(self):
        """Closed or closing (loop thread)."""
        cdef fs_conn *c = self._live()
        return c == NULL or fs_conn_closing(c)

    cdef inline bint _gone_shared(self):
        """Closed or closing, from any thread: what the loop published."""
        return self._c == NULL or (fs_conn_shared_state(self._c) & FS_CONN_CLOSING) != 0

    cdef int _keep_addresses(self) except -1:
        """Convert both addresses now, while the C slot still holds them."""
        cdef socklen_t length = 0
        cdef const sockaddr *sa
        if self._c != NULL:
            if self._peer is None:
                sa = fs_conn_peer(self._c, &length)
                self._peer = _sockaddr_py(sa, length)
            if self._sockname is None:
                sa = fs_conn_sockname(self._c, &length)
                self._sockname = _sockaddr_py(sa, length)
        return 0

    # -- replies ----------------------------------------------------------------------

    def send(self, payload):
        """Frame `payload` (any bytes-like object, copied before this returns) with the
        server's framing and queue it; it leaves with the other replies of this turn.
        RuntimeError in raw mode (use write); BrokenPipeError if the connection is closed or
        closing (close() was called, or the server half-closed it in a stop: a reply a
        handler returns after close() takes the error path the same way); BufferError
        (nothing queued) past the server's write_limit; FrameTooLarge / FramingError /
        TypeError for a payload the framing refuses."""
        cdef Server server = self._server
        if server._mode == _MODE_RAW:
            raise RuntimeError("send() frames its payload, and this server has no framing (raw mode): use write()")
        if not self._on_loop():
            if self._xclosed or self._gone_shared():
                raise _sb.closed_error()
            server._calls.put(server._apply_write, (self, server._framed_bytes(payload), 1))
            return
        if self._gone():
            raise _sb.closed_error()
        server._queue_reply(self._c, payload)

    def write(self, data):
        """Queue raw bytes (any bytes-like object, copied before this returns), unframed;
        they leave with the other replies of this turn. BrokenPipeError if the connection is
        closed or closing (as for send); BufferError (nothing queued) past the server's
        write_limit."""
        cdef Server server = self._server
        cdef Py_buffer view
        cdef int rc
        if not self._on_loop():
            if self._xclosed or self._gone_shared():
                raise _sb.closed_error()
            server._calls.put(server._apply_write, (self, _bytes_of(data, "write() data"), 0))
            return
        if self._gone():
            raise _sb.closed_error()
        if PyBytes_CheckExact(data):
            rc = fs_conn_write(server._srv, self._c, PyBytes_AS_STRING(data), <size_t>PyBytes_GET_SIZE(data))
            if rc:
                server._raise_queue_error(rc, PyBytes_GET_SIZE(data))
            return
        _get_buffer(data, &view, "write() data")
        try:
            rc = fs_conn_write(server._srv, self._c, view.buf, <size_t>view.len)
            if rc:
                server._raise_queue_error(rc, view.len)
        finally:
            PyBuffer_Release(&view)

    # -- control ----------------------------------------------------------------------

    def close(self):
        """Flush what is queued, then close (idempotent); on_close(conn, None) follows. The
        connection delivers no more frames from now on."""
        cdef Server server = self._server
        cdef fs_conn *c
        if not self._on_loop():
            if not self._xclosed and self._c != NULL:
                self._xclosed = True
                server._calls.put(server._apply_close, (self, False))
            return
        c = self._live()
        if c != NULL:
            fs_conn_close(server._srv, c)

    def abort(self):
        """Close now, dropping queued output (idempotent); on_close(conn, None) follows."""
        cdef Server server = self._server
        cdef fs_conn *c
        if not self._on_loop():
            if self._c != NULL:
                self._xclosed = True
                server._calls.put(server._apply_close, (self, True))
            return
        c = self._live()
        if c != NULL:
            fs_conn_abort(server._srv, c)

    def pause_reading(self):
        """Deliver no more frames and stop reading the socket until resume_reading(): frames
        already buffered are held, not dropped. Independent of backpressure pausing."""
        cdef Server server = self._server
        cdef fs_conn *c
        if not self._on_loop():
            server._calls.put(server._apply_pause, (self, True))
            return
        c = self._live()
        if c != NULL:
            fs_conn_pause(server._srv, c, 1)

    def resume_reading(self):
        """Undo pause_reading(): frames held meanwhile are delivered at the loop's next turn,
        even if no new byte arrives."""
        cdef Server server = self._server
        cdef fs_conn *c
        if not self._on_loop():
            server._calls.put(server._apply_pause, (self, False))
            return
        c = self._live()
        if c != NULL:
            fs_conn_pause(server._srv, c, 0)

    # -- state ------------------------------------------------------------------------

    @property
    def server(self):
        """The Server this connection belongs to."""
        return self._server

    @property
    def peer(self):
        """The peer's address, as getpeername() gave it at accept."""
        cdef socklen_t length = 0
        cdef const sockaddr *sa
        if self._peer is None and self._c != NULL:  # filled at accept, unchanged since: any thread
            sa = fs_conn_peer(self._c, &length)
            self._peer = _sockaddr_py(sa, length)
        return self._peer

    @property
    def sockname(self):
        """The local address of the connection, as getsockname() gave it at accept."""
        cdef socklen_t length = 0
        cdef const sockaddr *sa
        if self._sockname is None and self._c != NULL:  # filled at accept, unchanged since: any thread
            sa = fs_conn_sockname(self._c, &length)
            self._sockname = _sockaddr_py(sa, length)
        return self._sockname

    @property
    def pending(self):
        """Bytes queued and not sent yet (0 once closed)."""
        cdef fs_conn *c
        if not self._on_loop():
            return 0 if self._c == NULL else fs_conn_shared_pending(self._c)
        c = self._live()
        return 0 if c == NULL else fs_conn_pending(c)

    @property
    def closed(self):
        """True once closed, or closing (close() or abort() called, from any thread; or
        half-closed by a stop)."""
        if not self._on_loop():
            return self._xclosed or self._gone_shared()
        return self._xclosed or self._gone()

    def fileno(self):
        """The connection's descriptor (-1 once closed)."""
        cdef fs_conn *c
        if not self._on_loop():
            return -1 if self._c == NULL else fs_conn_shared_fd(self._c)
        c = self._live()
        return -1 if c == NULL else fs_conn_fd(c)

    def __repr__(self):
        cdef int state = FS_CONN_CLOSING
        cdef int fd = -1
        cdef size_t pending = 0
        cdef fs_conn *c = self._c
        if c != NULL and not self._on_loop():  # what the loop published
            fd = fs_conn_shared_fd(c)
            state = fs_conn_shared_state(c)
            pending = fs_conn_shared_pending(c)
        elif c != NULL:
            c = self._live()
            if c != NULL:
                fd = fs_conn_fd(c)
                state = (FS_CONN_CLOSING if fs_conn_closing(c) else 0) | (FS_CONN_PAUSED if fs_conn_paused(c) else 0)
                pending = fs_conn_pending(c)
        if fd < 0:
            label = "closed"
        elif self._xclosed or state & FS_CONN_CLOSING:
            label = "closing"
        elif state & (FS_CONN_PAUSED | FS_CONN_BACKPRESSURE):
            label = "paused"
        else:
            label = "open"
        return f"<fastsock.Connection peer={self.peer!r} fd={fd} {label} pending={pending}>"


cdef int _get_buffer(object obj, Py_buffer *view, str what) except -1:
    """PyObject_GetBuffer(PyBUF_SIMPLE) with the pure twin's TypeError for what is not a
    contiguous bytes-like object."""
    try:
        PyObject_GetBuffer(obj, view, PyBUF_SIMPLE)
    except TypeError:
        raise TypeError(f"{what} must be a bytes-like object, not {type(obj).__name__}") from None
    except BufferError as exc:  # e.g. a non-contiguous memoryview
        raise TypeError(f"{what} must be a C-contiguous bytes-like object: {exc}") from None
    return 0


cdef bytes _bytes_of(object obj, str what):
    cdef Py_buffer view
    if PyBytes_CheckExact(obj):
        return <bytes>obj
    _get_buffer(obj, &view, what)
    try:
        return PyBytes_FromStringAndSize(<const char *>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


cdef class Server:
    """Server(handler, *, framing=None, batch=False, on_connect=None, on_close=None,
    on_error=None, max_connections=None, idle_timeout=None, frame_timeout=None,
    read_size=65536, max_buffer=None, high_water=1 MiB, low_water=None, write_limit=None,
    backlog=1024, workers=1, reuse_port=False)

    An event-loop server for many framed connections with Python handlers, its loop in C:

        def handle(conn, frame):     # once per complete frame, on the loop's thread
            return frame             # bytes-like: framed and queued; None: no reply

        server = fastsock.Server(handle, framing=fastsock.LengthPrefix(4))
        server.listen(("127.0.0.1", 0))
        server.serve_forever()       # until stop(), SIGTERM or SIGINT

    Modes: framed (`handler(conn, frame: bytes)`), framed with batch=True (`handler(conn,
    frames: list[bytes])` once per read, returning None or an iterable of replies), raw
    (framing=None: `handler(conn, data: memoryview)` with every byte buffered so far,
    returning how many it consumed; replies with conn.write). Every reply produced in one
    turn of the loop leaves in one send() per connection. The behaviour where the contract
    is silent is the pure twin's (fastsock._py.Server's docstring), except that on_close
    runs at the turn after the one in which the connection closed.
    """

    cdef fs_server *_srv
    cdef fs_framing _f
    cdef bytes _delim
    cdef object _options
    cdef object _handler
    cdef object _framing
    cdef object _on_connect
    cdef object _on_close
    cdef object _on_error
    cdef int _mode
    cdef object _calls
    cdef object _state_lock
    cdef list _listeners          # [(socket, C listener index)]
    cdef bint _running
    cdef bint _closed
    cdef unsigned long _loop_ident
    cdef object _accept_errors
    cdef bint _accept_failed
    cdef bint _stop_requested
    cdef double _stop_deadline    # time.monotonic() seconds; inf: no stop asked for
    cdef double _c_deadline       # the deadline the C loop was given
    cdef bint _stopping
    cdef object _signals
    cdef object _plan
    cdef object _supervisor
    cdef _RawView _view
    cdef fs_server_config _cfg
    cdef const fs_server_event *_evs   # the batch being handled, and where its handling is
    cdef int _ev_n
    cdef int _ev_i
    cdef object __weakref__

    def __cinit__(self):
        self._srv = NULL
        self._closed = True  # until __init__ succeeds

    def __dealloc__(self):
        if self._srv != NULL:
            fs_server_free(self._srv)
            self._srv = NULL

    def __init__(self, handler, *, framing=None, batch=False, on_connect=None, on_close=None, on_error=None,
                 max_connections=None, idle_timeout=None, frame_timeout=None, read_size=65536, max_buffer=None,
                 high_water=_sb.DEFAULT_HIGH_WATER, low_water=None, write_limit=None, backlog=_sb.DEFAULT_BACKLOG,
                 workers=1, reuse_port=False):
        if self._srv != NULL:
            raise RuntimeError("Server.__init__ called twice")
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
        self._mode = _MODE_RAW if o.framing is None else (_MODE_BATCH if o.batch else _MODE_FRAMES)
        self._delim = framing_to_c(o.framing, &self._cfg.framing)
        self._f = self._cfg.framing
        self._cfg.read_size = o.read_size
        self._cfg.max_buffer = o.max_buffer
        self._cfg.high_water = o.high_water
        self._cfg.low_water = o.low_water
        self._cfg.write_limit = o.write_limit
        self._cfg.max_connections = o.max_connections
        self._cfg.idle_timeout_ns = 0 if o.idle_timeout is None else _ns(o.idle_timeout)
        self._cfg.frame_timeout_ns = 0 if o.frame_timeout is None else _ns(o.frame_timeout)
        self._new_loop()
        self._calls = _sb.CallQueue()
        self._state_lock = _threading.Lock()
        self._listeners = []
        self._running = False
        self._loop_ident = 0
        self._accept_errors = _sb.AcceptErrors()
        self._accept_failed = False
        self._stop_requested = False
        self._stop_deadline = _math.inf
        self._c_deadline = _math.inf
        self._stopping = False
        self._plan = _sb.ListenPlan() if o.workers > 1 else None
        self._supervisor = None
        self._view = _RawView.__new__(_RawView)
        self._closed = False

    cdef int _new_loop(self) except -1:
        cdef fs_server *srv = NULL
        cdef int rc = fs_server_new(&srv, &self._cfg)
        if rc != 0:
            if rc == -EINVAL:
                raise ValueError("inconsistent Server options")
            raise OSError(-rc, strerror(-rc).decode("utf-8", "replace"))
        if self._srv != NULL:
            fs_server_free(self._srv)
        self._srv = srv
        return 0

    # -- public API ---------------------------------------------------------------------

    def listen(self, address=None, *, sock=None, backlog=None):
        """Bind and listen on `address` ((host, port), IPv4 or IPv6, host resolved with
        getaddrinfo, SO_REUSEADDR set; or an AF_UNIX path, never removed if it exists:
        EADDRINUSE), or adopt `sock`, a bound and listening SOCK_STREAM socket the server
        owns from then on (ValueError otherwise). Returns the bound address (port 0 gets a
        port). May be called several times, before or while serving, from any thread."""
        if (address is None) == (sock is None):
            raise TypeError("listen() takes an address or sock=, exactly one of them")
        if self._closed:
            raise RuntimeError("the server is closed")
        depth = self._options.backlog if backlog is None else _sb._count(backlog, "backlog", 0, 1 << 20)
        if self._plan is not None:
            return self._plan.add_address(address, depth) if sock is None else self._plan.add_socket(sock)
        if sock is None:
            lsock = _sb.bind_listener(address, depth, self._options.reuse_port)
        else:
            lsock = _sb.adopt_listener(sock)
        name = lsock.getsockname()
        if self._running and PyThread_get_thread_ident() != self._loop_ident:
            self._calls.put(self._add_listener, (lsock,))
        else:
            self._add_listener(lsock)
        return name

    @property
    def addresses(self):
        """The bound addresses of the open listeners."""
        if self._plan is not None:
            return self._plan.addresses
        return [s.getsockname() for s, _ in list(self._listeners)]

    def serve_forever(self):
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

    def stop(self, grace=_sb.DEFAULT_GRACE):
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

    def _stop_here(self, grace):
        """stop() of this process's loop (a worker's control thread calls it)."""
        deadline = _monotonic() + grace
        if deadline < self._stop_deadline:
            self._stop_deadline = deadline
        self._stop_requested = True
        self._calls.wake()

    def stats(self):
        """A snapshot of the counters (from any thread): connections (open now), accepted,
        closed, frames_in, frames_out, bytes_in, bytes_out, writes (send system calls),
        paused (by backpressure, now), timeouts, errors, listeners, running."""
        cdef fs_server_stats st
        if self._srv == NULL:
            raise RuntimeError("the Server is not initialized")
        fs_server_stats_get(self._srv, &st)  # race-free while the loop runs without the GIL
        listeners = len(self._plan) if self._plan is not None else len(self._listeners)
        return {
            "connections": st.connections,
            "accepted": st.accepted,
            "closed": st.closed,
            "frames_in": st.frames_in,
            "frames_out": st.frames_out,
            "bytes_in": st.bytes_in,
            "bytes_out": st.bytes_out,
            "writes": st.writes,
            "paused": st.paused,
            "timeouts": st.timeouts,
            "errors": st.errors,
            "listeners": listeners,
            "running": bool(self._running),
        }

    def call_soon_threadsafe(self, fn, *args):
        """Run fn(*args) on the loop thread at its next turn (from any thread; calls run in
        the order they were made; an exception is logged on `fastsock.server`)."""
        if not callable(fn):
            raise TypeError(f"call_soon_threadsafe() needs a callable, not {type(fn).__name__}")
        self._calls.put(fn, args)

    def close(self):
        """Abort everything at once: listeners and connections (RuntimeError while
        serve_forever runs: use stop()). Idempotent; the server cannot serve again."""
        if self._running:
            raise RuntimeError("close() cannot be called while serve_forever() runs: use stop()")
        if self._closed:
            return
        self._closed = True
        try:
            self._close_listeners()
            self._abort_connections(None)
        finally:
            if self._plan is not None:
                self._plan.close()
            self._calls.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        cdef fs_server_stats st
        if self._srv == NULL:
            return "<fastsock.Server (not initialized)>"
        fs_server_stats_get(self._srv, &st)
        if self._framing is not None:
            mode = f"framing={self._framing!r}{' batch' if self._mode == _MODE_BATCH else ''}"
        else:
            mode = "raw"
        state = "running" if self._running else ("closed" if self._closed else "idle")
        return (f"<fastsock.Server {mode} {state} connections={st.connections} "
                f"addresses={self.addresses!r}>")

    # -- listeners ----------------------------------------------------------------------

    def _add_listener(self, lsock):
        cdef int index
        if self._closed:
            lsock.close()
            return
        index = fs_server_add_listener(self._srv, lsock.fileno(), lsock.family in _TCP_FAMILIES)
        if index < 0:
            lsock.close()
            raise OSError(-index, strerror(-index).decode("utf-8", "replace"))
        self._listeners.append((lsock, index))

    cdef int _close_listeners(self) except -1:
        listeners = self._listeners
        self._listeners = []
        for lsock, index in listeners:
            fs_server_remove_listener(self._srv, index)
        for lsock, index in listeners:
            lsock.close()
        return 0

    cdef object _listener_at(self, int index):
        for lsock, i in self._listeners:
            if i == index:
                return lsock
        return None

    # -- replies ------------------------------------------------------------------------

    cdef int _raise_queue_error(self, int rc, Py_ssize_t size) except -1:
        if rc == -EPIPE:
            raise _sb.closed_error()
        if rc == -ENOBUFS:
            raise BufferError(f"queuing {size} more bytes would exceed the connection's write_limit of "
                              f"{self._cfg.write_limit} bytes")
        if rc == -EMSGSIZE:
            raise _FrameTooLarge(size, self._f.max_size)
        if rc == -EINVAL:
            if self._f.kind == FS_FRAMING_FIXED:
                raise _ServerFramingError(f"FixedLength({self._f.max_size}) payload must be {self._f.max_size} bytes, "
                                          f"not {size}")
            raise _ServerFramingError("payload contains the delimiter")
        if rc == -ENOTSUP:
            raise RuntimeError("send() frames its payload, and this server has no framing (raw mode): use write()")
        if rc == -ENOMEM:
            raise MemoryError()
        raise OSError(-rc, strerror(-rc).decode("utf-8", "replace"))

    cdef inline int _queue_reply(self, fs_conn *c, object reply) except -1:
        """Frame and queue one reply (loop thread), copied from its buffer."""
        cdef Py_buffer view
        cdef int rc
        if PyBytes_CheckExact(reply):
            rc = fs_conn_send_frame(self._srv, c, PyBytes_AS_STRING(reply), <size_t>PyBytes_GET_SIZE(reply))
            if rc:
                self._raise_queue_error(rc, PyBytes_GET_SIZE(reply))
            return 0
        if self._f.kind == FS_FRAMING_RESP:  # any reply value (bytes were a bulk string, above)
            return self._queue_encoded(c, self._resp_reply(reply))
        _get_buffer(reply, &view, "a reply")
        try:
            rc = fs_conn_send_frame(self._srv, c, view.buf, <size_t>view.len)
            if rc:
                self._raise_queue_error(rc, view.len)
        finally:
            PyBuffer_Release(&view)
        return 0

    cdef inline object _resp_reply(self, object reply):
        """A RESP server's reply value, encoded: bytes or a Reply (a bytes subclass), by
        framing.RESP.encode; a Reply as it is."""
        if type(reply) is _Reply:
            return reply
        return self._framing.encode(reply)

    cdef int _queue_encoded(self, fs_conn *c, object data) except -1:
        """Queue one reply already encoded whole (`data` bytes or a subclass: a RESP value),
        counted as a frame out."""
        cdef int rc = fs_conn_write(self._srv, c, PyBytes_AS_STRING(data), <size_t>PyBytes_GET_SIZE(data))
        if rc:
            self._raise_queue_error(rc, PyBytes_GET_SIZE(data))
        fs_server_stats_add(self._srv, FS_STAT_FRAMES_OUT, 1)
        return 0

    cdef bytes _framed_bytes(self, object payload):
        """header + payload + trailer as one bytes object (any thread: the framing is fixed)."""
        cdef Py_buffer view
        if self._f.kind == FS_FRAMING_RESP:
            return bytes(self._resp_reply(payload))
        cdef char hdr[FS_FRAME_HEADER_MAX]
        cdef size_t hlen = 0, tlen = 0
        cdef const char *trailer = fs_frame_trailer(&self._f, &tlen)
        cdef int rc
        _get_buffer(payload, &view, "a reply")
        try:
            rc = fs_frame_header(&self._f, <const char *>view.buf, <size_t>view.len, hdr, &hlen)
            if rc != 0:
                self._raise_queue_error(-EMSGSIZE if rc == -1 else -EINVAL, view.len)
            return (PyBytes_FromStringAndSize(hdr, <Py_ssize_t>hlen)
                    + PyBytes_FromStringAndSize(<const char *>view.buf, view.len)
                    + PyBytes_FromStringAndSize(trailer, <Py_ssize_t>tlen))
        finally:
            PyBuffer_Release(&view)

    # what other threads asked for, applied at the loop's turn

    def _apply_write(self, Connection conn, bytes data, int frame):
        cdef int rc
        if conn._gone():
            _LOGGER.warning("a reply sent from another thread to %r was dropped: the connection is closed", conn)
            return
        rc = fs_conn_write(self._srv, conn._live(), PyBytes_AS_STRING(data), <size_t>PyBytes_GET_SIZE(data))
        if rc == -ENOBUFS:
            _LOGGER.error("a reply sent from another thread to %r was dropped: it would exceed the connection's "
                          "write_limit of %d bytes", conn, self._cfg.write_limit)
        elif rc:
            self._raise_queue_error(rc, len(data))
        elif frame and self._mode != _MODE_RAW:
            fs_server_stats_add(self._srv, FS_STAT_FRAMES_OUT, 1)

    def _apply_close(self, Connection conn, bint abort):
        cdef fs_conn *c = conn._live()
        if c == NULL:
            return
        if abort:
            fs_conn_abort(self._srv, c)
        else:
            fs_conn_close(self._srv, c)

    def _apply_pause(self, Connection conn, bint pause):
        cdef fs_conn *c = conn._live()
        if c != NULL:
            fs_conn_pause(self._srv, c, pause)

    # -- errors and closing -------------------------------------------------------------

    cdef int _close_with(self, Connection conn, object exc) except -1:
        """Flush, then close, reporting `exc` to on_close (unless it is closing already: the
        first reason wins)."""
        if conn._gone():
            return 0
        conn._exc = exc
        fs_conn_close(self._srv, conn._c)
        return 0

    cdef int _handler_error(self, Connection conn, object exc) except -1:
        fs_server_stats_add(self._srv, FS_STAT_ERRORS, 1)
        on_error = self._on_error
        if on_error is not None:
            try:
                on_error(conn, exc)
                return 0
            except Exception as again:
                exc = again
            _sb.log_exception("on_error", conn, exc)
        else:
            _sb.log_exception("handler", conn, exc)
        self._close_with(conn, exc)
        return 0

    cdef object _close_reason(self, const fs_server_event *ev, Connection conn):
        """What on_close gets for a CLOSED event."""
        cdef int reason = ev.reason
        cdef const char *held
        cdef size_t n
        if conn._exc is not None:
            return conn._exc
        if reason == FS_CLOSE_EOF:
            if ev.size == 0:
                return None
            n = fs_conn_held(ev.conn, &held)
            return _IncompleteReadError(PyBytes_FromStringAndSize(held, <Py_ssize_t>n),
                                        ev.need if ev.need else None)
        if reason == FS_CLOSE_ERROR:
            return OSError(ev.err, strerror(ev.err).decode("utf-8", "replace"))
        if reason == FS_CLOSE_IDLE:
            return IdleTimeout(f"no byte received or sent for {self._options.idle_timeout:g} s")
        if reason == FS_CLOSE_FRAME_TIMEOUT:
            return FrameTimeout(f"a frame begun {self._options.frame_timeout:g} s ago is still incomplete "
                                f"(frame_timeout {self._options.frame_timeout:g} s)")
        if reason == FS_CLOSE_TOO_LARGE:
            return _FrameTooLarge(ev.size, self._f.max_size)
        if reason == FS_CLOSE_TOO_MANY_ARGS:
            return _server_too_many_args(ev.size, self._f.max_args)
        if reason == FS_CLOSE_BUFFER_FULL:
            return _FrameTooLarge(ev.size, self._cfg.max_buffer,
                                  f"a frame of {ev.size} bytes cannot fit the connection's max_buffer of "
                                  f"{self._cfg.max_buffer} bytes")
        if reason == FS_CLOSE_MALFORMED:
            return _ServerFramingError(f"the buffered bytes do not start a valid {type(self._framing).__name__} frame")
        if reason == FS_CLOSE_STOP_TIMEOUT:
            return TimeoutError("the server's stop grace period ended before this connection was done")
        return None  # LOCAL, ABORT, STOP, SERVER

    # -- events -------------------------------------------------------------------------

    cdef int _on_accepted(self, fs_conn *c) except -1:
        cdef Connection conn = Connection.__new__(Connection, _CONN_TOKEN)
        conn._server = self
        conn._c = c
        conn._id = fs_conn_id(c)
        Py_INCREF(conn)  # the C slot's reference, dropped when its close is reported
        fs_conn_set_user(c, <void *>conn)
        if self._accept_failed:
            self._accept_failed = False
            self._accept_errors.succeeded()
        hook = self._on_connect
        if hook is not None:
            try:
                hook(conn)
            except Exception as exc:
                _sb.log_exception("on_connect", conn, exc)
                self._close_with(conn, exc)
        return 0

    cdef int _on_closed(self, const fs_server_event *ev, object fallback) except -1:
        cdef void *user = fs_conn_user(ev.conn)
        cdef Connection conn
        if user == NULL:  # accepted in a batch that was never handled: no on_connect, no on_close
            return 0
        conn = <Connection>user
        fs_conn_set_user(ev.conn, NULL)
        try:
            exc = self._close_reason(ev, conn)
            if exc is None and fallback is not None and ev.reason == FS_CLOSE_SERVER:
                exc = fallback
            hook = self._on_close
            if hook is not None:
                try:
                    hook(conn, exc)
                except Exception as again:
                    _sb.log_exception("on_close", conn, again)
            if Py_REFCNT(conn) > 2:  # kept by the application: its addresses outlive the slot
                conn._keep_addresses()
        finally:
            conn._c = NULL
            Py_DECREF(conn)
        return 0

    cdef int _on_accept_error(self, const fs_server_event *ev) except -1:
        exc = OSError(ev.err, strerror(ev.err).decode("utf-8", "replace"))
        delay = self._accept_errors.failed(exc, self._listener_at(ev.listener))
        self._accept_failed = True  # the next accept resets the policy's count
        if ev.size == 0 or delay:  # the C loop paused accepting, or a run of transient errors
            fs_server_accept_backoff(self._srv, _ns(delay or _sb.ACCEPT_BACKOFF_MIN))
        return 0

    cdef int _deliver_frames(self, Connection conn, fs_conn *c) except -1:
        cdef const char *p
        cdef size_t n
        cdef fs_server *srv = self._srv
        handler = self._handler
        while True:  # the try is entered once per run of frames, not once per frame
            try:
                while fs_conn_next_frame(srv, c, &p, &n):
                    frame = frame_object(&self._f, p, n)
                    reply = handler(conn, frame)
                    if reply is not None:
                        self._queue_reply(c, reply)
                return 0
            except Exception as exc:
                self._handler_error(conn, exc)  # then the next frames, unless it closed

    cdef int _deliver_batch(self, Connection conn, fs_conn *c) except -1:
        cdef const char *p
        cdef size_t n
        cdef fs_server *srv = self._srv
        cdef list batch = []
        # A refused frame after the batch (too large, malformed) closes the connection only
        # once the batch's replies are queued, as per frame: its close is deferred to here.
        try:
            while fs_conn_next_frame_deferred(srv, c, &p, &n):
                batch.append(frame_object(&self._f, p, n))
            if not batch:
                fs_conn_refuse_pending(srv, c)  # a refused first frame: no handler call
                return 0
            try:
                replies = self._handler(conn, batch)
                if replies is not None:
                    if isinstance(replies, (bytes, bytearray, memoryview, str)):
                        raise TypeError("a batch handler returns None or an iterable of replies, "
                                        f"not {type(replies).__name__}")
                    for reply in replies:
                        self._queue_reply(c, reply)
            except Exception as exc:
                self._handler_error(conn, exc)
        except BaseException:  # an interrupt ends serving: on_close gets it, not the refusal
            fs_conn_refuse_cancel(c)
            raise
        fs_conn_refuse_pending(srv, c)
        return 0

    cdef int _deliver_raw(self, Connection conn, fs_conn *c) except -1:
        """handler(conn, view of every held byte) while it consumes something."""
        cdef const char *p
        cdef size_t n
        cdef Py_ssize_t used
        cdef char *block
        cdef _RawView view
        cdef fs_server *srv = self._srv
        handler = self._handler
        while fs_conn_raw_data(srv, c, &p, &n):
            view = self._view
            view.buf = p
            view.length = <Py_ssize_t>n
            view.live = True
            data = PyMemoryView_FromObject(view)
            fs_server_stats_add(srv, FS_STAT_FRAMES_IN, 1)
            error = None
            used = 0
            try:
                result = handler(conn, data)
                if type(result) is not int:
                    if isinstance(result, bool) or not hasattr(type(result), "__index__"):
                        raise TypeError("a raw-mode handler returns the number of bytes it consumed (an int), "
                                        f"not {type(result).__name__}")
                    result = result.__index__()
                if not 0 <= result <= <Py_ssize_t>n:
                    raise ValueError(f"a raw-mode handler consumed {result} bytes of the {n} it was given")
                used = result
            except Exception as exc:
                error = exc
            finally:
                if Py_REFCNT(data) > 1:  # kept by the handler: released now (dropping ours does it otherwise)
                    try:
                        data.release()
                    except BufferError:  # exported by the handler: it keeps the memory (handed over below)
                        pass
                data = None
                if view.exports:  # a slice outlived the call: that memory is the view's now
                    block = fs_conn_raw_detach(srv, c)
                    view.owned = block
                    self._view = _RawView.__new__(_RawView)
                else:  # no export left: none may see this window again (its memory is reused)
                    view.live = False
                    view.buf = NULL
                    view.length = 0
                    if Py_REFCNT(view) > 2:  # data.obj kept (ours: `view`, self._view): a new one
                        self._view = _RawView.__new__(_RawView)
            if error is not None:
                self._handler_error(conn, error)
                return 0
            fs_conn_raw_consume(srv, c, <size_t>used)
            if used == 0:
                return 0
        return 0

    cdef int _on_data(self, fs_conn *c) except -1:
        cdef void *user = fs_conn_user(c)
        if user == NULL:  # accepted in a batch an exception ended twice: never announced
            fs_conn_abort(self._srv, c)  # (its frames would be offered every turn: a spin)
            return 0
        if self._mode == _MODE_FRAMES:
            return self._deliver_frames(<Connection>user, c)
        if self._mode == _MODE_BATCH:
            return self._deliver_batch(<Connection>user, c)
        return self._deliver_raw(<Connection>user, c)

    cdef int _run_calls(self) except -1:
        for fn, args in self._calls.take():
            try:
                fn(*args)
            except Exception as exc:
                _sb.log_exception(f"call_soon_threadsafe callback {fn!r}", None, exc)
        return 0

    cdef int _turn(self, int timeout_ms) except -1:
        """One turn: C flushes, waits, reads; then the batch's handlers run here."""
        cdef int n
        cdef const fs_server_event *ev
        cdef bint calls = False, signals = False
        # A batch whose handling an exception ended (a KeyboardInterrupt in a handler or a
        # hook): its CLOSED reports come first, as the next run_once frees their slots.
        while self._ev_i < self._ev_n:
            ev = &self._evs[self._ev_i]
            self._ev_i += 1
            if ev.type == FS_EV_CLOSED:
                self._on_closed(ev, None)
            elif ev.type == FS_EV_ACCEPTED and fs_conn_user(ev.conn) == NULL:
                fs_conn_abort(self._srv, ev.conn)  # never announced: no on_connect, no on_close
        self._ev_n = 0
        with nogil:
            n = fs_server_run_once(self._srv, timeout_ms)
        if n < 0:
            raise MemoryError()
        self._evs = fs_server_events(self._srv)
        self._ev_n = n
        self._ev_i = 0
        while self._ev_i < self._ev_n:
            ev = &self._evs[self._ev_i]
            self._ev_i += 1
            if ev.type == FS_EV_DATA:
                self._on_data(ev.conn)
            elif ev.type == FS_EV_CLOSED:
                self._on_closed(ev, None)
            elif ev.type == FS_EV_ACCEPTED:
                self._on_accepted(ev.conn)
            elif ev.type == FS_EV_WATCH:
                if ev.listener == _WATCH_CALLS:
                    calls = True
                else:
                    signals = True
            elif ev.type == FS_EV_ACCEPT_ERROR:
                self._on_accept_error(ev)
        self._ev_n = 0
        if signals and self._signals is not None:
            self._signals.drain()
        if signals or fs_server_interrupted(self._srv):
            PyErr_CheckSignals()
        if calls:  # the queue's eventfd is readable until take() clears it: no call is missed
            self._run_calls()
        return 0

    cdef int _abort_connections(self, object exc) except -1:
        """Abort every connection now and report each one to on_close (with `exc` when it
        had no reason of its own). The listeners are left as they are."""
        cdef int i
        cdef const fs_server_event *ev
        cdef int n
        if self._srv == NULL:
            return 0
        # the CLOSED reports of a batch whose handling was interrupted come first
        while self._ev_i < self._ev_n:
            ev = &self._evs[self._ev_i]
            self._ev_i += 1
            if ev.type == FS_EV_CLOSED:
                self._on_closed(ev, exc)
            elif ev.type == FS_EV_ACCEPTED and fs_conn_user(ev.conn) == NULL:
                fs_conn_abort(self._srv, ev.conn)  # never announced (abort_all below does it too)
        self._ev_n = 0
        indexes = [index for _, index in self._listeners]
        for index in indexes:  # no new connection meanwhile
            fs_server_remove_listener(self._srv, index)
        try:
            fs_server_abort_all(self._srv)
            for _ in range(2):  # the flush closes what was closing; the reports follow
                n = fs_server_run_once(self._srv, 0)
                if n < 0:
                    raise MemoryError()
                self._evs = fs_server_events(self._srv)
                self._ev_n = n
                self._ev_i = 0
                while self._ev_i < self._ev_n:
                    ev = &self._evs[self._ev_i]
                    self._ev_i += 1
                    if ev.type == FS_EV_CLOSED:
                        self._on_closed(ev, exc)
                self._ev_n = 0
        finally:
            listeners = self._listeners
            self._listeners = []
            for lsock, index in listeners:
                if lsock.fileno() >= 0:
                    self._add_listener(lsock)
        return 0

    # -- the loop -----------------------------------------------------------------------

    cdef int _begin_stop(self) except -1:
        self._stopping = True
        self._close_listeners()
        self._c_deadline = self._stop_deadline
        fs_server_stop(self._srv, _ns(self._stop_deadline - _monotonic()))
        return 0

    cdef int _loop(self) except -1:
        while True:
            if self._stop_requested:
                if not self._stopping:
                    self._begin_stop()
                elif self._stop_deadline < self._c_deadline:  # stop() again, with less grace
                    self._c_deadline = self._stop_deadline
                    fs_server_stop(self._srv, _ns(self._stop_deadline - _monotonic()))
                if fs_server_stopped(self._srv):
                    return 0
            self._turn(-1)

    def _serve(self):
        # DEFAULT_GRACE as it is when the signal comes (as the pure backend and Supervisor)
        handlers = _sb.SignalHandlers(stop=lambda: self.stop(_sb.DEFAULT_GRACE), abort=lambda: self.stop(0.0))
        normal = False
        self._loop_ident = PyThread_get_thread_ident()
        try:
            fs_server_restart(self._srv)
            if fs_server_watch_fd(self._srv, _WATCH_CALLS, self._calls.fileno()) != 0:
                raise OSError("cannot watch the call queue")
            if handlers.install():
                self._signals = handlers
                fs_server_watch_fd(self._srv, _WATCH_SIGNALS, handlers.fileno())
            self._loop()
            normal = True
        except BaseException as exc:
            self._abort_connections(exc)
            raise
        finally:
            try:
                if normal:
                    self._run_calls()
            finally:
                fs_server_watch_fd(self._srv, _WATCH_SIGNALS, -1)
                fs_server_watch_fd(self._srv, _WATCH_CALLS, -1)
                self._signals = None
                handlers.restore()
                self._loop_ident = 0
                self._stopping = False
                self._stop_requested = False
                self._stop_deadline = _math.inf
                self._c_deadline = _math.inf

    # -- workers ------------------------------------------------------------------------

    def _supervise(self, plan):
        if self._stop_requested:
            self._stop_requested = False
            self._stop_deadline = _math.inf
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
            self._stop_deadline = _math.inf

    def _run_as_worker(self, listeners):
        """In a forked worker: this Server, as a plain one-process server on `listeners`,
        with a loop of its own (the epoll set made before the fork is the supervisor's)."""
        self._supervisor = None
        self._plan = None
        self._new_loop()
        for lsock in listeners:
            self._add_listener(lsock)
        self._serve()


def serve(handler, address, **options):
    """Serve `handler` on `address` until stopped: Server(handler, **options), listen(address),
    serve_forever() (the workers supervisor with workers=N), then close(). In the main
    thread, SIGINT and SIGTERM stop it gracefully."""
    _sb.serve(Server, handler, address, **options)


if not _server_sys.platform.startswith("linux"):  # the C loop is epoll's: elsewhere, the pure twin's
    from fastsock._py import server as _py_server_mod
    globals().update(Server=_py_server_mod.Server, Connection=_py_server_mod.Connection,
                     serve=_py_server_mod.serve)
