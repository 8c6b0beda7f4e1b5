"""Regression tests for the defects found by the Stream review (both backends): every one
of them once crashed, lost bytes, wasted memory or CPU, or made the backends disagree."""

from __future__ import annotations

import contextlib
import functools
import itertools
import random
import signal
import socket as stdsocket
import struct
import threading
import time
import tracemalloc

import pytest

from fastsock import FrameTooLarge, IncompleteReadError
from streamutil import Peer, raw_pair, small_buffers

pytestmark = pytest.mark.timeout(60)

MiB = 1 << 20


def test_read_exactly_with_more_than_16_mib_already_buffered(impl):
    # read_until refuses a 17 MiB "line" but keeps it buffered; read_exactly must then
    # carry more held bytes than its first 16 MiB allocation (the C backend overflowed it).
    stream, peer = raw_pair(impl)
    data = bytes(range(11, 251)) * (24 * MiB // 240)  # no b"\n"
    with stream, peer:
        writer = Peer(lambda: (peer.sendall(data), peer.close()))
        with pytest.raises(FrameTooLarge):
            stream.read_until(b"\n", limit=17 * MiB)
        assert stream.buffered > 17 * MiB
        assert stream.read_exactly(20 * MiB) == data[:20 * MiB]
        assert stream.read() == data[20 * MiB:]
        writer.join()


def _peak_traced(fn):
    """(fn's result or exception, peak bytes traced by tracemalloc while it ran)."""
    tracemalloc.start()
    try:
        try:
            result = fn()
        except Exception as exc:  # returned for the test to inspect
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("how", ["read_frame", "read_exactly"])
def test_announced_size_alone_does_not_allocate_it(impl, how):
    # A peer announces a 512 MiB frame (below max_size), sends 100 kB and closes: memory
    # follows the bytes that arrived (at most 16 MiB up front), not the announcement.
    stream, peer = raw_pair(impl)
    announced = 512 * MiB
    body = b"p" * 100_000
    with stream, peer:
        stream.framing = impl.LengthPrefix(max_size=1 << 30)
        header = struct.pack(">I", announced)
        writer = Peer(lambda: (peer.sendall(header + body), peer.shutdown(stdsocket.SHUT_WR)))
        if how == "read_frame":
            error, peak = _peak_traced(stream.read_frame)
            expected, partial = 4 + announced, header + body
        else:
            assert stream.read_exactly(4) == header
            error, peak = _peak_traced(lambda: stream.read_exactly(announced))
            expected, partial = announced, body
        writer.join()
        assert isinstance(error, IncompleteReadError)
        assert error.expected == expected and error.partial == partial
        assert peak < 48 * MiB
        assert stream.buffered == 0 and stream.at_eof()


def test_netstring_announcement_alone_does_not_allocate_it(impl):
    # A netstring has a trailer, so its frames are read through the buffer, never straight
    # into the result: the buffer must grow as bytes arrive, not to the announced size.
    stream, peer = raw_pair(impl)
    with stream, peer:
        stream.framing = impl.Netstring()  # default max_size: 16 MiB
        writer = Peer(lambda: (peer.sendall(b"16000000:" + b"x" * 1000), peer.shutdown(stdsocket.SHUT_WR)))
        error, peak = _peak_traced(stream.read_frame)
        writer.join()
        assert isinstance(error, IncompleteReadError)
        assert error.partial == b"16000000:" + b"x" * 1000
        assert peak < 2 * MiB


def test_netstring_of_endless_zeros_is_refused_at_once(impl):
    # b"000..." never exceeded max_size: each read rescanned the whole buffer (quadratic)
    # until max_buffer filled. A leading zero is malformed by the netstring spec.
    stream, peer = raw_pair(impl)
    with stream, peer:
        stream.framing = impl.Netstring()
        stream.socket.settimeout(10)
        writer = Peer(lambda: peer.sendall(b"0" * 100_000))
        with pytest.raises(impl.FramingError):
            stream.read_frame()
        with pytest.raises(impl.FramingError):
            stream.read_frames()
        assert stream.buffered >= 2  # nothing consumed
        writer.join()
        assert stream.read_exactly(100_000) == b"0" * 100_000
        stream.framing = impl.Netstring(max_size=9999)
        peer.sendall(b"10000" + b"0" * 1000)
        with pytest.raises(FrameTooLarge) as info:
            stream.read_frame()
        assert info.value.size == 10000
        stream.discard(stream.buffered)
        peer.sendall(b"0:,3:abc,")
        assert stream.read_frames() == [b"", b"abc"]


@pytest.mark.parametrize("header,error", [(b"9x", "FramingError"), (b"99", "FrameTooLarge"),
                                          (b"x9", "FramingError")])
def test_ascii_length_errors_agree(impl, header, error):
    # Both backends: not all digits is malformed, even when the first digit already exceeds
    # max_size; all digits above max_size is too large.
    stream, peer = raw_pair(impl)
    with stream, peer:
        stream.framing = impl.AsciiLength(2, max_size=5)
        peer.sendall(header + b"payload")
        for call in (stream.read_frame, stream.read_frames, lambda: stream.read_frames(2)):
            with pytest.raises((impl.FramingError, FrameTooLarge)) as info:
                call()
            assert type(info.value).__name__ == error
        assert stream.buffered == 9


def test_sizes_beyond_ssize_t_raise_overflow_error(impl):
    stream, peer = raw_pair(impl)
    huge = 1 << 70
    with stream, peer:
        stream.framing = impl.LengthPrefix()
        peer.sendall(b"\x00\x00\x00\x01a")
        assert stream.peek(0) == b""  # buffers the frame
        for call in (stream.read, stream.read_exactly, stream.peek, stream.discard, stream.read_frames,
                     stream.readline, lambda n: stream.read_until(b"a", limit=n)):
            with pytest.raises(OverflowError):
                call(huge)
        for call in (stream.read, stream.read_exactly, stream.discard, stream.read_frames):
            with pytest.raises(TypeError):
                call(1.5)
        assert stream.read_frames() == [b"a"]


def test_error_messages_agree(impl):
    stream, peer = raw_pair(impl)
    with stream, peer:
        for method in ("readinto", "read_exactly_into"):
            with pytest.raises(TypeError) as info:
                getattr(stream, method)(b"read-only")
            assert str(info.value) == f"{method}() argument 'buffer' must be read-write bytes-like object, not bytes"
        with pytest.raises(ValueError) as info:
            stream.readline(-1)
        assert str(info.value) == "negative buffersize in readline"
        with pytest.raises(ValueError) as info:
            stream.read_until(b"\n", limit=-1)
        assert str(info.value) == "negative buffersize in read_until"
        with pytest.raises(ValueError) as info:
            stream.read_exactly(-1)
        assert str(info.value) == "negative buffersize in read_exactly"


def test_fresh_stream_with_empty_buffers(impl):
    # A Stream that never buffered anything owns no read memory (a NULL pointer in C):
    # every copy of zero held bytes must be skipped, not done from NULL.
    stream, peer = raw_pair(impl)
    with stream, peer:
        assert stream.read_exactly_into(bytearray()) == 0
        assert stream.readinto(bytearray()) == 0
        stream.framing = impl.Netstring()
        stream.writelines([b"", bytearray(), memoryview(b""), b"ab"])
        stream.write_frames([b"", bytearray(b"x" * 20_000), b""])
        stream.flush()
        expected = b"ab" + b"0:," + b"20000:" + b"x" * 20_000 + b",0:,"
        got = b""
        while len(got) < len(expected):
            got += peer.recv(65536)
        assert got == expected
        peer.shutdown(stdsocket.SHUT_WR)
        with pytest.raises(IncompleteReadError) as info:
            stream.read_exactly(1 << 20)  # the direct path, nothing held
        assert info.value.partial == b"" and info.value.expected == 1 << 20
        buf = bytearray(100_000)
        with pytest.raises(IncompleteReadError):
            stream.read_exactly_into(buf)
        assert stream.readinto(bytearray(10)) == 0


def test_writelines_takes_a_snapshot_of_a_list(impl):
    a, b = raw_pair(impl)
    with a, b:
        items = [b"a" * 20_000, bytearray(b"b" * 10), memoryview(b"c" * 30_000)]
        a.writelines(items)
        a.flush()
        expected = b"a" * 20_000 + b"b" * 10 + b"c" * 30_000
        got = b""
        while len(got) < len(expected):
            got += b.recv(65536)
        assert got == expected and items[1] == bytearray(b"b" * 10)


class _Boom(Exception):
    pass


@contextlib.contextmanager
def _raising_timer(period=0.0003):
    """SIGALRM every `period` s whose handler raises _Boom while `state["armed"]`."""
    state = {"armed": False, "raised": 0}

    def handler(signum, frame):
        # Raise only where the code under test runs (fastsock, or this test calling into the
        # compiled module): a raise inside some finalizer elsewhere would be "unraisable" and
        # could interrupt the interpreter's own unraisable hook, which proves nothing.
        if state["armed"] and frame is not None and (
                "fastsock" in frame.f_code.co_filename or frame.f_code.co_filename == __file__):
            state["raised"] += 1
            raise _Boom

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, period, period)
    try:
        yield state
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert state["raised"] > 0, "the handler never interrupted the code under test"


