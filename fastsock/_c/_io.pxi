# Contract: the fs_io conventions (deadlines, error codes, PEP 475 retries, progress on
# exceptions) and every helper that two feature .pxi files share live here, and only here; a
# feature file (socket.pxi, stream.pxi, poller.pxi) uses the names defined below and its own.
#
# Defined here: deadline_of, io_error, raise_ebadf, after_eintr, attach, size_arg, use_lowat,
# framing_to_c (a framing object as src_c's fs_framing: the Stream's and the Server's),
# frame_object (what a reader of a frame gets: its payload bytes, or a RESP command's
# argument list), IncompleteReadError, and the PEP 475 loops around src_c/fs_io, one per call shape (the GIL
# released; -EINTR runs the signal handlers, which may raise, then the call resumes where it
# stopped): io_recv_some, io_recv_exact, io_send_all, io_sendv_all.

from libc.errno cimport EINTR, EBADF
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memset, strerror
from cpython.exc cimport PyErr_CheckSignals
from cpython.number cimport PyIndex_Check
from cpython.pyport cimport PY_SSIZE_T_MAX

from fastsock._c.includes.fs_io cimport (
    iovec, FS_BLOCK, FS_ERR_TIMEOUT, FS_ERR_EOF, fs_deadline_from_timeout,
    fs_send_all, fs_sendv_all, fs_recv_exact, fs_recv_some,
)
from cpython.bytes cimport PyBytes_FromStringAndSize as _io_bytes
from fastsock._c.includes.fs_frame cimport (
    fs_framing, fs_framing_check, FS_FRAMING_LENGTH, FS_FRAMING_DELIMITER, FS_FRAMING_ASCII,
    FS_FRAMING_RESP, fs_resp_args, fs_resp_args_begin, fs_resp_args_next,
)

import operator as _operator
import socket as _io_stdsocket

from fastsock._errors import IncompleteReadError, SocketTimeout as _SocketTimeoutType
from fastsock._socketbase import LOWAT_MIN as _LOWAT_MIN_PY

cdef extern from "sys/socket.h":
    const int AF_INET
    const int AF_INET6
    const int SOCK_STREAM

# socket.timeout, which is TimeoutError on 3.10+ (and also a TimeoutError on 3.9).
cdef object _SocketTimeout = _SocketTimeoutType
cdef Py_ssize_t LOWAT_MIN = _LOWAT_MIN_PY
# The raw int members of _socket.socket: socket.socket.family/type are Python properties
# that build enums, far slower than reading the C struct field.
cdef object _RAW_FAMILY = _io_stdsocket.SocketType.__dict__["family"]
cdef object _RAW_TYPE = _io_stdsocket.SocketType.__dict__["type"]


cdef inline int64_t deadline_of(object sock) except? -2:
    """The socket's timeout as a deadline for one whole call (FS_BLOCK / FS_NONBLOCK / ns)."""
    cdef object timeout = sock.gettimeout()
    if timeout is None:
        return FS_BLOCK
    return fs_deadline_from_timeout(<double>timeout)


cdef object io_error(int code):
    """The exception for a negative fs_io code other than FS_ERR_EOF and -EINTR."""
    if code == FS_ERR_TIMEOUT:
        return _SocketTimeout("timed out")
    return OSError(-code, strerror(-code).decode("utf-8", "replace"))


cdef int raise_ebadf() except -1:
    """A closed socket (fileno() == -1): the stdlib's OSError(EBADF)."""
    raise OSError(EBADF, strerror(EBADF).decode("utf-8", "replace"))


cdef inline int after_eintr() except -1:
    """Run Python signal handlers (may raise, e.g. KeyboardInterrupt); the caller then retries."""
    return PyErr_CheckSignals()


cdef inline void attach(object exc, str name, object value):
    """Record partial progress on an exception (silently skipped if it takes no attributes)."""
    try:
        setattr(exc, name, value)
    except AttributeError:
        pass


cdef inline Py_ssize_t size_arg(object n, str method) except -1:
    """Validate a byte count like the stdlib's recv: TypeError, ValueError, OverflowError."""
    if not PyIndex_Check(n):
        raise TypeError(f"'{type(n).__name__}' object cannot be interpreted as an integer")
    n = _operator.index(n)
    if n < 0:
        raise ValueError(f"negative buffersize in {method}")
    if n > PY_SSIZE_T_MAX:
        raise OverflowError("Python int too large to convert to C ssize_t")
    return <Py_ssize_t>n


