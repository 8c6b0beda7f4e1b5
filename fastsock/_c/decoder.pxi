# fastsock.FrameDecoder and FrameEncoder, compiled: the Stream's read buffer (src_c/fs_buffer)
# and frame scanner (src_c/fs_frame) without a socket, and its frame encoding for a
# transport's writelines(). The pure twin is fastsock/_py/decoder.py; the shared cold path
# (argument checks, error messages, constants) is fastsock/_decoderbase.py.
#
# Uses _io.pxi (framing_to_c, frame_object, size_arg, IncompleteReadError) and its own names.
#
# Memory safety of get_buffer(). The decoder itself exports the memoryview that get_buffer()
# returns (its __getbuffer__ answers only inside get_buffer), so every export is counted:
# _exports counts the live exports of the current memory (_r.data), and each export's
# `internal` records the memory it points into. While any export of the current memory
# lives, that memory is never realloc'ed or freed: growth copies the held bytes into new
# memory and the old block is retired (_old: blocks with their export counts), freed when
# its last export is released; an emptied buffer that gives its memory back retires it the
# same way. asyncio's selector transport still holds the view while it calls
# buffer_updated(), and sslproto across the next get_buffer(): a view kept for ever and
# written to after the decoder moved on never reaches freed memory (it may still reach the
# decoder's current memory if no growth retired it: writing into a view after its
# buffer_updated() is the caller's bug, never a memory error).
#
# Re-entrancy: building a frame (RESP argument lists are GC objects) can run a finalizer on
# CPython < 3.12; one that used this decoder would move memory under the scan loop, so
# every method that moves or changes what the loop reads refuses while a loop runs (_busy).

from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy, memset
from libc.stdint cimport uint64_t
from cpython.buffer cimport (
    PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE, PyBUF_FORMAT, PyBUF_ND,
    PyBUF_STRIDES,
)
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Malloc, PyMem_Calloc, PyMem_Realloc, PyMem_Free
from cpython.ref cimport PyObject
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.sequence cimport PySequence_Fast, PySequence_Fast_GET_SIZE, PySequence_Fast_GET_ITEM

from fastsock._c.includes.fs_buffer cimport (
    fs_buffer, fs_buffer_init, fs_buffer_free, fs_buffer_len, fs_buffer_start, fs_buffer_end,
    fs_buffer_consume, fs_buffer_commit, fs_buffer_reserve,
)
from fastsock._c.includes.fs_frame cimport (
    fs_framing, fs_frame, fs_frame_scan, fs_frame_header, fs_frame_trailer, fs_find_any,
    FS_FRAME_OK, FS_FRAME_PARTIAL, FS_FRAME_TOO_LARGE, FS_FRAME_HEADER_MAX, FS_FRAMING_FIXED,
)

cdef extern from "Python.h":
    object PyMemoryView_FromObject(object obj)
    # An index as Py_ssize_t, clamped on overflow (exc NULL); TypeError for a non-integer.
    Py_ssize_t _dec_index "PyNumber_AsSsize_t"(object o, PyObject *exc) except? -1

from weakref import ref as _dec_weakref

from fastsock import _decoderbase
from fastsock import _streambase as _dec_streambase
from fastsock._errors import FrameTooLarge as _DecFrameTooLarge
from fastsock.framing import FramingError as _DecFramingError, _too_many_args as _dec_too_many_args

DECODER_ALL = ["FrameDecoder", "FrameEncoder"]

cdef size_t DEC_COPY_MAX = _dec_streambase.COPY_MAX
cdef size_t DEC_GROW_FROM = _dec_streambase.GROW_FROM
cdef size_t DEC_READ_SIZE = _decoderbase.READ_SIZE
cdef size_t DEC_SHRINK_AT = _decoderbase.SHRINK_AT
cdef object _NO_FRAMING_MSG = _decoderbase.NO_FRAMING
cdef object _NOT_PENDING_MSG = _decoderbase.NOT_PENDING
cdef object _DEC_BUSY = "FrameDecoder is already in use (re-entered while it builds frames)"
cdef object _dec_check_framing = _dec_streambase.check_framing

cdef enum:
    DEC_STACK_FRAMES = 16  # encode_many keeps the views and headers of a batch this small on the C stack

ctypedef struct _dec_block:
    char *data             # a block no longer the decoder's memory, freed at its last release
    Py_ssize_t exports


