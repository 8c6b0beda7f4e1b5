"""The read buffer's memory rule, one for both backends (fastsock/_streambase.py): every step
of the same operation sequences is checked against the capacity the rule gives, through
the Stream's private `_read_capacity` (the bytes allocated for its read buffer).

- A fill asks for read_size bytes of free space, or for a frame whose size is known,
  max(read_size, min(rest, max(held, GROW_FROM))); the buffer then grows, at least
  doubling (never past max_buffer), only when its free space is short.
- An emptied read buffer above shrink_threshold(read_size) gives its memory back at once.
- A large length-prefixed frame or read_exactly result is received straight into its
  result, whose memory starts at max(held, min(size, GROW_FROM)): an announced size alone
  is never reserved.

Arrival is made deterministic where the capacity depends on it: each scenario waits until
the kernel has queued enough bytes (FIONREAD) before the read whose recv sizes matter.
"""

from __future__ import annotations

import array
import fcntl
import socket as stdsocket
import struct
import termios
import time

import pytest
from sockutil import needs_tracemalloc, tracemalloc
from streamutil import Peer, raw_pair, small_buffers

from fastsock import IncompleteReadError, _streambase

pytestmark = pytest.mark.timeout(60)

MiB = 1 << 20
R = _streambase.DEFAULT_READ_SIZE
GROW_FROM = _streambase.GROW_FROM
KEEP = _streambase.shrink_threshold(R)  # an emptied buffer above this is given back


def _queued(sock: stdsocket.socket) -> int:
    """Bytes the kernel holds for `sock` (not yet received)."""
    count = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.FIONREAD, count)
    return count[0]


def _wait_queued(sock: stdsocket.socket, n: int) -> None:
    deadline = time.monotonic() + 10
    while _queued(sock) < n:
        assert time.monotonic() < deadline, f"the peer's {n} bytes never arrived"
        time.sleep(0.001)


def _through_buffer(total: int) -> int:
    """The capacity once a frame of `total` bytes, its size known from its header, has
    arrived in an empty buffer whose first recv took R bytes: the next fill asks for
    min(total - R, max(R, GROW_FROM)) = GROW_FROM more, so R + GROW_FROM; beyond that every
    growth doubles (2 x capacity >= held + what a fill asks), until the rest of the frame
    and a read_size fit. Sizes are chosen so that no capacity lies where the chunking of
    the last bytes would decide."""
    assert total - R > GROW_FROM
    cap = R + GROW_FROM
    while cap < total:
        cap *= 2
    assert cap >= total + R, "a capacity where the last recv's size would decide"
    return cap


