"""RESP commands parsed in plain Python: what a careful asyncio programmer writes (bytes.find
for each line, int() for each count), shared by W6's stdlib selectors, asyncio Protocol and
uvloop Protocol servers so that they differ only in their event loop.

A command is an array of bulk strings (`*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n`) or an inline
line (`PING\\r\\n`, as redis-benchmark's PING_INLINE sends). Each command runs through the
example's `execute` and its reply through `fastsock.resp.encode`, as in examples/resp_server.py.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

MAX_ARGS = 1024 * 1024  # as redis-server: more arguments, or a longer bulk string, is a broken client
MAX_BULK = 512 * 1024 * 1024
MAX_INLINE = 64 * 1024


class ProtocolError(ValueError):
    """Bytes that are not RESP commands (the connection is dropped)."""


def command(data: bytes, pos: int) -> tuple[Optional[list[bytes]], int]:
    """(the arguments of the command at `pos`, the offset after it), or (None, pos) when the
    command is not complete yet. An empty inline line gives ([], offset after it)."""
    find = data.find
    if data[pos] != 42:  # b"*": an inline command
        nl = find(b"\n", pos)
        if nl < 0:
            if len(data) - pos > MAX_INLINE:
                raise ProtocolError("inline command too long")
            return None, pos
        return data[pos:nl].split(), nl + 1
    nl = find(b"\r\n", pos)
    if nl < 0:
        return None, pos
    try:
        count = int(data[pos + 1:nl])
    except ValueError:
        raise ProtocolError(f"bad array header {data[pos:nl][:20]!r}") from None
    if count > MAX_ARGS:
        raise ProtocolError(f"{count} arguments")
    p = nl + 2
    end = len(data)
    args = []
    for _ in range(count):
        if p >= end:
            return None, pos
        if data[p] != 36:  # b"$"
            raise ProtocolError("an array of commands holds bulk strings only")
        nl = find(b"\r\n", p)
        if nl < 0:
            return None, pos
        try:
            size = int(data[p + 1:nl])
        except ValueError:
            raise ProtocolError(f"bad bulk header {data[p:nl][:20]!r}") from None
        if not 0 <= size <= MAX_BULK:
            raise ProtocolError(f"bulk string of {size} bytes")
        start = nl + 2
        stop = start + size
        if stop + 2 > end:
            return None, pos
        args.append(data[start:stop])
        p = stop + 2
    return args, p


def responder(execute: Callable[[list[bytes]], Any], encode: Callable[[Any], bytes]
              ) -> Callable[[bytes], tuple[int, bytes, bool]]:
    """respond(buf) -> (consumed, replies, close) over RESP, like examples/http_server.py's
    `respond` over HTTP: every complete command at the start of `buf` runs, and its encoded
    reply joins `replies`; `close` after QUIT (whose reply is sent first)."""

    def respond(data: bytes) -> tuple[int, bytes, bool]:
        out: list[bytes] = []
        append = out.append
        pos, end = 0, len(data)
        while pos < end:
            args, nxt = command(data, pos)
            if args is None:
                break
            pos = nxt
            if not args:
                continue
            append(encode(execute(args)))
            if args[0].upper() == b"QUIT":
                return pos, b"".join(out), True
        return pos, b"".join(out), False

    return respond
