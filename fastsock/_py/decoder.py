"""Pure-Python twin of the compiled `FrameDecoder` and `FrameEncoder`: the Stream's read buffer
and frame scanner without a socket (sans-I/O), and its frame encoding for a transport's
writelines(). The compiled twin is fastsock/_c/decoder.pxi; both follow the same rules.

The buffer is laid out like the pure Stream's (fastsock/_py/stream.py): a bytearray whose
[_rhead:_rtail] slice holds the bytes not yet taken, with the memoryview _rview beside it.
The bytearray is never resized: it is replaced when it must grow, and by a shared empty one
when an emptied buffer gives its memory back, so a view that get_buffer() handed out stays
valid (it keeps the old bytearray alive) and a write into it after the decoder moved on never
reaches the decoder's bytes. Memory follows fastsock._decoderbase (GROW_FROM, the shrink rule).

A get_buffer() is pending until the buffer_updated()/commit() that takes its bytes; every
other call that takes or adds bytes (feed, append, frames, next_frame, read*, discard) cancels
it, whether it succeeds or raises. peek, eof and the properties do not.
"""

from __future__ import annotations

import operator
import sys
import weakref
from typing import Any, Optional, Union

from .. import _decoderbase as _db
from .. import _streambase
from .._errors import FrameTooLarge, IncompleteReadError
from ..framing import Framing, FramingError
from .socket import _readable_view, _size, _writable_view

__all__ = ["FrameDecoder", "FrameEncoder"]

_COPY_MAX = _streambase.COPY_MAX
_GROW_FROM = _streambase.GROW_FROM
_READ_SIZE = _db.READ_SIZE
_SHRINK_AT = _db.SHRINK_AT
_NO_FRAMING = _db.NO_FRAMING
_NO_LIMIT = sys.maxsize
#: frames(max_frames=n) up to this n copies frames one by one from the buffer instead of
#: copying every held byte once first (the pure Stream's _drain rule).
_FEW_FRAMES = 64
#: The buffer of a decoder that holds no memory: shared and never written (every write
#: follows a _reserve that replaced it). (_rbuf, _rview, _rhead, _rtail, _oversized).
_NO_MEMORY = bytearray()
_EMPTY_BUFFER = (_NO_MEMORY, memoryview(_NO_MEMORY), 0, 0, False)
_FRAME_ERRORS = (FrameTooLarge, FramingError)


def _lead_need(framing: Optional[Framing]) -> int:
    """What the framing needs before its first byte (a FixedLength's n, else 0)."""
    return 0 if framing is None else framing._scan(_NO_MEMORY, 0, 0, 0)[1]


