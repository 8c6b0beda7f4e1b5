# fastsock.socket, compiled: the stdlib socket subclass whose send/recv loops run in C
# (src_c/fs_io.c) with the GIL released. The pure twin is fastsock/_py/socket.py.
# Uses _io.pxi (see its contract) and nothing from the other feature files.

from libc.stdint cimport int64_t
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_Resize
from cpython.mem cimport PyMem_Malloc, PyMem_Calloc, PyMem_Free
from cpython.ref cimport PyObject
from cpython.sequence cimport PySequence_Fast, PySequence_Fast_GET_SIZE, PySequence_Fast_ITEMS

from fastsock._c.includes.fs_io cimport iovec, FS_NONBLOCK

from fastsock._socketbase import (
    SocketBase as _SocketBase, factories_for as _factories_for, EAGER_ALLOC_LIMIT as _EAGER_ALLOC_LIMIT_PY,
)

cdef extern from "sys/socket.h":
    const int MSG_PEEK
    const int MSG_DONTWAIT

SOCKET_ALL = [
    "socket",
    "SocketType",
    "create_connection",
    "create_server",
    "socketpair",
    "fromfd",
    "wrap",
]

cdef Py_ssize_t EAGER_ALLOC_LIMIT = _EAGER_ALLOC_LIMIT_PY


cdef inline int64_t _call_deadline(object sock, int flags, bint reading) except? -2:
    """The deadline of one call: MSG_DONTWAIT makes this call non-blocking (as with the
    stdlib); MSG_PEEK cannot make progress in a loop and is refused for exact reads."""
    if reading and flags & MSG_PEEK:
        raise ValueError("MSG_PEEK cannot be used with an exact read: every retry would peek the same bytes")
    if flags & MSG_DONTWAIT:
        return FS_NONBLOCK
    return deadline_of(sock)