cdef object framing_to_c(object framing, fs_framing *f):
    """Fill *f from a fastsock.framing object (None: all zero, no framing). Returns the bytes
    object f.delim points into, which the caller keeps alive as long as *f is used (None when
    there is no delimiter). ValueError if src_c finds the fields inconsistent."""
    memset(f, 0, sizeof(fs_framing))
    delim = None
    if framing is None:
        return None
    f.kind = framing._kind
    f.max_size = <uint64_t>framing.max_size
    if f.kind == FS_FRAMING_LENGTH:
        f.width = framing.size
        f.little = framing.byteorder == "little"
    elif f.kind == FS_FRAMING_ASCII:
        f.width = framing.width
    elif f.kind == FS_FRAMING_DELIMITER:
        delim = bytes(framing.delimiter)
        f.delim = <const char *>delim
        f.delim_len = len(delim)
        f.keep = framing.keep
    elif f.kind == FS_FRAMING_RESP:
        f.max_args = <uint64_t>framing.max_args
    if fs_framing_check(f) != 0:
        raise ValueError(f"inconsistent framing {framing!r}")
    return delim


cdef list resp_args(const char *p, size_t n):
    """The arguments of the RESP command p[0 .. n), which fs_frame_scan accepted whole."""
    cdef fs_resp_args it
    cdef const char *arg
    cdef size_t alen
    cdef int rc
    cdef list out = []
    if fs_resp_args_begin(&it, p, n) < 0:
        raise SystemError("src_c accepted a RESP command that its argument reader refuses")
    while True:
        rc = fs_resp_args_next(&it, &arg, &alen)
        if rc == 0:
            return out
        if rc < 0:
            raise SystemError("src_c accepted a RESP command that its argument reader refuses")
        out.append(_io_bytes(arg, <Py_ssize_t>alen))


cdef inline object frame_object(const fs_framing *f, const char *p, size_t n):
    """What a frame's reader gets for the payload p[0 .. n): bytes, or (RESP) the argument list."""
    if f.kind == FS_FRAMING_RESP:
        return resp_args(p, n)
    return _io_bytes(p, <Py_ssize_t>n)


cdef inline bint use_lowat(object sock, Py_ssize_t size):
    """SO_RCVLOWAT pays off for large reads on TCP only (poll readiness honours it there)."""
    if size < LOWAT_MIN:
        return False
    family = _RAW_FAMILY.__get__(sock)
    return (family == AF_INET or family == AF_INET6) and _RAW_TYPE.__get__(sock) == SOCK_STREAM


# -- the PEP 475 loops: one per shape of fs_io call ----------------------------------------

cdef inline long io_recv_some(int fd, char *buf, size_t size, int flags, int64_t deadline) except -1:
    """fs_recv_some: one recv of at most `size` bytes into buf. Returns the count, 0 at EOF."""
    cdef long n
    while True:
        with nogil:
            n = fs_recv_some(fd, buf, size, flags, deadline)
        if n >= 0:
            return n
        if n != -EINTR:
            raise io_error(<int>n)
        after_eintr()


cdef int io_recv_exact(int fd, char *buf, size_t size, int flags, int64_t deadline, bint lowat,
                       size_t *got) except -1:
    """fs_recv_exact: fill buf[*got:size]. Returns 0 when full, 1 at EOF first; raises on
    other errors. *got is current on every exit, so callers can report partial progress."""
    cdef int rc
    while True:
        with nogil:
            rc = fs_recv_exact(fd, buf, size, flags, deadline, lowat, got)
        if rc == 0:
            return 0
        if rc == FS_ERR_EOF:
            return 1
        if rc != -EINTR:
            raise io_error(rc)
        after_eintr()


cdef int io_send_all(int fd, const char *buf, size_t size, int flags, int64_t deadline,
                     size_t *sent) except -1:
    """fs_send_all: send buf[*sent:size]. Returns 0 once all is sent; raises otherwise, with
    *sent current."""
    cdef int rc
    while True:
        with nogil:
            rc = fs_send_all(fd, buf, size, flags, deadline, sent)
        if rc == 0:
            return 0
        if rc != -EINTR:
            raise io_error(rc)
        after_eintr()


cdef inline int io_sendv_all(int fd, iovec *iov, size_t iovcnt, int flags, int64_t deadline,
                             size_t *sent) except -1:
    """fs_sendv_all: gather-send iov[0..iovcnt) from offset *sent. Returns 0 once all is
    sent; raises otherwise, with *sent current."""
    cdef int rc
    while True:
        with nogil:
            rc = fs_sendv_all(fd, iov, iovcnt, flags, deadline, sent)
        if rc == 0:
            return 0
        if rc != -EINTR:
            raise io_error(rc)
        after_eintr()
