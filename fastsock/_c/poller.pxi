# fastsock.Poller and fastsock.Selector, compiled: epoll/poll in C (src_c/fs_poll.c), waits
# with the GIL released, result lists built here without per-event Python calls.
# The pure twin is fastsock/_py/poller.py; cold-path logic both share is fastsock/_pollbase.py.
# Self-contained: it uses nothing from _io.pxi or the other feature files.

from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from cpython.mem cimport PyMem_Realloc, PyMem_Free
from libc.limits cimport INT_MAX
from libc.math cimport ceil
from libc.string cimport memset
from libc.errno cimport EEXIST, ENOENT, ENOSYS, EINTR
from libc.stdint cimport uint32_t, int64_t
from cpython.exc cimport PyErr_CheckSignals
from cpython.number cimport PyNumber_Index

from fastsock._c.includes.fs_io cimport fs_now_ns
from fastsock._c.includes.fs_poll cimport (
    FS_POLL_READ, FS_POLL_WRITE, FS_POLL_ERROR, FS_POLL_HANGUP, FS_POLL_ALL,
    FS_POLL_EDGE, FS_POLL_ONESHOT, FS_POLL_AUTO, FS_POLL_EPOLL, FS_POLL_POLL,
    fs_poller, fs_poll_wait,
    fs_poll_available, fs_poll_init, fs_poll_close, fs_poll_add, fs_poll_mod, fs_poll_del,
    fs_poll_has, fs_poll_wait_init, fs_poll_wait_free, fs_poll_wait_prepare, fs_poll_wait_run,
    fs_poll_wait_collect, fs_poll_remaining_ms,
)

import functools as _functools
import os as _os
import selectors as _selectors

import fastsock._pollbase as _pb

cdef extern from "Python.h":
    object PyList_New(Py_ssize_t n)
    void PyList_SET_ITEM_STEAL "PyList_SET_ITEM"(object lst, Py_ssize_t i, PyObject *o)
    int PyList_SetSlice(object lst, Py_ssize_t lo, Py_ssize_t hi, PyObject *itemlist) except -1
    PyObject *PyList_GET_ITEM_BORROW "PyList_GET_ITEM"(object lst, Py_ssize_t i)

POLLER_ALL = ["Poller", "Selector", "READ", "WRITE", "ERROR", "HANGUP", "POLL_METHODS"]

READ = _pb.READ
WRITE = _pb.WRITE
ERROR = _pb.ERROR
HANGUP = _pb.HANGUP
POLL_METHODS = ("epoll", "poll") if fs_poll_available(FS_POLL_EPOLL) else ("poll",)

# The C constants must equal the shared Python ones (both backends report the same masks).
assert FS_POLL_READ == READ and FS_POLL_WRITE == WRITE
assert FS_POLL_ERROR == ERROR and FS_POLL_HANGUP == HANGUP

cdef object _SelectorKey = _pb.SelectorKey
cdef object _tuple_new = tuple.__new__
# epoll_wait / poll take an int of milliseconds: a longer wait is cut into waits of this many.
cdef int MAX_TIMEOUT_MS = _pb.MAX_TIMEOUT_MS
cdef int64_t MAX_FINITE_MS = _pb.MAX_FINITE_MS
cdef int64_t NS_PER_MS = 1000000
# Selector event requests: a nonzero subset of EVENT_READ | EVENT_WRITE (1..EVENT_BOTH).
cdef int EVENT_READ = _pb.EVENT_READ
cdef int EVENT_WRITE = _pb.EVENT_WRITE
cdef int EVENT_BOTH = EVENT_READ | EVENT_WRITE
# The fd tables (Poller's tuple cache, Selector's slots) start this big, then double.
cdef Py_ssize_t FD_TABLE_MIN = 64
# Selector event objects 1..EVENT_BOTH, indexed by the event value.
cdef tuple _EV = tuple(range(EVENT_BOTH + 1))
# Selector._pairs caches one (key, events) tuple per fd and nonzero events value.
cdef Py_ssize_t PAIRS_PER_FD = EVENT_BOTH