class FrameDecoder:
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

    __slots__ = ("_rbuf", "_rview", "_rhead", "_rtail", "_oversized", "_framing", "_max_buffer",
                 "_resume", "_need", "_lead", "_pending", "_seek", "__weakref__")

    def __init__(self, framing: Optional[Framing] = None, *,
                 max_buffer: int = _streambase.DEFAULT_MAX_BUFFER) -> None:
        max_buffer = _db.check_max_buffer(max_buffer)  # both checks before anything changes
        self._framing: Optional[Framing] = _streambase.check_framing(framing)
        self._max_buffer = max_buffer
        self._lead = _lead_need(self._framing)
        # _rbuf[:_rhead] taken, [_rhead:_rtail] held, [_rtail:] free; _oversized:
        # len(_rbuf) > _SHRINK_AT (given back once emptied).
        self._rbuf, self._rview, self._rhead, self._rtail, self._oversized = _EMPTY_BUFFER
        self._resume = 0   # where the scan of the frame at the head resumes (framing.Scan)
        self._need = 0     # that frame's total size once its header said it (else 0)
        self._pending = -1  # the length of the view a pending get_buffer() returned
        self._seek: Optional[tuple[tuple[bytes, ...], int]] = None  # read_until's resume point

    # -- the buffer -------------------------------------------------------------------

    def _reserve(self, want: int) -> int:
        """Free space after the held bytes for `want` more (as fs_buffer_reserve): move the
        held bytes to the front, or replace the bytearray with one at least twice as large,
        never past max_buffer. Returns the free space (below `want` only at max_buffer)."""
        cap = len(self._rbuf)
        head = self._rhead
        tail = self._rtail
        if cap - tail >= want:
            return cap - tail
        held = tail - head
        limit = self._max_buffer
        view = self._rview
        if cap - held < want and cap < limit:
            new = bytearray(min(max(2 * cap, held + want), limit))
            new_view = memoryview(new)
            new_view[:held] = view[head:tail]
            self._rbuf, self._rview, self._rhead, self._rtail, self._oversized = (
                new, new_view, 0, held, len(new) > _SHRINK_AT)
            return len(new) - held
        if head:
            view[:held] = view[head:tail]  # overlapping: memoryview assignment uses memmove
            self._rhead = 0
            self._rtail = held
        return cap - held

    def _consume(self, n: int) -> None:
        """Drop the first n held bytes; an emptied buffer starts at 0, or gives its memory
        back if it is larger than the shrink threshold."""
        head = self._rhead + n
        if head == self._rtail:
            if self._oversized:
                self._rbuf, self._rview, self._rhead, self._rtail, self._oversized = _EMPTY_BUFFER
            else:
                self._rhead = self._rtail = 0
        else:
            self._rhead = head
        self._resume = 0
        self._need = 0
        self._seek = None

    def _take(self, n: int) -> bytes:
        head = self._rhead
        out = bytes(self._rview[head:head + n])
        self._consume(n)
        return out

    def _append(self, data: Any) -> None:
        view = data if type(data) is bytes else _readable_view(data)
        size = len(view)
        held = self._rtail - self._rhead
        if size > self._max_buffer - held:
            raise _db.append_error(held, size, self._max_buffer)
        if size:
            if len(self._rbuf) - self._rtail < size:
                self._reserve(size)
            tail = self._rtail
            self._rview[tail:tail + size] = view
            self._rtail = tail + size

    def _commit(self, nbytes: Any) -> None:
        n = operator.index(nbytes)
        pending = self._pending
        if pending < 0:
            raise RuntimeError(_db.NOT_PENDING)
        if n < 0 or n > pending:
            raise ValueError(f"nbytes must be between 0 and {pending} (the view's length), not {n}")
        self._pending = -1
        self._rtail += n

    # -- decoding ---------------------------------------------------------------------

    def _partial(self, frames: list[Any], need: int, extra: int) -> list[Any]:
        """The frame at the head is incomplete: keep its scan state, or raise if its
        announced total cannot fit max_buffer."""
        if need > self._max_buffer:
            raise _db.oversized_frame(need, self._max_buffer, frames)
        self._need = need
        self._resume = 0 if need else extra
        return frames

    def _decode(self, limit: int) -> list[Any]:
        """Every complete frame held (at most `limit`), consumed; see the class docstring
        for errors."""
        framing = self._framing
        if framing is None:
            raise ValueError(_NO_FRAMING)
        head = self._rhead
        tail = self._rtail
        if head == tail:
            return []
        buf = self._rbuf
        resume = self._resume
        try:
            header, need, extra = framing._scan(buf, head, tail, resume)
        except _FRAME_ERRORS as exc:
            exc.frames = []  # type: ignore[union-attr]
            raise
        if header < 0:
            return self._partial([], need, extra)
        frames: list[Any]
        if limit <= _FEW_FRAMES:
            frames, stop, resume = framing._scan_many(buf, head, tail, resume, limit)
            used = stop - head
        else:
            # One copy of the held bytes, then each frame is one slice of bytes (cheaper
            # per frame than bytes(memoryview slice)).
            frames, used, resume = framing._scan_many(bytes(self._rview[head:tail]), 0, tail - head, resume, limit)
        self._consume(used)
        if len(frames) < limit and self._rhead != self._rtail:
            # _scan_many stopped quietly before an incomplete, too large or malformed frame.
            try:
                header, need, extra = framing._scan(self._rbuf, self._rhead, self._rtail, resume)
            except _FRAME_ERRORS as exc:
                exc.frames = frames  # type: ignore[union-attr]
                raise
            return self._partial(frames, need, extra)
        self._resume = resume
        return frames

    def feed(self, data: Any) -> list[Any]:
        """Append `data` (any bytes-like object) and return every complete frame held, as
        frames() does. FrameTooLarge if `data` would make more than max_buffer bytes held
        (nothing appended)."""
        self._pending = -1
        self._append(data)
        return self._decode(_NO_LIMIT)

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """A writable view of the buffer's free space, after the held bytes: at least
        `sizehint` bytes if it is > 0, else at least 65536, more when the frame being
        received is known to need more (at most max(held, 1 MiB) more at a time), the
        capacity never passing max_buffer. Write into it, then call buffer_updated(n) or
        commit(n). FrameTooLarge when max_buffer bytes are held already."""
        hint = operator.index(sizehint)
        self._pending = -1
        held = self._rtail - self._rhead
        want = hint if hint > 0 else _READ_SIZE
        need = (self._need if held else self._lead) - held
        if need > want:
            want = max(want, min(need, max(held, _GROW_FROM)))
        if len(self._rbuf) - self._rtail < want and self._reserve(want) <= 0:
            raise _db.full_error(held, self._max_buffer)
        view = self._rview[self._rtail:]
        self._pending = len(view)
        return view

    def buffer_updated(self, nbytes: int) -> list[Any]:
        """`nbytes` bytes were written at the start of the view the pending get_buffer()
        returned: hold them, and return every complete frame held (as feed). ValueError if
        nbytes is negative or larger than that view; RuntimeError if no get_buffer() is
        pending."""
        self._commit(nbytes)
        return self._decode(_NO_LIMIT)

    def append(self, data: Any) -> None:
        """As feed(data), without decoding. FrameTooLarge (nothing appended) beyond max_buffer."""
        self._pending = -1
        self._append(data)

    def commit(self, nbytes: int) -> None:
        """As buffer_updated(nbytes), without decoding."""
        self._commit(nbytes)

    def next_frame(self) -> Any:
        """The next complete frame held, consumed; None if it is not complete yet."""
        self._pending = -1
        framing = self._framing
        if framing is None:
            raise ValueError(_NO_FRAMING)
        head = self._rhead
        if head == self._rtail:
            return None
        try:
            header, need, extra = framing._scan(self._rbuf, head, self._rtail, self._resume)
        except _FRAME_ERRORS as exc:
            exc.frames = []  # type: ignore[union-attr]
            raise
        if header < 0:
            self._partial([], need, extra)
            return None
        start = head + header
        frame = bytes(self._rview[start:start + need])
        self._consume(extra)
        if framing._decode_payload is not None:  # RESP: the argument list
            return framing._decode_payload(frame)
        return frame

    def frames(self, max_frames: Optional[int] = None) -> list[Any]:
        """Every complete frame held (at most max_frames), consumed; [] if none is."""
        limit = _NO_LIMIT
        if max_frames is not None:  # its own code first
            limit = _size(max_frames, "frames")
            if limit == 0:
                raise ValueError("max_frames must be >= 1")
        self._pending = -1
        return self._decode(limit)

    def eof(self) -> None:
        """The input ended. Returns None if nothing is held; else raises IncompleteReadError
        (.partial: every held byte, .expected: the size of the frame at the head if its
        header said it, else None) and keeps the bytes held."""
        head = self._rhead
        held = self._rtail - head
        if not held:
            return None
        expected = None
        framing = self._framing
        if framing is not None:
            try:
                header, need, _ = framing._scan(self._rbuf, head, self._rtail, self._resume)
            except _FRAME_ERRORS:
                header, need = 0, 0
            if header < 0 and need:
                expected = need
        raise IncompleteReadError(bytes(self._rview[head:head + held]), expected)

    # -- reading held bytes -----------------------------------------------------------

    def read(self, n: Optional[int] = -1) -> bytes:
        """Up to n held bytes (n < 0 or None: all), consumed; b"" when none is held."""
        want = -1 if n is None or n < 0 else _size(n, "read")  # n's code first, then the length
        self._pending = -1
        held = self._rtail - self._rhead
        return self._take(held if want < 0 else min(want, held))

    def read_exactly(self, n: int) -> Optional[bytes]:
        """Exactly n held bytes, consumed; None (nothing consumed) while fewer are held.
        FrameTooLarge if n exceeds max_buffer (the decoder could never hold them)."""
        size = _size(n, "read_exactly")  # n's own code first
        self._pending = -1
        if size > self._max_buffer:
            raise _db.exactly_error(size, self._max_buffer)
        if self._rtail - self._rhead < size:
            return None
        return self._take(size)

    def read_into(self, buffer: Any) -> int:
        """Copy up to len(buffer) held bytes into `buffer` (consumed); returns the count."""
        self._pending = -1
        view = _writable_view(buffer, "read_into")
        head = self._rhead
        k = min(len(view), self._rtail - head)
        view[:k] = self._rview[head:head + k]
        self._consume(k)
        return k

    def _until(self, delims: tuple[bytes, ...], limit: Any, keep: bool, method: str) -> Optional[bytes]:
        if not delims:
            raise ValueError("read_until() needs at least one delimiter")
        lim = self._max_buffer if limit is None else _size(limit, method)
        for d in delims:
            if not isinstance(d, bytes):
                raise TypeError(f"delimiters must be bytes, not {type(d).__name__}")
            if not d:
                raise ValueError("delimiters cannot be empty")
        maxlen = max(map(len, delims))
        seek = self._seek
        resume = seek[1] if seek is not None and seek[0] == delims else 0
        buf = self._rbuf
        head = self._rhead
        held = self._rtail - head
        at, which = -1, b""
        for d in delims:  # earliest match; the first listed wins a tie
            stop = held if at < 0 else min(held, at + len(d) - 1)
            hit = buf.find(d, head + resume, head + stop)
            if hit >= 0 and (at < 0 or hit - head < at):
                at, which = hit - head, d
        if at >= 0:
            if at > lim:
                raise FrameTooLarge(at, lim)
            end = at + len(which)
            out = bytes(self._rview[head:head + (end if keep else at)])
            self._consume(end)
            return out
        if held >= lim + maxlen:
            raise FrameTooLarge(held, lim, f"no delimiter within {lim} bytes")
        self._seek = (delims, max(0, held - (maxlen - 1)))
        return None

    def read_until(self, delimiter: Union[bytes, tuple[bytes, ...]], limit: Optional[int] = None,
                   keep: bool = True) -> Optional[bytes]:
        """Held bytes up to the earliest occurrence of `delimiter` (bytes, or a tuple of
        bytes: the earliest match wins, the first listed on a tie), including it unless
        keep=False, consumed; None while no delimiter is held. More than `limit` bytes
        (default max_buffer) before it raise FrameTooLarge, with every byte still held."""
        self._pending = -1
        delims = delimiter if isinstance(delimiter, tuple) else (delimiter,)
        delims = tuple(bytes(d) if isinstance(d, (bytearray, memoryview)) else d for d in delims)
        return self._until(delims, limit, keep, "read_until")

    def readline(self, limit: Optional[int] = None) -> Optional[bytes]:
        """One held line, ending with b"\\n", consumed; None while no newline is held. More
        than `limit` bytes (default max_buffer) before it raise FrameTooLarge."""
        self._pending = -1
        return self._until((b"\n",), limit, True, "readline")

    def peek(self, n: Optional[int] = -1) -> bytes:
        """Up to n held bytes (n < 0 or None: all), not consumed."""
        want = _size(n, "peek") if n is not None and n >= 0 else -1  # n's code first, then the length
        size = self._rtail - self._rhead
        if 0 <= want < size:
            size = want
        head = self._rhead
        return bytes(self._rview[head:head + size])

    def discard(self, n: int) -> int:
        """Drop up to n held bytes (e.g. a frame refused by FrameTooLarge or FramingError);
        returns how many were dropped."""
        k = _size(n, "discard")  # n's own code first
        self._pending = -1
        k = min(k, self._rtail - self._rhead)
        self._consume(k)
        return k

    # -- attributes -------------------------------------------------------------------

    def __reduce__(self) -> Any:
        """Refused, as by the compiled decoder: a copy would share this decoder's buffer."""
        raise TypeError(f"cannot copy or pickle a {type(self).__name__}: it holds a connection's buffer")

    @property
    def framing(self) -> Optional[Framing]:
        """The framing that cuts the held bytes into frames (settable, e.g. after a handshake)."""
        return self._framing

    @framing.setter
    def framing(self, value: Optional[Framing]) -> None:
        self._framing = _streambase.check_framing(value)
        self._lead = _lead_need(self._framing)
        self._resume = 0
        self._need = 0

    @property
    def max_buffer(self) -> int:
        """The most bytes the decoder ever holds."""
        return self._max_buffer

    @property
    def buffered(self) -> int:
        """Bytes held: received and not yet taken as frames or reads."""
        return self._rtail - self._rhead

    @property
    def _capacity(self) -> int:
        """For tests: the bytes allocated for the buffer (the compiled twin has the same)."""
        return len(self._rbuf)

    def __repr__(self) -> str:
        return f"<fastsock.FrameDecoder framing={self._framing!r} buffered={self._rtail - self._rhead}>"


