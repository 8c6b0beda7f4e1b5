"""FrameDecoder on both backends: every method, every error with its type, the `.frames` of
decoding errors, eof(), the get_buffer/buffer_updated protocol, memory safety of the views
it hands out, and the Stream's memory rules (FrameTooLarge before allocation, GROW_FROM,
the shrink rule)."""

from __future__ import annotations

import array
import gc
import struct
import sys

import pytest
from sockutil import needs_tracemalloc, tracemalloc
from streamutil import ALL_FRAMINGS

from fastsock import FrameTooLarge, IncompleteReadError, _streambase
from fastsock.framing import FramingError

pytestmark = pytest.mark.timeout(30)

MiB = 1 << 20
GROW_FROM = _streambase.GROW_FROM
SHRINK_AT = _streambase.shrink_threshold(_streambase.DEFAULT_READ_SIZE)


def lp(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


# -- construction and attributes ---------------------------------------------------------


def test_defaults_and_attributes(impl):
    dec = impl.FrameDecoder()
    assert dec.framing is None and dec.buffered == 0
    assert dec.max_buffer == _streambase.DEFAULT_MAX_BUFFER
    framing = impl.LengthPrefix()
    dec.framing = framing
    assert dec.framing is framing
    dec = impl.FrameDecoder(framing, max_buffer=100)
    assert dec.max_buffer == 100
    with pytest.raises(AttributeError):
        dec.max_buffer = 5
    with pytest.raises(AttributeError):
        dec.buffered = 5
    assert "FrameDecoder" in repr(dec)


@pytest.mark.parametrize("args,kwargs,error", [
    ((b"x",), {}, TypeError),
    ((), {"max_buffer": 0}, ValueError),
    ((), {"max_buffer": -1}, ValueError),
    ((), {"max_buffer": 1.5}, TypeError),
    ((), {"max_buffer": 1 << 70}, ValueError),
])
def test_constructor_errors(impl, args, kwargs, error):
    with pytest.raises(error):
        impl.FrameDecoder(*args, **kwargs)


def test_framing_setter_checks_type(impl):
    dec = impl.FrameDecoder()
    with pytest.raises(TypeError):
        dec.framing = "LengthPrefix"
    dec.framing = impl.Delimiter()
    dec.framing = None
    assert dec.framing is None


def test_frame_methods_need_a_framing(impl):
    dec = impl.FrameDecoder()
    for call in (lambda: dec.feed(b"x"), dec.frames, dec.next_frame):
        with pytest.raises(ValueError, match="no framing"):
            call()
    # feed appended before it found no framing; bytes-only methods work without one
    assert dec.buffered == 1
    dec.append(b"yz")
    assert dec.read() == b"xyz"


# -- feed / frames / next_frame ----------------------------------------------------------


@pytest.mark.parametrize("name,make", ALL_FRAMINGS, ids=[n for n, _ in ALL_FRAMINGS])
def test_feed_every_framing(impl, name, make):
    framing = make(impl)
    payloads = [b"", b"a", b"payload", b"z" * 200]
    wire = b"".join(framing.encode(p) for p in payloads)
    dec = impl.FrameDecoder(framing)
    assert dec.feed(wire) == payloads
    assert dec.buffered == 0
    got = []
    for i in range(len(wire)):
        got += dec.feed(wire[i:i + 1])
    assert got == payloads


def test_feed_takes_any_bytes_like(impl):
    dec = impl.FrameDecoder(impl.LengthPrefix())
    wire = lp(b"abcd")
    assert dec.feed(bytearray(wire[:3])) == []
    assert dec.feed(memoryview(wire)[3:5]) == []
    assert dec.feed(array.array("B", wire[5:])) == [b"abcd"]
    with pytest.raises(TypeError):
        dec.feed("text")
    with pytest.raises(TypeError):
        dec.feed(12)


def test_feed_empty_is_frames(impl):
    dec = impl.FrameDecoder(impl.LengthPrefix())
    dec.append(lp(b"one") + lp(b"two") + lp(b"three")[:6])
    assert dec.buffered == 2 * 7 + 6
    assert dec.feed(b"") == [b"one", b"two"]
    assert dec.feed(b"") == []
    assert dec.buffered == 6


def test_frames_max_frames_and_next_frame(impl):
    dec = impl.FrameDecoder(impl.LengthPrefix())
    dec.append(b"".join(lp(b"%d" % i) for i in range(200)))
    assert dec.frames(max_frames=1) == [b"0"]
    assert dec.frames(2) == [b"1", b"2"]
    assert dec.next_frame() == b"3"
    assert dec.frames(max_frames=100) == [b"%d" % i for i in range(4, 104)]
    assert dec.frames() == [b"%d" % i for i in range(104, 200)]
    assert dec.next_frame() is None
    assert dec.frames() == []
    dec.append(lp(b"xy")[:5])
    assert dec.next_frame() is None and dec.buffered == 5
    with pytest.raises(ValueError):
        dec.frames(0)
    with pytest.raises(ValueError):
        dec.frames(-1)
    with pytest.raises(TypeError):
        dec.frames(1.0)


def test_resp_frames_are_argument_lists(impl):
    dec = impl.FrameDecoder(impl.RESP())
    assert dec.feed(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n*1\r\n$4\r") == [[b"GET", b"k"], [b"PING"]]
    assert dec.next_frame() is None
    assert dec.feed(b"\nPING\r\n") == [[b"PING"]]
    assert dec.buffered == 0


# -- decoding errors ---------------------------------------------------------------------


def test_frame_too_large_from_the_header_carries_earlier_frames(impl):
    dec = impl.FrameDecoder(impl.LengthPrefix(max_size=10))
    bad = struct.pack(">I", 11) + b"x"
    with pytest.raises(FrameTooLarge) as info:
        dec.feed(lp(b"a") + lp(b"b") + bad)
    assert info.value.frames == [b"a", b"b"]
    assert info.value.size == 11 and info.value.limit == 10
    assert dec.buffered == len(bad)
    for call in (dec.frames, dec.next_frame, lambda: dec.feed(b"")):
        with pytest.raises(FrameTooLarge) as info:
            call()
        assert info.value.frames == []
    assert dec.discard(len(bad)) == len(bad)
    assert dec.feed(lp(b"ok")) == [b"ok"]


def test_framing_error_carries_earlier_frames(impl):
    dec = impl.FrameDecoder(impl.Netstring())
    with pytest.raises(FramingError) as info:
        dec.feed(b"1:a,2:bc,3:xyz!")
    assert info.value.frames == [b"a", b"bc"]
    assert dec.peek() == b"3:xyz!"
    with pytest.raises(FramingError) as info:
        dec.next_frame()
    assert info.value.frames == []
    with pytest.raises(FramingError):
        dec.frames(max_frames=5)


def test_partial_frame_larger_than_max_buffer(impl):
    dec = impl.FrameDecoder(impl.LengthPrefix(), max_buffer=1000)
    header = struct.pack(">I", 2000)
    with pytest.raises(FrameTooLarge) as info:
        dec.feed(lp(b"first") + header)
    assert info.value.frames == [b"first"]
    assert info.value.size == 2004 and info.value.limit == 1000
    assert dec.buffered == 4
    with pytest.raises(FrameTooLarge):
        dec.next_frame()


def test_resp_too_many_args(impl):
    dec = impl.FrameDecoder(impl.RESP(max_args=2))
    with pytest.raises(FrameTooLarge) as info:
        dec.feed(b"PING\r\n*3\r\n")
    assert info.value.frames == [[b"PING"]]
    assert info.value.size == 3 and info.value.limit == 2
    assert "max_args" in str(info.value)


def test_delimiter_not_found_within_max_size(impl):
    dec = impl.FrameDecoder(impl.Delimiter(b"\n", max_size=8))
    assert dec.feed(b"ok\n12345678") == [b"ok"]
    with pytest.raises(FrameTooLarge) as info:
        dec.feed(b"9")
    assert info.value.frames == []
    assert dec.buffered == 9


# -- eof ---------------------------------------------------------------------------------


def test_eof(impl):
    dec = impl.FrameDecoder(impl.LengthPrefix())
    assert dec.eof() is None
    dec.feed(lp(b"whole") + lp(b"cut")[:5])
    with pytest.raises(IncompleteReadError) as info:
        dec.eof()
    assert info.value.partial == lp(b"cut")[:5] and info.value.expected == 7
    assert dec.buffered == 5  # kept
    dec.discard(5)
    dec.feed(b"\x00\x00")  # the size is not known yet
    with pytest.raises(IncompleteReadError) as info:
        dec.eof()
    assert info.value.partial == b"\x00\x00" and info.value.expected is None
    assert dec.read() == b"\x00\x00"
    assert dec.eof() is None


def test_eof_without_framing_and_after_a_bad_frame(impl):
    dec = impl.FrameDecoder()
    dec.append(b"abc")
    with pytest.raises(IncompleteReadError) as info:
        dec.eof()
    assert info.value.partial == b"abc" and info.value.expected is None
    dec.framing = impl.Netstring()
    dec.discard(3)
    dec.append(b"x:")
    with pytest.raises(IncompleteReadError) as info:
        dec.eof()
    assert info.value.expected is None


# -- bytes reads -------------------------------------------------------------------------


def test_byte_reads(impl):
    dec = impl.FrameDecoder()
    dec.append(b"hello world\nsecond line\nrest")
    assert dec.peek(5) == b"hello" and dec.peek() == b"hello world\nsecond line\nrest"
    assert dec.peek(None) == dec.peek(-1)
    assert dec.read(0) == b""
    assert dec.read(6) == b"hello "
    assert dec.readline() == b"world\n"
    assert dec.read_until(b"line", keep=False) == b"second "
    assert dec.read_until((b"zz", b"\n", b"st")) == b"\n"
    assert dec.read_until(b"zz") is None
    assert dec.readline() is None
    assert dec.read_exactly(5) is None
    assert dec.read_exactly(4) == b"rest"
    assert dec.read() == b"" and dec.read(None) == b""
    dec.append(b"0123456789")
    buf = bytearray(4)
    assert dec.read_into(buf) == 4 and buf == b"0123"
    assert dec.read_into(memoryview(buf)[:0]) == 0
    assert dec.discard(3) == 3
    assert dec.read(-1) == b"789"
    assert dec.discard(10) == 0
    assert dec.read_into(bytearray(3)) == 0


def test_byte_read_errors(impl):
    dec = impl.FrameDecoder(max_buffer=100)
    dec.append(b"abc")
    with pytest.raises(TypeError):
        dec.read_into(b"immutable")
    with pytest.raises(TypeError):
        dec.read_until("a")
    with pytest.raises(ValueError):
        dec.read_until(b"")
    with pytest.raises(ValueError):
        dec.read_until(())
    with pytest.raises(ValueError):
        dec.read_exactly(-1)
    with pytest.raises(ValueError):
        dec.discard(-1)
    with pytest.raises(FrameTooLarge):
        dec.read_exactly(101)
    assert dec.read_exactly(100) is None
    with pytest.raises(TypeError):
        dec.read("2")
    assert dec.buffered == 3


def test_read_until_limits(impl):
    dec = impl.FrameDecoder(max_buffer=64)
    dec.append(b"x" * 10 + b"\n")
    with pytest.raises(FrameTooLarge) as info:
        dec.readline(limit=5)
    assert info.value.size == 10 and info.value.limit == 5
    assert dec.buffered == 11
    assert dec.readline(limit=10) == b"x" * 10 + b"\n"
    dec.append(b"y" * 7)
    assert dec.read_until(b"END", limit=5) is None  # 7 < 5 + len(b"END")
    dec.append(b"y")
    with pytest.raises(FrameTooLarge) as info:
        dec.read_until(b"END", limit=5)
    assert info.value.size == 8
    dec.discard(8)
    dec.append(b"z" * 64)
    assert dec.readline() is None  # default limit: max_buffer, which the held bytes cannot pass
    with pytest.raises(FrameTooLarge):
        dec.readline(limit=63)


def test_read_until_resumes_its_search(impl):
    dec = impl.FrameDecoder()
    for piece in (b"ab", b"cE", b"N", b"Dtail"):
        out = dec.read_until(b"END")
        assert out is None
        dec.append(piece)
    assert dec.read_until(b"END") == b"abcEND"
    assert dec.read() == b"tail"


# -- append / max_buffer -----------------------------------------------------------------


def test_append_beyond_max_buffer_appends_nothing(impl):
    dec = impl.FrameDecoder(impl.LengthPrefix(), max_buffer=10)
    dec.append(b"12345")
    with pytest.raises(FrameTooLarge) as info:
        dec.append(b"123456")
    assert info.value.limit == 10 and info.value.frames == []
    with pytest.raises(FrameTooLarge):
        dec.feed(b"123456")
    assert dec.buffered == 5
    dec.append(b"67890")
    assert dec.buffered == 10 and dec.peek() == b"1234567890"


# -- get_buffer / buffer_updated ---------------------------------------------------------


def test_get_buffer_view_properties(impl):
    dec = impl.FrameDecoder(impl.LengthPrefix())
    view = dec.get_buffer()
    assert isinstance(view, memoryview)
    assert not view.readonly and view.ndim == 1 and view.format == "B" and view.itemsize == 1
    assert len(view) >= 65536
    wire = lp(b"first") + lp(b"sec")
    view[:len(wire)] = wire
    assert dec.buffer_updated(len(wire) - 2) == [b"first"]
    assert dec.buffered == 5
    view = dec.get_buffer(10)
    assert len(view) >= 10
    view[:2] = wire[-2:]
    assert dec.buffer_updated(2) == [b"sec"]
    view = dec.get_buffer(200_000)
    assert len(view) >= 200_000
    dec.commit(0)
    assert dec.buffered == 0


def test_get_buffer_and_commit_without_decoding(impl):
    dec = impl.FrameDecoder(impl.LengthPrefix())
    view = dec.get_buffer(8)
    view[:8] = lp(b"abcd")
    assert dec.commit(8) is None
    assert dec.buffered == 8
    assert dec.next_frame() == b"abcd"


def test_buffer_updated_misuse(impl):
    dec = impl.FrameDecoder(impl.LengthPrefix())
    with pytest.raises(RuntimeError):
        dec.buffer_updated(0)
    with pytest.raises(RuntimeError):
        dec.commit(0)
    view = dec.get_buffer(16)
    with pytest.raises(ValueError):
        dec.buffer_updated(-1)
    with pytest.raises(ValueError):
        dec.buffer_updated(len(view) + 1)
    with pytest.raises(TypeError):
        dec.buffer_updated(1.0)
    view[:1] = b"\x00"
    dec.buffer_updated(1)  # still pending after the refused calls
    with pytest.raises(RuntimeError):
        dec.buffer_updated(0)  # one get_buffer, one buffer_updated
    assert dec.buffered == 1
    with pytest.raises(TypeError):
        dec.get_buffer("big")


@pytest.mark.parametrize("call", ["feed", "append", "frames", "next_frame", "read", "read_exactly",
                                  "read_into", "read_until", "readline", "discard"])
def test_other_calls_cancel_a_pending_get_buffer(impl, call):
    dec = impl.FrameDecoder(impl.LengthPrefix())
    dec.append(lp(b"x"))
    dec.get_buffer()
    args = {"feed": (b"",), "append": (b"",), "read_exactly": (1,), "read_into": (bytearray(1),),
            "read_until": (b"\n",), "discard": (0,)}.get(call, ())
    getattr(dec, call)(*args)
    with pytest.raises(RuntimeError):
        dec.commit(0)


def test_peek_eof_and_properties_keep_it_pending(impl):
    dec = impl.FrameDecoder(impl.LengthPrefix())
    view = dec.get_buffer()
    dec.peek()
    dec.eof()
    _ = dec.buffered, dec.framing, dec.max_buffer
    view[:5] = lp(b"x")
    assert dec.buffer_updated(5) == [b"x"]


def test_a_second_get_buffer_replaces_the_first(impl):
    dec = impl.FrameDecoder(impl.LengthPrefix())
    first = dec.get_buffer()
    first[:5] = b"WRONG"
    second = dec.get_buffer()
    second[:5] = lp(b"y")
    assert dec.buffer_updated(5) == [b"y"]


def test_get_buffer_at_max_buffer(impl):
    dec = impl.FrameDecoder(impl.LengthPrefix(), max_buffer=100)
    view = dec.get_buffer()
    assert len(view) == 100  # the capacity never passes max_buffer
    view[:] = struct.pack(">I", 96) + b"x" * 96
    assert dec.buffer_updated(50) == []
    view = dec.get_buffer(1000)
    assert len(view) == 50
    dec.commit(49)
    assert len(dec.get_buffer()) == 1
    dec.commit(0)
    dec.append(b"x")
    with pytest.raises(FrameTooLarge) as info:
        dec.get_buffer()
    assert info.value.size == 100 and info.value.limit == 100
    assert len(dec.frames()) == 1


# -- memory safety and memory rules --------------------------------------------------------


def test_an_old_view_written_after_growth_changes_nothing(impl):
    dec = impl.FrameDecoder(impl.LengthPrefix(max_size=4 * MiB))
    total = 3 * MiB
    old = dec.get_buffer()
    wire = struct.pack(">I", total) + b"a" * 1000
    old[:len(wire)] = wire
    assert dec.buffer_updated(len(wire)) == []
    keep = dec.peek()
    # Growth: the held bytes move to new memory; the old view must still be safe to write.
    view = dec.get_buffer(400_000)
    old[:] = b"X" * len(old)
    assert dec.peek() == keep
    view[:1000] = b"b" * 1000
    dec.commit(1000)
    assert dec.peek() == keep + b"b" * 1000
    rest = total + 4 - dec.buffered
    dec.append(b"c" * rest)
    old[:10] = b"Y" * 10
    view[:10] = b"Y" * 10  # grown again by the append: this one is stale too
    (frame,) = dec.frames()
    assert frame == b"a" * 1000 + b"b" * 1000 + b"c" * rest
    # The emptied buffer (above the shrink threshold) gave its memory back, views alive.
    assert dec._capacity == 0
    old[:] = b"Z" * len(old)
    view[:] = b"Z" * len(view)
    del old, view
    view = dec.get_buffer()
    view[:5] = lp(b"q")
    assert dec.buffer_updated(5) == [b"q"]


def test_views_kept_across_buffer_updated_like_asyncio(impl):
    # The selector transport holds the view while it calls buffer_updated; sslproto keeps it
    # across the next get_buffer. Large frames make the decoder grow and shrink meanwhile.
    dec = impl.FrameDecoder(impl.LengthPrefix())
    views = []
    wire = b"".join(lp(bytes([i]) * (i * 50_000)) for i in range(1, 40))
    got = []
    pos = 0
    while pos < len(wire):
        view = dec.get_buffer()
        n = min(len(view), 70_000, len(wire) - pos)
        view[:n] = wire[pos:pos + n]
        pos += n
        got += dec.buffer_updated(n)
        views.append(view)
    assert got == [bytes([i]) * (i * 50_000) for i in range(1, 40)]
    for view in views:  # every view is still valid memory
        view[:1] = b"!"


def test_grow_from_a_length_prefix_alone_reserves_little(impl):
    dec = impl.FrameDecoder(impl.LengthPrefix(max_size=1 << 30), max_buffer=1 << 31)
    assert dec.feed(struct.pack(">I", 1 << 29)) == []
    view = dec.get_buffer()
    assert dec._capacity <= 4 + GROW_FROM + 65536
    assert len(view) >= GROW_FROM  # the known frame asks for more than the default
    dec.commit(len(view))
    held = dec.buffered
    view = dec.get_buffer()
    assert len(view) >= held  # at least doubling as the frame's bytes arrive
    assert dec._capacity <= 4 * held


def test_fixed_length_asks_for_the_frame(impl):
    dec = impl.FrameDecoder(impl.FixedLength(300_000))
    assert len(dec.get_buffer()) >= 300_000


def test_shrink_rule(impl):
    dec = impl.FrameDecoder(impl.LengthPrefix())
    view = dec.get_buffer()
    view[:9] = lp(b"small")
    assert dec.buffer_updated(9) == [b"small"]
    assert dec._capacity == 65536  # kept once emptied
    big = b"x" * (2 * MiB)
    assert dec.feed(lp(big)) == [big]
    assert dec._capacity == 0  # above the threshold: given back once emptied
    assert dec.feed(lp(b"x" * 100)) == [b"x" * 100]
    dec.feed(lp(b"y" * (SHRINK_AT // 2)))
    assert 0 < dec._capacity <= SHRINK_AT  # at or below it: kept


@needs_tracemalloc
def test_hostile_length_refused_before_allocation(impl):
    dec = impl.FrameDecoder(impl.LengthPrefix())
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        with pytest.raises(FrameTooLarge):
            dec.feed(struct.pack(">I", 0xFFFFFFF0))
        with pytest.raises(FrameTooLarge):
            dec.next_frame()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak - before < 256 * 1024
    assert dec._capacity <= 65536


def test_only_get_buffer_exports_and_weakrefs(impl):
    import weakref

    dec = impl.FrameDecoder()
    with pytest.raises(TypeError):
        memoryview(dec)
    assert weakref.ref(dec)() is dec
    enc = impl.FrameEncoder(impl.LengthPrefix())
    assert weakref.ref(enc)() is enc


@pytest.mark.c_only
def test_compiled_retired_blocks_are_freed_at_their_last_release():
    from fastsock._c import _speedups as c

    dec = c.FrameDecoder(c.LengthPrefix(max_size=8 * MiB))
    first = dec.get_buffer()
    first[:4] = struct.pack(">I", 3 * MiB)
    dec.commit(4)
    second = dec.get_buffer(2 * MiB)  # growth while `first` lives: its block is retired
    assert dec._retired_blocks == 1
    part = first[10:20]  # a slice shares the export
    del first
    assert dec._retired_blocks == 1
    part.release()
    assert dec._retired_blocks == 0
    second[:4] = b"abcd"
    dec.commit(4)
    dec.append(b"y" * (3 * MiB - 4))  # growth again, while `second` lives
    assert dec._retired_blocks == 1
    third = dec.get_buffer()  # a live view of the current memory...
    (frame,) = dec.frames()  # ...when the emptied buffer gives its memory back
    assert frame[:4] == b"abcd" and len(frame) == 3 * MiB
    assert dec._capacity == 0 and dec._retired_blocks == 2
    third[:] = b"!" * len(third)  # still valid memory
    del third
    assert dec._retired_blocks == 1
    del second
    assert dec._retired_blocks == 0


def test_failed_reinit_changes_nothing(impl):
    # Every check runs before anything changes: a re-__init__ with a bad framing must not
    # leave more bytes held than its new, lower max_buffer (an overflow of the compiled one).
    dec = impl.FrameDecoder(impl.LengthPrefix(4), max_buffer=1 << 20)
    dec.append(b"x" * 100)
    with pytest.raises(TypeError):
        dec.__init__("not a framing", max_buffer=10)
    assert (dec.buffered, dec.max_buffer) == (100, 1 << 20)
    with pytest.raises(ValueError):
        dec.__init__(impl.LengthPrefix(4), max_buffer=0)
    assert (dec.buffered, dec.max_buffer) == (100, 1 << 20)
    dec.__init__(impl.LengthPrefix(2), max_buffer=10)  # a successful one starts afresh
    assert (dec.buffered, dec.max_buffer) == (0, 10)
    with pytest.raises(FrameTooLarge):
        dec.append(b"y" * 2000)
    assert dec.buffered == 0


def _hostile_size(dec, size):
    """An n whose own code (comparisons, __index__) empties the decoder and refills it with
    one byte, moving its memory, before it says `size`."""
    class Hostile:
        def __index__(self):
            dec.read()
            dec.append(b"x")
            return size

        def __lt__(self, other):
            return False

        def __ge__(self, other):
            return True

    return Hostile()


@pytest.mark.parametrize("method", ["read", "peek"])
def test_read_and_peek_measure_after_their_argument_ran(impl, method):
    dec = impl.FrameDecoder(max_buffer=64 * MiB)
    dec.append(b"s" * (2 * MiB))  # above the shrink threshold: emptied, its memory goes back
    out = getattr(dec, method)(_hostile_size(dec, 2 * MiB))
    assert out == b"x"  # what is held once n is known, never the 2 MiB from before
    assert dec.buffered == (0 if method == "read" else 1)


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="gc.callbacks are CPython's")
def test_get_buffer_refuses_reentry_from_a_collection(impl):
    # The view's allocation can run the GC (on CPython < 3.12, at the allocation itself)
    # before the export is counted: a gc callback or finalizer that feeds the same decoder
    # then must not move the memory the view is for. The compiled decoder refuses it.
    dec = impl.FrameDecoder(impl.LengthPrefix(4), max_buffer=64 * MiB)
    dec.append(b"\0\0\0\xff" + b"a" * 100)  # a partial frame: the buffer fits it closely
    armed = [False]
    outcomes = []

    def callback(phase, info):
        if phase == "start" and armed[0]:
            armed[0] = False
            try:
                dec.append(b"b" * (4 * MiB))
                outcomes.append("appended")
            except RuntimeError:
                outcomes.append("refused")

    gc.collect()
    gc.callbacks.append(callback)
    threshold = gc.get_threshold()
    try:
        gc.set_threshold(1)
        armed[0] = True  # no allocation between here and get_buffer's own
        view = dec.get_buffer(16)
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(callback)
    view[:] = b"Z" * len(view)  # valid memory whatever happened
    if impl.__name__ == "fastsock._c._speedups" and sys.version_info < (3, 12):
        assert outcomes == ["refused"]
        assert dec.buffered == 104


def test_decoders_and_encoders_refuse_copy_and_pickle(impl):
    import copy
    import pickle

    dec = impl.FrameDecoder(impl.LengthPrefix(4))
    enc = impl.FrameEncoder(impl.LengthPrefix(4))
    for obj in (dec, enc):
        with pytest.raises(TypeError):
            copy.copy(obj)
        with pytest.raises(TypeError):
            pickle.dumps(obj)
