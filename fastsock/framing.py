"""Message framings: how a byte stream is cut into messages, and how messages are written.

A stream socket carries bytes, not messages. Each framing here is a small immutable value
object that both encodes (`encode(payload)`) and decodes (`decode(data)`), so the same
`fastsock.Stream(sock, framing=...)` serves both ends of a conversation. Both backends
share these classes; the compiled Stream reads their fields once and scans in C.

Every framing bounds the payload with `max_size` (16 MiB by default): a header announcing
more, or a delimiter not found within `max_size` bytes, raises `FrameTooLarge` before
anything is allocated for the frame.
"""

from __future__ import annotations

import operator
import struct
from typing import Any, ClassVar, Optional

from ._errors import FrameTooLarge

__all__ = [
    "Framing",
    "FramingError",
    "LengthPrefix",
    "Varint",
    "Delimiter",
    "FixedLength",
    "AsciiLength",
    "Netstring",
    "RESP",
    "DEFAULT_MAX_SIZE",
]

#: Default `max_size` of every framing: the largest payload accepted (16 MiB).
DEFAULT_MAX_SIZE = 16 * 1024 * 1024

#: Largest `max_size` any framing accepts (keeps every size computation exact in C).
SIZE_LIMIT = 1 << 60

# FrameTooLarge.size is saturated here, like the C scanners' uint64_t.
_U64_MAX = (1 << 64) - 1

# Kind codes shared with src_c/fs_frame.h (FS_FRAMING_*).
_LENGTH, _VARINT, _DELIMITER, _FIXED, _ASCII, _NETSTRING, _RESP = 1, 2, 3, 4, 5, 6, 7

#: What `_scan` returns: (header, payload_len, total) for a complete frame, or, when more
#: bytes are needed, (-1, total, x). `total` is the frame's whole size once its header says
#: it, else 0. With total 0, x is where a delimiter search resumes (relative to `start`);
#: with a known total, x is the header length when the payload runs to the frame's end (so
#: a Stream may receive a large payload straight into its result), -1 when bytes follow it.
Scan = tuple[int, int, int]

#: What `_scan_many` returns: (payloads, stop, resume); see Framing._scan_many.
ScanMany = tuple[list[bytes], int, int]


class FramingError(ValueError):
    """The bytes at the head of the stream cannot start a frame of this framing (a corrupt
    header, a netstring without its comma, ...). Nothing is consumed: the bytes stay buffered."""


def _max_size(value: Any, default: int, top: int, what: str) -> int:
    """Validate a `max_size` argument (None means `default`, itself clamped to `top`)."""
    if value is None:
        return min(default, top)
    size = operator.index(value)
    if size < 0:
        raise ValueError(f"{what} max_size must be >= 0, not {size}")
    if size > top:
        raise ValueError(f"{what} max_size {size} exceeds what it can encode ({top})")
    return size