class FrameEncoder:
    """FrameEncoder(framing)

    Frames payloads for a transport's writelines() (or sendmsg): `encode(payload)` and
    `encode_many(payloads)` return a list of buffers whose concatenation is the frames'
    bytes. Small frames (payload <= 16 KiB) are joined into shared bytes objects; a larger
    payload is passed through uncopied (the object itself if it is bytes, else a flat
    memoryview of it). Validation as Stream.write_frame(s): FrameTooLarge above the
    framing's max_size, FramingError for a payload it cannot carry, TypeError for objects
    that are not bytes-like; RESP takes values, encoded as replies.
    """

    __slots__ = ("_framing", "__weakref__")

    def __init__(self, framing: Framing) -> None:
        self._framing = _db.check_encoder_framing(framing)

    def __reduce__(self) -> Any:
        """Refused, as by the compiled encoder."""
        raise TypeError(f"cannot copy or pickle a {type(self).__name__}")

    @property
    def framing(self) -> Framing:
        """The framing every payload is encoded with."""
        return self._framing

    def encode(self, payload: Any) -> list[Any]:
        """The buffers of one frame carrying `payload` (see the class docstring)."""
        framing = self._framing
        if framing._value_codec:  # RESP: a value, encoded as a reply
            data = framing.encode(payload)
            return [data if type(data) is bytes else bytes(data)]
        view = payload if type(payload) is bytes else _readable_view(payload)
        header, trailer = framing._wrap(view)
        if len(view) > _COPY_MAX:
            return [part for part in (header, view, trailer) if part]
        return [b"".join((header, view, trailer))]

    def encode_many(self, payloads: Any) -> list[Any]:
        """The buffers of one frame per payload, in order (see the class docstring). Every
        payload is validated first: on an error nothing is returned."""
        if isinstance(payloads, (bytes, bytearray, memoryview, str)):
            raise TypeError(f"expected an iterable of bytes-like objects, not a single {type(payloads).__name__}")
        framing = self._framing
        if framing._value_codec:  # RESP: values, each encoded as a reply, joined as writelines
            encode = framing.encode
            replies = [encode(value) for value in payloads]
            return _join_small([(b"", b"", r if type(r) is bytes else bytes(r)) for r in replies])
        try:
            views = [p if type(p) is bytes else _readable_view(p) for p in payloads]
        except TypeError as exc:
            if "is not iterable" in str(exc):
                raise TypeError("expected an iterable of bytes-like objects") from None
            raise
        wrap = framing._wrap
        return _join_small([(*wrap(v), v) for v in views])