cdef struct _TupleCache:
    PyObject *tup  # (fd, mask), strong reference
    uint32_t mask


cdef object _os_error(int err):
    """OSError (or its errno subclass) for a positive errno."""
    return OSError(err, _os.strerror(err))


cdef inline int _fd_of(object fileobj) except -1:
    """The descriptor of an int or file object (ValueError as selectors)."""
    cdef long fd
    if type(fileobj) is int:
        fd = fileobj
        if 0 <= fd <= INT_MAX:
            return <int>fd
    return _pb.fileobj_to_fd(fileobj)


cdef inline uint32_t _poller_events(object events) except? 0xFFFFFFFF:
    if type(events) is not int:
        _pb.check_poller_events(events)  # raises TypeError / ValueError
    cdef long ev = events
    if ev < 0 or ev & ~(<long>FS_POLL_ALL):
        raise ValueError(f"Invalid events: {events!r}")
    return <uint32_t>ev


cdef inline int64_t _poller_ms(object timeout) except -2:
    """Poller.poll's timeout: None / negative block (-1); else ms rounded up."""
    if timeout is None:
        return -1
    cdef double t = timeout
    if t != t:
        raise ValueError("timeout must not be NaN")
    if t < 0:
        return -1
    t = ceil(t * 1e3)
    if t >= MAX_FINITE_MS:
        return -1
    return <int64_t>t


cdef inline int64_t _selector_ms(object timeout) except -2:
    """BaseSelector.select's timeout: None blocks, <= 0 polls, else ms rounded up."""
    if timeout is None:
        return -1
    cdef double t = timeout
    if t <= 0:
        return 0
    return _poller_ms(timeout)