class Framing:
    """Base class of the framings: immutable, comparable, hashable value objects.

    What a Stream asks of a framing (private; the pure Stream calls only these, and the
    compiled one does the same in src_c/fs_frame.c, keyed by `_kind`). A new framing
    implements `_scan` and its encoding (`_encode_length`, or `header` and `_trailer`)
    here, and the same rules in fs_frame.c; the rest has generic versions in this class:
    - `_scan(buf, start, end, resume)`: the frame at buf[start:end] (see `Scan`); its
      answer for no bytes at all, which must not depend on `resume`, is asked once when a
      Stream takes the framing.
    - `_scan_many(buf, start, end, resume, limit)`: every complete frame buffered, for
      read_frames(); a loop over `_scan` here, a faster loop in LengthPrefix.
    - `_wrap(payload)`: (header, trailer), the bytes written around a payload.
    - `_decode_payload`: None, or (RESP) what turns a frame's payload bytes into the object
      a reader gets; `_scan_many` then returns those objects. `_value_codec`: writes take
      values that `encode` turns into bytes whole (RESP replies), not payloads to wrap.
    """

    __slots__ = ("max_size",)
    _kind: ClassVar[int] = 0
    _fields: ClassVar[tuple[str, ...]] = ("max_size",)
    #: Bytes written after every payload.
    _trailer: ClassVar[bytes] = b""
    _decode_payload: Any = None
    _value_codec: ClassVar[bool] = False
    max_size: int

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _set(self, **fields: Any) -> None:
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._fields)

    def __hash__(self) -> int:
        return hash((type(self).__name__, *(getattr(self, f) for f in self._fields)))

    def __reduce__(self) -> Any:
        return (type(self), tuple(getattr(self, f) for f in self._fields))

    # -- encoding ---------------------------------------------------------------------
    def header(self, payload: Any) -> bytes:
        """The bytes written before `payload` (validates it: FrameTooLarge above max_size)."""
        size = memoryview(payload).nbytes  # bytes, not items (array('I'), 2-D views)
        if size > self.max_size:
            raise FrameTooLarge(size, self.max_size)
        return self._encode_length(size)

    def _encode_length(self, size: int) -> bytes:
        raise NotImplementedError

    def encode(self, payload: Any) -> bytes:
        """One whole frame carrying `payload` (any bytes-like object)."""
        return b"".join((self.header(payload), bytes(payload), self._trailer))

    def _wrap(self, payload: Any) -> tuple[bytes, bytes]:
        """(header, trailer): what a Stream writes before and after `payload` (bytes,
        bytearray or a flat memoryview of bytes), which is validated as by header()."""
        return self.header(payload), self._trailer

    # -- decoding ---------------------------------------------------------------------
    def _scan(self, buf: Any, start: int, end: int, resume: int) -> Scan:
        """Look for a frame at buf[start:end]; see `Scan`. Raises FrameTooLarge or FramingError."""
        raise NotImplementedError

    @property
    def _length_struct(self) -> Optional[struct.Struct]:
        """The struct.Struct of the header when a frame is exactly that header, whose one
        field is the payload's size, then the payload (no trailer, no check but max_size):
        loops that frame many messages in Python (the pure Server) decode and encode such
        headers inline with it. None for every other framing."""
        return None

    def _scan_many(self, buf: Any, start: int, end: int, resume: int, limit: int) -> ScanMany:
        """The complete frames in buf[start:end], at most `limit` (>= 1): (payloads, stop,
        resume). `stop` is the offset after the last frame taken; `resume` is what the next
        `_scan` at `stop` may be passed (a delimiter search's resume offset, else 0), as the
        `resume` given applies to the frame at `start`. Never raises FrameTooLarge or
        FramingError: it stops before a frame that is incomplete, too large or malformed,
        and the next `_scan` there raises. No I/O, and `buf` (bytes or bytearray) is not
        changed. The payloads are bytes: slices of `buf` if it is a bytes object (one copy
        of a large region then slicing is the cheapest way to take many frames), copies of
        its bytes otherwise."""
        frames: list[bytes] = []
        append = frames.append
        scan = self._scan
        sliced = type(buf) is bytes
        view = buf if sliced else memoryview(buf)
        pos = start
        try:
            while len(frames) < limit:
                header, payload, total = scan(buf, pos, end, resume)
                if header < 0:  # (-1, total, x): x is a resume offset only while total is 0
                    return frames, pos, 0 if payload else total
                at = pos + header
                append(buf[at:at + payload] if sliced else bytes(view[at:at + payload]))
                pos += total
                resume = 0
        except (FrameTooLarge, FramingError):
            resume = 0
        return frames, pos, resume

    def decode(self, data: Any) -> Optional[tuple[bytes, int]]:
        """Decode the frame at the start of `data`: (payload, bytes consumed), or None if
        `data` holds only part of a frame. Raises FrameTooLarge or FramingError."""
        buf = bytes(data)
        header, payload, total = self._scan(buf, 0, len(buf), 0)
        if header < 0:
            return None
        frame = buf[header:header + payload]
        return (frame if self._decode_payload is None else self._decode_payload(frame)), total


