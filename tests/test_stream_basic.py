"""Stream behaviour on both backends: reads, writes, framings, EOF, arguments, lifecycle.
Tests marked "Stream review regression" each once crashed or made the backends disagree."""

from __future__ import annotations

import os
import socket as stdsocket

import pytest
from streamutil import ALL_FRAMINGS, Peer, make_pair, raw_pair, small_buffers, stream_pair, transports

from fastsock import FrameTooLarge, IncompleteReadError

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("transport", transports())
def test_frames_roundtrip_every_transport(impl, transport):
    a, b = stream_pair(impl, transport, impl.LengthPrefix())
    with a, b:
        payloads = [b"", b"x", b"hello" * 1000, os.urandom(200_000)]
        writer = Peer(lambda: (a.write_frames(payloads), a.flush()))
        got = [b.read_frame() for _ in payloads]
        writer.join()
        assert got == payloads


@pytest.mark.parametrize("name,make", ALL_FRAMINGS, ids=[n for n, _ in ALL_FRAMINGS])
def test_every_framing_both_ends(impl, name, make):
    framing = make(impl)
    a, b = stream_pair(impl, "unix", framing)
    payloads = [b"", b"a", b"payload", b"z" * 200]
    with a, b:
        for p in payloads:
            a.write_frame(p)
        a.write_frames(payloads)
        a.shutdown_write()
        got = list(b)
    assert got == payloads * 2
    assert b.at_eof() if not b.closed else True


def test_wire_format_matches_encode(impl):
    stream, peer = raw_pair(impl)
    with stream, peer:
        stream.framing = impl.AsciiLength()
        stream.write_frame(b"hello")
        stream.framing = impl.Netstring()
        stream.write_frame(b"hi")
        stream.framing = impl.LengthPrefix(2, "little")
        stream.write_frames([b"ab", b"c"])
        stream.flush()
        assert peer.recv(100) == b"00005hello" + b"2:hi," + b"\x02\x00ab\x01\x00c"


def test_read_frames_returns_everything_buffered(impl):
    stream, peer = raw_pair(impl)
    with stream, peer:
        stream.framing = impl.LengthPrefix()
        wire = b"".join(impl.LengthPrefix().encode(bytes([i]) * i) for i in range(50))
        peer.sendall(wire + b"\x00\x00")  # plus the start of the next header
        frames = []
        while len(frames) < 50:
            frames += stream.read_frames()
        assert frames == [bytes([i]) * i for i in range(50)]
        assert stream.buffered == 2
        peer.sendall(b"\x00\x01Z" + impl.LengthPrefix().encode(b"q") * 3)
        assert stream.read_frames(max_frames=2) == [b"Z", b"q"]
        assert stream.read_frames() == [b"q", b"q"]
        peer.close()
        assert stream.read_frames() == []
        assert stream.at_eof()


@pytest.mark.parametrize("max_size", [None, 40])
def test_read_frames_max_frames_over_a_large_batch(impl, max_size):
    """max_frames is honoured exactly however many frames are buffered (the pure twin
    parses in bounded regions without a per-frame count); nothing is skipped or repeated,
    with zero-length frames (the densest case) and with max_size below the buffered size."""
    framing = impl.LengthPrefix(2, max_size=max_size)
    stream, peer = raw_pair(impl)
    sizes = [(i * 7919) % 31 for i in range(20_000)]
    payloads = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    wire = b"".join(framing.encode(p) for p in payloads)
    with stream:
        stream.framing = framing
        writer = Peer(lambda: (peer.sendall(wire), peer.close()))
        limits = [1, 3, 1000, 7000, 65536, None, 2]
        got: list[bytes] = []
        calls = 0
        while True:
            limit = limits[calls % len(limits)]
            batch = stream.read_frames(max_frames=limit)
            calls += 1
            if not batch:
                break
            assert limit is None or len(batch) <= limit
            got += batch
        writer.join()
        assert got == payloads
        assert stream.at_eof()


def test_emptied_buffer_starts_again_at_the_front(impl):
    # Once every buffered byte is consumed, the next recv may fill the whole buffer, as the
    # compiled fs_buffer does (head and tail go back to 0), wherever the last read ended.
    a, peer = make_pair(impl, "unix")
    with impl.Stream(a, read_size=4096) as stream, peer:
        peer.sendall(b"x" * 10_000 + b"\n")  # the line grows the buffer to 16 KiB
        assert len(stream.readline()) == 10_001
        peer.sendall(b"y" * 12_000)  # AF_UNIX: all queued at the reader once sendall returns
        assert stream.read(12_000) == b"y" * 12_000  # one recv into the emptied buffer


