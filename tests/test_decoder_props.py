"""Property tests of FrameDecoder: for every framing, encoded payloads cut in any chunking
come back exactly, through feed() and through get_buffer()/buffer_updated(), and the same as a
Stream reading the same bytes from a socketpair; and the compiled and pure decoders agree on
any bytes (random or corrupted), any chunking: frames, errors, held bytes, eof()."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sockutil import Peer, examples, make_pair

from fastsock import FrameTooLarge, IncompleteReadError
from fastsock.framing import FramingError

pytestmark = pytest.mark.timeout(120)

C, PY = "fastsock._c._speedups", "fastsock._py"


def _no_delim(delim: bytes, max_size: int = 200) -> st.SearchStrategy[bytes]:
    """Payloads that hold no `delim`, also not across the payload/delimiter boundary."""
    return st.binary(max_size=max_size).filter(lambda p: (delim + p + delim)[1:-1].count(delim) == 0)


_args = st.lists(st.binary(max_size=60), min_size=1, max_size=5)

#: name, framing factory (backend module -> Framing), payload strategy, payload -> frame.
FRAMINGS: list[tuple[str, Callable[[ModuleType], Any], st.SearchStrategy[Any], Callable[[Any], Any]]] = [
    ("LengthPrefix(4,big)", lambda m: m.LengthPrefix(), st.binary(max_size=600), bytes),
    ("LengthPrefix(1,big)", lambda m: m.LengthPrefix(1), st.binary(max_size=255), bytes),
    ("LengthPrefix(2,little)", lambda m: m.LengthPrefix(2, "little"), st.binary(max_size=600), bytes),
    ("LengthPrefix(8,little)", lambda m: m.LengthPrefix(8, "little"), st.binary(max_size=600), bytes),
    ("Varint", lambda m: m.Varint(), st.binary(max_size=600), bytes),
    ("Delimiter(\\n)", lambda m: m.Delimiter(b"\n"), _no_delim(b"\n"), bytes),
    ("Delimiter(\\r\\n)", lambda m: m.Delimiter(b"\r\n"), _no_delim(b"\r\n"), bytes),
    ("Delimiter(END!)", lambda m: m.Delimiter(b"END!"), _no_delim(b"END!"), bytes),
    ("Delimiter(\\r\\n,keep)", lambda m: m.Delimiter(b"\r\n", keep=True), _no_delim(b"\r\n"),
     lambda p: p + b"\r\n"),
    ("Delimiter(ab,keep)", lambda m: m.Delimiter(b"ab", keep=True), _no_delim(b"ab"), lambda p: p + b"ab"),
    ("FixedLength(5)", lambda m: m.FixedLength(5), st.binary(min_size=5, max_size=5), bytes),
    ("AsciiLength(5)", lambda m: m.AsciiLength(), st.binary(max_size=600), bytes),
    ("Netstring", lambda m: m.Netstring(), st.binary(max_size=600), bytes),
    ("RESP", lambda m: m.RESP(), _args, list),
]
IDS = [f[0] for f in FRAMINGS]


def _chunks(wire: bytes, cuts: list[int]) -> list[bytes]:
    out, pos, i = [], 0, 0
    while pos < len(wire):
        size = cuts[i % len(cuts)]
        out.append(wire[pos:pos + size])
        pos += size
        i += 1
    return out


def _via_feed(dec: Any, chunks: list[bytes]) -> list[Any]:
    got: list[Any] = []
    for chunk in chunks:
        got += dec.feed(chunk)
    return got


def _via_buffer(dec: Any, wire: bytes, hints: list[int]) -> list[Any]:
    """Write `wire` into get_buffer() views: each time up to a hint-sized piece."""
    got: list[Any] = []
    pos, i = 0, 0
    while pos < len(wire):
        hint = hints[i % len(hints)]
        view = dec.get_buffer(hint)
        assert len(view) >= (hint if hint > 0 else 65536)
        n = min(len(view), len(wire) - pos, hint if hint > 0 else 1 << 30)
        view[:n] = wire[pos:pos + n]
        got += dec.buffer_updated(n)
        pos += n
        i += 1
    return got


def _via_stream(impl: ModuleType, framing: Any, wire: bytes) -> list[Any]:
    a, b = make_pair(impl, "unix")

    def write() -> None:
        with b:
            b.sendall(wire)

    writer = Peer(write)
    got: list[Any] = []
    with impl.Stream(a, framing=framing, read_size=64) as stream:
        while batch := stream.read_frames():
            got += batch
    writer.join()
    return got


_cuts = st.lists(st.integers(1, 700), min_size=1, max_size=8) | st.just([1])


@pytest.mark.parametrize("name,make,payload,frame", FRAMINGS, ids=IDS)
def test_chunkings_give_exactly_the_payloads(impl, name, make, payload, frame):
    framing = make(impl)

    @settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(payloads=st.lists(payload, max_size=20), cuts=_cuts,
           hints=st.lists(st.integers(-1, 900), min_size=1, max_size=8) | st.just([1]))
    def check(payloads, cuts, hints):
        wire = b"".join(framing.encode(p) for p in payloads)
        want = [frame(p) for p in payloads]
        for got, dec in ((_via_feed(d := impl.FrameDecoder(framing), _chunks(wire, cuts)), d),
                         (_via_buffer(d2 := impl.FrameDecoder(framing), wire, hints), d2)):
            assert got == want
            assert dec.buffered == 0
            assert dec.eof() is None
        assert _via_stream(impl, framing, wire) == want

    check()


# -- the compiled and the pure decoder agree on any bytes -----------------------------------

#: Framings for the differential, some with small max_size to reach FrameTooLarge from headers.
DIFF_FRAMINGS = [f[:2] for f in FRAMINGS] + [
    ("LengthPrefix(2,max_size=50)", lambda m: m.LengthPrefix(2, max_size=50)),
    ("Varint(max_size=50)", lambda m: m.Varint(max_size=50)),
    ("Delimiter(\\r\\n,max_size=20)", lambda m: m.Delimiter(b"\r\n", max_size=20)),
    ("AsciiLength(3,max_size=50)", lambda m: m.AsciiLength(3, max_size=50)),
    ("Netstring(max_size=50)", lambda m: m.Netstring(max_size=50)),
    ("RESP(max_size=50)", lambda m: m.RESP(max_size=50)),
]


def _outcome(fn: Callable[[], Any]) -> Any:
    """What a call did, comparable across backends: its value, or its exception's type and
    fields (not its message: the scanners' wording differs, as for Stream)."""
    try:
        return ("ok", fn())
    except FrameTooLarge as exc:
        return ("FrameTooLarge", exc.size, exc.limit, getattr(exc, "frames", None))
    except FramingError as exc:
        return ("FramingError", getattr(exc, "frames", None))
    except IncompleteReadError as exc:
        return ("IncompleteReadError", exc.partial, exc.expected)
    except Exception as exc:  # any other type differs too, and is reported with its message
        return (type(exc).__name__, str(exc))


def _step(dec: Any, chunk: bytes, how: str, hint: int) -> Any:
    if how == "feed":
        return dec.feed(chunk)
    view = dec.get_buffer(hint)
    n = min(len(view), len(chunk))
    view[:n] = chunk[:n]
    return dec.buffer_updated(n)


def _wire(impl: ModuleType, make: Callable[[ModuleType], Any]) -> st.SearchStrategy[bytes]:
    """Valid frames of the framing, then corrupted: bytes overwritten, inserted, cut off."""
    framing = make(impl)
    payloads = (st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=4), max_size=6)
                if isinstance(framing, impl.RESP) else
                st.lists(st.binary(min_size=framing.n, max_size=framing.n), max_size=6)
                if isinstance(framing, impl.FixedLength) else st.lists(st.binary(max_size=80), max_size=6))

    def encode(ps: list[Any]) -> bytes:
        out = b""
        for p in ps:
            try:
                out += framing.encode(p)
            except (FramingError, FrameTooLarge):
                out += bytes(p) if isinstance(p, bytes) else b"".join(p)
        return out

    @st.composite
    def corrupt(draw: Any) -> bytes:
        wire = bytearray(draw(payloads.map(encode)))
        for _ in range(draw(st.integers(0, 3))):
            op = draw(st.sampled_from(["set", "insert", "cut"]))
            pos = draw(st.integers(0, len(wire)))
            byte = draw(st.sampled_from(b"\r\n*$:+-,0123456789\x00\xff\x80END!ab"))
            if op == "set" and pos < len(wire):
                wire[pos] = byte
            elif op == "insert":
                wire.insert(pos, byte)
            elif op == "cut":
                del wire[pos:]
        return bytes(wire)

    return st.binary(max_size=300) | corrupt()