class LengthPrefix(Framing):
    """A binary length prefix of `size` bytes (1, 2, 4 or 8), big or little endian, then
    the payload (the HOWTO's htonl/ntohl header)."""

    __slots__ = ("size", "byteorder", "_struct")
    _kind = _LENGTH
    _fields = ("size", "byteorder", "max_size")
    size: int
    byteorder: str

    def __init__(self, size: int = 4, byteorder: str = "big", max_size: Optional[int] = None) -> None:
        size = operator.index(size)
        if size not in (1, 2, 4, 8):
            raise ValueError(f"LengthPrefix size must be 1, 2, 4 or 8, not {size}")
        if byteorder not in ("big", "little"):
            raise ValueError(f"byteorder must be 'big' or 'little', not {byteorder!r}")
        top = min(SIZE_LIMIT, (1 << (8 * size)) - 1)
        code = {1: "B", 2: "H", 4: "I", 8: "Q"}[size]
        self._set(size=size, byteorder=byteorder, max_size=_max_size(max_size, DEFAULT_MAX_SIZE, top, "LengthPrefix"),
                  _struct=struct.Struct((">" if byteorder == "big" else "<") + code))

    def _encode_length(self, size: int) -> bytes:
        return self._struct.pack(size)  # type: ignore[attr-defined,no-any-return]

    def _wrap(self, payload: Any) -> tuple[bytes, bytes]:
        size = len(payload)
        if size > self.max_size:
            raise FrameTooLarge(size, self.max_size)
        return self._struct.pack(size), b""  # type: ignore[attr-defined]

    @property
    def _length_struct(self) -> Optional[struct.Struct]:
        return self._struct  # type: ignore[attr-defined,no-any-return]

    def _scan(self, buf: Any, start: int, end: int, resume: int) -> Scan:
        width = self.size
        if end - start < width:
            return -1, 0, 0
        (size,) = self._struct.unpack_from(buf, start)  # type: ignore[attr-defined]
        if size > self.max_size:
            raise FrameTooLarge(size, self.max_size)
        if end - start < width + size:
            return -1, width + size, width
        return width, size, width + size

    def _scan_many(self, buf: Any, start: int, end: int, resume: int, limit: int) -> ScanMany:
        # Framing._scan_many's contract, without a _scan call per frame.
        if type(buf) is not bytes:
            return Framing._scan_many(self, buf, start, end, resume, limit)
        unpack = self._struct.unpack_from  # type: ignore[attr-defined]
        width = self.size
        top = self.max_size
        frames: list[bytes] = []
        append = frames.append
        pos = start
        while top >= end - start:
            # The common case, with two checks fewer per frame: no frame that fits in
            # buf[start:end] can exceed max_size, and n bytes hold at most n // width
            # frames, so `limit` cannot be passed inside `region`.
            room = limit - len(frames)
            region = end if room >= (end - pos) // width else pos + room * width
            last = region - width
            before = pos
            while pos <= last:
                body = pos + width
                stop = body + unpack(buf, pos)[0]
                if stop > region:
                    break
                append(buf[body:stop])
                pos = stop
            if region == end:
                return frames, pos, 0
            if pos == before:
                break  # no frame fits in the region: the checked loop finishes
        count = len(frames)
        while count < limit and end - pos >= width:
            size = unpack(buf, pos)[0]
            stop = pos + width + size
            if size > top or stop > end:
                break
            append(buf[pos + width:stop])
            pos = stop
            count += 1
        return frames, pos, 0


class Varint(Framing):
    """A protobuf-style base-128 varint length prefix (1 to 10 bytes), then the payload."""

    __slots__ = ()
    _kind = _VARINT

    def __init__(self, max_size: Optional[int] = None) -> None:
        self._set(max_size=_max_size(max_size, DEFAULT_MAX_SIZE, SIZE_LIMIT, "Varint"))

    def _encode_length(self, size: int) -> bytes:
        out = bytearray()
        while size >= 0x80:
            out.append((size & 0x7F) | 0x80)
            size >>= 7
        out.append(size)
        return bytes(out)

    def _scan(self, buf: Any, start: int, end: int, resume: int) -> Scan:
        value = 0
        for i in range(10):
            if start + i >= end:
                return -1, 0, 0
            byte = buf[start + i]
            if i == 9 and byte > 1:
                raise FramingError("varint length prefix longer than 64 bits")
            value |= (byte & 0x7F) << (7 * i)
            if value > self.max_size:
                raise FrameTooLarge(value, self.max_size)
            if not byte & 0x80:
                if end - start < i + 1 + value:
                    return -1, i + 1 + value, i + 1
                return i + 1, value, i + 1 + value
        raise FramingError("varint length prefix longer than 64 bits")