def _call_recorded(state, call):
    """call() with the handler armed; its result is stored inside C (starmap + extend) so a
    _Boom raised right after it returns cannot drop it: [result], or [] if it raised."""
    out: list = []
    try:
        state["armed"] = True
        out.extend(itertools.starmap(call, [()]))
    except _Boom:
        pass
    finally:
        state["armed"] = False
    return out


needs_main_thread = pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                                       reason="signals need the main thread")


@needs_main_thread
@pytest.mark.parametrize("how", ["read", "read_frame", "read_exactly"])
@pytest.mark.parametrize("timeout", [None, 30])
def test_raising_signal_handler_loses_nothing_and_never_sticks(impl, how, timeout):
    # A handler that raises at any moment (even right after recv returned, or inside the
    # busy guard) must neither lose a byte nor leave the Stream busy.
    stream, peer = raw_pair(impl)
    rnd = random.Random(7)
    lp = impl.LengthPrefix()
    payloads = [rnd.randbytes(rnd.choice([1, 100, 5000, 200_000])) for _ in range(60)]
    wire = b"".join(map(lp.encode, payloads)) if how == "read_frame" else b"".join(payloads)

    def feed():
        for i in range(0, len(wire), 65536):
            peer.sendall(wire[i:i + 65536])
            time.sleep(0.0001)
        peer.shutdown(stdsocket.SHUT_WR)

    with stream, peer:
        stream.framing = lp
        stream.socket.settimeout(timeout)
        call = {"read": functools.partial(stream.read, 4096), "read_frame": stream.read_frame,
                "read_exactly": functools.partial(stream.read_exactly, 70_000)}[how]
        got: list[bytes] = []
        writer = Peer(feed)
        with _raising_timer() as state:
            for _ in range(1_000_000):
                try:
                    out = _call_recorded(state, call)
                except IncompleteReadError as exc:  # the tail of read_exactly
                    got.append(exc.partial)
                    break
                except EOFError:  # read_frame at the end
                    break
                if out:
                    if not out[0]:
                        break
                    got.append(out[0])
        writer.join()
        if how == "read_frame":
            assert got == payloads
        else:
            assert b"".join(got) == wire
        assert stream.buffered == 0