cdef class FrameDecoder:
    """FrameDecoder(framing=None, *, max_buffer=64 MiB)

    The Stream's read buffer and frame scanner with no socket (sans-I/O): bytes go in with
    `feed(data)`, or with `get_buffer()` and `buffer_updated(n)` (an asyncio.BufferedProtocol
    receives straight into the buffer), and complete frames come out, as Stream.read_frame
    returns them (bytes, or a list of bytes for RESP). The same limits as Stream: a header
    announcing more than the framing's max_size raises FrameTooLarge before anything is
    reserved for the frame, and the buffer never holds more than `max_buffer` bytes.

    Errors while decoding (FrameTooLarge, FramingError) carry the complete frames before the
    bad one as `.frames` (consumed); the bad bytes stay held, so every later decoding call
    raises again (discard() skips them).
    """

    cdef fs_buffer _r
    cdef fs_framing _f
    cdef object _framing
    cdef bytes _delim            # keeps _f.delim alive
    cdef size_t _max_buffer
    cdef uint64_t _resume        # where the scan of the frame at the head resumes (fs_frame.resume)
    cdef size_t _need            # that frame's total once its header said it, else 0
    cdef size_t _lead            # what the framing needs before its first byte (FixedLength's n)
    cdef Py_ssize_t _pending     # the length of the view a pending get_buffer() returned, else -1
    cdef object _seek_key        # read_until's delimiters and where their search resumes
    cdef size_t _seek_at
    cdef bint _busy
    # Exports (see the top of this file).
    cdef char *_vbuf             # what __getbuffer__ exports, set only inside get_buffer()
    cdef Py_ssize_t _vlen
    cdef Py_ssize_t _exports     # live exports of _r.data
    cdef _dec_block *_old
    cdef Py_ssize_t _nold
    cdef Py_ssize_t _oldcap
    cdef object __weakref__

    def __cinit__(self):
        fs_buffer_init(&self._r)
        memset(&self._f, 0, sizeof(fs_framing))
        self._pending = -1

    def __dealloc__(self):
        cdef Py_ssize_t i
        fs_buffer_free(&self._r)  # no export can outlive the decoder: each holds a reference
        for i in range(self._nold):
            free(self._old[i].data)
        PyMem_Free(self._old)

    def __init__(self, framing=None, *, max_buffer=_dec_streambase.DEFAULT_MAX_BUFFER):
        # Every check before anything changes (a pending get_buffer included): a failing
        # re-__init__ must not leave more bytes held than a new, lower max_buffer allows.
        cdef size_t limit = <size_t>_decoderbase.check_max_buffer(max_buffer)
        _dec_check_framing(framing)
        self._enter()
        self._drop()
        self._max_buffer = limit
        self._set_framing(framing)

    # -- exports (the buffer protocol, for get_buffer's views) ---------------------------

    def __getbuffer__(self, Py_buffer *view, int flags):
        if self._vbuf == NULL:
            raise TypeError("a FrameDecoder is not bytes-like: it exports only the views get_buffer() returns")
        view.buf = self._vbuf
        view.obj = self
        view.len = self._vlen
        view.readonly = 0
        view.itemsize = 1
        view.format = NULL
        if flags & PyBUF_FORMAT:
            view.format = "B"
        view.ndim = 1
        view.shape = NULL
        if flags & PyBUF_ND:
            view.shape = &view.len
        view.strides = NULL
        if (flags & PyBUF_STRIDES) == PyBUF_STRIDES:
            view.strides = &view.itemsize
        view.suboffsets = NULL
        view.internal = <void *>self._r.data  # the block it points into (see __releasebuffer__)
        self._exports += 1

    def __releasebuffer__(self, Py_buffer *view):
        cdef char *block = <char *>view.internal
        cdef Py_ssize_t i
        if block == self._r.data and self._exports > 0:
            self._exports -= 1
            return
        for i in range(self._nold):
            if self._old[i].data == block:
                self._old[i].exports -= 1
                if self._old[i].exports == 0:
                    free(block)
                    self._nold -= 1
                    self._old[i] = self._old[self._nold]
                return

    cdef int _retire(self) except -1:
        """Before the current memory is replaced: if views of it live, keep it (freed at its
        last release) and detach it from the buffer; else leave it to the caller to free."""
        cdef _dec_block *grown
        if self._exports == 0:
            return 0
        if self._nold == self._oldcap:
            grown = <_dec_block *>PyMem_Realloc(self._old, (2 * self._oldcap + 4) * sizeof(_dec_block))
            if grown == NULL:
                raise MemoryError()
            self._old = grown
            self._oldcap = 2 * self._oldcap + 4
        self._old[self._nold].data = self._r.data
        self._old[self._nold].exports = self._exports
        self._nold += 1
        self._exports = 0
        fs_buffer_init(&self._r)  # the held bytes, if any, were copied by the caller
        return 0

    cdef int _drop(self) except -1:
        """Forget every held byte and give the memory back."""
        self._retire()
        fs_buffer_free(&self._r)
        self._reset()
        return 0

    # -- the buffer -------------------------------------------------------------------

    cdef inline int _enter(self) except -1:
        """Every call that adds, takes or rescans bytes: refuse re-entry, cancel get_buffer()."""
        if self._busy:
            raise RuntimeError(_DEC_BUSY)
        self._pending = -1
        return 0

    cdef inline void _reset(self):
        self._resume = 0
        self._need = 0
        if self._seek_key is not None:
            self._seek_key = None

    cdef inline void _consume(self, size_t n):
        """Drop the first n held bytes; an emptied buffer above the shrink threshold gives
        its memory back (retired instead while views of it live)."""
        fs_buffer_consume(&self._r, n)
        self._reset()
        if self._r.tail == 0 and self._r.cap > DEC_SHRINK_AT:
            self._give_back()

    cdef void _give_back(self):
        if self._exports:
            try:
                self._retire()
            except MemoryError:  # keep the memory: correct, only larger than the rule says
                return
        fs_buffer_free(&self._r)

    cdef Py_ssize_t _reserve(self, size_t want) except -1:
        """Free space after the held bytes for `want` more, as fs_buffer_reserve (compact,
        then grow at least doubling, never past max_buffer), but growth never reallocs memory
        that views point into. Returns the free space, below `want` only at max_buffer."""
        cdef fs_buffer *b = &self._r
        cdef size_t held, cap
        cdef long room
        cdef char *data
        if b.cap - b.tail >= want:
            return <Py_ssize_t>(b.cap - b.tail)
        held = b.tail - b.head
        if self._exports and b.cap - held < want and b.cap < self._max_buffer:
            cap = max(2 * b.cap, held + want)
            if cap > self._max_buffer:
                cap = self._max_buffer
            data = <char *>malloc(cap)
            if data == NULL:
                raise MemoryError()
            if held:
                memcpy(data, b.data + b.head, held)
            try:
                self._retire()
            except MemoryError:
                free(data)
                raise
            b.data = data
            b.cap = cap
            b.head = 0
            b.tail = held
            return <Py_ssize_t>(cap - held)
        room = fs_buffer_reserve(b, want, self._max_buffer)
        if room < 0:
            raise MemoryError()
        return <Py_ssize_t>room

    cdef int _append(self, object data) except -1:
        cdef Py_buffer view
        if type(data) is bytes:
            return self._append_raw(PyBytes_AS_STRING(data), <size_t>PyBytes_GET_SIZE(data))
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            self._append_raw(<const char *>view.buf, <size_t>view.len)
        finally:
            PyBuffer_Release(&view)
        return 0

    cdef int _append_raw(self, const char *p, size_t size) except -1:
        cdef size_t held = fs_buffer_len(&self._r)
        if held > self._max_buffer or size > self._max_buffer - held:
            raise _decoderbase.append_error(held, size, self._max_buffer)
        if size:
            if self._r.cap - self._r.tail < size and <size_t>self._reserve(size) < size:
                raise _decoderbase.append_error(held, size, self._max_buffer)
            memcpy(fs_buffer_end(&self._r), p, size)
            fs_buffer_commit(&self._r, size)
        return 0

    cdef int _commit(self, object nbytes) except -1:
        cdef Py_ssize_t n = _dec_index(nbytes, NULL)  # TypeError; clamped on overflow
        if self._pending < 0:
            raise RuntimeError(_NOT_PENDING_MSG)
        if n < 0 or n > self._pending:
            raise ValueError(f"nbytes must be between 0 and {self._pending} (the view's length), not {nbytes}")
        self._pending = -1
        fs_buffer_commit(&self._r, <size_t>n)
        return 0

    cdef int _set_framing(self, object framing) except -1:
        cdef fs_framing f
        cdef fs_frame fr
        _dec_check_framing(framing)
        delim = framing_to_c(framing, &f)  # _io.pxi
        self._f = f
        self._delim = delim
        self._framing = framing
        self._reset()
        self._lead = 0
        if f.kind:
            fr.resume = 0
            if fs_frame_scan(&self._f, NULL, 0, &fr) == FS_FRAME_PARTIAL:
                self._lead = fr.total
        return 0

    # -- decoding ---------------------------------------------------------------------

    cdef object _frame_error(self, int rc, fs_frame *fr, list frames):
        """The exception for a bad frame (fs_frame_scan's rc), carrying `frames`."""
        if rc == FS_FRAME_TOO_LARGE and fr.over_args:
            exc = _dec_too_many_args(fr.size, self._f.max_args)
        elif rc == FS_FRAME_TOO_LARGE:
            exc = _DecFrameTooLarge(fr.size, self._f.max_size)
        else:
            exc = _DecFramingError(f"the buffered bytes do not start a valid {type(self._framing).__name__} frame")
        exc.frames = frames
        return exc

    cdef int _partial(self, fs_frame *fr, list frames) except -1:
        """The frame at the head is incomplete: keep its scan state, or raise if its total
        cannot fit max_buffer."""
        if fr.total > self._max_buffer:
            raise _decoderbase.oversized_frame(fr.total, self._max_buffer, frames)
        self._resume = fr.resume
        self._need = fr.total
        return 0

    cdef list _decode(self, Py_ssize_t limit):
        """Every complete frame held (at most `limit`), consumed (the loop of Stream._drain,
        which then raises what stopped it)."""
        cdef fs_frame fr
        cdef const char *p
        cdef size_t left, used = 0
        cdef Py_ssize_t count = 0
        cdef int rc = FS_FRAME_OK
        cdef list out = []
        if self._f.kind == 0:
            raise ValueError(_NO_FRAMING_MSG)
        left = fs_buffer_len(&self._r)
        if left == 0:
            return out
        p = fs_buffer_start(&self._r)
        fr.resume = self._resume
        self._busy = True
        try:
            while count < limit:
                rc = fs_frame_scan(&self._f, p + used, left - used, &fr)
                if rc != FS_FRAME_OK:
                    break
                out.append(frame_object(&self._f, p + used + fr.header, fr.payload))
                used += fr.total
                count += 1
                fr.resume = 0
                if used == left:
                    break
        finally:
            self._busy = False
        if used:
            self._consume(used)
            if used == left or rc == FS_FRAME_OK:
                return out
        elif rc == FS_FRAME_OK:
            return out
        if rc == FS_FRAME_PARTIAL:
            self._partial(&fr, out)
            return out
        raise self._frame_error(rc, &fr, out)

    def feed(self, data):
        """Append `data` (any bytes-like object) and return every complete frame held, as
        frames() does. FrameTooLarge if `data` would make more than max_buffer bytes held
        (nothing appended)."""
        self._enter()
        self._append(data)
        return self._decode(PY_SSIZE_T_MAX)

    def get_buffer(self, sizehint=-1):
        """A writable view of the buffer's free space, after the held bytes: at least
        `sizehint` bytes if it is > 0, else at least 65536, more when the frame being
        received is known to need more (at most max(held, 1 MiB) more at a time), the
        capacity never passing max_buffer. Write into it, then call buffer_updated(n) or
        commit(n). FrameTooLarge when max_buffer bytes are held already."""
        cdef Py_ssize_t hint = _dec_index(sizehint, NULL)
        cdef size_t held, want, need
        cdef Py_ssize_t room
        self._enter()
        held = fs_buffer_len(&self._r)
        want = DEC_READ_SIZE
        if hint > 0:
            want = min(<size_t>hint, self._max_buffer)  # the capacity stops there anyway
        need = self._need if held else self._lead
        if need > held and need - held > want:
            want = max(want, min(need - held, max(held, DEC_GROW_FROM)))
        room = self._reserve(want)
        if room <= 0:
            raise _decoderbase.full_error(held, self._max_buffer)
        self._vbuf = fs_buffer_end(&self._r)
        self._vlen = room
        # The memoryview's allocation can run the GC (finalizers) before __getbuffer__
        # counts the export: none of them may move the memory _vbuf points into.
        self._busy = True
        try:
            view = PyMemoryView_FromObject(self)
        finally:
            self._vbuf = NULL
            self._busy = False
        self._pending = room
        return view

    def buffer_updated(self, nbytes):
        """`nbytes` bytes were written at the start of the view the pending get_buffer()
        returned: hold them, and return every complete frame held (as feed). ValueError if
        nbytes is negative or larger than that view; RuntimeError if no get_buffer() is
        pending."""
        if self._busy:
            raise RuntimeError(_DEC_BUSY)
        self._commit(nbytes)
        return self._decode(PY_SSIZE_T_MAX)

    def append(self, data):
        """As feed(data), without decoding. FrameTooLarge (nothing appended) beyond max_buffer."""
        self._enter()
        self._append(data)

    def commit(self, nbytes):
        """As buffer_updated(nbytes), without decoding."""
        if self._busy:
            raise RuntimeError(_DEC_BUSY)
        self._commit(nbytes)

    def next_frame(self):
        """The next complete frame held, consumed; None if it is not complete yet."""
        cdef fs_frame fr
        cdef size_t held
        cdef int rc
        self._enter()
        if self._f.kind == 0:
            raise ValueError(_NO_FRAMING_MSG)
        held = fs_buffer_len(&self._r)
        if held == 0:
            return None
        fr.resume = self._resume
        rc = fs_frame_scan(&self._f, fs_buffer_start(&self._r), held, &fr)
        if rc == FS_FRAME_OK:
            self._busy = True
            try:
                out = frame_object(&self._f, fs_buffer_start(&self._r) + fr.header, fr.payload)
            finally:
                self._busy = False
            self._consume(fr.total)
            return out
        if rc == FS_FRAME_PARTIAL:
            self._partial(&fr, [])
            return None
        raise self._frame_error(rc, &fr, [])

    def frames(self, max_frames=None):
        """Every complete frame held (at most max_frames), consumed; [] if none is."""
        cdef Py_ssize_t limit = PY_SSIZE_T_MAX
        if max_frames is not None:  # its own code before _enter()
            limit = size_arg(max_frames, "frames")
            if limit == 0:
                raise ValueError("max_frames must be >= 1")
        self._enter()
        return self._decode(limit)

    def eof(self):
        """The input ended. Returns None if nothing is held; else raises IncompleteReadError
        (.partial: every held byte, .expected: the size of the frame at the head if its
        header said it, else None) and keeps the bytes held."""
        cdef fs_frame fr
        cdef size_t held = fs_buffer_len(&self._r)
        if held == 0:
            return None
        expected = None
        if self._f.kind:
            fr.resume = self._resume
            if fs_frame_scan(&self._f, fs_buffer_start(&self._r), held, &fr) == FS_FRAME_PARTIAL and fr.total:
                expected = fr.total
        raise IncompleteReadError(PyBytes_FromStringAndSize(fs_buffer_start(&self._r), <Py_ssize_t>held), expected)

    # -- reading held bytes -----------------------------------------------------------

    cdef inline object _take(self, size_t n):
        out = PyBytes_FromStringAndSize(fs_buffer_start(&self._r), <Py_ssize_t>n)
        self._consume(n)
        return out

    def read(self, n=-1):
        """Up to n held bytes (n < 0 or None: all), consumed; b"" when none is held."""
        cdef size_t held
        cdef size_t want = <size_t>-1
        if n is not None and not n < 0:  # n's own code runs first: then the checks, the length
            want = <size_t>size_arg(n, "read")
        self._enter()
        held = fs_buffer_len(&self._r)
        return self._take(min(want, held))

    def read_exactly(self, n):
        """Exactly n held bytes, consumed; None (nothing consumed) while fewer are held.
        FrameTooLarge if n exceeds max_buffer (the decoder could never hold them)."""
        cdef Py_ssize_t size = size_arg(n, "read_exactly")  # n's own code before _enter()
        self._enter()
        if <size_t>size > self._max_buffer:
            raise _decoderbase.exactly_error(size, self._max_buffer)
        if fs_buffer_len(&self._r) < <size_t>size:
            return None
        return self._take(<size_t>size)

    def read_into(self, buffer):
        """Copy up to len(buffer) held bytes into `buffer` (consumed); returns the count."""
        cdef Py_buffer view
        cdef size_t k
        self._enter()
        try:
            PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
        except (TypeError, BufferError):
            raise TypeError(f"read_into() argument 'buffer' must be read-write bytes-like object, "
                            f"not {type(buffer).__name__}") from None
        try:
            k = min(<size_t>view.len, fs_buffer_len(&self._r))
            if k:
                memcpy(view.buf, fs_buffer_start(&self._r), k)
            self._consume(k)
            return k
        finally:
            PyBuffer_Release(&view)

    cdef object _until(self, tuple delims, object limit, bint keep, str method):
        cdef Py_ssize_t n = len(delims), i
        cdef Py_ssize_t lim
        cdef size_t maxlen = 0, held, resume = 0, which = 0, end
        cdef long at
        cdef const char **ptrs = NULL
        cdef size_t *lens = NULL
        if n == 0:
            raise ValueError("read_until() needs at least one delimiter")
        lim = <Py_ssize_t>self._max_buffer if limit is None else size_arg(limit, method)
        for d in delims:
            if not isinstance(d, bytes):
                raise TypeError(f"delimiters must be bytes, not {type(d).__name__}")
            if len(d) == 0:
                raise ValueError("delimiters cannot be empty")
        if self._seek_key is not None and self._seek_key == delims:
            resume = self._seek_at
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
            held = fs_buffer_len(&self._r)
            at = fs_find_any(fs_buffer_start(&self._r), held, resume, ptrs, lens, <size_t>n, &which)
        finally:
            PyMem_Free(ptrs)
            PyMem_Free(lens)
        if at >= 0:
            if at > lim:
                raise _DecFrameTooLarge(at, lim)
            end = <size_t>at + len(<bytes>delims[which])
            out = PyBytes_FromStringAndSize(fs_buffer_start(&self._r), <Py_ssize_t>(end if keep else <size_t>at))
            self._consume(end)
            return out
        if held >= <size_t>lim + maxlen:
            raise _DecFrameTooLarge(held, lim, f"no delimiter within {lim} bytes")
        self._seek_key = delims
        self._seek_at = held - (maxlen - 1) if held >= maxlen - 1 else 0
        return None

    def read_until(self, delimiter, limit=None, keep=True):
        """Held bytes up to the earliest occurrence of `delimiter` (bytes, or a tuple of
        bytes: the earliest match wins, the first listed on a tie), including it unless
        keep=False, consumed; None while no delimiter is held. More than `limit` bytes
        (default max_buffer) before it raise FrameTooLarge, with every byte still held."""
        self._enter()
        delims = delimiter if isinstance(delimiter, tuple) else (delimiter,)
        delims = tuple(bytes(d) if isinstance(d, (bytearray, memoryview)) else d for d in delims)
        return self._until(delims, limit, keep, "read_until")

    def readline(self, limit=None):
        """One held line, ending with b"\\n", consumed; None while no newline is held. More
        than `limit` bytes (default max_buffer) before it raise FrameTooLarge."""
        self._enter()
        return self._until((b"\n",), limit, True, "readline")

    def peek(self, n=-1):
        """Up to n held bytes (n < 0 or None: all), not consumed."""
        cdef Py_ssize_t size = -1, held
        if n is not None and n >= 0:  # n's own code runs here: read the length after it
            size = size_arg(n, "peek")
        held = <Py_ssize_t>fs_buffer_len(&self._r)
        if size < 0 or size > held:
            size = held
        return PyBytes_FromStringAndSize(fs_buffer_start(&self._r), size)

    def discard(self, n):
        """Drop up to n held bytes (e.g. a frame refused by FrameTooLarge or FramingError);
        returns how many were dropped."""
        cdef size_t k = <size_t>size_arg(n, "discard")  # n's own code before _enter()
        self._enter()
        k = min(k, fs_buffer_len(&self._r))
        self._consume(k)
        return k

    # -- attributes -------------------------------------------------------------------

    @property
    def framing(self):
        """The framing that cuts the held bytes into frames (settable, e.g. after a handshake)."""
        return self._framing

    @framing.setter
    def framing(self, value):
        if self._busy:
            raise RuntimeError(_DEC_BUSY)
        self._set_framing(value)

    @property
    def max_buffer(self):
        """The most bytes the decoder ever holds."""
        return self._max_buffer

    @property
    def buffered(self):
        """Bytes held: received and not yet taken as frames or reads."""
        return fs_buffer_len(&self._r)

    @property
    def _capacity(self):
        """For tests: the bytes allocated for the buffer (the pure twin has the same)."""
        return self._r.cap

    @property
    def _retired_blocks(self):
        """For tests: the retired blocks still exported (freed at their last release)."""
        return self._nold

    def __repr__(self):
        return f"<fastsock.FrameDecoder framing={self._framing!r} buffered={fs_buffer_len(&self._r)}>"


