"""The pure-Python Stream's own signal windows (the compiled Stream has none: its C code
never lets a Python signal handler run between receiving bytes and recording them).

A raising signal handler runs at the interpreter's next check. These tests raise at two
such checks in a row -- right after recv_into returned, then at the start of the cleanup
that keeps the received bytes -- and check that the bytes are kept intact even when the
caller reuses its buffer before the next call finishes the cleanup."""

from __future__ import annotations

import dis
import socket as stdsocket
import sys
import threading

import pytest
from sockutil import needs_cpython_signal_points

import fastsock._py.stream as pystream
from fastsock._py import Stream, socketpair

pytestmark = [pytest.mark.timeout(30), needs_cpython_signal_points]


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


# -- every window, one at a time ---------------------------------------------------------
#
# A raising signal handler strikes at the interpreter's checks: a function's entry, after a
# call returns, a loop's back edge. A profile function sees the first two (as "call",
# "return" and "c_return" events) inside the Stream's own modules, and raising from it is
# raising there. Each test below runs an operation once per such point k, with the
# exception raised at the k-th, then finishes the job without interruption, and checks
# the invariant: nothing received is lost or duplicated, nothing queued is sent twice, and
# the Stream never stays busy. (The profile function does not see every check: not the one
# after a call to a type -- bytes(), bytearray(), memoryview(), map() -- nor back edges, so
# those windows are covered by the layout rules of fastsock/_py/stream.py and the
# randomized signal tests of tests/test_stream_review.py, not here.)

_OURS = ("_py/stream.py", "_py/socket.py", "fastsock/framing.py")


_RETURNS = {dis.opmap[name] for name in ("RETURN_VALUE", "RETURN_CONST") if name in dis.opmap}


def _ours(frame) -> bool:
    return frame is not None and frame.f_code.co_filename.endswith(_OURS)


def _check_at(frame, event) -> bool:
    """Whether the profile event is one of the interpreter's checks inside fastsock: a
    function's entry, a C call's return, or a Python function's return to fastsock code
    (not the unwinding of a frame by an exception, which runs no check)."""
    if event not in ("call", "return", "c_return") or not _ours(frame):
        return False
    if event == "return":
        if not _ours(frame.f_back):
            return False  # a public method returning to its caller: the caller's window
        if frame.f_code.co_code[frame.f_lasti] not in _RETURNS:
            return False
    return True


def _each_window(run_once, limit=400):
    """run_once(strikes) for strikes = (k,) and (k, k + 1) ... (k, k + 12), k = 1, 2, ...
    until a run passes fewer than k checks: one raise at every check, and a second one soon
    after (two signals in a row: the second lands in the cleanup the first one started)."""
    for k in range(1, limit):
        if not run_once((k,)):
            return k
        for later in range(1, 13):
            run_once((k, k + later))
    raise AssertionError("more windows than expected")  # pragma: no cover


def _checks(strikes, call):
    """call() with Interrupt raised at the checks numbered in `strikes` (counted from 1,
    inside fastsock): (whether the first was reached, [result] or [])."""
    seen = [0]
    out = []
    last = max(strikes)

    def profile(frame, event, arg):
        if seen[0] >= last or not _check_at(frame, event):
            return
        seen[0] += 1
        if seen[0] in strikes:
            raise Interrupt  # (the interpreter then unsets the profile function)

    def tracer(frame, event, arg):
        # Called before the profile function at every Python call and return: puts it
        # back after a raise unset it, in time for the next strike.
        frame.f_trace_lines = False
        if seen[0] < last and sys.getprofile() is None:
            sys.setprofile(profile)
        return tracer

    sys.settrace(tracer)
    sys.setprofile(profile)
    try:
        out.append(call())
    except Interrupt:
        pass
    finally:
        sys.setprofile(None)
        sys.settrace(None)
    return seen[0] >= strikes[0], out


@pytest.mark.parametrize("timeout", [None, 5])
@pytest.mark.parametrize("how", ["read_frame", "read_frames", "read_frames_few", "next"])
def test_frames_survive_a_raise_at_every_window(how, timeout):
    lp = pystream.LengthPrefix()
    payloads = [bytes([i]) * size for i, size in enumerate([64, 1, 70_000, 64, 300])]
    wire = b"".join(map(lp.encode, payloads))

    def run_once(strikes):
        a, peer = socketpair()
        stream = Stream(a, framing=lp)
        with stream, peer:
            stream.socket.settimeout(timeout)
            writer = threading.Thread(target=lambda: (peer.sendall(wire), peer.shutdown(stdsocket.SHUT_WR)))
            writer.start()
            call = {"read_frame": stream.read_frame, "next": stream.__next__,
                    "read_frames": stream.read_frames,
                    "read_frames_few": lambda: stream.read_frames(2)}[how]
            got = []
            struck, out = _checks(strikes, call)
            for item in out:
                got.extend(item if isinstance(item, list) else [item])
            while len(got) < len(payloads):
                item = call()
                got.extend(item if isinstance(item, list) else [item])
            writer.join()
            assert got == payloads, f"raise at checks {strikes}: frames lost or duplicated"
            assert stream.read_frames() == [] and stream.at_eof()
            assert stream.socket.gettimeout() == timeout
            return struck

    assert _each_window(run_once) > 10