@needs_main_thread
@pytest.mark.parametrize("timeout", [None, 30])
def test_raising_signal_handler_never_sends_twice(impl, timeout):
    # Numbered records written under a raising handler: each record reaches the peer
    # whole, at most once, in order; every write that returned normally is there.
    stream, peer = raw_pair(impl)
    small_buffers(stream.socket, peer)
    rnd = random.Random(11)
    records = [struct.pack(">II", i, size) + bytes([i % 251]) * size
               for i, size in enumerate(rnd.choice([10, 3000, 40_000]) for _ in range(400))]

    def drain():
        chunks = []
        while True:
            data = peer.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)
            time.sleep(0.0002)

    with stream, peer:
        stream.socket.settimeout(timeout)
        reader = Peer(drain)
        returned = set()
        with _raising_timer() as state:
            for i, record in enumerate(records):
                if _call_recorded(state, functools.partial(stream.write, record)):
                    returned.add(i)
            for _ in range(10_000):  # what a raise left queued goes out now
                if _call_recorded(state, stream.flush) and stream.pending == 0:
                    break
        stream.shutdown_write()
        received = reader.join()
    seen = []
    pos = 0
    while pos < len(received):
        index, size = struct.unpack_from(">II", received, pos)
        assert received[pos:pos + 8 + size] == records[index], f"record {index} damaged"
        seen.append(index)
        pos += 8 + size
    assert seen == sorted(set(seen)), "a record was sent twice or out of order"
    assert returned <= set(seen)
