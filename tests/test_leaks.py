"""Leak checks: the core operations run in a loop give back every object, byte and descriptor.

The idea is aio-libs/multidict's tests/test_leaks.py: run an operation many times, then
compare what the process holds with a baseline. Here each scenario runs one warm-up round
(first-call caches, lazy imports, free lists), then ROUNDS measured rounds of `n` iterations,
and after each round (and a gc.collect()) compares with the end of the round before:

  blocks   sys.getallocatedblocks(): Python objects (a reference leaked per call)
  heap     glibc's mallinfo2() bytes in use: the C heap, where src_c's buffers, the poller's
           slots and the server's connections live (no Python allocator sees them)
  fds      the process's open descriptors

A leak grows every round by at least one block (or one malloc chunk, 32 bytes or more, or one
descriptor) per iteration; noise does not repeat. So a scenario fails only when EVERY measured
round grew by more than the tolerance: less than one block per two iterations, 16 bytes per
iteration (64 KiB at least: Python's own large allocations come and go), and no descriptor at
all. Each scenario runs on both backends (the pure one leaks no C memory, but can leak
descriptors and references just the same); blocks and heap are measured on CPython only
(PyPy has neither: its scenarios check descriptors), heap on glibc only (neither under `make
asan`: PYTHONMALLOC=malloc and ASan's allocator hide them; descriptors are still checked
there, and ASan itself watches every access). No timing is asserted;
every loop is bounded; servers listen on 127.0.0.1 only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import socket as stdsocket
import sys
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any, Optional

import pytest
from aioutil import aio  # noqa: F401 (the fixture)
from serverutil import LOCAL, Running, connect, frames, is_eof, read_frames, wait_until

import fastsock

ROUNDS = 3
IS_CPYTHON = sys.implementation.name == "cpython"


#: Python's allocated blocks are counted by pymalloc; under PYTHONMALLOC=malloc (`make asan`)
#: sys.getallocatedblocks() is always 0 and the measure is left out.
COUNTS_BLOCKS = IS_CPYTHON and sys.getallocatedblocks() > 0


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _libc() -> Optional[ctypes.CDLL]:
    """The process's own symbols (its malloc is the extension's: ASan's when preloaded)."""
    if not IS_CPYTHON or ctypes.util.find_library("c") is None:
        return None
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    return libc


LIBC = _libc()


def _heap_meter() -> Optional[Callable[[], int]]:
    """Bytes the C heap has handed out (glibc 2.33+'s mallinfo2), or None where that cannot
    be read, or does not see what malloc hands out (another allocator, e.g. ASan's)."""
    if LIBC is None:
        return None
    try:
        fn = LIBC.mallinfo2
    except AttributeError:
        return None
    fn.restype = _Mallinfo2

    def in_use() -> int:
        info = fn()
        return int(info.uordblks + info.hblkhd)  # small chunks + chunks mmapped on their own

    before = in_use()
    chunk = LIBC.malloc(1 << 20)
    seen = in_use() - before
    LIBC.free(chunk)
    return in_use if seen >= 1 << 20 else None


HEAP_IN_USE = _heap_meter()


def open_fds() -> int:
    """How many descriptors this process has open."""
    for path in ("/proc/self/fd", "/dev/fd"):
        if os.path.isdir(path):
            return len(os.listdir(path)) - 1  # the listing's own descriptor
    pytest.skip("no /proc/self/fd or /dev/fd here to count open descriptors")


def sample() -> dict[str, int]:
    gc.collect()
    out = {"fds": open_fds()}
    if COUNTS_BLOCKS:
        out["blocks"] = sys.getallocatedblocks()
    if HEAP_IN_USE is not None:
        out["heap"] = HEAP_IN_USE()
    return out