@pytest.mark.timeout(60)
def test_fresh_stream_with_empty_buffers(impl):
    # Stream review regression: a Stream that never buffered anything owns no read memory
    # (a NULL pointer in C): every copy of zero held bytes must be skipped, not done from NULL.
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


def test_clean_eof_and_eof_inside_frame(impl):
    stream, peer = raw_pair(impl)
    with stream:
        stream.framing = impl.LengthPrefix()
        peer.sendall(b"\x00\x00\x00\x05hel")
        peer.close()
        with pytest.raises(IncompleteReadError) as info:
            stream.read_frame()
        assert info.value.partial == b"\x00\x00\x00\x05hel"
        assert info.value.expected == 9
        with pytest.raises(EOFError):
            stream.read_frame()
        assert list(stream) == []


def test_reads(impl):
    stream, peer = raw_pair(impl)
    with stream:
        peer.sendall(b"line one\nline two\r\nabcdefghij")
        assert stream.readline() == b"line one\n"
        assert stream.read_until((b"\r\n", b"\n")) == b"line two\r\n"
        assert stream.peek(3) == b"abc"
        assert stream.peek() == b"abcdefghij"
        assert stream.read_exactly(2) == b"ab"
        buf = bytearray(3)
        assert stream.read_exactly_into(buf) == 3 and buf == b"cde"
        buf = bytearray(10)
        assert stream.readinto(buf) == 5 and buf[:5] == b"fghij"
        peer.sendall(b"xyz--rest")
        assert stream.read_until(b"--", keep=False) == b"xyz"
        assert stream.read(2) == b"re"
        peer.close()
        assert stream.read() == b"st"
        assert stream.read() == b""
        assert stream.readline() == b""
        assert stream.at_eof()
        assert stream.readinto(bytearray(4)) == 0


def test_readline_at_eof_returns_rest_read_until_raises(impl):
    stream, peer = raw_pair(impl)
    with stream:
        peer.sendall(b"no newline")
        peer.close()
        assert stream.readline() == b"no newline"
    stream, peer = raw_pair(impl)
    with stream:
        peer.sendall(b"no delimiter")
        peer.close()
        with pytest.raises(IncompleteReadError) as info:
            stream.read_until(b"!")
        assert info.value.partial == b"no delimiter" and info.value.expected is None


def test_read_exactly_eof(impl):
    stream, peer = raw_pair(impl)
    with stream:
        peer.sendall(b"abc")
        peer.close()
        with pytest.raises(IncompleteReadError) as info:
            stream.read_exactly(10)
        assert info.value.partial == b"abc" and info.value.expected == 10
    for size in (200_000, 17 * 1024 * 1024):  # the direct path, and the grow-as-it-arrives path
        stream, peer = raw_pair(impl)
        with stream:
            data = os.urandom(1000)
            peer.sendall(data)
            peer.close()
            with pytest.raises(IncompleteReadError) as info:
                stream.read_exactly(size)
            assert info.value.partial == data and info.value.expected == size


def test_large_reads_go_direct(impl):
    a, b = stream_pair(impl, "tcp4")
    data = os.urandom(3 * 1024 * 1024)
    with a, b:
        writer = Peer(lambda: (a.write(data), a.flush()))
        head = b.read_exactly(10)
        rest = bytearray(len(data) - 10 - 5)
        b.read_exactly_into(rest)
        tail = b.read_exactly(5)
        writer.join()
        assert head + rest + tail == data


def test_write_coalesces_and_flushes(impl):
    stream, peer = raw_pair(impl)
    with stream, peer:
        for i in range(100):
            stream.write(b"%03d" % i)
        assert stream.pending == 300
        stream.writelines([b"a", bytearray(b"b"), memoryview(b"c")])
        assert stream.pending == 303
        stream.flush()
        assert stream.pending == 0
        peer.settimeout(5)
        got = b""
        while len(got) < 303:
            got += peer.recv(1000)
        assert got == b"".join(b"%03d" % i for i in range(100)) + b"abc"


