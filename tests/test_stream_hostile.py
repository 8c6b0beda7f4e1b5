"""Stream under hostile peers, timeouts, would-block, signals and threads (both backends):
limits fire before memory, and nothing received or queued is ever lost."""

from __future__ import annotations

import os
import signal
import socket as stdsocket
import struct
import threading
import time

import pytest

from fastsock import FrameTooLarge, IncompleteReadError
from streamutil import Peer, raw_pair, small_buffers, stream_pair

pytestmark = pytest.mark.timeout(30)


def test_4gib_length_prefix_refused_before_allocation(impl):
    stream, peer = raw_pair(impl)
    with stream, peer:
        stream.framing = impl.LengthPrefix()
        peer.sendall(b"\xff\xff\xff\xff" + b"x" * 10)
        with pytest.raises(FrameTooLarge) as info:
            stream.read_frame()
        assert info.value.size == 0xFFFFFFFF and info.value.limit == 16 * 1024 * 1024
        assert stream.buffered == 14  # the bytes stay: the caller decides
        stream.framing = impl.LengthPrefix(8, max_size=1 << 40)
        stream.discard(14)
        peer.sendall(struct.pack(">Q", 1 << 62))
        with pytest.raises(FrameTooLarge):
            stream.read_frames()
        stream.framing = impl.Varint()
        stream.discard(8)
        peer.sendall(b"\xff" * 9 + b"\x01")
        with pytest.raises(FrameTooLarge):
            stream.read_frame()


def test_delimiter_that_never_comes(impl):
    stream, peer = raw_pair(impl)
    with stream, peer:
        stream.framing = impl.Delimiter(b"\r\n", max_size=1000)
        writer = Peer(lambda: peer.sendall(b"a" * 50_000))
        with pytest.raises(FrameTooLarge) as info:
            stream.read_frame()
        assert info.value.limit == 1000 and info.value.size >= 1002
        assert stream.buffered >= 1002
        with pytest.raises(FrameTooLarge):
            stream.readline(limit=100)
        writer.join()


def test_max_buffer_bounds_memory(impl):
    stream, peer = raw_pair(impl)
    stream = impl.Stream(stream.socket, framing=impl.Delimiter(b"\n", max_size=1 << 30),
                         read_size=1024, max_buffer=4096)
    with stream, peer:
        writer = Peer(lambda: peer.sendall(b"b" * 20_000))
        with pytest.raises(FrameTooLarge) as info:
            stream.read_frame()
        assert info.value.limit == 4096
        assert stream.buffered <= 4096
        with pytest.raises(FrameTooLarge):
            stream.read()  # to EOF would exceed max_buffer too
        peer.close()
        writer.join()


def test_netstring_larger_than_max_buffer(impl):
    stream, peer = raw_pair(impl)
    stream = impl.Stream(stream.socket, framing=impl.Netstring(), read_size=1024, max_buffer=4096)
    with stream, peer:
        peer.sendall(b"5000:abc")
        with pytest.raises(FrameTooLarge):
            stream.read_frame()


def test_length_prefixed_frame_larger_than_max_buffer_is_read_directly(impl):
    a, b = stream_pair(impl, "tcp4", impl.LengthPrefix(), read_size=1024, max_buffer=4096)
    payload = os.urandom(1_000_000)
    with a, b:
        writer = Peer(lambda: (a.write_frame(payload), a.write_frame(b"next"), a.flush()))
        assert b.read_frame() == payload
        assert b.read_frame() == b"next"
        writer.join()


def test_malformed_frames(impl):
    stream, peer = raw_pair(impl)
    with stream, peer:
        stream.framing = impl.Netstring()
        peer.sendall(b"3:abc;")
        with pytest.raises(impl.FramingError):
            stream.read_frame()
        assert stream.buffered == 6
        stream.discard(6)
        stream.framing = impl.AsciiLength()
        peer.sendall(b"00x12")
        with pytest.raises(impl.FramingError):
            stream.read_frames()
        assert isinstance(impl.FramingError("x"), ValueError)


def test_peer_reset_mid_frame(impl):
    stream, peer = raw_pair(impl, "tcp4")
    with stream:
        stream.framing = impl.LengthPrefix()
        stream.socket.settimeout(0)
        peer.sendall(b"\x00\x00\x00\x10partial")
        for _ in range(200):  # until the partial frame is buffered
            try:
                stream.read_frame()
            except BlockingIOError:
                if stream.buffered == 11:
                    break
                time.sleep(0.01)
        assert stream.buffered == 11
        peer.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()  # RST
        stream.socket.settimeout(5)
        with pytest.raises(ConnectionResetError):
            stream.read_frame()
        assert stream.buffered == 11


def test_peer_half_closes_mid_frame(impl):
    stream, peer = raw_pair(impl, "tcp4")
    with stream, peer:
        stream.framing = impl.Delimiter(b"\n")
        peer.sendall(b"one\ntw")
        peer.shutdown(stdsocket.SHUT_WR)
        assert stream.read_frame() == b"one"
        with pytest.raises(IncompleteReadError) as info:
            stream.read_frame()
        assert info.value.partial == b"tw" and info.value.expected is None
        stream.write(b"still writable")
        stream.flush()
        assert peer.recv(100) == b"still writable"


def _raise_until_buffered(stream, size, call, error):
    """Call `call` (it must raise `error`: the peer sent less than it needs) until the
    `size` bytes the peer sent are all buffered; bounded in count and time, no fixed sleep."""
    deadline = time.monotonic() + 10
    for _ in range(500):
        with pytest.raises(error):
            call()
        if stream.buffered >= size or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert stream.buffered == size