class Growth:
    """What the process holds, sampled after each round, and the verdict (module docstring).
    `count`: the iterations one round is, for the tolerance."""

    def __init__(self, count: int, what: str) -> None:
        self.what = what
        self.tolerance = {"fds": 0, "blocks": count // 2, "heap": max(64 * 1024, 16 * count)}
        self.count = count
        self.before = sample()
        self.growth: dict[str, list[int]] = {key: [] for key in self.before}

    def round_done(self) -> None:
        after = sample()
        for key, value in after.items():
            self.growth[key].append(value - self.before[key])
        self.before = after

    def leaks(self) -> dict[str, list[int]]:
        """The measures that grew past the tolerance in every round."""
        return {key: grew for key, grew in self.growth.items() if min(grew) > self.tolerance[key]}

    def check(self) -> None:
        print(f"{self.what}: growth per round of {self.count} iterations {self.growth} (tolerance {self.tolerance})")
        leaks = self.leaks()
        assert not leaks, f"{self.what} leaks {leaks} per round of {self.count} iterations ({self.tolerance=})"


def measure(op: Callable[[], Any], n: int, what: str) -> Growth:
    """Run `op` n times per round, a warm-up round then ROUNDS measured ones."""
    for _ in range(n):
        op()
    growth = Growth(n, what)
    for _ in range(ROUNDS):
        for _ in range(n):
            op()
        growth.round_done()
    return growth


def check_no_leak(op: Callable[[], Any], n: int, what: str) -> None:
    """AssertionError if every measured round of `op` grew past the tolerance."""
    measure(op, n, what).check()


async def check_no_leak_async(op: Callable[[], Awaitable[Any]], n: int, what: str) -> None:
    """check_no_leak for a coroutine function, every round on the running loop (one loop for
    the whole check: uvloop 0.23 keeps a few blocks per loop that served a connection)."""
    for _ in range(n):
        await op()
    growth = Growth(n, what)
    for _ in range(ROUNDS):
        for _ in range(n):
            await op()
        growth.round_done()
    growth.check()


def test_checker_sees_leaks() -> None:
    """The checker itself: one object, one malloc'd chunk or one descriptor kept per
    iteration fails it (else a clean result above would mean nothing)."""
    kept: list[Any] = []
    try:
        assert "fds" in measure(lambda: kept.append(os.dup(0)), 20, "a leaked descriptor").leaks()
    finally:
        for fd in kept:
            os.close(fd)
    kept.clear()
    if COUNTS_BLOCKS:
        assert set(measure(lambda: kept.append(object()), 100, "a leaked object").leaks()) == {"blocks"}
        kept.clear()
    else:
        print("no pymalloc block count here (PyPy, or PYTHONMALLOC=malloc): Python objects are not counted")
    if HEAP_IN_USE is not None and LIBC is not None:
        malloc = LIBC.malloc
        try:  # 4000 chunks of 64 bytes a round: above the 64 KiB floor of the tolerance
            assert "heap" in measure(lambda: kept.append(malloc(64)), 4000, "a leaked malloc chunk").leaks()
        finally:
            for chunk in kept:
                LIBC.free(chunk)
    else:
        print("mallinfo2 does not see this process's malloc (not glibc, not CPython, or ASan's "
              "allocator): the C heap is not measured")


# -- sockets ---------------------------------------------------------------------------


def test_socket_methods(impl: ModuleType) -> None:
    payload = b"x" * 70_000  # more than one segment: the C loops go round
    buf = bytearray(len(payload))

    def op() -> None:
        a, b = impl.socketpair()
        with a, b:
            a.sendall(payload[:1000])
            assert b.recv_exactly(1000) == payload[:1000]
            assert a.sendall_many([b"head", memoryview(payload)[:5000]]) == 5004
            assert b.recv_into_exactly(buf, 5004) == 5004
            b.settimeout(0)  # would block: the error carries the partial bytes
            a.sendall(b"abc")
            with pytest.raises(BlockingIOError) as info:
                b.recv_exactly(10)
            assert info.value.partial == b"abc"
            b.settimeout(0.001)  # a deadline
            with pytest.raises(TimeoutError):
                b.recv_into_exactly(buf, 10)
            b.settimeout(None)
            a.sendall(b"tail")
            a.close()
            with pytest.raises(fastsock.IncompleteReadError) as eof:
                b.recv_exactly(8)
            assert eof.value.partial == b"tail"
            with pytest.raises(OSError):
                a.sendall(b"closed")  # EBADF

    check_no_leak(op, 50, "socket methods")


def test_tcp_connect_accept_wrap(impl: ModuleType) -> None:
    with impl.create_server(("127.0.0.1", 0)) as server:
        address = server.getsockname()

        def op() -> None:
            client = impl.create_connection(address, timeout=10)
            conn, _ = server.accept()
            adopted = impl.wrap(stdsocket.socket(fileno=os.dup(conn.fileno())))
            with client, conn, adopted:
                adopted.sendall(b"ping")
                assert client.recv_exactly(4) == b"ping"

        check_no_leak(op, 60, "create_connection/accept/wrap")


# -- Stream ----------------------------------------------------------------------------


def test_stream_reads_and_writes(impl: ModuleType) -> None:
    framing = impl.LengthPrefix(4)
    big = b"B" * 100_000  # a large frame: written uncopied, received straight into its result

    def op() -> None:
        a, b = impl.socketpair()
        with impl.Stream(a, framing=framing) as writer, impl.Stream(b, framing=framing) as reader:
            writer.write_frame(b"one")
            writer.write_frames([b"two", b"three", big])
            writer.write(b"\x00\x00\x00\x02hi")
            writer.writelines([b"\x00\x00\x00\x01", b"!"])
            writer.flush()
            assert reader.read_frame() == b"one"
            assert reader.read_frames(max_frames=2) == [b"two", b"three"]
            assert reader.read_frame() == big
            assert reader.peek(4) == b"\x00\x00\x00\x02"
            assert reader.read_exactly(6) == b"\x00\x00\x00\x02hi"
            assert reader.discard(4) == 4
            assert reader.read(1) == b"!"
            writer.write(b"line\nrest|")
            writer.shutdown_write()
            assert reader.readline() == b"line\n"
            assert reader.read_until(b"|") == b"rest|"
            assert reader.read_frames() == []  # clean EOF

    check_no_leak(op, 100, "Stream reads and writes")


def test_stream_error_paths(impl: ModuleType) -> None:
    small = impl.LengthPrefix(4, max_size=16)

    def op() -> None:
        a, b = impl.socketpair()
        with impl.Stream(a) as writer, impl.Stream(b, framing=small) as reader:
            reader.socket.settimeout(0.001)
            with pytest.raises(TimeoutError):  # a deadline, nothing received
                reader.read_frame()
            reader.socket.settimeout(0)
            writer.write(b"\x00\x00\x00\x03ab")
            writer.flush()
            with pytest.raises(BlockingIOError):  # would block inside a frame: kept buffered
                reader.read_frame()
            writer.write(b"c\x00\x00\x10\x00")  # the frame's end, then a header of 4096 > 16
            writer.flush()
            reader.socket.settimeout(None)
            assert reader.read_frame() == b"abc"
            with pytest.raises(fastsock.FrameTooLarge):
                reader.read_frame()
            assert reader.discard(4) == 4
            writer.write(b"\x00\x00\x00\x09part")
            writer.close()
            with pytest.raises(fastsock.IncompleteReadError) as cut:
                reader.read_frame()
            assert cut.value.partial == b"\x00\x00\x00\x09part"

    check_no_leak(op, 50, "Stream error paths")


# -- Poller and Selector -----------------------------------------------------------------


def test_poller_register_poll_unregister(impl: ModuleType, method: str) -> None:
    def op() -> None:
        a, b = impl.socketpair()
        with a, b, impl.Poller(method) as poller:
            poller.register(a, impl.READ | impl.HANGUP)
            poller.register(b.fileno(), impl.WRITE, oneshot=True)
            with pytest.raises(KeyError):
                poller.register(a)
            b.sendall(b"hi")
            ready = dict(poller.poll(timeout=1.0))
            assert ready[a.fileno()] & impl.READ and ready[b.fileno()] & impl.WRITE
            poller.modify(b, impl.READ, edge=True)
            assert a.recv(2) == b"hi"
            poller.unregister(a)
            with pytest.raises(KeyError):
                poller.unregister(a)
            assert poller.poll(timeout=0) == []
            assert len(poller) == 1

    check_no_leak(op, 100, f"Poller({method})")


def test_selector_register_select_unregister(impl: ModuleType) -> None:
    import selectors

    def op() -> None:
        a, b = impl.socketpair()
        with a, b, impl.Selector() as sel:
            sel.register(a, selectors.EVENT_READ, data=["payload of a"])
            sel.register(b, selectors.EVENT_WRITE, data={"b": 1})
            b.sendall(b"x")
            events = sel.select(timeout=1.0)
            assert {key.fd for key, _ in events} == {a.fileno(), b.fileno()}
            sel.modify(b, selectors.EVENT_READ, data=("other",))
            assert sel.unregister(a).data == ["payload of a"]
            assert a.recv(1) == b"x"

    check_no_leak(op, 100, "Selector")


# -- Server ------------------------------------------------------------------------------


def _echo(conn: Any, frame: bytes) -> bytes:
    return frame


def test_server_connections(impl: ModuleType) -> None:
    """One server; every iteration connects, is served (one good client, one sending a frame
    too large, one cut inside a frame) and closes: the server gives each connection back."""
    server = impl.Server(_echo, framing=impl.LengthPrefix(4, max_size=1024))
    address = server.listen(LOCAL)
    with Running(server):
        def op() -> None:
            with connect(address) as good, connect(address) as large, connect(address) as cut:
                good.sendall(frames(b"a", b"bc" * 300))
                large.sendall(b"\x00\x01\x00\x00")  # 65536 > max_size: that connection only
                cut.sendall(b"\x00\x00\x00\x10half")
                cut.shutdown(stdsocket.SHUT_WR)
                assert read_frames(good, 2) == [b"a", b"bc" * 300]
                assert is_eof(large) and is_eof(cut)
            wait_until(lambda: server.stats()["connections"] == 0, what="the server to close every connection")

        check_no_leak(op, 20, "Server connections")


def test_server_lifecycle(impl: ModuleType) -> None:
    """Server(), listen, serve_forever in a thread, one client, stop, close: all given back."""
    def op() -> None:
        server = impl.Server(_echo, framing=impl.LengthPrefix(4))
        address = server.listen(LOCAL)
        with Running(server) as running:
            with connect(address) as client:
                client.sendall(frames(b"ping"))
                assert read_frames(client, 1) == [b"ping"]
            running.stop(grace=1.0)

    check_no_leak(op, 10, "Server lifecycle")


# -- FrameDecoder and FrameEncoder --------------------------------------------------------


def test_decoder_feed_and_reads(impl: ModuleType) -> None:
    data = b"".join(b"\x00\x00\x00\x05hello" for _ in range(20))

    def op() -> None:
        dec = impl.FrameDecoder(impl.LengthPrefix(4))
        assert dec.feed(data[:7]) == []
        assert dec.feed(data[7:]) == [b"hello"] * 20
        dec.append(b"\x00\x00\x00\x03abc\x00\x00")
        assert dec.next_frame() == b"abc"
        assert dec.peek() == b"\x00\x00"
        assert dec.read_exactly(2) == b"\x00\x00"
        dec.append(b"key: value\r\nrest")
        assert dec.read_until(b"\r\n") == b"key: value\r\n"
        assert dec.read(2) == b"re"
        with pytest.raises(fastsock.IncompleteReadError):  # held bytes inside a frame
            dec.eof()
        assert dec.buffered == 2

    check_no_leak(op, 200, "FrameDecoder feed/reads")


def test_decoder_views_kept_and_released(impl: ModuleType) -> None:
    """get_buffer views kept while the buffer grows (the decoder keeps the memory they point
    into), then released: every retired block is freed at its last release."""
    def op() -> None:
        dec = impl.FrameDecoder(impl.LengthPrefix(4), max_buffer=1 << 22)
        first = dec.get_buffer()
        first[:4] = b"\x00\x04\x00\x00"  # a 256 KiB frame: the buffer grows while views live
        assert dec.buffer_updated(4) == []
        kept = [first]
        for _ in range(4):
            view = dec.get_buffer(65536)
            view[:65536] = b"z" * 65536
            kept.append(view)
            frames_now = dec.buffer_updated(65536)
        assert frames_now == [b"z" * 262144]
        second = dec.get_buffer()
        for view in kept:
            view.release()
        del view, kept, first
        dec.commit(0)
        second.release()

    check_no_leak(op, 50, "FrameDecoder get_buffer views")


def test_decoder_errors_with_frames(impl: ModuleType) -> None:
    def op() -> None:
        dec = impl.FrameDecoder(impl.LengthPrefix(4, max_size=8))
        with pytest.raises(fastsock.FrameTooLarge) as large:
            dec.feed(b"\x00\x00\x00\x01a\x00\x00\x00\x02bc\x00\x00\x01\x00")
        assert large.value.frames == [b"a", b"bc"]
        assert dec.discard(4) == 4
        net = impl.FrameDecoder(impl.Netstring())
        with pytest.raises(fastsock.FramingError) as bad:
            net.feed(b"1:x,00:")
        assert bad.value.frames == [b"x"]
        full = impl.FrameDecoder(impl.LengthPrefix(4), max_buffer=16)
        with pytest.raises(fastsock.FrameTooLarge):
            full.feed(b"y" * 17)  # more than max_buffer: nothing appended

    check_no_leak(op, 200, "FrameDecoder errors")


def test_encoder_encode_many(impl: ModuleType) -> None:
    enc = impl.FrameEncoder(impl.LengthPrefix(4))
    large = bytearray(b"L" * 40_000)  # above 16 KiB: passed uncopied (a view of it)

    def op() -> None:
        out = enc.encode_many([b"a", b"bb", large, memoryview(b"ccc")])
        assert b"".join(bytes(part) for part in out) == (
            b"\x00\x00\x00\x01a\x00\x00\x00\x02bb\x00\x00\x9c\x40" + bytes(large) + b"\x00\x00\x00\x03ccc")
        del out
        large.append(0)  # no view of it is left (a live export would refuse the resize)
        large.pop()

    check_no_leak(op, 200, "FrameEncoder encode_many")


# -- fastsock.aio ------------------------------------------------------------------------


def test_aio_stream_open_close(aio: Any) -> None:  # noqa: F811 (the fixture)
    from fastsock import aio as fsaio

    framing = aio.impl.LengthPrefix(4)

    async def echo(stream: Any) -> None:
        async for frame in stream:
            stream.write_frame(frame)
            await stream.drain()
        stream.close()
        await stream.wait_closed()

    async def run() -> None:
        server = await fsaio.start_server(echo, "127.0.0.1", 0, framing=framing)
        port = server.sockets[0].getsockname()[1]

        async def round_trip() -> None:
            stream = await fsaio.open_connection("127.0.0.1", port, framing=framing)
            stream.write_frames([b"ping", b"x" * 20_000])
            await stream.drain()
            assert await stream.read_frame() == b"ping"
            assert await stream.read_exactly(4) == b"\x00\x00\x4e\x20"
            stream.write_eof()
            with pytest.raises(fastsock.IncompleteReadError):
                await stream.read_exactly(20_001)
            stream.close()
            await stream.wait_closed()

        try:
            await check_no_leak_async(round_trip, 40, f"fastsock.aio Stream on {aio.loop_name}")
        finally:
            server.close()
            await server.wait_closed()

    aio.run(run(), timeout=60)