@pytest.mark.parametrize("timeout", [None, 5])
@pytest.mark.parametrize("how", ["readinto", "readinto_small", "read_exactly", "read_exactly_small", "read", "peek"])
def test_bytes_survive_a_raise_at_every_window(how, timeout):
    data = bytes(range(256)) * 800  # 204,800 bytes

    def run_once(strikes):
        a, peer = socketpair()
        stream = Stream(a)
        with stream, peer:
            stream.socket.settimeout(timeout)
            writer = threading.Thread(target=lambda: (peer.sendall(data), peer.shutdown(stdsocket.SHUT_WR)))
            writer.start()

            def once():
                if how in ("readinto", "readinto_small"):
                    buf = bytearray(100_000 if how == "readinto" else 1000)
                    return bytes(buf[:stream.readinto(buf)])
                if how == "read_exactly":
                    return stream.read_exactly(150_000)
                if how == "read_exactly_small":
                    return stream.read_exactly(3000)
                if how == "peek":
                    return stream.peek(5000)
                return stream.read(5000)

            struck, out = _checks(strikes, once)
            got = b"".join(out) if how != "peek" else b""
            if how == "peek":
                assert not out or data.startswith(out[0])
            rest = stream.read()  # to EOF: every byte not returned yet
            writer.join()
            assert got + rest == data, f"raise at checks {strikes}: bytes lost or duplicated"
            assert stream.socket.gettimeout() == timeout
            return struck

    assert _each_window(run_once) > 5


@pytest.mark.parametrize("timeout", [None, 5])
@pytest.mark.parametrize("how", ["write_frame", "flush", "write", "write_frames", "write_big"])
def test_writes_survive_a_raise_at_every_window(how, timeout):
    lp = pystream.LengthPrefix()
    # flush: a queue of small frames (the third one's flush is struck); the others: the
    # third write leaves through a gather send (too large to copy, or past write_buffer).
    sizes = [10, 64, 3000, 64, 5] if how == "flush" else [10, 64, 20_000, 64, 5]
    records = [lp.encode(bytes([i]) * size) for i, size in enumerate(sizes)]

    def run_once(strikes):
        a, peer = socketpair()
        stream = Stream(a, framing=lp, write_buffer=65536 if how == "flush" else 1000)
        with peer:
            stream.socket.settimeout(timeout)
            reader = threading.Thread(target=lambda: received.append(recv_all(peer)))
            received: list[bytes] = []
            reader.start()
            returned = []
            struck = False
            for i, record in enumerate(records):
                payload = record[4:]
                if how == "write_frame":
                    call = lambda p=payload: stream.write_frame(p)  # noqa: E731
                elif how == "write":
                    call = lambda r=record: stream.write(r)  # noqa: E731
                elif how == "write_frames":
                    call = lambda p=payload: stream.write_frames([p])  # noqa: E731
                elif how == "write_big":
                    call = lambda p=payload: stream.write_frame(p * 10)  # noqa: E731
                else:
                    stream.write_frame(payload)
                    returned.append(i)
                    call = stream.flush
                if i == 2:
                    struck, out = _checks(strikes, call)
                    if out and how != "flush":
                        returned.append(i)
                else:
                    call()
                    if how != "flush":
                        returned.append(i)
            stream.flush()
            stream.close()
            reader.join()
            wire = received[0]
            if how == "write_big":
                expected = [lp.encode(r[4:] * 10) for r in records]
            else:
                expected = records
            seen, pos = [], 0
            while pos < len(wire):
                size = int.from_bytes(wire[pos:pos + 4], "big")
                frame = wire[pos:pos + 4 + size]
                assert frame in expected, f"raise at checks {strikes}: a record was damaged"
                seen.append(expected.index(frame))
                pos += 4 + size
            assert seen == sorted(set(seen)), f"raise at checks {strikes}: a record was sent twice or out of order"
            assert set(returned) <= set(seen), f"raise at checks {strikes}: a record that was written is missing"
            return struck

    assert _each_window(run_once) >= 2


def recv_all(sock):
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)
