# fastsock.Stream, compiled: a buffered stream over a connected socket, with message framing.
# The buffer (src_c/fs_buffer) is filled by recv straight into its free space; frames are
# found in place by src_c/fs_frame and copied out once. The pure twin is fastsock/_py/stream.py.
#
# Uses _io.pxi (see its contract) and, as documented API, the `socket` class and
# `create_connection` of socket.pxi: Stream.from_fd and connect() make fastsock sockets. Both
# are module globals looked up when called, so socket.pxi may be included before or after.

from libc.errno cimport EBADF
from libc.string cimport memcpy, memset
from libc.stdint cimport int64_t, uint64_t
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from cpython.mem cimport PyMem_Malloc, PyMem_Calloc, PyMem_Free
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.ref cimport PyObject, Py_XDECREF
from cpython.sequence cimport PySequence_Fast, PySequence_Fast_GET_SIZE, PySequence_Fast_GET_ITEM

from fastsock._c.includes.fs_io cimport iovec
from fastsock._c.includes.fs_buffer cimport (
    fs_buffer, fs_buffer_init, fs_buffer_free, fs_buffer_len, fs_buffer_start, fs_buffer_end,
    fs_buffer_consume, fs_buffer_commit, fs_buffer_reserve, fs_buffer_append, fs_buffer_shrink,
)
from fastsock._c.includes.fs_frame cimport (
    fs_framing, fs_frame, fs_framing_check, fs_frame_scan, fs_frame_header, fs_frame_trailer,
    fs_find_any, FS_FRAME_OK, FS_FRAME_PARTIAL, FS_FRAME_TOO_LARGE, FS_FRAME_HEADER_MAX,
    FS_FRAMING_LENGTH, FS_FRAMING_VARINT, FS_FRAMING_DELIMITER, FS_FRAMING_FIXED, FS_FRAMING_ASCII,
    FS_FRAMING_NETSTRING, FS_FRAMING_RESP,
)

cdef extern from "Python.h":
    # As cpython.bytes, but with the raw references that _PyBytes_Resize needs (NULL on error).
    PyObject *_bytes_new_raw "PyBytes_FromStringAndSize"(const char *v, Py_ssize_t size) except NULL
    int _bytes_resize_raw "_PyBytes_Resize"(PyObject **b, Py_ssize_t size) except -1
    char *_bytes_raw_data "PyBytes_AS_STRING"(PyObject *b)

import socket as _stream_stdsocket

from fastsock import framing as _framing_mod
from fastsock.framing import FramingError as _FramingError, _too_many_args
from fastsock._errors import FrameTooLarge
from fastsock import _streambase

STREAM_ALL = ["Stream", "connect", *_framing_mod.__all__]

# The framings are one set of classes shared by both backends.
Framing = _framing_mod.Framing
FramingError = _framing_mod.FramingError
LengthPrefix = _framing_mod.LengthPrefix
Varint = _framing_mod.Varint
Delimiter = _framing_mod.Delimiter
FixedLength = _framing_mod.FixedLength
AsciiLength = _framing_mod.AsciiLength
Netstring = _framing_mod.Netstring
RESP = _framing_mod.RESP
DEFAULT_MAX_SIZE = _framing_mod.DEFAULT_MAX_SIZE

# fs_frame.h's kind codes must equal the framings' _kind (set_framing copies one to the other).
assert LengthPrefix._kind == FS_FRAMING_LENGTH and Varint._kind == FS_FRAMING_VARINT
assert Delimiter._kind == FS_FRAMING_DELIMITER and FixedLength._kind == FS_FRAMING_FIXED
assert AsciiLength._kind == FS_FRAMING_ASCII and Netstring._kind == FS_FRAMING_NETSTRING
assert RESP._kind == FS_FRAMING_RESP

cdef size_t COPY_MAX = _streambase.COPY_MAX
# Read-buffer memory, one rule with the pure Stream (see _streambase): a large frame's memory
# starts at max(held, min(size, GROW_FROM)) and grows as its bytes arrive.
cdef size_t GROW_FROM = _streambase.GROW_FROM
cdef object _shrink_threshold = _streambase.shrink_threshold
cdef int64_t DEADLINE_UNSET = -2  # per-call deadline not computed yet (no wait happened so far)
cdef object _BUSY = _streambase.BUSY_MESSAGE
cdef object _check_socket = _streambase.check_socket
cdef object _check_options = _streambase.check_options
cdef object _check_framing = _streambase.check_framing