cdef class Poller:
    """Poller(method=None)

    Readiness of many descriptors at once: epoll on Linux, poll elsewhere. `method`
    ("epoll" or "poll", see POLL_METHODS) forces one. Descriptors are registered by fd
    or by any object with fileno(); poll() returns [(fd, mask), ...] with mask made of
    READ, WRITE, ERROR and HANGUP. Waits release the GIL; registering, modifying or
    unregistering from another thread meanwhile is safe (with the poll method it takes
    effect at the next poll() call).
    """

    cdef fs_poller _p
    cdef fs_poll_wait _w   # reused wait buffers; lent to one wait at a time
    cdef bint _w_busy
    cdef _TupleCache *_cache
    cdef Py_ssize_t _ncache
    cdef readonly str method  # "epoll" or "poll"

    def __cinit__(self, *args, **kwargs):
        memset(&self._p, 0, sizeof(fs_poller))
        self._p.epfd = -1
        self._p.closed = 1
        fs_poll_wait_init(&self._w)
        self._w_busy = False
        self._cache = NULL
        self._ncache = 0
        self.method = None

    def __init__(self, method=None):
        cdef int m
        if not self._p.closed:
            raise RuntimeError("Poller.__init__ called twice")
        if method is None:
            m = FS_POLL_AUTO
        elif method == "epoll":
            m = FS_POLL_EPOLL
        elif method == "poll":
            m = FS_POLL_POLL
        elif isinstance(method, str):
            raise ValueError(f"unknown poll method {method!r}; this backend has {POLL_METHODS}")
        else:
            raise TypeError(f"method must be a str or None, not {type(method).__name__}")
        cdef int rc = fs_poll_init(&self._p, m)
        if rc == -ENOSYS:
            raise ValueError(f"poll method {method!r} is not available here; this backend has {POLL_METHODS}")
        if rc < 0:
            raise _os_error(-rc)
        self.method = "epoll" if self._p.method == FS_POLL_EPOLL else "poll"

    def __dealloc__(self):
        fs_poll_close(&self._p)
        if not self._w_busy:
            fs_poll_wait_free(&self._w)
        self._clear_cache()

    cdef void _clear_cache(self):
        cdef Py_ssize_t i
        cdef _TupleCache *c = self._cache
        cdef Py_ssize_t n = self._ncache
        self._cache = NULL
        self._ncache = 0
        for i in range(n):
            Py_XDECREF(c[i].tup)
        PyMem_Free(c)

    cdef int _grow_cache(self, int fd) except -1:
        cdef Py_ssize_t n = self._ncache if self._ncache else FD_TABLE_MIN
        cdef _TupleCache *c
        if fd < self._ncache:
            return 0
        while n <= fd:
            n *= 2
        c = <_TupleCache *>PyMem_Realloc(self._cache, n * sizeof(_TupleCache))
        if c == NULL:
            raise MemoryError()
        memset(c + self._ncache, 0, (n - self._ncache) * sizeof(_TupleCache))
        self._cache = c
        self._ncache = n
        return 0

    cdef inline int _check_open(self) except -1:
        if self._p.closed:
            raise _pb.closed_error("poller")
        return 0

    @property
    def closed(self):
        """True once close() was called."""
        return bool(self._p.closed)

    def register(self, fileobj, events=READ, *, edge=False, oneshot=False):
        """Watch a descriptor (fd or object with fileno()) for `events` (READ, WRITE,
        HANGUP; ERROR and full hang-ups are always reported). edge=True: edge-triggered
        (epoll; the poll method reports level-triggered). oneshot=True: report once, then
        stay silent until modify() re-arms. KeyError if already registered, OSError(EBADF)
        for a closed descriptor, ValueError for an invalid one."""
        cdef int fd = _fd_of(fileobj)
        cdef uint32_t ev = _poller_events(events)
        self._check_open()
        cdef int rc = fs_poll_add(&self._p, fd, ev, (FS_POLL_EDGE if edge else 0) | (FS_POLL_ONESHOT if oneshot else 0))
        if rc == -EEXIST:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        if rc < 0:
            raise _os_error(-rc)
        self._grow_cache(fd)

    def modify(self, fileobj, events=READ, *, edge=False, oneshot=False):
        """Change a registration's events and flags (re-arms a oneshot). KeyError if not registered."""
        cdef int fd = _fd_of(fileobj)
        cdef uint32_t ev = _poller_events(events)
        self._check_open()
        if not fs_poll_has(&self._p, fd):
            raise KeyError(f"{fileobj!r} is not registered")
        # Registered, yet the kernel may answer ENOENT (the fd was closed and reused since):
        # that is FileNotFoundError, as the pure backend's epoll.modify raises.
        cdef int rc = fs_poll_mod(&self._p, fd, ev, (FS_POLL_EDGE if edge else 0) | (FS_POLL_ONESHOT if oneshot else 0))
        if rc < 0:
            raise _os_error(-rc)

    def unregister(self, fileobj):
        """Stop watching a descriptor. KeyError if not registered. A descriptor closed while
        registered can (and should) still be unregistered by its fd number."""
        cdef int fd = _fd_of(fileobj)
        self._check_open()
        if fs_poll_del(&self._p, fd) == -ENOENT:
            raise KeyError(f"{fileobj!r} is not registered")

    def __contains__(self, fileobj):
        cdef int fd
        try:
            fd = _fd_of(fileobj)
        except ValueError:
            return False
        return bool(fs_poll_has(&self._p, fd))

    def __len__(self):
        return self._p.count

    cdef fs_poll_wait *_lend(self, fs_poll_wait *spare):
        """The wait buffers for one wait: the shared ones, or `spare` if another thread is
        waiting with them."""
        if self._w_busy:
            fs_poll_wait_init(spare)
            return spare
        self._w_busy = True
        return &self._w

    cdef void _give_back(self, fs_poll_wait *w):
        if w != &self._w:
            fs_poll_wait_free(w)
            return
        self._w_busy = False
        if self._p.closed:  # closed while we waited: close() left the buffers to us
            fs_poll_wait_free(&self._w)

    cdef int _wait(self, fs_poll_wait *w, int64_t ms, size_t max_events) except -1:
        """Wait up to ms (-1: forever) and leave the events in w; returns their count.
        EINTR: run signal handlers (which may raise), then retry with the time left (PEP 475)."""
        cdef int n
        cdef int run_ms = <int>ms if ms <= MAX_TIMEOUT_MS else MAX_TIMEOUT_MS
        cdef int64_t deadline = -1
        if ms > 0:
            deadline = fs_now_ns() + ms * NS_PER_MS
        while True:
            n = fs_poll_wait_prepare(&self._p, w, max_events)
            if n < 0:
                if self._p.closed:
                    raise _pb.closed_error("poller")
                raise _os_error(-n)
            if run_ms == 0:
                n = fs_poll_wait_run(w, 0)  # cannot block: keep the GIL
            else:
                with nogil:
                    n = fs_poll_wait_run(w, run_ms)
            if n >= 0:
                if n == 0 and run_ms == MAX_TIMEOUT_MS and deadline >= 0:
                    run_ms = fs_poll_remaining_ms(deadline)  # a wait longer than epoll can take
                    if run_ms > 0:
                        continue
                return fs_poll_wait_collect(&self._p, w, n)
            if n != -EINTR:
                raise _os_error(-n)
            PyErr_CheckSignals()
            if deadline >= 0:
                run_ms = fs_poll_remaining_ms(deadline)

    def poll(self, timeout=None, max_events=None):
        """poll(timeout=None, max_events=None) -> list of (fd, mask)

        Wait until a registered descriptor is ready. timeout in seconds, rounded up to the
        next millisecond; None or negative waits forever, 0 returns at once. At most
        max_events results (default: as many as are registered)."""
        cdef int64_t ms = _poller_ms(timeout)
        cdef size_t cap = 0
        cdef fs_poll_wait spare
        cdef fs_poll_wait *w
        cdef int i, n, fd
        cdef uint32_t mask
        cdef _TupleCache *c
        if max_events is not None:
            max_events = PyNumber_Index(max_events)
            if max_events <= 0:
                raise ValueError("max_events must be positive")
            cap = max_events
        self._check_open()
        w = self._lend(&spare)
        try:
            n = self._wait(w, ms, cap)
            result = PyList_New(n)
            for i in range(n):
                fd = w.events[i].fd
                mask = w.events[i].events
                # (fd, mask) tuples are immutable values: reuse the last one built for fd
                if fd < self._ncache and self._cache[fd].tup != NULL and self._cache[fd].mask == mask:
                    t = <object>self._cache[fd].tup
                else:
                    t = (fd, mask)
                    if fd < self._ncache:  # re-read: building t may have run arbitrary code
                        c = &self._cache[fd]
                        Py_XDECREF(c.tup)
                        Py_INCREF(t)
                        c.tup = <PyObject *>t
                        c.mask = mask
                Py_INCREF(t)
                PyList_SET_ITEM_STEAL(result, i, <PyObject *>t)
            return result
        finally:
            self._give_back(w)

    def close(self):
        """Release the epoll descriptor and buffers. Idempotent; later calls raise ValueError."""
        if self._p.closed:
            return
        cdef int rc = fs_poll_close(&self._p)
        if not self._w_busy:
            fs_poll_wait_free(&self._w)
        self._clear_cache()
        if rc < 0:
            raise _os_error(-rc)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        state = "closed" if self._p.closed else f"{self._p.count} registered"
        return f"<fastsock.Poller method={self.method!r} {state}>"


