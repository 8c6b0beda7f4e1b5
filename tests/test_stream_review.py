"""Regression tests for the defects found by the Stream review (both backends): every one
of them once crashed, lost bytes, wasted memory or CPU, or made the backends disagree."""

from __future__ import annotations

import socket as stdsocket
import struct
import tracemalloc

import pytest

from fastsock import FrameTooLarge, IncompleteReadError
from streamutil import Peer, raw_pair

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
