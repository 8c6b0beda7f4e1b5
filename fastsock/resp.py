"""Replies of the Redis protocol (RESP2), encoded, for servers framed with `fastsock.RESP`.

A handler on a RESP server returns a value and the framing encodes it as a reply:

    ====================================  ==============================================
    the handler returns                   the client reads
    ====================================  ==============================================
    ``None``                              nothing (the Server's "no reply")
    ``bytes``, ``bytearray``, memoryview  a bulk string ``$<len>\\r\\n<bytes>\\r\\n``
    ``str``                               a simple string ``+<text>\\r\\n`` (UTF-8; no CR/LF)
    ``int`` (``bool`` too: 1/0)           an integer ``:<n>\\r\\n``
    ``list`` or ``tuple``                 an array, each item encoded by these rules, where
                                          ``None`` is a null bulk string (MGET's misses)
    ``Error("ERR ...")``                  an error ``-ERR ...\\r\\n``
    ``NULL`` / ``NULL_ARRAY``             a null bulk string ``$-1`` / null array ``*-1``
    a ``Reply`` (any helper's result)     its bytes, unchanged (already encoded)
    ====================================  ==============================================

Anything else raises TypeError. The helpers (`simple`, `error`, `integer`, `bulk`, `array`)
return `Reply` objects, so a constant built once (``OK = simple("OK")``) costs nothing per
reply; `conn.write(reply)` sends one directly. `command(*args)` encodes a client command.
"""

from __future__ import annotations

from typing import Any, Optional

from ._errors import FrameTooLarge

__all__ = [
    "Reply",
    "Error",
    "NULL",
    "NULL_ARRAY",
    "OK",
    "PONG",
    "simple",
    "error",
    "integer",
    "bulk",
    "array",
    "encode",
    "command",
]


class Reply(bytes):
    """Bytes already encoded as a RESP reply: `encode` (and a RESP Server) sends them as they are."""

    __slots__ = ()


class Error:
    """An error reply; `message` starts with its code by convention ("ERR", "WRONGTYPE")."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        _line(message, "an error message")
        self.message = message

    def __repr__(self) -> str:
        return f"Error({self.message!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is Error and other.message == self.message

    def __hash__(self) -> int:
        return hash(("Error", self.message))


def _line(text: Any, what: str) -> bytes:
    """text (str or bytes) as the bytes of one protocol line: ValueError for CR or LF in it."""
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    if b"\r" in data or b"\n" in data:
        raise ValueError(f"{what} cannot contain CR or LF: {text!r}")
    return data


def simple(text: Any) -> Reply:
    """A simple string reply (``+OK``): text (str or bytes) without CR or LF."""
    return Reply(b"+%s\r\n" % _line(text, "a simple string"))


def error(message: Any) -> Reply:
    """An error reply (``-ERR unknown command``): message without CR or LF."""
    return Reply(b"-%s\r\n" % _line(message, "an error message"))


def integer(value: int) -> Reply:
    """An integer reply (``:42``); RESP integers are signed 64-bit."""
    value = int(value)
    if not -(1 << 63) <= value < (1 << 63):
        raise ValueError(f"a RESP integer is signed 64-bit: {value}")
    return Reply(b":%d\r\n" % value)


def bulk(data: Any, max_size: Optional[int] = None) -> Reply:
    """A bulk string reply (any bytes-like object; None: the null bulk string)."""
    if data is None:
        return NULL
    return Reply(_bulk(data, max_size))


def array(items: Any, max_size: Optional[int] = None) -> Reply:
    """An array reply of `items`, each encoded by the rules of `encode` (None: null bulk)."""
    if items is None:
        return NULL_ARRAY
    return Reply(_array(items, max_size))


def encode(value: Any, max_size: Optional[int] = None) -> bytes:
    """The reply for `value` by the table above; a bulk string above `max_size` (when given)
    raises FrameTooLarge, as a framed reply above its framing's max_size does."""
    kind = type(value)
    if kind is Reply:
        return value  # type: ignore[no-any-return]
    if kind is bytes or kind is bytearray or kind is memoryview:
        return _bulk(value, max_size)
    if kind is str:
        return b"+%s\r\n" % _line(value, "a simple string")
    if kind is int or kind is bool:
        return integer(value)
    if kind is list or kind is tuple:
        return _array(value, max_size)
    if kind is Error:
        return b"-%s\r\n" % value.message.encode("utf-8")
    if value is None:
        return NULL
    if isinstance(value, Reply):
        return bytes(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _bulk(value, max_size)
    if isinstance(value, int):
        return integer(value)
    raise TypeError(f"cannot encode {kind.__name__} as a RESP reply (bytes, str, int, list, tuple, "
                    "None, Error or Reply)")


def _bulk(data: Any, max_size: Optional[int]) -> bytes:
    view = memoryview(data)
    size = view.nbytes
    if max_size is not None and size > max_size:
        raise FrameTooLarge(size, max_size)
    return b"$%d\r\n%s\r\n" % (size, view if view.ndim == 1 and view.itemsize == 1 else view.tobytes())


def _array(items: Any, max_size: Optional[int]) -> bytes:
    parts = [b"*%d\r\n" % len(items)]
    parts.extend(NULL if item is None else encode(item, max_size) for item in items)
    return b"".join(parts)


def command(*args: Any) -> bytes:
    """A client command as an array of bulk strings: bytes-like, str (UTF-8) or int arguments."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode("utf-8")
        elif isinstance(arg, int) and not isinstance(arg, bool):
            arg = b"%d" % arg
        parts.append(_bulk(arg, None))
    return b"".join(parts)


NULL = Reply(b"$-1\r\n")
NULL_ARRAY = Reply(b"*-1\r\n")
OK = simple("OK")
PONG = simple("PONG")