@pytest.mark.c_only
@pytest.mark.parametrize("name,make", DIFF_FRAMINGS, ids=[f[0] for f in DIFF_FRAMINGS])
def test_compiled_and_pure_decoders_agree(name, make):
    c, py = importlib.import_module(C), importlib.import_module(PY)

    @settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(wire=_wire(py, make), cuts=_cuts, max_buffer=st.sampled_from([1, 7, 40, 300, 1 << 26]),
           how=st.lists(st.tuples(st.sampled_from(["feed", "buffer"]), st.integers(-1, 500)), min_size=1,
                        max_size=6))
    def check(wire, cuts, max_buffer, how):
        decs = [m.FrameDecoder(make(m), max_buffer=max_buffer) for m in (c, py)]
        for i, chunk in enumerate(_chunks(wire, cuts)):
            step = how[i % len(how)]
            results = [_outcome(lambda d=d, chunk=chunk, step=step: _step(d, chunk, *step)) for d in decs]
            assert results[0] == results[1], (i, step)
            assert decs[0].buffered == decs[1].buffered
        results = [_outcome(d.frames) for d in decs]
        assert results[0] == results[1]
        assert decs[0].buffered == decs[1].buffered
        assert _outcome(decs[0].eof) == _outcome(decs[1].eof)
        assert decs[0].read() == decs[1].read()
        assert decs[0].buffered == decs[1].buffered == 0

    check()