class Delimiter(Framing):
    """The payload, then `delimiter` (any non-empty bytes). With `keep=True` the frames read
    include the delimiter; `write_frame` always takes the bare payload and adds it, and
    refuses a payload that contains the delimiter, or whose end and the delimiter written
    after it would hold one sooner (b"ab" for b"aba"): such a frame would read back shorter
    (FramingError)."""

    __slots__ = ("delimiter", "keep")
    _kind = _DELIMITER
    _fields = ("delimiter", "max_size", "keep")
    delimiter: bytes
    keep: bool

    def __init__(self, delimiter: Any = b"\n", max_size: Optional[int] = None, keep: bool = False) -> None:
        if isinstance(delimiter, str):
            raise TypeError("Delimiter needs bytes, not str (encode it first)")
        delimiter = bytes(delimiter)
        if not delimiter:
            raise ValueError("Delimiter cannot be empty")
        self._set(delimiter=delimiter, keep=bool(keep),
                  max_size=_max_size(max_size, DEFAULT_MAX_SIZE, SIZE_LIMIT, "Delimiter"))

    @property
    def _trailer(self) -> bytes:  # type: ignore[override]
        return self.delimiter

    def _wrap(self, payload: Any) -> tuple[bytes, bytes]:
        return self.header(payload), self.delimiter

    def header(self, payload: Any) -> bytes:
        """No header; validates that `payload` fits and that the delimiter's first
        occurrence in payload + delimiter is the one written after it (as fs_frame.c)."""
        view = memoryview(payload)
        if view.nbytes > self.max_size:  # bytes, not items
            raise FrameTooLarge(view.nbytes, self.max_size)
        data = payload if isinstance(payload, (bytes, bytearray)) else view.tobytes()
        delim = self.delimiter
        if delim in data:
            raise FramingError("payload contains the delimiter")
        if len(delim) > 1 and data:  # a tail of the payload that the delimiter completes
            tail = bytes(data[-(len(delim) - 1):])
            if (tail + delim).find(delim) < len(tail):
                raise FramingError("payload contains the delimiter")
        return b""

    def _scan(self, buf: Any, start: int, end: int, resume: int) -> Scan:
        dlen = len(self.delimiter)
        window = min(end, start + self.max_size + dlen)
        at = buf.find(self.delimiter, min(start + resume, window), window)
        if at < 0:
            if window < end or end - start >= self.max_size + dlen:
                raise FrameTooLarge(end - start, self.max_size,
                                    f"no delimiter within {self.max_size} bytes")
            return -1, 0, max(0, window - start - (dlen - 1))
        size = at - start
        if size > self.max_size:
            raise FrameTooLarge(size, self.max_size)
        return 0, size + dlen if self.keep else size, size + dlen


class FixedLength(Framing):
    """Every message is exactly `n` bytes; no header."""

    __slots__ = ("n",)
    _kind = _FIXED
    _fields = ("n",)
    n: int

    def __init__(self, n: int) -> None:
        n = operator.index(n)
        if n < 1 or n > SIZE_LIMIT:
            raise ValueError(f"FixedLength n must be between 1 and {SIZE_LIMIT}, not {n}")
        self._set(n=n, max_size=n)

    def header(self, payload: Any) -> bytes:
        """No header; a payload of any other length than `n` raises FramingError."""
        size = memoryview(payload).nbytes  # bytes, not items (array('I'), 2-D views)
        if size != self.n:
            raise FramingError(f"FixedLength({self.n}) payload must be {self.n} bytes, not {size}")
        return b""

    def _scan(self, buf: Any, start: int, end: int, resume: int) -> Scan:
        if end - start < self.n:
            return -1, self.n, 0
        return 0, self.n, self.n