def test_write_large_goes_out_at_once(impl):
    stream, peer = raw_pair(impl, "tcp4")
    big = os.urandom(1_000_000)
    with stream, peer:
        stream.write(b"head")
        reader = Peer(lambda: b"".join(iter(lambda: peer.recv(65536), b"")))
        stream.write(big)  # with the queued bytes, one gather send; nothing left pending
        assert stream.pending == 0
        stream.shutdown_write()
        assert reader.join() == b"head" + big


def test_write_frames_mixed_sizes(impl):
    a, b = stream_pair(impl, "tcp4", impl.Varint())
    payloads = [os.urandom(n) for n in (0, 1, 100, 20_000, 5, 300_000, 7)]
    with a, b:
        writer = Peer(lambda: (a.write_frames(payloads), a.write_frames([]), a.flush()))
        got = []
        while len(got) < len(payloads):
            got += b.read_frames()
        writer.join()
        assert got == payloads


@pytest.mark.timeout(60)
def test_writelines_takes_a_snapshot_of_a_list(impl):
    # Stream review regression: writelines sends the items as they were when it was called,
    # and never changes a mutable one.
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


def test_sendfile(impl, tmp_path):
    data = os.urandom(300_000)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    a, b = stream_pair(impl, "tcp4")
    with a, b:
        a.write(b"<")
        with open(path, "rb") as f:
            reader = Peer(lambda: b.read_exactly(1 + 1000 + 100))
            assert a.sendfile(f, 5, 1000) == 1000
            assert f.tell() == 1005
            a.write(b"x" * 100)
            a.flush()
            assert reader.join() == b"<" + data[5:1005] + b"x" * 100
        import io
        reader = Peer(lambda: b.read_exactly(len(data) - 10))
        assert a.sendfile(io.BytesIO(data), 10) == len(data) - 10  # no fd: read and send
        assert reader.join() == data[10:]


def test_half_close_keeps_reading(impl):
    a, b = stream_pair(impl, "tcp4", impl.Delimiter(b"\n"))
    with a, b:
        a.write_frame(b"request")
        a.shutdown_write()  # "I will send no more, but I still listen"
        assert b.read_frame() == b"request"
        assert b.read_frames() == []
        b.write_frame(b"reply")
        b.close()
        assert a.read_frame() == b"reply"
        with pytest.raises(EOFError):
            a.read_frame()


def test_close_flushes_and_is_idempotent(impl):
    stream, peer = raw_pair(impl)
    stream.write(b"bye")
    stream.close()
    stream.close()
    assert stream.closed
    assert peer.recv(10) == b"bye"
    with pytest.raises(OSError):
        stream.read(1)
    with pytest.raises(OSError):
        stream.write(b"x")
    assert stream.fileno() == -1
    peer.close()


def test_wraps_stdlib_sockets_and_connect(impl, tmp_path):
    with stdsocket.create_server(("127.0.0.1", 0)) as server:
        stream = impl.connect(server.getsockname(), timeout=5, framing=impl.LengthPrefix())
        conn, _ = server.accept()
        with stream, impl.Stream(conn, framing=impl.LengthPrefix()) as other:
            assert stream.socket.getsockopt(stdsocket.IPPROTO_TCP, stdsocket.TCP_NODELAY)
            stream.write_frame(b"ping")
            stream.flush()
            assert other.read_frame() == b"ping"
    path = str(tmp_path / "sock")
    with stdsocket.socket(stdsocket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        with impl.connect(path) as stream:
            conn, _ = server.accept()
            with impl.Stream.from_fd(conn.detach()) as other:
                other.write(b"hi")
                other.flush()
                assert stream.read_exactly(2) == b"hi"


def test_bad_arguments(impl):
    a, b = stdsocket.socketpair()
    with a, b:
        with pytest.raises(TypeError):
            impl.Stream(object())
        with pytest.raises(ValueError):
            impl.Stream(stdsocket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM))
        with pytest.raises(ValueError):
            impl.Stream(a, read_size=0)
        with pytest.raises(ValueError):
            impl.Stream(a, read_size=100, max_buffer=10)
        with pytest.raises(TypeError):
            impl.Stream(a, read_size="big")
        with pytest.raises(TypeError):
            impl.Stream(a, framing=b"\n")
        closed = stdsocket.socket()
        closed.close()
        with pytest.raises(OSError):
            impl.Stream(closed)
        stream = impl.Stream(a)
        with pytest.raises(ValueError):
            stream.read_frame()
        with pytest.raises(ValueError):
            stream.write_frame(b"x")
        with pytest.raises(TypeError):
            stream.write("text")
        with pytest.raises(TypeError):
            stream.write_frames if False else stream.writelines(b"abc")
        with pytest.raises(TypeError):
            stream.readinto(b"readonly")
        with pytest.raises(ValueError):
            stream.read_exactly(-1)
        with pytest.raises(ValueError):
            stream.read_until(b"")
        with pytest.raises(TypeError):
            stream.read_until("x")
        stream.framing = impl.FixedLength(3)
        with pytest.raises(impl.FramingError):
            stream.write_frame(b"ab")
        stream.framing = impl.Delimiter(b"\n")
        with pytest.raises(impl.FramingError):
            stream.write_frames([b"ok", b"bad\nline"])
        assert stream.pending == 0  # validated before anything was queued
        stream.framing = impl.LengthPrefix(1)
        with pytest.raises(FrameTooLarge):
            stream.write_frame(b"x" * 256)
        assert "Stream" in repr(stream)
        stream.close()