cdef class _SelectorCore:
    """The compiled part of Selector: the fd -> key table and the hot methods."""

    cdef Poller _poller
    cdef dict _fd_to_key
    cdef object _map
    # fd-indexed tables for select(). Python lists, so the cycle collector sees the keys
    # (asyncio's key data reaches back to the loop and this selector).
    cdef list _keys   # fd -> SelectorKey or None
    cdef list _pairs  # PAIRS_PER_FD * fd + events - 1 -> cached (key, events) tuple or None
    cdef int *_events  # fd -> key.events (0: not registered)
    cdef Py_ssize_t _nslots

    def __cinit__(self, *args, **kwargs):
        self._keys = []
        self._pairs = []
        self._events = NULL
        self._nslots = 0
        self._fd_to_key = {}
        self._map = None

    def __init__(self, method=None):
        self._poller = Poller(method)
        self._map = _pb.SelectorMapping(self._fd_to_key, _functools.partial(_pb.fileobj_lookup, self._fd_to_key))

    def __dealloc__(self):
        PyMem_Free(self._events)

    cdef void _clear_slots(self):
        self._nslots = 0
        self._keys = []
        self._pairs = []

    cdef int _set_slot(self, int fd, object key, int events) except -1:
        cdef Py_ssize_t n, i
        cdef int *e
        if fd >= self._nslots:
            n = self._nslots if self._nslots else FD_TABLE_MIN
            while n <= fd:
                n *= 2
            e = <int *>PyMem_Realloc(self._events, n * sizeof(int))
            if e == NULL:
                raise MemoryError()
            memset(e + self._nslots, 0, (n - self._nslots) * sizeof(int))
            self._events = e
            self._keys.extend([None] * (n - len(self._keys)))
            self._pairs.extend([None] * (PAIRS_PER_FD * n - len(self._pairs)))
            self._nslots = n
        self._keys[fd] = key
        for i in range(PAIRS_PER_FD * fd, PAIRS_PER_FD * (fd + 1)):
            self._pairs[i] = None
        self._events[fd] = events if key is not None else 0
        return 0

    cdef inline int _lookup(self, object fileobj) except -1:
        """selectors' _fileobj_lookup, with a fast path for ints."""
        cdef long fd
        if type(fileobj) is int:
            fd = fileobj
            if 0 <= fd <= INT_MAX:
                return <int>fd
        return _pb.fileobj_lookup(self._fd_to_key, fileobj)

    def _fileobj_lookup(self, fileobj):
        return self._lookup(fileobj)

    cdef int _forget(self, int fd) except -1:
        """Drop fd from the poller and the tables (errors from a closed fd ignored)."""
        self._fd_to_key.pop(fd, None)
        fs_poll_del(&self._poller._p, fd)
        if fd < self._nslots:
            self._set_slot(fd, None, 0)
        return 0

    def register(self, fileobj, events, data=None):
        """Register a file object for EVENT_READ and/or EVENT_WRITE; returns its SelectorKey."""
        if (not events) or (events & ~EVENT_BOTH):
            raise ValueError(f"Invalid events: {events!r}")
        cdef int fd = self._lookup(fileobj)
        if fd in self._fd_to_key:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        if self._poller is None or self._poller._p.closed:
            raise _pb.closed_error("selector")
        cdef int ev = events
        key = _tuple_new(_SelectorKey, (fileobj, fd, events, data))
        cdef uint32_t request = (FS_POLL_READ if ev & EVENT_READ else 0) | (FS_POLL_WRITE if ev & EVENT_WRITE else 0)
        cdef int rc = fs_poll_add(&self._poller._p, fd, request, 0)
        if rc < 0:
            if rc == -EEXIST:  # registered in C but not here: cannot happen, but stay consistent
                fs_poll_del(&self._poller._p, fd)
            raise _os_error(-rc)
        self._set_slot(fd, key, ev)
        self._fd_to_key[fd] = key
        return key

    def unregister(self, fileobj):
        """Unregister a file object (even one closed since); returns its SelectorKey."""
        cdef int fd = self._lookup(fileobj)
        key = self._fd_to_key.get(fd)
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        self._forget(fd)
        return key

    def modify(self, fileobj, events, data=None):
        """Change the events and/or data of a registered file object; returns the new key."""
        cdef int fd = self._lookup(fileobj)
        key = self._fd_to_key.get(fd)
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        cdef bint changed = False
        cdef int ev
        cdef int rc
        if events != key.events:
            if (not events) or (events & ~EVENT_BOTH):
                raise ValueError(f"Invalid events: {events!r}")
            ev = events
            rc = fs_poll_mod(&self._poller._p, fd,
                             (FS_POLL_READ if ev & EVENT_READ else 0) | (FS_POLL_WRITE if ev & EVENT_WRITE else 0), 0)
            if rc < 0:
                self._forget(fd)  # as selectors (bpo-30014): a failed modify unregisters
                if self._poller._p.closed:
                    raise _pb.closed_error("selector")
                raise _os_error(-rc)
            changed = True
        if data != key.data:
            changed = True
        if changed:
            key = _tuple_new(_SelectorKey, (key[0], fd, events, data))
            self._set_slot(fd, key, events)
            self._fd_to_key[fd] = key
        return key

    def select(self, timeout=None):
        """select(timeout=None) -> list of (SelectorKey, events)

        Wait until some registered file objects are ready or the timeout expires: None
        waits forever, <= 0 polls, else seconds rounded up to the next millisecond.
        Signals run their handlers and the wait resumes (PEP 475)."""
        cdef int64_t ms = _selector_ms(timeout)
        cdef Poller poller = self._poller
        cdef fs_poll_wait spare
        cdef fs_poll_wait *w
        cdef int i, j, n, fd, ev
        cdef uint32_t mask
        cdef PyObject *k
        cdef PyObject *t
        cdef PyObject *none = <PyObject *>None
        if poller is None or poller._p.closed:
            raise _pb.closed_error("selector")
        w = poller._lend(&spare)
        try:
            n = poller._wait(w, ms, 0)
            result = PyList_New(n)
            j = 0
            for i in range(n):
                fd = w.events[i].fd
                if fd >= self._nslots:  # (re-read each time: building a tuple may run code)
                    continue
                ev = self._events[fd]
                if ev == 0:
                    continue
                mask = w.events[i].events
                # as selectors.EpollSelector: errors and hang-ups wake readers and writers
                if not mask & (FS_POLL_ERROR | FS_POLL_HANGUP):
                    ev &= (EVENT_READ if mask & FS_POLL_READ else 0) | (EVENT_WRITE if mask & FS_POLL_WRITE else 0)
                    if ev == 0:
                        continue
                t = PyList_GET_ITEM_BORROW(self._pairs, PAIRS_PER_FD * fd + ev - 1)
                if t == none:
                    # (key, events) is immutable: build it once per key and events value
                    k = PyList_GET_ITEM_BORROW(self._keys, fd)
                    pair = (<object>k, _EV[ev])
                    if fd < self._nslots and PyList_GET_ITEM_BORROW(self._keys, fd) == k:
                        self._pairs[PAIRS_PER_FD * fd + ev - 1] = pair
                    t = <PyObject *>pair
                Py_INCREF(<object>t)
                PyList_SET_ITEM_STEAL(result, j, t)
                j += 1
            if j < n:
                PyList_SetSlice(result, j, n, NULL)
            return result
        finally:
            poller._give_back(w)

    def get_key(self, fileobj):
        """The SelectorKey of a registered file object (KeyError if not; RuntimeError once closed)."""
        if self._map is None:
            raise RuntimeError("Selector is closed")
        key = self._fd_to_key.get(self._lookup(fileobj))
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        return key

    def get_map(self):
        """A read-only mapping of file objects to keys (None once closed)."""
        return self._map

    def close(self):
        """Unregister everything and release the poller."""
        self._fd_to_key.clear()
        self._map = None
        self._clear_slots()
        if self._poller is not None:
            self._poller.close()

    @property
    def method(self):
        """The poll method in use: "epoll" or "poll"."""
        return self._poller.method


class Selector(_SelectorCore, _selectors.BaseSelector):
    """Selector(method=None)

    A selectors.BaseSelector on fastsock's Poller (epoll on Linux, poll elsewhere, or the
    `method` given): a drop-in for selectors.DefaultSelector, and for asyncio:
    asyncio.SelectorEventLoop(fastsock.Selector()). Returns selectors.SelectorKey objects.
    """