cdef object _dec_view(object payload):
    """A large non-bytes payload as passed through: a flat memoryview of bytes."""
    view = memoryview(payload)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


cdef class FrameEncoder:
    """FrameEncoder(framing)

    Frames payloads for a transport's writelines() (or sendmsg): `encode(payload)` and
    `encode_many(payloads)` return a list of buffers whose concatenation is the frames'
    bytes. Small frames (payload <= 16 KiB) are joined into shared bytes objects; a larger
    payload is passed through uncopied (the object itself if it is bytes, else a flat
    memoryview of it). Validation as Stream.write_frame(s): FrameTooLarge above the
    framing's max_size, FramingError for a payload it cannot carry, TypeError for objects
    that are not bytes-like; RESP takes values, encoded as replies.
    """

    cdef fs_framing _f
    cdef object _framing
    cdef bytes _delim      # keeps _f.delim alive
    cdef bytes _trailer
    cdef bint _codec
    cdef object __weakref__

    def __init__(self, framing):
        cdef fs_framing f
        cdef size_t tlen
        cdef const char *trailer
        _decoderbase.check_encoder_framing(framing)
        self._codec = bool(framing._value_codec)
        delim = framing_to_c(framing, &f)  # _io.pxi
        self._f = f
        self._delim = delim
        self._framing = framing
        trailer = fs_frame_trailer(&self._f, &tlen)
        self._trailer = PyBytes_FromStringAndSize(trailer, <Py_ssize_t>tlen)

    @property
    def framing(self):
        """The framing every payload is encoded with."""
        return self._framing

    cdef int _header(self, const char *payload, size_t size, char *out, size_t *hlen) except -1:
        cdef int rc = fs_frame_header(&self._f, payload, size, out, hlen)
        if rc == 0:
            return 0
        if rc == FS_FRAME_TOO_LARGE:
            raise _DecFrameTooLarge(size, self._f.max_size)
        if self._f.kind == FS_FRAMING_FIXED:
            raise _DecFramingError(
                f"FixedLength({self._f.max_size}) payload must be {self._f.max_size} bytes, not {size}")
        raise _DecFramingError("payload contains the delimiter")

    def encode(self, payload):
        """The buffers of one frame carrying `payload` (see the class docstring)."""
        cdef Py_buffer view
        cdef char hdr[FS_FRAME_HEADER_MAX]
        cdef size_t hlen = 0, size, tlen = <size_t>len(self._trailer)
        cdef char *p
        if self._codec:  # RESP: a value, encoded as a reply
            data = self._framing.encode(payload)
            return [data if type(data) is bytes else bytes(data)]
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        try:
            size = <size_t>view.len
            self._header(<const char *>view.buf, size, hdr, &hlen)
            if size <= DEC_COPY_MAX:
                out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>(hlen + size + tlen))
                p = PyBytes_AS_STRING(out)
                memcpy(p, hdr, hlen)
                if size:
                    memcpy(p + hlen, view.buf, size)
                memcpy(p + hlen + size, PyBytes_AS_STRING(self._trailer), tlen)
                return [out]
        finally:
            PyBuffer_Release(&view)
        parts = []
        if hlen:
            parts.append(PyBytes_FromStringAndSize(hdr, <Py_ssize_t>hlen))
        parts.append(payload if type(payload) is bytes else _dec_view(payload))
        if tlen:
            parts.append(self._trailer)
        return parts

    def encode_many(self, payloads):
        """The buffers of one frame per payload, in order (see the class docstring). Every
        payload is validated first: on an error nothing is returned."""
        cdef Py_ssize_t count, i, acquired = 0
        cdef Py_buffer *views = NULL
        cdef char *hdrs = NULL
        cdef size_t *hlens = NULL
        cdef bint framed = not self._codec
        cdef Py_buffer stack_views[DEC_STACK_FRAMES]
        cdef size_t stack_hlens[DEC_STACK_FRAMES]
        cdef char stack_hdrs[DEC_STACK_FRAMES * FS_FRAME_HEADER_MAX]
        if isinstance(payloads, (bytes, bytearray, memoryview, str)):
            raise TypeError(f"expected an iterable of bytes-like objects, not a single {type(payloads).__name__}")
        if self._codec:  # RESP: values, each encoded as a reply, joined as writelines would
            encode = self._framing.encode
            seq = [encode(value) for value in payloads]
            for i in range(len(seq)):
                if type(seq[i]) is not bytes:
                    seq[i] = bytes(seq[i])
        else:
            seq = PySequence_Fast(payloads, "expected an iterable of bytes-like objects")
            if seq is payloads and type(seq) is list:
                seq = tuple(seq)  # the caller's list could change while its items export buffers
        count = PySequence_Fast_GET_SIZE(seq)
        if count == 0:
            return []
        if count <= DEC_STACK_FRAMES:  # the common small batch: no allocation for the bookkeeping
            views = stack_views
            hlens = stack_hlens
            hdrs = stack_hdrs
            memset(hlens, 0, <size_t>count * sizeof(size_t))  # unframed (RESP) batches read them as 0
        else:
            views = <Py_buffer *>PyMem_Calloc(count, sizeof(Py_buffer))
            hlens = <size_t *>PyMem_Calloc(count, sizeof(size_t))
            if framed:
                hdrs = <char *>PyMem_Malloc(count * FS_FRAME_HEADER_MAX)
            if views == NULL or hlens == NULL or (framed and hdrs == NULL):
                PyMem_Free(views)
                PyMem_Free(hlens)
                PyMem_Free(hdrs)
                raise MemoryError()
        try:
            for i in range(count):  # validate every payload before building anything
                PyObject_GetBuffer(<object>PySequence_Fast_GET_ITEM(seq, i), &views[i], PyBUF_SIMPLE)
                acquired += 1
                if framed:
                    self._header(<const char *>views[i].buf, <size_t>views[i].len,
                                 hdrs + i * FS_FRAME_HEADER_MAX, &hlens[i])
            return self._join(seq, views, hdrs, hlens, count, framed)
        finally:
            for i in range(acquired):
                PyBuffer_Release(&views[i])
            if views != stack_views:
                PyMem_Free(views)
                PyMem_Free(hlens)
                PyMem_Free(hdrs)

    cdef list _join(self, object seq, Py_buffer *views, char *hdrs, size_t *hlens, Py_ssize_t count,
                    bint framed):
        """Runs of small frames joined into one bytes object each; each payload above
        COPY_MAX between them as it is (its header ends the run before it, its trailer
        starts the next)."""
        cdef list out = []
        cdef Py_ssize_t i, j, start = 0
        cdef size_t run, size, tlen = <size_t>len(self._trailer) if framed else 0
        cdef size_t lead = 0  # the trailer of the large payload before the run
        cdef const char *trailer = PyBytes_AS_STRING(self._trailer)
        cdef char *p
        cdef bint big
        i = 0
        while i <= count:
            # The run is frames [start, i) plus the header of frame i if it is large.
            big = i < count and <size_t>views[i].len > DEC_COPY_MAX
            if i < count and not big:
                i += 1
                continue
            run = lead
            for j in range(start, i):
                run += hlens[j] + <size_t>views[j].len + tlen
            if big:
                run += hlens[i]
            if run:
                chunk = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>run)
                p = PyBytes_AS_STRING(chunk)
                if lead:
                    memcpy(p, trailer, lead)
                    p += lead
                for j in range(start, i):
                    size = <size_t>views[j].len
                    if hlens[j]:
                        memcpy(p, hdrs + j * FS_FRAME_HEADER_MAX, hlens[j])
                        p += hlens[j]
                    if size:
                        memcpy(p, views[j].buf, size)
                        p += size
                    if tlen:
                        memcpy(p, trailer, tlen)
                        p += tlen
                if big and hlens[i]:
                    memcpy(p, hdrs + i * FS_FRAME_HEADER_MAX, hlens[i])
                out.append(chunk)
            if not big:
                break
            item = <object>PySequence_Fast_GET_ITEM(seq, i)
            out.append(item if type(item) is bytes else _dec_view(item))
            lead = tlen
            i += 1
            start = i
        return out