@pytest.mark.timeout(60)
def test_sizes_beyond_ssize_t_raise_overflow_error(impl):
    # Stream review regression: sizes past Py_ssize_t raise OverflowError, and non-integers
    # TypeError, the same on both backends.
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


@pytest.mark.timeout(60)
def test_error_messages_agree(impl):
    # Stream review regression: both backends raise the same messages (those of the stdlib's
    # socket and io where there is one).
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


def test_discard_after_frame_too_large(impl):
    stream, peer = raw_pair(impl)
    with stream, peer:
        stream.framing = impl.LengthPrefix(max_size=10)
        peer.sendall(b"\x00\x00\x00\x0b" + b"x" * 11 + b"\x00\x00\x00\x02ok")
        with pytest.raises(FrameTooLarge) as info:
            stream.read_frame()
        assert info.value.size == 11 and info.value.limit == 10
        assert isinstance(info.value, ValueError)
        with pytest.raises(FrameTooLarge):
            stream.read_frames()  # still there: the caller decides
        assert stream.discard(15) == 15
        assert stream.read_frame() == b"ok"


@pytest.mark.parametrize("how", ["write", "write_frame", "write_frames", "flush"])
def test_writes_with_a_timeout_try_before_waiting(impl, how):
    # As the sockets: a send that fits goes out at once, a wait only follows would-block, so
    # a timeout far too short for any wait still lets every write through.
    stream, peer = raw_pair(impl)
    lp = impl.LengthPrefix()
    big = os.urandom(100_000)  # > COPY_MAX: sent at once, with a gather send
    with stream, peer:
        stream.framing = lp
        stream.socket.settimeout(1e-9)
        stream.write(b"<q>")
        if how == "write":
            stream.write(big)
            expected = b"<q>" + big
        elif how == "write_frame":
            stream.write_frame(big)
            expected = b"<q>" + lp.encode(big)
        elif how == "write_frames":
            stream.write_frames([b"a", big])
            expected = b"<q>" + lp.encode(b"a") + lp.encode(big)
        else:
            stream.flush()
            expected = b"<q>"
        assert stream.pending == 0
        assert stream.socket.gettimeout() == 1e-9
        peer.settimeout(5)
        got = b""
        while len(got) < len(expected):
            got += peer.recv(1 << 20)
        assert got == expected


def test_close_whose_flush_times_out_raises_timeout_error(impl):
    # close() flushes; a peer that reads nothing makes that flush time out: the error is a
    # TimeoutError on every interpreter (on Python 3.9 the stdlib's socket.timeout is not
    # one), and the Stream is closed all the same.
    stream_sock, peer = make_pair(impl, "unix")
    small_buffers(stream_sock, peer)
    stream = impl.Stream(stream_sock, write_buffer=4 << 20)
    with peer:
        for _ in range(200):
            stream.write(b"q" * 10_000)  # queued: write_buffer is not reached
        assert stream.pending == 2_000_000
        stream.socket.settimeout(0.2)
        with pytest.raises(TimeoutError):
            stream.close()
        assert stream.closed and stream.fileno() == -1
        stream.close()  # closing twice is harmless