cdef class Stream:
    """Stream(sock, *, framing=None, read_size=65536, max_buffer=64 MiB, write_buffer=65536)

    A buffered, framed byte stream over a connected stream socket (fastsock's or the
    standard library's; TCP over IPv4/IPv6 or AF_UNIX). Reads fill a C buffer straight from
    the socket; `read_frame`/`read_frames` cut it into messages per `framing`. Writes of
    small pieces are coalesced in a write queue and sent by `flush()` (or once `write_buffer`
    bytes are pending); large payloads go out with writev, never copied.

    The socket's timeout applies to every call as a deadline (None blocks, 0 raises
    BlockingIOError, t > 0 raises TimeoutError); on timeout, would-block, signal or error
    nothing is lost: received bytes stay buffered, unsent bytes stay queued. The Stream owns
    the socket: `close()` flushes then closes it. Using one Stream from two threads at once
    raises RuntimeError.
    """

    cdef object _sock
    cdef fs_buffer _r
    cdef fs_buffer _w
    cdef fs_framing _f
    cdef object _framing
    cdef bytes _delim          # keeps _f.delim alive
    cdef Py_ssize_t _read_size
    cdef Py_ssize_t _max_buffer
    cdef Py_ssize_t _write_buffer
    cdef size_t _shrink_at     # an emptied read buffer larger than this gives its memory back
    cdef size_t _wshrink_at    # the same for the write queue (see _streambase.shrink_threshold)
    cdef size_t _resume        # where a partial delimiter scan resumes, relative to the head
    cdef int64_t _deadline     # the current call's deadline, computed at its first wait
    cdef bint _eof
    cdef bint _busy
    cdef bint _closed
    cdef object __weakref__

    def __cinit__(self):
        fs_buffer_init(&self._r)
        fs_buffer_init(&self._w)
        memset(&self._f, 0, sizeof(fs_framing))
        self._closed = True  # until __init__ succeeds

    def __dealloc__(self):
        fs_buffer_free(&self._r)
        fs_buffer_free(&self._w)

    def __init__(self, sock, *, framing=None, read_size=_streambase.DEFAULT_READ_SIZE,
                 max_buffer=_streambase.DEFAULT_MAX_BUFFER, write_buffer=_streambase.DEFAULT_WRITE_BUFFER):
        if self._busy:
            raise RuntimeError(_BUSY)
        _check_socket(sock)
        self._read_size, self._max_buffer, self._write_buffer = _check_options(read_size, max_buffer, write_buffer)
        self._set_framing(framing)
        self._sock = sock
        self._shrink_at = <size_t>_shrink_threshold(self._read_size)
        self._wshrink_at = <size_t>_shrink_threshold(self._write_buffer)
        self._eof = False
        self._closed = False

    @classmethod
    def from_fd(cls, fd, **options):
        """A Stream over a new socket object that takes ownership of the connected stream
        socket `fd` (family and type are detected); `options` as for Stream()."""
        return cls(socket(fileno=fd), **options)

    # -- plumbing ---------------------------------------------------------------------

    cdef inline int _enter(self) except -1:
        if self._busy:
            raise RuntimeError(_BUSY)
        if self._closed:
            raise OSError(EBADF, "I/O operation on a closed Stream")
        self._busy = True
        self._deadline = DEADLINE_UNSET
        return 0

    cdef inline int64_t _get_deadline(self) except? -3:
        if self._deadline == DEADLINE_UNSET:
            self._deadline = deadline_of(self._sock)
        return self._deadline

    cdef int _set_framing(self, object framing) except -1:
        cdef fs_framing f
        _check_framing(framing)
        delim = framing_to_c(framing, &f)  # _io.pxi: one conversion for the Stream and the Server
        self._f = f
        self._delim = delim
        self._framing = framing
        self._resume = 0
        return 0

    cdef inline void _consume(self, size_t n):
        fs_buffer_consume(&self._r, n)
        self._resume = 0
        fs_buffer_shrink(&self._r, self._shrink_at)  # emptied after a huge frame: give it back

    cdef inline object _take(self, size_t n):
        """The first n buffered bytes as bytes, consumed."""
        out = PyBytes_FromStringAndSize(fs_buffer_start(&self._r), <Py_ssize_t>n)
        self._consume(n)
        return out

    cdef object _incomplete_error(self, size_t n, object expected):
        """IncompleteReadError holding the first n buffered bytes, consumed only once it
        exists: its __init__ is Python code, where a signal handler's exception could strike
        (and would lose bytes already consumed)."""
        exc = IncompleteReadError(PyBytes_FromStringAndSize(fs_buffer_start(&self._r), <Py_ssize_t>n), expected)
        self._consume(n)
        return exc

    cdef Py_ssize_t _fill(self, size_t need) except -1:
        """One recv into the buffer's free space, waiting per the deadline. The space asked
        for is read_size, or for a known frame of `need` bytes the rest of it, but at most
        max(held, GROW_FROM) more: the buffer grows as the frame's bytes arrive (the rule of
        the pure Stream). Returns the byte count, 0 at EOF."""
        cdef size_t held = fs_buffer_len(&self._r)
        cdef size_t want = <size_t>self._read_size
        cdef size_t step
        cdef long room
        cdef long n
        cdef int64_t deadline = self._get_deadline()
        if need > held + want:
            step = max(held, GROW_FROM)
            want = max(want, min(need - held, step))
        room = fs_buffer_reserve(&self._r, want, <size_t>self._max_buffer)
        if room < 0:
            raise MemoryError()
        if room == 0:
            raise FrameTooLarge(held, self._max_buffer,
                                f"the read buffer is full ({held} bytes, max_buffer={self._max_buffer})")

        n = io_recv_some(self._sock.fileno(), fs_buffer_end(&self._r), <size_t>room, 0, deadline)
        if n == 0:
            self._eof = True
            return 0
        fs_buffer_commit(&self._r, <size_t>n)
        return n

    cdef bint _fill_to(self, size_t size) except -1:
        """Read until `size` bytes are buffered; False if EOF comes first."""
        while fs_buffer_len(&self._r) < size:
            if self._eof or self._fill(size) == 0:
                return False
        return True

    cdef int _direct(self, char *dst, size_t size, size_t *got, size_t keep_from) except -1:
        """Receive dst[*got:size] straight from the socket; 0 when full, 1 at EOF. On an
        exception dst[keep_from:*got] is appended to the read buffer (whose held bytes the
        caller copied to dst[:keep_from] without consuming them), so no byte is lost."""
        cdef int64_t deadline = self._get_deadline()
        cdef int fd = self._sock.fileno()
        cdef bint lowat = use_lowat(self._sock, <Py_ssize_t>(size - got[0]))
        try:
            if io_recv_exact(fd, dst, size, 0, deadline, lowat, got):
                self._eof = True
                return 1
            return 0
        except BaseException:
            if got[0] > keep_from and fs_buffer_append(&self._r, dst + keep_from, got[0] - keep_from) != 0:
                raise MemoryError("could not keep the bytes received before the error")
            raise

    cdef int _frame_error(self, int rc, fs_frame *fr) except -1:
        if rc == FS_FRAME_TOO_LARGE and fr.over_args:
            raise _too_many_args(fr.size, self._f.max_args)
        if rc == FS_FRAME_TOO_LARGE:
            raise FrameTooLarge(fr.size, self._f.max_size)
        raise _FramingError(f"the buffered bytes do not start a valid {type(self._framing).__name__} frame")

    cdef inline int _need_framing(self) except -1:
        if self._f.kind == 0:
            raise ValueError("this Stream has no framing: pass framing=... to Stream() or set .framing")
        return 0

    cdef object _next_frame(self):
        """The next frame, reading as needed; None at a clean EOF between frames."""
        cdef fs_frame fr
        cdef int rc
        cdef size_t held
        while True:
            held = fs_buffer_len(&self._r)
            fr.resume = self._resume
            rc = fs_frame_scan(&self._f, fs_buffer_start(&self._r), held, &fr)
            if rc == FS_FRAME_OK:
                out = frame_object(&self._f, fs_buffer_start(&self._r) + fr.header, fr.payload)
                self._consume(fr.total)
                return out
            if rc != FS_FRAME_PARTIAL:
                self._frame_error(rc, &fr)
            self._resume = fr.resume
            if self._eof:
                if held == 0:
                    return None
                raise self._incomplete_error(held, fr.total if fr.total else None)
            # A big payload goes straight into its bytes object, unless more than GROW_FROM
            # of it is held already (bytes landed by interrupted calls): copying them into a
            # new result at every call made a frame trickling into a non-blocking or timeout
            # Stream quadratic, so it continues through the buffer (which grows by doubling).
            if (fr.total and fr.header + fr.payload == fr.total and fr.total - held >= <size_t>self._read_size
                    and (held <= GROW_FROM or fr.total > <size_t>self._max_buffer)):
                return self._large_frame(&fr)
            if fr.total > <size_t>self._max_buffer:
                raise FrameTooLarge(fr.total, self._max_buffer,
                                    f"a frame of {fr.total} bytes does not fit max_buffer={self._max_buffer}")
            self._fill(fr.total)

    cdef object _large_frame(self, fs_frame *fr):
        """Receive the rest of a large header-announced payload directly into the result
        (memory beyond max(held, GROW_FROM) is taken only as the payload's bytes arrive: a
        length prefix alone cannot make the Stream allocate its announced size)."""
        cdef size_t held = fs_buffer_len(&self._r)
        cdef size_t got
        out = self._receive_large(fr.header, fr.payload, &got)
        if got != fr.payload:
            partial = PyBytes_FromStringAndSize(fs_buffer_start(&self._r), <Py_ssize_t>fr.header) + out
            exc = IncompleteReadError(partial, fr.total)  # Python code: before consuming
            self._consume(held)
            raise exc
        self._consume(held)
        return out

    cdef object _receive_large(self, size_t skip, size_t size, size_t *got):
        """The held bytes after the first `skip`, then bytes straight from the socket until
        there are `size`: returns them as bytes, fewer (*got) if EOF comes first. Consumes
        nothing; on an exception _direct keeps the received bytes buffered.

        The result is received into in place: a new bytes object of max(held, min(size,
        GROW_FROM)) bytes that, while only this function holds it, grows (at least doubling,
        with _PyBytes_Resize: realloc, no copy of ours) only as the bytes arrive, so a
        complete result needs no final copy. (Should that growth fail, MemoryError, the bytes
        received into it are lost with it, as when _direct cannot keep them.)"""
        cdef size_t have = fs_buffer_len(&self._r) - skip
        cdef size_t cap = max(have, min(size, GROW_FROM))
        cdef PyObject *out = _bytes_new_raw(NULL, <Py_ssize_t>cap)  # our reference, the only one
        got[0] = have
        try:
            if have:
                memcpy(_bytes_raw_data(out), fs_buffer_start(&self._r) + skip, have)
            while True:
                if self._eof or self._direct(_bytes_raw_data(out), cap, got, have):
                    return PyBytes_FromStringAndSize(_bytes_raw_data(out), <Py_ssize_t>got[0])
                if got[0] == size:
                    return <object>out
                cap = min(size, 2 * cap)
                _bytes_resize_raw(&out, <Py_ssize_t>cap)  # on failure: out is NULL, MemoryError
        finally:
            Py_XDECREF(out)

    cdef Py_ssize_t _drain(self, list out, Py_ssize_t limit) except -1:
        """Append every complete frame already buffered (at most `limit`) to `out`; no I/O.
        Stops quietly at a malformed or oversized frame if it already has one (the next
        call raises)."""
        cdef fs_frame fr
        cdef const char *p = fs_buffer_start(&self._r)
        cdef size_t left = fs_buffer_len(&self._r)
        cdef size_t used = 0
        cdef Py_ssize_t count = 0
        cdef int rc = FS_FRAME_PARTIAL
        fr.resume = self._resume
        while count < limit:
            rc = fs_frame_scan(&self._f, p + used, left - used, &fr)
            if rc != FS_FRAME_OK:
                break
            out.append(frame_object(&self._f, p + used + fr.header, fr.payload))
            used += fr.total
            count += 1
            fr.resume = 0
        if used:
            self._consume(used)
        self._resume = fr.resume if rc == FS_FRAME_PARTIAL else 0
        return count

    cdef object _until(self, tuple delims, object limit, bint keep, bint line):
        """read_until/readline: bytes up to and including the earliest delimiter."""
        cdef Py_ssize_t n = len(delims), i
        cdef Py_ssize_t lim
        cdef size_t maxlen = 0, held, resume = 0, which = 0, end
        cdef long at
        cdef const char **ptrs = NULL
        cdef size_t *lens = NULL
        if n == 0:
            raise ValueError("read_until() needs at least one delimiter")
        lim = self._max_buffer if limit is None else size_arg(limit, "readline" if line else "read_until")
        for d in delims:
            if not isinstance(d, bytes):
                raise TypeError(f"delimiters must be bytes, not {type(d).__name__}")
            if len(d) == 0:
                raise ValueError("delimiters cannot be empty")
        ptrs = <const char **>PyMem_Malloc(n * sizeof(char *))
        lens = <size_t *>PyMem_Malloc(n * sizeof(size_t))
        if ptrs == NULL or lens == NULL:
            PyMem_Free(ptrs)
            PyMem_Free(lens)
            raise MemoryError()
        try:
            for i in range(n):
                ptrs[i] = <const char *>(<bytes>delims[i])
                lens[i] = len(<bytes>delims[i])
                if lens[i] > maxlen:
                    maxlen = lens[i]
            while True:
                held = fs_buffer_len(&self._r)
                at = fs_find_any(fs_buffer_start(&self._r), held, resume, ptrs, lens, <size_t>n, &which)
                if at >= 0:
                    if at > lim:
                        raise FrameTooLarge(at, lim)
                    end = <size_t>at + lens[which]
                    out = PyBytes_FromStringAndSize(fs_buffer_start(&self._r),
                                                    <Py_ssize_t>(end if keep else <size_t>at))
                    self._consume(end)
                    return out
                if held >= <size_t>lim + maxlen:
                    raise FrameTooLarge(held, lim, f"no delimiter within {lim} bytes")
                if self._eof:
                    if line:
                        return self._take(held)
                    raise self._incomplete_error(held, None)
                resume = held - (maxlen - 1) if held >= maxlen - 1 else 0
                self._fill(0)
        finally:
            PyMem_Free(ptrs)
            PyMem_Free(lens)

    cdef int _requeue(self, iovec *iov, size_t n, size_t sent) except -1:
        """After a failed gather send: keep exactly the unsent bytes queued, in order.
        iov[0] is the write queue itself; the other entries point outside it."""
        cdef size_t i, length
        length = iov[0].iov_len
        if sent >= length:
            fs_buffer_consume(&self._w, length)
            sent -= length
        else:
            fs_buffer_consume(&self._w, sent)
            sent = 0
        for i in range(1, n):
            length = iov[i].iov_len
            if sent >= length:
                sent -= length
                continue
            if fs_buffer_append(&self._w, <char *>iov[i].iov_base + sent, length - sent) != 0:
                raise MemoryError("could not queue the unsent bytes")
            sent = 0
        return 0

    cdef int _gather(self, iovec *iov, size_t n) except -1:
        """Send the write queue followed by iov[1:n] with gather writes. iov[0] is filled
        here. On success the queue is empty; on failure it holds every unsent byte."""
        cdef size_t queued = fs_buffer_len(&self._w)
        cdef size_t sent = 0
        iov[0].iov_base = fs_buffer_start(&self._w)
        iov[0].iov_len = queued
        try:
            io_sendv_all(self._sock.fileno(), iov, n, 0, self._get_deadline(), &sent)
        except BaseException:
            self._requeue(iov, n, sent)
            raise
        fs_buffer_consume(&self._w, queued)
        fs_buffer_shrink(&self._w, self._wshrink_at)  # emptied after a large backlog: give it back
        return 0

    cdef int _queue(self, const char *p, size_t n) except -1:
        if fs_buffer_append(&self._w, p, n) != 0:
            raise MemoryError()
        return 0

    cdef int _flush(self) except -1:
        cdef iovec iov[1]
        if fs_buffer_len(&self._w):
            self._gather(iov, 1)
        return 0

    cdef int _header(self, const char *payload, size_t size, char *out, size_t *hlen) except -1:
        cdef int rc = fs_frame_header(&self._f, payload, size, out, hlen)
        if rc == 0:
            return 0
        if rc == FS_FRAME_TOO_LARGE:
            raise FrameTooLarge(size, self._f.max_size)
        if self._f.kind == FS_FRAMING_FIXED:
            raise _FramingError(f"FixedLength({self._f.max_size}) payload must be {self._f.max_size} bytes, not {size}")
        raise _FramingError("payload contains the delimiter")

    cdef int _write_many(self, object items_obj, bint framed) except -1:
        """writelines / write_frames: queue everything if small, else one gather send."""
        cdef Py_ssize_t count, i, acquired = 0
        cdef Py_buffer *views = NULL
        cdef iovec *iov = NULL
        cdef char *staging = NULL
        cdef size_t niov = 1, pos = 0, size, hlen = 0, tlen = 0, total = 0, stage_size = 0
        cdef bint big = False
        cdef char hdr[FS_FRAME_HEADER_MAX]
        cdef const char *trailer = ""
        if isinstance(items_obj, (bytes, bytearray, memoryview, str)):
            raise TypeError(f"expected an iterable of bytes-like objects, not a single {type(items_obj).__name__}")
        if framed:
            trailer = fs_frame_trailer(&self._f, &tlen)
        seq = PySequence_Fast(items_obj, "expected an iterable of bytes-like objects")
        if seq is items_obj and type(seq) is list:
            seq = tuple(seq)  # the caller's list could change while its items export buffers
        count = PySequence_Fast_GET_SIZE(seq)
        views = <Py_buffer *>PyMem_Calloc(count if count else 1, sizeof(Py_buffer))
        if views == NULL:
            raise MemoryError()
        try:
            for i in range(count):
                PyObject_GetBuffer(<object>PySequence_Fast_GET_ITEM(seq, i), &views[i], PyBUF_SIMPLE)
                acquired += 1
                size = <size_t>views[i].len
                if framed:  # validate every payload before sending any
                    self._header(<const char *>views[i].buf, size, hdr, &hlen)
                total += hlen + size + tlen
                if size <= COPY_MAX:
                    stage_size += hlen + size + tlen
                else:
                    stage_size += hlen + tlen
                    big = True
            if not big and fs_buffer_len(&self._w) + total <= <size_t>self._write_buffer:
                for i in range(count):  # small: coalesce in the queue, no syscall
                    size = <size_t>views[i].len
                    if framed:
                        self._header(<const char *>views[i].buf, size, hdr, &hlen)
                        self._queue(hdr, hlen)
                    self._queue(<const char *>views[i].buf, size)
                    self._queue(trailer, tlen)
                return 0
            # Small frames are laid out contiguously in `staging`; big payloads are sent
            # from the caller's memory. Adjacent ranges merge into one iovec.
            staging = <char *>PyMem_Malloc(stage_size if stage_size else 1)
            iov = <iovec *>PyMem_Malloc((1 + 3 * count) * sizeof(iovec))
            if staging == NULL or iov == NULL:
                raise MemoryError()
            for i in range(count):
                size = <size_t>views[i].len
                if framed:
                    self._header(<const char *>views[i].buf, size, staging + pos, &hlen)
                    _add_iov(iov, &niov, staging + pos, hlen)
                    pos += hlen
                if size <= COPY_MAX:
                    if size:
                        memcpy(staging + pos, views[i].buf, size)
                    _add_iov(iov, &niov, staging + pos, size)
                    pos += size
                else:
                    _add_iov(iov, &niov, <char *>views[i].buf, size)
                if tlen:
                    memcpy(staging + pos, trailer, tlen)
                _add_iov(iov, &niov, staging + pos, tlen)
                pos += tlen
            self._gather(iov, niov)
            return 0
        finally:
            for i in range(acquired):
                PyBuffer_Release(&views[i])
            PyMem_Free(views)
            PyMem_Free(iov)
            PyMem_Free(staging)

    # -- reading ----------------------------------------------------------------------

    def read(self, n=-1):
        """Up to n bytes: what is buffered, else one recv (b"" at EOF). n < 0 reads to EOF
        (FrameTooLarge if more than max_buffer bytes arrive first)."""
        cdef Py_ssize_t size
        self._enter()
        try:
            if n is None or n < 0:
                while not self._eof:
                    self._fill(0)
                return self._take(fs_buffer_len(&self._r))
            size = size_arg(n, "read")
            if size == 0:
                return b""
            if fs_buffer_len(&self._r) == 0 and not self._eof:
                self._fill(0)
            return self._take(min(<size_t>size, fs_buffer_len(&self._r)))
        finally:
            self._busy = False

    def read_exactly(self, n):
        """Exactly n bytes. EOF first raises IncompleteReadError (.partial, .expected); on
        timeout or error every byte received stays buffered for the next call. Large reads
        go straight into the result; memory beyond 1 MiB is taken as bytes arrive."""
        cdef Py_ssize_t size = size_arg(n, "read_exactly")
        cdef size_t held, got
        self._enter()
        try:
            held = fs_buffer_len(&self._r)
            if held >= <size_t>size:
                return self._take(size)
            # Through the buffer when little is missing, or when much is held (see _next_frame).
            if size <= self._max_buffer and (<size_t>size - held < <size_t>self._read_size or held > GROW_FROM):
                if not self._fill_to(size):
                    raise self._incomplete_error(fs_buffer_len(&self._r), size)
                return self._take(size)
            out = self._receive_large(0, <size_t>size, &got)
            if got != <size_t>size:
                exc = IncompleteReadError(out, size)  # Python code: before consuming
                self._consume(held)
                raise exc
            self._consume(held)
            return out
        finally:
            self._busy = False

    def readinto(self, buffer):
        """Fill `buffer` with what is buffered, else one recv (straight into `buffer` when it is
        at least read_size bytes); returns the count, 0 at EOF."""
        cdef Py_buffer view
        cdef size_t k
        cdef long n
        _get_writable_view(buffer, &view, "readinto")
        try:
            self._enter()
            try:
                if view.len == 0:
                    return 0
                if fs_buffer_len(&self._r) == 0 and not self._eof:
                    if view.len >= self._read_size:
                        n = io_recv_some(self._sock.fileno(), <char *>view.buf, <size_t>view.len, 0,
                                         self._get_deadline())
                        if n == 0:
                            self._eof = True
                        return n
                    self._fill(0)
                k = min(<size_t>view.len, fs_buffer_len(&self._r))
                if k:  # an empty buffer may own no memory (NULL)
                    memcpy(view.buf, fs_buffer_start(&self._r), k)
                self._consume(k)
                return k
            finally:
                self._busy = False
        finally:
            PyBuffer_Release(&view)

    def read_exactly_into(self, buffer):
        """Fill all of `buffer` (copied once, straight from the socket for large buffers);
        returns its size. EOF first raises IncompleteReadError; on timeout or error every byte
        received stays buffered (the buffer's contents are then unspecified)."""
        cdef Py_buffer view
        cdef size_t held, got, size
        _get_writable_view(buffer, &view, "read_exactly_into")
        try:
            self._enter()
            try:
                size = <size_t>view.len
                held = fs_buffer_len(&self._r)
                if held < size and size <= <size_t>self._max_buffer and (
                        size - held < <size_t>self._read_size or held > GROW_FROM):  # see _next_frame
                    if not self._fill_to(size):
                        raise self._incomplete_error(fs_buffer_len(&self._r), size)
                    held = size
                if held >= size:
                    if size:  # an empty buffer may own no memory (NULL)
                        memcpy(view.buf, fs_buffer_start(&self._r), size)
                    self._consume(size)
                    return size
                if held:
                    memcpy(view.buf, fs_buffer_start(&self._r), held)
                got = held
                if self._eof or self._direct(<char *>view.buf, size, &got, held):
                    exc = IncompleteReadError(PyBytes_FromStringAndSize(<char *>view.buf, <Py_ssize_t>got), size)
                    self._consume(held)
                    raise exc
                self._consume(held)
                return size
            finally:
                self._busy = False
        finally:
            PyBuffer_Release(&view)

    def readline(self, limit=None):
        """One line, ending with b"\\n" (at EOF: the rest, possibly without it; b"" when
        nothing is left). More than `limit` bytes (default max_buffer) before the newline
        raise FrameTooLarge, with every byte still buffered."""
        self._enter()
        try:
            return self._until((b"\n",), limit, True, True)
        finally:
            self._busy = False

    def read_until(self, delimiter, limit=None, keep=True):
        """Bytes up to the earliest occurrence of `delimiter` (bytes, or a tuple of bytes:
        the earliest match wins, the first listed on a tie), including it unless keep=False.
        More than `limit` bytes (default max_buffer) before it raise FrameTooLarge; EOF first
        raises IncompleteReadError (.partial holds the rest)."""
        delims = delimiter if isinstance(delimiter, tuple) else (delimiter,)
        delims = tuple(bytes(d) if isinstance(d, (bytearray, memoryview)) else d for d in delims)
        self._enter()
        try:
            return self._until(delims, limit, keep, False)
        finally:
            self._busy = False

    def peek(self, n=-1):
        """Up to n buffered bytes (n < 0: all) without consuming them; reads the socket once
        only if nothing is buffered."""
        self._enter()
        try:
            if fs_buffer_len(&self._r) == 0 and not self._eof:
                self._fill(0)
            size = <Py_ssize_t>fs_buffer_len(&self._r)
            if n is not None and n >= 0:
                size = min(size, size_arg(n, "peek"))
            return PyBytes_FromStringAndSize(fs_buffer_start(&self._r), size)
        finally:
            self._busy = False

    def discard(self, n):
        """Drop up to n buffered bytes (no I/O); returns how many were dropped. Use it to
        skip past a frame refused by FrameTooLarge or FramingError."""
        cdef Py_ssize_t size = size_arg(n, "discard")
        cdef size_t k
        self._enter()
        try:
            k = min(<size_t>size, fs_buffer_len(&self._r))
            self._consume(k)
            return k
        finally:
            self._busy = False

    def read_frame(self):
        """The next frame's payload. EOFError at a clean EOF between frames;
        IncompleteReadError (.partial: the frame's bytes so far, .expected: its length if
        known) at EOF inside one; FrameTooLarge or FramingError, with the bytes left
        buffered, for a frame that is too large or malformed."""
        self._enter()
        try:
            self._need_framing()
            frame = self._next_frame()
            if frame is None:
                raise EOFError("end of stream")
            return frame
        finally:
            self._busy = False

    def read_frames(self, max_frames=None):
        """Every complete frame already buffered (at most max_frames), as a list. Reads the
        socket only when no complete frame is buffered, until one is; [] at a clean EOF."""
        cdef Py_ssize_t limit = PY_SSIZE_T_MAX
        cdef list frames = []
        if max_frames is not None:
            limit = size_arg(max_frames, "read_frames")
            if limit == 0:
                raise ValueError("max_frames must be >= 1")
        self._enter()
        try:
            self._need_framing()
            if self._drain(frames, limit) == 0:
                frame = self._next_frame()
                if frame is not None:
                    frames.append(frame)
                    if limit > 1:
                        self._drain(frames, limit - 1)
            return frames
        finally:
            self._busy = False

    def __iter__(self):
        return self

    def __next__(self):
        """The next frame; StopIteration at a clean EOF between frames."""
        self._enter()
        try:
            self._need_framing()
            frame = self._next_frame()
            if frame is None:
                raise StopIteration
            return frame
        finally:
            self._busy = False

    def at_eof(self):
        """True when the peer has closed its side and every buffered byte has been read."""
        return self._eof and fs_buffer_len(&self._r) == 0

    @property
    def buffered(self):
        """Bytes received and held in the read buffer."""
        return fs_buffer_len(&self._r)

    @property
    def pending(self):
        """Bytes queued for writing and not yet sent."""
        return fs_buffer_len(&self._w)

    @property
    def _read_capacity(self):
        """Private, for tests: the read buffer's capacity in bytes (its memory, held or free),
        to check that both backends keep the same after the same operations."""
        return self._r.cap

    @property
    def _write_capacity(self):
        """Private, for tests: the write queue's capacity in bytes (its memory, queued or
        free), to check that both backends give it back by the same rule."""
        return self._w.cap

    # -- writing ----------------------------------------------------------------------

    def write(self, data):
        """Queue `data` (coalesced with other small writes); sends once write_buffer bytes
        are pending, or at once with writev for payloads over 16 KiB (never copied). If the
        send fails (timeout, would-block, error), the unsent bytes stay queued: nothing is
        lost, nothing needs resending; call flush() to continue."""
        cdef Py_buffer view
        cdef iovec iov[2]
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            self._enter()
            try:
                if (<size_t>view.len <= COPY_MAX
                        and fs_buffer_len(&self._w) + <size_t>view.len <= <size_t>self._write_buffer):
                    self._queue(<const char *>view.buf, <size_t>view.len)
                    return None
                iov[1].iov_base = view.buf
                iov[1].iov_len = <size_t>view.len
                self._gather(iov, 2)
            finally:
                self._busy = False
        finally:
            PyBuffer_Release(&view)

    def writelines(self, lines):
        """write() every bytes-like object of `lines`, with one gather send if they do not all
        fit the write queue."""
        self._enter()
        try:
            self._write_many(lines, False)
        finally:
            self._busy = False

    def write_frame(self, payload):
        """Queue one frame carrying `payload`, encoded per the framing (header built in C).
        A large payload goes out at once with header and queue in one writev. Raises
        FrameTooLarge above the framing's max_size, FramingError for a payload it cannot
        carry; failures of the send itself keep the unsent bytes queued (see write)."""
        cdef Py_buffer view
        cdef iovec iov[4]
        cdef char hdr[FS_FRAME_HEADER_MAX]
        cdef size_t hlen, tlen, size
        cdef const char *trailer
        if self._f.kind == FS_FRAMING_RESP:  # a value, encoded as a reply (see framing.RESP)
            return self.write(self._framing.encode(payload))
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        try:
            self._enter()
            try:
                self._need_framing()
                size = <size_t>view.len
                self._header(<const char *>view.buf, size, hdr, &hlen)
                trailer = fs_frame_trailer(&self._f, &tlen)
                if size <= COPY_MAX and fs_buffer_len(&self._w) + hlen + size + tlen <= <size_t>self._write_buffer:
                    self._queue(hdr, hlen)
                    self._queue(<const char *>view.buf, size)
                    self._queue(trailer, tlen)
                    return None
                iov[1].iov_base = hdr
                iov[1].iov_len = hlen
                iov[2].iov_base = view.buf
                iov[2].iov_len = size
                iov[3].iov_base = <void *>trailer
                iov[3].iov_len = tlen
                self._gather(iov, 4)
            finally:
                self._busy = False
        finally:
            PyBuffer_Release(&view)

    def write_frames(self, payloads):
        """Queue one frame per payload; if they do not fit the write queue, send the queue and
        every frame with one gather syscall (small payloads copied together, large ones sent
        from their own memory). Every payload is validated before anything is sent."""
        if self._f.kind == FS_FRAMING_RESP:  # values, each encoded as a reply
            encode = self._framing.encode
            return self.writelines([encode(value) for value in payloads])
        self._enter()
        try:
            self._need_framing()
            self._write_many(payloads, True)
        finally:
            self._busy = False

    def flush(self):
        """Send every queued byte (the timeout is a deadline for the whole flush). On failure
        the unsent bytes stay queued; call flush() again to resume."""
        self._enter()
        try:
            self._flush()
        finally:
            self._busy = False

    def sendfile(self, file, offset=0, count=None):
        """Flush, then send `count` bytes (None: to the end) of binary `file` from `offset`,
        with os.sendfile (zero-copy) where the file has a descriptor. Returns the bytes sent;
        a failure carries `.bytes_sent`. The file position ends after the last byte sent."""
        self._enter()
        try:
            self._flush()
            return _streambase.sendfile(self._sock, file, offset, count)
        finally:
            self._busy = False

    def shutdown_write(self):
        """Flush, then half-close: the peer sees EOF, and this side can still read to EOF."""
        self._enter()
        try:
            self._flush()
            self._sock.shutdown(_stream_stdsocket.SHUT_WR)
        finally:
            self._busy = False

    def close(self):
        """Flush, then close the socket (closed even if the flush fails, whose error is then
        raised). Closing twice is harmless."""
        if self._closed:
            return
        if self._busy:
            raise RuntimeError(_BUSY)
        self._busy = True
        self._deadline = DEADLINE_UNSET
        try:
            if fs_buffer_len(&self._w) and self._sock.fileno() >= 0:
                self._flush()
        finally:
            self._closed = True
            fs_buffer_free(&self._r)
            fs_buffer_free(&self._w)
            self._busy = False
            self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # -- attributes -------------------------------------------------------------------

    @property
    def framing(self):
        """The framing used by read_frame/write_frame (settable, e.g. after a handshake)."""
        return self._framing

    @framing.setter
    def framing(self, value):
        if self._busy:
            raise RuntimeError(_BUSY)
        self._set_framing(value)

    @property
    def socket(self):
        """The wrapped socket."""
        return self._sock

    @property
    def closed(self):
        """True after close()."""
        return self._closed

    def fileno(self):
        """The socket's file descriptor (-1 once closed)."""
        return -1 if self._closed else self._sock.fileno()

    def __repr__(self):
        state = "closed" if self._closed else f"fd={self._sock.fileno()}"
        return (f"<fastsock.Stream {state} framing={self._framing!r} "
                f"buffered={fs_buffer_len(&self._r)} pending={fs_buffer_len(&self._w)}>")


