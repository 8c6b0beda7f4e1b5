"""The pure-Python Stream's own signal windows (the compiled Stream has none: its C code
never lets a Python signal handler run between receiving bytes and recording them).

A raising signal handler runs at the interpreter's next check. These tests raise at two
such checks in a row -- right after recv_into returned, then at the start of the cleanup
that keeps the received bytes -- and check that the bytes are kept intact even when the
caller reuses its buffer before the next call finishes the cleanup."""

from __future__ import annotations

import socket as stdsocket

import pytest

import fastsock._py.stream as pystream
from fastsock._py import Stream, socketpair

pytestmark = pytest.mark.timeout(30)


class Interrupt(BaseException):
    """What a raising signal handler would raise."""


@pytest.mark.parametrize("method,checks", [
    # Both keep a private copy of the received bytes (taken with no call) as a landing;
    # readinto's is landed by the exit's slow path, read_exactly_into's by its except.
    ("readinto", ["recv", "land"]),
    ("read_exactly_into", ["recv", "land"]),
])
def test_second_raise_in_cleanup_keeps_bytes_not_the_callers_buffer(method, checks, monkeypatch):
    a, peer = socketpair()
    stream = Stream(a)
    with stream, peer:
        peer.sendall(b"A" * 5000)
        peer.shutdown(stdsocket.SHUT_WR)
        # readinto: at least read_size bytes, so it receives straight into the buffer;
        # read_exactly_into: more than arrives, so it receives straight in and waits.
        buf = bytearray(65536 if method == "readinto" else 200_000)
        real_recorded, real_land = pystream._recorded, pystream.Stream._land
        fired: list[str] = []

        def recorded_then_interrupt(*args):
            n = real_recorded(*args)
            if not fired:
                fired.append("recv")
                raise Interrupt  # right after recv_into returned: the count is recorded
            return n

        def interrupt_then_land(self):
            if fired == ["recv"]:
                fired.append("land")
                raise Interrupt  # the second check: where the cleanup starts
            return real_land(self)

        monkeypatch.setattr(pystream, "_recorded", recorded_then_interrupt)
        monkeypatch.setattr(pystream.Stream, "_land", interrupt_then_land)
        with pytest.raises(Interrupt):
            getattr(stream, method)(buf)
        monkeypatch.undo()
        assert fired == checks
        buf.append(0)  # the caller's buffer is no longer held (exported) by the Stream
        buf[:] = bytes(len(buf))  # ... and the caller reuses it
        assert stream.read() == b"A" * 5000