@pytest.mark.parametrize("timeout,error", [(0.2, TimeoutError), (0, BlockingIOError)])
def test_read_interrupted_mid_frame_loses_nothing(impl, timeout, error):
    stream, peer = raw_pair(impl, "tcp4")
    with stream, peer:
        stream.framing = impl.LengthPrefix()
        stream.socket.settimeout(timeout)
        frame = impl.LengthPrefix().encode(b"0123456789" * 10)
        peer.sendall(frame[:37])
        _raise_until_buffered(stream, 37, stream.read_frame, error)
        with pytest.raises(error):
            stream.read_frames()
        assert stream.buffered == 37
        peer.sendall(frame[37:] + frame)
        stream.socket.settimeout(5)
        assert stream.read_frame() == b"0123456789" * 10
        assert stream.read_frames() == [b"0123456789" * 10]


@pytest.mark.parametrize("timeout,error", [(0.2, TimeoutError), (0, BlockingIOError)])
def test_large_reads_interrupted_lose_nothing(impl, timeout, error):
    stream, peer = raw_pair(impl, "tcp4")
    data = os.urandom(300_000).replace(b"\n", b"x")
    with stream, peer:
        stream.socket.settimeout(timeout)
        peer.sendall(data[:100_000])
        # the direct path: bytes go to the result first, and back to the buffer on failure
        _raise_until_buffered(stream, 100_000, lambda: stream.read_exactly(len(data)), error)
        buf = bytearray(len(data))
        with pytest.raises(error):
            stream.read_exactly_into(buf)
        with pytest.raises(error):
            stream.readline()
        assert stream.buffered == 100_000
        writer = Peer(lambda: peer.sendall(data[100_000:]))
        stream.socket.settimeout(5)
        assert stream.read_exactly(len(data)) == data
        writer.join()


def test_large_frame_interrupted_loses_nothing(impl):
    stream, peer = raw_pair(impl, "tcp4")
    payload = os.urandom(500_000)
    wire = impl.LengthPrefix().encode(payload)
    with stream, peer:
        stream.framing = impl.LengthPrefix()
        stream.socket.settimeout(0.2)
        peer.sendall(wire[:200_000])
        with pytest.raises(TimeoutError):
            stream.read_frame()
        writer = Peer(lambda: peer.sendall(wire[200_000:]))
        stream.socket.settimeout(5)
        assert stream.read_frame() == payload
        writer.join()


@pytest.mark.parametrize("timeout,error", [(0.3, TimeoutError), (0, BlockingIOError)])
@pytest.mark.parametrize("how", ["write", "write_frame", "write_frames", "flush"])
def test_writes_to_a_peer_that_stops_reading(impl, timeout, error, how):
    stream, peer = raw_pair(impl, "tcp4")
    small_buffers(stream.socket, peer)
    stream.framing = impl.LengthPrefix()
    big = os.urandom(2_000_000)
    accepted: list[int] = []
    with stream, peer:
        stream.socket.settimeout(timeout)
        stream.write(b"<start>")
        with pytest.raises(error):
            if how == "write":
                stream.write(big)
            elif how == "write_frame":
                stream.write_frame(big)
            elif how == "write_frames":
                stream.write_frames([b"a", big, b"b"])
            else:
                for _ in range(200):
                    accepted.append(1)  # a write that raises has still queued its data
                    stream.write(big[:10_000])
                stream.flush()
        assert stream.pending > 0  # queued, not lost
        stream.socket.settimeout(None)
        reader = Peer(lambda: b"".join(iter(lambda: peer.recv(1 << 20), b"")))
        stream.shutdown_write()
        got = reader.join()
    lp = impl.LengthPrefix()
    expected = {
        "write": b"<start>" + big,
        "write_frame": b"<start>" + lp.encode(big),
        "write_frames": b"<start>" + lp.encode(b"a") + lp.encode(big) + lp.encode(b"b"),
        "flush": b"<start>" + big[:10_000] * len(accepted),
    }[how]
    assert got == expected


def test_concurrent_use_from_two_threads_raises(impl):
    a, b = stream_pair(impl, "unix", impl.LengthPrefix())
    with a, b:
        blocked = Peer(lambda: b.read_frame())
        deadline = time.monotonic() + 5
        errors = []
        while time.monotonic() < deadline and len(errors) < 4:
            for call in (b.read_frame, lambda: b.write(b"x"), b.flush, b.read_frames):
                try:
                    call()
                except RuntimeError as exc:
                    errors.append(exc)
            if not errors:
                time.sleep(0.01)
        assert errors and "another thread" in str(errors[0])
        a.write_frame(b"release")
        a.flush()
        assert blocked.join() == b"release"
        a.write_frame(b"again")
        a.flush()
        assert b.read_frame() == b"again"  # the guard was released


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
def test_keyboard_interrupt_during_blocked_read_frame(impl):
    a, b = stream_pair(impl, "tcp4", impl.LengthPrefix())
    with a, b:
        a.write(b"\x00\x00")  # half a header: read_frame blocks inside a frame
        a.flush()
        timer = threading.Timer(0.2, lambda: signal.pthread_kill(threading.main_thread().ident, signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            b.read_frame()
        timer.join()
        assert b.buffered == 2
        a.write(b"\x00\x02ok")
        a.flush()
        assert b.read_frame() == b"ok"


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
def test_signal_handler_then_retry(impl):
    a, b = stream_pair(impl, "tcp4", impl.Delimiter(b"\n"))
    calls = []
    old = signal.signal(signal.SIGALRM, lambda *args: calls.append(1))
    try:
        with a, b:
            b.socket.settimeout(5)
            signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)
            writer = threading.Timer(0.4, lambda: (a.write_frame(b"late"), a.flush()))
            writer.start()
            assert b.read_frame() == b"late"
            signal.setitimer(signal.ITIMER_REAL, 0)
            writer.join()
        assert calls
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