def test_sequence_length_prefix(impl):
    stream, peer = raw_pair(impl)
    lp = impl.LengthPrefix()
    with stream, peer:
        stream.framing = lp
        assert stream._read_capacity == 0  # a new Stream owns no read memory

        # A small frame: the first fill reserves read_size bytes; emptied, they are kept.
        peer.sendall(lp.encode(b"x" * 100))
        assert stream.read_frame() == b"x" * 100
        assert stream._read_capacity == R

        # Reads that leave bytes held, then empty the buffer: nothing moves.
        peer.sendall(b"".join(lp.encode(b"%d" % i * 50) for i in range(3)))
        _wait_queued(stream.socket, 3 * 54)
        assert stream.read_frame() == b"0" * 50
        assert stream.buffered == 2 * 54 and stream._read_capacity == R
        assert stream.read_frames() == [b"1" * 50, b"2" * 50]
        assert stream._read_capacity == R

        # A 3 MiB frame: its payload goes straight into the result, the read buffer never
        # holds more than read_size bytes of it, and the frame after it is read as usual.
        big = bytes(range(256)) * (3 * MiB // 256)
        writer = Peer(lambda: peer.sendall(lp.encode(big) + lp.encode(b"after")))
        _wait_queued(stream.socket, R)
        assert stream.read_frame() == big
        assert stream._read_capacity == R
        assert stream.read_frame() == b"after"
        assert stream.buffered == 0 and stream._read_capacity == R
        writer.join()

        # read_exactly of a large size, nothing held: straight into the result as well.
        writer = Peer(lambda: peer.sendall(big))
        assert stream.read_exactly(len(big)) == big
        assert stream._read_capacity == R
        writer.join()

        # A small read_exactly goes through the buffer and leaves the rest held.
        peer.sendall(b"0123456789")
        _wait_queued(stream.socket, 10)
        assert stream.read_exactly(4) == b"0123"
        assert stream.buffered == 6 and stream._read_capacity == R
        assert stream.read(6) == b"456789"
        assert stream._read_capacity == R


@pytest.mark.parametrize("kind", ["Netstring", "Delimiter"])
def test_large_frame_through_the_buffer_is_given_back_once_emptied(impl, kind):
    # A framing with bytes after the payload (or no length at all) reads a large frame
    # through the buffer. Non-blocking reads until all but its last byte are buffered;
    # the last byte then comes with two small frames, so the big frame's read leaves them
    # held (the large buffer is kept), and the read that empties it gives it back.
    stream, peer = raw_pair(impl)
    payload = b"p" * (3 * MiB)
    if kind == "Netstring":
        framing = impl.Netstring()
        expected = _through_buffer(len(framing.encode(payload)))
    else:
        framing = impl.Delimiter(b"\n")
        # No size is known: every fill asks for read_size bytes, so the capacity doubles
        # from read_size until the frame and a read_size of free space fit.
        expected = R
        while expected < len(payload) + 1 + R:
            expected *= 2
        assert expected // 2 < len(payload) + 1
    wire = framing.encode(payload)
    small = framing.encode(b"one") + framing.encode(b"two")
    with stream, peer:
        stream.framing = framing
        stream.socket.settimeout(0)
        writer = Peer(lambda: peer.sendall(wire[:-1]))
        _wait_queued(stream.socket, R)  # the first recv takes a whole read_size
        deadline = time.monotonic() + 20
        while stream.buffered < len(wire) - 1:
            assert time.monotonic() < deadline
            with pytest.raises(BlockingIOError):
                stream.read_frame()
        writer.join()
        assert stream._read_capacity == expected
        peer.sendall(wire[-1:] + small)
        _wait_queued(stream.socket, 1 + len(small))
        assert stream.read_frame() == payload
        assert stream.buffered == len(small)
        assert stream._read_capacity == expected  # bytes held: the memory stays
        assert stream.read_frames() == [b"one", b"two"]
        assert stream.buffered == 0
        assert expected > KEEP and stream._read_capacity == 0  # emptied: given back at once
        peer.sendall(framing.encode(b"next"))
        _wait_queued(stream.socket, len(framing.encode(b"next")))
        assert stream.read_frame() == b"next"
        assert stream._read_capacity == R


@needs_tracemalloc
@pytest.mark.parametrize("how", ["read_frame", "read_exactly"])
def test_hostile_announcement_reserves_at_most_grow_from(impl, how):
    # A peer announces 512 MiB (below max_size), sends 100 kB and closes. The result's
    # memory starts at GROW_FROM (what is held being less) and never needs to grow: the
    # traced peak stays below twice that, and the read buffer keeps read_size bytes.
    stream, peer = raw_pair(impl)
    announced = 512 * MiB
    body = b"h" * 100_000
    header = struct.pack(">I", announced)
    with stream, peer:
        stream.framing = impl.LengthPrefix(max_size=1 << 30)
        writer = Peer(lambda: (peer.sendall(header + body), peer.shutdown(stdsocket.SHUT_WR)))
        if how == "read_exactly":
            assert stream.read_exactly(4) == header
        error = None
        tracemalloc.start()
        try:
            try:
                stream.read_frame() if how == "read_frame" else stream.read_exactly(announced)
            except IncompleteReadError as exc:
                error = exc
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        writer.join()
        assert isinstance(error, IncompleteReadError)
        assert error.partial == (header + body if how == "read_frame" else body)
        assert peak < 2 * GROW_FROM, f"{peak} bytes traced for a frame that sent 100 kB"
        assert stream._read_capacity == R
        assert stream.at_eof()


def test_bytes_landed_after_a_timeout_start_an_emptied_buffer_at_its_front(impl):
    # A large read_exactly receives straight into its result; on timeout its bytes join the
    # read buffer. When that buffer was emptied by earlier reads, they go at its front (as
    # fs_buffer_consume resets an empty buffer), not after the stale offset of what was read.
    stream, peer = raw_pair(impl)
    with stream, peer:
        peer.sendall(b"a" * 100)
        _wait_queued(stream.socket, 100)
        assert stream.read(100) == b"a" * 100
        stream.socket.settimeout(0.3)
        peer.sendall(b"b" * 1000)
        _wait_queued(stream.socket, 1000)
        with pytest.raises(TimeoutError):
            stream.read_exactly(200_000)
        assert stream.buffered == 1000 and stream._read_capacity == R
        if hasattr(stream, "_rhead"):  # the pure layout (the compiled one is fs_buffer's)
            assert (stream._rhead, stream._rtail) == (0, 1000)
        assert stream.read(5000) == b"b" * 1000


WKEEP = _streambase.shrink_threshold(_streambase.DEFAULT_WRITE_BUFFER)  # the write queue's


@pytest.mark.parametrize("how", ["flush", "gather"])
def test_write_queue_is_given_back_once_flushed(impl, how):
    # The write queue follows the read buffer's rule with write_buffer for read_size: the
    # send that empties a queue above shrink_threshold(write_buffer) gives its memory back
    # (here: the unsent rest of a large write that timed out, sent by flush() or with the
    # next large write in one gather send); ordinary traffic keeps at most that much.
    # _write_capacity is the queue's memory, in both backends.
    stream, peer = raw_pair(impl, "tcp4")
    small_buffers(stream.socket, peer)
    big = bytes(range(256)) * (3 * MiB // 256)
    with stream, peer:
        assert stream._write_capacity == 0  # a new Stream owns no write memory
        for _ in range(3):
            stream.write(b"s" * 1000)
        stream.flush()
        assert peer.recv(3000, stdsocket.MSG_WAITALL) == b"s" * 3000
        assert stream.pending == 0 and stream._write_capacity <= WKEEP

        stream.socket.settimeout(0.2)
        with pytest.raises(TimeoutError):
            stream.write(big)  # nobody reads: most of it stays queued
        unsent = stream.pending
        assert unsent > WKEEP and stream._write_capacity >= unsent
        reader = Peer(lambda: b"".join(iter(lambda: peer.recv(1 << 20), b"")))
        stream.socket.settimeout(None)
        if how == "flush":
            stream.flush()
        else:
            stream.write(big)  # the queue and this write in one gather send
        assert stream.pending == 0
        assert stream._write_capacity == 0  # emptied from above the threshold: given back

        for _ in range(3):
            stream.write(b"t" * 1000)
        stream.flush()
        assert stream._write_capacity <= WKEEP
        stream.shutdown_write()
        got = reader.join()
    sent_first = len(big) - unsent
    expected = big[sent_first:] + (big if how == "gather" else b"") + b"t" * 3000
    assert got[-len(expected):] == expected and len(got) == len(expected) + sent_first


@needs_tracemalloc
@pytest.mark.parametrize("how", ["read_frame", "read_exactly", "read_exactly_into"])
def test_large_read_trickling_in_is_not_copied_again_at_every_call(impl, how):
    # An 8 MiB frame (or read_exactly) arriving 64 KiB at a time into a non-blocking Stream:
    # each call receives what is there and raises BlockingIOError, every byte kept. Once
    # more than GROW_FROM is held, the read continues through the read buffer (growing by
    # doubling) instead of copying every held byte into a new result at each call, which
    # made such a read quadratic: the memory the calls allocate, in all, stays within a
    # small multiple of the frame's size (the calls up to GROW_FROM held take up to GROW_FROM
    # each, the buffer's doublings about twice its final size); it was about pieces / 2 = 64
    # times the size.
    stream, peer = raw_pair(impl)
    size = 8 * MiB
    lp = impl.LengthPrefix(max_size=64 * MiB)
    payload = bytes(range(256)) * (size // 256)
    wire = lp.encode(payload) if how == "read_frame" else payload
    target = bytearray(size)
    call = {"read_frame": stream.read_frame, "read_exactly": lambda: stream.read_exactly(size),
            "read_exactly_into": lambda: stream.read_exactly_into(target)}[how]
    pieces = [wire[i:i + 65536] for i in range(0, len(wire), 65536)]
    allocated = 0
    with stream, peer:
        stream.framing = lp
        stream.socket.settimeout(0)
        sent = 0
        tracemalloc.start()
        try:
            for piece in pieces[:-1]:
                peer.sendall(piece)
                sent += len(piece)
                _wait_queued(stream.socket, len(piece))
                before = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
                with pytest.raises(BlockingIOError):
                    call()
                allocated += max(0, tracemalloc.get_traced_memory()[1] - before)
                assert stream.buffered == sent  # nothing lost
            peer.sendall(pieces[-1])
            _wait_queued(stream.socket, len(pieces[-1]))
            result = call()
        finally:
            tracemalloc.stop()
        if how == "read_exactly_into":
            assert result == size and target == payload
        else:
            assert result == payload
        assert stream.buffered == 0 and stream._read_capacity == 0  # given back at once
    assert allocated < 12 * size, f"{allocated} bytes allocated by the calls for a {size}-byte read"