class AsciiLength(Framing):
    """The length as `width` zero-padded ASCII digits, then the payload (the HOWTO's
    "length as 5 numeric characters"). A header that is not all digits raises
    FramingError (as soon as a non-digit shows); an all-digit one above `max_size` raises
    FrameTooLarge."""

    __slots__ = ("width",)
    _kind = _ASCII
    _fields = ("width", "max_size")
    width: int

    def __init__(self, width: int = 5, max_size: Optional[int] = None) -> None:
        width = operator.index(width)
        if width < 1 or width > 20:
            raise ValueError(f"AsciiLength width must be between 1 and 20, not {width}")
        top = min(SIZE_LIMIT, 10 ** width - 1)
        self._set(width=width, max_size=_max_size(max_size, DEFAULT_MAX_SIZE, top, "AsciiLength"))

    def _encode_length(self, size: int) -> bytes:
        return b"%0*d" % (self.width, size)

    def _scan(self, buf: Any, start: int, end: int, resume: int) -> Scan:
        width = self.width
        digits = bytes(buf[start:min(end, start + width)])
        if digits and not digits.isdigit():  # bytes.isdigit is ASCII-only
            raise FramingError(f"AsciiLength header is not {width} ASCII digits: {digits!r}")
        if len(digits) < width:
            return -1, 0, 0
        size = int(digits)
        if size > self.max_size:
            raise FrameTooLarge(min(size, _U64_MAX), self.max_size)  # saturated like fs_frame.c
        if end - start < width + size:
            return -1, width + size, width
        return width, size, width + size


class Netstring(Framing):
    """D. J. Bernstein's netstrings: b"<decimal length>:<payload>,". As the spec says, a
    length has no leading zeros (b"0:," is the empty payload): b"00..." raises FramingError
    at its second byte, and a length longer than `max_size` in digits raises FrameTooLarge
    at the digit that exceeds it, so a hostile header costs a bounded scan."""

    __slots__ = ()
    _kind = _NETSTRING
    _trailer = b","

    def __init__(self, max_size: Optional[int] = None) -> None:
        self._set(max_size=_max_size(max_size, DEFAULT_MAX_SIZE, SIZE_LIMIT, "Netstring"))

    def _encode_length(self, size: int) -> bytes:
        return b"%d:" % size

    def _scan(self, buf: Any, start: int, end: int, resume: int) -> Scan:
        limit = self.max_size
        size = 0
        if end - start >= 2 and buf[start] == 48 and 48 <= buf[start + 1] <= 57:
            raise FramingError("netstring length has a leading zero")
        for i in range(start, end):
            byte = buf[i]
            if 48 <= byte <= 57:
                size = size * 10 + byte - 48
                if size > limit:
                    raise FrameTooLarge(size, limit)
                continue
            if byte != 58 or i == start:  # ':' after at least one digit
                raise FramingError("netstring length is not decimal digits followed by ':'")
            header = i + 1 - start
            total = header + size + 1
            if end - start < total:
                return -1, total, -1  # the comma follows the payload
            if buf[start + total - 1] != 44:
                raise FramingError("netstring does not end with ','")
            return header, size, total
        return -1, 0, 0


# RESP: the resume point of a partial command packs (offset of the next argument header,
# arguments complete before it), as in src_c/fs_resp.h.
_RESP_OFFSET_BITS = 40
_RESP_OFFSET_MASK = (1 << _RESP_OFFSET_BITS) - 1
#: Largest RESP max_size and max_args (the resume point's fields).
RESP_SIZE_LIMIT = _RESP_OFFSET_MASK
RESP_ARGS_LIMIT = (1 << (64 - _RESP_OFFSET_BITS)) - 1
#: Default RESP max_args (Redis's own limit for a command's arguments).
RESP_DEFAULT_MAX_ARGS = 1024 * 1024
_DIGITS = frozenset(b"0123456789")
# An inline line's bytes as b" " (space, tab) or b"x" (any other): its words start at " x".
_BLANK_MARKS = bytes(32 if c in (9, 32) else 120 for c in range(256))