class socket(_SocketBase):
    """A `socket.socket` whose send/recv loops run in C with the GIL released.

    Everything the standard socket does works unchanged; `sendall` is accelerated and
    `sendall_many`, `recv_exactly` and `recv_into_exactly` are added. Operations that stop
    part-way say how far they got (`.bytes_sent`, `.bytes_received`, `.partial`).
    """

    __slots__ = ()

    def sendall(self, data, flags=0):
        """Send every byte of `data` (any C-contiguous buffer, never copied). The timeout is a
        deadline for the whole call; on failure the exception's `.bytes_sent` says how much
        went out. Never raises SIGPIPE: a closed peer gives BrokenPipeError."""
        cdef Py_buffer view
        cdef int cflags = flags
        cdef int64_t deadline
        cdef size_t sent = 0
        cdef int fd
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            deadline = _call_deadline(self, cflags, False)
            fd = self.fileno()
            if fd < 0:
                raise_ebadf()
            io_send_all(fd, <const char *>view.buf, <size_t>view.len, cflags, deadline, &sent)
        except BaseException as exc:
            attach(exc, "bytes_sent", sent)
            if isinstance(exc, BlockingIOError):
                exc.characters_written = sent
            raise
        finally:
            PyBuffer_Release(&view)

    def sendall_many(self, buffers, flags=0):
        """Send every buffer of `buffers` in order with gather writes (sendmsg, IOV_MAX
        buffers per call), never joining them; returns the byte count. The timeout is a
        deadline for the whole call; on failure `.bytes_sent` says how much went out."""
        cdef int cflags = flags
        cdef Py_ssize_t count, i, acquired = 0
        cdef Py_buffer *views = NULL
        cdef iovec *iov = NULL
        cdef PyObject **items
        cdef size_t sent = 0, total = 0
        cdef int64_t deadline
        cdef int fd
        if isinstance(buffers, (bytes, bytearray, memoryview, str)):
            raise TypeError("sendall_many() takes an iterable of bytes-like objects, not a single "
                            f"{type(buffers).__name__}")
        seq = PySequence_Fast(buffers, "sendall_many() argument must be an iterable of bytes-like objects")
        if type(seq) is list:
            # Our own immutable copy: a finalizer run during PyObject_GetBuffer could
            # otherwise resize the caller's list under the item pointer held below.
            seq = tuple(seq)
        count = PySequence_Fast_GET_SIZE(seq)
        items = PySequence_Fast_ITEMS(seq)
        views = <Py_buffer *>PyMem_Calloc(count if count else 1, sizeof(Py_buffer))
        iov = <iovec *>PyMem_Malloc((count if count else 1) * sizeof(iovec))
        if views == NULL or iov == NULL:
            PyMem_Free(views)
            PyMem_Free(iov)
            raise MemoryError()
        try:
            for i in range(count):
                PyObject_GetBuffer(<object>items[i], &views[i], PyBUF_SIMPLE)
                acquired += 1
                iov[i].iov_base = views[i].buf
                iov[i].iov_len = <size_t>views[i].len
                total += <size_t>views[i].len
            deadline = _call_deadline(self, cflags, False)
            fd = self.fileno()
            if fd < 0:
                raise_ebadf()
            io_sendv_all(fd, iov, <size_t>count, cflags, deadline, &sent)
            return sent
        except BaseException as exc:
            attach(exc, "bytes_sent", sent)
            if isinstance(exc, BlockingIOError):
                exc.characters_written = sent
            raise
        finally:
            for i in range(acquired):
                PyBuffer_Release(&views[i])
            PyMem_Free(views)
            PyMem_Free(iov)

    def recv_into_exactly(self, buffer, nbytes=0, flags=0):
        """Fill `buffer` (or its first `nbytes`) completely; returns the count. Allocates
        nothing. EOF first raises IncompleteReadError (`.partial`, `.expected`); other
        failures carry `.bytes_received` (those bytes are already in `buffer`)."""
        cdef Py_buffer view
        cdef Py_ssize_t size
        cdef int cflags
        cdef size_t got = 0
        cdef int64_t deadline
        try:
            PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
        except (TypeError, BufferError):
            raise TypeError("recv_into_exactly() argument 'buffer' must be read-write bytes-like "
                            f"object, not {type(buffer).__name__}") from None
        try:
            size = size_arg(nbytes, "recv_into_exactly")
            cflags = flags
            if size == 0:
                size = view.len
            elif size > view.len:
                raise ValueError("buffer too small for requested bytes")
            deadline = _call_deadline(self, cflags, True)
            if size == 0:
                if self.fileno() < 0:
                    raise_ebadf()
                return 0
            if io_recv_exact(self.fileno(), <char *>view.buf, <size_t>size, cflags, deadline,
                             use_lowat(self, size), &got):
                raise IncompleteReadError(PyBytes_FromStringAndSize(<char *>view.buf, <Py_ssize_t>got), size)
            return size
        except IncompleteReadError:
            raise
        except BaseException as exc:
            attach(exc, "bytes_received", got)
            raise
        finally:
            PyBuffer_Release(&view)

    def recv_exactly(self, n, flags=0):
        """Receive exactly `n` bytes into one bytes object filled in place. EOF first raises
        IncompleteReadError (`.partial`); other failures carry `.bytes_received` and
        `.partial`, so no byte is lost. Beyond 16 MiB, memory is taken only as bytes arrive."""
        cdef Py_ssize_t size = size_arg(n, "recv_exactly")
        cdef int cflags = flags
        cdef int64_t deadline = _call_deadline(self, cflags, True)
        cdef size_t got = 0
        cdef bint lowat = use_lowat(self, size)
        if size == 0:
            if self.fileno() < 0:
                raise_ebadf()
            return b""
        if size <= EAGER_ALLOC_LIMIT:
            result = PyBytes_FromStringAndSize(NULL, size)
            try:
                if io_recv_exact(self.fileno(), PyBytes_AS_STRING(result), <size_t>size, cflags, deadline,
                                 lowat, &got):
                    raise IncompleteReadError(result[:got], size)
            except IncompleteReadError:
                raise
            except BaseException as exc:
                attach(exc, "bytes_received", got)
                attach(exc, "partial", result[:got])
                raise
            return result
        # Large: a bytearray grown geometrically as data arrives, then one copy out.
        grown = bytearray(EAGER_ALLOC_LIMIT)
        try:
            while True:
                if io_recv_exact(self.fileno(), PyByteArray_AS_STRING(grown), <size_t>len(grown), cflags,
                                 deadline, lowat, &got):
                    raise IncompleteReadError(bytes(grown[:got]), size)
                if <Py_ssize_t>got == size:
                    return bytes(grown)
                PyByteArray_Resize(grown, min(size, 2 * len(grown)))
        except IncompleteReadError:
            raise
        except BaseException as exc:
            attach(exc, "bytes_received", got)
            attach(exc, "partial", bytes(grown[:got]))
            raise


SocketType = socket

create_connection, create_server, socketpair, fromfd, wrap = _factories_for(socket)