def _join_small(frames: list[tuple[bytes, bytes, Any]]) -> list[Any]:
    """(header, trailer, payload) per frame: runs of small frames joined into one bytes
    object each, payloads above COPY_MAX between them as they are."""
    out: list[Any] = []
    run: list[Any] = []
    for header, trailer, payload in frames:
        if len(payload) <= _COPY_MAX:
            run += (header, payload, trailer)
            continue
        run.append(header)
        joined = b"".join(run)
        if joined:
            out.append(joined)
        out.append(payload)
        run = [trailer]
    joined = b"".join(run)
    if joined:
        out.append(joined)
    return out


class _FrameDelivery:
    """_FrameDelivery(decoder, protocol)

    fastsock.aio.FramedProtocol's buffer_updated() as one callable (the compiled twin in
    fastsock/_c/decoder.pxi saves the Python frame): a read that completes frames goes to
    protocol.frames_received(frames); `paused` (kept by the protocol) sends the bytes to
    protocol._hold(nbytes), a decoding error to protocol._bad_frame(exc), a full buffer
    without a frame to protocol._deliver([]). The protocol is held by a weak reference (it
    holds this object: no cycle); once it is gone, a call only commits what was read."""

    __slots__ = ("_dec", "_protocol_ref", "_max_buffer", "paused")

    def __init__(self, decoder: FrameDecoder, protocol: Any) -> None:
        if not isinstance(decoder, FrameDecoder):
            raise TypeError("Argument 'decoder' has incorrect type "
                            f"(expected FrameDecoder, got {type(decoder).__name__})")
        self._dec = decoder
        self._protocol_ref = weakref.ref(protocol)
        self._max_buffer = decoder.max_buffer
        self.paused = False

    def __call__(self, nbytes: int) -> None:
        protocol = self._protocol_ref()
        if protocol is None:
            self._dec.commit(nbytes)
            return
        if self.paused:
            protocol._hold(nbytes)
            return
        try:
            frames = self._dec.buffer_updated(nbytes)
        except (FrameTooLarge, FramingError) as exc:
            protocol._bad_frame(exc)
            return
        if frames:
            protocol.frames_received(frames)  # looked up per call, as the Python path does
        elif self._dec.buffered >= self._max_buffer:
            protocol._deliver(frames)
