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