cdef class _FrameDelivery:
    """_FrameDelivery(decoder, protocol)

    fastsock.aio.FramedProtocol's buffer_updated() in C (its pure twin is in
    fastsock/_py/decoder.py): the transport calls it with each read's byte count; the common
    case, a read that completes frames, goes straight to protocol.frames_received(frames)
    with no Python frame in between. Everything else goes back to the protocol's Python:
    `paused` (kept by the protocol) to protocol._hold(nbytes), a decoding error to
    protocol._bad_frame(exc), a full buffer without a frame to protocol._deliver([]).
    The protocol is held by a weak reference (it holds this object: no cycle); once it is
    gone, a call only commits what the transport read."""

    cdef FrameDecoder _dec
    cdef object _protocol_ref
    cdef size_t _max_buffer
    cdef public bint paused

    def __init__(self, FrameDecoder decoder not None, protocol):
        self._dec = decoder
        self._protocol_ref = _dec_weakref(protocol)
        self._max_buffer = decoder._max_buffer
        self.paused = False

    def __call__(self, nbytes):
        cdef list frames
        protocol = self._protocol_ref()
        if protocol is None:
            self._dec.commit(nbytes)
            return
        if self.paused:
            protocol._hold(nbytes)
            return
        if self._dec._busy:
            raise RuntimeError(_DEC_BUSY)
        self._dec._commit(nbytes)
        try:
            frames = self._dec._decode(PY_SSIZE_T_MAX)
        except (_DecFrameTooLarge, _DecFramingError) as exc:
            protocol._bad_frame(exc)
            return
        if frames:
            protocol.frames_received(frames)  # looked up per call, as the Python path does
        elif fs_buffer_len(&self._dec._r) >= self._max_buffer:
            protocol._deliver(frames)
