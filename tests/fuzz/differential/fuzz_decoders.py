"""Differential fuzzer (atheris): the same bytes, cut the same way, into the compiled and the
pure FrameDecoder must give the same frames, the same exceptions (type and attributes), the
same bytes left buffered and the same end-of-input answer.

    python tests/fuzz/differential/fuzz_decoders.py tests/fuzz/differential/corpus -runs=100000

The input's first bytes choose the framing (every kind, with small limits so that
FrameTooLarge is reachable) and max_buffer; the rest is a sequence of operations (feed,
get_buffer + buffer_updated, next_frame, frames(n), read(n), read_exactly(n), discard(n),
peek, eof), each run on both decoders and compared. A difference raises AssertionError with
both outcomes; atheris saves the input. Needs the compiled extension (the point is to
compare it) and atheris (PyPI, where it installs: CPython on Linux x86_64).
"""

from __future__ import annotations

import sys
from typing import Any

import atheris

with atheris.instrument_imports():
    import fastsock._py as pure
    from fastsock import framing as fr

from fastsock._c import _speedups as compiled

ATTRS = ("frames", "size", "limit", "partial", "expected")


def make_framing(fdp: Any) -> Any:
    """A framing of every kind the scanners know, with limits small enough to reach."""
    kind = fdp.ConsumeIntInRange(0, 7)
    max_size = fdp.ConsumeIntInRange(0, 300)
    if kind == 0:
        return fr.LengthPrefix(fdp.PickValueInList([1, 2, 4, 8]), fdp.PickValueInList(["big", "little"]), max_size)
    if kind == 1:
        return fr.Varint(max_size)
    if kind == 2:
        delim = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 4)) or b"\n"
        return fr.Delimiter(delim, max_size, fdp.ConsumeBool())
    if kind == 3:
        return fr.Netstring(max_size)
    if kind == 4:
        return fr.AsciiLength(fdp.ConsumeIntInRange(1, 6), max_size)
    if kind == 5:
        return fr.FixedLength(fdp.ConsumeIntInRange(1, 64))
    if kind == 6:
        return fr.RESP(max_size or None, fdp.ConsumeIntInRange(1, 8))
    return None  # bytes only: the frame methods raise ValueError on both


def outcome(call: Any) -> tuple[Any, ...]:
    """What a call did: its result, or its exception's type, message-independent attributes."""
    try:
        return ("ok", call())
    except Exception as exc:  # every exception is compared
        return ("raised", type(exc).__name__, tuple(getattr(exc, a, None) for a in ATTRS))


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    try:
        framing = make_framing(fdp)
    except (TypeError, ValueError):
        return  # a framing both backends refuse (framing.py builds them for both)
    max_buffer = fdp.ConsumeIntInRange(1, 2048)
    c = compiled.FrameDecoder(framing, max_buffer=max_buffer)
    p = pure.FrameDecoder(framing, max_buffer=max_buffer)
    for _ in range(fdp.ConsumeIntInRange(1, 40)):
        op = fdp.ConsumeIntInRange(0, 8)
        n = fdp.ConsumeIntInRange(-1, 300)
        if op == 0:
            chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200))
            results = [outcome(lambda d=d, chunk=chunk: d.feed(chunk)) for d in (c, p)]
        elif op == 1:
            chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200))
            hint = fdp.ConsumeIntInRange(-1, 300)

            def received(d: Any, chunk: bytes = chunk, hint: int = hint) -> Any:
                view = d.get_buffer(hint)
                k = min(len(view), len(chunk))
                view[:k] = chunk[:k]
                return d.buffer_updated(k)

            results = [outcome(lambda d=d: received(d)) for d in (c, p)]
        else:
            name = ["next_frame", "frames", "read", "read_exactly", "discard", "peek", "eof"][op - 2]
            args = () if name in ("next_frame", "eof") else (n if n > 0 or name in ("read", "peek") else 1,)
            results = [outcome(lambda d=d, name=name, args=args: getattr(d, name)(*args)) for d in (c, p)]
        assert results[0] == results[1], (op, results, framing, max_buffer)
        assert c.buffered == p.buffered, (op, c.buffered, p.buffered, framing)
        assert c.peek() == p.peek(), (op, framing)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
