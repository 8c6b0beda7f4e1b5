# Shared by every feature .pxi: timeouts as deadlines, fs_io error codes as Python
# exceptions, and the signal check that PEP 475 asks for after EINTR.

from libc.errno cimport EINTR, EAGAIN, EBADF
from libc.stdint cimport int64_t
from libc.string cimport strerror
from cpython.exc cimport PyErr_CheckSignals

from fastsock._c.includes.fs_io cimport (
    FS_BLOCK, FS_NONBLOCK, FS_ERR_TIMEOUT, FS_ERR_EOF, fs_now_ns,
    fs_deadline_from_timeout,
)

import socket as _stdsocket

from fastsock._errors import IncompleteReadError, FrameTooLarge

cdef object _SocketTimeout = _stdsocket.timeout  # TimeoutError on 3.10+


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