cdef inline void _add_iov(iovec *iov, size_t *n, char *p, size_t length):
    """Append a range to iov[0..*n), merging it into the last entry when adjacent."""
    if length == 0:
        return
    if n[0] > 1 and <char *>iov[n[0] - 1].iov_base + iov[n[0] - 1].iov_len == p:
        iov[n[0] - 1].iov_len += length
        return
    iov[n[0]].iov_base = p
    iov[n[0]].iov_len = length
    n[0] += 1


cdef int _get_writable_view(object buffer, Py_buffer *view, str method) except -1:
    try:
        PyObject_GetBuffer(buffer, view, PyBUF_WRITABLE)
    except (TypeError, BufferError):
        # The wording of the pure twin (and of the stdlib's recv_into).
        raise TypeError(f"{method}() argument 'buffer' must be read-write bytes-like object, "
                        f"not {type(buffer).__name__}") from None
    return 0


def connect(address, *, timeout=_stream_stdsocket._GLOBAL_DEFAULT_TIMEOUT, **options):
    """Connect to `address` and return a Stream over the new socket: (host, port) for TCP
    (TCP_NODELAY set: the Stream coalesces writes itself), a path for AF_UNIX. `timeout`
    applies to connecting and stays on the socket; `options` as for Stream()."""
    return Stream(_streambase.connect_socket(socket, create_connection, address, timeout), **options)
