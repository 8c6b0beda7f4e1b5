"""Regression tests for the defects found by the Stream review (both backends): every one
of them once crashed, lost bytes, wasted memory or CPU, or made the backends disagree."""

from __future__ import annotations

import pytest

from fastsock import FrameTooLarge
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