def _too_many_args(count: int, limit: int) -> FrameTooLarge:
    """The error for a RESP command of `count` arguments, above max_args (`limit`)."""
    return FrameTooLarge(count, limit, f"a command of {count} arguments exceeds max_args={limit}")


class RESP(Framing):
    """Client commands of the Redis protocol: a frame is one command, read as the list of its
    arguments (bytes), from an array of bulk strings (``*2\r\n$3\r\nGET\r\n$1\r\nk\r\n``, what
    every client library sends) or an inline line (``GET k\r\n``, split at spaces and tabs,
    quotes not interpreted). ``*0``, ``*-1`` and an empty line are commands of no arguments.

    `max_size` bounds a whole command in bytes, headers included, and `max_args` its
    argument count; both are refused as soon as a header's digits pass them, before
    anything is reserved for the command (FrameTooLarge; `.limit` says which). A header
    that is not RESP raises FramingError.

    Writing (`Stream.write_frame`, a Server handler's return value, `conn.send`) takes a
    value and encodes it as a reply by the rules of `fastsock.resp` (bytes: bulk string,
    str: simple string, int: integer, list: array, `resp.Error`, `resp.NULL`, ...); bulk
    strings above `max_size` raise FrameTooLarge.
    """

    __slots__ = ("max_args",)
    _kind = _RESP
    _fields = ("max_size", "max_args")
    _trailer = b"\r\n"  # after a bulk string reply, whose header() is "$<size>\r\n"
    _value_codec = True
    max_args: int

    def __init__(self, max_size: Optional[int] = None, max_args: Optional[int] = None) -> None:
        size = _max_size(max_size, DEFAULT_MAX_SIZE, RESP_SIZE_LIMIT, "RESP")
        if size < 1:
            raise ValueError("RESP max_size must be >= 1")
        args = RESP_DEFAULT_MAX_ARGS if max_args is None else operator.index(max_args)
        if not 0 <= args <= RESP_ARGS_LIMIT:
            raise ValueError(f"RESP max_args must be between 0 and {RESP_ARGS_LIMIT}, not {args}")
        self._set(max_size=size, max_args=args)

    def _encode_length(self, size: int) -> bytes:
        return b"$%d\r\n" % size

    def encode(self, value: Any) -> bytes:
        """The reply encoding `value` (see fastsock.resp.encode; None: the null bulk string)."""
        from . import resp

        return resp.encode(value, self.max_size)

    # -- decoding ---------------------------------------------------------------------
    def _number(self, buf: Any, pos: int, end: int, limit: int, null_ok: bool, args: bool) -> Optional[tuple[int, int]]:
        """The "<type><digits>\r\n" line at buf[pos:end]: (value, offset after it), None if
        incomplete; FrameTooLarge as soon as the digits pass `limit`. `null_ok`: "-1" is
        accepted as 0. The same checks, in the same order, as number_line in fs_resp.c."""
        i = pos + 1
        neg = null_ok and i < end and buf[i] == 45  # '-'
        if neg:
            i += 1
        digits = i
        value = 0
        while i < end and buf[i] in _DIGITS:
            if i - digits == 19:
                raise FramingError("RESP length or count longer than 19 digits")
            value = value * 10 + buf[i] - 48
            if not neg and value > limit:
                if args:
                    raise _too_many_args(value, limit)
                raise FrameTooLarge(value, limit)
            i += 1
        if i == end:
            return None
        if i == digits or buf[i] != 13:
            raise FramingError(f"malformed RESP header {bytes(buf[pos:i + 1])!r}")
        if i + 1 == end:
            return None
        if buf[i + 1] != 10:
            raise FramingError("RESP header line does not end with CR LF")
        if neg:
            if value != 1:
                raise FramingError("a RESP command count is -1 or >= 0")
            value = 0
        return value, i + 2

    def _command(self, buf: Any, start: int, end: int, resume: int, collect: bool) -> tuple[int, Any]:
        """(total, arguments if collect) for the command at buf[start:end], or (-1, resume)
        while incomplete (resume: see _RESP_OFFSET_BITS). Raises FrameTooLarge/FramingError."""
        if start == end:
            return -1, 0
        limit = self.max_size
        if buf[start] != 42:  # '*': else an inline line
            window = min(end, start + limit)
            at = buf.find(b"\n", min(start + resume, window), window)
            if at < 0:
                if end - start >= limit:
                    raise FrameTooLarge(max(end - start, limit + 1), limit, f"no end of line within {limit} bytes")
                return -1, window - start
            stop = at - 1 if at > start and buf[at - 1] == 13 else at
            # Counted before anything is split (as fs_resp.c counts): one byte per byte, not
            # one bytes object per word, until the count is known to be within max_args.
            marks = bytes(buf[start:stop]).translate(_BLANK_MARKS)
            count = marks.count(b" x") + marks.startswith(b"x")
            if count > self.max_args:
                raise _too_many_args(count, self.max_args)
            if not collect:
                return at + 1 - start, None
            line = bytes(buf[start:stop])
            return at + 1 - start, [w for w in line.replace(b"\t", b" ").split(b" ") if w]
        head = self._number(buf, start, end, self.max_args, True, True)
        if head is None:
            return -1, 0
        count, pos = head
        done = 0
        if resume:
            pos = start + (resume & _RESP_OFFSET_MASK)
            done = resume >> _RESP_OFFSET_BITS
        args: list[bytes] = [] if collect else None  # type: ignore[assignment]
        if collect and done:  # a frame is collected in one call from its start
            raise AssertionError("RESP arguments are collected from a fresh scan")
        number = self._number
        while done < count:
            if pos >= end:
                return -1, (pos - start) | (done << _RESP_OFFSET_BITS)
            if buf[pos] != 36:  # '$'
                raise FramingError(f"RESP command argument does not start with '$': {bytes(buf[pos:pos + 1])!r}")
            sized = number(buf, pos, end, limit, False, False)
            if sized is None:
                return -1, (pos - start) | (done << _RESP_OFFSET_BITS)
            size, body = sized
            stop = body + size
            if stop + 2 - start > limit:
                raise FrameTooLarge(stop + 2 - start, limit)
            if (stop < end and buf[stop] != 13) or (stop + 1 < end and buf[stop + 1] != 10):
                raise FramingError("RESP bulk string does not end with CR LF")
            if stop + 2 > end:
                return -1, (pos - start) | (done << _RESP_OFFSET_BITS)
            if collect:
                args.append(bytes(buf[body:stop]))
            pos = stop + 2
            done += 1
        if pos - start > limit:
            raise FrameTooLarge(pos - start, limit)
        return pos - start, args

    def _scan(self, buf: Any, start: int, end: int, resume: int) -> Scan:
        total, extra = self._command(buf, start, end, resume, False)
        if total < 0:
            return -1, 0, extra
        return 0, total, total

    def _decode_payload(self, data: Any) -> list[bytes]:
        """The arguments of one whole command (bytes a _scan accepted)."""
        total, args = self._command(data, 0, len(data), 0, True)
        if total != len(data):
            raise AssertionError("not one whole RESP command")
        return args  # type: ignore[no-any-return]

    def _scan_many(self, buf: Any, start: int, end: int, resume: int, limit: int) -> ScanMany:
        # Framing._scan_many's contract, with each command's argument list as its frame.
        frames: list[Any] = []
        pos = start
        command = self._command
        try:
            while len(frames) < limit:
                if resume:  # the first command was partly scanned: finish the scan, then collect
                    total, extra = command(buf, pos, end, resume, False)
                    if total < 0:
                        return frames, pos, extra
                    resume = 0
                total, args = command(buf, pos, end, 0, True)
                if total < 0:
                    return frames, pos, args
                frames.append(args)
                pos += total
        except (FrameTooLarge, FramingError):
            resume = 0
        return frames, pos, resume
